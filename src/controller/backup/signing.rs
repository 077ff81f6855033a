//! The operator's signing keyring: a Secret in its own namespace (`--signing-secret`), which no
//! tenant can read, so a tenant who holds its own encryption key still cannot forge a backup
//! the operator will trust. Created with one fresh key when absent; rotated by adding a key and
//! pointing `active` at it (older keys, or their `.pub` halves, keep old backups trusted).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};

use crate::backup::{KeyringError, SigningKeyring};
use crate::controller::tenant::Tenancy;

/// Why the keyring could not be had.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error("reading the signing keyring Secret {namespace}/{name}")]
    Read {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("creating the signing keyring Secret {namespace}/{name}")]
    Create {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("the signing keyring Secret {namespace}/{name} is invalid")]
    Invalid {
        namespace: String,
        name: String,
        #[source]
        source: KeyringError,
    },
    #[error("generating a signing key")]
    Generate(#[source] crate::backup::CryptoError),
}

/// The entries of a Secret, `data` and `stringData` alike.
pub fn secret_entries(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    let mut out: BTreeMap<String, Vec<u8>> = secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    for (k, v) in secret.string_data.iter().flatten() {
        out.entry(k.clone())
            .or_insert_with(|| v.as_bytes().to_vec());
    }
    out
}

/// The operator's keyring, created with a fresh key when its Secret does not exist yet (two
/// replicas racing to create it both end with the one that won).
pub async fn keyring(client: &Client, tenancy: &Tenancy) -> Result<SigningKeyring, SigningError> {
    let (namespace, name) = (&tenancy.operator_namespace, &tenancy.signing_secret);
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let read_err = |source| SigningError::Read {
        namespace: namespace.clone(),
        name: name.clone(),
        source,
    };
    let secret = match api.get_opt(name).await.map_err(read_err)? {
        Some(s) => s,
        None => {
            let entries = SigningKeyring::generate("k1").map_err(SigningError::Generate)?;
            let fresh = Secret {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(namespace.clone()),
                    labels: Some(BTreeMap::from([(
                        "app.kubernetes.io/managed-by".to_string(),
                        crate::FIELD_MANAGER.to_string(),
                    )])),
                    ..Default::default()
                },
                data: Some(
                    entries
                        .into_iter()
                        .map(|(k, v)| (k, ByteString(v)))
                        .collect(),
                ),
                ..Default::default()
            };
            match api.create(&PostParams::default(), &fresh).await {
                Ok(s) => {
                    tracing::info!(%namespace, %name, "created the operator's signing keyring");
                    s
                }
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    api.get(name).await.map_err(read_err)?
                }
                Err(source) => {
                    return Err(SigningError::Create {
                        namespace: namespace.clone(),
                        name: name.clone(),
                        source,
                    });
                }
            }
        }
    };
    SigningKeyring::from_entries(&secret_entries(&secret)).map_err(|source| SigningError::Invalid {
        namespace: namespace.clone(),
        name: name.clone(),
        source,
    })
}
