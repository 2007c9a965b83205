//! The broker's queues and their bindings as two listings give them, read at the same time
//! and in any order, gathered compactly into a [`QueueDiff`].
//!
//! Each queue name is stored once: an index maps it to its row, which both listings fill
//! (the queue listing its settings and counts, the binding listing its bindings). Settings
//! and bindings are interned: a vhost of a hundred thousand queues typically has a handful
//! of distinct settings and routing keys. Nothing is classified before both listings and the
//! claims are in: then every row gets its owner and verdict, the foreign queues' bindings are
//! dropped, and the rows are sorted.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use super::{LiveQueue, NONE, QueueDiff, Replicas, Row, Shape, Verdict, summarise, verdict};
use crate::broker::equivalence::{QueueSettings, Rules};
use crate::inventory::Half;
use crate::plan::ownership::{Claims, Owner};

/// A binding to a queue: where its messages come from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Binding {
    /// The exchange.
    pub source: String,
    pub routing_key: String,
    pub arguments: BTreeMap<String, Value>,
}

/// Equal values stored once, each with its index.
#[derive(Debug)]
struct Interner<T> {
    /// A value's canonical JSON -> its index.
    ids: HashMap<String, u32>,
    values: Vec<T>,
}

impl<T> Default for Interner<T> {
    fn default() -> Self {
        Interner {
            ids: HashMap::new(),
            values: Vec::new(),
        }
    }
}

impl<T: Serialize> Interner<T> {
    fn intern(&mut self, value: T) -> u32 {
        let id = self.values.len() as u32;
        // Maps with string keys always serialise; if one ever did not, it is kept unshared.
        let Ok(key) = serde_json::to_string(&value) else {
            self.values.push(value);
            return id;
        };
        if let Some(&known) = self.ids.get(&key) {
            return known;
        }
        self.ids.insert(key, id);
        self.values.push(value);
        id
    }
}

/// Owners stored once.
#[derive(Debug, Default)]
struct Owners {
    ids: BTreeMap<Owner, u32>,
    values: Vec<Owner>,
}

impl Owners {
    fn id(&mut self, owner: Owner) -> u32 {
        if let Some(&id) = self.ids.get(&owner) {
            return id;
        }
        let id = self.values.len() as u32;
        self.values.push(owner.clone());
        self.ids.insert(owner, id);
        id
    }
}

/// The queue and binding listings of a vhost, as they arrive (see the module's text).
#[derive(Debug, Default)]
pub struct Listing {
    /// Every queue name either listing showed -> its row. The rows' own names are empty
    /// until [`Listing::finish`] moves these into them.
    index: HashMap<Box<str>, u32>,
    /// One per name; a row the queue listing has not shown has no settings ([`NONE`]).
    rows: Vec<Row>,
    /// (row, binding) in the binding listing's order.
    bindings: Vec<(u32, u32)>,
    kinds: Interner<Binding>,
    shapes: Interner<QueueSettings>,
    /// Node and policy names.
    names: Interner<Box<str>>,
    replicas: Interner<Replicas>,
    rules: Rules,
}

impl Listing {
    pub fn new() -> Listing {
        Listing::default()
    }

    /// A listing whose queues are compared as a broker of these rules (its version) does.
    pub fn with_rules(rules: Rules) -> Listing {
        Listing {
            rules,
            ..Listing::default()
        }
    }

    /// Compares the queues as a broker of these rules (its version) does.
    pub fn set_rules(&mut self, rules: Rules) {
        self.rules = rules;
    }

    /// The row of a name, made when it is new.
    fn row(&mut self, name: String) -> usize {
        if let Some(&i) = self.index.get(name.as_str()) {
            return i as usize;
        }
        let i = self.rows.len();
        self.index.insert(name.into_boxed_str(), i as u32);
        self.rows.push(Row::new());
        i
    }

    /// A queue of the queue listing.
    pub fn queue(&mut self, queue: LiveQueue) {
        let shape = self.shapes.intern(queue.settings);
        let place = queue.place;
        let node = place
            .node
            .map_or(NONE, |n| self.names.intern(n.into_boxed_str()));
        let policy = place
            .policy
            .map_or(NONE, |p| self.names.intern(p.into_boxed_str()));
        let replicas = place.replicas.map_or(NONE, |r| self.replicas.intern(r));
        let i = self.row(queue.name);
        let row = &mut self.rows[i];
        row.shape = shape;
        row.node = node;
        row.policy = policy;
        row.replicas = replicas;
        row.messages = queue.messages;
        row.transient = queue.transient.unwrap_or(super::UNCOUNTED);
    }

    /// A binding of the binding listing, to `queue`.
    pub fn binding(&mut self, queue: String, binding: Binding) {
        let kind = self.kinds.intern(binding);
        let i = self.row(queue);
        self.bindings.push((i as u32, kind));
    }

    /// The diff: every queue listed classified with the claims, the expected queues that were
    /// not listed as missing, the bindings of the queues the fleet owns.
    pub fn finish(
        self,
        vhost: &str,
        half: Option<Half>,
        claims: &Claims,
        target: &QueueSettings,
        stop_window: Duration,
    ) -> QueueDiff {
        let Listing {
            index,
            mut rows,
            mut bindings,
            kinds,
            shapes,
            names,
            replicas,
            rules,
        } = self;
        let mut owners = Owners::default();
        let mut missing = Vec::new();
        for name in claims.expected() {
            let listed = index
                .get(name.as_str())
                .is_some_and(|&i| rows[i as usize].shape != NONE);
            let owner = claims.owner(&name);
            if !listed && owner != Owner::Foreign {
                let mut row = Row::new();
                row.verdict = if owner.in_scope(half) {
                    Verdict::Missing
                } else {
                    Verdict::Outside
                };
                row.owner = owners.id(owner);
                row.transient = 0;
                row.name = name.into_boxed_str();
                missing.push(row);
            }
        }
        for (name, i) in index {
            rows[i as usize].name = name;
        }
        let shapes: Vec<Shape> = shapes
            .values
            .into_iter()
            .map(|settings| Shape {
                differences: rules.differences(&settings, target),
                settings,
            })
            .collect();
        for row in rows.iter_mut() {
            let Some(shape) = shapes.get(row.shape as usize) else {
                continue;
            };
            let owner = claims.owner(&row.name);
            row.verdict = verdict(&owner, half, &shape.differences);
            row.owner = owners.id(owner);
        }
        // Each owned queue's bindings in one run, in the listing's order (a stable sort).
        bindings.sort_by_key(|&(row, _)| row);
        let mut kept = Vec::new();
        for run in bindings.chunk_by(|a, b| a.0 == b.0) {
            let row = &mut rows[run[0].0 as usize];
            if row.shape == NONE || row.verdict == Verdict::Foreign {
                continue;
            }
            row.first_binding = kept.len() as u32;
            row.binding_count = run.len() as u32;
            kept.extend(run.iter().map(|&(_, kind)| kind));
        }
        drop(bindings);
        kept.shrink_to_fit();
        // Names only a binding showed (a queue deleted between the two listings) go.
        rows.retain(|r| r.shape != NONE);
        rows.extend(missing);
        rows.sort_unstable_by(|a, b| (a.verdict, &a.name).cmp(&(b.verdict, &b.name)));
        let summary = summarise(&rows, &owners.values);
        QueueDiff {
            vhost: vhost.to_string(),
            half,
            rows,
            owners: owners.values,
            shapes,
            target: target.clone(),
            bindings: kept,
            kinds: kinds.values,
            stop_window,
            names: names.values,
            replicas: replicas.values,
            rules,
            nodes: Vec::new(),
            policies: Default::default(),
            summary,
        }
    }
}
