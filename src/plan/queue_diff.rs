//! The queue diff: for every queue of a vhost, what a release will do to it, decided as the
//! broker decides (see [`crate::broker::equivalence`]).

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use serde::Serialize;
use serde::ser::SerializeStruct;
use serde_json::Value;

use super::ownership::{Claims, Owner};
use crate::broker::equivalence::{Difference, QueueSettings, differences, policy_key, show};
use crate::inventory::Half;
use crate::units::format_duration;

/// What will happen to a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, PartialOrd, Ord)]
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
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A queue as the broker shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LiveQueue {
    pub name: String,
    pub settings: QueueSettings,
    pub exclusive: bool,
    pub messages: u64,
    /// Messages that do not survive a broker restart (not persistent, in a classic queue).
    pub transient: u64,
    pub consumers: u64,
}

/// One row of the diff.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueueRow {
    pub name: String,
    pub owner: Owner,
    pub verdict: Verdict,
    /// Messages in the queue now (0 when missing).
    pub messages: u64,
    /// Of those, the ones a broker restart would lose (not persistent, in a classic queue).
    pub transient: u64,
    /// Current settings; `None` when missing.
    pub current: Option<QueueSettings>,
    /// Target settings; `None` for foreign queues.
    pub target: Option<QueueSettings>,
    pub differences: Vec<Difference>,
    /// A remark for the operator (a policy that could apply the difference, ...).
    pub note: Option<String>,
}

/// A queue that is not ours, as little of it as its row shows: it is never touched, so
/// nothing else is kept (a vhost may hold many more of these than the fleet owns).
#[derive(Debug, Clone, PartialEq)]
pub struct ForeignQueue {
    pub name: String,
    pub messages: u64,
    pub transient: u64,
    pub settings: QueueSettings,
}

impl ForeignQueue {
    /// Its row of the diff.
    pub fn row(&self) -> QueueRow {
        QueueRow {
            name: self.name.clone(),
            owner: Owner::Foreign,
            verdict: Verdict::Foreign,
            messages: self.messages,
            transient: self.transient,
            current: Some(self.settings.clone()),
            target: None,
            differences: vec![],
            note: None,
        }
    }
}

/// The whole diff: rows, warnings and counts.
///
/// Serialised as one list of `rows` (the owned rows, then the foreign ones, each sorted as
/// [`QueueDiff::all_rows`] gives them).
#[derive(Debug, Clone)]
pub struct QueueDiff {
    pub vhost: String,
    /// The half the run is about; `None` for the whole group.
    pub half: Option<Half>,
    /// The rows of the queues the fleet owns (every verdict but foreign), sorted by verdict
    /// and name.
    pub rows: Vec<QueueRow>,
    /// The foreign queues, sorted by name: they come after every owned row.
    pub foreign: Vec<ForeignQueue>,
    pub warnings: Vec<String>,
    pub summary: Summary,
}

impl QueueDiff {
    /// Every row, owned and foreign, sorted by verdict and name; a foreign row is made when
    /// it is asked for.
    pub fn all_rows(&self) -> impl Iterator<Item = Cow<'_, QueueRow>> {
        self.rows
            .iter()
            .map(Cow::Borrowed)
            .chain(self.foreign.iter().map(|f| Cow::Owned(f.row())))
    }
}

impl Serialize for QueueDiff {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct Rows<'a>(&'a QueueDiff);
        impl Serialize for Rows<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_seq(self.0.all_rows())
            }
        }
        let mut s = serializer.serialize_struct("QueueDiff", 5)?;
        s.serialize_field("vhost", &self.vhost)?;
        s.serialize_field("half", &self.half)?;
        s.serialize_field("rows", &Rows(self))?;
        s.serialize_field("warnings", &self.warnings)?;
        s.serialize_field("summary", &self.summary)?;
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

/// Computes the diff. `queues` may come in any order; rows come sorted by verdict and name.
pub fn diff(
    vhost: &str,
    half: Option<Half>,
    queues: impl IntoIterator<Item = LiveQueue>,
    claims: &Claims,
    target: &QueueSettings,
    stop_window: Duration,
) -> QueueDiff {
    let mut classifier = Classifier::new(half, claims, target);
    for queue in queues {
        classifier.push(queue);
    }
    classifier.finish(vhost, stop_window)
}

/// The diff made one queue at a time, as a listing arrives: each queue is classified when it
/// is pushed, an owned one kept as its row, a foreign one as the little its row shows
/// ([`ForeignQueue`]). No table of every queue is kept: not even their names (a missing
/// queue is an expected owned one without a row).
#[derive(Debug)]
pub struct Classifier<'a> {
    half: Option<Half>,
    claims: &'a Claims,
    target: &'a QueueSettings,
    rows: Vec<QueueRow>,
    foreign: Vec<ForeignQueue>,
}

impl<'a> Classifier<'a> {
    pub fn new(half: Option<Half>, claims: &'a Claims, target: &'a QueueSettings) -> Self {
        Classifier {
            half,
            claims,
            target,
            rows: Vec::new(),
            foreign: Vec::new(),
        }
    }

    /// Classifies one queue of the broker.
    pub fn push(&mut self, queue: LiveQueue) {
        let owner = self.claims.owner(&queue.name);
        if owner == Owner::Foreign {
            self.foreign.push(ForeignQueue {
                name: queue.name,
                messages: queue.messages,
                transient: queue.transient,
                settings: queue.settings,
            });
        } else {
            self.rows
                .push(row_for(queue, owner, self.half, self.target));
        }
    }

    /// The diff of the queues pushed: with the expected queues that were not, sorted.
    pub fn finish(self, vhost: &str, stop_window: Duration) -> QueueDiff {
        let Classifier {
            half,
            claims,
            target,
            mut rows,
            mut foreign,
        } = self;
        let seen: BTreeSet<String> = rows.iter().map(|r| r.name.clone()).collect();
        for name in claims.expected() {
            if seen.contains(&name) {
                continue;
            }
            let owner = claims.owner(&name);
            if owner == Owner::Foreign {
                continue;
            }
            let verdict = if owner.in_scope(half) {
                Verdict::Missing
            } else {
                Verdict::Outside
            };
            rows.push(QueueRow {
                name,
                owner,
                verdict,
                messages: 0,
                transient: 0,
                current: None,
                target: Some(target.clone()),
                differences: vec![],
                note: Some("absent on the broker: the service declares it when it starts".into()),
            });
        }
        rows.sort_by(|a, b| (a.verdict, &a.name).cmp(&(b.verdict, &b.name)));
        foreign.sort_by(|a, b| a.name.cmp(&b.name));
        let warnings = warnings(&rows, target, stop_window);
        let mut summary = summarise(&rows);
        summary.foreign = foreign.len();
        QueueDiff {
            vhost: vhost.to_string(),
            half,
            rows,
            foreign,
            warnings,
            summary,
        }
    }
}

fn row_for(queue: LiveQueue, owner: Owner, half: Option<Half>, target: &QueueSettings) -> QueueRow {
    if owner == Owner::Foreign {
        return QueueRow {
            name: queue.name,
            owner,
            verdict: Verdict::Foreign,
            messages: queue.messages,
            transient: queue.transient,
            current: Some(queue.settings),
            target: None,
            differences: vec![],
            note: None,
        };
    }
    let differences = differences(&queue.settings, target);
    let verdict = if !owner.in_scope(half) {
        Verdict::Outside
    } else if differences.iter().any(|d| d.checked) {
        Verdict::Recreate
    } else if !differences.is_empty() {
        Verdict::IgnoredByBroker
    } else {
        Verdict::Unchanged
    };
    let note = match verdict {
        Verdict::Outside => Some(format!(
            "changed when {} is upgraded",
            match &owner {
                Owner::Host { half, .. } | Owner::Half { half } => format!("half {half}"),
                _ => "the other half".to_string(),
            }
        )),
        Verdict::Recreate | Verdict::IgnoredByBroker => policy_note(&differences),
        _ => None,
    };
    QueueRow {
        name: queue.name,
        owner,
        verdict,
        messages: queue.messages,
        transient: queue.transient,
        current: Some(queue.settings),
        target: Some(target.clone()),
        differences,
        note,
    }
}

/// When every difference is an argument a policy can set, say so.
fn policy_note(differences: &[Difference]) -> Option<String> {
    let keys: Option<Vec<String>> = differences
        .iter()
        .map(|d| {
            let key = policy_key(&d.setting)?;
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

fn warnings(rows: &[QueueRow], target: &QueueSettings, stop_window: Duration) -> Vec<String> {
    let mut out = Vec::new();
    for row in rows.iter().filter(|r| r.verdict == Verdict::Recreate) {
        if row.messages > 0 {
            out.push(format!(
                "{} holds {} message{}: a recreate that does not move them loses them",
                row.name,
                row.messages,
                if row.messages == 1 { "" } else { "s" }
            ));
        }
    }
    if let Some(expires) = expires(target)
        && expires < stop_window
    {
        out.push(format!(
            "the target x-expires ({}) is shorter than the expected stop window ({}): \
             queues may expire, with their messages, while their consumers are stopped",
            format_duration(expires),
            format_duration(stop_window)
        ));
    }
    for row in rows
        .iter()
        .filter(|r| r.verdict.is_change() || r.verdict == Verdict::Unchanged)
    {
        if let Some(expires) = row.current.as_ref().and_then(expires)
            && expires < stop_window
        {
            out.push(format!(
                "{} expires after {} unused, less than the expected stop window ({})",
                row.name,
                format_duration(expires),
                format_duration(stop_window)
            ));
        }
    }
    for row in rows
        .iter()
        .filter(|r| r.verdict == Verdict::Recreate && r.owner == Owner::Shared)
    {
        out.push(format!(
            "shared queue {} must be recreated: every consumer in both halves stops \
             (critical window)",
            row.name
        ));
    }
    out
}

fn summarise(rows: &[QueueRow]) -> Summary {
    let mut s = Summary::default();
    for row in rows {
        match row.verdict {
            Verdict::Recreate => {
                s.recreate += 1;
                s.messages_at_risk += row.messages;
                if row.owner == Owner::Shared {
                    s.critical_window.push(row.name.clone());
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
