//! `roll rollback`: undoes the group's last upgrade run (finished, failed or interrupted)
//! from its journal: the old release serves again first, then the upgraded hosts are
//! repaired. A rollback that was itself interrupted is finished by running it again.

use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::inventory::Inventory;
use crate::journal::{self, Entry, Event, Journal, RunStatus};
use crate::output::{self, OutputFormat};
use crate::plan::contract;
use crate::plan::journaled::{self, RunPlan};
use crate::plan::rollback::RollbackPlan;
use crate::plan::upgrade::UpgradePlan;
use crate::playbook::{self, Playbook};
use crate::session::{self, Session};
use crate::{exit, lock, render, undo};

/// The settings of `roll rollback`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The release of the run to undo, to check against the journaled one (optional).
    pub playbook: Option<PathBuf>,
    pub group: String,
    pub yes: bool,
    pub dry_run: bool,
    pub keep_upgraded_stopped: bool,
    pub allow_message_loss: bool,
    pub state_dir: PathBuf,
    pub output: OutputFormat,
}

/// The run to undo, and a rollback already under way for it (to finish).
struct Target {
    upgrade_entries: Vec<Entry>,
    resumed: Option<(PathBuf, Vec<Entry>, RollbackPlan)>,
}

fn finished(entries: &[Entry]) -> Option<RunStatus> {
    entries.iter().rev().find_map(|e| match &e.event {
        Event::Finished { status, .. } => Some(*status),
        _ => None,
    })
}

fn find_target(state_dir: &Path, group: &str) -> Result<Target, Error> {
    let nothing = |why: String| Error::Usage(format!("group {group}: {why}: nothing to roll back"));
    let Some(path) = journal::last_run(state_dir, group)? else {
        return Err(nothing(format!("no journal in {}", state_dir.display())));
    };
    let entries = journal::read(&path)?;
    match journaled::plan(&entries) {
        Ok(RunPlan::Upgrade(_)) => Ok(Target {
            upgrade_entries: entries,
            resumed: None,
        }),
        Ok(RunPlan::Rollback(plan)) => {
            if finished(&entries) == Some(RunStatus::Done) {
                return Err(nothing("the last run is a rollback, and it is done".into()));
            }
            let upgrade_path = journal::group_dir(state_dir, group)
                .join("runs")
                .join(format!("{}.jsonl", plan.rolls_back));
            let upgrade_entries = journal::read(&upgrade_path)?;
            Ok(Target {
                upgrade_entries,
                resumed: Some((path, entries, *plan)),
            })
        }
        Err(journaled::JournaledError::NoStart) => {
            Err(nothing(format!("{}: no run recorded", path.display())))
        }
        Err(err) => Err(nothing(format!("{}: {err}", path.display()))),
    }
}

/// Runs `roll rollback`.
pub async fn run(inventory: &Inventory, settings: Settings) -> Result<u8, Error> {
    let playbook = settings
        .playbook
        .as_deref()
        .map(playbook::load)
        .transpose()?;
    let group = super::one_group(inventory, &settings.group, &settings.state_dir)?;
    let mut session = Session::open(group, "rollback").await?;
    let result = rollback_in(&mut session, playbook.as_ref(), &settings).await;
    session.close().await;
    result
}

/// The upgrade plan of the run to undo, with its release: the one approved with it, which
/// a playbook given must agree with.
fn upgrade_plan(target: &Target, playbook: Option<&Playbook>) -> Result<UpgradePlan, Error> {
    let plan: UpgradePlan = match journaled::upgrade(&target.upgrade_entries) {
        Ok(Some(plan)) => plan,
        Ok(None) => return Err(Error::Usage("the journal holds no upgrade plan".into())),
        Err(err) => return Err(Error::State(format!("the run to roll back: {err}"))),
    };
    let Some(playbook) = playbook else {
        return Ok(plan);
    };
    if plan.playbook != playbook.name {
        return Err(Error::Usage(format!(
            "the last run used playbook {}, not {}: give its playbook with -p",
            plan.playbook, playbook.name
        )));
    }
    let changes = contract::release_changes(&plan.release, playbook);
    if !changes.is_empty() {
        return Err(Error::State(format!(
            "{} is not the release run {} was approved with; the rollback uses the approved \
             one: give that playbook as it was. Changed:\n  {}",
            playbook.path.display(),
            plan.run_id,
            changes.join("\n  ")
        )));
    }
    Ok(plan)
}

/// The rollback's plan: the interrupted one's to finish it, or a new one.
fn plan_for(
    target: &Target,
    group: &crate::inventory::Group,
    upgrade: &UpgradePlan,
    settings: &Settings,
) -> Result<RollbackPlan, Error> {
    if let Some((_, _, plan)) = &target.resumed {
        return Ok(plan.clone());
    }
    let how = undo::Undo {
        keep_upgraded_stopped: settings.keep_upgraded_stopped,
        preserve_messages: !settings.allow_message_loss,
    };
    undo::plan(group, upgrade, &target.upgrade_entries, how)
}

/// The rollback's journal, and its entries so far: the interrupted one's, reopened, or a
/// new one.
fn journal_for(
    target: &Target,
    plan: &RollbackPlan,
    upgrade_plan: &UpgradePlan,
    settings: &Settings,
) -> Result<(Journal, Vec<Entry>), Error> {
    if let Some((path, entries, _)) = &target.resumed {
        let mut journal = Journal::reopen(path)?;
        journal.append(Event::Resumed {
            pid: std::process::id(),
            operator: lock::operator(),
        })?;
        output::note(&format!(
            "finishing the interrupted rollback {}",
            plan.run_id
        ));
        return Ok((journal, entries.clone()));
    }
    let journal = undo::journal(&settings.state_dir, plan, upgrade_plan)?;
    Ok((journal, vec![]))
}

async fn rollback_in(
    session: &mut Session,
    playbook: Option<&Playbook>,
    settings: &Settings,
) -> Result<u8, Error> {
    let group = session.group.clone();
    session.note_freeze("the rollback").await;
    let target = find_target(&settings.state_dir, &group.name)?;
    let upgrade_plan = upgrade_plan(&target, playbook)?;
    let plan = plan_for(&target, &group, &upgrade_plan, settings)?;
    let dry_run = render::RollbackReport {
        plan: &plan,
        dry_run: true,
        outcome: None,
    };
    let text = render::rollback_plan(&plan);
    let then = render::Then::of(settings.dry_run, settings.yes);
    render::show_plan(&text, &dry_run, settings.output, then)?;
    if settings.dry_run {
        return Ok(exit::SUCCESS);
    }
    session.connect().await?;
    if !settings.yes {
        session::approve(&group.name)?;
    }
    let (journal, earlier) = journal_for(&target, &plan, &upgrade_plan, settings)?;
    output::note(&format!("journal: {}", journal.path().display()));
    let mut all = target.upgrade_entries.clone();
    all.extend(earlier);
    let outcome = undo::execute(session, plan.clone(), journal, &all, &settings.state_dir).await?;
    Ok(render::print_rollback(&plan, &outcome, settings.output)?)
}
