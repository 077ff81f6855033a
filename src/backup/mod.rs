//! The backup engine: export, archive, encryption, signing, storage, restore and retention of a
//! namespace's objects. Pure library code with no Kubernetes client: the BackupPolicy controller
//! lists the objects and hands them to [`run_backup`] (or a [`BackupWriter`]), reads them back
//! with [`restore::restore`] / [`restore::verify`], and prunes with [`retention::plan`].
//!
//! A backup run streams: each object is exported ([`export`]), serialized and hashed by the
//! caller's task, then, in batches of 256 KiB, on a thread of its own, appended to a
//! zstd-compressed tar ([`archive`]; zstd compresses on two worker threads of its own where there
//! are two cores), encrypted in 64 KiB AES-256-GCM frames ([`crypto`]) and
//! hashed again, and a task fans the result out to every store's multipart upload ([`store`]).
//! Bounded queues join the three (8 MiB of objects, 8 MiB of archive), so memory stays bounded
//! however many objects there are, and the caller lists its next page while the last one is
//! compressed. Then the [`manifest`] (every object's digest, the archive's digest, key ids) is
//! signed while the uploads complete, `manifest.sig` is written beside the data, and
//! `manifest.json` last, as the commit marker, to each store whose data and signature are
//! written. A store that fails is dropped from the run and reported; the others carry on.

pub mod archive;
pub mod cli;
mod copies;
pub mod crypto;
pub mod endpoint;
pub mod export;
pub mod keyring;
pub mod manifest;
pub mod protobuf;
pub mod restore;
pub mod retention;
pub mod store;

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::Arc;

use bytes::Bytes;
use ed25519_dalek::SigningKey;
use futures::{FutureExt, Stream, StreamExt};
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use copies::Copies;

pub use archive::{ArchiveError, ArchiveLimits, ObjectKey};
pub use crypto::{CryptoError, EncryptionKey, parse_signing_key, parse_verifying_key};
pub use endpoint::{EndpointError, EndpointPolicy};
pub use export::{
    ExportError, Exported, RawListPage, RawObject, SkipReason, export_object, restore_order,
};
pub use keyring::{EncryptionKeyring, KeyringError, SigningKeyring};
pub use manifest::{EncryptionScheme, Manifest, ManifestError, ManifestObject};
pub use restore::{RestoreError, RestoreOptions, RestoredBackup, VerifyReport, restore, verify};
pub use retention::{BackupRecord, Deletion, RetentionError, RetentionSettings};
pub use store::{
    BackupLocation, CatalogueEntry, IncompleteBackup, S3Config, Store, StoreError, error_chain,
};

/// Bytes buffered below the encryptor before they are handed to the stores.
const FLUSH_BYTES: usize = 256 * 1024;
/// Serialized objects queued for the archiving thread, in bytes at most: the queue's memory
/// bound, and enough to keep that thread busy between two list pages.
const QUEUE_BYTES: usize = 8 * 1024 * 1024;
/// Objects go to the archiving thread in batches of about this many bytes: one wake-up of that
/// thread (and of the writer, when the queue was full) a batch rather than an object.
const BATCH_BYTES: usize = 256 * 1024;
/// Chunks of about [`FLUSH_BYTES`] queued between the archiving thread and the uploads (8 MiB):
/// enough for the thread to keep compressing while an S3 part is in flight.
const CHUNKS_QUEUED: usize = 32;
/// Object buffers up to this capacity go back from the archiving thread for the next objects
/// (no allocation per object, no freeing across threads); larger ones are freed.
const RECYCLE_MAX: usize = 256 * 1024;

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
        .map(|(name, e)| format!("{name}: {}", store::error_chain(e)))
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
    /// zstd worker threads compressing beside the archiving thread (0: that thread compresses
    /// alone); by default [`archive::default_compression_workers`].
    pub compression_workers: u32,
    /// The per-object limit is enforced while writing too, so a backup never holds an object its
    /// restore would refuse.
    pub limits: ArchiveLimits,
    /// What the export keeps beyond its defaults.
    pub export: export::ExportOptions,
}

impl Default for BackupOptions {
    fn default() -> Self {
        Self {
            encryption_key: None,
            signing_key: None,
            compression_level: archive::DEFAULT_ZSTD_LEVEL,
            compression_workers: archive::default_compression_workers(),
            limits: ArchiveLimits::default(),
            export: export::ExportOptions::default(),
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

/// One serialized object for the archiving thread.
struct Entry {
    key: ObjectKey,
    path: String,
    data: Vec<u8>,
    /// Hex SHA-256 of `data`, computed by the caller's task (which has `data` in cache and less
    /// to do than the archiving thread).
    sha256: String,
}

/// Objects in archive order; the permit holds their buffers' share of [`QUEUE_BYTES`] (by
/// capacity) until the thread has written them all.
struct Batch {
    entries: Vec<Entry>,
    permit: OwnedSemaphorePermit,
}

enum Job {
    Entries(Batch),
    /// End the archive: no more entries.
    Finish,
}

/// What the archiving thread hands back once the archive is complete.
struct Archived {
    objects: Vec<ManifestObject>,
    sha256: String,
    bytes: u64,
}

/// Why the archiving thread stopped without completing the archive.
enum Stop {
    Failed(BackupError),
    /// The upload task ended (every store failed, or it panicked).
    UploadsGone,
    /// The writer was aborted or dropped.
    Abandoned,
}

/// The CPU-bound stages on a thread of their own: tar, zstd (on zstd's own worker threads beside
/// it, when the options give it some), AES-GCM and the stored bytes' SHA-256. Objects come in
/// order over `jobs`; stored bytes go out in chunks over `chunks`, so the async side keeps
/// listing and exporting meanwhile.
fn archive_thread(
    mut archive: archive::ArchiveWriter<Sink>,
    jobs: std::sync::mpsc::Receiver<Job>,
    chunks: tokio::sync::mpsc::Sender<Vec<u8>>,
    spare: std::sync::mpsc::Sender<Vec<u8>>,
) -> Result<Archived, Stop> {
    let mut hash = crypto::Sha256Counter::new();
    let mut send = |chunk: Vec<u8>| {
        if chunk.is_empty() {
            return Ok(());
        }
        hash.update(&chunk);
        chunks.blocking_send(chunk).map_err(|_| Stop::UploadsGone)
    };
    let mut objects = Vec::new();
    loop {
        let batch = match jobs.recv() {
            Ok(Job::Entries(batch)) => batch,
            Ok(Job::Finish) => break,
            Err(_) => return Err(Stop::Abandoned),
        };
        for entry in batch.entries {
            archive
                .append_checked(&entry.path, &entry.data)
                .map_err(|e| Stop::Failed(BackupError::Archive(e)))?;
            let Entry {
                key, data, sha256, ..
            } = entry;
            objects.push(ManifestObject {
                api_version: key.api_version,
                kind: key.kind,
                name: key.name,
                sha256,
                size: data.len() as u64,
            });
            if data.capacity() <= RECYCLE_MAX {
                // The writer may be gone already; the buffer is then freed.
                let _ = spare.send(data);
            }
            if archive.sink_mut().buffer().len() >= FLUSH_BYTES {
                // A buffer that holds a whole chunk (and the frame that crosses its end) from
                // the start, rather than one grown by doubling.
                let next = Vec::with_capacity(FLUSH_BYTES + crypto::FRAME_SIZE + crypto::TAG_LEN);
                send(std::mem::replace(archive.sink_mut().buffer(), next))?;
            }
        }
        drop(batch.permit);
    }
    let rest = archive
        .finish()
        .map_err(|e| Stop::Failed(BackupError::Archive(e)))?
        .finish()
        .map_err(|e| Stop::Failed(BackupError::Encrypt(e)))?;
    send(rest)?;
    let (sha256, bytes) = hash.finish();
    Ok(Archived {
        objects,
        sha256,
        bytes,
    })
}

/// Hands the stored bytes to every store still writing (each on its own task, [`copies`]).
/// Ends when the chunks end or when no store is left (which stops the archiving thread).
async fn upload_task(
    mut copies: Copies,
    mut chunks: tokio::sync::mpsc::Receiver<Vec<u8>>,
) -> Copies {
    while let Some(chunk) = chunks.recv().await {
        copies.send(Bytes::from(chunk)).await;
        if !copies.any_alive() {
            break;
        }
    }
    copies.end_data();
    copies
}

/// An error of the pipeline itself that is not a task's failure.
fn pipeline_error_text(what: &str) -> BackupError {
    BackupError::Archive(ArchiveError::Finish(io::Error::other(what.to_string())))
}

/// An error of the pipeline itself (a thread or task that panicked).
fn pipeline_error(what: &str, e: tokio::task::JoinError) -> BackupError {
    BackupError::Archive(ArchiveError::Finish(io::Error::other(format!(
        "the backup {what} failed: {e}"
    ))))
}

/// Writes one backup to every store, one object at a time. Call [`BackupWriter::finish`] to
/// commit, or [`BackupWriter::abort`] to abandon it.
///
/// [`BackupWriter::add`] exports, serializes, checks and hashes an object, then queues it (at
/// most [`QUEUE_BYTES`] of them) for a thread of its own that archives, compresses, encrypts and
/// hashes the result; a task hands the result to the stores. So the caller's next list page is
/// fetched and decoded while the previous one is compressed, on another core. A failure of that
/// thread or of every store is returned by the next `add` or by `finish`.
pub struct BackupWriter {
    jobs: Option<std::sync::mpsc::Sender<Job>>,
    /// Buffers the archiving thread is done with.
    spare: std::sync::mpsc::Receiver<Vec<u8>>,
    budget: Arc<Semaphore>,
    /// Objects not yet handed to the archiving thread, and their buffers' capacity.
    batch: Vec<Entry>,
    batch_bytes: usize,
    checker: archive::EntryChecker,
    archiver: Option<tokio::task::JoinHandle<Result<Archived, Stop>>>,
    uploader: Option<tokio::task::JoinHandle<Copies>>,
    run: Run,
}

/// What a run keeps on the async side.
struct Run {
    meta: BackupMeta,
    location: BackupLocation,
    options: BackupOptions,
    skipped: BTreeMap<&'static str, usize>,
    /// The stores' copies, once the upload task has handed them back.
    copies: Option<Copies>,
}

impl std::fmt::Debug for BackupWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupWriter")
            .field("location", &self.run.location)
            .field("objects", &self.checker.entries())
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
        let archive = archive::ArchiveWriter::new(
            sink,
            options.compression_level,
            options.compression_workers,
            &options.limits,
            mtime,
        )
        .map_err(BackupError::Archive)?;
        let copies = Copies::start(stores, &location);
        let run = Run {
            meta,
            location,
            options,
            skipped: BTreeMap::new(),
            copies: None,
        };
        let (jobs, jobs_rx) = std::sync::mpsc::channel();
        let (chunks, chunks_rx) = tokio::sync::mpsc::channel(CHUNKS_QUEUED);
        let (spare_tx, spare) = std::sync::mpsc::channel();
        let uploader = tokio::spawn(upload_task(copies, chunks_rx));
        let archiver =
            tokio::task::spawn_blocking(move || archive_thread(archive, jobs_rx, chunks, spare_tx));
        Ok(Self {
            jobs: Some(jobs),
            spare,
            budget: Arc::new(Semaphore::new(QUEUE_BYTES)),
            batch: Vec::new(),
            batch_bytes: 0,
            checker: archive::EntryChecker::new(&run.options.limits),
            archiver: Some(archiver),
            uploader: Some(uploader),
            run,
        })
    }

    /// Where the backup is written.
    pub fn location(&self) -> &BackupLocation {
        &self.run.location
    }

    /// Exports and queues one object for the archive (or counts it as skipped).
    pub async fn add(&mut self, object: Value) -> Result<Added, BackupError> {
        let object = match export::export_object_with(object, &self.run.options.export)
            .map_err(BackupError::Export)?
        {
            Exported::Keep(v) => v,
            Exported::Skip(reason) => return Ok(self.skipped(reason)),
        };
        let key = ObjectKey::from_object(&object).map_err(BackupError::Archive)?;
        let mut data = self.buffer();
        export::write_json(&object, &mut data);
        drop(object);
        self.queue(key, data).await
    }

    /// Archives an object as given, without the export rules: an archive of exactly these
    /// objects, as tests of hostile backups need (a tenant's store may hold anything).
    pub async fn add_verbatim(&mut self, object: &Value) -> Result<Added, BackupError> {
        let key = ObjectKey::from_object(object).map_err(BackupError::Archive)?;
        let mut data = self.buffer();
        export::write_json(object, &mut data);
        self.queue(key, data).await
    }

    /// [`add`](Self::add) for a list item whose top-level fields are still JSON text (a page
    /// parsed by [`export::RawListPage`]): only the fields the export rules read are parsed, the
    /// rest (the bulk of most objects) is copied into the archive as the API server sent it.
    pub async fn add_raw(
        &mut self,
        api_version: &str,
        kind: &str,
        item: &export::RawObject,
    ) -> Result<Added, BackupError> {
        let mut data = self.buffer();
        let head = match export::export_raw_with(
            api_version,
            kind,
            item,
            &mut data,
            &self.run.options.export,
        )
        .map_err(BackupError::Export)?
        {
            Exported::Keep(head) => head,
            Exported::Skip(reason) => return Ok(self.skipped(reason)),
        };
        let key = ObjectKey::from_object(&head).map_err(BackupError::Archive)?;
        drop(head);
        self.queue(key, data).await
    }

    fn skipped(&mut self, reason: SkipReason) -> Added {
        *self.run.skipped.entry(reason.as_str()).or_default() += 1;
        Added::Skipped(reason)
    }

    /// An empty buffer for an object's JSON, reusing one the archiving thread is done with.
    fn buffer(&mut self) -> Vec<u8> {
        let mut data = self.spare.try_recv().unwrap_or_default();
        data.clear();
        data
    }

    /// Checks an exported object's entry and queues it, with its SHA-256, for the archiving
    /// thread (in a batch of [`BATCH_BYTES`]).
    async fn queue(&mut self, key: ObjectKey, data: Vec<u8>) -> Result<Added, BackupError> {
        let path = self
            .checker
            .check(&key, data.len() as u64)
            .map_err(BackupError::Archive)?;
        if self.jobs.is_none() {
            return Err(self.stopped().await);
        }
        self.batch_bytes += data.capacity();
        self.batch.push(Entry {
            key: key.clone(),
            path,
            sha256: crypto::sha256_hex(&data),
            data,
        });
        if self.batch_bytes >= BATCH_BYTES {
            self.send_batch().await?;
        }
        Ok(Added::Archived(key))
    }

    /// Hands the batch to the archiving thread, waiting while the queue holds its byte budget.
    async fn send_batch(&mut self) -> Result<(), BackupError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let Some(jobs) = &self.jobs else {
            return Err(self.stopped().await);
        };
        // Every permit is returned when the archiving thread drops the batch, even unwritten.
        let Ok(permit) = self
            .budget
            .clone()
            .acquire_many_owned(queue_permits(self.batch_bytes))
            .await
        else {
            return Err(self.stopped().await);
        };
        let entries = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        if jobs.send(Job::Entries(Batch { entries, permit })).is_err() {
            return Err(self.stopped().await);
        }
        Ok(())
    }

    /// Waits for the archiving thread and the upload task, and takes the stores back.
    async fn join(&mut self) -> Result<Archived, BackupError> {
        self.jobs = None;
        let archived = match self.archiver.take() {
            Some(handle) => match handle.await {
                Ok(result) => result,
                Err(e) => Err(Stop::Failed(pipeline_error("archiving thread", e))),
            },
            None => Err(Stop::Abandoned),
        };
        let mut upload_failure = None;
        if let Some(handle) = self.uploader.take() {
            match handle.await {
                Ok(copies) => self.run.copies = Some(copies),
                Err(e) => upload_failure = Some(pipeline_error("upload task", e)),
            }
        }
        match archived {
            Ok(a) => match upload_failure {
                Some(e) => Err(e),
                None => Ok(a),
            },
            Err(Stop::Failed(e)) => Err(e),
            Err(Stop::UploadsGone) if upload_failure.is_none() => {
                // Every store failed: say why each did.
                let failures = match self.run.copies.take() {
                    Some(copies) => copies.abort().await,
                    None => Vec::new(),
                };
                Err(BackupError::AllStoresFailed { failures })
            }
            Err(Stop::UploadsGone | Stop::Abandoned) => Err(upload_failure.unwrap_or_else(|| {
                BackupError::Archive(ArchiveError::Finish(io::Error::other(
                    "the backup was abandoned",
                )))
            })),
        }
    }

    /// The error that stopped the pipeline early.
    async fn stopped(&mut self) -> BackupError {
        match self.join().await {
            Err(e) => e,
            Ok(_) => BackupError::Archive(ArchiveError::Finish(io::Error::other(
                "the archive ended early",
            ))),
        }
    }

    /// Abandons the backup: aborts every upload (no store gets a `manifest.json`).
    pub async fn abort(mut self) {
        let _ = self.join().await;
        self.run.abort().await;
    }

    /// Ends the archive, completes the data uploads, then writes `manifest.sig` and
    /// `manifest.json` to each store whose data is complete.
    pub async fn finish(mut self) -> Result<BackupSummary, BackupError> {
        let result = match self.send_batch().await {
            Ok(()) => {
                if let Some(jobs) = self.jobs.take() {
                    // If the thread is gone, `join` says why.
                    let _ = jobs.send(Job::Finish);
                }
                match self.join().await {
                    Ok(archived) => self.run.commit(archived).await,
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        if result.is_err() {
            self.run.abort().await;
        }
        result
    }
}

/// Permits of [`QUEUE_BYTES`] a batch of `len` bytes takes (a batch larger than the whole queue
/// takes all of it, so it waits until the queue is empty).
fn queue_permits(len: usize) -> u32 {
    len.clamp(1, QUEUE_BYTES) as u32
}

impl Run {
    /// Abandons every copy still held.
    async fn abort(&mut self) {
        if let Some(copies) = self.copies.take() {
            copies.abort().await;
        }
    }

    async fn commit(&mut self, archived: Archived) -> Result<BackupSummary, BackupError> {
        // The manifest is built and signed on a blocking thread (it needs only the archive);
        // then each store commits on its own: its data completed, `manifest.sig`, and last
        // `manifest.json`, the commit marker (one atomic PUT), so that no store's commit waits
        // for another's.
        let built = tokio::task::spawn_blocking({
            let (meta, options) = (self.meta.clone(), self.options.clone());
            move || signed_manifest(&meta, &options, archived)
        });
        let Some(copies) = self.copies.take() else {
            return Err(pipeline_error_text("the stores were handed back twice"));
        };
        // The stores complete their data while the manifest is built; each writes it as soon
        // as it has both.
        let (built_tx, built_rx) = tokio::sync::oneshot::channel();
        let parts = async move {
            let built = built.await;
            let parts = match &built {
                Ok(Ok((_, bytes, signature))) => Some((bytes.clone(), signature.clone())),
                _ => None,
            };
            let _ = built_tx.send(built);
            parts
        }
        .boxed()
        .shared();
        let stores = copies.commit(parts.clone()).await;
        // Built even when no store got as far as asking for it.
        parts.await;
        let (manifest, _, signature) = built_rx
            .await
            .map_err(|_| pipeline_error_text("the manifest was not built"))?
            .map_err(|e| pipeline_error("manifest", e))??;
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
            bytes: manifest.archive.size,
            archive_sha256: manifest.archive.sha256.clone(),
            stores,
            manifest,
            signature,
        })
    }
}

/// The manifest of an archive, its canonical bytes and their signature (with a signing key).
fn signed_manifest(
    meta: &BackupMeta,
    options: &BackupOptions,
    archived: Archived,
) -> Result<(Manifest, Bytes, Option<String>), BackupError> {
    let Archived {
        objects,
        sha256,
        bytes,
    } = archived;
    let manifest = Manifest {
        format_version: manifest::MANIFEST_FORMAT_VERSION,
        namespace: meta.namespace.clone(),
        policy: meta.policy.clone(),
        backup_id: meta.backup_id.clone(),
        created_at: meta.created_at,
        objects,
        archive: manifest::ArchiveInfo {
            sha256,
            size: bytes,
            compression: manifest::COMPRESSION_ZSTD.into(),
            encryption: if options.encryption_key.is_some() {
                EncryptionScheme::Aes256GcmStream
            } else {
                EncryptionScheme::None
            },
            key_id: options.encryption_key.as_ref().map(|k| k.key_id()),
        },
        signing_key_id: options
            .signing_key
            .as_ref()
            .map(|k| crypto::signing_key_id(&k.verifying_key())),
    };
    let manifest_bytes = Bytes::from(
        manifest
            .to_canonical_bytes()
            .map_err(BackupError::Manifest)?,
    );
    let signature = options
        .signing_key
        .as_ref()
        .map(|k| manifest::sign_manifest(&manifest_bytes, k));
    Ok((manifest, manifest_bytes, signature))
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
