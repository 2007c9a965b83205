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

/// The service state of each host, by its playbook status command (first word).
pub async fn states(
    playbook: &Playbook,
    group: &Group,
    connections: &BTreeMap<String, Connection>,
    hosts: &[String],
) -> BTreeMap<String, Result<String, ProbeError>> {
    first_lines(
        playbook,
        group,
        connections,
        hosts,
        &playbook.commands.status,
    )
    .await
}

/// The installed version of each host that answers.
pub async fn versions(
    playbook: &Playbook,
    group: &Group,
    connections: &BTreeMap<String, Connection>,
    hosts: &[String],
) -> BTreeMap<String, String> {
    first_lines(
        playbook,
        group,
        connections,
        hosts,
        &playbook.commands.installed_version,
    )
    .await
    .into_iter()
    .filter_map(|(h, v)| v.ok().map(|v| (h, v)))
    .collect()
}

/// How many probes run at once. Each holds a few file descriptors (its socket to the host's
/// master connection, its pipes) while its command runs.
pub const PROBE_CONCURRENCY: usize = 128;

/// The first line a playbook command prints on each host, over the open connections, at
/// most [`PROBE_CONCURRENCY`] hosts at a time.
async fn first_lines(
    playbook: &Playbook,
    group: &Group,
    connections: &BTreeMap<String, Connection>,
    hosts: &[String],
    template: &str,
) -> BTreeMap<String, Result<String, ProbeError>> {
    use futures_util::StreamExt;
    let by_name: BTreeMap<&str, &Host> = group.hosts.iter().map(|h| (h.name.as_str(), h)).collect();
    futures_util::stream::iter(hosts)
        .map(|name| async {
            let host = by_name.get(name.as_str()).copied();
            let result = probe(playbook, group, host, connections.get(name), template).await;
            (name.clone(), result)
        })
        .buffer_unordered(PROBE_CONCURRENCY)
        .collect()
        .await
}

/// The first line a playbook command prints on one host.
async fn probe(
    playbook: &Playbook,
    group: &Group,
    host: Option<&Host>,
    connection: Option<&Connection>,
    template: &str,
) -> Result<String, ProbeError> {
    let host = host.ok_or(ProbeError::NotInInventory)?;
    let connection = connection.ok_or(ProbeError::NotConnected)?;
    let command = command(playbook, group, host, template)?;
    let timeout = playbook.commands.timeout;
    Ok(first_line(connection, "probe", &command, timeout).await?)
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
