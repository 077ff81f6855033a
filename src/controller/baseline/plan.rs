//! What one SecurityBaseline should have in the cluster right now, computed from plain data
//! (the namespaces, the workloads, every baseline): selection, rendering, workload templates and
//! the resolution of claims between baselines. Pure, so unit tested without a cluster.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;

use super::events::BaselineEvent;
use crate::api::baseline::SecurityBaselineSpec;
use crate::baseline::{
    Claim, ObjectKey, POD_SECURITY_BEFORE_ANNOTATION, POD_SECURITY_BY_ANNOTATION,
    POD_SECURITY_SIGNATURE_ANNOTATION, PSA_LABEL_PREFIX, RenderedObject, Resolution, Selection,
    render_namespace, render_workload, resolve, select_namespace, workload_matches,
};
use crate::controller::kit::Reason;

/// A namespace as the plan sees it.
#[derive(Clone, Debug, Default)]
pub struct NamespaceInfo {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// The operator's own annotations on it ([`POD_SECURITY_BY_ANNOTATION`],
    /// [`POD_SECURITY_BEFORE_ANNOTATION`]), only while the operator's apply owns them (a value
    /// anyone else wrote is no record); no other annotation is kept.
    pub annotations: BTreeMap<String, String>,
    /// The version these were read at: a release is conditional on it.
    pub resource_version: Option<String>,
}

/// The Pod Security labels of `labels`.
fn pod_security_labels(labels: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    labels
        .iter()
        .filter(|(k, _)| k.starts_with(PSA_LABEL_PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The Namespace apply body of baseline `me`'s Pod Security labels on `ns`, with what the
/// namespace held before: the record a baseline already keeps there (a baseline took over from
/// another, which kept it), else the Pod Security labels it holds now (no baseline set them).
pub fn with_record(mut body: serde_json::Value, ns: &NamespaceInfo, me: &str) -> serde_json::Value {
    let before = match ns.annotations.get(POD_SECURITY_BY_ANNOTATION) {
        Some(_) => ns
            .annotations
            .get(POD_SECURITY_BEFORE_ANNOTATION)
            .cloned()
            .unwrap_or_else(|| "{}".into()),
        None => serde_json::to_string(&pod_security_labels(&ns.labels)).unwrap_or_default(),
    };
    body["metadata"]["annotations"] = serde_json::json!({
        POD_SECURITY_BY_ANNOTATION: me,
        POD_SECURITY_BEFORE_ANNOTATION: before,
    });
    body
}

/// The bytes a Pod Security record's signature covers: the namespace (a record copied to another
/// namespace does not verify there), the baseline and the labels before it.
fn record_message(namespace: &str, by: &str, before: &str) -> Vec<u8> {
    format!("opsec.x1642.dev/pod-security-record\n{namespace}\n{by}\n{before}").into_bytes()
}

/// Signs the record in the Namespace apply `body` of `namespace` (from [`with_record`]) with
/// the operator's `key`, adding the signature annotation.
pub fn sign_record(body: &mut serde_json::Value, namespace: &str, key: &ed25519_dalek::SigningKey) {
    use base64::Engine as _;
    use ed25519_dalek::Signer as _;
    let annotations = &body["metadata"]["annotations"];
    let (Some(by), Some(before)) = (
        annotations[POD_SECURITY_BY_ANNOTATION].as_str(),
        annotations[POD_SECURITY_BEFORE_ANNOTATION].as_str(),
    ) else {
        return;
    };
    let signature = key.sign(&record_message(namespace, by, before));
    let encoded = base64::engine::general_purpose::STANDARD.encode(signature.to_bytes());
    body["metadata"]["annotations"][POD_SECURITY_SIGNATURE_ANNOTATION] =
        serde_json::Value::String(encoded);
}

/// Keeps `ns`'s Pod Security record only if one of the operator's `trusted` keys signed it for
/// this namespace; otherwise the record is dropped (as if absent: never put back).
pub fn keep_signed_record(ns: &mut NamespaceInfo, trusted: &[ed25519_dalek::VerifyingKey]) {
    use base64::Engine as _;
    let get = |k: &str| ns.annotations.get(k).map(String::as_str);
    let signed = match (
        get(POD_SECURITY_BY_ANNOTATION),
        get(POD_SECURITY_BEFORE_ANNOTATION),
        get(POD_SECURITY_SIGNATURE_ANNOTATION),
    ) {
        (Some(by), Some(before), Some(sig)) => base64::engine::general_purpose::STANDARD
            .decode(sig)
            .ok()
            .and_then(|b| ed25519_dalek::Signature::from_slice(&b).ok())
            .is_some_and(|sig| {
                let message = record_message(&ns.name, by, before);
                trusted
                    .iter()
                    .any(|k| k.verify_strict(&message, &sig).is_ok())
            }),
        _ => false,
    };
    if !signed {
        ns.annotations.clear();
    }
}

/// What to put back on `ns` when baseline `me` stops setting its Pod Security labels: `None`
/// when `me` did not set them (another baseline, or none); else the labels recorded before it,
/// Pod Security labels only (a record is never trusted to name any other label).
pub fn put_back(ns: &NamespaceInfo, me: &str) -> Option<BTreeMap<String, String>> {
    if ns
        .annotations
        .get(POD_SECURITY_BY_ANNOTATION)
        .map(String::as_str)
        != Some(me)
    {
        return None;
    }
    let recorded: BTreeMap<String, String> = ns
        .annotations
        .get(POD_SECURITY_BEFORE_ANNOTATION)
        .and_then(|r| serde_json::from_str(r).ok())
        .unwrap_or_default();
    Some(pod_security_labels(&recorded))
}

/// The merge patch that releases `ns` from baseline `me` in one conditional write: its Pod
/// Security labels become those recorded before it ([`put_back`]; the others removed), the
/// record goes, and `metadata.resourceVersion` makes it fail if the namespace changed since it
/// was read (another baseline took the labels over meanwhile); with the labels it puts back.
/// `None` when `me` did not set them.
pub fn release_patch(
    ns: &NamespaceInfo,
    me: &str,
) -> Option<(serde_json::Value, BTreeMap<String, String>)> {
    let before = put_back(ns, me)?;
    let mut labels = serde_json::Map::new();
    for k in pod_security_labels(&ns.labels).keys() {
        labels.insert(k.clone(), serde_json::Value::Null);
    }
    for (k, v) in &before {
        labels.insert(k.clone(), serde_json::Value::String(v.clone()));
    }
    let patch = serde_json::json!({"metadata": {
        "resourceVersion": ns.resource_version,
        "labels": labels,
        "annotations": {POD_SECURITY_BY_ANNOTATION: null, POD_SECURITY_BEFORE_ANNOTATION: null,
            POD_SECURITY_SIGNATURE_ANNOTATION: null},
    }});
    Some((patch, before))
}

/// A Deployment, StatefulSet or DaemonSet as the plan sees it.
#[derive(Clone, Debug)]
pub struct WorkloadInfo {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub pod_labels: BTreeMap<String, String>,
    pub created: Option<Timestamp>,
}

/// A baseline as the plan sees it.
#[derive(Clone, Copy, Debug)]
pub struct BaselineRef<'a> {
    pub name: &'a str,
    pub spec: &'a SecurityBaselineSpec,
}

/// What one baseline applies to one namespace.
#[derive(Clone, Debug, Default)]
pub struct NamespacePlan {
    pub namespace: String,
    pub tenant: String,
    /// Objects this baseline won (or alone claims): apply and check them.
    pub objects: Vec<RenderedObject>,
    /// Server-side apply body for the namespace's Pod Security labels, when this baseline won them.
    pub namespace_labels: Option<serde_json::Value>,
    /// Workloads whose configuration this baseline renders here: (kind/name, creation time).
    pub workloads: Vec<(String, Option<Timestamp>)>,
    /// Objects this baseline renders but may not apply (a tie, or a higher priority wins them):
    /// listed in [`Plan::contested`], reported in the PolicyReport.
    pub withheld: Vec<RenderedObject>,
    /// Whether this baseline renders Pod Security labels here but may not apply them.
    pub namespace_labels_withheld: bool,
}

/// A claim this baseline could not apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Contested {
    pub key: ObjectKey,
    /// The other baselines: tied (`tie`) or the winner.
    pub with: Vec<String>,
    pub tie: bool,
}

/// Why a selected namespace has no plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureReason {
    /// It has no label naming its tenant.
    MissingTenant,
    /// A selector of the baseline is invalid.
    InvalidSelector,
    /// A template does not render there.
    RenderFailed,
}

impl FailureReason {
    /// The reason as findings and Events show it.
    pub fn as_str(self) -> &'static str {
        self.event().as_str()
    }

    /// The Event announcing it.
    pub fn event(self) -> BaselineEvent {
        match self {
            Self::MissingTenant => BaselineEvent::MissingTenant,
            Self::InvalidSelector => BaselineEvent::InvalidSelector,
            Self::RenderFailed => BaselineEvent::RenderFailed,
        }
    }
}

/// A namespace selected but not renderable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unplanned {
    pub namespace: String,
    pub reason: FailureReason,
    pub message: String,
}

/// Why one baseline's rendering of one namespace failed.
#[derive(Debug, thiserror::Error)]
enum RenderFailure {
    #[error(transparent)]
    Render(#[from] crate::baseline::RenderError),
    #[error(transparent)]
    Selector(#[from] crate::baseline::SelectorError),
}

/// Everything one baseline should do.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    pub namespaces: Vec<NamespacePlan>,
    /// Namespaces selected but not renderable.
    pub failed: Vec<Unplanned>,
    /// Objects claimed but not ours to apply (tie or lost to a higher priority).
    pub contested: Vec<Contested>,
    /// Keys this baseline claims in any way (applied or contested): never pruned by it.
    pub claimed: BTreeSet<ObjectKey>,
    /// Keys other baselines won: never pruned by this one even if labelled as its own.
    pub others_own: BTreeSet<ObjectKey>,
}

impl Plan {
    /// Every (apiVersion, kind) this baseline applies.
    pub fn kinds(&self) -> BTreeSet<(String, String)> {
        self.namespaces
            .iter()
            .flat_map(|n| {
                n.objects
                    .iter()
                    .map(|o| (o.api_version.clone(), o.kind.clone()))
            })
            .collect()
    }

    /// Adds the plan of other namespaces (plans are per namespace, so a plan of all namespaces
    /// is the plans of its parts put together).
    pub fn absorb(&mut self, other: Plan) {
        self.namespaces.extend(other.namespaces);
        self.failed.extend(other.failed);
        self.contested.extend(other.contested);
        self.claimed.extend(other.claimed);
        self.others_own.extend(other.others_own);
    }
}

/// One baseline's rendering of one namespace, with its claims.
struct Rendering {
    objects: Vec<RenderedObject>,
    namespace_labels: Option<serde_json::Value>,
    workloads: Vec<(String, Option<Timestamp>)>,
    claims: Vec<Claim>,
}

fn render(
    b: BaselineRef<'_>,
    ns: &NamespaceInfo,
    tenant: &str,
    workloads: &[&WorkloadInfo],
) -> Result<Rendering, RenderFailure> {
    let rendered = render_namespace(b.name, b.spec, &ns.name, tenant)?;
    let mut claims = rendered.claims(b.name, b.spec.priority);
    let namespace_labels = rendered.namespace_patch();
    let mut objects = rendered.objects;
    let mut covered = Vec::new();
    for (wi, wt) in b.spec.workload_templates.iter().enumerate() {
        for w in workloads {
            if !workload_matches(wt, &w.pod_labels)? {
                continue;
            }
            let extra = render_workload(b.name, wi, wt, &ns.name, tenant, &w.kind, &w.name)?;
            for o in &extra {
                claims.push(Claim {
                    baseline: b.name.to_string(),
                    priority: b.spec.priority,
                    key: o.key(),
                });
            }
            objects.extend(extra);
            covered.push((format!("{}/{}", w.kind, w.name), w.created));
        }
    }
    crate::baseline::ensure_unique(&objects)?;
    Ok(Rendering {
        objects,
        namespace_labels,
        workloads: covered,
        claims,
    })
}

/// The plan of baseline `me` given every baseline (`me` included), namespace and workload.
pub fn plan(
    me: BaselineRef<'_>,
    baselines: &[BaselineRef<'_>],
    namespaces: &[NamespaceInfo],
    workloads: &[WorkloadInfo],
) -> Plan {
    let mut by_namespace: BTreeMap<&str, Vec<&WorkloadInfo>> = BTreeMap::new();
    for w in workloads {
        by_namespace
            .entry(w.namespace.as_str())
            .or_default()
            .push(w);
    }
    let mut out = Plan::default();
    for ns in namespaces {
        let tenant = match select_namespace(me.spec, &ns.name, &ns.labels) {
            Ok(Selection::Selected { tenant }) => tenant,
            Ok(Selection::NotSelected) | Ok(Selection::Excluded) => continue,
            Ok(Selection::MissingTenant) => {
                let msg = format!(
                    "namespace has no {} label naming its tenant",
                    me.spec.tenant_label
                );
                out.failed.push(Unplanned {
                    namespace: ns.name.clone(),
                    reason: FailureReason::MissingTenant,
                    message: msg,
                });
                continue;
            }
            Err(e) => {
                out.failed.push(Unplanned {
                    namespace: ns.name.clone(),
                    reason: FailureReason::InvalidSelector,
                    message: e.to_string(),
                });
                continue;
            }
        };
        let ws = by_namespace
            .get(ns.name.as_str())
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let mine = match render(me, ns, &tenant, ws) {
            Ok(r) => r,
            Err(e) => {
                out.failed.push(Unplanned {
                    namespace: ns.name.clone(),
                    reason: FailureReason::RenderFailed,
                    message: e.to_string(),
                });
                continue;
            }
        };
        // Other baselines that select this namespace compete for the same objects.
        let mut claims = mine.claims.clone();
        for other in baselines.iter().filter(|b| b.name != me.name) {
            if let Ok(Selection::Selected { tenant }) =
                select_namespace(other.spec, &ns.name, &ns.labels)
                && let Ok(r) = render(*other, ns, &tenant, ws)
            {
                claims.extend(r.claims);
            }
        }
        let resolution = resolve(claims);
        out.others_own.extend(
            resolution
                .winners
                .iter()
                .filter(|(_, w)| w.as_str() != me.name)
                .map(|(k, _)| k.clone()),
        );
        let mine_keys: BTreeSet<ObjectKey> = mine.claims.iter().map(|c| c.key.clone()).collect();
        out.claimed.extend(mine_keys.iter().cloned());
        record_contested(&mut out, &resolution, me.name, &mine_keys);

        let (objects, withheld) = mine
            .objects
            .into_iter()
            .partition(|o| resolution.may_apply(me.name, &o.key()));
        let rendered_labels = mine.namespace_labels.is_some();
        let namespace_labels = mine.namespace_labels.filter(|patch| {
            crate::baseline::ObjectKey::from_object(patch)
                .map(|k| resolution.may_apply(me.name, &k))
                .unwrap_or(false)
        });
        let namespace_labels_withheld = rendered_labels && namespace_labels.is_none();
        let namespace_labels = namespace_labels.map(|body| with_record(body, ns, me.name));
        out.namespaces.push(NamespacePlan {
            namespace: ns.name.clone(),
            tenant,
            objects,
            namespace_labels,
            workloads: mine.workloads,
            withheld,
            namespace_labels_withheld,
        });
    }
    out
}

fn record_contested(out: &mut Plan, resolution: &Resolution, me: &str, mine: &BTreeSet<ObjectKey>) {
    for c in resolution.conflicts_of(me) {
        if mine.contains(&c.key) {
            out.contested.push(Contested {
                key: c.key.clone(),
                with: c.others(me).into_iter().map(String::from).collect(),
                tie: true,
            });
        }
    }
    for o in resolution.overridden.iter().filter(|o| o.baseline == me) {
        out.contested.push(Contested {
            key: o.key.clone(),
            with: vec![o.by.clone()],
            tie: false,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> SecurityBaselineSpec {
        serde_yaml::from_str(yaml).expect("spec fixture")
    }

    fn baseline<'a>(name: &'a str, spec: &'a SecurityBaselineSpec) -> BaselineRef<'a> {
        BaselineRef { name, spec }
    }

    fn ns(name: &str, labels: &[(&str, &str)]) -> NamespaceInfo {
        NamespaceInfo {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            annotations: Default::default(),
            resource_version: None,
        }
    }

    #[test]
    fn pod_security_labels_found_are_recorded_and_put_back_and_nothing_else() {
        let body = serde_json::json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "t1", "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}});
        // The tenant's own Pod Security labels are recorded; other labels are not.
        let mut t1 = ns(
            "t1",
            &[
                ("pod-security.kubernetes.io/enforce", "privileged"),
                ("team", "a"),
            ],
        );
        let applied = with_record(body.clone(), &t1, "gold");
        let ann = &applied["metadata"]["annotations"];
        assert_eq!(ann[POD_SECURITY_BY_ANNOTATION], "gold");
        assert_eq!(
            ann[POD_SECURITY_BEFORE_ANNOTATION],
            r#"{"pod-security.kubernetes.io/enforce":"privileged"}"#
        );
        assert_eq!(applied["metadata"]["labels"], body["metadata"]["labels"]);
        // Once applied, the record is kept as it is, by this baseline or one taking over.
        t1.labels.insert(
            "pod-security.kubernetes.io/enforce".into(),
            "restricted".into(),
        );
        for (k, v) in ann.as_object().unwrap() {
            t1.annotations.insert(k.clone(), v.as_str().unwrap().into());
        }
        for me in ["gold", "platinum"] {
            let again = with_record(body.clone(), &t1, me);
            assert_eq!(
                again["metadata"]["annotations"][POD_SECURITY_BEFORE_ANNOTATION],
                ann[POD_SECURITY_BEFORE_ANNOTATION]
            );
        }
        // Put back only by the baseline that set them, and only Pod Security labels.
        let back = put_back(&t1, "gold").unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back["pod-security.kubernetes.io/enforce"], "privileged");
        assert!(put_back(&t1, "platinum").is_none());
        assert!(put_back(&ns("t2", &[]), "gold").is_none());
        t1.annotations.insert(
            POD_SECURITY_BEFORE_ANNOTATION.into(),
            r#"{"opsec.x1642.dev/tenant":"victim","pod-security.kubernetes.io/warn":"baseline"}"#
                .into(),
        );
        let back = put_back(&t1, "gold").unwrap();
        assert_eq!(
            back.keys().collect::<Vec<_>>(),
            ["pod-security.kubernetes.io/warn"]
        );
        // A namespace that had none gets none back; an unreadable record puts nothing back.
        let fresh = with_record(body.clone(), &ns("t3", &[]), "gold");
        assert_eq!(
            fresh["metadata"]["annotations"][POD_SECURITY_BEFORE_ANNOTATION],
            "{}"
        );
        t1.annotations
            .insert(POD_SECURITY_BEFORE_ANNOTATION.into(), "not json".into());
        assert!(put_back(&t1, "gold").unwrap().is_empty());
    }

    #[test]
    fn only_a_record_the_operator_signed_for_its_namespace_is_trusted() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
        let other = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]);
        let trusted = [key.verifying_key()];
        let body = serde_json::json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "t1", "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}});
        let t1 = ns("t1", &[("pod-security.kubernetes.io/enforce", "baseline")]);
        let signed_by = |k: &ed25519_dalek::SigningKey, for_ns: &str| {
            let mut b = with_record(body.clone(), &t1, "gold");
            sign_record(&mut b, for_ns, k);
            let mut info = ns("t1", &[]);
            for (k, v) in b["metadata"]["annotations"].as_object().unwrap() {
                info.annotations
                    .insert(k.clone(), v.as_str().unwrap().into());
            }
            info
        };
        let mut good = signed_by(&key, "t1");
        keep_signed_record(&mut good, &trusted);
        assert_eq!(good.annotations.len(), 3, "kept");
        // Another key, a record signed for another namespace, a changed record, none at all.
        let mut forged = signed_by(&other, "t1");
        let mut copied = signed_by(&key, "t2");
        let mut changed = signed_by(&key, "t1");
        changed.annotations.insert(
            POD_SECURITY_BEFORE_ANNOTATION.into(),
            r#"{"pod-security.kubernetes.io/enforce":"privileged"}"#.into(),
        );
        let mut unsigned = signed_by(&key, "t1");
        unsigned
            .annotations
            .remove(POD_SECURITY_SIGNATURE_ANNOTATION);
        for (what, info) in [
            ("another key", &mut forged),
            ("another namespace", &mut copied),
            ("changed", &mut changed),
            ("unsigned", &mut unsigned),
        ] {
            keep_signed_record(info, &trusted);
            assert!(info.annotations.is_empty(), "{what}");
            assert!(put_back(info, "gold").is_none(), "{what}");
        }
    }

    const QUOTA: &str = r#"
namespaceSelector: {matchLabels: {class: standard}}
controls: {resourceQuota: {hard: {pods: "10"}}}
"#;

    #[test]
    fn selects_renders_and_reports_missing_tenants() {
        let s = spec(QUOTA);
        let me = BaselineRef {
            name: "a",
            spec: &s,
        };
        let namespaces = [
            ns(
                "t1",
                &[("class", "standard"), ("opsec.x1642.dev/tenant", "acme")],
            ),
            ns("t2", &[("class", "standard")]),
            ns(
                "other",
                &[("class", "premium"), ("opsec.x1642.dev/tenant", "acme")],
            ),
            ns(
                "kube-system",
                &[("class", "standard"), ("opsec.x1642.dev/tenant", "sys")],
            ),
        ];
        let p = plan(me, &[me], &namespaces, &[]);
        assert_eq!(p.namespaces.len(), 1);
        assert_eq!(p.namespaces[0].namespace, "t1");
        assert_eq!(p.namespaces[0].tenant, "acme");
        assert_eq!(p.namespaces[0].objects.len(), 1);
        assert_eq!(p.failed.len(), 1);
        assert_eq!(
            (p.failed[0].namespace.as_str(), p.failed[0].reason.as_str()),
            ("t2", "MissingTenant")
        );
    }

    #[test]
    fn plans_of_parts_absorbed_equal_the_plan_of_the_whole() {
        let low = spec(QUOTA);
        let mut high = spec(QUOTA);
        high.priority = 10;
        let (a, b) = (baseline("a", &low), baseline("b", &high));
        let namespaces: Vec<NamespaceInfo> = (0..7)
            .map(|i| {
                let tenant = format!("t{i}");
                if i == 3 {
                    ns(&format!("n{i}"), &[("class", "standard")])
                } else {
                    ns(
                        &format!("n{i}"),
                        &[("class", "standard"), ("opsec.x1642.dev/tenant", &tenant)],
                    )
                }
            })
            .collect();
        let whole = plan(a, &[a, b], &namespaces, &[]);
        let mut parts = Plan::default();
        for chunk in namespaces.chunks(3) {
            parts.absorb(plan(a, &[a, b], chunk, &[]));
        }
        let names = |p: &Plan| -> Vec<String> {
            p.namespaces.iter().map(|n| n.namespace.clone()).collect()
        };
        assert_eq!(names(&parts), names(&whole));
        assert_eq!(parts.failed, whole.failed);
        assert_eq!(parts.contested, whole.contested);
        assert_eq!(parts.claimed, whole.claimed);
        assert_eq!(parts.others_own, whole.others_own);
        assert_eq!(whole.others_own.len(), 6, "b wins every quota");
        assert_eq!(whole.failed.len(), 1);
    }

    #[test]
    fn higher_priority_wins_and_ties_apply_nobody() {
        let low = spec(QUOTA);
        let mut high = spec(QUOTA);
        high.priority = 10;
        let namespaces = [ns(
            "t1",
            &[("class", "standard"), ("opsec.x1642.dev/tenant", "acme")],
        )];
        let (a, b) = (baseline("a", &low), baseline("b", &high));
        let pa = plan(a, &[a, b], &namespaces, &[]);
        let pb = plan(b, &[a, b], &namespaces, &[]);
        assert!(
            pa.namespaces[0].objects.is_empty(),
            "the lower priority applies nothing"
        );
        assert_eq!(
            pa.namespaces[0].withheld.len(),
            1,
            "but reports what it withholds"
        );
        assert_eq!(
            pa.contested,
            vec![Contested {
                key: pb.namespaces[0].objects[0].key(),
                with: vec!["b".into()],
                tie: false
            }]
        );
        assert!(pa.others_own.contains(&pb.namespaces[0].objects[0].key()));
        assert_eq!(pb.namespaces[0].objects.len(), 1);

        let same = spec(QUOTA);
        let c = BaselineRef {
            name: "c",
            spec: &same,
        };
        let pa = plan(a, &[a, c], &namespaces, &[]);
        let pc = plan(c, &[a, c], &namespaces, &[]);
        assert!(pa.namespaces[0].objects.is_empty() && pc.namespaces[0].objects.is_empty());
        assert_eq!(pa.contested[0].with, vec!["c".to_string()]);
        assert_eq!(pc.contested[0].with, vec!["a".to_string()]);
        assert!(pa.contested[0].tie);
    }

    #[test]
    fn workload_templates_follow_matching_workloads_only() {
        let s = spec(
            r#"
namespaceSelector: {matchLabels: {class: standard}}
workloadTemplates:
- selector: {matchLabels: {profile: web}}
  templates:
  - {apiVersion: v1, kind: ConfigMap, metadata: {name: "${workload}-cfg"}, data: {kind: "${workloadKind}"}}
"#,
        );
        let me = BaselineRef {
            name: "a",
            spec: &s,
        };
        let namespaces = [
            ns(
                "t1",
                &[("class", "standard"), ("opsec.x1642.dev/tenant", "acme")],
            ),
            ns(
                "t2",
                &[("class", "standard"), ("opsec.x1642.dev/tenant", "acme")],
            ),
        ];
        let web = WorkloadInfo {
            kind: "Deployment".into(),
            namespace: "t2".into(),
            name: "shop".into(),
            pod_labels: [("profile".to_string(), "web".to_string())].into(),
            created: None,
        };
        let db = WorkloadInfo {
            name: "db".into(),
            pod_labels: BTreeMap::new(),
            ..web.clone()
        };
        let p = plan(me, &[me], &namespaces, &[web, db]);
        assert!(p.namespaces[0].objects.is_empty());
        let t2 = &p.namespaces[1];
        assert_eq!(t2.objects.len(), 1);
        assert_eq!(t2.objects[0].name, "shop-cfg");
        assert_eq!(t2.workloads, vec![("Deployment/shop".to_string(), None)]);
    }
}
