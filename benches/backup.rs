//! `make bench-backup`: the backup engine end to end against a real kube-apiserver and a real
//! S3 server (both started by `hack/with-controlplane.sh`). A benchmark: it prints figures and
//! asserts nothing about time.
//!
//! 1. setup (not timed): a namespace of 5,000 ConfigMaps and 5,000 Secrets of about 5 KB each,
//!    created 32 at a time;
//! 2. backup, five times after a warm-up (b1-b5; the median is reported), then five times into
//!    the local store alone (o1-o5): the controller's own paged
//!    lists (`objects::ListAhead`: ConfigMaps then Secrets, a page ahead, items kept as raw JSON
//!    fields) streamed through [`BackupWriter::add_raw`] with AES-256-GCM and an Ed25519
//!    signature into a local store and an S3 bucket, each in a child process (this binary
//!    re-executed with `--backup-child`) so that its peak RSS (VmHWM) is the backup's alone; the
//!    CPU of the process, of kube-apiserver, of SeaweedFS and of the whole machine meanwhile;
//! 3. restore: read + decrypt + verify from the local store (no API writes), then the same plus
//!    the creation of every object in a fresh namespace, 32 at a time;
//! 4. single-core throughput of SHA-256, AES-256-GCM (the engine's streaming writer) and zstd
//!    (the engine's level, on one thread: none of the zstd workers the engine compresses with)
//!    over the exported JSON bytes, and the single-core limit of a serial
//!    pipeline: `1 / (1/sha256 + 1/aes-gcm + 1/zstd)`;
//! 5. a markdown table, printed and written to `target/bench-backup.md`.
//!
//! MB are 10^6 bytes of exported JSON (the objects as archived, before compression).

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{Api, ApiResource, DeleteParams, ObjectMeta, PostParams};
use kube::{Client, core::Request};
use object_store::ClientOptions;
use object_store::aws::{AwsAuthorizer, AwsCredential};
use object_store::client::{HttpConnector, HttpRequestBody, ReqwestConnector};
use object_store::memory::InMemory;
use opsec_operator::backup::crypto::EncryptWriter;
use opsec_operator::backup::{
    BackupLocation, BackupMeta, BackupOptions, BackupWriter, EncryptionKey, RawObject,
    RestoreOptions, S3Config, Store, archive, export::export_raw, restore,
};
use opsec_operator::controller::backup::objects::ListAhead;
use serde_json::{Value, json};
use sha2::Digest;

const CONFIGMAPS: usize = 5_000;
const SECRETS: usize = 5_000;
const IN_FLIGHT: usize = 32;
const POLICY: &str = "bench";
const REGION: &str = "us-east-1";
const CHILD_ARG: &str = "--backup-child";
const RESULT_PREFIX: &str = "BENCH-RESULT ";
const RSS_GOAL_MIB: f64 = 256.0;
const RATIO_GOAL: f64 = 0.5;
/// Backups of the namespace, each in a child process; the table shows the median one (the
/// machine's 2 cores are shared, so single runs vary), the notes every one.
const BACKUPS: usize = 5;
/// The bucket argument of a child that writes to the on-site store alone.
const ONSITE_ONLY: &str = "-";

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if let Some(i) = args.iter().position(|a| a == CHILD_ARG) {
        let [ns, dir, bucket, id] =
            [1, 2, 3, 4].map(|k| args.get(i + k).cloned().unwrap_or_default());
        let result = runtime.block_on(backup_child(&ns, &dir, &bucket, &id))?;
        println!("{RESULT_PREFIX}{result}");
        return Ok(());
    }
    runtime.block_on(bench())
}

// ---------------------------------------------------------------------------------------------
// Settings, keys, stores

fn env(name: &str) -> Result<String, BoxError> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => Ok(v),
        _ => Err(format!(
            "{name} is not set: run this benchmark with `make bench-backup` \
             (hack/with-controlplane.sh starts kube-apiserver and an S3 server)"
        )
        .into()),
    }
}

struct S3Settings {
    endpoint: String,
    key_id: String,
    secret: String,
}

fn s3_settings() -> Result<S3Settings, BoxError> {
    Ok(S3Settings {
        endpoint: env("OPSEC_S3_ENDPOINT")?.trim_end_matches('/').to_string(),
        key_id: env("AWS_ACCESS_KEY_ID")?,
        secret: env("AWS_SECRET_ACCESS_KEY")?,
    })
}

fn s3_config(s: &S3Settings, bucket: &str) -> S3Config {
    S3Config {
        bucket: bucket.into(),
        endpoint: Some(s.endpoint.clone()),
        region: REGION.into(),
        prefix: Some("backups".into()),
        access_key_id: s.key_id.clone(),
        secret_access_key: s.secret.clone(),
        force_path_style: true,
    }
}

/// object_store cannot create buckets: one SigV4-signed `PUT /<bucket>`.
async fn create_bucket(s: &S3Settings, bucket: &str) -> Result<(), BoxError> {
    let credential = AwsCredential {
        key_id: s.key_id.clone(),
        secret_key: s.secret.clone(),
        token: None,
    };
    let client = ReqwestConnector {}.connect(&ClientOptions::new().with_allow_http(true))?;
    let mut request = http::Request::builder()
        .method(http::Method::PUT)
        .uri(format!("{}/{bucket}", s.endpoint))
        .body(HttpRequestBody::from(Vec::<u8>::new()))?;
    AwsAuthorizer::new(&credential, "s3", REGION).try_authorize(&mut request, None)?;
    let status = client.execute(request).await?.status();
    if !(status.is_success() || status == http::StatusCode::CONFLICT) {
        return Err(format!("creating bucket {bucket} answered {status}").into());
    }
    Ok(())
}

fn encryption_key() -> EncryptionKey {
    EncryptionKey::from_bytes([7; 32])
}

fn signing_key() -> SigningKey {
    SigningKey::from_bytes(&[9; 32])
}

fn stores(dir: &str, s3: &S3Settings, bucket: &str) -> Result<Vec<Store>, BoxError> {
    Ok(vec![
        Store::local("onsite", dir)?,
        Store::s3("offsite", &s3_config(s3, bucket))?,
    ])
}

fn meta(namespace: &str, id: &str) -> BackupMeta {
    BackupMeta {
        namespace: namespace.into(),
        policy: POLICY.into(),
        backup_id: id.into(),
        created_at: jiff::Timestamp::now(),
    }
}

fn backup_options() -> BackupOptions {
    BackupOptions {
        encryption_key: Some(encryption_key()),
        signing_key: Some(signing_key()),
        ..Default::default()
    }
}

fn restore_options() -> RestoreOptions {
    RestoreOptions {
        encryption_keys: vec![encryption_key()],
        trusted_keys: vec![signing_key().verifying_key()],
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Process figures

/// A field of /proc/self/status in KiB (VmHWM, VmRSS).
fn proc_status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// User + system CPU seconds of this process (/proc/self/stat, USER_HZ = 100).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// Busy and total CPU seconds of the whole machine (/proc/stat, USER_HZ = 100): busy is all but
/// idle and iowait.
fn machine_cpu_seconds() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<f64> = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .filter_map(|v| v.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let total: f64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3).copied().unwrap_or(0.0) + ticks.get(4).copied().unwrap_or(0.0);
    ((total - idle) / 100.0, total / 100.0)
}

/// CPU seconds of every process named `name` (e.g. kube-apiserver) and how many there are.
fn processes_cpu_seconds(name: &str) -> (f64, usize) {
    let (mut secs, mut n) = (0.0, 0);
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let path = entry.path();
        if !std::fs::read_to_string(path.join("comm")).is_ok_and(|c| c.trim() == name) {
            continue;
        }
        let stat = std::fs::read_to_string(path.join("stat")).unwrap_or_default();
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let fields: Vec<f64> = rest
            .split_whitespace()
            .map(|v| v.parse().unwrap_or(0.0))
            .collect();
        secs += (fields.get(11).unwrap_or(&0.0) + fields.get(12).unwrap_or(&0.0)) / 100.0;
        n += 1;
    }
    (secs, n)
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

// ---------------------------------------------------------------------------------------------
// Setup: the source namespace

/// A small deterministic generator (xorshift64*), so every run backs up the same bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n.div_ceil(8))
            .flat_map(|_| self.next().to_le_bytes())
            .take(n)
            .collect()
    }
}

/// About 5 KB of application configuration: repetitive keys, varied values (compresses well,
/// like real configuration).
fn configmap(i: usize) -> ConfigMap {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (i as u64 + 1));
    let mut props = String::with_capacity(5_200);
    let mut k = 0;
    while props.len() < 4_900 {
        let v = rng.next();
        props.push_str(&format!(
            "service.component{k}.endpoint = https://svc-{}.tenant-{}.internal:{}/api/v{}\n\
             service.component{k}.timeout-ms = {}\nservice.component{k}.token-ref = {v:016x}\n",
            v % 97,
            i % 13,
            8000 + v % 1000,
            v % 3 + 1,
            v % 30_000,
        ));
        k += 1;
    }
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(format!("config-{i:05}")),
            labels: Some(BTreeMap::from([
                ("app.kubernetes.io/name".into(), format!("app-{}", i % 50)),
                ("bench".into(), "backup".into()),
            ])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([("application.properties".into(), props)])),
        ..Default::default()
    }
}

/// About 5 KB of key material once base64-encoded (does not compress, like real secrets).
fn secret(i: usize) -> Secret {
    let mut rng = Rng(0xc2b2_ae3d_27d4_eb4f ^ (i as u64 + 1));
    Secret {
        metadata: ObjectMeta {
            name: Some(format!("secret-{i:05}")),
            labels: Some(BTreeMap::from([
                ("app.kubernetes.io/name".into(), format!("app-{}", i % 50)),
                ("bench".into(), "backup".into()),
            ])),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([
            ("tls.key".into(), ByteString(rng.bytes(3_300))),
            ("token".into(), ByteString(rng.bytes(400))),
        ])),
        ..Default::default()
    }
}

async fn create_namespace(client: &Client, name: &str) -> Result<(), BoxError> {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([("bench".into(), "backup".into())])),
            ..Default::default()
        },
        ..Default::default()
    };
    api.create(&PostParams::default(), &ns).await?;
    Ok(())
}

async fn populate(client: &Client, ns: &str) -> Result<(), BoxError> {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let pp = PostParams::default();
    futures::stream::iter(0..CONFIGMAPS + SECRETS)
        .map(|i| {
            let (cms, secrets, pp) = (&cms, &secrets, &pp);
            async move {
                if i % 2 == 0 {
                    cms.create(pp, &configmap(i / 2)).await.map(|_| ())
                } else {
                    secrets.create(pp, &secret(i / 2)).await.map(|_| ())
                }
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect::<()>()
        .await?;
    Ok(())
}

async fn delete_namespace(client: &Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    if let Err(e) = api.delete(name, &DeleteParams::default()).await {
        eprintln!("deleting namespace {name} failed: {e}");
    }
}

// ---------------------------------------------------------------------------------------------
// The backup phase (child process)

async fn backup_child(ns: &str, dir: &str, bucket: &str, id: &str) -> Result<Value, BoxError> {
    opsec_operator::install_crypto_provider();
    let s3 = s3_settings()?;
    let mut stores = stores(dir, &s3, bucket)?;
    if bucket == ONSITE_ONLY {
        stores.truncate(1);
    }
    let client = Client::try_default().await?;
    let rss_before_kib = proc_status_kib("VmHWM:");
    let cpu_before = cpu_seconds();
    let machine_before = machine_cpu_seconds();
    let apiserver_before = processes_cpu_seconds("kube-apiserver");
    let s3_before = processes_cpu_seconds("weed");

    let started = Instant::now();
    let kinds = vec![
        ApiResource::erase::<ConfigMap>(&()),
        ApiResource::erase::<Secret>(&()),
    ];
    let mut pages = ListAhead::start(client, ns.to_string(), kinds, String::new());
    let mut writer = BackupWriter::begin(meta(ns, id), backup_options(), &stores).await?;
    let (mut wait_list, mut in_add, mut count) = (Duration::ZERO, Duration::ZERO, 0usize);
    loop {
        let t = Instant::now();
        let Some(page) = pages.next().await else {
            break;
        };
        wait_list += t.elapsed();
        count += 1;
        let page = page?;
        let t = Instant::now();
        for item in &page.items {
            writer
                .add_raw(&page.kind.api_version, &page.kind.kind, item)
                .await?;
        }
        in_add += t.elapsed();
    }
    let t = Instant::now();
    let summary = writer.finish().await?;
    let in_finish = t.elapsed();
    let elapsed = started.elapsed();
    let cpu = cpu_seconds() - cpu_before;
    let machine_after = machine_cpu_seconds();
    let apiserver_after = processes_cpu_seconds("kube-apiserver");
    let s3_after = processes_cpu_seconds("weed");

    for s in &summary.stores {
        if let Err(e) = &s.result {
            return Err(format!("store {} failed: {e}", s.store).into());
        }
    }
    let json_bytes: u64 = summary.manifest.objects.iter().map(|o| o.size).sum();
    Ok(json!({
        "objects": summary.objects,
        "skipped": summary.skipped.values().sum::<usize>(),
        "json_bytes": json_bytes,
        "archive_bytes": summary.bytes,
        "pages": count,
        "seconds": elapsed.as_secs_f64(),
        "wait_list_s": wait_list.as_secs_f64(),
        "add_s": in_add.as_secs_f64(),
        "finish_s": in_finish.as_secs_f64(),
        "cpu_s": cpu,
        "machine_busy_s": machine_after.0 - machine_before.0,
        "machine_total_s": machine_after.1 - machine_before.1,
        "apiserver_cpu_s": apiserver_after.0 - apiserver_before.0,
        "apiservers": apiserver_after.1,
        "s3_cpu_s": s3_after.0 - s3_before.0,
        "s3_servers": s3_after.1,
        "rss_hwm_kib": proc_status_kib("VmHWM:"),
        "rss_before_kib": rss_before_kib,
    }))
}

fn run_backup_child(ns: &str, dir: &str, bucket: &str, id: &str) -> Result<Value, BoxError> {
    let out = Command::new(std::env::current_exe()?)
        .args([CHILD_ARG, ns, dir, bucket, id])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!("backup child failed ({}): {stdout}", out.status).into());
    }
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix(RESULT_PREFIX))
        .ok_or_else(|| format!("backup child printed no result: {stdout}"))?;
    Ok(serde_json::from_str(line)?)
}

// ---------------------------------------------------------------------------------------------
// Restore

async fn restore_into(client: &Client, ns: &str, objects: Vec<Value>) -> Result<usize, BoxError> {
    let pp = PostParams::default();
    let n = objects.len();
    futures::stream::iter(objects)
        .map(|mut obj| {
            let pp = &pp;
            async move {
                let resource = match obj["kind"].as_str() {
                    Some("ConfigMap") => "configmaps",
                    Some("Secret") => "secrets",
                    other => return Err(format!("unexpected kind {other:?}").into()),
                };
                obj["metadata"]["namespace"] = ns.into();
                let req = Request::new(format!("/api/v1/namespaces/{ns}/{resource}"))
                    .create(pp, serde_json::to_vec(&obj)?)?;
                client.request_text(req).await?;
                Ok::<_, BoxError>(())
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect::<()>()
        .await?;
    Ok(n)
}

/// `objects` as list items: kind and top-level fields as raw JSON (all are core/v1).
fn raw_items(objects: &[Value]) -> Vec<(String, RawObject)> {
    objects
        .iter()
        .map(|o| {
            let mut fields = o.as_object().cloned().unwrap_or_default();
            fields.remove("apiVersion");
            let kind = fields.remove("kind");
            let kind = kind.as_ref().and_then(Value::as_str).unwrap_or("ConfigMap");
            let text = serde_json::to_string(&fields).expect("json");
            (
                kind.to_string(),
                serde_json::from_str(&text).expect("raw fields"),
            )
        })
        .collect()
}

/// One backup of in-memory list items through [`BackupWriter::add_raw`]: seconds in `add_raw`
/// and in `finish`.
async fn engine_run(
    namespace: &str,
    id: &str,
    items: &[(String, RawObject)],
    stores: &[Store],
) -> Result<(f64, f64), BoxError> {
    let t = Instant::now();
    let mut writer = BackupWriter::begin(meta(namespace, id), backup_options(), stores).await?;
    for (kind, item) in items {
        writer.add_raw("v1", kind, item).await?;
    }
    let add_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let summary = writer.finish().await?;
    if summary.any_failed() {
        return Err(format!("a store failed: {:?}", summary.stores).into());
    }
    Ok((add_s, t.elapsed().as_secs_f64()))
}

// ---------------------------------------------------------------------------------------------
// Single-core throughput of the stages

/// Best of `runs` MB/s of `f` over `bytes`.
fn throughput(bytes: usize, runs: usize, mut f: impl FnMut()) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..runs {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
    }
    mb(bytes as u64) / best
}

/// The single-core limit of a serial pipeline over the exported bytes, from SHA-256, AES-256-GCM
/// (the engine's streaming writer) and zstd (the engine's encoder and level) throughput.
struct Limit {
    sha256: f64,
    aes: f64,
    zstd: f64,
}

impl Limit {
    fn measure(data: &[u8]) -> Self {
        let sha256 = throughput(data.len(), 2, || {
            std::hint::black_box(sha2::Sha256::digest(data));
        });
        let aes = throughput(data.len(), 2, || {
            let mut w = EncryptWriter::new(std::io::sink(), &encryption_key()).expect("encryptor");
            w.write_all(data).expect("encrypt");
            w.finish().expect("finish");
        });
        let zstd = throughput(data.len(), 2, || {
            let mut enc =
                archive::zstd_encoder(Vec::new(), archive::DEFAULT_ZSTD_LEVEL).expect("zstd");
            enc.write_all(data).expect("compress");
            std::hint::black_box(enc.finish().expect("zstd finish"));
        });
        Self { sha256, aes, zstd }
    }

    /// The mean of two measurements, stage by stage.
    fn mean(a: &Self, b: &Self) -> Self {
        Self {
            sha256: (a.sha256 + b.sha256) / 2.0,
            aes: (a.aes + b.aes) / 2.0,
            zstd: (a.zstd + b.zstd) / 2.0,
        }
    }

    /// `1 / (1/sha256 + 1/aes-gcm + 1/zstd)` MB/s.
    fn mbs(&self) -> f64 {
        1.0 / (1.0 / self.sha256 + 1.0 / self.aes + 1.0 / self.zstd)
    }
}

struct Stages {
    limit: Limit,
    zstd_ratio: f64,
    tar_zstd: f64,
    export_serialize: f64,
}

fn stages(objects: &[Value], items: &[(String, RawObject)], data: &[u8]) -> Stages {
    let limit = Limit::measure(data);
    let compressed = zstd::encode_all(data, archive::DEFAULT_ZSTD_LEVEL).map_or(0, |c| c.len());
    // The engine's archive stage as it runs: tar entries (512-byte headers, padding) + zstd, over
    // objects serialized beforehand (serializing is timed below, with export).
    let serialized: Vec<(archive::ObjectKey, Vec<u8>)> = objects
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let key = archive::ObjectKey {
                api_version: "v1".into(),
                kind: o["kind"].as_str().unwrap_or("ConfigMap").into(),
                name: format!("o{i}"),
            };
            (key, serde_json::to_vec(o).expect("json"))
        })
        .collect();
    let tar_zstd = throughput(data.len(), 2, || {
        let mut w = archive::ArchiveWriter::new(
            std::io::sink(),
            archive::DEFAULT_ZSTD_LEVEL,
            0,
            &Default::default(),
            0,
        )
        .expect("archive");
        for (key, bytes) in &serialized {
            w.append(key, bytes).expect("append");
        }
        w.finish().expect("finish");
    });
    drop(serialized);
    // Export (clean the object, copy its raw fields), as BackupWriter::add_raw does before
    // archiving.
    let export_serialize = throughput(data.len(), 2, || {
        for (kind, item) in items {
            let mut out = Vec::new();
            let exported = export_raw("v1", kind, item, &mut out);
            let _ = std::hint::black_box((exported, out));
        }
    });
    Stages {
        limit,
        zstd_ratio: data.len() as f64 / compressed.max(1) as f64,
        tar_zstd,
        export_serialize,
    }
}

// ---------------------------------------------------------------------------------------------
// The run

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{prefix}-{:x}", (nanos / 1_000_000) % 0xff_ffff)
}

async fn bench() -> Result<(), BoxError> {
    opsec_operator::install_crypto_provider();
    env("KUBECONFIG")?;
    let s3 = s3_settings()?;
    let client = Client::try_default().await?;
    let source = unique("bench-backup-src");
    let target = unique("bench-backup-dst");
    let bucket = unique("opsec-bench-backup");
    let dir = tempfile::tempdir()?;
    let dir_str = dir
        .path()
        .to_str()
        .ok_or("temp dir is not UTF-8")?
        .to_string();

    create_namespace(&client, &source).await?;
    let result = run(&client, &s3, &source, &target, &bucket, &dir_str).await;
    eprintln!("cleaning up: deleting namespaces {source} and {target}");
    delete_namespace(&client, &source).await;
    delete_namespace(&client, &target).await;
    result
}

/// `BACKUPS` backups of `source` (ids `{prefix}1`, ...), each in a child process: the median
/// run, every run's time and machine load, and the largest peak RSS.
async fn backups(
    source: &str,
    dir: &str,
    bucket: &str,
    prefix: &str,
    data: &[u8],
) -> Result<(Value, String, f64), BoxError> {
    let busy = |r: &Value| {
        100.0 * r["machine_busy_s"].as_f64().unwrap_or(0.0)
            / r["machine_total_s"].as_f64().unwrap_or(1.0).max(1e-9)
    };
    let mut runs = Vec::new();
    for i in 1..=BACKUPS {
        let id = format!("{prefix}{i}");
        // The single-core limit right before and right after the run: the machine's speed drifts
        // from second to second, so each run is set against the mean of the two around it.
        let before = tokio::task::block_in_place(|| Limit::measure(data));
        let mut r = tokio::task::spawn_blocking({
            let (source, dir, bucket, id) = (
                source.to_string(),
                dir.to_string(),
                bucket.to_string(),
                id.clone(),
            );
            move || run_backup_child(&source, &dir, &bucket, &id).map_err(|e| e.to_string())
        })
        .await??;
        let after = tokio::task::block_in_place(|| Limit::measure(data));
        let limit = Limit::mean(&before, &after);
        let mbs = mb(r["json_bytes"].as_u64().unwrap_or(0)) / r["seconds"].as_f64().unwrap_or(1.0);
        r["mbs"] = json!(mbs);
        r["limit"] = json!({"sha256": limit.sha256, "aes": limit.aes, "zstd": limit.zstd, "mbs": limit.mbs()});
        r["ratio"] = json!(mbs / limit.mbs());
        eprintln!(
            "backup {id}: {:.2} s = {mbs:.1} MB/s, limit {:.0} MB/s, {:.0}% of it, machine busy {:.0}% \
             (CPU s: this process {:.2}, kube-apiserver {:.2}, SeaweedFS {:.2})",
            r["seconds"].as_f64().unwrap_or(0.0),
            limit.mbs(),
            100.0 * mbs / limit.mbs(),
            busy(&r),
            r["cpu_s"].as_f64().unwrap_or(0.0),
            r["apiserver_cpu_s"].as_f64().unwrap_or(0.0),
            r["s3_cpu_s"].as_f64().unwrap_or(0.0),
        );
        runs.push(r);
    }
    let all_runs = runs
        .iter()
        .map(|r| {
            format!(
                "{:.2} s, {:.0}% of a {:.0} MB/s limit (machine busy {:.0}%)",
                r["seconds"].as_f64().unwrap_or(0.0),
                100.0 * r["ratio"].as_f64().unwrap_or(0.0),
                r["limit"]["mbs"].as_f64().unwrap_or(0.0),
                busy(r)
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let max_rss_kib = runs
        .iter()
        .filter_map(|r| r["rss_hwm_kib"].as_f64())
        .fold(0.0, f64::max);
    runs.sort_by(|a, b| {
        a["ratio"]
            .as_f64()
            .partial_cmp(&b["ratio"].as_f64())
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let median = runs.swap_remove(runs.len() / 2);
    Ok((median, all_runs, max_rss_kib))
}

async fn run(
    client: &Client,
    s3: &S3Settings,
    source: &str,
    target: &str,
    bucket: &str,
    dir: &str,
) -> Result<(), BoxError> {
    let t = Instant::now();
    populate(client, source).await?;
    eprintln!(
        "setup: {} ConfigMaps + {} Secrets created in {source} in {:.1} s ({IN_FLIGHT} in flight, not timed below)",
        CONFIGMAPS,
        SECRETS,
        t.elapsed().as_secs_f64()
    );
    create_bucket(s3, bucket).await?;

    // A warm-up backup (w0, not counted: the first write into a fresh bucket has SeaweedFS set up
    // its volumes), read back for the exported bytes the limits are measured over.
    let warm_up = tokio::task::spawn_blocking({
        let (source, dir, bucket) = (source.to_string(), dir.to_string(), bucket.to_string());
        move || run_backup_child(&source, &dir, &bucket, "w0").map_err(|e| e.to_string())
    })
    .await??;
    eprintln!(
        "backup w0 (warm-up, not counted): {:.2} s",
        warm_up["seconds"].as_f64().unwrap_or(0.0)
    );
    let local = Store::local("onsite", dir)?;
    let exported = restore(
        &local,
        &BackupLocation::new(source, POLICY, "w0")?,
        &restore_options(),
    )
    .await?;
    let mut data = Vec::new();
    for o in &exported.objects {
        serde_json::to_writer(&mut data, o)?;
    }
    drop(exported);

    // Backups b1, b2, ..., each in a child process of its own and set against the single-core
    // limit measured around it (the mean of one just before and one just after); the run of median ratio is reported. Then the same into the
    // on-site store alone (o1, o2, ...), without the S3 server's share of the machine.
    let (b, all_runs, max_rss_kib) = backups(source, dir, bucket, "b", &data).await?;
    let (onsite, onsite_runs, onsite_rss_kib) =
        backups(source, dir, ONSITE_ONLY, "o", &data).await?;
    let max_rss_kib = max_rss_kib.max(onsite_rss_kib);
    let f = |k: &str| b[k].as_f64().unwrap_or(0.0);
    let objects = b["objects"].as_u64().unwrap_or(0);
    let json_bytes = b["json_bytes"].as_u64().unwrap_or(0);
    let backup_s = f("seconds");
    let backup_mbs = mb(json_bytes) / backup_s;
    let rss_mib = max_rss_kib / 1024.0;
    eprintln!(
        "backup: {objects} objects ({:.1} MB JSON, archive {:.1} MB) in {backup_s:.2} s: \
         {:.0} objects/s, {backup_mbs:.1} MB/s, peak RSS {rss_mib:.1} MiB",
        mb(json_bytes),
        mb(b["archive_bytes"].as_u64().unwrap_or(0)),
        objects as f64 / backup_s,
    );

    // Restore from the store alone: read, decrypt, verify signature and digests, parse.
    let loc = BackupLocation::new(source, POLICY, "b1")?;
    let t = Instant::now();
    let read_only = restore(&local, &loc, &restore_options()).await?;
    let read_s = t.elapsed().as_secs_f64();
    drop(read_only);

    // Full restore: the same plus every object created in a fresh namespace.
    create_namespace(client, target).await?;
    let t = Instant::now();
    let restored = restore(&local, &loc, &restore_options()).await?;
    let objects_back = restored.objects.clone();
    let created = restore_into(client, target, restored.objects).await?;
    let restore_s = t.elapsed().as_secs_f64();
    eprintln!(
        "restore: {created} objects into {target} in {restore_s:.2} s ({:.0} objects/s); \
         read + verify alone {read_s:.2} s",
        created as f64 / restore_s
    );

    // The same objects through the engine from memory (no API server): the engine's own rate,
    // into each store alone and into both, split into `add` and `finish`.
    let both = stores(dir, s3, bucket)?;
    let items = raw_items(&objects_back);
    let memory = Store::from_object_store("memory", Arc::new(InMemory::new()), "")?;
    let mut engine = Vec::new();
    for (i, (label, set)) in [
        ("in-memory store", vec![memory]),
        ("local store", vec![both[0].clone()]),
        ("S3 store", vec![both[1].clone()]),
        ("local + S3", both.clone()),
    ]
    .into_iter()
    .enumerate()
    {
        let id = format!("e{i}");
        let (add_s, finish_s) = engine_run(source, &id, &items, &set).await?;
        for s in &set {
            let _ = s
                .delete_backup(&BackupLocation::new(source, POLICY, &id)?)
                .await;
        }
        engine.push((label, add_s, finish_s));
    }
    for s in &both {
        let runs = (1..=BACKUPS).flat_map(|i| [format!("b{i}"), format!("o{i}")]);
        for id in runs.chain(["w0".to_string()]) {
            let _ = s
                .delete_backup(&BackupLocation::new(source, POLICY, id)?)
                .await;
        }
    }

    // Single-core stage throughput over the exported JSON bytes (for the notes; each run's
    // ratio uses the limit measured around it).
    let st = tokio::task::block_in_place(|| stages(&objects_back, &items, &data));
    let limit = b["limit"]["mbs"].as_f64().unwrap_or(f64::MAX);
    let ratio = b["ratio"].as_f64().unwrap_or(0.0);
    let engine_notes = engine
        .iter()
        .map(|(label, add_s, finish_s)| {
            let total = add_s + finish_s;
            format!(
                "{label} {total:.2} s = {:.1} MB/s, {:.0}% of the limit (add {add_s:.2} s, finish {finish_s:.2} s)",
                mb(json_bytes) / total,
                100.0 * mb(json_bytes) / total / limit
            )
        })
        .collect::<Vec<_>>()
        .join("; ");

    let onsite_s = onsite["seconds"].as_f64().unwrap_or(f64::MAX);
    let onsite_mbs = mb(json_bytes) / onsite_s;
    let table = format!(
        "| stores | objects | MB | backup s | objects/s | MB/s | restore s | restore objects/s | peak RSS | sha256 MB/s | aes-gcm MB/s | zstd MB/s | limit MB/s | ratio |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n\
         | local + S3 | {objects} | {:.1} | {backup_s:.2} | {:.0} | {backup_mbs:.1} | {restore_s:.2} | {:.0} | {rss_mib:.0} MiB | {:.0} | {:.0} | {:.0} | {limit:.0} | {:.0}% |\n\
         | local | {objects} | {:.1} | {onsite_s:.2} | {:.0} | {onsite_mbs:.1} | | | | {:.0} | {:.0} | {:.0} | {:.0} | {:.0}% |\n",
        mb(json_bytes),
        objects as f64 / backup_s,
        created as f64 / restore_s,
        b["limit"]["sha256"].as_f64().unwrap_or(0.0),
        b["limit"]["aes"].as_f64().unwrap_or(0.0),
        b["limit"]["zstd"].as_f64().unwrap_or(0.0),
        ratio * 100.0,
        mb(json_bytes),
        objects as f64 / onsite_s,
        onsite["limit"]["sha256"].as_f64().unwrap_or(0.0),
        onsite["limit"]["aes"].as_f64().unwrap_or(0.0),
        onsite["limit"]["zstd"].as_f64().unwrap_or(0.0),
        onsite["limit"]["mbs"].as_f64().unwrap_or(0.0),
        100.0 * onsite["ratio"].as_f64().unwrap_or(0.0),
    );
    let cpu = f("cpu_s");
    let notes = format!(
        "- {objects} objects ({CONFIGMAPS} ConfigMaps + {SECRETS} Secrets, {:.1} MB of exported JSON; MB = 10^6 bytes), \
         archive {:.1} MB (zstd level {} on {} worker threads beside the archiving thread, AES-256-GCM, Ed25519-signed manifest) written to a local store and an S3 bucket (SeaweedFS).\n\
         - backup: the median of {BACKUPS} backups of the namespace after a warm-up one ({all_runs}); peak RSS the largest of them. {} list pages (the controller's `ListAhead`: ConfigMaps then Secrets, 100 objects in the first page and 500 in the others, listed as protobuf and decoded a page ahead) streamed through `BackupWriter::add_raw` in a child process; \
         time waiting for list pages {:.2} s, in `add_raw` (export, copy the raw fields, SHA-256, queue for the archiving thread: tar, zstd, AES-GCM, SHA-256; upload waits) {:.2} s, \
         `finish` (drain the queue, end the archive, complete the uploads, manifest) {:.2} s; \
         process CPU {cpu:.2} s ({:.0}% of one core over the wall time); kube-apiserver CPU {:.2} s{}; SeaweedFS CPU {:.2} s{}; whole machine busy {:.2} of {:.2} CPU-seconds ({:.0}%).\n\
         - on-site store alone (the same backup without the S3 store, so without SeaweedFS's share of the 2 cores): median of {BACKUPS} ({onsite_runs}); process CPU {:.2} s, kube-apiserver CPU {:.2} s, whole machine busy {:.0}%.\n\
         - restore: read + decrypt + verify (signature, archive and object digests) from the local store alone {read_s:.2} s; \
         with the {IN_FLIGHT}-in-flight creates {restore_s:.2} s.\n\
         - the engine alone (same objects from memory through `BackupWriter`, no API server): {engine_notes}.\n\
         - limit: serial single-core pipeline, `1 / (1/sha256 + 1/aes-gcm + 1/zstd)` over the same JSON bytes, measured right before and right after each backup run, \
         the run's limit being the mean of the two (the machine's speed drifts from second to second); ratio = the run's MB/s / its limit; the row shows the run of median ratio. Measured once more at the end: \
         sha256 {:.0}, aes-gcm {:.0}, zstd {:.0} MB/s. zstd compresses these bytes {:.2}x; single-core tar+zstd (the archive stage without zstd workers, over objects serialized beforehand) {:.0} MB/s, \
         export + serialize {:.0} MB/s.\n\
         - goals: ratio >= {:.0}%: {}; peak RSS <= {RSS_GOAL_MIB:.0} MiB: {}.\n",
        mb(json_bytes),
        mb(b["archive_bytes"].as_u64().unwrap_or(0)),
        archive::DEFAULT_ZSTD_LEVEL,
        backup_options().compression_workers,
        b["pages"].as_u64().unwrap_or(0),
        f("wait_list_s"),
        f("add_s"),
        f("finish_s"),
        100.0 * cpu / backup_s,
        f("apiserver_cpu_s"),
        match b["apiservers"].as_u64().unwrap_or(0) {
            1 => String::new(),
            n => format!(" ({n} kube-apiserver processes on the machine, summed)"),
        },
        f("s3_cpu_s"),
        match b["s3_servers"].as_u64().unwrap_or(0) {
            1 => String::new(),
            n => format!(" ({n} SeaweedFS processes on the machine, summed)"),
        },
        f("machine_busy_s"),
        f("machine_total_s"),
        100.0 * f("machine_busy_s") / f("machine_total_s").max(1e-9),
        onsite["cpu_s"].as_f64().unwrap_or(0.0),
        onsite["apiserver_cpu_s"].as_f64().unwrap_or(0.0),
        100.0 * onsite["machine_busy_s"].as_f64().unwrap_or(0.0)
            / onsite["machine_total_s"].as_f64().unwrap_or(1.0).max(1e-9),
        st.limit.sha256,
        st.limit.aes,
        st.limit.zstd,
        st.zstd_ratio,
        st.tar_zstd,
        st.export_serialize,
        RATIO_GOAL * 100.0,
        if ratio >= RATIO_GOAL { "met" } else { "MISSED" },
        if rss_mib <= RSS_GOAL_MIB {
            "met"
        } else {
            "MISSED"
        },
    );
    let report = format!("{table}\n{notes}");
    println!("\n{report}");
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-backup.md");
    std::fs::write(&out, &report)?;
    eprintln!("written to {}", out.display());
    Ok(())
}
