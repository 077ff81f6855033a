//! Prometheus metrics of the operator, exported on the admin port's `/metrics`.
//!
//! Each controller registers its own metrics in a sub-registry named after it
//! (`opsec_<controller>_...`, see `controller::Registration`).
//!
//! Labels carry only bounded values (controller names, stable error categories), never object
//! names or error strings, so cardinality stays small however many tenants there are.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

use crate::signals::SignalLabels;

/// Labels of per-controller metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: String,
}

/// Labels of reconcile errors: the controller and a stable error category.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub controller: String,
    pub category: String,
}

/// Registers one controller's own metrics in its sub-registry; what it returns is handed back
/// by [`Metrics::of`].
pub type RegisterKind = fn(&mut Registry) -> Arc<dyn Any + Send + Sync>;

/// Every metric of the operator, registered in one registry.
pub struct Metrics {
    pub registry: Registry,
    /// 1 while this replica holds the leader Lease.
    pub leader: Gauge,
    /// Reconciles run, per controller.
    pub reconciles: Family<ControllerLabels, Counter>,
    /// Reconcile failures, per controller and error category.
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    /// Reconcile duration in seconds, per controller.
    pub reconcile_duration: Family<ControllerLabels, Histogram>,
    /// Detections raised, per signal ([`crate::signals`]).
    pub detections: Family<SignalLabels, Counter>,
    /// Each controller's own metrics, by controller name.
    kinds: HashMap<&'static str, Arc<dyn Any + Send + Sync>>,
}

impl Default for Metrics {
    /// The operator's metrics without any controller's own.
    fn default() -> Self {
        Self::new(&[])
    }
}

impl Metrics {
    /// Every metric of the operator, with each controller's own registered by `kinds` under
    /// its name as prefix.
    pub fn new(kinds: &[(&'static str, RegisterKind)]) -> Self {
        let mut registry = Registry::with_prefix("opsec");
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease",
            leader.clone(),
        );
        let build_info = Family::<Vec<(String, String)>, Gauge>::default();
        build_info
            .get_or_create(&vec![("version".into(), env!("CARGO_PKG_VERSION").into())])
            .set(1);
        registry.register("build_info", "Version of the running operator", build_info);
        let reconciles = Family::<ControllerLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles run, per controller",
            reconciles.clone(),
        );
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Reconcile failures, per controller and stable error category",
            reconcile_errors.clone(),
        );
        let reconcile_duration =
            Family::<ControllerLabels, Histogram>::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 16))
            });
        registry.register(
            "reconcile_duration_seconds",
            "Time a reconcile takes, per controller",
            reconcile_duration.clone(),
        );
        let detections = Family::<SignalLabels, Counter>::default();
        registry.register(
            "detections",
            "Detections raised, per signal (what EmergencyPlans classify)",
            detections.clone(),
        );
        let kinds = kinds
            .iter()
            .map(|(name, register)| (*name, register(registry.sub_registry_with_prefix(*name))))
            .collect();
        Self {
            registry,
            leader,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            detections,
            kinds,
        }
    }
}

impl Metrics {
    /// The metrics controller `name` registered, if it did and they are of type `T`.
    pub fn of<T: Any + Send + Sync>(&self, name: &str) -> Option<Arc<T>> {
        self.kinds.get(name)?.clone().downcast::<T>().ok()
    }

    /// The detections bus, counting into [`Metrics::detections`].
    pub fn detections(&self) -> crate::signals::Detections {
        crate::signals::Detections::new(self.detections.clone())
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_every_family_with_the_prefix() {
        let m = Metrics::default();
        m.leader.set(1);
        m.reconciles
            .get_or_create(&ControllerLabels {
                controller: "baseline".into(),
            })
            .inc();
        let text = m.encode();
        assert!(text.contains("opsec_leader 1"), "{text}");
        assert!(
            text.contains("opsec_reconciles_total{controller=\"baseline\"} 1"),
            "{text}"
        );
        assert!(text.contains("opsec_build_info{version="), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn a_controller_registers_its_own_metrics_under_its_name() {
        #[derive(Default)]
        struct Own(Family<ControllerLabels, Counter>);
        fn register(r: &mut Registry) -> Arc<dyn Any + Send + Sync> {
            let own = Own::default();
            r.register("things_done", "Things done", own.0.clone());
            Arc::new(own)
        }
        let m = Metrics::new(&[("widget", register)]);
        let own = m.of::<Own>("widget").expect("its metrics, by name");
        own.0
            .get_or_create(&ControllerLabels {
                controller: "widget".into(),
            })
            .inc();
        assert!(m.of::<Own>("other").is_none());
        let text = m.encode();
        assert!(
            text.contains("opsec_widget_things_done_total{controller=\"widget\"} 1"),
            "{text}"
        );
    }
}
