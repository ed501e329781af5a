//! Decision → log line, the entry and the format (beside the request flow, after the
//! decision). The request task copies what a line needs into a compact [`Entry`]
//! queued in a [`Queue`] (the strings into one shared text buffer: no allocation per
//! decision, nothing for another thread to free); the writer thread turns each entry
//! into a [`Line`], a borrowed view that serde_json writes as one JSON object.

use std::io;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use serde::{Serialize, Serializer};
use serde_json::ser::{CharEscape, Formatter};

use std::sync::Arc;

use crate::agent::{AuthRequest, Outcome};
use crate::identity::Identity;
use crate::reason::Reason;

/// Where one string field sits in [`Queue::text`]; `start == u32::MAX` is `None`.
#[derive(Clone, Copy)]
struct Slot {
    start: u32,
    len: u32,
}

impl Slot {
    const NONE: Slot = Slot {
        start: u32::MAX,
        len: 0,
    };
}

/// One decision as queued: the fixed-size fields as they are, the strings as slots.
struct Entry {
    time: SystemTime,
    latency: Duration,
    status: u16,
    reason: Reason,
    allow: bool,
    enforced: bool,
    src: Option<IpAddr>,
    token_fp: Option<[u8; 6]>,
    method: Slot,
    host: Slot,
    path: Slot,
    request_id: Slot,
    sub: Slot,
    client_id: Slot,
    entity: Slot,
    owner: Slot,
    route: Slot,
    issuer: Slot,
    /// How the credentials went: `None` verified (or not read), else the reason.
    credential_error: Option<Reason>,
    /// The verified caller, kept whole (one reference count, no copy) when lines
    /// record the full identity; the writer formats its lists.
    identity: Option<Arc<Identity>>,
}

/// Entries waiting for the writer, which swaps the whole queue with an empty one.
#[derive(Default)]
pub(super) struct Queue {
    entries: Vec<Entry>,
    /// Every entry's strings, back to back.
    text: String,
}

impl Queue {
    /// Memory held by the queued entries (for the cap).
    pub(super) fn bytes(&self) -> usize {
        self.entries.len() * std::mem::size_of::<Entry>() + self.text.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Empties the queue, keeping its allocations.
    pub(super) fn clear(&mut self) {
        self.entries.clear();
        self.text.clear();
    }

    fn slot(&mut self, s: Option<&str>) -> Slot {
        let Some(s) = s else { return Slot::NONE };
        // The queue is capped far below 4 GiB (`MAX_QUEUED`): the offsets fit.
        let start = self.text.len() as u32;
        self.text.push_str(s);
        Slot {
            start,
            len: s.len() as u32,
        }
    }

    fn str(&self, s: Slot) -> Option<&str> {
        if s.start == u32::MAX {
            return None;
        }
        let start = s.start as usize;
        self.text.get(start..start + s.len as usize)
    }

    /// Queues one decision (request path: copies, no formatting).
    pub(super) fn push(
        &mut self,
        req: &AuthRequest<'_>,
        outcome: &Outcome,
        latency: Duration,
        time: SystemTime,
        full_identity: bool,
    ) {
        let d = &outcome.decision;
        let id = outcome.identity.as_deref();
        let entry = Entry {
            time,
            latency,
            status: d.status(),
            reason: d.reason,
            allow: d.allow(),
            enforced: !outcome.shadow,
            src: req.src,
            token_fp: outcome.token_fp,
            method: self.slot(Some(req.method)),
            host: self.slot(Some(req.host)),
            path: self.slot(Some(req.path)),
            request_id: self.slot(req.request_id),
            sub: self.slot(id.and_then(|i| i.sub.as_deref())),
            client_id: self.slot(id.and_then(|i| i.client_id.as_deref())),
            entity: self.slot(d.entity.as_deref()),
            owner: self.slot(d.owner.as_deref()),
            route: self.slot(d.route.as_deref()),
            issuer: self.slot(id.map(|i| i.issuer.as_str())),
            credential_error: outcome.credential_error,
            identity: outcome.identity.clone().filter(|_| full_identity),
        };
        self.entries.push(entry);
    }

    fn line<'b>(&'b self, e: &'b Entry, time: Time<'b>) -> Line<'b> {
        Line {
            time,
            event: "decision",
            request_id: self.str(e.request_id),
            src: e.src,
            method: self.str(e.method).unwrap_or_default(),
            host: self.str(e.host).unwrap_or_default(),
            path: self.str(e.path).unwrap_or_default(),
            decision: if e.allow { "allow" } else { "deny" },
            enforced: e.enforced,
            status: e.status,
            reason: e.reason,
            sub: self.str(e.sub),
            client_id: self.str(e.client_id),
            entity: self.str(e.entity),
            owner: self.str(e.owner),
            route: self.str(e.route),
            issuer: self.str(e.issuer),
            latency_us: u64::try_from(e.latency.as_micros()).unwrap_or(u64::MAX),
            token_fp: e.token_fp,
            caller: match (e.credential_error, self.str(e.issuer)) {
                (Some(r), _) => Some(r.as_str()),
                (None, Some(_)) => Some(CALLER_VERIFIED),
                (None, None) => None,
            },
            id: e.identity.as_deref().map(|i| IdentityFields {
                email: i.email.as_deref(),
                groups: &i.groups,
                scopes: &i.scopes,
                user: i.backstage_user.as_deref(),
            }),
        }
    }

    /// Appends every queued entry to `out`, one JSON line each (writer thread).
    pub(super) fn format(&self, out: &mut Vec<u8>) {
        let mut second = SecondCache::default();
        for e in &self.entries {
            let mut json = serde_json::Serializer::with_formatter(&mut *out, LineFormatter);
            let mut buf = [0u8; 24];
            let time = match second.format(e.time, &mut buf) {
                Some(text) => Time::Text(text),
                None => Time::Slow(e.time),
            };
            // Writing to a Vec cannot fail, nor can serializing these fields.
            let _ = self.line(e, time).serialize(&mut json);
            out.push(b'\n');
        }
    }
}

/// A line's time: formatted here (the usual case), or by the clock's formatter.
enum Time<'a> {
    Text(&'a str),
    Slow(SystemTime),
}

/// The `YYYY-MM-DDTHH:MM:SS.` of the last whole second formatted: the lines of one
/// drain share a few seconds at most, so `time`'s formatter runs once a second and
/// each line only appends its milliseconds (the formatter was 2.5% of the agent's
/// CPU per warm decision; BENCHMARKS.md, "Issue 14: the warm path").
#[derive(Default)]
struct SecondCache {
    secs: Option<u64>,
    prefix: [u8; 20],
}

impl SecondCache {
    /// `t` as `rfc3339_millis` writes it, in `buf`; `None` for a time it writes
    /// otherwise (before the epoch, after year 9999).
    fn format<'b>(&mut self, t: SystemTime, buf: &'b mut [u8; 24]) -> Option<&'b str> {
        let since = t.duration_since(std::time::UNIX_EPOCH).ok()?;
        let secs = since.as_secs();
        if self.secs != Some(secs) {
            let whole = std::time::UNIX_EPOCH + Duration::from_secs(secs);
            let text = crate::clock::rfc3339_millis(whole).to_string();
            let prefix = text.strip_suffix("000Z")?;
            self.prefix = prefix.as_bytes().try_into().ok()?;
            self.secs = Some(secs);
        }
        let ms = since.subsec_millis();
        buf[..20].copy_from_slice(&self.prefix);
        buf[20] = b'0' + (ms / 100) as u8;
        buf[21] = b'0' + (ms / 10 % 10) as u8;
        buf[22] = b'0' + (ms % 10) as u8;
        buf[23] = b'Z';
        std::str::from_utf8(&buf[..]).ok()
    }
}

/// One decision line. Field order is fixed: it is the order of the JSON keys.
#[derive(Serialize)]
struct Line<'a> {
    #[serde(serialize_with = "rfc3339")]
    time: Time<'a>,
    event: &'static str,
    request_id: Option<&'a str>,
    src: Option<IpAddr>,
    method: &'a str,
    host: &'a str,
    path: &'a str,
    decision: &'static str,
    enforced: bool,
    status: u16,
    #[serde(serialize_with = "reason")]
    reason: Reason,
    sub: Option<&'a str>,
    client_id: Option<&'a str>,
    entity: Option<&'a str>,
    owner: Option<&'a str>,
    route: Option<&'a str>,
    issuer: Option<&'a str>,
    latency_us: u64,
    #[serde(serialize_with = "hex")]
    token_fp: Option<[u8; 6]>,
    /// `verified`, or why the credentials gave no identity (`missing_token`,
    /// `expired`, ...); `null` when the decision came before they were read.
    caller: Option<&'static str>,
    /// The rest of the decision's inputs, with `[log] identity = "full"`.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    id: Option<IdentityFields<'a>>,
}

/// `caller` of a line whose credentials were verified.
pub const CALLER_VERIFIED: &str = "verified";

/// What the policy reads of a verified caller besides issuer, subject and client id.
#[derive(Serialize)]
struct IdentityFields<'a> {
    email: Option<&'a str>,
    groups: &'a [String],
    scopes: &'a [String],
    user: Option<&'a str>,
}

fn rfc3339<S: Serializer>(t: &Time<'_>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Time::Text(text) => s.serialize_str(text),
        Time::Slow(t) => s.collect_str(&crate::clock::rfc3339_millis(*t)),
    }
}

fn reason<S: Serializer>(r: &Reason, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(r.as_str())
}

fn hex<S: Serializer>(fp: &Option<[u8; 6]>, s: S) -> Result<S::Ok, S::Error> {
    match fp {
        Some(fp) => {
            // By hand: `Hex` through `collect_str` formats each byte with `write!`.
            const DIGITS: &[u8; 16] = b"0123456789abcdef";
            let mut text = [0u8; 12];
            for (i, b) in fp.iter().enumerate() {
                text[2 * i] = DIGITS[usize::from(b >> 4)];
                text[2 * i + 1] = DIGITS[usize::from(b & 15)];
            }
            s.serialize_str(std::str::from_utf8(&text).unwrap_or_default())
        }
        None => s.serialize_none(),
    }
}

/// Bytes as lowercase hex digits.
pub(super) struct Hex<'a>(pub(super) &'a [u8]);

impl std::fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// serde_json's compact output, with three escapes more: U+0085 (NEL), U+2028 and
/// U+2029 end a line in JavaScript, Python's `splitlines` and some log viewers, so a
/// path cannot split a line there; and backspace and form feed as `\u0008` and
/// `\u000c`, as every other control character, so lines stay byte for byte what the
/// earlier hand-written writer made.
struct LineFormatter;

impl Formatter for LineFormatter {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        // NEL is C2 85, the other two E2 80 A8/A9 in UTF-8. Most text is ASCII, which
        // `is_ascii` confirms a word at a time; the rest is scanned for C2 and E2.
        if fragment.is_ascii() {
            return w.write_all(fragment.as_bytes());
        }
        let mut rest = fragment.as_bytes();
        while let Some(i) = rest.iter().position(|&b| b == 0xe2 || b == 0xc2) {
            let (escape, len): (&[u8], usize) = match (rest[i], rest.get(i + 1..)) {
                (0xc2, Some([0x85, ..])) => (b"\\u0085", 2),
                (0xe2, Some([0x80, 0xa8, ..])) => (b"\\u2028", 3),
                (0xe2, Some([0x80, 0xa9, ..])) => (b"\\u2029", 3),
                _ => {
                    w.write_all(&rest[..=i])?;
                    rest = &rest[i + 1..];
                    continue;
                }
            };
            w.write_all(&rest[..i])?;
            w.write_all(escape)?;
            rest = &rest[i + len..];
        }
        w.write_all(rest)
    }

    fn write_char_escape<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        escape: CharEscape,
    ) -> io::Result<()> {
        match escape {
            CharEscape::Backspace => w.write_all(b"\\u0008"),
            CharEscape::FormFeed => w.write_all(b"\\u000c"),
            other => serde_json::ser::CompactFormatter.write_char_escape(w, other),
        }
    }
}

/// One decision as a JSON line (newline included), formatted as the writer does.
pub fn format_line(
    req: &AuthRequest<'_>,
    outcome: &Outcome,
    latency: Duration,
    now: SystemTime,
) -> String {
    let mut q = Queue::default();
    q.push(req, outcome, latency, now, true);
    let mut out = Vec::with_capacity(512);
    q.format(&mut out);
    // serde_json writes UTF-8 only.
    String::from_utf8(out).unwrap_or_default()
}
