//! Keyrings: several keys known by their ids, one of them active, so that keys rotate while
//! older backups stay readable. The signing keyring is the provider's (the operator signs every
//! manifest, and only manifests whose signature verifies with one of its keys are trusted); the
//! encryption keyring is a tenant's (new archives are encrypted with the active key, and an
//! archive is read with whichever key its manifest names).
//!
//! Both are built from a Secret's entries (name → bytes), the form a Kubernetes Secret has.

use std::collections::BTreeMap;

use base64::Engine as _;
use ed25519_dalek::{SigningKey, VerifyingKey};

use super::crypto::{
    CryptoError, EncryptionKey, parse_signing_key, parse_verifying_key, signing_key_id,
};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Entry naming the active signing key.
pub const ACTIVE_ENTRY: &str = "active";
/// Suffix of an entry holding an Ed25519 private key.
pub const PRIVATE_SUFFIX: &str = ".key";
/// Suffix of an entry holding an Ed25519 public key (trusted for verification only).
pub const PUBLIC_SUFFIX: &str = ".pub";

/// What is wrong with a keyring.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error("keyring entry {entry:?} is not a valid key")]
    BadEntry {
        entry: String,
        #[source]
        source: CryptoError,
    },
    #[error("keyring has no private key ({PRIVATE_SUFFIX} entry)")]
    NoSigningKey,
    #[error(
        "keyring has several private keys and no {ACTIVE_ENTRY:?} entry naming the one that signs"
    )]
    NoActive,
    #[error("the {ACTIVE_ENTRY:?} entry names {0:?}, which is not a private key of the keyring")]
    UnknownActive(String),
    #[error("encryption key entry {0:?} is missing")]
    MissingEntry(String),
}

/// The provider's signing keys: the active one signs, every one (private or public) verifies.
#[derive(Clone, Debug)]
pub struct SigningKeyring {
    active: SigningKey,
    trusted: Vec<VerifyingKey>,
}

impl SigningKeyring {
    /// Parses a keyring from a Secret's entries: `<name>.key` private keys, `<name>.pub` public
    /// keys, and `active` naming the private key that signs (needed only when there are
    /// several). Other entries are ignored.
    pub fn from_entries(entries: &BTreeMap<String, Vec<u8>>) -> Result<Self, KeyringError> {
        let mut private = BTreeMap::new();
        let mut trusted = Vec::new();
        for (name, data) in entries {
            let bad = |source| KeyringError::BadEntry {
                entry: name.clone(),
                source,
            };
            if name.ends_with(PRIVATE_SUFFIX) {
                let key = parse_signing_key(data).map_err(bad)?;
                trusted.push(key.verifying_key());
                private.insert(name.clone(), key);
            } else if name.ends_with(PUBLIC_SUFFIX) {
                trusted.push(parse_verifying_key(data).map_err(bad)?);
            }
        }
        let active = match entries.get(ACTIVE_ENTRY) {
            Some(raw) => {
                let name = String::from_utf8_lossy(raw).trim().to_string();
                private
                    .get(&name)
                    .or_else(|| private.get(&format!("{name}{PRIVATE_SUFFIX}")))
                    .cloned()
                    .ok_or(KeyringError::UnknownActive(name))?
            }
            None if private.len() == 1 => private.values().next().cloned().expect("one key"),
            None if private.is_empty() => return Err(KeyringError::NoSigningKey),
            None => return Err(KeyringError::NoActive),
        };
        trusted.sort_by_key(|k| k.to_bytes());
        trusted.dedup();
        Ok(Self { active, trusted })
    }

    /// A keyring of one fresh key: its entries, ready to be stored.
    pub fn generate(name: &str) -> Result<BTreeMap<String, Vec<u8>>, CryptoError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| CryptoError::Random(e.to_string()))?;
        let entry = format!("{name}{PRIVATE_SUFFIX}");
        Ok(BTreeMap::from([
            (entry.clone(), B64.encode(seed).into_bytes()),
            (ACTIVE_ENTRY.to_string(), entry.into_bytes()),
        ]))
    }

    /// A keyring of one key (tests, the CLI).
    pub fn single(key: SigningKey) -> Self {
        Self {
            trusted: vec![key.verifying_key()],
            active: key,
        }
    }

    /// The key that signs new manifests.
    pub fn active(&self) -> &SigningKey {
        &self.active
    }

    /// Id of the active key.
    pub fn active_id(&self) -> String {
        signing_key_id(&self.active.verifying_key())
    }

    /// Every key whose signature is trusted.
    pub fn trusted(&self) -> &[VerifyingKey] {
        &self.trusted
    }

    /// Ids of the trusted keys.
    pub fn trusted_ids(&self) -> Vec<String> {
        self.trusted.iter().map(signing_key_id).collect()
    }
}

/// A tenant's encryption keys: the active one encrypts, every one decrypts what names it.
#[derive(Clone, Debug)]
pub struct EncryptionKeyring {
    active: EncryptionKey,
    all: Vec<EncryptionKey>,
}

impl EncryptionKeyring {
    /// The keyring of a Secret: `active` names the entry that encrypts new archives (it must
    /// be a valid key); every other entry that is a valid key stays available for reading
    /// older archives (entries that are not keys, such as credentials, are ignored).
    pub fn from_entries(
        entries: &BTreeMap<String, Vec<u8>>,
        active: &str,
    ) -> Result<Self, KeyringError> {
        let raw = entries
            .get(active)
            .ok_or_else(|| KeyringError::MissingEntry(active.into()))?;
        let active_key = EncryptionKey::parse(raw).map_err(|source| KeyringError::BadEntry {
            entry: active.into(),
            source,
        })?;
        let mut all = vec![active_key.clone()];
        for (name, data) in entries {
            if name == active {
                continue;
            }
            if let Ok(k) = EncryptionKey::parse(data)
                && !all.iter().any(|a| a.key_id() == k.key_id())
            {
                all.push(k);
            }
        }
        Ok(Self {
            active: active_key,
            all,
        })
    }

    /// A keyring of one key.
    pub fn single(key: EncryptionKey) -> Self {
        Self {
            all: vec![key.clone()],
            active: key,
        }
    }

    /// The key that encrypts new archives.
    pub fn active(&self) -> &EncryptionKey {
        &self.active
    }

    /// Every key, the active one first.
    pub fn all(&self) -> &[EncryptionKey] {
        &self.all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(pairs: &[(&str, Vec<u8>)]) -> BTreeMap<String, Vec<u8>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn the_active_key_signs_and_every_key_verifies() {
        let (k1, k2) = (
            SigningKey::from_bytes(&[1; 32]),
            SigningKey::from_bytes(&[2; 32]),
        );
        let old_pub = SigningKey::from_bytes(&[3; 32]).verifying_key();
        let ring = SigningKeyring::from_entries(&entries(&[
            ("k1.key", k1.to_bytes().to_vec()),
            ("k2.key", B64.encode(k2.to_bytes()).into_bytes()),
            ("k0.pub", old_pub.to_bytes().to_vec()),
            ("active", b"k2.key\n".to_vec()),
            ("README", b"not a key".to_vec()),
        ]))
        .unwrap();
        assert_eq!(ring.active().to_bytes(), k2.to_bytes());
        assert_eq!(ring.trusted().len(), 3);
        assert!(ring.trusted().contains(&old_pub) && ring.trusted().contains(&k1.verifying_key()));
        // `active` may name the entry without its suffix.
        let ring = SigningKeyring::from_entries(&entries(&[
            ("k1.key", k1.to_bytes().to_vec()),
            ("k2.key", k2.to_bytes().to_vec()),
            ("active", b"k1".to_vec()),
        ]))
        .unwrap();
        assert_eq!(ring.active_id(), signing_key_id(&k1.verifying_key()));
    }

    #[test]
    fn a_keyring_without_a_clear_signer_is_refused() {
        let k = |b: u8| SigningKey::from_bytes(&[b; 32]).to_bytes().to_vec();
        assert!(matches!(
            SigningKeyring::from_entries(&entries(&[("a.pub", k(1))])),
            Err(KeyringError::NoSigningKey)
        ));
        assert!(matches!(
            SigningKeyring::from_entries(&entries(&[("a.key", k(1)), ("b.key", k(2))])),
            Err(KeyringError::NoActive)
        ));
        assert!(matches!(
            SigningKeyring::from_entries(&entries(&[("a.key", k(1)), ("active", b"c".to_vec())])),
            Err(KeyringError::UnknownActive(_))
        ));
        assert!(matches!(
            SigningKeyring::from_entries(&entries(&[("a.key", b"short".to_vec())])),
            Err(KeyringError::BadEntry { .. })
        ));
    }

    #[test]
    fn a_generated_keyring_parses_back() {
        let generated = SigningKeyring::generate("k1").unwrap();
        let ring = SigningKeyring::from_entries(&generated).unwrap();
        assert_eq!(ring.trusted().len(), 1);
        assert_ne!(
            SigningKeyring::from_entries(&SigningKeyring::generate("k1").unwrap())
                .unwrap()
                .active_id(),
            ring.active_id()
        );
    }

    #[test]
    fn encryption_keys_rotate_and_old_ones_still_read() {
        let (a, b) = (
            EncryptionKey::from_bytes([1; 32]),
            EncryptionKey::from_bytes([2; 32]),
        );
        let ring = EncryptionKeyring::from_entries(
            &entries(&[
                ("old", vec![1; 32]),
                ("new", vec![2; 32]),
                ("AWS_ACCESS_KEY_ID", b"not a key".to_vec()),
            ]),
            "new",
        )
        .unwrap();
        assert_eq!(ring.active().key_id(), b.key_id());
        let ids: Vec<String> = ring.all().iter().map(|k| k.key_id()).collect();
        assert_eq!(ids, vec![b.key_id(), a.key_id()]);
        assert!(matches!(
            EncryptionKeyring::from_entries(&entries(&[("old", vec![1; 32])]), "new"),
            Err(KeyringError::MissingEntry(_))
        ));
        assert!(matches!(
            EncryptionKeyring::from_entries(&entries(&[("new", b"short".to_vec())]), "new"),
            Err(KeyringError::BadEntry { .. })
        ));
    }
}
