//! The plan of a rollback, computed from the journal of the run it undoes: service first
//! (stop what was upgraded, restore the queues, start the old release), repairs second
//! (reinstall the previous version, restore the files, start again).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use super::upgrade::UpgradePlan;
use crate::inventory::{Group, Half, Role};
use crate::journal::{Backup, Entry, Event};
use crate::step::{self, Step};

/// An active/passive pair whose roles the rollback swaps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Swap {
    pub pair: String,
    /// The active host that was upgraded: it becomes passive.
    pub from: String,
    /// The passive host on the old release: it becomes active.
    pub to: String,
}

/// What the repair phase does to an upgraded host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repair {
    pub host: String,
    /// The version to reinstall, when the upgrade got as far as installing.
    pub version: Option<String>,
    /// The command that reinstalls it, rendered for the host.
    pub reinstall: Option<String>,
    /// Files to put back as they were (written back, or removed when they did not exist).
    pub files: Vec<String>,
    pub reset_queue_state: bool,
    /// Start it again afterwards (not with --keep-upgraded-stopped, not a passive host).
    pub start: bool,
    /// What that makes of it, in order.
    pub steps: Vec<Step>,
}

impl Repair {
    /// The steps of a repair, from what it has to do.
    fn with_steps(mut self) -> Repair {
        self.steps.clear();
        if self.version.is_some() {
            self.steps.push(Step::Reinstall);
        }
        if !self.files.is_empty() {
            self.steps.push(Step::RestoreFiles);
        }
        if self.reset_queue_state {
            self.steps.push(Step::RollbackResetQueueState);
        }
        if self.start {
            self.steps.extend([Step::StartAgain, Step::VerifyAgain]);
        }
        self
    }
}

/// The whole rollback.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RollbackPlan {
    pub run_id: String,
    pub group: String,
    /// The run being undone.
    pub rolls_back: String,
    pub half: Half,
    pub package: String,
    /// Hosts the run touched: stopped first.
    pub stop: Vec<String>,
    /// Queues the run recreated: back to their backed-up definitions and bindings.
    pub queues: Vec<String>,
    /// Queues the run's failover already put back (their held messages are still moved
    /// back, if any are left): never recreated again.
    #[serde(default)]
    pub restored: Vec<String>,
    /// Hosts on the old release started to serve again (if not running).
    pub start_old: Vec<String>,
    pub swaps: Vec<Swap>,
    pub repair: Vec<Repair>,
    pub keep_upgraded_stopped: bool,
    /// Restored queues keep their messages (false with `--allow-message-loss`).
    #[serde(default = "yes")]
    pub preserve_messages: bool,
}

fn yes() -> bool {
    true
}

/// Why no rollback can be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RollbackPlanError {
    /// The journal holds nothing this can undo.
    #[error("{0}")]
    Nothing(String),
    /// The approved release cannot be rendered for a host.
    #[error(transparent)]
    Render(#[from] super::rendered::RenderError),
}

/// How the operator asked the rollback to go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// The release has a queue-state reset command.
    pub reset_available: bool,
    /// Leave the upgraded hosts stopped (`--keep-upgraded-stopped`).
    pub keep_upgraded_stopped: bool,
    /// Keep the messages of restored queues (false: `--allow-message-loss`).
    pub preserve_messages: bool,
}

/// Plans the rollback of the run recorded in `entries`.
pub fn plan(
    run_id: &str,
    group: &Group,
    entries: &[Entry],
    options: Options,
) -> Result<RollbackPlan, RollbackPlanError> {
    let Options {
        reset_available,
        keep_upgraded_stopped,
        preserve_messages,
    } = options;
    let upgrade: UpgradePlan = match super::journaled::upgrade(entries) {
        Ok(Some(plan)) => plan,
        Ok(None) => {
            return Err(RollbackPlanError::Nothing(
                "the run is not an upgrade".into(),
            ));
        }
        Err(err) => return Err(RollbackPlanError::Nothing(err.to_string())),
    };
    let mut started_steps: BTreeMap<&str, BTreeSet<&Step>> = BTreeMap::new();
    let mut versions: BTreeMap<&str, &str> = BTreeMap::new();
    let mut files: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut queues = vec![];
    // The last recreation begun and the last restoration done of each queue (by position).
    let mut recreating: BTreeMap<&str, usize> = BTreeMap::new();
    let mut put_back: BTreeMap<&str, usize> = BTreeMap::new();
    for (at, entry) in entries.iter().enumerate() {
        match &entry.event {
            Event::StepStarted { host, step } => {
                started_steps.entry(host).or_default().insert(step);
                if let Step::Recreate(queue) = step {
                    recreating.insert(queue, at);
                }
            }
            Event::StepFinished {
                step: Step::Restore(queue),
                ok: true,
                ..
            } => {
                put_back.insert(queue, at);
            }
            Event::Backup { host, item } => match item {
                Backup::Version { version } => {
                    versions.insert(host, version);
                }
                Backup::File { path, .. } => files.entry(host).or_default().push(path.clone()),
                Backup::Queue { name, .. } => {
                    if !queues.contains(name) {
                        queues.push(name.clone());
                    }
                }
            },
            _ => {}
        }
    }
    let touched: Vec<&str> = upgrade
        .hosts
        .iter()
        .map(|h| h.host.as_str())
        .filter(|h| started_steps.contains_key(h))
        .collect();
    let role = |name: &str| {
        group
            .hosts
            .iter()
            .find(|h| h.name == name)
            .and_then(|h| h.role)
    };
    let pair = |name: &str| {
        group
            .hosts
            .iter()
            .find(|h| h.name == name)
            .and_then(|h| h.pair.clone())
    };
    let mut swaps = vec![];
    for host in &touched {
        if role(host) != Some(Role::Active) {
            continue;
        }
        let Some(pair_name) = pair(host) else {
            continue;
        };
        let partner = group.hosts.iter().find(|h| {
            h.pair.as_deref() == Some(pair_name.as_str()) && h.role == Some(Role::Passive)
        });
        if let Some(partner) = partner
            && !touched.contains(&partner.name.as_str())
        {
            swaps.push(Swap {
                pair: pair_name,
                from: host.to_string(),
                to: partner.name.clone(),
            });
        }
    }
    let mut start_old: Vec<String> = group
        .half(upgrade.half.other())
        .filter(|h| h.role != Some(Role::Passive))
        .map(|h| h.name.clone())
        .collect();
    start_old.extend(swaps.iter().map(|s| s.to.clone()));
    let swapped_out: BTreeSet<&str> = swaps.iter().map(|s| s.from.as_str()).collect();
    let repair: Vec<Repair> = touched
        .iter()
        .map(|host| {
            let steps = started_steps.get(host).cloned().unwrap_or_default();
            Repair {
                host: host.to_string(),
                version: if steps.contains(&Step::Upgrade) {
                    versions.get(host).map(|v| v.to_string())
                } else {
                    None
                },
                files: if steps.contains(&Step::Deploy) || steps.contains(&Step::StageFiles) {
                    files.get(host).cloned().unwrap_or_default()
                } else {
                    vec![]
                },
                reset_queue_state: reset_available && !queues.is_empty(),
                start: !keep_upgraded_stopped
                    && role(host) != Some(Role::Passive)
                    && !swapped_out.contains(host),
                reinstall: None,
                steps: vec![],
            }
        })
        .collect();
    let mut repairs = vec![];
    for mut r in repair {
        if let Some(version) = &r.version {
            let command = super::rendered::reinstall(&upgrade.release, group, &r.host, version)?;
            r.reinstall = Some(command);
        }
        repairs.push(r.with_steps());
    }
    let (restored, queues): (Vec<String>, Vec<String>) = queues.into_iter().partition(|q| {
        put_back
            .get(q.as_str())
            .is_some_and(|done| recreating.get(q.as_str()).is_none_or(|begun| done > begun))
    });
    Ok(RollbackPlan {
        run_id: run_id.to_string(),
        group: group.name.clone(),
        rolls_back: upgrade.run_id.clone(),
        half: upgrade.half,
        package: upgrade.package.clone(),
        stop: touched.iter().map(|h| h.to_string()).collect(),
        queues,
        restored,
        start_old,
        swaps,
        repair: repairs,
        keep_upgraded_stopped,
        preserve_messages,
    })
}

impl fmt::Display for RollbackPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Rollback of run {} (group {} half {}), run {}",
            self.rolls_back, self.group, self.half, self.run_id
        )?;
        writeln!(f, "  1. stop the upgraded hosts: {}", list(&self.stop))?;
        writeln!(
            f,
            "  2. restore {} queues to their backed-up definitions and bindings{}: {}",
            self.queues.len(),
            if self.preserve_messages {
                ", with their messages (held, then moved back once the old release runs)"
            } else {
                ", DELETING their messages (--allow-message-loss)"
            },
            list(&self.queues)
        )?;
        if !self.restored.is_empty() {
            writeln!(
                f,
                "     already put back by the failover (held messages still moved back): {}",
                list(&self.restored)
            )?;
        }
        writeln!(
            f,
            "  3. start the old release (where not running): {}",
            list(&self.start_old)
        )?;
        for s in &self.swaps {
            writeln!(
                f,
                "     pair {}: {} (on the old release) becomes active, {} passive",
                s.pair, s.to, s.from
            )?;
        }
        writeln!(f, "  4. report the failover time")?;
        write!(f, "  5. repair the upgraded hosts")?;
        if self.keep_upgraded_stopped {
            write!(f, ", left stopped (--keep-upgraded-stopped)")?;
        }
        if self.repair.is_empty() {
            return write!(f, ": none");
        }
        write!(f, ", in order:")?;
        for r in &self.repair {
            let version = r.version.as_ref().map(|v| format!(" (to {v})"));
            write!(
                f,
                "\n     {}{}: {}",
                r.host,
                version.unwrap_or_default(),
                step::list(&r.steps)
            )?;
        }
        Ok(())
    }
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::json;

    use super::*;
    use crate::plan::upgrade::HostPlan;

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
            ready: vec![],
            stopped: vec![],
            started: vec![],
        }
    }

    fn journal() -> Vec<Entry> {
        let (_, release) = crate::plan::fixtures::fixture();
        let plan = UpgradePlan {
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
            broker: Default::default(),
            critical_steps: vec![],
            queue_summary: String::new(),
            rendered: crate::plan::rendered::render(&release, &ops()).unwrap(),
            release,
            vars: Default::default(),
        };
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

    fn options(reset_available: bool, keep_upgraded_stopped: bool) -> Options {
        Options {
            reset_available,
            keep_upgraded_stopped,
            preserve_messages: true,
        }
    }

    fn ops() -> Group {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        crate::inventory::load(&root.join("inventory/lab.toml"))
            .unwrap()
            .group("ops")
            .unwrap()
            .clone()
    }

    #[test]
    fn service_first_then_repairs_with_the_pair_swapped() {
        let p = plan("rb1", &ops(), &journal(), options(true, false)).unwrap();
        assert_eq!(p.rolls_back, "up1");
        assert_eq!(p.stop, ["px5", "px6", "pxatx1"]);
        assert_eq!(p.queues, ["q.cluster"]);
        assert_eq!(p.start_old, ["px1", "px2", "px3", "px4", "pxatx2"]);
        assert_eq!(
            p.swaps,
            [Swap {
                pair: "pxatx".into(),
                from: "pxatx1".into(),
                to: "pxatx2".into()
            }]
        );
        let px5 = &p.repair[0];
        assert_eq!(px5.version.as_deref(), Some("3.2.0.post1"));
        assert_eq!(px5.files, [".config/x.conf"]);
        assert!(px5.start && px5.reset_queue_state);
        let px6 = p.repair.iter().find(|r| r.host == "px6").unwrap();
        assert_eq!(px6.version, None, "px6 was never upgraded");
        assert!(px6.files.is_empty());
        let pxatx1 = p.repair.iter().find(|r| r.host == "pxatx1").unwrap();
        assert!(!pxatx1.start, "the swapped-out active host stays stopped");
        let text = p.to_string();
        assert!(
            text.contains("pair pxatx: pxatx2 (on the old release) becomes active"),
            "{text}"
        );
    }

    #[test]
    fn keep_upgraded_stopped_starts_none_of_them() {
        let p = plan("rb1", &ops(), &journal(), options(false, true)).unwrap();
        assert!(p.repair.iter().all(|r| !r.start && !r.reset_queue_state));
        assert!(p.to_string().contains("--keep-upgraded-stopped"));
    }

    #[test]
    fn a_journal_without_a_plan_has_nothing_to_roll_back() {
        assert!(plan("rb1", &ops(), &[], options(true, false)).is_err());
    }
}
