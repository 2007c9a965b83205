//! The steps of a run and the order they go in.

use std::sync::Arc;
use std::time::Instant;

use super::{BROKER, Done, Engine, Failure, StepError, each_host, record, wait_for};
use crate::broker::equivalence::{QueueSettings, differences};
use crate::journal::{Backup, Event};
use crate::plan::upgrade::HostPlan;
use crate::remote::quote;
use crate::template::{self, Escape};

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

    /// Every host of the half is stopped and prepared first; then (in a critical window, with
    /// the other half stopped too) the queues they share are recreated; then the canary
    /// starts, then the rest.
    pub(super) async fn run_two_phases(self: Arc<Self>) -> Result<(), Failure> {
        let (first, rest) = self.canary_and_rest();
        if let Some(canary) = first.clone() {
            self.clone().prepare(canary).await?;
        }
        each_host(&self, rest.clone(), self.plan.parallel, |engine, host| {
            engine.prepare(host)
        })
        .await?;
        let critical = self.clone().critical_phase(first, rest).await;
        if critical.is_err() && self.plan.critical_window {
            self.clone().restore_failover().await;
        }
        critical
    }

    async fn critical_phase(
        self: Arc<Self>,
        first: Option<HostPlan>,
        rest: Vec<HostPlan>,
    ) -> Result<(), Failure> {
        if self.plan.critical_window {
            let stops: Vec<HostPlan> = self
                .plan
                .critical_stops
                .iter()
                .map(|h| HostPlan {
                    host: h.clone(),
                    role: None,
                    start: false,
                    queues: vec![],
                    verify_queues: vec![],
                    reset_queue_state: false,
                })
                .collect();
            let all = stops.len();
            each_host(&self, stops, all, |engine, host| async move {
                engine.stop(&host.host, "stop (failover)").await?;
                engine
                    .verify_stopped(&host.host, "verify stopped (failover)")
                    .await
            })
            .await?;
        }
        let queues: Vec<String> = self
            .plan
            .group_queues
            .iter()
            .map(|q| q.name.clone())
            .collect();
        for name in &queues {
            let step = format!("back up {name}");
            self.step(BROKER, &step, || self.backup_queue(BROKER, name))
                .await?;
        }
        for name in &queues {
            let step = format!("recreate {name}");
            self.step(BROKER, &step, || self.recreate_queue(name))
                .await?;
        }
        if let Some(canary) = first {
            self.clone().finish(canary).await?;
        }
        each_host(&self, rest, self.plan.parallel, |engine, host| {
            engine.finish(host)
        })
        .await?;
        for name in &queues {
            let step = format!("verify {name}");
            self.step(BROKER, &step, || async {
                wait_for(self.playbook.verify.timeout, || self.check_queue(name)).await?;
                Ok(Done::new(
                    "present with the target settings and its bindings",
                ))
            })
            .await?;
        }
        Ok(())
    }

    /// After a failure in the critical window: the shared queues get their backed-up
    /// definitions and bindings back, and the untouched half starts again, on the old release.
    async fn restore_failover(self: Arc<Self>) {
        self.progress(BROKER, "failover", "restoring the untouched half");
        for q in self.plan.group_queues.clone() {
            let step = format!("restore {}", q.name);
            let _ = self
                .step(BROKER, &step, || self.restore_queue(&q.name))
                .await;
        }
        for host in self.plan.critical_stops.clone() {
            let _ = self
                .step(&host, "start (failover)", || {
                    self.recorded(
                        &host,
                        "start",
                        &self.playbook.commands.start,
                        "started on the old release",
                    )
                })
                .await;
        }
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
        self.clone().prepare(host.clone()).await?;
        self.finish(host).await
    }

    /// Stop, verify stopped, back up, recreate its queues, upgrade, deploy, reset.
    async fn prepare(self: Arc<Self>, host: HostPlan) -> Result<(), Failure> {
        let name = host.host.as_str();
        self.stop(name, "stop").await?;
        self.verify_stopped(name, "verify stopped").await?;
        self.step(name, "backup", || self.backup_host(&host))
            .await?;
        if !host.queues.is_empty() {
            self.step(name, "recreate queues", || async {
                let mut done = vec![];
                for q in &host.queues {
                    done.push(self.recreate_queue(&q.name).await?.detail);
                }
                Ok(Done::new(done.join("; ")))
            })
            .await?;
        }
        self.step(name, "upgrade", || {
            self.recorded(name, "upgrade", &self.playbook.commands.upgrade, "")
        })
        .await?;
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

    /// Start and verify (a passive host stays stopped).
    async fn finish(self: Arc<Self>, host: HostPlan) -> Result<(), Failure> {
        if !host.start {
            return Ok(());
        }
        let name = host.host.as_str();
        self.step(name, "start", || async {
            let offsets = self.log_sizes(name).await?;
            let mut first = self.first_start.lock().await;
            let output = self
                .command(name, "start", &self.playbook.commands.start)
                .await?;
            first.get_or_insert_with(Instant::now);
            drop(first);
            self.log_offsets
                .lock()
                .await
                .insert(name.to_string(), offsets.clone());
            Ok(Done {
                detail: offsets,
                output: Some(record("start", &output)),
            })
        })
        .await?;
        self.step(name, "verify", || self.verify_host(&host)).await
    }

    pub(super) async fn stop(&self, name: &str, step: &str) -> Result<(), Failure> {
        self.step(name, step, || async {
            self.first_stop
                .lock()
                .await
                .get_or_insert_with(Instant::now);
            self.recorded(name, "stop", &self.playbook.commands.stop, "")
                .await
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
    async fn save(&self, host: &str, item: Backup) -> Result<bool, StepError> {
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
        for file in &self.playbook.files {
            let path = quote(&file.path);
            let script = format!(
                "if [ -f {path} ]; then printf 'present %s\\n' \"$(stat -c %a {path})\"; cat {path}; else echo absent; fi"
            );
            let output = self
                .connection(name)?
                .run("read file", &script, self.playbook.commands.timeout)
                .await?;
            if !output.success() {
                return Err(StepError {
                    detail: format!("cannot read {}", file.path),
                    output: Some(record("read file", &output)),
                });
            }
            let (head, body) = output
                .stdout
                .split_once('\n')
                .unwrap_or((&output.stdout, ""));
            let item = match head.strip_prefix("present ") {
                Some(mode) => Backup::File {
                    path: file.path.clone(),
                    content: Some(body.to_string()),
                    mode: u32::from_str_radix(mode.trim(), 8).ok(),
                },
                None => Backup::File {
                    path: file.path.clone(),
                    content: None,
                    mode: None,
                },
            };
            self.save(name, item).await?;
        }
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
        let bindings = self.management.bindings_of(name).await?;
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

    /// Deletes the queue and declares it with the target settings and its backed-up bindings;
    /// when it already has the target settings (an earlier try got that far), only binds.
    async fn recreate_queue(&self, name: &str) -> Result<Done, StepError> {
        let Some(Backup::Queue { bindings, .. }) = self.queue_backup(name).await else {
            return Err(StepError::from(format!(
                "no backup of {name} in the journal: refusing to touch it"
            )));
        };
        let target = &self.playbook.queues.target;
        let current = self.management.queue(name).await?;
        let already = current.as_ref().is_some_and(|q| {
            differences(
                &QueueSettings::new(q.durable, q.auto_delete, q.arguments.clone()),
                target,
            )
            .is_empty()
        });
        if !already {
            if current.is_some() {
                self.management.delete_queue(name, false).await?;
            }
            self.management.declare_queue(name, target).await?;
        }
        for binding in &bindings {
            self.management.bind_queue(binding).await?;
        }
        Ok(Done::new(format!(
            "{name} {} with {} bindings",
            if already {
                "already recreated"
            } else {
                "recreated"
            },
            bindings.len()
        )))
    }

    /// Puts a queue back as its backup says.
    pub(super) async fn restore_queue(&self, name: &str) -> Result<Done, StepError> {
        let Some(Backup::Queue {
            durable,
            auto_delete,
            arguments,
            bindings,
            ..
        }) = self.queue_backup(name).await
        else {
            return Err(StepError::from(format!("no backup of {name}")));
        };
        let settings = QueueSettings::new(durable, auto_delete, arguments);
        if let Some(q) = self.management.queue(name).await? {
            let same = differences(
                &QueueSettings::new(q.durable, q.auto_delete, q.arguments),
                &settings,
            )
            .is_empty();
            if !same {
                self.management.delete_queue(name, false).await?;
            }
        }
        self.management.declare_queue(name, &settings).await?;
        for binding in &bindings {
            self.management.bind_queue(binding).await?;
        }
        Ok(Done::new(format!("{name} restored from its backup")))
    }

    /// Writes the release's files (atomically: a temporary file, then a rename).
    async fn deploy(&self, name: &str) -> Result<Done, StepError> {
        let vars = self.vars(name)?;
        let mut written = vec![];
        for file in &self.playbook.files {
            if file.only_if_present {
                let existed = self.backups.lock().await.iter().any(|(h, b)| {
                    h == name
                        && matches!(b, Backup::File { path, content: Some(_), .. } if *path == file.path)
                });
                if !existed {
                    continue;
                }
            }
            let content = template::render(&file.content, &vars, Escape::None)?;
            self.write_file(name, &file.path, &content, file.mode)
                .await?;
            written.push(file.path.clone());
        }
        Ok(Done::new(if written.is_empty() {
            "no files".to_string()
        } else {
            written.join(", ")
        }))
    }
}

impl Engine {
    /// Writes a file on a host atomically: a temporary file beside it, then a rename.
    pub(super) async fn write_file(
        &self,
        name: &str,
        path: &str,
        content: &str,
        mode: Option<u32>,
    ) -> Result<(), StepError> {
        let delimiter = format!("ROLL_EOF_{}", crate::clock::now_millis());
        if content.lines().any(|l| l == delimiter) {
            return Err(StepError::from(
                "file content contains the heredoc delimiter",
            ));
        }
        let target = quote(path);
        let tmp = quote(&format!("{path}.roll-new"));
        let mut script = format!(
            "set -e\nmkdir -p \"$(dirname {target})\"\ncat > {tmp} <<'{delimiter}'\n{content}"
        );
        if !content.ends_with('\n') {
            script.push('\n');
        }
        script.push_str(&format!("{delimiter}\n"));
        if let Some(mode) = mode {
            script.push_str(&format!("chmod {mode:o} {tmp}\n"));
        }
        script.push_str(&format!("mv {tmp} {target}\n"));
        let output = self
            .connection(name)?
            .run("write file", &script, self.playbook.commands.timeout)
            .await?;
        if output.success() {
            Ok(())
        } else {
            Err(StepError {
                detail: format!("cannot write {path}"),
                output: Some(record("write file", &output)),
            })
        }
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
