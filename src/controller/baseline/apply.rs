//! The SecurityBaseline controller's writes: server-side apply (real or dry-run) of rendered
//! objects and namespace labels under the field manager `opsec-operator`, create and replace of the
//! objects it alone writes (its PolicyReports), and deletion of what it stamped. Each write is
//! idempotent.

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Client, Resource};

use crate::baseline::FIELD_MANAGER;

/// A write the API server refused or that did not reach it.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{action} {kind}/{name} in {namespace}: {message}")]
    Refused {
        action: &'static str,
        kind: String,
        name: String,
        namespace: String,
        message: String,
        #[source]
        source: kube::Error,
    },
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
        Self::Refused {
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
        match self {
            Self::Refused { message, .. } => message,
        }
    }
}

/// Server-side applies `object` (forcing: the operator owns every field it renders and takes
/// them back from other managers), or only dry-runs it.
pub async fn apply_object(
    client: &Client,
    resource: &ApiResource,
    object: &serde_json::Value,
    dry_run: bool,
) -> Result<(), ApplyError> {
    let text = serde_json::to_string(object).unwrap_or_default();
    apply_text(client, resource, &text, dry_run).await
}

/// [`apply_object`] of an object already in JSON text (how a check keeps what it rendered).
pub async fn apply_text(
    client: &Client,
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
    let mut params = PatchParams::apply(FIELD_MANAGER).force();
    params.dry_run = dry_run;
    // The response (the whole object) is not read: the watch brings it to the cache anyway, and
    // a check writes thousands of objects.
    let url = DynamicObject::url_path(resource, Some(ns));
    let request = kube::core::Request::new(url)
        .patch(name, &params, &Patch::Apply(()))
        .map(|mut r| {
            *r.body_mut() = text.as_bytes().to_vec();
            r
        })
        .map_err(kube::Error::BuildRequest);
    let sent = match request {
        Ok(r) => client.request_text(r).await.map(|_| ()),
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

/// Creates an object that does not exist yet with a `POST` (strict field validation), or only
/// validates its creation (`dryRun=All`). The API server runs the same admission and validation
/// as for an apply that creates the object, at about two thirds of the cost (no merge of an apply
/// patch). `Ok(false)` when the object exists after all (the cache had not seen it): apply it with
/// [`apply_text`] instead.
///
/// Only for objects the operator alone writes, or for dry-runs: a `POST` records its fields under
/// an `Update` entry of the field manager, which later applies do not prune.
pub async fn create_text(
    client: &Client,
    resource: &ApiResource,
    namespace: &str,
    name: &str,
    text: &str,
    dry_run: bool,
) -> Result<bool, ApplyError> {
    let params = PostParams {
        dry_run,
        field_manager: Some(FIELD_MANAGER.into()),
    };
    let url = DynamicObject::url_path(resource, Some(namespace));
    let request = kube::core::Request::new(url).create(&params, text.as_bytes().to_vec());
    match send_strict(client, request).await {
        Ok(()) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 && status.reason == "AlreadyExists" => {
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

/// Replaces an object the operator alone writes with a `PUT` of `text`, which carries the
/// `metadata.resourceVersion` it was computed against. `Ok(false)` when the object changed since
/// (409 Conflict) or is gone (404): apply it with [`apply_text`] instead.
pub async fn replace_text(
    client: &Client,
    resource: &ApiResource,
    namespace: &str,
    name: &str,
    text: &str,
) -> Result<bool, ApplyError> {
    let params = PostParams {
        dry_run: false,
        field_manager: Some(FIELD_MANAGER.into()),
    };
    let url = DynamicObject::url_path(resource, Some(namespace));
    let request = kube::core::Request::new(url).replace(name, &params, text.as_bytes().to_vec());
    match send_strict(client, request).await {
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

/// Sends a create or replace with `fieldValidation=Strict` (unknown and duplicate fields refuse
/// the object, as they refuse an apply). The response (the whole object) is not read.
async fn send_strict(
    client: &Client,
    request: Result<http::Request<Vec<u8>>, kube::core::request::Error>,
) -> Result<(), kube::Error> {
    let mut r = request.map_err(kube::Error::BuildRequest)?;
    let uri = format!("{}&fieldValidation=Strict", r.uri());
    *r.uri_mut() = uri.parse().map_err(|e| {
        kube::Error::BuildRequest(kube::core::request::Error::Validation(format!("{e}")))
    })?;
    client.request_text(r).await.map(|_| ())
}

/// Server-side applies the Pod Security labels (a bare Namespace body) of one namespace.
pub async fn apply_namespace(
    client: &Client,
    body: &serde_json::Value,
    dry_run: bool,
) -> Result<(), ApplyError> {
    let name = body
        .pointer("/metadata/name")
        .and_then(|v| v.as_str())
        .unwrap_or_default();
    let api: Api<Namespace> = Api::all(client.clone());
    let mut params = PatchParams::apply(FIELD_MANAGER).force();
    params.dry_run = dry_run;
    api.patch(name, &params, &Patch::Apply(body))
        .await
        .map(|_| ())
        .map_err(|e| ApplyError::new("apply labels of", "Namespace", name, name, e))
}

/// Field manager of the Pod Security labels a baseline puts back as it found them: not the
/// operator's own, so no later apply of the operator removes them.
pub const PUT_BACK_FIELD_MANAGER: &str = "opsec-operator-put-back";

/// Releases a namespace from a baseline's Pod Security labels with `patch`
/// ([`super::plan::release_patch`]: one merge patch, conditional on the version read).
/// `Ok(false)` when the namespace changed since (or is gone): the next check reads it again.
pub async fn release_namespace(
    client: &Client,
    name: &str,
    patch: &serde_json::Value,
) -> Result<bool, ApplyError> {
    let api: Api<Namespace> = Api::all(client.clone());
    let params = PatchParams {
        field_manager: Some(PUT_BACK_FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    match api.patch(name, &params, &Patch::Merge(patch)).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => Ok(false),
        Err(e) => Err(ApplyError::new(
            "release labels of",
            "Namespace",
            name,
            name,
            e,
        )),
    }
}

/// Deletes a stamped object; one already gone is fine.
pub async fn delete_object(
    client: &Client,
    resource: &ApiResource,
    namespace: &str,
    name: &str,
) -> Result<(), ApplyError> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, resource);
    match api.delete(name, &DeleteParams::background()).await {
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
