//! The backup archive: a streaming tar of one JSON file per object, compressed with zstd. The
//! writer takes objects one at a time (memory bounded by one object plus the compressor's
//! window and its workers' jobs); the reader refuses anything a restore must not trust.
//!
//! Entries are `objects/<group or core>/<version>/<kind>/<name>.json`, regular files only. The
//! reader refuses path traversal (`..`, `.`, empty segments), absolute paths, paths outside that
//! shape, duplicate entries, entries over [`ArchiveLimits::max_object_bytes`], more than
//! [`ArchiveLimits::max_entries`] entries or more than [`ArchiveLimits::max_total_bytes`] in all,
//! and every non-regular entry (directories, symlinks, hard links, devices, FIFOs).

use std::collections::HashSet;
use std::io::{self, Read, Write};

/// Default per-object limit: 16 MiB (far above the API server's 1.5 MiB object limit).
pub const DEFAULT_MAX_OBJECT_BYTES: u64 = 16 * 1024 * 1024;
/// Default entry limit.
pub const DEFAULT_MAX_ENTRIES: usize = 100_000;
/// Default limit of all entries together.
pub const DEFAULT_MAX_TOTAL_BYTES: u64 = 2 * 1024 * 1024 * 1024;
/// zstd level used by default: fast, and JSON compresses well anyway.
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;
/// Bytes of input each zstd worker compresses as one job: the last job of an archive, which only
/// starts once the last object is written, stays short (about 10 ms), and the 256 KiB that zstd
/// re-reads from the job before (the overlap, so matches reach back a window) stay a small share.
const COMPRESSION_JOB_BYTES: u32 = 2 * 1024 * 1024;
/// A tar block: headers take one, data is padded with zeros to a whole number of them.
const TAR_BLOCK: usize = 512;
/// Trailing bytes (tar padding) accepted after the end-of-archive marker.
const MAX_TRAILER: u64 = 64 * 1024;

/// Limits the reader (and the writer, for the per-object size) enforces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArchiveLimits {
    pub max_object_bytes: u64,
    pub max_entries: usize,
    pub max_total_bytes: u64,
}

impl ArchiveLimits {
    /// These limits tightened to what a manifest lists: no more entries than its objects, no
    /// object larger than its largest, no more bytes than their sum. Reading an archive against
    /// its (signed) manifest can then never hold more than the manifest promised.
    pub fn within(self, objects: impl Iterator<Item = u64>) -> Self {
        let (mut count, mut largest, mut total) = (0usize, 0u64, 0u64);
        for size in objects {
            count += 1;
            largest = largest.max(size);
            total = total.saturating_add(size);
        }
        Self {
            max_object_bytes: self.max_object_bytes.min(largest),
            max_entries: self.max_entries.min(count),
            max_total_bytes: self.max_total_bytes.min(total),
        }
    }
}

impl Default for ArchiveLimits {
    fn default() -> Self {
        Self {
            max_object_bytes: DEFAULT_MAX_OBJECT_BYTES,
            max_entries: DEFAULT_MAX_ENTRIES,
            max_total_bytes: DEFAULT_MAX_TOTAL_BYTES,
        }
    }
}

/// What can go wrong writing or reading an archive.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("object has no {0}")]
    MissingField(&'static str),
    #[error("{field} {value:?} cannot be used in an archive path")]
    BadName { field: &'static str, value: String },
    #[error("starting the zstd encoder failed")]
    StartCompression(#[source] io::Error),
    #[error("writing entry {path} failed")]
    Write {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("finishing the archive failed")]
    Finish(#[source] io::Error),
    #[error("reading the archive failed")]
    Read(#[source] io::Error),
    #[error("entry {path:?} is an absolute path")]
    AbsolutePath { path: String },
    #[error("entry {path:?} escapes the archive (path traversal)")]
    PathTraversal { path: String },
    #[error("entry {path:?} is not of the form objects/<group>/<version>/<kind>/<name>.json")]
    UnexpectedPath { path: String },
    #[error("entry {path:?} appears twice")]
    Duplicate { path: String },
    #[error("entry {path:?} is {size} bytes, over the limit of {limit}")]
    TooLarge { path: String, size: u64, limit: u64 },
    #[error("archive has more than {limit} entries")]
    TooManyEntries { limit: usize },
    #[error("archive holds more than {limit} bytes in all")]
    TooManyBytes { limit: u64 },
    #[error("entry {path:?} is a {kind}, not a regular file")]
    NotRegular { path: String, kind: String },
    #[error("data after the end of the tar archive")]
    TrailingData,
}

impl ArchiveError {
    /// Whether this is the reader refusing an archive as unsafe (rather than unreadable).
    pub fn is_unsafe(&self) -> bool {
        matches!(
            self,
            Self::AbsolutePath { .. }
                | Self::PathTraversal { .. }
                | Self::UnexpectedPath { .. }
                | Self::Duplicate { .. }
                | Self::TooLarge { .. }
                | Self::TooManyEntries { .. }
                | Self::TooManyBytes { .. }
                | Self::NotRegular { .. }
        )
    }
}

/// Identity of an object in an archive: apiVersion, kind and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub api_version: String,
    pub kind: String,
    pub name: String,
}

fn check_segment(field: &'static str, value: &str) -> Result<(), ArchiveError> {
    let bad = value.is_empty()
        || value == "."
        || value == ".."
        || value.len() > 253
        || value
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_control());
    if bad {
        return Err(ArchiveError::BadName {
            field,
            value: value.into(),
        });
    }
    Ok(())
}

impl ObjectKey {
    /// The key of a Kubernetes object.
    pub fn from_object(obj: &serde_json::Value) -> Result<Self, ArchiveError> {
        let s = |ptr: &str, what: &'static str| {
            obj.pointer(ptr)
                .and_then(|v| v.as_str())
                .map(str::to_string)
                .ok_or(ArchiveError::MissingField(what))
        };
        let key = Self {
            api_version: s("/apiVersion", "apiVersion")?,
            kind: s("/kind", "kind")?,
            name: s("/metadata/name", "metadata.name")?,
        };
        key.entry_path()?;
        Ok(key)
    }

    /// API group, empty for the core group.
    pub fn group(&self) -> &str {
        self.api_version
            .rsplit_once('/')
            .map(|(g, _)| g)
            .unwrap_or("")
    }

    /// API version without its group.
    pub fn version(&self) -> &str {
        self.api_version
            .rsplit_once('/')
            .map(|(_, v)| v)
            .unwrap_or(&self.api_version)
    }

    /// `objects/<group or core>/<version>/<kind>/<name>.json`.
    pub fn entry_path(&self) -> Result<String, ArchiveError> {
        let group = match self.group() {
            "" => "core",
            g => g,
        };
        check_segment("group", group)?;
        check_segment("version", self.version())?;
        check_segment("kind", &self.kind)?;
        check_segment("name", &self.name)?;
        Ok(format!(
            "objects/{group}/{}/{}/{}.json",
            self.version(),
            self.kind,
            self.name
        ))
    }

    /// Parses (and checks) an entry path.
    pub fn from_entry_path(path: &str) -> Result<Self, ArchiveError> {
        let err = || ArchiveError::UnexpectedPath { path: path.into() };
        if path.starts_with('/') || path.starts_with('\\') || path.as_bytes().get(1) == Some(&b':')
        {
            return Err(ArchiveError::AbsolutePath { path: path.into() });
        }
        let parts: Vec<&str> = path.split('/').collect();
        if parts.iter().any(|p| *p == ".." || *p == ".") {
            return Err(ArchiveError::PathTraversal { path: path.into() });
        }
        if parts.len() != 5 || parts[0] != "objects" {
            return Err(err());
        }
        let name = parts[4].strip_suffix(".json").ok_or_else(err)?;
        let api_version = match parts[1] {
            "core" => parts[2].to_string(),
            g => format!("{g}/{}", parts[2]),
        };
        let key = Self {
            api_version,
            kind: parts[3].into(),
            name: name.into(),
        };
        // Round-trip: the path must be exactly the one the writer would produce.
        if key.entry_path().map_err(|_| err())? != path {
            return Err(err());
        }
        Ok(key)
    }
}

/// The checks of the writer on an entry before it is written: a well-formed path, the per-object
/// limit, no duplicates. Separate from [`ArchiveWriter`] so that a caller handing the writing to
/// another thread still gets these errors at once, object by object.
#[derive(Debug)]
pub struct EntryChecker {
    seen: HashSet<String>,
    max_object_bytes: u64,
}

impl EntryChecker {
    pub fn new(limits: &ArchiveLimits) -> Self {
        Self {
            seen: HashSet::new(),
            max_object_bytes: limits.max_object_bytes,
        }
    }

    /// Entries accepted so far.
    pub fn entries(&self) -> usize {
        self.seen.len()
    }

    /// Checks an entry of `size` bytes and records its path; returns the path.
    pub fn check(&mut self, key: &ObjectKey, size: u64) -> Result<String, ArchiveError> {
        let path = key.entry_path()?;
        if size > self.max_object_bytes {
            return Err(ArchiveError::TooLarge {
                path,
                size,
                limit: self.max_object_bytes,
            });
        }
        if self.seen.contains(&path) {
            return Err(ArchiveError::Duplicate { path });
        }
        self.seen.insert(path.clone());
        Ok(path)
    }
}

/// Writes objects into a zstd-compressed tar, one at a time, into `W`.
pub struct ArchiveWriter<W: Write> {
    tar: tar::Builder<zstd::stream::write::Encoder<'static, W>>,
    checker: EntryChecker,
    mtime: u64,
}

impl<W: Write> std::fmt::Debug for ArchiveWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveWriter")
            .field("entries", &self.checker.entries())
            .finish()
    }
}

/// A zstd stream encoder as every archive uses it: `level`, with a content checksum. The
/// benchmark measures zstd through this same function, so its figure is the engine's.
pub fn zstd_encoder<W: Write>(
    inner: W,
    level: i32,
) -> io::Result<zstd::stream::write::Encoder<'static, W>> {
    let mut enc = zstd::stream::write::Encoder::new(inner, level)?;
    enc.include_checksum(true)?;
    Ok(enc)
}

/// zstd workers an archive is compressed by when the options do not say: two where the process
/// may use two cores or more (`available_parallelism`, which reads a container's CPU quota), none
/// (the writer's thread compresses) on one core, where a worker would only add a hand-off.
pub fn default_compression_workers() -> u32 {
    match std::thread::available_parallelism() {
        Ok(n) if n.get() >= 2 => 2,
        _ => 0,
    }
}

impl<W: Write> ArchiveWriter<W> {
    /// `mtime` (Unix seconds) is stamped on every entry, so equal input gives equal archives.
    /// With `workers` > 0, zstd compresses on that many threads of its own, in jobs of
    /// [`COMPRESSION_JOB_BYTES`], while the caller's thread goes on writing entries. Any number of
    /// workers gives the same bytes (one zstd frame), other than those compressed without any.
    pub fn new(
        inner: W,
        level: i32,
        workers: u32,
        limits: &ArchiveLimits,
        mtime: u64,
    ) -> Result<Self, ArchiveError> {
        let mut enc = zstd_encoder(inner, level).map_err(ArchiveError::StartCompression)?;
        if workers > 0 {
            enc.multithread(workers)
                .and_then(|()| {
                    enc.set_parameter(zstd::stream::raw::CParameter::JobSize(
                        COMPRESSION_JOB_BYTES,
                    ))
                })
                .map_err(ArchiveError::StartCompression)?;
        }
        Ok(Self {
            tar: tar::Builder::new(enc),
            checker: EntryChecker::new(limits),
            mtime,
        })
    }

    /// Entries written so far (by [`ArchiveWriter::append`]).
    pub fn entries(&self) -> usize {
        self.checker.entries()
    }

    /// Appends one object's bytes; returns its entry path.
    pub fn append(&mut self, key: &ObjectKey, data: &[u8]) -> Result<String, ArchiveError> {
        let path = self.checker.check(key, data.len() as u64)?;
        self.append_checked(&path, data)?;
        Ok(path)
    }

    /// Appends an entry whose path an [`EntryChecker`] returned (no checks here).
    ///
    /// A path that fits in the header (up to 100 bytes, most of them) is written here: header,
    /// data, zero padding to the next block, the bytes `tar` writes, without its copy of the data
    /// through a stack buffer. A longer path goes through `tar`, for its GNU long-name entry.
    pub(crate) fn append_checked(&mut self, path: &str, data: &[u8]) -> Result<(), ArchiveError> {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(self.mtime);
        let written = if header.set_path(path).is_ok() {
            header.set_cksum();
            let padding = (TAR_BLOCK - data.len() % TAR_BLOCK) % TAR_BLOCK;
            let out = self.tar.get_mut();
            out.write_all(header.as_bytes())
                .and_then(|()| out.write_all(data))
                .and_then(|()| out.write_all(&[0; TAR_BLOCK][..padding]))
        } else {
            self.tar.append_data(&mut header, path, data)
        };
        written.map_err(|source| ArchiveError::Write {
            path: path.to_string(),
            source,
        })
    }

    /// The sink below the compressor, for draining what was written so far.
    pub fn sink_mut(&mut self) -> &mut W {
        self.tar.get_mut().get_mut()
    }

    /// Writes the end-of-archive marker, ends the zstd frame and returns the sink.
    pub fn finish(self) -> Result<W, ArchiveError> {
        let enc = self.tar.into_inner().map_err(ArchiveError::Finish)?;
        enc.finish().map_err(ArchiveError::Finish)
    }
}

/// One object read from an archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveEntry {
    pub path: String,
    pub key: ObjectKey,
    pub data: Vec<u8>,
}

fn entry_kind(t: tar::EntryType) -> String {
    match t {
        tar::EntryType::Symlink => "symlink".into(),
        tar::EntryType::Link => "hard link".into(),
        tar::EntryType::Char => "character device".into(),
        tar::EntryType::Block => "block device".into(),
        tar::EntryType::Directory => "directory".into(),
        tar::EntryType::Fifo => "fifo".into(),
        other => format!("{other:?}"),
    }
}

/// Largest zstd window a reader accepts (2^24 = 16 MiB; the writer's level-3 frames use far
/// less): a frame that asks for more is refused before the decoder allocates it.
pub const MAX_WINDOW_LOG: u32 = 24;

/// Reads a zstd-compressed tar from `reader` within `limits`, then drains `reader` to its end
/// (so that a digest or authentication layer below sees every byte).
pub fn read_archive<R: Read>(
    reader: R,
    limits: &ArchiveLimits,
) -> Result<Vec<ArchiveEntry>, ArchiveError> {
    let mut out = Vec::new();
    visit_archive(reader, limits, |entry| {
        out.push(entry);
        Ok(())
    })?;
    Ok(out)
}

/// [`read_archive`] handing each entry to `visit` as it is read, so that only one object is in
/// memory at a time (a verification keeps none of them); `visit`'s error ends the read.
pub fn visit_archive<R: Read>(
    reader: R,
    limits: &ArchiveLimits,
    mut visit: impl FnMut(ArchiveEntry) -> Result<(), ArchiveError>,
) -> Result<(), ArchiveError> {
    let mut decoder = zstd::stream::read::Decoder::new(reader).map_err(ArchiveError::Read)?;
    decoder
        .window_log_max(MAX_WINDOW_LOG)
        .map_err(ArchiveError::Read)?;
    let mut archive = tar::Archive::new(decoder);
    let mut seen = HashSet::new();
    let mut total: u64 = 0;
    for entry in archive.entries().map_err(ArchiveError::Read)? {
        let mut entry = entry.map_err(ArchiveError::Read)?;
        let path_bytes = entry.path_bytes().into_owned();
        let path = String::from_utf8_lossy(&path_bytes).into_owned();
        if seen.len() >= limits.max_entries {
            return Err(ArchiveError::TooManyEntries {
                limit: limits.max_entries,
            });
        }
        let kind = entry.header().entry_type();
        if kind != tar::EntryType::Regular {
            return Err(ArchiveError::NotRegular {
                path,
                kind: entry_kind(kind),
            });
        }
        let key = ObjectKey::from_entry_path(&path)?;
        if !seen.insert(path.clone()) {
            return Err(ArchiveError::Duplicate { path });
        }
        let size = entry.size();
        if size > limits.max_object_bytes {
            return Err(ArchiveError::TooLarge {
                path,
                size,
                limit: limits.max_object_bytes,
            });
        }
        total = total.saturating_add(size);
        if total > limits.max_total_bytes {
            return Err(ArchiveError::TooManyBytes {
                limit: limits.max_total_bytes,
            });
        }
        let mut data = Vec::with_capacity(size as usize);
        (&mut entry)
            .take(limits.max_object_bytes + 1)
            .read_to_end(&mut data)
            .map_err(ArchiveError::Read)?;
        if data.len() as u64 != size {
            return Err(ArchiveError::Read(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("entry {path:?} is shorter than its header says"),
            )));
        }
        visit(ArchiveEntry { path, key, data })?;
    }
    // After the end-of-archive marker only zero padding may follow; reading to the end also pulls
    // the layers below to their end (final frame, digest).
    let mut decoder = archive.into_inner();
    let mut trailer = Vec::new();
    (&mut decoder)
        .take(MAX_TRAILER + 1)
        .read_to_end(&mut trailer)
        .map_err(ArchiveError::Read)?;
    if trailer.len() as u64 > MAX_TRAILER || trailer.iter().any(|b| *b != 0) {
        return Err(ArchiveError::TrailingData);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(kind: &str, name: &str) -> ObjectKey {
        ObjectKey {
            api_version: if kind == "Deployment" {
                "apps/v1"
            } else {
                "v1"
            }
            .into(),
            kind: kind.into(),
            name: name.into(),
        }
    }

    fn build(entries: &[(ObjectKey, Vec<u8>)]) -> Vec<u8> {
        let mut w = ArchiveWriter::new(Vec::new(), 3, 0, &ArchiveLimits::default(), 0).unwrap();
        for (k, d) in entries {
            w.append(k, d).unwrap();
        }
        w.finish().unwrap()
    }

    /// A zstd-compressed tar built by hand, so that entries the writer refuses can be made.
    fn raw_tar(entries: &[(&[u8], tar::EntryType, &[u8])]) -> Vec<u8> {
        let mut tar_bytes = Vec::new();
        for (path, kind, data) in entries {
            let mut h = tar::Header::new_old();
            h.as_old_mut().name[..path.len()].copy_from_slice(path);
            h.set_entry_type(*kind);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            if *kind == tar::EntryType::Symlink {
                h.as_old_mut().linkname[..6].copy_from_slice(b"/etc/x");
            }
            h.set_cksum();
            tar_bytes.extend_from_slice(h.as_bytes());
            tar_bytes.extend_from_slice(data);
            let pad = (512 - data.len() % 512) % 512;
            tar_bytes.extend(std::iter::repeat_n(0u8, pad));
        }
        tar_bytes.extend([0u8; 1024]);
        zstd::encode_all(&tar_bytes[..], 3).unwrap()
    }

    #[test]
    fn paths_round_trip() {
        let k = key("Deployment", "web");
        assert_eq!(
            k.entry_path().unwrap(),
            "objects/apps/v1/Deployment/web.json"
        );
        assert_eq!(
            key("ConfigMap", "cm").entry_path().unwrap(),
            "objects/core/v1/ConfigMap/cm.json"
        );
        assert_eq!(
            ObjectKey::from_entry_path("objects/apps/v1/Deployment/web.json").unwrap(),
            k
        );
        assert!(key("ConfigMap", "..").entry_path().is_err());
        assert!(key("ConfigMap", "a/b").entry_path().is_err());
    }

    #[test]
    fn writes_and_reads_objects_with_long_names() {
        let long = "n".repeat(200);
        let entries = vec![
            (key("ConfigMap", "a"), b"{\"a\":1}".to_vec()),
            (key("Deployment", &long), vec![b'x'; 100_000]),
        ];
        let bytes = build(&entries);
        let read = read_archive(&bytes[..], &ArchiveLimits::default()).unwrap();
        assert_eq!(read.len(), 2);
        assert_eq!(read[0].key, entries[0].0);
        assert_eq!(read[1].key, entries[1].0);
        assert_eq!(read[1].data, entries[1].1);
    }

    #[test]
    fn entries_are_the_tar_bytes_the_tar_crate_writes_for_short_and_long_paths() {
        // Sizes on a block's edge and off it; names that fit the header's 100 bytes and one that
        // needs the GNU long-name entry; the same mtime stamped by both.
        let entries: Vec<(ObjectKey, Vec<u8>)> = [
            ("a", 0),
            ("b", 1),
            ("c", 511),
            ("d", 512),
            ("e", 513),
            (&"long-name-".repeat(12)[..], 700),
        ]
        .iter()
        .map(|(name, len)| (key("ConfigMap", name), vec![b'x'; *len]))
        .collect();
        let mtime = 1_700_000_000;
        let mut w = ArchiveWriter::new(Vec::new(), 3, 0, &ArchiveLimits::default(), mtime).unwrap();
        for (k, d) in &entries {
            w.append(k, d).unwrap();
        }
        let ours = zstd::decode_all(&w.finish().unwrap()[..]).unwrap();

        let mut reference = tar::Builder::new(Vec::new());
        for (k, d) in &entries {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(d.len() as u64);
            header.set_mode(0o644);
            header.set_mtime(mtime);
            reference
                .append_data(&mut header, k.entry_path().unwrap(), &d[..])
                .unwrap();
        }
        let reference = reference.into_inner().unwrap();
        assert!(
            entries.last().unwrap().0.entry_path().unwrap().len() > 100,
            "the last path takes a long-name entry"
        );
        assert_eq!(ours.len(), reference.len(), "archive length");
        assert!(
            ours == reference,
            "the tar bytes differ from the tar crate's"
        );
    }

    #[test]
    fn an_archive_compressed_by_workers_reads_back_the_same_whatever_their_number() {
        // About 7 MB of entries that compress only partly (a generator's digits), so the frame
        // takes several jobs of COMPRESSION_JOB_BYTES and entries cross the jobs' edges.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let entries: Vec<(ObjectKey, Vec<u8>)> = (0..700)
            .map(|i| {
                let data: Vec<u8> = (0..10_000)
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        b'0' + (state % 10) as u8
                    })
                    .collect();
                (key("ConfigMap", &format!("cm-{i}")), data)
            })
            .collect();
        let with_workers = |workers| {
            let mut w =
                ArchiveWriter::new(Vec::new(), 3, workers, &ArchiveLimits::default(), 0).unwrap();
            for (k, d) in &entries {
                w.append(k, d).unwrap();
            }
            w.finish().unwrap()
        };
        let two = with_workers(2);
        let read = read_archive(&two[..], &ArchiveLimits::default()).unwrap();
        assert_eq!(read.len(), entries.len());
        for (got, (k, d)) in read.iter().zip(&entries) {
            assert_eq!((&got.key, &got.data), (k, d));
        }
        assert!(
            with_workers(1) == two,
            "one worker or two, the same archive"
        );
        // Jobs make a frame of their own layout: the workers did compress it.
        let alone = with_workers(0);
        assert!(
            alone != two,
            "the archive compressed alone is the same as by workers"
        );
        assert_eq!(
            read_archive(&alone[..], &ArchiveLimits::default()).unwrap(),
            read
        );
        assert!(
            two.len() < 7_000_000 * 6 / 10,
            "compressed: {} bytes",
            two.len()
        );
    }

    #[test]
    fn writer_refuses_duplicates_and_oversized_objects() {
        let limits = ArchiveLimits {
            max_object_bytes: 10,
            ..Default::default()
        };
        let mut w = ArchiveWriter::new(Vec::new(), 3, 0, &limits, 0).unwrap();
        w.append(&key("ConfigMap", "a"), b"{}").unwrap();
        assert!(matches!(
            w.append(&key("ConfigMap", "a"), b"{}"),
            Err(ArchiveError::Duplicate { .. })
        ));
        assert!(matches!(
            w.append(&key("ConfigMap", "b"), &[0; 11]),
            Err(ArchiveError::TooLarge { .. })
        ));
    }

    #[test]
    fn entry_checker_checks_before_any_writing() {
        let limits = ArchiveLimits {
            max_object_bytes: 10,
            ..Default::default()
        };
        let mut c = EntryChecker::new(&limits);
        assert_eq!(
            c.check(&key("ConfigMap", "a"), 10).unwrap(),
            "objects/core/v1/ConfigMap/a.json"
        );
        assert!(matches!(
            c.check(&key("ConfigMap", "a"), 2),
            Err(ArchiveError::Duplicate { .. })
        ));
        assert!(matches!(
            c.check(&key("ConfigMap", "b"), 11),
            Err(ArchiveError::TooLarge { size: 11, .. })
        ));
        assert!(c.check(&key("ConfigMap", ".."), 2).is_err());
        // Refused entries are not recorded: "b" is still free.
        assert!(c.check(&key("ConfigMap", "b"), 1).is_ok());
        assert_eq!(c.entries(), 2);
    }

    #[test]
    fn refuses_path_traversal() {
        let t = raw_tar(&[(b"../x", tar::EntryType::Regular, b"{}")]);
        let err = read_archive(&t[..], &ArchiveLimits::default()).unwrap_err();
        assert!(matches!(err, ArchiveError::PathTraversal { .. }), "{err}");
        assert!(err.is_unsafe());
        let t = raw_tar(&[(
            b"objects/core/v1/ConfigMap/../../../../etc.json",
            tar::EntryType::Regular,
            b"{}",
        )]);
        assert!(matches!(
            read_archive(&t[..], &ArchiveLimits::default()),
            Err(ArchiveError::PathTraversal { .. })
        ));
    }

    #[test]
    fn refuses_absolute_and_unexpected_paths() {
        let t = raw_tar(&[(b"/etc/passwd", tar::EntryType::Regular, b"{}")]);
        assert!(matches!(
            read_archive(&t[..], &ArchiveLimits::default()),
            Err(ArchiveError::AbsolutePath { .. })
        ));
        let t = raw_tar(&[(b"objects/x.json", tar::EntryType::Regular, b"{}")]);
        assert!(matches!(
            read_archive(&t[..], &ArchiveLimits::default()),
            Err(ArchiveError::UnexpectedPath { .. })
        ));
    }

    #[test]
    fn refuses_duplicate_entries() {
        let p: &[u8] = b"objects/core/v1/ConfigMap/a.json";
        let t = raw_tar(&[
            (p, tar::EntryType::Regular, b"{}"),
            (p, tar::EntryType::Regular, b"{}"),
        ]);
        assert!(matches!(
            read_archive(&t[..], &ArchiveLimits::default()),
            Err(ArchiveError::Duplicate { .. })
        ));
    }

    #[test]
    fn refuses_oversized_entries_and_too_many_entries() {
        let big = vec![b' '; 2048];
        let t = raw_tar(&[(
            b"objects/core/v1/ConfigMap/a.json",
            tar::EntryType::Regular,
            &big,
        )]);
        let limits = ArchiveLimits {
            max_object_bytes: 1024,
            ..Default::default()
        };
        assert!(matches!(
            read_archive(&t[..], &limits),
            Err(ArchiveError::TooLarge { size: 2048, .. })
        ));
        let entries: Vec<_> = (0..4)
            .map(|i| (key("ConfigMap", &format!("c{i}")), b"{}".to_vec()))
            .collect();
        let bytes = build(&entries);
        let limits = ArchiveLimits {
            max_entries: 3,
            ..Default::default()
        };
        assert!(matches!(
            read_archive(&bytes[..], &limits),
            Err(ArchiveError::TooManyEntries { limit: 3 })
        ));
        let limits = ArchiveLimits {
            max_total_bytes: 5,
            ..Default::default()
        };
        assert!(matches!(
            read_archive(&bytes[..], &limits),
            Err(ArchiveError::TooManyBytes { .. })
        ));
    }

    #[test]
    fn refuses_symlinks_and_other_special_entries() {
        for kind in [
            tar::EntryType::Symlink,
            tar::EntryType::Link,
            tar::EntryType::Char,
            tar::EntryType::Block,
            tar::EntryType::Fifo,
            tar::EntryType::Directory,
        ] {
            let t = raw_tar(&[(b"objects/core/v1/ConfigMap/a.json", kind, b"")]);
            let err = read_archive(&t[..], &ArchiveLimits::default()).unwrap_err();
            assert!(
                matches!(err, ArchiveError::NotRegular { .. }),
                "{kind:?}: {err}"
            );
        }
    }

    #[test]
    fn truncated_compressed_archive_is_an_error() {
        let entries: Vec<_> = (0..50)
            .map(|i| {
                (
                    key("ConfigMap", &format!("c{i}")),
                    vec![b'a' + (i % 26) as u8; 3000],
                )
            })
            .collect();
        let bytes = build(&entries);
        let cut = &bytes[..bytes.len() / 2];
        assert!(matches!(
            read_archive(cut, &ArchiveLimits::default()),
            Err(ArchiveError::Read(_))
        ));
    }
}
