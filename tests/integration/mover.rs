//! The message mover against the lab broker, in a scratch vhost of its own (created and
//! deleted by the test), so it runs beside the other tests without touching their queues.

use lapin::BasicProperties;
use lapin::options::{BasicGetOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use roll::broker::equivalence::QueueSettings;
use roll::broker::management::{Management, segment};
use roll::broker::{amqp, mover};
use roll::inventory::BrokerConfig;

use crate::support::{ScratchVhost, drain, publish_n, scratch_vhost};

/// A vhost of the test's own (`suffix` tells it apart), its broker settings, the password.
fn scratch(suffix: &str) -> (ScratchVhost, BrokerConfig, roll::inventory::Secret) {
    scratch_vhost(&format!("roll-test-mover-{suffix}-{}", std::process::id()))
}

/// Moves `src` to `dst` of a scratch vhost.
async fn move_src_to_dst(
    connection: &lapin::Connection,
    limits: mover::Limits,
    on_both: &mut mover::OnBoth,
) -> Result<mover::MoveReport, mover::MoveFailure> {
    mover::move_all(connection, "lab", "src", "dst", limits, on_both).await
}

/// Declares the classic queues `src` and `dst` in a scratch vhost; an AMQP connection and a
/// channel in confirm mode to publish with.
async fn classic_pair(
    config: &BrokerConfig,
    password: &roll::inventory::Secret,
) -> (lapin::Connection, lapin::Channel) {
    pair(config, password, Default::default()).await
}

/// Declares the queue `src` with these arguments and the classic queue `dst` in a scratch
/// vhost; an AMQP connection and a channel in confirm mode to publish with.
async fn pair(
    config: &BrokerConfig,
    password: &roll::inventory::Secret,
    src_arguments: std::collections::BTreeMap<String, serde_json::Value>,
) -> (lapin::Connection, lapin::Channel) {
    let management = Management::new(config, password.clone()).expect("client");
    for (q, arguments) in [("src", src_arguments), ("dst", Default::default())] {
        management
            .declare_queue(q, &QueueSettings::new(true, false, arguments))
            .await
            .expect("declare");
    }
    let connection = amqp::connect(config, password, "mover test")
        .await
        .expect("amqp");
    let channel = connection.create_channel().await.expect("channel");
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    (connection, channel)
}

/// A quorum source that a publisher keeps filling through the default exchange (no binding
/// change can switch that away): the move takes the backlog, chases the source for the
/// bounded time, then stops and says the source is still filling. Every message published is
/// on one of the two queues.
#[test]
fn a_source_that_keeps_filling_is_chased_for_a_bounded_time_then_left() {
    let (scratch, config, password) = scratch("filling");
    scratch.runtime.block_on(async {
        let mut quorum = std::collections::BTreeMap::new();
        quorum.insert("x-queue-type".to_string(), serde_json::json!("quorum"));
        let (connection, publisher) = pair(&config, &password, quorum).await;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let feeding = {
            let stop = stop.clone();
            tokio::spawn(async move {
                // Confirms are awaited at the end, not one by one: a quorum queue's confirm
                // can take longer than the mover's 50 ms of silence under load, and the
                // source would seem to have stopped filling.
                let mut confirms = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let persistent = BasicProperties::default().with_delivery_mode(2);
                    let confirm = publish_n(&publisher, "src", confirms.len(), persistent).await;
                    confirms.push(confirm);
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
                for confirm in &mut confirms {
                    assert!(confirm.await.expect("confirm").is_ack());
                }
                confirms.len() as u64
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let limits = mover::Limits {
            deadline: std::time::Duration::from_secs(60),
            chase: std::time::Duration::from_secs(2),
            // A source fed every 5 ms must never look silent, however loaded the machine.
            idle: std::time::Duration::from_secs(1),
        };
        let started = std::time::Instant::now();
        let report = move_src_to_dst(&connection, limits, &mut Default::default())
            .await
            .expect("move");
        let took = started.elapsed();
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let published = feeding.await.expect("publisher");
        assert!(report.filling, "{report:?}");
        assert!(report.moved > 0, "{report:?}");
        assert!(took < std::time::Duration::from_secs(20), "took {took:?}");
        let counts = |q: &'static str| {
            let connection = &connection;
            async move {
                amqp::queue_counts(connection, "lab", q)
                    .await
                    .expect("count")
                    .expect("exists")
                    .0
            }
        };
        let (left, moved) = (counts("src").await, counts("dst").await);
        assert_eq!(
            u64::from(left) + u64::from(moved),
            published,
            "moved {moved}, left {left}, published {published}"
        );
        amqp::close(&connection).await;
    });
    drop(scratch);
}

#[test]
fn messages_move_with_their_properties_and_nothing_is_lost_when_the_target_is_missing() {
    let (scratch, config, password) = scratch("props");
    scratch.runtime.block_on(async {
        let (connection, channel) = classic_pair(&config, &password).await;
        // More than two windows of messages: the window fills and moves on.
        const COUNT: u32 = 2 * mover::WINDOW as u32 + 200;
        let mut confirms = vec![];
        for i in 0..COUNT {
            let mut headers = FieldTable::default();
            headers.insert("lab-id".into(), AMQPValue::LongUInt(i));
            let properties = BasicProperties::default()
                .with_message_id(ShortString::from(format!("m-{i}")))
                .with_content_type("application/json".into())
                .with_headers(headers);
            confirms.push(publish_n(&channel, "src", i, properties).await);
        }
        for confirm in confirms {
            assert!(confirm.await.expect("confirm").is_ack());
        }

        // A destination that does not exist: the mover stops, and the message stays.
        let limits = mover::Limits::for_backlog(u64::from(COUNT));
        let err = mover::move_all(
            &connection,
            "lab",
            "src",
            "no-such-queue",
            limits,
            &mut Default::default(),
        )
        .await
        .expect_err("must fail");
        assert!(err.to_string().contains("they stay on src"), "{err}");
        // Refused by the broker: none of them is on two queues.
        assert_eq!(err.report.uncertain, 0, "{:?}", err.report);

        let report = move_src_to_dst(&connection, limits, &mut Default::default())
            .await
            .expect("move");
        assert_eq!(report.moved, u64::from(COUNT), "{report:?}");
        // The messages given back after the failed attempt (those delivered: a window at
        // most) are counted as redelivered.
        assert!(
            (1..=u64::from(mover::WINDOW)).contains(&report.redelivered),
            "{report:?}"
        );

        let mut seen = vec![];
        for d in drain(&channel, "dst").await {
            let id = d.properties.message_id().as_ref().map(|s| s.to_string());
            let header = d
                .properties
                .headers()
                .as_ref()
                .and_then(|h| h.inner().get("lab-id").cloned());
            assert_eq!(
                d.properties.content_type().as_ref().map(|s| s.to_string()),
                Some("application/json".to_string())
            );
            let n: u32 = id
                .as_deref()
                .and_then(|s| s.strip_prefix("m-"))
                .and_then(|s| s.parse().ok())
                .expect("message id");
            assert_eq!(header, Some(AMQPValue::LongUInt(n)));
            assert_eq!(d.data, format!("{{\"n\": {n}}}").into_bytes());
            seen.push(n);
        }
        seen.sort_unstable();
        assert_eq!(
            seen,
            (0..COUNT).collect::<Vec<_>>(),
            "every message exactly once"
        );
        let empty = channel
            .basic_get("src".into(), BasicGetOptions { no_ack: true })
            .await
            .expect("get");
        assert!(empty.is_none(), "the source still holds messages");
        amqp::close(&connection).await;
    });
    drop(scratch);
}

/// A move cut off after the broker stored messages on the destination and before the mover
/// acknowledged them on the source (its connection closed by the broker while the mover waits
/// at the `confirmed` failpoint, with more messages in flight behind them): the source gives
/// them back, and the next move removes them without storing them again. Every message is on
/// the destination exactly once, and what the failed move left on both is within the window.
#[test]
fn messages_stored_but_not_acknowledged_are_not_stored_twice() {
    let (scratch, config, password) = scratch("on-both");
    let points = tempfile::tempdir().expect("points");
    // SAFETY of the environment: nextest runs each test in a process of its own.
    unsafe {
        std::env::set_var("ROLL_FAILPOINTS", "confirmed=src");
        std::env::set_var("ROLL_FAILPOINT_DIR", points.path());
    }
    scratch.runtime.block_on(async {
        let (connection, channel) = classic_pair(&config, &password).await;
        // More than a window: the failed move cannot have taken them all.
        const COUNT: u32 = mover::WINDOW as u32 + 1000;
        let mut confirms = vec![];
        for i in 0..COUNT {
            let id = BasicProperties::default().with_message_id(format!("m-{i}").into());
            confirms.push(publish_n(&channel, "src", i, id).await);
        }
        for confirm in confirms {
            assert!(confirm.await.expect("confirm").is_ack());
        }
        let mover_connection = amqp::connect(&config, &password, "mover under test")
            .await
            .expect("amqp");
        let mut on_both = mover::OnBoth::default();
        let limits = mover::Limits::for_backlog(u64::from(COUNT));
        // The first messages confirmed are stored on dst; their acknowledgement never goes:
        // the broker closes the mover's connection while it waits at the failpoint.
        let closer = {
            let admin = Management::new(&config, password.clone()).expect("client");
            let point = points.path().join("confirmed=src");
            let watcher = amqp::connect(&config, &password, "mover watcher")
                .await
                .expect("amqp");
            tokio::spawn(async move {
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
                let waited = |what: &str| {
                    assert!(std::time::Instant::now() < deadline, "{what} never came");
                };
                // The mover waits at the failpoint: what it published before is all on dst
                // once the count stays the same for a second.
                let (mut last, mut same) = (0, 0);
                let stored = loop {
                    let stored = amqp::queue_counts(&watcher, "lab", "dst")
                        .await
                        .expect("count")
                        .map_or(0, |(messages, _)| messages);
                    same = if stored == last { same + 1 } else { 0 };
                    last = stored;
                    if stored > 0 && same >= 5 {
                        break stored;
                    }
                    waited("messages on dst");
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                };
                // Its connection, as the management API lists it (it may lag under load).
                let name = loop {
                    let listed: Vec<serde_json::Value> = admin
                        .get(
                            "connections",
                            &[("columns", "name,client_properties".into())],
                            "connections",
                        )
                        .await
                        .expect("connections");
                    let ours = listed.iter().find_map(|c| {
                        let named = c["client_properties"]["connection_name"].as_str()?;
                        named
                            .starts_with("roll mover under test")
                            .then(|| c["name"].as_str().map(str::to_string))?
                    });
                    if let Some(name) = ours {
                        break name;
                    }
                    waited("the mover's connection in the listing");
                    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                };
                admin
                    .delete(&format!("connections/{}", segment(&name)), "close")
                    .await
                    .expect("close the mover's connection");
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                std::fs::write(&point, "").expect("go on");
                amqp::close(&watcher).await;
                u64::from(stored)
            })
        };
        let failed = move_src_to_dst(&mover_connection, limits, &mut on_both)
            .await
            .expect_err("the connection was closed");
        let stored = closer.await.expect("closer");
        eprintln!("the failed move: {:?}; {stored} on dst", failed.report);
        // Every message on dst is known to be there; none is uncertain.
        assert_eq!(on_both.len(), stored, "{:?}", failed.report);
        assert!(stored <= u64::from(mover::WINDOW), "{:?}", failed.report);
        assert_eq!(failed.report.uncertain, 0, "{:?}", failed.report);
        assert_eq!(failed.report.moved, 0, "{:?}", failed.report);
        // A new connection, as the engine opens after such a loss; the same record.
        let again = amqp::connect(&config, &password, "mover again")
            .await
            .expect("amqp");
        let report = move_src_to_dst(&again, limits, &mut on_both)
            .await
            .expect("move");
        assert_eq!(report.absorbed, stored, "{report:?}");
        assert_eq!(
            report.moved,
            u64::from(COUNT),
            "the absorbed count as moved: {report:?}"
        );
        let mut seen: Vec<String> = drain(&channel, "dst")
            .await
            .iter()
            .map(|d| String::from_utf8_lossy(&d.data).to_string())
            .collect();
        seen.sort();
        let mut want: Vec<String> = (0..COUNT).map(|i| format!("{{\"n\": {i}}}")).collect();
        want.sort();
        assert_eq!(seen, want, "every message exactly once");
        amqp::close(&again).await;
        amqp::close(&connection).await;
    });
    drop(scratch);
}

/// Several moves at the same time on one connection, each on its own channel: every message
/// of each source on its destination, exactly once, and the sources empty.
#[test]
fn several_queues_move_at_once_on_one_connection() {
    let (scratch, config, password) = scratch("many");
    scratch.runtime.block_on(async {
        let management = Management::new(&config, password.clone()).expect("client");
        const PAIRS: [(&str, &str); 3] = [("src1", "dst1"), ("src2", "dst2"), ("src3", "dst3")];
        const COUNT: u32 = 3000;
        for q in PAIRS.iter().flat_map(|(a, b)| [a, b]) {
            management
                .declare_queue(q, &QueueSettings::new(true, false, Default::default()))
                .await
                .expect("declare");
        }
        let connection = amqp::connect(&config, &password, "mover test")
            .await
            .expect("amqp");
        let channel = connection.create_channel().await.expect("channel");
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirms");
        let mut confirms = vec![];
        for (from, _) in PAIRS {
            for i in 0..COUNT {
                let persistent = BasicProperties::default().with_delivery_mode(2);
                confirms.push(publish_n(&channel, from, format!("{from}-{i}"), persistent).await);
            }
        }
        for confirm in confirms {
            assert!(confirm.await.expect("confirm").is_ack());
        }
        let mut records: Vec<mover::OnBoth> = PAIRS.iter().map(|_| Default::default()).collect();
        let moves = PAIRS
            .iter()
            .zip(records.iter_mut())
            .map(|((from, to), on_both)| mover::Move {
                from,
                to,
                limits: mover::Limits::for_backlog(u64::from(COUNT)),
                on_both,
            })
            .collect();
        let results = mover::move_many(&connection, "lab", moves).await;
        for ((from, to), result) in PAIRS.iter().zip(results) {
            let report = result.expect("move");
            assert_eq!(report.moved, u64::from(COUNT), "{from}: {report:?}");
            let mut seen: Vec<String> = drain(&channel, to)
                .await
                .iter()
                .map(|d| String::from_utf8_lossy(&d.data).to_string())
                .collect();
            seen.sort();
            let mut want: Vec<String> = (0..COUNT)
                .map(|i| format!("{{\"n\": {from}-{i}}}"))
                .collect();
            want.sort();
            assert_eq!(seen, want, "{to}: every message of {from} exactly once");
            let left = amqp::queue_counts(&connection, "lab", from)
                .await
                .expect("count")
                .expect("exists");
            assert_eq!(left.0, 0, "{from} still holds messages");
        }
        amqp::close(&connection).await;
    });
    drop(scratch);
}

/// A move tells its count as it grows: never more often than every `TELL_EVERY`, never
/// going back, never more than it moved in the end.
#[test]
fn a_move_tells_its_count_as_it_grows() {
    let (scratch, config, password) = scratch("telling");
    scratch.runtime.block_on(async {
        const COUNT: u32 = 20_000;
        let (connection, channel) = classic_pair(&config, &password).await;
        let mut confirms = vec![];
        for i in 0..COUNT {
            confirms.push(publish_n(&channel, "src", i, BasicProperties::default()).await);
        }
        for confirm in confirms {
            assert!(confirm.await.expect("confirm").is_ack());
        }
        let told = std::sync::Mutex::new(vec![]);
        let tell = |moved: u64| {
            told.lock()
                .expect("tells")
                .push((std::time::Instant::now(), moved));
        };
        let report = mover::move_all_telling(
            &connection,
            "lab",
            "src",
            "dst",
            mover::Limits::for_backlog(u64::from(COUNT)),
            &mut Default::default(),
            Some(&tell),
        )
        .await
        .expect("move");
        assert_eq!(report.moved, u64::from(COUNT), "{report:?}");
        let told = told.into_inner().expect("tells");
        let seconds = report.seconds;
        assert!(!told.is_empty() || seconds < 0.2, "{seconds}s, never told");
        for pair in told.windows(2) {
            let ((at, before), (next, after)) = (pair[0], pair[1]);
            assert!(before <= after, "{told:?}");
            let gap = next - at;
            assert!(
                gap >= mover::TELL_EVERY - std::time::Duration::from_millis(5),
                "{gap:?}"
            );
        }
        let last = told.last().map_or(0, |(_, moved)| *moved);
        assert!(last <= report.moved, "{last} {report:?}");
        // No more tells than the move had periods of TELL_EVERY.
        let most = (seconds / mover::TELL_EVERY.as_secs_f64()).ceil() as usize + 1;
        assert!(told.len() <= most, "{} tells in {seconds}s", told.len());
        eprintln!("{} tells in {seconds:.2}s", told.len());
        amqp::close(&connection).await;
    });
    drop(scratch);
}
