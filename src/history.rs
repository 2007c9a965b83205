//! What each run of a group did, read back from its journal: the rows of `roll history` and
//! the facts `roll report` starts from. Read-only; a journal's torn last line is ignored as
//! [`journal::read`] ignores it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::inventory::Half;
use crate::journal::{self, Entry, Event, JournalError, QueueAccount, RunKind};
use crate::step::Step;

/// One run, as its journal tells it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunRecord {
    pub run_id: String,
    /// `None`: the journal records no start (a run killed before its plan was written).
    pub kind: Option<RunKind>,
    pub half: Option<Half>,
    pub playbook: String,
    pub version: String,
    pub operator: String,
    /// RFC 3339.
    pub started: String,
    #[serde(skip)]
    pub started_ms: u64,
    /// From the start to the last end recorded (resumes included); `None` while unfinished.
    pub duration_seconds: Option<f64>,
    /// `done`, `partial`, `failed`, `paused`, or `unfinished` (no end recorded since its
    /// start or its last resume: killed, or still running).
    pub status: String,
    /// The critical window, when the run had one.
    pub critical_window_seconds: Option<f64>,
    /// Queues recreated (or, by a rollback, restored).
    pub queues_recreated: usize,
    /// Messages put into the new queues (their own and those published meanwhile).
    pub messages_moved: u64,
    /// Messages the broker deleted with a queue (only with `--allow-message-loss`).
    pub messages_lost: u64,
    /// The steps that failed and never succeeded later in the run: `host: step: detail`.
    pub failures: Vec<String>,
    /// The journal file.
    pub journal: PathBuf,
}

/// The group's runs, newest first.
pub fn runs(state_dir: &Path, group: &str) -> Result<Vec<RunRecord>, JournalError> {
    let mut records = Vec::new();
    for path in journal::runs(state_dir, group)? {
        let entries = journal::read(&path)?;
        records.push(record(&entries, &path));
    }
    records.sort_by(|a, b| {
        b.started_ms
            .cmp(&a.started_ms)
            .then_with(|| b.run_id.cmp(&a.run_id))
    });
    Ok(records)
}

/// The record of one run from its entries.
pub fn record(entries: &[Entry], path: &Path) -> RunRecord {
    let mut r = RunRecord {
        run_id: path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
        kind: None,
        half: None,
        playbook: String::new(),
        version: String::new(),
        operator: String::new(),
        started: String::new(),
        started_ms: entries.first().map_or(0, |e| e.at_ms),
        duration_seconds: None,
        status: "unfinished".into(),
        critical_window_seconds: None,
        queues_recreated: 0,
        messages_moved: 0,
        messages_lost: 0,
        failures: Vec::new(),
        journal: path.to_path_buf(),
    };
    let mut accounts: BTreeMap<String, QueueAccount> = BTreeMap::new();
    // The last outcome of each host's step: a failure retried with success is not one.
    let mut outcome: BTreeMap<(String, Step), Option<String>> = BTreeMap::new();
    let mut order: Vec<(String, Step)> = Vec::new();
    for entry in entries {
        match &entry.event {
            Event::Started {
                run_id,
                kind,
                half,
                playbook,
                version,
                operator,
                ..
            } => {
                r.run_id = run_id.clone();
                r.kind = Some(*kind);
                r.half = *half;
                r.playbook = playbook.clone();
                r.version = version.clone();
                r.operator = operator.clone();
                r.started = entry.at.clone();
                r.started_ms = entry.at_ms;
            }
            Event::StepFinished {
                host,
                step,
                ok,
                detail,
                ..
            } => {
                let key = (host.clone(), step.clone());
                if !outcome.contains_key(&key) {
                    order.push(key.clone());
                }
                let failed = (!ok).then(|| format!("{host}: {step}: {}", first_line(detail)));
                outcome.insert(key, failed);
            }
            Event::Measured { what, seconds, .. } if what == "critical-window" => {
                r.critical_window_seconds = Some(*seconds);
            }
            Event::Accounted(account) => {
                accounts.insert(account.queue.clone(), account.clone());
            }
            Event::Finished { status, .. } => {
                r.status = status.as_str().to_string();
                r.duration_seconds = Some(entry.at_ms.saturating_sub(r.started_ms) as f64 / 1000.0);
            }
            Event::Resumed { .. } => {
                r.status = "unfinished".into();
                r.duration_seconds = None;
            }
            _ => {}
        }
    }
    r.queues_recreated = accounts.len();
    r.messages_moved = accounts.values().map(|a| a.moved_in).sum();
    r.messages_lost = accounts.values().map(|a| a.lost).sum();
    r.failures = order
        .into_iter()
        .filter_map(|key| outcome.remove(&key).flatten())
        .collect();
    r
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{Journal, RunStatus};

    fn started(run_id: &str, kind: RunKind, half: Half) -> Event {
        Event::Started {
            run_id: run_id.into(),
            kind,
            group: "ops".into(),
            half: Some(half),
            playbook: "sr3-queue-expire".into(),
            playbook_path: "playbooks/sr3-queue-expire.toml".into(),
            package: "metpx-sr3".into(),
            version: "3.3.1".into(),
            operator: "ana@ctl1".into(),
            controller: "ctl1".into(),
            pid: 1,
            skip_promotion_check: false,
            plan: serde_json::json!({}),
        }
    }

    fn finished(host: &str, step: Step, ok: bool, detail: &str) -> Event {
        Event::StepFinished {
            host: host.into(),
            step,
            ok,
            detail: detail.into(),
            output: None,
        }
    }

    #[test]
    fn runs_newest_first_with_their_window_accounts_and_lasting_failures() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = Journal::create(dir.path(), "ops", "r1").unwrap();
        for event in [
            started("r1", RunKind::Upgrade, Half::B),
            finished("px5", Step::Stop, false, "timed out\nmore"),
            finished("px6", Step::Stop, false, "refused"),
            Event::Finished {
                status: RunStatus::Failed,
                summary: "px5 failed".into(),
            },
            Event::Resumed {
                pid: 2,
                operator: "ana@ctl1".into(),
            },
            finished("px5", Step::Stop, true, "stopped"),
            Event::Measured {
                what: "critical-window".into(),
                seconds: 5.5,
                detail: String::new(),
            },
            Event::Accounted(QueueAccount {
                queue: "q1".into(),
                preserved: true,
                before: 10,
                moved_out: 10,
                moved_in: 14,
                ..QueueAccount::default()
            }),
            Event::Accounted(QueueAccount {
                queue: "q2".into(),
                moved_in: 1,
                lost: 3,
                ..QueueAccount::default()
            }),
            Event::Finished {
                status: RunStatus::Partial,
                summary: String::new(),
            },
        ] {
            first.append(event).unwrap();
        }
        let mut second = Journal::create(dir.path(), "ops", "r2").unwrap();
        second
            .append(started("r2", RunKind::Rollback, Half::B))
            .unwrap();
        let runs = runs(dir.path(), "ops").unwrap();
        let ids: Vec<&str> = runs.iter().map(|r| r.run_id.as_str()).collect();
        assert_eq!(ids, ["r2", "r1"]);
        let (r2, r1) = (&runs[0], &runs[1]);
        assert_eq!(r2.status, "unfinished");
        assert_eq!(r2.kind, Some(RunKind::Rollback));
        assert_eq!(r2.duration_seconds, None);
        assert_eq!(r1.status, "partial");
        assert_eq!(r1.kind, Some(RunKind::Upgrade));
        assert_eq!(r1.half, Some(Half::B));
        assert_eq!(r1.operator, "ana@ctl1");
        assert_eq!(r1.critical_window_seconds, Some(5.5));
        assert_eq!(r1.queues_recreated, 2);
        assert_eq!(r1.messages_moved, 15);
        assert_eq!(r1.messages_lost, 3);
        // px5's stop failed, then succeeded on the resume: only px6's failure lasts.
        assert_eq!(r1.failures, ["px6: stop: refused"]);
        assert!(r1.duration_seconds.is_some());
    }
}

/// A step of a host as a bar of the timeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bar {
    pub step: String,
    pub from_ms: u64,
    /// `None`: never finished (the run was killed or is still running there).
    pub to_ms: Option<u64>,
    /// `None` while unfinished.
    pub ok: Option<bool>,
    /// `stop` (the host's service stopped by it), `start`, or `step`.
    pub kind: &'static str,
}

/// One row of the timeline: a host (or the broker) and its steps in order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Lane {
    pub host: String,
    pub bars: Vec<Bar>,
    /// From its stop to the end of its start (ms since the epoch), when it stopped.
    pub stopped: Option<(u64, Option<u64>)>,
}

/// A failed step with its output.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Failure {
    pub host: String,
    pub step: String,
    pub at: String,
    pub detail: String,
    pub output: Option<String>,
}

/// A span of time (ms since the epoch) with its length.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Span {
    pub from_ms: u64,
    pub to_ms: u64,
    pub seconds: f64,
}

/// Everything `roll report` shows of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunDetail {
    #[serde(flatten)]
    pub record: RunRecord,
    pub group: String,
    /// The plan as approved (the journal's copy).
    pub plan: serde_json::Value,
    /// From the first entry to the last.
    pub start_ms: u64,
    pub end_ms: u64,
    /// The hosts in the order they first acted, the broker's own steps first.
    pub lanes: Vec<Lane>,
    /// The critical window as the run measured it.
    pub window: Option<Span>,
    /// What happened to each recreated queue's messages.
    pub queues: Vec<QueueAccount>,
    /// Every failed step, retried later or not.
    pub failures: Vec<Failure>,
}

/// The steps that stop and start the services, by kind of run (those the engine measures
/// its windows with).
pub fn stops_and_starts(kind: Option<RunKind>) -> (Vec<Step>, Vec<Step>) {
    match kind {
        Some(RunKind::Rollback) => (
            vec![Step::RollbackStop],
            vec![Step::FailoverStart, Step::StartAgain],
        ),
        _ => (vec![Step::Stop, Step::StopFailover], vec![Step::Start]),
    }
}

/// The detail of one run from its entries; `window` is the engine's measure of its
/// critical window (a span), read from the same entries.
pub fn detail(entries: &[Entry], path: &Path, window: Option<(u64, u64)>) -> RunDetail {
    let record = record(entries, path);
    let (stops, starts) = stops_and_starts(record.kind);
    let mut group = String::new();
    let mut plan = serde_json::Value::Null;
    let mut lanes: Vec<Lane> = Vec::new();
    let mut failures = Vec::new();
    let mut accounts: BTreeMap<String, QueueAccount> = BTreeMap::new();
    for entry in entries {
        match &entry.event {
            Event::Started {
                group: g, plan: p, ..
            } => {
                group = g.clone();
                plan = p.clone();
            }
            Event::StepStarted { host, step } => {
                let kind = if stops.contains(step) {
                    "stop"
                } else if starts.contains(step) {
                    "start"
                } else {
                    "step"
                };
                let lane = lane_mut(&mut lanes, host);
                lane.bars.push(Bar {
                    step: step.to_string(),
                    from_ms: entry.at_ms,
                    to_ms: None,
                    ok: None,
                    kind,
                });
                if kind == "stop" && lane.stopped.is_none() {
                    lane.stopped = Some((entry.at_ms, None));
                }
            }
            Event::StepFinished {
                host,
                step,
                ok,
                detail,
                output,
            } => {
                let name = step.to_string();
                let lane = lane_mut(&mut lanes, host);
                if let Some(bar) = lane
                    .bars
                    .iter_mut()
                    .rev()
                    .find(|b| b.step == name && b.to_ms.is_none())
                {
                    bar.to_ms = Some(entry.at_ms);
                    bar.ok = Some(*ok);
                }
                if starts.contains(step)
                    && *ok
                    && let Some((from, None)) = lane.stopped
                {
                    lane.stopped = Some((from, Some(entry.at_ms)));
                }
                if !ok {
                    failures.push(Failure {
                        host: host.clone(),
                        step: name,
                        at: entry.at.clone(),
                        detail: detail.clone(),
                        output: output.clone(),
                    });
                }
            }
            Event::Accounted(account) => {
                accounts.insert(account.queue.clone(), account.clone());
            }
            _ => {}
        }
    }
    // The broker's lane first, then the hosts in the order they first acted.
    lanes.sort_by_key(|l| l.host != BROKER_LANE);
    let start_ms = entries.first().map_or(0, |e| e.at_ms);
    let end_ms = entries.last().map_or(start_ms, |e| e.at_ms);
    RunDetail {
        record,
        group,
        plan,
        start_ms,
        end_ms,
        lanes,
        window: window.map(|(from_ms, to_ms)| Span {
            from_ms,
            to_ms,
            seconds: to_ms.saturating_sub(from_ms) as f64 / 1000.0,
        }),
        queues: accounts.into_values().collect(),
        failures,
    }
}

/// The journal's name for the group's broker (steps done on the broker, not on a host).
const BROKER_LANE: &str = "broker";

fn lane_mut<'a>(lanes: &'a mut Vec<Lane>, host: &str) -> &'a mut Lane {
    let index = match lanes.iter().position(|l| l.host == host) {
        Some(i) => i,
        None => {
            lanes.push(Lane {
                host: host.to_string(),
                bars: Vec::new(),
                stopped: None,
            });
            lanes.len() - 1
        }
    };
    &mut lanes[index]
}
