//! What each host's playbook commands print: its service state (the status command) and its
//! installed version, the first line of each.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::task::JoinSet;

use crate::inventory::{Group, Host};
use crate::playbook::Playbook;
use crate::remote::{self, Connection, RemoteError};

/// Why a host gave no answer to a probe.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The host is not one of the group's.
    #[error("not in the inventory")]
    NotInInventory,
    /// The session has no connection to the host.
    #[error("not connected")]
    NotConnected,
    /// The command's template could not be filled in for the host.
    #[error("{0}")]
    Template(String),
    /// The host could not be reached, or the command could not run on it.
    #[error(transparent)]
    Remote(#[from] RemoteError),
}

/// What the probes of some hosts found: the service state (the status command's first
/// line) of the hosts asked for it, and the installed version of those asked for it that
/// answered.
#[derive(Debug, Default)]
pub struct Probed {
    pub states: BTreeMap<String, Result<String, ProbeError>>,
    pub versions: BTreeMap<String, String>,
}

/// How many hosts are probed at once. Each probe holds a few file descriptors (its socket to
/// the host's master connection, its pipes) while its commands run.
pub const PROBE_CONCURRENCY: usize = 128;

/// Probes hosts over the open connections, at most [`PROBE_CONCURRENCY`] at a time: the
/// status command on the hosts of `status_of`, the installed-version command on those of
/// `version_of`; a host asked for both runs them in one session (one after the other, each
/// as it would run alone).
pub async fn states_and_versions(
    playbook: &Playbook,
    group: &Group,
    connections: &BTreeMap<String, Connection>,
    status_of: &[String],
    version_of: &[String],
) -> Probed {
    use futures_util::StreamExt;
    let by_name: BTreeMap<&str, &Host> = group.hosts.iter().map(|h| (h.name.as_str(), h)).collect();
    // Each host once: whether its status, whether its version is asked for.
    let mut wanted: BTreeMap<&String, (bool, bool)> = BTreeMap::new();
    for name in status_of {
        wanted.entry(name).or_default().0 = true;
    }
    for name in version_of {
        wanted.entry(name).or_default().1 = true;
    }
    let answers: Vec<_> = futures_util::stream::iter(wanted)
        .map(|(name, (status, version))| {
            let host = by_name.get(name.as_str()).copied();
            let connection = connections.get(name);
            async move {
                let found = probe(playbook, group, host, connection, status, version).await;
                (name.clone(), found)
            }
        })
        .buffer_unordered(PROBE_CONCURRENCY)
        .collect()
        .await;
    let mut probed = Probed::default();
    for (name, (state, version)) in answers {
        if let Some(state) = state {
            probed.states.insert(name.clone(), state);
        }
        if let Some(Ok(version)) = version {
            probed.versions.insert(name, version);
        }
    }
    probed
}

/// The first lines of the status command (when `status`) and of the installed-version
/// command (when `version`) on one host, in one session.
async fn probe(
    playbook: &Playbook,
    group: &Group,
    host: Option<&Host>,
    connection: Option<&Connection>,
    status: bool,
    version: bool,
) -> (
    Option<Result<String, ProbeError>>,
    Option<Result<String, ProbeError>>,
) {
    let commands = &playbook.commands;
    let templates: Vec<&str> = [
        (status, &commands.status),
        (version, &commands.installed_version),
    ]
    .into_iter()
    .filter(|(wanted, _)| *wanted)
    .map(|(_, template)| template.as_str())
    .collect();
    let mut found: Vec<Result<String, ProbeError>> = match (host, connection) {
        (None, _) => templates
            .iter()
            .map(|_| Err(ProbeError::NotInInventory))
            .collect(),
        (_, None) => templates
            .iter()
            .map(|_| Err(ProbeError::NotConnected))
            .collect(),
        (Some(host), Some(connection)) => {
            let scripts: Vec<Result<String, ProbeError>> = templates
                .iter()
                .map(|template| command(playbook, group, host, template))
                .collect();
            let runnable: Vec<(&str, &str)> = scripts
                .iter()
                .filter_map(|s| s.as_ref().ok())
                .map(|s| ("probe", s.as_str()))
                .collect();
            let mut ran = connection
                .run_each(&runnable, commands.timeout)
                .await
                .into_iter();
            scripts
                .into_iter()
                .map(|script| match script {
                    Err(err) => Err(err),
                    Ok(_) => match ran.next() {
                        Some(Ok(output)) => Ok(output.first_line()),
                        Some(Err(err)) => Err(ProbeError::Remote(err)),
                        None => Err(ProbeError::NotConnected),
                    },
                })
                .collect()
        }
    };
    let version = if version { found.pop() } else { None };
    let status = if status { found.pop() } else { None };
    (status, version)
}

/// What a host's status and installed-version commands print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostState {
    /// The status command's first line (`running`, `stopped`, ...).
    pub service: String,
    /// The installed-version command's first line.
    pub version: String,
}

/// The state of every host of the group, each over a connection of its own, all at once;
/// in inventory order.
pub async fn host_states(
    playbook: &Playbook,
    group: &Group,
) -> Vec<(Host, Result<HostState, ProbeError>)> {
    let mut tasks = JoinSet::new();
    for (index, host) in group.hosts.iter().cloned().enumerate() {
        let status = command(playbook, group, &host, &playbook.commands.status);
        let version = command(playbook, group, &host, &playbook.commands.installed_version);
        let timeout = playbook.commands.timeout;
        tasks.spawn(async move {
            let state = async { host_state(&host, &status?, &version?, timeout).await };
            let state = state.await;
            (index, host, state)
        });
    }
    let mut states = vec![];
    while let Some(Ok(answer)) = tasks.join_next().await {
        states.push(answer);
    }
    states.sort_by_key(|(index, _, _)| *index);
    states
        .into_iter()
        .map(|(_, host, state)| (host, state))
        .collect()
}

/// Connects to the host, runs its status and version commands (both, whatever the first
/// one did), and closes.
async fn host_state(
    host: &Host,
    status: &str,
    version: &str,
    timeout: Duration,
) -> Result<HostState, ProbeError> {
    let connection = remote::connect(host).await?;
    let service = first_line(&connection, "status", status, timeout).await;
    let installed = first_line(&connection, "version", version, timeout).await;
    connection.close().await;
    Ok(HostState {
        service: service?,
        version: installed?,
    })
}

/// A playbook command for one host of the group, values shell-quoted.
fn command(
    playbook: &Playbook,
    group: &Group,
    host: &Host,
    template: &str,
) -> Result<String, ProbeError> {
    playbook
        .command(template, &playbook.vars(host, &group.broker))
        .map_err(ProbeError::Template)
}

/// The first line a command prints on the host, trimmed.
async fn first_line(
    connection: &Connection,
    label: &str,
    command: &str,
    timeout: Duration,
) -> Result<String, RemoteError> {
    Ok(connection.run(label, command, timeout).await?.first_line())
}
