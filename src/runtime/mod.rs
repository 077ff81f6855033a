//! `opsec-operator run`: the process around the controllers. It serves the admin port, waits for
//! the CRDs to be Established, takes part in leader election, starts the controllers only while
//! leading, and shuts down gracefully on SIGTERM (releasing the Lease so a standby takes over).

pub mod admin;
pub mod lease;
pub mod metrics_auth;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, Client};
use tokio::sync::watch;
use tracing::{error, info};

use crate::config::RunArgs;
use crate::metrics::Metrics;
use lease::{LeaderElector, LeaseError, Role};

/// Why `run` stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("no Kubernetes client configuration (kubeconfig or in-cluster)")]
    Client(#[source] kube::Error),
    #[error("cannot bind the admin port {addr}")]
    AdminBind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "CRD {name} is not Established after {timeout:?}: install the CRDs (kubectl apply -f crds/)"
    )]
    CrdsMissing { name: String, timeout: Duration },
    #[error(transparent)]
    Lease(#[from] LeaseError),
    #[error("invalid --controllers: {0}")]
    Controllers(String),
    #[error("invalid tenancy settings")]
    Tenancy(#[source] crate::backup::EndpointError),
    #[error("no Kubernetes client configuration (kubeconfig or in-cluster)")]
    Config(#[source] kube::config::InferConfigError),
    #[error("leader election task ended unexpectedly")]
    LeaseTask(#[source] tokio::task::JoinError),
}

/// What `/readyz` and `/metrics` read.
pub struct RuntimeState {
    pub metrics: Arc<Metrics>,
    /// Reviews `/metrics` callers; `None` when `--metrics-auth=false`.
    pub metrics_auth: Option<metrics_auth::MetricsAuth>,
    synced: Arc<crate::controller::Synced>,
    crds_established: AtomicBool,
    role: watch::Receiver<Role>,
}

impl RuntimeState {
    /// Ready once the CRDs are Established and the replica is leading or standing by.
    pub fn readiness(&self) -> Result<&'static str, &'static str> {
        if !self.crds_established.load(Ordering::Acquire) {
            return Err("waiting for CRDs to be Established");
        }
        match *self.role.borrow() {
            Role::Leading if !self.synced.pending().is_empty() => {
                Err("leading; controller caches not synced yet")
            }
            Role::Leading => Ok("leading"),
            Role::Standby => Ok("standby"),
            Role::Starting => Err("leader election has not completed a round"),
        }
    }
}

/// Runs the operator until SIGTERM or SIGINT.
pub async fn run(args: RunArgs) -> Result<(), crate::Error> {
    crate::telemetry::init(args.log_format);
    args.check_controllers()
        .map_err(RuntimeError::Controllers)?;
    let config = kube::Config::infer().await.map_err(RuntimeError::Config)?;
    let client = Client::try_from(config.clone()).map_err(RuntimeError::Client)?;
    let tenancy = Arc::new(
        crate::controller::tenant::Tenancy::new(config, &args.tenancy)
            .map_err(RuntimeError::Tenancy)?,
    );
    let identity = args.identity.clone().unwrap_or_else(default_identity);
    info!(%identity, lease = %args.lease_name, namespace = %args.lease_namespace, "starting");

    let metrics = Arc::new(Metrics::new(&crate::controller::metric_registrations()));
    let (role_tx, role_rx) = watch::channel(Role::Starting);
    let synced = Arc::new(crate::controller::Synced::default());
    let state = Arc::new(RuntimeState {
        metrics: metrics.clone(),
        metrics_auth: args
            .metrics_auth
            .then(|| metrics_auth::MetricsAuth::new(client.clone())),
        synced: synced.clone(),
        crds_established: AtomicBool::new(false),
        role: role_rx.clone(),
    });
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    if args.exit_on_stdin_close {
        tokio::spawn(stop_on_stdin_close(shutdown_tx.clone()));
    }
    tokio::spawn(forward_signals(shutdown_tx));

    let listener =
        admin::bind(args.admin_addr)
            .await
            .map_err(|source| RuntimeError::AdminBind {
                addr: args.admin_addr,
                source,
            })?;
    info!(addr = %args.admin_addr, "admin port serving /healthz /readyz /metrics");
    let admin_task = tokio::spawn(admin::serve(listener, state.clone(), shutdown_rx.clone()));

    tokio::select! {
        result = wait_for_crds(&client, args.crd_timeout) => result?,
        _ = wait_shutdown(shutdown_rx.clone()) => return Ok(()),
    }
    state.crds_established.store(true, Ordering::Release);
    info!("CRDs are Established");

    let elector = LeaderElector::new(
        client.clone(),
        &args.lease_namespace,
        &args.lease_name,
        &identity,
        args.lease_duration,
        args.lease_retry,
    );
    let mut lease_task = tokio::spawn(elector.run(role_tx, shutdown_rx.clone()));

    // Wait to lead. A standby stays here, ready, until the leader goes away.
    let mut role_changes = role_rx.clone();
    let leading = tokio::select! {
        r = role_changes.wait_for(|r| *r == Role::Leading) => r.is_ok(),
        _ = wait_shutdown(shutdown_rx.clone()) => false,
        ended = &mut lease_task => return finish_lease(ended, &admin_task).await,
    };
    if leading {
        metrics.leader.set(1);
        let controllers = crate::controller::Controllers::start(
            &args,
            client.clone(),
            tenancy.clone(),
            metrics.clone(),
            synced,
            shutdown_rx.clone(),
        );
        tokio::select! {
            _ = wait_shutdown(shutdown_rx.clone()) => {}
            ended = &mut lease_task => {
                // Lost the Lease while leading: stop at once so that two replicas never act
                // together; the orchestrator restarts us as a candidate.
                metrics.leader.set(0);
                controllers.abort();
                return finish_lease(ended, &admin_task).await;
            }
        }
        info!("shutting down: stopping controllers");
        controllers.stop().await;
        metrics.leader.set(0);
    }
    // The elector sees the same shutdown signal and releases the Lease before it returns.
    let ended = lease_task.await;
    finish_lease(ended, &admin_task).await
}

async fn finish_lease(
    ended: Result<Result<(), LeaseError>, tokio::task::JoinError>,
    admin_task: &tokio::task::JoinHandle<std::io::Result<()>>,
) -> Result<(), crate::Error> {
    admin_task.abort();
    match ended {
        Ok(Ok(())) => {
            info!("stopped");
            Ok(())
        }
        Ok(Err(err)) => {
            error!(error = %err, "leader election failed");
            Err(RuntimeError::Lease(err).into())
        }
        Err(join) => Err(RuntimeError::LeaseTask(join).into()),
    }
}

/// Waits until every CRD of the operator is Established.
async fn wait_for_crds(client: &Client, timeout: Duration) -> Result<(), RuntimeError> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in crate::api::operator_crds() {
        let name = crd.metadata.name.unwrap_or_default();
        let established = await_condition(api.clone(), &name, conditions::is_crd_established());
        match tokio::time::timeout(timeout, established).await {
            Ok(Ok(_)) => {}
            _ => return Err(RuntimeError::CrdsMissing { name, timeout }),
        }
    }
    Ok(())
}

async fn wait_shutdown(mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Turns SIGTERM and SIGINT into the shutdown signal.
async fn forward_signals(shutdown: watch::Sender<bool>) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => info!("SIGTERM received"),
                    _ = ctrl_c => info!("SIGINT received"),
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    shutdown.send_replace(true);
}

/// Turns the end of standard input into the shutdown signal.
async fn stop_on_stdin_close(shutdown: watch::Sender<bool>) {
    use tokio::io::AsyncReadExt;
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 64];
    while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {}
    info!("standard input closed");
    shutdown.send_replace(true);
}

/// The pod name (or host name) and a random suffix, unique per process.
fn default_identity() -> String {
    let base = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "opsec-operator".into());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{base}-{:x}{:04x}", std::process::id(), nanos & 0xffff)
}
