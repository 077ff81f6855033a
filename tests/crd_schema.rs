//! The CRDs against a real API server: they install and become Established, every sample in
//! config/samples/ is accepted as is, and the kustomize trees under config/ render and are
//! accepted. What the schema refuses is tests/admission.rs.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::kinds::{KINDS, api_for, crd_name};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, PostParams};

#[tokio::test]
async fn crds_install_and_become_established() {
    common::install_crds();
    let client = common::client().await;
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    for kind in KINDS {
        let name = crd_name(kind);
        let crd = crds
            .get(&name)
            .await
            .unwrap_or_else(|e| panic!("CRD {name}: {e}"));
        let established = crd
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .find(|c| c.type_ == "Established")
            .map(|c| c.status.clone());
        assert_eq!(
            established.as_deref(),
            Some("True"),
            "CRD {name} is not Established"
        );
        let categories = crd.spec.names.categories.clone().unwrap_or_default();
        assert!(
            categories.iter().any(|c| c == "opsec"),
            "CRD {name} is not in category opsec"
        );
    }
    // The category: kubectl's discovery may lag a freshly installed CRD by a moment.
    common::eventually(
        Duration::from_secs(30),
        "`kubectl get opsec -A` to work",
        || async {
            let (ok, _, _) = common::kubectl(&["get", "opsec", "-A"]);
            ok.then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn every_sample_is_accepted_as_is() {
    common::install_crds();
    let client = common::client().await;
    let ns = common::namespace(&client, "samples", &[]).await;
    let dir = common::repo_root().join("config/samples");
    let mut seen = BTreeSet::new();
    let mut failures = vec![];
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let kustomization = std::fs::read_to_string(dir.join("kustomization.yaml"))
        .expect("config/samples/kustomization.yaml");
    for path in files {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        if file == "kustomization.yaml" || !file.ends_with(".yaml") {
            continue;
        }
        assert!(
            kustomization.contains(&format!("- {file}")),
            "config/samples/kustomization.yaml does not list {file}"
        );
        let text = std::fs::read_to_string(&path).unwrap();
        let mut obj: DynamicObject =
            serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(
            obj.metadata.namespace.is_none(),
            "{file} sets metadata.namespace; samples must apply into any namespace"
        );
        let kind = obj
            .types
            .as_ref()
            .map(|t| t.kind.clone())
            .unwrap_or_default();
        assert!(
            KINDS.contains(&kind.as_str()),
            "{file}: unexpected kind {kind}"
        );
        seen.insert(kind.clone());
        let api = api_for(&client, &kind, &ns);
        if kind == "SecurityBaseline" {
            // Cluster-scoped: a name of the test's own, nothing else changed.
            obj.metadata.name = Some(common::unique("sample"));
        }
        let name = obj.metadata.name.clone().unwrap();
        match api.create(&PostParams::default(), &obj).await {
            Ok(_) => {}
            Err(e) => failures.push(format!("{file} ({kind}) was refused: {e}")),
        }
        if kind == "SecurityBaseline" {
            // Leave no baseline behind that could select namespaces of other tests.
            let _ = api.delete(&name, &DeleteParams::default()).await;
        }
    }
    common::delete_namespace(&client, &ns).await;
    assert!(
        failures.is_empty(),
        "samples refused:\n{}",
        failures.join("\n")
    );
    let missing: Vec<_> = KINDS.iter().filter(|k| !seen.contains(**k)).collect();
    assert!(
        missing.is_empty(),
        "config/samples has no sample of {missing:?}"
    );
}

#[test]
fn crd_copies_for_kustomize_match_crds() {
    let root = common::repo_root();
    for kind in KINDS {
        let file = format!("{}.yaml", crd_name(kind));
        let generated = std::fs::read_to_string(root.join("crds").join(&file)).unwrap();
        let copy = std::fs::read_to_string(root.join("config/crd/bases").join(&file))
            .unwrap_or_else(|e| panic!("config/crd/bases/{file}: {e}"));
        assert!(
            generated == copy,
            "config/crd/bases/{file} differs from crds/{file}: run `cp crds/*.yaml config/crd/bases/`"
        );
    }
}

#[tokio::test]
async fn default_config_renders_and_is_accepted_by_the_api_server() {
    common::install_crds();
    let _client = common::client().await;
    for dir in [
        "config/crd",
        "config/rbac",
        "config/manager",
        "config/samples",
        "config/default",
    ] {
        let (ok, out, err) = common::kubectl(&["kustomize", dir]);
        assert!(
            ok && !out.is_empty(),
            "kubectl kustomize {dir} failed:\n{err}"
        );
    }
    let (_, rendered, _) = common::kubectl(&["kustomize", "config/default"]);
    for kind in [
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Namespace",
        "Deployment",
        "Service",
    ] {
        assert!(
            rendered.contains(&format!("\nkind: {kind}\n")),
            "config/default renders no {kind}"
        );
    }
    // A server-side dry run of the namespaced objects needs their namespace to exist.
    let (ok, _, err) = common::kubectl(&["create", "namespace", "opsec-system"]);
    assert!(
        ok || err.contains("AlreadyExists"),
        "create namespace opsec-system: {err}"
    );
    let (ok, out, err) = common::kubectl(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "--dry-run=server",
        "-k",
        "config/default",
    ]);
    assert!(
        ok,
        "config/default is refused by the API server:\n{out}\n{err}"
    );
    assert!(
        !err.contains("would violate PodSecurity"),
        "the operator's pod breaks Pod Security:\n{err}"
    );
    assert!(
        out.lines().count() >= 17,
        "fewer objects applied than rendered:\n{out}"
    );
}
