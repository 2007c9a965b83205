//! The lab's RabbitMQ cluster (tests/lab/README.md): three nodes roll-c1..3, the sr3 group
//! `quorum` and the Celery group `celery` on it, and `tests/lab/cluster stop|start` of one
//! node. Read through roll's management client and the lab's own tools.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{Roll, json, lab_management, repo, require_lab};

/// A node as `GET /api/nodes` describes it.
#[derive(Debug, serde::Deserialize)]
struct Node {
    name: String,
    #[serde(default)]
    running: bool,
}

/// The short names (`roll-c1`...) of the nodes the cluster's API (through the celery group's
/// broker, c1) says are running, sorted.
fn running_nodes() -> Result<Vec<String>, String> {
    let (management, runtime) = lab_management("celery");
    let nodes: Vec<Node> = runtime
        .block_on(management.get("nodes", &[], "nodes"))
        .map_err(|err| err.to_string())?;
    let mut names: Vec<String> = nodes
        .into_iter()
        .filter(|n| n.running)
        .map(|n| n.name.split('@').next().unwrap_or_default().to_string())
        .collect();
    names.sort();
    Ok(names)
}

/// Waits (bounded) until the cluster's API says exactly these nodes run.
fn await_running(want: &[&str], limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let seen = running_nodes();
        if seen.as_deref().is_ok_and(|s| s == want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "after {limit:?} the cluster runs {seen:?}, not {want:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// `tests/lab/cluster ARGS`: its exit code and what it printed.
fn cluster(args: &[&str]) -> (i32, String) {
    let out = Command::new(repo("tests/lab/cluster"))
        .args(args)
        .output()
        .expect("tests/lab/cluster runs");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), said)
}

#[test]
fn the_cluster_has_three_running_nodes() {
    require_lab();
    let nodes = running_nodes().expect("the cluster's management API answers");
    assert_eq!(nodes, ["roll-c1", "roll-c2", "roll-c3"]);
    let (code, said) = cluster(&["status"]);
    assert_eq!(code, 0, "{said}");
    assert_eq!(
        said.lines().filter(|l| l.contains(" running ")).count(),
        3,
        "{said}"
    );
}

#[test]
fn check_passes_on_the_cluster_groups() {
    require_lab();
    for group in ["quorum", "celery"] {
        let run = Roll::check().group(group).json().run();
        assert_eq!(run.code, 0, "{run:#?}");
        let rows = json(&run);
        let rows = rows.as_array().expect("an array");
        assert_eq!(rows.len(), 5, "{group}: 4 hosts and the broker: {rows:#?}");
        for r in rows {
            assert_eq!(r["reachable"], true, "{group}: {r}");
        }
        let broker = rows
            .iter()
            .find(|r| r["kind"] == "broker")
            .expect("broker row");
        // The cluster's nodes, in the order roll tries them.
        assert_eq!(
            broker["name"],
            format!("roll-lab@127.0.0.1:15681,127.0.0.1:15682,127.0.0.1:15683/{group}")
        );
    }
}

/// Publishes `count` Celery tasks (tests/lab/celery_publish) and audits them
/// (tests/lab/celery_audit --json).
fn publish_and_audit(dir: &Path, count: u32) -> serde_json::Value {
    let ids = dir.join("tasks.ids");
    let published = Command::new(repo("tests/lab/celery_publish"))
        .args(["--ids-file", &ids.display().to_string()])
        .args(["--count", &count.to_string(), "--rate", "20", "--quiet"])
        .output()
        .expect("tests/lab/celery_publish runs");
    assert!(published.status.success(), "{published:?}");
    let audit = Command::new(repo("tests/lab/celery_audit"))
        .args(["--ids-file", &ids.display().to_string(), "--json"])
        .args(["--timeout", "120"])
        .output()
        .expect("tests/lab/celery_audit runs");
    let report: serde_json::Value = serde_json::from_slice(&audit.stdout)
        .unwrap_or_else(|err| panic!("celery_audit's JSON ({err}): {audit:?}"));
    assert_eq!(audit.status.code(), Some(0), "{report:#}");
    report
}

#[test]
fn a_celery_task_published_now_is_executed_exactly_once() {
    require_lab();
    let dir = tempfile::tempdir().expect("tempdir");
    let report = publish_and_audit(dir.path(), 20);
    assert_eq!(report["published"], 20, "{report:#}");
    assert_eq!(report["executed"], 20, "{report:#}");
    assert_eq!(report["lost"], 0, "{report:#}");
    assert_eq!(report["executed_twice"], 0, "{report:#}");
    let by_version = report["executions_by_version"]
        .as_object()
        .expect("executions by version");
    assert_eq!(
        by_version.values().filter_map(|n| n.as_u64()).sum::<u64>(),
        20,
        "{report:#}"
    );
}

/// Starts the node again when dropped (also when the test fails) and waits until the cluster
/// is whole, so that the shared lab is left as found.
struct NodeBack(&'static str);

impl Drop for NodeBack {
    fn drop(&mut self) {
        let (code, said) = cluster(&["start", self.0]);
        if code != 0 {
            eprintln!("tests/lab/cluster start {} failed: {said}", self.0);
        }
        await_running(&["roll-c1", "roll-c2", "roll-c3"], Duration::from_secs(120));
    }
}

/// Waits (bounded) until `tests/lab/cluster status NODE` says the node sees exactly these
/// nodes running.
fn await_seen_by(node: &str, want: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let (code, said) = cluster(&["status", node]);
        if code == 0 && said.contains(&format!("sees-running={want}")) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "after {limit:?}, {node} says: {said}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// c1 stopped and started again with `tests/lab/cluster`. c1, because the services connect to
/// c2 and c3 only: stopping c1 leaves them alone. (Stopping the node of the Celery group's
/// classic queue `tasks` makes every Celery 5.4 worker exit: tests/lab/README.md.)
#[test]
fn serial_cluster_stop_and_start_one_node() {
    require_lab();
    await_running(&["roll-c1", "roll-c2", "roll-c3"], Duration::from_secs(30));
    let back = NodeBack("c1");
    let (code, said) = cluster(&["stop", "c1"]);
    assert_eq!(code, 0, "{said}");
    let (code, said) = cluster(&["status", "c1"]);
    assert_eq!((code, said.trim()), (1, "c1 stopped"), "{said}");
    // the others see it gone (their API's view is refreshed every few seconds)
    await_seen_by("c2", "roll-c2,roll-c3", Duration::from_secs(60));
    let (code, said) = cluster(&["start", "c1"]);
    assert_eq!(code, 0, "{said}");
    // start returns once the node rejoined and its API answers: no waiting here
    let (code, said) = cluster(&["status"]);
    assert_eq!(code, 0, "{said}");
    assert!(
        said.lines()
            .all(|l| l.contains("sees-running=roll-c1,roll-c2,roll-c3")),
        "{said}"
    );
    drop(back);
    // the Celery workers never noticed: tasks run
    let dir = tempfile::tempdir().expect("tempdir");
    let report = publish_and_audit(dir.path(), 10);
    assert_eq!(report["executed"], 10, "{report:#}");
}

/// The steady publisher of vhost `steady` (tests/lab/publish --until-stopped --per-second):
/// a line for every second, each with confirms, while the cluster runs.
#[test]
fn the_steady_publisher_records_its_confirms_every_second() {
    require_lab();
    let dir = tempfile::tempdir().expect("tempdir");
    let (stop, per_second) = (dir.path().join("stop"), dir.path().join("per-second"));
    let mut child = Command::new(repo("tests/lab/publish"))
        .args([
            "--vhost",
            "steady",
            "--host",
            "127.0.0.1:5682,127.0.0.1:5683",
        ])
        .args([
            "--until-stopped",
            "--rate",
            "50",
            "--quiet",
            "--reconnect",
            "30",
        ])
        .args(["--stop-file", &stop.display().to_string()])
        .args(["--per-second", &per_second.display().to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("tests/lab/publish starts");
    std::thread::sleep(Duration::from_secs(4));
    std::fs::write(&stop, "").expect("stop file");
    let status = child.wait().expect("the publisher ends");
    assert!(status.success(), "{status}");
    let lines = std::fs::read_to_string(&per_second).expect("per-second file");
    let counts: Vec<u64> = lines
        .lines()
        .map(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("a line `second count`: {l:?}"))
        })
        .collect();
    assert!(counts.len() >= 4, "{lines}");
    // every whole second between the first and the last had confirms
    let inner = &counts[1..counts.len() - 1];
    assert!(inner.iter().all(|&n| n > 0), "{lines}");
    assert!(counts.iter().sum::<u64>() >= 150, "{lines}");
}
