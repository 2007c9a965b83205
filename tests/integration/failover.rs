//! A cluster node lost under roll: the lab's three-node cluster (`roll-c1..3`, AMQP 5681-5683,
//! management API 15681-15683), roll's inventory listing c1 first. With c1 stopped, roll's
//! calls go through c2 and say so; the group's lock, held through c1, is taken again through
//! another node unless someone else took it first. Serial: they stop a cluster node, and
//! start it again (a guard, also when the test fails), waiting until the cluster is whole.
//!
//! Scratch vhosts `roll-test-failover-*` are made and deleted through c2.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use roll::broker::management::{Management, segment};
use roll::inventory::{BrokerConfig, Secret, SecretRef};
use serde_json::Value;

use crate::support::{Roll, Run, json};

/// The lab's broker password file (the cluster has the same user and password).
const PASSWORD_FILE: &str = "/var/lib/roll-lab/broker-password";
/// The cluster's management API ports, c1 to c3.
const MGMT_PORTS: [u16; 3] = [15681, 15682, 15683];
/// The cluster's AMQP ports, c1 to c3.
const AMQP_PORTS: [u16; 3] = [5681, 5682, 5683];
/// How long a node may take to stop, start and be seen by the others again.
const NODE_LIMIT: Duration = Duration::from_secs(180);

fn mgmt_url(node: usize) -> String {
    format!("http://127.0.0.1:{}", MGMT_PORTS[node - 1])
}

fn amqp_url(node: usize) -> String {
    format!("amqp://127.0.0.1:{}", AMQP_PORTS[node - 1])
}

/// The Erlang name of cluster node `node` (1 to 3).
fn node_name(node: usize) -> String {
    let output = Command::new("hostname")
        .arg("-s")
        .output()
        .expect("hostname");
    let host = String::from_utf8_lossy(&output.stdout).trim().to_string();
    format!("roll-c{node}@{host}")
}

/// The broker of vhost `vhost` on the cluster, its nodes tried in `order` (1 to 3).
fn cluster_broker(vhost: &str, order: &[usize]) -> BrokerConfig {
    BrokerConfig {
        management_urls: order.iter().map(|n| mgmt_url(*n)).collect(),
        amqp_urls: order.iter().map(|n| amqp_url(*n)).collect(),
        vhost: vhost.to_string(),
        user: "roll-lab".into(),
        password: SecretRef::File(PASSWORD_FILE.into()),
        reconnect_deadline: Duration::from_secs(60),
        listing_timeout: Duration::from_secs(60),
    }
}

fn password() -> Secret {
    SecretRef::File(PASSWORD_FILE.into())
        .read()
        .expect("the lab's broker password (is the lab up?)")
}

/// A management client of the cluster through c2 and c3 only (c1 may be down).
fn admin(vhost: &str) -> Management {
    let config = cluster_broker(vhost, &[2, 3]);
    Management::with_timeout(&config, password(), Duration::from_secs(120)).expect("client")
}

/// Fails with a clear message unless every node of the cluster runs.
fn require_cluster(runtime: &tokio::runtime::Runtime) {
    let nodes = runtime.block_on(running_nodes());
    assert_eq!(
        nodes.len(),
        3,
        "the lab's cluster is not whole (running: {nodes:?}): run tests/lab/up"
    );
}

/// The nodes the cluster sees running, asked of c2 (then c3).
async fn running_nodes() -> Vec<String> {
    let nodes: Result<Vec<Value>, _> = admin("/")
        .get("nodes", &[("columns", "name,running".into())], "nodes")
        .await;
    nodes
        .unwrap_or_default()
        .iter()
        .filter(|n| n["running"] == true)
        .filter_map(|n| n["name"].as_str().map(str::to_string))
        .collect()
}

/// A cluster node stopped by the test: started again when dropped (also when the test
/// fails), which waits until the cluster sees all three nodes running.
struct Stopped(usize);

impl Stopped {
    fn new(node: usize) -> Stopped {
        crate::support::cluster_node("stop", node);
        Stopped(node)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        crate::support::cluster_node("start", self.0);
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let deadline = Instant::now() + NODE_LIMIT;
        loop {
            let running = runtime.block_on(running_nodes());
            if running.len() == 3 {
                return;
            }
            if Instant::now() > deadline {
                // Not a panic in a panic: say it loudly instead.
                eprintln!("the cluster is not whole again: running {running:?}");
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// A vhost of the test's own on the cluster, made through c2 with every permission for the
/// lab's user; deleted when dropped.
struct Scratch {
    name: String,
    runtime: tokio::runtime::Runtime,
}

impl Scratch {
    fn new(name: &str) -> Scratch {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        require_cluster(&runtime);
        let admin = admin(name);
        let path = format!("vhosts/{}", segment(name));
        runtime
            .block_on(async {
                let _ = admin.delete(&path, "delete a leftover scratch vhost").await;
                admin.put(&path, &serde_json::json!({}), "vhost").await?;
                admin
                    .put(
                        &format!("permissions/{}/roll-lab", segment(name)),
                        &serde_json::json!({"configure": ".*", "write": ".*", "read": ".*"}),
                        "permissions",
                    )
                    .await
            })
            .expect("scratch vhost");
        Scratch {
            name: name.to_string(),
            runtime,
        }
    }

    /// The node a queue of the vhost lives on (a classic queue's), if it exists.
    fn queue_node(&self, queue: &str) -> Option<String> {
        let path = format!("queues/{}/{}", segment(&self.name), segment(queue));
        let found: Result<Value, _> = self.runtime.block_on(admin(&self.name).get(
            &path,
            &[("columns", "name,node".into())],
            "queue",
        ));
        found
            .ok()
            .and_then(|q| q["node"].as_str().map(str::to_string))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let path = format!("vhosts/{}", segment(&self.name));
        let admin = admin(&self.name);
        if let Err(err) = self
            .runtime
            .block_on(admin.delete(&path, "delete scratch vhost"))
        {
            eprintln!("scratch vhost {} not deleted: {err}", self.name);
        }
    }
}

/// An AMQP connection to the scratch vhost of `config` through node `node` alone, and a
/// channel on it.
async fn on_node(
    config: &BrokerConfig,
    node: usize,
    purpose: &str,
) -> (lapin::Connection, lapin::Channel) {
    let one = BrokerConfig {
        amqp_urls: vec![amqp_url(node)],
        ..config.clone()
    };
    let connection = roll::broker::amqp::connect(&one, &password(), purpose)
        .await
        .expect("connect to the node");
    let channel = connection.create_channel().await.expect("channel");
    (connection, channel)
}

/// Declares `queue` (classic, durable: it lives on that node) in the scratch vhost through
/// node `node` with `messages` persistent messages, bound to `xpublic`.
async fn queue_with_messages(config: &BrokerConfig, node: usize, queue: &str, messages: usize) {
    use lapin::BasicProperties;
    use lapin::options::{
        BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
        QueueDeclareOptions,
    };
    use lapin::types::FieldTable;
    let (connection, channel) = on_node(config, node, "failover test").await;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .exchange_declare(
            "xpublic".into(),
            lapin::ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await
        .expect("exchange");
    let options = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .queue_declare(queue.into(), options, FieldTable::default())
        .await
        .expect("queue");
    channel
        .queue_bind(
            queue.into(),
            "xpublic".into(),
            format!("v02.post.{queue}.#").as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind");
    for i in 0..messages {
        channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                format!("{queue} message {i}").as_bytes(),
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
    }
    roll::broker::amqp::close(&connection).await;
}

/// Writes an inventory of group `fo` on the cluster (its nodes c1, c2, c3 in that order),
/// vhost `vhost`, with `ssh` as its `[defaults.ssh]` and these hosts (name, half), and a
/// playbook of `commands` for which each host owns `fo.<pattern>.*` (`{host}` or `{user}`),
/// the target adding `x-expires` 7d.
fn write_files(
    dir: &Path,
    vhost: &str,
    ssh: &str,
    hosts: &[(&str, &str)],
    commands: &str,
    owned: &str,
) -> (PathBuf, PathBuf) {
    let inventory = dir.join("inventory.toml");
    let urls = |f: fn(usize) -> String| {
        let all: Vec<String> = (1..=3).map(|n| format!("{:?}", f(n))).collect();
        format!("[{}]", all.join(", "))
    };
    let hosts: Vec<String> = hosts
        .iter()
        .map(|(host, half)| format!("  {{ name = \"{host}\", half = \"{half}\" }},\n"))
        .collect();
    std::fs::write(
        &inventory,
        format!(
            "[defaults.ssh]\n{ssh}\n\n\
             [defaults.broker]\nmanagement_url = {}\namqp_url = {}\nuser = \"roll-lab\"\n\
             password_file = {PASSWORD_FILE:?}\nreconnect_deadline = \"30s\"\n\n\
             [groups.fo]\nbroker.vhost = {vhost:?}\nhosts = [\n{}]\n",
            urls(mgmt_url),
            urls(amqp_url),
            hosts.concat(),
        ),
    )
    .expect("inventory");
    let playbook = dir.join("playbook.toml");
    std::fs::write(
        &playbook,
        format!(
            "[release]\nname = \"fo-expire\"\ndescription = \"version 2.0, every queue gains \
             x-expires = 7d\"\npackage = \"svc\"\nversion = \"2.0\"\n\n\
             [commands]\n{commands}\n\n\
             [queues]\nexpected_stop_window = \"15m\"\n\n\
             [[queues.owned]]\npattern = \"fo.{owned}.*\"\n\n\
             [queues.target]\ndurable = true\nauto_delete = false\n\
             arguments = {{ x-expires = \"7d\" }}\n"
        ),
    )
    .expect("playbook");
    (inventory, playbook)
}

/// Group `fo` with hosts h1 (half a) and h2 (half b), never reached (ownership comes from
/// the pattern `fo.{host}.*` alone), for queue-diff.
fn files(dir: &Path, vhost: &str) -> (PathBuf, PathBuf) {
    let commands = "stop = \"true\"\nstart = \"true\"\nstatus = \"echo running\"\n\
                    upgrade = \"true\"\ninstalled_version = \"echo 2.0\"";
    let ssh = "address = \"127.0.0.1\"\nport = 1";
    write_files(
        dir,
        vhost,
        ssh,
        &[("h1", "a"), ("h2", "b")],
        commands,
        "{host}",
    )
}

/// `roll queue-diff --probe --json` of group `fo`.
fn queue_diff(inventory: &Path, playbook: &Path) -> Run {
    Roll::queue_diff("fo")
        .inventory(inventory.display().to_string())
        .playbook(playbook.display().to_string())
        .probe()
        .json()
        .run()
}

/// The row of `name` in a queue-diff report.
fn row<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no row {name} in {report:#}"))
}

/// With every node up, `queue-diff` goes through c1 and says nothing of nodes; with c1
/// stopped, `queue-diff --probe` (management API and AMQP) and `check` (its broker row) go
/// through c2, say that they switched, and find the same queues.
#[test]
fn serial_read_only_commands_go_through_the_next_node_when_c1_is_down() {
    let scratch = Scratch::new("roll-test-failover-read");
    let config = cluster_broker(&scratch.name, &[1, 2, 3]);
    scratch
        .runtime
        .block_on(queue_with_messages(&config, 2, "fo.h1.q", 3));
    let dir = tempfile::tempdir().expect("temp dir");
    let (inventory, playbook) = files(dir.path(), &scratch.name);

    let up = queue_diff(&inventory, &playbook);
    assert_eq!(up.code, 2, "{up:#?}");
    assert!(!up.stderr.contains("switched to node"), "{}", up.stderr);
    let report = json(&up);
    assert_eq!(row(&report, "fo.h1.q")["verdict"], "recreate", "{report:#}");

    let stopped = Stopped::new(1);
    let started = Instant::now();
    let down = queue_diff(&inventory, &playbook);
    let took = started.elapsed();
    assert_eq!(down.code, 2, "{down:#?}");
    for switched in [
        format!("switched to node 2 of 3, {}", mgmt_url(2)),
        format!("switched to node 2 of 3, {}", amqp_url(2)),
    ] {
        assert_eq!(
            down.stderr.matches(&switched).count(),
            1,
            "{switched}: {}",
            down.stderr
        );
    }
    assert!(
        down.stderr
            .contains(&format!("unreachable at {}", mgmt_url(1))),
        "{}",
        down.stderr
    );
    let report = json(&down);
    let q = row(&report, "fo.h1.q");
    assert_eq!(q["verdict"], "recreate", "{report:#}");
    assert_eq!(q["messages"], 3, "{report:#}");
    eprintln!("queue-diff --probe with c1 down took {took:?}");

    let check = Roll::check()
        .inventory(inventory.display().to_string())
        .group("fo")
        .json()
        .run();
    let rows = json(&check);
    let broker = rows
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["kind"] == "broker")
        .unwrap_or_else(|| panic!("no broker row: {rows:#}"))
        .clone();
    assert_eq!(broker["reachable"], true, "{broker}");
    assert_eq!(
        broker["target"],
        format!("{} + {}", mgmt_url(2), amqp_url(2)),
        "{broker}"
    );
    assert!(
        check.stderr.contains("switched to node 2 of 3"),
        "{}",
        check.stderr
    );
    drop(stopped);
}

/// How long `lock.confirm()` takes to come back, and what it says.
fn confirm(
    runtime: &tokio::runtime::Runtime,
    lock: &roll::lock::Lock,
) -> (Duration, Result<roll::lock::Lease, roll::lock::LockError>) {
    let started = Instant::now();
    let lease = runtime.block_on(lock.confirm());
    (started.elapsed(), lease)
}

/// The group's lock, taken through c1 (its queue on c1): c1 stops, the lock's watcher takes
/// it again through c2 and the run's next confirm says so, while a second `roll` is still
/// refused. Then, c1 lost again with another `roll` quicker to take the free lock (through
/// c2, while the watcher is held at its failpoint): the watcher finds it held by that one,
/// gives it up, and the run's next confirm fails: the run stops.
#[test]
fn serial_the_lock_on_a_lost_node_is_taken_again_through_another_unless_someone_took_it() {
    let scratch = Scratch::new("roll-test-failover-lock");
    let runtime = &scratch.runtime;
    let queue = roll::lock::queue_name("fo");
    let password = password();

    let config = cluster_broker(&scratch.name, &[1, 2, 3]);
    let lock = runtime
        .block_on(roll::lock::acquire(
            "fo",
            &config,
            &password,
            "failover test",
        ))
        .expect("the lock");
    assert_eq!(scratch.queue_node(&queue), Some(node_name(1)));
    assert_eq!(
        runtime.block_on(lock.confirm()).ok(),
        Some(roll::lock::Lease::Held)
    );

    let stopped = Stopped::new(1);
    let (took, lease) = confirm(runtime, &lock);
    match lease {
        Ok(roll::lock::Lease::Retaken { reason, after, .. }) => {
            eprintln!(
                "lock taken again through c2 after {after:?} ({reason}); confirm waited {took:?}"
            );
            assert!(after < config.reconnect_deadline, "{after:?}");
        }
        other => panic!("the lock was not taken again: {other:?}"),
    }
    assert_eq!(scratch.queue_node(&queue), Some(node_name(2)));
    let second = runtime.block_on(roll::lock::acquire("fo", &config, &password, "second"));
    match second {
        Err(roll::lock::LockError::Held { holder, .. }) => assert_eq!(holder, lock.holder),
        other => panic!("a second roll was not refused: {other:?}"),
    }
    assert_eq!(
        runtime.block_on(lock.confirm()).ok(),
        Some(roll::lock::Lease::Held)
    );
    runtime.block_on(lock.release());
    drop(stopped);

    // Again, with another process quicker: its nodes in another order (c2 first).
    let points = tempfile::tempdir().expect("failpoint dir");
    // SAFETY: no other thread of this test process reads the environment meanwhile (the
    // lock above is released, its watcher stopped).
    unsafe {
        std::env::set_var("ROLL_FAILPOINTS", "lock=fo");
        std::env::set_var("ROLL_FAILPOINT_DIR", points.path());
    }
    let mine = cluster_broker(&scratch.name, &[1, 3, 2]);
    let lock = runtime
        .block_on(roll::lock::acquire("fo", &mine, &password, "failover test"))
        .expect("the lock");
    assert_eq!(scratch.queue_node(&queue), Some(node_name(1)));
    let stopped = Stopped::new(1);
    let deadline = Instant::now() + Duration::from_secs(60);
    while scratch.queue_node(&queue).is_some() {
        assert!(Instant::now() < deadline, "the lock queue stayed on c1");
        std::thread::sleep(Duration::from_millis(100));
    }
    let other = cluster_broker(&scratch.name, &[2]);
    let theirs = runtime
        .block_on(roll::lock::acquire(
            "fo",
            &other,
            &password,
            "the other roll",
        ))
        .expect("the other roll takes the free lock");
    std::fs::write(points.path().join("lock=fo"), "").expect("release the failpoint");
    let (took, lease) = confirm(runtime, &lock);
    match lease {
        Err(roll::lock::LockError::Lost { reason, .. }) => {
            assert!(reason.contains("took the lock meanwhile"), "{reason}");
            assert!(reason.contains("the other roll"), "{reason}");
            eprintln!("lock lost to another roll, said after {took:?}: {reason}");
        }
        other => panic!("the run did not stop: {other:?}"),
    }
    assert_eq!(
        runtime.block_on(theirs.confirm()).ok(),
        Some(roll::lock::Lease::Held)
    );
    runtime.block_on(theirs.release());
    runtime.block_on(lock.release());
    drop(stopped);
}

/// The light hosts of the lab (`tests/lab/up --hosts N`: OS users `rb-<host>`, their service
/// the files `~/svc/state` and `~/svc/version`) the run upgrades: half a, then half b.
const LIGHT: [(&str, &str); 4] = [("b001", "a"), ("b003", "a"), ("b002", "b"), ("b004", "b")];

/// The light hosts' service files as found, put back when dropped.
struct LightHosts(Vec<(PathBuf, Vec<u8>)>);

impl LightHosts {
    fn keep() -> LightHosts {
        let mut kept = vec![];
        for (host, _) in LIGHT {
            for file in ["state", "version"] {
                let path = PathBuf::from(format!("/home/rb-{host}/svc/{file}"));
                let bytes = std::fs::read(&path).unwrap_or_else(|e| {
                    panic!("{}: {e} (are the light hosts up?)", path.display())
                });
                kept.push((path, bytes));
            }
        }
        LightHosts(kept)
    }
}

impl Drop for LightHosts {
    fn drop(&mut self) {
        for (path, bytes) in &self.0 {
            if let Err(err) = std::fs::write(path, bytes) {
                eprintln!("{} not put back: {err}", path.display());
            }
        }
    }
}

/// Group `fo` with the light hosts of [`LIGHT`] behind the lab's sshd, and a light release
/// for which each host owns `fo.rb-<host>.*`, to be recreated, its messages kept; a gate on
/// each host (so that the failpoint `gate=HOST` can hold the run there).
fn run_files(dir: &Path, vhost: &str) -> (PathBuf, PathBuf) {
    let ssh = "address = \"127.0.0.1\"\nport = 2222\nuser = \"rb-{name}\"\n\
               identity_file = \"/var/lib/roll-lab/ssh/id_ed25519\"\n\
               known_hosts_file = \"/var/lib/roll-lab/ssh/known_hosts\"";
    let commands = "stop = \"echo stopped > ~/svc/state\"\n\
                    start = \"echo running > ~/svc/state\"\n\
                    status = \"cat ~/svc/state\"\n\
                    upgrade = \"echo {version} > ~/svc/version\"\n\
                    installed_version = \"cat ~/svc/version\"\n\
                    gate = \"true\"\ntimeout = \"60s\"";
    write_files(dir, vhost, ssh, &LIGHT, commands, "{user}")
}

/// Publishes to `xpublic` of the scratch vhost through c2, alternately to each of `queues`
/// (their binding keys), about `rate` messages a second with publisher confirms, until
/// stopped; keeps the ids the broker confirmed (a message it refused, or whose confirm never
/// came, is not published).
struct Publisher {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<(Vec<String>, usize)>>,
}

impl Publisher {
    fn start(config: &BrokerConfig, queues: &[&str], rate: u64) -> Publisher {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let config = config.clone();
        let keys: Vec<String> = queues.iter().map(|q| format!("v02.post.{q}.x")).collect();
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().expect("runtime");
            runtime.block_on(publish(config, keys, rate, stopping))
        });
        Publisher {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops; the ids confirmed, and how many were refused or never confirmed.
    fn finish(mut self) -> (Vec<String>, usize) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread
            .take()
            .expect("running")
            .join()
            .expect("the publisher")
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

async fn publish(
    config: BrokerConfig,
    keys: Vec<String>,
    rate: u64,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> (Vec<String>, usize) {
    use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
    let (connection, channel) = on_node(&config, 2, "failover publisher").await;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    let (mut confirmed, mut refused) = (vec![], 0);
    let mut n = 0u64;
    let pause = Duration::from_micros(1_000_000 / rate.max(1));
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        let id = format!("fo-{n}");
        let key = &keys[(n as usize) % keys.len()];
        n += 1;
        let sent = channel
            .basic_publish(
                "xpublic".into(),
                key.as_str().into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                id.as_bytes(),
                lapin::BasicProperties::default().with_delivery_mode(2),
            )
            .await;
        let confirm = match sent {
            Ok(confirm) => tokio::time::timeout(Duration::from_secs(15), confirm).await,
            Err(err) => panic!("the publisher's channel through c2 failed: {err}"),
        };
        match confirm {
            Ok(Ok(lapin::Confirmation::Ack(None))) => confirmed.push(id),
            _ => refused += 1,
        }
        tokio::time::sleep(pause).await;
    }
    roll::broker::amqp::close(&connection).await;
    (confirmed, refused)
}

/// Every message of `queue` (taken off it through c2), by body.
async fn drain(config: &BrokerConfig, queue: &str) -> Vec<String> {
    use lapin::options::BasicGetOptions;
    let (connection, channel) = on_node(config, 2, "failover drain").await;
    let mut bodies = vec![];
    while let Some(message) = channel
        .basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await
        .expect("basic.get")
    {
        bodies.push(String::from_utf8_lossy(&message.delivery.data).into_owned());
    }
    roll::broker::amqp::close(&connection).await;
    bodies
}

/// Runs `roll` and, each time it reaches one of its failpoints (`points`), stops c1 and lets
/// it go on; c1 starts again `back[i]` after the i-th stop (`None`: once the run is over, when
/// the guard returned is dropped). Returns the guard of c1 if it is still stopped, the run, and
/// the time from the last stop to the run's end.
fn stopping_c1_at(
    dir: &Path,
    roll: Roll,
    points: &str,
    back: &[Option<Duration>],
) -> (Option<Stopped>, Run, Duration) {
    let waits = dir.join("points");
    std::fs::create_dir_all(&waits).expect("points dir");
    let mut stopped = None;
    let mut restarts: Vec<std::thread::JoinHandle<()>> = vec![];
    let mut since = None;
    let mut reached = 0;
    let run = crate::support::run_watching(
        &roll
            .env("ROLL_FAILPOINTS", points)
            .env("ROLL_FAILPOINT_DIR", &waits),
        Duration::from_secs(600),
        |line| {
            if let Some(point) = crate::support::failpoint_of(line) {
                for restart in restarts.drain(..) {
                    restart.join().expect("c1 started again");
                }
                let guard = Stopped::new(1);
                since = Some(Instant::now());
                crate::support::release_failpoint(&waits, &point);
                match back.get(reached).copied().flatten() {
                    Some(after) => restarts.push(std::thread::spawn(move || {
                        std::thread::sleep(after);
                        drop(guard);
                    })),
                    None => stopped = Some(guard),
                }
                reached += 1;
            }
            crate::support::Next::Go
        },
    );
    let took = since.map_or(Duration::ZERO, |s| s.elapsed());
    for restart in restarts {
        restart.join().expect("c1 started again");
    }
    eprintln!("{}", run.stderr);
    assert_eq!(
        reached,
        back.len(),
        "not every failpoint was reached: {run:#?}"
    );
    (stopped, run, took)
}

/// Every journal of group `fo` under the state directory, as text.
fn journals(state: &Path) -> String {
    let mut text = String::new();
    if let Ok(runs) = std::fs::read_dir(state.join("groups/fo/runs")) {
        for run in runs.flatten() {
            text.push_str(&std::fs::read_to_string(run.path()).unwrap_or_default());
        }
    }
    text
}

/// c1, the node every connection of roll's uses, lost in the middle of runs of a light
/// release on a group of the cluster, under a steady publisher (through c2). Half a (its
/// queue on c2): at the canary's gate, c1 lost for good: the run goes on through c2 at once,
/// its lock taken again there. Half b (its queue on c1, where a service declared it): in the
/// middle of its first move c1 stops and is back 5 s later: the run waits for c1 (the queue's
/// home) and goes on; at its recreation c1 is lost for good: the run waits, then stops at that
/// step with the reason journaled, and once c1 is back `resume` completes. Every message the
/// broker confirmed is in its queue at the end (drained through c2), and no more are there
/// twice than roll's account says.
#[test]
fn serial_c1_lost_mid_run_the_run_goes_on_through_c2_or_stops_and_resume_completes() {
    let scratch = Scratch::new("roll-test-failover-run");
    let _light = LightHosts::keep();
    let config = cluster_broker(&scratch.name, &[1, 2, 3]);
    let queues = ["fo.rb-b001.q", "fo.rb-b002.q"];
    for (queue, node) in queues.iter().zip([2, 1]) {
        scratch
            .runtime
            .block_on(queue_with_messages(&config, node, queue, 2000));
    }
    assert_eq!(scratch.queue_node("fo.rb-b002.q"), Some(node_name(1)));
    let dir = tempfile::tempdir().expect("temp dir");
    let (inventory, playbook) = run_files(dir.path(), &scratch.name);
    let state = dir.path().join("state");
    let upgrade = |half: &str| {
        Roll::upgrade("fo", half)
            .inventory(inventory.display().to_string())
            .state(state.display().to_string())
            .playbook(playbook.display().to_string())
            .yes()
            .json()
    };
    let publisher = Publisher::start(&config, &queues, 50);

    // Half a: c1 lost at the canary's gate.
    let (stopped, run, took) = stopping_c1_at(dir.path(), upgrade("a"), "gate=b001", &[None]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(run.stderr.contains("taken again"), "{}", run.stderr);
    let outcome = json(&run)["outcome"].clone();
    for account in outcome["queues"].as_array().expect("accounts") {
        assert_eq!(account["lost"], 0, "{account}");
    }
    let journal = journals(&state);
    assert!(journal.contains("\"event\":\"lock-retaken\""), "{journal}");
    eprintln!("half a went on through c2: {took:?} from c1's stop to the run's end");
    drop(stopped);

    // Half b: c1 lost in the middle of the first move of b002's queue (on c1), back 5 s
    // later: the run waits for c1 and goes on. Then c1 lost for good at the queue's
    // recreation: the run waits, then stops at that step with the reason journaled; once c1
    // is back, `resume` completes.
    let (stopped, run, took) = stopping_c1_at(
        dir.path(),
        upgrade("b"),
        "move=fo.rb-b002,recreate=fo.rb-b002",
        &[Some(Duration::from_secs(5)), None],
    );
    let half_b = json(&run);
    eprintln!(
        "half b ended with {} {took:?} after c1's last stop",
        run.code
    );
    assert!(
        run.stderr.contains("home node 'roll-c1@"),
        "no wait for c1: {}",
        run.stderr
    );
    let journal = journals(&state);
    assert!(
        journal.contains("answers through http://127.0.0.1:15682 and amqp://127.0.0.1:5682"),
        "{journal}"
    );
    // Stopped: a failure (1), or a partial run (3) when a host was through.
    assert!([1, 3].contains(&run.code), "{run:#?}");
    let failure = half_b["outcome"]["failure"].clone();
    assert_eq!(failure["step"], "recreate fo.rb-b002.q", "{failure}");
    assert_eq!(failure["cause"], "broker-unavailable", "{failure}");
    let detail = failure["detail"].as_str().expect("detail");
    assert!(
        detail.contains("the broker's node roll-c1@") && detail.contains("did not run again"),
        "{detail}"
    );
    // The journal says why (the run's end names the step and the reason).
    let said = journal
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .any(|entry| {
            ["detail", "summary"]
                .iter()
                .any(|key| entry[*key].as_str().is_some_and(|d| d.contains(detail)))
        });
    assert!(said, "{detail}: {journal}");
    drop(stopped);
    let resumed = Roll::resume("fo")
        .inventory(inventory.display().to_string())
        .state(state.display().to_string())
        .json()
        .run();
    assert_eq!(resumed.code, 0, "{resumed:#?}");

    let (confirmed, refused) = publisher.finish();
    let mut found: std::collections::BTreeMap<String, usize> = Default::default();
    let mut twice = std::collections::BTreeMap::new();
    for queue in queues {
        let mut here: std::collections::BTreeMap<String, usize> = Default::default();
        for body in scratch.runtime.block_on(drain(&config, queue)) {
            *here.entry(body).or_default() += 1;
        }
        twice.insert(queue, here.values().filter(|n| **n > 1).count() as u64);
        found.extend(here);
    }
    let lost: Vec<&String> = confirmed
        .iter()
        .filter(|id| !found.contains_key(*id))
        .collect();
    eprintln!(
        "published {} confirmed ({refused} refused or unconfirmed), {} found, lost {}, \
         twice {twice:?}",
        confirmed.len(),
        found.len(),
        lost.len()
    );
    assert!(lost.is_empty(), "lost: {lost:?}");
    // Messages on both queues when the move was cut: no more than roll says it may have left
    // (an upper bound: their confirms came, their acknowledgements never went).
    let resumed = json(&resumed);
    let accounts: Vec<&Value> = [&half_b, &resumed]
        .iter()
        .filter_map(|report| report["outcome"]["queues"].as_array())
        .flatten()
        .collect();
    eprintln!("queue accounts: {accounts:#?}");
    for account in &accounts {
        assert_eq!(account["lost"], 0, "{account}");
    }
    for (queue, twice) in twice {
        let said = accounts
            .iter()
            .filter(|a| a["queue"] == queue)
            .filter_map(|a| a["duplicated"].as_u64())
            .max()
            .unwrap_or(0);
        assert!(
            twice <= said,
            "{queue}: {twice} twice, roll says at most {said}"
        );
    }
    // The 2,000 messages each queue held before the runs are there too.
    for queue in queues {
        for i in 0..2000 {
            let body = format!("{queue} message {i}");
            assert!(found.contains_key(&body), "{body} lost");
        }
    }
}

/// A durable classic queue on a stopped node is not absent: asked through another node, its
/// counts are a transient error naming the node (a run waits for it), not "no such queue"
/// (a run would take the queue for deleted, and its held messages for moved); once the node
/// is back, its messages are there.
#[test]
fn serial_a_queue_on_a_stopped_node_is_down_not_absent() {
    let scratch = Scratch::new("roll-test-failover-home");
    let on_c1 = BrokerConfig {
        amqp_urls: vec![amqp_url(1)],
        ..cluster_broker(&scratch.name, &[1])
    };
    let runtime = &scratch.runtime;
    runtime.block_on(async {
        let connection = roll::broker::amqp::connect(&on_c1, &password(), "failover test")
            .await
            .expect("connect to c1");
        let channel = connection.create_channel().await.expect("channel");
        let durable = lapin::options::QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        channel
            .queue_declare("fo.on-c1".into(), durable, Default::default())
            .await
            .expect("declare on c1");
        roll::broker::amqp::close(&connection).await;
    });
    assert_eq!(scratch.queue_node("fo.on-c1"), Some(node_name(1)));
    let config = cluster_broker(&scratch.name, &[1, 2, 3]);
    let counts = || {
        runtime.block_on(async {
            let connection = roll::broker::amqp::connect(&config, &password(), "failover test")
                .await
                .expect("connect");
            let counts = roll::broker::amqp::queue_counts(&connection, "cluster", "fo.on-c1").await;
            roll::broker::amqp::close(&connection).await;
            counts
        })
    };
    assert_eq!(counts().expect("counts"), Some((0, 0)));

    let stopped = Stopped::new(1);
    match counts() {
        Err(err) => {
            assert!(err.is_transient(), "{err}");
            assert_eq!(
                roll::broker::nodes::home_node_down(&err.to_string()),
                Some(node_name(1)),
                "{err}"
            );
        }
        Ok(found) => panic!("a queue on a stopped node was found {found:?}"),
    }
    drop(stopped);
    assert_eq!(counts().expect("counts"), Some((0, 0)));
}
