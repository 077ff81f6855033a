//! Acting for a tenant (ARCHITECTURE.md, "Whose rights"). Whatever the operator does because a
//! tenant wrote an object (a backup's export, a restore, a restore test, reading the tenant's
//! keys and credentials), it does as a ServiceAccount of that object's own namespace, by
//! impersonation: the API server's RBAC, admission and quota then judge each request as the
//! tenant's, so the operator can never be used to do more than the tenant could itself. The
//! operator's own RBAC limits which ServiceAccount names it may impersonate.
//!
//! [`Tenancy`] also holds the provider's other limits on tenant-driven work: where backups may
//! be stored (a local root, mounted claims, an S3 endpoint allowlist) and where the operator's
//! signing keyring lives.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Client;
use kube::api::Api;

use crate::backup::EndpointPolicy;
use crate::config::TenancyArgs;

/// Impersonating clients kept at most (one per namespace and ServiceAccount); past this the
/// cache starts afresh (a client is cheap to build, its idle connections close by themselves).
const MAX_CLIENTS: usize = 512;

/// The provider's limits on tenant-driven work, and the clients that act as tenants.
pub struct Tenancy {
    /// The operator's own connection settings, from which impersonating clients are derived.
    config: kube::Config,
    clients: Mutex<HashMap<(String, String), Client>>,
    /// ServiceAccount acted as when an object names none.
    pub default_service_account: String,
    /// `local` stores live under `<local_root>/<namespace>/`.
    pub local_root: PathBuf,
    /// Claims are mounted at `<pvc_root>/<namespace>/<claim>`.
    pub pvc_root: PathBuf,
    /// Which S3 endpoints policies may name.
    pub endpoints: Arc<EndpointPolicy>,
    /// The operator's signing keyring: Secret `signing_secret` in `operator_namespace`.
    pub signing_secret: String,
    pub operator_namespace: String,
}

/// Why the operator cannot act for a tenant.
#[derive(Debug, thiserror::Error)]
pub enum ActError {
    #[error(
        "ServiceAccount {namespace}/{name} does not exist: the operator acts as it for this object (spec.serviceAccountName, or the operator's default); create it and bind it to the rights this work needs"
    )]
    NoServiceAccount { namespace: String, name: String },
    #[error("reading ServiceAccount {namespace}/{name}")]
    Lookup {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("building a client that acts as {user}")]
    Client {
        user: String,
        #[source]
        source: kube::Error,
    },
}

impl ActError {
    /// Short stable category: condition reason, Event reason, metric label.
    pub fn category(&self) -> &'static str {
        match self {
            Self::NoServiceAccount { .. } => "ServiceAccountNotFound",
            Self::Lookup { .. } => "ApiRead",
            Self::Client { .. } => "Internal",
        }
    }
}

/// A client acting as one tenant ServiceAccount.
#[derive(Clone)]
pub struct Tenant {
    pub client: Client,
    pub namespace: String,
    pub service_account: String,
}

impl Tenant {
    /// The user the API server sees: `system:serviceaccount:<namespace>:<name>`.
    pub fn user(&self) -> String {
        service_account_user(&self.namespace, &self.service_account)
    }
}

/// The username of a ServiceAccount.
pub fn service_account_user(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

impl Tenancy {
    /// The limits from the run flags; an invalid allowlist or range is refused at start.
    pub fn new(
        config: kube::Config,
        args: &TenancyArgs,
    ) -> Result<Self, crate::backup::EndpointError> {
        Ok(Self {
            config,
            clients: Mutex::default(),
            default_service_account: args.default_service_account.clone(),
            local_root: args.local_store_root.clone(),
            pvc_root: args.pvc_root.clone(),
            endpoints: Arc::new(EndpointPolicy::new(
                &args.s3_endpoint_allowlist,
                &args.restricted_cidrs,
            )?),
            signing_secret: args.signing_secret.clone(),
            operator_namespace: args.operator_namespace.clone(),
        })
    }

    /// The ServiceAccount an object acts as: the one it names, or the default.
    pub fn service_account<'a>(&'a self, named: Option<&'a str>) -> &'a str {
        named
            .filter(|n| !n.is_empty())
            .unwrap_or(&self.default_service_account)
    }

    /// A client acting as ServiceAccount `named` (or the default) of `namespace`. The
    /// ServiceAccount must exist: impersonating a missing one would act as a name anyone may
    /// later create, and its absence is a clear condition for the tenant to fix.
    pub async fn act_as(
        &self,
        own: &Client,
        namespace: &str,
        named: Option<&str>,
    ) -> Result<Tenant, ActError> {
        let name = self.service_account(named).to_string();
        let accounts: Api<ServiceAccount> = Api::namespaced(own.clone(), namespace);
        match accounts.get_opt(&name).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                return Err(ActError::NoServiceAccount {
                    namespace: namespace.into(),
                    name,
                });
            }
            Err(source) => {
                return Err(ActError::Lookup {
                    namespace: namespace.into(),
                    name,
                    source,
                });
            }
        }
        let client = self.client_as(namespace, &name)?;
        Ok(Tenant {
            client,
            namespace: namespace.into(),
            service_account: name,
        })
    }

    /// The impersonating client of a ServiceAccount, built once and kept.
    fn client_as(&self, namespace: &str, name: &str) -> Result<Client, ActError> {
        let key = (namespace.to_string(), name.to_string());
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(&key) {
            return Ok(c.clone());
        }
        if clients.len() >= MAX_CLIENTS {
            clients.clear();
        }
        let user = service_account_user(namespace, name);
        let mut config = self.config.clone();
        config.auth_info.impersonate = Some(user.clone());
        // The API server gives an impersonated ServiceAccount its groups itself.
        config.auth_info.impersonate_groups = None;
        let client =
            Client::try_from(config).map_err(|source| ActError::Client { user, source })?;
        clients.insert(key, client.clone());
        Ok(client)
    }
}
