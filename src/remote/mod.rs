//! Remote hosts over SSH: one multiplexed master connection per host (OpenSSH's own client,
//! driven through the `openssh` crate's native multiplexing), strict host key checking unless
//! the inventory explicitly turns it off, and a timeout on every call.

mod leftovers;
mod persist;
mod quote;

pub use leftovers::{forget_own_dir, reap as reap_leftovers};

use std::fmt;
use std::num::NonZeroUsize;
use std::path::Path;
use std::time::{Duration, Instant};

use openssh::{ControlPersist, KnownHosts, Session, SessionBuilder};

use crate::inventory::{Host, SshTarget};

pub use quote::quote;

/// The first line a command prints on stderr: its shell's pid (stripped from the output).
const PID_MARK: &str = "\u{1e}roll-pid ";

/// How long the kill of a timed-out command may take.
const KILL_TIMEOUT: Duration = Duration::from_secs(15);

/// The pid a command announced, once its first line of stderr is complete.
fn announced_pid(stderr: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(stderr).ok()?;
    let (first, _) = text.split_once('\n')?;
    first.strip_prefix(PID_MARK)?.trim().parse().ok()
}

/// The stderr of a command without the pid line it starts with.
fn strip_pid_mark(stderr: &str) -> &str {
    match stderr.strip_prefix(PID_MARK) {
        Some(rest) => rest.split_once('\n').map_or("", |(_, after)| after),
        None => stderr,
    }
}

/// The mark ending each script's output when several run in one session
/// ([`Connection::run_each`]): unlike anything a command prints, a nonce in it.
fn end_mark() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "\u{1e}roll-end-{:x}",
        crate::hash::fnv1a(&format!("{now} {n} {}", std::process::id()))
    )
}

/// The parts of a stream cut by `\n{end}` marks, each with the exit code written after its
/// mark (when `coded`): what each script printed, exactly. A part without its mark (the
/// session ended first) is left out.
fn split_marked(stream: &str, end: &str, coded: bool) -> Vec<(String, Option<i32>)> {
    let mark = format!("\n{end}");
    let mut parts = vec![];
    let mut rest = stream;
    while let Some(at) = rest.find(&mark) {
        let part = &rest[..at];
        let after = &rest[at + mark.len()..];
        let Some((tail, next)) = after.split_once('\n') else {
            break;
        };
        let code = if coded {
            tail.trim().parse().ok()
        } else {
            None
        };
        parts.push((part.to_string(), code));
        rest = next;
    }
    parts
}

/// Extra time allowed on top of the inventory's connect timeout for authentication and the
/// master's start-up, which OpenSSH's `ConnectTimeout` does not cover.
const LOGIN_GRACE: Duration = Duration::from_secs(10);

/// Commands run over the master connections by this process (each is a session of its own
/// on its host's master): counted for the CPU report (see `cli`).
static COMMANDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many commands this process has run on hosts (each a session over a master connection).
pub fn commands_run() -> u64 {
    COMMANDS.load(std::sync::atomic::Ordering::Relaxed)
}

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
#[derive(Debug, Clone, thiserror::Error)]
pub enum RemoteError {
    /// The master connection could not be made.
    #[error("{host}: cannot connect to {target}: {reason}")]
    Connect {
        host: String,
        target: String,
        reason: ConnectFailure,
    },
    /// A command did not finish in time (and was killed on the host, as `killed` says).
    #[error("{host}: `{label}` did not finish within {after:?} ({killed})")]
    Timeout {
        host: String,
        label: String,
        after: Duration,
        killed: String,
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

    /// The first line the command printed, trimmed (empty when it printed nothing).
    pub fn first_line(&self) -> String {
        self.stdout.lines().next().unwrap_or("").trim().to_string()
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
    // Once per process, before its first connection: the masters of killed runs are ended.
    static REAPED: tokio::sync::OnceCell<usize> = tokio::sync::OnceCell::const_new();
    REAPED.get_or_init(leftovers::reap).await;
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
    let builder = builder(target, entry.is_some());
    let limit = target.connect_timeout + LOGIN_GRACE;
    let connect_error = |reason| RemoteError::Connect {
        host: host.name.clone(),
        target: target.destination(),
        reason,
    };
    tracing::debug!(host = %host.name, target = %target.destination(), "ssh connect");
    let connected = match (&entry, target.persist) {
        (Some(entry), Some(persist)) => launch_kept(builder, target, entry, persist, limit).await,
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

/// The ssh settings of a target. A connection of this run only lives in this process's own
/// control directory, so that the masters of a killed run can be found and ended (see
/// `leftovers`); a kept one (`persist`) is meant to outlive it.
fn builder(target: &SshTarget, kept: bool) -> SessionBuilder {
    let mut builder = SessionBuilder::default();
    let control = match (kept, leftovers::own_dir()) {
        (false, Some(dir)) => dir.to_path_buf(),
        _ => std::env::temp_dir(),
    };
    builder
        .port(target.port)
        .connect_timeout(target.connect_timeout)
        .server_alive_interval(Duration::from_secs(15))
        .control_directory(control)
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
    builder
}

/// Starts a master that outlives this run, within `limit`: it exits by itself once idle for
/// `persist`, and `entry` records its socket for the next run.
async fn launch_kept(
    mut builder: SessionBuilder,
    target: &SshTarget,
    entry: &Path,
    persist: Duration,
    limit: Duration,
) -> Result<Result<Session, openssh::Error>, tokio::time::error::Elapsed> {
    let idle = NonZeroUsize::new(usize::try_from(persist.as_secs()).unwrap_or(usize::MAX))
        .unwrap_or(NonZeroUsize::MIN);
    builder.control_persist(ControlPersist::IdleFor(idle));
    tokio::time::timeout(limit, builder.launch_master(&target.address))
        .await
        .map(|launched| {
            launched.map(|dir| {
                // Its directory is no longer removed on drop.
                let dir = dir.keep();
                let socket = dir.join("master");
                persist::record(entry, &socket);
                Session::resume_mux(socket.into_boxed_path(), None)
            })
        })
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
    /// A command that does not finish in time is killed on the host (its process group),
    /// not left running.
    pub async fn run(
        &self,
        label: &str,
        script: &str,
        timeout: Duration,
    ) -> Result<Output, RemoteError> {
        self.run_with_input(label, script, None, timeout).await
    }

    /// Runs several scripts one after the other in one session (one round trip, one
    /// session on the host instead of one each), each with `sh -c` of its own, as
    /// [`Connection::run`] would: every script gets its own exit code, stdout and stderr,
    /// and a script's failure does not stop the next. The whole takes at most `timeout` per
    /// script; a timeout or a broken connection is every script's error.
    pub async fn run_each(
        &self,
        scripts: &[(&str, &str)],
        timeout: Duration,
    ) -> Vec<Result<Output, RemoteError>> {
        let end = end_mark();
        let mut joined = String::new();
        for (_, script) in scripts {
            // The script on the second line of its shell, as `run` puts it (after the pid
            // line): the shell's messages name the same line numbers.
            joined.push_str(&format!(
                "sh -c {}\nprintf '\\n{end} %s\\n' \"$?\"; printf '\\n{end}\\n' >&2\n",
                quote(&format!("\n{script}"))
            ));
        }
        let mut label: Vec<&str> = scripts.iter().map(|(label, _)| *label).collect();
        label.dedup();
        let label = label.join(", ");
        let times = u32::try_from(scripts.len()).unwrap_or(u32::MAX).max(1);
        let all = self
            .run_with_input(&label, &joined, None, timeout.saturating_mul(times))
            .await;
        let output = match all {
            Ok(output) => output,
            Err(err) => {
                return scripts.iter().map(|_| Err(err.clone())).collect();
            }
        };
        let outs = split_marked(&output.stdout, &end, true);
        let errs = split_marked(&output.stderr, &end, false);
        scripts
            .iter()
            .enumerate()
            .map(|(i, (label, _))| match (outs.get(i), errs.get(i)) {
                (Some((stdout, code)), Some((stderr, _))) => Ok(Output {
                    code: *code,
                    stdout: stdout.clone(),
                    stderr: stderr.clone(),
                    elapsed: output.elapsed,
                }),
                _ => Err(RemoteError::Command {
                    host: self.host.clone(),
                    label: label.to_string(),
                    detail: format!(
                        "its session ended before it did (exit {:?}): {}",
                        output.code,
                        output.stderr.lines().last().unwrap_or("")
                    ),
                }),
            })
            .collect()
    }

    /// Like [`Connection::run`], with `input` streamed to the command's standard input (a
    /// file's content of any size: nothing of it goes into the command line).
    pub async fn run_with_input(
        &self,
        label: &str,
        script: &str,
        input: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Output, RemoteError> {
        let started = Instant::now();
        // The shell says its pid first (on stderr), so that a command that outlives its
        // timeout can be found and killed.
        let wrapped = format!("printf '{PID_MARK}%s\\n' \"$$\" >&2\n{script}");
        let pid = std::sync::Arc::new(std::sync::Mutex::new(None::<u32>));
        tracing::debug!(host = %self.host, label, "run");
        let work = self.spawn_and_collect(&wrapped, input, pid.clone());
        let collected = match tokio::time::timeout(timeout, work).await {
            Err(_) => {
                let remote = pid.lock().ok().and_then(|p| *p);
                let killed = match remote {
                    Some(pid) => self.kill_group(pid).await,
                    None => "its pid was not known: it may still run".to_string(),
                };
                return Err(RemoteError::Timeout {
                    host: self.host.clone(),
                    label: label.to_string(),
                    after: timeout,
                    killed,
                });
            }
            Ok(collected) => collected,
        };
        let (status, stdout, stderr) = collected.map_err(|detail| RemoteError::Command {
            host: self.host.clone(),
            label: label.to_string(),
            detail,
        })?;
        let stderr = String::from_utf8_lossy(&stderr).into_owned();
        Ok(Output {
            code: status.code(),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: strip_pid_mark(&stderr).to_string(),
            elapsed: started.elapsed(),
        })
    }

    /// Spawns `sh -c script`, feeds it `input`, and collects what it prints; the pid it
    /// announces first goes to `pid` as soon as it arrives.
    async fn spawn_and_collect(
        &self,
        script: &str,
        input: Option<&[u8]>,
        pid: std::sync::Arc<std::sync::Mutex<Option<u32>>>,
    ) -> Result<(std::process::ExitStatus, Vec<u8>, Vec<u8>), String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut command = self.session.command("sh");
        command
            .arg("-c")
            .arg(script)
            .stdin(if input.is_some() {
                openssh::Stdio::piped()
            } else {
                openssh::Stdio::null()
            })
            .stdout(openssh::Stdio::piped())
            .stderr(openssh::Stdio::piped());
        COMMANDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut child = command.spawn().await.map_err(|e| error_chain(&e))?;
        let stdin = child.stdin().take();
        let stdout = child.stdout().take();
        let stderr = child.stderr().take();
        let write = async move {
            if let (Some(mut pipe), Some(data)) = (stdin, input) {
                pipe.write_all(data).await?;
                pipe.shutdown().await?;
            }
            Ok::<(), std::io::Error>(())
        };
        let read_out = async move {
            let mut out = Vec::new();
            if let Some(mut pipe) = stdout {
                pipe.read_to_end(&mut out).await?;
            }
            Ok::<Vec<u8>, std::io::Error>(out)
        };
        let read_err = async move {
            // Read straight into the vector: a buffer on the stack would make every
            // command's future (moved around whole) that much larger.
            let mut err = Vec::with_capacity(256);
            if let Some(mut pipe) = stderr {
                loop {
                    err.reserve(256);
                    let n = pipe.read_buf(&mut err).await?;
                    if n == 0 {
                        break;
                    }
                    if let Ok(mut slot) = pid.lock()
                        && slot.is_none()
                    {
                        *slot = announced_pid(&err);
                    }
                }
            }
            Ok::<Vec<u8>, std::io::Error>(err)
        };
        let (written, out, err) = tokio::join!(write, read_out, read_err);
        let out = out.map_err(|e| e.to_string())?;
        let err = err.map_err(|e| e.to_string())?;
        let status = child.wait().await.map_err(|e| error_chain(&e))?;
        // A command that exits without reading all of its input is not an error here (the
        // exit code tells); a broken connection shows in `wait`.
        if let Err(e) = written {
            tracing::debug!(host = %self.host, error = %e, "stdin");
        }
        Ok((status, out, err))
    }

    /// Kills the process group of a timed-out command (TERM, then KILL a second later);
    /// says what happened, for the error.
    async fn kill_group(&self, pid: u32) -> String {
        let script = format!(
            "pg=$(ps -o pgid= -p {pid} 2>/dev/null | tr -d ' '); \
             if [ -z \"$pg\" ]; then echo gone; exit 0; fi; \
             kill -TERM \"-$pg\" 2>/dev/null; sleep 1; kill -KILL \"-$pg\" 2>/dev/null; \
             echo killed"
        );
        let mut command = self.session.command("sh");
        command.arg("-c").arg(&script);
        COMMANDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match tokio::time::timeout(KILL_TIMEOUT, command.output()).await {
            Ok(Ok(out)) if String::from_utf8_lossy(&out.stdout).contains("killed") => {
                format!("killed on the host: process group of pid {pid}")
            }
            Ok(Ok(_)) => format!("pid {pid} had ended"),
            Ok(Err(err)) => format!("could not kill pid {pid}: {}", error_chain(&err)),
            Err(_) => format!("could not kill pid {pid}: no answer"),
        }
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
    fn the_pid_line_is_read_and_stripped() {
        let err = format!("{PID_MARK}4242\nreal error\n");
        assert_eq!(announced_pid(err.as_bytes()), Some(4242));
        assert_eq!(announced_pid(format!("{PID_MARK}42").as_bytes()), None);
        assert_eq!(strip_pid_mark(&err), "real error\n");
        assert_eq!(strip_pid_mark("plain"), "plain");
    }

    #[test]
    fn marked_parts_come_back_exactly() {
        let end = end_mark();
        assert_ne!(end, end_mark(), "a mark of its own for every session");
        let out = format!("running\n\n{end} 0\n2.0\n{end} 3\n\n{end} 127\n");
        assert_eq!(
            split_marked(&out, &end, true),
            vec![
                ("running\n".to_string(), Some(0)),
                // Printed without a newline at its end.
                ("2.0".to_string(), Some(3)),
                (String::new(), Some(127)),
            ]
        );
        // The session ended in the middle of the second script: only the first is whole.
        let cut = format!("a\n\n{end} 0\nb");
        assert_eq!(
            split_marked(&cut, &end, true),
            vec![("a\n".to_string(), Some(0))]
        );
        let err = format!("oops\n\n{end}\n\n{end}\n");
        assert_eq!(
            split_marked(&err, &end, false),
            vec![("oops\n".to_string(), None), (String::new(), None)]
        );
    }

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
