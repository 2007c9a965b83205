//! From the file's text to a checked [`Inventory`]: reading, merging, expanding and every check,
//! each error tied to the position of the offending item.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::source::Positions;

use super::raw::{RawBroker, RawGroup, RawHost, RawInventory, RawSsh, RawUrls, VarValue};
use super::{
    BrokerConfig, Group, Half, Host, Inventory, InventoryError, NAME_PLACEHOLDER, Role, SecretRef,
    SshSettings, expand_range,
};

/// The message for a `password` key, or credentials in a broker URL.
pub(super) const INLINE_PASSWORD: &str =
    "inline broker passwords are refused: use password_file or password_env";

/// The message for a `password` key in an SSH table.
const INLINE_SSH_PASSWORD: &str =
    "inline ssh passwords are refused: use identity_file (key-based login)";

/// Reads and checks `text`; see [`super::parse_all`].
pub(super) fn build(text: &str, path: &Path) -> Result<Inventory, Vec<InventoryError>> {
    let mut checker = Checker::new(text, path);
    let raw = match read(text) {
        Ok(raw) => raw,
        Err(Refusal::Toml(err)) => return Err(vec![checker.toml_error(&err)]),
        Err(Refusal::Password { at, message }) => {
            checker.error(at, message);
            return Err(checker.into_errors());
        }
    };
    let inventory = checker.inventory(raw);
    if checker.errors.is_empty() {
        Ok(inventory)
    } else {
        Err(checker.into_errors())
    }
}

/// Why the file could not even be read into [`RawInventory`].
enum Refusal {
    Toml(toml::de::Error),
    Password { at: usize, message: &'static str },
}

/// Parses the text, refusing any `password` key before serde sees the structure (so that the
/// message is about passwords rather than an unknown field).
fn read(text: &str) -> Result<RawInventory, Refusal> {
    let document = DeTable::parse(text).map_err(Refusal::Toml)?;
    if let Some((at, message)) = find_password(document.get_ref(), false) {
        return Err(Refusal::Password { at, message });
    }
    toml::from_str(text).map_err(Refusal::Toml)
}

/// The first `password` key in `table`, at any depth.
fn find_password(table: &DeTable<'_>, in_ssh: bool) -> Option<(usize, &'static str)> {
    let mut found: Option<(usize, &'static str)> = None;
    let mut keep = |candidate: Option<(usize, &'static str)>| {
        if let Some(candidate) = candidate
            && found.is_none_or(|(at, _)| candidate.0 < at)
        {
            found = Some(candidate);
        }
    };
    for (key, value) in table.iter() {
        let name: &str = key.get_ref();
        if name == "password" {
            let message = if in_ssh {
                INLINE_SSH_PASSWORD
            } else {
                INLINE_PASSWORD
            };
            keep(Some((key.span().start, message)));
        }
        keep(find_password_in_value(value, in_ssh || name == "ssh"));
    }
    found
}

fn find_password_in_value(
    value: &Spanned<DeValue<'_>>,
    in_ssh: bool,
) -> Option<(usize, &'static str)> {
    match value.get_ref() {
        DeValue::Table(table) => find_password(table, in_ssh),
        DeValue::Array(items) => items
            .iter()
            .filter_map(|item| find_password_in_value(item, in_ssh))
            .min_by_key(|(at, _)| *at),
        _ => None,
    }
}

/// Broker settings of one table, checked but not yet complete.
#[derive(Debug, Clone, Default)]
struct PartialBroker {
    management_url: Option<Vec<String>>,
    amqp_url: Option<Vec<String>>,
    vhost: Option<String>,
    user: Option<String>,
    password: Option<SecretRef>,
    reconnect_deadline: Option<std::time::Duration>,
    listing_timeout: Option<std::time::Duration>,
    /// A field was refused (and reported): do not also report it missing.
    refused: bool,
}

impl PartialBroker {
    /// These settings with those of `over` taking precedence, field by field; the password
    /// source (file or environment) counts as one field.
    fn overlay(&self, over: &PartialBroker) -> PartialBroker {
        PartialBroker {
            management_url: over
                .management_url
                .clone()
                .or_else(|| self.management_url.clone()),
            amqp_url: over.amqp_url.clone().or_else(|| self.amqp_url.clone()),
            vhost: over.vhost.clone().or_else(|| self.vhost.clone()),
            user: over.user.clone().or_else(|| self.user.clone()),
            password: over.password.clone().or_else(|| self.password.clone()),
            reconnect_deadline: over.reconnect_deadline.or(self.reconnect_deadline),
            listing_timeout: over.listing_timeout.or(self.listing_timeout),
            refused: self.refused || over.refused,
        }
    }

    /// The complete configuration, or the names of the missing fields (none when a field was
    /// refused: that error is enough).
    fn complete(self) -> Result<BrokerConfig, Vec<&'static str>> {
        match self {
            PartialBroker {
                management_url: Some(management_url),
                amqp_url: Some(amqp_url),
                vhost: Some(vhost),
                user: Some(user),
                password: Some(password),
                reconnect_deadline,
                listing_timeout,
                ..
            } => Ok(BrokerConfig {
                management_urls: management_url,
                amqp_urls: amqp_url,
                vhost,
                user,
                password,
                reconnect_deadline: reconnect_deadline.unwrap_or(super::DEFAULT_RECONNECT_DEADLINE),
                listing_timeout: listing_timeout.unwrap_or(super::DEFAULT_LISTING_TIMEOUT),
            }),
            partial => {
                let mut missing = Vec::new();
                if partial.refused {
                    return Err(missing);
                }
                if partial.management_url.is_none() {
                    missing.push("management_url");
                }
                if partial.amqp_url.is_none() {
                    missing.push("amqp_url");
                }
                if partial.vhost.is_none() {
                    missing.push("vhost");
                }
                if partial.user.is_none() {
                    missing.push("user");
                }
                if partial.password.is_none() {
                    missing.push("password_file or password_env");
                }
                Err(missing)
            }
        }
    }
}

/// Where a host name was first seen, for duplicate messages.
struct Seen {
    line: usize,
    half: Half,
    group: String,
}

/// One host of an active/passive pair, for the pair checks.
struct PairMember {
    host: String,
    role: Role,
    half: Half,
    at: usize,
    line: usize,
}

/// The pairs of a group so far, each with its members.
type Pairs = Vec<(String, Vec<PairMember>)>;

/// What a group's host entries have given so far.
#[derive(Default)]
struct GroupHosts {
    hosts: Vec<Host>,
    halves_seen: HashSet<Half>,
    pairs: Pairs,
}

/// A host entry being checked: its name as written, the names it expands to, its half, and
/// where it is (the entry, its name, its line).
struct EntryPlace<'e> {
    pattern: &'e str,
    names: &'e [String],
    half: Half,
    at: usize,
    name_at: usize,
    line: usize,
}

/// Collects errors with their byte offsets while building the inventory.
struct Checker<'a> {
    path: &'a Path,
    /// The directory relative paths are resolved against.
    base_dir: PathBuf,
    /// Lines and columns of byte offsets in the file.
    positions: Positions<'a>,
    /// Byte offset (None: no position) and message.
    errors: Vec<(Option<usize>, String)>,
    /// Every host name so far, across groups.
    seen_hosts: HashMap<String, Seen>,
    /// Every pair name so far: its group and line.
    pair_groups: HashMap<String, (String, usize)>,
}

impl<'a> Checker<'a> {
    fn new(text: &'a str, path: &'a Path) -> Self {
        Checker {
            path,
            base_dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
            positions: Positions::new(text),
            errors: Vec::new(),
            seen_hosts: HashMap::new(),
            pair_groups: HashMap::new(),
        }
    }

    /// Records an error at byte offset `at`.
    fn error(&mut self, at: usize, message: impl Into<String>) {
        self.errors.push((Some(at), message.into()));
    }

    /// Line and column, both from 1, of byte offset `at`.
    fn position(&self, at: usize) -> (usize, usize) {
        self.positions.line_col(at)
    }

    /// The line, from 1, of byte offset `at`.
    fn line(&self, at: usize) -> usize {
        self.position(at).0
    }

    fn invalid(&self, at: Option<usize>, message: String) -> InventoryError {
        let (line, col) = at.map_or((0, 0), |at| self.position(at));
        InventoryError::Invalid {
            path: self.path.to_path_buf(),
            line,
            col,
            message,
        }
    }

    fn toml_error(&self, err: &toml::de::Error) -> InventoryError {
        let message = err.message().trim_end().to_string();
        self.invalid(err.span().map(|span| span.start), message)
    }

    /// The errors in file order (errors without a position first).
    fn into_errors(mut self) -> Vec<InventoryError> {
        self.errors.sort_by_key(|(at, _)| *at);
        let errors = std::mem::take(&mut self.errors);
        errors
            .into_iter()
            .map(|(at, message)| self.invalid(at, message))
            .collect()
    }

    /// Merges and checks everything; errors are collected in `self.errors`.
    fn inventory(&mut self, raw: RawInventory) -> Inventory {
        let (default_ssh, default_broker) = match raw.defaults {
            Some(defaults) => (
                defaults
                    .ssh
                    .map(|ssh| self.ssh_settings(ssh.into_inner()))
                    .unwrap_or_default(),
                defaults
                    .broker
                    .map(|broker| self.partial_broker(broker.into_inner()))
                    .unwrap_or_default(),
            ),
            None => Default::default(),
        };
        let mut inventory = Inventory {
            path: self.path.to_path_buf(),
            groups: Vec::new(),
        };
        let Some(raw_groups) = raw.groups else {
            self.error(0, "no groups: add at least one [groups.NAME] table");
            return inventory;
        };
        let groups_at = raw_groups.span().start;
        let raw_groups = raw_groups.into_inner().0;
        if raw_groups.is_empty() {
            self.error(groups_at, "no groups: add at least one [groups.NAME] table");
        }
        let mut requirements = Vec::new();
        for (name, group) in raw_groups {
            let name_at = name.span().start;
            let name = name.into_inner();
            self.check_name(&name, name_at, "group");
            let header_at = group.span().start;
            let group = group.into_inner();
            requirements.push((name.clone(), group.requires.clone()));
            if let Some(built) = self.group(&name, header_at, group, &default_ssh, &default_broker)
            {
                inventory.groups.push(built);
            }
        }
        self.check_requires(&requirements);
        inventory
    }

    /// One group; `None` when its broker is incomplete (the error is recorded).
    fn group(
        &mut self,
        name: &str,
        header_at: usize,
        raw: RawGroup,
        default_ssh: &SshSettings,
        default_broker: &PartialBroker,
    ) -> Option<Group> {
        let ssh = match raw.ssh {
            Some(ssh) => {
                let group_ssh = self.ssh_settings(ssh.into_inner());
                default_ssh.overlay(&group_ssh)
            }
            None => default_ssh.clone(),
        };
        let broker = self.group_broker(name, header_at, raw.broker, default_broker);
        let hosts_at = raw.hosts.span().start;
        let entries = raw.hosts.into_inner();
        if entries.is_empty() {
            self.error(hosts_at, format!("group {name} has no hosts"));
        }
        let mut hosts = GroupHosts::default();
        for entry in entries {
            self.host_entry(name, entry, &ssh, &raw.vars, &mut hosts);
        }
        self.check_halves(name, header_at, &hosts.halves_seen);
        for (pair, members) in &hosts.pairs {
            self.check_pair(name, pair, members);
        }
        Some(Group {
            name: name.to_string(),
            requires: raw.requires.map(Spanned::into_inner),
            broker: broker?,
            ssh,
            hosts: hosts.hosts,
        })
    }

    /// A group's broker: its own settings over the defaults; `None` when incomplete (the
    /// missing fields are reported, unless a refused field was reported already).
    fn group_broker(
        &mut self,
        name: &str,
        header_at: usize,
        raw: Option<Spanned<RawBroker>>,
        default_broker: &PartialBroker,
    ) -> Option<BrokerConfig> {
        let broker_at = raw.as_ref().map_or(header_at, |b| b.span().start);
        let broker = match raw {
            Some(broker) => default_broker.overlay(&self.partial_broker(broker.into_inner())),
            None => default_broker.clone(),
        };
        match broker.complete() {
            Ok(broker) => Some(broker),
            Err(missing) if missing.is_empty() => None,
            Err(missing) => {
                self.error(
                    broker_at,
                    format!(
                        "group {name} has an incomplete broker: missing {} \
                         (set it in [groups.{name}.broker] or [defaults.broker])",
                        missing.join(", ")
                    ),
                );
                None
            }
        }
    }

    /// Every half needs a host (an empty `hosts` is reported on its own).
    fn check_halves(&mut self, group: &str, header_at: usize, halves_seen: &HashSet<Half>) {
        if halves_seen.is_empty() {
            return;
        }
        for half in Half::ALL {
            if !halves_seen.contains(&half) {
                self.error(
                    header_at,
                    format!("group {group} has no host in half {half}"),
                );
            }
        }
    }

    /// One entry of a group's `hosts`: its names expanded and checked, its pair, its SSH
    /// settings and variables over the group's; the hosts it names go to `into`.
    fn host_entry(
        &mut self,
        group: &str,
        entry: Spanned<RawHost>,
        group_ssh: &SshSettings,
        group_vars: &BTreeMap<String, VarValue>,
        into: &mut GroupHosts,
    ) {
        let at = entry.span().start;
        let line = self.line(at);
        let entry = entry.into_inner();
        into.halves_seen.insert(entry.half);
        let name_at = entry.name.span().start;
        let pattern = entry.name.get_ref().clone();
        let names = match expand_range(&pattern) {
            Ok(names) => names,
            Err(message) => {
                self.error(name_at, message);
                return;
            }
        };
        if !names
            .iter()
            .all(|host| self.check_name(host, name_at, "host"))
        {
            return;
        }
        let place = EntryPlace {
            pattern: &pattern,
            names: &names,
            half: entry.half,
            at,
            name_at,
            line,
        };
        let pair = self.entry_pair(group, &place, entry.role, entry.pair, &mut into.pairs);
        let host_ssh = match entry.ssh {
            Some(overrides) => {
                let overrides = self.ssh_settings(RawSsh::from(overrides.into_inner()));
                group_ssh.overlay(&overrides)
            }
            None => group_ssh.clone(),
        };
        let mut vars: BTreeMap<String, String> = group_vars
            .iter()
            .map(|(key, value)| (key.clone(), value.0.clone()))
            .collect();
        vars.extend(entry.vars.into_iter().map(|(key, value)| (key, value.0)));
        for host in names {
            if self.is_duplicate(&host, entry.half, group, name_at, line) {
                continue;
            }
            into.hosts.push(Host {
                ssh: host_ssh.target(&host),
                name: host,
                group: group.to_string(),
                half: entry.half,
                role: pair.as_ref().map(|(role, _)| *role),
                pair: pair.as_ref().map(|(_, pair)| pair.clone()),
                vars: vars.clone(),
                line,
            });
        }
    }

    /// The role and pair of a host entry: both or neither (the error is recorded when only
    /// one is given); a member of a pair joins the pair's members in `pairs`.
    fn entry_pair(
        &mut self,
        group: &str,
        entry: &EntryPlace<'_>,
        role: Option<Role>,
        pair: Option<Spanned<String>>,
        pairs: &mut Pairs,
    ) -> Option<(Role, String)> {
        let pattern = entry.pattern;
        match (role, pair) {
            (None, None) => None,
            (Some(role), None) => {
                self.error(
                    entry.at,
                    format!(
                        "host {pattern} has role {role} but no pair: \
                         give both role and pair, or neither"
                    ),
                );
                None
            }
            (None, Some(pair)) => {
                self.error(
                    pair.span().start,
                    format!(
                        "host {pattern} has pair {} but no role: \
                         give role = \"active\" or \"passive\"",
                        pair.get_ref()
                    ),
                );
                None
            }
            (Some(role), Some(pair)) => {
                let pair_at = pair.span().start;
                let pair = pair.into_inner();
                self.pair_member(group, entry, role, &pair, pair_at, pairs);
                Some((role, pair))
            }
        }
    }

    /// A host entry with a role and a pair: it must name exactly one host, and it joins its
    /// pair's members (for [`Checker::check_pair`]).
    fn pair_member(
        &mut self,
        group: &str,
        entry: &EntryPlace<'_>,
        role: Role,
        pair: &str,
        pair_at: usize,
        pairs: &mut Pairs,
    ) {
        if entry.names.len() != 1 {
            self.error(
                entry.name_at,
                format!(
                    "host entry {} has a role and a pair, so it must name \
                     exactly one host, not {}",
                    entry.pattern,
                    entry.names.len()
                ),
            );
        }
        if !self.check_name(pair, pair_at, "pair") {
            return;
        }
        self.join_pair(pair, group, pair_at);
        // With a range (refused above) the pattern stands for the member.
        let member = PairMember {
            host: if entry.names.len() == 1 {
                entry.names[0].clone()
            } else {
                entry.pattern.to_string()
            },
            role,
            half: entry.half,
            at: entry.at,
            line: entry.line,
        };
        match pairs.iter_mut().find(|(p, _)| p == pair) {
            Some((_, members)) => members.push(member),
            None => pairs.push((pair.to_string(), vec![member])),
        }
    }

    /// Records a duplicate-host error and returns true if `host` was seen before; otherwise
    /// remembers it.
    fn is_duplicate(
        &mut self,
        host: &str,
        half: Half,
        group: &str,
        at: usize,
        line: usize,
    ) -> bool {
        let Some(first) = self.seen_hosts.get(host) else {
            self.seen_hosts.insert(
                host.to_string(),
                Seen {
                    line,
                    half,
                    group: group.to_string(),
                },
            );
            return false;
        };
        let in_group = if first.group == group {
            String::new()
        } else {
            format!(" in group {}", first.group)
        };
        let message = if first.half == half {
            format!(
                "duplicate host {host}: already defined at line {}{in_group}",
                first.line
            )
        } else {
            format!(
                "duplicate host {host} in two halves: half {half} here, half {} at line {}{in_group}; \
                 a host belongs to one half only",
                first.half, first.line
            )
        };
        self.error(at, message);
        true
    }

    /// Records that `pair` belongs to `group`, refusing a pair spread over two groups.
    fn join_pair(&mut self, pair: &str, group: &str, at: usize) {
        let line = self.line(at);
        match self.pair_groups.get(pair) {
            Some((first_group, first_line)) if first_group != group => {
                let message = format!(
                    "pair {pair} is already used in group {first_group} (line {first_line}): \
                     a pair must be within one group"
                );
                self.error(at, message);
            }
            Some(_) => {}
            None => {
                self.pair_groups
                    .insert(pair.to_string(), (group.to_string(), line));
            }
        }
    }

    /// A pair needs exactly one active and one passive host, in different halves.
    fn check_pair(&mut self, group: &str, pair: &str, members: &[PairMember]) {
        let describe = |m: &PairMember| format!("{} (line {})", m.host, m.line);
        for role in [Role::Active, Role::Passive] {
            let with_role: Vec<&PairMember> = members.iter().filter(|m| m.role == role).collect();
            if let [first, second, ..] = with_role.as_slice() {
                self.error(
                    second.at,
                    format!(
                        "pair {pair} has more than one {role} host: {} and {}",
                        describe(first),
                        describe(second)
                    ),
                );
            }
        }
        let active = members.iter().find(|m| m.role == Role::Active);
        let passive = members.iter().find(|m| m.role == Role::Passive);
        match (active, passive) {
            (Some(active), None) => self.error(
                active.at,
                format!(
                    "incomplete pair {pair} in group {group}: active host {} has no passive \
                     partner (a pair needs one active and one passive host)",
                    describe(active)
                ),
            ),
            (None, Some(passive)) => self.error(
                passive.at,
                format!(
                    "incomplete pair {pair} in group {group}: passive host {} has no active \
                     partner (a pair needs one active and one passive host)",
                    describe(passive)
                ),
            ),
            (Some(active), Some(passive)) if active.half == passive.half => {
                let later = if active.at > passive.at {
                    active
                } else {
                    passive
                };
                self.error(
                    later.at,
                    format!(
                        "pair {pair} has both hosts in half {}: {} and {}; the active and the \
                         passive host must be in different halves",
                        active.half,
                        describe(active),
                        describe(passive)
                    ),
                );
            }
            _ => {}
        }
    }

    /// `requires` must name another existing group, without cycles.
    fn check_requires(&mut self, requirements: &[(String, Option<Spanned<String>>)]) {
        let required: HashMap<&str, &str> = requirements
            .iter()
            .filter_map(|(name, req)| req.as_ref().map(|r| (name.as_str(), r.get_ref().as_str())))
            .collect();
        let names: Vec<&str> = requirements.iter().map(|(name, _)| name.as_str()).collect();
        let mut in_reported_cycle: HashSet<&str> = HashSet::new();
        for (name, requires) in requirements {
            let Some(requires) = requires else { continue };
            let at = requires.span().start;
            let target = requires.get_ref().as_str();
            if target == name {
                self.error(at, format!("group {name} requires itself"));
                continue;
            }
            if !names.contains(&target) {
                self.error(
                    at,
                    format!(
                        "group {name} requires unknown group {target} (groups: {})",
                        names.join(", ")
                    ),
                );
                continue;
            }
            if in_reported_cycle.contains(name.as_str()) {
                continue;
            }
            // Follow the chain from this group; a cycle through it comes back to it.
            let mut chain = vec![name.as_str()];
            let mut current = target;
            while chain.len() <= names.len() {
                chain.push(current);
                if current == name {
                    in_reported_cycle.extend(chain.iter().copied());
                    self.error(at, format!("requires cycle: {}", chain.join(" -> ")));
                    break;
                }
                match required.get(current) {
                    Some(&next) => current = next,
                    None => break,
                }
            }
        }
    }

    /// Checks a group, host or pair name: letters, digits, `-`, `.`, `_`.
    fn check_name(&mut self, name: &str, at: usize, what: &str) -> bool {
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
        if !valid {
            self.error(
                at,
                format!("invalid {what} name {name:?}: use letters, digits, '-', '.' and '_'"),
            );
        }
        valid
    }

    /// Checks one SSH table.
    fn ssh_settings(&mut self, raw: RawSsh) -> SshSettings {
        SshSettings {
            user: raw.user.and_then(|user| self.template(user, "ssh user")),
            address: raw
                .address
                .and_then(|address| self.template(address, "ssh address")),
            port: raw.port.and_then(|port| {
                let value = *port.get_ref();
                let valid = u16::try_from(value).ok().filter(|p| *p != 0);
                if valid.is_none() {
                    self.error(
                        port.span().start,
                        format!("invalid ssh port {value}: must be between 1 and 65535"),
                    );
                }
                valid
            }),
            identity_file: raw
                .identity_file
                .and_then(|file| self.file_path(file, "identity_file")),
            known_hosts_file: raw
                .known_hosts_file
                .and_then(|file| self.file_path(file, "known_hosts_file")),
            config_file: raw
                .config_file
                .and_then(|file| self.file_path(file, "config_file")),
            connect_timeout: raw.connect_timeout.and_then(|timeout| {
                let value = timeout.get_ref().0;
                if value.is_zero() {
                    self.error(
                        timeout.span().start,
                        "ssh connect_timeout must be more than 0s",
                    );
                    return None;
                }
                Some(value)
            }),
            persist: raw.persist.map(|persist| persist.into_inner().0),
            strict_host_key_checking: raw.strict_host_key_checking,
        }
    }

    /// A user or address: not empty, no spaces, `{name}` as the only placeholder.
    fn template(&mut self, value: Spanned<String>, what: &str) -> Option<String> {
        let at = value.span().start;
        let value = value.into_inner();
        if value.trim().is_empty() {
            self.error(at, format!("{what} is empty"));
            return None;
        }
        if value.chars().any(char::is_whitespace) {
            self.error(
                at,
                format!("invalid {what} {value:?}: must not contain spaces"),
            );
            return None;
        }
        if value.replace(NAME_PLACEHOLDER, "").contains(['{', '}']) {
            self.error(
                at,
                format!("invalid {what} {value:?}: the only placeholder is {NAME_PLACEHOLDER}"),
            );
            return None;
        }
        Some(value)
    }

    /// A path: `~/` expanded from `$HOME`, relative paths resolved against the inventory's
    /// directory.
    fn file_path(&mut self, value: Spanned<String>, what: &str) -> Option<PathBuf> {
        let at = value.span().start;
        let value = value.into_inner();
        if value.trim().is_empty() {
            self.error(at, format!("{what} is empty"));
            return None;
        }
        let home_relative = if value == "~" {
            Some("")
        } else {
            value.strip_prefix("~/")
        };
        if let Some(rest) = home_relative {
            return match std::env::var_os("HOME") {
                Some(home) => Some(PathBuf::from(home).join(rest)),
                None => {
                    self.error(at, format!("cannot expand ~ in {what}: HOME is not set"));
                    None
                }
            };
        }
        Some(self.base_dir.join(value))
    }

    /// Checks one broker table.
    fn partial_broker(&mut self, raw: RawBroker) -> PartialBroker {
        let errors_before = self.errors.len();
        let password = match (raw.password_file, raw.password_env) {
            (Some(file), Some(env)) => {
                let at = file.span().start.max(env.span().start);
                self.error(
                    at,
                    "give only one of password_file and password_env in a broker table",
                );
                None
            }
            (Some(file), None) => self.file_path(file, "password_file").map(SecretRef::File),
            (None, Some(env)) => self.env_name(env).map(SecretRef::Env),
            (None, None) => None,
        };
        let mut partial = PartialBroker {
            management_url: raw
                .management_url
                .and_then(|urls| self.urls(urls, "management_url", &["http", "https"])),
            amqp_url: raw
                .amqp_url
                .and_then(|urls| self.urls(urls, "amqp_url", &["amqp", "amqps"])),
            vhost: raw
                .vhost
                .and_then(|vhost| self.plain_text(vhost, "broker vhost")),
            user: raw
                .user
                .and_then(|user| self.plain_text(user, "broker user")),
            password,
            reconnect_deadline: raw.reconnect_deadline.map(|d| d.into_inner().0),
            listing_timeout: raw.listing_timeout.map(|d| d.into_inner().0),
            refused: false,
        };
        partial.refused = self.errors.len() > errors_before;
        partial
    }

    /// A name used in commands and files on the hosts (vhost, broker user): not empty, and
    /// no control character (a newline would start a new line in a rendered config file).
    fn plain_text(&mut self, value: Spanned<String>, what: &str) -> Option<String> {
        if let Some(c) = value.get_ref().chars().find(|c| c.is_control()) {
            self.error(
                value.span().start,
                format!("{what} contains the control character {c:?}"),
            );
            return None;
        }
        self.not_empty(value, what)
    }

    fn not_empty(&mut self, value: Spanned<String>, what: &str) -> Option<String> {
        if value.get_ref().is_empty() {
            self.error(value.span().start, format!("{what} is empty"));
            return None;
        }
        Some(value.into_inner())
    }

    /// An environment variable name: letters, digits and `_`, not starting with a digit.
    fn env_name(&mut self, value: Spanned<String>) -> Option<String> {
        let name = value.get_ref();
        let valid = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            self.error(
                value.span().start,
                format!(
                    "invalid password_env {name:?}: expected an environment variable name \
                     such as RABBITMQ_PASSWORD"
                ),
            );
            return None;
        }
        Some(value.into_inner())
    }

    /// One URL or a non-empty array of them (a cluster's nodes, tried in order), each with one
    /// of `schemes`, a host, and no credentials; each error at the item it is about. A URL is
    /// never quoted in messages, in case it holds a password.
    fn urls(
        &mut self,
        value: Spanned<RawUrls>,
        what: &str,
        schemes: &[&str],
    ) -> Option<Vec<String>> {
        let at = value.span().start;
        let items = match value.into_inner() {
            RawUrls::One(url) => vec![(at, url, what.to_string())],
            RawUrls::Many(urls) if urls.is_empty() => {
                self.error(
                    at,
                    format!(
                        "{what} is an empty array: give one URL, or one per node of the cluster"
                    ),
                );
                return None;
            }
            RawUrls::Many(urls) => urls
                .into_iter()
                .enumerate()
                .map(|(i, url)| {
                    let at = url.span().start;
                    (at, url.into_inner(), format!("{what} (item {})", i + 1))
                })
                .collect(),
        };
        let same = |a: &str, b: &str| {
            a.trim_end_matches('/')
                .eq_ignore_ascii_case(b.trim_end_matches('/'))
        };
        let mut valid: Vec<(usize, String)> = Vec::with_capacity(items.len());
        let mut errors = 0;
        for (i, (at, url, what_item)) in items.into_iter().enumerate() {
            if let Err(message) = check_url(&url, &what_item, schemes) {
                self.error(at, message);
                errors += 1;
            } else if let Some((first, _)) = valid.iter().find(|(_, u)| same(u, &url)) {
                self.error(
                    at,
                    format!("{what_item} repeats item {} of the array", first + 1),
                );
                errors += 1;
            } else {
                valid.push((i, url));
            }
        }
        (errors == 0).then(|| valid.into_iter().map(|(_, url)| url).collect())
    }
}

/// See [`Checker::url`].
fn check_url(url: &str, what: &str, schemes: &[&str]) -> Result<(), String> {
    let example = format!("{}://host:port", schemes[schemes.len() - 1]);
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!("invalid {what}: expected a URL such as {example}"));
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    if let Some((userinfo, _)) = authority.rsplit_once('@') {
        if userinfo.contains(':') {
            return Err(format!("{INLINE_PASSWORD} (found in {what})"));
        }
        return Err(format!(
            "invalid {what}: it must not contain a user name; set the broker's user instead"
        ));
    }
    if !schemes.iter().any(|s| s.eq_ignore_ascii_case(scheme)) {
        return Err(format!(
            "invalid {what}: the scheme must be {}",
            schemes.join(" or ")
        ));
    }
    let host_end = if authority.starts_with('[') {
        authority.find(']').map_or(authority.len(), |i| i + 1)
    } else {
        authority.find(':').unwrap_or(authority.len())
    };
    let (host, port) = authority.split_at(host_end);
    if host.is_empty() || host == "[]" {
        return Err(format!("invalid {what}: no host (expected e.g. {example})"));
    }
    if let Some(port) = port.strip_prefix(':') {
        if !port.parse::<u16>().is_ok_and(|p| p != 0) {
            return Err(format!(
                "invalid {what}: the port must be between 1 and 65535"
            ));
        }
    } else if !port.is_empty() {
        return Err(format!("invalid {what}: expected a URL such as {example}"));
    }
    let is_amqp = schemes.contains(&"amqp");
    if is_amqp
        && !(tail.is_empty() || tail == "/" || tail.starts_with('?') || tail.starts_with("/?"))
    {
        return Err(format!(
            "invalid {what}: it must not name a vhost; set the broker's vhost instead"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_url;

    const AMQP: &[&str] = &["amqp", "amqps"];
    const HTTP: &[&str] = &["http", "https"];

    #[test]
    fn urls() {
        assert_eq!(
            check_url("amqps://ddsr.cmc.example:5671", "amqp_url", AMQP),
            Ok(())
        );
        assert_eq!(
            check_url("amqp://127.0.0.1:5672/", "amqp_url", AMQP),
            Ok(())
        );
        assert_eq!(
            check_url("amqp://[::1]:5672?heartbeat=10", "amqp_url", AMQP),
            Ok(())
        );
        assert_eq!(
            check_url("http://127.0.0.1:15672", "management_url", HTTP),
            Ok(())
        );
        assert_eq!(
            check_url("https://mq.example/rabbitmq/", "management_url", HTTP),
            Ok(())
        );
        let err = |url: &str, schemes| check_url(url, "x", schemes).unwrap_err();
        assert!(err("amqp://u:secret@h:5672", AMQP).starts_with("inline broker passwords"));
        assert!(!err("amqp://u:secret@h:5672", AMQP).contains("secret"));
        assert!(err("amqp://u@h:5672", AMQP).contains("user name"));
        assert!(err("http://h:15672", AMQP).contains("scheme must be amqp or amqps"));
        assert!(err("amqp://h:5672/ops", AMQP).contains("vhost"));
        assert!(err("amqp://:5672", AMQP).contains("no host"));
        assert!(err("amqp://h:0", AMQP).contains("port"));
        assert!(err("amqp://h:99999", AMQP).contains("port"));
        assert!(err("127.0.0.1:5672", AMQP).contains("expected a URL"));
    }
}
