//! Moving messages between queues over AMQP without losing any: the source is consumed with
//! manual acknowledgements (a bounded prefetch), each message is published to the destination
//! queue through the default exchange with `mandatory` and publisher confirms, and a message
//! is acknowledged on the source only after the broker confirmed it, routed, on the
//! destination. Properties and headers travel with the message. A crash in the middle can
//! duplicate a message (published, not yet acknowledged: the broker redelivers it), never lose
//! one.
//!
//! The move is pipelined, on one channel of its own: deliveries keep being published while
//! earlier confirms are outstanding, and as soon as a run of the oldest messages is confirmed
//! (lapin resolves confirms in publishing order) it is acknowledged on the source with one
//! `multiple` acknowledgement. The prefetch is [`WINDOW`]: at most that many messages are
//! delivered and not acknowledged at a time, so a move cut short (the connection lost, the
//! process killed) leaves at most that many on both queues, and says how many it may have
//! ([`MoveReport::uncertain`]). A message the broker returns (unroutable) or refuses stops the
//! move: the confirms still outstanding are awaited, every message not acknowledged is given
//! back to the source, and those the destination stored are counted in [`OnBoth`].
//!
//! Every call has a deadline, and so has the move ([`Limits`]): a source that keeps being
//! filled (by the default exchange, by dead-lettering: routes no binding change switches
//! away) is chased for a bounded time after its backlog is moved, then the move stops and
//! says so ([`MoveReport::filling`]).
//!
//! [`move_all`] opens its own channel: calls on one connection may run at the same time (one
//! [`OnBoth`] each), and [`move_many`] runs several moves so.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_lite::Stream;
use lapin::Acker;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions,
    BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
};
use lapin::types::ShortString;
use lapin::{BasicProperties, Channel, Confirmation, Connection, Consumer, PublisherConfirm};
use serde::Serialize;

use super::{BrokerError, DEFAULT_TIMEOUT, amqp};

/// Messages delivered and not yet acknowledged on the source, at most (the prefetch): in
/// flight to the destination, or stored there and awaiting their acknowledgement. A move cut
/// short leaves at most this many on both queues.
pub const WINDOW: u16 = 4096;

/// Confirmed messages acknowledged together at most (sooner when nothing else is to do).
const ACK_EVERY: usize = 512;

/// Events handled before the move lets other tasks run.
const YIELD_EVERY: u32 = 1024;

/// How long the source may stay silent before its message count is checked.
pub const IDLE: Duration = Duration::from_millis(50);

/// How often a move tells its count ([`move_all_telling`]), at most: the count is looked at
/// once per acknowledgement (up to [`ACK_EVERY`] messages), never per message.
pub const TELL_EVERY: Duration = Duration::from_millis(100);

/// Told the number of messages a move has moved so far.
pub type Tell<'a> = &'a (dyn Fn(u64) + Send + Sync);

/// What a move did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MoveReport {
    /// Messages confirmed on the destination and removed from the source.
    pub moved: u64,
    /// Messages the source had delivered before (to this mover, to a consumer, to a peek):
    /// a count of what the broker flagged, not of duplicates.
    pub redelivered: u64,
    /// Messages in flight when the move failed (published, not known to be stored; or
    /// stored, not known to be removed from the source): each may now be on both. At most
    /// [`WINDOW`].
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
pub struct OnBoth(BTreeMap<u64, u32>);

impl OnBoth {
    /// Counts a message (by its fingerprint) stored on the destination and not acknowledged.
    fn add(&mut self, fingerprint: u64) {
        *self.0.entry(fingerprint).or_insert(0) += 1;
    }

    /// True (and counted off) when a copy of a message with this fingerprint is on the
    /// destination already.
    fn take(&mut self, fingerprint: u64) -> bool {
        match self.0.get_mut(&fingerprint) {
            Some(n) if *n > 1 => {
                *n -= 1;
                true
            }
            Some(_) => {
                self.0.remove(&fingerprint);
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
fn fingerprint(data: &[u8], properties: &BasicProperties) -> u64 {
    let hash = crate::hash::fnv1a_bytes(0xcbf2_9ce4_8422_2325, data);
    crate::hash::fnv1a_bytes(hash ^ 0xff, format!("{properties:?}").as_bytes())
}

/// A move that failed, with what it did before.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct MoveFailure {
    pub report: MoveReport,
    pub error: BrokerError,
}

/// A publish handed to lapin (its frames queued on the first poll): resolves to the confirm
/// once the frames are written, and gives the body back.
type Sending = Pin<Box<dyn Future<Output = (lapin::Result<PublisherConfirm>, Vec<u8>)> + Send>>;

/// Where a delivered message is on its way to the destination.
enum Flight {
    /// On the destination already ([`OnBoth`]): nothing published.
    Absorbed,
    /// Published; the frames perhaps not written yet.
    Sending(Sending),
    /// Written; the broker's confirm not in yet.
    Confirming(PublisherConfirm),
    /// The broker's answer (or the failure that stands for it).
    Done(Fate),
}

/// What the broker did with a published message.
#[derive(Debug)]
enum Fate {
    /// Confirmed, nothing returned with the confirm.
    Stored,
    /// Confirmed with a returned (unroutable) message attached: the fingerprint of the
    /// message returned, which lapin may attach to another confirm of the same
    /// acknowledgement than the returned message's own.
    Returned(u64),
    /// Negatively confirmed (or not confirmed at all): not stored; perhaps with a returned
    /// message attached.
    Refused(Option<u64>, &'static str),
    /// The write or the confirm failed (the channel or connection went): perhaps stored.
    Failed(lapin::Error, &'static str),
}

impl Fate {
    fn of(result: lapin::Result<Confirmation>) -> Fate {
        let returned = |m: lapin::message::BasicReturnMessage| {
            fingerprint(&m.delivery.data, &m.delivery.properties)
        };
        match result {
            Ok(Confirmation::Ack(None)) => Fate::Stored,
            Ok(Confirmation::Ack(Some(message))) => Fate::Returned(returned(message)),
            Ok(Confirmation::Nack(message)) => {
                Fate::Refused(message.map(returned), "negative confirm")
            }
            Ok(Confirmation::NotRequested) => Fate::Refused(None, "no confirm"),
            Err(e) => Fate::Failed(e, "publisher confirm"),
        }
    }
}

/// A delivered message, in delivery order.
struct Entry {
    /// Acknowledges it on the source (with `multiple`, every message delivered before too).
    acker: Acker,
    properties: BasicProperties,
    /// Its body; empty while the publish holds it ([`Flight::Sending`]).
    data: Vec<u8>,
    /// When it was published (its confirm is due within the default deadline).
    since: Instant,
    flight: Flight,
}

impl Entry {
    fn fingerprint(&self) -> u64 {
        fingerprint(&self.data, &self.properties)
    }

    /// Moves the entry on as far as it goes without waiting: ready when its fate is known
    /// (or it was absorbed).
    fn poll_flight(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            match &mut self.flight {
                Flight::Absorbed | Flight::Done(_) => return Poll::Ready(()),
                Flight::Sending(sending) => match sending.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready((sent, data)) => {
                        self.data = data;
                        self.flight = match sent {
                            Ok(confirm) => Flight::Confirming(confirm),
                            Err(e) => Flight::Done(Fate::Failed(e, "basic.publish")),
                        };
                    }
                },
                Flight::Confirming(confirm) => match Pin::new(confirm).poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(result) => self.flight = Flight::Done(Fate::of(result)),
                },
            }
        }
    }
}

/// What a move that failed leaves, from the messages it had not acknowledged.
#[derive(Debug, Default, PartialEq, Eq)]
struct Left {
    /// Fingerprints of the messages stored on the destination for sure: for [`OnBoth`].
    on_both: Vec<u64>,
    /// Messages perhaps stored.
    uncertain: u64,
}

/// Sorts out the messages a failed move never acknowledged: `confirmed` (published and
/// confirmed by the broker), `refused` (negatively confirmed), `absorbed` (on the
/// destination already), `unknown` (their confirms never came), and `returned` (the
/// messages the broker returned as unroutable: confirmed, yet not stored). lapin attaches a
/// returned message to one of the confirms of the acknowledgement it came with, not always
/// to its own: which one was not stored is told by content, and when the content matches
/// none of them, none of the confirmed messages counts as stored for sure.
fn left_over(
    confirmed: Vec<u64>,
    refused: Vec<u64>,
    absorbed: Vec<u64>,
    unknown: u64,
    returned: Vec<u64>,
) -> Left {
    let mut stored = OnBoth::default();
    for fp in confirmed {
        stored.add(fp);
    }
    let mut not_stored = OnBoth::default();
    for fp in refused {
        not_stored.add(fp);
    }
    let mut sure = true;
    for fp in returned {
        if !stored.take(fp) && !not_stored.take(fp) {
            sure = false;
        }
    }
    let mut left = Left {
        on_both: absorbed,
        uncertain: unknown,
    };
    if sure {
        for (fp, n) in stored.0 {
            left.on_both.extend(std::iter::repeat_n(fp, n as usize));
        }
    } else {
        left.uncertain += stored.len();
    }
    left
}

/// Where the move is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The source is consumed.
    Consuming,
    /// The consumer is cancelled: the deliveries already on their way are moved too.
    Draining,
    /// Nothing more comes: the confirms still outstanding are awaited.
    Settling,
}

/// What woke the move (a value on the stack, never stored: a boxed delivery would cost an
/// allocation per message).
#[allow(clippy::large_enum_variant)]
enum Event {
    /// The oldest message in flight has its answer.
    Front,
    Delivery(Option<lapin::Result<Delivery>>),
    /// The timer: the source silent, a confirm late, the chase over?
    Tick,
    /// Nothing else to do: acknowledge what is stored.
    Flush,
}

struct Mover<'a> {
    broker: &'a str,
    from: &'a str,
    to: &'a str,
    to_key: ShortString,
    channel: Arc<Channel>,
    /// Every message delivered and not acknowledged, oldest first: the first `stored` are
    /// stored on the destination (or absorbed), the rest in flight.
    entries: VecDeque<Entry>,
    /// How many of the oldest entries are stored on the destination.
    stored: usize,
    /// Messages whose acknowledgement is under way (the first of `entries`).
    acking: u64,
    /// Messages delivered by the source in this move.
    delivered: u64,
    report: MoveReport,
    on_both: &'a mut OnBoth,
    /// Told the count as it grows, and when it was last told.
    tell: Option<(Tell<'a>, Instant)>,
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

    /// Messages delivered and not acknowledged.
    fn unacked(&self) -> u64 {
        self.entries.len() as u64
    }

    /// The oldest message not yet known to be stored.
    fn front(&self) -> Option<&Entry> {
        self.entries.get(self.stored)
    }

    /// Cut off while an acknowledgement was under way: those messages are perhaps removed
    /// from the source, and counted so.
    fn acknowledgement_cut_off(&mut self) {
        let acking = std::mem::take(&mut self.acking);
        if acking > 0 {
            self.report.uncertain += acking;
            self.entries.drain(..self.stored);
            self.stored = 0;
        }
    }

    /// Publishes one delivered message to the destination, without waiting for anything:
    /// its frames are queued, its confirm is awaited in turn.
    fn forward(&mut self, delivery: Delivery) -> Result<(), BrokerError> {
        self.delivered += 1;
        let Delivery {
            data,
            properties,
            redelivered,
            acker,
            ..
        } = delivery;
        if redelivered {
            self.report.redelivered += 1;
            if !self.on_both.is_empty() && self.on_both.take(fingerprint(&data, &properties)) {
                self.entries.push_back(Entry {
                    acker,
                    properties,
                    data,
                    since: Instant::now(),
                    flight: Flight::Absorbed,
                });
                return Ok(());
            }
        }
        let mut sending: Sending = {
            let channel = self.channel.clone();
            let key = self.to_key.clone();
            let published = properties.clone();
            Box::pin(async move {
                let sent = channel
                    .basic_publish(
                        ShortString::from(""),
                        key,
                        BasicPublishOptions {
                            mandatory: true,
                            immediate: false,
                        },
                        &data,
                        published,
                    )
                    .await;
                (sent, data)
            })
        };
        // The first poll queues the frames and registers the confirm: nothing to wait for
        // here (the entry is polled again, with the move's waker, when its turn comes).
        let (data, flight) = match sending
            .as_mut()
            .poll(&mut Context::from_waker(std::task::Waker::noop()))
        {
            Poll::Pending => (Vec::new(), Flight::Sending(sending)),
            Poll::Ready((Ok(confirm), data)) => (data, Flight::Confirming(confirm)),
            // Refused before it was queued (the channel or connection is gone): not on the
            // destination; it goes back to the source with the channel.
            Poll::Ready((Err(e), _)) => return Err(self.amqp("basic.publish", e)),
        };
        self.entries.push_back(Entry {
            acker,
            properties,
            data,
            since: Instant::now(),
            flight,
        });
        Ok(())
    }

    /// The oldest message in flight has its answer: stored (then acknowledged in turn), or
    /// the move stops.
    async fn settle_front(&mut self) -> Result<(), BrokerError> {
        let why = match self.front().map(|e| &e.flight) {
            Some(Flight::Absorbed | Flight::Done(Fate::Stored)) => None,
            Some(Flight::Done(Fate::Returned(_))) => Some("unroutable: does the queue exist?"),
            Some(Flight::Done(Fate::Refused(_, why))) => Some(*why),
            // The channel or connection went: this one and the rest are sorted out by the
            // caller (perhaps stored).
            Some(Flight::Done(Fate::Failed(e, what))) => return Err(self.amqp(what, e.clone())),
            Some(Flight::Sending(_) | Flight::Confirming(_)) | None => return Ok(()),
        };
        if let Some(why) = why {
            // Everything in flight gets its answer, then goes back to the source.
            self.give_up(true).await;
            return Err(BrokerError::Amqp {
                broker: self.broker.to_string(),
                what: format!("move ({} -> {})", self.from, self.to),
                detail: format!(
                    "the broker did not store a message on {} ({why}); they stay on {}",
                    self.to, self.from
                ),
            });
        }
        self.stored += 1;
        if self.stored >= ACK_EVERY {
            self.ack_stored().await?;
        }
        Ok(())
    }

    /// Acknowledges on the source, with one `multiple` acknowledgement, every message stored
    /// on the destination so far.
    async fn ack_stored(&mut self) -> Result<(), BrokerError> {
        if self.stored == 0 {
            return Ok(());
        }
        crate::failpoint::reach("confirmed", self.from).await;
        let count = self.stored;
        let Some(last) = self.entries.get(count - 1).map(|e| e.acker.clone()) else {
            return Ok(());
        };
        // Cancelled (the move's deadline) while the acknowledgement is under way: these are
        // perhaps removed from the source (see `acknowledgement_cut_off`).
        self.acking = count as u64;
        let acked = if !self.channel.status().connected() {
            Ok(Ok(false))
        } else {
            tokio::time::timeout(
                DEFAULT_TIMEOUT,
                last.ack(BasicAckOptions { multiple: true }),
            )
            .await
        };
        self.acking = 0;
        let failure = match acked {
            Ok(Ok(true)) => None,
            // Never sent (the channel is gone): stored on the destination, never acknowledged
            // on the source, which gives them back; the caller counts them in OnBoth.
            Ok(Ok(false)) => {
                return Err(BrokerError::ConnectionLost {
                    broker: self.broker.to_string(),
                    what: format!("move ({} -> {})", self.from, self.to),
                    detail: "the channel closed before the acknowledgement".into(),
                });
            }
            // Stored on the destination, not known to be removed from the source.
            Ok(Err(e)) => Some(self.amqp("basic.ack", e)),
            Err(_) => Some(self.timed_out("basic.ack")),
        };
        let batch = self.entries.drain(..count);
        let absorbed = batch
            .filter(|e| matches!(e.flight, Flight::Absorbed))
            .count() as u64;
        self.stored = 0;
        if let Some(error) = failure {
            self.report.uncertain += count as u64;
            return Err(error);
        }
        self.report.moved += count as u64;
        self.report.absorbed += absorbed;
        if let Some((tell, told)) = &mut self.tell
            && told.elapsed() >= TELL_EVERY
        {
            *told = Instant::now();
            tell(self.report.moved);
        }
        crate::failpoint::reach("move", self.from).await;
        Ok(())
    }

    /// The move failed: sorts out every message delivered and not acknowledged (waiting for
    /// the confirms still outstanding when `wait`, within the default deadline; else taking
    /// only those already in), counts those stored for sure in [`OnBoth`] and those perhaps
    /// stored in [`MoveReport::uncertain`], and gives them all back to the source.
    async fn give_up(&mut self, wait: bool) {
        if wait {
            let until = tokio::time::Instant::now() + DEFAULT_TIMEOUT;
            for entry in self.entries.iter_mut().skip(self.stored) {
                let answer = std::future::poll_fn(|cx| entry.poll_flight(cx));
                if tokio::time::timeout_at(until, answer).await.is_err() {
                    break;
                }
            }
        } else {
            let mut cx = Context::from_waker(std::task::Waker::noop());
            for entry in self.entries.iter_mut().skip(self.stored) {
                let _ = entry.poll_flight(&mut cx);
            }
        }
        // Nothing awaited from here until every entry is accounted for.
        let last = self.entries.back().map(|e| e.acker.clone());
        let (mut confirmed, mut refused, mut absorbed, mut returned) =
            (vec![], vec![], vec![], vec![]);
        let mut unknown = 0;
        self.stored = 0;
        for entry in self.entries.drain(..) {
            match &entry.flight {
                Flight::Absorbed => absorbed.push(entry.fingerprint()),
                Flight::Done(Fate::Stored) => confirmed.push(entry.fingerprint()),
                Flight::Done(Fate::Returned(fp)) => {
                    returned.push(*fp);
                    confirmed.push(entry.fingerprint());
                }
                Flight::Done(Fate::Refused(fp, _)) => {
                    returned.extend(*fp);
                    refused.push(entry.fingerprint());
                }
                Flight::Done(Fate::Failed(..)) | Flight::Sending(_) | Flight::Confirming(_) => {
                    unknown += 1;
                }
            }
        }
        let left = left_over(confirmed, refused, absorbed, unknown, returned);
        for fp in left.on_both {
            self.on_both.add(fp);
        }
        self.report.uncertain += left.uncertain;
        if let Some(last) = last
            && self.channel.status().connected()
        {
            let nack = last.nack(BasicNackOptions {
                multiple: true,
                requeue: true,
            });
            let _ = tokio::time::timeout(DEFAULT_TIMEOUT, nack).await;
        }
    }

    /// Forwards what `consumer` delivers until the source is empty, or until it has been
    /// chased for [`Limits::chase`] once `backlog` messages are moved (or half the deadline
    /// is gone: then [`MoveReport::filling`]); then cancels the consumer, moves what was
    /// already on its way, and acknowledges the last messages once they are confirmed.
    async fn pump(
        &mut self,
        consumer: &mut Consumer,
        tag: &str,
        connection: &Connection,
        backlog: u64,
        limits: Limits,
    ) -> Result<(), BrokerError> {
        let started = Instant::now();
        let mut phase = Phase::Consuming;
        // Since when the source has had nothing for the move (a full window does not count).
        let mut quiet_since = started;
        let mut caught_up: Option<Instant> = None;
        let timer = tokio::time::sleep(limits.idle);
        tokio::pin!(timer);
        let mut events: u32 = 0;
        loop {
            if phase == Phase::Settling && self.front().is_none() {
                return self.ack_stored().await;
            }
            if self.unacked() >= u64::from(WINDOW) {
                quiet_since = Instant::now();
            }
            events = events.wrapping_add(1);
            if events.is_multiple_of(YIELD_EVERY) {
                tokio::task::yield_now().await;
            }
            let listening = phase != Phase::Settling;
            let flush = self.stored > 0;
            let mut front = self.entries.get_mut(self.stored);
            let event = std::future::poll_fn(|cx| {
                if let Some(front) = front.as_deref_mut()
                    && front.poll_flight(cx).is_ready()
                {
                    return Poll::Ready(Event::Front);
                }
                if listening && let Poll::Ready(d) = Pin::new(&mut *consumer).poll_next(cx) {
                    return Poll::Ready(Event::Delivery(d));
                }
                if timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Event::Tick);
                }
                if flush {
                    return Poll::Ready(Event::Flush);
                }
                Poll::Pending
            })
            .await;
            match event {
                Event::Front => self.settle_front().await?,
                Event::Flush => self.ack_stored().await?,
                Event::Delivery(Some(Ok(delivery))) => {
                    quiet_since = Instant::now();
                    self.forward(delivery)?;
                    if caught_up.is_none() && self.delivered >= backlog {
                        caught_up = Some(quiet_since);
                    }
                }
                Event::Delivery(Some(Err(e))) => return Err(self.amqp("delivery", e)),
                Event::Delivery(None) if phase == Phase::Draining => phase = Phase::Settling,
                Event::Delivery(None) => {
                    return Err(BrokerError::Amqp {
                        broker: self.broker.to_string(),
                        what: format!("move ({} -> {})", self.from, self.to),
                        detail: "the broker cancelled the consumer (was the queue deleted?)".into(),
                    });
                }
                Event::Tick => {
                    let now = Instant::now();
                    if let Some(front) = self.front()
                        && now >= front.since + DEFAULT_TIMEOUT
                    {
                        return Err(self.timed_out(match front.flight {
                            Flight::Sending(_) => "basic.publish",
                            _ => "publisher confirm",
                        }));
                    }
                    let half_time = started + limits.deadline / 2;
                    if phase == Phase::Consuming {
                        if caught_up.is_none() && now >= half_time {
                            caught_up = Some(now);
                        }
                        let chased = caught_up.is_some_and(|t| now >= t + limits.chase);
                        if chased {
                            self.report.filling = true;
                        }
                        if chased
                            || (now >= quiet_since + limits.idle
                                && self.source_empty(connection).await?)
                        {
                            let cancel = self
                                .channel
                                .basic_cancel(tag.into(), BasicCancelOptions::default());
                            match tokio::time::timeout(DEFAULT_TIMEOUT, cancel).await {
                                Err(_) => return Err(self.timed_out("basic.cancel")),
                                Ok(Err(e)) => return Err(self.amqp("basic.cancel", e)),
                                Ok(Ok(())) => {}
                            }
                            phase = Phase::Draining;
                        }
                        if now >= quiet_since + limits.idle {
                            quiet_since = Instant::now();
                        }
                    } else if phase == Phase::Draining && now >= quiet_since + limits.idle {
                        // Nothing more came since: the deliveries on their way are in.
                        phase = Phase::Settling;
                    }
                    // Settling, only a late confirm wakes the move.
                    let mut next = now + DEFAULT_TIMEOUT;
                    if phase != Phase::Settling {
                        next = next.min(quiet_since + limits.idle);
                    }
                    if let Some(front) = self.front() {
                        next = next.min(front.since + DEFAULT_TIMEOUT);
                    }
                    if phase == Phase::Consuming {
                        next = next.min(caught_up.map_or(half_time, |t| t + limits.chase));
                    }
                    let next = next.max(Instant::now() + Duration::from_millis(1));
                    timer.as_mut().reset(tokio::time::Instant::from_std(next));
                }
            }
        }
    }

    /// The source was silent: true when it is empty (or gone).
    async fn source_empty(&mut self, connection: &Connection) -> Result<bool, BrokerError> {
        let left = amqp::queue_counts(connection, self.broker, self.from).await?;
        Ok(left.is_none_or(|(messages, _)| messages == 0))
    }
}

/// Moves every message of `from` into `to` (both must exist), until `from` is empty, within
/// `limits`. `connection` is used to open a channel for the move (and one to count); moves
/// on one connection may run at the same time, each with its own [`OnBoth`].
pub async fn move_all(
    connection: &Connection,
    broker: &str,
    from: &str,
    to: &str,
    limits: Limits,
    on_both: &mut OnBoth,
) -> Result<MoveReport, MoveFailure> {
    move_all_telling(connection, broker, from, to, limits, on_both, None).await
}

/// [`move_all`], telling `tell` the count of messages moved as it grows, at most every
/// [`TELL_EVERY`].
pub async fn move_all_telling(
    connection: &Connection,
    broker: &str,
    from: &str,
    to: &str,
    limits: Limits,
    on_both: &mut OnBoth,
    tell: Option<Tell<'_>>,
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
        to_key: ShortString::from(to),
        channel: Arc::new(channel),
        entries: VecDeque::new(),
        stored: 0,
        acking: 0,
        delivered: 0,
        report: MoveReport::default(),
        on_both,
        tell: tell.map(|t| (t, started)),
    };
    let result =
        match tokio::time::timeout(limits.deadline, run(&mut mover, connection, limits)).await {
            Ok(result) => result,
            Err(_) => Err(BrokerError::Timeout {
                broker: broker.to_string(),
                what: format!("move ({from} -> {to})"),
                after: limits.deadline,
            }),
        };
    if result.is_err() {
        mover.acknowledgement_cut_off();
        mover.give_up(false).await;
    }
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

/// One move of [`move_many`].
#[derive(Debug)]
pub struct Move<'a> {
    pub from: &'a str,
    pub to: &'a str,
    pub limits: Limits,
    /// What earlier failed moves between these two queues left on both (see [`OnBoth`]).
    pub on_both: &'a mut OnBoth,
}

/// Runs these moves at the same time on one connection, each on a channel of its own (each
/// pair of queues should appear once); their results in the same order.
pub async fn move_many(
    connection: &Connection,
    broker: &str,
    moves: Vec<Move<'_>>,
) -> Vec<Result<MoveReport, MoveFailure>> {
    join_all(
        moves
            .into_iter()
            .map(|m| move_all(connection, broker, m.from, m.to, m.limits, m.on_both))
            .collect(),
    )
    .await
}

/// Awaits every future, polling them in turn; their outputs in the same order.
async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => *output = Some(value),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

/// Which move, for errors.
#[derive(Clone, Copy)]
struct Label<'a> {
    broker: &'a str,
    from: &'a str,
    to: &'a str,
}

/// Runs an AMQP call of the move within the default deadline.
async fn timed<T>(
    label: Label<'_>,
    what: &str,
    call: impl std::future::Future<Output = lapin::Result<T>>,
) -> Result<T, BrokerError> {
    let what = format!("{what} ({} -> {})", label.from, label.to);
    match tokio::time::timeout(DEFAULT_TIMEOUT, call).await {
        Err(_) => Err(BrokerError::Timeout {
            broker: label.broker.to_string(),
            what,
            after: DEFAULT_TIMEOUT,
        }),
        Ok(Err(e)) => Err(amqp::error(label.broker, what, &e)),
        Ok(Ok(value)) => Ok(value),
    }
}

/// The move itself, on the mover's channel: publisher confirms and the prefetch set, then
/// the source consumed until it is empty (or chased for too long).
async fn run(
    mover: &mut Mover<'_>,
    connection: &Connection,
    limits: Limits,
) -> Result<(), BrokerError> {
    let channel = mover.channel.clone();
    let label = Label {
        broker: mover.broker,
        from: mover.from,
        to: mover.to,
    };
    timed(
        label,
        "confirm.select",
        channel.confirm_select(ConfirmSelectOptions::default()),
    )
    .await?;
    // Per consumer (not global): quorum queues refuse a global prefetch.
    timed(
        label,
        "basic.qos",
        channel.basic_qos(WINDOW, BasicQosOptions { global: false }),
    )
    .await?;
    let backlog = amqp::queue_counts(connection, mover.broker, mover.from)
        .await?
        .map_or(0, |(messages, _)| u64::from(messages));
    let tag = format!("roll-mover-{}", std::process::id());
    let mut consumer = timed(
        label,
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
        .pump(&mut consumer, &tag, connection, backlog, limits)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_failed_move_leaves_is_sorted_by_what_the_broker_said() {
        // Confirmed and absorbed: on both; unknown: uncertain.
        let left = left_over(vec![1, 2, 2], vec![], vec![7], 3, vec![]);
        assert_eq!(
            left,
            Left {
                on_both: vec![7, 1, 2, 2],
                uncertain: 3
            }
        );
        // A returned message attached to another message's confirm: told apart by content.
        let left = left_over(vec![1, 2], vec![], vec![], 0, vec![2]);
        assert_eq!(left.on_both, vec![1]);
        assert_eq!(left.uncertain, 0);
        // Returned with a negative confirm: the refused message itself.
        let left = left_over(vec![1], vec![5], vec![], 0, vec![5]);
        assert_eq!(left.on_both, vec![1]);
        // A returned message matching none: no confirmed one is stored for sure.
        let left = left_over(vec![1, 2], vec![], vec![9], 1, vec![4]);
        assert_eq!(
            left,
            Left {
                on_both: vec![9],
                uncertain: 3
            }
        );
    }

    #[test]
    fn on_both_counts_messages_of_the_same_content_apart() {
        let mut on_both = OnBoth::default();
        on_both.add(4);
        on_both.add(4);
        assert_eq!(on_both.len(), 2);
        assert!(on_both.take(4));
        assert!(on_both.take(4));
        assert!(!on_both.take(4));
        assert!(on_both.is_empty());
    }

    #[test]
    fn join_all_keeps_the_order_of_its_futures() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        let outputs = runtime.block_on(join_all(
            [30u64, 10, 20]
                .into_iter()
                .map(|ms| async move {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    ms
                })
                .collect(),
        ));
        assert_eq!(outputs, vec![30, 10, 20]);
    }
}
