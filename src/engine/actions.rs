//! The engine's one seam with the world: what each step does. The engine decides which step
//! runs when (order, skipping what the journal shows done, waits, the failure policy) and
//! journals it; [`Actions`] does it. [`World`] runs the release's commands on the hosts and
//! calls the broker; the unit tests' fake records the calls and fails where told.

use std::future::Future;
use std::pin::Pin;

use super::{Done, Engine, Planned, StepError};
use crate::plan::rollback::RollbackPlan;
use crate::plan::upgrade::UpgradePlan;
use crate::step::Step;

/// A step's work in progress.
pub type Act<'a> = Pin<Box<dyn Future<Output = Result<Done, StepError>> + Send + 'a>>;

/// Whether the broker answers, in progress.
pub type Up<'a> = Pin<Box<dyn Future<Output = bool> + Send + 'a>>;

/// Does the steps of a plan of kind `P`.
pub trait Actions<P>: Send + Sync {
    /// Does one step on a host (or on the broker).
    fn act<'a>(&'a self, engine: &'a Engine<P>, host: &'a str, step: &'a Step) -> Act<'a>;

    /// True once the broker answers (its management API and AMQP).
    fn broker_up<'a>(&'a self, engine: &'a Engine<P>) -> Up<'a>;

    /// True once the cluster node `node` runs again (a queue's home node that stopped).
    fn node_up<'a>(&'a self, _engine: &'a Engine<P>, _node: &'a str) -> Up<'a> {
        Box::pin(async { true })
    }
}

/// Does nothing and fails every step: what an engine has until it is given actions.
pub struct Idle;

impl<P: Planned> Actions<P> for Idle {
    fn act<'a>(&'a self, _: &'a Engine<P>, _: &'a str, step: &'a Step) -> Act<'a> {
        let err = StepError::from(format!("{step}: the engine was given no actions"));
        Box::pin(async move { Err(err) })
    }

    fn broker_up<'a>(&'a self, _: &'a Engine<P>) -> Up<'a> {
        Box::pin(async { false })
    }
}

/// The real thing: commands over SSH, the management API, AMQP.
pub struct World;

/// What the steps of a kind of plan do in the world: its interpreter's own work.
pub trait Interpret {
    fn interpret<'a>(&'a self, host: &'a str, step: &'a Step) -> Act<'a>;
}

impl Interpret for Engine<UpgradePlan> {
    fn interpret<'a>(&'a self, host: &'a str, step: &'a Step) -> Act<'a> {
        Box::pin(self.act(host, step))
    }
}

impl Interpret for Engine<RollbackPlan> {
    fn interpret<'a>(&'a self, host: &'a str, step: &'a Step) -> Act<'a> {
        Box::pin(self.rollback_act(host, step))
    }
}

impl<P: Planned> Actions<P> for World
where
    Engine<P>: Interpret,
{
    fn act<'a>(&'a self, engine: &'a Engine<P>, host: &'a str, step: &'a Step) -> Act<'a> {
        engine.interpret(host, step)
    }

    fn broker_up<'a>(&'a self, engine: &'a Engine<P>) -> Up<'a> {
        Box::pin(engine.broker_answers())
    }

    fn node_up<'a>(&'a self, engine: &'a Engine<P>, node: &'a str) -> Up<'a> {
        Box::pin(async move { engine.management.node_running(node).await.unwrap_or(false) })
    }
}

impl<P: Planned> Engine<P> {
    /// The broker's management API and AMQP both answer.
    pub(super) async fn broker_answers(&self) -> bool {
        match self.management.check_vhost().await {
            Ok(()) => self.amqp().await.is_ok(),
            Err(_) => false,
        }
    }
}
