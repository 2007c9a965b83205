//! The per-group lock: an exclusive queue on the group's broker (`roll.lock.<group>`), held
//! by an AMQP connection for as long as the run lives. The broker deletes it when the holder
//! dies, however it dies. Who holds it (operator, controller host, pid, start time) is kept
//! in the queue's arguments, where a second `roll` reads it to name the holder.

use std::collections::BTreeMap;

use lapin::options::QueueDeclareOptions;
use serde_json::Value;

use crate::broker::management::Management;
use crate::broker::{BrokerError, amqp};
use crate::clock;
use crate::inventory::{BrokerConfig, Secret};

/// The argument of the lock queue that says who holds it.
const HOLDER_ARGUMENT: &str = "x-roll-holder";

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("group {group} is locked by {holder}: another roll is running on it")]
    Held { group: String, holder: String },
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// A held lock. Dropping it (or the process dying) releases it.
pub struct Lock {
    connection: lapin::Connection,
    /// Who holds it, as recorded.
    pub holder: String,
}

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

/// Takes the group's lock, or says who holds it.
pub async fn acquire(
    group: &str,
    broker: &BrokerConfig,
    password: &Secret,
    purpose: &str,
) -> Result<Lock, LockError> {
    let connection = amqp::connect(broker, password, &format!("lock {group}")).await?;
    let holder = describe_self(purpose);
    let name = queue_name(group);
    let mut arguments = BTreeMap::new();
    arguments.insert(HOLDER_ARGUMENT.to_string(), Value::from(holder.clone()));
    let channel = connection
        .create_channel()
        .await
        .map_err(|err| BrokerError::Amqp {
            broker: broker.display(),
            what: "open the lock channel".into(),
            detail: err.to_string(),
        })?;
    let declared = tokio::time::timeout(
        crate::broker::DEFAULT_TIMEOUT,
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
    .await
    .map_err(|_| BrokerError::Timeout {
        broker: broker.display(),
        what: format!("declare of the lock {name}"),
        after: crate::broker::DEFAULT_TIMEOUT,
    })?;
    match declared {
        Ok(_) => Ok(Lock { connection, holder }),
        Err(err) => {
            amqp::close(connection).await;
            let text = err.to_string();
            if text.contains("RESOURCE_LOCKED") || text.contains("405") {
                let holder = holder_of(group, broker, password)
                    .await
                    .unwrap_or_else(|| "another process (holder unknown)".into());
                Err(LockError::Held {
                    group: group.to_string(),
                    holder,
                })
            } else {
                Err(BrokerError::Amqp {
                    broker: broker.display(),
                    what: format!("declare of the lock {name}"),
                    detail: text,
                }
                .into())
            }
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

impl Lock {
    /// Releases the lock.
    pub async fn release(self) {
        amqp::close(self.connection).await;
    }
}
