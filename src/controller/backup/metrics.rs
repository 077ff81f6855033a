//! The backup controllers' own metrics, in their sub-registry (`opsec_backup_...`).

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels of per-policy metrics (one series per BackupPolicy).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    pub namespace: String,
    pub policy: String,
}

/// The backup controllers' metrics.
#[derive(Default)]
pub struct BackupMetrics {
    /// Age in seconds of the newest good backup of each BackupPolicy (the RPO is measured
    /// against it): `opsec_backup_age_seconds`.
    pub age: Family<PolicyLabels, Gauge<f64, AtomicU64>>,
}

/// Registers [`BackupMetrics`] in `registry` (the controller's sub-registry).
pub fn register(registry: &mut Registry) -> Arc<dyn Any + Send + Sync> {
    let m = BackupMetrics::default();
    registry.register(
        "age_seconds",
        "Age of the newest good backup of each BackupPolicy",
        m.age.clone(),
    );
    Arc::new(m)
}

impl BackupMetrics {
    /// Sets the age of a policy's newest good backup (removes the series when there is none).
    pub fn set_age(&self, namespace: &str, policy: &str, age: Option<f64>) {
        let labels = PolicyLabels {
            namespace: namespace.into(),
            policy: policy.into(),
        };
        match age {
            Some(a) => {
                self.age.get_or_create(&labels).set(a);
            }
            None => {
                self.age.remove(&labels);
            }
        }
    }
}
