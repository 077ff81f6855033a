//! `PolicyReport` of the Kubernetes Policy working group (`wgpolicyk8s.io/v1alpha2`,
//! namespaced, short name `polr`): the report format that Kyverno, Policy Reporter, Trivy and
//! kubectl users already read. The SecurityBaseline controller keeps one per selected namespace
//! and baseline (X.1642 8.5.3: the tenant sees its own compliance). The fields are those of the
//! upstream API; the operator ships this CRD in crds/ for clusters that lack it and works without
//! it (reports are then skipped).
//!
//! Unlike the operator's own kinds, a PolicyReport has no `spec` and no `status`: `scope`,
//! `scopeSelector`, `summary` and `results` sit at the root of the object.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of the PolicyReport.
pub const POLICY_REPORT_GROUP: &str = "wgpolicyk8s.io";
/// `apiVersion` of the PolicyReport.
pub const POLICY_REPORT_API_VERSION: &str = "wgpolicyk8s.io/v1alpha2";
/// `kind` of the PolicyReport.
pub const POLICY_REPORT_KIND: &str = "PolicyReport";

/// The root fields of a PolicyReport (`#[kube(no_spec)]`: they are not under `spec`).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[kube(
    group = "wgpolicyk8s.io",
    version = "v1alpha2",
    kind = "PolicyReport",
    plural = "policyreports",
    shortname = "polr",
    namespaced,
    no_spec,
    derive = "PartialEq",
    doc = "PolicyReport holds the results of policy checks of the resources of one namespace (wgpolicyk8s.io/v1alpha2 of the Kubernetes Policy working group). opsec-operator keeps one per SecurityBaseline and selected namespace.",
    printcolumn(
        name = "Kind",
        type_ = "string",
        json_path = ".scope.kind",
        priority = 1
    ),
    printcolumn(
        name = "Name",
        type_ = "string",
        json_path = ".scope.name",
        priority = 1
    ),
    printcolumn(name = "Pass", type_ = "integer", json_path = ".summary.pass"),
    printcolumn(name = "Fail", type_ = "integer", json_path = ".summary.fail"),
    printcolumn(name = "Warn", type_ = "integer", json_path = ".summary.warn"),
    printcolumn(name = "Error", type_ = "integer", json_path = ".summary.error"),
    printcolumn(name = "Skip", type_ = "integer", json_path = ".summary.skip"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct PolicyReportSpec {
    /// The single resource this report is about, when it is about one. Absent when the report
    /// covers a namespace (each result then names its resources).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<ObjectReference>,

    /// The resources this report is about, by their labels, as an alternative to `scope`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope_selector: Option<LabelSelector>,

    /// How many results have each outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<PolicyReportSummary>,

    /// One result per policy rule checked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub results: Vec<PolicyReportResult>,
}

/// The number of results per outcome.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub struct PolicyReportSummary {
    /// Number of results whose requirements are met.
    #[serde(default)]
    pub pass: i32,
    /// Number of results whose requirements are not met.
    #[serde(default)]
    pub fail: i32,
    /// Number of results whose requirements are not met but that do not fail (a warning).
    #[serde(default)]
    pub warn: i32,
    /// Number of results that could not be evaluated.
    #[serde(default)]
    pub error: i32,
    /// Number of results that were not evaluated (not applicable, or disabled).
    #[serde(default)]
    pub skip: i32,
}

/// The outcome of one policy rule for its resources.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyReportResult {
    /// The policy engine (or operator) that produced this result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,

    /// The name or identifier of the policy.
    pub policy: String,

    /// The name or identifier of the rule within the policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,

    /// The category of the policy (for opsec-operator: the ITU-T X.1642 clause).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,

    /// How serious a failure of this rule is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<PolicySeverity>,

    /// When the result was found (opsec-operator: when it last changed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<ReportTimestamp>,

    /// The outcome: pass, fail, warn, error or skip.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<PolicyResult>,

    /// Whether this result counts towards a compliance score.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scored: Option<bool>,

    /// A short, readable explanation of the result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,

    /// The resources checked by this rule.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<ObjectReference>,

    /// The checked resources by their labels, as an alternative to `resources`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_selector: Option<LabelSelector>,

    /// More information about the result, as free key-value pairs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, String>,
}

/// The outcome of a policy rule.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PolicyResult {
    /// The requirements are met.
    Pass,
    /// The requirements are not met.
    Fail,
    /// The requirements are not met, and this is only a warning.
    Warn,
    /// The rule could not be evaluated.
    Error,
    /// The rule was not evaluated.
    Skip,
}

/// How serious a failure of a policy rule is.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PolicySeverity {
    /// Must be fixed at once.
    Critical,
    /// Weakens the isolation or protection of the tenant.
    High,
    /// Weakens a safeguard.
    Medium,
    /// A minor deviation.
    Low,
    /// For information only.
    Info,
}

/// A point in time as seconds and nanoseconds since the Unix epoch (protobuf `Timestamp`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub struct ReportTimestamp {
    /// Whole seconds since 1970-01-01T00:00:00Z.
    pub seconds: i64,
    /// Nanoseconds within the second, 0 to 999,999,999.
    #[schemars(range(min = 0, max = 999_999_999))]
    pub nanos: i32,
}

impl From<jiff::Timestamp> for ReportTimestamp {
    fn from(t: jiff::Timestamp) -> Self {
        Self {
            seconds: t.as_second(),
            nanos: t.subsec_nanosecond(),
        }
    }
}
