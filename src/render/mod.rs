//! Everything `roll` shows people, in one place: plans, run summaries and progress lines,
//! rendered from the data the plans and the engine return; [`crate::output`] writes them (and
//! their JSON twins).

mod artifacts;
mod freeze;
pub mod live;
mod plan;
pub mod progress;
pub mod report;
mod summary;

pub use freeze::{FreezeReport, freeze_cell, freeze_done, freeze_line, freeze_plan, unfreeze_plan};
pub use plan::{rollback_plan, upgrade_plan};
pub use summary::*;

use serde::Serialize;

use crate::output::{self, OutputFormat};

/// What follows a plan shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    /// Nothing: a dry run (the plan is its result).
    DryRun,
    /// The operator's approval, typed.
    Approval,
    /// Its execution, approved already (`--yes`).
    Execution,
}

impl Then {
    /// From a command's `--dry-run` and `--yes`.
    pub fn of(dry_run: bool, yes: bool) -> Then {
        match (dry_run, yes) {
            (true, _) => Then::DryRun,
            (false, false) => Then::Approval,
            (false, true) => Then::Execution,
        }
    }
}

/// Shows a plan before it is approved: its text on a table's output; for a dry run, then its
/// JSON twin (`dry_run` report) or the line saying nothing was changed. With `--quiet`, the
/// text only when it is the result (a dry run) or is to be approved.
pub fn show_plan(
    text: &str,
    dry_run_report: &impl Serialize,
    format: OutputFormat,
    then: Then,
) -> std::io::Result<()> {
    let quiet = crate::terminal::mode() == crate::terminal::Mode::Quiet;
    if format == OutputFormat::Table && !(quiet && then == Then::Execution) {
        output::print_text(text)?;
    }
    if then != Then::DryRun {
        return Ok(());
    }
    match format {
        OutputFormat::Json => output::print_json(dry_run_report),
        OutputFormat::Table => output::print_text("Dry run: nothing was changed."),
    }
}
