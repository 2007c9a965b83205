//! Plans: pure computations from what was read (broker, hosts, inventory, playbook) to what
//! would change. Nothing here talks to the outside world, so all of it is unit-tested.

pub mod contract;
pub mod journaled;
pub mod ownership;
pub mod queue_diff;
pub mod rendered;
pub mod rollback;
pub mod upgrade;

/// The lab's inventory and playbooks, and queue diffs of its ops group, for unit tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use std::path::Path;
    use std::time::Duration;

    use crate::broker::equivalence::QueueSettings;
    use crate::inventory::Half;
    use crate::plan::ownership::Claims;
    use crate::plan::queue_diff::{LiveQueue, QueueDiff, diff};

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
            exclusive: false,
            messages,
            transient: 0,
            consumers: 0,
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
}
