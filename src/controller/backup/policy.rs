//! The BackupPolicy controller: on every change of the policy or one of its Backups, and at
//! the next moment something is due (a scheduled backup, the RPO deadline, a verification, a
//! restore test, a retried copy), it rebuilds the catalogue from the stores, deletes partial
//! copies of interrupted runs, retries failed copies from a good one, starts a scheduled backup,
//! verifies stored copies, runs a restore test, applies retention, and writes the status (only
//! when it changed).

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};

use super::resolve::{Access, Stores, error_chain};
use super::restore_test;
use super::{
    Error, POLICY_LABEL, RESTORE_TEST_NOW_ANNOTATION, State, VERIFY_NOW_ANNOTATION, time,
    write_status,
};
use crate::api::backup::{
    BackupLocationStatus, BackupPhase, BackupPolicyStatus, BackupSpec, BackupStatus, BackupSummary,
    BackupTrigger, BackupVerification, CopyState, CorruptCopy, RestoreTestResult,
    RestoreTestSummary, VerificationResult, VerificationSummary,
};
use crate::api::common::{ConditionStatus, LocalObjectRef, set_condition};
use crate::api::{Backup, BackupPolicy};
use crate::backup::retention::DeleteReason;
use crate::backup::store::CopyOutcome;
use crate::backup::{BackupLocation, BackupRecord, RetentionSettings, retention};
use crate::schedule;

fn is_terminal(b: &Backup) -> bool {
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

fn created(b: &Backup) -> Timestamp {
    b.status
        .as_ref()
        .and_then(|s| s.start_time.as_ref().map(|t| t.0))
        .or_else(|| b.metadata.creation_timestamp.as_ref().map(|t| t.0))
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

fn completed(b: &Backup) -> Option<Timestamp> {
    b.status.as_ref()?.completion_time.as_ref().map(|t| t.0)
}

/// Reconciles one BackupPolicy.
pub async fn reconcile(p: &BackupPolicy, st: &State) -> Result<Action, Error> {
    if p.metadata.deletion_timestamp.is_some() {
        st.forget_policy(p);
        return Ok(Action::await_change());
    }
    let client = &st.ctx.client;
    let ns = p.namespace().unwrap_or_default();
    let name = p.name_any();
    let generation = p.metadata.generation;
    let previous = st.policy_status(p);
    let mut status = previous.clone().unwrap_or_default();
    status.observed_generation = generation;
    let tz = p.spec.time_zone.as_ref().map(|t| t.0.as_str());
    let since = p
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0)
        .unwrap_or_else(Timestamp::now);

    // A namespace being deleted takes its Backups with it: neither rebuild them from the
    // catalogue nor schedule new ones.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    if let Ok(Some(n)) = namespaces.get_opt(&ns).await
        && n.metadata.deletion_timestamp.is_some()
    {
        return Ok(Action::await_change());
    }
    // Everything below acts as the policy's ServiceAccount: until it exists, the policy waits.
    let access = match st.access(&ns, p.spec.service_account_name.as_deref()).await {
        Ok(a) => a,
        Err(e) => {
            let msg = error_chain(&e);
            e.set_waiting(&mut status.conditions, generation);
            let was_ready = condition_status(&previous, "Ready");
            write_policy_status(st, p, previous.as_ref(), &status).await?;
            if was_ready.as_deref() != Some("False") {
                st.publish(p, EventType::Warning, e.category(), "Access", msg, None)
                    .await;
            }
            return Ok(Action::requeue(super::ACCESS_RETRY));
        }
    };
    let backups_api: Api<Backup> = Api::namespaced(client.clone(), &ns);
    let mut backups = list_backups(&backups_api, &name).await?;
    let stores = access.stores(p).await;
    let keys = access.keys(p).await.map_err(|e| error_chain(&e));
    let mut unreachable = stores.failed.clone();

    // D: the catalogue comes back from the stores.
    let (rebuilt, more_to_read) = rebuild_catalogue(
        st,
        p,
        &access,
        &stores,
        &backups,
        &status.corrupt_copies,
        &mut unreachable,
    )
    .await;
    if !rebuilt.is_empty() {
        st.publish(
            p,
            EventType::Normal,
            "CatalogueRebuilt",
            "Catalogue",
            format!(
                "{} Backup objects recreated from the stores: {}",
                rebuilt.len(),
                rebuilt.join(", ")
            ),
            None,
        )
        .await;
        backups = list_backups(&backups_api, &name).await?;
    }

    // Partial copies of interrupted runs go; failed copies are retried from a good one.
    cleanup_incomplete(st, p, &stores, &backups, &unreachable).await;
    let mut wake: Vec<Timestamp> = Vec::new();
    if more_to_read {
        // The rest of the catalogue in the next round, a few seconds on.
        wake.push(Timestamp::now() + CATALOGUE_PAUSE);
    }
    retry_copies(st, p, &stores, &mut backups, &mut wake).await;

    // A: the schedule.
    let now = Timestamp::now();
    let mut ready_problem: Option<(&'static str, String)> = None;
    let next = schedule::next_backup(&p.spec, &ns, &name, now);
    match &next {
        Ok(t) => {
            if !p.spec.suspend {
                wake.push(*t);
            }
        }
        Err(e) => ready_problem = Some(("InvalidSchedule", e.to_string())),
    }
    if let Err(e) = &keys {
        ready_problem = Some(("InvalidKey", e.clone()));
    }
    let in_flight = backups
        .iter()
        .any(|b| !is_terminal(b) && b.spec.trigger != BackupTrigger::Catalogue);
    let due = !p.spec.suspend
        && (backups.is_empty()
            || status
                .next_schedule_time
                .as_ref()
                .is_some_and(|t| now >= t.0));
    if due && !in_flight && ready_problem.is_none() {
        let bname = schedule::backup_name(&name, now);
        create_backup(st, &ns, &name, &bname, BackupTrigger::Scheduled).await?;
    }
    status.next_schedule_time = if p.spec.suspend {
        None
    } else {
        next.as_ref().ok().map(|t| time(*t))
    };

    // B: verification of stored copies.
    if let Some(v) = &p.spec.verification {
        let last = status
            .last_verification
            .as_ref()
            .map(|l| l.time.0)
            .unwrap_or(since);
        let asked = requested(p, VERIFY_NOW_ANNOTATION, &status.last_handled_verify_now);
        match schedule::next_cron(&v.schedule.0, tz, last, schedule::VERIFICATION_SCHEDULE) {
            Ok(due_at) => {
                if asked.is_some() || now >= due_at {
                    // The request is recorded as handled before the work starts: a crash in
                    // the middle does not make it run again and again.
                    if let Some(token) = asked {
                        status.last_handled_verify_now = Some(token);
                        write_policy_status(st, p, previous.as_ref(), &status).await?;
                    }
                    let _permit = st.reads.acquire().await;
                    let options = keys.as_ref().ok().map(|k| k.verify_options());
                    let summary = verify_all(
                        st,
                        p,
                        &stores,
                        &mut backups,
                        options,
                        &mut status.corrupt_copies,
                    )
                    .await;
                    let (cs, reason, msg) = if summary.failed == 0 {
                        (
                            ConditionStatus::True,
                            "CopiesVerified",
                            format!("{} copies verified", summary.verified),
                        )
                    } else {
                        (
                            ConditionStatus::False,
                            "CorruptCopies",
                            format!(
                                "{} copies verified, {} failed",
                                summary.verified, summary.failed
                            ),
                        )
                    };
                    set_condition(
                        &mut status.conditions,
                        "Verified",
                        cs,
                        reason,
                        msg,
                        generation,
                        Timestamp::now(),
                    );
                    status.last_verification = Some(summary);
                }
                let last = status
                    .last_verification
                    .as_ref()
                    .map(|l| l.time.0)
                    .unwrap_or(since);
                if let Ok(t) =
                    schedule::next_cron(&v.schedule.0, tz, last, schedule::VERIFICATION_SCHEDULE)
                {
                    wake.push(t);
                }
            }
            Err(e) => ready_problem = Some(("InvalidSchedule", e.to_string())),
        }
        // B: restore tests.
        if let Some(rt) = &v.restore_test {
            let last = status
                .last_restore_test
                .as_ref()
                .map(|l| l.time.0)
                .unwrap_or(since);
            let asked = requested(
                p,
                RESTORE_TEST_NOW_ANNOTATION,
                &status.last_handled_restore_test_now,
            );
            match schedule::next_cron(&rt.schedule.0, tz, last, schedule::RESTORE_TEST_SCHEDULE) {
                Ok(due_at) => {
                    if asked.is_some() || now >= due_at {
                        if let Some(token) = asked {
                            status.last_handled_restore_test_now = Some(token);
                            write_policy_status(st, p, previous.as_ref(), &status).await?;
                        }
                        let _permit = st.reads.acquire().await;
                        let timeout = rt.timeout.to_std().unwrap_or(Duration::from_secs(1800));
                        let newest = backups
                            .iter()
                            .filter(|b| is_good(b))
                            .max_by_key(|b| created(b))
                            .cloned();
                        let summary = match (newest, &keys) {
                            (Some(b), Ok(keys)) => {
                                restore_test::run(st, &access, keys, p, &b, timeout).await
                            }
                            (_, Err(e)) => RestoreTestSummary {
                                time: time(Timestamp::now()),
                                duration: "0ms".into(),
                                result: RestoreTestResult::Failed,
                                objects_compared: 0,
                                mismatches: 0,
                                message: Some(e.clone()),
                            },
                            (None, _) => RestoreTestSummary {
                                time: time(Timestamp::now()),
                                duration: "0ms".into(),
                                result: RestoreTestResult::Failed,
                                objects_compared: 0,
                                mismatches: 0,
                                message: Some("no good backup to restore".into()),
                            },
                        };
                        rto_condition(p, &mut status, &summary);
                        let passed = summary.result == RestoreTestResult::Passed;
                        st.publish(
                            p,
                            if passed {
                                EventType::Normal
                            } else {
                                EventType::Warning
                            },
                            if passed {
                                "RestoreTestPassed"
                            } else {
                                "RestoreTestFailed"
                            },
                            "RestoreTest",
                            format!(
                                "restore test {} in {}: {} objects compared, {} mismatches{}",
                                summary.result,
                                summary.duration,
                                summary.objects_compared,
                                summary.mismatches,
                                summary
                                    .message
                                    .as_deref()
                                    .map(|m| format!(": {m}"))
                                    .unwrap_or_default()
                            ),
                            None,
                        )
                        .await;
                        if passed {
                            status.last_passed_restore_test = Some(summary.clone());
                        }
                        status.last_restore_test = Some(summary);
                    }
                    let last = status
                        .last_restore_test
                        .as_ref()
                        .map(|l| l.time.0)
                        .unwrap_or(since);
                    if let Ok(t) = schedule::next_cron(
                        &rt.schedule.0,
                        tz,
                        last,
                        schedule::RESTORE_TEST_SCHEDULE,
                    ) {
                        wake.push(t);
                    }
                }
                Err(e) => ready_problem = Some(("InvalidSchedule", e.to_string())),
            }
        }
    }

    // Retention: stored copies first, then the Backup objects.
    apply_retention(st, p, &stores, &mut backups).await;

    // Status from the Backups.
    let now = Timestamp::now();
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
        .filter_map(completed)
        .max();
    status.last_successful_time = last_good.map(time);

    // RPOMet: False the moment the newest good backup is older than the RPO.
    let was_met = condition_status(&previous, "RPOMet");
    let rpo = schedule::rpo(&p.spec).unwrap_or(Duration::from_secs(3600));
    let age = last_good.map(|t| (now.as_millisecond() - t.as_millisecond()).max(0) as f64 / 1000.0);
    st.metrics.set_age(&ns, &name, age);
    match last_good {
        Some(t) => {
            let deadline = schedule::rpo_deadline(t, rpo);
            if now < deadline {
                wake.push(deadline);
                set_condition(
                    &mut status.conditions,
                    "RPOMet",
                    ConditionStatus::True,
                    "WithinRPO",
                    format!(
                        "newest good backup completed at {t}, within the rpo {}",
                        p.spec.rpo
                    ),
                    generation,
                    now,
                );
            } else {
                let msg = format!(
                    "newest good backup completed at {t} is older than the rpo {}",
                    p.spec.rpo
                );
                set_condition(
                    &mut status.conditions,
                    "RPOMet",
                    ConditionStatus::False,
                    "RPOBreached",
                    msg.clone(),
                    generation,
                    now,
                );
                if was_met.as_deref() != Some("False") {
                    st.publish(p, EventType::Warning, "RPOBreached", "Backup", msg, None)
                        .await;
                }
            }
        }
        None => set_condition(
            &mut status.conditions,
            "RPOMet",
            ConditionStatus::False,
            "NoBackup",
            "no good backup yet",
            generation,
            now,
        ),
    }

    // StorageReachable: any location that failed to resolve or list now, or failed in the
    // newest backup run.
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
    let was_reachable = condition_status(&previous, "StorageReachable");
    if unreachable.is_empty() {
        set_condition(
            &mut status.conditions,
            "StorageReachable",
            ConditionStatus::True,
            "Reachable",
            "every storage location is reachable",
            generation,
            now,
        );
        if was_reachable.as_deref() == Some("False") {
            st.publish(
                p,
                EventType::Normal,
                "StorageReachable",
                "Backup",
                "every storage location is reachable again".into(),
                None,
            )
            .await;
        }
    } else {
        let msg = super::execute::failures_text(&unreachable);
        set_condition(
            &mut status.conditions,
            "StorageReachable",
            ConditionStatus::False,
            "StorageUnreachable",
            msg.clone(),
            generation,
            now,
        );
        if was_reachable.as_deref() != Some("False") {
            st.publish(
                p,
                EventType::Warning,
                "StorageUnreachable",
                "Backup",
                msg,
                None,
            )
            .await;
        }
    }
    if let Some((reason, msg)) = &ready_problem {
        // What the schema could not judge (a schedule that never fires, a key that does not
        // load): an Event when it first shows, the Ready condition for as long as it lasts.
        let before = previous
            .as_ref()
            .and_then(|s| crate::api::common::find_condition(&s.conditions, "Ready"));
        if before.is_none_or(|c| c.reason != *reason || c.message != *msg) {
            st.publish(
                p,
                EventType::Warning,
                reason,
                "Reconcile",
                msg.clone(),
                None,
            )
            .await;
        }
    }
    match &ready_problem {
        Some((reason, msg)) => set_condition(
            &mut status.conditions,
            "Ready",
            ConditionStatus::False,
            reason,
            msg.clone(),
            generation,
            now,
        ),
        None => set_condition(
            &mut status.conditions,
            "Ready",
            ConditionStatus::True,
            "Reconciled",
            if p.spec.suspend {
                "suspended: no new backups are scheduled"
            } else {
                "backups are scheduled"
            },
            generation,
            now,
        ),
    }
    write_policy_status(st, p, previous.as_ref(), &status).await?;

    let now = Timestamp::now();
    let delay = wake
        .iter()
        .map(|t| {
            Duration::from_millis((t.as_millisecond() - now.as_millisecond()).max(0) as u64 + 100)
        })
        .min()
        .unwrap_or(Duration::from_secs(600))
        .clamp(Duration::from_millis(200), Duration::from_secs(600));
    Ok(Action::requeue(delay))
}

fn condition_status(status: &Option<BackupPolicyStatus>, type_: &str) -> Option<String> {
    status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.clone())
}

/// Every Backup of a policy.
async fn list_backups(api: &Api<Backup>, policy: &str) -> Result<Vec<Backup>, Error> {
    Ok(api
        .list(&ListParams::default())
        .await
        .map_err(|source| Error::Read {
            what: "Backups".into(),
            source,
        })?
        .items
        .into_iter()
        .filter(|b| b.spec.policy_ref.name == policy && b.metadata.deletion_timestamp.is_none())
        .collect())
}

fn backup_object(ns: &str, policy: &str, name: &str, trigger: BackupTrigger) -> Backup {
    let mut labels = BTreeMap::new();
    if policy.len() <= 63 {
        labels.insert(POLICY_LABEL.to_string(), policy.to_string());
    }
    Backup {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            labels: Some(labels),
            ..Default::default()
        },
        spec: BackupSpec {
            policy_ref: LocalObjectRef {
                name: policy.into(),
            },
            trigger,
        },
        status: None,
    }
}

async fn create_backup(
    st: &State,
    ns: &str,
    policy: &str,
    name: &str,
    trigger: BackupTrigger,
) -> Result<Option<Backup>, Error> {
    let api: Api<Backup> = Api::namespaced(st.ctx.client.clone(), ns);
    match api
        .create(
            &PostParams::default(),
            &backup_object(ns, policy, name, trigger),
        )
        .await
    {
        Ok(b) => Ok(Some(b)),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(None),
        Err(source) => Err(Error::Write {
            what: format!("Backup {ns}/{name}"),
            source,
        }),
    }
}

/// Writes a policy's status and remembers it as the newest ([`State::policy_status`]).
async fn write_policy_status(
    st: &State,
    p: &BackupPolicy,
    previous: Option<&BackupPolicyStatus>,
    status: &BackupPolicyStatus,
) -> Result<(), Error> {
    let _ = previous;
    write_status(st, p, status).await
}

/// Creates a Backup (trigger Catalogue) for every complete stored backup without one; returns
/// their names, and whether the stores hold more to read than one reconcile reads. A store that
/// cannot be listed is added to `unreachable`.
async fn rebuild_catalogue(
    st: &State,
    p: &BackupPolicy,
    access: &Access,
    stores: &Stores,
    backups: &[Backup],
    corrupt_copies: &[CorruptCopy],
    unreachable: &mut Vec<(String, String)>,
) -> (Vec<String>, bool) {
    let mut more_to_read = false;
    let ns = p.namespace().unwrap_or_default();
    let name = p.name_any();
    // Backups the catalogue already has, by the id their copies are stored under.
    let known: HashSet<String> = backups
        .iter()
        .flat_map(|b| {
            let id = b.status.as_ref().and_then(|s| s.backup_id.clone());
            [Some(b.name_any()), id]
        })
        .flatten()
        .collect();
    let mut found: BTreeMap<
        String,
        (
            crate::backup::Manifest,
            Timestamp,
            Vec<BackupLocationStatus>,
        ),
    > = BTreeMap::new();
    // Copies found untrusted are remembered (for this policy and keyring), not read again.
    let untrusted_key = format!(
        "{}/{}",
        p.uid().unwrap_or_default(),
        access.signing.trusted_ids().join(",")
    );
    let untrusted = st.untrusted_copies(&untrusted_key);
    for store in &stores.ready {
        // Only manifests the operator signed enter the catalogue: anyone who can write the
        // store can leave one there, and a forged one must neither count for the RPO nor push
        // real backups out of retention.
        // Only ids without a Backup are read, and a bounded number per reconcile.
        let copy = |id: &str| format!("{}/{id}", store.name());
        match store
            .list_some(
                &ns,
                &name,
                access.signing.trusted(),
                |id| !known.contains(id) && !untrusted.contains(&copy(id)),
                CATALOGUE_READS,
            )
            .await
        {
            Ok((entries, more)) => {
                more_to_read |= more;
                for e in entries {
                    let m = match e.manifest {
                        Ok(m) => m,
                        Err(err) => {
                            tracing::warn!(namespace = %ns, policy = %name, backup = %e.backup_id, store = store.name(), error = %error_chain(&err), "a stored backup that is not trusted was left out of the catalogue");
                            st.add_untrusted_copy(&untrusted_key, copy(&e.backup_id));
                            continue;
                        }
                    };
                    // Times are the operator's own, from the signed manifest (never in the
                    // future), not the store's file dates.
                    let signed_at = m.created_at.min(Timestamp::now());
                    let path = BackupLocation::new(&ns, &name, &e.backup_id)
                        .ok()
                        .map(|l| store.backup_dir(&l).to_string());
                    let entry =
                        found
                            .entry(e.backup_id.clone())
                            .or_insert((m, signed_at, Vec::new()));
                    entry.2.push(BackupLocationStatus {
                        name: store.name().into(),
                        state: CopyState::Written,
                        path,
                        time: Some(time(signed_at)),
                        error: None,
                    });
                }
            }
            Err(e) => unreachable.push((store.name().into(), error_chain(&e))),
        }
    }
    let mut out = Vec::new();
    for (id, (m, completed_at, mut locations)) in found {
        if known.contains(&id) {
            continue;
        }
        // What verification learned of these copies before the catalogue was lost.
        let corrupt = mark_known_corrupt(&id, &mut locations, corrupt_copies);
        let created = match create_backup(st, &ns, &name, &id, BackupTrigger::Catalogue).await {
            Ok(Some(b)) => b,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(backup = %id, error = %e, "could not recreate a Backup from the catalogue");
                continue;
            }
        };
        let status = BackupStatus {
            phase: Some(if corrupt {
                BackupPhase::Corrupt
            } else {
                BackupPhase::Completed
            }),
            backup_id: Some(id.clone()),
            start_time: Some(time(completed_at)),
            completion_time: Some(time(completed_at)),
            objects: m.objects.len() as i64,
            bytes: m.archive.size as i64,
            sha256: Some(m.archive.sha256.clone()),
            signature_key_id: m.signing_key_id.clone(),
            locations,
            ..Default::default()
        };
        if let Err(e) = write_status(st, &created, &status).await {
            tracing::warn!(backup = %id, error = %e, "could not write a catalogue Backup's status");
        }
        out.push(id);
    }
    (out, more_to_read)
}

/// Most copies found corrupt a policy's status remembers.
const MAX_CORRUPT_COPIES: usize = 50;

/// Records what a verification found of one copy: a corrupt one (with `reason`) is remembered,
/// newest first and at most [`MAX_CORRUPT_COPIES`]; a good one is forgotten.
fn remember_verification(
    list: &mut Vec<CorruptCopy>,
    backup_id: &str,
    location: &str,
    reason: Option<&str>,
    now: Timestamp,
) {
    let same = |c: &CorruptCopy| c.backup_id == backup_id && c.location == location;
    let Some(reason) = reason else {
        list.retain(|c| !same(c));
        return;
    };
    if let Some(known) = list.iter_mut().find(|c| same(c)) {
        // Found again: the first finding's time stands.
        known.reason = truncate(reason);
        return;
    }
    list.insert(
        0,
        CorruptCopy {
            backup_id: backup_id.into(),
            location: location.into(),
            time: time(now),
            reason: truncate(reason),
        },
    );
    list.truncate(MAX_CORRUPT_COPIES);
}

fn truncate(reason: &str) -> String {
    crate::api::common::cap_message(reason, MAX_REASON)
}

/// Longest reason kept for a corrupt copy (the schema's limit).
const MAX_REASON: usize = 1024;

/// Marks the copies of `backup_id` the policy remembers as corrupt in a rebuilt catalogue
/// entry; whether any is.
fn mark_known_corrupt(
    backup_id: &str,
    locations: &mut [BackupLocationStatus],
    corrupt_copies: &[CorruptCopy],
) -> bool {
    let mut any = false;
    for l in locations.iter_mut() {
        if let Some(c) = corrupt_copies
            .iter()
            .find(|c| c.backup_id == backup_id && c.location == l.name)
        {
            l.state = CopyState::Corrupt;
            l.error = Some(format!(
                "found corrupt by verification at {}: {}",
                c.time.0, c.reason
            ));
            any = true;
        }
    }
    any
}

/// Verifies every stored copy of every finished backup; updates the Backups' status.
async fn verify_all(
    st: &State,
    p: &BackupPolicy,
    stores: &Stores,
    backups: &mut [Backup],
    options: Option<crate::backup::RestoreOptions>,
    corrupt_copies: &mut Vec<CorruptCopy>,
) -> VerificationSummary {
    let ns = p.namespace().unwrap_or_default();
    let name = p.name_any();
    let (mut verified, mut failed) = (0, 0);
    for b in backups.iter_mut() {
        let Some(previous) = b.status.clone() else {
            continue;
        };
        if !matches!(
            previous.phase,
            Some(BackupPhase::Completed | BackupPhase::Verified | BackupPhase::Corrupt)
        ) {
            continue;
        }
        let id = previous.backup_id.clone().unwrap_or_else(|| b.name_any());
        let Ok(loc) = BackupLocation::new(&ns, &name, &id) else {
            continue;
        };
        let mut s = previous.clone();
        let mut problems = Vec::new();
        for l in s.locations.iter_mut() {
            if !matches!(
                l.state,
                CopyState::Written | CopyState::Verified | CopyState::Corrupt
            ) {
                continue;
            }
            let Some(store) = stores.ready.iter().find(|x| x.name() == l.name) else {
                problems.push(format!("{}: storage location not reachable", l.name));
                failed += 1;
                continue;
            };
            let Some(options) = &options else {
                problems.push(format!("{}: the policy's keys are unreadable", l.name));
                failed += 1;
                continue;
            };
            match crate::backup::verify(store, &loc, options).await {
                Ok(_) => {
                    verified += 1;
                    l.state = CopyState::Verified;
                    l.error = None;
                    remember_verification(corrupt_copies, &id, &l.name, None, Timestamp::now());
                }
                Err(e) => {
                    failed += 1;
                    let msg = error_chain(&e);
                    problems.push(format!("{}: {msg}", l.name));
                    if e.copy_is_bad() {
                        l.state = CopyState::Corrupt;
                        remember_verification(
                            corrupt_copies,
                            &id,
                            &l.name,
                            Some(&msg),
                            Timestamp::now(),
                        );
                    }
                    l.error = Some(msg);
                }
            }
        }
        let corrupt = s.locations.iter().any(|l| l.state == CopyState::Corrupt);
        let all_verified = !s.locations.is_empty()
            && s.locations
                .iter()
                .filter(|l| l.state != CopyState::Failed)
                .all(|l| l.state == CopyState::Verified);
        s.phase = Some(if corrupt {
            BackupPhase::Corrupt
        } else if all_verified {
            BackupPhase::Verified
        } else {
            previous.phase.unwrap_or(BackupPhase::Completed)
        });
        s.verification = Some(BackupVerification {
            time: time(Timestamp::now()),
            result: if corrupt {
                VerificationResult::Corrupt
            } else if problems.is_empty() {
                VerificationResult::Verified
            } else {
                VerificationResult::Failed
            },
            message: (!problems.is_empty()).then(|| problems.join("; ")),
        });
        let s_phase = s.phase;
        let mut stored = s.clone();
        // Keep the verification time from churning the status when nothing else changed.
        if let Some(pv) = &previous.verification
            && previous.phase == s_phase
            && previous.locations == s.locations
            && Some(pv.result) == s.verification.as_ref().map(|v| v.result)
        {
            stored.verification = Some(pv.clone());
        }
        if let Err(e) = write_status(st, &*b, &stored).await {
            tracing::warn!(backup = %b.name_any(), error = %e, "could not write a Backup's verification");
        }
        if corrupt && previous.phase != Some(BackupPhase::Corrupt) {
            let msg = format!("backup {id} has a corrupt copy: {}", problems.join("; "));
            st.publish(
                &*b,
                EventType::Warning,
                "BackupCorrupt",
                "Verify",
                msg.clone(),
                None,
            )
            .await;
            st.publish(
                p,
                EventType::Warning,
                "BackupCorrupt",
                "Verify",
                msg,
                Some(b.object_ref(&())),
            )
            .await;
        }
        b.status = Some(stored);
    }
    VerificationSummary {
        time: time(Timestamp::now()),
        verified,
        failed,
    }
}

fn rto_condition(p: &BackupPolicy, status: &mut BackupPolicyStatus, summary: &RestoreTestSummary) {
    let now = Timestamp::now();
    let generation = p.metadata.generation;
    if summary.result != RestoreTestResult::Passed {
        set_condition(
            &mut status.conditions,
            "RTOMet",
            ConditionStatus::False,
            "RestoreTestFailed",
            format!(
                "restore test {}: {}",
                summary.result,
                summary.message.clone().unwrap_or_default()
            ),
            generation,
            now,
        );
        return;
    }
    let Some(rto) = &p.spec.rto else {
        set_condition(
            &mut status.conditions,
            "RTOMet",
            ConditionStatus::Unknown,
            "NoRTO",
            format!("restore took {}; no rto is set", summary.duration),
            generation,
            now,
        );
        return;
    };
    let measured = crate::api::common::parse_duration(&summary.duration).unwrap_or_default();
    let limit = rto.to_std().unwrap_or_default();
    if measured <= limit {
        set_condition(
            &mut status.conditions,
            "RTOMet",
            ConditionStatus::True,
            "WithinRTO",
            format!(
                "restore test took {}, within the rto {rto}",
                summary.duration
            ),
            generation,
            now,
        );
    } else {
        set_condition(
            &mut status.conditions,
            "RTOMet",
            ConditionStatus::False,
            "RTOExceeded",
            format!(
                "restore test took {}, longer than the rto {rto}",
                summary.duration
            ),
            generation,
            now,
        );
    }
}

/// The token of a "do it now" annotation not handled yet: its value when it differs from the
/// last one handled (recorded in status), so re-applying the same manifest asks for nothing.
fn requested(p: &BackupPolicy, annotation: &str, handled: &Option<String>) -> Option<String> {
    p.annotations()
        .get(annotation)
        .filter(|token| handled.as_ref() != Some(*token))
        .cloned()
}

/// Deletes what retention no longer keeps: the stored copies, then the Backup object.
async fn apply_retention(st: &State, p: &BackupPolicy, stores: &Stores, backups: &mut Vec<Backup>) {
    let r = &p.spec.retention;
    let Ok(settings) = RetentionSettings::new(
        r.copies,
        r.max_age.as_ref().and_then(|d| d.to_std().ok()),
        r.keep_failed,
    ) else {
        return;
    };
    let records: Vec<BackupRecord> = backups
        .iter()
        .filter(|b| is_terminal(b))
        .map(|b| BackupRecord {
            id: b.name_any(),
            created: created(b),
            verified: b.status.as_ref().and_then(|s| s.phase) == Some(BackupPhase::Verified),
            failed: b.status.as_ref().and_then(|s| s.phase) == Some(BackupPhase::Failed),
        })
        .collect();
    let Ok(deletions) = retention::plan(&records, &settings, Timestamp::now()) else {
        return;
    };
    let ns = p.namespace().unwrap_or_default();
    let name = p.name_any();
    let api: Api<Backup> = Api::namespaced(st.ctx.client.clone(), &ns);
    for d in deletions {
        let Some(b) = backups.iter().find(|b| b.name_any() == d.id) else {
            continue;
        };
        let id = b
            .status
            .as_ref()
            .and_then(|s| s.backup_id.clone())
            .unwrap_or_else(|| d.id.clone());
        let mut ok = true;
        if let Ok(loc) = BackupLocation::new(&ns, &name, &id) {
            for store in &stores.ready {
                if let Err(e) = store.delete_backup(&loc).await {
                    tracing::warn!(backup = %id, store = store.name(), error = %e, "retention could not delete a copy");
                    ok = false;
                }
            }
        }
        if ok && stores.failed.is_empty() {
            match api.delete(&d.id, &DeleteParams::default()).await {
                Ok(_) => {
                    tracing::info!(backup = %d.id, reason = ?d.reason, "retention deleted a backup");
                    let why = match d.reason {
                        DeleteReason::ExceedsCopies => {
                            format!("beyond the newest {} copies", r.copies)
                        }
                        DeleteReason::Expired => format!(
                            "older than the maxAge {}",
                            r.max_age.as_ref().map(|a| a.0.as_str()).unwrap_or_default()
                        ),
                        DeleteReason::ExceedsKeepFailed => {
                            format!("beyond the newest {} failed backups", r.keep_failed)
                        }
                    };
                    st.publish(
                        p,
                        EventType::Normal,
                        "RetentionDeleted",
                        "Retention",
                        format!("backup {id} and its stored copies deleted: {why}"),
                        None,
                    )
                    .await;
                }
                Err(e) => {
                    tracing::warn!(backup = %d.id, error = %e, "retention could not delete a Backup")
                }
            }
        }
    }
    let kept: HashSet<String> = api
        .list(&ListParams::default())
        .await
        .map(|l| l.items.into_iter().map(|b| b.name_any()).collect())
        .unwrap_or_else(|_| backups.iter().map(|b| b.name_any()).collect());
    backups.retain(|b| kept.contains(&b.name_any()));
}

/// Manifests the catalogue reads per store in one reconcile: a store holding many backups
/// without Backup objects is brought back over several rounds, each bounded.
pub const CATALOGUE_READS: usize = 50;

/// The pause between two rounds of a catalogue that has more to read.
pub const CATALOGUE_PAUSE: jiff::SignedDuration = jiff::SignedDuration::from_secs(5);

/// How long an incomplete copy (no `manifest.json`) must sit untouched before it is deleted: a
/// writer between its data and its manifest takes seconds, never this long.
pub const INCOMPLETE_GRACE: Duration = Duration::from_secs(10 * 60);

/// Deletes partial copies left by interrupted runs: directories without `manifest.json`,
/// untouched for [`INCOMPLETE_GRACE`], of no Backup still running. A complete copy is never
/// deleted here. A store the catalogue could not list (`unreachable`) is skipped.
async fn cleanup_incomplete(
    st: &State,
    p: &BackupPolicy,
    stores: &Stores,
    backups: &[Backup],
    unreachable: &[(String, String)],
) {
    let ns = p.namespace().unwrap_or_default();
    let name = p.name_any();
    let running: HashSet<String> = backups
        .iter()
        .filter(|b| !is_terminal(b))
        .map(|b| {
            b.status
                .as_ref()
                .and_then(|s| s.backup_id.clone())
                .unwrap_or_else(|| b.name_any())
        })
        .collect();
    for store in &stores.ready {
        if unreachable.iter().any(|(n, _)| n == store.name()) {
            continue;
        }
        let Ok(incomplete) = store.list_incomplete(&ns, &name).await else {
            continue;
        };
        let stale =
            retention::stale_incomplete(&incomplete, &running, Timestamp::now(), INCOMPLETE_GRACE);
        for i in stale {
            let Ok(loc) = BackupLocation::new(&ns, &name, &i.backup_id) else {
                continue;
            };
            match store.delete_incomplete(&loc).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(backup = %i.backup_id, store = store.name(), files = n, "deleted an incomplete copy");
                    st.publish(
                        p,
                        EventType::Normal,
                        "IncompleteCopyDeleted",
                        "Cleanup",
                        format!(
                            "deleted the incomplete copy of backup {} in {} ({} files, no manifest, last written at {})",
                            i.backup_id,
                            store.name(),
                            n,
                            i.last_modified
                        ),
                        None,
                    )
                    .await;
                }
                Err(e) => {
                    tracing::warn!(backup = %i.backup_id, store = store.name(), error = %e, "could not delete an incomplete copy")
                }
            }
        }
    }
}

/// Key of the retry state of copies to one storage location of a policy: a changed location
/// (a fixed endpoint, new credentials) is tried at once.
fn copy_key(p: &BackupPolicy, location: &str) -> String {
    let spec = p
        .spec
        .storage
        .iter()
        .find(|s| s.name == location)
        .and_then(|s| serde_json::to_vec(s).ok())
        .unwrap_or_default();
    format!(
        "{}/{location}/{}",
        p.uid().unwrap_or_default(),
        &crate::backup::crypto::sha256_hex(&spec)[..16]
    )
}

/// Retries the copies that failed: a good Backup's location in state `Failed` gets the stored
/// copy of another of its locations (never a re-export), newest Backup first, on a backoff per
/// location ([`schedule::copy_retry_delay`]); the first failure in a round stops the round for
/// that location. Idempotent: a location that meanwhile holds the same complete copy is only
/// marked `Written`.
async fn retry_copies(
    st: &State,
    p: &BackupPolicy,
    stores: &Stores,
    backups: &mut [Backup],
    wake: &mut Vec<Timestamp>,
) {
    let ns = p.namespace().unwrap_or_default();
    let name = p.name_any();
    let mut order: Vec<usize> = (0..backups.len())
        .filter(|i| is_good(&backups[*i]))
        .collect();
    order.sort_by_key(|i| std::cmp::Reverse(created(&backups[*i])));
    let mut stopped: HashSet<String> = HashSet::new();
    for i in order {
        let b = &backups[i];
        let Some(previous) = b.status.clone() else {
            continue;
        };
        let failed: Vec<String> = previous
            .locations
            .iter()
            .filter(|l| {
                l.state == CopyState::Failed && p.spec.storage.iter().any(|s| s.name == l.name)
            })
            .map(|l| l.name.clone())
            .collect();
        if failed.is_empty() {
            continue;
        }
        let id = previous.backup_id.clone().unwrap_or_else(|| b.name_any());
        let Ok(loc) = BackupLocation::new(&ns, &name, &id) else {
            continue;
        };
        let source = previous
            .locations
            .iter()
            .filter(|l| matches!(l.state, CopyState::Written | CopyState::Verified))
            .find_map(|l| stores.ready.iter().find(|s| s.name() == l.name));
        let Some(source) = source else {
            continue;
        };
        let mut s = previous.clone();
        let mut copied = Vec::new();
        for target_name in failed {
            let key = copy_key(p, &target_name);
            if stopped.contains(&key) {
                continue;
            }
            let now = Timestamp::now();
            if let Some(at) = st.copy_retry_at(&key)
                && now < at
            {
                wake.push(at);
                stopped.insert(key);
                continue;
            }
            let outcome = match stores.ready.iter().find(|s| s.name() == target_name) {
                Some(target) => target
                    .copy_backup(source, &loc)
                    .await
                    .map_err(|e| format!("copying from {}: {}", source.name(), error_chain(&e))),
                None => Err(stores
                    .failed
                    .iter()
                    .find(|(n, _)| *n == target_name)
                    .map(|(_, e)| e.clone())
                    .unwrap_or_else(|| "storage location not configured".into())),
            };
            let Some(l) = s.locations.iter_mut().find(|l| l.name == target_name) else {
                continue;
            };
            match outcome {
                Ok(o) => {
                    st.copy_succeeded(&key);
                    tracing::info!(backup = %id, from = source.name(), to = %target_name, outcome = ?o, "copy retried");
                    l.state = CopyState::Written;
                    l.error = None;
                    l.time = Some(time(Timestamp::now()));
                    l.path = stores
                        .ready
                        .iter()
                        .find(|s| s.name() == target_name)
                        .map(|s| s.backup_dir(&loc).to_string());
                    copied.push((target_name.clone(), o));
                }
                Err(e) => {
                    let at = st.copy_failed(&key, now);
                    wake.push(at);
                    stopped.insert(key);
                    tracing::warn!(backup = %id, to = %target_name, error = %e, retry_at = %at, "copy retry failed");
                    l.error = Some(e.clone());
                    st.publish(
                        b,
                        EventType::Warning,
                        "CopyRetryFailed",
                        "Copy",
                        format!("copy to {target_name} failed again, next try at {at}: {e}"),
                        None,
                    )
                    .await;
                }
            }
        }
        if !copied.is_empty() && s.locations.iter().all(|l| l.state != CopyState::Failed) {
            let written: Vec<&str> = s.locations.iter().map(|l| l.name.as_str()).collect();
            set_condition(
                &mut s.conditions,
                "Ready",
                ConditionStatus::True,
                "Completed",
                format!("written to {}", written.join(", ")),
                None,
                Timestamp::now(),
            );
        }
        if let Err(e) = write_status(st, b, &s).await {
            tracing::warn!(backup = %id, error = %e, "could not record a retried copy");
            continue;
        }
        for (target, o) in &copied {
            let how = match o {
                CopyOutcome::Copied { bytes } => format!("{bytes} bytes copied"),
                CopyOutcome::AlreadyComplete => "the copy was already there".into(),
            };
            let msg = format!(
                "backup {id}: the failed copy to {target} is written from {} ({how})",
                source.name()
            );
            st.publish(
                b,
                EventType::Normal,
                "CopyReplicated",
                "Copy",
                msg.clone(),
                None,
            )
            .await;
            st.publish(
                p,
                EventType::Normal,
                "CopyReplicated",
                "Copy",
                msg,
                Some(b.object_ref(&())),
            )
            .await;
        }
        backups[i].status = Some(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verification_findings_are_remembered_for_a_rebuilt_catalogue() {
        let t0: Timestamp = "2026-12-01T00:00:00Z".parse().unwrap();
        let t1: Timestamp = "2026-12-02T00:00:00Z".parse().unwrap();
        let mut list = Vec::new();
        remember_verification(&mut list, "b1", "onsite", Some("digest mismatch"), t0);
        remember_verification(&mut list, "b1", "onsite", Some("digest mismatch again"), t1);
        assert_eq!(list.len(), 1, "one entry per copy");
        assert_eq!(list[0].time.0, t0, "the first finding's time stands");
        remember_verification(&mut list, "b2", "offsite", Some(&"x".repeat(5000)), t1);
        assert_eq!(list[0].backup_id, "b2", "newest first");
        assert!(list[0].reason.len() <= MAX_REASON);

        let mut locations = vec![
            BackupLocationStatus {
                name: "onsite".into(),
                state: CopyState::Written,
                ..Default::default()
            },
            BackupLocationStatus {
                name: "offsite".into(),
                state: CopyState::Written,
                ..Default::default()
            },
        ];
        assert!(mark_known_corrupt("b1", &mut locations, &list));
        assert_eq!(locations[0].state, "Corrupt");
        assert!(
            locations[0]
                .error
                .as_deref()
                .unwrap()
                .contains("digest mismatch")
        );
        assert_eq!(locations[1].state, "Written", "another copy of it is not");
        assert!(!mark_known_corrupt("b3", &mut locations[1..], &list));

        // A copy that verifies again is forgotten; the list never grows past its bound.
        remember_verification(&mut list, "b1", "onsite", None, t1);
        assert!(list.iter().all(|c| c.backup_id != "b1"));
        for i in 0..(MAX_CORRUPT_COPIES + 5) {
            remember_verification(&mut list, &format!("x{i}"), "onsite", Some("bad"), t1);
        }
        assert_eq!(list.len(), MAX_CORRUPT_COPIES);
    }

    fn backup(phase: BackupPhase, locations: &[(&str, &str)]) -> Backup {
        let mut b = backup_object("ns", "p", "p-1", BackupTrigger::Scheduled);
        b.status = Some(BackupStatus {
            phase: Some(phase),
            locations: locations
                .iter()
                .map(|(n, s)| BackupLocationStatus {
                    name: (*n).into(),
                    state: s.parse().unwrap(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        });
        b
    }

    #[test]
    fn a_corrupt_backup_is_good_while_another_copy_verified() {
        assert!(is_good(&backup(
            BackupPhase::Completed,
            &[("a", "Written")]
        )));
        assert!(is_good(&backup(
            BackupPhase::Corrupt,
            &[("a", "Corrupt"), ("b", "Verified")]
        )));
        assert!(!is_good(&backup(
            BackupPhase::Corrupt,
            &[("a", "Corrupt"), ("b", "Written")]
        )));
        assert!(!is_good(&backup(BackupPhase::Failed, &[])));
        assert!(!is_good(&backup(BackupPhase::Running, &[])));
    }

    #[test]
    fn operator_backups_carry_the_policy_label() {
        let b = backup_object("ns", "p", "p-1", BackupTrigger::Catalogue);
        assert_eq!(b.labels()[POLICY_LABEL], "p");
        assert_eq!(b.spec.trigger, BackupTrigger::Catalogue);
        let long = "p".repeat(100);
        assert!(
            backup_object("ns", &long, "x", BackupTrigger::Scheduled)
                .labels()
                .is_empty()
        );
    }
}
