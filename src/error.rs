//! The tool's top-level error: every module's typed error maps into it once, and it decides
//! the exit code.

use crate::broker::BrokerError;
use crate::exit;
use crate::freeze::FreezeError;
use crate::inventory::InventoryError;
use crate::remote::RemoteError;

/// An error that ends a `roll` command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The inventory could not be read or is invalid.
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    /// An Ansible inventory to import was not understood (every problem with its line):
    /// nothing was written.
    #[error("{0}\n(nothing was written)")]
    AnsibleImport(#[from] crate::inventory::ansible::ImportErrors),
    /// The command line asked for something that does not exist or does not fit.
    #[error("{0}")]
    Usage(String),
    /// The broker could not be reached or refused a request.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// A host could not be reached or a command on it failed.
    #[error(transparent)]
    Remote(#[from] RemoteError),
    /// The playbook could not be read or is invalid.
    #[error(transparent)]
    Playbook(#[from] crate::playbook::PlaybookError),
    /// The release cannot be rendered for a host (a placeholder it cannot fill in):
    /// nothing was changed.
    #[error("{0} (nothing was changed)")]
    Render(#[from] crate::plan::rendered::RenderError),
    /// The waves or the failure policy cannot be planned as asked: nothing was changed.
    #[error("{0} (nothing was changed)")]
    Rollout(#[from] crate::plan::rollout::RolloutError),
    /// An artifact's file on the controller is missing or not the playbook's: nothing was
    /// changed.
    #[error("{0} (nothing was changed)")]
    Artifact(#[from] crate::playbook::ArtifactError),
    /// The journal could not be read or written.
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
    /// The group is locked by another run, or the lock could not be taken.
    #[error(transparent)]
    Lock(#[from] crate::lock::LockError),
    /// The group is frozen (`roll upgrade`, `roll freeze`), or its freeze could not be read
    /// or set.
    #[error(transparent)]
    Freeze(#[from] crate::freeze::FreezeError),
    /// A check before the run failed: nothing was changed.
    #[error("preflight: {0} (nothing was changed)")]
    Preflight(String),
    /// Hosts could not be reached, each with its reason.
    #[error("preflight: unreachable hosts: {} (nothing was changed)", list(.0))]
    Unreachable(Vec<RemoteError>),
    /// What the group's state does not allow (an unfinished run, held queues): nothing was
    /// changed, and the message says how to go on.
    #[error("{0}")]
    State(String),
    /// A fault of roll itself (a task that panicked).
    #[error("internal error: {0}")]
    Internal(String),
    /// The operator did not approve the plan.
    #[error("not approved: nothing was changed")]
    NotApproved,
    /// Writing the output failed.
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

impl Error {
    /// The exit code this error ends the process with.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Inventory(_)
            | Error::AnsibleImport(_)
            | Error::Usage(_)
            | Error::Playbook(_)
            | Error::Render(_)
            | Error::Rollout(_)
            | Error::State(_) => exit::USAGE,
            Error::Broker(_)
            | Error::Artifact(_)
            | Error::Unreachable(_)
            | Error::Internal(_)
            | Error::Remote(_)
            | Error::Output(_)
            | Error::Journal(_)
            | Error::Lock(_)
            | Error::Preflight(_)
            | Error::NotApproved => exit::FAILURE,
            Error::Freeze(err) => match err {
                FreezeError::Frozen { .. } | FreezeError::AlreadyFrozen { .. } => exit::USAGE,
                FreezeError::Vanished { .. } | FreezeError::Broker(_) => exit::FAILURE,
            },
        }
    }
}

/// Errors joined with `; `.
fn list(errors: &[RemoteError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl From<crate::plan::upgrade::PlanError> for Error {
    fn from(err: crate::plan::upgrade::PlanError) -> Error {
        match err {
            crate::plan::upgrade::PlanError::Render(e) => Error::Render(e),
            crate::plan::upgrade::PlanError::Rollout(e) => Error::Rollout(e),
            crate::plan::upgrade::PlanError::Queues(e) => Error::Usage(e),
        }
    }
}
