//! Settings of `opsec-operator run`, from flags or environment variables.

use std::net::SocketAddr;

/// Flags of `opsec-operator run`; each can also come from the environment variable it names.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Address of the admin port (/healthz, /readyz, /metrics).
    #[arg(long, env = "OPSEC_ADMIN_ADDR", default_value = "0.0.0.0:8080")]
    pub admin_addr: SocketAddr,

    /// Serve /metrics only to callers the API server authenticates (TokenReview) and allows to
    /// `get` the non-resource URL /metrics (SubjectAccessReview).
    #[arg(long, env = "OPSEC_METRICS_AUTH", default_value_t = true, action = clap::ArgAction::Set)]
    pub metrics_auth: bool,

    /// Log format.
    #[arg(long, env = "OPSEC_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Name of the coordination.k8s.io Lease used for leader election.
    #[arg(long, env = "OPSEC_LEASE_NAME", default_value = "opsec-operator")]
    pub lease_name: String,

    /// Namespace of the Lease; the operator's own namespace (POD_NAMESPACE) in a cluster.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,

    /// How long a leader's Lease is valid without renewal: a standby takes over after it.
    #[arg(long, env = "OPSEC_LEASE_DURATION", default_value = "15s", value_parser = parse_std_duration)]
    pub lease_duration: std::time::Duration,

    /// How often the leader renews and a standby looks at the Lease.
    #[arg(long, env = "OPSEC_LEASE_RETRY", default_value = "2s", value_parser = parse_std_duration)]
    pub lease_retry: std::time::Duration,

    /// Identity in the Lease; the pod name (POD_NAME) plus a random suffix by default.
    #[arg(long, env = "OPSEC_IDENTITY")]
    pub identity: Option<String>,

    /// Controllers to run while leading: a comma-separated list of `baseline`, `backup`, or `all`, or
    /// `none` (leader election and the admin port only).
    #[arg(
        long,
        env = "OPSEC_CONTROLLERS",
        default_value = "all",
        value_delimiter = ','
    )]
    pub controllers: Vec<String>,

    /// Shut down gracefully when standard input closes (for a parent process that owns the
    /// operator, such as a test harness).
    #[arg(long, hide = true)]
    pub exit_on_stdin_close: bool,

    /// Longest wait for the operator's CRDs to be Established before giving up.
    #[arg(long, env = "OPSEC_CRD_TIMEOUT", default_value = "300s", value_parser = parse_std_duration)]
    pub crd_timeout: std::time::Duration,

    /// What tenants may make the operator do, and with whose rights.
    #[command(flatten)]
    pub tenancy: TenancyArgs,
}

/// The provider's limits on what the operator does for a tenant (ARCHITECTURE.md, "Whose
/// rights"): whom it acts as, where it may store backups, which key signs them.
#[derive(clap::Args, Debug, Clone)]
pub struct TenancyArgs {
    /// ServiceAccount (in the object's own namespace) the operator acts as for a BackupPolicy or
    /// Restore that names none in `spec.serviceAccountName`. The operator's RBAC lists the names
    /// it may impersonate.
    #[arg(
        long,
        env = "OPSEC_DEFAULT_SERVICE_ACCOUNT",
        default_value = "opsec-tenant"
    )]
    pub default_service_account: String,

    /// Directory under which `local` storage locations live: a policy's `local.path` is
    /// relative to `<root>/<namespace>/`, so no tenant reaches another's files.
    #[arg(
        long,
        env = "OPSEC_LOCAL_STORE_ROOT",
        default_value = "/var/lib/opsec/backups"
    )]
    pub local_store_root: std::path::PathBuf,

    /// Directory under which PersistentVolumeClaims are mounted into the operator, as
    /// `<root>/<namespace>/<claimName>`.
    #[arg(long, env = "OPSEC_PVC_ROOT", default_value = "/var/lib/opsec/pvc")]
    pub pvc_root: std::path::PathBuf,

    /// S3 endpoints a policy may name (comma-separated): `scheme://host[:port]` exactly, or
    /// `scheme://*.domain` for its subdomains. A policy without an endpoint uses AWS's
    /// (`https://s3.<region>.amazonaws.com`), which must match too. An endpoint matched only by
    /// a wildcard is refused when it resolves into a restricted range.
    #[arg(
        long,
        env = "OPSEC_S3_ENDPOINT_ALLOWLIST",
        value_delimiter = ',',
        default_value = "https://*.amazonaws.com"
    )]
    pub s3_endpoint_allowlist: Vec<String>,

    /// Address ranges an S3 endpoint may not resolve into unless the allowlist names it exactly
    /// (comma-separated CIDRs): the cluster's pod and service ranges and private networks.
    /// Loopback, link-local, unspecified and multicast addresses are always restricted.
    #[arg(
        long,
        env = "OPSEC_RESTRICTED_CIDRS",
        value_delimiter = ',',
        default_value = "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,100.64.0.0/10,fc00::/7"
    )]
    pub restricted_cidrs: Vec<String>,

    /// Secret in the operator's namespace holding its Ed25519 signing keyring (created with a
    /// fresh key when absent): entries `<name>.key` (private keys), `<name>.pub` (public keys
    /// still trusted) and `active` (the entry that signs new manifests).
    #[arg(
        long,
        env = "OPSEC_SIGNING_SECRET",
        default_value = "opsec-signing-keys"
    )]
    pub signing_secret: String,

    /// The operator's own namespace (POD_NAMESPACE in a cluster): where its signing keyring lives.
    #[arg(
        long = "operator-namespace",
        env = "POD_NAMESPACE",
        default_value = "default"
    )]
    pub operator_namespace: String,
}

/// How log lines are written.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable text.
    Text,
    /// One JSON object per line.
    Json,
}

fn parse_std_duration(s: &str) -> Result<std::time::Duration, String> {
    crate::api::common::parse_duration(s).map_err(|e| e.to_string())
}

impl RunArgs {
    /// Whether the controller `name` is to run.
    pub fn runs(&self, name: &str) -> bool {
        self.controllers.iter().any(|c| c == "all" || c == name)
    }

    /// Refuses unknown controller names, so a typo does not silently disable a controller.
    pub fn check_controllers(&self) -> Result<(), String> {
        for c in &self.controllers {
            let known = crate::controller::names();
            if c != "all" && c != "none" && !known.contains(&c.as_str()) {
                return Err(format!(
                    "unknown controller {c:?}: expected all, none or one of {known:?}"
                ));
            }
        }
        Ok(())
    }
}
