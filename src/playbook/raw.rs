//! The playbook file as serde reads it, with positions for messages.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use crate::units::HumanDuration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPlaybook {
    pub release: RawRelease,
    pub commands: RawCommands,
    #[serde(default)]
    pub files: Vec<RawFile>,
    #[serde(default)]
    pub artifacts: Vec<RawArtifact>,
    pub queues: RawQueues,
    #[serde(default)]
    pub verify: Option<RawVerify>,
    #[serde(default)]
    pub rollout: Option<RawRollout>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRollout {
    #[serde(default)]
    pub waves: Vec<Spanned<RawWave>>,
    #[serde(default)]
    pub max_backlog: Option<u64>,
    #[serde(default)]
    pub min_healthy: Option<HumanDuration>,
    #[serde(default)]
    pub gate_timeout: Option<HumanDuration>,
    #[serde(default)]
    pub max_failures: Option<Spanned<toml::Value>>,
    #[serde(default)]
    pub on_failure: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWave {
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
    #[serde(default)]
    pub pause_after: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawVerify {
    #[serde(default)]
    pub client_ports: Option<Spanned<String>>,
    #[serde(default)]
    pub client_version: Option<String>,
    #[serde(default)]
    pub logs: Option<Spanned<String>>,
    #[serde(default)]
    pub log_errors: Vec<String>,
    #[serde(default)]
    pub timeout: Option<HumanDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRelease {
    pub name: Spanned<String>,
    #[serde(default)]
    pub description: Option<String>,
    pub package: Spanned<String>,
    pub version: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCommands {
    pub stop: Spanned<String>,
    pub start: Spanned<String>,
    pub status: Spanned<String>,
    pub upgrade: Spanned<String>,
    pub installed_version: Spanned<String>,
    #[serde(default)]
    pub reset_queue_state: Option<Spanned<String>>,
    #[serde(default)]
    pub gate: Option<Spanned<String>>,
    #[serde(default)]
    pub reinstall: Option<Spanned<String>>,
    #[serde(default)]
    pub upgrade_before_stop: bool,
    #[serde(default)]
    pub timeout: Option<HumanDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFile {
    pub path: Spanned<String>,
    pub template: Spanned<String>,
    #[serde(default)]
    pub mode: Option<Spanned<String>>,
    #[serde(default)]
    pub only_if_present: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawArtifact {
    pub name: Spanned<String>,
    pub source: Spanned<String>,
    pub sha256: Spanned<String>,
    pub destination: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawQueues {
    #[serde(default)]
    pub discover: Option<Spanned<String>>,
    #[serde(default)]
    pub owned: Vec<RawOwned>,
    pub target: RawTarget,
    #[serde(default)]
    pub expected_stop_window: Option<HumanDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOwned {
    pub pattern: Spanned<String>,
    #[serde(default)]
    pub owner: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTarget {
    #[serde(default = "yes")]
    pub durable: bool,
    #[serde(default)]
    pub auto_delete: bool,
    #[serde(default)]
    pub arguments: BTreeMap<Spanned<String>, Spanned<toml::Value>>,
}

fn yes() -> bool {
    true
}
