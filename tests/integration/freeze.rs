//! `roll freeze` and `roll unfreeze` against the lab: only ever on group dev (other tests
//! upgrade stage and ops meanwhile).

use std::time::{Duration, Instant};

use crate::support::{MINOR, Roll, json, require_lab, sr3_pids, status};

/// The group these tests freeze: dev only.
const GROUP: &str = "dev";

/// `roll freeze --group dev --reason <reason> [--until <until>] --yes`, as operator `user`
/// (the freeze records `$USER@<controller>`).
fn freeze(user: &str, reason: &str, until: Option<&str>) -> Roll {
    let roll = Roll::new("freeze")
        .group(GROUP)
        .yes()
        .args(["--reason", reason])
        .env("USER", user);
    match until {
        Some(until) => roll.args(["--until", until]),
        None => roll,
    }
}

/// `roll unfreeze --group dev --yes`.
fn unfreeze() -> Roll {
    Roll::new("unfreeze").group(GROUP).yes()
}

/// Unfreezes dev when dropped, so that the test never leaves it frozen, pass or fail.
struct UnfreezeOnDrop;

impl Drop for UnfreezeOnDrop {
    fn drop(&mut self) {
        let run = unfreeze().run();
        if run.code != 0 {
            eprintln!("unfreeze of {GROUP} after the test failed: {run:#?}");
        }
    }
}

/// The version of each dev host, by `roll status`.
fn versions(state: &str) -> Vec<(String, String)> {
    status(state, GROUP)
        .into_iter()
        .map(|(host, row)| (host, row["version"].as_str().unwrap_or("?").to_string()))
        .collect()
}

/// The sr3 pids of every dev host.
fn pids() -> Vec<Vec<u32>> {
    crate::support::lab()
        .hosts(GROUP)
        .iter()
        .map(|h| sr3_pids(h))
        .collect()
}

#[test]
fn serial_a_freeze_refuses_an_upgrade_from_another_controller_and_unfreeze_lifts_it() {
    require_lab();
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().display().to_string();
    // A freeze a failed earlier run left would refuse the freeze below.
    let clean = unfreeze().run();
    assert_eq!(clean.code, 0, "{clean:#?}");
    let _guard = UnfreezeOnDrop;
    let before = versions(&state);
    let pids_before = pids();
    let reason = r#"release "3.3" of the 'big' customer, see INC 4711"#;

    let dry = freeze("ana", reason, Some("2h")).dry_run().run();
    assert_eq!(dry.code, 0, "{dry:#?}");
    assert!(
        dry.stdout.contains("Dry run: nothing was changed."),
        "{dry:#?}"
    );
    let not_yet = status_json(&state);
    assert!(
        not_yet[0]["freeze"].is_null(),
        "a dry run froze: {not_yet:#}"
    );

    let set = freeze("ana", reason, Some("2h")).json().run();
    assert_eq!(set.code, 0, "{set:#?}");
    let set = json(&set);
    assert_eq!(set["done"], true, "{set:#}");
    assert_eq!(set["freeze"]["reason"], reason, "{set:#}");
    let by = set["freeze"]["by"].as_str().expect("by").to_string();
    assert!(by.starts_with("ana@"), "{set:#}");
    let until = set["freeze"]["until"].as_str().expect("until").to_string();
    let since = set["freeze"]["since"].as_str().expect("since").to_string();

    // A second freeze is refused, naming the first.
    let again = freeze("bob", "another reason", None).run();
    assert_eq!(again.code, 2, "{again:#?}");
    assert!(again.stderr.contains("frozen already"), "{again:#?}");
    assert!(again.stderr.contains(&by), "{again:#?}");

    // An upgrade by another operator (another process) is refused before any change.
    let upgrade = Roll::upgrade(GROUP, "a")
        .state(&state)
        .playbook(MINOR)
        .yes()
        .env("USER", "bob")
        .run();
    assert_eq!(upgrade.code, 2, "{upgrade:#?}");
    for part in [
        "group dev is frozen",
        &format!("by {by}"),
        &format!("since {since}"),
        &format!("until {until}"),
        r#"reason "release \"3.3\" of the 'big' customer, see INC 4711""#,
        "nothing was changed",
    ] {
        assert!(upgrade.stderr.contains(part), "{part}: {upgrade:#?}");
    }
    assert!(
        !upgrade.stdout.contains("Upgrade of group"),
        "a plan: {upgrade:#?}"
    );
    assert_eq!(
        versions(&state),
        before,
        "the refused upgrade changed a version"
    );
    assert_eq!(pids(), pids_before, "the refused upgrade restarted sr3");
    let runs = std::fs::read_dir(dir.path())
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(runs, 0, "the refused upgrade wrote to the state directory");

    // status and check show it, as JSON and in their tables.
    let rows = status_json(&state);
    for row in rows.as_array().expect("rows") {
        let freeze = &row["freeze"];
        assert_eq!(freeze["state"], "frozen", "{row:#}");
        assert_eq!(freeze["by"], by.as_str(), "{row:#}");
        assert_eq!(freeze["reason"], reason, "{row:#}");
        assert_eq!(freeze["until"], until.as_str(), "{row:#}");
    }
    let table = Roll::status(GROUP).state(&state).playbook(MINOR).run();
    assert_eq!(table.code, 0, "{table:#?}");
    assert!(table.stdout.contains("group dev is FROZEN"), "{table:#?}");
    let check = Roll::check().group(GROUP).json().run();
    assert_eq!(check.code, 0, "{check:#?}");
    let check_rows = json(&check);
    let broker = check_rows
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["kind"] == "broker")
        .expect("the broker's row");
    assert_eq!(broker["freeze"]["state"], "frozen", "{check_rows:#}");
    assert_eq!(broker["freeze"]["by"], by.as_str(), "{check_rows:#}");
    let check_table = Roll::check().group(GROUP).run();
    assert!(
        check_table.stdout.contains("group dev is FROZEN"),
        "{check_table:#?}"
    );

    // A rollback is not refused by the freeze: dev has no run to roll back, and says so.
    let rollback = Roll::rollback(GROUP).state(&state).yes().run();
    assert_eq!(rollback.code, 2, "{rollback:#?}");
    assert!(
        rollback.stderr.contains("nothing to roll back"),
        "{rollback:#?}"
    );
    assert!(
        rollback.stderr.contains("the rollback goes on"),
        "{rollback:#?}"
    );
    assert!(
        !rollback.stderr.contains("no upgrade until"),
        "{rollback:#?}"
    );

    // Unfreeze: its dry run changes nothing, then it lifts the freeze.
    let dry = Roll::new("unfreeze").group(GROUP).dry_run().run();
    assert_eq!(dry.code, 0, "{dry:#?}");
    assert!(
        dry.stdout.contains("delete the queue roll.freeze.dev"),
        "{dry:#?}"
    );
    assert_eq!(status_json(&state)[0]["freeze"]["state"], "frozen");
    let lifted = unfreeze().run();
    assert_eq!(lifted.code, 0, "{lifted:#?}");
    assert!(
        lifted.stdout.contains("group dev is unfrozen"),
        "{lifted:#?}"
    );
    let twice = unfreeze().run();
    assert_eq!(twice.code, 0, "{twice:#?}");
    assert!(twice.stdout.contains("is not frozen"), "{twice:#?}");
    assert!(status_json(&state)[0]["freeze"].is_null());
    let dry_upgrade = Roll::upgrade(GROUP, "a")
        .state(&state)
        .playbook(MINOR)
        .dry_run()
        .run();
    assert_eq!(dry_upgrade.code, 0, "{dry_upgrade:#?}");
    assert!(dry_upgrade.stdout.contains("Dry run: nothing was changed."));
    assert!(!dry_upgrade.stderr.contains("frozen"), "{dry_upgrade:#?}");

    // A freeze whose end has passed refuses nothing, and status shows it expired.
    let short = freeze("ana", "a short one", Some("2s")).run();
    assert_eq!(short.code, 0, "{short:#?}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows = status_json(&state);
        if rows[0]["freeze"]["state"] == "expired" {
            break;
        }
        assert_eq!(rows[0]["freeze"]["state"], "frozen", "{rows:#}");
        assert!(
            Instant::now() < deadline,
            "the freeze never expired: {rows:#}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let after = Roll::upgrade(GROUP, "a")
        .state(&state)
        .playbook(MINOR)
        .dry_run()
        .run();
    assert_eq!(after.code, 0, "{after:#?}");
    assert!(after.stderr.contains("an expired freeze"), "{after:#?}");
    assert_eq!(versions(&state), before);
}

/// `roll status --group dev --output json`, with the minor release's commands.
fn status_json(state: &str) -> serde_json::Value {
    let run = Roll::status(GROUP)
        .state(state)
        .playbook(MINOR)
        .json()
        .run();
    assert_eq!(run.code, 0, "{run:#?}");
    json(&run)
}
