//! Backups under faults, against the real API server and a real S3 server (SeaweedFS): the
//! off-site store frozen with SIGSTOP during a backup does not hold up the on-site commit, and
//! the operator killed with SIGKILL in that window keeps the on-site copy when it restarts;
//! wrong S3 credentials fail with a stable condition, so the status is not rewritten again and
//! again. A test binary of its own: it freezes the S3 server and kills its own operator. Needs
//! KUBECONFIG and the S3 settings (`make test`).

mod common;

use std::time::Duration;

use base64::Engine as _;
use futures::StreamExt;
use kube::Client;
use kube::api::{Api, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use opsec_operator::api::backup::BackupPhase;
use opsec_operator::api::{Backup, BackupPolicy};
use opsec_operator::backup::{BackupLocation, Store};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(120);

/// The tests take turns: one of them freezes the S3 server the other uses.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn start(lease: &str) -> common::OperatorProcess {
    common::start_operator(
        "backup",
        lease,
        &["--lease-duration", "4s", "--lease-retry", "1s"],
    )
    .0
}

fn apply(ns: &str, obj: &Value) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), serde_json::to_vec(obj).unwrap()).unwrap();
    let (ok, out, err) = common::kubectl(&["apply", "-n", ns, "-f", file.path().to_str().unwrap()]);
    assert!(ok, "{out} {err}");
}

/// A tenant namespace with its keys, S3 credentials (`secret` key as given) and a bucket.
async fn tenant(client: &Client, prefix: &str, s3_secret: &str) -> (String, String) {
    common::install_crds();
    let ns = common::namespace(client, prefix, &[]).await;
    common::tenant_account(&ns).await;
    let key = base64::engine::general_purpose::STANDARD.encode([5u8; 32]);
    apply(
        &ns,
        &json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "keys"}, "stringData": {"enc": key}}),
    );
    apply(
        &ns,
        &json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3"}, "stringData": {
        "AWS_ACCESS_KEY_ID": common::s3::env("AWS_ACCESS_KEY_ID"), "AWS_SECRET_ACCESS_KEY": s3_secret}}),
    );
    let items: Vec<Value> = (0..50)
        .map(|i| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("cm-{i}")}, "data": {"i": i.to_string()}}))
        .collect();
    apply(
        &ns,
        &json!({"apiVersion": "v1", "kind": "List", "items": items}),
    );
    (ns, common::s3::bucket(prefix).await)
}

async fn policy(client: &Client, ns: &str, bucket: &str) {
    let p: BackupPolicy = serde_json::from_value(json!({"apiVersion": "opsec.x1642.dev/v1alpha1",
        "kind": "BackupPolicy", "metadata": {"name": "p", "namespace": ns},
        "spec": {"rpo": "1h", "suspend": true,
            "storage": [{"name": "onsite", "local": {"path": "onsite"}},
                {"name": "offsite", "s3": {"bucket": bucket, "endpoint": common::s3::env("OPSEC_S3_ENDPOINT"),
                    "prefix": "backups", "credentialsSecretRef": {"name": "s3"}}}],
            "encryption": {"keySecretRef": {"name": "keys", "key": "enc"}}}}))
    .unwrap();
    Api::<BackupPolicy>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &p)
        .await
        .unwrap();
}

async fn backup_now(client: &Client, ns: &str, name: &str) {
    let b: Backup = serde_json::from_value(
        json!({"apiVersion": "opsec.x1642.dev/v1alpha1", "kind": "Backup",
        "metadata": {"name": name, "namespace": ns}, "spec": {"policyRef": {"name": "p"}}}),
    )
    .unwrap();
    Api::<Backup>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &b)
        .await
        .unwrap();
}

/// Backup `name` once its phase is one of `phases`.
async fn backup_in(client: &Client, ns: &str, name: &str, phases: &[BackupPhase]) -> Backup {
    let backups = Api::<Backup>::namespaced(client.clone(), ns);
    common::eventually(WAIT, &format!("{name} to be {phases:?}"), || {
        let backups = backups.clone();
        async move {
            let b = backups.get(name).await.ok()?;
            let phase = b.status.as_ref()?.phase?;
            phases.contains(&phase).then_some(b)
        }
    })
    .await
}

fn seaweedfs_pid() -> u32 {
    let endpoint = common::s3::env("OPSEC_S3_ENDPOINT");
    let port = endpoint.rsplit(':').next().unwrap().trim_end_matches('/');
    common::process_with("weed", &format!("-s3.port={port}"))
        .unwrap_or_else(|| panic!("no local SeaweedFS serves {endpoint}: this test freezes it"))
}

#[tokio::test]
async fn a_frozen_off_site_store_does_not_hold_up_the_on_site_commit_and_a_kill_then_keeps_it() {
    let _turn = SERIAL.lock().await;
    let client = common::client().await;
    let (ns, bucket) = tenant(
        &client,
        "fault-s3",
        &common::s3::env("AWS_SECRET_ACCESS_KEY"),
    )
    .await;
    policy(&client, &ns, &bucket).await;
    let lease = common::unique("fault-s3");
    let mut operator = start(&lease);
    let onsite = Store::local("onsite", common::local_root().join(&ns).join("onsite")).unwrap();
    let backups = Api::<Backup>::namespaced(client.clone(), &ns);

    let frozen = common::Frozen::stop(seaweedfs_pid());
    backup_now(&client, &ns, "during-freeze").await;
    // The on-site copy commits while the off-site upload hangs: it is complete while the
    // Backup still runs (the off-site copy can neither finish nor fail while S3 is frozen
    // and its requests have not timed out).
    let loc = BackupLocation::new(&ns, "p", "during-freeze").unwrap();
    common::eventually(
        WAIT,
        "the on-site copy to commit while S3 is frozen",
        || {
            let (onsite, loc, backups) = (onsite.clone(), loc.clone(), backups.clone());
            async move {
                onsite.read_manifest(&loc).await.ok()?;
                let b = backups.get("during-freeze").await.ok()?;
                let phase = b.status.and_then(|s| s.phase);
                assert_eq!(
                    phase,
                    Some(BackupPhase::Running),
                    "the run ended before S3 answered"
                );
                Some(())
            }
        },
    )
    .await;
    // Killed in that window, the operator loses nothing: restarted, it completes the Backup from
    // the on-site copy (never running it again), and the off-site copy follows once S3 is back.
    operator.kill();
    let mut operator = start(&lease);
    let b = common::eventually(
        WAIT,
        "the interrupted Backup completed from its copy",
        || {
            let backups = backups.clone();
            async move {
                let b = backups.get("during-freeze").await.ok()?;
                (b.status.as_ref()?.phase == Some(BackupPhase::Completed)).then_some(b)
            }
        },
    )
    .await;
    let state = |name: &str| common::location_state(&b, name);
    let s = b.status.clone().unwrap();
    let ready = s.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(ready.reason, "Recovered", "{s:?}");
    assert_eq!(state("onsite").as_deref(), Some("Written"), "{s:?}");
    drop(frozen);
    common::eventually(
        Duration::from_secs(180),
        "the off-site copy replicated",
        || {
            let backups = backups.clone();
            async move {
                let b = backups.get("during-freeze").await.ok()?;
                let s = b.status?;
                let offsite = s.locations.iter().find(|l| l.name == "offsite")?;
                (offsite.state == "Written").then_some(())
            }
        },
    )
    .await;
    operator.kill();
    common::delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn wrong_s3_credentials_leave_a_stable_condition_not_a_status_rewritten_again_and_again() {
    let _turn = SERIAL.lock().await;
    let client = common::client().await;
    let (ns, bucket) = tenant(&client, "fault-creds", "not-the-secret").await;
    policy(&client, &ns, &bucket).await;
    let lease = common::unique("fault-creds");
    let mut operator = start(&lease);
    backup_now(&client, &ns, "with-wrong-creds").await;
    let policies = Api::<BackupPolicy>::namespaced(client.clone(), &ns);
    common::eventually(WAIT, "StorageReachable False", || {
        let policies = policies.clone();
        async move {
            let p = policies.get("p").await.ok()?;
            let c = p
                .status?
                .conditions
                .into_iter()
                .find(|c| c.type_ == "StorageReachable")?;
            (c.status == "False").then_some(())
        }
    })
    .await;
    // Settled: count the policy's writes over the next 20 s from a watch.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut seen = Vec::new();
    let window = tokio::time::timeout(Duration::from_secs(20), async {
        let mut stream = watcher(
            policies.clone(),
            watcher::Config::default().fields("metadata.name=p"),
        )
        .applied_objects()
        .boxed();
        while let Some(Ok(p)) = stream.next().await {
            seen.push(p.metadata.resource_version.unwrap_or_default());
        }
    })
    .await;
    assert!(window.is_err(), "the watch ended early");
    seen.dedup();
    // The first event is the object as it is; every further one is a write.
    let writes = seen.len().saturating_sub(1);
    let p = policies.get("p").await.unwrap();
    let c = p
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "StorageReachable")
        .unwrap();
    println!("{writes} status writes in 20 s; condition: {}", c.message);
    assert!(
        writes <= 2,
        "the policy was written {writes} times in 20 s: {}",
        c.message
    );
    assert!(
        c.message.contains("credentials") || c.message.contains("403"),
        "{}",
        c.message
    );
    operator.kill();
    common::delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn a_restore_cut_short_by_a_crash_says_so_and_its_next_run_completes_it() {
    let _turn = SERIAL.lock().await;
    let client = common::client().await;
    let (ns, _) = tenant(
        &client,
        "fault-rst",
        &common::s3::env("AWS_SECRET_ACCESS_KEY"),
    )
    .await;
    let items: Vec<Value> = (0..400)
        .map(|i| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("big-{i:03}")}, "data": {"i": i.to_string()}}))
        .collect();
    apply(
        &ns,
        &json!({"apiVersion": "v1", "kind": "List", "items": items}),
    );
    let p: BackupPolicy = serde_json::from_value(json!({"apiVersion": "opsec.x1642.dev/v1alpha1",
        "kind": "BackupPolicy", "metadata": {"name": "p", "namespace": ns},
        "spec": {"rpo": "1h", "suspend": true, "storage": [{"name": "onsite", "local": {"path": "onsite"}}],
            "encryption": {"keySecretRef": {"name": "keys", "key": "enc"}}}}))
    .unwrap();
    Api::<BackupPolicy>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &p)
        .await
        .unwrap();
    let lease = common::unique("fault-rst");
    let mut operator = start(&lease);
    backup_now(&client, &ns, "full").await;
    backup_in(&client, &ns, "full", &[BackupPhase::Completed]).await;
    let restores = Api::<opsec_operator::api::Restore>::namespaced(client.clone(), &ns);
    // Kill the operator while a Restore runs (a quick one that ended first is asked again).
    let mut cut = None;
    for attempt in 0..5 {
        let name = format!("rst-{attempt}");
        let r: opsec_operator::api::Restore =
            serde_json::from_value(json!({"apiVersion": "opsec.x1642.dev/v1alpha1",
            "kind": "Restore", "metadata": {"name": name, "namespace": ns},
            "spec": {"backupRef": {"name": "full"}, "existingObjects": "Overwrite"}}))
            .unwrap();
        restores.create(&PostParams::default(), &r).await.unwrap();
        let phase = common::eventually(WAIT, "the Restore to start", || {
            let restores = restores.clone();
            let name = name.clone();
            async move {
                let p = restores.get(&name).await.ok()?.status?.phase?;
                (p != opsec_operator::api::backup::RestorePhase::Pending).then_some(p)
            }
        })
        .await;
        operator.kill();
        if phase == opsec_operator::api::backup::RestorePhase::Running {
            cut = Some(name);
            break;
        }
        operator = start(&lease);
    }
    let name = cut.expect("the operator was killed during a restore");
    let running = restores.get(&name).await.unwrap().status.unwrap();
    assert_eq!(
        running.phase,
        Some(opsec_operator::api::backup::RestorePhase::Running)
    );
    // Restarted, the operator says the run was cut short and runs it again to the end.
    let _operator = start(&lease);
    let done = common::eventually(WAIT, "the Restore to complete", || {
        let restores = restores.clone();
        let name = name.clone();
        async move {
            let s = restores.get(&name).await.ok()?.status?;
            (s.phase == Some(opsec_operator::api::backup::RestorePhase::Completed)).then_some(s)
        }
    })
    .await;
    assert_eq!(done.attempts, 2, "{done:?}");
    assert_eq!(done.failed, 0, "{done:?}");
    let events = Api::<k8s_openapi::api::core::v1::Event>::namespaced(client.clone(), &ns)
        .list(&Default::default())
        .await
        .unwrap();
    assert!(
        events
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("RestoreInterrupted")
                && e.involved_object.name.as_deref() == Some(name.as_str())),
        "no RestoreInterrupted Event"
    );
    common::delete_namespace(&client, &ns).await;
}

/// The peak resident memory of a process, in MiB (VmHWM).
fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib / 1024
}

/// A zstd-compressed tar of one entry of `size` zero bytes (a few kilobytes).
fn bomb(size: u64) -> Vec<u8> {
    let mut tar = tar::Builder::new(zstd::stream::write::Encoder::new(Vec::new(), 19).unwrap());
    let mut header = tar::Header::new_gnu();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(
        &mut header,
        "objects/core/v1/ConfigMap/cm-1.json",
        std::io::Read::take(std::io::repeat(0), size),
    )
    .unwrap();
    tar.into_inner().unwrap().finish().unwrap()
}

#[tokio::test]
async fn a_decompression_bomb_and_a_huge_manifest_in_a_store_are_refused_in_bounded_memory() {
    let _turn = SERIAL.lock().await;
    let client = common::client().await;
    let (ns, _) = tenant(
        &client,
        "fault-bomb",
        &common::s3::env("AWS_SECRET_ACCESS_KEY"),
    )
    .await;
    let p: BackupPolicy = serde_json::from_value(json!({"apiVersion": "opsec.x1642.dev/v1alpha1",
        "kind": "BackupPolicy", "metadata": {"name": "p", "namespace": ns},
        "spec": {"rpo": "1h", "suspend": true, "storage": [{"name": "onsite", "local": {"path": "onsite"}}],
            "verification": {"schedule": "@yearly"}}}))
    .unwrap();
    let policies = Api::<BackupPolicy>::namespaced(client.clone(), &ns);
    policies.create(&PostParams::default(), &p).await.unwrap();
    let lease = common::unique("fault-bomb");
    let operator = start(&lease);
    backup_now(&client, &ns, "real").await;
    backup_in(&client, &ns, "real", &[BackupPhase::Completed]).await;
    // Whoever can write the store swaps the archive for 24 KB that decompress to 2 GiB, and
    // leaves a 400 MB manifest beside it.
    let dir = common::local_root()
        .join(&ns)
        .join("onsite")
        .join(&ns)
        .join("p");
    let payload = bomb(2 << 30);
    println!("bomb: {} bytes decompressing to 2 GiB", payload.len());
    std::fs::write(dir.join("real").join("data.tar.zst.enc"), &payload).unwrap();
    std::fs::create_dir_all(dir.join("huge")).unwrap();
    std::fs::File::create(dir.join("huge").join("manifest.json"))
        .unwrap()
        .set_len(400 << 20)
        .unwrap();
    policies
        .patch(
            "p",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(
                json!({"metadata": {"annotations": {"opsec.x1642.dev/verify-now": "bomb"}}}),
            ),
        )
        .await
        .unwrap();
    let b = backup_in(&client, &ns, "real", &[BackupPhase::Corrupt]).await;
    let v = b.status.unwrap().verification.unwrap();
    assert!(
        v.message
            .as_deref()
            .unwrap_or_default()
            .contains("archive digest mismatch"),
        "{v:?}"
    );
    let peak = peak_rss_mib(operator.0.id());
    println!("operator peak RSS after the bomb and the huge manifest: {peak} MiB");
    // The Deployment's limit is 512 MiB; the bomb alone drove it to 713 MB before.
    assert!(peak < 256, "peak RSS {peak} MiB");
    // Nothing entered the catalogue from the oversized manifest.
    let backups = Api::<Backup>::namespaced(client.clone(), &ns);
    assert!(backups.get_opt("huge").await.unwrap().is_none());
    drop(operator);
    common::delete_namespace(&client, &ns).await;
}

/// Restarts the test control plane's kube-apiserver (its supervisor does it on SIGUSR1) and
/// waits until it answers again.
async fn restart_apiserver(client: &Client) {
    let port = common::apiserver_port();
    let supervisor = common::process_with("controlplane", &port).unwrap_or_else(|| {
        panic!("no local control plane serves port {port}: this test restarts its API server")
    });
    common::signal(supervisor, "-USR1");
    // Gone, then back.
    tokio::time::sleep(Duration::from_secs(1)).await;
    common::eventually(WAIT, "the API server to answer again", || async {
        client.apiserver_version().await.ok().map(|_| ())
    })
    .await;
}

#[tokio::test]
async fn an_api_server_restarted_in_the_middle_of_a_backup_loses_nothing() {
    let _turn = SERIAL.lock().await;
    let client = common::client().await;
    let (ns, bucket) = tenant(
        &client,
        "fault-api",
        &common::s3::env("AWS_SECRET_ACCESS_KEY"),
    )
    .await;
    let items: Vec<Value> = (0..500)
        .map(|i| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("many-{i:03}")}, "data": {"i": i.to_string()}}))
        .collect();
    apply(
        &ns,
        &json!({"apiVersion": "v1", "kind": "List", "items": items}),
    );
    policy(&client, &ns, &bucket).await;
    let lease = common::unique("fault-api");
    // A Lease long enough to outlast the restart: this is about the backup, not leadership.
    let _operator = common::start_operator("backup", &lease, &["--lease-duration", "60s"]).0;
    let backups = Api::<Backup>::namespaced(client.clone(), &ns);
    let ended = |name: &'static str| {
        backup_in(
            &client,
            &ns,
            name,
            &[BackupPhase::Completed, BackupPhase::Failed],
        )
    };
    backup_now(&client, &ns, "before").await;
    ended("before").await;
    backup_now(&client, &ns, "during").await;
    restart_apiserver(&client).await;
    // The run cut by the restart ends one way or the other, never left running ...
    let during = ended("during").await.status.unwrap();
    println!(
        "the backup during the restart: {:?} {:?}",
        during.phase, during.error
    );
    // The operator never stopped: whatever the run met, it is not called abandoned.
    assert!(
        !during
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("the operator stopped"),
        "{during:?}"
    );
    // ... and the operator goes on: the next backup completes, and every completed backup's
    // copies are in both stores, signed, and counted by the policy.
    backup_now(&client, &ns, "after").await;
    let after = ended("after").await.status.unwrap();
    assert_eq!(after.phase, Some(BackupPhase::Completed), "{after:?}");
    let completed: Vec<String> = backups
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|b| b.status.as_ref().and_then(|s| s.phase) == Some(BackupPhase::Completed))
        .map(|b| kube::ResourceExt::name_any(&b))
        .collect();
    let onsite = Store::local("onsite", common::local_root().join(&ns).join("onsite")).unwrap();
    let key = common::operator_signing_key(&client).await.verifying_key();
    for name in &completed {
        let loc = BackupLocation::new(&ns, "p", name).unwrap();
        onsite
            .read_manifest_trusted(&loc, &[key])
            .await
            .unwrap_or_else(|e| panic!("{name} on-site: {e}"));
    }
    let policies = Api::<BackupPolicy>::namespaced(client.clone(), &ns);
    common::eventually(WAIT, "the policy to count the last backup", || {
        let policies = policies.clone();
        let done = after.completion_time.clone();
        async move {
            let s = policies.get("p").await.ok()?.status?;
            let ready = s.conditions.iter().find(|c| c.type_ == "Ready")?;
            (s.last_successful_time == done && ready.status == "True").then_some(())
        }
    })
    .await;
    common::delete_namespace(&client, &ns).await;
}
