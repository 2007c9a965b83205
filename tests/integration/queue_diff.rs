//! `roll queue-diff` against the lab: read-only, so these tests run in parallel.

use serde_json::Value;

use crate::support::{EXPIRE, LAB_INVENTORY, MINOR, Roll, json, lab, repo, require_lab};

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
