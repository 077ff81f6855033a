//! Restore tests (X.1642 8.10: regular recovery tests; 7.2.2.2(6): deletion after use). The
//! newest good backup is restored into a scratch namespace and compared object by object; the
//! time that takes is the measured RTO. The scratch namespace is a sandbox, since a tenant
//! asks for the test and a tenant may have crafted the backup:
//! - it carries the source namespace's tenant and Pod Security labels, so admission judges
//!   what lands there as it would in the source;
//! - a NetworkPolicy denies all traffic in and out;
//! - nothing runs: workloads at zero replicas, Jobs and CronJobs suspended, DaemonSets on no
//!   node, bare Pods not restored;
//! - the restore writes as the policy's ServiceAccount, which gets in the sandbox the
//!   ClusterRole bindings it has in its own namespace and nothing more.
//!
//! Scratch namespaces are labelled as the operator's; those a crash left behind are deleted
//! when the backup controllers start ([`delete_left_behind`]), and no namespace without those
//! labels is ever deleted.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::authorization::v1::{SelfSubjectRulesReview, SelfSubjectRulesReviewSpec};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicySpec};
use k8s_openapi::api::rbac::v1::{RoleBinding, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use super::resolve::{Access, Keys};
use super::restore::{ReadBackupError, read_backup};
use super::{POLICY_LABEL, RESTORE_TEST_LABEL, State, objects, time};
use crate::api::backup::{ExistingObjects, RestoreTestResult, RestoreTestSummary};
use crate::api::common::format_duration;
use crate::api::{Backup, BackupPolicy};
use crate::baseline::{MANAGED_BY_LABEL, MANAGED_BY_VALUE, PSA_LABEL_PREFIX};

/// Label naming a namespace's tenant, carried into its scratch namespaces.
pub const TENANT_LABEL: &str = "opsec.x1642.dev/tenant";
/// The sandbox's NetworkPolicy.
pub const DENY_ALL_POLICY: &str = "opsec-restore-test-deny-all";
/// A node selector no node carries: a restored DaemonSet schedules nowhere.
pub const NO_NODE_LABEL: &str = "opsec.x1642.dev/restore-test";
/// Longest wait for the sandbox's role bindings to take effect.
const BINDINGS_WAIT: Duration = Duration::from_secs(10);

/// A fresh scratch namespace name for a test of `ns`: `<ns>-rt-<8 hex>`, at most 63 characters.
pub fn scratch_name(ns: &str, backup_id: &str) -> String {
    let short = &crate::backup::crypto::sha256_hex(
        format!("{backup_id}/{}", Timestamp::now().as_nanosecond()).as_bytes(),
    )[..8];
    let max = 63 - "-rt-".len() - short.len();
    let base = if ns.len() > max {
        ns[..max].trim_end_matches('-')
    } else {
        ns
    };
    format!("{base}-rt-{short}")
}

/// The scratch namespace of a test of `source`: the operator's labels, and the source's tenant
/// and Pod Security labels.
pub fn scratch_namespace(source: &Namespace, name: &str, policy: &str) -> Namespace {
    let mut labels = BTreeMap::from([
        (RESTORE_TEST_LABEL.to_string(), source.name_any()),
        (MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string()),
    ]);
    if policy.len() <= 63 {
        labels.insert(POLICY_LABEL.into(), policy.into());
    }
    for (k, v) in source.labels() {
        if k == TENANT_LABEL || k.starts_with(PSA_LABEL_PREFIX) {
            labels.insert(k.clone(), v.clone());
        }
    }
    Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Whether a namespace is a scratch namespace this operator made.
pub fn is_scratch(ns: &Namespace) -> bool {
    let labels = ns.labels();
    labels.contains_key(RESTORE_TEST_LABEL)
        && labels.get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY_VALUE)
        && ns.name_any().contains("-rt-")
}

/// The sandbox's NetworkPolicy: every pod, no ingress, no egress.
pub fn deny_all(namespace: &str) -> NetworkPolicy {
    NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(DENY_ALL_POLICY.into()),
            namespace: Some(namespace.into()),
            labels: Some(BTreeMap::from([(
                MANAGED_BY_LABEL.to_string(),
                MANAGED_BY_VALUE.to_string(),
            )])),
            ..Default::default()
        },
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector::default()),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ..Default::default()
        }),
    }
}

/// An object as the sandbox holds it: `None` for what is not restored there (bare Pods, which
/// would run), otherwise a copy that runs nothing.
pub fn sandboxed(obj: &Value) -> Option<Value> {
    let group = obj["apiVersion"]
        .as_str()
        .unwrap_or_default()
        .rsplit_once('/')
        .map(|(g, _)| g)
        .unwrap_or("");
    let kind = obj["kind"].as_str().unwrap_or_default();
    let mut out = obj.clone();
    match (group, kind) {
        ("", "Pod") => return None,
        ("apps", "Deployment" | "StatefulSet" | "ReplicaSet") | ("", "ReplicationController") => {
            out["spec"]["replicas"] = json!(0);
        }
        ("batch", "Job" | "CronJob") => out["spec"]["suspend"] = json!(true),
        ("apps", "DaemonSet") => {
            out["spec"]["template"]["spec"]["nodeSelector"][NO_NODE_LABEL] = json!("no-node");
        }
        // Beside the original, a Service kept with its node ports (keepNodePorts) takes new ones.
        ("", "Service") => {
            if let Some(spec) = out["spec"].as_object_mut() {
                crate::backup::export::without_node_ports(spec);
            }
        }
        _ => {}
    }
    Some(out)
}

/// The bindings that give ServiceAccount `sa` of `source` its rights there, carried into
/// `scratch`: each RoleBinding of `source` to a ClusterRole that names the ServiceAccount becomes
/// one in `scratch` binding that ServiceAccount alone to the same ClusterRole. Bindings to a
/// namespaced Role are not carried (the Role is the tenant's and would have to be copied with
/// rights the operator does not hold): the restore test then fails where it needed them.
pub fn carried_bindings(
    bindings: &[RoleBinding],
    source: &str,
    sa: &str,
    scratch: &str,
) -> Vec<RoleBinding> {
    let names_sa = |s: &Subject| {
        s.kind == "ServiceAccount"
            && s.name == sa
            && s.namespace.as_deref().unwrap_or(source) == source
    };
    let mut seen = std::collections::BTreeSet::new();
    bindings
        .iter()
        .filter(|b| b.role_ref.kind == "ClusterRole")
        .filter(|b| b.subjects.iter().flatten().any(names_sa))
        .filter(|b| seen.insert(b.role_ref.name.clone()))
        .map(|b| RoleBinding {
            metadata: ObjectMeta {
                name: Some(format!("opsec-restore-test-{}", b.role_ref.name)),
                namespace: Some(scratch.into()),
                labels: Some(BTreeMap::from([(
                    MANAGED_BY_LABEL.to_string(),
                    MANAGED_BY_VALUE.to_string(),
                )])),
                ..Default::default()
            },
            role_ref: b.role_ref.clone(),
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".into(),
                name: sa.into(),
                namespace: Some(source.into()),
                ..Default::default()
            }]),
        })
        .collect()
}

/// Why the sandbox could not be set up. The API's answer is in the text as kube-rs words it (its
/// Display, no cause chain), as the test's message has always shown it.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("reading namespace {namespace}: {error}")]
    ReadNamespace {
        namespace: String,
        error: kube::Error,
    },
    #[error("creating scratch namespace {scratch}: {error}")]
    CreateScratch { scratch: String, error: kube::Error },
    #[error("isolating scratch namespace {scratch}: {error}")]
    Isolate { scratch: String, error: kube::Error },
    #[error("reading the RoleBindings of {namespace}: {error}")]
    ReadBindings {
        namespace: String,
        error: kube::Error,
    },
    #[error("giving {user} its ClusterRole {role} in the scratch namespace: {error}")]
    Bind {
        user: String,
        role: String,
        error: kube::Error,
    },
}

impl PrepareError {
    /// Short stable category.
    pub fn category(&self) -> &'static str {
        match self {
            Self::ReadNamespace { .. } | Self::ReadBindings { .. } => "ApiError",
            Self::CreateScratch { .. } | Self::Isolate { .. } | Self::Bind { .. } => {
                "SandboxFailed"
            }
        }
    }
}

/// Why a restore test failed before it could compare anything; the test's message is
/// [`error_chain`](super::resolve::error_chain) of it.
#[derive(Debug, thiserror::Error)]
pub enum RestoreTestError {
    #[error(transparent)]
    Prepare(#[from] PrepareError),
    #[error(transparent)]
    Read(#[from] ReadBackupError),
}

impl RestoreTestError {
    /// Short stable category.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Prepare(e) => e.category(),
            Self::Read(e) => e.category(),
        }
    }
}

/// Sets up the sandbox: the namespace, its deny-all policy, and the ServiceAccount's bindings,
/// waiting until they take effect.
async fn prepare(
    st: &State,
    access: &Access,
    p: &BackupPolicy,
    scratch: &str,
) -> Result<(), PrepareError> {
    let own = &st.ctx.client;
    let ns = &access.tenant.namespace;
    let namespaces: Api<Namespace> = Api::all(own.clone());
    let source = namespaces
        .get(ns)
        .await
        .map_err(|error| PrepareError::ReadNamespace {
            namespace: ns.clone(),
            error,
        })?;
    namespaces
        .create(
            &PostParams::default(),
            &scratch_namespace(&source, scratch, &p.name_any()),
        )
        .await
        .map_err(|error| PrepareError::CreateScratch {
            scratch: scratch.into(),
            error,
        })?;
    Api::<NetworkPolicy>::namespaced(own.clone(), scratch)
        .create(&PostParams::default(), &deny_all(scratch))
        .await
        .map_err(|error| PrepareError::Isolate {
            scratch: scratch.into(),
            error,
        })?;
    let bindings = Api::<RoleBinding>::namespaced(own.clone(), ns)
        .list(&ListParams::default())
        .await
        .map_err(|error| PrepareError::ReadBindings {
            namespace: ns.clone(),
            error,
        })?;
    let carried = carried_bindings(&bindings.items, ns, &access.tenant.service_account, scratch);
    if carried.is_empty() {
        return Ok(());
    }
    let before = rule_count(&access.tenant.client, scratch).await;
    let api = Api::<RoleBinding>::namespaced(own.clone(), scratch);
    for b in &carried {
        api.create(&PostParams::default(), b)
            .await
            .map_err(|error| PrepareError::Bind {
                user: access.tenant.user(),
                role: b.role_ref.name.clone(),
                error,
            })?;
    }
    // The authorizer sees new bindings a moment later: wait until the account's rules grow.
    let deadline = Instant::now() + BINDINGS_WAIT;
    while rule_count(&access.tenant.client, scratch).await <= before && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// How many resource rules the client's account has in `namespace` (0 when it cannot tell).
async fn rule_count(client: &Client, namespace: &str) -> usize {
    let review = SelfSubjectRulesReview {
        spec: SelfSubjectRulesReviewSpec {
            namespace: Some(namespace.into()),
        },
        ..Default::default()
    };
    Api::<SelfSubjectRulesReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .ok()
        .and_then(|r| r.status)
        .map(|s| s.resource_rules.len())
        .unwrap_or(0)
}

/// Runs one restore test of `backup` and deletes its scratch namespace, whatever the outcome;
/// returns its summary and the measured restore time (the summary's `duration`, unformatted).
pub async fn run(
    st: &State,
    access: &Access,
    keys: &Keys,
    p: &BackupPolicy,
    backup: &Backup,
    timeout: Duration,
) -> (RestoreTestSummary, Duration) {
    let ns = p.namespace().unwrap_or_default();
    let at = Timestamp::now();
    let started = Instant::now();
    let id = backup
        .status
        .as_ref()
        .and_then(|s| s.backup_id.clone())
        .unwrap_or_else(|| backup.name_any());
    let scratch = scratch_name(&ns, &id);
    let tenant = &access.tenant.client;
    let writer = crate::controller::kit::apply::Writer::tenant(&access.tenant)
        .with_manager(objects::RESTORE_FIELD_MANAGER);
    let work = async {
        prepare(st, access, p, &scratch).await?;
        let read = read_backup(access, keys, p, &id, None).await?;
        // Not restored into a scratch namespace: operator kinds (a policy there would start
        // backing it up) and objects a SecurityBaseline stamped (the baseline prunes or reverts
        // them in a namespace it does not select, and recreates them in a real restore).
        let objs: Vec<Value> = read
            .backup
            .objects
            .iter()
            .filter(|o| {
                !o["apiVersion"]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with("opsec.x1642.dev/")
                    && !objects::stamped_by_baseline(o)
            })
            .filter_map(sandboxed)
            .collect();
        let applied =
            objects::apply_objects(&writer, &scratch, &objs, ExistingObjects::Overwrite).await;
        let (compared, mismatches, messages) = objects::compare(tenant, &scratch, &objs).await;
        let mut msgs = applied.errors;
        msgs.extend(messages);
        Ok::<_, RestoreTestError>((compared, mismatches + applied.failed.min(compared), msgs))
    };
    let outcome = tokio::time::timeout(timeout, work).await;
    let duration = started.elapsed();
    delete_scratch(&st.ctx.client, &scratch).await;
    let (result, compared, mismatches, message) = match outcome {
        Err(_) => (
            RestoreTestResult::TimedOut,
            0,
            0,
            Some(format!(
                "the restore test took longer than {}",
                format_duration(timeout)
            )),
        ),
        Ok(Err(e)) => (
            RestoreTestResult::Failed,
            0,
            0,
            Some(super::resolve::error_chain(&e)),
        ),
        Ok(Ok((c, m, msgs))) if m == 0 => (
            RestoreTestResult::Passed,
            c,
            m,
            msgs.first().cloned().map(|_| msgs.join("; ")),
        ),
        Ok(Ok((c, m, msgs))) => (RestoreTestResult::Failed, c, m, Some(msgs.join("; "))),
    };
    let summary = RestoreTestSummary {
        time: time(at),
        duration: format_duration(duration),
        result,
        objects_compared: compared,
        mismatches,
        message: message.map(|m| m.chars().take(1024).collect()),
    };
    (summary, duration)
}

/// Deletes a scratch namespace, only when it is one this operator made.
async fn delete_scratch(client: &Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    match api.get_opt(name).await {
        Ok(Some(ns)) if is_scratch(&ns) => {
            if let Err(e) = api.delete(name, &DeleteParams::default()).await
                && !matches!(&e, kube::Error::Api(a) if a.code == 404)
            {
                tracing::warn!(namespace = %name, error = %e, "could not delete a restore test's scratch namespace");
            }
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(namespace = %name, error = %e, "could not read a restore test's scratch namespace")
        }
    }
}

/// Deletes the scratch namespaces a stopped operator left behind (no restore test runs while
/// this is called: it runs before the controllers start); returns how many.
pub async fn delete_left_behind(client: &Client) -> usize {
    let api: Api<Namespace> = Api::all(client.clone());
    let selector = format!("{RESTORE_TEST_LABEL},{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}");
    let list = match api.list(&ListParams::default().labels(&selector)).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "could not list scratch namespaces left behind");
            return 0;
        }
    };
    let mut deleted = 0;
    for ns in list.items.iter().filter(|n| is_scratch(n)) {
        if ns.metadata.deletion_timestamp.is_some() {
            continue;
        }
        match api.delete(&ns.name_any(), &DeleteParams::default()).await {
            Ok(_) => {
                deleted += 1;
                tracing::info!(namespace = %ns.name_any(), "deleted a scratch namespace a stopped restore test left behind");
            }
            Err(e) => {
                tracing::warn!(namespace = %ns.name_any(), error = %e, "could not delete a scratch namespace left behind")
            }
        }
    }
    deleted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_namespaces_are_valid_names() {
        let long = "a".repeat(63);
        for ns in ["team-a", long.as_str()] {
            let n = scratch_name(ns, "p-20260101000000");
            assert!(n.len() <= 63 && n.contains("-rt-"), "{n}");
        }
    }

    #[test]
    fn the_sandbox_carries_tenant_and_pod_security_labels_only() {
        let source: Namespace =
            serde_json::from_value(json!({"metadata": {"name": "team-a", "labels": {
            "opsec.x1642.dev/tenant": "acme",
            "opsec.x1642.dev/tenant-class": "standard",
            "pod-security.kubernetes.io/enforce": "restricted",
            "pod-security.kubernetes.io/enforce-version": "latest",
            "team": "web"}}}))
            .unwrap();
        let ns = scratch_namespace(&source, "team-a-rt-0011aabb", "nightly");
        let labels = ns.labels();
        assert_eq!(labels[TENANT_LABEL], "acme");
        assert_eq!(labels["pod-security.kubernetes.io/enforce"], "restricted");
        assert_eq!(
            labels["pod-security.kubernetes.io/enforce-version"],
            "latest"
        );
        assert_eq!(labels[RESTORE_TEST_LABEL], "team-a");
        assert!(
            !labels.contains_key("team") && !labels.contains_key("opsec.x1642.dev/tenant-class")
        );
        assert!(is_scratch(&ns));
        // A namespace with the test label but not the operator's is never taken for one.
        let mut other = ns.clone();
        other.labels_mut().remove(MANAGED_BY_LABEL);
        assert!(!is_scratch(&other));
    }

    #[test]
    fn nothing_restored_into_the_sandbox_runs() {
        assert_eq!(sandboxed(&json!({"apiVersion": "v1", "kind": "Pod"})), None);
        let d = sandboxed(
            &json!({"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"replicas": 5}}),
        )
        .unwrap();
        assert_eq!(d["spec"]["replicas"], 0);
        let s = sandboxed(&json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "spec": {}}))
            .unwrap();
        assert_eq!(s["spec"]["replicas"], 0);
        for kind in ["Job", "CronJob"] {
            let j =
                sandboxed(&json!({"apiVersion": "batch/v1", "kind": kind, "spec": {}})).unwrap();
            assert_eq!(j["spec"]["suspend"], true, "{kind}");
        }
        let ds = sandboxed(&json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "spec": {"template": {"spec": {"nodeSelector": {"a": "b"}}}}})).unwrap();
        assert_eq!(
            ds["spec"]["template"]["spec"]["nodeSelector"][NO_NODE_LABEL],
            "no-node"
        );
        assert_eq!(ds["spec"]["template"]["spec"]["nodeSelector"]["a"], "b");
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "b"}});
        assert_eq!(sandboxed(&cm), Some(cm));
    }

    #[test]
    fn only_the_accounts_cluster_role_bindings_are_carried() {
        let b = |name: &str, kind: &str, role: &str, subjects: Value| -> RoleBinding {
            serde_json::from_value(json!({"metadata": {"name": name}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role}, "subjects": subjects})).unwrap()
        };
        let sa = |name: &str, ns: Option<&str>| match ns {
            Some(ns) => json!({"kind": "ServiceAccount", "name": name, "namespace": ns}),
            None => json!({"kind": "ServiceAccount", "name": name}),
        };
        let bindings = vec![
            b(
                "a",
                "ClusterRole",
                "admin",
                json!([sa("opsec-tenant", Some("team-a"))]),
            ),
            b(
                "a2",
                "ClusterRole",
                "admin",
                json!([sa("opsec-tenant", None)]),
            ),
            b(
                "v",
                "ClusterRole",
                "view",
                json!([sa("other", Some("team-a")), sa("opsec-tenant", None)]),
            ),
            b(
                "r",
                "Role",
                "custom",
                json!([sa("opsec-tenant", Some("team-a"))]),
            ),
            b(
                "x",
                "ClusterRole",
                "cluster-admin",
                json!([sa("opsec-tenant", Some("team-b"))]),
            ),
            b(
                "g",
                "ClusterRole",
                "edit",
                json!([{"kind": "Group", "name": "tenant:acme", "apiGroup": "rbac.authorization.k8s.io"}]),
            ),
        ];
        let carried = carried_bindings(&bindings, "team-a", "opsec-tenant", "team-a-rt-1");
        let roles: Vec<&str> = carried.iter().map(|b| b.role_ref.name.as_str()).collect();
        assert_eq!(roles, ["admin", "view"]);
        for c in &carried {
            assert_eq!(c.metadata.namespace.as_deref(), Some("team-a-rt-1"));
            let subjects = c.subjects.as_ref().unwrap();
            assert_eq!(subjects.len(), 1);
            assert_eq!(subjects[0].name, "opsec-tenant");
            assert_eq!(subjects[0].namespace.as_deref(), Some("team-a"));
        }
    }
}
