//! bench_move: roll's message mover on a real broker, for bench/run's `moves` section.
//!
//! ```sh
//! cargo build --release --example bench_move
//! B="--vhost bench-move --user roll-lab --password-file /var/lib/roll-lab/broker-password"
//! target/release/examples/bench_move $B fill --queue src --count 100000
//! target/release/examples/bench_move $B move --pair src:dst           # roll's mover
//! target/release/examples/bench_move $B check --queue dst --origin src --count 100000
//! target/release/examples/bench_move $B fill --queue src --count 100000
//! target/release/examples/bench_move $B shovel --pair src:dst         # RabbitMQ's shovel
//! ```
//!
//! - `fill` declares each queue (durable, classic) if it is missing and publishes `--count`
//!   persistent messages to it, pipelined with publisher confirms. Each message is what an
//!   sr3 v03 poster sends for a file (a JSON body of about 450 bytes: pubTime, baseUrl,
//!   relPath, integrity, size, mtime, atime, mode, id; content type application/json, an
//!   empty header table, persistent); `--headers` adds a small table of application headers
//!   (as sr3's v02 messages carry). All a function of (`--seed`, the queue, the message's
//!   number): every fill with the same seed publishes the same messages.
//! - `move` moves every message of each source into its destination with roll's own mover
//!   (`roll::broker::mover::move_all` for one pair, `move_many` for several: the code the
//!   upgrade runs), on one connection, and prints what the mover reports.
//! - `shovel` moves them with RabbitMQ's dynamic shovel, one per pair (`ack-mode
//!   on-confirm`, `src-delete-after queue-length`, a direct connection to the local node),
//!   declared through the management API, and polls the queues' exact counts (passive
//!   declares, every queue on its own channel, all at once, every `--interval-ms`) until
//!   every destination holds what its source held, then until every source is empty and no
//!   shovel consumes it any more (a shovel stops once its last message is confirmed and
//!   acknowledged). `resolution_s`: the end came after the last poll that did not find it
//!   was sent, at most that long before the time reported.
//! - `count` prints the messages ready on each queue and its consumers (a passive declare).
//! - `check` takes every message off a destination and checks that it holds exactly the
//!   messages `fill` put on `--origin` (each once; body, properties and headers equal).
//!
//! Every command prints one JSON object on stdout. The password is read from a file, never
//! from the command line.

use std::collections::VecDeque;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitCode;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use futures_lite::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use roll::broker::management::{Management, segment};
use roll::broker::{BrokerError, DEFAULT_TIMEOUT, amqp, mover};
use roll::inventory::{BrokerConfig, SecretRef};

#[derive(Parser)]
#[command(about = "roll's message mover against RabbitMQ's dynamic shovel (bench/run)")]
struct Cli {
    #[arg(long, default_value = "amqp://127.0.0.1:5672")]
    amqp_url: String,
    #[arg(long, default_value = "http://127.0.0.1:15672")]
    management_url: String,
    #[arg(long)]
    vhost: String,
    #[arg(long)]
    user: String,
    /// The broker password, in a file (a trailing newline is ignored).
    #[arg(long)]
    password_file: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Publish COUNT messages to each queue (declared durable if missing), with confirms.
    Fill {
        #[arg(long, required = true)]
        queue: Vec<String>,
        #[command(flatten)]
        messages: Messages,
    },
    /// Move every message of each SRC into its DST with roll's mover.
    Move {
        /// SRC:DST, once per move.
        #[arg(long, required = true, value_parser = pair)]
        pair: Vec<(String, String)>,
    },
    /// Move every message of each SRC into its DST with RabbitMQ's dynamic shovel.
    Shovel {
        #[arg(long, required = true, value_parser = pair)]
        pair: Vec<(String, String)>,
        /// How often the queues are counted.
        #[arg(long, default_value_t = 10)]
        interval_ms: u64,
        /// The shovels' names: PREFIX-PID-1, PREFIX-PID-2, ... (this process's id: a shovel of
        /// an earlier run that deletes itself once done can never take a new one's definition
        /// with it).
        #[arg(long, default_value = "bench-move")]
        name: String,
        /// The whole move, at most.
        #[arg(long, default_value_t = 600)]
        timeout_s: u64,
    },
    /// The messages ready on each queue and its consumers, now (a passive declare).
    Count {
        #[arg(long, required = true)]
        queue: Vec<String>,
    },
    /// Take every message off QUEUE and check that they are exactly what `fill` put on ORIGIN.
    Check {
        #[arg(long)]
        queue: String,
        #[arg(long)]
        origin: String,
        #[command(flatten)]
        messages: Messages,
    },
}

/// Which messages `fill` publishes (and `check` expects): COUNT per queue.
#[derive(Args, Clone, Copy)]
struct Messages {
    #[arg(long)]
    count: u32,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Give every message a table of application headers (sr3 v02-like).
    #[arg(long)]
    headers: bool,
}

fn pair(text: &str) -> Result<(String, String), String> {
    match text.split_once(':') {
        Some((from, to)) if !from.is_empty() && !to.is_empty() => {
            Ok((from.to_string(), to.to_string()))
        }
        _ => Err(format!("{text}: want SRC:DST")),
    }
}

/// What went wrong, for stderr.
type Failure = Box<dyn std::error::Error>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("bench_move: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench_move: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<serde_json::Value, Failure> {
    let config = BrokerConfig {
        management_urls: vec![cli.management_url.clone()],
        amqp_urls: vec![cli.amqp_url.clone()],
        vhost: cli.vhost.clone(),
        user: cli.user.clone(),
        password: SecretRef::File(cli.password_file.clone()),
        reconnect_deadline: roll::inventory::DEFAULT_RECONNECT_DEADLINE,
        listing_timeout: roll::inventory::DEFAULT_LISTING_TIMEOUT,
    };
    let password = roll::broker::password(&config)?;
    let broker = config.display();
    match cli.command {
        Command::Fill {
            queue,
            messages:
                Messages {
                    count,
                    seed,
                    headers,
                },
        } => {
            let connection = amqp::connect(&config, &password, "bench fill").await?;
            let started = Instant::now();
            for q in &queue {
                fill(&connection, q, count, seed, headers).await?;
            }
            let seconds = started.elapsed().as_secs_f64();
            amqp::close(&connection).await;
            let published = u64::from(count) * queue.len() as u64;
            Ok(serde_json::json!({
                "published": published,
                "seconds": seconds,
                "msg_per_s": published as f64 / seconds,
            }))
        }
        Command::Move { pair } => {
            // From before the connection is opened to after the last move returned: the
            // source empty, every message confirmed on the destination and acknowledged.
            let started = Instant::now();
            let connection = amqp::connect(&config, &password, "bench move").await?;
            let mut records: Vec<mover::OnBoth> = pair.iter().map(|_| Default::default()).collect();
            let mut backlog = 0;
            let mut limits = Vec::new();
            for (from, _) in &pair {
                let held = amqp::queue_counts(&connection, &broker, from)
                    .await?
                    .map_or(0, |(messages, _)| u64::from(messages));
                backlog += held;
                limits.push(mover::Limits::for_backlog(held));
            }
            let results = if pair.len() == 1 {
                let (from, to) = &pair[0];
                vec![
                    mover::move_all(&connection, &broker, from, to, limits[0], &mut records[0])
                        .await,
                ]
            } else {
                let moves = pair
                    .iter()
                    .zip(records.iter_mut())
                    .zip(limits)
                    .map(|(((from, to), on_both), limits)| mover::Move {
                        from,
                        to,
                        limits,
                        on_both,
                    })
                    .collect();
                mover::move_many(&connection, &broker, moves).await
            };
            let seconds = started.elapsed().as_secs_f64();
            amqp::close(&connection).await;
            let mut moved = 0;
            let mut reports = Vec::new();
            for ((from, to), result) in pair.iter().zip(results) {
                let report = result.map_err(|e| format!("{from} -> {to}: {e}"))?;
                moved += report.moved;
                reports.push(serde_json::json!({"from": from, "to": to, "report": report}));
            }
            Ok(serde_json::json!({
                "tool": "roll",
                "held": backlog,
                "moved": moved,
                "seconds": seconds,
                "msg_per_s": moved as f64 / seconds,
                "window": mover::WINDOW,
                "moves": reports,
            }))
        }
        Command::Shovel {
            pair,
            interval_ms,
            name,
            timeout_s,
        } => {
            let name = format!("{name}-{}", std::process::id());
            let management = Management::new(&config, password.clone())?;
            let connection = amqp::connect(&config, &password, "bench shovel watch").await?;
            let result = shovel(
                &management,
                &connection,
                &config.vhost,
                &pair,
                &name,
                Duration::from_millis(interval_ms),
                Duration::from_secs(timeout_s),
            )
            .await;
            // Whatever happened: no shovel of ours is left behind.
            for k in 1..=pair.len() {
                let path = shovel_path(&config.vhost, &name, k);
                match management.delete(&path, "delete shovel").await {
                    Ok(()) | Err(BrokerError::Http { status: 404, .. }) => {}
                    Err(e) => eprintln!("bench_move: {e}"),
                }
            }
            amqp::close(&connection).await;
            result
        }
        Command::Count { queue } => {
            let connection = amqp::connect(&config, &password, "bench count").await?;
            let counter = Counter::open(&connection).await?;
            let mut counts = serde_json::Map::new();
            for q in &queue {
                let (messages, consumers) = counter.count(q).await?;
                counts.insert(
                    q.clone(),
                    serde_json::json!({"messages": messages, "consumers": consumers}),
                );
            }
            amqp::close(&connection).await;
            Ok(serde_json::Value::Object(counts))
        }
        Command::Check {
            queue,
            origin,
            messages:
                Messages {
                    count,
                    seed,
                    headers,
                },
        } => {
            let connection = amqp::connect(&config, &password, "bench check").await?;
            let result = check(&connection, &queue, &origin, count, seed, headers).await;
            amqp::close(&connection).await;
            result
        }
    }
}

/// Runs `call` within the default deadline.
async fn timed<T>(what: &str, call: impl Future<Output = lapin::Result<T>>) -> Result<T, Failure> {
    match tokio::time::timeout(DEFAULT_TIMEOUT, call).await {
        Err(_) => Err(format!("{what}: no answer within {DEFAULT_TIMEOUT:?}").into()),
        Ok(Err(e)) => Err(format!("{what}: {e}").into()),
        Ok(Ok(value)) => Ok(value),
    }
}

/// Message `n` of `queue`: its body and properties; with `headers`, a table of application
/// headers too (as sr3's v02 messages carry).
fn message(seed: u64, queue: &str, n: u32, headers: bool) -> (Vec<u8>, BasicProperties) {
    let h = roll::hash::fnv1a_bytes(seed ^ 0x9e37_79b9_7f4a_7c15, queue.as_bytes());
    let h = roll::hash::fnv1a_bytes(h, &n.to_le_bytes());
    let mut digest = String::new();
    let mut x = h;
    while digest.len() < 88 {
        x = x
            .wrapping_mul(0x5851_f42d_4c95_7f2d)
            .wrapping_add(0x1405_7b7e_f767_814f);
        digest.push_str(&format!("{:016x}", x));
    }
    digest.truncate(86);
    digest.push_str("==");
    let (hh, mm, ss) = (n / 3600 % 24, n / 60 % 60, n % 60);
    let body = format!(
        concat!(
            r#"{{"pubTime":"20261202T{hh:02}{mm:02}{ss:02}.{frac:09}","#,
            r#""baseUrl":"https://dd.weather.example.org/","#,
            r#""relPath":"20261202/WXO-DD/bulletins/alphanumeric/{hh:02}/SA/CWAO/SACN31_CWAO_02{hh:02}00__{queue}_{n:07}","#,
            r#""integrity":{{"method":"sha512","value":"{digest}"}},"#,
            r#""size":{size},"mtime":"20261202T{hh:02}{mm:02}{ss:02}.{frac:09}","#,
            r#""atime":"20261202T{hh:02}{mm:02}{ss:02}.{frac:09}","mode":"644","#,
            r#""id":"{seed}-{queue}-{n}"}}"#
        ),
        hh = hh,
        mm = mm,
        ss = ss,
        frac = h % 1_000_000_000,
        queue = queue,
        n = n,
        digest = digest,
        size = 200 + h % 100_000,
        seed = seed,
    );
    // sr3 v03 (sarracenia/moth/amqp.py): an empty table unless headers are asked for.
    let mut table = FieldTable::default();
    if headers {
        for (key, value) in [
            ("from_cluster", "roll-lab"),
            ("source", "bench"),
            ("to_clusters", "ALL"),
            (
                "sum",
                "s,2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae",
            ),
        ] {
            table.insert(key.into(), AMQPValue::LongString(LongString::from(value)));
        }
        table.insert("bench_n".into(), AMQPValue::LongUInt(n));
    }
    let properties = BasicProperties::default()
        .with_content_type(ShortString::from("application/json"))
        .with_delivery_mode(2)
        .with_headers(table);
    (body.into_bytes(), properties)
}

/// Messages published and not yet confirmed, at most, while filling.
const FILL_WINDOW: usize = 8192;

type Publishing = Pin<Box<dyn Future<Output = Result<Confirmation, lapin::Error>> + Send>>;

async fn fill(
    connection: &Connection,
    queue: &str,
    count: u32,
    seed: u64,
    headers: bool,
) -> Result<(), Failure> {
    let channel = timed("open channel", connection.create_channel()).await?;
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    timed(
        "queue.declare",
        channel.queue_declare(queue.into(), durable, FieldTable::default()),
    )
    .await?;
    timed(
        "confirm.select",
        channel.confirm_select(ConfirmSelectOptions::default()),
    )
    .await?;
    let mut pending: VecDeque<Publishing> = VecDeque::new();
    let waited = |p: Publishing| async move {
        match timed("publish", p).await? {
            Confirmation::Ack(None) => Ok::<(), Failure>(()),
            other => Err(format!("publish to {queue}: {other:?}").into()),
        }
    };
    for n in 0..count {
        let (body, properties) = message(seed, queue, n, headers);
        let channel = channel.clone();
        let key = ShortString::from(queue);
        let mut publishing: Publishing = Box::pin(async move {
            let mandatory = BasicPublishOptions {
                mandatory: true,
                immediate: false,
            };
            channel
                .basic_publish("".into(), key, mandatory, &body, properties)
                .await?
                .await
        });
        // The first poll queues the frames; the confirm is awaited in turn.
        if let Poll::Ready(done) = publishing
            .as_mut()
            .poll(&mut Context::from_waker(std::task::Waker::noop()))
        {
            publishing = Box::pin(std::future::ready(done));
        }
        pending.push_back(publishing);
        while pending.len() > FILL_WINDOW {
            if let Some(p) = pending.pop_front() {
                waited(p).await?;
            }
        }
    }
    while let Some(p) = pending.pop_front() {
        waited(p).await?;
    }
    let _ = channel.close(200, "filled".into()).await;
    Ok(())
}

/// Counts queues with passive declares on one channel.
struct Counter {
    channel: Channel,
}

impl Counter {
    async fn open(connection: &Connection) -> Result<Counter, Failure> {
        let channel = timed("open channel", connection.create_channel()).await?;
        Ok(Counter { channel })
    }

    /// (messages ready, consumers) of `queue`.
    async fn count(&self, queue: &str) -> Result<(u32, u32), Failure> {
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let q = timed(
            "passive queue.declare",
            self.channel
                .queue_declare(queue.into(), passive, FieldTable::default()),
        )
        .await?;
        Ok((q.message_count(), q.consumer_count()))
    }
}

fn shovel_path(vhost: &str, name: &str, k: usize) -> String {
    format!(
        "parameters/shovel/{}/{}",
        segment(vhost),
        segment(&format!("{name}-{k}"))
    )
}

async fn shovel(
    management: &Management,
    connection: &Connection,
    vhost: &str,
    pairs: &[(String, String)],
    name: &str,
    interval: Duration,
    timeout: Duration,
) -> Result<serde_json::Value, Failure> {
    // A channel per queue: every queue of a poll is counted at the same time.
    let mut sources = Vec::new();
    let mut destinations = Vec::new();
    let mut want = Vec::new();
    for (from, to) in pairs {
        let source = Counter::open(connection).await?;
        let destination = Counter::open(connection).await?;
        let (messages, _) = source.count(from).await?;
        let (already, _) = destination.count(to).await?;
        want.push(u64::from(messages) + u64::from(already));
        sources.push((source, from.clone()));
        destinations.push((destination, to.clone()));
    }
    // A direct connection to the local node (no host in the URI): the shovel at its best.
    let uri = format!("amqp:///{}", segment(vhost));
    let started = Instant::now();
    for (k, (from, to)) in pairs.iter().enumerate() {
        let definition = serde_json::json!({"value": {
            "src-protocol": "amqp091",
            "src-uri": uri,
            "src-queue": from,
            "src-delete-after": "queue-length",
            "dest-protocol": "amqp091",
            "dest-uri": uri,
            "dest-queue": to,
            "ack-mode": "on-confirm",
        }});
        management
            .put(
                &shovel_path(vhost, name, k + 1),
                &definition,
                "declare shovel",
            )
            .await?;
    }
    let declared = started.elapsed().as_secs_f64();
    // Until every destination holds what its source held, then until every source is empty
    // and nothing consumes it any more (the shovel stopped after its last acknowledgement).
    // `asked` is when the last poll that did not find the end was sent: the end came after it.
    let mut polls = 0u64;
    let mut asked = started;
    let mut filled_at = None;
    loop {
        if started.elapsed() > timeout {
            return Err(format!("the shovels did not finish within {timeout:?}").into());
        }
        polls += 1;
        let sent = Instant::now();
        let counts = count_all(&destinations).await?;
        let mut full = true;
        for ((there, _), (want, (_, to))) in counts.iter().zip(want.iter().zip(&destinations)) {
            if u64::from(*there) > *want {
                return Err(format!("{to} holds {there} messages, more than {want}").into());
            }
            full &= u64::from(*there) == *want;
        }
        if full {
            filled_at.get_or_insert(started.elapsed().as_secs_f64());
            let counts = count_all(&sources).await?;
            if counts
                .iter()
                .all(|&(left, consumers)| left == 0 && consumers == 0)
            {
                break;
            }
        }
        asked = sent;
        tokio::time::sleep(interval).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let moved: u64 = want.iter().sum();
    Ok(serde_json::json!({
        "tool": "shovel",
        "held": moved,
        "moved": moved,
        "seconds": seconds,
        "msg_per_s": moved as f64 / seconds,
        // The end came between the last poll that did not find it and this time.
        "resolution_s": seconds - asked.duration_since(started).as_secs_f64(),
        "seconds_until_all_on_destination": filled_at,
        "seconds_to_declare": declared,
        "polls": polls,
        "interval_ms": interval.as_millis() as u64,
    }))
}

/// Counts these queues at the same time, each on its own channel.
async fn count_all(queues: &[(Counter, String)]) -> Result<Vec<(u32, u32)>, Failure> {
    let mut set = tokio::task::JoinSet::new();
    for (k, (counter, queue)) in queues.iter().enumerate() {
        let channel = counter.channel.clone();
        let queue = queue.clone();
        set.spawn(async move {
            let counter = Counter { channel };
            (k, counter.count(&queue).await.map_err(|e| e.to_string()))
        });
    }
    let mut counts = vec![(0, 0); queues.len()];
    while let Some(joined) = set.join_next().await {
        let (k, count) = joined?;
        counts[k] = count?;
    }
    Ok(counts)
}

/// The number of a message `fill` made for `origin`, from the id at the end of its body.
fn number(body: &[u8], seed: u64, origin: &str) -> Option<u32> {
    let body = std::str::from_utf8(body).ok()?;
    let id = body.strip_suffix("\"}")?.rsplit_once("\"id\":\"")?.1;
    id.strip_prefix(&format!("{seed}-{origin}-"))?.parse().ok()
}

async fn check(
    connection: &Connection,
    queue: &str,
    origin: &str,
    count: u32,
    seed: u64,
    headers: bool,
) -> Result<serde_json::Value, Failure> {
    let started = Instant::now();
    let channel = timed("open channel", connection.create_channel()).await?;
    timed(
        "basic.qos",
        channel.basic_qos(2000, BasicQosOptions { global: false }),
    )
    .await?;
    let mut consumer = timed(
        "basic.consume",
        channel.basic_consume(
            queue.into(),
            "bench-check".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await?;
    let mut seen = vec![false; count as usize];
    let (mut received, mut wrong, mut twice) = (0u64, 0u64, 0u64);
    let mut first_wrong = None;
    // Until every message came, and then nothing more for half a second.
    loop {
        let wait = if received >= u64::from(count) {
            Duration::from_millis(500)
        } else {
            DEFAULT_TIMEOUT
        };
        let delivery = match tokio::time::timeout(wait, consumer.next()).await {
            Err(_) if received >= u64::from(count) => break,
            Err(_) => return Err(format!("{queue}: {received} of {count}, then nothing").into()),
            Ok(None) => return Err(format!("{queue}: the consumer was cancelled").into()),
            Ok(Some(Err(e))) => return Err(format!("{queue}: {e}").into()),
            Ok(Some(Ok(delivery))) => delivery,
        };
        received += 1;
        let n = match number(&delivery.data, seed, origin) {
            Some(n) if n < count => n,
            _ => {
                wrong += 1;
                first_wrong.get_or_insert(format!(
                    "not a message of {origin}: {:?}",
                    String::from_utf8_lossy(&delivery.data)
                ));
                continue;
            }
        };
        let (body, properties) = message(seed, origin, n, headers);
        if delivery.data != body || delivery.properties != properties {
            wrong += 1;
            first_wrong.get_or_insert(format!(
                "message {n} differs: {:?} {:?}",
                String::from_utf8_lossy(&delivery.data),
                delivery.properties
            ));
        }
        if std::mem::replace(&mut seen[n as usize], true) {
            twice += 1;
        }
    }
    let _ = channel.close(200, "checked".into()).await;
    let missing = seen.iter().filter(|s| !**s).count();
    let ok = wrong == 0 && twice == 0 && missing == 0 && received == u64::from(count);
    let json = serde_json::json!({
        "queue": queue,
        "origin": origin,
        "received": received,
        "missing": missing,
        "duplicates": twice,
        "different": wrong,
        "ok": ok,
        "seconds": started.elapsed().as_secs_f64(),
    });
    if ok {
        Ok(json)
    } else {
        Err(format!("{json} {}", first_wrong.unwrap_or_default()).into())
    }
}
