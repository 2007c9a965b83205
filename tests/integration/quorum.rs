//! Quorum queues on the lab's 3-node cluster (`roll-c1..c3`, management API of c2 on 15682,
//! AMQP on 5682): what RabbitMQ checks on a redeclare of each queue type (against
//! [`Rules`]), the mover between classic and quorum queues, and `queue-diff` (type, leader,
//! a type change, a policy over an argument). Each test works in a scratch vhost
//! `roll-test-quorum-…` of its own, made through c2 and deleted by a guard, even on failure.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use lapin::BasicProperties;
use lapin::options::{ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use roll::broker::equivalence::{QueueSettings, Rules};
use roll::broker::management::{Management, segment};
use roll::broker::{amqp, mover};
use roll::inventory::{BrokerConfig, Secret};
use serde_json::{Value, json};

use crate::support::{Roll, drain, json as report_json, lab};

/// The cluster node every test talks to (c1 may be stopped by a fault test): c2, or the
/// node `ROLL_TEST_QUORUM_NODE` names (1, 2 or 3), which then need not be clustered.
fn node() -> (String, String, Option<String>) {
    let chosen = std::env::var("ROLL_TEST_QUORUM_NODE").ok();
    let n = chosen.clone().unwrap_or_else(|| "2".into());
    (
        format!("http://127.0.0.1:1568{n}"),
        format!("amqp://127.0.0.1:568{n}"),
        chosen,
    )
}

/// A scratch vhost on the cluster, with the files of an inventory (group `qtest`, hosts h1
/// in half a and h2 in half b, never reached) whose broker is c2 in that vhost. Deleted
/// when dropped.
struct Cluster {
    admin: Management,
    vhost: String,
    runtime: tokio::runtime::Runtime,
    dir: tempfile::TempDir,
    config: BrokerConfig,
    password: Secret,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let path = format!("vhosts/{}", segment(&self.vhost));
        for _ in 0..5 {
            match self
                .runtime
                .block_on(self.admin.delete(&path, "delete scratch vhost"))
            {
                Ok(()) | Err(roll::broker::BrokerError::Http { status: 404, .. }) => return,
                Err(err) => eprintln!("scratch vhost {} not deleted yet: {err}", self.vhost),
            }
        }
    }
}

impl Cluster {
    /// The scratch vhost `roll-test-quorum-<suffix>-<pid>` on the cluster, which must be up
    /// with its three nodes running.
    fn new(suffix: &str) -> Cluster {
        let vhost = format!("roll-test-quorum-{suffix}-{}", std::process::id());
        let dir = tempfile::tempdir().expect("temp dir");
        let broker = &lab().broker;
        let ssh = &lab().ssh;
        let (management_url, amqp_url, chosen) = node();
        let inventory = dir.path().join("inventory.toml");
        std::fs::write(
            &inventory,
            format!(
                "[defaults.ssh]\naddress = {:?}\nport = {}\nuser = \"rl-{{name}}\"\n\
                 identity_file = {:?}\nknown_hosts_file = {:?}\n\n\
                 [defaults.broker]\nmanagement_url = {management_url:?}\n\
                 amqp_url = {amqp_url:?}\nuser = {:?}\npassword_file = {:?}\n\n\
                 [groups.qtest]\nbroker.vhost = {vhost:?}\nhosts = [\n\
                 {{ name = \"h1\", half = \"a\" }},\n{{ name = \"h2\", half = \"b\" }},\n]\n",
                ssh.address,
                ssh.port,
                ssh.identity_file,
                ssh.known_hosts_file,
                broker.user,
                broker.password_file,
            ),
        )
        .expect("inventory");
        let loaded = roll::inventory::load(&inventory).expect("inventory loads");
        let config = loaded.group("qtest").expect("qtest").broker.clone();
        let password = config.password.read().expect("password");
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let admin = Management::with_timeout(&config, password.clone(), Duration::from_secs(120))
            .expect("client");
        let path = format!("vhosts/{}", segment(&vhost));
        runtime.block_on(async {
            let nodes = admin
                .nodes()
                .await
                .expect("the cluster answers on c2 (15682)");
            if chosen.is_none() {
                assert_eq!(
                    nodes.iter().filter(|n| n.running).count(),
                    3,
                    "the lab's cluster must have its 3 nodes running: {nodes:?}"
                );
            }
            let _ = admin.delete(&path, "delete a leftover scratch vhost").await;
            admin.put(&path, &json!({}), "vhost").await.expect("vhost");
            admin
                .put(
                    &format!("permissions/{}/{}", segment(&vhost), segment(&config.user)),
                    &json!({"configure": ".*", "write": ".*", "read": ".*"}),
                    "permissions",
                )
                .await
                .expect("permissions");
        });
        Cluster {
            admin,
            vhost,
            runtime,
            dir,
            config,
            password,
        }
    }

    fn inventory(&self) -> PathBuf {
        self.dir.path().join("inventory.toml")
    }

    /// A client of the scratch vhost.
    fn management(&self) -> Management {
        Management::new(&self.config, self.password.clone()).expect("client")
    }

    async fn connect(&self) -> lapin::Connection {
        amqp::connect(&self.config, &self.password, "quorum test")
            .await
            .expect("amqp to c2")
    }

    /// Declares a queue through c2's management API.
    async fn declare(&self, name: &str, arguments: Value) {
        let arguments: BTreeMap<String, Value> =
            serde_json::from_value(arguments).expect("arguments");
        self.management()
            .declare_queue(name, &QueueSettings::new(true, false, arguments))
            .await
            .expect("declare");
    }

    /// A playbook whose hosts own `qtest.<host>.*`, with this `[queues.target]` arguments.
    fn playbook(&self, arguments: &str) -> PathBuf {
        let path = self.dir.path().join("playbook.toml");
        std::fs::write(
            &path,
            format!(
                "[release]\nname = \"qtest\"\ndescription = \"to quorum\"\npackage = \"svc\"\n\
                 version = \"2.0\"\n\n[commands]\nstop = \"true\"\nstart = \"true\"\n\
                 status = \"echo running\"\nupgrade = \"true\"\ninstalled_version = \"echo 2.0\"\n\n\
                 [queues]\nexpected_stop_window = \"1m\"\n\n[[queues.owned]]\n\
                 pattern = \"qtest.{{host}}.*\"\n\n[queues.target]\ndurable = true\n\
                 auto_delete = false\narguments = {arguments}\n"
            ),
        )
        .expect("playbook");
        path
    }
}

fn args(value: Value) -> BTreeMap<String, Value> {
    serde_json::from_value(value).expect("arguments")
}

fn quorum(extra: Value) -> QueueSettings {
    let mut all = args(extra);
    all.insert("x-queue-type".into(), json!("quorum"));
    QueueSettings::new(true, false, all)
}

/// Declares `name` on a channel of its own with these flags and arguments: the broker's
/// answer (a refusal closes only that channel).
async fn declare_raw(
    connection: &lapin::Connection,
    name: &str,
    options: QueueDeclareOptions,
    arguments: &BTreeMap<String, Value>,
) -> Result<(), String> {
    let channel = connection.create_channel().await.expect("channel");
    let answer = channel
        .queue_declare(name.into(), options, amqp::field_table(arguments))
        .await;
    match answer {
        Ok(_) => {
            let _ = channel.close(200, "done".into()).await;
            Ok(())
        }
        Err(err) => Err(err.to_string()),
    }
}

/// What RabbitMQ 3.10.8 checks, each against [`Rules`]: a quorum queue redeclared with an
/// argument its type does not check (`x-max-priority`, `x-queue-mode`) is accepted and
/// keeps its arguments; with one it checks (`x-delivery-limit`, `x-message-ttl`,
/// `x-expires`) or without `x-queue-type`, refused; a classic queue redeclared with
/// `x-queue-type: classic` is accepted. A new quorum queue is refused non-durable,
/// auto-delete, exclusive, or with `x-max-priority`.
#[test]
fn the_broker_checks_each_queue_type_as_the_rules_say() {
    let cluster = Cluster::new("rules");
    cluster.runtime.block_on(async {
        let version = cluster
            .management()
            .overview()
            .await
            .expect("overview")
            .rabbitmq_version;
        let rules = Rules::of_version(&version);
        assert!(rules.version().is_some(), "version {version:?}");
        cluster
            .declare(
                "qq",
                json!({"x-queue-type": "quorum", "x-expires": 600_000}),
            )
            .await;
        cluster.declare("cq", json!({})).await;
        let connection = cluster.connect().await;
        let current = quorum(json!({"x-expires": 600_000}));
        let cases = [
            ("x-max-priority", json!(5)),
            ("x-queue-mode", json!("lazy")),
            ("x-queue-version", json!(2)),
            ("x-delivery-limit", json!(5)),
            ("x-message-ttl", json!(1000)),
            ("x-expires", json!(700_000)),
            ("x-max-length", json!(10)),
            ("x-overflow", json!("reject-publish")),
        ];
        let mut seen = Vec::new();
        for (key, value) in cases {
            let mut target = current.clone();
            target.arguments.insert(key.into(), value);
            let answer = amqp::probe(&connection, "c2", "qq", &target)
                .await
                .expect("probe");
            let refused = matches!(answer, amqp::ProbeResult::Inequivalent { .. });
            let expected = rules
                .differences(&current, &target)
                .iter()
                .any(|d| d.checked);
            seen.push(format!("{key}: refused {refused}"));
            assert_eq!(
                refused, expected,
                "{key} on a quorum queue: {answer:?} ({seen:?})"
            );
        }
        // The accepted redeclares changed nothing.
        let listed = cluster
            .management()
            .queue("qq")
            .await
            .expect("lookup")
            .expect("qq");
        assert_eq!(listed.arguments, current.arguments, "{listed:?}");
        // Without x-queue-type: refused (a type change).
        let classic = QueueSettings::new(true, false, args(json!({"x-expires": 600_000})));
        let answer = amqp::probe(&connection, "c2", "qq", &classic)
            .await
            .expect("probe");
        assert!(
            matches!(answer, amqp::ProbeResult::Inequivalent { .. }),
            "{answer:?}"
        );
        // A classic queue declared without x-queue-type takes `classic` as the same.
        let explicit = args(json!({"x-queue-type": "classic"}));
        declare_raw(
            &connection,
            "cq",
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            &explicit,
        )
        .await
        .expect("x-queue-type classic equals none");
        // New quorum queues the broker refuses, as the rules say.
        let q = args(json!({"x-queue-type": "quorum"}));
        let with_priority = args(json!({"x-queue-type": "quorum", "x-max-priority": 5}));
        for (name, options, arguments, settings) in [
            (
                "new-transient",
                QueueDeclareOptions::default(),
                &q,
                QueueSettings::new(false, false, q.clone()),
            ),
            (
                "new-auto-delete",
                QueueDeclareOptions {
                    durable: true,
                    auto_delete: true,
                    ..Default::default()
                },
                &q,
                QueueSettings::new(true, true, q.clone()),
            ),
            (
                "new-priority",
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                &with_priority,
                QueueSettings::new(true, false, with_priority.clone()),
            ),
        ] {
            let answer = declare_raw(&connection, name, options, arguments).await;
            assert!(answer.is_err(), "{name} was accepted");
            assert!(
                !rules.refusals(&settings).is_empty(),
                "{name}: the rules accept it"
            );
        }
        let exclusive = declare_raw(
            &connection,
            "new-exclusive",
            QueueDeclareOptions {
                durable: true,
                exclusive: true,
                ..Default::default()
            },
            &q,
        )
        .await;
        assert!(exclusive.is_err(), "an exclusive quorum queue was accepted");
        amqp::close(&connection).await;
    });
}

/// The messages of `queue` as (n, header x-n, header x-note), sorted by n.
fn contents(deliveries: &[lapin::message::Delivery]) -> Vec<(String, i64, String)> {
    let mut all: Vec<(String, i64, String)> = deliveries
        .iter()
        .map(|d| {
            let headers = d.properties.headers().clone().unwrap_or_default();
            let inner = headers.inner();
            let n = match inner.get("x-n") {
                Some(AMQPValue::LongLongInt(n)) => *n,
                Some(AMQPValue::LongInt(n)) => i64::from(*n),
                other => panic!("x-n: {other:?}"),
            };
            let note = match inner.get("x-note") {
                Some(AMQPValue::LongString(s)) => s.to_string(),
                other => panic!("x-note: {other:?}"),
            };
            (String::from_utf8_lossy(&d.data).to_string(), n, note)
        })
        .collect();
    all.sort_by_key(|m| m.1);
    all
}

/// The mover moves messages with their headers from a classic queue into a quorum queue,
/// and back from the quorum queue into a classic one (a consumer with a per-consumer
/// prefetch: a quorum queue refuses a global one): every message once, none lost.
#[test]
fn messages_move_from_classic_to_quorum_and_back_with_their_headers() {
    const N: i64 = 200;
    let cluster = Cluster::new("move");
    cluster.runtime.block_on(async {
        cluster.declare("classic-src", json!({})).await;
        cluster
            .declare("quorum-mid", json!({"x-queue-type": "quorum"}))
            .await;
        cluster
            .declare("classic-end", json!({"x-queue-type": "classic"}))
            .await;
        let connection = cluster.connect().await;
        let publisher = connection.create_channel().await.expect("channel");
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirms");
        let mut confirms = Vec::new();
        for n in 0..N {
            let mut headers = FieldTable::default();
            headers.insert(ShortString::from("x-n"), AMQPValue::LongLongInt(n));
            headers.insert(
                ShortString::from("x-note"),
                AMQPValue::LongString(LongString::from(format!("note {n}"))),
            );
            let properties = BasicProperties::default()
                .with_delivery_mode(2)
                .with_headers(headers);
            confirms.push(
                publisher
                    .basic_publish(
                        "".into(),
                        "classic-src".into(),
                        Default::default(),
                        format!("body {n}").as_bytes(),
                        properties,
                    )
                    .await
                    .expect("publish"),
            );
        }
        for confirm in confirms {
            confirm.await.expect("confirm");
        }
        let mut on_both = mover::OnBoth::default();
        let limits = mover::Limits::for_backlog(N as u64);
        let there = mover::move_all(
            &connection,
            "c2",
            "classic-src",
            "quorum-mid",
            limits,
            &mut on_both,
        )
        .await
        .expect("classic -> quorum");
        assert_eq!(there.moved, N as u64, "{there:?}");
        let back = mover::move_all(
            &connection,
            "c2",
            "quorum-mid",
            "classic-end",
            limits,
            &mut on_both,
        )
        .await
        .expect("quorum -> classic");
        assert_eq!(back.moved, N as u64, "{back:?}");
        let reader = connection.create_channel().await.expect("channel");
        assert!(drain(&reader, "classic-src").await.is_empty());
        assert!(drain(&reader, "quorum-mid").await.is_empty());
        let got = contents(&drain(&reader, "classic-end").await);
        let expected: Vec<(String, i64, String)> = (0..N)
            .map(|n| (format!("body {n}"), n, format!("note {n}")))
            .collect();
        assert_eq!(got, expected);
        amqp::close(&connection).await;
    });
}

/// The row of `name` in a queue-diff report.
fn row<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["rows"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["name"] == name))
        .unwrap_or_else(|| panic!("no row {name} in {report:#}"))
}

/// `queue-diff` on the cluster: each queue's type and node (a classic queue's node, a
/// quorum queue's leader, one of its members), a classic queue with a quorum target is a
/// recreate, and a policy's `expires` over a quorum queue's `x-expires` is said to win.
#[test]
fn queue_diff_shows_type_and_leader_a_type_change_and_a_policy_over_an_argument() {
    let cluster = Cluster::new("diff");
    cluster.runtime.block_on(async {
        cluster
            .declare("qtest.h1.a", json!({"x-expires": 600_000}))
            .await;
        cluster
            .declare(
                "qtest.h2.b",
                json!({"x-queue-type": "quorum", "x-expires": 600_000}),
            )
            .await;
        cluster
            .admin
            .put(
                &format!("policies/{}/qtest-expires", segment(&cluster.vhost)),
                &json!({"pattern": "^qtest\\.h2\\.", "apply-to": "queues",
                        "definition": {"expires": 1_200_000}, "priority": 1}),
                "policy",
            )
            .await
            .expect("policy");
    });
    let playbook = cluster.playbook("{ x-queue-type = \"quorum\", x-expires = 600000 }");
    // The listing shows the policy once the broker applied it.
    let mut report = Value::Null;
    for _ in 0..20 {
        let run = Roll::queue_diff("qtest")
            .inventory(cluster.inventory())
            .playbook(&playbook)
            .json()
            .run();
        assert_eq!(run.code, 2, "{run:#?}");
        report = report_json(&run);
        if row(&report, "qtest.h2.b")["policy"] == "qtest-expires" {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        report["version"]
            .as_str()
            .is_some_and(|v| v.starts_with('3') || v.starts_with('4'))
    );
    let nodes: Vec<&str> = report["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter_map(|n| n["name"].as_str())
        .collect();
    if node().2.is_none() {
        assert_eq!(nodes.len(), 3, "{report:#}");
    }
    let classic = row(&report, "qtest.h1.a");
    assert_eq!(classic["type"], "classic");
    assert!(
        classic["node"]
            .as_str()
            .is_some_and(|n| n.starts_with("roll-c2@")),
        "declared through c2: {classic:#}"
    );
    assert_eq!(classic["verdict"], "recreate", "{classic:#}");
    assert!(
        classic["differences"].as_array().is_some_and(|d| d
            .iter()
            .any(|x| x["setting"] == "x-queue-type" && x["checked"] == true)),
        "{classic:#}"
    );
    let quorum = row(&report, "qtest.h2.b");
    assert_eq!(quorum["type"], "quorum");
    assert_eq!(quorum["verdict"], "unchanged", "{quorum:#}");
    let leader = quorum["node"].as_str().expect("a leader");
    assert!(nodes.contains(&leader), "{leader} of {nodes:?}");
    assert_eq!(quorum["policy"], "qtest-expires", "{quorum:#}");
    let warnings: Vec<&str> = report["warnings"]
        .as_array()
        .expect("warnings")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        warnings.iter().any(|w| w.starts_with(
            "qtest.h2.b: policy qtest-expires sets expires=1200000; its x-expires is 600000: \
             1200000 in effect (the policy wins on a quorum queue)"
        )),
        "{warnings:#?}"
    );
    assert!(
        !warnings
            .iter()
            .any(|w| w.contains("down") || w.contains("not online")),
        "{warnings:#?}"
    );
    // The table has the type and node columns, and the same warning.
    let table = Roll::queue_diff("qtest")
        .inventory(cluster.inventory())
        .playbook(&playbook)
        .run();
    let header = table
        .stdout
        .lines()
        .find(|l| l.contains("queue") && l.contains("verdict"));
    assert!(
        header.is_some_and(|h| h.contains("type") && h.contains("node")),
        "{}",
        table.stdout
    );
    assert!(
        table
            .stdout
            .contains("warning: qtest.h2.b: policy qtest-expires"),
        "{}",
        table.stdout
    );
}

/// What 3.10.8 does with an `expires` policy over a queue's own `x-expires`, which the
/// queue-diff warning says: on a classic queue the lower value wins (a 2 s argument under a
/// 20-minute policy: gone in seconds), on a quorum queue the policy's (it stays).
#[test]
fn an_expires_policy_beats_a_quorum_queues_x_expires_and_not_a_classic_ones() {
    let cluster = Cluster::new("expires");
    cluster.runtime.block_on(async {
        cluster
            .admin
            .put(
                &format!("policies/{}/long-expires", segment(&cluster.vhost)),
                &json!({"pattern": "^short\\.", "apply-to": "queues",
                        "definition": {"expires": 1_200_000}, "priority": 1}),
                "policy",
            )
            .await
            .expect("policy");
        cluster
            .declare("short.classic", json!({"x-expires": 2000}))
            .await;
        cluster
            .declare(
                "short.quorum",
                json!({"x-queue-type": "quorum", "x-expires": 2000}),
            )
            .await;
        let management = cluster.management();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while management
            .queue("short.classic")
            .await
            .expect("lookup")
            .is_some()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the classic queue did not expire after its own 2 s"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        // Well past its own 2 s: the policy's 20 minutes apply.
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert!(
            management
                .queue("short.quorum")
                .await
                .expect("lookup")
                .is_some(),
            "the quorum queue expired after its own x-expires: the policy did not win"
        );
        let rules = Rules::of_version("3.10.8");
        use roll::broker::equivalence::QueueType;
        assert_eq!(
            rules
                .in_effect(
                    QueueType::Quorum,
                    "expires",
                    &json!(2000),
                    &json!(1_200_000)
                )
                .0,
            json!(1_200_000)
        );
        assert_eq!(
            rules
                .in_effect(
                    QueueType::Classic,
                    "expires",
                    &json!(2000),
                    &json!(1_200_000)
                )
                .0,
            json!(2000)
        );
    });
}
