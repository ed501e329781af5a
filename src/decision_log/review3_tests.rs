//! Review of 6aef09d (the writer's idle back-off and its nudge): a log dropped
//! without `flush` loses nothing, and its writer thread stops.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::tests::{Sink, bare, get};
use super::*;
use crate::reason::Reason;

/// Waits (up to 10 s) until the writer has looked at the queues `n` times.
fn wait_for_wakes(log: &DecisionLog, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while log.shared.wakes.load(Ordering::Relaxed) < n {
        assert!(Instant::now() < deadline, "the writer never woke");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A line queued while the writer sleeps through its idle back-off is written when the
/// log is dropped: the writer would wake to find the log gone and drop the queue.
#[test]
fn a_log_dropped_unflushed_writes_what_it_queued() {
    let out = Arc::new(Mutex::new(Vec::<u8>::new()));
    let log = DecisionLog::new(DecisionLogs::All, 1.0, Box::new(Sink(out.clone())));
    // Three empty looks: the writer now sleeps 200 ms; 20 ms for that look to end.
    wait_for_wakes(&log, 3);
    std::thread::sleep(Duration::from_millis(20));
    log.record(
        &get("/queued-at-drop"),
        &bare(Reason::NoRoute),
        Duration::ZERO,
        SystemTime::now(),
    );
    drop(log);
    let text = String::from_utf8(out.lock().unwrap().clone()).unwrap();
    assert_eq!(
        text.lines()
            .filter(|l| l.contains("/queued-at-drop"))
            .count(),
        1,
        "{text:?}"
    );
}

/// Dropping the log stops its writer thread then, not when the thread next finds the
/// log gone (up to `IDLE_DRAIN_EVERY` later; never, while something else holds the
/// shared state, as this test does to watch the thread's handle on it).
#[test]
fn dropping_the_log_stops_its_writer() {
    let log = DecisionLog::new(DecisionLogs::All, 1.0, Box::new(std::io::sink()));
    wait_for_wakes(&log, 1);
    let shared = Arc::clone(&log.shared);
    // The writer thread's only handle on the shared state is a weak one.
    assert_eq!(Arc::weak_count(&shared), 1);
    drop(log);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Arc::weak_count(&shared) > 0 {
        assert!(Instant::now() < deadline, "the writer still runs");
        std::thread::sleep(Duration::from_millis(1));
    }
}
