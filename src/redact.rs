//! Secrets never reach output, logs or journals. Every password `roll` reads is registered
//! here, and everything it writes (tables, JSON, progress, errors, log lines, journal entries)
//! goes through [`text`] or [`value`] first, which replace the password by `***` in every form
//! it may take on the way: as it is, JSON-escaped, percent-encoded (as in a URL, upper or
//! lower case hex, with or without the characters URLs may leave as they are) and
//! shell-quoted. Journal entries are redacted value by value before they are serialised, so a
//! password that contains quotes or backslashes, or equals a JSON key, is replaced where it
//! stands and never breaks the line.

use std::borrow::Cow;
use std::sync::RwLock;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;

/// What a secret is replaced by.
pub const MASK: &str = "***";

/// Every form of every registered secret, longest first.
static FORMS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Each of [`FORMS`] as it shows inside a JSON string (escaped).
static JSON_FORMS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Characters a URL may leave unencoded (RFC 3986 unreserved).
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Unreserved characters and sub-delimiters, which a userinfo may also hold as they are.
const USERINFO: &AsciiSet = &UNRESERVED
    .remove(b'!')
    .remove(b'$')
    .remove(b'&')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'*')
    .remove(b'+')
    .remove(b',')
    .remove(b';')
    .remove(b'=');

/// The forms a secret may be written in.
pub fn forms(secret: &str) -> Vec<String> {
    let mut forms = vec![secret.to_string()];
    if let Ok(json) = serde_json::to_string(secret) {
        forms.push(json[1..json.len() - 1].to_string());
    }
    for set in [NON_ALPHANUMERIC, UNRESERVED, USERINFO] {
        let upper = utf8_percent_encode(secret, set).to_string();
        forms.push(lower_hex(&upper));
        forms.push(upper);
    }
    // Shell-quoted, as `remote::quote` writes values into commands.
    forms.push(secret.replace('\'', r"'\''"));
    forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
    forms.dedup();
    forms.retain(|f| !f.is_empty());
    forms
}

/// `%2F` -> `%2f`: the lower-case spelling of percent escapes.
fn lower_hex(encoded: &str) -> String {
    let mut out = String::with_capacity(encoded.len());
    let mut chars = encoded.chars();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == '%' {
            for _ in 0..2 {
                if let Some(h) = chars.next() {
                    out.push(h.to_ascii_lowercase());
                }
            }
        }
    }
    out
}

/// Registers a secret: from now on it is masked in everything [`text`] and [`value`] see.
pub fn register(secret: &str) {
    if secret.is_empty() {
        return;
    }
    let Ok(mut all) = FORMS.write() else {
        return;
    };
    for form in forms(secret) {
        if !all.contains(&form) {
            all.push(form);
        }
    }
    all.sort_by_key(|f| std::cmp::Reverse(f.len()));
    if let Ok(mut escaped) = JSON_FORMS.write() {
        *escaped = all.iter().map(|f| json_escaped(f)).collect();
    }
}

/// A text as it shows between the quotes of a JSON string.
fn json_escaped(text: &str) -> String {
    let quoted = serde_json::to_string(text).unwrap_or_default();
    quoted
        .strip_prefix('"')
        .and_then(|q| q.strip_suffix('"'))
        .unwrap_or(&quoted)
        .to_string()
}

/// False when no registered secret shows, in any of its forms, in `json` (a serialised
/// value): then [`value`] would change nothing in that value. JSON escapes each character on
/// its own, so a string holding a form holds its escaped spelling once serialised.
pub fn in_json(json: &str) -> bool {
    let Ok(escaped) = JSON_FORMS.read() else {
        return true;
    };
    escaped.iter().any(|form| json.contains(form.as_str()))
}

/// `text` with every registered secret masked.
pub fn text(text: &str) -> Cow<'_, str> {
    let Ok(all) = FORMS.read() else {
        return Cow::Owned(MASK.to_string());
    };
    mask(text, &all)
}

fn mask<'a>(text: &'a str, forms: &[String]) -> Cow<'a, str> {
    let mut out = Cow::Borrowed(text);
    for form in forms {
        if out.contains(form.as_str()) {
            out = Cow::Owned(out.replace(form.as_str(), MASK));
        }
    }
    out
}

/// The keys whose values are `roll`'s own enumerations (an event's tag, a run's status): never
/// masked, so that a password that happens to equal one (`done`, `upgrade`) cannot make a
/// journal line unreadable. They never hold anything read from a host or a file.
const TAGS: [&str; 8] = [
    "event", "kind", "status", "by", "half", "role", "owner", "verdict",
];

/// Masks every registered secret in every string of a JSON value (keys are left alone: they
/// are `roll`'s own names, and so are the values of [`TAGS`]).
pub fn value(value: &mut Value) {
    let Ok(all) = FORMS.read() else {
        *value = Value::String(MASK.to_string());
        return;
    };
    walk(value, &all);
}

fn walk(value: &mut Value, forms: &[String]) {
    match value {
        Value::String(s) => {
            if let Cow::Owned(masked) = mask(s, forms) {
                *s = masked;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| walk(v, forms)),
        Value::Object(map) => map
            .iter_mut()
            .filter(|(k, v)| !(TAGS.contains(&k.as_str()) && v.is_string()))
            .for_each(|(_, v)| walk(v, forms)),
        _ => {}
    }
}

/// A writer for log lines that masks secrets (each write is one formatted line), printed
/// above the live display when one is drawn, in every mode (`RUST_LOG` chooses what).
pub struct Stderr;

impl std::io::Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let line = String::from_utf8_lossy(buf);
        crate::terminal::error(&text(&line));
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A password with a quote, a backslash, a percent sign, a single quote and a space.
    const NASTY: &str = "p\"a\\s%s w'rd";

    #[test]
    fn every_form_of_a_password_is_masked() {
        let forms = forms(NASTY);
        let masked = |t: &str| mask(t, &forms).into_owned();
        assert_eq!(masked(&format!("x {NASTY} y")), "x *** y");
        // As serde_json writes it inside a string.
        assert_eq!(masked(r#"{"k":"p\"a\\s%s w'rd"}"#), r#"{"k":"***"}"#);
        // Percent-encoded, as in a URL, upper and lower case.
        assert_eq!(
            masked("amqp://u:p%22a%5Cs%25s%20w%27rd@h"),
            "amqp://u:***@h"
        );
        assert_eq!(masked("amqp://u:p%22a%5cs%25s%20w'rd@h"), "amqp://u:***@h");
        // Shell-quoted.
        assert_eq!(
            masked(&format!("echo '{}'", NASTY.replace('\'', r"'\''"))),
            "echo '***'"
        );
    }

    #[test]
    fn a_json_text_is_said_to_hold_a_secret_in_every_form_a_string_can_hold_it() {
        // Registered for the whole test process: a password no other test uses.
        let nasty = "q\"u\\o%t e'd\u{7}";
        register(nasty);
        for form in forms(nasty) {
            let line = serde_json::json!({"detail": format!("a {form} b")}).to_string();
            assert!(in_json(&line), "{form:?} in {line}");
        }
        assert!(!in_json(r#"{"detail":"nothing to see"}"#));
    }

    #[test]
    fn values_are_masked_before_serialisation_and_keys_stay() {
        // A password equal to a key of the journal's lines.
        let forms = forms("event");
        let mut v = serde_json::json!({"event": "step-finished", "detail": "the event password"});
        walk(&mut v, &forms);
        assert_eq!(
            v,
            serde_json::json!({"event": "step-finished", "detail": "the *** password"})
        );
        // A password equal to a run status or an event tag leaves the tags alone.
        let forms = self::forms("done");
        let mut v = serde_json::json!({"event": "finished", "status": "done", "summary": "done"});
        walk(&mut v, &forms);
        assert_eq!(
            v,
            serde_json::json!({"event": "finished", "status": "done", "summary": "***"})
        );
        let forms = self::forms(NASTY);
        let mut v = serde_json::json!({"output": format!("a {NASTY} b"), "n": [NASTY]});
        walk(&mut v, &forms);
        let line = serde_json::to_string(&v).unwrap();
        assert_eq!(line, r#"{"n":["***"],"output":"a *** b"}"#);
    }
}
