//! Moving messages between queues over AMQP without losing any: the source is consumed with
//! manual acknowledgements (a bounded prefetch), each message is published to the destination
//! queue through the default exchange with `mandatory` and publisher confirms, and the
//! messages are acknowledged on the source only after the broker confirmed every one of them,
//! routed, on the destination. Properties and headers travel with the message. A crash in the
//! middle can duplicate a message (published, not yet acknowledged: the broker redelivers it),
//! never lose one. Publishing is pipelined: up to [`BATCH`] messages wait for their confirms
//! at a time, and at most that many are unacknowledged on the source: a move cut short (the
//! connection lost, the process killed) can leave at most that many on both queues, and
//! says how many it may have ([`MoveReport::uncertain`]).
//!
//! Every call has a deadline, and so has the move ([`Limits`]): a source that keeps being
//! filled (by the default exchange, by dead-lettering: routes no binding change switches
//! away) is chased for a bounded time after its backlog is moved, then the move stops and
//! says so ([`MoveReport::filling`]).

use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions,
    BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
};
use lapin::{Acker, Channel, Confirmation, Connection, Consumer, PublisherConfirm};
use serde::Serialize;

use super::{BrokerError, DEFAULT_TIMEOUT, amqp};

/// Messages in flight (delivered, published, awaiting their confirm) at most.
pub const BATCH: u16 = 500;

/// How long the source may stay silent before its message count is checked.
pub const IDLE: Duration = Duration::from_millis(50);

/// What a move did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MoveReport {
    /// Messages confirmed on the destination and removed from the source.
    pub moved: u64,
    /// Messages the source had delivered before (to this mover, to a consumer, to a peek):
    /// a count of what the broker flagged, not of duplicates.
    pub redelivered: u64,
    /// Messages in flight when the move failed (published, not known to be stored; or
    /// stored, not known to be removed from the source): each may now be on both.
    pub uncertain: u64,
    /// Messages the source gave back that an earlier, failed move had stored on the
    /// destination already ([`OnBoth`]): removed from the source, not published again.
    pub absorbed: u64,
    /// The move stopped while the source was still being filled (see [`Limits::chase`]).
    pub filling: bool,
    pub seconds: f64,
}

/// How long a move may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The whole move, at most.
    pub deadline: Duration,
    /// How long the source is chased once as many messages as it held at the start are
    /// moved.
    pub chase: Duration,
    /// How long the source may stay silent before its message count is checked (an empty
    /// source ends the move).
    pub idle: Duration,
}

impl Limits {
    /// For a source holding `backlog` messages: a minute, plus a second for every thousand
    /// messages (the slowest rate a move should ever have); a source still filling 5 s after
    /// its backlog is moved is left.
    pub fn for_backlog(backlog: u64) -> Limits {
        Limits {
            deadline: Duration::from_secs(60 + backlog / 1000),
            chase: Duration::from_secs(5),
            idle: IDLE,
        }
    }
}

/// Messages a failed move left on both queues for sure: confirmed on the destination, never
/// acknowledged on the source (the move failed before it sent the acknowledgement). The
/// source gives them back (flagged redelivered); the next move between the same queues
/// acknowledges each of them without publishing it again, so none is there twice. Kept as a
/// count per fingerprint (body and properties): messages with the same content are counted,
/// never merged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OnBoth(std::collections::BTreeMap<u64, u32>);

impl OnBoth {
    /// Counts these deliveries, stored on the destination and not acknowledged.
    fn add_all(&mut self, stored: &[Delivery]) {
        for delivery in stored {
            *self.0.entry(fingerprint(delivery)).or_insert(0) += 1;
        }
    }

    /// True (and counted off) when a copy of this delivery is on the destination already.
    fn take(&mut self, delivery: &Delivery) -> bool {
        let key = fingerprint(delivery);
        match self.0.get_mut(&key) {
            Some(n) if *n > 1 => {
                *n -= 1;
                true
            }
            Some(_) => {
                self.0.remove(&key);
                true
            }
            None => false,
        }
    }

    /// How many messages it counts.
    pub fn len(&self) -> u64 {
        self.0.values().map(|n| u64::from(*n)).sum()
    }

    /// True when it counts none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A message's identity for [`OnBoth`]: its body and every property and header.
fn fingerprint(delivery: &Delivery) -> u64 {
    let hash = crate::hash::fnv1a_bytes(0xcbf2_9ce4_8422_2325, &delivery.data);
    crate::hash::fnv1a_bytes(hash ^ 0xff, format!("{:?}", delivery.properties).as_bytes())
}

/// A move that failed, with what it did before.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct MoveFailure {
    pub report: MoveReport,
    pub error: BrokerError,
}

struct Mover<'a> {
    broker: &'a str,
    from: &'a str,
    to: &'a str,
    channel: Channel,
    /// Delivered, waiting for their confirm (`None`: on the destination already).
    pending: Vec<(Delivery, Option<PublisherConfirm>)>,
    report: MoveReport,
    on_both: &'a mut OnBoth,
}

impl Mover<'_> {
    fn amqp(&self, what: &str, err: lapin::Error) -> BrokerError {
        amqp::error(
            self.broker,
            format!("{what} ({} -> {})", self.from, self.to),
            &err,
        )
    }

    fn timed_out(&self, what: &str) -> BrokerError {
        BrokerError::Timeout {
            broker: self.broker.to_string(),
            what: format!("{what} ({} -> {})", self.from, self.to),
            after: DEFAULT_TIMEOUT,
        }
    }

    /// Publishes one delivered message to the destination (its confirm awaited later).
    async fn forward(&mut self, delivery: Delivery) -> Result<(), BrokerError> {
        if delivery.redelivered {
            self.report.redelivered += 1;
            if self.on_both.take(&delivery) {
                self.report.absorbed += 1;
                self.pending.push((delivery, None));
                if self.pending.len() >= usize::from(BATCH) {
                    self.settle().await?;
                }
                return Ok(());
            }
        }
        let publish = self.channel.basic_publish(
            "".into(),
            self.to.into(),
            BasicPublishOptions {
                mandatory: true,
                immediate: false,
            },
            &delivery.data,
            delivery.properties.clone(),
        );
        // A connection the broker blocked (a memory or disk alarm) waits here.
        let confirm = match tokio::time::timeout(DEFAULT_TIMEOUT, publish).await {
            // Perhaps sent, perhaps stored: this one and those awaiting their confirms.
            Err(_) => {
                self.report.uncertain += 1 + self.pending.len() as u64;
                return Err(self.timed_out("basic.publish"));
            }
            // Refused before it was sent (the channel or connection is gone): only those
            // awaiting their confirms may be on the destination.
            Ok(Err(e)) => {
                self.report.uncertain += self.pending.len() as u64;
                return Err(self.amqp("basic.publish", e));
            }
            Ok(Ok(confirm)) => confirm,
        };
        self.pending.push((delivery, Some(confirm)));
        if self.pending.len() >= usize::from(BATCH) {
            self.settle().await?;
            crate::failpoint::reach("move", self.from).await;
        }
        Ok(())
    }

    /// Waits for the confirms of the messages in flight; acknowledges them on the source when
    /// every one was stored on the destination, else gives them all back to the source.
    async fn settle(&mut self) -> Result<(), BrokerError> {
        let pending = std::mem::take(&mut self.pending);
        let Some(last) = pending.last().map(|(d, _)| d.acker.clone()) else {
            return Ok(());
        };
        let count = pending.len() as u64;
        let stored = self.confirmed(pending, &last).await?;
        crate::failpoint::reach("confirmed", self.from).await;
        if !self.channel.status().connected() {
            // Stored on the destination, never acknowledged on the source: the source gives
            // them back, and the next move does not store them again.
            self.on_both.add_all(&stored);
            return Err(BrokerError::ConnectionLost {
                broker: self.broker.to_string(),
                what: format!("move ({} -> {})", self.from, self.to),
                detail: "the channel closed before the acknowledgement".into(),
            });
        }
        let acked = timed(
            self,
            "basic.ack",
            last.ack(BasicAckOptions { multiple: true }),
        )
        .await;
        if let Err(err) = acked {
            // Stored on the destination, not known to be removed from the source.
            self.report.uncertain += count;
            return Err(err);
        }
        self.report.moved += count;
        Ok(())
    }

    /// Awaits the confirms of `pending`: all of them stored on the destination, or else every
    /// one goes back to the source (`last` acknowledges up to the last of them), those stored
    /// counted in [`OnBoth`] so that the next move does not store them twice.
    async fn confirmed(
        &mut self,
        pending: Vec<(Delivery, Option<PublisherConfirm>)>,
        last: &Acker,
    ) -> Result<Vec<Delivery>, BrokerError> {
        let mut refused = None;
        let mut stored: Vec<Delivery> = vec![];
        let total = pending.len();
        for (at, (delivery, confirm)) in pending.into_iter().enumerate() {
            let Some(confirm) = confirm else {
                stored.push(delivery);
                continue;
            };
            match timed(self, "publisher confirm", confirm).await {
                Ok(Confirmation::Ack(None)) => stored.push(delivery),
                Ok(other) => {
                    refused.get_or_insert(match other {
                        Confirmation::Ack(Some(_)) => "unroutable: does the queue exist?",
                        Confirmation::Nack(_) => "negative confirm",
                        _ => "no confirm",
                    });
                }
                Err(err) => {
                    // Those stored are on both for sure (the acknowledgement was never sent);
                    // the rest may be.
                    self.on_both.add_all(&stored);
                    self.report.uncertain += (total - at) as u64;
                    self.give_back(last).await;
                    return Err(err);
                }
            }
        }
        let Some(why) = refused else {
            return Ok(stored);
        };
        self.on_both.add_all(&stored);
        self.give_back(last).await;
        Err(BrokerError::Amqp {
            broker: self.broker.to_string(),
            what: format!("move ({} -> {})", self.from, self.to),
            detail: format!(
                "the broker did not store a message on {} ({why}); they stay on {}",
                self.to, self.from
            ),
        })
    }

    async fn give_back(&self, last: &Acker) {
        let nack = last.nack(BasicNackOptions {
            multiple: true,
            requeue: true,
        });
        let _ = tokio::time::timeout(DEFAULT_TIMEOUT, nack).await;
    }
}

/// Moves every message of `from` into `to` (both must exist), until `from` is empty, within
/// `limits`. `connection` is used to open a channel for the move (and one to count).
pub async fn move_all(
    connection: &Connection,
    broker: &str,
    from: &str,
    to: &str,
    limits: Limits,
    on_both: &mut OnBoth,
) -> Result<MoveReport, MoveFailure> {
    let started = Instant::now();
    let failed = |error: BrokerError| MoveFailure {
        report: MoveReport::default(),
        error,
    };
    let channel = tokio::time::timeout(DEFAULT_TIMEOUT, connection.create_channel())
        .await
        .map_err(|_| {
            failed(BrokerError::Timeout {
                broker: broker.to_string(),
                what: format!("open channel ({from} -> {to})"),
                after: DEFAULT_TIMEOUT,
            })
        })?
        .map_err(|e| {
            failed(amqp::error(
                broker,
                format!("open channel ({from} -> {to})"),
                &e,
            ))
        })?;
    let mut mover = Mover {
        broker,
        from,
        to,
        channel,
        pending: Vec::new(),
        report: MoveReport::default(),
        on_both,
    };
    let result =
        match tokio::time::timeout(limits.deadline, run(&mut mover, connection, limits)).await {
            Ok(result) => result,
            Err(_) => {
                mover.report.uncertain += mover.pending.len() as u64;
                Err(BrokerError::Timeout {
                    broker: broker.to_string(),
                    what: format!("move ({from} -> {to})"),
                    after: limits.deadline,
                })
            }
        };
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        mover.channel.close(200, "move done".into()),
    )
    .await;
    mover.report.seconds = started.elapsed().as_secs_f64();
    match result {
        Ok(()) => {
            // The source is empty: what was counted and never came back was removed from
            // it after all.
            *mover.on_both = OnBoth::default();
            Ok(mover.report)
        }
        Err(error) => Err(MoveFailure {
            report: mover.report,
            error,
        }),
    }
}

/// Runs an AMQP call of the move within the default deadline.
async fn timed<T>(
    mover: &Mover<'_>,
    what: &str,
    call: impl std::future::Future<Output = lapin::Result<T>>,
) -> Result<T, BrokerError> {
    match tokio::time::timeout(DEFAULT_TIMEOUT, call).await {
        Err(_) => Err(mover.timed_out(what)),
        Ok(Err(e)) => Err(mover.amqp(what, e)),
        Ok(Ok(value)) => Ok(value),
    }
}

/// The move itself, on the mover's channel: publisher confirms and the prefetch set, the
/// source consumed until it is empty (or chased for too long), then the deliveries already
/// on their way when the consumer is cancelled.
async fn run(
    mover: &mut Mover<'_>,
    connection: &Connection,
    limits: Limits,
) -> Result<(), BrokerError> {
    let channel = mover.channel.clone();
    timed(
        mover,
        "confirm.select",
        channel.confirm_select(ConfirmSelectOptions::default()),
    )
    .await?;
    // Per consumer (not global): quorum queues refuse a global prefetch.
    timed(
        mover,
        "basic.qos",
        channel.basic_qos(BATCH, BasicQosOptions { global: false }),
    )
    .await?;
    let backlog = amqp::queue_counts(connection, mover.broker, mover.from)
        .await?
        .map_or(0, |(messages, _)| u64::from(messages));
    let started = Instant::now();
    let tag = format!("roll-mover-{}", std::process::id());
    let mut consumer = timed(
        mover,
        "basic.consume",
        channel.basic_consume(
            mover.from.into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            Default::default(),
        ),
    )
    .await?;
    mover
        .consume(&mut consumer, connection, backlog, started, limits)
        .await?;
    // Deliveries already on their way when the consumer is cancelled are moved too.
    timed(
        mover,
        "basic.cancel",
        channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()),
    )
    .await?;
    while let Ok(Some(Ok(delivery))) = tokio::time::timeout(limits.idle, consumer.next()).await {
        mover.forward(delivery).await?;
    }
    mover.settle().await
}

impl Mover<'_> {
    /// Forwards what `consumer` delivers until the source is empty, or until it has been
    /// chased for [`Limits::chase`] once `backlog` messages are moved (or half the deadline
    /// from `started` is gone): then [`MoveReport::filling`].
    async fn consume(
        &mut self,
        consumer: &mut Consumer,
        connection: &Connection,
        backlog: u64,
        started: Instant,
        limits: Limits,
    ) -> Result<(), BrokerError> {
        let mut caught_up: Option<Instant> = None;
        loop {
            // The backlog moved (or the time it should take gone): the chase is on the clock.
            if caught_up.is_none()
                && (self.report.moved + self.pending.len() as u64 >= backlog
                    || started.elapsed() > limits.deadline / 2)
            {
                caught_up = Some(Instant::now());
            }
            if caught_up.is_some_and(|t| t.elapsed() > limits.chase) {
                self.report.filling = true;
                return Ok(());
            }
            match tokio::time::timeout(limits.idle, consumer.next()).await {
                Ok(Some(Ok(delivery))) => self.forward(delivery).await?,
                Ok(Some(Err(e))) => return Err(self.consumer_lost(self.amqp("delivery", e))),
                Ok(None) => {
                    return Err(self.consumer_lost(BrokerError::Amqp {
                        broker: self.broker.to_string(),
                        what: format!("move ({} -> {})", self.from, self.to),
                        detail: "the broker cancelled the consumer (was the queue deleted?)".into(),
                    }));
                }
                Err(_) => {
                    if self.source_empty(connection).await? {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// The consumer ended: the messages in flight may be on both queues.
    fn consumer_lost(&mut self, error: BrokerError) -> BrokerError {
        self.report.uncertain += self.pending.len() as u64;
        error
    }

    /// The source was silent: settles what is in flight; true when the source is empty.
    async fn source_empty(&mut self, connection: &Connection) -> Result<bool, BrokerError> {
        self.settle().await?;
        if self.report.moved > 0 {
            crate::failpoint::reach("move", self.from).await;
        }
        let left = amqp::queue_counts(connection, self.broker, self.from).await?;
        Ok(left.is_none_or(|(messages, _)| messages == 0))
    }
}
