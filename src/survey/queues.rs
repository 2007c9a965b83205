//! The broker's queues as a release would find them: the queue diff, the owned queues'
//! bindings, the connected clients and, with the probe, the broker's own answer for each.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use tokio::task::JoinSet;

use crate::broker::BrokerError;
use crate::broker::amqp::{self, ProbeResult};
use crate::broker::cluster::Node;
use crate::broker::equivalence::{QueueSettings, QueueType, Rules};
use crate::broker::management::{Management, QueueInfo};
use crate::error::Error;
use crate::inventory::{Group, Half, Secret};
use crate::plan::ownership::{Claims, RenderedPattern};
use crate::plan::queue_diff::{
    Binding, Listing, LiveQueue, NodeState, Placement, QueueDiff, Replicas,
};
use crate::playbook::{PatternOwner, Playbook};
use crate::remote;
use crate::template::{self, Escape};

/// Time allowed for a host's discovery command.
const DISCOVER_TIMEOUT: Duration = Duration::from_secs(30);

/// At most this many queues have their transient messages counted one lookup each (a few
/// at a time); more are counted from one listing with the broker's message statistics.
const TRANSIENT_LOOKUPS: usize = 64;
/// Lookups in flight at once.
const TRANSIENT_LOOKUPS_AT_ONCE: usize = 8;

/// From this many queues on the broker (every vhost's), the bindings are read once the queue
/// listing has been answered, not while the broker makes it. The management API's work per
/// queue grows with their number (on RabbitMQ 3.10, two cores: a queue listing of 20,000
/// takes it about 2 s of CPU, one of 100,000 about 60 s, and the bindings as much again), and
/// it ends any request it has not answered within its idle timeout (60 s unless set): made
/// together, the two would pass it where each alone does not. Below, they are made together.
const BINDINGS_AFTER_QUEUES_FROM: u64 = 50_000;

/// The survey of a group's queues: the diff (with each owned queue's bindings, when read),
/// the connected clients, the probe.
#[derive(Debug)]
pub struct QueueSurvey {
    pub group: String,
    pub playbook: String,
    pub diff: QueueDiff,
    /// Connected clients by product and version, with their count.
    pub clients: Vec<ClientCount>,
    /// With `--probe`: what the broker answered for each existing owned queue.
    pub probe: Option<BTreeMap<String, ProbeResult>>,
    /// With `--probe`: queues where the broker disagreed with the report.
    pub probe_disagreements: Vec<String>,
    /// The broker's version (`rabbitmq_version`), as the management API gave it.
    pub version: String,
    /// The cluster's nodes (one for a single broker); empty when our user may not list them.
    pub nodes: Vec<Node>,
}

impl QueueSurvey {
    /// The type of the holding queues a run on this broker uses (see
    /// [`crate::broker::cluster::holding_type`]).
    pub fn holding_type(&self) -> QueueType {
        crate::broker::cluster::holding_type(&self.nodes)
    }
}

/// How many connections one client version has.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct ClientCount {
    pub product: String,
    pub version: String,
    pub connections: usize,
}

/// What a survey reads besides the queues and the clients.
#[derive(Debug, Clone, Copy, Default)]
pub struct Reading {
    /// The owned queues' bindings (what `queue-diff` shows; an upgrade's plan needs none:
    /// each recreated queue's bindings are backed up when it is).
    pub bindings: bool,
    /// Declares every existing owned queue with the target settings and compares the
    /// broker's answer with the diff.
    pub probe: bool,
}

/// Surveys a group's queues for a release (and optionally one half). Changes nothing.
///
/// The hosts' discovery (SSH), the queue listing, the bindings (when read: see
/// [`Management::stream_queue_bindings`]) and the connection listing run at the same time;
/// on a broker of [`BINDINGS_AFTER_QUEUES_FROM`] queues or more, the bindings wait until the
/// queue listing is answered. The listings are read as they arrive (see
/// [`Management::stream_queues`]) into a [`Listing`], which keeps each queue compactly (its
/// name once, its counts, shared settings and bindings); once every part is in, the queues
/// are classified with the claims the discovery gave. The queue listing comes without the
/// broker's message statistics (they cost the broker more than the listing itself), so the
/// transient messages of the queues to recreate that hold messages are counted afterwards
/// ([`count_transient`]). When several parts fail, the error is that of the first in this
/// order: discovery, queues, bindings, connections.
pub async fn queues(
    playbook: &Playbook,
    group: &Group,
    half: Option<Half>,
    reading: Reading,
) -> Result<QueueSurvey, Error> {
    let config = &group.broker;
    let password = crate::broker::password(config)?;
    let management = Management::new(config, password.clone())?;
    let patterns = patterns(playbook, group)?;
    let discovery = async {
        let mut found = Claims {
            patterns,
            ..Claims::default()
        };
        discover(playbook, group, &mut found).await?;
        Ok::<_, Error>(found)
    };
    // Both listings fill one table (their callbacks run one at a time, on this task).
    let listing = RefCell::new(Listing::new());
    let lock = crate::lock::queue_name(&group.name);
    let freeze = crate::freeze::queue_name(&group.name);
    // Told when the queue listing's answer has come (its first queue, or its end).
    let answered = tokio::sync::Notify::new();
    let queues_failed = std::cell::Cell::new(false);
    let queues = async {
        let mut first = true;
        let listed = management
            .stream_queues(|q| {
                if std::mem::take(&mut first) {
                    answered.notify_one();
                }
                // roll's own lock, freeze and holding queues are not the fleet's.
                if q.name == lock || q.name == freeze || crate::broker::holding::is_holding(&q.name)
                {
                    return;
                }
                listing.borrow_mut().queue(live_queue(q));
            })
            .await;
        queues_failed.set(listed.is_err());
        answered.notify_one();
        listed
    };
    let (claims, listed, bound, clients, broker) = tokio::join!(
        discovery,
        queues,
        async {
            if !reading.bindings {
                return Ok(0);
            }
            // A failed count reads as a small broker: the listings are made together.
            if management.queue_total().await.unwrap_or(0) >= BINDINGS_AFTER_QUEUES_FROM {
                answered.notified().await;
                if queues_failed.get() {
                    return Ok(0);
                }
            }
            management
                .stream_queue_bindings(|b| {
                    listing.borrow_mut().binding(
                        b.destination,
                        Binding {
                            source: b.source,
                            routing_key: b.routing_key,
                            arguments: b.arguments,
                        },
                    );
                })
                .await
        },
        clients(&management),
        broker(&management),
    );
    let claims = claims?;
    listed?;
    bound?;
    let clients = clients?;
    let (version, nodes, policies) = broker?;
    let mut listing = listing.into_inner();
    listing.set_rules(Rules::of_version(&version));
    let mut diff = listing.finish(
        &config.vhost,
        half,
        &claims,
        &playbook.queues.target,
        playbook.queues.expected_stop_window,
    );
    drop(claims);
    diff.set_nodes(
        nodes
            .iter()
            .map(|n| NodeState {
                name: n.name.clone(),
                running: n.running,
            })
            .collect(),
    );
    diff.set_policies(policies);
    count_transient(&management, &mut diff).await?;
    let (probe, probe_disagreements) = if reading.probe {
        let (results, disagreements) = run_probe(group, &password, &diff).await?;
        (Some(results), disagreements)
    } else {
        (None, vec![])
    };
    Ok(QueueSurvey {
        group: group.name.clone(),
        playbook: playbook.name.clone(),
        diff,
        clients,
        probe,
        probe_disagreements,
        version,
        nodes,
    })
}

/// The broker's version, its nodes and the vhost's user policies, read once. A user who
/// may not list the nodes or policies (no `monitoring` or `policymaker` tag) gets none.
async fn broker(
    management: &Management,
) -> Result<
    (
        String,
        Vec<Node>,
        BTreeMap<String, serde_json::Map<String, serde_json::Value>>,
    ),
    Error,
> {
    let (overview, nodes, policies) = tokio::join!(
        management.overview(),
        management.nodes(),
        management.policies()
    );
    let refused = |err: &BrokerError| {
        matches!(
            err,
            BrokerError::Unauthorized { .. } | BrokerError::Http { status: 403, .. }
        )
    };
    let nodes = match nodes {
        Ok(nodes) => nodes,
        Err(err) if refused(&err) => vec![],
        Err(err) => return Err(err.into()),
    };
    let policies = match policies {
        Ok(policies) => policies,
        Err(err) if refused(&err) => BTreeMap::new(),
        Err(err) => return Err(err.into()),
    };
    Ok((overview?.rabbitmq_version, nodes, policies))
}

/// A listed queue as the diff reads it.
///
/// A quorum queue or stream declared without `x-queue-type` (a vhost's default queue type
/// made it one) gets it from its listed type: its settings say what it is.
fn live_queue(q: QueueInfo) -> LiveQueue {
    let transient = q.transient();
    let kind = q
        .kind
        .as_deref()
        .and_then(QueueType::parse)
        .unwrap_or_default();
    let mut arguments = q.arguments;
    if kind != QueueType::Classic && !arguments.contains_key("x-queue-type") {
        arguments.insert("x-queue-type".into(), kind.as_str().into());
    }
    let replicated = kind != QueueType::Classic;
    let place = Placement {
        node: if replicated { q.leader } else { q.node }.filter(|n| !n.is_empty()),
        replicas: replicated.then(|| Replicas {
            members: q.members.unwrap_or_default(),
            online: q.online.unwrap_or_default(),
        }),
        policy: q.policy.filter(|p| !p.is_empty()),
    };
    LiveQueue {
        transient,
        settings: QueueSettings::new(q.durable, q.auto_delete, arguments),
        name: q.name,
        messages: q.messages.unwrap_or(0),
        place,
    }
}

/// Counts the transient messages of the queues a release recreates that hold messages,
/// which the listing (without the broker's message statistics) does not give: one lookup per
/// queue, [`TRANSIENT_LOOKUPS_AT_ONCE`] at a time, or, for more than [`TRANSIENT_LOOKUPS`]
/// queues, one listing with statistics. A queue gone meanwhile holds none; one that cannot
/// be named in a URL (`.`, `..`) keeps an unknown count.
async fn count_transient(management: &Management, diff: &mut QueueDiff) -> Result<(), Error> {
    let uncounted = diff.uncounted();
    if uncounted.is_empty() {
        return Ok(());
    }
    if uncounted.len() > TRANSIENT_LOOKUPS {
        let mut counted = Vec::new();
        management
            .stream_queue_statistics(|q| {
                if let Some(i) = diff.find(&q.name)
                    && diff.row(i).is_some_and(|r| r.verdict().recreates())
                {
                    counted.push((i, q.transient().unwrap_or(0)));
                }
            })
            .await?;
        for (i, transient) in counted {
            diff.set_transient(i, transient);
        }
        return Ok(());
    }
    let mut pending = uncounted.into_iter();
    let mut lookups = JoinSet::new();
    loop {
        while lookups.len() < TRANSIENT_LOOKUPS_AT_ONCE
            && let Some(i) = pending.next()
        {
            let Some(name) = diff.row(i).map(|r| r.name().to_string()) else {
                continue;
            };
            let management = management.clone();
            lookups.spawn(async move { (i, management.queue(&name).await) });
        }
        let Some(joined) = lookups.join_next().await else {
            return Ok(());
        };
        let (i, found) =
            joined.map_err(|err| Error::Usage(format!("queue lookup task failed: {err}")))?;
        match found {
            Ok(info) => diff.set_transient(i, info.and_then(|q| q.transient()).unwrap_or(0)),
            // `.` and `..` cannot be looked up over HTTP: its count stays unknown.
            Err(BrokerError::Unaddressable { .. }) => {}
            Err(err) => return Err(err.into()),
        }
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
    for row in diff.owned() {
        // Missing queues have no current settings: they are not probed.
        let (Some(target), Some(_)) = (row.target(), row.current()) else {
            continue;
        };
        let result = amqp::probe(&connection, &config.display(), row.name(), target).await;
        let result = match result {
            Ok(r) => r,
            Err(err) => {
                amqp::close(&connection).await;
                return Err(err.into());
            }
        };
        let expected_refusal = row.differences().iter().any(|d| d.checked);
        let agrees = match &result {
            ProbeResult::Equivalent => !expected_refusal,
            ProbeResult::Inequivalent { .. } => expected_refusal,
            ProbeResult::Absent => true,
        };
        if !agrees {
            disagreements.push(row.name().to_string());
        }
        results.insert(row.name().to_string(), result);
    }
    amqp::close(&connection).await;
    Ok((results, disagreements))
}
