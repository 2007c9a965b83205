//! How long services were stopped, read from the journal (so that a resumed run measures what
//! its earlier processes did too).

use std::collections::BTreeMap;

use crate::journal::{Entry, Event};
use crate::step::Step;

/// When the services stopped and started again.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Timing {
    /// From the first stop to the end of the first start, in seconds.
    pub group_window: Option<f64>,
    /// From each host's stop to the end of its start.
    pub host_windows: BTreeMap<String, f64>,
    /// How long each host's stop command took.
    pub stop_seconds: BTreeMap<String, f64>,
    /// How long each host's start command took.
    pub start_seconds: BTreeMap<String, f64>,
    /// The group's window, from..to (ms since the epoch).
    pub group_span: Option<(u64, u64)>,
    /// Each host's window, from..to.
    pub host_spans: BTreeMap<String, (u64, u64)>,
    /// When the broker did not answer (from..to), as the run measured it.
    pub unavailable: Vec<(u64, u64)>,
}

/// The entries after the last time a failover put the untouched half back in service: a
/// resumed run's critical window starts again there.
pub fn since_restored(entries: &[Entry]) -> &[Entry] {
    match entries
        .iter()
        .rposition(|e| matches!(e.event, Event::ServiceRestored { .. }))
    {
        Some(at) => &entries[at + 1..],
        None => entries,
    }
}

/// Reads the stops (`stop_steps`) and starts (`start_steps`) of the journal's entries.
pub fn timing(entries: &[Entry], stop_steps: &[Step], start_steps: &[Step]) -> Timing {
    let mut began: BTreeMap<(&str, &Step), u64> = BTreeMap::new();
    let mut stopped_at: BTreeMap<String, u64> = BTreeMap::new();
    let mut started_at: BTreeMap<String, u64> = BTreeMap::new();
    let mut timing = Timing::default();
    let seconds = |from: u64, to: u64| to.saturating_sub(from) as f64 / 1000.0;
    for entry in entries {
        match &entry.event {
            Event::StepStarted { host, step } => {
                if stop_steps.contains(step) {
                    stopped_at.entry(host.clone()).or_insert(entry.at_ms);
                }
                if stop_steps.contains(step) || start_steps.contains(step) {
                    began.insert((host.as_str(), step), entry.at_ms);
                }
            }
            Event::Measured { what, seconds, .. } if what == BROKER_UNAVAILABLE => {
                let from = entry.at_ms.saturating_sub((seconds * 1000.0) as u64);
                timing.unavailable.push((from, entry.at_ms));
            }
            // The lock's connection went when the broker did, and came back with it.
            Event::LockRetaken {
                seconds,
                lost_at_ms,
                ..
            } if *lost_at_ms > 0 => {
                let to = lost_at_ms + (seconds * 1000.0) as u64;
                timing.unavailable.push((*lost_at_ms, to));
            }
            Event::StepFinished {
                host,
                step,
                ok: true,
                ..
            } => {
                let Some(from) = began.get(&(host.as_str(), step)).copied() else {
                    continue;
                };
                if stop_steps.contains(step) {
                    timing
                        .stop_seconds
                        .insert(host.clone(), seconds(from, entry.at_ms));
                } else if start_steps.contains(step) {
                    timing
                        .start_seconds
                        .insert(host.clone(), seconds(from, entry.at_ms));
                    started_at.entry(host.clone()).or_insert(entry.at_ms);
                }
            }
            _ => {}
        }
    }
    for (host, start) in &started_at {
        if let Some(stop) = stopped_at.get(host) {
            timing
                .host_windows
                .insert(host.clone(), seconds(*stop, *start));
            timing.host_spans.insert(host.clone(), (*stop, *start));
        }
    }
    if let (Some(stop), Some(start)) = (stopped_at.values().min(), started_at.values().min()) {
        timing.group_window = Some(seconds(*stop, *start));
        timing.group_span = Some((*stop, *start));
    }
    timing
}

/// Each host's stop plus start, in seconds, as measured by the newest of the group's runs
/// (at most the last `RUNS_READ`) that stopped and started it: what a plan expects its next
/// stop to take. A journal that cannot be read is skipped (this is an estimate).
pub fn measured_stops(state_dir: &std::path::Path, group: &str) -> BTreeMap<String, f64> {
    const RUNS_READ: usize = 5;
    let stops = [Step::Stop, Step::StopFailover, Step::RollbackStop];
    let starts = [
        Step::Start,
        Step::StartFailover,
        Step::FailoverStart,
        Step::StartAgain,
    ];
    let mut measured = BTreeMap::new();
    let runs = crate::journal::runs(state_dir, group).unwrap_or_default();
    for path in runs.iter().rev().take(RUNS_READ) {
        let Ok(entries) = crate::journal::read_without_plans(path) else {
            continue;
        };
        let t = timing(&entries, &stops, &starts);
        for (host, stop) in &t.stop_seconds {
            if let Some(start) = t.start_seconds.get(host) {
                measured.entry(host.clone()).or_insert(stop + start);
            }
        }
    }
    measured
}

/// What the journal calls a time the broker did not answer (a `measured` event).
pub const BROKER_UNAVAILABLE: &str = "broker-unavailable";

impl Timing {
    /// How long the broker did not answer within `span` (seconds); overlapping measures of
    /// the same outage (a step's wait, the lock's loss) count once.
    pub fn unavailable_within(&self, span: Option<(u64, u64)>) -> f64 {
        let Some((from, to)) = span else {
            return 0.0;
        };
        let mut cut: Vec<(u64, u64)> = self
            .unavailable
            .iter()
            .map(|(a, b)| (*a.max(&from), *b.min(&to)))
            .filter(|(a, b)| a < b)
            .collect();
        cut.sort_unstable();
        let mut total = 0;
        let mut reach = from;
        for (a, b) in cut {
            let a = a.max(reach);
            if b > a {
                total += b - a;
                reach = b;
            }
        }
        total as f64 / 1000.0
    }

    /// The slowest stop plus the start of `first` (the canary): what the services
    /// themselves take of a group's window.
    pub fn group_floor(&self, first: Option<&str>) -> Option<f64> {
        let slowest = self.stop_seconds.values().copied().reduce(f64::max)?;
        Some(slowest + *self.start_seconds.get(first?)?)
    }

    /// The host stopped longest, its window, and its own stop plus start.
    pub fn longest_host(&self) -> Option<(String, f64, Option<f64>)> {
        let (host, window) = self.host_windows.iter().max_by(|a, b| a.1.total_cmp(b.1))?;
        let floor = self
            .stop_seconds
            .get(host)
            .zip(self.start_seconds.get(host))
            .map(|(a, b)| a + b);
        Some((host.clone(), *window, floor))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64, event: Event) -> Entry {
        Entry {
            seq: 0,
            at_ms: ms,
            at: String::new(),
            event,
        }
    }

    fn started(ms: u64, host: &str, step: &str) -> Entry {
        at(
            ms,
            Event::StepStarted {
                host: host.into(),
                step: step.into(),
            },
        )
    }

    fn finished(ms: u64, host: &str, step: &str, ok: bool) -> Entry {
        at(
            ms,
            Event::StepFinished {
                host: host.into(),
                step: step.into(),
                ok,
                detail: String::new(),
                output: None,
            },
        )
    }

    /// The broker away for `seconds`, measured at `ms`.
    fn unavailable(ms: u64, seconds: f64) -> Entry {
        at(
            ms,
            Event::Measured {
                what: BROKER_UNAVAILABLE.into(),
                seconds,
                detail: String::new(),
            },
        )
    }

    #[test]
    fn windows_run_from_the_first_stop_to_the_end_of_the_first_start() {
        let entries = vec![
            started(1_000, "px5", "stop"),
            started(1_200, "px1", "stop (failover)"),
            finished(3_000, "px5", "stop", true),
            finished(5_200, "px1", "stop (failover)", true),
            started(8_000, "px5", "start"),
            finished(9_500, "px5", "start", true),
            started(9_600, "px6", "stop"),
            finished(9_700, "px6", "stop", true),
            started(9_800, "px6", "start"),
            finished(9_900, "px6", "start", false),
            started(10_000, "px6", "start"),
            finished(12_000, "px6", "start", true),
        ];
        let t = timing(&entries, &[Step::Stop, Step::StopFailover], &[Step::Start]);
        assert_eq!(t.group_window, Some(8.5));
        assert_eq!(t.group_span, Some((1_000, 9_500)));
        assert_eq!(t.host_windows["px5"], 8.5);
        assert_eq!(t.host_windows["px6"], 2.4);
        assert!(!t.host_windows.contains_key("px1"));
        assert_eq!(t.stop_seconds["px1"], 4.0);
        assert_eq!(t.start_seconds["px6"], 2.0);
        // The slowest stop (px1, 4 s) plus the canary's start (px5, 1.5 s).
        assert_eq!(t.group_floor(Some("px5")), Some(5.5));
        assert_eq!(t.group_floor(None), None);
        assert_eq!(t.longest_host(), Some(("px5".to_string(), 8.5, Some(3.5))));
    }

    #[test]
    fn a_window_after_a_failover_is_measured_from_the_service_restored() {
        let entries = vec![
            started(1_000, "px1", "stop (failover)"),
            finished(3_000, "px1", "stop (failover)", true),
            at(
                60_000,
                Event::ServiceRestored {
                    by: "failover".into(),
                },
            ),
            started(90_000, "px1", "stop (failover)"),
            finished(92_000, "px1", "stop (failover)", true),
            started(93_000, "px5", "start"),
            finished(94_000, "px5", "start", true),
        ];
        let t = timing(
            since_restored(&entries),
            &[Step::Stop, Step::StopFailover],
            &[Step::Start],
        );
        assert_eq!(t.group_window, Some(4.0));
    }

    #[test]
    fn the_broker_unavailable_inside_a_window_is_counted() {
        let entries = vec![
            started(1_000, "px5", "stop"),
            finished(2_000, "px5", "stop", true),
            unavailable(6_000, 3.0),
            started(8_000, "px5", "start"),
            finished(9_000, "px5", "start", true),
            unavailable(20_000, 2.0),
        ];
        let mut entries = entries;
        // The same outage as the lock saw it, longer: counted once.
        entries.push(at(
            7_000,
            Event::LockRetaken {
                reason: "shutdown".into(),
                seconds: 4.5,
                lost_at_ms: 2_500,
            },
        ));
        let t = timing(&entries, &[Step::Stop], &[Step::Start]);
        assert_eq!(t.unavailable_within(t.group_span), 4.5);
        assert_eq!(t.unavailable_within(t.host_spans.get("px5").copied()), 4.5);
        assert_eq!(t.unavailable_within(None), 0.0);
    }

    #[test]
    fn nothing_stopped_means_no_window() {
        let t = timing(&[started(1, "px5", "start")], &[Step::Stop], &[Step::Start]);
        assert_eq!(t, Timing::default());
    }
}
