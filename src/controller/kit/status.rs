//! One status writer per kind: server-side apply of the status subresource, only when the
//! status changed, under the operator's field manager, and one guard against the controller's
//! cache lagging our own write. A reconcile that starts from a cached copy older than what this
//! process last wrote would otherwise take its own work for undone (re-run a finished Backup,
//! drop a restore test it recorded, report an applied revision as new); so
//! [`StatusWriter::latest`] answers with what this process wrote until the cache shows it.

use std::collections::HashMap;
use std::sync::Mutex;

use kube::core::object::HasStatus;
use kube::{Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A status write the API server refused, or that did not reach it.
#[derive(Debug, thiserror::Error)]
#[error("writing the status of {kind} {name}")]
pub struct StatusError {
    pub kind: String,
    pub name: String,
    #[source]
    pub source: kube::Error,
}

/// Writes the status of objects of kind `K`, remembering what it wrote by uid.
pub struct StatusWriter<K: HasStatus> {
    client: Client,
    /// What this process last wrote, by uid, as the API server will hold it (times at
    /// seconds), until the cache shows the same.
    written: Mutex<HashMap<String, serde_json::Value>>,
    _kind: std::marker::PhantomData<fn() -> K>,
}

impl<K> StatusWriter<K>
where
    K: Resource<DynamicType = ()> + HasStatus + Clone + DeserializeOwned + std::fmt::Debug,
    K::Status: Serialize + DeserializeOwned + Clone,
{
    pub fn new(client: Client) -> Self {
        Self {
            client,
            written: Mutex::default(),
            _kind: std::marker::PhantomData,
        }
    }

    fn uid(obj: &K) -> String {
        obj.meta().uid.clone().unwrap_or_default()
    }

    /// The newest status of `obj`: the one this process last wrote when the cache has not
    /// caught up with it, else the cached one.
    pub fn latest(&self, obj: &K) -> Option<K::Status> {
        let uid = Self::uid(obj);
        let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        let Some(ours) = written.get(&uid) else {
            return obj.status().cloned();
        };
        let cached = obj.status().and_then(|s| serde_json::to_value(s).ok());
        if cached.as_ref() == Some(ours) {
            // The cache holds our write now: nothing left to guard.
            written.remove(&uid);
            return obj.status().cloned();
        }
        serde_json::from_value(ours.clone()).ok()
    }

    /// Whether `status` differs from the newest status of `obj` (what a write would change).
    pub fn changes(&self, obj: &K, status: &K::Status) -> bool {
        let latest = self.latest(obj).and_then(|s| serde_json::to_value(s).ok());
        latest != serde_json::to_value(status).ok()
    }

    /// Applies `status` to `obj`'s status subresource when it differs from the newest status;
    /// returns whether it wrote. A failed write forgets what was written before (it may have
    /// landed or not: the next reconcile starts from what the cache says).
    pub async fn write(&self, obj: &K, status: &K::Status) -> Result<bool, StatusError> {
        if !self.changes(obj, status) {
            return Ok(false);
        }
        let uid = Self::uid(obj);
        let name = obj.meta().name.clone().unwrap_or_default();
        let namespace = obj.meta().namespace.as_deref();
        let result = super::apply::status::<K>(&self.client, namespace, &name, status).await;
        let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(()) => {
                if let Ok(v) = serde_json::to_value(status) {
                    written.insert(uid, v);
                }
                Ok(true)
            }
            Err(source) => {
                written.remove(&uid);
                Err(StatusError {
                    kind: K::kind(&()).into(),
                    name: match obj.meta().namespace.as_deref() {
                        Some(ns) => format!("{ns}/{name}"),
                        None => name,
                    },
                    source,
                })
            }
        }
    }

    /// Forgets `obj` (it is being deleted).
    pub fn forget(&self, obj: &K) {
        self.written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&Self::uid(obj));
    }
}
