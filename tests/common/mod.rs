//! Shared helpers of the integration tests: a client for the real API server named by
//! KUBECONFIG (started by `make test`), CRD installation the way a user does it, and namespaces
//! of each test's own so tests run in parallel without touching each other.
#![allow(dead_code)]

pub mod backups;
pub mod kinds;
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

/// A client acting as `user` (impersonated by the test's admin), judged by RBAC as that user.
pub async fn client_as(user: &str) -> Client {
    opsec_operator::install_crypto_provider();
    let mut config = kube::Config::infer().await.expect("kubeconfig");
    config.auth_info.impersonate = Some(user.into());
    Client::try_from(config).expect("impersonating client")
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

/// Deletes a test namespace (the namespace controller finishes the deletion).
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

/// The pid of the local process whose program ends with `program` and whose arguments include
/// `arg` (a server of the test environment, to signal it).
pub fn process_with(program: &str, arg: &str) -> Option<u32> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.first().is_some_and(|a| a.ends_with(program)) && args.iter().any(|a| a == arg) {
            return Some(pid);
        }
    }
    None
}

/// Sends `signal` (`-STOP`, `-CONT`, `-KILL`) to `pid`.
pub fn signal(pid: u32, signal: &str) {
    let ok = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill {signal} {pid}");
}

/// An operator process a test started itself: killed however the test ends, so that a failed
/// test leaves no operator acting on the next tests' objects.
pub struct OperatorProcess(pub std::process::Child);

impl OperatorProcess {
    /// Kills it with SIGKILL (a crash, for the tests that simulate one) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Resumes a process stopped with SIGSTOP however the test ends.
pub struct Frozen(pub u32);

impl Frozen {
    /// Stops `pid` with SIGSTOP until the guard drops.
    pub fn stop(pid: u32) -> Self {
        signal(pid, "-STOP");
        Self(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        signal(self.0, "-CONT");
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

/// The operator's namespace in the tests, as config/rbac names it.
pub const OPERATOR_NAMESPACE: &str = "opsec-system";
/// The ServiceAccount tenant work acts as by default (the operator's default, which
/// config/rbac lets it impersonate).
pub const TENANT_ACCOUNT: &str = "opsec-tenant";

/// A kubeconfig for the operator's own ServiceAccount with the shipped RBAC applied
/// (`kubectl apply -k config/rbac`, as a user installs it), made once per test binary: the
/// operator under test holds exactly the rights it ships with, never the test's admin rights.
pub fn operator_kubeconfig() -> std::path::PathBuf {
    static PATH: OnceLock<std::path::PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let (_, _, _) = kubectl(&["create", "namespace", OPERATOR_NAMESPACE]);
        let (ok, out, err) = kubectl(&["apply", "--server-side", "--force-conflicts", "-k", "config/rbac"]);
        assert!(ok, "kubectl apply -k config/rbac failed:\n{out}\n{err}");
        let (ok, token, err) = kubectl(&[
            "create", "token", "opsec-operator", "-n", OPERATOR_NAMESPACE, "--duration", "24h",
        ]);
        assert!(ok, "kubectl create token failed: {err}");
        let (ok, view, err) = kubectl(&["config", "view", "--raw", "--minify", "-o", "json"]);
        assert!(ok, "kubectl config view failed: {err}");
        let view: serde_json::Value = serde_json::from_str(&view).expect("kubeconfig JSON");
        let cluster = &view["clusters"][0]["cluster"];
        let config = serde_json::json!({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "test", "cluster": cluster}],
            "users": [{"name": "opsec-operator", "user": {"token": token.trim()}}],
            "contexts": [{"name": "operator", "context": {"cluster": "test", "user": "opsec-operator"}}],
            "current-context": "operator",
        });
        let path = std::env::temp_dir().join(format!("opsec-operator-{}.kubeconfig", std::process::id()));
        std::fs::write(&path, serde_json::to_vec(&config).unwrap()).expect("write kubeconfig");
        path
    })
    .clone()
}

/// The root of the test operator's local stores (`--local-store-root`), one per test binary.
pub fn local_root() -> std::path::PathBuf {
    static ROOT: OnceLock<std::path::PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let root = std::env::temp_dir().join(format!("opsec-local-{}", std::process::id()));
        std::fs::create_dir_all(&root).expect("local store root");
        root
    })
    .clone()
}

/// A bearer token allowed to scrape the operator's /metrics: of the ServiceAccount
/// `opsec-metrics-scraper`, bound to the shipped ClusterRole `opsec-operator-metrics-reader`.
pub fn metrics_token() -> String {
    static TOKEN: OnceLock<String> = OnceLock::new();
    TOKEN
        .get_or_init(|| {
            operator_kubeconfig();
            let _ = kubectl(&[
                "create",
                "serviceaccount",
                "opsec-metrics-scraper",
                "-n",
                OPERATOR_NAMESPACE,
            ]);
            let _ = kubectl(&[
                "create",
                "clusterrolebinding",
                "opsec-metrics-scraper",
                "--clusterrole=opsec-operator-metrics-reader",
                &format!("--serviceaccount={OPERATOR_NAMESPACE}:opsec-metrics-scraper"),
            ]);
            token_of("opsec-metrics-scraper")
        })
        .clone()
}

/// A token of ServiceAccount `name` in [`OPERATOR_NAMESPACE`].
pub fn token_of(name: &str) -> String {
    let (ok, token, err) = kubectl(&[
        "create",
        "token",
        name,
        "-n",
        OPERATOR_NAMESPACE,
        "--duration",
        "1h",
    ]);
    assert!(ok, "kubectl create token {name}: {err}");
    token.trim().to_string()
}

/// Where the test operator looks for mounted claims (`--pvc-root`), one per test binary.
pub fn pvc_root() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("opsec-pvc-{}", std::process::id()))
}

/// Gives namespace `ns` the ServiceAccount tenant work acts as, bound to the built-in `admin`
/// role there: the rights a tenant admin has in its own namespace, and no more.
pub async fn tenant_account(ns: &str) {
    let manifest = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": TENANT_ACCOUNT, "namespace": ns}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": TENANT_ACCOUNT, "namespace": ns},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
         "subjects": [{"kind": "ServiceAccount", "name": TENANT_ACCOUNT, "namespace": ns}]}
    ]});
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), serde_json::to_vec(&manifest).unwrap()).unwrap();
    let (ok, out, err) = kubectl(&["apply", "-f", file.path().to_str().unwrap()]);
    assert!(
        ok,
        "creating the tenant ServiceAccount in {ns}: {out} {err}"
    );
}

/// Binds the tenant ServiceAccount of `account_ns` to `admin` in `ns`: a tenant letting its
/// work in one namespace write into another of its namespaces.
pub async fn bind_admin(ns: &str, account_ns: &str) {
    let binding = serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": format!("{TENANT_ACCOUNT}-from-{account_ns}"), "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
        "subjects": [{"kind": "ServiceAccount", "name": TENANT_ACCOUNT, "namespace": account_ns}]});
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), serde_json::to_vec(&binding).unwrap()).unwrap();
    let (ok, out, err) = kubectl(&["apply", "-f", file.path().to_str().unwrap()]);
    assert!(
        ok,
        "binding {account_ns}'s tenant ServiceAccount in {ns}: {out} {err}"
    );
}

/// The operator's active signing key (its keyring Secret in [`OPERATOR_NAMESPACE`], created
/// here as the operator would when it does not exist yet): for tests that seed a store as the
/// operator would have written it.
pub async fn operator_signing_key(client: &Client) -> ed25519_dalek::SigningKey {
    use k8s_openapi::api::core::v1::Secret;
    use opsec_operator::backup::SigningKeyring;
    operator_kubeconfig();
    let api: Api<Secret> = Api::namespaced(client.clone(), OPERATOR_NAMESPACE);
    let secret = match api
        .get_opt("opsec-signing-keys")
        .await
        .expect("read keyring")
    {
        Some(s) => s,
        None => {
            let entries = SigningKeyring::generate("k1").unwrap();
            let fresh: Secret = serde_json::from_value(serde_json::json!({
                "metadata": {"name": "opsec-signing-keys"},
                "stringData": entries.iter().map(|(k, v)| (k.clone(), String::from_utf8(v.clone()).unwrap())).collect::<std::collections::BTreeMap<_, _>>(),
            }))
            .unwrap();
            match api.create(&PostParams::default(), &fresh).await {
                Ok(s) => s,
                Err(_) => api.get("opsec-signing-keys").await.expect("read keyring"),
            }
        }
    };
    let entries = opsec_operator::controller::backup::signing::secret_entries(&secret);
    SigningKeyring::from_entries(&entries)
        .expect("the operator's keyring")
        .active()
        .clone()
}

/// The arguments of an operator under test: its ServiceAccount's kubeconfig is passed as
/// KUBECONFIG by [`operator_command`].
pub fn operator_command(controllers: &str, lease: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_opsec-operator"));
    cmd.args(["run", "--controllers", controllers])
        .args([
            "--lease-name",
            lease,
            "--lease-namespace",
            OPERATOR_NAMESPACE,
        ])
        .args(["--operator-namespace", OPERATOR_NAMESPACE])
        .arg("--local-store-root")
        .arg(local_root())
        .arg("--pvc-root")
        .arg(pvc_root())
        .env("KUBECONFIG", operator_kubeconfig())
        .env("RUST_LOG", "info,opsec_operator=debug");
    let mut allowed = vec![format!("http://127.0.0.1:{}", relay_port())];
    if let Ok(endpoint) = std::env::var("OPSEC_S3_ENDPOINT") {
        allowed.push(endpoint.trim_end_matches('/').to_string());
    }
    cmd.args(["--s3-endpoint-allowlist", &allowed.join(",")]);
    cmd
}

/// A loopback port the test operator's S3 allowlist names besides the real S3 server's: a test
/// brings an S3 relay up and down on it (an off-site store that is down, then back). It lies
/// below the kernel's ephemeral range (32768 and up), so that while it is free between those
/// tests no socket bound to port 0 (an S3 server's, a client's) is given it.
pub fn relay_port() -> u16 {
    static PORT: OnceLock<u16> = OnceLock::new();
    *PORT.get_or_init(|| {
        let start = 20_000 + (std::process::id() % 10_000) as u16;
        (0..10_000u16)
            .map(|i| 20_000 + (start - 20_000 + i) % 10_000)
            .find(|port| std::net::TcpListener::bind(("127.0.0.1", *port)).is_ok())
            .expect("a free loopback port between 20000 and 30000")
    })
}

/// Starts an operator of a test's own (it is killed when the returned guard drops): running
/// `controllers` with Lease `lease`, `extra` arguments after, its log in a file of its own,
/// and its admin port.
pub fn start_operator(controllers: &str, lease: &str, extra: &[&str]) -> (OperatorProcess, u16) {
    use std::process::Stdio;
    let port = free_port();
    let log = std::env::temp_dir().join(format!("{lease}-{}.log", unique("run")));
    eprintln!("operator log: {}", log.display());
    let file = std::fs::File::create(&log).expect("operator log file");
    let child = operator_command(controllers, lease)
        .args(["--admin-addr", &format!("127.0.0.1:{port}")])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("operator log file"))
        .stderr(file)
        .spawn()
        .expect("start opsec-operator");
    (OperatorProcess(child), port)
}

/// The port of the API server KUBECONFIG names (a local control plane's, in `make test`).
pub fn apiserver_port() -> String {
    let (ok, server, err) = kubectl(&[
        "config",
        "view",
        "--minify",
        "-o",
        "jsonpath={.clusters[0].cluster.server}",
    ]);
    assert!(ok, "{err}");
    server
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Starts one `opsec-operator run` for this test binary (running only `controllers`, with a
/// Lease of its own, as its own ServiceAccount) and returns its admin port. It stops when the
/// test process exits: its standard input is a pipe this process holds, and
/// `--exit-on-stdin-close` ends it when that pipe closes.
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
        let mut child = operator_command(controllers, &unique("opsec-test"))
            .arg("--exit-on-stdin-close")
            .args(["--admin-addr", &format!("127.0.0.1:{port}")])
            .args(["--lease-duration", "10s"])
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

/// The state of a Backup's copy in storage location `name` (`Written`, `Verified`, ...).
pub fn location_state(b: &opsec_operator::api::Backup, name: &str) -> Option<String> {
    b.status
        .as_ref()?
        .locations
        .iter()
        .find(|l| l.name == name)
        .map(|l| l.state.to_string())
}

/// `GET path` on the operator's admin port (with a bearer token when given): the status code
/// and body, or `None` when it did not answer.
pub async fn http_get(port: u16, path: &str, token: Option<&str>) -> Option<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Connection: close\r\n\r\n");
    tokio::io::AsyncWriteExt::write_all(&mut stream, req.as_bytes())
        .await
        .ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut buf),
    )
    .await
    .ok()?
    .ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// Puts a ValidatingAdmissionPolicy (and its binding) in force for namespace `ns`: requests
/// matching `rule` (a `resourceRules` entry) are denied with `message` unless `expression`
/// holds. Returns its name (`kubectl delete validatingadmissionpolicybinding,...` it after).
/// Policies take effect within a second or two: wait for a probe request to be refused.
pub fn deny_in_namespace(
    ns: &str,
    prefix: &str,
    rule: serde_json::Value,
    expression: &str,
    message: &str,
) -> String {
    let name = unique(prefix);
    let policy = serde_json::json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {"failurePolicy": "Fail", "matchConstraints": {"resourceRules": [rule]},
            "validations": [{"expression": expression, "message": message}]}});
    let binding = serde_json::json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {"policyName": name, "validationActions": ["Deny"],
            "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}}}});
    let file = tempfile::NamedTempFile::new().unwrap();
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": [policy, binding]});
    std::fs::write(file.path(), serde_json::to_vec(&list).unwrap()).unwrap();
    let (ok, out, err) = kubectl(&["apply", "-f", file.path().to_str().unwrap()]);
    assert!(ok, "{out} {err}");
    name
}
