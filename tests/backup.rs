//! Backups end to end against a real API server and a real S3 server (SeaweedFS): the
//! BackupPolicy, Backup and Restore controllers run in one operator for this test binary
//! (`common::operator("backup")`), each test in namespaces of its own, local storage in a temp
//! dir. Needs KUBECONFIG, OPSEC_S3_ENDPOINT, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY
//! (`hack/with-controlplane.sh cargo test --test backup`).

mod common;

use common::backups::{WAIT, annotate, backup_in, keys_secret, policy, policy_condition, restore};

use std::time::Duration;

use base64::Engine as _;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Namespace, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use opsec_operator::api::backup::{BackupPhase, RestorePhase};
use opsec_operator::api::{Backup, BackupPolicy};
use opsec_operator::backup::{BackupLocation, RestoreOptions, Store, verify};
use opsec_operator::controller::backup::objects::FIRST_LIST_PAGE;
use serde_json::{Value, json};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

struct Env {
    client: Client,
    ns: String,
    /// The on-site store's directory: `onsite` under the namespace's part of the operator's
    /// local root.
    dir: std::path::PathBuf,
}

/// A namespace with the keys Secret, S3 credentials, and the objects to back up.
async fn setup(prefix: &str) -> Env {
    let client = common::client().await;
    common::install_crds();
    common::operator("backup");
    let ns = common::namespace(&client, prefix, &[]).await;
    common::tenant_account(&ns).await;
    let dir = common::local_root().join(&ns).join("onsite");
    keys_secret(&client, &ns, prefix.len() as u8).await;
    create(&client, &ns, json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3-creds"},
        "stringData": {"AWS_ACCESS_KEY_ID": common::s3::env("AWS_ACCESS_KEY_ID"), "AWS_SECRET_ACCESS_KEY": common::s3::env("AWS_SECRET_ACCESS_KEY")}
    })).await;
    seed_objects(&client, &ns).await;
    Env { client, ns, dir }
}

async fn seed_objects(client: &Client, ns: &str) {
    for (name, v) in [("app-config", "one"), ("feature-flags", "two")] {
        create(client, ns, json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": {"app": "web"}}, "data": {"value": v}})).await;
    }
    create(client, ns, json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db-password"}, "stringData": {"password": "s3cr3t"}})).await;
    create(
        client,
        ns,
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "web"}}),
    )
    .await;
    create(client, ns, json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"serviceAccountName": "web",
                "containers": [{"name": "web", "image": "nginx:1.27"}]}}}})).await;
}

async fn create(client: &Client, ns: &str, obj: Value) {
    let (ok, out, err) = {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), serde_json::to_vec(&obj).unwrap()).unwrap();
        common::kubectl(&["create", "-n", ns, "-f", file.path().to_str().unwrap()])
    };
    let _ = client;
    assert!(ok, "kubectl create {obj}: {out} {err}");
}

fn local(_env: &Env) -> Value {
    json!({"name": "onsite", "local": {"path": "onsite"}})
}

fn s3(bucket: &str, secret: &str) -> Value {
    json!({"name": "offsite", "s3": {"bucket": bucket, "endpoint": common::s3::env("OPSEC_S3_ENDPOINT"),
        "prefix": "backups", "credentialsSecretRef": {"name": secret}}})
}

async fn configmap(client: &Client, ns: &str, name: &str) -> Option<ConfigMap> {
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .unwrap()
}

async fn events(client: &Client, ns: &str, reason: &str) -> bool {
    Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .map(|l| l.items.iter().any(|e| e.reason.as_deref() == Some(reason)))
        .unwrap_or(false)
}

#[tokio::test]
async fn backup_to_local_and_s3_then_restore_into_a_fresh_namespace_with_skip_and_overwrite() {
    let env = setup("bk-main").await;
    let c = &env.client;
    let bucket = common::s3::bucket("main").await;
    policy(
        c,
        &env.ns,
        "daily",
        json!({"rpo": "1h", "storage": [local(&env), s3(&bucket, "s3-creds")],
        "resources": {"excludeKinds": ["BackupPolicy"]}}),
    )
    .await;
    let b = backup_in(
        c,
        &env.ns,
        "daily",
        &[BackupPhase::Completed, BackupPhase::Failed],
    )
    .await;
    let s = b.status.clone().unwrap();
    assert_eq!(s.phase, Some(BackupPhase::Completed), "{s:?}");
    assert_eq!(s.sha256.as_deref().map(str::len), Some(64), "{s:?}");
    assert!(
        s.signature_key_id
            .as_deref()
            .is_some_and(|k| k.starts_with("ed25519:")),
        "{s:?}"
    );
    assert!(s.objects >= 5 && s.bytes > 0, "{s:?}");
    assert_eq!(s.locations.len(), 2, "{s:?}");
    assert!(s.locations.iter().all(|l| l.state == "Written"), "{s:?}");
    assert!(b.name_any().starts_with("daily-"), "{}", b.name_any());
    let p = policy_condition(c, &env.ns, "daily", "RPOMet", "True").await;
    let ps = p.status.unwrap();
    assert!(
        ps.last_successful_time.is_some() && ps.next_schedule_time.is_some(),
        "{ps:?}"
    );
    policy_condition(c, &env.ns, "daily", "StorageReachable", "True").await;

    // A fresh namespace that accepts restores from the source, with one object already there.
    let target = common::namespace(c, "bk-target", &[]).await;
    common::tenant_account(&target).await;
    // The source's ServiceAccount writes the restore: the tenant gives it rights in the target.
    common::bind_admin(&target, &env.ns).await;
    policy(c, &target, "accept", json!({"rpo": "1h", "suspend": true, "storage": [{"name": "onsite", "local": {"path": "target"}}],
        "acceptRestoresFrom": [env.ns]})).await;
    create(c, &target, json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "app-config"}, "data": {"value": "changed"}})).await;
    create(c, &target, json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "backup-keys"}, "stringData": {"enc": "x"}})).await;

    let r = restore(c, &env.ns, json!({"backupRef": {"name": b.name_any()}, "targetNamespace": target, "existingObjects": "Skip"})).await;
    let rs = r.status.unwrap();
    assert_eq!(rs.phase, Some(RestorePhase::Completed), "{rs:?}");
    assert!(
        rs.restored >= 4 && rs.skipped >= 1 && rs.failed == 0,
        "{rs:?}"
    );
    assert!(rs.duration.is_some() && rs.storage.is_some(), "{rs:?}");
    assert_eq!(
        configmap(c, &target, "app-config")
            .await
            .unwrap()
            .data
            .unwrap()["value"],
        "changed"
    );
    assert_eq!(
        configmap(c, &target, "feature-flags")
            .await
            .unwrap()
            .data
            .unwrap()["value"],
        "two"
    );
    let secret = Api::<Secret>::namespaced(c.clone(), &target)
        .get("db-password")
        .await
        .unwrap();
    assert_eq!(secret.data.unwrap()["password"].0, b"s3cr3t");
    let (ok, _, _) =
        common::kubectl(&["get", "-n", &target, "serviceaccount/web", "deployment/web"]);
    assert!(ok, "ServiceAccount and Deployment restored");
    // The source's policy stays behind: restored into the target it would back that namespace
    // up under the source's name and keys.
    let policies = Api::<BackupPolicy>::namespaced(c.clone(), &target)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(
        policies
            .items
            .iter()
            .map(|p| p.name_any())
            .collect::<Vec<_>>(),
        vec!["accept".to_string()],
        "only the target's own policy"
    );

    let r = restore(c, &env.ns, json!({"backupRef": {"name": b.name_any()}, "targetNamespace": target, "existingObjects": "Overwrite"})).await;
    let rs = r.status.unwrap();
    assert_eq!(rs.phase, Some(RestorePhase::Completed), "{rs:?}");
    assert_eq!(
        configmap(c, &target, "app-config")
            .await
            .unwrap()
            .data
            .unwrap()["value"],
        "one"
    );

    // A user's Backup runs now.
    let manual: Backup = serde_json::from_value(json!({"apiVersion": "opsec.x1642.dev/v1alpha1", "kind": "Backup",
        "metadata": {"name": "manual-now", "namespace": env.ns}, "spec": {"policyRef": {"name": "daily"}, "trigger": "Manual"}})).unwrap();
    let api = Api::<Backup>::namespaced(c.clone(), &env.ns);
    api.create(&PostParams::default(), &manual).await.unwrap();
    common::eventually(WAIT, "the manual Backup to complete", || {
        let api = api.clone();
        async move {
            let b = api.get("manual-now").await.ok()?;
            (b.status?.phase == Some(BackupPhase::Completed)).then_some(())
        }
    })
    .await;
    common::delete_namespace(c, &target).await;
    common::delete_namespace(c, &env.ns).await;
}

#[tokio::test]
async fn flipped_byte_marks_the_backup_corrupt_and_the_restore_uses_the_s3_copy() {
    let env = setup("bk-corrupt").await;
    let c = &env.client;
    let bucket = common::s3::bucket("corrupt").await;
    policy(
        c,
        &env.ns,
        "p",
        json!({"rpo": "1h", "storage": [local(&env), s3(&bucket, "s3-creds")],
        "resources": {"excludeKinds": ["BackupPolicy"]}, "verification": {"schedule": "@daily"}}),
    )
    .await;
    let b = backup_in(c, &env.ns, "p", &[BackupPhase::Completed]).await;
    let data = env
        .dir
        .join(&env.ns)
        .join("p")
        .join(b.name_any())
        .join("data.tar.zst.enc");
    let mut bytes = std::fs::read(&data).unwrap_or_else(|e| panic!("{}: {e}", data.display()));
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&data, bytes).unwrap();
    annotate(c, &env.ns, "p", "opsec.x1642.dev/verify-now").await;
    let b = backup_in(c, &env.ns, "p", &[BackupPhase::Corrupt]).await;
    let state = |n: &str| common::location_state(&b, n);
    let s = b.status.clone().unwrap();
    assert_eq!(state("onsite").as_deref(), Some("Corrupt"), "{s:?}");
    assert_eq!(state("offsite").as_deref(), Some("Verified"), "{s:?}");
    common::eventually(WAIT, "a BackupCorrupt Event", || async {
        events(c, &env.ns, "BackupCorrupt").await.then_some(())
    })
    .await;
    policy_condition(c, &env.ns, "p", "Verified", "False").await;

    Api::<ConfigMap>::namespaced(c.clone(), &env.ns)
        .delete("app-config", &DeleteParams::default())
        .await
        .unwrap();
    let r = restore(
        c,
        &env.ns,
        json!({"backupRef": {"name": b.metadata.name}, "kinds": ["ConfigMap"]}),
    )
    .await;
    let rs = r.status.unwrap();
    assert_eq!(rs.phase, Some(RestorePhase::Completed), "{rs:?}");
    assert_eq!(rs.storage.as_deref(), Some("offsite"), "{rs:?}");
    assert!(configmap(c, &env.ns, "app-config").await.is_some());

    // The catalogue keeps what verification learned: rebuilt from the stores after the Backup
    // is gone, the copy is marked corrupt again, not trusted as written.
    let pol = Api::<BackupPolicy>::namespaced(c.clone(), &env.ns);
    let remembered = pol.get("p").await.unwrap().status.unwrap().corrupt_copies;
    assert!(
        remembered
            .iter()
            .any(|k| k.backup_id == b.name_any() && k.location == "onsite"),
        "{remembered:?}"
    );
    let backups = Api::<Backup>::namespaced(c.clone(), &env.ns);
    backups
        .delete(&b.name_any(), &DeleteParams::default())
        .await
        .unwrap();
    let rebuilt = common::eventually(WAIT, "the Backup back from the catalogue", || {
        let backups = backups.clone();
        let old = b.uid();
        let name = b.name_any();
        async move {
            let r = backups.get_opt(&name).await.ok()??;
            (r.uid() != old && r.status.as_ref()?.phase.is_some()).then_some(r)
        }
    })
    .await;
    let s = rebuilt.status.clone().unwrap();
    assert_eq!(s.phase, Some(BackupPhase::Corrupt), "{s:?}");
    assert_eq!(
        common::location_state(&rebuilt, "onsite").as_deref(),
        Some("Corrupt"),
        "{s:?}"
    );
    assert_eq!(
        common::location_state(&rebuilt, "offsite").as_deref(),
        Some("Written"),
        "{s:?}"
    );
    common::delete_namespace(c, &env.ns).await;
}

#[tokio::test]
async fn a_wrong_key_fails_clearly_and_restores_nothing() {
    let env = setup("bk-key").await;
    let c = &env.client;
    policy(c, &env.ns, "p", json!({"rpo": "1h", "storage": [local(&env)], "resources": {"excludeKinds": ["BackupPolicy"]}})).await;
    let b = backup_in(c, &env.ns, "p", &[BackupPhase::Completed]).await;
    Api::<ConfigMap>::namespaced(c.clone(), &env.ns)
        .delete("app-config", &DeleteParams::default())
        .await
        .unwrap();
    let other: [u8; 32] = [42; 32];
    Api::<Secret>::namespaced(c.clone(), &env.ns)
        .patch(
            "backup-keys",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"enc": B64.encode(other)}})),
        )
        .await
        .unwrap();
    let r = restore(c, &env.ns, json!({"backupRef": {"name": b.metadata.name}})).await;
    let rs = r.status.unwrap();
    assert_eq!(rs.phase, Some(RestorePhase::Failed), "{rs:?}");
    assert_eq!(rs.restored, 0, "{rs:?}");
    assert!(
        rs.errors.iter().any(|e| e.contains("encrypted with key")),
        "{rs:?}"
    );
    assert!(
        configmap(c, &env.ns, "app-config").await.is_none(),
        "nothing restored"
    );
    common::delete_namespace(c, &env.ns).await;
}

#[tokio::test]
async fn a_missing_s3_secret_marks_storage_unreachable_while_the_local_copy_is_written() {
    let env = setup("bk-nos3").await;
    let c = &env.client;
    let bucket = common::s3::bucket("nos3").await;
    policy(
        c,
        &env.ns,
        "p",
        json!({"rpo": "1h", "storage": [local(&env), s3(&bucket, "no-such-secret")]}),
    )
    .await;
    let b = backup_in(c, &env.ns, "p", &[BackupPhase::Completed]).await;
    let s = b.status.unwrap();
    let loc = |n: &str| s.locations.iter().find(|l| l.name == n).cloned().unwrap();
    assert_eq!(loc("onsite").state, "Written", "{s:?}");
    assert_eq!(loc("offsite").state, "Failed", "{s:?}");
    let p = policy_condition(c, &env.ns, "p", "StorageReachable", "False").await;
    let cond = p
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "StorageReachable")
        .unwrap();
    assert!(
        cond.message.contains("no-such-secret") && cond.message.contains("not found"),
        "{cond:?}"
    );
    common::delete_namespace(c, &env.ns).await;
}

#[tokio::test]
async fn a_restore_into_another_namespace_is_refused_without_accept_restores_from() {
    let env = setup("bk-refuse").await;
    let c = &env.client;
    policy(
        c,
        &env.ns,
        "p",
        json!({"rpo": "1h", "storage": [local(&env)]}),
    )
    .await;
    let b = backup_in(c, &env.ns, "p", &[BackupPhase::Completed]).await;
    let target = common::namespace(c, "bk-refuse-t", &[]).await;
    // Even with rights there, the target must accept restores from the source.
    common::bind_admin(&target, &env.ns).await;
    let r = restore(
        c,
        &env.ns,
        json!({"backupRef": {"name": b.metadata.name}, "targetNamespace": target}),
    )
    .await;
    let rs = r.status.unwrap();
    assert_eq!(rs.phase, Some(RestorePhase::Failed), "{rs:?}");
    assert!(
        rs.errors
            .iter()
            .any(|e| e.contains("does not accept restores")),
        "{rs:?}"
    );
    assert!(configmap(c, &target, "app-config").await.is_none());
    common::delete_namespace(c, &target).await;
    common::delete_namespace(c, &env.ns).await;
}

#[tokio::test]
async fn the_catalogue_is_rebuilt_from_the_store_after_the_backup_objects_are_gone() {
    let env = setup("bk-cat").await;
    let c = &env.client;
    policy(
        c,
        &env.ns,
        "p",
        json!({"rpo": "1h", "storage": [local(&env)]}),
    )
    .await;
    let b = backup_in(c, &env.ns, "p", &[BackupPhase::Completed]).await;
    let id = b.name_any();
    let pol = Api::<BackupPolicy>::namespaced(c.clone(), &env.ns);
    pol.patch(
        "p",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"suspend": true}})),
    )
    .await
    .unwrap();
    let api = Api::<Backup>::namespaced(c.clone(), &env.ns);
    api.delete(&id, &DeleteParams::default()).await.unwrap();
    let rebuilt = common::eventually(WAIT, "the Backup to come back from the catalogue", || {
        let api = api.clone();
        let id = id.clone();
        async move {
            let b = api.get_opt(&id).await.ok()??;
            (b.metadata.uid.is_some()
                && b.status.as_ref()?.phase == Some(BackupPhase::Completed)
                && format!("{:?}", b.spec.trigger) == "Catalogue")
                .then_some(b)
        }
    })
    .await;
    let s = rebuilt.status.unwrap();
    assert_eq!(s.sha256, b.status.as_ref().unwrap().sha256, "{s:?}");
    assert_eq!(s.objects, b.status.as_ref().unwrap().objects, "{s:?}");

    // A backup is restorable by its store id alone.
    Api::<ConfigMap>::namespaced(c.clone(), &env.ns)
        .delete("feature-flags", &DeleteParams::default())
        .await
        .unwrap();
    let r = restore(
        c,
        &env.ns,
        json!({"source": {"policyRef": {"name": "p"}, "backupId": id, "storage": "onsite"}, "kinds": ["ConfigMap"]}),
    )
    .await;
    let rs = r.status.unwrap();
    assert_eq!(rs.phase, Some(RestorePhase::Completed), "{rs:?}");
    assert_eq!(
        configmap(c, &env.ns, "feature-flags")
            .await
            .unwrap()
            .data
            .unwrap()["value"],
        "two"
    );
    common::delete_namespace(c, &env.ns).await;
}

#[tokio::test]
async fn a_restore_test_records_its_duration_and_deletes_its_scratch_namespace() {
    let env = setup("bk-rt").await;
    let c = &env.client;
    policy(c, &env.ns, "p", json!({"rpo": "1h", "rto": "5m", "storage": [local(&env)],
        "verification": {"schedule": "@daily", "restoreTest": {"schedule": "@weekly", "timeout": "10m"}}})).await;
    backup_in(c, &env.ns, "p", &[BackupPhase::Completed]).await;
    annotate(c, &env.ns, "p", "opsec.x1642.dev/restore-test-now").await;
    let p = policy_condition(c, &env.ns, "p", "RTOMet", "True").await;
    let t = p.status.unwrap().last_restore_test.unwrap();
    assert_eq!(t.result, "Passed", "{t:?}");
    assert!(t.objects_compared >= 5 && t.mismatches == 0, "{t:?}");
    assert!(!t.duration.is_empty(), "{t:?}");
    let namespaces = Api::<Namespace>::all(c.clone());
    let scratch = namespaces
        .list(&ListParams::default().labels(&format!("opsec.x1642.dev/restore-test-of={}", env.ns)))
        .await
        .unwrap();
    assert!(
        scratch
            .items
            .iter()
            .all(|n| n.metadata.deletion_timestamp.is_some()),
        "scratch namespaces are deleted: {:?}",
        scratch
            .items
            .iter()
            .map(|n| n.name_any())
            .collect::<Vec<_>>()
    );
    common::delete_namespace(c, &env.ns).await;
}

/// NodePort and LoadBalancer Services hold ports the cluster gave them: the export leaves those
/// out (unless the policy keeps them), so a restore test beside the original, where the ports
/// are taken, restores and compares every object; with `keepNodePorts` the archive keeps them
/// and the restore test still gives the sandbox's Services ports of their own.
#[tokio::test]
async fn services_with_node_ports_are_restore_tested_beside_the_original() {
    let env = setup("bk-np").await;
    let c = &env.client;
    create(c, &env.ns, json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"type": "NodePort", "selector": {"app": "web"}, "ports": [{"name": "http", "port": 80}, {"name": "https", "port": 443}]}})).await;
    create(c, &env.ns, json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "edge"},
        "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local", "selector": {"app": "edge"}, "ports": [{"port": 8443}]}})).await;
    for (name, keep) in [("p", false), ("kept", true)] {
        policy(c, &env.ns, name, json!({"rpo": "1h", "rto": "5m", "storage": [{"name": "onsite", "local": {"path": name}}],
            "resources": {"keepNodePorts": keep},
            "verification": {"schedule": "@daily", "restoreTest": {"schedule": "@weekly", "timeout": "10m"}}})).await;
        let b = backup_in(c, &env.ns, name, &[BackupPhase::Completed]).await;
        assert!(
            b.status.unwrap().objects >= 7,
            "{name}: the Services are in the backup"
        );
        annotate(c, &env.ns, name, "opsec.x1642.dev/restore-test-now").await;
        let p = policy_condition(c, &env.ns, name, "RTOMet", "True").await;
        let t = p.status.unwrap().last_restore_test.unwrap();
        assert_eq!(t.result, "Passed", "{name}: {t:?}");
        assert!(
            t.objects_compared >= 7 && t.mismatches == 0,
            "{name}: {t:?}"
        );
    }
    common::delete_namespace(c, &env.ns).await;
}

#[tokio::test]
async fn rpo_met_turns_false_when_the_newest_backup_is_older_than_the_rpo() {
    let env = setup("bk-rpo").await;
    let c = &env.client;
    policy(
        c,
        &env.ns,
        "p",
        json!({"rpo": "1m", "storage": [local(&env)]}),
    )
    .await;
    backup_in(c, &env.ns, "p", &[BackupPhase::Completed]).await;
    let pol = Api::<BackupPolicy>::namespaced(c.clone(), &env.ns);
    pol.patch(
        "p",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"suspend": true}})),
    )
    .await
    .unwrap();
    policy_condition(c, &env.ns, "p", "RPOMet", "True").await;
    policy_condition(c, &env.ns, "p", "RPOMet", "False").await;
    common::eventually(WAIT, "an RPOBreached Event", || async {
        events(c, &env.ns, "RPOBreached").await.then_some(())
    })
    .await;
    common::delete_namespace(c, &env.ns).await;
}

/// Relays 127.0.0.1:`port` to the real S3 server: the endpoint the policy names comes up.
async fn bring_up_s3_on(port: u16) -> tokio::task::JoinHandle<()> {
    let upstream = common::s3::env("OPSEC_S3_ENDPOINT")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("listen on the S3 endpoint's port");
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let upstream = upstream.clone();
            tokio::spawn(async move {
                if let Ok(mut out) = tokio::net::TcpStream::connect(&upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                }
            });
        }
    })
}

fn s3_store(bucket: &str) -> Store {
    Store::s3("offsite", &common::s3::config(bucket)).unwrap()
}

#[tokio::test]
async fn an_unreachable_s3_endpoint_keeps_the_onsite_copy_and_the_offsite_copy_lands_once_it_is_back()
 {
    let env = setup("bk-down").await;
    let c = &env.client;
    let bucket = common::s3::bucket("down").await;
    // A loopback port nothing listens on (one the operator's allowlist names): the off-site
    // endpoint is down.
    let port = common::relay_port();
    let mut offsite = s3(&bucket, "s3-creds");
    offsite["s3"]["endpoint"] = json!(format!("http://127.0.0.1:{port}"));
    policy(
        c,
        &env.ns,
        "p",
        json!({"rpo": "1h", "storage": [local(&env), offsite]}),
    )
    .await;
    let b = backup_in(
        c,
        &env.ns,
        "p",
        &[BackupPhase::Completed, BackupPhase::Failed],
    )
    .await;
    let id = b.name_any();
    let s = b.status.clone().unwrap();
    assert_eq!(s.phase, Some(BackupPhase::Completed), "{s:?}");
    assert_eq!(
        common::location_state(&b, "onsite").as_deref(),
        Some("Written"),
        "{s:?}"
    );
    assert_eq!(
        common::location_state(&b, "offsite").as_deref(),
        Some("Failed"),
        "{s:?}"
    );
    let onsite = Store::local("onsite", &env.dir).unwrap();
    let listed = onsite.list_backups(&env.ns, "p").await.unwrap();
    assert!(
        listed
            .iter()
            .any(|e| e.backup_id == id && e.manifest.is_ok()),
        "the on-site copy is complete: {listed:?}"
    );

    let p = policy_condition(c, &env.ns, "p", "StorageReachable", "False").await;
    let cond = p
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "StorageReachable")
        .unwrap();
    assert_eq!(cond.reason, "StorageUnreachable", "{cond:?}");
    assert!(
        cond.message.contains("offsite") && cond.message.contains("could not be reached"),
        "{cond:?}"
    );
    for reason in ["StorageUnreachable", "StorageFailed", "CopyRetryFailed"] {
        common::eventually(WAIT, &format!("a {reason} Event"), || async {
            events(c, &env.ns, reason).await.then_some(())
        })
        .await;
    }
    let api = Api::<Backup>::namespaced(c.clone(), &env.ns);
    assert_eq!(
        common::location_state(&api.get(&id).await.unwrap(), "offsite").as_deref(),
        Some("Failed")
    );

    // The endpoint comes back: the retry copies the stored on-site copy there.
    let relay = bring_up_s3_on(port).await;
    let b = common::eventually(
        Duration::from_secs(180),
        "the off-site copy to be written",
        || {
            let api = api.clone();
            let id = id.clone();
            async move {
                let b = api.get(&id).await.ok()?;
                (common::location_state(&b, "offsite").as_deref() == Some("Written")).then_some(b)
            }
        },
    )
    .await;
    let s2 = b.status.unwrap();
    assert_eq!(s2.sha256, s.sha256, "not re-exported: {s2:?}");
    let ready = s2.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(ready.reason, "Completed", "{ready:?}");
    let s3 = s3_store(&bucket);
    let in_s3 = s3.list_backups(&env.ns, "p").await.unwrap();
    let entry = in_s3
        .iter()
        .find(|e| e.backup_id == id)
        .unwrap_or_else(|| panic!("{id} in the bucket: {in_s3:?}"));
    assert!(entry.signed && entry.manifest.is_ok(), "{entry:?}");
    let loc = BackupLocation::new(&env.ns, "p", &id).unwrap();
    let report = verify(&s3, &loc, &RestoreOptions::default()).await.unwrap();
    assert_eq!(Some(report.archive_sha256), s.sha256);
    policy_condition(c, &env.ns, "p", "StorageReachable", "True").await;
    common::eventually(WAIT, "a CopyReplicated Event", || async {
        events(c, &env.ns, "CopyReplicated").await.then_some(())
    })
    .await;
    relay.abort();
    common::delete_namespace(c, &env.ns).await;
}

#[tokio::test]
async fn verification_runs_on_its_schedule_without_being_asked() {
    let env = setup("bk-vsched").await;
    let c = &env.client;
    // Every minute: the shortest a five-field cron schedule allows.
    policy(
        c,
        &env.ns,
        "p",
        json!({"rpo": "1h", "storage": [local(&env)], "verification": {"schedule": "* * * * *"}}),
    )
    .await;
    let b = backup_in(
        c,
        &env.ns,
        "p",
        &[BackupPhase::Completed, BackupPhase::Verified],
    )
    .await;
    let api = Api::<Backup>::namespaced(c.clone(), &env.ns);
    let verified = common::eventually(
        Duration::from_secs(150),
        "the backup to be verified on schedule",
        || {
            let api = api.clone();
            let name = b.name_any();
            async move {
                let b = api.get(&name).await.ok()?;
                (b.status.as_ref()?.phase == Some(BackupPhase::Verified)).then_some(b)
            }
        },
    )
    .await;
    let s = verified.status.unwrap();
    assert_eq!(
        s.verification.as_ref().map(|v| v.result.as_str()),
        Some("Verified"),
        "{s:?}"
    );
    assert_eq!(
        common::location_state(&api.get(&b.name_any()).await.unwrap(), "onsite").as_deref(),
        Some("Verified")
    );
    let p = policy_condition(c, &env.ns, "p", "Verified", "True").await;
    assert!(
        !p.annotations().contains_key("opsec.x1642.dev/verify-now"),
        "nobody asked"
    );
    let v = p.status.unwrap().last_verification.unwrap();
    assert!(v.verified >= 1 && v.failed == 0, "{v:?}");
    common::delete_namespace(c, &env.ns).await;
}

#[tokio::test]
async fn retention_deletes_the_oldest_copies_but_never_the_last_verified_one() {
    let env = setup("bk-ret").await;
    let c = &env.client;
    policy(
        c,
        &env.ns,
        "p",
        json!({"rpo": "1h", "storage": [local(&env)], "retention": {"copies": 2},
            "verification": {"schedule": "@yearly"}}),
    )
    .await;
    let first = backup_in(c, &env.ns, "p", &[BackupPhase::Completed]).await;
    let first = first.name_any();
    annotate(c, &env.ns, "p", "opsec.x1642.dev/verify-now").await;
    backup_in(c, &env.ns, "p", &[BackupPhase::Verified]).await;

    let api = Api::<Backup>::namespaced(c.clone(), &env.ns);
    for n in ["m2", "m3", "m4"] {
        // Distinct start times, so "oldest" is unambiguous.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let b: Backup = serde_json::from_value(json!({"apiVersion": "opsec.x1642.dev/v1alpha1", "kind": "Backup",
            "metadata": {"name": n, "namespace": env.ns}, "spec": {"policyRef": {"name": "p"}, "trigger": "Manual"}})).unwrap();
        api.create(&PostParams::default(), &b).await.unwrap();
        common::eventually(WAIT, &format!("{n} to complete"), || {
            let api = api.clone();
            async move {
                let b = api.get_opt(n).await.ok()??;
                (b.status?.phase == Some(BackupPhase::Completed)).then_some(())
            }
        })
        .await;
    }
    // Newest first: m4, m3 are the two copies kept; m2 goes; the first backup is older than
    // all of them but the only verified one, so it stays.
    let store = Store::local("onsite", &env.dir).unwrap();
    common::eventually(WAIT, "retention to delete m2", || {
        let api = api.clone();
        let store = store.clone();
        let ns = env.ns.clone();
        async move {
            let gone = api.get_opt("m2").await.ok()?.is_none();
            let ids = common::stored_backup_ids(&store, &ns, "p").await.ok()?;
            (gone && !ids.contains(&"m2".to_string())).then_some(())
        }
    })
    .await;
    let mut names: Vec<String> = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|b| b.name_any())
        .collect();
    names.sort();
    let mut want = vec!["m3".to_string(), "m4".to_string(), first.clone()];
    want.sort();
    assert_eq!(names, want);
    let ids = common::stored_backup_ids(&store, &env.ns, "p")
        .await
        .unwrap();
    assert_eq!(ids, want, "the store holds the same copies");
    assert!(
        store
            .list_incomplete(&env.ns, "p")
            .await
            .unwrap()
            .is_empty(),
        "nothing is left half-deleted"
    );
    assert_eq!(
        api.get(&first).await.unwrap().status.unwrap().phase,
        Some(BackupPhase::Verified)
    );
    common::eventually(WAIT, "a RetentionDeleted Event", || async {
        events(c, &env.ns, "RetentionDeleted").await.then_some(())
    })
    .await;
    common::delete_namespace(c, &env.ns).await;
}

/// Every item of a kind, listed a page at a time through `state`, and how many pages.
async fn items_page_by_page(
    client: &Client,
    ns: &str,
    ar: &kube::api::ApiResource,
    state: &mut opsec_operator::controller::backup::objects::ListState,
) -> (Vec<opsec_operator::backup::RawObject>, usize) {
    use opsec_operator::controller::backup::objects::{LIST_PAGE, list_page};
    let (mut items, mut token, mut pages) = (Vec::new(), None::<String>, 0);
    loop {
        let page = list_page(client, ns, ar, "", token.as_deref(), LIST_PAGE, state)
            .await
            .unwrap()
            .expect("listable");
        pages += 1;
        token = page.continue_token().map(str::to_string);
        items.extend(page.into_items());
        if token.is_none() {
            return (items, pages);
        }
    }
}

/// The `metadata.name` of a listed item.
fn item_name(item: &opsec_operator::backup::RawObject) -> String {
    let meta: Value = serde_json::from_str(item["metadata"].get()).unwrap();
    meta["name"].as_str().unwrap().to_string()
}

/// Every page of a kind as `(name, exported JSON or skip reason)`, listed as protobuf or as JSON.
async fn exported_by_name(
    client: &Client,
    ns: &str,
    ar: &kube::api::ApiResource,
    protobuf: bool,
) -> std::collections::BTreeMap<String, Result<Value, String>> {
    use opsec_operator::backup::Exported;
    use opsec_operator::backup::export::export_raw;
    use opsec_operator::controller::backup::objects::ListState;
    let mut state = if protobuf {
        ListState::default()
    } else {
        ListState::json()
    };
    let (items, pages) = items_page_by_page(client, ns, ar, &mut state).await;
    let mut out = std::collections::BTreeMap::new();
    for item in items {
        let mut bytes = Vec::new();
        let exported = match export_raw(&ar.api_version, &ar.kind, &item, &mut bytes).unwrap() {
            Exported::Keep(_) => Ok(serde_json::from_slice(&bytes).unwrap()),
            Exported::Skip(reason) => Err(reason.as_str().to_string()),
        };
        out.insert(item_name(&item), exported);
    }
    assert_eq!(
        state.protobuf(),
        protobuf,
        "{} pages of {} listed in the encoding asked for",
        pages,
        ar.kind
    );
    out
}

/// `Kind/name` of every object of a kind, listed a page at a time (protobuf).
async fn names_page_by_page(client: &Client, ns: &str, ar: &kube::api::ApiResource) -> Vec<String> {
    let mut state = opsec_operator::controller::backup::objects::ListState::default();
    let (items, _) = items_page_by_page(client, ns, ar, &mut state).await;
    items
        .iter()
        .map(|item| format!("{}/{}", ar.kind, item_name(item)))
        .collect()
}

#[tokio::test]
async fn configmaps_and_secrets_listed_as_protobuf_export_as_they_do_listed_as_json() {
    use futures::StreamExt as _;
    use kube::api::ApiResource;
    let client = common::client().await;
    let ns = common::namespace(&client, "bk-proto", &[]).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let pp = PostParams::default();
    let tricky = serde_json::from_value::<ConfigMap>(json!({
        "metadata": {"name": "tricky", "labels": {"app": "web", "empty": ""},
            "annotations": {"html": "<b>&amp;</b>", "separators": "a\u{2028}b\u{2029}c", "accents": "é ✓ 🦀"}},
        "data": {"app.conf": "line one\n\ttab \"quoted\" back\\slash \u{1} \u{7f}", "empty": ""},
        "binaryData": {"blob": B64.encode([0u8, 1, 2, 0xfe, 0xff])},
        "immutable": true
    }))
    .unwrap();
    let tricky = cms.create(&pp, &tricky).await.unwrap();
    let owner = json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "tricky",
        "uid": tricky.metadata.uid.clone().unwrap()}]);
    let mut controlled = owner.clone();
    controlled[0]["controller"] = json!(true);
    controlled[0]["blockOwnerDeletion"] = json!(false);
    for cm in [
        json!({"metadata": {"generateName": "generated-"}, "data": {"k": "v"}}),
        json!({"metadata": {"name": "owned", "ownerReferences": owner}, "data": {"k": "v"}}),
        json!({"metadata": {"name": "controlled", "ownerReferences": controlled}}),
        json!({"metadata": {"name": "mutable"}, "immutable": false}),
    ] {
        cms.create(&pp, &serde_json::from_value(cm).unwrap())
            .await
            .unwrap();
    }
    for s in [
        json!({"metadata": {"name": "tls", "labels": {"tier": "edge"}}, "type": "kubernetes.io/tls",
            "data": {"tls.crt": B64.encode(b"cert\n"), "tls.key": B64.encode([0u8, 0xff, 0x80])}}),
        json!({"metadata": {"name": "opaque"}, "stringData": {"password": "s3cr3t"}, "immutable": false}),
        json!({"metadata": {"name": "no-data"}}),
    ] {
        secrets
            .create(&pp, &serde_json::from_value(s).unwrap())
            .await
            .unwrap();
    }
    // More than a page of 500, so that continue tokens are followed in both encodings.
    futures::stream::iter(0..520)
        .map(|i| {
            let cms = cms.clone();
            let cm =
                json!({"metadata": {"name": format!("bulk-{i:03}")}, "data": {"i": i.to_string()}});
            async move {
                cms.create(&PostParams::default(), &serde_json::from_value(cm).unwrap())
                    .await
                    .unwrap()
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;

    for ar in [
        ApiResource::erase::<ConfigMap>(&()),
        ApiResource::erase::<Secret>(&()),
    ] {
        let from_protobuf = exported_by_name(&client, &ns, &ar, true).await;
        let from_json = exported_by_name(&client, &ns, &ar, false).await;
        assert_eq!(from_protobuf, from_json, "{} exported alike", ar.kind);
        if ar.kind == "ConfigMap" {
            assert_eq!(
                from_protobuf.len(),
                1 + 4 + 520 + 1,
                "with kube-root-ca.crt"
            );
            assert_eq!(
                from_protobuf["kube-root-ca.crt"],
                Err("RootCAConfigMap".into())
            );
            assert_eq!(from_protobuf["controlled"], Err("OwnedByController".into()));
            let tricky = from_protobuf["tricky"].as_ref().unwrap();
            assert_eq!(tricky["metadata"]["annotations"]["accents"], "é ✓ 🦀");
            assert_eq!(
                tricky["binaryData"]["blob"],
                B64.encode([0u8, 1, 2, 0xfe, 0xff])
            );
            assert_eq!(tricky["immutable"], true);
            assert!(
                tricky["metadata"].get("uid").is_none(),
                "server fields stripped"
            );
            assert!(from_protobuf.keys().any(|n| n.starts_with("generated-")));
        } else {
            assert_eq!(
                from_protobuf["opaque"].as_ref().unwrap()["immutable"],
                false
            );
            assert_eq!(
                from_protobuf["opaque"].as_ref().unwrap()["data"]["password"],
                B64.encode("s3cr3t")
            );
        }
    }
    // The controller's lister, a page ahead of its reader, across kinds: every object once, in
    // the order of a page-by-page list.
    let kinds = [
        ApiResource::erase::<ConfigMap>(&()),
        ApiResource::erase::<Secret>(&()),
    ];
    let mut one_by_one = Vec::new();
    for ar in &kinds {
        one_by_one.extend(names_page_by_page(&client, &ns, ar).await);
    }
    let mut ahead = opsec_operator::controller::backup::objects::ListAhead::start(
        client.clone(),
        ns.clone(),
        kinds.to_vec(),
        String::new(),
    );
    let (mut listed, mut page_sizes) = (Vec::new(), Vec::new());
    while let Some(page) = ahead.next().await {
        let page = page.unwrap();
        page_sizes.push(page.items.len());
        for item in &page.items {
            listed.push(format!("{}/{}", page.kind.kind, item_name(item)));
        }
    }
    // A short first page (the archive waits for it), then full ones.
    assert_eq!(
        page_sizes,
        [FIRST_LIST_PAGE as usize, 526 - FIRST_LIST_PAGE as usize, 3],
        "two pages of ConfigMaps, one of Secrets"
    );
    assert_eq!(listed.len(), 526 + 3);
    assert_eq!(listed, one_by_one);
    common::delete_namespace(&client, &ns).await;
}
