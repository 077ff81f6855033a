//! Admission on the real API server: every class of invalid value is refused for every kind it
//! applies to, with a message that names the field (and never a CEL evaluation error), and the
//! valid edge cases of the same classes keep being accepted.
//!
//! The invalid cases are written from the rules, class by class (README "What is checked
//! where"); each is one change to the smallest valid object of its kind. The test prints the
//! count per kind and class.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::kinds::{KINDS, api_for, crd_name, merge, object, valid_spec};
use futures::StreamExt;
use kube::Client;
use kube::api::{DeleteParams, PostParams};
use serde_json::{Value, json};

const PATTERN: &str = "should match";
const ENUM: &str = "Unsupported value";
const REQUIRED: &str = "Required value";
const DUPLICATE: &str = "Duplicate value";
const TOO_LONG: &str = "Too long";

const SB: &str = "SecurityBaseline";
const BP: &str = "BackupPolicy";
const BK: &str = "Backup";
const RS: &str = "Restore";
const PW: &str = "PatchWindow";
const EP: &str = "EmergencyPlan";
const INC: &str = "Incident";

/// How a case reaches the API server.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Create the valid object with the patch applied.
    Create,
    /// Create the valid object (with `before` applied), then update its spec with the patch.
    Update,
    /// Create the valid object, then write the patch as its status.
    Status,
}

/// One object the API server must refuse.
struct Case {
    kind: &'static str,
    class: &'static str,
    what: String,
    mode: Mode,
    /// Applied to the valid spec before the object is created (update cases).
    before: Value,
    /// Merge patch on the valid spec (or the status, for status cases).
    patch: Value,
    /// The object's name, when the case is about the name.
    name: Option<String>,
    /// Path the error must be reported at: the message must contain `<field>: `.
    field: String,
    /// Text the message must contain.
    message: String,
}

fn case(
    kind: &'static str,
    class: &'static str,
    what: impl Into<String>,
    patch: Value,
    field: impl Into<String>,
    message: impl Into<String>,
) -> Case {
    Case {
        kind,
        class,
        what: what.into(),
        mode: Mode::Create,
        before: json!({}),
        patch,
        name: None,
        field: field.into(),
        message: message.into(),
    }
}

impl Case {
    fn update(mut self, before: Value) -> Self {
        self.mode = Mode::Update;
        self.before = before;
        self
    }
    fn status(mut self) -> Self {
        self.mode = Mode::Status;
        self
    }
    fn status_after(mut self, before: Value) -> Self {
        self.mode = Mode::Status;
        self.before = before;
        self
    }
    fn named(mut self, name: String) -> Self {
        self.name = Some(name);
        self
    }
}

const LOCAL_PATH: &str = "local.path must be relative";
const SELECTOR_KEYS: &str = "matchLabels: every key must be a label key";
const IN_VALUES: &str = "In and NotIn need at least one value, Exists and DoesNotExist take none";
const PREFIX: &str = "the prefix before '/' must be at most 253 characters";
const WINDOW: &str =
    "a window's duration must be shorter than the time between two openings of its schedule";
const RPO_GAPS: &str = "schedule leaves longer gaps between backups than the rpo";
const NEVER: &str = "the schedule names only days that never occur in the months it names";
const RANGE: &str = "a cron range must run from low to high";
const TIME_ZONE: &str = "timeZone must be a name of the IANA time-zone database";
const SECRET_KEY: &str = "key must not be '.' or start with '..'";
const BUCKET: &str = "s3.bucket must be a name S3 allows";
const ENDPOINT: &str = "s3.endpoint must be an http or https URL with a host name or address and a port from 1 to 65535, and with no query or fragment";
const ENDPOINT_CREDENTIALS: &str = "s3.endpoint must not carry credentials";
const ENDPOINT_HTTPS: &str = "s3.endpoint must use https";

/// A ConfigMap template, valid unless changed.
fn config_map(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"tenant": "${tenant}"}})
}

/// Builds a spec patch around a value.
type Wrap = fn(Value) -> Value;
/// Builds a spec patch around a string.
type WrapStr = fn(&str) -> Value;

/// Where each kind keeps a label selector: (kind, wrap the selector into a spec patch, field).
fn selector_fields() -> Vec<(&'static str, Wrap, &'static str)> {
    vec![
        (
            SB,
            |s| json!({"namespaceSelector": s}),
            "spec.namespaceSelector",
        ),
        (
            SB,
            |s| json!({"workloadTemplates": [{"selector": s, "templates": [config_map("web-config")]}]}),
            "spec.workloadTemplates[0].selector",
        ),
        (
            SB,
            |s| json!({"controls": {"networkIsolation": {"allowFromNamespaces": s}}}),
            "spec.controls.networkIsolation.allowFromNamespaces",
        ),
        (
            BP,
            |s| json!({"resources": {"labelSelector": s}}),
            "spec.resources.labelSelector",
        ),
        (PW, |s| json!({"targetSelector": s}), "spec.targetSelector"),
        (
            EP,
            |s| json!({"grades": {"P1": {"notifyWithin": "15m", "actions": [{"scaleDown": {"selector": s}}]}}}),
            "spec.grades.P1.actions[0].scaleDown.selector",
        ),
        (
            EP,
            |s| json!({"grades": {"P1": {"notifyWithin": "15m", "actions": [{"isolateNetwork": {"allowFromNamespaces": s}}]}}}),
            "spec.grades.P1.actions[0].isolateNetwork.allowFromNamespaces",
        ),
    ]
}

/// Label selectors: unknown operators, keys and values that are not label keys and values,
/// `In` without values, `Exists` with values; for every selector of every kind.
fn selector_cases() -> Vec<Case> {
    let long_name = "a".repeat(64);
    let long_prefix = format!("{}.example/app", "a".repeat(250));
    let mut out = vec![];
    for (kind, wrap, field) in selector_fields() {
        let sel = |v: Value| wrap(v);
        let c = "label selectors";
        out.extend([
            case(kind, c, format!("{field}: unknown operator"), sel(json!({"matchExpressions": [{"key": "app", "operator": "Contains", "values": ["web"]}]})), format!("{field}.matchExpressions[0].operator"), ENUM),
            case(kind, c, format!("{field}: In without values"), sel(json!({"matchExpressions": [{"key": "app", "operator": "In"}]})), format!("{field}.matchExpressions[0]"), IN_VALUES),
            case(kind, c, format!("{field}: NotIn with an empty list"), sel(json!({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": []}]})), format!("{field}.matchExpressions[0]"), IN_VALUES),
            case(kind, c, format!("{field}: Exists with values"), sel(json!({"matchExpressions": [{"key": "app", "operator": "Exists", "values": ["web"]}]})), format!("{field}.matchExpressions[0]"), IN_VALUES),
            case(kind, c, format!("{field}: expression key with a space"), sel(json!({"matchExpressions": [{"key": "my app", "operator": "Exists"}]})), format!("{field}.matchExpressions[0].key"), PATTERN),
            case(kind, c, format!("{field}: expression key prefix over 253"), sel(json!({"matchExpressions": [{"key": long_prefix, "operator": "Exists"}]})), format!("{field}.matchExpressions[0].key"), PREFIX),
            case(kind, c, format!("{field}: expression value with a slash"), sel(json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["web/api"]}]})), format!("{field}.matchExpressions[0].values[0]"), PATTERN),
            case(kind, c, format!("{field}: label key starting with -"), sel(json!({"matchLabels": {"-app": "web"}})), format!("{field}.matchLabels"), SELECTOR_KEYS),
            case(kind, c, format!("{field}: label key name part of 64"), sel(json!({"matchLabels": {long_name.clone(): "web"}})), format!("{field}.matchLabels"), SELECTOR_KEYS),
            case(kind, c, format!("{field}: label value with a space"), sel(json!({"matchLabels": {"app": "web api"}})), format!("{field}.matchLabels.app"), PATTERN),
            case(kind, c, format!("{field}: label value of 64"), sel(json!({"matchLabels": {"app": long_name.clone()}})), format!("{field}.matchLabels.app"), TOO_LONG),
        ]);
    }
    out
}

/// Durations: below the least meaningful value, above the largest, too large for any clock,
/// in days, units out of order; for every duration of every kind.
fn duration_cases() -> Vec<Case> {
    // (kind, spec patch around the value, field, name in messages, below min, above max)
    /// (kind, wrap, field, name in messages, min, max, a value below, a value above)
    type DurationField<'a> = (
        &'a str,
        WrapStr,
        &'a str,
        &'a str,
        &'a str,
        &'a str,
        &'a str,
        &'a str,
    );
    let fields: Vec<DurationField> = vec![
        (
            SB,
            |d| json!({"checkInterval": d}),
            "spec.checkInterval",
            "checkInterval",
            "10s",
            "24h",
            "5s",
            "25h",
        ),
        (
            BP,
            |d| json!({"rpo": d}),
            "spec.rpo",
            "rpo",
            "1m",
            "8760h",
            "30s",
            "8761h",
        ),
        (
            BP,
            |d| json!({"rto": d}),
            "spec.rto",
            "rto",
            "1s",
            "720h",
            "0s",
            "721h",
        ),
        (
            BP,
            |d| json!({"retention": {"maxAge": d}}),
            "spec.retention.maxAge",
            "retention.maxAge",
            "1m",
            "87600h",
            "0s",
            "87601h",
        ),
        (
            BP,
            |d| json!({"verification": {"restoreTest": {"timeout": d}}}),
            "spec.verification.restoreTest.timeout",
            "restoreTest.timeout",
            "10s",
            "24h",
            "5s",
            "25h",
        ),
        (
            PW,
            |d| json!({"windows": [{"schedule": "0 2 1 1 *", "duration": d}]}),
            "spec.windows[0].duration",
            "window duration",
            "1m",
            "8784h",
            "30s",
            "8785h",
        ),
        (
            PW,
            |d| json!({"sla": {"low": {"maxDelay": d}}}),
            "spec.sla.low.maxDelay",
            "maxDelay",
            "1m",
            "8784h",
            "0s",
            "9000h",
        ),
        (
            PW,
            |d| json!({"rollout": {"progressTimeout": d}}),
            "spec.rollout.progressTimeout",
            "progressTimeout",
            "10s",
            "24h",
            "0s",
            "48h",
        ),
        (
            PW,
            |d| json!({"notifyBefore": d}),
            "spec.notifyBefore",
            "notifyBefore",
            "1m",
            "720h",
            "0s",
            "721h",
        ),
        (
            EP,
            |d| json!({"grades": {"P1": {"notifyWithin": d}}}),
            "spec.grades.P1.notifyWithin",
            "notifyWithin",
            "1m",
            "168h",
            "0s",
            "169h",
        ),
        (
            EP,
            |d| json!({"review": {"interval": d}}),
            "spec.review.interval",
            "review.interval",
            "24h",
            "8784h",
            "1h",
            "8785h",
        ),
    ];
    let mut out = vec![];
    for (kind, wrap, field, name, min, max, below, above) in fields {
        let c = "quantities and durations";
        let between = format!("{name} must be between {min} and {max}");
        out.extend([
            case(
                kind,
                c,
                format!("{field} below {min}"),
                wrap(below),
                field,
                between.clone(),
            ),
            case(
                kind,
                c,
                format!("{field} above {max}"),
                wrap(above),
                field,
                between,
            ),
            case(
                kind,
                c,
                format!("{field} beyond any clock"),
                wrap("99999999999h"),
                field,
                PATTERN,
            ),
            case(
                kind,
                c,
                format!("{field} in days"),
                wrap("7d"),
                field,
                PATTERN,
            ),
            case(
                kind,
                c,
                format!("{field} with units out of order"),
                wrap("30m1h"),
                field,
                PATTERN,
            ),
            case(
                kind,
                c,
                format!("{field} negative"),
                wrap("-1h"),
                field,
                PATTERN,
            ),
            case(
                kind,
                c,
                format!("{field} empty"),
                wrap(""),
                field,
                "at least 1 chars long",
            ),
        ]);
    }
    out
}

/// Cron fields out of range, unknown names, zero and oversized steps, reversed ranges and dates
/// that never occur; for every schedule of every kind.
fn cron_cases() -> Vec<Case> {
    let fields: Vec<(&str, WrapStr, &str)> = vec![
        (
            BP,
            |s| json!({"schedule": s, "rpo": "8760h"}),
            "spec.schedule",
        ),
        (
            BP,
            |s| json!({"verification": {"schedule": s}}),
            "spec.verification.schedule",
        ),
        (
            BP,
            |s| json!({"verification": {"restoreTest": {"schedule": s}}}),
            "spec.verification.restoreTest.schedule",
        ),
        (
            PW,
            |s| json!({"windows": [{"schedule": s, "duration": "1h"}]}),
            "spec.windows[0].schedule",
        ),
        (
            EP,
            |s| json!({"drills": {"schedule": s, "grade": "P1"}}),
            "spec.drills.schedule",
        ),
    ];
    let mut out = vec![];
    let c = "cron and time zones";
    for (kind, wrap, field) in fields {
        for (what, schedule) in [
            ("minute 60", "60 2 * * *"),
            ("hour 24", "0 24 * * *"),
            ("day of month 0", "0 2 0 * *"),
            ("day of month 32", "0 2 32 * *"),
            ("month 13", "0 2 1 13 *"),
            ("day of week 8", "0 2 * * 8"),
            ("unknown day name", "0 2 * * FUNDAY"),
            ("unknown month name", "0 2 1 JANUARY *"),
            ("step of zero", "*/0 * * * *"),
            ("step longer than the field", "0 */25 * * *"),
            ("step after a single value", "5/15 * * * *"),
            ("four fields", "0 2 * *"),
            ("fields apart by two spaces", "0  2 * * *"),
            ("fields apart by a tab", "0\t2 * * *"),
            ("six fields", "0 0 2 * * *"),
            ("words", "every night"),
            ("a macro cron does not know", "@midnight"),
        ] {
            out.push(case(
                kind,
                c,
                format!("{field}: {what}"),
                wrap(schedule),
                field,
                PATTERN,
            ));
        }
        for (what, schedule) in [
            ("reversed hour range", "0 22-6 * * *"),
            ("reversed weekday names", "0 2 * * FRI-MON"),
            ("reversed months", "0 2 1 12-1 *"),
        ] {
            out.push(case(
                kind,
                c,
                format!("{field}: {what}"),
                wrap(schedule),
                field,
                RANGE,
            ));
        }
        for (what, schedule) in [
            ("30 February", "0 2 30 2 *"),
            ("30 and 31 February", "0 2 30,31 FEB *"),
            ("31 April", "0 2 31 4 *"),
            ("31 of the 30-day months", "0 2 31 apr,jun,sep,nov ?"),
        ] {
            out.push(case(
                kind,
                c,
                format!("{field}: {what}"),
                wrap(schedule),
                field,
                NEVER,
            ));
        }
    }
    for (kind, wrap, field) in [
        (
            BP,
            (|z| json!({"timeZone": z})) as fn(&str) -> Value,
            "spec.timeZone",
        ),
        (
            PW,
            |z| json!({"windows": [{"schedule": "0 2 * * 6", "duration": "4h", "timeZone": z}]}),
            "spec.windows[0].timeZone",
        ),
    ] {
        for zone in [
            "Mars/Olympus_Mons",
            "Europe/Berlinn",
            "America/Argentina/Nowhere",
            "utc",
        ] {
            out.push(case(
                kind,
                c,
                format!("{field}: unknown time zone {zone}"),
                wrap(zone),
                field,
                TIME_ZONE,
            ));
        }
        out.push(case(
            kind,
            c,
            format!("{field}: time zone with a space"),
            wrap("Europe/Berlin Time"),
            field,
            PATTERN,
        ));
    }
    // A schedule must be able to keep the RPO it serves.
    for (schedule, rpo) in [
        ("0 2 * * *", "6h"),
        ("@daily", "1h"),
        ("0 */12 * * *", "6h"),
        ("0 2 * * 1", "24h"),
        ("0 0 1 * *", "168h"),
        ("30 * * * *", "30m"),
        ("*/30 * * * *", "15m"),
        ("0 0 1 1 *", "720h"),
    ] {
        out.push(case(
            BP,
            c,
            format!("schedule {schedule:?} with rpo {rpo}"),
            json!({"schedule": schedule, "rpo": rpo}),
            "spec.schedule",
            RPO_GAPS,
        ));
    }
    // A window must close before the next one opens, stepped and listed schedules too.
    for (schedule, duration) in [
        ("0 */6 * * *", "8h"),
        ("*/30 * * * *", "45m"),
        ("0 8,20 * * *", "13h"),
        ("0 2 * * 1-5", "25h"),
        ("0 2 * * 1,4", "73h"),
        ("0 0 1,15 * *", "360h"),
        ("0 2 * * *", "24h"),
        ("@weekly", "169h"),
        ("15 2-4 * * *", "2h"),
    ] {
        out.push(case(
            PW,
            c,
            format!("window {schedule:?} for {duration}"),
            json!({"windows": [{"schedule": schedule, "duration": duration}]}),
            "spec.windows[0].duration",
            WINDOW,
        ));
    }
    out
}

#[rustfmt::skip]
fn invalid_cases() -> Vec<Case> {
    let offsite = |s3: Value| json!({"encryption": {"keySecretRef": {"name": "backup-key", "key": "aes.key"}}, "storage": [{"name": "offsite", "s3": s3}]});
    let s3 = |extra: Value| { let mut v = json!({"bucket": "tenant-backups", "endpoint": "https://s3.example.net", "credentialsSecretRef": {"name": "s3"}}); apply(&mut v, &extra); v };
    let sb_template = |t: Value| json!({"templates": [t]});
    let wl_template = |t: Value| json!({"workloadTemplates": [{"selector": {"matchLabels": {"app": "web"}}, "templates": [t]}]});
    let patch_of = |images: Value| json!({"patches": [{"name": "p", "priority": "low", "images": images}]});
    let long = |n: usize| "a".repeat(n);

    let mut cases = vec![];
    cases.extend(selector_cases());
    cases.extend(duration_cases());
    cases.extend(cron_cases());

    let c = "empty selectors";
    cases.extend([
        case(SB, c, "namespaceSelector {}", json!({"namespaceSelector": {}}), "spec.namespaceSelector", "namespaceSelector must not be empty"),
        case(SB, c, "namespaceSelector with empty matchLabels", json!({"namespaceSelector": {"matchLabels": {}}}), "spec.namespaceSelector", "namespaceSelector must not be empty"),
        case(SB, c, "workloadTemplates selector {}", json!({"workloadTemplates": [{"selector": {}, "templates": [config_map("x")]}]}), "spec.workloadTemplates[0].selector", "workloadTemplates.selector must not be empty"),
        case(SB, c, "networkIsolation.allowFromNamespaces {}", json!({"controls": {"networkIsolation": {"allowFromNamespaces": {}}}}), "spec.controls.networkIsolation.allowFromNamespaces", "networkIsolation.allowFromNamespaces must not be empty"),
        case(SB, c, "networkIsolation.allowFromNamespaces with empty lists", json!({"controls": {"networkIsolation": {"allowFromNamespaces": {"matchLabels": {}, "matchExpressions": []}}}}), "spec.controls.networkIsolation.allowFromNamespaces", "networkIsolation.allowFromNamespaces must not be empty"),
        case(EP, c, "isolateNetwork.allowFromNamespaces {}", json!({"grades": {"P1": {"notifyWithin": "15m", "actions": [{"isolateNetwork": {"allowFromNamespaces": {}}}]}}}), "spec.grades.P1.actions[0].isolateNetwork.allowFromNamespaces", "isolateNetwork.allowFromNamespaces must not be empty"),
        case(EP, c, "isolateNetwork.allowFromNamespaces with empty matchExpressions", json!({"grades": {"P1": {"notifyWithin": "15m", "actions": [{"isolateNetwork": {"allowFromNamespaces": {"matchExpressions": []}}}]}}}), "spec.grades.P1.actions[0].isolateNetwork.allowFromNamespaces", "isolateNetwork.allowFromNamespaces must not be empty"),
    ]);

    let c = "guards on both template lists";
    for (list, wrap, field) in [("templates", sb_template as Wrap, "spec.templates[0]"), ("workloadTemplates.templates", wl_template, "spec.workloadTemplates[0].templates[0]")] {
        for (api_version, kind) in [("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"), ("rbac.authorization.k8s.io/v1", "ClusterRole"), ("v1", "Namespace"), ("v1", "Node"), ("v1", "PersistentVolume"), ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy"), ("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration"), ("apiextensions.k8s.io/v1", "CustomResourceDefinition"), ("scheduling.k8s.io/v1", "PriorityClass"), ("opsec.x1642.dev/v1alpha1", "SecurityBaseline")] {
            cases.push(case(SB, c, format!("{list}: {kind}"), wrap(json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": "x"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"}})), field, format!("{list}: cluster-scoped kinds cannot be rendered into a namespace")));
        }
        cases.extend([
            case(SB, c, format!("{list}: metadata.namespace of another namespace"), wrap(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "kube-system"}})), field, format!("{list}: leave metadata.namespace out")),
            case(SB, c, format!("{list}: metadata.generateName"), wrap(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "generateName": "x-"}})), field, format!("{list}: metadata.generateName is not supported")),
            case(SB, c, format!("{list}: no metadata.name"), wrap(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"labels": {"a": "b"}}})), field, format!("{list}: every template needs metadata.name")),
            case(SB, c, format!("{list}: no kind"), wrap(json!({"apiVersion": "v1", "metadata": {"name": "x"}})), format!("{field}.kind"), REQUIRED),
            case(SB, c, format!("{list}: apiVersion not a version"), wrap(json!({"apiVersion": "apps/latest", "kind": "Deployment", "metadata": {"name": "x"}})), format!("{field}.apiVersion"), PATTERN),
            case(SB, c, format!("{list}: kind in lower case"), wrap(json!({"apiVersion": "v1", "kind": "configmap", "metadata": {"name": "x"}})), format!("{field}.kind"), PATTERN),
        ]);
    }

    let c = "names and keys";
    let name_rule = "metadata.name must be a valid object name once variables are replaced";
    cases.extend([
        case(SB, c, "baseline name too long for a label value", json!({}), "metadata.name", "metadata.name of a SecurityBaseline must be at most 63 characters").named(long(64)),
        case(SB, c, "tenantLabel with a name part of 64", json!({"tenantLabel": format!("example.com/{}", long(64))}), "spec.tenantLabel", PATTERN),
        case(SB, c, "tenantLabel with a prefix of 254", json!({"tenantLabel": format!("{}.com/tenant", long(250))}), "spec.tenantLabel", PREFIX),
        case(SB, c, "tenantLabel with a space", json!({"tenantLabel": "tenant name"}), "spec.tenantLabel", PATTERN),
        case(SB, c, "excludeNamespaces listed twice", json!({"excludeNamespaces": ["kube-system", "kube-system"]}), "spec.excludeNamespaces[1]", DUPLICATE),
        case(SB, c, "template name with an underscore", sb_template(config_map("My_Config")), "spec.templates[0]", format!("templates: {name_rule}")),
        case(SB, c, "template name with a slash", sb_template(config_map("a/b")), "spec.templates[0]", format!("templates: {name_rule}")),
        case(SB, c, "template name over 253", sb_template(config_map(&long(254))), "spec.templates[0].metadata.name", TOO_LONG),
        case(SB, c, "template name with a variable and a capital", sb_template(config_map("${tenant}-Info")), "spec.templates[0]", format!("templates: {name_rule}")),
        case(SB, c, "Role template name with a slash", sb_template(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "tenant/admin"}})), "spec.templates[0]", format!("templates: {name_rule}")),
        case(SB, c, "workload template name in capitals", wl_template(config_map("${workload}-Config")), "spec.workloadTemplates[0].templates[0]", format!("workloadTemplates.templates: {name_rule}")),
        case(SB, c, "template label value with a space", sb_template(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "labels": {"team": "red team"}}})), "spec.templates[0]", "templates: metadata.labels and metadata.annotations need label keys"),
        case(SB, c, "template label key starting with -", sb_template(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "labels": {"-team": "red"}}})), "spec.templates[0]", "templates: metadata.labels and metadata.annotations need label keys"),
        case(SB, c, "workload template annotation key with a space", wl_template(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "annotations": {"my note": "x"}}})), "spec.workloadTemplates[0].templates[0]", "workloadTemplates.templates: metadata.labels and metadata.annotations need label keys"),
        case(SB, c, "adminRole of ..", json!({"controls": {"tenantAccess": {"adminGroups": ["g"], "adminRole": ".."}}}), "spec.controls.tenantAccess.adminRole", "tenantAccess.adminRole must not be '.' or '..'"),
        case(SB, c, "viewRole of .", json!({"controls": {"tenantAccess": {"viewGroups": ["g"], "viewRole": "."}}}), "spec.controls.tenantAccess.viewRole", "tenantAccess.viewRole must not be '.' or '..'"),
        case(SB, c, "adminRole with a slash", json!({"controls": {"tenantAccess": {"adminGroups": ["g"], "adminRole": "a/b"}}}), "spec.controls.tenantAccess.adminRole", PATTERN),
        case(SB, c, "admin group of blanks", json!({"controls": {"tenantAccess": {"adminGroups": ["   "]}}}), "spec.controls.tenantAccess.adminGroups[0]", PATTERN),
        case(SB, c, "view group listed twice", json!({"controls": {"tenantAccess": {"viewGroups": ["g", "g"]}}}), "spec.controls.tenantAccess.viewGroups[1]", DUPLICATE),
        case(SB, c, "ignoreDifferences name of ..", json!({"ignoreDifferences": [{"kind": "ConfigMap", "name": "..", "jsonPointers": ["/data"]}]}), "spec.ignoreDifferences[0].name", "ignoreDifferences.name must not be '.' or '..'"),
        case(SB, c, "ignoreDifferences kind in lower case", json!({"ignoreDifferences": [{"kind": "configmap", "jsonPointers": ["/data"]}]}), "spec.ignoreDifferences[0].kind", PATTERN),
        case(SB, c, "ignoreDifferences group in capitals", json!({"ignoreDifferences": [{"group": "Apps", "kind": "Deployment", "jsonPointers": ["/spec/replicas"]}]}), "spec.ignoreDifferences[0].group", PATTERN),
        case(BP, c, "encryption key of ..", json!({"encryption": {"keySecretRef": {"name": "k", "key": ".."}}}), "spec.encryption.keySecretRef.key", SECRET_KEY),
        case(BP, c, "encryption key of .", json!({"encryption": {"keySecretRef": {"name": "k", "key": "."}}}), "spec.encryption.keySecretRef.key", SECRET_KEY),
        case(BP, c, "encryption key starting with ..", json!({"encryption": {"keySecretRef": {"name": "k", "key": "..data"}}}), "spec.encryption.keySecretRef.key", SECRET_KEY),
        case(BP, c, "encryption key with a slash", json!({"encryption": {"keySecretRef": {"name": "k", "key": "a/b"}}}), "spec.encryption.keySecretRef.key", PATTERN),
        case(BP, c, "acceptRestoresFrom listed twice", json!({"acceptRestoresFrom": ["team-a", "team-a"]}), "spec.acceptRestoresFrom[1]", DUPLICATE),
        case(BP, c, "includeKinds with a space", json!({"resources": {"includeKinds": ["Config Map"]}}), "spec.resources.includeKinds[0]", PATTERN),
        case(BP, c, "excludeKinds listed twice", json!({"resources": {"excludeKinds": ["Secret", "Secret"]}}), "spec.resources.excludeKinds[1]", DUPLICATE),
        case(BP, c, "storage name with a capital", json!({"storage": [{"name": "OnSite", "local": {"path": "b"}}]}), "spec.storage[0].name", PATTERN),
        case(RS, c, "kinds listed twice", json!({"kinds": ["ConfigMap", "ConfigMap"]}), "spec.kinds[1]", DUPLICATE),
        case(RS, c, "kind with a slash at the end", json!({"kinds": ["apps/v1/"]}), "spec.kinds[0]", PATTERN),
        case(RS, c, "source storage with a space", json!({"backupRef": null, "source": {"policyRef": {"name": "nightly"}, "backupId": "20260101T000000Z-ab12", "storage": "off site"}}), "spec.source.storage", PATTERN),
        case(RS, c, "backupRef name with a slash", json!({"backupRef": {"name": "a/b"}}), "spec.backupRef.name", PATTERN),
        case(BK, c, "policyRef name over 253", json!({"policyRef": {"name": long(254)}}), "spec.policyRef.name", TOO_LONG),
        case(BK, c, "policyRef name of blanks", json!({"policyRef": {"name": "  "}}), "spec.policyRef.name", PATTERN),
        case(BK, c, "policyRef name empty", json!({"policyRef": {"name": ""}}), "spec.policyRef.name", "at least 1 chars long"),
        case(BK, c, "policyRef name with a capital", json!({"policyRef": {"name": "Nightly"}}), "spec.policyRef.name", PATTERN),
        case(BK, c, "policyRef missing", json!({"policyRef": null}), "spec.policyRef", REQUIRED),
        case(BK, c, "unknown trigger", json!({"trigger": "Nightly"}), "spec.trigger", ENUM),
        case(PW, c, "advisory listed twice", json!({"patches": [{"name": "p", "priority": "low", "advisories": ["CVE-2026-1", "CVE-2026-1"], "images": [{"from": "app:1", "to": "app:2"}]}]}), "spec.patches[0].advisories[1]", DUPLICATE),
        case(PW, c, "advisory with a space", json!({"patches": [{"name": "p", "priority": "low", "advisories": ["CVE 2026"], "images": [{"from": "app:1", "to": "app:2"}]}]}), "spec.patches[0].advisories[0]", PATTERN),
        case(PW, c, "freeze reason of blanks", json!({"freezes": [{"start": "2026-12-20T00:00:00Z", "end": "2027-01-05T00:00:00Z", "reason": "   "}]}), "spec.freezes[0].reason", PATTERN),
        case(PW, c, "backupPolicyRef with a slash", json!({"backupPolicyRef": "a/b"}), "spec.backupPolicyRef", PATTERN),
        case(EP, c, "contact name of blanks", json!({"contacts": [{"name": "   ", "role": "Technical"}]}), "spec.contacts[0].name", PATTERN),
        case(EP, c, "contact listed twice", json!({"contacts": [{"name": "ops", "role": "Technical"}, {"name": "ops", "role": "Business"}]}), "spec.contacts", "contacts: names must be unique"),
        case(EP, c, "contact channel listed twice", json!({"contacts": [{"name": "ops", "role": "Technical", "channels": ["pager", "pager"]}]}), "spec.contacts[0].channels[1]", DUPLICATE),
        case(EP, c, "notify channel listed twice", json!({"grades": {"P1": {"notifyWithin": "15m", "actions": [{"notify": {"channels": ["pager", "pager"]}}]}}}), "spec.grades.P1.actions[0].notify.channels[1]", DUPLICATE),
        case(EP, c, "webhook Secret key of ..", json!({"channels": [{"name": "pager", "webhook": {"urlSecretRef": {"name": "hooks", "key": ".."}}}]}), "spec.channels[0].webhook.urlSecretRef.key", SECRET_KEY),
        case(EP, c, "approvalRequiredFor listed twice", json!({"approvalRequiredFor": ["restore", "restore"]}), "spec.approvalRequiredFor[1]", DUPLICATE),
        case(EP, c, "event reason with a space", json!({"classification": [{"match": {"source": "KubernetesEvent", "reason": "Back Off"}, "grade": "P1"}]}), "spec.classification[0].match.reason", PATTERN),
        case(EP, c, "event kind in lower case", json!({"classification": [{"match": {"source": "KubernetesEvent", "kind": "pod"}, "grade": "P1"}]}), "spec.classification[0].match.kind", PATTERN),
        case(EP, c, "classification grade with a space", json!({"classification": [{"match": {"source": "Manual"}, "grade": "P 1"}]}), "spec.classification[0].grade", PATTERN),
        case(INC, c, "summary of blanks", json!({"summary": "   "}), "spec.summary", PATTERN),
        case(INC, c, "resolution cause of blanks", json!({"resolution": {"cause": " \t "}}), "spec.resolution.cause", PATTERN),
        case(INC, c, "subject name with a slash", json!({"subject": {"kind": "Deployment", "name": "a/b"}}), "spec.subject.name", PATTERN),
        case(INC, c, "subject name of ..", json!({"subject": {"kind": "Deployment", "name": ".."}}), "spec.subject.name", "name must not be '.' or '..'"),
        case(INC, c, "subject kind in lower case", json!({"subject": {"kind": "deployment", "name": "web"}}), "spec.subject.kind", PATTERN),
        case(INC, c, "subject apiVersion with two slashes", json!({"subject": {"apiVersion": "apps//v1", "kind": "Deployment", "name": "web"}}), "spec.subject.apiVersion", PATTERN),
        case(INC, c, "approval listed twice", json!({"approvals": ["restore", "restore"]}), "spec.approvals[1]", DUPLICATE),
        case(INC, c, "planRef name with a capital", json!({"planRef": {"name": "Plan"}}), "spec.planRef.name", PATTERN),
    ]);

    let c = "quantities and durations";
    cases.extend([
        case(SB, c, "quota of lots", json!({"controls": {"resourceQuota": {"hard": {"pods": "lots"}}}}), "spec.controls.resourceQuota.hard.pods", PATTERN),
        case(SB, c, "negative quota", json!({"controls": {"resourceQuota": {"hard": {"requests.cpu": "-1"}}}}), "spec.controls.resourceQuota.hard.requests.cpu", PATTERN),
        case(SB, c, "negative integer quota", json!({"controls": {"resourceQuota": {"hard": {"pods": -5}}}}), "spec.controls.resourceQuota.hard.pods", "greater than or equal to 0"),
        case(SB, c, "quota with two points", json!({"controls": {"resourceQuota": {"hard": {"limits.memory": "1.5.5Gi"}}}}), "spec.controls.resourceQuota.hard.limits.memory", PATTERN),
        case(SB, c, "quota of an unknown unit", json!({"controls": {"resourceQuota": {"hard": {"limits.memory": "32GB"}}}}), "spec.controls.resourceQuota.hard.limits.memory", PATTERN),
        case(SB, c, "quota on a resource name with a space", json!({"controls": {"resourceQuota": {"hard": {"my pods": "1"}}}}), "spec.controls.resourceQuota.hard", "every key must be a resource name"),
        case(SB, c, "limit of lots", json!({"controls": {"limitRange": {"limits": [{"type": "Container", "max": {"cpu": "lots"}}]}}}), "spec.controls.limitRange.limits[0].max.cpu", PATTERN),
        case(SB, c, "negative default request", json!({"controls": {"limitRange": {"limits": [{"type": "Container", "defaultRequest": {"memory": "-64Mi"}}]}}}), "spec.controls.limitRange.limits[0].defaultRequest.memory", PATTERN),
        case(SB, c, "limit of an unknown type", json!({"controls": {"limitRange": {"limits": [{"type": "Node", "max": {"cpu": "1"}}]}}}), "spec.controls.limitRange.limits[0].type", ENUM),
        case(SB, c, "limit without a type", json!({"controls": {"limitRange": {"limits": [{"max": {"cpu": "1"}}]}}}), "spec.controls.limitRange.limits[0].type", REQUIRED),
        case(SB, c, "priority above 1000", json!({"priority": 1001}), "spec.priority", "less than or equal to 1000"),
        case(BP, c, "zero copies", json!({"retention": {"copies": 0}}), "spec.retention.copies", "greater than or equal to 1"),
        case(BP, c, "negative keepFailed", json!({"retention": {"keepFailed": -1}}), "spec.retention.keepFailed", "greater than or equal to 0"),
        case(PW, c, "maxParallel of zero", json!({"rollout": {"maxParallel": 0}}), "spec.rollout.maxParallel", "greater than or equal to 1"),
    ]);

    let c = "dates";
    cases.extend([
        case(EP, c, "lastReviewed 30 February", json!({"review": {"lastReviewed": "2026-02-30"}}), "spec.review.lastReviewed", "review.lastReviewed must be a date that exists"),
        case(EP, c, "lastReviewed 29 February of a common year", json!({"review": {"lastReviewed": "2025-02-29"}}), "spec.review.lastReviewed", "review.lastReviewed must be a date that exists"),
        case(EP, c, "lastReviewed 31 April", json!({"review": {"lastReviewed": "2026-04-31"}}), "spec.review.lastReviewed", "review.lastReviewed must be a date that exists"),
        case(EP, c, "lastReviewed 29 February 2100", json!({"review": {"lastReviewed": "2100-02-29"}}), "spec.review.lastReviewed", "review.lastReviewed must be a date that exists"),
        case(EP, c, "lastReviewed month 13", json!({"review": {"lastReviewed": "2026-13-01"}}), "spec.review.lastReviewed", PATTERN),
        case(PW, c, "freeze on 30 February", json!({"freezes": [{"start": "2026-02-30T00:00:00Z", "end": "2027-01-05T00:00:00Z"}]}), "spec.freezes[0].start", "date-time"),
        case(INC, c, "detectedAt on 31 June", json!({"detectedAt": "2026-06-31T10:00:00Z"}), "spec.detectedAt", "date-time"),
    ]);

    let c = "images";
    for (what, image) in [("an empty tag", "app:"), ("two colons", "app::1"), ("capitals in the path", "registry.example/App:1"), ("a short digest", "app@sha256:123"), ("a URL", "https://registry.example/app:1"), ("a space", "app :1"), ("a double slash", "registry.example//app"), ("a tag starting with -", "app:-1")] {
        cases.push(case(PW, c, format!("from with {what}"), patch_of(json!([{"from": image, "to": "app:2"}])), "spec.patches[0].images[0].from", PATTERN));
        cases.push(case(PW, c, format!("to with {what}"), patch_of(json!([{"from": "app:1", "to": image}])), "spec.patches[0].images[0].to", PATTERN));
    }
    cases.extend([
        case(PW, c, "one image moved to two", patch_of(json!([{"from": "app:1", "to": "app:2"}, {"from": "app:1", "to": "app:3"}])), "spec.patches[0].images", "images: each from image may be listed once"),
        case(PW, c, "from equals to", patch_of(json!([{"from": "app:1", "to": "app:1"}])), "spec.patches[0].images", "images: from and to must differ"),
    ]);

    let c = "stores";
    cases.extend([
        case(BP, c, "endpoint without a host", offsite(s3(json!({"endpoint": "https://"}))), "spec.storage[0].s3.endpoint", ENDPOINT),
        case(BP, c, "endpoint without a scheme", offsite(s3(json!({"endpoint": "s3.example.net"}))), "spec.storage[0].s3.endpoint", ENDPOINT),
        case(BP, c, "endpoint with a query", offsite(s3(json!({"endpoint": "https://s3.example.net/?x-id=1"}))), "spec.storage[0].s3.endpoint", ENDPOINT),
        case(BP, c, "endpoint with a fragment", offsite(s3(json!({"endpoint": "https://s3.example.net/#a"}))), "spec.storage[0].s3.endpoint", ENDPOINT),
        case(BP, c, "endpoint with credentials", offsite(s3(json!({"endpoint": "https://AKIA:secret@s3.example.net"}))), "spec.storage[0].s3.endpoint", ENDPOINT_CREDENTIALS),
        case(BP, c, "endpoint with a user", offsite(s3(json!({"endpoint": "https://admin@s3.example.net"}))), "spec.storage[0].s3.endpoint", ENDPOINT_CREDENTIALS),
        case(BP, c, "off-site endpoint over plain http", offsite(s3(json!({"endpoint": "http://s3.example.net"}))), "spec.storage[0].s3.endpoint", ENDPOINT_HTTPS),
        case(BP, c, "plain http to a private address", offsite(s3(json!({"endpoint": "http://10.0.0.5:9000"}))), "spec.storage[0].s3.endpoint", ENDPOINT_HTTPS),
        case(BP, c, "plain http to a name like localhost", offsite(s3(json!({"endpoint": "http://localhost.example.net"}))), "spec.storage[0].s3.endpoint", ENDPOINT_HTTPS),
        case(BP, c, "endpoint of ftp", offsite(s3(json!({"endpoint": "ftp://s3.example.net"}))), "spec.storage[0].s3.endpoint", ENDPOINT),
        case(BP, c, "bucket with two dots", offsite(s3(json!({"bucket": "tenant..backups"}))), "spec.storage[0].s3.bucket", BUCKET),
        case(BP, c, "bucket with a dot beside a dash", offsite(s3(json!({"bucket": "tenant.-backups"}))), "spec.storage[0].s3.bucket", BUCKET),
        case(BP, c, "bucket named like an IP address", offsite(s3(json!({"bucket": "192.168.10.20"}))), "spec.storage[0].s3.bucket", BUCKET),
        case(BP, c, "bucket with a reserved prefix", offsite(s3(json!({"bucket": "xn--backups"}))), "spec.storage[0].s3.bucket", BUCKET),
        case(BP, c, "bucket with a reserved suffix", offsite(s3(json!({"bucket": "backups-s3alias"}))), "spec.storage[0].s3.bucket", BUCKET),
        case(BP, c, "bucket with an underscore", offsite(s3(json!({"bucket": "tenant_backups"}))), "spec.storage[0].s3.bucket", PATTERN),
        case(BP, c, "bucket too long", offsite(s3(json!({"bucket": long(64)}))), "spec.storage[0].s3.bucket", TOO_LONG),
        case(BP, c, "region with a space", offsite(s3(json!({"region": "eu central"}))), "spec.storage[0].s3.region", PATTERN),
        case(BP, c, "prefix with a NUL byte", offsite(s3(json!({"prefix": "team\u{0}a"}))), "spec.storage[0].s3.prefix", "s3.prefix must be relative"),
        case(BP, c, "prefix with ..", offsite(s3(json!({"prefix": "a/../b"}))), "spec.storage[0].s3.prefix", "s3.prefix must be relative"),
        case(BP, c, "absolute prefix", offsite(s3(json!({"prefix": "/clusters"}))), "spec.storage[0].s3.prefix", "s3.prefix must be relative"),
        case(BP, c, "local path with a NUL byte", json!({"storage": [{"name": "onsite", "local": {"path": "team\u{0}a"}}]}), "spec.storage[0].local.path", LOCAL_PATH),
        case(BP, c, "absolute local path", json!({"storage": [{"name": "onsite", "local": {"path": "/var/lib/opsec"}}]}), "spec.storage[0].local.path", LOCAL_PATH),
        case(BP, c, "local path escaping with ..", json!({"storage": [{"name": "onsite", "local": {"path": "team/../../other"}}]}), "spec.storage[0].local.path", LOCAL_PATH),
        case(BP, c, "claim path with a NUL byte", json!({"storage": [{"name": "onsite", "persistentVolumeClaim": {"claimName": "backups", "path": "a\u{0}b"}}]}), "spec.storage[0].persistentVolumeClaim.path", "persistentVolumeClaim.path must be relative"),
        case(BP, c, "claim path escaping with ..", json!({"storage": [{"name": "onsite", "persistentVolumeClaim": {"claimName": "backups", "path": "../other"}}]}), "spec.storage[0].persistentVolumeClaim.path", "persistentVolumeClaim.path must be relative"),
        case(BP, c, "absolute claim path", json!({"storage": [{"name": "onsite", "persistentVolumeClaim": {"claimName": "backups", "path": "/etc"}}]}), "spec.storage[0].persistentVolumeClaim.path", "persistentVolumeClaim.path must be relative"),
        case(BP, c, "off-site copy without encryption", json!({"storage": [{"name": "offsite", "s3": s3(json!({}))}]}), "spec.encryption", "encryption is required when any storage location is off-site"),
    ]);

    let c = "evidence";
    cases.extend([
        case(INC, c, "an incident turned into a drill", json!({"drill": true}), "spec.drill", "drill is evidence").update(json!({})),
        case(INC, c, "a drill turned into an incident", json!({"drill": false}), "spec.drill", "drill is evidence").update(json!({"drill": true})),
        case(INC, c, "detection time moved", json!({"detectedAt": "2026-12-01T11:00:00Z"}), "spec.detectedAt", "detectedAt is evidence").update(json!({"detectedAt": "2026-12-01T10:00:00Z"})),
        case(INC, c, "detection time removed", json!({"detectedAt": null}), "spec.detectedAt", "detectedAt is evidence").update(json!({"detectedAt": "2026-12-01T10:00:00Z"})),
        case(INC, c, "subject changed", json!({"subject": {"kind": "Deployment", "name": "db"}}), "spec.subject", "subject is evidence").update(json!({"subject": {"kind": "Deployment", "name": "web"}})),
        case(INC, c, "resolution removed", json!({"resolution": null}), "spec.resolution", "resolution cannot be removed").update(json!({"resolution": {"cause": "leaked token"}})),
        case(INC, c, "source changed", json!({"source": "BaselineDrift"}), "spec.source", "source is immutable").update(json!({})),
        case(BK, c, "Backup policyRef changed", json!({"policyRef": {"name": "other"}}), "spec", "Backup spec is immutable").update(json!({})),
        case(BK, c, "Backup trigger changed", json!({"trigger": "Incident"}), "spec", "Backup spec is immutable").update(json!({})),
        case(BK, c, "unknown phase", json!({"phase": "Done"}), "status.phase", ENUM).status(),
        case(RS, c, "Restore target changed", json!({"targetNamespace": "other"}), "spec", "Restore spec is immutable").update(json!({})),
        case(SB, c, "negative compliant count", json!({"namespaces": {"selected": 1, "compliant": -1, "drifted": 0, "conflicted": 0, "failed": 0}}), "status.namespaces.compliant", "greater than or equal to 0").status(),
        case(BP, c, "negative verified count", json!({"lastVerification": {"time": "2026-12-01T10:00:00Z", "verified": -1, "failed": 0}}), "status.lastVerification.verified", "greater than or equal to 0").status(),
        case(BP, c, "negative mismatches", json!({"lastRestoreTest": {"time": "2026-12-01T10:00:00Z", "duration": "1s", "result": "Passed", "objectsCompared": 3, "mismatches": -3}}), "status.lastRestoreTest.mismatches", "greater than or equal to 0").status(),
        case(BK, c, "negative object count", json!({"objects": -1}), "status.objects", "greater than or equal to 0").status(),
        case(BK, c, "negative size", json!({"bytes": -1}), "status.bytes", "greater than or equal to 0").status(),
        case(RS, c, "negative restored count", json!({"restored": -2}), "status.restored", "greater than or equal to 0").status(),
        case(RS, c, "negative attempts", json!({"attempts": -1}), "status.attempts", "greater than or equal to 0").status(),
        case(PW, c, "negative pending count", json!({"pending": -1}), "status.pending", "greater than or equal to 0").status(),
        case(EP, c, "negative open incidents", json!({"openIncidents": -1}), "status.openIncidents", "greater than or equal to 0").status(),
        case(INC, c, "negative related namespaces", json!({"relatedNamespaces": -1}), "status.relatedNamespaces", "greater than or equal to 0").status(),
    ]);

    let c = "rules between fields";
    cases.extend([
        case(SB, c, "resourceQuota without resources", json!({"controls": {"resourceQuota": {"hard": {}}}}), "spec.controls.resourceQuota.hard", "resourceQuota.hard must name at least one resource"),
        case(SB, c, "tenantAccess without groups", json!({"controls": {"tenantAccess": {"adminRole": "admin"}}}), "spec.controls.tenantAccess", "tenantAccess needs at least one of adminGroups or viewGroups"),
        case(BP, c, "storage with two backends", json!({"storage": [{"name": "both", "local": {"path": "b"}, "persistentVolumeClaim": {"claimName": "c"}}]}), "spec.storage[0]", "each storage location sets exactly one of local, persistentVolumeClaim or s3"),
        case(BP, c, "storage with no backend", json!({"storage": [{"name": "nothing"}]}), "spec.storage[0]", "each storage location sets exactly one of local, persistentVolumeClaim or s3"),
        case(BP, c, "storage names twice", json!({"storage": [{"name": "onsite", "local": {"path": "a"}}, {"name": "onsite", "local": {"path": "b"}}]}), "spec.storage", "storage names must be unique"),
        case(BP, c, "restore test timeout shorter than the rto", json!({"rto": "30m", "verification": {"restoreTest": {"timeout": "10m"}}}), "spec.verification.restoreTest.timeout", "verification.restoreTest.timeout must be at least the rto"),
        case(BP, c, "retention shorter than the rpo", json!({"retention": {"maxAge": "1h"}}), "spec.retention.maxAge", "retention.maxAge must be at least the rpo"),
        case(RS, c, "both backupRef and source", json!({"source": {"policyRef": {"name": "nightly"}, "backupId": "20260101T000000Z-ab12"}}), "spec", "set exactly one of backupRef or source"),
        case(RS, c, "neither backupRef nor source", json!({"backupRef": null}), "spec", "set exactly one of backupRef or source"),
        case(RS, c, "backup id starting with -", json!({"backupRef": null, "source": {"policyRef": {"name": "nightly"}, "backupId": "-rf"}}), "spec.source.backupId", PATTERN),
        case(RS, c, "source without policyRef", json!({"backupRef": null, "source": {"backupId": "20260101T000000Z-ab12"}}), "spec.source.policyRef", REQUIRED),
        case(RS, c, "unknown existingObjects", json!({"existingObjects": "Merge"}), "spec.existingObjects", ENUM),
        case(RS, c, "targetNamespace not a DNS label", json!({"targetNamespace": "Tenant_B"}), "spec.targetNamespace", PATTERN),
        case(RS, c, "serviceAccountName with a slash", json!({"serviceAccountName": "../admin"}), "spec.serviceAccountName", PATTERN),
        case(PW, c, "freeze ending before it starts", json!({"freezes": [{"start": "2027-01-05T00:00:00Z", "end": "2026-12-20T00:00:00Z"}]}), "spec.freezes[0].end", "a freeze must end after it starts"),
        case(PW, c, "patch names twice", json!({"patches": [{"name": "p", "priority": "low", "images": [{"from": "app:1", "to": "app:2"}]}, {"name": "p", "priority": "high", "images": [{"from": "web:1", "to": "web:2"}]}]}), "spec.patches", "patches: names must be unique"),
        case(PW, c, "critical maxDelay above high", json!({"sla": {"critical": {"maxDelay": "200h"}}}), "spec.sla", "sla: maxDelay must not shrink as priority falls"),
        case(EP, c, "channel names twice", json!({"channels": [{"name": "pager", "webhook": {"urlSecretRef": {"name": "h", "key": "a"}}}, {"name": "pager", "webhook": {"urlSecretRef": {"name": "h", "key": "b"}}}]}), "spec.channels", "channels: names must be unique"),
        case(EP, c, "contact with an undefined channel", json!({"contacts": [{"name": "ops", "role": "Technical", "channels": ["sms"]}]}), "spec.contacts", "contacts: every channel a contact names must be defined in channels"),
        case(EP, c, "notify naming an undefined channel", json!({"grades": {"P1": {"notifyWithin": "15m", "actions": [{"notify": {"channels": ["sms"]}}]}}}), "spec.grades", "grades: a notify action names a channel that is not defined in channels"),
        case(EP, c, "classification to an undefined grade", json!({"classification": [{"match": {"source": "BaselineDrift"}, "grade": "P9"}]}), "spec.classification", "classification: every rule's grade must be defined in grades"),
        case(EP, c, "drills of an undefined grade", json!({"drills": {"schedule": "0 10 1 */3 *", "grade": "P3"}}), "spec.drills.grade", "drills.grade must be defined in grades"),
        case(EP, c, "action with two steps", json!({"grades": {"P1": {"notifyWithin": "15m", "actions": [{"notify": {}, "lockAccounts": {}}]}}}), "spec.grades.P1.actions[0]", "each action sets exactly one of"),
        case(EP, c, "empty action", json!({"grades": {"P1": {"notifyWithin": "15m", "actions": [{}]}}}), "spec.grades.P1.actions[0]", "each action sets exactly one of"),
        case(EP, c, "grade name with a space", json!({"grades": {"P 1": {"notifyWithin": "15m"}, "P1": null}}), "spec.grades", "grades: names must be 1 to 16 letters"),
        case(EP, c, "event reason on a non-event source", json!({"classification": [{"match": {"source": "BaselineDrift", "reason": "FailedMount"}, "grade": "P1"}]}), "spec.classification[0].match", "match.reason and match.kind apply only to source KubernetesEvent"),
        case(EP, c, "no grades", json!({"grades": {}}), "spec.grades", "should have at least 1 properties"),
        case(EP, c, "unknown contact role", json!({"contacts": [{"name": "boss", "role": "Boss"}]}), "spec.contacts[0].role", ENUM),
        case(INC, c, "unknown source", json!({"source": "Twitter"}), "spec.source", ENUM),
        case(INC, c, "unknown approval", json!({"approvals": ["everything"]}), "spec.approvals[0]", ENUM),
    ]);

    // Found by trying the schema as a user would.
    let closed = json!({"phase": "Closed", "timeline": [{"time": "2026-12-01T10:00:00Z", "action": "Detected", "result": "Succeeded"}, {"time": "2026-12-01T10:05:00Z", "action": "Notified", "result": "Succeeded"}], "report": {"closedAt": "2026-12-01T12:00:00Z", "cause": "a leaked token", "timings": {"timeToNotify": "5m"}}});
    let condition = |c: Value| { let mut base = json!({"type": "Ready", "status": "True", "reason": "Reconciled", "message": "ok", "lastTransitionTime": "2026-12-01T10:00:00Z"}); merge(&mut base, &c); json!({"conditions": [base]}) };
    let without = |v: &Value, key: &str| { let mut t = v.clone(); t.as_object_mut().unwrap().remove(key); t };
    let mut one_entry = closed.clone();
    one_entry["timeline"] = json!([closed["timeline"][0].clone()]);
    let mut changed_entry = closed.clone();
    changed_entry["timeline"][1]["result"] = json!("Failed");
    let mut rewritten = closed.clone();
    rewritten["report"]["cause"] = json!("nothing happened");
    cases.extend([
        case(INC, "evidence", "detectedAt set after creation", json!({"detectedAt": "2030-01-01T00:00:00Z"}), "spec.detectedAt", "detectedAt is evidence").update(json!({})),
        case(INC, "evidence", "phase moved back from Closed", json!({"phase": "Detected"}), "status.phase", "phase is evidence").status_after(closed.clone()),
        case(INC, "evidence", "a timeline entry removed", one_entry, "status.timeline", "timeline is evidence").status_after(closed.clone()),
        case(INC, "evidence", "a timeline entry changed", changed_entry, "status.timeline", "timeline is evidence").status_after(closed.clone()),
        case(INC, "evidence", "the report rewritten", rewritten, "status.report", "report is evidence").status_after(closed.clone()),
        case(INC, "evidence", "the report removed", without(&closed, "report"), "status.report", "report is evidence").status_after(closed.clone()),
        case(INC, "status values", "a timing that is not a duration", json!({"timings": {"timeToNotify": "banana"}}), "status.timings.timeToNotify", PATTERN).status(),
        case(INC, "status values", "a timeline result of Maybe", json!({"timeline": [{"time": "2026-12-01T10:00:00Z", "action": "Detected", "result": "Maybe"}]}), "status.timeline[0].result", ENUM).status(),
        case(SB, "status values", "a condition status of Maybe", condition(json!({"status": "Maybe"})), "status.conditions[0].status", ENUM).status(),
        case(BP, "status values", "a condition without a reason", condition(json!({"reason": ""})), "status.conditions[0].reason", "at least 1 chars long").status(),
        case(BK, "status values", "a condition reason with spaces", condition(json!({"reason": "all good"})), "status.conditions[0].reason", PATTERN).status(),
        case(RS, "status values", "a condition of a negative generation", condition(json!({"observedGeneration": -1})), "status.conditions[0].observedGeneration", "greater than or equal to 0").status(),
        case(PW, "status values", "a negative observedGeneration", json!({"observedGeneration": -5}), "status.observedGeneration", "greater than or equal to 0").status(),
        case(EP, "status values", "a condition without a type", json!({"conditions": [{"status": "True", "reason": "R", "message": "m", "lastTransitionTime": "2026-12-01T10:00:00Z"}]}), "status.conditions[0].type", REQUIRED).status(),
        case(BK, "evidence", "a finished backup back to Pending", json!({"phase": "Pending"}), "status.phase", "a backup that has ended never goes back").status_after(json!({"phase": "Verified"})),
        case(BK, "status values", "a digest that is not hex", json!({"sha256": "nothex"}), "status.sha256", PATTERN).status(),
        case(RS, "evidence", "a finished restore run again", json!({"phase": "Running"}), "status.phase", "a restore that has ended stays as it ended").status_after(json!({"phase": "Completed"})),
        case(RS, "status values", "more runs than three", json!({"attempts": 99}), "status.attempts", "less than or equal to 3").status(),
        case(RS, "status values", "more than 20 errors", json!({"errors": vec!["e"; 30]}), "status.errors", "Too many").status(),
        case(RS, "status values", "a duration of forever", json!({"duration": "forever"}), "status.duration", PATTERN).status(),
        case(BP, "status values", "a restore test result of Maybe", json!({"lastRestoreTest": {"time": "2026-12-01T10:00:00Z", "duration": "1s", "result": "Maybe", "objectsCompared": 1, "mismatches": 0}}), "status.lastRestoreTest.result", ENUM).status(),
        case(BP, "cron and time zones", "restore tests every 5 minutes with a 30m timeout", json!({"verification": {"restoreTest": {"schedule": "*/5 * * * *", "timeout": "30m"}}}), "spec.verification.restoreTest.schedule", "restore tests come closer together than their timeout"),
        case(BP, "names and keys", "a kind both included and excluded", json!({"resources": {"includeKinds": ["Secret", "ConfigMap"], "excludeKinds": ["Secret"]}}), "spec.resources", "a kind is both included and excluded"),
        case(BP, "stores", "two locations in one directory", json!({"storage": [{"name": "a", "local": {"path": "x"}}, {"name": "b", "local": {"path": "x"}}]}), "spec.storage", "two locations write to the same place"),
        case(BP, "stores", "two locations on one claim path", json!({"storage": [{"name": "a", "persistentVolumeClaim": {"claimName": "c"}}, {"name": "b", "persistentVolumeClaim": {"claimName": "c"}}]}), "spec.storage", "two locations write to the same place"),
        case(BP, "stores", "a path segment of 300 characters", json!({"storage": [{"name": "a", "local": {"path": "x".repeat(300)}}]}), "spec.storage[0].local.path", LOCAL_PATH),
        case(BP, "stores", "an endpoint port of 99999", offsite(s3(json!({"endpoint": "https://s3.example.net:99999"}))), "spec.storage[0].s3.endpoint", ENDPOINT),
        case(BP, "stores", "an endpoint port of 0", offsite(s3(json!({"endpoint": "https://s3.example.net:0"}))), "spec.storage[0].s3.endpoint", ENDPOINT),
        case(BP, "stores", "an endpoint with a colon and no port", offsite(s3(json!({"endpoint": "https://s3.example.net:"}))), "spec.storage[0].s3.endpoint", ENDPOINT),
        case(BP, "stores", "an endpoint host with an underscore", offsite(s3(json!({"endpoint": "https://s3_x.example.net"}))), "spec.storage[0].s3.endpoint", ENDPOINT),
        case(BP, "stores", "an endpoint host starting with -", offsite(s3(json!({"endpoint": "https://-bad-.example"}))), "spec.storage[0].s3.endpoint", ENDPOINT),
        case(BP, "stores", "plain http to 127.999.999.999", offsite(s3(json!({"endpoint": "http://127.999.999.999"}))), "spec.storage[0].s3.endpoint", ENDPOINT_HTTPS),
        case(PW, "images", "an image name of 300 characters", patch_of(json!([{"from": format!("registry.example/{}:1", "a".repeat(300)), "to": "app:2"}])), "spec.patches[0].images[0].from", "an image's name (before the tag and digest) must be at most 255 characters"),
        case(PW, "images", "an image registry port of 99999", patch_of(json!([{"from": "registry.example:99999/app:1", "to": "app:2"}])), "spec.patches[0].images[0].from", PATTERN),
        case(SB, "template variables", "a variable after an unclosed ${", sb_template(config_map("a${$${tenant}")), "spec.templates[0]", "templates: metadata uses a variable that is not defined or not closed"),
        case(SB, "names and keys", "${workloadKind} in a name", wl_template(config_map("${workloadKind}-cfg")), "spec.workloadTemplates[0].templates[0]", "workloadTemplates.templates: metadata.name must be a valid object name"),
        case(SB, "guards on both template lists", "two templates of one kind and name", json!({"templates": [config_map("dup"), config_map("dup")]}), "spec.templates", "templates: two templates render the same kind and name"),
        case(SB, "guards on both template lists", "two workload templates of one kind and name", json!({"workloadTemplates": [{"selector": {"matchLabels": {"app": "web"}}, "templates": [config_map("${workload}"), config_map("${workload}")]}]}), "spec.workloadTemplates[0].templates", "workloadTemplates.templates: two templates render the same kind and name"),
        case(SB, "guards on both template lists", "a List template", sb_template(json!({"apiVersion": "v1", "kind": "List", "metadata": {"name": "x"}, "items": []})), "spec.templates[0]", "templates: a List is not one object"),
        case(SB, "guards on both template lists", "a ClusterRoleBindingList workload template", wl_template(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBindingList", "metadata": {"name": "x"}})), "spec.workloadTemplates[0].templates[0]", "workloadTemplates.templates: a List is not one object"),
        case(SB, "names and keys", "a Service named with a dot", sb_template(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a.b"}})), "spec.templates[0]", "templates: metadata.name must be a valid object name"),
        case(SB, "names and keys", "a Service named from a digit", sb_template(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "1svc"}})), "spec.templates[0]", "templates: metadata.name must be a valid object name"),
        case(EP, "cron and time zones", "a drill every minute", json!({"drills": {"schedule": "* * * * *", "grade": "P1"}}), "spec.drills.schedule", "at most one a day"),
        case(EP, "cron and time zones", "a drill every hour", json!({"drills": {"schedule": "@hourly", "grade": "P1"}}), "spec.drills.schedule", "at most one a day"),
        case(EP, "dates", "a review in year 0", json!({"review": {"lastReviewed": "0000-02-29"}}), "spec.review.lastReviewed", PATTERN),
        case(EP, "dates", "a review in 1969", json!({"review": {"lastReviewed": "1969-07-20"}}), "spec.review.lastReviewed", PATTERN),
    ]);
    for (schedule, rpo) in [("0 2 * * 1-5", "24h"), ("0 2 * * MON-FRI", "25h"), ("0 2 * * MON", "24h"), ("0 8-18 * * *", "1h"), ("*/15 9-17 * * *", "15m"), ("0 8,20 * * *", "1h"), ("0 0 1,15 * *", "24h"), ("0 0 * * 0,3", "24h"), ("0 */6 1-5 * *", "6h"), ("0 0 L * *", "24h"), ("0 2 ? * 5#3", "24h"), ("0 2 15W * *", "24h"), ("0 0 1 jan,jul *", "720h")] {
        cases.push(case(BP, "cron and time zones", format!("schedule {schedule:?} with rpo {rpo}"), json!({"schedule": schedule, "rpo": rpo}), "spec.schedule", RPO_GAPS));
    }
    for (schedule, duration) in [("0 2,10,11 * * *", "4h"), ("0 1-3,12 * * *", "2h"), ("0 2 * * 1,5", "80h"), ("0 2 * * MON,TUE", "30h"), ("0 2 * * 1-3,5", "47h"), ("0 0 1,20 * *", "432h"), ("0 0 1 * *", "720h"), ("@monthly", "700h"), ("0 0 L * *", "700h"), ("0 0 1 1 *", "8783h"), ("0 2 * * FRI-SUN", "25h")] {
        cases.push(case(PW, "cron and time zones", format!("window {schedule:?} for {duration}"), json!({"windows": [{"schedule": schedule, "duration": duration}]}), "spec.windows[0].duration", WINDOW));
    }
    let mut closed_rewritten = closed.clone();
    closed_rewritten["timeline"][0]["message"] = json!("nothing to see");
    let mut closed_with_message = closed.clone();
    closed_with_message["timeline"][0]["message"] = json!("found by the scanner");
    let two_s3 = |a: Value, b: Value| json!({"encryption": {"keySecretRef": {"name": "k", "key": "aes.key"}}, "storage": [{"name": "a", "s3": s3(a)}, {"name": "b", "s3": s3(b)}]});
    cases.extend([
        case(INC, "evidence", "the status removed", json!(null), "status", "the status of this Incident is evidence").status_after(closed.clone()),
        case(BK, "evidence", "a verified backup's status removed", json!(null), "status", "the status of this Backup is evidence").status_after(json!({"phase": "Verified"})),
        case(RS, "evidence", "a failed restore's status removed", json!(null), "status", "the status of this Restore is evidence").status_after(json!({"phase": "Failed"})),
        case(INC, "evidence", "a timeline message rewritten", closed_rewritten, "status.timeline", "timeline is evidence").status_after(closed_with_message),
        case(RS, "evidence", "runs started forgotten", json!({"attempts": 0}), "status.attempts", "attempts only count up").status_after(json!({"attempts": 3})),
        case(BP, "stores", "an endpoint of 999.999.999.999", offsite(s3(json!({"endpoint": "https://999.999.999.999:9000"}))), "spec.storage[0].s3.endpoint", ENDPOINT),
        case(BP, "stores", "one directory with and without a trailing slash", json!({"storage": [{"name": "a", "local": {"path": "nightly"}}, {"name": "b", "local": {"path": "nightly/"}}]}), "spec.storage", "two locations write to the same place"),
        case(BP, "stores", "one bucket and prefix written two ways", two_s3(json!({"endpoint": "https://s3.example.com", "prefix": "prod"}), json!({"endpoint": "https://s3.example.com/", "prefix": "prod/"})), "spec.storage", "two locations write to the same place"),
    ]);
    for (schedule, rpo) in [("0 0-23/6 * * *", "1h"), ("0-59/15 * * * *", "1m"), ("@monthly", "672h"), ("0 2 31 * *", "744h"), ("0 9-17 * * 1-5", "49h"), ("0 9 1 * MON", "24h")] {
        cases.push(case(BP, "cron and time zones", format!("schedule {schedule:?} with rpo {rpo}"), json!({"schedule": schedule, "rpo": rpo}), "spec.schedule", RPO_GAPS));
    }
    for (schedule, duration) in [("0 */5 * * *", "4h30m"), ("0 0 */2 * *", "36h"), ("0 2,22 * * 1-5", "6h"), ("0 2 1 * MON", "72h"), ("0 2 ? * TUE#2", "700h"), ("0 2 * * SUNL", "700h"), ("0 2 15W * *", "700h")] {
        cases.push(case(PW, "cron and time zones", format!("window {schedule:?} for {duration}"), json!({"windows": [{"schedule": schedule, "duration": duration}]}), "spec.windows[0].duration", WINDOW));
    }
    for (what, schedule) in [("31 February or April", "0 0 31 2,4 *"), ("31W of April", "0 0 31W 4 *"), ("31 of February and April by name", "0 0 31 FEB,apr *"), ("30 of February twice", "0 0 30 2,02 *")] {
        cases.push(case(BP, "cron and time zones", format!("verification on {what}"), json!({"verification": {"schedule": schedule}}), "spec.verification.schedule", NEVER));
    }

    let c = "template variables";
    let vars_ns = "templates: metadata uses a variable that is not defined or not closed";
    let vars_wl = "workloadTemplates.templates: metadata uses a variable that is not defined or not closed";
    cases.extend([
        case(SB, c, "undefined variable in a name", sb_template(config_map("${tenent}-info")), "spec.templates[0]", vars_ns),
        case(SB, c, "unterminated variable in a name", sb_template(config_map("${tenant-info")), "spec.templates[0]", vars_ns),
        case(SB, c, "workload variable in a namespace template", sb_template(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "labels": {"app": "${workload}"}}})), "spec.templates[0]", vars_ns),
        case(SB, c, "unterminated variable in a label value", sb_template(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "labels": {"tenant": "${tenant"}}})), "spec.templates[0]", vars_ns),
        case(SB, c, "undefined variable in an annotation key", sb_template(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "annotations": {"example.com/${owner}": "x"}}})), "spec.templates[0]", vars_ns),
        case(SB, c, "misspelt workload variable", wl_template(config_map("${workloadKnd}-cfg")), "spec.workloadTemplates[0].templates[0]", vars_wl),
        case(SB, c, "undefined variable in an admin group", json!({"controls": {"tenantAccess": {"adminGroups": ["tenant:${tenent}:admins"]}}}), "spec.controls.tenantAccess.adminGroups", "tenantAccess.adminGroups: a variable is not defined or not closed"),
        case(SB, c, "unterminated variable in a view group", json!({"controls": {"tenantAccess": {"viewGroups": ["tenant:${tenant:viewers"]}}}), "spec.controls.tenantAccess.viewGroups", "tenantAccess.viewGroups: a variable is not defined or not closed"),
    ]);
    cases
}

/// Applies a case's merge patch to a spec (an empty patch changes nothing).
fn apply(spec: &mut Value, patch: &Value) {
    if patch.as_object().is_some_and(|p| p.is_empty()) {
        return;
    }
    merge(spec, patch);
}

/// The message with map keys written as the OpenAPI checks write them: CEL and list-type errors
/// say `spec.grades[P1].x`, the schema's own checks `spec.grades.P1.x`.
fn keys_as_fields(msg: &str) -> String {
    let re = regex::Regex::new(r"(\w)\[([A-Za-z][A-Za-z0-9_-]*)\]").unwrap();
    re.replace_all(msg, "$1.$2").into_owned()
}

/// What the API server said about one case: None when it refused it as expected.
async fn run_case(client: &Client, ns: &str, case: &Case) -> (Option<String>, String) {
    let api = api_for(client, case.kind, ns);
    let name = case
        .name
        .clone()
        .unwrap_or_else(|| common::unique("invalid"));
    let mut spec = valid_spec(case.kind);
    let result = match case.mode {
        Mode::Create => {
            apply(&mut spec, &case.patch);
            api.create(&PostParams::default(), &object(case.kind, &name, spec))
                .await
        }
        Mode::Update | Mode::Status => {
            if case.mode == Mode::Update {
                apply(&mut spec, &case.before);
            }
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
                        Some(format!("the valid object to change was refused: {e}")),
                        String::new(),
                    );
                }
            };
            let mut changed = created.clone();
            if case.mode == Mode::Update {
                apply(&mut spec, &case.patch);
                changed.data["spec"] = spec;
                api.replace(&name, &PostParams::default(), &changed).await
            } else {
                if case.before.as_object().is_some_and(|b| !b.is_empty()) {
                    changed.data["status"] = case.before.clone();
                    changed = match api
                        .replace_status(&name, &PostParams::default(), &changed)
                        .await
                    {
                        Ok(o) => o,
                        Err(e) => {
                            let _ = api.delete(&name, &DeleteParams::default()).await;
                            return (
                                Some(format!("the valid status to change was refused: {e}")),
                                String::new(),
                            );
                        }
                    };
                }
                changed.data["status"] = case.patch.clone();
                api.replace_status(&name, &PostParams::default(), &changed)
                    .await
            }
        }
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
            if !keys_as_fields(&msg).contains(&format!("{}: ", case.field)) {
                problems.push(format!("message does not name the field {:?}", case.field));
            }
            for bad in [
                "evaluating rule",
                "no such key",
                "no matching overload",
                "type conversion",
                "range error",
                "unsupported",
                "failed rule",
            ] {
                if msg.to_lowercase().contains(&bad.to_lowercase()) && bad != "unsupported" {
                    problems.push(format!("a CEL rule failed instead of judging ({bad})"));
                }
            }
            if !msg.contains(&case.message) {
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
                        let rule_text = rule.get("rule").and_then(|r| r.as_str()).unwrap_or("?");
                        let msg = rule
                            .get("message")
                            .and_then(|m| m.as_str())
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

fn read_crd_yaml(kind: &str) -> serde_yaml::Value {
    let path = common::repo_root()
        .join("crds")
        .join(format!("{}.yaml", crd_name(kind)));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A rule that calls `duration()` on a string first checks it against the schema's duration
/// pattern, so that a malformed duration is refused by the pattern alone, never by a CEL
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
async fn invalid_objects_are_refused_naming_the_field() {
    common::install_crds();
    let client = common::client().await;
    let ns = common::namespace(&client, "invalid", &[]).await;
    let cases = invalid_cases();

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
    let mut counts: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for (case, (failure, message)) in cases.iter().zip(results) {
        *counts.entry((case.class, case.kind)).or_default() += 1;
        match failure {
            Some(f) => failures.push(format!("{} / {}: {f}", case.kind, case.what)),
            None => refused_messages.entry(case.kind).or_default().push(message),
        }
    }

    // The table itself, per class and kind, for the record.
    let mut table = String::from("invalid cases refused, by class and kind:\n");
    for ((class, kind), n) in &counts {
        table.push_str(&format!("  {class:32} {kind:18} {n}\n"));
    }
    table.push_str(&format!("  {:32} {:18} {}\n", "all", "", cases.len()));
    eprintln!("{table}");
    for kind in KINDS {
        let n: usize = counts
            .iter()
            .filter(|((_, k), _)| *k == kind)
            .map(|(_, n)| n)
            .sum();
        if n < 10 {
            failures.push(format!("only {n} invalid cases for {kind}"));
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

/// One object the API server must accept.
struct Edge {
    kind: &'static str,
    what: String,
    /// The spec: the valid spec of the kind with this merge patch; `null` values in `nulls`
    /// are then set as JSON nulls (a merge patch cannot say "null").
    patch: Value,
    nulls: &'static [&'static str],
    name: Option<String>,
    generate_name: bool,
    /// A second write of the spec, with this merge patch, that must be accepted too.
    then: Option<Value>,
}

fn edge(kind: &'static str, what: impl Into<String>, patch: Value) -> Edge {
    Edge {
        kind,
        what: what.into(),
        patch,
        nulls: &[],
        name: None,
        generate_name: false,
        then: None,
    }
}

impl Edge {
    fn nulls(mut self, fields: &'static [&'static str]) -> Self {
        self.nulls = fields;
        self
    }
    fn named(mut self, name: String) -> Self {
        self.name = Some(name);
        self
    }
    fn generated(mut self) -> Self {
        self.generate_name = true;
        self
    }
    fn then(mut self, patch: Value) -> Self {
        self.then = Some(patch);
        self
    }
}

#[rustfmt::skip]
fn edge_cases() -> Vec<Edge> {
    let long = |n: usize| "a".repeat(n);
    let offsite = |endpoint: &str| json!({"encryption": {"keySecretRef": {"name": "backup-key", "key": "aes.key"}}, "storage": [{"name": "offsite", "s3": {"bucket": "a.b-c", "endpoint": endpoint, "prefix": "clusters/prod/", "credentialsSecretRef": {"name": "s3"}}}]});
    let long_label_key = format!("{}.{}.example/{}", long(120), long(120), long(63));
    vec![
        // Names, generateName and the longest names each kind allows.
        edge(SB, "a 63-character baseline name", json!({})).named(long(63)),
        edge(SB, "a generated baseline name", json!({})).generated(),
        edge(BP, "a 253-character policy name", json!({})).named(long(253)),
        edge(BK, "a 253-character backup name and policyRef", json!({"policyRef": {"name": long(253)}})).named(long(253)),
        edge(RS, "a generated restore name", json!({"targetNamespace": long(63)})).generated(),
        edge(PW, "a 253-character window name", json!({})).named(long(253)),
        edge(EP, "a generated plan name", json!({})).generated(),
        edge(INC, "a 253-character incident name", json!({})).named(long(253)),
        // Nulls where a field is optional.
        edge(BP, "optional fields as null", json!({})).nulls(&["rto", "timeZone", "schedule", "encryption", "verification", "serviceAccountName"]),
        edge(PW, "optional fields as null", json!({})).nulls(&["targetSelector", "backupPolicyRef", "notifyBefore", "vulnerabilityReports"]),
        edge(INC, "optional fields as null", json!({})).nulls(&["planRef", "detectedAt", "subject", "resolution"]),
        edge(RS, "optional fields as null", json!({})).nulls(&["source", "targetNamespace", "serviceAccountName"]),
        // Boundaries.
        edge(SB, "the lowest priority and shortest check", json!({"priority": -1000, "checkInterval": "10s"})),
        edge(SB, "the highest priority and longest check", json!({"priority": 1000, "checkInterval": "24h"})),
        edge(BP, "the shortest rpo", json!({"rpo": "1m"})),
        edge(BP, "the longest rpo, retention and copies", json!({"rpo": "8760h", "retention": {"copies": 1000, "keepFailed": 0, "maxAge": "87600h"}})),
        edge(BP, "a restore test as long as the rto", json!({"rto": "24h", "verification": {"restoreTest": {"timeout": "24h"}}})),
        edge(PW, "the extreme durations", json!({"notifyBefore": "720h", "rollout": {"progressTimeout": "10s", "maxParallel": 100}, "sla": {"critical": {"maxDelay": "1m"}, "high": {"maxDelay": "1m"}, "medium": {"maxDelay": "8784h"}, "low": {"maxDelay": "8784h"}}})),
        edge(EP, "the extreme review and notice", json!({"review": {"interval": "24h"}, "grades": {"P1": {"notifyWithin": "1m"}, "P2": {"notifyWithin": "168h"}}})),
        edge(EP, "a yearly review in a leap year", json!({"review": {"interval": "8784h", "lastReviewed": "2028-02-29"}})),
        edge(EP, "a review on 29 February 2000", json!({"review": {"lastReviewed": "2000-02-29"}})),
        // Schedules, gaps and time zones.
        edge(BP, "every 6 hours for an rpo of 6h", json!({"schedule": "0 */6 * * *", "rpo": "6h"})),
        edge(BP, "hourly for an rpo of 1h", json!({"schedule": "@hourly", "rpo": "1h"})),
        edge(BP, "every 15 minutes for an rpo of 15m", json!({"schedule": "*/15 * * * *", "rpo": "15m"})),
        edge(BP, "daily for an rpo of 24h", json!({"schedule": "0 2 * * *", "rpo": "24h"})),
        edge(BP, "weekdays for an rpo of 72h", json!({"schedule": "30 1 * * MON-FRI", "rpo": "72h"})),
        edge(BP, "monthly for an rpo of 744h", json!({"schedule": "0 0 1 * *", "rpo": "744h"})),
        edge(BP, "a three-segment time zone", json!({"schedule": "0 2 * * *", "rpo": "24h", "timeZone": "America/Argentina/Buenos_Aires"})),
        edge(BP, "an Etc time zone", json!({"timeZone": "Etc/GMT+5"})),
        edge(BP, "UTC", json!({"timeZone": "UTC"})),
        edge(PW, "a window just shorter than its step", json!({"windows": [{"schedule": "0 */6 * * *", "duration": "5h59m"}]})),
        edge(PW, "a weekly window of 167h", json!({"windows": [{"schedule": "@weekly", "duration": "167h"}]})),
        edge(PW, "a weekday window of 23h", json!({"windows": [{"schedule": "0 2 * * 1-5", "duration": "23h", "timeZone": "Europe/Berlin"}]})),
        edge(PW, "a window on 29 February", json!({"windows": [{"schedule": "0 2 29 2 *", "duration": "4h"}]})),
        edge(PW, "a window of a year from 29 February", json!({"windows": [{"schedule": "0 0 29 2 *", "duration": "8770h"}]})),
        edge(PW, "windows on the last day, the third Friday and the last Friday", json!({"windows": [{"schedule": "0 2 L * *", "duration": "4h"}, {"schedule": "0 2 ? * 5#3", "duration": "4h"}, {"schedule": "0 2 ? * 5L", "duration": "4h"}, {"schedule": "0 2 15W * *", "duration": "4h"}]})),
        edge(PW, "windows named by month and weekday names", json!({"windows": [{"schedule": "0 2 1 jan,JUL *", "duration": "24h"}, {"schedule": "0-30/15 8-18 * * Mon-Fri", "duration": "10m"}]})),
        edge(EP, "quarterly drills", json!({"drills": {"schedule": "0 10 1 */3 *", "grade": "P1"}})),
        edge(EP, "daily drills", json!({"drills": {"schedule": "0 10 * * *", "grade": "P1"}})),
        edge(PW, "windows on the first Monday and over the weekend", json!({"windows": [{"schedule": "0 2 ? * MON#1", "duration": "4h"}, {"schedule": "0 2 * * FRI-SUN", "duration": "23h"}]})),
        edge(BP, "restore tests as often as their timeout allows", json!({"verification": {"restoreTest": {"schedule": "*/30 * * * *", "timeout": "30m"}}})),
        edge(BP, "a local path with a trailing slash", json!({"storage": [{"name": "onsite", "local": {"path": "backups/"}}]})),
        edge(PW, "windows on stepped ranges", json!({"windows": [{"schedule": "0 0-23/6 * * *", "duration": "2h"}, {"schedule": "0 0-23/2 * * *", "duration": "90m"}, {"schedule": "0-59/20 * * * *", "duration": "10m"}, {"schedule": "0 1-23/6 * * *", "duration": "3h"}]})),
        edge(BP, "restore tests twice a day for 3h", json!({"verification": {"restoreTest": {"schedule": "0 1-23/12 * * *", "timeout": "3h"}}})),
        edge(BP, "resources as kubectl names them", json!({"resources": {"includeKinds": ["deployments.apps", "configmaps"]}})),
        edge(SB, "kinds of other groups that share a name with built-in ones", json!({"templates": [{"apiVersion": "teleport.dev/v1", "kind": "TeleportAccessList", "metadata": {"name": "x"}}, {"apiVersion": "ipam.cluster.x-k8s.io/v1beta1", "kind": "IPAddress", "metadata": {"name": "y"}}]})),
        edge(SB, "a fractional quota written as a string", json!({"controls": {"resourceQuota": {"hard": {"requests.cpu": "0.5", "limits.cpu": "1.5"}}}})),
        // Selectors, labels, quantities and templates with variables.
        edge(SB, "every selector operator", json!({"namespaceSelector": {"matchLabels": {long_label_key.clone(): long(63)}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["gold", ""]}, {"key": "x", "operator": "NotIn", "values": ["y"]}, {"key": "example.com/z", "operator": "Exists"}, {"key": "w", "operator": "DoesNotExist"}]}})),
        edge(SB, "the longest tenant label", json!({"tenantLabel": long_label_key.clone()})),
        edge(SB, "quotas as numbers and quantities", json!({"controls": {"resourceQuota": {"hard": {"pods": 100, "requests.cpu": "500m", "limits.memory": "32Gi", "count/deployments.apps": "10", "requests.nvidia.com/gpu": "1", "requests.storage": "1.5Ti", "services": "0"}}, "limitRange": {"limits": [{"type": "Container", "max": {"cpu": "2", "memory": "1Gi"}, "min": {"cpu": "10m"}, "default": {"cpu": "500m"}, "defaultRequest": {"cpu": "100m"}, "maxLimitRequestRatio": {"cpu": 4}}, {"type": "PersistentVolumeClaim", "max": {"storage": "10Gi"}}]}}})),
        edge(SB, "network isolation without allowFromNamespaces, and with one", json!({"controls": {"networkIsolation": {"allowSameTenant": false}}, "workloadTemplates": [{"selector": {"matchLabels": {"app": "web"}}, "templates": [json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "${workload}-ingress", "labels": {"workload": "${workload}", "kind": "${workloadKind}"}}, "spec": {"podSelector": {}}})]}]})),
        edge(SB, "variables in names, labels and annotations", json!({"templates": [
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "${tenant}-info", "namespace": "${namespace}", "labels": {"tenant": "${tenant}", "app.kubernetes.io/part-of": "${baseline}"}, "annotations": {"example.com/owner": "${tenant} in ${namespace}", "example.com/literal": "$${not-a-variable}"}}, "data": {"greeting": "ようこそ ${tenant} 👋"}},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "tenant:${tenant}:reader"}, "rules": []},
            {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "pdb"}, "spec": {"maxUnavailable": 1}}
        ], "controls": {"tenantAccess": {"adminGroups": ["tenant:${tenant}:admins"], "viewGroups": ["auditors", "tenant:${tenant}:viewers"], "adminRole": "system:aggregate-to-admin"}}})),
        edge(SB, "ignoreDifferences of the core group by name", json!({"ignoreDifferences": [{"group": "", "kind": "ConfigMap", "name": "tenant-info", "jsonPointers": ["/data/greeting"]}, {"group": "rbac.authorization.k8s.io", "kind": "RoleBinding", "name": "tenant:admins", "jsonPointers": ["/subjects"]}]})),
        edge(BP, "kind filters of every form", json!({"resources": {"includeKinds": ["ConfigMap", "configmaps", "apps/v1/Deployment", "apps/Deployment", "v1/Secret"], "labelSelector": {"matchExpressions": [{"key": "backup", "operator": "NotIn", "values": ["skip"]}]}}})),
        edge(EP, "a scale-down of everything and an isolation that lets forensics in", json!({"grades": {"P1": {"notifyWithin": "15m", "actions": [{"scaleDown": {"selector": {}}}, {"isolateNetwork": {"allowFromNamespaces": {"matchLabels": {"role": "forensics"}}}}, {"isolateNetwork": {}}]}}})),
        // Stores.
        edge(BP, "plain http to a loopback address", offsite("http://127.0.0.1:9000")),
        edge(BP, "plain http to localhost", offsite("http://localhost:8333")),
        edge(BP, "plain http to ::1", offsite("http://[::1]:9000/s3")),
        edge(BP, "https with a port and a path", offsite("https://s3.eu-central-1.example.net:8443/storage")),
        edge(BP, "paths and keys of every allowed character", json!({"encryption": {"keySecretRef": {"name": "backup-key", "key": ".hidden_key-1"}}, "storage": [{"name": "onsite", "local": {"path": "team-a/backups.v2/_x"}}, {"name": "claim", "persistentVolumeClaim": {"claimName": "backups", "path": "sub/dir"}}]})),
        // Images, text in any script.
        edge(PW, "images of every reference form", json!({"patches": [{"name": "openssl-3.0.15", "priority": "critical", "advisories": ["CVE-2026-1234", "GHSA-abcd-efgh-ijkl", "RHSA-2026:1234"], "images": [
            {"from": "registry.example:5000/team/app:1.2.3", "to": "registry.example:5000/team/app:1.2.4"},
            {"from": "nginx", "to": "nginx:1.27-alpine"},
            {"from": "[::1]:5000/app:1", "to": "ghcr.io/org/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}
        ]}], "freezes": [{"start": "2026-12-20T00:00:00Z", "end": "2027-01-05T00:00:00Z", "reason": "年末の凍結 ❄"}]})),
        edge(EP, "contacts in any script", json!({"contacts": [{"name": "Équipe sécurité 🛡", "role": "SecurityManager", "channels": ["pager"]}, {"name": "運用チーム", "role": "Technical"}]})),
        edge(INC, "a summary in any script, 1024 characters long", json!({"summary": format!("資格情報の漏洩 🔑 {}", "x".repeat(1024 - 11))})),
        // Evidence that may still be written.
        edge(INC, "a drill from the start, regraded, approved and resolved", json!({"drill": true, "detectedAt": "2026-12-01T10:00:00Z", "subject": {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "name": "system:admins"}})).then(json!({"grade": "critical_1", "approvals": ["restore"], "resolution": {"cause": "a leaked token", "recommendations": "rotate tokens monthly"}})),
        edge(INC, "the same detection time written again", json!({"detectedAt": "2026-12-01T10:00:00Z"})).then(json!({"detectedAt": "2026-12-01T10:00:00Z", "summary": "credentials leaked, found"})),
    ]
}

#[tokio::test]
async fn valid_objects_at_the_edges_are_accepted() {
    common::install_crds();
    let client = common::client().await;
    let ns = common::namespace(&client, "edges", &[]).await;
    let edges = edge_cases();
    let mut failures = vec![];
    let mut per_kind: BTreeMap<&str, usize> = BTreeMap::new();
    for e in &edges {
        *per_kind.entry(e.kind).or_default() += 1;
        let api = api_for(&client, e.kind, &ns);
        let mut spec = valid_spec(e.kind);
        apply(&mut spec, &e.patch);
        for field in e.nulls {
            spec[*field] = Value::Null;
        }
        let mut obj = object(e.kind, "placeholder", spec.clone());
        if e.generate_name {
            obj.metadata.name = None;
            obj.metadata.generate_name = Some("edge-".into());
        } else {
            obj.metadata.name = Some(e.name.clone().unwrap_or_else(|| common::unique("edge")));
        }
        let created = match api.create(&PostParams::default(), &obj).await {
            Ok(o) => o,
            Err(err) => {
                failures.push(format!("{} / {}: refused: {err}", e.kind, e.what));
                continue;
            }
        };
        let name = created.metadata.name.clone().unwrap_or_default();
        if let Some(then) = &e.then {
            let mut changed = created.clone();
            apply(&mut spec, then);
            changed.data["spec"] = spec;
            if let Err(err) = api.replace(&name, &PostParams::default(), &changed).await {
                failures.push(format!(
                    "{} / {}: the change was refused: {err}",
                    e.kind, e.what
                ));
            }
        }
        let _ = api.delete(&name, &DeleteParams::default()).await;
    }
    eprintln!(
        "valid edge cases accepted, by kind: {per_kind:?} ({} in all)",
        edges.len()
    );
    common::delete_namespace(&client, &ns).await;
    assert!(
        failures.is_empty(),
        "{} of {} valid objects were refused:\n{}",
        failures.len(),
        edges.len(),
        failures.join("\n")
    );
}

/// What only the operator writes (config/admission): a tenant with every right in its namespace
/// creates Backups and Incidents, but only with trigger and source Manual; the operator's
/// ServiceAccount (with the shipped config/rbac) records scheduled and catalogue backups; a cluster
/// administrator may do both.
#[tokio::test]
async fn only_the_operator_records_scheduled_backups_and_detections() {
    common::install_crds();
    let admin = common::client().await;
    let (ok, out, err) = common::kubectl(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "-k",
        "config/admission",
    ]);
    assert!(ok, "kubectl apply -k config/admission:\n{out}\n{err}");
    common::operator_kubeconfig(); // applies config/rbac
    let ns = common::namespace(&admin, "provenance", &[]).await;
    common::tenant_account(&ns).await;
    let tenant = common::client_as(&format!(
        "system:serviceaccount:{ns}:{}",
        common::TENANT_ACCOUNT
    ))
    .await;
    let operator = common::client_as(&format!(
        "system:serviceaccount:{}:opsec-operator",
        common::OPERATOR_NAMESPACE
    ))
    .await;
    let create = |client: &Client, kind: &'static str, patch: Value| {
        let api = api_for(client, kind, &ns);
        let mut spec = valid_spec(kind);
        apply(&mut spec, &patch);
        let obj = object(kind, &common::unique("provenance"), spec);
        async move { api.create(&PostParams::default(), &obj).await }
    };

    // The policy is served a moment after it is created: wait until it refuses.
    let refused = common::eventually(
        std::time::Duration::from_secs(30),
        "the admission policy to refuse a tenant's Scheduled backup",
        || async {
            match create(&tenant, BK, json!({"trigger": "Scheduled"})).await {
                Err(kube::Error::Api(s)) if s.code == 422 => Some(s.message),
                _ => None,
            }
        },
    )
    .await;
    assert!(
        refused.contains("spec.trigger: only the operator records"),
        "{refused}"
    );

    for trigger in ["PrePatch", "Incident", "Catalogue"] {
        let r = create(&tenant, BK, json!({"trigger": trigger})).await;
        assert!(
            matches!(&r, Err(kube::Error::Api(s)) if s.code == 422 && s.message.contains("spec.trigger")),
            "a tenant's {trigger} Backup: {r:?}"
        );
    }
    for source in [
        "BaselineDrift",
        "BackupFailed",
        "RPOBreached",
        "KubernetesEvent",
    ] {
        let r = create(&tenant, INC, json!({"source": source})).await;
        assert!(
            matches!(&r, Err(kube::Error::Api(s)) if s.code == 422 && s.message.contains("spec.source: only the operator records detections")),
            "a tenant's {source} Incident: {r:?}"
        );
    }
    // What a person writes is the tenant's to write.
    create(&tenant, BK, json!({"trigger": "Manual"}))
        .await
        .expect("a tenant's Manual Backup");
    create(&tenant, BK, json!({"trigger": null}))
        .await
        .expect("a tenant's Backup with the default trigger");
    create(&tenant, INC, json!({"source": "Manual"}))
        .await
        .expect("a tenant's Manual Incident");
    // The operator records its runs; an administrator may record anything.
    create(&operator, BK, json!({"trigger": "Scheduled"}))
        .await
        .expect("the operator's Scheduled Backup");
    create(&operator, BK, json!({"trigger": "Catalogue"}))
        .await
        .expect("the operator's Catalogue Backup");
    create(&admin, INC, json!({"source": "BaselineDrift"}))
        .await
        .expect("an administrator's BaselineDrift Incident");

    common::delete_namespace(&admin, &ns).await;
}
