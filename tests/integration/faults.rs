//! When the world fails under a run: the broker restarts, the lock's connection is closed, a
//! host is lost, the state directory fills up. Each test runs under traffic (the lab's
//! publisher, riding through broker restarts) and ends with the lab's audit: every id
//! published was received or is still queued, none twice. Serial: they change the lab, and
//! reset it when they are done.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::support::{
    EXPIRE, MINOR, Next, ResetOnDrop, Roll, Run, assert_hosts, audit_clean, broker_start,
    broker_stop, failpoint_of, json, lab, ops_a, ops_b, playbook_variant, release_failpoint,
    require_lab, run_watching, says, sr3_pids, status,
};

const LONG: Duration = Duration::from_secs(600);

/// The sr3 pids of each of these hosts.
fn pids_of(hosts: &[String]) -> Vec<Vec<u32>> {
    hosts.iter().map(|h| sr3_pids(h)).collect()
}

/// `roll upgrade --yes --skip-promotion-check` of a half of ops.
fn upgrade(state: &str, playbook: &str, half: &str) -> Roll {
    Roll::upgrade("ops", half)
        .state(state)
        .playbook(playbook)
        .yes()
        .skip_promotion_check()
}

/// Runs `roll`, taking the broker down at each of `points` (`stage=word`, see roll's
/// `failpoint` module): when the run reaches one, the broker's application stops, the run
/// goes on against it, and the broker comes back 5 s later. Returns the run and the points
/// it went through.
fn restarting_at(dir: &Path, roll: Roll, points: &str) -> (Run, Vec<String>) {
    let waits = dir.join("points");
    std::fs::create_dir_all(&waits).expect("points dir");
    let mut reached = vec![];
    let run = run_watching(
        &roll
            .env("ROLL_FAILPOINTS", points)
            .env("ROLL_FAILPOINT_DIR", &waits),
        LONG,
        |line| {
            if let Some(point) = failpoint_of(line) {
                broker_stop();
                release_failpoint(&waits, &point);
                std::thread::sleep(Duration::from_secs(5));
                broker_start();
                reached.push(point);
            }
            Next::Go
        },
    );
    eprintln!("{}", run.stderr);
    (run, reached)
}

fn resume(state: &str) -> Run {
    Roll::resume("ops").state(state).json().run()
}

/// The queue-changing release for the hosts' own queues only (the pump cluster's shared queue
/// is left alone): one phase, each host stopped on its own.
fn pump_expire(dir: &Path, name: &str, extra: &[(&str, &str)]) -> String {
    let mut replace = vec![
        ("name = \"sr3-queue-expire\"", format!("name = \"{name}\"")),
        (
            "discover = 'for f in ~/.cache/sr3/*/*/*.qname;",
            "discover = 'for f in ~/.cache/sr3/subscribe/pump/*.qname;".to_string(),
        ),
        (
            "[[queues.owned]]\npattern = \"q_{broker_user}.subscribe.cluster.*\"\nowner = \"shared\"\n",
            String::new(),
        ),
        (
            "[[files]]\npath = \".config/sr3/subscribe/cluster.conf\"\ntemplate = \"files/sr3-queue-expire/cluster.conf\"\nmode = \"0644\"\nonly_if_present = true\n",
            String::new(),
        ),
    ];
    replace.extend(extra.iter().map(|(a, b)| (*a, b.to_string())));
    let replace: Vec<(&str, &str)> = replace.iter().map(|(a, b)| (*a, b.as_str())).collect();
    playbook_variant(dir, EXPIRE, name, &replace)
}

/// Every recreated queue of an outcome kept its messages, and none was put there twice as
/// far as roll knows: a move the broker cut off in the middle says how many it may have left
/// on both queues (at most a batch), and the audit tells whether it did.
fn nothing_lost(outcome: &Value) {
    for account in outcome["queues"].as_array().expect("queue accounts") {
        assert_eq!(account["lost"], 0, "{account}");
        if account["duplicates_known"] == true {
            assert_eq!(account["duplicated"], 0, "{account}");
        } else {
            let at_most = account["duplicated"].as_u64().unwrap_or(u64::MAX);
            assert!(
                at_most <= u64::from(roll::broker::mover::WINDOW),
                "{account}"
            );
        }
    }
}

/// The broker restarted at each stage of a queue's recreation (hold, recreate, in the middle
/// of a move, release), one host each: the run waits for the broker, takes its lock again and
/// finishes by itself, nothing lost, no holding topology left. Then a one-phase run that fails
/// after a recreate: a new `roll upgrade` is refused with the way on, and `resume` finishes.
#[test]
fn serial_broker_restarts_at_each_stage_and_an_unfinished_run_is_not_overrun() {
    require_lab();
    let _reset = ResetOnDrop;
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().display().to_string();
    let playbook = pump_expire(dir.path(), "pump-expire", &[]);
    let traffic = crate::support::Traffic::start(dir.path(), "stages", 100);
    let b_pids = pids_of(&ops_b());

    let (run, restarts) = restarting_at(
        dir.path(),
        upgrade(&state, &playbook, "a").json(),
        "hold=px1,recreate=px2,move=px3,release=px4",
    );
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(restarts.len(), 4, "{restarts:?}: {run:#?}");
    assert!(
        run.stderr.contains("the broker answers again"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("lock") && run.stderr.contains("taken again"),
        "{}",
        run.stderr
    );
    let outcome = json(&run)["outcome"].clone();
    nothing_lost(&outcome);
    assert_eq!(
        outcome["queues"].as_array().map(Vec::len),
        Some(4),
        "{outcome:#}"
    );
    assert_eq!(crate::support::holding_leftovers(), Vec::<String>::new());
    let after = resume(&state);
    assert_eq!(after.code, 0, "{after:#?}");
    assert!(
        after.stderr.contains("nothing to resume"),
        "{}",
        after.stderr
    );
    assert_hosts(&state, &ops_a(), "3.3.1", "running");
    let now = pids_of(&ops_b());
    assert_eq!(now, b_pids, "half b was restarted");

    // Half b, with px6's queue-state reset failing (once) after its queue was recreated.
    let marker = lab().home("px6").join("roll-test-fail-reset");
    std::fs::write(&marker, "").expect("marker");
    let failing = pump_expire(
        dir.path(),
        "pump-expire-b",
        &[(
            "reset_queue_state = \"rm -f",
            "reset_queue_state = \"test ! -e ~/roll-test-fail-reset && rm -f",
        )],
    );
    let run = upgrade(&state, &failing, "b").json().run();
    assert_eq!(run.code, 3, "{run:#?}");
    let report = json(&run);
    let failure = &report["outcome"]["failure"];
    assert_eq!(failure["host"], "px6", "{failure}");
    assert_eq!(failure["step"], "reset queue state", "{failure}");
    let run_id = report["plan"]["run_id"]
        .as_str()
        .expect("run id")
        .to_string();

    // A new upgrade over it is refused, naming the run and the two ways on; nothing changes.
    let before = crate::upgrade::ops_queues();
    let again = upgrade(&state, &playbook, "b").run();
    assert_eq!(again.code, 2, "{again:#?}");
    for words in [
        run_id.as_str(),
        "partial",
        "roll resume --group ops",
        "roll rollback --group ops",
    ] {
        assert!(again.stderr.contains(words), "{words}: {}", again.stderr);
    }
    assert_eq!(
        crate::upgrade::ops_queues(),
        before,
        "the refused run changed queues"
    );

    std::fs::remove_file(&marker).expect("marker");
    let resumed = resume(&state);
    assert_eq!(resumed.code, 0, "{resumed:#?}");
    nothing_lost(&json(&resumed)["outcome"]);
    assert_hosts(&state, &ops_b(), "3.3.1", "running");
    assert_eq!(crate::support::holding_leftovers(), Vec::<String>::new());
    audit_clean(traffic);
}

/// Half b of ops with the queue-changing release, the broker restarted twice in its critical
/// window (at the first move of a host's queue, then of the shared queue): the run waits for
/// the broker and finishes, its own share of the window within 2 s of what the services and
/// the broker took. Then the shared queue changes again on half a and px2 is lost once the
/// canary is verified: the failover puts the shared queue back and half b serves again;
/// after px2 is repaired, `resume` redoes the critical window within its floor + 2 s.
#[test]
fn serial_broker_restarts_in_the_critical_window_then_a_host_lost_after_the_canary() {
    require_lab();
    let _reset = ResetOnDrop;
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().display().to_string();
    let traffic = crate::support::Traffic::start(dir.path(), "window", 100);

    let (run, restarts) = restarting_at(
        dir.path(),
        upgrade(&state, EXPIRE, "b").parallel(5).json(),
        "move=pump,move=cluster",
    );
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(restarts.len(), 2, "{restarts:?}: {run:#?}");
    let outcome = json(&run)["outcome"].clone();
    nothing_lost(&outcome);
    let window = outcome["critical_window_seconds"].as_f64().expect("window");
    let floor = outcome["critical_window_floor_seconds"]
        .as_f64()
        .expect("floor");
    let broker = outcome["broker_unavailable_seconds"]
        .as_f64()
        .expect("broker");
    eprintln!(
        "critical window {window:.1}s: services {floor:.1}s, broker unavailable {broker:.1}s, \
         roll {:.1}s",
        window - floor - broker
    );
    assert!(broker >= 5.0, "{outcome:#}");
    assert!(
        window - floor - broker <= 2.0,
        "roll's own share is over 2 s: {outcome:#}"
    );
    assert_eq!(crate::support::holding_leftovers(), Vec::<String>::new());
    let rows = status(&state, "ops");
    for host in ops_a() {
        assert_eq!(rows[&host]["service"], "stopped", "{host}: the failover");
        assert_eq!(rows[&host]["version"], "3.2.0.post1", "{host}");
    }

    // The shared queue changes again (8d) on half a: two phases with a critical window.
    let eight = playbook_variant(
        dir.path(),
        EXPIRE,
        "sr3-queue-expire-8d",
        &[
            (
                "name = \"sr3-queue-expire\"",
                "name = \"sr3-queue-expire-8d\"",
            ),
            ("expire 7d", "expire 8d"),
            ("x-expires = \"7d\"", "x-expires = \"8d\""),
        ],
    );
    let mut lost = false;
    let run = run_watching(
        &upgrade(&state, &eight, "a").parallel(4).json(),
        LONG,
        |line| {
            if !lost && says(line, &["px1", "verify", "ok"]) {
                crate::support::host_lost("px2");
                lost = true;
            }
            Next::Go
        },
    );
    eprintln!("{}", run.stderr);
    assert!(lost, "px1 never verified: {run:#?}");
    assert!(run.code == 1 || run.code == 3, "{run:#?}");
    let report = json(&run);
    assert_eq!(report["outcome"]["failure"]["host"], "px2", "{report:#}");
    assert!(
        run.stderr.contains("the untouched half serves again"),
        "{}",
        run.stderr
    );
    let shared = crate::upgrade::ops_queues()
        .into_iter()
        .find(|q| q["name"] == "q_roll-lab.subscribe.cluster.ops")
        .expect("the shared queue");
    assert_eq!(
        shared["arguments"]["x-expires"], 604_800_000,
        "put back: {shared}"
    );
    let rows = status(&state, "ops");
    for host in ops_b() {
        assert_eq!(rows[&host]["service"], "running", "{host} serves again");
    }
    crate::support::host_repaired("px2");
    let resumed = resume(&state);
    eprintln!("{}", resumed.stderr);
    assert_eq!(resumed.code, 0, "{resumed:#?}");
    let outcome = json(&resumed)["outcome"].clone();
    nothing_lost(&outcome);
    let window = outcome["critical_window_seconds"].as_f64().expect("window");
    let floor = outcome["critical_window_floor_seconds"]
        .as_f64()
        .expect("floor");
    eprintln!("resumed critical window {window:.1}s, floor {floor:.1}s");
    assert!(window <= floor + 2.0, "{outcome:#}");
    let shared = crate::upgrade::ops_queues()
        .into_iter()
        .find(|q| q["name"] == "q_roll-lab.subscribe.cluster.ops")
        .expect("the shared queue");
    assert_eq!(shared["arguments"]["x-expires"], 691_200_000, "{shared}");
    let rows = status(&state, "ops");
    for host in ops_a() {
        assert_eq!(rows[&host]["service"], "running", "{host}");
        assert_eq!(rows[&host]["version"], "3.3.1", "{host}");
    }
    for host in ["px5", "px6", "px7", "px8", "pxatx1"] {
        assert_eq!(
            rows[host]["service"], "stopped",
            "{host}: stopped for the window"
        );
    }
    assert_eq!(crate::support::holding_leftovers(), Vec::<String>::new());

    // Rolling back the 8d run: the shared queue goes back to 7d (as before that run), and
    // half a to its first release, whose configs have no expire: the old release's declare
    // of the shared queue is refused, and the rollback's verification reads that in the log.
    let run = Roll::rollback("ops")
        .state(&state)
        .playbook(&eight)
        .yes()
        .json()
        .run();
    eprintln!("{}", run.stderr);
    assert_eq!(run.code, 1, "{run:#?}");
    let failure = json(&run)["outcome"]["failure"].clone();
    assert_eq!(failure["step"], "verify again", "{failure}");
    assert!(
        failure["detail"]
            .as_str()
            .is_some_and(|d| d.contains("PRECONDITION_FAILED")),
        "{failure}"
    );
    nothing_lost(&json(&run)["outcome"]);
    assert_eq!(crate::support::holding_leftovers(), Vec::<String>::new());
    audit_clean(traffic);
}

/// The lock's connection closed by `rabbitmqctl close_connection` while half a upgrades: the
/// run stops at its next step and says how to go on, a second upgrade (of half b) is refused
/// meanwhile, and `resume` finishes. Then half b, with px6 lost after the canary: the run
/// stops naming it, half a is not touched, and `resume` finishes once px6 is back.
#[test]
fn serial_the_lock_closed_mid_run_and_a_host_lost_in_a_one_phase_run() {
    require_lab();
    let _reset = ResetOnDrop;
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().display().to_string();
    let traffic = crate::support::Traffic::start(dir.path(), "lock", 100);
    let b_pids = pids_of(&ops_b());

    let mut second = None;
    let run = run_watching(&upgrade(&state, MINOR, "a").json(), LONG, |line| {
        if second.is_none() && says(line, &["px1", "verify", "ok"]) {
            crate::support::close_lock_connection("ops");
            second = Some(upgrade(&state, MINOR, "b").run());
        }
        Next::Go
    });
    eprintln!("{}", run.stderr);
    let second = second.expect("px1 was verified");
    assert!(second.code == 1 || second.code == 2, "{second:#?}");
    assert!(
        second.stderr.contains("locked by") || second.stderr.contains("roll resume"),
        "{}",
        second.stderr
    );
    let now = pids_of(&ops_b());
    assert_eq!(now, b_pids, "half b was touched");
    assert_eq!(run.code, 3, "{run:#?}");
    let report = json(&run);
    assert_eq!(report["outcome"]["failure"]["cause"], "lock", "{report:#}");
    assert!(
        report["outcome"]["failure"]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("roll resume --group ops")),
        "{report:#}"
    );
    let resumed = resume(&state);
    assert_eq!(resumed.code, 0, "{resumed:#?}");
    assert_hosts(&state, &ops_a(), "3.3.1", "running");

    // Half b, px6 lost once the canary is verified.
    let a_pids = pids_of(&ops_a());
    let mut lost = false;
    let run = run_watching(&upgrade(&state, MINOR, "b").json(), LONG, |line| {
        if !lost && says(line, &["px5", "verify", "ok"]) {
            crate::support::host_lost("px6");
            lost = true;
        }
        Next::Go
    });
    eprintln!("{}", run.stderr);
    assert_eq!(run.code, 3, "{run:#?}");
    let failure = json(&run)["outcome"]["failure"].clone();
    assert_eq!(failure["host"], "px6", "{failure}");
    assert_eq!(failure["cause"], "host", "{failure}");
    assert!(
        run.stdout.contains("\"step\"") && failure["step"].as_str().is_some_and(|s| !s.is_empty()),
        "{failure}"
    );
    let now = pids_of(&ops_a());
    assert_eq!(now, a_pids, "half a was touched");
    let refused = resume(&state);
    assert_eq!(refused.code, 1, "px6 is still lost: {refused:#?}");
    assert!(refused.stderr.contains("px6"), "{}", refused.stderr);
    crate::support::host_repaired("px6");
    let resumed = resume(&state);
    assert_eq!(resumed.code, 0, "{resumed:#?}");
    assert_hosts(&state, &ops_b(), "3.3.1", "running");
    audit_clean(traffic);
}

/// Unmounts a test's tmpfs when dropped.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// Deletes a test's broker user when dropped.
struct BrokerUser(&'static str);

impl Drop for BrokerUser {
    fn drop(&mut self) {
        let (management, runtime) = crate::support::lab_management("ops");
        let _ = runtime.block_on(management.delete(&format!("users/{}", self.0), "user"));
    }
}

/// The state directory on a small tmpfs that fills up in the middle of a run: the run stops,
/// its journal stays readable, and once there is room again `resume` refuses a playbook
/// edited since the approval (with what changed), then finishes with the playbook put back.
/// The broker password (quotes, a backslash, a percent sign, a journal key) is in no
/// journal, no output and no log line, in any of its forms, though a host prints it.
#[test]
fn serial_a_full_state_directory_stops_the_run_and_no_secret_is_written_anywhere() {
    require_lab();
    let _reset = ResetOnDrop;
    let dir = tempfile::tempdir().expect("temp dir");
    let state_path = dir.path().join("state");
    std::fs::create_dir(&state_path).expect("state dir");
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(&state_path)
        .status()
        .expect("mount");
    assert!(mounted.success(), "cannot mount a tmpfs");
    let _mounted = Mounted(state_path.clone());
    let state = state_path.display().to_string();

    // A broker user of the test's own, with a password full of what breaks JSON and URLs.
    const NASTY: &str = "p\"a\\ss%25w rd\"event";
    let (management, runtime) = crate::support::lab_management("ops");
    let _user = BrokerUser("roll-test-secret");
    runtime
        .block_on(async {
            management
                .put(
                    "users/roll-test-secret",
                    &serde_json::json!({"password": NASTY, "tags": "administrator"}),
                    "user",
                )
                .await?;
            management
                .put(
                    "permissions/ops/roll-test-secret",
                    &serde_json::json!({"configure": ".*", "write": ".*", "read": ".*"}),
                    "permissions",
                )
                .await
        })
        .expect("the test's broker user");
    let secret = dir.path().join("secret");
    std::fs::write(&secret, NASTY).expect("secret");
    let inventory = dir.path().join("inventory.toml");
    let broker = &lab().broker;
    let text = std::fs::read_to_string(crate::support::repo(crate::support::LAB_INVENTORY))
        .expect("inventory")
        .replace(
            &format!("user = \"{}\"", broker.user),
            "user = \"roll-test-secret\"",
        )
        .replace(
            &format!("password_file = \"{}\"", broker.password_file.display()),
            &format!("password_file = \"{}\"", secret.display()),
        );
    std::fs::write(&inventory, text).expect("inventory");
    // Every host of half a prints the password as it is, JSON-escaped and in a URL.
    let forms = [
        NASTY.to_string(),
        serde_json::to_string(NASTY).expect("json"),
        percent_encoding::utf8_percent_encode(NASTY, percent_encoding::NON_ALPHANUMERIC)
            .to_string(),
    ];
    for host in ops_a() {
        std::fs::write(
            lab().home(&host).join("roll-test-secret"),
            format!("{}\namqp://u:{}@h/\n{}\n", forms[0], forms[2], forms[1]),
        )
        .expect("the host's copy");
    }
    let printing = playbook_variant(
        dir.path(),
        MINOR,
        "sr3-minor-printing",
        &[(
            "upgrade = \"~/venv/bin/pip",
            "upgrade = \"cat ~/roll-test-secret; ~/venv/bin/pip",
        )],
    );
    let traffic = crate::support::Traffic::start(dir.path(), "full", 100);
    let upgrading = upgrade(&state, &printing, "a")
        .json()
        .inventory(&inventory)
        .env("RUST_LOG", "roll=debug");
    let filler = state_path.join("filler");
    let mut filled = false;
    let run = run_watching(&upgrading, LONG, |line| {
        if !filled && says(line, &["px1", "verify", "ok"]) {
            // Fill what is left of the tmpfs.
            let _ = std::process::Command::new("dd")
                .args(["if=/dev/zero", "bs=64k"])
                .arg(format!("of={}", filler.display()))
                .stderr(std::process::Stdio::null())
                .status();
            filled = true;
        }
        Next::Go
    });
    eprintln!("{}", run.stderr);
    assert!(filled, "{run:#?}");
    assert_ne!(run.code, 0, "{run:#?}");
    let failure = json(&run)["outcome"]["failure"].clone();
    assert_eq!(failure["cause"], "journal", "{failure}");
    let journal = json(&run)["outcome"]["journal"]
        .as_str()
        .expect("journal")
        .to_string();
    let entries = roll::journal::read(Path::new(&journal)).expect("the journal reads");
    assert!(entries.len() > 5, "{entries:#?}");
    let bytes = std::fs::read(&journal).expect("journal");
    assert_eq!(bytes.last(), Some(&b'\n'), "a partial line was left");
    std::fs::remove_file(&filler).expect("room again");

    // The playbook edited since the approval: refused, with what changed.
    let approved = std::fs::read_to_string(&printing).expect("playbook");
    std::fs::write(
        &printing,
        approved.replace("timeout = \"3m\"", "timeout = \"4m\""),
    )
    .expect("edit");
    let resuming = Roll::resume("ops").inventory(&inventory).state(&state);
    let refused = resuming.run();
    assert_eq!(refused.code, 2, "{refused:#?}");
    assert!(
        refused
            .stderr
            .contains("commands.timeout: \"3m\" -> \"4m\""),
        "{}",
        refused.stderr
    );
    std::fs::write(&printing, &approved).expect("put back");
    let resuming = resuming.json().env("RUST_LOG", "roll=debug");
    let resumed = run_watching(&resuming, LONG, |_| Next::Go);
    assert_eq!(resumed.code, 0, "{resumed:#?}");
    assert_hosts(&state, &ops_a(), "3.3.1", "running");

    // The password in none of its forms, anywhere roll wrote.
    let mut written = vec![
        ("upgrade", format!("{}{}", run.stdout, run.stderr)),
        (
            "refused resume",
            format!("{}{}", refused.stdout, refused.stderr),
        ),
        ("resume", format!("{}{}", resumed.stdout, resumed.stderr)),
    ];
    for path in roll::journal::runs(&state_path, "ops").expect("runs") {
        written.push(("journal", std::fs::read_to_string(&path).expect("journal")));
    }
    assert!(
        written
            .iter()
            .any(|(what, text)| *what == "journal" && text.contains("***")),
        "the hosts printed the password: the journal shows it masked"
    );
    for (what, text) in &written {
        for form in roll::redact::forms(NASTY) {
            assert!(
                !text.contains(&form),
                "{what} holds the password as {form:?}"
            );
        }
    }
    audit_clean(traffic);
}
