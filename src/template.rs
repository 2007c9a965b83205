//! `{placeholder}` substitution for playbook commands, file templates and queue patterns.
//!
//! `{name}` is replaced by a variable; `{{` and `}}` stand for literal braces; `${NAME}` (a
//! shell or sr3 variable) is left as it is. An unknown `{name}` is an error, so that a typo
//! is caught when the playbook is read, not on a host.

use std::collections::BTreeMap;

use crate::remote::quote;

/// The variables of one host.
pub type Vars = BTreeMap<&'static str, String>;

/// Every placeholder a playbook may use.
pub const PLACEHOLDERS: [&str; 8] = [
    "package",
    "version",
    "host",
    "user",
    "group",
    "half",
    "vhost",
    "broker_user",
];

/// How substituted values are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// As they are (file contents, queue names).
    None,
    /// Shell-quoted (remote commands).
    Shell,
}

/// A placeholder in a template: its start and end byte offsets and its name.
type Found<'a> = (usize, usize, &'a str);

/// The placeholders of a template, or the offset and reason of a syntax error.
fn placeholders(template: &str) -> Result<Vec<Found<'_>>, (usize, String)> {
    let bytes = template.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'{' if bytes.get(i + 1) == Some(&b'{') => i += 2,
            b'}' if bytes.get(i + 1) == Some(&b'}') => i += 2,
            b'{' if i > 0 && bytes[i - 1] == b'$' => {
                // ${NAME}: the shell's or sr3's, not ours.
                match template[i..].find('}') {
                    Some(end) => i += end + 1,
                    None => i += 1,
                }
            }
            b'{' => {
                let Some(end) = template[i..].find('}') else {
                    return Err((i, "unclosed `{` (write `{{` for a literal brace)".into()));
                };
                let name = &template[i + 1..i + end];
                found.push((i, i + end + 1, name));
                i += end + 1;
            }
            _ => i += 1,
        }
    }
    Ok(found)
}

/// Checks that a template only uses known placeholders; the error gives the byte offset.
pub fn check(template: &str) -> Result<(), (usize, String)> {
    for (at, _, name) in placeholders(template)? {
        if !PLACEHOLDERS.contains(&name) {
            return Err((
                at,
                format!(
                    "unknown placeholder {{{name}}} (known: {})",
                    PLACEHOLDERS
                        .iter()
                        .map(|p| format!("{{{p}}}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// Substitutes the variables into a template.
pub fn render(template: &str, vars: &Vars, escape: Escape) -> Result<String, String> {
    let found = placeholders(template).map_err(|(_, message)| message)?;
    let mut out = String::with_capacity(template.len());
    let mut last = 0;
    for (start, end, name) in found {
        out.push_str(&unescape(&template[last..start]));
        let value = vars
            .get(name)
            .ok_or_else(|| format!("no value for placeholder {{{name}}}"))?;
        match escape {
            Escape::None => out.push_str(value),
            Escape::Shell => out.push_str(&quote(value)),
        }
        last = end;
    }
    out.push_str(&unescape(&template[last..]));
    Ok(out)
}

/// `{{` -> `{` and `}}` -> `}`, leaving `${NAME}` alone.
fn unescape(text: &str) -> String {
    text.replace("{{", "{").replace("}}", "}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        let mut v = Vars::new();
        v.insert("user", "rl-px1".into());
        v.insert("version", "3.3.1".into());
        v.insert("host", "it's".into());
        v
    }

    #[test]
    fn substitutes_and_quotes() {
        assert_eq!(
            render("pip install x=={version} # {user}", &vars(), Escape::Shell).unwrap(),
            "pip install x==3.3.1 # rl-px1"
        );
        assert_eq!(
            render("echo {host}", &vars(), Escape::Shell).unwrap(),
            r"echo 'it'\''s'"
        );
        assert_eq!(
            render("q_{user}.*", &vars(), Escape::None).unwrap(),
            "q_rl-px1.*"
        );
    }

    #[test]
    fn shell_variables_and_escaped_braces_stay() {
        assert_eq!(
            render("USER=${USER} {{x}} {user}", &vars(), Escape::None).unwrap(),
            "USER=${USER} {x} rl-px1"
        );
        assert!(check("queueShare ${USER}_${HOSTNAME}").is_ok());
    }

    #[test]
    fn unknown_placeholders_are_refused_with_their_offset() {
        let (at, message) = check("sr3 {verison}").unwrap_err();
        assert_eq!(at, 4);
        assert!(
            message.contains("unknown placeholder {verison}"),
            "{message}"
        );
        assert!(check("echo {").is_err());
    }
}
