//! The plan a run's journal holds: journaled at its approval (in its `started` entry, as
//! JSON, because the journal sits below the plans), read back here and nowhere else.

use serde_json::Value;

use super::rollback::RollbackPlan;
use super::upgrade::UpgradePlan;
use crate::journal::{Entry, Event, RunKind};

/// The plan of a run, of either kind.
#[derive(Debug, Clone, PartialEq)]
pub enum RunPlan {
    Upgrade(Box<UpgradePlan>),
    Rollback(Box<RollbackPlan>),
}

/// Why a journal's plan cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum JournaledError {
    #[error("the journal records no start of a run")]
    NoStart,
    #[error("the journaled {kind} plan cannot be read ({source})")]
    Unreadable {
        kind: RunKind,
        source: serde_json::Error,
    },
}

impl RunPlan {
    pub fn kind(&self) -> RunKind {
        match self {
            RunPlan::Upgrade(_) => RunKind::Upgrade,
            RunPlan::Rollback(_) => RunKind::Rollback,
        }
    }

    /// The plan as the journal keeps it.
    pub fn to_value(&self) -> Result<Value, serde_json::Error> {
        match self {
            RunPlan::Upgrade(plan) => serde_json::to_value(plan),
            RunPlan::Rollback(plan) => serde_json::to_value(plan),
        }
    }
}

/// The plan of the run whose entries these are.
pub fn plan(entries: &[Entry]) -> Result<RunPlan, JournaledError> {
    let (kind, value) = entries
        .iter()
        .find_map(|e| match &e.event {
            Event::Started { kind, plan, .. } => Some((*kind, plan)),
            _ => None,
        })
        .ok_or(JournaledError::NoStart)?;
    let unreadable = |source| JournaledError::Unreadable { kind, source };
    Ok(match kind {
        RunKind::Upgrade => {
            RunPlan::Upgrade(serde_json::from_value(value.clone()).map_err(unreadable)?)
        }
        RunKind::Rollback => {
            RunPlan::Rollback(serde_json::from_value(value.clone()).map_err(unreadable)?)
        }
    })
}

/// The upgrade plan of the run whose entries these are; `None` for a rollback's.
pub fn upgrade(entries: &[Entry]) -> Result<Option<UpgradePlan>, JournaledError> {
    Ok(match plan(entries)? {
        RunPlan::Upgrade(plan) => Some(*plan),
        RunPlan::Rollback(_) => None,
    })
}
