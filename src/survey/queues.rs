//! The broker's queues as a release would find them: the queue diff, the owned queues'
//! bindings, the connected clients and, with the probe, the broker's own answer for each.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;
use std::time::Duration;

use serde::Serialize;
use tokio::task::JoinSet;

use crate::broker::amqp::{self, ProbeResult};
use crate::broker::equivalence::QueueSettings;
use crate::broker::management::{BindingInfo, Management, QueueInfo};
use crate::error::Error;
use crate::inventory::{Group, Half, Secret};
use crate::plan::ownership::{Claims, Owner, RenderedPattern};
use crate::plan::queue_diff::{Classifier, LiveQueue, QueueDiff, Verdict};
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
///
/// The hosts' discovery (SSH), the queue listing, the binding listing and the connection
/// listing run at the same time. The listings are read as they arrive (see
/// [`Management::stream_queues`]); each queue is classified as it comes, with the claims
/// that the discovery gives, so that only owned queues are kept as rows and foreign ones as
/// the little their rows show, and only the owned queues' bindings are kept. What arrives
/// before the discovery has ended (usually nothing: the broker sends its first byte only
/// once it has gathered the whole listing) waits for it. When several fail, the error is
/// that of the first in the order they used to run in: discovery, queues, bindings,
/// connections.
pub async fn queues(
    playbook: &Playbook,
    group: &Group,
    half: Option<Half>,
    probe: bool,
) -> Result<QueueSurvey, Error> {
    let config = &group.broker;
    let password = crate::broker::password(config)?;
    let management = Management::new(config, password.clone())?;
    let patterns = patterns(playbook, group)?;
    let claims: OnceLock<Claims> = OnceLock::new();
    let target = &playbook.queues.target;
    let discovery = async {
        let mut found = Claims {
            patterns,
            ..Claims::default()
        };
        discover(playbook, group, &mut found).await?;
        let _ = claims.set(found);
        Ok::<_, Error>(())
    };
    let (discovered, listed, bound, clients) = tokio::join!(
        discovery,
        listed_queues(&management, group, half, &claims, target),
        listed_bindings(&management, &claims),
        clients(&management),
    );
    discovered?;
    let (listed, bound, clients) = (listed?, bound?, clients?);
    let Some(claims) = claims.get() else {
        return Err(Error::Usage("the hosts' discovery gave no claims".into()));
    };
    let diff = listed
        .finish(|| Classifier::new(half, claims, target), Classifier::push)
        .finish(&config.vhost, playbook.queues.expected_stop_window);
    let bindings = owned_bindings(
        bound.finish(|| OwnedBindings::new(claims), OwnedBindings::push),
        &diff,
    );
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

/// Items of a listing read before the hosts' discovery has ended, held until it has; from
/// then on each item is handled as it arrives, by the state `S` made with the claims.
#[derive(Debug)]
enum Staged<T, S> {
    Waiting(Vec<T>),
    Ready(S),
}

impl<T, S> Staged<T, S> {
    fn new() -> Self {
        Staged::Waiting(Vec::new())
    }

    /// Handles one item, with the state that `ready` makes once it can (the items that
    /// waited go first).
    fn push(&mut self, item: T, ready: impl FnOnce() -> Option<S>, handle: impl Fn(&mut S, T)) {
        if let Staged::Waiting(waiting) = self
            && let Some(mut state) = ready()
        {
            for held in std::mem::take(waiting) {
                handle(&mut state, held);
            }
            *self = Staged::Ready(state);
        }
        match self {
            Staged::Waiting(waiting) => waiting.push(item),
            Staged::Ready(state) => handle(state, item),
        }
    }

    /// The state once the listing has ended (and the discovery too).
    fn finish(self, make: impl FnOnce() -> S, handle: impl Fn(&mut S, T)) -> S {
        match self {
            Staged::Ready(state) => state,
            Staged::Waiting(waiting) => {
                let mut state = make();
                for held in waiting {
                    handle(&mut state, held);
                }
                state
            }
        }
    }
}

/// The vhost's queues, classified as they arrive, but roll's own lock, freeze and holding
/// queues (not part of the fleet's).
async fn listed_queues<'a>(
    management: &Management,
    group: &Group,
    half: Option<Half>,
    claims: &'a OnceLock<Claims>,
    target: &'a QueueSettings,
) -> Result<Staged<LiveQueue, Classifier<'a>>, Error> {
    let lock = crate::lock::queue_name(&group.name);
    let freeze = crate::freeze::queue_name(&group.name);
    let mut staged = Staged::new();
    management
        .stream_queues(|q| {
            if q.name == lock || q.name == freeze || crate::broker::holding::is_holding(&q.name) {
                return;
            }
            staged.push(
                live_queue(q),
                || Some(Classifier::new(half, claims.get()?, target)),
                Classifier::push,
            );
        })
        .await?;
    Ok(staged)
}

/// A listed queue as the diff reads it.
fn live_queue(q: QueueInfo) -> LiveQueue {
    LiveQueue {
        transient: q.transient(),
        settings: QueueSettings::new(q.durable, q.auto_delete, q.arguments),
        name: q.name,
        exclusive: q.exclusive,
        messages: q.messages.unwrap_or(0),
        consumers: q.consumers.unwrap_or(0),
    }
}

/// The bindings to queues that the claims do not call foreign, by queue, kept as they
/// arrive.
#[derive(Debug)]
struct OwnedBindings<'a> {
    claims: &'a Claims,
    by_queue: BTreeMap<String, Vec<BindingInfo>>,
}

impl<'a> OwnedBindings<'a> {
    fn new(claims: &'a Claims) -> Self {
        OwnedBindings {
            claims,
            by_queue: BTreeMap::new(),
        }
    }

    fn push(&mut self, binding: BindingInfo) {
        if self.claims.owner(&binding.destination) != Owner::Foreign {
            self.by_queue
                .entry(binding.destination.clone())
                .or_default()
                .push(binding);
        }
    }
}

/// The vhost's bindings to queues, those of foreign queues dropped as they arrive.
async fn listed_bindings<'a>(
    management: &Management,
    claims: &'a OnceLock<Claims>,
) -> Result<Staged<BindingInfo, OwnedBindings<'a>>, Error> {
    let mut staged = Staged::new();
    management
        .stream_queue_bindings(|b| {
            staged.push(
                b,
                || Some(OwnedBindings::new(claims.get()?)),
                OwnedBindings::push,
            );
        })
        .await?;
    Ok(staged)
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

/// The bindings of the queues the diff does not call foreign, by queue (roll's own queues,
/// which have no row, have none).
fn owned_bindings(
    bindings: OwnedBindings<'_>,
    diff: &QueueDiff,
) -> BTreeMap<String, Vec<BindingInfo>> {
    let owned: BTreeSet<&str> = diff
        .rows
        .iter()
        .filter(|r| r.verdict != Verdict::Foreign)
        .map(|r| r.name.as_str())
        .collect();
    let mut by_queue = bindings.by_queue;
    by_queue.retain(|queue, _| owned.contains(queue.as_str()));
    by_queue
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::Half;

    fn binding(destination: &str) -> BindingInfo {
        BindingInfo {
            source: "xpublic".into(),
            destination: destination.into(),
            destination_type: "queue".into(),
            routing_key: "#".into(),
            arguments: BTreeMap::new(),
        }
    }

    #[test]
    fn items_wait_for_the_claims_then_are_handled_as_they_come() {
        let cell: OnceLock<Claims> = OnceLock::new();
        let mut staged: Staged<BindingInfo, OwnedBindings<'_>> = Staged::new();
        let push = |staged: &mut Staged<_, _>, name: &str| {
            staged.push(
                binding(name),
                || Some(OwnedBindings::new(cell.get()?)),
                OwnedBindings::push,
            )
        };
        push(&mut staged, "q.pump.px1");
        push(&mut staged, "q.foreign");
        assert!(matches!(&staged, Staged::Waiting(w) if w.len() == 2));
        let mut claims = Claims::default();
        claims.discovered_by("px1", Half::A, "q.pump.px1\nq.pump.px1.b\n");
        cell.set(claims).unwrap();
        push(&mut staged, "q.pump.px1.b");
        push(&mut staged, "q.foreign.2");
        let Staged::Ready(owned) = &staged else {
            panic!("still waiting");
        };
        let names: Vec<&String> = owned.by_queue.keys().collect();
        assert_eq!(names, ["q.pump.px1", "q.pump.px1.b"]);
        let claims = cell.get().unwrap();
        let owned = staged.finish(|| OwnedBindings::new(claims), OwnedBindings::push);
        assert_eq!(owned.by_queue.len(), 2);
    }

    #[test]
    fn items_that_never_saw_the_claims_are_handled_at_the_end() {
        let mut staged: Staged<BindingInfo, OwnedBindings<'_>> = Staged::new();
        for name in ["q.pump.px1", "q.foreign"] {
            staged.push(binding(name), || None, OwnedBindings::push);
        }
        let mut claims = Claims::default();
        claims.discovered_by("px1", Half::A, "q.pump.px1\n");
        let owned = staged.finish(|| OwnedBindings::new(&claims), OwnedBindings::push);
        let names: Vec<&String> = owned.by_queue.keys().collect();
        assert_eq!(names, ["q.pump.px1"]);
    }
}
