//! Moving messages between queues over AMQP without losing any: each message is taken with
//! `basic.get` (manual acknowledgement), published to the destination queue through the
//! default exchange with `mandatory` and publisher confirms, and acknowledged on the source
//! only after the broker confirmed it, routed, on the destination. Properties and headers
//! travel with the message. A crash in the middle can duplicate a message (published, not yet
//! acknowledged: the broker redelivers it), never lose one.

use std::time::{Duration, Instant};

use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions, ConfirmSelectOptions,
};
use lapin::{Confirmation, Connection};
use serde::Serialize;

use super::{BrokerError, DEFAULT_TIMEOUT};

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

/// Moves every message of `from` into `to` (both must exist), until `from` is empty.
pub async fn move_all(
    connection: &Connection,
    broker: &str,
    from: &str,
    to: &str,
) -> Result<MoveReport, BrokerError> {
    let amqp = |what: String, err: lapin::Error| BrokerError::Amqp {
        broker: broker.to_string(),
        what,
        detail: err.to_string(),
    };
    let timed_out = |what: String| BrokerError::Timeout {
        broker: broker.to_string(),
        what,
        after: DEFAULT_TIMEOUT,
    };
    let within = |what: &str| format!("{what} ({from} -> {to})");
    let started = Instant::now();
    let channel = tokio::time::timeout(DEFAULT_TIMEOUT, connection.create_channel())
        .await
        .map_err(|_| timed_out(within("open channel")))?
        .map_err(|e| amqp(within("open channel"), e))?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| amqp(within("confirm.select"), e))?;
    let mut report = MoveReport::default();
    loop {
        let got = tokio::time::timeout(
            DEFAULT_TIMEOUT,
            channel.basic_get(from.into(), BasicGetOptions { no_ack: false }),
        )
        .await
        .map_err(|_| timed_out(within("basic.get")))?
        .map_err(|e| amqp(within("basic.get"), e))?;
        let Some(message) = got else { break };
        let delivery = message.delivery;
        if delivery.redelivered {
            report.redelivered += 1;
        }
        let confirm = channel
            .basic_publish(
                "".into(),
                to.into(),
                BasicPublishOptions {
                    mandatory: true,
                    immediate: false,
                },
                &delivery.data,
                delivery.properties.clone(),
            )
            .await
            .map_err(|e| amqp(within("basic.publish"), e))?;
        let confirmation = tokio::time::timeout(DEFAULT_TIMEOUT, confirm)
            .await
            .map_err(|_| timed_out(within("publisher confirm")))?
            .map_err(|e| amqp(within("publisher confirm"), e))?;
        let routed = matches!(confirmation, Confirmation::Ack(None));
        if !routed {
            // Not stored on the destination: give the message back to the source.
            let _ = delivery
                .acker
                .nack(BasicNackOptions {
                    multiple: false,
                    requeue: true,
                })
                .await;
            return Err(BrokerError::Amqp {
                broker: broker.to_string(),
                what: within("move"),
                detail: format!(
                    "the broker did not store the message on {to} ({}); it stays on {from}",
                    match confirmation {
                        Confirmation::Ack(Some(_)) => "unroutable: does the queue exist?",
                        Confirmation::Nack(_) => "negative confirm",
                        _ => "no confirm",
                    }
                ),
            });
        }
        delivery
            .acker
            .ack(BasicAckOptions { multiple: false })
            .await
            .map_err(|e| amqp(within("basic.ack"), e))?;
        report.moved += 1;
    }
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        channel.close(200, "move done".into()),
    )
    .await;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}
