//! Beside the request flow: the admin HTTP listener. `/metrics` (Prometheus text),
//! `/healthz` (the process is alive), `/readyz` (200 once every issuer has keys and
//! a catalog is loaded; the body says what is missing).
//!
//! Whoever reaches the admin port must not be able to take the agent down (1,100 idle
//! connections once used every descriptor of a default-limited process, and HAProxy
//! then answered 503): at most [`MAX_CONNECTIONS`] are served at once (more are
//! closed at accept), headers must arrive within [`HEADER_READ_TIMEOUT`], a
//! connection lives at most [`CONNECTION_TIMEOUT`] and serves one request, and running
//! out of descriptors is logged as such, at most every ten seconds.

use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// Admin connections served at once; more are closed as soon as accepted. Probes and
/// a scraper need a handful.
pub const MAX_CONNECTIONS: usize = 32;
/// Time a connection has to send its request headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest life of one admin connection, a slow reader of `/metrics` included.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// Logs a failed accept, at most every ten seconds, naming descriptor exhaustion.
fn accept_failed(e: &std::io::Error, last: &mut Option<Instant>) {
    if last.is_some_and(|t| t.elapsed() < Duration::from_secs(10)) {
        return;
    }
    *last = Some(Instant::now());
    // EMFILE (24) and ENFILE (23): the process or the system is out of descriptors.
    if matches!(e.raw_os_error(), Some(23 | 24)) {
        let limit = rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(0, |(soft, _)| soft);
        tracing::error!(
            event = "out_of_file_descriptors",
            limit,
            "admin listener: out of file descriptors; raise the limit (ulimit -n, LimitNOFILE)"
        );
    } else {
        tracing::warn!(error = %e, "admin listener: accept failed");
    }
}

/// Serves the admin endpoints until `shutdown`.
pub async fn serve(listener: TcpListener, state: Arc<AdminState>, shutdown: CancellationToken) {
    let app = router(state);
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut last_error = None;
    loop {
        let stream = tokio::select! {
            () = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_failed(&e, &mut last_error);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // Over the cap: closed at once (dropped), holding no descriptor.
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .keep_alive(false)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::select! {
                _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn) => {}
                () = shutdown.cancelled() => {}
            }
        });
    }
}

/// Raises the soft limit on open files to the hard limit, and logs both: a sidecar
/// started with the common default of 1,024 runs out long before its hard limit.
pub fn raise_fd_limit() {
    let before = rlimit::getrlimit(rlimit::Resource::NOFILE);
    let after = rlimit::increase_nofile_limit(u64::MAX);
    match (before, after) {
        (Ok((soft, hard)), Ok(now)) => {
            tracing::info!(
                event = "fd_limit",
                soft_before = soft,
                soft = now,
                hard,
                "open files limit"
            );
        }
        (_, Err(e)) | (Err(e), _) => {
            tracing::warn!(error = %e, "open files limit: cannot read or raise it");
        }
    }
}
