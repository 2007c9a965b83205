//! The lab itself, as `tests/lab/up` leaves it: sr3 3.2.0.post1 running on every lab host
//! but the passive one, and the broker holding the per-host queues, the shared ops queue and
//! the foreign queue. Read through roll's own SSH and management modules.

use std::time::Duration;

use roll::broker::management::Management;
use roll::inventory::Role;

use crate::support::{LAB_INVENTORY, MINOR, repo, require_lab};

#[test]
fn sr3_runs_on_every_lab_host_but_the_passive_one_and_the_queues_exist() {
    require_lab();
    let inventory = roll::inventory::load(&repo(LAB_INVENTORY)).expect("lab inventory");
    let playbook = roll::playbook::load(&repo(MINOR)).expect("sr3-minor playbook");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        for group in &inventory.groups {
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
