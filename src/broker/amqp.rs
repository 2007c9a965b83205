//! AMQP 0-9-1 connections to the broker (lapin underneath).

use std::str::FromStr;
use std::time::Duration;

use lapin::uri::AMQPUri;
use lapin::{Connection, ConnectionProperties};

use super::{BrokerError, DEFAULT_TIMEOUT};
use crate::inventory::{BrokerConfig, Secret};

/// Builds the connection URI from the inventory's AMQP URL, user, vhost and password.
/// The result holds the password: never log or print it.
pub fn uri(config: &BrokerConfig, password: &Secret) -> Result<AMQPUri, BrokerError> {
    let mut uri = AMQPUri::from_str(&config.amqp_url).map_err(|detail| BrokerError::BadUrl {
        broker: config.display(),
        url: config.amqp_url.clone(),
        detail,
    })?;
    uri.authority.userinfo.username = config.user.clone();
    uri.authority.userinfo.password = password.expose().to_string();
    uri.vhost = config.vhost.clone();
    Ok(uri)
}

/// Opens an AMQP connection named `roll <purpose>` so that operators can tell it apart in the
/// management UI.
pub async fn connect(
    config: &BrokerConfig,
    password: &Secret,
    purpose: &str,
) -> Result<Connection, BrokerError> {
    connect_with_timeout(config, password, purpose, DEFAULT_TIMEOUT).await
}

/// Like [`connect`] with another timeout.
pub async fn connect_with_timeout(
    config: &BrokerConfig,
    password: &Secret,
    purpose: &str,
    timeout: Duration,
) -> Result<Connection, BrokerError> {
    let uri = uri(config, password)?;
    let properties = ConnectionProperties::default()
        .with_connection_name(format!("roll {purpose} (pid {})", std::process::id()).into());
    match tokio::time::timeout(timeout, Connection::connect_uri(uri, properties)).await {
        Err(_) => Err(BrokerError::Timeout {
            broker: config.display(),
            what: "AMQP connect".into(),
            after: timeout,
        }),
        Ok(Err(err)) => Err(classify(config, &err)),
        Ok(Ok(connection)) => Ok(connection),
    }
}

/// Turns a lapin connect error into a typed one.
fn classify(config: &BrokerConfig, err: &lapin::Error) -> BrokerError {
    let detail = err.to_string();
    let lower = detail.to_lowercase();
    if lower.contains("access_refused") || lower.contains("authentication") {
        BrokerError::Unauthorized {
            broker: config.display(),
            user: config.user.clone(),
            detail: "AMQP login refused".into(),
        }
    } else if lower.contains("not_allowed") || lower.contains("vhost") {
        BrokerError::NoVhost {
            broker: config.display(),
            vhost: config.vhost.clone(),
            user: config.user.clone(),
        }
    } else if lower.contains("io error") || lower.contains("connection refused") {
        BrokerError::Unreachable {
            broker: config.display(),
            url: config.amqp_url.clone(),
            detail,
        }
    } else {
        BrokerError::Amqp {
            broker: config.display(),
            what: "connect".into(),
            detail,
        }
    }
}

/// Closes a connection politely; errors on close are only logged.
pub async fn close(connection: Connection) {
    let closing = connection.close(200, "roll done".into());
    match tokio::time::timeout(Duration::from_secs(5), closing).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::debug!(error = %err, "amqp close"),
        Err(_) => tracing::debug!("amqp close timed out"),
    }
}
