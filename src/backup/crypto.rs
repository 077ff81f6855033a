//! Cryptography of backups: SHA-256 digests, the streaming AES-256-GCM archive format, Ed25519
//! manifest signatures, and the parsing and key ids of both kinds of key.
//!
//! # Streaming encryption format (`AES-256-GCM-STREAM`, version 1)
//!
//! ```text
//! header  = magic "OPSBKENC" (8) | version 0x01 (1) | frame size, u32 big-endian (4) | nonce prefix (8, random)
//! frame i = AES-256-GCM(key, nonce = prefix | i as u32 big-endian, aad = header | last, plaintext) | tag (16)
//! ```
//!
//! Every frame but the last holds exactly `frame size` plaintext bytes (64 KiB); the last holds
//! strictly fewer (possibly none) and is the only one whose `last` byte is 1. So:
//! - reordering or dropping frames changes the counter in the nonce and fails the tag;
//! - truncation at a frame boundary leaves no frame with `last = 1` and is reported as
//!   [`CryptoError::Truncated`]; truncation inside a frame fails that frame's tag;
//! - bytes appended after the last frame are reported as [`CryptoError::TrailingData`];
//! - the header (version, frame size, nonce prefix) is authenticated by every frame.
//!
//! The last-frame flag is in the associated data rather than in the nonce so that the nonce keeps
//! an 8-byte random prefix and a 32-bit counter within GCM's 96 bits. Each archive draws a fresh
//! prefix and each frame a fresh counter, so a (key, nonce) pair is never reused within an archive
//! and only by a 2^-64 per-pair chance across archives.
//!
//! # Keys
//! - Encryption key: 32 bytes, given raw or as base64. Its id is
//!   `aes256gcm:` + the first 16 hex digits of SHA-256("opsec-operator encryption key id v1\n" | key)
//!   (domain separated, so the id says nothing about the key).
//! - Signing key: Ed25519, given as a raw 32-byte seed, base64 of the seed, or PKCS#8 PEM. Its id
//!   is `ed25519:` + the first 16 hex digits of SHA-256(public key).

use std::fmt;
use std::io::{self, Read, Write};

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Key, Nonce, Tag};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

/// Magic bytes opening an encrypted archive.
pub const MAGIC: &[u8; 8] = b"OPSBKENC";
/// Version of the streaming format.
pub const FORMAT_VERSION: u8 = 1;
/// Plaintext bytes per frame written by [`EncryptWriter`].
pub const FRAME_SIZE: usize = 64 * 1024;
/// Length of the header.
pub const HEADER_LEN: usize = 8 + 1 + 4 + 8;
/// Length of a GCM tag.
pub const TAG_LEN: usize = 16;
/// Smallest and largest frame sizes a reader accepts (memory bound).
const MIN_FRAME: usize = 1024;
const MAX_FRAME: usize = 1024 * 1024;

const ENCRYPTION_KEY_ID_DOMAIN: &[u8] = b"opsec-operator encryption key id v1\n";

/// What can go wrong in this module.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("encryption key must be 32 bytes, raw or base64 (got {0} bytes)")]
    EncryptionKeyLength(usize),
    #[error("signing key is neither a 32-byte Ed25519 seed (raw or base64) nor PKCS#8 PEM")]
    SigningKeyParse(#[source] Option<ed25519_dalek::pkcs8::Error>),
    #[error("public key is neither 32 raw bytes, base64 of them, nor an SPKI PEM")]
    PublicKeyParse,
    #[error("signature is not base64 of 64 bytes")]
    SignatureEncoding,
    #[error("signature does not verify")]
    SignatureMismatch,
    #[error("random number generator failed: {0}")]
    Random(String),
    #[error("encrypted archive header is missing or has the wrong magic")]
    BadHeader,
    #[error("encrypted archive format version {0} is not supported (expected {FORMAT_VERSION})")]
    UnsupportedVersion(u8),
    #[error("encrypted archive frame size {0} is out of range")]
    BadFrameSize(u32),
    #[error("frame {frame} failed authentication (corrupt data or wrong key)")]
    FrameAuth { frame: u32 },
    #[error("encrypted archive is truncated after {frames} frames (no final frame)")]
    Truncated { frames: u32 },
    #[error("data after the final frame of the encrypted archive")]
    TrailingData,
    #[error("encrypted archive exceeds 2^32 frames")]
    TooManyFrames,
    #[error("writing after the final frame")]
    AlreadyFinished,
}

impl CryptoError {
    fn into_io(self) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, self)
    }

    /// The `CryptoError` an `io::Error` from [`EncryptWriter`] or [`DecryptReader`] carries.
    pub fn from_io(err: &io::Error) -> Option<&CryptoError> {
        err.get_ref().and_then(|e| e.downcast_ref::<CryptoError>())
    }
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 0xf) as usize] as char);
    }
    out
}

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// A running SHA-256 with a byte count.
#[derive(Clone, Default)]
pub struct Sha256Counter {
    hasher: Sha256,
    bytes: u64,
}

impl fmt::Debug for Sha256Counter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sha256Counter")
            .field("bytes", &self.bytes)
            .finish()
    }
}

impl Sha256Counter {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn update(&mut self, data: &[u8]) {
        self.hasher.update(data);
        self.bytes += data.len() as u64;
    }
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
    /// Hex digest and byte count.
    pub fn finish(self) -> (String, u64) {
        (hex(&self.hasher.finalize()), self.bytes)
    }
}

/// A reader that hashes everything read through it.
#[derive(Debug)]
pub struct HashingReader<R> {
    inner: R,
    hash: Sha256Counter,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            hash: Sha256Counter::new(),
        }
    }
    /// Hex digest and byte count of what was read so far.
    pub fn finish(self) -> (String, u64) {
        self.hash.finish()
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

/// A 32-byte AES-256-GCM key. `Debug` shows only its id.
#[derive(Clone)]
pub struct EncryptionKey([u8; 32]);

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EncryptionKey({})", self.key_id())
    }
}

impl EncryptionKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Parses a key as a Secret holds it: 32 raw bytes, or base64 of 32 bytes (surrounding
    /// whitespace ignored).
    pub fn parse(data: &[u8]) -> Result<Self, CryptoError> {
        if let Ok(raw) = <[u8; 32]>::try_from(data) {
            return Ok(Self(raw));
        }
        let text = std::str::from_utf8(data)
            .map_err(|_| CryptoError::EncryptionKeyLength(data.len()))?
            .trim();
        let decoded = B64
            .decode(text)
            .map_err(|_| CryptoError::EncryptionKeyLength(data.len()))?;
        let raw = <[u8; 32]>::try_from(decoded.as_slice())
            .map_err(|_| CryptoError::EncryptionKeyLength(decoded.len()))?;
        Ok(Self(raw))
    }

    /// A fresh random key.
    pub fn generate() -> Result<Self, CryptoError> {
        let mut raw = [0u8; 32];
        getrandom::fill(&mut raw).map_err(|e| CryptoError::Random(e.to_string()))?;
        Ok(Self(raw))
    }

    /// `aes256gcm:<16 hex digits>`, see the module docs.
    pub fn key_id(&self) -> String {
        let mut h = Sha256::new();
        h.update(ENCRYPTION_KEY_ID_DOMAIN);
        h.update(self.0);
        format!("aes256gcm:{}", &hex(&h.finalize())[..16])
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(&Key::<Aes256Gcm>::from(self.0))
    }
}

/// `ed25519:<16 hex digits>` of a public key.
pub fn signing_key_id(key: &VerifyingKey) -> String {
    format!("ed25519:{}", &sha256_hex(key.as_bytes())[..16])
}

/// Parses an Ed25519 private key: a 32-byte seed (raw or base64) or PKCS#8 PEM.
pub fn parse_signing_key(data: &[u8]) -> Result<SigningKey, CryptoError> {
    if let Ok(seed) = <[u8; 32]>::try_from(data) {
        return Ok(SigningKey::from_bytes(&seed));
    }
    let text = std::str::from_utf8(data)
        .map_err(|_| CryptoError::SigningKeyParse(None))?
        .trim();
    if text.starts_with("-----BEGIN") {
        return SigningKey::from_pkcs8_pem(text).map_err(|e| CryptoError::SigningKeyParse(Some(e)));
    }
    let decoded = B64
        .decode(text)
        .map_err(|_| CryptoError::SigningKeyParse(None))?;
    let seed =
        <[u8; 32]>::try_from(decoded.as_slice()).map_err(|_| CryptoError::SigningKeyParse(None))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Parses an Ed25519 public key: 32 raw bytes, base64 of them, or an SPKI PEM
/// (`-----BEGIN PUBLIC KEY-----`).
pub fn parse_verifying_key(data: &[u8]) -> Result<VerifyingKey, CryptoError> {
    if let Ok(raw) = <[u8; 32]>::try_from(data) {
        return VerifyingKey::from_bytes(&raw).map_err(|_| CryptoError::PublicKeyParse);
    }
    let text = std::str::from_utf8(data)
        .map_err(|_| CryptoError::PublicKeyParse)?
        .trim();
    if text.starts_with("-----BEGIN") {
        return VerifyingKey::from_public_key_pem(text).map_err(|_| CryptoError::PublicKeyParse);
    }
    let decoded = B64.decode(text).map_err(|_| CryptoError::PublicKeyParse)?;
    let raw = <[u8; 32]>::try_from(decoded.as_slice()).map_err(|_| CryptoError::PublicKeyParse)?;
    VerifyingKey::from_bytes(&raw).map_err(|_| CryptoError::PublicKeyParse)
}

/// Detached signature of `message`, base64.
pub fn sign(key: &SigningKey, message: &[u8]) -> String {
    B64.encode(key.sign(message).to_bytes())
}

/// Checks a base64 detached signature (strict verification: no malleable signatures).
pub fn verify(key: &VerifyingKey, message: &[u8], signature_b64: &str) -> Result<(), CryptoError> {
    let raw = B64
        .decode(signature_b64.trim())
        .map_err(|_| CryptoError::SignatureEncoding)?;
    let bytes = <[u8; 64]>::try_from(raw.as_slice()).map_err(|_| CryptoError::SignatureEncoding)?;
    let sig = Signature::from_bytes(&bytes);
    key.verify_strict(message, &sig)
        .map_err(|_| CryptoError::SignatureMismatch)
}

fn frame_nonce(prefix: &[u8; 8], counter: u32) -> Nonce<aes_gcm::aead::consts::U12> {
    let mut n = [0u8; 12];
    n[..8].copy_from_slice(prefix);
    n[8..].copy_from_slice(&counter.to_be_bytes());
    Nonce::from(n)
}

fn frame_aad(header: &[u8; HEADER_LEN], last: bool) -> [u8; HEADER_LEN + 1] {
    let mut aad = [0u8; HEADER_LEN + 1];
    aad[..HEADER_LEN].copy_from_slice(header);
    aad[HEADER_LEN] = u8::from(last);
    aad
}

/// Encrypts everything written to it into the streaming format. Call [`EncryptWriter::finish`]:
/// a writer dropped without it leaves a stream that readers refuse as truncated.
pub struct EncryptWriter<W: Write> {
    inner: W,
    cipher: Aes256Gcm,
    header: [u8; HEADER_LEN],
    prefix: [u8; 8],
    counter: u32,
    buf: Vec<u8>,
    frame_size: usize,
    finished: bool,
}

impl<W: Write> fmt::Debug for EncryptWriter<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptWriter")
            .field("frames", &self.counter)
            .finish()
    }
}

impl<W: Write> EncryptWriter<W> {
    /// Writes the header to `inner` with a random nonce prefix.
    pub fn new(inner: W, key: &EncryptionKey) -> io::Result<Self> {
        let mut prefix = [0u8; 8];
        getrandom::fill(&mut prefix).map_err(|e| CryptoError::Random(e.to_string()).into_io())?;
        Self::with_prefix(inner, key, prefix, FRAME_SIZE)
    }

    fn with_prefix(
        mut inner: W,
        key: &EncryptionKey,
        prefix: [u8; 8],
        frame_size: usize,
    ) -> io::Result<Self> {
        let mut header = [0u8; HEADER_LEN];
        header[..8].copy_from_slice(MAGIC);
        header[8] = FORMAT_VERSION;
        let fs = u32::try_from(frame_size).map_err(|_| CryptoError::BadFrameSize(0).into_io())?;
        header[9..13].copy_from_slice(&fs.to_be_bytes());
        header[13..].copy_from_slice(&prefix);
        inner.write_all(&header)?;
        Ok(Self {
            inner,
            cipher: key.cipher(),
            header,
            prefix,
            counter: 0,
            buf: Vec::with_capacity(frame_size + TAG_LEN),
            frame_size,
            finished: false,
        })
    }

    /// The sink, for draining what was written so far.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    fn emit(&mut self, last: bool) -> io::Result<()> {
        let nonce = frame_nonce(&self.prefix, self.counter);
        let aad = frame_aad(&self.header, last);
        let tag = self
            .cipher
            .encrypt_inout_detached(&nonce, &aad, self.buf.as_mut_slice().into())
            .map_err(|_| CryptoError::FrameAuth {
                frame: self.counter,
            })
            .map_err(CryptoError::into_io)?;
        self.inner.write_all(&self.buf)?;
        self.inner.write_all(&tag)?;
        self.buf.clear();
        self.counter = self
            .counter
            .checked_add(1)
            .ok_or_else(|| CryptoError::TooManyFrames.into_io())?;
        Ok(())
    }

    /// Writes the final frame and returns the sink.
    pub fn finish(mut self) -> io::Result<W> {
        if self.buf.len() == self.frame_size {
            self.emit(false)?;
        }
        self.emit(true)?;
        self.finished = true;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for EncryptWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.finished {
            return Err(CryptoError::AlreadyFinished.into_io());
        }
        // A full frame is emitted only when more data follows it, so that the final frame is
        // always shorter than a full one.
        if self.buf.len() == self.frame_size && !data.is_empty() {
            self.emit(false)?;
        }
        let n = data.len().min(self.frame_size - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Decrypts the streaming format, authenticating each frame before releasing its plaintext.
pub struct DecryptReader<R: Read> {
    inner: R,
    cipher: Aes256Gcm,
    header: [u8; HEADER_LEN],
    prefix: [u8; 8],
    frame_size: usize,
    counter: u32,
    plain: Vec<u8>,
    pos: usize,
    done: bool,
}

impl<R: Read> fmt::Debug for DecryptReader<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecryptReader")
            .field("frames", &self.counter)
            .finish()
    }
}

fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

impl<R: Read> DecryptReader<R> {
    /// Reads and checks the header.
    pub fn new(mut inner: R, key: &EncryptionKey) -> io::Result<Self> {
        let mut header = [0u8; HEADER_LEN];
        if read_full(&mut inner, &mut header)? != HEADER_LEN || &header[..8] != MAGIC {
            return Err(CryptoError::BadHeader.into_io());
        }
        if header[8] != FORMAT_VERSION {
            return Err(CryptoError::UnsupportedVersion(header[8]).into_io());
        }
        let mut fs = [0u8; 4];
        fs.copy_from_slice(&header[9..13]);
        let fs = u32::from_be_bytes(fs);
        let frame_size = fs as usize;
        if !(MIN_FRAME..=MAX_FRAME).contains(&frame_size) {
            return Err(CryptoError::BadFrameSize(fs).into_io());
        }
        let mut prefix = [0u8; 8];
        prefix.copy_from_slice(&header[13..]);
        Ok(Self {
            inner,
            cipher: key.cipher(),
            header,
            prefix,
            frame_size,
            counter: 0,
            plain: Vec::with_capacity(frame_size + TAG_LEN),
            pos: 0,
            done: false,
        })
    }

    fn next_frame(&mut self) -> io::Result<()> {
        self.plain.resize(self.frame_size + TAG_LEN, 0);
        self.pos = 0;
        let n = read_full(&mut self.inner, &mut self.plain)?;
        let last = n < self.frame_size + TAG_LEN;
        if n < TAG_LEN {
            self.plain.clear();
            return Err(CryptoError::Truncated {
                frames: self.counter,
            }
            .into_io());
        }
        self.plain.truncate(n);
        let tag_bytes = self.plain.split_off(n - TAG_LEN);
        let tag = <Tag>::try_from(tag_bytes.as_slice()).map_err(|_| {
            CryptoError::FrameAuth {
                frame: self.counter,
            }
            .into_io()
        })?;
        let nonce = frame_nonce(&self.prefix, self.counter);
        let aad = frame_aad(&self.header, last);
        if self
            .cipher
            .decrypt_inout_detached(&nonce, &aad, self.plain.as_mut_slice().into(), &tag)
            .is_err()
        {
            self.plain.clear();
            return Err(CryptoError::FrameAuth {
                frame: self.counter,
            }
            .into_io());
        }
        self.counter = self
            .counter
            .checked_add(1)
            .ok_or_else(|| CryptoError::TooManyFrames.into_io())?;
        if last {
            let mut probe = [0u8; 1];
            if read_full(&mut self.inner, &mut probe)? != 0 {
                return Err(CryptoError::TrailingData.into_io());
            }
            self.done = true;
        }
        Ok(())
    }
}

impl<R: Read> Read for DecryptReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.plain.len() {
            if self.done {
                return Ok(0);
            }
            self.next_frame()?;
        }
        let n = buf.len().min(self.plain.len() - self.pos);
        buf[..n].copy_from_slice(&self.plain[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> EncryptionKey {
        EncryptionKey::from_bytes([b; 32])
    }

    fn encrypt(data: &[u8], frame: usize) -> Vec<u8> {
        let mut w = EncryptWriter::with_prefix(Vec::new(), &key(7), [1; 8], frame).unwrap();
        w.write_all(data).unwrap();
        w.finish().unwrap()
    }

    fn decrypt(data: &[u8], k: &EncryptionKey) -> Result<Vec<u8>, io::Error> {
        let mut r = DecryptReader::new(data, k)?;
        let mut out = Vec::new();
        r.read_to_end(&mut out)?;
        Ok(out)
    }

    fn crypto_err(e: &io::Error) -> &CryptoError {
        CryptoError::from_io(e).expect("a CryptoError")
    }

    #[test]
    fn round_trips_every_size_around_frame_boundaries() {
        for len in [0, 1, 1023, 1024, 1025, 2048, 5000] {
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let enc = encrypt(&data, 1024);
            // The last frame is always short, so a multiple of the frame size gets an empty one.
            let frames = len / 1024 + 1;
            assert_eq!(enc.len(), HEADER_LEN + len + frames * TAG_LEN);
            assert_eq!(decrypt(&enc, &key(7)).unwrap(), data, "len {len}");
        }
    }

    #[test]
    fn default_writer_round_trips_megabytes() {
        let data: Vec<u8> = (0..(3 * FRAME_SIZE + 17)).map(|i| (i % 13) as u8).collect();
        let mut w = EncryptWriter::new(Vec::new(), &key(3)).unwrap();
        for chunk in data.chunks(1000) {
            w.write_all(chunk).unwrap();
        }
        let enc = w.finish().unwrap();
        assert_eq!(decrypt(&enc, &key(3)).unwrap(), data);
    }

    #[test]
    fn wrong_key_fails_first_frame() {
        let enc = encrypt(b"hello", 1024);
        let err = decrypt(&enc, &key(8)).unwrap_err();
        assert!(matches!(
            crypto_err(&err),
            CryptoError::FrameAuth { frame: 0 }
        ));
    }

    #[test]
    fn flipped_byte_fails() {
        let mut enc = encrypt(&[5u8; 3000], 1024);
        enc[HEADER_LEN + 1500] ^= 1;
        let err = decrypt(&enc, &key(7)).unwrap_err();
        assert!(matches!(
            crypto_err(&err),
            CryptoError::FrameAuth { frame: 1 }
        ));
        // The header is authenticated too.
        let mut enc = encrypt(&[5u8; 3000], 1024);
        enc[HEADER_LEN - 1] ^= 1;
        assert!(decrypt(&enc, &key(7)).is_err());
    }

    #[test]
    fn truncation_is_detected_at_and_inside_frame_boundaries() {
        let enc = encrypt(&[9u8; 3000], 1024);
        let boundary = HEADER_LEN + 2 * (1024 + TAG_LEN);
        let err = decrypt(&enc[..boundary], &key(7)).unwrap_err();
        assert!(matches!(
            crypto_err(&err),
            CryptoError::Truncated { frames: 2 }
        ));
        let err = decrypt(&enc[..boundary + 100], &key(7)).unwrap_err();
        assert!(matches!(
            crypto_err(&err),
            CryptoError::FrameAuth { frame: 2 }
        ));
        let err = decrypt(&enc[..enc.len() - 1], &key(7)).unwrap_err();
        assert!(matches!(crypto_err(&err), CryptoError::FrameAuth { .. }));
    }

    #[test]
    fn reordered_frames_and_trailing_data_fail() {
        let enc = encrypt(&[1u8; 3000], 1024);
        let f = 1024 + TAG_LEN;
        let mut swapped = enc[..HEADER_LEN].to_vec();
        swapped.extend_from_slice(&enc[HEADER_LEN + f..HEADER_LEN + 2 * f]);
        swapped.extend_from_slice(&enc[HEADER_LEN..HEADER_LEN + f]);
        swapped.extend_from_slice(&enc[HEADER_LEN + 2 * f..]);
        assert!(decrypt(&swapped, &key(7)).is_err());
        let mut extra = enc.clone();
        extra.push(0);
        let err = decrypt(&extra, &key(7)).unwrap_err();
        assert!(matches!(crypto_err(&err), CryptoError::FrameAuth { .. }));
    }

    #[test]
    fn bad_header_is_refused() {
        let err = decrypt(b"NOTMAGIC.............", &key(7)).unwrap_err();
        assert!(matches!(crypto_err(&err), CryptoError::BadHeader));
        let mut enc = encrypt(b"x", 1024);
        enc[8] = 9;
        let err = decrypt(&enc, &key(7)).unwrap_err();
        assert!(matches!(
            crypto_err(&err),
            CryptoError::UnsupportedVersion(9)
        ));
    }

    #[test]
    fn parses_encryption_keys() {
        let raw = [42u8; 32];
        let a = EncryptionKey::parse(&raw).unwrap();
        let b = EncryptionKey::parse(format!("{}\n", B64.encode(raw)).as_bytes()).unwrap();
        assert_eq!(a.key_id(), b.key_id());
        assert!(a.key_id().starts_with("aes256gcm:"));
        assert_eq!(a.key_id().len(), "aes256gcm:".len() + 16);
        assert_ne!(a.key_id(), key(1).key_id());
        assert!(matches!(
            EncryptionKey::parse(b"short"),
            Err(CryptoError::EncryptionKeyLength(_))
        ));
        assert!(!format!("{a:?}").contains("42"));
    }

    #[test]
    fn parses_signing_keys_in_three_forms_and_signs() {
        use ed25519_dalek::pkcs8::EncodePrivateKey;
        use ed25519_dalek::pkcs8::spki::EncodePublicKey;
        let seed = [11u8; 32];
        let raw = parse_signing_key(&seed).unwrap();
        let b64 = parse_signing_key(B64.encode(seed).as_bytes()).unwrap();
        let pem = raw
            .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .unwrap();
        let from_pem = parse_signing_key(pem.as_bytes()).unwrap();
        assert_eq!(raw.to_bytes(), b64.to_bytes());
        assert_eq!(raw.to_bytes(), from_pem.to_bytes());
        assert!(parse_signing_key(b"nonsense").is_err());

        let vk = raw.verifying_key();
        let id = signing_key_id(&vk);
        assert!(id.starts_with("ed25519:") && id.len() == 8 + 16);
        let sig = sign(&raw, b"manifest");
        verify(&vk, b"manifest", &sig).unwrap();
        assert!(matches!(
            verify(&vk, b"manifesT", &sig),
            Err(CryptoError::SignatureMismatch)
        ));
        assert!(matches!(
            verify(&vk, b"manifest", "!!"),
            Err(CryptoError::SignatureEncoding)
        ));

        let pub_pem = vk
            .to_public_key_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .unwrap();
        for form in [
            vk.as_bytes().to_vec(),
            B64.encode(vk.as_bytes()).into_bytes(),
            pub_pem.into_bytes(),
        ] {
            assert_eq!(parse_verifying_key(&form).unwrap(), vk);
        }
    }

    #[test]
    fn hashing_reader_counts() {
        let mut r = HashingReader::new(&b"abc"[..]);
        let mut s = Vec::new();
        r.read_to_end(&mut s).unwrap();
        let (h, n) = r.finish();
        assert_eq!(n, 3);
        assert_eq!(
            h,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
