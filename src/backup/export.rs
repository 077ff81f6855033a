//! Export of objects for a backup: strips what the API server sets so that a restore applies
//! cleanly, skips what a restore must not recreate, and orders kinds for restore.
//!
//! Removed from every object: `metadata.{uid, resourceVersion, generation, creationTimestamp,
//! managedFields, selfLink, deletionTimestamp, deletionGracePeriodSeconds, ownerReferences,
//! namespace}`, the annotations `kubectl.kubernetes.io/last-applied-configuration` and
//! `deployment.kubernetes.io/revision`, and `status`.
//!
//! Decisions:
//! - `ownerReferences` are removed: they name owners by UID, and restored owners get new UIDs,
//!   so the garbage collector would delete a restored object whose reference dangles.
//! - Objects with a *controller* owner reference (Pods of a ReplicaSet, ReplicaSets of a
//!   Deployment, Jobs of a CronJob, ControllerRevisions, ...) are skipped: their controller
//!   recreates them from the restored owner; restoring them as well would duplicate them.
//! - `metadata.namespace` is removed: the manifest records the source namespace and a restore
//!   may target another one.
//!
//! Kind-specific: a Service loses `spec.clusterIP`/`spec.clusterIPs` unless headless (`None`),
//! and the node ports the cluster allocated (`spec.ports[].nodePort`, `spec.healthCheckNodePort`)
//! unless the policy keeps them ([`ExportOptions::keep_node_ports`]: a restore then asks for the
//! same ports, and where they are taken the API server's refusal names the port); a
//! ServiceAccount loses `secrets` (references to token Secrets, which are not backed up);
//! a Job loses the selector the API server generated and the UID labels it matches
//! (`controller-uid`, `batch.kubernetes.io/controller-uid`, on the Job and its pod template),
//! unless `spec.manualSelector` is set; a bare Pod loses `spec.nodeName` (the node it ran on);
//! a PersistentVolumeClaim loses `spec.volumeName` and the binding annotations (the old volume's
//! claimRef names the old UID, so the claim would stay Pending); skipped are Secrets of type
//! `kubernetes.io/service-account-token`, the `kube-root-ca.crt` ConfigMap, Events (core and
//! `events.k8s.io`), Endpoints and EndpointSlices: all recreated by the cluster.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// What can go wrong exporting an object.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ExportError {
    #[error("object is not a JSON object")]
    NotAnObject,
    #[error("object has no {0}")]
    MissingField(&'static str),
    #[error("field {0} is not valid JSON: {1}")]
    InvalidField(String, String),
}

/// Why an object is not backed up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// A `kubernetes.io/service-account-token` Secret: the token controller recreates it.
    ServiceAccountToken,
    /// The `kube-root-ca.crt` ConfigMap: published into every namespace by the cluster.
    RootCaConfigMap,
    /// Recreated by its controller (kind of the owner).
    OwnedByController(String),
    /// Events, Endpoints and EndpointSlices: cluster-generated.
    ClusterGenerated(String),
}

impl SkipReason {
    /// Short stable label, for logs and counters.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::ServiceAccountToken => "ServiceAccountToken",
            Self::RootCaConfigMap => "RootCAConfigMap",
            Self::OwnedByController(_) => "OwnedByController",
            Self::ClusterGenerated(_) => "ClusterGenerated",
        }
    }
}

/// The result of exporting one object.
#[derive(Clone, Debug, PartialEq)]
pub enum Exported {
    /// The cleaned object, to be archived.
    Keep(Value),
    /// Not backed up.
    Skip(SkipReason),
}

pub(crate) const METADATA_STRIPPED: &[&str] = &[
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "ownerReferences",
    "namespace",
    "generateName",
];

/// What an export keeps that it strips by default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExportOptions {
    /// Keep Services' node ports, so that a restore asks for the same ones (a NodePort or
    /// LoadBalancer Service that clients reach by port).
    pub keep_node_ports: bool,
}

const ANNOTATIONS_STRIPPED: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    "deployment.kubernetes.io/revision",
];

const PVC_ANNOTATIONS_STRIPPED: &[&str] = &[
    "pv.kubernetes.io/bind-completed",
    "pv.kubernetes.io/bound-by-controller",
    "volume.beta.kubernetes.io/storage-provisioner",
    "volume.kubernetes.io/storage-provisioner",
    "volume.kubernetes.io/selected-node",
];

fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("")
}

/// Cleans one object for a backup, or says why it is skipped (with the default options).
pub fn export_object(obj: Value) -> Result<Exported, ExportError> {
    export_object_with(obj, &ExportOptions::default())
}

/// Cleans one object for a backup with `options`, or says why it is skipped.
pub fn export_object_with(
    mut obj: Value,
    options: &ExportOptions,
) -> Result<Exported, ExportError> {
    let root = obj.as_object_mut().ok_or(ExportError::NotAnObject)?;
    let api_version = root
        .get("apiVersion")
        .and_then(Value::as_str)
        .ok_or(ExportError::MissingField("apiVersion"))?
        .to_string();
    let kind = root
        .get("kind")
        .and_then(Value::as_str)
        .ok_or(ExportError::MissingField("kind"))?
        .to_string();
    let group = group_of(&api_version);
    let metadata = root
        .get("metadata")
        .and_then(Value::as_object)
        .ok_or(ExportError::MissingField("metadata"))?;
    let name = metadata
        .get("name")
        .and_then(Value::as_str)
        .ok_or(ExportError::MissingField("metadata.name"))?
        .to_string();

    match (group, kind.as_str()) {
        ("", "Event") | ("events.k8s.io", "Event") | ("", "Endpoints") => {
            return Ok(Exported::Skip(SkipReason::ClusterGenerated(kind)));
        }
        ("discovery.k8s.io", "EndpointSlice") => {
            return Ok(Exported::Skip(SkipReason::ClusterGenerated(kind)));
        }
        ("", "Secret")
            if root.get("type").and_then(Value::as_str)
                == Some("kubernetes.io/service-account-token") =>
        {
            return Ok(Exported::Skip(SkipReason::ServiceAccountToken));
        }
        ("", "ConfigMap") if name == "kube-root-ca.crt" => {
            return Ok(Exported::Skip(SkipReason::RootCaConfigMap));
        }
        _ => {}
    }
    if let Some(owner) = metadata
        .get("ownerReferences")
        .and_then(Value::as_array)
        .and_then(|refs| {
            refs.iter()
                .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
        })
    {
        let owner_kind = owner
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_string();
        return Ok(Exported::Skip(SkipReason::OwnedByController(owner_kind)));
    }

    root.remove("status");
    if group.is_empty() && kind == "ServiceAccount" {
        root.remove("secrets");
    }
    if let Some(meta) = root.get_mut("metadata").and_then(Value::as_object_mut) {
        for field in METADATA_STRIPPED {
            meta.remove(*field);
        }
        strip_annotations(meta, ANNOTATIONS_STRIPPED);
        if group.is_empty() && kind == "PersistentVolumeClaim" {
            strip_annotations(meta, PVC_ANNOTATIONS_STRIPPED);
        }
    }
    if group.is_empty() {
        let spec = root.get_mut("spec").and_then(Value::as_object_mut);
        match (kind.as_str(), spec) {
            ("Service", Some(spec)) => {
                let headless = spec.get("clusterIP").and_then(Value::as_str) == Some("None");
                if !headless {
                    spec.remove("clusterIP");
                    spec.remove("clusterIPs");
                }
                if !options.keep_node_ports {
                    without_node_ports(spec);
                }
            }
            ("PersistentVolumeClaim", Some(spec)) => {
                spec.remove("volumeName");
            }
            ("Pod", Some(spec)) => {
                spec.remove("nodeName");
            }
            _ => {}
        }
    }
    if group == "batch" && kind == "Job" {
        without_job_selector(root);
    }
    Ok(Exported::Keep(obj))
}

/// Labels the Job controller sets to a Job's UID.
const JOB_UID_LABELS: &[&str] = &["controller-uid", "batch.kubernetes.io/controller-uid"];

/// Removes a Job's generated selector and the UID labels it matches (on the Job and its pod
/// template), unless the Job chose its own selector (`spec.manualSelector`): the API server
/// refuses a new Job whose selector names another Job's UID, and generates a new one.
fn without_job_selector(root: &mut Map<String, Value>) {
    let Some(spec) = root.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    if spec.get("manualSelector").and_then(Value::as_bool) == Some(true) {
        return;
    }
    spec.remove("selector");
    if let Some(labels) = spec
        .get_mut("template")
        .and_then(|t| t.get_mut("metadata"))
        .and_then(Value::as_object_mut)
    {
        strip_map(labels, "labels", JOB_UID_LABELS);
    }
    if let Some(meta) = root.get_mut("metadata").and_then(Value::as_object_mut) {
        strip_map(meta, "labels", JOB_UID_LABELS);
    }
}

/// Removes the node ports of a Service's `spec` (`ports[].nodePort`, `healthCheckNodePort`), so
/// that the cluster allocates new ones.
pub fn without_node_ports(spec: &mut Map<String, Value>) {
    spec.remove("healthCheckNodePort");
    for port in spec
        .get_mut("ports")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object_mut)
    {
        port.remove("nodePort");
    }
}

fn strip_annotations(meta: &mut Map<String, Value>, keys: &[&str]) {
    strip_map(meta, "annotations", keys);
}

/// Removes `keys` from the map `field` of `meta` (labels, annotations), and the map once empty.
fn strip_map(meta: &mut Map<String, Value>, field: &str, keys: &[&str]) {
    let now_empty = match meta.get_mut(field).and_then(Value::as_object_mut) {
        Some(map) => {
            for k in keys {
                map.remove(*k);
            }
            map.is_empty()
        }
        None => false,
    };
    if now_empty {
        meta.remove(field);
    }
}

/// One page of a list as the API server sent it: each item's top-level fields still as their
/// JSON text, so that the bulk of an object (a ConfigMap's `data`, a Deployment's `spec`) is
/// copied into the backup byte for byte instead of being parsed into a tree and written again.
#[derive(Debug, Default, Deserialize)]
pub struct RawListPage {
    #[serde(default)]
    metadata: RawListMeta,
    #[serde(default)]
    items: Option<Vec<RawObject>>,
}

#[derive(Debug, Default, Deserialize)]
struct RawListMeta {
    #[serde(rename = "continue", default)]
    continue_: Option<String>,
}

/// An object's top-level fields, each the JSON text of its value, in key order (the order a
/// `serde_json::Value` keeps them in).
pub type RawObject = BTreeMap<String, JsonText>;

/// The JSON text of one value: as the API server sent it (checked as JSON when its page was
/// parsed), or as this crate wrote it (see [`super::protobuf`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsonText(String);

impl JsonText {
    /// The text.
    pub fn get(&self) -> &str {
        &self.0
    }

    /// Text this crate wrote as one JSON value (not checked again; kept with its spare
    /// capacity rather than copied into an exact-size allocation).
    pub(crate) fn written(text: String) -> Self {
        Self(text)
    }
}

impl<'de> Deserialize<'de> for JsonText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Box::<RawValue>::deserialize(d).map(|raw| Self(Box::<str>::from(raw).into_string()))
    }
}

impl RawListPage {
    /// A page decoded from another encoding (see [`super::protobuf`]).
    pub(crate) fn new(continue_token: Option<String>, items: Vec<RawObject>) -> Self {
        Self {
            metadata: RawListMeta {
                continue_: continue_token,
            },
            items: Some(items),
        }
    }

    /// Parses a list response (`{"kind":"ConfigMapList","metadata":{..},"items":[..]}`), as text
    /// or as the bytes of a response body.
    pub fn parse(json: impl AsRef<[u8]>) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(json.as_ref())
    }

    /// The token of the next page, if there is one.
    pub fn continue_token(&self) -> Option<&str> {
        self.metadata.continue_.as_deref().filter(|t| !t.is_empty())
    }

    /// The page's items (list items carry no `apiVersion` and `kind`).
    pub fn into_items(self) -> Vec<RawObject> {
        self.items.unwrap_or_default()
    }
}

/// Whether [`export_object`] reads or changes a top-level field of an object of this kind: those
/// fields are parsed for [`export_raw`], every other one is copied as it is.
fn read_by_export(group: &str, kind: &str, field: &str) -> bool {
    match field {
        "metadata" | "status" | "type" => true,
        "spec" => {
            (group.is_empty() && matches!(kind, "Service" | "PersistentVolumeClaim" | "Pod"))
                || (group == "batch" && kind == "Job")
        }
        "secrets" => group.is_empty() && kind == "ServiceAccount",
        _ => false,
    }
}

/// [`export_object`] for an object given as raw fields (a list item, with the list's
/// `apiVersion` and `kind`): the fields the export rules read are parsed and cleaned by
/// [`export_object`] itself, the others are copied. On `Keep`, the cleaned object's JSON is
/// appended to `out` (the same bytes as [`write_json`] of the exported `Value` when the fields
/// are serde_json's own output) and the returned `Value` holds the parsed fields only.
pub fn export_raw(
    api_version: &str,
    kind: &str,
    fields: &RawObject,
    out: &mut Vec<u8>,
) -> Result<Exported, ExportError> {
    export_raw_with(api_version, kind, fields, out, &ExportOptions::default())
}

/// [`export_raw`] with `options`.
pub fn export_raw_with(
    api_version: &str,
    kind: &str,
    fields: &RawObject,
    out: &mut Vec<u8>,
    options: &ExportOptions,
) -> Result<Exported, ExportError> {
    let group = group_of(api_version);
    let mut head = Map::new();
    head.insert("apiVersion".into(), api_version.into());
    head.insert("kind".into(), kind.into());
    for (name, raw) in fields {
        if read_by_export(group, kind, name) {
            let value = serde_json::from_str(raw.get())
                .map_err(|e| ExportError::InvalidField(name.clone(), e.to_string()))?;
            head.insert(name.clone(), value);
        }
    }
    let head = match export_object_with(Value::Object(head), options)? {
        Exported::Keep(head) => head,
        skip => return Ok(skip),
    };
    let Some(parsed) = head.as_object() else {
        return Err(ExportError::NotAnObject);
    };
    let copied = fields.iter().filter(|(name, _)| {
        !read_by_export(group, kind, name)
            && name.as_str() != "apiVersion"
            && name.as_str() != "kind"
    });
    let mut copied = copied.peekable();
    let mut first = true;
    let mut field = |out: &mut Vec<u8>, name: &str| {
        out.push(if first { b'{' } else { b',' });
        first = false;
        write_json_str(name, out);
        out.push(b':');
    };
    // Both sides are in key order: merge them.
    for (name, value) in parsed {
        while let Some((raw_name, raw)) = copied.next_if(|(n, _)| n.as_str() < name.as_str()) {
            field(out, raw_name);
            out.extend_from_slice(raw.get().as_bytes());
        }
        field(out, name);
        write_json(value, out);
    }
    for (raw_name, raw) in copied {
        field(out, raw_name);
        out.extend_from_slice(raw.get().as_bytes());
    }
    if first {
        out.push(b'{');
    }
    out.push(b'}');
    Ok(Exported::Keep(head))
}

/// Appends `value` as compact JSON to `out`: the same bytes as `serde_json::to_vec`, faster on
/// long strings (ConfigMap and Secret data), which are copied in runs between the bytes that need
/// escaping (found 8 at a time) rather than checked one by one.
pub fn write_json(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => out.extend_from_slice(n.to_string().as_bytes()),
        Value::String(s) => write_json_str(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_json(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            out.push(b'{');
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_json_str(k, out);
                out.push(b':');
                write_json(v, out);
            }
            out.push(b'}');
        }
    }
}

/// The bytes of `w` (8 bytes of a string, little-endian) that need escaping: a control character
/// (< 0x20), `"` or `\\`, each flagged by its high bit. Only the lowest flag is exact (a borrow
/// may flag a byte above it): callers take the first flagged byte and look again after it.
fn escape_mask(w: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let below_space = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    below_space | has_zero(w ^ (ONES * b'"' as u64)) | has_zero(w ^ (ONES * b'\\' as u64))
}

/// A JSON string literal, escaped exactly as serde_json does (short escapes for `\b \t \n \f \r`,
/// `\u00xx` for the other control characters, nothing above them but `"` and `\`). Runs between
/// the bytes that need escaping are found 8 bytes at a time and copied whole.
pub(crate) fn write_json_str(s: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        if let Some(chunk) = bytes.get(i..i + 8) {
            let mask = escape_mask(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
            if mask == 0 {
                i += 8;
                continue;
            }
            // The first flagged byte needs escaping.
            i += (mask.trailing_zeros() / 8) as usize;
        } else if !matches!(bytes[i], b'"' | b'\\' | 0..=0x1f) {
            i += 1;
            continue;
        }
        let b = bytes[i];
        out.extend_from_slice(&bytes[start..i]);
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            _ => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(b >> 4) as usize],
                HEX[(b & 0xf) as usize],
            ]),
        }
        i += 1;
        start = i;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Kinds restored first, in this order: what workloads refer to, then workloads.
const RESTORE_ORDER: &[&str] = &[
    "ServiceAccount",
    "Secret",
    "ConfigMap",
    "PersistentVolumeClaim",
    "Role",
    "RoleBinding",
    "Service",
    "NetworkPolicy",
    "ResourceQuota",
    "LimitRange",
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "Job",
    "CronJob",
];

/// Restore rank of a kind: lower first; kinds not listed come after every listed one.
pub fn restore_order(kind: &str) -> usize {
    RESTORE_ORDER
        .iter()
        .position(|k| *k == kind)
        .unwrap_or(RESTORE_ORDER.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::ObjectKey;
    use serde_json::json;

    fn keep(v: Value) -> Value {
        match export_object(v).unwrap() {
            Exported::Keep(v) => v,
            Exported::Skip(r) => panic!("skipped: {r:?}"),
        }
    }

    fn skip(v: Value) -> SkipReason {
        match export_object(v).unwrap() {
            Exported::Skip(r) => r,
            Exported::Keep(v) => panic!("kept: {v}"),
        }
    }

    #[test]
    fn strips_server_set_fields() {
        let out = keep(json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "web",
                "namespace": "team-a",
                "uid": "u",
                "resourceVersion": "42",
                "generation": 3,
                "creationTimestamp": "2026-01-01T00:00:00Z",
                "managedFields": [{}],
                "selfLink": "/x",
                "deletionTimestamp": "2026-01-01T00:00:00Z",
                "deletionGracePeriodSeconds": 30,
                "ownerReferences": [{"kind": "Thing", "name": "t", "uid": "o"}],
                "labels": {"app": "web"},
                "annotations": {
                    "kubectl.kubernetes.io/last-applied-configuration": "{}",
                    "deployment.kubernetes.io/revision": "3",
                    "team": "a"
                }
            },
            "spec": {"replicas": 2},
            "status": {"readyReplicas": 2}
        }));
        assert_eq!(
            out,
            json!({
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "web", "labels": {"app": "web"}, "annotations": {"team": "a"}},
                "spec": {"replicas": 2}
            })
        );
    }

    #[test]
    fn empty_annotations_are_removed() {
        let out = keep(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}}
        }));
        assert_eq!(out["metadata"], json!({"name": "c"}));
    }

    #[test]
    fn service_cluster_ip_is_dropped_unless_headless() {
        let out = keep(json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
            "spec": {"clusterIP": "10.0.0.1", "clusterIPs": ["10.0.0.1"], "ports": [{"port": 80}]}
        }));
        assert_eq!(out["spec"], json!({"ports": [{"port": 80}]}));
        let out = keep(json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
            "spec": {"clusterIP": "None", "clusterIPs": ["None"]}
        }));
        assert_eq!(out["spec"]["clusterIP"], "None");
        assert_eq!(out["spec"]["clusterIPs"], json!(["None"]));
    }

    #[test]
    fn node_ports_are_dropped_unless_the_policy_keeps_them() {
        let service = json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "generateName": "web-"},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.0.0.7", "healthCheckNodePort": 31999,
                     "externalTrafficPolicy": "Local",
                     "ports": [{"port": 80, "nodePort": 30080}, {"port": 443, "nodePort": 30443}]}
        });
        let out = keep(service.clone());
        assert_eq!(
            out["spec"],
            json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local", "ports": [{"port": 80}, {"port": 443}]})
        );
        assert_eq!(out["metadata"], json!({"name": "web"}));
        let kept = match export_object_with(
            service,
            &ExportOptions {
                keep_node_ports: true,
            },
        )
        .unwrap()
        {
            Exported::Keep(v) => v,
            other => panic!("{other:?}"),
        };
        assert_eq!(kept["spec"]["ports"][1]["nodePort"], 30443);
        assert_eq!(kept["spec"]["healthCheckNodePort"], 31999);
        assert!(kept["spec"].get("clusterIP").is_none());
    }

    #[test]
    fn service_account_token_references_are_dropped() {
        let out = keep(json!({
            "apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "app"},
            "secrets": [{"name": "app-token-x1y2z"}], "imagePullSecrets": [{"name": "registry"}]
        }));
        assert!(out.get("secrets").is_none());
        assert_eq!(out["imagePullSecrets"], json!([{"name": "registry"}]));
    }

    #[test]
    fn a_jobs_generated_selector_and_uid_labels_are_dropped_unless_chosen_by_hand() {
        let uid = "e26134e1-b355-47ce-803e-365c6534831f";
        let labels = json!({"batch.kubernetes.io/controller-uid": uid, "controller-uid": uid,
            "batch.kubernetes.io/job-name": "migrate", "job-name": "migrate", "team": "db"});
        let job = json!({
            "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "migrate", "labels": labels},
            "spec": {"selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}},
                     "template": {"metadata": {"labels": labels}, "spec": {"restartPolicy": "Never"}}}
        });
        let out = keep(job.clone());
        let left =
            json!({"batch.kubernetes.io/job-name": "migrate", "job-name": "migrate", "team": "db"});
        assert!(out["spec"].get("selector").is_none());
        assert_eq!(out["metadata"]["labels"], left);
        assert_eq!(out["spec"]["template"]["metadata"]["labels"], left);
        let mut manual = job;
        manual["spec"]["manualSelector"] = json!(true);
        let out = keep(manual.clone());
        assert_eq!(out["spec"]["selector"], manual["spec"]["selector"]);
        assert_eq!(out["spec"]["template"], manual["spec"]["template"]);
    }

    #[test]
    fn a_bare_pod_is_not_bound_to_its_old_node() {
        let out = keep(json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "debug"},
            "spec": {"nodeName": "node-7", "containers": [{"name": "c", "image": "busybox"}]}
        }));
        assert!(out["spec"].get("nodeName").is_none());
        assert_eq!(out["spec"]["containers"][0]["name"], "c");
    }

    #[test]
    fn pvc_binding_is_dropped() {
        let out = keep(json!({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "data", "annotations": {"pv.kubernetes.io/bind-completed": "yes"}},
            "spec": {"volumeName": "pv-1", "resources": {"requests": {"storage": "1Gi"}}}
        }));
        assert!(out["spec"].get("volumeName").is_none());
        assert!(out["metadata"].get("annotations").is_none());
    }

    #[test]
    fn skips_what_the_cluster_recreates() {
        assert_eq!(
            skip(
                json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "t"},
                "type": "kubernetes.io/service-account-token"})
            ),
            SkipReason::ServiceAccountToken
        );
        assert!(matches!(
            export_object(
                json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "t"}, "type": "Opaque"})
            ),
            Ok(Exported::Keep(_))
        ));
        assert_eq!(
            skip(
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kube-root-ca.crt"}})
            ),
            SkipReason::RootCaConfigMap
        );
        assert_eq!(
            skip(
                json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p",
                "ownerReferences": [{"kind": "ReplicaSet", "name": "rs", "uid": "x", "controller": true}]}})
            ),
            SkipReason::OwnedByController("ReplicaSet".into())
        );
        for (av, kind) in [
            ("v1", "Event"),
            ("events.k8s.io/v1", "Event"),
            ("v1", "Endpoints"),
            ("discovery.k8s.io/v1", "EndpointSlice"),
        ] {
            assert!(matches!(
                skip(json!({"apiVersion": av, "kind": kind, "metadata": {"name": "e"}})),
                SkipReason::ClusterGenerated(_)
            ));
        }
        // A bare Pod is kept.
        keep(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}));
    }

    #[test]
    fn refuses_malformed_objects() {
        assert_eq!(export_object(json!([])), Err(ExportError::NotAnObject));
        assert_eq!(
            export_object(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}})),
            Err(ExportError::MissingField("metadata.name"))
        );
    }

    #[test]
    fn write_json_matches_serde_json() {
        let mut every_byte = String::new();
        for c in (0u8..=0x7f).map(char::from) {
            every_byte.push(c);
        }
        let cases = [
            json!(null),
            json!({}),
            json!([]),
            json!(""),
            json!({"a": [1, -2, 3.5, 1e300, true, false, null], "b": {"c": "d"}}),
            json!({"data": every_byte.repeat(3), "k\"ey\\": "v\u{7f}\u{e9}\u{1F600}"}),
            json!([
                "ab\"cdefghij\\klmnop\nqrstuvw\u{1}xyz",
                "12345678",
                "1234567",
                "123456789"
            ]),
            json!({"x": u64::MAX, "y": i64::MIN, "z": 0.1}),
        ];
        for v in cases {
            let mut out = Vec::new();
            write_json(&v, &mut out);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(&v).unwrap()
            );
        }
        // Every position of every special byte within a word, and runs around it.
        for special in ['"', '\\', '\n', '\u{0}', '\u{1f}', ' ', '~', 'é'] {
            for len in 0..20 {
                for at in 0..len {
                    let s: String = (0..len)
                        .map(|i| if i == at { special } else { 'a' })
                        .collect();
                    let v = Value::String(s);
                    let mut out = Vec::new();
                    write_json(&v, &mut out);
                    assert_eq!(out, serde_json::to_vec(&v).unwrap(), "{v}");
                }
            }
        }
    }

    /// `obj` as a list item: its top-level fields as raw text, without apiVersion and kind.
    fn raw_item(obj: &Value) -> (String, String, RawObject) {
        let mut fields = obj.as_object().unwrap().clone();
        let av = fields.remove("apiVersion").unwrap();
        let kind = fields.remove("kind").unwrap();
        let text = serde_json::to_string(&fields).unwrap();
        let raw: RawObject = serde_json::from_str(&text).unwrap();
        (
            av.as_str().unwrap().into(),
            kind.as_str().unwrap().into(),
            raw,
        )
    }

    #[test]
    fn raw_export_writes_what_the_value_export_writes() {
        let objects = [
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "c", "namespace": "a", "uid": "u", "resourceVersion": "7",
                    "managedFields": [{"manager": "kubectl"}], "labels": {"x": "y"}},
                "data": {"a.conf": "line\none \"quoted\" \u{1}", "b": "\u{e9}"},
                "binaryData": {"bin": "AAEC"}, "immutable": true}),
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
                "data": {"k": "dmFsdWU="}, "type": "Opaque"}),
            json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "svc", "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
                "spec": {"clusterIP": "10.0.0.1", "clusterIPs": ["10.0.0.1"], "ports": [{"port": 80}]},
                "status": {"loadBalancer": {}}}),
            json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": "data", "annotations": {"pv.kubernetes.io/bind-completed": "yes", "keep": "1"}},
                "spec": {"volumeName": "pv-1", "resources": {"requests": {"storage": "1Gi"}}},
                "status": {"phase": "Bound"}}),
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web", "generation": 4},
                "spec": {"replicas": 2, "template": {"spec": {"clusterIP": "kept: not a Service"}}},
                "status": {"readyReplicas": 2}}),
            json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"},
                "aaa": 1, "spec": {"size": 3}, "zzz": [null]}),
        ];
        for obj in objects {
            let (av, kind, raw) = raw_item(&obj);
            let mut out = Vec::new();
            let head = match export_raw(&av, &kind, &raw, &mut out).unwrap() {
                Exported::Keep(head) => head,
                Exported::Skip(r) => panic!("skipped: {r:?}"),
            };
            let expected = keep(obj.clone());
            let mut want = Vec::new();
            write_json(&expected, &mut want);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                String::from_utf8(want).unwrap()
            );
            assert_eq!(head["metadata"], expected["metadata"]);
            assert_eq!(
                ObjectKey::from_object(&head).unwrap().name,
                expected["metadata"]["name"]
            );
        }
    }

    #[test]
    fn raw_export_skips_what_the_value_export_skips() {
        for obj in [
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "t"},
                "type": "kubernetes.io/service-account-token", "data": {"token": "eA=="}}),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kube-root-ca.crt"},
                "data": {"ca.crt": "x"}}),
            json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "rs",
                "ownerReferences": [{"kind": "Deployment", "name": "d", "uid": "x", "controller": true}]},
                "spec": {}}),
            json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e"}, "reason": "x"}),
        ] {
            let (av, kind, raw) = raw_item(&obj);
            let mut out = Vec::new();
            let got = export_raw(&av, &kind, &raw, &mut out).unwrap();
            assert_eq!(got, Exported::Skip(skip(obj)));
            assert!(out.is_empty(), "nothing written for a skipped object");
        }
        let (av, kind, raw) =
            raw_item(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"labels": {}}}));
        assert_eq!(
            export_raw(&av, &kind, &raw, &mut Vec::new()),
            Err(ExportError::MissingField("metadata.name"))
        );
    }

    #[test]
    fn list_pages_parse_with_their_continue_token() {
        let page = RawListPage::parse(
            r#"{"kind":"ConfigMapList","apiVersion":"v1","metadata":{"resourceVersion":"9","continue":"abc"},
               "items":[{"metadata":{"name":"a"},"data":{"k":"v\u003c"}},{"metadata":{"name":"b"}}]}"#,
        )
        .unwrap();
        assert_eq!(page.continue_token(), Some("abc"));
        let items = page.into_items();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0]["data"].get(), r#"{"k":"v\u003c"}"#);
        let last = RawListPage::parse(r#"{"metadata":{"continue":""},"items":null}"#).unwrap();
        assert_eq!(last.continue_token(), None);
        assert!(last.into_items().is_empty());
        assert!(RawListPage::parse(r#"{"items":[1]}"#).is_err());
    }

    #[test]
    fn restore_order_puts_infrastructure_before_workloads() {
        assert!(restore_order("ServiceAccount") < restore_order("Secret"));
        assert!(restore_order("RoleBinding") < restore_order("Deployment"));
        assert!(restore_order("LimitRange") < restore_order("Deployment"));
        assert!(restore_order("CronJob") < restore_order("Ingress"));
        assert_eq!(restore_order("Ingress"), restore_order("Widget"));
    }
}
