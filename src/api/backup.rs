//! `BackupPolicy`, `Backup` and `Restore` (namespaced): a tenant's backup strategy with its RPO
//! and RTO, each backup run with its digests and signature, and each restore (X.1642 clauses
//! 7.2.2.1, 7.2.2.2(7), 8.4, 8.10).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{
    DNS_LABEL_PATTERN, DNS_SUBDOMAIN_PATTERN, DURATION_PATTERN, Duration, LocalObjectRef, Schedule,
    SecretKeyRef, TimeZone, conditions_schema, default_true,
};
use super::rules::{self, KIND_FILTER_PATTERN, KIND_REF_PATTERN, duration_between, duration_guard};

/// CEL: a relative path of segments of letters, digits, `-`, `_` and `.`, without `.` or `..`.
const RELATIVE_PATH_RULE: &str = r"self.matches(r'^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*/?$') && !self.split('/').exists(s, s == '..' || s == '.' || size(s) > 255)";

/// CEL: where storage location `a` writes, as one string (two locations must not share one);
/// a trailing `/` names the same place.
fn storage_place(a: &str) -> String {
    let trim = |x: String| format!("({x}.endsWith('/') ? {x}.substring(0, size({x}) - 1) : {x})");
    let or_empty = |field: &str| format!("(has({a}.{field}) ? {a}.{field} : '')");
    format!(
        "(has({a}.local) ? 'local:' + {local} : has({a}.persistentVolumeClaim) ? 'claim:' + {a}.persistentVolumeClaim.claimName + '/' + {claim} : has({a}.s3) ? 's3:' + {endpoint} + '/' + {a}.s3.bucket + '/' + {prefix} : '')",
        local = trim(format!("{a}.local.path")),
        claim = trim(or_empty("persistentVolumeClaim.path")),
        endpoint = trim(or_empty("s3.endpoint")),
        prefix = trim(or_empty("s3.prefix")),
    )
}

/// How often and how safely a namespace is backed up.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "opsec.x1642.dev",
    version = "v1alpha1",
    kind = "BackupPolicy",
    plural = "backuppolicies",
    shortname = "bkp",
    category = "opsec",
    namespaced,
    status = "BackupPolicyStatus",
    derive = "PartialEq",
    doc = "BackupPolicy backs up its own namespace on a schedule that meets an RPO, keeps encrypted and signed copies on-site and off-site, verifies them and measures the real RTO with restore tests (ITU-T X.1642 clauses 8.10, 8.4, 7.2.2.1).",
    printcolumn(name = "RPO", type_ = "string", json_path = ".spec.rpo"),
    printcolumn(name = "RTO", type_ = "string", json_path = ".spec.rto", priority = 1),
    printcolumn(
        name = "Last Backup",
        type_ = "date",
        json_path = ".status.lastSuccessfulTime"
    ),
    printcolumn(
        name = "RPO Met",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"RPOMet\")].status"
    ),
    printcolumn(
        name = "Measured RTO",
        type_ = "string",
        json_path = ".status.lastPassedRestoreTest.duration",
        priority = 1
    ),
    printcolumn(
        name = "Last Test",
        type_ = "string",
        json_path = ".status.lastRestoreTest.result",
        priority = 1
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
#[x_kube(validation = Rule::new("!self.storage.exists(s, has(s.s3)) || has(self.encryption)").message("encryption is required when any storage location is off-site (s3)").field_path(".encryption"))]
#[x_kube(validation = Rule::new(format!("!has(self.rto) || !has(self.verification) || !has(self.verification.restoreTest) || !{} || !{} || duration(self.verification.restoreTest.timeout) >= duration(self.rto)", duration_guard("self.rto"), duration_guard("self.verification.restoreTest.timeout"))).message("verification.restoreTest.timeout must be at least the rto, or a restore that meets its target is cut short").field_path(".verification.restoreTest.timeout"))]
#[x_kube(validation = Rule::new(format!("!has(self.retention) || !has(self.retention.maxAge) || !{} || !{} || duration(self.retention.maxAge) >= duration(self.rpo)", duration_guard("self.rpo"), duration_guard("self.retention.maxAge"))).message("retention.maxAge must be at least the rpo, or the copy that keeps the RPO is deleted").field_path(".retention.maxAge"))]
#[x_kube(validation = Rule::new(format!("!has(self.schedule) || !{} || !{} || duration(self.rpo).getSeconds() >= {} * 60", rules::cron_guard("self.schedule"), duration_guard("self.rpo"), rules::cron_longest_gap_bound("self.schedule"))).message("schedule leaves longer gaps between backups than the rpo: no backup could keep it; run it more often or raise the rpo").field_path(".schedule"))]
#[x_kube(validation = Rule::new(format!("!has(self.verification) || !has(self.verification.restoreTest) || !{} || !{} || {} * 60 >= duration(self.verification.restoreTest.timeout).getSeconds()", rules::cron_guard("self.verification.restoreTest.schedule"), duration_guard("self.verification.restoreTest.timeout"), rules::cron_shortest_gap_bound("self.verification.restoreTest.schedule"))).message("verification.restoreTest.schedule: restore tests come closer together than their timeout; the next would be due before the last may end").field_path(".verification.restoreTest.schedule"))]
#[serde(rename_all = "camelCase")]
pub struct BackupPolicySpec {
    /// Cron schedule of backups. When absent it is derived from the RPO (a run every RPO/2,
    /// staggered per policy so that many policies do not start together).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
    /// IANA time zone of the schedule; UTC when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<TimeZone>,
    /// Recovery point objective: the newest good backup is never older than this (`RPOMet`).
    /// At least 1m.
    #[x_kube(validation = duration_between("rpo", "1m", "8760h"))]
    pub rpo: Duration,
    /// Recovery time objective: the longest a restore may take, checked by restore tests
    /// (`RTOMet`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = duration_between("rto", "1s", "720h"))]
    pub rto: Option<Duration>,
    /// Which resources of the namespace are backed up.
    #[serde(default)]
    pub resources: BackupResources,
    /// How many copies are kept and for how long.
    #[serde(default)]
    pub retention: Retention,
    /// Where copies are written: every location gets every backup. Keep one on-site (local or
    /// persistentVolumeClaim) and one off-site (s3).
    #[schemars(length(min = 1, max = 8))]
    #[x_kube(validation = Rule::new("self.all(a, self.exists_one(b, b.name == a.name))").message("storage names must be unique"))]
    #[x_kube(validation = Rule::new(format!("self.all(a, self.exists_one(b, {} == {}))", storage_place("b"), storage_place("a"))).message("storage: two locations write to the same place (the same local path, claim and path, or bucket and prefix)"))]
    pub storage: Vec<StorageLocation>,
    /// Encryption of every archive (AES-256-GCM); required when any location is off-site.
    /// Every manifest is signed by the operator's own key (the provider's), never a tenant's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
    /// Verification of stored copies and restore tests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
    /// Namespaces whose Restores may write into this namespace from their backups. A Restore
    /// into another namespace is refused unless that namespace's policy lists the source here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 63), regex(pattern = DNS_LABEL_PATTERN)), extend("x-kubernetes-list-type" = "set"))]
    pub accept_restores_from: Vec<String>,
    /// Stop scheduling new backups (verification and status still run).
    #[serde(default)]
    pub suspend: bool,
    /// ServiceAccount of this namespace the operator acts as for this policy's backups,
    /// verifications and restore tests (it lists what is backed up and reads the keys and
    /// credentials); the operator's default (`--default-service-account`) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN_PATTERN))]
    pub service_account_name: Option<String>,
}

/// Which resources a backup takes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.includeKinds) || !has(self.excludeKinds) || !self.includeKinds.exists(k, k in self.excludeKinds)").message("resources: a kind is both included and excluded"))]
pub struct BackupResources {
    /// Kinds to back up (`ConfigMap`, `Deployment`, `apps/v1/Deployment`); every listable kind
    /// when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128), inner(length(min = 1, max = 253), regex(pattern = KIND_FILTER_PATTERN)), extend("x-kubernetes-list-type" = "set"))]
    pub include_kinds: Vec<String>,
    /// Kinds never backed up.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128), inner(length(min = 1, max = 253), regex(pattern = KIND_FILTER_PATTERN)), extend("x-kubernetes-list-type" = "set"))]
    pub exclude_kinds: Vec<String>,
    /// Only objects with these labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "rules::optional_label_selector")]
    pub label_selector: Option<LabelSelector>,
    /// Whether Secrets are backed up (they are encrypted like everything else).
    #[serde(default = "default_true")]
    pub include_secrets: bool,
    /// Keep the node ports the cluster gave NodePort and LoadBalancer Services, so that a restore
    /// asks for the same ports (where they are taken, the restore of that Service fails naming
    /// the port). Off by default: a restore, a restore test beside the original or a restore into
    /// another namespace gets new ports.
    #[serde(default)]
    pub keep_node_ports: bool,
}

impl Default for BackupResources {
    fn default() -> Self {
        Self {
            include_kinds: vec![],
            exclude_kinds: vec![],
            label_selector: None,
            include_secrets: true,
            keep_node_ports: false,
        }
    }
}

/// Retention of copies.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Retention {
    /// Successful copies kept per location (1 to 1000). The last verified copy is never deleted.
    #[serde(default = "default_copies")]
    #[schemars(range(min = 1, max = 1000))]
    pub copies: i32,
    /// Copies older than this are deleted (never the last verified one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = duration_between("retention.maxAge", "1m", "87600h"))]
    pub max_age: Option<Duration>,
    /// Failed Backup objects kept for diagnosis.
    #[serde(default = "default_keep_failed")]
    #[schemars(range(min = 0, max = 100))]
    pub keep_failed: i32,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            copies: default_copies(),
            max_age: None,
            keep_failed: default_keep_failed(),
        }
    }
}

/// One place copies are written to: exactly one of local, persistentVolumeClaim, s3.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.local) ? 1 : 0) + (has(self.persistentVolumeClaim) ? 1 : 0) + (has(self.s3) ? 1 : 0) == 1").message("each storage location sets exactly one of local, persistentVolumeClaim or s3"))]
pub struct StorageLocation {
    /// Name of the location (`onsite`, `offsite`), used in Backup status and in Restores.
    #[schemars(length(min = 1, max = 63), regex(pattern = DNS_LABEL_PATTERN))]
    pub name: String,
    /// A directory of the operator's own filesystem (on-site).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalStorage>,
    /// A PersistentVolumeClaim mounted into the operator (on-site).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim: Option<PvcStorage>,
    /// An S3-compatible bucket (off-site).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Storage>,
}

/// A directory of the operator's on-site store.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalStorage {
    /// Directory relative to this namespace's part of the operator's local store root
    /// (`<root>/<namespace>/<path>`, root set by the provider with `--local-store-root`):
    /// segments of letters, digits, '-', '_' and '.', separated by '/'.
    #[schemars(length(min = 1, max = 512))]
    #[x_kube(validation = Rule::new(RELATIVE_PATH_RULE).message("local.path must be relative: segments of letters, digits, '-', '_' and '.', separated by '/', without '.' or '..'"))]
    pub path: String,
}

/// A PersistentVolumeClaim.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PvcStorage {
    /// Name of a claim in this namespace; the provider mounts it into the operator at
    /// `<pvc root>/<namespace>/<claimName>` (`--pvc-root`). A claim that is missing, unbound or
    /// not mounted there makes the location unreachable, with the reason.
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN_PATTERN))]
    pub claim_name: String,
    /// Sub-directory within the claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(validation = Rule::new(RELATIVE_PATH_RULE).message("persistentVolumeClaim.path must be relative: segments of letters, digits, '-', '_' and '.', separated by '/', without '.' or '..'"))]
    pub path: Option<String>,
}

/// An S3-compatible bucket.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Storage {
    /// Bucket name.
    #[schemars(
        length(min = 3, max = 63),
        regex(pattern = r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$")
    )]
    #[x_kube(validation = Rule::new(r"!self.contains('..') && !self.contains('.-') && !self.contains('-.') && !self.matches(r'^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$') && !self.startsWith('xn--') && !self.startsWith('sthree-') && !self.startsWith('amzn-s3-demo-') && !self.endsWith('-s3alias') && !self.endsWith('--ol-s3') && !self.endsWith('.mrap') && !self.endsWith('--x-s3') && !self.endsWith('--table-s3')").message("s3.bucket must be a name S3 allows: no '..', '.-' or '-.', not an IP address, no reserved prefix (xn--, sthree-, amzn-s3-demo-) or suffix (-s3alias, --ol-s3, .mrap, --x-s3, --table-s3)"))]
    pub bucket: String,
    /// Endpoint URL (`https://s3.example.net`); the AWS endpoint of the region when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Plain `http://` only to a loopback address (a proxy in the operator's own pod).
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new(format!(r"isURL(self) && url(self).getScheme() in ['https', 'http'] && url(self).getHostname() != '' && (!self.matches(r'^https?://[0-9.]+([:/].*)?$') || self.matches(r'^https?://((25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])\.){{3}}(25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])([:/].*)?$')) && self.matches(r'^https?://(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?)*){}(/[^?#\s]*)?$')", rules::PORT_PATTERN)).message("s3.endpoint must be an http or https URL with a host name or address and a port from 1 to 65535, and with no query or fragment"))]
    #[x_kube(validation = Rule::new(r"!self.matches(r'^[a-zA-Z]+://[^/?#]*@')").message("s3.endpoint must not carry credentials (user:password@): name a Secret in credentialsSecretRef"))]
    #[x_kube(validation = Rule::new(r"!self.startsWith('http://') || self.matches(r'^http://(localhost|127(\.(25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])){3}|\[::1\])(:[0-9]{1,5})?(/[^?#\s]*)?$')").message("s3.endpoint must use https: an off-site copy over plain http could be read or changed on the way (http only to a loopback address)"))]
    pub endpoint: Option<String>,
    /// Region of the bucket.
    #[serde(default = "default_region")]
    #[schemars(
        length(min = 1, max = 64),
        regex(pattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub region: String,
    /// Key prefix under which this policy's backups are written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    #[x_kube(validation = Rule::new(r"self.matches(r'^[A-Za-z0-9!_.*()-]+(/[A-Za-z0-9!_.*()-]+)*/?$') && !self.split('/').exists(s, s == '..' || s == '.')").message("s3.prefix must be relative: segments of letters, digits and the characters ! _ . * ( ) -, separated by '/', without '.' or '..'"))]
    pub prefix: Option<String>,
    /// Secret in this namespace with `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`.
    pub credentials_secret_ref: LocalObjectRef,
    /// Path-style addressing (`endpoint/bucket/key`), as most self-hosted S3 servers need.
    #[serde(default = "default_true")]
    pub force_path_style: bool,
}

/// Archive encryption.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Encryption {
    /// Secret key holding 32 random bytes (raw, or base64) used as the AES-256-GCM key.
    pub key_secret_ref: SecretKeyRef,
}

/// Verification of copies and restore tests.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Verification {
    /// When every stored copy is re-read and its digests and signature checked.
    #[serde(default = "default_verification_schedule")]
    pub schedule: Schedule,
    /// Restore tests that measure the real RTO.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_test: Option<RestoreTest>,
}

/// Restore tests.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreTest {
    /// When the newest copy is restored into a scratch namespace and compared.
    #[serde(default = "default_restore_test_schedule")]
    pub schedule: Schedule,
    /// A restore test that takes longer fails.
    #[serde(default = "default_restore_timeout")]
    #[x_kube(validation = duration_between("restoreTest.timeout", "10s", "24h"))]
    pub timeout: Duration,
}

/// Observed state of a backup policy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupPolicyStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub observed_generation: Option<i64>,
    /// The newest backup run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup: Option<BackupSummary>,
    /// Completion time of the newest good backup: the age the RPO is measured against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_time: Option<Time>,
    /// When the next backup is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_schedule_time: Option<Time>,
    /// The newest verification of stored copies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verification: Option<VerificationSummary>,
    /// The newest restore test, passed or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_restore_test: Option<RestoreTestSummary>,
    /// The newest restore test that passed: its duration is the measured RTO (a failed test
    /// measures nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_passed_restore_test: Option<RestoreTestSummary>,
    /// Copies verification found corrupt, newest first (at most 50): a catalogue rebuilt from
    /// the stores marks them corrupt again, rather than trusting them as written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50))]
    pub corrupt_copies: Vec<CorruptCopy>,
    /// The last `opsec.x1642.dev/verify-now` token handled: a verification runs when the
    /// annotation holds another value (re-applying the same manifest asks for nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_verify_now: Option<String>,
    /// The last `opsec.x1642.dev/restore-test-now` token handled, likewise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_restore_test_now: Option<String>,
    /// Ready, RPOMet, RTOMet, Verified, StorageReachable.
    #[serde(default)]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
}

/// A backup run in a policy's status.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupSummary {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub objects: i64,
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub bytes: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^[a-f0-9]{64}$"))]
    pub sha256: Option<String>,
}

/// A verification pass over stored copies.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerificationSummary {
    pub time: Time,
    /// Copies whose digests and signature checked out.
    #[schemars(range(min = 0))]
    pub verified: i32,
    /// Copies that failed.
    #[schemars(range(min = 0))]
    pub failed: i32,
}

/// A stored copy verification found corrupt.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CorruptCopy {
    /// The backup's id in the store.
    #[schemars(length(min = 1, max = 253))]
    pub backup_id: String,
    /// The storage location holding the copy.
    #[schemars(length(min = 1, max = 63))]
    pub location: String,
    /// When verification found it.
    pub time: Time,
    /// What verification found.
    #[schemars(length(max = 1024))]
    pub reason: String,
}

/// A restore test.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreTestSummary {
    pub time: Time,
    /// Measured restore time: the real RTO.
    #[schemars(length(min = 1, max = 64), regex(pattern = DURATION_PATTERN))]
    pub duration: String,
    pub result: RestoreTestResult,
    #[schemars(range(min = 0))]
    pub objects_compared: i64,
    #[schemars(range(min = 0))]
    pub mismatches: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One backup run, written by the operator, or by a user for a backup now.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "opsec.x1642.dev",
    version = "v1alpha1",
    kind = "Backup",
    plural = "backups",
    shortname = "bk",
    category = "opsec",
    namespaced,
    status = "BackupStatus",
    derive = "PartialEq",
    validation = rules::status_kept("Backup"),
    doc = "Backup is one backup run of a BackupPolicy: where its copies are, their digests and signature, and their verification (ITU-T X.1642 clause 8.10). Create one with spec.policyRef for a backup now.",
    printcolumn(name = "Policy", type_ = "string", json_path = ".spec.policyRef.name"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Objects", type_ = "integer", json_path = ".status.objects"),
    printcolumn(name = "Bytes", type_ = "integer", json_path = ".status.bytes"),
    printcolumn(
        name = "Completed",
        type_ = "date",
        json_path = ".status.completionTime"
    ),
    printcolumn(
        name = "SHA256",
        type_ = "string",
        json_path = ".status.sha256",
        priority = 1
    ),
    printcolumn(
        name = "Expires",
        type_ = "date",
        json_path = ".status.expiresAt",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("self == oldSelf").message("Backup spec is immutable: create a new Backup instead"))]
#[serde(rename_all = "camelCase")]
pub struct BackupSpec {
    /// The BackupPolicy (same namespace) whose settings this run uses.
    pub policy_ref: LocalObjectRef,
    /// Why this backup was taken: Scheduled, Manual, PrePatch (before a patch), Incident.
    #[serde(default)]
    pub trigger: BackupTrigger,
}

/// Why a backup was taken.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum BackupTrigger {
    Scheduled,
    #[default]
    Manual,
    PrePatch,
    Incident,
    /// Rebuilt from the store's catalogue after the Backup object was lost.
    Catalogue,
}

/// Phase of a backup.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum BackupPhase {
    Pending,
    Running,
    Completed,
    Failed,
    Verified,
    Corrupt,
}

/// Observed state of a backup run. A run that has ended never runs again.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(oldSelf.phase) || !(oldSelf.phase in ['Completed', 'Failed', 'Verified', 'Corrupt']) || (has(self.phase) && !(self.phase in ['Pending', 'Running']))").message("phase: a backup that has ended never goes back to Pending or Running").field_path(".phase"))]
pub struct BackupStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<BackupPhase>,
    /// Identifier of the backup in the store (`<prefix>/<namespace>/<policy>/<id>/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Objects in the archive.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub objects: i64,
    /// Size of the encrypted archive.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub bytes: i64,
    /// SHA-256 of the archive as stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^[a-f0-9]{64}$"))]
    pub sha256: Option<String>,
    /// Id of the key that signed the manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature_key_id: Option<String>,
    /// One entry per storage location.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub locations: Vec<BackupLocationStatus>,
    /// Kinds (`apiVersion/Kind`) the policy's ServiceAccount may not list: not in this backup.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unreadable_kinds: Vec<String>,
    /// The newest verification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<BackupVerification>,
    /// When retention deletes this copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,
    /// Why the backup failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Ready.
    #[serde(default)]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
}

/// A backup's copy in one storage location.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupLocationStatus {
    pub name: String,
    pub state: CopyState,
    /// Object key or path of the copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The result of a verification of a backup.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupVerification {
    pub time: Time,
    pub result: VerificationResult,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

status_words! {
    /// The state of a backup's copy in one storage location.
    CopyState {
        /// Written and committed (its manifest last), not verified since.
        #[default]
        Written,
        /// Its write failed; a stored good copy is copied there again on a backoff.
        Failed,
        /// Read back: signature, stored digest and every object's digest checked out.
        Verified,
        /// Read back and found not to match its signed manifest.
        Corrupt,
        /// Deleted by retention.
        Deleted,
    }
}

status_words! {
    /// What a verification of a backup's copies found.
    VerificationResult {
        /// Every copy checked out.
        #[default]
        Verified,
        /// A copy does not match its signed manifest.
        Corrupt,
        /// A copy could not be read (its store unreachable, the keys unreadable).
        Failed,
    }
}

status_words! {
    /// How a restore test ended.
    RestoreTestResult {
        /// Every object restored and equal to its backup.
        #[default]
        Passed,
        /// An object could not be restored or differs, or there was no backup to restore.
        Failed,
        /// It took longer than `verification.restoreTest.timeout`.
        TimedOut,
    }
}

/// A restore of a backup into this or another namespace.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "opsec.x1642.dev",
    version = "v1alpha1",
    kind = "Restore",
    plural = "restores",
    shortname = "rst",
    category = "opsec",
    namespaced,
    status = "RestoreStatus",
    derive = "PartialEq",
    validation = rules::status_kept("Restore"),
    doc = "Restore restores a Backup into its own namespace or another that accepts it, in dependency order, skipping or overwriting existing objects (ITU-T X.1642 clause 8.10).",
    printcolumn(name = "Backup", type_ = "string", json_path = ".spec.backupRef.name"),
    printcolumn(name = "Target", type_ = "string", json_path = ".spec.targetNamespace"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Restored", type_ = "integer", json_path = ".status.restored"),
    printcolumn(name = "Duration", type_ = "string", json_path = ".status.duration"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("has(self.backupRef) != has(self.source)").message("set exactly one of backupRef or source"))]
#[x_kube(validation = Rule::new("self == oldSelf").message("Restore spec is immutable: create a new Restore instead"))]
#[serde(rename_all = "camelCase")]
pub struct RestoreSpec {
    /// The Backup (same namespace) to restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_ref: Option<LocalObjectRef>,
    /// A backup found in a store by id, when its Backup object is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<RestoreSource>,
    /// Namespace to restore into; this namespace when absent. Another namespace must carry a
    /// BackupPolicy whose acceptRestoresFrom names this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = DNS_LABEL_PATTERN))]
    pub target_namespace: Option<String>,
    /// Kinds to restore (`ConfigMap`, `apps/Deployment`, `apps/v1/Deployment`); everything in the
    /// backup when empty, except the operator's own kinds (a BackupPolicy would start backing up
    /// the target under the source's name and keys), which are restored only when named here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128), inner(length(min = 1, max = 253), regex(pattern = KIND_REF_PATTERN)), extend("x-kubernetes-list-type" = "set"))]
    pub kinds: Vec<String>,
    /// What to do with an object that already exists.
    #[serde(default)]
    pub existing_objects: ExistingObjects,
    /// ServiceAccount of this namespace the operator acts as for this restore (it reads the
    /// backup's keys and writes every restored object, so the API server judges each write as
    /// this account's); the operator's default (`--default-service-account`) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN_PATTERN))]
    pub service_account_name: Option<String>,
}

/// A backup in a store, by id.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreSource {
    /// The BackupPolicy (same namespace) whose storage holds the backup.
    pub policy_ref: LocalObjectRef,
    /// Backup id as the store lists it.
    #[schemars(
        length(min = 1, max = 128),
        regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    )]
    pub backup_id: String,
    /// Storage location to read from; the first good copy when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = DNS_LABEL_PATTERN))]
    pub storage: Option<String>,
}

/// What a restore does with existing objects.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum ExistingObjects {
    /// Leave existing objects as they are.
    #[default]
    Skip,
    /// Server-side apply the backed-up version over existing objects: every field the backup
    /// holds is set as backed up; fields other writers added since (an extra container, a data
    /// key) stay.
    Overwrite,
}

/// Phase of a restore.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RestorePhase {
    Pending,
    Running,
    Completed,
    Failed,
}

/// Observed state of a restore. A restore that has ended never runs again.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(oldSelf.phase) || !(oldSelf.phase in ['Completed', 'Failed']) || (has(self.phase) && self.phase == oldSelf.phase)").message("phase: a restore that has ended stays as it ended").field_path(".phase"))]
#[x_kube(validation = Rule::new("(has(self.attempts) ? self.attempts : 0) >= (has(oldSelf.attempts) ? oldSelf.attempts : 0)").message("attempts only count up: runs started are never forgotten").field_path(".attempts"))]
pub struct RestoreStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<RestorePhase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// How long the restore took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), regex(pattern = DURATION_PATTERN))]
    pub duration: Option<String>,
    /// Storage location the copy was read from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub restored: i64,
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub skipped: i64,
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub failed: i64,
    /// The first errors (capped at 20): each object refused, with the API server's reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub errors: Vec<String>,
    /// Writes undone after a write failed part-way (a restore is all or nothing): objects it
    /// had created, deleted again; objects it had overwritten, put back.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    #[schemars(range(min = 0))]
    pub rolled_back: i64,
    /// Runs started: a run cut short by an operator restart is run again (Event
    /// `RestoreInterrupted`), at most 3 in all.
    #[serde(default, skip_serializing_if = "is_zero")]
    #[schemars(range(min = 0, max = 3))]
    pub attempts: i32,
    /// Ready.
    #[serde(default)]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

fn is_zero_i64(n: &i64) -> bool {
    *n == 0
}

fn default_copies() -> i32 {
    7
}
fn default_keep_failed() -> i32 {
    2
}
fn default_region() -> String {
    "us-east-1".into()
}
fn default_verification_schedule() -> Schedule {
    Schedule("@daily".into())
}
fn default_restore_test_schedule() -> Schedule {
    Schedule("@weekly".into())
}
fn default_restore_timeout() -> Duration {
    Duration("30m".into())
}
