//! Decision → log line, the entry and the format (beside the request flow, after the
//! decision). The request task copies what a line needs into a compact [`Entry`]
//! queued in a [`Queue`] (the strings into one shared text buffer: no allocation per
//! decision, nothing for another thread to free); the writer thread turns each entry
//! into a [`Line`], a borrowed view that serde_json writes as one JSON object.

use std::io::{self, Write};
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use serde::Serializer;
use serde_json::ser::{CharEscape, Formatter};

use std::sync::Arc;

use crate::agent::{AuthRequest, Outcome};
use crate::identity::Identity;
use crate::policy::Decision;
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

/// One decision as queued: the fixed-size fields as they are, the request's strings
/// as slots, and the decision's and caller's names by reference. The matched route
/// and the verified identity are shared (`Arc`), not copied: copying their six
/// strings made each entry twice the cache lines the writer thread, on another core,
/// must pull over (BENCHMARKS.md, "What the decision log costs through HAProxy").
struct Entry {
    time: SystemTime,
    latency: Duration,
    status: u16,
    allow: bool,
    enforced: bool,
    /// Whether the line records the caller's whole identity (`[log] identity`).
    full_identity: bool,
    /// Why it was decided so; the names come from `held`.
    reason: Reason,
    /// How the credentials went: `None` verified (or not read), else the reason.
    credential_error: Option<Reason>,
    src: Option<IpAddr>,
    token_fp: Option<[u8; 6]>,
    method: Slot,
    host: Slot,
    path: Slot,
    request_id: Slot,
    /// Index in [`Queue::held`] of this entry's route and caller.
    held: u32,
}

/// What a run of entries for the same caller on the same route shares, referenced
/// once: an `Arc` clone per entry was a locked increment on the request path and a
/// locked decrement on the writer's core, on lines both worker threads also count on
/// (BENCHMARKS.md, "Issue 14: the warm path, fifth pass").
struct Held {
    /// The decision's entity, owner and route (its reason is the first entry's).
    decision: Decision,
    /// The verified caller: sub, client_id and issuer, and with a full identity the
    /// rest of its fields.
    identity: Option<Arc<Identity>>,
}

/// Memory of one [`Held`], for the tests of the cap.
#[cfg(test)]
pub(super) const HELD_BYTES: usize = std::mem::size_of::<Held>();

/// Entries waiting for the writer, which swaps the whole queue with an empty one.
#[derive(Default)]
pub(super) struct Queue {
    entries: Vec<Entry>,
    /// The routes and callers the entries name, one per run of entries that share
    /// them.
    held: Vec<Held>,
    /// Every entry's strings, back to back.
    text: String,
    /// The identities the entries keep alive, each counted once per run of entries
    /// that share it: a queue the writer cannot empty (stdout blocked) must not hold
    /// thousands of large identities the token cache has let go beyond the cap.
    /// Routes are not counted: they belong to a policy, and a blocked writer keeps
    /// those of replaced policies alive only as long as the catalog keeps changing.
    identity_bytes: usize,
}

impl Queue {
    /// Memory held by the queued entries (for the cap).
    pub(super) fn bytes(&self) -> usize {
        self.entries.len() * std::mem::size_of::<Entry>()
            + self.held.len() * std::mem::size_of::<Held>()
            + self.text.len()
            + self.identity_bytes
    }

    /// How many runs of shared route and caller the queue holds (tests).
    #[cfg(test)]
    pub(super) fn runs(&self) -> usize {
        self.held.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Empties the queue, keeping its allocations.
    pub(super) fn clear(&mut self) {
        self.entries.clear();
        self.held.clear();
        self.text.clear();
        self.identity_bytes = 0;
    }

    /// Gives back what a burst made it hold beyond a steady drain's worth (the writer
    /// keeps a spare per queue).
    pub(super) fn shrink(&mut self) {
        self.clear();
        self.entries.shrink_to(1024);
        self.held.shrink_to(1024);
        self.text.shrink_to(256 * 1024);
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
        // The run goes on while the route and the caller are the very same (compared
        // by address: both the held ones and the outcome's are alive here).
        let same_caller = |held: &Held| match (&held.identity, &outcome.identity) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        let held = match self.held.last() {
            Some(last) if last.decision.names_id() == d.names_id() && same_caller(last) => {
                self.held.len() - 1
            }
            last => {
                // A new caller is counted once per run, as before runs shared.
                if let Some(id) = &outcome.identity
                    && !last
                        .and_then(|l| l.identity.as_ref())
                        .is_some_and(|l| Arc::ptr_eq(l, id))
                {
                    self.identity_bytes += id.approx_bytes();
                }
                // The reference counts before the copies below: a locked increment
                // waits for every store before it, and the queue's buffers were last
                // touched by the writer thread on another core (their stores miss).
                // Taken after them, the first increment stalled on those misses: 76%
                // of this function's samples (BENCHMARKS.md, "Issue 14: the warm
                // path, fourth pass").
                self.held.push(Held {
                    decision: d.clone(),
                    identity: outcome.identity.clone(),
                });
                self.held.len() - 1
            }
        };
        let entry = Entry {
            time,
            latency,
            status: d.status(),
            allow: d.allow(),
            enforced: !outcome.shadow,
            full_identity,
            reason: d.reason,
            credential_error: outcome.credential_error,
            src: req.src,
            token_fp: outcome.token_fp,
            method: self.slot(Some(req.method)),
            host: self.slot(Some(req.host)),
            path: self.slot(Some(req.path)),
            request_id: self.slot(req.request_id),
            // The queue is capped far below 4 G entries (`MAX_QUEUED`).
            held: held as u32,
        };
        self.entries.push(entry);
    }

    /// Appends every queued entry to `out`, one JSON line each (writer thread).
    pub(super) fn format(&self, out: &mut Vec<u8>) {
        format_all(std::slice::from_ref(self), out);
    }

    /// One entry as a JSON object. The keys, their order and the literals are written
    /// as they are; every string value goes through serde_json's escaper (with
    /// [`LineFormatter`]'s three extra escapes). By hand rather than a derived
    /// `Serialize`: serde_json escaped each key and went through its map machinery
    /// for every field, 9% of the agent's CPU per logged decision (BENCHMARKS.md,
    /// "Issue 14: the warm path, second pass").
    fn write_line(&self, e: &Entry, time: &str, memo: &mut Fragments, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"time\":");
        string(out, time);
        out.extend_from_slice(b",\"event\":\"decision\",\"request_id\":");
        opt(out, self.str(e.request_id));
        out.extend_from_slice(b",\"src\":");
        match e.src {
            // An address's text needs no escape. IPv4 by hand: `Display` went through
            // the formatting machinery for each octet.
            Some(IpAddr::V4(ip)) => {
                out.push(b'"');
                for (n, octet) in ip.octets().into_iter().enumerate() {
                    if n > 0 {
                        out.push(b'.');
                    }
                    out.extend_from_slice(itoa::Buffer::new().format(octet).as_bytes());
                }
                out.push(b'"');
            }
            Some(ip) => {
                let _ = write!(out, "\"{ip}\"");
            }
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"method\":");
        string(out, self.str(e.method).unwrap_or_default());
        out.extend_from_slice(b",\"host\":");
        string(out, self.str(e.host).unwrap_or_default());
        out.extend_from_slice(b",\"path\":");
        string(out, self.str(e.path).unwrap_or_default());
        out.extend_from_slice(if e.allow {
            b",\"decision\":\"allow\",\"enforced\":"
        } else {
            b",\"decision\":\"deny\",\"enforced\":"
        });
        out.extend_from_slice(if e.enforced { b"true" } else { b"false" });
        out.extend_from_slice(b",\"status\":");
        out.extend_from_slice(itoa::Buffer::new().format(e.status).as_bytes());
        let fragment = memo.get(e, &self.held[e.held as usize]);
        out.extend_from_slice(&fragment.names);
        out.extend_from_slice(b",\"latency_us\":");
        let latency = u64::try_from(e.latency.as_micros()).unwrap_or(u64::MAX);
        out.extend_from_slice(itoa::Buffer::new().format(latency).as_bytes());
        out.extend_from_slice(b",\"token_fp\":");
        match e.token_fp {
            Some(fp) => {
                const DIGITS: &[u8; 16] = b"0123456789abcdef";
                out.push(b'"');
                for b in fp {
                    out.push(DIGITS[usize::from(b >> 4)]);
                    out.push(DIGITS[usize::from(b & 15)]);
                }
                out.push(b'"');
            }
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(&fragment.caller);
        out.push(b'}');
    }
}

/// The two parts of a line that depend only on the decision's names and the caller:
/// `,"reason":…,"issuer":…` and `,"caller":…` with the full identity's fields. A run
/// of lines for the same caller on the same route (a client's calls, a burst) formats
/// them once: they were half the writer's escaping work per line (BENCHMARKS.md,
/// "Issue 14: the warm path, fourth pass"). Lives for one drain, while the queued
/// entries keep every route and identity it is keyed by alive: their addresses cannot
/// be reused for another.
#[derive(Default)]
pub(super) struct Fragments {
    slots: [Option<Fragment>; 16],
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct FragmentKey {
    reason: Reason,
    names: (u8, usize),
    identity: usize,
    credential_error: Option<Reason>,
    full_identity: bool,
}

struct Fragment {
    key: FragmentKey,
    names: Vec<u8>,
    caller: Vec<u8>,
}

impl Fragments {
    fn get(&mut self, e: &Entry, held: &Held) -> &Fragment {
        let key = FragmentKey {
            reason: e.reason,
            names: held.decision.names_id(),
            identity: held
                .identity
                .as_ref()
                .map_or(0, |i| Arc::as_ptr(i) as usize),
            credential_error: e.credential_error,
            full_identity: e.full_identity,
        };
        let small = (key.reason as usize)
            | (key.credential_error.map_or(0, |r| r as usize + 1) << 8)
            | (usize::from(key.full_identity) << 16)
            | (usize::from(key.names.0) << 20);
        let mix = (key.names.1 ^ key.identity.rotate_left(29) ^ small.rotate_left(40)) as u64;
        let slot = &mut self.slots[(mix.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 60) as usize];
        if slot.as_ref().is_none_or(|f| f.key != key) {
            let fragment = slot.get_or_insert_with(|| Fragment {
                key,
                names: Vec::with_capacity(256),
                caller: Vec::with_capacity(64),
            });
            fragment.key = key;
            fragment.names.clear();
            fragment.caller.clear();
            write_names(e, held, &mut fragment.names);
            write_caller(e, held, &mut fragment.caller);
        }
        slot.as_ref().expect("filled above")
    }
}

fn opt(out: &mut Vec<u8>, v: Option<&str>) {
    match v {
        Some(v) => string(out, v),
        None => out.extend_from_slice(b"null"),
    }
}

/// `,"reason":…` to `,"issuer":…`.
fn write_names(e: &Entry, held: &Held, out: &mut Vec<u8>) {
    out.extend_from_slice(b",\"reason\":");
    string(out, e.reason.as_str());
    let (d, id) = (&held.decision, held.identity.as_deref());
    for (key, value) in [
        (&b",\"sub\":"[..], id.and_then(|i| i.sub.as_deref())),
        (b",\"client_id\":", id.and_then(|i| i.client_id.as_deref())),
        (b",\"entity\":", d.entity()),
        (b",\"owner\":", d.owner()),
        (b",\"route\":", d.route()),
        (b",\"issuer\":", id.map(|i| i.issuer.as_str())),
    ] {
        out.extend_from_slice(key);
        opt(out, value);
    }
}

/// `,"caller":…` and, with a full identity, its other fields.
fn write_caller(e: &Entry, held: &Held, out: &mut Vec<u8>) {
    out.extend_from_slice(b",\"caller\":");
    // `verified`, or why the credentials gave no identity (`missing_token`,
    // `expired`, ...); `null` when the decision came before they were read.
    opt(
        out,
        match (e.credential_error, held.identity.is_some()) {
            (Some(r), _) => Some(r.as_str()),
            (None, true) => Some(CALLER_VERIFIED),
            (None, false) => None,
        },
    );
    // The rest of the decision's inputs, with `[log] identity = "full"`.
    if let Some(i) = held.identity.as_deref().filter(|_| e.full_identity) {
        out.extend_from_slice(b",\"email\":");
        opt(out, i.email.as_deref());
        for (key, list) in [
            (&b",\"groups\":["[..], &i.groups),
            (b",\"scopes\":[", &i.scopes),
        ] {
            out.extend_from_slice(key);
            for (n, v) in list.iter().enumerate() {
                if n > 0 {
                    out.push(b',');
                }
                string(out, v);
            }
            out.push(b']');
        }
        out.extend_from_slice(b",\"user\":");
        opt(out, i.backstage_user.as_deref());
    }
}

/// Appends the entries of every queue to `out`, one JSON line each, in the order of
/// their `time` (each worker thread queues its own: their lines interleave here).
pub(super) fn format_all(queues: &[Queue], out: &mut Vec<u8>) {
    format_all_in_chunks(queues, out, usize::MAX, |_| {});
}

/// [`format_all`], handing `out` to `write` (which empties it) each time it holds
/// `chunk` bytes or more, at the end of a line. A queue's cap counts an identity once
/// for a run of entries sharing it, but with `[log] identity = "full"` each of their
/// lines prints its groups and scopes again: 4 MiB of entries could format to
/// gigabytes, which the writer's buffer would then keep (review of 8ccb8e4).
pub(super) fn format_all_in_chunks(
    queues: &[Queue],
    out: &mut Vec<u8>,
    chunk: usize,
    mut write: impl FnMut(&mut Vec<u8>),
) {
    let mut order: Vec<(SystemTime, usize, usize)> = queues
        .iter()
        .enumerate()
        .flat_map(|(q, queue)| {
            queue
                .entries
                .iter()
                .enumerate()
                .map(move |(i, e)| (e.time, q, i))
        })
        .collect();
    // Stable: one thread's lines keep their order at equal times.
    order.sort_by_key(|&(time, _, _)| time);
    let mut second = SecondCache::default();
    let mut memo = Fragments::default();
    for (_, q, i) in order {
        let (queue, e) = (&queues[q], &queues[q].entries[i]);
        let mut buf = [0u8; 24];
        let slow;
        let time = match second.format(e.time, &mut buf) {
            Some(text) => text,
            None => {
                slow = crate::clock::rfc3339_millis(e.time).to_string();
                &slow
            }
        };
        queue.write_line(e, time, &mut memo, out);
        out.push(b'\n');
        if out.len() >= chunk {
            write(out);
        }
    }
}

/// A JSON string, quoted and escaped by serde_json with [`LineFormatter`].
fn string(out: &mut Vec<u8>, v: &str) {
    // Most values are printable ASCII without `"` or `\`, which JSON takes as they
    // are: checked with a fold the compiler vectorizes, copied in one go. Anything
    // else goes through serde_json's escaper.
    let plain = v.bytes().fold(true, |ok, b| {
        ok & (0x20..0x7f).contains(&b) & (b != b'"') & (b != b'\\')
    });
    if plain {
        out.reserve(v.len() + 2);
        out.push(b'"');
        out.extend_from_slice(v.as_bytes());
        out.push(b'"');
        return;
    }
    // Writing to a Vec cannot fail.
    let _ =
        (&mut serde_json::Serializer::with_formatter(&mut *out, LineFormatter)).serialize_str(v);
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

/// `caller` of a line whose credentials were verified.
pub const CALLER_VERIFIED: &str = "verified";

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
