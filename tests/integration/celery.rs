//! The Celery fleet on the lab's cluster (group `celery`): its release from Celery 5.4.0 with a
//! classic queue `tasks` to 5.5.3 with a quorum queue, half a then half b, under a steady task
//! load, with a rollback between; every published task executed once, the cluster's listeners
//! never suspended.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use crate::support::{ClusterResetOnDrop, Roll, json, lab, repo, require_lab};

const CELERY: &str = "playbooks/celery-quorum.toml";

/// A lab script run in the background until [`Background::stop`] (SIGTERM: it waits for its
/// last confirms and writes what it recorded).
struct Background {
    child: Child,
    name: &'static str,
}

impl Background {
    fn start(name: &'static str, script: &str, args: &[String]) -> Background {
        let child = Command::new(repo(script))
            .args(args)
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{script} starts: {e}"));
        Background { child, name }
    }

    fn stop(mut self) {
        let pid = self.child.id().to_string();
        let killed = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(
            killed.is_ok_and(|s| s.success()),
            "cannot signal {}",
            self.name
        );
        let status = self.child.wait().expect("it ends");
        eprintln!("{} ended with {status}", self.name);
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Steady Celery tasks, `rate` a second, through c2 and c3 (never c1 first); confirmed ids
/// in `ids`.
fn task_load(ids: &Path, rate: u32) -> Background {
    Background::start(
        "celery_publish",
        "tests/lab/celery_publish",
        &[
            "--ids-file".into(),
            ids.display().to_string(),
            "--rate".into(),
            rate.to_string(),
            "--quiet".into(),
        ],
    )
}

/// Steady messages to the cluster's vhost `steady`, which no run touches, with their confirms
/// counted per second in `per_second`.
fn steady_load(dir: &Path, per_second: &Path) -> Background {
    Background::start(
        "publish (steady)",
        "tests/lab/publish",
        &[
            "--vhost".into(),
            "steady".into(),
            "--host".into(),
            "127.0.0.1:5682,127.0.0.1:5683,127.0.0.1:5681".into(),
            "--rate".into(),
            "20".into(),
            "--until-stopped".into(),
            "--ids-file".into(),
            dir.join("steady.ids").display().to_string(),
            "--per-second".into(),
            per_second.display().to_string(),
            "--reconnect".into(),
            "120".into(),
            "--quiet".into(),
        ],
    )
}

/// The longest run of whole seconds without a confirm in a `--per-second` file, and the
/// number of seconds it covers.
fn longest_silence(per_second: &Path) -> (u64, usize) {
    let text = std::fs::read_to_string(per_second).expect("per-second file");
    let counts: Vec<u64> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
        .collect();
    let mut longest = 0;
    let mut run = 0;
    for c in &counts {
        run = if *c == 0 { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    (longest, counts.len())
}

/// `tests/lab/celery_audit` of the ids in `ids` (JSON).
fn celery_audit(ids: &Path) -> Value {
    let output = Command::new(repo("tests/lab/celery_audit"))
        .args(["--ids-file", &ids.display().to_string(), "--json"])
        .args(["--timeout", "180"])
        .output()
        .expect("tests/lab/celery_audit runs");
    crate::support::script_json("celery_audit", &output)
}

/// Stops the task load and audits its tasks: more than `at_least` published, every one
/// executed once or still queued, none lost, returned or executed twice. The audit (JSON).
fn every_task_executed_once(load: Background, ids: &Path, at_least: u64) -> Value {
    load.stop();
    let audit = celery_audit(ids);
    eprintln!(
        "celery audit: published {}, executed {}, queued {}, lost {}, executed twice {}, by version {}",
        audit["published"],
        audit["executed"],
        audit["queued"],
        audit["lost"],
        audit["executed_twice"],
        audit["executions_by_version"]
    );
    assert!(audit["published"].as_u64() > Some(at_least), "{audit:#}");
    assert_eq!(audit["lost"], 0, "{audit:#}");
    assert_eq!(audit["executed_twice"], 0, "{audit:#}");
    assert_eq!(audit["returned"], 0, "{audit:#}");
    assert_eq!(audit["ok"], true, "{audit:#}");
    audit
}

/// The queue `tasks` of vhost celery, as the cluster's c2 shows it.
fn tasks_queue() -> Value {
    crate::support::cluster_get("/api/queues/celery/tasks")
}

fn queue_type(queue: &Value) -> &str {
    queue["type"].as_str().unwrap_or("?")
}

/// Where a queue lives: a classic queue's node, a quorum queue's leader.
fn home_of(queue: &Value) -> String {
    queue["leader"]
        .as_str()
        .or(queue["node"].as_str())
        .unwrap_or("?")
        .to_string()
}

/// `roll status` of the celery group, as rows by host.
fn celery_status(state: &str) -> std::collections::BTreeMap<String, Value> {
    let run = Roll::status("celery")
        .state(state)
        .playbook(CELERY)
        .json()
        .run();
    assert_eq!(run.code, 0, "{run:#?}");
    json(&run)
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| (r["host"].as_str().unwrap_or("?").to_string(), r.clone()))
        .collect()
}

fn assert_half(state: &str, half: &str, version: &str, service: &str) {
    let rows = celery_status(state);
    for host in lab().half("celery", half) {
        let row = &rows[&host];
        assert_eq!(row["version"], version, "{host}: {row}");
        assert_eq!(row["service"], service, "{host}: {row}");
    }
}

/// One run of the celery group; its JSON report.
fn run(state: &str, roll: Roll) -> Value {
    let run = roll.state(state).playbook(CELERY).yes().json().run();
    let report = json(&run);
    assert_eq!(
        run.code, 0,
        "{}\noutcome: {:#}",
        run.stderr, report["outcome"]
    );
    report
}

#[test]
fn serial_celery_moves_its_queue_to_quorum_half_a_then_b_under_load_with_a_rollback_between() {
    require_lab();
    let _reset = ClusterResetOnDrop;
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().display().to_string();
    let first = tasks_queue();
    assert_eq!(queue_type(&first), "classic");
    // The workers declared it on the node they connect to (c2 or c3); roll talks to c1 first.
    let home = home_of(&first);
    assert!(!home.starts_with("roll-c1@"), "{first:#}");
    assert_half(&state, "a", "5.4.0", "running");
    assert_half(&state, "b", "5.4.0", "running");

    let ids: PathBuf = dir.path().join("tasks.ids");
    let per_second = dir.path().join("steady.per-second");
    let load = task_load(&ids, 20);
    let steady = steady_load(dir.path(), &per_second);
    std::thread::sleep(std::time::Duration::from_secs(3));

    // Half a: the shared queue is recreated as a quorum queue in a critical window; half b
    // stays stopped on 5.4 as the failover.
    let report = run(&state, Roll::upgrade("celery", "a"));
    let outcome = &report["outcome"];
    let window = outcome["critical_window_seconds"]
        .as_f64()
        .unwrap_or_else(|| panic!("no critical window in {outcome:#}"));
    assert!(window > 0.0, "{outcome:#}");
    eprintln!("celery half a: critical window {window:.1} s");
    for account in outcome["queues"].as_array().expect("queue accounts") {
        assert_eq!(account["lost"], 0, "{account}");
    }
    let queue = tasks_queue();
    assert_eq!(queue_type(&queue), "quorum", "{queue:#}");
    assert_eq!(queue["arguments"]["x-queue-type"], "quorum", "{queue:#}");
    // Recreated where it lived: its leader is the classic queue's node, not roll's c1.
    assert_eq!(home_of(&queue), home, "{queue:#}");
    assert_half(&state, "a", "5.5.3", "running");
    assert_half(&state, "b", "5.4.0", "stopped");

    // The rollback of half a's run: the queue is classic again, with its messages; half a
    // is back on 5.4.
    let report = run(&state, Roll::rollback("celery"));
    for account in report["outcome"]["queues"].as_array().into_iter().flatten() {
        assert_eq!(account["lost"], 0, "{account}");
    }
    let queue = tasks_queue();
    assert_eq!(queue_type(&queue), "classic", "{queue:#}");
    assert_eq!(home_of(&queue), home, "{queue:#}");
    assert_half(&state, "a", "5.4.0", "running");

    // Then the release for good: half a, then half b (the queue is quorum already: its hosts
    // are upgraded one by one, the others consuming).
    let report = run(&state, Roll::upgrade("celery", "a"));
    assert!(
        report["outcome"]["critical_window_seconds"].as_f64() > Some(0.0),
        "{report:#}"
    );
    let report = run(&state, Roll::upgrade("celery", "b"));
    assert!(
        report["outcome"]["queues"]
            .as_array()
            .is_none_or(Vec::is_empty),
        "half b recreated a queue: {report:#}"
    );
    assert_half(&state, "a", "5.5.3", "running");
    assert_half(&state, "b", "5.5.3", "running");
    let queue = tasks_queue();
    assert_eq!(queue_type(&queue), "quorum", "{queue:#}");
    let everything = crate::support::cluster_get("/api/queues/celery?columns=name,type");
    for q in everything.as_array().expect("queues") {
        let name = q["name"].as_str().unwrap_or_default();
        if !name.ends_with(".pidbox") && !name.starts_with("celeryev") {
            assert_eq!(q["type"], "quorum", "{q}");
        }
    }

    steady.stop();
    let audit = every_task_executed_once(load, &ids, 500);
    let versions = &audit["executions_by_version"];
    assert!(
        versions["5.4.0"].as_u64() > Some(0) && versions["5.5.3"].as_u64() > Some(0),
        "{audit:#}"
    );
    // The listeners were never suspended: vhost steady kept getting confirms all along.
    let (silence, seconds) = longest_silence(&per_second);
    eprintln!("steady vhost: longest silence {silence} s of {seconds} s");
    assert!(seconds > 30, "only {seconds} s of steady publishing");
    assert!(
        silence < 5,
        "the steady vhost had {silence} s without a confirm (of {seconds} s)"
    );
}

/// The lab inventory with the celery group's management API tried through c2 first (the
/// holding queue and the recreated queue are declared there, so c2 leads them), its AMQP
/// connections through c1 first as in the lab's: the node that leads a holding queue is not
/// the node of the run's connections.
fn inventory_through_c2(dir: &Path) -> PathBuf {
    let lab = std::fs::read_to_string(repo("inventory/lab.toml")).expect("lab inventory");
    let from = "broker.vhost = \"celery\"\nbroker.management_url = [\"http://127.0.0.1:15681\", \"http://127.0.0.1:15682\", \"http://127.0.0.1:15683\"]";
    assert!(
        lab.contains(from),
        "inventory/lab.toml's celery group changed"
    );
    let to = "broker.vhost = \"celery\"\nbroker.management_url = [\"http://127.0.0.1:15682\", \"http://127.0.0.1:15681\", \"http://127.0.0.1:15683\"]";
    let path = dir.join("lab-c2.toml");
    std::fs::write(&path, lab.replace(from, to)).expect("inventory copy");
    path
}

/// The node (1, 2 or 3) that leads the run's holding queue in vhost celery.
fn holding_leader() -> usize {
    let queues = crate::support::cluster_get("/api/queues/celery?columns=name,type,leader,node");
    let held = queues
        .as_array()
        .expect("queues")
        .iter()
        .find(|q| {
            q["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("roll.hold."))
        })
        .unwrap_or_else(|| panic!("no holding queue in {queues:#}"))
        .clone();
    assert_eq!(
        held["type"], "quorum",
        "a holding queue on a cluster: {held}"
    );
    let leader = held["leader"]
        .as_str()
        .or(held["node"].as_str())
        .unwrap_or("?");
    eprintln!("holding queue {} led by {leader}", held["name"]);
    ["roll-c1@", "roll-c2@", "roll-c3@"]
        .iter()
        .position(|p| leader.starts_with(p))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("leader {leader} is no lab node"))
}

/// In the middle of half a's critical window (the queue's tasks and those published since in
/// the holding queue), the node leading the holding queue stops. The quorum holding queue
/// keeps its tasks on the other two nodes: the run goes on, or stops at a step and `roll
/// resume` finishes once the node is back; either way every task is executed once.
#[test]
fn serial_celery_the_node_leading_the_holding_queue_stops_mid_window_and_no_task_is_lost() {
    use crate::support::{Next, failpoint_of, release_failpoint, run_watching};
    require_lab();
    let _reset = ClusterResetOnDrop; // starts the stopped node again, whatever happens
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().display().to_string();
    let inventory = inventory_through_c2(dir.path());
    let ids: PathBuf = dir.path().join("tasks.ids");
    let load = task_load(&ids, 20);
    std::thread::sleep(std::time::Duration::from_secs(3));

    let waits = dir.path().join("points");
    std::fs::create_dir_all(&waits).expect("points dir");
    let mut stopped = None;
    let mut restart = None;
    let roll = Roll::upgrade("celery", "a")
        .inventory(&inventory)
        .state(&state)
        .playbook(CELERY)
        .yes()
        .json()
        .env("ROLL_FAILPOINTS", "recreate=tasks")
        .env("ROLL_FAILPOINT_DIR", &waits);
    let run = run_watching(&roll, std::time::Duration::from_secs(600), |line| {
        if let Some(point) = failpoint_of(line) {
            let leader = holding_leader();
            crate::support::cluster_node("stop", leader);
            stopped = Some(leader);
            release_failpoint(&waits, &point);
            // Back after 15 s (a classic queue on it is waited for meanwhile).
            restart = Some(std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_secs(15));
                crate::support::cluster_node("start", leader);
            }));
        }
        Next::Go
    });
    eprintln!("{}", run.stderr);
    eprintln!("exit {}", run.code);
    let leader = stopped.expect("the run never reached the recreation of tasks");
    assert_eq!(leader, 2, "the holding queue was declared through c2");
    if let Some(restart) = restart {
        restart.join().expect("the node started again");
    }
    if run.code != 0 {
        // Stopped cleanly at a step, saying so; the node back, resume finishes the run.
        assert!(run.stderr.contains("roll resume"), "{}", run.stderr);
        let resumed = Roll::resume("celery")
            .inventory(&inventory)
            .state(&state)
            .json()
            .run();
        assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    }
    let queue = tasks_queue();
    assert_eq!(queue_type(&queue), "quorum", "{queue:#}");
    assert_half(&state, "a", "5.5.3", "running");
    let leftovers = crate::support::cluster_get("/api/queues/celery?columns=name");
    assert!(
        !leftovers
            .as_array()
            .expect("queues")
            .iter()
            .any(|q| q["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("roll.hold."))),
        "a holding queue was left: {leftovers:#}"
    );

    every_task_executed_once(load, &ids, 100);
}
