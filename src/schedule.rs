//! When things are due (pure functions of time, shared by every controller): the backup
//! schedule (cron in a time zone, or every RPO/2 staggered per policy), the verification and
//! restore-test schedules, the moment the RPO is breached, and the backoff of retried copies.

use std::str::FromStr;

use croner::Cron;
use jiff::{SignedDuration, Timestamp};
use sha2::{Digest, Sha256};

use crate::api::backup::BackupPolicySpec;

/// Why a schedule cannot be computed: what the schema could not judge, naming the field, so the
/// message goes into a condition and an Event as it is.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("{field}: invalid cron schedule {schedule:?}: {reason}")]
    Cron {
        field: String,
        schedule: String,
        reason: String,
    },
    #[error("{field}: the schedule {schedule:?} never fires (no such date comes within years)")]
    Never { field: String, schedule: String },
    #[error("{field}: unknown time zone {zone:?}: not in the IANA time-zone database")]
    TimeZone { field: String, zone: String },
    #[error("spec.rpo: invalid duration {0:?}")]
    Duration(String),
}

/// Where a schedule and its time zone are in the spec, for errors.
#[derive(Clone, Copy, Debug)]
pub struct Fields<'a> {
    pub schedule: &'a str,
    pub time_zone: &'a str,
}

/// A time zone of the IANA database bundled with the operator: the same database the schema's
/// list of time zones comes from, whatever the machine has installed.
pub fn time_zone(name: &str) -> Option<jiff::tz::TimeZone> {
    jiff::tz::TimeZoneDatabase::bundled().get(name).ok()
}

/// The next occurrence of a cron `schedule` in `tz` (UTC when `None`) strictly after `after`;
/// `fields` name both in errors.
pub fn next_cron(
    schedule: &str,
    tz: Option<&str>,
    after: Timestamp,
    fields: Fields<'_>,
) -> Result<Timestamp, ScheduleError> {
    let cron = Cron::from_str(schedule).map_err(|e| ScheduleError::Cron {
        field: fields.schedule.into(),
        schedule: schedule.into(),
        reason: e.to_string(),
    })?;
    let zone = match tz {
        Some(name) => time_zone(name).ok_or_else(|| ScheduleError::TimeZone {
            field: fields.time_zone.into(),
            zone: name.into(),
        })?,
        None => jiff::tz::TimeZone::UTC,
    };
    let zoned = after.to_zoned(zone);
    cron.find_next_occurrence(&zoned, false)
        .map(|z| z.timestamp())
        .map_err(|e| match e {
            croner::errors::CronError::TimeSearchLimitExceeded => ScheduleError::Never {
                field: fields.schedule.into(),
                schedule: schedule.into(),
            },
            other => ScheduleError::Cron {
                field: fields.schedule.into(),
                schedule: schedule.into(),
                reason: other.to_string(),
            },
        })
}

/// Where a BackupPolicy keeps its schedules.
pub const BACKUP_SCHEDULE: Fields<'static> = Fields {
    schedule: "spec.schedule",
    time_zone: "spec.timeZone",
};
/// The verification schedule of a BackupPolicy.
pub const VERIFICATION_SCHEDULE: Fields<'static> = Fields {
    schedule: "spec.verification.schedule",
    time_zone: "spec.timeZone",
};
/// The restore-test schedule of a BackupPolicy.
pub const RESTORE_TEST_SCHEDULE: Fields<'static> = Fields {
    schedule: "spec.verification.restoreTest.schedule",
    time_zone: "spec.timeZone",
};

/// Offset of a policy within its period: a stable hash of `namespace/name`, so that policies
/// with the same RPO do not all start together.
pub fn stagger(namespace: &str, name: &str, period_secs: u64) -> u64 {
    if period_secs == 0 {
        return 0;
    }
    let digest = Sha256::digest(format!("{namespace}/{name}").as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first) % period_secs
}

/// The next backup of a policy strictly after `after`: its cron schedule, or every RPO/2 at the
/// policy's stagger offset.
pub fn next_backup(
    spec: &BackupPolicySpec,
    namespace: &str,
    name: &str,
    after: Timestamp,
) -> Result<Timestamp, ScheduleError> {
    if let Some(schedule) = &spec.schedule {
        return next_cron(
            &schedule.0,
            spec.time_zone.as_ref().map(|t| t.0.as_str()),
            after,
            BACKUP_SCHEDULE,
        );
    }
    let rpo = rpo(spec)?;
    let period = (rpo.as_secs() / 2).max(1);
    let offset = stagger(namespace, name, period) as i64;
    let now = after.as_second();
    let period = period as i64;
    // Smallest k*period + offset strictly after `after`.
    let mut k = (now - offset).div_euclid(period);
    let mut next = k * period + offset;
    while next <= now {
        k += 1;
        next = k * period + offset;
    }
    Timestamp::from_second(next).map_err(|_| ScheduleError::Duration(spec.rpo.0.clone()))
}

/// The policy's RPO.
pub fn rpo(spec: &BackupPolicySpec) -> Result<std::time::Duration, ScheduleError> {
    spec.rpo
        .to_std()
        .map_err(|_| ScheduleError::Duration(spec.rpo.0.clone()))
}

/// The moment the newest good backup (completed at `last_good`) becomes older than the RPO.
pub fn rpo_deadline(last_good: Timestamp, rpo: std::time::Duration) -> Timestamp {
    let span = SignedDuration::try_from(rpo).unwrap_or(SignedDuration::MAX);
    last_good.checked_add(span).unwrap_or(Timestamp::MAX)
}

/// First delay before an off-site copy that failed is retried.
pub const COPY_RETRY_BASE: std::time::Duration = std::time::Duration::from_secs(10);
/// Longest delay between retries of a failed copy.
pub const COPY_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(600);

/// Delay before the next retry of a copy to a storage location after `failures` failed rounds
/// in a row: 10s, 20s, 40s, ... at most 10m.
pub fn copy_retry_delay(failures: u32) -> std::time::Duration {
    let exp = failures.saturating_sub(1).min(16);
    COPY_RETRY_BASE
        .saturating_mul(1u32 << exp)
        .min(COPY_RETRY_MAX)
}

/// Name of a backup run: `<policy>-<yyyymmddhhmmss>` (UTC).
pub fn backup_name(policy: &str, at: Timestamp) -> String {
    let stamp = at.strftime("%Y%m%d%H%M%S").to_string();
    let max = 253 - stamp.len() - 1;
    let policy = if policy.len() > max {
        &policy[..max]
    } else {
        policy
    };
    format!("{policy}-{stamp}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> BackupPolicySpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn cron_in_a_time_zone() {
        let s = spec(
            "schedule: '0 2 * * *'\ntimeZone: Europe/Berlin\nrpo: 24h\nstorage: [{name: a, local: {path: /x}}]",
        );
        let next = next_backup(&s, "ns", "p", ts("2026-01-10T12:00:00Z")).unwrap();
        // 02:00 in Berlin (UTC+1 in winter) is 01:00 UTC.
        assert_eq!(next, ts("2026-01-11T01:00:00Z"));
    }

    #[test]
    fn macros_are_accepted() {
        let next = next_cron("@daily", None, ts("2026-01-10T12:00:00Z"), BACKUP_SCHEDULE).unwrap();
        assert_eq!(next, ts("2026-01-11T00:00:00Z"));
    }

    #[test]
    fn derived_schedule_is_every_half_rpo_and_staggered() {
        let s = spec("rpo: 1h\nstorage: [{name: a, local: {path: /x}}]");
        let t0 = ts("2026-01-10T12:00:00Z");
        let a = next_backup(&s, "ns", "p", t0).unwrap();
        let b = next_backup(&s, "ns", "p", a).unwrap();
        assert_eq!(b.as_second() - a.as_second(), 1800);
        assert!(a > t0 && a.as_second() - t0.as_second() <= 1800);
        let offsets: std::collections::BTreeSet<u64> = (0..20)
            .map(|i| stagger("ns", &format!("p{i}"), 1800))
            .collect();
        assert!(offsets.len() > 10, "policies are spread: {offsets:?}");
        assert_eq!(stagger("ns", "p", 1800), stagger("ns", "p", 1800));
    }

    #[test]
    fn bad_time_zone_is_an_error() {
        assert!(matches!(
            next_cron(
                "@daily",
                Some("Mars/Olympus"),
                Timestamp::now(),
                BACKUP_SCHEDULE
            ),
            Err(ScheduleError::TimeZone { .. })
        ));
    }

    #[test]
    fn copy_retries_back_off_up_to_a_cap() {
        let secs: Vec<u64> = [1, 2, 3, 6, 7, 100]
            .iter()
            .map(|n| copy_retry_delay(*n).as_secs())
            .collect();
        assert_eq!(secs, [10, 20, 40, 320, 600, 600]);
        assert_eq!(copy_retry_delay(0).as_secs(), 10);
    }

    #[test]
    fn names_and_deadlines() {
        assert_eq!(
            backup_name("db", ts("2026-03-04T05:06:07Z")),
            "db-20260304050607"
        );
        assert_eq!(
            rpo_deadline(
                ts("2026-01-01T00:00:00Z"),
                std::time::Duration::from_secs(60)
            ),
            ts("2026-01-01T00:01:00Z")
        );
    }

    #[test]
    fn errors_name_the_field() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let never = next_cron("0 2 30 2 *", None, now, VERIFICATION_SCHEDULE).unwrap_err();
        assert!(matches!(never, ScheduleError::Never { .. }), "{never:?}");
        assert!(
            never
                .to_string()
                .starts_with("spec.verification.schedule: "),
            "{never}"
        );
        let zone = next_cron("@daily", Some("Europe/Berlinn"), now, RESTORE_TEST_SCHEDULE)
            .unwrap_err()
            .to_string();
        assert!(
            zone.starts_with("spec.timeZone: unknown time zone"),
            "{zone}"
        );
        // Three-segment zones of the bundled database load whatever the machine has.
        assert!(
            next_cron(
                "0 2 * * *",
                Some("America/Argentina/Buenos_Aires"),
                now,
                BACKUP_SCHEDULE
            )
            .is_ok()
        );
    }
}
