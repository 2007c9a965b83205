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
    assert_eq!(minor.artifacts.len(), 1);
    assert_eq!(minor.artifacts[0].name, "sr3");
    assert!(minor.commands.upgrade.ends_with("{artifact.sr3}"));
    assert!(minor.commands.reinstall.is_some());
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
    let quorum = load(&repo("playbooks/sr3-quorum.toml")).expect("sr3-quorum loads");
    assert_eq!(
        quorum.queues.target.arguments.get("x-queue-type"),
        Some(&json!("quorum"))
    );
    assert!(quorum.files[0].content.contains("queueType quorum"));
    assert!(quorum.files[0].content.contains("{var.broker_port}"));
    let celery = load(&repo("playbooks/celery-quorum.toml")).expect("celery-quorum loads");
    assert_eq!(
        celery.queues.target.arguments.get("x-queue-type"),
        Some(&json!("quorum"))
    );
    assert_eq!(celery.queues.owned[0].owner, PatternOwner::Shared);
    // The Python file is a template: its braces are doubled, and render as Python's.
    let vars = Default::default();
    let config = crate::template::render(
        &celery.files[0].content,
        &vars,
        crate::template::Escape::None,
    )
    .expect("celeryconfig renders");
    assert!(
        config.contains(r#"queue_arguments={"x-queue-type": QUEUE_TYPE}"#),
        "{config}"
    );
    assert!(config.contains(r#"QUEUE_TYPE = "quorum""#), "{config}");
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
    // `?` is one character, however many bytes it takes.
    assert!(glob_match("q.?.x", "q.é.x"));
    assert!(glob_match("q.*☃", "q.é ü ☃"));
    assert!(!glob_match("q.?", "q.éé"));
    assert!(glob_match("*.*", "a.b.c"));
    assert!(!glob_match("", "a"));
    assert!(glob_match("", ""));
    assert!(glob_match("**", "x"));
}

/// MINIMAL with one artifact (lines 20 to 24) whose upgrade installs it.
fn with_artifact(name: &str, source: &str, sha256: &str, destination: &str) -> String {
    format!(
        "{}\n[[artifacts]]\nname = {name:?}\nsource = {source:?}\nsha256 = {sha256:?}\n\
         destination = {destination:?}\n",
        MINIMAL.replace("up {version}", "up {artifact.w}")
    )
}

const SHA: &str = "f9799a1112d3f59f70391019cc20883e3b50802e5d08480e9b77dfe45108d473";

#[test]
fn artifacts_are_read_with_their_sources_beside_the_playbook() {
    let text = with_artifact("w", "wheels/w.whl", &SHA.to_uppercase(), "~/a/{host}.whl");
    let p = parse_text(&text).expect("parses");
    assert_eq!(p.artifacts.len(), 1);
    let a = &p.artifacts[0];
    assert_eq!(a.name, "w");
    assert_eq!(a.source, repo("playbooks/wheels/w.whl"));
    assert_eq!(a.sha256, SHA, "kept in lowercase");
    assert_eq!(a.destination, "~/a/{host}.whl");
    assert_eq!(p.commands.upgrade, "up {artifact.w}");
    let absolute = with_artifact("w", "/srv/w.whl", SHA, "/opt/w.whl");
    assert_eq!(
        parse_text(&absolute).expect("parses").artifacts[0].source,
        PathBuf::from("/srv/w.whl")
    );
    // The reinstall command (a rollback's) is optional.
    assert_eq!(p.commands.reinstall, None);
    let reinstall = MINIMAL.replace(
        "installed_version",
        "reinstall = \"down {version}\"\ninstalled_version",
    );
    assert_eq!(
        parse_text(&reinstall)
            .expect("parses")
            .commands
            .reinstall
            .as_deref(),
        Some("down {version}")
    );
}

#[test]
fn artifact_errors_name_the_file_and_line() {
    let e = error_of(&with_artifact("w", "w.whl", "abc", "~/w.whl"));
    assert!(e.contains("test.toml:23:"), "{e}");
    assert!(e.contains("not 64 hexadecimal digits"), "{e}");

    let e = error_of(&with_artifact("w x", "w.whl", SHA, "~/w.whl"));
    assert!(e.contains("test.toml:21:"), "{e}");
    assert!(e.contains("artifact name \"w x\""), "{e}");

    let e = error_of(&with_artifact("w", "w.whl", SHA, "~/dir/"));
    assert!(e.contains("test.toml:24:"), "{e}");
    assert!(e.contains("must name a file"), "{e}");

    let e = error_of(&with_artifact("w", "w.whl", SHA, "~/{nope}.whl"));
    assert!(e.contains("test.toml:24:"), "{e}");
    assert!(e.contains("unknown placeholder {nope}"), "{e}");

    let e = error_of(&with_artifact("w", "", SHA, "~/w.whl"));
    assert!(e.contains("test.toml:22:"), "{e}");

    let twice = format!(
        "{}[[artifacts]]\nname = \"w\"\nsource = \"v.whl\"\nsha256 = \"{SHA}\"\ndestination = \"v\"\n",
        with_artifact("w", "w.whl", SHA, "~/w.whl")
    );
    let e = error_of(&twice);
    assert!(e.contains("test.toml:26:"), "{e}");
    assert!(e.contains("artifact w is given twice"), "{e}");

    let unknown_key = with_artifact("w", "w.whl", SHA, "~/w.whl") + "mode = \"0644\"\n";
    let e = error_of(&unknown_key);
    assert!(e.contains("test.toml:25:"), "{e}");
    assert!(e.contains("unknown field `mode`"), "{e}");

    // A command naming an artifact the playbook does not have.
    let e = error_of(&with_artifact("v", "w.whl", SHA, "~/w.whl"));
    assert!(e.contains("test.toml:11:"), "{e}");
    assert!(
        e.contains("unknown artifact {artifact.w} (artifacts: v)"),
        "{e}"
    );
    // Queues are discovered before anything is copied: no artifact there.
    let discover = with_artifact("w", "w.whl", SHA, "~/w.whl")
        .replace("discover = \"ls\"", "discover = \"ls {artifact.w}\"");
    let e = error_of(&discover);
    assert!(e.contains("test.toml:15:"), "{e}");
    assert!(e.contains("unknown artifact {artifact.w}"), "{e}");
}

#[test]
fn an_artifact_whose_file_is_missing_or_different_is_refused_before_the_plan() {
    let dir = tempfile::tempdir().expect("dir");
    let wheel = dir.path().join("w.whl");
    let text = with_artifact("w", "w.whl", SHA, "~/w.whl");
    let playbook = parse(&text, &dir.path().join("p.toml")).expect("parses");

    let e = artifact::check_sources(&playbook)
        .expect_err("missing")
        .to_string();
    for part in ["p.toml: artifact w", "w.whl", SHA, "actual: none"] {
        assert!(e.contains(part), "{part}: {e}");
    }

    std::fs::write(&wheel, b"not the wheel").expect("write");
    let actual = artifact::sha256_hex(b"not the wheel");
    let e = artifact::check_sources(&playbook).expect_err("mismatch");
    let message = e.to_string();
    for part in ["artifact w", &wheel.display().to_string(), SHA, &actual] {
        assert!(message.contains(part), "{part}: {message}");
    }
    let error = crate::error::Error::from(e);
    assert_eq!(error.exit_code(), crate::exit::FAILURE);
    assert!(
        error.to_string().ends_with("(nothing was changed)"),
        "{error}"
    );

    let right = with_artifact("w", "w.whl", &actual, "~/w.whl");
    let playbook = parse(&right, &dir.path().join("p.toml")).expect("parses");
    artifact::check_sources(&playbook).expect("the right file");
}

#[test]
fn a_rollout_section_reads_its_waves_gates_and_policy_and_errors_name_the_line() {
    let p = parse_text(MINIMAL).expect("parses");
    assert_eq!(p.rollout, rollout::RolloutRules::default());
    assert!(p.commands.gate.is_none());
    let text = MINIMAL.replace(
        "installed_version = \"v\"\n",
        "installed_version = \"v\"\ngate = \"check {host}\"\n",
    ) + r#"
[rollout]
max_backlog = 500
min_healthy = "30s"
max_failures = "25%"
on_failure = "rollback"

[[rollout.waves]]
vars = { tier = "feed" }
pause_after = true

[[rollout.waves]]
hosts = ["px5", "px6*"]
"#;
    let p = parse_text(&text).expect("parses");
    assert_eq!(p.commands.gate.as_deref(), Some("check {host}"));
    let r = &p.rollout;
    assert_eq!(r.max_backlog, Some(500));
    assert_eq!(r.min_healthy.map(|d| d.0.as_secs()), Some(30));
    assert_eq!(r.gate_timeout, rollout::DEFAULT_GATE_TIMEOUT);
    assert_eq!(r.max_failures, Some(rollout::Bound::Percent(25)));
    assert_eq!(r.on_failure, Some(rollout::OnFailure::Rollback));
    assert_eq!(r.waves.len(), 2);
    assert!(r.waves[0].pause_after);
    assert_eq!(r.waves[0].vars["tier"], "feed");
    assert_eq!(r.waves[1].hosts, ["px5", "px6*"]);
    let line = |needle: &str| text.lines().position(|l| l.contains(needle)).unwrap() + 1;
    // The line of its [[rollout.waves]] header.
    assert_eq!(r.waves[1].line, line("hosts = [\"px5\"") - 1);

    let bad = text.replace("max_failures = \"25%\"", "max_failures = \"many\"");
    let err = parse_text(&bad).unwrap_err().to_string();
    assert!(
        err.contains(&format!("test.toml:{}", line("max_failures")))
            && err.contains("max_failures"),
        "{err}"
    );
    let bad = text.replace("on_failure = \"rollback\"", "on_failure = \"panic\"");
    let err = parse_text(&bad).unwrap_err().to_string();
    assert!(err.contains("use stop or rollback"), "{err}");
}
