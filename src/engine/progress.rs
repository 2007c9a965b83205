//! What the engine says as it goes, as data: one [`Progress`] per thing that happened to a
//! step. The engine never prints; whoever runs it gives a sink (the commands: the renderer's,
//! which writes lines on stderr; the unit tests: none).

use std::sync::Arc;
use std::time::Duration;

/// How often a step that takes long says that it still runs, and what it waits for.
pub const STILL_RUNNING_EVERY: Duration = Duration::from_secs(10);

/// One thing that happened to a step (or to the run) on a host, or on the broker.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// Seconds since the run began.
    pub elapsed: f64,
    pub host: String,
    /// The step's name (or what the run is doing: `failover`, `lock`, `moving`).
    pub step: String,
    pub state: State,
}

/// What happened.
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    /// It began; `deadline` is how long it may take, when the step has one.
    Started { deadline: Option<Duration> },
    /// It is still running after `seconds` (said every [`STILL_RUNNING_EVERY`]), within
    /// `deadline` when it has one; `doing` says what it waits for when the step does not
    /// (a move's count, the broker).
    Running {
        seconds: f64,
        deadline: Option<Duration>,
        doing: Option<String>,
    },
    /// The host is through with this run (`ok`: every step of it done).
    HostFinished { ok: bool },
    /// A move's count so far (said at most every [`crate::broker::mover::TELL_EVERY`];
    /// `done`: it ended).
    Moved {
        moved: u64,
        from: String,
        to: String,
        done: bool,
    },
    /// The journal shows it done: not done again.
    Skipped,
    /// It could not begin (the lock, the journal).
    NotStarted { why: String },
    /// Done, in `seconds`; `detail` says what it found or did (may be empty).
    Done { seconds: f64, detail: String },
    /// Done, but the journal could not record it: a resume does it again.
    NotRecorded { why: String },
    /// Failed (after `seconds`, when it ran).
    Failed { seconds: Option<f64>, why: String },
    /// It failed for want of the broker: the run waits for it.
    WaitingForBroker { why: String },
    /// The broker answers again: the step runs again. On a cluster, `through` names the
    /// nodes that answer (management API and AMQP).
    BrokerBack { through: Option<String> },
    /// The group's lock was taken again after a broker restart.
    LockRetaken { seconds: f64, reason: String },
    /// Messages are being moved between two queues.
    Moving {
        messages: u64,
        from: String,
        to: String,
    },
    /// Anything else worth a line (the failover's stages).
    Note(String),
}

/// Where the progress goes.
pub type Sink = Arc<dyn Fn(&Progress) + Send + Sync>;

/// A sink that drops everything.
pub fn silent() -> Sink {
    Arc::new(|_| {})
}
