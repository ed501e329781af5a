//! Bytes in and bytes out for one HAProxy connection: the HELLO handshake, then a
//! reader that hands each NOTIFY to the [`Handler`] concurrently (bounded; a NOTIFY
//! that completes at its first poll is answered without a task of its own), and a
//! writer that sends every frame whole, in one write, in completion order.
//!
//! This file does only I/O and concurrency: reads, writes, NOTIFY tasks, timers.
//! What a frame or an event means (HELLO first, which status closes what, the
//! health check) is the [`Session`]'s call, with no I/O (docs/spop.md#session-rules).
//! When a connection ends, its in-flight work is aborted with it (the `JoinSet` owns
//! every task), so nothing outlives it, unless the agent is stopping: then the
//! connection keeps reading and answering until HAProxy has moved on from it or
//! `shutdown_grace` ends ([`drain`]), and its in-flight NOTIFYs send their ACKs
//! before the AGENT-DISCONNECT.
//!
//! Every read buffer and every NOTIFY in flight is charged to one byte budget
//! (`buffer_budget`, [`crate::budget`]): a connection the budget cannot admit gets
//! AGENT-DISCONNECT 13 at once, and one whose next frame it cannot hold is closed
//! with 13 too (fail closed: memory stays bounded).

mod drain;

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use drain::{Drain, DrainStep};

use crate::budget::{BufferAccount, Charge, admission_limit};
pub use crate::spop::session::Closed;
use crate::spop::session::{Close, HELLO_BUFFER, Notify, Session, Step, disconnect_frame};
use crate::spop::{Actions, DecodeError, Message, Scope, Status, TypedData, encode_ack};

/// The engine's one extension point: turn the messages of one NOTIFY into the
/// actions of its ACK. The real agent verifies tokens and asks the policy; tests
/// plug in their own.
pub trait Handler: Send + Sync + 'static {
    /// Handles one NOTIFY. An `Err` (or a panic) still produces an ACK, one that
    /// sets only `txn.<prefix>.error`, so HAProxy never waits for a timeout.
    fn handle(
        &self,
        messages: &[Message<'_>],
    ) -> impl Future<Output = Result<Actions, HandlerError>> + Send;
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
    /// Close a connection with no whole frame read and nothing in flight for this
    /// long (bytes of a frame that never finishes do not count).
    pub idle_timeout: Duration,
    /// Time allowed between accept and a complete HAPROXY-HELLO.
    pub hello_timeout: Duration,
    /// On shutdown, how long open connections are still read and answered while
    /// HAProxy moves on (docs/spop.md#stopping).
    pub shutdown_grace: Duration,
    /// On shutdown, a connection with nothing in flight closes once no bytes came
    /// in for this long (HAProxy no longer sends on it).
    pub drain_quiet: Duration,
    /// Bytes that every connection's read buffer and NOTIFYs in flight may hold
    /// together ([`crate::budget`]).
    pub buffer_budget: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_frame_size: 16_380,
            max_in_flight: 64,
            idle_timeout: Duration::from_secs(300),
            hello_timeout: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(10),
            drain_quiet: Duration::from_secs(2),
            buffer_budget: 64 << 20,
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
    /// Connections closed at once because the buffer budget could not admit them.
    pub connections_over_budget: AtomicU64,
    /// The buffer budget's account: bytes held by read buffers and NOTIFYs.
    pub buffers: Arc<BufferAccount>,
}

impl EngineStats {
    fn sent_disconnect(&self, status: Status) {
        let i = (status.code() as usize).min(14);
        self.disconnects_sent[i].fetch_add(1, Ordering::Relaxed);
    }
}

/// Serves one accepted connection to completion.
pub async fn serve<H: Handler>(
    mut stream: TcpStream,
    handler: Arc<H>,
    cfg: Arc<EngineConfig>,
    stats: Arc<EngineStats>,
    shutdown: CancellationToken,
) -> Closed {
    let admit = admission_limit(cfg.buffer_budget);
    let Some(mut held) = stats.buffers.charge(HELLO_BUFFER, admit) else {
        return refuse(stream, &stats).await;
    };
    let _ = stream.set_nodelay(true);
    let mut session = Session::new(cfg.max_frame_size);
    if let Err(closed) = handshake(&mut stream, &mut session, &mut held, &cfg, &stats).await {
        return closed;
    }
    let (rd, wr) = stream.into_split();
    let (tx, rx) = mpsc::channel::<Bytes>(cfg.max_in_flight + 2);
    let writer = tokio::spawn(write_loop(wr, rx));
    let mut work = Work {
        handler,
        stats,
        tx,
        permits: Arc::new(Semaphore::new(cfg.max_in_flight)),
        tasks: JoinSet::new(),
        invalid: CancellationToken::new(),
        max: session.max_frame_size(),
    };
    let close = read_loop(rd, &mut session, &mut held, &mut work, &cfg, &shutdown).await;
    // Past the hard stop, in-flight NOTIFYs get one more HARD_STOP for their ACKs.
    let closed = work.finish(close, drain::HARD_STOP, &shutdown).await;
    let _ = tokio::time::timeout(WRITE_TIMEOUT + WRITE_TIMEOUT, writer).await;
    closed
}

/// A connection the buffer budget cannot admit: AGENT-DISCONNECT 13 (resource), as
/// for one over `max_connections`, and closed.
async fn refuse(mut stream: TcpStream, stats: &EngineStats) -> Closed {
    stats
        .connections_over_budget
        .fetch_add(1, Ordering::Relaxed);
    tracing::debug!("buffer budget spent; closing a new connection");
    let frame = disconnect_frame(Status::Resource);
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&frame)).await;
    Closed::Disconnected(Status::Resource)
}

/// A connection's read buffer once its HELLO is done, while bytes wait: a few
/// pipelined NOTIFYs per read; a frame that needs more gets more, for as long as it
/// is being read.
const READ_BUFFER: usize = 4096;

/// Makes room for the next read in the session's buffer, charging any change in its
/// size to `held`; `false` when the budget cannot hold it. Called only when no
/// complete frame is buffered. The buffer is replaced by one of exactly the size
/// charged (at least what the frame being read needs), never left for `read_buf`
/// to grow on its own, and it shrinks back once a large frame has gone.
fn make_room(session: &mut Session, held: &mut Charge, budget: usize) -> bool {
    let buf = session.read_buf();
    if buf.capacity() > buf.len() {
        return true;
    }
    let (base, limit) = if session.is_open() {
        (READ_BUFFER, budget)
    } else {
        (HELLO_BUFFER, admission_limit(budget))
    };
    let size = session.wanted().max(base);
    if !held.resize(size, limit) {
        return false;
    }
    let buf = session.read_buf();
    let mut fresh = BytesMut::with_capacity(size);
    fresh.extend_from_slice(buf);
    *buf = fresh;
    true
}

/// Gives the read buffer back when it holds nothing.
fn release_if_empty(session: &mut Session, held: &mut Charge) {
    let buf = session.read_buf();
    if buf.is_empty() && held.bytes() > 0 {
        *buf = BytesMut::new();
        held.resize(0, 0);
    }
}

/// What one read after a readiness event gave.
enum Filled {
    Bytes,
    /// A spurious wake-up: nothing to read yet.
    NotYet,
    Eof,
    OverBudget,
    Failed(std::io::ErrorKind),
}

/// Reads what the socket has, into a buffer made room for first.
fn fill(rd: &OwnedReadHalf, session: &mut Session, held: &mut Charge, budget: usize) -> Filled {
    if !make_room(session, held, budget) {
        return Filled::OverBudget;
    }
    match rd.try_read_buf(session.read_buf()) {
        Ok(0) => Filled::Eof,
        Ok(_) => Filled::Bytes,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Filled::NotYet,
        Err(e) => Filled::Failed(e.kind()),
    }
}

/// Reads until the session has answered HAPROXY-HELLO, within `hello_timeout`.
/// `Err` is how the connection ended (health checks included). A stopping agent
/// still completes it: a connection accepted just before the stop carries requests
/// too, and is then drained like the others.
async fn handshake(
    stream: &mut TcpStream,
    session: &mut Session,
    held: &mut Charge,
    cfg: &EngineConfig,
    stats: &EngineStats,
) -> Result<(), Closed> {
    let deadline = tokio::time::Instant::now() + cfg.hello_timeout;
    let close = loop {
        if session.is_open() {
            return Ok(());
        }
        match session.next_step() {
            Some(Step::Send(hello)) => {
                if stream.write_all(&hello).await.is_err() {
                    return Err(Closed::Peer);
                }
                stats.hellos.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            Some(Step::Close(close)) => break close,
            Some(Step::Notify(_)) => unreachable!("a session yields NOTIFYs only once open"),
            None => {}
        }
        if !make_room(session, held, cfg.buffer_budget) {
            break session.over_budget();
        }
        match tokio::time::timeout_at(deadline, stream.read_buf(session.read_buf())).await {
            Err(_elapsed) => break session.timed_out(),
            Ok(Ok(0)) => break session.peer_closed(),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => break session.read_failed(e.kind()),
        }
    };
    if close == Close::Healthcheck {
        stats.healthchecks.fetch_add(1, Ordering::Relaxed);
        let _ = stream.shutdown().await;
    } else if let Some(status) = close.reply() {
        stats.sent_disconnect(status);
        let _ = stream.write_all(&disconnect_frame(status)).await;
        let _ = stream.shutdown().await;
    }
    Err(close.closed())
}

/// Hands every complete frame to the session and does what it says, until it says
/// close. Also owns the idle timer: it runs only while nothing is in flight. Once the
/// agent stops, it keeps reading and answering until [`Drain`] says close.
async fn read_loop<H: Handler>(
    rd: OwnedReadHalf,
    session: &mut Session,
    held: &mut Charge,
    work: &mut Work<H>,
    cfg: &EngineConfig,
    shutdown: &CancellationToken,
) -> Close {
    let idle = tokio::time::sleep(cfg.idle_timeout);
    tokio::pin!(idle);
    let mut drain: Option<Drain> = None;
    let wake = tokio::time::sleep(cfg.idle_timeout);
    tokio::pin!(wake);
    let mut last_read = Instant::now();
    loop {
        // Hand off every complete frame already buffered.
        match session.next_step() {
            Some(Step::Notify(mut notify)) => {
                let Some(charge) = work.stats.buffers.charge(notify.len(), cfg.buffer_budget)
                else {
                    return session.over_budget();
                };
                notify.hold(charge);
                // The idle timer restarts on a whole frame, not on any byte: a peer
                // trickling one byte at a time into a frame it never finishes would
                // otherwise hold that frame's buffer for as long as it likes.
                idle.as_mut().reset(last_read + cfg.idle_timeout);
                work.start(notify).await;
                // A NOTIFY answered in place may have found itself malformed.
                if work.invalid.is_cancelled() {
                    return session.notify_invalid();
                }
                continue;
            }
            // Only AGENT-HELLO is sent this way, before this loop; any other frame
            // the session asks for would go out like an ACK.
            Some(Step::Send(frame)) => {
                let _ = work.tx.send(frame).await;
                continue;
            }
            Some(Step::Close(close)) => return close,
            None => {}
        }
        if let Some(d) = &drain {
            match d.step(Instant::now(), !work.tasks.is_empty(), last_read) {
                DrainStep::Until(at) => wake.as_mut().reset(at),
                // Past the hard stop nothing more is read: a peer that always has
                // bytes waiting would otherwise keep the connection open forever.
                DrainStep::Stop => return session.shutdown(),
                // A frame already in the socket is read first: closing on it would
                // fail its request.
                DrainStep::Close => match fill(&rd, session, held, cfg.buffer_budget) {
                    Filled::Bytes => {
                        last_read = Instant::now();
                        continue;
                    }
                    Filled::NotYet => return session.shutdown(),
                    Filled::Eof => return session.peer_closed(),
                    Filled::OverBudget => return session.over_budget(),
                    Filled::Failed(kind) => return session.read_failed(kind),
                },
            }
        }
        // An empty buffer is given back while the connection waits, and taken again
        // when bytes are there: idle connections hold none (10 000 of them held
        // 40 MB at 4 KiB each; BENCHMARKS.md, "Issue 14: memory").
        release_if_empty(session, held);
        tokio::select! {
            r = rd.readable() => match r.map(|()| fill(&rd, session, held, cfg.buffer_budget)) {
                Ok(Filled::Bytes) => last_read = Instant::now(),
                Ok(Filled::NotYet) => {}
                Ok(Filled::Eof) => return session.peer_closed(),
                Ok(Filled::OverBudget) => return session.over_budget(),
                Ok(Filled::Failed(kind)) => return session.read_failed(kind),
                Err(e) => return session.read_failed(e.kind()), // ECONNRESET and friends
            },
            Some(_) = work.tasks.join_next(), if !work.tasks.is_empty() => {
                if work.tasks.is_empty() {
                    idle.as_mut().reset(Instant::now() + cfg.idle_timeout);
                }
            }
            () = &mut idle, if work.tasks.is_empty() => return session.timed_out(),
            () = work.invalid.cancelled() => return session.notify_invalid(),
            () = shutdown.cancelled(), if drain.is_none() => {
                drain = Some(Drain::new(Instant::now(), cfg.shutdown_grace, cfg.drain_quiet));
            }
            () = &mut wake, if drain.is_some() => {}
        }
    }
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

/// The NOTIFY side of one open connection: what each NOTIFY task needs, and the tasks.
struct Work<H> {
    handler: Arc<H>,
    stats: Arc<EngineStats>,
    /// Frames for the writer.
    tx: mpsc::Sender<Bytes>,
    /// Bounds the NOTIFYs in flight on this connection.
    permits: Arc<Semaphore>,
    /// Owns every NOTIFY task, so none outlives the connection.
    tasks: JoinSet<()>,
    /// Each NOTIFY is decoded once, in its task; a malformed one trips this and the
    /// reader closes the connection with status 4.
    invalid: CancellationToken,
    /// The negotiated max-frame-size, the limit for ACKs.
    max: u32,
}

impl<H: Handler> Work<H> {
    /// Starts one NOTIFY once a permit is free (also while the agent stops: a
    /// NOTIFY read is a request HAProxy waits on).
    async fn start(&mut self, notify: Notify) {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore never closed");
        self.stats.notify_total.fetch_add(1, Ordering::Relaxed);
        let in_flight = InFlight::new(self.stats.clone());
        let (handler, tx, stats) = (self.handler.clone(), self.tx.clone(), self.stats.clone());
        let (invalid, max) = (self.invalid.clone(), self.max);
        let mut task = Box::pin(async move {
            let ack = handle_notify(&*handler, &notify, max, &stats).await;
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
            self.tasks.spawn(task);
        }
    }

    /// Ends the connection as `close` says: in-flight work drained (on shutdown) or
    /// aborted, then the AGENT-DISCONNECT if any.
    async fn finish(
        mut self,
        close: Close,
        grace: Duration,
        shutdown: &CancellationToken,
    ) -> Closed {
        if close == Close::PeerDisconnect {
            self.stats
                .disconnects_received
                .fetch_add(1, Ordering::Relaxed);
        }
        // A normal close while the agent stops counts as the stop: the in-flight
        // ACKs go out first.
        let close = match close.reply() {
            Some(Status::Normal) if shutdown.is_cancelled() => Close::Shutdown,
            _ => close,
        };
        if close.drain() {
            let drain = async { while self.tasks.join_next().await.is_some() {} };
            let _ = tokio::time::timeout(grace, drain).await;
        }
        self.tasks.abort_all();
        if let Some(status) = close.reply() {
            self.stats.sent_disconnect(status);
            let frame = disconnect_frame(status);
            // The writer may be gone or stuck on a peer that stopped reading.
            let _ = tokio::time::timeout(WRITE_TIMEOUT, self.tx.send(frame)).await;
        }
        drop(self.tx);
        while self.tasks.join_next().await.is_some() {}
        close.closed()
    }
}

/// Decodes one NOTIFY, runs the handler, and encodes its ACK within `max`.
/// A malformed NOTIFY is an error (the connection closes with status 4); otherwise
/// there is always an ACK: handler errors, panics and oversize answers fall back to
/// an ACK that sets only the error variable.
async fn handle_notify<H: Handler>(
    handler: &H,
    notify: &Notify,
    max: u32,
    stats: &EngineStats,
) -> Result<Option<Bytes>, DecodeError> {
    let (sid, fid) = (notify.stream_id(), notify.frame_id());
    let error_ack = |why: &'static str| {
        stats.handler_failures.fetch_add(1, Ordering::Relaxed);
        let mut actions = Actions::with_capacity(32);
        actions.set(Scope::Txn, ERROR_VAR, &TypedData::str(why));
        encode(sid, fid, &actions, max)
    };
    let messages = notify.messages()?;
    let actions = match AssertUnwindSafe(handler.handle(&messages))
        .catch_unwind()
        .await
    {
        Ok(Ok(actions)) => actions,
        Ok(Err(e)) => return Ok(error_ack(e.0)),
        Err(_panic) => return Ok(error_ack("handler_panic")),
    };
    Ok(encode(sid, fid, &actions, max).or_else(|| error_ack("ack_too_large")))
}

fn encode(sid: u64, fid: u64, actions: &Actions, max: u32) -> Option<Bytes> {
    let mut out = BytesMut::with_capacity(actions.as_bytes().len() + 32);
    encode_ack(sid, fid, actions, &mut out, max).ok()?;
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
