//! The controllers, one per kind, started together while this replica leads. Each controller
//! module exposes `run(ctx, shutdown)`; [`Controllers::start`] lists them, so wiring stays on one
//! screen. A kind whose controller has not landed is simply not listed here (see the README's
//! table): no placeholder reconciler pretends to handle it.

pub mod backup;
pub mod baseline;
pub mod kit;
pub mod tenant;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use kube::Client;
use kube::runtime::events::Reporter;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::metrics::Metrics;

pub use crate::FIELD_MANAGER;

/// Server-side applies `status` to the status subresource of `name` under [`FIELD_MANAGER`]
/// (forced: the operator owns its kinds' status). Fields it no longer sets are removed.
pub async fn apply_status<K>(
    api: &kube::Api<K>,
    name: &str,
    status: &impl serde::Serialize,
) -> Result<(), kube::Error>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let body = serde_json::json!({"apiVersion": K::api_version(&()), "kind": K::kind(&()), "status": status});
    let params = kube::api::PatchParams::apply(FIELD_MANAGER).force();
    api.patch_status(name, &params, &kube::api::Patch::Apply(body))
        .await
        .map(|_| ())
}

/// What every controller shares.
#[derive(Clone)]
pub struct Context {
    pub client: Client,
    pub metrics: Arc<Metrics>,
    pub reporter: Reporter,
    /// Where a controller says its caches hold a complete first list (for `/readyz`).
    pub synced: Arc<Synced>,
    /// Acting for tenants, and the provider's limits on it.
    pub tenancy: Arc<tenant::Tenancy>,
}

/// Which started controllers still wait for their caches' first complete list.
#[derive(Default)]
pub struct Synced {
    pending: Mutex<BTreeSet<&'static str>>,
}

impl Synced {
    fn expect(&self, controller: &'static str) {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(controller);
    }

    /// Called by a controller once its caches are synced.
    pub fn done(&self, controller: &str) {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(controller);
        tracing::info!(controller, "caches synced");
    }

    /// The controllers whose caches are not synced yet.
    pub fn pending(&self) -> Vec<&'static str> {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .copied()
            .collect()
    }
}

/// Waits until `store` holds its first complete list. kube's readiness signal wakes only the
/// last task that waited on it, and the controller's own runner waits on it too, so this polls
/// again every 250 ms instead of waiting once (a later poll sees the memoized readiness).
pub async fn store_synced<K>(store: &kube::runtime::reflector::Store<K>)
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    loop {
        let wait = tokio::time::timeout(
            std::time::Duration::from_millis(250),
            store.wait_until_ready(),
        );
        if wait.await.is_ok() {
            return;
        }
    }
}

/// A controller's reconcile bookkeeping: the reconcile metrics and a per-object exponential
/// backoff (1s, 2s, 4s ... up to 5 minutes), reset by the object's next success.
pub struct Reconciles {
    controller: &'static str,
    metrics: Arc<Metrics>,
    attempts: Mutex<std::collections::HashMap<String, u32>>,
}

impl Reconciles {
    pub fn new(controller: &'static str, metrics: Arc<Metrics>) -> Self {
        Self {
            controller,
            metrics,
            attempts: Default::default(),
        }
    }

    /// Records a finished reconcile of `key`; a success resets its backoff.
    pub fn finished(&self, key: &str, started: std::time::Instant, ok: bool) {
        let labels = crate::metrics::ControllerLabels {
            controller: self.controller.into(),
        };
        self.metrics.reconciles.get_or_create(&labels).inc();
        self.metrics
            .reconcile_duration
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
        if ok {
            self.attempts
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(key);
        }
    }

    /// Records a failure of `key` in the stable `category`; returns when to retry.
    pub fn failed(&self, key: &str, category: &str) -> std::time::Duration {
        self.metrics
            .reconcile_errors
            .get_or_create(&crate::metrics::ErrorLabels {
                controller: self.controller.into(),
                category: category.into(),
            })
            .inc();
        let mut attempts = self.attempts.lock().unwrap_or_else(|p| p.into_inner());
        let attempt = attempts.entry(key.to_string()).or_insert(0);
        *attempt = (*attempt + 1).min(9);
        std::time::Duration::from_secs(1 << (*attempt - 1)).min(std::time::Duration::from_secs(300))
    }
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
        tenancy: Arc<tenant::Tenancy>,
        metrics: Arc<Metrics>,
        synced: Arc<Synced>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        let ctx = Context {
            client,
            tenancy,
            metrics,
            synced: synced.clone(),
            reporter: Reporter {
                controller: FIELD_MANAGER.into(),
                instance: std::env::var("POD_NAME").ok(),
            },
        };
        // Controllers join this list as their issues land.
        let mut tasks: Vec<(&'static str, JoinHandle<()>)> = Vec::new();
        if args.runs("baseline") {
            synced.expect("baseline");
            tasks.push(("baseline", baseline::run(ctx.clone(), shutdown.clone())));
        }
        if args.runs("backup") {
            synced.expect("backup");
            tasks.push(("backup", backup::run(ctx.clone(), shutdown.clone())));
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
