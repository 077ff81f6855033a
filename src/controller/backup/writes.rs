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

use crate::controller::kit::apply::Writer;
use std::collections::{HashMap, HashSet};

use jiff::Timestamp;
use kube::Client;
use kube::ResourceExt;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
    Preconditions, PropagationPolicy,
};
use serde_json::Value;

use super::objects::{ResolveError, Resolver, describe, stamped_by_baseline};
use crate::api::backup::ExistingObjects;
use crate::backup::restore::ObjectStream;

/// What one write did, or would do.
#[derive(Debug)]
pub enum Written {
    /// It created the object: its `uid` (empty in a dry run), the undo's precondition.
    Created {
        ar: ApiResource,
        name: String,
        uid: String,
        /// Its creation time, by the API server's clock.
        created_at: Option<Timestamp>,
    },
    /// It overwrote an object that existed, which was `before`; `after` is what the overwrite
    /// left (the undo puts `before` back only if nobody changed the object since).
    Replaced {
        ar: ApiResource,
        before: Box<DynamicObject>,
        after: Version,
    },
    /// It left the object alone: it existed (Skip), or a baseline stamps it.
    Skipped,
}

/// What an object was after a write: its `metadata.generation` (changes to what it asks for,
/// not to its status) where the kind keeps one, else its `resourceVersion`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Version {
    Generation(i64),
    Resource(String),
}

impl Version {
    pub fn of(o: &DynamicObject) -> Self {
        match o.metadata.generation {
            Some(g) => Self::Generation(g),
            None => Self::Resource(o.resource_version().unwrap_or_default()),
        }
    }
}

/// Why one object could not be written (or would not be, in a dry run). Its text is what a
/// Restore's `status.errors` shows after the object's name: the API server's own words for a
/// refusal.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The API server refused the request (its message, which names the object and the
    /// reason), or the request got no answer (the client's error).
    #[error("{}", api_words(.0))]
    Api(kube::Error),
    /// Every conditional write met a newer version.
    #[error("it kept changing while the restore wrote it")]
    KeptChanging,
    /// The backup's object is not a Kubernetes object.
    #[error("{0}")]
    Body(serde_json::Error),
    /// Its kind cannot be written here.
    #[error(transparent)]
    Unresolved(#[from] ResolveError),
}

impl WriteError {
    /// Short stable category.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Api(_) => "WriteRefused",
            Self::KeptChanging => "KeptChanging",
            Self::Body(_) => "InvalidObject",
            Self::Unresolved(e) => e.category(),
        }
    }
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
    writer: &Writer,
    ar: &ApiResource,
    namespace: &str,
    obj: &Value,
    existing: ExistingObjects,
    mode: Mode,
) -> Result<Written, WriteError> {
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if stamped_by_baseline(obj) {
        return Ok(Written::Skipped);
    }
    let mut body = obj.clone();
    body["metadata"]["namespace"] = Value::String(namespace.into());
    let dry_run = mode == Mode::DryRun;
    let uid_of = |o: &DynamicObject| {
        if dry_run {
            String::new()
        } else {
            o.uid().unwrap_or_default()
        }
    };
    // Absent (as far as a read can tell): created, never applied over, so an object someone
    // else creates meanwhile is not taken over (and then deleted by an undo).
    let create = |body: Value| async {
        let dynobj: DynamicObject = serde_json::from_value(body).map_err(WriteError::Body)?;
        let created = writer
            .create_object(ar, namespace, &dynobj, dry_run)
            .await
            .map_err(WriteError::Api)?;
        Ok::<_, WriteError>(created.map(|after| Written::Created {
            ar: ar.clone(),
            name: name.clone(),
            uid: uid_of(&after),
            created_at: after.metadata.creation_timestamp.map(|t| t.0),
        }))
    };
    if existing == ExistingObjects::Skip {
        return Ok(create(body).await?.unwrap_or(Written::Skipped));
    }
    for _ in 0..2 {
        let current = writer
            .get(ar, namespace, &name)
            .await
            .map_err(WriteError::Api)?;
        let Some(current) = current else {
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
        let applied = writer
            .apply_returning(ar, namespace, &name, &conditional, dry_run)
            .await
            .map_err(WriteError::Api)?;
        match applied {
            Some(after) => {
                return Ok(Written::Replaced {
                    ar: ar.clone(),
                    before: Box::new(current),
                    after: Version::of(&after),
                });
            }
            // Changed between the read and the write: read it again.
            None => continue,
        }
    }
    Err(WriteError::KeptChanging)
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
    writer: &Writer,
    resolver: &mut Resolver,
    namespace: &str,
    batch: Vec<Value>,
    existing: ExistingObjects,
    mode: Mode,
) -> Vec<(Value, Result<Written, WriteError>)> {
    use futures::StreamExt as _;
    let Some(first) = batch.first() else {
        return Vec::new();
    };
    let api_version = first["apiVersion"].as_str().unwrap_or_default();
    let kind = first["kind"].as_str().unwrap_or_default();
    let ar = match resolver.resource(writer.client(), api_version, kind).await {
        Ok(ar) => ar,
        Err(e) => {
            return batch
                .into_iter()
                .map(|o| (o, Err(WriteError::Unresolved(e.clone()))))
                .collect();
        }
    };
    futures::stream::iter(batch)
        .map(|obj| {
            let ar = &ar;
            async move {
                let r = write_one(writer, ar, namespace, &obj, existing, mode).await;
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
    /// Writes that could not be undone, each with its reasons.
    pub left: Vec<NotUndone>,
}

/// Why one step of undoing a write failed; its text names the object.
#[derive(Debug, thiserror::Error)]
pub enum UndoError {
    /// An object a restored owner adopted could not be released from it.
    #[error("{}/{} {name} (adopted by {owner}): {}", .ar.api_version, .ar.kind, api_words(.error))]
    Release {
        ar: ApiResource,
        name: String,
        /// The restored owner's UID.
        owner: String,
        error: kube::Error,
    },
    /// The API server refused deleting a created object or putting back an overwritten one.
    #[error("{}/{} {name}: {}", .ar.api_version, .ar.kind, api_words(.error))]
    Api {
        ar: ApiResource,
        name: String,
        error: kube::Error,
    },
    #[error(
        "{}/{} {name}: deleted since the restore wrote it; not created again",
        .ar.api_version,
        .ar.kind
    )]
    DeletedSince { ar: ApiResource, name: String },
    #[error(
        "{}/{} {name}: changed since the restore wrote it; kept as it is now",
        .ar.api_version,
        .ar.kind
    )]
    ChangedSince { ar: ApiResource, name: String },
    #[error(
        "{}/{} {name}: changed while it was put back; kept as it is now",
        .ar.api_version,
        .ar.kind
    )]
    ChangedWhilePutBack { ar: ApiResource, name: String },
}

impl UndoError {
    /// Short stable category.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Release { .. } => "ReleaseFailed",
            Self::Api { .. } => "UndoRefused",
            Self::DeletedSince { .. } => "DeletedSince",
            Self::ChangedSince { .. } | Self::ChangedWhilePutBack { .. } => "ChangedSince",
        }
    }
}

/// One write that could not be undone: why, one reason per step that failed (releasing
/// adopted objects, then deleting or putting back), joined by `; `.
#[derive(Debug)]
pub struct NotUndone(pub Vec<UndoError>);

impl std::fmt::Display for NotUndone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Kinds whose controllers make or adopt objects of their own (Pods, ReplicaSets,
/// ControllerRevisions, Jobs, PersistentVolumeClaims): before an undo deletes one, what it
/// adopted is released ([`adopted`]), so the garbage collector deletes only what it made.
const OWNING_KINDS: &[(&str, &str)] = &[
    ("apps", "Deployment"),
    ("apps", "ReplicaSet"),
    ("apps", "StatefulSet"),
    ("apps", "DaemonSet"),
    ("batch", "Job"),
    ("batch", "CronJob"),
    ("", "ReplicationController"),
];

/// Kinds an [`OWNING_KINDS`] object's controller makes or adopts in its namespace.
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

    /// Undoes every recorded write, last first:
    /// - a created object is deleted (its UID a precondition), with what its controller made
    ///   since. What that controller adopted (a claim or a Pod that was there before it) is
    ///   released first, so it stays;
    /// - an overwritten one is put back as it was (its spec, data, labels, annotations and field
    ///   owners), unless someone changed what it asks for since the restore wrote it (its
    ///   generation, or for kinds without one its version): that change is kept, and named. One
    ///   deleted since is not created again.
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
        let mut adopted = if owners.is_empty() {
            Default::default()
        } else {
            adopted(client, namespace, &owners).await
        };
        for w in self.done.into_iter().rev() {
            let result = match &w {
                Written::Created { ar, name, uid, .. } => {
                    let mut left = Vec::new();
                    for a in adopted.remove(uid).unwrap_or_default() {
                        if let Err(e) = a.release(client, namespace, uid).await {
                            left.push(e);
                        }
                    }
                    match delete_created(client, namespace, ar, name, uid).await {
                        Ok(()) if left.is_empty() => Ok(()),
                        Ok(()) => Err(NotUndone(left)),
                        Err(e) => Err(NotUndone(vec![e])),
                    }
                }
                Written::Replaced { ar, before, after } => {
                    put_back(client, namespace, ar, before, after)
                        .await
                        .map_err(|e| NotUndone(vec![e]))
                }
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

fn owns_others(ar: &ApiResource) -> bool {
    OWNING_KINDS
        .iter()
        .any(|(g, k)| *g == ar.group && *k == ar.kind)
}

/// An object that was there before a restored owner adopted it.
struct Adopted {
    ar: ApiResource,
    name: String,
    resource_version: String,
    /// Its owner references without the restored owner's.
    others: Vec<serde_json::Value>,
}

impl Adopted {
    /// Takes the restored owner's reference off it, so deleting the owner leaves it be.
    async fn release(
        &self,
        client: &Client,
        namespace: &str,
        owner: &str,
    ) -> Result<(), UndoError> {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &self.ar);
        let patch = serde_json::json!({"metadata": {
            "resourceVersion": self.resource_version,
            "ownerReferences": self.others,
        }});
        match api
            .patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(error) => Err(UndoError::Release {
                ar: self.ar.clone(),
                name: self.name.clone(),
                owner: owner.into(),
                error,
            }),
        }
    }
}

/// The objects of [`DEPENDENT_KINDS`] in `namespace` that one of `owners` (UID and creation
/// time) adopted: they name it as owner but were there before it, by owner UID. A kind the
/// tenant may not list is passed over.
async fn adopted(
    client: &Client,
    namespace: &str,
    owners: &HashMap<String, Option<Timestamp>>,
) -> HashMap<String, Vec<Adopted>> {
    let mut out: HashMap<String, Vec<Adopted>> = HashMap::new();
    for (group, version, kind, plural) in DEPENDENT_KINDS {
        let gvk = kube::api::GroupVersionKind::gvk(group, version, kind);
        let ar = ApiResource::from_gvk_with_plural(&gvk, plural);
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &ar);
        let Ok(list) = api.list(&ListParams::default()).await else {
            continue;
        };
        for o in list.items {
            let created = o.metadata.creation_timestamp.as_ref().map(|t| t.0);
            let refs = o.metadata.owner_references.clone().unwrap_or_default();
            for r in &refs {
                let Some(owner_at) = owners.get(&r.uid) else {
                    continue;
                };
                if made_before(created, *owner_at) {
                    out.entry(r.uid.clone()).or_default().push(Adopted {
                        ar: ar.clone(),
                        name: o.name_any(),
                        resource_version: o.resource_version().unwrap_or_default(),
                        others: refs
                            .iter()
                            .filter(|x| x.uid != r.uid)
                            .filter_map(|x| serde_json::to_value(x).ok())
                            .collect(),
                    });
                }
            }
        }
    }
    out
}

/// Whether an object created at `created` was there before its owner, created at `owner`
/// (times of the API server, to the second: the same second counts as made by the owner).
fn made_before(created: Option<Timestamp>, owner: Option<Timestamp>) -> bool {
    matches!((created, owner), (Some(c), Some(o)) if c < o)
}

/// Deletes the object the restore created (of `uid` only), with what its controller made (the
/// garbage collector's background deletion); one gone already is fine.
async fn delete_created(
    client: &Client,
    namespace: &str,
    ar: &ApiResource,
    name: &str,
    uid: &str,
) -> Result<(), UndoError> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, ar);
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(uid.to_string()),
            resource_version: None,
        }),
        propagation_policy: Some(PropagationPolicy::Background),
        ..DeleteParams::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(error) => Err(UndoError::Api {
            ar: ar.clone(),
            name: name.into(),
            error,
        }),
    }
}

/// Puts an overwritten object back as it was before the restore, unless what it asks for
/// changed since the restore's write left it at `after` (a controller's status writes are not
/// such a change). One deleted since is not created again.
async fn put_back(
    client: &Client,
    namespace: &str,
    ar: &ApiResource,
    before: &DynamicObject,
    after: &Version,
) -> Result<(), UndoError> {
    let name = before.name_any();
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, ar);
    let (ar, name) = (ar.clone(), name);
    let current = match api.get_opt(&name).await {
        Ok(Some(c)) => c,
        Ok(None) => return Err(UndoError::DeletedSince { ar, name }),
        Err(error) => return Err(UndoError::Api { ar, name, error }),
    };
    if Version::of(&current) != *after {
        return Err(UndoError::ChangedSince { ar, name });
    }
    let mut prior = before.clone();
    prior.metadata.resource_version = current.resource_version();
    match api.replace(&name, &PostParams::default(), &prior).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            Err(UndoError::ChangedWhilePutBack { ar, name })
        }
        Err(error) => Err(UndoError::Api { ar, name, error }),
    }
}

/// The first refusals of a dry run, each naming its object.
pub fn refusal(obj: &Value, reason: &WriteError) -> String {
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
    fn write_errors_show_the_api_servers_words() {
        let refused = WriteError::Api(kube::Error::Api(Box::new(
            serde_json::from_value(json!({"code": 403, "reason": "Forbidden",
                "message": "exceeded quota: q, requested: configmaps=1"}))
            .unwrap(),
        )));
        assert_eq!(
            refused.to_string(),
            "exceeded quota: q, requested: configmaps=1"
        );
        assert_eq!(refused.category(), "WriteRefused");
        let obj = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}});
        assert_eq!(
            refusal(&obj, &refused),
            "v1/ConfigMap c: exceeded quota: q, requested: configmaps=1"
        );
        assert_eq!(
            WriteError::KeptChanging.to_string(),
            "it kept changing while the restore wrote it"
        );
        let unresolved = WriteError::from(ResolveError::ClusterScoped {
            api_version: "rbac.authorization.k8s.io/v1".into(),
            kind: "ClusterRole".into(),
        });
        assert_eq!(unresolved.category(), "ClusterScopedKind");
        assert_eq!(
            unresolved.to_string(),
            "rbac.authorization.k8s.io/v1/ClusterRole is cluster-scoped: a restore writes only into its namespace"
        );
    }

    #[test]
    fn what_is_not_undone_names_each_object() {
        let ar = ApiResource::erase::<k8s_openapi::api::apps::v1::Deployment>(&());
        let pods = ApiResource::erase::<k8s_openapi::api::core::v1::Pod>(&());
        let api = || {
            kube::Error::Api(Box::new(
                serde_json::from_value(
                    json!({"code": 403, "reason": "Forbidden", "message": "no"}),
                )
                .unwrap(),
            ))
        };
        let left = NotUndone(vec![
            UndoError::Release {
                ar: pods,
                name: "p".into(),
                owner: "u1".into(),
                error: api(),
            },
            UndoError::Api {
                ar: ar.clone(),
                name: "d".into(),
                error: api(),
            },
        ]);
        assert_eq!(
            left.to_string(),
            "v1/Pod p (adopted by u1): no; apps/v1/Deployment d: no"
        );
        for (e, category, text) in [
            (
                UndoError::DeletedSince {
                    ar: ar.clone(),
                    name: "d".into(),
                },
                "DeletedSince",
                "apps/v1/Deployment d: deleted since the restore wrote it; not created again",
            ),
            (
                UndoError::ChangedSince {
                    ar: ar.clone(),
                    name: "d".into(),
                },
                "ChangedSince",
                "apps/v1/Deployment d: changed since the restore wrote it; kept as it is now",
            ),
            (
                UndoError::ChangedWhilePutBack {
                    ar: ar.clone(),
                    name: "d".into(),
                },
                "ChangedSince",
                "apps/v1/Deployment d: changed while it was put back; kept as it is now",
            ),
        ] {
            assert_eq!(e.category(), category);
            assert_eq!(e.to_string(), text);
        }
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
