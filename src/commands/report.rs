//! `roll report`: one run as a self-contained HTML page (or its data as JSON), from its
//! journal.

use std::path::{Path, PathBuf};

use crate::engine::timing;
use crate::error::Error;
use crate::exit;
use crate::history::{self, RunDetail};
use crate::inventory::Inventory;
use crate::journal::{self, RunKind};
use crate::output::{self, OutputFormat};
use crate::plan::rollback::RollbackPlan;
use crate::plan::upgrade::UpgradePlan;

/// Which run, and where the page goes.
#[derive(Debug, Clone)]
pub struct Settings {
    /// A run id; `None` with `last`.
    pub run: Option<String>,
    /// The group's last run (with `group`).
    pub last: bool,
    pub group: Option<String>,
    /// Write the page here (default: stdout).
    pub to: Option<PathBuf>,
    pub state_dir: PathBuf,
    pub output: OutputFormat,
}

/// Runs `roll report`: the page (or, with `--output json`, its data) of one run.
pub fn run(inventory: &Inventory, settings: &Settings) -> Result<u8, Error> {
    let path = journal_of(inventory, settings)?;
    let entries = journal::read(&path)?;
    let detail = detail(&entries, &path);
    let bytes = match settings.output {
        OutputFormat::Json => {
            let mut value = serde_json::to_value(&detail).map_err(std::io::Error::other)?;
            crate::redact::value(&mut value);
            let mut text = serde_json::to_string_pretty(&value).map_err(std::io::Error::other)?;
            text.push('\n');
            text
        }
        OutputFormat::Table => {
            crate::redact::text(&crate::render::report::html(&detail, &plan_text(&detail)))
                .into_owned()
        }
    };
    match &settings.to {
        None => output::write_stdout(bytes.as_bytes())?,
        Some(to) => {
            std::fs::write(to, bytes.as_bytes())?;
            output::note(&format!(
                "report of run {} written to {}",
                detail.record.run_id,
                to.display()
            ));
        }
    }
    Ok(exit::SUCCESS)
}

/// The run's detail, with its critical window measured as the engine measures it.
fn detail(entries: &[journal::Entry], path: &Path) -> RunDetail {
    let record = history::record(entries, path);
    let (stops, starts) = history::stops_and_starts(record.kind);
    let t = timing::timing(timing::since_restored(entries), &stops, &starts);
    let two_phase = entries.iter().any(
        |e| matches!(&e.event, journal::Event::Started { plan, .. } if plan["two_phase"] == true),
    );
    let span = if two_phase || record.kind == Some(RunKind::Rollback) {
        t.group_span
    } else {
        t.longest_host()
            .and_then(|(host, ..)| t.host_spans.get(&host).copied())
    };
    history::detail(entries, path, span)
}

/// The plan as it was shown for approval; its JSON when this version cannot read it.
fn plan_text(detail: &RunDetail) -> String {
    let plan = detail.plan.clone();
    match detail.record.kind {
        Some(RunKind::Upgrade) => match serde_json::from_value::<UpgradePlan>(plan) {
            Ok(p) => crate::render::upgrade_plan(&p),
            Err(_) => serde_json::to_string_pretty(&detail.plan).unwrap_or_default(),
        },
        Some(RunKind::Rollback) => match serde_json::from_value::<RollbackPlan>(plan) {
            Ok(p) => crate::render::rollback_plan(&p),
            Err(_) => serde_json::to_string_pretty(&detail.plan).unwrap_or_default(),
        },
        None => "(no plan: the journal records no start)".to_string(),
    }
}

/// The journal of the run asked for: by id in any group's journals, or the group's last.
fn journal_of(inventory: &Inventory, settings: &Settings) -> Result<PathBuf, Error> {
    if settings.last {
        let Some(group) = &settings.group else {
            return Err(Error::Usage("--last needs --group".into()));
        };
        let groups = super::select_groups(inventory, Some(group))?;
        let name = groups.first().map_or(group.as_str(), |g| g.name.as_str());
        return journal::last_run(&settings.state_dir, name)?
            .filter(|p| p.exists())
            .ok_or_else(|| Error::Usage(format!("group {name} has no run yet")));
    }
    let Some(run) = &settings.run else {
        return Err(Error::Usage(
            "give a run id (roll history lists them) or --last --group G".into(),
        ));
    };
    if run.contains('/') || run.contains("..") || run.is_empty() {
        return Err(Error::Usage(format!("{run:?} is not a run id")));
    }
    let groups = match &settings.group {
        Some(g) => super::select_groups(inventory, Some(g))?,
        None => super::select_groups(inventory, None)?,
    };
    for g in groups {
        let path = journal::group_dir(&settings.state_dir, &g.name)
            .join("runs")
            .join(format!("{run}.jsonl"));
        if path.exists() {
            return Ok(path);
        }
    }
    Err(Error::Usage(format!(
        "no run {run} in {} (roll history --group G lists a group's runs)",
        settings.state_dir.display()
    )))
}
