//! Review of 8ccb8e4 (entries hold the identity, counted once per run): the writer's
//! text is not bounded by the queue's cap, since each line of a run prints the shared
//! identity's groups again; it must go out a chunk at a time.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::tests::get;
use super::*;
use crate::identity::Identity;
use crate::policy::Decision;
use crate::reason::Reason;

/// Keeps what is written, and the largest single write.
struct Largest(Arc<Mutex<(Vec<u8>, usize)>>);

impl Write for Largest {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let mut seen = self.0.lock().unwrap();
        seen.0.extend_from_slice(b);
        seen.1 = seen.1.max(b.len());
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_run_of_full_identity_lines_is_written_a_chunk_at_a_time() {
    let id = Arc::new(Identity {
        issuer: "https://i".into(),
        sub: Some("alice".into()),
        groups: (0..200).map(|n| format!("group-{n:04}")).collect(),
        ..Default::default()
    });
    let outcome = Outcome {
        decision: Decision::bare(Reason::InsufficientScope),
        identity: Some(id),
        credential_error: None,
        shadow: false,
        token_fp: None,
        browser: Default::default(),
    };
    let seen = Arc::new(Mutex::new((Vec::new(), 0)));
    let log = DecisionLog::new(DecisionLogs::All, 1.0, Box::new(Largest(seen.clone())));
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
    const LINES: usize = 2_000;
    let hold = log.shared.draining.lock().unwrap();
    for _ in 0..LINES {
        log.record(&get("/x"), &outcome, Duration::ZERO, at);
    }
    let queued = log.shared.queues[crate::counter::shard()]
        .0
        .lock()
        .unwrap()
        .bytes();
    drop(hold);
    log.flush();
    let (text, largest) = std::mem::take(&mut *seen.lock().unwrap());
    let text = String::from_utf8(text).unwrap();
    let line = text.lines().next().unwrap().len() + 1;
    assert_eq!(text.lines().count(), LINES);
    assert!(line > 2_000, "each line prints the groups: {line}");
    // The amplification: the cap saw far less than the writer formats.
    assert!(text.len() > 10 * queued, "{} from {queued}", text.len());
    assert!(
        largest <= WRITE_CHUNK + line,
        "one write of {largest} bytes (chunk {WRITE_CHUNK})"
    );
    assert_eq!(log.dropped.load(Ordering::Relaxed), 0);
}
