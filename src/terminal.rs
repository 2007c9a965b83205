//! stderr as roll writes on it: how progress is shown (live on a terminal, plain lines, or
//! nothing but the summary and errors), and every line written there (notes, log lines,
//! errors) printed above the live display, never through it. The display is cleared before a
//! result is printed on stdout ([`clear`]), so that the two never mix on one terminal.
//!
//! The mode is set once per process ([`set_mode`], from the command line); the library's
//! other callers (the tests) get plain lines.

use std::io::Write;
use std::sync::{Mutex, OnceLock};

use indicatif::{MultiProgress, ProgressDrawTarget};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Bars and a line per host, redrawn in place (stderr is a terminal).
    Live,
    /// One line per host and step, as they happen.
    Plain,
    /// Only the summary (stdout) and errors.
    Quiet,
}

impl Mode {
    /// The mode for a process: `--quiet` wins; then `--no-progress`, a stderr that is not a
    /// terminal, or a `TERM` that is unset, empty or `dumb`, give plain lines; else live.
    pub fn choose(
        quiet: bool,
        no_progress: bool,
        stderr_is_terminal: bool,
        term: Option<&str>,
    ) -> Mode {
        let dumb = term.is_none_or(|t| t.is_empty() || t == "dumb");
        if quiet {
            Mode::Quiet
        } else if no_progress || dumb || !stderr_is_terminal {
            Mode::Plain
        } else {
            Mode::Live
        }
    }
}

static MODE: OnceLock<Mode> = OnceLock::new();

/// The live display while one is drawn.
static DISPLAY: Mutex<Option<MultiProgress>> = Mutex::new(None);

/// Sets the process's mode (the first call wins).
pub fn set_mode(mode: Mode) {
    let _ = MODE.set(mode);
}

/// The process's mode (plain when never set).
pub fn mode() -> Mode {
    MODE.get().copied().unwrap_or(Mode::Plain)
}

/// The live display, made when first asked for: `None` unless the mode is [`Mode::Live`].
pub fn display() -> Option<MultiProgress> {
    if mode() != Mode::Live {
        return None;
    }
    let mut display = DISPLAY.lock().unwrap_or_else(|e| e.into_inner());
    Some(
        display
            .get_or_insert_with(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()))
            .clone(),
    )
}

/// Clears the live display, if one is drawn, and stops drawing it (bars still held somewhere
/// are never drawn again): before a result is printed, and at the end.
pub fn clear() {
    let taken = DISPLAY.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(display) = taken {
        let _ = display.clear();
        display.set_draw_target(ProgressDrawTarget::hidden());
    }
}

/// Writes a line (or several) on stderr, above the live display when one is drawn.
fn write(text: &str) {
    let text = text.strip_suffix('\n').unwrap_or(text);
    let display = DISPLAY.lock().unwrap_or_else(|e| e.into_inner()).clone();
    match display {
        Some(display) => {
            let _ = display.println(text);
        }
        None => {
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "{text}");
        }
    }
}

/// A line for the operator (progress, notes): not in [`Mode::Quiet`]. Already masked.
pub fn note(text: &str) {
    if mode() != Mode::Quiet {
        write(text);
    }
}

/// An error, or a log line (whose level `RUST_LOG` chose): in every mode. Already masked.
pub fn error(text: &str) {
    write(text);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mode_follows_the_flags_the_terminal_and_term() {
        let xterm = Some("xterm-256color");
        assert_eq!(Mode::choose(false, false, true, xterm), Mode::Live);
        assert_eq!(Mode::choose(true, false, true, xterm), Mode::Quiet);
        assert_eq!(Mode::choose(true, true, false, None), Mode::Quiet);
        assert_eq!(Mode::choose(false, true, true, xterm), Mode::Plain);
        assert_eq!(Mode::choose(false, false, false, xterm), Mode::Plain);
        assert_eq!(Mode::choose(false, false, true, Some("dumb")), Mode::Plain);
        assert_eq!(Mode::choose(false, false, true, Some("")), Mode::Plain);
        assert_eq!(Mode::choose(false, false, true, None), Mode::Plain);
    }

    #[test]
    fn without_a_mode_there_is_no_live_display() {
        assert_eq!(mode(), Mode::Plain);
        assert!(display().is_none());
    }
}
