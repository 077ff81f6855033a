//! Shared helpers of the integration tests: a client for the real API server named by
//! KUBECONFIG (started by `make test`), CRD installation the way a user does it, and namespaces
//! of each test's own so tests run in parallel without touching each other.
#![allow(dead_code)]

pub mod s3;

use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};

/// A client for the test control plane. Fails the test (never skips it) when there is none.
pub async fn client() -> Client {
    opsec_operator::install_crypto_provider();
    let kubeconfig = std::env::var("KUBECONFIG").unwrap_or_default();
    assert!(
        !kubeconfig.is_empty(),
        "KUBECONFIG is not set: integration tests need a real API server; run them with `make test`, which starts one"
    );
    Client::try_default()
        .await
        .unwrap_or_else(|e| panic!("no client for KUBECONFIG={kubeconfig}: {e}"))
}

/// Path of the repository root.
pub fn repo_root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs kubectl against the test control plane and returns (success, stdout, stderr).
pub fn kubectl(args: &[&str]) -> (bool, String, String) {
    let out = Command::new("kubectl")
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("kubectl must be installed to run the integration tests");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Installs crds/ with `kubectl apply -f crds/` (the path a user takes) once per test binary and
/// waits until every CRD is Established.
pub fn install_crds() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let (ok, out, err) =
            kubectl(&["apply", "--server-side", "--force-conflicts", "-f", "crds/"]);
        assert!(ok, "kubectl apply -f crds/ failed:\n{out}\n{err}");
        let (ok, out, err) = kubectl(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "-f",
            "crds/",
        ]);
        assert!(ok, "CRDs did not become Established:\n{out}\n{err}");
    });
}

/// A name no other test (or earlier run) uses: `<prefix>-<random>`.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "{prefix}-{:x}{:x}{n}",
        std::process::id() % 0xfff,
        nanos % 0xfffff
    )
}

/// Creates a namespace of the test's own with the given labels and returns its name.
pub async fn namespace(client: &Client, prefix: &str, labels: &[(&str, &str)]) -> String {
    let name = unique(prefix);
    let api: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        },
        ..Default::default()
    };
    api.create(&PostParams::default(), &ns)
        .await
        .expect("create test namespace");
    name
}

/// Deletes a test namespace (the namespace controller finishes the deletion).
/// The ids of the backups a store holds for `policy` in `namespace` (complete copies only), sorted.
pub async fn stored_backup_ids(
    store: &opsec_operator::backup::Store,
    namespace: &str,
    policy: &str,
) -> Result<Vec<String>, opsec_operator::backup::StoreError> {
    let mut ids: Vec<String> = store
        .list_backups(namespace, policy)
        .await?
        .into_iter()
        .map(|e| e.backup_id)
        .collect();
    ids.sort();
    Ok(ids)
}

pub async fn delete_namespace(client: &Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let _ = api.delete(name, &DeleteParams::default()).await;
}

/// Polls `check` every 100 ms until it returns Some, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts one `opsec-operator run` for this test binary (running only `controllers`, with a
/// Lease of its own) and returns its admin port. It stops when the test process exits: its
/// standard input is a pipe this process holds, and `--exit-on-stdin-close` ends it when that
/// pipe closes.
pub fn operator(controllers: &str) -> u16 {
    use std::process::{Child, ChildStdin, Stdio};
    static OPERATOR: OnceLock<(u16, std::sync::Mutex<(Child, ChildStdin)>)> = OnceLock::new();
    let (port, _) = OPERATOR.get_or_init(|| {
        let port = free_port();
        let log = std::env::temp_dir().join(format!(
            "opsec-operator-{}-{}.log",
            controllers.replace(',', "-"),
            std::process::id()
        ));
        let log_file = std::fs::File::create(&log).expect("operator log file");
        eprintln!("operator log: {}", log.display());
        let mut child = Command::new(env!("CARGO_BIN_EXE_opsec-operator"))
            .args(["run", "--controllers", controllers, "--exit-on-stdin-close"])
            .args(["--admin-addr", &format!("127.0.0.1:{port}")])
            .args([
                "--lease-name",
                &unique("opsec-test"),
                "--lease-duration",
                "10s",
            ])
            .env("RUST_LOG", "info,opsec_operator=debug")
            .stdin(Stdio::piped())
            .stdout(log_file.try_clone().expect("log file"))
            .stderr(log_file)
            .spawn()
            .expect("start opsec-operator");
        let stdin = child.stdin.take().expect("operator stdin");
        (port, std::sync::Mutex::new((child, stdin)))
    });
    *port
}
