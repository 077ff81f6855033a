//! The SecurityBaseline controller (X.1642 8.5, 8.8, 8.1, 7.2.2.4): on every relevant change
//! and every `checkInterval` it plans what each baseline should have in the cluster (pure, in
//! [`plan`]), compares with the caches (no API reads), applies what is missing or drifted
//! (Enforce) or reports it (Audit), prunes what it stamped and no longer renders, and writes the
//! status only when it changed. A check that finds nothing to do makes no API writes at all.

pub mod apply;
pub mod cache;
pub mod metrics;
pub mod plan;
pub mod policy_report;
pub mod report;
pub mod scope;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use jiff::Timestamp;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use tokio::sync::watch;
use tracing::{info, warn};

use self::cache::{ClusterCache, StampedKind, Trigger};
use self::plan::{BaselineRef, Plan};
use self::report::{Finding, FindingState};
use super::Context;
use super::kit;
use crate::api::SecurityBaseline;
use crate::api::baseline::{BaselineMode, ConflictRecord, SecurityBaselineStatus};
use crate::api::common::{ConditionStatus, set_condition};
use crate::api::policy_report::{POLICY_REPORT_API_VERSION, POLICY_REPORT_KIND, PolicyReport};
use crate::baseline::{
    APPROVE_REVISION_ANNOTATION, BASELINE_LABEL, DEFAULT_SERVICE_ACCOUNT, ObjectKey, ObjectState,
    RenderedObject, TakeBacks, applicable_ignores, classify_cached, revision,
};

/// Finalizer that lets the controller remove what a deleted baseline stamped.
pub const FINALIZER: &str = "opsec.x1642.dev/baseline-cleanup";
const CONTROLLER: &str = "baseline";
/// Namespaces planned at once (their rendered objects are then kept as text).
const PLAN_CHUNK: usize = 64;
/// Writes in flight at once during a check.
const WRITE_CONCURRENCY: usize = 32;
/// How long the controller waits before it looks again for a PolicyReport CRD it did not find.
const REPORT_CRD_RETRY: Duration = Duration::from_secs(300);

/// Why a reconcile failed (it is retried with backoff).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("finalizer of baseline {name}")]
    Finalizer {
        name: String,
        #[source]
        source: Box<kube::runtime::finalizer::Error<Error>>,
    },
    #[error(transparent)]
    Status(#[from] super::kit::StatusError),
    #[error("removing what baseline {name} stamped: {failed} deletes failed, first: {first}")]
    Cleanup {
        name: String,
        failed: usize,
        first: String,
    },
}

impl super::kit::ReconcileError for Error {
    /// A short stable category: the metric label and Event reason (a check's or cleanup's own
    /// failure, not the finalizer's wrapping of it).
    fn category(&self) -> &'static str {
        match self {
            Self::Finalizer { source, .. } => match source.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e)
                | kube::runtime::finalizer::Error::CleanupFailed(e) => e.category(),
                _ => "Finalizer",
            },
            Self::Status(_) => "StatusWrite",
            Self::Cleanup { .. } => "Cleanup",
        }
    }
}

struct State {
    ctx: Context,
    cache: Arc<ClusterCache>,
    recorder: Recorder,
    metrics: Arc<metrics::BaselineMetrics>,
    statuses: super::kit::StatusWriter<SecurityBaseline>,
    /// What the checks of each baseline found per namespace (by name): a change in one namespace
    /// re-checks that namespace only, and the status is rebuilt from this for the others.
    memory: std::sync::Mutex<HashMap<String, scope::Memory>>,
    /// Reverts of objects other field managers changed, per baseline (by name): a manager that
    /// takes a field back after the revert is in conflict with the baseline.
    take_backs: std::sync::Mutex<HashMap<String, TakeBacks>>,
    /// The operator's signing keyring (it signs the Pod Security records), read at most every
    /// [`KEYRING_REFRESH`].
    keyring: tokio::sync::Mutex<Option<(Instant, Arc<crate::backup::SigningKeyring>)>>,
    /// When the PolicyReport CRD was last found missing (reports are skipped until
    /// [`REPORT_CRD_RETRY`] later).
    reports_missing: std::sync::Mutex<Option<Instant>>,
}

/// The SecurityBaseline controller, as [`crate::controller::CONTROLLERS`] lists it.
pub const REGISTRATION: super::Registration = super::Registration {
    name: CONTROLLER,
    kinds: &["SecurityBaseline"],
    metrics: metrics::register,
    start: run,
};

/// Starts the controller; it stops when `shutdown` turns true.
pub fn run(ctx: Context, shutdown: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let client = ctx.client.clone();
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let controller = kit::controller::<SecurityBaseline>(&client);
        let cache = ClusterCache::start(client.clone(), controller.store(), Trigger::new(tx));
        let mut stop = shutdown.clone();
        tokio::select! {
            _ = cache.wait_until_ready() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        tracing::debug!("baseline controller: cluster caches ready");
        let state = Arc::new(State {
            recorder: Recorder::new(client.clone(), ctx.reporter.clone()),
            metrics: ctx.metrics.of(CONTROLLER).unwrap_or_default(),
            statuses: kit::StatusWriter::new(client),
            ctx: ctx.clone(),
            cache,
            memory: Default::default(),
            take_backs: Default::default(),
            keyring: Default::default(),
            reports_missing: Default::default(),
        });
        // The PolicyReport cache is started now rather than on the first check's first report:
        // its first list can wait a second on a freshly established CRD.
        let warm = state.clone();
        tokio::spawn(async move {
            report_kind(&warm).await;
        });
        let controller = controller.reconcile_on(rx.map(|r| ObjectRef::new(&r.name)));
        let kit = kit::Kit::new("SecurityBaseline", CONTROLLER, &ctx);
        kit::run(kit, controller, state, reconcile, shutdown).await;
    })
}

async fn reconcile(sb: Arc<SecurityBaseline>, st: Arc<State>) -> Result<Action, Error> {
    let name = sb.name_any();
    let api: Api<SecurityBaseline> = Api::all(st.ctx.client.clone());
    let deleting = sb.metadata.deletion_timestamp.is_some();
    let result = finalizer(&api, FINALIZER, sb, |event| async {
        match event {
            Finalizer::Apply(sb) => check(&sb, &st).await,
            Finalizer::Cleanup(sb) => cleanup(&sb, &st).await,
        }
    })
    .await
    .map_err(|source| Error::Finalizer {
        name: name.clone(),
        source: Box::new(source),
    });
    if deleting && result.is_err() {
        // A second cleanup from a stale cache entry races the first one, whose removal of the
        // finalizer already let the baseline go: that is done, not an error.
        let released = match api.get_opt(&name).await {
            Ok(None) => true,
            Ok(Some(b)) => !b.finalizers().iter().any(|f| f == FINALIZER),
            Err(_) => false,
        };
        if released {
            return Ok(Action::await_change());
        }
    }
    result
}

/// One check of one baseline.
async fn check(sb: &SecurityBaseline, st: &State) -> Result<Action, Error> {
    let name = sb.name_any();
    let spec = &sb.spec;
    let now = Timestamp::now();
    // Taken first: changes arriving from here on trigger another check.
    let dirty = st.cache.trigger().take(&name);
    let previous = last_written(st, sb).unwrap_or_else(|| sb.status.clone().unwrap_or_default());
    let generation = sb.metadata.generation;
    let interval = spec
        .check_interval
        .to_std()
        .unwrap_or(Duration::from_secs(600));
    let requeue = Action::requeue(interval);
    let rev = match revision(spec) {
        Ok(r) => r,
        Err(e) => {
            let mut status = previous.clone();
            set_condition(
                &mut status.conditions,
                "Ready",
                ConditionStatus::False,
                "InvalidSpec",
                e.to_string(),
                generation,
                now,
            );
            write_status(sb, st, &previous, status).await?;
            return Ok(requeue);
        }
    };
    let new_revision = previous.revision.as_deref() != Some(rev.as_str());

    // 8.5.2 approval: a new revision waits until the annotation names it.
    if new_revision
        && spec.rollout.require_approval
        && sb.annotations().get(APPROVE_REVISION_ANNOTATION) != Some(&rev)
    {
        let msg =
            format!("revision {rev} waits for the annotation {APPROVE_REVISION_ANNOTATION}={rev}");
        let status = report::held(
            &previous,
            &rev,
            generation,
            &[
                (
                    "AwaitingApproval",
                    ConditionStatus::True,
                    "AwaitingApproval",
                ),
                ("Ready", ConditionStatus::False, "AwaitingApproval"),
            ],
            &msg,
            now,
        );
        if previous.pending_revision.as_deref() != Some(rev.as_str()) {
            publish(
                st,
                sb,
                EventType::Normal,
                "AwaitingApproval",
                "Approve",
                msg,
            )
            .await;
        }
        write_status(sb, st, &previous, status).await?;
        return Ok(requeue);
    }

    let baselines = st.cache.baselines();
    let mut refs: Vec<BaselineRef<'_>> = baselines
        .iter()
        .filter(|b| b.metadata.deletion_timestamp.is_none() && b.name_any() != name)
        .map(|b| BaselineRef {
            name: b.metadata.name.as_deref().unwrap_or_default(),
            spec: &b.spec,
        })
        .collect();
    let me = BaselineRef { name: &name, spec };
    let basis = scope::Basis {
        uid: sb.metadata.uid.clone(),
        revision: rev.clone(),
        generation,
        others: scope::others_digest(
            baselines
                .iter()
                .filter(|b| b.metadata.deletion_timestamp.is_none() && b.name_any() != name)
                .map(|b| {
                    (
                        b.metadata.name.as_deref().unwrap_or_default(),
                        b.metadata.generation,
                    )
                }),
        ),
    };
    let started = Instant::now();
    let (scope, claims_changed) = {
        let memory = st.memory.lock().unwrap_or_else(|p| p.into_inner());
        let m = memory.get(&name);
        let scope = if new_revision {
            scope::Scope::All
        } else {
            scope::decide(m, &basis, dirty, started, interval)
        };
        (scope, scope::claims_changed(m.map(|m| &m.basis), &basis))
    };
    if claims_changed {
        // This baseline is new or changed: the claims between it and the others may have
        // changed too. Every other baseline looks again now, not at its next periodic check,
        // so a conflict is seen by both sides at once.
        for other in refs.iter() {
            st.cache.trigger().baseline(other.name);
        }
    }
    refs.push(me);
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
    // Planned a chunk of namespaces at a time, and from there on the rendered objects are kept
    // as JSON text (`bodies[namespace][object]`, with their hash annotation): a JSON value tree
    // takes about ten times the memory, and a first check of a thousand namespaces renders
    // thousands of objects.
    let mut plan = Plan::default();
    let mut bodies: Vec<Vec<Box<str>>> = Vec::new();
    let mut rendered_hashes: Vec<(String, String)> = Vec::new();
    for chunk in namespaces.chunks(PLAN_CHUNK) {
        let mut part = plan::plan(me, &refs, chunk, &workloads);
        for n in part.namespaces.iter_mut() {
            if let (Some(body), Some(k)) = (n.namespace_labels.as_mut(), keyring.as_ref()) {
                plan::sign_record(body, &n.namespace, k.active());
            }
            let texts = n.objects.iter_mut().map(|o| {
                report::stamp_hash(&mut o.object);
                if new_revision {
                    rendered_hashes.push((
                        o.display_name(),
                        report::hash_of(&o.object).unwrap_or_default(),
                    ));
                }
                let text = serde_json::to_string(&o.object).unwrap_or_default();
                o.object = serde_json::Value::Null;
                text.into_boxed_str()
            });
            bodies.push(texts.collect());
        }
        plan.absorb(part);
    }

    // The caches of the kinds the plan stamps, started together when new.
    let kinds: BTreeMap<(String, String), Result<Arc<StampedKind>, String>> =
        futures::future::join_all(plan.kinds().into_iter().map(|(api_version, kind)| async {
            let k = st
                .cache
                .stamped(&api_version, &kind)
                .await
                .map_err(|e| e.to_string());
            ((api_version, kind), k)
        }))
        .await
        .into_iter()
        .collect();

    // 8.5.2 technical validation: a new revision is dry-run in every target first.
    if new_revision && spec.rollout.validate {
        let refused = dry_run(st, &plan, &bodies, &kinds).await;
        if !refused.is_empty() {
            let msg = format!(
                "revision {rev} not rolled out: the API server refused {} object(s); first: {}",
                refused.len(),
                refused[0]
            );
            let status = report::held(
                &previous,
                &rev,
                generation,
                &[
                    ("Validated", ConditionStatus::False, "DryRunRefused"),
                    ("Ready", ConditionStatus::False, "ValidationFailed"),
                ],
                &msg,
                now,
            );
            if previous.pending_revision.as_deref() != Some(rev.as_str())
                || crate::api::common::find_condition(&previous.conditions, "Validated")
                    .is_none_or(|c| c.status != "False")
            {
                publish(
                    st,
                    sb,
                    EventType::Warning,
                    "ValidationFailed",
                    "Validate",
                    msg,
                )
                .await;
            }
            write_status(sb, st, &previous, status).await?;
            return Ok(requeue);
        }
    }

    let enforce = spec.mode == BaselineMode::Enforce;
    let now_i = Instant::now();
    // What this process saw of field managers taking back reverted fields (in memory: a
    // restart forgets a fight, which the next take-back shows again).
    let mut take_backs = {
        let mut all = st.take_backs.lock().unwrap_or_else(|p| p.into_inner());
        let mine = all.entry(name.clone()).or_default();
        mine.expire(now_i);
        std::mem::take(mine)
    };
    let mut findings: Vec<Finding> = Vec::new();
    let mut writes: Vec<Write> = Vec::new();
    for (ns, reason, message) in &plan.failed {
        let object = format!("Namespace/{ns}");
        let message = format!("{reason}: {message}");
        // What the schema could not judge (a template that does not render here): an Event the
        // first time, the finding in status for as long as it lasts.
        let known = previous
            .non_compliant
            .iter()
            .any(|p| p.namespace == *ns && p.object == object && p.message == message);
        if !known {
            publish(
                st,
                sb,
                EventType::Warning,
                reason,
                "Render",
                format!("{ns}: {message}"),
            )
            .await;
        }
        findings.push(Finding {
            namespace: ns.clone(),
            object,
            state: FindingState::Failed,
            message,
        });
    }
    for (i, nsp) in plan.namespaces.iter().enumerate() {
        for (j, obj) in nsp.objects.iter().enumerate() {
            let kind = match &kinds[&(obj.api_version.clone(), obj.kind.clone())] {
                Ok(k) => k,
                Err(msg) => {
                    findings.push(finding(obj, FindingState::Failed, msg.clone()));
                    continue;
                }
            };
            let live = kind.get(&obj.namespace, &obj.name).map(|o| o.to_dynamic());
            let ignores = applicable_ignores(
                &spec.ignore_differences,
                &obj.api_version,
                &obj.kind,
                &obj.name,
            );
            let desired: serde_json::Value =
                serde_json::from_str(&bodies[i][j]).unwrap_or_default();
            match classify_cached(&desired, live.as_ref(), &ignores) {
                ObjectState::Compliant => {
                    findings.push(compliant_or_fought(&take_backs, obj, now_i))
                }
                ObjectState::Missing if enforce => writes.push(Write::Object {
                    at: (i, j),
                    resource: kind.resource.clone(),
                    was: "Missing".into(),
                    managers: vec![],
                    fields: vec![],
                }),
                ObjectState::Missing => findings.push(finding(
                    obj,
                    FindingState::Missing,
                    "object does not exist".into(),
                )),
                ObjectState::Drifted { diffs, managers } => {
                    let fields: Vec<&str> = diffs.iter().map(|d| d.pointer.as_str()).collect();
                    let who = if managers.is_empty() {
                        String::new()
                    } else {
                        format!(" by {}", managers.join(", "))
                    };
                    let was = format!("fields {} changed{who}", fields.join(", "));
                    if enforce {
                        writes.push(Write::Object {
                            at: (i, j),
                            resource: kind.resource.clone(),
                            was,
                            managers,
                            fields: fields.iter().map(|f| f.to_string()).collect(),
                        });
                    } else {
                        // Audit reports the edit as Enforce would revert it: drift, its editor
                        // named. Conflicts are between baselines, or a fight over a revert.
                        findings.push(finding(obj, FindingState::Drifted, was));
                    }
                }
            }
        }
        if let Some(body) = &nsp.namespace_labels {
            let object = format!("Namespace/{}", nsp.namespace);
            if namespace_labels_match(st, &nsp.namespace, body) {
                findings.push(Finding {
                    namespace: nsp.namespace.clone(),
                    object,
                    state: FindingState::Compliant,
                    message: String::new(),
                });
            } else if enforce {
                writes.push(Write::Namespace {
                    namespace: nsp.namespace.clone(),
                    at: i,
                });
            } else {
                findings.push(Finding {
                    namespace: nsp.namespace.clone(),
                    object,
                    state: FindingState::Drifted,
                    message: "Pod Security labels differ".into(),
                });
            }
        }
    }

    // What this baseline had stamped before acting: the old side of the history entry.
    let hashes_before = if new_revision {
        Some(stamped_hashes(st, &name).await)
    } else {
        None
    };

    // Act: apply what is missing or drifted, concurrently.
    let client = &st.ctx.client;
    let results: Vec<(Write, Result<(), apply::ApplyError>)> = futures::stream::iter(writes)
        .map(|w| {
            let (plan, bodies) = (&plan, &bodies);
            async move {
                let r = match &w {
                    Write::Object { at, resource, .. } => {
                        apply::apply_text(client, resource, &bodies[at.0][at.1], false).await
                    }
                    Write::Namespace { at, .. } => match &plan.namespaces[*at].namespace_labels {
                        Some(body) => apply::apply_namespace(client, body, false).await,
                        None => Ok(()),
                    },
                };
                (w, r)
            }
        })
        .buffer_unordered(WRITE_CONCURRENCY)
        .collect()
        .await;
    let mut created = 0usize;
    let mut created_keys: std::collections::BTreeSet<(String, String)> = Default::default();
    let mut reverted: Vec<(String, k8s_openapi::api::core::v1::ObjectReference)> = Vec::new();
    for (w, r) in results {
        match (w, r) {
            (
                Write::Object {
                    at,
                    was,
                    managers,
                    fields,
                    ..
                },
                Ok(()),
            ) => {
                let obj = &plan.namespaces[at.0].objects[at.1];
                if !managers.is_empty() {
                    take_backs.reverted(
                        &obj.namespace,
                        &obj.display_name(),
                        &managers,
                        &fields,
                        now_i,
                    );
                }
                findings.push(compliant_or_fought(&take_backs, obj, now_i));
                if was == "Missing" {
                    created_keys.insert((obj.namespace.clone(), obj.display_name()));
                }
                if was == "Missing" && (new_revision || previous.revision.is_none()) {
                    created += 1;
                } else if was == "Missing" {
                    reverted.push((
                        format!(
                            "{} in {} was deleted; recreated",
                            obj.display_name(),
                            obj.namespace
                        ),
                        reference(obj),
                    ));
                } else {
                    let from = if managers.is_empty() {
                        String::new()
                    } else {
                        format!(" (taken back from {})", managers.join(", "))
                    };
                    reverted.push((
                        format!(
                            "{} in {}: {was}; reverted{from}",
                            obj.display_name(),
                            obj.namespace
                        ),
                        reference(obj),
                    ));
                }
            }
            (Write::Object { at, .. }, Err(e)) => findings.push(finding(
                &plan.namespaces[at.0].objects[at.1],
                FindingState::Failed,
                format!("ApplyFailed: {}", e.message()),
            )),
            (Write::Namespace { namespace, .. }, Ok(())) => {
                let object = format!("Namespace/{namespace}");
                findings.push(Finding {
                    namespace,
                    object,
                    state: FindingState::Compliant,
                    message: String::new(),
                });
                created += 1;
            }
            (Write::Namespace { namespace, .. }, Err(e)) => {
                let object = format!("Namespace/{namespace}");
                findings.push(Finding {
                    namespace,
                    object,
                    state: FindingState::Failed,
                    message: e.message().into(),
                });
            }
        }
    }

    // Prune what this baseline stamped and no longer renders (Enforce only: Audit never writes).
    let mut pruned = Vec::new();
    if spec.prune && enforce {
        for (kind, key) in stale(st, &name, &plan, &scope)
            .await
            .into_iter()
            .filter(|(_, key)| !is_report(&key.api_version, &key.kind))
        {
            let r = if key.kind == "ServiceAccount" && key.name == DEFAULT_SERVICE_ACCOUNT {
                // Adopted, never deleted: release the operator's fields instead.
                let bare = serde_json::json!({"apiVersion": key.api_version, "kind": key.kind, "metadata": {"name": key.name, "namespace": key.namespace}});
                apply::apply_object(client, &kind.resource, &bare, false).await
            } else {
                apply::delete_object(client, &kind.resource, &key.namespace, &key.name).await
            };
            match r {
                Ok(()) => pruned.push((
                    format!(
                        "deleted {} in {}: no longer rendered",
                        key.display_name(),
                        key.namespace
                    ),
                    k8s_openapi::api::core::v1::ObjectReference {
                        api_version: Some(key.api_version.clone()),
                        kind: Some(key.kind.clone()),
                        name: Some(key.name.clone()),
                        namespace: Some(key.namespace.clone()),
                        ..Default::default()
                    },
                )),
                Err(e) => findings.push(Finding {
                    namespace: key.namespace.clone(),
                    object: key.display_name(),
                    state: FindingState::Failed,
                    message: format!("PruneFailed: {}", e.message()),
                }),
            }
        }
        // Pod Security labels it set where it no longer sets them (the namespace left its
        // selection, the control was removed, another baseline won them): taken off, and the
        // labels found there put back.
        // A namespace the baseline could not plan (its selector or a template failed) keeps
        // them until it can: a broken spec must not weaken Pod Security.
        let keep: BTreeSet<&str> = plan
            .namespaces
            .iter()
            .filter(|n| n.namespace_labels.is_some())
            .map(|n| n.namespace.as_str())
            .chain(plan.failed.iter().map(|(ns, _, _)| ns.as_str()))
            .collect();
        for ns in namespaces
            .iter()
            .filter(|n| !keep.contains(n.name.as_str()))
        {
            let Some((patch, before)) = plan::release_patch(ns, &name) else {
                continue;
            };
            match apply::release_namespace(client, &ns.name, &patch).await {
                Ok(true) => pruned.push((
                    format!(
                        "took its Pod Security labels off namespace {}: no longer rendered; put back {}",
                        ns.name,
                        describe_labels(&before)
                    ),
                    k8s_openapi::api::core::v1::ObjectReference {
                        api_version: Some("v1".into()),
                        kind: Some("Namespace".into()),
                        name: Some(ns.name.clone()),
                        ..Default::default()
                    },
                )),
                // Changed since it was read: the change triggers another check.
                Ok(false) => {}
                Err(e) => findings.push(Finding {
                    namespace: ns.name.clone(),
                    object: format!("Namespace/{}", ns.name),
                    state: FindingState::Failed,
                    message: format!("PruneFailed: {}", e.message()),
                }),
            }
        }
    }

    let conflicts: Vec<ConflictRecord> = plan
        .contested
        .iter()
        .map(|c| ConflictRecord {
            namespace: c.key.namespace.clone(),
            object: c.key.display_name(),
            with: c
                .with
                .iter()
                .map(|b| format!("SecurityBaseline/{b}"))
                .collect::<Vec<_>>()
                .join(", "),
            fields: if c.tie {
                vec!["(equal priority: applied by neither)".into()]
            } else {
                vec!["(a higher priority baseline applies it)".into()]
            },
        })
        .chain(
            findings
                .iter()
                .filter(|f| f.state == FindingState::Conflicted)
                .filter_map(|f| {
                    let t = take_backs.fight(&f.namespace, &f.object, now_i)?;
                    Some(ConflictRecord {
                        namespace: f.namespace.clone(),
                        object: f.object.clone(),
                        with: t
                            .managers
                            .iter()
                            .map(|m| format!("fieldManager/{m}"))
                            .collect::<Vec<_>>()
                            .join(", "),
                        fields: t.fields.clone(),
                    })
                }),
        )
        .collect();
    st.take_backs
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(name.clone(), take_backs);

    // Events: only for what was done or newly found, so a quiet check publishes nothing.
    if created > 0 {
        publish(
            st,
            sb,
            EventType::Normal,
            "Applied",
            "Apply",
            format!(
                "created {created} object(s) in {} namespace(s)",
                plan.namespaces.len()
            ),
        )
        .await;
    }
    for (done, reason, action) in [
        (&reverted, "DriftReverted", "Revert"),
        (&pruned, "Pruned", "Delete"),
    ] {
        for (note, related) in done {
            let related = Some(related.clone());
            publish_about(
                st,
                sb,
                EventType::Normal,
                reason,
                action,
                note.clone(),
                related,
            )
            .await;
        }
    }
    for f in findings.iter().filter(|f| {
        matches!(
            f.state,
            FindingState::Drifted | FindingState::Missing | FindingState::Conflicted
        )
    }) {
        let known = previous
            .non_compliant
            .iter()
            .any(|p| p.namespace == f.namespace && p.object == f.object);
        if !known {
            let related = f.object.split_once('/').map(|(kind, name)| {
                k8s_openapi::api::core::v1::ObjectReference {
                    kind: Some(kind.into()),
                    name: Some(name.into()),
                    namespace: Some(f.namespace.clone()),
                    ..Default::default()
                }
            });
            publish_about(
                st,
                sb,
                EventType::Warning,
                "DriftDetected",
                "Check",
                format!("{} in {}: {}", f.object, f.namespace, f.message),
                related,
            )
            .await;
        }
    }
    for c in &conflicts {
        let known = previous
            .conflicts
            .iter()
            .any(|p| p.namespace == c.namespace && p.object == c.object && p.with == c.with);
        if !known {
            publish(
                st,
                sb,
                EventType::Warning,
                "ConflictDetected",
                "Check",
                format!("{} in {} disputed with {}", c.object, c.namespace, c.with),
            )
            .await;
        }
    }
    migrated_events(st, sb, &plan, &created_keys, now).await;
    let m = &st.metrics;
    let labels = metrics::BaselineLabels {
        baseline: name.clone(),
    };
    let detected = reverted.len()
        + findings
            .iter()
            .filter(|f| {
                matches!(f.state, FindingState::Drifted | FindingState::Conflicted)
                    && !previous
                        .non_compliant
                        .iter()
                        .any(|p| p.namespace == f.namespace && p.object == f.object)
            })
            .count();
    m.drift_detected
        .get_or_create(&labels)
        .inc_by(detected as u64);
    m.drift_reverted
        .get_or_create(&labels)
        .inc_by(reverted.len() as u64);

    let applied_change = hashes_before.map(|before| report::summarize(&before, &rendered_hashes));
    if let Some(summary) = &applied_change {
        publish(
            st,
            sb,
            EventType::Normal,
            "RevisionApplied",
            "Apply",
            format!("revision {rev}: {summary}"),
        )
        .await;
    }
    write_reports(st, &name, spec.mode, &plan, &findings, &scope, now).await;
    let mut selected: Vec<String> = plan
        .namespaces
        .iter()
        .map(|n| n.namespace.clone())
        .collect();
    selected.extend(plan.failed.iter().map(|f| f.0.clone()));
    let (merged, next_check) = {
        let mut memory = st.memory.lock().unwrap_or_else(|p| p.into_inner());
        let (m, merged) = scope::merge(
            memory.remove(&name),
            basis,
            &scope,
            started,
            selected,
            findings,
            conflicts,
        );
        let next = scope::next_full(&m, Instant::now(), interval);
        memory.insert(name.clone(), m);
        (merged, next)
    };
    let status = report::build(report::Inputs {
        previous: &previous,
        generation,
        mode: spec.mode,
        revision: &rev,
        selected: merged.selected,
        findings: merged.findings,
        conflicts: merged.conflicts,
        applied_change,
        now,
    });
    let counts = &status.namespaces;
    for (state, n) in [
        ("compliant", counts.compliant),
        ("drifted", counts.drifted),
        ("conflicted", counts.conflicted),
        ("failed", counts.failed),
    ] {
        let labels = metrics::BaselineStateLabels {
            baseline: name.clone(),
            state: state.into(),
        };
        m.namespaces.get_or_create(&labels).set(n as i64);
    }
    write_status(sb, st, &previous, status).await?;
    tracing::debug!(baseline = %name, full = scope.is_full(), namespaces = plan.namespaces.len(), took = ?started.elapsed(), "checked");
    Ok(Action::requeue(next_check))
}

/// A write a check decided to make.
enum Write {
    Object {
        /// Namespace and object index in the plan.
        at: (usize, usize),
        resource: kube::api::ApiResource,
        was: String,
        managers: Vec<String>,
        /// The fields that differed (empty for a missing object).
        fields: Vec<String>,
    },
    Namespace {
        namespace: String,
        /// Namespace index in the plan.
        at: usize,
    },
}

fn reference(obj: &RenderedObject) -> k8s_openapi::api::core::v1::ObjectReference {
    k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some(obj.api_version.clone()),
        kind: Some(obj.kind.clone()),
        name: Some(obj.name.clone()),
        namespace: Some(obj.namespace.clone()),
        ..Default::default()
    }
}

/// How long the signing keyring read is used before it is read again (a rotated key is
/// picked up within this).
const KEYRING_REFRESH: Duration = Duration::from_secs(60);

/// The operator's signing keyring, or `None` when it cannot be read (then no record is signed
/// or trusted: a baseline's Pod Security labels still apply, and stay when it stops).
async fn signing_keyring(st: &State) -> Option<Arc<crate::backup::SigningKeyring>> {
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

/// Labels as `k=v, ...`, or `none`.
fn describe_labels(labels: &BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return "none".into();
    }
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// An object as rendered: compliant, unless a field manager keeps taking back what the baseline
/// reverted (then Conflicted, the manager and how often named; the baseline still reverts it).
fn compliant_or_fought(take_backs: &TakeBacks, obj: &RenderedObject, now: Instant) -> Finding {
    match take_backs.fight(&obj.namespace, &obj.display_name(), now) {
        Some(t) => finding(
            obj,
            FindingState::Conflicted,
            format!(
                "fields {} taken back by {} {} times after the baseline reverted them",
                t.fields.join(", "),
                t.managers.join(", "),
                t.count
            ),
        ),
        None => finding(obj, FindingState::Compliant, String::new()),
    }
}

fn finding(obj: &RenderedObject, state: FindingState, message: String) -> Finding {
    Finding {
        namespace: obj.namespace.clone(),
        object: obj.display_name(),
        state,
        message,
    }
}

fn namespace_labels_match(st: &State, namespace: &str, body: &serde_json::Value) -> bool {
    let Some(ns) = st.cache.namespaces.get(&ObjectRef::new(namespace)) else {
        return false;
    };
    let all_in = |pointer: &str, live: &BTreeMap<String, String>| {
        body.pointer(pointer)
            .and_then(|l| l.as_object())
            .is_none_or(|want| {
                want.iter()
                    .all(|(k, v)| live.get(k).map(String::as_str) == v.as_str())
            })
    };
    all_in("/metadata/labels", ns.labels()) && all_in("/metadata/annotations", ns.annotations())
}

/// Dry-runs every rendered object of the plan; returns the refusals.
async fn dry_run(
    st: &State,
    plan: &Plan,
    bodies: &[Vec<Box<str>>],
    kinds: &BTreeMap<(String, String), Result<Arc<StampedKind>, String>>,
) -> Vec<String> {
    // (namespace, object, kind, whether the cache holds the object)
    let mut jobs: Vec<(usize, usize, kube::api::ApiResource, bool)> = Vec::new();
    for (i, n) in plan.namespaces.iter().enumerate() {
        for (j, o) in n.objects.iter().enumerate() {
            if let Some(Ok(k)) = kinds.get(&(o.api_version.clone(), o.kind.clone())) {
                let exists = k.get(&o.namespace, &o.name).is_some();
                jobs.push((i, j, k.resource.clone(), exists));
            }
        }
    }
    futures::stream::iter(jobs)
        .map(|(i, j, resource, exists)| {
            let client = &st.ctx.client;
            async move {
                let o = &plan.namespaces[i].objects[j];
                let body = &bodies[i][j];
                // A missing object is validated as the create it will be; an existing one (or
                // one the cache had not seen yet) as the apply that updates it.
                let created = if exists {
                    Ok(false)
                } else {
                    apply::create_text(client, &resource, &o.namespace, &o.name, body, true).await
                };
                let result = match created {
                    Ok(true) => Ok(()),
                    Ok(false) => apply::apply_text(client, &resource, body, true).await,
                    Err(e) => Err(e),
                };
                result
                    .err()
                    .map(|e| format!("{} in {}: {}", o.display_name(), o.namespace, e.message()))
            }
        })
        .buffer_unordered(WRITE_CONCURRENCY)
        .filter_map(|r| async move { r })
        .collect()
        .await
}

/// (`Kind/name`, rendered hash) of every object stamped by `name`, as the caches hold them.
async fn stamped_hashes(st: &State, name: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for kind in st.cache.stamped_kinds() {
        if is_report(&kind.resource.api_version, &kind.resource.kind) {
            continue;
        }
        for o in kind.store.state() {
            if o.labels().get(BASELINE_LABEL).map(String::as_str) == Some(name) {
                let hash = o
                    .annotations()
                    .get(report::HASH_ANNOTATION)
                    .cloned()
                    .unwrap_or_default();
                out.push((format!("{}/{}", kind.resource.kind, o.name_any()), hash));
            }
        }
    }
    out
}

/// Objects labelled as stamped by `name`, in the namespaces `scope` covers, that the plan no
/// longer has and no other baseline owns.
async fn stale(
    st: &State,
    name: &str,
    plan: &Plan,
    scope: &scope::Scope,
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
            if !plan.claimed.contains(&key) && !plan.others_own.contains(&key) {
                out.push((kind.clone(), key));
            }
        }
    }
    out
}

/// 8.5.5: configuration that followed a workload into a namespace, with how long it took.
async fn migrated_events(
    st: &State,
    sb: &SecurityBaseline,
    plan: &Plan,
    created_keys: &std::collections::BTreeSet<(String, String)>,
    now: Timestamp,
) {
    for nsp in &plan.namespaces {
        for (workload, created) in &nsp.workloads {
            let source_prefix = format!("workload/{workload}/");
            // Covered in this check: some of the workload's configuration was just created here.
            let newly = nsp
                .objects
                .iter()
                .filter(|o| o.source.starts_with(&source_prefix))
                .any(|o| created_keys.contains(&(o.namespace.clone(), o.display_name())));
            if newly {
                let took = created
                    .map(|c| {
                        crate::api::common::format_duration(now.duration_since(c).unsigned_abs())
                    })
                    .unwrap_or_else(|| "an unknown time".into());
                let related = workload.split_once('/').map(|(kind, name)| {
                    k8s_openapi::api::core::v1::ObjectReference {
                        kind: Some(kind.into()),
                        name: Some(name.into()),
                        namespace: Some(nsp.namespace.clone()),
                        ..Default::default()
                    }
                });
                let note = format!(
                    "configuration of {workload} is in place in {} ({took} after the workload appeared there)",
                    nsp.namespace
                );
                publish_about(
                    st,
                    sb,
                    EventType::Normal,
                    "ConfigurationMigrated",
                    "Migrate",
                    note,
                    related,
                )
                .await;
            }
        }
    }
}

/// Deletes everything a baseline stamped (the finalizer's job), then lets it go. The other
/// baselines look again at once: what this one won may be theirs now.
async fn cleanup(sb: &SecurityBaseline, st: &State) -> Result<Action, Error> {
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
    let empty = Plan::default();
    let mut failures = Vec::new();
    let mut count = 0;
    for (kind, key) in stale(st, &name, &empty, &scope::Scope::All).await {
        let r = if key.kind == "ServiceAccount" && key.name == DEFAULT_SERVICE_ACCOUNT {
            let bare = serde_json::json!({"apiVersion": key.api_version, "kind": key.kind, "metadata": {"name": key.name, "namespace": key.namespace}});
            apply::apply_object(&st.ctx.client, &kind.resource, &bare, false).await
        } else {
            apply::delete_object(&st.ctx.client, &kind.resource, &key.namespace, &key.name).await
        };
        match r {
            Ok(()) => count += 1,
            Err(e) => failures.push(e.to_string()),
        }
    }
    let trusted = signing_keyring(st)
        .await
        .map(|k| k.trusted().to_vec())
        .unwrap_or_default();
    for mut ns in st.cache.namespace_infos() {
        plan::keep_signed_record(&mut ns, &trusted);
        if let Some((patch, _)) = plan::release_patch(&ns, &name) {
            match apply::release_namespace(&st.ctx.client, &ns.name, &patch).await {
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

/// Writes the status through the status subresource, only when it changed.
async fn write_status(
    sb: &SecurityBaseline,
    st: &State,
    previous: &SecurityBaselineStatus,
    mut status: SecurityBaselineStatus,
) -> Result<(), Error> {
    if !report::differs(&status, previous) {
        return Ok(());
    }
    status.last_check_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        Timestamp::now(),
    ));
    st.statuses.write(sb, &status).await?;
    Ok(())
}

/// The newest status of `sb`: what this process last wrote when the cache has not caught up
/// with it, else the cached one.
fn last_written(st: &State, sb: &SecurityBaseline) -> Option<SecurityBaselineStatus> {
    st.statuses.latest(sb)
}

async fn publish(
    st: &State,
    sb: &SecurityBaseline,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    publish_about(st, sb, type_, reason, action, note, None).await
}

/// Publishes an Event on the baseline; `related` names the object it is about (Events about
/// different objects are then never folded into one series).
async fn publish_about(
    st: &State,
    sb: &SecurityBaseline,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
    related: Option<k8s_openapi::api::core::v1::ObjectReference>,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: related,
    };
    if let Err(err) = st.recorder.publish(&event, &sb.object_ref(&())).await {
        warn!(error = %err, reason, "could not publish an Event");
    }
}

fn is_report(api_version: &str, kind: &str) -> bool {
    api_version == POLICY_REPORT_API_VERSION && kind == POLICY_REPORT_KIND
}

/// The cache of PolicyReports, or None when the cluster does not serve them: then reports are
/// skipped, said once in the log, and the CRD is looked for again [`REPORT_CRD_RETRY`] later.
async fn report_kind(st: &State) -> Option<Arc<StampedKind>> {
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
) -> Result<(), apply::ApplyError> {
    let written = if exists {
        apply::replace_text(client, resource, namespace, name, &body).await?
    } else {
        apply::create_text(client, resource, namespace, name, &body, false).await?
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
    apply::apply_object(client, resource, &value, false).await
}

/// Keeps one PolicyReport per selected namespace in step with the findings (X.1642 8.5.3) and
/// deletes the reports of namespaces no longer selected. A report is written only when it
/// differs from the live one, so an idle check writes nothing. Reports are written in Audit mode
/// too (they are the operator's own objects, not tenant configuration). Failures are logged; the
/// next check tries again.
async fn write_reports(
    st: &State,
    name: &str,
    mode: BaselineMode,
    plan: &Plan,
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
    let contested_with = |key: &crate::baseline::ObjectKey| {
        plan.contested.iter().find(|c| &c.key == key).map(|c| {
            if c.tie {
                policy_report::Withheld::Tie(c.with.clone())
            } else {
                policy_report::Withheld::Overridden(c.with.clone())
            }
        })
    };
    let mut wanted: std::collections::BTreeSet<String> = Default::default();
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
    for nsp in &plan.namespaces {
        let subject = |o: &RenderedObject, withheld| policy_report::Subject {
            source: o.source.clone(),
            reference: reference(o),
            withheld,
        };
        let mut subjects: Vec<policy_report::Subject> =
            nsp.objects.iter().map(|o| subject(o, None)).collect();
        subjects.extend(
            nsp.withheld
                .iter()
                .map(|o| subject(o, contested_with(&o.key()))),
        );
        if nsp.namespace_labels.is_some() || nsp.namespace_labels_withheld {
            let key = crate::baseline::ObjectKey {
                namespace: String::new(),
                api_version: "v1".into(),
                kind: "Namespace".into(),
                name: nsp.namespace.clone(),
            };
            subjects.push(policy_report::Subject {
                source: policy_report::POD_SECURITY_SOURCE.into(),
                reference: k8s_openapi::api::core::v1::ObjectReference {
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
    for (namespace, _, _) in &plan.failed {
        build(namespace, Vec::new());
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
        if let Err(e) =
            apply::delete_object(client, &kind.resource, &namespace, &o.name_any()).await
        {
            warn!(baseline = %name, error = %e, "could not delete a stale PolicyReport");
        }
    }
}
