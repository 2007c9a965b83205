//! Recreating a queue without losing a message.
//!
//! Four stages, each a journaled step that is safe to run again from any state the one before
//! it may have left (a resume after SIGKILL runs the interrupted stage again):
//! 1. hold (before the consumers stop): the holding topology is made (see
//!    [`crate::broker::holding`]) and the queue's bindings are routed through the holding
//!    exchange; the queue still receives every message. A backlog of at least
//!    the plan's `hold_while_running_at` messages is moved into the holding queue now, while the
//!    consumers still run and share the queue with the mover (each message is consumed or
//!    held), so that the stop never waits for it.
//! 2. recreate (consumers stopped): the queue is unbound from the holding exchange (from then
//!    on new messages go to the holding queue), its messages are moved into the holding queue,
//!    it is deleted only when empty (`if-empty`), declared with its new settings, and bound to
//!    the holding exchange again: new messages go to it.
//! 3. (the consumers start)
//! 4. release: the held messages are moved into the new queue, which gets its bindings back;
//!    the holding exchanges and queue are deleted.
//!
//! The bindings only ever switch in one binding change, so a message is never routed to both
//! queues or to neither; messages are moved with publisher confirms (see
//! [`crate::broker::mover`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{BROKER, Done, Engine, Planned, StepError};
use crate::broker::equivalence::{QueueSettings, QueueType};
use crate::broker::holding::{Holding, is_holding};
use crate::broker::management::BindingInfo;
use crate::broker::{BrokerError, amqp, mover};
use crate::journal::{Backup, Event, QueueAccount, RunKind};

/// How many times a queue is emptied before giving up (something keeps publishing into it).
const EMPTY_ATTEMPTS: usize = 5;

/// A move, as the journal has it.
#[derive(Debug, Clone)]
pub(super) struct MoveRecord {
    pub by: RunKind,
    pub queue: String,
    pub from: String,
    pub to: String,
    pub before: u64,
    pub moved: u64,
    pub redelivered: u64,
    pub uncertain: u64,
    pub on_both: u64,
    pub absorbed: u64,
}

impl MoveRecord {
    /// The record of a journaled move.
    pub fn of(event: &Event) -> Option<MoveRecord> {
        let Event::Moved {
            by,
            queue,
            from,
            to,
            before,
            moved,
            redelivered,
            uncertain,
            on_both,
            absorbed,
            ..
        } = event
        else {
            return None;
        };
        Some(MoveRecord {
            by: *by,
            queue: queue.clone(),
            from: from.clone(),
            to: to.clone(),
            before: *before,
            moved: *moved,
            redelivered: *redelivered,
            uncertain: *uncertain,
            on_both: *on_both,
            absorbed: *absorbed,
        })
    }

    /// The journal's event for this move, which took `seconds`.
    fn event(&self, seconds: f64) -> Event {
        Event::Moved {
            by: self.by,
            queue: self.queue.clone(),
            from: self.from.clone(),
            to: self.to.clone(),
            before: self.before,
            moved: self.moved,
            redelivered: self.redelivered,
            uncertain: self.uncertain,
            on_both: self.on_both,
            absorbed: self.absorbed,
            seconds,
        }
    }
}

fn binding(source: &str, destination: &str, kind: &str, key: &str) -> BindingInfo {
    BindingInfo {
        source: source.to_string(),
        destination: destination.to_string(),
        destination_type: kind.to_string(),
        routing_key: key.to_string(),
        arguments: BTreeMap::new(),
    }
}

/// The same binding with another destination.
fn redirect(b: &BindingInfo, destination: &str, kind: &str) -> BindingInfo {
    BindingInfo {
        destination: destination.to_string(),
        destination_type: kind.to_string(),
        ..b.clone()
    }
}

/// `a` then those of `b` not in `a` (same source, key and arguments).
fn union(mut a: Vec<BindingInfo>, b: Vec<BindingInfo>) -> Vec<BindingInfo> {
    for x in b {
        let same = |y: &BindingInfo| {
            y.source == x.source && y.routing_key == x.routing_key && y.arguments == x.arguments
        };
        if !a.iter().any(same) {
            a.push(x);
        }
    }
    a
}

/// The settings of a holding queue of this type: durable, not auto-delete, not exclusive
/// (declared through the management API, which makes no exclusive queue), and no argument
/// but its type: nothing a quorum queue refuses.
fn holding_queue(kind: QueueType) -> QueueSettings {
    let mut arguments = BTreeMap::new();
    arguments.insert("x-queue-type".to_string(), Value::from(kind.as_str()));
    QueueSettings::new(true, false, arguments)
}

impl<P: Planned> Engine<P> {
    /// Messages of `queue` that a killed run may have left on two queues.
    fn interrupted_moves(&self, queue: &str) -> u64 {
        self.interrupted.get(queue).copied().unwrap_or(0)
    }

    /// The holding topology of a queue in this run.
    pub(super) fn holding_of(&self, queue: &str) -> Holding {
        Holding::new(self.plan.holding_run(), queue)
    }

    /// The run's AMQP connection, opened on first use (and again if it broke).
    pub(super) async fn amqp(&self) -> Result<Arc<lapin::Connection>, StepError> {
        let mut slot = self.amqp.lock().await;
        if let Some(connection) = slot.as_ref()
            && connection.status().connected()
        {
            return Ok(connection.clone());
        }
        let connection = Arc::new(
            amqp::connect(
                &self.group.broker,
                &self.password,
                &format!("run {}", self.plan.holding_run()),
            )
            .await?,
        );
        *slot = Some(connection.clone());
        Ok(connection)
    }

    /// Closes the run's AMQP connection, if one was opened.
    pub(super) async fn close_amqp(&self) {
        if let Some(connection) = self.amqp.lock().await.take()
            && let Ok(connection) = Arc::try_unwrap(connection)
        {
            amqp::close(&connection).await;
        }
    }

    /// A queue's (messages, consumers) now, or `None` when it does not exist.
    async fn counts(&self, queue: &str) -> Result<Option<(u32, u32)>, StepError> {
        let connection = self.amqp().await?;
        Ok(amqp::queue_counts(&connection, &self.group.broker.display(), queue).await?)
    }

    /// The bindings the queue's backup recorded.
    async fn backed_up_bindings(&self, queue: &str) -> Vec<BindingInfo> {
        match self.queue_backup(queue).await {
            Some(Backup::Queue { bindings, .. }) => bindings,
            _ => vec![],
        }
    }

    /// The type of the holding queue of `queue`: the plan's (quorum on a cluster, classic on
    /// one node, decided at plan time). A plan of an older version has none: then a quorum
    /// queue is held in a quorum queue (its messages, transient ones too, survive a broker
    /// restart), any other in a classic one.
    async fn holding_type(&self, queue: &str) -> Result<QueueType, StepError> {
        if let Some(kind) = self.plan.holding_type() {
            return Ok(kind);
        }
        let backed_up = match self.queue_backup(queue).await {
            Some(Backup::Queue { arguments, .. }) => arguments
                .get("x-queue-type")
                .and_then(Value::as_str)
                .map(|t| t == "quorum"),
            _ => None,
        };
        let quorum = match backed_up {
            Some(quorum) => quorum,
            None => self
                .management
                .queue(queue)
                .await?
                .is_some_and(|q| q.is_quorum()),
        };
        Ok(if quorum {
            QueueType::Quorum
        } else {
            QueueType::Classic
        })
    }

    /// Stage 1: the holding topology made, the queue's bindings routed through it. With
    /// `idle` (its consumers are known to be stopped), new messages are held and its backlog
    /// moved at once, so that little is left to move in the critical window; without, a
    /// backlog of at least the plan's `hold_while_running_at` is moved while the consumers run.
    pub(super) async fn hold(&self, queue: &str, idle: bool) -> Result<Done, StepError> {
        let h = self.holding_of(queue);
        let kind = self.holding_type(queue).await?;
        self.journal_event(Event::Hold {
            queue: queue.to_string(),
            holding: h.holding.clone(),
            exchange: h.exchange.clone(),
            alternate: h.alternate.clone(),
            kind: Some(kind),
        })
        .await?;
        let m = &self.management;
        let none = BTreeMap::new();
        m.declare_exchange(&h.alternate, "fanout", &none).await?;
        m.declare_queue(&h.holding, &holding_queue(kind)).await?;
        m.bind(&binding(&h.alternate, &h.holding, "queue", ""))
            .await?;
        let mut arguments = BTreeMap::new();
        arguments.insert(
            "alternate-exchange".to_string(),
            Value::String(h.alternate.clone()),
        );
        m.declare_exchange(&h.exchange, "fanout", &arguments)
            .await?;
        crate::failpoint::reach("hold", queue).await;
        let exists = m.queue(queue).await?.is_some();
        if exists {
            m.bind(&binding(&h.exchange, queue, "queue", "")).await?;
        }
        let routes = self.route_through(queue, exists).await?;
        // Consumers may poll (basic.get) and so not show as consumers: only a plan that
        // knows them stopped says `idle`.
        let mut early = String::new();
        match self.counts(queue).await? {
            Some((messages, 0)) if idle => {
                m.unbind(&binding(&h.exchange, queue, "queue", "")).await?;
                let moved = self
                    .move_messages(queue, queue, &h.holding, u64::from(messages))
                    .await?
                    .moved;
                early = format!("; its consumer is stopped: {moved} messages held already");
            }
            // Its consumers still run: they and the mover share the queue (each message is
            // consumed or held) until as many as it had are moved; new messages still reach
            // it. Its stop then waits only for what arrived since.
            Some((messages, _)) if u64::from(messages) >= self.plan.hold_while_running_at() => {
                let backlog = u64::from(messages);
                let limits = mover::Limits {
                    chase: std::time::Duration::ZERO,
                    ..mover::Limits::for_backlog(backlog)
                };
                let moved = self
                    .move_within(queue, queue, &h.holding, backlog, limits)
                    .await?
                    .moved;
                early = format!(
                    "; {moved} of its {backlog} messages held already, while its consumers run"
                );
            }
            _ => {}
        }
        Ok(Done::new(format!(
            "{} bindings routed through {}{early}",
            routes.len(),
            h.exchange
        )))
    }

    /// Routes every binding of the queue (those backed up, and any it has now but through the
    /// holding exchange: a consumer that started meanwhile may have bound it again) through
    /// the holding exchange, and removes its direct ones. Returns the routes.
    async fn route_through(
        &self,
        queue: &str,
        exists: bool,
    ) -> Result<Vec<BindingInfo>, StepError> {
        let h = self.holding_of(queue);
        let m = &self.management;
        let direct: Vec<BindingInfo> = if exists {
            m.bindings_of(queue)
                .await?
                .into_iter()
                .filter(|b| !is_holding(&b.source))
                .collect()
        } else {
            vec![]
        };
        let routes = union(self.backed_up_bindings(queue).await, direct.clone());
        for b in &routes {
            m.bind(&redirect(b, &h.exchange, "exchange")).await?;
        }
        for b in &direct {
            m.unbind(b).await?;
        }
        Ok(routes)
    }

    /// Stage 2: new messages held, the queue emptied into the holding queue, deleted when
    /// empty, declared with `settings`, and receiving new messages again.
    pub(super) async fn recreate_held(
        &self,
        queue: &str,
        settings: &QueueSettings,
    ) -> Result<Done, StepError> {
        let h = self.holding_of(queue);
        let m = &self.management;
        if !m.exchange_exists(&h.exchange).await? {
            return Err(StepError::from(format!(
                "the holding exchange {} is missing: refusing to touch {queue}",
                h.exchange
            )));
        }
        // Nothing may still consume it (a consumer would lose its queue), and nothing may
        // still feed it but the holding exchange (the move would chase it, and a message
        // would reach both it and the holding queue).
        let counts = self.counts(queue).await?;
        if let Some((_, consumers)) = counts
            && consumers > 0
        {
            return Err(StepError::from(format!(
                "{queue} still has {consumers} consumers: refusing to take it out of service \
                 (is a service of the group still running?)"
            )));
        }
        // Where the queue lives (a classic queue's node, a quorum queue's leader): declared
        // again there, not on the node roll happens to talk to. A cluster's services connect
        // to chosen nodes; a classic queue moved to another one goes down with that node.
        let home = match counts {
            Some(_) => m.queue(queue).await?.and_then(|q| q.leader.or(q.node)),
            None => None,
        };
        self.route_through(queue, counts.is_some()).await?;
        m.unbind(&binding(&h.exchange, queue, "queue", "")).await?;
        crate::failpoint::reach("recreate", queue).await;
        let moved = self.empty_into(queue, queue, &h.holding).await?;
        match (
            m.declare_queue_on(queue, settings, home.as_deref()).await,
            &home,
        ) {
            (Ok(()), _) => {}
            // Its node cannot take it (stopped since): anywhere is better than nowhere.
            (Err(err), Some(node)) => {
                tracing::warn!(
                    "{queue}: not declared on {node} ({err}); declared where roll is connected"
                );
                m.declare_queue(queue, settings).await?;
            }
            (Err(err), None) => return Err(err.into()),
        }
        m.bind(&binding(&h.exchange, queue, "queue", "")).await?;
        Ok(Done::new(format!(
            "{moved} messages held in {}; {queue} declared again",
            h.holding
        )))
    }

    /// Moves every message of `from` into `to` (`queue` names the recreated queue in the
    /// journal), then deletes `from` if empty; again while something put more in. Refuses
    /// while `from` has consumers. Nothing to do when `from` is gone. A source that keeps
    /// filling is switched away from everything that feeds it through a binding, once; if it
    /// still fills (the default exchange, dead-lettering), the move stops with an error and
    /// nothing is deleted.
    async fn empty_into(&self, queue: &str, from: &str, to: &str) -> Result<u64, StepError> {
        let mut total = 0;
        let mut rerouted = false;
        for _ in 0..EMPTY_ATTEMPTS {
            let Some((messages, consumers)) = self.counts(from).await? else {
                return Ok(total);
            };
            if consumers > 0 {
                return Err(StepError::from(format!(
                    "{from} still has {consumers} consumers: refusing to delete it \
                     (is a service of the group still running?)"
                )));
            }
            let report = self
                .move_messages(queue, from, to, u64::from(messages))
                .await?;
            total += report.moved;
            if report.filling {
                if from == queue && !rerouted {
                    self.route_through(queue, true).await?;
                    rerouted = true;
                    continue;
                }
                return Err(StepError::from(format!(
                    "{from} keeps receiving messages that none of its bindings brings (the \
                     default exchange, or dead-lettering): they cannot be switched to {to}; \
                     {total} moved, and {from} was not deleted"
                )));
            }
            match self.management.delete_queue(from, true).await {
                Ok(()) => return Ok(total),
                // Not empty; or a quorum queue, for which the broker refuses the flag itself.
                Err(BrokerError::Http { status: 400, .. }) => {
                    if self.delete_quorum_if_empty(from).await? {
                        return Ok(total);
                    }
                }
                Err(err) => return Err(err.into()),
            }
        }
        Err(StepError::from(format!(
            "{from} is still not empty after {EMPTY_ATTEMPTS} moves: something publishes \
             to it directly; it was not deleted"
        )))
    }

    /// After a delete with `if-empty` was refused: deletes `from` if it is a quorum queue that
    /// a passive declare finds empty and unconsumed (RabbitMQ 3.x refuses `if-empty` for a
    /// quorum queue whatever it holds, so the check is made here, just before the delete).
    /// True when it is gone; false for a classic queue (it was not empty) or a quorum queue
    /// that is not empty. Only a message published straight to the quorum queue (its bindings
    /// already go elsewhere) in the moment between the two could be lost.
    async fn delete_quorum_if_empty(&self, from: &str) -> Result<bool, StepError> {
        let quorum = match self.management.queue(from).await? {
            Some(info) => info.is_quorum(),
            None => return Ok(true),
        };
        if !quorum {
            return Ok(false);
        }
        match self.counts(from).await? {
            None => Ok(true),
            Some((0, 0)) => {
                self.management.delete_queue(from, false).await?;
                Ok(true)
            }
            Some(_) => Ok(false),
        }
    }

    /// Moves the messages of `from` into `to`, and journals what it did (a move that failed
    /// too, with the messages it may have left on both).
    async fn move_messages(
        &self,
        queue: &str,
        from: &str,
        to: &str,
        before: u64,
    ) -> Result<mover::MoveReport, StepError> {
        let limits = mover::Limits::for_backlog(before);
        self.move_within(queue, from, to, before, limits).await
    }

    /// [`Self::move_messages`] within `limits`.
    async fn move_within(
        &self,
        queue: &str,
        from: &str,
        to: &str,
        before: u64,
        limits: mover::Limits,
    ) -> Result<mover::MoveReport, StepError> {
        let connection = self.amqp().await?;
        if before > 0 {
            let moving = super::State::Moving {
                messages: before,
                from: from.to_string(),
                to: to.to_string(),
            };
            self.progress(BROKER, "moving", moving);
        }
        let broker = self.group.broker.display();
        let key = (from.to_string(), to.to_string());
        let mut on_both = self.on_both.lock().await.remove(&key).unwrap_or_default();
        let before_on_both = on_both.len();
        let tell = self.telling(from, to, before, limits.deadline);
        let moved = mover::move_all_telling(
            &connection,
            &broker,
            from,
            to,
            limits,
            &mut on_both,
            Some(&tell),
        )
        .await;
        let after_on_both = on_both.len();
        if !on_both.is_empty() {
            self.on_both.lock().await.insert(key, on_both);
        }
        let (report, failed) = match moved {
            Ok(report) => (report, None),
            Err(failure) => (failure.report, Some(failure.error)),
        };
        let ended = super::State::Moved {
            moved: report.moved,
            from: from.to_string(),
            to: to.to_string(),
            done: true,
        };
        self.progress(BROKER, "moving", ended);
        let added = (after_on_both + report.absorbed).saturating_sub(before_on_both);
        let record = MoveRecord {
            by: self.purpose(),
            queue: queue.to_string(),
            from: from.to_string(),
            to: to.to_string(),
            before,
            moved: report.moved,
            redelivered: report.redelivered,
            uncertain: report.uncertain,
            on_both: added,
            absorbed: report.absorbed,
        };
        if failed.is_none() || report.moved > 0 || report.uncertain > 0 || added > 0 {
            self.journal_event(record.event(report.seconds)).await?;
            self.moves.lock().await.push(record);
        }
        match failed {
            Some(error) => Err(error.into()),
            None => Ok(report),
        }
    }

    /// What a move tells as its count grows: the count (for a live display), and every
    /// [`super::progress::STILL_RUNNING_EVERY`] a line saying how far it got of the `before`
    /// messages it began with, and its deadline.
    fn telling<'a>(
        &'a self,
        from: &'a str,
        to: &'a str,
        before: u64,
        deadline: Duration,
    ) -> impl Fn(u64) + Send + Sync + 'a {
        let began = Instant::now();
        let said = AtomicU64::new(0);
        let every = self.still_running_every.as_millis().max(1);
        move |moved: u64| {
            let count = super::State::Moved {
                moved,
                from: from.to_string(),
                to: to.to_string(),
                done: false,
            };
            self.progress(BROKER, "moving", count);
            let times = (began.elapsed().as_millis() / every) as u64;
            if times > said.load(Ordering::Relaxed) {
                said.store(times, Ordering::Relaxed);
                let running = super::State::Running {
                    seconds: began.elapsed().as_secs_f64(),
                    deadline: Some(deadline),
                    doing: Some(format!("{moved} of {before} messages moved {from} -> {to}")),
                };
                self.progress(BROKER, "moving", running);
            }
        }
    }

    /// Stage 4: the held messages moved into the queue, its bindings back, the holding
    /// topology deleted.
    pub(super) async fn release(&self, queue: &str) -> Result<Done, StepError> {
        let h = self.holding_of(queue);
        let m = &self.management;
        if m.queue(queue).await?.is_none() {
            return Err(StepError::from(format!(
                "{queue} is not on the broker: its held messages stay in {}",
                h.holding
            )));
        }
        let mut moved = 0;
        let mut bound = 0;
        if m.exchange_exists(&h.exchange).await? {
            m.bind(&binding(&h.exchange, queue, "queue", "")).await?;
            crate::failpoint::reach("release", queue).await;
            let routes = union(
                self.backed_up_bindings(queue).await,
                m.bindings_to_exchange(&h.exchange).await?,
            );
            moved += self.drain(queue, &h.holding).await?;
            for b in &routes {
                m.bind(&redirect(b, queue, "queue")).await?;
            }
            bound = routes.len();
            m.delete_exchange(&h.exchange).await?;
        }
        m.delete_exchange(&h.alternate).await?;
        moved += self.empty_into(queue, &h.holding, queue).await?;
        Ok(Done::new(format!(
            "{moved} held messages moved into {queue}, {bound} bindings back"
        )))
    }

    /// Moves what the holding queue has into the queue (nothing when it is gone).
    async fn drain(&self, queue: &str, holding: &str) -> Result<u64, StepError> {
        match self.counts(holding).await? {
            Some((messages, _)) => Ok(self
                .move_messages(queue, holding, queue, u64::from(messages))
                .await?
                .moved),
            None => Ok(0),
        }
    }

    /// Recreation without preservation (`--allow-message-loss`): the queue is deleted with
    /// its messages (counted and journaled) and declared with `settings` and its bindings.
    pub(super) async fn recreate_lossy(
        &self,
        queue: &str,
        settings: &QueueSettings,
        bindings: &[BindingInfo],
    ) -> Result<Done, StepError> {
        let m = &self.management;
        let mut dropped = 0;
        if let Some((messages, _)) = self.counts(queue).await? {
            let current = m.queue(queue).await?;
            let same = current.is_some_and(|q| {
                crate::broker::equivalence::differences(
                    &QueueSettings::new(q.durable, q.auto_delete, q.arguments),
                    settings,
                )
                .is_empty()
            });
            if !same {
                dropped = u64::from(messages);
                self.journal_event(Event::Dropped {
                    by: self.purpose(),
                    queue: queue.to_string(),
                    messages: dropped,
                })
                .await?;
                self.drops
                    .lock()
                    .await
                    .push((self.purpose(), queue.to_string(), dropped));
                m.delete_queue(queue, false).await?;
            }
        }
        m.declare_queue(queue, settings).await?;
        for b in bindings {
            m.bind(b).await?;
        }
        Ok(Done::new(format!(
            "{queue} recreated with {} bindings; {dropped} messages deleted with it",
            bindings.len()
        )))
    }

    /// What happened to a queue's messages in this run (or this rollback), from the moves
    /// and drops journaled.
    pub(super) async fn account(&self, queue: &str, without_consumer: Option<f64>) -> QueueAccount {
        let moves = self.moves.lock().await;
        let by = self.purpose();
        let mine = || moves.iter().filter(|m| m.queue == queue && m.by == by);
        let dropped: u64 = self
            .drops
            .lock()
            .await
            .iter()
            .filter(|(b, q, _)| q == queue && *b == by)
            .map(|(_, _, n)| n)
            .sum();
        let preserved = self.preserving();
        let unsure: u64 = mine().map(|m| m.uncertain).sum();
        let left_on_both = mine()
            .map(|m| m.on_both)
            .sum::<u64>()
            .saturating_sub(mine().map(|m| m.absorbed).sum());
        let maybe_twice = unsure + left_on_both + self.interrupted_moves(queue);
        QueueAccount {
            queue: queue.to_string(),
            preserved,
            before: if preserved {
                mine().find(|m| m.from == queue).map_or(0, |m| m.before)
            } else {
                dropped
            },
            moved_out: mine().filter(|m| m.from == queue).map(|m| m.moved).sum(),
            moved_in: mine().filter(|m| m.to == queue).map(|m| m.moved).sum(),
            duplicated: maybe_twice,
            duplicates_known: maybe_twice == 0,
            lost: dropped,
            without_consumer_seconds: without_consumer,
        }
    }

    /// Journals the accounts of the queues and returns them.
    pub(super) async fn accounts(&self, queues: Vec<(String, Option<f64>)>) -> Vec<QueueAccount> {
        let mut all = vec![];
        for (queue, seconds) in queues {
            let account = self.account(&queue, seconds).await;
            let _ = self.journal_event(Event::Accounted(account.clone())).await;
            all.push(account);
        }
        all
    }

    /// `rollback` in a rollback, else `upgrade`: tells their moves apart in the journal.
    pub(super) fn purpose(&self) -> RunKind {
        P::KIND
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(source: &str, key: &str) -> BindingInfo {
        binding(source, "q", "queue", key)
    }

    #[test]
    fn holding_queues_have_nothing_a_quorum_queue_refuses() {
        let quorum = holding_queue(QueueType::Quorum);
        assert!(quorum.durable && !quorum.auto_delete);
        assert_eq!(
            quorum.arguments.get("x-queue-type"),
            Some(&Value::from("quorum"))
        );
        assert_eq!(quorum.arguments.len(), 1);
        let rules = crate::broker::equivalence::Rules::of_version("3.10.8");
        assert!(rules.refusals(&quorum).is_empty());
        let classic = holding_queue(QueueType::Classic);
        assert!(classic.durable && classic.arguments.is_empty());
        assert_eq!(classic.queue_type(), QueueType::Classic);
    }

    #[test]
    fn union_keeps_the_first_and_adds_what_is_new() {
        let all = union(
            vec![b("xpublic", "v03.#")],
            vec![
                b("xpublic", "v03.#"),
                b("xpublic", "v02.#"),
                b("other", "v03.#"),
            ],
        );
        let keys: Vec<(String, String)> = all
            .iter()
            .map(|x| (x.source.clone(), x.routing_key.clone()))
            .collect();
        assert_eq!(
            keys,
            vec![
                ("xpublic".to_string(), "v03.#".to_string()),
                ("xpublic".to_string(), "v02.#".to_string()),
                ("other".to_string(), "v03.#".to_string()),
            ]
        );
    }

    #[test]
    fn redirect_keeps_the_key_and_arguments() {
        let mut x = b("xpublic", "v03.#");
        x.arguments
            .insert("x-match".into(), Value::String("all".into()));
        let r = redirect(&x, "roll.hold.r.q", "exchange");
        assert_eq!(r.destination, "roll.hold.r.q");
        assert_eq!(r.destination_type, "exchange");
        assert_eq!(r.routing_key, "v03.#");
        assert_eq!(r.arguments, x.arguments);
    }
}
