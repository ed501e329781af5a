//! Decision → log line: one JSON object per decision, written off the request
//! path. The request task formats its line and appends it to a shared buffer (a
//! short lock and a copy, no syscall); a writer thread drains the buffer every few
//! milliseconds. When the buffer is full the line is dropped and counted, so
//! logging never blocks a decision. Never the token, never its signature: only a
//! short SHA-256 fingerprint of it.

use std::fmt::Write as _;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::agent::{AuthRequest, Outcome};
use crate::config::DecisionLogs;

/// Lines waiting for the writer beyond this are dropped (and counted).
const MAX_BUFFERED: usize = 8 << 20;
const DRAIN_EVERY: Duration = Duration::from_millis(10);

struct Shared {
    buf: Mutex<Vec<u8>>,
    out: Mutex<Box<dyn Write + Send>>,
}

impl Shared {
    fn drain(&self) {
        let pending = std::mem::take(&mut *self.buf.lock().unwrap_or_else(|e| e.into_inner()));
        if pending.is_empty() {
            return;
        }
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let _ = out.write_all(&pending);
        let _ = out.flush();
    }
}

/// Which decisions are logged, and the buffer to the writer.
pub struct DecisionLog {
    mode: DecisionLogs,
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
            buf: Mutex::new(Vec::with_capacity(64 * 1024)),
            out: Mutex::new(out),
        });
        if mode != DecisionLogs::Off {
            let weak = Arc::downgrade(&shared);
            std::thread::Builder::new()
                .name("decision-log".into())
                .spawn(move || {
                    while let Some(shared) = weak.upgrade() {
                        shared.drain();
                        drop(shared);
                        std::thread::sleep(DRAIN_EVERY);
                    }
                })
                .expect("spawn decision log writer");
        }
        DecisionLog {
            mode,
            allow_every,
            allow_seen: AtomicU64::new(0),
            shared,
            dropped: Arc::new(AtomicU64::new(0)),
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

    /// Records one decision (cheap when not wanted; never blocks on I/O).
    pub fn record(&self, req: &AuthRequest<'_>, outcome: &Outcome, latency: Duration) {
        if !self.wanted(outcome.decision.allow()) {
            return;
        }
        let line = format_line(req, outcome, latency, SystemTime::now());
        let mut buf = self.shared.buf.lock().unwrap_or_else(|e| e.into_inner());
        if buf.len() + line.len() > MAX_BUFFERED {
            drop(buf);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        buf.extend_from_slice(line.as_bytes());
    }

    /// Writes out everything buffered (at shutdown).
    pub fn flush(&self) {
        self.shared.drain();
    }
}

/// The first 12 hex digits of SHA-256(token): enough to correlate, useless to replay.
pub fn fingerprint(token: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let mut s = String::with_capacity(12);
    for b in &d.as_ref()[..6] {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Appends `v` as a JSON string (or `null`).
fn json_str(out: &mut String, v: Option<&str>) {
    let Some(v) = v else {
        out.push_str("null");
        return;
    };
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// One decision as a JSON line (newline included). Field order is fixed.
pub fn format_line(
    req: &AuthRequest<'_>,
    outcome: &Outcome,
    latency: Duration,
    now: SystemTime,
) -> String {
    let d = &outcome.decision;
    let id = outcome.identity.as_deref();
    let ts = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let mut o = String::with_capacity(512);
    o.push_str("{\"time\":");
    json_str(&mut o, Some(&format_rfc3339(ts)));
    o.push_str(",\"event\":\"decision\",\"request_id\":");
    json_str(&mut o, req.request_id);
    o.push_str(",\"src\":");
    match req.src {
        Some(a) => {
            let _ = write!(o, "\"{a}\"");
        }
        None => o.push_str("null"),
    }
    o.push_str(",\"method\":");
    json_str(&mut o, Some(req.method));
    o.push_str(",\"host\":");
    json_str(&mut o, Some(req.host));
    o.push_str(",\"path\":");
    json_str(&mut o, Some(req.path));
    let _ = write!(
        o,
        ",\"decision\":\"{}\",\"enforced\":{},\"status\":{},\"reason\":\"{}\",\"sub\":",
        if d.allow() { "allow" } else { "deny" },
        !outcome.shadow,
        d.status(),
        d.reason.as_str()
    );
    json_str(&mut o, id.and_then(|i| i.sub.as_deref()));
    o.push_str(",\"client_id\":");
    json_str(&mut o, id.and_then(|i| i.client_id.as_deref()));
    o.push_str(",\"entity\":");
    json_str(&mut o, d.entity.as_deref());
    o.push_str(",\"owner\":");
    json_str(&mut o, d.owner.as_deref());
    o.push_str(",\"route\":");
    json_str(&mut o, d.route.as_deref());
    o.push_str(",\"issuer\":");
    json_str(&mut o, id.map(|i| i.issuer.as_str()));
    let _ = write!(o, ",\"latency_us\":{},\"token_fp\":", latency.as_micros());
    json_str(&mut o, req.token.map(fingerprint).as_deref());
    o.push_str("}\n");
    o
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
            "2026-11-18T11:06:40.123Z"
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

#[cfg(test)]
mod line_tests {
    use super::*;
    use crate::agent::bare_decision;
    use crate::identity::Identity;
    use crate::reason::Reason;
    use std::sync::Arc;

    #[test]
    fn line_is_valid_json_with_escapes_and_no_token() {
        let token = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJl";
        let req = AuthRequest {
            method: "GET",
            path: "/a\"b\\c\nd\u{1}",
            host: "h",
            token: Some(token),
            src: Some("10.0.0.1".parse().unwrap()),
            request_id: None,
        };
        let outcome = Outcome {
            decision: bare_decision(Reason::Ok),
            identity: Some(Arc::new(Identity {
                issuer: "iss".into(),
                sub: Some("al\"ice".into()),
                ..Default::default()
            })),
            shadow: true,
        };
        let line = format_line(
            &req,
            &outcome,
            Duration::from_micros(42),
            SystemTime::UNIX_EPOCH,
        );
        assert!(line.ends_with('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["path"], "/a\"b\\c\nd\u{1}");
        assert_eq!(v["sub"], "al\"ice");
        assert_eq!(v["enforced"], false);
        assert_eq!(v["latency_us"], 42);
        assert_eq!(v["request_id"], serde_json::Value::Null);
        assert_eq!(v["token_fp"], fingerprint(token));
        assert!(
            !line.contains("c2lnbmF0dXJl") && !line.contains("eyJ"),
            "{line}"
        );
    }

    #[test]
    fn modes_and_sampling() {
        let out = Arc::new(Mutex::new(Vec::<u8>::new()));
        struct W(Arc<Mutex<Vec<u8>>>);
        impl Write for W {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let req = AuthRequest {
            method: "GET",
            path: "/",
            host: "",
            token: None,
            src: None,
            request_id: None,
        };
        let allow = Outcome {
            decision: bare_decision(Reason::Public),
            identity: None,
            shadow: false,
        };
        let deny = Outcome {
            decision: bare_decision(Reason::NoRoute),
            identity: None,
            shadow: false,
        };
        let log = DecisionLog::new(DecisionLogs::All, 0.25, Box::new(W(out.clone())));
        for _ in 0..8 {
            log.record(&req, &allow, Duration::ZERO);
        }
        log.record(&req, &deny, Duration::ZERO);
        log.flush();
        let text = String::from_utf8(out.lock().unwrap().clone()).unwrap();
        assert_eq!(
            text.lines().filter(|l| l.contains("\"allow\"")).count(),
            2,
            "1 in 4 allows"
        );
        assert_eq!(
            text.lines().filter(|l| l.contains("\"no_route\"")).count(),
            1,
            "every deny"
        );
        let out2 = Arc::new(Mutex::new(Vec::<u8>::new()));
        let log = DecisionLog::new(DecisionLogs::Deny, 1.0, Box::new(W(out2.clone())));
        log.record(&req, &allow, Duration::ZERO);
        log.record(&req, &deny, Duration::ZERO);
        log.flush();
        assert_eq!(
            String::from_utf8(out2.lock().unwrap().clone())
                .unwrap()
                .lines()
                .count(),
            1
        );
    }
}
