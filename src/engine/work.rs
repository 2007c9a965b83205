//! The work both kinds of run share: commands on a host (recorded in the journal), its
//! service state, and queues backed up, recreated and restored.

use super::{Done, Engine, Failure, Planned, StepError, record, wait_for};
use crate::broker::equivalence::QueueSettings;
use crate::journal::{Backup, Event};
use crate::step::Step;

impl<P: Planned> Engine<P> {
    /// Steps of one host (or of the broker), in order; the first failure stops them.
    pub(super) async fn steps(&self, host: &str, steps: &[Step]) -> Result<(), Failure> {
        for step in steps {
            self.one(host, step).await?;
        }
        Ok(())
    }

    /// One step of an upgrade, journaled, skipped when done before.
    pub(super) async fn one(&self, host: &str, step: &Step) -> Result<(), Failure> {
        self.step(host, step, || self.actions.act(self, host, step))
            .await
    }

    /// Recreates a queue with the target settings (keeping its messages unless the run
    /// allows their loss).
    pub(super) async fn recreate(&self, name: &str) -> Result<Done, StepError> {
        self.rebuild(name, |_| self.plan.rendered().target.clone())
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
        if self.preserving() {
            self.recreate_held(name, &settings).await
        } else {
            self.recreate_lossy(name, &settings, &bindings).await
        }
    }

    /// Waits until the status command's first line is `wanted`.
    pub(super) async fn wait_for_state(&self, name: &str, wanted: &str) -> Result<(), StepError> {
        wait_for(self.plan.rendered().verify.timeout, || async {
            let state = self.status(name).await?;
            Ok(if state == wanted {
                Ok(())
            } else {
                Err(format!("status says {state:?}"))
            })
        })
        .await
    }

    /// Runs one of the release's commands as a step's work: a non-zero exit fails the step, and the
    /// output goes to the journal.
    pub(super) async fn recorded(
        &self,
        name: &str,
        label: &str,
        script: &str,
        detail: &str,
    ) -> Result<Done, StepError> {
        let output = self.command(name, label, script).await?;
        Ok(Done {
            detail: detail.to_string(),
            output: Some(record(label, &output)),
        })
    }

    /// The first line of the status command's output.
    pub(super) async fn status(&self, name: &str) -> Result<String, StepError> {
        self.first_line(name, "status", &self.commands_of(name)?.status)
            .await
    }

    /// The installed version of the package.
    pub(super) async fn installed_version(&self, name: &str) -> Result<String, StepError> {
        self.first_line(
            name,
            "installed version",
            &self.commands_of(name)?.installed_version,
        )
        .await
    }

    /// The first lines of the status and installed-version commands, run in one session
    /// (each fails as [`Engine::status`] and [`Engine::installed_version`] would alone).
    pub(super) async fn status_and_version(
        &self,
        name: &str,
    ) -> Result<(Result<String, StepError>, Result<String, StepError>), StepError> {
        let commands = self.commands_of(name)?;
        let mut ran = self
            .commands(
                name,
                &[
                    ("status", &commands.status),
                    ("installed version", &commands.installed_version),
                ],
            )
            .await?
            .into_iter()
            .map(|output| output.map(|o| o.first_line()));
        let missing = || Err(StepError::from("no answer"));
        let status = ran.next().unwrap_or_else(missing);
        let version = ran.next().unwrap_or_else(missing);
        Ok((status, version))
    }

    /// The first line a command prints, trimmed.
    async fn first_line(&self, name: &str, label: &str, script: &str) -> Result<String, StepError> {
        Ok(self.command(name, label, script).await?.first_line())
    }

    /// Journals a backup unless the journal already has it (a resume keeps the original).
    pub(super) async fn save(&self, host: &str, item: Backup) -> Result<bool, StepError> {
        let key = backup_key(&item);
        let pending = {
            let mut backups = self.backups.lock().await;
            if backups
                .iter()
                .any(|(h, b)| h == host && backup_key(b) == key)
            {
                return Ok(false);
            }
            let pending = self.journal.lock().await.write(Event::Backup {
                host: host.to_string(),
                item: item.clone(),
            })?;
            backups.push((host.to_string(), item));
            pending
        };
        // Outside the lock, so that the hosts' backups share their flushes; a failed flush
        // stops the run (nothing more is journaled after it).
        pending.durable().await?;
        Ok(true)
    }

    /// Saves a queue's definition, bindings and message count before it is touched.
    pub(super) async fn backup_queue(&self, host: &str, name: &str) -> Result<Done, StepError> {
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
