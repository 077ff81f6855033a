//! Restores of what tenants really run, against a real API server (with its controller manager)
//! and the operator's backup controllers: `tests/data/apps/shop.yaml`, a dozen Deployments and
//! their Services (ClusterIP, NodePort, LoadBalancer, headless), a StatefulSet with volume claim
//! templates, ServiceAccounts, an Argo CD-style set of Roles and RoleBindings, NetworkPolicies,
//! ConfigMaps and Secrets of several types with binary and multi-byte data, an Ingress, an HPA, a
//! PodDisruptionBudget, a Job and a CronJob. Every object is compared after a restore, and a
//! restore that cannot be done whole leaves the namespace as it was.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::backups::{annotate, backup_in, keys_secret, policy, policy_condition, restore};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use opsec_operator::api::backup::{BackupPhase, RestorePhase};
use opsec_operator::api::{Backup, Restore};
use serde_json::{Value, json};

/// The kinds the shop is made of (and the cluster adds to: the StatefulSet's claims, the
/// namespace's `default` ServiceAccount), as kubectl names them.
const SHOP_KINDS: &str = "serviceaccounts,secrets,configmaps,persistentvolumeclaims,roles,\
rolebindings,services,networkpolicies,deployments.apps,statefulsets.apps,jobs.batch,\
cronjobs.batch,ingresses.networking.k8s.io,horizontalpodautoscalers.autoscaling,\
poddisruptionbudgets.policy";

/// A namespace of its own with the tenant's account, the backup keys and the shop in it.
async fn shop(client: &Client, prefix: &str) -> String {
    common::install_crds();
    common::operator("backup");
    let ns = common::namespace(client, prefix, &[]).await;
    common::tenant_account(&ns).await;
    keys_secret(client, &ns, 3).await;
    let manifest = std::fs::read_to_string(common::repo_root().join("tests/data/apps/shop.yaml"))
        .unwrap()
        .replace("${NAMESPACE}", &ns);
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), manifest).unwrap();
    let (ok, out, err) = common::kubectl(&[
        "apply",
        "--server-side",
        "-n",
        &ns,
        "-f",
        file.path().to_str().unwrap(),
    ]);
    assert!(ok, "applying the shop: {out} {err}");
    ns
}

/// Every object of the shop's kinds in `ns` that a backup holds (not those the cluster makes
/// from another: a controller's objects, token Secrets, the root CA ConfigMap), by
/// `Kind name`, without what the README lists as set by the API server or bound to the cluster
/// (and so left out of a backup, or set anew by a restore).
fn snapshot(ns: &str) -> BTreeMap<String, Value> {
    let (ok, out, err) = common::kubectl(&["get", "-n", ns, SHOP_KINDS, "-o", "json"]);
    assert!(ok, "kubectl get: {err}");
    let list: Value = serde_json::from_str(&out).unwrap();
    let mut objects = BTreeMap::new();
    for mut o in list["items"].as_array().cloned().unwrap_or_default() {
        let owned = o["metadata"]["ownerReferences"]
            .as_array()
            .is_some_and(|refs| refs.iter().any(|r| r["controller"] == true));
        let token = o["type"] == "kubernetes.io/service-account-token";
        let root_ca = o["kind"] == "ConfigMap" && o["metadata"]["name"] == "kube-root-ca.crt";
        if owned || token || root_ca {
            continue;
        }
        without_server_set_fields(&mut o);
        let key = format!(
            "{} {}",
            o["kind"].as_str().unwrap(),
            o["metadata"]["name"].as_str().unwrap()
        );
        objects.insert(key, o);
    }
    objects
}

/// Removes the fields the README's "What a backup leaves out of each object" names, and status.
fn without_server_set_fields(o: &mut Value) {
    let kind = o["kind"].as_str().unwrap_or_default().to_string();
    let o = o.as_object_mut().unwrap();
    o.remove("status");
    let meta = o.get_mut("metadata").unwrap().as_object_mut().unwrap();
    for f in [
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "managedFields",
        "namespace",
        "ownerReferences",
        "generateName",
    ] {
        meta.remove(f);
    }
    let mut strip = |field: &str, keys: &[&str]| {
        if let Some(map) = meta.get_mut(field).and_then(Value::as_object_mut) {
            for k in keys {
                map.remove(*k);
            }
            if map.is_empty() {
                meta.remove(field);
            }
        }
    };
    strip(
        "annotations",
        &[
            "kubectl.kubernetes.io/last-applied-configuration",
            "deployment.kubernetes.io/revision",
            "pv.kubernetes.io/bind-completed",
            "pv.kubernetes.io/bound-by-controller",
            "volume.beta.kubernetes.io/storage-provisioner",
            "volume.kubernetes.io/storage-provisioner",
            "volume.kubernetes.io/selected-node",
        ],
    );
    let job_uid = ["controller-uid", "batch.kubernetes.io/controller-uid"];
    if kind == "Job" {
        strip("labels", &job_uid);
    }
    let spec = o.get_mut("spec").and_then(Value::as_object_mut);
    match (kind.as_str(), spec) {
        ("Service", Some(spec)) => {
            if spec["clusterIP"] != "None" {
                spec.remove("clusterIP");
                spec.remove("clusterIPs");
            }
            opsec_operator::backup::export::without_node_ports(spec);
        }
        ("PersistentVolumeClaim", Some(spec)) => {
            spec.remove("volumeName");
        }
        ("Job", Some(spec)) => {
            spec.remove("selector");
            if let Some(labels) = spec
                .get_mut("template")
                .and_then(|t| t.get_mut("metadata"))
                .and_then(|m| m.get_mut("labels"))
                .and_then(Value::as_object_mut)
            {
                for k in job_uid {
                    labels.remove(k);
                }
            }
        }
        _ => {}
    }
    if kind == "ServiceAccount" {
        o.remove("secrets");
    }
}

/// The differences between two snapshots: objects missing on either side, and objects that
/// differ (both versions).
fn differences(a: &BTreeMap<String, Value>, b: &BTreeMap<String, Value>) -> Vec<String> {
    let mut out = Vec::new();
    for (k, v) in a {
        match b.get(k) {
            None => out.push(format!("{k}: only before")),
            Some(w) if w != v => out.push(format!("{k}: {v}\n  became {w}")),
            Some(_) => {}
        }
    }
    out.extend(
        b.keys()
            .filter(|k| !a.contains_key(*k))
            .map(|k| format!("{k}: only after")),
    );
    out
}

/// A policy backing up the shop on site, with restore tests, and its first completed Backup.
async fn backed_up(client: &Client, ns: &str, name: &str, extra: Value) -> Backup {
    let mut spec = json!({"rpo": "1h", "rto": "5m",
        "storage": [{"name": "onsite", "local": {"path": name}}],
        "verification": {"schedule": "@daily", "restoreTest": {"schedule": "@weekly", "timeout": "10m"}}});
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    policy(client, ns, name, spec).await;
    backup_in(client, ns, name, &[BackupPhase::Completed]).await
}

/// A namespace that accepts restores from `source`, whose account may write there.
async fn accepting(client: &Client, prefix: &str, source: &str) -> String {
    let target = common::namespace(client, prefix, &[]).await;
    common::tenant_account(&target).await;
    common::bind_admin(&target, source).await;
    policy(client, &target, "accept", json!({"rpo": "1h", "suspend": true,
        "storage": [{"name": "onsite", "local": {"path": "accept"}}], "acceptRestoresFrom": [source]}))
    .await;
    target
}

/// A ResourceQuota in `ns`, once the quota controller has counted what the namespace uses (the
/// API server refuses every write its quota covers until then).
async fn quota(client: &Client, ns: &str, hard: Value) {
    let q = json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "limit"},
        "spec": {"hard": hard}});
    let api: Api<k8s_openapi::api::core::v1::ResourceQuota> = Api::namespaced(client.clone(), ns);
    api.create(&Default::default(), &serde_json::from_value(q).unwrap())
        .await
        .unwrap();
    common::eventually(Duration::from_secs(60), "the quota's usage counted", || {
        let api = api.clone();
        async move {
            let q = api.get("limit").await.ok()?;
            q.status?.used.filter(|u| !u.is_empty()).map(|_| ())
        }
    })
    .await;
}

fn condition_reason(r: &Restore) -> String {
    r.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.reason.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn the_shop_restores_into_another_namespace_and_in_a_restore_test_object_for_object() {
    let c = &common::client().await;
    let ns = shop(c, "app-shop").await;
    let b = backed_up(c, &ns, "shop", json!({})).await;
    let before = snapshot(&ns);
    assert!(
        before.len() >= 51,
        "the shop and what the cluster adds: {before:#?}"
    );

    let target = accepting(c, "app-shop-t", &ns).await;
    let untouched = snapshot(&target);
    let r = restore(
        c,
        &ns,
        json!({"backupRef": {"name": b.name_any()}, "targetNamespace": target}),
    )
    .await;
    let rs = r.status.clone().unwrap();
    assert_eq!(rs.phase, Some(RestorePhase::Completed), "{rs:?}");
    eprintln!(
        "restore of the shop ({} objects restored, {} skipped): {}",
        rs.restored,
        rs.skipped,
        rs.duration.as_deref().unwrap_or_default()
    );
    // Every object of the source is in the target as it was, but for the fields the README
    // lists as the cluster's. What the target held already (its `default` ServiceAccount, its
    // tenant's account and binding) was skipped and is unchanged.
    let after = snapshot(&target);
    let (held, written): (BTreeMap<_, _>, BTreeMap<_, _>) = before
        .clone()
        .into_iter()
        .partition(|(k, _)| untouched.contains_key(k));
    let restored: BTreeMap<_, _> = after
        .iter()
        .filter(|(k, _)| !untouched.contains_key(*k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let diff = differences(&written, &restored);
    assert!(diff.is_empty(), "after the restore:\n{}", diff.join("\n"));
    for k in held.keys() {
        assert_eq!(after.get(k), untouched.get(k), "{k} was skipped");
    }
    assert_eq!(
        (rs.restored as usize, rs.skipped as usize),
        (written.len(), held.len()),
        "{rs:?}"
    );

    // The same application in a restore test: every object compared, none differs.
    annotate(c, &ns, "shop", "opsec.x1642.dev/restore-test-now").await;
    let p = policy_condition(c, &ns, "shop", "RTOMet", "True").await;
    let t = p.status.unwrap().last_restore_test.unwrap();
    eprintln!(
        "restore test of the shop: {} compared, {} mismatches, {}",
        t.objects_compared, t.mismatches, t.duration
    );
    assert_eq!(t.result, "Passed", "{t:?}");
    assert_eq!(t.mismatches, 0, "{t:?}");
    assert!(t.objects_compared as usize >= before.len() - 1, "{t:?}");

    // A restore test that fails measures nothing: the policy shows the last passing test's
    // time as its measured RTO, and the failed one beside it.
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(c.clone(), &ns);
    secrets
        .patch(
            "backup-keys",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"enc": "bm90IHRoZSBrZXkgdGhlIGJhY2t1cCB3YXMgbWFkZSB3aXRoIQ=="}})),
        )
        .await
        .unwrap();
    let policies: Api<opsec_operator::api::BackupPolicy> = Api::namespaced(c.clone(), &ns);
    let again = json!({"metadata": {"annotations": {"opsec.x1642.dev/restore-test-now": "2"}}});
    policies
        .patch("shop", &PatchParams::default(), &Patch::Merge(again))
        .await
        .unwrap();
    common::eventually(Duration::from_secs(60), "a failed restore test", || {
        let policies = policies.clone();
        async move {
            let s = policies.get("shop").await.ok()?.status?;
            (s.last_restore_test?.result == "Failed").then_some(())
        }
    })
    .await;
    let (ok, out, err) = common::kubectl(&["get", "bkp", "shop", "-n", &ns, "-o", "wide"]);
    assert!(ok, "{err}");
    // The table's columns are aligned: a value starts where its header does.
    let (header, row) = (out.lines().next().unwrap(), out.lines().nth(1).unwrap());
    let column = |name: &str| {
        let at = header
            .find(name)
            .unwrap_or_else(|| panic!("no column {name}: {out}"));
        row[at..]
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(column("MEASURED RTO"), t.duration, "{out}");
    assert_eq!(column("LAST TEST"), "Failed", "{out}");
    common::delete_namespace(c, &target).await;
    common::delete_namespace(c, &ns).await;
}

#[tokio::test]
async fn a_restore_the_target_would_refuse_writes_nothing() {
    let c = &common::client().await;
    let ns = shop(c, "app-dry").await;
    // A target whose quota allows no load balancer: the dry run finds the one Service.
    let b = backed_up(c, &ns, "shop", json!({})).await;
    let target = accepting(c, "app-dry-t", &ns).await;
    quota(c, &target, json!({"services.loadbalancers": "0"})).await;
    let before = snapshot(&target);
    let r = restore(
        c,
        &ns,
        json!({"backupRef": {"name": b.name_any()}, "targetNamespace": target}),
    )
    .await;
    let rs = r.status.clone().unwrap();
    assert_eq!(rs.phase, Some(RestorePhase::Failed), "{rs:?}");
    assert_eq!(condition_reason(&r), "DryRunFailed", "{rs:?}");
    assert_eq!(rs.failed, 1, "{rs:?}");
    assert!(
        rs.errors[0].contains("v1/Service frontend-external") && rs.errors[0].contains("quota"),
        "{rs:?}"
    );
    assert_eq!((rs.restored, rs.rolled_back), (0, 0), "{rs:?}");
    let diff = differences(&before, &snapshot(&target));
    assert!(diff.is_empty(), "the target changed:\n{}", diff.join("\n"));

    // A policy that keeps node ports: restored beside the original, whose ports are taken, it
    // is refused by name before anything is written.
    let kept = backed_up(
        c,
        &ns,
        "kept",
        json!({"resources": {"keepNodePorts": true}}),
    )
    .await;
    let free = accepting(c, "app-dry-k", &ns).await;
    let before = snapshot(&free);
    let r = restore(
        c,
        &ns,
        json!({"backupRef": {"name": kept.name_any()}, "targetNamespace": free}),
    )
    .await;
    let rs = r.status.clone().unwrap();
    assert_eq!(condition_reason(&r), "DryRunFailed", "{rs:?}");
    assert_eq!(rs.failed, 2, "both Services with node ports: {rs:?}");
    for service in ["checkout-nodeport", "frontend-external"] {
        assert!(
            rs.errors
                .iter()
                .any(|e| e.contains(service) && e.contains("already allocated")),
            "{service}: {rs:?}"
        );
    }
    let diff = differences(&before, &snapshot(&free));
    assert!(diff.is_empty(), "the target changed:\n{}", diff.join("\n"));
    for n in [target, free, ns] {
        common::delete_namespace(c, &n).await;
    }
}

#[tokio::test]
async fn a_restore_that_fails_part_way_undoes_every_write() {
    let c = &common::client().await;
    let ns = shop(c, "app-undo").await;
    let b = backed_up(c, &ns, "shop", json!({})).await;

    // Into a fresh namespace whose quota runs out part-way: each Deployment passes the dry run
    // on its own, the sixth write is refused, and the objects written before are deleted.
    let fresh = accepting(c, "app-undo-t", &ns).await;
    quota(c, &fresh, json!({"count/deployments.apps": "5"})).await;
    let before = snapshot(&fresh);
    let r = restore(
        c,
        &ns,
        json!({"backupRef": {"name": b.name_any()}, "targetNamespace": fresh}),
    )
    .await;
    let rs = r.status.clone().unwrap();
    assert_eq!(rs.phase, Some(RestorePhase::Failed), "{rs:?}");
    assert_eq!(condition_reason(&r), "RolledBack", "{rs:?}");
    assert!(rs.rolled_back > 30, "{rs:?}");
    assert!(
        rs.errors[0].contains("apps/v1/Deployment") && rs.errors[0].contains("exceeded quota"),
        "{rs:?}"
    );
    let diff = differences(&before, &snapshot(&fresh));
    assert!(diff.is_empty(), "the target kept:\n{}", diff.join("\n"));

    // Into a namespace whose admission refuses PodDisruptionBudgets for real but lets dry runs
    // pass (a webhook judging only real writes): the last kind fails after every workload was
    // written and its controllers had written their status and made ReplicaSets and Pods. All
    // of it goes.
    let late = accepting(c, "app-undo-l", &ns).await;
    let refusing = refuse_real_pdbs(&late).await;
    let before = snapshot(&late);
    let r = restore(
        c,
        &ns,
        json!({"backupRef": {"name": b.name_any()}, "targetNamespace": late}),
    )
    .await;
    let rs = r.status.clone().unwrap();
    assert_eq!(condition_reason(&r), "RolledBack", "{rs:?}");
    assert!(
        rs.errors[0].contains("PodDisruptionBudget db") && rs.errors[0].contains("dry runs pass"),
        "{rs:?}"
    );
    let diff = differences(&before, &snapshot(&late));
    assert!(diff.is_empty(), "the target kept:\n{}", diff.join("\n"));
    common::eventually(
        Duration::from_secs(60),
        "no ReplicaSet or Pod left",
        || async {
            let (ok, out, _) =
                common::kubectl(&["get", "-n", &late, "replicasets,pods", "-o", "name"]);
            (ok && out.trim().is_empty()).then_some(())
        },
    )
    .await;

    // Over the source with Overwrite: a ConfigMap edited since the backup is overwritten, and
    // of two deleted Deployments the quota takes one back only; everything is put back as it
    // was, the edit included.
    let configmaps: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(c.clone(), &ns);
    configmaps
        .patch(
            "shop-config",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"edited": "after the backup"}})),
        )
        .await
        .unwrap();
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(c.clone(), &ns);
    for d in ["ads", "email"] {
        deployments
            .delete(d, &DeleteParams::default())
            .await
            .unwrap();
    }
    common::eventually(Duration::from_secs(30), "the Deployments gone", || {
        let deployments = deployments.clone();
        async move {
            let left = deployments.list(&ListParams::default()).await.ok()?;
            (left.items.len() == 10).then_some(())
        }
    })
    .await;
    quota(c, &ns, json!({"count/deployments.apps": "11"})).await;
    let before = snapshot(&ns);
    let r = restore(
        c,
        &ns,
        json!({"backupRef": {"name": b.name_any()}, "existingObjects": "Overwrite"}),
    )
    .await;
    let rs = r.status.clone().unwrap();
    assert_eq!(condition_reason(&r), "RolledBack", "{rs:?}");
    // The two are written together: one is refused, whichever comes second.
    assert!(
        ["ads", "email"]
            .iter()
            .any(|d| rs.errors[0].contains(&format!("apps/v1/Deployment {d}:")))
            && rs.errors[0].contains("exceeded quota"),
        "{rs:?}"
    );
    let diff = differences(&before, &snapshot(&ns));
    assert!(diff.is_empty(), "the source kept:\n{}", diff.join("\n"));
    let edited = configmaps.get("shop-config").await.unwrap();
    assert_eq!(edited.data.unwrap()["edited"], "after the backup");
    for d in ["ads", "email"] {
        assert!(deployments.get_opt(d).await.unwrap().is_none(), "{d}");
    }
    for n in [&fresh, &late, &ns] {
        common::delete_namespace(c, n).await;
    }
    common::kubectl(&[
        "delete",
        "validatingadmissionpolicybinding,validatingadmissionpolicy",
        &refusing,
    ]);
}

/// An admission policy that refuses PodDisruptionBudgets created in `ns` for real and lets dry
/// runs pass, in force once a real create is refused; returns its name (of the policy and its
/// binding).
async fn refuse_real_pdbs(ns: &str) -> String {
    let name = common::deny_in_namespace(
        ns,
        "refuse-pdb",
        json!({"apiGroups": ["policy"], "apiVersions": ["v1"],
            "operations": ["CREATE"], "resources": ["poddisruptionbudgets"]}),
        "has(request.dryRun) && request.dryRun",
        "PodDisruptionBudgets are refused here (dry runs pass)",
    );
    common::eventually(Duration::from_secs(30), "the policy in force", || async {
        let (created, _, err) = common::kubectl(&[
            "create",
            "poddisruptionbudget",
            "probe",
            "-n",
            ns,
            "--selector=app=probe",
            "--min-available=1",
        ]);
        if created {
            common::kubectl(&["delete", "poddisruptionbudget", "probe", "-n", ns]);
        }
        err.contains("dry runs pass").then_some(())
    })
    .await;
    name
}
