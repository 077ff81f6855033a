//! `SecurityBaseline` (cluster-scoped): the configuration every selected tenant namespace must
//! carry (X.1642 clauses 7.2.2.4, 8.1, 8.5, 8.8), its status and its change history.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::LimitRangeItem;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::{CustomResource, KubeSchema};
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

use super::common::{DNS_LABEL_PATTERN, Duration, conditions_schema, default_true};
use super::rules::{
    self, KIND_PATTERN, LABEL_KEY_PATTERN, NOT_BLANK_PATTERN, PATH_SEGMENT_PATTERN,
    duration_between, label_key_rule, non_empty_selector, path_segment_rule,
};

/// Label on a namespace whose value names its tenant, unless a baseline names another.
pub const DEFAULT_TENANT_LABEL: &str = "opsec.x1642.dev/tenant";

/// A security baseline: configuration rendered into every namespace it selects, checked on every
/// change and periodically, drift reported (Audit) or reverted (Enforce).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "opsec.x1642.dev",
    version = "v1alpha1",
    kind = "SecurityBaseline",
    plural = "securitybaselines",
    shortname = "sbl",
    category = "opsec",
    status = "SecurityBaselineStatus",
    derive = "PartialEq",
    validation = rules::name_is_label_value("SecurityBaseline", "opsec.x1642.dev/baseline"),
    doc = "SecurityBaseline renders configuration (network isolation, Pod Security, quotas, RBAC, free templates) into every tenant namespace it selects and keeps it there (ITU-T X.1642 clauses 8.5, 8.8, 8.1, 7.2.2.4).",
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode"),
    printcolumn(
        name = "Priority",
        type_ = "integer",
        json_path = ".spec.priority",
        priority = 1
    ),
    printcolumn(
        name = "Selected",
        type_ = "integer",
        json_path = ".status.namespaces.selected"
    ),
    printcolumn(
        name = "Compliant",
        type_ = "integer",
        json_path = ".status.namespaces.compliant"
    ),
    printcolumn(
        name = "Drifted",
        type_ = "integer",
        json_path = ".status.namespaces.drifted"
    ),
    printcolumn(
        name = "Conflicted",
        type_ = "integer",
        json_path = ".status.namespaces.conflicted",
        priority = 1
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Revision",
        type_ = "string",
        json_path = ".status.revision",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct SecurityBaselineSpec {
    /// Which namespaces this baseline applies to, by their labels. Required and never empty: an
    /// empty selector would select every namespace in the cluster.
    #[schemars(schema_with = "rules::label_selector")]
    #[x_kube(validation = non_empty_selector("namespaceSelector"))]
    pub namespace_selector: LabelSelector,

    /// Namespaces never touched even when they match. System namespaces are excluded by default;
    /// a baseline reaches one only if this list is changed on purpose.
    #[serde(default = "default_exclude_namespaces")]
    #[schemars(length(max = 256), inner(length(min = 1, max = 63), regex(pattern = DNS_LABEL_PATTERN)), extend("x-kubernetes-list-type" = "set"))]
    pub exclude_namespaces: Vec<String>,

    /// Namespace label whose value names the tenant (the `${tenant}` variable). A selected
    /// namespace without it is reported as failed, never guessed.
    #[serde(default = "default_tenant_label")]
    #[schemars(length(min = 1, max = 317), regex(pattern = LABEL_KEY_PATTERN))]
    #[x_kube(validation = label_key_rule("tenantLabel"))]
    pub tenant_label: String,

    /// Enforce reverts drift; Audit only reports it.
    #[serde(default)]
    pub mode: BaselineMode,

    /// When two baselines render the same object, the higher priority wins; at equal priority
    /// neither is applied and both report the conflict.
    #[serde(default)]
    #[schemars(range(min = -1000, max = 1000))]
    pub priority: i32,

    /// Typed built-in controls, each optional, each with safe defaults.
    #[serde(default)]
    pub controls: Controls,

    /// Free templates: any namespaced object, rendered into every selected namespace. String
    /// values may use `${namespace}`, `${tenant}` and `${baseline}`. `metadata.namespace` must be
    /// left out: the target namespace is set by the operator.
    #[serde(default)]
    #[schemars(schema_with = "rules::namespace_templates")]
    pub templates: Vec<TemplateObject>,

    /// Configuration that follows a workload (8.5.5): rendered into every namespace where a
    /// Deployment, StatefulSet or DaemonSet whose pod template matches the selector runs, and
    /// removed where it no longer runs. Extra variables: `${workload}`, `${workloadKind}`.
    #[serde(default)]
    #[schemars(length(max = 8))]
    pub workload_templates: Vec<WorkloadTemplate>,

    /// Fields where drift is allowed: differences there are neither reported nor reverted.
    #[serde(default)]
    #[schemars(length(max = 64))]
    pub ignore_differences: Vec<IgnoreDifference>,

    /// Period of the baseline check besides watch events (at least 10s).
    #[serde(default = "default_check_interval")]
    #[x_kube(validation = duration_between("checkInterval", "10s", "24h"))]
    pub check_interval: Duration,

    /// How a new revision of the rendered configuration is rolled out (8.5.2).
    #[serde(default)]
    pub rollout: BaselineRollout,

    /// Delete what this baseline stamped and no longer renders (a template removed, a namespace
    /// that stopped matching). Never touches objects it did not stamp.
    #[serde(default = "default_true")]
    pub prune: bool,
}

/// How drift is handled.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum BaselineMode {
    /// Report drift and revert it.
    #[default]
    Enforce,
    /// Report drift only.
    Audit,
}

/// The typed built-in controls.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Controls {
    /// A NetworkPolicy `opsec-isolation` that denies ingress from other tenants (7.2.2.4(2)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_isolation: Option<NetworkIsolation>,
    /// Pod Security Admission labels on the namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_security: Option<PodSecurity>,
    /// A ResourceQuota `opsec-quota`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_quota: Option<ResourceQuotaControl>,
    /// A LimitRange `opsec-limits`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_range: Option<LimitRangeControl>,
    /// RoleBindings that give the tenant's groups admin or view rights in its namespaces (8.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_access: Option<TenantAccess>,
    /// The default ServiceAccount's token automount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_accounts: Option<ServiceAccountsControl>,
}

/// Network isolation between tenants.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkIsolation {
    /// Allow ingress from namespaces of the same tenant.
    #[serde(default = "default_true")]
    pub allow_same_tenant: bool,
    /// Allow egress to cluster DNS (kube-system, port 53).
    #[serde(default = "default_true", rename = "allowDNS")]
    pub allow_dns: bool,
    /// Also allow ingress from namespaces matching this selector (an ingress controller, say).
    /// Never empty: an empty selector would let every namespace in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "rules::optional_label_selector")]
    #[x_kube(validation = non_empty_selector("networkIsolation.allowFromNamespaces"))]
    pub allow_from_namespaces: Option<LabelSelector>,
}

/// Pod Security Standards level.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PodSecurityLevel {
    Privileged,
    Baseline,
    #[default]
    Restricted,
}

/// Pod Security Admission labels (`pod-security.kubernetes.io/*`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodSecurity {
    /// Level that is enforced: pods that break it are refused.
    #[serde(default)]
    pub enforce: PodSecurityLevel,
    /// Level that is audited.
    #[serde(default)]
    pub audit: PodSecurityLevel,
    /// Level that warns the user.
    #[serde(default)]
    pub warn: PodSecurityLevel,
    /// Version of the standards: `latest` or `v1.N`.
    #[serde(default = "default_psa_version")]
    #[schemars(length(max = 16), regex(pattern = r"^(latest|v1\.[0-9]+)$"))]
    pub version: String,
}

/// A ResourceQuota for each namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceQuotaControl {
    /// Hard limits, as in `ResourceQuota.spec.hard` (`requests.cpu: "8"`, `pods: "100"`).
    #[schemars(schema_with = "rules::quantity_map")]
    #[x_kube(validation = Rule::new("size(self) > 0").message("resourceQuota.hard must name at least one resource"))]
    pub hard: BTreeMap<String, Quantity>,
}

/// A LimitRange for each namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct LimitRangeControl {
    /// Limit items, as in `LimitRange.spec.limits`.
    #[schemars(schema_with = "rules::limit_range_items")]
    pub limits: Vec<LimitRangeItem>,
}

/// Tenant RoleBindings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("size(self.adminGroups) + size(self.viewGroups) > 0").message("tenantAccess needs at least one of adminGroups or viewGroups"))]
pub struct TenantAccess {
    /// Groups bound to the admin ClusterRole in every namespace of the tenant; `${tenant}` is
    /// replaced, so `tenant:${tenant}:admins` names one group per tenant.
    #[serde(default)]
    #[schemars(length(max = 16), inner(length(min = 1, max = 253), regex(pattern = NOT_BLANK_PATTERN)), extend("x-kubernetes-list-type" = "set"))]
    #[x_kube(validation = rules::variables_rule("tenantAccess.adminGroups", rules::NAMESPACE_VARIABLES))]
    pub admin_groups: Vec<String>,
    /// Groups bound to the view ClusterRole.
    #[serde(default)]
    #[schemars(length(max = 16), inner(length(min = 1, max = 253), regex(pattern = NOT_BLANK_PATTERN)), extend("x-kubernetes-list-type" = "set"))]
    #[x_kube(validation = rules::variables_rule("tenantAccess.viewGroups", rules::NAMESPACE_VARIABLES))]
    pub view_groups: Vec<String>,
    /// ClusterRole bound to adminGroups.
    #[serde(default = "default_admin_role")]
    #[schemars(length(min = 1, max = 253), regex(pattern = PATH_SEGMENT_PATTERN))]
    #[x_kube(validation = path_segment_rule("tenantAccess.adminRole"))]
    pub admin_role: String,
    /// ClusterRole bound to viewGroups.
    #[serde(default = "default_view_role")]
    #[schemars(length(min = 1, max = 253), regex(pattern = PATH_SEGMENT_PATTERN))]
    #[x_kube(validation = path_segment_rule("tenantAccess.viewRole"))]
    pub view_role: String,
}

/// ServiceAccount defaults.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAccountsControl {
    /// Whether the `default` ServiceAccount mounts its API token into pods.
    #[serde(default)]
    pub automount_token: bool,
}

/// Configuration that follows workloads whose pod template matches `selector`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadTemplate {
    /// Pod-template labels of the Deployments, StatefulSets and DaemonSets to follow.
    #[schemars(schema_with = "rules::label_selector")]
    #[x_kube(validation = non_empty_selector("workloadTemplates.selector"))]
    pub selector: LabelSelector,
    /// Objects rendered beside each matching workload, with `${workload}` and `${workloadKind}`
    /// besides the namespace variables.
    #[schemars(schema_with = "rules::workload_templates")]
    pub templates: Vec<TemplateObject>,
}

/// Fields of rendered objects where drift is allowed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct IgnoreDifference {
    /// API group of the objects (empty for the core group); any group when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 253),
        regex(pattern = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)?$")
    )]
    pub group: Option<String>,
    /// Kind of the objects.
    #[schemars(length(min = 1, max = 63), regex(pattern = KIND_PATTERN))]
    pub kind: String,
    /// Name of one object; every object of the kind when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = PATH_SEGMENT_PATTERN))]
    #[x_kube(validation = path_segment_rule("ignoreDifferences.name"))]
    pub name: Option<String>,
    /// RFC 6901 JSON pointers (`/spec/hard/pods`) to ignore.
    #[schemars(
        length(min = 1, max = 32),
        inner(length(min = 1, max = 512), regex(pattern = r"^(/([^/~]|~[01])*)+$"))
    )]
    pub json_pointers: Vec<String>,
}

/// How new revisions are rolled out (8.5.2).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BaselineRollout {
    /// Server-side dry-run of every rendered object in every target namespace before a new
    /// revision is applied; a refusal keeps the previous revision.
    #[serde(default = "default_true")]
    pub validate: bool,
    /// Hold a new revision until the annotation `opsec.x1642.dev/approve-revision` names it.
    #[serde(default)]
    pub require_approval: bool,
}

impl Default for BaselineRollout {
    fn default() -> Self {
        Self {
            validate: true,
            require_approval: false,
        }
    }
}

/// Any namespaced Kubernetes object, as a template: apiVersion, kind and metadata are checked by
/// the schema ([`rules::template_object`]), the rest when the operator renders it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(transparent)]
pub struct TemplateObject(pub serde_json::Map<String, serde_json::Value>);

impl JsonSchema for TemplateObject {
    fn schema_name() -> Cow<'static, str> {
        "TemplateObject".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        rules::template_object(generator)
    }
}

/// Observed state of a baseline.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecurityBaselineStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub observed_generation: Option<i64>,
    /// Digest (`sha256:…`) of the rendered configuration that is applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Digest of a rendered configuration awaiting approval or validation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_revision: Option<String>,
    /// Selected namespaces by state.
    #[serde(default)]
    pub namespaces: NamespaceCounts,
    /// What is not compliant, per namespace and object (capped at 100 entries).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub non_compliant: Vec<NonCompliance>,
    /// Conflicts with other baselines or field managers (8.5.4).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<ConflictRecord>,
    /// The last 10 revisions applied: the configuration archive (8.5.2, 8.8).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<RevisionRecord>,
    /// When the baseline was last checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_check_time: Option<Time>,
    /// Ready, Compliant, Conflicted, Validated, AwaitingApproval.
    #[serde(default)]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
}

/// Selected namespaces by state.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceCounts {
    #[schemars(range(min = 0))]
    pub selected: i32,
    #[schemars(range(min = 0))]
    pub compliant: i32,
    #[schemars(range(min = 0))]
    pub drifted: i32,
    #[schemars(range(min = 0))]
    pub conflicted: i32,
    #[schemars(range(min = 0))]
    pub failed: i32,
}

/// One object that is not as the baseline renders it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NonCompliance {
    pub namespace: String,
    /// `Kind/name` of the object.
    pub object: String,
    /// Missing, Drifted, Conflicted or Failed.
    pub reason: String,
    /// Which fields differ and which field manager changed them, or the error.
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Time>,
}

/// A conflict over one object.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConflictRecord {
    pub namespace: String,
    /// `Kind/name` of the object.
    pub object: String,
    /// `SecurityBaseline/<name>` or `fieldManager/<manager>`.
    pub with: String,
    /// The fields in dispute.
    #[serde(default)]
    pub fields: Vec<String>,
}

/// One applied revision.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevisionRecord {
    pub revision: String,
    pub applied_at: Time,
    /// What changed against the previous revision.
    pub summary: String,
}

fn default_exclude_namespaces() -> Vec<String> {
    ["kube-system", "kube-public", "kube-node-lease"]
        .map(String::from)
        .to_vec()
}
fn default_tenant_label() -> String {
    DEFAULT_TENANT_LABEL.into()
}
fn default_check_interval() -> Duration {
    Duration("10m".into())
}
fn default_psa_version() -> String {
    "latest".into()
}
fn default_admin_role() -> String {
    "admin".into()
}
fn default_view_role() -> String {
    "view".into()
}
