//! What roll says of itself: shell completions and the manual page, from the clap definitions.

use std::process::Command;

/// `roll ARGS`'s stdout; it must succeed.
fn roll_stdout(args: &[&str]) -> Vec<u8> {
    let out = Command::new(env!("CARGO_BIN_EXE_roll"))
        .args(args)
        // Neither reads an inventory: a missing one does not matter.
        .env("ROLL_INVENTORY", "/nonexistent/inventory.toml")
        .output()
        .expect("roll runs");
    assert!(out.status.success(), "roll {args:?}: {out:?}");
    out.stdout
}

/// The bash completion script, loaded in a real bash, completes `roll upg` to `roll upgrade`
/// and `roll upgrade --ha` to `--half`.
#[test]
fn bash_completion_completes_a_command_and_an_option() {
    let dir = tempfile::tempdir().expect("temp dir");
    let script = dir.path().join("roll.bash");
    std::fs::write(&script, roll_stdout(&["completions", "bash"])).expect("write the script");
    let complete = |line: &[&str]| -> Vec<String> {
        let words = line
            .iter()
            .map(|w| format!("'{w}'"))
            .collect::<Vec<_>>()
            .join(" ");
        let probe = format!(
            "source '{}'; COMP_WORDS=({words}); COMP_CWORD={}; COMP_LINE='{}'; COMP_POINT=${{#COMP_LINE}}; \
             _roll roll '{}' '{}'; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            script.display(),
            line.len() - 1,
            line.join(" "),
            line[line.len() - 1],
            line[line.len() - 2],
        );
        let out = Command::new("bash")
            .args(["--norc", "--noprofile", "-c", &probe])
            .output()
            .expect("bash runs");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    };
    assert_eq!(complete(&["roll", "upg"]), ["upgrade"]);
    assert_eq!(complete(&["roll", "upgrade", "--ha"]), ["--half"]);
    // Every command is offered after `roll `.
    let all = complete(&["roll", ""]);
    for command in ["check", "queue-diff", "rollback", "completions", "man"] {
        assert!(all.iter().any(|c| c == command), "{command} not in {all:?}");
    }
}

/// `roll man` renders with `man -l`: its name, a section per command with its options.
#[test]
fn the_manual_page_renders_with_man() {
    let dir = tempfile::tempdir().expect("temp dir");
    let page = dir.path().join("roll.1");
    std::fs::write(&page, roll_stdout(&["man"])).expect("write the page");
    let out = Command::new("man")
        .arg("-l")
        .arg(&page)
        .env("MANWIDTH", "100")
        .env("MANPAGER", "cat")
        .env("PAGER", "cat")
        .output()
        .expect("man runs");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("warning"), "man warned: {err}");
    assert!(text.contains("roll - "), "{text}");
    for section in [
        "ROLL UPGRADE",
        "ROLL ROLLBACK",
        "ROLL QUEUE-DIFF",
        "ROLL COMPLETIONS",
    ] {
        assert!(text.contains(section), "{section} missing:\n{text}");
    }
    assert!(
        text.contains("Usage: roll upgrade [OPTIONS] --group <GROUP> --half <HALF>"),
        "{text}"
    );
    assert!(text.contains("--max-failures"), "{text}");
}
