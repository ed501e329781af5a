//! Bytes in and bytes out for one HAProxy connection: the HELLO handshake, then a
//! reader that hands each NOTIFY to the [`Handler`] concurrently (bounded; a NOTIFY
//! that completes at its first poll is answered without a task of its own), and a
//! writer that sends every frame whole, in one write, in completion order.
//!
//! Close rules: HAPROXY-DISCONNECT gets AGENT-DISCONNECT 0; a protocol error gets
//! AGENT-DISCONNECT with its status; EOF, ECONNRESET and EPIPE are normal closes
//! (HAProxy 3.1+ closes with RST). When a connection ends, its in-flight work is
//! aborted with it (the `JoinSet` owns every task), so nothing outlives it.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::spop::frame::{HaproxyHello, Header, PRE_HELLO_MAX_FRAME_SIZE, read_frame};
use crate::spop::{Action, Body, DecodeError, Frame, FrameType, Message, Scope, Status, TypedData};

/// The engine's one extension point: turn the messages of one NOTIFY into the
/// actions of its ACK. The real agent verifies tokens and asks the policy; tests
/// plug in their own.
pub trait Handler: Send + Sync + 'static {
    /// Handles one NOTIFY. An `Err` (or a panic) still produces an ACK, one that
    /// sets only `txn.<prefix>.error`, so HAProxy never waits for a timeout.
    fn handle(
        &self,
        messages: &[Message<'_>],
    ) -> impl Future<Output = Result<Vec<Action<'static>>, HandlerError>> + Send;
}

/// A handler failure; its text goes in the `error` variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct HandlerError(pub &'static str);

/// Name of the variable set when no decision could be made (`txn.<prefix>.error`).
pub const ERROR_VAR: &str = "error";

/// Engine limits and timeouts.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Ceiling for the negotiated max-frame-size (HAProxy's value is used when lower).
    pub max_frame_size: u32,
    /// NOTIFYs handled at once per connection; further frames wait (backpressure).
    pub max_in_flight: usize,
    /// Close a connection with no traffic and nothing in flight for this long.
    pub idle_timeout: Duration,
    /// Time allowed between accept and a complete HAPROXY-HELLO.
    pub hello_timeout: Duration,
    /// On shutdown, how long in-flight NOTIFYs may take to finish.
    pub shutdown_grace: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_frame_size: 16_380,
            max_in_flight: 64,
            idle_timeout: Duration::from_secs(300),
            hello_timeout: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// Engine counters (read by the metrics endpoint and tests).
#[derive(Debug, Default)]
pub struct EngineStats {
    pub connections_open: AtomicU64,
    pub connections_total: AtomicU64,
    pub connections_rejected: AtomicU64,
    pub healthchecks: AtomicU64,
    /// HELLO handshakes completed (health checks included).
    pub hellos: AtomicU64,
    pub notify_in_flight: AtomicU64,
    pub notify_total: AtomicU64,
    pub acks_total: AtomicU64,
    pub handler_failures: AtomicU64,
    /// AGENT-DISCONNECT frames sent, by status code (index = code, 99 folded to 14).
    pub disconnects_sent: [AtomicU64; 15],
    /// HAPROXY-DISCONNECT frames received.
    pub disconnects_received: AtomicU64,
}

impl EngineStats {
    fn sent_disconnect(&self, status: Status) {
        let i = (status.code() as usize).min(14);
        self.disconnects_sent[i].fetch_add(1, Ordering::Relaxed);
    }
}

/// How a connection ended (for logs and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closed {
    /// HAProxy closed the socket (EOF, RST, EPIPE) or said DISCONNECT.
    Peer,
    /// Health-check HELLO answered.
    Healthcheck,
    /// We sent AGENT-DISCONNECT with this status.
    Disconnected(Status),
    /// Shut down by the agent; AGENT-DISCONNECT 0 was sent.
    Shutdown,
    /// Some other I/O error.
    Io(std::io::ErrorKind),
}

/// Serves one accepted connection to completion.
pub async fn serve<H: Handler>(
    mut stream: TcpStream,
    handler: Arc<H>,
    cfg: Arc<EngineConfig>,
    stats: Arc<EngineStats>,
    shutdown: CancellationToken,
) -> Closed {
    let _ = stream.set_nodelay(true);
    let mut buf = BytesMut::with_capacity(4096);

    // === handshake ===
    let hello = tokio::select! {
        r = tokio::time::timeout(cfg.hello_timeout, read_one(&mut stream, &mut buf, PRE_HELLO_MAX_FRAME_SIZE)) => r,
        () = shutdown.cancelled() => return Closed::Shutdown,
    };
    let frame = match hello {
        Err(_elapsed) => return disconnect(&mut stream, Status::Timeout, &stats).await,
        Ok(Err(ReadError::Closed)) => return Closed::Peer,
        Ok(Err(ReadError::Io(kind))) => return Closed::Io(kind),
        Ok(Err(ReadError::Decode(e))) => return disconnect(&mut stream, e.status(), &stats).await,
        Ok(Ok(frame)) => frame,
    };
    let hello = match Frame::decode(&frame[4..]) {
        Ok(Frame {
            body: Body::HaproxyHello(items),
            ..
        }) => HaproxyHello::parse(&items),
        Ok(_) => Err(Status::Invalid), // anything before HELLO, NOTIFY included
        Err(e) => Err(e.status()),
    };
    let hello = match hello {
        Ok(h) => h,
        Err(status) => return disconnect(&mut stream, status, &stats).await,
    };
    let max = hello.negotiate(cfg.max_frame_size);
    if write_frame(&mut stream, &Frame::agent_hello(max))
        .await
        .is_err()
    {
        return Closed::Peer;
    }
    stats.hellos.fetch_add(1, Ordering::Relaxed);
    if hello.healthcheck {
        stats.healthchecks.fetch_add(1, Ordering::Relaxed);
        let _ = stream.shutdown().await;
        return Closed::Healthcheck;
    }

    // === processing ===
    let (mut rd, wr) = stream.into_split();
    let (tx, rx) = mpsc::channel::<Bytes>(cfg.max_in_flight + 2);
    let writer = tokio::spawn(write_loop(wr, rx));
    let permits = Arc::new(Semaphore::new(cfg.max_in_flight));
    let mut tasks = JoinSet::new();
    // Each NOTIFY is decoded once, in its task; a malformed one trips this and the
    // reader closes the connection with status 4.
    let invalid = CancellationToken::new();
    let idle = tokio::time::sleep(cfg.idle_timeout);
    tokio::pin!(idle);

    let outcome = loop {
        // Hand off every complete frame already buffered.
        match next_frame(&mut buf, max) {
            Err(e) => break Some(e.status()),
            Ok(Some(frame)) => {
                match dispatch(
                    frame, &handler, &tx, &permits, &mut tasks, &stats, max, &shutdown, &invalid,
                )
                .await
                {
                    // A NOTIFY answered in place may have found itself malformed.
                    Dispatch::Continue if invalid.is_cancelled() => break Some(Status::Invalid),
                    Dispatch::Continue => continue,
                    Dispatch::Close(status) => break status,
                }
            }
            Ok(None) => {}
        }
        tokio::select! {
            r = rd.read_buf(&mut buf) => match r {
                Ok(0) => break None,
                Ok(_) => idle.as_mut().reset(tokio::time::Instant::now() + cfg.idle_timeout),
                Err(_) => break None, // ECONNRESET and friends: a normal close
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {
                if tasks.is_empty() {
                    idle.as_mut().reset(tokio::time::Instant::now() + cfg.idle_timeout);
                }
            }
            () = &mut idle, if tasks.is_empty() => break Some(Status::Timeout),
            () = invalid.cancelled() => break Some(Status::Invalid),
            () = shutdown.cancelled() => break Some(Status::Normal),
        }
    };

    let closed = match outcome {
        None => {
            tasks.abort_all();
            Closed::Peer
        }
        Some(status) => {
            if status == Status::Normal && shutdown.is_cancelled() {
                // Let in-flight NOTIFYs finish and send their ACKs first.
                let drain = async { while tasks.join_next().await.is_some() {} };
                let _ = tokio::time::timeout(cfg.shutdown_grace, drain).await;
            }
            tasks.abort_all();
            if let Some(f) = encode(&Frame::agent_disconnect(status), max) {
                stats.sent_disconnect(status);
                // The writer may be gone or stuck on a peer that stopped reading.
                let _ = tokio::time::timeout(WRITE_TIMEOUT, tx.send(f)).await;
            }
            match status {
                Status::Normal if shutdown.is_cancelled() => Closed::Shutdown,
                Status::Normal => Closed::Peer,
                s => Closed::Disconnected(s),
            }
        }
    };
    drop(tx);
    while tasks.join_next().await.is_some() {}
    let _ = tokio::time::timeout(WRITE_TIMEOUT + WRITE_TIMEOUT, writer).await;
    closed
}

/// Counts a NOTIFY in flight until dropped, so aborted tasks are uncounted too.
struct InFlight(Arc<EngineStats>);

impl InFlight {
    fn new(stats: Arc<EngineStats>) -> Self {
        stats.notify_in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(stats)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.notify_in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

enum Dispatch {
    Continue,
    /// Stop reading; `Some(status)` sends AGENT-DISCONNECT first.
    Close(Option<Status>),
}

#[allow(clippy::too_many_arguments)]
async fn dispatch<H: Handler>(
    frame: Bytes,
    handler: &Arc<H>,
    tx: &mpsc::Sender<Bytes>,
    permits: &Arc<Semaphore>,
    tasks: &mut JoinSet<()>,
    stats: &Arc<EngineStats>,
    max: u32,
    shutdown: &CancellationToken,
    invalid: &CancellationToken,
) -> Dispatch {
    let header = match Header::decode(&frame[4..]) {
        Ok(h) => h,
        Err(e) => return Dispatch::Close(Some(e.status())),
    };
    match header.frame_type {
        FrameType::Notify => {
            let permit = tokio::select! {
                p = permits.clone().acquire_owned() => p.expect("semaphore never closed"),
                () = shutdown.cancelled() => return Dispatch::Close(Some(Status::Normal)),
            };
            stats.notify_total.fetch_add(1, Ordering::Relaxed);
            let in_flight = InFlight::new(stats.clone());
            let (handler, tx, stats) = (handler.clone(), tx.clone(), stats.clone());
            let invalid = invalid.clone();
            let mut task = Box::pin(async move {
                let ack = handle_notify(&*handler, &frame[4..], header, max, &stats).await;
                drop(in_flight);
                match ack {
                    Ok(Some(ack)) => {
                        stats.acks_total.fetch_add(1, Ordering::Relaxed);
                        let _ = tx.send(ack).await;
                    }
                    Ok(None) => {}
                    Err(_) => invalid.cancel(),
                }
                drop(permit);
            });
            // Most NOTIFYs finish without waiting (a cached token, keys and policy in
            // memory): poll once here and only spawn the ones that would wait. Saves a
            // spawn and two task wake-ups per request (BENCHMARKS.md, "Through
            // HAProxy"). A pending task is spawned as is; tokio polls it again with
            // its own waker, so nothing is lost or run twice.
            // A panic outside the handler's own guard ends this NOTIFY only, as it
            // would in a spawned task.
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            let polled = std::panic::catch_unwind(AssertUnwindSafe(|| task.as_mut().poll(&mut cx)));
            if matches!(polled, Ok(std::task::Poll::Pending)) {
                tasks.spawn(task);
            }
            Dispatch::Continue
        }
        FrameType::HaproxyDisconnect => {
            stats.disconnects_received.fetch_add(1, Ordering::Relaxed);
            Dispatch::Close(Some(Status::Normal))
        }
        // A second HELLO, or agent frames coming our way.
        _ => Dispatch::Close(Some(Status::Invalid)),
    }
}

/// Decodes one NOTIFY, runs the handler, and encodes its ACK within `max`.
/// A malformed NOTIFY is an error (the connection closes with status 4); otherwise
/// there is always an ACK: handler errors, panics and oversize answers fall back to
/// an ACK that sets only the error variable.
async fn handle_notify<H: Handler>(
    handler: &H,
    body: &[u8],
    header: Header,
    max: u32,
    stats: &EngineStats,
) -> Result<Option<Bytes>, DecodeError> {
    let (sid, fid) = (header.stream_id, header.frame_id);
    let error_ack = |why: &'static str| {
        stats.handler_failures.fetch_add(1, Ordering::Relaxed);
        let actions = vec![Action::set(Scope::Txn, ERROR_VAR, TypedData::str(why))];
        encode(&Frame::ack(sid, fid, actions), max)
    };
    let messages = match Frame::decode(body)? {
        Frame {
            body: Body::Notify(m),
            ..
        } => m,
        _ => return Err(DecodeError::UnknownFrameType(header.frame_type as u8)),
    };
    let actions = match AssertUnwindSafe(handler.handle(&messages))
        .catch_unwind()
        .await
    {
        Ok(Ok(actions)) => actions,
        Ok(Err(e)) => return Ok(error_ack(e.0)),
        Err(_panic) => return Ok(error_ack("handler_panic")),
    };
    Ok(encode(&Frame::ack(sid, fid, actions), max).or_else(|| error_ack("ack_too_large")))
}

fn encode(frame: &Frame<'_>, max: u32) -> Option<Bytes> {
    let mut out = BytesMut::with_capacity(frame.encoded_len() + 4);
    frame.encode(&mut out, max).ok()?;
    Some(out.freeze())
}

/// Owns the write half: every frame goes out whole; frames already queued are
/// coalesced into one write.
async fn write_loop(mut wr: OwnedWriteHalf, mut rx: mpsc::Receiver<Bytes>) {
    let mut batch = BytesMut::new();
    while let Some(first) = rx.recv().await {
        let result = if rx.is_empty() {
            write_bounded(&mut wr, &first).await
        } else {
            batch.clear();
            batch.extend_from_slice(&first);
            while batch.len() < 64 * 1024 {
                match rx.try_recv() {
                    Ok(more) => batch.extend_from_slice(&more),
                    Err(_) => break,
                }
            }
            write_bounded(&mut wr, &batch).await
        };
        if result.is_err() {
            return; // EPIPE/ECONNRESET: the reader sees the close too.
        }
    }
    let _ = wr.shutdown().await;
}

/// A peer that stops reading must not pin this connection (and its slot) forever.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

async fn write_bounded(wr: &mut OwnedWriteHalf, bytes: &[u8]) -> std::io::Result<()> {
    match tokio::time::timeout(WRITE_TIMEOUT, wr.write_all(bytes)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

enum ReadError {
    Closed,
    Io(std::io::ErrorKind),
    Decode(DecodeError),
}

/// Splits one whole frame (length prefix included) off the front of `buf`.
fn next_frame(buf: &mut BytesMut, max: u32) -> Result<Option<Bytes>, DecodeError> {
    Ok(read_frame(buf, max)?.map(|n| buf.split_to(n).freeze()))
}

async fn read_one(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    max: u32,
) -> Result<Bytes, ReadError> {
    loop {
        if let Some(f) = next_frame(buf, max).map_err(ReadError::Decode)? {
            return Ok(f);
        }
        match stream.read_buf(buf).await {
            Ok(0) => return Err(ReadError::Closed),
            Ok(_) => {}
            Err(e) if is_peer_close(&e) => return Err(ReadError::Closed),
            Err(e) => return Err(ReadError::Io(e.kind())),
        }
    }
}

fn is_peer_close(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionReset | BrokenPipe | ConnectionAborted | UnexpectedEof
    )
}

async fn write_frame(stream: &mut TcpStream, frame: &Frame<'_>) -> std::io::Result<()> {
    let mut out = BytesMut::with_capacity(frame.encoded_len() + 4);
    frame
        .encode(&mut out, PRE_HELLO_MAX_FRAME_SIZE)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    stream.write_all(&out).await
}

async fn disconnect(stream: &mut TcpStream, status: Status, stats: &EngineStats) -> Closed {
    stats.sent_disconnect(status);
    let _ = write_frame(stream, &Frame::agent_disconnect(status)).await;
    let _ = stream.shutdown().await;
    Closed::Disconnected(status)
}
