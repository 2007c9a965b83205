//! Executing a rollback: service first (stop the upgraded hosts, restore the queues, start
//! the old release), then repairs (reinstall, restore files, start again).

use std::sync::Arc;

use serde::Serialize;

use super::{BROKER, Done, Engine, Failure, StepError, each_host, record, wait_for};
use crate::journal::{Event, RunStatus};
use crate::plan::rollback::{Repair, RollbackPlan};
use crate::plan::upgrade::HostPlan;

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

fn plain(host: &str) -> HostPlan {
    HostPlan {
        host: host.to_string(),
        role: None,
        start: true,
        queues: vec![],
        verify_queues: vec![],
        reset_queue_state: false,
    }
}

impl Engine {
    /// Executes a rollback plan.
    pub async fn run_rollback(
        self: Arc<Self>,
        plan: RollbackPlan,
        on_swap: impl Fn(&crate::plan::rollback::Swap) -> Result<(), String>,
    ) -> RollbackOutcome {
        self.rolling_back
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let result = self.clone().rollback_steps(&plan, &on_swap).await;
        let timing = self
            .timing(&["rollback stop"], &["failover start", "start again"])
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
        let owner = |queue: &str| {
            self.plan
                .hosts
                .iter()
                .find(|h| h.queues.iter().any(|q| q.name == queue))
                .map(|h| h.host.clone())
        };
        let restored: Vec<(String, Option<f64>)> = plan
            .queues
            .iter()
            .filter(|q| self.is_done(BROKER, &format!("rollback restore {q}")))
            .map(|q| {
                let seconds = match owner(q) {
                    Some(host) => windows.get(&host).copied(),
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

    async fn rollback_steps(
        self: Arc<Self>,
        plan: &RollbackPlan,
        on_swap: &impl Fn(&crate::plan::rollback::Swap) -> Result<(), String>,
    ) -> Result<(), Failure> {
        let all = plan.stop.len().max(1);
        let stops: Vec<HostPlan> = plan.stop.iter().map(|h| plain(h)).collect();
        each_host(&self, stops, all, |engine, host| async move {
            engine.stop(&host.host, "rollback stop").await?;
            engine
                .verify_stopped(&host.host, "rollback verify stopped")
                .await
        })
        .await?;
        let preserve = self.plan.preserve_messages;
        for name in &plan.queues {
            if preserve {
                let step = format!("rollback hold {name}");
                self.step(BROKER, &step, || self.hold(name, false)).await?;
            }
            let step = format!("rollback restore {name}");
            self.step(BROKER, &step, || async {
                self.refuse_if_consumed(name).await?;
                self.restore(name).await
            })
            .await?;
        }
        let starts: Vec<HostPlan> = plan.start_old.iter().map(|h| plain(h)).collect();
        let all = starts.len().max(1);
        each_host(&self, starts, all, |engine, host| async move {
            engine.start_old(&host.host).await
        })
        .await?;
        if preserve {
            // The queues the failover put back too: their held messages, if the failover
            // did not get to move them back.
            for name in plan.queues.iter().chain(&plan.restored) {
                let step = format!("rollback release {name}");
                self.step(BROKER, &step, || self.release(name)).await?;
            }
        }
        for swap in &plan.swaps {
            let step = format!("swap pair {}", swap.pair);
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
        let by_host: Vec<HostPlan> = repairs.iter().map(|r| plain(&r.host)).collect();
        let repairs = Arc::new(repairs);
        each_host(&self, by_host, parallel, move |engine, host| {
            let repairs = repairs.clone();
            async move {
                match repairs.iter().find(|r| r.host == host.host) {
                    Some(repair) => engine.repair(repair).await,
                    None => Ok(()),
                }
            }
        })
        .await
    }

    /// The hosts that consume a queue: its owner, or for a queue of the half or of the group,
    /// every host of the run and the other half's that stopped with it.
    fn consumers_of(&self, queue: &str) -> Vec<String> {
        if let Some(owner) = self
            .plan
            .hosts
            .iter()
            .find(|h| h.queues.iter().any(|q| q.name == queue))
        {
            return vec![owner.host.clone()];
        }
        self.plan
            .hosts
            .iter()
            .filter(|h| h.start)
            .map(|h| h.host.clone())
            .chain(self.plan.critical_stops.iter().cloned())
            .collect()
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
    async fn start_old(&self, name: &str) -> Result<(), Failure> {
        self.step(name, "failover start", || async {
            let state = self.status(name).await?;
            let done = if state == "running" {
                Done::new("already running (never stopped)")
            } else {
                let started = self.start_noting_logs(name).await?;
                self.wait_for_state(name, "running").await?;
                self.fail_on_log_errors(name).await?;
                Done {
                    detail: "started, running".into(),
                    ..started
                }
            };
            Ok(done)
        })
        .await
    }

    /// Reinstalls the previous version, restores the files, resets the queue state, and
    /// starts the host again (as the plan says).
    async fn repair(&self, repair: &Repair) -> Result<(), Failure> {
        let name = repair.host.as_str();
        if let Some(version) = &repair.version {
            self.step(name, "reinstall", || async {
                let mut vars = self.vars(name)?;
                vars.insert("version", version.clone());
                let script = self
                    .playbook
                    .command(&self.playbook.commands.upgrade, &vars)?;
                let output = self
                    .connection(name)?
                    .run("reinstall", &script, self.playbook.commands.timeout)
                    .await?;
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
            })
            .await?;
        }
        if !repair.files.is_empty() {
            self.step(name, "restore files", || async {
                for path in &repair.files {
                    self.restore_file(name, path).await?;
                }
                Ok(Done::new(repair.files.join(", ")))
            })
            .await?;
        }
        if repair.reset_queue_state
            && let Some(reset) = self.playbook.commands.reset_queue_state.clone()
        {
            self.step(name, "rollback reset queue state", || {
                self.recorded(name, "reset queue state", &reset, "")
            })
            .await?;
        }
        if !repair.start {
            return Ok(());
        }
        self.step(name, "start again", || self.start_noting_logs(name))
            .await?;
        self.step(name, "verify again", || async {
            wait_for(self.playbook.verify.timeout, || async {
                // The old release on the restored queues: a refused declare (the queue kept
                // the new setting) shows in its log, whatever its status says.
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
        })
        .await
    }
}
