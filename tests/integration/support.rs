//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The lab's state directory, as made by `tests/lab/up`.
pub const LAB_STATE: &str = "/var/lib/roll-lab";

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A path under the repository root.
pub fn repo(path: &str) -> PathBuf {
    root().join(path)
}

/// Fails with a clear message when the lab is not up.
pub fn require_lab() {
    let password = Path::new(LAB_STATE).join("broker-password");
    assert!(
        password.exists(),
        "the lab is not up ({} is missing): run tests/lab/up, or run the suite with tests/run",
        password.display()
    );
}

/// What a run of `roll` printed and how it ended.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(output: Output) -> Run {
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// Runs the `roll` binary with arguments, from the repository root, without ROLL_INVENTORY.
pub fn roll(args: &[&str]) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_roll"))
        .args(args)
        .current_dir(root())
        .env_remove("ROLL_INVENTORY")
        .output()
        .expect("the roll binary runs");
    output.into()
}

/// Parses stdout as JSON, failing with the whole run in the message.
pub fn json(run: &Run) -> serde_json::Value {
    serde_json::from_str(&run.stdout)
        .unwrap_or_else(|err| panic!("stdout is not JSON ({err}): {run:#?}"))
}
