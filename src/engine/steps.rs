//! The steps of a run and the order they go in.
//!
//! Everything that can be done while the services still run comes first (backups, the
//! package when the playbook allows it, staged files, holding queues), so that each service is
//! stopped only for what cannot be done otherwise: recreating its queues, putting the files in
//! place, and starting it again.

use std::sync::Arc;

use super::{BROKER, Cause, Done, Engine, Failure, StepError, each_host, record, wait_for};
use crate::broker::equivalence::QueueSettings;
use crate::journal::{Backup, Event};
use crate::plan::upgrade::HostPlan;

impl Engine {
    /// Hosts one after the other through every step: the canary, then the rest, at most
    /// `parallel` at a time. The other half is never touched.
    pub(super) async fn run_one_phase(self: Arc<Self>) -> Result<(), Failure> {
        let (first, rest) = self.canary_and_rest();
        if let Some(canary) = first {
            self.clone().full(canary).await?;
        }
        each_host(&self, rest, self.plan.parallel, |engine, host| {
            engine.full(host)
        })
        .await
    }

    /// Every host of the half is made ready (the canary first), the half's queues are held;
    /// then every host of the half (and, for a critical window, of the other half) stops at
    /// once, the queues are recreated, the canary starts, then the rest; held messages go
    /// back last.
    pub(super) async fn run_two_phases(self: Arc<Self>) -> Result<(), Failure> {
        let (first, rest) = self.canary_and_rest();
        if let Some(canary) = first.clone() {
            self.clone().ready(canary).await?;
        }
        each_host(&self, rest.clone(), self.plan.parallel, |engine, host| {
            engine.ready(host)
        })
        .await?;
        for name in self.group_queue_names() {
            let step = format!("back up {name}");
            self.step(BROKER, &step, || self.backup_queue(BROKER, &name))
                .await?;
            if self.plan.preserve_messages {
                let step = format!("hold {name}");
                self.step(BROKER, &step, || self.hold(&name, false)).await?;
            }
        }
        let critical = self.clone().critical_phase(first, rest).await;
        if let Err(failed) = &critical
            && self.plan.critical_window
            && !matches!(failed.cause, Cause::Lock | Cause::Journal)
            && let Err(also) = self.clone().restore_failover().await
        {
            // The run's own failure is what the operator sees first; the failover's is in
            // the journal and in the progress lines.
            self.progress(
                &also.host,
                &also.step,
                &format!(
                    "the failover stopped here: {} (`roll resume` or `roll rollback` finishes)",
                    also.detail
                ),
            );
        }
        critical
    }

    fn group_queue_names(&self) -> Vec<String> {
        self.plan
            .group_queues
            .iter()
            .map(|q| q.name.clone())
            .collect()
    }

    async fn critical_phase(
        self: Arc<Self>,
        first: Option<HostPlan>,
        rest: Vec<HostPlan>,
    ) -> Result<(), Failure> {
        // Everyone stops at once: the upgraded half (and its own queues are recreated as
        // soon as each host is stopped), and the other half for a critical window.
        let mut all: Vec<HostPlan> = first.iter().cloned().chain(rest.clone()).collect();
        if self.plan.critical_window {
            all.extend(self.plan.critical_stops.iter().map(|h| HostPlan {
                host: h.clone(),
                role: None,
                start: false,
                queues: vec![],
                verify_queues: vec![],
                reset_queue_state: false,
            }));
        }
        let count = all.len();
        each_host(&self, all, count, |engine, host| async move {
            if engine.plan.critical_stops.contains(&host.host) {
                engine.stop(&host.host, "stop (failover)").await?;
                engine
                    .verify_stopped(&host.host, "verify stopped (failover)")
                    .await
            } else {
                engine.window(host).await
            }
        })
        .await?;
        for name in self.group_queue_names() {
            let step = format!("recreate {name}");
            self.step(BROKER, &step, || self.recreate(&name)).await?;
        }
        if let Some(canary) = first {
            self.clone().finish(canary).await?;
        }
        each_host(&self, rest, self.plan.parallel, |engine, host| {
            engine.finish(host)
        })
        .await?;
        for name in self.group_queue_names() {
            if self.plan.preserve_messages {
                let step = format!("release {name}");
                self.step(BROKER, &step, || self.release(&name)).await?;
            }
            let step = format!("verify {name}");
            self.step(BROKER, &step, || async {
                wait_for(self.playbook.verify.timeout, || self.check_queue(&name)).await?;
                Ok(Done::new(
                    "present with the target settings and its bindings",
                ))
            })
            .await?;
        }
        Ok(())
    }

    /// After a failure in the critical window: the upgraded hosts that started are stopped,
    /// the shared queues the run began to recreate get their backed-up definitions and
    /// bindings back (with their messages), the untouched half starts again on the old
    /// release, and the held messages go back. Each stage only once the one before it
    /// succeeded: the untouched half never starts on a queue that was not put back. The first
    /// failure stops the failover (journaled); what it undid is journaled first, so that
    /// `resume` redoes the critical window and `rollback` knows what is left.
    async fn restore_failover(self: Arc<Self>) -> Result<(), Failure> {
        self.progress(BROKER, "failover", "restoring the untouched half");
        let started: Vec<String> = self
            .plan
            .hosts
            .iter()
            .filter(|h| h.start && self.is_started(&h.host, "start"))
            .map(|h| h.host.clone())
            .collect();
        for host in &started {
            self.undo(
                host,
                &steps(&["start", "verify"]),
                "stopped by the failover",
            )
            .await?;
            // A host that cannot be stopped (lost, say) must not keep the untouched half
            // from serving: it is reported (its steps are journaled) and the failover goes
            // on; a consumer it still has on a queue makes that queue's restore refuse.
            let stopped = match self.stop(host, "stop (failover)").await {
                Ok(()) => self.verify_stopped(host, "verify stopped (failover)").await,
                Err(failed) => Err(failed),
            };
            if let Err(failed) = stopped {
                self.progress(
                    host,
                    &failed.step,
                    "not stopped; the failover goes on without it",
                );
            }
        }
        let restore: Vec<String> = self
            .group_queue_names()
            .into_iter()
            .filter(|name| self.is_started(BROKER, &format!("recreate {name}")))
            .collect();
        for name in &restore {
            let again = steps(&[
                &format!("recreate {name}"),
                &format!("release {name}"),
                &format!("verify {name}"),
            ]);
            self.undo(BROKER, &again, "put back by the failover")
                .await?;
            if self.plan.preserve_messages {
                let step = format!("failover hold {name}");
                self.step(BROKER, &step, || self.hold(name, false)).await?;
            }
            let step = format!("restore {name}");
            self.step(BROKER, &step, || self.restore(name)).await?;
        }
        for host in self.plan.critical_stops.clone() {
            let again = steps(&["stop (failover)", "verify stopped (failover)"]);
            self.undo(&host, &again, "started again by the failover")
                .await?;
            self.step(&host, "start (failover)", || {
                self.recorded(
                    &host,
                    "start",
                    &self.playbook.commands.start,
                    "started on the old release",
                )
            })
            .await?;
        }
        if self.plan.preserve_messages {
            for name in &restore {
                let again = steps(&[&format!("hold {name}"), &format!("failover hold {name}")]);
                self.undo(BROKER, &again, "released by the failover")
                    .await?;
                let step = format!("failover release {name}");
                self.step(BROKER, &step, || self.release(name)).await?;
            }
        }
        // Done: a later failover of this run (after a resume) does it all again.
        let mut own = vec![];
        for name in &restore {
            own.extend(steps(&[
                &format!("restore {name}"),
                &format!("failover release {name}"),
            ]));
        }
        self.undo(BROKER, &own, "the failover is done").await?;
        for host in self.plan.critical_stops.clone() {
            self.undo(&host, &steps(&["start (failover)"]), "the failover is done")
                .await?;
        }
        self.journal_event(Event::ServiceRestored {
            by: "failover".into(),
        })
        .await
        .map_err(|e| super::failure(BROKER, "failover", e))?;
        self.progress(BROKER, "failover", "the untouched half serves again");
        Ok(())
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

    /// Every step of a host.
    async fn full(self: Arc<Self>, host: HostPlan) -> Result<(), Failure> {
        self.clone().ready(host.clone()).await?;
        self.clone().window(host.clone()).await?;
        self.finish(host).await
    }

    /// While the service still runs: back up, install (when the playbook allows it), stage
    /// the files, hold the host's queues.
    async fn ready(self: Arc<Self>, host: HostPlan) -> Result<(), Failure> {
        let name = host.host.as_str();
        self.step(name, "backup", || self.backup_host(&host))
            .await?;
        if self.playbook.commands.upgrade_before_stop {
            self.upgrade(name).await?;
        }
        if !self.playbook.files.is_empty() {
            self.step(name, "stage files", || self.stage(name)).await?;
        }
        if self.plan.preserve_messages && !host.queues.is_empty() {
            let stopped = self
                .status(name)
                .await
                .map_err(|e| super::failure(name, "status", e))?
                == "stopped";
            for q in &host.queues {
                let step = format!("hold {}", q.name);
                self.step(name, &step, || self.hold(&q.name, stopped))
                    .await?;
            }
        }
        Ok(())
    }

    async fn upgrade(&self, name: &str) -> Result<(), Failure> {
        self.step(name, "upgrade", || {
            self.recorded(name, "upgrade", &self.playbook.commands.upgrade, "")
        })
        .await
    }

    /// The service stopped: stop, recreate its queues, install (unless done before), put
    /// the files in place, reset the queue state.
    async fn window(self: Arc<Self>, host: HostPlan) -> Result<(), Failure> {
        let name = host.host.as_str();
        self.stop(name, "stop").await?;
        self.verify_stopped(name, "verify stopped").await?;
        for q in &host.queues {
            let step = format!("recreate {}", q.name);
            self.step(name, &step, || self.recreate(&q.name)).await?;
        }
        if !self.playbook.commands.upgrade_before_stop {
            self.upgrade(name).await?;
        }
        self.step(name, "deploy", || self.deploy(name)).await?;
        if host.reset_queue_state
            && let Some(reset) = self.playbook.commands.reset_queue_state.clone()
        {
            self.step(name, "reset queue state", || {
                self.recorded(name, "reset queue state", &reset, "")
            })
            .await?;
        }
        Ok(())
    }

    /// Start, move the held messages back, verify (a passive host stays stopped).
    async fn finish(self: Arc<Self>, host: HostPlan) -> Result<(), Failure> {
        let name = host.host.as_str();
        if host.start {
            self.step(name, "start", || self.start_noting_logs(name))
                .await?;
        }
        if self.plan.preserve_messages {
            for q in &host.queues {
                let step = format!("release {}", q.name);
                self.step(name, &step, || self.release(&q.name)).await?;
            }
        }
        if !host.start {
            return Ok(());
        }
        self.step(name, "verify", || self.verify_host(&host)).await
    }

    /// Recreates a queue with the target settings (keeping its messages unless the run
    /// allows their loss).
    async fn recreate(&self, name: &str) -> Result<Done, StepError> {
        self.rebuild(name, |_| self.playbook.queues.target.clone())
            .await
    }

    /// Puts a queue back as its backup says (keeping its messages unless the run allows
    /// their loss).
    pub(super) async fn restore(&self, name: &str) -> Result<Done, StepError> {
        self.rebuild(name, |backed_up| backed_up).await
    }

    /// Deletes and declares a backed-up queue with the settings `settings` picks (given the
    /// backed-up ones), and its backed-up bindings.
    async fn rebuild(
        &self,
        name: &str,
        settings: impl FnOnce(QueueSettings) -> QueueSettings,
    ) -> Result<Done, StepError> {
        let Some(Backup::Queue {
            durable,
            auto_delete,
            arguments,
            bindings,
            ..
        }) = self.queue_backup(name).await
        else {
            return Err(StepError::from(format!(
                "no backup of {name} in the journal: refusing to touch it"
            )));
        };
        let settings = settings(QueueSettings::new(durable, auto_delete, arguments));
        if self.plan.preserve_messages {
            self.recreate_held(name, &settings).await
        } else {
            self.recreate_lossy(name, &settings, &bindings).await
        }
    }

    pub(super) async fn stop(&self, name: &str, step: &str) -> Result<(), Failure> {
        self.step(name, step, || {
            self.recorded(name, "stop", &self.playbook.commands.stop, "")
        })
        .await
    }

    /// Waits until the status command says `stopped` (exit codes are not trusted).
    pub(super) async fn verify_stopped(&self, name: &str, step: &str) -> Result<(), Failure> {
        self.step(name, step, || async {
            self.wait_for_state(name, "stopped").await?;
            Ok(Done::new("stopped"))
        })
        .await
    }

    /// Waits until the status command's first line is `wanted`.
    pub(super) async fn wait_for_state(&self, name: &str, wanted: &str) -> Result<(), StepError> {
        wait_for(self.playbook.verify.timeout, || async {
            let state = self.status(name).await?;
            Ok(if state == wanted {
                Ok(())
            } else {
                Err(format!("status says {state:?}"))
            })
        })
        .await
    }

    /// Runs a playbook command as a step's work: a non-zero exit fails the step, and the
    /// output goes to the journal.
    pub(super) async fn recorded(
        &self,
        name: &str,
        label: &str,
        template: &str,
        detail: &str,
    ) -> Result<Done, StepError> {
        let output = self.command(name, label, template).await?;
        Ok(Done {
            detail: detail.to_string(),
            output: Some(record(label, &output)),
        })
    }

    /// The first line of the status command's output.
    pub(super) async fn status(&self, name: &str) -> Result<String, StepError> {
        self.first_line(name, "status", &self.playbook.commands.status)
            .await
    }

    /// The installed version of the package.
    pub(super) async fn installed_version(&self, name: &str) -> Result<String, StepError> {
        self.first_line(
            name,
            "installed version",
            &self.playbook.commands.installed_version,
        )
        .await
    }

    /// The first line a playbook command prints, trimmed.
    async fn first_line(
        &self,
        name: &str,
        label: &str,
        template: &str,
    ) -> Result<String, StepError> {
        let output = self.command(name, label, template).await?;
        Ok(output
            .stdout
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_string())
    }

    /// Journals a backup unless the journal already has it (a resume keeps the original).
    pub(super) async fn save(&self, host: &str, item: Backup) -> Result<bool, StepError> {
        let key = backup_key(&item);
        let mut backups = self.backups.lock().await;
        if backups
            .iter()
            .any(|(h, b)| h == host && backup_key(b) == key)
        {
            return Ok(false);
        }
        self.journal.lock().await.append(Event::Backup {
            host: host.to_string(),
            item: item.clone(),
        })?;
        backups.push((host.to_string(), item));
        Ok(true)
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
            self.playbook.files.len(),
            host.queues.len()
        )))
    }

    /// Saves a queue's definition, bindings and message count before it is touched.
    async fn backup_queue(&self, host: &str, name: &str) -> Result<Done, StepError> {
        if self.queue_backup(name).await.is_some() {
            return Ok(Done::new("backed up before"));
        }
        let Some(queue) = self.management.queue(name).await? else {
            return Err(StepError::from(format!(
                "queue {name} is not on the broker"
            )));
        };
        // A holding exchange's binding is roll's own route (an earlier hold), never the
        // queue's: the backup keeps what the queue had before any run touched it.
        let bindings: Vec<_> = self
            .management
            .bindings_of(name)
            .await?
            .into_iter()
            .filter(|b| !crate::broker::holding::is_holding(&b.source))
            .collect();
        let messages = queue.messages.unwrap_or(0);
        let count = bindings.len();
        self.save(
            host,
            Backup::Queue {
                name: name.to_string(),
                durable: queue.durable,
                auto_delete: queue.auto_delete,
                arguments: queue.arguments,
                bindings,
                messages,
            },
        )
        .await?;
        Ok(Done::new(format!("{messages} messages, {count} bindings")))
    }

    pub(super) async fn queue_backup(&self, name: &str) -> Option<Backup> {
        self.backups
            .lock()
            .await
            .iter()
            .map(|(_, b)| b)
            .find(|b| matches!(b, Backup::Queue { name: n, .. } if n == name))
            .cloned()
    }
}

/// What makes two backups the same thing.
fn backup_key(item: &Backup) -> String {
    match item {
        Backup::Version { .. } => "version".into(),
        Backup::File { path, .. } => format!("file {path}"),
        Backup::Queue { name, .. } => format!("queue {name}"),
    }
}

/// Step names, owned.
fn steps(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}
