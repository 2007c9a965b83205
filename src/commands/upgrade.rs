//! `roll upgrade`: the half-fleet upgrade. Preflight (every host and the broker reachable,
//! the group's lock, the untouched half healthy, the promotion gate), then the plan, the
//! approval, the journal, and the engine executing exactly the approved plan.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::queue_diff;
use crate::broker::management::Management;
use crate::engine::{Engine, Outcome};
use crate::error::Error;
use crate::inventory::{Group, Half, Inventory, Role, Secret};
use crate::journal::{self, Event, Journal, RunStatus};
use crate::lock;
use crate::output::{self, OutputFormat};
use crate::plan::upgrade::{self, UpgradePlan};
use crate::playbook::{self, Playbook};
use crate::remote::{self, Connection};
use crate::{clock, exit};

/// The settings of `roll upgrade`, checked.
#[derive(Debug, Clone)]
pub struct Settings {
    pub playbook: PathBuf,
    pub group: String,
    pub half: Half,
    pub yes: bool,
    pub dry_run: bool,
    pub parallel: usize,
    pub skip_promotion_check: bool,
    pub allow_message_loss: bool,
    pub state_dir: PathBuf,
    pub output: OutputFormat,
}

/// What `--output json` prints.
#[derive(Debug, Serialize)]
struct Report<'a> {
    plan: &'a UpgradePlan,
    dry_run: bool,
    outcome: Option<&'a Outcome>,
}

/// Connects to every host of the group, [`remote::CONNECT_CONCURRENCY`] at a time; any
/// unreachable host fails the preflight, naming every one of them.
pub async fn connect_all(group: &Group) -> Result<BTreeMap<String, Connection>, Error> {
    let limit = Arc::new(Semaphore::new(remote::CONNECT_CONCURRENCY));
    let mut tasks = JoinSet::new();
    for host in group.hosts.clone() {
        let limit = Arc::clone(&limit);
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            (host.name.clone(), remote::connect(&host).await)
        });
    }
    let mut connections = BTreeMap::new();
    let mut failures = vec![];
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((name, Ok(c))) => {
                connections.insert(name, c);
            }
            Ok((_, Err(err))) => failures.push(err.to_string()),
            Err(err) => failures.push(err.to_string()),
        }
    }
    if failures.is_empty() {
        Ok(connections)
    } else {
        for (_, c) in connections {
            c.close().await;
        }
        failures.sort();
        Err(Error::Preflight(format!(
            "unreachable hosts: {}",
            failures.join("; ")
        )))
    }
}

/// Closes every connection.
pub async fn close_all(connections: BTreeMap<String, Connection>) {
    for (_, c) in connections {
        c.close().await;
    }
}

/// The halves of `group` on which this playbook and version completed.
pub fn completed_halves(
    state_dir: &Path,
    group: &str,
    playbook: &str,
    version: &str,
) -> Result<BTreeSet<String>, Error> {
    let mut halves = BTreeSet::new();
    for path in journal::runs(state_dir, group)? {
        let entries = journal::read(&path)?;
        let started = entries.iter().find_map(|e| match &e.event {
            Event::Started {
                kind,
                playbook: p,
                version: v,
                half,
                ..
            } if kind == "upgrade" && p == playbook && v == version => half.clone(),
            _ => None,
        });
        let done = entries.iter().any(|e| {
            matches!(
                e.event,
                Event::Finished {
                    status: RunStatus::Done,
                    ..
                }
            )
        });
        if let (Some(half), true) = (started, done) {
            halves.insert(half);
        }
    }
    Ok(halves)
}

/// The broker password of a group, read now.
pub fn password(group: &Group) -> Result<Secret, Error> {
    Ok(crate::broker::password(&group.broker)?)
}

/// The service state of each host, by its playbook status command (first word).
pub async fn states(
    playbook: &Playbook,
    group: &Group,
    connections: &BTreeMap<String, Connection>,
    hosts: &[String],
) -> BTreeMap<String, Result<String, String>> {
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
async fn versions(
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

/// The first line a playbook command prints on each host.
async fn first_lines(
    playbook: &Playbook,
    group: &Group,
    connections: &BTreeMap<String, Connection>,
    hosts: &[String],
    template: &str,
) -> BTreeMap<String, Result<String, String>> {
    let mut out = BTreeMap::new();
    for name in hosts {
        let result = async {
            let host = group
                .hosts
                .iter()
                .find(|h| &h.name == name)
                .ok_or("not in the inventory")?;
            let connection = connections.get(name).ok_or("not connected")?;
            let command = playbook
                .command(template, &playbook.vars(host, &group.broker))
                .map_err(|e| e.to_string())?;
            let output = connection
                .run("probe", &command, playbook.commands.timeout)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<String, String>(
                output
                    .stdout
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_string(),
            )
        }
        .await;
        out.insert(name.clone(), result.map_err(|e| e.to_string()));
    }
    out
}

/// Asks the operator to type the group's name.
pub fn approve(group: &str) -> Result<(), Error> {
    eprint!("Type the group name ({group}) to approve this plan: ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(Error::Output)?;
    if answer.trim() == group {
        Ok(())
    } else {
        Err(Error::NotApproved)
    }
}

/// Runs `roll upgrade`.
pub async fn run(inventory: &Inventory, settings: Settings) -> Result<u8, Error> {
    let playbook = playbook::load(&settings.playbook)?;
    let group = super::select_groups(inventory, Some(&settings.group))?
        .first()
        .copied()
        .cloned()
        .ok_or_else(|| Error::Usage(format!("no group {}", settings.group)))?;
    let group = journal::with_role_overrides(group, &settings.state_dir)?;
    if settings.parallel == 0 {
        return Err(Error::Usage("--parallel must be at least 1".into()));
    }
    // The promotion gate first: it needs nothing from the outside world.
    if let Some(required) = &group.requires
        && !settings.skip_promotion_check
    {
        let done = completed_halves(
            &settings.state_dir,
            required,
            &playbook.name,
            &playbook.version,
        )?;
        if !(done.contains("a") && done.contains("b")) {
            return Err(Error::Preflight(format!(
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
                    done.into_iter().collect::<Vec<_>>().join(", ")
                }
            )));
        }
    }
    let password = password(&group)?;
    let management = Management::new(&group.broker, password.clone())?;
    management.overview().await?;
    let lock = lock::acquire(&group.name, &group.broker, &password, "upgrade").await?;
    let connections = match connect_all(&group).await {
        Ok(c) => c,
        Err(err) => {
            lock.release().await;
            return Err(err);
        }
    };
    let result = upgrade_locked(
        &group,
        &playbook,
        &settings,
        management,
        &password,
        connections,
    )
    .await;
    lock.release().await;
    result
}

async fn upgrade_locked(
    group: &Group,
    playbook: &Playbook,
    settings: &Settings,
    management: Management,
    password: &Secret,
    connections: BTreeMap<String, Connection>,
) -> Result<u8, Error> {
    let untouched: Vec<String> = group
        .half(settings.half.other())
        .filter(|h| h.role != Some(Role::Passive))
        .map(|h| h.name.clone())
        .collect();
    let health = states(playbook, group, &connections, &untouched).await;
    let unhealthy: Vec<String> = health
        .iter()
        .filter(|(_, s)| s.as_deref() != Ok("running"))
        .map(|(h, s)| format!("{h} ({})", s.clone().unwrap_or_else(|e| e)))
        .collect();
    if !unhealthy.is_empty() {
        close_all(connections).await;
        return Err(Error::Preflight(format!(
            "the untouched half {} is not healthy: {} not running",
            settings.half.other(),
            unhealthy.join(", ")
        )));
    }
    let others: Vec<String> = group
        .half(settings.half.other())
        .map(|h| h.name.clone())
        .collect();
    let other_versions = versions(playbook, group, &connections, &others).await;
    let report = match queue_diff::report(playbook, group, Some(settings.half), false).await {
        Ok(r) => r,
        Err(err) => {
            close_all(connections).await;
            return Err(err);
        }
    };
    let run_id = format!(
        "{}-{}-{}",
        clock::compact(clock::now_millis()),
        group.name,
        std::process::id()
    );
    let mut plan = upgrade::plan(
        &run_id,
        group,
        settings.half,
        &report.diff,
        playbook,
        settings.parallel,
        &other_versions,
    );
    plan.preserve_messages = !settings.allow_message_loss;
    if settings.output == OutputFormat::Table {
        output::print_text(&plan.to_string())?;
    }
    if settings.dry_run {
        close_all(connections).await;
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
    if !settings.yes
        && let Err(err) = approve(&group.name)
    {
        close_all(connections).await;
        return Err(err);
    }
    let mut journal = Journal::create(&settings.state_dir, &group.name, &run_id)?;
    journal.append(Event::Started {
        run_id: run_id.clone(),
        kind: "upgrade".into(),
        group: group.name.clone(),
        half: Some(settings.half.to_string()),
        playbook: playbook.name.clone(),
        playbook_path: absolute(&playbook.path),
        package: playbook.package.clone(),
        version: playbook.version.clone(),
        operator: lock::operator(),
        controller: lock::controller(),
        pid: std::process::id(),
        skip_promotion_check: settings.skip_promotion_check,
        plan: serde_json::to_value(&plan).map_err(|e| Error::Output(std::io::Error::other(e)))?,
    })?;
    crate::output::note(&format!("journal: {}", journal.path().display()));
    execute(
        group,
        playbook,
        plan,
        management,
        password.clone(),
        journal,
        connections,
        &[],
        settings.output,
    )
    .await
}

/// Runs the engine and reports; shared with `resume`.
#[allow(clippy::too_many_arguments)]
pub async fn execute(
    group: &Group,
    playbook: &Playbook,
    plan: UpgradePlan,
    management: Management,
    password: Secret,
    journal: Journal,
    connections: BTreeMap<String, Connection>,
    earlier: &[journal::Entry],
    format: OutputFormat,
) -> Result<u8, Error> {
    let engine = Arc::new(Engine::new(
        group.clone(),
        playbook.clone(),
        plan.clone(),
        management,
        password,
        journal,
        connections,
        earlier,
    ));
    let outcome = engine.clone().run().await;
    if let Ok(engine) = Arc::try_unwrap(engine) {
        close_all(engine.into_connections()).await;
    }
    match format {
        OutputFormat::Json => output::print_json(&Report {
            plan: &plan,
            dry_run: false,
            outcome: Some(&outcome),
        })?,
        OutputFormat::Table => output::print_text(&summary(&plan, &outcome))?,
    }
    Ok(match outcome.status {
        RunStatus::Done => exit::SUCCESS,
        RunStatus::Partial => exit::PARTIAL,
        RunStatus::Failed => exit::FAILURE,
    })
}

/// The run summary for people.
fn summary(plan: &UpgradePlan, outcome: &Outcome) -> String {
    let mut lines = vec![format!(
        "Upgrade of {} half {} to {} {}: {} in {:.1}s",
        plan.group,
        plan.half,
        plan.package,
        plan.version,
        match outcome.status {
            RunStatus::Done => "done",
            RunStatus::Partial => "PARTIAL",
            RunStatus::Failed => "FAILED",
        },
        outcome.elapsed_seconds
    )];
    lines.push(format!(
        "  upgraded: {}",
        if outcome.completed.is_empty() {
            "none".to_string()
        } else {
            outcome.completed.join(" ")
        }
    ));
    lines.push(format!("  queues recreated: {}", plan.queue_count()));
    lines.extend(account_lines(&outcome.queues));
    if let Some(seconds) = outcome.critical_window_seconds {
        // Two phases: nothing consumed the half's queues for that long. One phase: each host
        // stopped on its own, the others consuming; the longest of those stops is reported.
        let what = if plan.two_phase {
            "critical window"
        } else {
            "longest stop of a host"
        };
        lines.push(match outcome.critical_window_floor_seconds {
            Some(floor) => format!(
                "  {what}: {seconds:.1}s (the services' own stop and start: \
                 {floor:.1}s; roll: {:.1}s)",
                seconds - floor
            ),
            None => format!("  {what}: {seconds:.1}s"),
        });
    }
    lines.push(if plan.failover.is_empty() {
        format!(
            "  failover: none (half {} runs {})",
            plan.half.other(),
            plan.version
        )
    } else {
        format!(
            "  failover on the old release: {} (half {})",
            plan.failover.join(" "),
            plan.half.other()
        )
    });
    if let Some(f) = &outcome.failure {
        lines.push(format!(
            "  failed: host {} at step {}: {}",
            f.host, f.step, f.detail
        ));
        if let Some(out) = &f.output {
            let tail: Vec<&str> = out.lines().rev().take(10).collect();
            for line in tail.into_iter().rev() {
                lines.push(format!("    | {line}"));
            }
        }
    }
    lines.push(format!("  journal: {}", outcome.journal));
    lines.join("\n")
}

/// One line per recreated queue: what happened to its messages.
pub fn account_lines(accounts: &[crate::journal::QueueAccount]) -> Vec<String> {
    let mut lines = vec![];
    for a in accounts {
        let without = a
            .without_consumer_seconds
            .map(|s| format!(", {s:.1}s without a consumer"))
            .unwrap_or_default();
        lines.push(if a.preserved {
            format!(
                "    {}: {} messages before, {} moved out, {} moved back (with those published \
                 meanwhile), {} duplicated, {} lost{without}",
                a.queue, a.before, a.moved_out, a.moved_in, a.duplicated, a.lost
            )
        } else {
            format!(
                "    {}: {} LOST (deleted with the queue; not counted: messages published while \
                 it was unbound){without}",
                a.queue, a.lost
            )
        });
    }
    lines
}

/// A path made absolute (the journal must find it again from anywhere).
fn absolute(path: &Path) -> String {
    std::path::absolute(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}
