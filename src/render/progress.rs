//! The engine's progress as lines on stderr: one per host and step.

use crate::engine::{Progress, Sink, State};

/// The line for one piece of progress.
pub fn line(p: &Progress) -> String {
    format!(
        "[{:>6.1}s] {:<10} {:<18} {}",
        p.elapsed,
        p.host,
        p.step,
        state(&p.state)
    )
}

fn state(state: &State) -> String {
    match state {
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
    }
}

/// The sink the commands give the engine: each piece of progress as a line on stderr.
pub fn to_stderr() -> Sink {
    std::sync::Arc::new(|p: &Progress| crate::output::note(&line(p)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(state: State) -> String {
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
    }
}
