//! What one BackupPolicy reconcile reads, read once into [`Observed`]: the policy's newest
//! status, whether its namespace is being deleted, the operator's access as the policy's
//! ServiceAccount, its Backups (listed once: act keeps the list current with what it
//! creates and deletes), its stores and its keys (Secrets read once).

use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt;
use kube::api::{Api, ListParams};

use crate::api::backup::BackupPolicyStatus;
use crate::api::{Backup, BackupPolicy};
use crate::controller::backup::resolve::{Access, KeyError, Keys, Stores, error_chain};
use crate::controller::backup::{AccessError, Error, State};

/// Everything a reconcile of one policy reads.
pub struct Observed<'a> {
    pub policy: &'a BackupPolicy,
    /// The newest status ([`State::policy_status`]): what this process last wrote, else the
    /// cached one.
    pub previous: Option<BackupPolicyStatus>,
    pub reach: Reach,
}

/// How far the operator can act for the policy, and what it read as its tenant.
pub enum Reach {
    /// The namespace is being deleted and takes its Backups with it: neither rebuild them
    /// from the catalogue nor schedule new ones (nothing more is read).
    NamespaceDeleting,
    /// The policy's ServiceAccount (or the operator's signing keyring) is missing: the policy
    /// waits, nothing more is read.
    Waiting(AccessError),
    Ready(Box<Resolved>),
}

/// What acting as the tenant resolved, once per reconcile.
pub struct Resolved {
    pub access: Access,
    /// The policy's Backups not being deleted.
    pub backups: Vec<Backup>,
    pub stores: Stores,
    /// The policy's keys, or why they do not load.
    pub keys: Result<Keys, KeyError>,
    /// Why the keys do not load, in words (what status and Events say).
    pub key_problem: Option<String>,
}

/// Reads what a reconcile of `p` needs.
pub async fn observe<'a>(p: &'a BackupPolicy, st: &State) -> Result<Observed<'a>, Error> {
    let previous = st.policy_status(p);
    let observed = |reach| Observed {
        policy: p,
        previous: previous.clone(),
        reach,
    };
    let ns = p.namespace().unwrap_or_default();
    let namespaces: Api<Namespace> = Api::all(st.ctx.client.clone());
    if let Ok(Some(n)) = namespaces.get_opt(&ns).await
        && n.metadata.deletion_timestamp.is_some()
    {
        return Ok(observed(Reach::NamespaceDeleting));
    }
    // Everything below acts as the policy's ServiceAccount: until it exists, the policy waits.
    let access = match st.access(&ns, p.spec.service_account_name.as_deref()).await {
        Ok(a) => a,
        Err(e) => return Ok(observed(Reach::Waiting(e))),
    };
    let api: Api<Backup> = Api::namespaced(st.ctx.client.clone(), &ns);
    let backups = list_backups(&api, &p.name_any()).await?;
    let stores = access.stores(p).await;
    let keys = access.keys(p).await;
    let key_problem = keys.as_ref().err().map(|e| error_chain(e));
    Ok(observed(Reach::Ready(Box::new(Resolved {
        access,
        backups,
        stores,
        keys,
        key_problem,
    }))))
}

/// Every Backup of a policy.
async fn list_backups(api: &Api<Backup>, policy: &str) -> Result<Vec<Backup>, Error> {
    Ok(api
        .list(&ListParams::default())
        .await
        .map_err(|source| Error::Read {
            what: "Backups".into(),
            source,
        })?
        .items
        .into_iter()
        .filter(|b| b.spec.policy_ref.name == policy && b.metadata.deletion_timestamp.is_none())
        .collect())
}
