//! `roll rollback`: undoes the group's last upgrade run (finished, failed or interrupted)
//! from its journal: the old release serves again first, then the upgraded hosts are
//! repaired. A rollback that was itself interrupted is finished by running it again.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use super::upgrade::{close_all, connect_all, password};
use crate::broker::management::Management;
use crate::engine::{Engine, RollbackOutcome};
use crate::error::Error;
use crate::inventory::{Inventory, Role};
use crate::journal::{self, Entry, Event, Journal, RunStatus};
use crate::output::{self, OutputFormat};
use crate::plan::rollback::{self, RollbackPlan};
use crate::plan::upgrade::UpgradePlan;
use crate::{clock, exit, lock, playbook};

/// The settings of `roll rollback`.
#[derive(Debug, Clone)]
pub struct Settings {
    pub playbook: PathBuf,
    pub group: String,
    pub yes: bool,
    pub dry_run: bool,
    pub keep_upgraded_stopped: bool,
    pub allow_message_loss: bool,
    pub state_dir: PathBuf,
    pub output: OutputFormat,
}

#[derive(Debug, Serialize)]
struct Report<'a> {
    plan: &'a RollbackPlan,
    dry_run: bool,
    outcome: Option<&'a RollbackOutcome>,
}

/// The run to undo, and a rollback already under way for it (to finish).
struct Target {
    upgrade_entries: Vec<Entry>,
    resumed: Option<(PathBuf, Vec<Entry>, RollbackPlan)>,
}

fn started_kind(entries: &[Entry]) -> Option<(&str, &serde_json::Value)> {
    entries.iter().find_map(|e| match &e.event {
        Event::Started { kind, plan, .. } => Some((kind.as_str(), plan)),
        _ => None,
    })
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
    match started_kind(&entries) {
        Some(("upgrade", _)) => Ok(Target {
            upgrade_entries: entries,
            resumed: None,
        }),
        Some(("rollback", plan)) => {
            if finished(&entries) == Some(RunStatus::Done) {
                return Err(nothing("the last run is a rollback, and it is done".into()));
            }
            let plan: RollbackPlan = serde_json::from_value(plan.clone()).map_err(|e| {
                nothing(format!("{}: unreadable rollback plan: {e}", path.display()))
            })?;
            let upgrade_path = journal::group_dir(state_dir, group)
                .join("runs")
                .join(format!("{}.jsonl", plan.rolls_back));
            let upgrade_entries = journal::read(&upgrade_path)?;
            Ok(Target {
                upgrade_entries,
                resumed: Some((path, entries, plan)),
            })
        }
        _ => Err(nothing(format!("{}: no run recorded", path.display()))),
    }
}

/// Runs `roll rollback`.
pub async fn run(inventory: &Inventory, settings: Settings) -> Result<u8, Error> {
    let playbook = playbook::load(&settings.playbook)?;
    let group = super::select_groups(inventory, Some(&settings.group))?
        .first()
        .copied()
        .cloned()
        .ok_or_else(|| Error::Usage(format!("no group {}", settings.group)))?;
    let group = journal::with_role_overrides(group, &settings.state_dir)?;
    let target = find_target(&settings.state_dir, &group.name)?;
    let upgrade_plan: UpgradePlan = match started_kind(&target.upgrade_entries) {
        Some((_, plan)) => serde_json::from_value(plan.clone())
            .map_err(|e| Error::Usage(format!("unreadable upgrade plan in the journal: {e}")))?,
        None => return Err(Error::Usage("the journal holds no upgrade plan".into())),
    };
    if upgrade_plan.playbook != playbook.name {
        return Err(Error::Usage(format!(
            "the last run used playbook {}, not {}: give its playbook with -p",
            upgrade_plan.playbook, playbook.name
        )));
    }
    let run_id = format!(
        "{}-{}-rollback-{}",
        clock::compact(clock::now_millis()),
        group.name,
        std::process::id()
    );
    let plan = match &target.resumed {
        Some((_, _, plan)) => plan.clone(),
        None => rollback::plan(
            &run_id,
            &group,
            &target.upgrade_entries,
            playbook.commands.reset_queue_state.is_some(),
            settings.keep_upgraded_stopped,
        )
        .map(|mut plan| {
            plan.preserve_messages = !settings.allow_message_loss;
            plan
        })
        .map_err(|e| Error::Usage(format!("group {}: {}", group.name, e.0)))?,
    };
    if settings.output == OutputFormat::Table {
        output::print_text(&plan.to_string())?;
    }
    if settings.dry_run {
        if settings.output == OutputFormat::Json {
            output::print_json(&Report {
                plan: &plan,
                dry_run: true,
                outcome: None,
            })?;
        } else {
            output::print_text("Dry run: nothing was changed.")?;
        }
        return Ok(exit::SUCCESS);
    }
    let password = password(&group)?;
    let management = Management::new(&group.broker, password.clone())?;
    management.overview().await?;
    let lock = lock::acquire(&group.name, &group.broker, &password, "rollback").await?;
    let result = async {
        let connections = connect_all(&group).await?;
        if !settings.yes
            && let Err(err) = super::upgrade::approve(&group.name)
        {
            close_all(connections).await;
            return Err(err);
        }
        let (journal, earlier) = match &target.resumed {
            Some((path, entries, _)) => {
                let mut journal = Journal::reopen(path)?;
                journal.append(Event::Resumed {
                    pid: std::process::id(),
                    operator: lock::operator(),
                })?;
                crate::output::note(&format!(
                    "finishing the interrupted rollback {}",
                    plan.run_id
                ));
                (journal, entries.clone())
            }
            None => {
                let mut journal = Journal::create(&settings.state_dir, &group.name, &run_id)?;
                journal.append(Event::Started {
                    run_id: run_id.clone(),
                    kind: "rollback".into(),
                    group: group.name.clone(),
                    half: Some(upgrade_plan.half.to_string()),
                    playbook: playbook.name.clone(),
                    playbook_path: std::path::absolute(&playbook.path)
                        .unwrap_or_else(|_| playbook.path.clone())
                        .display()
                        .to_string(),
                    package: playbook.package.clone(),
                    version: String::new(),
                    operator: lock::operator(),
                    controller: lock::controller(),
                    pid: std::process::id(),
                    skip_promotion_check: false,
                    plan: serde_json::to_value(&plan)
                        .map_err(|e| Error::Output(std::io::Error::other(e)))?,
                })?;
                (journal, vec![])
            }
        };
        crate::output::note(&format!("journal: {}", journal.path().display()));
        let mut all = target.upgrade_entries.clone();
        all.extend(earlier);
        let mut upgrade_plan = upgrade_plan.clone();
        upgrade_plan.preserve_messages = plan.preserve_messages;
        let engine = Arc::new(Engine::new(
            group.clone(),
            playbook.clone(),
            upgrade_plan,
            management,
            password.clone(),
            journal,
            connections,
            &all,
        ));
        let state_dir = settings.state_dir.clone();
        let group_name = group.name.clone();
        let outcome = engine
            .clone()
            .run_rollback(plan.clone(), move |swap| {
                let mut roles =
                    journal::role_overrides(&state_dir, &group_name).map_err(|e| e.to_string())?;
                roles.insert(swap.to.clone(), Role::Active);
                roles.insert(swap.from.clone(), Role::Passive);
                journal::set_role_overrides(&state_dir, &group_name, &roles)
                    .map_err(|e| e.to_string())
            })
            .await;
        if let Ok(engine) = Arc::try_unwrap(engine) {
            close_all(engine.into_connections()).await;
        }
        Ok(outcome)
    }
    .await;
    lock.release().await;
    let outcome = result?;
    match settings.output {
        OutputFormat::Json => output::print_json(&Report {
            plan: &plan,
            dry_run: false,
            outcome: Some(&outcome),
        })?,
        OutputFormat::Table => {
            let mut lines = vec![format!(
                "Rollback of run {}: {} in {:.1}s",
                plan.rolls_back,
                if outcome.status == RunStatus::Done {
                    "done"
                } else {
                    "FAILED"
                },
                outcome.elapsed_seconds
            )];
            if let Some(seconds) = outcome.failover_seconds {
                lines.push(format!("  failover time: {seconds:.1}s"));
            }
            if !outcome.queues.is_empty() {
                lines.push(format!("  queues restored: {}", outcome.queues.len()));
                lines.extend(super::upgrade::account_lines(&outcome.queues));
            }
            for s in &plan.swaps {
                lines.push(format!("  pair {}: {} is now active", s.pair, s.to));
            }
            if let Some(f) = &outcome.failure {
                lines.push(format!(
                    "  failed: host {} at step {}: {}",
                    f.host, f.step, f.detail
                ));
            }
            lines.push(format!("  journal: {}", outcome.journal));
            output::print_text(&lines.join("\n"))?;
        }
    }
    Ok(if outcome.status == RunStatus::Done {
        exit::SUCCESS
    } else {
        exit::FAILURE
    })
}
