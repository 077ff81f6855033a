//! The new status of a BackupPolicy, decided purely from its previous status, the observed
//! facts, the plan and what act did, at one `now`: the conditions (RPOMet, StorageReachable,
//! Verified, RTOMet, Ready), the Events a change of them announces (once, on the transition:
//! a comparison of the previous and the new status), and when to look again.

use std::time::Duration;

use jiff::Timestamp;
use kube::ResourceExt;

use super::act::{Done, RestoreTestRun};
use super::decide::{Facts, PolicyPlan, completed, created, is_good, is_terminal};
use super::events::PolicyEvent;
use crate::api::backup::{
    BackupPolicyStatus, BackupSummary, BackupTrigger, CopyState, RestoreTestResult,
    VerificationSummary,
};
use crate::api::common::ConditionStatus;
use crate::controller::backup::execute::failures_text;
use crate::controller::backup::time;
use crate::controller::kit::conditions::{find, turned_false, turned_true};
use crate::controller::kit::{Announce, Conditions, Reason};
use crate::schedule;

crate::condition_types! {
    /// The conditions of a BackupPolicy's status.
    pub enum PolicyCondition {
        /// The policy works (False: what the schema could not judge, or waiting for access).
        Ready,
        /// The newest good backup is younger than the RPO.
        RPOMet,
        /// The last restore test passed within the RTO.
        RTOMet,
        /// The last verification found every copy good.
        Verified,
        /// Every storage location could be reached.
        StorageReachable,
    }
}

/// RPO assumed when the spec's does not parse (the schema rules that out).
const DEFAULT_RPO: Duration = Duration::from_secs(3600);
/// Longest wait before the next look, and the one when nothing is due.
const MAX_WAKE: Duration = Duration::from_secs(600);
/// Shortest wait before the next look.
const MIN_WAKE: Duration = Duration::from_millis(200);
/// Added to every wait: the look comes just after the moment, not just before it.
const WAKE_SLACK: Duration = Duration::from_millis(100);

/// What a reconcile ends with.
#[derive(Debug)]
pub struct Settled {
    pub status: BackupPolicyStatus,
    /// Events about the policy, in order: what act did, then what the status says changed.
    pub events: Vec<Announce<PolicyEvent>>,
    pub requeue: Duration,
    /// Age of the newest good backup, in seconds (the `backup_age_seconds` gauge).
    pub backup_age: Option<f64>,
}

/// The status as far as the work went: the previous one with this generation, the next
/// schedule time, the "now" tokens handled, and what a verification and a restore test found.
/// Also what the crash-safety write records before a requested verification or restore test
/// starts.
pub fn progress(
    f: &Facts<'_>,
    plan: &PolicyPlan,
    done: &Done,
    now: Timestamp,
) -> BackupPolicyStatus {
    let generation = f.policy.metadata.generation;
    let mut status = f.previous.cloned().unwrap_or_default();
    status.observed_generation = generation;
    status.next_schedule_time = plan.next_backup.map(time);
    if let Some(token) = &done.verify_token {
        status.last_handled_verify_now = Some(token.clone());
    }
    if let Some(token) = &done.restore_token {
        status.last_handled_restore_test_now = Some(token.clone());
    }
    if let Some(copies) = &done.corrupt_copies {
        status.corrupt_copies = copies.clone();
    }
    let mut conditions = Conditions::new(&mut status.conditions, now, generation);
    if let Some(v) = &done.verification {
        if v.failed == 0 {
            conditions.set(
                PolicyCondition::Verified,
                true,
                "CopiesVerified",
                format!("{} copies verified", v.verified),
            );
        } else {
            conditions.set(
                PolicyCondition::Verified,
                false,
                "CorruptCopies",
                format!("{} copies verified, {} failed", v.verified, v.failed),
            );
        }
        status.last_verification = Some(VerificationSummary {
            time: time(v.at),
            verified: v.verified,
            failed: v.failed,
        });
    }
    if let Some(run) = &done.restore_test {
        let verdict = Rto::of(f, run);
        let (cs, reason) = match verdict {
            Rto::TestFailed => (ConditionStatus::False, "RestoreTestFailed"),
            Rto::NotSet => (ConditionStatus::Unknown, "NoRTO"),
            Rto::Within => (ConditionStatus::True, "WithinRTO"),
            Rto::Exceeded => (ConditionStatus::False, "RTOExceeded"),
        };
        conditions.set_status(PolicyCondition::RTOMet, cs, reason, verdict.message(f, run));
        if run.summary.result == RestoreTestResult::Passed {
            status.last_passed_restore_test = Some(run.summary.clone());
        }
        status.last_restore_test = Some(run.summary.clone());
    }
    status
}

/// What a restore test says of the RTO.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Rto {
    /// The test did not pass: it measures nothing.
    TestFailed,
    /// Passed; the policy sets no RTO.
    NotSet,
    Within,
    /// Passed, but slower than the RTO.
    Exceeded,
}

impl Rto {
    fn of(f: &Facts<'_>, run: &RestoreTestRun) -> Self {
        if run.summary.result != RestoreTestResult::Passed {
            return Self::TestFailed;
        }
        let Some(rto) = &f.policy.spec.rto else {
            return Self::NotSet;
        };
        if run.took <= rto.to_std().unwrap_or_default() {
            Self::Within
        } else {
            Self::Exceeded
        }
    }

    fn message(self, f: &Facts<'_>, run: &RestoreTestRun) -> String {
        let s = &run.summary;
        let rto = f
            .policy
            .spec
            .rto
            .as_ref()
            .map(|r| r.0.as_str())
            .unwrap_or_default();
        match self {
            Self::TestFailed => format!(
                "restore test {}: {}",
                s.result,
                s.message.clone().unwrap_or_default()
            ),
            Self::NotSet => format!("restore took {}; no rto is set", s.duration),
            Self::Within => format!("restore test took {}, within the rto {rto}", s.duration),
            Self::Exceeded => {
                format!(
                    "restore test took {}, longer than the rto {rto}",
                    s.duration
                )
            }
        }
    }

    /// The Event of the test: a test slower than the RTO fails it (and raises the
    /// RestoreTestFailed signal).
    fn announce(self, f: &Facts<'_>, run: &RestoreTestRun) -> Announce<PolicyEvent> {
        let s = &run.summary;
        let (reason, slow) = match self {
            Self::TestFailed => (PolicyEvent::RestoreTestFailed, String::new()),
            Self::Exceeded => (
                PolicyEvent::RestoreTestFailed,
                format!(
                    ", longer than the rto {}",
                    f.policy
                        .spec
                        .rto
                        .as_ref()
                        .map(|r| r.0.as_str())
                        .unwrap_or_default()
                ),
            ),
            Self::NotSet | Self::Within => (PolicyEvent::RestoreTestPassed, String::new()),
        };
        Announce::new(
            reason,
            format!(
                "restore test {} in {}{slow}: {} objects compared, {} mismatches{}",
                s.result,
                s.duration,
                s.objects_compared,
                s.mismatches,
                s.message
                    .as_deref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            ),
        )
    }
}

/// Settles the reconcile of `f.policy` at `now`.
pub fn settle(f: &Facts<'_>, plan: &PolicyPlan, done: &Done, now: Timestamp) -> Settled {
    let p = f.policy;
    let generation = p.metadata.generation;
    let before: &[_] = f.previous.map(|s| s.conditions.as_slice()).unwrap_or(&[]);
    let mut status = progress(f, plan, done, now);
    let mut events = done.announced.clone();
    if let Some(run) = &done.restore_test {
        events.push(Rto::of(f, run).announce(f, run));
    }

    // Status from the Backups.
    let mut backups: Vec<_> = f.backups.iter().collect();
    backups.sort_by_key(|b| (created(b), b.name_any()));
    status.last_backup = backups
        .iter()
        .rev()
        .find(|b| b.spec.trigger != BackupTrigger::Catalogue || is_terminal(b))
        .map(|b| {
            let s = b.status.clone().unwrap_or_default();
            BackupSummary {
                name: b.name_any(),
                completion_time: s.completion_time,
                objects: s.objects,
                bytes: s.bytes,
                sha256: s.sha256,
            }
        });
    let last_good = backups
        .iter()
        .filter(|b| is_good(b))
        .filter_map(|b| completed(b))
        .max();
    status.last_successful_time = last_good.map(time);
    let backup_age =
        last_good.map(|t| (now.as_millisecond() - t.as_millisecond()).max(0) as f64 / 1000.0);

    let mut wake = done.wake.clone();
    let mut conditions = Conditions::new(&mut status.conditions, now, generation);

    // RPOMet: False the moment the newest good backup is older than the RPO.
    let rpo = schedule::rpo(&p.spec).unwrap_or(DEFAULT_RPO);
    let mut breach = None;
    match last_good {
        Some(t) => {
            let deadline = schedule::rpo_deadline(t, rpo);
            if now < deadline {
                wake.push(deadline);
                conditions.set(
                    PolicyCondition::RPOMet,
                    true,
                    "WithinRPO",
                    format!(
                        "newest good backup completed at {t}, within the rpo {}",
                        p.spec.rpo
                    ),
                );
            } else {
                let msg = format!(
                    "newest good backup completed at {t} is older than the rpo {}",
                    p.spec.rpo
                );
                conditions.set(PolicyCondition::RPOMet, false, "RPOBreached", msg.clone());
                breach = Some(msg);
            }
        }
        None => {
            conditions.set(
                PolicyCondition::RPOMet,
                false,
                "NoBackup",
                "no good backup yet",
            );
        }
    }

    // StorageReachable: any location that failed to resolve or list now, or failed in the
    // newest backup run.
    let mut unreachable = done.unreachable.clone();
    if let Some(newest) = backups
        .iter()
        .rev()
        .find(|b| is_terminal(b) && b.spec.trigger != BackupTrigger::Catalogue)
    {
        for l in newest.status.iter().flat_map(|s| s.locations.iter()) {
            if l.state == CopyState::Failed && !unreachable.iter().any(|(n, _)| *n == l.name) {
                unreachable.push((l.name.clone(), l.error.clone().unwrap_or_default()));
            }
        }
    }
    let storage = failures_text(&unreachable);
    if unreachable.is_empty() {
        conditions.set(
            PolicyCondition::StorageReachable,
            true,
            "Reachable",
            "every storage location is reachable",
        );
    } else {
        conditions.set(
            PolicyCondition::StorageReachable,
            false,
            "StorageUnreachable",
            storage.clone(),
        );
    }

    // Ready: what the schema could not judge (a schedule that never fires, a key that does not
    // load) holds it False for as long as it lasts.
    match &plan.problem {
        Some(problem) => conditions.set(
            PolicyCondition::Ready,
            false,
            problem.reason().as_str(),
            problem.message(),
        ),
        None => conditions.set(
            PolicyCondition::Ready,
            true,
            "Reconciled",
            if p.spec.suspend {
                "suspended: no new backups are scheduled"
            } else {
                "backups are scheduled"
            },
        ),
    };

    // Announced once, on the transition.
    let after = status.conditions.as_slice();
    if let Some(msg) = breach
        && turned_false(before, after, PolicyCondition::RPOMet)
    {
        events.push(Announce::new(PolicyEvent::RPOBreached, msg));
    }
    if turned_false(before, after, PolicyCondition::StorageReachable) {
        events.push(Announce::new(PolicyEvent::StorageUnreachable, storage));
    } else if turned_true(before, after, PolicyCondition::StorageReachable) {
        events.push(Announce::new(
            PolicyEvent::StorageReachable,
            "every storage location is reachable again",
        ));
    }
    if let Some(problem) = &plan.problem {
        // An Event when it first shows (or changes), the Ready condition for as long as it
        // lasts.
        let was = find(before, PolicyCondition::Ready);
        let now_ready = find(after, PolicyCondition::Ready);
        if was.map(|c| (&c.reason, &c.message)) != now_ready.map(|c| (&c.reason, &c.message)) {
            events.push(Announce::new(problem.reason(), problem.message()));
        }
    }

    // When to look again.
    if let Some(t) = plan.next_backup {
        wake.push(t);
    }
    if let Some(v) = &p.spec.verification {
        let last = |t: Option<Timestamp>| t.unwrap_or(f.since(now));
        let verified = last(status.last_verification.as_ref().map(|l| l.time.0));
        if let Ok(t) = schedule::next_cron(
            &v.schedule.0,
            f.time_zone(),
            verified,
            schedule::VERIFICATION_SCHEDULE,
        ) {
            wake.push(t);
        }
        if let Some(rt) = &v.restore_test {
            let tested = last(status.last_restore_test.as_ref().map(|l| l.time.0));
            if let Ok(t) = schedule::next_cron(
                &rt.schedule.0,
                f.time_zone(),
                tested,
                schedule::RESTORE_TEST_SCHEDULE,
            ) {
                wake.push(t);
            }
        }
    }

    Settled {
        status,
        events,
        requeue: next_wake(&wake, now),
        backup_age,
    }
}

/// How long until the nearest of `wake`, just after it: clamped to 200ms..600s (600s when
/// nothing is due).
pub fn next_wake(wake: &[Timestamp], now: Timestamp) -> Duration {
    wake.iter()
        .map(|t| {
            Duration::from_millis((t.as_millisecond() - now.as_millisecond()).max(0) as u64)
                + WAKE_SLACK
        })
        .min()
        .unwrap_or(MAX_WAKE)
        .clamp(MIN_WAKE, MAX_WAKE)
}

/// A policy that waits for access (its ServiceAccount, the signing keyring).
#[derive(Debug)]
pub struct Waiting {
    pub status: BackupPolicyStatus,
    /// Whether to publish the Warning: only when Ready was not False already.
    pub announce: bool,
}

/// The status of a policy the operator cannot act for yet: Ready False with the access error's
/// `category` as reason.
pub fn waiting(
    previous: Option<&BackupPolicyStatus>,
    generation: Option<i64>,
    category: &str,
    message: String,
    now: Timestamp,
) -> Waiting {
    let mut status = previous.cloned().unwrap_or_default();
    status.observed_generation = generation;
    Conditions::new(&mut status.conditions, now, generation).set(
        PolicyCondition::Ready,
        false,
        category,
        message,
    );
    let before: &[_] = previous.map(|s| s.conditions.as_slice()).unwrap_or(&[]);
    let announce = turned_false(before, &status.conditions, PolicyCondition::Ready);
    Waiting { status, announce }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Backup;
    use crate::api::backup::{BackupPhase, RestoreTestSummary};
    use crate::controller::backup::policy::act::Verified;
    use crate::controller::backup::policy::decide::tests::{at, backup, facts, policy};
    use crate::controller::backup::policy::decide::{ConfigProblem, decide};
    use crate::controller::kit::conditions::is_true;

    const NOW: &str = "2026-12-02T12:00:00Z";

    fn good(completed: &str) -> Backup {
        backup(
            "p-1",
            BackupTrigger::Scheduled,
            Some(BackupPhase::Completed),
            completed,
        )
    }

    /// Settles `backups` of `p` from `previous` with nothing done, at `now`.
    fn settled(
        p: &crate::api::BackupPolicy,
        previous: Option<&BackupPolicyStatus>,
        backups: &[Backup],
        done: &Done,
        now: &str,
    ) -> Settled {
        let f = facts(p, previous, backups);
        let plan = PolicyPlan {
            next_backup: decide(&f, at(now)).next_backup,
            ..Default::default()
        };
        settle(&f, &plan, done, at(now))
    }

    fn condition(
        s: &Settled,
        c: PolicyCondition,
    ) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
        find(&s.status.conditions, c).expect("condition set")
    }

    fn reasons(s: &Settled) -> Vec<PolicyEvent> {
        s.events.iter().map(|a| a.reason).collect()
    }

    #[test]
    fn rpo_is_met_within_the_rpo_and_the_reconcile_wakes_at_its_deadline() {
        let p = policy(serde_json::json!({"schedule": "0 0 1 1 *"}));
        let s = settled(
            &p,
            None,
            &[good("2026-12-02T11:30:00Z")],
            &Done::default(),
            NOW,
        );
        let c = condition(&s, PolicyCondition::RPOMet);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", "WithinRPO")
        );
        assert!(reasons(&s).is_empty());
        // The deadline (12:30) is the nearest moment, but longer than the longest wait.
        assert_eq!(s.requeue, Duration::from_secs(600));
        let s = settled(
            &p,
            None,
            &[good("2026-12-02T11:02:00Z")],
            &Done::default(),
            NOW,
        );
        assert_eq!(s.requeue, Duration::from_millis(120_100), "12:02 and 100ms");
        assert_eq!(
            s.status.last_successful_time.as_ref().map(|t| t.0),
            Some(at("2026-12-02T11:02:00Z"))
        );
        assert_eq!(s.backup_age, Some(58.0 * 60.0));
    }

    #[test]
    fn an_rpo_breach_is_announced_once() {
        let p = policy(serde_json::json!({}));
        let old = [good("2026-12-02T10:00:00Z")];
        let within = settled(&p, None, &old, &Done::default(), "2026-12-02T10:30:00Z");
        let breached = settled(&p, Some(&within.status), &old, &Done::default(), NOW);
        let c = condition(&breached, PolicyCondition::RPOMet);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "RPOBreached")
        );
        assert_eq!(reasons(&breached), [PolicyEvent::RPOBreached]);
        assert!(breached.events[0].note.contains("older than the rpo 1h"));
        let again = settled(
            &p,
            Some(&breached.status),
            &old,
            &Done::default(),
            "2026-12-02T12:05:00Z",
        );
        assert!(reasons(&again).is_empty(), "announced once");
        assert_eq!(
            condition(&again, PolicyCondition::RPOMet)
                .last_transition_time
                .0,
            at(NOW)
        );
    }

    #[test]
    fn no_good_backup_is_an_unmet_rpo_without_an_event() {
        let p = policy(serde_json::json!({}));
        let failed = [backup(
            "p-1",
            BackupTrigger::Scheduled,
            Some(BackupPhase::Failed),
            "2026-12-02T11:00:00Z",
        )];
        let s = settled(&p, None, &failed, &Done::default(), NOW);
        let c = condition(&s, PolicyCondition::RPOMet);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "NoBackup")
        );
        assert!(!reasons(&s).contains(&PolicyEvent::RPOBreached));
        assert_eq!(s.status.last_backup.as_ref().unwrap().name, "p-1");
        assert_eq!(s.backup_age, None);
    }

    #[test]
    fn an_unreachable_store_is_announced_once_and_its_recovery_once() {
        let p = policy(serde_json::json!({}));
        let b = [good("2026-12-02T11:30:00Z")];
        let fine = settled(&p, None, &b, &Done::default(), NOW);
        assert_eq!(
            is_true(&fine.status.conditions, PolicyCondition::StorageReachable),
            Some(true)
        );
        assert!(
            reasons(&fine).is_empty(),
            "reachable from the start: nothing to announce"
        );

        let down = Done {
            unreachable: vec![("offsite".into(), "connection refused".into())],
            ..Done::default()
        };
        let lost = settled(&p, Some(&fine.status), &b, &down, NOW);
        let c = condition(&lost, PolicyCondition::StorageReachable);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "StorageUnreachable")
        );
        assert_eq!(c.message, "offsite: connection refused");
        assert_eq!(reasons(&lost), [PolicyEvent::StorageUnreachable]);
        assert_eq!(lost.events[0].note, "offsite: connection refused");
        let still = settled(&p, Some(&lost.status), &b, &down, NOW);
        assert!(reasons(&still).is_empty(), "announced once");

        let back = settled(&p, Some(&still.status), &b, &Done::default(), NOW);
        assert_eq!(reasons(&back), [PolicyEvent::StorageReachable]);
        assert!(!PolicyEvent::StorageReachable.is_warning());
        let again = settled(&p, Some(&back.status), &b, &Done::default(), NOW);
        assert!(reasons(&again).is_empty(), "recovery announced once");
    }

    #[test]
    fn a_failed_copy_of_the_newest_run_makes_storage_unreachable() {
        let p = policy(serde_json::json!({}));
        let mut b = good("2026-12-02T11:30:00Z");
        let l = &mut b.status.as_mut().unwrap().locations[0];
        l.state = CopyState::Failed;
        l.error = Some("bucket gone".into());
        let s = settled(&p, None, &[b], &Done::default(), NOW);
        assert_eq!(
            condition(&s, PolicyCondition::StorageReachable).message,
            "onsite: bucket gone"
        );
    }

    #[test]
    fn verification_sets_verified_or_corrupt_copies() {
        let p = policy(serde_json::json!({}));
        let done = |failed| Done {
            verification: Some(Verified {
                at: at(NOW),
                verified: 3,
                failed,
            }),
            ..Done::default()
        };
        let s = settled(&p, None, &[], &done(0), NOW);
        let c = condition(&s, PolicyCondition::Verified);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", "CopiesVerified")
        );
        assert_eq!(c.message, "3 copies verified");
        assert_eq!(s.status.last_verification.as_ref().unwrap().time.0, at(NOW));
        let s = settled(&p, Some(&s.status), &[], &done(2), NOW);
        let c = condition(&s, PolicyCondition::Verified);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "CorruptCopies")
        );
        assert_eq!(c.message, "3 copies verified, 2 failed");
        // No verification this round: the condition stays as it was.
        let kept = settled(&p, Some(&s.status), &[], &Done::default(), NOW);
        assert_eq!(
            condition(&kept, PolicyCondition::Verified).reason,
            "CorruptCopies"
        );
    }

    fn tested(result: RestoreTestResult, took: Duration) -> Done {
        Done {
            restore_test: Some(RestoreTestRun {
                summary: RestoreTestSummary {
                    time: time(at(NOW)),
                    duration: crate::api::common::format_duration(took),
                    result,
                    objects_compared: 5,
                    mismatches: 0,
                    message: None,
                },
                took,
            }),
            ..Done::default()
        }
    }

    #[test]
    fn a_restore_test_within_the_rto_meets_it() {
        let p = policy(serde_json::json!({"rto": "10s"}));
        let s = settled(
            &p,
            None,
            &[],
            &tested(RestoreTestResult::Passed, Duration::from_secs(10)),
            NOW,
        );
        let c = condition(&s, PolicyCondition::RTOMet);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", "WithinRTO")
        );
        assert_eq!(c.message, "restore test took 10s, within the rto 10s");
        assert_eq!(reasons(&s), [PolicyEvent::RestoreTestPassed]);
        assert_eq!(
            s.events[0].note,
            "restore test Passed in 10s: 5 objects compared, 0 mismatches"
        );
        assert!(s.status.last_passed_restore_test.is_some());
    }

    #[test]
    fn a_passed_restore_test_slower_than_the_rto_exceeds_it_and_fails_as_an_event() {
        let p = policy(serde_json::json!({"rto": "10s"}));
        // 10.4s shows as "10.400s": the comparison uses the measured Duration, not the text.
        let took = Duration::from_millis(10_400);
        let s = settled(&p, None, &[], &tested(RestoreTestResult::Passed, took), NOW);
        let c = condition(&s, PolicyCondition::RTOMet);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "RTOExceeded")
        );
        assert_eq!(
            c.message,
            "restore test took 10.400s, longer than the rto 10s"
        );
        assert_eq!(reasons(&s), [PolicyEvent::RestoreTestFailed]);
        assert_eq!(
            PolicyEvent::RestoreTestFailed.signal(),
            Some(crate::signals::Signal::RestoreTestFailed)
        );
        assert!(
            s.status.last_passed_restore_test.is_some(),
            "the test itself passed"
        );
    }

    #[test]
    fn a_failed_restore_test_misses_the_rto() {
        let p = policy(serde_json::json!({"rto": "10s"}));
        let mut done = tested(RestoreTestResult::Failed, Duration::ZERO);
        done.restore_test.as_mut().unwrap().summary.message =
            Some("no good backup to restore".into());
        let s = settled(&p, None, &[], &done, NOW);
        let c = condition(&s, PolicyCondition::RTOMet);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "RestoreTestFailed")
        );
        assert_eq!(c.message, "restore test Failed: no good backup to restore");
        assert_eq!(reasons(&s), [PolicyEvent::RestoreTestFailed]);
        assert!(s.status.last_passed_restore_test.is_none());
        assert!(s.status.last_restore_test.is_some());
    }

    #[test]
    fn without_an_rto_a_passed_restore_test_leaves_it_unknown() {
        let p = policy(serde_json::json!({}));
        let s = settled(
            &p,
            None,
            &[],
            &tested(RestoreTestResult::Passed, Duration::from_secs(3)),
            NOW,
        );
        let c = condition(&s, PolicyCondition::RTOMet);
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("Unknown", "NoRTO"));
        assert_eq!(c.message, "restore took 3s; no rto is set");
        assert_eq!(reasons(&s), [PolicyEvent::RestoreTestPassed]);
    }

    #[test]
    fn ready_says_reconciled_or_suspended() {
        let p = policy(serde_json::json!({}));
        let s = settled(&p, None, &[], &Done::default(), NOW);
        let c = condition(&s, PolicyCondition::Ready);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", "Reconciled")
        );
        assert_eq!(c.message, "backups are scheduled");
        assert_eq!(c.observed_generation, Some(3));
        assert_eq!(s.status.observed_generation, Some(3));
        assert!(s.status.next_schedule_time.is_some());

        let p = policy(serde_json::json!({"suspend": true}));
        let s = settled(&p, None, &[], &Done::default(), NOW);
        let c = condition(&s, PolicyCondition::Ready);
        assert_eq!(
            (c.status.as_str(), c.message.as_str()),
            ("True", "suspended: no new backups are scheduled")
        );
        assert!(s.status.next_schedule_time.is_none());
    }

    #[test]
    fn an_invalid_schedule_or_key_is_announced_once() {
        let p = policy(serde_json::json!({"schedule": "0 0 30 2 *"}));
        let f = facts(&p, None, &[]);
        let plan = decide(&f, at(NOW));
        let first = settle(&f, &plan, &Done::default(), at(NOW));
        let c = condition(&first, PolicyCondition::Ready);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "InvalidSchedule")
        );
        assert_eq!(reasons(&first), [PolicyEvent::InvalidSchedule]);
        assert!(PolicyEvent::InvalidSchedule.is_warning());
        let f = facts(&p, Some(&first.status), &[]);
        let again = settle(&f, &decide(&f, at(NOW)), &Done::default(), at(NOW));
        assert!(reasons(&again).is_empty(), "announced once");

        // Another problem (the key) is announced when it shows.
        let plan = PolicyPlan {
            problem: Some(ConfigProblem::InvalidKey("Secret ns/k not found".into())),
            ..Default::default()
        };
        let key = settle(&f, &plan, &Done::default(), at(NOW));
        assert_eq!(reasons(&key), [PolicyEvent::InvalidKey]);
        assert_eq!(
            condition(&key, PolicyCondition::Ready).message,
            "Secret ns/k not found"
        );
        let f = facts(&p, Some(&key.status), &[]);
        assert!(reasons(&settle(&f, &plan, &Done::default(), at(NOW))).is_empty());
    }

    #[test]
    fn the_next_wake_up_is_the_nearest_due_moment_clamped() {
        let now = at(NOW);
        let s = |secs: i64| now + jiff::SignedDuration::from_secs(secs);
        assert_eq!(next_wake(&[], now), Duration::from_secs(600), "nothing due");
        assert_eq!(
            next_wake(&[s(30), s(5), s(90)], now),
            Duration::from_millis(5_100)
        );
        assert_eq!(
            next_wake(&[s(-30)], now),
            Duration::from_millis(200),
            "past: soon"
        );
        assert_eq!(next_wake(&[s(3600)], now), Duration::from_secs(600));

        // Schedule, verification, restore test and copy retries all count.
        let p = policy(serde_json::json!({
            "schedule": "0 0 1 1 *",
            "verification": {"schedule": "1 12 * * *",
                "restoreTest": {"schedule": "0 0 1 1 *", "timeout": "30m"}},
        }));
        let verified = BackupPolicyStatus {
            last_verification: Some(VerificationSummary {
                time: time(at("2026-12-02T11:00:00Z")),
                verified: 0,
                failed: 0,
            }),
            last_restore_test: Some(RestoreTestSummary {
                time: time(at("2026-12-02T11:00:00Z")),
                duration: "1s".into(),
                result: RestoreTestResult::Passed,
                objects_compared: 0,
                mismatches: 0,
                message: None,
            }),
            ..Default::default()
        };
        let idle = settled(&p, Some(&verified), &[], &Done::default(), NOW);
        assert_eq!(
            idle.requeue,
            Duration::from_millis(60_100),
            "the verification at 12:01"
        );
        let retry = Done {
            wake: vec![s(20)],
            ..Done::default()
        };
        let soon = settled(&p, Some(&verified), &[], &retry, NOW);
        assert_eq!(
            soon.requeue,
            Duration::from_millis(20_100),
            "a copy retry at 12:00:20"
        );
    }

    #[test]
    fn a_handled_token_is_in_the_progress_written_before_the_work() {
        let p = policy(serde_json::json!({}));
        let f = facts(&p, None, &[]);
        let done = Done {
            verify_token: Some("v1".into()),
            ..Done::default()
        };
        let s = progress(&f, &PolicyPlan::default(), &done, at(NOW));
        assert_eq!(s.last_handled_verify_now.as_deref(), Some("v1"));
        assert_eq!(s.last_handled_restore_test_now, None);
        assert!(s.last_verification.is_none(), "nothing verified yet");
    }

    #[test]
    fn waiting_for_access_is_announced_only_when_ready_was_not_false() {
        let t = at(NOW);
        let first = waiting(None, Some(3), "ServiceAccountNotFound", "no sa".into(), t);
        assert!(first.announce);
        let c = find(&first.status.conditions, PolicyCondition::Ready).unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str(), c.message.as_str()),
            ("False", "ServiceAccountNotFound", "no sa")
        );
        assert_eq!(first.status.observed_generation, Some(3));
        let again = waiting(
            Some(&first.status),
            Some(3),
            "ServiceAccountNotFound",
            "no sa".into(),
            t,
        );
        assert!(!again.announce);
        let p = policy(serde_json::json!({}));
        let ok = settled(&p, Some(&again.status), &[], &Done::default(), NOW);
        let after = waiting(
            Some(&ok.status),
            Some(3),
            "SigningKeyUnavailable",
            "gone".into(),
            t,
        );
        assert!(after.announce, "Ready was True");
    }
}
