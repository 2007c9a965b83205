//! Plans: pure computations from what was read (broker, hosts, inventory, playbook) to what
//! would change. Nothing here talks to the outside world, so all of it is unit-tested.

pub mod contract;
pub mod journaled;
pub mod ownership;
pub mod queue_diff;
pub mod rollback;
pub mod upgrade;
