//! Rendering: turns a SecurityBaseline spec into the exact objects (and Namespace labels) one
//! tenant namespace must carry: the typed controls, the free templates with their variables, and
//! the workload templates that follow a workload.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use super::conflict::{Claim, ObjectKey};
use super::{
    ADMIN_BINDING_NAME, BASELINE_LABEL, DEFAULT_SERVICE_ACCOUNT, LIMIT_RANGE_NAME,
    MANAGED_BY_LABEL, MANAGED_BY_VALUE, NETWORK_POLICY_NAME, PSA_LABEL_PREFIX, RESOURCE_QUOTA_NAME,
    SOURCE_ANNOTATION, VIEW_BINDING_NAME,
};
use crate::api::baseline::{
    NetworkIsolation, PodSecurity, PodSecurityLevel, SecurityBaselineSpec, TemplateObject,
    TenantAccess, WorkloadTemplate,
};

// Kinds a template may never render: cluster-scoped kinds (they cannot live in a namespace, and a
// tenant's configuration must never reach beyond its namespaces). The list the CRD's CEL rule
// holds, checked again here because the rule sees the template before variables are substituted.
use crate::api::rules::is_cluster_scoped;

/// Longest label value: the baseline name goes into [`BASELINE_LABEL`].
const MAX_LABEL_VALUE: usize = 63;

/// Why a baseline could not be rendered into a namespace. Every variant names the control or
/// template (`source`) so that the message can go into a status condition and an Event as is.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum RenderError {
    #[error(
        "{field}: undefined variable ${{{variable}}} in {origin} (defined: {defined}; write $${{...}} for a literal ${{...}})"
    )]
    UndefinedVariable {
        origin: String,
        /// Where in the spec (`spec.templates[0].data.greeting`).
        field: String,
        variable: String,
        defined: String,
    },
    #[error(
        "{field}: unterminated variable in {text:?} in {origin} (a \"${{\" without \"}}\"; write $${{ for a literal ${{)"
    )]
    UnterminatedVariable {
        origin: String,
        field: String,
        text: String,
    },
    #[error("{field}: after substitution two map keys are both {key:?} in {origin}")]
    DuplicateKey {
        origin: String,
        field: String,
        key: String,
    },
    #[error("{origin}: {field} must be a non-empty string")]
    MissingField { origin: String, field: &'static str },
    #[error("{origin}: {field} must be a map of strings")]
    InvalidField { origin: String, field: &'static str },
    #[error("{origin}: kind {kind} cannot be rendered into a namespace")]
    ForbiddenKind { origin: String, kind: String },
    #[error(
        "{origin}: metadata.namespace is {namespace:?} but the object is rendered into {target:?}; leave metadata.namespace out"
    )]
    ForeignNamespace {
        origin: String,
        namespace: String,
        target: String,
    },
    /// Two controls or templates render one object (`object` reads
    /// `<apiVersion> <Kind>/<name> in <namespace>`).
    #[error("{object} is rendered twice: by {first} and by {second}")]
    Duplicate {
        object: String,
        first: String,
        second: String,
    },
    #[error(
        "baseline name {name:?} is longer than 63 characters and cannot be a label value ({label})"
    )]
    BaselineNameTooLong { name: String, label: &'static str },
    #[error("{origin}: cannot serialize: {message}")]
    Serialize { origin: String, message: String },
}

/// One object to apply into a namespace, complete (`apiVersion`, `kind`,
/// `metadata{name, namespace, labels, annotations}` and the body).
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedObject {
    /// `apiVersion` of the object (`networking.k8s.io/v1`).
    pub api_version: String,
    /// `kind` of the object (`NetworkPolicy`).
    pub kind: String,
    /// `metadata.name` (after variable substitution).
    pub name: String,
    /// `metadata.namespace`: the target namespace.
    pub namespace: String,
    /// Which control or template produced it: `control/networkIsolation`,
    /// `template/0:ConfigMap/tenant-info`,
    /// `workload/Deployment/web/template/0:ConfigMap/web-config`. Also in [`SOURCE_ANNOTATION`].
    pub source: String,
    /// The full object, ready for server-side apply with field manager
    /// [`FIELD_MANAGER`](super::FIELD_MANAGER).
    pub object: Value,
    /// Whether the operator may delete the object when it is no longer rendered (prune). False
    /// for objects the operator only adopts, such as the `default` ServiceAccount: for those, to
    /// let go, apply an object with only apiVersion, kind and metadata.name (so the operator's
    /// fields are released), never delete.
    pub prune: bool,
}

impl RenderedObject {
    /// The API group of [`Self::api_version`] (`""` for the core group).
    pub fn group(&self) -> &str {
        api_group(&self.api_version)
    }

    /// The key under which baselines claim this object (see [`super::resolve`]).
    pub fn key(&self) -> ObjectKey {
        ObjectKey {
            namespace: self.namespace.clone(),
            api_version: self.api_version.clone(),
            kind: self.kind.clone(),
            name: self.name.clone(),
        }
    }

    /// `Kind/name`, the form of `status.nonCompliant[].object`.
    pub fn display_name(&self) -> String {
        format!("{}/{}", self.kind, self.name)
    }
}

/// Everything one baseline renders for one namespace.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Rendered {
    /// The target namespace.
    pub namespace: String,
    /// Objects to apply into the namespace, in a deterministic order: controls first
    /// (networkIsolation, resourceQuota, limitRange, tenantAccess admins then viewers,
    /// serviceAccounts), then templates in spec order.
    pub objects: Vec<RenderedObject>,
    /// Labels for the Namespace object itself: the Pod Security Admission labels
    /// (`pod-security.kubernetes.io/{enforce,audit,warn}` and `...-version`), empty without the
    /// podSecurity control. Apply them with server-side apply of a bare
    /// `{apiVersion: v1, kind: Namespace, metadata: {name, labels}}` (see
    /// [`Rendered::namespace_patch`]); never create or delete the Namespace.
    pub namespace_labels: BTreeMap<String, String>,
}

impl Rendered {
    /// The server-side-apply body for the Namespace labels, or `None` when there are none.
    pub fn namespace_patch(&self) -> Option<Value> {
        if self.namespace_labels.is_empty() {
            return None;
        }
        Some(json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": self.namespace, "labels": self.namespace_labels},
        }))
    }

    /// The key under which the Namespace labels are claimed: baselines that both set Pod Security
    /// labels on one namespace conflict like two baselines rendering one object.
    pub fn namespace_key(&self) -> ObjectKey {
        ObjectKey {
            namespace: String::new(),
            api_version: "v1".into(),
            kind: "Namespace".into(),
            name: self.namespace.clone(),
        }
    }

    /// The claims of `baseline` (at `priority`) on every object it renders here, including the
    /// Namespace labels ([`Rendered::namespace_key`]) when it sets any; input of
    /// [`super::resolve`].
    pub fn claims(&self, baseline: &str, priority: i32) -> Vec<Claim> {
        let mut claims: Vec<Claim> = self
            .objects
            .iter()
            .map(|o| Claim {
                baseline: baseline.into(),
                priority,
                key: o.key(),
            })
            .collect();
        if !self.namespace_labels.is_empty() {
            claims.push(Claim {
                baseline: baseline.into(),
                priority,
                key: self.namespace_key(),
            });
        }
        claims
    }
}

/// Renders the controls and templates of `spec` (the SecurityBaseline named `baseline_name`) for
/// `namespace` of `tenant` (from [`super::select_namespace`]). Workload templates are rendered
/// separately, per workload, by [`render_workload`].
///
/// Every object gets `metadata.namespace = namespace`, the labels [`MANAGED_BY_LABEL`] and
/// [`BASELINE_LABEL`] and the annotation [`SOURCE_ANNOTATION`]; a template's own labels and
/// annotations are kept, except that these three keys are always the operator's.
///
/// Errors name the control or template at fault; nothing is rendered for the namespace then.
pub fn render_namespace(
    baseline_name: &str,
    spec: &SecurityBaselineSpec,
    namespace: &str,
    tenant: &str,
) -> Result<Rendered, RenderError> {
    check_baseline_name(baseline_name)?;
    let vars = Vars(vec![
        ("namespace", namespace),
        ("tenant", tenant),
        ("baseline", baseline_name),
    ]);
    let ctx = Ctx {
        baseline: baseline_name,
        namespace,
    };
    let controls = &spec.controls;
    let mut objects = Vec::new();
    if let Some(ni) = &controls.network_isolation {
        objects.push(ctx.finish(
            "control/networkIsolation",
            network_policy(ni, &spec.tenant_label, tenant),
            true,
        )?);
    }
    if let Some(rq) = &controls.resource_quota {
        let source = "control/resourceQuota";
        let hard = to_value(&rq.hard, source)?;
        objects.push(ctx.finish(
            source,
            json!({
                "apiVersion": "v1",
                "kind": "ResourceQuota",
                "metadata": {"name": RESOURCE_QUOTA_NAME},
                "spec": {"hard": hard},
            }),
            true,
        )?);
    }
    if let Some(lr) = &controls.limit_range {
        let source = "control/limitRange";
        let limits = to_value(&lr.limits, source)?;
        objects.push(ctx.finish(
            source,
            json!({
                "apiVersion": "v1",
                "kind": "LimitRange",
                "metadata": {"name": LIMIT_RANGE_NAME},
                "spec": {"limits": limits},
            }),
            true,
        )?);
    }
    if let Some(ta) = &controls.tenant_access {
        for body in tenant_bindings(ta, &vars)? {
            objects.push(ctx.finish("control/tenantAccess", body, true)?);
        }
    }
    if let Some(sa) = &controls.service_accounts {
        objects.push(ctx.finish(
            "control/serviceAccounts",
            json!({
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": DEFAULT_SERVICE_ACCOUNT},
                "automountServiceAccountToken": sa.automount_token,
            }),
            false,
        )?);
    }
    for (i, template) in spec.templates.iter().enumerate() {
        let field = format!("spec.templates[{i}]");
        objects.push(render_template(&ctx, &vars, "", &field, i, template)?);
    }
    ensure_unique(&objects)?;
    let namespace_labels = controls
        .pod_security
        .as_ref()
        .map(psa_labels)
        .unwrap_or_default();
    Ok(Rendered {
        namespace: namespace.into(),
        objects,
        namespace_labels,
    })
}

/// Renders one workload template for one workload (`workload_kind` `Deployment`, `StatefulSet`
/// or `DaemonSet`, named `workload_name`) running in `namespace` of `tenant`; `wt` is
/// `spec.workloadTemplates[wt_index]` (errors name the field). Variables:
/// `${namespace}`, `${tenant}`, `${baseline}`, `${workload}`, `${workloadKind}`. Sources read
/// `workload/<Kind>/<name>/template/<i>:<Kind>/<name>`.
///
/// The result is unique within itself; when several workloads (or the namespace rendering) end
/// up in one namespace, check the union with [`ensure_unique`]: a workload template whose names
/// do not use `${workload}` renders the same object for every matching workload.
pub fn render_workload(
    baseline_name: &str,
    wt_index: usize,
    wt: &WorkloadTemplate,
    namespace: &str,
    tenant: &str,
    workload_kind: &str,
    workload_name: &str,
) -> Result<Vec<RenderedObject>, RenderError> {
    check_baseline_name(baseline_name)?;
    let vars = Vars(vec![
        ("namespace", namespace),
        ("tenant", tenant),
        ("baseline", baseline_name),
        ("workload", workload_name),
        ("workloadKind", workload_kind),
    ]);
    let ctx = Ctx {
        baseline: baseline_name,
        namespace,
    };
    let prefix = format!("workload/{workload_kind}/{workload_name}/");
    let objects = wt
        .templates
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let field = format!("spec.workloadTemplates[{wt_index}].templates[{i}]");
            render_template(&ctx, &vars, &prefix, &field, i, t)
        })
        .collect::<Result<Vec<_>, _>>()?;
    ensure_unique(&objects)?;
    Ok(objects)
}

/// Checks that no two objects share namespace, API group, kind and name (two versions of one
/// group are the same object); the error names both sources.
pub fn ensure_unique(objects: &[RenderedObject]) -> Result<(), RenderError> {
    let mut seen: BTreeMap<(&str, &str, &str, &str), &RenderedObject> = BTreeMap::new();
    for o in objects {
        let id = (
            o.namespace.as_str(),
            o.group(),
            o.kind.as_str(),
            o.name.as_str(),
        );
        if let Some(first) = seen.insert(id, o) {
            return Err(RenderError::Duplicate {
                object: o.key().to_string(),
                first: first.source.clone(),
                second: o.source.clone(),
            });
        }
    }
    Ok(())
}

/// The API group of an apiVersion: `apps/v1` → `apps`, `v1` → `""`.
pub(crate) fn api_group(api_version: &str) -> &str {
    api_version
        .rsplit_once('/')
        .map(|(group, _)| group)
        .unwrap_or("")
}

fn check_baseline_name(name: &str) -> Result<(), RenderError> {
    if name.len() > MAX_LABEL_VALUE {
        return Err(RenderError::BaselineNameTooLong {
            name: name.into(),
            label: BASELINE_LABEL,
        });
    }
    Ok(())
}

fn to_value<T: serde::Serialize>(value: &T, source: &str) -> Result<Value, RenderError> {
    serde_json::to_value(value).map_err(|e| RenderError::Serialize {
        origin: source.into(),
        message: e.to_string(),
    })
}

fn level(l: PodSecurityLevel) -> &'static str {
    match l {
        PodSecurityLevel::Privileged => "privileged",
        PodSecurityLevel::Baseline => "baseline",
        PodSecurityLevel::Restricted => "restricted",
    }
}

fn psa_labels(ps: &PodSecurity) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    for (mode, l) in [
        ("enforce", ps.enforce),
        ("audit", ps.audit),
        ("warn", ps.warn),
    ] {
        labels.insert(format!("{PSA_LABEL_PREFIX}{mode}"), level(l).to_string());
        labels.insert(
            format!("{PSA_LABEL_PREFIX}{mode}-version"),
            ps.version.clone(),
        );
    }
    labels
}

/// The NetworkPolicy of the networkIsolation control.
///
/// Design: isolation between tenants is enforced on the *ingress* side. Every selected namespace
/// admits traffic only from its own pods, from namespaces of the same tenant (allowSameTenant,
/// by a namespaceSelector on the tenant label, which tenants cannot set on Namespaces themselves)
/// and from `allowFromNamespaces`; everything else is denied. Egress is deliberately open enough
/// for workloads to work: the own namespace (or the whole tenant with allowSameTenant), cluster
/// DNS in kube-system on UDP and TCP 53 (allowDNS), and the outside world through ipBlock
/// `0.0.0.0/0` and `::/0`. Some CNIs (Calico, for instance) also match pod IPs with an ipBlock,
/// so egress towards another tenant's pods may leave this namespace; it is then refused by that
/// tenant's own ingress rules, which the same baseline renders. Namespaces the baseline does not
/// select are not protected by it.
fn network_policy(ni: &NetworkIsolation, tenant_label: &str, tenant: &str) -> Value {
    let own_namespace = json!({"podSelector": {}});
    let same_tenant = json!({"namespaceSelector": {"matchLabels": {tenant_label: tenant}}});

    let mut from = vec![own_namespace.clone()];
    if ni.allow_same_tenant {
        from.push(same_tenant.clone());
    }
    if let Some(sel) = &ni.allow_from_namespaces {
        from.push(json!({"namespaceSelector": sel}));
    }

    let mut to_cluster = vec![own_namespace];
    if ni.allow_same_tenant {
        to_cluster.push(same_tenant);
    }
    let mut egress = vec![json!({"to": to_cluster})];
    if ni.allow_dns {
        egress.push(json!({
            "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}],
            "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
        }));
    }
    egress.push(json!({
        "to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}, {"ipBlock": {"cidr": "::/0"}}],
    }));

    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": NETWORK_POLICY_NAME},
        "spec": {
            "podSelector": {},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": from}],
            "egress": egress,
        },
    })
}

/// The RoleBindings of the tenantAccess control: admins then viewers, each only when it has at
/// least one group after substitution. Variables are substituted in group and role names.
fn tenant_bindings(ta: &TenantAccess, vars: &Vars<'_>) -> Result<Vec<Value>, RenderError> {
    let source = "control/tenantAccess";
    let mut out = Vec::new();
    for (name, role, groups, field) in [
        (
            ADMIN_BINDING_NAME,
            &ta.admin_role,
            &ta.admin_groups,
            "adminGroups",
        ),
        (
            VIEW_BINDING_NAME,
            &ta.view_role,
            &ta.view_groups,
            "viewGroups",
        ),
    ] {
        let mut seen = BTreeSet::new();
        let mut subjects = Vec::new();
        for (i, g) in groups.iter().enumerate() {
            let at = format!("spec.controls.tenantAccess.{field}[{i}]");
            let g = substitute_str(g, vars, source, &at)?;
            if seen.insert(g.clone()) {
                subjects.push(json!({
                    "kind": "Group",
                    "apiGroup": "rbac.authorization.k8s.io",
                    "name": g,
                }));
            }
        }
        if subjects.is_empty() {
            continue;
        }
        let role_field = if name == ADMIN_BINDING_NAME {
            "spec.controls.tenantAccess.adminRole"
        } else {
            "spec.controls.tenantAccess.viewRole"
        };
        let role = substitute_str(role, vars, source, role_field)?;
        out.push(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": name},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": role,
            },
            "subjects": subjects,
        }));
    }
    Ok(out)
}

/// Identity of what is rendered: used to stamp namespace, labels and annotations.
struct Ctx<'a> {
    baseline: &'a str,
    namespace: &'a str,
}

impl Ctx<'_> {
    /// Completes a rendered body: checks apiVersion, kind and name, sets metadata.namespace, our
    /// labels and the source annotation.
    fn finish(
        &self,
        source: &str,
        mut object: Value,
        prune: bool,
    ) -> Result<RenderedObject, RenderError> {
        let missing = |field| RenderError::MissingField {
            origin: source.into(),
            field,
        };
        let invalid = |field| RenderError::InvalidField {
            origin: source.into(),
            field,
        };
        let obj = object
            .as_object_mut()
            .ok_or_else(|| missing("the object"))?;
        let api_version =
            non_empty_str(obj.get("apiVersion")).ok_or_else(|| missing("apiVersion"))?;
        let kind = non_empty_str(obj.get("kind")).ok_or_else(|| missing("kind"))?;
        if is_cluster_scoped(api_group(&api_version), &kind) {
            return Err(RenderError::ForbiddenKind {
                origin: source.into(),
                kind,
            });
        }
        let metadata = obj
            .get_mut("metadata")
            .and_then(Value::as_object_mut)
            .ok_or_else(|| missing("metadata"))?;
        let name = non_empty_str(metadata.get("name")).ok_or_else(|| missing("metadata.name"))?;
        match metadata.get("namespace") {
            None | Some(Value::Null) => {}
            Some(Value::String(ns)) if ns == self.namespace => {}
            Some(other) => {
                return Err(RenderError::ForeignNamespace {
                    origin: source.into(),
                    namespace: other
                        .as_str()
                        .map_or_else(|| other.to_string(), String::from),
                    target: self.namespace.into(),
                });
            }
        }
        metadata.insert("namespace".into(), Value::String(self.namespace.into()));
        let labels = string_map(metadata, "labels").ok_or_else(|| invalid("metadata.labels"))?;
        labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY_VALUE.into());
        labels.insert(BASELINE_LABEL.into(), self.baseline.into());
        let annotations =
            string_map(metadata, "annotations").ok_or_else(|| invalid("metadata.annotations"))?;
        annotations.insert(SOURCE_ANNOTATION.into(), source.into());
        Ok(RenderedObject {
            api_version,
            kind,
            name,
            namespace: self.namespace.into(),
            source: source.into(),
            object,
            prune,
        })
    }
}

fn non_empty_str(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(String::from)
}

/// `metadata[field]` as a map of strings, created when absent; `None` when it is something else.
fn string_map<'m>(
    metadata: &'m mut Map<String, Value>,
    field: &str,
) -> Option<&'m mut Map<String, Value>> {
    let entry = metadata
        .entry(field)
        .or_insert_with(|| Value::Object(Map::new()));
    if entry.is_null() {
        *entry = Value::Object(Map::new());
    }
    let map = entry.as_object_mut()?;
    map.values().all(Value::is_string).then_some(map)
}

/// Renders free template `index` (`prefix` is empty for namespace templates and
/// `workload/<Kind>/<name>/` for workload templates; `field` is where the template is in the
/// spec, for errors).
fn render_template(
    ctx: &Ctx<'_>,
    vars: &Vars<'_>,
    prefix: &str,
    field: &str,
    index: usize,
    template: &TemplateObject,
) -> Result<RenderedObject, RenderError> {
    // Errors name the template as the user wrote it, before substitution.
    let raw_kind = template
        .0
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("?");
    let raw_name = template
        .0
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("?");
    let raw_id = format!("{prefix}template/{index}:{raw_kind}/{raw_name}");
    let body = substitute_value(&Value::Object(template.0.clone()), vars, &raw_id, field)?;
    // The source names the object as rendered.
    let kind = body.get("kind").and_then(Value::as_str).unwrap_or("?");
    let name = body
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("?");
    let source = format!("{prefix}template/{index}:{kind}/{name}");
    ctx.finish(&source, body, true)
        .map_err(|e| rename_source(e, &raw_id))
}

/// Errors from [`Ctx::finish`] name the template as the user wrote it.
fn rename_source(err: RenderError, raw_id: &str) -> RenderError {
    let raw = raw_id.to_string();
    match err {
        RenderError::MissingField { field, .. } => RenderError::MissingField { origin: raw, field },
        RenderError::InvalidField { field, .. } => RenderError::InvalidField { origin: raw, field },
        RenderError::ForbiddenKind { kind, .. } => RenderError::ForbiddenKind { origin: raw, kind },
        RenderError::ForeignNamespace {
            namespace, target, ..
        } => RenderError::ForeignNamespace {
            origin: raw,
            namespace,
            target,
        },
        other => other,
    }
}

/// The variables of one rendering, in the order they are listed in error messages.
struct Vars<'a>(Vec<(&'a str, &'a str)>);

impl Vars<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }
    fn defined(&self) -> String {
        self.0
            .iter()
            .map(|(n, _)| format!("${{{n}}}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Substitutes `${var}` in one string (at `field` of the spec); `$${` is a literal `${`; any
/// other `$` is literal.
fn substitute_str(
    s: &str,
    vars: &Vars<'_>,
    source: &str,
    field: &str,
) -> Result<String, RenderError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(body) = tail.strip_prefix("${") {
            let end = body
                .find('}')
                .ok_or_else(|| RenderError::UnterminatedVariable {
                    origin: source.into(),
                    field: field.into(),
                    text: s.into(),
                })?;
            let name = &body[..end];
            let value = vars
                .get(name)
                .ok_or_else(|| RenderError::UndefinedVariable {
                    origin: source.into(),
                    field: field.into(),
                    variable: name.into(),
                    defined: vars.defined(),
                })?;
            out.push_str(value);
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Substitutes variables in every string value and every map key, recursively; `field` is the
/// path of `v` in the spec, extended as it descends so that an error names the exact field.
fn substitute_value(
    v: &Value,
    vars: &Vars<'_>,
    source: &str,
    field: &str,
) -> Result<Value, RenderError> {
    Ok(match v {
        Value::String(s) => Value::String(substitute_str(s, vars, source, field)?),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| substitute_value(item, vars, source, &format!("{field}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => {
            let mut out = Map::new();
            for (k, item) in map {
                let at = format!("{field}.{k}");
                let key = substitute_str(k, vars, source, &at)?;
                let item = substitute_value(item, vars, source, &at)?;
                if out.insert(key.clone(), item).is_some() {
                    return Err(RenderError::DuplicateKey {
                        origin: source.into(),
                        field: at,
                        key,
                    });
                }
            }
            Value::Object(out)
        }
        other => other.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> SecurityBaselineSpec {
        serde_yaml::from_str(yaml).expect("test fixture")
    }

    const SELECTOR: &str =
        "namespaceSelector: {matchLabels: {opsec.x1642.dev/tenant-class: standard}}\n";

    fn render(yaml: &str) -> Result<Rendered, RenderError> {
        render_namespace(
            "base",
            &spec(&format!("{SELECTOR}{yaml}")),
            "acme-prod",
            "acme",
        )
    }

    fn object<'r>(r: &'r Rendered, kind: &str, name: &str) -> &'r RenderedObject {
        r.objects
            .iter()
            .find(|o| o.kind == kind && o.name == name)
            .unwrap_or_else(|| panic!("{kind}/{name} not rendered"))
    }

    #[test]
    fn empty_spec_renders_nothing() {
        let r = render("").expect("renders");
        assert!(r.objects.is_empty());
        assert!(r.namespace_labels.is_empty());
        assert!(r.namespace_patch().is_none());
        assert!(r.claims("base", 0).is_empty());
    }

    #[test]
    fn variables_in_nested_maps_lists_and_keys() {
        let r = render(
            r#"
templates:
- apiVersion: v1
  kind: ConfigMap
  metadata:
    name: ${tenant}-info
    labels: {team: "${tenant}"}
  data:
    tenant: "${tenant}"
    "${namespace}.conf": "ns=${namespace} baseline=${baseline}"
    nested: "$ not a variable, $$ neither"
- apiVersion: example.com/v1
  kind: Widget
  metadata: {name: w}
  spec:
    owners: ["${tenant}", {who: "${namespace}", "${tenant}-key": [1, true, "${baseline}"]}]
"#,
        )
        .expect("renders");
        let cm = object(&r, "ConfigMap", "acme-info");
        assert_eq!(cm.source, "template/0:ConfigMap/acme-info");
        assert_eq!(
            cm.object,
            json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": "acme-info",
                    "namespace": "acme-prod",
                    "labels": {
                        "team": "acme",
                        "app.kubernetes.io/managed-by": "opsec-operator",
                        "opsec.x1642.dev/baseline": "base",
                    },
                    "annotations": {"opsec.x1642.dev/source": "template/0:ConfigMap/acme-info"},
                },
                "data": {
                    "tenant": "acme",
                    "acme-prod.conf": "ns=acme-prod baseline=base",
                    "nested": "$ not a variable, $$ neither",
                },
            })
        );
        let w = object(&r, "Widget", "w");
        assert_eq!(
            w.object["spec"],
            json!({"owners": ["acme", {"who": "acme-prod", "acme-key": [1, true, "base"]}]})
        );
    }

    #[test]
    fn substitution_table() {
        let vars = Vars(vec![("namespace", "ns"), ("tenant", "t")]);
        let ok: &[(&str, &str)] = &[
            ("plain", "plain"),
            ("${tenant}", "t"),
            ("a-${tenant}-${namespace}-b", "a-t-ns-b"),
            ("$${tenant}", "${tenant}"),
            ("$${foo} and ${tenant}", "${foo} and t"),
            ("cost: $5", "cost: $5"),
            ("$", "$"),
            ("$$", "$$"),
            ("}{", "}{"),
            ("ünïcødé ${tenant} ✓", "ünïcødé t ✓"),
        ];
        for (input, want) in ok {
            assert_eq!(
                substitute_str(input, &vars, "src", "spec.x").as_deref(),
                Ok(*want),
                "{input}"
            );
        }
        assert!(matches!(
            substitute_str("x-${tenant", &vars, "src", "spec.x"),
            Err(RenderError::UnterminatedVariable { .. })
        ));
        assert!(matches!(
            substitute_str("${}", &vars, "src", "spec.x"),
            Err(RenderError::UndefinedVariable { variable, .. }) if variable.is_empty()
        ));
    }

    #[test]
    fn undefined_variable_names_it_and_the_template() {
        let err = render(
            "templates:\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: info}, data: {a: \"${foo}\"}}\n",
        )
        .expect_err("undefined variable");
        assert_eq!(
            err,
            RenderError::UndefinedVariable {
                origin: "template/0:ConfigMap/info".into(),
                field: "spec.templates[0].data.a".into(),
                variable: "foo".into(),
                defined: "${namespace}, ${tenant}, ${baseline}".into(),
            }
        );
        let msg = err.to_string();
        assert!(
            msg.contains("${foo}") && msg.contains("template/0:ConfigMap/info"),
            "{msg}"
        );
        // ${workload} is only defined for workload templates.
        let err = render(
            "templates:\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: \"${workload}\"}}\n",
        )
        .expect_err("undefined variable");
        assert!(err.to_string().contains("${workload}"), "{err}");
    }

    #[test]
    fn escape_yields_literal() {
        let r = render(
            "templates:\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: e}, data: {script: \"echo $${HOME} ${tenant}\"}}\n",
        )
        .expect("renders");
        assert_eq!(
            object(&r, "ConfigMap", "e").object["data"]["script"],
            "echo ${HOME} acme"
        );
    }

    #[test]
    fn key_collision_after_substitution_is_an_error() {
        let err = render(
            "templates:\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: c}, data: {acme: a, \"${tenant}\": b}}\n",
        )
        .expect_err("collision");
        assert!(
            matches!(err, RenderError::DuplicateKey { ref key, .. } if key == "acme"),
            "{err}"
        );
    }

    #[test]
    fn template_namespace_rules() {
        // Setting the target namespace (literally or by variable) is allowed.
        for ns in ["acme-prod", "${namespace}"] {
            let r = render(&format!(
                "templates:\n- {{apiVersion: v1, kind: ConfigMap, metadata: {{name: c, namespace: \"{ns}\"}}}}\n"
            ))
            .expect("renders");
            assert_eq!(r.objects[0].object["metadata"]["namespace"], "acme-prod");
        }
        let err = render(
            "templates:\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: c, namespace: other}}\n",
        )
        .expect_err("foreign namespace");
        assert_eq!(
            err,
            RenderError::ForeignNamespace {
                origin: "template/0:ConfigMap/c".into(),
                namespace: "other".into(),
                target: "acme-prod".into(),
            }
        );
    }

    #[test]
    fn invalid_templates_are_refused() {
        let cases: &[(&str, &str)] = &[
            (
                "{apiVersion: v1, kind: Namespace, metadata: {name: evil}}",
                "template/0:Namespace/evil: kind Namespace cannot be rendered",
            ),
            (
                "{apiVersion: rbac.authorization.k8s.io/v1, kind: ClusterRoleBinding, metadata: {name: x}}",
                "kind ClusterRoleBinding cannot",
            ),
            (
                "{apiVersion: v1, kind: \"${tenant}\", metadata: {name: x}}",
                "metadata.name",
            ),
            (
                "{apiVersion: v1, kind: ConfigMap, metadata: {}}",
                "template/0:ConfigMap/?: metadata.name",
            ),
            (
                "{kind: ConfigMap, metadata: {name: x}}",
                "apiVersion must be",
            ),
            ("{apiVersion: v1, metadata: {name: x}}", "kind must be"),
            ("{apiVersion: v1, kind: ConfigMap}", "metadata must be"),
            (
                "{apiVersion: v1, kind: ConfigMap, metadata: {name: x, labels: {a: 1}}}",
                "metadata.labels must be a map of strings",
            ),
            (
                "{apiVersion: v1, kind: ConfigMap, metadata: {name: x, annotations: [a]}}",
                "metadata.annotations must be",
            ),
        ];
        for (template, want) in cases {
            let yaml = format!("templates:\n- {template}\n");
            // A kind of "${tenant}" renders to kind "acme", which is fine: make that case fail on
            // the name instead so it still exercises substitution of kind.
            let yaml = yaml.replace("name: x}", "name: \"\"}");
            match render(&yaml) {
                Ok(r) => panic!("{template} rendered: {r:?}"),
                Err(err) => assert!(err.to_string().contains(want), "{template}: {err}"),
            }
        }
    }

    #[test]
    fn pod_security_labels_go_on_the_namespace() {
        let r = render(
            "controls:\n  podSecurity: {enforce: baseline, warn: privileged, version: v1.33}\n",
        )
        .expect("renders");
        assert!(r.objects.is_empty(), "PSA renders no object");
        let want: BTreeMap<String, String> = [
            ("pod-security.kubernetes.io/enforce", "baseline"),
            ("pod-security.kubernetes.io/enforce-version", "v1.33"),
            ("pod-security.kubernetes.io/audit", "restricted"),
            ("pod-security.kubernetes.io/audit-version", "v1.33"),
            ("pod-security.kubernetes.io/warn", "privileged"),
            ("pod-security.kubernetes.io/warn-version", "v1.33"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(r.namespace_labels, want);
        assert_eq!(
            r.namespace_patch(),
            Some(
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "acme-prod", "labels": want}})
            )
        );
        let claims = r.claims("base", 5);
        assert_eq!(claims.len(), 1);
        assert_eq!(claims[0].key, r.namespace_key());
        // Defaults: restricted everywhere, latest.
        let r = render("controls:\n  podSecurity: {}\n").expect("renders");
        assert_eq!(
            r.namespace_labels["pod-security.kubernetes.io/enforce"],
            "restricted"
        );
        assert_eq!(
            r.namespace_labels["pod-security.kubernetes.io/warn-version"],
            "latest"
        );
    }

    #[test]
    fn tenant_access_substitutes_groups() {
        let r = render(
            r#"
controls:
  tenantAccess:
    adminGroups: ["tenant:${tenant}:admins", "csp:oncall", "tenant:${tenant}:admins"]
    viewGroups: ["tenant:${tenant}:auditors"]
    viewRole: opsec-${tenant}-view
"#,
        )
        .expect("renders");
        let admins = object(&r, "RoleBinding", "opsec-tenant-admins");
        assert_eq!(admins.source, "control/tenantAccess");
        assert_eq!(
            admins.object["roleRef"],
            json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"})
        );
        assert_eq!(
            admins.object["subjects"],
            json!([
                {"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "tenant:acme:admins"},
                {"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "csp:oncall"},
            ])
        );
        let viewers = object(&r, "RoleBinding", "opsec-tenant-viewers");
        assert_eq!(viewers.object["roleRef"]["name"], "opsec-acme-view");
        assert_eq!(
            viewers.object["subjects"][0]["name"],
            "tenant:acme:auditors"
        );

        // Only view groups: no admin binding.
        let r = render("controls:\n  tenantAccess: {viewGroups: [\"t:${tenant}\"]}\n")
            .expect("renders");
        assert_eq!(r.objects.len(), 1);
        assert_eq!(r.objects[0].name, "opsec-tenant-viewers");

        let err = render("controls:\n  tenantAccess: {adminGroups: [\"${tenent}\"]}\n")
            .expect_err("typo");
        assert!(
            matches!(&err, RenderError::UndefinedVariable { origin, variable, .. } if origin == "control/tenantAccess" && variable == "tenent"),
            "{err}"
        );
    }

    #[test]
    fn network_policy_default_and_without_same_tenant() {
        let r = render("controls:\n  networkIsolation: {}\n").expect("renders");
        let np = object(&r, "NetworkPolicy", "opsec-isolation");
        assert_eq!(np.api_version, "networking.k8s.io/v1");
        assert_eq!(np.source, "control/networkIsolation");
        let tenant_peer =
            json!({"namespaceSelector": {"matchLabels": {"opsec.x1642.dev/tenant": "acme"}}});
        let dns = json!({
            "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}],
            "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
        });
        let world =
            json!({"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}, {"ipBlock": {"cidr": "::/0"}}]});
        assert_eq!(
            np.object["spec"],
            json!({
                "podSelector": {},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [{"from": [{"podSelector": {}}, tenant_peer]}],
                "egress": [{"to": [{"podSelector": {}}, tenant_peer]}, dns, world],
            })
        );

        let r = render(
            r#"
tenantLabel: example.com/customer
controls:
  networkIsolation:
    allowSameTenant: false
    allowDNS: false
    allowFromNamespaces: {matchLabels: {role: ingress}}
"#,
        )
        .expect("renders");
        let np = object(&r, "NetworkPolicy", "opsec-isolation");
        assert_eq!(
            np.object["spec"],
            json!({
                "podSelector": {},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [{"from": [
                    {"podSelector": {}},
                    {"namespaceSelector": {"matchLabels": {"role": "ingress"}}},
                ]}],
                "egress": [{"to": [{"podSelector": {}}]}, world],
            })
        );
        assert!(!np.object.to_string().contains("example.com/customer"));
    }

    #[test]
    fn quota_limits_and_service_account() {
        let r = render(
            r#"
controls:
  resourceQuota: {hard: {requests.cpu: "8", limits.memory: 32Gi, pods: "100"}}
  limitRange: {limits: [{type: Container, default: {cpu: 500m}, defaultRequest: {cpu: 100m}}]}
  serviceAccounts: {automountToken: false}
"#,
        )
        .expect("renders");
        let kinds: Vec<_> = r.objects.iter().map(RenderedObject::display_name).collect();
        assert_eq!(
            kinds,
            [
                "ResourceQuota/opsec-quota",
                "LimitRange/opsec-limits",
                "ServiceAccount/default"
            ]
        );
        let q = object(&r, "ResourceQuota", "opsec-quota");
        assert_eq!(
            q.object["spec"],
            json!({"hard": {"requests.cpu": "8", "limits.memory": "32Gi", "pods": "100"}})
        );
        assert!(q.prune);
        let l = object(&r, "LimitRange", "opsec-limits");
        assert_eq!(
            l.object["spec"]["limits"],
            json!([{"type": "Container", "default": {"cpu": "500m"}, "defaultRequest": {"cpu": "100m"}}])
        );
        let sa = object(&r, "ServiceAccount", "default");
        assert_eq!(sa.object["automountServiceAccountToken"], false);
        assert!(!sa.prune, "the default ServiceAccount is never deleted");
        for o in &r.objects {
            assert_eq!(o.object["metadata"]["namespace"], "acme-prod");
            assert_eq!(o.object["metadata"]["labels"][BASELINE_LABEL], "base");
            assert_eq!(
                o.object["metadata"]["labels"][MANAGED_BY_LABEL],
                "opsec-operator"
            );
            assert_eq!(
                o.object["metadata"]["annotations"][SOURCE_ANNOTATION],
                o.source
            );
        }
    }

    #[test]
    fn duplicates_across_controls_and_templates() {
        let err = render(
            r#"
controls:
  networkIsolation: {}
templates:
- {apiVersion: networking.k8s.io/v1, kind: NetworkPolicy, metadata: {name: opsec-isolation}, spec: {podSelector: {}}}
"#,
        )
        .expect_err("duplicate");
        assert!(
            matches!(&err, RenderError::Duplicate { first, second, .. }
                if first == "control/networkIsolation" && second == "template/0:NetworkPolicy/opsec-isolation"),
            "{err}"
        );
        // Same name after substitution, different apiVersion of one group.
        let err = render(
            r#"
templates:
- {apiVersion: example.com/v1, kind: Widget, metadata: {name: "${tenant}"}}
- {apiVersion: example.com/v2, kind: Widget, metadata: {name: acme}}
"#,
        )
        .expect_err("duplicate");
        assert!(err.to_string().contains("Widget/acme"), "{err}");
        // Same name, other kind: fine.
        render(
            "templates:\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: a}}\n- {apiVersion: v1, kind: Secret, metadata: {name: a}}\n",
        )
        .expect("different kinds");
    }

    #[test]
    fn output_order_is_deterministic() {
        let yaml = r#"
controls:
  serviceAccounts: {}
  tenantAccess: {adminGroups: [a], viewGroups: [b]}
  limitRange: {limits: [{type: Container}]}
  resourceQuota: {hard: {pods: "1"}}
  networkIsolation: {}
templates:
- {apiVersion: v1, kind: ConfigMap, metadata: {name: z}}
- {apiVersion: v1, kind: ConfigMap, metadata: {name: a}}
"#;
        let a = render(yaml).expect("renders");
        let b = render(yaml).expect("renders");
        assert_eq!(a, b);
        let names: Vec<_> = a.objects.iter().map(|o| o.source.clone()).collect();
        assert_eq!(
            names,
            [
                "control/networkIsolation",
                "control/resourceQuota",
                "control/limitRange",
                "control/tenantAccess",
                "control/tenantAccess",
                "control/serviceAccounts",
                "template/0:ConfigMap/z",
                "template/1:ConfigMap/a",
            ]
        );
    }

    #[test]
    fn baseline_name_must_fit_a_label() {
        let long = "b".repeat(64);
        let err = render_namespace(&long, &spec(SELECTOR), "ns", "t").expect_err("too long");
        assert!(matches!(err, RenderError::BaselineNameTooLong { .. }));
    }

    #[test]
    fn workload_templates() {
        let wt: WorkloadTemplate = serde_yaml::from_str(
            r#"
selector: {matchLabels: {opsec.x1642.dev/profile: web}}
templates:
- apiVersion: networking.k8s.io/v1
  kind: NetworkPolicy
  metadata: {name: "${workload}-web"}
  spec:
    podSelector: {matchLabels: {app: "${workload}"}}
    ingress: [{ports: [{port: 8080}]}]
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: "${workload}-info"}
  data: {kind: "${workloadKind}", where: "${tenant}/${namespace}", by: "${baseline}"}
"#,
        )
        .expect("fixture");
        let objs = render_workload("base", 0, &wt, "acme-prod", "acme", "Deployment", "shop")
            .expect("renders");
        assert_eq!(objs.len(), 2);
        assert_eq!(objs[0].name, "shop-web");
        assert_eq!(
            objs[0].source,
            "workload/Deployment/shop/template/0:NetworkPolicy/shop-web"
        );
        assert_eq!(
            objs[0].object["spec"]["podSelector"]["matchLabels"]["app"],
            "shop"
        );
        assert_eq!(
            objs[1].object["data"],
            json!({"kind": "Deployment", "where": "acme/acme-prod", "by": "base"})
        );

        let bad: WorkloadTemplate = serde_yaml::from_str(
            "selector: {matchLabels: {a: b}}\ntemplates: [{apiVersion: v1, kind: ConfigMap, metadata: {name: \"${replicas}\"}}]\n",
        )
        .expect("fixture");
        let err = render_workload("base", 0, &bad, "ns", "t", "StatefulSet", "db")
            .expect_err("undefined");
        assert!(
            matches!(&err, RenderError::UndefinedVariable { origin, variable, .. }
                if origin == "workload/StatefulSet/db/template/0:ConfigMap/${replicas}" && variable == "replicas"),
            "{err}"
        );

        // Two workloads, names without ${workload}: a duplicate in the namespace.
        let fixed: WorkloadTemplate = serde_yaml::from_str(
            "selector: {matchLabels: {a: b}}\ntemplates: [{apiVersion: v1, kind: ConfigMap, metadata: {name: shared}}]\n",
        )
        .expect("fixture");
        let mut all =
            render_workload("base", 0, &fixed, "ns", "t", "Deployment", "a").expect("renders");
        all.extend(
            render_workload("base", 0, &fixed, "ns", "t", "Deployment", "b").expect("renders"),
        );
        assert!(matches!(
            ensure_unique(&all),
            Err(RenderError::Duplicate { .. })
        ));
    }
}
