//! The journal: what a run planned, did and backed up, append-only, one JSON object a line,
//! flushed to disk (fsync) at every event, so that a SIGKILL at any point loses nothing a
//! resume or a rollback needs. A torn last line (a crash in the middle of a write) is ignored
//! when reading.
//!
//! Group commit: an entry is durable before [`Journal::append`] returns, or before the wait
//! of [`Journal::write`]'s [`Pending`] does. Entries written while another one's flush runs
//! wait for the next flush, which covers them all (one `fdatasync` makes every line written
//! before it durable): the many hosts of a run share their flushes, and no entry is ever
//! reported durable before a flush that began after it was written has ended.
//!
//! Layout under the state directory:
//! `groups/<group>/runs/<run-id>.jsonl`, and `groups/<group>/last` naming the latest run.
//! Every password `roll` read is replaced by `***` in each value of an entry before the entry
//! is serialised (see [`crate::redact`]).
//!
//! A write that fails (a full disk, a file size limit) is undone: the file is cut back to its
//! last whole line, so that it stays readable and the next entry starts a line of its own.
//! The caller gets the error and does not do what the entry would have recorded.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::clock;
use crate::inventory::Half;
use crate::step::Step;

/// An error reading or writing the journal, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("journal {}:{line}: {message}", path.display())]
    Corrupt {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// One line of the journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Position in the run, from 1.
    pub seq: u64,
    /// Milliseconds since the epoch.
    pub at_ms: u64,
    /// RFC 3339, for people reading the file.
    pub at: String,
    #[serde(flatten)]
    pub event: Event,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    /// The run started, with the plan it executes.
    Started {
        run_id: String,
        kind: RunKind,
        group: String,
        half: Option<Half>,
        playbook: String,
        playbook_path: String,
        package: String,
        version: String,
        operator: String,
        controller: String,
        pid: u32,
        skip_promotion_check: bool,
        plan: Value,
    },
    /// A step began on a host (or on the group's broker: host `-`).
    StepStarted { host: String, step: Step },
    /// A step ended.
    StepFinished {
        host: String,
        step: Step,
        ok: bool,
        detail: String,
        /// The commands' full output, when any ran.
        output: Option<String>,
    },
    /// Something saved before it is changed.
    Backup { host: String, item: Backup },
    /// A measured interval (the critical window, a failover).
    Measured {
        what: String,
        seconds: f64,
        detail: String,
    },
    /// The run ended.
    Finished { status: RunStatus, summary: String },
    /// The run was resumed by another process.
    Resumed { pid: u32, operator: String },
    /// A holding queue (with its exchanges) is about to be made for `queue`: named here
    /// before it exists, so that it is never left behind unrecorded.
    Hold {
        queue: String,
        holding: String,
        exchange: String,
        alternate: String,
        /// The holding queue's type (absent in journals of older versions).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        kind: Option<crate::broker::equivalence::QueueType>,
    },
    /// A step done before must be done again: what it did was undone (the failover stopped a
    /// host it started, put back a queue it recreated). Written before the undoing begins.
    Undone {
        host: String,
        step: Step,
        why: String,
    },
    /// A failover put the untouched half back in service: the critical window of a resumed
    /// run is measured from here on.
    ServiceRestored { by: String },
    /// The group's lock was lost (a broker restart) and taken again by this run, after it
    /// checked that nobody else ran on the group meanwhile.
    LockRetaken {
        reason: String,
        seconds: f64,
        /// When it was lost (ms since the epoch): the broker was away from then on.
        #[serde(default)]
        lost_at_ms: u64,
    },
    /// Messages moved from one queue to another (each confirmed on `to` before it was
    /// acknowledged on `from`).
    Moved {
        by: RunKind,
        queue: String,
        from: String,
        to: String,
        /// Messages on `from` when the move began.
        before: u64,
        moved: u64,
        /// Messages `from` had delivered before (the broker's flag; not duplicates).
        redelivered: u64,
        /// Messages in flight when the move failed: each may now be on both queues.
        #[serde(default)]
        uncertain: u64,
        /// Messages the failed move left on both queues for sure, for the next move to
        /// remove from `from` without storing them again.
        #[serde(default)]
        on_both: u64,
        /// Messages of an earlier failed move so removed.
        #[serde(default)]
        absorbed: u64,
        seconds: f64,
    },
    /// A queue deleted with its messages (only with `--allow-message-loss`).
    Dropped {
        by: RunKind,
        queue: String,
        messages: u64,
    },
    /// What happened to the messages of a recreated queue.
    Accounted(QueueAccount),
}

/// The messages of one recreated queue, from the journal's moves.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QueueAccount {
    pub queue: String,
    /// False with `--allow-message-loss` (deleted with its messages, as by hand).
    pub preserved: bool,
    /// Messages in the queue when it was taken out of service.
    pub before: u64,
    /// Moved from the queue into its holding queue.
    pub moved_out: u64,
    /// Moved from the holding queue into the new queue (its messages, and those published
    /// while the queue was being recreated).
    pub moved_in: u64,
    /// Messages put twice into a queue by roll, as far as known: 0 unless a move was cut
    /// short, and then at most this many (see `duplicates_known`).
    pub duplicated: u64,
    /// False when `duplicated` is an upper bound (a move was cut short: the messages in
    /// flight may be on both queues), true when it is exact.
    #[serde(default = "yes")]
    pub duplicates_known: bool,
    /// Messages the broker deleted with the queue.
    pub lost: u64,
    /// From the stop of its last consumer to the start of its first new one.
    pub without_consumer_seconds: Option<f64>,
}

fn yes() -> bool {
    true
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunStatus {
    Done,
    Partial,
    Failed,
    /// Ended at a wave boundary as asked (`--pause-after`): `roll resume` continues.
    Paused,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Done => "done",
            RunStatus::Partial => "partial",
            RunStatus::Failed => "failed",
            RunStatus::Paused => "paused",
        }
    }
}

/// What a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunKind {
    Upgrade,
    Rollback,
}

impl std::fmt::Display for RunKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RunKind::Upgrade => "upgrade",
            RunKind::Rollback => "rollback",
        })
    }
}

/// Where a run stands, as its journal shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RunState {
    /// Its end is recorded.
    Ended(RunStatus),
    /// No end recorded (killed, or resumed since its last end).
    #[default]
    Interrupted,
}

impl std::fmt::Display for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RunState::Ended(status) => status.as_str(),
            RunState::Interrupted => "interrupted",
        })
    }
}

/// A backup, written before the thing is touched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Backup {
    /// The package version installed before the upgrade.
    Version { version: String },
    /// A file about to be replaced (`content` is `None` when it did not exist; base64
    /// when `base64`, for a file that is not UTF-8 text).
    File {
        path: String,
        content: Option<String>,
        mode: Option<u32>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        base64: bool,
    },
    /// A queue about to be recreated: its definition, bindings and message count.
    Queue {
        name: String,
        durable: bool,
        auto_delete: bool,
        arguments: std::collections::BTreeMap<String, Value>,
        bindings: Vec<crate::broker::management::BindingInfo>,
        messages: u64,
    },
}

impl Backup {
    /// The backup of a file: its bytes (as text when they are UTF-8) and mode, or that it
    /// did not exist.
    pub fn file(path: String, content: Option<Vec<u8>>, mode: Option<u32>) -> Backup {
        use base64::Engine as _;
        let (content, base64) = match content.map(String::from_utf8) {
            None => (None, false),
            Some(Ok(text)) => (Some(text), false),
            Some(Err(bytes)) => (
                Some(base64::engine::general_purpose::STANDARD.encode(bytes.into_bytes())),
                true,
            ),
        };
        Backup::File {
            path,
            content,
            mode,
            base64,
        }
    }

    /// A file backup's bytes (`None`: it did not exist) and mode; `None` for another backup
    /// or unreadable base64.
    pub fn file_content(&self) -> Option<(Option<Vec<u8>>, Option<u32>)> {
        use base64::Engine as _;
        let Backup::File {
            content,
            mode,
            base64,
            ..
        } = self
        else {
            return None;
        };
        let bytes = match (content, base64) {
            (None, _) => None,
            (Some(text), false) => Some(text.clone().into_bytes()),
            (Some(text), true) => Some(
                base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .ok()?,
            ),
        };
        Some((bytes, *mode))
    }
}

/// An open journal of one run.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
    seq: u64,
    /// Bytes of whole lines written: where the file is cut back to after a failed write.
    len: u64,
    /// Set when a failed write could not be undone: nothing more is appended.
    broken: Option<String>,
    /// What is on disk, shared with the entries waiting for it.
    flushes: Arc<Flushes>,
}

/// The journal's flushes (group commit): how much of the file is written and how much is
/// durable, and one flush at a time.
#[derive(Debug)]
struct Flushes {
    path: PathBuf,
    /// The journal's file (its own descriptor): flushed without the journal's lock, so that
    /// entries are written while a flush runs.
    file: File,
    /// Bytes of whole lines written.
    written: AtomicU64,
    /// Bytes known to be on disk.
    durable: AtomicU64,
    /// Flushes made (`fdatasync` calls), for the tests.
    #[cfg(test)]
    made: AtomicU64,
    /// One flush at a time; the entries written meanwhile wait here for the next one.
    turn: tokio::sync::Mutex<()>,
    /// A flush failed: what it covered may not be on disk, and a later flush cannot tell
    /// (the kernel reports a writeback error once). Nothing more is reported durable.
    failed: AtomicBool,
}

impl Flushes {
    fn new(path: &Path, file: &File, len: u64) -> Result<Arc<Flushes>, JournalError> {
        Ok(Arc::new(Flushes {
            path: path.to_path_buf(),
            file: file.try_clone().map_err(io(path))?,
            written: AtomicU64::new(len),
            durable: AtomicU64::new(len),
            #[cfg(test)]
            made: AtomicU64::new(0),
            turn: tokio::sync::Mutex::new(()),
            failed: AtomicBool::new(false),
        }))
    }

    fn error(&self, why: String) -> JournalError {
        JournalError::Io {
            path: self.path.clone(),
            source: std::io::Error::other(why),
        }
    }

    /// Returns once the first `upto` bytes of the file are on disk: at once when a flush
    /// that began after they were written has ended, else after one more flush (which
    /// covers every line written before it begins).
    async fn reach(&self, upto: u64) -> Result<(), JournalError> {
        if self.failed.load(Ordering::Acquire) {
            return Err(self.error("an earlier flush failed".into()));
        }
        if self.durable.load(Ordering::Acquire) >= upto {
            return Ok(());
        }
        let _turn = self.turn.lock().await;
        if self.failed.load(Ordering::Acquire) {
            return Err(self.error("an earlier flush failed".into()));
        }
        if self.durable.load(Ordering::Acquire) >= upto {
            return Ok(());
        }
        // Every line written before the flush begins is covered by it.
        let target = self.written.load(Ordering::Acquire);
        #[cfg(test)]
        self.made.fetch_add(1, Ordering::Relaxed);
        match self.file.sync_data() {
            Ok(()) => {
                self.durable.fetch_max(target, Ordering::AcqRel);
                Ok(())
            }
            Err(source) => {
                self.failed.store(true, Ordering::Release);
                Err(JournalError::Io {
                    path: self.path.clone(),
                    source,
                })
            }
        }
    }
}

/// An entry written to the journal's file and not yet known to be on disk:
/// [`Pending::durable`] waits until it is.
#[derive(Debug)]
#[must_use = "an entry is durable only once its wait has returned"]
pub struct Pending {
    upto: u64,
    flushes: Arc<Flushes>,
}

impl Pending {
    /// Returns once the entry is on disk (sharing the flush with the entries written
    /// meanwhile); an error when the flush failed.
    pub async fn durable(self) -> Result<(), JournalError> {
        self.flushes.reach(self.upto).await
    }
}

/// The directory of a group's journals.
pub fn group_dir(state_dir: &Path, group: &str) -> PathBuf {
    state_dir.join("groups").join(group)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Journal {
    /// Creates the journal of a new run and points the group's `last` at it.
    pub fn create(state_dir: &Path, group: &str, run_id: &str) -> Result<Journal, JournalError> {
        let dir = group_dir(state_dir, group).join("runs");
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        let path = dir.join(format!("{run_id}.jsonl"));
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        sync_dir(&dir)?;
        set_last(state_dir, group, run_id)?;
        let flushes = Flushes::new(&path, &file, 0)?;
        Ok(Journal {
            path,
            file,
            seq: 0,
            len: 0,
            broken: None,
            flushes,
        })
    }

    /// Opens an existing run's journal to append to it (a resume). A torn last line, the
    /// remains of a write cut short by a crash, is cut off first, as a write-ahead log does.
    pub fn reopen(path: &Path) -> Result<Journal, JournalError> {
        let entries = read(path)?;
        let bytes = fs::read(path).map_err(io(path))?;
        let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(io(path))?;
        if complete < bytes.len() {
            file.set_len(complete as u64).map_err(io(path))?;
            file.sync_data().map_err(io(path))?;
        }
        let flushes = Flushes::new(path, &file, complete as u64)?;
        Ok(Journal {
            path: path.to_path_buf(),
            file,
            seq: entries.last().map_or(0, |e| e.seq),
            len: complete as u64,
            broken: None,
            flushes,
        })
    }

    /// The journal's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `Ok(Ok(()))` when no other process wrote to this run's journal or started another run
    /// of the group since this one last wrote; else what it found.
    pub fn untouched(&self) -> Result<Result<(), String>, JournalError> {
        let now = fs::metadata(&self.path).map_err(io(&self.path))?.len();
        if now != self.len {
            return Ok(Err(format!(
                "another process wrote to its journal {}",
                self.path.display()
            )));
        }
        let run = self
            .path
            .file_stem()
            .map(|s| s.to_string_lossy().to_string());
        let last = self
            .path
            .parent()
            .and_then(Path::parent)
            .map(|group| group.join("last"));
        if let (Some(run), Some(last)) = (run, last) {
            let named = fs::read_to_string(&last).map_err(io(&last))?;
            if named.trim() != run {
                return Ok(Err(format!(
                    "another run ({}) started on the group",
                    named.trim()
                )));
            }
        }
        Ok(Ok(()))
    }

    /// Appends an event and flushes it to disk before returning. On failure nothing of the
    /// entry stays in the file.
    pub fn append(&mut self, event: Event) -> Result<Entry, JournalError> {
        let (entry, line) = self.line(event)?;
        self.put(&line, true)?;
        Ok(entry)
    }

    /// Writes an event to the file (one whole line) without waiting for the disk: the entry
    /// is durable once the returned [`Pending`] says so, which is what a step waits for
    /// before it acts. Many entries written by concurrent hosts share one flush. A failed
    /// write leaves nothing of the entry in the file.
    pub fn write(&mut self, event: Event) -> Result<Pending, JournalError> {
        let (_, line) = self.line(event)?;
        self.put(&line, false)?;
        Ok(Pending {
            upto: self.len,
            flushes: Arc::clone(&self.flushes),
        })
    }

    /// The next entry for `event`, and its line: every password masked (see
    /// [`crate::redact`]), keys in order.
    fn line(&self, event: Event) -> Result<(Entry, String), JournalError> {
        if let Some(why) = &self.broken {
            return Err(JournalError::Io {
                path: self.path.clone(),
                source: std::io::Error::other(format!("no longer written to: {why}")),
            });
        }
        if self.flushes.failed.load(Ordering::Acquire) {
            return Err(self
                .flushes
                .error("no longer written to: a flush failed".into()));
        }
        let bad = |err: serde_json::Error| JournalError::Io {
            path: self.path.clone(),
            source: std::io::Error::other(err),
        };
        let at_ms = clock::now_millis();
        let entry = Entry {
            seq: self.seq + 1,
            at_ms,
            at: clock::rfc3339(at_ms),
            event,
        };
        let mut line = match step_line(&entry) {
            Some(line) => line,
            None => serde_json::to_value(&entry).map_err(bad)?.to_string(),
        };
        // Masking changes nothing unless a secret shows in the line: then the value is
        // masked string by string and written again, and the entry is what was written.
        let entry = if crate::redact::in_json(&line) {
            let mut value = serde_json::to_value(&entry).map_err(bad)?;
            crate::redact::value(&mut value);
            line = value.to_string();
            serde_json::from_value(value).map_err(bad)?
        } else {
            entry
        };
        line.push('\n');
        Ok((entry, line))
    }

    /// Writes a whole line (and flushes it when `flush`); on failure cuts the file back to
    /// its last whole line (and, if even that fails, stops writing to it).
    fn put(&mut self, line: &str, flush: bool) -> Result<(), JournalError> {
        let mut written = self.file.write_all(line.as_bytes());
        if flush {
            written = written.and_then(|()| self.file.sync_data());
        }
        if let Err(source) = written {
            // Cut what part of the line may have gone in, so that the file ends with a whole
            // line; if even that fails, stop writing to it.
            let undone = self
                .file
                .set_len(self.len)
                .and_then(|()| self.file.sync_data());
            if let Err(again) = undone {
                self.broken = Some(format!(
                    "a failed write ({source}) could not be undone ({again})"
                ));
            }
            return Err(JournalError::Io {
                path: self.path.clone(),
                source,
            });
        }
        self.seq += 1;
        self.len += line.len() as u64;
        self.flushes.written.store(self.len, Ordering::Release);
        if flush {
            self.flushes.durable.fetch_max(self.len, Ordering::AcqRel);
        }
        Ok(())
    }
}

/// The line of a step's start or end (two of every step's entries) written directly, byte for
/// byte as serde_json writes the entry's value (keys in order, strings escaped alike), without
/// building the value; `None` for any other event.
fn step_line(entry: &Entry) -> Option<String> {
    use std::fmt::Write as _;
    let quoted = |text: &str| serde_json::to_string(text).ok();
    let mut line = String::with_capacity(256);
    let at = quoted(&entry.at)?;
    let (seq, at_ms) = (entry.seq, entry.at_ms);
    match &entry.event {
        Event::StepStarted { host, step } => {
            let (host, step) = (quoted(host)?, quoted(&step.to_string())?);
            write!(
                line,
                "{{\"at\":{at},\"at_ms\":{at_ms},\"event\":\"step-started\",\"host\":{host},\"seq\":{seq},\"step\":{step}}}"
            )
            .ok()?;
        }
        Event::StepFinished {
            host,
            step,
            ok,
            detail,
            output,
        } => {
            let (host, step, detail) = (quoted(host)?, quoted(&step.to_string())?, quoted(detail)?);
            let output = match output {
                Some(text) => quoted(text)?,
                None => "null".to_string(),
            };
            write!(
                line,
                "{{\"at\":{at},\"at_ms\":{at_ms},\"detail\":{detail},\"event\":\"step-finished\",\"host\":{host},\"ok\":{ok},\"output\":{output},\"seq\":{seq},\"step\":{step}}}"
            )
            .ok()?;
        }
        _ => return None,
    }
    Some(line)
}

/// The entry of a step's start or end (most of a journal's lines) or of a run's start (the
/// longest line: the plan) read straight into its fields, as the general reading would read
/// it, without the buffering serde does for an entry's flattened, tagged event; `None` for
/// any other line (then read the general way, which also reports what is wrong with a line).
fn direct_entry<P: serde::de::DeserializeOwned>(
    line: &str,
    plan: impl FnOnce(P) -> Value,
) -> Option<Entry> {
    #[derive(Deserialize)]
    #[serde(bound = "P: serde::de::DeserializeOwned")]
    struct Line<P> {
        seq: u64,
        at_ms: u64,
        at: String,
        event: String,
        host: Option<String>,
        step: Option<Step>,
        ok: Option<bool>,
        detail: Option<String>,
        output: Option<String>,
        run_id: Option<String>,
        kind: Option<RunKind>,
        group: Option<String>,
        half: Option<Half>,
        playbook: Option<String>,
        playbook_path: Option<String>,
        package: Option<String>,
        version: Option<String>,
        operator: Option<String>,
        controller: Option<String>,
        pid: Option<u32>,
        skip_promotion_check: Option<bool>,
        plan: Option<P>,
    }
    let l: Line<P> = serde_json::from_str(line).ok()?;
    let event = match l.event.as_str() {
        "step-started" => Event::StepStarted {
            host: l.host?,
            step: l.step?,
        },
        "step-finished" => Event::StepFinished {
            host: l.host?,
            step: l.step?,
            ok: l.ok?,
            detail: l.detail?,
            output: l.output,
        },
        "started" => Event::Started {
            run_id: l.run_id?,
            kind: l.kind?,
            group: l.group?,
            half: l.half,
            playbook: l.playbook?,
            playbook_path: l.playbook_path?,
            package: l.package?,
            version: l.version?,
            operator: l.operator?,
            controller: l.controller?,
            pid: l.pid?,
            skip_promotion_check: l.skip_promotion_check?,
            plan: plan(l.plan?),
        },
        _ => return None,
    };
    Some(Entry {
        seq: l.seq,
        at_ms: l.at_ms,
        at: l.at,
        event,
    })
}

/// Makes a directory entry durable.
fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// Records `run_id` as the group's latest run (atomically: write, fsync, rename).
fn set_last(state_dir: &Path, group: &str, run_id: &str) -> Result<(), JournalError> {
    let dir = group_dir(state_dir, group);
    let tmp = dir.join("last.tmp");
    let last = dir.join("last");
    let mut file = File::create(&tmp).map_err(io(&tmp))?;
    file.write_all(run_id.as_bytes()).map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    fs::rename(&tmp, &last).map_err(io(&last))?;
    sync_dir(&dir)
}

/// The journal file of the group's latest run, if any.
pub fn last_run(state_dir: &Path, group: &str) -> Result<Option<PathBuf>, JournalError> {
    let last = group_dir(state_dir, group).join("last");
    match fs::read_to_string(&last) {
        Ok(id) => Ok(Some(
            group_dir(state_dir, group)
                .join("runs")
                .join(format!("{}.jsonl", id.trim())),
        )),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(JournalError::Io { path: last, source }),
    }
}

/// Every run journal of a group, oldest first.
pub fn runs(state_dir: &Path, group: &str) -> Result<Vec<PathBuf>, JournalError> {
    let dir = group_dir(state_dir, group).join("runs");
    let mut paths = match fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
            .collect::<Vec<_>>(),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => vec![],
        Err(source) => return Err(JournalError::Io { path: dir, source }),
    };
    paths.sort();
    Ok(paths)
}

/// Roles changed by a rollback's pair swap (`groups/<group>/roles.json`): host -> role. The
/// inventory stays the operator's file; these override its roles until it is edited.
pub fn role_overrides(
    state_dir: &Path,
    group: &str,
) -> Result<std::collections::BTreeMap<String, crate::inventory::Role>, JournalError> {
    let path = group_dir(state_dir, group).join("roles.json");
    match fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).map_err(|err| JournalError::Corrupt {
            path,
            line: 1,
            message: err.to_string(),
        }),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Default::default()),
        Err(source) => Err(JournalError::Io { path, source }),
    }
}

/// Records roles changed by a pair swap (atomically).
pub fn set_role_overrides(
    state_dir: &Path,
    group: &str,
    roles: &std::collections::BTreeMap<String, crate::inventory::Role>,
) -> Result<(), JournalError> {
    let dir = group_dir(state_dir, group);
    fs::create_dir_all(&dir).map_err(io(&dir))?;
    let tmp = dir.join("roles.json.tmp");
    let path = dir.join("roles.json");
    let text = serde_json::to_string_pretty(roles).map_err(|err| JournalError::Io {
        path: path.clone(),
        source: std::io::Error::other(err),
    })?;
    let mut file = File::create(&tmp).map_err(io(&tmp))?;
    file.write_all(text.as_bytes()).map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    fs::rename(&tmp, &path).map_err(io(&path))?;
    sync_dir(&dir)
}

/// The group with the roles a rollback swapped applied over the inventory's.
pub fn with_role_overrides(
    mut group: crate::inventory::Group,
    state_dir: &Path,
) -> Result<crate::inventory::Group, JournalError> {
    let roles = role_overrides(state_dir, &group.name)?;
    for host in &mut group.hosts {
        if let Some(role) = roles.get(&host.name) {
            host.role = Some(*role);
        }
    }
    Ok(group)
}

/// What the journal says of a group's last run.
#[derive(Debug, Clone, Default)]
pub struct LastRun {
    pub run_id: String,
    /// None: the journal records no start.
    pub kind: Option<RunKind>,
    pub half: Option<Half>,
    pub version: String,
    pub playbook_path: Option<PathBuf>,
    pub status: RunState,
    /// What the last end recorded says (the failure, for a failed run).
    pub summary: Option<String>,
    /// The last step of each host: `step ok|FAILED|started`.
    pub steps: BTreeMap<String, String>,
}

/// Reads the last run of a group from its journal.
pub fn last_summary(state_dir: &Path, group: &str) -> Result<Option<LastRun>, JournalError> {
    let Some(path) = last_run(state_dir, group)? else {
        return Ok(None);
    };
    let entries = read_without_plans(&path)?;
    Ok(Some(summarise(&entries)))
}

/// The last run's facts from its entries.
pub fn summarise(entries: &[Entry]) -> LastRun {
    let mut run = LastRun::default();
    for entry in entries {
        match &entry.event {
            Event::Started {
                run_id,
                kind,
                half,
                version,
                playbook_path,
                ..
            } => {
                run.run_id = run_id.clone();
                run.kind = Some(*kind);
                run.half = *half;
                run.version = version.clone();
                run.playbook_path = Some(PathBuf::from(playbook_path));
            }
            Event::StepStarted { host, step } => {
                run.steps.insert(host.clone(), format!("{step} started"));
            }
            Event::StepFinished { host, step, ok, .. } => {
                let state = if *ok { "ok" } else { "FAILED" };
                run.steps.insert(host.clone(), format!("{step} {state}"));
            }
            Event::Finished { status, summary } => {
                run.summary = Some(summary.clone());
                run.status = RunState::Ended(*status);
            }
            Event::Resumed { .. } => run.status = RunState::Interrupted,
            _ => {}
        }
    }
    run
}

impl LastRun {
    /// True when the run ended done: nothing of it is left to finish.
    pub fn is_done(&self) -> bool {
        self.status == RunState::Ended(RunStatus::Done)
    }
}

/// Reads a journal. A last line without its newline (torn by a crash) is ignored; any other
/// unreadable line is an error naming the line.
pub fn read(path: &Path) -> Result<Vec<Entry>, JournalError> {
    read_lines(path, true)
}

/// Reads a journal as [`read`] does, but for the plan of a run's start, left null: what
/// happened, for the readers that need nothing of the plan (the plan is most of what a large
/// group's journal holds, and most of the time reading it takes).
pub fn read_without_plans(path: &Path) -> Result<Vec<Entry>, JournalError> {
    read_lines(path, false)
}

fn read_lines(path: &Path, plans: bool) -> Result<Vec<Entry>, JournalError> {
    let file = File::open(path).map_err(io(path))?;
    let mut entries = Vec::new();
    let mut reader = BufReader::new(file);
    let mut line = String::new();
    let mut number = 0;
    loop {
        line.clear();
        let n = reader.read_line(&mut line).map_err(io(path))?;
        if n == 0 {
            return Ok(entries);
        }
        number += 1;
        if !line.ends_with('\n') {
            tracing::warn!(journal = %path.display(), line = number, "ignoring a torn last line");
            return Ok(entries);
        }
        let direct = if plans {
            direct_entry(&line, |plan: Value| plan)
        } else {
            direct_entry(&line, |_: serde::de::IgnoredAny| Value::Null)
        };
        let entry = match direct {
            Some(entry) => entry,
            None => serde_json::from_str(&line).map_err(|err| JournalError::Corrupt {
                path: path.to_path_buf(),
                line: number,
                message: err.to_string(),
            })?,
        };
        entries.push(entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn started() -> Event {
        Event::Started {
            run_id: "r1".into(),
            kind: RunKind::Upgrade,
            group: "ops".into(),
            half: Some(Half::B),
            playbook: "p".into(),
            playbook_path: "playbooks/p.toml".into(),
            package: "pkg".into(),
            version: "2".into(),
            operator: "me".into(),
            controller: "box".into(),
            pid: 1,
            skip_promotion_check: false,
            plan: Value::Null,
        }
    }

    #[test]
    fn appends_reads_back_and_points_last_at_the_run() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::create(dir.path(), "ops", "r1").unwrap();
        j.append(started()).unwrap();
        j.append(Event::StepStarted {
            host: "px5".into(),
            step: "stop".into(),
        })
        .unwrap();
        let path = last_run(dir.path(), "ops").unwrap().unwrap();
        assert_eq!(path, j.path());
        let entries = read(&path).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].event, started());
        assert_eq!(entries[1].seq, 2);
        assert!(last_run(dir.path(), "dev").unwrap().is_none());
        assert_eq!(runs(dir.path(), "ops").unwrap(), vec![path]);
    }

    /// Entries written while no flush ran share the next one; each wait returns once its
    /// entry is on disk, and what was written reads back in order.
    #[tokio::test]
    async fn entries_written_together_share_one_flush() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::create(dir.path(), "ops", "r1").unwrap();
        j.append(started()).unwrap();
        let pending: Vec<Pending> = ["px1", "px2", "px3"]
            .iter()
            .map(|host| {
                j.write(Event::StepStarted {
                    host: host.to_string(),
                    step: "stop".into(),
                })
                .unwrap()
            })
            .collect();
        let flushes = Arc::clone(&j.flushes);
        assert_eq!(flushes.made.load(Ordering::Relaxed), 0);
        for p in pending.into_iter().rev() {
            p.durable().await.unwrap();
        }
        assert_eq!(
            flushes.made.load(Ordering::Relaxed),
            1,
            "one flush for the three"
        );
        assert_eq!(
            flushes.durable.load(Ordering::Relaxed),
            fs::metadata(j.path()).unwrap().len()
        );
        // Written after that flush: a flush of its own.
        let later = j
            .write(Event::StepStarted {
                host: "px4".into(),
                step: "stop".into(),
            })
            .unwrap();
        later.durable().await.unwrap();
        assert_eq!(flushes.made.load(Ordering::Relaxed), 2);
        let entries = read(j.path()).unwrap();
        let seqs: Vec<u64> = entries.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    }

    /// The lines of a step's start and end, written directly, are byte for byte those of
    /// the entry's value, whatever their strings hold.
    #[test]
    fn step_lines_are_written_as_the_value_would_be() {
        let odd = "q\"uo\\te\n\ttab \u{1} é 😀 </script> ' %2F";
        let events = [
            Event::StepStarted {
                host: odd.into(),
                step: Step::Recreate(odd.into()),
            },
            Event::StepFinished {
                host: "px1".into(),
                step: "verify".into(),
                ok: false,
                detail: odd.into(),
                output: Some(format!("$ status\nexit: 0\n--- stdout\n{odd}\n")),
            },
            Event::StepFinished {
                host: "px1".into(),
                step: "stop".into(),
                ok: true,
                detail: String::new(),
                output: None,
            },
        ];
        for event in events {
            let entry = Entry {
                seq: 1234,
                at_ms: 1_796_581_664_683,
                at: clock::rfc3339(1_796_581_664_683),
                event,
            };
            let direct = step_line(&entry).unwrap();
            let valued = serde_json::to_value(&entry).unwrap().to_string();
            assert_eq!(direct, valued);
            let back: Entry = serde_json::from_str(&direct).unwrap();
            assert_eq!(back, entry);
            assert_eq!(direct_entry(&direct, |p: Value| p), Some(entry));
        }
        assert!(
            step_line(&Entry {
                seq: 1,
                at_ms: 0,
                at: String::new(),
                event: started(),
            })
            .is_none()
        );
    }

    #[test]
    fn a_torn_last_line_is_ignored_and_appending_continues() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::create(dir.path(), "ops", "r1").unwrap();
        j.append(started()).unwrap();
        let path = j.path().to_path_buf();
        drop(j);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"seq\":2,\"at_ms\":1,\"at\":\"x\",\"event\":\"step-st")
            .unwrap();
        assert_eq!(read(&path).unwrap().len(), 1);
        let mut j = Journal::reopen(&path).unwrap();
        j.append(Event::Resumed {
            pid: 2,
            operator: "me".into(),
        })
        .unwrap();
        let entries = read(&path).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1].seq, 2);
    }

    /// A write cut short (here by a file size limit, as a full disk does) leaves no partial
    /// line: the journal reads back whole, and once there is room again the next entry
    /// starts a line of its own.
    #[test]
    fn a_failed_write_leaves_the_journal_readable() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::create(dir.path(), "ops", "r1").unwrap();
        j.append(started()).unwrap();
        let path = j.path().to_path_buf();
        let before = fs::metadata(&path).unwrap().len();
        let big = Event::StepFinished {
            host: "px1".into(),
            step: "upgrade".into(),
            ok: true,
            detail: String::new(),
            output: Some("x".repeat(64 * 1024)),
        };
        // SAFETY: nextest runs each test in a process of its own; the soft limit is put
        // back before the test goes on, and SIGXFSZ is ignored so that write fails instead.
        let mut old = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        unsafe {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            libc::getrlimit(libc::RLIMIT_FSIZE, &mut old);
            let small = libc::rlimit {
                rlim_cur: before + 1000,
                rlim_max: old.rlim_max,
            };
            libc::setrlimit(libc::RLIMIT_FSIZE, &small);
        }
        let failed = j.append(big.clone());
        unsafe {
            libc::setrlimit(libc::RLIMIT_FSIZE, &old);
        }
        assert!(failed.is_err(), "the write should fail");
        assert_eq!(
            fs::metadata(&path).unwrap().len(),
            before,
            "a partial line stayed"
        );
        assert_eq!(read(&path).unwrap().len(), 1);
        j.append(big).unwrap();
        let entries = read(&path).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1].seq, 2);
    }

    /// The direct reading of a line gives what the general reading gives, or leaves the
    /// line to it (`None`); it takes the usual lines of a step and of a run's start itself.
    #[test]
    fn entries_read_directly_as_the_general_reading_does() {
        // (line, read directly)
        let lines = [
            (
                r#"{"at":"x","at_ms":1,"event":"step-started","host":"px1","seq":2,"step":"stop"}"#,
                true,
            ),
            (
                r#"{"at":"x","at_ms":1,"event":"step-started","host":"px1","seq":2,"step":"stop","extra":[1]}"#,
                true,
            ),
            (
                r#"{"at":"x","at_ms":1,"event":"step-started","seq":2,"step":"stop"}"#,
                false,
            ),
            (
                r#"{"at":"x","at_ms":1,"event":"step-started","host":"px1","host":"px2","seq":2,"step":"stop"}"#,
                false,
            ),
            (
                r#"{"at":"x","at_ms":1,"detail":"d","event":"step-finished","host":"h","ok":true,"seq":3,"step":"stop"}"#,
                true,
            ),
            (
                r#"{"at":"x","at_ms":1,"detail":"d","event":"step-finished","host":"h","ok":true,"output":null,"seq":3,"step":"stop"}"#,
                true,
            ),
            (
                r#"{"at":"x","at_ms":1,"event":"step-finished","host":"h","ok":true,"output":"o","seq":3,"step":"stop"}"#,
                false,
            ),
            (
                r#"{"at":"x","at_ms":1,"detail":"d","event":"step-finished","host":"h","ok":"yes","seq":3,"step":"stop"}"#,
                false,
            ),
            (
                r#"{"at":"x","at_ms":1,"event":"measured","what":"w","seconds":1.5,"detail":"d","seq":4}"#,
                false,
            ),
            (
                r#"{"at":"x","at_ms":1,"controller":"c","event":"started","group":"ops","half":"b","kind":"upgrade","operator":"o","package":"p","pid":7,"plan":{"a":[1,2.5,null,{"b":"c"}]},"playbook":"pb","playbook_path":"pb.toml","run_id":"r","seq":1,"skip_promotion_check":false,"version":"2"}"#,
                true,
            ),
            (
                r#"{"at":"x","at_ms":1,"controller":"c","event":"started","group":"ops","half":null,"kind":"rollback","operator":"o","package":"p","pid":7,"plan":null,"playbook":"pb","playbook_path":"pb.toml","run_id":"r","seq":1,"skip_promotion_check":false,"version":""}"#,
                false,
            ),
            (
                r#"{"at":"x","at_ms":1,"controller":"c","event":"started","group":"ops","kind":"upgrade","operator":"o","package":"p","pid":7,"playbook":"pb","playbook_path":"pb.toml","run_id":"r","seq":1,"skip_promotion_check":false,"version":"2"}"#,
                false,
            ),
            (
                r#"{"at":"x","at_ms":1,"controller":"c","event":"started","group":"ops","kind":"sideways","operator":"o","package":"p","pid":7,"plan":1,"playbook":"pb","playbook_path":"pb.toml","run_id":"r","seq":1,"skip_promotion_check":false,"version":"2"}"#,
                false,
            ),
        ];
        for (line, direct) in lines {
            let general = serde_json::from_str::<Entry>(line).ok();
            match direct_entry(line, |p: Value| p) {
                Some(entry) => {
                    assert!(direct, "read directly: {line}");
                    assert_eq!(Some(entry), general, "{line}");
                }
                None => assert!(!direct, "not read directly: {line}"),
            }
        }
    }

    /// Read without plans, a journal gives the same entries but for the plan of its start.
    #[test]
    fn a_journal_reads_without_its_plans_alike() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::create(dir.path(), "ops", "r1").unwrap();
        let mut start = started();
        if let Event::Started { plan, .. } = &mut start {
            *plan = serde_json::json!({"hosts": [{"host": "px1", "steps": ["stop", "start"]}]});
        }
        j.append(start).unwrap();
        j.append(Event::StepStarted {
            host: "px1".into(),
            step: "stop".into(),
        })
        .unwrap();
        j.append(Event::Finished {
            status: RunStatus::Done,
            summary: "ok".into(),
        })
        .unwrap();
        let mut full = read(j.path()).unwrap();
        let light = read_without_plans(j.path()).unwrap();
        if let Event::Started { plan, .. } = &mut full[0].event {
            assert!(plan.is_object());
            *plan = Value::Null;
        }
        assert_eq!(light, full);
    }

    #[test]
    fn a_corrupt_middle_line_names_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.jsonl");
        fs::write(&path, "not json\n{}\n").unwrap();
        let err = read(&path).unwrap_err().to_string();
        assert!(err.contains("j.jsonl:1:"), "{err}");
    }

    #[test]
    fn secrets_are_never_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::create(dir.path(), "ops", "r1").unwrap();
        // Quotes, a backslash, a percent sign, and a JSON key of the journal's lines.
        let nasty = "se\"c\\r%et\"host";
        crate::redact::register(nasty);
        crate::redact::register("s3cret");
        let encoded =
            percent_encoding::utf8_percent_encode(nasty, percent_encoding::NON_ALPHANUMERIC);
        j.append(Event::StepFinished {
            host: "px1".into(),
            step: "start".into(),
            ok: true,
            detail: format!("password s3cret here, and {nasty}"),
            output: Some(format!(
                "amqp://u:{encoded}@h\n{{\"pw\": {}}}",
                serde_json::json!(nasty)
            )),
        })
        .unwrap();
        let text = fs::read_to_string(j.path()).unwrap();
        assert!(!text.contains("s3cret"), "{text}");
        assert!(!text.contains("c\\\\r%et"), "{text}");
        assert!(!text.contains("r%25et"), "{text}");
        assert!(text.contains("***"));
        let entries = read(j.path()).unwrap();
        match &entries[0].event {
            Event::StepFinished { host, detail, .. } => {
                assert_eq!(host, "px1");
                assert_eq!(detail, "password *** here, and ***");
            }
            other => panic!("{other:?}"),
        }
    }
}
