//! The upgrade: the order its steps go in (one phase or two), its failure policy (the
//! failover), what each of its steps does, and its outcome.
//!
//! Everything that can be done while the services still run comes first (backups, the
//! package when the release allows it, staged files, holding queues), so that each service is
//! stopped only for what cannot be done otherwise: recreating its queues, putting the files in
//! place, and starting it again.

use std::sync::Arc;

use super::Outcome;
use super::timing::Timing;
use super::waves::Flow;
use super::{BROKER, Done, Engine, Failure, Policy, State, StepError, each_host, wait_for};
use crate::journal::{Backup, Event, RunStatus};
use crate::plan::upgrade::{HostPlan, UpgradePlan};
use crate::step::Step;

impl Engine<UpgradePlan> {
    /// Executes the plan.
    pub async fn run(self: Arc<Self>) -> Outcome {
        let result = if let Err(failed) = self.clone().copy_artifacts().await {
            Err(failed)
        } else if self.plan.two_phase {
            self.clone().run_two_phases().await
        } else {
            self.clone().run_one_phase().await
        };
        let completed = self.completed_hosts(&result).await;
        let timing = self
            .timing(&[Step::Stop, Step::StopFailover], &[Step::Start])
            .await;
        let window = self.window_of(&timing).await;
        let recreated = self.recreated(&timing);
        let queues = self.accounts(recreated).await;
        self.close_amqp().await;
        let failures = self
            .tolerated
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let status = match (&result, completed.is_empty()) {
            (Ok(Flow::Paused(_)), _) => RunStatus::Paused,
            (Ok(Flow::Finished), _) if !failures.is_empty() => RunStatus::Partial,
            (Ok(Flow::Finished), _) => RunStatus::Done,
            (Err(_), false) => RunStatus::Partial,
            (Err(_), true) => RunStatus::Failed,
        };
        let group = &self.plan.group;
        let summary = match &result {
            Ok(Flow::Paused(wave)) => format!(
                "paused after wave {wave}, {} hosts of half {} on {} {}: `roll resume --group \
                 {group}` continues, `roll rollback --group {group}` undoes",
                completed.len(),
                self.plan.half,
                self.plan.package,
                self.plan.version
            ),
            Ok(Flow::Finished) => {
                let failed: Vec<String> = failures.iter().map(|f| f.to_string()).collect();
                let and = if failed.is_empty() {
                    String::new()
                } else {
                    format!("; failed: {}", failed.join("; "))
                };
                format!(
                    "{} hosts of half {} on {} {}{and}",
                    completed.len(),
                    self.plan.half,
                    self.plan.package,
                    self.plan.version
                )
            }
            Err(f) => f.to_string(),
        };
        let failure = result.err();
        let _ = self
            .journal_event(Event::Finished { status, summary })
            .await;
        Outcome {
            longest_without_consumer: super::QueueOutage::longest(&queues),
            status,
            completed,
            failure,
            failures,
            queues,
            critical_window_seconds: window.seconds,
            critical_window_floor_seconds: window.floor,
            broker_unavailable_seconds: window.unavailable,
            elapsed_seconds: self.started.elapsed().as_secs_f64(),
            journal: self.journal.lock().await.path().display().to_string(),
        }
    }

    /// Hosts whose last step (verify, or deploy steps for a passive host) is done.
    async fn completed_hosts(&self, result: &Result<Flow, Failure>) -> Vec<String> {
        let failed = result.as_ref().err().map(|f| f.host.clone());
        self.plan
            .hosts
            .iter()
            .filter(|h| Some(&h.host) != failed.as_ref())
            .filter(|h| self.host_finished(h))
            .map(|h| h.host.clone())
            .collect()
    }

    /// The run's critical window (journaled): two phases, from the first stop of a consumer
    /// of the half's queues to the first start of a new one; one phase, the longest time a
    /// host was stopped.
    async fn window_of(&self, timing: &Timing) -> Window {
        let (seconds, floor, span) = if self.plan.two_phase {
            (
                timing.group_window,
                timing.group_floor(self.plan.canary()),
                timing.group_span,
            )
        } else {
            match timing.longest_host() {
                Some((host, window, floor)) => {
                    (Some(window), floor, timing.host_spans.get(&host).copied())
                }
                None => (None, None, None),
            }
        };
        if let Some(seconds) = seconds {
            let detail = if self.plan.two_phase {
                "from the first stop of a consumer of the half's queues to the first start of \
                 a new one"
            } else {
                "the longest time a host was stopped (from its stop to its start)"
            };
            let _ = self
                .journal_event(Event::Measured {
                    what: "critical-window".into(),
                    seconds,
                    detail: detail.into(),
                })
                .await;
        }
        Window {
            seconds,
            floor,
            unavailable: timing.unavailable_within(span),
        }
    }

    /// The queues recreated, each with how long it was without a consumer.
    fn recreated(&self, timing: &Timing) -> Vec<(String, Option<f64>)> {
        let mut recreated = vec![];
        for host in &self.plan.hosts {
            for q in &host.queues {
                if self.is_done(&host.host, &Step::Recreate(q.name.clone())) {
                    let seconds = timing.host_windows.get(&host.host).copied();
                    recreated.push((q.name.clone(), seconds));
                }
            }
        }
        for q in &self.plan.group_queues {
            if self.is_done(BROKER, &Step::Recreate(q.name.clone())) {
                recreated.push((q.name.clone(), timing.group_window));
            }
        }
        recreated
    }

    /// Hosts through every step, wave after wave (by default the canary, then the rest), at
    /// most `parallel` at a time within a wave, each wave's gates and soak passed before the
    /// next starts; a pause ends the run at its wave's end. The other half is never touched.
    pub(super) async fn run_one_phase(self: Arc<Self>) -> Result<Flow, Failure> {
        for wave in self.plan.waves() {
            let number = wave.number;
            each_host(
                &self,
                self.hosts_of(&wave),
                self.plan.parallel,
                |engine, host| engine.tolerating(number, host),
            )
            .await?;
            if let Some(flow) = self.after_wave(&wave).await? {
                return Ok(flow);
            }
        }
        Ok(Flow::Finished)
    }

    /// Every host of the half is made ready (the canary first), the half's queues are held;
    /// then every host of the half (and, for a critical window, of the other half) stops at
    /// once, the queues are recreated, the canary starts, then the rest; held messages go
    /// back last. A failure in the critical window restores the untouched half
    /// ([`Policy::after_failure`]).
    pub(super) async fn run_two_phases(self: Arc<Self>) -> Result<Flow, Failure> {
        let (first, rest) = self.canary_and_rest();
        if let Some(canary) = first.clone() {
            self.clone().ready(canary).await?;
        }
        each_host(&self, rest.clone(), self.plan.parallel, |engine, host| {
            engine.ready(host)
        })
        .await?;
        self.steps(BROKER, &self.plan.broker.before).await?;
        let critical = self.clone().critical_phase(first, rest).await;
        if let Err(failed) = &critical
            && Policy::after_failure(&self.plan, failed, 0, 0) == Policy::Failover
            && let Err(also) = self.clone().restore_failover().await
        {
            // The run's own failure is what the operator sees first; the failover's is in
            // the journal and in the progress lines.
            let note = format!(
                "the failover stopped here: {} (`roll resume` or `roll rollback` finishes)",
                also.detail
            );
            self.progress(&also.host, &also.step, State::Note(note));
        }
        critical.map(|()| Flow::Finished)
    }

    async fn critical_phase(
        self: Arc<Self>,
        first: Option<HostPlan>,
        rest: Vec<HostPlan>,
    ) -> Result<(), Failure> {
        // Everyone stops at once: the upgraded half (and its own queues are recreated as
        // soon as each host is stopped), and the other half for a critical window.
        let all: Vec<HostPlan> = first.iter().cloned().chain(rest.clone()).collect();
        let stops = self.plan.critical_stops.clone();
        let count = all.len() + stops.len();
        let (window, critical) = tokio::join!(
            each_host(&self, all, count, |engine, host| engine.window(host)),
            each_host(&self, stops, count, |engine, host: String| async move {
                engine.steps(&host, &engine.plan.critical_steps).await
            })
        );
        window.and(critical)?;
        self.steps(BROKER, &self.plan.broker.stopped).await?;
        // The hosts start wave after wave, each wave's gates and soak passed before the next
        // (a pause is refused at plan time: the later waves' hosts are stopped).
        for wave in self.plan.waves() {
            each_host(
                &self,
                self.hosts_of(&wave),
                self.plan.parallel,
                |engine, host| engine.finish(host),
            )
            .await?;
            self.after_wave(&wave).await?;
        }
        self.steps(BROKER, &self.plan.broker.after).await
    }

    /// After a failure in the critical window: the upgraded hosts that started are stopped,
    /// the shared queues the run began to recreate get their backed-up definitions and
    /// bindings back (with their messages), the untouched half starts again on the old
    /// release, and the held messages go back. Each stage only once the one before it
    /// succeeded: the untouched half never starts on a queue that was not put back. The first
    /// failure stops the failover (journaled); what it undid is journaled first, so that
    /// `resume` redoes the critical window and `rollback` knows what is left.
    async fn restore_failover(self: Arc<Self>) -> Result<(), Failure> {
        let note = "restoring the untouched half".to_string();
        self.progress(BROKER, "failover", State::Note(note));
        self.stop_started_hosts().await?;
        let restore: Vec<String> = self
            .group_queue_names()
            .into_iter()
            .filter(|name| self.is_started(BROKER, &Step::Recreate(name.clone())))
            .collect();
        for name in &restore {
            let again = [
                Step::Recreate(name.clone()),
                Step::Release(name.clone()),
                Step::VerifyQueue(name.clone()),
            ];
            self.undo(BROKER, &again, "put back by the failover")
                .await?;
            if self.preserving() {
                self.one(BROKER, &Step::FailoverHold(name.clone())).await?;
            }
            self.one(BROKER, &Step::Restore(name.clone())).await?;
        }
        for host in &self.plan.critical_stops {
            let again = [Step::StopFailover, Step::VerifyStoppedFailover];
            self.undo(host, &again, "started again by the failover")
                .await?;
            self.one(host, &Step::StartFailover).await?;
        }
        if self.preserving() {
            for name in &restore {
                let again = [Step::Hold(name.clone()), Step::FailoverHold(name.clone())];
                self.undo(BROKER, &again, "released by the failover")
                    .await?;
                self.one(BROKER, &Step::FailoverRelease(name.clone()))
                    .await?;
            }
        }
        self.failover_done(&restore).await
    }

    /// The failover's first stage: the upgraded hosts that started are stopped again.
    async fn stop_started_hosts(&self) -> Result<(), Failure> {
        let started: Vec<&HostPlan> = self
            .plan
            .hosts
            .iter()
            .filter(|h| h.start && self.is_started(&h.host, &Step::Start))
            .collect();
        for host in started {
            let name = host.host.as_str();
            self.undo(
                name,
                &[Step::Start, Step::Verify],
                "stopped by the failover",
            )
            .await?;
            // A host that cannot be stopped (lost, say) must not keep the untouched half
            // from serving: it is reported (its steps are journaled) and the failover goes
            // on; a consumer it still has on a queue makes that queue's restore refuse.
            let stops = [Step::StopFailover, Step::VerifyStoppedFailover];
            if let Err(failed) = self.steps(name, &stops).await {
                let note = "not stopped; the failover goes on without it".to_string();
                self.progress(name, &failed.step, State::Note(note));
            }
        }
        Ok(())
    }

    /// Forgets the failover's own steps (a later failover of this run, after a resume, does
    /// it all again) and journals the service restored.
    async fn failover_done(&self, restored: &[String]) -> Result<(), Failure> {
        let own: Vec<Step> = restored
            .iter()
            .flat_map(|name| {
                [
                    Step::Restore(name.clone()),
                    Step::FailoverRelease(name.clone()),
                ]
            })
            .collect();
        self.undo(BROKER, &own, "the failover is done").await?;
        for host in &self.plan.critical_stops {
            self.undo(host, &[Step::StartFailover], "the failover is done")
                .await?;
        }
        self.journal_event(Event::ServiceRestored {
            by: "failover".into(),
        })
        .await
        .map_err(|e| super::failure(BROKER, &Step::other("failover"), e))?;
        let note = "the untouched half serves again".to_string();
        self.progress(BROKER, "failover", State::Note(note));
        Ok(())
    }

    fn group_queue_names(&self) -> Vec<String> {
        self.plan
            .group_queues
            .iter()
            .map(|q| q.name.clone())
            .collect()
    }

    fn canary_and_rest(&self) -> (Option<HostPlan>, Vec<HostPlan>) {
        let mut hosts = self.plan.hosts.clone();
        let first = if hosts.first().is_some_and(|h| h.start) {
            Some(hosts.remove(0))
        } else {
            None
        };
        (first, hosts)
    }

    /// Every step of a host; then the host is through.
    pub(super) async fn full(self: Arc<Self>, host: HostPlan) -> Result<(), Failure> {
        let result = async {
            self.steps(&host.host, &host.ready).await?;
            self.steps(&host.host, &host.stopped).await?;
            self.steps(&host.host, &host.started).await
        }
        .await;
        self.host_end(&host.host, &result);
        result
    }

    /// While the service still runs (a failure: the host is through).
    async fn ready(self: Arc<Self>, host: HostPlan) -> Result<(), Failure> {
        let result = self.steps(&host.host, &host.ready).await;
        if result.is_err() {
            self.host_end(&host.host, &result);
        }
        result
    }

    /// The service stopped (a failure: the host is through).
    async fn window(self: Arc<Self>, host: HostPlan) -> Result<(), Failure> {
        let result = self.steps(&host.host, &host.stopped).await;
        if result.is_err() {
            self.host_end(&host.host, &result);
        }
        result
    }

    /// From the start on; then the host is through.
    async fn finish(self: Arc<Self>, host: HostPlan) -> Result<(), Failure> {
        let result = self.steps(&host.host, &host.started).await;
        self.host_end(&host.host, &result);
        result
    }

    /// What a step of an upgrade does.
    pub(super) async fn act(&self, host: &str, step: &Step) -> Result<Done, StepError> {
        let commands = || self.commands_of(host);
        match step {
            Step::Artifacts => self.artifacts_to(host).await,
            Step::Backup => self.backup_host(self.host_plan(host)?).await,
            Step::Upgrade => {
                self.recorded(host, "upgrade", &commands()?.upgrade, "")
                    .await
            }
            Step::StageFiles => self.stage(host).await,
            Step::Hold(queue) => {
                // A host found stopped (a resumed run): nothing consumes its queue.
                let stopped = host != BROKER && self.status(host).await? == "stopped";
                self.hold(queue, stopped).await
            }
            Step::Stop | Step::StopFailover => {
                self.recorded(host, "stop", &commands()?.stop, "").await
            }
            Step::VerifyStopped | Step::VerifyStoppedFailover => {
                self.wait_for_state(host, "stopped").await?;
                Ok(Done::new("stopped"))
            }
            Step::Recreate(queue) => self.recreate(queue).await,
            Step::Deploy => self.deploy(host).await,
            Step::ResetQueueState => match &commands()?.reset_queue_state {
                Some(reset) => self.recorded(host, "reset queue state", reset, "").await,
                None => Err(StepError::from(
                    "the release has no reset_queue_state command",
                )),
            },
            Step::Start => self.start_noting_logs(host).await,
            Step::Release(queue) | Step::FailoverRelease(queue) => self.release(queue).await,
            Step::Verify => self.verify_host(self.host_plan(host)?).await,
            Step::Gate => self.gate(host).await,
            Step::Soak(wave) => self.soak(*wave).await,
            Step::Pause(wave) => Ok(self.pause(*wave)),
            Step::BackUp(queue) => self.backup_queue(BROKER, queue).await,
            Step::VerifyQueue(queue) => {
                wait_for(self.plan.rendered.verify.timeout, || {
                    self.check_queue(queue)
                })
                .await?;
                Ok(Done::new(
                    "present with the target settings and its bindings",
                ))
            }
            Step::StartFailover => {
                let detail = "started on the old release";
                self.recorded(host, "start", &commands()?.start, detail)
                    .await
            }
            Step::FailoverHold(queue) => self.hold(queue, false).await,
            Step::Restore(queue) => self.restore(queue).await,
            other => Err(StepError::from(format!(
                "{other} is not a step of an upgrade"
            ))),
        }
    }

    pub(super) fn host_plan(&self, name: &str) -> Result<&HostPlan, StepError> {
        self.plan
            .hosts
            .iter()
            .find(|h| h.host == name)
            .ok_or_else(|| StepError::from(format!("{name} is not a host of the plan")))
    }

    /// Saves the installed version, the files the release replaces and the host's queues.
    async fn backup_host(&self, host: &HostPlan) -> Result<Done, StepError> {
        let name = host.host.as_str();
        let version = self.installed_version(name).await?;
        self.save(
            name,
            Backup::Version {
                version: version.clone(),
            },
        )
        .await?;
        self.backup_files(name).await?;
        for q in &host.queues {
            self.backup_queue(name, &q.name).await?;
        }
        Ok(Done::new(format!(
            "version {version}, {} files, {} queues",
            self.commands_of(name)?.files.len(),
            host.queues.len()
        )))
    }
}

/// A run's critical window, what the services take of it, and how long the broker was
/// away within it.
struct Window {
    seconds: Option<f64>,
    floor: Option<f64>,
    unavailable: f64,
}
