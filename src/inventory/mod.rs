//! The fleet: groups of hosts in two halves, each group with its broker, read from a TOML file.
//!
//! [`load`] reads and checks an inventory file; every error names the file, line and column of
//! the offending item (`inventory/ops.toml:12:5: duplicate host px3: ...`). The result has every
//! range expanded, every default merged and every path resolved, so that callers only look
//! things up. `inventory/example.toml` documents the format.
//!
//! Passwords are never in the file: a broker names a file or an environment variable
//! ([`SecretRef`]), read only when a command needs it ([`SecretRef::read`]).

pub mod ansible;
mod build;
mod range;
mod raw;
mod secret;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use range::{MAX_EXPANSION, expand_range};
pub use secret::{Secret, SecretError, SecretRef};

/// The SSH port used when the inventory gives none.
pub const DEFAULT_SSH_PORT: u16 = 22;

/// The SSH connect timeout used when the inventory gives none.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The placeholder for the host's name in `ssh.user` and `ssh.address`.
pub const NAME_PLACEHOLDER: &str = "{name}";

/// Reads and checks the inventory at `path`.
pub fn load(path: &Path) -> Result<Inventory, InventoryError> {
    let text = std::fs::read_to_string(path).map_err(|source| InventoryError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, path)
}

/// Checks an inventory given as text. `path` is used in messages and to resolve relative paths.
///
/// Returns the first error in file order; [`parse_all`] returns them all.
pub fn parse(text: &str, path: &Path) -> Result<Inventory, InventoryError> {
    parse_all(text, path).map_err(|mut errors| errors.swap_remove(0))
}

/// Like [`parse`], but returns every error found, in file order (never an empty list).
///
/// A TOML syntax error or a misspelled key stops the reading, so it comes alone; the checks
/// after that (duplicates, pairs, halves, brokers, `requires`) are all reported.
pub fn parse_all(text: &str, path: &Path) -> Result<Inventory, Vec<InventoryError>> {
    build::build(text, path)
}

/// Why an inventory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// The file cannot be read.
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        /// The inventory file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a valid inventory. `line` and `col` count from 1; 0 means unknown.
    #[error("{}", crate::source::located(path, *line, *col, message))]
    Invalid {
        /// The inventory file.
        path: PathBuf,
        /// The line of the offending item, from 1 (0: unknown).
        line: usize,
        /// The column of the offending item, from 1 (0: unknown).
        col: usize,
        /// What is wrong, without the position.
        message: String,
    },
}

impl InventoryError {
    /// The line the error is reported on, if any.
    pub fn line(&self) -> Option<usize> {
        match self {
            InventoryError::Invalid { line, .. } if *line > 0 => Some(*line),
            _ => None,
        }
    }
}

/// A checked inventory.
#[derive(Debug, Clone, Serialize)]
pub struct Inventory {
    /// The file it was read from.
    pub path: PathBuf,
    /// The groups, in file order.
    pub groups: Vec<Group>,
}

impl Inventory {
    /// The group called `name`.
    pub fn group(&self, name: &str) -> Option<&Group> {
        self.groups.iter().find(|group| group.name == name)
    }

    /// Every host, group by group in file order.
    pub fn hosts(&self) -> impl Iterator<Item = &Host> {
        self.groups.iter().flat_map(|group| group.hosts.iter())
    }

    /// The host called `name`, in whichever group.
    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts().find(|host| host.name == name)
    }
}

/// A group of hosts upgraded together, half by half, on one broker.
#[derive(Debug, Clone, Serialize)]
pub struct Group {
    /// The name, as in `[groups.NAME]`.
    pub name: String,
    /// The group that must be upgraded before this one.
    pub requires: Option<String>,
    /// The broker, `defaults.broker` merged with the group's.
    pub broker: BrokerConfig,
    /// The SSH settings, `defaults.ssh` merged with the group's (before per-host overrides).
    pub ssh: SshSettings,
    /// The hosts, in file order with ranges expanded in order.
    pub hosts: Vec<Host>,
}

impl Group {
    /// The hosts of one half, in file order.
    pub fn half(&self, h: Half) -> impl Iterator<Item = &Host> {
        self.hosts.iter().filter(move |host| host.half == h)
    }
}

/// One of the two halves of a group: while one is upgraded, the other carries the load.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Half {
    /// Half `a`.
    A,
    /// Half `b`.
    B,
}

impl Half {
    /// Both halves, `a` first.
    pub const ALL: [Half; 2] = [Half::A, Half::B];

    /// The other half.
    pub fn other(self) -> Half {
        match self {
            Half::A => Half::B,
            Half::B => Half::A,
        }
    }

    /// `"a"` or `"b"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Half::A => "a",
            Half::B => "b",
        }
    }
}

impl fmt::Display for Half {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Half {
    type Err = String;

    /// `a` or `b` (either case).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "a" => Ok(Half::A),
            "b" => Ok(Half::B),
            _ => Err(format!("invalid half {s:?}: expected a or b")),
        }
    }
}

/// The role of a host in an active/passive pair.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The host doing the work.
    Active,
    /// The standby.
    Passive,
}

impl Role {
    /// `"active"` or `"passive"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Active => "active",
            Role::Passive => "passive",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    /// `active` or `passive` (either case).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "active" => Ok(Role::Active),
            "passive" => Ok(Role::Passive),
            _ => Err(format!("invalid role {s:?}: expected active or passive")),
        }
    }
}

/// One host, with everything needed to reach it.
#[derive(Debug, Clone, Serialize)]
pub struct Host {
    /// The name, range expanded.
    pub name: String,
    /// The name of its group.
    pub group: String,
    /// Its half.
    pub half: Half,
    /// Its role, for a host in an active/passive pair.
    pub role: Option<Role>,
    /// The name of its pair.
    pub pair: Option<String>,
    /// How to reach it.
    pub ssh: SshTarget,
    /// The group's variables overlaid with the host's.
    pub vars: BTreeMap<String, String>,
    /// The line of its entry in the inventory file.
    pub line: usize,
}

/// The SSH settings of one host, fully resolved (`{name}` substituted, defaults applied).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SshTarget {
    /// The login; `None` leaves it to ssh (the current user or `~/.ssh/config`).
    pub user: Option<String>,
    /// The host name or IP address to connect to.
    pub address: String,
    /// The port.
    pub port: u16,
    /// The private key.
    pub identity_file: Option<PathBuf>,
    /// The known-hosts file.
    pub known_hosts_file: Option<PathBuf>,
    /// An ssh_config file read instead of `~/.ssh/config` (`ssh -F`).
    pub config_file: Option<PathBuf>,
    /// How long to wait for the connection.
    #[serde(serialize_with = "crate::units::serialize_duration")]
    pub connect_timeout: Duration,
    /// How long an idle connection is kept for the next run of roll; `None`: closed at the
    /// end of the run.
    #[serde(serialize_with = "serialize_optional_duration")]
    pub persist: Option<Duration>,
    /// Whether an unknown or changed host key is refused (true unless the inventory says false).
    pub strict_host_key_checking: bool,
}

impl SshTarget {
    /// `user@address:port` for messages, e.g. `rl-px1@127.0.0.1:2222` (IPv6 in brackets).
    pub fn destination(&self) -> String {
        let address = if self.address.contains(':') {
            format!("[{}]", self.address)
        } else {
            self.address.clone()
        };
        match &self.user {
            Some(user) => format!("{user}@{address}:{}", self.port),
            None => format!("{address}:{}", self.port),
        }
    }
}

/// SSH settings as given in `defaults.ssh` and `groups.NAME.ssh`, merged field by field.
///
/// `user` and `address` may still contain `{name}`; paths are resolved. [`SshSettings::target`]
/// turns them into a host's [`SshTarget`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SshSettings {
    /// The login, may contain `{name}`.
    pub user: Option<String>,
    /// The address, may contain `{name}` (default `{name}`).
    pub address: Option<String>,
    /// The port (default 22).
    pub port: Option<u16>,
    /// The private key, resolved against the inventory's directory.
    pub identity_file: Option<PathBuf>,
    /// The known-hosts file, resolved against the inventory's directory.
    pub known_hosts_file: Option<PathBuf>,
    /// An ssh_config file read instead of `~/.ssh/config`, resolved against the inventory's
    /// directory.
    pub config_file: Option<PathBuf>,
    /// The connect timeout (default 10s).
    #[serde(serialize_with = "serialize_optional_duration")]
    pub connect_timeout: Option<Duration>,
    /// How long an idle connection is kept for the next run (default: not kept; `0s` turns
    /// a group's inherited value off).
    #[serde(serialize_with = "serialize_optional_duration")]
    pub persist: Option<Duration>,
    /// Host key checking (default on; only an explicit `false` turns it off).
    pub strict_host_key_checking: Option<bool>,
}

impl SshSettings {
    /// These settings with those given in `over` taking precedence, field by field.
    pub fn overlay(&self, over: &SshSettings) -> SshSettings {
        SshSettings {
            user: over.user.clone().or_else(|| self.user.clone()),
            address: over.address.clone().or_else(|| self.address.clone()),
            port: over.port.or(self.port),
            identity_file: over
                .identity_file
                .clone()
                .or_else(|| self.identity_file.clone()),
            known_hosts_file: over
                .known_hosts_file
                .clone()
                .or_else(|| self.known_hosts_file.clone()),
            config_file: over
                .config_file
                .clone()
                .or_else(|| self.config_file.clone()),
            connect_timeout: over.connect_timeout.or(self.connect_timeout),
            persist: over.persist.or(self.persist),
            strict_host_key_checking: over
                .strict_host_key_checking
                .or(self.strict_host_key_checking),
        }
    }

    /// The target for the host `name`: `{name}` substituted, defaults applied.
    pub fn target(&self, name: &str) -> SshTarget {
        SshTarget {
            user: self
                .user
                .as_ref()
                .map(|user| user.replace(NAME_PLACEHOLDER, name)),
            address: self
                .address
                .as_deref()
                .unwrap_or(NAME_PLACEHOLDER)
                .replace(NAME_PLACEHOLDER, name),
            port: self.port.unwrap_or(DEFAULT_SSH_PORT),
            identity_file: self.identity_file.clone(),
            known_hosts_file: self.known_hosts_file.clone(),
            config_file: self.config_file.clone(),
            connect_timeout: self.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT),
            persist: self.persist.filter(|d| !d.is_zero()),
            strict_host_key_checking: self.strict_host_key_checking != Some(false),
        }
    }
}

fn serialize_optional_duration<S: serde::Serializer>(
    d: &Option<Duration>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => crate::units::serialize_duration(d, serializer),
        None => serializer.serialize_none(),
    }
}

/// A group's broker: `defaults.broker` merged with `groups.NAME.broker`, all fields present.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BrokerConfig {
    /// The management API, `http://` or `https://`: one URL, or one per node of a cluster,
    /// tried in order (never empty).
    pub management_urls: Vec<String>,
    /// The AMQP endpoint, `amqp://` or `amqps://`, without credentials or vhost: one URL, or
    /// one per node of a cluster, tried in order (never empty).
    pub amqp_urls: Vec<String>,
    /// The virtual host.
    pub vhost: String,
    /// The broker user.
    pub user: String,
    /// Where the password is.
    pub password: SecretRef,
    /// How long a run waits for the broker to answer again (a restart, a lost connection)
    /// before it stops at a step boundary.
    pub reconnect_deadline: std::time::Duration,
    /// The deadline of one whole listing of the vhost's queues or bindings (read as it
    /// streams), which takes longer the more queues the vhost holds; every other call to the
    /// management API has the per-call timeout.
    pub listing_timeout: std::time::Duration,
}

/// How long a run waits for its broker to come back by default.
pub const DEFAULT_RECONNECT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(120);

/// The deadline of a listing of queues or bindings by default: a broker that lists 20,000
/// queues in a few seconds lists several hundred thousand in that time.
pub const DEFAULT_LISTING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

impl BrokerConfig {
    /// `user@host:port/vhost` of the management API for messages, e.g.
    /// `roll-lab@127.0.0.1:15672/ops`; a cluster's nodes are separated by commas
    /// (`roll-lab@127.0.0.1:15681,127.0.0.1:15682/quorum`); a `/` in the vhost shows as `%2F`.
    /// Never a secret.
    pub fn display(&self) -> String {
        let nodes: Vec<&str> = self.management_urls.iter().map(|u| authority(u)).collect();
        format!(
            "{}@{}/{}",
            self.user,
            nodes.join(","),
            self.vhost.replace('/', "%2F")
        )
    }

    /// The first management URL: the one the inventory names first.
    pub fn management_url(&self) -> &str {
        self.management_urls.first().map_or("", String::as_str)
    }

    /// The first AMQP URL: the one the inventory names first.
    pub fn amqp_url(&self) -> &str {
        self.amqp_urls.first().map_or("", String::as_str)
    }
}

/// The `host:port` of a URL (what follows the scheme, up to the path), for messages.
pub fn authority(url: &str) -> &str {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    after_scheme
        .split(['/', '?', '#'])
        .next()
        .unwrap_or(after_scheme)
}

#[cfg(test)]
mod tests;
