//! End-to-end tests of the engine through local stores: backup, catalogue, restore, verification
//! and the failures each must detect.

use std::convert::Infallible;
use std::time::Instant;

use ed25519_dalek::SigningKey;
use serde_json::{Value, json};

use super::store::{DATA_FILE, MANIFEST_FILE};
use super::*;

fn meta(id: &str) -> BackupMeta {
    BackupMeta {
        namespace: "team-a".into(),
        policy: "nightly".into(),
        backup_id: id.into(),
        created_at: jiff::Timestamp::from_second(1_767_225_600).unwrap(),
    }
}

fn loc(id: &str) -> BackupLocation {
    BackupLocation::new("team-a", "nightly", id).unwrap()
}

fn signing_key() -> SigningKey {
    SigningKey::from_bytes(&[9; 32])
}

fn options() -> BackupOptions {
    BackupOptions {
        encryption_key: Some(EncryptionKey::from_bytes([1; 32])),
        signing_key: Some(signing_key()),
        ..Default::default()
    }
}

fn restore_options() -> RestoreOptions {
    RestoreOptions {
        encryption_keys: vec![EncryptionKey::from_bytes([1; 32])],
        trusted_keys: vec![signing_key().verifying_key()],
        ..Default::default()
    }
}

/// `n` objects of mixed kinds, with server-set fields, some skipped by export.
fn objects(n: usize) -> Vec<Value> {
    let mut out = Vec::with_capacity(n + 2);
    for i in 0..n {
        let (api, kind) = match i % 4 {
            0 => ("apps/v1", "Deployment"),
            1 => ("v1", "ConfigMap"),
            2 => ("v1", "Secret"),
            _ => ("v1", "ServiceAccount"),
        };
        out.push(json!({
            "apiVersion": api,
            "kind": kind,
            "metadata": {
                "name": format!("obj-{i:05}"),
                "namespace": "team-a",
                "uid": format!("uid-{i}"),
                "resourceVersion": "1",
                "labels": {"i": i.to_string()},
            },
            // Digests: data that compresses about as badly as real certificates and tokens.
            "data": {"payload": (0..4).map(|j| crypto::sha256_hex(format!("{i}-{j}").as_bytes())).collect::<String>()},
            "status": {"observed": true},
        }));
    }
    out.push(
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kube-root-ca.crt"}}),
    );
    out.push(json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "ev"}}));
    out
}

fn stream(objs: Vec<Value>) -> impl futures::Stream<Item = Result<Value, Infallible>> {
    futures::stream::iter(objs.into_iter().map(Ok))
}

async fn backup_to(stores: &[Store], id: &str, n: usize) -> BackupSummary {
    run_backup(meta(id), options(), stream(objects(n)), stores)
        .await
        .unwrap()
}

fn data_path(dir: &std::path::Path, id: &str, file: &str) -> std::path::PathBuf {
    dir.join("team-a").join("nightly").join(id).join(file)
}

#[tokio::test]
async fn round_trips_1000_objects_through_two_local_stores() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let stores = [
        Store::local("onsite", a.path()).unwrap(),
        Store::local("pvc", b.path()).unwrap(),
    ];
    let started = Instant::now();
    let summary = backup_to(&stores, "b1", 1000).await;
    let backup_time = started.elapsed();
    assert_eq!(summary.objects, 1000);
    assert_eq!(summary.skipped.get("RootCAConfigMap"), Some(&1));
    assert_eq!(summary.skipped.get("ClusterGenerated"), Some(&1));
    assert_eq!(summary.succeeded(), ["onsite", "pvc"]);
    assert!(!summary.any_failed());
    assert_eq!(summary.manifest.archive.size, summary.bytes);
    assert!(summary.signature.is_some());

    // The catalogue is rebuilt from each store alone.
    for store in &stores {
        let listed = store.list_backups("team-a", "nightly").await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].backup_id, "b1");
        assert!(listed[0].signed);
        assert_eq!(listed[0].data_size, Some(summary.bytes));
        assert_eq!(listed[0].manifest.as_ref().unwrap(), &summary.manifest);
    }

    let started = Instant::now();
    let restored = restore(&stores[1], &loc("b1"), &restore_options())
        .await
        .unwrap();
    let restore_time = started.elapsed();
    eprintln!(
        "1000 objects: backup to 2 local stores {backup_time:?}, restore {restore_time:?}, archive {} bytes",
        summary.bytes
    );
    assert_eq!(restored.objects.len(), 1000);
    // Restore order: ServiceAccounts, Secrets, ConfigMaps, then Deployments.
    let kinds: Vec<&str> = restored
        .objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds[0], "ServiceAccount");
    assert_eq!(kinds[250], "Secret");
    assert_eq!(kinds[500], "ConfigMap");
    assert_eq!(kinds[999], "Deployment");
    // Export stripped the server-set fields.
    let first = &restored.objects[0];
    assert!(first.get("status").is_none());
    assert!(first["metadata"].get("uid").is_none());
    assert!(first["metadata"].get("namespace").is_none());
    assert_eq!(first["metadata"]["name"], "obj-00003");

    let report = verify(&stores[0], &loc("b1"), &restore_options())
        .await
        .unwrap();
    assert_eq!(report.objects_checked, Some(1000));
    assert!(report.signature_checked);
    // Without the encryption key only the archive digest and signature are checked.
    let digest_only = RestoreOptions {
        encryption_keys: vec![],
        ..restore_options()
    };
    let report = verify(&stores[0], &loc("b1"), &digest_only).await.unwrap();
    assert_eq!(report.objects_checked, None);
}

#[tokio::test]
async fn unencrypted_unsigned_backup_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::local("onsite", dir.path()).unwrap();
    let summary = run_backup(
        meta("plain"),
        BackupOptions::default(),
        stream(objects(20)),
        std::slice::from_ref(&store),
    )
    .await
    .unwrap();
    assert_eq!(summary.manifest.archive.encryption, EncryptionScheme::None);
    assert!(summary.signature.is_none());
    let restored = restore(&store, &loc("plain"), &RestoreOptions::default())
        .await
        .unwrap();
    assert_eq!(restored.objects.len(), 20);
    // A reader that requires a signature refuses it.
    let err = restore(&store, &loc("plain"), &restore_options())
        .await
        .unwrap_err();
    assert_eq!(err.category(), "BadSignature", "{err}");
}

fn flip_byte(path: &std::path::Path, at: impl Fn(usize) -> usize) {
    let mut bytes = std::fs::read(path).unwrap();
    let i = at(bytes.len());
    bytes[i] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
}

#[tokio::test]
async fn flipped_byte_in_data_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::local("onsite", dir.path()).unwrap();
    backup_to(std::slice::from_ref(&store), "b1", 100).await;
    flip_byte(&data_path(dir.path(), "b1", DATA_FILE), |len| len / 2);
    let err = restore(&store, &loc("b1"), &restore_options())
        .await
        .unwrap_err();
    assert!(matches!(err, RestoreError::Corrupt { .. }), "{err}");
    assert_eq!(err.category(), "Corrupt");
    // Digest-only verification sees it too.
    let digest_only = RestoreOptions {
        encryption_keys: vec![],
        ..restore_options()
    };
    let err = verify(&store, &loc("b1"), &digest_only).await.unwrap_err();
    assert_eq!(err.category(), "Corrupt");
    assert!(err.copy_is_bad(), "verification marks the copy corrupt");
}

#[tokio::test]
async fn flipped_byte_in_manifest_is_a_bad_signature() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::local("onsite", dir.path()).unwrap();
    backup_to(std::slice::from_ref(&store), "b1", 10).await;
    flip_byte(&data_path(dir.path(), "b1", MANIFEST_FILE), |len| len / 2);
    let err = restore(&store, &loc("b1"), &restore_options())
        .await
        .unwrap_err();
    assert!(matches!(err, RestoreError::BadSignature { .. }), "{err}");
}

#[tokio::test]
async fn wrong_encryption_key_is_told_apart() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::local("onsite", dir.path()).unwrap();
    backup_to(std::slice::from_ref(&store), "b1", 10).await;
    let wrong = RestoreOptions {
        encryption_keys: vec![EncryptionKey::from_bytes([2; 32])],
        ..restore_options()
    };
    let err = restore(&store, &loc("b1"), &wrong).await.unwrap_err();
    assert!(matches!(err, RestoreError::WrongKey { .. }), "{err}");
    let none = RestoreOptions {
        encryption_keys: vec![],
        ..restore_options()
    };
    let err = restore(&store, &loc("b1"), &none).await.unwrap_err();
    assert!(matches!(err, RestoreError::KeyRequired { .. }), "{err}");
    assert_eq!(err.category(), "WrongKey");
    assert!(
        !err.copy_is_bad(),
        "a wrong key is the reader's problem, not the copy's"
    );
}

#[tokio::test]
async fn truncated_data_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::local("onsite", dir.path()).unwrap();
    backup_to(std::slice::from_ref(&store), "b1", 500).await;
    let path = data_path(dir.path(), "b1", DATA_FILE);
    let bytes = std::fs::read(&path).unwrap();
    // At a frame boundary (no final frame) and mid-frame.
    let boundary = crypto::HEADER_LEN + (crypto::FRAME_SIZE + crypto::TAG_LEN);
    assert!(
        bytes.len() > boundary + 10,
        "archive too small for the test"
    );
    for cut in [boundary, boundary + 10, bytes.len() - 1] {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let err = restore(&store, &loc("b1"), &restore_options())
            .await
            .unwrap_err();
        assert!(
            matches!(err, RestoreError::Corrupt { .. }),
            "cut {cut}: {err}"
        );
    }
}

#[tokio::test]
async fn missing_manifest_is_reported_and_not_listed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::local("onsite", dir.path()).unwrap();
    backup_to(std::slice::from_ref(&store), "b1", 10).await;
    std::fs::remove_file(data_path(dir.path(), "b1", MANIFEST_FILE)).unwrap();
    let err = restore(&store, &loc("b1"), &restore_options())
        .await
        .unwrap_err();
    assert!(matches!(err, RestoreError::MissingManifest { .. }), "{err}");
    assert!(
        store
            .list_backups("team-a", "nightly")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.list_incomplete("team-a", "nightly").await.unwrap()[0].backup_id,
        "b1"
    );
}

#[tokio::test]
async fn a_manifest_moved_to_another_backup_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::local("onsite", dir.path()).unwrap();
    backup_to(std::slice::from_ref(&store), "b1", 10).await;
    backup_to(std::slice::from_ref(&store), "b2", 12).await;
    for f in [MANIFEST_FILE, store::SIGNATURE_FILE] {
        std::fs::copy(
            data_path(dir.path(), "b1", f),
            data_path(dir.path(), "b2", f),
        )
        .unwrap();
    }
    let err = restore(&store, &loc("b2"), &restore_options())
        .await
        .unwrap_err();
    assert_eq!(err.category(), "BadManifest", "{err}");
}

#[tokio::test]
async fn a_failing_store_does_not_stop_the_others() {
    let good = tempfile::tempdir().unwrap();
    let bad = tempfile::tempdir().unwrap();
    // A file where the namespace directory must go: every write below it fails, even as root.
    std::fs::write(bad.path().join("team-a"), b"in the way").unwrap();
    let stores = [
        Store::local("broken", bad.path()).unwrap(),
        Store::local("onsite", good.path()).unwrap(),
    ];
    let summary = backup_to(&stores, "b1", 50).await;
    assert_eq!(summary.succeeded(), ["onsite"]);
    assert!(summary.any_failed());
    assert!(summary.stores[0].result.is_err());
    restore(&stores[1], &loc("b1"), &restore_options())
        .await
        .unwrap();

    // When every store fails, the run fails and names each.
    let err = run_backup(meta("b2"), options(), stream(objects(5)), &stores[..1])
        .await
        .unwrap_err();
    assert_eq!(err.category(), "StorageFailed", "{}", error_chain(&err));
    assert!(err.to_string().contains("broken"), "{err}");
}

#[tokio::test]
async fn an_error_from_the_source_abandons_the_backup() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::local("onsite", dir.path()).unwrap();
    let items: Vec<Result<Value, std::io::Error>> = vec![
        Ok(objects(1).remove(0)),
        Err(std::io::Error::other("list failed")),
    ];
    let err = run_backup(
        meta("b1"),
        options(),
        futures::stream::iter(items),
        std::slice::from_ref(&store),
    )
    .await
    .unwrap_err();
    assert_eq!(err.category(), "SourceFailed");
    assert!(
        store
            .list_backups("team-a", "nightly")
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .list_incomplete("team-a", "nightly")
            .await
            .unwrap()
            .is_empty(),
        "the aborted upload leaves nothing"
    );
}

#[tokio::test]
async fn delete_backup_removes_it_from_the_catalogue() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::local("onsite", dir.path()).unwrap();
    backup_to(std::slice::from_ref(&store), "b1", 5).await;
    backup_to(std::slice::from_ref(&store), "b2", 5).await;
    assert_eq!(store.delete_backup(&loc("b1")).await.unwrap(), 3);
    let listed = store.list_backups("team-a", "nightly").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].backup_id, "b2");
}

#[test]
fn queue_permits_stay_within_the_queue() {
    assert_eq!(super::queue_permits(0), 1);
    assert_eq!(super::queue_permits(5_000), 5_000);
    assert_eq!(
        super::queue_permits(super::QUEUE_BYTES * 3) as usize,
        super::QUEUE_BYTES
    );
}

#[tokio::test]
async fn add_refuses_a_duplicate_at_once_and_abort_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::local("onsite", dir.path()).unwrap();
    let mut writer = BackupWriter::begin(meta("b1"), options(), std::slice::from_ref(&store))
        .await
        .unwrap();
    let obj = objects(1).remove(0);
    assert!(matches!(
        writer.add(obj.clone()).await.unwrap(),
        Added::Archived(_)
    ));
    let err = writer.add(obj).await.unwrap_err();
    assert_eq!(err.category(), "ArchiveFailed", "{err}");
    writer.abort().await;
    assert!(
        store
            .list_incomplete("team-a", "nightly")
            .await
            .unwrap()
            .is_empty()
    );
}

#[test]
fn categories_are_stable() {
    assert_eq!(BackupError::NoStores.category(), "NoStorage");
    let e: Error = RestoreError::MissingManifest {
        backup_id: "x".into(),
    }
    .into();
    assert_eq!(e.category(), "MissingManifest");
}

async fn backup_with(store: &Store, id: &str, options: BackupOptions) {
    run_backup(
        meta(id),
        options,
        stream(objects(8)),
        std::slice::from_ref(store),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn rotated_keys_still_read_old_backups_by_the_ids_their_manifests_name() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::local("onsite", dir.path()).unwrap();
    let (old_enc, new_enc) = (
        EncryptionKey::from_bytes([1; 32]),
        EncryptionKey::from_bytes([2; 32]),
    );
    let (old_sig, new_sig) = (
        SigningKey::from_bytes(&[9; 32]),
        SigningKey::from_bytes(&[8; 32]),
    );
    backup_with(&store, "old", options()).await;
    backup_with(
        &store,
        "new",
        BackupOptions {
            encryption_key: Some(new_enc.clone()),
            signing_key: Some(new_sig.clone()),
            ..Default::default()
        },
    )
    .await;
    let rotated = RestoreOptions {
        encryption_keys: vec![new_enc.clone(), old_enc.clone()],
        trusted_keys: vec![new_sig.verifying_key(), old_sig.verifying_key()],
        ..Default::default()
    };
    for id in ["old", "new"] {
        let r = restore(&store, &loc(id), &rotated).await.unwrap();
        assert_eq!(r.objects.len(), 8, "{id}");
    }
    // A signing key dropped from the keyring no longer vouches for what it signed.
    let dropped = RestoreOptions {
        trusted_keys: vec![new_sig.verifying_key()],
        ..rotated.clone()
    };
    let err = restore(&store, &loc("old"), &dropped).await.unwrap_err();
    assert_eq!(err.category(), "BadSignature", "{err}");
    let listed = store
        .list_trusted("team-a", "nightly", &dropped.trusted_keys)
        .await
        .unwrap();
    let trusted: Vec<&str> = listed
        .iter()
        .filter(|e| e.manifest.is_ok())
        .map(|e| e.backup_id.as_str())
        .collect();
    assert_eq!(trusted, ["new"]);
}

#[tokio::test]
async fn a_manifest_forged_by_someone_who_can_write_the_store_is_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::local("onsite", dir.path()).unwrap();
    backup_with(&store, "real", options()).await;
    // Unsigned, and signed by the tenant's own key: both written straight into the store.
    let unsigned = BackupOptions {
        signing_key: None,
        ..options()
    };
    backup_with(&store, "unsigned", unsigned).await;
    let tenant_key = SigningKey::from_bytes(&[42; 32]);
    backup_with(
        &store,
        "forged",
        BackupOptions {
            signing_key: Some(tenant_key),
            ..options()
        },
    )
    .await;
    let trusted = [signing_key().verifying_key()];
    let listed = store
        .list_trusted("team-a", "nightly", &trusted)
        .await
        .unwrap();
    let ok: Vec<&str> = listed
        .iter()
        .filter(|e| e.manifest.is_ok())
        .map(|e| e.backup_id.as_str())
        .collect();
    assert_eq!(ok, ["real"]);
    for id in ["unsigned", "forged"] {
        let err = restore(&store, &loc(id), &restore_options())
            .await
            .unwrap_err();
        assert_eq!(err.category(), "BadSignature", "{id}: {err}");
    }
}

#[tokio::test]
async fn a_manifest_saying_unencrypted_is_refused_by_a_reader_that_holds_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::local("onsite", dir.path()).unwrap();
    let plain = BackupOptions {
        encryption_key: None,
        ..options()
    };
    backup_with(&store, "plain", plain).await;
    let err = restore(&store, &loc("plain"), &restore_options())
        .await
        .unwrap_err();
    assert!(matches!(err, RestoreError::NotEncrypted { .. }), "{err}");
    assert_eq!(err.category(), "EncryptionMismatch");
    let err = verify(&store, &loc("plain"), &restore_options())
        .await
        .unwrap_err();
    assert_eq!(err.category(), "EncryptionMismatch");
    // A reader without keys (a policy that does not encrypt) reads it.
    let no_keys = RestoreOptions {
        encryption_keys: vec![],
        ..restore_options()
    };
    assert_eq!(
        restore(&store, &loc("plain"), &no_keys)
            .await
            .unwrap()
            .objects
            .len(),
        8
    );
}

/// A zstd-compressed tar of one entry of `size` zero bytes: a few kilobytes that decompress to
/// `size`.
fn bomb(path: &str, size: u64) -> Vec<u8> {
    let mut tar = tar::Builder::new(zstd::stream::write::Encoder::new(Vec::new(), 19).unwrap());
    let mut header = tar::Header::new_gnu();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(
        &mut header,
        path,
        std::io::Read::take(std::io::repeat(0), size),
    )
    .unwrap();
    tar.into_inner().unwrap().finish().unwrap()
}

#[tokio::test]
async fn a_data_file_swapped_for_a_decompression_bomb_is_refused_before_it_is_decompressed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::local("onsite", dir.path()).unwrap();
    // An unencrypted policy: nothing but the digest stands between the bomb and the decoder.
    let plain = BackupOptions {
        encryption_key: None,
        ..options()
    };
    backup_with(&store, "b1", plain).await;
    let path = "objects/core/v1/ConfigMap/obj-00001.json";
    let payload = bomb(path, 1 << 30);
    assert!(payload.len() < 1 << 20, "{} bytes", payload.len());
    std::fs::write(data_path(dir.path(), "b1", DATA_FILE), &payload).unwrap();
    let reader = RestoreOptions {
        encryption_keys: vec![],
        ..restore_options()
    };
    let started = Instant::now();
    for result in [
        restore(&store, &loc("b1"), &reader).await.map(|_| ()),
        verify(&store, &loc("b1"), &reader).await.map(|_| ()),
    ] {
        let err = result.unwrap_err();
        assert_eq!(err.category(), "Corrupt", "{err}");
        assert!(
            error_chain(&err).contains("archive digest mismatch"),
            "{err}"
        );
    }
    // Refused from its stored bytes alone: a gigabyte was never decompressed.
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

#[test]
fn an_archive_holds_no_more_than_its_manifest_lists() {
    let limits = ArchiveLimits::default().within([10u64, 300, 20].into_iter());
    assert_eq!(limits.max_entries, 3);
    assert_eq!(limits.max_object_bytes, 300);
    assert_eq!(limits.max_total_bytes, 330);
    // Never looser than the defaults.
    let huge = ArchiveLimits::default().within([u64::MAX].into_iter());
    assert_eq!(
        huge.max_object_bytes,
        ArchiveLimits::default().max_object_bytes
    );
    let path = "objects/core/v1/ConfigMap/x.json";
    let err = archive::read_archive(&bomb(path, 400)[..], &limits).unwrap_err();
    assert!(err.is_unsafe(), "{err}");
}

#[tokio::test]
async fn a_manifest_over_its_size_limit_is_refused_unread() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::local("onsite", dir.path()).unwrap();
    backup_with(&store, "b1", options()).await;
    let manifest = data_path(dir.path(), "b1", MANIFEST_FILE);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&manifest)
        .unwrap();
    file.set_len(store::MAX_MANIFEST_BYTES + 1).unwrap();
    let err = store.read_manifest_bytes(&loc("b1")).await.unwrap_err();
    assert!(matches!(err, StoreError::TooLarge { .. }), "{err}");
    let listed = store.list_backups("team-a", "nightly").await.unwrap();
    assert!(listed[0].manifest.is_err());
    let err = restore(&store, &loc("b1"), &restore_options())
        .await
        .unwrap_err();
    assert!(error_chain(&err).contains("over the limit"), "{err}");
}

#[tokio::test]
async fn a_store_that_stops_answering_does_not_hold_up_the_others_commit() {
    use object_store::throttle::{ThrottleConfig, ThrottledStore};
    let dir = tempfile::tempdir().unwrap();
    let onsite = Store::local("onsite", dir.path()).unwrap();
    // Every write to it waits an hour: a store that stopped answering.
    let hanging = ThrottledStore::new(
        object_store::memory::InMemory::new(),
        ThrottleConfig {
            wait_put_per_call: std::time::Duration::from_secs(3600),
            ..Default::default()
        },
    );
    let offsite = Store::from_object_store("offsite", std::sync::Arc::new(hanging), "").unwrap();
    let stores = [offsite, onsite.clone()];
    let run = tokio::spawn(async move { backup_to(&stores, "b1", 200).await });
    // The on-site copy is complete while the other store still hangs.
    let deadline = Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if onsite.read_manifest(&loc("b1")).await.is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the on-site copy waited for the hanging store"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(!run.is_finished(), "the run ended although a store hangs");
    run.abort();
    restore(&onsite_store(dir.path()), &loc("b1"), &restore_options())
        .await
        .unwrap();
}

fn onsite_store(dir: &std::path::Path) -> Store {
    Store::local("onsite", dir).unwrap()
}

async fn streamed(store: &Store, id: &str) -> Vec<Value> {
    let mut stream = restore::restore_stream(store, &loc(id), &restore_options())
        .await
        .unwrap();
    let mut out = Vec::new();
    while let Some(o) = stream.next().await {
        out.push(o);
    }
    stream.finish().await.unwrap();
    out
}

#[tokio::test]
async fn a_backup_in_restore_order_streams_and_an_older_one_is_sorted_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::local("onsite", dir.path()).unwrap();
    // Kinds interleaved, as an archive written before backups were in restore order.
    backup_to(std::slice::from_ref(&store), "mixed", 40).await;
    // Kinds in restore order, as the Backup controller lists them now.
    let mut sorted = objects(40);
    sorted.sort_by_key(|o| export::restore_order(o["kind"].as_str().unwrap_or_default()));
    run_backup(
        meta("sorted"),
        options(),
        stream(sorted),
        std::slice::from_ref(&store),
    )
    .await
    .unwrap();
    for id in ["mixed", "sorted"] {
        let read = restore(&store, &loc(id), &restore_options()).await.unwrap();
        let got = streamed(&store, id).await;
        assert_eq!(got.len(), read.objects.len(), "{id}");
        let order: Vec<usize> = got
            .iter()
            .map(|o| export::restore_order(o["kind"].as_str().unwrap()))
            .collect();
        assert!(order.windows(2).all(|w| w[0] <= w[1]), "{id}: {order:?}");
        let key = |o: &Value| (o["kind"].clone(), o["metadata"]["name"].clone());
        let mut a: Vec<_> = got.iter().map(key).collect();
        let mut b: Vec<_> = read.objects.iter().map(key).collect();
        a.sort_by_key(|k| format!("{k:?}"));
        b.sort_by_key(|k| format!("{k:?}"));
        assert_eq!(a, b, "{id}");
    }
    // A copy whose data changed is refused before anything is streamed.
    flip_byte(&data_path(dir.path(), "sorted", DATA_FILE), |len| len / 2);
    let err = restore::restore_stream(&store, &loc("sorted"), &restore_options())
        .await
        .err()
        .unwrap();
    assert_eq!(err.category(), "Corrupt");
}

#[tokio::test]
async fn a_symbolic_link_in_a_local_store_is_never_followed() {
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let store = Store::local("onsite", dir.path()).unwrap();
    backup_to(std::slice::from_ref(&store), "b1", 5).await;
    // Someone who can write the store's directory (a claim the tenant's pods mount too) links
    // a backup's directory to another tenant's files.
    std::fs::write(elsewhere.path().join("theirs"), b"another tenant's backup").unwrap();
    std::fs::create_dir_all(dir.path().join("team-a/nightly")).unwrap();
    std::os::unix::fs::symlink(elsewhere.path(), dir.path().join("team-a/nightly/b2")).unwrap();
    for err in [
        store.delete_backup(&loc("b2")).await.unwrap_err(),
        store.list_backups("team-a", "nightly").await.unwrap_err(),
        store.start_data(&loc("b2")).await.unwrap_err(),
        store
            .put_manifest(&loc("b2"), Bytes::from_static(b"{}"))
            .await
            .unwrap_err(),
    ] {
        assert!(matches!(err, StoreError::Symlink { .. }), "{err}");
    }
    // A real backup beside it is deleted as usual, and nothing through the link.
    assert!(store.delete_backup(&loc("b1")).await.unwrap() > 0);
    assert!(elsewhere.path().join("theirs").exists());
}
