//! Plans: pure computations from what was read (broker, hosts, inventory, playbook) to what
//! would change. Nothing here talks to the outside world, so all of it is unit-tested.

pub mod contract;
pub mod journaled;
pub mod ownership;
pub mod queue_diff;
pub mod rendered;
pub mod rollback;
pub mod rollout;
pub mod upgrade;

/// The lab's inventory and playbooks, and queue diffs of its ops group, for unit tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use std::path::Path;
    use std::time::Duration;

    use serde_json::json;

    use crate::broker::equivalence::QueueSettings;
    use crate::inventory::{Group, Half};
    use crate::journal::{Backup, Entry, Event};
    use crate::plan::ownership::Claims;
    use crate::plan::queue_diff::{LiveQueue, QueueDiff, diff};
    use crate::plan::rollback::{Options, RollbackPlan};
    use crate::plan::upgrade::{self, HostPlan, UpgradePlan};

    /// The lab's inventory and its queue-expire release.
    pub fn fixture() -> (crate::inventory::Inventory, crate::playbook::Playbook) {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        (
            crate::inventory::load(&root.join("inventory/lab.toml")).unwrap(),
            crate::playbook::load(&root.join("playbooks/sr3-queue-expire.toml")).unwrap(),
        )
    }

    fn queue(name: &str, messages: u64) -> LiveQueue {
        LiveQueue {
            name: name.into(),
            settings: QueueSettings::new(true, false, Default::default()),
            messages,
            transient: Some(0),
            place: Default::default(),
        }
    }

    /// The ops group's queues: one per host (`q.pump.<host>`, one message each), the shared
    /// `q.cluster` (7 messages) and a foreign one, diffed against `target`.
    pub fn ops_diff(target: &QueueSettings) -> QueueDiff {
        let hosts = [
            ("px1", Half::A),
            ("px2", Half::A),
            ("px3", Half::A),
            ("px4", Half::A),
            ("px5", Half::B),
            ("px6", Half::B),
            ("px7", Half::B),
            ("px8", Half::B),
            ("pxatx1", Half::B),
        ];
        let mut claims = Claims::default();
        let mut queues = vec![queue("q.cluster", 7), queue("q.foreign", 5)];
        for (host, half) in hosts {
            claims.discovered_by(host, half, &format!("q.pump.{host}\nq.cluster\n"));
            queues.push(queue(&format!("q.pump.{host}"), 1));
        }
        diff(
            "ops",
            Some(Half::B),
            queues,
            &claims,
            target,
            Duration::from_secs(900),
        )
    }

    /// The queue-expire release on ops half b, two at a time: two phases, a critical window.
    pub fn expire_plan_b() -> UpgradePlan {
        let (inventory, playbook) = fixture();
        let ops = inventory.group("ops").unwrap();
        let options = upgrade::Options::new(2, true);
        let d = ops_diff(&playbook.queues.target);
        upgrade::plan(
            "r1",
            ops,
            Half::B,
            &d,
            &playbook,
            &options,
            &Default::default(),
        )
        .unwrap()
    }

    /// A release that changes no queue, on ops half a, half b already on it.
    pub fn minor_plan_a() -> UpgradePlan {
        let (inventory, playbook) = fixture();
        let ops = inventory.group("ops").unwrap();
        let d = ops_diff(&QueueSettings::new(true, false, Default::default()));
        let versions = ["px5", "px6", "px7", "px8", "pxatx1"]
            .iter()
            .map(|h| (h.to_string(), "3.3.1".to_string()))
            .collect();
        let options = upgrade::Options::new(1, true);
        upgrade::plan("r2", ops, Half::A, &d, &playbook, &options, &versions).unwrap()
    }

    /// The rollback of [`journal`].
    pub fn rollback_plan(reset_available: bool, keep_upgraded_stopped: bool) -> RollbackPlan {
        let options = options(reset_available, keep_upgraded_stopped);
        crate::plan::rollback::plan("rb1", &ops(), &upgrade_plan(), &journal(), options).unwrap()
    }

    fn entry(seq: u64, event: Event) -> Entry {
        Entry {
            seq,
            at_ms: seq,
            at: String::new(),
            event,
        }
    }

    fn host(name: &str, start: bool) -> HostPlan {
        HostPlan {
            host: name.into(),
            role: None,
            start,
            queues: vec![],
            verify_queues: vec![],
            reset_queue_state: true,
            artifacts: vec![],
            ready: vec![],
            stopped: vec![],
            started: vec![],
        }
    }

    /// The plan of run up1: ops half b, every host started.
    pub fn upgrade_plan() -> UpgradePlan {
        let (_, release) = crate::plan::fixtures::fixture();
        UpgradePlan {
            run_id: "up1".into(),
            group: "ops".into(),
            half: Half::B,
            playbook: "p".into(),
            playbook_path: "p.toml".into(),
            package: "metpx-sr3".into(),
            version: "3.3.1".into(),
            parallel: 1,
            hosts: ["px5", "px6", "px7", "px8", "pxatx1"]
                .iter()
                .map(|h| host(h, true))
                .collect(),
            group_queues: vec![],
            two_phase: true,
            critical_window: true,
            critical_stops: vec!["px1".into()],
            failover: vec![],
            messages_at_risk: 0,
            preserve_messages: true,
            hold_while_running_at: upgrade::HOLD_WHILE_RUNNING_AT,
            holding_type: None,
            broker: Default::default(),
            critical_steps: vec![],
            queue_summary: String::new(),
            rendered: crate::plan::rendered::render(&release, &ops()).unwrap(),
            release,
            vars: Default::default(),
            waves: vec![],
            gates: Default::default(),
            policy: Default::default(),
        }
    }

    /// The journal of run up1 on ops half b: px5 and pxatx1 went through everything, px6
    /// was stopped and backed up only; q.cluster was backed up.
    pub fn journal() -> Vec<Entry> {
        let plan = upgrade_plan();
        let mut e = vec![entry(
            1,
            Event::Started {
                run_id: "up1".into(),
                kind: crate::journal::RunKind::Upgrade,
                group: "ops".into(),
                half: Some(Half::B),
                playbook: "p".into(),
                playbook_path: "p.toml".into(),
                package: "metpx-sr3".into(),
                version: "3.3.1".into(),
                operator: "me".into(),
                controller: "c".into(),
                pid: 1,
                skip_promotion_check: false,
                plan: json!(plan),
            },
        )];
        let mut seq = 2;
        let mut push = |event| {
            e.push(entry(seq, event));
            seq += 1;
        };
        // px5 and pxatx1 went through everything, px6 was stopped and backed up only.
        for h in ["px5", "pxatx1", "px6"] {
            for step in ["stop", "backup"] {
                push(Event::StepStarted {
                    host: h.into(),
                    step: step.into(),
                });
            }
            push(Event::Backup {
                host: h.into(),
                item: Backup::Version {
                    version: "3.2.0.post1".into(),
                },
            });
            push(Event::Backup {
                host: h.into(),
                item: Backup::File {
                    path: ".config/x.conf".into(),
                    content: Some("old".into()),
                    mode: Some(0o644),
                    base64: false,
                },
            });
            if h != "px6" {
                for step in ["upgrade", "deploy"] {
                    push(Event::StepStarted {
                        host: h.into(),
                        step: step.into(),
                    });
                }
            }
        }
        push(Event::Backup {
            host: "broker".into(),
            item: Backup::Queue {
                name: "q.cluster".into(),
                durable: true,
                auto_delete: false,
                arguments: Default::default(),
                bindings: vec![],
                messages: 0,
            },
        });
        e
    }

    pub fn options(reset_available: bool, keep_upgraded_stopped: bool) -> Options {
        Options {
            reset_available,
            keep_upgraded_stopped,
            preserve_messages: true,
        }
    }

    pub fn ops() -> Group {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        crate::inventory::load(&root.join("inventory/lab.toml"))
            .unwrap()
            .group("ops")
            .unwrap()
            .clone()
    }
}
