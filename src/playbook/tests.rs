use std::path::{Path, PathBuf};

use serde_json::json;

use super::*;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn parse_text(text: &str) -> Result<Playbook, PlaybookError> {
    parse(text, &repo("playbooks/test.toml"))
}

const MINIMAL: &str = r#"
[release]
name = "t"
package = "p"
version = "1"

[commands]
stop = "stop"
start = "start"
status = "status"
upgrade = "up {version}"
installed_version = "v"

[queues]
discover = "ls"

[queues.target]
arguments = { x-expires = "7d", x-queue-type = "classic", x-max-length = 10 }
"#;

#[test]
fn checked_in_playbooks_load() {
    let minor = load(&repo("playbooks/sr3-minor.toml")).expect("sr3-minor loads");
    assert_eq!(minor.version, "3.3.1");
    assert!(minor.queues.target.arguments.is_empty());
    assert!(minor.files.is_empty());
    let expire = load(&repo("playbooks/sr3-queue-expire.toml")).expect("sr3-queue-expire loads");
    assert_eq!(
        expire.queues.target.arguments.get("x-expires"),
        Some(&json!(604_800_000))
    );
    assert_eq!(expire.files.len(), 2);
    assert!(expire.files[0].content.contains("expire 7d"));
    assert!(expire.files[1].only_if_present);
    assert_eq!(expire.queues.owned[0].owner, PatternOwner::Host);
    assert_eq!(expire.queues.owned[1].owner, PatternOwner::Shared);
}

#[test]
fn units_and_defaults() {
    let p = parse_text(MINIMAL).expect("parses");
    let args = &p.queues.target.arguments;
    assert_eq!(args.get("x-expires"), Some(&json!(604_800_000)));
    assert_eq!(args.get("x-max-length"), Some(&json!(10)));
    assert!(!args.contains_key("x-queue-type"), "classic is the default");
    assert!(p.queues.target.durable);
    assert!(!p.queues.target.auto_delete);
    assert_eq!(p.commands.timeout, DEFAULT_COMMAND_TIMEOUT);
}

fn error_of(text: &str) -> String {
    parse_text(text).expect_err("must fail").to_string()
}

#[test]
fn errors_name_the_file_and_line() {
    let unknown_key = MINIMAL.replace("stop = \"stop\"", "stop = \"stop\"\nstpo = \"x\"");
    let e = error_of(&unknown_key);
    assert!(e.contains("playbooks/test.toml:9:"), "{e}");
    assert!(e.contains("unknown field `stpo`"), "{e}");

    let bad_placeholder = MINIMAL.replace("up {version}", "up {verison}");
    let e = error_of(&bad_placeholder);
    assert!(e.contains("test.toml:11:"), "{e}");
    assert!(e.contains("unknown placeholder {verison}"), "{e}");

    let quoted = MINIMAL.replace("stop = \"stop\"", "stop = 'echo \"{user}\"'");
    let e = error_of(&quoted);
    assert!(e.contains("test.toml:8:"), "{e}");
    assert!(
        e.contains("placeholder {user} is inside double quotes"),
        "{e}"
    );
    // File templates are not shell: quotes around a placeholder are fine there.
    let dir = tempfile::tempdir().expect("dir");
    let template = dir.path().join("t.conf");
    std::fs::write(&template, "name \"{user}\"\n").expect("write");
    let text = format!(
        "{MINIMAL}\n[[files]]\npath = \"a\"\ntemplate = {:?}\n",
        template.display().to_string()
    );
    assert!(parse_text(&text).is_ok());

    let bad_unit = MINIMAL.replace("\"7d\"", "\"7 days\"");
    let e = error_of(&bad_unit);
    assert!(e.contains("test.toml:18:"), "{e}");
    assert!(e.contains("x-expires"), "{e}");

    let e = error_of("[release]\nname = \n");
    assert!(e.contains("test.toml:2:"), "{e}");

    let missing_template =
        format!("{MINIMAL}\n[[files]]\npath = \"a\"\ntemplate = \"no/such/file\"\n");
    let e = error_of(&missing_template);
    assert!(e.contains("cannot read template"), "{e}");
    assert!(e.contains("test.toml:22:"), "{e}");
}

#[test]
fn owners_must_fit_their_patterns() {
    let text = format!("{MINIMAL}\n[[queues.owned]]\npattern = \"q.x\"\nowner = \"host\"\n");
    assert!(error_of(&text).contains("needs {host} or {user}"));
    let text = format!("{MINIMAL}\n[[queues.owned]]\npattern = \"q.x\"\nowner = \"c\"\n");
    assert!(error_of(&text).contains("unknown owner \"c\""));
}

#[test]
fn globs() {
    assert!(glob_match(
        "q_u.subscribe.*.rl-px1_*",
        "q_u.subscribe.pump.rl-px1_localhost_123"
    ));
    assert!(!glob_match(
        "q_u.subscribe.*.rl-px1_*",
        "q_u.subscribe.pump.rl-px10_x"
    ));
    assert!(glob_match("a?c", "abc"));
    assert!(!glob_match("a?c", "ac"));
    assert!(glob_match("*", ""));
    assert!(glob_match("a*b*c", "aXXbYYc"));
    assert!(!glob_match("a*b*c", "aXXbYY"));
}
