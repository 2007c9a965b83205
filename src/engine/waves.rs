//! Between waves: each host's gate (the playbook's gate command, its queues caught up), the
//! soak that keeps checking them, the pause that ends the run at a wave boundary, and the
//! failures a run goes past ([`Policy::after_failure`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{BROKER, Done, Engine, Failure, Policy, State, StepError, last_line, wait_for};
use crate::plan::rollout::Wave;
use crate::plan::upgrade::{HostPlan, UpgradePlan};
use crate::step::Step;
use crate::units::format_duration;

/// How often a soak checks its hosts.
const SOAK_EVERY: Duration = Duration::from_secs(2);

/// Where a run's waves got to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flow {
    /// Every wave went through.
    Finished,
    /// The run paused after this wave.
    Paused(usize),
}

impl Engine<UpgradePlan> {
    /// The plans of a wave's hosts, in its order.
    pub(super) fn hosts_of(&self, wave: &Wave) -> Vec<HostPlan> {
        wave.hosts
            .iter()
            .filter_map(|name| self.plan.hosts.iter().find(|h| &h.host == name))
            .cloned()
            .collect()
    }

    /// Every step of one host of wave `wave`; a failure the policy lets the run go past is
    /// recorded and the wave goes on.
    pub(super) async fn tolerating(
        self: Arc<Self>,
        wave: usize,
        host: HostPlan,
    ) -> Result<(), Failure> {
        let Err(failed) = self.clone().full(host).await else {
            return Ok(());
        };
        let count = {
            let mut tolerated = self.tolerated.lock().unwrap_or_else(|e| e.into_inner());
            if Policy::after_failure(&self.plan, &failed, wave, tolerated.len()) != Policy::Continue
            {
                return Err(failed);
            }
            tolerated.push(failed.clone());
            tolerated.len()
        };
        let note = format!(
            "failed; the run goes on ({count} of {} failures allowed)",
            self.plan.policy.max_failures
        );
        self.progress(&failed.host, &failed.step, State::Note(note));
        Ok(())
    }

    /// The steps after a wave (soak, pause). A pause done in this process ends the run; one
    /// done before (a resumed run) is passed.
    pub(super) async fn after_wave(&self, wave: &Wave) -> Result<Option<Flow>, Failure> {
        for step in &wave.after {
            let pause = matches!(step, Step::Pause(_));
            let before = self.is_done(BROKER, step);
            self.one(BROKER, step).await?;
            if pause && !before {
                return Ok(Some(Flow::Paused(wave.number)));
            }
        }
        Ok(None)
    }

    /// A host's gate, tried until the gate's deadline.
    pub(super) async fn gate(&self, host: &str) -> Result<Done, StepError> {
        crate::failpoint::reach_gate(host).await;
        let measured = wait_for(self.plan.gates.timeout.0, || self.gate_once(host)).await?;
        Ok(Done::new(measured))
    }

    /// One check of a host's gate: what was measured, or why it does not pass yet.
    async fn gate_once(&self, host: &str) -> Result<Result<String, String>, StepError> {
        let mut measured = vec![];
        if self.plan.gates.command {
            let Some(script) = self.commands_of(host)?.gate.clone() else {
                return Err(StepError::from("the release has no gate command"));
            };
            let output = self.command_any_exit(host, "gate", &script).await?;
            if !output.success() {
                return Ok(Err(format!(
                    "the gate command exited with {}: {}",
                    output
                        .code
                        .map_or("a signal".to_string(), |c| c.to_string()),
                    last_line(&output)
                )));
            }
            let said = output.first_line();
            measured.push(if said.is_empty() {
                "gate command passed".to_string()
            } else {
                format!("gate command passed: {said}")
            });
        }
        if let Some(max) = self.plan.gates.max_backlog {
            for queue in &self.host_plan(host)?.verify_queues {
                let Some(info) = self.management.queue_with_rates(queue).await? else {
                    return Ok(Err(format!("{queue} is not on the broker")));
                };
                let Some(messages) = info.messages else {
                    return Ok(Err(format!(
                        "{queue}: no message count from the broker yet"
                    )));
                };
                let taking = taking(&info);
                if messages > max {
                    return Ok(Err(format!(
                        "{queue}: backlog {messages} messages, over max_backlog {max} ({taking})"
                    )));
                }
                if !info.consumed() {
                    return Ok(Err(format!(
                        "{queue}: not consumed (backlog {messages} messages, {taking})"
                    )));
                }
                measured.push(format!("{queue}: {messages} messages, {taking}"));
            }
        }
        Ok(Ok(measured.join("; ")))
    }

    /// The wave's started hosts keep running and passing their gates for `min_healthy`.
    pub(super) async fn soak(&self, number: usize) -> Result<Done, StepError> {
        let period = self.plan.gates.min_healthy.map(|d| d.0).unwrap_or_default();
        let wave = self
            .plan
            .waves()
            .into_iter()
            .find(|w| w.number == number)
            .ok_or_else(|| StepError::from(format!("the plan has no wave {number}")))?;
        let hosts: Vec<HostPlan> = self
            .hosts_of(&wave)
            .into_iter()
            .filter(|h| h.start && self.host_finished(h))
            .collect();
        let began = Instant::now();
        let mut checks = 0;
        loop {
            for host in &hosts {
                let why = match self.status(&host.host).await? {
                    state if state != "running" => Some(state),
                    _ if self.plan.gates.per_host() => self.gate_once(&host.host).await?.err(),
                    _ => None,
                };
                if let Some(why) = why {
                    return Err(StepError::from(format!(
                        "{}: {why}, {} into the soak of {}",
                        host.host,
                        format_duration(Duration::from_secs(began.elapsed().as_secs())),
                        format_duration(period)
                    )));
                }
            }
            checks += 1;
            let left = period.saturating_sub(began.elapsed());
            if left.is_zero() {
                break;
            }
            tokio::time::sleep(left.min(SOAK_EVERY)).await;
        }
        Ok(Done::new(format!(
            "wave {number} held for {}: {} hosts checked {checks} times",
            format_duration(period),
            hosts.len()
        )))
    }

    /// What a pause step records.
    pub(super) fn pause(&self, number: usize) -> Done {
        let group = &self.plan.group;
        Done::new(format!(
            "paused after wave {number}: `roll resume --group {group}` continues with wave {}, \
             `roll rollback --group {group}` undoes the run",
            number + 1
        ))
    }

    /// True when every step of the host is done.
    pub(super) fn host_finished(&self, host: &HostPlan) -> bool {
        let last = host.started.last().or(host.stopped.last());
        last.is_some_and(|step| self.is_done(&host.host, step))
    }
}

/// Who takes from a queue, as the broker says: consumers and the rate of deliveries and gets.
fn taking(info: &crate::broker::management::QueueInfo) -> String {
    let stats = info.message_stats.clone().unwrap_or_default();
    let rate = |r: Option<crate::broker::management::Rate>| r.map_or(0.0, |r| r.rate);
    format!(
        "{} consumers, {:.1} deliveries and gets/s, {:.1} empty gets/s",
        info.consumers.unwrap_or(0),
        rate(stats.deliver_get_details),
        rate(stats.get_empty_details)
    )
}
