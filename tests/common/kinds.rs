//! The seven kinds of the operator as the admission tests see them: their API resources, the
//! smallest valid spec of each, and objects built from a spec.

use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject};
use opsec_operator::api::{
    Backup, BackupPolicy, EmergencyPlan, Incident, PatchWindow, Restore, SecurityBaseline,
};
use serde_json::{Value, json};

/// The seven kinds, by the name used in the tables.
pub const KINDS: [&str; 7] = [
    "SecurityBaseline",
    "BackupPolicy",
    "Backup",
    "Restore",
    "PatchWindow",
    "EmergencyPlan",
    "Incident",
];

pub fn api_resource(kind: &str) -> ApiResource {
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

/// `<plural>.<group>` of a kind's CRD.
pub fn crd_name(kind: &str) -> String {
    let ar = api_resource(kind);
    format!("{}.{}", ar.plural, ar.group)
}

/// An Api for `kind`: cluster-wide for SecurityBaseline, in `ns` for the others.
pub fn api_for(client: &Client, kind: &str, ns: &str) -> Api<DynamicObject> {
    let ar = api_resource(kind);
    if kind == "SecurityBaseline" {
        Api::all_with(client.clone(), &ar)
    } else {
        Api::namespaced_with(client.clone(), ns, &ar)
    }
}

/// The smallest valid spec of each kind; every case of the admission tables is one change to it.
pub fn valid_spec(kind: &str) -> Value {
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
pub fn merge(target: &mut Value, patch: &Value) {
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

/// An object of `kind` named `name` with `spec`.
pub fn object(kind: &str, name: &str, spec: Value) -> DynamicObject {
    let ar = api_resource(kind);
    serde_json::from_value(json!({
        "apiVersion": ar.api_version,
        "kind": ar.kind,
        "metadata": {"name": name},
        "spec": spec,
    }))
    .expect("a DynamicObject")
}
