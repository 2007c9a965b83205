//! Ansible inventories (INI or YAML), read so that `roll inventory import --ansible` can write
//! the same fleet as roll's TOML (see [`convert`]).
//!
//! Both formats are read into one model: groups in the order they first appear, each with
//! the hosts it lists itself (ranges such as `px[1:4]`, `node[01:12]`, `web[a:c]` and
//! `x[0:10:2]` expanded), its variables and its children. Every item keeps its line, so that
//! every message names the file and the line. A construct this reader does not know (a
//! section suffix other than `:vars` and `:children`, an inventory plugin, a Jinja template
//! in a value, a key of a YAML group other than `hosts`, `vars` and `children`) is an error:
//! nothing is written on a file that was not understood.

pub mod convert;
mod ini;
mod yaml;

use std::fmt;
use std::path::{Path, PathBuf};

/// A variable as written, with its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Var {
    pub key: String,
    pub value: String,
    pub line: usize,
}

/// A host as a group lists it (one of the names of a range).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnsibleHost {
    pub name: String,
    pub line: usize,
    /// The variables of its line (INI) or its mapping (YAML), in order.
    pub vars: Vec<Var>,
}

/// A group as the file defines it (a group defined in several places is merged).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AnsibleGroup {
    pub name: String,
    /// Where it first appears.
    pub line: usize,
    /// The hosts it lists itself, in order.
    pub hosts: Vec<AnsibleHost>,
    pub vars: Vec<Var>,
    /// Its children's names, with the line naming each.
    pub children: Vec<(String, usize)>,
}

/// The whole inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnsibleInventory {
    pub path: PathBuf,
    /// In the order they first appear; `all` and `ungrouped` only when the file names them.
    pub groups: Vec<AnsibleGroup>,
}

impl AnsibleInventory {
    fn new(path: &Path) -> AnsibleInventory {
        AnsibleInventory {
            path: path.to_path_buf(),
            groups: Vec::new(),
        }
    }

    /// The group named `name`, made (at `line`) when it is new.
    fn group_mut(&mut self, name: &str, line: usize) -> &mut AnsibleGroup {
        let index = match self.groups.iter().position(|g| g.name == name) {
            Some(i) => i,
            None => {
                self.groups.push(AnsibleGroup {
                    name: name.to_string(),
                    line,
                    ..AnsibleGroup::default()
                });
                self.groups.len() - 1
            }
        };
        &mut self.groups[index]
    }

    pub fn group(&self, name: &str) -> Option<&AnsibleGroup> {
        self.groups.iter().find(|g| g.name == name)
    }
}

/// A problem with an Ansible inventory, at a line of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportError {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.path.display(), self.message),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

impl std::error::Error for ImportError {}

/// Every problem found, in the order of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportErrors(pub Vec<ImportError>);

impl fmt::Display for ImportErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&lines.join("\n"))
    }
}

impl std::error::Error for ImportErrors {}

/// Reads an Ansible inventory file: YAML when its name ends in `.yml` or `.yaml` or its first
/// meaningful line looks like YAML (`all:`, `---`), INI otherwise.
pub fn load(path: &Path) -> Result<AnsibleInventory, ImportErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ImportErrors(vec![ImportError {
            path: path.to_path_buf(),
            line: None,
            message: format!("cannot read the Ansible inventory: {e}"),
        }])
    })?;
    parse(&text, path)
}

/// Parses the text of an Ansible inventory (see [`load`]).
pub fn parse(text: &str, path: &Path) -> Result<AnsibleInventory, ImportErrors> {
    if is_yaml(text, path) {
        yaml::parse(text, path)
    } else {
        ini::parse(text, path)
    }
}

fn is_yaml(text: &str, path: &Path) -> bool {
    if matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yml" | "yaml")
    ) {
        return true;
    }
    let first = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'));
    first.is_some_and(|l| l == "---" || (l.ends_with(':') && !l.starts_with('[')))
}

/// Collects the errors of one reading.
struct Problems {
    path: PathBuf,
    found: Vec<ImportError>,
}

impl Problems {
    fn new(path: &Path) -> Problems {
        Problems {
            path: path.to_path_buf(),
            found: Vec::new(),
        }
    }

    fn at(&mut self, line: usize, message: impl Into<String>) {
        self.found.push(ImportError {
            path: self.path.clone(),
            line: Some(line),
            message: message.into(),
        });
    }

    fn into_result<T>(self, value: T) -> Result<T, ImportErrors> {
        if self.found.is_empty() {
            Ok(value)
        } else {
            Err(ImportErrors(self.found))
        }
    }
}

/// The one template roll reads: the host's own name, `{{ inventory_hostname }}`.
const HOST_NAME_TEMPLATES: [&str; 2] = ["{{ inventory_hostname }}", "{{inventory_hostname}}"];

/// A value with `{{ inventory_hostname }}` replaced by `host`.
pub fn for_host(value: &str, host: &str) -> String {
    HOST_NAME_TEMPLATES
        .iter()
        .fold(value.to_string(), |v, t| v.replace(t, host))
}

/// A value that Ansible would evaluate as a Jinja template (but the host's name): roll cannot.
fn check_value(problems: &mut Problems, var: &Var) {
    let value = for_host(&var.value, "");
    if value.contains("{{") || value.contains("{%") {
        problems.at(
            var.line,
            format!(
                "variable {} is a Jinja template ({}): roll does not evaluate templates; \
                 write its value",
                var.key,
                if is_secret(&var.key) {
                    "value not shown"
                } else {
                    var.value.as_str()
                }
            ),
        );
    }
}

/// Variables that hold a password: never carried over, never shown.
pub fn is_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key.contains("pass") || key.contains("secret") || key.contains("token")
}

/// Expands an Ansible host pattern: `px[1:4]`, `node[01:12]` (the width kept), `web[a:c]`,
/// `x[0:10:2]` (a stride); several bracket groups multiply.
pub fn expand(pattern: &str) -> Result<Vec<String>, String> {
    let Some(open) = pattern.find('[') else {
        if pattern.contains(']') {
            return Err(format!("malformed host pattern {pattern}: ']' without '['"));
        }
        return Ok(vec![pattern.to_string()]);
    };
    let Some(close) = pattern[open..].find(']').map(|c| c + open) else {
        return Err(format!("malformed host pattern {pattern}: missing ']'"));
    };
    let (prefix, body, suffix) = (
        &pattern[..open],
        &pattern[open + 1..close],
        &pattern[close + 1..],
    );
    let parts: Vec<&str> = body.split(':').collect();
    let (start, end, stride) = match parts.as_slice() {
        [s, e] => (*s, *e, "1"),
        [s, e, st] => (*s, *e, *st),
        _ => {
            return Err(format!(
                "malformed range [{body}] in {pattern}: expected [start:end] or [start:end:stride]"
            ));
        }
    };
    let stride: usize = match stride.parse() {
        Ok(s) if s > 0 => s,
        _ => return Err(format!("invalid stride {stride:?} in {pattern}")),
    };
    let items: Vec<String> = if let (Ok(a), Ok(b)) = (start.parse::<u64>(), end.parse::<u64>()) {
        if a > b {
            return Err(format!("empty range in {pattern}: {a} is greater than {b}"));
        }
        let width = if start.len() > 1 && start.starts_with('0') {
            start.len()
        } else {
            0
        };
        (a..=b)
            .step_by(stride)
            .map(|n| format!("{n:0width$}"))
            .collect()
    } else {
        let (Some(a), Some(b)) = (single_letter(start), single_letter(end)) else {
            return Err(format!(
                "malformed range [{body}] in {pattern}: numbers or single letters expected"
            ));
        };
        if a > b {
            return Err(format!("empty range in {pattern}: {a} is after {b}"));
        }
        (a..=b).step_by(stride).map(|c| c.to_string()).collect()
    };
    if items.len() > crate::inventory::MAX_EXPANSION {
        return Err(format!(
            "{pattern} stands for {} hosts, more than {}",
            items.len(),
            crate::inventory::MAX_EXPANSION
        ));
    }
    let mut names = Vec::new();
    for item in items {
        for rest in expand(suffix)? {
            names.push(format!("{prefix}{item}{rest}"));
        }
    }
    Ok(names)
}

fn single_letter(s: &str) -> Option<char> {
    let mut chars = s.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) if c.is_ascii_alphabetic() => Some(c),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_expand_as_ansible_expands_them() {
        assert_eq!(expand("px[1:3]").unwrap(), ["px1", "px2", "px3"]);
        assert_eq!(
            expand("node[08:10].x").unwrap(),
            ["node08.x", "node09.x", "node10.x"]
        );
        assert_eq!(expand("web[a:c]").unwrap(), ["weba", "webb", "webc"]);
        assert_eq!(expand("x[0:6:3]").unwrap(), ["x0", "x3", "x6"]);
        assert_eq!(
            expand("r[1:2]c[1:2]").unwrap(),
            ["r1c1", "r1c2", "r2c1", "r2c2"]
        );
        assert_eq!(expand("plain").unwrap(), ["plain"]);
        assert!(expand("px[3:1]").unwrap_err().contains("empty range"));
        assert!(expand("px[1:2").unwrap_err().contains("missing ']'"));
        assert!(expand("px[1,2]").unwrap_err().contains("malformed range"));
        assert!(expand("px[1:4:0]").unwrap_err().contains("stride"));
    }

    #[test]
    fn the_format_is_told_by_the_name_or_the_first_line() {
        let p = Path::new;
        assert!(is_yaml("x", p("hosts.yml")));
        assert!(is_yaml("# c\nall:\n  hosts:\n", p("hosts")));
        assert!(is_yaml("---\nall:\n", p("hosts")));
        assert!(!is_yaml("[ops]\npx1\n", p("hosts")));
        assert!(!is_yaml("px1\n", p("hosts.ini")));
    }
}
