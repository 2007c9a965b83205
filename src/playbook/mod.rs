//! Playbooks: what a release does to a fleet, read from a TOML file (`playbooks/*.toml`).
//!
//! A playbook names the package and target version, the host-side commands of each phase,
//! the files deployed with the release, which queues belong to the fleet (and to which host,
//! half or the whole group), the settings those queues must have, and the artifacts copied to
//! the hosts (see [`artifact`]). Every error names the file and line.
//! `playbooks/sr3-queue-expire.toml` documents the format.

pub mod artifact;
mod raw;
pub mod rollout;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use toml::Spanned;

use crate::broker::equivalence::{DURATION_ARGUMENTS, QueueSettings};
use crate::inventory::{BrokerConfig, Half, Host};
use crate::source::SourceError;
use crate::template::{self, Escape, Vars};

pub use artifact::{Artifact, ArtifactError};

/// Default time allowed for one host-side command.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(300);
/// Default stop window used for x-expires warnings.
pub const DEFAULT_STOP_WINDOW: Duration = Duration::from_secs(15 * 60);

/// A checked playbook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Playbook {
    pub path: PathBuf,
    pub name: String,
    pub description: Option<String>,
    pub package: String,
    pub version: String,
    pub commands: Commands,
    pub files: Vec<FileSpec>,
    /// Files copied to the hosts before anything stops, checked by their checksum.
    #[serde(default)]
    pub artifacts: Vec<Artifact>,
    pub queues: QueueRules,
    pub verify: Verify,
    /// Waves, gates and the failure policy (`[rollout]`).
    #[serde(default)]
    pub rollout: rollout::RolloutRules,
}

/// How a started host is verified, besides its status, version and queues.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verify {
    /// A command printing the local ports of the service's broker connections, one per line:
    /// matched with the broker's connections (`peer_port`) to see the version connected.
    pub client_ports: Option<String>,
    /// The `product_version` the new release shows on the broker (e.g. `3.03.01`).
    pub client_version: Option<String>,
    /// A shell glob of the service's log files, read from where they ended before the start.
    pub logs: Option<String>,
    /// Patterns (extended regular expressions) that fail the verification when logged.
    pub log_errors: Vec<String>,
    /// How long verification may wait for the service to settle.
    #[serde(with = "crate::units::duration")]
    pub timeout: Duration,
}

/// Default time a started host has to pass verification.
pub const DEFAULT_VERIFY_TIMEOUT: Duration = Duration::from_secs(90);

/// The host-side commands, as templates (see [`crate::template`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Commands {
    pub stop: String,
    pub start: String,
    /// Prints `running` or `stopped` (first word of its output).
    pub status: String,
    pub upgrade: String,
    /// What a rollback runs to put the previous version back (`{version}` is that one); the
    /// upgrade command when not given.
    #[serde(default)]
    pub reinstall: Option<String>,
    /// Prints the installed version of the package.
    pub installed_version: String,
    /// Makes the service forget its saved queue settings (for sr3: its subscriptions.json).
    pub reset_queue_state: Option<String>,
    /// A gate run on each host of a wave once it is verified: exit 0 passes (tried again
    /// until the gate's deadline).
    #[serde(default)]
    pub gate: Option<String>,
    /// Install the package while the service still runs (before the stop), to shorten the
    /// time it is stopped. For packages whose installation does not restart the service.
    pub upgrade_before_stop: bool,
    #[serde(with = "crate::units::duration")]
    pub timeout: Duration,
}

/// A file deployed with the release.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileSpec {
    /// Where on the host: relative to the SSH user's home, or absolute.
    pub path: String,
    /// The template file, resolved.
    pub template: PathBuf,
    /// The template's text, read when the playbook is loaded (journaled with the plan: a
    /// resumed run deploys what was approved).
    pub content: String,
    pub mode: Option<u32>,
    /// Only replace the file where it already exists (a config that some hosts have).
    pub only_if_present: bool,
}

/// Who a queue pattern gives a queue to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PatternOwner {
    /// The host whose variables the pattern names (`{host}` or `{user}` in it).
    Host,
    /// One half of the group.
    Half(Half),
    /// The whole group.
    Shared,
}

/// A rule giving queues to the fleet by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OwnedPattern {
    /// A glob (`*`, `?`) with placeholders.
    pub pattern: String,
    pub owner: PatternOwner,
    pub line: usize,
}

/// Which queues belong to the fleet, and how they must be.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueRules {
    /// A host-side command printing the names of the queues the host uses, one per line.
    pub discover: Option<String>,
    pub owned: Vec<OwnedPattern>,
    pub target: QueueSettings,
    #[serde(with = "crate::units::duration")]
    pub expected_stop_window: Duration,
}

/// Why a playbook cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PlaybookError {
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Invalid(#[from] SourceError),
}

/// Reads and checks a playbook file.
pub fn load(path: &Path) -> Result<Playbook, PlaybookError> {
    let text = std::fs::read_to_string(path).map_err(|source| PlaybookError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, path)
}

/// Checks a playbook given as text; `path` names it and anchors relative template paths.
pub fn parse(text: &str, path: &Path) -> Result<Playbook, PlaybookError> {
    let raw: raw::RawPlaybook =
        toml::from_str(text).map_err(|err| SourceError::toml(path, text, &err))?;
    let mut checker = Checker {
        path,
        text,
        artifacts: vec![],
    };
    let artifacts = checker.artifacts(&raw.artifacts)?;
    checker.artifacts = artifacts.iter().map(|a| a.name.clone()).collect();
    let commands = checker.commands(&raw.commands)?;
    let files = checker.files(&raw.files)?;
    let owned = checker.owned(&raw.queues.owned)?;
    // Queues are discovered before anything is copied: no artifact there.
    let discover = raw
        .queues
        .discover
        .as_ref()
        .map(|d| checker.checked_with(d, template::check_command))
        .transpose()?;
    if discover.is_none() && owned.is_empty() {
        return Err(SourceError {
            path: path.to_path_buf(),
            line: 0,
            col: 0,
            message: "[queues] needs `discover` or at least one [[queues.owned]] pattern".into(),
        }
        .into());
    }
    let arguments = checker.arguments(&raw.queues.target.arguments)?;
    let verify = checker.verify(raw.verify.as_ref())?;
    let rollout = checker.rollout(raw.rollout.as_ref())?;
    Ok(Playbook {
        verify,
        rollout,
        path: path.to_path_buf(),
        name: raw.release.name.get_ref().clone(),
        description: raw.release.description,
        package: checker.template(&raw.release.package)?,
        version: checker.template(&raw.release.version)?,
        commands,
        files,
        artifacts,
        queues: QueueRules {
            discover,
            owned,
            target: QueueSettings::new(
                raw.queues.target.durable,
                raw.queues.target.auto_delete,
                arguments,
            ),
            expected_stop_window: raw
                .queues
                .expected_stop_window
                .map_or(DEFAULT_STOP_WINDOW, Duration::from),
        },
    })
}

/// Checks the parts of a playbook, each error tied to its place in the file.
struct Checker<'a> {
    path: &'a Path,
    text: &'a str,
    /// The artifacts' names, which commands may use as `{artifact.NAME}`.
    artifacts: Vec<String>,
}

impl Checker<'_> {
    /// An error at byte offset `at` of the file.
    fn error(&self, at: usize, message: String) -> SourceError {
        SourceError::at(self.path, self.text, at, message)
    }

    /// A value that `check` accepts and that is not empty.
    fn checked_with(
        &self,
        value: &Spanned<String>,
        check: impl Fn(&str) -> Result<(), (usize, String)>,
    ) -> Result<String, SourceError> {
        check(value.get_ref())
            .map_err(|(offset, message)| self.error(value.span().start + 1 + offset, message))?;
        if value.get_ref().trim().is_empty() {
            return Err(self.error(value.span().start, "must not be empty".into()));
        }
        Ok(value.get_ref().clone())
    }

    /// A template with known placeholders only (a path, a pattern, the package, the version).
    fn template(&self, value: &Spanned<String>) -> Result<String, SourceError> {
        self.checked_with(value, template::check)
    }

    /// A command template: commands run with `sh -c`, so no placeholder inside quotes; the
    /// artifacts' destinations are known.
    fn command(&self, value: &Spanned<String>) -> Result<String, SourceError> {
        self.checked_with(value, |t| template::check_command_with(t, &self.artifacts))
    }

    /// A command template that may be left out.
    fn optional_command(
        &self,
        value: Option<&Spanned<String>>,
    ) -> Result<Option<String>, SourceError> {
        value.map(|value| self.command(value)).transpose()
    }

    /// `[commands]`.
    fn commands(&self, raw: &raw::RawCommands) -> Result<Commands, SourceError> {
        Ok(Commands {
            stop: self.command(&raw.stop)?,
            start: self.command(&raw.start)?,
            status: self.command(&raw.status)?,
            upgrade: self.command(&raw.upgrade)?,
            reinstall: self.optional_command(raw.reinstall.as_ref())?,
            installed_version: self.command(&raw.installed_version)?,
            reset_queue_state: self.optional_command(raw.reset_queue_state.as_ref())?,
            gate: self.optional_command(raw.gate.as_ref())?,
            upgrade_before_stop: raw.upgrade_before_stop,
            timeout: raw.timeout.map_or(DEFAULT_COMMAND_TIMEOUT, Duration::from),
        })
    }

    /// `[[files]]`: each template read (relative to the playbook's directory) and checked.
    fn files(&self, raw: &[raw::RawFile]) -> Result<Vec<FileSpec>, SourceError> {
        let base = self.path.parent().unwrap_or(Path::new("."));
        raw.iter().map(|file| self.file(base, file)).collect()
    }

    fn file(&self, base: &Path, file: &raw::RawFile) -> Result<FileSpec, SourceError> {
        let template_path = base.join(file.template.get_ref());
        let at = file.template.span().start;
        let content = std::fs::read_to_string(&template_path).map_err(|err| {
            self.error(
                at,
                format!("cannot read template {}: {err}", template_path.display()),
            )
        })?;
        template::check(&content).map_err(|(_, message)| {
            self.error(
                at,
                format!("template {}: {message}", template_path.display()),
            )
        })?;
        let mode = match &file.mode {
            None => None,
            Some(mode) => Some(u32::from_str_radix(mode.get_ref(), 8).map_err(|_| {
                self.error(
                    mode.span().start,
                    format!("mode {:?} is not octal (e.g. \"0644\")", mode.get_ref()),
                )
            })?),
        };
        Ok(FileSpec {
            path: self.template(&file.path)?,
            template: template_path,
            content,
            mode,
            only_if_present: file.only_if_present,
        })
    }

    /// `[[queues.owned]]`, each with its owner and line.
    fn owned(&self, raw: &[raw::RawOwned]) -> Result<Vec<OwnedPattern>, SourceError> {
        let mut owned = Vec::new();
        for rule in raw {
            let pattern = self.template(&rule.pattern)?;
            let owner = self.owner(rule, &pattern)?;
            let line = crate::source::Positions::new(self.text)
                .line_col(rule.pattern.span().start)
                .0;
            owned.push(OwnedPattern {
                pattern,
                owner,
                line,
            });
        }
        Ok(owned)
    }

    /// Who a pattern gives its queues to: as written, else the host when the pattern names
    /// one (`{host}` or `{user}`), else the group.
    fn owner(&self, rule: &raw::RawOwned, pattern: &str) -> Result<PatternOwner, SourceError> {
        let names_host = pattern.contains("{host}") || pattern.contains("{user}");
        match rule.owner.as_ref().map(|o| (o, o.get_ref().as_str())) {
            None if names_host => Ok(PatternOwner::Host),
            None => Ok(PatternOwner::Shared),
            Some((_, "host")) if names_host => Ok(PatternOwner::Host),
            Some((o, "host")) => Err(self.error(
                o.span().start,
                "owner \"host\" needs {host} or {user} in the pattern".into(),
            )),
            Some((_, "shared")) => Ok(PatternOwner::Shared),
            Some((_, "a")) => Ok(PatternOwner::Half(Half::A)),
            Some((_, "b")) => Ok(PatternOwner::Half(Half::B)),
            Some((o, other)) => Err(self.error(
                o.span().start,
                format!("unknown owner {other:?}: use host, a, b or shared"),
            )),
        }
    }

    /// `[queues.target] arguments`, durations in milliseconds.
    fn arguments(
        &self,
        raw: &BTreeMap<Spanned<String>, Spanned<toml::Value>>,
    ) -> Result<BTreeMap<String, Value>, SourceError> {
        let mut arguments = BTreeMap::new();
        for (key, value) in raw {
            let name = key.get_ref().clone();
            let parsed = argument_value(&name, value.get_ref())
                .map_err(|message| self.error(value.span().start, format!("{name}: {message}")))?;
            arguments.insert(name, parsed);
        }
        Ok(arguments)
    }

    /// `[rollout]`, or its defaults when the table is left out.
    fn rollout(&self, raw: Option<&raw::RawRollout>) -> Result<rollout::RolloutRules, SourceError> {
        let Some(raw) = raw else {
            return Ok(rollout::RolloutRules::default());
        };
        let positions = crate::source::Positions::new(self.text);
        let waves = raw
            .waves
            .iter()
            .map(|wave| {
                let w = wave.get_ref();
                rollout::WaveRule {
                    hosts: w.hosts.clone(),
                    vars: w.vars.clone(),
                    pause_after: w.pause_after,
                    line: positions.line_col(wave.span().start).0,
                }
            })
            .collect();
        let max_failures = match &raw.max_failures {
            None => None,
            Some(value) => {
                let text = match value.get_ref() {
                    toml::Value::Integer(n) => n.to_string(),
                    toml::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                Some(text.parse().map_err(|message| {
                    self.error(value.span().start, format!("max_failures: {message}"))
                })?)
            }
        };
        let on_failure = match &raw.on_failure {
            None => None,
            Some(value) => Some(value.get_ref().parse().map_err(|message| {
                self.error(value.span().start, format!("on_failure: {message}"))
            })?),
        };
        Ok(rollout::RolloutRules {
            waves,
            max_backlog: raw.max_backlog,
            min_healthy: raw.min_healthy,
            gate_timeout: raw
                .gate_timeout
                .map_or(rollout::DEFAULT_GATE_TIMEOUT, Duration::from),
            max_failures,
            on_failure,
        })
    }

    /// `[verify]`, or its defaults when the table is left out.
    fn verify(&self, raw: Option<&raw::RawVerify>) -> Result<Verify, SourceError> {
        Ok(match raw {
            None => Verify {
                client_ports: None,
                client_version: None,
                logs: None,
                log_errors: vec![],
                timeout: DEFAULT_VERIFY_TIMEOUT,
            },
            Some(v) => Verify {
                client_ports: self.optional_command(v.client_ports.as_ref())?,
                client_version: v.client_version.clone(),
                logs: self.optional_command(v.logs.as_ref())?,
                log_errors: v.log_errors.clone(),
                timeout: v.timeout.map_or(DEFAULT_VERIFY_TIMEOUT, Duration::from),
            },
        })
    }
}

/// A target argument from TOML: durations with units for the duration arguments (in ms).
fn argument_value(name: &str, value: &toml::Value) -> Result<Value, String> {
    match value {
        toml::Value::String(s) if DURATION_ARGUMENTS.contains(&name) => {
            let d = crate::units::parse_duration(s)?;
            Ok(Value::from(d.as_millis() as i64))
        }
        toml::Value::String(s) => Ok(Value::from(s.clone())),
        toml::Value::Integer(i) => Ok(Value::from(*i)),
        toml::Value::Boolean(b) => Ok(Value::from(*b)),
        toml::Value::Float(f) => Ok(Value::from(*f)),
        other => Err(format!(
            "unsupported value {other}: use a string, integer or boolean"
        )),
    }
}

impl Playbook {
    /// The variables of a host for this playbook (with `{artifact.NAME}` for its artifacts and
    /// `{var.NAME}` for the host's inventory variables).
    pub fn vars(&self, host: &Host, broker: &BrokerConfig) -> Vars {
        let user = host.ssh.user.clone().unwrap_or_else(|| host.name.clone());
        let mut vars: Vars = [
            ("package", self.package.clone()),
            ("version", self.version.clone()),
            ("host", host.name.clone()),
            ("user", user),
            ("group", host.group.clone()),
            ("half", host.half.to_string()),
            ("vhost", broker.vhost.clone()),
            ("broker_user", broker.user.clone()),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_string(), value))
        .collect();
        vars.extend(
            host.vars
                .iter()
                .map(|(name, value)| (format!("{}{name}", template::VAR), value.clone())),
        );
        self.add_artifact_vars(&mut vars);
        vars
    }

    /// A command of this playbook for a host, values shell-quoted.
    pub fn command(&self, template: &str, vars: &Vars) -> Result<String, String> {
        template::render(template, vars, Escape::Shell)
    }
}

/// Matches a name against a glob with `*` (any run) and `?` (one character). Allocates
/// nothing: the survey matches every queue of a vhost against every host's pattern.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    // A character of `s` at byte `i`, and the byte after it.
    fn at(s: &str, i: usize) -> Option<(char, usize)> {
        s.get(i..)?.chars().next().map(|c| (c, i + c.len_utf8()))
    }
    let (mut pi, mut ni) = (0, 0);
    // Where the last `*` was, and where in the name its run ends so far.
    let mut star: Option<(usize, usize)> = None;
    while let Some((nc, n_next)) = at(name, ni) {
        match at(pattern, pi) {
            Some((pc, p_next)) if pc == '?' || pc == nc => {
                pi = p_next;
                ni = n_next;
            }
            Some(('*', p_next)) => {
                star = Some((pi, ni));
                pi = p_next;
            }
            _ => {
                let Some((sp, sn)) = star else {
                    return false;
                };
                let longer = at(name, sn).map_or(sn + 1, |(_, next)| next);
                pi = sp + 1;
                ni = longer;
                star = Some((sp, longer));
            }
        }
    }
    pattern
        .get(pi..)
        .is_some_and(|rest| rest.chars().all(|c| c == '*'))
}

#[cfg(test)]
mod tests;
