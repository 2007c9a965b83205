//! The SSH masters of a run that was killed. Each `roll` process keeps the control sockets of
//! its connections in a directory of its own, `<pid>-<start time>`, beside the SSH registry of
//! kept connections: in `$XDG_RUNTIME_DIR/roll-ssh-runs`, else `~/.cache/roll/ssh-runs`
//! (`/tmp/roll-ssh-runs-<uid>` when neither can be used). A process that ends normally closes its masters and removes
//! the directory; one that was killed (SIGKILL) leaves its `ssh -M` masters running. The next
//! command that connects finds those directories of dead processes, ends each master still
//! there (through its socket, as `ssh -O exit` does) and removes the directory.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use openssh::Session;

/// How long ending one leftover master may take.
const EXIT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where every process's run directory lives.
fn runs_dir() -> Option<PathBuf> {
    let runs = match super::persist::registry() {
        Some(registry) => {
            let name = registry.file_name()?.to_string_lossy().to_string();
            registry.with_file_name(format!("{name}-runs"))
        }
        None => std::env::temp_dir().join(format!(
            "roll-ssh-runs-{}",
            super::persist::own_uid().unwrap_or(0)
        )),
    };
    private_dir(&runs)?;
    Some(runs)
}

/// Makes `dir` (0700) unless it exists; `None` unless it is ours and private.
fn private_dir(dir: &Path) -> Option<()> {
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(_) => return None,
    }
    super::persist::ours(dir, 0o077).then_some(())
}

/// The start time of a process (clock ticks since boot, field 22 of `/proc/PID/stat`).
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count from after it.
    let after = stat.rsplit_once(')')?.1;
    after.split_whitespace().nth(19)?.parse().ok()
}

/// This process's run directory, made on first use.
pub fn own_dir() -> Option<&'static Path> {
    static OWN: OnceLock<Option<PathBuf>> = OnceLock::new();
    OWN.get_or_init(|| {
        let pid = std::process::id();
        let dir = runs_dir()?.join(format!("{pid}-{}", start_time(pid)?));
        private_dir(&dir)?;
        Some(dir)
    })
    .as_deref()
}

/// Removes this process's run directory once its connections are closed (it is empty
/// then; a directory still holding a master is left for the next `reap`).
pub fn forget_own_dir() {
    if let Some(dir) = own_dir() {
        let _ = std::fs::remove_dir(dir);
    }
}

/// True when the process named by a run directory (`<pid>-<start time>`) is gone.
fn dead(name: &str) -> bool {
    let Some((pid, started)) = name.split_once('-') else {
        return false;
    };
    match (pid.parse::<u32>(), started.parse::<u64>()) {
        (Ok(pid), Ok(started)) => start_time(pid) != Some(started),
        _ => false,
    }
}

/// Ends the masters left by killed `roll` processes and removes their directories; returns
/// how many masters were ended.
pub async fn reap() -> usize {
    let Some(runs) = runs_dir() else {
        return 0;
    };
    let Ok(entries) = std::fs::read_dir(&runs) else {
        return 0;
    };
    let mut ended = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if !dead(&name) {
            continue;
        }
        let dir = entry.path();
        for connection in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let socket = connection.path().join("master");
            if !socket.exists() {
                continue;
            }
            let session = Session::resume_mux(socket.into_boxed_path(), None);
            match tokio::time::timeout(EXIT_TIMEOUT, session.close()).await {
                Ok(Ok(())) => ended += 1,
                Ok(Err(err)) => tracing::debug!(error = %err, "leftover ssh master"),
                Err(_) => tracing::debug!("leftover ssh master: no answer"),
            }
        }
        if let Err(err) = std::fs::remove_dir_all(&dir) {
            tracing::debug!(dir = %dir.display(), error = %err, "leftover ssh directory");
        }
    }
    if ended > 0 {
        tracing::info!(ended, "ended the ssh masters of killed runs");
    }
    ended
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_process_is_not_dead_and_a_gone_one_is() {
        let me = std::process::id();
        let started = start_time(me).expect("our start time");
        assert!(!dead(&format!("{me}-{started}")));
        // Same pid, another start time: the pid was reused by another process.
        assert!(dead(&format!("{me}-{}", started + 1)));
        assert!(!dead("not-a-run"));
    }
}
