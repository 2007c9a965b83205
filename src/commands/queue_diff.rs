//! `roll queue-diff`: what a release will do to the broker's queues, before anything changes.
//! Read-only: the survey (see [`crate::survey`]) lists the queues (management API), asks each
//! host which queues it uses (SSH, the playbook's discovery command) and, with `--probe`,
//! asks the broker itself (AMQP declares of existing queues with the settings they already
//! have or are refused); this module turns it into the table or the JSON, and the exit code.
//!
//! A vhost may hold a hundred thousand queues: both are written to stdout as they are made,
//! row by row from the survey's compact rows, never as one text.

use std::fmt::Write as _;
use std::io::{BufWriter, IsTerminal, Write};

use serde::Serialize;
use serde::ser::SerializeMap;

use super::select_groups;
use crate::broker::amqp::ProbeResult;
use crate::broker::management::BindingInfo;
use crate::error::Error;
use crate::inventory::{Half, Inventory};
use crate::output::{self, Masked, OutputFormat};
use crate::plan::queue_diff::RowRef;
use crate::playbook::Playbook;
use crate::survey::{self, QueueSurvey};
use crate::{exit, playbook, redact};

/// The table's columns.
const HEADERS: [&str; 10] = [
    "queue", "owner", "type", "node", "messages", "bindings", "current", "target", "verdict",
    "changes",
];

/// Puts a row's cells (in [`HEADERS`]' order) into `cells`, which are empty.
fn cells(row: RowRef<'_>, probe: Option<&ProbeResult>, cells: &mut [String]) {
    let [
        queue,
        owner,
        kind,
        node,
        messages,
        bindings,
        current,
        target,
        verdict,
        changes,
    ] = cells
    else {
        return;
    };
    queue.push_str(row.name());
    let _ = write!(owner, "{}", row.owner());
    kind.push_str(row.kind().as_str());
    node.push_str(match (row.current(), row.node()) {
        (None, _) => "-",
        (Some(_), Some(node)) => node,
        // A quorum queue without a leader.
        (Some(_), None) => "none",
    });
    let _ = write!(messages, "{}", row.messages());
    let _ = write!(bindings, "{}", row.bindings().len());
    match row.current() {
        Some(settings) => {
            let _ = write!(current, "{settings}");
        }
        None => current.push('-'),
    }
    match row.target() {
        Some(settings) => {
            let _ = write!(target, "{settings}");
        }
        None => target.push('-'),
    }
    verdict.push_str(row.verdict().as_str());
    let mut separator = "";
    for difference in row.differences() {
        let _ = write!(changes, "{separator}{difference}");
        separator = "; ";
    }
    if let Some(note) = row.note() {
        let _ = write!(changes, "{separator}{note}");
        separator = "; ";
    }
    if let Some(probe) = probe {
        let _ = write!(
            changes,
            "{separator}{}",
            match probe {
                ProbeResult::Equivalent => "probe: broker accepts the target",
                ProbeResult::Inequivalent { .. } => "probe: broker refuses (406)",
                ProbeResult::Absent => "probe: absent",
            }
        );
    }
    if changes.is_empty() {
        changes.push('-');
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
    let reading = survey::Reading {
        bindings: true,
        probe,
    };
    let survey = survey::queues(&playbook, group, half, reading).await?;
    let stdout = std::io::stdout();
    let terminal = stdout.is_terminal();
    let mut out = BufWriter::with_capacity(64 * 1024, stdout.lock());
    match format {
        OutputFormat::Json => output::write_json(&mut out, &Json(&survey))?,
        OutputFormat::Table => write_text(&mut out, &survey, &playbook, half, terminal)?,
    }
    out.flush()?;
    if !survey.probe_disagreements.is_empty() {
        return Ok(exit::FAILURE);
    }
    Ok(if survey.diff.summary.no_changes() {
        exit::SUCCESS
    } else {
        exit::CHANGES_PENDING
    })
}

/// The table, with its title, the warnings, the clients, the probe's verdict and the summary.
fn write_text(
    out: &mut impl Write,
    survey: &QueueSurvey,
    playbook: &Playbook,
    half: Option<Half>,
    terminal: bool,
) -> std::io::Result<()> {
    let line = |out: &mut dyn Write, text: &str| writeln!(out, "{}", redact::text(text));
    line(
        out,
        &format!(
            "Queue diff of group {} (vhost {}{}) for playbook {} ({} {})",
            survey.group,
            survey.diff.vhost,
            half.map(|h| format!(", half {h}")).unwrap_or_default(),
            playbook.name,
            playbook.package,
            playbook.version
        ),
    )?;
    let diff = &survey.diff;
    if !survey.nodes.is_empty() {
        let nodes: Vec<String> = survey
            .nodes
            .iter()
            .map(|n| format!("{}{}", n.name, if n.running { "" } else { " (down)" }))
            .collect();
        line(
            out,
            &format!("RabbitMQ {}; nodes: {}", survey.version, nodes.join(", ")),
        )?;
    }
    output::write_table(
        out,
        &HEADERS,
        diff.len(),
        |i, row_cells| {
            if let Some(row) = diff.row(i) {
                let probe = survey.probe.as_ref().and_then(|p| p.get(row.name()));
                cells(row, probe, row_cells);
            }
        },
        terminal,
    )?;
    for warning in diff.warnings() {
        line(out, &format!("warning: {warning}"))?;
    }
    if !survey.clients.is_empty() {
        line(
            out,
            &format!(
                "clients: {}",
                survey
                    .clients
                    .iter()
                    .map(|c| format!("{} {} x{}", c.product, c.version, c.connections))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )?;
    }
    if survey.probe.is_some() {
        line(out, &probe_verdict(&survey.probe_disagreements))?;
    }
    line(out, &diff.summary.to_string())
}

/// Whether the broker agreed with every row, or the queues where it did not.
fn probe_verdict(disagreements: &[String]) -> String {
    if disagreements.is_empty() {
        "probe: the broker agrees with every row".to_string()
    } else {
        format!(
            "probe: the broker DISAGREES on {}",
            disagreements.join(", ")
        )
    }
}

/// The survey as JSON: `bindings` (each owned queue's, by queue name), `clients`, `group`,
/// `half`, `nodes` (the cluster's, with `running`), `playbook`, `probe`,
/// `probe_disagreements`, `rows` (every row, the foreign ones last; each with its `type`,
/// `node` and `policy`), `summary`, `version` (the broker's), `vhost` and `warnings`, in
/// that order. Written part by part, each
/// masked on its own: one row, one queue's bindings at a time.
struct Json<'a>(&'a QueueSurvey);

impl Serialize for Json<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let survey = self.0;
        let diff = &survey.diff;
        let mut map = serializer.serialize_map(Some(13))?;
        map.serialize_entry("bindings", &Bindings(survey))?;
        map.serialize_entry("clients", &Masked(&survey.clients))?;
        map.serialize_entry("group", &Masked(&survey.group))?;
        map.serialize_entry("half", &Masked(diff.half))?;
        map.serialize_entry("nodes", &Masked(diff.nodes()))?;
        map.serialize_entry("playbook", &Masked(&survey.playbook))?;
        map.serialize_entry("probe", &Masked(&survey.probe))?;
        map.serialize_entry("probe_disagreements", &Masked(&survey.probe_disagreements))?;
        map.serialize_entry("rows", &Rows(survey))?;
        map.serialize_entry("summary", &Masked(&diff.summary))?;
        map.serialize_entry("version", &Masked(&survey.version))?;
        map.serialize_entry("vhost", &Masked(&diff.vhost))?;
        map.serialize_entry("warnings", &Warnings(survey))?;
        map.end()
    }
}

/// Every row, one at a time.
struct Rows<'a>(&'a QueueSurvey);

impl Serialize for Rows<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.diff.rows().map(Masked))
    }
}

/// The warnings, one at a time.
struct Warnings<'a>(&'a QueueSurvey);

impl Serialize for Warnings<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.diff.warnings().map(Masked))
    }
}

/// The owned queues' bindings, by queue name (sorted), as the management API lists them.
struct Bindings<'a>(&'a QueueSurvey);

impl Serialize for Bindings<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let diff = &self.0.diff;
        let mut bound: Vec<RowRef<'_>> =
            diff.owned().filter(|r| !r.bindings().is_empty()).collect();
        bound.sort_unstable_by(|a, b| a.name().cmp(b.name()));
        let mut map = serializer.serialize_map(Some(bound.len()))?;
        for row in bound {
            let bindings: Vec<BindingInfo> = row
                .each_binding()
                .map(|b| BindingInfo {
                    source: b.source.clone(),
                    destination: row.name().to_string(),
                    destination_type: "queue".into(),
                    routing_key: b.routing_key.clone(),
                    arguments: b.arguments.clone(),
                })
                .collect();
            map.serialize_entry(row.name(), &Masked(bindings))?;
        }
        map.end()
    }
}
