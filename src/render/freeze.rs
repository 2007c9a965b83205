//! Freezes as people read them: the plans of `roll freeze` and `roll unfreeze`, what they
//! did, and the one-line freeze that `status` and `check` add to their summary.

use serde::Serialize;

use crate::freeze::{Freeze, Seen, State};

/// What `roll freeze` and `roll unfreeze` do, and (`--output json`) print.
#[derive(Debug, Clone, Serialize)]
pub struct FreezeReport {
    /// `freeze` or `unfreeze`.
    pub action: &'static str,
    pub group: String,
    /// The freeze queue.
    pub queue: String,
    /// The broker and vhost it lives on.
    pub broker: String,
    pub vhost: String,
    pub dry_run: bool,
    /// True once done (false for a dry run and for the plan shown before approval).
    pub done: bool,
    /// `freeze`: the freeze set; `unfreeze`: the freeze lifted (`None`: not frozen).
    pub freeze: Option<Freeze>,
    /// `freeze`: an expired freeze it replaces.
    pub replaces: Option<Freeze>,
}

/// The plan of `roll freeze`, for people.
pub fn freeze_plan(report: &FreezeReport) -> String {
    let mut text = format!("Freeze of group {}\n", report.group);
    if let Some(freeze) = &report.freeze {
        text.push_str(&format!(
            "  declare the durable queue {} on broker {}, recording:\n    by      {}\n    \
             reason  {:?}\n    since   {} (the time it is set)\n    until   {}\n",
            report.queue,
            report.broker,
            freeze.by,
            freeze.reason,
            freeze.since,
            match &freeze.until {
                Some(until) => until.clone(),
                None => format!("`roll unfreeze --group {}`", report.group),
            }
        ));
    }
    if let Some(old) = &report.replaces {
        text.push_str(&format!("  it replaces the expired freeze: {old}\n"));
    }
    text.push_str(&format!(
        "  while it holds, `roll upgrade --group {0}` is refused (exit 2), on every controller; \
         `roll rollback` and `roll resume` are not",
        report.group
    ));
    text
}

/// The plan of `roll unfreeze`, for people.
pub fn unfreeze_plan(report: &FreezeReport) -> String {
    match &report.freeze {
        Some(freeze) => format!(
            "Unfreeze of group {}\n  delete the queue {} on broker {}: the freeze {}",
            report.group,
            report.queue,
            report.broker,
            freeze.to_string().trim_start_matches("frozen ")
        ),
        None => format!("group {} is not frozen: nothing to do", report.group),
    }
}

/// What a freeze or unfreeze did, for people.
pub fn freeze_done(report: &FreezeReport) -> String {
    match (report.action, &report.freeze) {
        ("freeze", Some(freeze)) => format!("group {}: {freeze}", report.group),
        (_, Some(_)) => format!("group {} is unfrozen", report.group),
        (_, None) => format!("group {} is not frozen: nothing to do", report.group),
    }
}

/// A group's freeze in one line, for the summary of `status` and `check`.
pub fn freeze_line(seen: &Seen) -> String {
    match seen.state {
        State::Frozen => format!(
            "group {} is FROZEN: {}; `roll upgrade` is refused",
            seen.freeze.group, seen.freeze
        ),
        State::Expired => format!(
            "group {}: an expired freeze ({}); it refuses nothing, `roll unfreeze --group {}` \
             removes it",
            seen.freeze.group, seen.freeze, seen.freeze.group
        ),
    }
}

/// A table cell for a freeze: `frozen`, `expired`, or empty.
pub fn freeze_cell(seen: &Option<Seen>) -> String {
    seen.as_ref()
        .map(|s| s.state.to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn freeze() -> Freeze {
        Freeze {
            group: "dev".into(),
            by: "ana@ctl1".into(),
            reason: "the \"big\" release".into(),
            since: "2026-12-02T10:00:00.000Z".into(),
            until: Some("2026-12-02T12:00:00.000Z".into()),
        }
    }

    fn report(action: &'static str, freeze: Option<Freeze>) -> FreezeReport {
        FreezeReport {
            action,
            group: "dev".into(),
            queue: "roll.freeze.dev".into(),
            broker: "roll-lab@127.0.0.1:15672/dev".into(),
            vhost: "dev".into(),
            dry_run: true,
            done: false,
            freeze,
            replaces: None,
        }
    }

    #[test]
    fn the_freeze_plan_says_what_is_recorded_and_what_it_refuses() {
        let text = freeze_plan(&report("freeze", Some(freeze())));
        for part in [
            "Freeze of group dev",
            "durable queue roll.freeze.dev",
            "on broker roll-lab@127.0.0.1:15672/dev",
            "by      ana@ctl1",
            r#"reason  "the \"big\" release""#,
            "until   2026-12-02T12:00:00.000Z",
            "`roll upgrade --group dev` is refused",
        ] {
            assert!(text.contains(part), "{part}:\n{text}");
        }
        let mut open = freeze();
        open.until = None;
        let text = freeze_plan(&report("freeze", Some(open)));
        assert!(
            text.contains("until   `roll unfreeze --group dev`"),
            "{text}"
        );
    }

    #[test]
    fn the_unfreeze_plan_names_the_freeze_it_lifts() {
        let text = unfreeze_plan(&report("unfreeze", Some(freeze())));
        assert!(text.contains("delete the queue roll.freeze.dev"), "{text}");
        assert!(text.contains("the freeze by ana@ctl1"), "{text}");
        let none = unfreeze_plan(&report("unfreeze", None));
        assert_eq!(none, "group dev is not frozen: nothing to do");
    }

    #[test]
    fn status_lines_and_cells_tell_frozen_from_expired() {
        let frozen = Seen {
            freeze: freeze(),
            state: State::Frozen,
        };
        assert!(freeze_line(&frozen).contains("group dev is FROZEN: frozen by ana@ctl1"));
        assert_eq!(freeze_cell(&Some(frozen)), "frozen");
        let expired = Seen {
            freeze: freeze(),
            state: State::Expired,
        };
        assert!(freeze_line(&expired).contains("an expired freeze"));
        assert_eq!(freeze_cell(&Some(expired)), "expired");
        assert_eq!(freeze_cell(&None), "");
    }
}
