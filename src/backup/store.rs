//! Storage locations of backups through `object_store`: a local directory or PVC (on-site) and
//! S3-compatible buckets (off-site), with the layout, the write order that makes a backup's
//! completion atomic, and the catalogue read back from the store alone.
//!
//! Layout: `<prefix>/<namespace>/<policy>/<backup-id>/{data.tar.zst.enc, manifest.sig,
//! manifest.json}`. Write order: the data (multipart, streamed, memory bounded), `manifest.sig`,
//! and `manifest.json` last, as the commit marker (one PUT, atomic in S3 and, through a
//! temporary file and a rename, in a local directory): a backup interrupted at any point
//! has no `manifest.json`, so [`Store::list_backups`] never lists it as complete, and
//! [`Store::list_incomplete`] finds it for cleanup. Deletion removes `manifest.json` first, for
//! the same reason. (An S3 multipart upload interrupted by a crash leaves invisible parts behind;
//! a bucket lifecycle rule `AbortIncompleteMultipartUpload` removes them.) A copy from one store
//! to another ([`Store::copy_backup`]) keeps the same order and commits only data that matches
//! the manifest.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::WriteMultipart;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use super::manifest::{Manifest, ManifestError};

/// The encrypted (or, without a key, plain) archive.
pub const DATA_FILE: &str = "data.tar.zst.enc";
/// Detached signature of the manifest, base64.
pub const SIGNATURE_FILE: &str = "manifest.sig";
/// The manifest: written last, its presence marks a complete backup.
pub const MANIFEST_FILE: &str = "manifest.json";
/// Largest `manifest.json` read (a line of about 150 bytes per object: far more objects than a
/// backup may hold), so a store cannot make a catalogue listing read gigabytes.
pub const MAX_MANIFEST_BYTES: u64 = 64 * 1024 * 1024;
/// Largest `manifest.sig` read (a base64 Ed25519 signature is 88 bytes).
pub const MAX_SIGNATURE_BYTES: u64 = 4096;
/// Parts of one data upload in flight at once (each up to 5 MiB, the S3 minimum part size).
const MAX_PARTS_IN_FLIGHT: usize = 2;

/// What can go wrong with a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{field} {value:?} is not a valid path segment (letters, digits, '-', '.', '_')")]
    InvalidName { field: &'static str, value: String },
    #[error("creating directory {path} failed")]
    CreateDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("configuring store {store} failed")]
    Configure {
        store: String,
        #[source]
        source: object_store::Error,
    },
    #[error("store prefix {prefix:?} is invalid")]
    BadPrefix {
        prefix: String,
        #[source]
        source: object_store::path::Error,
    },
    #[error("starting upload of {path} failed")]
    StartUpload {
        path: String,
        #[source]
        source: object_store::Error,
    },
    #[error("uploading {path} failed")]
    Upload {
        path: String,
        #[source]
        source: object_store::Error,
    },
    #[error("completing upload of {path} failed")]
    FinishUpload {
        path: String,
        #[source]
        source: object_store::Error,
    },
    #[error("writing {path} failed")]
    Put {
        path: String,
        #[source]
        source: object_store::Error,
    },
    #[error("{path} does not exist")]
    NotFound { path: String },
    #[error("reading {path} failed")]
    Get {
        path: String,
        #[source]
        source: object_store::Error,
    },
    #[error("listing {prefix} failed")]
    List {
        prefix: String,
        #[source]
        source: object_store::Error,
    },
    #[error("deleting {path} failed")]
    Delete {
        path: String,
        #[source]
        source: object_store::Error,
    },
    #[error("{path} is not UTF-8 text")]
    NotText { path: String },
    #[error("{path} is {size} bytes, over the limit of {limit}")]
    TooLarge { path: String, size: u64, limit: u64 },
    #[error(
        "writing {path} fell more than {queued} bytes behind the other stores: this copy is abandoned and replicated later from a complete one"
    )]
    FellBehind { path: String, queued: u64 },
    #[error("the upload task of store {store} failed: {reason}")]
    Task { store: String, reason: String },
    #[error(
        "{path} is a symbolic link: a store's files are never reached through one (it could lead outside the store)"
    )]
    Symlink { path: String },
    #[error("the copy read from {path} does not match its manifest")]
    SourceMismatch {
        path: String,
        #[source]
        source: ManifestError,
    },
}

impl StoreError {
    /// Whether the object was simply not there.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }
}

fn check_segment(field: &'static str, value: &str) -> Result<(), StoreError> {
    let ok = !value.is_empty()
        && value.len() <= 253
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        && value.starts_with(|c: char| c.is_ascii_alphanumeric())
        && !value.contains("..");
    if !ok {
        return Err(StoreError::InvalidName {
            field,
            value: value.into(),
        });
    }
    Ok(())
}

/// Where one backup lives: namespace, policy and backup id, each a safe path segment.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BackupLocation {
    namespace: String,
    policy: String,
    backup_id: String,
}

impl BackupLocation {
    pub fn new(
        namespace: impl Into<String>,
        policy: impl Into<String>,
        backup_id: impl Into<String>,
    ) -> Result<Self, StoreError> {
        let loc = Self {
            namespace: namespace.into(),
            policy: policy.into(),
            backup_id: backup_id.into(),
        };
        check_segment("namespace", &loc.namespace)?;
        check_segment("policy", &loc.policy)?;
        check_segment("backup id", &loc.backup_id)?;
        Ok(loc)
    }
    pub fn namespace(&self) -> &str {
        &self.namespace
    }
    pub fn policy(&self) -> &str {
        &self.policy
    }
    pub fn backup_id(&self) -> &str {
        &self.backup_id
    }
}

/// Connection settings of an S3-compatible bucket (credentials already read from their Secret).
#[derive(Clone)]
pub struct S3Config {
    pub bucket: String,
    /// `https://s3.example.net`; the AWS endpoint of the region when `None`. An `http://`
    /// endpoint is allowed (the settings are the operator's own, checked by the CRD's CEL rule).
    pub endpoint: Option<String>,
    pub region: String,
    /// Key prefix inside the bucket.
    pub prefix: Option<String>,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Path-style addressing (`endpoint/bucket/key`); virtual-hosted style otherwise.
    pub force_path_style: bool,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("prefix", &self.prefix)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("force_path_style", &self.force_path_style)
            .finish()
    }
}

/// `https://host/x` with the bucket as the first label of the host (virtual-hosted style).
pub fn virtual_hosted_endpoint(endpoint: &str, bucket: &str) -> String {
    match endpoint.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://{bucket}.{rest}"),
        None => format!("{bucket}.{endpoint}"),
    }
}

/// A complete backup found in a store.
#[derive(Debug)]
pub struct CatalogueEntry {
    pub backup_id: String,
    /// The parsed manifest, checked to name this location. Its signature and digests are checked
    /// by [`super::restore::verify`], not here.
    pub manifest: Result<Manifest, ManifestError>,
    /// Whether `manifest.sig` exists.
    pub signed: bool,
    /// Size of the data file, `None` when it is missing.
    pub data_size: Option<u64>,
    /// When `manifest.json` was written: when the backup completed.
    pub completed_at: jiff::Timestamp,
}

/// A backup directory without `manifest.json`: interrupted, or still being written.
#[derive(Clone, Debug, PartialEq)]
pub struct IncompleteBackup {
    pub backup_id: String,
    pub files: Vec<String>,
    /// Newest modification among its files: delete only after a grace period past this, or an
    /// in-progress backup would be removed under its writer.
    pub last_modified: jiff::Timestamp,
}

/// What [`Store::copy_backup`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyOutcome {
    /// The target had no complete copy: data, signature and manifest were copied.
    Copied { bytes: u64 },
    /// The target already held a complete copy with the same manifest: nothing was written.
    AlreadyComplete,
}

/// A data upload in progress ([`Store::start_data`]).
pub struct DataUpload {
    path: Path,
    writer: WriteMultipart,
}

impl std::fmt::Debug for DataUpload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataUpload")
            .field("path", &self.path.as_ref())
            .finish()
    }
}

impl DataUpload {
    /// Queues bytes (uploaded in parts of 5 MiB).
    pub fn write(&mut self, bytes: Bytes) {
        self.writer.put(bytes);
    }

    /// Waits until few enough parts are in flight: this bounds memory.
    pub async fn wait(&mut self) -> Result<(), StoreError> {
        self.writer
            .wait_for_capacity(MAX_PARTS_IN_FLIGHT)
            .await
            .map_err(|source| StoreError::Upload {
                path: self.path.to_string(),
                source,
            })
    }

    /// Uploads the rest and completes the object.
    pub async fn finish(self) -> Result<(), StoreError> {
        let path = self.path.to_string();
        self.writer
            .finish()
            .await
            .map(|_| ())
            .map_err(|source| StoreError::FinishUpload { path, source })
    }

    /// Abandons the upload (no data object is left).
    pub async fn abort(self) -> Result<(), StoreError> {
        let path = self.path.to_string();
        self.writer
            .abort()
            .await
            .map_err(|source| StoreError::Delete { path, source })
    }
}

fn to_jiff(t: chrono::DateTime<chrono::Utc>) -> jiff::Timestamp {
    jiff::Timestamp::from_millisecond(t.timestamp_millis()).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

/// One storage location.
#[derive(Clone, Debug)]
pub struct Store {
    name: String,
    backend: Arc<dyn ObjectStore>,
    prefix: Path,
    /// For a local store, its directory: where symbolic links are refused
    /// ([`refuse_links`](Self::refuse_links)).
    local_dir: Option<Arc<std::path::PathBuf>>,
}

impl Store {
    /// A local directory (created if missing); writes are fsynced before they count as done.
    pub fn local(
        name: impl Into<String>,
        dir: impl AsRef<std::path::Path>,
    ) -> Result<Self, StoreError> {
        let name = name.into();
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            path: dir.display().to_string(),
            source,
        })?;
        let fs = LocalFileSystem::new_with_prefix(dir)
            .map_err(|source| StoreError::Configure {
                store: name.clone(),
                source,
            })?
            .with_fsync(true)
            .with_automatic_cleanup(true);
        let root = std::fs::canonicalize(dir).map_err(|source| StoreError::CreateDir {
            path: dir.display().to_string(),
            source,
        })?;
        Ok(Self {
            name,
            backend: Arc::new(fs),
            prefix: Path::default(),
            local_dir: Some(Arc::new(root)),
        })
    }

    /// An S3-compatible bucket (no request is made here).
    pub fn s3(name: impl Into<String>, config: &S3Config) -> Result<Self, StoreError> {
        Self::s3_resolved(name, config, None)
    }

    /// [`s3`](Self::s3) whose connections resolve names through `resolver` (the operator's
    /// guard against endpoints that resolve into restricted ranges).
    pub fn s3_resolved(
        name: impl Into<String>,
        config: &S3Config,
        resolver: Option<Arc<dyn object_store::client::DnsResolver>>,
    ) -> Result<Self, StoreError> {
        // The S3 client's TLS runs on the process's ring provider (one crypto stack).
        crate::install_crypto_provider();
        let name = name.into();
        let mut options = object_store::ClientOptions::new()
            .with_connect_timeout(std::time::Duration::from_secs(10))
            // No request may hang: a store that stops answering fails its copy in seconds (the
            // other stores commit on their own meanwhile, and the policy retries the copy).
            .with_timeout(std::time::Duration::from_secs(20))
            // What each file is, for whoever browses the bucket, and so that a server
            // does not sniff them: SeaweedFS, seeing JSON as text, gzips it on arrival.
            .with_content_type_for_suffix("json", "application/json")
            .with_content_type_for_suffix("sig", "text/plain")
            .with_content_type_for_suffix("enc", "application/octet-stream");
        if let Some(r) = resolver {
            options = options.with_dns_resolver(r);
        }
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_access_key_id(&config.access_key_id)
            .with_secret_access_key(&config.secret_access_key)
            .with_virtual_hosted_style_request(!config.force_path_style)
            // Requests are signed, their bodies not hashed into the signature: what a backup
            // uploads carries its own integrity (AES-GCM tags, the archive's SHA-256 in the signed
            // manifest), and verification re-reads every copy; signing the payload would hash
            // every uploaded byte once more for nothing.
            .with_unsigned_payload(true)
            // An unreachable endpoint fails its copy within half a minute instead of
            // object_store's default three minutes of retries, so the status is not held up
            // (the policy retries the failed location's copy from a stored one, on a backoff).
            .with_client_options(options)
            .with_retry(object_store::RetryConfig {
                max_retries: 2,
                retry_timeout: std::time::Duration::from_secs(30),
                ..Default::default()
            });
        if let Some(endpoint) = &config.endpoint {
            let endpoint = endpoint.trim_end_matches('/');
            builder = builder.with_endpoint(if config.force_path_style {
                endpoint.to_string()
            } else {
                virtual_hosted_endpoint(endpoint, &config.bucket)
            });
            if endpoint.starts_with("http://") {
                builder = builder.with_allow_http(true);
            }
        }
        let s3 = builder.build().map_err(|source| StoreError::Configure {
            store: name.clone(),
            source,
        })?;
        Self::from_object_store(name, Arc::new(s3), config.prefix.as_deref().unwrap_or(""))
    }

    /// Any `object_store` backend, under `prefix` (tests use `InMemory`).
    pub fn from_object_store(
        name: impl Into<String>,
        backend: Arc<dyn ObjectStore>,
        prefix: &str,
    ) -> Result<Self, StoreError> {
        let trimmed = prefix.trim_matches('/');
        let prefix = Path::parse(trimmed).map_err(|source| StoreError::BadPrefix {
            prefix: prefix.into(),
            source,
        })?;
        Ok(Self {
            name: name.into(),
            backend,
            prefix,
            local_dir: None,
        })
    }

    /// Refuses to use `dir` (a directory of the store) when a symbolic link stands on the way to
    /// it, or, with `below`, anywhere under it. A local store may sit on a claim its tenant's
    /// pods can write too: a link there would have the operator write, list or delete files
    /// outside the store (another tenant's backups). Remote stores have no links.
    fn refuse_links(&self, dir: &Path, below: bool) -> Result<(), StoreError> {
        let Some(root) = &self.local_dir else {
            return Ok(());
        };
        let link = |p: &std::path::Path| StoreError::Symlink {
            path: p.display().to_string(),
        };
        let mut at = root.as_ref().clone();
        for part in dir.parts() {
            at.push(part.as_ref());
            match std::fs::symlink_metadata(&at) {
                Ok(m) if m.file_type().is_symlink() => return Err(link(&at)),
                Ok(_) => {}
                // Not there yet: nothing can stand below it either.
                Err(_) => return Ok(()),
            }
        }
        if !below {
            return Ok(());
        }
        let mut pending = vec![at];
        while let Some(d) = pending.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for entry in entries.flatten() {
                let Ok(kind) = entry.file_type() else {
                    continue;
                };
                if kind.is_symlink() {
                    return Err(link(&entry.path()));
                }
                if kind.is_dir() {
                    pending.push(entry.path());
                }
            }
        }
        Ok(())
    }

    /// A local store's directory, links resolved.
    pub fn local_dir(&self) -> Option<&std::path::Path> {
        self.local_dir.as_deref().map(|p| p.as_path())
    }

    /// The directory a file of the store is in.
    fn parent_of(path: &Path) -> Path {
        let parts: Vec<_> = path.parts().collect();
        Path::from_iter(parts[..parts.len().saturating_sub(1)].iter().cloned())
    }

    /// Name of the location (`onsite`, `offsite`).
    pub fn name(&self) -> &str {
        &self.name
    }

    fn policy_dir(&self, namespace: &str, policy: &str) -> Path {
        self.prefix.clone().join(namespace).join(policy)
    }

    /// `<prefix>/<namespace>/<policy>/<backup-id>`.
    pub fn backup_dir(&self, loc: &BackupLocation) -> Path {
        self.policy_dir(&loc.namespace, &loc.policy)
            .join(loc.backup_id.as_str())
    }

    /// Path of one file of a backup.
    pub fn file_path(&self, loc: &BackupLocation, file: &str) -> Path {
        self.backup_dir(loc).join(file)
    }

    /// Starts the multipart upload of the data file: nothing is visible until it completes.
    pub async fn start_data(&self, loc: &BackupLocation) -> Result<DataUpload, StoreError> {
        self.refuse_links(&self.backup_dir(loc), true)?;
        let path = self.file_path(loc, DATA_FILE);
        match self.backend.put_multipart(&path).await {
            Ok(upload) => Ok(DataUpload {
                path,
                writer: WriteMultipart::new(upload),
            }),
            Err(source) => Err(StoreError::StartUpload {
                path: path.to_string(),
                source,
            }),
        }
    }

    async fn put(&self, path: Path, bytes: Bytes) -> Result<(), StoreError> {
        self.refuse_links(&Self::parent_of(&path), true)?;
        self.backend
            .put(&path, PutPayload::from_bytes(bytes))
            .await
            .map(|_| ())
            .map_err(|source| StoreError::Put {
                path: path.to_string(),
                source,
            })
    }

    /// Writes `manifest.sig`.
    pub async fn put_signature(
        &self,
        loc: &BackupLocation,
        signature: &str,
    ) -> Result<(), StoreError> {
        self.put(
            self.file_path(loc, SIGNATURE_FILE),
            Bytes::from(signature.to_string()),
        )
        .await
    }

    /// Writes `manifest.json`, the commit marker: call it only after the data (and signature).
    pub async fn put_manifest(&self, loc: &BackupLocation, bytes: Bytes) -> Result<(), StoreError> {
        self.put(self.file_path(loc, MANIFEST_FILE), bytes).await
    }

    /// Writes arbitrary bytes at a backup's file (tests and repair tools).
    pub async fn put_file(
        &self,
        loc: &BackupLocation,
        file: &str,
        bytes: Bytes,
    ) -> Result<(), StoreError> {
        self.put(self.file_path(loc, file), bytes).await
    }

    /// A whole small file, refused unread when the store says it is larger than `limit`, and
    /// cut off when it sends more (whoever writes the store decides what is there).
    async fn get_bytes(&self, path: Path, limit: u64) -> Result<Bytes, StoreError> {
        self.refuse_links(&path, false)?;
        let map = |source: object_store::Error, path: &Path| match source {
            object_store::Error::NotFound { .. } => StoreError::NotFound {
                path: path.to_string(),
            },
            source => StoreError::Get {
                path: path.to_string(),
                source,
            },
        };
        let too_large = |size: u64| StoreError::TooLarge {
            path: path.to_string(),
            size,
            limit,
        };
        let got = self.backend.get(&path).await.map_err(|e| map(e, &path))?;
        if got.meta.size > limit {
            return Err(too_large(got.meta.size));
        }
        let mut body = Vec::with_capacity(got.meta.size as usize);
        let mut stream = got.into_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| map(e, &path))?;
            if (body.len() + chunk.len()) as u64 > limit {
                return Err(too_large((body.len() + chunk.len()) as u64));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(body))
    }

    /// The stored bytes of `manifest.json` ([`StoreError::NotFound`] when the backup is
    /// incomplete or absent), at most [`MAX_MANIFEST_BYTES`].
    pub async fn read_manifest_bytes(&self, loc: &BackupLocation) -> Result<Bytes, StoreError> {
        self.get_bytes(self.file_path(loc, MANIFEST_FILE), MAX_MANIFEST_BYTES)
            .await
    }

    /// Reads and parses `manifest.json`, checking that it names this location (no signature
    /// check: see [`super::restore`]).
    pub async fn read_manifest(&self, loc: &BackupLocation) -> Result<Manifest, ReadManifestError> {
        self.read_manifest_trusted(loc, &[]).await
    }

    /// Reads `manifest.json` and, when `trusted` keys are given, believes it only when
    /// `manifest.sig` verifies with the trusted key it names; then checks that it names this
    /// location.
    pub async fn read_manifest_trusted(
        &self,
        loc: &BackupLocation,
        trusted: &[ed25519_dalek::VerifyingKey],
    ) -> Result<Manifest, ReadManifestError> {
        let bytes = self.read_manifest_bytes(loc).await?;
        let m = if trusted.is_empty() {
            Manifest::from_bytes(&bytes)?
        } else {
            let signature = self.read_signature(loc).await?;
            super::manifest::verify_manifest_trusted(&bytes, signature.as_deref(), trusted)?
        };
        m.check_location(&loc.namespace, &loc.policy, &loc.backup_id)?;
        Ok(m)
    }

    /// `manifest.sig`, `None` when absent.
    pub async fn read_signature(&self, loc: &BackupLocation) -> Result<Option<String>, StoreError> {
        let path = self.file_path(loc, SIGNATURE_FILE);
        match self.get_bytes(path.clone(), MAX_SIGNATURE_BYTES).await {
            Ok(b) => String::from_utf8(b.to_vec())
                .map(Some)
                .map_err(|_| StoreError::NotText {
                    path: path.to_string(),
                }),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Streams the data file: its size, and its bytes in chunks as they arrive.
    pub async fn read_data(
        &self,
        loc: &BackupLocation,
    ) -> Result<(u64, BoxStream<'static, Result<Bytes, StoreError>>), StoreError> {
        let path = self.file_path(loc, DATA_FILE);
        self.refuse_links(&path, false)?;
        let got = self
            .backend
            .get(&path)
            .await
            .map_err(|source| match source {
                object_store::Error::NotFound { .. } => StoreError::NotFound {
                    path: path.to_string(),
                },
                source => StoreError::Get {
                    path: path.to_string(),
                    source,
                },
            })?;
        let size = got.meta.size;
        let p = path.to_string();
        let stream = got
            .into_stream()
            .map_err(move |source| StoreError::Get {
                path: p.clone(),
                source,
            })
            .boxed();
        Ok((size, stream))
    }

    async fn scan(
        &self,
        namespace: &str,
        policy: &str,
    ) -> Result<BTreeMap<String, Vec<object_store::ObjectMeta>>, StoreError> {
        check_segment("namespace", namespace)?;
        check_segment("policy", policy)?;
        let dir = self.policy_dir(namespace, policy);
        self.refuse_links(&dir, true)?;
        let metas: Vec<object_store::ObjectMeta> = self
            .backend
            .list(Some(&dir))
            .try_collect()
            .await
            .map_err(|source| StoreError::List {
                prefix: dir.to_string(),
                source,
            })?;
        let mut by_id: BTreeMap<String, Vec<object_store::ObjectMeta>> = BTreeMap::new();
        for meta in metas {
            let parts: Vec<String> = match meta.location.prefix_match(&dir) {
                Some(rest) => rest.map(|p| p.as_ref().to_string()).collect(),
                None => continue,
            };
            if parts.len() == 2 {
                by_id.entry(parts[0].clone()).or_default().push(meta);
            }
        }
        Ok(by_id)
    }

    /// The catalogue: every complete backup (one with `manifest.json`) of a policy, oldest id
    /// first, each with its manifest. It needs nothing but the store.
    pub async fn list_backups(
        &self,
        namespace: &str,
        policy: &str,
    ) -> Result<Vec<CatalogueEntry>, StoreError> {
        self.list_trusted(namespace, policy, &[]).await
    }

    /// [`list_backups`](Self::list_backups) where, with `trusted` keys given, an entry's manifest
    /// is `Ok` only when its signature verifies with one of them: anyone who can write to the
    /// store can drop a manifest there, and only the signer's word makes it a backup.
    pub async fn list_trusted(
        &self,
        namespace: &str,
        policy: &str,
        trusted: &[ed25519_dalek::VerifyingKey],
    ) -> Result<Vec<CatalogueEntry>, StoreError> {
        Ok(self
            .list_some(namespace, policy, trusted, |_| true, usize::MAX)
            .await?
            .0)
    }

    /// [`list_trusted`](Self::list_trusted) of the complete backups whose id `wanted` accepts,
    /// reading at most `max_reads` manifests (oldest id first); the flag says whether wanted
    /// ones were left for another call. One listing of the store, and bounded work, whatever
    /// the store holds.
    pub async fn list_some(
        &self,
        namespace: &str,
        policy: &str,
        trusted: &[ed25519_dalek::VerifyingKey],
        wanted: impl Fn(&str) -> bool,
        max_reads: usize,
    ) -> Result<(Vec<CatalogueEntry>, bool), StoreError> {
        let mut out = Vec::new();
        for (id, metas) in self.scan(namespace, policy).await? {
            let file = |name: &str| metas.iter().find(|m| m.location.filename() == Some(name));
            let Some(manifest_meta) = file(MANIFEST_FILE) else {
                continue;
            };
            if !wanted(&id) {
                continue;
            }
            if out.len() >= max_reads {
                return Ok((out, true));
            }
            let loc = BackupLocation::new(namespace, policy, id.clone());
            let manifest = match loc {
                // Too large to be one of ours: not even read.
                Ok(_) if manifest_meta.size > MAX_MANIFEST_BYTES => Err(ManifestError::TooLarge {
                    size: manifest_meta.size,
                    limit: MAX_MANIFEST_BYTES,
                }),
                Ok(loc) => match self.read_manifest_trusted(&loc, trusted).await {
                    Err(ReadManifestError::Store(StoreError::TooLarge { size, limit, .. })) => {
                        Err(ManifestError::TooLarge { size, limit })
                    }
                    Ok(m) => Ok(m),
                    Err(ReadManifestError::Store(e)) => return Err(e),
                    Err(ReadManifestError::Manifest(e)) => Err(e),
                },
                // A directory name no writer of ours produces: list it as unreadable.
                Err(_) => Err(ManifestError::WrongLocation {
                    field: "backupId",
                    expected: id.clone(),
                    found: String::new(),
                }),
            };
            out.push(CatalogueEntry {
                backup_id: id.clone(),
                manifest,
                signed: file(SIGNATURE_FILE).is_some(),
                data_size: file(DATA_FILE).map(|m| m.size),
                completed_at: to_jiff(manifest_meta.last_modified),
            });
        }
        Ok((out, false))
    }

    /// Backup directories without `manifest.json`.
    pub async fn list_incomplete(
        &self,
        namespace: &str,
        policy: &str,
    ) -> Result<Vec<IncompleteBackup>, StoreError> {
        let mut out = Vec::new();
        for (id, metas) in self.scan(namespace, policy).await? {
            if metas
                .iter()
                .any(|m| m.location.filename() == Some(MANIFEST_FILE))
            {
                continue;
            }
            let last_modified = metas
                .iter()
                .map(|m| to_jiff(m.last_modified))
                .max()
                .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
            out.push(IncompleteBackup {
                backup_id: id,
                files: metas
                    .iter()
                    .filter_map(|m| m.location.filename().map(str::to_string))
                    .collect(),
                last_modified,
            });
        }
        Ok(out)
    }

    /// Copies the complete backup at `loc` from `source` to this store, in the writers' order:
    /// the data (streamed, memory bounded), then `manifest.sig`, then `manifest.json` last, and
    /// only when the data read matches the manifest's digest and size, so a partial or corrupt
    /// read never becomes a complete copy. Idempotent: a target that already holds the same
    /// manifest is left alone; a target with a different manifest, or an incomplete copy, is
    /// overwritten (the data first, the commit marker last).
    pub async fn copy_backup(
        &self,
        from: &Store,
        loc: &BackupLocation,
    ) -> Result<CopyOutcome, StoreError> {
        let manifest_bytes = from.read_manifest_bytes(loc).await?;
        let manifest_path = from.file_path(loc, MANIFEST_FILE).to_string();
        let manifest = Manifest::from_bytes(&manifest_bytes)
            .and_then(|m| {
                m.check_location(&loc.namespace, &loc.policy, &loc.backup_id)
                    .map(|()| m)
            })
            .map_err(|source| StoreError::SourceMismatch {
                path: manifest_path,
                source,
            })?;
        match self.read_manifest_bytes(loc).await {
            Ok(existing) if existing == manifest_bytes => return Ok(CopyOutcome::AlreadyComplete),
            Ok(_) => {
                // A different manifest under the same id: remove the commit marker first so
                // the target is never complete with mismatched data while it is rewritten.
                self.delete_file(self.file_path(loc, MANIFEST_FILE)).await?;
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        let signature = from.read_signature(loc).await?;
        let (_, mut data) = from.read_data(loc).await?;
        let mut upload = self.start_data(loc).await?;
        let mut hash = super::crypto::Sha256Counter::new();
        while let Some(chunk) = data.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    let _ = upload.abort().await;
                    return Err(e);
                }
            };
            hash.update(&chunk);
            upload.write(chunk);
            if let Err(e) = upload.wait().await {
                let _ = upload.abort().await;
                return Err(e);
            }
        }
        let (sha, size) = hash.finish();
        if let Err(source) = manifest.check_archive(&sha, size) {
            let _ = upload.abort().await;
            return Err(StoreError::SourceMismatch {
                path: from.file_path(loc, DATA_FILE).to_string(),
                source,
            });
        }
        upload.finish().await?;
        if let Some(sig) = signature {
            self.put_signature(loc, &sig).await?;
        }
        self.put_manifest(loc, manifest_bytes).await?;
        Ok(CopyOutcome::Copied { bytes: size })
    }

    async fn delete_file(&self, path: Path) -> Result<(), StoreError> {
        match self.backend.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(source) => Err(StoreError::Delete {
                path: path.to_string(),
                source,
            }),
        }
    }

    /// Every file of a backup.
    async fn files_of(&self, loc: &BackupLocation) -> Result<Vec<Path>, StoreError> {
        let dir = self.backup_dir(loc);
        self.refuse_links(&dir, true)?;
        self.backend
            .list(Some(&dir))
            .map_ok(|m| m.location)
            .try_collect()
            .await
            .map_err(|source| StoreError::List {
                prefix: dir.to_string(),
                source,
            })
    }

    /// Deletes an incomplete backup's files; a backup that has (meanwhile) a `manifest.json` is
    /// complete and left alone. Returns how many files were deleted.
    pub async fn delete_incomplete(&self, loc: &BackupLocation) -> Result<usize, StoreError> {
        let paths = self.files_of(loc).await?;
        if paths.iter().any(|p| p.filename() == Some(MANIFEST_FILE)) {
            return Ok(0);
        }
        for path in &paths {
            self.delete_file(path.clone()).await?;
        }
        Ok(paths.len())
    }

    /// Deletes every file of a backup, `manifest.json` first; returns how many were deleted.
    pub async fn delete_backup(&self, loc: &BackupLocation) -> Result<usize, StoreError> {
        let mut paths = self.files_of(loc).await?;
        paths.sort_by_key(|p| p.filename() != Some(MANIFEST_FILE));
        for path in &paths {
            match self.backend.delete(path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(source) => {
                    return Err(StoreError::Delete {
                        path: path.to_string(),
                        source,
                    });
                }
            }
        }
        Ok(paths.len())
    }
}

/// An error and its causes on one line, for a status, an Event or a log: the one way errors
/// are flattened to text. A remote store's own words stop at the request: an S3 server's
/// answer (its body, request ids, timings, the signed URL) is never copied, only what kind of
/// failure it was and its HTTP status, so what a tenant reads is stable and carries nothing the
/// server (or whoever answers at its address) chose to say.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = String::new();
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(remote) = e.downcast_ref::<object_store::Error>() {
            push_part(&mut msg, &remote_summary(remote));
            break;
        }
        push_part(&mut msg, &e.to_string());
        next = e.source();
    }
    msg
}

fn push_part(msg: &mut String, part: &str) {
    if part.is_empty() || msg.contains(part) {
        return;
    }
    if !msg.is_empty() {
        msg.push_str(": ");
    }
    msg.push_str(part);
}

/// What kind of failure a store request was, in words of our own.
fn remote_summary(err: &object_store::Error) -> String {
    use object_store::Error as E;
    match err {
        E::NotFound { .. } => "not found".into(),
        E::PermissionDenied { .. } => "permission denied by the store (HTTP 403)".into(),
        E::Unauthenticated { .. } => {
            "the store refused the credentials (HTTP 401): check them".into()
        }
        E::AlreadyExists { .. } => "already exists".into(),
        E::Precondition { .. } => "precondition failed (HTTP 412)".into(),
        E::NotModified { .. } => "not modified".into(),
        E::NotSupported { .. } | E::NotImplemented { .. } => {
            "the store does not support this operation".into()
        }
        E::InvalidPath { .. } => "invalid path".into(),
        E::Generic { source, .. } => {
            let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(source.as_ref());
            while let Some(c) = cause {
                if let Some(http) = c.downcast_ref::<object_store::client::HttpError>() {
                    return format!("the store could not be reached ({:?})", http.kind());
                }
                cause = c.source();
            }
            // The request's error text carries the server's body: only its status is kept.
            let text = source.to_string();
            match text
                .split_once("status code: ")
                .and_then(|(_, rest)| rest.get(..3))
                .filter(|code| code.bytes().all(|b| b.is_ascii_digit()))
            {
                Some(code) => format!("the store answered HTTP {code}"),
                None if text.contains("error response") => {
                    "the store answered with an error".into()
                }
                None => "the store request failed".into(),
            }
        }
        _ => "the store request failed".into(),
    }
}

/// Reading a manifest: the store failed, or the bytes are not a manifest of this location.
#[derive(Debug, thiserror::Error)]
pub enum ReadManifestError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(id: &str) -> BackupLocation {
        BackupLocation::new("team-a", "nightly", id).unwrap()
    }

    #[test]
    fn locations_refuse_unsafe_segments() {
        for bad in ["", "..", "a/b", "-x", "a..b", ".hidden", "a b"] {
            assert!(BackupLocation::new("ns", "p", bad).is_err(), "{bad:?}");
        }
        BackupLocation::new("ns", "p", "20260101t000000z-ab12").unwrap();
    }

    #[test]
    fn virtual_hosted_endpoints_put_the_bucket_first() {
        assert_eq!(
            virtual_hosted_endpoint("https://s3.example.net", "b"),
            "https://b.s3.example.net"
        );
    }

    #[test]
    fn layout_is_prefix_namespace_policy_id() {
        let store = Store::from_object_store(
            "s",
            Arc::new(object_store::memory::InMemory::new()),
            "/backups/x/",
        )
        .unwrap();
        assert_eq!(
            store.file_path(&loc("b1"), MANIFEST_FILE).as_ref(),
            "backups/x/team-a/nightly/b1/manifest.json"
        );
    }

    #[tokio::test]
    async fn deleting_an_incomplete_copy_leaves_a_complete_one_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::local("onsite", dir.path()).unwrap();
        for id in ["done", "partial"] {
            store
                .put_file(&loc(id), DATA_FILE, Bytes::from_static(b"data"))
                .await
                .unwrap();
        }
        store
            .put_manifest(&loc("done"), Bytes::from_static(b"{}"))
            .await
            .unwrap();
        assert_eq!(store.delete_incomplete(&loc("done")).await.unwrap(), 0);
        assert_eq!(store.delete_incomplete(&loc("partial")).await.unwrap(), 1);
        let left = store.scan("team-a", "nightly").await.unwrap();
        assert_eq!(left.keys().collect::<Vec<_>>(), ["done"]);
        assert_eq!(left["done"].len(), 2);
    }

    #[tokio::test]
    async fn interrupted_backup_is_not_listed_as_complete() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::local("onsite", dir.path()).unwrap();
        // Data and signature written, no manifest.json: as if the writer died before committing.
        let mut up = store.start_data(&loc("b1")).await.unwrap();
        up.write(Bytes::from_static(b"data"));
        up.finish().await.unwrap();
        store.put_signature(&loc("b1"), "sig").await.unwrap();
        // An upload still in progress (not finished) leaves no visible data either.
        let mut pending = store.start_data(&loc("b2")).await.unwrap();
        pending.write(Bytes::from_static(b"partial"));

        assert!(
            store
                .list_backups("team-a", "nightly")
                .await
                .unwrap()
                .is_empty()
        );
        let incomplete = store.list_incomplete("team-a", "nightly").await.unwrap();
        assert_eq!(incomplete.len(), 1);
        assert_eq!(incomplete[0].backup_id, "b1");
        assert!(matches!(
            store.read_manifest(&loc("b1")).await,
            Err(ReadManifestError::Store(StoreError::NotFound { .. }))
        ));
        pending.abort().await.unwrap();
        assert_eq!(store.delete_backup(&loc("b1")).await.unwrap(), 2);
        assert!(
            store
                .list_incomplete("team-a", "nightly")
                .await
                .unwrap()
                .is_empty()
        );
    }
}
