//! What one BackupPolicy reconcile does, decided purely (no client, no clock: `now` comes in)
//! from what was observed: whether a scheduled Backup is due and its name, whether a
//! verification or a restore test runs now (and which "now" token it handles), when the next
//! backup is due, and what in the spec the schema could not judge. Also the plain facts about
//! Backups every step reads (`is_terminal`, `is_good`, their times).

use jiff::Timestamp;
use kube::ResourceExt;

use super::events::PolicyEvent;
use crate::api::backup::{BackupPhase, BackupPolicyStatus, BackupTrigger, CopyState};
use crate::api::{Backup, BackupPolicy};
use crate::controller::backup::{RESTORE_TEST_NOW_ANNOTATION, VERIFY_NOW_ANNOTATION};
use crate::schedule::{self, ScheduleError};

/// What `decide` and `settle` read: the policy, its status at the start of the reconcile, its
/// Backups as act left them, and whether its keys load.
#[derive(Clone, Copy)]
pub struct Facts<'a> {
    pub policy: &'a BackupPolicy,
    pub previous: Option<&'a BackupPolicyStatus>,
    pub backups: &'a [Backup],
    /// Why the policy's keys do not load (names the Secret and what is wrong with it).
    pub key_problem: Option<&'a str>,
}

impl Facts<'_> {
    /// The policy's time zone.
    pub fn time_zone(&self) -> Option<&str> {
        self.policy.spec.time_zone.as_ref().map(|t| t.0.as_str())
    }

    /// Where the verification and restore-test schedules count from when nothing ran yet.
    pub fn since(&self, now: Timestamp) -> Timestamp {
        self.policy
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0)
            .unwrap_or(now)
    }
}

/// What the schema could not judge: a schedule that never fires or does not parse, a key that
/// does not load. It holds Ready False for as long as it lasts.
#[derive(Debug)]
pub enum ConfigProblem {
    InvalidSchedule(ScheduleError),
    /// The keys' error, as `Access::keys` says it.
    InvalidKey(String),
}

impl ConfigProblem {
    /// The Ready reason and the Event announcing it.
    pub fn reason(&self) -> PolicyEvent {
        match self {
            Self::InvalidSchedule(_) => PolicyEvent::InvalidSchedule,
            Self::InvalidKey(_) => PolicyEvent::InvalidKey,
        }
    }

    pub fn message(&self) -> String {
        match self {
            Self::InvalidSchedule(e) => e.to_string(),
            Self::InvalidKey(e) => e.clone(),
        }
    }
}

/// Work that runs now: on its schedule, or asked for by an annotation's new `token` (recorded
/// as handled before the work starts).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunNow {
    pub token: Option<String>,
}

/// What this reconcile does.
#[derive(Debug, Default)]
pub struct PolicyPlan {
    /// The name of a scheduled Backup to create now.
    pub create: Option<String>,
    /// When the next backup is due (`None` while suspended or when the schedule is invalid).
    pub next_backup: Option<Timestamp>,
    pub verify: Option<RunNow>,
    pub restore_test: Option<RunNow>,
    /// The last problem found (restore-test schedule, verification schedule, keys, backup
    /// schedule, in that order of precedence).
    pub problem: Option<ConfigProblem>,
}

/// Decides the reconcile of `f.policy` at `now`.
pub fn decide(f: &Facts<'_>, now: Timestamp) -> PolicyPlan {
    let p = f.policy;
    let ns = p.namespace().unwrap_or_default();
    let name = p.name_any();
    let previous = f.previous;

    // A: the schedule.
    let next = schedule::next_backup(&p.spec, &ns, &name, now);
    let (next_backup, schedule_problem) = match next {
        Ok(t) => (Some(t), None),
        Err(e) => (None, Some(ConfigProblem::InvalidSchedule(e))),
    };
    let key_problem = f
        .key_problem
        .map(|e| ConfigProblem::InvalidKey(e.to_string()));
    let in_flight = f
        .backups
        .iter()
        .any(|b| !is_terminal(b) && b.spec.trigger != BackupTrigger::Catalogue);
    let due = !p.spec.suspend
        && (f.backups.is_empty()
            || previous
                .and_then(|s| s.next_schedule_time.as_ref())
                .is_some_and(|t| now >= t.0));
    // Only a problem of the backup itself (its schedule, its keys) holds a backup back.
    let create = (due && !in_flight && schedule_problem.is_none() && key_problem.is_none())
        .then(|| schedule::backup_name(&name, now));

    // B: verification of stored copies, and restore tests.
    let mut later_problem = None;
    let mut verify = None;
    let mut restore_test = None;
    if let Some(v) = &p.spec.verification {
        let last = previous
            .and_then(|s| s.last_verification.as_ref())
            .map(|l| l.time.0)
            .unwrap_or(f.since(now));
        let asked = requested(
            p,
            VERIFY_NOW_ANNOTATION,
            previous.and_then(|s| s.last_handled_verify_now.as_deref()),
        );
        let when = (v.schedule.0.as_str(), schedule::VERIFICATION_SCHEDULE);
        match run_now(when, f.time_zone(), last, asked, now) {
            Ok(run) => verify = run,
            Err(e) => later_problem = Some(ConfigProblem::InvalidSchedule(e)),
        }
        if let Some(rt) = &v.restore_test {
            let last = previous
                .and_then(|s| s.last_restore_test.as_ref())
                .map(|l| l.time.0)
                .unwrap_or(f.since(now));
            let asked = requested(
                p,
                RESTORE_TEST_NOW_ANNOTATION,
                previous.and_then(|s| s.last_handled_restore_test_now.as_deref()),
            );
            let when = (rt.schedule.0.as_str(), schedule::RESTORE_TEST_SCHEDULE);
            match run_now(when, f.time_zone(), last, asked, now) {
                Ok(run) => restore_test = run,
                Err(e) => later_problem = Some(ConfigProblem::InvalidSchedule(e)),
            }
        }
    }

    PolicyPlan {
        create,
        next_backup: if p.spec.suspend { None } else { next_backup },
        verify,
        restore_test,
        problem: later_problem.or(key_problem).or(schedule_problem),
    }
}

/// Whether a scheduled run (a verification, a restore test) is due at `now`: asked for with a
/// new token, or its schedule's next time after the `last` run has come.
fn run_now(
    (cron, fields): (&str, schedule::Fields<'_>),
    tz: Option<&str>,
    last: Timestamp,
    asked: Option<String>,
    now: Timestamp,
) -> Result<Option<RunNow>, ScheduleError> {
    let due_at = schedule::next_cron(cron, tz, last, fields)?;
    Ok((asked.is_some() || now >= due_at).then_some(RunNow { token: asked }))
}

/// The token of a "do it now" annotation not handled yet: its value when it differs from the
/// last one handled (recorded in status), so re-applying the same manifest asks for nothing.
pub fn requested(p: &BackupPolicy, annotation: &str, handled: Option<&str>) -> Option<String> {
    p.annotations()
        .get(annotation)
        .filter(|token| handled != Some(token.as_str()))
        .cloned()
}

/// A Backup whose run ended (however it ended).
pub fn is_terminal(b: &Backup) -> bool {
    matches!(
        b.status.as_ref().and_then(|s| s.phase),
        Some(
            BackupPhase::Completed
                | BackupPhase::Failed
                | BackupPhase::Verified
                | BackupPhase::Corrupt
        )
    )
}

/// A backup with at least one usable copy.
pub fn is_good(b: &Backup) -> bool {
    let Some(s) = &b.status else { return false };
    match s.phase {
        Some(BackupPhase::Completed | BackupPhase::Verified) => true,
        Some(BackupPhase::Corrupt) => s.locations.iter().any(|l| l.state == CopyState::Verified),
        _ => false,
    }
}

/// When a Backup started (else when it was created).
pub fn created(b: &Backup) -> Timestamp {
    b.status
        .as_ref()
        .and_then(|s| s.start_time.as_ref().map(|t| t.0))
        .or_else(|| b.metadata.creation_timestamp.as_ref().map(|t| t.0))
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

/// When a Backup completed.
pub fn completed(b: &Backup) -> Option<Timestamp> {
    b.status.as_ref()?.completion_time.as_ref().map(|t| t.0)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::api::backup::{BackupLocationStatus, BackupStatus, VerificationSummary};
    use crate::controller::backup::time;

    pub fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    /// A policy created at 2026-12-01T00:00Z with `extra` merged into its spec.
    pub fn policy(extra: serde_json::Value) -> BackupPolicy {
        let mut spec = serde_json::json!({
            "rpo": "1h",
            "storage": [{"name": "onsite", "local": {"path": "p"}}],
        });
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        serde_json::from_value(serde_json::json!({
            "apiVersion": "opsec.x1642.dev/v1alpha1",
            "kind": "BackupPolicy",
            "metadata": {
                "name": "p", "namespace": "ns", "uid": "u1", "generation": 3,
                "creationTimestamp": "2026-12-01T00:00:00Z",
            },
            "spec": spec,
        }))
        .unwrap()
    }

    pub fn backup(
        name: &str,
        trigger: BackupTrigger,
        phase: Option<BackupPhase>,
        completed: &str,
    ) -> Backup {
        let mut b = super::super::act::backup_object("ns", "p", name, trigger);
        b.status = phase.map(|phase| BackupStatus {
            phase: Some(phase),
            start_time: Some(time(at(completed))),
            completion_time: Some(time(at(completed))),
            locations: vec![BackupLocationStatus {
                name: "onsite".into(),
                state: CopyState::Written,
                ..Default::default()
            }],
            ..Default::default()
        });
        b
    }

    pub fn facts<'a>(
        p: &'a BackupPolicy,
        previous: Option<&'a BackupPolicyStatus>,
        backups: &'a [Backup],
    ) -> Facts<'a> {
        Facts {
            policy: p,
            previous,
            backups,
            key_problem: None,
        }
    }

    fn scheduled(next: &str) -> BackupPolicyStatus {
        BackupPolicyStatus {
            next_schedule_time: Some(time(at(next))),
            ..Default::default()
        }
    }

    const NOW: &str = "2026-12-02T12:00:00Z";

    #[test]
    fn a_backup_is_due_when_the_policy_has_none() {
        let p = policy(serde_json::json!({}));
        let plan = decide(&facts(&p, None, &[]), at(NOW));
        assert_eq!(plan.create.as_deref(), Some("p-20261202120000"));
        assert!(plan.next_backup.is_some_and(|t| t > at(NOW)));
        assert!(plan.problem.is_none());
    }

    #[test]
    fn a_backup_is_due_once_the_next_schedule_time_passed() {
        let p = policy(serde_json::json!({}));
        let done = [backup(
            "p-1",
            BackupTrigger::Scheduled,
            Some(BackupPhase::Completed),
            "2026-12-02T11:30:00Z",
        )];
        let passed = scheduled("2026-12-02T11:59:00Z");
        assert!(
            decide(&facts(&p, Some(&passed), &done), at(NOW))
                .create
                .is_some()
        );
        let later = scheduled("2026-12-02T12:10:00Z");
        assert!(
            decide(&facts(&p, Some(&later), &done), at(NOW))
                .create
                .is_none(),
            "not before its time"
        );
    }

    #[test]
    fn no_backup_is_created_while_one_is_in_flight() {
        let p = policy(serde_json::json!({}));
        let running = [backup(
            "p-1",
            BackupTrigger::Scheduled,
            Some(BackupPhase::Running),
            "2026-12-02T11:30:00Z",
        )];
        let passed = scheduled("2026-12-02T11:59:00Z");
        assert!(
            decide(&facts(&p, Some(&passed), &running), at(NOW))
                .create
                .is_none()
        );
        // A catalogue Backup without a status yet is no run in flight.
        let catalogue = [backup("p-0", BackupTrigger::Catalogue, None, NOW)];
        assert!(
            decide(&facts(&p, Some(&passed), &catalogue), at(NOW))
                .create
                .is_some()
        );
    }

    #[test]
    fn a_suspended_policy_schedules_nothing() {
        let p = policy(serde_json::json!({"suspend": true}));
        let plan = decide(&facts(&p, None, &[]), at(NOW));
        assert!(plan.create.is_none());
        assert!(plan.next_backup.is_none());
    }

    #[test]
    fn an_invalid_schedule_or_key_holds_the_backup_back() {
        let p = policy(serde_json::json!({"schedule": "0 0 30 2 *"}));
        let plan = decide(&facts(&p, None, &[]), at(NOW));
        assert!(plan.create.is_none());
        assert!(plan.next_backup.is_none());
        assert!(matches!(
            plan.problem,
            Some(ConfigProblem::InvalidSchedule(ScheduleError::Never { .. }))
        ));
        assert_eq!(
            plan.problem.as_ref().unwrap().reason(),
            PolicyEvent::InvalidSchedule
        );

        let p = policy(serde_json::json!({}));
        let f = Facts {
            key_problem: Some("Secret ns/keys not found"),
            ..facts(&p, None, &[])
        };
        let plan = decide(&f, at(NOW));
        assert!(plan.create.is_none());
        assert!(plan.next_backup.is_some(), "the schedule itself is fine");
        let problem = plan.problem.unwrap();
        assert_eq!(problem.reason(), PolicyEvent::InvalidKey);
        assert_eq!(problem.message(), "Secret ns/keys not found");
    }

    #[test]
    fn an_invalid_verification_schedule_wins_the_ready_reason_but_backups_go_on() {
        let p = policy(serde_json::json!({"verification": {"schedule": "0 0 30 2 *"}}));
        let f = Facts {
            key_problem: Some("bad key"),
            ..facts(&p, None, &[])
        };
        let plan = decide(&f, at(NOW));
        assert!(matches!(
            plan.problem,
            Some(ConfigProblem::InvalidSchedule(_))
        ));
        assert!(plan.verify.is_none());
        let plan = decide(&facts(&p, None, &[]), at(NOW));
        assert!(
            plan.create.is_some(),
            "only the backup's own problems hold it"
        );
    }

    #[test]
    fn verification_runs_on_its_schedule_or_on_a_new_token() {
        let mut p = policy(serde_json::json!({"verification": {"schedule": "0 3 * * *"}}));
        let verified_today = BackupPolicyStatus {
            last_verification: Some(VerificationSummary {
                time: time(at("2026-12-02T03:00:05Z")),
                verified: 1,
                failed: 0,
            }),
            last_handled_verify_now: Some("a".into()),
            ..Default::default()
        };
        // Never verified since its creation (the day before): due.
        assert_eq!(
            decide(&facts(&p, None, &[]), at(NOW)).verify,
            Some(RunNow { token: None })
        );
        assert_eq!(
            decide(&facts(&p, Some(&verified_today), &[]), at(NOW)).verify,
            None
        );
        p.annotations_mut()
            .insert(VERIFY_NOW_ANNOTATION.into(), "a".into());
        assert_eq!(
            decide(&facts(&p, Some(&verified_today), &[]), at(NOW)).verify,
            None,
            "the same token asks for nothing"
        );
        p.annotations_mut()
            .insert(VERIFY_NOW_ANNOTATION.into(), "b".into());
        assert_eq!(
            decide(&facts(&p, Some(&verified_today), &[]), at(NOW)).verify,
            Some(RunNow {
                token: Some("b".into())
            })
        );
    }

    #[test]
    fn a_restore_test_runs_on_a_new_token() {
        let mut p = policy(serde_json::json!({"verification": {
            "schedule": "0 3 * * *",
            "restoreTest": {"schedule": "0 4 1 * *", "timeout": "30m"},
        }}));
        let created = decide(&facts(&p, None, &[]), at("2026-12-01T00:10:00Z"));
        assert_eq!(created.restore_test, None, "not due before its schedule");
        p.annotations_mut()
            .insert(RESTORE_TEST_NOW_ANNOTATION.into(), "t1".into());
        let plan = decide(&facts(&p, None, &[]), at("2026-12-01T00:10:00Z"));
        assert_eq!(
            plan.restore_test,
            Some(RunNow {
                token: Some("t1".into())
            })
        );
    }
}
