//! The backup controllers (X.1642 8.10, 8.4, 7.2.2.1): BackupPolicy (schedule, catalogue
//! rebuild from the stores, retries of failed copies, cleanup of partial copies, retention,
//! verification, restore tests, RPO/RTO conditions), Backup (runs one backup: API discovery,
//! paged lists streamed into the engine's [`BackupWriter`], every storage location; a run left
//! behind by a stopped operator is marked interrupted, never re-run) and Restore (reads a verified copy, falling back to another location,
//! and creates the objects in restore order). At most [`MAX_CONCURRENT_BACKUPS`] backups run at
//! once, so that many policies do not hit the API server together.
//!
//! [`BackupWriter`]: crate::backup::BackupWriter

pub mod events;
pub mod execute;
pub mod metrics;
pub mod objects;
pub mod policy;
pub mod resolve;
pub mod restore;
pub mod restore_test;
pub mod signing;
pub mod writes;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use kube::api::Api;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use tokio::sync::{Semaphore, watch};
use tracing::info;

use super::Context;
use super::kit::{self, Conditions, Events, Kit, StatusWriter};
use crate::api::{Backup, BackupPolicy, Restore};

/// Backups running at once across all policies.
pub const MAX_CONCURRENT_BACKUPS: usize = 2;
/// Label naming the policy of a Backup the operator created.
pub const POLICY_LABEL: &str = "opsec.x1642.dev/backup-policy";
/// Label of a restore test's scratch namespace: the namespace it tests.
pub const RESTORE_TEST_LABEL: &str = "opsec.x1642.dev/restore-test-of";
/// Annotation on a BackupPolicy asking for a verification now: its value is a token, and a
/// new token asks again (the last one handled is in status; the annotation is never removed).
pub const VERIFY_NOW_ANNOTATION: &str = "opsec.x1642.dev/verify-now";
/// Annotation on a BackupPolicy asking for a restore test now, likewise.
pub const RESTORE_TEST_NOW_ANNOTATION: &str = "opsec.x1642.dev/restore-test-now";
/// Restores, verifications and restore tests running at once across all objects: each reads a
/// whole backup, so they are bounded together.
pub const MAX_CONCURRENT_READS: usize = 2;
const CONTROLLER: &str = "backup";

/// Why a reconcile failed (retried with per-object backoff).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Status(#[from] super::kit::StatusError),
    #[error("reading {what}")]
    Read {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("writing {what}")]
    Write {
        what: String,
        #[source]
        source: kube::Error,
    },
}

impl super::kit::ReconcileError for Error {
    /// Short stable category: metric label and Event reason.
    fn category(&self) -> &'static str {
        match self {
            Self::Status(_) => "StatusWrite",
            Self::Read { .. } => "ApiRead",
            Self::Write { .. } => "ApiWrite",
        }
    }
}

/// Why the operator cannot act for a policy's or restore's tenant now (waited for, with the
/// reason in a condition: it heals once the ServiceAccount or the keyring is there).
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error(transparent)]
    Act(#[from] super::tenant::ActError),
    #[error(transparent)]
    Signing(#[from] signing::SigningError),
}

impl AccessError {
    /// Short stable category: condition reason and Event reason.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Act(e) => e.category(),
            Self::Signing(_) => "SigningKeyUnavailable",
        }
    }

    /// Says in `conditions` that the object waits for access: `Ready=False`, this reason.
    pub fn set_waiting(
        &self,
        conditions: &mut Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
        generation: Option<i64>,
    ) {
        Conditions::new(conditions, jiff::Timestamp::now(), generation).set(
            RunCondition::Ready,
            false,
            self.category(),
            resolve::error_chain(self),
        );
    }
}

crate::condition_types! {
    /// The condition of a Backup or Restore run.
    pub enum RunCondition {
        /// True once the run ended well (Completed, Recovered, PartiallyReplicated), False
        /// while it waits for access or after it failed (the reason says why).
        Ready,
    }
}

/// How soon work that waits for access (a missing ServiceAccount) is looked at again.
pub const ACCESS_RETRY: std::time::Duration = std::time::Duration::from_secs(15);

/// What the three controllers share.
pub struct State {
    pub ctx: Context,
    pub events: Events,
    pub metrics: Arc<metrics::BackupMetrics>,
    pub backups: Semaphore,
    /// Restores, verifications and restore tests ([`MAX_CONCURRENT_READS`]).
    pub reads: Semaphore,
    /// The status writers of the three kinds (each guards against the cache lagging its own
    /// writes: a reconcile starts from [`StatusWriter::latest`]).
    pub policy_statuses: StatusWriter<BackupPolicy>,
    pub backup_statuses: StatusWriter<Backup>,
    pub restore_statuses: StatusWriter<Restore>,
    /// Uids of the Backups and Restores this process is running now: one found `Running` that
    /// is not here was left behind by a process that stopped (see [`execute`], [`restore`]).
    running: Mutex<HashSet<String>>,
    /// Stored copies (`<store>/<id>`) found untrusted, by policy uid and keyring: not read
    /// again (a store full of forgeries costs one read each, not one per round).
    untrusted: Mutex<HashMap<String, HashSet<String>>>,
    /// Outcomes of Backup runs this process finished but could not record yet, by uid.
    unwritten: Mutex<HashMap<String, crate::api::backup::BackupStatus>>,
    /// Failed rounds in a row of copies to a storage location, and when the next may start,
    /// by `<policy uid>/<location>/<hash of its spec>` (a changed location starts afresh).
    copy_retries: Mutex<HashMap<String, (u32, jiff::Timestamp)>>,
}

/// Removes a Backup from [`State::running`] when its run ends, however it ends.
pub struct RunningGuard<'a> {
    st: &'a State,
    uid: String,
}

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        self.st
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.uid);
    }
}

impl State {
    /// What the operator may use to act for the tenant of `namespace` as ServiceAccount
    /// `named` (or the default): its impersonating client and the operator's signing keyring.
    pub async fn access(
        &self,
        namespace: &str,
        named: Option<&str>,
    ) -> Result<resolve::Access, AccessError> {
        let tenancy = self.ctx.tenancy.clone();
        let tenant = tenancy.act_as(&self.ctx.client, namespace, named).await?;
        let signing = signing::keyring(&self.ctx.client, &tenancy).await?;
        Ok(resolve::Access {
            tenant,
            tenancy,
            signing,
        })
    }

    /// Marks a Backup as run by this process until the guard drops.
    pub fn start_running(&self, uid: &str) -> RunningGuard<'_> {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(uid.to_string());
        RunningGuard {
            st: self,
            uid: uid.to_string(),
        }
    }

    /// Whether this process is running the Backup.
    pub fn is_running(&self, uid: &str) -> bool {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(uid)
    }

    /// The newest status of `p`: the one this process last wrote, else the cached one.
    pub fn policy_status(
        &self,
        p: &BackupPolicy,
    ) -> Option<crate::api::backup::BackupPolicyStatus> {
        self.policy_statuses.latest(p)
    }

    /// Forgets the status this process wrote for `p` (the policy is going).
    pub fn forget_policy(&self, p: &BackupPolicy) {
        self.policy_statuses.forget(p);
    }

    /// The copies found untrusted under `key` so far.
    pub fn untrusted_copies(&self, key: &str) -> HashSet<String> {
        self.untrusted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
            .unwrap_or_default()
    }

    /// Remembers a copy found untrusted under `key`.
    pub fn add_untrusted_copy(&self, key: &str, copy: String) {
        let mut map = self.untrusted.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > 4096 {
            map.clear();
        }
        map.entry(key.to_string()).or_default().insert(copy);
    }

    /// Keeps the outcome of a finished run whose status write failed.
    pub fn keep_unwritten(&self, uid: &str, status: crate::api::backup::BackupStatus) {
        self.unwritten
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(uid.to_string(), status);
    }

    /// Takes the outcome of a finished run not recorded yet.
    pub fn take_unwritten(&self, uid: &str) -> Option<crate::api::backup::BackupStatus> {
        self.unwritten
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(uid)
    }

    /// When copies to `key` may be tried again (`None`: now).
    pub fn copy_retry_at(&self, key: &str) -> Option<jiff::Timestamp> {
        self.copy_retries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .map(|(_, at)| *at)
    }

    /// Records a failed round of copies to `key`; returns when the next may start.
    pub fn copy_failed(&self, key: &str, now: jiff::Timestamp) -> jiff::Timestamp {
        let mut map = self.copy_retries.lock().unwrap_or_else(|p| p.into_inner());
        let entry = map.entry(key.to_string()).or_insert((0, now));
        entry.0 = entry.0.saturating_add(1);
        let delay = crate::schedule::copy_retry_delay(entry.0);
        entry.1 = jiff::SignedDuration::try_from(delay)
            .ok()
            .and_then(|d| now.checked_add(d).ok())
            .unwrap_or(now);
        entry.1
    }

    /// Forgets the failures of copies to `key` (they succeeded).
    pub fn copy_succeeded(&self, key: &str) {
        self.copy_retries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }
}

/// A kind whose status the backup controllers write, with its writer in [`State`].
pub trait Statused: kube::core::object::HasStatus + Sized {
    fn writer(st: &State) -> &StatusWriter<Self>;
}

impl Statused for BackupPolicy {
    fn writer(st: &State) -> &StatusWriter<Self> {
        &st.policy_statuses
    }
}

impl Statused for Backup {
    fn writer(st: &State) -> &StatusWriter<Self> {
        &st.backup_statuses
    }
}

impl Statused for Restore {
    fn writer(st: &State) -> &StatusWriter<Self> {
        &st.restore_statuses
    }
}

/// Writes the status of `obj` through its kind's writer, only when it changed.
pub async fn write_status<K>(st: &State, obj: &K, status: &K::Status) -> Result<(), Error>
where
    K: Statused
        + Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::Status: Serialize + serde::de::DeserializeOwned + Clone,
{
    K::writer(st).write(obj, status).await?;
    Ok(())
}

/// The backup controllers, as [`crate::controller::CONTROLLERS`] lists them.
pub const REGISTRATION: crate::controller::Registration = crate::controller::Registration {
    name: CONTROLLER,
    kinds: &["BackupPolicy", "Backup", "Restore"],
    metrics: metrics::register,
    start: run,
};

/// Starts the BackupPolicy, Backup and Restore controllers; they stop when `shutdown` turns
/// true.
pub fn run(ctx: Context, shutdown: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let client = ctx.client.clone();
        // No restore test runs yet: the scratch namespaces there are were left by a stop.
        restore_test::delete_left_behind(&client).await;
        let st = Arc::new(State::new(&ctx));
        let policies = kit::controller::<BackupPolicy>(&client).watches(
            Api::<Backup>::all(client.clone()),
            watcher::Config::default(),
            |b: Backup| {
                let ns = b.namespace()?;
                Some(ObjectRef::new(&b.spec.policy_ref.name).within(&ns))
            },
        );
        let policies = kit::run(
            Kit::new("BackupPolicy", CONTROLLER, &ctx),
            policies,
            st.clone(),
            |p, st| async move { policy::reconcile(&p, &st).await },
            shutdown.clone(),
        );
        let backups = kit::run(
            Kit::new("Backup", CONTROLLER, &ctx),
            kit::controller::<Backup>(&client),
            st.clone(),
            |b, st| async move { execute::reconcile(&b, &st).await },
            shutdown.clone(),
        );
        let restores = kit::run(
            Kit::new("Restore", CONTROLLER, &ctx),
            kit::controller::<Restore>(&client),
            st,
            |r, st| async move { restore::reconcile(&r, &st).await },
            shutdown,
        );
        futures::join!(policies, backups, restores);
        info!("backup controllers stopped");
    })
}

impl State {
    fn new(ctx: &Context) -> Self {
        let client = ctx.client.clone();
        Self {
            events: ctx.events(),
            metrics: ctx.metrics.of(CONTROLLER).unwrap_or_default(),
            backups: Semaphore::new(MAX_CONCURRENT_BACKUPS),
            reads: Semaphore::new(MAX_CONCURRENT_READS),
            policy_statuses: StatusWriter::new(client.clone()),
            backup_statuses: StatusWriter::new(client.clone()),
            restore_statuses: StatusWriter::new(client),
            running: Mutex::default(),
            unwritten: Mutex::default(),
            untrusted: Mutex::default(),
            copy_retries: Mutex::default(),
            ctx: ctx.clone(),
        }
    }
}

/// `Time` of a timestamp.
pub fn time(t: jiff::Timestamp) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(t)
}
