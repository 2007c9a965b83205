//! What `roll` shows as it works: live on a terminal (driven here through tmux, a real
//! pseudo-terminal), plain lines when stderr is piped, the summary alone with `--quiet`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{
    EXPIRE, ResetOnDrop, Roll, Traffic, lab, ops_b, require_lab, reset_lab, root, says,
};

/// `roll` running in a terminal of its own: a tmux server of the test's (its socket in a
/// temporary directory), one window of 200 columns by 50 lines; ended when dropped.
struct Terminal {
    socket: PathBuf,
    /// Where the shell writes roll's exit code once it ended.
    code: PathBuf,
    _dir: tempfile::TempDir,
}

/// A word quoted for `sh`.
fn quoted(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

impl Terminal {
    /// Starts `roll` in a new terminal.
    fn start(roll: &Roll) -> Terminal {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("tmux.sock");
        let code = dir.path().join("code");
        let command = roll.command();
        let mut line = vec!["env".to_string()];
        for (key, value) in command.get_envs() {
            let key = key.to_string_lossy();
            match value {
                Some(value) => line.push(quoted(&format!("{key}={}", value.to_string_lossy()))),
                None => line.extend(["-u".to_string(), quoted(&key)]),
            }
        }
        line.push(quoted(&command.get_program().to_string_lossy()));
        line.extend(command.get_args().map(|a| quoted(&a.to_string_lossy())));
        // The window stays once roll ended, for its last screen to be read.
        let shell = format!(
            "{}; echo $? > {}; exec sleep 3600",
            line.join(" "),
            quoted(&code.display().to_string())
        );
        let terminal = Terminal {
            socket,
            code,
            _dir: dir,
        };
        let started = terminal
            .tmux()
            .args(["new-session", "-d", "-x", "200", "-y", "50", "-c"])
            .arg(root())
            .arg(&shell)
            .status()
            .expect("tmux runs");
        assert!(started.success(), "tmux did not start: {shell}");
        terminal
    }

    /// tmux, talking to this terminal's server (no configuration file read).
    fn tmux(&self) -> Command {
        let mut tmux = Command::new("tmux");
        tmux.arg("-f")
            .arg("/dev/null")
            .arg("-S")
            .arg(&self.socket)
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        tmux
    }

    /// The text of the screen now, row by row, without colours; `all`: with every line that
    /// scrolled off it, a line wrapped over several rows joined. (Not on the live screen:
    /// a live display fills each of its rows to the last column and goes on to the next
    /// without a newline, as a wrapped line would.)
    fn capture(&self, all: bool) -> String {
        let mut tmux = self.tmux();
        tmux.args(["capture-pane", "-p"]);
        if all {
            tmux.args(["-J", "-S", "-", "-E", "-"]);
        }
        let out = tmux.output().expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Reads the screen every 100 ms until `roll` ends (within `limit`); its exit code,
    /// every screen seen, and everything it wrote in the end.
    fn watch(&self, limit: Duration) -> Watched {
        let since = Instant::now();
        let mut screens: Vec<String> = vec![];
        loop {
            let screen = self.capture(false);
            if screens.last() != Some(&screen) {
                screens.push(screen);
            }
            if let Some(code) = std::fs::read_to_string(&self.code)
                .ok()
                .and_then(|c| c.trim().parse().ok())
            {
                return Watched {
                    code,
                    screens,
                    end: self.capture(true),
                };
            }
            assert!(
                since.elapsed() < limit,
                "roll ran over {limit:?}; its screen:\n{}",
                self.capture(true)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.tmux().arg("kill-server").status();
    }
}

/// What a terminal showed of a run.
#[derive(Debug)]
struct Watched {
    code: i32,
    /// Each different screen, in order.
    screens: Vec<String>,
    /// The whole text once roll ended (the lines that scrolled off the screen too).
    end: String,
}

impl Watched {
    /// Every line any screen showed, once, in the order first seen (for failure messages).
    fn lines(&self) -> String {
        let mut seen = std::collections::BTreeSet::new();
        let mut out = String::new();
        for line in self.screens.iter().flat_map(|s| s.lines()) {
            if !line.trim().is_empty() && seen.insert(line) {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// The lines of any screen that `is` says yes to.
    fn seen(&self, is: impl Fn(&str) -> bool) -> Vec<String> {
        let lines = self.screens.iter().flat_map(|s| s.lines());
        lines.filter(|l| is(l)).map(str::to_string).collect()
    }
}

/// A host's live line: its spinner, its name, its step, its time (`⠋ px5 stop (3s)`).
fn host_line(line: &str, hosts: &[String]) -> bool {
    let words: Vec<&str> = line.split_whitespace().collect();
    words.len() >= 4
        && is_spinner(words[0])
        && hosts.iter().any(|h| h == words[1])
        && line.trim_end().ends_with("s)")
}

/// A spinner's frame (braille dots).
fn is_spinner(word: &str) -> bool {
    let mut chars = word.chars();
    chars
        .next()
        .is_some_and(|c| ('\u{2800}'..='\u{28ff}').contains(&c))
        && chars.next().is_none()
}

/// A move's bar: `moving q -> holding [███░░] 5000/20000 messages, 7000 messages/s (1s)`.
fn move_line(line: &str) -> bool {
    line.trim_start().starts_with("moving ")
        && line.contains(" -> ")
        && line.contains('[')
        && line.contains(" messages, ")
        && line.contains(" messages/s")
}

/// What only a live display draws: bars, spinners.
fn drawn(text: &str) -> bool {
    text.chars()
        .any(|c| matches!(c, '█' | '░') || ('\u{2800}'..='\u{28ff}').contains(&c))
}

/// The lines of a text in which `word` stands as a word of its own.
fn lines_with_word(text: &str, word: &str) -> Vec<String> {
    text.lines()
        .filter(|l| {
            l.split(|c: char| !(c.is_alphanumeric() || c == '-' || c == '_' || c == '.'))
                .any(|w| w == word)
        })
        .map(str::to_string)
        .collect()
}

/// `roll check` on a terminal: each host once, in the table (its progress leaves nothing
/// behind). It used to print a line for each check on stderr, then the table.
#[test]
fn check_on_a_terminal_shows_each_host_once() {
    require_lab();
    let terminal = Terminal::start(&Roll::check().group("ops"));
    let run = terminal.watch(Duration::from_secs(120));
    assert_eq!(run.code, 0, "{}", run.end);
    assert!(run.end.contains("11 of 11 reachable"), "{}", run.end);
    for host in lab().hosts("ops") {
        let lines = lines_with_word(&run.end, &host);
        assert_eq!(lines.len(), 1, "{host}: {lines:#?}\n{}", run.end);
        assert!(
            lines[0].contains('│'),
            "{host} not in a table row: {lines:?}"
        );
    }
    assert!(!drawn(&run.end), "{}", run.end);
}

/// Ops' traffic (100 messages a second) and 20,000 messages waiting in px5's own queue,
/// shown by the broker: the upgrade's hold of it moves them while its subscriber runs.
fn traffic_and_backlog(dir: &Path, prefix: &str) -> Traffic {
    let queue = crate::backlog::px5_queue();
    let traffic = Traffic::start(dir, prefix, 100);
    let ids = dir.join(format!("{prefix}-backlog.ids"));
    crate::backlog::publish_into(&queue, 20_000, &ids);
    crate::backlog::until_shown(&queue, 10_000);
    traffic
}

/// The upgrade of ops half b to the queue-changing release (a critical window), the five
/// hosts at once.
fn upgrade(state: &Path) -> Roll {
    Roll::upgrade("ops", "b")
        .state(state)
        .playbook(EXPIRE)
        .yes()
        .skip_promotion_check()
        .parallel(5)
}

/// The first line of the upgrade's summary.
const SUMMARY: &str = "Upgrade of ops half b to metpx-sr3";

/// The same upgrade of ops half b under traffic, with a backlog to move, three times: on a
/// terminal it shows a line per host with its step and time, a bar for the move with its
/// rate, the hosts done of the half, the critical window's clock, then nothing of that but
/// the summary; piped, only plain lines (no bar, no escape); with `--quiet` on a terminal,
/// the summary alone.
#[test]
fn serial_live_progress_on_a_terminal_plain_lines_piped_the_summary_alone_when_quiet() {
    require_lab();
    let _reset = ResetOnDrop;
    let dir = tempfile::tempdir().expect("temp dir");
    let hosts = ops_b();

    // On a terminal.
    let state = dir.path().join("live");
    let traffic = traffic_and_backlog(dir.path(), "live");
    let terminal = Terminal::start(&upgrade(&state));
    let live = terminal.watch(Duration::from_secs(300));
    drop(traffic);
    drop(terminal);
    assert_eq!(live.code, 0, "{}", live.end);
    let host_lines = live.seen(|l| host_line(l, &hosts));
    let shown: std::collections::BTreeSet<&str> = host_lines
        .iter()
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert_eq!(
        shown.len(),
        hosts.len(),
        "{shown:?}:\n{}\nin the end:\n{}",
        live.lines(),
        live.end
    );
    let moves = live.seen(move_line);
    assert!(!moves.is_empty(), "no move's bar in:\n{}", live.lines());
    let overall = live.seen(|l| l.starts_with("upgrade ops half b [") && l.contains("hosts done"));
    assert!(
        overall
            .iter()
            .any(|l| l.contains(&format!("0/{} hosts done", hosts.len()))),
        "{overall:#?}"
    );
    let window = live.seen(|l| l.contains("critical window open: 00:"));
    assert!(!window.is_empty(), "no critical window's clock");
    assert!(live.end.contains(SUMMARY), "{}", live.end);
    assert!(
        live.end.contains("critical window closed by"),
        "{}",
        live.end
    );
    // Nothing drawn stays: the summary follows what was printed above the display.
    assert!(!drawn(&live.end), "{}", live.end);
    eprintln!(
        "on a terminal: {} screens, {} host lines, {} move bars",
        live.screens.len(),
        host_lines.len(),
        moves.len()
    );
    reset_lab();

    // Piped: the plain lines, one per host and step.
    let state = dir.path().join("piped");
    let traffic = traffic_and_backlog(dir.path(), "piped");
    let piped = upgrade(&state).run();
    drop(traffic);
    assert_eq!(piped.code, 0, "{piped:#?}");
    assert!(!piped.stderr.contains('\u{1b}'), "{}", piped.stderr);
    assert!(!drawn(&piped.stderr), "{}", piped.stderr);
    for host in &hosts {
        for step in ["stop", "start"] {
            assert!(
                piped.stderr.lines().any(|l| says(l, &[host, step, "ok"])),
                "{host} {step}: {}",
                piped.stderr
            );
        }
    }
    for line in piped.stderr.lines().filter(|l| l.starts_with('[')) {
        let time = line.split(']').next().unwrap_or_default();
        assert!(time.trim_end().ends_with('s'), "{line}");
    }
    assert!(piped.stdout.contains(SUMMARY), "{}", piped.stdout);
    reset_lab();

    // --quiet, on a terminal: the summary alone.
    let state = dir.path().join("quiet");
    let traffic = traffic_and_backlog(dir.path(), "quiet");
    let terminal = Terminal::start(&upgrade(&state).arg("--quiet"));
    let quiet = terminal.watch(Duration::from_secs(300));
    drop(traffic);
    drop(terminal);
    assert_eq!(quiet.code, 0, "{}", quiet.end);
    for screen in &quiet.screens {
        assert!(!drawn(screen), "{screen}");
    }
    let lines: Vec<&str> = quiet.end.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        lines.first().is_some_and(|l| l.starts_with(SUMMARY)),
        "{}",
        quiet.end
    );
    // The summary as the piped run printed it, line for line (each line's first word, up to
    // its first dot or colon: the numbers and the queues' names are the run's own).
    let summary: Vec<&str> = piped
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with(SUMMARY))
        .filter(|l| !l.trim().is_empty())
        .collect();
    let shape = |l: &str| -> String {
        let word = l.split_whitespace().next().unwrap_or_default();
        word.split(['.', ':', '_'])
            .next()
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(
        lines.iter().map(|l| shape(l)).collect::<Vec<_>>(),
        summary.iter().map(|l| shape(l)).collect::<Vec<_>>(),
        "quiet:\n{}\npiped:\n{}",
        quiet.end,
        piped.stdout
    );
}
