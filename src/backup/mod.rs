//! The backup engine: export, archive, encryption, signing, storage, restore and retention of a
//! namespace's objects. Pure library code with no Kubernetes client: the BackupPolicy controller
//! lists the objects and hands them to [`run_backup`] (or a [`BackupWriter`]), reads them back
//! with [`restore::restore`] / [`restore::verify`], and prunes with [`retention::plan`].
//!
//! A backup run streams: each object is exported ([`export`]), serialized, appended to a
//! zstd-compressed tar ([`archive`]), encrypted in 64 KiB AES-256-GCM frames ([`crypto`]), hashed
//! and fanned out to every store's multipart upload ([`store`]), so memory stays bounded however
//! many objects there are. Then the [`manifest`] (every object's digest, the archive's digest,
//! key ids) is signed and written to each store whose data upload succeeded: `manifest.sig`, then
//! `manifest.json` last as the commit marker. A store that fails is dropped from the run and
//! reported; the others carry on.

pub mod archive;
pub mod cli;
pub mod crypto;
pub mod export;
pub mod manifest;
pub mod restore;
pub mod retention;
pub mod store;

use std::collections::BTreeMap;
use std::io::{self, Write};

use bytes::Bytes;
use ed25519_dalek::SigningKey;
use futures::{Stream, StreamExt};
use serde_json::Value;

pub use archive::{ArchiveError, ArchiveLimits, ObjectKey};
pub use crypto::{CryptoError, EncryptionKey, parse_signing_key, parse_verifying_key};
pub use export::{ExportError, Exported, SkipReason, export_object, restore_order};
pub use manifest::{EncryptionScheme, Manifest, ManifestError, ManifestObject};
pub use restore::{RestoreError, RestoreOptions, RestoredBackup, VerifyReport, restore, verify};
pub use retention::{BackupRecord, Deletion, RetentionError, RetentionSettings};
pub use store::{BackupLocation, CatalogueEntry, IncompleteBackup, S3Config, Store, StoreError};

/// Bytes buffered below the encryptor before they are handed to the stores.
const FLUSH_BYTES: usize = 256 * 1024;

/// Why a backup run failed as a whole (a single store's failure is in [`StoreResult`]).
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("invalid backup location")]
    Location(#[source] StoreError),
    #[error("no storage location given")]
    NoStores,
    #[error("exporting an object failed")]
    Export(#[source] ExportError),
    #[error("serializing {object} failed")]
    Serialize {
        object: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("archiving failed")]
    Archive(#[source] ArchiveError),
    #[error("encrypting the archive failed")]
    Encrypt(#[source] io::Error),
    #[error("building the manifest failed")]
    Manifest(#[source] ManifestError),
    #[error("listing the objects to back up failed")]
    Source(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("every storage location failed: {}", summarize(.failures))]
    AllStoresFailed { failures: Vec<(String, StoreError)> },
}

fn summarize(failures: &[(String, StoreError)]) -> String {
    failures
        .iter()
        .map(|(name, e)| {
            let mut msg = format!("{name}: {e}");
            let mut src = std::error::Error::source(e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            msg
        })
        .collect::<Vec<_>>()
        .join("; ")
}

impl BackupError {
    /// Short stable name: an Event reason and a metrics label.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Location(_) => "InvalidLocation",
            Self::NoStores => "NoStorage",
            Self::Export(_) => "ExportFailed",
            Self::Serialize { .. } => "SerializeFailed",
            Self::Archive(_) => "ArchiveFailed",
            Self::Encrypt(_) => "EncryptionFailed",
            Self::Manifest(_) => "ManifestFailed",
            Self::Source(_) => "SourceFailed",
            Self::AllStoresFailed { .. } => "StorageFailed",
        }
    }
}

/// Any error of the backup engine, for callers that handle them together.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Backup(#[from] BackupError),
    #[error(transparent)]
    Restore(#[from] RestoreError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Retention(#[from] RetentionError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

impl Error {
    /// Short stable name: an Event reason and a metrics label.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Backup(e) => e.category(),
            Self::Restore(e) => e.category(),
            Self::Store(_) => "StoreError",
            Self::Retention(_) => "InvalidRetention",
            Self::Crypto(_) => "InvalidKey",
        }
    }
}

/// Identity of a backup run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupMeta {
    pub namespace: String,
    pub policy: String,
    pub backup_id: String,
    pub created_at: jiff::Timestamp,
}

/// Keys and tuning of a backup run.
#[derive(Clone, Debug)]
pub struct BackupOptions {
    /// AES-256-GCM key; the archive is stored unencrypted when `None`.
    pub encryption_key: Option<EncryptionKey>,
    /// Ed25519 key signing the manifest; no `manifest.sig` when `None`.
    pub signing_key: Option<SigningKey>,
    pub compression_level: i32,
    /// The per-object limit is enforced while writing too, so a backup never holds an object its
    /// restore would refuse.
    pub limits: ArchiveLimits,
}

impl Default for BackupOptions {
    fn default() -> Self {
        Self {
            encryption_key: None,
            signing_key: None,
            compression_level: archive::DEFAULT_ZSTD_LEVEL,
            limits: ArchiveLimits::default(),
        }
    }
}

/// What happened to one object handed to [`BackupWriter::add`].
#[derive(Clone, Debug, PartialEq)]
pub enum Added {
    Archived(ObjectKey),
    Skipped(SkipReason),
}

/// The outcome in one store: `Ok` once `manifest.json` is written (the copy is complete).
#[derive(Debug)]
pub struct StoreResult {
    pub store: String,
    pub result: Result<(), StoreError>,
}

/// The outcome of a backup run.
#[derive(Debug)]
pub struct BackupSummary {
    pub location: BackupLocation,
    /// Objects archived.
    pub objects: usize,
    /// Objects skipped, by [`SkipReason::as_str`].
    pub skipped: BTreeMap<&'static str, usize>,
    /// Size of the stored archive.
    pub bytes: u64,
    /// SHA-256 of the stored archive.
    pub archive_sha256: String,
    pub stores: Vec<StoreResult>,
    pub manifest: Manifest,
    /// The content of `manifest.sig`.
    pub signature: Option<String>,
}

impl BackupSummary {
    /// Names of the stores holding a complete copy.
    pub fn succeeded(&self) -> Vec<&str> {
        self.stores
            .iter()
            .filter(|s| s.result.is_ok())
            .map(|s| s.store.as_str())
            .collect()
    }

    /// Whether some store failed (the backup is then only partly replicated).
    pub fn any_failed(&self) -> bool {
        self.stores.iter().any(|s| s.result.is_err())
    }
}

/// The bottom of the pipeline: a buffer, encrypted or not.
enum Sink {
    Plain(Vec<u8>),
    Encrypted(Box<crypto::EncryptWriter<Vec<u8>>>),
}

impl Sink {
    fn buffer(&mut self) -> &mut Vec<u8> {
        match self {
            Self::Plain(v) => v,
            Self::Encrypted(w) => w.get_mut(),
        }
    }
    fn finish(self) -> io::Result<Vec<u8>> {
        match self {
            Self::Plain(v) => Ok(v),
            Self::Encrypted(w) => w.finish(),
        }
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Plain(v) => v.write(buf),
            Self::Encrypted(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Plain(_) => Ok(()),
            Self::Encrypted(w) => w.flush(),
        }
    }
}

enum Slot {
    Writing(store::DataUpload),
    Written,
    Failed(StoreError),
}

struct Target {
    store: Store,
    slot: Slot,
}

/// Writes one backup to every store, one object at a time. Call [`BackupWriter::finish`] to
/// commit, or [`BackupWriter::abort`] to abandon it.
pub struct BackupWriter {
    archive: archive::ArchiveWriter<Sink>,
    run: Run,
}

/// Everything of a run but the archive writer (which `finish` consumes).
struct Run {
    meta: BackupMeta,
    location: BackupLocation,
    options: BackupOptions,
    hash: crypto::Sha256Counter,
    objects: Vec<ManifestObject>,
    skipped: BTreeMap<&'static str, usize>,
    targets: Vec<Target>,
}

impl std::fmt::Debug for BackupWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupWriter")
            .field("location", &self.run.location)
            .field("objects", &self.run.objects.len())
            .finish()
    }
}

impl BackupWriter {
    /// Starts the data upload in every store. A store that cannot start is reported in the
    /// summary; the run fails only when none can.
    pub async fn begin(
        meta: BackupMeta,
        options: BackupOptions,
        stores: &[Store],
    ) -> Result<Self, BackupError> {
        if stores.is_empty() {
            return Err(BackupError::NoStores);
        }
        let location = BackupLocation::new(&meta.namespace, &meta.policy, &meta.backup_id)
            .map_err(BackupError::Location)?;
        let sink = match &options.encryption_key {
            Some(key) => Sink::Encrypted(Box::new(
                crypto::EncryptWriter::new(Vec::new(), key).map_err(BackupError::Encrypt)?,
            )),
            None => Sink::Plain(Vec::new()),
        };
        let mtime = u64::try_from(meta.created_at.as_second()).unwrap_or(0);
        let archive =
            archive::ArchiveWriter::new(sink, options.compression_level, &options.limits, mtime)
                .map_err(BackupError::Archive)?;
        let mut targets = Vec::with_capacity(stores.len());
        for store in stores {
            let slot = match store.start_data(&location).await {
                Ok(upload) => Slot::Writing(upload),
                Err(e) => {
                    tracing::warn!(store = store.name(), error = %e, "backup store failed to start");
                    Slot::Failed(e)
                }
            };
            targets.push(Target {
                store: store.clone(),
                slot,
            });
        }
        let mut run = Run {
            meta,
            location,
            options,
            hash: crypto::Sha256Counter::new(),
            objects: Vec::new(),
            skipped: BTreeMap::new(),
            targets,
        };
        run.check_some_store_alive()?;
        Ok(Self { archive, run })
    }

    /// Where the backup is written.
    pub fn location(&self) -> &BackupLocation {
        &self.run.location
    }

    /// Exports and archives one object (or counts it as skipped).
    pub async fn add(&mut self, object: Value) -> Result<Added, BackupError> {
        let object = match export::export_object(object).map_err(BackupError::Export)? {
            Exported::Keep(v) => v,
            Exported::Skip(reason) => {
                *self.run.skipped.entry(reason.as_str()).or_default() += 1;
                return Ok(Added::Skipped(reason));
            }
        };
        let key = ObjectKey::from_object(&object).map_err(BackupError::Archive)?;
        let data = serde_json::to_vec(&object).map_err(|source| BackupError::Serialize {
            object: format!("{}/{} {}", key.api_version, key.kind, key.name),
            source,
        })?;
        self.archive
            .append(&key, &data)
            .map_err(BackupError::Archive)?;
        self.run.objects.push(ManifestObject {
            api_version: key.api_version.clone(),
            kind: key.kind.clone(),
            name: key.name.clone(),
            sha256: crypto::sha256_hex(&data),
            size: data.len() as u64,
        });
        if self.archive.sink_mut().buffer().len() >= FLUSH_BYTES {
            let chunk = std::mem::take(self.archive.sink_mut().buffer());
            self.run.push(chunk).await?;
        }
        Ok(Added::Archived(key))
    }

    /// Abandons the backup: aborts every upload (no store gets a `manifest.json`).
    pub async fn abort(mut self) {
        self.run.abort().await;
    }

    /// Ends the archive, completes the data uploads, then writes `manifest.sig` and
    /// `manifest.json` to each store whose data is complete.
    pub async fn finish(self) -> Result<BackupSummary, BackupError> {
        let Self { archive, mut run } = self;
        let rest = archive
            .finish()
            .map_err(BackupError::Archive)
            .and_then(|sink| sink.finish().map_err(BackupError::Encrypt));
        let result = match rest {
            Ok(rest) => run.commit(rest).await,
            Err(e) => Err(e),
        };
        if result.is_err() {
            run.abort().await;
        }
        result
    }
}

impl Run {
    fn check_some_store_alive(&mut self) -> Result<(), BackupError> {
        let alive = self
            .targets
            .iter()
            .any(|t| matches!(t.slot, Slot::Writing(_) | Slot::Written));
        if alive {
            return Ok(());
        }
        let failures = self
            .targets
            .iter_mut()
            .filter_map(|t| match std::mem::replace(&mut t.slot, Slot::Written) {
                Slot::Failed(e) => Some((t.store.name().to_string(), e)),
                _ => None,
            })
            .collect();
        Err(BackupError::AllStoresFailed { failures })
    }

    async fn fail(target: &mut Target, error: StoreError) {
        tracing::warn!(store = target.store.name(), error = %error, "backup store failed");
        if let Slot::Writing(upload) = std::mem::replace(&mut target.slot, Slot::Failed(error)) {
            // Best effort: the upload is abandoned either way.
            let _ = upload.abort().await;
        }
    }

    /// Hands stored bytes to every live store, waiting while too many parts are in flight.
    async fn push(&mut self, chunk: Vec<u8>) -> Result<(), BackupError> {
        if chunk.is_empty() {
            return Ok(());
        }
        self.hash.update(&chunk);
        let bytes = Bytes::from(chunk);
        for target in &mut self.targets {
            let result = match &mut target.slot {
                Slot::Writing(upload) => {
                    upload.write(bytes.clone());
                    upload.wait().await
                }
                _ => continue,
            };
            if let Err(e) = result {
                Self::fail(target, e).await;
            }
        }
        self.check_some_store_alive()
    }

    async fn abort(&mut self) {
        for target in &mut self.targets {
            if let Slot::Writing(upload) = std::mem::replace(&mut target.slot, Slot::Written) {
                let _ = upload.abort().await;
            }
        }
    }

    async fn commit(&mut self, rest: Vec<u8>) -> Result<BackupSummary, BackupError> {
        self.push(rest).await?;
        for target in &mut self.targets {
            if let Slot::Writing(upload) = std::mem::replace(&mut target.slot, Slot::Written)
                && let Err(e) = upload.finish().await
            {
                tracing::warn!(store = target.store.name(), error = %e, "backup store failed");
                target.slot = Slot::Failed(e);
            }
        }
        self.check_some_store_alive()?;

        let (archive_sha256, bytes) = std::mem::take(&mut self.hash).finish();
        let manifest = Manifest {
            format_version: manifest::MANIFEST_FORMAT_VERSION,
            namespace: self.meta.namespace.clone(),
            policy: self.meta.policy.clone(),
            backup_id: self.meta.backup_id.clone(),
            created_at: self.meta.created_at,
            objects: std::mem::take(&mut self.objects),
            archive: manifest::ArchiveInfo {
                sha256: archive_sha256.clone(),
                size: bytes,
                compression: manifest::COMPRESSION_ZSTD.into(),
                encryption: if self.options.encryption_key.is_some() {
                    EncryptionScheme::Aes256GcmStream
                } else {
                    EncryptionScheme::None
                },
                key_id: self.options.encryption_key.as_ref().map(|k| k.key_id()),
            },
            signing_key_id: self
                .options
                .signing_key
                .as_ref()
                .map(|k| crypto::signing_key_id(&k.verifying_key())),
        };
        let manifest_bytes = Bytes::from(
            manifest
                .to_canonical_bytes()
                .map_err(BackupError::Manifest)?,
        );
        let signature = self
            .options
            .signing_key
            .as_ref()
            .map(|k| manifest::sign_manifest(&manifest_bytes, k));

        let mut stores = Vec::with_capacity(self.targets.len());
        for target in &mut self.targets {
            let name = target.store.name().to_string();
            let result = match std::mem::replace(&mut target.slot, Slot::Written) {
                Slot::Failed(e) => Err(e),
                Slot::Writing(_) | Slot::Written => {
                    commit(
                        &target.store,
                        &self.location,
                        signature.as_deref(),
                        &manifest_bytes,
                    )
                    .await
                }
            };
            if let Err(e) = &result {
                tracing::warn!(store = %name, error = %e, "backup store failed");
            }
            stores.push(StoreResult {
                store: name,
                result,
            });
        }
        if stores.iter().all(|s| s.result.is_err()) {
            let failures = stores
                .into_iter()
                .filter_map(|s| s.result.err().map(|e| (s.store, e)))
                .collect();
            return Err(BackupError::AllStoresFailed { failures });
        }
        Ok(BackupSummary {
            location: self.location.clone(),
            objects: manifest.objects.len(),
            skipped: std::mem::take(&mut self.skipped),
            bytes,
            archive_sha256,
            stores,
            manifest,
            signature,
        })
    }
}

async fn commit(
    store: &Store,
    loc: &BackupLocation,
    signature: Option<&str>,
    manifest: &Bytes,
) -> Result<(), StoreError> {
    if let Some(sig) = signature {
        store.put_signature(loc, sig).await?;
    }
    store.put_manifest(loc, manifest.clone()).await
}

/// Backs up `objects` to every store. Objects come as a stream of results (the controller's
/// paged lists); an error from the stream abandons the backup.
pub async fn run_backup<S, E>(
    meta: BackupMeta,
    options: BackupOptions,
    objects: S,
    stores: &[Store],
) -> Result<BackupSummary, BackupError>
where
    S: Stream<Item = Result<Value, E>>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut writer = BackupWriter::begin(meta, options, stores).await?;
    let mut objects = std::pin::pin!(objects);
    while let Some(item) = objects.next().await {
        let result = match item {
            Ok(object) => writer.add(object).await.map(|_| ()),
            Err(e) => Err(BackupError::Source(e.into())),
        };
        if let Err(e) = result {
            writer.abort().await;
            return Err(e);
        }
    }
    writer.finish().await
}

#[cfg(test)]
mod tests;
