//! The Event reasons of Backups and Restores (a BackupPolicy's are in `policy`). A failed
//! Restore's Event has its failure's category as reason (see `restore`), like its Ready
//! condition.

crate::event_reasons! {
    /// Events on a Backup.
    pub enum BackupEvent {
        BackupCompleted => Normal, "Backup", None,
            "The run wrote its archive to every storage location it could: objects, bytes and digest.";
        StorageFailed => Warning, "Backup", Some(Signal::StorageUnreachable),
            "A storage location failed during the run; the policy copies the backup there later from a good copy.";
        BackupFailed => Warning, "Backup", Some(Signal::BackupFailed),
            "The run failed: no storage location holds a copy.";
        PolicyNotFound => Warning, "Backup", Some(Signal::BackupFailed),
            "The Backup names a BackupPolicy that does not exist; it is not run.";
        BackupRecovered => Normal, "Backup", None,
            "The operator stopped during the run after its copy was committed: completed from the stored copy.";
        BackupInterrupted => Warning, "Backup", Some(Signal::BackupFailed),
            "The operator stopped during the run before a copy was committed: Failed, never resumed; the next backup runs on schedule.";
    }
}

crate::event_reasons! {
    /// Events on a Restore (besides its failure, whose reason is the failure's category).
    pub enum RestoreEvent {
        RestoreCompleted => Normal, "Restore", None,
            "Every object was restored (or skipped as the spec says).";
        RestoreInterrupted => Warning, "Restore", None,
            "The operator stopped during a run: it runs again (at most 3 runs), or fails after the last.";
        CorruptCopy => Warning, "Restore", Some(Signal::BackupCorrupt),
            "A storage location's copy failed its checks (digest or signature); the restore read another location.";
        CopyUnreadable => Warning, "Restore", None,
            "A storage location's copy could not be read; the restore read another location.";
    }
}
