//! `PatchWindow` (namespaced): maintenance windows and freezes, the queue of patches with their
//! SLA per priority, and the state of each patch (X.1642 clause 8.7).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{
    DNS_SUBDOMAIN_PATTERN, Duration, Schedule, TimeZone, conditions_schema, default_true,
};
pub use super::rules::IMAGE_PATTERN;
use super::rules::{self, NOT_BLANK_PATTERN, duration_between, duration_guard};

/// When patches may land in this namespace, and which patches are queued.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "opsec.x1642.dev",
    version = "v1alpha1",
    kind = "PatchWindow",
    plural = "patchwindows",
    shortname = "pw",
    category = "opsec",
    namespaced,
    status = "PatchWindowStatus",
    derive = "PartialEq",
    doc = "PatchWindow declares maintenance windows and freezes and queues image patches with an SLA per priority; patches land only inside a window, after a backup, with health checks and rollback (ITU-T X.1642 clause 8.7).",
    printcolumn(
        name = "Next Window",
        type_ = "date",
        json_path = ".status.nextWindow.start"
    ),
    printcolumn(
        name = "Open",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"WindowOpen\")].status"
    ),
    printcolumn(
        name = "Frozen",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Frozen\")].status",
        priority = 1
    ),
    printcolumn(name = "Pending", type_ = "integer", json_path = ".status.pending"),
    printcolumn(
        name = "Overdue",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"PatchesOverdue\")].status"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct PatchWindowSpec {
    /// When patches may land: each window opens at its cron schedule and stays open for its
    /// duration. At least one.
    #[schemars(length(min = 1, max = 16))]
    pub windows: Vec<MaintenanceWindow>,
    /// Periods when nothing lands, whatever the windows say (a critical patch allowed outside
    /// windows still waits for a freeze to end).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub freezes: Vec<Freeze>,
    /// Longest delay from collection to landing, and whether the tenant must approve, per
    /// priority (8.7: waiting time and approval per priority from the SLA).
    #[serde(default)]
    pub sla: PatchSla,
    /// Which Deployments, StatefulSets, DaemonSets and CronJobs of this namespace patches may
    /// change; all of them when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "rules::optional_label_selector")]
    pub target_selector: Option<LabelSelector>,
    /// The queue of patches (patch collection).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("self.all(a, self.exists_one(b, b.name == a.name))").message("patches: names must be unique"))]
    pub patches: Vec<Patch>,
    /// BackupPolicy (same namespace) that takes a backup before any patch lands; a failed backup
    /// stops the patch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN_PATTERN))]
    pub backup_policy_ref: Option<String>,
    /// How a patch is rolled out.
    #[serde(default)]
    pub rollout: PatchRollout,
    /// Tell the tenant this long before a window that has pending patches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = duration_between("notifyBefore", "1m", "720h"))]
    pub notify_before: Option<Duration>,
    /// Read Trivy Operator VulnerabilityReports of targets as evidence (where installed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vulnerability_reports: Option<VulnerabilityReports>,
}

/// A recurring maintenance window.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(format!("!{} || !{} || duration(self.duration).getSeconds() < {} * 60", duration_guard("self.duration"), rules::cron_guard("self.schedule"), rules::cron_shortest_gap_bound("self.schedule"))).message("a window's duration must be shorter than the time between two openings of its schedule, or windows would overlap").field_path(".duration"))]
pub struct MaintenanceWindow {
    /// Cron schedule at which the window opens (`0 2 * * 6`: Saturdays at 02:00).
    pub schedule: Schedule,
    /// How long the window stays open.
    #[x_kube(validation = duration_between("window duration", "1m", "8784h"))]
    pub duration: Duration,
    /// IANA time zone of the schedule; UTC when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<TimeZone>,
}

/// A period when no patch lands.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.end > self.start").message("a freeze must end after it starts").field_path(".end"))]
pub struct Freeze {
    /// Start (RFC 3339).
    pub start: Time,
    /// End (RFC 3339), after start.
    pub end: Time,
    /// Why (year-end, a release).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256), regex(pattern = NOT_BLANK_PATTERN))]
    pub reason: Option<String>,
}

/// The SLA of each priority.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new(format!("!{} || !{} || !{} || !{} || duration(self.critical.maxDelay) <= duration(self.high.maxDelay) && duration(self.high.maxDelay) <= duration(self.medium.maxDelay) && duration(self.medium.maxDelay) <= duration(self.low.maxDelay)", duration_guard("self.critical.maxDelay"), duration_guard("self.high.maxDelay"), duration_guard("self.medium.maxDelay"), duration_guard("self.low.maxDelay"))).message("sla: maxDelay must not shrink as priority falls (critical <= high <= medium <= low)"))]
#[serde(rename_all = "camelCase")]
pub struct PatchSla {
    /// Critical patches (default: 24h, no approval, may land outside windows).
    #[serde(default = "default_critical")]
    pub critical: PrioritySla,
    /// High (default: 168h, approval required).
    #[serde(default = "default_high")]
    pub high: PrioritySla,
    /// Medium (default: 720h, approval required).
    #[serde(default = "default_medium")]
    pub medium: PrioritySla,
    /// Low (default: 2160h, approval required).
    #[serde(default = "default_low")]
    pub low: PrioritySla,
}

impl Default for PatchSla {
    fn default() -> Self {
        Self {
            critical: default_critical(),
            high: default_high(),
            medium: default_medium(),
            low: default_low(),
        }
    }
}

/// SLA of one priority.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrioritySla {
    /// Longest delay from collection to landing; past it the patch is overdue.
    #[x_kube(validation = duration_between("maxDelay", "1m", "8784h"))]
    pub max_delay: Duration,
    /// The tenant must approve (`approved: true` on the patch) before it lands.
    #[serde(default)]
    pub approval_required: bool,
    /// May land outside windows (never inside a freeze).
    #[serde(default)]
    pub allow_outside_window: bool,
}

/// Priority of a patch.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Critical,
    High,
    Medium,
    Low,
}

/// One queued patch: image updates of the targets.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Patch {
    /// Name of the patch (`openssl-3.0.15`).
    #[schemars(
        length(min = 1, max = 128),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Priority; sets the SLA.
    pub priority: Priority,
    /// Image replacements: every container of a target running `from` is moved to `to`.
    #[schemars(length(min = 1, max = 16))]
    #[x_kube(validation = Rule::new("self.all(i, i.from != i.to)").message("images: from and to must differ"))]
    #[x_kube(validation = Rule::new("self.all(a, self.exists_one(b, b.from == a.from))").message("images: each from image may be listed once (one image cannot become two)"))]
    pub images: Vec<ImageUpdate>,
    /// Tenant approval (8.7), needed when the priority's SLA requires it.
    #[serde(default)]
    pub approved: bool,
    /// Advisory or CVE ids this patch fixes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")), extend("x-kubernetes-list-type" = "set"))]
    pub advisories: Vec<String>,
}

/// One image replacement.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageUpdate {
    /// Image the targets run now.
    #[schemars(length(min = 1, max = 512), regex(pattern = IMAGE_PATTERN))]
    #[x_kube(validation = rules::image_name_rule())]
    pub from: String,
    /// Image they run after the patch.
    #[schemars(length(min = 1, max = 512), regex(pattern = IMAGE_PATTERN))]
    #[x_kube(validation = rules::image_name_rule())]
    pub to: String,
}

/// How a patch rolls out.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PatchRollout {
    /// Workloads patched at once.
    #[serde(default = "default_max_parallel")]
    #[schemars(range(min = 1, max = 100))]
    pub max_parallel: i32,
    /// A workload not healthy this long after its patch has failed.
    #[serde(default = "default_progress_timeout")]
    #[x_kube(validation = duration_between("progressTimeout", "10s", "24h"))]
    pub progress_timeout: Duration,
    /// Put the previous image back when a workload fails its health check.
    #[serde(default = "default_true")]
    pub rollback_on_failure: bool,
}

impl Default for PatchRollout {
    fn default() -> Self {
        Self {
            max_parallel: 1,
            progress_timeout: default_progress_timeout(),
            rollback_on_failure: true,
        }
    }
}

/// Trivy Operator reports as evidence.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VulnerabilityReports {
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Lowest severity counted.
    #[serde(default)]
    pub min_severity: Severity,
}

/// Vulnerability severity, as Trivy names it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Severity {
    Critical,
    #[default]
    High,
    Medium,
    Low,
}

/// Observed state of a patch window.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PatchWindowStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub observed_generation: Option<i64>,
    /// The next (or current) window outside any freeze.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_window: Option<WindowTimes>,
    /// Patches not yet applied.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub pending: i32,
    /// State of every queued patch.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patches: Vec<PatchStatus>,
    /// Ready, WindowOpen, Frozen, PatchesOverdue.
    #[serde(default)]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
}

/// Start and end of a window.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WindowTimes {
    pub start: Time,
    pub end: Time,
}

/// State of a patch.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum PatchState {
    Pending,
    AwaitingApproval,
    Scheduled,
    Applying,
    Applied,
    RolledBack,
    Failed,
}

/// Status of one patch.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PatchStatus {
    pub name: String,
    pub state: PatchState,
    /// When the patch entered the queue; the SLA runs from here.
    pub collected_at: Time,
    /// Collection time plus the priority's maxDelay.
    pub deadline: Time,
    /// Past the deadline and not applied.
    #[serde(default)]
    pub overdue: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_at: Option<Time>,
    /// Result per workload and container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workloads: Vec<WorkloadResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Result of a patch on one container of one workload.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadResult {
    pub kind: String,
    pub name: String,
    pub container: String,
    pub result: WorkloadPatchResult,
}

status_words! {
    /// What a patch did to one container of one workload.
    WorkloadPatchResult {
        /// The patch test (a server-side dry run) passed.
        #[default]
        DryRunPassed,
        /// The new image was set.
        Patched,
        /// The workload runs the new image (patch check).
        Verified,
        /// The rollout failed and the old image was put back.
        RolledBack,
        Failed,
        /// The workload went back to the old image after it was verified.
        Reverted,
    }
}

fn default_critical() -> PrioritySla {
    PrioritySla {
        max_delay: Duration("24h".into()),
        approval_required: false,
        allow_outside_window: true,
    }
}
fn default_high() -> PrioritySla {
    PrioritySla {
        max_delay: Duration("168h".into()),
        approval_required: true,
        allow_outside_window: false,
    }
}
fn default_medium() -> PrioritySla {
    PrioritySla {
        max_delay: Duration("720h".into()),
        approval_required: true,
        allow_outside_window: false,
    }
}
fn default_low() -> PrioritySla {
    PrioritySla {
        max_delay: Duration("2160h".into()),
        approval_required: true,
        allow_outside_window: false,
    }
}
fn default_max_parallel() -> i32 {
    1
}
fn default_progress_timeout() -> Duration {
    Duration("10m".into())
}
