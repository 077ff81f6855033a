//! Namespace and workload selection: Kubernetes label-selector semantics, `excludeNamespaces` and
//! the tenant label of a SecurityBaseline.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::api::baseline::{SecurityBaselineSpec, WorkloadTemplate};

/// Why a label selector could not be evaluated.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum SelectorError {
    /// The operator is not one of In, NotIn, Exists, DoesNotExist.
    #[error(
        "label selector requirement on key {key:?}: unknown operator {operator:?} (expected In, NotIn, Exists or DoesNotExist)"
    )]
    UnknownOperator { key: String, operator: String },
    /// In and NotIn need at least one value.
    #[error(
        "label selector requirement on key {key:?}: operator {operator} needs at least one value"
    )]
    MissingValues { key: String, operator: String },
    /// Exists and DoesNotExist take no values.
    #[error("label selector requirement on key {key:?}: operator {operator} takes no values")]
    UnexpectedValues { key: String, operator: String },
}

/// Whether `labels` satisfy `selector`, as the API server evaluates a `metav1.LabelSelector`:
/// every `matchLabels` entry and every `matchExpressions` requirement must hold. An empty
/// selector matches everything (the SecurityBaseline schema refuses an empty namespaceSelector).
pub fn label_selector_matches(
    selector: &LabelSelector,
    labels: &BTreeMap<String, String>,
) -> Result<bool, SelectorError> {
    // Validate every requirement first, so an invalid selector is an error even when an earlier
    // term already fails to match.
    let expressions = selector.match_expressions.as_deref().unwrap_or_default();
    for req in expressions {
        let has_values = req.values.as_ref().is_some_and(|v| !v.is_empty());
        match req.operator.as_str() {
            "In" | "NotIn" if !has_values => {
                return Err(SelectorError::MissingValues {
                    key: req.key.clone(),
                    operator: req.operator.clone(),
                });
            }
            "Exists" | "DoesNotExist" if has_values => {
                return Err(SelectorError::UnexpectedValues {
                    key: req.key.clone(),
                    operator: req.operator.clone(),
                });
            }
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            _ => {
                return Err(SelectorError::UnknownOperator {
                    key: req.key.clone(),
                    operator: req.operator.clone(),
                });
            }
        }
    }
    if let Some(match_labels) = &selector.match_labels {
        for (k, v) in match_labels {
            if labels.get(k) != Some(v) {
                return Ok(false);
            }
        }
    }
    for req in expressions {
        let value = labels.get(&req.key);
        let values = req.values.as_deref().unwrap_or_default();
        let ok = match req.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            // Only "DoesNotExist" is left: the loop above refused everything else.
            _ => value.is_none(),
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

/// What a baseline makes of one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// The namespace matches, is not excluded, and belongs to `tenant` (the value of the
    /// baseline's tenant label): render into it.
    Selected { tenant: String },
    /// The namespace does not match `namespaceSelector`: nothing to do (prune what is there).
    NotSelected,
    /// The namespace matches but is listed in `excludeNamespaces`: never touched.
    Excluded,
    /// The namespace matches but has no (or an empty) tenant label: report it as failed, never
    /// guess a tenant and render nothing.
    MissingTenant,
}

/// Decides whether a baseline applies to a namespace, from its name and labels.
///
/// Order: the selector first (a namespace that does not match is [`Selection::NotSelected`]
/// even if it is also excluded), then `excludeNamespaces`, then the tenant label.
pub fn select_namespace(
    spec: &SecurityBaselineSpec,
    ns_name: &str,
    ns_labels: &BTreeMap<String, String>,
) -> Result<Selection, SelectorError> {
    if !label_selector_matches(&spec.namespace_selector, ns_labels)? {
        return Ok(Selection::NotSelected);
    }
    if spec.exclude_namespaces.iter().any(|n| n == ns_name) {
        return Ok(Selection::Excluded);
    }
    match ns_labels.get(&spec.tenant_label) {
        Some(tenant) if !tenant.is_empty() => Ok(Selection::Selected {
            tenant: tenant.clone(),
        }),
        _ => Ok(Selection::MissingTenant),
    }
}

/// Whether a workload (Deployment, StatefulSet, DaemonSet) whose pod template carries
/// `pod_template_labels` is followed by the workload template `wt`.
pub fn workload_matches(
    wt: &WorkloadTemplate,
    pod_template_labels: &BTreeMap<String, String>,
) -> Result<bool, SelectorError> {
    label_selector_matches(&wt.selector, pod_template_labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn selector(yaml: &str) -> LabelSelector {
        serde_yaml::from_str(yaml).expect("test fixture")
    }

    #[test]
    fn selector_semantics() {
        let ns = labels(&[("class", "standard"), ("env", "prod")]);
        let cases: &[(&str, bool)] = &[
            ("{}", true),
            ("matchLabels: {class: standard}", true),
            ("matchLabels: {class: premium}", false),
            ("matchLabels: {class: standard, env: prod}", true),
            ("matchLabels: {missing: x}", false),
            (
                "matchExpressions: [{key: env, operator: In, values: [prod, staging]}]",
                true,
            ),
            (
                "matchExpressions: [{key: env, operator: In, values: [dev]}]",
                false,
            ),
            (
                "matchExpressions: [{key: missing, operator: In, values: [x]}]",
                false,
            ),
            (
                "matchExpressions: [{key: env, operator: NotIn, values: [dev]}]",
                true,
            ),
            (
                "matchExpressions: [{key: env, operator: NotIn, values: [prod]}]",
                false,
            ),
            (
                "matchExpressions: [{key: missing, operator: NotIn, values: [x]}]",
                true,
            ),
            ("matchExpressions: [{key: env, operator: Exists}]", true),
            (
                "matchExpressions: [{key: missing, operator: Exists}]",
                false,
            ),
            (
                "matchExpressions: [{key: missing, operator: DoesNotExist}]",
                true,
            ),
            (
                "matchExpressions: [{key: env, operator: DoesNotExist}]",
                false,
            ),
            (
                "{matchLabels: {class: standard}, matchExpressions: [{key: env, operator: DoesNotExist}]}",
                false,
            ),
        ];
        for (yaml, want) in cases {
            assert_eq!(
                label_selector_matches(&selector(yaml), &ns),
                Ok(*want),
                "{yaml}"
            );
        }
    }

    #[test]
    fn invalid_selectors_are_errors() {
        let ns = labels(&[]);
        let cases: &[(&str, &str)] = &[
            (
                "matchExpressions: [{key: env, operator: Equals, values: [x]}]",
                "unknown operator \"Equals\"",
            ),
            (
                "matchExpressions: [{key: env, operator: In}]",
                "needs at least one value",
            ),
            (
                "matchExpressions: [{key: env, operator: Exists, values: [x]}]",
                "takes no values",
            ),
            // Invalid even though matchLabels already fails.
            (
                "{matchLabels: {a: b}, matchExpressions: [{key: env, operator: Bogus}]}",
                "unknown operator",
            ),
        ];
        for (yaml, want) in cases {
            let err = label_selector_matches(&selector(yaml), &ns).expect_err(yaml);
            assert!(err.to_string().contains(want), "{yaml}: {err}");
        }
    }

    fn spec() -> SecurityBaselineSpec {
        serde_yaml::from_str(
            "namespaceSelector: {matchLabels: {opsec.x1642.dev/tenant-class: standard}}\n\
             excludeNamespaces: [kube-system, shared]\n",
        )
        .expect("test fixture")
    }

    #[test]
    fn namespace_selection() {
        let spec = spec();
        let std_acme = labels(&[
            ("opsec.x1642.dev/tenant-class", "standard"),
            ("opsec.x1642.dev/tenant", "acme"),
        ]);
        let std_no_tenant = labels(&[("opsec.x1642.dev/tenant-class", "standard")]);
        let std_empty_tenant = labels(&[
            ("opsec.x1642.dev/tenant-class", "standard"),
            ("opsec.x1642.dev/tenant", ""),
        ]);
        let premium = labels(&[
            ("opsec.x1642.dev/tenant-class", "premium"),
            ("opsec.x1642.dev/tenant", "acme"),
        ]);
        let cases = [
            (
                "acme-prod",
                &std_acme,
                Selection::Selected {
                    tenant: "acme".into(),
                },
            ),
            ("shared", &std_acme, Selection::Excluded),
            ("kube-system", &premium, Selection::NotSelected),
            ("acme-dev", &premium, Selection::NotSelected),
            ("orphan", &std_no_tenant, Selection::MissingTenant),
            ("orphan", &std_empty_tenant, Selection::MissingTenant),
        ];
        for (name, ns_labels, want) in cases {
            assert_eq!(select_namespace(&spec, name, ns_labels), Ok(want), "{name}");
        }
    }

    #[test]
    fn custom_tenant_label() {
        let mut spec = spec();
        spec.tenant_label = "example.com/customer".into();
        let ns = labels(&[
            ("opsec.x1642.dev/tenant-class", "standard"),
            ("opsec.x1642.dev/tenant", "wrong"),
            ("example.com/customer", "globex"),
        ]);
        assert_eq!(
            select_namespace(&spec, "globex-a", &ns),
            Ok(Selection::Selected {
                tenant: "globex".into()
            })
        );
    }

    #[test]
    fn workload_selector() {
        let wt: WorkloadTemplate = serde_yaml::from_str(
            "selector: {matchLabels: {opsec.x1642.dev/profile: web}}\n\
             templates: [{apiVersion: v1, kind: ConfigMap, metadata: {name: x}}]\n",
        )
        .expect("test fixture");
        let web = labels(&[("opsec.x1642.dev/profile", "web"), ("app", "shop")]);
        let batch = labels(&[("opsec.x1642.dev/profile", "batch")]);
        assert_eq!(workload_matches(&wt, &web), Ok(true));
        assert_eq!(workload_matches(&wt, &batch), Ok(false));
    }
}
