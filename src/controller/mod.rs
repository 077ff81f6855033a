//! The controllers, started together while this replica leads. Each registers in one place,
//! [`CONTROLLERS`] (its name, kinds, metrics and start function), and runs over the shared
//! [`kit`]. A kind whose controller has not landed is simply not listed (see the README's
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
    /// Where detections go (EmergencyPlan listens).
    pub detections: crate::signals::Detections,
    /// The one Event publisher (its recorder folds repeats about an object into one series,
    /// whichever controller publishes them).
    events: kit::Events,
}

impl Context {
    /// The operator's Event publisher.
    pub fn events(&self) -> kit::Events {
        self.events.clone()
    }
}

/// A controller, registered in [`CONTROLLERS`]: the one place a new kind is added.
pub struct Registration {
    /// Its name for `--controllers` and the metrics' prefix and `controller` label.
    pub name: &'static str,
    /// The kinds it reconciles: `/readyz` waits until each one's cache is synced.
    pub kinds: &'static [&'static str],
    /// Registers its own metrics in its sub-registry (`opsec_<name>_...`).
    pub metrics: crate::metrics::RegisterKind,
    /// Starts it; it stops when the receiver turns true.
    pub start: fn(Context, watch::Receiver<bool>) -> JoinHandle<()>,
}

/// Every controller. A kind whose controller has not landed is not listed.
pub const CONTROLLERS: &[Registration] = &[baseline::REGISTRATION, backup::REGISTRATION];

/// The metrics registrations of every controller, for [`Metrics::new`].
pub fn metric_registrations() -> Vec<(&'static str, crate::metrics::RegisterKind)> {
    CONTROLLERS.iter().map(|r| (r.name, r.metrics)).collect()
}

/// The controller names `--controllers` accepts.
pub fn names() -> Vec<&'static str> {
    CONTROLLERS.iter().map(|r| r.name).collect()
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
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        let detections = metrics.detections();
        let events = kit::Events::new(
            kube::runtime::events::Recorder::new(client.clone(), reporter.clone()),
            detections.clone(),
        );
        let ctx = Context {
            client,
            tenancy,
            metrics: metrics.clone(),
            synced: synced.clone(),
            detections,
            events,
            reporter,
        };
        let mut tasks: Vec<(&'static str, JoinHandle<()>)> = Vec::new();
        for r in CONTROLLERS.iter().filter(|r| args.runs(r.name)) {
            for kind in r.kinds {
                synced.expect(kind);
            }
            tasks.push((r.name, (r.start)(ctx.clone(), shutdown.clone())));
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

/// The README's table of every Event reason (between `<!-- event-reasons -->` markers): the
/// kind it is published on, its type, the detection signal it raises and what it means. A
/// test keeps the README in step with the enums.
pub fn event_reasons_table() -> String {
    use kit::Reason;
    fn rows<R: Reason>(kind: &str, out: &mut String) {
        for r in R::all() {
            out.push_str(&format!(
                "| {kind} | `{}` | {} | {} | {} |\n",
                r.as_str(),
                if r.is_warning() { "Warning" } else { "Normal" },
                r.signal().map(|s| format!("`{s}`")).unwrap_or_default(),
                r.meaning()
            ));
        }
    }
    let mut out =
        String::from("| kind | reason | type | signal | meaning |\n|---|---|---|---|---|\n");
    rows::<baseline::events::BaselineEvent>("SecurityBaseline", &mut out);
    rows::<backup::policy::PolicyEvent>("BackupPolicy", &mut out);
    rows::<backup::events::BackupEvent>("Backup", &mut out);
    rows::<backup::events::RestoreEvent>("Restore", &mut out);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_readme_lists_every_event_reason() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
            .expect("README.md");
        let marker = "<!-- event-reasons -->\n";
        let listed = readme
            .split(marker)
            .nth(1)
            .expect("README.md has an <!-- event-reasons --> section");
        let table = super::event_reasons_table();
        assert_eq!(
            listed, table,
            "README.md's Event reasons differ from the enums; the table is:\n{table}"
        );
    }
}
