//! The per-group lock: an exclusive queue on the group's broker (`roll.lock.<group>`), held
//! by an AMQP connection of the run. The broker deletes it when the holder dies, however it
//! dies. Who holds it (operator, controller host, pid, start time) is kept in the queue's
//! arguments, where a second `roll` reads it to name the holder.
//!
//! The lock is a lease: a task watches its connection, and the run confirms it still holds
//! the lock ([`Lock::confirm`]) before every step that changes a host or the broker (steps
//! confirmed at the same time share one check of the lock queue, sent after each of them
//! asked). When the connection goes:
//! - the watcher takes the lock again as soon as the broker lets it (so that no other `roll`
//!   gets in while the run winds down to its next step boundary), unless another process
//!   holds it by then;
//! - after a broker restart or a broken connection, a lock taken again is reported once as
//!   [`Lease::Retaken`]: the run checks that nobody else ran on the group in between (its
//!   journal) before it goes on;
//! - when the broker closed the connection for another reason (an operator's
//!   `rabbitmqctl close_connection`, the lock queue deleted), the lock is lost: `confirm`
//!   fails from then on, and the run stops.
//!
//! On a cluster the lock queue lives on the node of the lock's connection (a classic,
//! exclusive queue). When that node stops, the connection ends with it (a `shutdown` close or
//! a broken socket: the lock may be taken again) and the cluster deletes the queue with its
//! owner. The watcher takes the lock again through the next node that answers (the
//! inventory's AMQP URLs, in order), but only if nobody else took it in between: a holder
//! named by the broker ends the run at its next step; a queue still there without a holder
//! the broker names, or still ours on a node not yet known to be gone, is tried again until
//! `reconnect_deadline`. The lock is never taken over from anyone, and a lock taken again is
//! only used once the journal shows that no other run touched the group meanwhile.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use lapin::options::QueueDeclareOptions;
use serde_json::Value;

use crate::broker::management::Management;
use crate::broker::{BrokerError, DEFAULT_TIMEOUT, amqp};
use crate::clock;
use crate::inventory::{BrokerConfig, Secret};

/// The argument of the lock queue that says who holds it.
const HOLDER_ARGUMENT: &str = "x-roll-holder";

/// How often the watcher tries to take a lost lock again (each try is a connect: cheap, and
/// the sooner it holds the lock again, the sooner the run goes on).
const RETRY_EVERY: Duration = Duration::from_millis(250);

/// Why the lock could not be taken, or is no longer held.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LockError {
    #[error("group {group} is locked by {holder}: another roll is running on it")]
    Held { group: String, holder: String },
    #[error(
        "the lock of group {group} was lost ({reason}): the run stopped; `roll resume --group \
         {group}` continues it"
    )]
    Lost { group: String, reason: String },
    #[error("broker: {0}")]
    Broker(String),
}

impl From<BrokerError> for LockError {
    fn from(err: BrokerError) -> LockError {
        LockError::Broker(err.to_string())
    }
}

/// What [`Lock::confirm`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lease {
    /// Held all along.
    Held,
    /// Lost (`reason`) at `lost_at_ms` (ms since the epoch) and taken again `after` that:
    /// the caller checks that nobody else ran meanwhile.
    Retaken {
        reason: String,
        lost_at_ms: u64,
        after: Duration,
    },
}

/// How the lock's connection ended.
#[derive(Debug, Clone)]
enum Loss {
    /// The broker went (a restart, a node going down) or the connection broke: the lock may
    /// be taken again.
    Broken(String),
    /// Closed on purpose (an operator, the queue deleted): the run must stop.
    Revoked(String),
}

/// The lease as the watcher keeps it.
#[derive(Debug, Default)]
struct State {
    connection: Option<Arc<lapin::Connection>>,
    channel: Option<lapin::Channel>,
    /// The connection went and the lock is being taken again (cleared once it is, or once
    /// it is given up).
    retaking: bool,
    /// Taken again after a loss (why, when it was lost, how long it took), not yet reported
    /// by `confirm`.
    retaken: Option<(String, u64, Duration)>,
    /// Given up: held by another process, revoked, or the broker never came back.
    gone: Option<String>,
}

/// A held lock. Dropping it (or the process dying) releases it.
pub struct Lock {
    group: String,
    broker: BrokerConfig,
    password: Secret,
    /// Who holds it, as recorded.
    pub holder: String,
    state: Arc<Mutex<State>>,
    watcher: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The last check of the lock queue: when it was sent, and what it found. Confirms made
    /// at the same time (the hosts of a wave) share one check.
    last_check: tokio::sync::Mutex<Option<(Instant, Checked)>>,
}

/// What a check of the lock queue found (see [`Lock::check`]).
type Checked = Result<(), Option<String>>;

impl std::fmt::Debug for Lock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lock")
            .field("holder", &self.holder)
            .finish()
    }
}

/// The lock queue's name for a group.
pub fn queue_name(group: &str) -> String {
    format!("roll.lock.{group}")
}

/// Who we are: `operator@controller pid N since TIME (purpose)`.
pub fn describe_self(purpose: &str) -> String {
    format!(
        "{}@{} pid {} since {} ({purpose})",
        operator(),
        controller(),
        std::process::id(),
        clock::rfc3339(clock::now_millis())
    )
}

/// The operator's user name.
pub fn operator() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into())
}

/// This machine's host name.
pub fn controller() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// The outcome of one attempt to declare the lock queue.
enum Taken {
    Yes(Box<(lapin::Connection, lapin::Channel)>),
    /// Someone holds it: who (the queue's recorded holder), when the broker says.
    HeldBy(Option<String>),
}

/// Connects and declares the exclusive lock queue once.
async fn take(
    group: &str,
    broker: &BrokerConfig,
    password: &Secret,
    holder: &str,
) -> Result<Taken, BrokerError> {
    let connection = amqp::connect(broker, password, &format!("lock {group}")).await?;
    let name = queue_name(group);
    let mut arguments = BTreeMap::new();
    arguments.insert(HOLDER_ARGUMENT.to_string(), Value::from(holder.to_string()));
    let what = format!("declare of the lock {name}");
    let channel = match tokio::time::timeout(DEFAULT_TIMEOUT, connection.create_channel()).await {
        Ok(Ok(channel)) => channel,
        Ok(Err(err)) => {
            amqp::close(&connection).await;
            return Err(amqp::error(
                &broker.display(),
                "open the lock channel",
                &err,
            ));
        }
        Err(_) => {
            amqp::close(&connection).await;
            return Err(BrokerError::Timeout {
                broker: broker.display(),
                what: "open the lock channel".into(),
                after: DEFAULT_TIMEOUT,
            });
        }
    };
    let declared = tokio::time::timeout(
        DEFAULT_TIMEOUT,
        channel.queue_declare(
            name.as_str().into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            amqp::field_table(&arguments),
        ),
    )
    .await;
    match declared {
        Ok(Ok(_)) => Ok(Taken::Yes(Box::new((connection, channel)))),
        Ok(Err(err)) => {
            amqp::close(&connection).await;
            if amqp::soft_code(&err) == Some(405) {
                Ok(Taken::HeldBy(holder_of(group, broker, password).await))
            } else {
                Err(amqp::error(&broker.display(), what, &err))
            }
        }
        Err(_) => {
            amqp::close(&connection).await;
            Err(BrokerError::Timeout {
                broker: broker.display(),
                what,
                after: DEFAULT_TIMEOUT,
            })
        }
    }
}

/// Takes the group's lock, or says who holds it.
pub async fn acquire(
    group: &str,
    broker: &BrokerConfig,
    password: &Secret,
    purpose: &str,
) -> Result<Lock, LockError> {
    let holder = describe_self(purpose);
    match take(group, broker, password, &holder).await? {
        Taken::HeldBy(holder) => Err(LockError::Held {
            group: group.to_string(),
            holder: holder.unwrap_or_else(|| "another process (holder unknown)".into()),
        }),
        Taken::Yes(taken) => {
            let (connection, channel) = *taken;
            let lock = Lock {
                group: group.to_string(),
                broker: broker.clone(),
                password: password.clone(),
                holder,
                state: Arc::new(Mutex::new(State::default())),
                watcher: Mutex::new(None),
                last_check: tokio::sync::Mutex::new(None),
            };
            lock.install(Arc::new(connection), channel);
            Ok(lock)
        }
    }
}

/// Who holds the group's lock, if anyone.
pub async fn holder_of(group: &str, broker: &BrokerConfig, password: &Secret) -> Option<String> {
    let management = Management::new(broker, password.clone()).ok()?;
    let queue = management.queue(&queue_name(group)).await.ok()??;
    queue
        .arguments
        .get(HOLDER_ARGUMENT)
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// How the broker ended a connection: a shutdown or a broken connection may be retaken; a
/// close for any other reason (an operator's) revokes the lock.
fn loss_of(err: &lapin::Error) -> Loss {
    let text = err.to_string();
    match err.kind() {
        lapin::ErrorKind::ProtocolError(e) if err.is_amqp_hard_error() => {
            let message = e.get_message().to_string();
            if message.contains("reason 'shutdown'") || message.contains("node is shutting down") {
                Loss::Broken(text)
            } else {
                Loss::Revoked(format!("the broker closed its connection: {message}"))
            }
        }
        _ => Loss::Broken(text),
    }
}

impl Lock {
    /// Keeps `connection` as the lock's, and watches it.
    fn install(&self, connection: Arc<lapin::Connection>, channel: lapin::Channel) {
        let events: Events = Box::pin(connection.events_listener());
        if let Ok(mut state) = self.state.lock() {
            state.connection = Some(connection);
            state.channel = Some(channel);
        }
        let watch = Watch {
            group: self.group.clone(),
            broker: self.broker.clone(),
            password: self.password.clone(),
            holder: self.holder.clone(),
            state: self.state.clone(),
        };
        let handle = tokio::spawn(watch.run(events));
        if let Ok(mut slot) = self.watcher.lock()
            && let Some(old) = slot.replace(handle)
        {
            old.abort();
        }
    }

    /// Confirms that the run still holds the lock (the lock queue answers on its own
    /// connection). While the lock is being taken again after a broker restart, waits for
    /// that (as long as the broker's `reconnect_deadline`). Fails when the lock is lost.
    pub async fn confirm(&self) -> Result<Lease, LockError> {
        let deadline = Instant::now() + self.broker.reconnect_deadline + DEFAULT_TIMEOUT;
        loop {
            let asked = Instant::now();
            let (channel, waiting) = {
                let state = self.state.lock().map_err(|_| self.lost("lock state"))?;
                if let Some(reason) = &state.gone {
                    return Err(self.lost(reason));
                }
                (state.channel.clone(), state.retaking)
            };
            if waiting || channel.is_none() {
                if Instant::now() > deadline {
                    return Err(self.lost("the broker did not come back in time"));
                }
                tokio::time::sleep(RETRY_EVERY / 2).await;
                continue;
            }
            let Some(channel) = channel else { continue };
            match self.check_since(&channel, asked).await {
                Ok(()) => {}
                Err(Some(reason)) => {
                    self.revoke(reason);
                    continue;
                }
                Err(None) => {
                    // The connection broke: the watcher has it (or will in a moment).
                    tokio::time::sleep(RETRY_EVERY / 2).await;
                    if Instant::now() > deadline {
                        return Err(self.lost("the lock's connection does not answer"));
                    }
                    continue;
                }
            }
            let retaken = self.state.lock().ok().and_then(|mut s| s.retaken.take());
            return Ok(match retaken {
                Some((reason, lost_at_ms, after)) => Lease::Retaken {
                    reason,
                    lost_at_ms,
                    after,
                },
                None => Lease::Held,
            });
        }
    }

    /// What a check of the lock queue sent at `asked` or later found: the last one's answer
    /// when it was sent since, else a new check's. Confirms waiting here while a check is
    /// on its way take the next one's answer together, so that a wave of hosts starting
    /// their steps costs the broker one or two passive declares, not one each.
    async fn check_since(&self, channel: &lapin::Channel, asked: Instant) -> Checked {
        let mut last = self.last_check.lock().await;
        if let Some((sent, found)) = &*last
            && *sent >= asked
        {
            return found.clone();
        }
        let sent = Instant::now();
        let found = self.check(channel).await;
        *last = Some((sent, found.clone()));
        found
    }

    /// A passive declare of the lock queue on its own channel: `Err(Some(why))` when it is
    /// gone while the connection lives (deleted by someone), `Err(None)` when the connection
    /// broke.
    async fn check(&self, channel: &lapin::Channel) -> Checked {
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let name = queue_name(&self.group);
        let answer = tokio::time::timeout(
            DEFAULT_TIMEOUT,
            channel.queue_declare(name.as_str().into(), passive, Default::default()),
        )
        .await;
        match answer {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(err)) if amqp::soft_code(&err).is_some() => {
                Err(Some(format!("the lock queue {name} is gone ({err})")))
            }
            _ => Err(None),
        }
    }

    /// Records that the lock queue went while its connection lives (someone deleted it):
    /// the lock is lost.
    fn revoke(&self, reason: String) {
        if let Ok(mut state) = self.state.lock() {
            state.channel = None;
            state.gone.get_or_insert(reason);
        }
    }

    fn lost(&self, reason: &str) -> LockError {
        LockError::Lost {
            group: self.group.clone(),
            reason: reason.to_string(),
        }
    }

    /// Releases the lock.
    pub async fn release(&self) {
        if let Ok(mut slot) = self.watcher.lock()
            && let Some(handle) = slot.take()
        {
            handle.abort();
        }
        let connection = self.state.lock().ok().and_then(|mut s| s.connection.take());
        if let Some(connection) = connection {
            amqp::close(&connection).await;
        }
    }
}

/// The watcher of the lock's connection.
struct Watch {
    group: String,
    broker: BrokerConfig,
    password: Secret,
    holder: String,
    state: Arc<Mutex<State>>,
}

/// The connection events the watcher reads.
type Events = std::pin::Pin<Box<dyn futures_lite::Stream<Item = lapin::Event> + Send>>;

impl Watch {
    /// Waits for the connection's end, takes the lock again, and watches the new connection;
    /// until the lock is given up.
    async fn run(self, mut events: Events) {
        loop {
            match self.retake(&mut events).await {
                Some(next) => events = next,
                None => return,
            }
        }
    }

    /// Waits for the end of the connection behind `events`, then takes the lock again:
    /// the events of the new connection, or `None` once the lock is given up.
    async fn retake(&self, events: &mut Events) -> Option<Events> {
        let loss = loop {
            match events.next().await {
                Some(lapin::Event::Error(err)) => break loss_of(&err),
                Some(_) => continue,
                None => break Loss::Broken("the connection ended".into()),
            }
        };
        let since = Instant::now();
        let lost_at_ms = clock::now_millis();
        let revoked = matches!(loss, Loss::Revoked(_));
        let reason = match &loss {
            Loss::Broken(r) | Loss::Revoked(r) => r.clone(),
        };
        if let Ok(mut state) = self.state.lock() {
            state.channel = None;
            if revoked {
                state.gone.get_or_insert(reason.clone());
            }
            state.retaking = true;
        }
        tracing::warn!(group = %self.group, %reason, "lock connection lost; taking the lock again");
        crate::failpoint::reach_lock(&self.group).await;
        let deadline = since + self.broker.reconnect_deadline;
        loop {
            match take(&self.group, &self.broker, &self.password, &self.holder).await {
                Ok(Taken::Yes(taken)) => {
                    let (connection, channel) = *taken;
                    let connection = Arc::new(connection);
                    let next: Events = Box::pin(connection.events_listener());
                    if let Ok(mut state) = self.state.lock() {
                        state.connection = Some(connection);
                        state.channel = Some(channel);
                        state.retaking = false;
                        if !revoked {
                            state.retaken = Some((reason.clone(), lost_at_ms, since.elapsed()));
                        }
                    }
                    tracing::warn!(group = %self.group, "lock taken again after {:?}", since.elapsed());
                    return Some(next);
                }
                Ok(Taken::HeldBy(Some(holder))) if holder != self.holder => {
                    self.give_up(format!("{reason}; {holder} took the lock meanwhile"));
                    return None;
                }
                // Still ours on a connection the broker has not closed yet (on a cluster:
                // the node that held it is not yet known to be gone), held by someone the
                // broker does not name yet, or the broker is not back: try again until the
                // deadline. The lock is never taken over from anyone.
                Ok(Taken::HeldBy(_)) | Err(_) => {}
            }
            if Instant::now() > deadline {
                self.give_up(format!(
                    "{reason}; the lock could not be taken again within {:?}",
                    self.broker.reconnect_deadline
                ));
                return None;
            }
            tokio::time::sleep(RETRY_EVERY).await;
        }
    }

    fn give_up(&self, why: String) {
        if let Ok(mut state) = self.state.lock() {
            state.gone.get_or_insert(why);
            state.retaking = false;
        }
    }
}
