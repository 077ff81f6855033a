//! The backup manifest (`manifest.json`): what a backup holds, each object's digest, the
//! archive's digest and encryption, and the id of the key that signed it; and its detached
//! Ed25519 signature (`manifest.sig`, base64).
//!
//! The signature covers the manifest's bytes exactly as stored. They are canonical: serde_json
//! output in struct field order, each top-level field on a line of its own and each object of
//! `objects` compact on a line of its own (a quarter smaller than pretty-printed JSON, and one
//! `grep` hit per object), with a final newline, so equal manifests have equal bytes. A reader
//! accepts any JSON layout (earlier backups stored pretty-printed JSON): the signature covers
//! whatever bytes were stored. A verifier checks the signature over the stored bytes *before*
//! parsing, and then that the manifest names the location it was read from (a signed manifest
//! moved to another backup's directory is refused).

use std::io;

use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use super::archive::{ArchiveEntry, ObjectKey};
use super::crypto::{self, CryptoError};

/// Version of the manifest format.
pub const MANIFEST_FORMAT_VERSION: u32 = 1;
/// `archive.compression`.
pub const COMPRESSION_ZSTD: &str = "zstd";

/// What can go wrong building, reading or checking a manifest.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("serializing the manifest failed")]
    Serialize(#[source] serde_json::Error),
    #[error("manifest is not valid JSON of the expected shape")]
    Parse(#[source] serde_json::Error),
    #[error("manifest format version {0} is not supported (expected {MANIFEST_FORMAT_VERSION})")]
    UnsupportedVersion(u32),
    #[error("manifest compression {0:?} is not supported")]
    UnsupportedCompression(String),
    #[error("manifest names {field} {found:?} but was read from {expected:?}")]
    WrongLocation {
        field: &'static str,
        expected: String,
        found: String,
    },
    #[error("manifest is not signed (manifest.sig missing or signingKeyId absent)")]
    Unsigned,
    #[error("manifest was signed by key {found}, expected {expected}")]
    WrongSigningKey { expected: String, found: String },
    #[error("manifest is {size} bytes, over the limit of {limit}")]
    TooLarge { size: u64, limit: u64 },
    #[error("manifest signature does not verify")]
    BadSignature(#[source] CryptoError),
    #[error(
        "archive digest mismatch: manifest says {expected} ({expected_size} bytes), read {found} ({found_size} bytes)"
    )]
    ArchiveDigest {
        expected: String,
        expected_size: u64,
        found: String,
        found_size: u64,
    },
    #[error("object {path} digest mismatch")]
    ObjectDigest { path: String },
    #[error("object {path} is in the archive but not in the manifest")]
    UnlistedObject { path: String },
    #[error("{count} objects of the manifest are missing from the archive (first: {first})")]
    MissingObjects { count: usize, first: String },
    #[error("manifest lists object {path} twice")]
    DuplicateObject { path: String },
    #[error("manifest object entry is invalid")]
    BadObject(#[source] super::archive::ArchiveError),
}

/// How the archive is encrypted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncryptionScheme {
    /// [`super::crypto`]'s streaming AES-256-GCM format.
    #[serde(rename = "AES-256-GCM-STREAM")]
    Aes256GcmStream,
    /// Not encrypted.
    #[serde(rename = "none")]
    None,
}

/// One object of the backup.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ManifestObject {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    /// Hex SHA-256 of the object's JSON as archived.
    pub sha256: String,
    pub size: u64,
}

impl ManifestObject {
    pub fn key(&self) -> ObjectKey {
        ObjectKey {
            api_version: self.api_version.clone(),
            kind: self.kind.clone(),
            name: self.name.clone(),
        }
    }
}

/// The stored archive (`data.tar.zst.enc`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveInfo {
    /// Hex SHA-256 of the archive as stored (after encryption).
    pub sha256: String,
    /// Size as stored.
    pub size: u64,
    pub compression: String,
    pub encryption: EncryptionScheme,
    /// Id of the encryption key ([`crypto::EncryptionKey::key_id`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
}

/// `manifest.json`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub format_version: u32,
    pub namespace: String,
    pub policy: String,
    pub backup_id: String,
    pub created_at: jiff::Timestamp,
    pub objects: Vec<ManifestObject>,
    pub archive: ArchiveInfo,
    /// Id of the signing key ([`crypto::signing_key_id`]); absent when unsigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key_id: Option<String>,
}

impl Manifest {
    /// Canonical bytes: what is stored as `manifest.json` and what the signature covers.
    pub fn to_canonical_bytes(&self) -> Result<Vec<u8>, ManifestError> {
        let mut out = Vec::with_capacity(256 + self.objects.len() * 160);
        let mut ser = serde_json::Serializer::with_formatter(&mut out, LineFormatter::default());
        self.serialize(&mut ser).map_err(ManifestError::Serialize)?;
        out.push(b'\n');
        Ok(out)
    }

    /// Parses stored bytes and checks the format version and compression.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ManifestError> {
        let m: Manifest = serde_json::from_slice(bytes).map_err(ManifestError::Parse)?;
        if m.format_version != MANIFEST_FORMAT_VERSION {
            return Err(ManifestError::UnsupportedVersion(m.format_version));
        }
        if m.archive.compression != COMPRESSION_ZSTD {
            return Err(ManifestError::UnsupportedCompression(
                m.archive.compression.clone(),
            ));
        }
        Ok(m)
    }

    /// Checks that the manifest names the location it was read from.
    pub fn check_location(
        &self,
        namespace: &str,
        policy: &str,
        backup_id: &str,
    ) -> Result<(), ManifestError> {
        for (field, expected, found) in [
            ("namespace", namespace, &self.namespace),
            ("policy", policy, &self.policy),
            ("backupId", backup_id, &self.backup_id),
        ] {
            if expected != found {
                return Err(ManifestError::WrongLocation {
                    field,
                    expected: expected.into(),
                    found: found.clone(),
                });
            }
        }
        Ok(())
    }

    /// Checks the stored archive's digest and size.
    pub fn check_archive(&self, sha256: &str, size: u64) -> Result<(), ManifestError> {
        if self.archive.sha256 != sha256 || self.archive.size != size {
            return Err(ManifestError::ArchiveDigest {
                expected: self.archive.sha256.clone(),
                expected_size: self.archive.size,
                found: sha256.into(),
                found_size: size,
            });
        }
        Ok(())
    }

    /// Checks that the archive holds exactly the manifest's objects, each with its digest.
    pub fn check_objects(&self, entries: &[ArchiveEntry]) -> Result<(), ManifestError> {
        let mut checker = self.object_checker()?;
        for e in entries {
            checker.check(e)?;
        }
        checker.finish()
    }

    /// A checker of entries one at a time as they are read, against this manifest's objects.
    pub fn object_checker(&self) -> Result<ObjectChecker<'_>, ManifestError> {
        let mut expected = std::collections::HashMap::with_capacity(self.objects.len());
        for o in &self.objects {
            let path = o.key().entry_path().map_err(ManifestError::BadObject)?;
            if expected.insert(path.clone(), o).is_some() {
                return Err(ManifestError::DuplicateObject { path });
            }
        }
        Ok(ObjectChecker { expected })
    }
}

/// Checks archive entries against a manifest one at a time ([`Manifest::object_checker`]):
/// every entry must be listed with its size and digest, and [`finish`](Self::finish) that none
/// is missing.
pub struct ObjectChecker<'m> {
    expected: std::collections::HashMap<String, &'m ManifestObject>,
}

impl ObjectChecker<'_> {
    /// Checks one entry (each may appear once).
    pub fn check(&mut self, e: &ArchiveEntry) -> Result<(), ManifestError> {
        let o = self
            .expected
            .remove(&e.path)
            .ok_or_else(|| ManifestError::UnlistedObject {
                path: e.path.clone(),
            })?;
        if o.size != e.data.len() as u64 || o.sha256 != crypto::sha256_hex(&e.data) {
            return Err(ManifestError::ObjectDigest {
                path: e.path.clone(),
            });
        }
        Ok(())
    }

    /// Fails when a listed object never came.
    pub fn finish(self) -> Result<(), ManifestError> {
        match self.expected.keys().min() {
            Some(first) => Err(ManifestError::MissingObjects {
                count: self.expected.len(),
                first: first.clone(),
            }),
            None => Ok(()),
        }
    }
}

/// Signs canonical manifest bytes: the content of `manifest.sig`.
pub fn sign_manifest(bytes: &[u8], key: &SigningKey) -> String {
    let mut sig = crypto::sign(key, bytes);
    sig.push('\n');
    sig
}

/// Verifies stored manifest bytes against `manifest.sig` and the expected public key, then parses
/// them. The manifest must name the expected key's id.
pub fn verify_manifest(
    bytes: &[u8],
    signature: Option<&str>,
    key: &VerifyingKey,
) -> Result<Manifest, ManifestError> {
    let signature = signature.ok_or(ManifestError::Unsigned)?;
    crypto::verify(key, bytes, signature).map_err(ManifestError::BadSignature)?;
    let manifest = Manifest::from_bytes(bytes)?;
    let expected = crypto::signing_key_id(key);
    match &manifest.signing_key_id {
        None => Err(ManifestError::Unsigned),
        Some(found) if *found != expected => Err(ManifestError::WrongSigningKey {
            expected,
            found: found.clone(),
        }),
        Some(_) => Ok(manifest),
    }
}

/// Verifies stored manifest bytes against `manifest.sig` with the `trusted` keys, then parses
/// them: bytes that no trusted key signed are refused unparsed, and a manifest must name the
/// key that signed it.
pub fn verify_manifest_trusted(
    bytes: &[u8],
    signature: Option<&str>,
    trusted: &[VerifyingKey],
) -> Result<Manifest, ManifestError> {
    let signature = signature.ok_or(ManifestError::Unsigned)?;
    // The signature first: bytes no trusted key signed are not even parsed.
    match trusted
        .iter()
        .find(|k| crypto::verify(k, bytes, signature).is_ok())
    {
        Some(key) => verify_manifest(bytes, Some(signature), key),
        None => Err(ManifestError::BadSignature(
            crypto::CryptoError::SignatureMismatch,
        )),
    }
}

/// The layout of [`Manifest::to_canonical_bytes`]: each field of the top-level object on a line
/// of its own, and each element of an array held by one of those fields; anything deeper compact.
#[derive(Default)]
struct LineFormatter {
    /// For each open object or array: whether its members are on lines of their own.
    open: Vec<bool>,
}

impl LineFormatter {
    fn open<W: ?Sized + io::Write>(&mut self, w: &mut W, bracket: &[u8]) -> io::Result<()> {
        self.open.push(false);
        w.write_all(bracket)
    }

    /// Starts a member of the innermost container: a comma after the first, then the line
    /// break and indentation when the container is `depth` deep (1 for the top-level object).
    fn member<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
        depth: usize,
    ) -> io::Result<()> {
        if !first {
            w.write_all(b",")?;
        }
        if self.open.len() == depth {
            if let Some(broken) = self.open.last_mut() {
                *broken = true;
            }
            w.write_all(b"\n")?;
            w.write_all(&b"    "[..2 * depth])?;
        }
        Ok(())
    }

    /// Ends the innermost container; its bracket starts a line when its members did.
    fn close<W: ?Sized + io::Write>(&mut self, w: &mut W, bracket: &[u8]) -> io::Result<()> {
        if self.open.pop() == Some(true) {
            w.write_all(b"\n")?;
            w.write_all(&b"    "[..2 * self.open.len()])?;
        }
        w.write_all(bracket)
    }
}

impl serde_json::ser::Formatter for LineFormatter {
    fn begin_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.open(w, b"{")
    }
    fn end_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.close(w, b"}")
    }
    fn begin_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.open(w, b"[")
    }
    fn end_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.close(w, b"]")
    }
    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.member(w, first, 1)
    }
    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(if self.open.len() == 1 { b": " } else { b":" })
    }
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.member(w, first, 2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest {
            format_version: MANIFEST_FORMAT_VERSION,
            namespace: "team-a".into(),
            policy: "nightly".into(),
            backup_id: "20260101-000000".into(),
            created_at: jiff::Timestamp::from_second(1_767_225_600).unwrap(),
            objects: vec![ManifestObject {
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
                name: "c".into(),
                sha256: crypto::sha256_hex(b"{}"),
                size: 2,
            }],
            archive: ArchiveInfo {
                sha256: "ab".into(),
                size: 10,
                compression: COMPRESSION_ZSTD.into(),
                encryption: EncryptionScheme::Aes256GcmStream,
                key_id: Some("aes256gcm:0011223344556677".into()),
            },
            signing_key_id: None,
        }
    }

    #[test]
    fn canonical_bytes_are_stable_and_camel_case() {
        let m = manifest();
        let a = m.to_canonical_bytes().unwrap();
        let b = Manifest::from_bytes(&a)
            .unwrap()
            .to_canonical_bytes()
            .unwrap();
        assert_eq!(a, b);
        let text = String::from_utf8(a).unwrap();
        for field in [
            "formatVersion",
            "backupId",
            "createdAt",
            "apiVersion",
            "keyId",
            "\"AES-256-GCM-STREAM\"",
        ] {
            assert!(text.contains(field), "{field} in {text}");
        }
        assert!(!text.contains("signingKeyId"));
    }

    #[test]
    fn canonical_bytes_have_a_line_per_field_and_per_object() {
        let mut m = manifest();
        let mut second = m.objects[0].clone();
        second.kind = "Secret".into();
        second.name = "s \"quoted\"".into();
        m.objects.push(second);
        let sha = &m.objects[0].sha256;
        let expected = format!(
            r#"{{
  "formatVersion": 1,
  "namespace": "team-a",
  "policy": "nightly",
  "backupId": "20260101-000000",
  "createdAt": "2026-01-01T00:00:00Z",
  "objects": [
    {{"apiVersion":"v1","kind":"ConfigMap","name":"c","sha256":"{sha}","size":2}},
    {{"apiVersion":"v1","kind":"Secret","name":"s \"quoted\"","sha256":"{sha}","size":2}}
  ],
  "archive": {{"sha256":"ab","size":10,"compression":"zstd","encryption":"AES-256-GCM-STREAM","keyId":"aes256gcm:0011223344556677"}}
}}
"#
        );
        let bytes = m.to_canonical_bytes().unwrap();
        assert_eq!(String::from_utf8(bytes.clone()).unwrap(), expected);
        assert_eq!(Manifest::from_bytes(&bytes).unwrap(), m);

        m.objects.clear();
        let text = String::from_utf8(m.to_canonical_bytes().unwrap()).unwrap();
        assert!(text.contains("\n  \"objects\": [],\n"), "{text}");
        assert_eq!(Manifest::from_bytes(text.as_bytes()).unwrap(), m);
    }

    #[test]
    fn a_manifest_stored_pretty_printed_still_reads_and_verifies() {
        // Backups written before the line layout stored pretty-printed JSON.
        let key = SigningKey::from_bytes(&[3; 32]);
        let mut m = manifest();
        m.signing_key_id = Some(crypto::signing_key_id(&key.verifying_key()));
        let mut pretty = serde_json::to_vec_pretty(&m).unwrap();
        pretty.push(b'\n');
        let sig = sign_manifest(&pretty, &key);
        assert_eq!(
            verify_manifest(&pretty, Some(&sig), &key.verifying_key()).unwrap(),
            m
        );
    }

    #[test]
    fn signature_verifies_and_detects_tampering() {
        let key = SigningKey::from_bytes(&[3; 32]);
        let mut m = manifest();
        m.signing_key_id = Some(crypto::signing_key_id(&key.verifying_key()));
        let bytes = m.to_canonical_bytes().unwrap();
        let sig = sign_manifest(&bytes, &key);
        let vk = key.verifying_key();
        assert_eq!(verify_manifest(&bytes, Some(&sig), &vk).unwrap(), m);

        let mut flipped = bytes.clone();
        let pos = flipped.iter().position(|b| *b == b'c').unwrap();
        flipped[pos] = b'd';
        assert!(matches!(
            verify_manifest(&flipped, Some(&sig), &vk),
            Err(ManifestError::BadSignature(_))
        ));
        assert!(matches!(
            verify_manifest(&bytes, None, &vk),
            Err(ManifestError::Unsigned)
        ));
        let other = SigningKey::from_bytes(&[4; 32]).verifying_key();
        assert!(matches!(
            verify_manifest(&bytes, Some(&sig), &other),
            Err(ManifestError::BadSignature(_))
        ));
    }

    #[test]
    fn checks_location_archive_and_objects() {
        let m = manifest();
        m.check_location("team-a", "nightly", "20260101-000000")
            .unwrap();
        assert!(matches!(
            m.check_location("team-b", "nightly", "20260101-000000"),
            Err(ManifestError::WrongLocation {
                field: "namespace",
                ..
            })
        ));
        m.check_archive("ab", 10).unwrap();
        assert!(m.check_archive("ab", 11).is_err());

        let entry = |data: &[u8]| ArchiveEntry {
            path: "objects/core/v1/ConfigMap/c.json".into(),
            key: m.objects[0].key(),
            data: data.to_vec(),
        };
        m.check_objects(&[entry(b"{}")]).unwrap();
        assert!(matches!(
            m.check_objects(&[entry(b"{ ")]),
            Err(ManifestError::ObjectDigest { .. })
        ));
        assert!(matches!(
            m.check_objects(&[]),
            Err(ManifestError::MissingObjects { count: 1, .. })
        ));
    }

    #[test]
    fn refuses_unknown_versions() {
        let mut m = manifest();
        m.format_version = 2;
        let bytes = serde_json::to_vec(&m).unwrap();
        assert!(matches!(
            Manifest::from_bytes(&bytes),
            Err(ManifestError::UnsupportedVersion(2))
        ));
    }
}
