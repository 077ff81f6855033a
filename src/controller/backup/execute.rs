//! The Backup controller: runs one backup (a Backup created by the policy's schedule or by a
//! user with `spec.policyRef`): lists every selected kind of the namespace page by page, streams
//! the objects into the engine's writer, which writes every storage location, and records the
//! outcome per location. A Backup rebuilt from the catalogue is never run: its copies exist. A
//! Backup found `Running` that this process is not running was interrupted (the operator
//! stopped mid-run): it is never run again, but marked `Failed` with reason `Interrupted` (or
//! `Completed` from its stored copy when the run had committed one).

use jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;

use super::RunCondition;
use super::events::BackupEvent;
use super::objects;
use super::resolve::{Access, KeyError, error_chain};
use super::{Error, State, time, write_status};
use crate::api::backup::{
    BackupLocationStatus, BackupPhase, BackupStatus, BackupTrigger, CopyState,
};
use crate::api::common::ConditionStatus;
use crate::api::{Backup, BackupPolicy};
use crate::backup::{BackupError, BackupMeta, BackupWriter, RetentionSettings, retention};
use crate::controller::kit::{ConditionType, Conditions};

/// Reconciles one Backup: runs it when it has not run yet.
pub async fn reconcile(b: &Backup, st: &State) -> Result<Action, Error> {
    // The cache can lag behind this process's own last write: start from what it wrote.
    let status = st.backup_statuses.latest(b).unwrap_or_default();
    if matches!(
        status.phase,
        Some(
            BackupPhase::Completed
                | BackupPhase::Failed
                | BackupPhase::Verified
                | BackupPhase::Corrupt
        )
    ) || b.spec.trigger == BackupTrigger::Catalogue
        || b.metadata.deletion_timestamp.is_some()
    {
        if b.metadata.deletion_timestamp.is_some() {
            st.backup_statuses.forget(b);
        }
        return Ok(Action::await_change());
    }
    if status.phase == Some(BackupPhase::Running) {
        return interrupted(b, st).await;
    }
    let ns = b.namespace().unwrap_or_default();
    let name = b.name_any();
    let policies: Api<BackupPolicy> = Api::namespaced(st.ctx.client.clone(), &ns);
    let policy = policies
        .get_opt(&b.spec.policy_ref.name)
        .await
        .map_err(|source| Error::Read {
            what: format!("BackupPolicy {ns}/{}", b.spec.policy_ref.name),
            source,
        })?;
    let Some(policy) = policy else {
        let mut s = status.clone();
        fail(
            &mut s,
            "PolicyNotFound",
            format!("BackupPolicy {ns}/{} not found", b.spec.policy_ref.name),
            b.metadata.generation,
        );
        write_status(st, b, &s).await?;
        st.events
            .publish(
                b,
                BackupEvent::PolicyNotFound,
                s.error.clone().unwrap_or_default(),
                None,
            )
            .await;
        return Ok(Action::await_change());
    };

    // The run acts as the policy's ServiceAccount: until it exists, the Backup waits.
    let access = match st
        .access(&ns, policy.spec.service_account_name.as_deref())
        .await
    {
        Ok(a) => a,
        Err(e) => {
            let mut s = status.clone();
            s.phase = Some(BackupPhase::Pending);
            s.backup_id = Some(name.clone());
            e.set_waiting(&mut s.conditions, b.metadata.generation);
            write_status(st, b, &s).await?;
            return Ok(Action::requeue(super::ACCESS_RETRY));
        }
    };
    if status.phase.is_none() || status.phase == Some(BackupPhase::Pending) {
        let mut s = status.clone();
        s.phase = Some(BackupPhase::Pending);
        s.backup_id = Some(name.clone());
        s.conditions
            .retain(|c| c.type_ != RunCondition::Ready.as_str());
        write_status(st, b, &s).await?;
    }
    let _permit = st.backups.acquire().await;
    let uid = b.uid().unwrap_or_default();
    let _running = st.start_running(&uid);
    let started = Timestamp::now();
    let mut running = status.clone();
    running
        .conditions
        .retain(|c| c.type_ != RunCondition::Ready.as_str());
    running.phase = Some(BackupPhase::Running);
    running.backup_id = Some(name.clone());
    running.start_time = Some(time(started));
    running.observed_generation = b.metadata.generation;
    write_status(st, b, &running).await?;

    let result = run(&access, &policy, &name, started, running.clone()).await;
    let final_status = match result {
        Ok(s) => s,
        Err(e) => {
            let mut s = running.clone();
            fail(&mut s, e.category(), error_chain(&e), b.metadata.generation);
            s
        }
    };
    if let Err(e) = write_status(st, b, &final_status).await {
        // The run is over; only its record is missing (the API server away for a moment): it
        // is written on the next try, not taken for a run the operator abandoned.
        st.keep_unwritten(&uid, final_status);
        return Err(e);
    }
    match final_status.phase {
        Some(BackupPhase::Completed) => {
            st.events
                .publish(
                    b,
                    BackupEvent::BackupCompleted,
                    format!(
                        "{} objects, {} bytes, sha256 {}",
                        final_status.objects,
                        final_status.bytes,
                        final_status.sha256.as_deref().unwrap_or_default()
                    ),
                    None,
                )
                .await;
            for loc in final_status
                .locations
                .iter()
                .filter(|l| l.state == CopyState::Failed)
            {
                st.events
                    .publish(
                        b,
                        BackupEvent::StorageFailed,
                        format!(
                            "storage location {}: {}",
                            loc.name,
                            loc.error.as_deref().unwrap_or_default()
                        ),
                        None,
                    )
                    .await;
            }
        }
        _ => {
            st.events
                .publish(
                    b,
                    BackupEvent::BackupFailed,
                    final_status.error.clone().unwrap_or_default(),
                    None,
                )
                .await;
        }
    }
    Ok(Action::await_change())
}

/// A Backup found `Running` that this process is not running: the process that ran it stopped
/// (a restart, a lost leadership) and the run is gone with it. It is not run again as if
/// nothing happened. When a store holds its complete copy (the run committed but could not
/// record it), it is Completed from that copy, and a location without one is a failed copy
/// the policy retries; otherwise it is Failed with reason `Interrupted`, and the policy
/// deletes its partial copies after a grace period.
async fn interrupted(b: &Backup, st: &State) -> Result<Action, Error> {
    let uid = b.uid().unwrap_or_default();
    if st.is_running(&uid) {
        return Ok(Action::await_change());
    }
    // A run of this process whose outcome could not be written yet.
    if let Some(outcome) = st.take_unwritten(&uid) {
        if let Err(e) = write_status(st, b, &outcome).await {
            st.keep_unwritten(&uid, outcome);
            return Err(e);
        }
        return Ok(Action::await_change());
    }
    let ns = b.namespace().unwrap_or_default();
    let name = b.name_any();
    // Taking a run for interrupted is judged by the object itself, not a cache that can lag
    // behind this process's last write (or a write whose answer was lost).
    let fresh = st
        .backup_statuses
        .live(b)
        .await
        .map_err(|source| Error::Read {
            what: format!("Backup {ns}/{name}"),
            source,
        })?;
    let Some(fresh) = fresh else {
        return Ok(Action::await_change());
    };
    let fresh = &fresh;
    let previous = fresh.status.clone().unwrap_or_default();
    if previous.phase != Some(BackupPhase::Running) {
        return Ok(Action::await_change());
    }
    let started = previous
        .start_time
        .as_ref()
        .map(|t| t.0.to_string())
        .unwrap_or_else(|| "an unknown time".into());
    let id = previous.backup_id.clone().unwrap_or_else(|| name.clone());
    let policies: Api<BackupPolicy> = Api::namespaced(st.ctx.client.clone(), &ns);
    let policy = policies
        .get_opt(&fresh.spec.policy_ref.name)
        .await
        .map_err(|source| Error::Read {
            what: format!("BackupPolicy {ns}/{}", fresh.spec.policy_ref.name),
            source,
        })?;
    let recovered = match &policy {
        Some(p) => match st.access(&ns, p.spec.service_account_name.as_deref()).await {
            Ok(access) => recover_from_stores(&access, p, &id, previous.clone()).await,
            Err(e) => {
                tracing::warn!(backup = %name, error = %error_chain(&e), "cannot look for the interrupted run's copies");
                None
            }
        },
        None => None,
    };
    let (status, reason, note) = match recovered {
        Some(s) => {
            let note = format!(
                "the operator stopped while this backup was running (started at {started}); \
                 its complete copy was found in {}",
                s.locations
                    .iter()
                    .filter(|l| l.state == CopyState::Written)
                    .map(|l| l.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            (s, BackupEvent::BackupRecovered, note)
        }
        None => {
            let msg = format!(
                "interrupted: the operator stopped while this backup was running (started at \
                 {started}); it is not resumed, its partial copies are deleted, and the next \
                 backup runs on the policy's schedule"
            );
            let mut s = previous.clone();
            fail(
                &mut s,
                "Interrupted",
                msg.clone(),
                fresh.metadata.generation,
            );
            (s, BackupEvent::BackupInterrupted, msg)
        }
    };
    write_status(st, fresh, &status).await?;
    st.events.publish(fresh, reason, note, None).await;
    Ok(Action::await_change())
}

/// The status of an interrupted backup completed from its copies, when a store holds one.
async fn recover_from_stores(
    access: &Access,
    policy: &BackupPolicy,
    backup_id: &str,
    mut status: BackupStatus,
) -> Option<BackupStatus> {
    let ns = policy.namespace().unwrap_or_default();
    let loc = crate::backup::BackupLocation::new(&ns, policy.name_any(), backup_id).ok()?;
    let stores = access.stores(policy).await;
    let now = Timestamp::now();
    let mut manifest = None;
    let mut locations = Vec::new();
    for store in &stores.ready {
        let path = Some(store.backup_dir(&loc).to_string());
        // Only a copy the operator signed counts: anyone who can write the store could leave
        // a manifest there.
        match store
            .read_manifest_trusted(&loc, access.signing.trusted())
            .await
        {
            Ok(m) => {
                manifest.get_or_insert(m);
                locations.push(BackupLocationStatus {
                    name: store.name().into(),
                    state: CopyState::Written,
                    path,
                    time: Some(time(now)),
                    error: None,
                });
            }
            Err(e) => locations.push(BackupLocationStatus {
                name: store.name().into(),
                state: CopyState::Failed,
                path,
                time: Some(time(now)),
                error: Some(format!(
                    "interrupted before this copy was committed: {}",
                    error_chain(&e)
                )),
            }),
        }
    }
    let m = manifest?;
    locations.extend(unusable_locations(&stores.failed, now));
    locations.sort_by(|a, b| a.name.cmp(&b.name));
    status.phase = Some(BackupPhase::Completed);
    status.completion_time = Some(time(now));
    status.objects = m.objects.len() as i64;
    status.bytes = m.archive.size as i64;
    status.sha256 = Some(m.archive.sha256.clone());
    status.signature_key_id = m.signing_key_id.clone();
    status.locations = locations;
    status.error = None;
    Conditions::new(&mut status.conditions, now, None).set(
        RunCondition::Ready,
        true,
        "Recovered",
        "interrupted after its copy was committed; completed from the stored copy",
    );
    Some(status)
}

fn fail(s: &mut BackupStatus, reason: &str, message: String, generation: Option<i64>) {
    s.phase = Some(BackupPhase::Failed);
    s.completion_time = Some(time(Timestamp::now()));
    s.error = Some(message.clone());
    Conditions::new(&mut s.conditions, Timestamp::now(), generation).set(
        RunCondition::Ready,
        false,
        reason,
        message,
    );
}

/// Why a backup run failed: [`category`](Self::category) is the failed Backup's `Ready`
/// reason, [`error_chain`] of it its message and `status.error`.
#[derive(Debug, thiserror::Error)]
pub enum BackupFailure {
    #[error(transparent)]
    InvalidKey(#[from] KeyError),
    /// No storage location could be built: (location, why) of each.
    #[error("{}", failures_text(.failed))]
    NoStorage { failed: Vec<(String, String)> },
    /// API discovery failed.
    #[error(transparent)]
    Discovery(kube::Error),
    #[error("listing {kind}")]
    List {
        kind: String,
        #[source]
        source: kube::Error,
    },
    /// The engine failed (archiving, encrypting, every store); its category is the reason.
    #[error(transparent)]
    Engine(#[from] BackupError),
}

impl BackupFailure {
    /// Short stable category: `Ready` reason, metric label.
    pub fn category(&self) -> &'static str {
        match self {
            Self::InvalidKey(e) => e.category(),
            Self::NoStorage { .. } => "StorageFailed",
            Self::Discovery(_) => "DiscoveryFailed",
            Self::List { .. } => "ListFailed",
            Self::Engine(e) => e.category(),
        }
    }
}

/// Runs the backup as the policy's tenant: it lists with the tenant's rights (a kind it may
/// not list is left out and named in `unreadableKinds`).
async fn run(
    access: &Access,
    policy: &BackupPolicy,
    backup_id: &str,
    started: Timestamp,
    mut status: BackupStatus,
) -> Result<BackupStatus, BackupFailure> {
    let client = &access.tenant.client;
    let ns = policy.namespace().unwrap_or_default();
    let keys = access.keys(policy).await?;
    let stores = access.stores(policy).await;
    if stores.ready.is_empty() {
        return Err(BackupFailure::NoStorage {
            failed: stores.failed,
        });
    }
    let kinds = objects::backup_kinds(client, &policy.spec.resources)
        .await
        .map_err(BackupFailure::Discovery)?;
    let selector = policy
        .spec
        .resources
        .label_selector
        .as_ref()
        .map(objects::selector_string)
        .unwrap_or_default();
    let meta = BackupMeta {
        namespace: ns.clone(),
        policy: policy.name_any(),
        backup_id: backup_id.into(),
        created_at: started,
    };
    let mut options = keys.backup_options();
    options.export.keep_node_ports = policy.spec.resources.keep_node_ports;
    // The first page is on its way while the stores start their uploads.
    let mut pages = objects::ListAhead::start(client.clone(), ns.clone(), kinds, selector);
    let mut writer = BackupWriter::begin(meta, options, &stores.ready).await?;
    while let Some(page) = pages.next().await {
        let page = match page {
            Ok(page) => page,
            Err(e) => {
                writer.abort().await;
                return Err(BackupFailure::List {
                    kind: e.kind,
                    source: e.source,
                });
            }
        };
        for item in &page.items {
            if let Err(e) = writer
                .add_raw(&page.kind.api_version, &page.kind.kind, item)
                .await
            {
                writer.abort().await;
                return Err(e.into());
            }
        }
    }
    let unreadable = pages.forbidden();
    drop(pages);
    let location = writer.location().clone();
    let summary = writer.finish().await?;
    let now = Timestamp::now();
    let mut locations = Vec::new();
    for s in &summary.stores {
        let path = stores
            .ready
            .iter()
            .find(|x| x.name() == s.store)
            .map(|x| x.backup_dir(&location).to_string());
        locations.push(match &s.result {
            Ok(()) => BackupLocationStatus {
                name: s.store.clone(),
                state: CopyState::Written,
                path,
                time: Some(time(now)),
                error: None,
            },
            Err(e) => BackupLocationStatus {
                name: s.store.clone(),
                state: CopyState::Failed,
                path,
                time: Some(time(now)),
                error: Some(error_chain(e)),
            },
        });
    }
    locations.extend(unusable_locations(&stores.failed, now));
    locations.sort_by(|a, b| a.name.cmp(&b.name));
    let retention = &policy.spec.retention;
    let expires = RetentionSettings::new(
        retention.copies,
        retention.max_age.as_ref().and_then(|d| d.to_std().ok()),
        retention.keep_failed,
    )
    .ok()
    .and_then(|s| retention::expires_at(started, &s));
    let failed: Vec<String> = locations
        .iter()
        .filter(|l| l.state == CopyState::Failed)
        .map(|l| format!("{}: {}", l.name, l.error.as_deref().unwrap_or_default()))
        .collect();
    status.phase = Some(BackupPhase::Completed);
    status.completion_time = Some(time(now));
    status.objects = summary.objects as i64;
    status.bytes = summary.bytes as i64;
    status.sha256 = Some(summary.archive_sha256.clone());
    status.signature_key_id = summary.manifest.signing_key_id.clone();
    status.locations = locations;
    status.expires_at = expires.map(time);
    status.error = None;
    let left_out = if unreadable.is_empty() {
        String::new()
    } else {
        format!(
            "; left out, as {} may not list them: {}",
            access.tenant.user(),
            unreadable.join(", ")
        )
    };
    status.unreadable_kinds = unreadable;
    let (cs, reason, msg) = if failed.is_empty() {
        (
            ConditionStatus::True,
            "Completed",
            format!("written to {}{left_out}", summary.succeeded().join(", ")),
        )
    } else {
        (
            ConditionStatus::True,
            "PartiallyReplicated",
            format!(
                "written to {}; failed: {}{left_out}",
                summary.succeeded().join(", "),
                failed.join("; ")
            ),
        )
    };
    Conditions::new(&mut status.conditions, now, None).set_status(
        RunCondition::Ready,
        cs,
        reason,
        msg,
    );
    Ok(status)
}

/// `name: why` of each location, joined by `; `.
pub fn failures_text(failed: &[(String, String)]) -> String {
    failed
        .iter()
        .map(|(n, e)| format!("{n}: {e}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The locations a backup could not even try: (name, why), e.g. credentials missing.
fn unusable_locations(
    failed: &[(String, String)],
    now: Timestamp,
) -> impl Iterator<Item = BackupLocationStatus> + '_ {
    failed
        .iter()
        .map(move |(name, reason)| BackupLocationStatus {
            name: name.clone(),
            state: CopyState::Failed,
            path: None,
            time: Some(time(now)),
            error: Some(reason.clone()),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error() -> kube::Error {
        kube::Error::Api(Box::new(
            serde_json::from_value(serde_json::json!({"code": 500, "message": "etcd is away", "reason": "InternalError"}))
                .unwrap(),
        ))
    }

    #[test]
    fn every_failure_keeps_its_reason_and_text() {
        let cases: Vec<(BackupFailure, &str, String)> = vec![
            (
                KeyError::SecretNotFound {
                    namespace: "a".into(),
                    name: "k".into(),
                }
                .into(),
                "InvalidKey",
                "Secret a/k not found".into(),
            ),
            (
                BackupFailure::NoStorage {
                    failed: vec![
                        ("one".into(), "no storage kind set".into()),
                        ("two".into(), "Secret a/s not found".into()),
                    ],
                },
                "StorageFailed",
                "one: no storage kind set; two: Secret a/s not found".into(),
            ),
            (
                BackupFailure::Discovery(api_error()),
                "DiscoveryFailed",
                error_chain(&api_error()),
            ),
            (
                BackupFailure::List {
                    kind: "ConfigMap".into(),
                    source: api_error(),
                },
                "ListFailed",
                format!("listing ConfigMap: {}", error_chain(&api_error())),
            ),
            (
                BackupError::NoStores.into(),
                "NoStorage",
                "no storage location given".into(),
            ),
        ];
        for (failure, reason, text) in cases {
            assert_eq!(failure.category(), reason, "{failure}");
            assert_eq!(error_chain(&failure), text);
        }
    }
}
