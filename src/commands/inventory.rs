//! `roll inventory`: the hosts of the inventory, as the tool understood them.

use serde::Serialize;
use tabled::Tabled;

use super::{select_groups, select_hosts};
use crate::error::Error;
use crate::exit;
use crate::inventory::{Half, Inventory};
use crate::output::{self, OutputFormat};

/// One host as `roll inventory` shows it.
#[derive(Debug, Clone, Serialize, Tabled)]
pub struct HostRow {
    pub host: String,
    pub group: String,
    pub half: String,
    #[tabled(display = "output::cell")]
    pub role: Option<String>,
    #[tabled(display = "output::cell")]
    pub pair: Option<String>,
    pub ssh: String,
    pub broker: String,
}

/// The rows for the chosen group and half.
pub fn rows(
    inventory: &Inventory,
    group: Option<&str>,
    half: Option<Half>,
) -> Result<Vec<HostRow>, Error> {
    let groups = select_groups(inventory, group)?;
    let rows = select_hosts(&groups, half)
        .into_iter()
        .map(|host| {
            let broker = inventory
                .group(&host.group)
                .map(|g| g.broker.display())
                .unwrap_or_default();
            HostRow {
                host: host.name.clone(),
                group: host.group.clone(),
                half: host.half.to_string(),
                role: host.role.map(|r| r.to_string()),
                pair: host.pair.clone(),
                ssh: host.ssh.destination(),
                broker,
            }
        })
        .collect();
    Ok(rows)
}

/// Runs `roll inventory`.
pub fn run(
    inventory: &Inventory,
    group: Option<&str>,
    half: Option<Half>,
    format: OutputFormat,
) -> Result<u8, Error> {
    let rows = rows(inventory, group, half)?;
    let summary = format!("{} hosts", rows.len());
    output::print_rows(&rows, format, Some(&summary))?;
    Ok(exit::SUCCESS)
}
