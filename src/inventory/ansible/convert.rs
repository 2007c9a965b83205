//! An Ansible inventory as roll's TOML.
//!
//! - **Groups**: each Ansible group that lists hosts itself becomes a roll group (`all` and
//!   `ungrouped` never do), or the groups named with `--groups`; a roll group holds the hosts
//!   of its Ansible group and of its children. A host in two roll groups, or in none, is an
//!   error.
//! - **Variables** are merged as Ansible merges them: `all`, then the host's groups from the
//!   shallowest to the deepest (by name within a depth), then the host's own.
//! - **SSH**: `ansible_host`, `ansible_user`, `ansible_port` (and their `ansible_ssh_` forms),
//!   `ansible_ssh_private_key_file`, `ansible_timeout`, and from `ansible_ssh_common_args` /
//!   `ansible_ssh_extra_args`: `-o UserKnownHostsFile=`, `-o StrictHostKeyChecking=`,
//!   `-o ConnectTimeout=`, `-F`, `-i`, `-p`. A value every host shares goes to
//!   `[defaults.ssh]`, one a group shares to the group (a host's own name in it written as
//!   `{name}`), the others to the host.
//! - **roll's own** variables: `roll_half`, `roll_role`, `roll_pair`, `roll_requires` and
//!   `roll_broker_<key>` (management_url, amqp_url, vhost, user, password_file,
//!   password_env, reconnect_deadline, listing_timeout); a cluster's URLs comma-separated,
//!   in the order they are tried.
//! - **Halves**: `--half-by var:NAME` (the host's variable, `a` or `b`), `first-half` (the
//!   first half of the group's hosts in order), `odd-even` (alternating); without it,
//!   `roll_half` when every host has it, else `odd-even`, said in a comment.
//! - Every other variable becomes a roll host variable; other `ansible_*` variables are not
//!   carried over (a comment says which); a password never is, and its value is never shown.
//!
//! The TOML written is read back with roll's own inventory reader before it is given out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::{AnsibleInventory, ImportError, ImportErrors, Var, is_secret};

/// How hosts are put in halves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HalfBy {
    /// Alternating, in the group's order: a, b, a, b...
    OddEven,
    /// The first half of the group's hosts (rounded up) in a, the rest in b.
    FirstHalf,
    /// The host's variable of that name: `a` or `b`.
    Var(String),
}

impl std::str::FromStr for HalfBy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "odd-even" => Ok(HalfBy::OddEven),
            "first-half" => Ok(HalfBy::FirstHalf),
            _ => match s.strip_prefix("var:") {
                Some(name) if !name.is_empty() => Ok(HalfBy::Var(name.to_string())),
                _ => Err(format!(
                    "invalid --half-by {s:?}: odd-even, first-half or var:NAME"
                )),
            },
        }
    }
}

/// How to import.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `None`: `roll_half` when every host has it, else odd-even.
    pub half_by: Option<HalfBy>,
    /// The Ansible groups that become roll groups (default: those that list hosts).
    pub groups: Option<Vec<String>>,
}

/// The TOML, and what the operator should know (also written in it as comments).
#[derive(Debug, Clone)]
pub struct Imported {
    pub toml: String,
    pub notes: Vec<String>,
    /// Problems roll's own reader found in the TOML (an incomplete broker, a half left
    /// empty...): the file is written, to be completed by hand.
    pub incomplete: Vec<String>,
}

const SSH_KEYS: [&str; 8] = [
    "user",
    "address",
    "port",
    "identity_file",
    "known_hosts_file",
    "config_file",
    "connect_timeout",
    "strict_host_key_checking",
];
/// The SSH settings a roll host entry may have of its own.
const HOST_SSH_KEYS: [&str; 3] = ["user", "address", "port"];
const BROKER_KEYS: [&str; 8] = [
    "management_url",
    "amqp_url",
    "vhost",
    "user",
    "password_file",
    "password_env",
    "reconnect_deadline",
    "listing_timeout",
];

/// A value of a host's setting, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Setting {
    value: String,
    line: usize,
}

/// One host as roll will have it.
#[derive(Debug, Clone)]
struct Host {
    name: String,
    line: usize,
    ssh: BTreeMap<&'static str, Setting>,
    broker: BTreeMap<&'static str, Setting>,
    requires: Option<Setting>,
    half: Option<Setting>,
    role: Option<Setting>,
    pair: Option<Setting>,
    vars: BTreeMap<String, Setting>,
    /// The merged variables, for `--half-by var:NAME`.
    all_vars: BTreeMap<String, Setting>,
}

struct Context<'a> {
    inventory: &'a AnsibleInventory,
    errors: Vec<ImportError>,
    notes: BTreeSet<String>,
}

impl Context<'_> {
    fn error(&mut self, line: Option<usize>, message: String) {
        self.errors.push(ImportError {
            path: self.inventory.path.clone(),
            line,
            message,
        });
    }

    fn at(&self, line: usize) -> String {
        format!("{}:{line}", self.inventory.path.display())
    }
}

/// Converts an Ansible inventory (read from `source`) into roll's TOML.
pub fn convert(inventory: &AnsibleInventory, options: &Options) -> Result<Imported, ImportErrors> {
    let mut cx = Context {
        inventory,
        errors: Vec::new(),
        notes: BTreeSet::new(),
    };
    let depth = depths(&mut cx);
    let chosen = chosen_groups(&mut cx, options);
    let mut groups: Vec<(String, usize, Vec<Host>)> = Vec::new();
    let mut placed: BTreeMap<String, (String, usize)> = BTreeMap::new();
    for name in &chosen {
        let Some(group) = inventory.group(name) else {
            continue;
        };
        let mut hosts = Vec::new();
        for host_name in hosts_under(inventory, name) {
            if let Some((other, line)) = placed.get(&host_name) {
                let message = format!(
                    "host {host_name} is in group {other} (line {line}) and in group {name}: \
                     a roll host is in one group; choose the groups with --groups"
                );
                cx.error(Some(group.line), message);
                continue;
            }
            let host = host(&mut cx, &host_name, &depth);
            placed.insert(host_name, (name.clone(), host.line));
            hosts.push(host);
        }
        groups.push((name.clone(), group.line, hosts));
    }
    for group in &inventory.groups {
        for h in &group.hosts {
            if !placed.contains_key(&h.name) {
                let message = format!(
                    "host {} (group {}) is in none of the groups imported ({}): every roll \
                     host is in a group",
                    h.name,
                    group.name,
                    chosen.join(", ")
                );
                cx.error(Some(h.line), message);
                placed.insert(h.name.clone(), (String::new(), h.line));
            }
        }
    }
    let mut out = Writer::default();
    let half_by = half_rule(&groups, options);
    for (_, _, hosts) in groups.iter_mut() {
        assign_halves(&mut cx, hosts, &half_by);
    }
    let defaults = write_defaults(&mut cx, &groups, &mut out);
    for (name, line, hosts) in &groups {
        write_group(&mut cx, name, *line, hosts, &defaults, &mut out);
    }
    if !cx.errors.is_empty() {
        return Err(ImportErrors(cx.errors));
    }
    let notes: Vec<String> = cx.notes.into_iter().collect();
    let mut toml = format!(
        "# Imported by `roll inventory import` from the Ansible inventory {}.\n\
         # Notes that say \"guessed\" are worth a look; `roll check` tells whether it works.\n",
        inventory.path.display()
    );
    for n in &notes {
        toml.push_str(&format!("# note: {n}\n"));
    }
    toml.push('\n');
    toml.push_str(&out.text);
    let incomplete = match crate::inventory::parse_all(&toml, Path::new("the imported inventory")) {
        Ok(_) => vec![],
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    };
    Ok(Imported {
        toml,
        notes,
        incomplete,
    })
}

/// Each group's depth below `all` (the longest path), `all` being 0.
fn depths(cx: &mut Context) -> BTreeMap<String, usize> {
    let inventory = cx.inventory;
    let mut parents: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for g in &inventory.groups {
        for (child, _) in &g.children {
            parents
                .entry(child.as_str())
                .or_default()
                .push(g.name.as_str());
        }
    }
    let mut depth = BTreeMap::new();
    fn walk<'a>(
        name: &'a str,
        parents: &BTreeMap<&'a str, Vec<&'a str>>,
        seen: &mut Vec<&'a str>,
        depth: &mut BTreeMap<String, usize>,
    ) -> Result<usize, String> {
        if name == "all" {
            return Ok(0);
        }
        if let Some(d) = depth.get(name) {
            return Ok(*d);
        }
        if seen.contains(&name) {
            return Err(format!(
                "groups are children of each other: {}",
                seen.join(" -> ")
            ));
        }
        seen.push(name);
        let mut d = 1;
        for parent in parents.get(name).into_iter().flatten() {
            d = d.max(walk(parent, parents, seen, depth)? + 1);
        }
        seen.pop();
        depth.insert(name.to_string(), d);
        Ok(d)
    }
    for g in &inventory.groups {
        if let Err(message) = walk(&g.name, &parents, &mut Vec::new(), &mut depth) {
            cx.error(Some(g.line), message);
            break;
        }
    }
    depth
}

fn chosen_groups(cx: &mut Context, options: &Options) -> Vec<String> {
    match &options.groups {
        Some(names) => {
            for name in names {
                if cx.inventory.group(name).is_none() {
                    cx.error(None, format!("--groups: no group named {name:?}"));
                }
            }
            names.clone()
        }
        None => cx
            .inventory
            .groups
            .iter()
            .filter(|g| !g.hosts.is_empty() && g.name != "all" && g.name != "ungrouped")
            .map(|g| g.name.clone())
            .collect(),
    }
}

/// The hosts of a group and of its children, in order, once each.
fn hosts_under(inventory: &AnsibleInventory, name: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut stack = vec![name.to_string()];
    let mut visited = BTreeSet::new();
    while let Some(g) = stack.pop() {
        if !visited.insert(g.clone()) {
            continue;
        }
        if let Some(group) = inventory.group(&g) {
            for h in &group.hosts {
                if !names.contains(&h.name) {
                    names.push(h.name.clone());
                }
            }
            for (child, _) in group.children.iter().rev() {
                stack.push(child.clone());
            }
        }
    }
    names
}

/// A host's merged variables, turned into roll's settings.
fn host(cx: &mut Context, name: &str, depth: &BTreeMap<String, usize>) -> Host {
    let inventory = cx.inventory;
    // Its groups: those listing it, and their ancestors.
    let mut groups: BTreeSet<&str> = BTreeSet::new();
    let mut stack: Vec<&str> = inventory
        .groups
        .iter()
        .filter(|g| g.hosts.iter().any(|h| h.name == name))
        .map(|g| g.name.as_str())
        .collect();
    while let Some(g) = stack.pop() {
        if groups.insert(g) {
            for parent in inventory
                .groups
                .iter()
                .filter(|p| p.children.iter().any(|(c, _)| c == g))
            {
                stack.push(parent.name.as_str());
            }
        }
    }
    groups.insert("all");
    let mut ordered: Vec<&str> = groups.into_iter().collect();
    ordered.sort_by_key(|g| (depth.get(*g).copied().unwrap_or(0), g.to_string()));
    let mut merged: BTreeMap<String, Setting> = BTreeMap::new();
    let mut apply = |vars: &[Var]| {
        for v in vars {
            merged.insert(
                v.key.clone(),
                Setting {
                    value: super::for_host(&v.value, name),
                    line: v.line,
                },
            );
        }
    };
    for g in &ordered {
        if let Some(group) = inventory.group(g) {
            apply(&group.vars);
        }
    }
    let mut line = 0;
    for group in &inventory.groups {
        for h in group.hosts.iter().filter(|h| h.name == name) {
            if line == 0 {
                line = h.line;
            }
            apply(&h.vars);
        }
    }
    let mut host = Host {
        name: name.to_string(),
        line,
        ssh: BTreeMap::new(),
        broker: BTreeMap::new(),
        requires: None,
        half: None,
        role: None,
        pair: None,
        vars: BTreeMap::new(),
        all_vars: merged.clone(),
    };
    let mut dropped = Vec::new();
    for (key, setting) in merged {
        let k = key.to_ascii_lowercase();
        match k.as_str() {
            "ansible_host" | "ansible_ssh_host" => {
                host.ssh.insert("address", setting);
            }
            "ansible_user" | "ansible_ssh_user" => {
                host.ssh.insert("user", setting);
            }
            "ansible_port" | "ansible_ssh_port" => {
                if setting.value.parse::<u16>().is_err() {
                    let message = format!("{key} = {:?} is not a port", setting.value);
                    cx.error(Some(setting.line), message);
                }
                host.ssh.insert("port", setting);
            }
            "ansible_ssh_private_key_file" | "ansible_private_key_file" => {
                host.ssh.insert("identity_file", setting);
            }
            "ansible_timeout" | "ansible_ssh_timeout" => {
                host.ssh.insert(
                    "connect_timeout",
                    Setting {
                        value: format!("{}s", setting.value),
                        line: setting.line,
                    },
                );
            }
            "ansible_ssh_common_args" | "ansible_ssh_extra_args" => {
                ssh_args(cx, &mut host, &key, &setting);
            }
            "ansible_connection" => {
                if !matches!(setting.value.as_str(), "ssh" | "smart" | "paramiko") {
                    let message = format!(
                        "host {name}: ansible_connection = {:?}: roll reaches hosts over SSH only",
                        setting.value
                    );
                    cx.error(Some(setting.line), message);
                }
            }
            "roll_half" => host.half = Some(setting),
            "roll_role" => host.role = Some(setting),
            "roll_pair" => host.pair = Some(setting),
            "roll_requires" => host.requires = Some(setting),
            _ if k.starts_with("roll_broker_") => {
                let field = &k["roll_broker_".len()..];
                match BROKER_KEYS.iter().find(|b| **b == field) {
                    Some(b) => {
                        host.broker.insert(b, setting);
                    }
                    None => {
                        let message = format!(
                            "unknown roll broker variable {key} (known: roll_broker_{})",
                            BROKER_KEYS.join(", roll_broker_")
                        );
                        cx.error(Some(setting.line), message);
                    }
                }
            }
            _ if is_secret(&k) => {
                let note = format!(
                    "a password ({key}, {}) was not carried over: roll reads passwords only \
                     from files or the environment",
                    cx.at(setting.line)
                );
                cx.notes.insert(note);
            }
            _ if k.starts_with("ansible_") => dropped.push(key),
            _ => {
                host.vars.insert(key, setting);
            }
        }
    }
    for key in dropped {
        cx.notes
            .insert(format!("not carried over (roll does not use it): {key}"));
    }
    host
}

/// The SSH options of `ansible_ssh_common_args` that roll has settings for.
fn ssh_args(cx: &mut Context, host: &mut Host, key: &str, setting: &Setting) {
    let words: Vec<&str> = setting.value.split_whitespace().collect();
    let mut i = 0;
    let at = |value: String| Setting {
        value,
        line: setting.line,
    };
    while i < words.len() {
        let word = words[i];
        let (flag, inline) = match word {
            w if w.len() > 2 && w.starts_with('-') && !w.starts_with("--") => {
                (&w[..2], Some(&w[2..]))
            }
            w => (w, None),
        };
        let mut value = || -> Option<String> {
            match inline {
                Some(v) => Some(v.to_string()),
                None => {
                    i += 1;
                    words.get(i).map(|v| v.to_string())
                }
            }
        };
        match flag {
            "-o" => {
                let Some(option) = value() else { break };
                let (name, v) = option
                    .split_once('=')
                    .map_or((option.as_str(), ""), |(n, v)| (n, v));
                match name.to_ascii_lowercase().as_str() {
                    "userknownhostsfile" => {
                        host.ssh.insert("known_hosts_file", at(v.to_string()));
                    }
                    "stricthostkeychecking" => {
                        let strict = !matches!(v.to_ascii_lowercase().as_str(), "no" | "off");
                        host.ssh
                            .insert("strict_host_key_checking", at(strict.to_string()));
                    }
                    "connecttimeout" => {
                        host.ssh.insert("connect_timeout", at(format!("{v}s")));
                    }
                    _ => {
                        cx.notes.insert(format!(
                            "ssh option {name} of {key} not carried over: put it in an \
                             ssh_config file and set ssh.config_file"
                        ));
                    }
                }
            }
            "-F" => {
                if let Some(v) = value() {
                    host.ssh.insert("config_file", at(v));
                }
            }
            "-i" => {
                if let Some(v) = value() {
                    host.ssh.insert("identity_file", at(v));
                }
            }
            "-p" => {
                if let Some(v) = value() {
                    host.ssh.insert("port", at(v));
                }
            }
            other => {
                cx.notes
                    .insert(format!("ssh argument {other} of {key} not carried over"));
            }
        }
        i += 1;
    }
}

/// The rule that puts hosts in halves.
fn half_rule(groups: &[(String, usize, Vec<Host>)], options: &Options) -> HalfRule {
    match &options.half_by {
        Some(rule) => HalfRule {
            rule: rule.clone(),
            guessed: false,
        },
        None => {
            let every = groups
                .iter()
                .flat_map(|(_, _, hosts)| hosts)
                .all(|h| h.half.is_some());
            if every {
                HalfRule {
                    rule: HalfBy::Var("roll_half".into()),
                    guessed: false,
                }
            } else {
                HalfRule {
                    rule: HalfBy::OddEven,
                    guessed: true,
                }
            }
        }
    }
}

struct HalfRule {
    rule: HalfBy,
    /// No rule was given and not every host has `roll_half`.
    guessed: bool,
}

fn assign_halves(cx: &mut Context, hosts: &mut [Host], rule: &HalfRule) {
    let n = hosts.len();
    for (i, host) in hosts.iter_mut().enumerate() {
        let half = match &rule.rule {
            HalfBy::OddEven => if i % 2 == 0 { "a" } else { "b" }.to_string(),
            HalfBy::FirstHalf => if i < n.div_ceil(2) { "a" } else { "b" }.to_string(),
            HalfBy::Var(name) => {
                let found = if name == "roll_half" {
                    host.half.clone()
                } else {
                    host.all_vars.get(name).cloned()
                };
                match found {
                    Some(s) if matches!(s.value.to_ascii_lowercase().as_str(), "a" | "b") => {
                        s.value.to_ascii_lowercase()
                    }
                    Some(s) => {
                        let message = format!(
                            "host {}: {name} = {:?}: a half is a or b",
                            host.name, s.value
                        );
                        cx.error(Some(s.line), message);
                        continue;
                    }
                    None => {
                        let message =
                            format!("host {} has no variable {name} (--half-by)", host.name);
                        cx.error(Some(host.line), message);
                        continue;
                    }
                }
            }
        };
        // The variable that gave the half is not also a host variable.
        if let HalfBy::Var(name) = &rule.rule {
            host.vars.remove(name);
        }
        host.half = Some(Setting {
            value: half,
            line: host.line,
        });
    }
    if rule.guessed {
        cx.notes.insert(
            "halves guessed: alternating in each group's order (odd-even); give --half-by \
             var:NAME or first-half, or set roll_half on every host"
                .to_string(),
        );
    }
}

/// A host's value written with `{name}` for its own name.
fn templated(value: &str, host: &str) -> String {
    if host.is_empty() {
        value.to_string()
    } else {
        value.replace(host, crate::inventory::NAME_PLACEHOLDER)
    }
}

/// The value shared by every item, if any (`None` in the list: not set there).
fn shared<'a>(mut values: impl Iterator<Item = Option<&'a str>>) -> Option<Option<&'a str>> {
    let first = values.next()?;
    values.all(|v| v == first).then_some(first)
}

/// What `[defaults]` holds: the SSH and broker settings every host shares.
#[derive(Default)]
struct Defaults {
    ssh: BTreeMap<&'static str, String>,
    broker: BTreeMap<&'static str, String>,
}

fn write_defaults(
    cx: &mut Context,
    groups: &[(String, usize, Vec<Host>)],
    out: &mut Writer,
) -> Defaults {
    let mut defaults = Defaults::default();
    let all: Vec<&Host> = groups.iter().flat_map(|(_, _, h)| h).collect();
    for key in SSH_KEYS {
        let templ: Vec<Option<String>> = all
            .iter()
            .map(|h| h.ssh.get(key).map(|s| ssh_value(key, &s.value, &h.name)))
            .collect();
        if let Some(Some(v)) = shared(templ.iter().map(|v| v.as_deref())) {
            defaults.ssh.insert(key, v.to_string());
        }
    }
    for key in BROKER_KEYS {
        let values: Vec<Option<&str>> = all
            .iter()
            .map(|h| h.broker.get(key).map(|s| s.value.as_str()))
            .collect();
        if let Some(Some(v)) = shared(values.into_iter()) {
            defaults.broker.insert(key, v.to_string());
        }
    }
    out.blank();
    out.line("[defaults.ssh]");
    if !defaults.ssh.contains_key("user") && all.iter().all(|h| !h.ssh.contains_key("user")) {
        out.line("# no ansible_user: ssh's own default (the controller's user, or ~/.ssh/config)");
    }
    for (key, value) in &defaults.ssh {
        out.line(&format!("{key} = {}", ssh_literal(key, value)));
    }
    out.blank();
    out.line("[defaults.broker]");
    if defaults.broker.is_empty() && all.iter().all(|h| h.broker.is_empty()) {
        out.line(
            "# Ansible inventories have no broker: fill these in, or set roll_broker_* variables",
        );
        out.line("# in the Ansible inventory and import again.");
        out.line("# management_url = \"https://BROKER:15671\"");
        out.line("# amqp_url = \"amqps://BROKER:5671\"");
        out.line("# vhost = \"/\"");
        out.line("# user = \"roll\"");
        out.line("# password_file = \"/etc/roll/broker.password\"");
        cx.notes.insert(
            "no broker in the Ansible inventory: [defaults.broker] is to be filled in".into(),
        );
    }
    for (key, value) in &defaults.broker {
        out.line(&format!("{key} = {}", broker_literal(key, value)));
    }
    defaults
}

/// `user`/`address` with `{name}`; the others as they are.
fn ssh_value(key: &str, value: &str, host: &str) -> String {
    if key == "user" || key == "address" {
        templated(value, host)
    } else {
        value.to_string()
    }
}

/// A TOML literal for an SSH setting (the port an integer, the policy a boolean).
fn ssh_literal(key: &str, value: &str) -> String {
    match key {
        "port" => value.to_string(),
        "strict_host_key_checking" => value.to_string(),
        _ => literal(value),
    }
}

/// A broker setting: `management_url` and `amqp_url` with commas are a cluster's nodes, in
/// order (`roll_broker_amqp_url=amqp://c1:5672,amqp://c2:5672`), written as an array.
fn broker_literal(key: &str, value: &str) -> String {
    if matches!(key, "management_url" | "amqp_url") && value.contains(',') {
        let items: Vec<String> = value
            .split(',')
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(literal)
            .collect();
        format!("[{}]", items.join(", "))
    } else {
        literal(value)
    }
}

fn literal(value: &str) -> String {
    toml::Value::String(value.to_string()).to_string()
}

fn key_literal(key: &str) -> String {
    if !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        key.to_string()
    } else {
        literal(key)
    }
}

fn write_group(
    cx: &mut Context,
    name: &str,
    line: usize,
    hosts: &[Host],
    defaults: &Defaults,
    out: &mut Writer,
) {
    out.blank();
    out.line(&format!("# group {name} ({})", cx.at(line)));
    out.line(&format!("[groups.{}]", key_literal(name)));
    // requires: one value for the group
    let requires: Vec<Option<&Setting>> = hosts.iter().map(|h| h.requires.as_ref()).collect();
    match shared(requires.iter().map(|s| s.map(|s| s.value.as_str()))) {
        Some(Some(v)) => out.line(&format!("requires = {}", literal(v))),
        Some(None) | None if requires.iter().all(Option::is_none) => {}
        _ => cx.error(
            Some(line),
            format!("roll_requires differs between hosts of group {name}: it is the group's"),
        ),
    }
    // SSH: the group's shared values not already in the defaults; the rest per host.
    let mut group_ssh: BTreeMap<&str, String> = BTreeMap::new();
    let mut per_host: BTreeSet<&str> = BTreeSet::new();
    for key in SSH_KEYS {
        let templ: Vec<Option<String>> = hosts
            .iter()
            .map(|h| h.ssh.get(key).map(|s| ssh_value(key, &s.value, &h.name)))
            .collect();
        match shared(templ.iter().map(|v| v.as_deref())) {
            Some(Some(v)) if defaults.ssh.get(key).map(String::as_str) == Some(v) => {}
            Some(Some(v)) => {
                group_ssh.insert(key, v.to_string());
            }
            Some(None) => {}
            None if HOST_SSH_KEYS.contains(&key) => {
                per_host.insert(key);
            }
            None => {
                let values: Vec<String> = hosts
                    .iter()
                    .map(|h| match h.ssh.get(key) {
                        Some(s) => format!("{} {:?} (line {})", h.name, s.value, s.line),
                        None => format!("{} unset", h.name),
                    })
                    .collect();
                cx.error(
                    Some(line),
                    format!(
                        "ssh {key} differs between hosts of group {name} ({}): roll sets it \
                         per group",
                        values.join(", ")
                    ),
                );
            }
        }
    }
    // Broker: one per group.
    let mut group_broker: BTreeMap<&str, String> = BTreeMap::new();
    for key in BROKER_KEYS {
        let values: Vec<Option<&str>> = hosts
            .iter()
            .map(|h| h.broker.get(key).map(|s| s.value.as_str()))
            .collect();
        match shared(values.into_iter()) {
            Some(Some(v)) if defaults.broker.get(key).map(String::as_str) == Some(v) => {}
            Some(Some(v)) => {
                group_broker.insert(key, v.to_string());
            }
            Some(None) => {}
            None => cx.error(
                Some(line),
                format!(
                    "roll_broker_{key} differs between hosts of group {name}: a group has one \
                     broker"
                ),
            ),
        }
    }
    if !group_broker.is_empty() {
        let fields: Vec<String> = group_broker
            .iter()
            .map(|(k, v)| format!("{k} = {}", broker_literal(k, v)))
            .collect();
        out.line(&format!("broker = {{ {} }}", fields.join(", ")));
    }
    if !group_ssh.is_empty() {
        let fields: Vec<String> = group_ssh
            .iter()
            .map(|(k, v)| format!("{k} = {}", ssh_literal(k, v)))
            .collect();
        out.line(&format!("ssh = {{ {} }}", fields.join(", ")));
    }
    out.line("hosts = [");
    for h in hosts {
        let mut fields = vec![format!("name = {}", literal(&h.name))];
        if let Some(half) = &h.half {
            fields.push(format!("half = {}", literal(&half.value)));
        }
        if let Some(role) = &h.role {
            fields.push(format!("role = {}", literal(&role.value)));
        }
        if let Some(pair) = &h.pair {
            fields.push(format!("pair = {}", literal(&pair.value)));
        }
        let own: Vec<String> = per_host
            .iter()
            .filter_map(|k| {
                h.ssh
                    .get(k)
                    .map(|s| format!("{k} = {}", ssh_literal(k, &s.value)))
            })
            .collect();
        if !own.is_empty() {
            fields.push(format!("ssh = {{ {} }}", own.join(", ")));
        }
        if !h.vars.is_empty() {
            let vars: Vec<String> = h
                .vars
                .iter()
                .map(|(k, s)| format!("{} = {}", key_literal(k), literal(&s.value)))
                .collect();
            fields.push(format!("vars = {{ {} }}", vars.join(", ")));
        }
        out.line(&format!(
            "  {{ {} }},   # {}",
            fields.join(", "),
            cx.at(h.line)
        ));
    }
    out.line("]");
}

#[derive(Default)]
struct Writer {
    text: String,
}

impl Writer {
    fn line(&mut self, text: &str) {
        self.text.push_str(text);
        self.text.push('\n');
    }

    fn blank(&mut self) {
        if !self.text.is_empty() && !self.text.ends_with("\n\n") {
            self.text.push('\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::ansible::parse;

    const LAB: &str = "\
[all:vars]
ansible_host=127.0.0.1
ansible_port=2222
ansible_ssh_private_key_file=/var/lib/roll-lab/ssh/id_ed25519
ansible_ssh_common_args='-o UserKnownHostsFile=/var/lib/roll-lab/ssh/known_hosts -o ForwardAgent=no'
ansible_python_interpreter=/usr/bin/python3
roll_broker_management_url=http://127.0.0.1:15672
roll_broker_amqp_url=amqp://127.0.0.1:5672
roll_broker_user=roll-lab
roll_broker_password_file=/var/lib/roll-lab/broker-password

[dev]
dev1 ansible_user=rl-dev1 roll_half=a
dev2 ansible_user=rl-dev2 roll_half=b
[dev:vars]
roll_broker_vhost=dev

[ops]
px[1:2] roll_half=a tier=feed
px3 roll_half=b ansible_ssh_pass=hunter2
[ops:vars]
roll_broker_vhost=ops
roll_requires=dev
ansible_user=sarra
";

    fn import(text: &str, options: &Options) -> Imported {
        let inventory = parse(text, Path::new("lab.ini")).unwrap();
        convert(&inventory, options).unwrap()
    }

    #[test]
    fn the_fleet_comes_out_as_roll_reads_it() {
        let imported = import(LAB, &Options::default());
        assert!(
            imported.incomplete.is_empty(),
            "{:#?}\n{}",
            imported.incomplete,
            imported.toml
        );
        let inv = crate::inventory::parse(&imported.toml, Path::new("x.toml")).unwrap();
        let px1 = inv.host("px1").unwrap();
        assert_eq!(px1.group, "ops");
        assert_eq!(px1.ssh.destination(), "sarra@127.0.0.1:2222");
        assert_eq!(
            px1.ssh.known_hosts_file.as_deref(),
            Some(Path::new("/var/lib/roll-lab/ssh/known_hosts"))
        );
        assert_eq!(px1.vars.get("tier").map(String::as_str), Some("feed"));
        assert_eq!(
            inv.host("dev2").unwrap().ssh.destination(),
            "rl-dev2@127.0.0.1:2222"
        );
        assert_eq!(inv.group("ops").unwrap().broker.vhost, "ops");
        assert_eq!(inv.group("ops").unwrap().requires.as_deref(), Some("dev"));
        let halves: Vec<String> = ["px1", "px2", "px3"]
            .iter()
            .map(|h| inv.host(h).unwrap().half.to_string())
            .collect();
        assert_eq!(halves, ["a", "a", "b"]);
        // Shared by the group's users: `rl-{name}` is not, so dev's are per group, templated.
        assert!(
            imported.toml.contains("ssh = { user = \"rl-{name}\" }"),
            "{}",
            imported.toml
        );
        // The password is neither carried over nor shown; what was dropped is said.
        assert!(!imported.toml.contains("hunter2"), "{}", imported.toml);
        let notes = imported.notes.join("\n");
        assert!(
            notes.contains("a password (ansible_ssh_pass, lab.ini:20)"),
            "{notes}"
        );
        assert!(notes.contains("ansible_python_interpreter"), "{notes}");
        assert!(notes.contains("ForwardAgent"), "{notes}");
    }

    #[test]
    fn halves_by_rule_and_a_guess_said_as_such() {
        let text = "[g]\nh[1:5]\n";
        let odd = import(text, &Options::default());
        assert!(
            odd.notes.iter().any(|n| n.contains("halves guessed")),
            "{:?}",
            odd.notes
        );
        assert!(
            odd.toml.contains("name = \"h2\", half = \"b\""),
            "{}",
            odd.toml
        );
        let first = import(
            text,
            &Options {
                half_by: Some(HalfBy::FirstHalf),
                groups: None,
            },
        );
        assert!(
            first.toml.contains("name = \"h3\", half = \"a\""),
            "{}",
            first.toml
        );
        assert!(
            first.toml.contains("name = \"h4\", half = \"b\""),
            "{}",
            first.toml
        );
        // No broker: written as comments to fill in, and roll's reader says what is missing.
        assert!(
            first.incomplete.iter().any(|e| e.contains("broker")),
            "{:?}",
            first.incomplete
        );
    }

    #[test]
    fn a_host_in_two_groups_or_none_and_a_bad_half_are_errors_with_lines() {
        let inventory = parse("lost\n[a]\nx half=q\n[b]\nx\n", Path::new("h.ini")).unwrap();
        let options = Options {
            half_by: Some("var:half".parse().unwrap()),
            groups: None,
        };
        let e: Vec<String> = convert(&inventory, &options)
            .unwrap_err()
            .0
            .iter()
            .map(ToString::to_string)
            .collect();
        assert!(
            e.iter()
                .any(|m| m.starts_with("h.ini:4: host x is in group a")),
            "{e:#?}"
        );
        assert!(
            e.iter()
                .any(|m| m.starts_with("h.ini:1: host lost (group ungrouped) is in none")),
            "{e:#?}"
        );
        assert!(
            e.iter()
                .any(|m| m.starts_with("h.ini:3: host x: half = \"q\"")),
            "{e:#?}"
        );
        assert!("var:".parse::<HalfBy>().is_err());
    }

    #[test]
    fn children_put_their_hosts_in_the_chosen_group_and_vars_merge_by_depth() {
        let text = "[ops:children]\nops_a\nops_b\n[ops_a]\np1\n[ops_b]\np2\n\
                    [ops:vars]\nansible_port=2200\nk=parent\n[ops_b:vars]\nk=child\n";
        let imported = import(
            text,
            &Options {
                half_by: Some(HalfBy::OddEven),
                groups: Some(vec!["ops".into()]),
            },
        );
        assert!(imported.toml.contains("[groups.ops]"), "{}", imported.toml);
        assert!(imported.toml.contains("port = 2200"), "{}", imported.toml);
        assert!(
            imported
                .toml
                .contains("name = \"p1\", half = \"a\", vars = { k = \"parent\" }"),
            "{}",
            imported.toml
        );
        assert!(
            imported
                .toml
                .contains("name = \"p2\", half = \"b\", vars = { k = \"child\" }"),
            "{}",
            imported.toml
        );
    }
}
