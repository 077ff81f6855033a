//! The backup kinds as the integration tests drive them: the keys Secret and a policy that
//! uses it, a Restore run to its end, the Backup of a policy in a phase, a policy's condition,
//! and asking a policy for work now.

use std::time::Duration;

use base64::Engine as _;
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use opsec_operator::api::backup::{BackupPhase, RestorePhase};
use opsec_operator::api::{Backup, BackupPolicy, Restore};
use serde_json::{Value, json};

/// How long a backup or a restore may take in the tests.
pub const WAIT: Duration = Duration::from_secs(60);
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Creates Secret `backup-keys` in `ns`: an encryption key (`enc`, from `salt`) and a signing
/// seed (`sign`), as [`keys`] names them.
pub async fn keys_secret(client: &Client, ns: &str, salt: u8) {
    let enc: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(7).wrapping_add(salt));
    let seed: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(13).wrapping_add(1));
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "backup-keys"},
        "stringData": {"enc": B64.encode(enc), "sign": B64.encode(seed)}
    }))
    .unwrap();
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &secret)
        .await
        .expect("create the keys Secret");
}

pub fn keys() -> Value {
    json!({"encryption": {"keySecretRef": {"name": "backup-keys", "key": "enc"}}})
}

pub async fn policy(client: &Client, ns: &str, name: &str, mut spec: Value) -> BackupPolicy {
    if spec.get("encryption").is_none() {
        spec["encryption"] = keys()["encryption"].clone();
    }
    let p: BackupPolicy = serde_json::from_value(json!({
        "apiVersion": "opsec.x1642.dev/v1alpha1", "kind": "BackupPolicy",
        "metadata": {"name": name, "namespace": ns}, "spec": spec,
    }))
    .unwrap();
    Api::<BackupPolicy>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &p)
        .await
        .expect("create BackupPolicy")
}

pub async fn restore(client: &Client, ns: &str, spec: Value) -> Restore {
    let name = super::unique("rst");
    let r: Restore = serde_json::from_value(json!({
        "apiVersion": "opsec.x1642.dev/v1alpha1", "kind": "Restore",
        "metadata": {"name": name, "namespace": ns}, "spec": spec,
    }))
    .unwrap();
    let api = Api::<Restore>::namespaced(client.clone(), ns);
    api.create(&PostParams::default(), &r)
        .await
        .expect("create Restore");
    super::eventually(WAIT, "the Restore to finish", || {
        let api = api.clone();
        let name = name.clone();
        async move {
            let r = api.get(&name).await.ok()?;
            matches!(
                r.status.as_ref()?.phase,
                Some(RestorePhase::Completed | RestorePhase::Failed)
            )
            .then_some(r)
        }
    })
    .await
}

/// The first Backup of `policy` that reaches `phase`.
pub async fn backup_in(client: &Client, ns: &str, policy: &str, phases: &[BackupPhase]) -> Backup {
    let api = Api::<Backup>::namespaced(client.clone(), ns);
    super::eventually(WAIT, &format!("a Backup of {policy} in {phases:?}"), || {
        let api = api.clone();
        async move {
            let list = api.list(&ListParams::default()).await.ok()?;
            list.items.into_iter().find(|b| {
                b.spec.policy_ref.name == policy
                    && b.status
                        .as_ref()
                        .and_then(|s| s.phase)
                        .is_some_and(|p| phases.contains(&p))
            })
        }
    })
    .await
}

pub async fn policy_condition(
    client: &Client,
    ns: &str,
    name: &str,
    type_: &str,
    status: &str,
) -> BackupPolicy {
    let api = Api::<BackupPolicy>::namespaced(client.clone(), ns);
    super::eventually(
        Duration::from_secs(90),
        &format!("{type_}={status} on {name}"),
        || {
            let api = api.clone();
            async move {
                let p = api.get(name).await.ok()?;
                p.status
                    .as_ref()?
                    .conditions
                    .iter()
                    .any(|c| c.type_ == type_ && c.status == status)
                    .then_some(p)
            }
        },
    )
    .await
}

pub async fn annotate(client: &Client, ns: &str, policy: &str, key: &str) {
    let api = Api::<BackupPolicy>::namespaced(client.clone(), ns);
    api.patch(
        policy,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {key: "1"}}})),
    )
    .await
    .unwrap();
}
