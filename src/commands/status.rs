//! `roll status`: which half runs which release and which is the failover, probed live on
//! every host (the table that seed 003 keeps by hand, always true), with the last run and
//! step of each host from the journal.

use std::path::Path;

use serde::Serialize;
use tabled::Tabled;

use super::select_groups;
use crate::error::Error;
use crate::exit;
use crate::freeze::Seen;
use crate::inventory::{Group, Host, Inventory};
use crate::journal::{self, LastRun, RunKind, last_summary as last_run};
use crate::output::{self, OutputFormat};
use crate::playbook::{self, Playbook};
use crate::remote;
use crate::survey::{self, HostState, ProbeError};

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
    /// The group's change freeze (`frozen` or `expired`), or `None` (JSON `null`).
    #[tabled(display = "crate::render::freeze_cell")]
    pub freeze: Option<Seen>,
}

fn failover_cell(value: &bool) -> String {
    if *value { "failover" } else { "" }.to_string()
}

/// Probes one group.
async fn group_rows(
    group: &Group,
    playbook: &Playbook,
    last: Option<&LastRun>,
    freeze: Option<&Seen>,
) -> Vec<StatusRow> {
    survey::host_states(playbook, group)
        .await
        .into_iter()
        .map(|(host, state)| StatusRow {
            freeze: freeze.cloned(),
            ..row(group, &host, state, last)
        })
        .collect()
}

/// One host's row, from its probe and the group's last run.
fn row(
    group: &Group,
    host: &Host,
    state: Result<HostState, ProbeError>,
    last: Option<&LastRun>,
) -> StatusRow {
    let HostState { service, version } = state.unwrap_or_else(|err| HostState {
        service: unanswered(&err),
        version: "?".into(),
    });
    let failover = last.is_some_and(|run| {
        run.kind == Some(RunKind::Upgrade)
            && run.half == Some(host.half.other())
            && version != run.version
    });
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
        freeze: None,
    }
}

/// The service cell of a host that did not answer: why (an unreachable host without its
/// name and address, which the row already shows).
fn unanswered(err: &ProbeError) -> String {
    match err {
        ProbeError::Remote(remote::RemoteError::Connect { reason, .. }) => {
            format!("unreachable: {reason}")
        }
        other => other.to_string(),
    }
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
    let mut freezes = vec![];
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
        let freeze = freeze_of(group).await;
        rows.extend(group_rows(group, &playbook, last.as_ref(), freeze.as_ref()).await);
        freezes.extend(freeze);
        if let Some(note) = holding_note(group).await {
            crate::output::note(&note);
        }
    }
    let failover: Vec<&str> = rows
        .iter()
        .filter(|r| r.failover)
        .map(|r| r.host.as_str())
        .collect();
    let mut summary = if failover.is_empty() {
        format!("{} hosts; no failover half", rows.len())
    } else {
        format!(
            "{} hosts; failover (old release): {}",
            rows.len(),
            failover.join(" ")
        )
    };
    for freeze in &freezes {
        summary.push('\n');
        summary.push_str(&crate::render::freeze_line(freeze));
    }
    output::print_rows(&rows, format, Some(&summary))?;
    Ok(exit::SUCCESS)
}

/// The group's freeze as the broker has it now; one that cannot be read is noted (and left
/// out).
async fn freeze_of(group: &Group) -> Option<Seen> {
    let read = async {
        let password = crate::broker::password(&group.broker)?;
        let management = crate::broker::management::Management::new(&group.broker, password)?;
        crate::freeze::read(&management, &group.name).await
    };
    match read.await {
        Ok(freeze) => freeze.map(crate::freeze::Freeze::seen_now),
        Err(err) => {
            crate::output::note(&format!(
                "group {}: cannot read its freeze: {err}",
                group.name
            ));
            None
        }
    }
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
