//! The steps of every run, typed: the plan lists them, the engine executes them, the journal
//! records them, timing and rollback planning read them back.
//!
//! A step is journaled as its name (`recreate q.pump.px5`, `stop (failover)`): [`Step`]'s
//! `Display` writes it and its `FromStr` reads it back, so the journal's text stays the same
//! and no module matches on the text itself.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One step of a run, on a host or on the group's broker.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Step {
    /// Copy the release's artifacts to a host and check them there (before any host stops).
    Artifacts,
    // A host of the upgraded half, while its service still runs.
    /// Save the installed version, the files the release replaces and the host's queues.
    Backup,
    /// Install the release.
    Upgrade,
    /// Write the release's files beside their destinations.
    StageFiles,
    /// Route a queue's messages to its holding queue.
    Hold(String),
    // Stopped.
    Stop,
    VerifyStopped,
    /// Delete and declare a queue with the target settings (its messages kept).
    Recreate(String),
    /// Put the staged files in place.
    Deploy,
    /// Make the service forget its saved queue settings.
    ResetQueueState,
    // Started again.
    Start,
    /// Move a queue's held messages back.
    Release(String),
    /// The host runs the release, connected, on its queues.
    Verify,
    /// The wave's gate on this host: the playbook's gate command, its queues caught up.
    Gate,

    // Between waves (on the broker).
    /// The gates of a wave's hosts keep passing for the soak time (`min_healthy`).
    Soak(usize),
    /// The run ends here, paused (`roll resume` continues with the next wave).
    Pause(usize),

    // The group's broker.
    /// Save a shared queue's definition, bindings and message count.
    BackUp(String),
    /// A shared queue is there with the target settings and its bindings.
    VerifyQueue(String),

    // A critical window: the other half, and the failover after a failure in it.
    StopFailover,
    VerifyStoppedFailover,
    StartFailover,
    FailoverHold(String),
    /// Put a queue back as its backup says.
    Restore(String),
    FailoverRelease(String),

    // A rollback.
    RollbackStop,
    RollbackVerifyStopped,
    RollbackHold(String),
    RollbackRestore(String),
    FailoverStart,
    RollbackRelease(String),
    SwapPair(String),
    Reinstall,
    RestoreFiles,
    RollbackResetQueueState,
    StartAgain,
    VerifyAgain,

    /// A name this version of roll does not know (a journal written by another version): kept
    /// as it is, never executed.
    Other(String),
}

/// The steps that take no argument, with their names.
const FIXED: [(&str, Step); 22] = [
    ("artifacts", Step::Artifacts),
    ("backup", Step::Backup),
    ("upgrade", Step::Upgrade),
    ("stage files", Step::StageFiles),
    ("stop", Step::Stop),
    ("verify stopped", Step::VerifyStopped),
    ("deploy", Step::Deploy),
    ("reset queue state", Step::ResetQueueState),
    ("start", Step::Start),
    ("verify", Step::Verify),
    ("gate", Step::Gate),
    ("stop (failover)", Step::StopFailover),
    ("verify stopped (failover)", Step::VerifyStoppedFailover),
    ("start (failover)", Step::StartFailover),
    ("rollback stop", Step::RollbackStop),
    ("rollback verify stopped", Step::RollbackVerifyStopped),
    ("failover start", Step::FailoverStart),
    ("reinstall", Step::Reinstall),
    ("restore files", Step::RestoreFiles),
    ("rollback reset queue state", Step::RollbackResetQueueState),
    ("start again", Step::StartAgain),
    ("verify again", Step::VerifyAgain),
];

/// Makes a step about a queue (or a pair).
type MakeStep = fn(String) -> Step;

/// The steps about one queue (or pair), by the prefix of their names. Longer prefixes first:
/// `failover hold q` is not `hold` of a queue named `failover …`.
const ABOUT: [(&str, MakeStep); 12] = [
    ("failover hold ", Step::FailoverHold),
    ("failover release ", Step::FailoverRelease),
    ("rollback hold ", Step::RollbackHold),
    ("rollback restore ", Step::RollbackRestore),
    ("rollback release ", Step::RollbackRelease),
    ("swap pair ", Step::SwapPair),
    ("back up ", Step::BackUp),
    ("hold ", Step::Hold),
    ("recreate ", Step::Recreate),
    ("release ", Step::Release),
    ("restore ", Step::Restore),
    ("verify ", Step::VerifyQueue),
];

impl Step {
    /// The queue the step is about, for the steps that move a queue's messages (hold,
    /// recreate, release, restore, in any run): a process killed inside one may have left a
    /// batch on two queues.
    pub fn moved_queue(&self) -> Option<&str> {
        match self {
            Step::Hold(q)
            | Step::Recreate(q)
            | Step::Release(q)
            | Step::Restore(q)
            | Step::FailoverHold(q)
            | Step::FailoverRelease(q)
            | Step::RollbackHold(q)
            | Step::RollbackRestore(q)
            | Step::RollbackRelease(q) => Some(q),
            _ => None,
        }
    }

    /// A step that starts a service: its detail is the log sizes noted just before it, where
    /// its verification reads from.
    pub fn starts(&self) -> bool {
        matches!(self, Step::Start | Step::StartAgain)
    }

    /// A pseudo-step naming where a failure outside any step happened.
    pub fn other(name: &str) -> Step {
        Step::Other(name.to_string())
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (prefix, arg) = match self {
            Step::Other(name) => return f.write_str(name),
            Step::Hold(q) => ("hold ", q),
            Step::Recreate(q) => ("recreate ", q),
            Step::Release(q) => ("release ", q),
            Step::BackUp(q) => ("back up ", q),
            Step::VerifyQueue(q) => ("verify ", q),
            Step::FailoverHold(q) => ("failover hold ", q),
            Step::Restore(q) => ("restore ", q),
            Step::FailoverRelease(q) => ("failover release ", q),
            Step::RollbackHold(q) => ("rollback hold ", q),
            Step::RollbackRestore(q) => ("rollback restore ", q),
            Step::RollbackRelease(q) => ("rollback release ", q),
            Step::SwapPair(p) => ("swap pair ", p),
            Step::Soak(wave) => return write!(f, "soak wave {wave}"),
            Step::Pause(wave) => return write!(f, "pause after wave {wave}"),
            fixed => {
                let name = FIXED.iter().find(|(_, s)| s == fixed).map(|(n, _)| *n);
                return f.write_str(name.unwrap_or("?"));
            }
        };
        write!(f, "{prefix}{arg}")
    }
}

impl FromStr for Step {
    type Err = std::convert::Infallible;

    /// Every name parses: a name roll does not know is [`Step::Other`].
    fn from_str(name: &str) -> Result<Step, Self::Err> {
        if let Some((_, step)) = FIXED.iter().find(|(n, _)| *n == name) {
            return Ok(step.clone());
        }
        let wave = |prefix: &str| name.strip_prefix(prefix).and_then(|n| n.parse().ok());
        if let Some(n) = wave("soak wave ") {
            return Ok(Step::Soak(n));
        }
        if let Some(n) = wave("pause after wave ") {
            return Ok(Step::Pause(n));
        }
        let about = ABOUT.iter().find_map(|(prefix, make)| {
            name.strip_prefix(prefix)
                .filter(|arg| !arg.is_empty())
                .map(|arg| make(arg.to_string()))
        });
        Ok(about.unwrap_or_else(|| Step::other(name)))
    }
}

impl From<&str> for Step {
    fn from(name: &str) -> Step {
        match name.parse() {
            Ok(step) => step,
            Err(never) => match never {},
        }
    }
}

impl Serialize for Step {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Step {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Step, D::Error> {
        let name = String::deserialize(deserializer)?;
        Ok(Step::from(name.as_str()))
    }
}

/// Steps written as a list, for people: `stop, verify stopped, recreate q`.
pub fn list(steps: &[Step]) -> String {
    if steps.is_empty() {
        return "nothing".into();
    }
    steps
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_step_reads_back_as_itself() {
        let q = || "q.pump.px5".to_string();
        let mut all: Vec<Step> = FIXED.iter().map(|(_, s)| s.clone()).collect();
        all.extend(ABOUT.iter().map(|(_, make)| make(q())));
        all.push(Step::other("schedule"));
        all.extend([Step::Soak(2), Step::Pause(1), Step::Pause(12)]);
        for step in all {
            let name = step.to_string();
            assert_eq!(Step::from(name.as_str()), step, "{name}");
            let json = serde_json::to_string(&step).unwrap();
            assert_eq!(json, format!("\"{name}\""));
            assert_eq!(serde_json::from_str::<Step>(&json).unwrap(), step);
        }
    }

    #[test]
    fn names_read_as_the_journal_writes_them() {
        assert_eq!(Step::from("verify stopped"), Step::VerifyStopped);
        assert_eq!(Step::from("verify q.a"), Step::VerifyQueue("q.a".into()));
        assert_eq!(Step::from("restore files"), Step::RestoreFiles);
        assert_eq!(Step::from("restore q.a"), Step::Restore("q.a".into()));
        assert_eq!(
            Step::from("failover hold q.a"),
            Step::FailoverHold("q.a".into())
        );
        assert_eq!(
            Step::from("rollback release q.a"),
            Step::RollbackRelease("q.a".into())
        );
        assert_eq!(Step::from("stop (failover)"), Step::StopFailover);
        assert_eq!(Step::from("artifacts"), Step::Artifacts);
        assert_eq!(Step::Artifacts.to_string(), "artifacts");
        assert_eq!(Step::from("something new"), Step::other("something new"));
        assert_eq!(Step::from("recreate "), Step::other("recreate "));
        assert_eq!(Step::from("pause after wave 1"), Step::Pause(1));
        assert_eq!(Step::from("soak wave x"), Step::other("soak wave x"));
    }

    #[test]
    fn the_steps_that_move_messages_name_their_queue() {
        assert_eq!(Step::from("recreate q.a").moved_queue(), Some("q.a"));
        assert_eq!(Step::from("failover hold q.a").moved_queue(), Some("q.a"));
        assert_eq!(
            Step::from("rollback release q.a").moved_queue(),
            Some("q.a")
        );
        assert_eq!(Step::from("verify q.a").moved_queue(), None);
        assert_eq!(Step::Stop.moved_queue(), None);
        assert!(Step::Start.starts() && Step::StartAgain.starts() && !Step::Stop.starts());
    }
}
