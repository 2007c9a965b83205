//! Pauses at named points of a queue's recreation, for the fault tests: they take the broker
//! down exactly there (a real `rabbitmqctl stop_app`), then let the run go on against it.
//!
//! `ROLL_FAILPOINTS=stage=word,...` names the points: `hold`, `recreate`, `move` (after a
//! move's acknowledgement of messages stored on the destination, more of them in flight),
//! `confirmed` (messages stored on the destination, not yet acknowledged on the source,
//! more in flight behind them) and `release` of a queue whose name contains `word`. The first time a run reaches one, it
//! prints `failpoint STAGE=WORD QUEUE: waiting for FILE` on stderr and waits until the file
//! `$ROLL_FAILPOINT_DIR/STAGE=WORD` exists (it removes it and goes on). `gate=HOST` pauses
//! before that host's gate, `lock=GROUP` before the lock's watcher takes a lost lock again.
//! Without the variable
//! nothing ever waits. Nothing of it is a fake: the broker, the hosts and the run are real;
//! only the moment is chosen.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

/// The points reached already (each pauses once).
static REACHED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// When the run waited at a failpoint (from, to; ms since the epoch): time the test held it
/// while it took the broker down, counted with the broker's unavailability.
static PAUSES: Mutex<Vec<(u64, u64)>> = Mutex::new(Vec::new());

/// Every pause at a failpoint so far.
pub fn pauses() -> Vec<(u64, u64)> {
    PAUSES.lock().map(|p| p.clone()).unwrap_or_default()
}

/// Pauses if `stage` of `queue` is a failpoint of this run (see the module).
pub async fn reach(stage: &str, queue: &str) {
    wait(stage, queue, true).await;
}

/// Pauses if `lock=GROUP` is a failpoint of this run: the lock's watcher, its connection
/// lost, waits there before it takes the lock again (a test lets another process take it
/// first). Not counted with the broker's unavailability.
pub async fn reach_lock(group: &str) {
    wait("lock", group, false).await;
}

/// Pauses if the `gate` of `host` is a failpoint of this run (`gate=px6`): a test changes a
/// host there (stops its consumer, say) before the gate checks it. Not counted with the
/// broker's unavailability.
pub async fn reach_gate(host: &str) {
    wait("gate", host, false).await;
}

async fn wait(stage: &str, queue: &str, outage: bool) {
    let Ok(points) = std::env::var("ROLL_FAILPOINTS") else {
        return;
    };
    let Some(point) = points.split(',').find(|point| {
        point
            .split_once('=')
            .is_some_and(|(s, word)| s == stage && queue.contains(word))
    }) else {
        return;
    };
    if let Ok(mut reached) = REACHED.lock()
        && !reached.insert(point.to_string())
    {
        return;
    }
    let dir = std::env::var_os("ROLL_FAILPOINT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let file = dir.join(point);
    crate::output::note(&format!(
        "failpoint {point} {queue}: waiting for {}",
        file.display()
    ));
    let from = crate::clock::now_millis();
    while std::fs::remove_file(&file).is_err() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if outage && let Ok(mut pauses) = PAUSES.lock() {
        pauses.push((from, crate::clock::now_millis()));
    }
}
