//! The release as execution reads it: every command and file of every host of the group with
//! its placeholders filled in, the target queue settings and the rules of verification.
//! Rendered with the plan, shown by it, journaled with it: the engine reads this and never
//! the playbook, so a resumed run runs what was approved, byte for byte.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::broker::equivalence::QueueSettings;
use crate::inventory::Group;
use crate::playbook::Playbook;
use crate::template::{self, Escape};

/// The release for every host of the group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rendered {
    /// How long one command on a host may take.
    #[serde(with = "crate::units::duration")]
    pub command_timeout: Duration,
    /// The settings recreated queues get.
    pub target: QueueSettings,
    pub verify: Verification,
    /// By host.
    pub hosts: BTreeMap<String, HostRelease>,
}

/// How a started host is verified, besides its commands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verification {
    /// The `product_version` the new release shows on the broker.
    pub client_version: Option<String>,
    /// Patterns (extended regular expressions) that fail the verification when logged.
    pub log_errors: Vec<String>,
    #[serde(with = "crate::units::duration")]
    pub timeout: Duration,
}

/// One host's commands and files, ready to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostRelease {
    pub stop: String,
    pub start: String,
    pub status: String,
    pub upgrade: String,
    pub installed_version: String,
    pub reset_queue_state: Option<String>,
    /// The wave's gate on this host: exit 0 passes.
    #[serde(default)]
    pub gate: Option<String>,
    /// Prints the local ends of the service's broker connections.
    pub client_ports: Option<String>,
    /// A shell glob of the service's log files.
    pub logs: Option<String>,
    pub files: Vec<HostFile>,
    /// The release's artifacts, copied before anything stops.
    #[serde(default)]
    pub artifacts: Vec<HostArtifact>,
}

/// An artifact of the release for one host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostArtifact {
    pub name: String,
    /// The file on the controller.
    pub source: std::path::PathBuf,
    /// Its SHA-256, lowercase hex: the copy on the host must have it.
    pub sha256: String,
    /// Where on the host (`~/x` and relative paths: in the SSH user's home).
    pub destination: String,
}

/// A file of the release on one host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostFile {
    /// Where on the host (`~/x` and relative paths: in the SSH user's home).
    pub path: String,
    pub content: String,
    pub mode: Option<u32>,
    /// Only replaced where it already exists.
    pub only_if_present: bool,
}

/// A placeholder that cannot be filled in for a host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{playbook}: {what} for host {host}: {message}")]
pub struct RenderError {
    pub playbook: String,
    pub host: String,
    pub what: String,
    pub message: String,
}

/// Renders the release for every host of the group.
pub fn render(playbook: &Playbook, group: &Group) -> Result<Rendered, RenderError> {
    let mut hosts = BTreeMap::new();
    for host in &group.hosts {
        hosts.insert(
            host.name.clone(),
            host_release(playbook, group, &host.name, None)?,
        );
    }
    Ok(Rendered {
        command_timeout: playbook.commands.timeout,
        target: playbook.queues.target.clone(),
        verify: Verification {
            client_version: playbook.verify.client_version.clone(),
            log_errors: playbook.verify.log_errors.clone(),
            timeout: playbook.verify.timeout,
        },
        hosts,
    })
}

/// The command that puts another version on a host: what a rollback reinstalls (the
/// playbook's `reinstall`, else its upgrade command, with that version).
pub fn reinstall(
    playbook: &Playbook,
    group: &Group,
    host: &str,
    version: &str,
) -> Result<String, RenderError> {
    let release = host_release(playbook, group, host, Some(version))?;
    let Some(command) = &playbook.commands.reinstall else {
        return Ok(release.upgrade);
    };
    let vars = host_vars(playbook, group, host, Some(version))?;
    template::render(command, &vars, Escape::Shell)
        .map_err(|message| render_error(playbook, host, "reinstall", message))
}

fn render_error(playbook: &Playbook, host: &str, what: &str, message: String) -> RenderError {
    RenderError {
        playbook: playbook.path.display().to_string(),
        host: host.to_string(),
        what: what.to_string(),
        message,
    }
}

/// A host's variables (`version`: instead of the playbook's).
fn host_vars(
    playbook: &Playbook,
    group: &Group,
    name: &str,
    version: Option<&str>,
) -> Result<crate::template::Vars, RenderError> {
    let host =
        group.hosts.iter().find(|h| h.name == name).ok_or_else(|| {
            render_error(playbook, name, "the host", "is not in the group".into())
        })?;
    let mut vars = playbook.vars(host, &group.broker);
    if let Some(version) = version {
        vars.insert("version".into(), version.to_string());
    }
    Ok(vars)
}

/// One host's release (`version`: instead of the playbook's).
fn host_release(
    playbook: &Playbook,
    group: &Group,
    name: &str,
    version: Option<&str>,
) -> Result<HostRelease, RenderError> {
    let fail = |what: &str, message: String| render_error(playbook, name, what, message);
    let vars = host_vars(playbook, group, name, version)?;
    let shell = |what: &str, text: &str| {
        template::render(text, &vars, Escape::Shell).map_err(|m| fail(what, m))
    };
    let plain = |what: &str, text: &str| {
        template::render(text, &vars, Escape::None).map_err(|m| fail(what, m))
    };
    let optional =
        |what: &str, text: &Option<String>| text.as_deref().map(|t| shell(what, t)).transpose();
    let c = &playbook.commands;
    let mut files = vec![];
    for file in &playbook.files {
        files.push(HostFile {
            path: plain("a file's path", &file.path)?,
            content: plain(&format!("file {}", file.template.display()), &file.content)?,
            mode: file.mode,
            only_if_present: file.only_if_present,
        });
    }
    let mut artifacts = vec![];
    for artifact in &playbook.artifacts {
        artifacts.push(HostArtifact {
            name: artifact.name.clone(),
            source: artifact.source.clone(),
            sha256: artifact.sha256.clone(),
            destination: plain(
                &format!("artifact {}'s destination", artifact.name),
                &artifact.destination,
            )?,
        });
    }
    Ok(HostRelease {
        stop: shell("stop", &c.stop)?,
        start: shell("start", &c.start)?,
        status: shell("status", &c.status)?,
        upgrade: shell("upgrade", &c.upgrade)?,
        installed_version: shell("installed_version", &c.installed_version)?,
        reset_queue_state: optional("reset_queue_state", &c.reset_queue_state)?,
        gate: optional("gate", &c.gate)?,
        client_ports: optional("verify.client_ports", &playbook.verify.client_ports)?,
        logs: optional("verify.logs", &playbook.verify.logs)?,
        files,
        artifacts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::fixtures::fixture;

    #[test]
    fn every_host_gets_its_commands_and_files_filled_in() {
        let (inventory, playbook) = fixture();
        let ops = inventory.group("ops").unwrap();
        let rendered = render(&playbook, ops).unwrap();
        assert_eq!(rendered.hosts.len(), ops.hosts.len());
        let px5 = &rendered.hosts["px5"];
        assert!(px5.upgrade.contains("3.3.1"), "{}", px5.upgrade);
        assert!(!px5.stop.contains('{'), "{}", px5.stop);
        assert_eq!(px5.files.len(), playbook.files.len());
        assert!(px5.files.iter().all(|f| !f.path.contains('{')));
        let back = reinstall(&playbook, ops, "px5", "3.2.0.post1").unwrap();
        assert!(
            back.contains("3.2.0.post1") && !back.contains("3.3.1"),
            "{back}"
        );
    }

    #[test]
    fn a_placeholder_that_cannot_be_filled_names_the_host_and_the_command() {
        let (inventory, mut playbook) = fixture();
        let ops = inventory.group("ops").unwrap();
        playbook.commands.stop = "stop {nonsense}".into();
        let err = render(&playbook, ops).unwrap_err();
        assert_eq!(err.what, "stop");
        assert_eq!(err.host, ops.hosts[0].name);
        assert!(err.to_string().contains("nonsense"), "{err}");
    }

    #[test]
    fn a_host_variable_fills_var_placeholders_and_a_host_without_it_is_named() {
        let (inventory, mut playbook) = fixture();
        let mut ops = inventory.group("ops").unwrap().clone();
        for (i, host) in ops.hosts.iter_mut().enumerate() {
            host.vars
                .insert("broker_port".into(), format!("568{}", i % 3 + 1));
        }
        playbook.commands.start = "start --port {var.broker_port}".into();
        let rendered = render(&playbook, &ops).unwrap();
        let first = &ops.hosts[0].name;
        assert_eq!(rendered.hosts[first].start, "start --port 5681");
        assert_eq!(
            rendered.hosts[&ops.hosts[1].name].start,
            "start --port 5682"
        );
        // One host lacks it: the plan fails, naming that host, the command and the variable.
        let last = ops.hosts.last_mut().unwrap();
        last.vars.remove("broker_port");
        let last = last.name.clone();
        let err = render(&playbook, &ops).unwrap_err();
        assert_eq!(
            (err.host.as_str(), err.what.as_str()),
            (last.as_str(), "start")
        );
        assert!(
            err.to_string()
                .contains("no inventory variable `broker_port`"),
            "{err}"
        );
    }

    #[test]
    fn artifacts_are_rendered_per_host_and_named_in_commands() {
        let (inventory, mut playbook) = fixture();
        let ops = inventory.group("ops").unwrap();
        playbook.artifacts[0].destination = "~/a/{user}/sr3.whl".into();
        playbook.commands.start = "run {artifact.sr3}".into();
        let rendered = render(&playbook, ops).unwrap();
        let px5 = &rendered.hosts["px5"];
        let user = ops.hosts.iter().find(|h| h.name == "px5").unwrap();
        let user = user.ssh.user.clone().unwrap_or_else(|| "px5".into());
        assert_eq!(px5.artifacts.len(), 1);
        assert_eq!(px5.artifacts[0].destination, format!("~/a/{user}/sr3.whl"));
        assert_eq!(px5.artifacts[0].sha256, playbook.artifacts[0].sha256);
        assert_eq!(px5.start, format!("run \"$HOME\"/a/{user}/sr3.whl"));
        assert!(
            px5.upgrade
                .ends_with(&format!("\"$HOME\"/a/{user}/sr3.whl")),
            "{}",
            px5.upgrade
        );
        // A rollback reinstalls the previous version with the reinstall command.
        let back = reinstall(&playbook, ops, "px5", "3.2.0.post1").unwrap();
        assert!(back.ends_with("metpx-sr3==3.2.0.post1"), "{back}");
        playbook.commands.reinstall = None;
        let back = reinstall(&playbook, ops, "px5", "3.2.0.post1").unwrap();
        assert_eq!(back, px5.upgrade, "without it, the upgrade command");
        // An artifact placeholder nothing fills in names the host and the command.
        playbook.commands.stop = "stop {artifact.nope}".into();
        let err = render(&playbook, ops).unwrap_err();
        assert_eq!(err.what, "stop");
        assert!(err.to_string().contains("{artifact.nope}"), "{err}");
    }
}
