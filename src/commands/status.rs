//! `roll status`: which half runs which release and which is the failover, probed live on
//! every host (the table that seed 003 keeps by hand, always true), with the last run and
//! step of each host from the journal.

use std::path::Path;

use serde::Serialize;
use tabled::Tabled;
use tokio::task::JoinSet;

use super::select_groups;
use crate::error::Error;
use crate::exit;
use crate::inventory::{Group, Inventory};
use crate::journal::{self, LastRun, RunKind, last_summary as last_run};
use crate::output::{self, OutputFormat};
use crate::playbook::{self, Playbook};
use crate::remote;

/// One host's row.
#[derive(Debug, Clone, Serialize, Tabled)]
pub struct StatusRow {
    pub host: String,
    pub group: String,
    pub half: String,
    #[tabled(display = "output::cell")]
    pub role: Option<String>,
    pub version: String,
    pub service: String,
    #[tabled(display = "output::cell")]
    pub last_run: Option<String>,
    #[tabled(display = "output::cell")]
    pub last_step: Option<String>,
    #[tabled(display = "failover_cell")]
    pub failover: bool,
}

fn failover_cell(value: &bool) -> String {
    if *value { "failover" } else { "" }.to_string()
}

/// Probes one group.
async fn group_rows(group: &Group, playbook: &Playbook, last: Option<&LastRun>) -> Vec<StatusRow> {
    let mut tasks = JoinSet::new();
    for (index, host) in group.hosts.iter().cloned().enumerate() {
        let vars = playbook.vars(&host, &group.broker);
        let status = playbook.command(&playbook.commands.status, &vars);
        let version = playbook.command(&playbook.commands.installed_version, &vars);
        let timeout = playbook.commands.timeout;
        tasks.spawn(async move {
            let probe = async {
                let status = status.map_err(|e| e.to_string())?;
                let version = version.map_err(|e| e.to_string())?;
                let connection = remote::connect(&host).await.map_err(|e| match e {
                    remote::RemoteError::Connect { reason, .. } => {
                        format!("unreachable: {reason}")
                    }
                    other => other.to_string(),
                })?;
                let state = connection.run("status", &status, timeout).await;
                let installed = connection.run("version", &version, timeout).await;
                connection.close().await;
                let first =
                    |o: remote::Output| o.stdout.lines().next().unwrap_or("").trim().to_string();
                Ok::<_, String>((
                    state.map(first).map_err(|e| e.to_string())?,
                    installed.map(first).map_err(|e| e.to_string())?,
                ))
            };
            let result = probe.await;
            (index, host, result)
        });
    }
    let mut rows = vec![];
    while let Some(Ok((index, host, probe))) = tasks.join_next().await {
        let (service, version) = match probe {
            Ok((s, v)) => (s, v),
            Err(e) => (e, "?".into()),
        };
        let failover = last.is_some_and(|run| {
            run.kind == Some(RunKind::Upgrade)
                && run.half == Some(host.half.other())
                && version != run.version
        });
        rows.push((
            index,
            StatusRow {
                host: host.name.clone(),
                group: group.name.clone(),
                half: host.half.to_string(),
                role: host.role.map(|r| r.to_string()),
                version,
                service,
                last_run: last.map(|r| {
                    format!(
                        "{} {}{} {}",
                        r.kind.map(|k| k.to_string()).unwrap_or_default(),
                        r.half.map(|h| format!("half {h} ")).unwrap_or_default(),
                        r.run_id,
                        r.status
                    )
                }),
                last_step: last.and_then(|r| r.steps.get(&host.name).cloned()),
                failover,
            },
        ));
    }
    rows.sort_by_key(|(i, _)| *i);
    rows.into_iter().map(|(_, r)| r).collect()
}

/// Runs `roll status`.
pub async fn run(
    inventory: &Inventory,
    group: Option<&str>,
    playbook_path: Option<&Path>,
    state_dir: &Path,
    format: OutputFormat,
) -> Result<u8, Error> {
    let groups = select_groups(inventory, group)?;
    let mut rows = vec![];
    for group in groups {
        let group = &journal::with_role_overrides(group.clone(), state_dir)?;
        let last = last_run(state_dir, &group.name)?;
        let path = match (
            playbook_path,
            last.as_ref().and_then(|r| r.playbook_path.clone()),
        ) {
            (Some(p), _) => p.to_path_buf(),
            (None, Some(p)) => p,
            (None, None) => {
                return Err(Error::Usage(format!(
                    "group {}: no run in {} to take the playbook from: give -p PLAYBOOK",
                    group.name,
                    state_dir.display()
                )));
            }
        };
        let playbook = playbook::load(&path)?;
        rows.extend(group_rows(group, &playbook, last.as_ref()).await);
        if let Some(note) = holding_note(group).await {
            crate::output::note(&note);
        }
    }
    let failover: Vec<&str> = rows
        .iter()
        .filter(|r| r.failover)
        .map(|r| r.host.as_str())
        .collect();
    let summary = if failover.is_empty() {
        format!("{} hosts; no failover half", rows.len())
    } else {
        format!(
            "{} hosts; failover (old release): {}",
            rows.len(),
            failover.join(" ")
        )
    };
    output::print_rows(&rows, format, Some(&summary))?;
    Ok(exit::SUCCESS)
}

/// A warning when holding queues (`roll.hold.*`) are on the group's broker: an interrupted
/// run's messages wait there until `roll resume` or `roll rollback` moves them back.
async fn holding_note(group: &Group) -> Option<String> {
    let password = crate::broker::password(&group.broker).ok()?;
    let management = crate::broker::management::Management::new(&group.broker, password).ok()?;
    let held: Vec<(String, u64)> = management
        .list_queues()
        .await
        .ok()?
        .into_iter()
        .filter(|q| crate::broker::holding::is_holding(&q.name))
        .map(|q| (q.name, q.messages.unwrap_or(0)))
        .collect();
    if held.is_empty() {
        return None;
    }
    let messages: u64 = held.iter().map(|(_, m)| m).sum();
    Some(format!(
        "group {}: {} holding queues on the broker ({messages} messages) from an interrupted \
         run: `roll resume --group {}` finishes it, `roll rollback` undoes it: {}",
        group.name,
        held.len(),
        group.name,
        held.iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    ))
}
