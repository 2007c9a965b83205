//! Verification of a started host: running, on the target version, its queues as the
//! release wants them, the new version connected on the broker, and no error in its logs.

use std::collections::BTreeSet;

use super::{Done, Engine, Planned, StepError, record, wait_for};
use crate::broker::equivalence::{QueueSettings, differences};
use crate::broker::management::ConnectionInfo;
use crate::journal::Backup;
use crate::plan::upgrade::{HostPlan, UpgradePlan};
use crate::remote::quote;

impl<P: Planned> Engine<P> {
    /// `SIZE PATH` lines for the host's log files, taken before a start.
    pub(super) async fn log_sizes(&self, name: &str) -> Result<String, StepError> {
        let Some(glob) = &self.commands_of(name)?.logs else {
            return Ok(String::new());
        };
        let script = format!(
            "for f in {glob}; do [ -f \"$f\" ] && printf '%s %s\\n' \"$(wc -c < \"$f\")\" \"$f\"; done; true"
        );
        let output = self
            .connection(name)?
            .run("log sizes", &script, self.plan.rendered().command_timeout)
            .await?;
        Ok(output.stdout)
    }

    /// Lines matching the release's error patterns written to the logs since the start.
    async fn log_errors(&self, name: &str) -> Result<Vec<String>, StepError> {
        let (Some(glob), false) = (
            &self.commands_of(name)?.logs,
            self.plan.rendered().verify.log_errors.is_empty(),
        ) else {
            return Ok(vec![]);
        };
        let offsets = self
            .log_offsets
            .lock()
            .await
            .get(name)
            .cloned()
            .unwrap_or_default();
        let pattern = quote(&self.plan.rendered().verify.log_errors.join("|"));
        // Files as they were before the start, with their sizes; a file not listed is new.
        let mut script = String::from("sizes=$(cat <<'ROLL_SIZES'\n");
        script.push_str(&offsets);
        if !offsets.ends_with('\n') {
            script.push('\n');
        }
        script.push_str("ROLL_SIZES\n)\n");
        script.push_str(&format!(
            "for f in {glob}; do [ -f \"$f\" ] || continue; \
             off=$(printf '%s\\n' \"$sizes\" | awk -v f=\"$f\" '$2 == f {{ print $1 }}'); \
             tail -c +$(( ${{off:-0}} + 1 )) \"$f\" | grep -E -m 3 {pattern} | sed \"s|^|$f: |\"; \
             done; true"
        ));
        let output = self
            .connection(name)?
            .run("log errors", &script, self.plan.rendered().command_timeout)
            .await?;
        Ok(output
            .stdout
            .lines()
            .map(str::to_string)
            .filter(|l| !l.trim().is_empty())
            .collect())
    }

    /// Starts a host, its log sizes noted first (in the step's detail, as `start` does) so
    /// that its verification reads only what it logs from then on.
    pub(super) async fn start_noting_logs(&self, name: &str) -> Result<Done, StepError> {
        let offsets = self.log_sizes(name).await?;
        let output = self
            .command(name, "start", &self.commands_of(name)?.start)
            .await?;
        self.log_offsets
            .lock()
            .await
            .insert(name.to_string(), offsets.clone());
        Ok(Done {
            detail: offsets,
            output: Some(record("start", &output)),
        })
    }

    /// Fails (at once, not waiting) when the host's logs show an error since its start.
    pub(super) async fn fail_on_log_errors(&self, name: &str) -> Result<(), StepError> {
        let errors = self.log_errors(name).await?;
        if errors.is_empty() {
            return Ok(());
        }
        Err(StepError {
            cause: super::Cause::Check,
            detail: format!("errors in the log since the start: {}", errors[0]),
            output: Some(errors.join("\n")),
        })
    }

    /// The queue exists with the target settings and (when backed up) its bindings.
    pub(super) async fn check_queue(&self, name: &str) -> Result<Result<(), String>, StepError> {
        let Some(q) = self.management.queue(name).await? else {
            return Ok(Err(format!("queue {name} is not on the broker")));
        };
        let current = QueueSettings::new(q.durable, q.auto_delete, q.arguments);
        let diffs = differences(&current, &self.plan.rendered().target);
        if !diffs.is_empty() {
            let text: Vec<String> = diffs.iter().map(|d| d.to_string()).collect();
            return Ok(Err(format!("queue {name} differs: {}", text.join(", "))));
        }
        if let Some(Backup::Queue { bindings, .. }) = self.queue_backup(name).await {
            let now: BTreeSet<(String, String)> = self
                .management
                .bindings_of(name)
                .await?
                .into_iter()
                .map(|b| (b.source, b.routing_key))
                .collect();
            for b in &bindings {
                if !now.contains(&(b.source.clone(), b.routing_key.clone())) {
                    return Ok(Err(format!(
                        "queue {name} lacks its binding to {} ({})",
                        b.source, b.routing_key
                    )));
                }
            }
        }
        Ok(Ok(()))
    }

    /// The host's broker connections (found by their local address and port, which the
    /// broker shows as peer host and port) show the new version.
    async fn check_client(&self, name: &str) -> Result<Result<(), String>, StepError> {
        match &self.plan.rendered().verify.client_version {
            Some(expected) => self.check_connected(name, Some(expected)).await,
            None => Ok(Ok(())),
        }
    }

    /// The host's service is connected to the broker (when the release says how to find its
    /// connections), showing `version` if given. Its queues are declared by then, so what the
    /// broker refused shows in its log.
    pub(super) async fn check_connected(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<Result<(), String>, StepError> {
        let Some(ports) = &self.commands_of(name)?.client_ports else {
            return Ok(Ok(()));
        };
        let output = self.command(name, "client ports", ports).await?;
        let ends: BTreeSet<(Option<String>, u16)> =
            output.stdout.lines().filter_map(local_end).collect();
        if ends.is_empty() {
            return Ok(Err(format!("no broker connection from {name} yet")));
        }
        let connections = self.management.connections().await?;
        let ours = matching(&connections, &ends);
        if ours.is_empty() {
            return Ok(Err(format!(
                "the broker does not show {name}'s connections yet"
            )));
        }
        if let Some(expected) = version
            && let Some(other) = ours.iter().find(|c| c.product().1 != expected)
        {
            return Ok(Err(format!(
                "a connection of {name} shows version {:?}, not {expected:?}",
                other.product().1
            )));
        }
        Ok(Ok(()))
    }
}

impl Engine<UpgradePlan> {
    /// Waits until the host passes every check, or fails at once on an error in its logs.
    pub(super) async fn verify_host(&self, host: &HostPlan) -> Result<Done, StepError> {
        let name = host.host.as_str();
        wait_for(self.plan.rendered().verify.timeout, || async {
            self.fail_on_log_errors(name).await?;
            // Both in one session; the version counts only once the service runs.
            let (state, version) = self.status_and_version(name).await?;
            let state = state?;
            if state != "running" {
                return Ok(Err(format!("status says {state:?}")));
            }
            let version = version?;
            if version != self.plan.version {
                return Ok(Err(format!(
                    "installed version is {version:?}, not {:?}",
                    self.plan.version
                )));
            }
            for queue in &host.verify_queues {
                if let Err(why) = self.check_queue(queue).await? {
                    return Ok(Err(why));
                }
            }
            if let Err(why) = self.check_client(name).await? {
                return Ok(Err(why));
            }
            Ok(Ok(()))
        })
        .await?;
        Ok(Done::new(format!(
            "running {} {}, {} queues as targeted{}",
            self.plan.package,
            self.plan.version,
            host.verify_queues.len(),
            match &self.plan.rendered().verify.client_version {
                Some(v) => format!(", connected as {v}"),
                None => String::new(),
            }
        )))
    }
}

/// The broker's connections that come from these local ends (peer host and port; a bare
/// port matches any host).
fn matching<'a>(
    connections: &'a [ConnectionInfo],
    ends: &BTreeSet<(Option<String>, u16)>,
) -> Vec<&'a ConnectionInfo> {
    connections
        .iter()
        .filter(|c| {
            ends.contains(&(Some(c.peer_host.clone()), c.peer_port))
                || ends.contains(&(None, c.peer_port))
        })
        .collect()
}

/// A line of the `client_ports` command: `ADDRESS:PORT` (IPv6 in brackets), or a bare port
/// (older playbooks: matched by port alone, which two machines may share).
fn local_end(line: &str) -> Option<(Option<String>, u16)> {
    let line = line.trim();
    if let Ok(port) = line.parse() {
        return Some((None, port));
    }
    let (host, port) = line.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = host.strip_prefix("::ffff:").unwrap_or(host);
    Some((Some(host.to_string()), port.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connection(peer_host: &str, peer_port: u16, version: &str) -> ConnectionInfo {
        let mut client_properties = serde_json::Map::new();
        client_properties.insert("product_version".into(), version.into());
        ConnectionInfo {
            vhost: "ops".into(),
            user: "u".into(),
            peer_host: peer_host.into(),
            peer_port,
            client_properties,
        }
    }

    /// Two machines with the same ephemeral port: only the host's own connection counts.
    #[test]
    fn connections_are_matched_by_peer_host_and_port() {
        let all = [
            connection("10.0.0.5", 41000, "3.03.01"),
            connection("10.0.0.6", 41000, "3.02.00post1"),
        ];
        let ends: BTreeSet<_> = ["10.0.0.6:41000"]
            .into_iter()
            .filter_map(local_end)
            .collect();
        let ours = matching(&all, &ends);
        assert_eq!(ours.len(), 1);
        assert_eq!(ours[0].product().1, "3.02.00post1");
    }

    #[test]
    fn local_ends_carry_the_address() {
        assert_eq!(
            local_end("127.0.0.1:33220"),
            Some((Some("127.0.0.1".into()), 33220))
        );
        assert_eq!(
            local_end("[2001:db8::5]:5999"),
            Some((Some("2001:db8::5".into()), 5999))
        );
        assert_eq!(
            local_end("[::ffff:10.0.0.5]:41000"),
            Some((Some("10.0.0.5".into()), 41000))
        );
        assert_eq!(local_end("4242"), Some((None, 4242)));
        assert_eq!(local_end("nonsense"), None);
    }
}
