//! The act stage: the writes a check decided on, and their typed results. Server-side applies of
//! missing or drifted objects and Pod Security labels ([`apply`]), the dry-run of a new revision
//! ([`dry_run`]), the prune of what the baseline no longer renders and the release of its Pod
//! Security labels ([`prune`]), the PolicyReports ([`write_reports`]), and the finalizer's
//! removal of everything a deleted baseline stamped ([`cleanup`]).

use crate::controller::kit::apply::{ApplyError, Writer};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use tracing::{info, warn};

use super::cache::StampedKind;
use super::classify::Write;
use super::observe::{self, Kinds};
use super::plan::{self, NamespaceInfo};
use super::rendered::RenderedSet;
use super::status::Finding;
use super::{Error, State, is_report, policy_report, scope};
use crate::api::SecurityBaseline;
use crate::api::baseline::BaselineMode;
use crate::api::policy_report::{POLICY_REPORT_API_VERSION, POLICY_REPORT_KIND, PolicyReport};
use crate::baseline::{BASELINE_LABEL, DEFAULT_SERVICE_ACCOUNT, ObjectKey, RenderedObject};

/// Writes in flight at once during a check.
const WRITE_CONCURRENCY: usize = 32;
/// How long the controller waits before it looks again for a PolicyReport CRD it did not find.
const REPORT_CRD_RETRY: Duration = Duration::from_secs(300);

/// What became of one write.
#[derive(Clone, Debug)]
pub enum Acted<'a> {
    Applied(Write<'a>),
    Failed { write: Write<'a>, message: String },
}

/// Applies `writes`, concurrently; the results in the order the writes finished.
pub async fn apply<'a>(client: &kube::Client, writes: Vec<Write<'a>>) -> Vec<Acted<'a>> {
    // Addressed by position: a stream of borrowing items trips the compiler's Send check.
    let done: Vec<(usize, Result<(), ApplyError>)> = futures::stream::iter(0..writes.len())
        .map(|i| {
            let w = &writes[i];
            async move {
                let r = match w {
                    Write::Object {
                        object, resource, ..
                    } => {
                        Writer::operator(client)
                            .apply_text(resource, object.text(), false)
                            .await
                    }
                    Write::Labels { body, .. } => {
                        Writer::operator(client)
                            .apply(&namespace_resource(), body, false)
                            .await
                    }
                };
                (i, r)
            }
        })
        .buffer_unordered(WRITE_CONCURRENCY)
        .collect()
        .await;
    let mut writes: Vec<Option<Write<'a>>> = writes.into_iter().map(Some).collect();
    done.into_iter()
        .filter_map(|(i, r)| {
            let write = writes[i].take()?;
            Some(match r {
                Ok(()) => Acted::Applied(write),
                Err(e) => Acted::Failed {
                    write,
                    message: e.message().to_string(),
                },
            })
        })
        .collect()
}

/// An object of a new revision the API server refused in the dry-run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// `Kind/name`.
    pub object: String,
    pub namespace: String,
    pub message: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} in {}: {}", self.object, self.namespace, self.message)
    }
}

/// Dry-runs every object of `set`; returns the refusals.
pub async fn dry_run(client: &kube::Client, set: &RenderedSet, kinds: &Kinds) -> Vec<Refusal> {
    // (object, kind, whether the cache holds the object), addressed by position below.
    let mut jobs = Vec::new();
    for o in set.objects() {
        if let Some(Ok(k)) = kinds.get(&(o.api_version.clone(), o.kind.clone())) {
            let exists = k.get(&o.namespace, &o.name).is_some();
            jobs.push((o, k.resource.clone(), exists));
        }
    }
    futures::stream::iter(0..jobs.len())
        .map(|i| {
            let (o, resource, exists) = (jobs[i].0, &jobs[i].1, jobs[i].2);
            async move {
                // A missing object is validated as the create it will be; an existing one (or
                // one the cache had not seen yet) as the apply that updates it.
                let created = if exists {
                    Ok(false)
                } else {
                    Writer::operator(client)
                        .create_text(resource, &o.namespace, &o.name, o.text(), true)
                        .await
                };
                let result = match created {
                    Ok(true) => Ok(()),
                    Ok(false) => {
                        Writer::operator(client)
                            .apply_text(resource, o.text(), true)
                            .await
                    }
                    Err(e) => Err(e),
                };
                result.err().map(|e| Refusal {
                    object: o.display_name(),
                    namespace: o.namespace.clone(),
                    message: e.message().to_string(),
                })
            }
        })
        .buffer_unordered(WRITE_CONCURRENCY)
        .filter_map(|r| async move { r })
        .collect()
        .await
}

/// What a prune did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pruned {
    /// Deleted (or, for an adopted object, its fields released): no longer rendered.
    Deleted(ObjectKey),
    /// The baseline's Pod Security labels taken off a namespace, `put_back` restored.
    Released {
        namespace: String,
        put_back: BTreeMap<String, String>,
    },
    Failed {
        namespace: String,
        /// `Kind/name`.
        object: String,
        message: String,
    },
}

/// Removes what baseline `name` stamped and no longer renders in `scope` (not its
/// PolicyReports), and takes its Pod Security labels off the `namespaces` it no longer sets
/// them in, putting back the labels found there.
pub(super) async fn prune(
    st: &State,
    name: &str,
    set: &RenderedSet,
    scope: &scope::Scope,
    namespaces: &[NamespaceInfo],
) -> Vec<Pruned> {
    let client = &st.ctx.client;
    let mut out = Vec::new();
    for (kind, key) in observe::stale(st, name, set, scope)
        .into_iter()
        .filter(|(_, key)| !is_report(&key.api_version, &key.kind))
    {
        match remove(client, &kind, &key).await {
            Ok(()) => out.push(Pruned::Deleted(key)),
            Err(e) => out.push(Pruned::Failed {
                namespace: key.namespace.clone(),
                object: key.display_name(),
                message: e.message().to_string(),
            }),
        }
    }
    // Pod Security labels it set where it no longer sets them (the namespace left its
    // selection, the control was removed, another baseline won them): taken off, and the
    // labels found there put back.
    // A namespace the baseline could not plan (its selector or a template failed) keeps
    // them until it can: a broken spec must not weaken Pod Security.
    let keep: BTreeSet<&str> = set
        .namespaces
        .iter()
        .filter(|n| n.namespace_labels.is_some())
        .map(|n| n.namespace.as_str())
        .chain(set.failed.iter().map(|f| f.namespace.as_str()))
        .collect();
    for ns in namespaces
        .iter()
        .filter(|n| !keep.contains(n.name.as_str()))
    {
        let Some((patch, before)) = plan::release_patch(ns, name) else {
            continue;
        };
        match Writer::operator(client)
            .with_manager(PUT_BACK_FIELD_MANAGER)
            .merge_patch(&namespace_resource(), "", &ns.name, &patch)
            .await
        {
            Ok(true) => out.push(Pruned::Released {
                namespace: ns.name.clone(),
                put_back: before,
            }),
            // Changed since it was read: the change triggers another check.
            Ok(false) => {}
            Err(e) => out.push(Pruned::Failed {
                namespace: ns.name.clone(),
                object: format!("Namespace/{}", ns.name),
                message: e.message().to_string(),
            }),
        }
    }
    out
}

/// Deletes a stamped object; an adopted one (the `default` ServiceAccount) is never deleted:
/// the operator's fields are released instead.
async fn remove(
    client: &kube::Client,
    kind: &StampedKind,
    key: &ObjectKey,
) -> Result<(), ApplyError> {
    if key.kind == "ServiceAccount" && key.name == DEFAULT_SERVICE_ACCOUNT {
        let bare = serde_json::json!({"apiVersion": key.api_version, "kind": key.kind, "metadata": {"name": key.name, "namespace": key.namespace}});
        Writer::operator(client)
            .apply(&kind.resource, &bare, false)
            .await
    } else {
        Writer::operator(client)
            .delete(&kind.resource, &key.namespace, &key.name)
            .await
    }
}

/// Deletes everything a baseline stamped (the finalizer's job), then lets it go. The other
/// baselines look again at once: what this one won may be theirs now.
pub(super) async fn cleanup(sb: &SecurityBaseline, st: &State) -> Result<Action, Error> {
    let name = sb.name_any();
    for other in st.cache.baselines().iter().filter(|b| b.name_any() != name) {
        st.cache.trigger().baseline(&other.name_any());
    }
    st.statuses.forget(sb);
    st.memory
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&name);
    // Reports are removed with the rest, even when no check watched their kind since a restart.
    let _ = report_kind(st).await;
    let empty = RenderedSet::default();
    let mut failures = Vec::new();
    let mut count = 0;
    for (kind, key) in observe::stale(st, &name, &empty, &scope::Scope::All) {
        match remove(&st.ctx.client, &kind, &key).await {
            Ok(()) => count += 1,
            Err(e) => failures.push(e.to_string()),
        }
    }
    let trusted = observe::signing_keyring(st)
        .await
        .map(|k| k.trusted().to_vec())
        .unwrap_or_default();
    for mut ns in st.cache.namespace_infos() {
        plan::keep_signed_record(&mut ns, &trusted);
        if let Some((patch, _)) = plan::release_patch(&ns, &name) {
            match Writer::operator(&st.ctx.client)
                .with_manager(PUT_BACK_FIELD_MANAGER)
                .merge_patch(&namespace_resource(), "", &ns.name, &patch)
                .await
            {
                Ok(true) => count += 1,
                // Changed since the cache read it: try again once the cache has the change.
                Ok(false) => failures.push(format!(
                    "namespace {} changed while its Pod Security labels were released",
                    ns.name
                )),
                Err(e) => failures.push(e.to_string()),
            }
        }
    }
    if !failures.is_empty() {
        return Err(Error::Cleanup {
            name,
            failed: failures.len(),
            first: failures.remove(0),
        });
    }
    info!(baseline = %name, removed = count, "baseline deleted: removed what it stamped");
    Ok(Action::await_change())
}

fn reference(obj: &RenderedObject) -> ObjectReference {
    ObjectReference {
        api_version: Some(obj.api_version.clone()),
        kind: Some(obj.kind.clone()),
        name: Some(obj.name.clone()),
        namespace: Some(obj.namespace.clone()),
        ..Default::default()
    }
}

/// The cache of PolicyReports, or None when the cluster does not serve them: then reports are
/// skipped, said once in the log, and the CRD is looked for again [`REPORT_CRD_RETRY`] later.
pub(super) async fn report_kind(st: &State) -> Option<Arc<StampedKind>> {
    let missing_since = *st.reports_missing.lock().unwrap_or_else(|p| p.into_inner());
    if missing_since.is_some_and(|t| t.elapsed() < REPORT_CRD_RETRY) {
        return None;
    }
    match st
        .cache
        .stamped(POLICY_REPORT_API_VERSION, POLICY_REPORT_KIND)
        .await
    {
        Ok(kind) => {
            if missing_since.is_some() {
                info!("the PolicyReport CRD is installed now: per-namespace reports resume");
            }
            *st.reports_missing.lock().unwrap_or_else(|p| p.into_inner()) = None;
            Some(kind)
        }
        Err(err) => {
            if missing_since.is_none() {
                warn!(error = %err, "PolicyReports skipped: the wgpolicyk8s.io/v1alpha2 PolicyReport CRD is not installed (crds/policyreports.wgpolicyk8s.io.yaml provides it)");
            }
            *st.reports_missing.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
            None
        }
    }
}

/// Writes one PolicyReport, the operator's own object: a `POST` when the cache has none, else a
/// `PUT` against the cached resourceVersion (`body` carries it); each about two thirds of the cost
/// of an apply. When the cache was behind (the report exists, changed or is gone), a forced
/// server-side apply of the body without its resourceVersion settles it.
async fn write_report(
    client: &kube::Client,
    resource: &kube::api::ApiResource,
    namespace: &str,
    name: &str,
    exists: bool,
    body: String,
) -> Result<(), ApplyError> {
    let written = if exists {
        Writer::operator(client)
            .replace_text(resource, namespace, name, &body)
            .await?
    } else {
        Writer::operator(client)
            .create_text(resource, namespace, name, &body, false)
            .await?
    };
    if written {
        return Ok(());
    }
    let mut value: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    if let Some(meta) = value
        .get_mut("metadata")
        .and_then(serde_json::Value::as_object_mut)
    {
        meta.remove("resourceVersion");
    }
    Writer::operator(client)
        .apply(resource, &value, false)
        .await
}

/// Keeps one PolicyReport per selected namespace in step with the findings (X.1642 8.5.3) and
/// deletes the reports of namespaces no longer selected. A report is written only when it
/// differs from the live one, so an idle check writes nothing. Reports are written in Audit mode
/// too (they are the operator's own objects, not tenant configuration). Failures are logged; the
/// next check tries again.
pub(super) async fn write_reports(
    st: &State,
    name: &str,
    mode: BaselineMode,
    set: &RenderedSet,
    findings: &[Finding],
    scope: &scope::Scope,
    now: Timestamp,
) {
    let Some(kind) = report_kind(st).await else {
        return;
    };
    let report_name = policy_report::report_name(name);
    let live_of =
        |namespace: &str| -> Option<PolicyReport> { kind.get(namespace, &report_name)?.parse() };
    let contested_with = |key: &ObjectKey| {
        set.contested.iter().find(|c| &c.key == key).map(|c| {
            if c.tie {
                policy_report::Withheld::Tie(c.with.clone())
            } else {
                policy_report::Withheld::Overridden(c.with.clone())
            }
        })
    };
    let mut wanted: BTreeSet<String> = Default::default();
    let mut writes = Vec::new();
    let mut build = |namespace: &str, subjects: Vec<policy_report::Subject>| {
        wanted.insert(namespace.to_string());
        let live = live_of(namespace);
        let desired = policy_report::build(policy_report::Inputs {
            baseline: name,
            namespace,
            mode,
            subjects,
            findings: findings
                .iter()
                .filter(|f| f.namespace == namespace)
                .collect(),
            live: live.as_ref(),
            now,
        });
        if policy_report::needs_write(&desired, live.as_ref()) {
            // As text: a thousand reports as JSON value trees would take tens of MiB.
            let mut desired = desired;
            desired.metadata.resource_version =
                live.and_then(|l| l.metadata.resource_version.clone());
            writes.push((
                namespace.to_string(),
                desired.metadata.resource_version.is_some(),
                serde_json::to_string(&desired).unwrap_or_default(),
            ));
        }
    };
    for nsp in &set.namespaces {
        let mut subjects: Vec<policy_report::Subject> = nsp
            .objects
            .iter()
            .map(|o| policy_report::Subject {
                source: o.source.clone(),
                reference: o.reference(),
                withheld: None,
            })
            .collect();
        subjects.extend(nsp.withheld.iter().map(|o| policy_report::Subject {
            source: o.source.clone(),
            reference: reference(o),
            withheld: contested_with(&o.key()),
        }));
        if nsp.namespace_labels.is_some() || nsp.namespace_labels_withheld {
            let key = ObjectKey {
                namespace: String::new(),
                api_version: "v1".into(),
                kind: "Namespace".into(),
                name: nsp.namespace.clone(),
            };
            subjects.push(policy_report::Subject {
                source: policy_report::POD_SECURITY_SOURCE.into(),
                reference: ObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Namespace".into()),
                    name: Some(nsp.namespace.clone()),
                    ..Default::default()
                },
                withheld: if nsp.namespace_labels_withheld {
                    contested_with(&key)
                } else {
                    None
                },
            });
        }
        build(&nsp.namespace, subjects);
    }
    for f in &set.failed {
        build(&f.namespace, Vec::new());
    }

    let client = &st.ctx.client;
    let failures: Vec<String> = futures::stream::iter(writes)
        .map(|(namespace, exists, body)| {
            let (report_name, resource) = (&report_name, &kind.resource);
            async move {
                write_report(client, resource, &namespace, report_name, exists, body)
                    .await
                    .err()
                    .map(|e| e.to_string())
            }
        })
        .buffer_unordered(WRITE_CONCURRENCY)
        .filter_map(|r| async move { r })
        .collect()
        .await;
    for f in failures {
        warn!(baseline = %name, error = %f, "could not write a PolicyReport");
    }

    // Reports of namespaces this baseline no longer selects.
    for o in kind.store.state() {
        let namespace = o.namespace().unwrap_or_default();
        if o.labels().get(BASELINE_LABEL).map(String::as_str) != Some(name)
            || o.metadata.deletion_timestamp.is_some()
            || !scope.covers(&namespace)
            || (o.name_any() == report_name && wanted.contains(&namespace))
        {
            continue;
        }
        if let Err(e) = Writer::operator(client)
            .delete(&kind.resource, &namespace, &o.name_any())
            .await
        {
            warn!(baseline = %name, error = %e, "could not delete a stale PolicyReport");
        }
    }
}

/// Field manager of the Pod Security labels a baseline puts back as it found them: not the
/// operator's own, so no later apply of the operator removes them.
pub const PUT_BACK_FIELD_MANAGER: &str = "opsec-operator-put-back";

/// The Namespace resource (Pod Security labels are applied to, and released from, namespaces).
fn namespace_resource() -> kube::api::ApiResource {
    kube::api::ApiResource::erase::<k8s_openapi::api::core::v1::Namespace>(&())
}
