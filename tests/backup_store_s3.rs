//! The backup engine against a real S3-compatible server (SeaweedFS, started by `hack/s3.sh`):
//! a backup round trip through S3 next to a local store, the catalogue read back from the bucket,
//! a byte flipped inside the bucket detected as corruption, and a stored copy copied to the
//! bucket (the retry of a failed off-site copy).
//!
//! Needs `OPSEC_S3_ENDPOINT`, `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`, as written by
//! `hack/s3.sh up DIR` into `DIR/env`; fails (never skips) without them:
//!
//! ```sh
//! hack/s3.sh up .run/s3 && set -a && . .run/s3/env && set +a
//! cargo test --test backup_store_s3
//! hack/s3.sh down .run/s3
//! ```

mod common;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use ed25519_dalek::SigningKey;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use opsec_operator::backup::crypto::sha256_hex;
use opsec_operator::backup::store::{CopyOutcome, DATA_FILE};
use opsec_operator::backup::{
    BackupLocation, BackupMeta, BackupOptions, EncryptionKey, RestoreError, RestoreOptions, Store,
    StoreError, restore, run_backup, verify,
};
use serde_json::{Value, json};

fn objects(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            json!({
                "apiVersion": "v1",
                "kind": if i % 2 == 0 { "ConfigMap" } else { "Secret" },
                "metadata": {"name": format!("obj-{i:04}"), "namespace": "team-a", "uid": format!("u{i}")},
                // Digests compress about as badly as real certificates and tokens.
                "data": {"v": (0..64).map(|j| sha256_hex(format!("{i}-{j}").as_bytes())).collect::<String>()},
            })
        })
        .collect()
}

fn meta(id: &str) -> BackupMeta {
    BackupMeta {
        namespace: "team-a".into(),
        policy: "nightly".into(),
        backup_id: id.into(),
        created_at: jiff::Timestamp::now(),
    }
}

fn options() -> BackupOptions {
    BackupOptions {
        encryption_key: Some(EncryptionKey::from_bytes([5; 32])),
        signing_key: Some(SigningKey::from_bytes(&[6; 32])),
        ..Default::default()
    }
}

fn restore_options() -> RestoreOptions {
    RestoreOptions {
        encryption_keys: vec![EncryptionKey::from_bytes([5; 32])],
        trusted_keys: vec![SigningKey::from_bytes(&[6; 32]).verifying_key()],
        ..Default::default()
    }
}

async fn backup(stores: &[Store], id: &str, n: usize) -> opsec_operator::backup::BackupSummary {
    let stream = futures::stream::iter(objects(n).into_iter().map(Ok::<_, Infallible>));
    run_backup(meta(id), options(), stream, stores)
        .await
        .expect("backup")
}

#[tokio::test]
async fn backup_round_trips_through_s3_and_a_local_store() {
    let bucket = common::s3::bucket("rt").await;
    let local = tempfile::tempdir().expect("tempdir");
    let stores = [
        Store::local("onsite", local.path()).expect("local store"),
        Store::s3("offsite", &common::s3::config(&bucket)).expect("s3 store"),
    ];

    // 3,000 objects of 4 KiB make an archive over 5 MiB: a multipart upload of several parts.
    let started = Instant::now();
    let summary = backup(&stores, "b1", 3000).await;
    let took = started.elapsed();
    assert!(summary.bytes > 5 * 1024 * 1024, "{} bytes", summary.bytes);
    for r in &summary.stores {
        assert!(r.result.is_ok(), "store {}: {:?}", r.store, r.result);
    }
    eprintln!(
        "3000 objects, archive {} bytes: backup to local + S3 in {took:?}",
        summary.bytes
    );

    // The catalogue is rebuilt from the bucket alone.
    let listed = stores[1]
        .list_backups("team-a", "nightly")
        .await
        .expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].backup_id, "b1");
    assert_eq!(listed[0].data_size, Some(summary.bytes));
    assert_eq!(
        listed[0].manifest.as_ref().expect("manifest"),
        &summary.manifest
    );

    let loc = BackupLocation::new("team-a", "nightly", "b1").expect("location");
    let started = Instant::now();
    let restored = restore(&stores[1], &loc, &restore_options())
        .await
        .expect("restore from S3");
    eprintln!("restore from S3 in {:?}", started.elapsed());
    assert_eq!(restored.objects.len(), 3000);
    assert_eq!(restored.objects[0]["kind"], "Secret");
    assert!(restored.objects[0]["metadata"].get("uid").is_none());
    let report = verify(&stores[1], &loc, &restore_options())
        .await
        .expect("verify");
    assert_eq!(report.objects_checked, Some(3000));

    // Interrupted backup: data but no manifest.json is not in the catalogue.
    let partial = BackupLocation::new("team-a", "nightly", "b2").expect("location");
    stores[1]
        .put_file(&partial, DATA_FILE, Bytes::from_static(b"partial"))
        .await
        .expect("put");
    assert_eq!(
        stores[1]
            .list_backups("team-a", "nightly")
            .await
            .expect("list")
            .len(),
        1
    );
    let incomplete = stores[1]
        .list_incomplete("team-a", "nightly")
        .await
        .expect("list incomplete");
    assert_eq!(incomplete.len(), 1);
    assert_eq!(incomplete[0].backup_id, "b2");

    assert_eq!(stores[1].delete_backup(&loc).await.expect("delete"), 3);
    assert!(
        stores[1]
            .list_backups("team-a", "nightly")
            .await
            .expect("list")
            .is_empty()
    );
}

/// A plain client of the bucket itself, beside the store, to look at and tamper with objects.
fn raw_bucket(bucket: &str) -> Arc<dyn ObjectStore> {
    let s = common::s3::settings();
    Arc::new(
        object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region(common::s3::REGION)
            .with_endpoint(&s.endpoint)
            .with_allow_http(true)
            .with_access_key_id(&s.key_id)
            .with_secret_access_key(&s.secret)
            .build()
            .expect("raw client"),
    )
}

#[tokio::test]
async fn a_byte_flipped_in_s3_is_corrupt() {
    let bucket = common::s3::bucket("flip").await;
    let cfg = common::s3::config(&bucket);
    let store = Store::s3("offsite", &cfg).expect("s3 store");
    backup(std::slice::from_ref(&store), "b1", 50).await;

    // Flip one byte of the stored archive, in the bucket itself.
    let raw = raw_bucket(&bucket);
    let path = object_store::path::Path::from("backups/team-a/nightly/b1/data.tar.zst.enc");
    let mut data = raw
        .get(&path)
        .await
        .expect("get")
        .bytes()
        .await
        .expect("bytes")
        .to_vec();
    let middle = data.len() / 2;
    data[middle] ^= 0x40;
    raw.put(&path, PutPayload::from(data)).await.expect("put");

    let loc = BackupLocation::new("team-a", "nightly", "b1").expect("location");
    let err = restore(&store, &loc, &restore_options())
        .await
        .expect_err("a flipped byte must not restore");
    assert!(matches!(err, RestoreError::Corrupt { .. }), "{err}");
    // The digest-only verification (no encryption key) sees it too.
    let digest_only = RestoreOptions {
        encryption_keys: vec![],
        ..restore_options()
    };
    let err = verify(&store, &loc, &digest_only)
        .await
        .expect_err("digest mismatch");
    assert_eq!(err.category(), "Corrupt", "{err}");
}

#[tokio::test]
async fn a_stored_copy_is_copied_to_s3_once_and_a_corrupt_source_never_commits() {
    let bucket = common::s3::bucket("copy").await;
    let local = tempfile::tempdir().expect("tempdir");
    let onsite = Store::local("onsite", local.path()).expect("local store");
    let offsite = Store::s3("offsite", &common::s3::config(&bucket)).expect("s3 store");

    // Written on-site only (the off-site store was down), over 5 MiB: several parts.
    let summary = backup(std::slice::from_ref(&onsite), "b1", 3000).await;
    let loc = BackupLocation::new("team-a", "nightly", "b1").expect("location");
    let started = Instant::now();
    let outcome = offsite.copy_backup(&onsite, &loc).await.expect("copy");
    eprintln!(
        "copy of a {} byte backup from local to S3 in {:?}",
        summary.bytes,
        started.elapsed()
    );
    assert_eq!(
        outcome,
        CopyOutcome::Copied {
            bytes: summary.bytes
        }
    );
    let listed = offsite
        .list_backups("team-a", "nightly")
        .await
        .expect("list");
    assert_eq!(listed.len(), 1);
    assert!(listed[0].signed, "{:?}", listed[0]);
    assert_eq!(
        listed[0].manifest.as_ref().expect("manifest"),
        &summary.manifest
    );
    let report = verify(&offsite, &loc, &restore_options())
        .await
        .expect("the copy verifies with the signature and every object");
    assert_eq!(report.objects_checked, Some(3000));
    // Again: nothing to do.
    assert_eq!(
        offsite
            .copy_backup(&onsite, &loc)
            .await
            .expect("copy again"),
        CopyOutcome::AlreadyComplete
    );

    // A source whose data no longer matches its manifest is never committed off-site.
    backup(std::slice::from_ref(&onsite), "b2", 20).await;
    let data = local.path().join("team-a/nightly/b2").join(DATA_FILE);
    let mut bytes = std::fs::read(&data).expect("read data");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&data, bytes).expect("write data");
    let b2 = BackupLocation::new("team-a", "nightly", "b2").expect("location");
    let err = offsite
        .copy_backup(&onsite, &b2)
        .await
        .expect_err("a corrupt source");
    assert!(matches!(err, StoreError::SourceMismatch { .. }), "{err}");
    let ids: Vec<String> = offsite
        .list_backups("team-a", "nightly")
        .await
        .expect("list")
        .into_iter()
        .map(|e| e.backup_id)
        .collect();
    assert_eq!(ids, ["b1"]);
}

/// Each file of a backup in a bucket says what it is (`Content-Type`), for whoever browses the
/// bucket, and so that a server does not sniff it: SeaweedFS gzips what looks like text.
#[tokio::test]
async fn a_backups_files_in_a_bucket_carry_their_content_types() {
    let bucket = common::s3::bucket("types").await;
    let store = Store::s3("offsite", &common::s3::config(&bucket)).expect("s3 store");
    backup(std::slice::from_ref(&store), "b1", 20).await;

    let raw = raw_bucket(&bucket);
    for (file, expected) in [
        ("data.tar.zst.enc", "application/octet-stream"),
        ("manifest.sig", "text/plain"),
        ("manifest.json", "application/json"),
    ] {
        let path = object_store::path::Path::from(format!("backups/team-a/nightly/b1/{file}"));
        let got = raw.get(&path).await.expect("get");
        assert_eq!(
            got.attributes
                .get(&object_store::Attribute::ContentType)
                .map(|v| v.as_ref()),
            Some(expected),
            "{file}"
        );
    }
}
