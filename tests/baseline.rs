//! The SecurityBaseline controller against the real API server: selection and tenant isolation,
//! rendering, drift reverted or reported, conflicts, pruning and migration, validation and
//! approval, deletion, and an idle check that writes nothing. Each test uses namespaces and a
//! tenant-class label value of its own, so the tests run in parallel against one operator.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use opsec_operator::api::baseline::SecurityBaselineStatus;
use opsec_operator::api::policy_report::{PolicyReportResult, PolicyResult};
use opsec_operator::api::{PolicyReport, SecurityBaseline};

const WAIT: Duration = Duration::from_secs(60);

async fn setup() -> Client {
    let client = common::client().await;
    common::install_crds();
    common::operator("baseline");
    client
}

/// Creates a baseline from YAML (metadata.name is given separately).
async fn create_baseline(client: &Client, name: &str, spec_yaml: &str) -> SecurityBaseline {
    let spec = serde_yaml::from_str(spec_yaml).expect("baseline spec fixture");
    let sb = SecurityBaseline::new(name, spec);
    Api::<SecurityBaseline>::all(client.clone())
        .create(&PostParams::default(), &sb)
        .await
        .expect("create baseline")
}

async fn status_until(
    client: &Client,
    name: &str,
    what: &str,
    check: impl Fn(&SecurityBaselineStatus) -> bool,
) -> SecurityBaselineStatus {
    let api = Api::<SecurityBaseline>::all(client.clone());
    common::eventually(WAIT, what, || async {
        let sb = api.get(name).await.ok()?;
        sb.status.filter(|s| check(s))
    })
    .await
}

fn condition<'a>(s: &'a SecurityBaselineStatus, type_: &str) -> Option<&'a str> {
    s.conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.as_str())
}

async fn tenant_ns(client: &Client, class: &str, tenant: &str) -> String {
    common::namespace(
        client,
        tenant,
        &[("opsec.x1642.dev/tenant", tenant), ("test-class", class)],
    )
    .await
}

async fn configmap(client: &Client, ns: &str, name: &str) -> Option<ConfigMap> {
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .expect("get configmap")
}

async fn delete_baseline(client: &Client, name: &str) {
    let api = Api::<SecurityBaseline>::all(client.clone());
    let _ = api.delete(name, &DeleteParams::default()).await;
    common::eventually(WAIT, "baseline deletion", || async {
        api.get_opt(name).await.ok()?.is_none().then_some(())
    })
    .await;
}

async fn events_of(client: &Client, baseline: &str) -> Vec<(String, String)> {
    let api: Api<k8s_openapi::api::events::v1::Event> = Api::all(client.clone());
    let list = api.list(&ListParams::default()).await.expect("list events");
    list.items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(baseline))
        .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
        .collect()
}

/// Switches a baseline to Audit mode and waits until a check has run in that mode.
async fn switch_to_audit(client: &Client, name: &str) {
    Api::<SecurityBaseline>::all(client.clone())
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"mode": "Audit"}})),
        )
        .await
        .unwrap();
    status_until(client, name, "audit observed", |s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.reason == "Audited")
    })
    .await;
}

fn spec(class: &str, extra: &str) -> String {
    format!("namespaceSelector: {{matchLabels: {{test-class: {class}}}}}\n{extra}")
}

const CONTROLS: &str = r#"
controls:
  networkIsolation: {}
  podSecurity: {enforce: restricted}
  resourceQuota: {hard: {pods: "50"}}
  tenantAccess: {adminGroups: ["tenant:${tenant}:admins"]}
templates:
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: tenant-info}
  data: {tenant: "${tenant}", namespace: "${namespace}", baseline: "${baseline}"}
"#;

#[tokio::test]
async fn every_control_and_template_lands_in_each_tenant_namespace_and_nowhere_else() {
    let client = setup().await;
    let class = common::unique("std");
    let a1 = tenant_ns(&client, &class, "acme").await;
    let a2 = tenant_ns(&client, &class, "acme").await;
    let other = tenant_ns(&client, &common::unique("other"), "globex").await;
    let name = common::unique("sbl");
    create_baseline(&client, &name, &spec(&class, CONTROLS)).await;

    let status = status_until(&client, &name, "2 compliant namespaces", |s| {
        s.namespaces.compliant == 2
    })
    .await;
    assert_eq!(status.namespaces.selected, 2);
    assert_eq!(condition(&status, "Ready"), Some("True"));
    assert_eq!(status.history.len(), 1, "the first revision is archived");
    assert!(
        status.history[0]
            .summary
            .contains("added NetworkPolicy/opsec-isolation"),
        "{:?}",
        status.history
    );

    for ns in [&a1, &a2] {
        let cm = configmap(&client, ns, "tenant-info")
            .await
            .expect("template rendered");
        let data = cm.data.clone().unwrap_or_default();
        assert_eq!(data.get("tenant").map(String::as_str), Some("acme"));
        assert_eq!(data.get("namespace"), Some(ns));
        assert_eq!(data.get("baseline"), Some(&name));
        assert_eq!(
            cm.labels()
                .get("app.kubernetes.io/managed-by")
                .map(String::as_str),
            Some("opsec-operator")
        );
        assert_eq!(cm.labels().get("opsec.x1642.dev/baseline"), Some(&name));
        let np = Api::<NetworkPolicy>::namespaced(client.clone(), ns)
            .get("opsec-isolation")
            .await
            .expect("network policy");
        assert!(np.spec.is_some());
        let rb = Api::<RoleBinding>::namespaced(client.clone(), ns)
            .get("opsec-tenant-admins")
            .await
            .expect("tenant rolebinding");
        assert_eq!(
            rb.subjects.unwrap_or_default()[0].name,
            "tenant:acme:admins"
        );
        let nsobj = Api::<Namespace>::all(client.clone()).get(ns).await.unwrap();
        assert_eq!(
            nsobj
                .labels()
                .get("pod-security.kubernetes.io/enforce")
                .map(String::as_str),
            Some("restricted")
        );
    }
    // Tenant isolation: another tenant's namespace never receives this baseline's objects.
    assert!(configmap(&client, &other, "tenant-info").await.is_none());
    let stamped = Api::<ConfigMap>::namespaced(client.clone(), &other)
        .list(&ListParams::default().labels(&format!("opsec.x1642.dev/baseline={name}")))
        .await
        .unwrap();
    assert!(stamped.items.is_empty());

    delete_baseline(&client, &name).await;
    for ns in [&a1, &a2, &other] {
        common::delete_namespace(&client, ns).await;
    }
}

#[tokio::test]
async fn a_deleted_object_comes_back_and_a_kubectl_edit_is_reverted_naming_the_editor() {
    let client = setup().await;
    let class = common::unique("drift");
    let ns = tenant_ns(&client, &class, "acme").await;
    let name = common::unique("sbl");
    create_baseline(&client, &name, &spec(&class, CONTROLS)).await;
    status_until(&client, &name, "compliant", |s| s.namespaces.compliant == 1).await;

    let cms = Api::<ConfigMap>::namespaced(client.clone(), &ns);
    cms.delete("tenant-info", &DeleteParams::default())
        .await
        .unwrap();
    common::eventually(WAIT, "tenant-info recreated", || async {
        configmap(&client, &ns, "tenant-info").await
    })
    .await;

    let nps = Api::<NetworkPolicy>::namespaced(client.clone(), &ns);
    let edit = || async {
        let edit = serde_json::json!({"spec": {"policyTypes": ["Ingress"]}});
        let as_kubectl = PatchParams {
            field_manager: Some("kubectl-edit".into()),
            ..Default::default()
        };
        nps.patch("opsec-isolation", &as_kubectl, &Patch::Merge(&edit))
            .await
            .unwrap();
    };
    edit().await;
    common::eventually(WAIT, "the edit reverted", || async {
        let np = nps.get("opsec-isolation").await.ok()?;
        (np.spec?.policy_types? == ["Ingress", "Egress"]).then_some(())
    })
    .await;
    let events = common::eventually(WAIT, "DriftReverted events", || async {
        let ev = events_of(&client, &name).await;
        let reverted: Vec<_> = ev
            .into_iter()
            .filter(|(r, _)| r == "DriftReverted")
            .collect();
        (reverted.len() >= 2).then_some(reverted)
    })
    .await;
    assert!(
        events
            .iter()
            .any(|(_, n)| n.contains("ConfigMap/tenant-info") && n.contains("deleted")),
        "{events:?}"
    );
    assert!(events.iter().any(|(_, n)| n.contains("NetworkPolicy/opsec-isolation") && n.contains("kubectl-edit")), "{events:?}");
    let status = status_until(&client, &name, "compliant again", |s| {
        s.namespaces.compliant == 1
    })
    .await;
    assert!(status.conflicts.is_empty(), "one edit is drift: {status:?}");

    // The editor takes the field back after the revert: now it fights the baseline, a conflict
    // naming it (the baseline still reverts).
    edit().await;
    let status = status_until(&client, &name, "a conflict with kubectl-edit", |s| {
        !s.conflicts.is_empty()
    })
    .await;
    let c = &status.conflicts[0];
    assert_eq!(c.object, "NetworkPolicy/opsec-isolation");
    assert_eq!(c.with, "fieldManager/kubectl-edit");
    assert!(c.fields.iter().any(|f| f == "/spec/policyTypes"), "{c:?}");
    assert_eq!(status.namespaces.conflicted, 1, "{status:?}");
    common::eventually(WAIT, "the take-back reverted", || async {
        let np = nps.get("opsec-isolation").await.ok()?;
        (np.spec?.policy_types? == ["Ingress", "Egress"]).then_some(())
    })
    .await;

    delete_baseline(&client, &name).await;
    common::delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn audit_mode_reports_drift_and_the_other_field_manager_without_reverting() {
    let client = setup().await;
    let class = common::unique("audit");
    let ns = tenant_ns(&client, &class, "acme").await;
    let name = common::unique("sbl");
    create_baseline(&client, &name, &spec(&class, CONTROLS)).await;
    status_until(&client, &name, "compliant", |s| s.namespaces.compliant == 1).await;
    // Switch to Audit, then edit a stamped object.
    switch_to_audit(&client, &name).await;
    let nps = Api::<NetworkPolicy>::namespaced(client.clone(), &ns);
    nps.patch(
        "opsec-isolation",
        &PatchParams {
            field_manager: Some("kubectl-edit".into()),
            ..Default::default()
        },
        &Patch::Merge(serde_json::json!({"spec": {"policyTypes": ["Ingress"]}})),
    )
    .await
    .unwrap();
    // The same edit Enforce reverts as drift is drift here too, its editor named; a conflict
    // is between baselines, or a fight over a revert.
    let status = status_until(&client, &name, "drift reported", |s| {
        s.namespaces.drifted == 1
    })
    .await;
    assert_eq!(status.namespaces.compliant, 0);
    assert_eq!(status.namespaces.conflicted, 0, "{status:?}");
    assert!(status.conflicts.is_empty(), "{status:?}");
    let drifted = status
        .non_compliant
        .iter()
        .find(|n| n.namespace == ns && n.object == "NetworkPolicy/opsec-isolation")
        .unwrap_or_else(|| panic!("{status:?}"));
    assert_eq!(drifted.reason, "Drifted");
    assert!(
        drifted.message.contains("/spec/policyTypes") && drifted.message.contains("kubectl-edit"),
        "{drifted:?}"
    );
    // Audit never reverts.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let np = nps.get("opsec-isolation").await.unwrap();
    assert_eq!(
        np.spec.unwrap().policy_types.unwrap(),
        vec!["Ingress".to_string()]
    );

    delete_baseline(&client, &name).await;
    common::delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn a_relabelled_namespace_moves_to_the_other_baseline_with_no_leftovers() {
    let client = setup().await;
    let (gold, silver) = (common::unique("gold"), common::unique("silver"));
    let ns = tenant_ns(&client, &gold, "acme").await;
    let (g, s) = (common::unique("sbl-g"), common::unique("sbl-s"));
    let tpl = |v: &str| {
        format!(
            "templates:\n- {{apiVersion: v1, kind: ConfigMap, metadata: {{name: {v}}}, data: {{class: {v}}}}}\n"
        )
    };
    create_baseline(&client, &g, &spec(&gold, &tpl("gold-config"))).await;
    create_baseline(&client, &s, &spec(&silver, &tpl("silver-config"))).await;
    common::eventually(WAIT, "gold config", || async {
        configmap(&client, &ns, "gold-config").await
    })
    .await;

    let nsapi = Api::<Namespace>::all(client.clone());
    nsapi
        .patch(
            &ns,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"labels": {"test-class": silver}}})),
        )
        .await
        .unwrap();
    common::eventually(WAIT, "silver config and no gold config", || async {
        let silver = configmap(&client, &ns, "silver-config").await;
        let gold = configmap(&client, &ns, "gold-config").await;
        (silver.is_some() && gold.is_none()).then_some(())
    })
    .await;
    let events = common::eventually(WAIT, "a Pruned event on the gold baseline", || async {
        let ev = events_of(&client, &g).await;
        ev.iter()
            .any(|(r, n)| r == "Pruned" && n.contains("gold-config"))
            .then_some(ev)
    })
    .await;
    assert!(!events.is_empty());

    delete_baseline(&client, &g).await;
    delete_baseline(&client, &s).await;
    common::delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn workload_configuration_follows_the_workload_to_its_new_namespace() {
    let client = setup().await;
    let class = common::unique("wl");
    let (ns1, ns2) = (
        tenant_ns(&client, &class, "acme").await,
        tenant_ns(&client, &class, "acme").await,
    );
    let name = common::unique("sbl");
    let extra = r#"
workloadTemplates:
- selector: {matchLabels: {opsec.x1642.dev/profile: web}}
  templates:
  - {apiVersion: v1, kind: ConfigMap, metadata: {name: "${workload}-web-config"}, data: {kind: "${workloadKind}"}}
"#;
    create_baseline(&client, &name, &spec(&class, extra)).await;
    let deploy = |ns: &str| -> Deployment {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "shop", "namespace": ns},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "shop"}},
                "template": {
                    "metadata": {"labels": {"app": "shop", "opsec.x1642.dev/profile": "web"}},
                    "spec": {"containers": [{"name": "shop", "image": "registry.example/shop:1.0"}]}
                }
            }
        }))
        .unwrap()
    };
    Api::<Deployment>::namespaced(client.clone(), &ns1)
        .create(&PostParams::default(), &deploy(&ns1))
        .await
        .unwrap();
    let cm = common::eventually(WAIT, "config beside the workload", || async {
        configmap(&client, &ns1, "shop-web-config").await
    })
    .await;
    assert_eq!(
        cm.data.unwrap().get("kind").map(String::as_str),
        Some("Deployment")
    );

    // Move: delete it here, create it there.
    Api::<Deployment>::namespaced(client.clone(), &ns1)
        .delete("shop", &DeleteParams::default())
        .await
        .unwrap();
    Api::<Deployment>::namespaced(client.clone(), &ns2)
        .create(&PostParams::default(), &deploy(&ns2))
        .await
        .unwrap();
    common::eventually(WAIT, "config moved with the workload", || async {
        let there = configmap(&client, &ns2, "shop-web-config").await;
        let here = configmap(&client, &ns1, "shop-web-config").await;
        (there.is_some() && here.is_none()).then_some(())
    })
    .await;
    let events = common::eventually(WAIT, "ConfigurationMigrated events", || async {
        let ev = events_of(&client, &name).await;
        ev.iter()
            .any(|(r, n)| r == "ConfigurationMigrated" && n.contains(&ns2))
            .then_some(ev)
    })
    .await;
    let note = events
        .iter()
        .find(|(r, n)| r == "ConfigurationMigrated" && n.contains(&ns2))
        .unwrap();
    assert!(note.1.contains("after the workload appeared"), "{note:?}");

    delete_baseline(&client, &name).await;
    common::delete_namespace(&client, &ns1).await;
    common::delete_namespace(&client, &ns2).await;
}

#[tokio::test]
async fn equal_priorities_apply_neither_and_name_each_other_while_a_higher_priority_wins() {
    let client = setup().await;
    let class = common::unique("conf");
    let shared = |v: &str, prio: i32| {
        format!(
            "priority: {prio}\ntemplates:\n- {{apiVersion: v1, kind: ConfigMap, metadata: {{name: shared}}, data: {{from: {v}}}}}\n"
        )
    };
    let (a, b) = (common::unique("sbl-a"), common::unique("sbl-b"));
    create_baseline(&client, &a, &spec(&class, &shared("a", 0))).await;
    create_baseline(&client, &b, &spec(&class, &shared("b", 0))).await;
    // Both exist before they select a namespace. (A baseline that arrives after another
    // applied the object finds it in place: the tie is reported, the object is not removed.)
    let ns = tenant_ns(&client, &class, "acme").await;
    let sa = status_until(&client, &a, "a conflicted", |s| {
        condition(s, "Conflicted") == Some("True")
    })
    .await;
    let sb = status_until(&client, &b, "b conflicted", |s| {
        condition(s, "Conflicted") == Some("True")
    })
    .await;
    assert_eq!(sa.conflicts[0].with, format!("SecurityBaseline/{b}"));
    assert_eq!(sb.conflicts[0].with, format!("SecurityBaseline/{a}"));
    assert!(
        configmap(&client, &ns, "shared").await.is_none(),
        "neither applies at equal priority"
    );

    Api::<SecurityBaseline>::all(client.clone())
        .patch(
            &b,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"priority": 5}})),
        )
        .await
        .unwrap();
    let cm = common::eventually(WAIT, "the higher priority applies", || async {
        configmap(&client, &ns, "shared").await
    })
    .await;
    assert_eq!(
        cm.data.clone().unwrap().get("from").map(String::as_str),
        Some("b")
    );
    assert_eq!(cm.labels().get("opsec.x1642.dev/baseline"), Some(&b));

    delete_baseline(&client, &a).await;
    delete_baseline(&client, &b).await;
    common::delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn a_baseline_that_starts_a_conflict_is_seen_by_both_sides_at_once() {
    let client = setup().await;
    let class = common::unique("conf-now");
    let ns = tenant_ns(&client, &class, "acme").await;
    // A long check interval: only the new baseline's announcement can make the first one look.
    let shared = |v: &str| {
        format!(
            "checkInterval: 30m\ntemplates:\n- {{apiVersion: v1, kind: ConfigMap, metadata: {{name: shared}}, data: {{from: {v}}}}}\n"
        )
    };
    let (a, b) = (common::unique("sbl-a"), common::unique("sbl-b"));
    create_baseline(&client, &a, &spec(&class, &shared("a"))).await;
    status_until(&client, &a, "a compliant", |s| s.namespaces.compliant == 1).await;
    let started = std::time::Instant::now();
    create_baseline(&client, &b, &spec(&class, &shared("b"))).await;
    let mut seen = Vec::new();
    for (me, other) in [(&a, &b), (&b, &a)] {
        let s = status_until(&client, me, "the conflict seen", |s| {
            condition(s, "Conflicted") == Some("True")
        })
        .await;
        seen.push(started.elapsed());
        assert_eq!(s.conflicts[0].with, format!("SecurityBaseline/{other}"));
        assert_eq!(s.conflicts[0].object, "ConfigMap/shared");
    }
    eprintln!(
        "conflict seen by the first baseline after {:?}, by the new one after {:?}",
        seen[0], seen[1]
    );

    // Deleting one lets the other apply at once, too.
    delete_baseline(&client, &b).await;
    status_until(&client, &a, "a alone again", |s| {
        condition(s, "Conflicted") == Some("False") && s.namespaces.compliant == 1
    })
    .await;
    delete_baseline(&client, &a).await;
    common::delete_namespace(&client, &ns).await;
}

/// A baseline with one good ConfigMap template in a fresh tenant namespace, compliant; then
/// `templates` (a revision the API server refuses) patched in, until `Validated=False`. Returns
/// (namespace, baseline, the first status, the held status, the Validated message).
async fn refused_revision(
    client: &Client,
    prefix: &str,
    templates: serde_json::Value,
) -> (
    String,
    String,
    SecurityBaselineStatus,
    SecurityBaselineStatus,
    String,
) {
    let class = common::unique(prefix);
    let ns = tenant_ns(client, &class, "acme").await;
    let name = common::unique("sbl");
    create_baseline(client, &name, &spec(&class, "templates:\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: good}, data: {v: \"1\"}}\n")).await;
    let first = status_until(client, &name, "compliant", |s| s.namespaces.compliant == 1).await;
    Api::<SecurityBaseline>::all(client.clone())
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"templates": templates}})),
        )
        .await
        .unwrap();
    let status = status_until(client, &name, "Validated=False", |s| {
        condition(s, "Validated") == Some("False")
    })
    .await;
    let message = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Validated")
        .map(|c| c.message.clone())
        .unwrap_or_default();
    (ns, name, first, status, message)
}

#[tokio::test]
async fn a_revision_the_api_server_refuses_is_not_rolled_out_and_the_previous_stays() {
    let client = setup().await;
    // A ConfigMap key with a space: valid for the CRD schema, refused by the API server.
    let (ns, name, first, status, message) = refused_revision(&client, "val", serde_json::json!([
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "good"}, "data": {"v": "2"}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "bad"}, "data": {"not a key": "x"}}
    ]))
    .await;
    assert!(message.contains("ConfigMap/bad"), "{message}");
    assert!(
        message.contains("not a key"),
        "the server's message is carried: {message}"
    );
    assert_eq!(
        status.revision, first.revision,
        "the applied revision is unchanged"
    );
    assert!(status.pending_revision.is_some());
    let good = configmap(&client, &ns, "good").await.unwrap();
    assert_eq!(
        good.data.unwrap().get("v").map(String::as_str),
        Some("1"),
        "nothing of the refused revision landed"
    );
    assert!(configmap(&client, &ns, "bad").await.is_none());

    delete_baseline(&client, &name).await;
    common::delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn a_template_with_an_unknown_field_is_refused_before_anything_is_created() {
    let client = setup().await;
    // `dataa` is no field of a ConfigMap: the apply would refuse it, so the dry-run of the
    // object (missing, so validated as a create) must refuse it too rather than drop it.
    let (ns, name, _, _, message) = refused_revision(&client, "typo", serde_json::json!([
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "good"}, "data": {"v": "1"}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "typo"}, "dataa": {"v": "1"}}
    ]))
    .await;
    assert!(
        message.contains("ConfigMap/typo") && message.contains("dataa"),
        "the unknown field is named: {message}"
    );
    assert!(configmap(&client, &ns, "typo").await.is_none());

    delete_baseline(&client, &name).await;
    common::delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn a_new_revision_waits_for_the_approval_annotation() {
    let client = setup().await;
    let class = common::unique("appr");
    let ns = tenant_ns(&client, &class, "acme").await;
    let name = common::unique("sbl");
    create_baseline(&client, &name, &spec(&class, "rollout: {requireApproval: true}\ntemplates:\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: gated}, data: {v: \"1\"}}\n")).await;
    let status = status_until(&client, &name, "awaiting approval", |s| {
        condition(s, "AwaitingApproval") == Some("True")
    })
    .await;
    let pending = status.pending_revision.clone().expect("pendingRevision");
    assert!(pending.starts_with("sha256:"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        configmap(&client, &ns, "gated").await.is_none(),
        "nothing lands before approval"
    );

    let approve = serde_json::json!({"metadata": {"annotations": {"opsec.x1642.dev/approve-revision": pending}}});
    Api::<SecurityBaseline>::all(client.clone())
        .patch(&name, &PatchParams::default(), &Patch::Merge(approve))
        .await
        .unwrap();
    common::eventually(WAIT, "approved revision applied", || async {
        configmap(&client, &ns, "gated").await
    })
    .await;
    let status = status_until(&client, &name, "revision recorded", |s| {
        s.revision.as_deref() == Some(pending.as_str())
    })
    .await;
    assert_eq!(condition(&status, "AwaitingApproval"), Some("False"));
    assert!(status.pending_revision.is_none());

    delete_baseline(&client, &name).await;
    common::delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn deleting_a_baseline_removes_what_it_stamped_and_nothing_else() {
    let client = setup().await;
    let class = common::unique("del");
    let ns = tenant_ns(&client, &class, "acme").await;
    let name = common::unique("sbl");
    // The tenant's own ConfigMap, not stamped: must survive.
    let own: ConfigMap = serde_json::from_value(
        serde_json::json!({"metadata": {"name": "tenant-own"}, "data": {"k": "v"}}),
    )
    .unwrap();
    Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &own)
        .await
        .unwrap();
    create_baseline(&client, &name, &spec(&class, CONTROLS)).await;
    status_until(&client, &name, "compliant", |s| s.namespaces.compliant == 1).await;
    delete_baseline(&client, &name).await;
    assert!(configmap(&client, &ns, "tenant-info").await.is_none());
    assert!(
        Api::<NetworkPolicy>::namespaced(client.clone(), &ns)
            .get_opt("opsec-isolation")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        configmap(&client, &ns, "tenant-own").await.is_some(),
        "an object the baseline did not stamp is never touched"
    );
    assert!(configmap(&client, &ns, "kube-root-ca.crt").await.is_some());
    common::delete_namespace(&client, &ns).await;
}

/// The Pod Security labels of a namespace, and whether the operator's record is on it.
async fn pod_security(client: &Client, ns: &str) -> (BTreeMap<String, String>, bool) {
    let n = Api::<Namespace>::all(client.clone()).get(ns).await.unwrap();
    let labels = n
        .labels()
        .iter()
        .filter(|(k, _)| k.starts_with("pod-security.kubernetes.io/"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let recorded = n
        .annotations()
        .keys()
        .any(|k| k.starts_with("opsec.x1642.dev/pod-security"));
    (labels, recorded)
}

#[tokio::test]
async fn a_baseline_takes_its_pod_security_labels_off_and_puts_back_what_it_found() {
    let client = setup().await;
    let class = common::unique("psa");
    let found: BTreeMap<String, String> = [
        ("pod-security.kubernetes.io/enforce", "privileged"),
        ("pod-security.kubernetes.io/warn", "baseline"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    // One namespace with Pod Security labels of the tenant's own, one with none.
    let mut labels = vec![
        ("opsec.x1642.dev/tenant", "acme"),
        ("test-class", class.as_str()),
    ];
    labels.extend(found.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let labelled = common::namespace(&client, "psa-own", &labels).await;
    let bare = tenant_ns(&client, &class, "acme").await;
    let name = common::unique("sbl");
    create_baseline(&client, &name, &spec(&class, CONTROLS)).await;
    status_until(&client, &name, "compliant", |s| s.namespaces.compliant == 2).await;
    for ns in [&labelled, &bare] {
        let (psa, recorded) = pod_security(&client, ns).await;
        assert_eq!(
            psa["pod-security.kubernetes.io/enforce"], "restricted",
            "{ns}: {psa:?}"
        );
        assert!(recorded, "{ns}");
    }

    // The namespace leaves the baseline's selection: its own labels come back, nothing else.
    Api::<Namespace>::all(client.clone())
        .patch(
            &labelled,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"labels": {"test-class": "elsewhere"}}})),
        )
        .await
        .unwrap();
    let (psa, recorded) = common::eventually(WAIT, "the labels found put back", || async {
        let (psa, recorded) = pod_security(&client, &labelled).await;
        (psa == found && !recorded).then_some((psa, recorded))
    })
    .await;
    assert_eq!((psa, recorded), (found.clone(), false));

    // The baseline is deleted: a namespace that had none is left with none.
    let third = tenant_ns(&client, &class, "acme").await;
    status_until(&client, &name, "compliant", |s| s.namespaces.compliant == 2).await;
    // Someone else rewrites the record of a third namespace to name weaker labels, even under
    // the operator's own field-manager name (anyone may choose it): a record the operator did
    // not sign is no record, and is never put back.
    let nsapi = Api::<Namespace>::all(client.clone());
    let (labels_now, _) = pod_security(&client, &third).await;
    let forged = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": third, "labels": labels_now, "annotations": {
            "opsec.x1642.dev/pod-security-by": name,
            "opsec.x1642.dev/pod-security-before": "{\"pod-security.kubernetes.io/enforce\":\"privileged\"}"}}});
    nsapi
        .patch(
            &third,
            &PatchParams::apply("opsec-operator").force(),
            &Patch::Apply(&forged),
        )
        .await
        .unwrap();
    common::eventually(WAIT, "the record taken back by the operator", || async {
        let n = Api::<Namespace>::all(client.clone())
            .get(&third)
            .await
            .ok()?;
        let before = n
            .annotations()
            .get("opsec.x1642.dev/pod-security-before")?
            .clone();
        (!before.contains("privileged")).then_some(())
    })
    .await;
    delete_baseline(&client, &name).await;
    let (psa, recorded) = pod_security(&client, &bare).await;
    assert!(psa.is_empty() && !recorded, "{psa:?} {recorded}");
    assert_eq!(pod_security(&client, &labelled).await.0, found);
    let (psa, _) = pod_security(&client, &third).await;
    assert_ne!(
        psa.get("pod-security.kubernetes.io/enforce")
            .map(String::as_str),
        Some("privileged"),
        "a forged record was put back: {psa:?}"
    );
    for ns in [&labelled, &bare, &third] {
        common::delete_namespace(&client, ns).await;
    }
}

#[tokio::test]
async fn system_namespaces_are_left_alone_unless_listed_on_purpose() {
    let client = setup().await;
    let class = common::unique("sys");
    let nsapi = Api::<Namespace>::all(client.clone());
    let label = |v: Option<&str>| serde_json::json!({"metadata": {"labels": {"test-class": v, "opsec.x1642.dev/tenant": v.map(|_| "platform")}}});
    nsapi
        .patch(
            "kube-public",
            &PatchParams::default(),
            &Patch::Merge(label(Some(&class))),
        )
        .await
        .unwrap();
    let name = common::unique("sbl");
    create_baseline(
        &client,
        &name,
        &spec(
            &class,
            "templates:\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: sys-probe}}\n",
        ),
    )
    .await;
    let status = status_until(&client, &name, "observed", |s| {
        s.observed_generation.is_some()
    })
    .await;
    assert_eq!(
        status.namespaces.selected, 0,
        "kube-public is excluded by default"
    );
    assert!(
        configmap(&client, "kube-public", "sys-probe")
            .await
            .is_none()
    );

    Api::<SecurityBaseline>::all(client.clone())
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"excludeNamespaces": ["kube-system"]}})),
        )
        .await
        .unwrap();
    common::eventually(
        WAIT,
        "kube-public reached once listed on purpose",
        || async { configmap(&client, "kube-public", "sys-probe").await },
    )
    .await;

    delete_baseline(&client, &name).await;
    assert!(
        configmap(&client, "kube-public", "sys-probe")
            .await
            .is_none()
    );
    nsapi
        .patch(
            "kube-public",
            &PatchParams::default(),
            &Patch::Merge(label(None)),
        )
        .await
        .unwrap();
}

/// A baseline with `extra` over one tenant namespace of its own, once its check reports that
/// namespace failed: the client, the namespace, the baseline's name and its status.
async fn one_failed_namespace(
    prefix: &str,
    extra: &str,
) -> (Client, String, String, SecurityBaselineStatus) {
    let client = setup().await;
    let class = common::unique(prefix);
    let ns = tenant_ns(&client, &class, "acme").await;
    let name = common::unique("sbl");
    create_baseline(&client, &name, &spec(&class, extra)).await;
    let status = status_until(&client, &name, "failed namespace", |s| {
        s.namespaces.failed == 1
    })
    .await;
    (client, ns, name, status)
}

#[tokio::test]
async fn a_kind_the_cluster_does_not_serve_is_reported_and_the_rest_still_applies() {
    let extra = "templates:\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: fine}}\n- {apiVersion: example.com/v1, kind: Widget, metadata: {name: w}}\n";
    let (client, ns, name, status) = one_failed_namespace("kind", extra).await;
    let entry = status
        .non_compliant
        .iter()
        .find(|n| n.object == "Widget/w")
        .expect("Widget reported");
    assert!(entry.message.contains("not served"), "{entry:?}");
    assert_eq!(condition(&status, "Ready"), Some("False"));
    assert!(
        configmap(&client, &ns, "fine").await.is_some(),
        "the rest still applies"
    );

    delete_baseline(&client, &name).await;
    common::delete_namespace(&client, &ns).await;
}

/// What the schema cannot see (a variable deep in a template's body) is judged by the operator:
/// the namespace is reported Failed with the exact field, once as a Warning Event, and nothing
/// of the broken revision is applied there.
#[tokio::test]
async fn an_undefined_variable_in_a_template_body_names_its_field() {
    let extra = "templates:\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: greeting}, data: {hello: \"welcome, ${tenent}\"}}\n";
    let (client, ns, name, status) = one_failed_namespace("var", extra).await;
    let entry = status
        .non_compliant
        .iter()
        .find(|n| n.namespace == ns)
        .expect("the namespace is reported");
    assert!(
        entry
            .message
            .contains("spec.templates[0].data.hello: undefined variable ${tenent}"),
        "{entry:?}"
    );
    assert_eq!(condition(&status, "Ready"), Some("False"));
    assert!(configmap(&client, &ns, "greeting").await.is_none());
    let events = common::eventually(WAIT, "a RenderFailed Event", || async {
        let e = events_of(&client, &name).await;
        e.iter()
            .any(|(reason, note)| {
                reason == "RenderFailed" && note.contains("spec.templates[0].data.hello")
            })
            .then_some(e)
    })
    .await;
    assert_eq!(
        events.iter().filter(|(r, _)| r == "RenderFailed").count(),
        1,
        "one Event, not one per check: {events:?}"
    );

    delete_baseline(&client, &name).await;
    common::delete_namespace(&client, &ns).await;
}

/// Between periodic checks a change re-checks only its own namespace; the status must still
/// account for every namespace: what was found elsewhere stays reported until it is fixed.
#[tokio::test]
async fn findings_in_other_namespaces_stay_reported_while_one_namespace_changes() {
    let client = setup().await;
    let class = common::unique("scoped");
    let mut namespaces = Vec::new();
    for tenant in ["t-one", "t-two", "t-three"] {
        namespaces.push(tenant_ns(&client, &class, tenant).await);
    }
    let name = common::unique("sbl");
    let template = "templates:\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: tenant-info}, data: {tenant: \"${tenant}\"}}\n";
    // No periodic check during the test: only changes trigger checks.
    create_baseline(
        &client,
        &name,
        &spec(&class, &format!("checkInterval: 1h\n{template}")),
    )
    .await;
    status_until(&client, &name, "compliant", |s| s.namespaces.compliant == 3).await;
    switch_to_audit(&client, &name).await;
    let edit = |ns: String, tenant: &'static str| {
        let client = client.clone();
        async move {
            Api::<ConfigMap>::namespaced(client, &ns)
                .patch(
                    "tenant-info",
                    &PatchParams {
                        field_manager: Some("kubectl-edit".into()),
                        ..Default::default()
                    },
                    &Patch::Merge(serde_json::json!({"data": {"tenant": tenant}})),
                )
                .await
                .unwrap();
        }
    };
    let reported = |s: &SecurityBaselineStatus| -> Vec<String> {
        let mut v: Vec<String> = s
            .non_compliant
            .iter()
            .map(|n| n.namespace.clone())
            .collect();
        v.sort();
        v.dedup();
        v
    };
    let (one, two) = (namespaces[0].clone(), namespaces[1].clone());
    edit(one.clone(), "mallory").await;
    status_until(&client, &name, "drift in the first namespace", |s| {
        reported(s) == vec![one.clone()]
    })
    .await;
    edit(two.clone(), "mallory").await;
    let s = status_until(&client, &name, "drift in two namespaces", |s| {
        s.namespaces.compliant == 1
    })
    .await;
    assert_eq!(reported(&s), vec![one.clone(), two.clone()]);
    assert_eq!(s.namespaces.selected, 3);
    // The first namespace is put right by hand: only the second stays reported.
    edit(one.clone(), "t-one").await;
    let s = status_until(&client, &name, "first namespace fixed", |s| {
        s.namespaces.compliant == 2
    })
    .await;
    assert_eq!(reported(&s), vec![two.clone()]);
    // A new namespace joins (Audit: its template is missing); the second stays reported.
    let four = tenant_ns(&client, &class, "t-four").await;
    let s = status_until(&client, &name, "a fourth namespace selected", |s| {
        s.namespaces.selected == 4
    })
    .await;
    assert_eq!(s.namespaces.compliant, 2, "{s:?}");
    let mut want = vec![four.clone(), two.clone()];
    want.sort();
    assert_eq!(reported(&s), want);

    delete_baseline(&client, &name).await;
    for ns in namespaces.iter().chain([&four]) {
        common::delete_namespace(&client, ns).await;
    }
}

#[tokio::test]
async fn an_idle_periodic_check_makes_no_writes() {
    let client = setup().await;
    let class = common::unique("idle");
    let ns = tenant_ns(&client, &class, "acme").await;
    let name = common::unique("sbl");
    create_baseline(
        &client,
        &name,
        &spec(&class, &format!("checkInterval: 10s\n{CONTROLS}")),
    )
    .await;
    status_until(&client, &name, "compliant", |s| s.namespaces.compliant == 1).await;
    // Let the first rounds settle, then take a snapshot of every resourceVersion involved.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let snapshot = versions(&client, &ns, &name).await;
    // Two periodic checks later, nothing has been written.
    tokio::time::sleep(Duration::from_secs(22)).await;
    let after = versions(&client, &ns, &name).await;
    assert_eq!(snapshot, after, "an idle check wrote to the cluster");

    delete_baseline(&client, &name).await;
    common::delete_namespace(&client, &ns).await;
}

async fn versions(client: &Client, ns: &str, baseline: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let sb = Api::<SecurityBaseline>::all(client.clone())
        .get(baseline)
        .await
        .unwrap();
    out.insert(
        format!("SecurityBaseline/{baseline}"),
        sb.resource_version().unwrap_or_default(),
    );
    let n = Api::<Namespace>::all(client.clone()).get(ns).await.unwrap();
    out.insert(
        format!("Namespace/{ns}"),
        n.resource_version().unwrap_or_default(),
    );
    for cm in Api::<ConfigMap>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap()
    {
        out.insert(
            format!("ConfigMap/{}", cm.name_any()),
            cm.resource_version().unwrap_or_default(),
        );
    }
    for np in Api::<NetworkPolicy>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap()
    {
        out.insert(
            format!("NetworkPolicy/{}", np.name_any()),
            np.resource_version().unwrap_or_default(),
        );
    }
    for rb in Api::<RoleBinding>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap()
    {
        out.insert(
            format!("RoleBinding/{}", rb.name_any()),
            rb.resource_version().unwrap_or_default(),
        );
    }
    for r in Api::<PolicyReport>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap()
    {
        out.insert(
            format!("PolicyReport/{}", r.name_any()),
            r.resource_version().unwrap_or_default(),
        );
    }
    out
}

async fn report(client: &Client, ns: &str, baseline: &str) -> Option<PolicyReport> {
    Api::<PolicyReport>::namespaced(client.clone(), ns)
        .get_opt(&format!("opsec-{baseline}"))
        .await
        .expect("get policyreport")
}

/// Whether a report has a pass for each of the [`RULES`].
fn all_pass(r: &PolicyReport) -> bool {
    r.spec.results.len() == RULES.len()
        && r.spec
            .results
            .iter()
            .all(|x| x.result == Some(PolicyResult::Pass))
}

/// Waits until `baseline`'s report in `ns` has a pass for each of the [`RULES`].
async fn passing_report(client: &Client, ns: &str, baseline: &str, what: &str) -> PolicyReport {
    common::eventually(WAIT, what, || async {
        report(client, ns, baseline).await.filter(all_pass)
    })
    .await
}

/// The result of `rule` in a report.
fn rule_result<'a>(r: &'a PolicyReport, rule: &str) -> Option<&'a PolicyReportResult> {
    r.spec
        .results
        .iter()
        .find(|x| x.rule.as_deref() == Some(rule))
}

const RULES: [&str; 5] = [
    "control/podSecurity",
    "control/networkIsolation",
    "control/resourceQuota",
    "control/tenantAccess",
    "template/0:ConfigMap/tenant-info",
];

#[tokio::test]
async fn each_selected_namespace_gets_a_policy_report_that_fails_what_audit_finds_drifted() {
    let client = setup().await;
    let class = common::unique("polr");
    let ns = tenant_ns(&client, &class, "acme").await;
    let name = common::unique("sbl");
    create_baseline(&client, &name, &spec(&class, CONTROLS)).await;
    status_until(&client, &name, "compliant", |s| s.namespaces.compliant == 1).await;

    let r = passing_report(
        &client,
        &ns,
        &name,
        "a PolicyReport with a pass per control and template",
    )
    .await;
    let labels = r.labels();
    assert_eq!(
        labels
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("opsec-operator")
    );
    assert_eq!(labels.get("opsec.x1642.dev/baseline"), Some(&name));
    for rule in RULES {
        let x = rule_result(&r, rule).unwrap_or_else(|| panic!("no result {rule}: {r:#?}"));
        assert_eq!(x.policy, name);
        assert_eq!(x.source.as_deref(), Some("opsec-operator"));
        assert_eq!(x.category.as_deref(), Some("X.1642 8.5.3"));
        assert!(x.timestamp.is_some_and(|t| t.seconds > 0), "{x:?}");
        assert!(!x.resources.is_empty(), "{x:?}");
    }
    let summary = r.spec.summary.expect("summary");
    assert_eq!((summary.pass, summary.fail, summary.error), (5, 0, 0));
    let np = rule_result(&r, "control/networkIsolation").unwrap();
    assert_eq!(np.resources[0].kind.as_deref(), Some("NetworkPolicy"));
    assert_eq!(np.resources[0].name.as_deref(), Some("opsec-isolation"));
    // kubectl sees it by its short name, with the upstream columns.
    let (ok, out, err) = common::kubectl(&["get", "polr", "-n", &ns]);
    assert!(ok, "kubectl get polr: {err}");
    assert!(
        out.contains(&format!("opsec-{name}")) && out.contains("PASS"),
        "{out}"
    );

    // Audit mode, then a kubectl edit: the result of that control fails, the others still pass.
    switch_to_audit(&client, &name).await;
    Api::<NetworkPolicy>::namespaced(client.clone(), &ns)
        .patch(
            "opsec-isolation",
            &PatchParams {
                field_manager: Some("kubectl-edit".into()),
                ..Default::default()
            },
            &Patch::Merge(serde_json::json!({"spec": {"policyTypes": ["Ingress"]}})),
        )
        .await
        .unwrap();
    let r = common::eventually(WAIT, "the networkIsolation result fails", || async {
        let r = report(&client, &ns, &name).await?;
        (rule_result(&r, "control/networkIsolation")?.result == Some(PolicyResult::Fail))
            .then_some(r)
    })
    .await;
    let np = rule_result(&r, "control/networkIsolation").unwrap();
    assert!(
        np.message
            .as_deref()
            .unwrap_or_default()
            .contains("kubectl-edit"),
        "{np:?}"
    );
    for rule in RULES.iter().filter(|r| **r != "control/networkIsolation") {
        assert_eq!(
            rule_result(&r, rule).unwrap().result,
            Some(PolicyResult::Pass),
            "{rule}"
        );
    }
    let summary = r.spec.summary.expect("summary");
    assert_eq!((summary.pass, summary.fail), (4, 1));

    delete_baseline(&client, &name).await;
    assert!(
        report(&client, &ns, &name).await.is_none(),
        "the report goes with the baseline"
    );
    common::delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn a_namespace_that_stops_matching_loses_its_policy_report() {
    let client = setup().await;
    let class = common::unique("polr-sel");
    let (stays, leaves) = (
        tenant_ns(&client, &class, "acme").await,
        tenant_ns(&client, &class, "acme").await,
    );
    let name = common::unique("sbl");
    // Audit and no prune: reports still follow the selection (they are the operator's own).
    create_baseline(
        &client,
        &name,
        &spec(
            &class,
            "mode: Audit\nprune: false\ntemplates:\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: info}}\n",
        ),
    )
    .await;
    for ns in [&stays, &leaves] {
        let r = common::eventually(WAIT, "a report in each selected namespace", || async {
            report(&client, ns, &name).await
        })
        .await;
        let x = rule_result(&r, "template/0:ConfigMap/info").expect("template result");
        assert_eq!(
            x.result,
            Some(PolicyResult::Fail),
            "Audit: the ConfigMap is missing"
        );
        assert!(
            x.message
                .as_deref()
                .unwrap_or_default()
                .contains("does not exist")
        );
    }

    Api::<Namespace>::all(client.clone())
        .patch(
            &leaves,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"labels": {"test-class": "elsewhere"}}})),
        )
        .await
        .unwrap();
    common::eventually(
        WAIT,
        "the report of the deselected namespace deleted",
        || async {
            report(&client, &leaves, &name)
                .await
                .is_none()
                .then_some(())
        },
    )
    .await;
    assert!(report(&client, &stays, &name).await.is_some());

    delete_baseline(&client, &name).await;
    assert!(report(&client, &stays, &name).await.is_none());
    common::delete_namespace(&client, &stays).await;
    common::delete_namespace(&client, &leaves).await;
}

/// The report is the operator's own: a hand edit of its results is written back, and a deleted
/// report comes back.
#[tokio::test]
async fn a_policy_report_edited_or_deleted_by_hand_is_written_back() {
    let client = setup().await;
    let class = common::unique("polr-own");
    let ns = tenant_ns(&client, &class, "acme").await;
    let name = common::unique("sbl");
    create_baseline(&client, &name, &spec(&class, CONTROLS)).await;
    let written = passing_report(&client, &ns, &name, "a report with a pass per rule").await;

    let reports: Api<PolicyReport> = Api::namespaced(client.clone(), &ns);
    let mut results = serde_json::to_value(&written.spec.results).unwrap();
    results[0]["result"] = "fail".into();
    reports
        .patch(
            &written.name_any(),
            &PatchParams {
                field_manager: Some("kubectl-edit".into()),
                ..Default::default()
            },
            &Patch::Merge(serde_json::json!({"results": results})),
        )
        .await
        .unwrap();
    let back = passing_report(&client, &ns, &name, "the edited report written back").await;
    assert_ne!(
        back.resource_version(),
        written.resource_version(),
        "written again"
    );

    reports
        .delete(&written.name_any(), &DeleteParams::default())
        .await
        .unwrap();
    let recreated = common::eventually(WAIT, "the deleted report recreated", || async {
        report(&client, &ns, &name)
            .await
            .filter(|r| r.uid() != written.uid() && all_pass(r))
    })
    .await;
    assert_eq!(recreated.spec.summary.map(|s| s.pass), Some(5));

    delete_baseline(&client, &name).await;
    common::delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn the_leading_operator_is_ready_once_its_controller_caches_are_synced() {
    let _client = setup().await;
    let port = common::operator("baseline");
    let body = common::eventually(WAIT, "/readyz to answer 200", || async move {
        let out = std::process::Command::new("curl")
            .args([
                "-s",
                "-w",
                " %{http_code}",
                &format!("http://127.0.0.1:{port}/readyz"),
            ])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.ends_with(" 200").then_some(text)
    })
    .await;
    assert!(body.starts_with("leading"), "{body}");
}
