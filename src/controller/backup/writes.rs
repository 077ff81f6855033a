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

use std::collections::{HashMap, HashSet};

use jiff::Timestamp;
use kube::Client;
use kube::ResourceExt;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
    Preconditions, PropagationPolicy,
};
use serde_json::Value;

use super::objects::{RESTORE_FIELD_MANAGER, Resolver, describe, stamped_by_baseline};
use crate::api::backup::ExistingObjects;
use crate::backup::restore::ObjectStream;

/// What one write did, or would do.
#[derive(Debug)]
pub enum Written {
    /// It created the object: its `uid` and the `resource_version` the create returned (both
    /// empty in a dry run), the undo's preconditions.
    Created {
        ar: ApiResource,
        name: String,
        uid: String,
        resource_version: String,
        /// Its creation time, by the API server's clock.
        created_at: Option<Timestamp>,
    },
    /// It overwrote an object that existed, which was `before`; `resource_version` is what the
    /// overwrite returned (the undo puts `before` back only over that version).
    Replaced {
        ar: ApiResource,
        before: Box<DynamicObject>,
        resource_version: String,
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
/// create-if-absent for Skip; for Overwrite a create when it is absent, else a server-side
/// apply conditional on the version read (so what the journal holds as `before` is what was
/// overwritten). Objects a baseline stamps are skipped, whether the backup or the namespace
/// holds them.
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
    if stamped_by_baseline(obj) {
        return Ok(Written::Skipped);
    }
    let mut body = obj.clone();
    body["metadata"]["namespace"] = Value::String(namespace.into());
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, ar);
    let dry_run = mode == Mode::DryRun;
    let versions = |o: &DynamicObject| {
        if dry_run {
            (String::new(), String::new())
        } else {
            (
                o.uid().unwrap_or_default(),
                o.resource_version().unwrap_or_default(),
            )
        }
    };
    // Absent (as far as a read can tell): created, never applied over, so an object someone
    // else creates meanwhile is not taken over (and then deleted by an undo).
    let create = |body: Value| async {
        let dynobj: DynamicObject = serde_json::from_value(body).map_err(|e| e.to_string())?;
        let params = PostParams {
            dry_run,
            ..PostParams::default()
        };
        match api.create(&params, &dynobj).await {
            Ok(after) => {
                let (uid, resource_version) = versions(&after);
                Ok(Some(Written::Created {
                    ar: ar.clone(),
                    name: name.clone(),
                    uid,
                    resource_version,
                    created_at: after.metadata.creation_timestamp.map(|t| t.0),
                }))
            }
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(None),
            Err(e) => Err(api_words(&e)),
        }
    };
    if existing == ExistingObjects::Skip {
        return Ok(create(body).await?.unwrap_or(Written::Skipped));
    }
    for _ in 0..2 {
        let Some(current) = api.get_opt(&name).await.map_err(|e| api_words(&e))? else {
            match create(body.clone()).await? {
                Some(w) => return Ok(w),
                // Created meanwhile: read it and overwrite that.
                None => continue,
            }
        };
        if current
            .labels()
            .contains_key(crate::baseline::BASELINE_LABEL)
        {
            return Ok(Written::Skipped);
        }
        let mut conditional = body.clone();
        conditional["metadata"]["resourceVersion"] =
            Value::String(current.resource_version().unwrap_or_default());
        let mut params = PatchParams::apply(RESTORE_FIELD_MANAGER).force();
        params.dry_run = dry_run;
        match api.patch(&name, &params, &Patch::Apply(conditional)).await {
            Ok(after) => {
                return Ok(Written::Replaced {
                    ar: ar.clone(),
                    before: Box::new(current),
                    resource_version: versions(&after).1,
                });
            }
            // Changed between the read and the write: read it again.
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => return Err(api_words(&e)),
        }
    }
    Err("it kept changing while the restore wrote it".into())
}

/// What the API server said of a refused request (its message, which names the object and the
/// reason), or the client's error when the request got no answer.
fn api_words(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) => status.message.clone(),
        other => other.to_string(),
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

/// Kinds whose controllers make or adopt objects of their own (Pods, ReplicaSets,
/// ControllerRevisions, Jobs, PersistentVolumeClaims): an undo deletes one of them alone
/// (orphaning), then only what it made after the restore began ([`dependents`]).
const OWNING_KINDS: &[(&str, &str)] = &[
    ("apps", "Deployment"),
    ("apps", "ReplicaSet"),
    ("apps", "StatefulSet"),
    ("apps", "DaemonSet"),
    ("batch", "Job"),
    ("batch", "CronJob"),
    ("", "ReplicationController"),
];

/// Kinds an [`OWNING_KINDS`] object's controller makes in its namespace.
const DEPENDENT_KINDS: &[(&str, &str, &str, &str)] = &[
    ("", "v1", "Pod", "pods"),
    ("apps", "v1", "ReplicaSet", "replicasets"),
    ("apps", "v1", "ControllerRevision", "controllerrevisions"),
    ("batch", "v1", "Job", "jobs"),
    ("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims"),
];

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

    /// Undoes every recorded write, last first, each only if nobody changed the object since
    /// the restore wrote it (a change made meanwhile is kept, and named as not undone):
    /// - a created object is deleted (its UID and version are preconditions). An object whose
    ///   controller makes others is deleted alone, then what that controller made after the
    ///   object was created: what it adopted (a Pod, a claim that was there before) stays;
    /// - an overwritten one is put back as it was (its spec, data, labels, annotations and
    ///   field owners); one deleted since is not created again.
    pub async fn undo(self, client: &Client, namespace: &str) -> Undone {
        let mut out = Undone::default();
        let owners: HashMap<String, Option<Timestamp>> = self
            .done
            .iter()
            .filter_map(|w| match w {
                Written::Created {
                    ar,
                    uid,
                    created_at,
                    ..
                } if owns_others(ar) => Some((uid.clone(), *created_at)),
                _ => None,
            })
            .collect();
        let mut made = if owners.is_empty() {
            Default::default()
        } else {
            dependents(client, namespace, &owners).await
        };
        for w in self.done.into_iter().rev() {
            let result = match &w {
                Written::Created {
                    ar,
                    name,
                    uid,
                    resource_version,
                    ..
                } => {
                    let orphan = owns_others(ar);
                    let deleted =
                        delete_exactly(client, namespace, ar, name, uid, resource_version, orphan)
                            .await;
                    match (deleted, made.remove(uid)) {
                        (Ok(()), Some(children)) => {
                            let mut left = Vec::new();
                            for (car, cname, cuid) in children {
                                if let Err(e) = delete_exactly(
                                    client, namespace, &car, &cname, &cuid, "", false,
                                )
                                .await
                                {
                                    left.push(e);
                                }
                            }
                            if left.is_empty() {
                                Ok(())
                            } else {
                                Err(left.join("; "))
                            }
                        }
                        (r, _) => r,
                    }
                }
                Written::Replaced {
                    ar,
                    before,
                    resource_version,
                } => put_back(client, namespace, ar, before, resource_version).await,
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

/// Whether an object created at `created` was made once its owner, created at `owner`, existed
/// (times of the API server, to the second: an object of the same second counts as made after).
fn made_after(created: Option<Timestamp>, owner: Option<Timestamp>) -> bool {
    matches!((created, owner), (Some(c), Some(o)) if c >= o)
}

fn owns_others(ar: &ApiResource) -> bool {
    OWNING_KINDS
        .iter()
        .any(|(g, k)| *g == ar.group && *k == ar.kind)
}

/// The objects of [`DEPENDENT_KINDS`] in `namespace` that the controller of one of `owners`
/// (UID and creation time) made once that owner existed, by owner UID: not what it adopted. A
/// kind the tenant may not list is passed over (its objects stay, orphaned: nothing is deleted
/// that the restore cannot tell it made).
async fn dependents(
    client: &Client,
    namespace: &str,
    owners: &HashMap<String, Option<Timestamp>>,
) -> HashMap<String, Vec<(ApiResource, String, String)>> {
    let mut out: HashMap<String, Vec<(ApiResource, String, String)>> = HashMap::new();
    for (group, version, kind, plural) in DEPENDENT_KINDS {
        let gvk = kube::api::GroupVersionKind::gvk(group, version, kind);
        let ar = ApiResource::from_gvk_with_plural(&gvk, plural);
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &ar);
        let Ok(list) = api.list(&ListParams::default()).await else {
            continue;
        };
        for o in list.items {
            let created = o.metadata.creation_timestamp.as_ref().map(|t| t.0);
            let owner = o.metadata.owner_references.iter().flatten().find(|r| {
                owners
                    .get(&r.uid)
                    .is_some_and(|owner_at| made_after(created, *owner_at))
            });
            if let Some(owner) = owner {
                out.entry(owner.uid.clone()).or_default().push((
                    ar.clone(),
                    o.name_any(),
                    o.uid().unwrap_or_default(),
                ));
            }
        }
    }
    out
}

/// Deletes the object of `uid` (and of `resource_version`, when given) only: one gone already
/// is fine; one changed since is left, and said so.
async fn delete_exactly(
    client: &Client,
    namespace: &str,
    ar: &ApiResource,
    name: &str,
    uid: &str,
    resource_version: &str,
    orphan: bool,
) -> Result<(), String> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, ar);
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(uid.to_string()),
            resource_version: (!resource_version.is_empty()).then(|| resource_version.to_string()),
        }),
        propagation_policy: Some(if orphan {
            PropagationPolicy::Orphan
        } else {
            PropagationPolicy::Background
        }),
        ..DeleteParams::default()
    };
    let what = || format!("{}/{} {name}", ar.api_version, ar.kind);
    match api.delete(name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Err(format!(
            "{}: changed since the restore wrote it; kept",
            what()
        )),
        Err(e) => Err(format!("{}: {e}", what())),
    }
}

/// Puts an overwritten object back as it was before the restore: a replace of its last state,
/// conditional on the version the restore's write left (so a change made since is kept, and
/// said so). One deleted since is not created again.
async fn put_back(
    client: &Client,
    namespace: &str,
    ar: &ApiResource,
    before: &DynamicObject,
    resource_version: &str,
) -> Result<(), String> {
    let name = before.name_any();
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, ar);
    let what = || format!("{}/{} {name}", ar.api_version, ar.kind);
    let mut prior = before.clone();
    prior.metadata.resource_version = Some(resource_version.to_string());
    match api.replace(&name, &PostParams::default(), &prior).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Err(format!(
            "{}: changed since the restore wrote it; kept as it is now",
            what()
        )),
        Err(kube::Error::Api(e)) if e.code == 404 => Err(format!(
            "{}: deleted since the restore wrote it; not created again",
            what()
        )),
        Err(e) => Err(format!("{}: {e}", what())),
    }
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
