//! Run summaries for people: what an upgrade or a rollback did, per host and per queue, and
//! how long services were stopped. (Their JSON twins are the outcomes themselves.)

use serde::Serialize;

use crate::engine::{Outcome, RollbackOutcome};
use crate::exit;
use crate::journal::RunStatus;
use crate::output::{self, OutputFormat};
use crate::plan::rollback::RollbackPlan;
use crate::plan::upgrade::UpgradePlan;

/// What `roll upgrade --output json` (and `resume`) print.
#[derive(Debug, Serialize)]
pub struct UpgradeReport<'a> {
    pub plan: &'a UpgradePlan,
    pub dry_run: bool,
    pub outcome: Option<&'a Outcome>,
    /// The rollback that followed a failure (`--on-failure rollback`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackReport<'a>>,
}

/// What `roll rollback --output json` prints.
#[derive(Debug, Serialize)]
pub struct RollbackReport<'a> {
    pub plan: &'a RollbackPlan,
    pub dry_run: bool,
    pub outcome: Option<&'a RollbackOutcome>,
}

/// The exit code of a run that ended so.
pub fn exit_code(status: RunStatus) -> u8 {
    match status {
        RunStatus::Done => exit::SUCCESS,
        RunStatus::Partial => exit::PARTIAL,
        RunStatus::Failed => exit::FAILURE,
        RunStatus::Paused => exit::PAUSED,
    }
}

/// Prints an upgrade's outcome in the chosen format; gives the exit code.
pub fn print_upgrade(
    plan: &UpgradePlan,
    outcome: &Outcome,
    format: OutputFormat,
) -> std::io::Result<u8> {
    let json = UpgradeReport {
        plan,
        dry_run: false,
        outcome: Some(outcome),
        rollback: None,
    };
    print(format, &json, || upgrade(plan, outcome), outcome.status)
}

/// Prints a failed upgrade and the rollback that followed it; exit 1 (the release is not
/// in place), whatever the rollback did (its status is in the report).
pub fn print_upgrade_rolled_back(
    plan: &UpgradePlan,
    outcome: &Outcome,
    rollback_plan: &RollbackPlan,
    rolled_back: &RollbackOutcome,
    format: OutputFormat,
) -> std::io::Result<u8> {
    let json = UpgradeReport {
        plan,
        dry_run: false,
        outcome: Some(outcome),
        rollback: Some(RollbackReport {
            plan: rollback_plan,
            dry_run: false,
            outcome: Some(rolled_back),
        }),
    };
    let text = || {
        format!(
            "{}\n{}",
            upgrade(plan, outcome),
            rollback(rollback_plan, rolled_back)
        )
    };
    print(format, &json, text, RunStatus::Failed)
}

/// Prints a rollback's outcome in the chosen format; gives the exit code.
pub fn print_rollback(
    plan: &RollbackPlan,
    outcome: &RollbackOutcome,
    format: OutputFormat,
) -> std::io::Result<u8> {
    let json = RollbackReport {
        plan,
        dry_run: false,
        outcome: Some(outcome),
    };
    print(format, &json, || rollback(plan, outcome), outcome.status)
}

/// Prints a run's report as JSON or as the text `text` makes; the exit code of `status`.
fn print(
    format: OutputFormat,
    json: &impl Serialize,
    text: impl FnOnce() -> String,
    status: RunStatus,
) -> std::io::Result<u8> {
    match format {
        OutputFormat::Json => output::print_json(json)?,
        OutputFormat::Table => output::print_text(&text())?,
    }
    Ok(exit_code(status))
}

/// The run summary for people.
pub fn upgrade(plan: &UpgradePlan, outcome: &Outcome) -> String {
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
            RunStatus::Paused => "paused",
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
        let broker = outcome.broker_unavailable_seconds;
        let waited = if broker > 0.0 {
            format!("; the broker unavailable: {broker:.1}s")
        } else {
            String::new()
        };
        lines.push(match outcome.critical_window_floor_seconds {
            Some(floor) => format!(
                "  {what}: {seconds:.1}s (the services' own stop and start: \
                 {floor:.1}s{waited}; roll: {:.1}s)",
                (seconds - floor - broker).max(0.0)
            ),
            None => format!("  {what}: {seconds:.1}s"),
        });
    }
    if let Some(o) = &outcome.longest_without_consumer {
        lines.push(format!(
            "  longest a queue was without a consumer: {:.1}s ({})",
            o.seconds, o.queue
        ));
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
    lines.extend(failure_lines(plan, outcome));
    lines.push(format!("  journal: {}", outcome.journal));
    lines.join("\n")
}

/// The failures the run went past, its pause, and the failure that stopped it (with the
/// end of its output).
fn failure_lines(plan: &UpgradePlan, outcome: &Outcome) -> Vec<String> {
    let mut out = vec![];
    for f in &outcome.failures {
        out.push(format!(
            "  failed, the run went on: host {} at step {}: {}",
            f.host, f.step, f.detail
        ));
    }
    if outcome.status == RunStatus::Paused {
        out.push(format!(
            "  paused: `roll resume --group {0}` continues, `roll rollback --group {0}` undoes",
            plan.group
        ));
    }
    if let Some(f) = &outcome.failure {
        out.push(format!(
            "  failed: host {} at step {}: {}",
            f.host, f.step, f.detail
        ));
        if let Some(output) = &f.output {
            let tail: Vec<&str> = output.lines().rev().take(10).collect();
            for line in tail.into_iter().rev() {
                out.push(format!("    | {line}"));
            }
        }
    }
    out
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

/// The rollback summary for people.
pub fn rollback(plan: &RollbackPlan, outcome: &RollbackOutcome) -> String {
    let mut lines = vec![format!(
        "Rollback of run {}: {} in {:.1}s",
        plan.rolls_back,
        if outcome.status == RunStatus::Done {
            "done"
        } else {
            "FAILED"
        },
        outcome.elapsed_seconds
    )];
    if let Some(seconds) = outcome.failover_seconds {
        lines.push(format!("  failover time: {seconds:.1}s"));
    }
    if !outcome.queues.is_empty() {
        lines.push(format!("  queues restored: {}", outcome.queues.len()));
        lines.extend(account_lines(&outcome.queues));
    }
    for s in &plan.swaps {
        lines.push(format!("  pair {}: {} is now active", s.pair, s.to));
    }
    if let Some(f) = &outcome.failure {
        lines.push(format!(
            "  failed: host {} at step {}: {}",
            f.host, f.step, f.detail
        ));
    }
    lines.push(format!("  journal: {}", outcome.journal));
    lines.join("\n")
}
