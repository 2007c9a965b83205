//! The engine's progress as lines on stderr: one per host and step.

use crate::engine::{Progress, State};

/// The line for one piece of progress; `None` for what plain lines leave out (a step's
/// start, a move's count, a host's end: the lines of its steps say them).
pub fn line(p: &Progress) -> Option<String> {
    Some(format!(
        "[{:>6.1}s] {:<10} {:<18} {}",
        p.elapsed,
        p.host,
        p.step,
        state(&p.state)?
    ))
}

fn state(state: &State) -> Option<String> {
    Some(match state {
        State::Started { .. } | State::HostFinished { .. } | State::Moved { .. } => return None,
        State::Running {
            seconds,
            deadline,
            doing,
        } => {
            let mut text = format!("still running after {seconds:.0}s");
            if let Some(deadline) = deadline {
                let deadline = crate::units::format_duration(*deadline);
                text.push_str(&format!(" (deadline {deadline})"));
            }
            if let Some(doing) = doing {
                text.push_str(&format!(": {doing}"));
            }
            text
        }
        State::Skipped => "done before, skipped".into(),
        State::NotStarted { why } => format!("not started: {why}"),
        State::Done { seconds, detail } if detail.is_empty() => format!("ok ({seconds:.1}s)"),
        State::Done { seconds, detail } => format!("ok ({seconds:.1}s): {detail}"),
        State::NotRecorded { why } => format!("done, not recorded: {why}"),
        State::Failed {
            seconds: Some(seconds),
            why,
        } => format!("FAILED ({seconds:.1}s): {why}"),
        State::Failed { seconds: None, why } => format!("FAILED: {why}"),
        State::WaitingForBroker { why } => format!("broker unavailable ({why}): waiting for it"),
        State::BrokerBack { through: None } => "the broker answers again: trying again".into(),
        State::BrokerBack {
            through: Some(nodes),
        } => format!("the broker answers again through {nodes}: trying again"),
        State::LockRetaken { seconds, reason } => {
            format!("taken again after {seconds:.1}s ({reason})")
        }
        State::Moving { messages, from, to } => format!("{messages} messages {from} -> {to}"),
        State::Note(text) => text.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(state: State) -> String {
        line_of(state).expect("a line")
    }

    fn line_of(state: State) -> Option<String> {
        line(&Progress {
            elapsed: 12.34,
            host: "px5".into(),
            step: "recreate q.a".into(),
            state,
        })
    }

    #[test]
    fn lines_read_as_before() {
        assert_eq!(
            at(State::Done {
                seconds: 1.25,
                detail: String::new()
            }),
            "[  12.3s] px5        recreate q.a       ok (1.2s)"
        );
        assert_eq!(
            at(State::Failed {
                seconds: Some(0.5),
                why: "exit 1".into()
            }),
            "[  12.3s] px5        recreate q.a       FAILED (0.5s): exit 1"
        );
        assert!(at(State::Skipped).ends_with("done before, skipped"));
        assert_eq!(line_of(State::Started { deadline: None }), None);
        assert_eq!(line_of(State::HostFinished { ok: true }), None);
        let moved = State::Moved {
            moved: 5,
            from: "q.a".into(),
            to: "h".into(),
            done: true,
        };
        assert_eq!(line_of(moved), None);
        assert!(
            at(State::Running {
                seconds: 20.2,
                deadline: Some(std::time::Duration::from_secs(600)),
                doing: None,
            })
            .ends_with("recreate q.a       still running after 20s (deadline 10m)")
        );
        assert!(
            at(State::Running {
                seconds: 30.0,
                deadline: Some(std::time::Duration::from_secs(80)),
                doing: Some("12000 of 20000 messages moved q.a -> h".into()),
            })
            .ends_with(
                "still running after 30s (deadline 80s): 12000 of 20000 messages moved q.a -> h"
            )
        );
        assert!(
            at(State::Running {
                seconds: 10.0,
                deadline: None,
                doing: None,
            })
            .ends_with("recreate q.a       still running after 10s")
        );
    }
}
