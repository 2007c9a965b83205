//! `roll resume`: continues the group's interrupted (or failed) run from its journal,
//! executing the plan approved for it; steps the journal shows as done are skipped. The
//! group's lock is taken before the journal is read. A playbook file or an inventory changed
//! since the approval is refused, with what changed.

use std::path::Path;

use crate::error::Error;
use crate::exit;
use crate::inventory::Inventory;
use crate::journal::{self, Entry, Event, Journal, RunKind, RunState, RunStatus};
use crate::output::{self, OutputFormat};
use crate::plan::upgrade::UpgradePlan;
use crate::plan::{contract, journaled};
use crate::playbook;
use crate::session::Session;
use crate::{lock, undo};

/// Runs `roll resume`.
pub async fn run(
    inventory: &Inventory,
    group: &str,
    state_dir: &Path,
    format: OutputFormat,
) -> Result<u8, Error> {
    let group = super::one_group(inventory, group, state_dir)?;
    let mut session = Session::open(group, "resume").await?;
    let result = resume_in(&mut session, state_dir, format).await;
    session.close().await;
    result
}

async fn resume_in(
    session: &mut Session,
    state_dir: &Path,
    format: OutputFormat,
) -> Result<u8, Error> {
    let name = session.group.name.clone();
    let Some(path) = journal::last_run(state_dir, &name)? else {
        return Err(Error::Usage(format!(
            "group {name}: no run to resume in {}",
            state_dir.display()
        )));
    };
    let entries = journal::read(&path)?;
    let last = journal::summarise(&entries);
    if last.is_done() {
        output::note(&format!(
            "the last run of group {name} ({}) is done: nothing to resume",
            last.run_id
        ));
        return Ok(exit::SUCCESS);
    }
    if last.kind == Some(RunKind::Rollback) {
        return Err(Error::State(format!(
            "group {name}: the last run {} is a rollback, {}: `roll rollback --group {name}` \
             finishes it (nothing was changed)",
            last.run_id, last.status
        )));
    }
    let plan = approved_plan(&entries, &path)?;
    check_unchanged(session, &plan)?;
    if last.status == RunState::Ended(RunStatus::Paused) {
        // Its next waves are new changes: a freeze holds them back, as it does an upgrade.
        session.refuse_if_frozen().await?;
    } else {
        session
            .note_freeze(&format!("resuming run {}, approved before", plan.run_id))
            .await;
    }
    session.connect().await?;
    let mut journal = Journal::reopen(&path)?;
    journal.append(Event::Resumed {
        pid: std::process::id(),
        operator: lock::operator(),
    })?;
    output::note(&format!(
        "resuming run {} of group {name} (journal {})",
        plan.run_id,
        path.display()
    ));
    let outcome = session.execute(plan.clone(), journal, &entries).await?;
    undo::report(session, &plan, &outcome, &path, state_dir, format).await
}

/// The plan journaled at the run's approval.
fn approved_plan(entries: &[Entry], path: &Path) -> Result<UpgradePlan, Error> {
    match journaled::upgrade(entries) {
        Ok(Some(plan)) => Ok(plan),
        Ok(None) | Err(journaled::JournaledError::NoStart) => Err(Error::Usage(format!(
            "{}: no upgrade plan in this journal to resume",
            path.display()
        ))),
        Err(err) => Err(Error::State(format!(
            "{}: {err}: `roll rollback` undoes the run",
            path.display()
        ))),
    }
}

/// Refuses to resume when the playbook file or the inventory says something else now than
/// what was approved. The plan itself is executed as it was journaled.
fn check_unchanged(session: &Session, plan: &UpgradePlan) -> Result<(), Error> {
    let file = Path::new(&plan.playbook_path);
    match playbook::load(file) {
        Ok(now) => {
            let changes = contract::release_changes(&plan.release, &now);
            if !changes.is_empty() {
                return Err(Error::State(format!(
                    "{} changed since run {} was approved; resume executes the approved plan \
                     only: put the file back as it was, or `roll rollback --group {}`. \
                     Changed:\n  {}",
                    file.display(),
                    plan.run_id,
                    session.group.name,
                    changes.join("\n  ")
                )));
            }
        }
        Err(err) => output::note(&format!(
            "{} cannot be read now ({err}): resuming with the release as approved",
            file.display()
        )),
    }
    let changes = contract::vars_changes(plan, &session.group, &plan.release);
    if !changes.is_empty() {
        return Err(Error::State(format!(
            "the inventory's hosts of group {} changed since run {} was approved; put it back \
             as it was, or `roll rollback --group {}`. Changed:\n  {}",
            session.group.name,
            plan.run_id,
            session.group.name,
            changes.join("\n  ")
        )));
    }
    Ok(())
}
