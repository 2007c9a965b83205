//! AMQP 0-9-1 connections to the broker (lapin underneath).

use std::str::FromStr;
use std::time::Duration;

use lapin::uri::AMQPUri;
use lapin::{Connection, ConnectionProperties};

use super::nodes::{Nodes, node_down};
use super::{BrokerError, DEFAULT_TIMEOUT};
use crate::inventory::{BrokerConfig, Secret};

/// Builds the connection URI of the node at `url` (one of the inventory's AMQP URLs) with the
/// broker's user, vhost and password. The result holds the password: never log or print it.
pub fn uri(config: &BrokerConfig, url: &str, password: &Secret) -> Result<AMQPUri, BrokerError> {
    let mut uri = AMQPUri::from_str(url).map_err(|detail| BrokerError::BadUrl {
        broker: config.display(),
        url: url.to_string(),
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

/// Like [`connect`] with another timeout. A cluster's nodes (the inventory's AMQP URLs) are
/// tried in order from the one that answered last, each within `timeout`, while a node cannot
/// be reached (see [`super::nodes`]); a refusal (the login, the vhost) ends the search.
pub async fn connect_with_timeout(
    config: &BrokerConfig,
    password: &Secret,
    purpose: &str,
    timeout: Duration,
) -> Result<Connection, BrokerError> {
    let nodes = Nodes::of(&config.amqp_urls);
    let mut failed = Vec::new();
    for index in nodes.order() {
        let url = &nodes.urls()[index];
        match connect_to(config, url, password, purpose, timeout).await {
            Err(err) if node_down(&err) => failed.push((index, err)),
            answer => {
                nodes.answered(index, &failed);
                return answer;
            }
        }
    }
    if failed.is_empty() {
        return Err(BrokerError::BadUrl {
            broker: config.display(),
            url: String::new(),
            detail: "no AMQP URL".into(),
        });
    }
    Err(nodes.none_answered(failed))
}

/// The AMQP URL in use for `config`: the node that answered last (the first one until then).
pub fn current_url(config: &BrokerConfig) -> String {
    Nodes::of(&config.amqp_urls).current().to_string()
}

/// Connects to the node at `url`.
async fn connect_to(
    config: &BrokerConfig,
    url: &str,
    password: &Secret,
    purpose: &str,
    timeout: Duration,
) -> Result<Connection, BrokerError> {
    let uri = uri(config, url, password)?;
    let properties = ConnectionProperties::default()
        .with_connection_name(format!("roll {purpose} (pid {})", std::process::id()).into());
    match tokio::time::timeout(timeout, Connection::connect_uri(uri, properties)).await {
        Err(_) => Err(BrokerError::Timeout {
            broker: config.display(),
            what: format!("AMQP connect to {url}"),
            after: timeout,
        }),
        Ok(Err(err)) => Err(classify(config, url, &err)),
        Ok(Ok(connection)) => Ok(connection),
    }
}

/// Turns a lapin connect error into a typed one. A node that is shutting down (it closes the
/// connection with CONNECTION_FORCED) counts as unreachable: another node may answer.
fn classify(config: &BrokerConfig, url: &str, err: &lapin::Error) -> BrokerError {
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
    } else if lower.contains("io error")
        || lower.contains("connection refused")
        || lower.contains("connection_forced")
        || lower.contains("shutdown")
    {
        BrokerError::Unreachable {
            broker: config.display(),
            url: url.to_string(),
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

/// A lapin error as a typed one: the connection broke ([`BrokerError::ConnectionLost`]), or
/// the broker refused the request ([`BrokerError::Amqp`]).
pub fn error(broker: &str, what: impl Into<String>, err: &lapin::Error) -> BrokerError {
    use lapin::ErrorKind;
    let lost = match err.kind() {
        ErrorKind::IOError(_)
        | ErrorKind::RuntimeShutdownError(_)
        | ErrorKind::InvalidConnectionState(_)
        | ErrorKind::InvalidChannelState(..)
        | ErrorKind::MissingHeartbeatError => true,
        _ => err.is_amqp_hard_error(),
    };
    let (broker, what, detail) = (broker.to_string(), what.into(), err.to_string());
    if let Some(node) = super::nodes::home_node_down(&detail) {
        return BrokerError::NodeDown {
            broker,
            what,
            node,
            detail,
        };
    }
    if lost {
        BrokerError::ConnectionLost {
            broker,
            what,
            detail,
        }
    } else {
        BrokerError::Amqp {
            broker,
            what,
            detail,
        }
    }
}

/// The broker's reply code of a channel-level refusal (404 not found, 405 locked, 406
/// precondition failed), if that is what `err` is.
pub fn soft_code(err: &lapin::Error) -> Option<u16> {
    match err.kind() {
        lapin::ErrorKind::ProtocolError(e) if err.is_amqp_soft_error() => Some(e.get_id()),
        _ => None,
    }
}

/// True when `err` says the queue does not exist: a 404 that is not about the queue's home
/// node being down (a queue on a stopped node of a cluster is there, unreachable for now).
pub fn absent(err: &lapin::Error) -> bool {
    soft_code(err) == Some(404) && super::nodes::home_node_down(&err.to_string()).is_none()
}

/// Closes a channel, giving it 5 s (a broker that no longer answers does not hold us).
async fn close_channel(channel: &lapin::Channel, why: &str) {
    let closing = channel.close(200, why.into());
    let _ = tokio::time::timeout(Duration::from_secs(5), closing).await;
}

/// Closes a connection politely, within 5 s; errors on close are only logged.
pub async fn close(connection: &Connection) {
    let closing = connection.close(200, "roll done".into());
    match tokio::time::timeout(Duration::from_secs(5), closing).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::debug!(error = %err, "amqp close"),
        Err(_) => tracing::debug!("amqp close timed out"),
    }
}

/// Converts normalised argument values (JSON) into an AMQP field table: integers as
/// `signedint` when they fit (as most clients send them), else 64-bit.
pub fn field_table(
    arguments: &std::collections::BTreeMap<String, serde_json::Value>,
) -> lapin::types::FieldTable {
    use lapin::types::{AMQPValue, FieldTable, LongString};
    let mut table = FieldTable::default();
    for (key, value) in arguments {
        let value = match value {
            serde_json::Value::Bool(b) => AMQPValue::Boolean(*b),
            serde_json::Value::Number(n) => match (n.as_i64(), n.as_f64()) {
                (Some(i), _) => match i32::try_from(i) {
                    Ok(small) => AMQPValue::LongInt(small),
                    Err(_) => AMQPValue::LongLongInt(i),
                },
                (None, Some(f)) => AMQPValue::Double(f),
                (None, None) => continue,
            },
            serde_json::Value::String(s) => AMQPValue::LongString(LongString::from(s.as_str())),
            other => AMQPValue::LongString(LongString::from(other.to_string())),
        };
        table.insert(key.as_str().into(), value);
    }
    table
}

/// What the broker said to a declare of an existing queue with given settings.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum ProbeResult {
    /// The declare succeeded: the broker considers the settings equivalent.
    Equivalent,
    /// The broker refused with 406 PRECONDITION_FAILED.
    Inequivalent { reply: String },
    /// The queue does not exist (nothing was declared).
    Absent,
}

/// Opens a channel and declares `name` on it, each step within the default timeout. Returns
/// the channel (closed by the broker when the declare was refused) and the broker's answer.
async fn declare_on_new_channel(
    connection: &Connection,
    broker: &str,
    name: &str,
    options: lapin::options::QueueDeclareOptions,
    arguments: lapin::types::FieldTable,
) -> Result<(lapin::Channel, lapin::Result<lapin::Queue>), BrokerError> {
    let timeout = DEFAULT_TIMEOUT;
    let timed_out = |what: &str| BrokerError::Timeout {
        broker: broker.to_string(),
        what: format!("{what} {name}"),
        after: timeout,
    };
    let channel = tokio::time::timeout(timeout, connection.create_channel())
        .await
        .map_err(|_| timed_out("open channel for"))?
        .map_err(|err| error(broker, format!("open channel for {name}"), &err))?;
    let answer = tokio::time::timeout(
        timeout,
        channel.queue_declare(name.into(), options, arguments),
    )
    .await
    .map_err(|_| timed_out("declare of"))?;
    Ok((channel, answer))
}

/// Asks the broker whether `settings` are equivalent to those of the existing queue `name`:
/// a passive declare first (so that a queue that does not exist is never created), then a
/// real declare with the settings, each on its own throwaway channel.
pub async fn probe(
    connection: &Connection,
    broker: &str,
    name: &str,
    settings: &crate::broker::equivalence::QueueSettings,
) -> Result<ProbeResult, BrokerError> {
    use lapin::options::QueueDeclareOptions;
    let amqp_error = |what: &str, err: lapin::Error| error(broker, format!("{what} {name}"), &err);
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let (channel, exists) =
        declare_on_new_channel(connection, broker, name, passive, Default::default()).await?;
    if let Err(err) = exists {
        if absent(&err) {
            return Ok(ProbeResult::Absent);
        }
        return Err(amqp_error("passive declare of", err));
    }
    close_channel(&channel, "probe done").await;
    let real = QueueDeclareOptions {
        durable: settings.durable,
        auto_delete: settings.auto_delete,
        ..QueueDeclareOptions::default()
    };
    let (channel, declared) = declare_on_new_channel(
        connection,
        broker,
        name,
        real,
        field_table(&settings.arguments),
    )
    .await?;
    match declared {
        Ok(_) => {
            close_channel(&channel, "probe done").await;
            Ok(ProbeResult::Equivalent)
        }
        Err(err) => {
            if soft_code(&err) == Some(406) {
                Ok(ProbeResult::Inequivalent {
                    reply: err.to_string(),
                })
            } else {
                Err(amqp_error("probe declare of", err))
            }
        }
    }
}

/// A queue's message and consumer counts, exactly as the broker has them now (a passive
/// declare); `None` when the queue does not exist.
pub async fn queue_counts(
    connection: &Connection,
    broker: &str,
    name: &str,
) -> Result<Option<(u32, u32)>, BrokerError> {
    let passive = lapin::options::QueueDeclareOptions {
        passive: true,
        ..lapin::options::QueueDeclareOptions::default()
    };
    let (channel, answer) =
        declare_on_new_channel(connection, broker, name, passive, Default::default()).await?;
    match answer {
        Ok(queue) => {
            close_channel(&channel, "counted").await;
            Ok(Some((queue.message_count(), queue.consumer_count())))
        }
        Err(err) => {
            if absent(&err) {
                Ok(None)
            } else {
                Err(error(broker, format!("passive declare of {name}"), &err))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An AMQP URL where nothing listens (a port just given back).
    fn nobody() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        format!("amqp://127.0.0.1:{port}")
    }

    fn cluster(urls: Vec<String>) -> BrokerConfig {
        BrokerConfig {
            management_urls: vec!["http://127.0.0.1:1".into()],
            amqp_urls: urls,
            vhost: "v".into(),
            user: "u".into(),
            password: crate::inventory::SecretRef::Env("ROLL_TEST_UNUSED".into()),
            reconnect_deadline: Duration::from_secs(1),
            listing_timeout: Duration::from_secs(1),
        }
    }

    /// Every node is tried, in order, each within the timeout: one that accepts the
    /// connection and never answers, then one where nothing listens; the error names both
    /// and is transient (a run waits for the broker), with no password in it.
    #[tokio::test]
    async fn every_node_is_tried_and_the_error_names_each() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let silent = format!("amqp://127.0.0.1:{}", listener.local_addr().unwrap().port());
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let down = nobody();
        let config = cluster(vec![silent.clone(), down.clone()]);
        let started = std::time::Instant::now();
        let err = connect_with_timeout(
            &config,
            &Secret::new("s3cret"),
            "test",
            Duration::from_millis(300),
        )
        .await
        .unwrap_err();
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert!(err.is_transient(), "{err}");
        let text = err.to_string();
        assert!(text.contains("every one of its 2 nodes"), "{text}");
        assert!(
            text.contains(&format!(
                "{silent}: AMQP connect to {silent} did not answer"
            )),
            "{text}"
        );
        assert!(text.contains(&format!("{down}: ")), "{text}");
        assert!(!text.contains("s3cret"), "{text}");
        // Neither answered: the first is still the one tried first.
        assert_eq!(current_url(&config), silent);
    }
}
