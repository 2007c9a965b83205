//! `roll resume`: continues the group's interrupted (or failed) run from its journal,
//! executing the same plan; steps the journal shows as done are skipped.

use std::path::Path;

use super::upgrade::{close_all, connect_all, execute, password};
use crate::broker::management::Management;
use crate::error::Error;
use crate::exit;
use crate::inventory::Inventory;
use crate::journal::{self, Event, Journal};
use crate::lock;
use crate::output::OutputFormat;
use crate::plan::upgrade::UpgradePlan;
use crate::playbook;

/// Runs `roll resume`.
pub async fn run(
    inventory: &Inventory,
    group: &str,
    state_dir: &Path,
    format: OutputFormat,
) -> Result<u8, Error> {
    let group = super::select_groups(inventory, Some(group))?
        .first()
        .copied()
        .cloned()
        .ok_or_else(|| Error::Usage(format!("no group {group}")))?;
    let group = journal::with_role_overrides(group, state_dir)?;
    let Some(path) = journal::last_run(state_dir, &group.name)? else {
        return Err(Error::Usage(format!(
            "group {}: no run to resume in {}",
            group.name,
            state_dir.display()
        )));
    };
    let entries = journal::read(&path)?;
    let last = super::status::summarise(&entries);
    if last.status == "done" {
        crate::output::note(&format!(
            "the last run of group {} ({}) is done: nothing to resume",
            group.name, last.run_id
        ));
        return Ok(exit::SUCCESS);
    }
    let plan = entries
        .iter()
        .find_map(|e| match &e.event {
            Event::Started { kind, plan, .. } if kind == "upgrade" => {
                serde_json::from_value::<UpgradePlan>(plan.clone()).ok()
            }
            _ => None,
        })
        .ok_or_else(|| {
            Error::Usage(format!(
                "{}: no upgrade plan in this journal to resume",
                path.display()
            ))
        })?;
    let playbook = playbook::load(Path::new(&plan.playbook_path))?;
    if playbook.version != plan.version || playbook.name != plan.playbook {
        return Err(Error::Usage(format!(
            "{} now says {} {}, but the run planned {} {}: refusing to resume with another release",
            plan.playbook_path, playbook.name, playbook.version, plan.playbook, plan.version
        )));
    }
    let password = password(&group)?;
    let management = Management::new(&group.broker, password.clone())?;
    management.overview().await?;
    let lock = lock::acquire(&group.name, &group.broker, &password, "resume").await?;
    let connections = match connect_all(&group).await {
        Ok(c) => c,
        Err(err) => {
            lock.release().await;
            return Err(err);
        }
    };
    let mut journal = match Journal::reopen(&path) {
        Ok(j) => j,
        Err(err) => {
            close_all(connections).await;
            lock.release().await;
            return Err(err.into());
        }
    };
    journal.append(Event::Resumed {
        pid: std::process::id(),
        operator: lock::operator(),
    })?;
    crate::output::note(&format!(
        "resuming run {} of group {} (journal {})",
        plan.run_id,
        group.name,
        path.display()
    ));
    let result = execute(
        &group,
        &playbook,
        plan,
        management,
        password,
        journal,
        connections,
        &entries,
        format,
    )
    .await;
    lock.release().await;
    result
}
