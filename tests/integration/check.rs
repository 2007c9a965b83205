//! `roll check` against the lab.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{Roll, json, lab, require_lab};

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
    let run = Roll::check().json().run();
    assert_eq!(run.code, 0, "{run:#?}");
    let rows = json(&run);
    let rows_list = rows.as_array().expect("an array");
    let hosts = rows_list.iter().filter(|r| r["kind"] == "host").count();
    let brokers = rows_list.iter().filter(|r| r["kind"] == "broker").count();
    // dev, stage, ops on the single node; quorum and celery on the cluster
    assert_eq!((hosts, brokers), (22, 5), "{rows:#}");
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
    let run = Roll::check().group("ops").run();
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
fn broken_ops_inventory(dir: &Path) -> PathBuf {
    let key = dir.join("other-key");
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .expect("ssh-keygen runs");
    assert!(status.success());
    let other_pub = std::fs::read_to_string(dir.join("other-key.pub")).expect("public key");
    let other_pub: Vec<&str> = other_pub.split_whitespace().take(2).collect();
    let lab_known = std::fs::read_to_string(&lab().ssh.known_hosts_file).expect("lab known_hosts");
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
{}connect_timeout = "5s"

[groups.ops.broker]
{}vhost = "ops"

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
            lab_ssh(&known),
            lab_broker(),
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
    let run = Roll::check().inventory(&inventory).json().run();
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

/// The lab's SSH settings (its sshd, logins and key, from `inventory/lab.toml`) as the lines
/// of an inventory's SSH table, with this known_hosts file.
fn lab_ssh(known_hosts: &Path) -> String {
    let ssh = &lab().ssh;
    format!(
        "address = \"{}\"\nport = {}\nuser = \"{}\"\nidentity_file = \"{}\"\nknown_hosts_file = \"{}\"\n",
        ssh.address,
        ssh.port,
        ssh.user,
        ssh.identity_file.display(),
        known_hosts.display()
    )
}

/// The lab's broker settings (from `inventory/lab.toml`) as the lines of an inventory's broker
/// table, without a vhost.
fn lab_broker() -> String {
    let broker = &lab().broker;
    format!(
        "management_url = \"{}\"\namqp_url = \"{}\"\nuser = \"{}\"\npassword_file = \"{}\"\n",
        broker.management_url,
        broker.amqp_url,
        broker.user,
        broker.password_file.display()
    )
}

/// Writes `name` in `dir`: an inventory with the `[defaults]` of the lab (its sshd, key and
/// broker), `ssh_extra` lines added to `[defaults.ssh]`, then `groups`. Returns its path.
fn lab_inventory(dir: &Path, name: &str, ssh_extra: &str, groups: &str) -> PathBuf {
    let path = dir.join(name);
    let defaults = format!(
        "\n[defaults.ssh]\n{}{ssh_extra}\n\n[defaults.broker]\n{}",
        lab_ssh(&lab().ssh.known_hosts_file),
        lab_broker()
    );
    std::fs::write(&path, defaults + groups).expect("write inventory");
    path
}

#[test]
fn a_wrong_broker_password_and_an_unknown_vhost_are_named() {
    require_lab();
    let dir = tempfile::tempdir().expect("temp dir");
    let wrong = dir.path().join("wrong-password");
    std::fs::write(&wrong, "not-the-password\n").expect("write");
    let groups = format!(
        r#"
[groups.ops]
broker = {{ vhost = "ops", password_file = "{}" }}
hosts = [ {{ name = "px1", half = "a" }}, {{ name = "px5", half = "b" }} ]

[groups.dev]
broker = {{ vhost = "no-such-vhost" }}
hosts = [ {{ name = "dev1", half = "a" }}, {{ name = "dev2", half = "b" }} ]
"#,
        wrong.display()
    );
    let inventory = lab_inventory(dir.path(), "brokers.toml", "", &groups);
    let run = Roll::check().inventory(&inventory).json().run();
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
    let password = std::fs::read_to_string(&lab().broker.password_file).expect("lab password");
    assert!(!run.stdout.contains(password.trim()) && !run.stderr.contains(password.trim()));
}

#[test]
fn each_group_reads_its_own_ssh_config_file() {
    require_lab();
    let dir = tempfile::tempdir().expect("temp dir");
    let fast = dir.path().join("fast_kex");
    std::fs::write(&fast, "KexAlgorithms curve25519-sha256\n").expect("write");
    // A key exchange the lab's sshd does not offer: a host reached with it must fail.
    let refused = dir.path().join("refused_kex");
    std::fs::write(&refused, "KexAlgorithms diffie-hellman-group1-sha1\n").expect("write");
    let groups = r#"
[groups.ops]
broker = { vhost = "ops" }
hosts = [ { name = "px1", half = "a" }, { name = "px5", half = "b" } ]

[groups.dev]
broker = { vhost = "dev" }
ssh = { config_file = "refused_kex" }
hosts = [ { name = "dev1", half = "a" }, { name = "dev2", half = "b" } ]
"#;
    let inventory = lab_inventory(
        dir.path(),
        "ssh-config.toml",
        r#"config_file = "fast_kex""#,
        groups,
    );
    let run = Roll::check().inventory(&inventory).json().run();
    assert_eq!(run.code, 1, "{run:#?}");
    let rows = json(&run);
    for name in ["px1", "px5"] {
        assert_eq!(row(&rows, name)["reachable"], true, "{name}: {rows:#}");
    }
    for name in ["dev1", "dev2"] {
        let host = row(&rows, name);
        assert_eq!(host["reachable"], false, "{name}: {rows:#}");
        assert!(
            host["reason"]
                .as_str()
                .unwrap_or_default()
                .contains("key exchange"),
            "{host}"
        );
    }
}

/// `ssh -O <command>` (check, exit) to the OpenSSH master behind a control socket.
fn master_control(socket: &Path, command: &str) -> std::process::Output {
    Command::new("ssh")
        .arg("-S")
        .arg(socket)
        .args(["-O", command, "lab"])
        .output()
        .expect("ssh runs")
}

/// The pid of the OpenSSH master behind a control socket, as `ssh -O check` reports it.
fn master_pid(socket: &Path) -> Option<u32> {
    let output = master_control(socket, "check");
    let text = String::from_utf8_lossy(&output.stderr);
    let start = text.find("pid=")? + 4;
    text[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .ok()
}

#[test]
fn a_kept_connection_serves_the_next_run_and_a_changed_setting_gets_its_own() {
    require_lab();
    let dir = tempfile::tempdir().expect("temp dir");
    let runtime = dir.path().join("runtime");
    std::fs::create_dir(&runtime).expect("runtime dir");
    let inventory = |name: &str, known_hosts: &str| {
        let groups = format!(
            r#"
[groups.dev]
broker = {{ vhost = "dev" }}
hosts = [ {{ name = "dev1", half = "a" }}, {{ name = "dev2", half = "b" }} ]
ssh = {{ known_hosts_file = "{known_hosts}" }}
"#
        );
        let file = format!("{name}.toml");
        lab_inventory(dir.path(), &file, r#"persist = "30s""#, &groups)
    };
    let check = |inventory: &Path| {
        let run = Roll::check()
            .inventory(inventory)
            .json()
            .env("XDG_RUNTIME_DIR", &runtime)
            .run();
        assert_eq!(run.code, 0, "{run:#?}");
    };
    let masters = || -> std::collections::BTreeMap<String, (PathBuf, Option<u32>)> {
        std::fs::read_dir(runtime.join("roll-ssh"))
            .expect("the registry exists")
            .map(|entry| {
                let entry = entry.expect("entry");
                let socket = std::fs::read_link(entry.path()).expect("a link to a socket");
                let pid = master_pid(&socket);
                (
                    entry.file_name().to_string_lossy().into_owned(),
                    (socket, pid),
                )
            })
            .collect()
    };

    let lab_known_hosts = &lab().ssh.known_hosts_file;
    let first_inventory = inventory("first", &lab_known_hosts.display().to_string());
    check(&first_inventory);
    let first = masters();
    assert_eq!(first.len(), 2, "one kept master per host: {first:?}");
    assert!(first.values().all(|(_, pid)| pid.is_some()), "{first:?}");

    check(&first_inventory);
    assert_eq!(masters(), first, "the second run reused both masters");

    // Another known_hosts file (with the same keys) makes other connections.
    let copy = dir.path().join("known_hosts");
    std::fs::copy(lab_known_hosts, &copy).expect("copy known_hosts");
    let other = inventory("other", &copy.display().to_string());
    check(&other);
    let third = masters();
    assert_eq!(third.len(), 4, "{third:?}");
    for (name, master) in &first {
        assert_eq!(third.get(name), Some(master), "{name} kept");
    }

    // A kept master that has gone (idle too long) is replaced, and the run still succeeds.
    let (gone, (gone_socket, _)) = first.iter().next().expect("a master");
    let exited = master_control(gone_socket, "exit");
    assert!(exited.status.success(), "{exited:?}");
    check(&first_inventory);
    let fourth = masters();
    let (socket, pid) = &fourth[gone];
    assert_ne!(socket, gone_socket, "a new master for {gone}");
    assert!(pid.is_some(), "the new master answers");
    assert!(
        gone_socket.parent().is_some_and(|d| !d.exists()),
        "the gone master's directory is removed"
    );

    for (socket, _) in fourth.values() {
        master_control(socket, "exit");
    }
}
