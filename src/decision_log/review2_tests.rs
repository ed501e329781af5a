//! Review of 4fd028d (one queue per worker thread): the cap and the drop counter are
//! per queue, a full queue costs no other thread a line, and nothing is lost or written
//! twice when the writer is held off and then drains.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::tests::{Sink, bare, get};
use super::*;
use crate::reason::Reason;

fn outcome() -> Outcome {
    bare(Reason::NoRoute)
}

/// Records `/{tag}/{n}/{pad}` at `t0 + n` ms; whether it was taken (not dropped).
fn record(log: &DecisionLog, tag: &str, n: u64, pad: &str) -> bool {
    let path = format!("/{tag}/{n}/{pad}");
    let req = get(&path);
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
    let before = log.dropped.load(Ordering::Relaxed);
    log.record(
        &req,
        &outcome(),
        Duration::ZERO,
        t0 + Duration::from_millis(n),
    );
    log.dropped.load(Ordering::Relaxed) == before
}

#[test]
fn a_full_queue_drops_and_counts_its_own_lines_only() {
    let out = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::new(DecisionLog::new(
        DecisionLogs::All,
        1.0,
        Box::new(Sink(out.clone())),
    ));
    let pad = "p".repeat(4000);
    // The writer takes `draining` before it swaps a queue: held, nothing drains.
    let hold = log.shared.draining.lock().unwrap();
    let (log_a, pad_a) = (log.clone(), pad.clone());
    let (shard_a, taken_a, dropped_a) = std::thread::spawn(move || {
        let mut taken = 0u64;
        while record(&log_a, "a", taken, &pad_a) {
            taken += 1;
            assert!(taken < 10_000, "the queue is capped");
        }
        // A few more: each dropped and counted.
        let dropped = (0..5)
            .filter(|_| !record(&log_a, "a", 99_999, &pad_a))
            .count();
        (crate::counter::shard(), taken, dropped as u64 + 1)
    })
    .join()
    .unwrap();
    assert_eq!(dropped_a, 6);
    assert_eq!(log.dropped.load(Ordering::Relaxed), 6);
    // The cap is MAX_QUEUED bytes of one queue, give or take the last line.
    let line = {
        let mut q = super::line::Queue::default();
        let path = format!("/a/1000/{pad}");
        let req = get(&path);
        // What one more line of a run adds (the run's route and caller are held once).
        let mut push = || {
            q.push(
                &req,
                &outcome(),
                Duration::ZERO,
                SystemTime::UNIX_EPOCH,
                true,
            );
            q.bytes()
        };
        let first = push();
        push() - first
    };
    assert!(
        taken_a as usize * line <= MAX_QUEUED + 2 * line,
        "{taken_a} lines of ~{line} bytes"
    );
    assert!(taken_a as usize * line >= MAX_QUEUED - 2 * line);
    // Another thread, on another queue, still logs every line.
    let taken_b = loop {
        let log_b = log.clone();
        let got = std::thread::spawn(move || {
            (crate::counter::shard() != shard_a)
                .then(|| (0..50).filter(|&n| record(&log_b, "b", n, "")).count())
        })
        .join()
        .unwrap();
        if let Some(n) = got {
            break n;
        }
    };
    assert_eq!(taken_b, 50, "another queue is not full");
    assert_eq!(log.dropped.load(Ordering::Relaxed), 6);
    drop(hold);
    log.flush();
    let text = String::from_utf8(out.lock().unwrap().clone()).unwrap();
    let mut paths: Vec<String> = text
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let p = v["path"].as_str().unwrap();
            p.split('/').take(3).collect::<Vec<_>>().join("/")
        })
        .collect();
    let n = paths.len();
    assert_eq!(n as u64, taken_a + 50, "every line taken is written");
    paths.sort();
    paths.dedup();
    assert_eq!(paths.len(), n, "no line written twice");
    // After the drain, the full queue takes lines again.
    assert!(record(&log, "c", 0, ""));
}
