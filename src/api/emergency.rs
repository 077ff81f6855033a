//! `EmergencyPlan` and `Incident` (namespaced): contacts, channels, the rules that grade
//! detections, the response programme per grade, drills and review; and each incident from
//! detection to its post-incident report (X.1642 clauses 7.2.2.3, 8.6, 8.9).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{
    DNS_LABEL_PATTERN, DNS_SUBDOMAIN_PATTERN, Duration, LocalObjectRef, ObjectReference, Schedule,
    SecretKeyRef, conditions_schema,
};
use super::rules::{self, KIND_PATTERN, NOT_BLANK_PATTERN, duration_between, non_empty_selector};

/// Pattern of a grade name (`P1`, `critical`).
pub const GRADE_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9_-]{0,15}$";

/// How a tenant namespace responds to security events.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "opsec.x1642.dev",
    version = "v1alpha1",
    kind = "EmergencyPlan",
    plural = "emergencyplans",
    shortname = "eplan",
    category = "opsec",
    namespaced,
    status = "EmergencyPlanStatus",
    derive = "PartialEq",
    doc = "EmergencyPlan turns detections into graded Incidents and runs the response programme of each grade: notify, isolate, scale down, lock accounts, back up, restore; with drills on a schedule and an annual review (ITU-T X.1642 clauses 8.6, 8.9, 7.2.2.3).",
    printcolumn(
        name = "Open Incidents",
        type_ = "integer",
        json_path = ".status.openIncidents"
    ),
    printcolumn(
        name = "Last Drill",
        type_ = "date",
        json_path = ".status.lastDrill.time"
    ),
    printcolumn(
        name = "Review Overdue",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"ReviewOverdue\")].status"
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
#[x_kube(validation = Rule::new("self.contacts.all(c, !has(c.channels) || c.channels.all(ch, has(self.channels) && self.channels.exists(x, x.name == ch)))").message("contacts: every channel a contact names must be defined in channels").field_path(".contacts"))]
#[x_kube(validation = Rule::new("self.grades.all(g, !has(self.grades[g].actions) || self.grades[g].actions.all(a, !has(a.notify) || !has(a.notify.channels) || a.notify.channels.all(ch, has(self.channels) && self.channels.exists(x, x.name == ch))))").message("grades: a notify action names a channel that is not defined in channels").field_path(".grades"))]
#[x_kube(validation = Rule::new("!has(self.classification) || self.classification.all(r, r.grade in self.grades)").message("classification: every rule's grade must be defined in grades").field_path(".classification"))]
#[x_kube(validation = Rule::new("!has(self.drills) || self.drills.grade in self.grades").message("drills.grade must be defined in grades").field_path(".drills.grade"))]
#[x_kube(validation = Rule::new(format!("!has(self.drills) || !{} || {} >= 1440", rules::cron_guard("self.drills.schedule"), rules::cron_shortest_gap_bound("self.drills.schedule"))).message("drills.schedule: a drill opens an Incident and tells the contacts; at most one a day").field_path(".drills.schedule"))]
#[serde(rename_all = "camelCase")]
pub struct EmergencyPlanSpec {
    /// Who is told, in which role, through which channels. At least one.
    #[schemars(length(min = 1, max = 32))]
    #[x_kube(validation = Rule::new("self.all(a, self.exists_one(b, b.name == a.name))").message("contacts: names must be unique"))]
    pub contacts: Vec<Contact>,
    /// Notification channels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(validation = Rule::new("self.all(a, self.exists_one(b, b.name == a.name))").message("channels: names must be unique"))]
    pub channels: Vec<Channel>,
    /// Rules that turn a detection into an Incident of a grade; the first match wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub classification: Vec<ClassificationRule>,
    /// The response programme of each grade (`P1`, `P2`, ...). At least one.
    #[schemars(extend("maxProperties" = 10, "minProperties" = 1))]
    #[x_kube(validation = Rule::new("self.all(g, g.matches('^[A-Za-z0-9][A-Za-z0-9_-]{0,15}$'))").message("grades: names must be 1 to 16 letters, digits, '-' or '_' (P1, critical)"))]
    pub grades: BTreeMap<String, Grade>,
    /// Actions that need the tenant's authorisation on the Incident (`spec.approvals`) before
    /// they touch its data (8.9.1.6).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 6), extend("x-kubernetes-list-type" = "set"))]
    pub approval_required_for: Vec<ActionName>,
    /// Drills: the plan run as a dry run on a schedule, with a report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drills: Option<Drills>,
    /// Annual review of the plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review: Option<Review>,
}

/// A contact.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Contact {
    /// Who: a person, a team or a duty rota.
    #[schemars(length(min = 1, max = 128), regex(pattern = NOT_BLANK_PATTERN))]
    pub name: String,
    pub role: ContactRole,
    /// Names of channels (from `channels`) this contact is reached through, each once.
    #[serde(default)]
    #[schemars(length(max = 8), inner(length(min = 1, max = 63), regex(pattern = DNS_LABEL_PATTERN)), extend("x-kubernetes-list-type" = "set"))]
    pub channels: Vec<String>,
}

/// Role of a contact (8.9.1).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ContactRole {
    SecurityManager,
    Technical,
    Business,
    Administrative,
}

/// A notification channel.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Channel {
    #[schemars(length(min = 1, max = 63), regex(pattern = DNS_LABEL_PATTERN))]
    pub name: String,
    /// An HTTP(S) webhook.
    pub webhook: Webhook,
}

/// An HTTP(S) webhook whose URL is kept in a Secret (it often carries a token).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    /// Secret key holding the URL.
    pub url_secret_ref: SecretKeyRef,
    /// Body format.
    #[serde(default)]
    pub format: WebhookFormat,
}

/// Webhook body format.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum WebhookFormat {
    /// CloudEvents 1.0, structured JSON mode.
    #[default]
    CloudEvents,
    /// Plain JSON.
    Json,
}

/// A classification rule.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClassificationRule {
    /// What detections this rule matches.
    #[serde(rename = "match")]
    pub match_: DetectionMatch,
    /// Grade of the Incident created (a key of `grades`).
    #[schemars(length(min = 1, max = 16), regex(pattern = GRADE_PATTERN))]
    pub grade: String,
}

/// A detection pattern.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(!has(self.reason) && !has(self.kind)) || self.source == 'KubernetesEvent'").message("match.reason and match.kind apply only to source KubernetesEvent"))]
pub struct DetectionMatch {
    /// Source of the detection.
    pub source: DetectionSource,
    /// Event reason to match (source KubernetesEvent), such as `BackOff` or `FailedMount`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 128),
        regex(pattern = r"^[A-Za-z][A-Za-z0-9_.:-]*$")
    )]
    pub reason: Option<String>,
    /// Kind of the object the Event is about (source KubernetesEvent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = KIND_PATTERN))]
    pub kind: Option<String>,
}

/// Where a detection comes from.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum DetectionSource {
    BaselineDrift,
    BackupFailed,
    RPOBreached,
    RestoreTestFailed,
    PatchOverdue,
    PatchFailed,
    KubernetesEvent,
    Manual,
}

/// The response programme of a grade.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Grade {
    /// The contacts must be notified within this time of detection.
    #[x_kube(validation = duration_between("notifyWithin", "1m", "168h"))]
    pub notify_within: Duration,
    /// Actions run in order when an Incident of this grade is detected.
    #[serde(default)]
    #[schemars(length(max = 16))]
    pub actions: Vec<Action>,
}

/// One response action: exactly one field is set.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.notify) ? 1 : 0) + (has(self.isolateNetwork) ? 1 : 0) + (has(self.scaleDown) ? 1 : 0) + (has(self.lockAccounts) ? 1 : 0) + (has(self.backupNow) ? 1 : 0) + (has(self.restore) ? 1 : 0) == 1").message("each action sets exactly one of notify, isolateNetwork, scaleDown, lockAccounts, backupNow, restore"))]
pub struct Action {
    /// Notify the contacts (all channels when `channels` is empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<NotifyAction>,
    /// Deny all ingress and egress of the namespace (except DNS) until the Incident closes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolate_network: Option<IsolateNetworkAction>,
    /// Scale matching Deployments and StatefulSets to zero, recording their replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down: Option<ScaleDownAction>,
    /// Remove the namespace's RoleBindings to users and groups until the Incident closes (8.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_accounts: Option<LockAccountsAction>,
    /// Take a backup now with a BackupPolicy of the namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_now: Option<BackupNowAction>,
    /// Restore the newest verified backup of a BackupPolicy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreAction>,
}

/// Notify.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotifyAction {
    /// Channels to use, each once; every contact's channels when empty.
    #[serde(default)]
    #[schemars(length(max = 8), inner(length(min = 1, max = 63), regex(pattern = DNS_LABEL_PATTERN)), extend("x-kubernetes-list-type" = "set"))]
    pub channels: Vec<String>,
}

/// Isolate the namespace's network.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct IsolateNetworkAction {
    /// Namespaces still allowed in (forensics tooling, say). Never empty: an empty selector
    /// would let every namespace in and isolate nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "rules::optional_label_selector")]
    #[x_kube(validation = non_empty_selector("isolateNetwork.allowFromNamespaces"))]
    pub allow_from_namespaces: Option<LabelSelector>,
}

/// Scale down workloads.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScaleDownAction {
    /// Workloads to scale down; all Deployments and StatefulSets when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "rules::optional_label_selector")]
    pub selector: Option<LabelSelector>,
}

/// Lock accounts.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LockAccountsAction {}

/// Back up now.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupNowAction {
    /// BackupPolicy (same namespace) to use.
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN_PATTERN))]
    pub policy_ref: String,
}

/// Restore.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreAction {
    /// BackupPolicy (same namespace) whose newest verified backup is restored.
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN_PATTERN))]
    pub policy_ref: String,
}

/// Names of actions, for approvals.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ActionName {
    Notify,
    IsolateNetwork,
    ScaleDown,
    LockAccounts,
    BackupNow,
    Restore,
}

/// Drills.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Drills {
    /// When a drill runs (`0 10 1 */3 *`: quarterly).
    pub schedule: Schedule,
    /// Grade the drill exercises (a key of `grades`).
    #[schemars(length(min = 1, max = 16), regex(pattern = GRADE_PATTERN))]
    pub grade: String,
}

/// Review of the plan.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Review {
    /// Longest time between reviews (default 8760h, a year).
    #[serde(default = "default_review_interval")]
    #[x_kube(validation = duration_between("review.interval", "24h", "8784h"))]
    pub interval: Duration,
    /// Date of the last review (`2026-11-01`): a date that exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 10),
        regex(pattern = r"^(19[7-9][0-9]|2[0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$")
    )]
    #[x_kube(validation = Rule::new(r"!self.matches(r'^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$') || int(self.substring(8, 10)) <= (int(self.substring(5, 7)) == 2 ? ((int(self.substring(0, 4)) % 4 == 0 && int(self.substring(0, 4)) % 100 != 0) || int(self.substring(0, 4)) % 400 == 0 ? 29 : 28) : int(self.substring(5, 7)) in [4, 6, 9, 11] ? 30 : 31)").message("review.lastReviewed must be a date that exists (no 30 February)"))]
    pub last_reviewed: Option<String>,
}

/// Observed state of a plan.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmergencyPlanStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub observed_generation: Option<i64>,
    /// The newest drill.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_drill: Option<DrillResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_drill_time: Option<Time>,
    /// When the next review is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review_due: Option<Time>,
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub open_incidents: i32,
    /// Ready, ReviewOverdue, DrillOverdue.
    #[serde(default)]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
}

/// Result of a drill.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DrillResult {
    pub time: Time,
    /// The drill Incident.
    pub incident: String,
    pub result: DrillOutcome,
    /// How long notifying took (a Go duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_to_notify: Option<Duration>,
    /// How long containing took (a Go duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_to_contain: Option<Duration>,
}

status_words! {
    /// What a drill showed.
    DrillOutcome {
        /// Every step ran within its grade's times.
        #[default]
        Passed,
        /// A step failed or took longer than its grade allows.
        Failed,
    }
}

/// One security event, from detection to its post-incident report.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "opsec.x1642.dev",
    version = "v1alpha1",
    kind = "Incident",
    plural = "incidents",
    shortname = "inc",
    category = "opsec",
    namespaced,
    status = "IncidentStatus",
    derive = "PartialEq",
    validation = rules::status_kept("Incident"),
    doc = "Incident is one security event, from detection through notification, containment and recovery to its post-incident report, with a timeline and the SLA timings (ITU-T X.1642 clauses 8.6, 8.9).",
    printcolumn(name = "Grade", type_ = "string", json_path = ".spec.grade"),
    printcolumn(name = "Source", type_ = "string", json_path = ".spec.source"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Notified In",
        type_ = "string",
        json_path = ".status.timings.timeToNotify"
    ),
    printcolumn(
        name = "Drill",
        type_ = "boolean",
        json_path = ".spec.drill",
        priority = 1
    ),
    printcolumn(
        name = "Summary",
        type_ = "string",
        json_path = ".spec.summary",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("has(self.detectedAt) == has(oldSelf.detectedAt) && (!has(self.detectedAt) || self.detectedAt == oldSelf.detectedAt)").message("detectedAt is evidence: it is fixed when the Incident is created (absent, the creation time)").field_path(".detectedAt"))]
#[x_kube(validation = Rule::new("!has(oldSelf.subject) || (has(self.subject) && self.subject == oldSelf.subject)").message("subject is evidence: once set it cannot change").field_path(".subject"))]
#[x_kube(validation = Rule::new("!has(oldSelf.resolution) || has(self.resolution)").message("resolution cannot be removed: a resolved incident stays resolved (open a new Incident)").field_path(".resolution"))]
#[serde(rename_all = "camelCase")]
pub struct IncidentSpec {
    /// The EmergencyPlan (same namespace) that handles this incident; the namespace's only plan
    /// when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_ref: Option<LocalObjectRef>,
    /// What detected it. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("source is immutable"))]
    pub source: DetectionSource,
    /// Grade (a key of the plan's grades); may be changed by a person to regrade.
    #[schemars(length(min = 1, max = 16), regex(pattern = GRADE_PATTERN))]
    pub grade: String,
    /// One line on what happened.
    #[schemars(length(min = 1, max = 1024), regex(pattern = NOT_BLANK_PATTERN))]
    pub summary: String,
    /// When the event was detected; the creation time when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detected_at: Option<Time>,
    /// The object the event is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<ObjectReference>,
    /// A drill: actions are dry runs and nobody outside the plan is told. Evidence: fixed at
    /// creation.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message("drill is evidence: an incident cannot become a drill, nor a drill an incident"))]
    pub drill: bool,
    /// Actions the tenant has authorised (those listed in the plan's approvalRequiredFor).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 6), extend("x-kubernetes-list-type" = "set"))]
    pub approvals: Vec<ActionName>,
    /// Set to mark the event resolved; the operator then undoes containment, closes the
    /// incident and writes the post-incident report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<Resolution>,
}

/// How an incident ended.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Resolution {
    /// Root cause.
    #[schemars(length(min = 1, max = 4096), regex(pattern = NOT_BLANK_PATTERN))]
    pub cause: String,
    /// What to change in the plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub recommendations: Option<String>,
}

/// Phase of an incident.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema,
)]
pub enum IncidentPhase {
    Detected,
    Notified,
    Contained,
    Recovering,
    Resolved,
    Closed,
}

/// Observed state of an incident. The timeline, the phase and the report are evidence: entries
/// are only added, the phase only moves on, the report once written stays.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(oldSelf.phase) || (has(self.phase) && {'Detected': 0, 'Notified': 1, 'Contained': 2, 'Recovering': 3, 'Resolved': 4, 'Closed': 5}[self.phase] >= {'Detected': 0, 'Notified': 1, 'Contained': 2, 'Recovering': 3, 'Resolved': 4, 'Closed': 5}[oldSelf.phase])").message("phase is evidence: it only moves on (Detected, Notified, Contained, Recovering, Resolved, Closed)").field_path(".phase"))]
#[x_kube(validation = Rule::new("!has(oldSelf.timeline) || (has(self.timeline) && size(self.timeline) >= size(oldSelf.timeline) && oldSelf.timeline.all(e, e in self.timeline))").message("timeline is evidence: entries are only added, never changed or removed").field_path(".timeline"))]
#[x_kube(validation = Rule::new("!has(oldSelf.report) || (has(self.report) && self.report == oldSelf.report)").message("report is evidence: once written it stays as it is").field_path(".report"))]
pub struct IncidentStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<IncidentPhase>,
    /// Every action and notification, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128))]
    pub timeline: Vec<TimelineEntry>,
    /// Deadline to notify, from the grade's notifyWithin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_deadline: Option<Time>,
    /// SLA timings.
    #[serde(default)]
    pub timings: IncidentTimings,
    /// Other tenants' namespaces affected by the same subject (8.3 correlation), counted only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub related_namespaces: Option<i32>,
    /// The post-incident report, once closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<PostIncidentReport>,
    /// Ready.
    #[serde(default)]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
}

/// One entry of an incident's timeline.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TimelineEntry {
    pub time: Time,
    /// Detected, Notified, an action name, Resolved, Closed.
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z][A-Za-z0-9]*$"))]
    pub action: String,
    pub result: StepResult,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub message: Option<String>,
}

status_words! {
    /// What one step of an incident's timeline came to.
    StepResult {
        #[default]
        Succeeded,
        Failed,
        /// Not needed, or not configured.
        Skipped,
        /// Run as a dry run (a drill).
        DryRun,
        /// Waits for the tenant's approval (`approvalRequiredFor`).
        AwaitingApproval,
    }
}

/// SLA timings of an incident.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IncidentTimings {
    /// From detection to the first notification (a Go duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_to_notify: Option<Duration>,
    /// From detection to containment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_to_contain: Option<Duration>,
    /// From detection to resolution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_to_resolve: Option<Duration>,
    /// Whether notification met the grade's notifyWithin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_sla_met: Option<bool>,
}

/// The post-incident report (8.9.4).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostIncidentReport {
    pub closed_at: Time,
    #[schemars(length(max = 4096))]
    pub cause: String,
    /// Actions taken, with results.
    #[serde(default)]
    #[schemars(length(max = 64), inner(length(max = 1024)))]
    pub actions: Vec<String>,
    pub timings: IncidentTimings,
    /// What to change in the plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub recommendations: Option<String>,
}

fn default_review_interval() -> Duration {
    Duration("8760h".into())
}
