//! `stagedoor replay`: logged decisions decided again under a candidate policy, with
//! the agent's own decision code ([`Policy::decide`]), and what would change, route
//! by route. A decision line holds the request and the caller (docs/policy-tests.md);
//! the token itself is never logged, so a line replays with the identity it proved
//! or the reason its credentials failed, as logged.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, Read as _};

use serde::{Deserialize, Serialize};

use crate::decision_log::CALLER_VERIFIED;
use crate::identity::Identity;
use crate::policy::{Decision, Policy, Request};
use crate::reason::Reason;

/// Example requests kept per route and kind of change.
pub const EXAMPLES: usize = 3;

/// The fields of a decision line replay reads (everything else is ignored).
#[derive(Deserialize)]
struct Line<'a> {
    event: Option<&'a str>,
    method: Option<String>,
    host: Option<String>,
    path: Option<String>,
    decision: Option<&'a str>,
    status: Option<u16>,
    reason: Option<&'a str>,
    sub: Option<String>,
    client_id: Option<String>,
    issuer: Option<String>,
    entity: Option<String>,
    route: Option<String>,
    /// Absent in lines written before replay existed; `null` when the decision came
    /// before the credentials were read.
    #[serde(default, deserialize_with = "present")]
    caller: Option<Option<&'a str>>,
    email: Option<String>,
    groups: Option<Vec<String>>,
    scopes: Option<Vec<String>>,
    user: Option<String>,
}

/// Tells an absent field (`None`) from a `null` one (`Some(None)`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<&'de str>>, D::Error> {
    Option::<&str>::deserialize(d).map(Some)
}

/// How one replayed decision compares with the logged one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Denied then, allowed now: listed first, as the dangerous kind.
    NewlyAllowed,
    NewlyDenied,
    /// Same allow or deny, another status or reason (a 401 that is a 403 now).
    ReasonChanged,
    Unchanged,
}

/// One request whose decision changed.
#[derive(Debug, Clone, Serialize)]
pub struct Example {
    pub method: String,
    pub host: String,
    pub path: String,
    pub sub: Option<String>,
    pub before: String,
    pub after: String,
}

/// The decisions of one route (of one entity) under the candidate policy.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RouteSummary {
    pub entity: Option<String>,
    pub route: Option<String>,
    pub unchanged: usize,
    pub newly_allowed: usize,
    pub newly_denied: usize,
    pub reason_changed: usize,
    /// The first few requests of each change, by kind.
    pub examples: BTreeMap<Change, Vec<Example>>,
}

/// Everything a replay found.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// Decision lines read.
    pub decisions: usize,
    pub replayed: usize,
    pub unchanged: usize,
    pub newly_allowed: usize,
    pub newly_denied: usize,
    pub reason_changed: usize,
    /// Lines not replayed, by why.
    pub not_replayed: BTreeMap<&'static str, usize>,
    /// By (entity, route) of the new decision (the logged one when it has none).
    pub routes: Vec<RouteSummary>,
}

/// Why a line could not be decided again.
const NOT_JSON: &str = "not a JSON line";
const INCOMPLETE: &str = "no method, host, path or decision";
const OLD_LINE: &str = "written before replay (no caller field)";
const MINIMAL: &str = "identity not logged ([log] identity = \"minimal\")";
const BEFORE_CREDENTIALS: &str = "decided before the credentials were read";
const NO_POLICY: &str = "no policy was loaded then (policy_unavailable or internal_error)";
const UNKNOWN_REASON: &str = "unknown caller or reason";
const TOO_LONG: &str = "longer than 1 MiB";

/// The longest line read as a decision: the agent's own are bounded by HAProxy's
/// buffer (tune.bufsize), far below.
pub const MAX_LINE: usize = 1 << 20;

/// What [`read_line`] found.
enum ReadLine {
    End,
    /// Longer than [`MAX_LINE`]: read to its end and dropped.
    TooLong,
    /// In the buffer, newline included.
    Line,
}

/// Reads the next line into `buf` as bytes, at most [`MAX_LINE`] of it: a log cut
/// in the middle of a character, or one huge line, is a line not replayed, not the
/// end of the run (or of the memory).
fn read_line(log: &mut impl BufRead, buf: &mut Vec<u8>) -> std::io::Result<ReadLine> {
    buf.clear();
    let n = log.take(MAX_LINE as u64 + 1).read_until(b'\n', buf)?;
    if n == 0 {
        return Ok(ReadLine::End);
    }
    if buf.len() > MAX_LINE && buf.last() != Some(&b'\n') {
        skip_line(log)?;
        return Ok(ReadLine::TooLong);
    }
    Ok(ReadLine::Line)
}

/// Reads and drops the rest of a line.
fn skip_line(log: &mut impl BufRead) -> std::io::Result<()> {
    loop {
        let chunk = log.fill_buf()?;
        if chunk.is_empty() {
            return Ok(());
        }
        match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => {
                log.consume(i + 1);
                return Ok(());
            }
            None => {
                let n = chunk.len();
                log.consume(n);
            }
        }
    }
}

/// Replays every decision line of `log` under `policy`.
///
/// # Errors
/// Reading `log` failed.
pub fn replay(mut log: impl BufRead, policy: &Policy) -> std::io::Result<Report> {
    let mut report = Report::default();
    let mut routes: BTreeMap<(Option<String>, Option<String>), RouteSummary> = BTreeMap::new();
    let mut buf = Vec::new();
    loop {
        match read_line(&mut log, &mut buf)? {
            ReadLine::End => break,
            ReadLine::TooLong => {
                report.decisions += 1;
                *report.not_replayed.entry(TOO_LONG).or_default() += 1;
                continue;
            }
            ReadLine::Line => {}
        }
        let Ok(text) = std::str::from_utf8(&buf) else {
            report.decisions += 1;
            *report.not_replayed.entry(NOT_JSON).or_default() += 1;
            continue;
        };
        if text.trim().is_empty() {
            continue;
        }
        let line = match serde_json::from_str::<Line<'_>>(text) {
            Ok(l) if l.event == Some("decision") => l,
            // Lifecycle events share the stream in some set-ups: not decisions.
            Ok(_) => continue,
            Err(_) => {
                report.decisions += 1;
                *report.not_replayed.entry(NOT_JSON).or_default() += 1;
                continue;
            }
        };
        report.decisions += 1;
        match replay_line(&line, policy) {
            Ok((change, decision)) => {
                report.replayed += 1;
                let key = match decision.route() {
                    Some(route) => (decision.entity().map(str::to_owned), Some(route.to_owned())),
                    None => (line.entity.clone(), line.route.clone()),
                };
                let summary = routes.entry(key.clone()).or_insert_with(|| RouteSummary {
                    entity: key.0,
                    route: key.1,
                    ..RouteSummary::default()
                });
                let counters = [
                    (&mut report.newly_allowed, &mut summary.newly_allowed),
                    (&mut report.newly_denied, &mut summary.newly_denied),
                    (&mut report.reason_changed, &mut summary.reason_changed),
                    (&mut report.unchanged, &mut summary.unchanged),
                ];
                let [a, b, c, d] = counters;
                let (total, route) = match change {
                    Change::NewlyAllowed => a,
                    Change::NewlyDenied => b,
                    Change::ReasonChanged => c,
                    Change::Unchanged => d,
                };
                *total += 1;
                *route += 1;
                if change != Change::Unchanged {
                    let examples = summary.examples.entry(change).or_default();
                    if examples.len() < EXAMPLES {
                        examples.push(example(&line, &decision));
                    }
                }
            }
            Err(why) => *report.not_replayed.entry(why).or_default() += 1,
        }
    }
    report.routes = routes.into_values().collect();
    Ok(report)
}

fn replay_line(line: &Line<'_>, policy: &Policy) -> Result<(Change, Decision), &'static str> {
    let (Some(method), Some(host), Some(path), Some(logged)) =
        (&line.method, &line.host, &line.path, line.decision)
    else {
        return Err(INCOMPLETE);
    };
    let old_reason = line
        .reason
        .and_then(Reason::from_str_exact)
        .ok_or(UNKNOWN_REASON)?;
    if matches!(
        old_reason,
        Reason::PolicyUnavailable | Reason::InternalError
    ) {
        return Err(NO_POLICY);
    }
    let caller: Result<Identity, Reason> = match line.caller {
        None => return Err(OLD_LINE),
        // The agent refuses some requests before credentials and policy (two
        // Authorization or Cookie headers): so it would under any policy.
        Some(None) if old_reason == Reason::BadRequest && logged == "deny" => {
            return Ok((Change::Unchanged, Decision::bare(Reason::BadRequest)));
        }
        Some(None) => return Err(BEFORE_CREDENTIALS),
        Some(Some(CALLER_VERIFIED)) => {
            let (Some(groups), Some(scopes)) = (&line.groups, &line.scopes) else {
                return Err(MINIMAL);
            };
            Ok(Identity {
                issuer: line.issuer.clone().unwrap_or_default(),
                sub: line.sub.clone(),
                client_id: line.client_id.clone(),
                email: line.email.clone(),
                scopes: scopes.clone(),
                groups: groups.clone(),
                backstage_user: line.user.clone(),
                exp: i64::MAX,
            })
        }
        Some(Some(word)) => Err(Reason::from_str_exact(word).ok_or(UNKNOWN_REASON)?),
    };
    let decision = policy.decide(
        &Request { method, host, path },
        caller.as_ref().map_err(|r| *r),
    );
    let was_allowed = logged == "allow";
    let change = match (was_allowed, decision.allow()) {
        (false, true) => Change::NewlyAllowed,
        (true, false) => Change::NewlyDenied,
        _ if decision.reason != old_reason
            || line.status.is_some_and(|s| s != decision.status()) =>
        {
            Change::ReasonChanged
        }
        _ => Change::Unchanged,
    };
    Ok((change, decision))
}

fn example(line: &Line<'_>, new: &Decision) -> Example {
    // Replayed lines have a known reason; their status is the reason's.
    let old = line
        .reason
        .and_then(Reason::from_str_exact)
        .unwrap_or(Reason::InternalError);
    Example {
        method: line.method.clone().unwrap_or_default(),
        host: line.host.clone().unwrap_or_default(),
        path: line.path.clone().unwrap_or_default(),
        sub: line.sub.clone(),
        before: format!(
            "{} {} {}",
            if line.decision == Some("allow") {
                "allow"
            } else {
                "deny"
            },
            old.status(),
            old.as_str()
        ),
        after: format!(
            "{} {} {}",
            if new.allow() { "allow" } else { "deny" },
            new.status(),
            new.reason.as_str()
        ),
    }
}

/// Characters that print as nothing or reorder what follows: bidirectional
/// overrides and isolates ("Trojan Source"), zero-width characters, the soft hyphen,
/// and the line and paragraph separators. `char::is_control` covers none of them.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{061C}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{2069}'
            | '\u{FEFF}'
    )
}

/// `s` with control characters (a terminal's escape sequences, line breaks),
/// invisible and reordering ones ([`is_invisible`]) and `also` percent-encoded:
/// request paths and subjects in the log are whoever sent them.
fn clean(s: &str, also: &[char]) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() || is_invisible(c) || also.contains(&c) {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                let _ = write!(out, "%{b:02X}");
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// For text output.
fn txt(s: &str) -> String {
    clean(s, &[])
}

/// For a markdown code span inside a table cell: no backtick to end the span, no
/// pipe to end the cell, no angle bracket or backslash for renderers that look.
fn md(s: &str) -> String {
    clean(s, &['`', '|', '<', '>', '\\'])
}

const KINDS: [(Change, &str); 3] = [
    (Change::NewlyAllowed, "Newly allowed"),
    (Change::NewlyDenied, "Newly denied"),
    (Change::ReasonChanged, "Reason changed"),
];

fn count(r: &RouteSummary, kind: Change) -> usize {
    match kind {
        Change::NewlyAllowed => r.newly_allowed,
        Change::NewlyDenied => r.newly_denied,
        Change::ReasonChanged => r.reason_changed,
        Change::Unchanged => r.unchanged,
    }
}

fn route_name(r: &RouteSummary) -> String {
    format!(
        "{} {}",
        txt(r.entity.as_deref().unwrap_or("(no entity)")),
        txt(r.route.as_deref().unwrap_or("(no route)"))
    )
}

fn headline(report: &Report) -> String {
    let mut s = format!(
        "{} of {} decisions replayed: {} newly allowed, {} newly denied, {} with another reason, {} unchanged.",
        report.replayed,
        report.decisions,
        report.newly_allowed,
        report.newly_denied,
        report.reason_changed,
        report.unchanged
    );
    if !report.not_replayed.is_empty() {
        let why: Vec<String> = report
            .not_replayed
            .iter()
            .map(|(why, n)| format!("{n} {why}"))
            .collect();
        let _ = write!(
            s,
            " Not replayed: {} ({}).",
            report.decisions - report.replayed,
            why.join("; ")
        );
    }
    s
}

/// Plain text for a terminal: newly allowed first.
pub fn render_text(report: &Report) -> String {
    let mut out = headline(report);
    out.push('\n');
    for (kind, title) in KINDS {
        let routes: Vec<&RouteSummary> = report
            .routes
            .iter()
            .filter(|r| count(r, kind) > 0)
            .collect();
        if routes.is_empty() {
            continue;
        }
        let _ = writeln!(out, "\n{}:", title.to_uppercase());
        for r in routes {
            let _ = writeln!(out, "  {}  {}", route_name(r), count(r, kind));
            for e in r.examples.get(&kind).into_iter().flatten() {
                let _ = writeln!(
                    out,
                    "    {} {} {}  sub={}  {} -> {}",
                    txt(&e.method),
                    txt(&e.host),
                    txt(&e.path),
                    txt(e.sub.as_deref().unwrap_or("-")),
                    e.before,
                    e.after
                );
            }
        }
    }
    out
}

/// Markdown, for a pull request comment: newly allowed first.
pub fn render_markdown(report: &Report) -> String {
    let mut out = String::from("### stagedoor replay\n\n");
    out.push_str(&headline(report));
    out.push('\n');
    for (kind, title) in KINDS {
        let routes: Vec<&RouteSummary> = report
            .routes
            .iter()
            .filter(|r| count(r, kind) > 0)
            .collect();
        if routes.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            "\n#### {title}\n\n| entity | route | requests | examples |\n|---|---|---|---|"
        );
        for r in routes {
            let examples: Vec<String> = r
                .examples
                .get(&kind)
                .into_iter()
                .flatten()
                .map(|e| {
                    format!(
                        "`{} {}{}` sub=`{}`: {} → {}",
                        md(&e.method),
                        md(&e.host),
                        md(&e.path),
                        md(e.sub.as_deref().unwrap_or("-")),
                        e.before,
                        e.after
                    )
                })
                .collect();
            let _ = writeln!(
                out,
                "| `{}` | `{}` | {} | {} |",
                md(r.entity.as_deref().unwrap_or("-")),
                md(r.route.as_deref().unwrap_or("-")),
                count(r, kind),
                examples.join("<br>")
            );
        }
    }
    out
}
