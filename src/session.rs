//! What the commands that change a group share: the broker password, the management API,
//! the group's lock and the SSH connections to its hosts, opened in that order (the lock
//! before anything of the group's journal is read) and closed together on every path.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::broker::management::Management;
use crate::engine::{Actions, Engine, Outcome, Parts, Planned, RollbackOutcome, World};
use crate::error::Error;
use crate::inventory::{Group, Secret};
use crate::journal::{Entry, Event, Journal};
use crate::lock::{self, Lock};
use crate::plan::journaled::RunPlan;
use crate::plan::rollback::{RollbackPlan, Swap};
use crate::plan::upgrade::UpgradePlan;
use crate::remote::{self, Connection};

/// An open session on one group.
pub struct Session {
    pub group: Group,
    pub password: Secret,
    pub management: Management,
    pub lock: Arc<Lock>,
    connections: BTreeMap<String, Connection>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("group", &self.group.name)
            .field("lock", &self.lock)
            .finish()
    }
}

impl Session {
    /// Reads the broker password, checks that the management API answers for the group's
    /// vhost, and takes the group's lock (`purpose` says why, for whoever finds it held).
    pub async fn open(group: Group, purpose: &str) -> Result<Session, Error> {
        let password = crate::broker::password(&group.broker)?;
        let management = Management::new(&group.broker, password.clone())?;
        // The vhost, not the overview: the overview sums the statistics of every queue of
        // the broker (about 2 s with 100,000 queues), the vhost only its own.
        management.check_vhost().await?;
        let lock = lock::acquire(&group.name, &group.broker, &password, purpose).await?;
        Ok(Session {
            group,
            password,
            management,
            lock: Arc::new(lock),
            connections: BTreeMap::new(),
        })
    }

    /// Refuses (exit 2) when the group is frozen; notes an expired freeze. For a new upgrade.
    pub async fn refuse_if_frozen(&self) -> Result<(), Error> {
        if let Some(expired) =
            crate::freeze::refuse_if_frozen(&self.management, &self.group.name).await?
        {
            crate::output::note(&crate::render::freeze_line(&expired.seen_now()));
        }
        Ok(())
    }

    /// Notes the group's freeze, if any, for work a freeze does not stop (`what`: a rollback,
    /// a resumed run). A freeze that cannot be read is noted too, and stops nothing.
    pub async fn note_freeze(&self, what: &str) {
        match crate::freeze::read(&self.management, &self.group.name).await {
            Ok(Some(freeze)) => {
                let seen = freeze.seen_now();
                if seen.state == crate::freeze::State::Frozen {
                    crate::output::note(&format!(
                        "note: group {} is {}; {what} goes on: a freeze refuses new upgrades only",
                        self.group.name, seen.freeze
                    ));
                }
            }
            Ok(None) => {}
            Err(err) => crate::output::note(&format!(
                "note: cannot read the freeze of group {} ({err}); {what} goes on",
                self.group.name
            )),
        }
    }

    /// Connects to every host of the group, [`remote::CONNECT_CONCURRENCY`] at a time; any
    /// unreachable host fails, naming every one of them.
    pub async fn connect(&mut self) -> Result<(), Error> {
        let limit = Arc::new(Semaphore::new(remote::CONNECT_CONCURRENCY));
        let mut tasks = JoinSet::new();
        for host in self.group.hosts.clone() {
            let limit = Arc::clone(&limit);
            tasks.spawn(async move {
                let _permit = limit.acquire_owned().await;
                (host.name.clone(), remote::connect(&host).await)
            });
        }
        let mut failures = vec![];
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((name, Ok(c))) => {
                    self.connections.insert(name, c);
                }
                Ok((_, Err(err))) => failures.push(err),
                Err(err) => return Err(Error::Internal(format!("a connect task failed: {err}"))),
            }
        }
        if failures.is_empty() {
            return Ok(());
        }
        failures.sort_by_key(|e| e.to_string());
        Err(Error::Unreachable(failures))
    }

    /// The open SSH connections, by host.
    pub fn connections(&self) -> &BTreeMap<String, Connection> {
        &self.connections
    }

    /// Hands the connections over (to an engine); they come back with [`Session::give_back`].
    pub fn take_connections(&mut self) -> BTreeMap<String, Connection> {
        std::mem::take(&mut self.connections)
    }

    /// Takes connections back, to be closed with the session.
    pub fn give_back(&mut self, connections: BTreeMap<String, Connection>) {
        self.connections.extend(connections);
    }

    /// An engine for `plan` with this session's connections and lock, and the journal's
    /// `earlier` entries.
    fn engine<P: Planned>(&mut self, plan: P, journal: Journal, earlier: &[Entry]) -> Arc<Engine<P>>
    where
        World: Actions<P>,
    {
        let (what, hosts) = plan.shown();
        let parts = Parts {
            group: self.group.clone(),
            plan,
            management: self.management.clone(),
            password: self.password.clone(),
            journal,
            connections: self.take_connections(),
        };
        let engine = Engine::new(parts, earlier)
            .with_actions(Arc::new(World))
            .with_lock(self.lock.clone())
            .with_progress(crate::render::live::sink(&what, hosts));
        Arc::new(engine)
    }

    /// Takes the connections back from a finished engine.
    fn done_with<P: Planned>(&mut self, engine: Arc<Engine<P>>) {
        if let Ok(engine) = Arc::try_unwrap(engine) {
            self.give_back(engine.into_connections());
        }
    }

    /// Executes an upgrade plan (a new run, or a resumed one with the journal's `earlier`
    /// entries).
    pub async fn execute(
        &mut self,
        plan: UpgradePlan,
        journal: Journal,
        earlier: &[Entry],
    ) -> Result<Outcome, Error> {
        let engine = self.engine(plan, journal, earlier);
        let outcome = engine.clone().run().await;
        self.done_with(engine);
        Ok(outcome)
    }

    /// Executes a rollback plan (`earlier`: the entries of the run it undoes, and the
    /// rollback's own when it is finished after an interruption).
    pub async fn execute_rollback(
        &mut self,
        plan: RollbackPlan,
        journal: Journal,
        earlier: &[Entry],
        on_swap: impl Fn(&Swap) -> Result<(), String>,
    ) -> Result<RollbackOutcome, Error> {
        let engine = self.engine(plan, journal, earlier);
        let outcome = engine.clone().run_rollback(on_swap).await;
        self.done_with(engine);
        Ok(outcome)
    }

    /// Closes every connection and releases the lock.
    pub async fn close(mut self) {
        for (_, c) in std::mem::take(&mut self.connections) {
            c.close().await;
        }
        remote::forget_own_dir();
        self.lock.release().await;
    }
}

/// The first entry of a run's journal: the run, who starts it from where, and its plan
/// (`upgrade`: the plan itself, or the one a rollback undoes).
pub fn started(
    plan: &RunPlan,
    upgrade: &UpgradePlan,
    skip_promotion_check: bool,
) -> Result<Event, Error> {
    let (run_id, version) = match plan {
        RunPlan::Upgrade(p) => (p.run_id.clone(), p.version.clone()),
        RunPlan::Rollback(p) => (p.run_id.clone(), String::new()),
    };
    Ok(Event::Started {
        run_id,
        kind: plan.kind(),
        group: upgrade.group.clone(),
        half: Some(upgrade.half),
        playbook: upgrade.playbook.clone(),
        playbook_path: upgrade.playbook_path.clone(),
        package: upgrade.package.clone(),
        version,
        operator: lock::operator(),
        controller: lock::controller(),
        pid: std::process::id(),
        skip_promotion_check,
        plan: plan
            .to_value()
            .map_err(|e| Error::Internal(format!("the plan cannot be journaled: {e}")))?,
    })
}

/// Asks the operator to type the group's name.
pub fn approve(group: &str) -> Result<(), Error> {
    let mut err = std::io::stderr();
    let _ = write!(err, "Type the group name ({group}) to approve this plan: ");
    let _ = err.flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(Error::Output)?;
    if answer.trim() == group {
        Ok(())
    } else {
        Err(Error::NotApproved)
    }
}
