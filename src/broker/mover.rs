//! Moving messages between queues over AMQP without losing any: the source is consumed with
//! manual acknowledgements (a bounded prefetch), each message is published to the destination
//! queue through the default exchange with `mandatory` and publisher confirms, and the
//! messages are acknowledged on the source only after the broker confirmed every one of them,
//! routed, on the destination. Properties and headers travel with the message. A crash in the
//! middle can duplicate a message (published, not yet acknowledged: the broker redelivers it),
//! never lose one. Publishing is pipelined: up to [`BATCH`] messages wait for their confirms
//! at a time.

use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions,
    BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
};
use lapin::{Acker, Channel, Confirmation, Connection, PublisherConfirm};
use serde::Serialize;

use super::{BrokerError, DEFAULT_TIMEOUT, amqp};

/// Messages in flight (delivered, published, awaiting their confirm) at most.
pub const BATCH: u16 = 500;

/// How long the source may stay silent before its message count is checked.
const IDLE: Duration = Duration::from_millis(50);

/// What a move did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MoveReport {
    /// Messages confirmed on the destination and removed from the source.
    pub moved: u64,
    /// Messages the source had delivered before (a redelivery after an interrupted move:
    /// they may already be on the destination, so they may now be there twice).
    pub redelivered: u64,
    pub seconds: f64,
}

struct Mover<'a> {
    broker: &'a str,
    from: &'a str,
    to: &'a str,
    channel: Channel,
    pending: Vec<(Delivery, PublisherConfirm)>,
    report: MoveReport,
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
        }
        let confirm = self
            .channel
            .basic_publish(
                "".into(),
                self.to.into(),
                BasicPublishOptions {
                    mandatory: true,
                    immediate: false,
                },
                &delivery.data,
                delivery.properties.clone(),
            )
            .await
            .map_err(|e| self.amqp("basic.publish", e))?;
        self.pending.push((delivery, confirm));
        if self.pending.len() >= usize::from(BATCH) {
            self.settle().await?;
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
        let mut refused = None;
        for (_delivery, confirm) in pending {
            let confirmation = match tokio::time::timeout(DEFAULT_TIMEOUT, confirm).await {
                Err(_) => Err(self.timed_out("publisher confirm")),
                Ok(Err(e)) => Err(self.amqp("publisher confirm", e)),
                Ok(Ok(c)) => Ok(c),
            };
            match confirmation {
                Ok(Confirmation::Ack(None)) => {}
                Ok(other) => {
                    refused.get_or_insert(match other {
                        Confirmation::Ack(Some(_)) => "unroutable: does the queue exist?",
                        Confirmation::Nack(_) => "negative confirm",
                        _ => "no confirm",
                    });
                }
                Err(err) => {
                    self.give_back(&last).await;
                    return Err(err);
                }
            }
        }
        if let Some(why) = refused {
            // Not all stored on the destination: every one goes back to the source (those
            // that were stored are now there twice, never lost).
            self.give_back(&last).await;
            return Err(BrokerError::Amqp {
                broker: self.broker.to_string(),
                what: format!("move ({} -> {})", self.from, self.to),
                detail: format!(
                    "the broker did not store a message on {} ({why}); they stay on {}",
                    self.to, self.from
                ),
            });
        }
        last.ack(BasicAckOptions { multiple: true })
            .await
            .map_err(|e| self.amqp("basic.ack", e))?;
        self.report.moved += count;
        Ok(())
    }

    async fn give_back(&self, last: &Acker) {
        let _ = last
            .nack(BasicNackOptions {
                multiple: true,
                requeue: true,
            })
            .await;
    }
}

/// Moves every message of `from` into `to` (both must exist), until `from` is empty.
/// `connection` is used to open a channel for the move (and one to count).
pub async fn move_all(
    connection: &Connection,
    broker: &str,
    from: &str,
    to: &str,
) -> Result<MoveReport, BrokerError> {
    let started = Instant::now();
    let channel = tokio::time::timeout(DEFAULT_TIMEOUT, connection.create_channel())
        .await
        .map_err(|_| BrokerError::Timeout {
            broker: broker.to_string(),
            what: format!("open channel ({from} -> {to})"),
            after: DEFAULT_TIMEOUT,
        })?
        .map_err(|e| amqp::error(broker, format!("open channel ({from} -> {to})"), &e))?;
    let mut mover = Mover {
        broker,
        from,
        to,
        channel,
        pending: Vec::new(),
        report: MoveReport::default(),
    };
    let result = run(&mut mover, connection).await;
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        mover.channel.close(200, "move done".into()),
    )
    .await;
    result?;
    mover.report.seconds = started.elapsed().as_secs_f64();
    Ok(mover.report)
}

async fn run(mover: &mut Mover<'_>, connection: &Connection) -> Result<(), BrokerError> {
    let channel = mover.channel.clone();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| mover.amqp("confirm.select", e))?;
    channel
        .basic_qos(BATCH, BasicQosOptions::default())
        .await
        .map_err(|e| mover.amqp("basic.qos", e))?;
    let tag = format!("roll-mover-{}", std::process::id());
    let mut consumer = tokio::time::timeout(
        DEFAULT_TIMEOUT,
        channel.basic_consume(
            mover.from.into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            Default::default(),
        ),
    )
    .await
    .map_err(|_| mover.timed_out("basic.consume"))?
    .map_err(|e| mover.amqp("basic.consume", e))?;
    loop {
        match tokio::time::timeout(IDLE, consumer.next()).await {
            Ok(Some(Ok(delivery))) => mover.forward(delivery).await?,
            Ok(Some(Err(e))) => return Err(mover.amqp("delivery", e)),
            Ok(None) => {
                return Err(BrokerError::Amqp {
                    broker: mover.broker.to_string(),
                    what: format!("move ({} -> {})", mover.from, mover.to),
                    detail: "the broker cancelled the consumer (was the queue deleted?)".into(),
                });
            }
            Err(_) => {
                // Silent: settle what is in flight, then stop once the source is empty.
                mover.settle().await?;
                let left = amqp::queue_counts(connection, mover.broker, mover.from).await?;
                if left.is_none_or(|(messages, _)| messages == 0) {
                    break;
                }
            }
        }
    }
    // Deliveries already on their way when the consumer is cancelled are moved too.
    tokio::time::timeout(
        DEFAULT_TIMEOUT,
        channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()),
    )
    .await
    .map_err(|_| mover.timed_out("basic.cancel"))?
    .map_err(|e| mover.amqp("basic.cancel", e))?;
    while let Ok(Some(Ok(delivery))) = tokio::time::timeout(IDLE, consumer.next()).await {
        mover.forward(delivery).await?;
    }
    mover.settle().await
}
