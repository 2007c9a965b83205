//! Loading the shipped inventories, every check with its line, and the merge rules.

use super::*;

fn manifest_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn load_ok(relative: &str) -> Inventory {
    match load(&manifest_path(relative)) {
        Ok(inventory) => inventory,
        Err(err) => panic!("{relative} should load: {err}"),
    }
}

/// A complete `[defaults.broker]` (lines 1-6) so that snippets only hold what they test.
const BROKER: &str = r#"[defaults.broker]
management_url = "http://127.0.0.1:15672"
amqp_url = "amqp://127.0.0.1:5672"
vhost = "/"
user = "roll"
password_env = "ROLL_BROKER_PASSWORD"
"#;

fn parse_ok(text: &str) -> Inventory {
    match parse(text, Path::new("dir/inv.toml")) {
        Ok(inventory) => inventory,
        Err(err) => panic!("should parse: {err}\n{text}"),
    }
}

/// The first error's full message, with `inv.toml` as the path.
fn error(text: &str) -> String {
    match parse(text, Path::new("inv.toml")) {
        Ok(_) => panic!("should fail:\n{text}"),
        Err(err) => err.to_string(),
    }
}

fn names<'a>(hosts: impl Iterator<Item = &'a Host>) -> Vec<&'a str> {
    hosts.map(|host| host.name.as_str()).collect()
}

#[test]
fn lab_inventory_loads() {
    let inventory = load_ok("inventory/lab.toml");
    let groups: Vec<_> = inventory.groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(groups, ["dev", "stage", "ops", "quorum", "celery"]);
    assert_eq!(inventory.hosts().count(), 22);

    let dev = inventory.group("dev").expect("dev");
    assert_eq!(dev.requires, None);
    assert_eq!(names(dev.half(Half::A)), ["dev1"]);
    assert_eq!(names(dev.half(Half::B)), ["dev2"]);
    assert_eq!(
        inventory.group("stage").and_then(|g| g.requires.as_deref()),
        None
    );

    // the cluster's groups: c1's API and AMQP, each half on both of c2 and c3's hosts
    for (group, a, b) in [
        ("quorum", ["q1", "q2"], ["q3", "q4"]),
        ("celery", ["cw1", "cw2"], ["cw3", "cw4"]),
    ] {
        let g = inventory.group(group).expect(group);
        assert_eq!(names(g.half(Half::A)), a, "{group}");
        assert_eq!(names(g.half(Half::B)), b, "{group}");
    }

    let ops = inventory.group("ops").expect("ops");
    assert_eq!(ops.requires.as_deref(), Some("stage"));
    assert_eq!(
        names(ops.half(Half::A)),
        ["px1", "px2", "px3", "px4", "pxatx2"]
    );
    assert_eq!(
        names(ops.half(Half::B)),
        ["px5", "px6", "px7", "px8", "pxatx1"]
    );
    let px1 = inventory.host("px1").expect("px1");
    assert_eq!(px1.group, "ops");
    assert_eq!(px1.line, 38);
    assert_eq!(px1.role, None);
    assert_eq!(
        px1.ssh,
        SshTarget {
            user: Some("rl-px1".into()),
            address: "127.0.0.1".into(),
            port: 2222,
            identity_file: Some("/var/lib/roll-lab/ssh/id_ed25519".into()),
            known_hosts_file: Some("/var/lib/roll-lab/ssh/known_hosts".into()),
            config_file: None,
            connect_timeout: Duration::from_secs(10),
            persist: None,
            strict_host_key_checking: true,
        }
    );
    assert_eq!(px1.ssh.destination(), "rl-px1@127.0.0.1:2222");
    let pxatx1 = inventory.host("pxatx1").expect("pxatx1");
    assert_eq!(
        (pxatx1.half, pxatx1.role, pxatx1.pair.as_deref()),
        (Half::B, Some(Role::Active), Some("pxatx"))
    );
    let pxatx2 = inventory.host("pxatx2").expect("pxatx2");
    assert_eq!(
        (pxatx2.half, pxatx2.role, pxatx2.pair.as_deref()),
        (Half::A, Some(Role::Passive), Some("pxatx"))
    );

    assert_eq!(ops.broker.display(), "roll-lab@127.0.0.1:15672/ops");
    assert_eq!(
        ops.broker,
        BrokerConfig {
            management_urls: vec!["http://127.0.0.1:15672".into()],
            amqp_urls: vec!["amqp://127.0.0.1:5672".into()],
            vhost: "ops".into(),
            user: "roll-lab".into(),
            password: SecretRef::File("/var/lib/roll-lab/broker-password".into()),
            reconnect_deadline: crate::inventory::DEFAULT_RECONNECT_DEADLINE,
            listing_timeout: crate::inventory::DEFAULT_LISTING_TIMEOUT,
        }
    );
    assert_eq!(ops.ssh.user.as_deref(), Some("rl-{name}"));
}

#[test]
fn example_inventory_loads() {
    let inventory = load_ok("inventory/example.toml");
    let groups: Vec<_> = inventory.groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(groups, ["dev", "stage", "ops"]);

    let dev = inventory.group("dev").expect("dev");
    assert_eq!(names(dev.half(Half::A)), ["bunny1-dev.cmc", "urpd1.cmc"]);
    assert_eq!(names(dev.half(Half::B)), ["bunny2-dev.cmc", "urpd2.cmc"]);
    assert_eq!(
        dev.broker.password,
        SecretRef::Env("ROLL_DEV_BROKER_PASSWORD".into())
    );

    let stage = inventory.group("stage").expect("stage");
    assert_eq!(stage.requires.as_deref(), Some("dev"));
    assert_eq!(
        names(stage.half(Half::A)),
        [
            "dms-ops-host1.edm",
            "dms-ops-host2.edm",
            "ddi1.edm",
            "ddi1.cmc"
        ]
    );
    assert_eq!(
        names(stage.half(Half::B)),
        [
            "dms-ops-host3.edm",
            "dms-ops-host4.edm",
            "ddi2.edm",
            "ddi2.cmc"
        ]
    );
}

#[test]
fn example_ops_has_its_halves_and_the_pxatx_pair() {
    let inventory = load_ok("inventory/example.toml");
    let ops = inventory.group("ops").expect("ops");
    assert_eq!(ops.requires.as_deref(), Some("stage"));
    assert_eq!(ops.hosts.len(), 10);
    assert_eq!(
        names(ops.half(Half::A)),
        ["px1-ops", "px2-ops", "px3-ops", "px4-ops", "pxatx2-ops"]
    );
    assert_eq!(
        names(ops.half(Half::B)),
        ["px5-ops", "px6-ops", "px7-ops", "px8-ops", "pxatx1-ops"]
    );
    let roles: Vec<_> = ops
        .hosts
        .iter()
        .filter_map(|h| Some((h.name.as_str(), h.role?, h.pair.as_deref()?)))
        .collect();
    assert_eq!(
        roles,
        [
            ("pxatx2-ops", Role::Passive, "pxatx"),
            ("pxatx1-ops", Role::Active, "pxatx")
        ]
    );
}

#[test]
fn example_ops_has_its_broker_ssh_settings_and_vars() {
    let inventory = load_ok("inventory/example.toml");
    let ops = inventory.group("ops").expect("ops");
    assert_eq!(
        ops.broker.display(),
        "sarra-admin@ddsr.cmc.example:15671/%2F"
    );
    assert_eq!(ops.broker.amqp_urls, ["amqps://ddsr.cmc.example:5671"]);
    assert_eq!(ops.broker.vhost, "/");
    assert_eq!(
        ops.broker.password,
        SecretRef::File("/home/roll/.config/roll/ddsr-password".into())
    );
    let px5 = inventory.host("px5-ops").expect("px5-ops");
    assert_eq!(px5.ssh.destination(), "sarra@px5-ops:22");
    assert_eq!(px5.ssh.connect_timeout, Duration::from_secs(20));
    assert_eq!(
        px5.ssh.identity_file.as_deref(),
        Some(Path::new("/home/roll/.ssh/id_ed25519"))
    );
    assert_eq!(px5.vars.get("cluster").map(String::as_str), Some("ddsr"));
    let pxatx1 = inventory.host("pxatx1-ops").expect("pxatx1-ops");
    assert_eq!(pxatx1.vars.get("flows").map(String::as_str), Some("pxatx"));
    assert_eq!(
        inventory.host("urpd1.cmc").map(|h| h.ssh.connect_timeout),
        Some(DEFAULT_CONNECT_TIMEOUT)
    );
}

/// A fixture fails with one error: at `position` (`line:column`, the line also named by the
/// fixture's first comment), with `message`.
fn assert_fixture_fails(file: &str, position: &str, message: &str) {
    let relative = format!("tests/fixtures/inventory/{file}");
    let text = std::fs::read_to_string(manifest_path(&relative))
        .unwrap_or_else(|err| panic!("{relative}: {err}"));
    // The first comment line says where the error is.
    let line = position.split(':').next().unwrap_or_default();
    assert!(
        text.starts_with(&format!("# Error on line {line}:")),
        "{file}: the comment does not match line {line}"
    );
    let errors = match parse_all(&text, Path::new(&relative)) {
        Ok(_) => panic!("{file} should fail"),
        Err(errors) => errors,
    };
    assert_eq!(
        errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        [format!("{relative}:{position}: {message}")],
        "{file}"
    );
    let expected_line: usize = line.parse().unwrap_or_default();
    assert_eq!(errors[0].line(), Some(expected_line), "{file}");
}

/// The fixtures serde refuses: an unknown key, a syntax error, values of the wrong kind.
#[test]
fn unreadable_fixtures_fail_on_their_line() {
    let cases = [
        (
            "unknown-key.toml",
            "16:1",
            "unknown field `adress`, expected one of `user`, `address`, `port`, \
             `identity_file`, `known_hosts_file`, `config_file`, `connect_timeout`, `persist`, `strict_host_key_checking`",
        ),
        (
            "syntax-error.toml",
            "12:3",
            "missing comma between array elements, expected `,`",
        ),
        (
            "invalid-half.toml",
            "12:26",
            "unknown variant `c`, expected `a` or `b`",
        ),
        (
            "invalid-port.toml",
            "11:46",
            "invalid ssh port 70000: must be between 1 and 65535",
        ),
    ];
    for (file, position, message) in cases {
        assert_fixture_fails(file, position, message);
    }
}

/// The fixtures whose hosts do not add up: a duplicate, a host in both halves, an empty
/// range, an empty half.
#[test]
fn host_fixtures_fail_on_their_line() {
    let cases = [
        (
            "duplicate-host.toml",
            "18:12",
            "duplicate host px1: already defined at line 11 in group dev",
        ),
        (
            "two-halves.toml",
            "12:12",
            "duplicate host px4 in two halves: half b here, half a at line 11; \
             a host belongs to one half only",
        ),
        (
            "empty-range.toml",
            "12:12",
            "empty range px[8:5]: 8 is greater than 5",
        ),
        ("empty-half.toml", "9:1", "group ops has no host in half b"),
    ];
    for (file, position, message) in cases {
        assert_fixture_fails(file, position, message);
    }
}

/// The fixtures with a broken active/passive pair.
#[test]
fn pair_fixtures_fail_on_their_line() {
    let cases = [
        (
            "incomplete-pair.toml",
            "13:3",
            "incomplete pair pxatx in group ops: active host pxatx1 (line 13) has no passive \
             partner (a pair needs one active and one passive host)",
        ),
        (
            "range-with-role.toml",
            "11:12",
            "host entry px[1:2] has a role and a pair, so it must name exactly one host, not 2",
        ),
    ];
    for (file, position, message) in cases {
        assert_fixture_fails(file, position, message);
    }
}

/// The fixtures with a broker that cannot be used: a password in the file, an incomplete
/// broker.
#[test]
fn broker_fixtures_fail_on_their_line() {
    let cases = [
        (
            "inline-password.toml",
            "7:1",
            "inline broker passwords are refused: use password_file or password_env",
        ),
        (
            "credentials-in-url.toml",
            "4:12",
            "inline broker passwords are refused: use password_file or password_env \
             (found in amqp_url)",
        ),
        (
            "incomplete-broker.toml",
            "14:1",
            "group ops has an incomplete broker: missing vhost \
             (set it in [groups.ops.broker] or [defaults.broker])",
        ),
    ];
    for (file, position, message) in cases {
        assert_fixture_fails(file, position, message);
    }
}

/// The fixtures whose `requires` cannot be met: an unknown group, a cycle.
#[test]
fn requires_fixtures_fail_on_their_line() {
    let cases = [
        (
            "unknown-requires.toml",
            "20:12",
            "group ops requires unknown group stage (groups: dev, ops)",
        ),
        (
            "requires-cycle.toml",
            "10:12",
            "requires cycle: dev -> ops -> dev",
        ),
    ];
    for (file, position, message) in cases {
        assert_fixture_fails(file, position, message);
    }
}

#[test]
fn load_reports_unreadable_file() {
    let err = load(Path::new("/nonexistent/roll/inv.toml")).err();
    let text = err.map(|e| e.to_string()).unwrap_or_default();
    assert!(
        text.starts_with("/nonexistent/roll/inv.toml: cannot read: "),
        "{text}"
    );
}

#[test]
fn error_display_without_position() {
    let err = InventoryError::Invalid {
        path: "x.toml".into(),
        line: 3,
        col: 0,
        message: "bad".into(),
    };
    assert_eq!(err.to_string(), "x.toml:3: bad");
    let err = InventoryError::Invalid {
        path: "x.toml".into(),
        line: 0,
        col: 0,
        message: "bad".into(),
    };
    assert_eq!(err.to_string(), "x.toml: bad");
    assert_eq!(err.line(), None);
}

#[test]
fn merges_ssh_settings_and_vars() {
    let text = format!(
        r#"{BROKER}
[defaults.ssh]
user = "deploy"
port = 2200
identity_file = "keys/id"
config_file = "ssh_config"
connect_timeout = 30
persist = "90s"

[groups.ops]
vars = {{ site = "cmc", tier = 1, critical = true }}
hosts = [
  {{ name = "px[01:02]", half = "a", vars = {{ tier = 2 }} }},
  {{ name = "px3", half = "b", ssh = {{ user = "u-{{name}}", address = "10.0.0.{{name}}", port = 22 }} }},
]

[groups.ops.ssh]
known_hosts_file = "/etc/roll/known_hosts"
strict_host_key_checking = false
"#
    );
    let inventory = parse_ok(&text);
    let px01 = inventory.host("px01").expect("px01");
    assert_eq!(
        px01.ssh,
        SshTarget {
            user: Some("deploy".into()),
            address: "px01".into(),
            port: 2200,
            identity_file: Some(Path::new("dir").join("keys/id")),
            known_hosts_file: Some("/etc/roll/known_hosts".into()),
            config_file: Some(Path::new("dir").join("ssh_config")),
            connect_timeout: Duration::from_secs(30),
            persist: Some(Duration::from_secs(90)),
            strict_host_key_checking: false,
        }
    );
    assert_eq!(px01.ssh.destination(), "deploy@px01:2200");
    let vars: Vec<_> = px01
        .vars
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(vars, [("critical", "true"), ("site", "cmc"), ("tier", "2")]);
    let px3 = inventory.host("px3").expect("px3");
    assert_eq!(px3.ssh.destination(), "u-px3@10.0.0.px3:22");
    assert_eq!(px3.vars.get("tier").map(String::as_str), Some("1"));
    let ops = inventory.group("ops").expect("ops");
    assert_eq!(ops.ssh.port, Some(2200));
    assert_eq!(ops.ssh.strict_host_key_checking, Some(false));
}

#[test]
fn ssh_defaults() {
    let text = format!(
        r#"{BROKER}
[groups.ops]
hosts = [{{ name = "a1", half = "a" }}, {{ name = "b1", half = "b" }}]
"#
    );
    let inventory = parse_ok(&text);
    let a1 = inventory.host("a1").expect("a1");
    assert_eq!(
        a1.ssh,
        SshTarget {
            user: None,
            address: "a1".into(),
            port: DEFAULT_SSH_PORT,
            identity_file: None,
            known_hosts_file: None,
            config_file: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            persist: None,
            strict_host_key_checking: true,
        }
    );
    assert_eq!(a1.ssh.destination(), "a1:22");
    assert_eq!(a1.line, 9);
}

#[test]
fn home_is_expanded_in_paths() {
    let Some(home) = std::env::var_os("HOME") else {
        return;
    };
    let text = format!(
        r#"{BROKER}
[defaults.ssh]
identity_file = "~/.ssh/id_ed25519"

[groups.ops]
hosts = [{{ name = "a1", half = "a" }}, {{ name = "b1", half = "b" }}]
"#
    );
    let inventory = parse_ok(&text);
    assert_eq!(
        inventory
            .host("a1")
            .and_then(|h| h.ssh.identity_file.clone()),
        Some(PathBuf::from(home).join(".ssh/id_ed25519"))
    );
}

#[test]
fn group_broker_replaces_password_source() {
    let text = r#"[defaults.broker]
management_url = "https://mq.example:15671"
amqp_url = "amqps://mq.example:5671"
user = "admin"
password_file = "secrets/mq"

[groups.dev]
broker = { vhost = "dev", password_env = "DEV_PW" }
hosts = [{ name = "a1", half = "a" }, { name = "b1", half = "b" }]

[groups.ops]
broker = { vhost = "ops", user = "ops-admin" }
hosts = [{ name = "a2", half = "a" }, { name = "b2", half = "b" }]
"#;
    let inventory = parse_ok(text);
    let dev = inventory.group("dev").expect("dev");
    assert_eq!(dev.broker.password, SecretRef::Env("DEV_PW".into()));
    assert_eq!(dev.broker.display(), "admin@mq.example:15671/dev");
    let ops = inventory.group("ops").expect("ops");
    assert_eq!(
        ops.broker.password,
        SecretRef::File(Path::new("dir").join("secrets/mq"))
    );
    assert_eq!(ops.broker.display(), "ops-admin@mq.example:15671/ops");
}

#[test]
fn duplicate_within_a_group() {
    let text = format!(
        r#"{BROKER}
[groups.ops]
hosts = [
  {{ name = "px[1:3]", half = "a" }},
  {{ name = "px2", half = "a" }},
  {{ name = "px9", half = "b" }},
]
"#
    );
    assert_eq!(
        error(&text),
        "inv.toml:11:12: duplicate host px2: already defined at line 10"
    );
}

#[test]
fn pair_errors() {
    let group = |entries: &str| {
        format!(
            "{BROKER}\n[groups.ops]\nhosts = [\n  {{ name = \"a1\", half = \"a\" }},\n  \
             {{ name = \"b1\", half = \"b\" }},\n{entries}]\n"
        )
    };
    // Lines 12 and 13 hold the entries under test.
    let two_active = group(
        "  { name = \"x1\", half = \"a\", role = \"active\", pair = \"x\" },\n  \
         { name = \"x2\", half = \"b\", role = \"active\", pair = \"x\" },\n",
    );
    let errors: Vec<String> = match parse_all(&two_active, Path::new("inv.toml")) {
        Ok(_) => panic!("two actives should fail"),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    };
    assert_eq!(
        errors,
        [
            "inv.toml:12:3: incomplete pair x in group ops: active host x1 (line 12) has no \
             passive partner (a pair needs one active and one passive host)",
            "inv.toml:13:3: pair x has more than one active host: x1 (line 12) and x2 (line 13)",
        ]
    );
    let same_half = group(
        "  { name = \"x1\", half = \"a\", role = \"active\", pair = \"x\" },\n  \
         { name = \"x2\", half = \"a\", role = \"passive\", pair = \"x\" },\n",
    );
    assert_eq!(
        error(&same_half),
        "inv.toml:13:3: pair x has both hosts in half a: x1 (line 12) and x2 (line 13); \
         the active and the passive host must be in different halves"
    );
    let role_only = group("  { name = \"x1\", half = \"a\", role = \"active\" },\n");
    assert_eq!(
        error(&role_only),
        "inv.toml:12:3: host x1 has role active but no pair: give both role and pair, or neither"
    );
    let pair_only = group("  { name = \"x1\", half = \"a\", pair = \"x\" },\n");
    assert_eq!(
        error(&pair_only),
        "inv.toml:12:37: host x1 has pair x but no role: give role = \"active\" or \"passive\""
    );
    let bad_role = group("  { name = \"x1\", half = \"a\", role = \"primary\", pair = \"x\" },\n");
    assert_eq!(
        error(&bad_role),
        "inv.toml:12:37: unknown variant `primary`, expected `active` or `passive`"
    );
}

#[test]
fn pair_across_groups() {
    let text = format!(
        r#"{BROKER}
[groups.dev]
hosts = [
  {{ name = "d1", half = "a", role = "active", pair = "x" }},
  {{ name = "d2", half = "b", role = "passive", pair = "x" }},
]

[groups.ops]
hosts = [
  {{ name = "o1", half = "a", role = "active", pair = "x" }},
  {{ name = "o2", half = "b", role = "passive", pair = "x" }},
]
"#
    );
    assert_eq!(
        error(&text),
        "inv.toml:16:54: pair x is already used in group dev (line 10): \
         a pair must be within one group"
    );
}

#[test]
fn requires_errors() {
    let text = format!(
        r#"{BROKER}
[groups.ops]
requires = "ops"
hosts = [{{ name = "a1", half = "a" }}, {{ name = "b1", half = "b" }}]
"#
    );
    assert_eq!(error(&text), "inv.toml:9:12: group ops requires itself");
}

#[test]
fn structure_errors() {
    assert_eq!(
        error(&format!("{BROKER}\n[groups.ops]\nhosts = []\n")),
        "inv.toml:9:9: group ops has no hosts"
    );
    assert_eq!(
        error(&format!("{BROKER}\n[groups.ops]\nrequires = \"dev\"\n")),
        "inv.toml:8:1: missing field `hosts`"
    );
    assert_eq!(
        error(BROKER),
        "inv.toml:1:1: no groups: add at least one [groups.NAME] table"
    );
    assert_eq!(
        error("colour = \"red\"\n"),
        "inv.toml:1:1: unknown field `colour`, expected `defaults` or `groups`"
    );
    assert_eq!(
        error(&format!(
            "{BROKER}\n[groups.\"my ops\"]\nhosts = [{{ name = \"a\", half = \"a\" }}, {{ name = \"b\", half = \"b\" }}]\n"
        )),
        "inv.toml:8:9: invalid group name \"my ops\": use letters, digits, '-', '.' and '_'"
    );
}

#[test]
fn per_host_ssh_is_limited() {
    let text = format!(
        "{BROKER}\n[groups.ops]\nhosts = [\n  {{ name = \"a\", half = \"a\", ssh = {{ identity_file = \"k\" }} }},\n]\n"
    );
    assert_eq!(
        error(&text),
        "inv.toml:10:37: unknown field `identity_file`, expected one of `user`, `address`, `port`"
    );
}

#[test]
fn ssh_value_errors() {
    let ssh = |table: &str| {
        format!(
            "{BROKER}\n[defaults.ssh]\n{table}\n\n[groups.ops]\nhosts = [{{ name = \"a\", half = \"a\" }}, {{ name = \"b\", half = \"b\" }}]\n"
        )
    };
    assert_eq!(
        error(&ssh("port = 0")),
        "inv.toml:9:8: invalid ssh port 0: must be between 1 and 65535"
    );
    assert_eq!(
        error(&ssh("user = \"rl-{host}\"")),
        "inv.toml:9:8: invalid ssh user \"rl-{host}\": the only placeholder is {name}"
    );
    assert_eq!(
        error(&ssh("connect_timeout = \"10\"")),
        "inv.toml:9:19: duration \"10\" has no unit: add one of ms, s, m, h, d, w (e.g. \"10s\")"
    );
    assert_eq!(
        error(&ssh("connect_timeout = \"0s\"")),
        "inv.toml:9:19: ssh connect_timeout must be more than 0s"
    );
    assert_eq!(
        error(&ssh("password = \"x\"")),
        "inv.toml:9:1: inline ssh passwords are refused: use identity_file (key-based login)"
    );
    assert_eq!(
        error(&ssh("strict_host_key_checking = \"no\"")),
        "inv.toml:9:28: invalid type: string \"no\", expected a boolean"
    );
}

#[test]
fn the_reconnect_deadline_has_a_default_and_a_group_overrides_it() {
    let text = format!(
        "{BROKER}reconnect_deadline = \"30s\"\n\n[groups.ops]\nhosts = [{{ name = \"a\", half = \"a\" }}, {{ name = \"b\", half = \"b\" }}]\n\n[groups.dev]\nbroker.reconnect_deadline = \"5m\"\nhosts = [{{ name = \"c\", half = \"a\" }}, {{ name = \"d\", half = \"b\" }}]\n"
    );
    let inventory = parse_ok(&text);
    let deadline = |g: &str| inventory.group(g).map(|g| g.broker.reconnect_deadline);
    assert_eq!(deadline("ops"), Some(std::time::Duration::from_secs(30)));
    assert_eq!(deadline("dev"), Some(std::time::Duration::from_secs(300)));
    let plain = parse_ok(&format!(
        "{BROKER}\n[groups.ops]\nhosts = [{{ name = \"a\", half = \"a\" }}, {{ name = \"b\", half = \"b\" }}]\n"
    ));
    assert_eq!(
        plain.group("ops").map(|g| g.broker.reconnect_deadline),
        Some(DEFAULT_RECONNECT_DEADLINE)
    );
}

#[test]
fn the_listing_timeout_has_a_default_and_a_group_overrides_it() {
    let text = format!(
        "{BROKER}listing_timeout = \"5m\"\n\n[groups.ops]\nhosts = [{{ name = \"a\", half = \"a\" }}, {{ name = \"b\", half = \"b\" }}]\n\n[groups.dev]\nbroker.listing_timeout = \"30s\"\nhosts = [{{ name = \"c\", half = \"a\" }}, {{ name = \"d\", half = \"b\" }}]\n"
    );
    let inventory = parse_ok(&text);
    let timeout = |g: &str| inventory.group(g).map(|g| g.broker.listing_timeout);
    assert_eq!(timeout("ops"), Some(std::time::Duration::from_secs(300)));
    assert_eq!(timeout("dev"), Some(std::time::Duration::from_secs(30)));
    let plain = parse_ok(&format!(
        "{BROKER}\n[groups.ops]\nhosts = [{{ name = \"a\", half = \"a\" }}, {{ name = \"b\", half = \"b\" }}]\n"
    ));
    assert_eq!(
        plain.group("ops").map(|g| g.broker.listing_timeout),
        Some(crate::inventory::DEFAULT_LISTING_TIMEOUT)
    );
}

#[test]
fn broker_value_errors() {
    let broker = |extra: &str| {
        format!(
            "[defaults.broker]\nmanagement_url = \"http://127.0.0.1:15672\"\nvhost = \"/\"\nuser = \"roll\"\n{extra}\n\n[groups.ops]\nhosts = [{{ name = \"a\", half = \"a\" }}, {{ name = \"b\", half = \"b\" }}]\n"
        )
    };
    assert_eq!(
        error(&broker(
            "amqp_url = \"amqp://h:5672\"\npassword_file = \"p\"\npassword_env = \"P\""
        )),
        "inv.toml:7:16: give only one of password_file and password_env in a broker table"
    );
    assert_eq!(
        error(&broker(
            "amqp_url = \"amqp://h:5672/ops\"\npassword_env = \"P\""
        )),
        "inv.toml:5:12: invalid amqp_url: it must not name a vhost; set the broker's vhost instead"
    );
    assert_eq!(
        error(&broker(
            "amqp_url = \"amqp://h:5672\"\npassword_env = \"MY-PW\""
        )),
        "inv.toml:6:16: invalid password_env \"MY-PW\": expected an environment variable name \
         such as RABBITMQ_PASSWORD"
    );
    // Names rendered into commands and files on the hosts carry no control character.
    let text = "[defaults.broker]\nmanagement_url = \"http://127.0.0.1:15672\"\namqp_url = \"amqp://h:5672\"\nvhost = \"ops\\nexchange evil\"\nuser = \"roll\"\npassword_env = \"P\"\n\n[groups.ops]\nhosts = [{ name = \"a\", half = \"a\" }, { name = \"b\", half = \"b\" }]\n";

    assert_eq!(
        error(text),
        "inv.toml:4:9: broker vhost contains the control character '\\n'"
    );
    // A password under a group's broker, in dotted form.
    let text = format!(
        "{BROKER}\n[groups.ops]\nbroker.password = \"guest\"\nhosts = [{{ name = \"a\", half = \"a\" }}, {{ name = \"b\", half = \"b\" }}]\n"
    );
    assert_eq!(
        error(&text),
        "inv.toml:9:8: inline broker passwords are refused: use password_file or password_env"
    );
}

#[test]
fn parse_all_reports_every_error_in_file_order() {
    let text = format!(
        r#"{BROKER}
[groups.ops]
requires = "nope"
hosts = [
  {{ name = "px[3:1]", half = "a" }},
  {{ name = "px5", half = "a" }},
  {{ name = "px5", half = "a" }},
]
"#
    );
    let errors: Vec<String> = match parse_all(&text, Path::new("inv.toml")) {
        Ok(_) => panic!("should fail"),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    };
    assert_eq!(
        errors,
        [
            "inv.toml:8:1: group ops has no host in half b",
            "inv.toml:9:12: group ops requires unknown group nope (groups: ops)",
            "inv.toml:11:12: empty range px[3:1]: 3 is greater than 1",
            "inv.toml:13:12: duplicate host px5: already defined at line 12",
        ]
    );
}

#[test]
fn half_and_role_text() {
    assert_eq!(Half::A.to_string(), "a");
    assert_eq!(Half::B.other(), Half::A);
    assert_eq!("B".parse::<Half>(), Ok(Half::B));
    assert!("c".parse::<Half>().is_err());
    assert_eq!(Role::Passive.to_string(), "passive");
    assert_eq!("active".parse::<Role>(), Ok(Role::Active));
    assert!("primary".parse::<Role>().is_err());
    assert!(Half::A < Half::B);
}

#[test]
fn destination_brackets_ipv6() {
    let target = SshSettings {
        address: Some("::1".into()),
        ..SshSettings::default()
    }
    .target("h");
    assert_eq!(target.destination(), "[::1]:22");
}

#[test]
fn inventory_serializes_without_secrets() -> Result<(), serde_json::Error> {
    let inventory = load_ok("inventory/lab.toml");
    let json = serde_json::to_value(&inventory)?;
    let ops = &json["groups"][2];
    assert_eq!(ops["name"], "ops");
    assert_eq!(
        ops["broker"]["password"]["file"],
        "/var/lib/roll-lab/broker-password"
    );
    assert_eq!(ops["hosts"][0]["ssh"]["connect_timeout"], "10s");
    assert_eq!(ops["hosts"][0]["half"], "a");
    assert_eq!(ops["hosts"][8]["role"], "active");
    Ok(())
}

#[test]
fn hosts_as_array_of_tables() {
    let text = format!(
        r#"{BROKER}
[[groups.ops.hosts]]
name = "px[1:2]"
half = "a"

[[groups.ops.hosts]]
name = "px3"
half = "b"
ssh = {{ user = "rl-nobody" }}
"#
    );
    let inventory = parse_ok(&text);
    let lines: Vec<_> = inventory
        .hosts()
        .map(|h| (h.name.as_str(), h.line))
        .collect();
    assert_eq!(lines, [("px1", 8), ("px2", 8), ("px3", 12)]);
    assert_eq!(
        inventory.host("px3").and_then(|h| h.ssh.user.as_deref()),
        Some("rl-nobody")
    );
}

#[test]
fn a_group_turns_an_inherited_persist_off_with_zero() {
    let text = format!(
        r#"{BROKER}
[defaults.ssh]
persist = "2m"

[groups.ops]
hosts = [{{ name = "a1", half = "a" }}, {{ name = "b1", half = "b" }}]

[groups.dev]
ssh = {{ persist = "0s" }}
hosts = [{{ name = "a2", half = "a" }}, {{ name = "b2", half = "b" }}]
"#
    );
    let inventory = parse_ok(&text);
    let kept = inventory.host("a1").expect("a1");
    assert_eq!(kept.ssh.persist, Some(Duration::from_secs(120)));
    let closed = inventory.host("a2").expect("a2");
    assert_eq!(closed.ssh.persist, None);
}

/// A cluster's broker: one URL per node, in the order they are tried.
const CLUSTER: &str = r#"[defaults.broker]
management_url = ["http://127.0.0.1:15681", "http://127.0.0.1:15682/", "http://127.0.0.1:15683"]
amqp_url = ["amqp://127.0.0.1:5681", "amqp://127.0.0.1:5682", "amqp://127.0.0.1:5683"]
vhost = "quorum"
user = "roll"
password_env = "ROLL_BROKER_PASSWORD"
"#;

const TWO_HOSTS: &str =
    "hosts = [{ name = \"a\", half = \"a\" }, { name = \"b\", half = \"b\" }]\n";

#[test]
fn broker_urls_are_one_string_or_an_array_kept_in_order() {
    let text = format!(
        "{CLUSTER}\n[groups.quorum]\n{TWO_HOSTS}\n[groups.single]\nbroker.management_url = \"http://10.0.0.1:15672\"\nbroker.amqp_url = [\"amqps://10.0.0.1:5671\"]\nhosts = [{{ name = \"c\", half = \"a\" }}, {{ name = \"d\", half = \"b\" }}]\n"
    );
    let inventory = parse_ok(&text);
    let quorum = &inventory.group("quorum").expect("quorum").broker;
    assert_eq!(
        quorum.management_urls,
        [
            "http://127.0.0.1:15681",
            "http://127.0.0.1:15682/",
            "http://127.0.0.1:15683"
        ]
    );
    assert_eq!(
        quorum.amqp_urls,
        [
            "amqp://127.0.0.1:5681",
            "amqp://127.0.0.1:5682",
            "amqp://127.0.0.1:5683"
        ]
    );
    assert_eq!(quorum.management_url(), "http://127.0.0.1:15681");
    assert_eq!(quorum.amqp_url(), "amqp://127.0.0.1:5681");
    assert_eq!(
        quorum.display(),
        "roll@127.0.0.1:15681,127.0.0.1:15682,127.0.0.1:15683/quorum"
    );
    // A group's own value replaces the whole list; a one-item array is a single URL.
    let single = &inventory.group("single").expect("single").broker;
    assert_eq!(single.management_urls, ["http://10.0.0.1:15672"]);
    assert_eq!(single.amqp_urls, ["amqps://10.0.0.1:5671"]);
    assert_eq!(single.display(), "roll@10.0.0.1:15672/quorum");
}

#[test]
fn broker_url_arrays_are_checked_item_by_item_on_their_line() {
    let with = |management: &str, amqp: &str| {
        format!(
            "[defaults.broker]\nmanagement_url = {management}\namqp_url = {amqp}\nvhost = \"q\"\nuser = \"roll\"\npassword_env = \"P\"\n\n[groups.ops]\n{TWO_HOSTS}"
        )
    };
    let good_amqp = "[\"amqp://h1:5672\", \"amqp://h2:5672\"]";
    assert_eq!(
        error(&with("[]", good_amqp)),
        "inv.toml:2:18: management_url is an empty array: give one URL, or one per node of \
         the cluster"
    );
    assert_eq!(
        error(&with("[\"http://h1:15672\", \"h2:15672\"]", good_amqp)),
        "inv.toml:2:38: invalid management_url (item 2): expected a URL such as https://host:port"
    );
    // An item on a line of its own is reported on that line.
    assert_eq!(
        error(&with(
            "[\n  \"http://h1:15672\",\n  \"http://h2:15672\",\n  \"http://h3:0\",\n]",
            good_amqp
        )),
        "inv.toml:5:3: invalid management_url (item 3): the port must be between 1 and 65535"
    );
    let secret = error(&with(
        "\"http://h1:15672\"",
        "[\"amqp://h1:5672\", \"amqp://roll:hunter2@h2:5672\"]",
    ));
    assert_eq!(
        secret,
        "inv.toml:3:31: inline broker passwords are refused: use password_file or password_env \
         (found in amqp_url (item 2))"
    );
    assert!(!secret.contains("hunter2"));
    assert_eq!(
        error(&with(
            "\"http://h1:15672\"",
            "[\"amqp://h1:5672\", \"amqp://h2:5672/q\"]"
        )),
        "inv.toml:3:31: invalid amqp_url (item 2): it must not name a vhost; set the broker's \
         vhost instead"
    );
    assert_eq!(
        error(&with(
            "[\"http://h1:15672\", \"HTTP://h1:15672/\"]",
            good_amqp
        )),
        "inv.toml:2:38: management_url (item 2) repeats item 1 of the array"
    );
    let wrong_type = error(&with("15672", good_amqp));
    assert!(wrong_type.starts_with("inv.toml:2:18: "), "{wrong_type}");
    assert!(
        wrong_type.contains("a URL, or an array of URLs"),
        "{wrong_type}"
    );
    let wrong_item = error(&with("[\"http://h1:15672\", 2]", good_amqp));
    assert!(wrong_item.starts_with("inv.toml:2:"), "{wrong_item}");
    // Every bad item is reported, not only the first.
    let errors: Vec<String> = match parse_all(
        &with(
            "[\"ftp://h1\", \"http://h2:15672\", \"http://\"]",
            good_amqp,
        ),
        Path::new("inv.toml"),
    ) {
        Ok(_) => panic!("should fail"),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    };
    assert_eq!(
        errors,
        [
            "inv.toml:2:19: invalid management_url (item 1): the scheme must be http or https",
            "inv.toml:2:50: invalid management_url (item 3): no host (expected e.g. \
             https://host:port)",
        ]
    );
}
