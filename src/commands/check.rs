//! `roll check`: can we reach every host (SSH) and every broker (management API and AMQP)?
//! Everything is checked concurrently; one failure never hides the others.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tabled::Tabled;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::{select_groups, select_hosts};
use crate::broker::management::Management;
use crate::broker::{BrokerError, amqp};
use crate::error::Error;
use crate::exit;
use crate::freeze::{self, Seen};
use crate::inventory::{Group, Host, Inventory};
use crate::output::{self, OutputFormat};
use crate::remote;
use crate::render::live::Tally;

/// Time allowed for the test command once connected.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(15);

/// One checked host or broker.
#[derive(Debug, Clone, Serialize, Tabled)]
pub struct CheckRow {
    /// `host` or `broker`.
    pub kind: String,
    pub name: String,
    pub group: String,
    pub target: String,
    #[tabled(display = "yes_no")]
    pub reachable: bool,
    #[tabled(rename = "time", display = "seconds")]
    pub seconds: f64,
    #[tabled(display = "output::cell")]
    pub reason: Option<String>,
    /// A broker's row: its group's change freeze (`frozen` or `expired`), or `None` (JSON
    /// `null`; always for a host).
    #[tabled(display = "crate::render::freeze_cell")]
    pub freeze: Option<Seen>,
}

fn yes_no(value: &bool) -> String {
    if *value { "yes" } else { "no" }.to_string()
}

fn seconds(value: &f64) -> String {
    format!("{value:.2}s")
}

/// Checks one host: opens the master connection and runs a trivial command through it.
pub async fn check_host(host: &Host) -> CheckRow {
    let started = Instant::now();
    let result = async {
        let connection = remote::connect(host).await?;
        let output = connection
            .run("echo roll-check", "echo roll-check", COMMAND_TIMEOUT)
            .await;
        connection.close().await;
        let output = output?;
        if output.success() && output.stdout.trim() == "roll-check" {
            Ok(())
        } else {
            Err(Error::Usage(format!(
                "test command failed (exit {:?}): {}",
                output.code,
                output.stderr.trim()
            )))
        }
    }
    .await;
    CheckRow {
        kind: "host".into(),
        name: host.name.clone(),
        group: host.group.clone(),
        target: host.ssh.destination(),
        reachable: result.is_ok(),
        seconds: started.elapsed().as_secs_f64(),
        reason: result.err().map(|err| match err {
            // The row already names the host: keep only the reason.
            Error::Remote(remote::RemoteError::Connect { reason, .. }) => reason.to_string(),
            other => other.to_string(),
        }),
        freeze: None,
    }
}

/// Checks one group's broker: management API (login, version, vhost) and an AMQP connection.
pub async fn check_broker(group: &Group) -> CheckRow {
    let started = Instant::now();
    let config = &group.broker;
    // The nodes that answered (a cluster's first ones that did), else every one listed.
    let mut target = format!(
        "{} + {}",
        config.management_urls.join(","),
        config.amqp_urls.join(",")
    );
    let result: Result<Option<Seen>, BrokerError> = async {
        let password = crate::broker::password(config)?;
        let management = Management::new(config, password.clone())?;
        management.overview().await?;
        management.check_vhost().await?;
        let connection = amqp::connect(config, &password, "check").await?;
        amqp::close(&connection).await;
        target = format!("{} + {}", management.url(), amqp::current_url(config));
        let freeze = freeze::read(&management, &group.name).await?;
        Ok(freeze.map(freeze::Freeze::seen_now))
    }
    .await;
    let (result, freeze) = match result {
        Ok(freeze) => (Ok(()), freeze),
        Err(err) => (Err(err), None),
    };
    CheckRow {
        kind: "broker".into(),
        name: config.display(),
        group: group.name.clone(),
        target,
        reachable: result.is_ok(),
        seconds: started.elapsed().as_secs_f64(),
        reason: result.err().map(|err| err.to_string()),
        freeze,
    }
}

/// Checks the hosts and brokers of the chosen groups; rows in inventory order.
pub async fn check(groups: &[&Group]) -> Vec<CheckRow> {
    let hosts: Vec<Host> = select_hosts(groups, None).into_iter().cloned().collect();
    let tally = Arc::new(Tally::new("checking", hosts.len() + groups.len()));
    let limit = Arc::new(Semaphore::new(remote::CONNECT_CONCURRENCY));
    let mut tasks = JoinSet::new();
    for (index, host) in hosts.into_iter().enumerate() {
        let limit = Arc::clone(&limit);
        let tally = Arc::clone(&tally);
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let row = check_host(&host).await;
            progress(&tally, &row);
            (index, row)
        });
    }
    let offset = tasks.len();
    for (index, group) in groups.iter().enumerate() {
        let group = (*group).clone();
        let tally = Arc::clone(&tally);
        tasks.spawn(async move {
            let row = check_broker(&group).await;
            progress(&tally, &row);
            (offset + index, row)
        });
    }
    let mut rows: Vec<(usize, CheckRow)> = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(pair) => rows.push(pair),
            Err(err) => tracing::error!(error = %err, "a check task panicked"),
        }
    }
    rows.sort_by_key(|(index, _)| *index);
    rows.into_iter().map(|(_, row)| row).collect()
}

/// Each finished check as it happens, so that a slow host shows up: a line on stderr in
/// plain mode; on a terminal, a bar that leaves nothing behind (the table says each once).
fn progress(tally: &Tally, row: &CheckRow) {
    let state = if row.reachable { "ok" } else { "FAILED" };
    let line = format!(
        "check {} {}: {state} ({:.2}s)",
        row.kind, row.name, row.seconds
    );
    tally.one(&row.name, &line);
}

/// Runs `roll check`: exit 0 when everything is reachable, 1 otherwise.
pub async fn run(
    inventory: &Inventory,
    group: Option<&str>,
    format: OutputFormat,
) -> Result<u8, Error> {
    let groups = select_groups(inventory, group)?;
    let rows = check(&groups).await;
    let failed = rows.iter().filter(|r| !r.reachable).count();
    let mut summary = format!(
        "{} of {} reachable{}",
        rows.len() - failed,
        rows.len(),
        if failed > 0 {
            format!("; {failed} unreachable")
        } else {
            String::new()
        }
    );
    for freeze in rows.iter().filter_map(|r| r.freeze.as_ref()) {
        summary.push('\n');
        summary.push_str(&crate::render::freeze_line(freeze));
    }
    output::print_rows(&rows, format, Some(&summary))?;
    Ok(if failed == 0 {
        exit::SUCCESS
    } else {
        exit::FAILURE
    })
}
