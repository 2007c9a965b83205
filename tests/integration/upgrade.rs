//! `roll upgrade`, `roll resume` and `roll status` on the lab. These change the lab: they run
//! one at a time (`serial_` in their names) and reset it when they are done.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{
    EXPIRE, MINOR, ResetOnDrop, Roll, host_queue_part, json, kill_at, lab, ops_a, ops_b,
    playbook_variant, read_to_plan, require_lab, sr3_pids, status,
};

/// `roll upgrade --yes` of a half of a group with a playbook, from a state directory.
fn upgrade(state: &str, playbook: &str, group: &str, half: &str) -> Roll {
    Roll::upgrade(group, half)
        .state(state)
        .playbook(playbook)
        .yes()
}

fn half_pids(hosts: &[String]) -> Vec<(String, Vec<u32>)> {
    hosts.iter().map(|h| (h.clone(), sr3_pids(h))).collect()
}

/// The minor release through stage and both ops halves, with a SIGKILL in the middle of
/// half b and a resume; the other half's processes are never restarted.
#[test]
fn serial_minor_upgrade_through_stage_then_both_ops_halves_with_a_kill_and_resume() {
    require_lab();
    let _reset = ResetOnDrop;
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().display().to_string();

    // ops before stage: refused by the promotion gate, nothing changed.
    let refused = upgrade(&state, MINOR, "ops", "a").run();
    assert_eq!(refused.code, 1, "{refused:#?}");
    assert!(
        refused.stderr.contains("promotion gate"),
        "{}",
        refused.stderr
    );
    for row in status(&state, "ops").values() {
        assert_eq!(row["version"], "3.2.0.post1", "{row}");
    }
    // Without a playbook, ops takes what stage completed: nothing yet.
    let nothing = Roll::upgrade("ops", "a").state(&state).yes().run();
    assert_eq!(nothing.code, 2, "{nothing:#?}");
    assert!(
        nothing
            .stderr
            .contains("no release has completed on both halves of stage"),
        "{}",
        nothing.stderr
    );

    for half in ["a", "b"] {
        let run = upgrade(&state, MINOR, "stage", half).run();
        assert_eq!(run.code, 0, "stage {half}: {run:#?}");
    }
    let b_before = half_pids(&ops_b());
    // The command as operators say it: the release comes from stage's journal.
    let run = Roll::upgrade("ops", "a")
        .state(&state)
        .yes()
        .parallel(4)
        .run();
    assert_eq!(run.code, 0, "ops a: {run:#?}");
    assert!(
        run.stderr
            .contains("group ops takes metpx-sr3 3.3.1 (playbook sr3-minor)"),
        "{}",
        run.stderr
    );
    assert_eq!(
        half_pids(&ops_b()),
        b_before,
        "half b was restarted while half a upgraded"
    );
    let rows = status(&state, "ops");
    for host in ops_a() {
        assert_eq!(rows[&host]["version"], "3.3.1", "{host}: {}", rows[&host]);
    }
    // And undone as operators say it: no playbook, the journal holds the release.
    let undone = Roll::rollback("ops").state(&state).yes().run();
    assert_eq!(undone.code, 0, "{undone:#?}");
    let rows = status(&state, "ops");
    for host in ops_a() {
        assert_eq!(
            rows[&host]["version"], "3.2.0.post1",
            "{host}: {}",
            rows[&host]
        );
    }
    let a_pids = half_pids(&ops_a());

    // Half b, killed once its canary is verified, then resumed.
    kill_at(
        &upgrade(&state, MINOR, "ops", "b"),
        &["px5", "verify", "ok"],
    );

    let rows = status(&state, "ops");
    assert_eq!(rows["px5"]["version"], "3.3.1");
    assert_eq!(rows["px5"]["service"], "running");
    assert!(
        rows["px5"]["last_run"]
            .as_str()
            .unwrap_or_default()
            .contains("interrupted"),
        "{:#?}",
        rows["px5"]
    );
    let resumed = Roll::resume("ops").state(&state).run();
    assert_eq!(resumed.code, 0, "{resumed:#?}");
    assert!(
        resumed.stderr.contains("done before, skipped"),
        "{}",
        resumed.stderr
    );

    assert_eq!(
        half_pids(&ops_a()),
        a_pids,
        "half a was restarted while half b upgraded"
    );
    let rows = status(&state, "ops");
    let half_a = lab().half("ops", "a");
    for (host, row) in &rows {
        // Half a was rolled back, its passive host too.
        let want = if half_a.contains(host) {
            "3.2.0.post1"
        } else {
            "3.3.1"
        };
        assert_eq!(row["version"], want, "{host}: {row}");
        let want = if host == "pxatx2" {
            "stopped"
        } else {
            "running"
        };
        assert_eq!(row["service"], want, "{host}: {row}");
    }
    let again = Roll::resume("ops").state(&state).run();
    assert_eq!(again.code, 0, "{again:#?}");
    assert!(
        again.stderr.contains("nothing to resume"),
        "{}",
        again.stderr
    );
    // Every upgraded host got the wheel as the playbook's artifact, checksum and all.
    let upgraded = lab().hosts("stage").into_iter().chain(lab().hosts("ops"));
    for host in upgraded {
        assert_eq!(
            artifact_sha256(&host, SR3_WHEEL).as_deref(),
            Some(SR3_WHEEL_SHA256),
            "{host}"
        );
    }
}

/// Where the lab playbooks' artifact `sr3` is on a host (in its home), and its sha256.
const SR3_WHEEL: &str = ".cache/roll/artifacts/metpx_sr3-3.3.1-py3-none-any.whl";
const SR3_WHEEL_SHA256: &str = "f9799a1112d3f59f70391019cc20883e3b50802e5d08480e9b77dfe45108d473";

/// The sha256 of a file in a lab host's home, if it is there.
fn artifact_sha256(host: &str, path: &str) -> Option<String> {
    roll::playbook::artifact::sha256_file(&lab().home(host).join(path)).ok()
}

/// A playbook whose artifact's checksum is not its file's: refused before the plan, with the
/// artifact, the file, both checksums and that nothing was changed; no run begins.
#[test]
fn an_artifact_with_a_wrong_checksum_is_refused_before_anything_changes() {
    require_lab();
    let dir = tempfile::tempdir().expect("temp dir");
    let wrong = "0".repeat(64);
    let playbook = playbook_variant(
        dir.path(),
        MINOR,
        "sr3-minor-wrong-wheel",
        &[(SR3_WHEEL_SHA256, wrong.as_str())],
    );
    let state = dir.path().join("state");
    let versions = |rows: std::collections::BTreeMap<String, Value>| -> Vec<(String, Value)> {
        rows.into_iter()
            .map(|(host, row)| (host, row["version"].clone()))
            .collect()
    };
    let before = versions(status(&state, "ops"));
    let run = upgrade(&state.display().to_string(), &playbook, "ops", "b")
        .skip_promotion_check()
        .run();
    assert_eq!(run.code, 1, "{run:#?}");
    for part in [
        "artifact sr3",
        "/var/cache/roll-lab/wheels/metpx_sr3-3.3.1-py3-none-any.whl",
        &format!("expected sha256 {wrong}"),
        &format!("actual {SR3_WHEEL_SHA256}"),
        "nothing was changed",
    ] {
        assert!(run.stderr.contains(part), "{part}: {}", run.stderr);
    }
    assert!(
        !run.stdout.contains("Upgrade of group"),
        "no plan: {}",
        run.stdout
    );
    assert_eq!(versions(status(&state, "ops")), before);
    let runs = roll::journal::runs(&state, "ops").unwrap_or_default();
    assert!(runs.is_empty(), "no run began: {runs:?}");
}

pub fn ops_queues() -> Vec<Value> {
    let (management, runtime) = crate::support::lab_management("ops");
    runtime.block_on(async {
        let mut queues: Vec<Value> = management
            .get(
                "queues/ops",
                &[("columns", "name,arguments,messages".into())],
                "queues",
            )
            .await
            .expect("queues");
        for q in &mut queues {
            let name = q["name"].as_str().unwrap_or_default().to_string();
            let bindings = management.bindings_of(&name).await.expect("bindings");
            q["bindings"] = Value::from(
                bindings
                    .iter()
                    .map(|b| format!("{} {}", b.source, b.routing_key))
                    .collect::<Vec<_>>(),
            );
        }
        queues.sort_by_key(|q| q["name"].as_str().unwrap_or_default().to_string());
        // Message counts come from statistics the broker may not have collected yet (right
        // after a reset): `foreign_messages` waits for them.
        for q in &mut queues {
            if let Some(map) = q.as_object_mut() {
                map.remove("messages");
            }
        }
        queues
    })
}

/// The foreign queue's message count, once the broker's statistics show it.
pub fn foreign_messages() -> u64 {
    let (management, runtime) = crate::support::lab_management("ops");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let q = runtime
            .block_on(management.queue("q_anonymous.subscribe.ddi-cmc.ddi1_cmc_20260101"))
            .expect("lookup")
            .expect("the foreign queue exists");
        if let Some(messages) = q.messages {
            return messages;
        }
        assert!(
            Instant::now() < deadline,
            "no message count for the foreign queue"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The queue-changing release on ops: a dry run changes nothing, a concurrent run is refused
/// naming the holder; then, with messages published all along, half b (killed as messages
/// start to move, then resumed) recreates its own and the shared queues with x-expires and
/// their bindings, leaving half a stopped on the old release as the failover; then half a,
/// then a rollback. No message is lost and no holding queue is left behind.
#[test]
fn serial_queue_expire_on_both_ops_halves_and_a_rollback_under_traffic_loses_no_message() {
    require_lab();
    let _reset = ResetOnDrop;
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().display().to_string();
    for half in ["a", "b"] {
        let run = upgrade(&state, EXPIRE, "stage", half).run();
        assert_eq!(run.code, 0, "stage {half}: {run:#?}");
    }
    let before = ops_queues();
    let dry = upgrade(&state, EXPIRE, "ops", "b").dry_run().run();
    assert_eq!(dry.code, 0, "{dry:#?}");
    assert!(
        dry.stdout.contains("critical window: yes"),
        "{}",
        dry.stdout
    );
    assert!(
        dry.stdout.contains("Dry run: nothing was changed."),
        "{}",
        dry.stdout
    );
    assert_eq!(ops_queues(), before, "the dry run changed queues");
    for row in status(&state, "ops").values() {
        assert_eq!(row["version"], "3.2.0.post1", "{row}");
    }

    // A run waiting for approval holds the lock: a second one is refused at once.
    let mut waiting = Roll::upgrade("ops", "b")
        .state(&state)
        .playbook(EXPIRE)
        .spawn();
    let _rest = read_to_plan(&mut waiting);
    let started = Instant::now();
    let second = upgrade(&state, EXPIRE, "ops", "b").dry_run().run();
    assert_eq!(second.code, 1, "{second:#?}");
    assert!(
        second.stderr.contains(&format!("pid {}", waiting.id())),
        "{}",
        second.stderr
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    drop(waiting.stdin.take()); // no approval: the first run ends, changing nothing
    let declined = waiting.wait().expect("first run ends");
    assert_eq!(declined.code(), Some(1));
    assert_eq!(ops_queues(), before, "a declined run changed queues");

    // From here on, 100 messages a second for the whole of both halves and the rollback (the
    // lab's ten sr3 subscribers on two cores keep up with that; at 200 a second their
    // backlogs, moved twice by the rollback, make the test several minutes longer).
    let traffic = crate::support::Traffic::start(dir.path(), "expire", 100);
    // Half b, killed as a queue's messages start moving into its holding queue, then resumed.
    kill_at(
        &upgrade(&state, EXPIRE, "ops", "b").parallel(5),
        &["broker", "moving"],
    );
    let named = journal_holdings(&state);
    let left = crate::support::holding_leftovers();
    assert!(!left.is_empty(), "nothing was held when roll was killed");
    for name in &left {
        let bare = name.split_once(": ").map_or(name.as_str(), |(_, n)| n);
        assert!(
            named.iter().any(|n| n == bare),
            "{bare} is on the broker but not in the journal: {named:#?}"
        );
    }
    let run = Roll::resume("ops").state(&state).json().run();
    assert_eq!(run.code, 0, "{run:#?}");
    let report = json(&run);
    let outcome = &report["outcome"];
    let window = outcome["critical_window_seconds"]
        .as_f64()
        .unwrap_or_else(|| panic!("no critical window in {outcome:#}"));
    let floor = outcome["critical_window_floor_seconds"]
        .as_f64()
        .unwrap_or_else(|| panic!("no critical window floor in {outcome:#}"));
    assert!(
        window > 0.0 && floor > 0.0 && floor <= window,
        "{outcome:#}"
    );
    let accounts = outcome["queues"].as_array().expect("queue accounts");
    assert_eq!(accounts.len(), 6, "{outcome:#}");
    for account in accounts {
        assert_eq!(account["preserved"], true, "{account}");
        assert_eq!(account["lost"], 0, "{account}");
        assert!(
            account["moved_in"].as_u64() >= account["moved_out"].as_u64(),
            "{account}"
        );
        assert!(
            account["without_consumer_seconds"].as_f64() > Some(0.0),
            "{account}"
        );
    }
    assert_eq!(crate::support::holding_leftovers(), Vec::<String>::new());
    let after = ops_queues();
    for q in &after {
        let name = q["name"].as_str().unwrap_or_default();
        let old = before.iter().find(|b| b["name"] == q["name"]);
        let changed = ops_b().iter().any(|h| name.contains(&host_queue_part(h)))
            || name == "q_roll-lab.subscribe.cluster.ops";
        if changed {
            assert_eq!(q["arguments"]["x-expires"], 604_800_000, "{q}");
        } else {
            assert!(q["arguments"].get("x-expires").is_none(), "{q}");
        }
        if let Some(old) = old {
            assert_eq!(q["bindings"], old["bindings"], "{name} lost bindings");
        }
    }
    assert_eq!(foreign_messages(), 5, "the foreign queue was touched");
    let rows = status(&state, "ops");
    for host in lab().half("ops", "a") {
        assert_eq!(rows[&host]["version"], "3.2.0.post1", "{host}");
        assert_eq!(rows[&host]["service"], "stopped", "{host}");
        assert_eq!(rows[&host]["failover"], true, "{host}");
    }
    for host in ops_b() {
        assert_eq!(rows[&host]["version"], "3.3.1", "{host}");
        assert_eq!(rows[&host]["service"], "running", "{host}");
    }

    // Then half a, and a rollback of it, still under traffic.
    let run = upgrade(&state, EXPIRE, "ops", "a").parallel(4).run();
    assert_eq!(run.code, 0, "{run:#?}");
    // Half a's queues are its hosts' own (the shared one was recreated with half b): one
    // phase, each host stopped on its own while the others consume.
    assert!(
        run.stdout.contains("longest stop of a host: "),
        "{}",
        run.stdout
    );
    let run = Roll::rollback("ops")
        .state(&state)
        .playbook(EXPIRE)
        .yes()
        .json()
        .run();
    // Half a goes back to its first release and configs (no expire), but the shared queue
    // keeps the 7d that half b's run gave it (this rollback undoes half a's run only): the
    // old release's declare of it is refused, and the rollback's verification says so
    // instead of reporting the hosts healthy.
    assert_eq!(run.code, 1, "{run:#?}");
    let report = json(&run);
    let failure = &report["outcome"]["failure"];
    assert_eq!(failure["step"], "verify again", "{failure}");
    let detail = failure["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("PRECONDITION_FAILED")
            && detail.contains("q_roll-lab.subscribe.cluster.ops"),
        "{failure}"
    );
    for account in report["outcome"]["queues"].as_array().expect("accounts") {
        assert_eq!(account["lost"], 0, "{account}");
    }
    let published = traffic.stop();
    assert!(published > 1000, "only {published} messages published");

    // Every id published was received by each queue's subscribers or is still in the queue.
    let audit = crate::support::audit(&traffic_ids(&dir));
    assert_eq!(audit["totals"]["missing"], 0, "{audit:#}");
    assert_eq!(audit["ok"], true, "{audit:#}");
    assert_eq!(
        audit["leftover_holding_queues"].as_array().map(Vec::len),
        Some(0),
        "{audit:#}"
    );
    assert_eq!(crate::support::holding_leftovers(), Vec::<String>::new());

    // The history of ops lists these runs, newest first, as their reports told them.
    let history = Roll::new("history").state(&state).group("ops").json().run();
    assert_eq!(history.code, 0, "{history:#?}");
    let runs = json(&history);
    let runs = runs.as_array().expect("runs");
    let seen: Vec<(String, String, String)> = runs
        .iter()
        .map(|r| {
            let text = |k: &str| r[k].as_str().unwrap_or("-").to_string();
            (text("kind"), text("half"), text("status"))
        })
        .collect();
    let expected = [
        ("rollback", "a", "failed"),
        ("upgrade", "a", "done"),
        ("upgrade", "b", "done"),
    ];
    let tail: Vec<(&str, &str, &str)> = seen
        .iter()
        .take(3)
        .map(|(k, h, s)| (k.as_str(), h.as_str(), s.as_str()))
        .collect();
    assert_eq!(tail, expected, "{runs:#?}");
    let half_b = &runs[2];
    let journaled = half_b["critical_window_seconds"].as_f64().expect("window");
    assert!(
        (journaled - window).abs() < 0.05,
        "{half_b:#} against {window}"
    );
    assert_eq!(half_b["queues_recreated"], 6, "{half_b:#}");
    assert_eq!(half_b["messages_lost"], 0, "{half_b:#}");
    assert!(half_b["messages_moved"].as_u64() > Some(0), "{half_b:#}");
    let rollback = &runs[0];
    let failures = rollback["failures"].as_array().expect("failures");
    assert!(
        failures
            .iter()
            .any(|f| f.as_str().unwrap_or_default().contains("verify again")),
        "{rollback:#}"
    );
    // Half b's run as a page, rendered offline by a browser.
    let b_run = half_b["run_id"].as_str().expect("run id");
    crate::report::report_renders_in_chromium(&state, "ops", b_run);
    let table = Roll::new("history").state(&state).group("ops").run();
    assert_eq!(table.code, 0, "{table:#?}");
    for r in runs {
        let id = r["run_id"].as_str().expect("run id");
        assert!(table.stdout.contains(id), "{id} not in\n{}", table.stdout);
    }
}

fn traffic_ids(dir: &tempfile::TempDir) -> std::path::PathBuf {
    dir.path().join("expire.ids")
}

/// The holding queues the journals of the state directory name (`hold` events).
fn journal_holdings(state: &str) -> Vec<String> {
    let runs = std::path::Path::new(state).join("groups/ops/runs");
    let mut names = vec![];
    for file in std::fs::read_dir(&runs).expect("runs").flatten() {
        let text = std::fs::read_to_string(file.path()).expect("journal");
        for line in text.lines() {
            if let Ok(e) = serde_json::from_str::<Value>(line)
                && e["event"] == "hold"
            {
                for key in ["holding", "exchange", "alternate"] {
                    if let Some(n) = e[key].as_str() {
                        names.push(n.to_string());
                    }
                }
            }
        }
    }
    names
}

/// A host whose upgrade command fails stops the run: no host after it is touched, the
/// untouched half keeps serving, and the report names the host and the step.
#[test]
fn serial_a_failing_host_stops_the_run_and_the_other_half_keeps_serving() {
    require_lab();
    let _reset = ResetOnDrop;
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().display().to_string();
    let playbook = playbook_variant(
        dir.path(),
        MINOR,
        "failing",
        &[
            (
                "upgrade = \"~/venv/bin/pip",
                "upgrade = \"test {host} != px6 || { echo 'disk full' >&2; exit 7; }; ~/venv/bin/pip",
            ),
            ("|| { echo", "|| {{ echo"),
            ("exit 7; };", "exit 7; }};"),
        ],
    );
    let a_pids = half_pids(&ops_a());
    let run = upgrade(&state, &playbook, "ops", "b")
        .skip_promotion_check()
        .json()
        .run();
    assert_eq!(run.code, 3, "{run:#?}");
    let report = json(&run);
    let outcome = &report["outcome"];
    assert_eq!(outcome["status"], "partial");
    assert_eq!(outcome["failure"]["host"], "px6");
    assert_eq!(outcome["failure"]["step"], "upgrade");
    assert!(
        outcome["failure"]["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("disk full"),
        "{outcome}"
    );
    assert_eq!(outcome["completed"], serde_json::json!(["px5"]));
    assert_eq!(half_pids(&ops_a()), a_pids, "half a was disturbed");
    let rows = status(&state, "ops");
    for host in ops_a() {
        assert_eq!(rows[&host]["service"], "running", "{host}");
    }
    for host in ["px7", "px8", "pxatx1"] {
        assert_eq!(rows[host]["version"], "3.2.0.post1", "{host} was touched");
        assert_eq!(rows[host]["service"], "running", "{host}");
    }
    // The override is recorded in the journal.
    let journal = outcome["journal"].as_str().expect("journal path");
    let text = std::fs::read_to_string(journal).expect("journal");
    assert!(text.contains("\"skip_promotion_check\":true"), "{text}");
}

/// A failure inside the critical window (the canary does not start): the shared queue gets
/// its backed-up definition back and the untouched half is started again on the old release.
#[test]
fn serial_a_failure_in_the_critical_window_restores_the_shared_queue_and_the_other_half() {
    require_lab();
    let _reset = ResetOnDrop;
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().display().to_string();
    // Its templates are copied beside it.
    let playbook = playbook_variant(
        dir.path(),
        EXPIRE,
        "failing-start",
        &[(
            "start = \"cd ~ &&",
            "start = \"test ! -e ~/roll-test-fail-start || {{ echo 'cannot start' >&2; exit 9; }}; cd ~ &&",
        )],
    );
    let before = ops_queues();
    // px5 cannot start (until the marker goes, before the rollback).
    let marker = lab().home("px5").join("roll-test-fail-start");
    std::fs::write(&marker, "").expect("marker");
    let traffic = crate::support::Traffic::start(dir.path(), "window", 100);
    let run = upgrade(&state, &playbook, "ops", "b")
        .skip_promotion_check()
        .parallel(5)
        .json()
        .run();
    assert_eq!(run.code, 1, "{run:#?}");
    let report = json(&run);
    assert_eq!(report["outcome"]["failure"]["host"], "px5", "{report:#}");
    assert_eq!(report["outcome"]["failure"]["step"], "start", "{report:#}");
    let shared = ops_queues()
        .into_iter()
        .find(|q| q["name"] == "q_roll-lab.subscribe.cluster.ops")
        .expect("the shared queue exists");
    let old = before
        .iter()
        .find(|q| q["name"] == "q_roll-lab.subscribe.cluster.ops")
        .expect("it existed");
    assert!(shared["arguments"].get("x-expires").is_none(), "{shared}");
    assert_eq!(shared["bindings"], old["bindings"]);
    let rows = status(&state, "ops");
    for host in ops_a() {
        assert_eq!(rows[&host]["service"], "running", "{host}: {}", rows[&host]);
        assert_eq!(rows[&host]["version"], "3.2.0.post1", "{host}");
    }
    assert_eq!(rows["px5"]["service"], "stopped");

    // Then a rollback, while half a serves the shared queue: it is left as the failover put
    // it (never taken from its running consumers), and they receive all along.
    std::fs::remove_file(&marker).expect("marker");
    let started = std::time::SystemTime::now();
    let run = Roll::rollback("ops")
        .state(&state)
        .playbook(&playbook)
        .yes()
        .json()
        .run();
    let ended = std::time::SystemTime::now();
    assert_eq!(run.code, 0, "{run:#?}");
    let report = json(&run);
    assert_eq!(
        report["plan"]["restored"],
        serde_json::json!(["q_roll-lab.subscribe.cluster.ops"]),
        "{report:#}"
    );
    for account in report["outcome"]["queues"].as_array().expect("accounts") {
        assert_eq!(account["lost"], 0, "{account}");
    }
    let gap = longest_silence(&ops_a(), "cluster", started, ended);
    assert!(
        gap < Duration::from_secs(10),
        "half a received nothing of the shared queue for {gap:?} during the rollback"
    );
    let rows = status(&state, "ops");
    for host in ops_a()
        .iter()
        .map(String::as_str)
        .chain(["px5", "px6", "px7", "px8"])
    {
        assert_eq!(rows[host]["version"], "3.2.0.post1", "{host}");
        assert_eq!(rows[host]["service"], "running", "{host}");
    }
    let ids = traffic.ids.clone();
    traffic.stop();
    let audit = crate::support::audit(&ids);
    // The pair swap started pxatx2: its queue exists only since (as in the rollback tests).
    assert_eq!(
        crate::support::audit_counts_without(&audit, &["pxatx2"]),
        (0, 0),
        "{audit:#}"
    );
    assert_eq!(crate::support::holding_leftovers(), Vec::<String>::new());
}

/// The longest time between `from` and `to` in which none of `hosts` logged a message
/// received through its sr3 config `config`.
fn longest_silence(
    hosts: &[String],
    config: &str,
    from: std::time::SystemTime,
    to: std::time::SystemTime,
) -> Duration {
    let secs = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
    };
    let (from, to) = (secs(from), secs(to));
    let mut times = vec![from, to];
    for host in hosts {
        let log = lab()
            .home(host)
            .join(format!(".cache/sr3/log/subscribe_{config}_01.log"));
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        for line in text.lines().filter(|l| l.contains("after_accept accepted")) {
            // `2026-12-01 22:45:41,474 [INFO] ...`, in UTC as the lab runs.
            let Some(stamp) = line.get(..23) else {
                continue;
            };
            let Some(t) = utc_seconds(stamp) else {
                continue;
            };
            if t > from && t < to {
                times.push(t);
            }
        }
    }
    times.sort_by(f64::total_cmp);
    let gap = times.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
    Duration::from_secs_f64(gap)
}

/// Seconds since the epoch of `YYYY-MM-DD HH:MM:SS,mmm` (UTC).
fn utc_seconds(stamp: &str) -> Option<f64> {
    let n = |r: std::ops::Range<usize>| stamp.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
    let (h, mi, s, ms) = (n(11..13)?, n(14..16)?, n(17..19)?, n(20..23)?);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if mo > 2 { mo - 3 } else { mo + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + h * 3600 + mi * 60 + s) as f64 + ms as f64 / 1000.0)
}

/// A group that requires no other, without a playbook: refused before anything is touched.
#[test]
fn an_upgrade_without_a_playbook_of_a_group_that_requires_none_is_refused() {
    require_lab();
    let dir = tempfile::tempdir().expect("temp dir");
    let run = Roll::upgrade("dev", "a").state(&dir).dry_run().run();
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(
        run.stderr
            .contains("group dev: no playbook given (-p FILE or ROLL_PLAYBOOK)"),
        "{}",
        run.stderr
    );
}

#[test]
fn log_stamps_are_read_as_utc() {
    assert_eq!(utc_seconds("1970-01-01 00:00:01,500"), Some(1.5));
    assert_eq!(
        utc_seconds("2026-12-01 22:45:41,474"),
        Some(1_796_165_141.474)
    );
    assert_eq!(utc_seconds("garbage"), None);
}
