//! Helpers shared by the integration tests: [`Roll`], a builder for `roll` invocations,
//! [`lab`], the lab's facts as `inventory/lab.toml` gives them, and the lab's own tools.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;

/// The lab's inventory (the `roll` binary's default one), as `tests/lab/up` makes the lab.
pub const LAB_INVENTORY: &str = "inventory/lab.toml";
/// The minor release: no queue changes.
pub const MINOR: &str = "playbooks/sr3-minor.toml";
/// The queue-changing release: x-expires on the hosts' own queues and on the shared one.
pub const EXPIRE: &str = "playbooks/sr3-queue-expire.toml";

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A path under the repository root.
pub fn repo(path: &str) -> PathBuf {
    root().join(path)
}

/// What `inventory/lab.toml` says of the lab: its sshd and broker, its groups' hosts.
#[derive(Debug)]
pub struct Lab {
    pub ssh: LabSsh,
    pub broker: LabBroker,
    /// The hosts of each group, ranges expanded, in the inventory's order.
    groups: std::collections::BTreeMap<String, Vec<LabHost>>,
}

/// The lab's `[defaults.ssh]`.
#[derive(Debug, serde::Deserialize)]
pub struct LabSsh {
    pub address: String,
    pub port: u16,
    /// The login, `{name}` standing for the host's name (see [`Lab::user`]).
    pub user: String,
    pub identity_file: PathBuf,
    pub known_hosts_file: PathBuf,
}

/// The lab's `[defaults.broker]`.
#[derive(Debug, serde::Deserialize)]
pub struct LabBroker {
    pub management_url: String,
    pub amqp_url: String,
    pub user: String,
    pub password_file: PathBuf,
}

/// A host of the lab inventory.
#[derive(Debug, serde::Deserialize)]
struct LabHost {
    name: String,
    half: String,
    role: Option<String>,
}

/// The parts of `inventory/lab.toml` the tests read.
#[derive(serde::Deserialize)]
struct LabFile {
    defaults: LabDefaults,
    groups: std::collections::BTreeMap<String, LabGroup>,
}

#[derive(serde::Deserialize)]
struct LabDefaults {
    ssh: LabSsh,
    broker: LabBroker,
}

#[derive(serde::Deserialize)]
struct LabGroup {
    hosts: Vec<LabHost>,
}

/// The lab's facts, read once from `inventory/lab.toml`.
pub fn lab() -> &'static Lab {
    static LAB: OnceLock<Lab> = OnceLock::new();
    LAB.get_or_init(|| {
        let path = repo(LAB_INVENTORY);
        let text = std::fs::read_to_string(&path).expect("the lab inventory");
        let file: LabFile = toml::from_str(&text)
            .unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()));
        let groups = file
            .groups
            .into_iter()
            .map(|(name, group)| {
                let hosts = group
                    .hosts
                    .into_iter()
                    .flat_map(|host| {
                        roll::inventory::expand_range(&host.name)
                            .expect("a host name range")
                            .into_iter()
                            .map(move |name| LabHost {
                                name,
                                half: host.half.clone(),
                                role: host.role.clone(),
                            })
                    })
                    .collect();
                (name, hosts)
            })
            .collect();
        Lab {
            ssh: file.defaults.ssh,
            broker: file.defaults.broker,
            groups,
        }
    })
}

impl Lab {
    fn group(&self, group: &str) -> &[LabHost] {
        self.groups
            .get(group)
            .unwrap_or_else(|| panic!("no group {group} in the lab inventory"))
    }

    /// Every host of a group, in the inventory's order.
    pub fn hosts(&self, group: &str) -> Vec<String> {
        self.group(group).iter().map(|h| h.name.clone()).collect()
    }

    /// The hosts of a half of a group, in the inventory's order.
    pub fn half(&self, group: &str, half: &str) -> Vec<String> {
        let hosts = self.group(group).iter().filter(|h| h.half == half);
        hosts.map(|h| h.name.clone()).collect()
    }

    /// The hosts of a half that serve (sr3 runs on them): the half without its passive host.
    pub fn serving(&self, group: &str, half: &str) -> Vec<String> {
        let hosts = self.group(group).iter().filter(|h| h.half == half);
        let serving = hosts.filter(|h| h.role.as_deref() != Some("passive"));
        serving.map(|h| h.name.clone()).collect()
    }

    /// A host's login on the lab's sshd (an OS user of this machine): `rl-<host>`.
    pub fn user(&self, host: &str) -> String {
        self.ssh.user.replace("{name}", host)
    }

    /// A host's home directory on this machine (the lab's hosts are its OS users).
    pub fn home(&self, host: &str) -> PathBuf {
        PathBuf::from("/home").join(self.user(host))
    }
}

/// The hosts of ops half a that serve: px1-4 (not its passive pxatx2).
pub fn ops_a() -> Vec<String> {
    lab().serving("ops", "a")
}

/// The hosts of ops half b that serve: px5-8 and pxatx1 (all of it).
pub fn ops_b() -> Vec<String> {
    lab().serving("ops", "b")
}

/// Fails with a clear message when the lab is not up.
pub fn require_lab() {
    let password = &lab().broker.password_file;
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

/// A `roll` invocation, built up and then [`run`](Roll::run) or [`spawn`](Roll::spawn)ed:
/// `Roll::upgrade("ops", "b").playbook(EXPIRE).state(&dir).yes().json().run()`.
///
/// The arguments come in one order whatever the order of the calls: the subcommand, then
/// `-i`, `--state-dir`, `-p`, `--group`, `--half` and `--yes` when set, then the other
/// flags ([`json`](Roll::json), [`parallel`](Roll::parallel), [`arg`](Roll::arg), ...) in
/// the order they were added. `roll` runs from the repository root, without
/// `ROLL_INVENTORY` (its default inventory is the lab's), with the [`env`](Roll::env) given.
#[derive(Clone, Debug)]
#[must_use = "a Roll does nothing until it is run or spawned"]
pub struct Roll {
    subcommand: String,
    inventory: Option<String>,
    state: Option<String>,
    playbook: Option<String>,
    group: Option<String>,
    half: Option<String>,
    yes: bool,
    rest: Vec<String>,
    env: Vec<(OsString, OsString)>,
}

impl Roll {
    /// `roll <subcommand>`, with nothing else yet.
    pub fn new(subcommand: &str) -> Roll {
        Roll {
            subcommand: subcommand.to_string(),
            inventory: None,
            state: None,
            playbook: None,
            group: None,
            half: None,
            yes: false,
            rest: vec![],
            env: vec![],
        }
    }

    /// `roll check`.
    pub fn check() -> Roll {
        Roll::new("check")
    }

    /// `roll inventory` (`inventory` names the `-i` option here: see [`inventory`](Self::inventory)).
    pub fn list_inventory() -> Roll {
        Roll::new("inventory")
    }

    /// `roll queue-diff --group <group>`.
    pub fn queue_diff(group: &str) -> Roll {
        Roll::new("queue-diff").group(group)
    }

    /// `roll upgrade --group <group> --half <half>` (no `--yes`: see [`yes`](Roll::yes)).
    pub fn upgrade(group: &str, half: &str) -> Roll {
        Roll::new("upgrade").group(group).half(half)
    }

    /// `roll rollback --group <group>`.
    pub fn rollback(group: &str) -> Roll {
        Roll::new("rollback").group(group)
    }

    /// `roll resume --group <group>`.
    pub fn resume(group: &str) -> Roll {
        Roll::new("resume").group(group)
    }

    /// `roll status --group <group>`.
    pub fn status(group: &str) -> Roll {
        Roll::new("status").group(group)
    }

    /// `-i <path>`: another inventory than the lab's.
    pub fn inventory(mut self, path: impl AsRef<Path>) -> Roll {
        self.inventory = Some(path.as_ref().display().to_string());
        self
    }

    /// `--state-dir <dir>`.
    pub fn state(mut self, dir: impl AsRef<Path>) -> Roll {
        self.state = Some(dir.as_ref().display().to_string());
        self
    }

    /// `-p <playbook>` (relative to the repository root, such as [`MINOR`], or absolute).
    pub fn playbook(mut self, path: impl AsRef<Path>) -> Roll {
        self.playbook = Some(path.as_ref().display().to_string());
        self
    }

    /// `--group <group>`.
    pub fn group(mut self, group: &str) -> Roll {
        self.group = Some(group.to_string());
        self
    }

    /// `--half <half>`.
    pub fn half(mut self, half: &str) -> Roll {
        self.half = Some(half.to_string());
        self
    }

    /// `--yes`: the plan approved without asking.
    pub fn yes(mut self) -> Roll {
        self.yes = true;
        self
    }

    /// `--output json`.
    pub fn json(self) -> Roll {
        self.args(["--output", "json"])
    }

    /// `--dry-run`.
    pub fn dry_run(self) -> Roll {
        self.arg("--dry-run")
    }

    /// `--parallel <hosts>`.
    pub fn parallel(self, hosts: usize) -> Roll {
        self.args(["--parallel", &hosts.to_string()])
    }

    /// `--skip-promotion-check`.
    pub fn skip_promotion_check(self) -> Roll {
        self.arg("--skip-promotion-check")
    }

    /// `--allow-message-loss`.
    pub fn allow_message_loss(self) -> Roll {
        self.arg("--allow-message-loss")
    }

    /// `--probe` (of `queue-diff`).
    pub fn probe(self) -> Roll {
        self.arg("--probe")
    }

    /// One more argument, after those set so far.
    pub fn arg(mut self, arg: impl AsRef<str>) -> Roll {
        self.rest.push(arg.as_ref().to_string());
        self
    }

    /// More arguments, after those set so far.
    pub fn args<S: AsRef<str>>(self, args: impl IntoIterator<Item = S>) -> Roll {
        args.into_iter().fold(self, Roll::arg)
    }

    /// An environment variable for `roll`.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Roll {
        let (key, value) = (key.as_ref().to_owned(), value.as_ref().to_owned());
        self.env.push((key, value));
        self
    }

    /// The arguments `roll` gets.
    pub fn argv(&self) -> Vec<String> {
        let mut argv = vec![self.subcommand.clone()];
        let options = [
            ("-i", &self.inventory),
            ("--state-dir", &self.state),
            ("-p", &self.playbook),
            ("--group", &self.group),
            ("--half", &self.half),
        ];
        for (flag, value) in options {
            if let Some(value) = value {
                argv.extend([flag.to_string(), value.clone()]);
            }
        }
        if self.yes {
            argv.push("--yes".to_string());
        }
        argv.extend(self.rest.iter().cloned());
        argv
    }

    /// The command that runs `roll` so, its standard streams not set yet.
    pub fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_roll"));
        command
            .args(self.argv())
            .current_dir(root())
            .env_remove("ROLL_INVENTORY")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }

    /// Runs `roll` to its end.
    pub fn run(&self) -> Run {
        self.command()
            .output()
            .expect("the roll binary runs")
            .into()
    }

    /// Starts `roll` with its stdin and stdout piped (to approve its plan or not, to read
    /// what it prints: see [`read_to_plan`]) and its stderr dropped.
    pub fn spawn(&self) -> Child {
        self.spawn_with(Stdio::piped(), Stdio::piped(), Stdio::null())
    }

    /// Starts `roll` with these standard streams.
    pub fn spawn_with(&self, stdin: Stdio, stdout: Stdio, stderr: Stdio) -> Child {
        self.command()
            .stdin(stdin)
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("roll starts")
    }
}

/// Parses stdout as JSON, failing with the whole run in the message.
pub fn json(run: &Run) -> serde_json::Value {
    serde_json::from_str(&run.stdout)
        .unwrap_or_else(|err| panic!("stdout is not JSON ({err}): {run:#?}"))
}

/// Puts the single node's groups (dev, stage, ops) back as a fresh `tests/lab/up` makes
/// them; the cluster's are left alone (see [`ClusterResetOnDrop`]).
pub fn reset_lab() {
    lab_reset("--single");
}

/// `tests/lab/reset` with one option.
fn lab_reset(option: &str) {
    let status = Command::new(repo("tests/lab/reset"))
        .arg(option)
        .stdout(Stdio::null())
        .status()
        .expect("tests/lab/reset runs");
    assert!(status.success(), "tests/lab/reset {option} failed");
}

/// Puts the cluster's groups (quorum, celery) back as `tests/lab/up` made them, and starts a
/// node a test stopped, when dropped: whether the test passes or fails.
pub struct ClusterResetOnDrop;

impl Drop for ClusterResetOnDrop {
    fn drop(&mut self) {
        lab_reset("--cluster");
    }
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
    let base = lab().home(host).join(".cache/sr3");
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
    state_dir: impl AsRef<Path>,
    group: &str,
) -> std::collections::BTreeMap<String, serde_json::Value> {
    let run = Roll::status(group)
        .state(state_dir)
        .playbook(MINOR)
        .json()
        .run();
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

/// Runs `roll` and SIGKILLs it as soon as a progress line on stderr contains `words` in a
/// row (e.g. `["px5", "verify", "ok"]`, see [`says`]). Fails if that never happens in 3 minutes.
pub fn kill_at(roll: &Roll, words: &[&str]) {
    use std::io::{BufRead, BufReader};
    let mut child = roll.spawn_with(Stdio::inherit(), Stdio::null(), Stdio::piped());
    let stderr = child.stderr.take().expect("stderr");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    let mut seen = vec![];
    let mut reached = false;
    for line in BufReader::new(stderr).lines() {
        let line = line.expect("a line of stderr");
        let found = says(&line, words);
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
    child: Child,
    pub ids: PathBuf,
}

impl Traffic {
    /// Starts publishing `rate` messages a second to ops, ids prefixed with `prefix`.
    pub fn start(dir: &Path, prefix: &str, rate: u32) -> Traffic {
        Traffic::start_in(dir, prefix, rate, &[])
    }

    /// [`Traffic::start`] with more options for `tests/lab/publish`: another vhost and
    /// broker nodes (`--vhost quorum --host 127.0.0.1:5682,...`).
    pub fn start_in(dir: &Path, prefix: &str, rate: u32, options: &[&str]) -> Traffic {
        let ids = dir.join(format!("{prefix}.ids"));
        let child = Command::new(repo("tests/lab/publish"))
            .args(options)
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
            .stdout(Stdio::null())
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
    audit_with(ids, &[])
}

/// [`audit`], with ids published to some queues only: `(word, ids file)`, those ids expected
/// in the queues whose name contains the word.
pub fn audit_with(ids: &Path, only: &[(String, PathBuf)]) -> serde_json::Value {
    audit_of("ops", &[], ids, only)
}

/// [`audit_with`] of a group's vhost: its subscribers stopped first, `options` for
/// `tests/lab/audit` (another vhost and broker: `--vhost quorum --mgmt-url ... --host ...`).
pub fn audit_of(
    group: &str,
    options: &[&str],
    ids: &Path,
    only: &[(String, PathBuf)],
) -> serde_json::Value {
    // The subscribers' own stop for the audit explains no id received twice.
    let stopped = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    stop_subscribers(group);
    let only: Vec<String> = only
        .iter()
        .flat_map(|(word, file)| {
            [
                "--queue-ids".to_string(),
                format!("{word}={}", file.display()),
            ]
        })
        .collect();
    let output = Command::new(repo("tests/lab/audit"))
        .args(options)
        .args(&only)
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
    script_json("audit", &output)
}

/// The JSON document a lab script printed on stdout; fails with what it printed otherwise.
pub fn script_json(script: &str, output: &Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "{script} printed no JSON ({e}): {text}\n{}",
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

/// Stops sr3 on every host of a lab group (in parallel, through the lab's sshd), so that
/// every message not yet received is back in its queue for [`audit`] to see.
pub fn stop_subscribers(group: &str) {
    let children: Vec<(String, Child)> = lab()
        .hosts(group)
        .into_iter()
        .map(|h| {
            let child = sr3_on(&h, "stop");
            (h, child)
        })
        .collect();
    for (host, mut child) in children {
        let status = child.wait().expect("ssh ends");
        assert!(status.success(), "sr3 stop on {host} failed: {status}");
    }
}

/// `sr3 stop` or `sr3 start` on a lab host, as its user over the lab's sshd: running.
pub fn sr3_on(host: &str, action: &str) -> Child {
    let ssh = &lab().ssh;
    let user = lab().user(host);
    let command = match action {
        "start" => {
            format!("cd ~ && USER={user} setsid -w ~/venv/bin/sr3 start </dev/null >/dev/null 2>&1")
        }
        _ => format!("USER={user} ~/venv/bin/sr3 {action}"),
    };
    Command::new("ssh")
        .args(["-p", &ssh.port.to_string(), "-i"])
        .arg(&ssh.identity_file)
        .args([
            "-o",
            &format!("UserKnownHostsFile={}", ssh.known_hosts_file.display()),
            "-o",
            "BatchMode=yes",
            &format!("{user}@{}", ssh.address),
            &command,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ssh runs")
}

/// Stops the traffic and audits it: every message published was received by each of its
/// queues' subscribers or is still queued (0 lost, 0 twice), no holding queue left.
pub fn audit_clean(traffic: Traffic) {
    audit_clean_with(traffic, &[]);
}

/// [`audit_clean`], with ids published to some queues only (see [`audit_with`]).
pub fn audit_clean_with(traffic: Traffic, only: &[(String, PathBuf)]) {
    let ids = traffic.ids.clone();
    let published = traffic.stop();
    assert!(published > 500, "only {published} messages published");
    let audit = audit_with(&ids, only);
    eprintln!("audit totals: {}", audit["totals"]);
    if audit_counts(&audit) != (0, 0)
        && let Some(keep) = std::env::var_os("ROLL_TEST_KEEP_LOGS")
    {
        // For a diagnosis: the subscribers' logs and the ids, before the lab is reset.
        let keep = PathBuf::from(keep);
        let _ = std::fs::create_dir_all(&keep);
        let _ = Command::new("sh")
            .arg("-c")
            .arg("for h in /home/rl-*; do mkdir -p \"$1/${h##*/}\" && cp -a \"$h/.cache/sr3/log/.\" \"$1/${h##*/}/\" 2>/dev/null; done; cp \"$2\" \"$1/\"")
            .args(["keep-logs", &keep.display().to_string(), &ids.display().to_string()])
            .status();
        let _ = std::fs::write(keep.join("audit.json"), audit.to_string());
        eprintln!("logs kept in {}", keep.display());
    }
    assert_eq!(audit_counts(&audit), (0, 0), "{audit:#}");
    assert_eq!(
        audit["leftover_holding_queues"].as_array().map(Vec::len),
        Some(0),
        "{audit:#}"
    );
}

/// A management API client for a lab group's vhost, as the lab inventory describes it, and
/// a runtime to drive it.
pub fn lab_management(
    group: &str,
) -> (
    roll::broker::management::Management,
    tokio::runtime::Runtime,
) {
    let inventory = roll::inventory::load(&repo(LAB_INVENTORY)).expect("lab inventory");
    let group = inventory.group(group).expect("group");
    let password = group.broker.password.read().expect("password");
    let management =
        roll::broker::management::Management::new(&group.broker, password).expect("client");
    (management, tokio::runtime::Runtime::new().expect("runtime"))
}

/// A vhost of a test's own on the lab broker, made by [`scratch_vhost`]; deleted with its
/// queues when this is dropped, also when the test fails.
pub struct ScratchVhost {
    admin: roll::broker::management::Management,
    pub name: String,
    pub runtime: tokio::runtime::Runtime,
}

impl Drop for ScratchVhost {
    /// Deletes the vhost. The management API ends a request that has not answered within its
    /// idle timeout (60 s), and with it a vhost's deletion, which deletes its queues one by
    /// one: each try deletes more of them, until one finds the vhost gone.
    fn drop(&mut self) {
        let path = format!("vhosts/{}", roll::broker::management::segment(&self.name));
        let mut last = None;
        for _ in 0..10 {
            match self
                .runtime
                .block_on(self.admin.delete(&path, "delete scratch vhost"))
            {
                Ok(()) | Err(roll::broker::BrokerError::Http { status: 404, .. }) => return,
                Err(err) => last = Some(err),
            }
        }
        if let Some(err) = last {
            eprintln!("scratch vhost {} not deleted: {err}", self.name);
        }
    }
}

/// Makes the vhost `name` on the lab broker (one left by an interrupted run is deleted
/// first), with every permission for the lab's broker user: the guard that deletes it, its
/// broker settings (the lab's ops group's, in that vhost), the password. The guard's client
/// waits up to 5 minutes for an answer: deleting a vhost deletes its queues one by one.
pub fn scratch_vhost(
    name: &str,
) -> (
    ScratchVhost,
    roll::inventory::BrokerConfig,
    roll::inventory::Secret,
) {
    use roll::broker::management::{Management, segment};
    require_lab();
    let inventory = roll::inventory::load(&repo(LAB_INVENTORY)).expect("inventory");
    let ops = inventory.group("ops").expect("ops").broker.clone();
    let password = ops.password.read().expect("password");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let admin =
        Management::with_timeout(&ops, password.clone(), std::time::Duration::from_secs(300))
            .expect("client");
    let path = format!("vhosts/{}", segment(name));
    runtime
        .block_on(async {
            let _ = admin.delete(&path, "delete a leftover scratch vhost").await;
            admin.put(&path, &serde_json::json!({}), "vhost").await?;
            admin
                .put(
                    &format!("permissions/{}/{}", segment(name), segment(&ops.user)),
                    &serde_json::json!({"configure": ".*", "write": ".*", "read": ".*"}),
                    "permissions",
                )
                .await
        })
        .expect("scratch vhost");
    let mut config = ops;
    config.vhost = name.to_string();
    (
        ScratchVhost {
            admin,
            name: name.to_string(),
            runtime,
        },
        config,
        password,
    )
}

/// What a watcher does when `roll` prints a line (see [`run_watching`]).
pub enum Next {
    /// Keep reading.
    Go,
}

/// Runs `roll`, handing every line it prints on stderr to `watch` as it comes (the broker can
/// be stopped, a host cut, a connection closed, exactly then); returns how it ended, with all
/// it printed. Fails if it runs over `limit`.
pub fn run_watching(
    roll: &Roll,
    limit: std::time::Duration,
    mut watch: impl FnMut(&str) -> Next,
) -> Run {
    use std::io::{BufRead, BufReader, Read};
    let mut child = roll.spawn_with(Stdio::inherit(), Stdio::piped(), Stdio::piped());
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
    let keys = authorized_keys(host);
    std::fs::rename(&keys, lost_keys(host)).expect("move the key aside");
    let _ = Command::new("pkill")
        .args(["-KILL", "-u", &lab().user(host), "-f", "^sshd"])
        .status();
}

/// Puts a host cut off by [`host_lost`] back.
pub fn host_repaired(host: &str) {
    std::fs::rename(lost_keys(host), authorized_keys(host)).expect("put the key back");
}

/// A lab host's `authorized_keys`.
fn authorized_keys(host: &str) -> PathBuf {
    lab().home(host).join(".ssh/authorized_keys")
}

/// Where [`host_lost`] puts a lab host's `authorized_keys`.
fn lost_keys(host: &str) -> PathBuf {
    lab().home(host).join(".ssh/authorized_keys.lost")
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
        if hosts.iter().any(|h| name.contains(&host_queue_part(h))) {
            continue;
        }
        missing += queue["missing"].as_u64().unwrap_or(u64::MAX / 4);
        duplicates += queue["duplicates"].as_u64().unwrap_or(u64::MAX / 4);
    }
    (missing, duplicates)
}

/// What the name of a lab host's own queue holds: `.rl-<host>_`, its user in the name sr3
/// gives the queue (`q_roll-lab.subscribe.pump.rl-px5_...`).
pub fn host_queue_part(host: &str) -> String {
    format!(".{}_", lab().user(host))
}

/// Reads a spawned `roll`'s stdout up to its plan's `Plan:` line (it then waits for its
/// approval); gives the rest of its stdout, kept open so that `roll` can go on printing.
pub fn read_to_plan(
    child: &mut Child,
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
pub fn assert_hosts(
    state: impl AsRef<Path>,
    hosts: &[impl AsRef<str>],
    version: &str,
    service: &str,
) {
    let rows = status(state, "ops");
    for host in hosts.iter().map(AsRef::as_ref) {
        assert_eq!(rows[host]["version"], version, "{host}: {}", rows[host]);
        assert_eq!(rows[host]["service"], service, "{host}: {}", rows[host]);
    }
}

/// Publishes `{"n": <n>}` with `properties` to `queue` through the default exchange, on a
/// channel in confirm mode; gives the broker's confirm, to await now or later.
pub async fn publish_n(
    channel: &lapin::Channel,
    queue: &str,
    n: impl std::fmt::Display,
    properties: lapin::BasicProperties,
) -> lapin::PublisherConfirm {
    channel
        .basic_publish(
            "".into(),
            queue.into(),
            lapin::options::BasicPublishOptions::default(),
            format!("{{\"n\": {n}}}").as_bytes(),
            properties,
        )
        .await
        .expect("publish")
}

/// Takes every message off `queue` (`basic.get` without acknowledgements, until it is empty).
pub async fn drain(channel: &lapin::Channel, queue: &str) -> Vec<lapin::message::Delivery> {
    let mut taken = vec![];
    let options = lapin::options::BasicGetOptions { no_ack: true };
    while let Some(m) = channel.basic_get(queue.into(), options).await.expect("get") {
        taken.push(m.delivery);
    }
    taken
}

/// The builder gives `roll` the arguments the tests spelled out before it (as arrays).
#[test]
fn a_built_invocation_has_the_arguments_spelled_out_before() {
    let state = "/tmp/state";
    let same = |built: Roll, spelled: &[&str]| assert_eq!(built.argv(), spelled);
    same(
        Roll::upgrade("ops", "b")
            .state(state)
            .playbook(EXPIRE)
            .yes()
            .skip_promotion_check()
            .parallel(5)
            .allow_message_loss()
            .json(),
        &[
            "upgrade",
            "--state-dir",
            state,
            "-p",
            "playbooks/sr3-queue-expire.toml",
            "--group",
            "ops",
            "--half",
            "b",
            "--yes",
            "--skip-promotion-check",
            "--parallel",
            "5",
            "--allow-message-loss",
            "--output",
            "json",
        ],
    );
    // The order of the calls does not matter for the options the builder knows.
    same(
        Roll::rollback("ops")
            .json()
            .yes()
            .playbook(MINOR)
            .state(state),
        &[
            "rollback",
            "--state-dir",
            state,
            "-p",
            "playbooks/sr3-minor.toml",
            "--group",
            "ops",
            "--yes",
            "--output",
            "json",
        ],
    );
    same(
        Roll::queue_diff("ops")
            .inventory("/tmp/inv0.toml")
            .playbook(MINOR),
        &[
            "queue-diff",
            "-i",
            "/tmp/inv0.toml",
            "-p",
            "playbooks/sr3-minor.toml",
            "--group",
            "ops",
        ],
    );
    same(
        Roll::queue_diff("dev")
            .playbook("/tmp/note.toml")
            .probe()
            .json(),
        &[
            "queue-diff",
            "-p",
            "/tmp/note.toml",
            "--group",
            "dev",
            "--probe",
            "--output",
            "json",
        ],
    );
    same(
        Roll::resume("ops").state(state).json(),
        &[
            "resume",
            "--state-dir",
            state,
            "--group",
            "ops",
            "--output",
            "json",
        ],
    );
    same(
        Roll::list_inventory().group("ops").half("b").json(),
        &[
            "inventory",
            "--group",
            "ops",
            "--half",
            "b",
            "--output",
            "json",
        ],
    );
    same(
        Roll::new("check").inventory("/tmp/x.toml"),
        &["check", "-i", "/tmp/x.toml"],
    );
}

/// Where the builder's order differs from an array spelled out before, only options clap
/// takes in any order moved: the same options with the same values.
#[test]
fn a_built_invocation_in_another_order_has_the_same_options() {
    let state = "/tmp/state";
    let pairs = |argv: &[&str]| {
        let mut pairs: Vec<(String, String)> = argv[1..]
            .chunks(2)
            .map(|p| (p[0].to_string(), p.get(1).unwrap_or(&"").to_string()))
            .collect();
        pairs.sort();
        pairs
    };
    let same = |built: Roll, spelled: &[&str]| {
        let argv = built.argv();
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        assert_eq!(argv[0], spelled[0], "{argv:?}");
        assert_eq!(pairs(&argv), pairs(spelled), "{argv:?}");
    };
    // `status`: `--group` came before `-p`.
    same(
        Roll::status("ops").state(state).playbook(MINOR).json(),
        &[
            "status",
            "--state-dir",
            state,
            "--group",
            "ops",
            "-p",
            "playbooks/sr3-minor.toml",
            "--output",
            "json",
        ],
    );
    // An upgrade waiting for its approval: `--state-dir` came last.
    same(
        Roll::upgrade("dev", "a").playbook(MINOR).state(state),
        &[
            "upgrade",
            "-p",
            "playbooks/sr3-minor.toml",
            "--group",
            "dev",
            "--half",
            "a",
            "--state-dir",
            state,
        ],
    );
    // `-i` (a global option) came before the subcommand: `-i <inventory> resume ...`.
    let argv = Roll::resume("ops")
        .inventory("/tmp/inv.toml")
        .state(state)
        .argv();
    let spelled = [
        "-i",
        "/tmp/inv.toml",
        "resume",
        "--state-dir",
        state,
        "--group",
        "ops",
    ];
    assert_eq!(argv[0], spelled[2], "{argv:?}");
    assert_eq!(argv[1..3], spelled[..2], "{argv:?}");
    assert_eq!(argv[3..], spelled[3..], "{argv:?}");
}

/// The lab's facts read from `inventory/lab.toml` are those the tests hard-coded before.
#[test]
fn the_lab_facts_are_read_from_the_lab_inventory() {
    let lab = lab();
    assert_eq!(lab.serving("ops", "a"), ["px1", "px2", "px3", "px4"]);
    assert_eq!(lab.half("ops", "b"), ["px5", "px6", "px7", "px8", "pxatx1"]);
    assert_eq!(lab.serving("ops", "b"), lab.half("ops", "b"));
    assert_eq!(
        lab.hosts("ops"),
        [
            "px1", "px2", "px3", "px4", "px5", "px6", "px7", "px8", "pxatx1", "pxatx2"
        ]
    );
    assert_eq!(lab.hosts("dev"), ["dev1", "dev2"]);
    assert_eq!(lab.user("px6"), "rl-px6");
    assert_eq!(lab.home("dev1"), Path::new("/home/rl-dev1"));
    assert_eq!(host_queue_part("pxatx2"), ".rl-pxatx2_");
    assert_eq!(
        (lab.ssh.address.as_str(), lab.ssh.port),
        ("127.0.0.1", 2222)
    );
    let state = Path::new("/var/lib/roll-lab");
    assert_eq!(lab.ssh.identity_file, state.join("ssh/id_ed25519"));
    assert_eq!(lab.ssh.known_hosts_file, state.join("ssh/known_hosts"));
    assert_eq!(lab.broker.password_file, state.join("broker-password"));
    assert_eq!(lab.broker.user, "roll-lab");
    assert_eq!(lab.broker.management_url, "http://127.0.0.1:15672");
    assert_eq!(lab.broker.amqp_url, "amqp://127.0.0.1:5672");
}

/// `GET` of the lab cluster's management API (through c2, then c3: c1 may be stopped by a
/// test), as JSON. The password goes to curl on stdin, never in its arguments.
pub fn cluster_get(path: &str) -> serde_json::Value {
    use std::io::Write;
    let password = std::fs::read_to_string(lab().broker.password_file.as_path())
        .expect("the lab's broker password");
    for port in [15682, 15683, 15681] {
        let mut curl = Command::new("curl")
            .args(["-sS", "--fail", "--max-time", "20", "-K", "-"])
            .arg(format!("http://127.0.0.1:{port}{path}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("curl runs");
        if let Some(mut stdin) = curl.stdin.take() {
            let _ = writeln!(stdin, "user = \"roll-lab:{}\"", password.trim());
        }
        let out = curl.wait_with_output().expect("curl ends");
        if out.status.success()
            && let Ok(value) = serde_json::from_slice(&out.stdout)
        {
            return value;
        }
        eprintln!(
            "cluster GET {path} on {port}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    panic!("no cluster node answered GET {path}");
}

/// `tests/lab/cluster stop|start cN`: a node of the lab cluster stopped, or started again
/// (which returns once it rejoined and its management API answers).
pub fn cluster_node(action: &str, node: usize) {
    let status = Command::new(repo("tests/lab/cluster"))
        .args([action, &format!("c{node}")])
        .stdout(Stdio::null())
        .status();
    assert!(
        status.is_ok_and(|s| s.success()),
        "tests/lab/cluster {action} c{node} failed"
    );
}
