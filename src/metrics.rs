//! Prometheus metrics of the operator, exported on the admin port's `/metrics`.
//!
//! Labels carry only bounded values (controller names, stable error categories), never object
//! names or error strings, so cardinality stays small however many tenants there are.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

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

/// Labels of per-baseline metrics (baselines are few: cardinality stays small).
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

/// Labels of per-policy backup metrics (one series per BackupPolicy).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackupPolicyLabels {
    pub namespace: String,
    pub policy: String,
}

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
    /// Selected namespaces of each baseline by state (compliant, drifted, conflicted, failed).
    pub baseline_namespaces: Family<BaselineStateLabels, Gauge>,
    /// Drift found (objects changed or deleted by someone else), per baseline.
    pub drift_detected: Family<BaselineLabels, Counter>,
    /// Drift reverted (Enforce), per baseline.
    pub drift_reverted: Family<BaselineLabels, Counter>,
    /// Age in seconds of the newest good backup of each BackupPolicy (the RPO is measured
    /// against it).
    pub backup_age: Family<BackupPolicyLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
}

impl Default for Metrics {
    fn default() -> Self {
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
        let baseline_namespaces = Family::<BaselineStateLabels, Gauge>::default();
        registry.register(
            "baseline_namespaces",
            "Selected namespaces of each SecurityBaseline by state",
            baseline_namespaces.clone(),
        );
        let drift_detected = Family::<BaselineLabels, Counter>::default();
        registry.register(
            "baseline_drift_detected",
            "Drift found, per SecurityBaseline",
            drift_detected.clone(),
        );
        let drift_reverted = Family::<BaselineLabels, Counter>::default();
        registry.register(
            "baseline_drift_reverted",
            "Drift reverted, per SecurityBaseline",
            drift_reverted.clone(),
        );
        let backup_age =
            Family::<BackupPolicyLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register(
            "backup_age_seconds",
            "Age of the newest good backup of each BackupPolicy",
            backup_age.clone(),
        );
        Self {
            backup_age,
            registry,
            leader,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            baseline_namespaces,
            drift_detected,
            drift_reverted,
        }
    }
}

impl Metrics {
    /// Sets the age of a policy's newest good backup (removes the series when there is none).
    pub fn backup_age_seconds(&self, namespace: &str, policy: &str, age: Option<f64>) {
        let labels = BackupPolicyLabels {
            namespace: namespace.into(),
            policy: policy.into(),
        };
        match age {
            Some(a) => {
                self.backup_age.get_or_create(&labels).set(a);
            }
            None => {
                self.backup_age.remove(&labels);
            }
        }
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
}
