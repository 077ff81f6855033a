//! Who may read `/metrics`: a caller with a bearer token the API server authenticates
//! (TokenReview) and authorises for `get` on the non-resource URL `/metrics`
//! (SubjectAccessReview), as controller-runtime's secure metrics serving does. Prometheus gets
//! this right from the ClusterRole `opsec-operator-metrics-reader`. Answers are kept for a few
//! seconds per token, so a scrape costs the API server two reviews at most every
//! [`CACHE_FOR`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::PostParams;
use kube::{Api, Client};

/// How long a token's answer is kept.
pub const CACHE_FOR: Duration = Duration::from_secs(10);
/// Answers kept at most (a scraper has one token; past this the cache starts afresh).
const MAX_CACHED: usize = 256;

/// The answer for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Authenticated and authorised.
    Allowed,
    /// No token, or one the API server does not accept: 401.
    Unauthenticated,
    /// Authenticated, not allowed to read `/metrics`: 403.
    Forbidden,
}

/// Reviews tokens with the API server.
pub struct MetricsAuth {
    client: Client,
    cache: Mutex<HashMap<String, (Instant, Verdict)>>,
}

impl MetricsAuth {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            cache: Mutex::default(),
        }
    }

    /// The verdict on a request's `Authorization` header.
    pub async fn check(&self, authorization: Option<&str>) -> Verdict {
        let Some(token) = authorization
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
        else {
            return Verdict::Unauthenticated;
        };
        let key = crate::backup::crypto::sha256_hex(token.as_bytes());
        if let Some((at, verdict)) = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            && at.elapsed() < CACHE_FOR
        {
            return *verdict;
        }
        let verdict = self.review(token).await;
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(key, (Instant::now(), verdict));
        verdict
    }

    async fn review(&self, token: &str) -> Verdict {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let reviewed = match Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "could not review a /metrics token");
                return Verdict::Unauthenticated;
            }
        };
        let Some(status) = reviewed.status.filter(|s| s.authenticated == Some(true)) else {
            return Verdict::Unauthenticated;
        };
        let user = status.user.unwrap_or_default();
        let access = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: user.username,
                groups: user.groups,
                uid: user.uid,
                extra: user.extra,
                non_resource_attributes: Some(NonResourceAttributes {
                    path: Some("/metrics".into()),
                    verb: Some("get".into()),
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        match Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &access)
            .await
        {
            Ok(r) if r.status.as_ref().is_some_and(|s| s.allowed) => Verdict::Allowed,
            Ok(_) => Verdict::Forbidden,
            Err(e) => {
                tracing::warn!(error = %e, "could not authorise a /metrics request");
                Verdict::Forbidden
            }
        }
    }
}
