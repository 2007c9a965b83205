//! The engine: executes an approved plan step by step, journaling the start and end of every
//! step (with its full output) and every backup before the thing it saves is changed. Every
//! step is safe to run again, and steps the journal shows as done are skipped, so an
//! interrupted run is resumed by executing the same plan again.
//!
//! This module is the runner (the journal, what is done, the lease, waits for the broker,
//! the fan-out over hosts, progress); `upgrade` and `rollback` interpret their plans on it,
//! each with its own order and failure policy; `actions` is the one seam with the world,
//! which the unit tests (`tests`) replace with a fake. The engine reads the plan and nothing
//! else: every command and file it runs is in the plan's rendered release.

mod actions;
mod artifacts;
mod files;
mod preserve;
mod progress;
mod rollback;
#[cfg(test)]
mod tests;
pub mod timing;
mod upgrade;
mod verify;
mod waves;
mod work;

pub use actions::{Act, Actions, Up, World};
pub use progress::{Progress, Sink, State};
pub use rollback::RollbackOutcome;
pub use timing::measured_stops;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, Semaphore};
use tokio::task::JoinSet;

use crate::broker::management::Management;
use crate::inventory::{Group, Secret};
use crate::journal::RunKind;
use crate::journal::{Backup, Entry, Event, Journal, QueueAccount, RunStatus};
use crate::lock::{Lease, Lock};
use crate::plan::rendered::{HostRelease, Rendered};
use crate::plan::rollback::RollbackPlan;
use crate::plan::upgrade::UpgradePlan;
use crate::remote::{self, Connection};
use crate::step::Step;

/// The pseudo-host of steps done on the broker for the whole group.
pub const BROKER: &str = "broker";

/// What kind of failure stopped a step: it decides what the run does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cause {
    /// The broker refused a request.
    Broker,
    /// The broker did not answer (a restart, a cut connection) for longer than the
    /// inventory's `reconnect_deadline`.
    BrokerUnavailable,
    /// A host could not be reached, or a command on it could not run or timed out.
    Host,
    /// A command or a check on a host failed (an exit code, a verification).
    Check,
    /// The journal could not be written: nothing more is done.
    Journal,
    /// The group's lock was lost: nothing more is done.
    Lock,
}

/// A step that failed: where, what, and the output that shows why.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub host: String,
    pub step: Step,
    pub cause: Cause,
    pub detail: String,
    pub output: Option<String>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} failed at step {}: {}",
            self.host, self.step, self.detail
        )
    }
}

/// What a step reports when it succeeds.
#[derive(Debug, Default)]
pub struct Done {
    pub detail: String,
    pub output: Option<String>,
}

impl Done {
    fn new(detail: impl Into<String>) -> Done {
        Done {
            detail: detail.into(),
            output: None,
        }
    }
}

/// A step's failure before it is tied to a host and step.
#[derive(Debug)]
pub struct StepError {
    pub cause: Cause,
    pub detail: String,
    pub output: Option<String>,
}

impl StepError {
    fn new(cause: Cause, detail: impl Into<String>) -> StepError {
        StepError {
            cause,
            detail: detail.into(),
            output: None,
        }
    }
}

impl From<String> for StepError {
    /// A failed check: the message says what was found.
    fn from(detail: String) -> StepError {
        StepError::new(Cause::Check, detail)
    }
}

impl From<&str> for StepError {
    fn from(detail: &str) -> StepError {
        StepError::new(Cause::Check, detail)
    }
}

impl From<crate::broker::BrokerError> for StepError {
    fn from(err: crate::broker::BrokerError) -> StepError {
        let cause = if err.is_transient() {
            Cause::BrokerUnavailable
        } else {
            Cause::Broker
        };
        StepError::new(cause, err.to_string())
    }
}

impl From<crate::remote::RemoteError> for StepError {
    fn from(err: crate::remote::RemoteError) -> StepError {
        StepError::new(Cause::Host, err.to_string())
    }
}

impl From<crate::journal::JournalError> for StepError {
    fn from(err: crate::journal::JournalError) -> StepError {
        StepError::new(Cause::Journal, err.to_string())
    }
}

impl From<crate::lock::LockError> for StepError {
    fn from(err: crate::lock::LockError) -> StepError {
        StepError::new(Cause::Lock, err.to_string())
    }
}

/// The outcome of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub status: RunStatus,
    /// Hosts whose every step is done.
    pub completed: Vec<String>,
    pub failure: Option<Failure>,
    /// Failures the run went past (`--max-failures`): those hosts are not done.
    pub failures: Vec<Failure>,
    /// What happened to the messages of each queue recreated.
    pub queues: Vec<QueueAccount>,
    /// Two phases: from the first stop of a consumer of the half's queues to the first start
    /// of a new one; one phase: the longest time a host was stopped.
    pub critical_window_seconds: Option<f64>,
    /// What the services themselves take of it: the slowest stop plus the first start (one
    /// phase: that host's stop plus its start). The rest is roll's, and the broker's.
    pub critical_window_floor_seconds: Option<f64>,
    /// How long the broker did not answer within the window (a restart the run waited out;
    /// in the fault tests, also the time a failpoint held the run while the broker was taken
    /// down).
    pub broker_unavailable_seconds: f64,
    /// The longest time any queue of the run was without a consumer, and that queue: from
    /// the stop of its consumers to the start of its first new one.
    pub longest_without_consumer: Option<QueueOutage>,
    pub elapsed_seconds: f64,
    /// Where the full record is.
    pub journal: String,
}

/// A queue, and how long it was without a consumer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueueOutage {
    pub queue: String,
    pub seconds: f64,
}

impl QueueOutage {
    /// The longest outage of these accounts.
    pub fn longest(accounts: &[QueueAccount]) -> Option<QueueOutage> {
        accounts
            .iter()
            .filter_map(|a| {
                a.without_consumer_seconds.map(|seconds| QueueOutage {
                    queue: a.queue.clone(),
                    seconds,
                })
            })
            .max_by(|a, b| a.seconds.total_cmp(&b.seconds))
    }
}

/// Runs a plan (an upgrade's or a rollback's).
pub struct Engine<P> {
    group: Group,
    plan: P,
    management: Management,
    journal: Mutex<Journal>,
    connections: BTreeMap<String, Connection>,
    /// (host, step) pairs done, by this run or before it (the journal): skipped.
    done: std::sync::Mutex<BTreeSet<(String, Step)>>,
    /// (host, step) pairs begun, by this run or before it.
    begun: std::sync::Mutex<BTreeSet<(String, Step)>>,
    /// Messages that may be on two queues, by queue: a process was killed in the middle of
    /// a step that moves them (at most the mover's window each time).
    interrupted: BTreeMap<String, u64>,
    /// Backups already in the journal (a resume must not back up the changed state).
    backups: Mutex<Vec<(String, Backup)>>,
    /// Log sizes recorded before each start, by host.
    log_offsets: Mutex<BTreeMap<String, String>>,
    started: Instant,
    stopping: AtomicBool,
    /// The broker password (for the AMQP connection that moves messages).
    password: Secret,
    amqp: Mutex<Option<Arc<lapin::Connection>>>,
    /// Moves journaled, by this process or before it.
    moves: Mutex<Vec<preserve::MoveRecord>>,
    /// Messages a failed move left on both queues, by (from, to): the next move between them
    /// does not store them again.
    on_both: Mutex<BTreeMap<(String, String), crate::broker::mover::OnBoth>>,
    /// Queues deleted with their messages: (by, queue, messages).
    drops: Mutex<Vec<(crate::journal::RunKind, String, u64)>>,
    /// The group's lock, confirmed before every step (none in unit tests).
    lock: Option<Arc<Lock>>,
    /// What the steps do to the world.
    actions: Arc<dyn Actions<P>>,
    /// Where the engine says what it does.
    sink: Sink,
    /// Failures the run went past (`--max-failures`).
    tolerated: std::sync::Mutex<Vec<Failure>>,
    /// How often a long step, a move or a wait for the broker says that it still runs
    /// ([`progress::STILL_RUNNING_EVERY`]; shorter in the unit tests).
    still_running_every: Duration,
}

/// What an engine is made of: the group, the approved plan and its release, the broker,
/// the journal, and the hosts already connected.
pub struct Parts<P> {
    pub group: Group,
    pub plan: P,
    pub management: Management,
    /// The broker password (for the AMQP connection that moves messages).
    pub password: Secret,
    pub journal: Journal,
    pub connections: BTreeMap<String, Connection>,
}

/// What the journal's earlier entries say is done, begun, saved and moved (a resume).
#[derive(Default)]
struct Recovered {
    done: BTreeSet<(String, Step)>,
    begun: BTreeSet<(String, Step)>,
    interrupted: BTreeMap<String, u64>,
    backups: Vec<(String, Backup)>,
    offsets: BTreeMap<String, String>,
    moves: Vec<preserve::MoveRecord>,
    drops: Vec<(crate::journal::RunKind, String, u64)>,
    /// Steps begun and not finished, since the last resume.
    open: BTreeSet<Step>,
}

impl Recovered {
    fn from(earlier: &[Entry]) -> Recovered {
        let mut r = Recovered::default();
        for entry in earlier {
            r.read(&entry.event);
        }
        r
    }

    fn read(&mut self, event: &Event) {
        match event {
            Event::StepFinished {
                host,
                step,
                ok,
                detail,
                ..
            } => {
                self.open.remove(step);
                if *ok {
                    self.done.insert((host.clone(), step.clone()));
                    if step.starts() {
                        self.offsets.insert(host.clone(), detail.clone());
                    }
                }
            }
            Event::StepStarted { host, step } => {
                self.begun.insert((host.clone(), step.clone()));
                self.open.insert(step.clone());
            }
            Event::Resumed { .. } => {
                // A step the killed process was in the middle of: a move in it may have left
                // its messages in flight on both queues.
                for step in std::mem::take(&mut self.open) {
                    if let Some(queue) = step.moved_queue() {
                        *self.interrupted.entry(queue.to_string()).or_insert(0) +=
                            u64::from(crate::broker::mover::WINDOW);
                    }
                }
            }
            Event::Undone { host, step, .. } => {
                self.done.remove(&(host.clone(), step.clone()));
            }
            Event::Backup { host, item } => self.backups.push((host.clone(), item.clone())),
            Event::Moved { .. } => {
                if let Some(record) = preserve::MoveRecord::of(event) {
                    self.moves.push(record);
                }
            }
            Event::Dropped {
                by,
                queue,
                messages,
            } => self.drops.push((*by, queue.clone(), *messages)),
            _ => {}
        }
    }
}

impl<P: Planned> Engine<P> {
    /// An engine for a plan. `earlier` holds the journal's entries when resuming (empty for
    /// a new run).
    pub fn new(parts: Parts<P>, earlier: &[Entry]) -> Engine<P> {
        let r = Recovered::from(earlier);
        Engine {
            group: parts.group,
            plan: parts.plan,
            management: parts.management,
            journal: Mutex::new(parts.journal),
            connections: parts.connections,
            done: std::sync::Mutex::new(r.done),
            begun: std::sync::Mutex::new(r.begun),
            interrupted: r.interrupted,
            backups: Mutex::new(r.backups),
            log_offsets: Mutex::new(r.offsets),
            started: Instant::now(),
            stopping: AtomicBool::new(false),
            password: parts.password,
            amqp: Mutex::new(None),
            moves: Mutex::new(r.moves),
            drops: Mutex::new(r.drops),
            on_both: Mutex::new(BTreeMap::new()),
            lock: None,
            actions: Arc::new(actions::Idle),
            sink: progress::silent(),
            tolerated: std::sync::Mutex::new(vec![]),
            still_running_every: progress::STILL_RUNNING_EVERY,
        }
    }

    /// Messages are kept: as the plan says.
    fn preserving(&self) -> bool {
        self.plan.preserves_messages()
    }

    /// The engine telling `sink` what it does as it goes.
    pub fn with_progress(mut self, sink: Sink) -> Engine<P> {
        self.sink = sink;
        self
    }

    /// The engine doing its steps with other actions (the unit tests' fakes).
    pub fn with_actions(mut self, actions: Arc<dyn Actions<P>>) -> Engine<P> {
        self.actions = actions;
        self
    }

    /// The engine holding the group's lock: every step confirms it first.
    pub fn with_lock(mut self, lock: Arc<Lock>) -> Engine<P> {
        self.lock = Some(lock);
        self
    }

    /// The SSH connections, to close them after the run.
    pub fn into_connections(self) -> BTreeMap<String, Connection> {
        self.connections
    }

    fn connection(&self, name: &str) -> Result<&Connection, StepError> {
        self.connections
            .get(name)
            .ok_or_else(|| StepError::from(format!("no connection to {name}")))
    }

    /// A host's commands and files, as approved.
    fn commands_of(&self, name: &str) -> Result<&HostRelease, StepError> {
        self.plan
            .rendered()
            .hosts
            .get(name)
            .ok_or_else(|| StepError::from(format!("the plan has no release for {name}")))
    }

    /// Runs one of the release's commands on a host; a non-zero exit is a failure.
    async fn command(
        &self,
        host: &str,
        label: &str,
        script: &str,
    ) -> Result<remote::Output, StepError> {
        let output = self.command_any_exit(host, label, script).await?;
        succeeded(label, output)
    }

    /// Runs several of the release's commands on a host in one session, one after the
    /// other, each as [`Engine::command`] would run it alone (a non-zero exit is its
    /// failure, and does not stop the next).
    async fn commands(
        &self,
        host: &str,
        scripts: &[(&str, &str)],
    ) -> Result<Vec<Result<remote::Output, StepError>>, StepError> {
        let ran = self
            .connection(host)?
            .run_each(scripts, self.plan.rendered().command_timeout)
            .await;
        Ok(scripts
            .iter()
            .zip(ran)
            .map(|((label, _), output)| succeeded(label, output?))
            .collect())
    }

    /// Runs one of the release's commands on a host whatever its exit code.
    async fn command_any_exit(
        &self,
        host: &str,
        label: &str,
        script: &str,
    ) -> Result<remote::Output, StepError> {
        Ok(self
            .connection(host)?
            .run(label, script, self.plan.rendered().command_timeout)
            .await?)
    }

    /// Runs one step: skipped when the journal shows it done, else journaled around `work`.
    /// Before it starts, the run confirms it still holds the group's lock. A step that fails
    /// because the broker does not answer is tried again once the broker is back (every step
    /// is safe to run again), until the broker's `reconnect_deadline`.
    async fn step<F, Fut>(&self, host: &str, step: &Step, work: F) -> Result<(), Failure>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<Done, StepError>>,
    {
        if self.is_done(host, step) {
            self.progress(host, step, State::Skipped);
            return Ok(());
        }
        // The first time this step failed for want of the broker: the deadline runs from
        // there, however often the broker answers again in between (one that answers its
        // health check but fails every step must not keep the run going for ever).
        let mut first_outage: Option<Instant> = None;
        let mut retries: u32 = 0;
        loop {
            if let Err(err) = self.begin(host, step).await {
                self.not_started(host, step, &err);
                return Err(failure(host, step, err));
            }
            let began = Instant::now();
            let deadline = self.deadline_of(host, step);
            self.progress(host, step, State::Started { deadline });
            // A long step says every so often that it still runs, and its deadline.
            let work = work();
            tokio::pin!(work);
            let every = self.still_running_every;
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            let result = loop {
                tokio::select! {
                    result = &mut work => break result,
                    _ = tick.tick() => {
                        let seconds = began.elapsed().as_secs_f64();
                        let running = State::Running { seconds, deadline, doing: None };
                        self.progress(host, step, running);
                    }
                }
            };
            let seconds = began.elapsed().as_secs_f64();
            let err = match result {
                Ok(done) => return self.step_done(host, step, done, seconds).await,
                Err(err) => err,
            };
            let retry = err.cause == Cause::BrokerUnavailable;
            self.step_failed(host, step, &err, retry).await;
            if !retry {
                let why = err.detail.clone();
                let seconds = Some(seconds);
                self.progress(host, step, State::Failed { seconds, why });
                return Err(failure(host, step, err));
            }
            let since = *first_outage.get_or_insert_with(Instant::now);
            self.wait_out(host, step, err, since).await?;
            // Failed again though the broker answered (a node that runs again but has not
            // recovered its queues yet): tries are paced, 0.25 s, 0.5 s, ... up to 4 s apart,
            // rather than made (and journaled) as fast as the step fails.
            if retries > 0 {
                let pause = Duration::from_millis(250 << (retries - 1).min(4));
                tokio::time::sleep(pause).await;
            }
            retries += 1;
        }
    }

    /// How long a step may take, as far as the plan says: a gate or a soak its own time; a
    /// verification (of a host, of a stop, of a queue) waits up to the release's verify
    /// timeout; a host's other steps run commands that each have the command timeout. A step
    /// that moves messages has none of its own (each move says its deadline as it goes), nor
    /// has a broker's step made of calls that each have theirs.
    fn deadline_of(&self, host: &str, step: &Step) -> Option<Duration> {
        let rendered = self.plan.rendered();
        if let Some(own) = self.plan.deadline(step) {
            return Some(own);
        }
        match step {
            _ if step.moved_queue().is_some() => None,
            Step::Verify
            | Step::VerifyAgain
            | Step::VerifyStopped
            | Step::VerifyStoppedFailover
            | Step::RollbackVerifyStopped
            | Step::VerifyQueue(_) => Some(rendered.verify.timeout),
            _ if host == BROKER => None,
            _ => Some(rendered.command_timeout),
        }
    }

    /// Says that `host` is through with this run (every step of it done, or one failed).
    fn host_end(&self, host: &str, result: &Result<(), Failure>) {
        let ok = result.is_ok();
        self.progress(host, "", State::HostFinished { ok });
    }

    /// Confirms the lease, then journals that a step begins.
    async fn begin(&self, host: &str, step: &Step) -> Result<(), StepError> {
        self.hold_lease().await?;
        self.journal_event(Event::StepStarted {
            host: host.into(),
            step: step.clone(),
        })
        .await?;
        if let Ok(mut set) = self.begun.lock() {
            set.insert((host.to_string(), step.clone()));
        }
        Ok(())
    }

    /// Journals a step's failure (`retry`: it is done again once the broker answers).
    async fn step_failed(&self, host: &str, step: &Step, err: &StepError, retry: bool) {
        let _ = self
            .journal_event(Event::StepFinished {
                host: host.into(),
                step: step.clone(),
                ok: false,
                detail: if retry {
                    format!("{} (waiting for the broker, then again)", err.detail)
                } else {
                    err.detail.clone()
                },
                output: err.output.clone(),
            })
            .await;
    }

    /// Waits for the broker after `err`, at most until `since` plus the broker's
    /// `reconnect_deadline`; journals how long it waited.
    async fn wait_out(
        &self,
        host: &str,
        step: &Step,
        err: StepError,
        since: Instant,
    ) -> Result<(), Failure> {
        let waiting = Instant::now();
        let why = err.detail.clone();
        self.progress(host, step, State::WaitingForBroker { why });
        // A queue on a cluster node that stopped: the other nodes answer at once, the queue
        // only once that node is back.
        let node = crate::broker::nodes::home_node_down(&err.detail);
        if let Err(why) = self.await_broker(host, step, since, node.as_deref()).await {
            let failed = State::Failed {
                seconds: None,
                why: why.detail.clone(),
            };
            self.progress(host, step, failed);
            let detail = format!("{}; {}", err.detail, why.detail);
            return Err(failure(host, step, StepError { detail, ..why }));
        }
        let through = self.nodes_in_use();
        let detail = match &through {
            Some(nodes) => format!("{host} {step}: {}; answers through {nodes}", err.detail),
            None => format!("{host} {step}: {}", err.detail),
        };
        let _ = self
            .journal_event(Event::Measured {
                what: timing::BROKER_UNAVAILABLE.into(),
                seconds: waiting.elapsed().as_secs_f64(),
                detail,
            })
            .await;
        self.progress(host, step, State::BrokerBack { through });
        Ok(())
    }

    /// On a cluster (the inventory gives several URLs), the nodes in use: the management
    /// API's and AMQP's that answered last.
    fn nodes_in_use(&self) -> Option<String> {
        let broker = &self.group.broker;
        (broker.management_urls.len() > 1 || broker.amqp_urls.len() > 1).then(|| {
            format!(
                "{} and {}",
                self.management.url(),
                crate::broker::amqp::current_url(broker)
            )
        })
    }

    /// Journals a step's success and reports it.
    async fn step_done(
        &self,
        host: &str,
        step: &Step,
        done: Done,
        seconds: f64,
    ) -> Result<(), Failure> {
        let recorded = self
            .journal_event(Event::StepFinished {
                host: host.into(),
                step: step.clone(),
                ok: true,
                detail: done.detail.clone(),
                output: done.output,
            })
            .await;
        if let Err(err) = recorded {
            // Done, but not recorded: a resume does it again (every step can run again).
            let why = err.detail.clone();
            self.progress(host, step, State::NotRecorded { why });
            return Err(failure(host, step, err));
        }
        if let Ok(mut set) = self.done.lock() {
            set.insert((host.to_string(), step.clone()));
        }
        // A start's detail is the log sizes noted before it: not for the operator.
        let detail = if step.starts() {
            String::new()
        } else {
            done.detail
        };
        self.progress(host, step, State::Done { seconds, detail });
        Ok(())
    }

    /// Confirms the run still holds the group's lock. A lock taken again after a broker
    /// restart is journaled, once the journal shows that nobody else ran meanwhile.
    async fn hold_lease(&self) -> Result<(), StepError> {
        let Some(lock) = &self.lock else {
            return Ok(());
        };
        match lock.confirm().await? {
            Lease::Held => Ok(()),
            Lease::Retaken {
                reason,
                lost_at_ms,
                after,
            } => {
                let untouched = self.journal.lock().await.untouched()?;
                if let Err(other) = untouched {
                    return Err(StepError::new(
                        Cause::Lock,
                        format!(
                            "the lock was lost ({reason}) and, meanwhile, {other}: this run \
                             stops"
                        ),
                    ));
                }
                self.journal_event(Event::LockRetaken {
                    reason: reason.clone(),
                    seconds: after.as_secs_f64(),
                    lost_at_ms,
                })
                .await?;
                let seconds = after.as_secs_f64();
                self.progress(BROKER, "lock", State::LockRetaken { seconds, reason });
                Ok(())
            }
        }
    }

    /// Waits until the broker answers again (its management API and AMQP), and `node` runs
    /// again when a queue's home node was down, at most until `since` (the step's first
    /// failure for want of it) plus the broker's `reconnect_deadline`; says every so often,
    /// on the step (`host`, `step`) that waits, what it waits for and its deadline.
    async fn await_broker(
        &self,
        host: &str,
        step: &Step,
        since: Instant,
        node: Option<&str>,
    ) -> Result<(), StepError> {
        let limit = self.group.broker.reconnect_deadline;
        let deadline = since + limit;
        let waiting = Instant::now();
        let mut said = waiting;
        let awaited = match node {
            Some(node) => format!("the broker's node {node} to run again"),
            None => "the broker to answer again".to_string(),
        };
        loop {
            let up = self.actions.broker_up(self).await
                && match node {
                    Some(node) => self.actions.node_up(self, node).await,
                    None => true,
                };
            let over = Instant::now() >= deadline;
            if up && !over {
                return Ok(());
            }
            if over {
                let detail = match (up, node) {
                    // It answers, yet the step keeps failing for want of it.
                    (true, _) => format!(
                        "the step still failed for want of the broker {}s after it first did, \
                         though the broker answers (reconnect_deadline)",
                        limit.as_secs()
                    ),
                    (false, Some(node)) => format!(
                        "the broker's node {node} did not run again within {}s \
                         (reconnect_deadline)",
                        limit.as_secs()
                    ),
                    (false, None) => format!(
                        "the broker did not answer again within {}s (reconnect_deadline)",
                        limit.as_secs()
                    ),
                };
                return Err(StepError::new(Cause::BrokerUnavailable, detail));
            }
            if said.elapsed() >= self.still_running_every {
                said = Instant::now();
                let left = deadline.saturating_duration_since(Instant::now()).as_secs();
                let running = State::Running {
                    seconds: waiting.elapsed().as_secs_f64(),
                    deadline: Some(limit),
                    doing: Some(format!(
                        "waiting for {awaited} (reconnect_deadline, {left}s left)"
                    )),
                };
                self.progress(host, step, running);
            }
            // Often: every second the run waits once the broker is back is in the window.
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Journals an event; returns once it is on disk (its flush shared with the other
    /// hosts' entries written meanwhile).
    async fn journal_event(&self, event: Event) -> Result<(), StepError> {
        let pending = self.journal.lock().await.write(event)?;
        pending.durable().await?;
        Ok(())
    }

    /// Tells the sink.
    fn progress(&self, host: &str, step: impl std::fmt::Display, state: State) {
        (self.sink)(&Progress {
            elapsed: self.started.elapsed().as_secs_f64(),
            host: host.to_string(),
            step: step.to_string(),
            state,
        });
    }

    fn not_started(&self, host: &str, step: &Step, err: &StepError) {
        let why = err.detail.clone();
        self.progress(host, step, State::NotStarted { why });
    }

    /// The stops and starts of this run so far, from its journal.
    async fn timing(&self, stops: &[Step], starts: &[Step]) -> timing::Timing {
        let path = self.journal.lock().await.path().to_path_buf();
        let mut timing = match crate::journal::read_without_plans(&path) {
            Ok(entries) => timing::timing(timing::since_restored(&entries), stops, starts),
            Err(_) => timing::Timing::default(),
        };
        // A test held the run at a failpoint while it took the broker down.
        timing.unavailable.extend(crate::failpoint::pauses());
        timing
    }

    /// True when the step was begun (now or before), whether or not it finished.
    fn is_started(&self, host: &str, step: &Step) -> bool {
        self.begun
            .lock()
            .map(|set| set.contains(&(host.to_string(), step.clone())))
            .unwrap_or(false)
    }

    /// Journals that steps done before must be done again (their work is being undone), and
    /// forgets them as done. Journaled before the undoing begins, so that a run killed in
    /// the middle of it does them again on resume.
    async fn undo(&self, host: &str, steps: &[Step], why: &str) -> Result<(), Failure> {
        for step in steps {
            if !self.is_done(host, step) {
                continue;
            }
            self.journal_event(Event::Undone {
                host: host.to_string(),
                step: step.clone(),
                why: why.to_string(),
            })
            .await
            .map_err(|e| failure(host, step, e))?;
            if let Ok(mut set) = self.done.lock() {
                set.remove(&(host.to_string(), step.clone()));
            }
        }
        Ok(())
    }

    /// True when the step is done (journaled as finished, now or before).
    fn is_done(&self, host: &str, step: &Step) -> bool {
        self.done
            .lock()
            .map(|set| set.contains(&(host.to_string(), step.clone())))
            .unwrap_or(false)
    }
}

/// What the runner needs of the plan it executes, whichever kind it is.
pub trait Planned: Send + Sync + 'static {
    /// Which kind of run executes it (its moves and drops are journaled as such).
    const KIND: RunKind;
    /// The release, rendered for every host: every command and file the steps run.
    fn rendered(&self) -> &Rendered;
    /// The run whose holding queues its steps use (a rollback's are its upgrade's).
    fn holding_run(&self) -> &str;
    /// The type of its holding queues, as planned (`None`: a plan of an older version).
    fn holding_type(&self) -> Option<crate::broker::equivalence::QueueType>;
    /// Recreated and restored queues keep their messages.
    fn preserves_messages(&self) -> bool;
    /// A queue holding at least this many messages when it is held has them moved while its
    /// consumers still run.
    fn hold_while_running_at(&self) -> u64;
    /// How long a step of its own kind may take (a gate, a soak), when the plan says.
    fn deadline(&self, _step: &Step) -> Option<Duration> {
        None
    }
    /// What the run is, for people (`upgrade ops half b`), and how many hosts it is through
    /// with at its end.
    fn shown(&self) -> (String, usize);
}

impl Planned for UpgradePlan {
    const KIND: RunKind = RunKind::Upgrade;
    fn rendered(&self) -> &Rendered {
        &self.rendered
    }
    fn holding_run(&self) -> &str {
        &self.run_id
    }
    fn holding_type(&self) -> Option<crate::broker::equivalence::QueueType> {
        self.holding_type
    }
    fn preserves_messages(&self) -> bool {
        self.preserve_messages
    }
    fn hold_while_running_at(&self) -> u64 {
        self.hold_while_running_at
    }
    fn deadline(&self, step: &Step) -> Option<Duration> {
        match step {
            Step::Gate => Some(self.gates.timeout.0),
            Step::Soak(_) => self.gates.min_healthy.map(|d| d.0),
            _ => None,
        }
    }
    fn shown(&self) -> (String, usize) {
        let what = format!("upgrade {} half {}", self.group, self.half);
        (what, self.hosts.len())
    }
}

impl Planned for RollbackPlan {
    const KIND: RunKind = RunKind::Rollback;
    fn rendered(&self) -> &Rendered {
        &self.rendered
    }
    fn holding_run(&self) -> &str {
        &self.rolls_back
    }
    fn holding_type(&self) -> Option<crate::broker::equivalence::QueueType> {
        self.holding_type
    }
    fn preserves_messages(&self) -> bool {
        self.preserve_messages
    }
    fn hold_while_running_at(&self) -> u64 {
        self.hold_while_running_at
    }
    fn shown(&self) -> (String, usize) {
        let what = format!("rollback {} half {}", self.group, self.half);
        (what, self.repair.len())
    }
}

/// What a failure does next, decided in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// The run stops where it is: `resume` continues it, `rollback` undoes it.
    Stop,
    /// The untouched half is put back in service first (a failure in a critical window,
    /// unless the journal or the lock is gone: then nothing more is done).
    Failover,
    /// The host stays where it failed and the run goes on (`--max-failures`): never in the
    /// first wave (the canary), never when the half's hosts stop together, never on the
    /// broker, never past the bound.
    Continue,
}

impl Policy {
    /// What a failure in wave `wave` (0: outside the waves) does, `tolerated` failures
    /// having been let through before it.
    pub fn after_failure(
        plan: &UpgradePlan,
        failure: &Failure,
        wave: usize,
        tolerated: usize,
    ) -> Policy {
        if matches!(failure.cause, Cause::Lock | Cause::Journal) {
            Policy::Stop
        } else if plan.critical_window {
            Policy::Failover
        } else if !plan.two_phase
            && wave > 1
            && failure.host != BROKER
            && tolerated < plan.policy.max_failures
        {
            Policy::Continue
        } else {
            Policy::Stop
        }
    }
}

/// A failure of a step, tied to its host and step.
fn failure(host: &str, step: &Step, err: StepError) -> Failure {
    Failure {
        host: host.into(),
        step: step.clone(),
        cause: err.cause,
        detail: err.detail,
        output: err.output,
    }
}

/// A command's output when it exited with 0, else the failure that says how it ended.
fn succeeded(label: &str, output: remote::Output) -> Result<remote::Output, StepError> {
    if output.success() {
        return Ok(output);
    }
    Err(StepError {
        cause: Cause::Check,
        detail: format!(
            "`{label}` exited with {}: {}",
            output
                .code
                .map_or("a signal".to_string(), |c| c.to_string()),
            last_line(&output)
        ),
        output: Some(record(label, &output)),
    })
}

/// A command and what it printed, for the journal.
pub fn record(label: &str, output: &remote::Output) -> String {
    format!(
        "$ {label}\nexit: {}\n--- stdout\n{}--- stderr\n{}",
        output.code.map_or("signal".to_string(), |c| c.to_string()),
        output.stdout,
        output.stderr
    )
}

/// The last non-empty line of a command's stderr (or stdout).
fn last_line(output: &remote::Output) -> String {
    output
        .stderr
        .lines()
        .chain(output.stdout.lines())
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .chars()
        .take(300)
        .collect()
}

/// Waits for `check` to return `Ok(Some(_))`, polling every second until `limit`.
pub async fn wait_for<T, F, Fut>(limit: Duration, mut check: F) -> Result<T, StepError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Result<T, String>, StepError>>,
{
    let deadline = Instant::now() + limit;
    loop {
        let last = match check().await? {
            Ok(value) => return Ok(value),
            Err(why) => why,
        };
        if Instant::now() >= deadline {
            return Err(StepError::from(format!(
                "not so after {}s: {last}",
                limit.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Runs `work` for each host (a plan's, or a name), at most `parallel` at a time; stops
/// starting new hosts after a failure and returns the first failure once the hosts in flight
/// have finished.
pub async fn each_host<P: Planned, T, F, Fut>(
    engine: &Arc<Engine<P>>,
    hosts: Vec<T>,
    parallel: usize,
    work: F,
) -> Result<(), Failure>
where
    F: Fn(Arc<Engine<P>>, T) -> Fut,
    Fut: std::future::Future<Output = Result<(), Failure>> + Send + 'static,
{
    let limit = Arc::new(Semaphore::new(parallel.max(1)));
    let mut tasks = JoinSet::new();
    for host in hosts {
        let permit = limit.clone().acquire_owned().await.map_err(|e| {
            failure(
                BROKER,
                &Step::other("schedule"),
                StepError::from(e.to_string()),
            )
        })?;
        if engine.stopping.load(Ordering::SeqCst) {
            break;
        }
        let future = work(engine.clone(), host);
        let engine = engine.clone();
        tasks.spawn(async move {
            let result = future.await;
            if result.is_err() {
                engine.stopping.store(true, Ordering::SeqCst);
            }
            drop(permit);
            result
        });
    }
    let mut first = None;
    while let Some(joined) = tasks.join_next().await {
        let result = joined.unwrap_or_else(|e| {
            Err(failure(
                BROKER,
                &Step::other("task"),
                StepError::from(e.to_string()),
            ))
        });
        if let Err(f) = result {
            first.get_or_insert(f);
        }
    }
    match first {
        Some(f) => Err(f),
        None => Ok(()),
    }
}
