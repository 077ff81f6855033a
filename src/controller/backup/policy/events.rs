//! The Events a BackupPolicy controller publishes (on the policy, and about its Backups on
//! them), declared once as [`PolicyEvent`], and the one path they are published by. The
//! access-wait Warnings are the exception: their reason is an [`AccessError`]'s category
//! (also the Ready reason), published by [`publish_waiting`].
//!
//! [`AccessError`]: crate::controller::backup::AccessError

use kube::Resource;

use crate::controller::backup::State;
use crate::controller::kit::Announce;
#[cfg(test)]
use crate::controller::kit::Reason;

crate::event_reasons! {
    /// The Event reasons of a BackupPolicy (and of its Backups, for what the policy did to them).
    pub enum PolicyEvent {
        CatalogueRebuilt => Normal, "Catalogue", None,
            "Backup objects were recreated from complete, signed copies found in the stores.";
        RestoreTestPassed => Normal, "RestoreTest", None,
            "A restore test restored the newest good backup into a scratch namespace and found every object as backed up, within the RTO.";
        RestoreTestFailed => Warning, "RestoreTest", Some(Signal::RestoreTestFailed),
            "A restore test failed, timed out, had no good backup or keys to restore, or took longer than the RTO.";
        RPOBreached => Warning, "Backup", Some(Signal::RPOBreached),
            "The newest good backup became older than the RPO (announced once, when RPOMet turns False).";
        StorageReachable => Normal, "Backup", None,
            "Every storage location is reachable again (announced once, when StorageReachable turns True).";
        StorageUnreachable => Warning, "Backup", Some(Signal::StorageUnreachable),
            "A storage location could not be resolved, listed or written (announced once, when StorageReachable turns False).";
        BackupCorrupt => Warning, "Verify", Some(Signal::BackupCorrupt),
            "Verification found a stored copy of a backup tampered with or damaged.";
        RetentionDeleted => Normal, "Retention", None,
            "Retention deleted a backup's stored copies, then its Backup object.";
        IncompleteCopyDeleted => Normal, "Cleanup", None,
            "A partial copy left by an interrupted run (no manifest, untouched for the grace period) was deleted.";
        CopyRetryFailed => Warning, "Copy", None,
            "A retried copy to a storage location failed again; the next try is backed off.";
        CopyReplicated => Normal, "Copy", None,
            "A copy that had failed was written from another location's stored copy.";
        InvalidSchedule => Warning, "Reconcile", None,
            "A schedule or time zone the schema could not judge does not work (announced when the Ready message changes).";
        InvalidKey => Warning, "Reconcile", None,
            "The policy's encryption key does not load (announced when the Ready message changes).";
    }
}

/// Publishes `a` about `obj` (the policy, or one of its Backups); a reason with a signal
/// raises its detection.
pub async fn publish<K: Resource<DynamicType = ()>>(st: &State, obj: &K, a: Announce<PolicyEvent>) {
    st.events.publish(obj, a.reason, a.note, a.related).await;
}

/// Publishes what was announced about `obj`, in order.
pub async fn announce<K: Resource<DynamicType = ()>>(
    st: &State,
    obj: &K,
    list: Vec<Announce<PolicyEvent>>,
) {
    st.events.announce(obj, list).await;
}

/// Publishes the Warning of a policy that waits for access: its reason is the access error's
/// category (the Ready reason too).
pub async fn publish_waiting<K: Resource<DynamicType = ()>>(
    st: &State,
    obj: &K,
    category: &'static str,
    note: String,
) {
    st.events
        .problem(&obj.object_ref(&()), category, note, None, None)
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signals::Signal;

    #[test]
    fn reasons_keep_their_names_and_raise_their_signals() {
        let names: Vec<&str> = PolicyEvent::all().iter().map(|r| r.as_str()).collect();
        assert_eq!(
            names,
            [
                "CatalogueRebuilt",
                "RestoreTestPassed",
                "RestoreTestFailed",
                "RPOBreached",
                "StorageReachable",
                "StorageUnreachable",
                "BackupCorrupt",
                "RetentionDeleted",
                "IncompleteCopyDeleted",
                "CopyRetryFailed",
                "CopyReplicated",
                "InvalidSchedule",
                "InvalidKey",
            ]
        );
        assert_eq!(PolicyEvent::RPOBreached.signal(), Some(Signal::RPOBreached));
        assert_eq!(
            PolicyEvent::RestoreTestFailed.signal(),
            Some(Signal::RestoreTestFailed)
        );
        assert!(PolicyEvent::StorageUnreachable.is_warning());
        assert!(!PolicyEvent::StorageReachable.is_warning());
        assert_eq!(PolicyEvent::StorageReachable.signal(), None);
    }
}
