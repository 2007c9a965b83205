//! The engine over fakes: the order of the steps, skipping on resume, the failure policy and
//! the rollback of each partial state, without a broker or a host. The lab's tests do the
//! same runs for real.

use std::sync::{Arc, Mutex};

use super::*;
use crate::broker::equivalence::QueueSettings;
use crate::inventory::Half;
use crate::plan::fixtures::{fixture, ops_diff};
use crate::plan::rollback::{self as rollback_plan, RollbackPlan};
use crate::plan::upgrade::{self as upgrade_plan, Options};

/// Records every step it is asked to do, saves what a backup would, and fails where told
/// (each planted failure once).
#[derive(Default)]
struct Fake {
    calls: Mutex<Vec<(String, Step)>>,
    failures: Mutex<Vec<(String, Step, Cause)>>,
    /// Steps that take this long.
    slow: Mutex<Vec<(String, Step, Duration)>>,
    /// How many times the broker is found down when waited for.
    down: std::sync::atomic::AtomicUsize,
    /// What a planted failure says (else `planted at HOST STEP`).
    detail: Mutex<Option<String>>,
    /// How many times a cluster node is found down when waited for, and how often asked.
    node_down: std::sync::atomic::AtomicUsize,
    node_asked: Mutex<Vec<String>>,
}

impl Fake {
    fn failing(host: &str, step: Step, cause: Cause) -> Arc<Fake> {
        let fake = Fake::default();
        fake.failures
            .lock()
            .unwrap()
            .push((host.to_string(), step, cause));
        Arc::new(fake)
    }

    fn calls(&self) -> Vec<(String, Step)> {
        self.calls.lock().unwrap().clone()
    }

    /// The steps done on one host, in order.
    fn of(&self, host: &str) -> Vec<Step> {
        self.calls()
            .into_iter()
            .filter(|(h, _)| h == host)
            .map(|(_, s)| s)
            .collect()
    }

    /// Where a call is in the order of all calls (the first time), if it was made.
    fn at(&self, host: &str, step: &Step) -> Option<usize> {
        self.calls()
            .iter()
            .position(|(h, s)| h == host && s == step)
    }

    fn planted(&self, host: &str, step: &Step) -> Option<Cause> {
        let mut failures = self.failures.lock().unwrap();
        let at = failures
            .iter()
            .position(|(h, s, _)| h == host && s == step)?;
        Some(failures.remove(at).2)
    }
}

impl Fake {
    /// Records a call; fails it if planted.
    async fn record(&self, host: &str, step: &Step) -> Result<(), StepError> {
        self.calls
            .lock()
            .unwrap()
            .push((host.to_string(), step.clone()));
        // Let the hosts in flight interleave, as real work does.
        tokio::task::yield_now().await;
        let slow = self
            .slow
            .lock()
            .unwrap()
            .iter()
            .find_map(|(h, s, d)| (h == host && s == step).then_some(*d));
        if let Some(time) = slow {
            tokio::time::sleep(time).await;
        }
        let detail = self.detail.lock().unwrap().clone();
        match self.planted(host, step) {
            Some(cause) => Err(StepError::new(
                cause,
                detail.unwrap_or_else(|| format!("planted at {host} {step}")),
            )),
            None => Ok(()),
        }
    }
}

impl Actions<UpgradePlan> for Fake {
    fn act<'a>(
        &'a self,
        engine: &'a Engine<UpgradePlan>,
        host: &'a str,
        step: &'a Step,
    ) -> Act<'a> {
        Box::pin(async move {
            self.record(host, step).await?;
            match step {
                Step::Backup => {
                    let version = Backup::Version {
                        version: "3.2.0".into(),
                    };
                    engine.save(host, version).await?;
                    for q in &engine.host_plan(host)?.queues {
                        engine.save(host, queue_backup(&q.name)).await?;
                    }
                }
                Step::BackUp(queue) => {
                    engine.save(host, queue_backup(queue)).await?;
                }
                _ => {}
            }
            Ok(Done::new(""))
        })
    }

    fn broker_up<'a>(&'a self, _: &'a Engine<UpgradePlan>) -> Up<'a> {
        use std::sync::atomic::Ordering::SeqCst;
        let down = self
            .down
            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
            .is_ok();
        Box::pin(async move { !down })
    }

    fn node_up<'a>(&'a self, _: &'a Engine<UpgradePlan>, node: &'a str) -> Up<'a> {
        use std::sync::atomic::Ordering::SeqCst;
        self.node_asked.lock().unwrap().push(node.to_string());
        let down = self
            .node_down
            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
            .is_ok();
        Box::pin(async move { !down })
    }
}

impl Actions<RollbackPlan> for Fake {
    fn act<'a>(&'a self, _: &'a Engine<RollbackPlan>, host: &'a str, step: &'a Step) -> Act<'a> {
        Box::pin(async move {
            self.record(host, step).await?;
            Ok(Done::new(""))
        })
    }

    fn broker_up<'a>(&'a self, _: &'a Engine<RollbackPlan>) -> Up<'a> {
        Box::pin(async { true })
    }
}

fn queue_backup(name: &str) -> Backup {
    Backup::Queue {
        name: name.to_string(),
        durable: true,
        auto_delete: false,
        arguments: Default::default(),
        bindings: vec![],
        messages: 1,
    }
}

/// A plan for ops: `expire` changes every queue (two phases, a critical window on half b);
/// otherwise no queue changes (one phase).
fn plan(half: Half, expire: bool, parallel: usize) -> UpgradePlan {
    plan_asked(half, expire, Options::new(parallel, true))
}

/// [`plan`] with the operator's options.
fn plan_asked(half: Half, expire: bool, options: Options) -> UpgradePlan {
    let (inventory, playbook) = fixture();
    let ops = inventory.group("ops").unwrap();
    let target = if expire {
        playbook.queues.target.clone()
    } else {
        QueueSettings::new(true, false, Default::default())
    };
    let diff = ops_diff(&target);
    let mut plan = upgrade_plan::plan(
        "r1",
        ops,
        half,
        &diff,
        &playbook,
        &options,
        &Default::default(),
    )
    .unwrap();
    // The artifacts' own phase has its tests (`with_artifacts`).
    for host in &mut plan.hosts {
        host.artifacts.clear();
    }
    plan
}

/// An engine for `plan` doing its steps with `fake`, journaling in `journal`; `earlier`: the
/// entries of the run it resumes (or rolls back).
fn engine<P: Planned + Clone>(
    plan: &P,
    fake: &Arc<Fake>,
    journal: Journal,
    earlier: &[Entry],
) -> Arc<Engine<P>>
where
    Fake: Actions<P>,
{
    Arc::new(bare_engine(plan, fake, journal, earlier))
}

/// [`engine`], not shared yet (to be given a sink).
fn bare_engine<P: Planned + Clone>(
    plan: &P,
    fake: &Arc<Fake>,
    journal: Journal,
    earlier: &[Entry],
) -> Engine<P>
where
    Fake: Actions<P>,
{
    let (inventory, _) = fixture();
    let group = inventory.group("ops").unwrap().clone();
    let parts = Parts {
        management: Management::new(&group.broker, Secret::new("unused")).unwrap(),
        group,
        plan: plan.clone(),
        password: Secret::new("unused"),
        journal,
        connections: BTreeMap::new(),
    };
    let actions: Arc<dyn Actions<P>> = fake.clone();
    Engine::new(parts, earlier).with_actions(actions)
}

/// A sink that keeps everything the engine says.
fn recorder() -> (Sink, Arc<Mutex<Vec<Progress>>>) {
    let said = Arc::new(Mutex::new(vec![]));
    let keep = said.clone();
    let sink: Sink = Arc::new(move |p: &Progress| keep.lock().unwrap().push(p.clone()));
    (sink, said)
}

/// An upgrade whose progress is kept, a long step saying so every `every`.
fn watched_upgrade(
    plan: &UpgradePlan,
    fake: &Arc<Fake>,
    dir: &std::path::Path,
    every: Duration,
) -> (Outcome, Vec<Progress>) {
    let mut journal = Journal::create(dir, "ops", &plan.run_id).unwrap();
    journal.append(started(plan)).unwrap();
    let (sink, said) = recorder();
    let mut engine = bare_engine(plan, fake, journal, &[]).with_progress(sink);
    engine.still_running_every = every;
    let outcome = tokio_test(Arc::new(engine).run());
    let said = said.lock().unwrap().clone();
    (outcome, said)
}

/// The journal's first entry, as `roll upgrade` writes it.
fn started(plan: &UpgradePlan) -> Event {
    Event::Started {
        run_id: plan.run_id.clone(),
        kind: crate::journal::RunKind::Upgrade,
        group: plan.group.clone(),
        half: Some(plan.half),
        playbook: plan.playbook.clone(),
        playbook_path: plan.playbook_path.clone(),
        package: plan.package.clone(),
        version: plan.version.clone(),
        operator: "tester".into(),
        controller: "here".into(),
        pid: 1,
        skip_promotion_check: false,
        plan: serde_json::to_value(plan).unwrap(),
    }
}

fn journal_path(dir: &std::path::Path, run_id: &str) -> std::path::PathBuf {
    crate::journal::group_dir(dir, "ops")
        .join("runs")
        .join(format!("{run_id}.jsonl"))
}

fn entries(dir: &std::path::Path, run_id: &str) -> Vec<Entry> {
    crate::journal::read(&journal_path(dir, run_id)).unwrap()
}

fn upgrade(plan: &UpgradePlan, fake: &Arc<Fake>, dir: &std::path::Path) -> Outcome {
    let mut journal = Journal::create(dir, "ops", &plan.run_id).unwrap();
    journal.append(started(plan)).unwrap();
    tokio_test(engine(plan, fake, journal, &[]).run())
}

fn tokio_test<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

fn hosts_of(plan: &UpgradePlan) -> Vec<String> {
    plan.hosts.iter().map(|h| h.host.clone()).collect()
}

#[test]
fn one_phase_each_host_goes_through_its_steps_in_order_the_canary_first() {
    let plan = plan(Half::A, false, 2);
    assert!(!plan.two_phase);
    let fake = Arc::new(Fake::default());
    let dir = tempfile::tempdir().unwrap();
    let outcome = upgrade(&plan, &fake, dir.path());
    assert_eq!(outcome.status, RunStatus::Done, "{:?}", outcome.failure);
    assert_eq!(outcome.completed.len(), plan.hosts.len());
    for host in &plan.hosts {
        let expected: Vec<Step> = [&host.ready, &host.stopped, &host.started]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        assert_eq!(fake.of(&host.host), expected, "{}", host.host);
    }
    // The canary is verified before any other host begins.
    let canary_done = fake.at("px1", &Step::Verify).unwrap();
    for other in ["px2", "px3", "px4", "pxatx2"] {
        assert!(
            fake.at(other, &Step::Backup).unwrap() > canary_done,
            "{other}"
        );
    }
    // The passive host is upgraded and left stopped.
    let passive = fake.of("pxatx2");
    assert!(passive.contains(&Step::Upgrade) && !passive.contains(&Step::Start));
    // The other half is never touched.
    for other in ["px5", "px6", "px7", "px8", "pxatx1"] {
        assert!(fake.of(other).is_empty(), "{other}");
    }
}

#[test]
fn two_phases_make_every_host_ready_then_stop_them_all_then_start_the_canary_first() {
    let plan = plan(Half::B, true, 2);
    assert!(plan.two_phase && plan.critical_window);
    let fake = Arc::new(Fake::default());
    let dir = tempfile::tempdir().unwrap();
    let outcome = upgrade(&plan, &fake, dir.path());
    assert_eq!(outcome.status, RunStatus::Done, "{:?}", outcome.failure);
    let calls = fake.calls();
    let last_ready = calls
        .iter()
        .rposition(|(h, s)| {
            plan.hosts
                .iter()
                .any(|p| &p.host == h && p.ready.contains(s))
        })
        .unwrap();
    let first_stop = calls
        .iter()
        .position(|(_, s)| matches!(s, Step::Stop | Step::StopFailover))
        .unwrap();
    assert!(last_ready < first_stop, "{calls:?}");
    let broker = |step: Step| fake.at(BROKER, &step).unwrap();
    let q = || "q.cluster".to_string();
    assert!(broker(Step::Hold(q())) < first_stop);
    // The shared queue is recreated once every consumer, of both halves, is stopped.
    let recreate = broker(Step::Recreate(q()));
    for host in hosts_of(&plan) {
        assert!(
            fake.at(&host, &Step::VerifyStopped).unwrap() < recreate,
            "{host}"
        );
    }
    for host in &plan.critical_stops {
        assert_eq!(
            fake.of(host),
            [Step::StopFailover, Step::VerifyStoppedFailover]
        );
        assert!(fake.at(host, &Step::VerifyStoppedFailover).unwrap() < recreate);
    }
    // The canary starts and is verified before the rest start; the held messages go back
    // and the queue is verified last.
    let canary_verified = fake.at("px5", &Step::Verify).unwrap();
    assert!(recreate < fake.at("px5", &Step::Start).unwrap());
    for host in ["px6", "px7", "px8", "pxatx1"] {
        assert!(
            fake.at(host, &Step::Start).unwrap() > canary_verified,
            "{host}"
        );
    }
    assert_eq!(
        calls[calls.len() - 2..],
        [
            (BROKER.to_string(), Step::Release(q())),
            (BROKER.to_string(), Step::VerifyQueue(q()))
        ]
    );
}

#[test]
fn a_resumed_run_skips_every_step_the_journal_shows_done() {
    let plan = plan(Half::A, false, 1);
    let dir = tempfile::tempdir().unwrap();
    let first = Fake::failing("px2", Step::Stop, Cause::Host);
    let outcome = upgrade(&plan, &first, dir.path());
    assert_eq!(outcome.status, RunStatus::Partial);
    assert_eq!(outcome.completed, ["px1"]);
    let done_before: Vec<(String, Step)> = entries(dir.path(), "r1")
        .into_iter()
        .filter_map(|e| match e.event {
            Event::StepFinished {
                host,
                step,
                ok: true,
                ..
            } => Some((host, step)),
            _ => None,
        })
        .collect();
    assert!(done_before.contains(&("px2".into(), Step::Backup)));

    let second = Arc::new(Fake::default());
    let earlier = entries(dir.path(), "r1");
    let journal = Journal::reopen(&journal_path(dir.path(), "r1")).unwrap();
    let resumed = tokio_test(engine(&plan, &second, journal, &earlier).run());
    assert_eq!(resumed.status, RunStatus::Done, "{:?}", resumed.failure);
    for call in second.calls() {
        assert!(
            !done_before.contains(&call),
            "done before, done again: {call:?}"
        );
    }
    // px2 goes on from its failed stop; the hosts after it run whole.
    assert_eq!(second.of("px2")[0], Step::Stop);
    assert!(second.of("px1").is_empty());
    assert_eq!(second.of("px3")[0], Step::Backup);
    assert_eq!(resumed.completed.len(), plan.hosts.len());
}

#[test]
fn a_failed_canary_stops_the_run_before_any_other_host() {
    let plan = plan(Half::A, false, 4);
    let fake = Fake::failing("px1", Step::Start, Cause::Check);
    let dir = tempfile::tempdir().unwrap();
    let outcome = upgrade(&plan, &fake, dir.path());
    assert_eq!(outcome.status, RunStatus::Failed);
    let failure = outcome.failure.unwrap();
    assert_eq!(
        (failure.host.as_str(), &failure.step),
        ("px1", &Step::Start)
    );
    assert!(
        fake.calls().iter().all(|(h, _)| h == "px1"),
        "{:?}",
        fake.calls()
    );
    assert!(!fake.of("px1").contains(&Step::Verify));
}

#[test]
fn a_host_failing_after_the_canary_lets_those_in_flight_finish_and_starts_no_more() {
    let plan = plan(Half::A, false, 2);
    let fake = Fake::failing("px2", Step::Stop, Cause::Check);
    let dir = tempfile::tempdir().unwrap();
    let outcome = upgrade(&plan, &fake, dir.path());
    assert_eq!(outcome.status, RunStatus::Partial);
    assert_eq!(outcome.failure.unwrap().host, "px2");
    // px3 was in flight beside px2: it finishes. px4 and pxatx2 never begin.
    assert!(fake.of("px3").contains(&Step::Verify), "{:?}", fake.calls());
    assert!(fake.of("px4").is_empty() && fake.of("pxatx2").is_empty());
    assert_eq!(outcome.completed, ["px1", "px3"]);
    // No failover without a critical window.
    assert!(
        fake.calls()
            .iter()
            .all(|(_, s)| !matches!(s, Step::StartFailover))
    );
}

#[test]
fn a_failure_in_the_critical_window_puts_the_untouched_half_back_in_order() {
    let plan = plan(Half::B, true, 2);
    let q = || "q.cluster".to_string();
    let fake = Fake::failing(BROKER, Step::Recreate(q()), Cause::Broker);
    let dir = tempfile::tempdir().unwrap();
    let outcome = upgrade(&plan, &fake, dir.path());
    assert_eq!(outcome.status, RunStatus::Failed);
    assert_eq!(outcome.failure.unwrap().step, Step::Recreate(q()));
    // Held again, put back as backed up, the other half started, then the messages back.
    let hold = fake.at(BROKER, &Step::FailoverHold(q())).unwrap();
    let restore = fake.at(BROKER, &Step::Restore(q())).unwrap();
    let release = fake.at(BROKER, &Step::FailoverRelease(q())).unwrap();
    assert!(hold < restore);
    for host in &plan.critical_stops {
        let start = fake.at(host, &Step::StartFailover).unwrap();
        assert!(restore < start && start < release, "{host}");
    }
    // No upgraded host started: the failover had none to stop.
    assert!(fake.calls().iter().all(|(_, s)| *s != Step::Start));
    let restored = entries(dir.path(), "r1")
        .iter()
        .any(|e| matches!(e.event, Event::ServiceRestored { .. }));
    assert!(restored);
}

#[test]
fn a_failover_stops_the_upgraded_hosts_that_started_first() {
    let plan = plan(Half::B, true, 2);
    let fake = Fake::failing("px6", Step::Start, Cause::Check);
    let dir = tempfile::tempdir().unwrap();
    let outcome = upgrade(&plan, &fake, dir.path());
    assert_eq!(outcome.status, RunStatus::Failed);
    // The hosts that began to start (the canary px5, px6, and px7 if it was in flight
    // beside px6) are stopped before the queue is put back; the others are left alone.
    let restore = fake.at(BROKER, &Step::Restore("q.cluster".into())).unwrap();
    let started: Vec<String> = hosts_of(&plan)
        .into_iter()
        .filter(|h| fake.at(h, &Step::Start).is_some())
        .collect();
    assert!(
        started.len() >= 2 && started.len() < plan.hosts.len(),
        "{started:?}"
    );
    for host in hosts_of(&plan) {
        match fake.at(&host, &Step::StopFailover) {
            Some(stop) => assert!(started.contains(&host) && stop < restore, "{host}"),
            None => assert!(!started.contains(&host), "{host} started, not stopped"),
        }
    }
}

#[test]
fn a_lost_lock_or_journal_stops_the_run_without_a_failover() {
    for cause in [Cause::Lock, Cause::Journal] {
        let plan = plan(Half::B, true, 2);
        let fake = Fake::failing(BROKER, Step::Recreate("q.cluster".into()), cause);
        let dir = tempfile::tempdir().unwrap();
        let outcome = upgrade(&plan, &fake, dir.path());
        assert_eq!(outcome.status, RunStatus::Failed);
        let failover = fake
            .calls()
            .into_iter()
            .filter(|(_, s)| matches!(s, Step::Restore(_) | Step::StartFailover))
            .count();
        assert_eq!(failover, 0, "{cause:?}");
    }
}

#[test]
fn a_step_that_failed_for_want_of_the_broker_is_done_again_once_it_answers() {
    let plan = plan(Half::A, false, 1);
    let fake = Fake::failing("px1", Step::Stop, Cause::BrokerUnavailable);
    let dir = tempfile::tempdir().unwrap();
    let outcome = upgrade(&plan, &fake, dir.path());
    assert_eq!(outcome.status, RunStatus::Done, "{:?}", outcome.failure);
    let stops = fake.of("px1").iter().filter(|s| **s == Step::Stop).count();
    assert_eq!(stops, 2);
}

/// While the run waits for the broker, the step that waits says so every so often, with
/// the deadline (the broker's `reconnect_deadline`).
#[test]
fn a_wait_for_the_broker_says_what_it_waits_for_and_its_deadline() {
    let plan = plan(Half::A, false, 1);
    let fake = Fake::failing("px1", Step::Stop, Cause::BrokerUnavailable);
    // Found down four times, a quarter of a second apart.
    fake.down.store(4, std::sync::atomic::Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let (outcome, said) = watched_upgrade(&plan, &fake, dir.path(), Duration::from_millis(200));
    assert_eq!(outcome.status, RunStatus::Done, "{:?}", outcome.failure);
    let (inventory, _) = fixture();
    let limit = inventory.group("ops").unwrap().broker.reconnect_deadline;
    let waits: Vec<&State> = said
        .iter()
        .filter(|p| p.host == "px1" && p.step == "stop")
        .map(|p| &p.state)
        .filter(|s| matches!(s, State::Running { doing: Some(d), .. } if d.contains("waiting for the broker")))
        .collect();
    assert!(waits.len() >= 2, "{said:#?}");
    for wait in waits {
        assert!(
            matches!(wait, State::Running { deadline: Some(d), .. } if *d == limit),
            "{wait:?}"
        );
    }
}

/// A step that failed because a queue's home node is down (a cluster node stopped) is done
/// again only once that node runs again, not as soon as the other nodes answer: the wait
/// says which node it waits for.
#[test]
fn a_step_that_failed_on_a_stopped_node_is_done_again_once_that_node_runs() {
    let plan = plan(Half::A, false, 1);
    let fake = Fake::failing("px1", Step::Stop, Cause::BrokerUnavailable);
    *fake.detail.lock().unwrap() = Some(
        "broker b: declare of queue q failed with HTTP 404: {\"error\":\"not_found\",\
         \"reason\":\"home node 'rabbit@c1' of durable queue 'q' in vhost 'ops' is down or \
         inaccessible\"}"
            .into(),
    );
    fake.node_down.store(4, std::sync::atomic::Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let (outcome, said) = watched_upgrade(&plan, &fake, dir.path(), Duration::from_millis(200));
    assert_eq!(outcome.status, RunStatus::Done, "{:?}", outcome.failure);
    let stops = fake.of("px1").iter().filter(|s| **s == Step::Stop).count();
    assert_eq!(stops, 2);
    let asked = fake.node_asked.lock().unwrap().clone();
    assert_eq!(asked, ["rabbit@c1"; 5]);
    assert!(
        said.iter().any(|p| matches!(&p.state,
            State::Running { doing: Some(d), .. } if d.contains("waiting for the broker's node rabbit@c1 to run again"))),
        "{said:#?}"
    );
}

/// A node that does not run again within the broker's `reconnect_deadline` stops the run at
/// that step, saying which node.
#[test]
fn a_stopped_node_that_stays_down_stops_the_run_at_the_step() {
    let plan = plan(Half::A, false, 1);
    let fake = Fake::failing("px1", Step::Stop, Cause::BrokerUnavailable);
    *fake.detail.lock().unwrap() =
        Some("home node 'rabbit@c1' of durable queue 'q' in vhost 'ops' is down".into());
    fake.node_down
        .store(usize::MAX, std::sync::atomic::Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let mut journal = Journal::create(dir.path(), "ops", &plan.run_id).unwrap();
    journal.append(started(&plan)).unwrap();
    let mut engine = bare_engine(&plan, &fake, journal, &[]);
    engine.group.broker.reconnect_deadline = Duration::from_millis(800);
    let outcome = tokio_test(Arc::new(engine).run());
    let failure = outcome.failure.expect("the run stopped");
    assert_eq!(
        (failure.host.as_str(), failure.cause),
        ("px1", Cause::BrokerUnavailable)
    );
    assert!(
        failure
            .detail
            .contains("the broker's node rabbit@c1 did not run again within"),
        "{failure:?}"
    );
}

/// A step that keeps failing for want of the broker though the broker answers (a node that
/// runs again but has not recovered its queues yet) is tried again at a pace, not as fast as
/// it fails, and no longer than the broker's `reconnect_deadline`: then the run stops there.
#[test]
fn a_step_failing_while_the_broker_answers_is_paced_and_stops_at_the_deadline() {
    let plan = plan(Half::A, false, 1);
    let fake = Fake::failing("px1", Step::Stop, Cause::BrokerUnavailable);
    for _ in 0..200 {
        fake.failures
            .lock()
            .unwrap()
            .push(("px1".into(), Step::Stop, Cause::BrokerUnavailable));
    }
    *fake.detail.lock().unwrap() =
        Some("home node 'rabbit@c1' of durable queue 'q' in vhost 'ops' is down".into());
    let dir = tempfile::tempdir().unwrap();
    let mut journal = Journal::create(dir.path(), "ops", &plan.run_id).unwrap();
    journal.append(started(&plan)).unwrap();
    let mut engine = bare_engine(&plan, &fake, journal, &[]);
    engine.group.broker.reconnect_deadline = Duration::from_millis(1500);
    let outcome = tokio_test(Arc::new(engine).run());
    let failure = outcome.failure.expect("the run stopped");
    assert_eq!(failure.cause, Cause::BrokerUnavailable, "{failure:?}");
    assert!(
        failure.detail.contains("though the broker answers"),
        "{failure:?}"
    );
    // Tries at 0, 0, 0.25, 0.75, 1.75 s: five at most within 1.5 s.
    let stops = fake.of("px1").iter().filter(|s| **s == Step::Stop).count();
    assert!((3..=5).contains(&stops), "{stops} tries");
}

/// What a rollback planned, did and swapped.
struct RolledBack {
    plan: RollbackPlan,
    fake: Arc<Fake>,
    swaps: Vec<String>,
}

/// Rolls back the run journaled in `dir` with a fake; it must succeed.
fn roll_back(upgrade: &UpgradePlan, dir: &std::path::Path) -> RolledBack {
    let (inventory, _) = fixture();
    let ops = inventory.group("ops").unwrap();
    let earlier = entries(dir, &upgrade.run_id);
    let options = rollback_plan::Options {
        reset_available: true,
        keep_upgraded_stopped: false,
        preserve_messages: true,
    };
    let plan = rollback_plan::plan("rb1", ops, upgrade, &earlier, options).unwrap();
    let fake = Arc::new(Fake::default());
    let journal = Journal::create(dir, "ops", "rb1").unwrap();
    let engine = engine(&plan, &fake, journal, &earlier);
    let swaps = Mutex::new(vec![]);
    let outcome = tokio_test(engine.run_rollback(|swap| {
        swaps.lock().unwrap().push(swap.pair.clone());
        Ok(())
    }));
    assert_eq!(outcome.status, RunStatus::Done, "{:?}", outcome.failure);
    let swaps = swaps.into_inner().unwrap();
    RolledBack { plan, fake, swaps }
}

#[test]
fn rolling_back_a_canary_that_failed_before_installing_reinstalls_nothing() {
    let upgrade_plan = plan(Half::A, false, 1);
    let dir = tempfile::tempdir().unwrap();
    let failed = Fake::failing("px1", Step::Backup, Cause::Host);
    upgrade(&upgrade_plan, &failed, dir.path());
    let RolledBack { plan, fake, swaps } = roll_back(&upgrade_plan, dir.path());
    assert_eq!(plan.stop, ["px1"]);
    assert_eq!(plan.repair.len(), 1);
    assert!(
        swaps.is_empty(),
        "half a's active hosts have no passive partner in half b"
    );
    let px1 = fake.of("px1");
    assert_eq!(px1[..2], [Step::RollbackStop, Step::RollbackVerifyStopped]);
    assert!(!px1.contains(&Step::Reinstall), "{px1:?}");
    assert_eq!(px1[px1.len() - 2..], [Step::StartAgain, Step::VerifyAgain]);
}

#[test]
fn rolling_back_a_finished_run_serves_first_then_repairs_every_host() {
    let upgrade_plan = plan(Half::A, false, 2);
    let dir = tempfile::tempdir().unwrap();
    upgrade(&upgrade_plan, &Arc::new(Fake::default()), dir.path());
    let RolledBack { plan, fake, swaps } = roll_back(&upgrade_plan, dir.path());
    assert_eq!(plan.stop, hosts_of(&upgrade_plan));
    // Every upgraded host is stopped, and the old release runs, before any repair.
    let first_repair = fake
        .calls()
        .iter()
        .position(|(_, s)| *s == Step::Reinstall)
        .unwrap();
    for host in hosts_of(&upgrade_plan) {
        assert!(fake.at(&host, &Step::RollbackVerifyStopped).unwrap() < first_repair);
        assert!(fake.of(&host).contains(&Step::Reinstall), "{host}");
    }
    for host in &plan.start_old {
        assert!(
            fake.at(host, &Step::FailoverStart).unwrap() < first_repair,
            "{host}"
        );
    }
    // The passive host is reinstalled, never started; no pair is swapped.
    assert!(!fake.of("pxatx2").contains(&Step::StartAgain));
    assert!(swaps.is_empty());
}

#[test]
fn rolling_back_a_critical_window_the_failover_put_back_only_moves_the_held_messages() {
    let upgrade_plan = plan(Half::B, true, 2);
    let q = || "q.cluster".to_string();
    let dir = tempfile::tempdir().unwrap();
    let failed = Fake::failing(BROKER, Step::Recreate(q()), Cause::Broker);
    upgrade(&upgrade_plan, &failed, dir.path());
    let RolledBack { plan, fake, swaps } = roll_back(&upgrade_plan, dir.path());
    assert_eq!(plan.restored, [q()]);
    assert!(!plan.queues.contains(&q()));
    assert!(fake.at(BROKER, &Step::RollbackRestore(q())).is_none());
    assert!(fake.at(BROKER, &Step::RollbackRelease(q())).is_some());
    // Each host's own queue was recreated: it is restored, after every stop.
    let last_stop = fake
        .calls()
        .iter()
        .rposition(|(_, s)| *s == Step::RollbackVerifyStopped)
        .unwrap();
    for host in ["px5", "px6", "px7", "px8", "pxatx1"] {
        let queue = format!("q.pump.{host}");
        let restore = fake.at(BROKER, &Step::RollbackRestore(queue)).unwrap();
        assert!(restore > last_stop, "{host}");
    }
    // The active host of the pair that was upgraded is swapped out, and stays stopped.
    assert_eq!(swaps, ["pxatx"]);
    assert!(!fake.of("pxatx1").contains(&Step::StartAgain));
}

/// The minor release on ops half b in waves px5 | px6 | px7 px8 pxatx1, with `asked`.
fn waves_plan(asked: crate::plan::rollout::Asked) -> UpgradePlan {
    use crate::playbook::rollout::Bound;
    let mut options = Options::new(1, true);
    options.rollout = crate::plan::rollout::Asked {
        waves: Some(vec![Bound::Count(1), Bound::Count(2), Bound::Percent(100)]),
        ..asked
    };
    let plan = plan_asked(Half::B, false, options);
    assert!(!plan.two_phase);
    let waves: Vec<Vec<String>> = plan.waves.iter().map(|w| w.hosts.clone()).collect();
    assert_eq!(
        waves,
        [vec!["px5"], vec!["px6"], vec!["px7", "px8", "pxatx1"]]
    );
    plan
}

#[test]
fn a_failure_in_a_wave_stops_the_run_before_the_next_wave() {
    let plan = waves_plan(Default::default());
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::failing("px6", Step::Verify, Cause::Check);
    let outcome = upgrade(&plan, &fake, dir.path());
    assert_eq!(outcome.status, RunStatus::Partial);
    assert_eq!(outcome.completed, ["px5"]);
    assert_eq!(
        outcome.failure.as_ref().map(|f| f.host.as_str()),
        Some("px6")
    );
    for host in ["px7", "px8", "pxatx1"] {
        assert!(fake.of(host).is_empty(), "{host} was touched");
    }
}

#[test]
fn max_failures_lets_the_run_go_past_a_host_but_never_past_the_canary() {
    use crate::playbook::rollout::Bound;
    let asked = crate::plan::rollout::Asked {
        max_failures: Some(Bound::Count(1)),
        ..Default::default()
    };
    let plan = waves_plan(asked.clone());
    assert_eq!(plan.policy.max_failures, 1);
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::failing("px6", Step::Verify, Cause::Check);
    let outcome = upgrade(&plan, &fake, dir.path());
    assert_eq!(outcome.status, RunStatus::Partial, "{:?}", outcome.failure);
    assert!(outcome.failure.is_none(), "{:?}", outcome.failure);
    let failed: Vec<&str> = outcome.failures.iter().map(|f| f.host.as_str()).collect();
    assert_eq!(failed, ["px6"]);
    assert_eq!(outcome.completed, ["px5", "px7", "px8", "pxatx1"]);
    // A second failure is one too many: the run stops in that wave.
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::failing("px6", Step::Verify, Cause::Check);
    fake.failures
        .lock()
        .unwrap()
        .push(("px7".into(), Step::Upgrade, Cause::Host));
    let outcome = upgrade(&plan, &fake, dir.path());
    assert_eq!(
        outcome.failure.as_ref().map(|f| f.host.as_str()),
        Some("px7")
    );
    // The canary's failure stops the run whatever the bound.
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::failing("px5", Step::Verify, Cause::Check);
    let outcome = upgrade(&plan, &fake, dir.path());
    assert_eq!(
        outcome.failure.as_ref().map(|f| f.host.as_str()),
        Some("px5")
    );
    assert!(fake.of("px6").is_empty());
}

#[test]
fn a_pause_ends_the_run_at_its_wave_and_a_resume_goes_on_from_the_next() {
    use crate::plan::rollout::PauseAfter;
    let plan = waves_plan(crate::plan::rollout::Asked {
        pause_after: Some(PauseAfter::Canary),
        ..Default::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let fake = Arc::new(Fake::default());
    let outcome = upgrade(&plan, &fake, dir.path());
    assert_eq!(outcome.status, RunStatus::Paused, "{:?}", outcome.failure);
    assert_eq!(outcome.completed, ["px5"]);
    assert!(fake.of("px6").is_empty());
    assert_eq!(fake.of(BROKER), [Step::Pause(1)]);

    let second = Arc::new(Fake::default());
    let earlier = entries(dir.path(), "r1");
    let journal = Journal::reopen(&journal_path(dir.path(), "r1")).unwrap();
    let resumed = tokio_test(engine(&plan, &second, journal, &earlier).run());
    assert_eq!(resumed.status, RunStatus::Done, "{:?}", resumed.failure);
    assert!(second.of("px5").is_empty() && second.of(BROKER).is_empty());
    assert_eq!(second.of("px6")[0], Step::Backup);
    assert_eq!(resumed.completed, ["px5", "px6", "px7", "px8", "pxatx1"]);
}

/// Like [`plan`], with the fixture's artifacts: their phase before every other step.
fn with_artifacts(half: Half, expire: bool, parallel: usize) -> UpgradePlan {
    let mut plan = plan(half, expire, parallel);
    for host in &mut plan.hosts {
        host.artifacts = vec![Step::Artifacts];
    }
    plan
}

#[test]
fn artifacts_reach_every_host_of_the_half_before_anything_else_in_either_phase() {
    for (half, expire) in [(Half::A, false), (Half::B, true)] {
        let plan = with_artifacts(half, expire, 1);
        assert_eq!(plan.two_phase, expire);
        let fake = Arc::new(Fake::default());
        let dir = tempfile::tempdir().unwrap();
        let outcome = upgrade(&plan, &fake, dir.path());
        assert_eq!(outcome.status, RunStatus::Done, "{:?}", outcome.failure);
        let calls = fake.calls();
        let copies = plan.hosts.len();
        assert!(
            calls[..copies].iter().all(|(_, s)| *s == Step::Artifacts),
            "{calls:?}"
        );
        assert!(
            calls[copies..].iter().all(|(_, s)| *s != Step::Artifacts),
            "{calls:?}"
        );
        for host in &plan.hosts {
            assert_eq!(fake.of(&host.host)[0], Step::Artifacts, "{}", host.host);
        }
    }
}

#[test]
fn an_artifact_failing_on_one_host_stops_the_run_before_anything_changed() {
    let plan = with_artifacts(Half::B, true, 2);
    let fake = Fake::failing("px7", Step::Artifacts, Cause::Check);
    let dir = tempfile::tempdir().unwrap();
    let outcome = upgrade(&plan, &fake, dir.path());
    assert_eq!(outcome.status, RunStatus::Failed);
    assert!(outcome.completed.is_empty());
    let failure = outcome.failure.unwrap();
    assert_eq!(
        (failure.host.as_str(), &failure.step),
        ("px7", &Step::Artifacts)
    );
    assert!(
        failure.detail.contains("nothing was changed"),
        "{}",
        failure.detail
    );
    assert!(
        fake.calls().iter().all(|(_, s)| *s == Step::Artifacts),
        "{:?}",
        fake.calls()
    );
    let summary = entries(dir.path(), "r1")
        .into_iter()
        .find_map(|e| match e.event {
            Event::Finished { summary, .. } => Some(summary),
            _ => None,
        });
    assert!(
        summary
            .as_deref()
            .is_some_and(|s| s.contains("px7") && s.contains("nothing was changed")),
        "{summary:?}"
    );

    // A resume copies only where it is not done, then goes on.
    let second = Arc::new(Fake::default());
    let earlier = entries(dir.path(), "r1");
    let journal = Journal::reopen(&journal_path(dir.path(), "r1")).unwrap();
    let resumed = tokio_test(engine(&plan, &second, journal, &earlier).run());
    assert_eq!(resumed.status, RunStatus::Done, "{:?}", resumed.failure);
    let copied_again: Vec<String> = second
        .calls()
        .into_iter()
        .filter(|(_, s)| *s == Step::Artifacts)
        .map(|(h, _)| h)
        .collect();
    assert!(
        copied_again.contains(&"px7".to_string()),
        "{copied_again:?}"
    );
    let done_first: Vec<String> = fake
        .calls()
        .into_iter()
        .filter(|(h, _)| h != "px7")
        .map(|(h, _)| h)
        .collect();
    assert!(
        done_first.iter().all(|h| !copied_again.contains(h)),
        "{done_first:?} {copied_again:?}"
    );
}

#[test]
fn a_long_step_says_every_so_often_what_it_waits_for_and_its_deadline() {
    let plan = plan(Half::A, false, 1);
    let fake = Arc::new(Fake::default());
    fake.slow
        .lock()
        .unwrap()
        .push(("px1".into(), Step::Verify, Duration::from_millis(450)));
    let dir = tempfile::tempdir().unwrap();
    let every = Duration::from_millis(100);
    let (outcome, said) = watched_upgrade(&plan, &fake, dir.path(), every);
    assert_eq!(outcome.status, RunStatus::Done, "{:?}", outcome.failure);
    let of = |host: &str, step: &Step| -> Vec<State> {
        let step = step.to_string();
        said.iter()
            .filter(|p| p.host == host && p.step == step)
            .map(|p| p.state.clone())
            .collect()
    };
    let verify = plan.rendered.verify.timeout;
    let states = of("px1", &Step::Verify);
    assert_eq!(
        states.first(),
        Some(&State::Started {
            deadline: Some(verify)
        }),
        "{states:?}"
    );
    let running: Vec<&State> = states
        .iter()
        .filter(|s| matches!(s, State::Running { .. }))
        .collect();
    assert!(running.len() >= 3, "{states:?}");
    for state in running {
        let State::Running {
            seconds,
            deadline,
            doing,
        } = state
        else {
            unreachable!()
        };
        assert!(*seconds >= 0.09, "{state:?}");
        assert_eq!((*deadline, doing), (Some(verify), &None), "{state:?}");
    }
    // A step that is quick says nothing between its start and its end; a command's deadline
    // is the release's command timeout.
    let stop = of("px1", &Step::Stop);
    assert!(
        matches!(stop.as_slice(), [State::Started { deadline: Some(d) }, State::Done { .. }] if *d == plan.rendered.command_timeout),
        "{stop:?}"
    );
}

#[test]
fn each_host_says_once_that_it_is_through_and_whether_it_is_done() {
    let through = |said: &[Progress]| -> Vec<(String, bool)> {
        let mut hosts: Vec<(String, bool)> = said
            .iter()
            .filter_map(|p| match p.state {
                State::HostFinished { ok } => Some((p.host.clone(), ok)),
                _ => None,
            })
            .collect();
        hosts.sort();
        hosts
    };
    let every = Duration::from_secs(10);
    for (half, expire) in [(Half::A, false), (Half::B, true)] {
        let plan = plan(half, expire, 2);
        let dir = tempfile::tempdir().unwrap();
        let fake = Arc::new(Fake::default());
        let (outcome, said) = watched_upgrade(&plan, &fake, dir.path(), every);
        assert_eq!(outcome.status, RunStatus::Done, "{:?}", outcome.failure);
        let mut all: Vec<(String, bool)> = hosts_of(&plan).into_iter().map(|h| (h, true)).collect();
        all.sort();
        assert_eq!(through(&said), all, "half {half}");
    }
    // A canary that fails: it is through, failed; no other host began.
    let plan = plan(Half::A, false, 2);
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::failing("px1", Step::Start, Cause::Check);
    let (outcome, said) = watched_upgrade(&plan, &fake, dir.path(), every);
    assert_eq!(outcome.status, RunStatus::Failed);
    assert_eq!(through(&said), [("px1".to_string(), false)]);
}
