//! `roll inventory`: the hosts of the inventory, as the tool understood them.

use serde::Serialize;
use tabled::Tabled;

use super::{select_groups, select_hosts};
use crate::error::Error;
use crate::exit;
use crate::inventory::ansible::{self, convert};
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

/// What `roll inventory import` was asked.
#[derive(Debug, Clone)]
pub struct ImportSettings {
    /// The Ansible inventory (INI or YAML).
    pub ansible: std::path::PathBuf,
    pub options: convert::Options,
    /// Where to write the TOML (`None`: stdout).
    pub to: Option<std::path::PathBuf>,
    /// Replace `to` when it exists.
    pub force: bool,
}

/// Runs `roll inventory import`: exit 0 when the TOML written is an inventory roll accepts as
/// it is, 3 when it was written but needs completing (each gap said), 2 when the Ansible
/// inventory was not understood (nothing written).
pub fn import(settings: &ImportSettings) -> Result<u8, Error> {
    let inventory = ansible::load(&settings.ansible)?;
    let imported = convert::convert(&inventory, &settings.options)?;
    match &settings.to {
        None => output::write_stdout(imported.toml.as_bytes())?,
        Some(path) => {
            if path.exists() && !settings.force {
                return Err(Error::Usage(format!(
                    "{} exists: give --force to replace it (nothing was written)",
                    path.display()
                )));
            }
            write_whole(path, imported.toml.as_bytes())?;
        }
    }
    let hosts = imported.toml.matches("{ name = ").count();
    let target = settings
        .to
        .as_ref()
        .map_or("stdout".to_string(), |p| p.display().to_string());
    output::note(&format!(
        "imported {hosts} hosts from {} into {target}",
        settings.ansible.display()
    ));
    for note in &imported.notes {
        output::note(&format!("note: {note}"));
    }
    if imported.incomplete.is_empty() {
        return Ok(exit::SUCCESS);
    }
    output::note("the inventory written needs completing before roll can use it:");
    for gap in &imported.incomplete {
        output::note(&format!("  {gap}"));
    }
    Ok(exit::PARTIAL)
}

/// Writes a file whole or not at all: a file beside it, then renamed over it.
fn write_whole(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path.file_name().map_or_else(
        || std::ffi::OsString::from("inventory"),
        std::ffi::OsStr::to_os_string,
    );
    let mut staged = name;
    staged.push(".roll-new");
    let staged = path.with_file_name(staged);
    std::fs::write(&staged, bytes)?;
    std::fs::rename(&staged, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&staged);
    })
}
