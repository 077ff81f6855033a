//! The Restore controller: finds the backup (a Backup object or a store id), checks that the
//! target namespace accepts it, reads a fully verified copy (another location's copy when one
//! is corrupt or unreadable), and writes the objects in restore order as one unit
//! ([`super::writes`]): a server-side dry run of them all first, then the writes, undone if one
//! fails. Server-side apply for `Overwrite`, create-if-absent for `Skip`.

use std::time::Instant;

use jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;

use super::events::RestoreEvent;
use super::objects::{self, Applied, Resolver};
use super::resolve::{Access, Keys, error_chain};
use super::writes::{self, Batches, Journal, Mode, Planned, Written, write_batch};
use super::{Error, State, time, write_status};
use crate::api::backup::{ExistingObjects, RestorePhase, RestoreStatus};
use crate::api::common::{ConditionStatus, format_duration, set_condition};
use crate::api::{Backup, BackupPolicy, Restore};
use crate::backup::restore::ObjectStream;
use crate::backup::{BackupLocation, RestoredBackup};

/// A backup read back, and where from.
pub struct ReadBack {
    pub backup: RestoredBackup,
    pub store: String,
    /// Locations tried first that failed: (location, reason, category).
    pub failures: Vec<(String, String, &'static str)>,
}

/// Reads backup `backup_id` of `policy` from its first good copy (`only` restricts to one
/// location), as `access`'s tenant with the policy's `keys`. Fails only when no copy checks
/// out, naming every location's reason.
pub async fn read_backup(
    access: &Access,
    keys: &Keys,
    policy: &BackupPolicy,
    backup_id: &str,
    only: Option<&str>,
) -> Result<ReadBack, String> {
    let ns = policy.namespace().unwrap_or_default();
    let options = keys.restore_options();
    let loc =
        BackupLocation::new(&ns, policy.name_any(), backup_id).map_err(|e| error_chain(&e))?;
    let stores = access.stores(policy).await;
    let mut failures: Vec<(String, String, &'static str)> = stores
        .failed
        .iter()
        .filter(|(n, _)| only.is_none_or(|o| o == n))
        .map(|(n, e)| (n.clone(), e.clone(), "StorageUnreachable"))
        .collect();
    for store in stores
        .ready
        .iter()
        .filter(|s| only.is_none_or(|o| o == s.name()))
    {
        match crate::backup::restore(store, &loc, &options).await {
            Ok(backup) => {
                return Ok(ReadBack {
                    backup,
                    store: store.name().into(),
                    failures,
                });
            }
            Err(e) => failures.push((store.name().into(), error_chain(&e), e.category())),
        }
    }
    Err(no_good_copy(backup_id, only, &failures))
}

/// Why no copy of a backup could be read: every location's reason, or that there is none.
fn no_good_copy(
    backup_id: &str,
    only: Option<&str>,
    failures: &[(String, String, &'static str)],
) -> String {
    if failures.is_empty() {
        return match only {
            Some(o) => format!("the policy has no storage location {o:?}"),
            None => "the policy has no storage location".into(),
        };
    }
    format!(
        "no good copy of backup {backup_id}: {}",
        failures
            .iter()
            .map(|(n, e, _)| format!("{n}: {e}"))
            .collect::<Vec<_>>()
            .join("; ")
    )
}

/// Whether an object's kind is named by a Restore's `kinds` filter (the operator's own kinds
/// only when named).
pub fn kind_selected(kinds: &[String], obj: &serde_json::Value) -> bool {
    let kind = obj["kind"].as_str().unwrap_or_default();
    let api_version = obj["apiVersion"].as_str().unwrap_or_default();
    let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
    // The operator's own kinds only when named: a BackupPolicy restored unasked would back up
    // its new namespace under the source's name and keys.
    (kinds.is_empty() && group != crate::api::common::GROUP)
        || kinds.iter().any(|k| {
            k == kind
                || *k == format!("{api_version}/{kind}")
                || (!group.is_empty() && *k == format!("{group}/{kind}"))
        })
}

/// Runs of one Restore at most: one cut short by an operator restart is run again (restoring
/// is idempotent: what a run restored is skipped or overwritten again), up to this many.
pub const MAX_RESTORE_RUNS: i32 = 3;

/// Reconciles one Restore: runs it once (again after an interruption, [`MAX_RESTORE_RUNS`]).
pub async fn reconcile(r: &Restore, st: &State) -> Result<Action, Error> {
    // The cache can lag behind this process's own last write: start from what it wrote.
    let status = st.restore_statuses.latest(r).unwrap_or_default();
    if matches!(
        status.phase,
        Some(RestorePhase::Completed | RestorePhase::Failed)
    ) || r.metadata.deletion_timestamp.is_some()
    {
        return Ok(Action::await_change());
    }
    let uid = r.uid().unwrap_or_default();
    // Running: either this process runs it now, or the process that ran it stopped (a
    // Completed write of this process would be the status it starts from).
    let mut interrupted = false;
    if status.phase == Some(RestorePhase::Running) {
        if st.is_running(&uid) {
            return Ok(Action::await_change());
        }
        interrupted = true;
    }
    if interrupted {
        let run = status.attempts;
        if run >= MAX_RESTORE_RUNS {
            let msg = format!(
                "interrupted: the operator stopped during each of its {run} runs; it is not run again"
            );
            let mut failed = status.clone();
            failed.phase = Some(RestorePhase::Failed);
            failed.completion_time = Some(time(Timestamp::now()));
            failed.errors = vec![msg.clone()];
            set_condition(
                &mut failed.conditions,
                "Ready",
                ConditionStatus::False,
                "Interrupted",
                msg.clone(),
                r.metadata.generation,
                Timestamp::now(),
            );
            write_status(st, r, &failed).await?;
            st.events
                .publish(r, RestoreEvent::RestoreInterrupted, msg, None)
                .await;
            return Ok(Action::await_change());
        }
        st.events.publish(
            r,
            RestoreEvent::RestoreInterrupted,
            format!(
                "run {run} was interrupted: the operator stopped while it ran; running it again \
                 (run {} of at most {MAX_RESTORE_RUNS}; what it restored is skipped or \
                 overwritten as the spec says)",
                run + 1
            ),
            None,
        )
        .await;
    }
    // The restore acts as its ServiceAccount: until that exists, it waits.
    let ns = r.namespace().unwrap_or_default();
    let access = match st.access(&ns, r.spec.service_account_name.as_deref()).await {
        Ok(a) => a,
        Err(e) => {
            let mut waiting = status.clone();
            waiting.phase = Some(RestorePhase::Pending);
            e.set_waiting(&mut waiting.conditions, r.metadata.generation);
            write_status(st, r, &waiting).await?;
            return Ok(Action::requeue(super::ACCESS_RETRY));
        }
    };
    let _running = st.start_running(&uid);
    let started = Instant::now();
    let start_time = Timestamp::now();
    let mut running = status.clone();
    running.conditions.retain(|c| c.type_ != "Ready");
    running.phase = Some(RestorePhase::Running);
    running.attempts = status.attempts + 1;
    running.rolled_back = 0;
    running.failed = 0;
    running.errors.clear();
    running.start_time = Some(time(start_time));
    running.observed_generation = r.metadata.generation;
    write_status(st, r, &running).await?;

    let mut done = running.clone();
    let outcome = {
        let _permit = st.reads.acquire().await;
        run(st, &access, r, &mut done).await
    };
    done.completion_time = Some(time(Timestamp::now()));
    done.duration = Some(format_duration(started.elapsed()));
    let now = Timestamp::now();
    match outcome {
        Ok(()) => {
            done.phase = Some(RestorePhase::Completed);
            let msg = format!(
                "{} restored, {} skipped from {}",
                done.restored,
                done.skipped,
                done.storage.as_deref().unwrap_or_default()
            );
            set_condition(
                &mut done.conditions,
                "Ready",
                ConditionStatus::True,
                "Completed",
                msg.clone(),
                r.metadata.generation,
                now,
            );
            write_status(st, r, &done).await?;
            st.events
                .publish(r, RestoreEvent::RestoreCompleted, msg, None)
                .await;
        }
        Err((reason, msg)) => {
            done.phase = Some(RestorePhase::Failed);
            if done.errors.is_empty() {
                done.errors = vec![msg.clone()];
            }
            set_condition(
                &mut done.conditions,
                "Ready",
                ConditionStatus::False,
                reason,
                msg.clone(),
                r.metadata.generation,
                now,
            );
            write_status(st, r, &done).await?;
            st.events
                .problem(
                    &kube::Resource::object_ref(r, &()),
                    reason,
                    msg,
                    None,
                    Some(crate::signals::Signal::RestoreFailed),
                )
                .await;
        }
    }
    Ok(Action::await_change())
}

/// Runs the restore as its tenant: every read of the Backup, the policy and its keys, and
/// every write of a restored object, is the ServiceAccount's.
async fn run(
    st: &State,
    access: &Access,
    r: &Restore,
    status: &mut RestoreStatus,
) -> Result<(), (&'static str, String)> {
    let client = &access.tenant.client;
    let ns = r.namespace().unwrap_or_default();
    let target = r
        .spec
        .target_namespace
        .clone()
        .unwrap_or_else(|| ns.clone());
    let (policy_name, backup_id, only) = match (&r.spec.backup_ref, &r.spec.source) {
        (Some(b), _) => {
            let api: Api<Backup> = Api::namespaced(client.clone(), &ns);
            let backup = api
                .get_opt(&b.name)
                .await
                .map_err(|e| ("ApiError", error_chain(&e)))?
                .ok_or_else(|| {
                    (
                        "BackupNotFound",
                        format!("Backup {ns}/{} not found", b.name),
                    )
                })?;
            let id = backup
                .status
                .as_ref()
                .and_then(|s| s.backup_id.clone())
                .unwrap_or_else(|| backup.name_any());
            (backup.spec.policy_ref.name.clone(), id, None)
        }
        (None, Some(src)) => (
            src.policy_ref.name.clone(),
            src.backup_id.clone(),
            src.storage.clone(),
        ),
        (None, None) => {
            return Err((
                "InvalidSpec",
                "set exactly one of backupRef or source".into(),
            ));
        }
    };
    let policies: Api<BackupPolicy> = Api::namespaced(client.clone(), &ns);
    let policy = policies
        .get_opt(&policy_name)
        .await
        .map_err(|e| ("ApiError", error_chain(&e)))?
        .ok_or_else(|| {
            (
                "PolicyNotFound",
                format!("BackupPolicy {ns}/{policy_name} not found"),
            )
        })?;
    if target != ns {
        let targets: Api<BackupPolicy> = Api::namespaced(client.clone(), &target);
        let accepted = targets
            .list(&ListParams::default())
            .await
            .map_err(|e| ("ApiError", error_chain(&e)))?
            .items
            .iter()
            .any(|p| p.spec.accept_restores_from.contains(&ns));
        if !accepted {
            return Err((
                "RestoreNotAccepted",
                format!(
                    "namespace {target} does not accept restores from {ns}: it needs a BackupPolicy whose acceptRestoresFrom lists {ns}"
                ),
            ));
        }
    }
    let keys = access.keys(&policy).await.map_err(|e| ("InvalidKey", e))?;
    // The backup is read twice from the first copy that checks out: once for a dry run of
    // every write, once for the writes. A copy that fails part-way (its store changed under
    // the read) gives way to the next, after what it wrote is undone.
    let options = keys.restore_options();
    let loc = BackupLocation::new(&ns, policy.name_any(), &backup_id)
        .map_err(|e| ("NoGoodCopy", error_chain(&e)))?;
    let stores = access.stores(&policy).await;
    let mut failures: Vec<(String, String, &'static str)> = stores
        .failed
        .iter()
        .filter(|(n, _)| only.as_deref().is_none_or(|o| o == n))
        .map(|(n, e)| (n.clone(), e.clone(), "StorageUnreachable"))
        .collect();
    let wanted = |o: &serde_json::Value| kind_selected(&r.spec.kinds, o);
    let existing = r.spec.existing_objects;
    let mut done = None;
    for store in stores
        .ready
        .iter()
        .filter(|s| only.as_deref().is_none_or(|o| o == s.name()))
    {
        let mut failed_read = |e: crate::backup::restore::RestoreError| {
            failures.push((store.name().into(), error_chain(&e), e.category()));
        };
        let mut stream = match crate::backup::restore::restore_stream(store, &loc, &options).await {
            Ok(s) => s,
            Err(e) => {
                failed_read(e);
                continue;
            }
        };
        let check = dry_run(client, &target, &mut stream, wanted, existing).await;
        if let Err(e) = stream.finish().await {
            failed_read(e);
            continue;
        }
        if check.failed > 0 {
            let msg = format!(
                "nothing was restored: {} of the backup's objects would be refused (server-side dry run); first: {}",
                check.failed,
                check.errors.first().cloned().unwrap_or_default()
            );
            status.storage = Some(store.name().into());
            status.failed = check.failed;
            status.errors = check.errors;
            return Err(("DryRunFailed", msg));
        }
        let mut stream = match crate::backup::restore::restore_stream(store, &loc, &options).await {
            Ok(s) => s,
            Err(e) => {
                failed_read(e);
                continue;
            }
        };
        let (applied, journal, refused) =
            write_all(client, &target, &mut stream, wanted, existing).await;
        let read = stream.finish().await;
        if refused.is_empty() && read.is_ok() {
            done = Some((store.name().to_string(), applied));
            break;
        }
        let written = journal.len();
        let undone = journal.undo(client, &target).await;
        status.rolled_back = undone.undone;
        // What is still written: the writes not undone (an earlier, interrupted run's writes
        // are not in this run's journal at all).
        status.restored = undone.left.len() as i64;
        let earlier = if status.attempts > 1 {
            " (what the interrupted earlier run wrote is not undone)"
        } else {
            ""
        };
        match (refused.first().cloned(), read) {
            (Some(refusal), _) => {
                status.storage = Some(store.name().into());
                status.failed = refused.len() as i64;
                status.errors = refused
                    .iter()
                    .cloned()
                    .chain(undone.left.iter().map(|l| format!("not undone: {l}")))
                    .take(objects::MAX_ERRORS)
                    .collect();
                return Err(if undone.left.is_empty() {
                    (
                        "RolledBack",
                        format!(
                            "nothing was restored{earlier}: a write failed after {written} others, which were undone: {refusal}"
                        ),
                    )
                } else {
                    (
                        "RollbackIncomplete",
                        format!(
                            "a write failed ({refusal}); {} of the {written} writes before it could not be undone{earlier}: {}",
                            undone.left.len(),
                            undone.left.join("; ")
                        ),
                    )
                });
            }
            (None, Err(e)) => {
                if !undone.left.is_empty() {
                    return Err((
                        "RollbackIncomplete",
                        format!(
                            "location {} failed part-way ({}); {} writes could not be undone: {}",
                            store.name(),
                            error_chain(&e),
                            undone.left.len(),
                            undone.left.join("; ")
                        ),
                    ));
                }
                failed_read(e);
            }
            (None, Ok(())) => unreachable!("handled above"),
        }
    }
    let Some((from, applied)) = done else {
        return Err((
            "NoGoodCopy",
            no_good_copy(&backup_id, only.as_deref(), &failures),
        ));
    };
    for (loc, reason, category) in &failures {
        st.publish(
            r,
            EventType::Warning,
            if *category == "Corrupt" {
                "CorruptCopy"
            } else {
                "CopyUnreadable"
            },
            "Restore",
            format!("location {loc} skipped: {reason}; read from {from}"),
            None,
        )
        .await;
    }
    status.storage = Some(from);
    status.restored = applied.restored;
    status.skipped = applied.skipped;
    status.rolled_back = 0;
    status.failed = 0;
    status.errors.clear();
    Ok(())
}

/// The dry run of every wanted object of `stream` in restore order: what would be refused
/// (counted in `failed`, the first ones in `errors`). A refusal because an object the restore
/// writes earlier is not there yet is left to the write ([`writes::waits_on_restored`]).
async fn dry_run(
    client: &kube::Client,
    target: &str,
    stream: &mut ObjectStream,
    wanted: impl Fn(&serde_json::Value) -> bool + Send + Sync,
    existing: ExistingObjects,
) -> Applied {
    let mut out = Applied::default();
    let mut resolver = Resolver::default();
    let mut planned = Planned::default();
    let mut batches = Batches::new(stream, wanted);
    while let Some(batch) = batches.next().await {
        let done = write_batch(client, &mut resolver, target, batch, existing, Mode::DryRun).await;
        let mut accepted = Vec::new();
        for (obj, result) in done {
            let result = match result {
                Ok(w) => {
                    if !matches!(w, Written::Skipped) {
                        accepted.push(obj.clone());
                    }
                    Ok(true)
                }
                Err(e) if writes::waits_on_restored(&e, &planned) => Ok(true),
                Err(e) => Err(e),
            };
            out.count(&obj, result);
        }
        for obj in &accepted {
            planned.add(obj);
        }
    }
    out
}

/// The writes of every wanted object of `stream`, journaled; the first batch with a refusal
/// ends them, and its refusals are returned (the caller undoes the journal).
async fn write_all(
    client: &kube::Client,
    target: &str,
    stream: &mut ObjectStream,
    wanted: impl Fn(&serde_json::Value) -> bool + Send + Sync,
    existing: ExistingObjects,
) -> (Applied, Journal, Vec<String>) {
    let mut out = Applied::default();
    let mut journal = Journal::default();
    let mut resolver = Resolver::default();
    let mut refused = Vec::new();
    let mut batches = Batches::new(stream, wanted);
    while let Some(batch) = batches.next().await {
        let done = write_batch(client, &mut resolver, target, batch, existing, Mode::Write).await;
        for (obj, result) in done {
            match result {
                Ok(w) => {
                    out.count(&obj, Ok(!matches!(w, Written::Skipped)));
                    journal.record(w);
                }
                Err(e) => refused.push(writes::refusal(&obj, &e)),
            }
        }
        if !refused.is_empty() {
            break;
        }
    }
    (out, journal, refused)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kinds_filter() {
        let d = json!({"apiVersion": "apps/v1", "kind": "Deployment"});
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap"});
        assert!(kind_selected(&[], &d));
        let k = vec!["ConfigMap".to_string()];
        assert!(kind_selected(&k, &cm) && !kind_selected(&k, &d));
        let k = vec!["apps/Deployment".to_string(), "v1/Secret".to_string()];
        assert!(kind_selected(&k, &d) && !kind_selected(&k, &cm));
        let policy = json!({"apiVersion": "opsec.x1642.dev/v1alpha1", "kind": "BackupPolicy"});
        assert!(!kind_selected(&[], &policy), "not unless asked for");
        assert!(kind_selected(&["BackupPolicy".to_string()], &policy));
        assert!(kind_selected(
            &["opsec.x1642.dev/BackupPolicy".to_string()],
            &policy
        ));
    }
}
