//! Server-side apply, the operator's one way to write what it owns: the status subresource of
//! its kinds ([`status`]), under the operator's field manager.

use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::{Api, Resource};
use serde::Serialize;

use crate::FIELD_MANAGER;

/// Server-side applies `status` to the status subresource of the `K` named `name` (in
/// `namespace` for a namespaced kind) under [`FIELD_MANAGER`] (forced: the operator owns its
/// kinds' status). Fields it no longer sets are removed.
pub async fn status<K>(
    client: &kube::Client,
    namespace: Option<&str>,
    name: &str,
    status: &impl Serialize,
) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = ()>,
{
    let body = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    let ar = ApiResource::erase::<K>(&());
    let api: Api<DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch_status(name, &params, &Patch::Apply(body))
        .await
        .map(|_| ())
}
