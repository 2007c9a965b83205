//! The release's artifacts on the hosts: copied to every host of the upgraded half before any
//! host stops or any queue is touched, each one checked there by its SHA-256.
//!
//! A host that already has a file with the artifact's checksum at its destination is left as
//! it is. Otherwise the file on the controller is read (and must still have the approved
//! checksum), streamed to the host over its SSH connection into a temporary file beside the
//! destination, checked there, and renamed into place. Then every artifact of the host is
//! checked at its destination. A rollback leaves the artifacts where they are.

use std::sync::Arc;

use super::files::host_path;
use super::{Done, Engine, Failure, Planned, StepError, each_host, record};
use crate::plan::rendered::HostArtifact;
use crate::plan::upgrade::{HostPlan, UpgradePlan};
use crate::playbook::artifact;
use crate::step::Step;

/// Hosts copied to at the same time.
const COPIES: usize = 8;

/// The command printing the SHA-256 of a file on the host, or `missing`.
fn checksum_script(destination: &str) -> String {
    let at = host_path(destination);
    format!("if [ -f {at} ]; then sha256sum < {at} | cut -c1-64; else echo missing; fi")
}

/// Writes standard input to a temporary file beside the destination, checks it, renames it
/// into place. Exit 3 (printing the checksum found) when the copy is not the artifact.
fn copy_script(destination: &str, sha256: &str) -> String {
    let at = host_path(destination);
    let tmp = host_path(&format!("{destination}.roll-new"));
    format!(
        "set -e\nmkdir -p \"$(dirname {at})\"\ncat > {tmp}\n\
         sum=$(sha256sum < {tmp} | cut -c1-64)\n\
         if [ \"$sum\" != {sha256} ]; then rm -f {tmp}; echo \"$sum\"; exit 3; fi\n\
         mv -f {tmp} {at}\n"
    )
}

impl Engine<UpgradePlan> {
    /// Copies the artifacts to every host of the half (at most [`COPIES`] at a time), before
    /// any step that changes a service. A failure stops the run there: nothing was changed.
    pub(super) async fn copy_artifacts(self: Arc<Self>) -> Result<(), Failure> {
        let hosts: Vec<HostPlan> = self
            .plan
            .hosts
            .iter()
            .filter(|h| !h.artifacts.is_empty())
            .cloned()
            .collect();
        let copied = each_host(&self, hosts, COPIES, |engine, host| async move {
            engine.steps(&host.host, &host.artifacts).await
        })
        .await;
        copied.map_err(|mut failed| {
            if !self.changed_anything() {
                failed
                    .detail
                    .push_str("; nothing was changed: no host was stopped and no queue touched");
            }
            failed
        })
    }

    /// True when the run (or the one it resumes) began a step other than copying artifacts.
    fn changed_anything(&self) -> bool {
        self.begun
            .lock()
            .map(|set| set.iter().any(|(_, step)| *step != Step::Artifacts))
            .unwrap_or(true)
    }
}

impl<P: Planned> Engine<P> {
    /// The artifacts step of a host: each artifact copied unless already there, then all
    /// checked at their destinations.
    pub(super) async fn artifacts_to(&self, name: &str) -> Result<Done, StepError> {
        let artifacts = self.commands_of(name)?.artifacts.clone();
        let mut said = vec![];
        for artifact in &artifacts {
            let found = self.checksum_on(name, &artifact.destination).await?;
            if found == artifact.sha256 {
                said.push(format!("{}: already there", artifact.name));
                continue;
            }
            let bytes = self.approved_bytes(artifact).await?;
            self.copy_to(name, artifact, &bytes).await?;
            said.push(format!(
                "{}: copied ({} bytes) to {}",
                artifact.name,
                bytes.len(),
                artifact.destination
            ));
        }
        for artifact in &artifacts {
            let found = self.checksum_on(name, &artifact.destination).await?;
            if found == "missing" {
                return Err(StepError::from(format!(
                    "artifact {} is missing at {} after the copy",
                    artifact.name, artifact.destination
                )));
            }
            if found != artifact.sha256 {
                return Err(StepError::from(format!(
                    "artifact {} at {}: sha256 on the host is {found}, expected {}",
                    artifact.name, artifact.destination, artifact.sha256
                )));
            }
        }
        Ok(Done::new(format!("{}; checked", said.join(", "))))
    }

    /// The SHA-256 of a file on a host, or `missing`.
    async fn checksum_on(&self, name: &str, destination: &str) -> Result<String, StepError> {
        let output = self
            .command(name, "artifact checksum", &checksum_script(destination))
            .await?;
        Ok(output.first_line())
    }

    /// The artifact's file on the controller, which must still be the approved one.
    async fn approved_bytes(&self, artifact: &HostArtifact) -> Result<Vec<u8>, StepError> {
        let bytes = tokio::fs::read(&artifact.source).await.map_err(|e| {
            StepError::from(format!(
                "artifact {}: cannot read {} on the controller: {e}",
                artifact.name,
                artifact.source.display()
            ))
        })?;
        let actual = artifact::sha256_hex(&bytes);
        if actual != artifact.sha256 {
            return Err(StepError::from(format!(
                "artifact {}: {} on the controller is not the approved file any more: sha256 \
                 {actual}, approved {}",
                artifact.name,
                artifact.source.display(),
                artifact.sha256
            )));
        }
        Ok(bytes)
    }

    /// Streams the artifact to a temporary file on the host, checks it and renames it into
    /// place.
    async fn copy_to(
        &self,
        name: &str,
        artifact: &HostArtifact,
        bytes: &[u8],
    ) -> Result<(), StepError> {
        let label = "copy artifact";
        let output = self
            .connection(name)?
            .run_with_input(
                label,
                &copy_script(&artifact.destination, &artifact.sha256),
                Some(bytes),
                self.plan.rendered().command_timeout,
            )
            .await?;
        if output.success() {
            return Ok(());
        }
        let detail = if output.code == Some(3) {
            format!(
                "artifact {}: the copy at {} has sha256 {}, expected {}",
                artifact.name,
                artifact.destination,
                output.first_line(),
                artifact.sha256
            )
        } else {
            format!(
                "artifact {}: cannot write {}",
                artifact.name, artifact.destination
            )
        };
        Err(StepError {
            output: Some(record(label, &output)),
            ..StepError::from(detail)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_quote_the_destination_and_work_from_the_home() {
        let check = checksum_script("~/.cache/roll/a b.whl");
        assert!(check.contains("[ -f '.cache/roll/a b.whl' ]"), "{check}");
        let copy = copy_script("~/x/y.whl", &"a".repeat(64));
        assert!(copy.contains("cat > x/y.whl.roll-new"), "{copy}");
        assert!(copy.contains("mv -f x/y.whl.roll-new x/y.whl"), "{copy}");
        assert!(copy.contains(&format!("!= {} ]", "a".repeat(64))), "{copy}");
    }
}
