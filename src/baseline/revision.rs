//! Revisions of a baseline (X.1642 8.5.2, 8.8): the digest that identifies what a spec renders,
//! and the one-line summary of what changed between two renderings for `status.history`.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::render::{Rendered, RenderedObject, api_group};
use crate::api::baseline::SecurityBaselineSpec;

/// Version of the canonical form hashed by [`revision`]; bump it when that form changes.
const CANONICAL_FORM: u32 = 1;

/// At most this many objects are named in a summary; the rest are counted.
const SUMMARY_MAX_ITEMS: usize = 20;

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

/// What changed between two renderings, for `status.history[].summary`:
/// `added NetworkPolicy/opsec-isolation; changed ResourceQuota/opsec-quota; removed ConfigMap/x`,
/// or `no change`. Objects are matched by namespace, API group, kind and name, compared by their
/// full rendered body; each part is sorted, objects named once, and long lists are cut after
/// 20 names (`... and 7 more`).
///
/// Render both revisions for the same namespace and tenant (for example a representative
/// namespace) so that only the spec differs.
pub fn summarize_change(old: &[RenderedObject], new: &[RenderedObject]) -> String {
    summarize(old, new, None)
}

/// Like [`summarize_change`], also saying `changed Namespace labels` when the Pod Security labels
/// differ.
pub fn summarize_rendered(old: &Rendered, new: &Rendered) -> String {
    summarize(
        &old.objects,
        &new.objects,
        Some(old.namespace_labels != new.namespace_labels),
    )
}

fn summarize(
    old: &[RenderedObject],
    new: &[RenderedObject],
    labels_changed: Option<bool>,
) -> String {
    type Key<'a> = (&'a str, &'a str, &'a str, &'a str);
    fn index(objs: &[RenderedObject]) -> BTreeMap<Key<'_>, &RenderedObject> {
        objs.iter()
            .map(|o| {
                (
                    (
                        o.namespace.as_str(),
                        api_group(&o.api_version),
                        o.kind.as_str(),
                        o.name.as_str(),
                    ),
                    o,
                )
            })
            .collect()
    }
    let (old, new) = (index(old), index(new));
    let mut added = Vec::new();
    let mut changed = Vec::new();
    let mut removed = Vec::new();
    for (k, n) in &new {
        match old.get(k) {
            None => added.push(n.display_name()),
            Some(o) if o.object != n.object => changed.push(n.display_name()),
            Some(_) => {}
        }
    }
    for (k, o) in &old {
        if !new.contains_key(k) {
            removed.push(o.display_name());
        }
    }
    let mut parts = Vec::new();
    let mut budget = SUMMARY_MAX_ITEMS;
    for (verb, mut names) in [("added", added), ("changed", changed), ("removed", removed)] {
        names.sort();
        names.dedup();
        if names.is_empty() {
            continue;
        }
        let shown = names.len().min(budget);
        budget -= shown;
        let mut text = format!("{verb} {}", names[..shown].join(", "));
        if shown < names.len() {
            text.push_str(&format!(" ... and {} more", names.len() - shown));
        }
        parts.push(text);
    }
    if labels_changed == Some(true) {
        parts.push("changed Namespace labels".into());
    }
    if parts.is_empty() {
        "no change".into()
    } else {
        parts.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baseline::render_namespace;

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

    fn rendered(yaml: &str) -> Rendered {
        render_namespace("base", &spec(yaml), "ns", "t").expect("renders")
    }

    #[test]
    fn summaries() {
        let old = rendered(
            "controls: {resourceQuota: {hard: {pods: '10'}}, serviceAccounts: {}}\ntemplates: [{apiVersion: v1, kind: ConfigMap, metadata: {name: x}}]",
        );
        let new = rendered(
            "controls: {networkIsolation: {}, resourceQuota: {hard: {pods: '20'}}, serviceAccounts: {}}",
        );
        assert_eq!(
            summarize_change(&old.objects, &new.objects),
            "added NetworkPolicy/opsec-isolation; changed ResourceQuota/opsec-quota; removed ConfigMap/x"
        );
        assert_eq!(summarize_change(&new.objects, &new.objects), "no change");
        assert_eq!(summarize_change(&[], &[]), "no change");

        let psa = rendered("controls: {podSecurity: {}}");
        let none = rendered("");
        assert_eq!(summarize_rendered(&none, &psa), "changed Namespace labels");
        assert_eq!(summarize_rendered(&psa, &psa), "no change");
    }

    #[test]
    fn long_summaries_are_cut() {
        let templates: Vec<String> = (0..25)
            .map(|i| format!("{{apiVersion: v1, kind: ConfigMap, metadata: {{name: cm{i:02}}}}}"))
            .collect();
        let new = rendered(&format!("templates: [{}]", templates.join(", ")));
        let s = summarize_change(&[], &new.objects);
        assert!(s.starts_with("added ConfigMap/cm00, ConfigMap/cm01"), "{s}");
        assert!(s.ends_with("ConfigMap/cm19 ... and 5 more"), "{s}");
    }
}
