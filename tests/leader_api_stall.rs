//! A leader whose API server stops answering stands down before its Lease can expire, against
//! the real API server: kube-apiserver is frozen with SIGSTOP (its connections stay open and
//! silent, the worst case for a client) past the lease duration while one operator leads and
//! another stands by. The leader must stop acting before its Lease runs out, so two replicas
//! never act together; once the API server is back, the standby takes over. A test binary of
//! its own: it freezes the API server every other test uses. Needs the local control plane of
//! `make test` (it signals that kube-apiserver process).

mod common;

use std::process::{Child, Stdio};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LEASE_SECONDS: u64 = 6;

/// The kube-apiserver process serving KUBECONFIG (by its `--secure-port`).
fn apiserver_pid() -> u32 {
    let port = common::apiserver_port();
    common::process_with("kube-apiserver", &format!("--secure-port={port}")).unwrap_or_else(|| {
        panic!(
            "no local kube-apiserver serves port {port}: this test freezes the API server \
             process, so it needs the control plane `make test` starts"
        )
    })
}

struct Operator {
    child: Child,
    port: u16,
    log: std::path::PathBuf,
}

impl Operator {
    fn start(lease: &str, identity: &str) -> Self {
        let port = common::free_port();
        let log = std::env::temp_dir().join(format!("{identity}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = common::operator_command("none", lease)
            .args([
                "--admin-addr",
                &format!("127.0.0.1:{port}"),
                "--identity",
                identity,
            ])
            .args([
                "--lease-duration",
                &format!("{LEASE_SECONDS}s"),
                "--lease-retry",
                "1s",
            ])
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("start opsec-operator");
        Self { child, port, log }
    }

    async fn ready_as(&self, role: &str) {
        common::eventually(
            Duration::from_secs(60),
            &format!("ready as {role}"),
            || async {
                let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                    .await
                    .ok()?;
                s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    .await
                    .ok()?;
                let mut buf = Vec::new();
                s.read_to_end(&mut buf).await.ok()?;
                let text = String::from_utf8_lossy(&buf);
                (text.starts_with("HTTP/1.1 200") && text.contains(role)).then_some(())
            },
        )
        .await;
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

fn holder(l: &Lease) -> Option<String> {
    l.spec
        .as_ref()?
        .holder_identity
        .clone()
        .filter(|h| !h.is_empty())
}

#[tokio::test]
async fn a_leader_whose_api_server_stalls_stands_down_before_its_lease_expires() {
    let client = common::client().await;
    common::install_crds();
    let lease = common::unique("stall");
    let leases: Api<Lease> = Api::namespaced(client.clone(), common::OPERATOR_NAMESPACE);
    let mut a = Operator::start(&lease, &format!("{lease}-a"));
    a.ready_as("leading").await;
    let b = Operator::start(&lease, &format!("{lease}-b"));
    b.ready_as("standby").await;

    let frozen = common::Frozen::stop(apiserver_pid());
    // Wait past the lease duration, watching for the leader to stop.
    let mut stood_down = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(LEASE_SECONDS + 3);
    while std::time::Instant::now() < deadline {
        if stood_down.is_none() && a.child.try_wait().unwrap().is_some() {
            stood_down = Some(Timestamp::now());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(frozen);
    let stood_down = stood_down.unwrap_or_else(|| {
        panic!(
            "the leader still ran after its API server stalled past the lease duration\n{}",
            a.logs()
        )
    });
    assert!(a.logs().contains("lost the leader Lease"), "{}", a.logs());

    // Its Lease, as the API server kept it: the leader stopped acting before it ran out.
    let l = leases.get(&lease).await.expect("the Lease");
    let last_renew = l
        .spec
        .as_ref()
        .and_then(|s| s.renew_time.clone())
        .unwrap()
        .0;
    let expiry = last_renew + jiff::SignedDuration::from_secs(LEASE_SECONDS as i64);
    println!(
        "leader stood down {:?} after its last renewal (lease {LEASE_SECONDS}s)",
        stood_down.duration_since(last_renew)
    );
    assert!(
        stood_down < expiry,
        "the leader stood down at {stood_down}, after its Lease ran out at {expiry}"
    );
    // The standby takes over once the API server answers again, never before the expiry.
    let taken = common::eventually(Duration::from_secs(30), "b to take the Lease", || async {
        let l = leases.get(&lease).await.ok()?;
        (holder(&l).as_deref() == Some(&format!("{lease}-b"))).then_some(l)
    })
    .await;
    let acquired = taken.spec.and_then(|s| s.acquire_time).unwrap().0;
    assert!(
        acquired >= expiry,
        "b took over at {acquired}, before {expiry}"
    );
    b.ready_as("leading").await;
}
