//! The SecurityBaseline controller's view of the cluster: reflector caches of namespaces,
//! workloads and every kind it stamps (discovered on demand, watched through the managed-by
//! label), and the trigger channel that turns their changes into reconciles of the baselines
//! concerned. Reconciles read these caches, never list the API server, so a check of a thousand
//! namespaces costs no API calls.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use futures::channel::mpsc::UnboundedSender;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use tokio::sync::RwLock;
use tokio::task::JoinSet;
use tracing::warn;

use super::plan::{NamespaceInfo, WorkloadInfo};
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

/// Requests a reconcile of a baseline by name.
#[derive(Clone)]
pub struct Trigger(UnboundedSender<ObjectRef<SecurityBaseline>>);

impl Trigger {
    pub fn new(tx: UnboundedSender<ObjectRef<SecurityBaseline>>) -> Self {
        Self(tx)
    }
    pub fn baseline(&self, name: &str) {
        let _ = self.0.unbounded_send(ObjectRef::new(name));
    }
}

/// A stamped kind: its API resource and a cache of the objects carrying the managed-by label.
pub struct StampedKind {
    pub resource: ApiResource,
    pub store: Store<DynamicObject>,
}

/// The caches.
pub struct ClusterCache {
    client: Client,
    pub namespaces: Store<Namespace>,
    deployments: Store<Deployment>,
    statefulsets: Store<StatefulSet>,
    daemonsets: Store<DaemonSet>,
    stamped: RwLock<HashMap<(String, String), Arc<StampedKind>>>,
    trigger: Trigger,
    baselines: Store<SecurityBaseline>,
    tasks: std::sync::Mutex<JoinSet<()>>,
}

impl ClusterCache {
    /// Starts the namespace and workload watches; each change triggers the baselines it may
    /// concern (every baseline for a namespace change, baselines with workload templates for a
    /// workload change; the scheduler folds repeated triggers into one reconcile).
    pub fn start(
        client: Client,
        baselines: Store<SecurityBaseline>,
        trigger: Trigger,
    ) -> Arc<Self> {
        let mut tasks = JoinSet::new();
        let namespaces = spawn_reflector::<Namespace>(
            &mut tasks,
            Api::all(client.clone()),
            watcher::Config::default(),
            {
                let (baselines, trigger) = (baselines.clone(), trigger.clone());
                move |_ns: &Namespace| {
                    for b in baselines.state() {
                        trigger.baseline(&b.name_any());
                    }
                }
            },
        );
        let on_workload = {
            let (baselines, trigger) = (baselines.clone(), trigger.clone());
            move || {
                for b in baselines
                    .state()
                    .iter()
                    .filter(|b| !b.spec.workload_templates.is_empty())
                {
                    trigger.baseline(&b.name_any());
                }
            }
        };
        let w = on_workload.clone();
        let deployments = spawn_reflector::<Deployment>(
            &mut tasks,
            Api::all(client.clone()),
            watcher::Config::default(),
            move |_: &Deployment| w(),
        );
        let w = on_workload.clone();
        let statefulsets = spawn_reflector::<StatefulSet>(
            &mut tasks,
            Api::all(client.clone()),
            watcher::Config::default(),
            move |_: &StatefulSet| w(),
        );
        let w = on_workload;
        let daemonsets = spawn_reflector::<DaemonSet>(
            &mut tasks,
            Api::all(client.clone()),
            watcher::Config::default(),
            move |_: &DaemonSet| w(),
        );
        Arc::new(Self {
            client,
            namespaces,
            deployments,
            statefulsets,
            daemonsets,
            stamped: RwLock::new(HashMap::new()),
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
        let key = (api_version.to_string(), kind.to_string());
        if let Some(k) = self.stamped.read().await.get(&key) {
            return Ok(k.clone());
        }
        let mut map = self.stamped.write().await;
        if let Some(k) = map.get(&key) {
            return Ok(k.clone());
        }
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
        let writer = reflector::store::Writer::<DynamicObject>::new(resource.clone());
        let store = writer.as_reader();
        let stream = reflector::reflector(writer, watcher(api, cfg).default_backoff());
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
                            if let Some(b) = o.labels().get(BASELINE_LABEL) {
                                trigger.baseline(b);
                            }
                        }
                        Ok(_) => {}
                        Err(err) => warn!(error = %err, "watch of a stamped kind failed; retrying"),
                    }
                }
            });
        let _ = store.wait_until_ready().await;
        let k = Arc::new(StampedKind { resource, store });
        map.insert(key, k.clone());
        Ok(k)
    }

    /// Every stamped kind watched so far.
    pub async fn stamped_kinds(&self) -> Vec<Arc<StampedKind>> {
        self.stamped.read().await.values().cloned().collect()
    }

    /// Every baseline, from the controller's own cache.
    pub fn baselines(&self) -> Vec<Arc<SecurityBaseline>> {
        self.baselines.state()
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
    let stream = reflector::reflector(writer, watcher(api, cfg).default_backoff());
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
