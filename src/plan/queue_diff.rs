//! The queue diff: for every queue of a vhost, what a release will do to it, decided as the
//! broker decides (see [`crate::broker::equivalence`]).
//!
//! A vhost may hold a hundred thousand queues, so the diff keeps one compact row per queue:
//! its name, its counts, and indices into small tables of what many rows share (the owners;
//! the settings, each with its differences from the target; the bindings). A row as people
//! and scripts read it, [`QueueRow`], is made from those when it is asked for
//! ([`RowRef::to_row`]), and rows serialise without being made ([`RowRef`]). The diff is
//! gathered from the broker's listings by a [`Listing`].

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Serialize;
use serde::ser::SerializeStruct;
use serde_json::Value;

use super::ownership::{Claims, Owner};
use crate::broker::equivalence::{
    Difference, QueueSettings, QueueType, Rules, policy_key_for, show,
};
use crate::inventory::Half;
use crate::units::format_duration;

mod listing;

pub use listing::{Binding, Listing};

/// What will happen to a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, PartialOrd, Ord, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// The broker will refuse the new declare: delete and declare again.
    Recreate,
    /// Differs only in arguments the broker does not check: a redeclare succeeds but the new
    /// value never takes effect; recreate to apply it.
    IgnoredByBroker,
    /// Owned and expected, but absent on the broker.
    Missing,
    /// Already as the release wants it.
    Unchanged,
    /// Owned by the half that this run does not touch.
    Outside,
    /// Not ours: never touched.
    #[default]
    Foreign,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Recreate => "recreate",
            Verdict::IgnoredByBroker => "ignored-by-broker",
            Verdict::Missing => "missing",
            Verdict::Unchanged => "unchanged",
            Verdict::Outside => "outside",
            Verdict::Foreign => "foreign",
        }
    }

    /// True when the release changes the queue.
    pub fn is_change(self) -> bool {
        matches!(
            self,
            Verdict::Recreate | Verdict::IgnoredByBroker | Verdict::Missing
        )
    }

    /// True when the release recreates the queue (it exists and differs from the target).
    pub fn recreates(self) -> bool {
        matches!(self, Verdict::Recreate | Verdict::IgnoredByBroker)
    }

    /// Every verdict, in the rows' order.
    const ALL: [Verdict; 6] = [
        Verdict::Recreate,
        Verdict::IgnoredByBroker,
        Verdict::Missing,
        Verdict::Unchanged,
        Verdict::Outside,
        Verdict::Foreign,
    ];
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A queue as the broker shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveQueue {
    pub name: String,
    pub settings: QueueSettings,
    pub messages: u64,
    /// Messages that do not survive a broker restart (not persistent, in a classic queue);
    /// `None` when the listing did not count them (see [`QueueDiff::uncounted`]).
    pub transient: Option<u64>,
    /// Where it lives and which policy applies to it.
    pub place: Placement,
}

/// Where a queue lives in the cluster, and the policy that applies to it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Placement {
    /// A classic queue's node, a quorum queue's (or stream's) leader; `None` when the broker
    /// gave none (a quorum queue without a leader).
    pub node: Option<String>,
    /// A quorum queue's (or stream's) members, and those of them online.
    pub replicas: Option<Replicas>,
    /// The user policy that applies to it (its name).
    pub policy: Option<String>,
}

/// The members of a replicated queue, and those of them online.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Replicas {
    pub members: Vec<String>,
    pub online: Vec<String>,
}

/// A node of the cluster as `/api/nodes` lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeState {
    pub name: String,
    pub running: bool,
}

/// One row of the diff, as people and scripts read it (made by [`RowRef::to_row`]; a
/// [`RowRef`] serialises to the same JSON).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueueRow {
    pub name: String,
    pub owner: Owner,
    /// Its type now (the target's when missing).
    #[serde(rename = "type")]
    pub kind: QueueType,
    /// A classic queue's node, a quorum queue's leader; `None` when missing or leaderless.
    pub node: Option<String>,
    /// The user policy that applies to it.
    pub policy: Option<String>,
    pub verdict: Verdict,
    /// Messages in the queue now (0 when missing).
    pub messages: u64,
    /// Of those, the ones a broker restart would lose (not persistent, in a classic queue);
    /// `None` when not counted: they are counted for the queues a release recreates.
    pub transient: Option<u64>,
    /// Current settings; `None` when missing.
    pub current: Option<QueueSettings>,
    /// Target settings; `None` for foreign queues.
    pub target: Option<QueueSettings>,
    pub differences: Vec<Difference>,
    /// A remark for the operator (a policy that could apply the difference, ...).
    pub note: Option<String>,
}

/// No entry of a table (a missing queue has no settings).
const NONE: u32 = u32::MAX;
/// A transient count not made.
const UNCOUNTED: u64 = u64::MAX;

/// One queue of the diff, compactly: what is shared with other rows is an index.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    name: Box<str>,
    messages: u64,
    /// [`UNCOUNTED`] when not counted.
    transient: u64,
    /// Its settings in [`QueueDiff::shapes`]; [`NONE`] when missing on the broker.
    shape: u32,
    /// Its owner in [`QueueDiff::owners`].
    owner: u32,
    /// Its first binding in [`QueueDiff::bindings`], and how many.
    first_binding: u32,
    binding_count: u32,
    verdict: Verdict,
    /// Its node (or leader) in [`QueueDiff::names`]; [`NONE`] when none.
    node: u32,
    /// Its members in [`QueueDiff::replicas`]; [`NONE`] for a classic queue.
    replicas: u32,
    /// Its policy in [`QueueDiff::names`]; [`NONE`] when none.
    policy: u32,
}

impl Row {
    fn new() -> Row {
        Row {
            name: Box::default(),
            messages: 0,
            transient: UNCOUNTED,
            shape: NONE,
            owner: NONE,
            first_binding: 0,
            binding_count: 0,
            verdict: Verdict::Foreign,
            node: NONE,
            replicas: NONE,
            policy: NONE,
        }
    }
}

/// Settings some queues have, and how they differ from the target.
#[derive(Debug, Clone, PartialEq)]
struct Shape {
    settings: QueueSettings,
    differences: Vec<Difference>,
}

/// The whole diff: rows, warnings and counts.
///
/// Rows are sorted by verdict and name: the owned ones first, the foreign ones last.
/// Serialised as its `rows` (every row as a [`QueueRow`]), `warnings` and `summary`.
#[derive(Debug, Clone)]
pub struct QueueDiff {
    pub vhost: String,
    /// The half the run is about; `None` for the whole group.
    pub half: Option<Half>,
    rows: Vec<Row>,
    owners: Vec<Owner>,
    shapes: Vec<Shape>,
    target: QueueSettings,
    /// The bindings of the owned queues, each queue's in a run (in [`QueueDiff::kinds`]).
    bindings: Vec<u32>,
    /// Every distinct binding (source, key, arguments).
    kinds: Vec<Binding>,
    stop_window: Duration,
    /// Node and policy names, stored once.
    names: Vec<Box<str>>,
    /// Every distinct set of members (and those online) of the replicated queues.
    replicas: Vec<Replicas>,
    /// The broker's rules (its version).
    rules: Rules,
    /// The cluster's nodes, when read ([`QueueDiff::set_nodes`]).
    nodes: Vec<NodeState>,
    /// The definitions of the vhost's user policies, by name, when read
    /// ([`QueueDiff::set_policies`]).
    policies: BTreeMap<String, serde_json::Map<String, Value>>,
    pub summary: Summary,
}

impl QueueDiff {
    /// Every row, owned and foreign, sorted by verdict and name.
    pub fn rows(&self) -> impl ExactSizeIterator<Item = RowRef<'_>> + DoubleEndedIterator {
        self.rows.iter().map(move |row| RowRef { diff: self, row })
    }

    /// The rows of the queues the fleet owns (every verdict but foreign): the first rows.
    pub fn owned(&self) -> impl Iterator<Item = RowRef<'_>> {
        self.rows().take_while(|r| r.verdict() != Verdict::Foreign)
    }

    /// How many rows there are.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True without any row.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The `i`th row.
    pub fn row(&self, i: usize) -> Option<RowRef<'_>> {
        self.rows.get(i).map(|row| RowRef { diff: self, row })
    }

    /// Where the row of a queue is, by name.
    pub fn find(&self, name: &str) -> Option<usize> {
        Verdict::ALL.iter().find_map(|&verdict| {
            self.rows
                .binary_search_by(|r| (r.verdict, &*r.name).cmp(&(verdict, name)))
                .ok()
        })
    }

    /// The rows whose transient messages a plan needs and the listing did not count: the
    /// queues a release recreates that hold messages.
    pub fn uncounted(&self) -> Vec<usize> {
        self.rows
            .iter()
            .enumerate()
            .filter(|(_, r)| r.verdict.recreates() && r.messages > 0 && r.transient == UNCOUNTED)
            .map(|(i, _)| i)
            .collect()
    }

    /// Records the transient messages of the `i`th row (at most its messages).
    pub fn set_transient(&mut self, i: usize, transient: u64) {
        if let Some(row) = self.rows.get_mut(i) {
            row.transient = transient.min(row.messages);
        }
    }

    /// Sets the messages of a queue (the plan's tests give backlogs).
    #[cfg(test)]
    pub fn set_messages(&mut self, name: &str, messages: u64) {
        if let Some(i) = self.find(name) {
            self.rows[i].messages = messages;
        }
    }

    /// The warnings for the operator, made as they are read: messages a recreate puts at
    /// risk, expiries shorter than the expected stop window, shared queues to recreate.
    pub fn warnings(&self) -> impl Iterator<Item = String> + '_ {
        let stop_window = self.stop_window;
        let owned = || self.owned();
        let holds = owned()
            .filter(|r| r.verdict() == Verdict::Recreate && r.messages() > 0)
            .map(|r| {
                format!(
                    "{} holds {} message{}: a recreate that does not move them loses them",
                    r.name(),
                    r.messages(),
                    if r.messages() == 1 { "" } else { "s" }
                )
            });
        let target = expires(&self.target)
            .filter(|expires| *expires < stop_window)
            .map(|expires| {
                format!(
                    "the target x-expires ({}) is shorter than the expected stop window ({}): \
                     queues may expire, with their messages, while their consumers are stopped",
                    format_duration(expires),
                    format_duration(stop_window)
                )
            });
        let short = owned()
            .filter(|r| r.verdict().is_change() || r.verdict() == Verdict::Unchanged)
            .filter_map(move |r| {
                let expires = r.current().and_then(expires)?;
                (expires < stop_window).then(|| {
                    format!(
                        "{} expires after {} unused, less than the expected stop window ({})",
                        r.name(),
                        format_duration(expires),
                        format_duration(stop_window)
                    )
                })
            });
        let shared = owned()
            .filter(|r| r.verdict() == Verdict::Recreate && *r.owner() == Owner::Shared)
            .map(|r| {
                format!(
                    "shared queue {} must be recreated: every consumer in both halves stops \
                     (critical window)",
                    r.name()
                )
            });
        holds
            .chain(target)
            .chain(short)
            .chain(shared)
            .chain(self.node_warnings())
            .chain(self.policy_warnings())
    }

    /// The broker's rules this diff was made with.
    pub fn rules(&self) -> Rules {
        self.rules
    }

    /// The cluster's nodes (`/api/nodes`): queues on a node that is down are warned about.
    pub fn set_nodes(&mut self, nodes: Vec<NodeState>) {
        self.nodes = nodes;
    }

    /// The cluster's nodes, as set.
    pub fn nodes(&self) -> &[NodeState] {
        &self.nodes
    }

    /// The definitions of the vhost's user policies, by name: the arguments they override
    /// are warned about.
    pub fn set_policies(&mut self, policies: BTreeMap<String, serde_json::Map<String, Value>>) {
        self.policies = policies;
    }

    /// True when the node is listed and not running (an unlisted node is not known down).
    fn down(&self, node: &str) -> bool {
        self.nodes.iter().any(|n| n.name == node && !n.running)
    }

    /// The fleet's queues on a node that is down: a classic queue whose node is not
    /// running (its messages are unavailable), a quorum queue without a leader, whose
    /// leader is down, or with members not online.
    fn node_warnings(&self) -> impl Iterator<Item = String> + '_ {
        self.owned().filter_map(move |r| {
            let current = r.current()?;
            let kind = current.queue_type();
            let node = r.node();
            match (kind, r.replicas()) {
                (QueueType::Classic, _) => {
                    let node = node?;
                    self.down(node).then(|| {
                        format!(
                            "classic queue {} is on node {node}, which is down: its messages are \
                             unavailable and it cannot be recreated until the node is back",
                            r.name()
                        )
                    })
                }
                (_, replicas) => {
                    let offline: Vec<&str> = replicas
                        .map(|x| {
                            x.members
                                .iter()
                                .filter(|m| !x.online.contains(m) || self.down(m))
                                .map(String::as_str)
                                .collect()
                        })
                        .unwrap_or_default();
                    let leader = match node {
                        None => Some("has no leader".to_string()),
                        Some(n) if self.down(n) => {
                            Some(format!("has its leader on {n}, which is down"))
                        }
                        Some(_) => None,
                    };
                    if leader.is_none() && offline.is_empty() {
                        return None;
                    }
                    let mut parts: Vec<String> = leader.into_iter().collect();
                    if let Some(x) = replicas.filter(|_| !offline.is_empty()) {
                        parts.push(format!(
                            "members not online: {} ({} of {} online)",
                            offline.join(", "),
                            x.members.len() - offline.len(),
                            x.members.len()
                        ));
                    }
                    Some(format!("{kind} queue {} {}", r.name(), parts.join("; ")))
                }
            }
        })
    }

    /// The fleet's queues whose own (or target) arguments a policy also sets: which value is
    /// in effect.
    fn policy_warnings(&self) -> impl Iterator<Item = String> + '_ {
        let rules = self.rules;
        self.owned().flat_map(move |r| {
            let mut out = Vec::new();
            let (Some(policy), Some(current)) = (r.policy(), r.current()) else {
                return out;
            };
            let Some(definition) = self.policies.get(policy) else {
                return out;
            };
            let kind = current.queue_type();
            let target = r.target();
            let keys = current
                .arguments
                .keys()
                .chain(target.into_iter().flat_map(|t| t.arguments.keys()));
            let mut seen = std::collections::BTreeSet::new();
            for argument in keys {
                if !seen.insert(argument) {
                    continue;
                }
                let Some(key) = policy_key_for(kind, argument) else {
                    continue;
                };
                let Some(by_policy) = definition.get(key) else {
                    continue;
                };
                let mut said = Vec::new();
                if let Some(value) = current.arguments.get(argument) {
                    let (effect, why) = rules.in_effect(kind, key, value, by_policy);
                    said.push(format!(
                        "its {argument} is {}: {} in effect ({why} on a {kind} queue)",
                        show(Some(value)),
                        show(Some(&effect))
                    ));
                }
                let target_value = target.and_then(|t| t.arguments.get(argument));
                if let Some(value) =
                    target_value.filter(|v| Some(*v) != current.arguments.get(argument))
                {
                    let kind = target.map_or(kind, QueueSettings::queue_type);
                    let (effect, why) = rules.in_effect(kind, key, value, by_policy);
                    said.push(format!(
                        "the target's {argument} is {}: {} would be in effect ({why} on a {kind} \
                         queue)",
                        show(Some(value)),
                        show(Some(&effect))
                    ));
                }
                out.push(format!(
                    "{}: policy {policy} sets {key}={}; {}",
                    r.name(),
                    show(Some(by_policy)),
                    said.join("; ")
                ));
            }
            out
        })
    }
}

impl Serialize for QueueDiff {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct Rows<'a>(&'a QueueDiff);
        impl Serialize for Rows<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_seq(self.0.rows())
            }
        }
        struct Warnings<'a>(&'a QueueDiff);
        impl Serialize for Warnings<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_seq(self.0.warnings())
            }
        }
        let mut s = serializer.serialize_struct("QueueDiff", 5)?;
        s.serialize_field("vhost", &self.vhost)?;
        s.serialize_field("half", &self.half)?;
        s.serialize_field("rows", &Rows(self))?;
        s.serialize_field("warnings", &Warnings(self))?;
        s.serialize_field("summary", &self.summary)?;
        s.end()
    }
}

/// One row of a [`QueueDiff`], read in place.
#[derive(Debug, Clone, Copy)]
pub struct RowRef<'a> {
    diff: &'a QueueDiff,
    row: &'a Row,
}

impl<'a> RowRef<'a> {
    pub fn name(&self) -> &'a str {
        &self.row.name
    }

    pub fn owner(&self) -> &'a Owner {
        self.diff
            .owners
            .get(self.row.owner as usize)
            .unwrap_or(&Owner::Foreign)
    }

    pub fn verdict(&self) -> Verdict {
        self.row.verdict
    }

    /// Its type now; a missing queue's is the target's.
    pub fn kind(&self) -> QueueType {
        self.current()
            .or(self.target())
            .map(QueueSettings::queue_type)
            .unwrap_or_default()
    }

    fn name_at(&self, i: u32) -> Option<&'a str> {
        self.diff.names.get(i as usize).map(|n| &**n)
    }

    /// A classic queue's node, a quorum queue's leader.
    pub fn node(&self) -> Option<&'a str> {
        self.name_at(self.row.node)
    }

    /// A replicated queue's members, and those online.
    pub fn replicas(&self) -> Option<&'a Replicas> {
        self.diff.replicas.get(self.row.replicas as usize)
    }

    /// The user policy that applies to it.
    pub fn policy(&self) -> Option<&'a str> {
        self.name_at(self.row.policy)
    }

    /// Messages in the queue now (0 when missing).
    pub fn messages(&self) -> u64 {
        self.row.messages
    }

    /// Of those, the ones a broker restart would lose; `None` when not counted.
    pub fn transient(&self) -> Option<u64> {
        (self.row.transient != UNCOUNTED).then_some(self.row.transient)
    }

    fn shape(&self) -> Option<&'a Shape> {
        self.diff.shapes.get(self.row.shape as usize)
    }

    /// Current settings; `None` when missing.
    pub fn current(&self) -> Option<&'a QueueSettings> {
        self.shape().map(|s| &s.settings)
    }

    /// Target settings; `None` for foreign queues.
    pub fn target(&self) -> Option<&'a QueueSettings> {
        (self.row.verdict != Verdict::Foreign).then_some(&self.diff.target)
    }

    /// How the current settings differ from the target (none for foreign and missing
    /// queues).
    pub fn differences(&self) -> &'a [Difference] {
        match self.shape() {
            Some(shape) if self.row.verdict != Verdict::Foreign => &shape.differences,
            _ => &[],
        }
    }

    /// A remark for the operator (a policy that could apply the difference, ...).
    pub fn note(&self) -> Option<String> {
        if self.row.shape == NONE {
            return Some("absent on the broker: the service declares it when it starts".into());
        }
        match self.row.verdict {
            Verdict::Outside => Some(format!(
                "changed when {} is upgraded",
                match self.owner() {
                    Owner::Host { half, .. } | Owner::Half { half } => format!("half {half}"),
                    _ => "the other half".to_string(),
                }
            )),
            Verdict::Recreate | Verdict::IgnoredByBroker => {
                policy_note(self.kind(), self.differences())
            }
            _ => None,
        }
    }

    /// The queue's bindings (none for foreign queues), in the broker's order.
    pub fn bindings(&self) -> &'a [u32] {
        let first = self.row.first_binding as usize;
        self.diff
            .bindings
            .get(first..first + self.row.binding_count as usize)
            .unwrap_or(&[])
    }

    /// The queue's bindings, as the broker lists them.
    pub fn each_binding(&self) -> impl Iterator<Item = &'a Binding> + use<'a> {
        let kinds = &self.diff.kinds;
        self.bindings()
            .iter()
            .filter_map(move |&k| kinds.get(k as usize))
    }

    /// The row, made whole.
    pub fn to_row(&self) -> QueueRow {
        QueueRow {
            name: self.name().to_string(),
            owner: self.owner().clone(),
            kind: self.kind(),
            node: self.node().map(str::to_string),
            policy: self.policy().map(str::to_string),
            verdict: self.verdict(),
            messages: self.messages(),
            transient: self.transient(),
            current: self.current().cloned(),
            target: self.target().cloned(),
            differences: self.differences().to_vec(),
            note: self.note(),
        }
    }
}

impl Serialize for RowRef<'_> {
    /// As [`QueueRow`] serialises, field by field, without making it.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("QueueRow", 12)?;
        s.serialize_field("name", self.name())?;
        s.serialize_field("owner", self.owner())?;
        s.serialize_field("type", &self.kind())?;
        s.serialize_field("node", &self.node())?;
        s.serialize_field("policy", &self.policy())?;
        s.serialize_field("verdict", &self.verdict())?;
        s.serialize_field("messages", &self.messages())?;
        s.serialize_field("transient", &self.transient())?;
        s.serialize_field("current", &self.current())?;
        s.serialize_field("target", &self.target())?;
        s.serialize_field("differences", self.differences())?;
        s.serialize_field("note", &self.note())?;
        s.end()
    }
}

/// The counts of the summary line.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    pub recreate: usize,
    pub ignored_by_broker: usize,
    pub missing: usize,
    pub unchanged: usize,
    pub outside: usize,
    pub foreign: usize,
    /// Messages held by the queues to recreate.
    pub messages_at_risk: u64,
    /// Shared queues to recreate: both halves stop consuming from them.
    pub critical_window: Vec<String>,
}

impl Summary {
    /// True when the release changes nothing on the broker.
    pub fn no_changes(&self) -> bool {
        self.recreate + self.ignored_by_broker + self.missing == 0
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = vec![format!("{} to recreate", self.recreate)];
        if self.ignored_by_broker > 0 {
            parts.push(format!(
                "{} ignored by the broker (recreate to apply)",
                self.ignored_by_broker
            ));
        }
        if self.missing > 0 {
            parts.push(format!("{} missing", self.missing));
        }
        parts.push(format!("{} unchanged", self.unchanged));
        if self.outside > 0 {
            parts.push(format!(
                "{} of the other half (not in this run)",
                self.outside
            ));
        }
        parts.push(format!("{} foreign (untouched)", self.foreign));
        let critical = if self.critical_window.is_empty() {
            "no".to_string()
        } else {
            format!(
                "yes (shared queue{} {})",
                if self.critical_window.len() > 1 {
                    "s"
                } else {
                    ""
                },
                self.critical_window.join(", ")
            )
        };
        write!(
            f,
            "Plan: {}; {} messages in queues to recreate; critical window: {critical}",
            parts.join(", "),
            self.messages_at_risk
        )
    }
}

/// Computes the diff of a list of queues (in any order); rows come sorted by verdict and
/// name.
pub fn diff(
    vhost: &str,
    half: Option<Half>,
    queues: impl IntoIterator<Item = LiveQueue>,
    claims: &Claims,
    target: &QueueSettings,
    stop_window: Duration,
) -> QueueDiff {
    let mut listing = Listing::new();
    for queue in queues {
        listing.queue(queue);
    }
    listing.finish(vhost, half, claims, target, stop_window)
}

/// The verdict on a queue of this owner whose settings differ from the target so.
fn verdict(owner: &Owner, half: Option<Half>, differences: &[Difference]) -> Verdict {
    if *owner == Owner::Foreign {
        Verdict::Foreign
    } else if !owner.in_scope(half) {
        Verdict::Outside
    } else if differences.iter().any(|d| d.checked) {
        Verdict::Recreate
    } else if !differences.is_empty() {
        Verdict::IgnoredByBroker
    } else {
        Verdict::Unchanged
    }
}

/// When every difference is an argument a policy can set, say so.
fn policy_note(kind: QueueType, differences: &[Difference]) -> Option<String> {
    let keys: Option<Vec<String>> = differences
        .iter()
        .map(|d| {
            let key = policy_key_for(kind, &d.setting)?;
            let value = d.target.as_ref()?;
            Some(format!("{key}={}", show(Some(value))))
        })
        .collect();
    keys.filter(|k| !k.is_empty()).map(|keys| {
        format!(
            "a policy ({}) could apply it without a recreate (a client declaring the new value \
             is still refused)",
            keys.join(", ")
        )
    })
}

fn expires(settings: &QueueSettings) -> Option<Duration> {
    settings
        .arguments
        .get("x-expires")
        .and_then(Value::as_u64)
        .map(Duration::from_millis)
}

/// The counts of rows sorted by verdict and name.
fn summarise(rows: &[Row], owners: &[Owner]) -> Summary {
    let mut s = Summary::default();
    for row in rows {
        match row.verdict {
            Verdict::Recreate => {
                s.recreate += 1;
                s.messages_at_risk += row.messages;
                if owners.get(row.owner as usize) == Some(&Owner::Shared) {
                    s.critical_window.push(row.name.to_string());
                }
            }
            Verdict::IgnoredByBroker => s.ignored_by_broker += 1,
            Verdict::Missing => s.missing += 1,
            Verdict::Unchanged => s.unchanged += 1,
            Verdict::Outside => s.outside += 1,
            Verdict::Foreign => s.foreign += 1,
        }
    }
    s
}

#[cfg(test)]
mod tests;
