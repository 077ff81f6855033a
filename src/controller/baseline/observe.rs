//! The observe stage: what one check reads, from the caches only (no API reads but the signing
//! keyring, itself cached): the other baselines, the scope of the check ([`super::scope`]), the
//! namespaces and workloads in it as plain values, the caches of the stamped kinds, and what
//! this baseline stamped. [`CacheView`] is how the pure classify stage reads live objects.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

use super::State;
use super::cache::{CacheError, ClusterCache, StampedKind};
use super::classify::{Live, LiveNamespace, LiveObject};
use super::plan::{self, BaselineRef, NamespaceInfo, WorkloadInfo};
use super::rendered::{RenderedBody, RenderedSet};
use super::scope::{self, Dirty, Scope};
use crate::api::SecurityBaseline;
use crate::baseline::{BASELINE_LABEL, HASH_ANNOTATION, ObjectKey};

/// The caches of the kinds a check applies, by (apiVersion, kind).
pub type Kinds = BTreeMap<(String, String), Result<Arc<StampedKind>, CacheError>>;

/// What one check starts from.
pub struct Observed {
    /// The other baselines (not being deleted).
    pub others: Vec<Arc<SecurityBaseline>>,
    pub basis: scope::Basis,
    pub scope: Scope,
    /// When the check started (the scope's clock).
    pub started: Instant,
    /// The namespaces in scope, their Pod Security records kept only when the operator signed
    /// them.
    pub namespaces: Vec<NamespaceInfo>,
    /// The workloads in scope.
    pub workloads: Vec<WorkloadInfo>,
    /// The operator's signing keyring (None when unreadable: records are neither signed nor
    /// trusted).
    pub keyring: Option<Arc<crate::backup::SigningKeyring>>,
}

impl Observed {
    /// Every baseline as the plan sees it, `me` last.
    pub fn baselines<'a>(&'a self, me: BaselineRef<'a>) -> Vec<BaselineRef<'a>> {
        self.others
            .iter()
            .map(|b| BaselineRef {
                name: b.metadata.name.as_deref().unwrap_or_default(),
                spec: &b.spec,
            })
            .chain([me])
            .collect()
    }
}

/// Reads what a check of `sb` at revision `rev` covers. When this baseline's claims may have
/// changed, every other baseline is asked to look again now, so a conflict is seen by both
/// sides at once.
pub(super) async fn observe(
    st: &State,
    sb: &SecurityBaseline,
    rev: &str,
    new_revision: bool,
    dirty: Dirty,
    interval: Duration,
) -> Observed {
    let name = sb.name_any();
    let others: Vec<Arc<SecurityBaseline>> = st
        .cache
        .baselines()
        .into_iter()
        .filter(|b| b.metadata.deletion_timestamp.is_none() && b.name_any() != name)
        .collect();
    let basis = scope::Basis {
        uid: sb.metadata.uid.clone(),
        revision: rev.to_string(),
        generation: sb.metadata.generation,
        others: scope::others_digest(others.iter().map(|b| {
            (
                b.metadata.name.as_deref().unwrap_or_default(),
                b.metadata.generation,
            )
        })),
    };
    let started = Instant::now();
    let (scope, claims_changed) = {
        let memory = st.memory.lock().unwrap_or_else(|p| p.into_inner());
        let m = memory.get(&name);
        let scope = if new_revision {
            Scope::All
        } else {
            scope::decide(m, &basis, dirty, started, interval)
        };
        (scope, scope::claims_changed(m.map(|m| &m.basis), &basis))
    };
    if claims_changed {
        for other in &others {
            st.cache.trigger().baseline(&other.name_any());
        }
    }
    let mut namespaces = st.cache.namespace_infos();
    namespaces.retain(|n| scope.covers(&n.name));
    // Pod Security records are trusted only as the operator signed them.
    let keyring = signing_keyring(st).await;
    let trusted = keyring
        .as_ref()
        .map(|k| k.trusted().to_vec())
        .unwrap_or_default();
    for ns in namespaces.iter_mut().filter(|n| !n.annotations.is_empty()) {
        plan::keep_signed_record(ns, &trusted);
    }
    let mut workloads = st.cache.workload_infos();
    workloads.retain(|w| scope.covers(&w.namespace));
    Observed {
        others,
        basis,
        scope,
        started,
        namespaces,
        workloads,
        keyring,
    }
}

/// The caches of the kinds `set` applies, started together when new.
pub(super) async fn kinds(st: &State, set: &RenderedSet) -> Kinds {
    futures::future::join_all(set.kinds().into_iter().map(|(api_version, kind)| async {
        let k = st.cache.stamped(&api_version, &kind).await;
        ((api_version, kind), k)
    }))
    .await
    .into_iter()
    .collect()
}

/// The caches as the classify stage reads them.
pub struct CacheView<'a> {
    pub cache: &'a ClusterCache,
    pub kinds: &'a Kinds,
}

impl Live for CacheView<'_> {
    fn object(&self, o: &RenderedBody) -> LiveObject {
        match self.kinds.get(&(o.api_version.clone(), o.kind.clone())) {
            Some(Ok(kind)) => match kind.get(&o.namespace, &o.name) {
                Some(live) => LiveObject::Present {
                    object: Box::new(live.to_dynamic()),
                    resource: kind.resource.clone(),
                },
                None => LiveObject::Absent {
                    resource: kind.resource.clone(),
                },
            },
            Some(Err(e)) => LiveObject::Unwatched {
                message: e.to_string(),
            },
            None => LiveObject::Unwatched {
                message: format!("kind {} of {} is not watched", o.kind, o.api_version),
            },
        }
    }

    fn namespace(&self, name: &str) -> Option<LiveNamespace> {
        let ns = self.cache.namespaces.get(&ObjectRef::new(name))?;
        Some(LiveNamespace {
            labels: ns.labels().clone(),
            annotations: ns.annotations().clone(),
        })
    }
}

/// How long the signing keyring read is used before it is read again (a rotated key is
/// picked up within this).
const KEYRING_REFRESH: Duration = Duration::from_secs(60);

/// The operator's signing keyring, or `None` when it cannot be read (then no record is signed
/// or trusted: a baseline's Pod Security labels still apply, and stay when it stops).
pub(super) async fn signing_keyring(st: &State) -> Option<Arc<crate::backup::SigningKeyring>> {
    let mut cached = st.keyring.lock().await;
    if let Some((at, k)) = cached.as_ref()
        && at.elapsed() < KEYRING_REFRESH
    {
        return Some(k.clone());
    }
    match crate::controller::backup::signing::keyring(&st.ctx.client, &st.ctx.tenancy).await {
        Ok(k) => {
            let k = Arc::new(k);
            *cached = Some((Instant::now(), k.clone()));
            Some(k)
        }
        Err(e) => {
            tracing::warn!(error = %crate::backup::error_chain(&e), "the signing keyring is unreadable: Pod Security records are neither signed nor trusted");
            cached.as_ref().map(|(_, k)| k.clone())
        }
    }
}

/// (`Kind/name`, rendered hash) of every object stamped by `name`, as the caches hold them:
/// the old side of a new revision's history entry.
pub(super) fn stamped_hashes(st: &State, name: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for kind in st.cache.stamped_kinds() {
        if super::is_report(&kind.resource.api_version, &kind.resource.kind) {
            continue;
        }
        for o in kind.store.state() {
            if o.labels().get(BASELINE_LABEL).map(String::as_str) == Some(name) {
                let hash = o
                    .annotations()
                    .get(HASH_ANNOTATION)
                    .cloned()
                    .unwrap_or_default();
                out.push((format!("{}/{}", kind.resource.kind, o.name_any()), hash));
            }
        }
    }
    out
}

/// Objects labelled as stamped by `name`, in the namespaces `scope` covers, that `set` no
/// longer has and no other baseline owns.
pub(super) fn stale(
    st: &State,
    name: &str,
    set: &RenderedSet,
    scope: &Scope,
) -> Vec<(Arc<StampedKind>, ObjectKey)> {
    let mut out = Vec::new();
    for kind in st.cache.stamped_kinds() {
        for o in kind.store.state() {
            if o.labels().get(BASELINE_LABEL).map(String::as_str) != Some(name)
                || o.metadata.deletion_timestamp.is_some()
                || !scope.covers(o.metadata.namespace.as_deref().unwrap_or_default())
            {
                continue;
            }
            let key = ObjectKey {
                namespace: o.namespace().unwrap_or_default(),
                api_version: kind.resource.api_version.clone(),
                kind: kind.resource.kind.clone(),
                name: o.name_any(),
            };
            if !set.claimed.contains(&key) && !set.others_own.contains(&key) {
                out.push((kind.clone(), key));
            }
        }
    }
    out
}
