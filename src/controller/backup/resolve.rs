//! From a BackupPolicy to what the engine needs: its stores (S3 credentials from a Secret of the
//! policy's own namespace, never another) and its keys (encryption and signing keys from Secrets
//! of the same namespace).

use ed25519_dalek::SigningKey;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::Api;

use crate::api::backup::{BackupPolicy, StorageLocation};
use crate::api::common::SecretKeyRef;
use crate::backup::{EncryptionKey, RestoreOptions, S3Config, Store, parse_signing_key};

/// Where PersistentVolumeClaims are mounted into the operator.
pub const PVC_ROOT: &str = "/var/lib/opsec/pvc";

/// The stores of a policy: those that could be built, and why the others could not.
#[derive(Debug, Default)]
pub struct Stores {
    pub ready: Vec<Store>,
    /// (location name, reason).
    pub failed: Vec<(String, String)>,
}

/// Keys of a policy.
#[derive(Clone, Debug, Default)]
pub struct Keys {
    pub encryption: Option<EncryptionKey>,
    pub signing: Option<SigningKey>,
}

impl Keys {
    /// Options to read the policy's backups back: the signature must verify when it signs.
    pub fn restore_options(&self) -> RestoreOptions {
        RestoreOptions {
            encryption_key: self.encryption.clone(),
            verifying_key: self.signing.as_ref().map(|k| k.verifying_key()),
            ..Default::default()
        }
    }
}

/// Reads one key of a Secret in `namespace`.
pub async fn secret_key(
    client: &Client,
    namespace: &str,
    secret: &str,
    key: &str,
) -> Result<Vec<u8>, String> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let s = match api.get_opt(secret).await {
        Ok(Some(s)) => s,
        Ok(None) => return Err(format!("Secret {namespace}/{secret} not found")),
        Err(e) => return Err(format!("reading Secret {namespace}/{secret}: {e}")),
    };
    s.data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| b.0.clone())
        .or_else(|| {
            s.string_data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|v| v.as_bytes().to_vec())
        })
        .ok_or_else(|| format!("Secret {namespace}/{secret} has no key {key:?}"))
}

async fn key_ref(client: &Client, namespace: &str, r: &SecretKeyRef) -> Result<Vec<u8>, String> {
    secret_key(client, namespace, &r.name, &r.key).await
}

/// The policy's keys; an error names the Secret and what is wrong with it.
pub async fn keys(client: &Client, policy: &BackupPolicy) -> Result<Keys, String> {
    let ns = policy.metadata.namespace.as_deref().unwrap_or_default();
    let mut keys = Keys::default();
    if let Some(enc) = &policy.spec.encryption {
        let raw = key_ref(client, ns, &enc.key_secret_ref).await?;
        keys.encryption = Some(EncryptionKey::parse(&raw).map_err(|e| {
            format!(
                "encryption key in Secret {ns}/{}: {e}",
                enc.key_secret_ref.name
            )
        })?);
    }
    if let Some(sig) = &policy.spec.signing {
        let raw = key_ref(client, ns, &sig.key_secret_ref).await?;
        keys.signing = Some(parse_signing_key(&raw).map_err(|e| {
            format!(
                "signing key in Secret {ns}/{}: {e}",
                sig.key_secret_ref.name
            )
        })?);
    }
    Ok(keys)
}

/// Builds one store of a policy.
pub async fn store(
    client: &Client,
    namespace: &str,
    location: &StorageLocation,
) -> Result<Store, String> {
    let name = location.name.clone();
    if let Some(local) = &location.local {
        return Store::local(name, &local.path).map_err(|e| error_chain(&e));
    }
    if let Some(pvc) = &location.persistent_volume_claim {
        let mut dir = std::path::PathBuf::from(PVC_ROOT).join(&pvc.claim_name);
        if let Some(sub) = &pvc.path {
            dir = dir.join(sub.trim_start_matches('/'));
        }
        return Store::local(name, dir).map_err(|e| error_chain(&e));
    }
    if let Some(s3) = &location.s3 {
        let secret = &s3.credentials_secret_ref.name;
        let access_key_id =
            String::from_utf8(secret_key(client, namespace, secret, "AWS_ACCESS_KEY_ID").await?)
                .map_err(|_| {
                    format!("AWS_ACCESS_KEY_ID in Secret {namespace}/{secret} is not UTF-8")
                })?;
        let secret_access_key = String::from_utf8(
            secret_key(client, namespace, secret, "AWS_SECRET_ACCESS_KEY").await?,
        )
        .map_err(|_| {
            format!("AWS_SECRET_ACCESS_KEY in Secret {namespace}/{secret} is not UTF-8")
        })?;
        let config = S3Config {
            bucket: s3.bucket.clone(),
            endpoint: s3.endpoint.clone(),
            region: s3.region.clone(),
            prefix: s3.prefix.clone(),
            access_key_id: access_key_id.trim().to_string(),
            secret_access_key: secret_access_key.trim().to_string(),
            force_path_style: s3.force_path_style,
        };
        return Store::s3(name, &config).map_err(|e| error_chain(&e));
    }
    Err("no storage kind set".into())
}

/// Every store of a policy.
pub async fn stores(client: &Client, policy: &BackupPolicy) -> Stores {
    let ns = policy.metadata.namespace.as_deref().unwrap_or_default();
    let mut out = Stores::default();
    for location in &policy.spec.storage {
        match store(client, ns, location).await {
            Ok(s) => out.ready.push(s),
            Err(e) => out.failed.push((location.name.clone(), e)),
        }
    }
    out
}

/// An error and its sources on one line.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut msg = err.to_string();
    let mut src = err.source();
    while let Some(s) = src {
        let text = s.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        src = s.source();
    }
    msg
}
