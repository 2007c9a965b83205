//! The broker's queues as a release would find them: the queue diff, the owned queues'
//! bindings, the connected clients and, with the probe, the broker's own answer for each.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Serialize;
use tokio::task::JoinSet;

use crate::broker::amqp::{self, ProbeResult};
use crate::broker::equivalence::QueueSettings;
use crate::broker::management::{BindingInfo, Management};
use crate::error::Error;
use crate::inventory::{Group, Half, Secret};
use crate::plan::ownership::{Claims, RenderedPattern};
use crate::plan::queue_diff::{self, LiveQueue, QueueDiff, Verdict};
use crate::playbook::{PatternOwner, Playbook};
use crate::remote;
use crate::template::{self, Escape};

/// Time allowed for a host's discovery command.
const DISCOVER_TIMEOUT: Duration = Duration::from_secs(30);

/// The survey of a group's queues: the diff, each queue's bindings, the connected clients,
/// the probe.
#[derive(Debug, Serialize)]
pub struct QueueSurvey {
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

/// Surveys a group's queues for a release (and optionally one half). Changes nothing.
pub async fn queues(
    playbook: &Playbook,
    group: &Group,
    half: Option<Half>,
    probe: bool,
) -> Result<QueueSurvey, Error> {
    let config = &group.broker;
    let password = crate::broker::password(config)?;
    let management = Management::new(config, password.clone())?;
    let mut claims = Claims {
        patterns: patterns(playbook, group)?,
        ..Claims::default()
    };
    discover(playbook, group, &mut claims).await?;
    let diff = queue_diff::diff(
        &config.vhost,
        half,
        live_queues(&management, group).await?,
        &claims,
        &playbook.queues.target,
        playbook.queues.expected_stop_window,
    );
    let bindings = owned_bindings(&management, &diff).await?;
    let clients = clients(&management).await?;
    let (probe, probe_disagreements) = if probe {
        let (results, disagreements) = run_probe(group, &password, &diff).await?;
        (Some(results), disagreements)
    } else {
        (None, vec![])
    };
    Ok(QueueSurvey {
        group: group.name.clone(),
        playbook: playbook.name.clone(),
        diff,
        bindings,
        clients,
        probe,
        probe_disagreements,
    })
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
            let names = discover_on(&host, &command).await?;
            Ok::<_, Error>((host.name.clone(), host.half, names))
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

/// Runs the discovery command on one host, over a connection of its own: what it printed.
async fn discover_on(host: &crate::inventory::Host, command: &str) -> Result<String, Error> {
    let connection = remote::connect(host).await?;
    let output = connection
        .run("discover queues", command, DISCOVER_TIMEOUT)
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
    Ok(output.stdout)
}

/// The vhost's queues, but roll's own lock, freeze and holding queues (not part of the
/// fleet's).
async fn live_queues(management: &Management, group: &Group) -> Result<Vec<LiveQueue>, Error> {
    let lock = crate::lock::queue_name(&group.name);
    let freeze = crate::freeze::queue_name(&group.name);
    Ok(management
        .list_queues()
        .await?
        .into_iter()
        .filter(|q| q.name != lock && q.name != freeze)
        .filter(|q| !crate::broker::holding::is_holding(&q.name))
        .map(|q| LiveQueue {
            transient: q.transient(),
            settings: QueueSettings::new(q.durable, q.auto_delete, q.arguments),
            name: q.name,
            exclusive: q.exclusive,
            messages: q.messages.unwrap_or(0),
            consumers: q.consumers.unwrap_or(0),
        })
        .collect())
}

/// The bindings of the queues the diff does not call foreign, by queue.
async fn owned_bindings(
    management: &Management,
    diff: &QueueDiff,
) -> Result<BTreeMap<String, Vec<BindingInfo>>, Error> {
    let owned: BTreeSet<&str> = diff
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
    Ok(bindings)
}

/// The broker's connections, counted by client product and version.
async fn clients(management: &Management) -> Result<Vec<ClientCount>, Error> {
    let mut counts: BTreeMap<(String, String), usize> = BTreeMap::new();
    for connection in management.connections().await? {
        *counts.entry(connection.product()).or_default() += 1;
    }
    Ok(counts
        .into_iter()
        .map(|((product, version), connections)| ClientCount {
            product,
            version,
            connections,
        })
        .collect())
}

/// Declares every existing owned queue (in or out of this run's scope) with the target
/// settings and compares the broker's answer with the diff.
async fn run_probe(
    group: &Group,
    password: &Secret,
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
