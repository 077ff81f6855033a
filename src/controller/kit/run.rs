//! One way to run a controller: [`run`] drives a kube `Controller` over
//! [`DeserializeGuard`]-wrapped objects and gives every reconcile the same frame: a tracing span
//! with the kind, namespace and name; the reconcile metrics; a per-object exponential backoff
//! with jitter; a Warning Event for a failed reconcile whose reason is the error's category (the
//! same category is the metric label, and the Ready reason where the kind reports one);
//! readiness once the kind's cache holds its first list; and a graceful stop. An object that
//! cannot be parsed (a stored object older than its schema) is reported once, as an Event
//! `InvalidObject`, and waits for a change; every other object goes on.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::Resource;
use kube::core::DeserializeGuard;
use kube::runtime::Controller;
use kube::runtime::controller::Action;
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tracing::Instrument;

use super::Events;
use crate::controller::Context;

/// An error a reconcile returns: its category is the Warning Event's reason, the metric label
/// and (where the kind reports it) the Ready reason.
pub trait ReconcileError: std::error::Error + Send + Sync + 'static {
    /// Short stable CamelCase category.
    fn category(&self) -> &'static str;
    /// The object the failure is about, when it is another one than the reconciled object.
    fn related(&self) -> Option<ObjectReference> {
        None
    }
}

/// The category of an object that cannot be parsed.
pub const INVALID_OBJECT: &str = "InvalidObject";

/// What every running controller of one kind shares: its names, Events, metrics and backoff.
pub struct Kit {
    /// The kind it reconciles (`BackupPolicy`): span field, readiness entry.
    pub kind: &'static str,
    /// The controller group it belongs to (`backup`): the metrics' `controller` label.
    pub controller: &'static str,
    pub ctx: Context,
    pub events: Events,
    /// Failures in a row per object (by uid, so a new object of the same name starts
    /// afresh), reset by a success.
    attempts: Mutex<HashMap<String, u32>>,
    /// Unparsable objects already reported, by uid and resourceVersion.
    invalid: Mutex<HashSet<(String, String)>>,
}

impl Kit {
    pub fn new(kind: &'static str, controller: &'static str, ctx: &Context) -> Arc<Self> {
        Arc::new(Self {
            kind,
            controller,
            events: ctx.events(),
            ctx: ctx.clone(),
            attempts: Mutex::default(),
            invalid: Mutex::default(),
        })
    }

    fn labels(&self) -> crate::metrics::ControllerLabels {
        crate::metrics::ControllerLabels {
            controller: self.controller.into(),
        }
    }

    /// Records a finished reconcile of `key`; a success resets its backoff.
    fn finished(&self, key: &str, started: Instant, ok: bool) {
        let m = &self.ctx.metrics;
        m.reconciles.get_or_create(&self.labels()).inc();
        m.reconcile_duration
            .get_or_create(&self.labels())
            .observe(started.elapsed().as_secs_f64());
        if ok {
            self.attempts
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(key);
        }
    }

    /// Records a failure of `key` in `category`; returns when to retry.
    fn failed(&self, key: &str, category: &str) -> Duration {
        self.ctx
            .metrics
            .reconcile_errors
            .get_or_create(&crate::metrics::ErrorLabels {
                controller: self.controller.into(),
                category: category.into(),
            })
            .inc();
        let mut attempts = self.attempts.lock().unwrap_or_else(|p| p.into_inner());
        if attempts.len() > MAX_TRACKED && !attempts.contains_key(key) {
            // Objects deleted while failing are never reset: start afresh rather than grow.
            attempts.clear();
        }
        let attempt = attempts.entry(key.to_string()).or_insert(0);
        *attempt = attempt.saturating_add(1);
        backoff(*attempt, jitter(key, *attempt))
    }

    /// Whether an unparsable object of this version is reported for the first time.
    fn first_report(&self, meta: &kube::api::ObjectMeta) -> bool {
        let key = (
            meta.uid.clone().unwrap_or_default(),
            meta.resource_version.clone().unwrap_or_default(),
        );
        let mut seen = self.invalid.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() > MAX_TRACKED {
            seen.clear();
        }
        seen.insert(key)
    }
}

/// Objects whose failures (or unreadable versions) a kit tracks at most.
const MAX_TRACKED: usize = 16_384;

/// The delay before retry `attempt` (1 s doubling to 5 minutes), spread by `jitter` in
/// [-1, 1] by up to a fifth, so that objects failing together do not retry together.
pub fn backoff(attempt: u32, jitter: f64) -> Duration {
    let base = Duration::from_secs(1u64 << attempt.clamp(1, 10).saturating_sub(1))
        .min(Duration::from_secs(300));
    base.mul_f64(1.0 + 0.2 * jitter.clamp(-1.0, 1.0))
}

/// A number in [-1, 1] that differs per object, attempt and process.
fn jitter(key: &str, attempt: u32) -> f64 {
    static SEED: std::sync::OnceLock<std::collections::hash_map::RandomState> =
        std::sync::OnceLock::new();
    let mut h = SEED.get_or_init(Default::default).build_hasher();
    key.hash(&mut h);
    attempt.hash(&mut h);
    (h.finish() % 2001) as f64 / 1000.0 - 1.0
}

fn object_key(meta: &kube::api::ObjectMeta) -> String {
    match meta.namespace.as_deref() {
        Some(ns) => format!("{ns}/{}", meta.name.as_deref().unwrap_or_default()),
        None => meta.name.clone().unwrap_or_default(),
    }
}

/// The key of an object's backoff: its uid (its name when it has none).
fn backoff_key(meta: &kube::api::ObjectMeta) -> String {
    meta.uid.clone().unwrap_or_else(|| object_key(meta))
}

/// A kind a controller reconciles: one of the operator's resources, read whole.
pub trait Kind:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static
{
}

impl<K> Kind for K where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static
{
}

/// Resolves when `shutdown` turns true.
pub async fn stopped(mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

/// A new `Controller` of `K` over every namespace, each object wrapped in a
/// [`DeserializeGuard`] (add `watches` and `owns` before handing it to [`run`]).
pub fn controller<K: Kind>(client: &kube::Client) -> Controller<DeserializeGuard<K>> {
    Controller::new(
        kube::Api::<DeserializeGuard<K>>::all(client.clone()),
        kube::runtime::watcher::Config::default(),
    )
}

/// Runs `controller` until `shutdown`: every object that parses is handed to `reconcile`
/// within the kit's frame (see the module doc).
pub async fn run<K, S, E, F, Fut>(
    kit: Arc<Kit>,
    controller: Controller<DeserializeGuard<K>>,
    state: Arc<S>,
    reconcile: F,
    shutdown: watch::Receiver<bool>,
) where
    K: Kind,
    S: Send + Sync + 'static,
    E: ReconcileError,
    F: Fn(Arc<K>, Arc<S>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Action, E>> + Send + 'static,
{
    let store = controller.store();
    let synced = kit.ctx.synced.clone();
    let kind = kit.kind;
    let stop = shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = crate::controller::store_synced(&store) => synced.done(kind),
            _ = stopped(stop) => {}
        }
    });
    let reconcile = Arc::new(reconcile);
    let frame = Arc::new((kit.clone(), state));
    controller
        .graceful_shutdown_on(stopped(shutdown))
        .run(
            move |guard: Arc<DeserializeGuard<K>>, frame: Arc<(Arc<Kit>, Arc<S>)>| {
                let reconcile = reconcile.clone();
                async move {
                    let (kit, state) = (&frame.0, &frame.1);
                    let meta = guard.meta();
                    let span = tracing::info_span!(
                        "reconcile",
                        kind = kit.kind,
                        namespace = meta.namespace.as_deref().unwrap_or_default(),
                        name = meta.name.as_deref().unwrap_or_default(),
                    );
                    reconcile_framed(kit, state.clone(), guard, &*reconcile)
                        .instrument(span)
                        .await
                }
            },
            |guard: Arc<DeserializeGuard<K>>, err: &Failed<E>, frame: Arc<(Arc<Kit>, Arc<S>)>| {
                let kit = &frame.0;
                let key = object_key(guard.meta());
                let delay = kit.failed(&backoff_key(guard.meta()), err.0.category());
                tracing::warn!(kind = kit.kind, object = %key, error = %crate::backup::error_chain(&err.0), category = err.0.category(), retry_in = ?delay, "reconcile failed");
                Action::requeue(delay)
            },
            frame,
        )
        .for_each(|_| async {})
        .await;
    tracing::info!(kind = kit.kind, "controller stopped");
}

/// A failed reconcile, as the kube runtime carries it to the error policy.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct Failed<E: std::error::Error + 'static>(E);

async fn reconcile_framed<K, S, E, F, Fut>(
    kit: &Kit,
    state: Arc<S>,
    guard: Arc<DeserializeGuard<K>>,
    reconcile: &F,
) -> Result<Action, Failed<E>>
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug,
    E: ReconcileError,
    F: Fn(Arc<K>, Arc<S>) -> Fut,
    Fut: Future<Output = Result<Action, E>>,
{
    let started = Instant::now();
    let key = object_key(guard.meta());
    let backoff = backoff_key(guard.meta());
    let reference = guard.object_ref(&());
    let obj = match &guard.0 {
        Ok(obj) => Arc::new(obj.clone()),
        Err(invalid) => {
            // Nothing can be done with it until someone fixes it: said once, then it waits.
            if kit.first_report(&invalid.metadata) {
                kit.failed(&backoff, INVALID_OBJECT);
                tracing::warn!(kind = kit.kind, object = %key, error = %invalid.error, "an object that cannot be read waits for a change");
                kit.events
                    .problem(
                        &reference,
                        INVALID_OBJECT,
                        format!(
                            "the operator cannot read this object: {}{}",
                            invalid.error,
                            if invalid.metadata.deletion_timestamp.is_some()
                                && !invalid.metadata.finalizers.as_deref().unwrap_or_default().is_empty()
                            {
                                "; its deletion waits for its finalizers, which the operator cannot run until the object is fixed"
                            } else {
                                ""
                            }
                        ),
                        None,
                        None,
                    )
                    .await;
            }
            return Ok(Action::await_change());
        }
    };
    let result = reconcile(obj, state).await;
    kit.finished(&backoff, started, result.is_ok());
    match result {
        Ok(action) => Ok(action),
        Err(e) => {
            kit.events
                .problem(
                    &reference,
                    e.category(),
                    crate::backup::error_chain(&e),
                    e.related(),
                    None,
                )
                .await;
            Err(Failed(e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_five_minutes_and_spreads_by_a_fifth() {
        assert_eq!(backoff(1, 0.0), Duration::from_secs(1));
        assert_eq!(backoff(2, 0.0), Duration::from_secs(2));
        assert_eq!(backoff(5, 0.0), Duration::from_secs(16));
        assert_eq!(backoff(9, 0.0), Duration::from_secs(256));
        assert_eq!(backoff(10, 0.0), Duration::from_secs(300));
        assert_eq!(backoff(u32::MAX, 0.0), Duration::from_secs(300));
        assert_eq!(backoff(3, 1.0), Duration::from_secs_f64(4.8));
        assert_eq!(backoff(3, -1.0), Duration::from_secs_f64(3.2));
        let spread: HashSet<u64> = (0..50)
            .map(|i| (jitter(&format!("ns/obj-{i}"), 3) * 1000.0) as u64)
            .collect();
        assert!(spread.len() > 10, "objects failing together retry apart");
        assert!((0..100).all(|i| jitter(&format!("{i}"), 1).abs() <= 1.0));
    }
}
