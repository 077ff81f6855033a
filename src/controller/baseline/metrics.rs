//! The SecurityBaseline controller's own metrics, in its sub-registry (`opsec_baseline_...`).
//! Baselines are few, so a label per baseline keeps cardinality small.

use std::any::Any;
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels of per-baseline metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BaselineLabels {
    pub baseline: String,
}

/// Labels of the namespaces-by-state gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BaselineStateLabels {
    pub baseline: String,
    pub state: String,
}

/// The SecurityBaseline controller's metrics.
#[derive(Default)]
pub struct BaselineMetrics {
    /// Selected namespaces of each baseline by state (compliant, drifted, conflicted, failed):
    /// `opsec_baseline_namespaces`.
    pub namespaces: Family<BaselineStateLabels, Gauge>,
    /// Drift found (objects changed or deleted by someone else): `opsec_baseline_drift_detected`.
    pub drift_detected: Family<BaselineLabels, Counter>,
    /// Drift reverted (Enforce): `opsec_baseline_drift_reverted`.
    pub drift_reverted: Family<BaselineLabels, Counter>,
}

/// Registers [`BaselineMetrics`] in `registry` (the controller's sub-registry).
pub fn register(registry: &mut Registry) -> Arc<dyn Any + Send + Sync> {
    let m = BaselineMetrics::default();
    registry.register(
        "namespaces",
        "Selected namespaces of each SecurityBaseline by state",
        m.namespaces.clone(),
    );
    registry.register(
        "drift_detected",
        "Drift found, per SecurityBaseline",
        m.drift_detected.clone(),
    );
    registry.register(
        "drift_reverted",
        "Drift reverted, per SecurityBaseline",
        m.drift_reverted.clone(),
    );
    Arc::new(m)
}
