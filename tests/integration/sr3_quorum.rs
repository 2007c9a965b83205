//! The sr3 fleet on the lab's cluster (group `quorum`): sr3 3.2 on classic queues to sr3 3.3.1
//! with `queueType quorum`, half a then half b, under traffic through c2 and c3, every
//! message received by each queue's subscribers or still queued.

use serde_json::Value;

use crate::support::{
    ClusterResetOnDrop, Roll, Traffic, audit_of, cluster_get, host_queue_part, json, lab,
    require_lab,
};

const QUORUM: &str = "playbooks/sr3-quorum.toml";
const SHARED: &str = "q_roll-lab.subscribe.cluster.quorum";

/// The options of `tests/lab/publish` and `tests/lab/audit` for vhost quorum: through c2,
/// then c3 (never c1 first, which roll uses).
const PUBLISH_IN: [&str; 4] = [
    "--vhost",
    "quorum",
    "--host",
    "127.0.0.1:5682,127.0.0.1:5683",
];
const AUDIT_IN: [&str; 6] = [
    "--vhost",
    "quorum",
    "--mgmt-url",
    "http://127.0.0.1:15682",
    "--host",
    "127.0.0.1:5682",
];

/// The queues of vhost quorum with their type, by name.
fn queue_types() -> std::collections::BTreeMap<String, String> {
    cluster_get("/api/queues/quorum?columns=name,type")
        .as_array()
        .expect("queues")
        .iter()
        .map(|q| {
            (
                q["name"].as_str().unwrap_or("?").to_string(),
                q["type"].as_str().unwrap_or("?").to_string(),
            )
        })
        .collect()
}

fn upgrade(state: &str, half: &str) -> Value {
    let run = Roll::upgrade("quorum", half)
        .state(state)
        .playbook(QUORUM)
        .yes()
        .json()
        .run();
    assert_eq!(run.code, 0, "{run:#?}");
    json(&run)
}

#[test]
fn serial_sr3_on_the_cluster_moves_to_quorum_queues_with_a_kill_a_resume_and_a_rollback_losing_no_message()
 {
    require_lab();
    let _reset = ClusterResetOnDrop;
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().display().to_string();
    let before = queue_types();
    assert!(
        before.values().all(|t| t == "classic") && before.contains_key(SHARED),
        "{before:#?}"
    );
    let traffic = Traffic::start_in(dir.path(), "quorum", 50, &PUBLISH_IN);
    std::thread::sleep(std::time::Duration::from_secs(2));

    // Half a: its own queues and the shared one become quorum queues (a critical window);
    // half b's own queues stay classic. Killed as messages start moving into a holding
    // queue (a quorum queue on the cluster), then resumed.
    crate::support::kill_at(
        &Roll::upgrade("quorum", "a")
            .state(&state)
            .playbook(QUORUM)
            .yes(),
        &["broker", "moving"],
    );
    let resumed = Roll::resume("quorum").state(&state).json().run();
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    let report = json(&resumed);
    let outcome = &report["outcome"];
    assert!(
        outcome["critical_window_seconds"].as_f64() > Some(0.0),
        "{outcome:#}"
    );
    for account in outcome["queues"].as_array().expect("accounts") {
        assert_eq!(account["lost"], 0, "{account}");
        assert_eq!(account["preserved"], true, "{account}");
    }
    let owner_half = |name: &str| -> Option<&'static str> {
        ["a", "b"].into_iter().find(|half| {
            lab()
                .half("quorum", half)
                .iter()
                .any(|h| name.contains(&host_queue_part(h)))
        })
    };
    let types = queue_types();
    for (name, kind) in &types {
        let expect = match owner_half(name) {
            Some("b") => "classic",
            _ if name.starts_with("roll.") => continue,
            _ => "quorum",
        };
        assert_eq!(kind, expect, "{name} after half a: {types:#?}");
    }

    // Half b: the rest.
    let report = upgrade(&state, "b");
    for account in report["outcome"]["queues"].as_array().expect("accounts") {
        assert_eq!(account["lost"], 0, "{account}");
    }
    let types = queue_types();
    assert_eq!(types.len(), before.len(), "{types:#?} against {before:#?}");
    for (name, kind) in &types {
        assert_eq!(kind, "quorum", "{name} after both halves");
    }
    let rows = Roll::status("quorum")
        .state(&state)
        .playbook(QUORUM)
        .json()
        .run();
    assert_eq!(rows.code, 0, "{rows:#?}");
    for row in json(&rows).as_array().expect("rows") {
        assert_eq!(row["version"], "3.3.1", "{row}");
        assert_eq!(row["service"], "running", "{row}");
    }

    // The rollback of half b's run: its own queues are classic again, with their messages,
    // and 3.2 is back; the shared queue keeps what half a's run made it (quorum), which
    // 3.2's declare (classic) is refused: the rollback's verification says so, naming it.
    let run = Roll::rollback("quorum")
        .state(&state)
        .playbook(QUORUM)
        .yes()
        .json()
        .run();
    assert_eq!(run.code, 1, "{}", run.stderr);
    let report = json(&run);
    let failure = &report["outcome"]["failure"];
    assert_eq!(failure["step"], "verify again", "{failure}");
    let detail = failure["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("PRECONDITION_FAILED") && detail.contains(SHARED),
        "{failure}"
    );
    for account in report["outcome"]["queues"].as_array().into_iter().flatten() {
        assert_eq!(account["lost"], 0, "{account}");
    }
    let types = queue_types();
    for (name, kind) in &types {
        let expect = match owner_half(name) {
            Some("b") => "classic",
            _ => "quorum",
        };
        assert_eq!(
            kind, expect,
            "{name} after the rollback of half b: {types:#?}"
        );
    }

    let ids = traffic.ids.clone();
    let published = traffic.stop();
    assert!(published > 500, "only {published} messages published");
    let audit = audit_of("quorum", &AUDIT_IN, &ids, &[]);
    eprintln!("audit totals: {}", audit["totals"]);
    assert_eq!(audit["totals"]["missing"], 0, "{audit:#}");
    assert_eq!(audit["totals"]["duplicates"], 0, "{audit:#}");
    assert_eq!(audit["ok"], true, "{audit:#}");
}
