//! The detection signals the operator raises (X.1642 8.9.1.3: detect and report), which an
//! EmergencyPlan's `classification` matches by `source` to grade an incident. One list, here:
//! each controller's Event reasons name the signal they raise (see
//! [`Reason::signal`](crate::controller::kit::Reason::signal)), and publishing such an Event
//! also sends a [`Detection`] on the in-process bus and counts it in
//! `opsec_detections_total{signal}`.

use k8s_openapi::api::core::v1::ObjectReference;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::sync::broadcast;

crate::api::common::status_words! {
    /// What was detected (an EmergencyPlan's `classification[].match.source`).
    Signal {
        /// A SecurityBaseline found an object changed, deleted or fought over in a namespace.
        #[default]
        BaselineDrift,
        /// A backup run failed, or was interrupted.
        BackupFailed,
        /// A stored copy failed verification (tampered or damaged).
        BackupCorrupt,
        /// The newest good backup is older than the policy's RPO.
        RPOBreached,
        /// A storage location could not be reached or written.
        StorageUnreachable,
        /// A restore test failed, or took longer than the RTO.
        RestoreTestFailed,
        /// A restore failed or was rolled back.
        RestoreFailed,
        /// A patch is past its deadline (PatchWindow).
        PatchOverdue,
        /// A patch failed or was rolled back (PatchWindow).
        PatchFailed,
    }
}

/// One detection: the signal, the object it was raised on, what it is about and when.
#[derive(Clone, Debug)]
pub struct Detection {
    pub signal: Signal,
    pub object: ObjectReference,
    pub related: Option<ObjectReference>,
    pub note: String,
    pub at: jiff::Timestamp,
}

/// Labels of the detections counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SignalLabels {
    pub signal: String,
}

/// Detections not taken yet that the bus keeps for a slow listener (older ones are dropped
/// for it, and it is told how many).
const BUS_CAPACITY: usize = 1024;

/// The in-process bus of detections, and their count by signal.
#[derive(Clone)]
pub struct Detections {
    bus: broadcast::Sender<Detection>,
    counted: Family<SignalLabels, Counter>,
}

impl Detections {
    pub fn new(counted: Family<SignalLabels, Counter>) -> Self {
        Self {
            bus: broadcast::channel(BUS_CAPACITY).0,
            counted,
        }
    }

    /// Raises a detection: counted, and sent to every listener.
    pub fn send(&self, d: Detection) {
        self.counted
            .get_or_create(&SignalLabels {
                signal: d.signal.as_str().into(),
            })
            .inc();
        // No listener yet is fine: the Event stays in the cluster.
        let _ = self.bus.send(d);
    }

    /// Listens for detections raised from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Detection> {
        self.bus.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_detection_is_counted_and_heard() {
        let counted = Family::<SignalLabels, Counter>::default();
        let d = Detections::new(counted.clone());
        let mut rx = d.subscribe();
        d.send(Detection {
            signal: Signal::RPOBreached,
            object: ObjectReference::default(),
            related: None,
            note: "late".into(),
            at: jiff::Timestamp::UNIX_EPOCH,
        });
        assert_eq!(rx.try_recv().unwrap().signal, Signal::RPOBreached);
        let n = counted
            .get_or_create(&SignalLabels {
                signal: "RPOBreached".into(),
            })
            .get();
        assert_eq!(n, 1);
        assert_eq!(
            "BaselineDrift".parse::<Signal>().unwrap(),
            Signal::BaselineDrift
        );
    }
}
