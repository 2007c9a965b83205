//! `roll history`: one row per run of a group, newest first, from its journals.

use tabled::Tabled;

use super::select_groups;
use crate::error::Error;
use crate::exit;
use crate::history::{self, RunRecord};
use crate::inventory::Inventory;
use crate::output::{self, OutputFormat};

/// One run as the table shows it.
#[derive(Debug, Tabled)]
struct Row {
    run: String,
    kind: String,
    half: String,
    release: String,
    operator: String,
    started: String,
    duration: String,
    status: String,
    window: String,
    queues: usize,
    #[tabled(rename = "moved / lost")]
    moved_lost: String,
    failures: String,
}

fn row(r: &RunRecord) -> Row {
    let seconds = |s: Option<f64>| s.map_or("-".to_string(), |s| format!("{s:.1}s"));
    Row {
        run: r.run_id.clone(),
        kind: r.kind.map_or("-".to_string(), |k| k.to_string()),
        half: r.half.map_or("-".to_string(), |h| h.to_string()),
        release: if r.playbook.is_empty() {
            "-".to_string()
        } else {
            format!("{} {}", r.playbook, r.version)
        },
        operator: r.operator.clone(),
        started: r.started.clone(),
        duration: seconds(r.duration_seconds),
        status: r.status.clone(),
        window: seconds(r.critical_window_seconds),
        queues: r.queues_recreated,
        moved_lost: format!("{} / {}", r.messages_moved, r.messages_lost),
        failures: if r.failures.is_empty() {
            "-".to_string()
        } else {
            r.failures.join("; ")
        },
    }
}

/// Runs `roll history --group G`: exit 0 (also when the group has no run yet).
pub fn run(
    inventory: &Inventory,
    group: &str,
    limit: Option<usize>,
    state_dir: &std::path::Path,
    format: OutputFormat,
) -> Result<u8, Error> {
    let groups = select_groups(inventory, Some(group))?;
    let Some(group) = groups.first() else {
        return Err(Error::Usage(format!("no group named {group:?}")));
    };
    let mut runs = history::runs(state_dir, &group.name)?;
    let total = runs.len();
    if let Some(limit) = limit {
        runs.truncate(limit);
    }
    match format {
        OutputFormat::Json => output::print_json(&runs)?,
        OutputFormat::Table => {
            let rows: Vec<Row> = runs.iter().map(row).collect();
            let summary = format!(
                "{} of {total} runs of group {} (journals in {})",
                runs.len(),
                group.name,
                crate::journal::group_dir(state_dir, &group.name).display()
            );
            let terminal = output::stdout_is_terminal();
            output::print_text(&format!("{}\n{summary}", output::table(&rows, terminal)))?;
        }
    }
    Ok(exit::SUCCESS)
}
