//! `roll queue-diff` against the lab: read-only, so these tests run in parallel; but the one
//! of a vhost of 20,000 queues (`serial_`), whose making loads the broker.

use serde_json::Value;

use crate::support::{
    EXPIRE, LAB_INVENTORY, MINOR, Roll, json, lab, publish_n, repo, require_lab, scratch_vhost,
};

fn rows(report: &Value) -> &Vec<Value> {
    report["rows"].as_array().expect("rows")
}

fn owner_kind(row: &Value) -> String {
    row["owner"]["kind"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn expire_release_on_ops_half_b() {
    require_lab();
    let expire_b = Roll::queue_diff("ops").playbook(EXPIRE).half("b");
    let run = expire_b.clone().json().run();
    assert_eq!(run.code, 2, "{run:#?}");
    let report = json(&run);
    let rows = rows(&report);
    let mut recreate = vec![];
    for row in rows {
        let name = row["name"].as_str().unwrap_or_default();
        assert!(
            !name.contains("rl-dev") && !name.contains("rl-stage"),
            "{name}"
        );
        match owner_kind(row).as_str() {
            "host" if row["owner"]["half"] == "b" => {
                assert_eq!(row["verdict"], "recreate", "{row}");
                recreate.push(
                    row["owner"]["host"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                );
            }
            "host" => {
                assert_eq!(row["owner"]["half"], "a", "{row}");
                assert_eq!(row["verdict"], "outside", "{row}");
            }
            "shared" => {
                assert_eq!(name, "q_roll-lab.subscribe.cluster.ops");
                assert_eq!(row["verdict"], "recreate", "{row}");
            }
            "foreign" => {
                assert_eq!(name, "q_anonymous.subscribe.ddi-cmc.ddi1_cmc_20260101");
                assert_eq!(row["verdict"], "foreign", "{row}");
            }
            other => panic!("unexpected owner {other}: {row}"),
        }
        if row["verdict"] == "recreate" {
            let diffs = row["differences"].as_array().expect("differences");
            assert_eq!(diffs.len(), 1, "{row}");
            assert_eq!(diffs[0]["setting"], "x-expires");
            assert!(diffs[0]["current"].is_null());
            assert_eq!(diffs[0]["target"], 604_800_000);
            assert!(
                !report["bindings"][name]
                    .as_array()
                    .expect("bindings")
                    .is_empty(),
                "{name} has no bindings in the report"
            );
        }
    }
    recreate.sort();
    assert_eq!(recreate, ["px5", "px6", "px7", "px8", "pxatx1"]);
    let summary = &report["summary"];
    assert_eq!(summary["recreate"], 6);
    assert_eq!(summary["outside"], 4);
    assert_eq!(summary["foreign"], 1);
    assert_eq!(
        summary["critical_window"],
        serde_json::json!(["q_roll-lab.subscribe.cluster.ops"])
    );

    let table = expire_b.run();
    assert_eq!(table.code, 2, "{table:#?}");
    assert!(
        table.stdout.contains("x-expires none -> 604800000"),
        "{}",
        table.stdout
    );
    assert!(table.stdout.contains("px1 (half a)"), "{}", table.stdout);
    let last = table.stdout.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("Plan: 6 to recreate, 0 unchanged, 4 of the other half (not in this run), 1 foreign (untouched);"),
        "{last}"
    );
    assert!(
        last.ends_with("critical window: yes (shared queue q_roll-lab.subscribe.cluster.ops)"),
        "{last}"
    );
}

#[test]
fn minor_release_leaves_every_owned_queue_unchanged() {
    require_lab();
    let run = Roll::queue_diff("ops").playbook(MINOR).json().run();
    assert_eq!(run.code, 0, "{run:#?}");
    let report = json(&run);
    for row in rows(&report) {
        let expected = if owner_kind(row) == "foreign" {
            "foreign"
        } else {
            "unchanged"
        };
        assert_eq!(row["verdict"], expected, "{row}");
    }
    assert_eq!(report["summary"]["unchanged"], 10);
}

#[test]
fn an_unchecked_argument_is_ignored_by_the_broker_and_the_probe_agrees() {
    require_lab();
    let dir = tempfile::tempdir().expect("temp dir");
    let text = std::fs::read_to_string(repo(MINOR))
        .expect("playbook")
        .replace("arguments = {}", "arguments = { x-roll-note = \"v2\" }");
    let path = dir.path().join("note.toml");
    std::fs::write(&path, text).expect("write");
    let run = Roll::queue_diff("dev").playbook(&path).probe().json().run();
    assert_eq!(run.code, 2, "{run:#?}");
    let report = json(&run);
    let owned: Vec<&Value> = rows(&report)
        .iter()
        .filter(|r| owner_kind(r) != "foreign")
        .collect();
    assert_eq!(owned.len(), 2, "{report:#}");
    for row in owned {
        assert_eq!(row["verdict"], "ignored-by-broker", "{row}");
        let name = row["name"].as_str().unwrap_or_default();
        assert_eq!(report["probe"][name]["result"], "equivalent", "{report:#}");
    }
    assert_eq!(report["probe_disagreements"], serde_json::json!([]));
}

fn definitions(vhost: &str) -> Value {
    let (management, runtime) = crate::support::lab_management(vhost);
    let mut defs: Value = runtime
        .block_on(management.get(&format!("definitions/{vhost}"), &[], "definitions"))
        .expect("definitions");
    // The export carries the broker's version and nothing that a read changes.
    if let Some(map) = defs.as_object_mut() {
        map.remove("rabbit_version");
        map.remove("rabbitmq_version");
    }
    defs
}

#[test]
fn probe_agrees_on_every_lab_queue_and_changes_nothing() {
    require_lab();
    for group in ["dev", "stage", "ops"] {
        let before = definitions(group);
        for playbook in [EXPIRE, MINOR] {
            let run = Roll::queue_diff(group)
                .playbook(playbook)
                .probe()
                .json()
                .run();
            assert!(
                run.code == 0 || run.code == 2,
                "{group} {playbook}: {run:#?}"
            );
            let report = json(&run);
            assert_eq!(
                report["probe_disagreements"],
                serde_json::json!([]),
                "{group} {playbook}"
            );
            for row in rows(&report) {
                let name = row["name"].as_str().unwrap_or_default();
                let probe = &report["probe"][name]["result"];
                match row["verdict"].as_str().unwrap_or_default() {
                    "foreign" | "missing" => {
                        assert!(
                            probe.is_null(),
                            "{name}: only existing owned queues are probed"
                        )
                    }
                    "recreate" => assert_eq!(probe, "inequivalent", "{name}"),
                    "outside" if !row["differences"].as_array().is_some_and(|d| d.is_empty()) => {
                        assert_eq!(probe, "inequivalent", "{name}")
                    }
                    _ => assert_eq!(probe, "equivalent", "{name}"),
                }
            }
        }
        assert_eq!(before, definitions(group), "{group}: definitions changed");
    }
}

#[test]
fn broker_and_playbook_errors_are_one_line_and_named() {
    require_lab();
    let dir = tempfile::tempdir().expect("temp dir");
    let base = std::fs::read_to_string(repo(LAB_INVENTORY)).expect("lab inventory");
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "wrong-password").expect("write");
    let cases = [
        (
            base.replace(&lab().broker.management_url, "http://127.0.0.1:1"),
            "unreachable",
        ),
        (
            base.replace(
                &lab().broker.password_file.display().to_string(),
                &wrong.display().to_string(),
            ),
            "login refused",
        ),
        (
            base.replace("broker.vhost = \"ops\"", "broker.vhost = \"no-such\""),
            "vhost no-such does not exist",
        ),
    ];
    for (i, (text, words)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("inv{i}.toml"));
        std::fs::write(&path, text).expect("write");
        let run = Roll::queue_diff("ops")
            .inventory(&path)
            .playbook(MINOR)
            .run();
        assert_eq!(run.code, 1, "{words}: {run:#?}");
        assert_eq!(
            run.stderr.trim().lines().count(),
            1,
            "{words}: {}",
            run.stderr
        );
        assert!(run.stderr.contains(words), "{words}: {}", run.stderr);
        assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    }
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[release]\nname = \"x\"\nversoin = \"1\"\n").expect("write");
    let bad = bad.display().to_string();
    let run = Roll::queue_diff("ops").playbook(&bad).run();
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(run.stderr.contains(&format!("{bad}:3:")), "{}", run.stderr);
    assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
}

/// The vhost of [`serial_a_vhost_of_20000_queues_gets_the_verdicts_of_each_kind`].
const BIG: &str = "itest-q20k";

/// A queue of [`BIG`]: its name, arguments, and the exchanges it is bound to.
#[derive(Clone)]
struct BigQueue {
    name: String,
    arguments: lapin::types::FieldTable,
    exchanges: Vec<&'static str>,
}

/// The queues of [`BIG`]: host h1's (half a), host h2's (half b), a shared one, and foreign
/// ones; 20,000 in all. Their arguments are the target's (`x-expires` 7d, `x-roll-note`
/// v2), none (the broker refuses the target: a recreate), or another note (an argument the
/// broker does not check).
fn big_queues() -> Vec<BigQueue> {
    use lapin::types::AMQPValue::{LongLongInt, LongString};
    use lapin::types::FieldTable;
    let table = |pairs: &[(&str, lapin::types::AMQPValue)]| {
        let mut t = FieldTable::default();
        for (k, v) in pairs {
            t.insert((*k).into(), v.clone());
        }
        t
    };
    let expires = ("x-expires", LongLongInt(604_800_000));
    let target = table(&[expires.clone(), ("x-roll-note", LongString("v2".into()))]);
    let other_note = table(&[expires, ("x-roll-note", LongString("v1".into()))]);
    let none = FieldTable::default();
    let kinds: [(&str, std::ops::Range<usize>, &FieldTable, &[&'static str]); 9] = [
        ("itest.h1.", 0..4000, &target, &["xpublic"]),
        // These hold messages and have a second binding.
        ("itest.h1.", 4000..4100, &none, &["xpublic", "xother"]),
        ("itest.h1.", 4100..7000, &none, &["xpublic"]),
        ("itest.h1.", 7000..8000, &other_note, &["xpublic"]),
        ("itest.h2.", 0..2000, &target, &["xpublic"]),
        ("itest.h2.", 2000..4000, &none, &["xpublic"]),
        ("itest.shared.cluster", 0..1, &none, &["xpublic"]),
        ("other.", 0..4000, &none, &["xpublic"]),
        (
            "other.",
            4000..7999,
            &table(&[("x-max-length", LongLongInt(10))]),
            &[],
        ),
    ];
    kinds
        .iter()
        .flat_map(|(prefix, range, arguments, exchanges)| {
            range.clone().map(move |i| BigQueue {
                name: if prefix.ends_with('.') {
                    format!("{prefix}{i:05}")
                } else {
                    prefix.to_string()
                },
                arguments: (*arguments).clone(),
                exchanges: exchanges.to_vec(),
            })
        })
        .collect()
}

/// Messages put in [`BIG`]: (queue, persistent, transient).
fn big_messages() -> Vec<(String, u64, u64)> {
    let mut out: Vec<(String, u64, u64)> = (4000..4100)
        .map(|i| (format!("itest.h1.{i:05}"), 2, 1))
        .collect();
    out.extend((2000..2010).map(|i| (format!("itest.h2.{i:05}"), 2, 1)));
    out.push(("itest.shared.cluster".into(), 5, 0));
    out.push(("other.00000".into(), 0, 4));
    out
}

/// Makes [`BIG`]'s exchanges, queues, bindings and messages; waits until the management
/// API's statistics show the messages (what a transient count reads).
async fn make_big(config: &roll::inventory::BrokerConfig, password: &roll::inventory::Secret) {
    use lapin::options::{ConfirmSelectOptions, ExchangeDeclareOptions};
    use lapin::types::FieldTable;
    let connection = roll::broker::amqp::connect(config, password, "queue-diff test")
        .await
        .expect("amqp");
    let setup = connection.create_channel().await.expect("channel");
    for exchange in ["xpublic", "xother"] {
        let options = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        setup
            .exchange_declare(
                exchange.into(),
                lapin::ExchangeKind::Topic,
                options,
                FieldTable::default(),
            )
            .await
            .expect("exchange");
    }
    // Every queue and binding sent without waiting, on four channels (the broker makes a
    // channel's queues one after the other: four keep both of its cores busy).
    let work = big_queues();
    assert_eq!(work.len(), 20_000);
    let per = work.len().div_ceil(4);
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in work.chunks(per) {
        let channel = connection.create_channel().await.expect("channel");
        let chunk = chunk.to_vec();
        tasks.spawn(async move { declare_all(&channel, &chunk).await });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("declaring task");
    }
    setup
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    for (queue, persistent, transient) in big_messages() {
        for (n, mode) in [(persistent, 2), (transient, 1)] {
            for k in 0..n {
                let properties = lapin::BasicProperties::default().with_delivery_mode(mode);
                publish_n(&setup, &queue, k, properties)
                    .await
                    .await
                    .expect("confirmed");
            }
        }
    }
    let _ = connection.close(200, "done".into()).await;
    // The statistics catch up within a few emission intervals (5 s).
    let management =
        roll::broker::management::Management::new(config, password.clone()).expect("client");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let mut waiting = big_messages();
    while !waiting.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "statistics never showed {waiting:?}"
        );
        let mut still = vec![];
        for (queue, persistent, transient) in waiting {
            let info = management
                .queue(&queue)
                .await
                .expect("lookup")
                .expect("queue");
            if info.messages != Some(persistent + transient)
                || info.messages_persistent != Some(persistent)
            {
                still.push((queue, persistent, transient));
            }
        }
        waiting = still;
        if !waiting.is_empty() {
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        }
    }
}

/// Declares queues and their bindings on one channel without waiting for each (nowait), with
/// a synchronous call every thousand queues and at the end.
async fn declare_all(channel: &lapin::Channel, queues: &[BigQueue]) {
    use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
    use lapin::types::FieldTable;
    for (i, queue) in queues.iter().enumerate() {
        let BigQueue {
            name,
            arguments,
            exchanges,
        } = queue;
        let options = QueueDeclareOptions {
            durable: true,
            nowait: true,
            ..Default::default()
        };
        channel
            .queue_declare(name.as_str().into(), options, arguments.clone())
            .await
            .expect("declare");
        for exchange in exchanges {
            let key = if *exchange == "xpublic" {
                "v03.itest.#".to_string()
            } else {
                format!("v03.other.{name}")
            };
            channel
                .queue_bind(
                    name.as_str().into(),
                    (*exchange).into(),
                    key.as_str().into(),
                    QueueBindOptions { nowait: true },
                    FieldTable::default(),
                )
                .await
                .expect("bind");
        }
        if i % 1000 == 999 || i + 1 == queues.len() {
            let options = ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            };
            channel
                .exchange_declare(
                    "xpublic".into(),
                    lapin::ExchangeKind::Topic,
                    options,
                    FieldTable::default(),
                )
                .await
                .expect("the broker made the queues");
        }
    }
}

/// The inventory and playbook of [`BIG`]: group `itest`, hosts h1 (half a) and h2 (half b),
/// never reached (ownership comes from patterns alone); each host owns `itest.<host>.*`, the
/// group `itest.shared.*`, and `itest.shared.missing` is expected but never made. The
/// target: durable, `x-expires` 7d, `x-roll-note` v2.
fn big_files(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (ssh, broker) = (&lab().ssh, &lab().broker);
    let inventory = dir.join("inventory.toml");
    std::fs::write(
        &inventory,
        format!(
            "[defaults.ssh]\naddress = {:?}\nport = {}\nuser = \"rl-{{name}}\"\n\
             identity_file = {:?}\nknown_hosts_file = {:?}\n\n\
             [defaults.broker]\nmanagement_url = {:?}\namqp_url = {:?}\nuser = {:?}\n\
             password_file = {:?}\n\n\
             [groups.itest]\nbroker.vhost = {BIG:?}\nhosts = [\n\
             {{ name = \"h1\", half = \"a\" }},\n{{ name = \"h2\", half = \"b\" }},\n]\n",
            ssh.address,
            ssh.port,
            ssh.identity_file,
            ssh.known_hosts_file,
            broker.management_url,
            broker.amqp_url,
            broker.user,
            broker.password_file,
        ),
    )
    .expect("inventory");
    let playbook = dir.join("playbook.toml");
    std::fs::write(
        &playbook,
        r#"[release]
name = "itest-q20k"
description = "every queue gains x-expires = 7d and a note"
package = "svc"
version = "2.0"

[commands]
stop = "true"
start = "true"
status = "echo running"
upgrade = "true"
installed_version = "echo 2.0"

[queues]
expected_stop_window = "15m"

[[queues.owned]]
pattern = "itest.{host}.*"

[[queues.owned]]
pattern = "itest.shared.*"
owner = "shared"

[[queues.owned]]
pattern = "itest.shared.missing"
owner = "shared"

[queues.target]
durable = true
auto_delete = false
arguments = { x-expires = "7d", x-roll-note = "v2" }
"#,
    )
    .expect("playbook");
    (inventory, playbook)
}

/// The row of `name` in a queue-diff report.
fn row<'a>(report: &'a Value, name: &str) -> &'a Value {
    rows(report)
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no row {name}"))
}

/// How many rows of each verdict a report has.
fn verdicts(report: &Value) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for r in rows(report) {
        *counts
            .entry(r["verdict"].as_str().unwrap_or_default().to_string())
            .or_default() += 1;
    }
    counts
}

/// A vhost of 20,000 queues of known kinds (see [`big_queues`]): `queue-diff` of each half
/// gives each its verdict, counts and bindings. Half a has 101 queues to recreate that hold
/// messages (more than are looked up one by one: their transient messages come from a
/// listing with statistics), half b 11 (looked up). The vhost is deleted at the end, also
/// when the test fails.
#[test]
fn serial_a_vhost_of_20000_queues_gets_the_verdicts_of_each_kind() {
    let (scratch, config, password) = scratch_vhost(BIG);
    scratch.runtime.block_on(make_big(&config, &password));
    let dir = tempfile::tempdir().expect("temp dir");
    let (inventory, playbook) = big_files(dir.path());
    let diff = |half: &str| {
        Roll::queue_diff("itest")
            .inventory(&inventory)
            .playbook(&playbook)
            .half(half)
    };

    let run = diff("a").json().run();
    assert_eq!(run.code, 2, "{}", run.stderr);
    let report = json(&run);
    let counts = |pairs: &[(&str, usize)]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    assert_eq!(
        verdicts(&report),
        counts(&[
            ("recreate", 3001),
            ("ignored-by-broker", 1000),
            ("missing", 1),
            ("unchanged", 4000),
            ("outside", 4000),
            ("foreign", 7999),
        ])
    );
    let summary = &report["summary"];
    assert_eq!(summary["recreate"], 3001);
    assert_eq!(summary["foreign"], 7999);
    assert_eq!(summary["messages_at_risk"], 100 * 3 + 5);
    assert_eq!(
        summary["critical_window"],
        serde_json::json!(["itest.shared.cluster"])
    );
    // One with messages to recreate: its differences, its transient message (counted from
    // the listing with statistics), its two bindings.
    let held = row(&report, "itest.h1.04000");
    assert_eq!(held["verdict"], "recreate");
    assert_eq!(
        held["owner"],
        serde_json::json!({"kind": "host", "host": "h1", "half": "a"})
    );
    assert_eq!(
        (held["messages"].as_u64(), held["transient"].as_u64()),
        (Some(3), Some(1))
    );
    let changes: Vec<String> = held["differences"]
        .as_array()
        .expect("differences")
        .iter()
        .map(|d| format!("{} {} {}", d["setting"], d["target"], d["checked"]))
        .collect();
    assert_eq!(
        changes,
        [
            r#""x-expires" 604800000 true"#,
            r#""x-roll-note" "v2" false"#
        ]
    );
    let mut bound: Vec<String> = report["bindings"]["itest.h1.04000"]
        .as_array()
        .expect("bindings")
        .iter()
        .map(|b| format!("{} {} {}", b["source"], b["routing_key"], b["destination"]))
        .collect();
    bound.sort();
    assert_eq!(
        bound,
        [
            r#""xother" "v03.other.itest.h1.04000" "itest.h1.04000""#,
            r#""xpublic" "v03.itest.#" "itest.h1.04000""#,
        ]
    );
    let unchanged = row(&report, "itest.h1.00000");
    assert_eq!(unchanged["verdict"], "unchanged");
    assert_eq!(unchanged["differences"], serde_json::json!([]));
    assert_eq!(unchanged["transient"], 0);
    let ignored = row(&report, "itest.h1.07000");
    assert_eq!(ignored["verdict"], "ignored-by-broker");
    assert_eq!(ignored["differences"][0]["current"], "v1");
    // The other half's: its messages, no transient count (the run does not touch it).
    let outside = row(&report, "itest.h2.02000");
    assert_eq!(outside["verdict"], "outside");
    assert_eq!(outside["messages"], 3);
    assert!(outside["transient"].is_null(), "{outside}");
    assert_eq!(outside["note"], "changed when half b is upgraded");
    let shared = row(&report, "itest.shared.cluster");
    assert_eq!(
        (shared["verdict"].as_str(), shared["owner"]["kind"].as_str()),
        (Some("recreate"), Some("shared"))
    );
    assert_eq!(
        (shared["messages"].as_u64(), shared["transient"].as_u64()),
        (Some(5), Some(0))
    );
    let missing = row(&report, "itest.shared.missing");
    assert_eq!(missing["verdict"], "missing");
    assert!(missing["current"].is_null());
    let foreign = row(&report, "other.00000");
    assert_eq!(
        (foreign["verdict"].as_str(), foreign["messages"].as_u64()),
        (Some("foreign"), Some(4))
    );
    assert!(foreign["target"].is_null());
    // Bindings: every owned queue that exists (h1's, h2's, the shared one), no foreign one.
    let bindings = report["bindings"].as_object().expect("bindings");
    assert_eq!(bindings.len(), 8000 + 4000 + 1);
    assert!(bindings.keys().all(|k| k.starts_with("itest.")));

    // The table: a row per queue, the warnings, the summary line.
    let table = diff("a").run();
    assert_eq!(table.code, 2, "{}", table.stderr);
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert_eq!(
        lines.last().copied().unwrap_or_default(),
        "Plan: 3001 to recreate, 1000 ignored by the broker (recreate to apply), 1 missing, \
         4000 unchanged, 4000 of the other half (not in this run), 7999 foreign (untouched); \
         305 messages in queues to recreate; critical window: yes (shared queue \
         itest.shared.cluster)"
    );
    let row_lines = lines
        .iter()
        .filter(|l| l.starts_with(" itest.") || l.starts_with(" other."))
        .count();
    assert_eq!(row_lines, 20_001);
    let line = lines
        .iter()
        .find(|l| l.starts_with(" itest.h1.04000 "))
        .expect("a line of itest.h1.04000");
    assert!(
        line.contains(" 3 ")
            && line.contains(" 2 ")
            && line.contains("x-expires none -> 604800000"),
        "{line}"
    );
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with("warning: ") && l.contains(" holds "))
            .count(),
        101
    );

    // Half b: 11 queues to recreate hold messages, each looked up for its transient ones.
    let run = diff("b").json().run();
    assert_eq!(run.code, 2, "{}", run.stderr);
    let report = json(&run);
    assert_eq!(
        verdicts(&report),
        counts(&[
            ("recreate", 2001),
            ("missing", 1),
            ("unchanged", 2000),
            ("outside", 8000),
            ("foreign", 7999),
        ])
    );
    assert_eq!(report["summary"]["messages_at_risk"], 10 * 3 + 5);
    let held = row(&report, "itest.h2.02000");
    assert_eq!(
        (held["verdict"].as_str(), held["transient"].as_u64()),
        (Some("recreate"), Some(1))
    );
    assert!(row(&report, "itest.h1.04000")["transient"].is_null());
    drop(scratch);
}
