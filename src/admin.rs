//! Beside the request flow: the admin HTTP listener. `/metrics` (Prometheus text),
//! `/healthz` (the process is alive), `/readyz` (200 once every issuer has keys and
//! a catalog is loaded; the body says what is missing).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::{Metrics, Sources};

pub struct AdminState {
    pub metrics: Arc<Metrics>,
    pub sources: Sources,
}

/// What keeps the agent from being ready (empty when ready).
pub fn missing(s: &Sources) -> Vec<String> {
    let mut missing: Vec<String> = s
        .verifier
        .status()
        .issuers
        .iter()
        .filter(|i| !i.ready)
        .map(|i| format!("keys for issuer {}", i.issuer))
        .collect();
    if s.policy.load().is_none() {
        missing.push("catalog".to_owned());
    }
    missing
}

pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn metrics(State(s): State<Arc<AdminState>>) -> impl IntoResponse {
    let body = s
        .metrics
        .render(&s.sources, crate::token::fetch::unix_now());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
}

async fn readyz(State(s): State<Arc<AdminState>>) -> impl IntoResponse {
    let missing = missing(&s.sources);
    if missing.is_empty() {
        (StatusCode::OK, "ready\n".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: waiting for {}\n", missing.join(", ")),
        )
    }
}

/// Serves the admin endpoints until `shutdown`.
pub async fn serve(listener: TcpListener, state: Arc<AdminState>, shutdown: CancellationToken) {
    let app = router(state);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
    {
        tracing::error!(error = %e, "admin listener failed");
    }
}
