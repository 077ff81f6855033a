//! The CRDs against a real API server: they install and become Established, every sample in
//! config/samples/ is accepted as is, every CEL rule and the main patterns and bounds refuse what
//! they should with a message that names the field, and the kustomize trees under config/ render
//! and are accepted.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, PostParams};
use opsec_operator::api::{
    Backup, BackupPolicy, EmergencyPlan, Incident, PatchWindow, Restore, SecurityBaseline,
};
use serde_json::{Value, json};

/// The seven kinds, by the name used in the tables below.
const KINDS: [&str; 7] = [
    "SecurityBaseline",
    "BackupPolicy",
    "Backup",
    "Restore",
    "PatchWindow",
    "EmergencyPlan",
    "Incident",
];

fn api_resource(kind: &str) -> ApiResource {
    match kind {
        "SecurityBaseline" => ApiResource::erase::<SecurityBaseline>(&()),
        "BackupPolicy" => ApiResource::erase::<BackupPolicy>(&()),
        "Backup" => ApiResource::erase::<Backup>(&()),
        "Restore" => ApiResource::erase::<Restore>(&()),
        "PatchWindow" => ApiResource::erase::<PatchWindow>(&()),
        "EmergencyPlan" => ApiResource::erase::<EmergencyPlan>(&()),
        "Incident" => ApiResource::erase::<Incident>(&()),
        other => panic!("unknown kind {other}"),
    }
}

fn crd_name(kind: &str) -> String {
    let ar = api_resource(kind);
    format!("{}.{}", ar.plural, ar.group)
}

/// An Api for `kind`: cluster-wide for SecurityBaseline, in `ns` for the others.
fn api_for(client: &Client, kind: &str, ns: &str) -> Api<DynamicObject> {
    let ar = api_resource(kind);
    if kind == "SecurityBaseline" {
        Api::all_with(client.clone(), &ar)
    } else {
        Api::namespaced_with(client.clone(), ns, &ar)
    }
}

const LOCAL_PATH: &str = "local.path must be relative: segments of letters, digits, '-', '_' and '.', separated by '/', without '.' or '..'";

/// The smallest valid spec of each kind; every invalid case is one change to it.
fn valid_spec(kind: &str) -> Value {
    match kind {
        "SecurityBaseline" => json!({
            "namespaceSelector": {"matchLabels": {"opsec.x1642.dev/tenant-class": "schema-test-none"}}
        }),
        "BackupPolicy" => json!({
            "rpo": "6h",
            "storage": [{"name": "onsite", "local": {"path": "backups"}}]
        }),
        "Backup" => json!({"policyRef": {"name": "nightly"}, "trigger": "Manual"}),
        "Restore" => json!({"backupRef": {"name": "nightly-1"}}),
        "PatchWindow" => json!({
            "windows": [{"schedule": "0 2 * * 6", "duration": "4h"}]
        }),
        "EmergencyPlan" => json!({
            "contacts": [{"name": "security on duty", "role": "SecurityManager", "channels": ["pager"]}],
            "channels": [{"name": "pager", "webhook": {"urlSecretRef": {"name": "hooks", "key": "pager"}}}],
            "grades": {"P1": {"notifyWithin": "15m", "actions": [{"notify": {"channels": ["pager"]}}]}}
        }),
        "Incident" => json!({"source": "Manual", "grade": "P1", "summary": "credentials leaked"}),
        other => panic!("unknown kind {other}"),
    }
}

/// JSON merge patch (RFC 7386: objects merge, `null` removes a key, anything else replaces),
/// except that an empty object replaces: `{"matchLabels": {}}` empties the labels.
fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) if !p.is_empty() => {
            if !target.is_object() {
                *target = json!({});
            }
            let t = target.as_object_mut().unwrap();
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

fn object(kind: &str, name: &str, spec: Value) -> DynamicObject {
    let ar = api_resource(kind);
    serde_json::from_value(json!({
        "apiVersion": ar.api_version,
        "kind": ar.kind,
        "metadata": {"name": name},
        "spec": spec,
    }))
    .expect("a DynamicObject")
}

/// One object the API server must refuse.
struct Case {
    kind: &'static str,
    what: &'static str,
    /// Merge patch on the valid spec. For a transition case, the spec is first created valid and
    /// then updated with this patch.
    patch: Value,
    transition: bool,
    /// Path the error must be reported at: the message must contain `<field>: `.
    field: &'static str,
    /// Text the message must contain (the CEL rule's message, or the schema's complaint).
    message: &'static str,
}

fn bad(
    kind: &'static str,
    what: &'static str,
    patch: Value,
    field: &'static str,
    message: &'static str,
) -> Case {
    Case {
        kind,
        what,
        patch,
        transition: false,
        field,
        message,
    }
}

fn bad_update(
    kind: &'static str,
    what: &'static str,
    patch: Value,
    field: &'static str,
    message: &'static str,
) -> Case {
    Case {
        kind,
        what,
        patch,
        transition: true,
        field,
        message,
    }
}

const PATTERN: &str = "should match";
const ENUM: &str = "Unsupported value";
const REQUIRED: &str = "Required value";

#[rustfmt::skip]
fn invalid_cases() -> Vec<Case> {
    let sb = "SecurityBaseline";
    let bp = "BackupPolicy";
    let bk = "Backup";
    let rs = "Restore";
    let pw = "PatchWindow";
    let ep = "EmergencyPlan";
    let inc = "Incident";
    let offsite = json!({"name": "offsite", "s3": {"bucket": "tenant-backups", "credentialsSecretRef": {"name": "s3"}}});
    let onsite = json!({"name": "onsite", "local": {"path": "backups"}});
    let enc = json!({"keySecretRef": {"name": "backup-key", "key": "aes.key"}});
    vec![
        // SecurityBaseline
        bad(sb, "empty namespaceSelector", json!({"namespaceSelector": {}}), "spec.namespaceSelector", "namespaceSelector must not be empty"),
        bad(sb, "namespaceSelector with empty matchLabels", json!({"namespaceSelector": {"matchLabels": {}}}), "spec.namespaceSelector", "namespaceSelector must not be empty"),
        bad(sb, "template without metadata.name", json!({"templates": [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "info-"}, "data": {"tenant": "${tenant}"}}]}), "spec.templates", "templates: every template needs metadata.name"),
        bad(sb, "cluster-scoped template (Namespace)", json!({"templates": [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "${tenant}-extra"}}]}), "spec.templates", "templates: cluster-scoped kinds cannot be rendered into a namespace"),
        bad(sb, "cluster-scoped template (ClusterRoleBinding)", json!({"templates": [{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "x"}}]}), "spec.templates", "templates: cluster-scoped kinds cannot be rendered into a namespace"),
        bad(sb, "checkInterval below 10s", json!({"checkInterval": "5s"}), "spec.checkInterval", "checkInterval must be at least 10s"),
        bad(sb, "checkInterval in days", json!({"checkInterval": "7d"}), "spec.checkInterval", PATTERN),
        bad(sb, "resourceQuota without resources", json!({"controls": {"resourceQuota": {"hard": {}}}}), "spec.controls.resourceQuota.hard", "resourceQuota.hard must name at least one resource"),
        bad(sb, "tenantAccess without groups", json!({"controls": {"tenantAccess": {"adminRole": "admin"}}}), "spec.controls.tenantAccess", "tenantAccess needs at least one of adminGroups or viewGroups"),
        bad(sb, "workloadTemplates with empty selector", json!({"workloadTemplates": [{"selector": {}, "templates": [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}]}]}), "spec.workloadTemplates[0].selector", "workloadTemplates.selector must not be empty"),
        bad(sb, "workloadTemplates template without name", json!({"workloadTemplates": [{"selector": {"matchLabels": {"app": "web"}}, "templates": [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"labels": {"a": "b"}}}]}]}), "spec.workloadTemplates[0].templates", "workloadTemplates.templates: every template needs metadata.name"),
        bad(sb, "unknown mode", json!({"mode": "Permissive"}), "spec.mode", ENUM),
        bad(sb, "priority too large", json!({"priority": 5000}), "spec.priority", "less than or equal to 1000"),
        bad(sb, "priority too small", json!({"priority": -5000}), "spec.priority", "greater than or equal to -1000"),
        bad(sb, "unknown Pod Security level", json!({"controls": {"podSecurity": {"enforce": "strict"}}}), "spec.controls.podSecurity.enforce", ENUM),
        bad(sb, "Pod Security version without v", json!({"controls": {"podSecurity": {"version": "1.30"}}}), "spec.controls.podSecurity.version", PATTERN),
        bad(sb, "excluded namespace not a DNS label", json!({"excludeNamespaces": ["Kube_System"]}), "spec.excludeNamespaces[0]", PATTERN),
        bad(sb, "ignoreDifferences pointer not absolute", json!({"ignoreDifferences": [{"kind": "ResourceQuota", "jsonPointers": ["spec/hard/pods"]}]}), "spec.ignoreDifferences[0].jsonPointers[0]", PATTERN),
        bad(sb, "namespaceSelector missing", json!({"namespaceSelector": null}), "spec.namespaceSelector", REQUIRED),

        // BackupPolicy
        bad(bp, "rpo in days", json!({"rpo": "7d"}), "spec.rpo", PATTERN),
        bad(bp, "rpo below 1m", json!({"rpo": "30s"}), "spec.rpo", "rpo must be at least 1m"),
        bad(bp, "rpo missing", json!({"rpo": null}), "spec.rpo", REQUIRED),
        bad(bp, "rto of zero", json!({"rto": "0s"}), "spec.rto", "rto must be at least 1s"),
        bad(bp, "s3 storage without encryption", json!({"storage": [onsite, offsite]}), "spec.encryption", "encryption is required when any storage location is off-site (s3)"),
        bad(bp, "storage with two backends", json!({"storage": [{"name": "both", "local": {"path": "backups"}, "persistentVolumeClaim": {"claimName": "backups"}}]}), "spec.storage[0]", "each storage location sets exactly one of local, persistentVolumeClaim or s3"),
        bad(bp, "storage with no backend", json!({"storage": [{"name": "nothing"}]}), "spec.storage[0]", "each storage location sets exactly one of local, persistentVolumeClaim or s3"),
        bad(bp, "duplicate storage names", json!({"storage": [onsite, {"name": "onsite", "local": {"path": "other"}}]}), "spec.storage", "storage names must be unique"),
        bad(bp, "no storage", json!({"storage": []}), "spec.storage", "should have at least 1 items"),
        bad(bp, "absolute local path", json!({"storage": [{"name": "onsite", "local": {"path": "/var/lib/opsec/backups"}}]}), "spec.storage[0].local.path", LOCAL_PATH),
        bad(bp, "local path escaping with ..", json!({"storage": [{"name": "onsite", "local": {"path": "team/../../other-tenant"}}]}), "spec.storage[0].local.path", LOCAL_PATH),
        bad(bp, "local path of .", json!({"storage": [{"name": "onsite", "local": {"path": "."}}]}), "spec.storage[0].local.path", LOCAL_PATH),
        bad(bp, "local path with an empty segment", json!({"storage": [{"name": "onsite", "local": {"path": "a//b"}}]}), "spec.storage[0].local.path", LOCAL_PATH),
        bad(bp, "local path with a space", json!({"storage": [{"name": "onsite", "local": {"path": "a b"}}]}), "spec.storage[0].local.path", LOCAL_PATH),
        bad(bp, "restore test timeout over a day", json!({"rto": "1h", "verification": {"restoreTest": {"timeout": "25h"}}}), "spec.verification.restoreTest.timeout", "restoreTest.timeout must be at most 24h"),
        bad(bp, "serviceAccountName not a DNS name", json!({"serviceAccountName": "Backup_Bot"}), "spec.serviceAccountName", PATTERN),
        bad(rs, "Restore serviceAccountName not a DNS name", json!({"serviceAccountName": "../admin"}), "spec.serviceAccountName", PATTERN),
        bad(bp, "PVC path with ..", json!({"storage": [{"name": "onsite", "persistentVolumeClaim": {"claimName": "backups", "path": "../other-tenant"}}]}), "spec.storage[0].persistentVolumeClaim.path", "persistentVolumeClaim.path must not contain '..'"),
        bad(bp, "s3 endpoint not http(s)", json!({"encryption": enc, "storage": [{"name": "offsite", "s3": {"bucket": "tenant-backups", "endpoint": "ftp://s3.example.net", "credentialsSecretRef": {"name": "s3"}}}]}), "spec.storage[0].s3.endpoint", "s3.endpoint must be an http or https URL"),
        bad(bp, "absolute s3 prefix", json!({"encryption": enc, "storage": [{"name": "offsite", "s3": {"bucket": "tenant-backups", "prefix": "/clusters", "credentialsSecretRef": {"name": "s3"}}}]}), "spec.storage[0].s3.prefix", "s3.prefix must be relative and must not contain '..'"),
        bad(bp, "s3 bucket name too short and upper-case", json!({"encryption": enc, "storage": [{"name": "offsite", "s3": {"bucket": "AB", "credentialsSecretRef": {"name": "s3"}}}]}), "spec.storage[0].s3.bucket", "spec.storage[0].s3.bucket in body"),
        bad(bp, "restore test timeout below 10s", json!({"verification": {"restoreTest": {"timeout": "5s"}}}), "spec.verification.restoreTest.timeout", "restoreTest.timeout must be at least 10s"),
        bad(bp, "restore test timeout shorter than rto", json!({"rto": "30m", "verification": {"restoreTest": {"timeout": "10m"}}}), "spec.verification.restoreTest.timeout", "verification.restoreTest.timeout must be at least the rto"),
        bad(bp, "retention maxAge shorter than rpo", json!({"retention": {"maxAge": "1h"}}), "spec.retention.maxAge", "retention.maxAge must be at least the rpo"),
        bad(bp, "retention maxAge in days", json!({"retention": {"maxAge": "30d"}}), "spec.retention.maxAge", PATTERN),
        bad(bp, "restore test timeout in days", json!({"rto": "30m", "verification": {"restoreTest": {"timeout": "1d"}}}), "spec.verification.restoreTest.timeout", PATTERN),
        bad(bp, "zero copies", json!({"retention": {"copies": 0}}), "spec.retention.copies", "greater than or equal to 1"),
        bad(bp, "too many copies", json!({"retention": {"copies": 5000}}), "spec.retention.copies", "less than or equal to 1000"),
        bad(bp, "negative keepFailed", json!({"retention": {"keepFailed": -1}}), "spec.retention.keepFailed", "greater than or equal to 0"),
        bad(bp, "schedule in words", json!({"schedule": "every 6 hours"}), "spec.schedule", PATTERN),
        bad(bp, "schedule with four fields", json!({"schedule": "0 */6 * *"}), "spec.schedule", PATTERN),
        bad(bp, "time zone with a space", json!({"timeZone": "Europe/Berlin Time"}), "spec.timeZone", PATTERN),
        bad(bp, "encryption Secret name not a DNS name", json!({"encryption": {"keySecretRef": {"name": "Backup_Key", "key": "aes.key"}}}), "spec.encryption.keySecretRef.name", PATTERN),
        bad(bp, "acceptRestoresFrom not a namespace name", json!({"acceptRestoresFrom": ["Tenant B"]}), "spec.acceptRestoresFrom[0]", PATTERN),

        // Backup
        bad_update(bk, "policyRef changed", json!({"policyRef": {"name": "other"}}), "spec", "Backup spec is immutable: create a new Backup instead"),
        bad_update(bk, "trigger changed", json!({"trigger": "Incident"}), "spec", "Backup spec is immutable: create a new Backup instead"),
        bad(bk, "unknown trigger", json!({"trigger": "Nightly"}), "spec.trigger", ENUM),
        bad(bk, "policyRef missing", json!({"policyRef": null}), "spec.policyRef", REQUIRED),
        bad(bk, "policyRef name not a DNS name", json!({"policyRef": {"name": "Nightly!"}}), "spec.policyRef.name", PATTERN),
        bad(bk, "policyRef name empty", json!({"policyRef": {"name": ""}}), "spec.policyRef.name", "at least 1 chars long"),

        // Restore
        bad(rs, "both backupRef and source", json!({"source": {"policyRef": {"name": "nightly"}, "backupId": "20260101T000000Z-ab12"}}), "spec", "set exactly one of backupRef or source"),
        bad(rs, "neither backupRef nor source", json!({"backupRef": null, "kinds": ["ConfigMap"]}), "spec", "set exactly one of backupRef or source"),
        bad_update(rs, "kinds changed", json!({"kinds": ["Secret"]}), "spec", "Restore spec is immutable: create a new Restore instead"),
        bad_update(rs, "existingObjects changed", json!({"existingObjects": "Overwrite"}), "spec", "Restore spec is immutable: create a new Restore instead"),
        bad(rs, "targetNamespace not a DNS label", json!({"targetNamespace": "Tenant_B"}), "spec.targetNamespace", PATTERN),
        bad(rs, "unknown existingObjects", json!({"existingObjects": "Merge"}), "spec.existingObjects", ENUM),
        bad(rs, "backup id starting with -", json!({"backupRef": null, "source": {"policyRef": {"name": "nightly"}, "backupId": "-rf"}}), "spec.source.backupId", PATTERN),
        bad(rs, "source without policyRef", json!({"backupRef": null, "source": {"backupId": "20260101T000000Z-ab12"}}), "spec.source.policyRef", REQUIRED),

        // PatchWindow
        bad(pw, "no window", json!({"windows": []}), "spec.windows", "should have at least 1 items"),
        bad(pw, "daily window longer than a day", json!({"windows": [{"schedule": "0 2 * * *", "duration": "25h"}]}), "spec.windows[0].duration", "a window's duration must be shorter than the period of its schedule"),
        bad(pw, "weekly window longer than a week", json!({"windows": [{"schedule": "0 2 * * 6", "duration": "200h"}]}), "spec.windows[0].duration", "a window's duration must be shorter than the period of its schedule"),
        bad(pw, "hourly window of two hours", json!({"windows": [{"schedule": "30 * * * *", "duration": "2h"}]}), "spec.windows[0].duration", "a window's duration must be shorter than the period of its schedule"),
        bad(pw, "@daily window of a day", json!({"windows": [{"schedule": "@daily", "duration": "24h"}]}), "spec.windows[0].duration", "a window's duration must be shorter than the period of its schedule"),
        bad(pw, "window below 1m", json!({"windows": [{"schedule": "0 2 * * 6", "duration": "30s"}]}), "spec.windows[0].duration", "window duration must be at least 1m"),
        bad(pw, "window duration in words", json!({"windows": [{"schedule": "0 2 * * 6", "duration": "4 hours"}]}), "spec.windows[0].duration", PATTERN),
        bad(pw, "window duration in days", json!({"windows": [{"schedule": "0 2 1 * *", "duration": "1d"}]}), "spec.windows[0].duration", PATTERN),
        bad(pw, "maxDelay in days", json!({"sla": {"high": {"maxDelay": "7d"}}}), "spec.sla.high.maxDelay", PATTERN),
        bad(pw, "window schedule with four fields", json!({"windows": [{"schedule": "0 2 * *", "duration": "4h"}]}), "spec.windows[0].schedule", PATTERN),
        bad(pw, "freeze ending before it starts", json!({"freezes": [{"start": "2027-01-05T00:00:00Z", "end": "2026-12-20T00:00:00Z", "reason": "year-end"}]}), "spec.freezes[0].end", "a freeze must end after it starts"),
        bad(pw, "freeze start not a date-time", json!({"freezes": [{"start": "2026-13-01", "end": "2027-01-05T00:00:00Z"}]}), "spec.freezes[0].start", "date-time"),
        bad(pw, "critical maxDelay above high", json!({"sla": {"critical": {"maxDelay": "200h"}}}), "spec.sla", "sla: maxDelay must not shrink as priority falls"),
        bad(pw, "maxDelay below 1m", json!({"sla": {"critical": {"maxDelay": "30s"}}}), "spec.sla.critical.maxDelay", "maxDelay must be at least 1m"),
        bad(pw, "image from equals to", json!({"patches": [{"name": "noop", "priority": "high", "images": [{"from": "registry.example/app:1.2.3", "to": "registry.example/app:1.2.3"}]}]}), "spec.patches[0].images", "images: from and to must differ"),
        bad(pw, "duplicate patch names", json!({"patches": [
            {"name": "openssl-3.0.15", "priority": "critical", "images": [{"from": "registry.example/app:1.2.3", "to": "registry.example/app:1.2.4"}]},
            {"name": "openssl-3.0.15", "priority": "high", "images": [{"from": "registry.example/web:1.0", "to": "registry.example/web:1.1"}]}
        ]}), "spec.patches", "patches: names must be unique"),
        bad(pw, "unknown priority", json!({"patches": [{"name": "p", "priority": "urgent", "images": [{"from": "registry.example/app:1", "to": "registry.example/app:2"}]}]}), "spec.patches[0].priority", ENUM),
        bad(pw, "upper-case image", json!({"patches": [{"name": "p", "priority": "low", "images": [{"from": "Registry.example/App:1", "to": "registry.example/app:2"}]}]}), "spec.patches[0].images[0].from", PATTERN),
        bad(pw, "patch name with underscore", json!({"patches": [{"name": "openssl_3", "priority": "low", "images": [{"from": "registry.example/app:1", "to": "registry.example/app:2"}]}]}), "spec.patches[0].name", PATTERN),
        bad(pw, "maxParallel of zero", json!({"rollout": {"maxParallel": 0}}), "spec.rollout.maxParallel", "greater than or equal to 1"),
        bad(pw, "progressTimeout below 10s", json!({"rollout": {"progressTimeout": "5s"}}), "spec.rollout.progressTimeout", "progressTimeout must be at least 10s"),
        bad(pw, "lower-case severity", json!({"vulnerabilityReports": {"minSeverity": "high"}}), "spec.vulnerabilityReports.minSeverity", ENUM),
        bad(pw, "notifyBefore in days", json!({"notifyBefore": "1d"}), "spec.notifyBefore", PATTERN),

        // EmergencyPlan
        bad(ep, "contact with an undefined channel", json!({"contacts": [{"name": "ops", "role": "Technical", "channels": ["sms"]}]}), "spec.contacts", "contacts: every channel a contact names must be defined in channels"),
        bad(ep, "notify action naming an undefined channel", json!({"grades": {"P1": {"notifyWithin": "15m", "actions": [{"notify": {"channels": ["sms"]}}]}}}), "spec.grades", "grades: a notify action names a channel that is not defined in channels"),
        bad(ep, "classification naming an undefined grade", json!({"classification": [{"match": {"source": "BaselineDrift"}, "grade": "P9"}]}), "spec.classification", "classification: every rule's grade must be defined in grades"),
        bad(ep, "drills with an undefined grade", json!({"drills": {"schedule": "0 10 1 */3 *", "grade": "P3"}}), "spec.drills.grade", "drills.grade must be defined in grades"),
        bad(ep, "duplicate channel names", json!({"channels": [
            {"name": "pager", "webhook": {"urlSecretRef": {"name": "hooks", "key": "pager"}}},
            {"name": "pager", "webhook": {"urlSecretRef": {"name": "hooks", "key": "pager2"}}}
        ]}), "spec.channels", "channels: names must be unique"),
        bad(ep, "grade name with a space", json!({"grades": {"P 1": {"notifyWithin": "15m"}, "P1": null}}), "spec.grades", "grades: names must be 1 to 16 letters, digits, '-' or '_'"),
        bad(ep, "event reason on a non-event source", json!({"classification": [{"match": {"source": "BaselineDrift", "reason": "FailedMount"}, "grade": "P1"}]}), "spec.classification[0].match", "match.reason and match.kind apply only to source KubernetesEvent"),
        bad(ep, "action with two steps", json!({"grades": {"P1": {"notifyWithin": "15m", "actions": [{"notify": {}, "lockAccounts": {}}]}}}), "spec.grades[P1].actions[0]", "each action sets exactly one of notify, isolateNetwork, scaleDown, lockAccounts, backupNow, restore"),
        bad(ep, "empty action", json!({"grades": {"P1": {"notifyWithin": "15m", "actions": [{}]}}}), "spec.grades[P1].actions[0]", "each action sets exactly one of"),
        bad(ep, "review more often than daily", json!({"review": {"interval": "1h"}}), "spec.review.interval", "review.interval must be at least 24h"),
        bad(ep, "no contacts", json!({"contacts": []}), "spec.contacts", "should have at least 1 items"),
        bad(ep, "unknown contact role", json!({"contacts": [{"name": "boss", "role": "Boss"}]}), "spec.contacts[0].role", ENUM),
        bad(ep, "no grades", json!({"grades": {}}), "spec.grades", "should have at least 1 properties"),
        bad(ep, "notifyWithin in words", json!({"grades": {"P1": {"notifyWithin": "15 minutes"}}}), "spec.grades.P1.notifyWithin", PATTERN),
        bad(ep, "lastReviewed not a date", json!({"review": {"lastReviewed": "2026-13-01"}}), "spec.review.lastReviewed", PATTERN),
        bad(ep, "unknown approval action", json!({"approvalRequiredFor": ["deleteEverything"]}), "spec.approvalRequiredFor[0]", ENUM),
        bad(ep, "unknown webhook format", json!({"channels": [{"name": "pager", "webhook": {"urlSecretRef": {"name": "hooks", "key": "pager"}, "format": "XML"}}]}), "spec.channels[0].webhook.format", ENUM),
        bad(ep, "backupNow with a bad policy name", json!({"grades": {"P1": {"notifyWithin": "15m", "actions": [{"backupNow": {"policyRef": "Nightly"}}]}}}), "spec.grades.P1.actions[0].backupNow.policyRef", PATTERN),

        // Incident
        bad_update(inc, "source changed", json!({"source": "BaselineDrift"}), "spec.source", "source is immutable"),
        bad(inc, "unknown source", json!({"source": "Twitter"}), "spec.source", ENUM),
        bad(inc, "grade with a space", json!({"grade": "P 1"}), "spec.grade", PATTERN),
        bad(inc, "empty summary", json!({"summary": ""}), "spec.summary", "at least 1 chars long"),
        bad(inc, "summary missing", json!({"summary": null}), "spec.summary", REQUIRED),
        bad(inc, "unknown approval", json!({"approvals": ["everything"]}), "spec.approvals[0]", ENUM),
        bad(inc, "detectedAt not a date-time", json!({"detectedAt": "yesterday"}), "spec.detectedAt", "date-time"),
        bad(inc, "resolution without a cause", json!({"resolution": {"cause": ""}}), "spec.resolution.cause", "at least 1 chars long"),
    ]
}

/// What the API server said about one case: None when it refused it as expected.
async fn run_case(client: &Client, ns: &str, case: &Case) -> (Option<String>, String) {
    let api = api_for(client, case.kind, ns);
    let name = common::unique("invalid");
    let mut spec = valid_spec(case.kind);
    let result = if case.transition {
        let created = match api
            .create(
                &PostParams::default(),
                &object(case.kind, &name, spec.clone()),
            )
            .await
        {
            Ok(o) => o,
            Err(e) => {
                return (
                    Some(format!("the valid object to update was refused: {e}")),
                    String::new(),
                );
            }
        };
        merge(&mut spec, &case.patch);
        let mut updated = created.clone();
        updated.data["spec"] = spec;
        api.replace(&name, &PostParams::default(), &updated).await
    } else {
        merge(&mut spec, &case.patch);
        api.create(&PostParams::default(), &object(case.kind, &name, spec))
            .await
    };
    let outcome = match result {
        Ok(_) => (Some("accepted".to_string()), String::new()),
        Err(kube::Error::Api(status)) => {
            let msg = status.message.clone();
            let mut problems = vec![];
            if status.code != 422 || status.reason != "Invalid" {
                problems.push(format!(
                    "refused with {} {} instead of 422 Invalid",
                    status.code, status.reason
                ));
            }
            if !msg.contains(&format!("{}: ", case.field)) {
                problems.push(format!("message does not name the field {:?}", case.field));
            }
            if msg.contains("evaluating rule") || msg.contains("no such key") {
                problems.push("a CEL rule failed to evaluate instead of judging (guard it with has() or a format check)".to_string());
            }
            if !msg.contains(case.message) {
                problems.push(format!("message does not say {:?}", case.message));
            }
            if problems.is_empty() {
                (None, msg)
            } else {
                (
                    Some(format!("{}; the message: {msg}", problems.join("; "))),
                    msg,
                )
            }
        }
        Err(e) => (Some(format!("unexpected error: {e}")), String::new()),
    };
    // Whatever happened, leave nothing behind (cluster-scoped baselines above all).
    let _ = api.delete(&name, &DeleteParams::default()).await;
    outcome
}

/// Every `message` of every CEL rule (`x-kubernetes-validations`) in a generated CRD.
fn cel_messages(crd: &serde_yaml::Value, out: &mut BTreeSet<String>) {
    match crd {
        serde_yaml::Value::Mapping(m) => {
            for (k, v) in m {
                if k.as_str() == Some("x-kubernetes-validations") {
                    for rule in v.as_sequence().into_iter().flatten() {
                        let msg = rule.get("message").and_then(|m| m.as_str());
                        let rule_text = rule.get("rule").and_then(|r| r.as_str()).unwrap_or("?");
                        let msg = msg
                            .unwrap_or_else(|| panic!("CEL rule without a message: {rule_text}"));
                        out.insert(msg.to_string());
                    }
                }
                cel_messages(v, out);
            }
        }
        serde_yaml::Value::Sequence(s) => s.iter().for_each(|v| cel_messages(v, out)),
        _ => {}
    }
}

fn read_crd_yaml(kind: &str) -> serde_yaml::Value {
    let path = common::repo_root()
        .join("crds")
        .join(format!("{}.yaml", crd_name(kind)));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every `rule` of every CEL rule in a generated CRD.
fn cel_rules(crd: &serde_yaml::Value, out: &mut Vec<String>) {
    match crd {
        serde_yaml::Value::Mapping(m) => {
            for (k, v) in m {
                if k.as_str() == Some("x-kubernetes-validations") {
                    for rule in v.as_sequence().into_iter().flatten() {
                        out.extend(rule.get("rule").and_then(|r| r.as_str()).map(String::from));
                    }
                }
                cel_rules(v, out);
            }
        }
        serde_yaml::Value::Sequence(s) => s.iter().for_each(|v| cel_rules(v, out)),
        _ => {}
    }
}

/// A rule that calls `duration()` on a string first checks it against the schema's duration
/// pattern, so that a malformed duration is refused by the pattern alone, not also by a CEL
/// evaluation error; the copy of the pattern in the rule must be the schema's.
#[test]
fn duration_rules_guard_with_the_schema_pattern() {
    let guard = format!(
        "matches(r'{}')",
        opsec_operator::api::common::DURATION_PATTERN
    );
    for kind in KINDS {
        let mut rules = vec![];
        cel_rules(&read_crd_yaml(kind), &mut rules);
        for rule in rules.iter().filter(|r| r.contains("duration(self")) {
            assert!(
                rule.contains(&guard),
                "{kind}: rule {rule:?} calls duration() without the guard {guard:?}"
            );
        }
    }
}

#[tokio::test]
async fn crds_install_and_become_established() {
    common::install_crds();
    let client = common::client().await;
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    for kind in KINDS {
        let name = crd_name(kind);
        let crd = crds
            .get(&name)
            .await
            .unwrap_or_else(|e| panic!("CRD {name}: {e}"));
        let established = crd
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .find(|c| c.type_ == "Established")
            .map(|c| c.status.clone());
        assert_eq!(
            established.as_deref(),
            Some("True"),
            "CRD {name} is not Established"
        );
        let categories = crd.spec.names.categories.clone().unwrap_or_default();
        assert!(
            categories.iter().any(|c| c == "opsec"),
            "CRD {name} is not in category opsec"
        );
    }
    // The category: kubectl's discovery may lag a freshly installed CRD by a moment.
    common::eventually(
        Duration::from_secs(30),
        "`kubectl get opsec -A` to work",
        || async {
            let (ok, _, _) = common::kubectl(&["get", "opsec", "-A"]);
            ok.then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn every_sample_is_accepted_as_is() {
    common::install_crds();
    let client = common::client().await;
    let ns = common::namespace(&client, "samples", &[]).await;
    let dir = common::repo_root().join("config/samples");
    let mut seen = BTreeSet::new();
    let mut failures = vec![];
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let kustomization = std::fs::read_to_string(dir.join("kustomization.yaml"))
        .expect("config/samples/kustomization.yaml");
    for path in files {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        if file == "kustomization.yaml" || !file.ends_with(".yaml") {
            continue;
        }
        assert!(
            kustomization.contains(&format!("- {file}")),
            "config/samples/kustomization.yaml does not list {file}"
        );
        let text = std::fs::read_to_string(&path).unwrap();
        let mut obj: DynamicObject =
            serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(
            obj.metadata.namespace.is_none(),
            "{file} sets metadata.namespace; samples must apply into any namespace"
        );
        let kind = obj
            .types
            .as_ref()
            .map(|t| t.kind.clone())
            .unwrap_or_default();
        assert!(
            KINDS.contains(&kind.as_str()),
            "{file}: unexpected kind {kind}"
        );
        seen.insert(kind.clone());
        let api = api_for(&client, &kind, &ns);
        if kind == "SecurityBaseline" {
            // Cluster-scoped: a name of the test's own, nothing else changed.
            obj.metadata.name = Some(common::unique("sample"));
        }
        let name = obj.metadata.name.clone().unwrap();
        match api.create(&PostParams::default(), &obj).await {
            Ok(_) => {}
            Err(e) => failures.push(format!("{file} ({kind}) was refused: {e}")),
        }
        if kind == "SecurityBaseline" {
            // Leave no baseline behind that could select namespaces of other tests.
            let _ = api.delete(&name, &DeleteParams::default()).await;
        }
    }
    common::delete_namespace(&client, &ns).await;
    assert!(
        failures.is_empty(),
        "samples refused:\n{}",
        failures.join("\n")
    );
    let missing: Vec<_> = KINDS.iter().filter(|k| !seen.contains(**k)).collect();
    assert!(
        missing.is_empty(),
        "config/samples has no sample of {missing:?}"
    );
}

#[tokio::test]
async fn invalid_objects_are_refused_naming_the_field() {
    common::install_crds();
    let client = common::client().await;
    let ns = common::namespace(&client, "invalid", &[]).await;
    let cases = invalid_cases();

    // The table itself: enough cases, for every kind.
    let mut per_kind: BTreeMap<&str, usize> = BTreeMap::new();
    for c in &cases {
        *per_kind.entry(c.kind).or_default() += 1;
    }
    assert!(cases.len() >= 40, "only {} invalid cases", cases.len());
    for kind in KINDS {
        let n = per_kind.get(kind).copied().unwrap_or(0);
        assert!(n >= 5, "only {n} invalid cases for {kind}");
    }

    // Sanity: the valid spec of every kind is accepted, or every case would pass for nothing.
    for kind in KINDS {
        let api = api_for(&client, kind, &ns);
        let name = common::unique("valid");
        api.create(
            &PostParams::default(),
            &object(kind, &name, valid_spec(kind)),
        )
        .await
        .unwrap_or_else(|e| panic!("the valid {kind} of the table is refused: {e}"));
        let _ = api.delete(&name, &DeleteParams::default()).await;
    }

    let results: Vec<(Option<String>, String)> = futures::stream::iter(cases.iter())
        .map(|case| run_case(&client, &ns, case))
        .buffered(8)
        .collect()
        .await;

    let mut failures = vec![];
    let mut refused_messages: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (case, (failure, message)) in cases.iter().zip(results) {
        match failure {
            Some(f) => failures.push(format!("{} / {}: {f}", case.kind, case.what)),
            None => refused_messages.entry(case.kind).or_default().push(message),
        }
    }

    // Every CEL rule of every CRD is exercised: its message appears in some refusal.
    for kind in KINDS {
        let mut messages = BTreeSet::new();
        cel_messages(&read_crd_yaml(kind), &mut messages);
        let said = refused_messages.get(kind).cloned().unwrap_or_default();
        for m in messages {
            if !said.iter().any(|s| s.contains(&m)) {
                failures.push(format!(
                    "{kind}: no invalid case triggers the CEL rule {m:?}"
                ));
            }
        }
    }

    common::delete_namespace(&client, &ns).await;
    assert!(
        failures.is_empty(),
        "{} of {} invalid cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn crd_copies_for_kustomize_match_crds() {
    let root = common::repo_root();
    for kind in KINDS {
        let file = format!("{}.yaml", crd_name(kind));
        let generated = std::fs::read_to_string(root.join("crds").join(&file)).unwrap();
        let copy = std::fs::read_to_string(root.join("config/crd/bases").join(&file))
            .unwrap_or_else(|e| panic!("config/crd/bases/{file}: {e}"));
        assert!(
            generated == copy,
            "config/crd/bases/{file} differs from crds/{file}: run `cp crds/*.yaml config/crd/bases/`"
        );
    }
}

#[tokio::test]
async fn default_config_renders_and_is_accepted_by_the_api_server() {
    common::install_crds();
    let _client = common::client().await;
    for dir in [
        "config/crd",
        "config/rbac",
        "config/manager",
        "config/samples",
        "config/default",
    ] {
        let (ok, out, err) = common::kubectl(&["kustomize", dir]);
        assert!(
            ok && !out.is_empty(),
            "kubectl kustomize {dir} failed:\n{err}"
        );
    }
    let (_, rendered, _) = common::kubectl(&["kustomize", "config/default"]);
    for kind in [
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Namespace",
        "Deployment",
        "Service",
    ] {
        assert!(
            rendered.contains(&format!("\nkind: {kind}\n")),
            "config/default renders no {kind}"
        );
    }
    // A server-side dry run of the namespaced objects needs their namespace to exist.
    let (ok, _, err) = common::kubectl(&["create", "namespace", "opsec-system"]);
    assert!(
        ok || err.contains("AlreadyExists"),
        "create namespace opsec-system: {err}"
    );
    let (ok, out, err) = common::kubectl(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "--dry-run=server",
        "-k",
        "config/default",
    ]);
    assert!(
        ok,
        "config/default is refused by the API server:\n{out}\n{err}"
    );
    assert!(
        !err.contains("would violate PodSecurity"),
        "the operator's pod breaks Pod Security:\n{err}"
    );
    assert!(
        out.lines().count() >= 17,
        "fewer objects applied than rendered:\n{out}"
    );
}
