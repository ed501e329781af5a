//! Decision → log line: one JSON object per decision, written off the request
//! path. Lines are formatted by the request task and handed to a writer thread
//! through a bounded queue; when the queue is full the line is dropped and counted,
//! so logging never slows or blocks a decision. Never the token, never its
//! signature: only a short SHA-256 fingerprint of it.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, SystemTime};

use crate::agent::{AuthRequest, Outcome};
use crate::config::DecisionLogs;

/// Which decisions are logged, and the queue to the writer.
pub struct DecisionLog {
    mode: DecisionLogs,
    /// Log one allow in `allow_every` (1 = all); denies are always logged.
    allow_every: u64,
    allow_seen: AtomicU64,
    tx: Option<SyncSender<String>>,
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
        let dropped = Arc::new(AtomicU64::new(0));
        let allow_every = if allow_sample_rate <= 0.0 {
            0
        } else {
            (1.0 / allow_sample_rate).round().max(1.0) as u64
        };
        let tx = (mode != DecisionLogs::Off).then(|| {
            let (tx, rx) = sync_channel(16_384);
            std::thread::Builder::new()
                .name("decision-log".into())
                .spawn(move || write_loop(rx, out))
                .expect("spawn decision log writer");
            tx
        });
        DecisionLog {
            mode,
            allow_every,
            allow_seen: AtomicU64::new(0),
            tx,
            dropped,
        }
    }

    /// Whether this decision gets a line.
    fn wanted(&self, allowed: bool) -> bool {
        match self.mode {
            DecisionLogs::Off => false,
            DecisionLogs::Deny => !allowed,
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

    /// Records one decision (cheap when not wanted; never blocks).
    pub fn record(&self, req: &AuthRequest<'_>, outcome: &Outcome, latency: Duration) {
        let Some(tx) = &self.tx else { return };
        if !self.wanted(outcome.decision.allow()) {
            return;
        }
        let line = format_line(req, outcome, latency, SystemTime::now());
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = tx.try_send(line) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn write_loop(rx: Receiver<String>, out: Box<dyn Write + Send>) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    while let Ok(line) = rx.recv() {
        let _ = out.write_all(line.as_bytes());
        // Drain what is queued, then flush once.
        while let Ok(more) = rx.try_recv() {
            let _ = out.write_all(more.as_bytes());
        }
        let _ = out.flush();
    }
}

/// The first 12 hex digits of SHA-256(token): enough to correlate, useless to replay.
pub fn fingerprint(token: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    d.as_ref()[..6].iter().map(|b| format!("{b:02x}")).collect()
}

/// One decision as a JSON line (newline included).
pub fn format_line(
    req: &AuthRequest<'_>,
    outcome: &Outcome,
    latency: Duration,
    now: SystemTime,
) -> String {
    let d = &outcome.decision;
    let id = outcome.identity.as_deref();
    let decision = if d.allow() { "allow" } else { "deny" };
    let ts = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let value = serde_json::json!({
        "time": format_rfc3339(ts),
        "event": "decision",
        "request_id": req.request_id,
        "src": req.src.map(|a| a.to_string()),
        "method": req.method,
        "host": req.host,
        "path": req.path,
        "decision": decision,
        "enforced": !outcome.shadow,
        "status": d.status(),
        "reason": d.reason.as_str(),
        "sub": id.and_then(|i| i.sub.as_deref()),
        "client_id": id.and_then(|i| i.client_id.as_deref()),
        "entity": d.entity.as_deref(),
        "owner": d.owner.as_deref(),
        "route": d.route.as_deref(),
        "issuer": id.map(|i| i.issuer.as_str()),
        "latency_us": latency.as_micros() as u64,
        "token_fp": req.token.map(fingerprint),
    });
    let mut line = value.to_string();
    line.push('\n');
    line
}

/// RFC 3339 UTC with milliseconds, without a date-time dependency.
pub fn format_rfc3339(since_epoch: Duration) -> String {
    let secs = since_epoch.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since_epoch.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        assert_eq!(
            format_rfc3339(Duration::from_millis(0)),
            "1970-01-01T00:00:00.000Z"
        );
        assert_eq!(
            format_rfc3339(Duration::from_millis(1_795_000_000_123)),
            "2026-11-18T08:26:40.123Z"
        );
        assert_eq!(
            format_rfc3339(Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00.000Z"
        );
    }

    #[test]
    fn fingerprint_is_short_and_stable() {
        assert_eq!(fingerprint("abc"), "ba7816bf8f01");
        assert_eq!(fingerprint("abc").len(), 12);
    }
}
