//! Backups interrupted by an operator restart, against a real API server: Backups left
//! `Running` by an operator that stopped, and the copies that run left in the store, are seeded
//! before this binary's operator starts (a test binary of its own, so no operator is running
//! yet). A run that had not committed is marked Failed with reason `Interrupted` and never run
//! again, and its partial copy is deleted; a run that had committed its copy is completed from
//! it; a complete copy is never deleted; and `opsec-operator backup list` never lists the
//! partial copy. Needs KUBECONFIG (`hack/with-controlplane.sh cargo test --test
//! backup_interrupted`).

mod common;

use std::time::{Duration, SystemTime};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use opsec_operator::api::backup::BackupPhase;
use opsec_operator::api::{Backup, BackupPolicy};
use opsec_operator::backup::{BackupLocation, BackupMeta, BackupOptions, Store, run_backup};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

/// Writes a complete backup with the real engine, as an earlier run did (signed with the
/// operator's key, as every run signs).
async fn complete_copy(store: &Store, ns: &str, id: &str, key: &ed25519_dalek::SigningKey) {
    let obj = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "app", "namespace": ns}, "data": {"k": "v"}});
    let meta = BackupMeta {
        namespace: ns.into(),
        policy: "p".into(),
        backup_id: id.into(),
        created_at: Timestamp::now() - SignedDuration::from_hours(1),
    };
    run_backup(
        meta,
        BackupOptions {
            signing_key: Some(key.clone()),
            ..Default::default()
        },
        futures::stream::iter([Ok::<_, std::io::Error>(obj)]),
        std::slice::from_ref(store),
    )
    .await
    .expect("write a complete backup");
}

/// Sets the modification time of every file under `dir` an hour back.
fn age(dir: &std::path::Path) {
    let then = SystemTime::now() - Duration::from_secs(3600);
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            age(&path);
        } else {
            std::fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(then)
                .unwrap();
        }
    }
}

/// `opsec-operator backup list` of the store: the ids it lists.
fn cli_list(dir: &std::path::Path, ns: &str) -> Vec<String> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_opsec-operator"))
        .args(["backup", "list", "--store", dir.to_str().unwrap()])
        .args(["--namespace", ns, "--policy", "p"])
        .output()
        .expect("run opsec-operator backup list");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "backup list: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// A Backup of policy `p` whose status says a run started five minutes ago is in progress.
async fn left_running(api: &Api<Backup>, ns: &str, name: &str) {
    let b: Backup = serde_json::from_value(json!({"apiVersion": "opsec.x1642.dev/v1alpha1",
        "kind": "Backup", "metadata": {"name": name, "namespace": ns,
            "labels": {"opsec.x1642.dev/backup-policy": "p"}},
        "spec": {"policyRef": {"name": "p"}, "trigger": "Scheduled"}}))
    .unwrap();
    api.create(&PostParams::default(), &b).await.unwrap();
    let started = Timestamp::now() - SignedDuration::from_mins(5);
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Running", "backupId": name,
            "startTime": started.to_string()}})),
    )
    .await
    .unwrap();
}

async fn event(client: &kube::Client, ns: &str, object: &str, reason: &str) -> bool {
    Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .map(|l| {
            l.items.iter().any(|e| {
                e.reason.as_deref() == Some(reason)
                    && e.involved_object.name.as_deref() == Some(object)
            })
        })
        .unwrap_or(false)
}

#[tokio::test]
async fn backups_left_running_by_a_stopped_operator_are_failed_or_recovered_never_rerun() {
    let client = common::client().await;
    common::install_crds();
    let ns = common::namespace(&client, "bk-intr", &[]).await;
    common::tenant_account(&ns).await;
    let key = common::operator_signing_key(&client).await;
    let dir = common::local_root().join(&ns).join("onsite");
    let store = Store::local("onsite", &dir).unwrap();

    // The store as the stopped operator left it: an older complete backup, the committed copy
    // of a run that stopped before recording it, and the partial copy of a run that stopped
    // mid-way (its data and signature, no manifest.json).
    complete_copy(&store, &ns, "p-complete", &key).await;
    complete_copy(&store, &ns, "p-committed", &key).await;
    let partial = BackupLocation::new(&ns, "p", "p-interrupted").unwrap();
    let mut up = store.start_data(&partial).await.unwrap();
    up.write(bytes::Bytes::from_static(b"the first part of an archive"));
    up.finish().await.unwrap();
    store.put_signature(&partial, "c2ln").await.unwrap();
    age(dir.as_path());
    let listed = cli_list(dir.as_path(), &ns);
    assert!(
        listed.contains(&"p-complete".to_string()) && !listed.contains(&"p-interrupted".into()),
        "{listed:?}"
    );

    let p: BackupPolicy = serde_json::from_value(json!({"apiVersion": "opsec.x1642.dev/v1alpha1",
        "kind": "BackupPolicy", "metadata": {"name": "p", "namespace": ns},
        "spec": {"rpo": "1h", "storage": [{"name": "onsite", "local": {"path": "onsite"}}]}}))
    .unwrap();
    Api::<BackupPolicy>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &p)
        .await
        .unwrap();
    let api = Api::<Backup>::namespaced(client.clone(), &ns);
    left_running(&api, &ns, "p-interrupted").await;
    left_running(&api, &ns, "p-committed").await;

    // The operator starts again.
    common::operator("backup");

    let phase_of = |name: &'static str, phase: BackupPhase| {
        let api = api.clone();
        async move {
            common::eventually(WAIT, &format!("{name} to be {phase:?}"), || {
                let api = api.clone();
                async move {
                    let b = api.get(name).await.ok()?;
                    (b.status.as_ref()?.phase == Some(phase)).then_some(b)
                }
            })
            .await
        }
    };
    let b = phase_of("p-interrupted", BackupPhase::Failed).await;
    let s = b.status.unwrap();
    let ready = s.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "Interrupted"),
        "{s:?}"
    );
    assert!(
        s.error
            .as_deref()
            .is_some_and(|e| e.contains("interrupted")),
        "{s:?}"
    );
    assert!(
        s.objects == 0 && s.sha256.is_none() && s.locations.is_empty(),
        "not run again: {s:?}"
    );
    common::eventually(WAIT, "a BackupInterrupted Event", || async {
        event(&client, &ns, "p-interrupted", "BackupInterrupted")
            .await
            .then_some(())
    })
    .await;

    let b = phase_of("p-committed", BackupPhase::Completed).await;
    let s = b.status.unwrap();
    let ready = s.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(ready.reason, "Recovered", "{s:?}");
    assert!(s.objects == 1 && s.sha256.is_some(), "{s:?}");
    assert_eq!(s.locations.len(), 1, "{s:?}");
    assert_eq!(s.locations[0].state, "Written", "{s:?}");

    // The partial copy goes; the complete ones stay, and the catalogue brings p-complete back.
    common::eventually(WAIT, "the partial copy to be deleted", || {
        let store = store.clone();
        let ns = ns.clone();
        async move {
            store
                .list_incomplete(&ns, "p")
                .await
                .ok()?
                .is_empty()
                .then_some(())
        }
    })
    .await;
    assert!(
        !dir.join(&ns)
            .join("p")
            .join("p-interrupted")
            .join("data.tar.zst.enc")
            .exists()
    );
    common::eventually(WAIT, "an IncompleteCopyDeleted Event", || async {
        event(&client, &ns, "p", "IncompleteCopyDeleted")
            .await
            .then_some(())
    })
    .await;
    phase_of("p-complete", BackupPhase::Completed).await;
    let ids = common::stored_backup_ids(&store, &ns, "p").await.unwrap();
    assert_eq!(ids, ["p-committed", "p-complete"]);
    let mut listed = cli_list(dir.as_path(), &ns);
    listed.sort();
    assert_eq!(listed, ["p-committed", "p-complete"]);
    assert_eq!(
        api.get("p-interrupted")
            .await
            .unwrap()
            .status
            .unwrap()
            .phase,
        Some(BackupPhase::Failed),
        "still Failed, not re-run"
    );
    common::delete_namespace(&client, &ns).await;
}
