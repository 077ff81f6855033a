//! One status writer per kind: server-side apply of the status subresource, only when the
//! status changed, under the operator's field manager, and one guard against the controller's
//! cache lagging our own write. A reconcile that starts from a cached copy older than what this
//! process last wrote would otherwise take its own work for undone (re-run a finished Backup,
//! drop a restore test it recorded, report an applied revision as new); so
//! [`StatusWriter::latest`] answers with what this process wrote until the cache has caught up
//! with it. Where a wrong answer would be costly (taking a run for interrupted),
//! [`StatusWriter::live`] reads the object from the API server instead.

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

/// What this process last wrote to one object's status.
struct Written {
    /// The status as serialized (k8s-openapi writes times in whole seconds, so the cache's copy
    /// of the same status serializes alike).
    status: serde_json::Value,
    /// The object's resourceVersion after the write, when the API server said.
    version: Option<String>,
}

/// Writes the status of objects of kind `K`, remembering what it wrote by uid.
pub struct StatusWriter<K: HasStatus> {
    client: Client,
    written: Mutex<HashMap<String, Written>>,
    _kind: std::marker::PhantomData<fn() -> K>,
}

/// Entries kept at most; past this the oldest knowledge is dropped (the cache then answers,
/// as it would after a restart).
const MAX_ENTRIES: usize = 16_384;

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

    /// The newest status of `obj`: the one this process last wrote while the cache has not
    /// caught up with it, else the cached one. The cache has caught up when it holds the same
    /// status, the version our write made, or (where versions are numbers, as etcd's are) a
    /// later one: then someone else wrote after us, and theirs stands.
    pub fn latest(&self, obj: &K) -> Option<K::Status> {
        let uid = Self::uid(obj);
        let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        let Some(ours) = written.get(&uid) else {
            return obj.status().cloned();
        };
        let cached = obj.status().and_then(|s| serde_json::to_value(s).ok());
        if cached.as_ref() == Some(&ours.status)
            || caught_up(
                obj.meta().resource_version.as_deref(),
                ours.version.as_deref(),
            )
        {
            written.remove(&uid);
            return obj.status().cloned();
        }
        serde_json::from_value(ours.status.clone()).ok()
    }

    /// Whether `status` differs from the newest status of `obj` (what a write would change).
    pub fn changes(&self, obj: &K, status: &K::Status) -> bool {
        let latest = self.latest(obj).and_then(|s| serde_json::to_value(s).ok());
        latest != serde_json::to_value(status).ok()
    }

    /// Applies `status` to `obj`'s status subresource when it differs from the newest status;
    /// returns whether it wrote. A failed write keeps what was known before (the write may
    /// have landed or not; [`live`](Self::live) settles it where it matters).
    pub async fn write(&self, obj: &K, status: &K::Status) -> Result<bool, StatusError> {
        if !self.changes(obj, status) {
            return Ok(false);
        }
        let uid = Self::uid(obj);
        let name = obj.meta().name.clone().unwrap_or_default();
        let namespace = obj.meta().namespace.as_deref();
        let version = super::apply::status::<K>(&self.client, namespace, &name, status)
            .await
            .map_err(|source| StatusError {
                kind: K::kind(&()).into(),
                name: match namespace {
                    Some(ns) => format!("{ns}/{name}"),
                    None => name.clone(),
                },
                source,
            })?;
        if let Ok(v) = serde_json::to_value(status) {
            let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
            if written.len() >= MAX_ENTRIES {
                written.clear();
            }
            written.insert(uid, Written { status: v, version });
        }
        Ok(true)
    }

    /// `obj` as the API server holds it now (`None`: gone), for a decision a lagging cache
    /// must not make; what this process remembered of it is settled by the answer.
    pub async fn live(&self, obj: &K) -> Result<Option<K>, kube::Error> {
        let ar = kube::api::ApiResource::erase::<K>(&());
        let name = obj.meta().name.clone().unwrap_or_default();
        let api: kube::Api<kube::api::DynamicObject> = match obj.meta().namespace.as_deref() {
            Some(ns) => kube::Api::namespaced_with(self.client.clone(), ns, &ar),
            None => kube::Api::all_with(self.client.clone(), &ar),
        };
        let Some(found) = api.get_opt(&name).await? else {
            self.forget(obj);
            return Ok(None);
        };
        let live: K = serde_json::to_value(&found)
            .and_then(serde_json::from_value)
            .map_err(kube::Error::SerdeError)?;
        self.forget(obj);
        Ok((live.meta().uid == obj.meta().uid).then_some(live))
    }

    /// Forgets `obj` (it is being deleted, or was read live).
    pub fn forget(&self, obj: &K) {
        self.written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&Self::uid(obj));
    }
}

/// Whether a cached resourceVersion shows our write (`ours`) or a later one. Versions are
/// compared as numbers only when both are (etcd's are); otherwise only equality counts.
fn caught_up(cached: Option<&str>, ours: Option<&str>) -> bool {
    let (Some(cached), Some(ours)) = (cached, ours) else {
        return false;
    };
    if cached == ours {
        return true;
    }
    match (cached.parse::<u64>(), ours.parse::<u64>()) {
        (Ok(c), Ok(o)) => c > o,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::caught_up;

    #[test]
    fn the_cache_has_caught_up_at_our_version_or_a_later_one() {
        assert!(caught_up(Some("120"), Some("120")));
        assert!(
            caught_up(Some("121"), Some("120")),
            "someone wrote after us"
        );
        assert!(!caught_up(Some("119"), Some("120")), "the cache lags");
        assert!(!caught_up(None, Some("120")));
        assert!(!caught_up(Some("120"), None));
        assert!(caught_up(Some("abc"), Some("abc")));
        assert!(
            !caught_up(Some("abd"), Some("abc")),
            "opaque versions: only equality"
        );
    }
}
