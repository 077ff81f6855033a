//! The Restore controller: finds the backup (a Backup object or a store id), checks that the
//! target namespace accepts it, reads a fully verified copy (another location's copy when one
//! is corrupt or unreadable), and writes the objects in restore order as one unit
//! ([`super::writes`]): a server-side dry run of them all first, then the writes, undone if one
//! fails. Server-side apply for `Overwrite`, create-if-absent for `Skip`.

use crate::controller::kit::apply::Writer;
use std::time::Instant;

use jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use kube::runtime::controller::Action;

use super::RunCondition;
use super::events::RestoreEvent;
use super::objects::{self, Applied, Resolver};
use super::resolve::{Access, KeyError, Keys, error_chain};
use super::writes::{self, Batches, Journal, Mode, NotUndone, Planned, Written, write_batch};
use super::{Error, State, time, write_status};
use crate::api::backup::{ExistingObjects, RestorePhase, RestoreStatus};
use crate::api::common::format_duration;
use crate::api::{Backup, BackupPolicy, Restore};
use crate::backup::restore::ObjectStream;
use crate::backup::{BackupLocation, RestoredBackup};
use crate::controller::kit::{ConditionType, Conditions};

/// A backup read back, and where from.
pub struct ReadBack {
    pub backup: RestoredBackup,
    pub store: String,
    /// Locations tried first that failed.
    pub failures: Vec<CopyFailure>,
}

/// A location whose copy of a backup could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyFailure {
    pub location: String,
    /// Why, as [`error_chain`] words it.
    pub reason: String,
    /// `StorageUnreachable` for a location that could not be built, else the engine's
    /// [`RestoreError::category`](crate::backup::RestoreError::category).
    pub category: &'static str,
    /// Whether the copy itself is bad (corrupt, forged), not merely unreadable now.
    pub bad_copy: bool,
}

impl CopyFailure {
    /// A location of the policy that could not even be built (see [`super::resolve::Stores`]).
    fn unreachable(location: &str, reason: &str) -> Self {
        Self {
            location: location.into(),
            reason: reason.into(),
            category: "StorageUnreachable",
            bad_copy: false,
        }
    }

    /// A copy the engine could not read or trust.
    fn read(location: &str, e: &crate::backup::RestoreError) -> Self {
        Self {
            location: location.into(),
            reason: error_chain(e),
            category: e.category(),
            bad_copy: e.copy_is_bad(),
        }
    }
}

/// No copy of a backup checked out: every location's reason, or that there is none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoGoodCopy {
    pub backup_id: String,
    /// The one location the restore was limited to.
    pub only: Option<String>,
    pub failures: Vec<CopyFailure>,
}

impl std::fmt::Display for NoGoodCopy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.failures.is_empty() {
            return match &self.only {
                Some(o) => write!(f, "the policy has no storage location {o:?}"),
                None => f.write_str("the policy has no storage location"),
            };
        }
        write!(f, "no good copy of backup {}: ", self.backup_id)?;
        for (i, c) in self.failures.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", c.location, c.reason)?;
        }
        Ok(())
    }
}

impl std::error::Error for NoGoodCopy {}

/// Why [`read_backup`] read nothing; its text is [`error_chain`] of it.
#[derive(Debug, thiserror::Error)]
pub enum ReadBackupError {
    /// The backup id (or the policy's name) is no valid location.
    #[error(transparent)]
    Location(crate::backup::StoreError),
    #[error(transparent)]
    NoGoodCopy(#[from] NoGoodCopy),
}

impl ReadBackupError {
    /// Short stable category: both are `NoGoodCopy`, as for a Restore.
    pub fn category(&self) -> &'static str {
        "NoGoodCopy"
    }
}

/// Why a Restore failed: [`category`](Self::category) is its `Ready` condition's reason and
/// its Event's reason, [`error_chain`] of it the condition's message (and the status's error
/// when no object's errors are there).
#[derive(Debug, thiserror::Error)]
pub enum RestoreFailure {
    /// A read or list of the API server as the tenant failed.
    #[error(transparent)]
    Api(#[from] kube::Error),
    #[error("set exactly one of backupRef or source")]
    InvalidSpec,
    #[error("Backup {namespace}/{name} not found")]
    BackupNotFound { namespace: String, name: String },
    #[error("BackupPolicy {namespace}/{name} not found")]
    PolicyNotFound { namespace: String, name: String },
    #[error(
        "namespace {target} does not accept restores from {from}: it needs a BackupPolicy whose acceptRestoresFrom lists {from}"
    )]
    RestoreNotAccepted { target: String, from: String },
    #[error(transparent)]
    InvalidKey(#[from] KeyError),
    /// The backup id (or the policy's name) is no valid location.
    #[error(transparent)]
    InvalidLocation(crate::backup::StoreError),
    #[error(
        "nothing was restored: {refused} of the backup's objects would be refused (server-side dry run); first: {first}"
    )]
    DryRunFailed { refused: i64, first: String },
    /// A write failed and every write before it was undone.
    #[error(
        "nothing was restored{}: a write failed after {written} others, which were undone: {refusal}",
        earlier_note(*.earlier)
    )]
    RolledBack {
        /// The first refusal, naming its object.
        refusal: String,
        written: usize,
        /// Whether an interrupted earlier run wrote too (not undone).
        earlier: bool,
    },
    /// A write failed and some writes before it could not be undone.
    #[error(
        "a write failed ({refusal}); {} of the {written} writes before it could not be undone{}: {}",
        .not_undone.len(),
        earlier_note(*.earlier),
        joined(.not_undone)
    )]
    RollbackIncomplete {
        refusal: String,
        written: usize,
        earlier: bool,
        not_undone: Vec<NotUndone>,
    },
    /// A copy failed part-way through the writes and some writes could not be undone.
    #[error(
        "location {location} failed part-way ({}); {} writes could not be undone: {}",
        error_chain(.error),
        .not_undone.len(),
        joined(.not_undone)
    )]
    ReadIncomplete {
        location: String,
        error: crate::backup::RestoreError,
        not_undone: Vec<NotUndone>,
    },
    #[error(transparent)]
    NoGoodCopy(#[from] NoGoodCopy),
}

impl RestoreFailure {
    /// Short stable category: `Ready` reason, Event reason and metric label.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Api(_) => "ApiError",
            Self::InvalidSpec => "InvalidSpec",
            Self::BackupNotFound { .. } => "BackupNotFound",
            Self::PolicyNotFound { .. } => "PolicyNotFound",
            Self::RestoreNotAccepted { .. } => "RestoreNotAccepted",
            Self::InvalidKey(e) => e.category(),
            Self::InvalidLocation(_) | Self::NoGoodCopy(_) => "NoGoodCopy",
            Self::DryRunFailed { .. } => "DryRunFailed",
            Self::RolledBack { .. } => "RolledBack",
            Self::RollbackIncomplete { .. } | Self::ReadIncomplete { .. } => "RollbackIncomplete",
        }
    }
}

fn earlier_note(earlier: bool) -> &'static str {
    if earlier {
        " (what the interrupted earlier run wrote is not undone)"
    } else {
        ""
    }
}

fn joined(not_undone: &[NotUndone]) -> String {
    not_undone
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
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
) -> Result<ReadBack, ReadBackupError> {
    let ns = policy.namespace().unwrap_or_default();
    let options = keys.restore_options();
    let loc = BackupLocation::new(&ns, policy.name_any(), backup_id)
        .map_err(ReadBackupError::Location)?;
    let stores = access.stores(policy).await;
    let mut failures: Vec<CopyFailure> = stores
        .failed
        .iter()
        .filter(|(n, _)| only.is_none_or(|o| o == n))
        .map(|(n, e)| CopyFailure::unreachable(n, e))
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
            Err(e) => failures.push(CopyFailure::read(store.name(), &e)),
        }
    }
    Err(NoGoodCopy {
        backup_id: backup_id.into(),
        only: only.map(str::to_string),
        failures,
    }
    .into())
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
        if r.metadata.deletion_timestamp.is_some() {
            st.restore_statuses.forget(r);
        }
        return Ok(Action::await_change());
    }
    let uid = r.uid().unwrap_or_default();
    // Running: either this process runs it now, or its Completed write is not in the cache yet
    // (the API server says), or the process that ran it stopped.
    let mut interrupted = false;
    if status.phase == Some(RestorePhase::Running) {
        if st.is_running(&uid) {
            return Ok(Action::await_change());
        }
        let Ok(fresh) = st.restore_statuses.live(r).await else {
            return Ok(Action::requeue(std::time::Duration::from_secs(5)));
        };
        let ended = fresh.and_then(|f| f.status).and_then(|s| s.phase);
        if matches!(
            ended,
            Some(RestorePhase::Completed | RestorePhase::Failed) | None
        ) {
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
            Conditions::new(
                &mut failed.conditions,
                Timestamp::now(),
                r.metadata.generation,
            )
            .set(RunCondition::Ready, false, "Interrupted", msg.clone());
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
    running
        .conditions
        .retain(|c| c.type_ != RunCondition::Ready.as_str());
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
            Conditions::new(&mut done.conditions, now, r.metadata.generation).set(
                RunCondition::Ready,
                true,
                "Completed",
                msg.clone(),
            );
            write_status(st, r, &done).await?;
            st.events
                .publish(r, RestoreEvent::RestoreCompleted, msg, None)
                .await;
        }
        Err(e) => {
            let (reason, msg) = (e.category(), error_chain(&e));
            done.phase = Some(RestorePhase::Failed);
            if done.errors.is_empty() {
                done.errors = vec![msg.clone()];
            }
            Conditions::new(&mut done.conditions, now, r.metadata.generation).set(
                RunCondition::Ready,
                false,
                reason,
                msg.clone(),
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
) -> Result<(), RestoreFailure> {
    let client = &access.tenant.client;
    // Every restored object is written as the tenant, under the restore's field manager.
    let writer = Writer::tenant(&access.tenant).with_manager(super::objects::RESTORE_FIELD_MANAGER);
    let ns = r.namespace().unwrap_or_default();
    let target = r
        .spec
        .target_namespace
        .clone()
        .unwrap_or_else(|| ns.clone());
    let (policy_name, backup_id, only) = match (&r.spec.backup_ref, &r.spec.source) {
        (Some(b), _) => {
            let api: Api<Backup> = Api::namespaced(client.clone(), &ns);
            let backup =
                api.get_opt(&b.name)
                    .await?
                    .ok_or_else(|| RestoreFailure::BackupNotFound {
                        namespace: ns.clone(),
                        name: b.name.clone(),
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
        (None, None) => return Err(RestoreFailure::InvalidSpec),
    };
    let policies: Api<BackupPolicy> = Api::namespaced(client.clone(), &ns);
    let policy =
        policies
            .get_opt(&policy_name)
            .await?
            .ok_or_else(|| RestoreFailure::PolicyNotFound {
                namespace: ns.clone(),
                name: policy_name.clone(),
            })?;
    if target != ns {
        let targets: Api<BackupPolicy> = Api::namespaced(client.clone(), &target);
        let accepted = targets
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .any(|p| p.spec.accept_restores_from.contains(&ns));
        if !accepted {
            return Err(RestoreFailure::RestoreNotAccepted {
                target: target.clone(),
                from: ns.clone(),
            });
        }
    }
    let keys = access.keys(&policy).await?;
    // The backup is read twice from the first copy that checks out: once for a dry run of
    // every write, once for the writes. A copy that fails part-way (its store changed under
    // the read) gives way to the next, after what it wrote is undone.
    let options = keys.restore_options();
    let loc = BackupLocation::new(&ns, policy.name_any(), &backup_id)
        .map_err(RestoreFailure::InvalidLocation)?;
    let stores = access.stores(&policy).await;
    let mut failures: Vec<CopyFailure> = stores
        .failed
        .iter()
        .filter(|(n, _)| only.as_deref().is_none_or(|o| o == n))
        .map(|(n, e)| CopyFailure::unreachable(n, e))
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
            failures.push(CopyFailure::read(store.name(), &e));
        };
        let mut stream = match crate::backup::restore::restore_stream(store, &loc, &options).await {
            Ok(s) => s,
            Err(e) => {
                failed_read(e);
                continue;
            }
        };
        let check = dry_run(&writer, &target, &mut stream, wanted, existing).await;
        if let Err(e) = stream.finish().await {
            failed_read(e);
            continue;
        }
        if check.failed > 0 {
            let failure = RestoreFailure::DryRunFailed {
                refused: check.failed,
                first: check.errors.first().cloned().unwrap_or_default(),
            };
            status.storage = Some(store.name().into());
            status.failed = check.failed;
            status.errors = check.errors;
            return Err(failure);
        }
        let mut stream = match crate::backup::restore::restore_stream(store, &loc, &options).await {
            Ok(s) => s,
            Err(e) => {
                failed_read(e);
                continue;
            }
        };
        let (applied, journal, refused) =
            write_all(&writer, &target, &mut stream, wanted, existing).await;
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
        let earlier = status.attempts > 1;
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
                    RestoreFailure::RolledBack {
                        refusal,
                        written,
                        earlier,
                    }
                } else {
                    RestoreFailure::RollbackIncomplete {
                        refusal,
                        written,
                        earlier,
                        not_undone: undone.left,
                    }
                });
            }
            (None, Err(e)) => {
                if !undone.left.is_empty() {
                    return Err(RestoreFailure::ReadIncomplete {
                        location: store.name().into(),
                        error: e,
                        not_undone: undone.left,
                    });
                }
                failed_read(e);
            }
            (None, Ok(())) => unreachable!("handled above"),
        }
    }
    let Some((from, applied)) = done else {
        return Err(NoGoodCopy {
            backup_id,
            only,
            failures,
        }
        .into());
    };
    for CopyFailure {
        location: loc,
        reason,
        bad_copy,
        ..
    } in &failures
    {
        let event = if *bad_copy {
            RestoreEvent::CorruptCopy
        } else {
            RestoreEvent::CopyUnreadable
        };
        st.events
            .publish(
                r,
                event,
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
    writer: &Writer,
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
        let done = write_batch(writer, &mut resolver, target, batch, existing, Mode::DryRun).await;
        let mut accepted = Vec::new();
        for (obj, result) in done {
            let result = match result {
                Ok(w) => {
                    if !matches!(w, Written::Skipped) {
                        accepted.push(obj.clone());
                    }
                    Ok(true)
                }
                Err(e) if writes::waits_on_restored(&e.to_string(), &planned) => Ok(true),
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
    writer: &Writer,
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
        let done = write_batch(writer, &mut resolver, target, batch, existing, Mode::Write).await;
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

    fn api_error(code: u16, message: &str) -> kube::Error {
        kube::Error::Api(Box::new(
            serde_json::from_value(
                json!({"code": code, "message": message, "reason": "Forbidden"}),
            )
            .unwrap(),
        ))
    }

    fn not_undone() -> Vec<NotUndone> {
        let ar = kube::api::ApiResource::erase::<k8s_openapi::api::core::v1::ConfigMap>(&());
        vec![NotUndone(vec![writes::UndoError::ChangedSince {
            ar,
            name: "c".into(),
        }])]
    }

    #[test]
    fn every_failure_keeps_its_reason_and_text() {
        let missing = || crate::backup::RestoreError::MissingManifest {
            backup_id: "p-1".into(),
        };
        let cases: Vec<(RestoreFailure, &str, String)> = vec![
            (
                RestoreFailure::Api(api_error(403, "forbidden")),
                "ApiError",
                error_chain(&api_error(403, "forbidden")),
            ),
            (
                RestoreFailure::InvalidSpec,
                "InvalidSpec",
                "set exactly one of backupRef or source".into(),
            ),
            (
                RestoreFailure::BackupNotFound {
                    namespace: "a".into(),
                    name: "b".into(),
                },
                "BackupNotFound",
                "Backup a/b not found".into(),
            ),
            (
                RestoreFailure::PolicyNotFound {
                    namespace: "a".into(),
                    name: "p".into(),
                },
                "PolicyNotFound",
                "BackupPolicy a/p not found".into(),
            ),
            (
                RestoreFailure::RestoreNotAccepted {
                    target: "t".into(),
                    from: "a".into(),
                },
                "RestoreNotAccepted",
                "namespace t does not accept restores from a: it needs a BackupPolicy whose acceptRestoresFrom lists a".into(),
            ),
            (
                RestoreFailure::InvalidKey(KeyError::SecretNotFound {
                    namespace: "a".into(),
                    name: "k".into(),
                }),
                "InvalidKey",
                "Secret a/k not found".into(),
            ),
            (
                RestoreFailure::InvalidLocation(
                    BackupLocation::new("a", "p", "../x").unwrap_err(),
                ),
                "NoGoodCopy",
                error_chain(&BackupLocation::new("a", "p", "../x").unwrap_err()),
            ),
            (
                RestoreFailure::DryRunFailed {
                    refused: 2,
                    first: "v1/ConfigMap c: no".into(),
                },
                "DryRunFailed",
                "nothing was restored: 2 of the backup's objects would be refused (server-side dry run); first: v1/ConfigMap c: no".into(),
            ),
            (
                RestoreFailure::RolledBack {
                    refusal: "v1/ConfigMap c: no".into(),
                    written: 3,
                    earlier: false,
                },
                "RolledBack",
                "nothing was restored: a write failed after 3 others, which were undone: v1/ConfigMap c: no".into(),
            ),
            (
                RestoreFailure::RolledBack {
                    refusal: "v1/ConfigMap c: no".into(),
                    written: 3,
                    earlier: true,
                },
                "RolledBack",
                "nothing was restored (what the interrupted earlier run wrote is not undone): a write failed after 3 others, which were undone: v1/ConfigMap c: no".into(),
            ),
            (
                RestoreFailure::RollbackIncomplete {
                    refusal: "v1/ConfigMap d: no".into(),
                    written: 3,
                    earlier: false,
                    not_undone: not_undone(),
                },
                "RollbackIncomplete",
                "a write failed (v1/ConfigMap d: no); 1 of the 3 writes before it could not be undone: v1/ConfigMap c: changed since the restore wrote it; kept as it is now".into(),
            ),
            (
                RestoreFailure::ReadIncomplete {
                    location: "s3".into(),
                    error: missing(),
                    not_undone: not_undone(),
                },
                "RollbackIncomplete",
                "location s3 failed part-way (backup p-1 has no manifest.json (incomplete or absent)); 1 writes could not be undone: v1/ConfigMap c: changed since the restore wrote it; kept as it is now".into(),
            ),
            (
                RestoreFailure::NoGoodCopy(NoGoodCopy {
                    backup_id: "p-1".into(),
                    only: None,
                    failures: vec![
                        CopyFailure::unreachable("a", "Secret t/s not found"),
                        CopyFailure::read("b", &missing()),
                    ],
                }),
                "NoGoodCopy",
                "no good copy of backup p-1: a: Secret t/s not found; b: backup p-1 has no manifest.json (incomplete or absent)".into(),
            ),
        ];
        for (failure, reason, text) in cases {
            assert_eq!(failure.category(), reason, "{failure}");
            assert_eq!(error_chain(&failure), text);
        }
    }

    #[test]
    fn no_good_copy_says_when_there_is_no_location() {
        let none = |only: Option<&str>| NoGoodCopy {
            backup_id: "p-1".into(),
            only: only.map(str::to_string),
            failures: Vec::new(),
        };
        assert_eq!(none(None).to_string(), "the policy has no storage location");
        assert_eq!(
            none(Some("s3")).to_string(),
            "the policy has no storage location \"s3\""
        );
        let read = ReadBackupError::from(none(None));
        assert_eq!(read.category(), "NoGoodCopy");
        assert_eq!(
            CopyFailure::read(
                "b",
                &crate::backup::RestoreError::MissingManifest {
                    backup_id: "x".into()
                }
            )
            .category,
            "MissingManifest"
        );
    }

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
