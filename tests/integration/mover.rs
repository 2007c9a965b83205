//! The message mover against the lab broker, in a scratch vhost of its own (created and
//! deleted by the test), so it runs beside the other tests without touching their queues.

use lapin::BasicProperties;
use lapin::options::{BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use roll::broker::equivalence::QueueSettings;
use roll::broker::management::{Management, segment};
use roll::broker::{amqp, mover};
use roll::inventory::BrokerConfig;

use crate::support::{repo, require_lab};

struct ScratchVhost {
    admin: Management,
    name: String,
    runtime: tokio::runtime::Runtime,
}

impl Drop for ScratchVhost {
    fn drop(&mut self) {
        let path = format!("vhosts/{}", segment(&self.name));
        let _ = self
            .runtime
            .block_on(self.admin.delete(&path, "delete scratch vhost"));
    }
}

fn lab_ops() -> BrokerConfig {
    let inventory = roll::inventory::load(&repo("inventory/lab.toml")).expect("inventory");
    inventory.group("ops").expect("ops").broker.clone()
}

#[test]
fn messages_move_with_their_properties_and_nothing_is_lost_when_the_target_is_missing() {
    require_lab();
    let ops = lab_ops();
    let password = ops.password.read().expect("password");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let name = format!("roll-test-mover-{}", std::process::id());
    let admin = Management::new(&ops, password.clone()).expect("client");
    runtime
        .block_on(async {
            admin
                .put(
                    &format!("vhosts/{}", segment(&name)),
                    &serde_json::json!({}),
                    "vhost",
                )
                .await?;
            admin
                .put(
                    &format!("permissions/{}/{}", segment(&name), segment(&ops.user)),
                    &serde_json::json!({"configure": ".*", "write": ".*", "read": ".*"}),
                    "permissions",
                )
                .await
        })
        .expect("scratch vhost");
    let scratch = ScratchVhost {
        admin,
        name: name.clone(),
        runtime,
    };
    let mut config = ops.clone();
    config.vhost = name.clone();
    let management = Management::new(&config, password.clone()).expect("client");
    scratch.runtime.block_on(async {
        let settings = QueueSettings::new(true, false, Default::default());
        for q in ["src", "dst"] {
            management
                .declare_queue(q, &settings)
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
        // More than two batches of messages in flight.
        const COUNT: u32 = 1200;
        let mut confirms = vec![];
        for i in 0..COUNT {
            let mut headers = FieldTable::default();
            headers.insert("lab-id".into(), AMQPValue::LongUInt(i));
            let properties = BasicProperties::default()
                .with_message_id(ShortString::from(format!("m-{i}")))
                .with_content_type("application/json".into())
                .with_headers(headers);
            let confirm = channel
                .basic_publish(
                    "".into(),
                    "src".into(),
                    BasicPublishOptions::default(),
                    format!("{{\"n\": {i}}}").as_bytes(),
                    properties,
                )
                .await
                .expect("publish");
            confirms.push(confirm);
        }
        for confirm in confirms {
            assert!(confirm.await.expect("confirm").is_ack());
        }

        // A destination that does not exist: the mover stops, and the message stays.
        let err = mover::move_all(&connection, "lab", "src", "no-such-queue")
            .await
            .expect_err("must fail");
        assert!(err.to_string().contains("they stay on src"), "{err}");

        let report = mover::move_all(&connection, "lab", "src", "dst")
            .await
            .expect("move");
        assert_eq!(report.moved, u64::from(COUNT), "{report:?}");
        // The messages given back after the failed attempt (those in flight) are counted as
        // redelivered.
        assert!(
            (1..=u64::from(mover::BATCH)).contains(&report.redelivered),
            "{report:?}"
        );

        let mut seen = vec![];
        while let Some(m) = channel
            .basic_get("dst".into(), BasicGetOptions { no_ack: true })
            .await
            .expect("get")
        {
            let d = m.delivery;
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
        amqp::close(connection).await;
    });
    drop(scratch);
}
