//! Executing a rollback: service first (stop the upgraded hosts, restore the queues, start
//! the old release), then repairs (reinstall, restore files, start again).

use std::sync::Arc;

use serde::Serialize;

use super::{BROKER, Done, Engine, Failure, StepError, each_host, record, wait_for};
use crate::journal::{Event, RunStatus};
use crate::plan::rollback::{Repair, RollbackPlan, Swap};
use crate::step::Step;

/// The outcome of a rollback.
#[derive(Debug, Clone, Serialize)]
pub struct RollbackOutcome {
    pub status: RunStatus,
    pub failure: Option<Failure>,
    /// From the rollback's first stop to the first old-release host running again.
    pub failover_seconds: Option<f64>,
    /// What happened to the messages of each queue restored.
    pub queues: Vec<crate::journal::QueueAccount>,
    pub elapsed_seconds: f64,
    pub journal: String,
}

impl Engine<RollbackPlan> {
    /// Executes a rollback plan.
    pub async fn run_rollback(
        self: Arc<Self>,
        on_swap: impl Fn(&crate::plan::rollback::Swap) -> Result<(), String>,
    ) -> RollbackOutcome {
        let plan = self.plan.clone();
        let result = self.clone().rollback_steps(&plan, &on_swap).await;
        let timing = self
            .timing(
                &[Step::RollbackStop],
                &[Step::FailoverStart, Step::StartAgain],
            )
            .await;
        let failover = timing.group_window;
        if let Some(seconds) = failover {
            let _ = self
                .journal_event(Event::Measured {
                    what: "failover".into(),
                    seconds,
                    detail: "from the rollback's first stop to the first old-release host \
                             running again"
                        .into(),
                })
                .await;
        }
        let windows = timing.host_windows;
        let restored: Vec<(String, Option<f64>)> = plan
            .queues
            .iter()
            .filter(|q| self.is_done(BROKER, &Step::RollbackRestore(q.to_string())))
            .map(|q| {
                let seconds = match plan.owners.get(q) {
                    Some(host) => windows.get(host).copied(),
                    None => failover,
                };
                (q.clone(), seconds)
            })
            .collect();
        let queues = self.accounts(restored).await;
        self.close_amqp().await;
        let status = if result.is_ok() {
            RunStatus::Done
        } else {
            RunStatus::Failed
        };
        let failure = result.err();
        let _ = self
            .journal_event(Event::Finished {
                status,
                summary: match &failure {
                    None => format!("run {} rolled back", plan.rolls_back),
                    Some(f) => f.to_string(),
                },
            })
            .await;
        RollbackOutcome {
            status,
            failure,
            failover_seconds: failover,
            queues,
            elapsed_seconds: self.started.elapsed().as_secs_f64(),
            journal: self.journal.lock().await.path().display().to_string(),
        }
    }

    /// The service first (stop the upgraded hosts, restore the queues, start the old
    /// release, move the held messages back, swap the pairs), then the repairs.
    async fn rollback_steps(
        self: Arc<Self>,
        plan: &RollbackPlan,
        on_swap: &impl Fn(&Swap) -> Result<(), String>,
    ) -> Result<(), Failure> {
        let all = plan.stop.len().max(1);
        each_host(
            &self,
            plan.stop.clone(),
            all,
            |engine, host: String| async move {
                let stops = [Step::RollbackStop, Step::RollbackVerifyStopped];
                engine.steps(&host, &stops).await
            },
        )
        .await?;
        for name in &plan.queues {
            if self.preserving() {
                self.one(BROKER, &Step::RollbackHold(name.clone())).await?;
            }
            self.one(BROKER, &Step::RollbackRestore(name.clone()))
                .await?;
        }
        let all = plan.start_old.len().max(1);
        each_host(
            &self,
            plan.start_old.clone(),
            all,
            |engine, host: String| async move { engine.one(&host, &Step::FailoverStart).await },
        )
        .await?;
        if self.preserving() {
            // The queues the failover put back too: their held messages, if the failover
            // did not get to move them back.
            for name in plan.queues.iter().chain(&plan.restored) {
                self.one(BROKER, &Step::RollbackRelease(name.clone()))
                    .await?;
            }
        }
        for swap in &plan.swaps {
            let step = Step::SwapPair(swap.pair.clone());
            self.step(BROKER, &step, || async {
                on_swap(swap).map_err(StepError::from)?;
                Ok(Done::new(format!(
                    "{} is active, {} passive",
                    swap.to, swap.from
                )))
            })
            .await?;
        }
        let repairs = plan.repair.clone();
        let parallel = self.plan.parallel;
        each_host(
            &self,
            repairs,
            parallel,
            |engine, repair: Repair| async move {
                let result = async {
                    for step in &repair.steps {
                        engine.one(&repair.host, step).await?;
                    }
                    Ok(())
                }
                .await;
                engine.host_end(&repair.host, &result);
                result
            },
        )
        .await
    }

    /// What a step of a rollback does.
    pub(super) async fn rollback_act(&self, host: &str, step: &Step) -> Result<Done, StepError> {
        let repair = self.plan.repair.iter().find(|r| r.host == host);
        let commands = || self.commands_of(host);
        match (step, repair) {
            (Step::RollbackStop, _) => self.recorded(host, "stop", &commands()?.stop, "").await,
            (Step::RollbackVerifyStopped, _) => {
                self.wait_for_state(host, "stopped").await?;
                Ok(Done::new("stopped"))
            }
            (Step::RollbackHold(queue), _) => self.hold(queue, false).await,
            (Step::RollbackRestore(queue), _) => {
                self.refuse_if_consumed(queue).await?;
                self.restore(queue).await
            }
            (Step::FailoverStart, _) => self.start_old(host).await,
            (Step::RollbackRelease(queue), _) => self.release(queue).await,
            (Step::Reinstall, Some(repair)) => self.reinstall(repair).await,
            (Step::RestoreFiles, Some(repair)) => {
                for path in &repair.files {
                    self.restore_file(host, path).await?;
                }
                Ok(Done::new(repair.files.join(", ")))
            }
            (Step::RollbackResetQueueState, _) => match &commands()?.reset_queue_state {
                Some(reset) => self.recorded(host, "reset queue state", reset, "").await,
                None => Ok(Done::new("the release has no queue-state reset")),
            },
            (Step::StartAgain, _) => self.start_noting_logs(host).await,
            (Step::VerifyAgain, Some(repair)) => self.verify_again(repair).await,
            (other, _) => Err(StepError::from(format!(
                "{other} is not a step of a rollback"
            ))),
        }
    }

    /// The hosts that consume a queue (the plan says).
    fn consumers_of(&self, queue: &str) -> Vec<String> {
        self.plan.consumers.get(queue).cloned().unwrap_or_default()
    }

    /// Refuses to take a queue out of service while a host that consumes it runs (its
    /// consumers may poll, and so not show on the broker): it would stop receiving.
    async fn refuse_if_consumed(&self, queue: &str) -> Result<(), StepError> {
        let mut running = vec![];
        for host in self.consumers_of(queue) {
            if self.status(&host).await? != "stopped" {
                running.push(host);
            }
        }
        if running.is_empty() {
            return Ok(());
        }
        Err(StepError::from(format!(
            "{queue} is consumed by {} which run: it is not touched (stop them first)",
            running.join(" ")
        )))
    }

    /// Starts a host on the old release unless it already runs; waits until it runs.
    async fn start_old(&self, name: &str) -> Result<Done, StepError> {
        let state = self.status(name).await?;
        if state == "running" {
            return Ok(Done::new("already running (never stopped)"));
        }
        let started = self.start_noting_logs(name).await?;
        self.wait_for_state(name, "running").await?;
        self.fail_on_log_errors(name).await?;
        Ok(Done {
            detail: "started, running".into(),
            ..started
        })
    }

    /// Reinstalls the version the host had before the upgrade.
    async fn reinstall(&self, repair: &Repair) -> Result<Done, StepError> {
        let name = repair.host.as_str();
        let (Some(version), Some(script)) = (&repair.version, &repair.reinstall) else {
            return Ok(Done::new("nothing was installed"));
        };
        let output = self.command_any_exit(name, "reinstall", script).await?;
        if !output.success() {
            return Err(StepError {
                cause: super::Cause::Check,
                detail: format!("reinstalling {version} failed"),
                output: Some(record("reinstall", &output)),
            });
        }
        Ok(Done {
            detail: format!("{} {version}", self.plan.package),
            output: Some(record("reinstall", &output)),
        })
    }

    /// The host runs the old release again, connected, and its log shows no refused declare.
    async fn verify_again(&self, repair: &Repair) -> Result<Done, StepError> {
        let name = repair.host.as_str();
        wait_for(self.plan.rendered.verify.timeout, || async {
            // The old release on the restored queues: a refused declare (the queue kept the
            // new setting) shows in its log, whatever its status says.
            self.fail_on_log_errors(name).await?;
            let state = self.status(name).await?;
            if state != "running" {
                return Ok(Err(format!("status says {state:?}")));
            }
            if let Some(version) = &repair.version {
                let installed = self.installed_version(name).await?;
                if &installed != version {
                    return Ok(Err(format!("installed version is {installed:?}")));
                }
            }
            if let Err(why) = self.check_connected(name, None).await? {
                return Ok(Err(why));
            }
            // Connected: its declares are done, so a refused one is in the log now.
            self.fail_on_log_errors(name).await?;
            Ok(Ok(()))
        })
        .await?;
        Ok(Done::new(format!(
            "running{}",
            repair
                .version
                .as_ref()
                .map(|v| format!(" {} {v}", self.plan.package))
                .unwrap_or_default()
        )))
    }
}
