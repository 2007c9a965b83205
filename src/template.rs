//! `{placeholder}` substitution for playbook commands, file templates and queue patterns.
//!
//! `{name}` is replaced by a variable; `{{` and `}}` stand for literal braces; `${NAME}` (a
//! shell or sr3 variable) is left as it is. An unknown `{name}` is an error, so that a typo
//! is caught when the playbook is read, not on a host. `{artifact.NAME}` is the destination
//! of the playbook's artifact NAME on the host (see [`artifact_word`]); `{var.NAME}` is the
//! host's inventory variable NAME (`vars = { ... }`), checked when the plan is made: a host
//! without it makes the plan fail, before anything changes.

use std::collections::BTreeMap;

use crate::remote::quote;

/// The variables of one host, by placeholder name.
pub type Vars = BTreeMap<String, String>;

/// The prefix of the placeholders naming an artifact's destination: `{artifact.NAME}`.
pub const ARTIFACT: &str = "artifact.";

/// The prefix of the placeholders naming a host's inventory variable: `{var.NAME}`.
pub const VAR: &str = "var.";

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
    check_with(template, &[])
}

/// Like [`check`], `{artifact.NAME}` accepted for the artifacts named in `artifacts`.
pub fn check_with(template: &str, artifacts: &[String]) -> Result<(), (usize, String)> {
    for (at, _, name) in placeholders(template)? {
        if let Some(artifact) = name.strip_prefix(ARTIFACT) {
            if !artifacts.iter().any(|a| a == artifact) {
                let known = if artifacts.is_empty() {
                    "the playbook has no [[artifacts]] here".to_string()
                } else {
                    format!("artifacts: {}", artifacts.join(", "))
                };
                return Err((at, format!("unknown artifact {{{name}}} ({known})")));
            }
            continue;
        }
        if let Some(var) = name.strip_prefix(VAR) {
            if var.is_empty()
                || !var
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err((
                    at,
                    format!(
                        "bad variable name {{{name}}}: letters, digits, `_` and `-` after `var.`"
                    ),
                ));
            }
            continue;
        }
        if !PLACEHOLDERS.contains(&name) {
            return Err((
                at,
                format!(
                    "unknown placeholder {{{name}}} (known: {}, {{var.NAME}} for a host's inventory variable)",
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
    check_command_with(template, &[])
}

/// Like [`check_command`], `{artifact.NAME}` accepted for the artifacts named in `artifacts`.
pub fn check_command_with(template: &str, artifacts: &[String]) -> Result<(), (usize, String)> {
    check_with(template, artifacts)?;
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
        let value = vars.get(name).ok_or_else(|| match name.strip_prefix(VAR) {
            Some(var) => format!("the host has no inventory variable `{var}` (for {{{name}}})"),
            None => format!("no value for placeholder {{{name}}}"),
        })?;
        match escape {
            Escape::None => out.push_str(value),
            Escape::Shell if name.starts_with(ARTIFACT) => out.push_str(&artifact_word(value)),
            Escape::Shell => out.push_str(&quote(value)),
        }
        last = end;
    }
    out.push_str(&unescape(&template[last..]));
    Ok(out)
}

/// An artifact's destination as one shell word naming it absolutely: `~/x`, `~` and relative
/// paths are in the SSH user's home (`"$HOME"/x`, as the files and the copy take them), so the
/// word holds wherever a command uses it (after a `cd`, after `--option=`). Quoted.
pub fn artifact_word(path: &str) -> String {
    match path {
        "~" => "\"$HOME\"".to_string(),
        p if p.starts_with('/') => quote(p),
        p => format!("\"$HOME\"/{}", quote(p.strip_prefix("~/").unwrap_or(p))),
    }
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
        v.insert("user".into(), "rl-px1".into());
        v.insert("version".into(), "3.3.1".into());
        v.insert("host".into(), "it's".into());
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
        v.insert("user".into(), "$(id)".into());
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

    #[test]
    fn host_variables_are_accepted_by_name_and_filled_from_the_vars() {
        assert!(check_command("sr3 --port {var.broker_port}").is_ok());
        let (at, message) = check("x {var.} y").unwrap_err();
        assert_eq!(at, 2);
        assert!(message.contains("bad variable name"), "{message}");
        let mut v = vars();
        v.insert("var.broker_port".into(), "5682".into());
        assert_eq!(
            render("amqp://127.0.0.1:{var.broker_port}/", &v, Escape::None).unwrap(),
            "amqp://127.0.0.1:5682/"
        );
        let err = render("{var.missing}", &v, Escape::None).unwrap_err();
        assert!(err.contains("no inventory variable `missing`"), "{err}");
    }

    #[test]
    fn artifacts_are_known_by_name_and_render_as_absolute_paths() {
        let names = ["sr3".to_string()];
        assert!(check_command_with("pip install {artifact.sr3}", &names).is_ok());
        let (at, message) = check_command_with("pip install {artifact.sr4}", &names).unwrap_err();
        assert_eq!(at, 12);
        assert!(
            message.contains("unknown artifact {artifact.sr4}"),
            "{message}"
        );
        assert!(message.contains("artifacts: sr3"), "{message}");
        let (_, message) = check_command("pip install {artifact.sr3}").unwrap_err();
        assert!(message.contains("no [[artifacts]]"), "{message}");
        let (_, message) = check_command_with("echo \"{artifact.sr3}\"", &names).unwrap_err();
        assert!(message.contains("inside double quotes"), "{message}");

        let mut v = vars();
        v.insert("artifact.sr3".into(), "~/.cache/roll/a b.whl".into());
        v.insert("artifact.abs".into(), "/opt/x.whl".into());
        v.insert("artifact.rel".into(), "x.whl".into());
        let shell = |t: &str| render(t, &v, Escape::Shell).unwrap();
        assert_eq!(
            shell("pip {artifact.sr3}"),
            "pip \"$HOME\"/'.cache/roll/a b.whl'"
        );
        assert_eq!(shell("cp {artifact.abs} ."), "cp /opt/x.whl .");
        assert_eq!(shell("cat {artifact.rel}"), "cat \"$HOME\"/x.whl");
        assert_eq!(artifact_word("~"), "\"$HOME\"");
        assert_eq!(artifact_word("~/$(id)"), "\"$HOME\"/'$(id)'");
    }
}
