//! Progress as the process's mode shows it ([`crate::terminal::Mode`]): live on a terminal
//! (a line per host of the running wave with its step and time, an overall bar of the hosts
//! through, a bar with a rate for every message move, the critical window's clock while it
//! is open), plain lines elsewhere (one per host and step, as [`super::progress::line`]
//! writes them), or nothing (`--quiet`: the summary says how it ended).
//!
//! Whatever else is written meanwhile (notes, log lines) goes above the live display
//! ([`crate::terminal`]), which is cleared before the summary is printed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressState, ProgressStyle};

use crate::broker::holding;
use crate::engine::{BROKER, Progress, Sink, State};
use crate::terminal::{self, Mode};

/// How often the live lines are redrawn when nothing happens (their clocks).
const TICK: Duration = Duration::from_millis(200);

/// The longest queue name a move's bar shows (the middle of a longer one is left out).
const QUEUE_WIDTH: usize = 48;

/// The sink for a run: `what` it is (`upgrade ops half b`) and how many `hosts` it goes
/// through (the overall bar's length).
pub fn sink(what: &str, hosts: usize) -> Sink {
    match (terminal::mode(), terminal::display()) {
        (Mode::Quiet, _) => Arc::new(|_: &Progress| {}),
        (Mode::Live, Some(multi)) => {
            let display = Mutex::new(Display::new(multi, what, hosts));
            Arc::new(move |p: &Progress| {
                display.lock().unwrap_or_else(|e| e.into_inner()).show(p);
            })
        }
        _ => Arc::new(|p: &Progress| {
            if let Some(line) = super::progress::line(p) {
                crate::output::note(&line);
            }
        }),
    }
}

/// Things done of a known number (the checks of `roll check`): a bar on a terminal, which
/// leaves nothing behind (the table that follows says each); a line for each in plain mode;
/// nothing with `--quiet`.
pub struct Tally {
    bar: Option<ProgressBar>,
}

impl Tally {
    /// A tally of `total` things, `what` they are (`checks`).
    pub fn new(what: &str, total: usize) -> Tally {
        let bar = terminal::display().map(|multi| {
            let bar = multi.add(ProgressBar::new(total as u64));
            bar.set_style(style(
                "{spinner} {prefix} [{bar:30.cyan/blue}] {pos}/{len} {elapsed}  {wide_msg}",
            ));
            bar.set_prefix(what.to_string());
            bar.enable_steady_tick(TICK);
            bar
        });
        Tally { bar }
    }

    /// One more done: `name` on the bar, or `line` in plain mode.
    pub fn one(&self, name: &str, line: &str) {
        match &self.bar {
            Some(bar) => {
                bar.inc(1);
                bar.set_message(format!("last: {name}"));
            }
            None => crate::output::note(line),
        }
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ ")
}

/// The live display of a run.
struct Display {
    multi: MultiProgress,
    /// Hosts done (or failed), of the run's.
    overall: ProgressBar,
    /// A line per host busy with the run (and the broker's while one of its steps runs).
    hosts: BTreeMap<String, ProgressBar>,
    /// Hosts through with the run, and whether they are done (else failed).
    finished: BTreeMap<String, bool>,
    /// A bar per move under way, by its two queues.
    moves: BTreeMap<(String, String), ProgressBar>,
    /// The critical window's clock, while it is open.
    window: Option<ProgressBar>,
}

impl Display {
    fn new(multi: MultiProgress, what: &str, hosts: usize) -> Display {
        let overall = multi.add(ProgressBar::new(hosts as u64));
        overall.set_style(style(
            "{prefix:.bold} [{bar:30.cyan/blue}] {pos}/{len} hosts done  {elapsed_precise}  {msg}",
        ));
        overall.set_prefix(what.to_string());
        overall.enable_steady_tick(TICK);
        Display {
            multi,
            overall,
            hosts: BTreeMap::new(),
            finished: BTreeMap::new(),
            moves: BTreeMap::new(),
            window: None,
        }
    }

    /// The line of a host, made when it first shows.
    fn host(&mut self, name: &str) -> ProgressBar {
        let multi = &self.multi;
        self.hosts
            .entry(name.to_string())
            .or_insert_with(|| {
                let bar = multi.add(ProgressBar::new_spinner());
                bar.set_style(style("  {spinner:.green} {prefix:<10} {msg} ({elapsed})"));
                bar.set_prefix(name.to_string());
                bar.enable_steady_tick(TICK);
                bar
            })
            .clone()
    }

    /// Writes a line above the display.
    fn say(&self, p: &Progress) {
        if let Some(line) = super::progress::line(p) {
            let _ = self.multi.println(crate::redact::text(&line));
        }
    }

    fn show(&mut self, p: &Progress) {
        match &p.state {
            State::Started { deadline } => {
                let text = match deadline {
                    Some(d) => format!(
                        "{} (deadline {})",
                        p.step,
                        crate::units::format_duration(*d)
                    ),
                    None => p.step.clone(),
                };
                let bar = self.host(&p.host);
                bar.reset_elapsed();
                bar.set_message(crate::redact::text(&text).into_owned());
                if is_stop(&p.step) && self.window.is_none() {
                    self.open_window();
                }
            }
            // The host's line has its clock; a move has its bar.
            State::Running { .. } => {}
            State::Done { seconds, .. } => {
                if p.host == BROKER {
                    if let Some(bar) = self.hosts.remove(BROKER) {
                        bar.finish_and_clear();
                    }
                } else {
                    let bar = self.host(&p.host);
                    bar.set_message(format!("{} ok ({seconds:.1}s)", p.step));
                }
                if is_start(&p.step) {
                    self.close_window(&p.host);
                }
            }
            State::HostFinished { ok } => {
                if self.finished.insert(p.host.clone(), *ok).is_none() {
                    self.overall.inc(1);
                }
                if let Some(bar) = self.hosts.remove(&p.host) {
                    bar.finish_and_clear();
                }
                let verdict = if *ok { "done" } else { "FAILED" };
                let _ = self.multi.println(format!("  {:<10} {verdict}", p.host));
                self.refresh();
            }
            State::Moving { messages, from, to } => {
                let bar = self.multi.add(ProgressBar::new(*messages));
                let rate = |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{:.0} messages/s", state.per_sec());
                };
                bar.set_style(
                    style("  {prefix} [{bar:25.green/white}] {pos}/{len} messages, {rate} ({elapsed})")
                        .with_key("rate", rate),
                );
                bar.set_prefix(format!("moving {} -> {}", shown(from), shown(to)));
                bar.enable_steady_tick(TICK);
                let key = (from.clone(), to.clone());
                if let Some(old) = self.moves.insert(key, bar) {
                    old.finish_and_clear();
                }
            }
            State::Moved {
                moved,
                from,
                to,
                done,
            } => {
                let key = (from.clone(), to.clone());
                if let Some(bar) = self.moves.get(&key) {
                    if bar.length().is_some_and(|len| *moved > len) {
                        bar.set_length(*moved);
                    }
                    bar.set_position(*moved);
                }
                if *done && let Some(bar) = self.moves.remove(&key) {
                    bar.finish_and_clear();
                }
            }
            State::Failed { .. } | State::NotStarted { .. } => {
                self.say(p);
                if p.host != BROKER || self.hosts.contains_key(BROKER) {
                    let bar = self.host(&p.host);
                    bar.set_message(format!("{} FAILED", p.step));
                }
            }
            _ => self.say(p),
        }
    }

    fn open_window(&mut self) {
        let bar = self
            .multi
            .insert_after(&self.overall, ProgressBar::new_spinner());
        bar.set_style(style(
            "  {spinner:.red} critical window open: {elapsed_precise}",
        ));
        bar.enable_steady_tick(TICK);
        self.window = Some(bar);
        self.refresh();
    }

    /// The overall bar's words: the window open, hosts failed.
    fn refresh(&self) {
        let mut words = vec![];
        if self.window.is_some() {
            words.push("critical window open".to_string());
        }
        match self.finished.values().filter(|ok| !**ok).count() {
            0 => {}
            failed => words.push(format!("{failed} failed")),
        }
        self.overall.set_message(words.join(", "));
    }

    fn close_window(&mut self, by: &str) {
        if let Some(bar) = self.window.take() {
            let seconds = bar.elapsed().as_secs_f64();
            bar.finish_and_clear();
            let _ = self.multi.println(format!(
                "  critical window closed by {by}'s start after {seconds:.1}s"
            ));
            self.refresh();
        }
    }
}

impl Drop for Display {
    /// The run is over: nothing of it stays drawn.
    fn drop(&mut self) {
        let bars = self.hosts.values().chain(self.moves.values());
        for bar in bars.chain(&self.window).chain([&self.overall]) {
            bar.finish_and_clear();
        }
    }
}

/// A queue's name as a move's bar shows it: `holding` for roll's holding queues, the middle
/// of a long name left out.
fn shown(queue: &str) -> String {
    if holding::is_holding(queue) {
        return "holding".to_string();
    }
    let chars: Vec<char> = queue.chars().collect();
    if chars.len() <= QUEUE_WIDTH {
        return queue.to_string();
    }
    let head: String = chars[..QUEUE_WIDTH / 3].iter().collect();
    let tail: String = chars[chars.len() - (QUEUE_WIDTH - QUEUE_WIDTH / 3 - 1)..]
        .iter()
        .collect();
    format!("{head}…{tail}")
}

/// A step that stops a service: the critical window opens with the first.
fn is_stop(step: &str) -> bool {
    matches!(step, "stop" | "stop (failover)" | "rollback stop")
}

/// A step that starts a service on the release that serves: the window closes with it.
fn is_start(step: &str) -> bool {
    matches!(step, "start" | "failover start" | "start again")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_queue_name_keeps_its_ends() {
        assert_eq!(shown("q.short"), "q.short");
        assert_eq!(shown("roll.hold.20261206T1-ops-1.q.a"), "holding");
        let long = "q_roll-lab.subscribe.pump.rl-px5_rl-px5_12345678_with_more_words";
        let short = shown(long);
        assert_eq!(short.chars().count(), QUEUE_WIDTH);
        assert!(short.starts_with("q_roll-lab.subsc"), "{short}");
        assert!(short.ends_with("12345678_with_more_words"), "{short}");
    }

    /// Without a terminal (the tests), the sink writes plain lines and draws nothing.
    #[test]
    fn without_a_terminal_there_is_no_display() {
        assert!(Tally::new("checks", 3).bar.is_none());
        let sink = sink("upgrade ops half b", 5);
        sink(&Progress {
            elapsed: 1.0,
            host: "px5".into(),
            step: "stop".into(),
            state: State::Started { deadline: None },
        });
        assert!(terminal::display().is_none());
    }
}
