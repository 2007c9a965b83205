//! One module per `roll` command: each takes checked settings, does the work, returns rows
//! for `output`, and an exit code.

pub mod check;
pub mod freeze;
pub mod history;
pub mod inventory;
pub mod queue_diff;
pub mod report;
pub mod resume;
pub mod rollback;
pub mod status;
pub mod upgrade;

use crate::error::Error;
use crate::inventory::{Group, Half, Host, Inventory};

/// The groups a command works on: one named group, or all of them in file order.
pub fn select_groups<'a>(
    inventory: &'a Inventory,
    group: Option<&str>,
) -> Result<Vec<&'a Group>, Error> {
    match group {
        None => Ok(inventory.groups.iter().collect()),
        Some(name) => match inventory.group(name) {
            Some(group) => Ok(vec![group]),
            None => Err(Error::Usage(format!(
                "{}: no group named {name:?} (groups: {})",
                inventory.path.display(),
                inventory
                    .groups
                    .iter()
                    .map(|g| g.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        },
    }
}

/// One named group, with the roles a rollback swapped (the state directory's) applied.
pub fn one_group(
    inventory: &Inventory,
    name: &str,
    state_dir: &std::path::Path,
) -> Result<Group, Error> {
    let group = select_groups(inventory, Some(name))?
        .first()
        .copied()
        .cloned()
        .ok_or_else(|| Error::Usage(format!("no group {name}")))?;
    Ok(crate::journal::with_role_overrides(group, state_dir)?)
}

/// The hosts of the selected groups, optionally only one half.
pub fn select_hosts<'a>(groups: &[&'a Group], half: Option<Half>) -> Vec<&'a Host> {
    groups
        .iter()
        .flat_map(|g| g.hosts.iter())
        .filter(|h| half.is_none_or(|wanted| h.half == wanted))
        .collect()
}
