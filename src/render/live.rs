//! How progress is shown: live on a terminal (a line per host of the running wave with its
//! step and time, an overall bar, a bar with a rate for every message move, the critical
//! window's clock), plain lines elsewhere (one per host and step, as [`super::progress::line`]
//! writes them), or nothing but the summary and errors (`--quiet`).
//!
//! The mode is decided once per process ([`set_mode`]); everything roll writes on stderr
//! (notes, log lines, progress) goes through [`note`], which prints above the live display
//! without tearing it.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::engine::{Progress, Sink, State};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Bars and per-host lines redrawn in place (stderr is a terminal).
    Live,
    /// One line per host and step.
    Plain,
    /// Only the summary and errors.
    Quiet,
}

impl Mode {
    /// The mode for this process: `--quiet` wins; then `--no-progress`, a stderr that is not a
    /// terminal or `TERM=dumb` (or unset) give plain lines; else live.
    pub fn choose(quiet: bool, no_progress: bool) -> Mode {
        let dumb = std::env::var("TERM").map_or(true, |t| t.is_empty() || t == "dumb");
        if quiet {
            Mode::Quiet
        } else if no_progress || dumb || !std::io::stderr().is_terminal() {
            Mode::Plain
        } else {
            Mode::Live
        }
    }
}

static MODE: OnceLock<Mode> = OnceLock::new();
static LIVE: OnceLock<MultiProgress> = OnceLock::new();

/// Sets the process's mode (once; later calls are ignored).
pub fn set_mode(mode: Mode) {
    let _ = MODE.set(mode);
}

/// The process's mode (plain when never set: the library's callers and the tests).
pub fn mode() -> Mode {
    MODE.get().copied().unwrap_or(Mode::Plain)
}

/// The live display, once one is drawn.
fn live() -> Option<&'static MultiProgress> {
    LIVE.get()
}

/// Writes a line on stderr: above the live display when there is one. Secrets are masked
/// by the caller ([`crate::output::note`]).
pub fn note(text: &str) {
    match live() {
        Some(multi) => {
            let _ = multi.println(text);
        }
        None => {
            use std::io::Write;
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "{text}");
        }
    }
}

/// The sink a command gives the engine, for `hosts` hosts (the overall bar's length).
pub fn sink(hosts: usize) -> Sink {
    match mode() {
        Mode::Quiet => Arc::new(|_: &Progress| {}),
        Mode::Plain => Arc::new(|p: &Progress| {
            if let Some(line) = super::progress::line(p) {
                crate::output::note(&line);
            }
        }),
        Mode::Live => {
            let display = Arc::new(Mutex::new(Display::new(hosts)));
            Arc::new(move |p: &Progress| {
                if let Ok(mut d) = display.lock() {
                    d.show(p);
                }
            })
        }
    }
}

/// Clears the live display (before the summary is printed).
pub fn finish() {
    if let Some(multi) = live() {
        let _ = multi.clear();
    }
}

/// The live display's state.
struct Display {
    multi: MultiProgress,
    overall: ProgressBar,
    hosts: BTreeMap<String, ProgressBar>,
    /// Hosts whose last step so far failed or which finished.
    finished: BTreeMap<String, bool>,
    moves: BTreeMap<String, ProgressBar>,
    window: Option<ProgressBar>,
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
}

impl Display {
    fn new(hosts: usize) -> Display {
        let multi = LIVE
            .get_or_init(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()))
            .clone();
        let overall = multi.add(ProgressBar::new(hosts as u64));
        overall.set_style(style(
            "{prefix:.bold} [{bar:30.cyan/blue}] {pos}/{len} hosts  {elapsed}  {msg}",
        ));
        overall.set_prefix("upgrade");
        overall.enable_steady_tick(Duration::from_millis(200));
        Display {
            multi,
            overall,
            hosts: BTreeMap::new(),
            finished: BTreeMap::new(),
            moves: BTreeMap::new(),
            window: None,
        }
    }

    fn host(&mut self, name: &str) -> &ProgressBar {
        let multi = &self.multi;
        self.hosts.entry(name.to_string()).or_insert_with(|| {
            let bar = multi.add(ProgressBar::new_spinner());
            bar.set_style(style("  {spinner} {prefix:<10} {msg} ({elapsed})"));
            bar.set_prefix(name.to_string());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        })
    }

    fn show(&mut self, p: &Progress) {
        match &p.state {
            State::Started { deadline } => {
                let text = match deadline {
                    Some(d) => format!("{} (deadline {})", p.step, crate::units::format_duration(*d)),
                    None => p.step.clone(),
                };
                let bar = self.host(&p.host).clone();
                bar.reset_elapsed();
                bar.set_message(text);
                if is_stop(&p.step) && self.window.is_none() {
                    self.open_window();
                }
            }
            State::Running { .. } => {}
            State::Done { seconds, .. } => {
                let bar = self.host(&p.host).clone();
                bar.set_message(format!("{} ok ({seconds:.1}s)", p.step));
                if is_start(&p.step) {
                    self.close_window(&p.host);
                }
            }
            State::HostFinished { ok } => {
                if self.finished.insert(p.host.clone(), *ok).is_none() {
                    self.overall.inc(1);
                }
                if let Some(bar) = self.hosts.remove(&p.host) {
                    let verdict = if *ok { "done" } else { "FAILED" };
                    bar.finish_and_clear();
                    let _ = self.multi.println(format!("  {:<10} {verdict}", p.host));
                }
            }
            State::Moving { messages, from, to } => {
                let bar = self.multi.add(ProgressBar::new(*messages));
                bar.set_style(style(
                    "  {prefix} [{bar:25.green/white}] {pos}/{len} messages, {per_sec}",
                ));
                bar.set_prefix(format!("{from} -> {to}"));
                self.moves.insert(format!("{from}\u{0}{to}"), bar);
            }
            State::Moved { moved, from, to, done } => {
                let key = format!("{from}\u{0}{to}");
                if let Some(bar) = self.moves.get(&key) {
                    bar.set_position(*moved);
                    if *done {
                        bar.finish_and_clear();
                        self.moves.remove(&key);
                    }
                }
            }
            State::Failed { .. } | State::NotStarted { .. } => {
                if let Some(line) = super::progress::line(p) {
                    let _ = self.multi.println(line);
                }
                let bar = self.host(&p.host).clone();
                bar.set_message(format!("{} FAILED", p.step));
            }
            _ => {
                if let Some(line) = super::progress::line(p) {
                    let _ = self.multi.println(line);
                }
            }
        }
    }

    fn open_window(&mut self) {
        let bar = self.multi.insert(1, ProgressBar::new_spinner());
        bar.set_style(style("  critical window open: {elapsed_precise} {msg}"));
        bar.enable_steady_tick(Duration::from_millis(100));
        self.window = Some(bar);
        self.overall.set_message("critical window open");
    }

    fn close_window(&mut self, by: &str) {
        if let Some(bar) = &self.window
            && !bar.is_finished()
        {
            let seconds = bar.elapsed().as_secs_f64();
            bar.finish_and_clear();
            let _ = self
                .multi
                .println(format!("  critical window closed by {by}'s start after {seconds:.1}s"));
            self.overall.set_message("");
        }
    }
}

/// A step that stops a host's service (the critical window opens with the first).
fn is_stop(step: &str) -> bool {
    step == "stop" || step == "stop (failover)"
}

/// A step that starts a host's service on the new release.
fn is_start(step: &str) -> bool {
    step == "start"
}
