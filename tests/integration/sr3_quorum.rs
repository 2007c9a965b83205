//! The sr3 fleet on the lab's cluster (group `quorum`): sr3 3.2 on classic queues to sr3 3.3.1
//! with `queueType quorum`, half a then half b, under traffic through c2 and c3, every
//! message received by each queue's subscribers or still queued.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use crate::support::{
    ClusterResetOnDrop, Roll, cluster_get, host_queue_part, json, lab, repo, require_lab, sr3_on,
};

const QUORUM: &str = "playbooks/sr3-quorum.toml";
const SHARED: &str = "q_roll-lab.subscribe.cluster.quorum";

/// Messages published to vhost quorum all along (through c2, then c3), ids in `ids`.
struct Traffic(Child);

impl Traffic {
    fn start(ids: &Path) -> Traffic {
        let child = Command::new(repo("tests/lab/publish"))
            .args([
                "--vhost",
                "quorum",
                "--host",
                "127.0.0.1:5682,127.0.0.1:5683",
            ])
            .args(["--rate", "50", "--until-stopped", "--quiet"])
            .args(["--id-prefix", "quorum", "--reconnect", "120"])
            .arg("--ids-file")
            .arg(ids)
            .stdout(Stdio::null())
            .spawn()
            .expect("tests/lab/publish starts");
        Traffic(child)
    }

    /// SIGTERM: the publisher waits for its last confirms and writes every confirmed id.
    fn stop(mut self) {
        let pid = self.0.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let _ = self.0.wait();
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The audit of `ids` in vhost quorum, its subscribers stopped first (JSON).
fn audit(ids: &Path) -> Value {
    let stopped = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let children: Vec<(String, Child)> = lab()
        .hosts("quorum")
        .into_iter()
        .map(|h| {
            let child = sr3_on(&h, "stop");
            (h, child)
        })
        .collect();
    for (host, mut child) in children {
        let status = child.wait().expect("ssh ends");
        assert!(status.success(), "sr3 stop on {host} failed: {status}");
    }
    let output = Command::new(repo("tests/lab/audit"))
        .args(["--vhost", "quorum", "--mgmt-url", "http://127.0.0.1:15682"])
        .args(["--host", "127.0.0.1:5682", "--settle", "60", "--json"])
        .arg("--ids-file")
        .arg(ids)
        .args(["--ignore-after", &format!("{stopped:.3}")])
        .output()
        .expect("tests/lab/audit runs");
    let text = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "audit printed no JSON ({e}): {text}\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

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
    let ids = dir.path().join("quorum.ids");
    let traffic = Traffic::start(&ids);
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

    traffic.stop();
    let audit = audit(&ids);
    eprintln!("audit totals: {}", audit["totals"]);
    assert_eq!(audit["totals"]["missing"], 0, "{audit:#}");
    assert_eq!(audit["totals"]["duplicates"], 0, "{audit:#}");
    assert_eq!(audit["ok"], true, "{audit:#}");
}
