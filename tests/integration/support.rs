//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The lab's state directory, as made by `tests/lab/up`.
pub const LAB_STATE: &str = "/var/lib/roll-lab";

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A path under the repository root.
pub fn repo(path: &str) -> PathBuf {
    root().join(path)
}

/// Fails with a clear message when the lab is not up.
pub fn require_lab() {
    let password = Path::new(LAB_STATE).join("broker-password");
    assert!(
        password.exists(),
        "the lab is not up ({} is missing): run tests/lab/up, or run the suite with tests/run",
        password.display()
    );
}

/// What a run of `roll` printed and how it ended.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(output: Output) -> Run {
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// Runs the `roll` binary with arguments, from the repository root, without ROLL_INVENTORY.
pub fn roll(args: &[&str]) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_roll"))
        .args(args)
        .current_dir(root())
        .env_remove("ROLL_INVENTORY")
        .output()
        .expect("the roll binary runs");
    output.into()
}

/// Parses stdout as JSON, failing with the whole run in the message.
pub fn json(run: &Run) -> serde_json::Value {
    serde_json::from_str(&run.stdout)
        .unwrap_or_else(|err| panic!("stdout is not JSON ({err}): {run:#?}"))
}

/// Puts the lab back as a fresh `tests/lab/up` makes it.
pub fn reset_lab() {
    let status = Command::new(repo("tests/lab/reset"))
        .stdout(std::process::Stdio::null())
        .status()
        .expect("tests/lab/reset runs");
    assert!(status.success(), "tests/lab/reset failed");
}

/// Resets the lab when dropped, so that a test that changes it leaves it as it found it,
/// whether it passes or fails.
pub struct ResetOnDrop;

impl Drop for ResetOnDrop {
    fn drop(&mut self) {
        reset_lab();
    }
}

/// The pids of a lab host's running sr3 instances (from its pid files), sorted.
pub fn sr3_pids(host: &str) -> Vec<u32> {
    let mut pids = vec![];
    let base = PathBuf::from(format!("/home/rl-{host}/.cache/sr3"));
    for component in std::fs::read_dir(&base).into_iter().flatten().flatten() {
        for config in std::fs::read_dir(component.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            for file in std::fs::read_dir(config.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let path = file.path();
                if path.extension().is_some_and(|e| e == "pid")
                    && let Ok(text) = std::fs::read_to_string(&path)
                    && let Ok(pid) = text.trim().parse::<u32>()
                    && Path::new(&format!("/proc/{pid}")).exists()
                {
                    pids.push(pid);
                }
            }
        }
    }
    pids.sort_unstable();
    pids
}

/// `roll status` as JSON rows, by host.
pub fn status(
    state_dir: &str,
    group: &str,
) -> std::collections::BTreeMap<String, serde_json::Value> {
    let run = roll(&[
        "status",
        "--state-dir",
        state_dir,
        "--group",
        group,
        "-p",
        "playbooks/sr3-minor.toml",
        "--output",
        "json",
    ]);
    assert_eq!(run.code, 0, "{run:#?}");
    json(&run)
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            (
                r["host"].as_str().unwrap_or_default().to_string(),
                r.clone(),
            )
        })
        .collect()
}

/// Runs `roll` with `args` and SIGKILLs it as soon as a progress line on stderr contains
/// `words` in a row (e.g. `["px5", "verify", "ok"]`). Fails if that never happens in 3 minutes.
pub fn kill_at(args: &[&str], words: &[&str]) {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_roll"))
        .args(args)
        .current_dir(root())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("roll starts");
    let stderr = child.stderr.take().expect("stderr");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    let mut seen = vec![];
    let mut reached = false;
    for line in BufReader::new(stderr).lines() {
        let line = line.expect("a line of stderr");
        let found = line
            .split_whitespace()
            .collect::<Vec<_>>()
            .windows(words.len())
            .any(|w| w == words);
        seen.push(line);
        if found {
            reached = true;
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{words:?} never came: {seen:#?}"
        );
    }
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    assert!(reached, "roll ended before {words:?}: {seen:#?}");
}

/// Messages published to the lab's ops group all along, by `tests/lab/publish`; their ids go
/// to a file, for [`audit`].
pub struct Traffic {
    child: std::process::Child,
    pub ids: PathBuf,
}

impl Traffic {
    /// Starts publishing `rate` messages a second to ops, ids prefixed with `prefix`.
    pub fn start(dir: &Path, prefix: &str, rate: u32) -> Traffic {
        let ids = dir.join(format!("{prefix}.ids"));
        let child = Command::new(repo("tests/lab/publish"))
            .args([
                "--rate",
                &rate.to_string(),
                "--count",
                "10000000",
                "--id-prefix",
                prefix,
                "--ids-file",
                &ids.display().to_string(),
                "--quiet",
                // A fault test restarts the broker: the publisher rides through it.
                "--reconnect",
                "120",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("tests/lab/publish starts");
        Traffic { child, ids }
    }

    /// Stops publishing (SIGTERM: the publisher waits for its last confirms and writes every
    /// confirmed id); returns how many were published.
    pub fn stop(mut self) -> usize {
        let pid = self.child.id().to_string();
        let killed = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(killed.success(), "cannot signal the publisher");
        // Its ids file lists only confirmed ids, written as the confirms come: it holds
        // whatever way the publisher ends (under load, the end of a connection can fail).
        let status = self.child.wait().expect("the publisher ends");
        if !status.success() {
            eprintln!("the publisher ended with {status}; its confirmed ids are kept");
        }
        std::fs::read_to_string(&self.ids)
            .expect("ids file")
            .lines()
            .filter(|l| !l.trim().is_empty())
            .count()
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `tests/lab/audit` of these ids in ops (JSON): whether every id was received by each
/// queue's subscribers or is still in the queue. The subscribers are stopped first (the
/// lab is reset after the test anyway), so that their backlog need not drain.
pub fn audit(ids: &Path) -> serde_json::Value {
    // The subscribers' own stop for the audit explains no id received twice.
    let stopped = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    stop_ops_subscribers();
    let output = Command::new(repo("tests/lab/audit"))
        .args([
            "--ids-file",
            &ids.display().to_string(),
            "--settle",
            "60",
            "--json",
            "--ignore-after",
            &format!("{stopped:.3}"),
        ])
        .output()
        .expect("tests/lab/audit runs");
    let text = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "audit printed no JSON ({e}): {text}\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// The holding queues and exchanges (`roll.hold.*`) on the ops vhost.
pub fn holding_leftovers() -> Vec<String> {
    let (management, runtime) = lab_management("ops");
    let mut names = vec![];
    for kind in ["queues", "exchanges"] {
        let listed: Vec<serde_json::Value> = runtime
            .block_on(management.get(
                &format!("{kind}/ops"),
                &[("columns", "name".to_string())],
                kind,
            ))
            .expect("listing");
        names.extend(
            listed
                .iter()
                .filter_map(|q| q["name"].as_str())
                .filter(|n| roll::broker::holding::is_holding(n))
                .map(|n| format!("{kind}: {n}")),
        );
    }
    names
}

/// Stops sr3 on every ops host of the lab (in parallel, through the lab's sshd), so that
/// every message not yet received is back in its queue for [`audit`] to see.
pub fn stop_ops_subscribers() {
    let hosts = [
        "px1", "px2", "px3", "px4", "px5", "px6", "px7", "px8", "pxatx1", "pxatx2",
    ];
    let children: Vec<(String, std::process::Child)> = hosts
        .iter()
        .map(|h| {
            let user = format!("rl-{h}");
            let child = Command::new("ssh")
                .args([
                    "-p",
                    "2222",
                    "-i",
                    &format!("{LAB_STATE}/ssh/id_ed25519"),
                    "-o",
                    &format!("UserKnownHostsFile={LAB_STATE}/ssh/known_hosts"),
                    "-o",
                    "BatchMode=yes",
                    &format!("{user}@127.0.0.1"),
                    &format!("USER={user} ~/venv/bin/sr3 stop"),
                ])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("ssh runs");
            (h.to_string(), child)
        })
        .collect();
    for (host, mut child) in children {
        let status = child.wait().expect("ssh ends");
        assert!(status.success(), "sr3 stop on {host} failed: {status}");
    }
}

/// A management API client for a lab group's vhost, as the lab inventory describes it, and
/// a runtime to drive it.
pub fn lab_management(
    group: &str,
) -> (
    roll::broker::management::Management,
    tokio::runtime::Runtime,
) {
    let inventory = roll::inventory::load(&repo("inventory/lab.toml")).expect("lab inventory");
    let group = inventory.group(group).expect("group");
    let password = group.broker.password.read().expect("password");
    let management =
        roll::broker::management::Management::new(&group.broker, password).expect("client");
    (management, tokio::runtime::Runtime::new().expect("runtime"))
}

/// What a watcher does when `roll` prints a line (see [`run_watching`]).
pub enum Next {
    /// Keep reading.
    Go,
}

/// Runs `roll` with `args` and `env`, handing every line it prints on stderr to `watch` as it
/// comes (the broker can be stopped, a host cut, a connection closed, exactly then); returns
/// how it ended, with all it printed. Fails if it runs over `limit`.
pub fn run_watching(
    args: &[&str],
    env: &[(&str, String)],
    limit: std::time::Duration,
    mut watch: impl FnMut(&str) -> Next,
) -> Run {
    use std::io::{BufRead, BufReader, Read};
    let mut command = Command::new(env!("CARGO_BIN_EXE_roll"));
    command
        .args(args)
        .current_dir(root())
        .env_remove("ROLL_INVENTORY")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().expect("roll starts");
    let mut stdout = child.stdout.take().expect("stdout");
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let stderr = child.stderr.take().expect("stderr");
    let deadline = std::time::Instant::now() + limit;
    let mut seen = String::new();
    for line in BufReader::new(stderr).lines() {
        let Ok(line) = line else { break };
        seen.push_str(&line);
        seen.push('\n');
        assert!(
            std::time::Instant::now() < deadline,
            "roll ran over {limit:?}: {seen}"
        );
        let Next::Go = watch(&line);
    }
    let status = child.wait().expect("roll ends");
    Run {
        code: status.code().unwrap_or(-1),
        stdout: out.join().unwrap_or_default(),
        stderr: seen,
    }
}

/// True when the words appear in a row in a progress line (`["px5", "verify", "ok"]`).
pub fn says(line: &str, words: &[&str]) -> bool {
    line.split_whitespace()
        .collect::<Vec<_>>()
        .windows(words.len())
        .any(|w| w == words)
}

/// `rabbitmqctl` with arguments; fails the test when it fails.
pub fn rabbitmqctl(args: &[&str]) -> String {
    let output = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl runs");
    assert!(output.status.success(), "rabbitmqctl {args:?}: {output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Stops the broker's application (as an operator restarting it does); the node stays.
pub fn broker_stop() {
    rabbitmqctl(&["-q", "stop_app"]);
}

/// Starts the broker's application again and waits until the management API answers.
pub fn broker_start() {
    rabbitmqctl(&["-q", "start_app"]);
    rabbitmqctl(&["-q", "await_startup"]);
    let (management, runtime) = lab_management("ops");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while runtime.block_on(management.check_vhost()).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the management API did not come back"
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}

/// Lets a run waiting at a failpoint go on (see roll's `failpoint` module).
pub fn release_failpoint(dir: &Path, point: &str) {
    std::fs::write(dir.join(point), "").expect("failpoint file");
}

/// The point of a `failpoint STAGE=WORD QUEUE: waiting` line, if it is one.
pub fn failpoint_of(line: &str) -> Option<String> {
    let rest = line.strip_prefix("failpoint ")?;
    Some(rest.split_whitespace().next()?.to_string())
}

/// Cuts a lab host off: its key is moved aside (no new login) and its SSH sessions end
/// (roll's connection to it breaks). Its services keep running.
pub fn host_lost(host: &str) {
    let keys = format!("/home/rl-{host}/.ssh/authorized_keys");
    std::fs::rename(&keys, format!("{keys}.lost")).expect("move the key aside");
    let _ = Command::new("pkill")
        .args(["-KILL", "-u", &format!("rl-{host}"), "-f", "^sshd"])
        .status();
}

/// Puts a host cut off by [`host_lost`] back.
pub fn host_repaired(host: &str) {
    let keys = format!("/home/rl-{host}/.ssh/authorized_keys");
    std::fs::rename(format!("{keys}.lost"), &keys).expect("put the key back");
}

/// Closes the AMQP connection that holds a group's lock, as `rabbitmqctl close_connection`.
pub fn close_lock_connection(group: &str) {
    let listing = rabbitmqctl(&[
        "-q",
        "list_connections",
        "--no-table-headers",
        "pid",
        "client_properties",
    ]);
    let wanted = format!("\"connection_name\",\"roll lock {group} ");
    let pid = listing
        .lines()
        .find(|l| l.contains(&wanted))
        .and_then(|l| l.split('\t').next())
        .unwrap_or_else(|| panic!("no lock connection of {group} in {listing}"))
        .to_string();
    rabbitmqctl(&["-q", "close_connection", &pid, "closed by the fault test"]);
}

/// A copy of a checked-in playbook with `replace` applied, written as `name.toml` in `dir`,
/// its templates copied beside it with the same replacements. Returns its path.
pub fn playbook_variant(dir: &Path, base: &str, name: &str, replace: &[(&str, &str)]) -> String {
    let edit = |text: &str| {
        replace
            .iter()
            .fold(text.to_string(), |t, (from, to)| t.replace(from, to))
    };
    let text = edit(&std::fs::read_to_string(repo(base)).expect("playbook"));
    for line in text.lines() {
        if let Some(template) = line
            .strip_prefix("template = \"")
            .and_then(|t| t.strip_suffix('"'))
        {
            let from = repo("playbooks").join(template);
            let to = dir.join(template);
            std::fs::create_dir_all(to.parent().expect("parent")).expect("template dir");
            let content = std::fs::read_to_string(&from).expect("template");
            std::fs::write(&to, edit(&content)).expect("template copy");
        }
    }
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).expect("playbook copy");
    path.display().to_string()
}

/// The ids an audit found missing and received twice, summed over its queues.
pub fn audit_counts(audit: &serde_json::Value) -> (u64, u64) {
    let totals = &audit["totals"];
    (
        totals["missing"].as_u64().unwrap_or(u64::MAX),
        totals["duplicates"].as_u64().unwrap_or(u64::MAX),
    )
}

/// Like [`audit_counts`], without the queues of `hosts` (a passive host's queue appears only
/// when a pair swap starts it: what was published before never reached it).
pub fn audit_counts_without(audit: &serde_json::Value, hosts: &[&str]) -> (u64, u64) {
    let mut missing = 0;
    let mut duplicates = 0;
    for queue in audit["queues"].as_array().into_iter().flatten() {
        let name = queue["queue"].as_str().unwrap_or_default();
        if hosts.iter().any(|h| name.contains(&format!(".rl-{h}_"))) {
            continue;
        }
        missing += queue["missing"].as_u64().unwrap_or(u64::MAX / 4);
        duplicates += queue["duplicates"].as_u64().unwrap_or(u64::MAX / 4);
    }
    (missing, duplicates)
}

/// The arguments of `roll upgrade --yes` of a half of a group, with more after them.
pub fn upgrade_args<'a>(
    state: &'a str,
    playbook: &'a str,
    group: &'a str,
    half: &'a str,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec![
        "upgrade",
        "--state-dir",
        state,
        "-p",
        playbook,
        "--group",
        group,
        "--half",
        half,
        "--yes",
    ];
    args.extend_from_slice(extra);
    args
}

/// The arguments of `roll rollback --yes` of a group's last run, with more after them.
pub fn rollback_args<'a>(
    state: &'a str,
    playbook: &'a str,
    group: &'a str,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec![
        "rollback",
        "--state-dir",
        state,
        "-p",
        playbook,
        "--group",
        group,
        "--yes",
    ];
    args.extend_from_slice(extra);
    args
}

/// Reads a spawned `roll`'s stdout up to its plan's `Plan:` line (it then waits for its
/// approval); gives the rest of its stdout, kept open so that `roll` can go on printing.
pub fn read_to_plan(
    child: &mut std::process::Child,
) -> std::io::Lines<std::io::BufReader<std::process::ChildStdout>> {
    use std::io::BufRead;
    let out = child.stdout.take().expect("roll's stdout is piped");
    let mut lines = std::io::BufReader::new(out).lines();
    loop {
        let line = lines
            .next()
            .expect("roll's stdout ended before its plan")
            .expect("a line");
        if line.trim_start().starts_with("Plan:") {
            return lines;
        }
    }
}

/// Every one of `hosts` of ops shows this version and service state in `roll status`.
pub fn assert_hosts(state: &str, hosts: &[&str], version: &str, service: &str) {
    let rows = status(state, "ops");
    for host in hosts {
        assert_eq!(rows[*host]["version"], version, "{host}: {}", rows[*host]);
        assert_eq!(rows[*host]["service"], service, "{host}: {}", rows[*host]);
    }
}
