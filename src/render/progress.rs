//! The engine's progress as lines on stderr: one per host and step.

use crate::engine::{Progress, Sink, State};

/// The line for one piece of progress; `None` for what plain lines leave out (a step's
/// start, a move's count before its end, a host's end: the lines of its steps say it).
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
        State::Started { .. } | State::HostFinished { .. } => return None,
        State::Moved { done: false, .. } => return None,
        State::Moved {
            moved, from, to, ..
        } => format!("{moved} messages moved {from} -> {to}"),
        State::Running {
            seconds,
            deadline: Some(deadline),
        } => format!(
            "still running after {seconds:.0}s (deadline {})",
            crate::units::format_duration(*deadline)
        ),
        State::Running {
            seconds,
            deadline: None,
        } => format!("still running after {seconds:.0}s"),
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
        State::BrokerBack => "the broker answers again: trying again".into(),
        State::LockRetaken { seconds, reason } => {
            format!("taken again after {seconds:.1}s ({reason})")
        }
        State::Moving { messages, from, to } => format!("{messages} messages {from} -> {to}"),
        State::Note(text) => text.clone(),
    })
}

/// The sink the commands give the engine, as the process's mode shows progress (see
/// [`super::live`]); `hosts`: the hosts of the run, for the overall bar.
pub fn to_stderr_for(hosts: usize) -> Sink {
    super::live::sink(hosts)
}

/// [`to_stderr_for`] when the number of hosts is not known.
pub fn to_stderr() -> Sink {
    super::live::sink(0)
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
        assert!(
            at(State::Running {
                seconds: 20.2,
                deadline: Some(std::time::Duration::from_secs(600))
            })
            .ends_with("recreate q.a       still running after 20s (deadline 10m)")
        );
    }
}
