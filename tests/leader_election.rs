//! Two real `opsec-operator run` processes against the real API server: one leads, the other
//! stands by (ready), takes over when the leader dies (never before its Lease expires, and
//! within the lease duration), and a leader that gets SIGTERM hands over at once by releasing
//! the Lease.

mod common;

use std::process::{Child, Command};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;

const LEASE_SECONDS: u64 = 4;

struct Operator {
    child: Child,
    port: u16,
    identity: String,
    log: std::path::PathBuf,
}

impl Operator {
    fn start(lease: &str, namespace: &str, identity: &str) -> Self {
        let port = common::free_port();
        let log = std::env::temp_dir().join(format!("{identity}.log"));
        let log_file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_opsec-operator"))
            .args(["run", "--log-format", "json", "--controllers", "none"])
            .args(["--admin-addr", &format!("127.0.0.1:{port}")])
            .args([
                "--lease-name",
                lease,
                "--lease-namespace",
                namespace,
                "--identity",
                identity,
            ])
            .args([
                "--lease-duration",
                &format!("{LEASE_SECONDS}s"),
                "--lease-retry",
                "1s",
            ])
            .stderr(log_file.try_clone().expect("log file"))
            .stdout(log_file)
            .spawn()
            .expect("start opsec-operator");
        Self {
            child,
            port,
            identity: identity.into(),
            log,
        }
    }

    async fn get(&self, path: &str) -> Option<(u16, String)> {
        common::http_get(self.port, path, None).await
    }

    /// `/metrics` as a scraper allowed to read it.
    async fn metrics(&self) -> Option<(u16, String)> {
        common::http_get(self.port, "/metrics", Some(&common::metrics_token())).await
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill {sig} {}", self.child.id());
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.1 GET on loopback: (status, body).
fn holder(lease: &Lease) -> Option<String> {
    lease
        .spec
        .as_ref()?
        .holder_identity
        .clone()
        .filter(|h| !h.is_empty())
}

async fn wait_ready_as(op: &Operator, role: &str) {
    let what = format!("{} to be ready as {role}", op.identity);
    common::eventually(Duration::from_secs(60), &what, || async {
        match op.get("/readyz").await {
            Some((200, body)) if body.contains(role) => Some(()),
            _ => None,
        }
    })
    .await;
}

#[tokio::test]
async fn standby_takes_over_when_the_leader_dies_but_not_before_its_lease_expires() {
    let client = common::client().await;
    common::install_crds();
    let ns = common::namespace(&client, "lease", &[]).await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let lease_name = "opsec-operator";

    let a = Operator::start(lease_name, &ns, &format!("{ns}-a"));
    wait_ready_as(&a, "leading").await;
    let b = Operator::start(lease_name, &ns, &format!("{ns}-b"));
    wait_ready_as(&b, "standby").await;

    let lease = leases.get(lease_name).await.expect("lease exists");
    assert_eq!(holder(&lease).as_deref(), Some(a.identity.as_str()));
    let (_, metrics_a) = a.metrics().await.expect("metrics of a");
    let (_, metrics_b) = b.metrics().await.expect("metrics of b");
    assert!(metrics_a.contains("opsec_leader 1"), "{metrics_a}");
    assert!(metrics_b.contains("opsec_leader 0"), "{metrics_b}");

    // Watch the Lease closely so that the last renewal by `a` is known, then kill it hard.
    let mut last_renew_by_a = lease
        .spec
        .as_ref()
        .and_then(|s| s.renew_time.clone())
        .expect("renewTime")
        .0;
    for _ in 0..15 {
        let l = leases.get(lease_name).await.expect("lease");
        if let Some(t) = l.spec.as_ref().and_then(|s| s.renew_time.clone()) {
            last_renew_by_a = last_renew_by_a.max(t.0);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut a = a;
    a.signal("-KILL");
    let killed_at = Timestamp::now();
    let _ = a.child.wait();

    let taken = common::eventually(Duration::from_secs(30), "b to take the Lease", || async {
        let l = leases.get(lease_name).await.ok()?;
        (holder(&l).as_deref() == Some(b.identity.as_str())).then_some(l)
    })
    .await;
    let acquired = taken
        .spec
        .as_ref()
        .and_then(|s| s.acquire_time.clone())
        .expect("acquireTime")
        .0;
    let lease_duration = jiff::SignedDuration::from_secs(LEASE_SECONDS as i64);
    let after_last_renew = acquired.duration_since(last_renew_by_a);
    let after_kill = acquired.duration_since(killed_at);
    println!(
        "takeover {after_kill:?} after the kill, {after_last_renew:?} after a's last renewal (lease {LEASE_SECONDS}s)"
    );
    // Safety: b never acts while a's Lease is still valid.
    assert!(
        after_last_renew >= lease_duration - jiff::SignedDuration::from_millis(100),
        "b took the Lease {after_last_renew:?} after a's last renewal, before it expired"
    );
    // Liveness: b takes over within the lease duration of the death (plus scheduling slack on a
    // shared machine).
    assert!(
        after_kill <= lease_duration + jiff::SignedDuration::from_secs(3),
        "b took over only {after_kill:?} after the leader died\n{}",
        b.logs()
    );
    assert_eq!(
        taken.spec.as_ref().and_then(|s| s.lease_transitions),
        Some(1)
    );
    wait_ready_as(&b, "leading").await;
    let (_, metrics_b) = b.metrics().await.expect("metrics of b");
    assert!(metrics_b.contains("opsec_leader 1"), "{metrics_b}");
    common::delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn a_leader_stopped_with_sigterm_releases_the_lease_and_the_standby_takes_over_at_once() {
    let client = common::client().await;
    common::install_crds();
    let ns = common::namespace(&client, "lease", &[]).await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let lease_name = "opsec-operator";

    let mut a = Operator::start(lease_name, &ns, &format!("{ns}-a"));
    wait_ready_as(&a, "leading").await;
    let b = Operator::start(lease_name, &ns, &format!("{ns}-b"));
    wait_ready_as(&b, "standby").await;

    a.signal("-TERM");
    let status = tokio::task::spawn_blocking(move || {
        let status = a.child.wait();
        (status, a)
    })
    .await
    .expect("join");
    let (status, a) = status;
    let status = status.expect("wait for a");
    assert!(
        status.success(),
        "a exited with {status:?} on SIGTERM\n{}",
        a.logs()
    );
    let logs = a.logs();
    assert!(logs.contains("released the leader Lease"), "{logs}");

    let released_at = Timestamp::now();
    let taken = common::eventually(
        Duration::from_secs(30),
        "b to take the released Lease",
        || async {
            let l = leases.get(lease_name).await.ok()?;
            (holder(&l).as_deref() == Some(b.identity.as_str())).then_some(l)
        },
    )
    .await;
    let acquired = taken
        .spec
        .as_ref()
        .and_then(|s| s.acquire_time.clone())
        .expect("acquireTime")
        .0;
    let waited = acquired.duration_since(released_at);
    println!("standby took the released Lease {waited:?} after a stopped");
    // Without the release, b would have waited for the full lease duration.
    assert!(
        waited < jiff::SignedDuration::from_secs(LEASE_SECONDS as i64),
        "b waited {waited:?}: the Lease was not released\n{}",
        b.logs()
    );
    drop(b);
    common::delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn metrics_are_served_only_to_callers_the_api_server_authenticates_and_allows() {
    let client = common::client().await;
    common::install_crds();
    let ns = common::namespace(&client, "lease", &[]).await;
    let a = Operator::start("opsec-operator", &ns, &format!("{ns}-a"));
    wait_ready_as(&a, "leading").await;
    // Probes stay open; /metrics wants a token the API server accepts ...
    assert_eq!(a.get("/healthz").await.map(|r| r.0), Some(200));
    let (status, _) = a.get("/metrics").await.expect("an answer");
    assert_eq!(status, 401);
    let (status, _) = common::http_get(a.port, "/metrics", Some("not-a-token"))
        .await
        .unwrap();
    assert_eq!(status, 401);
    // ... of an account allowed to get /metrics.
    let _ = common::kubectl(&[
        "create",
        "serviceaccount",
        "nobody",
        "-n",
        common::OPERATOR_NAMESPACE,
    ]);
    let (status, body) = common::http_get(a.port, "/metrics", Some(&common::token_of("nobody")))
        .await
        .unwrap();
    assert_eq!(status, 403, "{body}");
    let (status, body) = a.metrics().await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("opsec_leader 1"), "{body}");
    common::delete_namespace(&client, &ns).await;
}
