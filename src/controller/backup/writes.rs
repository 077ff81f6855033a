//! A restore's writes as one unit: every object is first written as a server-side dry run, in
//! restore order, and nothing is written unless the whole set would be accepted; then the
//! objects are written, each one journaled (created, or what it replaced), so that a write
//! that still fails (a quota filled part-way, an object changed meanwhile) undoes every write
//! before it: created objects are deleted, replaced ones put back as they were.
//!
//! A dry run cannot see the objects the restore creates before it: a RoleBinding to a Role of
//! the same backup, or a Pod of a ServiceAccount of the same backup, is refused as "not found"
//! by the dry run and accepted by the write. A dry-run refusal that names an object the restore
//! creates earlier is therefore left to the write to decide ([`waits_on_restored`]); the
//! journal undoes the rest if the write fails after all.

use std::collections::HashSet;

use kube::Client;
use kube::ResourceExt;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams, Preconditions,
    PropagationPolicy,
};
use serde_json::Value;

use super::objects::{RESTORE_FIELD_MANAGER, Resolver, describe, stamped_by_baseline};
use crate::api::backup::ExistingObjects;
use crate::backup::restore::ObjectStream;

/// What one write did, or would do.
#[derive(Debug)]
pub enum Written {
    /// It created the object (`uid` is empty in a dry run).
    Created {
        ar: ApiResource,
        name: String,
        uid: String,
    },
    /// It overwrote an object that existed, which was `before`.
    Replaced {
        ar: ApiResource,
        before: Box<DynamicObject>,
    },
    /// It left the object alone: it existed (Skip), or a baseline stamps it.
    Skipped,
}

/// Whether a write is real or a server-side dry run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    DryRun,
    Write,
}

/// Writes (or dry-runs) one restored object into `namespace` with `client` (the tenant's):
/// server-side apply for Overwrite, create-if-absent for Skip. Objects a baseline stamps are
/// skipped, whether the backup or the namespace holds them.
pub async fn write_one(
    client: &Client,
    ar: &ApiResource,
    namespace: &str,
    obj: &Value,
    existing: ExistingObjects,
    mode: Mode,
) -> Result<Written, String> {
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let ar = ar.clone();
    if stamped_by_baseline(obj) {
        return Ok(Written::Skipped);
    }
    let mut body = obj.clone();
    body["metadata"]["namespace"] = Value::String(namespace.into());
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &ar);
    let dry_run = mode == Mode::DryRun;
    match existing {
        ExistingObjects::Overwrite => {
            let current = api.get_opt(&name).await.map_err(|e| e.to_string())?;
            if current
                .as_ref()
                .is_some_and(|c| c.labels().contains_key(crate::baseline::BASELINE_LABEL))
            {
                return Ok(Written::Skipped);
            }
            let mut params = PatchParams::apply(RESTORE_FIELD_MANAGER).force();
            params.dry_run = dry_run;
            let after = api
                .patch(&name, &params, &Patch::Apply(body))
                .await
                .map_err(|e| e.to_string())?;
            Ok(match current {
                Some(before) => Written::Replaced {
                    ar,
                    before: Box::new(before),
                },
                None => Written::Created {
                    ar,
                    name,
                    uid: after.uid().filter(|_| !dry_run).unwrap_or_default(),
                },
            })
        }
        ExistingObjects::Skip => {
            let dynobj: DynamicObject = serde_json::from_value(body).map_err(|e| e.to_string())?;
            let params = PostParams {
                dry_run,
                ..PostParams::default()
            };
            match api.create(&params, &dynobj).await {
                Ok(after) => Ok(Written::Created {
                    ar,
                    name,
                    uid: after.uid().filter(|_| !dry_run).unwrap_or_default(),
                }),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(Written::Skipped),
                Err(e) => Err(e.to_string()),
            }
        }
    }
}

/// Writes of one kind run at once (a kind's objects do not refer to each other; kinds are
/// written one after the other, in restore order).
pub const WRITES_IN_FLIGHT: usize = 8;
/// Objects of one kind taken from the backup at a time.
pub const BATCH: usize = 64;

/// Objects of a backup in batches of one kind ([`BATCH`] at most), in restore order.
pub struct Batches<'s> {
    stream: &'s mut ObjectStream,
    wanted: Box<dyn Fn(&Value) -> bool + Send + Sync + 's>,
    pending: Option<Value>,
}

impl<'s> Batches<'s> {
    pub fn new(
        stream: &'s mut ObjectStream,
        wanted: impl Fn(&Value) -> bool + Send + Sync + 's,
    ) -> Self {
        Self {
            stream,
            wanted: Box::new(wanted),
            pending: None,
        }
    }

    /// The next batch: wanted objects of one apiVersion and kind; `None` after the last.
    pub async fn next(&mut self) -> Option<Vec<Value>> {
        let mut batch: Vec<Value> = self.pending.take().into_iter().collect();
        while batch.len() < BATCH {
            let Some(obj) = self.stream.next().await else {
                break;
            };
            if !(self.wanted)(&obj) {
                continue;
            }
            let same = batch.first().is_none_or(|first| {
                first["kind"] == obj["kind"] && first["apiVersion"] == obj["apiVersion"]
            });
            if !same {
                self.pending = Some(obj);
                break;
            }
            batch.push(obj);
        }
        (!batch.is_empty()).then_some(batch)
    }
}

/// Writes (or dry-runs) one batch of one kind, [`WRITES_IN_FLIGHT`] at once: each object with
/// its outcome, in the batch's order. A kind that cannot be resolved (not served, or
/// cluster-scoped) fails every object of the batch.
pub async fn write_batch(
    client: &Client,
    resolver: &mut Resolver,
    namespace: &str,
    batch: Vec<Value>,
    existing: ExistingObjects,
    mode: Mode,
) -> Vec<(Value, Result<Written, String>)> {
    use futures::StreamExt as _;
    let Some(first) = batch.first() else {
        return Vec::new();
    };
    let api_version = first["apiVersion"].as_str().unwrap_or_default();
    let kind = first["kind"].as_str().unwrap_or_default();
    let ar = match resolver.resource(client, api_version, kind).await {
        Ok(ar) => ar,
        Err(e) => return batch.into_iter().map(|o| (o, Err(e.clone()))).collect(),
    };
    futures::stream::iter(batch)
        .map(|obj| {
            let ar = &ar;
            async move {
                let r = write_one(client, ar, namespace, &obj, existing, mode).await;
                (obj, r)
            }
        })
        .buffered(WRITES_IN_FLIGHT)
        .collect()
        .await
}

/// The objects a restore writes, by kind and name: what a later object's dry run may find
/// missing.
#[derive(Debug, Default)]
pub struct Planned(HashSet<(String, String)>);

impl Planned {
    pub fn add(&mut self, obj: &Value) {
        self.0.insert((
            obj["kind"].as_str().unwrap_or_default().to_string(),
            obj["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        ));
    }
}

/// Whether a dry-run refusal says that an object the restore writes before this one is not
/// there yet (the API server's words: `role.rbac.authorization.k8s.io "reader" not found`,
/// `service account ns/builder was not found`): the write decides, not the dry run.
pub fn waits_on_restored(message: &str, planned: &Planned) -> bool {
    let m = message.to_ascii_lowercase();
    if !m.contains("not found") {
        return false;
    }
    planned.0.iter().any(|(kind, name)| {
        let kind = kind.to_ascii_lowercase();
        let spaced = spaced_kind(&kind);
        let names_kind = m.contains(&kind) || m.contains(&spaced);
        let names_object = m.contains(&format!("\"{name}\"")) || m.contains(&format!("/{name} "));
        names_kind && names_object
    })
}

/// `ServiceAccount` as messages write it: `service account` (from the lower-cased kind, with
/// the word boundaries of the few kinds whose messages split them).
fn spaced_kind(lower: &str) -> String {
    match lower {
        "serviceaccount" => "service account".into(),
        "persistentvolumeclaim" => "persistent volume claim".into(),
        other => other.into(),
    }
}

/// The writes a restore made, in order, to undo them if a later one fails.
#[derive(Debug, Default)]
pub struct Journal {
    done: Vec<Written>,
}

/// What undoing a restore's writes did.
#[derive(Debug, Default)]
pub struct Undone {
    pub undone: i64,
    /// Writes that could not be undone, each with its reason.
    pub left: Vec<String>,
}

impl Journal {
    pub fn record(&mut self, w: Written) {
        if !matches!(w, Written::Skipped) {
            self.done.push(w);
        }
    }

    /// Writes recorded.
    pub fn len(&self) -> usize {
        self.done.len()
    }

    pub fn is_empty(&self) -> bool {
        self.done.is_empty()
    }

    /// Undoes every recorded write, last first: a created object is deleted (only the one the
    /// restore created: its UID is a precondition), a replaced one is put back as it was (its
    /// spec, data, labels, annotations and field owners).
    pub async fn undo(self, client: &Client, namespace: &str) -> Undone {
        let mut out = Undone::default();
        for w in self.done.into_iter().rev() {
            let result = match &w {
                Written::Created { ar, name, uid } => {
                    let api: Api<DynamicObject> =
                        Api::namespaced_with(client.clone(), namespace, ar);
                    let params = DeleteParams {
                        preconditions: Some(Preconditions {
                            uid: Some(uid.clone()),
                            resource_version: None,
                        }),
                        propagation_policy: Some(PropagationPolicy::Background),
                        ..DeleteParams::default()
                    };
                    match api.delete(name, &params).await {
                        Ok(_) => Ok(()),
                        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
                        Err(e) => Err(format!("{}/{} {name}: {e}", ar.api_version, ar.kind)),
                    }
                }
                Written::Replaced { ar, before } => put_back(client, namespace, ar, before).await,
                Written::Skipped => Ok(()),
            };
            match result {
                Ok(()) => out.undone += 1,
                Err(e) => out.left.push(e),
            }
        }
        out
    }
}

/// Puts an overwritten object back as it was before the restore: a replace of its last state,
/// made conditional on the current one (so a change made since is not lost silently).
async fn put_back(
    client: &Client,
    namespace: &str,
    ar: &ApiResource,
    before: &DynamicObject,
) -> Result<(), String> {
    let name = before.name_any();
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, ar);
    let what = || format!("{}/{} {name}", ar.api_version, ar.kind);
    let current = api
        .get_opt(&name)
        .await
        .map_err(|e| format!("{}: {e}", what()))?;
    let mut prior = before.clone();
    match current {
        Some(c) => prior.metadata.resource_version = c.resource_version(),
        None => {
            prior.metadata.resource_version = None;
            prior.metadata.uid = None;
            prior.metadata.creation_timestamp = None;
            return api
                .create(&PostParams::default(), &prior)
                .await
                .map(|_| ())
                .map_err(|e| format!("{}: {e}", what()));
        }
    }
    api.replace(&name, &PostParams::default(), &prior)
        .await
        .map(|_| ())
        .map_err(|e| format!("{}: {e}", what()))
}

/// The first refusals of a dry run, each naming its object.
pub fn refusal(obj: &Value, reason: &str) -> String {
    format!("{}: {reason}", describe(obj))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn planned(objs: &[(&str, &str)]) -> Planned {
        let mut p = Planned::default();
        for (kind, name) in objs {
            p.add(&json!({"kind": kind, "metadata": {"name": name}}));
        }
        p
    }

    #[test]
    fn a_refusal_naming_an_object_the_restore_writes_first_waits_for_the_write() {
        let p = planned(&[("Role", "reader"), ("ServiceAccount", "builder")]);
        assert!(waits_on_restored(
            r#"RoleBinding.rbac.authorization.k8s.io "read" is invalid: role.rbac.authorization.k8s.io "reader" not found"#,
            &p
        ));
        assert!(waits_on_restored(
            "pods \"p\" is forbidden: error looking up service account t/builder: serviceaccount \"builder\" not found",
            &p
        ));
        assert!(waits_on_restored(
            "pods \"p\" is forbidden: service account t/builder was not found, retry after the service account is created",
            &p
        ));
    }

    #[test]
    fn other_refusals_are_refusals() {
        let p = planned(&[("Role", "reader")]);
        // Another object of that name, another kind, or not a missing object at all.
        assert!(!waits_on_restored(
            r#"clusterroles.rbac.authorization.k8s.io "admin2" not found"#,
            &p
        ));
        assert!(!waits_on_restored(r#"configmaps "reader" not found"#, &p));
        assert!(!waits_on_restored(
            r#"exceeded quota: q, requested: configmaps=1, used: configmaps=2, limited: configmaps=2"#,
            &p
        ));
        assert!(!waits_on_restored(
            r#"role.rbac.authorization.k8s.io "reader" not found"#,
            &Planned::default()
        ));
    }
}
