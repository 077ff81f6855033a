//! The controllers, one per kind, started together while this replica leads. Each controller
//! module exposes `run(ctx, shutdown)`; [`Controllers::start`] lists them, so wiring stays on one
//! screen. A kind whose controller has not landed is simply not listed here (see the README's
//! table): no placeholder reconciler pretends to handle it.

pub mod baseline;

use std::sync::Arc;

use kube::Client;
use kube::runtime::events::Reporter;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::metrics::Metrics;

/// Field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "opsec-operator";

/// What every controller shares.
#[derive(Clone)]
pub struct Context {
    pub client: Client,
    pub metrics: Arc<Metrics>,
    pub reporter: Reporter,
}

/// The running controllers.
pub struct Controllers {
    tasks: Vec<(&'static str, JoinHandle<()>)>,
}

impl Controllers {
    /// Starts every controller; each stops when `shutdown` turns true.
    pub fn start(
        args: &crate::config::RunArgs,
        client: Client,
        metrics: Arc<Metrics>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        let ctx = Context {
            client,
            metrics,
            reporter: Reporter {
                controller: FIELD_MANAGER.into(),
                instance: std::env::var("POD_NAME").ok(),
            },
        };
        // Controllers join this list as their issues land.
        let mut tasks: Vec<(&'static str, JoinHandle<()>)> = Vec::new();
        if args.runs("baseline") {
            tasks.push(("baseline", baseline::run(ctx.clone(), shutdown.clone())));
        }
        Self { tasks }
    }

    /// Waits for every controller to finish its in-flight reconciles after shutdown.
    pub async fn stop(self) {
        for (name, task) in self.tasks {
            if let Err(err) = task.await {
                tracing::warn!(controller = name, error = %err, "controller task ended abnormally");
            }
        }
    }

    /// Stops every controller at once (the Lease was lost: nothing may act any more).
    pub fn abort(&self) {
        for (_, task) in &self.tasks {
            task.abort();
        }
    }
}
