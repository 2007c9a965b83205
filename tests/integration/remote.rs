//! The SSH layer against a lab host: input of any size is streamed (not put in the command
//! line), and a command that outlives its timeout is killed on the host, not abandoned.

use std::time::Duration;

use crate::support::{repo, require_lab};

fn dev1() -> roll::inventory::Host {
    let inventory = roll::inventory::load(&repo("inventory/lab.toml")).expect("lab inventory");
    inventory
        .hosts()
        .find(|h| h.name == "dev1")
        .expect("dev1")
        .clone()
}

#[test]
fn a_large_input_is_streamed_and_a_timed_out_command_is_killed_on_the_host() {
    require_lab();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let connection = roll::remote::connect(&dev1()).await.expect("ssh");
        // 1 MiB, far over what one command-line argument may hold (128 KiB).
        let input: Vec<u8> = (0..1024 * 1024).map(|i| b'a' + (i % 26) as u8).collect();
        let out = connection
            .run_with_input(
                "count",
                "wc -c | tr -d ' '",
                Some(&input),
                Duration::from_secs(30),
            )
            .await
            .expect("runs");
        assert_eq!(out.stdout.trim(), "1048576", "{out:?}");
        assert!(out.success() && out.stderr.is_empty(), "{out:?}");

        let marker = format!("roll-test-sleep-{}", std::process::id());
        // A pattern that does not match the shell that looks for it.
        let pattern = format!("[r]{}", &marker[1..]);
        let err = connection
            .run(
                "sleeper",
                &format!("sh -c 'sleep 300; echo {marker}' & wait"),
                Duration::from_secs(2),
            )
            .await
            .expect_err("times out");
        let text = err.to_string();
        assert!(text.contains("did not finish within 2s"), "{text}");
        assert!(text.contains("killed on the host"), "{text}");
        let left = connection
            .run(
                "look",
                &format!("pgrep -f '{pattern}' || echo none"),
                Duration::from_secs(10),
            )
            .await
            .expect("runs");
        assert_eq!(left.stdout.trim(), "none", "still running: {left:?}");
        connection.close().await;
    });
}
