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
    assert!(run.stdout.contains("14 hosts"), "{}", run.stdout);
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
