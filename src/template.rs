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

/// Checks a command template (run by `sh -c` with values shell-quoted): besides
/// [`check`], no placeholder may sit inside single or double quotes, where the quoting of
/// its value would not hold (`echo "{user}"` with a user `$(id)` would run `id`).
pub fn check_command(template: &str) -> Result<(), (usize, String)> {
    check(template)?;
    let found = placeholders(template)?;
    let bytes = template.as_bytes();
    let mut quote: Option<u8> = None;
    let mut next = found.iter().peekable();
    let mut i = 0;
    while i < bytes.len() {
        if let Some((start, _, name)) = next.peek()
            && *start == i
        {
            if let Some(q) = quote {
                let kind = if q == b'\'' { "single" } else { "double" };
                return Err((
                    i,
                    format!(
                        "placeholder {{{name}}} is inside {kind} quotes: roll quotes its value \
                         itself, so write it without quotes around it"
                    ),
                ));
            }
            next.next();
        }
        match (quote, bytes[i]) {
            (None, b'\\') | (Some(b'"'), b'\\') => i += 1,
            (None, q @ (b'\'' | b'"')) => quote = Some(q),
            (Some(q), c) if c == q => quote = None,
            _ => {}
        }
        i += 1;
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
    fn placeholders_inside_quotes_are_refused_in_commands() {
        let (at, message) = check_command("echo \"{user}\"").unwrap_err();
        assert_eq!(at, 6);
        assert!(message.contains("inside double quotes"), "{message}");
        let (at, message) = check_command("echo 'x {host}'").unwrap_err();
        assert_eq!(at, 8);
        assert!(message.contains("inside single quotes"), "{message}");
        // Outside quotes, after a closed quote, escaped quotes, shell variables: fine.
        assert!(check_command("USER={user} sr3 stop").is_ok());
        assert!(check_command("echo 'a' {user} \"b\" {host}").is_ok());
        assert!(check_command("echo \\\" {user}").is_ok());
        assert!(check_command("f=\"${HOME}/x\"; cat \"$f\" {package}").is_ok());
        assert!(check_command("echo \"a\\\"b\" {user}").is_ok());
        // A value that breaks out of double quotes when the check is skipped.
        let mut v = Vars::new();
        v.insert("user", "$(id)".into());
        assert_eq!(
            render("echo \"{user}\"", &v, Escape::Shell).unwrap(),
            "echo \"'$(id)'\""
        );
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
