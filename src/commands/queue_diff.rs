//! `roll queue-diff`: what a release will do to the broker's queues, before anything changes.
//! Read-only: it lists (management API), asks each host which queues it uses (SSH, the
//! playbook's discovery command) and, with `--probe`, asks the broker itself (AMQP declares
//! of existing queues with the settings they already have or are refused).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use tabled::Tabled;
use tokio::task::JoinSet;

use super::select_groups;
use crate::broker::amqp::{self, ProbeResult};
use crate::broker::equivalence::QueueSettings;
use crate::broker::management::{BindingInfo, Management};
use crate::error::Error;
use crate::inventory::{Group, Half, Inventory};
use crate::output::{self, OutputFormat};
use crate::plan::ownership::{Claims, RenderedPattern};
use crate::plan::queue_diff::{self, LiveQueue, QueueDiff, QueueRow, Verdict};
use crate::playbook::{PatternOwner, Playbook};
use crate::remote;
use crate::template::{self, Escape};
use crate::{exit, playbook};

/// Time allowed for a host's discovery command.
const DISCOVER_TIMEOUT: Duration = Duration::from_secs(30);

/// The whole report: the diff, each queue's bindings, the connected clients, the probe.
#[derive(Debug, Serialize)]
pub struct Report {
    pub group: String,
    pub playbook: String,
    #[serde(flatten)]
    pub diff: QueueDiff,
    /// Bindings of the owned queues, by queue.
    pub bindings: BTreeMap<String, Vec<BindingInfo>>,
    /// Connected clients by product and version, with their count.
    pub clients: Vec<ClientCount>,
    /// With `--probe`: what the broker answered for each existing owned queue.
    pub probe: Option<BTreeMap<String, ProbeResult>>,
    /// With `--probe`: queues where the broker disagreed with the report.
    pub probe_disagreements: Vec<String>,
}

/// How many connections one client version has.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct ClientCount {
    pub product: String,
    pub version: String,
    pub connections: usize,
}

/// Asks every host of the group which queues it uses; any unreachable host is an error,
/// because ownership cannot be decided without it.
async fn discover(playbook: &Playbook, group: &Group, claims: &mut Claims) -> Result<(), Error> {
    let Some(discover) = &playbook.queues.discover else {
        return Ok(());
    };
    let mut tasks = JoinSet::new();
    for host in &group.hosts {
        let vars = playbook.vars(host, &group.broker);
        let command = playbook
            .command(discover, &vars)
            .map_err(|e| Error::Usage(format!("{}: {e}", playbook.path.display())))?;
        let host = host.clone();
        tasks.spawn(async move {
            let connection = remote::connect(&host).await?;
            let output = connection
                .run("discover queues", &command, DISCOVER_TIMEOUT)
                .await;
            connection.close().await;
            let output = output?;
            if !output.success() {
                return Err(Error::Remote(remote::RemoteError::Command {
                    host: host.name.clone(),
                    label: "discover queues".into(),
                    detail: format!(
                        "exit {:?}: {}",
                        output.code,
                        output.stderr.lines().last().unwrap_or("").trim()
                    ),
                }));
            }
            Ok::<_, Error>((host.name.clone(), host.half, output.stdout))
        });
    }
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok((name, half, names))) => claims.discovered_by(&name, half, &names),
            Ok(Err(err)) => {
                first_error.get_or_insert(err);
            }
            Err(err) => {
                first_error.get_or_insert(Error::Usage(format!("discovery task failed: {err}")));
            }
        }
    }
    match first_error {
        Some(err) => Err(err),
        None => Ok(()),
    }
}

/// The playbook's ownership patterns, rendered for each host (or once for group owners).
fn patterns(playbook: &Playbook, group: &Group) -> Result<Vec<RenderedPattern>, Error> {
    let render = |pattern: &str, vars: &template::Vars| {
        template::render(pattern, vars, Escape::None)
            .map_err(|e| Error::Usage(format!("{}: {e}", playbook.path.display())))
    };
    let mut out = Vec::new();
    for rule in &playbook.queues.owned {
        match rule.owner {
            PatternOwner::Host => {
                for host in &group.hosts {
                    out.push(RenderedPattern {
                        glob: render(&rule.pattern, &playbook.vars(host, &group.broker))?,
                        owner: rule.owner,
                        host: Some((host.name.clone(), host.half)),
                    });
                }
            }
            PatternOwner::Half(_) | PatternOwner::Shared => {
                let Some(first) = group.hosts.first() else {
                    continue;
                };
                out.push(RenderedPattern {
                    glob: render(&rule.pattern, &playbook.vars(first, &group.broker))?,
                    owner: rule.owner,
                    host: None,
                });
            }
        }
    }
    Ok(out)
}

/// Computes the report for a group (and optionally one half). Changes nothing.
pub async fn report(
    playbook: &Playbook,
    group: &Group,
    half: Option<Half>,
    probe: bool,
) -> Result<Report, Error> {
    let config = &group.broker;
    let password = crate::broker::password(config)?;
    let management = Management::new(config, password.clone())?;
    let mut claims = Claims {
        patterns: patterns(playbook, group)?,
        ..Claims::default()
    };
    discover(playbook, group, &mut claims).await?;
    // roll's own lock and holding queues are not part of the fleet's queues.
    let lock = crate::lock::queue_name(&group.name);
    let queues: Vec<LiveQueue> = management
        .list_queues()
        .await?
        .into_iter()
        .filter(|q| q.name != lock && !crate::broker::holding::is_holding(&q.name))
        .map(|q| LiveQueue {
            transient: q.transient(),
            settings: QueueSettings::new(q.durable, q.auto_delete, q.arguments),
            name: q.name,
            exclusive: q.exclusive,
            messages: q.messages.unwrap_or(0),
            consumers: q.consumers.unwrap_or(0),
        })
        .collect();
    let diff = queue_diff::diff(
        &config.vhost,
        half,
        queues,
        &claims,
        &playbook.queues.target,
        playbook.queues.expected_stop_window,
    );
    let owned: std::collections::BTreeSet<&str> = diff
        .rows
        .iter()
        .filter(|r| r.verdict != Verdict::Foreign)
        .map(|r| r.name.as_str())
        .collect();
    let mut bindings: BTreeMap<String, Vec<BindingInfo>> = BTreeMap::new();
    for binding in management.queue_bindings().await? {
        if owned.contains(binding.destination.as_str()) {
            bindings
                .entry(binding.destination.clone())
                .or_default()
                .push(binding);
        }
    }
    let mut counts: BTreeMap<(String, String), usize> = BTreeMap::new();
    for connection in management.connections().await? {
        *counts.entry(connection.product()).or_default() += 1;
    }
    let clients = counts
        .into_iter()
        .map(|((product, version), connections)| ClientCount {
            product,
            version,
            connections,
        })
        .collect();
    let (probe, probe_disagreements) = if probe {
        let (results, disagreements) = run_probe(group, &password, &diff).await?;
        (Some(results), disagreements)
    } else {
        (None, vec![])
    };
    Ok(Report {
        group: group.name.clone(),
        playbook: playbook.name.clone(),
        diff,
        bindings,
        clients,
        probe,
        probe_disagreements,
    })
}

/// Declares every existing owned queue (in or out of this run's scope) with the target
/// settings and compares the broker's answer with the report.
async fn run_probe(
    group: &Group,
    password: &crate::inventory::Secret,
    diff: &QueueDiff,
) -> Result<(BTreeMap<String, ProbeResult>, Vec<String>), Error> {
    let config = &group.broker;
    let connection = amqp::connect(config, password, "queue-diff probe").await?;
    let mut results = BTreeMap::new();
    let mut disagreements = Vec::new();
    for row in &diff.rows {
        // Foreign queues have no target, missing ones no current settings: neither is probed.
        let (Some(target), Some(_)) = (&row.target, &row.current) else {
            continue;
        };
        let result = amqp::probe(&connection, &config.display(), &row.name, target).await;
        let result = match result {
            Ok(r) => r,
            Err(err) => {
                amqp::close(&connection).await;
                return Err(err.into());
            }
        };
        let expected_refusal = row.differences.iter().any(|d| d.checked);
        let agrees = match &result {
            ProbeResult::Equivalent => !expected_refusal,
            ProbeResult::Inequivalent { .. } => expected_refusal,
            ProbeResult::Absent => true,
        };
        if !agrees {
            disagreements.push(row.name.clone());
        }
        results.insert(row.name.clone(), result);
    }
    amqp::close(&connection).await;
    Ok((results, disagreements))
}

/// One row of the table.
#[derive(Debug, Tabled)]
struct Line {
    queue: String,
    owner: String,
    messages: u64,
    bindings: usize,
    current: String,
    target: String,
    verdict: String,
    changes: String,
}

fn line(row: &QueueRow, bindings: usize, probe: Option<&ProbeResult>) -> Line {
    let mut changes: Vec<String> = row.differences.iter().map(|d| d.to_string()).collect();
    if let Some(note) = &row.note {
        changes.push(note.clone());
    }
    if let Some(probe) = probe {
        changes.push(match probe {
            ProbeResult::Equivalent => "probe: broker accepts the target".to_string(),
            ProbeResult::Inequivalent { .. } => "probe: broker refuses (406)".to_string(),
            ProbeResult::Absent => "probe: absent".to_string(),
        });
    }
    Line {
        queue: row.name.clone(),
        owner: row.owner.to_string(),
        messages: row.messages,
        bindings,
        current: output::cell(&row.current),
        target: output::cell(&row.target),
        verdict: row.verdict.to_string(),
        changes: if changes.is_empty() {
            "-".into()
        } else {
            changes.join("; ")
        },
    }
}

/// Runs `roll queue-diff`: exit 0 when nothing would change, 2 when changes are pending.
pub async fn run(
    inventory: &Inventory,
    playbook_path: &std::path::Path,
    group: &str,
    half: Option<Half>,
    probe: bool,
    format: OutputFormat,
) -> Result<u8, Error> {
    let playbook = playbook::load(playbook_path)?;
    let groups = select_groups(inventory, Some(group))?;
    let Some(group) = groups.first() else {
        return Err(Error::Usage(format!("no group named {group:?}")));
    };
    let report = report(&playbook, group, half, probe).await?;
    match format {
        OutputFormat::Json => output::print_json(&report)?,
        OutputFormat::Table => {
            let lines: Vec<Line> = report
                .diff
                .rows
                .iter()
                .map(|row| {
                    line(
                        row,
                        report.bindings.get(&row.name).map_or(0, Vec::len),
                        report.probe.as_ref().and_then(|p| p.get(&row.name)),
                    )
                })
                .collect();
            let mut text = vec![format!(
                "Queue diff of group {} (vhost {}{}) for playbook {} ({} {})",
                report.group,
                report.diff.vhost,
                half.map(|h| format!(", half {h}")).unwrap_or_default(),
                playbook.name,
                playbook.package,
                playbook.version
            )];
            text.push(output::table(&lines, output::stdout_is_terminal()));
            for warning in &report.diff.warnings {
                text.push(format!("warning: {warning}"));
            }
            if !report.clients.is_empty() {
                text.push(format!(
                    "clients: {}",
                    report
                        .clients
                        .iter()
                        .map(|c| format!("{} {} x{}", c.product, c.version, c.connections))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            if report.probe.is_some() {
                text.push(if report.probe_disagreements.is_empty() {
                    "probe: the broker agrees with every row".to_string()
                } else {
                    format!(
                        "probe: the broker DISAGREES on {}",
                        report.probe_disagreements.join(", ")
                    )
                });
            }
            text.push(report.diff.summary.to_string());
            output::print_text(&text.join("\n"))?;
        }
    }
    if !report.probe_disagreements.is_empty() {
        return Ok(exit::FAILURE);
    }
    Ok(if report.diff.summary.no_changes() {
        exit::SUCCESS
    } else {
        exit::CHANGES_PENDING
    })
}
