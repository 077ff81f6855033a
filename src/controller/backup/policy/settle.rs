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
