//! From a BackupPolicy to what the engine needs, read as the policy's tenant: its keys (the
//! tenant's encryption keyring from a Secret of its namespace, the operator's signing keyring)
//! and its stores, each within the provider's limits ([`Tenancy`]): `local` under the
//! operator's root in a directory of the namespace's own, a claim of the namespace that is
//! bound and mounted, an S3 endpoint from the allowlist with credentials from a Secret of the
//! namespace. Nothing a tenant writes makes the operator read another namespace's Secret, write
//! outside its namespace's directory, or connect somewhere the provider did not allow.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret};
use kube::api::Api;

use super::signing::secret_entries;
use crate::api::backup::{BackupPolicy, StorageLocation};
use crate::backup::endpoint::aws_endpoint;
use crate::backup::{
    ArchiveLimits, BackupOptions, EncryptionKeyring, RestoreOptions, S3Config, SigningKeyring,
    Store,
};
use crate::controller::tenant::{Tenancy, Tenant};

pub use crate::backup::error_chain;

/// Objects a restore test (and a Restore of a backup written before backups were in restore
/// order) holds at most, decompressed: it reads the whole backup before it writes (well below
/// the operator's 512 MiB memory limit, beside the JSON values the objects become). A larger
/// backup fails with the limit named. A Restore of a current backup streams its objects and
/// has no such bound.
pub const RESTORE_MEMORY_BYTES: u64 = 128 * 1024 * 1024;

/// The stores of a policy: those that could be built, and why the others could not.
#[derive(Debug, Default)]
pub struct Stores {
    pub ready: Vec<Store>,
    /// (location name, reason).
    pub failed: Vec<(String, String)>,
}

/// Keys of a policy.
#[derive(Clone, Debug)]
pub struct Keys {
    /// The tenant's encryption keyring, when the policy encrypts.
    pub encryption: Option<EncryptionKeyring>,
    /// The operator's signing keyring.
    pub signing: SigningKeyring,
}

impl Keys {
    /// Options to write a backup: the active encryption key, the operator's active signing key.
    pub fn backup_options(&self) -> BackupOptions {
        BackupOptions {
            encryption_key: self.encryption.as_ref().map(|r| r.active().clone()),
            signing_key: Some(self.signing.active().clone()),
            ..Default::default()
        }
    }

    /// Options to read the policy's backups back: signed by a key the operator trusts, and
    /// encrypted when the policy encrypts (with any key of the tenant's keyring), holding no
    /// more than [`RESTORE_MEMORY_BYTES`] of objects.
    pub fn restore_options(&self) -> RestoreOptions {
        RestoreOptions {
            encryption_keys: self
                .encryption
                .as_ref()
                .map(|r| r.all().to_vec())
                .unwrap_or_default(),
            trusted_keys: self.signing.trusted().to_vec(),
            limits: ArchiveLimits {
                max_total_bytes: RESTORE_MEMORY_BYTES,
                ..Default::default()
            },
        }
    }

    /// Options to verify the policy's stored copies: as for a restore, without the memory
    /// bound (a verification holds one object at a time).
    pub fn verify_options(&self) -> RestoreOptions {
        RestoreOptions {
            limits: ArchiveLimits::default(),
            ..self.restore_options()
        }
    }
}

/// What the operator may use to act for one policy's tenant.
#[derive(Clone)]
pub struct Access {
    pub tenant: Tenant,
    pub tenancy: Arc<Tenancy>,
    pub signing: SigningKeyring,
}

/// Why a key of a policy's tenant could not be read: its Secret, or an entry of it. Every one
/// is reported under the reason `InvalidKey`; its text ([`error_chain`]) names the Secret and,
/// where one is wrong, the key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("Secret {namespace}/{name} not found")]
    SecretNotFound { namespace: String, name: String },
    #[error("reading Secret {namespace}/{name} as {user}")]
    ReadSecret {
        namespace: String,
        name: String,
        /// The identity the operator read it as.
        user: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("Secret {namespace}/{name} has no key {key:?}")]
    MissingKey {
        namespace: String,
        name: String,
        key: String,
    },
    #[error("{key} in Secret {namespace}/{name} is not UTF-8")]
    NotUtf8 {
        namespace: String,
        name: String,
        key: String,
    },
    #[error("encryption key in Secret {namespace}/{name}")]
    Encryption {
        namespace: String,
        name: String,
        #[source]
        source: Box<crate::backup::KeyringError>,
    },
}

impl KeyError {
    /// Short stable category: condition reason, Event reason and metric label.
    pub fn category(&self) -> &'static str {
        "InvalidKey"
    }
}

/// A path a tenant wrote that is not a relative path of safe segments.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "path {path:?} must be relative, of letters, digits, '-', '_' and '.', without '.' or '..' segments"
)]
pub struct PathError {
    pub path: String,
}

impl PathError {
    /// Short stable category.
    pub fn category(&self) -> &'static str {
        "InvalidPath"
    }
}

/// Why a storage location of a policy could not be built within the provider's limits. Its
/// text is [`error_chain`] of it (what [`Stores::failed`] holds).
#[derive(Debug, thiserror::Error)]
pub enum StoreConfigError {
    /// A `local` or `persistentVolumeClaim` path that is not a safe relative path.
    #[error(transparent)]
    Path(#[from] PathError),
    /// The engine refused the store (a bad name or prefix, a directory it cannot create).
    #[error(transparent)]
    Store(#[from] crate::backup::StoreError),
    #[error(
        "persistentVolumeClaim.path leads out of the claim ({} is not inside {})",
        dir.display(),
        claim.display()
    )]
    OutsideClaim { dir: PathBuf, claim: PathBuf },
    #[error("reading PersistentVolumeClaim {namespace}/{claim} as {user}")]
    ReadClaim {
        namespace: String,
        claim: String,
        user: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("PersistentVolumeClaim {namespace}/{claim} not found")]
    ClaimNotFound { namespace: String, claim: String },
    #[error("PersistentVolumeClaim {namespace}/{claim} is not bound (phase {phase:?})")]
    ClaimNotBound {
        namespace: String,
        claim: String,
        phase: String,
    },
    #[error(
        "PersistentVolumeClaim {namespace}/{claim} is not mounted into the operator at {}",
        dir.display()
    )]
    ClaimNotMounted {
        namespace: String,
        claim: String,
        dir: PathBuf,
    },
    /// The S3 endpoint is not one the provider allows (its own words only, no cause).
    #[error("{0}")]
    Endpoint(crate::backup::EndpointError),
    /// The S3 credentials Secret, or a key of it.
    #[error(transparent)]
    Credentials(#[from] KeyError),
    #[error("no storage kind set")]
    NoKind,
}

impl StoreConfigError {
    /// Short stable category. Callers today report every one as an unreachable location
    /// (`StorageUnreachable`, `StorageFailed`); this tells them apart for logs and metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Path(e) => e.category(),
            Self::OutsideClaim { .. } => "InvalidPath",
            Self::Store(_) => "InvalidStore",
            Self::ReadClaim { .. }
            | Self::ClaimNotFound { .. }
            | Self::ClaimNotBound { .. }
            | Self::ClaimNotMounted { .. } => "ClaimUnavailable",
            Self::Endpoint(_) => "EndpointRefused",
            Self::Credentials(_) => "InvalidCredentials",
            Self::NoKind => "InvalidSpec",
        }
    }
}

/// Every entry of a Secret of the tenant's namespace, read as the tenant.
async fn tenant_secret(tenant: &Tenant, name: &str) -> Result<BTreeMap<String, Vec<u8>>, KeyError> {
    let ns = &tenant.namespace;
    let api: Api<Secret> = Api::namespaced(tenant.client.clone(), ns);
    match api.get_opt(name).await {
        Ok(Some(s)) => Ok(secret_entries(&s)),
        Ok(None) => Err(KeyError::SecretNotFound {
            namespace: ns.clone(),
            name: name.into(),
        }),
        Err(source) => Err(KeyError::ReadSecret {
            namespace: ns.clone(),
            name: name.into(),
            user: tenant.user(),
            source: Box::new(source),
        }),
    }
}

/// Entry `key` of Secret `namespace/name`, trimmed.
fn entry(
    entries: &BTreeMap<String, Vec<u8>>,
    namespace: &str,
    name: &str,
    key: &str,
) -> Result<String, KeyError> {
    let raw = entries.get(key).ok_or_else(|| KeyError::MissingKey {
        namespace: namespace.into(),
        name: name.into(),
        key: key.into(),
    })?;
    String::from_utf8(raw.clone())
        .map(|s| s.trim().to_string())
        .map_err(|_| KeyError::NotUtf8 {
            namespace: namespace.into(),
            name: name.into(),
            key: key.into(),
        })
}

impl Access {
    /// The policy's keys; an error names the Secret and what is wrong with it.
    pub async fn keys(&self, policy: &BackupPolicy) -> Result<Keys, KeyError> {
        let encryption = match &policy.spec.encryption {
            Some(enc) => {
                let r = &enc.key_secret_ref;
                let entries = tenant_secret(&self.tenant, &r.name).await?;
                Some(
                    EncryptionKeyring::from_entries(&entries, &r.key).map_err(|source| {
                        KeyError::Encryption {
                            namespace: self.tenant.namespace.clone(),
                            name: r.name.clone(),
                            source: Box::new(source),
                        }
                    })?,
                )
            }
            None => None,
        };
        Ok(Keys {
            encryption,
            signing: self.signing.clone(),
        })
    }

    /// Every store of a policy.
    pub async fn stores(&self, policy: &BackupPolicy) -> Stores {
        let mut out = Stores::default();
        for location in &policy.spec.storage {
            match self.store(location).await {
                Ok(s) => out.ready.push(s),
                Err(e) => out.failed.push((location.name.clone(), error_chain(&e))),
            }
        }
        out
    }

    /// Builds one store of a policy within the provider's limits.
    pub async fn store(&self, location: &StorageLocation) -> Result<Store, StoreConfigError> {
        let name = location.name.clone();
        let ns = &self.tenant.namespace;
        if let Some(local) = &location.local {
            let dir = local_dir(&self.tenancy.local_root, ns, &local.path)?;
            return Ok(Store::local(name, dir)?);
        }
        if let Some(pvc) = &location.persistent_volume_claim {
            let claim = self.claim_dir(&pvc.claim_name).await?;
            let dir = match &pvc.path {
                Some(sub) if !sub.trim_matches('/').is_empty() => {
                    claim.join(relative(sub.trim_matches('/'))?)
                }
                _ => claim.clone(),
            };
            let store = Store::local(name, &dir)?;
            // The claim's content is the tenant's: a link in `path` must not lead out of it.
            let inside = std::fs::canonicalize(&claim)
                .ok()
                .zip(store.local_dir())
                .is_some_and(|(claim, at)| at.starts_with(claim));
            if !inside {
                return Err(StoreConfigError::OutsideClaim { dir, claim });
            }
            return Ok(store);
        }
        if let Some(s3) = &location.s3 {
            // The endpoint requests go to: the bucket first in the host name when addressed
            // virtual-hosted style. Checked before the credentials are read: a refused
            // endpoint gets nothing.
            let endpoint = match &s3.endpoint {
                Some(e) if !s3.force_path_style => {
                    crate::backup::store::virtual_hosted_endpoint(e, &s3.bucket)
                }
                Some(e) => e.clone(),
                None => aws_endpoint(&s3.region),
            };
            let resolver = self
                .tenancy
                .endpoints
                .allow(&endpoint)
                .await
                .map_err(StoreConfigError::Endpoint)?;
            let secret = &s3.credentials_secret_ref.name;
            let entries = tenant_secret(&self.tenant, secret).await?;
            let config = S3Config {
                bucket: s3.bucket.clone(),
                endpoint: s3.endpoint.clone(),
                region: s3.region.clone(),
                prefix: s3.prefix.clone(),
                access_key_id: entry(&entries, ns, secret, "AWS_ACCESS_KEY_ID")?,
                secret_access_key: entry(&entries, ns, secret, "AWS_SECRET_ACCESS_KEY")?,
                force_path_style: s3.force_path_style,
            };
            return Ok(Store::s3_resolved(name, &config, Some(resolver))?);
        }
        Err(StoreConfigError::NoKind)
    }

    /// Where a claim of the tenant's namespace is mounted into the operator: it must exist, be
    /// bound, and be mounted there, or nothing is written (a plain directory there would be the
    /// operator's own disk, shared and lost with the pod).
    async fn claim_dir(&self, claim: &str) -> Result<PathBuf, StoreConfigError> {
        let ns = &self.tenant.namespace;
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.tenant.client.clone(), ns);
        let pvc = api
            .get_opt(claim)
            .await
            .map_err(|source| StoreConfigError::ReadClaim {
                namespace: ns.clone(),
                claim: claim.into(),
                user: self.tenant.user(),
                source: Box::new(source),
            })?
            .ok_or_else(|| StoreConfigError::ClaimNotFound {
                namespace: ns.clone(),
                claim: claim.into(),
            })?;
        let phase = pvc
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        if phase != "Bound" {
            return Err(StoreConfigError::ClaimNotBound {
                namespace: ns.clone(),
                claim: claim.into(),
                phase,
            });
        }
        let dir = self.tenancy.pvc_root.join(ns).join(claim);
        if !is_mount_point(&dir) {
            return Err(StoreConfigError::ClaimNotMounted {
                namespace: ns.clone(),
                claim: claim.into(),
                dir,
            });
        }
        Ok(dir)
    }
}

/// A relative path of safe segments (no `.`, `..`, empty or absolute parts).
fn relative(path: &str) -> Result<PathBuf, PathError> {
    let mut out = PathBuf::new();
    for seg in path.split('/') {
        let ok = !seg.is_empty()
            && seg != "."
            && seg != ".."
            && seg
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !ok {
            return Err(PathError { path: path.into() });
        }
        out.push(seg);
    }
    Ok(out)
}

/// `<root>/<namespace>/<path>`: a namespace's local stores never overlap another's.
pub fn local_dir(root: &Path, namespace: &str, path: &str) -> Result<PathBuf, PathError> {
    Ok(root.join(relative(namespace)?).join(relative(path)?))
}

/// Whether `dir` is a mount point: it exists and its device differs from its parent's (or it
/// is the root).
pub fn is_mount_point(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(meta) = std::fs::metadata(dir) else {
        return false;
    };
    match dir.parent().map(std::fs::metadata) {
        Some(Ok(parent)) => {
            meta.is_dir() && (meta.dev() != parent.dev() || meta.ino() == parent.ino())
        }
        Some(Err(_)) => false,
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_stores_stay_in_their_namespace_directory() {
        let root = Path::new("/var/lib/opsec/backups");
        assert_eq!(
            local_dir(root, "team-a", "onsite/daily").unwrap(),
            Path::new("/var/lib/opsec/backups/team-a/onsite/daily")
        );
        for bad in [
            "",
            "/etc",
            "../team-b",
            "a/../../b",
            "a//b",
            "./a",
            "a/.",
            "a b",
        ] {
            assert!(local_dir(root, "team-a", bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn key_errors_name_the_secret_and_the_key() {
        let missing = KeyError::MissingKey {
            namespace: "team-a".into(),
            name: "s3-creds".into(),
            key: "AWS_ACCESS_KEY_ID".into(),
        };
        assert_eq!(missing.category(), "InvalidKey");
        assert_eq!(
            error_chain(&missing),
            "Secret team-a/s3-creds has no key \"AWS_ACCESS_KEY_ID\""
        );
        let not_utf8 = KeyError::NotUtf8 {
            namespace: "team-a".into(),
            name: "s3-creds".into(),
            key: "AWS_SECRET_ACCESS_KEY".into(),
        };
        assert_eq!(
            not_utf8.to_string(),
            "AWS_SECRET_ACCESS_KEY in Secret team-a/s3-creds is not UTF-8"
        );
        let status: kube::core::Status = serde_json::from_value(
            serde_json::json!({"code": 403, "message": "secrets \"k\" is forbidden", "reason": "Forbidden"}),
        )
        .unwrap();
        let api = || kube::Error::Api(Box::new(status.clone()));
        let read = KeyError::ReadSecret {
            namespace: "team-a".into(),
            name: "k".into(),
            user: "system:serviceaccount:team-a:opsec-tenant".into(),
            source: Box::new(api()),
        };
        assert_eq!(
            error_chain(&read),
            format!(
                "reading Secret team-a/k as system:serviceaccount:team-a:opsec-tenant: {}",
                error_chain(&api())
            )
        );
        let encryption = KeyError::Encryption {
            namespace: "team-a".into(),
            name: "k".into(),
            source: Box::new(crate::backup::KeyringError::MissingEntry("key".into())),
        };
        assert_eq!(
            error_chain(&encryption),
            "encryption key in Secret team-a/k: encryption key entry \"key\" is missing"
        );
        // As credentials of a store, a key error keeps its words.
        let store = StoreConfigError::from(missing);
        assert_eq!(store.category(), "InvalidCredentials");
        assert_eq!(
            error_chain(&store),
            "Secret team-a/s3-creds has no key \"AWS_ACCESS_KEY_ID\""
        );
    }

    #[test]
    fn store_errors_keep_their_words() {
        let err = local_dir(Path::new("/r"), "team-a", "../b").unwrap_err();
        assert_eq!(
            err.to_string(),
            "path \"../b\" must be relative, of letters, digits, '-', '_' and '.', without '.' or '..' segments"
        );
        let cases: Vec<(StoreConfigError, &str, &str)> = vec![
            (
                err.into(),
                "InvalidPath",
                "path \"../b\" must be relative, of letters, digits, '-', '_' and '.', without '.' or '..' segments",
            ),
            (
                StoreConfigError::OutsideClaim {
                    dir: "/pvc/a/c/x".into(),
                    claim: "/pvc/a/c".into(),
                },
                "InvalidPath",
                "persistentVolumeClaim.path leads out of the claim (/pvc/a/c/x is not inside /pvc/a/c)",
            ),
            (
                StoreConfigError::ClaimNotFound {
                    namespace: "a".into(),
                    claim: "c".into(),
                },
                "ClaimUnavailable",
                "PersistentVolumeClaim a/c not found",
            ),
            (
                StoreConfigError::ClaimNotBound {
                    namespace: "a".into(),
                    claim: "c".into(),
                    phase: "Pending".into(),
                },
                "ClaimUnavailable",
                "PersistentVolumeClaim a/c is not bound (phase \"Pending\")",
            ),
            (
                StoreConfigError::ClaimNotMounted {
                    namespace: "a".into(),
                    claim: "c".into(),
                    dir: "/pvc/a/c".into(),
                },
                "ClaimUnavailable",
                "PersistentVolumeClaim a/c is not mounted into the operator at /pvc/a/c",
            ),
            (
                StoreConfigError::Endpoint(crate::backup::EndpointError::NotAllowed(
                    "https://x".into(),
                )),
                "EndpointRefused",
                "s3 endpoint https://x is not in the operator's allowlist (--s3-endpoint-allowlist)",
            ),
            (
                StoreConfigError::NoKind,
                "InvalidSpec",
                "no storage kind set",
            ),
        ];
        for (err, category, text) in cases {
            assert_eq!(err.category(), category, "{err}");
            assert_eq!(error_chain(&err), text);
        }
    }

    #[test]
    fn only_mount_points_count_as_mounted_claims() {
        assert!(is_mount_point(Path::new("/")));
        assert!(is_mount_point(Path::new("/proc")));
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_mount_point(&dir.path().join("missing")));
        std::fs::create_dir(dir.path().join("plain")).unwrap();
        assert!(!is_mount_point(&dir.path().join("plain")));
    }
}
