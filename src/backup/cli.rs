//! `opsec-operator backup ...`: disaster recovery without a cluster. Lists, verifies and
//! restores backups straight from a store (a local directory or `s3://bucket/prefix`, with S3
//! settings from the environment: `OPSEC_S3_ENDPOINT` or `AWS_ENDPOINT_URL`, `AWS_REGION`,
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`); keys come from files. A restore writes the
//! objects as YAML files, in restore order, for `kubectl apply -f`.

use std::path::{Path, PathBuf};

use super::{
    BackupLocation, EncryptionKey, RestoreOptions, S3Config, Store, StoreError, parse_verifying_key,
};

/// `opsec-operator backup` subcommands.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum BackupCommand {
    /// List the complete backups of a policy in a store.
    List(StoreArgs),
    /// Verify stored backups: signature, archive digest, and (with --key-file) every object.
    Verify {
        #[command(flatten)]
        store: StoreArgs,
        /// Only this backup; every backup of the policy when absent.
        #[arg(long)]
        backup_id: Option<String>,
        #[command(flatten)]
        keys: KeyArgs,
    },
    /// Restore a backup into YAML files (nothing is written unless every check passes).
    Restore {
        #[command(flatten)]
        store: StoreArgs,
        /// The backup to restore; the newest when absent.
        #[arg(long)]
        backup_id: Option<String>,
        #[command(flatten)]
        keys: KeyArgs,
        /// Directory the YAML files are written to.
        #[arg(long)]
        out: PathBuf,
    },
}

/// Which store and which policy's backups.
#[derive(clap::Args, Debug, Clone)]
pub struct StoreArgs {
    /// A local directory, or `s3://bucket/prefix`.
    #[arg(long)]
    pub store: String,
    /// Namespace the backups were taken of.
    #[arg(long)]
    pub namespace: String,
    /// Name of the BackupPolicy.
    #[arg(long)]
    pub policy: String,
}

/// Keys of a read.
#[derive(clap::Args, Debug, Clone)]
pub struct KeyArgs {
    /// File with a 32-byte AES-256-GCM key (raw or base64); repeat it for a rotated keyring
    /// (each archive is read with the key its manifest names).
    #[arg(long)]
    pub key_file: Vec<PathBuf>,
    /// File with a trusted Ed25519 public key of the operator (raw, base64 or PEM); repeat it
    /// for rotated keys. With any given, a manifest must carry a signature by one of them.
    #[arg(long)]
    pub public_key_file: Vec<PathBuf>,
}

/// What the backup subcommands fail with.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("reading {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Restore(#[from] super::RestoreError),
    #[error(transparent)]
    Crypto(#[from] super::CryptoError),
    #[error("{failed} of {total} backups failed verification")]
    VerifyFailed { failed: usize, total: usize },
}

fn env_var(names: &[&str]) -> Option<String> {
    names
        .iter()
        .find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
}

/// A store from `--store`.
pub fn open_store(spec: &str) -> Result<Store, CliError> {
    if let Some(rest) = spec.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let need = |n: &str| {
            env_var(&[n])
                .ok_or_else(|| CliError::Usage(format!("{n} must be set for an s3:// store")))
        };
        let config = S3Config {
            bucket: bucket.into(),
            endpoint: env_var(&["OPSEC_S3_ENDPOINT", "AWS_ENDPOINT_URL"]),
            region: env_var(&["AWS_REGION", "AWS_DEFAULT_REGION"])
                .unwrap_or_else(|| "us-east-1".into()),
            prefix: (!prefix.is_empty()).then(|| prefix.to_string()),
            access_key_id: need("AWS_ACCESS_KEY_ID")?,
            secret_access_key: need("AWS_SECRET_ACCESS_KEY")?,
            force_path_style: env_var(&["OPSEC_S3_VIRTUAL_HOSTED"]).is_none(),
        };
        return Ok(Store::s3("s3", &config)?);
    }
    Ok(Store::local("local", spec)?)
}

fn read(path: &Path) -> Result<Vec<u8>, CliError> {
    std::fs::read(path).map_err(|source| CliError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Read options from the key flags.
pub fn options(keys: &KeyArgs) -> Result<RestoreOptions, CliError> {
    let mut o = RestoreOptions::default();
    for p in &keys.key_file {
        o.encryption_keys.push(EncryptionKey::parse(&read(p)?)?);
    }
    for p in &keys.public_key_file {
        o.trusted_keys.push(parse_verifying_key(&read(p)?)?);
    }
    Ok(o)
}

/// Runs one backup subcommand, printing to standard output.
pub async fn run(cmd: BackupCommand) -> Result<(), CliError> {
    match cmd {
        BackupCommand::List(s) => {
            let store = open_store(&s.store)?;
            println!(
                "{:<40} {:<26} {:>8} {:>12} {:<7} SHA256",
                "BACKUP", "CREATED", "OBJECTS", "BYTES", "SIGNED"
            );
            for e in store.list_backups(&s.namespace, &s.policy).await? {
                match &e.manifest {
                    Ok(m) => println!(
                        "{:<40} {:<21} {:>8} {:>12} {:<7} {}",
                        e.backup_id,
                        m.created_at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
                        m.objects.len(),
                        m.archive.size,
                        if e.signed { "yes" } else { "no" },
                        m.archive.sha256
                    ),
                    Err(err) => println!("{:<40} unreadable manifest: {err}", e.backup_id),
                }
            }
            Ok(())
        }
        BackupCommand::Verify {
            store: s,
            backup_id,
            keys,
        } => {
            let store = open_store(&s.store)?;
            let opts = options(&keys)?;
            let ids = match backup_id {
                Some(id) => vec![id],
                None => store
                    .list_backups(&s.namespace, &s.policy)
                    .await?
                    .into_iter()
                    .map(|e| e.backup_id)
                    .collect(),
            };
            let mut failed = 0;
            for id in &ids {
                let loc = BackupLocation::new(&s.namespace, &s.policy, id)?;
                match super::verify(&store, &loc, &opts).await {
                    Ok(r) => println!(
                        "{id}: OK sha256 {} signature {} objects {}",
                        r.archive_sha256,
                        if r.signature_checked {
                            "verified"
                        } else {
                            "not checked"
                        },
                        r.objects_checked
                            .map(|n| n.to_string())
                            .unwrap_or_else(|| "not checked (no key)".into())
                    ),
                    Err(e) => {
                        failed += 1;
                        println!(
                            "{id}: FAILED ({}): {}",
                            e.category(),
                            super::error_chain(&e)
                        );
                    }
                }
            }
            if failed > 0 {
                return Err(CliError::VerifyFailed {
                    failed,
                    total: ids.len(),
                });
            }
            Ok(())
        }
        BackupCommand::Restore {
            store: s,
            backup_id,
            keys,
            out,
        } => {
            let store = open_store(&s.store)?;
            let opts = options(&keys)?;
            let id = match backup_id {
                Some(id) => id,
                // The newest by the (signed, when keys are given) time in its manifest.
                None => store
                    .list_trusted(&s.namespace, &s.policy, &opts.trusted_keys)
                    .await?
                    .into_iter()
                    .filter_map(|e| e.manifest.ok().map(|m| (m.created_at, e.backup_id)))
                    .max()
                    .map(|(_, id)| id)
                    .ok_or_else(|| {
                        CliError::Usage(format!(
                            "no complete backup of {}/{}",
                            s.namespace, s.policy
                        ))
                    })?,
            };
            let loc = BackupLocation::new(&s.namespace, &s.policy, &id)?;
            let restored = super::restore(&store, &loc, &opts).await?;
            std::fs::create_dir_all(&out).map_err(|source| CliError::Io {
                path: out.display().to_string(),
                source,
            })?;
            for (i, obj) in restored.objects.iter().enumerate() {
                let file = out.join(file_name(i, obj));
                let yaml =
                    serde_yaml::to_string(obj).map_err(|e| CliError::Usage(e.to_string()))?;
                std::fs::write(&file, yaml).map_err(|source| CliError::Io {
                    path: file.display().to_string(),
                    source,
                })?;
            }
            println!(
                "restored {} objects of backup {id} into {}",
                restored.objects.len(),
                out.display()
            );
            Ok(())
        }
    }
}

/// `<NNNN>-<kind>-<name>.yaml`: the files sort in restore order.
pub fn file_name(index: usize, obj: &serde_json::Value) -> String {
    let clean = |s: &str| {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect::<String>()
    };
    format!(
        "{index:04}-{}-{}.yaml",
        clean(obj["kind"].as_str().unwrap_or("object")),
        clean(obj["metadata"]["name"].as_str().unwrap_or("unnamed"))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::{BackupMeta, BackupOptions, run_backup};
    use serde_json::json;

    #[tokio::test]
    async fn list_verify_and_restore_from_a_local_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::local("local", dir.path()).unwrap();
        let key = EncryptionKey::from_bytes([9; 32]);
        let signing = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let objects = vec![
            Ok::<_, std::convert::Infallible>(
                json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {}}),
            ),
            Ok(
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"a": "b"}}),
            ),
        ];
        run_backup(
            BackupMeta {
                namespace: "ns".into(),
                policy: "p".into(),
                backup_id: "p-1".into(),
                created_at: jiff::Timestamp::now(),
            },
            BackupOptions {
                encryption_key: Some(key.clone()),
                signing_key: Some(signing.clone()),
                ..Default::default()
            },
            futures::stream::iter(objects),
            &[store],
        )
        .await
        .unwrap();
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let key_file = dir.path().join("key");
        std::fs::write(&key_file, b64.encode([0u8; 32])).unwrap();
        let good_key = dir.path().join("good-key");
        std::fs::write(&good_key, b64.encode([9u8; 32])).unwrap();
        let s = StoreArgs {
            store: dir.path().display().to_string(),
            namespace: "ns".into(),
            policy: "p".into(),
        };
        run(BackupCommand::List(s.clone())).await.unwrap();
        // Without the encryption key: signature and archive digest only.
        let pub_file = dir.path().join("pub");
        std::fs::write(&pub_file, signing.verifying_key().to_bytes()).unwrap();
        let keys = KeyArgs {
            key_file: vec![],
            public_key_file: vec![pub_file.clone()],
        };
        run(BackupCommand::Verify {
            store: s.clone(),
            backup_id: None,
            keys: keys.clone(),
        })
        .await
        .unwrap();
        // A wrong key is refused and nothing is written.
        let out = dir.path().join("out");
        let wrong = KeyArgs {
            key_file: vec![key_file],
            public_key_file: vec![pub_file.clone()],
        };
        let err = run(BackupCommand::Restore {
            store: s.clone(),
            backup_id: None,
            keys: wrong,
            out: out.clone(),
        })
        .await
        .unwrap_err();
        assert!(matches!(err, CliError::Restore(_)), "{err}");
        assert!(!out.exists());
        // With the right keys: every object, as YAML, in restore order.
        let good = KeyArgs {
            key_file: vec![good_key],
            public_key_file: vec![pub_file],
        };
        run(BackupCommand::Verify {
            store: s.clone(),
            backup_id: Some("p-1".into()),
            keys: good.clone(),
        })
        .await
        .unwrap();
        run(BackupCommand::Restore {
            store: s,
            backup_id: None,
            keys: good,
            out: out.clone(),
        })
        .await
        .unwrap();
        let mut files: Vec<String> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        assert_eq!(
            files,
            ["0000-configmap-cfg.yaml", "0001-deployment-web.yaml"]
        );
        let cm: serde_json::Value =
            serde_yaml::from_str(&std::fs::read_to_string(out.join(&files[0])).unwrap()).unwrap();
        assert_eq!(cm["data"]["a"], "b");
    }

    #[test]
    fn file_names_sort_in_restore_order() {
        let o = json!({"kind": "ConfigMap", "metadata": {"name": "a/b"}});
        assert_eq!(file_name(3, &o), "0003-configmap-a_b.yaml");
    }
}
