//! Waves, gates, pauses and the failure policy of `roll upgrade` on the lab, under traffic.
//! These change the lab: they run one at a time (`serial_` in their names) and reset it when
//! they are done.

use std::path::Path;

use serde_json::json as value;

use crate::support::{
    MINOR, Next, ResetOnDrop, Roll, Traffic, assert_hosts, audit_clean, failpoint_of,
    host_queue_part, json, ops_a, ops_b, playbook_variant, release_failpoint, require_lab,
    run_watching, sr3_on, sr3_pids, status,
};

fn pids_of(hosts: &[String]) -> Vec<Vec<u32>> {
    hosts.iter().map(|h| sr3_pids(h)).collect()
}

/// The minor release with a `[rollout]` section (`rollout`, TOML lines) and, given, a gate
/// command.
fn gated(dir: &Path, name: &str, gate: Option<&str>, rollout: &str) -> String {
    let reset = "reset_queue_state = \"rm -f ~/.cache/sr3/*/*/subscriptions.json\"\n";
    let with_gate = match gate {
        Some(gate) => format!("{reset}gate = \"{gate}\"\n"),
        None => reset.to_string(),
    };
    playbook_variant(
        dir,
        MINOR,
        name,
        &[
            (reset, &with_gate),
            (
                "arguments = {}\n",
                &format!("arguments = {{}}\n\n[rollout]\n{rollout}\n"),
            ),
        ],
    )
}

/// `roll upgrade` of ops half b in waves px5 | px6 | px7 px8 pxatx1, JSON out.
fn in_waves(state: &str, playbook: &str, more: &[&str]) -> Roll {
    Roll::upgrade("ops", "b")
        .state(state)
        .playbook(playbook)
        .yes()
        .skip_promotion_check()
        .json()
        .args(["--waves", "1,2,100%"])
        .args(more)
}

/// Ops half b in waves 1,2,100% with a gate command that fails on px6 (the second wave) and
/// a caught-up gate, under 100 messages a second. With `--on-failure rollback`: the run stops
/// after the second wave, the third is never touched, and the run is rolled back at once.
/// Then with `--pause-after canary --max-failures 1`: paused after px5 (status `paused`), a
/// freeze holds the resume back, and once lifted `roll resume` goes past px6 and finishes,
/// one run in the journal. Half a is never
/// restarted; nothing is lost.
#[test]
fn serial_waves_stop_at_a_failing_gate_roll_back_at_once_or_go_past_it_with_max_failures() {
    require_lab();
    let _reset = ResetOnDrop;
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().display().to_string();
    let playbook = gated(
        dir.path(),
        "gated",
        Some("test {host} != px6 && echo healthy"),
        "max_backlog = 500\ngate_timeout = \"30s\"",
    );
    let traffic = Traffic::start(dir.path(), "waves", 100);
    let a_pids = pids_of(&ops_a());

    let run = in_waves(&state, &playbook, &["--on-failure", "rollback"]).run();
    eprintln!("{}", run.stderr);
    assert_eq!(run.code, 1, "{run:#?}");
    let report = json(&run);
    let outcome = &report["outcome"];
    assert_eq!(outcome["failure"]["host"], "px6", "{outcome:#}");
    assert_eq!(outcome["failure"]["step"], "gate", "{outcome:#}");
    assert!(
        outcome["failure"]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("the gate command exited with 1")),
        "{outcome:#}"
    );
    assert_eq!(outcome["completed"], value!(["px5"]));
    let waves = &report["plan"]["waves"];
    assert_eq!(
        waves[2]["hosts"],
        value!(["px7", "px8", "pxatx1"]),
        "{waves:#}"
    );
    let journal = std::fs::read_to_string(outcome["journal"].as_str().expect("journal"))
        .expect("the run's journal");
    // Beyond the artifacts, which every host of the half gets before anything stops. (The
    // journal's first line is the plan, which names every host.)
    for host in ["px7", "px8", "pxatx1"] {
        let touched: Vec<&str> = journal
            .lines()
            .skip(1)
            .filter(|l| l.contains(&format!("\"host\":\"{host}\"")))
            .filter(|l| !l.contains("\"step\":\"artifacts\""))
            .collect();
        assert!(touched.is_empty(), "{host} was touched: {touched:#?}");
    }
    // The canary's gate: the command and its queue measured, consumed and caught up.
    let px5_gate = journal
        .lines()
        .find(|l| {
            l.contains("\"host\":\"px5\"")
                && l.contains("\"step\":\"gate\"")
                && l.contains("\"ok\":true")
        })
        .expect("px5's gate is journaled");
    assert!(
        px5_gate.contains("gate command passed: healthy"),
        "{px5_gate}"
    );
    assert!(px5_gate.contains(&host_queue_part("px5")), "{px5_gate}");
    assert!(px5_gate.contains("consumers"), "{px5_gate}");
    let rollback = &report["rollback"]["outcome"];
    assert_eq!(rollback["status"], "done", "{rollback:#}");
    assert_hosts(&state, &ops_b(), "3.2.0.post1", "running");
    assert_eq!(pids_of(&ops_a()), a_pids, "half a was restarted");

    let paused = in_waves(
        &state,
        &playbook,
        &["--pause-after", "canary", "--max-failures", "1"],
    )
    .run();
    eprintln!("{}", paused.stderr);
    assert_eq!(paused.code, 4, "{paused:#?}");
    let report = json(&paused);
    assert_eq!(report["outcome"]["status"], "paused", "{report:#}");
    assert_eq!(report["outcome"]["completed"], value!(["px5"]));
    let rows = status(&state, "ops");
    assert!(
        rows["px5"]["last_run"]
            .as_str()
            .is_some_and(|r| r.contains("paused")),
        "{:#}",
        rows["px5"]
    );
    assert_eq!(rows["px6"]["version"], "3.2.0.post1");
    // A freeze holds the next waves back (the lab's reset lifts it, should this test fail).
    let frozen = Roll::new("freeze")
        .group("ops")
        .yes()
        .args(["--reason", "waves test"])
        .run();
    assert_eq!(frozen.code, 0, "{frozen:#?}");
    let refused = Roll::resume("ops").state(&state).run();
    assert_eq!(refused.code, 2, "{refused:#?}");
    assert!(refused.stderr.contains("waves test"), "{}", refused.stderr);
    assert_eq!(status(&state, "ops")["px6"]["version"], "3.2.0.post1");
    let lifted = Roll::new("unfreeze").group("ops").yes().run();
    assert_eq!(lifted.code, 0, "{lifted:#?}");
    let resumed = Roll::resume("ops").state(&state).json().run();
    eprintln!("{}", resumed.stderr);
    assert_eq!(resumed.code, 3, "{resumed:#?}");
    let done = json(&resumed);
    let outcome = &done["outcome"];
    assert!(outcome["failure"].is_null(), "{outcome:#}");
    assert_eq!(outcome["failures"][0]["host"], "px6", "{outcome:#}");
    assert_eq!(outcome["failures"][0]["step"], "gate", "{outcome:#}");
    assert_eq!(
        outcome["completed"],
        value!(["px5", "px7", "px8", "pxatx1"])
    );
    assert_eq!(
        outcome["journal"], report["outcome"]["journal"],
        "the pause and the resume are one run"
    );
    assert_hosts(&state, &ops_b(), "3.3.1", "running");
    assert_eq!(pids_of(&ops_a()), a_pids, "half a was restarted");
    audit_clean(traffic);
}

/// A caught-up gate (`max_backlog`) under 100 messages a second: px5's queue is consumed and
/// passes, and keeps passing for the wave's soak; px6's consumer is stopped just before its
/// gate, and the gate fails naming its queue and backlog; the third wave is never touched and
/// nothing is lost.
#[test]
fn serial_a_caught_up_gate_passes_under_traffic_and_names_a_queue_left_unconsumed() {
    require_lab();
    let _reset = ResetOnDrop;
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().display().to_string();
    let playbook = gated(
        dir.path(),
        "caught-up",
        None,
        "max_backlog = 200\ngate_timeout = \"30s\"\nmin_healthy = \"3s\"",
    );
    let waits = dir.path().join("points");
    std::fs::create_dir_all(&waits).expect("points dir");
    let traffic = Traffic::start(dir.path(), "caught", 100);
    let roll = in_waves(&state, &playbook, &[])
        .env("ROLL_FAILPOINTS", "gate=px6")
        .env("ROLL_FAILPOINT_DIR", &waits);
    let mut stopped = false;
    let run = run_watching(&roll, std::time::Duration::from_secs(600), |line| {
        if let Some(point) = failpoint_of(line) {
            let status = sr3_on("px6", "stop").wait().expect("ssh ends");
            assert!(status.success(), "sr3 stop on px6: {status}");
            stopped = true;
            // The broker's statistics of px6's queue catch up (they are sampled every 5 s).
            std::thread::sleep(std::time::Duration::from_secs(12));
            release_failpoint(&waits, &point);
        }
        Next::Go
    });
    eprintln!("{}", run.stderr);
    assert!(stopped, "the run never reached px6's gate");
    assert_eq!(run.code, 3, "{run:#?}");
    let outcome = &json(&run)["outcome"];
    assert_eq!(outcome["completed"], value!(["px5"]));
    assert_eq!(outcome["failure"]["host"], "px6", "{outcome:#}");
    assert_eq!(outcome["failure"]["step"], "gate", "{outcome:#}");
    let detail = outcome["failure"]["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains(&host_queue_part("px6")) && detail.contains("backlog"),
        "{detail}"
    );
    let journal = std::fs::read_to_string(outcome["journal"].as_str().expect("journal"))
        .expect("the run's journal");
    let px5_gate = journal
        .lines()
        .find(|l| {
            l.contains("\"host\":\"px5\"")
                && l.contains("\"step\":\"gate\"")
                && l.contains("\"ok\":true")
        })
        .expect("px5's gate is journaled");
    assert!(px5_gate.contains("consumers"), "{px5_gate}");
    // The first wave's soak held, checking px5 again for 3 s, before px6 began.
    let soak = journal
        .lines()
        .find(|l| l.contains("\"step\":\"soak wave 1\"") && l.contains("\"ok\":true"))
        .expect("the first wave's soak is journaled");
    assert!(soak.contains("held for 3s: 1 hosts"), "{soak}");
    assert_hosts(&state, &["px7", "px8", "pxatx1"], "3.2.0.post1", "running");
    // px6 is the operator's to look at; its queue kept what came meanwhile.
    let started = sr3_on("px6", "start").wait().expect("ssh ends");
    assert!(started.success());
    audit_clean(traffic);
}
