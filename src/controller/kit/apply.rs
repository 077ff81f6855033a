//! The operator's one way to write objects: a [`Writer`] says whose rights a write uses and
//! under which field manager, and does server-side apply (real or dry-run, of JSON text, a JSON
//! value or a typed object), create-if-absent, replace, a conditional merge patch, delete, and
//! the status subresource of the operator's own kinds.
//!
//! Acting as the tenant is the default path: [`Writer::tenant`] writes with the impersonating
//! client of the tenant's ServiceAccount, so the API server's RBAC, admission and quota judge
//! each write as the tenant's. [`Writer::operator`] uses the operator's own rights and is only
//! for what the provider configured (SecurityBaselines) and the operator's own objects.
//!
//! Responses are not read where the watch brings the object to a cache anyway (a baseline
//! check writes thousands of objects). A restore's undo (`controller/backup/writes.rs`) is the
//! one other writer: it deletes what it created under a UID precondition and puts back what
//! it replaced, with the same tenant's client.

use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Client, Resource};
use serde::Serialize;

use crate::FIELD_MANAGER;
use crate::controller::tenant::Tenant;

/// A write the API server refused, or that did not reach it.
#[derive(Debug, thiserror::Error)]
#[error("{action} {kind}/{name} in {namespace}: {message}")]
pub struct ApplyError {
    pub action: &'static str,
    pub kind: String,
    pub name: String,
    pub namespace: String,
    /// The API server's own words (or the client's, when no answer came).
    pub message: String,
    #[source]
    pub source: kube::Error,
}

impl ApplyError {
    fn new(
        action: &'static str,
        kind: &str,
        name: &str,
        namespace: &str,
        source: kube::Error,
    ) -> Self {
        let message = match &source {
            kube::Error::Api(status) => status.message.clone(),
            other => other.to_string(),
        };
        Self {
            action,
            kind: kind.into(),
            name: name.into(),
            namespace: namespace.into(),
            message,
            source,
        }
    }

    /// The API server's own words.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// Whose rights a write uses, and its field manager.
#[derive(Clone)]
pub struct Writer {
    client: Client,
    manager: &'static str,
}

impl Writer {
    /// Writes as the tenant `t` (its ServiceAccount, by impersonation).
    pub fn tenant(t: &Tenant) -> Self {
        Self {
            client: t.client.clone(),
            manager: FIELD_MANAGER,
        }
    }

    /// Writes with the operator's own rights: only for the provider's configuration and the
    /// operator's own objects.
    pub fn operator(client: &Client) -> Self {
        Self {
            client: client.clone(),
            manager: FIELD_MANAGER,
        }
    }

    /// The same rights under another field manager (what a restore writes, or labels put back
    /// as they were, must not be pruned by the operator's later applies).
    pub fn with_manager(mut self, manager: &'static str) -> Self {
        self.manager = manager;
        self
    }

    /// The client it writes with.
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn api(&self, resource: &ApiResource, namespace: &str) -> Api<DynamicObject> {
        if namespace.is_empty() {
            Api::all_with(self.client.clone(), resource)
        } else {
            Api::namespaced_with(self.client.clone(), namespace, resource)
        }
    }

    /// Server-side applies `object` (forcing: the writer owns every field it sets and takes
    /// them back from other managers), or only dry-runs it.
    pub async fn apply(
        &self,
        resource: &ApiResource,
        object: &serde_json::Value,
        dry_run: bool,
    ) -> Result<(), ApplyError> {
        let text = serde_json::to_string(object).unwrap_or_default();
        self.apply_text(resource, &text, dry_run).await
    }

    /// [`apply`](Self::apply) of a typed object.
    pub async fn apply_typed<K>(&self, object: &K, dry_run: bool) -> Result<(), ApplyError>
    where
        K: Resource<DynamicType = ()> + Serialize,
    {
        let text = serde_json::to_string(object).unwrap_or_default();
        self.apply_text(&ApiResource::erase::<K>(&()), &text, dry_run)
            .await
    }

    /// [`apply`](Self::apply) of an object already in JSON text (how a baseline check keeps
    /// what it rendered).
    pub async fn apply_text(
        &self,
        resource: &ApiResource,
        text: &str,
        dry_run: bool,
    ) -> Result<(), ApplyError> {
        #[derive(serde::Deserialize, Default)]
        struct Meta {
            #[serde(default)]
            name: String,
            #[serde(default)]
            namespace: String,
        }
        #[derive(serde::Deserialize, Default)]
        struct Head {
            #[serde(default)]
            metadata: Meta,
        }
        let head: Head = serde_json::from_str(text).unwrap_or_default();
        let (ns, name) = (
            head.metadata.namespace.as_str(),
            head.metadata.name.as_str(),
        );
        let mut params = PatchParams::apply(self.manager).force();
        params.dry_run = dry_run;
        let url = DynamicObject::url_path(resource, (!ns.is_empty()).then_some(ns));
        let request = kube::core::Request::new(url)
            .patch(name, &params, &Patch::Apply(()))
            .map(|mut r| {
                *r.body_mut() = text.as_bytes().to_vec();
                r
            })
            .map_err(kube::Error::BuildRequest);
        let sent = match request {
            Ok(r) => self.client.request_text(r).await.map(|_| ()),
            Err(e) => Err(e),
        };
        sent.map_err(|e| {
            ApplyError::new(
                if dry_run { "dry-run" } else { "apply" },
                &resource.kind,
                name,
                ns,
                e,
            )
        })
    }

    /// Creates an object that does not exist yet with a `POST` (strict field validation), or
    /// only validates its creation (`dryRun=All`): the same admission and validation as an
    /// apply that creates it, at about two thirds of the cost. `Ok(false)` when it exists after
    /// all (create-if-absent).
    ///
    /// Only for objects the writer alone writes, or for dry-runs: a `POST` records its fields
    /// under an `Update` entry of the field manager, which later applies do not prune.
    pub async fn create_text(
        &self,
        resource: &ApiResource,
        namespace: &str,
        name: &str,
        text: &str,
        dry_run: bool,
    ) -> Result<bool, ApplyError> {
        let params = PostParams {
            dry_run,
            field_manager: Some(self.manager.into()),
        };
        let url = DynamicObject::url_path(resource, Some(namespace));
        let request = kube::core::Request::new(url).create(&params, text.as_bytes().to_vec());
        match self.send_strict(request).await {
            Ok(()) => Ok(true),
            Err(kube::Error::Api(status))
                if status.code == 409 && status.reason == "AlreadyExists" =>
            {
                Ok(false)
            }
            Err(e) => Err(ApplyError::new(
                if dry_run { "dry-run" } else { "create" },
                &resource.kind,
                name,
                namespace,
                e,
            )),
        }
    }

    /// Replaces an object the writer alone writes with a `PUT` of `text`, which carries the
    /// `metadata.resourceVersion` it was computed against. `Ok(false)` when the object changed
    /// since (409 Conflict) or is gone (404).
    pub async fn replace_text(
        &self,
        resource: &ApiResource,
        namespace: &str,
        name: &str,
        text: &str,
    ) -> Result<bool, ApplyError> {
        let params = PostParams {
            dry_run: false,
            field_manager: Some(self.manager.into()),
        };
        let url = DynamicObject::url_path(resource, Some(namespace));
        let request =
            kube::core::Request::new(url).replace(name, &params, text.as_bytes().to_vec());
        match self.send_strict(request).await {
            Ok(()) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 || status.code == 404 => Ok(false),
            Err(e) => Err(ApplyError::new(
                "replace",
                &resource.kind,
                name,
                namespace,
                e,
            )),
        }
    }

    /// Sends a create or replace with `fieldValidation=Strict` (unknown and duplicate fields
    /// refuse the object, as they refuse an apply). The response is not read.
    async fn send_strict(
        &self,
        request: Result<http::Request<Vec<u8>>, kube::core::request::Error>,
    ) -> Result<(), kube::Error> {
        let mut r = request.map_err(kube::Error::BuildRequest)?;
        let uri = format!("{}&fieldValidation=Strict", r.uri());
        *r.uri_mut() = uri.parse().map_err(|e| {
            kube::Error::BuildRequest(kube::core::request::Error::Validation(format!("{e}")))
        })?;
        self.client.request_text(r).await.map(|_| ())
    }

    /// A JSON merge patch of `name` (in `namespace`, empty for a cluster-scoped kind), which
    /// may carry a `metadata.resourceVersion` precondition. `Ok(false)` when the object changed
    /// since (409) or is gone (404).
    pub async fn merge_patch(
        &self,
        resource: &ApiResource,
        namespace: &str,
        name: &str,
        patch: &serde_json::Value,
    ) -> Result<bool, ApplyError> {
        let params = PatchParams {
            field_manager: Some(self.manager.into()),
            ..PatchParams::default()
        };
        match self
            .api(resource, namespace)
            .patch(name, &params, &Patch::Merge(patch))
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => Ok(false),
            Err(e) => Err(ApplyError::new("patch", &resource.kind, name, namespace, e)),
        }
    }

    /// Reads `name` with the writer's rights (`None`: it does not exist).
    pub async fn get(
        &self,
        resource: &ApiResource,
        namespace: &str,
        name: &str,
    ) -> Result<Option<DynamicObject>, kube::Error> {
        self.api(resource, namespace).get_opt(name).await
    }

    /// Creates `object` and returns what the API server made of it (or would, in a dry run);
    /// `Ok(None)` when it exists already (create-if-absent, never an apply over someone
    /// else's object).
    pub async fn create_object(
        &self,
        resource: &ApiResource,
        namespace: &str,
        object: &DynamicObject,
        dry_run: bool,
    ) -> Result<Option<DynamicObject>, kube::Error> {
        let params = PostParams {
            dry_run,
            field_manager: Some(self.manager.into()),
        };
        match self.api(resource, namespace).create(&params, object).await {
            Ok(created) => Ok(Some(created)),
            Err(kube::Error::Api(e)) if e.code == 409 && e.reason == "AlreadyExists" => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Server-side applies `object` (forced) and returns the result; a
    /// `metadata.resourceVersion` in it makes the apply conditional, and `Ok(None)` says the
    /// object changed since that version (409).
    pub async fn apply_returning(
        &self,
        resource: &ApiResource,
        namespace: &str,
        name: &str,
        object: &serde_json::Value,
        dry_run: bool,
    ) -> Result<Option<DynamicObject>, kube::Error> {
        let mut params = PatchParams::apply(self.manager).force();
        params.dry_run = dry_run;
        match self
            .api(resource, namespace)
            .patch(name, &params, &Patch::Apply(object))
            .await
        {
            Ok(after) => Ok(Some(after)),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Deletes an object (dependents in the background); one already gone is fine.
    pub async fn delete(
        &self,
        resource: &ApiResource,
        namespace: &str,
        name: &str,
    ) -> Result<(), ApplyError> {
        match self
            .api(resource, namespace)
            .delete(name, &DeleteParams::background())
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.is_not_found() => Ok(()),
            Err(e) => Err(ApplyError::new(
                "delete",
                &resource.kind,
                name,
                namespace,
                e,
            )),
        }
    }
}

/// Server-side applies `status` to the status subresource of the `K` named `name` (in
/// `namespace` for a namespaced kind) under [`FIELD_MANAGER`], with the operator's own rights
/// (forced: the operator owns its kinds' status). Fields it no longer sets are removed. Returns
/// the object's resourceVersion after the write.
pub async fn status<K>(
    client: &Client,
    namespace: Option<&str>,
    name: &str,
    status: &impl Serialize,
) -> Result<Option<String>, kube::Error>
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
        .map(|o| o.metadata.resource_version)
}
