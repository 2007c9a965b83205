//! Ansible's INI inventory format: `[group]` sections of host lines (`name key=value ...`,
//! `name:port`), `[group:vars]` sections of `key=value` lines, `[group:children]` sections of
//! group names; host lines before any section are in `ungrouped`; `#` and `;` start comments.

use std::path::Path;

use super::{AnsibleHost, AnsibleInventory, ImportErrors, Problems, Var, check_value, expand};

/// What the lines of the current section are.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Section {
    Hosts(String),
    Vars(String),
    Children(String),
}

pub(super) fn parse(text: &str, path: &Path) -> Result<AnsibleInventory, ImportErrors> {
    let mut inventory = AnsibleInventory::new(path);
    let mut problems = Problems::new(path);
    let mut section = Section::Hosts("ungrouped".to_string());
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        if trimmed.starts_with('[') {
            match header(trimmed) {
                Ok(s) => {
                    let name = match &s {
                        Section::Hosts(n) | Section::Vars(n) | Section::Children(n) => n,
                    };
                    inventory.group_mut(name, line);
                    section = s;
                }
                Err(message) => problems.at(line, message),
            }
            continue;
        }
        match &section {
            Section::Hosts(group) => match host_line(trimmed, line) {
                Ok(hosts) => {
                    for host in &hosts {
                        for var in &host.vars {
                            check_value(&mut problems, var);
                        }
                    }
                    inventory.group_mut(group, line).hosts.extend(hosts);
                }
                Err(message) => problems.at(line, message),
            },
            Section::Vars(group) => match var_line(trimmed, line) {
                Ok(var) => {
                    check_value(&mut problems, &var);
                    inventory.group_mut(group, line).vars.push(var);
                }
                Err(message) => problems.at(line, message),
            },
            Section::Children(group) => {
                let child = strip_comment(trimmed).trim().to_string();
                if child.is_empty() || child.contains(char::is_whitespace) {
                    problems.at(line, format!("expected one group name, found {trimmed:?}"));
                    continue;
                }
                inventory.group_mut(&child, line);
                inventory
                    .group_mut(group, line)
                    .children
                    .push((child, line));
            }
        }
    }
    problems.into_result(inventory)
}

/// `[name]`, `[name:vars]` or `[name:children]`.
fn header(text: &str) -> Result<Section, String> {
    let inner = strip_comment(text).trim();
    let Some(inner) = inner.strip_prefix('[').and_then(|s| s.strip_suffix(']')) else {
        return Err(format!("malformed section header {text:?}"));
    };
    let (name, kind) = match inner.split_once(':') {
        Some((name, kind)) => (name.trim(), Some(kind.trim())),
        None => (inner.trim(), None),
    };
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Err(format!("malformed group name in {text:?}"));
    }
    match kind {
        None => Ok(Section::Hosts(name.to_string())),
        Some("vars") => Ok(Section::Vars(name.to_string())),
        Some("children") => Ok(Section::Children(name.to_string())),
        Some(other) => Err(format!(
            "unknown section kind :{other} in {text:?} (known: [group], [group:vars], \
             [group:children])"
        )),
    }
}

/// A host line: a pattern (with an optional `:port`) and `key=value` variables.
fn host_line(text: &str, line: usize) -> Result<Vec<AnsibleHost>, String> {
    let words = split_words(text)?;
    let Some((pattern, rest)) = words.split_first() else {
        return Err("empty host line".into());
    };
    let mut vars = Vec::new();
    let (pattern, port) = split_port(pattern)?;
    if let Some(port) = port {
        vars.push(Var {
            key: "ansible_port".into(),
            value: port,
            line,
        });
    }
    for word in rest {
        let Some((key, value)) = word.split_once('=') else {
            return Err(format!(
                "expected key=value after the host name, found {word:?}"
            ));
        };
        if key.is_empty() {
            return Err(format!("a variable without a name: {word:?}"));
        }
        vars.push(Var {
            key: key.to_string(),
            value: value.to_string(),
            line,
        });
    }
    Ok(expand(&pattern)?
        .into_iter()
        .map(|name| AnsibleHost {
            name,
            line,
            vars: vars.clone(),
        })
        .collect())
}

/// `name:port` (not inside a range's brackets, not an IPv6 address).
fn split_port(pattern: &str) -> Result<(String, Option<String>), String> {
    let mut depth = 0;
    let mut colon = None;
    for (i, c) in pattern.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            ':' if depth == 0 => {
                if colon.is_some() {
                    return Ok((pattern.to_string(), None)); // an IPv6 address
                }
                colon = Some(i);
            }
            _ => {}
        }
    }
    match colon {
        None => Ok((pattern.to_string(), None)),
        Some(i) => {
            let port = &pattern[i + 1..];
            if port.parse::<u16>().is_err() {
                return Err(format!("invalid port {port:?} in {pattern:?}"));
            }
            Ok((pattern[..i].to_string(), Some(port.to_string())))
        }
    }
}

/// A `key=value` line of a `:vars` section (spaces around `=` allowed, quotes removed).
fn var_line(text: &str, line: usize) -> Result<Var, String> {
    let Some((key, value)) = text.split_once('=') else {
        return Err(format!("expected key=value, found {text:?}"));
    };
    let key = key.trim();
    if key.is_empty() || key.contains(char::is_whitespace) {
        return Err(format!("malformed variable name in {text:?}"));
    }
    let value = strip_comment(value.trim()).trim();
    Ok(Var {
        key: key.to_string(),
        value: unquote(value),
        line,
    })
}

/// Words as a shell splits them: quotes group, `#` at the start of a word ends the line.
fn split_words(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match quote {
            Some(q) if c == q => quote = None,
            Some('"') if c == '\\' => {
                if let Some(next) = chars.next() {
                    word.push(next);
                }
            }
            Some(_) => word.push(c),
            None => match c {
                '\'' | '"' => {
                    quote = Some(c);
                    in_word = true;
                }
                '#' if !in_word => break,
                c if c.is_whitespace() => {
                    if in_word {
                        words.push(std::mem::take(&mut word));
                        in_word = false;
                    }
                }
                '\\' => {
                    if let Some(next) = chars.next() {
                        word.push(next);
                        in_word = true;
                    }
                }
                c => {
                    word.push(c);
                    in_word = true;
                }
            },
        }
    }
    if quote.is_some() {
        return Err(format!("unclosed quote in {text:?}"));
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// A line without its trailing ` #` or ` ;` comment.
fn strip_comment(text: &str) -> &str {
    for marker in [" #", "\t#", " ;", "\t;"] {
        if let Some(i) = text.find(marker) {
            return &text[..i];
        }
    }
    text
}

fn unquote(value: &str) -> String {
    for q in ['"', '\''] {
        if value.len() >= 2 && value.starts_with(q) && value.ends_with(q) {
            return value[1..value.len() - 1].to_string();
        }
    }
    value.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inv(text: &str) -> AnsibleInventory {
        parse(text, Path::new("hosts.ini")).unwrap()
    }

    fn errors(text: &str) -> Vec<String> {
        parse(text, Path::new("hosts.ini"))
            .unwrap_err()
            .0
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn sections_hosts_ranges_ports_vars_and_children() {
        let i = inv("lonely\n\
             # a comment\n\
             [ops]\n\
             px[1:2] ansible_user=rl-x half=a  # trailing\n\
             pxatx1:2222 ansible_host='10.0.0.1' note=\"two words\"\n\
             \n\
             [ops:vars]\n\
             ansible_port = 2200\n\
             [fleet:children]\n\
             ops\n");
        let names: Vec<&str> = i.groups.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["ungrouped", "ops", "fleet"]);
        assert_eq!(i.groups[0].hosts[0].name, "lonely");
        let ops = i.group("ops").unwrap();
        let hosts: Vec<&str> = ops.hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(hosts, ["px1", "px2", "pxatx1"]);
        assert_eq!(ops.hosts[1].line, 4);
        let kv = |h: &AnsibleHost| -> Vec<(String, String)> {
            h.vars
                .iter()
                .map(|v| (v.key.clone(), v.value.clone()))
                .collect()
        };
        assert_eq!(
            kv(&ops.hosts[0]),
            [
                ("ansible_user".to_string(), "rl-x".to_string()),
                ("half".to_string(), "a".to_string())
            ]
        );
        assert_eq!(
            kv(&ops.hosts[2]),
            [
                ("ansible_port".to_string(), "2222".to_string()),
                ("ansible_host".to_string(), "10.0.0.1".to_string()),
                ("note".to_string(), "two words".to_string())
            ]
        );
        assert_eq!(ops.vars[0].key, "ansible_port");
        assert_eq!(ops.vars[0].value, "2200");
        assert_eq!(ops.vars[0].line, 8);
        assert_eq!(
            i.group("fleet").unwrap().children,
            [("ops".to_string(), 10)]
        );
    }

    #[test]
    fn what_is_not_understood_is_named_with_its_line() {
        let e = errors("[ops:hosts]\npx1\n[ops]\npx[3:1]\npx2 novalue\n[ops:vars]\nx\ny={{ z }}\n");
        assert_eq!(e.len(), 5, "{e:#?}");
        assert!(
            e[0].starts_with("hosts.ini:1: unknown section kind :hosts"),
            "{e:?}"
        );
        assert!(e[1].starts_with("hosts.ini:4: empty range"), "{e:?}");
        assert!(e[2].starts_with("hosts.ini:5: expected key=value"), "{e:?}");
        assert!(e[3].starts_with("hosts.ini:7: expected key=value"), "{e:?}");
        assert!(
            e[4].starts_with("hosts.ini:8: variable y is a Jinja template"),
            "{e:?}"
        );
    }

    #[test]
    fn a_templated_password_is_named_but_not_shown() {
        let e = errors("[ops]\npx1 ansible_ssh_pass=\"{{ vault_pw }}\"\n");
        assert!(e[0].contains("ansible_ssh_pass"), "{e:?}");
        assert!(!e[0].contains("vault_pw"), "{e:?}");
    }
}
