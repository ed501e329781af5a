//! Review of 15f83d0 (the dozing writer woken by the first line after a quiet spell).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::tests::{Sink, bare, get};
use super::*;
use crate::reason::Reason;

/// That the line is written *before* the writer's own timer fires (the counter test
/// passes with the unpark in `record` removed: the 400 ms timer writes the line). The
/// writer is put at the start of a full `IDLE_DRAIN_EVERY` pause; the line must be out
/// well before that pause ends (found by review).
#[test]
fn a_lone_line_after_a_quiet_spell_is_written_before_the_idle_pause_ends() {
    let out = Arc::new(Mutex::new(Vec::<u8>::new()));
    let log = DecisionLog::new(DecisionLogs::All, 1.0, Box::new(Sink(out.clone())));
    // Pauses 50, 100, 200, 400: after five wakes the writer is in 400 ms pauses.
    let deadline = Instant::now() + Duration::from_secs(10);
    while log.shared.wakes.load(Ordering::Relaxed) < 5 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(1));
    }
    // Just after a wake: the writer has a full 400 ms pause ahead of it.
    let seen = log.shared.wakes.load(Ordering::Relaxed);
    while log.shared.wakes.load(Ordering::Relaxed) == seen {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(20));
    let t = Instant::now();
    log.record(
        &get("/lone"),
        &bare(Reason::NoRoute),
        Duration::ZERO,
        SystemTime::now(),
    );
    while !String::from_utf8_lossy(&out.lock().unwrap()).contains("/lone") {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(
        t.elapsed() < Duration::from_millis(250),
        "the line waited for the writer's timer: {:?}",
        t.elapsed()
    );
}
