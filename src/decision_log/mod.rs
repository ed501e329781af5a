//! Decision → log line: one JSON object per decision, formatted and written off
//! the request path. The request task copies what the line needs into a compact
//! queue entry (strings into a shared buffer, under a short lock: no allocation per
//! decision, no syscall; see `line.rs`); each worker thread has a queue of its own
//! ([`crate::counter::shard`]: the lock and the buffer's tail stay on its core). A
//! writer thread swaps the queues out every [`DRAIN_EVERY`], formats their entries
//! in time order and writes. When the queue is full the
//! entry is dropped and counted, so logging never blocks a decision. Never the
//! token, never its signature: only a short SHA-256 fingerprint of it.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::agent::{AuthRequest, Outcome};
use crate::config::{DecisionLogs, LogIdentity};

mod line;

pub use line::{CALLER_VERIFIED, format_line};
use line::{Hex, Queue};

/// Queued bytes of one queue beyond this are dropped (and counted): about 12,000
/// decisions. The two worker threads of a 2-CPU sidecar have the 8 MiB that one
/// shared queue had (~25,000 decisions, half a second at 50,000/s before the writer
/// must have caught up); 32 MiB at most over the eight queues, plus the writer's
/// spares, which it shrinks back after a burst (`Queue::shrink`).
const MAX_QUEUED: usize = 4 << 20;
const SHARDS: usize = crate::counter::SHARDS;
/// How often the writer drains the queues while decisions come. Each wake of the
/// writer costs ~20–80 µs of CPU on these machines (virtual); every 10 ms that was
/// 0.1 µs per decision at 25,000 a second, and 2.7 ms of CPU a second with no
/// traffic at all (BENCHMARKS.md, "Issue 14: the log writer's wakes").
const DRAIN_EVERY: Duration = Duration::from_millis(25);
/// With nothing to write, the writer waits twice as long each time, up to this. It is
/// then "dozing", and the first line recorded after the quiet spell wakes it
/// (`record`): a line is not held back by the writer's idle pause (CI found a test
/// reading the log right after a lone request, the line still queued). Only a line
/// landing in the instant between the first empty drain and its flag waits, ≤ 50 ms.
const IDLE_DRAIN_EVERY: Duration = Duration::from_millis(400);
/// A queue that grows past this wakes the writer at once: a burst after a quiet spell
/// (the writer asleep for up to [`IDLE_DRAIN_EVERY`]) must not reach the cap. A steady
/// 25 ms drain holds far less (~600 lines at 25,000 decisions a second).
const WAKE_AT: usize = MAX_QUEUED / 4;
/// The writer writes its text out whenever it holds this much (the size it starts with).
const WRITE_CHUNK: usize = 256 * 1024;

/// One worker thread's queue, on cache lines of its own.
#[repr(align(128))]
#[derive(Default)]
struct Shard(Mutex<Queue>);

struct Shared {
    queues: [Shard; SHARDS],
    out: Mutex<Box<dyn Write + Send>>,
    /// Held for a whole drain (swap, format, write): a flush that finds the queue
    /// empty because the writer thread just took it waits for that write.
    draining: Mutex<()>,
    /// Times the writer thread looked at the queues.
    wakes: AtomicU64,
    /// The writer thread, which a filling queue unparks ([`WAKE_AT`]).
    writer: std::sync::OnceLock<std::thread::Thread>,
    /// Times a filling queue woke the writer early.
    nudges: AtomicU64,
    /// Set by the writer while it backs off (its last drain found nothing); the first
    /// line recorded into an empty queue takes it and wakes the writer.
    dozing: AtomicBool,
    /// Times a line woke a dozing writer.
    rousings: AtomicU64,
    /// Set when the log is dropped: the writer thread stops at once.
    stopping: AtomicBool,
}

impl Shared {
    /// Swaps the queues with `spares` (keeping the allocations), formats, writes;
    /// whether there was anything to write.
    fn drain_with(&self, spares: &mut [Queue; SHARDS], text: &mut Vec<u8>) -> bool {
        let _draining = self.draining.lock().unwrap_or_else(|e| e.into_inner());
        for (shard, spare) in self.queues.iter().zip(spares.iter_mut()) {
            spare.clear();
            std::mem::swap(
                &mut *shard.0.lock().unwrap_or_else(|e| e.into_inner()),
                spare,
            );
        }
        if spares.iter().all(Queue::is_empty) {
            return false;
        }
        text.clear();
        // Written as it is formatted, a chunk at a time: the text of a full queue is
        // not bounded by its cap (`line::format_all_in_chunks`).
        let mut write = |text: &mut Vec<u8>| {
            let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
            let _ = out.write_all(text);
            text.clear();
        };
        line::format_all_in_chunks(spares, text, WRITE_CHUNK, &mut write);
        write(text);
        spares.iter_mut().for_each(Queue::shrink);
        let _ = self.out.lock().unwrap_or_else(|e| e.into_inner()).flush();
        // A line longer than a chunk (a long path, a full identity) grew it.
        text.shrink_to(2 * WRITE_CHUNK);
        true
    }

    fn drain(&self) {
        self.drain_with(&mut Default::default(), &mut Vec::new());
    }
}

/// Which decisions are logged, and the buffer to the writer.
pub struct DecisionLog {
    mode: DecisionLogs,
    identity: LogIdentity,
    /// Log one allow in `allow_every` (1 = all, 0 = none); denies are always logged.
    allow_every: u64,
    allow_seen: AtomicU64,
    shared: Arc<Shared>,
    /// Lines dropped because the writer fell behind.
    pub dropped: Arc<AtomicU64>,
}

impl DecisionLog {
    /// Starts the writer thread on `out` (stdout in production).
    pub fn new(
        mode: DecisionLogs,
        allow_sample_rate: f64,
        out: Box<dyn Write + Send>,
    ) -> DecisionLog {
        let allow_every = if allow_sample_rate <= 0.0 {
            0
        } else {
            (1.0 / allow_sample_rate).round().max(1.0) as u64
        };
        let shared = Arc::new(Shared {
            queues: Default::default(),
            out: Mutex::new(out),
            draining: Mutex::new(()),
            wakes: AtomicU64::new(0),
            writer: std::sync::OnceLock::new(),
            nudges: AtomicU64::new(0),
            dozing: AtomicBool::new(false),
            rousings: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
        });
        if mode != DecisionLogs::Off {
            let weak = Arc::downgrade(&shared);
            let writer = std::thread::Builder::new()
                .name("decision-log".into())
                .spawn(move || {
                    let (mut spare, mut text) =
                        (Default::default(), Vec::with_capacity(WRITE_CHUNK));
                    let mut pause = DRAIN_EVERY;
                    while let Some(shared) = weak.upgrade() {
                        if shared.stopping.load(Ordering::Acquire) {
                            break;
                        }
                        shared.wakes.fetch_add(1, Ordering::Relaxed);
                        pause = if shared.drain_with(&mut spare, &mut text) {
                            shared.dozing.store(false, Ordering::Relaxed);
                            DRAIN_EVERY
                        } else {
                            // Nothing: doze. From the second empty drain the flag is
                            // already up when the queues are taken, so a line is in
                            // them or, pushed after under the same lock, sees it.
                            shared.dozing.store(true, Ordering::Relaxed);
                            (pause * 2).min(IDLE_DRAIN_EVERY)
                        };
                        drop(shared);
                        // Woken early by a filling queue or by the first line after
                        // a quiet spell (`record`); the park token is kept, so a wake
                        // between the drain and here is not lost.
                        std::thread::park_timeout(pause);
                    }
                })
                .expect("spawn decision log writer");
            let _ = shared.writer.set(writer.thread().clone());
        }
        DecisionLog {
            mode,
            identity: LogIdentity::Full,
            allow_every,
            allow_seen: AtomicU64::new(0),
            shared,
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    /// How much of the caller each line records (full by default).
    pub fn with_identity(mut self, identity: LogIdentity) -> Self {
        self.identity = identity;
        self
    }

    /// Whether this decision gets a line.
    fn wanted(&self, allowed: bool) -> bool {
        match self.mode {
            DecisionLogs::Off => false,
            DecisionLogs::Deny => !allowed,
            // Every allow (the default) without the shared counter: one atomic
            // write per decision that each worker thread took in turn.
            DecisionLogs::All if allowed && self.allow_every == 1 => true,
            DecisionLogs::All if allowed => {
                self.allow_every != 0
                    && self
                        .allow_seen
                        .fetch_add(1, Ordering::Relaxed)
                        .is_multiple_of(self.allow_every)
            }
            DecisionLogs::All => true,
        }
    }

    /// Records one decision made at `at` (cheap when not wanted; never blocks on I/O).
    pub fn record(
        &self,
        req: &AuthRequest<'_>,
        outcome: &Outcome,
        latency: Duration,
        at: SystemTime,
    ) {
        if !self.wanted(outcome.decision.allow()) {
            return;
        }
        let shard = &self.shared.queues[crate::counter::shard()];
        let mut queue = shard.0.lock().unwrap_or_else(|e| e.into_inner());
        let before = queue.bytes();
        if before >= MAX_QUEUED {
            drop(queue);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        queue.push(
            req,
            outcome,
            latency,
            at,
            self.identity == LogIdentity::Full,
        );
        if before == 0 {
            // The first line since the writer took this queue: if the writer found
            // nothing last time it is dozing, so wake it (once: one line takes the
            // flag). Under load the drains always find lines and this is one load.
            drop(queue);
            if self.shared.dozing.load(Ordering::Relaxed)
                && self.shared.dozing.swap(false, Ordering::Relaxed)
            {
                self.shared.rousings.fetch_add(1, Ordering::Relaxed);
                self.wake_writer();
            }
        } else if before < WAKE_AT && queue.bytes() >= WAKE_AT {
            drop(queue);
            self.shared.nudges.fetch_add(1, Ordering::Relaxed);
            self.wake_writer();
        }
    }

    fn wake_writer(&self) {
        if let Some(writer) = self.shared.writer.get() {
            writer.unpark();
        }
    }

    /// Writes out everything buffered (at shutdown).
    pub fn flush(&self) {
        self.shared.drain();
    }
}

impl Drop for DecisionLog {
    /// Writes out what is still queued: the writer, asleep for up to
    /// [`IDLE_DRAIN_EVERY`], would find the log gone and drop it (found by review). Then
    /// stops the writer thread now rather than at its next wake.
    fn drop(&mut self) {
        self.flush();
        self.shared.stopping.store(true, Ordering::Release);
        self.wake_writer();
    }
}

/// The first 12 hex digits of SHA-256(token): enough to correlate, useless to replay.
pub fn fingerprint(token: &str) -> String {
    Hex(&crate::token::token_digest(token)[..6]).to_string()
}

#[cfg(test)]
mod review2_tests;
#[cfg(test)]
mod review3_tests;
#[cfg(test)]
mod review4_tests;
#[cfg(test)]
mod review_log_tests;
#[cfg(test)]
mod tests;
