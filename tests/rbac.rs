//! The operator's rights are what its code calls, and nothing more: `kubectl auth can-i --list`
//! for its ServiceAccount, with the shipped `config/rbac` applied, in a tenant namespace and in
//! its own, must list only rights this file justifies (each with the code that uses it), and
//! the rights an attacker would want from a confused deputy are refused. Needs KUBECONFIG
//! (`make test`).

mod common;

use std::collections::BTreeSet;

const OPERATOR: &str = "system:serviceaccount:opsec-system:opsec-operator";

/// (resource, resource names, verbs, why). A resource with names is allowed only for them.
type Justified = (
    &'static str,
    &'static [&'static str],
    &'static [&'static str],
    &'static str,
);

/// One `can-i --list` row: resource, resource names, verbs.
type Right = (String, Vec<String>, Vec<String>);

const JUSTIFIED: &[Justified] = &[
    // Every authenticated user has these (system:basic-user): not the operator's own rules.
    (
        "selfsubjectreviews.authentication.k8s.io",
        &[],
        &["create"],
        "every authenticated user",
    ),
    (
        "selfsubjectaccessreviews.authorization.k8s.io",
        &[],
        &["create"],
        "every authenticated user",
    ),
    (
        "selfsubjectrulesreviews.authorization.k8s.io",
        &[],
        &["create"],
        "every authenticated user",
    ),
    (
        "clustertrustbundles.certificates.k8s.io",
        &[],
        &["get", "list", "watch"],
        "every ServiceAccount (system:service-account-issuer-discovery and kubelet trust)",
    ),
    // controller/baseline (reconcile, finalizer) and runtime.
    (
        "securitybaselines.opsec.x1642.dev",
        &[],
        &["get", "list", "watch", "patch"],
        "baseline controller; finalizer patch",
    ),
    (
        "securitybaselines.opsec.x1642.dev/status",
        &[],
        &["patch"],
        "status by server-side apply",
    ),
    // controller/backup.
    (
        "backuppolicies.opsec.x1642.dev",
        &[],
        &["get", "list", "watch"],
        "policy controller (handled requests are recorded in status)",
    ),
    (
        "backuppolicies.opsec.x1642.dev/status",
        &[],
        &["patch"],
        "status by server-side apply",
    ),
    (
        "backups.opsec.x1642.dev",
        &[],
        &["get", "list", "watch", "create", "delete", "record"],
        "schedules, catalogue, retention; `record`: Scheduled and Catalogue backups (config/admission)",
    ),
    (
        "backups.opsec.x1642.dev/status",
        &[],
        &["patch"],
        "status by server-side apply",
    ),
    (
        "restores.opsec.x1642.dev",
        &[],
        &["get", "list", "watch"],
        "restore controller",
    ),
    (
        "restores.opsec.x1642.dev/status",
        &[],
        &["patch"],
        "status by server-side apply",
    ),
    (
        "namespaces",
        &[],
        &["get", "list", "watch", "patch", "create", "delete"],
        "baseline selection and PSA labels; restore-test sandboxes",
    ),
    (
        "events",
        &[],
        &["create", "patch"],
        "the audit trail (kube Recorder)",
    ),
    (
        "events.events.k8s.io",
        &[],
        &["create", "patch"],
        "the audit trail (kube Recorder)",
    ),
    (
        "customresourcedefinitions.apiextensions.k8s.io",
        &[],
        &["get", "list", "watch"],
        "waits for its CRDs; notices PolicyReport",
    ),
    (
        "networkpolicies.networking.k8s.io",
        &[],
        &[
            "get", "list", "watch", "create", "update", "patch", "delete",
        ],
        "networkIsolation control; sandbox deny-all",
    ),
    (
        "resourcequotas",
        &[],
        &[
            "get", "list", "watch", "create", "update", "patch", "delete",
        ],
        "resourceQuota control",
    ),
    (
        "limitranges",
        &[],
        &[
            "get", "list", "watch", "create", "update", "patch", "delete",
        ],
        "limitRange control",
    ),
    (
        "serviceaccounts",
        &[],
        &[
            "get", "list", "watch", "create", "update", "patch", "delete",
        ],
        "serviceAccounts control; the acting account is looked up",
    ),
    (
        "rolebindings.rbac.authorization.k8s.io",
        &[],
        &[
            "get", "list", "watch", "create", "update", "patch", "delete",
        ],
        "tenantAccess control; sandbox bindings",
    ),
    (
        "clusterroles.rbac.authorization.k8s.io",
        &["admin", "edit", "view"],
        &["bind"],
        "tenantAccess and sandbox bindings",
    ),
    (
        "deployments.apps",
        &[],
        &["get", "list", "watch"],
        "workloadTemplates follow workloads",
    ),
    (
        "statefulsets.apps",
        &[],
        &["get", "list", "watch"],
        "workloadTemplates follow workloads",
    ),
    (
        "daemonsets.apps",
        &[],
        &["get", "list", "watch"],
        "workloadTemplates follow workloads",
    ),
    (
        "policyreports.wgpolicyk8s.io",
        &[],
        &[
            "get", "list", "watch", "create", "update", "patch", "delete",
        ],
        "per-namespace compliance reports",
    ),
    (
        "serviceaccounts",
        &["opsec-tenant"],
        &["impersonate"],
        "acting for tenants (controller/tenant.rs)",
    ),
    (
        "tokenreviews.authentication.k8s.io",
        &[],
        &["create"],
        "who scrapes /metrics (runtime/metrics_auth.rs)",
    ),
    (
        "subjectaccessreviews.authorization.k8s.io",
        &[],
        &["create"],
        "may they scrape /metrics (runtime/metrics_auth.rs)",
    ),
    // The provider's template kinds (config/rbac/cluster_role_templates.yaml): configuration.
    (
        "configmaps",
        &[],
        &[
            "get", "list", "watch", "create", "update", "patch", "delete",
        ],
        "template kind of the sample baseline",
    ),
    (
        "poddisruptionbudgets.policy",
        &[],
        &[
            "get", "list", "watch", "create", "update", "patch", "delete",
        ],
        "template kind of the sample baseline",
    ),
];

/// Only in the operator's own namespace.
const OWN_NAMESPACE: &[Justified] = &[
    (
        "leases.coordination.k8s.io",
        &[],
        &["get", "create", "update"],
        "leader election (runtime/lease.rs)",
    ),
    (
        "secrets",
        &["opsec-signing-keys"],
        &["get"],
        "its signing keyring (controller/backup/signing.rs)",
    ),
    (
        "secrets",
        &[],
        &["create"],
        "its signing keyring, created at first start",
    ),
];

/// The rows of `kubectl auth can-i --list` for the operator in `ns`: (resource, names, verbs)
/// and the non-resource URLs.
fn rights(ns: &str) -> (Vec<Right>, Vec<String>) {
    let (ok, out, err) = common::kubectl(&["auth", "can-i", "--list", "-n", ns, "--as", OPERATOR]);
    assert!(ok, "kubectl auth can-i --list: {err}");
    eprintln!("can-i --list in {ns}:\n{out}");
    let row = regex::Regex::new(r"^(\S*)\s+\[(.*?)\]\s+\[(.*?)\]\s+\[(.*?)\]\s*$").unwrap();
    let split = |s: &str| -> Vec<String> { s.split_whitespace().map(str::to_string).collect() };
    let (mut resources, mut urls) = (Vec::new(), Vec::new());
    for line in out.lines().skip(1) {
        let caps = row
            .captures(line)
            .unwrap_or_else(|| panic!("unparsed can-i row: {line:?}"));
        if caps[1].is_empty() {
            urls.extend(split(&caps[2]));
        } else {
            resources.push((caps[1].to_string(), split(&caps[3]), split(&caps[4])));
        }
    }
    (resources, urls)
}

fn unjustified(ns: &str, table: &[&[Justified]]) -> Vec<String> {
    let (resources, urls) = rights(ns);
    let mut out = Vec::new();
    for (resource, names, verbs) in &resources {
        for verb in verbs {
            let ok = table.iter().flat_map(|t| t.iter()).any(|(r, n, v, _)| {
                r == resource
                    && v.contains(&verb.as_str())
                    && (n.is_empty() && names.is_empty()
                        || !names.is_empty() && names.iter().all(|x| n.contains(&x.as_str())))
            });
            if !ok {
                out.push(format!("{verb} {resource} {names:?}"));
            }
        }
    }
    // Non-resource URLs come from the cluster's discovery roles, granted to everyone; the
    // operator's own roles grant none.
    let discovery: BTreeSet<&str> = [
        "/api",
        "/api/*",
        "/apis",
        "/apis/*",
        "/healthz",
        "/livez",
        "/openapi",
        "/openapi/*",
        "/readyz",
        "/version",
        "/version/",
        "/.well-known/openid-configuration",
        "/.well-known/openid-configuration/",
        "/openid/v1/jwks",
        "/openid/v1/jwks/",
    ]
    .into();
    for u in urls {
        if !discovery.contains(u.as_str()) {
            out.push(format!("non-resource URL {u}"));
        }
    }
    out
}

#[test]
fn the_operator_holds_only_the_rights_its_code_calls() {
    common::operator_kubeconfig();
    let (_, _, _) = common::kubectl(&["create", "namespace", "rbac-tenant"]);
    let extra = unjustified("rbac-tenant", &[JUSTIFIED]);
    assert!(
        extra.is_empty(),
        "rights nothing justifies in a tenant namespace: {extra:#?}"
    );
    let extra = unjustified(common::OPERATOR_NAMESPACE, &[JUSTIFIED, OWN_NAMESPACE]);
    assert!(
        extra.is_empty(),
        "rights nothing justifies in its namespace: {extra:#?}"
    );
    // No wildcard anywhere in what it holds.
    let (resources, _) = rights("rbac-tenant");
    assert!(
        resources
            .iter()
            .all(|(r, _, v)| !r.contains('*') && !v.iter().any(|v| v == "*")),
        "{resources:?}"
    );
}

#[test]
fn what_a_confused_deputy_would_be_used_for_is_refused() {
    common::operator_kubeconfig();
    let (_, _, _) = common::kubectl(&["create", "namespace", "rbac-tenant"]);
    // (verb, resource[/name], subresource, namespace; "" for all namespaces)
    let refused = [
        ("get", "secrets", "", "rbac-tenant"),
        ("list", "secrets", "", "kube-system"),
        ("create", "serviceaccounts", "token", "kube-system"),
        ("create", "pods", "exec", "rbac-tenant"),
        ("create", "pods", "", "rbac-tenant"),
        ("get", "nodes", "proxy", ""),
        ("create", "clusterrolebindings", "", ""),
        (
            "create",
            "mutatingwebhookconfigurations.admissionregistration.k8s.io",
            "",
            "",
        ),
        (
            "create",
            "customresourcedefinitions.apiextensions.k8s.io",
            "",
            "",
        ),
        ("patch", "endpoints", "", "rbac-tenant"),
        (
            "create",
            "endpointslices.discovery.k8s.io",
            "",
            "rbac-tenant",
        ),
        ("create", "bindings", "", "rbac-tenant"),
        ("bind", "clusterroles/cluster-admin", "", ""),
        ("impersonate", "serviceaccounts/default", "", "rbac-tenant"),
        ("impersonate", "users", "", ""),
        ("impersonate", "groups", "", ""),
        ("get", "secrets/opsec-signing-keys", "", "rbac-tenant"),
        ("patch", "patchwindows.opsec.x1642.dev", "", "rbac-tenant"),
        ("create", "incidents.opsec.x1642.dev", "", "rbac-tenant"),
    ];
    for (verb, resource, sub, ns) in refused {
        let mut args = vec!["auth", "can-i", verb, resource, "--as", OPERATOR];
        if !sub.is_empty() {
            args.extend(["--subresource", sub]);
        }
        if ns.is_empty() {
            args.push("--all-namespaces");
        } else {
            args.extend(["-n", ns]);
        }
        let (_, out, _) = common::kubectl(&args);
        assert_eq!(
            out.trim(),
            "no",
            "the operator may {verb} {resource} {sub} in {ns:?}"
        );
    }
    // And what it acts as a tenant for, it may.
    let (_, out, _) = common::kubectl(&[
        "auth",
        "can-i",
        "impersonate",
        "serviceaccounts/opsec-tenant",
        "-n",
        "rbac-tenant",
        "--as",
        OPERATOR,
    ]);
    assert_eq!(out.trim(), "yes");
}
