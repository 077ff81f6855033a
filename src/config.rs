//! Settings of `opsec-operator run`, from flags or environment variables.

use std::net::SocketAddr;

/// Flags of `opsec-operator run`; each can also come from the environment variable it names.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Address of the admin port (/healthz, /readyz, /metrics).
    #[arg(long, env = "OPSEC_ADMIN_ADDR", default_value = "0.0.0.0:8080")]
    pub admin_addr: SocketAddr,

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

/// Names of the controllers `--controllers` accepts.
pub const CONTROLLERS: &[&str] = &["baseline", "backup"];

impl RunArgs {
    /// Whether the controller `name` is to run.
    pub fn runs(&self, name: &str) -> bool {
        self.controllers.iter().any(|c| c == "all" || c == name)
    }

    /// Refuses unknown controller names, so a typo does not silently disable a controller.
    pub fn check_controllers(&self) -> Result<(), String> {
        for c in &self.controllers {
            if c != "all" && c != "none" && !CONTROLLERS.contains(&c.as_str()) {
                return Err(format!(
                    "unknown controller {c:?}: expected all, none or one of {CONTROLLERS:?}"
                ));
            }
        }
        Ok(())
    }
}
