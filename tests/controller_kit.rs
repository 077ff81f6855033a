//! What every controller does the same way, through the controller kit, shown on the Backup
//! controller against a real API server: an object the operator cannot read is reported once
//! and waits, the others go on; a failed reconcile is a Warning Event whose reason is the
//! error's category, retried until it heals. Needs KUBECONFIG (`hack/with-controlplane.sh
//! cargo test --test controller_kit`).

mod common;

use std::time::Duration;

use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, DeleteParams, ListParams};
use kube::{Client, ResourceExt};
use opsec_operator::api::Backup;
use opsec_operator::api::backup::BackupPhase;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);
const BACKUP_CRD: &str = "crds/backups.opsec.x1642.dev.yaml";

/// The Events about object `name` with `reason`, and how often each was seen.
async fn seen(client: &Client, ns: &str, name: &str, reason: &str) -> Vec<(String, i32)> {
    Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .map(|l| {
            l.items
                .into_iter()
                .filter(|e| {
                    e.reason.as_deref() == Some(reason)
                        && e.involved_object.name.as_deref() == Some(name)
                })
                .map(|e| {
                    let count = e
                        .series
                        .as_ref()
                        .and_then(|s| s.count)
                        .or(e.count)
                        .unwrap_or(1);
                    (e.message.unwrap_or_default(), count)
                })
                .collect()
        })
        .unwrap_or_default()
}

fn kubectl_create(ns: &str, obj: serde_json::Value) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), serde_json::to_vec(&obj).unwrap()).unwrap();
    let (ok, out, err) =
        common::kubectl(&["create", "-n", ns, "-f", file.path().to_str().unwrap()]);
    assert!(ok, "kubectl create {obj}: {out} {err}");
}

fn backup(name: &str, trigger: &str) -> serde_json::Value {
    json!({"apiVersion": "opsec.x1642.dev/v1alpha1", "kind": "Backup",
        "metadata": {"name": name}, "spec": {"policyRef": {"name": "absent"}, "trigger": trigger}})
}

#[tokio::test]
async fn an_object_that_cannot_be_read_is_reported_once_and_the_others_go_on() {
    let client = common::client().await;
    common::install_crds();
    let port = common::operator("backup");
    let ns = common::namespace(&client, "kit-invalid", &[]).await;

    // A Backup stored while the schema was looser than the operator's types (as after a
    // downgrade): its trigger is a value the operator does not know.
    let (ok, out, err) = common::kubectl(&[
        "patch",
        "crd",
        "backups.opsec.x1642.dev",
        "--type=json",
        "-p",
        r#"[{"op": "remove", "path": "/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/trigger/enum"}]"#,
    ]);
    assert!(ok, "{out} {err}");
    common::eventually(WAIT, "the looser schema in force", || {
        let ns = ns.clone();
        async move {
            let file = tempfile::NamedTempFile::new().unwrap();
            std::fs::write(
                file.path(),
                serde_json::to_vec(&backup("unreadable", "Bogus")).unwrap(),
            )
            .unwrap();
            let (ok, _, _) =
                common::kubectl(&["create", "-n", &ns, "-f", file.path().to_str().unwrap()]);
            ok.then_some(())
        }
    })
    .await;
    let (ok, out, err) = common::kubectl(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        BACKUP_CRD,
    ]);
    assert!(ok, "{out} {err}");

    let reported = common::eventually(
        WAIT,
        "an InvalidObject Event on the unreadable Backup",
        || {
            let (client, ns) = (client.clone(), ns.clone());
            async move {
                let s = seen(&client, &ns, "unreadable", "InvalidObject").await;
                (!s.is_empty()).then_some(s)
            }
        },
    )
    .await;
    assert!(
        reported[0].0.contains("cannot read this object") && reported[0].0.contains("Bogus"),
        "the Event says what is wrong: {reported:?}"
    );

    // The others go on: a Backup created after it is reconciled (its policy is absent).
    kubectl_create(&ns, backup("readable", "Manual"));
    let api: Api<Backup> = Api::namespaced(client.clone(), &ns);
    let b = common::eventually(WAIT, "the readable Backup judged", || {
        let api = api.clone();
        async move {
            let b = api.get("readable").await.ok()?;
            (b.status.as_ref()?.phase == Some(BackupPhase::Failed)).then_some(b)
        }
    })
    .await;
    assert!(
        b.status
            .as_ref()
            .and_then(|s| s.error.as_deref())
            .unwrap_or_default()
            .contains("not found"),
        "{}",
        b.name_any()
    );
    // Both counted: the unreadable object as a reconcile error of its category, the Backup
    // that cannot run as a detection EmergencyPlans classify.
    common::eventually(WAIT, "the counts in /metrics", || async move {
        let (status, body) =
            common::http_get(port, "/metrics", Some(&common::metrics_token())).await?;
        (status == 200
            && body.contains(r#"opsec_detections_total{signal="BackupFailed"}"#)
            && body.contains(
                r#"opsec_reconcile_errors_total{controller="backup",category="InvalidObject"}"#,
            ))
        .then_some(body)
    })
    .await;
    // Reported once: a failure would be retried (and reported) at 1, 2 and 4 seconds.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let again = seen(&client, &ns, "unreadable", "InvalidObject").await;
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(
        again[0].1, 1,
        "reported once, waiting for a change: {again:?}"
    );

    // Unreadable objects can still be deleted.
    let (ok, out, err) = common::kubectl(&["delete", "backup", "unreadable", "-n", &ns]);
    assert!(ok, "{out} {err}");
    common::delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn a_failed_reconcile_is_a_warning_named_by_its_category_and_is_retried() {
    let client = common::client().await;
    common::install_crds();
    common::operator("backup");
    let ns = common::namespace(&client, "kit-failed", &[]).await;
    // Status writes of Backups in this namespace are refused for a while.
    let name = common::deny_in_namespace(
        &ns,
        "refuse-status",
        json!({"apiGroups": ["opsec.x1642.dev"], "apiVersions": ["*"],
            "operations": ["UPDATE"], "resources": ["backups/status"]}),
        "false",
        "status writes are refused here for now",
    );
    kubectl_create(&ns, backup("probe", "Manual"));
    common::eventually(WAIT, "the policy in force", || {
        let ns = ns.clone();
        async move {
            let patch = json!({"status": {"error": common::unique("probe")}}).to_string();
            let (_, _, err) = common::kubectl(&[
                "patch",
                "backup",
                "probe",
                "-n",
                &ns,
                "--subresource=status",
                "--type=merge",
                "-p",
                &patch,
            ]);
            err.contains("refused here for now").then_some(())
        }
    })
    .await;
    kubectl_create(&ns, backup("doomed", "Manual"));

    let warned = common::eventually(WAIT, "a StatusWrite Warning on the Backup", || {
        let (client, ns) = (client.clone(), ns.clone());
        async move {
            let s = seen(&client, &ns, "doomed", "StatusWrite").await;
            (!s.is_empty()).then_some(s)
        }
    })
    .await;
    assert!(
        warned[0].0.contains("writing the status of Backup")
            && warned[0].0.contains("refused here for now"),
        "the Event carries the error chain: {warned:?}"
    );

    // Retried with backoff until it heals.
    let (ok, out, err) = common::kubectl(&[
        "delete",
        "validatingadmissionpolicybinding,validatingadmissionpolicy",
        &name,
    ]);
    assert!(ok, "{out} {err}");
    let api: Api<Backup> = Api::namespaced(client.clone(), &ns);
    common::eventually(WAIT, "the Backup's status written after all", || {
        let api = api.clone();
        async move {
            let b = api.get("doomed").await.ok()?;
            (b.status?.phase == Some(BackupPhase::Failed)).then_some(())
        }
    })
    .await;
    let _ = api.delete("doomed", &DeleteParams::default()).await;
    common::delete_namespace(&client, &ns).await;
}
