//! The BackupPolicy controller: on every change of the policy or one of its Backups, and at
//! the next moment something is due (a scheduled backup, the RPO deadline, a verification, a
//! restore test, a retried copy), it rebuilds the catalogue from the stores, deletes partial
//! copies of interrupted runs, retries failed copies from a good one, starts a scheduled backup,
//! verifies stored copies, runs a restore test, applies retention, and writes the status (only
//! when it changed).
//!
//! One reconcile reads the clock once and runs in stages: [`observe`] reads the policy's
//! status, Backups, stores and keys once; [`act`] does the upkeep that always runs (catalogue,
//! partial copies, copy retries); [`decide`] says purely what is due; [`act`] does it; [`settle`]
//! says purely what the new status is, which Events its changes announce, and when to look
//! again. The status is written once at the end, then the Events are published. A fresh `now`
//! is read only after work that takes real time (a verification, a restore test).

pub mod act;
pub mod decide;
pub mod events;
pub mod observe;
pub mod settle;

use jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::controller::Action;

use self::act::{Done, Verified};
use self::decide::{Facts, PolicyPlan, decide};
use self::observe::{Reach, Resolved, observe};
use self::settle::settle;
use super::resolve::error_chain;
use super::{AccessError, Error, State, write_status};
use crate::api::BackupPolicy;
use crate::api::backup::{BackupPolicyStatus, BackupTrigger};

pub use self::decide::is_good;
pub use self::events::PolicyEvent;
pub use self::settle::PolicyCondition;

/// Reconciles one BackupPolicy.
pub async fn reconcile(p: &BackupPolicy, st: &State) -> Result<Action, Error> {
    if p.metadata.deletion_timestamp.is_some() {
        st.forget_policy(p);
        return Ok(Action::await_change());
    }
    let mut now = Timestamp::now();
    let seen = observe(p, st).await?;
    let previous = seen.previous.as_ref();
    let mut r = match seen.reach {
        Reach::NamespaceDeleting => return Ok(Action::await_change()),
        Reach::Waiting(e) => return wait_for_access(st, p, previous, &e, now).await,
        Reach::Ready(r) => *r,
    };
    let mut done = Done {
        unreachable: r.stores.failed.clone(),
        ..Done::default()
    };
    // D: the catalogue comes back from the stores; partial copies of interrupted runs go;
    // failed copies are retried from a good one.
    let corrupt_copies = previous
        .map(|s| s.corrupt_copies.clone())
        .unwrap_or_default();
    act::rebuild_catalogue(st, p, &mut r, &corrupt_copies, now, &mut done).await;
    act::cleanup_incomplete(p, &r, now, &mut done).await;
    act::retry_copies(st, p, &mut r, now, &mut done).await;

    // A: the schedule. The new Backup is left to the watch (it has no status to count yet).
    let plan = decide(&facts(p, previous, &r), now);
    if let Some(name) = &plan.create {
        act::create_backup(st, p, name, BackupTrigger::Scheduled).await?;
    }
    // B: verification of stored copies, then a restore test. A request is recorded as handled
    // before the work starts: a crash in the middle does not make it run again and again.
    if let Some(run) = &plan.verify {
        if let Some(token) = &run.token {
            done.verify_token = Some(token.clone());
            write_progress(st, p, previous, &r, &plan, &done, now).await?;
        }
        let _permit = st.reads.acquire().await;
        let mut copies = corrupt_copies;
        let (verified, failed) = act::verify_all(st, p, &mut r, &mut copies, now, &mut done).await;
        now = Timestamp::now();
        done.verification = Some(Verified {
            at: now,
            verified,
            failed,
        });
        done.corrupt_copies = Some(copies);
    }
    if let Some(run) = &plan.restore_test {
        if let Some(token) = &run.token {
            done.restore_token = Some(token.clone());
            write_progress(st, p, previous, &r, &plan, &done, now).await?;
        }
        let _permit = st.reads.acquire().await;
        done.restore_test = Some(act::restore_test(st, p, &r, now).await);
        now = Timestamp::now();
    }
    // Retention: stored copies first, then the Backup objects.
    act::apply_retention(st, p, &r.stores, &mut r.backups, now, &mut done).await;

    let settled = settle(&facts(p, previous, &r), &plan, &done, now);
    let (ns, name) = (p.namespace().unwrap_or_default(), p.name_any());
    st.metrics.set_age(&ns, &name, settled.backup_age);
    let written = write_status(st, p, &settled.status).await;
    events::announce(st, p, settled.events).await;
    written?;
    Ok(Action::requeue(settled.requeue))
}

/// What `decide` and `settle` read.
fn facts<'a>(
    p: &'a BackupPolicy,
    previous: Option<&'a BackupPolicyStatus>,
    r: &'a Resolved,
) -> Facts<'a> {
    Facts {
        policy: p,
        previous,
        backups: &r.backups,
        key_problem: r.key_problem.as_deref(),
    }
}

/// The crash-safety write: the status as far as the work went, with the token just taken.
async fn write_progress(
    st: &State,
    p: &BackupPolicy,
    previous: Option<&BackupPolicyStatus>,
    r: &Resolved,
    plan: &PolicyPlan,
    done: &Done,
    now: Timestamp,
) -> Result<(), Error> {
    let status = settle::progress(&facts(p, previous, r), plan, done, now);
    write_status(st, p, &status).await
}

/// The policy waits for its ServiceAccount (or the signing keyring): Ready False with the
/// error's category, a Warning when it starts waiting, another look soon.
async fn wait_for_access(
    st: &State,
    p: &BackupPolicy,
    previous: Option<&BackupPolicyStatus>,
    e: &AccessError,
    now: Timestamp,
) -> Result<Action, Error> {
    let msg = error_chain(e);
    let waiting = settle::waiting(
        previous,
        p.metadata.generation,
        e.category(),
        msg.clone(),
        now,
    );
    write_status(st, p, &waiting.status).await?;
    if waiting.announce {
        events::publish_waiting(st, p, e.category(), msg).await;
    }
    Ok(Action::requeue(super::ACCESS_RETRY))
}
