//! A restore test's scratch namespace is a sandbox, and a crash never leaves one behind, against
//! a real API server: a tenant asks for a restore test of a namespace under Pod Security
//! `restricted`; the operator is killed with SIGKILL the moment the scratch namespace appears;
//! that namespace carries the tenant's and Pod Security labels, so a privileged hostPath pod is
//! refused there as in the source; and the restarted operator deletes it and passes the next
//! restore test. A test binary of its own: it starts and kills its operator itself. Needs
//! KUBECONFIG (`make test`).

mod common;

use std::time::Duration;

use base64::Engine as _;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use opsec_operator::api::BackupPolicy;
use opsec_operator::api::backup::BackupPhase;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(90);

fn start(lease: &str) -> common::OperatorProcess {
    common::start_operator(
        "backup",
        lease,
        &["--lease-duration", "4s", "--lease-retry", "1s"],
    )
    .0
}

fn kubectl_apply(ns: &str, obj: &Value) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), serde_json::to_vec(obj).unwrap()).unwrap();
    let (ok, out, err) = common::kubectl(&["apply", "-n", ns, "-f", file.path().to_str().unwrap()]);
    assert!(ok, "{out} {err}");
}

/// A pod that escapes to its node: the host's PID namespace, the host's root filesystem and
/// SYS_ADMIN. (`privileged: true` itself is refused by the test API server's
/// `--allow-privileged=false` before Pod Security is asked, so it would prove nothing here.)
fn privileged_pod() -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "escape"},
        "spec": {"hostPID": true, "containers": [{"name": "c", "image": "registry.example/tool:1",
            "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}},
            "volumeMounts": [{"name": "host", "mountPath": "/host"}]}],
            "volumes": [{"name": "host", "hostPath": {"path": "/"}}]}})
}

/// Whether the API server refuses the privileged pod in `ns` for Pod Security (server dry-run).
fn pod_security_refuses(ns: &str) -> (bool, String) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), serde_json::to_vec(&privileged_pod()).unwrap()).unwrap();
    let (ok, out, err) = common::kubectl(&[
        "create",
        "--dry-run=server",
        "-n",
        ns,
        "-f",
        file.path().to_str().unwrap(),
    ]);
    (
        !ok && err.contains("violates PodSecurity"),
        format!("{out} {err}"),
    )
}

async fn scratch_namespaces(client: &Client, source: &str) -> Vec<Namespace> {
    Api::<Namespace>::all(client.clone())
        .list(&ListParams::default().labels(&format!("opsec.x1642.dev/restore-test-of={source}")))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

async fn ask_for_restore_test(client: &Client, ns: &str, token: &str) {
    Api::<BackupPolicy>::namespaced(client.clone(), ns)
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"opsec.x1642.dev/restore-test-now": token}}}),
            ),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn a_restore_test_runs_in_a_sandbox_that_refuses_privileged_pods_and_a_crash_leaves_no_namespace_behind()
 {
    let client = common::client().await;
    common::install_crds();
    let ns = common::namespace(
        &client,
        "rt-sandbox",
        &[
            ("opsec.x1642.dev/tenant", "acme"),
            ("pod-security.kubernetes.io/enforce", "restricted"),
            ("pod-security.kubernetes.io/enforce-version", "latest"),
        ],
    )
    .await;
    common::tenant_account(&ns).await;
    let (refused, why) = pod_security_refuses(&ns);
    assert!(
        refused,
        "the source namespace itself refuses the pod: {why}"
    );
    kubectl_apply(
        &ns,
        &json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "backup-keys"},
        "stringData": {"enc": base64::engine::general_purpose::STANDARD.encode([3u8; 32])}}),
    );
    // Enough objects that a restore takes a moment, and workloads that must not run there.
    let items: Vec<Value> = (0..300)
        .map(|i| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("cm-{i:03}")}, "data": {"i": i.to_string()}}))
        .chain([
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                    "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "registry.example/web:1"}]}}}}),
            json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "report"},
                "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "Never",
                    "containers": [{"name": "r", "image": "registry.example/report:1"}]}}}}}}),
        ])
        .collect();
    kubectl_apply(
        &ns,
        &json!({"apiVersion": "v1", "kind": "List", "items": items}),
    );
    let p: BackupPolicy = serde_json::from_value(json!({"apiVersion": "opsec.x1642.dev/v1alpha1",
        "kind": "BackupPolicy", "metadata": {"name": "p", "namespace": ns},
        "spec": {"rpo": "1h", "storage": [{"name": "onsite", "local": {"path": "onsite"}}],
            "encryption": {"keySecretRef": {"name": "backup-keys", "key": "enc"}},
            "verification": {"schedule": "@daily", "restoreTest": {"schedule": "@weekly", "timeout": "5m"}}}}))
    .unwrap();
    let policies = Api::<BackupPolicy>::namespaced(client.clone(), &ns);
    policies.create(&PostParams::default(), &p).await.unwrap();

    let lease = common::unique("rt-sandbox");
    let mut operator = start(&lease);
    let backups = Api::<opsec_operator::api::Backup>::namespaced(client.clone(), &ns);
    common::eventually(WAIT, "the first backup", || {
        let backups = backups.clone();
        async move {
            let l = backups.list(&ListParams::default()).await.ok()?;
            l.items
                .iter()
                .any(|b| b.status.as_ref().and_then(|s| s.phase) == Some(BackupPhase::Completed))
                .then_some(())
        }
    })
    .await;

    // The tenant asks for a restore test; the operator dies the moment its sandbox appears. (A
    // restore quicker than the kill deletes its namespace itself: then ask again.)
    let mut left = None;
    for attempt in 0..5 {
        ask_for_restore_test(&client, &ns, &format!("attempt-{attempt}")).await;
        let deadline = tokio::time::Instant::now() + WAIT;
        let scratch = loop {
            let found = scratch_namespaces(&client, &ns).await;
            if let Some(n) = found
                .into_iter()
                .find(|n| n.metadata.deletion_timestamp.is_none())
            {
                break n;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no scratch namespace appeared"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        operator.kill();
        let now = Api::<Namespace>::all(client.clone())
            .get_opt(&scratch.name_any())
            .await
            .unwrap();
        if let Some(n) = now.filter(|n| n.metadata.deletion_timestamp.is_none()) {
            left = Some(n);
            break;
        }
        operator = start(&lease);
    }
    let scratch = left.expect("the operator was killed during a restore test");
    let name = scratch.name_any();
    let labels = scratch.labels();
    assert_eq!(labels["opsec.x1642.dev/tenant"], "acme");
    assert_eq!(labels["pod-security.kubernetes.io/enforce"], "restricted");
    let (refused, why) = pod_security_refuses(&name);
    assert!(
        refused,
        "the sandbox admitted a privileged hostPath pod: {why}"
    );

    // Restarted, the operator deletes what the crash left; the next restore test passes.
    let mut operator = start(&lease);
    common::eventually(WAIT, "the left-behind scratch namespace to be gone", || {
        let api = Api::<Namespace>::all(client.clone());
        let name = name.clone();
        async move { api.get_opt(&name).await.ok()?.is_none().then_some(()) }
    })
    .await;
    ask_for_restore_test(&client, &ns, "after-restart").await;
    // (The run the crash cut short recorded nothing: the first result is after the restart.)
    let summary = common::eventually(WAIT, "a restore test after the restart", || {
        let policies = policies.clone();
        async move { policies.get("p").await.ok()?.status?.last_restore_test }
    })
    .await;
    assert_eq!(summary.result, "Passed", "{summary:?}");
    assert!(summary.objects_compared >= 302, "{summary:?}");
    common::eventually(WAIT, "no scratch namespace left", || {
        let client = client.clone();
        let ns = ns.clone();
        async move {
            scratch_namespaces(&client, &ns)
                .await
                .iter()
                .all(|n| n.metadata.deletion_timestamp.is_some())
                .then_some(())
        }
    })
    .await;
    operator.kill();
    common::delete_namespace(&client, &ns).await;
}
