//! Where connections come in: the accept loop, the connection limit, and shutdown.
//! Each accepted socket is served by [`connection::serve`]; on shutdown the loop
//! accepts what is already queued, closes the listener (HAProxy's next connect goes
//! elsewhere) and waits for connections to drain within the grace period.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::connection::{self, EngineConfig, EngineStats, Handler};
use crate::spop::{Frame, Status};

/// Serves SPOP on `listener` until `shutdown` is cancelled, then drains.
///
/// Connections beyond `max_connections` get AGENT-DISCONNECT 13 and are closed at
/// once, never queued.
pub async fn run<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    cfg: EngineConfig,
    max_connections: usize,
    stats: Arc<EngineStats>,
    shutdown: CancellationToken,
) {
    let cfg = Arc::new(cfg);
    let slots = Arc::new(Semaphore::new(max_connections));
    let tracker = TaskTracker::new();
    loop {
        let accepted = if shutdown.is_cancelled() {
            // Stopping: the connections already queued in the backlog are accepted
            // and drained like the others (closing the listener would reset them),
            // then the listener closes; with SO_REUSEPORT the new process's listener
            // takes every connection from here on.
            match listener.accept().now_or_never() {
                Some(Ok(s)) => Ok(s),
                _ => break,
            }
        } else {
            tokio::select! {
                r = listener.accept() => r,
                () = shutdown.cancelled() => continue,
            }
        };
        let (mut stream, peer) = match accepted {
            Ok(s) => s,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            stats.connections_rejected.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%peer, max_connections, "connection limit reached; closing");
            tracker.spawn(async move {
                let mut out = bytes::BytesMut::new();
                let f = Frame::agent_disconnect(Status::Resource);
                if f.encode(&mut out, 65_535).is_ok() {
                    let _ =
                        tokio::time::timeout(Duration::from_secs(1), stream.write_all(&out)).await;
                }
            });
            continue;
        };
        stats.connections_total.fetch_add(1, Ordering::Relaxed);
        stats.connections_open.fetch_add(1, Ordering::Relaxed);
        let (handler, cfg, stats, shutdown) = (
            handler.clone(),
            cfg.clone(),
            stats.clone(),
            shutdown.clone(),
        );
        tracker.spawn(async move {
            let closed = connection::serve(stream, handler, cfg, stats.clone(), shutdown).await;
            tracing::debug!(%peer, ?closed, "connection closed");
            stats.connections_open.fetch_sub(1, Ordering::Relaxed);
            drop(slot);
        });
    }
    drop(listener);
    tracker.close();
    // Connections drain themselves within `shutdown_grace` (docs/spop.md#stopping);
    // the extra seconds cover the hard stop, the last ACKs and the AGENT-DISCONNECT.
    let _ = tokio::time::timeout(cfg.shutdown_grace + Duration::from_secs(3), tracker.wait()).await;
}

/// The runtime the agent serves on, and the do-nothing agent of the benches:
/// `worker_threads` workers, or with 0 `TOKIO_WORKER_THREADS` if it is set, else half
/// the CPUs this process may use (its affinity and cgroup quota), at least one.
///
/// Half, not one per CPU: stagedoor runs beside HAProxy, on the same cores, and a
/// decision is a few microseconds (tens with a full RSA verification). Through HAProxy
/// 2.6 on 2 CPUs, one worker instead of two gave 10 to 17% less agent CPU per cached
/// decision and 5 to 11% more requests per second with a full verification on each
/// (BENCHMARKS.md, "Issue 14: one worker beside HAProxy"). What would make one worker
/// wait runs off the workers: catalog pages are parsed, catalogs compared, policies
/// built, key sets imported and replaced catalogs and policies freed on the blocking
/// pool, and a catalog change is published without copying it ("Issue 14: the
/// catalog sync, off the workers").
/// An agent with cores of its own sets `[agent] worker_threads` to them.
///
/// # Errors
/// When the OS refuses the threads or the I/O driver.
pub fn runtime(worker_threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    // Checked even when the count is given: a bad value in the environment stops
    // every command alike, not only those that would have used it (`probe` beside a
    // `serve` whose config sets a count; found by review).
    let default = default_worker_threads()?;
    let threads = if worker_threads > 0 {
        worker_threads
    } else {
        default
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
}

/// `TOKIO_WORKER_THREADS` if set (tokio's own override; a count from 1 to 256, as
/// `[agent] worker_threads`), else half the CPUs this process may use, at least one.
///
/// # Errors
/// `TOKIO_WORKER_THREADS` set to anything else: an `InvalidInput` naming it (tokio
/// itself panics on a bad value; this refuses to start with a clear message).
pub fn default_worker_threads() -> std::io::Result<usize> {
    match std::env::var("TOKIO_WORKER_THREADS") {
        Err(std::env::VarError::NotPresent) => {
            Ok(std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1)))
        }
        Ok(v) => worker_threads_override(&v),
        Err(std::env::VarError::NotUnicode(v)) => Err(bad_worker_threads(&v.to_string_lossy())),
    }
}

/// A `TOKIO_WORKER_THREADS` value: a count from 1 to 256.
fn worker_threads_override(value: &str) -> std::io::Result<usize> {
    match value.trim().parse::<usize>() {
        Ok(n @ 1..=256) => Ok(n),
        _ => Err(bad_worker_threads(value)),
    }
}

fn bad_worker_threads(value: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!("TOKIO_WORKER_THREADS is {value:?}: unset it, or set a count from 1 to 256"),
    )
}

#[cfg(test)]
mod runtime_tests {
    use super::*;

    #[test]
    fn bad_overrides_are_refused_by_name() {
        for v in ["0", "257", "two", "-1", "", "1.5"] {
            let e = worker_threads_override(v).unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
            assert!(e.to_string().contains("TOKIO_WORKER_THREADS"), "{e}");
        }
        for (v, n) in [("1", 1), (" 4 ", 4), ("256", 256)] {
            assert_eq!(worker_threads_override(v).unwrap(), n);
        }
    }

    #[test]
    fn the_default_is_half_the_cpus_and_a_set_count_is_kept() {
        let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        // TOKIO_WORKER_THREADS, tokio's own override, is followed when it is set.
        let default = std::env::var("TOKIO_WORKER_THREADS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or((cpus / 2).max(1));
        assert_eq!(default_worker_threads().unwrap(), default);
        assert_eq!(runtime(0).unwrap().metrics().num_workers(), default);
        assert_eq!(runtime(3).unwrap().metrics().num_workers(), 3);
    }
}
