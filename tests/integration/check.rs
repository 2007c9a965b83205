//! `roll check` against the lab.

use std::process::Command;

use crate::support::{LAB_STATE, json, require_lab, roll};

/// The rows of a JSON check report, by name.
fn row<'a>(rows: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    rows.as_array()
        .expect("an array")
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no row named {name} in {rows:#}"))
}

#[test]
fn check_reaches_every_lab_host_and_broker() {
    require_lab();
    let run = roll(&["check", "--output", "json"]);
    assert_eq!(run.code, 0, "{run:#?}");
    let rows = json(&run);
    let rows_list = rows.as_array().expect("an array");
    let hosts = rows_list.iter().filter(|r| r["kind"] == "host").count();
    let brokers = rows_list.iter().filter(|r| r["kind"] == "broker").count();
    assert_eq!((hosts, brokers), (14, 3), "{rows:#}");
    for r in rows_list {
        assert_eq!(r["reachable"], true, "{r}");
        assert!(r["reason"].is_null(), "{r}");
        assert!(r["seconds"].as_f64().is_some_and(|s| s > 0.0), "{r}");
    }
    assert_eq!(row(&rows, "px1")["target"], "rl-px1@127.0.0.1:2222");
}

#[test]
fn check_table_of_one_group() {
    require_lab();
    let run = roll(&["check", "--group", "ops"]);
    assert_eq!(run.code, 0, "{run:#?}");
    for name in [
        "px1",
        "px8",
        "pxatx1",
        "pxatx2",
        "roll-lab@127.0.0.1:15672/ops",
    ] {
        assert!(run.stdout.contains(name), "{name} missing:\n{}", run.stdout);
    }
    assert!(!run.stdout.contains("stage1"), "{}", run.stdout);
    assert!(run.stdout.contains("11 of 11 reachable"), "{}", run.stdout);
}

/// An inventory for the lab's ops group in which px3's login is refused (no such user) and
/// px4's host key has changed (a known_hosts entry with another key for the name it uses).
fn broken_ops_inventory(dir: &std::path::Path) -> std::path::PathBuf {
    let key = dir.join("other-key");
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .expect("ssh-keygen runs");
    assert!(status.success());
    let other_pub = std::fs::read_to_string(dir.join("other-key.pub")).expect("public key");
    let other_pub: Vec<&str> = other_pub.split_whitespace().take(2).collect();
    let lab_known =
        std::fs::read_to_string(format!("{LAB_STATE}/ssh/known_hosts")).expect("lab known_hosts");
    let known = dir.join("known_hosts");
    std::fs::write(
        &known,
        format!("{lab_known}\n[localhost]:2222 {}\n", other_pub.join(" ")),
    )
    .expect("write known_hosts");
    let inventory = dir.join("broken.toml");
    std::fs::write(
        &inventory,
        format!(
            r#"
[groups.ops.ssh]
address = "127.0.0.1"
port = 2222
user = "rl-{{name}}"
identity_file = "{LAB_STATE}/ssh/id_ed25519"
known_hosts_file = "{}"
connect_timeout = "5s"

[groups.ops.broker]
management_url = "http://127.0.0.1:15672"
amqp_url = "amqp://127.0.0.1:5672"
user = "roll-lab"
password_file = "{LAB_STATE}/broker-password"
vhost = "ops"

[[groups.ops.hosts]]
name = "px[1:2]"
half = "a"

[[groups.ops.hosts]]
name = "px3"
half = "a"
ssh = {{ user = "rl-nobody" }}

[[groups.ops.hosts]]
name = "px4"
half = "b"
ssh = {{ address = "localhost" }}

[[groups.ops.hosts]]
name = "px5"
half = "b"
"#,
            known.display()
        ),
    )
    .expect("write inventory");
    inventory
}

#[test]
fn one_refused_login_and_one_changed_host_key_do_not_hide_the_others() {
    require_lab();
    let dir = tempfile::tempdir().expect("temp dir");
    let inventory = broken_ops_inventory(dir.path());
    let inventory = inventory.display().to_string();
    let run = roll(&["check", "-i", &inventory, "--output", "json"]);
    assert_eq!(run.code, 1, "{run:#?}");
    let rows = json(&run);
    let px3 = row(&rows, "px3");
    assert_eq!(px3["reachable"], false, "{px3}");
    assert!(
        px3["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("login refused"),
        "{px3}"
    );
    let px4 = row(&rows, "px4");
    assert_eq!(px4["reachable"], false, "{px4}");
    assert!(
        px4["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("host key"),
        "{px4}"
    );
    for name in ["px1", "px2", "px5", "roll-lab@127.0.0.1:15672/ops"] {
        assert_eq!(row(&rows, name)["reachable"], true, "{name}: {rows:#}");
    }
}

#[test]
fn a_wrong_broker_password_and_an_unknown_vhost_are_named() {
    require_lab();
    let dir = tempfile::tempdir().expect("temp dir");
    let wrong = dir.path().join("wrong-password");
    std::fs::write(&wrong, "not-the-password\n").expect("write");
    let inventory = dir.path().join("brokers.toml");
    std::fs::write(
        &inventory,
        format!(
            r#"
[defaults.ssh]
address = "127.0.0.1"
port = 2222
user = "rl-{{name}}"
identity_file = "{LAB_STATE}/ssh/id_ed25519"
known_hosts_file = "{LAB_STATE}/ssh/known_hosts"

[defaults.broker]
management_url = "http://127.0.0.1:15672"
amqp_url = "amqp://127.0.0.1:5672"
user = "roll-lab"
password_file = "{LAB_STATE}/broker-password"

[groups.ops]
broker = {{ vhost = "ops", password_file = "{}" }}
hosts = [ {{ name = "px1", half = "a" }}, {{ name = "px5", half = "b" }} ]

[groups.dev]
broker = {{ vhost = "no-such-vhost" }}
hosts = [ {{ name = "dev1", half = "a" }}, {{ name = "dev2", half = "b" }} ]
"#,
            wrong.display()
        ),
    )
    .expect("write inventory");
    let inventory = inventory.display().to_string();
    let run = roll(&["check", "-i", &inventory, "--output", "json"]);
    assert_eq!(run.code, 1, "{run:#?}");
    let rows = json(&run);
    let ops = row(&rows, "roll-lab@127.0.0.1:15672/ops");
    assert!(
        ops["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("login refused"),
        "{ops}"
    );
    let dev = row(&rows, "roll-lab@127.0.0.1:15672/no-such-vhost");
    assert!(
        dev["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("vhost no-such-vhost"),
        "{dev}"
    );
    for name in ["px1", "px5", "dev1", "dev2"] {
        assert_eq!(row(&rows, name)["reachable"], true, "{name}: {rows:#}");
    }
    let password =
        std::fs::read_to_string(format!("{LAB_STATE}/broker-password")).expect("lab password");
    assert!(!run.stdout.contains(password.trim()) && !run.stderr.contains(password.trim()));
}
