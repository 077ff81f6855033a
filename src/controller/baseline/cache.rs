//! The SecurityBaseline controller's view of the cluster: reflector caches of namespaces,
//! workloads and every kind it stamps (discovered on demand, watched through the managed-by
//! label), and the trigger channel that turns their changes into reconciles of the baselines
//! concerned. Reconciles read these caches, never list the API server, so a check of a thousand
//! namespaces costs no API calls.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use futures::channel::mpsc::UnboundedSender;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::core::DeserializeGuard;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use tokio::sync::OnceCell;
use tokio::task::JoinSet;
use tracing::warn;

use super::plan::{NamespaceInfo, WorkloadInfo};
use super::scope::Dirty;
use crate::api::SecurityBaseline;
use crate::baseline::{BASELINE_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE};

/// Why a kind cannot be watched.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("kind {kind} of {api_version} is not served by this cluster")]
    NotServed {
        api_version: String,
        kind: String,
        #[source]
        source: kube::Error,
    },
    #[error("kind {kind} is cluster-scoped: a baseline renders namespaced objects only")]
    ClusterScoped { kind: String },
}

/// Requests a reconcile of a baseline, saying which namespaces changed: the reconcile then
/// checks only those (see [`super::scope`]), unless it is due for a full check anyway.
#[derive(Clone)]
pub struct Trigger {
    tx: UnboundedSender<ObjectRef<SecurityBaseline>>,
    dirty: Arc<Mutex<HashMap<String, Dirty>>>,
}

impl Trigger {
    pub fn new(tx: UnboundedSender<ObjectRef<SecurityBaseline>>) -> Self {
        Self {
            tx,
            dirty: Default::default(),
        }
    }

    /// A change that may concern every namespace of the baseline.
    pub fn baseline(&self, name: &str) {
        self.mark(name, |d| *d = Dirty::All);
    }

    /// A change in one namespace (of a namespace, a workload or a stamped object).
    pub fn namespace(&self, name: &str, namespace: &str) {
        self.mark(name, |d| d.add(namespace));
    }

    /// What changed for `name` since the last call (nothing: an empty set).
    pub fn take(&self, name: &str) -> Dirty {
        self.dirty
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name)
            .unwrap_or_default()
    }

    fn mark(&self, name: &str, f: impl FnOnce(&mut Dirty)) {
        f(self
            .dirty
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.to_string())
            .or_default());
        let _ = self.tx.unbounded_send(ObjectRef::new(name));
    }
}

/// A stamped kind: its API resource and a cache of the objects carrying the managed-by label.
pub struct StampedKind {
    pub resource: ApiResource,
    pub store: Store<CachedObject>,
}

impl StampedKind {
    /// The cached object `name` in `namespace`.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<CachedObject>> {
        self.store.get(
            &ObjectRef::<CachedObject>::new_with(name, self.resource.clone()).within(namespace),
        )
    }
}

/// A stamped object as the cache keeps it: its metadata (slimmed, see [`slim_stamped`]) and
/// the rest of its fields as compact JSON text, parsed only when a check compares it. As a JSON
/// value tree an object takes about ten times its text, and thousands are cached.
#[derive(Clone, Debug)]
pub struct CachedObject {
    pub types: Option<kube::api::TypeMeta>,
    pub metadata: ObjectMeta,
    /// Every top-level field but `apiVersion`, `kind` and `metadata`.
    body: Box<str>,
}

impl CachedObject {
    /// The whole object again, for comparison.
    pub fn to_dynamic(&self) -> DynamicObject {
        DynamicObject {
            types: self.types.clone(),
            metadata: self.metadata.clone(),
            data: serde_json::from_str(&self.body).unwrap_or_default(),
        }
    }

    /// The object as `K` (None when it does not parse as one).
    pub fn parse<K: serde::de::DeserializeOwned>(&self) -> Option<K> {
        serde_json::to_value(self.to_dynamic())
            .ok()
            .and_then(|v| serde_json::from_value(v).ok())
    }
}

impl From<DynamicObject> for CachedObject {
    fn from(mut o: DynamicObject) -> Self {
        slim_stamped(&mut o);
        let body = serde_json::to_string(&o.data)
            .unwrap_or_else(|_| "{}".into())
            .into_boxed_str();
        Self {
            types: o.types,
            metadata: o.metadata,
            body,
        }
    }
}

impl Resource for CachedObject {
    type DynamicType = ApiResource;
    type Scope = kube::core::DynamicResourceScope;

    fn kind(dt: &ApiResource) -> Cow<'_, str> {
        dt.kind.as_str().into()
    }
    fn group(dt: &ApiResource) -> Cow<'_, str> {
        dt.group.as_str().into()
    }
    fn version(dt: &ApiResource) -> Cow<'_, str> {
        dt.version.as_str().into()
    }
    fn api_version(dt: &ApiResource) -> Cow<'_, str> {
        dt.api_version.as_str().into()
    }
    fn plural(dt: &ApiResource) -> Cow<'_, str> {
        dt.plural.as_str().into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// A watch event of stamped objects, in the cache's form.
fn compact(event: watcher::Event<DynamicObject>) -> watcher::Event<CachedObject> {
    use watcher::Event as E;
    match event {
        E::Apply(o) => E::Apply(o.into()),
        E::Delete(o) => E::Delete(o.into()),
        E::Init => E::Init,
        E::InitApply(o) => E::InitApply(o.into()),
        E::InitDone => E::InitDone,
    }
}

/// The cache of one stamped kind, once its watch has started.
type StampedCell = Arc<OnceCell<Arc<StampedKind>>>;

/// The caches.
pub struct ClusterCache {
    client: Client,
    pub namespaces: Store<Namespace>,
    deployments: Store<Deployment>,
    statefulsets: Store<StatefulSet>,
    daemonsets: Store<DaemonSet>,
    /// One cell per stamped kind: kinds start their watches concurrently, each kind once (a
    /// kind that failed to start is tried again on the next call).
    stamped: std::sync::Mutex<HashMap<(String, String), StampedCell>>,
    trigger: Trigger,
    baselines: Store<DeserializeGuard<SecurityBaseline>>,
    tasks: std::sync::Mutex<JoinSet<()>>,
}

impl ClusterCache {
    /// Starts the namespace and workload watches; each change triggers the baselines it may
    /// concern (every baseline for a namespace change, baselines with workload templates for a
    /// workload change; the scheduler folds repeated triggers into one reconcile).
    pub fn start(
        client: Client,
        baselines: Store<DeserializeGuard<SecurityBaseline>>,
        trigger: Trigger,
    ) -> Arc<Self> {
        let mut tasks = JoinSet::new();
        let namespaces = spawn_reflector::<Namespace>(
            &mut tasks,
            Api::all(client.clone()),
            watcher::Config::default(),
            slim_namespace,
            {
                let (baselines, trigger) = (baselines.clone(), trigger.clone());
                move |ns: &Namespace| {
                    for b in baselines.state() {
                        if let Some(name) = b.meta().name.as_deref() {
                            trigger.namespace(name, &ns.name_any());
                        }
                    }
                }
            },
        );
        let on_workload = {
            let (baselines, trigger) = (baselines.clone(), trigger.clone());
            move |namespace: Option<String>| {
                let Some(namespace) = namespace else { return };
                for b in baselines.state().iter().filter_map(|b| b.0.as_ref().ok()) {
                    if !b.spec.workload_templates.is_empty() {
                        trigger.namespace(&b.name_any(), &namespace);
                    }
                }
            }
        };
        let w = on_workload.clone();
        let deployments = spawn_reflector::<Deployment>(
            &mut tasks,
            Api::all(client.clone()),
            watcher::Config::default(),
            slim_deployment,
            move |o: &Deployment| w(o.namespace()),
        );
        let w = on_workload.clone();
        let statefulsets = spawn_reflector::<StatefulSet>(
            &mut tasks,
            Api::all(client.clone()),
            watcher::Config::default(),
            slim_statefulset,
            move |o: &StatefulSet| w(o.namespace()),
        );
        let w = on_workload;
        let daemonsets = spawn_reflector::<DaemonSet>(
            &mut tasks,
            Api::all(client.clone()),
            watcher::Config::default(),
            slim_daemonset,
            move |o: &DaemonSet| w(o.namespace()),
        );
        Arc::new(Self {
            client,
            namespaces,
            deployments,
            statefulsets,
            daemonsets,
            stamped: Default::default(),
            trigger,
            baselines,
            tasks: std::sync::Mutex::new(tasks),
        })
    }

    /// Waits until the namespace and workload caches hold a complete first list.
    pub async fn wait_until_ready(&self) {
        let _ = self.namespaces.wait_until_ready().await;
        let _ = self.deployments.wait_until_ready().await;
        let _ = self.statefulsets.wait_until_ready().await;
        let _ = self.daemonsets.wait_until_ready().await;
    }

    /// The namespaces, as plain data for the plan.
    pub fn namespace_infos(&self) -> Vec<NamespaceInfo> {
        let mut out: Vec<NamespaceInfo> = self
            .namespaces
            .state()
            .iter()
            .filter(|n| n.metadata.deletion_timestamp.is_none())
            .map(|n| NamespaceInfo {
                name: n.name_any(),
                labels: n.labels().clone(),
                annotations: n.annotations().clone(),
                resource_version: n.resource_version(),
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// The workloads, as plain data for the plan.
    pub fn workload_infos(&self) -> Vec<WorkloadInfo> {
        fn info<K: Resource>(
            kind: &str,
            w: &K,
            pod_labels: Option<&BTreeMap<String, String>>,
        ) -> Option<WorkloadInfo> {
            let meta = w.meta();
            if meta.deletion_timestamp.is_some() {
                return None;
            }
            Some(WorkloadInfo {
                kind: kind.into(),
                namespace: meta.namespace.clone()?,
                name: meta.name.clone()?,
                pod_labels: pod_labels.cloned().unwrap_or_default(),
                created: meta.creation_timestamp.as_ref().map(|t| t.0),
            })
        }
        let mut out = Vec::new();
        for d in self.deployments.state() {
            out.extend(info(
                "Deployment",
                d.as_ref(),
                d.spec
                    .as_ref()
                    .and_then(|s| s.template.metadata.as_ref())
                    .and_then(|m| m.labels.as_ref()),
            ));
        }
        for s in self.statefulsets.state() {
            out.extend(info(
                "StatefulSet",
                s.as_ref(),
                s.spec
                    .as_ref()
                    .and_then(|s| s.template.metadata.as_ref())
                    .and_then(|m| m.labels.as_ref()),
            ));
        }
        for d in self.daemonsets.state() {
            out.extend(info(
                "DaemonSet",
                d.as_ref(),
                d.spec
                    .as_ref()
                    .and_then(|s| s.template.metadata.as_ref())
                    .and_then(|m| m.labels.as_ref()),
            ));
        }
        out.sort_by(|a, b| (&a.namespace, &a.kind, &a.name).cmp(&(&b.namespace, &b.kind, &b.name)));
        out
    }

    /// The cache of a stamped kind, starting its watch (and waiting for its first list) when it
    /// is new. A kind the cluster does not serve is an error, not a crash.
    pub async fn stamped(
        &self,
        api_version: &str,
        kind: &str,
    ) -> Result<Arc<StampedKind>, CacheError> {
        let cell = self
            .stamped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((api_version.to_string(), kind.to_string()))
            .or_default()
            .clone();
        cell.get_or_try_init(|| self.watch_stamped(api_version, kind))
            .await
            .cloned()
    }

    /// Discovers a stamped kind, starts its watch and waits for its first list.
    async fn watch_stamped(
        &self,
        api_version: &str,
        kind: &str,
    ) -> Result<Arc<StampedKind>, CacheError> {
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version),
        };
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let (resource, caps) = kube::discovery::pinned_kind(&self.client, &gvk)
            .await
            .map_err(|source| CacheError::NotServed {
                api_version: api_version.into(),
                kind: kind.into(),
                source,
            })?;
        if caps.scope != kube::discovery::Scope::Namespaced {
            return Err(CacheError::ClusterScoped { kind: kind.into() });
        }
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &resource);
        let cfg =
            watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"));
        let trigger = self.trigger.clone();
        let writer = reflector::store::Writer::<CachedObject>::new(resource.clone());
        let store = writer.as_reader();
        let stream =
            reflector::reflector(writer, watcher(api, cfg).default_backoff().map_ok(compact));
        self.tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .spawn(async move {
                let mut events = std::pin::pin!(stream);
                while let Some(event) = events.next().await {
                    match event {
                        Ok(
                            watcher::Event::Apply(o)
                            | watcher::Event::Delete(o)
                            | watcher::Event::InitApply(o),
                        ) => {
                            if let (Some(b), Some(ns)) = (
                                o.labels().get(BASELINE_LABEL),
                                o.metadata.namespace.as_deref(),
                            ) {
                                trigger.namespace(b, ns);
                            }
                        }
                        Ok(_) => {}
                        Err(err) => warn!(error = %err, "watch of a stamped kind failed; retrying"),
                    }
                }
            });
        let _ = store.wait_until_ready().await;
        Ok(Arc::new(StampedKind { resource, store }))
    }

    /// Every stamped kind watched so far.
    pub fn stamped_kinds(&self) -> Vec<Arc<StampedKind>> {
        self.stamped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter_map(|cell| cell.get().cloned())
            .collect()
    }

    /// The trigger the caches' changes go through.
    pub fn trigger(&self) -> &Trigger {
        &self.trigger
    }

    /// Every baseline that parses, from the controller's own cache.
    pub fn baselines(&self) -> Vec<Arc<SecurityBaseline>> {
        self.baselines
            .state()
            .iter()
            .filter_map(|b| b.0.as_ref().ok().map(|b| Arc::new(b.clone())))
            .collect()
    }
}

impl Drop for ClusterCache {
    fn drop(&mut self) {
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.abort_all();
        }
    }
}

/// Runs a reflector for `K` in the background and calls `on_change` for every object it sees
/// change (added, modified, deleted, or listed again after a restart of the watch).
fn spawn_reflector<K>(
    tasks: &mut JoinSet<()>,
    api: Api<K>,
    cfg: watcher::Config,
    slim: fn(&mut K),
    on_change: impl Fn(&K) + Send + 'static,
) -> Store<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, cfg).default_backoff().modify(slim));
    tasks.spawn(async move {
        let mut events =
            std::pin::pin!(stream.map_err(|e| warn!(error = %e, "watch failed; retrying")));
        while let Some(event) = events.next().await {
            if let Ok(
                watcher::Event::Apply(o) | watcher::Event::Delete(o) | watcher::Event::InitApply(o),
            ) = event
            {
                on_change(&o);
            }
        }
    });
    store
}

/// Annotation `kubectl apply` keeps a whole copy of the object in; never compared.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// What the caches keep of a stamped object: everything but its status, the last-applied copy,
/// and the managedFields entries that can never name another writer of a field the baseline
/// sets (the operator's own, and those of subresources). Thousands of stamped objects are
/// cached, and managedFields are most of their size.
fn slim_stamped(o: &mut DynamicObject) {
    if let Some(entries) = o.metadata.managed_fields.as_mut() {
        entries.retain(|e| {
            e.manager.as_deref() != Some(crate::FIELD_MANAGER)
                && e.subresource.as_deref().is_none_or(str::is_empty)
        });
    }
    if let Some(a) = o.metadata.annotations.as_mut() {
        a.remove(LAST_APPLIED);
    }
    if let Some(data) = o.data.as_object_mut() {
        data.remove("status");
    }
}

/// What the plan reads of a namespace: its name, labels, deletion, and the operator's own
/// annotations (the record of its Pod Security labels), only while the operator's apply owns
/// both: a record anyone else wrote or changed (a tenant allowed to edit its Namespace) is no
/// record, and is never put back.
fn slim_namespace(n: &mut Namespace) {
    let ours = record_owned_by_operator(n.metadata.managed_fields.as_deref().unwrap_or_default());
    n.metadata.managed_fields = None;
    if let Some(a) = n.metadata.annotations.as_mut() {
        a.retain(|k, _| {
            ours && (k == crate::baseline::POD_SECURITY_BY_ANNOTATION
                || k == crate::baseline::POD_SECURITY_BEFORE_ANNOTATION
                || k == crate::baseline::POD_SECURITY_SIGNATURE_ANNOTATION)
        });
    }
}

/// Whether the operator's apply (field manager [`crate::FIELD_MANAGER`], operation `Apply`)
/// owns both annotations of the Pod Security record: another writer that set or changed either
/// owns it instead.
fn record_owned_by_operator(
    managed: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry],
) -> bool {
    managed.iter().any(|m| {
        m.manager.as_deref() == Some(crate::FIELD_MANAGER)
            && m.operation.as_deref() == Some("Apply")
            && m.fields_v1.as_ref().is_some_and(|f| {
                let annotations = &f.0["f:metadata"]["f:annotations"];
                [
                    crate::baseline::POD_SECURITY_BY_ANNOTATION,
                    crate::baseline::POD_SECURITY_BEFORE_ANNOTATION,
                ]
                .iter()
                .all(|k| annotations.get(format!("f:{k}")).is_some())
            })
    })
}

/// What the plan reads of a workload: its metadata and its pod template's labels.
fn slim_workload_meta(meta: &mut ObjectMeta, template: Option<&mut PodTemplateSpec>) {
    meta.managed_fields = None;
    meta.annotations = None;
    if let Some(t) = template {
        t.spec = None;
        t.metadata = t.metadata.take().map(|m| ObjectMeta {
            labels: m.labels,
            ..Default::default()
        });
    }
}

fn slim_deployment(d: &mut Deployment) {
    d.status = None;
    slim_workload_meta(&mut d.metadata, d.spec.as_mut().map(|s| &mut s.template));
}

fn slim_statefulset(s: &mut StatefulSet) {
    s.status = None;
    if let Some(spec) = s.spec.as_mut() {
        spec.volume_claim_templates = None;
    }
    slim_workload_meta(&mut s.metadata, s.spec.as_mut().map(|s| &mut s.template));
}

fn slim_daemonset(d: &mut DaemonSet) {
    d.status = None;
    slim_workload_meta(&mut d.metadata, d.spec.as_mut().map(|s| &mut s.template));
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};
    use serde_json::json;

    fn entry(manager: &str, subresource: Option<&str>) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: Some(manager.into()),
            subresource: subresource.map(Into::into),
            fields_v1: Some(FieldsV1(json!({"f:spec": {}}))),
            ..Default::default()
        }
    }

    #[test]
    fn a_slim_stamped_object_keeps_what_drift_checks_read() {
        let mut o: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "ResourceQuota",
            "metadata": {
                "name": "q", "namespace": "t1",
                "labels": {"app.kubernetes.io/managed-by": "opsec-operator"},
                "annotations": {"keep": "me", LAST_APPLIED: "{...}"},
            },
            "spec": {"hard": {"pods": "10"}},
            "status": {"used": {"pods": "1"}},
        }))
        .unwrap();
        o.metadata.managed_fields = Some(vec![
            entry(crate::FIELD_MANAGER, None),
            entry("kubectl-edit", None),
            entry("kube-controller-manager", Some("status")),
        ]);
        slim_stamped(&mut o);
        let managers: Vec<_> = o
            .metadata
            .managed_fields
            .iter()
            .flatten()
            .filter_map(|e| e.manager.clone())
            .collect();
        assert_eq!(managers, ["kubectl-edit"]);
        assert_eq!(o.data["spec"], json!({"hard": {"pods": "10"}}));
        assert!(o.data.get("status").is_none());
        let annotations = o.metadata.annotations.unwrap();
        assert_eq!(annotations.get("keep").map(String::as_str), Some("me"));
        assert!(!annotations.contains_key(LAST_APPLIED));
        assert_eq!(o.metadata.labels.unwrap().len(), 1);
    }

    #[test]
    fn a_cached_object_gives_back_the_slim_object_and_parses_as_its_type() {
        let o: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "namespace": "t1", "annotations": {LAST_APPLIED: "{}"}},
            "data": {"tenant": "acme"},
        }))
        .unwrap();
        let cached = CachedObject::from(o.clone());
        let mut slim = o;
        slim_stamped(&mut slim);
        assert_eq!(
            serde_json::to_value(cached.to_dynamic()).unwrap(),
            serde_json::to_value(&slim).unwrap()
        );
        let cm: k8s_openapi::api::core::v1::ConfigMap = cached.parse().unwrap();
        assert_eq!(cm.data.unwrap()["tenant"], "acme");
        assert_eq!(cached.name_any(), "c");
    }

    #[test]
    fn a_pod_security_record_counts_only_while_the_operators_apply_owns_it() {
        let by = crate::baseline::POD_SECURITY_BY_ANNOTATION;
        let before = crate::baseline::POD_SECURITY_BEFORE_ANNOTATION;
        let entry = |manager: &str, operation: &str, keys: &[&str]| {
            let annotations: serde_json::Map<String, serde_json::Value> =
                keys.iter().map(|k| (format!("f:{k}"), json!({}))).collect();
            ManagedFieldsEntry {
                manager: Some(manager.into()),
                operation: Some(operation.into()),
                fields_v1: Some(FieldsV1(
                    json!({"f:metadata": {"f:annotations": annotations}}),
                )),
                ..Default::default()
            }
        };
        let namespace = |managed: Vec<ManagedFieldsEntry>| {
            let mut n: Namespace = serde_json::from_value(json!({"metadata": {"name": "t1",
                "annotations": {by: "gold", before: "{}", "other": "x"}}}))
            .unwrap();
            n.metadata.managed_fields = Some(managed);
            slim_namespace(&mut n);
            n.metadata.annotations.unwrap_or_default()
        };
        let kept = namespace(vec![entry(crate::FIELD_MANAGER, "Apply", &[by, before])]);
        assert_eq!(
            kept.len(),
            2,
            "the record, and no other annotation: {kept:?}"
        );
        // Written by someone else, changed by someone else, or by the operator's other writes.
        for managed in [
            vec![entry("kubectl-edit", "Update", &[by, before])],
            vec![
                entry(crate::FIELD_MANAGER, "Apply", &[by]),
                entry("kubectl-edit", "Update", &[before]),
            ],
            vec![entry(crate::FIELD_MANAGER, "Update", &[by, before])],
            vec![],
        ] {
            assert!(namespace(managed.clone()).is_empty(), "{managed:?}");
        }
    }

    #[test]
    fn a_slim_workload_keeps_its_pod_labels_and_creation() {
        let mut d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "t1", "creationTimestamp": "2026-01-01T00:00:00Z",
                         "annotations": {"a": "b"}},
            "spec": {
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}, "annotations": {"x": "y"}},
                    "spec": {"containers": [{"name": "c", "image": "nginx"}]},
                },
            },
            "status": {"replicas": 1},
        }))
        .unwrap();
        slim_deployment(&mut d);
        let t = &d.spec.as_ref().unwrap().template;
        assert!(t.spec.is_none());
        let m = t.metadata.as_ref().unwrap();
        assert_eq!(m.labels.as_ref().unwrap()["app"], "web");
        assert!(m.annotations.is_none());
        assert!(d.status.is_none());
        assert!(d.metadata.creation_timestamp.is_some());
        assert_eq!(d.metadata.name.as_deref(), Some("web"));
    }
}
