//! The test control plane is the real thing: `kubectl version` reports the Kubernetes version it
//! was built from, and a deleted namespace really finishes deleting (the namespace controller of
//! kube-controller-manager runs and empties it first).

mod common;

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, PostParams};

#[tokio::test]
async fn kubectl_reports_the_real_server_version() {
    let client = common::client().await;
    let version = client.apiserver_version().await.expect("server version");
    assert_eq!(version.major, "1");
    assert!(
        version.git_version.starts_with("v1."),
        "{}",
        version.git_version
    );
    let (ok, out, err) = common::kubectl(&["version", "-o", "json"]);
    assert!(ok, "kubectl version failed: {err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("kubectl version -o json");
    assert_eq!(
        v["serverVersion"]["gitVersion"].as_str(),
        Some(version.git_version.as_str())
    );
}

#[tokio::test]
async fn a_deleted_namespace_finishes_deleting_with_its_contents() {
    let client = common::client().await;
    let ns = common::namespace(&client, "nsdel", &[]).await;
    let cm: ConfigMap =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "content"}})).unwrap();
    Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();
    common::delete_namespace(&client, &ns).await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    common::eventually(
        Duration::from_secs(60),
        "the namespace to be gone",
        || async { namespaces.get_opt(&ns).await.ok()?.is_none().then_some(()) },
    )
    .await;
}
