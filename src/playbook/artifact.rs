//! Artifacts: files a release needs on every host (the package's wheel, say), copied from the
//! controller to each host of the upgraded half before any of them stops, and checked by their
//! SHA-256 on both ends: on the controller when the plan is made, on the host once copied.
//!
//! `[[artifacts]]` gives a `name`, a `source` on the controller (relative to the playbook's
//! directory), its `sha256` (hex) and a `destination` on the host (placeholders as in paths;
//! `~/x` and relative paths are in the SSH user's home). In commands, `{artifact.NAME}` is the
//! destination on the host.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Checker, Playbook, raw};
use crate::source::SourceError;
use crate::template::{self, ARTIFACT, Escape, Vars};

/// A file of the release copied to the hosts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Artifact {
    pub name: String,
    /// The file on the controller, resolved.
    pub source: PathBuf,
    /// Its SHA-256, lowercase hex.
    pub sha256: String,
    /// Where on the host, as a template (`{user}`, `{host}`, ...).
    pub destination: String,
}

/// An artifact whose file on the controller is not the one the playbook names.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error(
        "{}: artifact {name}: cannot read {}: {error}; expected sha256 {expected}, actual: none",
        playbook.display(),
        file.display()
    )]
    Unreadable {
        playbook: PathBuf,
        name: String,
        file: PathBuf,
        expected: String,
        error: std::io::Error,
    },
    #[error(
        "{}: artifact {name}: {} does not have the playbook's checksum: expected sha256 \
         {expected}, actual {actual}",
        playbook.display(),
        file.display()
    )]
    Mismatch {
        playbook: PathBuf,
        name: String,
        file: PathBuf,
        expected: String,
        actual: String,
    },
}

/// The SHA-256 of some bytes, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// The SHA-256 of a file, lowercase hex, read in pieces (a file of any size).
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks that every artifact's file on the controller is there and has the playbook's
/// checksum: before a plan is made, so that a wrong file changes nothing.
pub fn check_sources(playbook: &Playbook) -> Result<(), ArtifactError> {
    for artifact in &playbook.artifacts {
        let actual = sha256_file(&artifact.source).map_err(|error| ArtifactError::Unreadable {
            playbook: playbook.path.clone(),
            name: artifact.name.clone(),
            file: artifact.source.clone(),
            expected: artifact.sha256.clone(),
            error,
        })?;
        if actual != artifact.sha256 {
            return Err(ArtifactError::Mismatch {
                playbook: playbook.path.clone(),
                name: artifact.name.clone(),
                file: artifact.source.clone(),
                expected: artifact.sha256.clone(),
                actual,
            });
        }
    }
    Ok(())
}

impl Playbook {
    /// The names of the artifacts.
    pub fn artifact_names(&self) -> Vec<String> {
        self.artifacts.iter().map(|a| a.name.clone()).collect()
    }

    /// Adds `{artifact.NAME}` for every artifact to a host's variables: its destination with
    /// the host's placeholders filled in. A destination that cannot be filled in (the checks
    /// when the playbook is read rule it out) is left out, so that a command using it fails to
    /// render, naming the host and the command.
    pub(super) fn add_artifact_vars(&self, vars: &mut Vars) {
        let filled: Vec<(String, String)> = self
            .artifacts
            .iter()
            .filter_map(|a| {
                let path = template::render(&a.destination, vars, Escape::None).ok()?;
                Some((format!("{ARTIFACT}{}", a.name), path))
            })
            .collect();
        vars.extend(filled);
    }
}

impl Checker<'_> {
    /// `[[artifacts]]`: names unique and fit for a placeholder, checksums in hex, sources
    /// resolved against the playbook's directory (read when a plan is made, not here),
    /// destinations naming a file.
    pub(super) fn artifacts(&self, raw: &[raw::RawArtifact]) -> Result<Vec<Artifact>, SourceError> {
        let base = self.path.parent().unwrap_or(Path::new("."));
        let mut artifacts: Vec<Artifact> = vec![];
        for item in raw {
            let name = item.name.get_ref().trim();
            let fits = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
            if name.is_empty() || !name.chars().all(fits) {
                return Err(self.error(
                    item.name.span().start,
                    format!(
                        "artifact name {name:?}: use letters, digits, `-` and `_` (it is \
                         written {{artifact.NAME}} in commands)"
                    ),
                ));
            }
            if artifacts.iter().any(|a| a.name == name) {
                return Err(self.error(
                    item.name.span().start,
                    format!("artifact {name} is given twice"),
                ));
            }
            let sha256 = item.sha256.get_ref().trim().to_ascii_lowercase();
            if sha256.len() != 64 || !sha256.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(self.error(
                    item.sha256.span().start,
                    format!(
                        "artifact {name}: sha256 {:?} is not 64 hexadecimal digits (as \
                         `sha256sum` prints it)",
                        item.sha256.get_ref()
                    ),
                ));
            }
            if item.source.get_ref().trim().is_empty() {
                return Err(self.error(item.source.span().start, "must not be empty".into()));
            }
            let destination = self.template(&item.destination)?;
            let trimmed = destination.trim();
            if trimmed.ends_with('/') || matches!(trimmed, "~" | "." | "..") {
                return Err(self.error(
                    item.destination.span().start,
                    format!("artifact {name}: the destination must name a file, not a directory"),
                ));
            }
            artifacts.push(Artifact {
                name: name.to_string(),
                source: base.join(item.source.get_ref()),
                sha256,
                destination,
            });
        }
        Ok(artifacts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_are_hex_sha256() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("f");
        let big = vec![7u8; 200_000];
        std::fs::write(&path, &big).expect("write");
        assert_eq!(sha256_file(&path).expect("read"), sha256_hex(&big));
    }
}
