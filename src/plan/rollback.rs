//! The plan of a rollback, computed from the journal of the run it undoes: service first
//! (stop what was upgraded, restore the queues, start the old release), repairs second
//! (reinstall the previous version, restore the files, start again).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::rendered::{RenderError, Rendered};
use super::upgrade::UpgradePlan;
use crate::inventory::{Group, Half, Role};
use crate::journal::{Backup, Entry, Event};
use crate::step::Step;

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
    /// A restored queue holding at least this many messages when its hold step runs has them
    /// held while its consumers still run (see the upgrade plan's).
    #[serde(default = "super::upgrade::hold_while_running_at")]
    pub hold_while_running_at: u64,
    /// The type of the holding queues: the upgrade's (its holding queues are used).
    #[serde(default)]
    pub holding_type: Option<crate::broker::equivalence::QueueType>,
    /// Hosts repaired at the same time (the upgrade's `--parallel`).
    pub parallel: usize,
    /// The hosts that consume each queue restored: its owner, or for a queue of the half or
    /// of the group, every host of the run that started and the other half's that stopped
    /// with it. None of them may run while it is restored.
    pub consumers: BTreeMap<String, Vec<String>>,
    /// The host that owns each of those queues (the others are the half's or the group's):
    /// its time without a consumer is that host's.
    pub owners: BTreeMap<String, String>,
    /// The release the upgrade was approved with, rendered for every host: the commands the
    /// rollback runs (stop, start, status, the reset) are its.
    pub rendered: Rendered,
}

fn yes() -> bool {
    true
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

/// What the journal of the run to undo says it began, saved and put back.
#[derive(Default)]
struct History<'a> {
    /// The steps each host began.
    started: BTreeMap<&'a str, BTreeSet<&'a Step>>,
    /// The version each host had before.
    versions: BTreeMap<&'a str, &'a str>,
    /// The files each host's backup holds.
    files: BTreeMap<&'a str, Vec<String>>,
    /// Every queue backed up, in order.
    queues: Vec<String>,
    /// The last recreation begun of each queue (by position).
    recreating: BTreeMap<&'a str, usize>,
    /// The last restoration done of each queue (by position).
    put_back: BTreeMap<&'a str, usize>,
}

impl<'a> History<'a> {
    fn read(entries: &'a [Entry]) -> History<'a> {
        let mut h = History::default();
        for (at, entry) in entries.iter().enumerate() {
            match &entry.event {
                // Artifacts copied change no service: a host that got only them is not
                // touched (and a rollback leaves them where they are).
                Event::StepStarted { step, .. } if *step == Step::Artifacts => {}
                Event::StepStarted { host, step } => {
                    h.started.entry(host).or_default().insert(step);
                    if let Step::Recreate(queue) = step {
                        h.recreating.insert(queue, at);
                    }
                }
                Event::StepFinished {
                    step: Step::Restore(queue),
                    ok: true,
                    ..
                } => {
                    h.put_back.insert(queue, at);
                }
                Event::Backup { host, item } => h.backed_up(host, item),
                _ => {}
            }
        }
        h
    }

    fn backed_up(&mut self, host: &'a str, item: &'a Backup) {
        match item {
            Backup::Version { version } => {
                self.versions.insert(host, version);
            }
            Backup::File { path, .. } => self.files.entry(host).or_default().push(path.clone()),
            Backup::Queue { name, .. } => {
                if !self.queues.contains(name) {
                    self.queues.push(name.clone());
                }
            }
        }
    }

    /// A queue the failover put back after the run last began to recreate it.
    fn restored(&self, queue: &str) -> bool {
        self.put_back
            .get(queue)
            .is_some_and(|done| self.recreating.get(queue).is_none_or(|begun| done > begun))
    }

    /// What the repair of a host the run touched does.
    fn repair(&self, host: &str, start: bool, reset_available: bool) -> Repair {
        let steps = self.started.get(host).cloned().unwrap_or_default();
        let installed = steps.contains(&Step::Upgrade);
        let files_changed = steps.contains(&Step::Deploy) || steps.contains(&Step::StageFiles);
        Repair {
            host: host.to_string(),
            version: installed
                .then(|| self.versions.get(host).map(|v| v.to_string()))
                .flatten(),
            files: if files_changed {
                self.files.get(host).cloned().unwrap_or_default()
            } else {
                vec![]
            },
            reset_queue_state: reset_available && !self.queues.is_empty(),
            start,
            reinstall: None,
            steps: vec![],
        }
    }
}

/// The active hosts the run touched whose passive partner it did not: the partner, on the
/// old release, becomes active.
fn swaps(group: &Group, touched: &[&str]) -> Vec<Swap> {
    let mut swaps = vec![];
    for host in group
        .hosts
        .iter()
        .filter(|h| touched.contains(&h.name.as_str()))
    {
        let (Some(Role::Active), Some(pair)) = (host.role, &host.pair) else {
            continue;
        };
        let partner = group
            .hosts
            .iter()
            .find(|h| h.pair.as_ref() == Some(pair) && h.role == Some(Role::Passive));
        if let Some(partner) = partner
            && !touched.contains(&partner.name.as_str())
        {
            swaps.push(Swap {
                pair: pair.clone(),
                from: host.name.clone(),
                to: partner.name.clone(),
            });
        }
    }
    swaps
}

/// Plans the rollback of the run `upgrade`, whose journal holds `entries`.
pub fn plan(
    run_id: &str,
    group: &Group,
    upgrade: &UpgradePlan,
    entries: &[Entry],
    options: Options,
) -> Result<RollbackPlan, RenderError> {
    let history = History::read(entries);
    let touched: Vec<&str> = upgrade
        .hosts
        .iter()
        .map(|h| h.host.as_str())
        .filter(|h| history.started.contains_key(h))
        .collect();
    let swaps = swaps(group, &touched);
    let mut start_old: Vec<String> = group
        .half(upgrade.half.other())
        .filter(|h| h.role != Some(Role::Passive))
        .map(|h| h.name.clone())
        .collect();
    start_old.extend(swaps.iter().map(|s| s.to.clone()));
    let mut repair = vec![];
    for host in &touched {
        let passive = group
            .hosts
            .iter()
            .any(|h| h.name == *host && h.role == Some(Role::Passive));
        let swapped_out = swaps.iter().any(|s| s.from == *host);
        let start = !options.keep_upgraded_stopped && !passive && !swapped_out;
        let mut r = history.repair(host, start, options.reset_available);
        if let Some(version) = &r.version {
            let command = super::rendered::reinstall(&upgrade.release, group, host, version)?;
            r.reinstall = Some(command);
        }
        repair.push(r.with_steps());
    }
    let (restored, queues): (Vec<String>, Vec<String>) = history
        .queues
        .iter()
        .cloned()
        .partition(|q| history.restored(q));
    let owners: BTreeMap<String, String> = upgrade
        .hosts
        .iter()
        .flat_map(|h| h.queues.iter().map(|q| (q.name.clone(), h.host.clone())))
        .filter(|(q, _)| history.queues.contains(q))
        .collect();
    let consumers = history
        .queues
        .iter()
        .map(|q| (q.clone(), consumers(upgrade, &owners, q)))
        .collect();
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
        repair,
        keep_upgraded_stopped: options.keep_upgraded_stopped,
        preserve_messages: options.preserve_messages,
        hold_while_running_at: super::upgrade::HOLD_WHILE_RUNNING_AT,
        holding_type: upgrade.holding_type,
        parallel: upgrade.parallel,
        consumers,
        owners,
        rendered: upgrade.rendered.clone(),
    })
}

/// The hosts that consume `queue`: its owner, or every host of the run that starts and the
/// other half's that stopped with it.
fn consumers(upgrade: &UpgradePlan, owners: &BTreeMap<String, String>, queue: &str) -> Vec<String> {
    if let Some(owner) = owners.get(queue) {
        return vec![owner.clone()];
    }
    upgrade
        .hosts
        .iter()
        .filter(|h| h.start)
        .map(|h| h.host.clone())
        .chain(upgrade.critical_stops.iter().cloned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::fixtures::{journal, ops, options, upgrade_plan};

    #[test]
    fn service_first_then_repairs_with_the_pair_swapped() {
        let p = plan(
            "rb1",
            &ops(),
            &upgrade_plan(),
            &journal(),
            options(true, false),
        )
        .unwrap();
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
    }

    #[test]
    fn hosts_that_only_got_the_artifacts_are_not_touched() {
        let mut entries = journal();
        let seq = entries.len() as u64 + 1;
        for (i, host) in ["px7", "px8"].into_iter().enumerate() {
            let mut entry = entries[1].clone();
            entry.seq = seq + i as u64;
            entry.event = Event::StepStarted {
                host: host.into(),
                step: Step::Artifacts,
            };
            entries.push(entry);
        }
        let p = plan(
            "rb1",
            &ops(),
            &upgrade_plan(),
            &entries,
            options(true, false),
        )
        .unwrap();
        assert_eq!(p.stop, ["px5", "px6", "pxatx1"]);
        assert!(p.repair.iter().all(|r| r.host != "px7" && r.host != "px8"));
    }

    #[test]
    fn the_plan_holds_what_its_execution_needs_of_the_upgrade() {
        let upgrade = upgrade_plan();
        let p = plan("rb1", &ops(), &upgrade, &journal(), options(true, false)).unwrap();
        // A shared queue: every host of the run that starts, and the other half's stopped.
        assert_eq!(
            p.consumers["q.cluster"],
            ["px5", "px6", "px7", "px8", "pxatx1", "px1"]
        );
        assert!(p.owners.is_empty());
        assert_eq!(p.rendered, upgrade.rendered);
        assert_eq!(p.parallel, upgrade.parallel);
        assert_eq!(p.rolls_back, upgrade.run_id);
    }

    #[test]
    fn keep_upgraded_stopped_starts_none_of_them() {
        let p = plan(
            "rb1",
            &ops(),
            &upgrade_plan(),
            &journal(),
            options(false, true),
        )
        .unwrap();
        assert!(p.repair.iter().all(|r| !r.start && !r.reset_queue_state));
    }

    #[test]
    fn a_journal_without_a_plan_has_nothing_to_roll_back() {
        // The plan to roll back is read from the journal first: an empty one has none.
        assert!(crate::plan::journaled::upgrade(&[]).is_err());
    }

    #[test]
    fn a_rollback_holds_in_queues_of_the_upgrades_type() {
        let mut upgrade = upgrade_plan();
        upgrade.holding_type = Some(crate::broker::equivalence::QueueType::Quorum);
        let rollback = plan("rb9", &ops(), &upgrade, &journal(), options(true, false)).unwrap();
        assert_eq!(rollback.holding_type, upgrade.holding_type);
        let old = plan(
            "rb9",
            &ops(),
            &upgrade_plan(),
            &journal(),
            options(true, false),
        )
        .unwrap();
        assert_eq!(old.holding_type, None);
    }
}
