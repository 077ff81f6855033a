//! Tenant confinement, each test written as the attack (against the real API server and a real
//! S3 server): the operator runs as its own ServiceAccount with the shipped RBAC
//! (`common::operator`), a tenant is a user bound to the built-in `admin` role in its own
//! namespace, and tenant work runs as that namespace's `opsec-tenant` ServiceAccount, itself
//! bound to `admin`. Whatever a tenant makes the operator do, the API server judges as the
//! tenant's; what a tenant (or anyone who can write its store) leaves in a store counts for
//! nothing unless the operator signed it; and the operator connects only where the provider
//! allows. Needs KUBECONFIG and the S3 settings (`make test`).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use ed25519_dalek::SigningKey;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, ResourceQuota, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use opsec_operator::api::backup::{BackupPhase, RestorePhase};
use opsec_operator::api::{Backup, BackupPolicy, Restore};
use opsec_operator::backup::{BackupMeta, BackupOptions, BackupWriter, EncryptionKey, Store};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
/// The tenant's own encryption key (the tenant can read it: it is in its namespace).
const TENANT_KEY: [u8; 32] = [7; 32];

/// A tenant namespace: the acting ServiceAccount, a tenant admin user `<ns>-admin`, and the
/// tenant's key Secret.
async fn tenant(client: &Client, prefix: &str) -> String {
    common::install_crds();
    common::operator("backup");
    let ns = common::namespace(client, prefix, &[("opsec.x1642.dev/tenant", prefix)]).await;
    common::tenant_account(&ns).await;
    let (ok, _, err) = common::kubectl(&[
        "create",
        "rolebinding",
        "tenant-admin",
        "--clusterrole=admin",
        &format!("--user={ns}-admin"),
        "-n",
        &ns,
    ]);
    assert!(ok, "{err}");
    apply(
        client,
        &ns,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "backup-keys"},
               "stringData": {"enc": B64.encode(TENANT_KEY)}}),
    )
    .await;
    ns
}

/// Creates an object as the test's admin (the provider).
async fn apply(_client: &Client, ns: &str, obj: Value) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), serde_json::to_vec(&obj).unwrap()).unwrap();
    let (ok, out, err) = common::kubectl(&["apply", "-n", ns, "-f", file.path().to_str().unwrap()]);
    assert!(ok, "kubectl apply {obj}: {out} {err}");
}

async fn policy(client: &Client, ns: &str, name: &str, spec: Value) {
    let p: BackupPolicy = serde_json::from_value(json!({
        "apiVersion": "opsec.x1642.dev/v1alpha1", "kind": "BackupPolicy",
        "metadata": {"name": name, "namespace": ns}, "spec": spec}))
    .unwrap();
    Api::<BackupPolicy>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &p)
        .await
        .expect("create BackupPolicy");
}

/// The on-site storage every test policy has: `onsite` under the namespace's local root.
fn onsite() -> Value {
    json!([{"name": "onsite", "local": {"path": "onsite"}}])
}

/// A policy that backs up only when asked (its schedule suspended), encrypted with the tenant's
/// key, writing to `storage`, with any `extra` fields.
async fn asked_policy(client: &Client, ns: &str, name: &str, storage: Value, extra: Value) {
    let mut spec = json!({"rpo": "1h", "suspend": true, "storage": storage,
        "encryption": {"keySecretRef": {"name": "backup-keys", "key": "enc"}}});
    for (k, v) in extra.as_object().into_iter().flatten() {
        spec[k] = v.clone();
    }
    policy(client, ns, name, spec).await;
}

/// Backup `name` of policy `p`, asked for now (as the provider); returned once it completed.
async fn backup_now(client: &Client, ns: &str, name: &'static str) -> Backup {
    let b: Backup = serde_json::from_value(json!({"apiVersion": "opsec.x1642.dev/v1alpha1",
        "kind": "Backup", "metadata": {"name": name, "namespace": ns},
        "spec": {"policyRef": {"name": "p"}}}))
    .unwrap();
    let backups = Api::<Backup>::namespaced(client.clone(), ns);
    backups.create(&PostParams::default(), &b).await.unwrap();
    common::eventually(WAIT, &format!("Backup {name} to complete"), || {
        let backups = backups.clone();
        async move {
            let b = backups.get(name).await.ok()?;
            (b.status.as_ref()?.phase == Some(BackupPhase::Completed)).then_some(b)
        }
    })
    .await
}

/// Policy `name`'s condition `type_`, once `ok` holds for it.
async fn policy_condition(
    client: &Client,
    ns: &str,
    name: &str,
    type_: &'static str,
    ok: impl Fn(&Condition) -> bool,
) -> Condition {
    let policies = Api::<BackupPolicy>::namespaced(client.clone(), ns);
    common::eventually(WAIT, &format!("{name}'s {type_} condition"), || {
        let policies = policies.clone();
        let ok = &ok;
        async move {
            let p = policies.get(name).await.ok()?;
            let c = p
                .status?
                .conditions
                .into_iter()
                .find(|c| c.type_ == type_)?;
            ok(&c).then_some(c)
        }
    })
    .await
}

/// Makes policy `name` reconcile now: a label change is a change it watches.
async fn touch(client: &Client, ns: &str, name: &str, value: &str) {
    Api::<BackupPolicy>::namespaced(client.clone(), ns)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"touched": value}}})),
        )
        .await
        .unwrap();
}

fn local_store(ns: &str) -> Store {
    Store::local("onsite", common::local_root().join(ns).join("onsite")).unwrap()
}

/// Writes an archive of exactly `objects` into the tenant's on-site store, as backup `id` of
/// `policy`, with the given keys: what anyone who can write the store can leave there.
async fn plant(
    ns: &str,
    policy: &str,
    id: &str,
    objects: &[Value],
    encryption: Option<EncryptionKey>,
    signing: Option<SigningKey>,
    created_at: jiff::Timestamp,
) {
    let meta = BackupMeta {
        namespace: ns.into(),
        policy: policy.into(),
        backup_id: id.into(),
        created_at,
    };
    let options = BackupOptions {
        encryption_key: encryption,
        signing_key: signing,
        ..Default::default()
    };
    let mut w = BackupWriter::begin(meta, options, &[local_store(ns)])
        .await
        .unwrap();
    for o in objects {
        w.add_verbatim(o).await.unwrap();
    }
    w.finish().await.unwrap();
}

/// A Restore created by the tenant admin user (impersonated), waited for until it ends.
async fn restore_as_tenant(client: &Client, ns: &str, spec: Value) -> Restore {
    let tenant = common::client_as(&format!("{ns}-admin")).await;
    let name = common::unique("rst");
    let r: Restore = serde_json::from_value(json!({
        "apiVersion": "opsec.x1642.dev/v1alpha1", "kind": "Restore",
        "metadata": {"name": name, "namespace": ns}, "spec": spec}))
    .unwrap();
    let api = Api::<Restore>::namespaced(tenant, ns);
    api.create(&PostParams::default(), &r)
        .await
        .expect("the tenant creates a Restore");
    let api = Api::<Restore>::namespaced(client.clone(), ns);
    common::eventually(WAIT, "the Restore to end", || {
        let (api, name) = (api.clone(), name.clone());
        async move {
            let r = api.get(&name).await.ok()?;
            let phase = r.status.as_ref()?.phase?;
            matches!(phase, RestorePhase::Completed | RestorePhase::Failed).then_some(r)
        }
    })
    .await
}

fn can_i(user: &str, verb: &str, resource: &str, ns: &str) -> bool {
    let (_, out, _) = common::kubectl(&["auth", "can-i", verb, resource, "-n", ns, "--as", user]);
    out.trim() == "yes"
}

#[tokio::test]
async fn a_forged_backup_restored_by_a_tenant_changes_nothing_the_tenant_could_not_change_itself() {
    let client = common::client().await;
    let ns = tenant(&client, "conf-forge").await;
    let user = format!("{ns}-admin");
    // The provider's objects: a quota of 2 pods, the isolation policy its baseline stamped,
    // and a pending pod.
    apply(
        &client,
        &ns,
        json!({"apiVersion": "v1", "kind": "ResourceQuota",
        "metadata": {"name": "provider-quota"}, "spec": {"hard": {"pods": "2"}}}),
    )
    .await;
    let stamped = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "opsec-isolation", "labels": {"app.kubernetes.io/managed-by": "opsec-operator",
            "opsec.x1642.dev/baseline": "provider"}},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}});
    apply(&client, &ns, stamped).await;
    apply(
        &client,
        &ns,
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "victim"},
        "spec": {"containers": [{"name": "c", "image": "registry.example/app:1"}]}}),
    )
    .await;
    asked_policy(&client, &ns, "p", onsite(), json!({})).await;

    // Even an archive the operator's own key signed (the strongest forgery there could be) can
    // bring back only what the tenant may write itself.
    let hostile = [
        json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "provider-quota"},
            "spec": {"hard": {"pods": "1000"}}}),
        json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "evil"},
            "subsets": [{"addresses": [{"ip": "10.1.2.3"}], "ports": [{"port": 80}]}]}),
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": {"name": "evil-slice"},
            "addressType": "IPv4", "endpoints": [{"addresses": ["10.1.2.3"]}], "ports": [{"port": 80}]}),
        json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "victim"},
            "target": {"apiVersion": "v1", "kind": "Node", "name": "node-1"}}),
        json!({"apiVersion": "wgpolicyk8s.io/v1alpha2", "kind": "PolicyReport",
            "metadata": {"name": "opsec-forged", "labels": {"app.kubernetes.io/managed-by": "opsec-operator"}},
            "summary": {"pass": 10, "fail": 0}, "results": []}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "everything"},
            "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "everything"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "everything"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": format!("{ns}-forged")},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]}),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": format!("{ns}-forged")}}),
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "opsec-isolation"},
            "spec": {"podSelector": {}, "ingress": [{}], "policyTypes": ["Ingress"]}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "harmless"}, "data": {"a": "b"}}),
    ];
    let operator_key = common::operator_signing_key(&client).await;
    plant(
        &ns,
        "p",
        "forged",
        &hostile,
        Some(EncryptionKey::from_bytes(TENANT_KEY)),
        Some(operator_key),
        jiff::Timestamp::now(),
    )
    .await;
    let r = restore_as_tenant(
        &client,
        &ns,
        json!({"source": {"policyRef": {"name": "p"}, "backupId": "forged"}, "existingObjects": "Overwrite"}),
    )
    .await;
    let rs = r.status.unwrap();
    let errors = rs.errors.join("\n");

    // A restore is all or nothing: the dry run refused what the tenant may not write, so not
    // even the ConfigMap it may write was restored.
    assert!(
        Api::<ConfigMap>::namespaced(client.clone(), &ns)
            .get_opt("harmless")
            .await
            .unwrap()
            .is_none(),
        "{rs:?}"
    );
    let reason = rs
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.reason.as_str());
    assert_eq!(reason, Some("DryRunFailed"), "{rs:?}");
    assert_eq!((rs.restored, rs.rolled_back), (0, 0), "{rs:?}");
    // Nothing the tenant may not write changed.
    let quota = Api::<ResourceQuota>::namespaced(client.clone(), &ns)
        .get("provider-quota")
        .await
        .unwrap();
    assert_eq!(quota.spec.unwrap().hard.unwrap()["pods"].0, "2");
    for (kind, name) in [
        ("endpoints", "evil".to_string()),
        ("endpointslices.discovery.k8s.io", "evil-slice".to_string()),
        ("policyreports.wgpolicyk8s.io", "opsec-forged".to_string()),
        ("roles.rbac.authorization.k8s.io", "everything".to_string()),
        (
            "rolebindings.rbac.authorization.k8s.io",
            "everything".to_string(),
        ),
    ] {
        let (found, _, _) = common::kubectl(&["get", "-n", &ns, kind, &name]);
        assert!(!found, "{kind}/{name} was restored:\n{errors}");
    }
    let (found, _, _) = common::kubectl(&["get", "clusterrolebinding", &format!("{ns}-forged")]);
    assert!(!found, "a ClusterRoleBinding was restored");
    let (found, _, _) = common::kubectl(&["get", "namespace", &format!("{ns}-forged")]);
    assert!(!found, "a Namespace was restored");
    let pod = Api::<Pod>::namespaced(client.clone(), &ns)
        .get("victim")
        .await
        .unwrap();
    assert_eq!(pod.spec.unwrap().node_name, None, "the pod was bound");
    let isolation = Api::<NetworkPolicy>::namespaced(client.clone(), &ns)
        .get("opsec-isolation")
        .await
        .unwrap();
    assert_eq!(
        isolation.spec.unwrap().ingress,
        None,
        "the stamped isolation policy was overwritten"
    );
    // The restore says what it refused, naming each object.
    assert_eq!(rs.phase, Some(RestorePhase::Failed), "{rs:?}");
    assert!(
        errors.contains("ClusterRoleBinding") && errors.contains("cluster-scoped"),
        "{errors}"
    );
    assert!(
        errors.contains("Namespace") && errors.contains("forbidden"),
        "{errors}"
    );
    assert!(errors.contains("ResourceQuota provider-quota"), "{errors}");
    // And the API server agrees the tenant could do none of it itself.
    for (verb, resource) in [
        ("patch", "resourcequotas"),
        ("create", "endpoints"),
        ("create", "endpointslices.discovery.k8s.io"),
        ("create", "bindings"),
        ("create", "policyreports.wgpolicyk8s.io"),
        ("create", "clusterrolebindings"),
    ] {
        assert!(
            !can_i(&user, verb, resource, &ns),
            "{user} may {verb} {resource}"
        );
    }
    common::delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn manifests_anyone_can_write_into_a_store_enter_no_catalogue_count_for_no_rpo_and_delete_nothing()
 {
    let client = common::client().await;
    let ns = tenant(&client, "conf-catalogue").await;
    asked_policy(
        &client,
        &ns,
        "p",
        onsite(),
        json!({"retention": {"copies": 2}}),
    )
    .await;
    let backups = Api::<Backup>::namespaced(client.clone(), &ns);
    backup_now(&client, &ns, "real-1").await;

    // A year ahead, each newer than any real backup: unsigned, and signed with the tenant's
    // own key (it cannot read the operator's).
    let future = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24 * 365);
    let cm = [json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}})];
    let key = || Some(EncryptionKey::from_bytes(TENANT_KEY));
    plant(&ns, "p", "forged-unsigned", &cm, key(), None, future).await;
    plant(
        &ns,
        "p",
        "forged-tenant-signed",
        &cm,
        key(),
        Some(SigningKey::from_bytes(&[42; 32])),
        future,
    )
    .await;

    let real_2 = backup_now(&client, &ns, "real-2").await;
    let done = real_2.status.unwrap().completion_time.unwrap();
    let policies = Api::<BackupPolicy>::namespaced(client.clone(), &ns);
    let p = common::eventually(WAIT, "the policy to count real-2", || {
        let policies = policies.clone();
        let done = done.clone();
        async move {
            let p = policies.get("p").await.ok()?;
            (p.status.as_ref()?.last_successful_time.as_ref() == Some(&done)).then_some(p)
        }
    })
    .await;
    // Retention (2 copies) kept both real backups: the forgeries did not push them out.
    let mut names: Vec<String> = backups
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|b| b.name_any())
        .collect();
    names.sort();
    assert_eq!(names, ["real-1", "real-2"]);
    let stored = common::stored_backup_ids(&local_store(&ns), &ns, "p")
        .await
        .unwrap();
    assert!(
        stored.contains(&"real-1".to_string()) && stored.contains(&"real-2".to_string()),
        "{stored:?}"
    );
    let rpo = p
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "RPOMet")
        .unwrap();
    assert_eq!(
        (rpo.status.as_str(), rpo.reason.as_str()),
        ("True", "WithinRPO")
    );

    // A policy whose store held only forgeries before it was created has no backup at all.
    plant(
        &ns,
        "q",
        "forged-q",
        &cm,
        key(),
        Some(SigningKey::from_bytes(&[42; 32])),
        future,
    )
    .await;
    asked_policy(&client, &ns, "q", onsite(), json!({})).await;
    let q = policy_condition(&client, &ns, "q", "RPOMet", |_| true).await;
    assert_eq!(
        (q.status.as_str(), q.reason.as_str()),
        ("False", "NoBackup")
    );
    let q_backups: Vec<Backup> = backups
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|b| b.spec.policy_ref.name == "q")
        .collect();
    assert!(
        q_backups.is_empty(),
        "forgeries entered the catalogue: {q_backups:?}"
    );
    common::delete_namespace(&client, &ns).await;
}

/// A loopback listener that counts the connections it accepts.
async fn counting_listener() -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((_, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
        }
    });
    (port, count)
}

/// An allowed "S3 server" (the allowlisted relay port) that refuses everything with a body of
/// its own choosing.
async fn refusing_server(body: &'static str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", common::relay_port()))
        .await
        .expect("the relay port is free");
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let _ = sock.read(&mut buf).await;
                let response = format!(
                    "HTTP/1.1 403 Forbidden\r\nContent-Type: application/xml\r\nx-amz-request-id: {body}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(response.as_bytes()).await;
            });
        }
    });
}

#[tokio::test]
async fn an_s3_endpoint_outside_the_allowlist_gets_no_request_and_a_servers_words_never_reach_the_status()
 {
    let client = common::client().await;
    let ns = tenant(&client, "conf-ssrf").await;
    apply(
        &client,
        &ns,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3-creds"},
        "stringData": {"AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "secret"}}),
    )
    .await;
    let (port, connections) = counting_listener().await;
    const BODY: &str = "<Error>internal-hostname-db-7f3a</Error>";
    refusing_server(BODY).await;
    let s3 = |name: &str, endpoint: String| {
        json!({"name": name, "s3": {"bucket": "tenant",
        "endpoint": endpoint, "credentialsSecretRef": {"name": "s3-creds"}}})
    };
    let storage = json!([{"name": "onsite", "local": {"path": "onsite"}},
        s3("outside", format!("http://127.0.0.1:{port}")),
        s3("refusing", format!("http://127.0.0.1:{}", common::relay_port()))]);
    asked_policy(&client, &ns, "p", storage, json!({})).await;
    let b = backup_now(&client, &ns, "now").await;
    let s = b.status.unwrap();
    let loc = |name: &str| s.locations.iter().find(|l| l.name == name).unwrap().clone();
    assert_eq!(loc("onsite").state, "Written", "{s:?}");
    let outside = loc("outside");
    assert_eq!(outside.state, "Failed", "{s:?}");
    assert!(
        outside
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("allowlist"),
        "{outside:?}"
    );
    let refusing = loc("refusing");
    assert_eq!(refusing.state, "Failed", "{s:?}");
    let reachable = policy_condition(&client, &ns, "p", "StorageReachable", |c| {
        c.status == "False"
    })
    .await;
    assert!(reachable.message.contains("allowlist"), "{reachable:?}");
    // The refusing server's words (its body, its request id) are nowhere in what tenants read.
    let everything = serde_json::to_string(&s).unwrap() + &reachable.message;
    assert!(!everything.contains("internal-hostname"), "{everything}");
    assert!(
        refusing
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("403"),
        "{refusing:?}"
    );
    // The endpoint outside the allowlist never got a connection.
    assert_eq!(connections.load(Ordering::SeqCst), 0);
    common::delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn rotated_encryption_and_signing_keys_still_restore_old_backups_and_an_unencrypted_manifest_is_refused()
 {
    let client = common::client().await;
    let ns = tenant(&client, "conf-rotate").await;
    apply(&client, &ns, json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "app"}, "data": {"v": "1"}})).await;
    asked_policy(&client, &ns, "p", onsite(), json!({})).await;
    let old = backup_now(&client, &ns, "old").await.status.unwrap();

    // The tenant rotates its encryption key; the provider rotates the operator's signing key
    // (a new key, made active; the old one stays in the keyring).
    let new_key: [u8; 32] = [8; 32];
    Api::<Secret>::namespaced(client.clone(), &ns)
        .patch(
            "backup-keys",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"enc2": B64.encode(new_key)}})),
        )
        .await
        .unwrap();
    Api::<BackupPolicy>::namespaced(client.clone(), &ns)
        .patch("p", &PatchParams::default(), &Patch::Merge(json!({"spec": {"encryption": {"keySecretRef": {"name": "backup-keys", "key": "enc2"}}}})))
        .await
        .unwrap();
    common::operator_signing_key(&client).await;
    let rotated = SigningKey::from_bytes(&rand_seed());
    let keyring = Api::<Secret>::namespaced(client.clone(), common::OPERATOR_NAMESPACE);
    let entry = format!("{}.key", common::unique("rotated"));
    keyring
        .patch(
            "opsec-signing-keys",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {
            entry.clone(): B64.encode(rotated.to_bytes()), "active": entry}})),
        )
        .await
        .unwrap();
    let new = backup_now(&client, &ns, "new").await.status.unwrap();
    let rotated_id = opsec_operator::backup::crypto::signing_key_id(&rotated.verifying_key());
    assert_eq!(new.signature_key_id.as_deref(), Some(rotated_id.as_str()));
    assert_ne!(old.signature_key_id, new.signature_key_id);

    // Both restore: each archive is read with the key its manifest names.
    Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .delete("app", &Default::default())
        .await
        .unwrap();
    for name in ["old", "new"] {
        let r = restore_as_tenant(&client, &ns, json!({"backupRef": {"name": name}})).await;
        let rs = r.status.unwrap();
        assert_eq!(rs.phase, Some(RestorePhase::Completed), "{name}: {rs:?}");
        assert!(
            Api::<ConfigMap>::namespaced(client.clone(), &ns)
                .get_opt("app")
                .await
                .unwrap()
                .is_some(),
            "{name}"
        );
    }

    // A manifest that says it is not encrypted, though the policy encrypts, is refused (even
    // one signed by the operator's key).
    plant(
        &ns,
        "p",
        "plain",
        &[json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "plain"}})],
        None,
        Some(rotated),
        jiff::Timestamp::now(),
    )
    .await;
    let r = restore_as_tenant(
        &client,
        &ns,
        json!({"source": {"policyRef": {"name": "p"}, "backupId": "plain"}}),
    )
    .await;
    let rs = r.status.unwrap();
    assert_eq!(rs.phase, Some(RestorePhase::Failed), "{rs:?}");
    assert!(rs.errors.join(" ").contains("not encrypted"), "{rs:?}");
    assert!(
        Api::<ConfigMap>::namespaced(client.clone(), &ns)
            .get_opt("plain")
            .await
            .unwrap()
            .is_none()
    );
    common::delete_namespace(&client, &ns).await;
}

fn rand_seed() -> [u8; 32] {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).unwrap();
    seed
}

#[tokio::test]
async fn a_restore_waits_for_its_service_account_and_one_the_operator_may_not_impersonate_is_refused()
 {
    let client = common::client().await;
    let ns = tenant(&client, "conf-sa").await;
    asked_policy(&client, &ns, "p", onsite(), json!({})).await;
    // A ServiceAccount the tenant made and bound to admin, but the operator's RBAC does not let
    // it act as: the tenant cannot pick an account with more rights through the operator, and
    // a name that does not exist is waited for, not failed.
    let tenant_client = common::client_as(&format!("{ns}-admin")).await;
    for (name, sa) in [("missing", "not-there-yet"), ("other", "backup-bot")] {
        let r: Restore = serde_json::from_value(json!({"apiVersion": "opsec.x1642.dev/v1alpha1",
            "kind": "Restore", "metadata": {"name": name, "namespace": ns},
            "spec": {"source": {"policyRef": {"name": "p"}, "backupId": "none"}, "serviceAccountName": sa}}))
        .unwrap();
        Api::<Restore>::namespaced(tenant_client.clone(), &ns)
            .create(&PostParams::default(), &r)
            .await
            .unwrap();
    }
    apply(
        &client,
        &ns,
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "backup-bot"}}),
    )
    .await;
    let restores = Api::<Restore>::namespaced(client.clone(), &ns);
    let waiting = common::eventually(WAIT, "the Restore to wait for its ServiceAccount", || {
        let restores = restores.clone();
        async move {
            let r = restores.get("missing").await.ok()?;
            let s = r.status?;
            let c = s.conditions.iter().find(|c| c.type_ == "Ready")?.clone();
            (s.phase == Some(RestorePhase::Pending)).then_some(c)
        }
    })
    .await;
    assert_eq!(waiting.reason, "ServiceAccountNotFound", "{waiting:?}");
    assert!(waiting.message.contains("not-there-yet"), "{waiting:?}");
    let refused = common::eventually(WAIT, "the other Restore to end", || {
        let restores = restores.clone();
        async move {
            let s = restores.get("other").await.ok()?.status?;
            (s.phase == Some(RestorePhase::Failed)).then_some(s)
        }
    })
    .await;
    let errors = refused.errors.join(" ");
    assert!(errors.contains("impersonate"), "{refused:?}");
    common::delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn a_claim_that_is_missing_unbound_or_not_mounted_into_the_operator_is_never_written_to() {
    let client = common::client().await;
    let ns = tenant(&client, "conf-pvc").await;
    let claim = json!([{"name": "claim", "persistentVolumeClaim": {"claimName": "backups"}}]);
    asked_policy(&client, &ns, "p", claim, json!({})).await;
    let unreachable = |needle: &'static str| {
        policy_condition(&client, &ns, "p", "StorageReachable", move |c| {
            c.status == "False" && c.message.contains(needle)
        })
    };
    unreachable("not found").await;
    // A claim with no volume yet.
    apply(&client, &ns, json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "backups"},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "", "volumeName": format!("{ns}-pv"),
            "resources": {"requests": {"storage": "1Gi"}}}})).await;
    touch(&client, &ns, "p", "unbound").await;
    unreachable("not bound").await;
    // Bound to a volume, but not mounted into the operator: its directory there would be the
    // operator's own disk, shared and lost with the pod.
    let pv = json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": format!("{ns}-pv")},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": "",
            "hostPath": {"path": "/tmp/opsec-pv"},
            "claimRef": {"namespace": ns, "name": "backups"}}});
    apply(&client, &ns, pv).await;
    let claims =
        Api::<k8s_openapi::api::core::v1::PersistentVolumeClaim>::namespaced(client.clone(), &ns);
    common::eventually(WAIT, "the claim to be bound", || {
        let claims = claims.clone();
        async move {
            let c = claims.get("backups").await.ok()?;
            (c.status?.phase.as_deref() == Some("Bound")).then_some(())
        }
    })
    .await;
    touch(&client, &ns, "p", "bound").await;
    let c = unreachable("not mounted into the operator").await;
    let expected = common::pvc_root().join(&ns).join("backups");
    assert!(c.message.contains(&expected.display().to_string()), "{c:?}");
    assert!(!expected.exists(), "the operator made the directory itself");
    let (_, _, _) = common::kubectl(&["delete", "pv", &format!("{ns}-pv"), "--wait=false"]);
    common::delete_namespace(&client, &ns).await;
}
