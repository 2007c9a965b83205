//! The lab itself, as `tests/lab/up` leaves it: sr3 3.2.0.post1 running on every lab host
//! but the passive one, and the broker holding the per-host queues, the shared ops queue and
//! the foreign queue. Read through roll's own SSH and management modules.

use std::time::Duration;

use roll::broker::management::Management;
use roll::inventory::Role;

use crate::support::{LAB_INVENTORY, MINOR, repo, require_lab, scratch_vhost};

#[test]
fn sr3_runs_on_every_lab_host_but_the_passive_one_and_the_queues_exist() {
    require_lab();
    let inventory = roll::inventory::load(&repo(LAB_INVENTORY)).expect("lab inventory");
    let playbook = roll::playbook::load(&repo(MINOR)).expect("sr3-minor playbook");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        // every sr3 group (celery's hosts run Celery: tests/integration/cluster.rs)
        for group in inventory.groups.iter().filter(|g| g.name != "celery") {
            let mut expected_queues = vec![];
            for host in &group.hosts {
                let vars = playbook.vars(host, &group.broker);
                let status = playbook
                    .command(&playbook.commands.status, &vars)
                    .expect("status");
                let version = playbook
                    .command(&playbook.commands.installed_version, &vars)
                    .expect("version");
                let connection = roll::remote::connect(host).await.expect("ssh");
                let state = connection
                    .run("status", &status, Duration::from_secs(30))
                    .await
                    .expect("status runs");
                let installed = connection
                    .run("version", &version, Duration::from_secs(30))
                    .await
                    .expect("version runs");
                connection.close().await;
                assert_eq!(installed.stdout.trim(), "3.2.0.post1", "{}", host.name);
                let passive = host.role == Some(Role::Passive);
                let want = if passive { "stopped" } else { "running" };
                assert_eq!(state.stdout.trim(), want, "{}: {state:?}", host.name);
                if !passive {
                    expected_queues.push(format!("q_roll-lab.subscribe.pump.rl-{}_", host.name));
                }
            }
            if group.name == "quorum" {
                expected_queues.push("q_roll-lab.subscribe.cluster.quorum".into());
            }
            if group.name == "ops" {
                expected_queues.push("q_roll-lab.subscribe.cluster.ops".into());
                expected_queues.push("q_anonymous.subscribe.ddi-cmc.ddi1_cmc_20260101".into());
            }
            let password = group.broker.password.read().expect("password");
            let management = Management::new(&group.broker, password).expect("client");
            let names: Vec<String> = management
                .list_queues()
                .await
                .expect("queues")
                .into_iter()
                .map(|q| q.name)
                .collect();
            for prefix in &expected_queues {
                assert!(
                    names.iter().any(|n| n.starts_with(prefix.as_str())),
                    "{}: no queue {prefix}* in {names:?}",
                    group.name
                );
            }
            assert!(
                !names.iter().any(|n| n.contains("rl-pxatx2")),
                "the passive host has a queue: {names:?}"
            );
        }
    });
}

/// A test or a benchmark killed before its guard ran leaves its scratch vhost on the broker,
/// whose queues a restarting node must recover before it answers (a benchmark's 99,683 queues
/// made the CI's node miss up's start deadline). `tests/lab/up` deletes such vhosts.
#[test]
fn serial_lab_up_deletes_a_scratch_vhost_a_killed_run_left() {
    let (guard, config, password) = scratch_vhost(&format!(
        "roll-test-left-by-a-killed-run-{}",
        std::process::id()
    ));
    let path = format!("vhosts/{}", roll::broker::management::segment(&guard.name));
    let management = Management::new(&config, password).expect("client");
    let exists = |management: &Management| match guard
        .runtime
        .block_on(management.get::<serde_json::Value>(&path, &[], "vhost"))
    {
        Ok(_) => true,
        Err(roll::broker::BrokerError::Http { status: 404, .. }) => false,
        Err(err) => panic!("reading vhost {}: {err}", guard.name),
    };
    assert!(exists(&management), "the scratch vhost was not made");
    let up = std::process::Command::new(repo("tests/lab/up"))
        .output()
        .expect("tests/lab/up runs");
    let said = String::from_utf8_lossy(&up.stdout);
    assert!(
        up.status.success(),
        "tests/lab/up failed: {said}{}",
        String::from_utf8_lossy(&up.stderr)
    );
    assert!(
        !exists(&management),
        "tests/lab/up left the scratch vhost {}: {said}",
        guard.name
    );
    assert!(
        said.contains(&format!("deleting scratch vhost {}", guard.name)),
        "up did not say it deleted {}: {said}",
        guard.name
    );
}

/// The audit's frame reader tells a delivery flagged redelivered (a subscriber had fetched the
/// message and not acknowledged it: the audit's own stop of the subscribers gives such a batch
/// back to the queue) from a copy that was in the queue twice (tests/lab/audit_test.py). Before,
/// such a batch counted as duplicates.
#[test]
fn the_audit_tells_a_message_given_back_unacknowledged_from_a_duplicate() {
    require_lab();
    let python = std::path::Path::new("/var/lib/roll-lab/tools-venv/bin/python3");
    let out = std::process::Command::new(python)
        .arg(repo("tests/lab/audit_test.py"))
        .output()
        .expect("the tools venv's python runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("2 flagged redelivered"), "{text}");
}
