//! The SSH layer against a lab host: input of any size is streamed (not put in the command
//! line), and a command that outlives its timeout is killed on the host, not abandoned.

use std::time::Duration;

use crate::support::{LAB_INVENTORY, MINOR, Roll, read_to_plan, repo, require_lab};

fn dev1() -> roll::inventory::Host {
    let inventory = roll::inventory::load(&repo(LAB_INVENTORY)).expect("lab inventory");
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

/// Scripts run together in one session come back each as it would alone: its own exit code,
/// stdout and stderr, byte for byte, whatever the one before it did.
#[test]
fn scripts_run_in_one_session_come_back_as_each_would_alone() {
    require_lab();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let connection = roll::remote::connect(&dev1()).await.expect("ssh");
        let scripts = [
            ("first", "printf 'a\\n\\nb\\n'; echo oops >&2; exit 3"),
            ("no newline", "printf 'x y'; printf 'e' >&2"),
            ("syntax", "if then fi (("),
            ("quotes", "echo \"it's $((1 + 1))\"; echo '\\n'"),
            ("ends the shell", "exit 0"),
            ("after", "pwd"),
        ];
        let timeout = Duration::from_secs(30);
        let together = connection.run_each(&scripts, timeout).await;
        assert_eq!(together.len(), scripts.len());
        for ((label, script), joined) in scripts.iter().zip(together) {
            let alone = connection.run(label, script, timeout).await.expect("runs");
            let joined = joined.expect("runs");
            assert_eq!(
                (&joined.code, &joined.stdout, &joined.stderr),
                (&alone.code, &alone.stdout, &alone.stderr),
                "{label}"
            );
        }
        connection.close().await;
    });
}

/// The `ssh -M` masters (and their control directories) a killed `roll` leaves behind are
/// ended by the next command that connects.
#[test]
fn the_ssh_masters_of_a_killed_run_are_ended_by_the_next_command() {
    use std::process::Command;
    require_lab();
    let dir = tempfile::tempdir().expect("temp dir");
    let runtime = dir.path().join("runtime");
    std::fs::create_dir(&runtime).expect("runtime dir");
    let state = dir.path().join("state");
    // An upgrade of dev waits for its approval, every host connected: killed there.
    let mut waiting = Roll::upgrade("dev", "a")
        .playbook(MINOR)
        .state(&state)
        .env("XDG_RUNTIME_DIR", &runtime)
        .spawn();
    let _rest = read_to_plan(&mut waiting);
    waiting.kill().expect("SIGKILL");
    let _ = waiting.wait();
    let runs = runtime.join("roll-ssh-runs");
    let sockets = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(&runs)
            .into_iter()
            .flatten()
            .flatten()
            .flat_map(|run| {
                std::fs::read_dir(run.path())
                    .into_iter()
                    .flatten()
                    .flatten()
            })
            .map(|c| c.path().join("master"))
            .filter(|m| m.exists())
            .collect()
    };
    let left = sockets();
    assert_eq!(left.len(), 2, "one master per dev host left: {left:?}");
    let masters = |socket: &std::path::Path| {
        Command::new("pgrep")
            .args(["-f", &socket.display().to_string()])
            .output()
            .map(|o| !String::from_utf8_lossy(&o.stdout).trim().is_empty())
            .unwrap_or(false)
    };
    assert!(left.iter().all(|s| masters(s)), "the masters run: {left:?}");

    let check = Roll::check()
        .group("dev")
        .env("XDG_RUNTIME_DIR", &runtime)
        .command()
        .output()
        .expect("roll check");
    assert!(check.status.success(), "{check:?}");
    assert!(sockets().is_empty(), "left: {:?}", sockets());
    std::thread::sleep(Duration::from_millis(500));
    for socket in &left {
        assert!(!masters(socket), "{} still runs", socket.display());
    }
}
