//! `roll inventory` and inventory validation through the binary.

use crate::support::{Roll, json, repo};

#[test]
fn example_ops_lists_ten_hosts_with_halves_and_the_pxatx_pair() {
    let run = Roll::list_inventory()
        .inventory("inventory/example.toml")
        .group("ops")
        .json()
        .run();
    assert_eq!(run.code, 0, "{run:#?}");
    let hosts = json(&run);
    let hosts = hosts.as_array().expect("an array");
    assert_eq!(hosts.len(), 10, "{hosts:#?}");
    let half = |h: &str| -> Vec<(String, Option<String>)> {
        let mut names: Vec<_> = hosts
            .iter()
            .filter(|x| x["half"] == h)
            .map(|x| {
                (
                    x["host"].as_str().unwrap_or_default().to_string(),
                    x["role"].as_str().map(str::to_string),
                )
            })
            .collect();
        names.sort();
        names
    };
    let s = |v: &str| v.to_string();
    assert_eq!(
        half("a"),
        vec![
            (s("px1-ops"), None),
            (s("px2-ops"), None),
            (s("px3-ops"), None),
            (s("px4-ops"), None),
            (s("pxatx2-ops"), Some(s("passive"))),
        ]
    );
    assert_eq!(
        half("b"),
        vec![
            (s("px5-ops"), None),
            (s("px6-ops"), None),
            (s("px7-ops"), None),
            (s("px8-ops"), None),
            (s("pxatx1-ops"), Some(s("active"))),
        ]
    );
    for host in hosts {
        for field in ["host", "group", "half", "role", "ssh", "broker"] {
            assert!(host.get(field).is_some(), "{field} missing in {host}");
        }
        assert_eq!(host["group"], "ops");
    }
}

#[test]
fn lab_inventory_table_names_every_lab_host() {
    let run = Roll::list_inventory().run();
    assert_eq!(run.code, 0, "{run:#?}");
    for host in [
        "dev1", "dev2", "stage1", "stage2", "px1", "px8", "pxatx1", "pxatx2",
    ] {
        assert!(
            run.stdout
                .lines()
                .any(|l| l.split_whitespace().next() == Some(host)),
            "{host} missing:\n{}",
            run.stdout
        );
    }
    assert!(
        run.stdout.contains("rl-px1@127.0.0.1:2222"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("22 hosts"), "{}", run.stdout);
}

#[test]
fn half_filter_keeps_one_half() {
    let run = Roll::list_inventory().group("ops").half("b").json().run();
    assert_eq!(run.code, 0, "{run:#?}");
    let hosts = json(&run);
    let names: Vec<&str> = hosts
        .as_array()
        .expect("an array")
        .iter()
        .filter_map(|h| h["host"].as_str())
        .collect();
    assert_eq!(names, ["px5", "px6", "px7", "px8", "pxatx1"]);
}

#[test]
fn unknown_group_is_a_usage_error() {
    let run = Roll::list_inventory().group("nope").run();
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(
        run.stderr.contains("no group named \"nope\""),
        "{}",
        run.stderr
    );
    assert!(run.stdout.is_empty(), "{}", run.stdout);
}

/// Each broken inventory exits 2, names the file and the line, prints nothing on stdout,
/// and does nothing else (`check` would otherwise connect to hosts).
#[test]
fn broken_inventories_exit_2_naming_file_and_line() {
    let cases = [
        ("unknown-key.toml", "unknown"),
        ("duplicate-host.toml", "duplicate"),
        ("empty-range.toml", "empty range"),
        ("inline-password.toml", "password_file or password_env"),
    ];
    for (file, words) in cases {
        let path = repo(&format!("tests/fixtures/inventory/{file}"));
        let path_text = path.display().to_string();
        for command in ["inventory", "check"] {
            let run = Roll::new(command).inventory(&path).run();
            assert_eq!(run.code, 2, "{file} {command}: {run:#?}");
            assert!(run.stdout.is_empty(), "{file}: {}", run.stdout);
            let first = run.stderr.lines().next().unwrap_or_default();
            let prefix = format!("roll: error: {path_text}:");
            assert!(first.starts_with(&prefix), "{file}: {first}");
            let line: String = first[prefix.len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            assert!(!line.is_empty(), "{file}: no line number in {first}");
            assert!(
                first.to_lowercase().contains(words),
                "{file}: {words:?} not in {first}"
            );
            assert!(!run.stderr.contains("check host"), "{file}: {}", run.stderr);
        }
    }
}

#[test]
fn a_missing_inventory_is_a_usage_error_naming_the_file() {
    let run = Roll::list_inventory()
        .inventory("inventory/does-not-exist.toml")
        .run();
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(
        run.stderr.contains("inventory/does-not-exist.toml"),
        "{}",
        run.stderr
    );
}

/// The lab's fleet written as an Ansible inventory (INI, and YAML) imports to a TOML that
/// `roll check` accepts and that lists the same hosts, halves, roles, SSH targets and brokers
/// as `inventory/lab.toml`.
#[test]
fn the_lab_as_an_ansible_inventory_imports_to_what_lab_toml_lists() {
    crate::support::require_lab();
    let dir = tempfile::tempdir().expect("temp dir");
    let lab = Roll::list_inventory().json().run();
    assert_eq!(lab.code, 0, "{lab:#?}");
    for source in [
        "tests/fixtures/ansible/lab.ini",
        "tests/fixtures/ansible/lab.yml",
    ] {
        let to = dir.path().join("imported.toml");
        let import = Roll::new("inventory")
            .args([
                "import",
                "--ansible",
                source,
                "--half-by",
                "var:half",
                "--force",
                "--to",
            ])
            .arg(to.display().to_string())
            .run();
        assert_eq!(import.code, 0, "{import:#?}");
        assert!(import.stderr.contains("imported 22 hosts"), "{import:#?}");
        let written = std::fs::read_to_string(&to).expect("the TOML written");
        assert!(written.contains("user = \"rl-{name}\""), "{written}");
        let listed = Roll::list_inventory().inventory(&to).json().run();
        assert_eq!(listed.code, 0, "{listed:#?}");
        assert_eq!(
            json(&listed),
            json(&lab),
            "{source} imported as:\n{written}"
        );
        let check = Roll::check().inventory(&to).json().run();
        assert_eq!(check.code, 0, "{source}: {check:#?}");
        let rows = json(&check);
        assert_eq!(rows.as_array().map(Vec::len), Some(22 + 5), "{rows:#}");
    }
}

/// What the importer does not understand is reported with the file and the line, and nothing
/// is written; a password is neither written nor shown.
#[test]
fn an_ansible_inventory_not_understood_writes_nothing_and_names_the_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let source = dir.path().join("hosts");
    std::fs::write(
        &source,
        "[ops]\npx[1:2] ansible_ssh_pass=s3cr3t-Pw\n[ops:hostvars]\nx=1\n",
    )
    .expect("write");
    let to = dir.path().join("out.toml");
    let run = Roll::new("inventory")
        .args(["import", "--ansible"])
        .arg(source.display().to_string())
        .arg("--to")
        .arg(to.display().to_string())
        .run();
    assert_eq!(run.code, 2, "{run:#?}");
    let expected = format!("{}:3: unknown section kind :hostvars", source.display());
    assert!(run.stderr.contains(&expected), "{run:#?}");
    assert!(run.stderr.contains("nothing was written"), "{run:#?}");
    assert!(!to.exists());
    // Understood: written, with the halves said to be a guess, the password left out.
    std::fs::write(&source, "[ops]\npx[1:2] ansible_ssh_pass=s3cr3t-Pw\n").expect("write");
    let run = Roll::new("inventory")
        .args(["import", "--ansible"])
        .arg(source.display().to_string())
        .run();
    assert_eq!(run.code, 3, "no broker: to be completed: {run:#?}");
    assert!(
        run.stdout.contains("{ name = \"px2\", half = \"b\" }"),
        "{run:#?}"
    );
    assert!(run.stderr.contains("halves guessed"), "{run:#?}");
    assert!(run.stderr.contains("incomplete broker"), "{run:#?}");
    assert!(
        !run.stdout.contains("s3cr3t") && !run.stderr.contains("s3cr3t"),
        "{run:#?}"
    );
}
