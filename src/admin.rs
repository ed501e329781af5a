//! Beside the request flow: the admin HTTP listener. `/metrics` (Prometheus text),
//! `/healthz` (the process is alive), `/readyz` (200 once every issuer has keys and
//! a catalog is loaded; the body says what is missing).
//!
//! Whoever reaches the admin port must not be able to take the agent down (1,100 idle
//! connections once used every descriptor of a default-limited process, and HAProxy
//! then answered 503): at most [`MAX_CONNECTIONS`] are open at once, headers must
//! arrive within [`HEADER_READ_TIMEOUT`], a connection lives at most
//! [`CONNECTION_TIMEOUT`] and serves one request, and running out of descriptors is
//! logged as such, at most every ten seconds.
//!
//! Nor must one client holding every slot starve the probes (a client re-opening 32
//! idle connections as they timed out once failed every `/healthz`, and a liveness
//! probe restarts the pod). When all slots are taken, a new connection may take the
//! place of one whose request headers have not all arrived ([`victim`]):
//!
//! 1. a newcomer whose whole request head is already waiting in its socket when it is
//!    accepted (a probe or a scraper writes its request at once) takes the place of the
//!    oldest such connection, however young;
//! 2. a newcomer that has not sent its request yet takes the place of the oldest such
//!    connection of the peer address holding the most connections, if that address
//!    holds at least two more than the newcomer's: a flood from one address cannot shut
//!    out another (the kubelet, a scraper);
//! 3. else that of the oldest one that has sent nothing for [`SHED_IDLE_AFTER`];
//! 4. else the newcomer gets [`PENDING_GRACE`] to send its request head (a probe often
//!    writes it just after the agent accepted), then is treated as in 1; at most
//!    [`MAX_PENDING`] wait so, and the rest are closed at once.
//!
//! A connection whose request is being answered is never closed for another. What is
//! left: a flood of complete requests is served at the agent's speed, like any server,
//! and a flood of new silent connections fast enough to keep [`MAX_PENDING`] waiting
//! can close a probe whose request was not there yet when it was accepted.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::{TcpListener, TcpStream};
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
    let body = s.metrics.render(&s.sources, crate::clock::unix_now());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
}

/// With `[agent] reuse_port`, two processes answer on the same admin port during a
/// handover: the `x-stagedoor-pid` header says which one did.
async fn readyz(State(s): State<Arc<AdminState>>) -> impl IntoResponse {
    let missing = missing(&s.sources);
    let pid = [("x-stagedoor-pid", std::process::id().to_string())];
    if missing.is_empty() {
        (StatusCode::OK, pid, "ready\n".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            pid,
            format!("not ready: waiting for {}\n", missing.join(", ")),
        )
    }
}

/// Admin connections open at once. Probes and a scraper need a handful.
pub const MAX_CONNECTIONS: usize = 32;
/// Connections accepted while the listener was full, waiting [`PENDING_GRACE`] for
/// their request to arrive.
pub const MAX_PENDING: usize = 64;
/// How long a connection accepted while the listener was full may take to send its
/// request head before it is closed.
pub const PENDING_GRACE: Duration = Duration::from_millis(250);
/// When the listener is full, a connection that has sent nothing for this long makes
/// way for a new one.
pub const SHED_IDLE_AFTER: Duration = Duration::from_secs(1);
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

/// One open admin connection, as [`victim`] sees it.
#[derive(Debug, Clone, Copy)]
pub struct SlotView {
    pub peer: IpAddr,
    pub opened: Instant,
    /// Its request headers arrived (it is being answered): never closed for another.
    pub started: bool,
}

/// Which open connection (index into `slots`) a new one from `peer` takes the place of
/// when every slot is in use, or `None` when the newcomer is to be closed. `ready`: the
/// newcomer's whole request head was waiting when it was accepted. The rules are in
/// the module docs.
pub fn victim(slots: &[SlotView], peer: IpAddr, ready: bool, now: Instant) -> Option<usize> {
    let held = |ip: IpAddr| slots.iter().filter(|s| s.peer == ip).count();
    let oldest = |keep: &dyn Fn(&SlotView) -> bool| {
        slots
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.started && keep(s))
            .min_by_key(|(_, s)| s.opened)
            .map(|(i, _)| i)
    };
    // 1. A complete request goes before anything not yet answered.
    if ready {
        return oldest(&|_| true);
    }
    // 2. The heaviest other address that can give a slot up, if it holds two more.
    let heaviest = slots
        .iter()
        .filter(|s| !s.started && s.peer != peer)
        .map(|s| (held(s.peer), s.peer))
        .max();
    if let Some((count, ip)) = heaviest
        && count >= held(peer) + 2
    {
        return oldest(&|s| s.peer == ip);
    }
    // 3. The oldest silent connection, from anyone.
    oldest(&|s| now.saturating_duration_since(s.opened) >= SHED_IDLE_AFTER)
}

const PEEK_BYTES: usize = 2048;

/// Whether `bytes` start with a whole request head, as the HTTP parser hyper uses reads
/// it: a blank line alone is not one (hyper skips leading blank lines and waits for the
/// rest, which a client holding a slot with `\r\n\r\n` and half a request relied on).
fn has_head(bytes: &[u8]) -> bool {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    matches!(
        httparse::Request::new(&mut headers).parse(bytes),
        Ok(httparse::Status::Complete(_))
    )
}

/// Whether a whole request head is already waiting in `stream`, without waiting or
/// consuming anything (hyper reads the same bytes).
async fn request_waiting(stream: &TcpStream) -> bool {
    let mut buf = [0u8; PEEK_BYTES];
    let n = std::future::poll_fn(|cx| {
        let mut rb = tokio::io::ReadBuf::new(&mut buf);
        std::task::Poll::Ready(match stream.poll_peek(cx, &mut rb) {
            std::task::Poll::Ready(Ok(n)) => n,
            _ => 0,
        })
    })
    .await;
    has_head(&buf[..n])
}

/// Waits (the caller bounds it) until a whole request head is in `stream`; `false` when
/// the peer closes or the head does not fit the peek buffer.
async fn request_arrives(stream: &TcpStream) -> bool {
    let mut buf = [0u8; PEEK_BYTES];
    let mut seen = 0;
    loop {
        let n = match stream.peek(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => n,
        };
        if has_head(&buf[..n]) {
            return true;
        }
        if n == PEEK_BYTES {
            return false;
        }
        if n == seen {
            // peek answers at once while the same bytes wait: poll gently.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        seen = n;
    }
}

struct Slot {
    id: u64,
    view: SlotView,
    started: Arc<AtomicBool>,
    evict: CancellationToken,
}

/// The open admin connections.
#[derive(Default)]
struct Slots {
    open: Mutex<Vec<Slot>>,
    next_id: std::sync::atomic::AtomicU64,
}

impl Slots {
    /// A slot for a connection from `peer`, making way for it if needed (`None`: the
    /// connection is to be closed).
    fn take(&self, peer: IpAddr, ready: bool) -> Option<(u64, Arc<AtomicBool>, CancellationToken)> {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if open.len() >= MAX_CONNECTIONS {
            let views: Vec<SlotView> = open
                .iter()
                .map(|s| SlotView {
                    started: s.started.load(Ordering::Acquire),
                    ..s.view
                })
                .collect();
            let i = victim(&views, peer, ready, Instant::now())?;
            let gone = open.swap_remove(i);
            gone.evict.cancel();
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        // A complete request is as good as being answered: never closed for another.
        let started = Arc::new(AtomicBool::new(ready));
        let evict = CancellationToken::new();
        open.push(Slot {
            id,
            view: SlotView {
                peer,
                opened: Instant::now(),
                started: ready,
            },
            started: started.clone(),
            evict: evict.clone(),
        });
        Some((id, started, evict))
    }

    fn free(&self, id: u64) {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(i) = open.iter().position(|s| s.id == id) {
            open.swap_remove(i);
        }
    }
}

/// Frees a connection's slot when its task ends, however it ends.
struct SlotGuard {
    slots: Arc<Slots>,
    id: u64,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.slots.free(self.id);
    }
}

/// Serves the admin endpoints until `shutdown`.
pub async fn serve(listener: TcpListener, state: Arc<AdminState>, shutdown: CancellationToken) {
    serve_router(listener, router(state), shutdown).await;
}

/// Serves `app` with the admin listener's connection cap, timeouts and fairness rules
/// (also the browser sign-in listener's, `crate::sso::listener`) until `shutdown`.
pub async fn serve_router(listener: TcpListener, app: Router, shutdown: CancellationToken) {
    let slots = Arc::new(Slots::default());
    let pending = Arc::new(tokio::sync::Semaphore::new(MAX_PENDING));
    let mut last_error = None;
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(&e, &mut last_error);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // No slot: closed at once (dropped), holding no descriptor.
        let ready = request_waiting(&stream).await;
        let peer = peer.ip().to_canonical();
        if let Some(slot) = slots.take(peer, ready) {
            tokio::spawn(serve_connection(stream, slot, &slots, &app, &shutdown));
            continue;
        }
        // No slot for a connection that has not sent its request yet: a probe whose
        // request was still on its way when it was accepted gets PENDING_GRACE for it
        // to arrive, then competes as a complete request. At most MAX_PENDING wait;
        // more are closed at once.
        if ready {
            continue;
        }
        let Ok(permit) = pending.clone().try_acquire_owned() else {
            continue;
        };
        let (slots, app, shutdown) = (slots.clone(), app.clone(), shutdown.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let arrived = tokio::time::timeout(PENDING_GRACE, request_arrives(&stream)).await;
            if arrived != Ok(true) {
                return;
            }
            if let Some(slot) = slots.take(peer, true) {
                serve_connection(stream, slot, &slots, &app, &shutdown).await;
            }
        });
    }
}

/// Serves one connection in its slot, until it is done, times out, is closed for a
/// newcomer, or the agent stops.
fn serve_connection(
    stream: TcpStream,
    (id, started, evict): (u64, Arc<AtomicBool>, CancellationToken),
    slots: &Arc<Slots>,
    app: &Router,
    shutdown: &CancellationToken,
) -> impl Future<Output = ()> + Send + 'static {
    use hyper::service::Service as _;
    let guard = SlotGuard {
        slots: slots.clone(),
        id,
    };
    let inner = hyper_util::service::TowerToHyperService::new(app.clone());
    // Called once the request headers are parsed: from then on the connection is being
    // answered and is never closed for another.
    let service = hyper::service::service_fn(move |req| {
        started.store(true, Ordering::Release);
        inner.call(req)
    });
    let shutdown = shutdown.clone();
    async move {
        let _guard = guard;
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .keep_alive(false)
            .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
        tokio::select! {
            _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn) => {}
            () = evict.cancelled() => {}
            () = shutdown.cancelled() => {}
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn slot(peer: &str, age_ms: u64, started: bool, now: Instant) -> SlotView {
        SlotView {
            peer: ip(peer),
            opened: now - Duration::from_millis(age_ms),
            started,
        }
    }

    #[test]
    fn a_flood_from_one_address_makes_way_for_another() {
        let now = Instant::now();
        let mut slots: Vec<SlotView> = (0..31)
            .map(|i| slot("10.0.0.9", 100 + i, false, now))
            .collect();
        slots.push(slot("10.0.0.1", 50, false, now));
        // A newcomer from a third address takes the flood's oldest fresh connection.
        assert_eq!(victim(&slots, ip("10.0.0.2"), false, now), Some(30));
        // So does one from an address holding one connection (31 >= 1 + 2).
        assert_eq!(victim(&slots, ip("10.0.0.1"), false, now), Some(30));
        // The flooding address gets nothing: every connection is fresh.
        assert_eq!(victim(&slots, ip("10.0.0.9"), false, now), None);
        // A connection being answered is never taken.
        for s in &mut slots[..31] {
            s.started = true;
        }
        assert_eq!(victim(&slots, ip("10.0.0.2"), false, now), None);
        assert_eq!(victim(&slots, ip("10.0.0.2"), true, now), Some(31));
        slots[31].started = true;
        assert_eq!(victim(&slots, ip("10.0.0.2"), true, now), None);
    }

    #[test]
    fn silent_connections_go_first_from_the_same_address() {
        let now = Instant::now();
        let mut slots: Vec<SlotView> = (0..32)
            .map(|i| slot("127.0.0.1", 200 + i * 10, false, now))
            .collect();
        assert_eq!(victim(&slots, ip("127.0.0.1"), false, now), None);
        // A newcomer whose request is already there takes the oldest, however young.
        assert_eq!(victim(&slots, ip("127.0.0.1"), true, now), Some(31));
        slots[7].opened = now - SHED_IDLE_AFTER - Duration::from_millis(5);
        slots[9].opened = now - SHED_IDLE_AFTER;
        assert_eq!(victim(&slots, ip("127.0.0.1"), false, now), Some(7));
        slots[7].started = true;
        assert_eq!(victim(&slots, ip("127.0.0.1"), false, now), Some(9));
        // Fair shares first: with two addresses even, the oldest silent one goes.
        let even: Vec<SlotView> = (0..32)
            .map(|i| {
                let peer = if i % 2 == 0 { "10.0.0.1" } else { "10.0.0.2" };
                slot(peer, 2_000 + i, false, now)
            })
            .collect();
        assert_eq!(victim(&even, ip("10.0.0.1"), false, now), Some(31));
    }
}
