//! The Kubernetes side of backups and restores: which kinds of a namespace are backed up (API
//! discovery, include/exclude filters), listing them page by page, creating restored objects
//! (through [`super::writes`]), and comparing a restored object with its backup.

use std::collections::HashMap;
use std::sync::Arc;

use kube::Client;
use kube::Resource;
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use kube::core::Request;
use kube::discovery::{Discovery, Scope, verbs};
use serde_json::Value;

use crate::api::backup::{BackupResources, ExistingObjects};
use crate::backup::protobuf::{self, ProtobufKind};
use crate::backup::{RawListPage, RawObject};

use super::writes::{Mode, WriteError, Written, write_one};

/// Kinds never backed up: recreated by the cluster, or (Backup, Restore) objects whose restore
/// would start backups or restores of their own.
const NEVER: &[(&str, &str)] = &[
    ("", "Event"),
    ("events.k8s.io", "Event"),
    ("opsec.x1642.dev", "Backup"),
    ("opsec.x1642.dev", "Restore"),
    ("coordination.k8s.io", "Lease"),
    ("metrics.k8s.io", "PodMetrics"),
];

/// Whether a filter entry (`ConfigMap`, `configmaps`, `apps/v1/Deployment`, `apps/Deployment`,
/// `deployments.apps`) names this resource.
pub fn kind_matches(entry: &str, ar: &ApiResource) -> bool {
    entry == ar.kind
        || entry.eq_ignore_ascii_case(&ar.plural)
        || entry == format!("{}/{}", ar.api_version, ar.kind)
        || (!ar.group.is_empty()
            && (entry == format!("{}/{}", ar.group, ar.kind)
                || entry == format!("{}.{}", ar.plural, ar.group)))
}

/// Whether a kind is backed up under `resources`.
pub fn selected(resources: &BackupResources, ar: &ApiResource) -> bool {
    if NEVER.iter().any(|(g, k)| *g == ar.group && *k == ar.kind) {
        return false;
    }
    if !resources.include_secrets && ar.group.is_empty() && ar.kind == "Secret" {
        return false;
    }
    if resources.exclude_kinds.iter().any(|e| kind_matches(e, ar)) {
        return false;
    }
    resources.include_kinds.is_empty()
        || resources.include_kinds.iter().any(|e| kind_matches(e, ar))
}

/// Every listable namespaced kind (preferred version of each group) selected by `resources`,
/// in restore order ([`crate::backup::restore_order`]), so that the archive holds its objects in
/// the order a restore writes them and can be restored as it is read.
pub async fn backup_kinds(
    client: &Client,
    resources: &BackupResources,
) -> Result<Vec<ApiResource>, kube::Error> {
    let discovery = Discovery::new(client.clone()).run().await?;
    let mut out = Vec::new();
    for group in discovery.groups() {
        for (ar, caps) in group.recommended_resources() {
            if caps.scope == Scope::Namespaced
                && caps.supports_operation(verbs::LIST)
                && selected(resources, &ar)
            {
                out.push(ar);
            }
        }
    }
    out.sort_by(|a, b| {
        (crate::backup::restore_order(&a.kind), &a.kind, &a.group).cmp(&(
            crate::backup::restore_order(&b.kind),
            &b.kind,
            &b.group,
        ))
    });
    Ok(out)
}

/// A label selector as the API's query string.
pub fn selector_string(
    selector: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
) -> String {
    let mut parts = Vec::new();
    for (k, v) in selector.match_labels.iter().flatten() {
        parts.push(format!("{k}={v}"));
    }
    for e in selector.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default().join(",");
        parts.push(match e.operator.as_str() {
            "In" => format!("{} in ({values})", e.key),
            "NotIn" => format!("{} notin ({values})", e.key),
            "Exists" => e.key.clone(),
            "DoesNotExist" => format!("!{}", e.key),
            _ => continue,
        });
    }
    parts.join(",")
}

/// Lists one page of a kind, kept as raw JSON fields (see [`RawListPage`]); `Ok(None)` when
/// the kind cannot be listed here (gone, an unavailable aggregated API), which skips it rather
/// than failing the backup. A kind the acting ServiceAccount may not list is an
/// [`is_forbidden`] error: the caller reports it, since the backup then lacks that kind.
///
/// ConfigMaps and Secrets are asked for in protobuf while `state` allows it (see
/// [`crate::backup::protobuf`]: half the API server's CPU of JSON); a page the decoder refuses
/// (a field it does not know) is listed again as JSON, and so are the kind's further pages.
pub async fn list_page(
    client: &Client,
    namespace: &str,
    ar: &ApiResource,
    selector: &str,
    continue_token: Option<&str>,
    limit: u32,
    state: &mut ListState,
) -> Result<Option<RawListPage>, kube::Error> {
    let mut lp = ListParams::default().limit(limit);
    if !selector.is_empty() {
        lp = lp.labels(selector);
    }
    if let Some(token) = continue_token {
        lp = lp.continue_token(token);
    }
    let request = || {
        Request::new(DynamicObject::url_path(ar, Some(namespace)))
            .list(&lp)
            .map_err(kube::Error::BuildRequest)
    };
    let proto_kind = ProtobufKind::of(&ar.api_version, &ar.kind).filter(|_| state.protobuf);
    if let Some(kind) = proto_kind {
        match list_page_protobuf(client, kind, request()?, &mut state.body).await? {
            Listed::Page(page) => {
                state.last_page_bytes = state.body.len();
                return Ok(Some(page));
            }
            Listed::NotListable => return Ok(None),
            // The JSON request reads the error (a 403 with the API server's message).
            Listed::Forbidden => {}
            // The JSON request reads the error (or succeeds, if it was passing).
            Listed::Failed => {}
            Listed::Refused(why) => {
                tracing::info!(kind = %ar.kind, %why, "listing as JSON instead of protobuf");
                state.protobuf = false;
            }
        }
    }
    let text = match client.request_text(request()?).await {
        Ok(text) => text,
        Err(kube::Error::Api(e)) if NOT_LISTABLE.contains(&e.code) => {
            tracing::debug!(kind = %ar.kind, code = e.code, "kind not listable, skipped");
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    state.last_page_bytes = text.len();
    RawListPage::parse(&text)
        .map(Some)
        .map_err(kube::Error::SerdeError)
}

/// Bytes a list page should hold about: the next page asks for as many objects as fit, by the
/// last page's size per object (large Secrets or ConfigMaps make small pages), so that two
/// pages in memory stay far below the operator's limit whatever tenants store.
pub const PAGE_BYTES: usize = 16 * 1024 * 1024;

/// The limit of the next list request after a page of `items` objects in `bytes`.
pub fn next_page_limit(items: usize, bytes: usize) -> u32 {
    if items == 0 || bytes == 0 {
        return LIST_PAGE;
    }
    let per_object = bytes.div_ceil(items).max(1);
    ((PAGE_BYTES / per_object) as u32).clamp(1, LIST_PAGE)
}

/// How one kind's pages are listed: as protobuf until its decoder refuses a page, into a body
/// buffer kept from page to page (a fresh one of megabytes a page is mostly page faults).
#[derive(Debug)]
pub struct ListState {
    protobuf: bool,
    body: Vec<u8>,
    /// Bytes of the last page read.
    last_page_bytes: usize,
}

impl Default for ListState {
    fn default() -> Self {
        Self {
            protobuf: true,
            body: Vec::new(),
            last_page_bytes: 0,
        }
    }
}

impl ListState {
    /// Pages listed as JSON only.
    pub fn json() -> Self {
        Self {
            protobuf: false,
            ..Self::default()
        }
    }

    /// Whether the kind's pages are still listed as protobuf (where it applies).
    pub fn protobuf(&self) -> bool {
        self.protobuf
    }
}

/// Status codes of a kind that cannot be listed here: skipped, not a failed backup.
const NOT_LISTABLE: [u16; 3] = [404, 405, 503];

/// Whether a list failed because the acting ServiceAccount may not list the kind.
pub fn is_forbidden(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(e) if e.code == 403)
}

/// What a protobuf list request gave.
enum Listed {
    Page(RawListPage),
    NotListable,
    Forbidden,
    /// An error status: this page is listed again as JSON, whose error body kube-rs reads.
    Failed,
    /// The decoder refused the page (a field it does not know): it and the kind's further
    /// pages are listed as JSON.
    Refused(protobuf::ProtobufError),
}

/// One list request asking for protobuf (JSON accepted too). An error status other than
/// [`NOT_LISTABLE`] is left to the JSON request, whose error body kube-rs reads.
async fn list_page_protobuf(
    client: &Client,
    kind: ProtobufKind,
    mut request: http::Request<Vec<u8>>,
    body: &mut Vec<u8>,
) -> Result<Listed, kube::Error> {
    use http_body_util::BodyExt as _;
    request.headers_mut().insert(
        http::header::ACCEPT,
        http::HeaderValue::from_static(PROTOBUF_OR_JSON),
    );
    let response = client.send(request.map(kube::client::Body::from)).await?;
    let status = response.status();
    if NOT_LISTABLE.contains(&status.as_u16()) {
        return Ok(Listed::NotListable);
    }
    if status == http::StatusCode::FORBIDDEN {
        return Ok(Listed::Forbidden);
    }
    if !status.is_success() {
        return Ok(Listed::Failed);
    }
    let content_type = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    body.clear();
    let mut frames = response.into_body();
    while let Some(frame) = frames.frame().await {
        if let Some(data) = frame?.data_ref() {
            body.extend_from_slice(data);
        }
    }
    if content_type.starts_with(protobuf::CONTENT_TYPE) {
        Ok(match protobuf::parse_list(kind, body) {
            Ok(page) => Listed::Page(page),
            Err(e) => Listed::Refused(e),
        })
    } else {
        // The server chose JSON.
        RawListPage::parse(&body)
            .map(Listed::Page)
            .map_err(kube::Error::SerdeError)
    }
}

/// The Accept header of a protobuf list request.
const PROTOBUF_OR_JSON: &str = "application/vnd.kubernetes.protobuf, application/json;q=0.9";

/// Objects per list request.
pub const LIST_PAGE: u32 = 500;
/// Objects in a backup's first list request: nothing else can start before it arrives (a full
/// page keeps the API server 15-30 ms while the archive's cores wait), and later pages come while
/// the ones before are archived.
pub const FIRST_LIST_PAGE: u32 = 100;

/// One listed page: the kind and its items.
pub struct ListedPage {
    pub kind: ApiResource,
    pub items: Vec<RawObject>,
}

/// A list request that failed, with the kind it listed.
#[derive(Debug, thiserror::Error)]
#[error("listing {kind}: {source}")]
pub struct ListError {
    pub kind: String,
    #[source]
    pub source: kube::Error,
}

/// Every page of a namespace's kinds, listed by a task of its own one page ahead of the reader,
/// so that the next page is on its way (and parsed) while the last one is archived. The first
/// error ends it, except that a kind the client may not list is skipped and named in
/// [`forbidden`](Self::forbidden); dropping it stops the task.
pub struct ListAhead {
    pages: tokio::sync::mpsc::Receiver<Result<ListedPage, ListError>>,
    task: tokio::task::JoinHandle<()>,
    forbidden: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl ListAhead {
    /// Starts listing `kinds` of `namespace` (matching `selector`, when not empty) in order.
    pub fn start(
        client: Client,
        namespace: String,
        kinds: Vec<ApiResource>,
        selector: String,
    ) -> Self {
        let (tx, pages) = tokio::sync::mpsc::channel(1);
        let forbidden = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let refused = forbidden.clone();
        let task = tokio::spawn(async move {
            for kind in kinds {
                let (mut token, mut state) = (None::<String>, ListState::default());
                // A kind's first page is small; the next ones as large as fits PAGE_BYTES.
                let mut limit = FIRST_LIST_PAGE;
                loop {
                    let page = list_page(
                        &client,
                        &namespace,
                        &kind,
                        &selector,
                        token.as_deref(),
                        limit,
                        &mut state,
                    )
                    .await;
                    let page = match page {
                        Ok(Some(page)) => page,
                        Ok(None) => break,
                        Err(e) if is_forbidden(&e) => {
                            refused
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .push(format!("{}/{}", kind.api_version, kind.kind));
                            break;
                        }
                        Err(source) => {
                            let kind = kind.kind.clone();
                            let _ = tx.send(Err(ListError { kind, source })).await;
                            return;
                        }
                    };
                    token = page.continue_token().map(str::to_string);
                    let items = page.into_items();
                    limit = next_page_limit(items.len(), state.last_page_bytes);
                    let listed = ListedPage {
                        kind: kind.clone(),
                        items,
                    };
                    if tx.send(Ok(listed)).await.is_err() || token.is_none() {
                        break;
                    }
                }
                if tx.is_closed() {
                    return;
                }
            }
        });
        Self {
            pages,
            task,
            forbidden,
        }
    }

    /// The next page, `None` after the last.
    pub async fn next(&mut self) -> Option<Result<ListedPage, ListError>> {
        self.pages.recv().await
    }

    /// The kinds (`apiVersion/Kind`) the client was forbidden to list, skipped so far.
    pub fn forbidden(&self) -> Vec<String> {
        self.forbidden
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for ListAhead {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a restore did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Applied {
    pub restored: i64,
    pub skipped: i64,
    pub failed: i64,
    pub errors: Vec<String>,
}

/// Max errors kept in a status.
pub const MAX_ERRORS: usize = 20;

/// Resolves API resources of restored objects, once per kind. A cluster-scoped kind is refused:
/// a restore writes into one namespace, and a backup (which a tenant may have crafted) never
/// reaches beyond it.
#[derive(Default)]
pub struct Resolver {
    cache: HashMap<(String, String), Result<ApiResource, ResolveError>>,
}

/// Why the kind of a restored object cannot be written: it fails every object of the kind
/// (kept per kind, so it is cloned to each).
#[derive(Debug, Clone, thiserror::Error)]
pub enum ResolveError {
    #[error("{api_version}/{kind} is cluster-scoped: a restore writes only into its namespace")]
    ClusterScoped { api_version: String, kind: String },
    /// Discovery does not know the kind (the API server's answer, as kube-rs words it).
    #[error("{api_version}/{kind} is not served here: {error}")]
    NotServed {
        api_version: String,
        kind: String,
        error: Arc<kube::Error>,
    },
}

impl ResolveError {
    /// Short stable category.
    pub fn category(&self) -> &'static str {
        match self {
            Self::ClusterScoped { .. } => "ClusterScopedKind",
            Self::NotServed { .. } => "KindNotServed",
        }
    }
}

/// Field manager of restored objects: a tenant's restore, told apart from what the operator's
/// baselines apply as [`FIELD_MANAGER`](crate::FIELD_MANAGER).
pub const RESTORE_FIELD_MANAGER: &str = "opsec-operator-restore";

impl Resolver {
    pub async fn resource(
        &mut self,
        client: &Client,
        api_version: &str,
        kind: &str,
    ) -> Result<ApiResource, ResolveError> {
        let key = (api_version.to_string(), kind.to_string());
        if let Some(r) = self.cache.get(&key) {
            return r.clone();
        }
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version),
        };
        let gvk = kube::api::GroupVersionKind::gvk(group, version, kind);
        let r = match kube::discovery::pinned_kind(client, &gvk).await {
            Ok((_, caps)) if caps.scope == Scope::Cluster => Err(ResolveError::ClusterScoped {
                api_version: api_version.into(),
                kind: kind.into(),
            }),
            Ok((ar, _)) => Ok(ar),
            Err(e) => Err(ResolveError::NotServed {
                api_version: api_version.into(),
                kind: kind.into(),
                error: Arc::new(e),
            }),
        };
        self.cache.insert(key, r.clone());
        r
    }
}

/// An object as `apiVersion/Kind name`.
pub fn describe(obj: &Value) -> String {
    format!(
        "{}/{} {}",
        obj["apiVersion"].as_str().unwrap_or_default(),
        obj["kind"].as_str().unwrap_or_default(),
        obj["metadata"]["name"].as_str().unwrap_or_default()
    )
}

/// Whether an object carries the label of a SecurityBaseline that stamped it: the provider's
/// configuration, which a restore never writes (the baseline puts back its own).
pub fn stamped_by_baseline(obj: &Value) -> bool {
    !obj["metadata"]["labels"][crate::baseline::BASELINE_LABEL].is_null()
}

/// Creates `objects` (already in restore order) in `namespace` with `writer` (a tenant's, so
/// the API server judges every write as the tenant's), each on its own: the restore test's
/// writes into its scratch namespace, which is deleted after. Objects a baseline stamps are
/// skipped, whether the backup or the namespace holds them.
pub async fn apply_objects(
    writer: &crate::controller::kit::apply::Writer,
    namespace: &str,
    objects: &[Value],
    existing: ExistingObjects,
) -> Applied {
    let mut out = Applied::default();
    let mut resolver = Resolver::default();
    for obj in objects {
        let api_version = obj["apiVersion"].as_str().unwrap_or_default();
        let kind = obj["kind"].as_str().unwrap_or_default();
        let result = match resolver.resource(writer.client(), api_version, kind).await {
            Ok(ar) => write_one(writer, &ar, namespace, obj, existing, Mode::Write).await,
            Err(e) => Err(WriteError::Unresolved(e)),
        };
        out.count(obj, result.map(|w| !matches!(w, Written::Skipped)));
    }
    out
}

impl Applied {
    /// Counts one object's outcome: restored (`true`), skipped (`false`) or failed, the first
    /// [`MAX_ERRORS`] failures kept as `<object>: <why>`.
    pub fn count(&mut self, obj: &Value, result: Result<bool, WriteError>) {
        match result {
            Ok(true) => self.restored += 1,
            Ok(false) => self.skipped += 1,
            Err(e) => {
                self.failed += 1;
                if self.errors.len() < MAX_ERRORS {
                    self.errors.push(format!("{}: {e}", describe(obj)));
                }
            }
        }
    }
}

/// Whether everything `expected` sets is in `actual` (the API server adds defaults and status,
/// which are not differences).
pub fn contains(actual: &Value, expected: &Value) -> bool {
    match (actual, expected) {
        (Value::Object(a), Value::Object(e)) => e
            .iter()
            .all(|(k, ev)| a.get(k).is_some_and(|av| contains(av, ev)) || ev.is_null()),
        (Value::Array(a), Value::Array(e)) => {
            a.len() == e.len() && a.iter().zip(e).all(|(av, ev)| contains(av, ev))
        }
        (Value::Number(a), Value::Number(e)) => a.as_f64() == e.as_f64(),
        _ => actual == expected,
    }
}

/// Why a restored object does not match its backup.
#[derive(Debug, thiserror::Error)]
enum Mismatch {
    #[error("differs")]
    Differs,
    #[error("missing")]
    Missing,
    #[error(transparent)]
    Unresolved(ResolveError),
    /// Reading it back failed (kube-rs's words).
    #[error("{0}")]
    Unreadable(kube::Error),
}

/// Compares restored objects in `namespace` with their backup: (compared, mismatches, first
/// mismatch messages).
pub async fn compare(
    client: &Client,
    namespace: &str,
    objects: &[Value],
) -> (i64, i64, Vec<String>) {
    let mut resolver = Resolver::default();
    let (mut compared, mut mismatches, mut messages) = (0, 0, Vec::new());
    for obj in objects {
        compared += 1;
        let api_version = obj["apiVersion"].as_str().unwrap_or_default();
        let kind = obj["kind"].as_str().unwrap_or_default();
        let name = obj["metadata"]["name"].as_str().unwrap_or_default();
        let mut expected = obj.clone();
        // Server-managed or rewritten in another namespace.
        if let Some(m) = expected.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("namespace");
        }
        let found = match resolver.resource(client, api_version, kind).await {
            Ok(ar) => {
                let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &ar);
                api.get_opt(name).await.map_err(Mismatch::Unreadable)
            }
            Err(e) => Err(Mismatch::Unresolved(e)),
        };
        let ok = match found {
            Ok(Some(actual)) => {
                let actual = serde_json::to_value(&actual).unwrap_or(Value::Null);
                let mut a = actual.clone();
                a["apiVersion"] = obj["apiVersion"].clone();
                a["kind"] = obj["kind"].clone();
                contains(&a, &expected)
                    .then_some(())
                    .ok_or(Mismatch::Differs)
            }
            Ok(None) => Err(Mismatch::Missing),
            Err(e) => Err(e),
        };
        if let Err(e) = ok {
            mismatches += 1;
            if messages.len() < MAX_ERRORS {
                messages.push(format!("{}: {e}", describe(obj)));
            }
        }
    }
    (compared, mismatches, messages)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ar(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
        ApiResource {
            group: group.into(),
            version: version.into(),
            api_version: if group.is_empty() {
                version.into()
            } else {
                format!("{group}/{version}")
            },
            kind: kind.into(),
            plural: plural.into(),
        }
    }

    #[test]
    fn filters() {
        let cm = ar("", "v1", "ConfigMap", "configmaps");
        let secret = ar("", "v1", "Secret", "secrets");
        let deploy = ar("apps", "v1", "Deployment", "deployments");
        let backup = ar("opsec.x1642.dev", "v1alpha1", "Backup", "backups");
        let all = BackupResources::default();
        assert!(selected(&all, &cm) && selected(&all, &secret) && selected(&all, &deploy));
        assert!(!selected(&all, &backup));
        let r: BackupResources = serde_yaml::from_str(
            "includeKinds: [ConfigMap, apps/v1/Deployment, Secret]\nincludeSecrets: false",
        )
        .unwrap();
        assert!(selected(&r, &cm) && selected(&r, &deploy) && !selected(&r, &secret));
        let r: BackupResources = serde_yaml::from_str("excludeKinds: [apps/Deployment]").unwrap();
        assert!(!selected(&r, &deploy) && selected(&r, &cm));
        // As kubectl writes a resource and its group; the schema admits the same forms.
        let r: BackupResources = serde_yaml::from_str("excludeKinds: [deployments.apps]").unwrap();
        assert!(!selected(&r, &deploy) && selected(&r, &cm));
        let pattern = regex::Regex::new(crate::api::rules::KIND_FILTER_PATTERN).unwrap();
        for entry in [
            "ConfigMap",
            "configmaps",
            "apps/Deployment",
            "apps/v1/Deployment",
            "v1/Secret",
            "deployments.apps",
        ] {
            assert!(pattern.is_match(entry), "{entry}");
        }
    }

    #[test]
    fn large_objects_make_small_pages() {
        assert_eq!(next_page_limit(500, 500 * 5_000), LIST_PAGE);
        assert_eq!(next_page_limit(100, 100 * 1024 * 1024), 16);
        assert_eq!(next_page_limit(1, 64 * 1024 * 1024), 1);
        assert_eq!(next_page_limit(0, 0), LIST_PAGE);
    }

    #[test]
    fn selectors() {
        let s: k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector =
            serde_yaml::from_str(
                "matchLabels: {app: web}\nmatchExpressions: [{key: tier, operator: In, values: [a, b]}, {key: x, operator: DoesNotExist}]",
            )
            .unwrap();
        assert_eq!(selector_string(&s), "app=web,tier in (a,b),!x");
    }

    #[test]
    fn containment_ignores_added_fields() {
        let expected =
            json!({"spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "a"}]}}}});
        let actual = json!({"spec": {"replicas": 1, "strategy": {}, "template": {"spec": {"containers": [{"name": "a", "imagePullPolicy": "Always"}]}}}, "status": {}});
        assert!(contains(&actual, &expected));
        let changed =
            json!({"spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "a"}]}}}});
        assert!(!contains(&changed, &expected));
    }
}
