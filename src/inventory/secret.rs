//! Broker passwords: where they are ([`SecretRef`]) and, once read, the value ([`Secret`]).
//!
//! The inventory never holds a password, only where to find it; it is read when a command needs
//! it, and the value never shows in `Debug`, `Display` or serialized output.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

/// Where a broker password comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SecretRef {
    /// A file holding the password (a trailing newline is ignored).
    File(PathBuf),
    /// An environment variable holding the password.
    Env(String),
}

impl SecretRef {
    /// Reads the password now. Refuses a missing or empty one.
    pub fn read(&self) -> Result<Secret, SecretError> {
        let value = match self {
            SecretRef::File(path) => std::fs::read_to_string(path)
                .map_err(|source| SecretError::File {
                    path: path.clone(),
                    source,
                })?
                .trim_end_matches(['\n', '\r'])
                .to_string(),
            SecretRef::Env(name) => std::env::var(name).map_err(|source| SecretError::Env {
                name: name.clone(),
                source,
            })?,
        };
        if value.is_empty() {
            return Err(SecretError::Empty { from: self.clone() });
        }
        // From now on it is masked in everything roll prints, logs or journals.
        crate::redact::register(&value);
        Ok(Secret(value))
    }
}

impl fmt::Display for SecretRef {
    /// `file /path/to/password` or `env NAME`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::File(path) => write!(f, "file {}", path.display()),
            SecretRef::Env(name) => write!(f, "env {name}"),
        }
    }
}

/// Why a password could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The password file cannot be read.
    #[error("cannot read broker password file {}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The environment variable is unset or not valid Unicode.
    #[error("cannot read broker password from environment variable {name}: {source}")]
    Env {
        /// The variable.
        name: String,
        /// Why.
        source: std::env::VarError,
    },
    /// The file or variable holds an empty password.
    #[error("broker password from {from} is empty")]
    Empty {
        /// Where the password was looked for.
        from: SecretRef,
    },
}

/// A password, read. `Debug` and `Display` print `***`; [`Secret::expose`] gives the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value (for tests and for callers that got a password elsewhere).
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The password itself: pass it on, never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret}"), "***");
        assert_eq!(format!("{secret:?}"), "***");
        assert_eq!(format!("{:?}", Some(secret.clone())), "Some(***)");
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn reads_file_without_trailing_newline() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("password");
        std::fs::write(&path, "s3cret \n\r\n")?;
        let secret = SecretRef::File(path.clone()).read()?;
        assert_eq!(secret.expose(), "s3cret ");
        std::fs::write(&path, "\n")?;
        let err = SecretRef::File(path.clone()).read().err();
        assert!(matches!(err, Some(SecretError::Empty { .. })));
        let err = SecretRef::File(dir.path().join("missing")).read().err();
        assert!(err.is_some_and(|e| e.to_string().contains("cannot read broker password file")));
        Ok(())
    }

    #[test]
    fn reads_env() -> Result<(), SecretError> {
        // PATH is always set in a test run; a made-up name never is.
        let path = SecretRef::Env("PATH".into()).read()?;
        assert!(!path.expose().is_empty());
        let err = SecretRef::Env("ROLL_TEST_SURELY_UNSET_PASSWORD".into())
            .read()
            .err();
        assert!(err.is_some_and(|e| {
            e.to_string()
                .contains("environment variable ROLL_TEST_SURELY_UNSET_PASSWORD")
        }));
        Ok(())
    }

    #[test]
    fn secret_ref_serializes_without_value() -> Result<(), serde_json::Error> {
        let json = serde_json::to_string(&SecretRef::Env("RABBIT_PW".into()))?;
        assert_eq!(json, r#"{"env":"RABBIT_PW"}"#);
        Ok(())
    }
}
