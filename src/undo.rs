//! Undoing an upgrade run, shared by `roll rollback` and `roll upgrade --on-failure rollback`:
//! a new rollback's plan from the run's journal, its journal, its execution, and the pair
//! swaps it records in the state directory.

use std::path::Path;

use crate::engine::Outcome;
use crate::engine::RollbackOutcome;
use crate::error::Error;
use crate::inventory::{Group, Role};
use crate::journal::{self, Entry, Journal};
use crate::output::{self, OutputFormat};
use crate::plan::journaled::RunPlan;
use crate::plan::rollback::{self, RollbackPlan, Swap};
use crate::plan::upgrade::UpgradePlan;
use crate::playbook::rollout::OnFailure;
use crate::session::{self, Session};
use crate::{clock, render};

/// How a rollback goes.
#[derive(Debug, Clone, Copy)]
pub struct Undo {
    /// Leave the upgraded hosts stopped once they are repaired.
    pub keep_upgraded_stopped: bool,
    /// Keep the messages of the queues it restores (false: `--allow-message-loss`).
    pub preserve_messages: bool,
}

/// A new rollback of the upgrade run `upgrade`, whose journal is `entries`.
pub fn plan(
    group: &Group,
    upgrade: &UpgradePlan,
    entries: &[Entry],
    undo: Undo,
) -> Result<RollbackPlan, Error> {
    let run_id = format!(
        "{}-{}-rollback-{}",
        clock::compact(clock::now_millis()),
        group.name,
        std::process::id()
    );
    let options = rollback::Options {
        reset_available: upgrade.release.commands.reset_queue_state.is_some(),
        keep_upgraded_stopped: undo.keep_upgraded_stopped,
        preserve_messages: undo.preserve_messages,
    };
    Ok(rollback::plan(&run_id, group, upgrade, entries, options)?)
}

/// A new rollback's journal, its plan written first.
pub fn journal(
    state_dir: &Path,
    plan: &RollbackPlan,
    upgrade: &UpgradePlan,
) -> Result<Journal, Error> {
    let mut journal = Journal::create(state_dir, &plan.group, &plan.run_id)?;
    let run_plan = RunPlan::Rollback(Box::new(plan.clone()));
    journal.append(session::started(&run_plan, upgrade, false)?)?;
    Ok(journal)
}

/// Executes a rollback plan (`earlier`: the entries of the run it undoes, then the
/// rollback's own when it is finished after an interruption); a pair's swap is recorded in
/// the state directory's role overrides.
pub async fn execute(
    session: &mut Session,
    plan: RollbackPlan,
    journal: Journal,
    earlier: &[Entry],
    state_dir: &Path,
) -> Result<RollbackOutcome, Error> {
    let group = plan.group.clone();
    let on_swap = |swap: &Swap| swap_roles(state_dir, &group, swap);
    session
        .execute_rollback(plan, journal, earlier, on_swap)
        .await
}

/// Records a pair's swap in the state directory's role overrides.
fn swap_roles(state_dir: &Path, group: &str, swap: &Swap) -> Result<(), String> {
    let mut roles = journal::role_overrides(state_dir, group).map_err(|e| e.to_string())?;
    roles.insert(swap.to.clone(), Role::Active);
    roles.insert(swap.from.clone(), Role::Passive);
    journal::set_role_overrides(state_dir, group, &roles).map_err(|e| e.to_string())
}

/// Reports an upgrade's outcome (a new run's or a resumed one's) and gives the exit code;
/// with `--on-failure rollback`, a failure not tolerated is rolled back at once first, as
/// `roll rollback` would (the untouched half serves first), approved with the upgrade, and
/// both are reported.
pub async fn report(
    session: &mut Session,
    plan: &UpgradePlan,
    outcome: &Outcome,
    journal_path: &Path,
    state_dir: &Path,
    format: OutputFormat,
) -> Result<u8, Error> {
    if plan.policy.on_failure != OnFailure::Rollback || outcome.failure.is_none() {
        return Ok(render::print_upgrade(plan, outcome, format)?);
    }
    let entries = journal::read(journal_path)?;
    let how = Undo {
        keep_upgraded_stopped: false,
        preserve_messages: plan.preserve_messages,
    };
    let rollback = self::plan(&session.group, plan, &entries, how)?;
    output::note(&format!(
        "the upgrade failed ({}): rolling it back at once (--on-failure rollback)\n{}",
        outcome
            .failure
            .as_ref()
            .map(|f| f.to_string())
            .unwrap_or_default(),
        render::rollback_plan(&rollback)
    ));
    let journal = self::journal(state_dir, &rollback, plan)?;
    output::note(&format!("journal: {}", journal.path().display()));
    let rolled_back = execute(session, rollback.clone(), journal, &entries, state_dir).await?;
    Ok(render::print_upgrade_rolled_back(
        plan,
        outcome,
        &rollback,
        &rolled_back,
        format,
    )?)
}
