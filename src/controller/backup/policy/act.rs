//! The writes of a BackupPolicy reconcile, each given the `now` it acts at (no clock read
//! here; real elapsed time is measured only for the restore test's duration): the catalogue
//! rebuilt from the stores, partial copies of interrupted runs deleted, failed copies retried
//! from a good one, a scheduled Backup created, stored copies verified, a restore test run,
//! retention applied (stored copies first, then the Backup objects). What each did is recorded
//! in [`Done`] for `settle`; Backups the policy creates or deletes are added to or removed from
//! the observed list, so nothing is listed twice. Events about the policy are returned there
//! as [`Announce`]s; those about a Backup are published on it at once.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use jiff::Timestamp;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use kube::{Resource, ResourceExt};

use super::decide::{created, is_good, is_terminal};
use super::events::{PolicyEvent, publish};
use super::observe::Resolved;
use crate::api::backup::{
    BackupLocationStatus, BackupPhase, BackupSpec, BackupStatus, BackupTrigger, BackupVerification,
    CopyState, CorruptCopy, RestoreTestResult, RestoreTestSummary, VerificationResult,
};
use crate::api::common::{LocalObjectRef, format_duration};
use crate::api::{Backup, BackupPolicy};
use crate::backup::retention::DeleteReason;
use crate::backup::store::CopyOutcome;
use crate::backup::{BackupLocation, BackupRecord, RetentionSettings, retention};
use crate::controller::backup::RunCondition;
use crate::controller::backup::resolve::{Stores, error_chain};
use crate::controller::backup::{Error, POLICY_LABEL, State, restore_test, time, write_status};
use crate::controller::kit::{Announce, Conditions};

/// Manifests the catalogue reads per store in one reconcile: a store holding many backups
/// without Backup objects is brought back over several rounds, each bounded.
pub const CATALOGUE_READS: usize = 50;

/// The pause between two rounds of a catalogue that has more to read.
pub const CATALOGUE_PAUSE: jiff::SignedDuration = jiff::SignedDuration::from_secs(5);

/// How long an incomplete copy (no `manifest.json`) must sit untouched before it is deleted: a
/// writer between its data and its manifest takes seconds, never this long.
pub const INCOMPLETE_GRACE: Duration = Duration::from_secs(10 * 60);

/// Most copies found corrupt a policy's status remembers.
const MAX_CORRUPT_COPIES: usize = 50;

/// Longest reason kept for a corrupt copy (the schema's limit).
const MAX_REASON: usize = 1024;

/// What act did in one reconcile, for `settle`.
#[derive(Debug, Default)]
pub struct Done {
    /// Storage locations that could not be listed now: (name, why).
    pub unreachable: Vec<(String, String)>,
    /// When something act started wants another look (more catalogue to read, a copy retry).
    pub wake: Vec<Timestamp>,
    /// The "verify now" token handled (recorded before the verification started).
    pub verify_token: Option<String>,
    /// The "restore test now" token handled, likewise.
    pub restore_token: Option<String>,
    /// The verification that ran: copies verified and failed.
    pub verification: Option<Verified>,
    /// The policy's corrupt copies after the verification.
    pub corrupt_copies: Option<Vec<CorruptCopy>>,
    pub restore_test: Option<RestoreTestRun>,
    /// Events about the policy, in the order act did things.
    pub announced: Vec<Announce<PolicyEvent>>,
}

/// What one verification found, and when it ended.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Verified {
    pub at: Timestamp,
    pub verified: i32,
    pub failed: i32,
}

/// A restore test's summary (as the API shows it) and its measured duration: the real RTO,
/// compared as a `Duration`, never parsed back from the summary's text.
#[derive(Clone, Debug, PartialEq)]
pub struct RestoreTestRun {
    pub summary: RestoreTestSummary,
    pub took: Duration,
}

impl RestoreTestRun {
    /// A restore test that could not start.
    pub fn not_started(now: Timestamp, why: String) -> Self {
        Self {
            summary: RestoreTestSummary {
                time: time(now),
                duration: format_duration(Duration::ZERO),
                result: RestoreTestResult::Failed,
                objects_compared: 0,
                mismatches: 0,
                message: Some(why),
            },
            took: Duration::ZERO,
        }
    }
}

pub fn backup_object(ns: &str, policy: &str, name: &str, trigger: BackupTrigger) -> Backup {
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

/// Creates a Backup of policy `p`; `None` when one of that name exists already.
pub async fn create_backup(
    st: &State,
    p: &BackupPolicy,
    name: &str,
    trigger: BackupTrigger,
) -> Result<Option<Backup>, Error> {
    let ns = p.namespace().unwrap_or_default();
    let api: Api<Backup> = Api::namespaced(st.ctx.client.clone(), &ns);
    match api
        .create(
            &PostParams::default(),
            &backup_object(&ns, &p.name_any(), name, trigger),
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

/// Creates a Backup (trigger Catalogue) for every complete stored backup without one, and adds
/// it to `r.backups`. Reads at most [`CATALOGUE_READS`] manifests per store (the rest in a
/// round [`CATALOGUE_PAUSE`] later); a store that cannot be listed is recorded unreachable.
pub async fn rebuild_catalogue(
    st: &State,
    p: &BackupPolicy,
    r: &mut Resolved,
    corrupt_copies: &[CorruptCopy],
    now: Timestamp,
    done: &mut Done,
) {
    let mut more_to_read = false;
    let ns = p.namespace().unwrap_or_default();
    let name = p.name_any();
    // Backups the catalogue already has, by the id their copies are stored under.
    let known: HashSet<String> = r
        .backups
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
        r.access.signing.trusted_ids().join(",")
    );
    let untrusted = st.untrusted_copies(&untrusted_key);
    for store in &r.stores.ready {
        // Only manifests the operator signed enter the catalogue: anyone who can write the
        // store can leave one there, and a forged one must neither count for the RPO nor push
        // real backups out of retention.
        // Only ids without a Backup are read, and a bounded number per reconcile.
        let copy = |id: &str| format!("{}/{id}", store.name());
        match store
            .list_some(
                &ns,
                &name,
                r.access.signing.trusted(),
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
                    let signed_at = m.created_at.min(now);
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
            Err(e) => done
                .unreachable
                .push((store.name().into(), error_chain(&e))),
        }
    }
    let mut rebuilt = Vec::new();
    for (id, (m, completed_at, mut locations)) in found {
        if known.contains(&id) {
            continue;
        }
        // What verification learned of these copies before the catalogue was lost.
        let corrupt = mark_known_corrupt(&id, &mut locations, corrupt_copies);
        let mut created = match create_backup(st, p, &id, BackupTrigger::Catalogue).await {
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
        match write_status(st, &created, &status).await {
            Ok(()) => created.status = Some(status),
            Err(e) => {
                tracing::warn!(backup = %id, error = %e, "could not write a catalogue Backup's status")
            }
        }
        r.backups.push(created);
        rebuilt.push(id);
    }
    if more_to_read {
        // The rest of the catalogue in the next round, a few seconds on.
        done.wake.push(now + CATALOGUE_PAUSE);
    }
    if !rebuilt.is_empty() {
        done.announced.push(Announce::new(
            PolicyEvent::CatalogueRebuilt,
            format!(
                "{} Backup objects recreated from the stores: {}",
                rebuilt.len(),
                rebuilt.join(", ")
            ),
        ));
    }
}

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

/// Verifies every stored copy of every finished backup, at `now`; updates the Backups' status
/// and `corrupt_copies` (what a rebuilt catalogue will remember); returns (verified, failed).
pub async fn verify_all(
    st: &State,
    p: &BackupPolicy,
    r: &mut Resolved,
    corrupt_copies: &mut Vec<CorruptCopy>,
    now: Timestamp,
    done: &mut Done,
) -> (i32, i32) {
    let ns = p.namespace().unwrap_or_default();
    let name = p.name_any();
    let options = r.keys.as_ref().ok().map(|k| k.verify_options());
    let stores = &r.stores;
    let (mut verified, mut failed) = (0, 0);
    for b in r.backups.iter_mut() {
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
                    remember_verification(corrupt_copies, &id, &l.name, None, now);
                }
                Err(e) => {
                    failed += 1;
                    let msg = error_chain(&e);
                    problems.push(format!("{}: {msg}", l.name));
                    if e.copy_is_bad() {
                        l.state = CopyState::Corrupt;
                        remember_verification(corrupt_copies, &id, &l.name, Some(&msg), now);
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
            time: time(now),
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
            publish(
                st,
                &*b,
                Announce::new(PolicyEvent::BackupCorrupt, msg.clone()),
            )
            .await;
            done.announced.push(Announce::about(
                PolicyEvent::BackupCorrupt,
                msg,
                Some(b.object_ref(&())),
            ));
        }
        b.status = Some(stored);
    }
    (verified, failed)
}

/// Runs a restore test of the newest good backup (none, or keys that do not load: a failed
/// test that could not start).
pub async fn restore_test(
    st: &State,
    p: &BackupPolicy,
    r: &Resolved,
    now: Timestamp,
) -> RestoreTestRun {
    let timeout = p
        .spec
        .verification
        .as_ref()
        .and_then(|v| v.restore_test.as_ref())
        .and_then(|rt| rt.timeout.to_std().ok())
        .unwrap_or(Duration::from_secs(1800));
    let newest = r
        .backups
        .iter()
        .filter(|b| is_good(b))
        .max_by_key(|b| created(b));
    match (newest, &r.keys) {
        (Some(b), Ok(keys)) => {
            let (summary, took) = restore_test::run(st, &r.access, keys, p, b, timeout).await;
            RestoreTestRun { summary, took }
        }
        (_, Err(e)) => RestoreTestRun::not_started(now, error_chain(e)),
        (None, _) => RestoreTestRun::not_started(now, "no good backup to restore".into()),
    }
}

/// Deletes what retention no longer keeps at `now`: the stored copies, then the Backup object
/// (only when every store is reachable and every copy went); removes it from `backups`.
pub async fn apply_retention(
    st: &State,
    p: &BackupPolicy,
    stores: &Stores,
    backups: &mut Vec<Backup>,
    now: Timestamp,
    done: &mut Done,
) {
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
    let Ok(deletions) = retention::plan(&records, &settings, now) else {
        return;
    };
    let ns = p.namespace().unwrap_or_default();
    let name = p.name_any();
    let api: Api<Backup> = Api::namespaced(st.ctx.client.clone(), &ns);
    let mut deleted = HashSet::new();
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
        if !ok || !stores.failed.is_empty() {
            continue;
        }
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
                done.announced.push(Announce::new(
                    PolicyEvent::RetentionDeleted,
                    format!("backup {id} and its stored copies deleted: {why}"),
                ));
                deleted.insert(d.id);
            }
            Err(e) => {
                tracing::warn!(backup = %d.id, error = %e, "retention could not delete a Backup")
            }
        }
    }
    backups.retain(|b| !deleted.contains(&b.name_any()));
}

/// Deletes partial copies left by interrupted runs: directories without `manifest.json`,
/// untouched for [`INCOMPLETE_GRACE`] at `now`, of no Backup still running. A complete copy is
/// never deleted here. A store the catalogue could not list (`done.unreachable`) is skipped.
pub async fn cleanup_incomplete(p: &BackupPolicy, r: &Resolved, now: Timestamp, done: &mut Done) {
    let ns = p.namespace().unwrap_or_default();
    let name = p.name_any();
    let running: HashSet<String> = r
        .backups
        .iter()
        .filter(|b| !is_terminal(b))
        .map(|b| {
            b.status
                .as_ref()
                .and_then(|s| s.backup_id.clone())
                .unwrap_or_else(|| b.name_any())
        })
        .collect();
    for store in &r.stores.ready {
        if done.unreachable.iter().any(|(n, _)| n == store.name()) {
            continue;
        }
        let Ok(incomplete) = store.list_incomplete(&ns, &name).await else {
            continue;
        };
        let stale = retention::stale_incomplete(&incomplete, &running, now, INCOMPLETE_GRACE);
        for i in stale {
            let Ok(loc) = BackupLocation::new(&ns, &name, &i.backup_id) else {
                continue;
            };
            match store.delete_incomplete(&loc).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(backup = %i.backup_id, store = store.name(), files = n, "deleted an incomplete copy");
                    done.announced.push(Announce::new(
                        PolicyEvent::IncompleteCopyDeleted,
                        format!(
                            "deleted the incomplete copy of backup {} in {} ({} files, no manifest, last written at {})",
                            i.backup_id,
                            store.name(),
                            n,
                            i.last_modified
                        ),
                    ));
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

/// Why a retried copy failed.
#[derive(Debug, thiserror::Error)]
enum CopyRetryError {
    #[error("copying from {from}: {chain}")]
    Copy { from: String, chain: String },
    /// The target store could not be built (why, as resolving it said).
    #[error("{0}")]
    Unresolved(String),
    #[error("storage location not configured")]
    NotConfigured,
}

/// Retries the copies that failed: a good Backup's location in state `Failed` gets the stored
/// copy of another of its locations (never a re-export), newest Backup first, on a backoff per
/// location ([`crate::schedule::copy_retry_delay`], counted from `now`); the first failure in a
/// round stops the round for that location. Idempotent: a location that meanwhile holds the
/// same complete copy is only marked `Written`.
pub async fn retry_copies(
    st: &State,
    p: &BackupPolicy,
    r: &mut Resolved,
    now: Timestamp,
    done: &mut Done,
) {
    let ns = p.namespace().unwrap_or_default();
    let name = p.name_any();
    let stores = &r.stores;
    let backups = &mut r.backups;
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
            if let Some(at) = st.copy_retry_at(&key)
                && now < at
            {
                done.wake.push(at);
                stopped.insert(key);
                continue;
            }
            let outcome = match stores.ready.iter().find(|s| s.name() == target_name) {
                Some(target) => {
                    target
                        .copy_backup(source, &loc)
                        .await
                        .map_err(|e| CopyRetryError::Copy {
                            from: source.name().into(),
                            chain: error_chain(&e),
                        })
                }
                None => Err(stores
                    .failed
                    .iter()
                    .find(|(n, _)| *n == target_name)
                    .map(|(_, e)| CopyRetryError::Unresolved(e.clone()))
                    .unwrap_or(CopyRetryError::NotConfigured)),
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
                    l.time = Some(time(now));
                    l.path = stores
                        .ready
                        .iter()
                        .find(|s| s.name() == target_name)
                        .map(|s| s.backup_dir(&loc).to_string());
                    copied.push((target_name.clone(), o));
                }
                Err(e) => {
                    let at = st.copy_failed(&key, now);
                    done.wake.push(at);
                    stopped.insert(key);
                    tracing::warn!(backup = %id, to = %target_name, error = %e, retry_at = %at, "copy retry failed");
                    l.error = Some(e.to_string());
                    publish(
                        st,
                        b,
                        Announce::new(
                            PolicyEvent::CopyRetryFailed,
                            format!("copy to {target_name} failed again, next try at {at}: {e}"),
                        ),
                    )
                    .await;
                }
            }
        }
        if !copied.is_empty() && s.locations.iter().all(|l| l.state != CopyState::Failed) {
            let written: Vec<&str> = s.locations.iter().map(|l| l.name.as_str()).collect();
            // The Backup's own Ready condition (the Backup controller's vocabulary).
            Conditions::new(&mut s.conditions, now, None).set(
                RunCondition::Ready,
                true,
                "Completed",
                format!("written to {}", written.join(", ")),
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
            publish(
                st,
                b,
                Announce::new(PolicyEvent::CopyReplicated, msg.clone()),
            )
            .await;
            done.announced.push(Announce::about(
                PolicyEvent::CopyReplicated,
                msg,
                Some(b.object_ref(&())),
            ));
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
        assert_eq!(locations[0].state, CopyState::Corrupt);
        assert!(
            locations[0]
                .error
                .as_deref()
                .unwrap()
                .contains("digest mismatch")
        );
        assert_eq!(
            locations[1].state,
            CopyState::Written,
            "another copy of it is not"
        );
        assert!(!mark_known_corrupt("b3", &mut locations[1..], &list));

        // A copy that verifies again is forgotten; the list never grows past its bound.
        remember_verification(&mut list, "b1", "onsite", None, t1);
        assert!(list.iter().all(|c| c.backup_id != "b1"));
        for i in 0..(MAX_CORRUPT_COPIES + 5) {
            remember_verification(&mut list, &format!("x{i}"), "onsite", Some("bad"), t1);
        }
        assert_eq!(list.len(), MAX_CORRUPT_COPIES);
    }

    fn backup(phase: BackupPhase, locations: &[(&str, CopyState)]) -> Backup {
        let mut b = backup_object("ns", "p", "p-1", BackupTrigger::Scheduled);
        b.status = Some(BackupStatus {
            phase: Some(phase),
            locations: locations
                .iter()
                .map(|(n, s)| BackupLocationStatus {
                    name: (*n).into(),
                    state: *s,
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
            &[("a", CopyState::Written)]
        )));
        assert!(is_good(&backup(
            BackupPhase::Corrupt,
            &[("a", CopyState::Corrupt), ("b", CopyState::Verified)]
        )));
        assert!(!is_good(&backup(
            BackupPhase::Corrupt,
            &[("a", CopyState::Corrupt), ("b", CopyState::Written)]
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
