//! The broker: RabbitMQ's management HTTP API and AMQP 0-9-1, each with a timeout on every
//! call and errors that name the broker and what failed.

pub mod amqp;
pub mod cluster;
pub mod equivalence;
pub mod holding;
pub mod json_array;
pub mod management;
pub mod mover;
pub mod nodes;

use std::time::Duration;

/// Default time allowed for one call to the broker.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

/// Reads a broker's password from its file or environment variable, now.
pub fn password(
    config: &crate::inventory::BrokerConfig,
) -> Result<crate::inventory::Secret, BrokerError> {
    config.password.read().map_err(|err| BrokerError::Secret {
        broker: config.display(),
        detail: err.to_string(),
    })
}

/// An error talking to the broker. Never carries a password.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The broker's password could not be read from its file or environment variable.
    #[error("broker {broker}: cannot read the password: {detail}")]
    Secret { broker: String, detail: String },
    /// The URL in the inventory cannot be used.
    #[error("broker {broker}: bad URL {url}: {detail}")]
    BadUrl {
        broker: String,
        url: String,
        detail: String,
    },
    /// Nothing answered, or the connection broke.
    #[error("broker {broker}: unreachable at {url}: {detail}")]
    Unreachable {
        broker: String,
        url: String,
        detail: String,
    },
    /// No answer in time.
    #[error("broker {broker}: {what} did not answer within {after:?}")]
    Timeout {
        broker: String,
        what: String,
        after: Duration,
    },
    /// The broker refused our user or password.
    #[error("broker {broker}: login refused for user {user} ({detail})")]
    Unauthorized {
        broker: String,
        user: String,
        detail: String,
    },
    /// The vhost does not exist, or our user has no access to it.
    #[error("broker {broker}: vhost {vhost} does not exist or user {user} has no access to it")]
    NoVhost {
        broker: String,
        vhost: String,
        user: String,
    },
    /// Any other refusal from the management API.
    #[error("broker {broker}: {what} failed with HTTP {status}: {body}")]
    Http {
        broker: String,
        what: String,
        status: u16,
        body: String,
    },
    /// An answer we could not understand.
    #[error("broker {broker}: cannot read the answer to {what}: {detail}")]
    Decode {
        broker: String,
        what: String,
        detail: String,
    },
    /// An AMQP-level failure of the request itself (a channel closed by the broker for it:
    /// not found, refused, precondition failed).
    #[error("broker {broker}: AMQP {what} failed: {detail}")]
    Amqp {
        broker: String,
        what: String,
        detail: String,
    },
    /// The AMQP connection broke (the broker restarted or closed it, the network failed).
    #[error("broker {broker}: AMQP connection lost during {what}: {detail}")]
    ConnectionLost {
        broker: String,
        what: String,
        detail: String,
    },
    /// The queue's home node is down (a classic queue on a cluster node that stopped): the
    /// queue is neither usable nor absent; it is back with its messages when the node is.
    #[error("broker {broker}: {what}: {detail}")]
    NodeDown {
        broker: String,
        what: String,
        /// The node, as the broker names it (`rabbit@c1`).
        node: String,
        detail: String,
    },
    /// A queue or exchange named `.` or `..`: the management API cannot address it.
    #[error(
        "broker {broker}: the name {name:?} cannot be used through the management API (it reads \
         it as a path step): delete or rename it with an AMQP client"
    )]
    Unaddressable { broker: String, name: String },
    /// The management API closed the connection of a request it had not answered for as long
    /// as its idle timeout: a listing the broker takes longer than that to make.
    #[error(
        "broker {broker}: it closed the {what} unanswered after {after:?}: the management API \
         ends a request it has not answered within its idle timeout (`management.tcp.idle_timeout`, \
         60 s unless set): the broker needs a longer one for a vhost this large"
    )]
    CutOff {
        broker: String,
        what: String,
        after: Duration,
    },
    /// The broker blocked our connection (a memory or disk alarm) for longer than allowed.
    #[error("broker {broker}: {what} blocked by the broker ({detail})")]
    Blocked {
        broker: String,
        what: String,
        detail: String,
    },
}

impl BrokerError {
    /// The broker the error is about, as its messages name it.
    pub fn broker(&self) -> &str {
        match self {
            BrokerError::Secret { broker, .. }
            | BrokerError::BadUrl { broker, .. }
            | BrokerError::Unreachable { broker, .. }
            | BrokerError::Timeout { broker, .. }
            | BrokerError::Unauthorized { broker, .. }
            | BrokerError::NoVhost { broker, .. }
            | BrokerError::Http { broker, .. }
            | BrokerError::Decode { broker, .. }
            | BrokerError::Amqp { broker, .. }
            | BrokerError::ConnectionLost { broker, .. }
            | BrokerError::NodeDown { broker, .. }
            | BrokerError::Unaddressable { broker, .. }
            | BrokerError::CutOff { broker, .. }
            | BrokerError::Blocked { broker, .. } => broker,
        }
    }

    /// What went wrong, without the broker's name (and without the URL of an unreachable
    /// node): for a message that names them already.
    pub fn reason(&self) -> String {
        if let BrokerError::Unreachable { detail, .. } = self {
            return detail.clone();
        }
        let text = self.to_string();
        let prefix = format!("broker {}: ", self.broker());
        text.strip_prefix(&prefix).unwrap_or(&text).to_string()
    }

    /// True when the broker may answer again by itself (a restart, a network cut, an
    /// overload): what failed may be tried again once it does. False for refusals.
    pub fn is_transient(&self) -> bool {
        match self {
            BrokerError::Unreachable { .. }
            | BrokerError::Timeout { .. }
            | BrokerError::ConnectionLost { .. }
            | BrokerError::NodeDown { .. }
            | BrokerError::Blocked { .. } => true,
            BrokerError::Http { status, .. } => matches!(status, 500 | 502 | 503 | 504),
            BrokerError::Secret { .. }
            | BrokerError::BadUrl { .. }
            | BrokerError::Unauthorized { .. }
            | BrokerError::NoVhost { .. }
            | BrokerError::Decode { .. }
            | BrokerError::Unaddressable { .. }
            | BrokerError::CutOff { .. }
            | BrokerError::Amqp { .. } => false,
        }
    }
}
