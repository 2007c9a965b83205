//! `roll upgrade`: the half-fleet upgrade. Preflight (the group's lock, no freeze, no
//! unfinished run,
//! every host and the broker reachable, the untouched half healthy, the promotion gate),
//! then the plan, the approval, the journal, and the engine executing exactly the approved
//! plan.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::inventory::{Group, Half, Inventory, Role};
use crate::journal::{self, Entry, Event, Journal, RunKind, RunStatus};
use crate::output::{self, OutputFormat};
use crate::plan::journaled::RunPlan;
use crate::plan::upgrade::{self, Options};
use crate::playbook::{self, Playbook};
use crate::session::{self, Session};
use crate::{clock, exit, render, survey, undo};

/// The settings of `roll upgrade`, checked.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The release; `None`: the one the required group completed.
    pub playbook: Option<PathBuf>,
    pub group: String,
    pub half: Half,
    pub yes: bool,
    pub dry_run: bool,
    pub parallel: usize,
    /// Waves, pause and failure policy as asked.
    pub rollout: crate::plan::rollout::Asked,
    pub skip_promotion_check: bool,
    pub allow_message_loss: bool,
    pub state_dir: PathBuf,
    pub output: OutputFormat,
}

/// The entries of every run of `group` that ended done, oldest first (run ids sort by time).
fn done_runs(state_dir: &Path, group: &str) -> Result<Vec<Vec<Entry>>, Error> {
    let mut done = vec![];
    for path in journal::runs(state_dir, group)? {
        let entries = journal::read(&path)?;
        let ended_done = entries.iter().any(|e| {
            matches!(
                e.event,
                Event::Finished {
                    status: RunStatus::Done,
                    ..
                }
            )
        });
        if ended_done {
            done.push(entries);
        }
    }
    Ok(done)
}

/// The halves of `group` on which this playbook and version completed.
pub fn completed_halves(
    state_dir: &Path,
    group: &str,
    playbook: &str,
    version: &str,
) -> Result<BTreeSet<Half>, Error> {
    let mut halves = BTreeSet::new();
    for entries in done_runs(state_dir, group)? {
        let started = entries.iter().find_map(|e| match &e.event {
            Event::Started {
                kind,
                playbook: p,
                version: v,
                half,
                ..
            } if *kind == RunKind::Upgrade && p == playbook && v == version => *half,
            _ => None,
        });
        halves.extend(started);
    }
    Ok(halves)
}

/// The release a group that requires another is upgraded to when no playbook is given: the
/// one that completed last on both halves of the required group, as it was approved there
/// (the seed's promotion: dev, then stage, then ops).
fn promoted_release(group: &Group, state_dir: &Path) -> Result<Playbook, Error> {
    let Some(required) = &group.requires else {
        return Err(Error::Usage(format!(
            "group {}: no playbook given (-p FILE or ROLL_PLAYBOOK), and the group requires no \
             other group whose completed release it would take",
            group.name
        )));
    };
    // Each release's halves done, and the done run (oldest first) that last did one.
    let mut done: Vec<(Playbook, BTreeSet<Half>, usize)> = vec![];
    for (at, entries) in done_runs(state_dir, required)?.into_iter().enumerate() {
        let Ok(Some(plan)) = crate::plan::journaled::upgrade(&entries) else {
            continue;
        };
        let same = |p: &Playbook| p.name == plan.release.name && p.version == plan.release.version;
        match done.iter_mut().find(|(p, _, _)| same(p)) {
            Some((release, halves, last)) => {
                halves.insert(plan.half);
                *release = plan.release;
                *last = at;
            }
            None => done.push((plan.release, BTreeSet::from([plan.half]), at)),
        }
    }
    let complete = done
        .into_iter()
        .filter(|(_, halves, _)| Half::ALL.iter().all(|h| halves.contains(h)))
        .max_by_key(|(_, _, last)| *last);
    match complete {
        Some((release, _, _)) => {
            output::note(&format!(
                "no playbook given: group {} takes {} {} (playbook {}), completed on both \
                 halves of {required}",
                group.name, release.package, release.version, release.name
            ));
            Ok(release)
        }
        None => Err(Error::Usage(format!(
            "group {}: no playbook given (-p FILE or ROLL_PLAYBOOK), and no release has \
             completed on both halves of {required}, which it requires",
            group.name
        ))),
    }
}

/// Runs `roll upgrade`.
pub async fn run(inventory: &Inventory, settings: Settings) -> Result<u8, Error> {
    let group = super::one_group(inventory, &settings.group, &settings.state_dir)?;
    let playbook = match &settings.playbook {
        Some(path) => playbook::load(path)?,
        None => promoted_release(&group, &settings.state_dir)?,
    };
    if settings.parallel == 0 {
        return Err(Error::Usage("--parallel must be at least 1".into()));
    }
    promotion_gate(&group, &playbook, &settings)?;
    // The artifacts' files are the playbook's, before anything else (nothing changed yet).
    playbook::artifact::check_sources(&playbook)?;
    let mut session = Session::open(group, "upgrade").await?;
    let result = upgrade_in(&mut session, &playbook, &settings).await;
    session.close().await;
    result
}

/// A group with `requires` is only upgraded to what completed on both halves of the
/// required group (unless `--skip-promotion-check`, which is recorded). Needs nothing from the
/// outside world.
fn promotion_gate(group: &Group, playbook: &Playbook, settings: &Settings) -> Result<(), Error> {
    let Some(required) = &group.requires else {
        return Ok(());
    };
    if settings.skip_promotion_check {
        return Ok(());
    }
    let done = completed_halves(
        &settings.state_dir,
        required,
        &playbook.name,
        &playbook.version,
    )?;
    if Half::ALL.iter().all(|h| done.contains(h)) {
        return Ok(());
    }
    Err(Error::Preflight(format!(
        "promotion gate: group {} requires {required} first, and {} {} (playbook {}) \
         has not completed on both halves of {required} (done: {}); \
         --skip-promotion-check overrides this and is recorded",
        group.name,
        playbook.package,
        playbook.version,
        playbook.name,
        if done.is_empty() {
            "none".to_string()
        } else {
            done.iter()
                .map(|h| h.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        }
    )))
}

/// Refuses a new run over an unfinished one: the group's last run not done, or the holding
/// topology of a run still on the broker (its messages would stay there).
async fn refuse_over_unfinished(session: &Session, state_dir: &Path) -> Result<(), Error> {
    let name = &session.group.name;
    if let Some(last) = journal::last_summary(state_dir, name)?
        && !last.is_done()
    {
        let way = if last.kind == Some(RunKind::Rollback) {
            format!("`roll rollback --group {name}` finishes it")
        } else {
            format!(
                "`roll resume --group {name}` finishes it, `roll rollback --group {name}` \
                 undoes it"
            )
        };
        return Err(Error::State(format!(
            "group {name}: the last run {} ({}) is {}{}: {way}; no new upgrade until then \
             (nothing was changed)",
            last.run_id,
            last.kind.map(|k| k.to_string()).unwrap_or_default(),
            last.status,
            last.summary.map(|s| format!(" ({s})")).unwrap_or_default()
        )));
    }
    let prefix = crate::broker::holding::PREFIX;
    let mut held = session
        .management
        .names_with_prefix("queues", prefix)
        .await?;
    held.extend(
        session
            .management
            .names_with_prefix("exchanges", prefix)
            .await?,
    );
    if !held.is_empty() {
        held.sort();
        held.dedup();
        return Err(Error::State(format!(
            "group {name}: the broker holds the holding topology of an unfinished run ({}): \
             `roll resume --group {name}` finishes that run, `roll rollback --group {name}` \
             undoes it; no new upgrade until then (nothing was changed)",
            held.join(" ")
        )));
    }
    Ok(())
}

/// The untouched half's service runs (but its passive hosts), and the version each of its
/// hosts runs: one probe of each host (its status and version commands in one session).
async fn untouched_healthy(
    session: &Session,
    playbook: &Playbook,
    half: Half,
) -> Result<BTreeMap<String, String>, Error> {
    let group = &session.group;
    let untouched: Vec<String> = group
        .half(half.other())
        .filter(|h| h.role != Some(Role::Passive))
        .map(|h| h.name.clone())
        .collect();
    let others: Vec<String> = group.half(half.other()).map(|h| h.name.clone()).collect();
    let probed =
        survey::states_and_versions(playbook, group, session.connections(), &untouched, &others)
            .await;
    let unhealthy: Vec<String> = probed
        .states
        .iter()
        .filter_map(|(h, s)| match s {
            Ok(state) if state == "running" => None,
            Ok(state) => Some(format!("{h} ({state})")),
            Err(err) => Some(format!("{h} ({err})")),
        })
        .collect();
    if unhealthy.is_empty() {
        return Ok(probed.versions);
    }
    Err(Error::Preflight(format!(
        "the untouched half {} is not healthy: {} not running",
        half.other(),
        unhealthy.join(", ")
    )))
}

async fn upgrade_in(
    session: &mut Session,
    playbook: &Playbook,
    settings: &Settings,
) -> Result<u8, Error> {
    session.refuse_if_frozen().await?;
    refuse_over_unfinished(session, &settings.state_dir).await?;
    session.connect().await?;
    tracing::debug!("preflight: every host connected");
    let other_versions = untouched_healthy(session, playbook, settings.half).await?;
    tracing::debug!("preflight: the untouched half probed");
    let group = session.group.clone();
    let report = survey::queues(
        playbook,
        &group,
        Some(settings.half),
        survey::Reading::default(),
    )
    .await?;
    tracing::debug!("preflight: the queues surveyed");
    let run_id = format!(
        "{}-{}-{}",
        clock::compact(clock::now_millis()),
        group.name,
        std::process::id()
    );
    let options = Options {
        parallel: settings.parallel,
        preserve_messages: !settings.allow_message_loss,
        rollout: settings.rollout.clone(),
        measured: crate::engine::measured_stops(&settings.state_dir, &group.name),
        holding: report.holding_type(),
    };
    let plan = upgrade::plan(
        &run_id,
        &group,
        settings.half,
        &report.diff,
        playbook,
        &options,
        &other_versions,
    )?;
    let dry_run = render::UpgradeReport {
        plan: &plan,
        dry_run: true,
        outcome: None,
        rollback: None,
    };
    let text = render::upgrade_plan(&plan);
    let then = render::Then::of(settings.dry_run, settings.yes);
    render::show_plan(&text, &dry_run, settings.output, then)?;
    if settings.dry_run {
        return Ok(exit::SUCCESS);
    }
    if !settings.yes {
        session::approve(&group.name)?;
    }
    let mut journal = Journal::create(&settings.state_dir, &group.name, &run_id)?;
    let run_plan = RunPlan::Upgrade(Box::new(plan.clone()));
    journal.append(session::started(
        &run_plan,
        &plan,
        settings.skip_promotion_check,
    )?)?;
    output::note(&format!("journal: {}", journal.path().display()));
    let journal_path = journal.path().to_path_buf();
    let outcome = session.execute(plan.clone(), journal, &[]).await?;
    undo::report(
        session,
        &plan,
        &outcome,
        &journal_path,
        &settings.state_dir,
        settings.output,
    )
    .await
}
