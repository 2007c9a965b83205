//! Remote hosts over SSH: one multiplexed master connection per host (OpenSSH's own client,
//! driven through the `openssh` crate's native multiplexing), strict host key checking unless
//! the inventory explicitly turns it off, and a timeout on every call.

mod persist;
mod quote;

use std::fmt;
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use openssh::{ControlPersist, KnownHosts, Session, SessionBuilder};

use crate::inventory::Host;

pub use quote::quote;

/// Extra time allowed on top of the inventory's connect timeout for authentication and the
/// master's start-up, which OpenSSH's `ConnectTimeout` does not cover.
const LOGIN_GRACE: Duration = Duration::from_secs(10);

/// How many connections are opened at once. Every handshake costs the controller CPU (about
/// 10 ms with curve25519, over 100 ms with OpenSSH 9's default post-quantum exchange), so a
/// large fleet connected all at once starves the handshakes of CPU and they time out.
pub const CONNECT_CONCURRENCY: usize = 64;

/// Why a host could not be reached, as an operator would want to read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectFailure {
    /// The host answered but refused our key or user.
    LoginRefused(String),
    /// The host's key does not match the known_hosts file, or is not in it.
    HostKey(String),
    /// Nothing listens on the port.
    ConnectionRefused,
    /// No answer within the connect timeout.
    TimedOut(Duration),
    /// The address does not resolve.
    Unresolved(String),
    /// Anything else ssh said.
    Other(String),
}

impl fmt::Display for ConnectFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectFailure::LoginRefused(detail) => write!(f, "login refused ({detail})"),
            ConnectFailure::HostKey(detail) => write!(f, "host key verification failed ({detail})"),
            ConnectFailure::ConnectionRefused => write!(f, "connection refused"),
            ConnectFailure::TimedOut(after) => write!(f, "timed out after {after:?}"),
            ConnectFailure::Unresolved(detail) => write!(f, "address does not resolve ({detail})"),
            ConnectFailure::Other(detail) => write!(f, "{detail}"),
        }
    }
}

impl ConnectFailure {
    /// Classifies what ssh printed when the master connection failed.
    pub fn from_ssh_message(message: &str) -> ConnectFailure {
        let text = message.trim();
        let last_line = text
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim()
            .to_string();
        if text.contains("REMOTE HOST IDENTIFICATION HAS CHANGED") {
            ConnectFailure::HostKey("the host key changed".into())
        } else if text.contains("Host key verification failed")
            || text.contains("No ED25519 host key is known")
            || text.contains("host key is known")
        {
            ConnectFailure::HostKey("the host key is not in known_hosts".into())
        } else if text.contains("Permission denied") {
            ConnectFailure::LoginRefused(last_line.trim_end_matches('.').to_string())
        } else if text.contains("Connection refused") {
            ConnectFailure::ConnectionRefused
        } else if text.contains("Could not resolve") {
            ConnectFailure::Unresolved(last_line)
        } else if text.is_empty() {
            ConnectFailure::Other("ssh failed without a message".into())
        } else {
            ConnectFailure::Other(last_line)
        }
    }
}

/// An SSH error, naming the host.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The master connection could not be made.
    #[error("{host}: cannot connect to {target}: {reason}")]
    Connect {
        host: String,
        target: String,
        reason: ConnectFailure,
    },
    /// A command did not finish in time.
    #[error("{host}: `{label}` did not finish within {after:?}")]
    Timeout {
        host: String,
        label: String,
        after: Duration,
    },
    /// The command could not be run, or the connection broke while it ran.
    #[error("{host}: `{label}` could not run: {detail}")]
    Command {
        host: String,
        label: String,
        detail: String,
    },
}

/// What a remote command printed and how it ended.
#[derive(Debug, Clone)]
pub struct Output {
    /// The exit code, or `None` when the process ended by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Output {
    /// True when the command exited with code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// An open, multiplexed SSH connection to one host.
pub struct Connection {
    host: String,
    session: Session,
    /// Kept open for the next run when closed (the inventory's `persist`).
    kept: bool,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("host", &self.host)
            .finish()
    }
}

/// Opens the master connection to a host of the inventory, or reuses the one an earlier run
/// kept when the inventory sets `persist`.
pub async fn connect(host: &Host) -> Result<Connection, RemoteError> {
    let target = &host.ssh;
    let entry = match target.persist {
        Some(_) => persist::registry().map(|registry| persist::entry(registry, target)),
        None => None,
    };
    if let Some(entry) = &entry
        && let Some(session) = persist::reuse(entry).await
    {
        tracing::debug!(host = %host.name, target = %target.destination(), "ssh reused");
        return Ok(Connection {
            host: host.name.clone(),
            session,
            kept: true,
        });
    }
    let mut builder = SessionBuilder::default();
    builder
        .port(target.port)
        .connect_timeout(target.connect_timeout)
        .server_alive_interval(Duration::from_secs(15))
        .control_directory(std::env::temp_dir())
        .known_hosts_check(if target.strict_host_key_checking {
            KnownHosts::Strict
        } else {
            KnownHosts::Accept
        });
    if let Some(user) = &target.user {
        builder.user(user.clone());
    }
    if let Some(key) = &target.identity_file {
        builder.keyfile(key);
    }
    if let Some(known_hosts) = &target.known_hosts_file {
        builder.user_known_hosts_file(known_hosts);
    }
    if let Some(config) = &target.config_file {
        builder.config_file(config);
    }
    let limit = target.connect_timeout + LOGIN_GRACE;
    let connect_error = |reason| RemoteError::Connect {
        host: host.name.clone(),
        target: target.destination(),
        reason,
    };
    tracing::debug!(host = %host.name, target = %target.destination(), "ssh connect");
    let connected = match (&entry, target.persist) {
        (Some(entry), Some(persist)) => {
            let idle = NonZeroUsize::new(usize::try_from(persist.as_secs()).unwrap_or(usize::MAX))
                .unwrap_or(NonZeroUsize::MIN);
            builder.control_persist(ControlPersist::IdleFor(idle));
            tokio::time::timeout(limit, builder.launch_master(&target.address))
                .await
                .map(|launched| {
                    launched.map(|dir| {
                        // The master outlives this run: its directory is no longer removed
                        // on drop, and it exits by itself once idle for `persist`.
                        let dir = dir.keep();
                        let socket = dir.join("master");
                        persist::record(entry, &socket);
                        Session::resume_mux(socket.into_boxed_path(), None)
                    })
                })
        }
        _ => tokio::time::timeout(limit, builder.connect_mux(&target.address)).await,
    };
    match connected {
        Err(_) => Err(connect_error(ConnectFailure::TimedOut(limit))),
        Ok(Err(err)) => Err(connect_error(ConnectFailure::from_ssh_message(
            &error_chain(&err),
        ))),
        Ok(Ok(session)) => Ok(Connection {
            host: host.name.clone(),
            session,
            kept: entry.is_some(),
        }),
    }
}

/// Joins an error and its sources into one line.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

impl Connection {
    /// The inventory name of the host.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Runs a shell script on the host with `sh -c`, waiting at most `timeout`.
    /// `label` names the command in errors and logs (never put secrets in it).
    /// A non-zero exit is not an error here: the caller decides, from the output.
    pub async fn run(
        &self,
        label: &str,
        script: &str,
        timeout: Duration,
    ) -> Result<Output, RemoteError> {
        let started = Instant::now();
        let mut command = self.session.command("sh");
        command.arg("-c").arg(script);
        tracing::debug!(host = %self.host, label, "run");
        let output = match tokio::time::timeout(timeout, command.output()).await {
            Err(_) => {
                return Err(RemoteError::Timeout {
                    host: self.host.clone(),
                    label: label.to_string(),
                    after: timeout,
                });
            }
            Ok(Err(err)) => {
                return Err(RemoteError::Command {
                    host: self.host.clone(),
                    label: label.to_string(),
                    detail: error_chain(&err),
                });
            }
            Ok(Ok(output)) => output,
        };
        Ok(Output {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            elapsed: started.elapsed(),
        })
    }

    /// Closes the master connection, or leaves it for the next run when it is kept.
    pub async fn close(self) {
        if self.kept {
            let _ = self.session.detach();
            return;
        }
        if let Err(err) = self.session.close().await {
            tracing::debug!(host = %self.host, error = %err, "ssh close");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_messages_are_classified() {
        assert_eq!(
            ConnectFailure::from_ssh_message("rl-px1@127.0.0.1: Permission denied (publickey)."),
            ConnectFailure::LoginRefused("rl-px1@127.0.0.1: Permission denied (publickey)".into())
        );
        assert!(matches!(
            ConnectFailure::from_ssh_message(
                "@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n...\nHost key verification failed."
            ),
            ConnectFailure::HostKey(_)
        ));
        assert!(matches!(
            ConnectFailure::from_ssh_message("Host key verification failed."),
            ConnectFailure::HostKey(_)
        ));
        assert_eq!(
            ConnectFailure::from_ssh_message(
                "ssh: connect to host 127.0.0.1 port 2299: Connection refused"
            ),
            ConnectFailure::ConnectionRefused
        );
        assert!(matches!(
            ConnectFailure::from_ssh_message(
                "ssh: Could not resolve hostname nowhere: Name or service not known"
            ),
            ConnectFailure::Unresolved(_)
        ));
        assert_eq!(
            ConnectFailure::from_ssh_message("something odd\nlast words"),
            ConnectFailure::Other("last words".into())
        );
    }
}
