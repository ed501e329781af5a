//! Decision → log line: one JSON object per decision, formatted and written off
//! the request path. The request task copies what the line needs into a queue
//! entry (one small allocation and a few reference-count bumps, under a short
//! lock, no syscall); a writer thread drains the queue every few milliseconds,
//! formats and writes. When the queue is full the entry is dropped and counted, so
//! logging never blocks a decision. Never the token, never its signature: only a
//! short SHA-256 fingerprint of it.

use std::fmt::Write as _;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::agent::{AuthRequest, Outcome};
use crate::config::DecisionLogs;
use crate::reason::Reason;

/// Queued bytes beyond this are dropped (and counted): about 30,000 decisions.
const MAX_QUEUED: usize = 8 << 20;
const DRAIN_EVERY: Duration = Duration::from_millis(10);

/// One line's fields, borrowed.
struct View<'a> {
    time: SystemTime,
    request_id: Option<&'a str>,
    src: Option<std::net::IpAddr>,
    method: &'a str,
    host: &'a str,
    path: &'a str,
    allow: bool,
    enforced: bool,
    status: u16,
    reason: &'static str,
    sub: Option<&'a str>,
    client_id: Option<&'a str>,
    entity: Option<&'a str>,
    owner: Option<&'a str>,
    route: Option<&'a str>,
    issuer: Option<&'a str>,
    latency: Duration,
    token_fp: Option<[u8; 6]>,
}

impl<'a> View<'a> {
    fn new(
        req: &'a AuthRequest<'a>,
        outcome: &'a Outcome,
        latency: Duration,
        time: SystemTime,
    ) -> View<'a> {
        let d = &outcome.decision;
        let id = outcome.identity.as_deref();
        View {
            time,
            request_id: req.request_id,
            src: req.src,
            method: req.method,
            host: req.host,
            path: req.path,
            allow: d.allow(),
            enforced: !outcome.shadow,
            status: d.status(),
            reason: d.reason.as_str(),
            sub: id.and_then(|i| i.sub.as_deref()),
            client_id: id.and_then(|i| i.client_id.as_deref()),
            entity: d.entity.as_deref(),
            owner: d.owner.as_deref(),
            route: d.route.as_deref(),
            issuer: id.map(|i| i.issuer.as_str()),
            latency,
            token_fp: outcome.token_fp,
        }
    }
}

/// Entries are appended to a shared byte queue in a compact binary form (no heap
/// allocation per decision, nothing freed by another thread); the writer swaps the
/// queue with its spare buffer, decodes and formats. Field i of
/// [`View`]'s strings is a u32 length (`u32::MAX` for `None`) and the bytes.
fn encode_entry(q: &mut Vec<u8>, v: &View<'_>) {
    let ts = v
        .time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    q.extend_from_slice(&ts.as_secs().to_le_bytes());
    q.extend_from_slice(&ts.subsec_nanos().to_le_bytes());
    q.extend_from_slice(
        &u64::try_from(v.latency.as_micros())
            .unwrap_or(u64::MAX)
            .to_le_bytes(),
    );
    q.extend_from_slice(&v.status.to_le_bytes());
    let reason = Reason::ALL
        .iter()
        .position(|r| r.as_str() == v.reason)
        .unwrap_or(0) as u8;
    let src_kind = match v.src {
        None => 0u8,
        Some(std::net::IpAddr::V4(_)) => 1,
        Some(std::net::IpAddr::V6(_)) => 2,
    };
    let flags = u8::from(v.allow) | u8::from(v.enforced) << 1 | u8::from(v.token_fp.is_some()) << 2;
    q.extend_from_slice(&[reason, flags, src_kind]);
    match v.src {
        Some(std::net::IpAddr::V4(a)) => q.extend_from_slice(&a.octets()),
        Some(std::net::IpAddr::V6(a)) => q.extend_from_slice(&a.octets()),
        None => {}
    }
    if let Some(fp) = v.token_fp {
        q.extend_from_slice(&fp);
    }
    for f in [
        Some(v.method),
        Some(v.host),
        Some(v.path),
        v.request_id,
        v.sub,
        v.client_id,
        v.entity,
        v.owner,
        v.route,
        v.issuer,
    ] {
        match f {
            Some(f) => {
                q.extend_from_slice(&(f.len() as u32).to_le_bytes());
                q.extend_from_slice(f.as_bytes());
            }
            None => q.extend_from_slice(&u32::MAX.to_le_bytes()),
        }
    }
}

/// Reads entries back (only ever what `encode_entry` wrote) and formats each.
fn format_entries(mut q: &[u8], out: &mut String) {
    fn take<'a>(q: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (a, b) = q.split_at_checked(n)?;
        *q = b;
        Some(a)
    }
    fn u32le(q: &mut &[u8]) -> Option<u32> {
        Some(u32::from_le_bytes(take(q, 4)?.try_into().ok()?))
    }
    fn u64le(q: &mut &[u8]) -> Option<u64> {
        Some(u64::from_le_bytes(take(q, 8)?.try_into().ok()?))
    }
    while !q.is_empty() {
        let entry = (|| {
            let secs = u64le(&mut q)?;
            let nanos = u32le(&mut q)?;
            let latency = u64le(&mut q)?;
            let status = u16::from_le_bytes(take(&mut q, 2)?.try_into().ok()?);
            let [reason, flags, src_kind] = <[u8; 3]>::try_from(take(&mut q, 3)?).ok()?;
            let src = match src_kind {
                1 => Some(std::net::IpAddr::from(
                    <[u8; 4]>::try_from(take(&mut q, 4)?).ok()?,
                )),
                2 => Some(std::net::IpAddr::from(
                    <[u8; 16]>::try_from(take(&mut q, 16)?).ok()?,
                )),
                _ => None,
            };
            let token_fp = if flags & 4 != 0 {
                Some(<[u8; 6]>::try_from(take(&mut q, 6)?).ok()?)
            } else {
                None
            };
            let mut fields: [Option<&str>; 10] = [None; 10];
            for f in &mut fields {
                let len = u32le(&mut q)?;
                if len != u32::MAX {
                    *f = Some(std::str::from_utf8(take(&mut q, len as usize)?).ok()?);
                }
            }
            Some(View {
                time: SystemTime::UNIX_EPOCH + Duration::new(secs, nanos),
                method: fields[0].unwrap_or(""),
                host: fields[1].unwrap_or(""),
                path: fields[2].unwrap_or(""),
                request_id: fields[3],
                sub: fields[4],
                client_id: fields[5],
                entity: fields[6],
                owner: fields[7],
                route: fields[8],
                issuer: fields[9],
                src,
                allow: flags & 1 != 0,
                enforced: flags & 2 != 0,
                status,
                reason: Reason::ALL
                    .get(usize::from(reason))
                    .map_or("internal_error", |r| r.as_str()),
                latency: Duration::from_micros(latency),
                token_fp,
            })
        })();
        match entry {
            Some(v) => format_view(out, &v),
            None => return, // cannot happen: we wrote it; stop rather than loop
        }
    }
}

struct Shared {
    queue: Mutex<Vec<u8>>,
    out: Mutex<Box<dyn Write + Send>>,
}

impl Shared {
    /// Swaps the queue with `spare` (keeping both allocations), formats, writes.
    fn drain_with(&self, spare: &mut Vec<u8>, text: &mut String) {
        spare.clear();
        std::mem::swap(
            &mut *self.queue.lock().unwrap_or_else(|e| e.into_inner()),
            spare,
        );
        if spare.is_empty() {
            return;
        }
        text.clear();
        format_entries(spare, text);
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    }

    fn drain(&self) {
        self.drain_with(&mut Vec::new(), &mut String::new());
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
            queue: Mutex::new(Vec::with_capacity(1024)),
            out: Mutex::new(out),
        });
        if mode != DecisionLogs::Off {
            let weak = Arc::downgrade(&shared);
            std::thread::Builder::new()
                .name("decision-log".into())
                .spawn(move || {
                    let (mut spare, mut text) = (Vec::with_capacity(256 * 1024), String::new());
                    while let Some(shared) = weak.upgrade() {
                        shared.drain_with(&mut spare, &mut text);
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
        let view = View::new(req, outcome, latency, SystemTime::now());
        let mut queue = self.shared.queue.lock().unwrap_or_else(|e| e.into_inner());
        if queue.len() >= MAX_QUEUED {
            drop(queue);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        encode_entry(&mut queue, &view);
    }

    /// Writes out everything buffered (at shutdown).
    pub fn flush(&self) {
        self.shared.drain();
    }
}

/// The first 12 hex digits of SHA-256(token): enough to correlate, useless to replay.
pub fn fingerprint(token: &str) -> String {
    let d = crate::token::token_digest(token);
    hex6(&[d[0], d[1], d[2], d[3], d[4], d[5]])
}

fn hex6(b: &[u8; 6]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(12);
    for &x in b {
        s.push(HEX[usize::from(x >> 4)] as char);
        s.push(HEX[usize::from(x & 15)] as char);
    }
    s
}

/// Appends `v` as a JSON string (or `null`). Runs of plain bytes are copied whole.
fn json_str(out: &mut String, v: Option<&str>) {
    let Some(v) = v else {
        out.push_str("null");
        return;
    };
    out.push('"');
    let mut plain = 0;
    for (i, c) in v.char_indices() {
        let esc = match c {
            '"' => "\\\"",
            '\\' => "\\\\",
            '\n' => "\\n",
            '\r' => "\\r",
            '\t' => "\\t",
            c if (c as u32) < 0x20 || c == '\u{2028}' || c == '\u{2029}' => "",
            _ => continue,
        };
        out.push_str(&v[plain..i]);
        if esc.is_empty() {
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push_str(esc);
        }
        plain = i + c.len_utf8();
    }
    out.push_str(&v[plain..]);
    out.push('"');
}

/// One decision as a JSON line (newline included). Field order is fixed.
pub fn format_line(
    req: &AuthRequest<'_>,
    outcome: &Outcome,
    latency: Duration,
    now: SystemTime,
) -> String {
    let mut o = String::with_capacity(512);
    format_view(&mut o, &View::new(req, outcome, latency, now));
    o
}

/// Appends a decimal number (no `core::fmt` on this path: it runs for every line).
fn push_u64(o: &mut String, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    o.push_str(std::str::from_utf8(&buf[i..]).unwrap_or("0"));
}

/// Appends one decision line to `o`.
fn format_view(o: &mut String, v: &View<'_>) {
    let ts = v
        .time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    o.push_str("{\"time\":\"");
    push_rfc3339(o, ts);
    o.push_str("\",\"event\":\"decision\",\"request_id\":");
    json_str(o, v.request_id);
    o.push_str(",\"src\":");
    match v.src {
        Some(std::net::IpAddr::V4(a)) => {
            o.push('"');
            for (k, b) in a.octets().iter().enumerate() {
                if k > 0 {
                    o.push('.');
                }
                push_u64(o, u64::from(*b));
            }
            o.push('"');
        }
        Some(a) => {
            let _ = write!(o, "\"{a}\"");
        }
        None => o.push_str("null"),
    }
    o.push_str(",\"method\":");
    json_str(o, Some(v.method));
    o.push_str(",\"host\":");
    json_str(o, Some(v.host));
    o.push_str(",\"path\":");
    json_str(o, Some(v.path));
    o.push_str(if v.allow {
        ",\"decision\":\"allow\""
    } else {
        ",\"decision\":\"deny\""
    });
    o.push_str(if v.enforced {
        ",\"enforced\":true,\"status\":"
    } else {
        ",\"enforced\":false,\"status\":"
    });
    push_u64(o, u64::from(v.status));
    o.push_str(",\"reason\":\"");
    o.push_str(v.reason);
    o.push_str("\",\"sub\":");
    json_str(o, v.sub);
    o.push_str(",\"client_id\":");
    json_str(o, v.client_id);
    o.push_str(",\"entity\":");
    json_str(o, v.entity);
    o.push_str(",\"owner\":");
    json_str(o, v.owner);
    o.push_str(",\"route\":");
    json_str(o, v.route);
    o.push_str(",\"issuer\":");
    json_str(o, v.issuer);
    o.push_str(",\"latency_us\":");
    push_u64(o, u64::try_from(v.latency.as_micros()).unwrap_or(u64::MAX));
    o.push_str(",\"token_fp\":");
    json_str(o, v.token_fp.as_ref().map(hex6).as_deref());
    o.push_str("}\n");
}

/// Appends `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn push_rfc3339(o: &mut String, since_epoch: Duration) {
    let (date, [h, m, s]) = civil(since_epoch.as_secs() as i64);
    let [year, month, day] = date;
    let two = |o: &mut String, n: i64| {
        o.push((b'0' + (n / 10 % 10) as u8) as char);
        o.push((b'0' + (n % 10) as u8) as char);
    };
    two(o, year / 100);
    two(o, year % 100);
    o.push('-');
    two(o, month);
    o.push('-');
    two(o, day);
    o.push('T');
    two(o, h);
    o.push(':');
    two(o, m);
    o.push(':');
    two(o, s);
    o.push('.');
    let ms = i64::from(since_epoch.subsec_millis());
    o.push((b'0' + (ms / 100) as u8) as char);
    two(o, ms % 100);
    o.push('Z');
}

/// Civil date and time of a unix second (Howard Hinnant's days-to-civil).
fn civil(secs: i64) -> ([i64; 3], [i64; 3]) {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    ([year, month, day], [rem / 3600, rem % 3600 / 60, rem % 60])
}

/// RFC 3339 UTC with milliseconds, without a date-time dependency.
pub fn format_rfc3339(since_epoch: Duration) -> String {
    let mut o = String::with_capacity(24);
    push_rfc3339(&mut o, since_epoch);
    o
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
            token_fp: Some({
                let d = crate::token::token_digest(token);
                [d[0], d[1], d[2], d[3], d[4], d[5]]
            }),
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
    fn queued_entries_format_exactly_like_a_direct_line() {
        let id = Arc::new(Identity {
            issuer: "https://i".into(),
            sub: Some("s\u{e9}".into()),
            client_id: Some("c".into()),
            ..Default::default()
        });
        let cases = [
            (
                Some("::1".parse().unwrap()),
                Some(id.clone()),
                Some([1, 2, 3, 4, 5, 255]),
                Some("rid"),
            ),
            (Some("10.0.0.1".parse().unwrap()), None, None, None),
            (None, Some(id), None, Some("")),
        ];
        let mut q = Vec::new();
        let mut want = String::new();
        for (src, identity, token_fp, request_id) in cases {
            let req = AuthRequest {
                method: "PATCH",
                path: "/p\"",
                host: "h:1",
                token: None,
                src,
                request_id,
            };
            let outcome = Outcome {
                decision: bare_decision(Reason::NotMember),
                identity,
                shadow: false,
                token_fp,
            };
            let now = SystemTime::UNIX_EPOCH + Duration::new(1_795_000_000, 123_456_789);
            let v = View::new(&req, &outcome, Duration::from_micros(7), now);
            encode_entry(&mut q, &v);
            want.push_str(&format_line(&req, &outcome, Duration::from_micros(7), now));
        }
        let mut got = String::new();
        format_entries(&q, &mut got);
        assert_eq!(got, want);
        for r in Reason::ALL {
            assert_eq!(
                Reason::ALL[Reason::ALL
                    .iter()
                    .position(|x| x.as_str() == r.as_str())
                    .unwrap()],
                r
            );
        }
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
            token_fp: None,
        };
        let deny = Outcome {
            decision: bare_decision(Reason::NoRoute),
            identity: None,
            shadow: false,
            token_fp: None,
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
