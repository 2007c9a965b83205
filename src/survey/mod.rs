//! The survey of a group as it is now, read-only: what the broker holds (queues, bindings,
//! clients), which queues each host uses (the playbook's discovery command, over SSH), what
//! the broker answers a declare of each owned queue (the probe), and what each host's status
//! and version commands print. The commands turn it into rows and plans; nothing here
//! changes anything.

mod hosts;
mod queues;

pub use hosts::{HostState, ProbeError, Probed, host_states, states_and_versions};
pub use queues::{ClientCount, QueueSurvey, Reading, queues};
