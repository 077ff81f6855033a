//! Reading a backup back: signature check, streaming decryption, archive and object digests,
//! safe extraction, restore order. Nothing is returned unless everything checked out, so a
//! restore is never partial. Also the verification of stored copies.
//!
//! Errors are told apart for status and Events ([`RestoreError::category`]): `MissingManifest`
//! (incomplete or absent backup), `BadSignature`, `WrongKey` (the manifest names another
//! encryption key, or an encrypted backup is read without one), `Corrupt` (a digest, size or
//! authentication tag does not match, or the data is truncated or undecodable) and
//! `UnsafeArchive` (the archive tries path traversal, links, duplicates or oversized entries).

use std::io::{self, Read};

use bytes::{Buf, Bytes};
use ed25519_dalek::VerifyingKey;
use futures::StreamExt;
use futures::stream::BoxStream;
use serde_json::Value;

use super::archive::{self, ArchiveEntry, ArchiveError, ArchiveLimits, ObjectKey};
use super::crypto::{CryptoError, DecryptReader, EncryptionKey, HashingReader};
use super::export::restore_order;
use super::manifest::{self, EncryptionScheme, Manifest, ManifestError};
use super::store::{BackupLocation, Store, StoreError};

/// Why a backup could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("backup {backup_id} has no manifest.json (incomplete or absent)")]
    MissingManifest { backup_id: String },
    #[error("manifest of backup {backup_id} is not trustworthy")]
    BadSignature {
        backup_id: String,
        #[source]
        source: ManifestError,
    },
    #[error("manifest of backup {backup_id} is unreadable")]
    BadManifest {
        backup_id: String,
        #[source]
        source: ManifestError,
    },
    #[error(
        "backup {backup_id} is encrypted with key {expected}, not with the key given ({given})"
    )]
    WrongKey {
        backup_id: String,
        expected: String,
        given: String,
    },
    #[error("backup {backup_id} is encrypted and no encryption key was given")]
    KeyRequired { backup_id: String },
    #[error(
        "backup {backup_id} says it is not encrypted, but its policy encrypts: refused (a manifest's encryption must match the policy's)"
    )]
    NotEncrypted { backup_id: String },
    #[error("backup {backup_id} is corrupt: {reason}")]
    Corrupt {
        backup_id: String,
        reason: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    #[error("archive of backup {backup_id} is unsafe")]
    Unsafe {
        backup_id: String,
        #[source]
        source: ArchiveError,
    },
    #[error("reading backup {backup_id} from the store failed")]
    Store {
        backup_id: String,
        #[source]
        source: Box<StoreError>,
    },
    #[error("the restore worker failed")]
    Worker(#[source] tokio::task::JoinError),
}

impl RestoreError {
    /// Short stable name: an Event reason and a metrics label.
    pub fn category(&self) -> &'static str {
        match self {
            Self::MissingManifest { .. } => "MissingManifest",
            Self::BadSignature { .. } => "BadSignature",
            Self::BadManifest { .. } => "BadManifest",
            Self::WrongKey { .. } | Self::KeyRequired { .. } => "WrongKey",
            Self::NotEncrypted { .. } => "EncryptionMismatch",
            Self::Corrupt { .. } => "Corrupt",
            Self::Unsafe { .. } => "UnsafeArchive",
            Self::Store { .. } => "StoreError",
            Self::Worker(_) => "Internal",
        }
    }

    /// Whether the stored copy itself is bad (corrupt, forged, incomplete, unsafe, or encrypted
    /// otherwise than its policy says), as opposed to a reader's problem (a wrong key, a store
    /// that did not answer, a worker that failed): verification marks such a copy `Corrupt`.
    pub fn copy_is_bad(&self) -> bool {
        matches!(
            self,
            Self::Corrupt { .. }
                | Self::BadSignature { .. }
                | Self::BadManifest { .. }
                | Self::MissingManifest { .. }
                | Self::Unsafe { .. }
                | Self::NotEncrypted { .. }
        )
    }

    fn corrupt(
        backup_id: &str,
        reason: impl Into<String>,
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Corrupt {
            backup_id: backup_id.into(),
            reason: reason.into(),
            source,
        }
    }
}

/// Keys and limits of a read.
#[derive(Clone, Debug, Default)]
pub struct RestoreOptions {
    /// Keys an encrypted backup may be read with: the one whose id the manifest names. When
    /// any is given the reader expects encryption, and a manifest saying `none` is refused.
    pub encryption_keys: Vec<EncryptionKey>,
    /// Keys whose signatures are trusted: when any is given, `manifest.sig` must exist and
    /// verify with the trusted key the manifest names. When empty the signature is not checked
    /// (the CLI without `--public-key-file` only).
    pub trusted_keys: Vec<VerifyingKey>,
    pub limits: ArchiveLimits,
}

/// A backup read back and fully checked.
#[derive(Clone, Debug)]
pub struct RestoredBackup {
    pub manifest: Manifest,
    /// Objects in restore order ([`restore_order`] of the kind, then kind, then name).
    pub objects: Vec<Value>,
}

/// What a verification checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    pub backup_id: String,
    pub archive_sha256: String,
    pub archive_size: u64,
    pub signature_checked: bool,
    /// Objects whose digest was checked: `None` when the archive is encrypted and no key was
    /// given, so only the stored archive's digest (and the signature) could be checked.
    pub objects_checked: Option<usize>,
}

/// Checks `manifest.json`'s bytes (signature first, when trusted keys are given) and that the
/// manifest names `loc`.
pub fn check_manifest(
    loc: &BackupLocation,
    bytes: &[u8],
    signature: Option<&str>,
    trusted_keys: &[VerifyingKey],
) -> Result<Manifest, RestoreError> {
    let id = loc.backup_id();
    let manifest = if trusted_keys.is_empty() {
        Manifest::from_bytes(bytes).map_err(|source| RestoreError::BadManifest {
            backup_id: id.into(),
            source,
        })?
    } else {
        manifest::verify_manifest_trusted(bytes, signature, trusted_keys).map_err(|source| {
            RestoreError::BadSignature {
                backup_id: id.into(),
                source,
            }
        })?
    };
    manifest
        .check_location(loc.namespace(), loc.policy(), id)
        .map_err(|source| RestoreError::BadManifest {
            backup_id: id.into(),
            source,
        })?;
    Ok(manifest)
}

fn classify_archive_error(backup_id: &str, err: ArchiveError) -> RestoreError {
    if err.is_unsafe() {
        return RestoreError::Unsafe {
            backup_id: backup_id.into(),
            source: err,
        };
    }
    let reason = match &err {
        ArchiveError::Read(io) => match CryptoError::from_io(io) {
            Some(c) => c.to_string(),
            None => format!("undecodable archive: {io}"),
        },
        other => other.to_string(),
    };
    RestoreError::corrupt(backup_id, reason, Some(Box::new(err)))
}

/// The key to read the archive with: the given key the manifest names (`None` for an
/// unencrypted archive read without keys). Encryption must match: a reader with keys refuses a
/// manifest that says `none`, and one without keys cannot read an encrypted archive.
fn check_key<'k>(
    manifest: &Manifest,
    keys: &'k [EncryptionKey],
) -> Result<Option<&'k EncryptionKey>, RestoreError> {
    let backup_id = || manifest.backup_id.clone();
    if manifest.archive.encryption == EncryptionScheme::None {
        if keys.is_empty() {
            return Ok(None);
        }
        return Err(RestoreError::NotEncrypted {
            backup_id: backup_id(),
        });
    }
    let first = keys.first().ok_or_else(|| RestoreError::KeyRequired {
        backup_id: backup_id(),
    })?;
    match &manifest.archive.key_id {
        None => Ok(Some(first)),
        Some(expected) => keys
            .iter()
            .find(|k| k.key_id() == *expected)
            .map(Some)
            .ok_or_else(|| RestoreError::WrongKey {
                backup_id: backup_id(),
                expected: expected.clone(),
                given: keys
                    .iter()
                    .map(|k| k.key_id())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
    }
}

/// Reads a stored archive from `data` against its (already checked) manifest: decrypts,
/// checks every object's digest as it is read and hands it to `visit`, then checks the archive
/// digest. The archive may hold no more than the manifest lists (its limits are tightened to
/// it, [`ArchiveLimits::within`]). Synchronous: the async entry points run it on a blocking
/// thread.
pub fn read_verified(
    manifest: &Manifest,
    data: impl Read,
    keys: &[EncryptionKey],
    limits: &ArchiveLimits,
    mut visit: impl FnMut(ArchiveEntry),
) -> Result<(), RestoreError> {
    let id = manifest.backup_id.as_str();
    let key = check_key(manifest, keys)?;
    let limits = limits.within(manifest.objects.iter().map(|o| o.size));
    let mut checker = manifest
        .object_checker()
        .map_err(|e| RestoreError::corrupt(id, e.to_string(), Some(Box::new(e))))?;
    let mut object_error = None;
    let mut each = |entry: ArchiveEntry| match checker.check(&entry) {
        Ok(()) => {
            visit(entry);
            Ok(())
        }
        Err(e) => {
            let msg = e.to_string();
            object_error = Some(e);
            Err(ArchiveError::Read(io::Error::other(msg)))
        }
    };
    let mut hashed = HashingReader::new(data);
    let read = match (manifest.archive.encryption, key) {
        (EncryptionScheme::Aes256GcmStream, Some(key)) => {
            let reader = DecryptReader::new(&mut hashed, key)
                .map_err(|e| classify_archive_error(id, ArchiveError::Read(e)))?;
            archive::visit_archive(reader, &limits, &mut each)
        }
        _ => archive::visit_archive(&mut hashed, &limits, &mut each),
    };
    if let Some(e) = object_error {
        return Err(RestoreError::corrupt(id, e.to_string(), Some(Box::new(e))));
    }
    read.map_err(|e| classify_archive_error(id, e))?;
    // Anything left unread (there should be nothing) still counts for the digest.
    io::copy(&mut hashed, &mut io::sink())
        .map_err(|e| classify_archive_error(id, ArchiveError::Read(e)))?;
    let (sha, size) = hashed.finish();
    manifest
        .check_archive(&sha, size)
        .map_err(|e| RestoreError::corrupt(id, e.to_string(), Some(Box::new(e))))?;
    checker
        .finish()
        .map_err(|e| RestoreError::corrupt(id, e.to_string(), Some(Box::new(e))))?;
    Ok(())
}

/// Parses entries into objects, checks each names its entry, and sorts them in restore order.
pub fn into_restore_order(
    backup_id: &str,
    entries: Vec<ArchiveEntry>,
) -> Result<Vec<Value>, RestoreError> {
    let mut objects = Vec::with_capacity(entries.len());
    for e in entries {
        let key = e.key.clone();
        objects.push((key, object_of(backup_id, e)?));
    }
    objects.sort_by(|(a, _), (b, _)| {
        (restore_order(&a.kind), &a.kind, &a.name, &a.api_version).cmp(&(
            restore_order(&b.kind),
            &b.kind,
            &b.name,
            &b.api_version,
        ))
    });
    Ok(objects.into_iter().map(|(_, v)| v).collect())
}

/// A blocking `Read` over chunks sent from an async task.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while !self.current.has_remaining() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.remaining());
        self.current.copy_to_slice(&mut buf[..n]);
        Ok(n)
    }
}

async fn read_manifest_checked(
    store: &Store,
    loc: &BackupLocation,
    trusted_keys: &[VerifyingKey],
) -> Result<Manifest, RestoreError> {
    let id = loc.backup_id();
    let store_err = |source| RestoreError::Store {
        backup_id: id.into(),
        source: Box::new(source),
    };
    let bytes = match store.read_manifest_bytes(loc).await {
        Ok(b) => b,
        Err(e) if e.is_not_found() => {
            return Err(RestoreError::MissingManifest {
                backup_id: id.into(),
            });
        }
        Err(e) => return Err(store_err(e)),
    };
    let signature = if trusted_keys.is_empty() {
        None
    } else {
        store.read_signature(loc).await.map_err(store_err)?
    };
    check_manifest(loc, &bytes, signature.as_deref(), trusted_keys)
}

/// Opens the data file; a missing one is a corrupt backup (its manifest says it exists).
async fn open_data(
    store: &Store,
    loc: &BackupLocation,
) -> Result<BoxStream<'static, Result<Bytes, StoreError>>, RestoreError> {
    let id = loc.backup_id();
    match store.read_data(loc).await {
        Ok((_, stream)) => Ok(stream),
        Err(e) if e.is_not_found() => Err(RestoreError::corrupt(
            id,
            "the data file is missing",
            Some(Box::new(e)),
        )),
        Err(source) => Err(RestoreError::Store {
            backup_id: id.into(),
            source: Box::new(source),
        }),
    }
}

/// The first pass over a stored archive: its bytes are hashed and compared with the (already
/// authenticated) manifest before anything is decrypted or decompressed, and reading stops as
/// soon as it holds more bytes than the manifest says. An archive swapped for a decompression
/// bomb is refused here, at the cost of its stored size read once.
async fn check_stored(
    store: &Store,
    loc: &BackupLocation,
    manifest: &Manifest,
) -> Result<(), RestoreError> {
    let id = loc.backup_id();
    let mut stream = open_data(store, loc).await?;
    let mut hash = super::crypto::Sha256Counter::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|source| RestoreError::Store {
            backup_id: id.into(),
            source: Box::new(source),
        })?;
        hash.update(&chunk);
        if hash.bytes() > manifest.archive.size {
            break;
        }
    }
    let (sha, size) = hash.finish();
    manifest
        .check_archive(&sha, size)
        .map_err(|e| RestoreError::corrupt(id, e.to_string(), Some(Box::new(e))))
}

/// The second pass: streams the data file through [`read_verified`] on a blocking thread,
/// folding each verified entry into `acc` with `step` there.
async fn stream_verified<A: Send + 'static>(
    store: &Store,
    loc: &BackupLocation,
    manifest: &Manifest,
    keys: Vec<EncryptionKey>,
    limits: ArchiveLimits,
    acc: A,
    mut step: impl FnMut(&mut A, ArchiveEntry) + Send + 'static,
) -> Result<A, RestoreError> {
    let id = loc.backup_id().to_string();
    let mut stream = open_data(store, loc).await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(4);
    let m = manifest.clone();
    let worker = tokio::task::spawn_blocking(move || {
        let reader = ChannelReader {
            rx,
            current: Bytes::new(),
        };
        let mut acc = acc;
        read_verified(&m, reader, &keys, &limits, |e| step(&mut acc, e)).map(|()| acc)
    });
    let mut store_failure = None;
    while let Some(chunk) = stream.next().await {
        let item = match chunk {
            Ok(b) => Ok(b),
            Err(e) => {
                // The worker sees an I/O error; the store's error is what is reported.
                let msg = format!("store read failed: {e}");
                store_failure = Some(e);
                Err(io::Error::other(msg))
            }
        };
        let failed = item.is_err();
        // The worker stopped reading (it found an error): stop streaming.
        if tx.send(item).await.is_err() || failed {
            break;
        }
    }
    drop(tx);
    let result = worker.await.map_err(RestoreError::Worker)?;
    match (result, store_failure) {
        (Err(_), Some(source)) => Err(RestoreError::Store {
            backup_id: id,
            source: Box::new(source),
        }),
        (r, _) => r,
    }
}

/// The first checks of every read for a restore: the manifest's signature (when trusted keys
/// are given), its encryption against the keys at hand, and the stored archive's digest.
async fn checked_manifest(
    store: &Store,
    loc: &BackupLocation,
    options: &RestoreOptions,
) -> Result<Manifest, RestoreError> {
    let manifest = read_manifest_checked(store, loc, &options.trusted_keys).await?;
    check_key(&manifest, &options.encryption_keys)?;
    check_stored(store, loc, &manifest).await?;
    Ok(manifest)
}

/// Reads a backup for a restore: verifies the signature (when trusted keys are given), checks
/// the stored archive's digest, then streams and decrypts the data, checks every object's
/// digest, extracts within the limits (and no more than the manifest lists) and returns the
/// objects in restore order. Any mismatch is an error and nothing is returned.
pub async fn restore(
    store: &Store,
    loc: &BackupLocation,
    options: &RestoreOptions,
) -> Result<RestoredBackup, RestoreError> {
    let manifest = checked_manifest(store, loc, options).await?;
    let entries = stream_verified(
        store,
        loc,
        &manifest,
        options.encryption_keys.clone(),
        options.limits,
        Vec::new(),
        |all, e| all.push(e),
    )
    .await?;
    let objects = into_restore_order(loc.backup_id(), entries)?;
    Ok(RestoredBackup { manifest, objects })
}

/// A backup read back one object at a time, in restore order ([`restore_stream`]).
pub struct ObjectStream {
    pub manifest: Manifest,
    objects: tokio::sync::mpsc::Receiver<Value>,
    reader: tokio::task::JoinHandle<Result<(), RestoreError>>,
}

impl ObjectStream {
    /// The next object, `None` after the last (or once the read failed: see
    /// [`finish`](Self::finish)).
    pub async fn next(&mut self) -> Option<Value> {
        self.objects.recv().await
    }

    /// How the read ended: `Ok` only when every object was read and checked, and the archive's
    /// digest matched once more.
    pub async fn finish(mut self) -> Result<(), RestoreError> {
        self.objects.close();
        while self.objects.recv().await.is_some() {}
        self.reader.await.map_err(RestoreError::Worker)?
    }
}

/// Objects queued between the reader and the one restoring them.
const STREAM_QUEUE: usize = 64;

/// Whether a manifest lists its objects in restore order (kinds by [`restore_order`]): the
/// order backups are written in, so their objects can be restored as they are read.
fn in_restore_order(manifest: &Manifest) -> bool {
    manifest
        .objects
        .windows(2)
        .all(|w| restore_order(&w[0].kind) <= restore_order(&w[1].kind))
}

/// Reads a backup for a restore that writes objects as they come: the signature and the stored
/// archive's digest are checked first (nothing is decrypted or decompressed before), then the
/// objects are handed over one at a time, each checked against the manifest, in restore order,
/// so memory holds a few objects rather than the backup. An archive written in another order
/// (before backups were written in restore order) is read whole and sorted, within
/// `options.limits`; a stream in restore order is read within the default limits (and the
/// manifest's). A failure after the first checks (the store changed under the read) ends the
/// stream early; [`ObjectStream::finish`] says so.
pub async fn restore_stream(
    store: &Store,
    loc: &BackupLocation,
    options: &RestoreOptions,
) -> Result<ObjectStream, RestoreError> {
    let manifest = checked_manifest(store, loc, options).await?;
    let (tx, objects) = tokio::sync::mpsc::channel(STREAM_QUEUE);
    let id = loc.backup_id().to_string();
    let reader = if in_restore_order(&manifest) {
        let (store, loc, m) = (store.clone(), loc.clone(), manifest.clone());
        let keys = options.encryption_keys.clone();
        let limits = ArchiveLimits::default();
        tokio::spawn(async move {
            let step =
                move |(tx, err): &mut (tokio::sync::mpsc::Sender<Value>, Option<RestoreError>),
                      e| {
                    if err.is_some() {
                        return;
                    }
                    match object_of(&id, e) {
                        // A receiver that is gone stops wanting objects; the read still ends.
                        Ok(v) => {
                            let _ = tx.blocking_send(v);
                        }
                        Err(e) => *err = Some(e),
                    }
                };
            let sent = stream_verified(&store, &loc, &m, keys, limits, (tx, None), step).await?;
            match sent.1 {
                Some(e) => Err(e),
                None => Ok(()),
            }
        })
    } else {
        let (store, loc) = (store.clone(), loc.clone());
        let options = options.clone();
        tokio::spawn(async move {
            let all = restore(&store, &loc, &options).await?;
            for o in all.objects {
                if tx.send(o).await.is_err() {
                    break;
                }
            }
            Ok(())
        })
    };
    Ok(ObjectStream {
        manifest,
        objects,
        reader,
    })
}

/// One archive entry as an object, checked to be what its entry says.
fn object_of(backup_id: &str, e: ArchiveEntry) -> Result<Value, RestoreError> {
    let value: Value = serde_json::from_slice(&e.data).map_err(|err| {
        RestoreError::corrupt(
            backup_id,
            format!("{} is not JSON", e.path),
            Some(Box::new(err)),
        )
    })?;
    let key = ObjectKey::from_object(&value).map_err(|err| {
        RestoreError::corrupt(
            backup_id,
            format!("{} is not an object", e.path),
            Some(Box::new(err)),
        )
    })?;
    if key != e.key {
        return Err(RestoreError::corrupt(
            backup_id,
            format!(
                "{} holds {}/{} {}",
                e.path, key.api_version, key.kind, key.name
            ),
            None,
        ));
    }
    Ok(value)
}

/// Verifies a stored copy: the signature, then the stored archive's digest and size; then,
/// with the encryption key (or for an unencrypted backup), every object's digest, one object
/// in memory at a time.
pub async fn verify(
    store: &Store,
    loc: &BackupLocation,
    options: &RestoreOptions,
) -> Result<VerifyReport, RestoreError> {
    let manifest = read_manifest_checked(store, loc, &options.trusted_keys).await?;
    let signature_checked = !options.trusted_keys.is_empty();
    let full = manifest.archive.encryption == EncryptionScheme::None
        || !options.encryption_keys.is_empty();
    if full {
        check_key(&manifest, &options.encryption_keys)?;
    }
    check_stored(store, loc, &manifest).await?;
    let objects_checked = if full {
        let count = stream_verified(
            store,
            loc,
            &manifest,
            options.encryption_keys.clone(),
            options.limits,
            0usize,
            |n, _| *n += 1,
        )
        .await?;
        Some(count)
    } else {
        None
    };
    Ok(VerifyReport {
        backup_id: loc.backup_id().into(),
        archive_sha256: manifest.archive.sha256.clone(),
        archive_size: manifest.archive.size,
        signature_checked,
        objects_checked,
    })
}
