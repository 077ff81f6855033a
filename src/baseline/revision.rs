//! Revisions of a baseline (X.1642 8.5.2, 8.8): the digest that identifies what a spec renders,
//! the rendered-hash annotation stamped on every object it applies, and the one-line summary of
//! what changed between two renderings (from those hashes) for `status.history`.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::api::baseline::SecurityBaselineSpec;

/// Version of the canonical form hashed by [`revision`]; bump it when that form changes.
const CANONICAL_FORM: u32 = 1;

/// Why a revision could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum RevisionError {
    #[error("cannot serialize the baseline spec for its revision")]
    Serialize(#[from] serde_json::Error),
}

/// The revision of a spec: `sha256:` and the lowercase hex SHA-256 of a canonical JSON (sorted
/// keys, no whitespace) of everything that decides what is rendered: `controls`, `templates`,
/// `workloadTemplates` and `tenantLabel` (it appears in the NetworkPolicy).
///
/// Independent of `mode`, `priority`, `namespaceSelector`, `excludeNamespaces`,
/// `ignoreDifferences`, `checkInterval`, `rollout` and `prune`: switching Audit to Enforce, or
/// selecting more namespaces, is not a new revision to approve. Defaults are filled in before
/// hashing (the spec is typed), so `networkIsolation: {}` and `{allowDNS: true}` are one revision.
pub fn revision(spec: &SecurityBaselineSpec) -> Result<String, RevisionError> {
    let content = json!({
        "form": CANONICAL_FORM,
        "tenantLabel": spec.tenant_label,
        "controls": serde_json::to_value(&spec.controls)?,
        "templates": serde_json::to_value(&spec.templates)?,
        "workloadTemplates": serde_json::to_value(&spec.workload_templates)?,
    });
    let mut canonical = String::new();
    write_canonical(&content, &mut canonical);
    let digest = Sha256::digest(canonical.as_bytes());
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for byte in digest.iter() {
        out.push_str(&format!("{byte:02x}"));
    }
    Ok(out)
}

/// Canonical JSON: object keys sorted by their UTF-8 bytes, no whitespace. Independent of whether
/// serde_json preserves insertion order.
fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(item, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// Annotation on every stamped object: SHA-256 of its rendered body, so the next revision can say
/// what it added, changed and removed without keeping the old spec.
pub const HASH_ANNOTATION: &str = "opsec.x1642.dev/rendered-hash";

/// The hash of a rendered body (without the hash annotation itself).
pub fn hash_of(object: &Value) -> Option<String> {
    let mut o = object.clone();
    if let Some(meta) = o.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        let emptied = meta
            .get_mut("annotations")
            .and_then(|a| a.as_object_mut())
            .map(|a| {
                a.remove(HASH_ANNOTATION);
                a.is_empty()
            })
            .unwrap_or(false);
        if emptied {
            meta.remove("annotations");
        }
    }
    let bytes = serde_json::to_vec(&o).ok()?;
    let digest = Sha256::digest(&bytes);
    Some(digest.iter().take(8).map(|b| format!("{b:02x}")).collect())
}

/// Adds the hash annotation to a rendered body.
pub fn stamp_hash(object: &mut Value) {
    let Some(hash) = hash_of(object) else { return };
    if let Some(meta) = object.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        let annotations = meta.entry("annotations").or_insert_with(|| json!({}));
        if let Some(a) = annotations.as_object_mut() {
            a.insert(HASH_ANNOTATION.into(), hash.into());
        }
    }
}

/// What changed between two renderings, for `status.history[].summary`, from the (`Kind/name`,
/// [`HASH_ANNOTATION`]) pairs of every object over all namespaces (the old side as the stamped
/// objects carry them, so the old spec is not needed):
/// `added NetworkPolicy/opsec-isolation (12 ns); changed ResourceQuota/opsec-quota (3 ns); removed ...`,
/// or `no change to rendered objects`.
pub fn summarize_change(before: &[(String, String)], after: &[(String, String)]) -> String {
    fn index(items: &[(String, String)]) -> BTreeMap<&str, Vec<&str>> {
        let mut m: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (k, h) in items {
            m.entry(k.as_str()).or_default().push(h.as_str());
        }
        m
    }
    let (b, a) = (index(before), index(after));
    let mut parts = Vec::new();
    for (k, hs) in &a {
        match b.get(k) {
            None => parts.push(format!("added {k} ({} ns)", hs.len())),
            Some(old) => {
                let changed = hs.iter().filter(|h| !old.contains(h)).count();
                if changed > 0 {
                    parts.push(format!("changed {k} ({changed} ns)"));
                }
            }
        }
    }
    for (k, hs) in &b {
        if !a.contains_key(k) {
            parts.push(format!("removed {k} ({} ns)", hs.len()));
        }
    }
    if parts.is_empty() {
        "no change to rendered objects".into()
    } else {
        parts.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> SecurityBaselineSpec {
        serde_yaml::from_str(&format!(
            "namespaceSelector: {{matchLabels: {{class: standard}}}}\n{yaml}"
        ))
        .expect("test fixture")
    }

    fn rev(yaml: &str) -> String {
        revision(&spec(yaml)).expect("revision")
    }

    #[test]
    fn revision_shape_and_stability() {
        let r = rev("controls: {networkIsolation: {}}");
        assert!(r.starts_with("sha256:"));
        assert_eq!(r.len(), 7 + 64);
        assert!(
            r[7..]
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_eq!(r, rev("controls: {networkIsolation: {}}"));
    }

    #[test]
    fn revision_ignores_what_does_not_render() {
        let base = rev("controls: {networkIsolation: {}}");
        for same in [
            "controls: {networkIsolation: {allowDNS: true, allowSameTenant: true}}",
            "mode: Audit\ncontrols: {networkIsolation: {}}",
            "priority: 7\ncontrols: {networkIsolation: {}}",
            "excludeNamespaces: [a]\ncontrols: {networkIsolation: {}}",
            "checkInterval: 1h\nprune: false\ncontrols: {networkIsolation: {}}",
            "rollout: {requireApproval: true}\ncontrols: {networkIsolation: {}}",
            "ignoreDifferences: [{kind: ConfigMap, jsonPointers: [/data]}]\ncontrols: {networkIsolation: {}}",
        ] {
            assert_eq!(rev(same), base, "{same}");
        }
    }

    #[test]
    fn revision_follows_what_renders() {
        let base = rev("controls: {networkIsolation: {}}");
        for other in [
            "controls: {networkIsolation: {allowDNS: false}}",
            "tenantLabel: example.com/customer\ncontrols: {networkIsolation: {}}",
            "controls: {networkIsolation: {}, serviceAccounts: {}}",
            "controls: {networkIsolation: {}}\ntemplates: [{apiVersion: v1, kind: ConfigMap, metadata: {name: a}}]",
            "controls: {networkIsolation: {}}\nworkloadTemplates: [{selector: {matchLabels: {a: b}}, templates: [{apiVersion: v1, kind: ConfigMap, metadata: {name: a}}]}]",
        ] {
            assert_ne!(rev(other), base, "{other}");
        }
        // Key order inside a template does not matter; values do.
        assert_eq!(
            rev(
                "templates: [{apiVersion: v1, kind: ConfigMap, metadata: {name: a}, data: {x: '1', y: '2'}}]"
            ),
            rev(
                "templates: [{kind: ConfigMap, data: {y: '2', x: '1'}, metadata: {name: a}, apiVersion: v1}]"
            ),
        );
    }

    #[test]
    fn canonical_json() {
        let mut out = String::new();
        write_canonical(
            &json!({"b": [1, {"z": null, "a": "x\"y"}], "a": true}),
            &mut out,
        );
        assert_eq!(out, r#"{"a":true,"b":[1,{"a":"x\"y","z":null}]}"#);
    }

    #[test]
    fn summarizes_added_changed_and_removed_objects() {
        let before = vec![
            ("ResourceQuota/q".to_string(), "h1".to_string()),
            ("ConfigMap/x".to_string(), "h2".to_string()),
        ];
        let after = vec![
            ("ResourceQuota/q".to_string(), "h9".to_string()),
            ("NetworkPolicy/n".to_string(), "h3".to_string()),
        ];
        assert_eq!(
            summarize_change(&before, &after),
            "added NetworkPolicy/n (1 ns); changed ResourceQuota/q (1 ns); removed ConfigMap/x (1 ns)"
        );
        assert_eq!(
            summarize_change(&after, &after),
            "no change to rendered objects"
        );
    }

    #[test]
    fn the_hash_ignores_its_own_annotation() {
        let mut o = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"k": "v"}});
        let h = hash_of(&o).unwrap();
        stamp_hash(&mut o);
        assert_eq!(
            o.pointer("/metadata/annotations/opsec.x1642.dev~1rendered-hash")
                .and_then(|v| v.as_str()),
            Some(h.as_str())
        );
        assert_eq!(hash_of(&o).unwrap(), h);
    }
}
