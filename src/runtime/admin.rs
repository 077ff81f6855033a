//! The admin port: `/healthz` (the process serves), `/readyz` (ready to act or to take over) and
//! `/metrics` (Prometheus text format, for callers the API server authenticates and authorises:
//! [`super::metrics_auth`]).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::sync::watch;

use super::RuntimeState;
use super::metrics_auth::Verdict;

/// Serves the admin port until `shutdown` turns true.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<RuntimeState>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .await
}

/// Binds the admin address (before anything else starts, so a port clash fails fast).
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

async fn readyz(State(state): State<Arc<RuntimeState>>) -> impl IntoResponse {
    match state.readiness() {
        Ok(what) => (StatusCode::OK, what),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
    }
}

async fn metrics(
    State(state): State<Arc<RuntimeState>>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    if let Some(auth) = &state.metrics_auth {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        match auth.check(bearer).await {
            Verdict::Allowed => {}
            Verdict::Unauthenticated => {
                return (
                    StatusCode::UNAUTHORIZED,
                    [(header::WWW_AUTHENTICATE, "Bearer")],
                    "a bearer token the API server accepts is required\n",
                )
                    .into_response();
            }
            Verdict::Forbidden => {
                return (
                    StatusCode::FORBIDDEN,
                    "not allowed to get /metrics (ClusterRole opsec-operator-metrics-reader)\n",
                )
                    .into_response();
            }
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}
