//! The plan of a half-fleet upgrade: computed from the inventory and the queue diff, shown,
//! approved, written to the journal, and executed exactly as it is. A resume reads it back.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::ownership::Owner;
use super::queue_diff::{QueueDiff, RowRef};
use super::rendered::{RenderError, Rendered};
use super::rollout::{self, Asked, FailurePolicy, Gates, RolloutError, Wave};
use crate::broker::equivalence::QueueType;
use crate::inventory::{Group, Half, Role};
use crate::step::Step;

/// A queue the run recreates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueChange {
    pub name: String,
    pub messages: u64,
    /// Of those, the ones not persistent in a classic queue: a broker restart loses them
    /// (while held, as where they are).
    #[serde(default)]
    pub transient: u64,
    /// `setting old -> new`, for people.
    pub changes: Vec<String>,
    /// Its backlog is expected to be moved to the holding queue while its consumers still run
    /// (it held at least the plan's `hold_while_running_at` messages at plan time): the stop
    /// waits for none of it. The hold step decides on the count it finds then.
    #[serde(default)]
    pub held_while_running: bool,
    /// How long it is expected to be without a consumer: its consumers' stop and start as
    /// last measured, plus what is left to move while they are stopped. `None`: never
    /// measured.
    #[serde(default)]
    pub expected_stopped_seconds: Option<f64>,
}

/// A queue holding at least this many messages has them moved to its holding queue while its
/// consumers still run (they share the queue with the mover: every message is consumed or
/// held), so that its consumers' stop never waits for its backlog. A smaller backlog is
/// left to them, and moved in the stop (at most a few tenths of a second).
pub const HOLD_WHILE_RUNNING_AT: u64 = 1_000;

/// The rate assumed for a move in the plan's estimates (messages per second): below what
/// the mover does on a loaded two-core broker.
pub const EXPECTED_MOVE_RATE: f64 = 10_000.0;

/// What happens to one host of the upgraded half.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostPlan {
    pub host: String,
    pub role: Option<Role>,
    /// False for a passive host: upgraded, left stopped.
    pub start: bool,
    /// Its own queues to recreate (while it is stopped).
    pub queues: Vec<QueueChange>,
    /// Its own queues to verify after the start.
    pub verify_queues: Vec<String>,
    /// Run the playbook's queue-state reset (when any queue it uses is recreated).
    pub reset_queue_state: bool,
    /// Its steps before any host of the half stops (the release's artifacts copied).
    #[serde(default)]
    pub artifacts: Vec<Step>,
    /// Its steps while its service still runs, in order.
    pub ready: Vec<Step>,
    /// Its steps while it is stopped, in order.
    pub stopped: Vec<Step>,
    /// Its steps from its start on, in order (a passive host is not started).
    pub started: Vec<Step>,
}

/// The steps done on the broker for the queues of several hosts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BrokerSteps {
    /// While the services still run.
    pub before: Vec<Step>,
    /// Once every consumer is stopped.
    pub stopped: Vec<Step>,
    /// Once every host of the half is started.
    pub after: Vec<Step>,
}

/// The whole plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpgradePlan {
    pub run_id: String,
    pub group: String,
    pub half: Half,
    pub playbook: String,
    pub playbook_path: String,
    pub package: String,
    pub version: String,
    pub parallel: usize,
    /// The chosen half, canary first.
    pub hosts: Vec<HostPlan>,
    /// Queues used by several hosts (a half, or both halves), recreated once every consumer
    /// is stopped.
    pub group_queues: Vec<QueueChange>,
    /// All hosts of the half are stopped and prepared before any starts (group queues).
    pub two_phase: bool,
    /// A queue shared with the other half is recreated: the other half stops too.
    pub critical_window: bool,
    /// Hosts of the other half stopped for the critical window, never upgraded.
    pub critical_stops: Vec<String>,
    /// The other half, kept on the old release as the failover (those of its hosts that do
    /// not already run the target version).
    pub failover: Vec<String>,
    pub messages_at_risk: u64,
    /// Recreated queues keep their messages (holding queues); false with
    /// `--allow-message-loss`.
    #[serde(default = "yes")]
    pub preserve_messages: bool,
    /// A queue holding at least this many messages when its hold step runs has them moved to
    /// its holding queue while its consumers still run (plans of older versions:
    /// [`HOLD_WHILE_RUNNING_AT`]). `held_while_running` is this applied to the plan's counts.
    #[serde(default = "hold_while_running_at")]
    pub hold_while_running_at: u64,
    /// The type of its holding queues, decided once at plan time (quorum on a cluster,
    /// classic on one node): a resume and a rollback use the same. `None` in plans of older
    /// versions: each holding queue of the type of the queue it holds.
    #[serde(default)]
    pub holding_type: Option<QueueType>,
    /// The steps on the broker for `group_queues`.
    pub broker: BrokerSteps,
    /// The steps of each host of `critical_stops`.
    pub critical_steps: Vec<Step>,
    /// The queue diff's summary line.
    pub queue_summary: String,
    /// The playbook as approved: a resume and a rollback compare the file with it.
    pub release: crate::playbook::Playbook,
    /// The release rendered for every host of the group: all that execution runs.
    pub rendered: Rendered,
    /// The placeholders' values of every host of the group as approved, by host.
    #[serde(default)]
    pub vars: BTreeMap<String, BTreeMap<String, String>>,
    /// The half's hosts in waves, in order (empty in plans of older versions: the canary,
    /// then the rest).
    #[serde(default)]
    pub waves: Vec<Wave>,
    /// What must hold after each wave.
    #[serde(default)]
    pub gates: Gates,
    /// What a failure does.
    #[serde(default)]
    pub policy: FailurePolicy,
}

/// Why an upgrade cannot be planned.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error(transparent)]
    Rollout(#[from] RolloutError),
    /// The broker would refuse to declare the target queues (a quorum queue that is not
    /// durable, ...), or the queues are of a type `roll` cannot recreate (streams).
    #[error("{0}")]
    Queues(String),
}

/// How the operator asked the run to go.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// Hosts upgraded at the same time within a wave.
    pub parallel: usize,
    /// Keep the messages of recreated queues (false: `--allow-message-loss`).
    pub preserve_messages: bool,
    /// Waves, pause and failure policy as asked (over the playbook's `[rollout]`).
    pub rollout: Asked,
    /// Each host's stop plus start, in seconds, as its last run measured them.
    pub measured: BTreeMap<String, f64>,
    /// The type of the holding queues: quorum on a cluster, classic on one node (see
    /// [`crate::broker::cluster::holding_type`]).
    pub holding: QueueType,
}

impl Options {
    pub fn new(parallel: usize, preserve_messages: bool) -> Options {
        Options {
            parallel,
            preserve_messages,
            rollout: Asked::default(),
            measured: BTreeMap::new(),
            holding: QueueType::Classic,
        }
    }
}

impl UpgradePlan {
    /// The canary: the first host that is started.
    pub fn canary(&self) -> Option<&str> {
        self.hosts.iter().find(|h| h.start).map(|h| h.host.as_str())
    }

    /// The waves, as planned (a plan of an older version: the canary, then the rest).
    pub fn waves(&self) -> Vec<Wave> {
        if !self.waves.is_empty() {
            return self.waves.clone();
        }
        let mut names = self.hosts.iter().map(|h| h.host.clone());
        let first: Vec<String> = names.by_ref().take(1).collect();
        let rest: Vec<String> = names.collect();
        [first, rest]
            .into_iter()
            .filter(|w| !w.is_empty())
            .enumerate()
            .map(|(i, hosts)| Wave {
                number: i + 1,
                hosts,
                after: vec![],
            })
            .collect()
    }

    /// Every queue the run recreates.
    pub fn queue_count(&self) -> usize {
        self.group_queues.len() + self.hosts.iter().map(|h| h.queues.len()).sum::<usize>()
    }
}

fn yes() -> bool {
    true
}

/// The threshold of a plan that does not record one.
pub(crate) fn hold_while_running_at() -> u64 {
    HOLD_WHILE_RUNNING_AT
}

fn change(row: RowRef<'_>) -> QueueChange {
    QueueChange {
        name: row.name().to_string(),
        messages: row.messages(),
        transient: row.transient().unwrap_or(0),
        changes: row.differences().iter().map(|d| d.to_string()).collect(),
        held_while_running: false,
        expected_stopped_seconds: None,
    }
}

/// The queues the plan recreates: those whose settings change (or that the broker would
/// keep as they are), for the hosts of the half, the half and the whole group.
fn recreated(diff: &QueueDiff, half: Half) -> (Vec<QueueChange>, bool) {
    let mut group_queues = vec![];
    let mut critical_window = false;
    for row in diff.owned().filter(|r| r.verdict().recreates()) {
        match row.owner() {
            Owner::Shared => {
                critical_window = true;
                group_queues.push(change(row));
            }
            Owner::Half { half: h } if *h == half => group_queues.push(change(row)),
            _ => {}
        }
    }
    (group_queues, critical_window)
}

/// A host of the half, its own queues from the diff, without its steps yet.
fn host_plan(host: &crate::inventory::Host, diff: &QueueDiff, two_phase: bool) -> HostPlan {
    let own =
        |row: &RowRef<'_>| matches!(row.owner(), Owner::Host { host: h, .. } if *h == host.name);
    let queues: Vec<QueueChange> = diff
        .owned()
        .filter(own)
        .filter(|r| r.verdict().recreates())
        .map(change)
        .collect();
    HostPlan {
        host: host.name.clone(),
        role: host.role,
        start: host.role != Some(Role::Passive),
        reset_queue_state: two_phase || !queues.is_empty(),
        verify_queues: diff
            .owned()
            .filter(own)
            .map(|r| r.name().to_string())
            .collect(),
        queues,
        artifacts: vec![],
        ready: vec![],
        stopped: vec![],
        started: vec![],
    }
}

/// What of the release decides a host's steps.
struct Shape {
    upgrade_before_stop: bool,
    stage_files: bool,
    reset_command: bool,
    preserve_messages: bool,
    gate: bool,
    artifacts: bool,
}

impl Shape {
    fn of(playbook: &crate::playbook::Playbook, options: &Options, gates: &Gates) -> Shape {
        Shape {
            upgrade_before_stop: playbook.commands.upgrade_before_stop,
            stage_files: !playbook.files.is_empty(),
            reset_command: playbook.commands.reset_queue_state.is_some(),
            preserve_messages: options.preserve_messages,
            gate: gates.per_host(),
            artifacts: !playbook.artifacts.is_empty(),
        }
    }

    /// A host's steps: everything that can be done while its service runs first (backups,
    /// the package when the release allows it, staged files, holding queues), so that it is
    /// stopped only for what cannot be done otherwise.
    fn steps(&self, host: &mut HostPlan) {
        let queues: Vec<String> = host.queues.iter().map(|q| q.name.clone()).collect();
        let held = |make: fn(String) -> Step| -> Vec<Step> {
            if self.preserve_messages {
                queues.iter().cloned().map(make).collect()
            } else {
                vec![]
            }
        };
        host.artifacts = if self.artifacts {
            vec![Step::Artifacts]
        } else {
            vec![]
        };
        host.ready = vec![Step::Backup];
        if self.upgrade_before_stop {
            host.ready.push(Step::Upgrade);
        }
        if self.stage_files {
            host.ready.push(Step::StageFiles);
        }
        host.ready.extend(held(Step::Hold));
        host.stopped = vec![Step::Stop, Step::VerifyStopped];
        host.stopped
            .extend(queues.iter().cloned().map(Step::Recreate));
        if !self.upgrade_before_stop {
            host.stopped.push(Step::Upgrade);
        }
        host.stopped.push(Step::Deploy);
        if host.reset_queue_state && self.reset_command {
            host.stopped.push(Step::ResetQueueState);
        }
        host.started = if host.start {
            vec![Step::Start]
        } else {
            vec![]
        };
        host.started.extend(held(Step::Release));
        if host.start {
            host.started.push(Step::Verify);
            if self.gate {
                host.started.push(Step::Gate);
            }
        }
    }

    /// The broker's steps for the queues of several hosts.
    fn broker(&self, queues: &[QueueChange]) -> BrokerSteps {
        let mut steps = BrokerSteps::default();
        for q in queues {
            steps.before.push(Step::BackUp(q.name.clone()));
            if self.preserve_messages {
                steps.before.push(Step::Hold(q.name.clone()));
                steps.after.push(Step::Release(q.name.clone()));
            }
            steps.stopped.push(Step::Recreate(q.name.clone()));
            steps.after.push(Step::VerifyQueue(q.name.clone()));
        }
        steps
    }
}

/// Computes the plan for upgrading `half` of `group`.
/// `other_versions` holds the installed version of the other half's hosts, where known: a
/// host already on the target version is no failover.
pub fn plan(
    run_id: &str,
    group: &Group,
    half: Half,
    diff: &QueueDiff,
    playbook: &crate::playbook::Playbook,
    options: &Options,
    other_versions: &BTreeMap<String, String>,
) -> Result<UpgradePlan, PlanError> {
    refuse_queues(diff, &playbook.queues.target)?;
    let (mut group_queues, critical_window) = recreated(diff, half);
    let two_phase = !group_queues.is_empty();
    let rules = &playbook.rollout;
    let gates = rollout::gates(rules, playbook.commands.gate.is_some());
    let shape = Shape::of(playbook, options, &gates);
    let mut hosts: Vec<HostPlan> = group
        .half(half)
        .map(|host| host_plan(host, diff, two_phase))
        .collect();
    for host in &mut hosts {
        shape.steps(host);
    }
    let (waves, policy) = in_waves(&mut hosts, group, rules, &options.rollout, two_phase)?;
    expect_stops(
        &mut hosts,
        &mut group_queues,
        options,
        HOLD_WHILE_RUNNING_AT,
    );
    let other: Vec<&crate::inventory::Host> = group.half(half.other()).collect();
    let critical_stops = if critical_window {
        other
            .iter()
            .filter(|h| h.role != Some(Role::Passive))
            .map(|h| h.name.clone())
            .collect()
    } else {
        vec![]
    };
    let messages_at_risk = group_queues
        .iter()
        .chain(hosts.iter().flat_map(|h| &h.queues))
        .map(|q| q.messages)
        .sum();
    Ok(UpgradePlan {
        run_id: run_id.to_string(),
        group: group.name.clone(),
        half,
        playbook: playbook.name.clone(),
        // Absolute: a resume finds the file again from anywhere.
        playbook_path: std::path::absolute(&playbook.path)
            .unwrap_or_else(|_| playbook.path.clone())
            .display()
            .to_string(),
        package: playbook.package.clone(),
        version: playbook.version.clone(),
        parallel: options.parallel.max(1),
        messages_at_risk,
        hosts,
        broker: shape.broker(&group_queues),
        group_queues,
        two_phase,
        critical_window,
        critical_steps: vec![Step::StopFailover, Step::VerifyStoppedFailover],
        critical_stops,
        failover: other
            .iter()
            .filter(|h| other_versions.get(&h.name) != Some(&playbook.version))
            .map(|h| h.name.clone())
            .collect(),
        preserve_messages: options.preserve_messages,
        hold_while_running_at: HOLD_WHILE_RUNNING_AT,
        holding_type: Some(options.holding),
        queue_summary: diff.summary.to_string(),
        release: playbook.clone(),
        rendered: super::rendered::render(playbook, group)?,
        vars: vars(group, playbook),
        waves,
        gates,
        policy,
    })
}

/// Refuses a release whose queues the broker would not declare, or that `roll` cannot
/// recreate, naming them: the target is a quorum queue (or stream) that is not durable or is
/// auto-delete, or has an argument of another queue type; the target or a queue to recreate
/// is a stream (its messages are not consumed away: `roll` cannot move them).
fn refuse_queues(
    diff: &QueueDiff,
    target: &crate::broker::equivalence::QueueSettings,
) -> Result<(), PlanError> {
    let declared: Vec<RowRef<'_>> = diff
        .owned()
        .filter(|r| matches!(r.verdict(), v if v.is_change()))
        .collect();
    if declared.is_empty() {
        return Ok(());
    }
    let names = |rows: &[RowRef<'_>]| {
        let mut all: Vec<&str> = rows.iter().take(5).map(|r| r.name()).collect();
        if rows.len() > 5 {
            all.push("...");
        }
        all.join(", ")
    };
    let mut why = diff.rules().refusals(target);
    if target.queue_type() == QueueType::Stream {
        why.push("roll does not recreate streams (their messages cannot be moved)".into());
    }
    if !why.is_empty() {
        return Err(PlanError::Queues(format!(
            "the broker would refuse to declare queue{} {} with the playbook's [queues.target]: {}",
            if declared.len() == 1 { "" } else { "s" },
            names(&declared),
            why.join("; ")
        )));
    }
    let streams: Vec<RowRef<'_>> = declared
        .iter()
        .copied()
        .filter(|r| {
            r.verdict().recreates()
                && r.current().map(|c| c.queue_type()) == Some(QueueType::Stream)
        })
        .collect();
    if !streams.is_empty() {
        return Err(PlanError::Queues(format!(
            "stream{} {} cannot be recreated: roll does not move a stream's messages",
            if streams.len() == 1 { "" } else { "s" },
            names(&streams)
        )));
    }
    Ok(())
}

/// Each queue's expected time without a consumer, and whether its backlog is held while its
/// consumers run. A host's queue: the host's stop and start as measured, plus the move of
/// what is left in it. A queue of the group: the slowest of the half's stops and starts plus
/// the moves of every queue of the group (they are recreated one after the other).
fn expect_stops(
    hosts: &mut [HostPlan],
    group_queues: &mut [QueueChange],
    options: &Options,
    hold_at: u64,
) {
    let preserve = options.preserve_messages;
    let owned = hosts.iter_mut().flat_map(|h| h.queues.iter_mut());
    for q in owned.chain(group_queues.iter_mut()) {
        q.held_while_running = preserve && q.messages >= hold_at;
    }
    let left_in_stop = |q: &QueueChange| -> f64 {
        if q.held_while_running || !preserve {
            0.0
        } else {
            q.messages as f64 / EXPECTED_MOVE_RATE
        }
    };
    for host in hosts.iter_mut() {
        let measured = options.measured.get(&host.host).copied();
        for q in &mut host.queues {
            q.expected_stopped_seconds = measured.map(|m| m + left_in_stop(q));
        }
    }
    let slowest = hosts
        .iter()
        .map(|h| options.measured.get(&h.host).copied())
        .try_fold(0.0_f64, |max, m| m.map(|m| max.max(m)));
    let moving: f64 = group_queues.iter().map(left_in_stop).sum();
    for q in group_queues.iter_mut() {
        q.expected_stopped_seconds = slowest.map(|s| s + moving);
    }
}

/// Puts the half's hosts in waves: the canary (the first host that starts) first, passive
/// hosts last, then in the order of their waves; and the failure policy over them.
fn in_waves(
    hosts: &mut [HostPlan],
    group: &Group,
    rules: &crate::playbook::rollout::RolloutRules,
    asked: &Asked,
    together: bool,
) -> Result<(Vec<Wave>, FailurePolicy), RolloutError> {
    hosts.sort_by_key(|h| !h.start);
    let no_vars = BTreeMap::new();
    let members: Vec<rollout::Member> = hosts
        .iter()
        .map(|h| rollout::Member {
            name: &h.host,
            vars: group
                .hosts
                .iter()
                .find(|g| g.name == h.host)
                .map_or(&no_vars, |g| &g.vars),
        })
        .collect();
    let waves = rollout::waves(&members, rules, asked, together)?;
    let policy = rollout::policy(rules, asked, hosts.len(), together)?;
    let order: Vec<&String> = waves.iter().flat_map(|w| &w.hosts).collect();
    hosts.sort_by_key(|h| order.iter().position(|n| **n == h.host));
    Ok((waves, policy))
}

/// The placeholders' values of every host of the group.
fn vars(
    group: &Group,
    playbook: &crate::playbook::Playbook,
) -> BTreeMap<String, BTreeMap<String, String>> {
    group
        .hosts
        .iter()
        .map(|h| {
            let vars = playbook.vars(h, &group.broker);
            let vars = vars.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
            (h.name.clone(), vars)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::broker::equivalence::QueueSettings;
    use crate::plan::fixtures::{fixture, ops_diff};

    #[test]
    fn expire_on_half_b_needs_the_critical_window() {
        let (inventory, playbook) = fixture();
        let ops = inventory.group("ops").unwrap();
        let d = ops_diff(&playbook.queues.target);
        let p = plan(
            "r1",
            ops,
            Half::B,
            &d,
            &playbook,
            &Options::new(2, true),
            &Default::default(),
        )
        .unwrap();
        let names: Vec<&str> = p.hosts.iter().map(|h| h.host.as_str()).collect();
        assert_eq!(names, ["px5", "px6", "px7", "px8", "pxatx1"]);
        assert_eq!(p.canary(), Some("px5"));
        assert!(p.critical_window && p.two_phase);
        assert_eq!(p.critical_stops, ["px1", "px2", "px3", "px4"]);
        assert_eq!(p.failover, ["px1", "px2", "px3", "px4", "pxatx2"]);
        assert_eq!(p.group_queues.len(), 1);
        assert_eq!(p.group_queues[0].name, "q.cluster");
        assert_eq!(p.queue_count(), 6);
        assert_eq!(p.messages_at_risk, 7 + 5);
        assert!(p.hosts.iter().all(|h| h.reset_queue_state && h.start));
        assert_eq!(
            p.hosts[0].queues[0].changes,
            ["x-expires none -> 604800000"]
        );
        // The plan survives the journal.
        let back: UpgradePlan = serde_json::from_value(json!(p)).unwrap();
        assert_eq!(back, p);
    }

    #[test]
    fn a_backlog_is_held_while_its_consumer_runs_and_the_stop_is_expected_as_measured() {
        let (inventory, playbook) = fixture();
        let ops = inventory.group("ops").unwrap();
        let mut d = ops_diff(&playbook.queues.target);
        d.set_messages("q.pump.px5", 50_000);
        let mut options = Options::new(2, true);
        options.measured.insert("px5".into(), 4.0);
        options.measured.insert("px6".into(), 6.0);
        let p = plan(
            "r3",
            ops,
            Half::B,
            &d,
            &playbook,
            &options,
            &Default::default(),
        )
        .unwrap();
        let queue = |host: &str| p.hosts.iter().find(|h| h.host == host).unwrap().queues[0].clone();
        let px5 = queue("px5");
        assert!(px5.held_while_running, "{px5:?}");
        assert_eq!(px5.expected_stopped_seconds, Some(4.0));
        // The threshold the hold step applies is the plan's, journaled with it; a plan of an
        // older version, without it, reads as the threshold those versions used.
        assert_eq!(p.hold_while_running_at, HOLD_WHILE_RUNNING_AT);
        let mut older = json!(p);
        older
            .as_object_mut()
            .unwrap()
            .remove("hold_while_running_at");
        let back: UpgradePlan = serde_json::from_value(older).unwrap();
        assert_eq!(back.hold_while_running_at, 1_000);
        // A small backlog is moved in the stop, at the rate the plan assumes.
        let px6 = queue("px6");
        assert!(!px6.held_while_running && px6.messages < HOLD_WHILE_RUNNING_AT);
        let moving = px6.messages as f64 / EXPECTED_MOVE_RATE;
        assert_eq!(px6.expected_stopped_seconds, Some(6.0 + moving));
        assert_eq!(queue("px7").expected_stopped_seconds, None);
        // A queue of the group waits for every host: px7 was never measured.
        assert_eq!(p.group_queues[0].expected_stopped_seconds, None);
        // Without preservation, nothing is held.
        let lossy = plan(
            "r4",
            ops,
            Half::B,
            &d,
            &playbook,
            &Options::new(2, false),
            &Default::default(),
        )
        .unwrap();
        assert!(
            lossy
                .hosts
                .iter()
                .flat_map(|h| &h.queues)
                .all(|q| !q.held_while_running)
        );
    }

    #[test]
    fn minor_on_half_a_keeps_the_passive_host_stopped_and_half_b_running() {
        let (inventory, playbook) = fixture();
        let ops = inventory.group("ops").unwrap();
        let target = QueueSettings::new(true, false, Default::default());
        let d = ops_diff(&target);
        let mut versions = std::collections::BTreeMap::new();
        for h in ["px5", "px6", "px7", "px8", "pxatx1"] {
            versions.insert(h.to_string(), "3.3.1".to_string());
        }
        let options = Options::new(1, true);
        let p = plan("r2", ops, Half::A, &d, &playbook, &options, &versions).unwrap();
        assert!(p.failover.is_empty());
        let names: Vec<&str> = p.hosts.iter().map(|h| h.host.as_str()).collect();
        assert_eq!(names, ["px1", "px2", "px3", "px4", "pxatx2"]);
        let pxatx2 = &p.hosts[4];
        assert!(!pxatx2.start);
        assert!(!p.critical_window && !p.two_phase);
        assert!(p.critical_stops.is_empty());
        assert_eq!(p.queue_count(), 0);
        assert!(p.hosts.iter().all(|h| !h.reset_queue_state));
        assert_eq!(p.hosts[0].verify_queues, ["q.pump.px1"]);
    }

    fn plan_with(target: QueueSettings, options: &Options) -> Result<UpgradePlan, PlanError> {
        let (inventory, mut playbook) = fixture();
        playbook.queues.target = target.clone();
        let ops = inventory.group("ops").unwrap();
        let d = ops_diff(&target);
        plan("r9", ops, Half::B, &d, &playbook, options, &BTreeMap::new())
    }

    fn quorum(durable: bool, auto_delete: bool) -> QueueSettings {
        let arguments = [("x-queue-type".to_string(), json!("quorum"))]
            .into_iter()
            .collect();
        QueueSettings::new(durable, auto_delete, arguments)
    }

    #[test]
    fn a_quorum_target_that_is_not_durable_is_refused_naming_the_queues() {
        let options = Options::new(2, true);
        let err = plan_with(quorum(false, false), &options)
            .unwrap_err()
            .to_string();
        assert!(err.contains("q.cluster"), "{err}");
        assert!(err.contains("q.pump.px5"), "{err}");
        assert!(err.contains("a quorum queue must be durable"), "{err}");
        let err = plan_with(quorum(true, true), &options)
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot be auto-delete"), "{err}");
        let mut stream = quorum(true, false);
        stream
            .arguments
            .insert("x-queue-type".into(), json!("stream"));
        let err = plan_with(stream, &options).unwrap_err().to_string();
        assert!(err.contains("does not recreate streams"), "{err}");
        // A durable quorum target: every queue of half b recreated (classic -> quorum).
        let ok = plan_with(quorum(true, false), &options).unwrap();
        assert!(ok.group_queues.iter().any(|q| q.name == "q.cluster"));
        assert!(
            ok.group_queues[0]
                .changes
                .iter()
                .any(|c| c == "x-queue-type none -> quorum"),
            "{:?}",
            ok.group_queues[0].changes
        );
    }

    #[test]
    fn the_plan_records_the_holding_queues_type() {
        let mut options = Options::new(2, true);
        let classic = plan_with(quorum(true, false), &options).unwrap();
        assert_eq!(classic.holding_type, Some(QueueType::Classic));
        options.holding = QueueType::Quorum;
        let on_cluster = plan_with(quorum(true, false), &options).unwrap();
        assert_eq!(on_cluster.holding_type, Some(QueueType::Quorum));
        // Read back from the journal as written; a plan of an older version has none.
        let json = serde_json::to_value(&on_cluster).unwrap();
        assert_eq!(json["holding_type"], "quorum");
        let back: UpgradePlan = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back.holding_type, Some(QueueType::Quorum));
        let mut old = json;
        old.as_object_mut().unwrap().remove("holding_type");
        let old: UpgradePlan = serde_json::from_value(old).unwrap();
        assert_eq!(old.holding_type, None);
    }
}
