//! Connections kept for the next run of roll (`persist` in the inventory's SSH settings).
//!
//! A kept connection is an OpenSSH master started with `ControlPersist=<persist>`: it exits by
//! itself once idle that long. Its control socket (0600) lives in a directory of ours that only
//! we can write to, made by the `openssh` crate; roll records where, for each SSH target, as a
//! symbolic link in its own registry directory (`$XDG_RUNTIME_DIR/roll-ssh`, else
//! `~/.cache/roll/ssh`, mode 0700). The
//! link's name is a hash of every setting of the target, so a changed user, key, port, config
//! file or host key policy never reuses an old connection. A recorded master that has exited
//! is noticed (the mux `check` fails) and replaced.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use openssh::Session;

use crate::inventory::SshTarget;

/// How long the check of a recorded master may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// The registry directory, created private if missing; `None` when it cannot be made or is
/// not private to this user (then connections are not kept). Found once per process, however
/// many hosts connect.
pub fn registry() -> Option<&'static Path> {
    static REGISTRY: OnceLock<Option<PathBuf>> = OnceLock::new();
    REGISTRY.get_or_init(find_registry).as_deref()
}

fn find_registry() -> Option<PathBuf> {
    let base = match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(runtime) => PathBuf::from(runtime).join("roll-ssh"),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".cache/roll/ssh"),
    };
    if let Some(parent) = base.parent() {
        std::fs::create_dir_all(parent).ok()?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(&base) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(err) => {
            tracing::debug!(dir = %base.display(), error = %err, "ssh registry");
            return None;
        }
    }
    ours(&base, 0o077).then_some(base)
}

/// True when `dir` is a directory (not a link) owned by this process's user, with none of the
/// permission bits of `forbidden`.
pub(super) fn ours(dir: &Path, forbidden: u32) -> bool {
    let Ok(meta) = std::fs::symlink_metadata(dir) else {
        return false;
    };
    let owner = own_uid().is_some_and(|uid| uid == meta.uid());
    meta.is_dir() && owner && meta.permissions().mode() & forbidden == 0
}

/// This process's user id: the owner of `/proc/self` (read once).
pub(super) fn own_uid() -> Option<u32> {
    static UID: OnceLock<Option<u32>> = OnceLock::new();
    *UID.get_or_init(|| std::fs::metadata("/proc/self").ok().map(|m| m.uid()))
}

/// The registry entry of a target: every setting that changes what the connection is.
pub fn entry(registry: &Path, target: &SshTarget) -> PathBuf {
    let key = format!(
        "{}\n{:?}\n{:?}\n{:?}\n{}",
        target.destination(),
        target.identity_file,
        target.known_hosts_file,
        target.config_file,
        target.strict_host_key_checking
    );
    registry.join(format!("{:016x}", crate::hash::fnv1a(&key)))
}

/// The recorded master of `entry`, if it is still there and answers.
pub async fn reuse(entry: &Path) -> Option<Session> {
    let socket = std::fs::read_link(entry).ok()?;
    // The socket must sit in a directory of ours that nobody else can write to, as the
    // openssh crate makes them (the socket itself is 0600).
    if !socket.parent().is_some_and(|dir| ours(dir, 0o022)) {
        let _ = std::fs::remove_file(entry);
        return None;
    }
    let session = Session::resume_mux(socket.clone().into_boxed_path(), None);
    match tokio::time::timeout(CHECK_TIMEOUT, session.check()).await {
        Ok(Ok(())) => Some(session),
        _ => {
            // Gone (idle too long, or the host went away): forget it, and remove the
            // directory the openssh crate made for it (its log, a stale socket).
            let _ = session.detach();
            let _ = std::fs::remove_file(entry);
            if let Some(dir) = socket.parent()
                && dir
                    .file_name()
                    .is_some_and(|name| name.to_string_lossy().starts_with(".ssh-connection"))
            {
                let _ = std::fs::remove_dir_all(dir);
            }
            None
        }
    }
}

/// Records `socket` as the master of `entry`, replacing any older record atomically.
pub fn record(entry: &Path, socket: &Path) {
    let staged = entry.with_extension(format!("new{}", std::process::id()));
    let _ = std::fs::remove_file(&staged);
    let result =
        std::os::unix::fs::symlink(socket, &staged).and_then(|()| std::fs::rename(&staged, entry));
    if let Err(err) = result {
        tracing::debug!(entry = %entry.display(), error = %err, "ssh registry record");
        let _ = std::fs::remove_file(&staged);
    }
}
