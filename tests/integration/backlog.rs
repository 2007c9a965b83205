//! A queue with a backlog, recreated on the lab: its messages are held while its consumer
//! still runs, so that the stop does not wait for them. Changes the lab (`serial_`).

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::support::{
    EXPIRE, ResetOnDrop, Roll, Traffic, audit_clean_with, host_queue_part, json, repo, require_lab,
};

/// Messages published straight into the queue `queue` (the default exchange), as fast as the
/// broker takes them; their ids go to `ids`.
pub fn publish_into(queue: &str, count: u32, ids: &Path) {
    let out = Command::new(repo("tests/lab/publish"))
        .args(["--exchange", "", "--topic", queue, "--rate", "20000"])
        .args(["--count", &count.to_string(), "--quiet", "--ids-file"])
        .arg(ids)
        .output()
        .expect("tests/lab/publish runs");
    assert!(out.status.success(), "publish into {queue}: {out:?}");
}

/// The name of px5's own queue on the lab's ops vhost.
pub fn px5_queue() -> String {
    let px5 = host_queue_part("px5");
    crate::upgrade::ops_queues()
        .iter()
        .filter_map(|q| q["name"].as_str().map(str::to_string))
        .find(|n| n.contains(".pump.") && n.contains(&px5))
        .expect("px5's own queue")
}

/// Waits until the management API shows at least `messages` in `queue`. Its counts are
/// sampled (every 5 s on the lab): a plan sees a backlog once they show it, as it would a
/// backlog of any age.
pub fn until_shown(queue: &str, messages: u64) {
    let (management, runtime) = crate::support::lab_management("ops");
    let shown = || {
        runtime
            .block_on(management.queue(queue))
            .expect("lookup")
            .and_then(|q| q.messages)
            .unwrap_or(0)
    };
    let since = std::time::Instant::now();
    while shown() < messages {
        assert!(
            since.elapsed() < std::time::Duration::from_secs(30),
            "the broker never showed the backlog of {queue}"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// The finished, successful step `step` of `host` in a journal: its detail.
fn detail_of(journal: &str, host: &str, step: &str) -> String {
    std::fs::read_to_string(journal)
        .expect("journal")
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|e| {
            e["event"] == "step-finished"
                && e["ok"] == true
                && e["host"] == host
                && e["step"] == step
        })
        .and_then(|e| e["detail"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("no finished step {host} {step} in {journal}"))
}

/// The first number of a text.
fn first_number(text: &str) -> u64 {
    text.split(|c: char| !c.is_ascii_digit())
        .find(|w| !w.is_empty())
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no number in {text:?}"))
}

/// The queue-changing release on ops half b under 100 messages a second, with 10,000 more
/// waiting in px5's own queue while its subscriber runs. The plan shows the backlog and that
/// it is held before the stop; px5's hold moves it while its subscriber still consumes, so
/// its recreate moves only what came since; the window and the longest time a queue was
/// without a consumer are reported; every message was received once or is still queued.
#[test]
fn serial_a_backlog_is_held_while_its_consumer_runs_and_none_is_lost_or_twice() {
    require_lab();
    let _reset = ResetOnDrop;
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().display().to_string();
    let px5 = host_queue_part("px5");
    let queue = px5_queue();
    let traffic = Traffic::start(dir.path(), "backlog", 100);
    let backlog_ids = dir.path().join("backlog-into-px5.ids");
    publish_into(&queue, 10_000, &backlog_ids);
    until_shown(&queue, 5_000);

    let run = Roll::upgrade("ops", "b")
        .state(&state)
        .playbook(EXPIRE)
        .yes()
        .skip_promotion_check()
        .parallel(5)
        .json()
        .run();
    assert_eq!(run.code, 0, "{run:#?}");
    let report = json(&run);
    let planned = report["plan"]["hosts"]
        .as_array()
        .expect("planned hosts")
        .iter()
        .flat_map(|h| h["queues"].as_array().cloned().unwrap_or_default())
        .find(|q| q["name"] == queue.as_str())
        .expect("px5's queue in the plan");
    assert_eq!(planned["held_while_running"], true, "{planned}");
    assert!(planned["messages"].as_u64() >= Some(1_000), "{planned}");

    let outcome = &report["outcome"];
    let journal = outcome["journal"].as_str().expect("journal");
    let hold = detail_of(journal, "px5", &format!("hold {queue}"));
    assert!(hold.contains("while its consumers run"), "{hold}");
    let held = first_number(hold.rsplit("; ").next().unwrap_or_default());
    assert!(held >= 1_000, "{hold}");
    // What the stop waited for: only what came since the hold.
    let recreate = detail_of(journal, "px5", &format!("recreate {queue}"));
    let in_stop = first_number(&recreate);
    assert!(in_stop < held, "hold {hold}; recreate {recreate}");
    eprintln!("px5: {held} messages held while its subscriber ran, {in_stop} in its stop");

    let window = outcome["critical_window_seconds"].as_f64().expect("window");
    let floor = outcome["critical_window_floor_seconds"]
        .as_f64()
        .expect("floor");
    let longest = &outcome["longest_without_consumer"];
    let longest_seconds = longest["seconds"].as_f64().expect("longest outage");
    assert!(floor <= window && window <= longest_seconds, "{outcome:#}");
    eprintln!("window {window:.1}s (floor {floor:.1}s); longest without a consumer {longest}");
    for account in outcome["queues"].as_array().expect("accounts") {
        assert_eq!(account["lost"], 0, "{account}");
        assert_eq!(account["duplicated"], 0, "{account}");
    }
    audit_clean_with(traffic, &[(px5, backlog_ids)]);
}
