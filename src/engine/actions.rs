//! The engine's one seam with the world: what each step does. The engine decides which step
//! runs when (order, skipping what the journal shows done, waits, the failure policy) and
//! journals it; [`Actions`] does it. [`World`] runs the release's commands on the hosts and
//! calls the broker; the unit tests' fake records the calls and fails where told.

use std::future::Future;
use std::pin::Pin;

use super::{Done, Engine, StepError};
use crate::plan::rollback::Repair;
use crate::step::Step;

/// A step's work in progress.
pub type Act<'a> = Pin<Box<dyn Future<Output = Result<Done, StepError>> + Send + 'a>>;

/// Does the steps.
pub trait Actions: Send + Sync {
    /// Does one step on a host (or on the broker). `repair`: a rollback's repair of that host.
    fn act<'a>(
        &'a self,
        engine: &'a Engine,
        host: &'a str,
        step: &'a Step,
        repair: Option<&'a Repair>,
    ) -> Act<'a>;

    /// True once the broker answers (its management API and AMQP).
    fn broker_up<'a>(
        &'a self,
        engine: &'a Engine,
    ) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>>;
}

/// The real thing: commands over SSH, the management API, AMQP.
pub struct World;

impl Actions for World {
    fn act<'a>(
        &'a self,
        engine: &'a Engine,
        host: &'a str,
        step: &'a Step,
        repair: Option<&'a Repair>,
    ) -> Act<'a> {
        Box::pin(async move {
            if step.of_rollback() {
                engine.rollback_act(host, step, repair).await
            } else {
                engine.act(host, step).await
            }
        })
    }

    fn broker_up<'a>(
        &'a self,
        engine: &'a Engine,
    ) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>> {
        Box::pin(async move {
            match engine.management.check_vhost().await {
                Ok(()) => engine.amqp().await.is_ok(),
                Err(_) => false,
            }
        })
    }
}
