//! Retention (pure): which backups to delete, given every backup of a policy and its retention
//! settings (`copies`, `maxAge`, `keepFailed`).
//!
//! Rules:
//! - Successful backups, newest first: the first `copies` are kept, the rest deleted; any older
//!   than `maxAge` is deleted too.
//! - Never deleted: the newest *verified* successful backup; and, while no backup is verified
//!   yet, the newest successful one (so retention never leaves a policy with no copy at all).
//! - Failed backups, newest first: the first `keepFailed` are kept for diagnosis, the rest
//!   deleted.
//!
//! Ties in creation time are broken by id, so the decision is deterministic.
//!
//! Incomplete copies (a data object without `manifest.json`, left by an interrupted run) are
//! deleted once untouched for a grace period and not of a running backup
//! ([`stale_incomplete`]); a complete copy is never among them.

use std::time::Duration;

use jiff::Timestamp;

use super::store::IncompleteBackup;

/// What can go wrong applying retention.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RetentionError {
    #[error("retention copies must be at least 1 (got {0})")]
    InvalidCopies(i64),
    #[error("retention keepFailed must not be negative (got {0})")]
    InvalidKeepFailed(i64),
    #[error("retention maxAge {0:?} is out of range")]
    InvalidMaxAge(Duration),
}

/// One backup as retention sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupRecord {
    pub id: String,
    pub created: Timestamp,
    /// Its stored copy passed verification.
    pub verified: bool,
    /// The run failed (no usable copy).
    pub failed: bool,
}

/// Retention settings (from `spec.retention`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetentionSettings {
    pub copies: usize,
    pub max_age: Option<Duration>,
    pub keep_failed: usize,
}

impl RetentionSettings {
    /// From the API's fields, refusing values the CRD schema refuses too.
    pub fn new(
        copies: i32,
        max_age: Option<Duration>,
        keep_failed: i32,
    ) -> Result<Self, RetentionError> {
        let copies = usize::try_from(copies)
            .ok()
            .filter(|c| *c >= 1)
            .ok_or(RetentionError::InvalidCopies(copies.into()))?;
        let keep_failed = usize::try_from(keep_failed)
            .map_err(|_| RetentionError::InvalidKeepFailed(keep_failed.into()))?;
        Ok(Self {
            copies,
            max_age,
            keep_failed,
        })
    }
}

/// Why a backup is deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeleteReason {
    /// Beyond the newest `copies` successful backups.
    ExceedsCopies,
    /// Older than `maxAge`.
    Expired,
    /// Beyond the newest `keepFailed` failed backups.
    ExceedsKeepFailed,
}

/// A backup to delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deletion {
    pub id: String,
    pub reason: DeleteReason,
}

fn newest_first(records: &mut [&BackupRecord]) {
    records.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| b.id.cmp(&a.id)));
}

/// The backups to delete, newest first within each group.
pub fn plan(
    backups: &[BackupRecord],
    settings: &RetentionSettings,
    now: Timestamp,
) -> Result<Vec<Deletion>, RetentionError> {
    let cutoff = match settings.max_age {
        Some(age) => {
            let span = jiff::SignedDuration::try_from(age)
                .map_err(|_| RetentionError::InvalidMaxAge(age))?;
            Some(
                now.checked_sub(span)
                    .map_err(|_| RetentionError::InvalidMaxAge(age))?,
            )
        }
        None => None,
    };
    let mut ok: Vec<&BackupRecord> = backups.iter().filter(|b| !b.failed).collect();
    let mut failed: Vec<&BackupRecord> = backups.iter().filter(|b| b.failed).collect();
    newest_first(&mut ok);
    newest_first(&mut failed);

    let protected = ok
        .iter()
        .find(|b| b.verified)
        .or_else(|| ok.first())
        .map(|b| b.id.clone());

    let mut out = Vec::new();
    for (i, b) in ok.iter().enumerate() {
        if Some(&b.id) == protected.as_ref() {
            continue;
        }
        let reason = if i >= settings.copies {
            Some(DeleteReason::ExceedsCopies)
        } else if cutoff.is_some_and(|c| b.created < c) {
            Some(DeleteReason::Expired)
        } else {
            None
        };
        if let Some(reason) = reason {
            out.push(Deletion {
                id: b.id.clone(),
                reason,
            });
        }
    }
    for b in failed.iter().skip(settings.keep_failed) {
        out.push(Deletion {
            id: b.id.clone(),
            reason: DeleteReason::ExceedsKeepFailed,
        });
    }
    Ok(out)
}

/// The incomplete copies (no `manifest.json`) that are safe to delete: untouched for at least
/// `grace` (a writer between its data and its manifest is never older than that) and not of a
/// backup still running (`running`, by backup id), whatever their age.
pub fn stale_incomplete<'a>(
    incomplete: &'a [IncompleteBackup],
    running: &std::collections::HashSet<String>,
    now: Timestamp,
    grace: Duration,
) -> Vec<&'a IncompleteBackup> {
    let Ok(grace) = jiff::SignedDuration::try_from(grace) else {
        return Vec::new();
    };
    let Ok(cutoff) = now.checked_sub(grace) else {
        return Vec::new();
    };
    incomplete
        .iter()
        .filter(|i| !running.contains(&i.backup_id) && i.last_modified <= cutoff)
        .collect()
}

/// When a backup created at `created` expires under `maxAge` (for `status.expiresAt`).
pub fn expires_at(created: Timestamp, settings: &RetentionSettings) -> Option<Timestamp> {
    let age = jiff::SignedDuration::try_from(settings.max_age?).ok()?;
    created.checked_add(age).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3600;

    fn rec(id: &str, hours_ago: i64, verified: bool, failed: bool) -> BackupRecord {
        BackupRecord {
            id: id.into(),
            created: Timestamp::from_second(1_000_000 - hours_ago * HOUR).unwrap(),
            verified,
            failed,
        }
    }

    fn now() -> Timestamp {
        Timestamp::from_second(1_000_000).unwrap()
    }

    fn ids(d: &[Deletion]) -> Vec<&str> {
        d.iter().map(|d| d.id.as_str()).collect()
    }

    #[test]
    fn keeps_the_newest_copies() {
        let b = vec![
            rec("a", 1, true, false),
            rec("b", 2, true, false),
            rec("c", 3, true, false),
            rec("d", 4, true, false),
        ];
        let s = RetentionSettings::new(2, None, 0).unwrap();
        let d = plan(&b, &s, now()).unwrap();
        assert_eq!(ids(&d), ["c", "d"]);
        assert!(d.iter().all(|d| d.reason == DeleteReason::ExceedsCopies));
    }

    #[test]
    fn never_deletes_the_newest_verified_copy() {
        // Only the oldest copy is verified: copies=1 would delete it, maxAge too.
        let b = vec![
            rec("new", 1, false, false),
            rec("mid", 2, false, false),
            rec("old-verified", 100, true, false),
        ];
        let s = RetentionSettings::new(1, Some(Duration::from_secs(10 * 3600)), 0).unwrap();
        let d = plan(&b, &s, now()).unwrap();
        assert_eq!(ids(&d), ["mid"]);
        assert!(!ids(&d).contains(&"old-verified"));
    }

    #[test]
    fn max_age_deletes_old_copies_but_not_the_last_good_one() {
        let b = vec![rec("a", 50, true, false), rec("b", 60, true, false)];
        let s = RetentionSettings::new(7, Some(Duration::from_secs(24 * 3600)), 0).unwrap();
        let d = plan(&b, &s, now()).unwrap();
        assert_eq!(ids(&d), ["b"]);
        assert_eq!(d[0].reason, DeleteReason::Expired);
        // Nothing verified yet: the newest successful one is protected.
        let b = vec![rec("a", 50, false, false), rec("b", 60, false, false)];
        assert_eq!(ids(&plan(&b, &s, now()).unwrap()), ["b"]);
    }

    #[test]
    fn failed_backups_follow_keep_failed_and_never_count_as_copies() {
        let b = vec![
            rec("ok", 10, true, false),
            rec("f1", 1, false, true),
            rec("f2", 2, false, true),
            rec("f3", 3, true, true),
        ];
        let s = RetentionSettings::new(1, None, 1).unwrap();
        let d = plan(&b, &s, now()).unwrap();
        assert_eq!(ids(&d), ["f2", "f3"]);
        assert!(
            d.iter()
                .all(|d| d.reason == DeleteReason::ExceedsKeepFailed)
        );
    }

    #[test]
    fn only_old_incomplete_copies_of_finished_runs_are_stale() {
        let inc = |id: &str, hours_ago: i64| IncompleteBackup {
            backup_id: id.into(),
            files: vec!["data.tar.zst.enc".into()],
            last_modified: Timestamp::from_second(1_000_000 - hours_ago * HOUR).unwrap(),
        };
        let all = vec![inc("old", 2), inc("fresh", 0), inc("old-running", 5)];
        let running = std::collections::HashSet::from(["old-running".to_string()]);
        let stale = stale_incomplete(&all, &running, now(), Duration::from_secs(3600));
        let ids: Vec<&str> = stale.iter().map(|i| i.backup_id.as_str()).collect();
        assert_eq!(ids, ["old"]);
    }

    #[test]
    fn refuses_invalid_settings_and_computes_expiry() {
        assert!(RetentionSettings::new(0, None, 1).is_err());
        assert!(RetentionSettings::new(1, None, -1).is_err());
        let s = RetentionSettings::new(1, Some(Duration::from_secs(3600)), 0).unwrap();
        assert_eq!(
            expires_at(now(), &s),
            Some(Timestamp::from_second(1_003_600).unwrap())
        );
        let s = RetentionSettings::new(1, None, 0).unwrap();
        assert_eq!(expires_at(now(), &s), None);
    }
}
