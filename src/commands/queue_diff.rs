//! `roll queue-diff`: what a release will do to the broker's queues, before anything changes.
//! Read-only: the survey (see [`crate::survey`]) lists the queues (management API), asks each
//! host which queues it uses (SSH, the playbook's discovery command) and, with `--probe`,
//! asks the broker itself (AMQP declares of existing queues with the settings they already
//! have or are refused); this module turns it into the table or the JSON, and the exit code.

use tabled::Tabled;

use super::select_groups;
use crate::broker::amqp::ProbeResult;
use crate::error::Error;
use crate::inventory::{Half, Inventory};
use crate::output::{self, OutputFormat};
use crate::plan::queue_diff::QueueRow;
use crate::playbook::Playbook;
use crate::survey::{self, QueueSurvey};
use crate::{exit, playbook};

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
    let survey = survey::queues(&playbook, group, half, probe).await?;
    match format {
        OutputFormat::Json => output::print_json(&survey)?,
        OutputFormat::Table => output::print_text(&text(&survey, &playbook, half))?,
    }
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
fn text(survey: &QueueSurvey, playbook: &Playbook, half: Option<Half>) -> String {
    let lines: Vec<Line> = survey
        .diff
        .all_rows()
        .map(|row| {
            line(
                &row,
                survey.bindings.get(&row.name).map_or(0, Vec::len),
                survey.probe.as_ref().and_then(|p| p.get(&row.name)),
            )
        })
        .collect();
    let mut text = vec![format!(
        "Queue diff of group {} (vhost {}{}) for playbook {} ({} {})",
        survey.group,
        survey.diff.vhost,
        half.map(|h| format!(", half {h}")).unwrap_or_default(),
        playbook.name,
        playbook.package,
        playbook.version
    )];
    text.push(output::table(&lines, output::stdout_is_terminal()));
    for warning in &survey.diff.warnings {
        text.push(format!("warning: {warning}"));
    }
    if !survey.clients.is_empty() {
        text.push(format!(
            "clients: {}",
            survey
                .clients
                .iter()
                .map(|c| format!("{} {} x{}", c.product, c.version, c.connections))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if survey.probe.is_some() {
        text.push(probe_verdict(&survey.probe_disagreements));
    }
    text.push(survey.diff.summary.to_string());
    text.join("\n")
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
