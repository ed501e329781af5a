//! Message → token → policy → decision → actions: the real [`Handler`]. It reads
//! the `authorize` message, verifies the bearer token, asks the policy snapshot,
//! and turns the decision into HAProxy variables in one place ([`actions_for`]).

use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwapOption;

use crate::browser::{BrowserArgs, BrowserOutcome, is_navigation, sign_in_location};
use crate::connection::{Handler, HandlerError};
use crate::identity::Identity;
use crate::policy::{Decision, Mode, Policy, Request};
use crate::reason::Reason;
use crate::spop::{Action, Actions, Message, Scope, TypedData};
use crate::sso::{InvalidSession, SessionLookup, Sso};
use crate::token::Verifier;

/// The request as HAProxy described it in the `authorize` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthRequest<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// Empty when the request had no Host header (only any-host routes match).
    pub host: &'a str,
    /// The bearer token from `Authorization: Bearer`, else from the `token` argument.
    pub token: Option<&'a str>,
    pub src: Option<std::net::IpAddr>,
    pub request_id: Option<&'a str>,
    /// The optional browser arguments (cookie, Accept, ...): all `None` from an SPOE
    /// file that does not send them.
    pub browser: BrowserArgs<'a>,
}

/// Why the arguments could not form a request (→ reason `bad_request`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgError {
    #[error("argument `{0}` is missing")]
    Missing(&'static str),
    #[error("argument `{0}` has the wrong type")]
    WrongType(&'static str),
    /// More than one Authorization header: which one would the backend read?
    #[error("the request has {0} Authorization headers")]
    MultipleAuthorization(i64),
}

/// The arguments [`AuthRequest::from_message`] reads, as found.
#[derive(Default)]
struct Args<'s, 'a> {
    method: Option<&'s TypedData<'a>>,
    path: Option<&'s TypedData<'a>>,
    host: Option<&'s TypedData<'a>>,
    authorization: Option<&'s TypedData<'a>>,
    authorization_count: Option<&'s TypedData<'a>>,
    token: Option<&'s TypedData<'a>>,
    src: Option<&'s TypedData<'a>>,
    request_id: Option<&'s TypedData<'a>>,
    cookie: Option<&'s TypedData<'a>>,
    cookie_count: Option<&'s TypedData<'a>>,
    accept: Option<&'s TypedData<'a>>,
    fetch_mode: Option<&'s TypedData<'a>>,
    query: Option<&'s TypedData<'a>>,
}

impl<'a> AuthRequest<'a> {
    /// Reads the arguments. `method` and `path` must be strings; `host`,
    /// `authorization`, `token`, `src` and `request_id` may be NULL (HAProxy sends
    /// NULL for an absent header), but `host` and `authorization` must be sent.
    ///
    /// # Errors
    /// A missing or mistyped argument.
    pub fn from_message(msg: &'a Message<'a>) -> Result<AuthRequest<'a>, ArgError> {
        // One pass over the arguments (the first of each name counts), then the checks:
        // a lookup per name walked the list a dozen times per request.
        let mut a = Args::default();
        for arg in &msg.args {
            let slot = match arg.name.as_ref() {
                b"method" => &mut a.method,
                b"path" => &mut a.path,
                b"host" => &mut a.host,
                b"authorization" => &mut a.authorization,
                b"authorization_count" => &mut a.authorization_count,
                b"token" => &mut a.token,
                b"src" => &mut a.src,
                b"request_id" => &mut a.request_id,
                b"cookie" => &mut a.cookie,
                b"cookie_count" => &mut a.cookie_count,
                b"accept" => &mut a.accept,
                b"fetch_mode" => &mut a.fetch_mode,
                b"query" => &mut a.query,
                _ => continue,
            };
            slot.get_or_insert(&arg.value);
        }
        let required_str = |name: &'static str, v: Option<&'a TypedData<'a>>| match v {
            None => Err(ArgError::Missing(name)),
            Some(v) => v.as_str().ok_or(ArgError::WrongType(name)),
        };
        let nullable_str =
            |name: &'static str, v: Option<&'a TypedData<'a>>, required: bool| match v {
                None if required => Err(ArgError::Missing(name)),
                None | Some(TypedData::Null) => Ok(None),
                Some(v) => v.as_str().map(Some).ok_or(ArgError::WrongType(name)),
            };
        // `authorization_count` (optional, `req.hdr_cnt(authorization)`): HAProxy
        // sends only one occurrence in `authorization`, so a second header would
        // otherwise go unseen.
        if let Some(n) = a.authorization_count.and_then(TypedData::as_i64)
            && n > 1
        {
            return Err(ArgError::MultipleAuthorization(n));
        }
        let method = required_str("method", a.method)?;
        let path = required_str("path", a.path)?;
        let host = nullable_str("host", a.host, true)?.unwrap_or("");
        let authorization = nullable_str("authorization", a.authorization, true)?;
        let raw_token = nullable_str("token", a.token, false)?;
        let src = match a.src {
            Some(TypedData::Ipv4(a)) => Some((*a).into()),
            Some(TypedData::Ipv6(a)) => Some((*a).into()),
            _ => None,
        };
        let request_id = nullable_str("request_id", a.request_id, false)
            .ok()
            .flatten();
        let browser = BrowserArgs {
            cookie: nullable_str("cookie", a.cookie, false)?,
            cookie_count: a.cookie_count.and_then(TypedData::as_i64),
            accept: nullable_str("accept", a.accept, false)?,
            fetch_mode: nullable_str("fetch_mode", a.fetch_mode, false)?,
            query: nullable_str("query", a.query, false)?,
        };
        let token = match authorization {
            Some(h) => bearer(h),
            None => raw_token.map(str::trim).filter(|t| !t.is_empty()),
        };
        Ok(AuthRequest {
            method,
            path,
            host,
            token,
            src,
            request_id,
            browser,
        })
    }
}

/// The token of `Bearer <token>` (scheme case-insensitive, RFC 6750 §2.1); any
/// other scheme, or an empty token, is no token.
pub fn bearer(header: &str) -> Option<&str> {
    let header = header.trim();
    let (scheme, rest) = header.split_once([' ', '\t'])?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = rest.trim();
    // A byte scan: `contains([' ', '\t'])` walks a ~1 KiB token char by char, 4% of the
    // agent's CPU on a warm decision (BENCHMARKS.md, "Issue 14: the warm path"); memchr's
    // SIMD scan took 20 samples per 100,000 requests where the folded loop that replaced
    // it took 28 (separate runs on a noisy machine; "fourth pass").
    // The same answer: in UTF-8 no byte of a multi-byte char is ASCII.
    let blank = memchr::memchr2(b' ', b'\t', token.as_bytes()).is_some();
    (!token.is_empty() && !blank).then_some(token)
}

/// What one request came to: the decision and, when the token verified, who called.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub decision: Decision,
    pub identity: Option<Arc<Identity>>,
    /// Why the credentials gave no identity (`missing_token` when there were none);
    /// `None` with an identity, or when the decision came before any was read.
    pub credential_error: Option<Reason>,
    pub shadow: bool,
    /// The first bytes of SHA-256(token), for logs: correlates, cannot be replayed.
    pub token_fp: Option<[u8; 6]>,
    /// What a browser gets besides the decision: a sign-in redirect, the Cookie
    /// header without stagedoor's own cookies.
    pub browser: BrowserOutcome,
}

/// Agent settings from the configuration.
#[derive(Debug, Clone)]
pub struct AgentSettings {
    /// The SPOE message to answer (`[agent] message`).
    pub message: String,
    /// `realm` in `WWW-Authenticate`.
    pub realm: String,
    pub mode: Mode,
    /// Browser sign-in (`[sso]`): session cookies are read, stagedoor's cookies are
    /// removed before the backend, and navigations without credentials are sent to
    /// sign in. `None`: bearer tokens only, as without the browser arguments.
    pub sso: Option<Arc<Sso>>,
}

/// Called once per decision with the request, the outcome and the time it took.
pub type Observer =
    Box<dyn Fn(&AuthRequest<'_>, &Outcome, std::time::Duration, SystemTime) + Send + Sync>;

/// The stagedoor handler: token verifier + current policy snapshot.
pub struct Agent {
    pub verifier: Verifier,
    /// `None` until the first catalog is loaded (→ `policy_unavailable`).
    pub policy: Arc<ArcSwapOption<Policy>>,
    pub settings: AgentSettings,
    /// Called once per decision (decision logs, metrics).
    pub observer: Observer,
}

impl Agent {
    /// Decides one request (the whole flow, minus the wire).
    pub async fn decide(&self, req: &AuthRequest<'_>, now_unix: i64) -> Outcome {
        self.decide_at(req, now_unix, tokio::time::Instant::now())
            .await
    }

    /// [`Agent::decide`] for a request that started at `started` (monotonic; the
    /// handler's one read of it serves the latency and the key set's freshness).
    pub async fn decide_at(
        &self,
        req: &AuthRequest<'_>,
        now_unix: i64,
        started: tokio::time::Instant,
    ) -> Outcome {
        self.decide_remembering(req, now_unix, started, false)
            .await
            .0
    }

    /// [`Agent::decide_at`], and with `remember` the ACK's actions too, for a bearer
    /// request whose outcome nothing but the token, the policy and the method, host
    /// and path decide: remembered per worker thread ([`memo`]), `None` for the
    /// others (the caller makes them with [`actions_for`]).
    async fn decide_remembering(
        &self,
        req: &AuthRequest<'_>,
        now_unix: i64,
        started: tokio::time::Instant,
        remember: bool,
    ) -> (Outcome, Option<Actions>) {
        let sso = self.settings.sso.as_deref();
        if sso.is_some() && req.browser.cookie_count.is_some_and(|n| n > 1) {
            // Which Cookie line would the backend read, and which would HAProxy hand
            // over? (HTTP/2 cookie fields arrive merged into one.)
            return (self.bare_outcome(Reason::BadRequest), None);
        }
        // `kept`: whether the token cache holds the identity, so that the same token
        // gives back the very same one next time (the remembered decisions' key).
        let (token, token_fp, kept) = match (req.token, sso, req.browser.cookie) {
            (Some(t), _, _) => {
                let verified = self
                    .verifier
                    .verify_fingerprinted(t, now_unix, started)
                    .await;
                (verified.result, Some(verified.token_fp), verified.kept)
            }
            // No bearer token: a session cookie decides like a token with its identity.
            (None, Some(sso), Some(cookie)) => (
                match sso.session_from_cookie_header(cookie, now_unix) {
                    SessionLookup::Valid(identity) => Ok(identity),
                    SessionLookup::Invalid(InvalidSession::Expired) => Err(Reason::SessionExpired),
                    SessionLookup::Invalid(_) => Err(Reason::SessionInvalid),
                    SessionLookup::None => Err(Reason::MissingToken),
                },
                None,
                false,
            ),
            _ => (Err(Reason::MissingToken), None, false),
        };
        let policy_req = Request {
            method: req.method,
            host: req.host,
            path: req.path,
        };
        let shadow = self.settings.mode == Mode::Shadow;
        // The outcome is the token's, the policy's and the request line's alone: no
        // sign-in redirect (a bearer token is there) and no cookie of ours to strip
        // (no `[sso]`, or no Cookie header). And only when a repeated token gives back
        // the same identity (the memo's key), `kept`, which only a bearer token sets:
        // without the token cache, or for a token accepted within its leeway (never
        // cached), each verification makes a new one and could never be found.
        let remember = remember && kept && (sso.is_none() || req.browser.cookie.is_none());
        let snapshot = self.policy.load();
        let (decision, actions) = match (snapshot.as_ref(), &token) {
            (Some(policy), Ok(identity)) if remember => {
                let key = memo::Key {
                    req: &policy_req,
                    shadow,
                    realm: &self.settings.realm,
                };
                match memo::find(policy, identity, &key) {
                    Some((decision, actions)) => (decision, Some(actions)),
                    None => {
                        let decision = policy.decide(&policy_req, Ok(identity));
                        let outcome = Outcome {
                            decision,
                            identity: Some(identity.clone()),
                            credential_error: None,
                            shadow,
                            token_fp,
                            browser: BrowserOutcome::default(),
                        };
                        let actions = actions_for(&outcome, &self.settings.realm);
                        memo::keep(policy, identity, &key, &outcome.decision, &actions);
                        return (outcome, Some(actions));
                    }
                }
            }
            (Some(policy), _) => (
                policy.decide(&policy_req, token.as_deref().map_err(|r| *r)),
                None,
            ),
            (None, _) => (Decision::bare(Reason::PolicyUnavailable), None),
        };
        drop(snapshot);
        let browser = match sso {
            Some(sso) => BrowserOutcome {
                // Only a caller without a bearer token is sent to sign in: an API
                // client with a bad token gets 401 as before.
                location: (req.token.is_none()
                    && decision.status() == 401
                    && !is_outage(decision.reason)
                    && is_navigation(req.method, &req.browser))
                .then(|| {
                    sign_in_location(&sso.cfg.external_scheme, &req.browser, req.host, req.path)
                }),
                // Only when there is one of ours to take out: a Cookie header without
                // them is left as it is (no copy, nothing more in the ACK).
                cookie: req
                    .browser
                    .cookie
                    .and_then(|c| match Sso::strip_cookies(c) {
                        std::borrow::Cow::Borrowed(_) => None,
                        std::borrow::Cow::Owned(rest) => Some(rest),
                    }),
            },
            None => BrowserOutcome::default(),
        };
        let outcome = Outcome {
            decision,
            credential_error: token.as_ref().err().copied(),
            identity: token.ok(),
            shadow,
            token_fp,
            browser,
        };
        (outcome, actions)
    }

    /// An outcome decided before any credential was looked at. With `[sso]`, the
    /// whole Cookie header goes (its arguments may not even have been read): shadow
    /// mode lets the request through, and stagedoor's cookies must not go with it.
    fn bare_outcome(&self, reason: Reason) -> Outcome {
        Outcome {
            decision: Decision::bare(reason),
            identity: None,
            credential_error: None,
            shadow: self.settings.mode == Mode::Shadow,
            token_fp: None,
            browser: BrowserOutcome {
                location: None,
                cookie: self.settings.sso.as_ref().map(|_| String::new()),
            },
        }
    }
}

impl Handler for Agent {
    async fn handle(&self, messages: &[Message<'_>]) -> Result<Actions, HandlerError> {
        let message = self.settings.message.as_bytes();
        // Other messages in the same NOTIFY get no actions.
        let Some(msg) = messages.iter().find(|m| m.name.as_ref() == message) else {
            // Not ours: no decision. One harmless action rather than an empty ACK,
            // which early HAProxy 3.1.x leaves waiting until its processing timeout.
            let mut none = Actions::with_capacity(8);
            none.push(&Action::UnsetVar {
                scope: Scope::Txn,
                name: b"noop".as_slice().into(),
            });
            return Ok(none);
        };
        // One monotonic read for the latency and the key set's freshness, one
        // wall-clock read for the decision (`exp`, `nbf`) and its log line.
        let started = tokio::time::Instant::now();
        let at = crate::clock::now();
        let outcome = match AuthRequest::from_message(msg) {
            Ok(req) => {
                let (outcome, actions) = self
                    .decide_remembering(&req, crate::clock::unix_seconds(at), started, true)
                    .await;
                (self.observer)(&req, &outcome, started.elapsed(), at);
                if let Some(actions) = actions {
                    return Ok(actions);
                }
                outcome
            }
            Err(_) => {
                let outcome = self.bare_outcome(Reason::BadRequest);
                let req = AuthRequest {
                    method: "",
                    path: "",
                    host: "",
                    token: None,
                    src: None,
                    request_id: None,
                    browser: BrowserArgs::default(),
                };
                (self.observer)(&req, &outcome, started.elapsed(), at);
                outcome
            }
        };
        Ok(actions_for(&outcome, &self.settings.realm))
    }
}

/// The one place where decisions become HAProxy variables (txn scope; HAProxy adds
/// its var-prefix, e.g. `txn.stagedoor.allow`). Identity values come only from a
/// verified token, and only when they are safe to put in a header and a log line:
/// visible ASCII, bounded length (a verified token can still carry a `sub` with
/// CR/LF chosen by a self-registered client). Unsafe values are left out.
///
/// `keys_unavailable`, `policy_unavailable` and `internal_error` are outages, not
/// verdicts on the caller: they also set `error`, which the shipped HAProxy config
/// answers with 503 (never a 401 that would make clients drop good tokens), except
/// in shadow mode, which lets everything through.
pub fn actions_for(outcome: &Outcome, realm: &str) -> Actions {
    let d = &outcome.decision;
    let real_allow = d.allow();
    let outage = is_outage(d.reason);
    let mut actions = Actions::with_capacity(256);
    if let Some(cookie) = &outcome.browser.cookie {
        // The header minus stagedoor's cookies, set back by HAProxy. Bytes that could
        // not go back into a header (they came in one, so this is a defence only):
        // the whole header goes. First in the ACK: HAProxy stops at an action it
        // cannot apply, and `allow` must never be set without these.
        actions.set(Scope::Txn, "cookie_strip", &TypedData::Bool(true));
        let empty = cookie.trim_matches([' ', '\t', ';']).is_empty();
        if !empty
            && cookie.len() <= 65_536
            && cookie
                .bytes()
                .all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
        {
            actions.set(Scope::Txn, "cookie", &TypedData::str(cookie));
        }
    }
    actions.set(
        Scope::Txn,
        "allow",
        &TypedData::Bool(real_allow || outcome.shadow),
    );
    let location = (!real_allow)
        .then_some(outcome.browser.location.as_deref())
        .flatten()
        .filter(|v| header_safe(v, 8192, false));
    let status = if location.is_some() { 302 } else { d.status() };
    actions.set(Scope::Txn, "status", &TypedData::Int64(status.into()));
    actions.set(Scope::Txn, "reason", &TypedData::str(d.reason.as_str()));
    if outcome.shadow {
        actions.set(Scope::Txn, "shadow_deny", &TypedData::Bool(!real_allow));
    } else if outage {
        actions.set(
            Scope::Txn,
            crate::connection::ERROR_VAR,
            &TypedData::str(d.reason.as_str()),
        );
    }
    if let Some(id) = &outcome.identity {
        if let Some(sub) = id.sub.as_deref().filter(|v| header_safe(v, 256, false)) {
            actions.set(Scope::Txn, "sub", &TypedData::str(sub));
        }
        if let Some(client) = id
            .client_id
            .as_deref()
            .filter(|v| header_safe(v, 256, false))
        {
            actions.set(Scope::Txn, "client_id", &TypedData::str(client));
        }
        if joined_header_safe(&id.scopes, 2048) {
            actions.set_joined(Scope::Txn, "scopes", &id.scopes);
        }
    }
    if let Some(entity) = d.entity().filter(|v| header_safe(v, 512, false)) {
        actions.set(Scope::Txn, "entity", &TypedData::str(entity));
    }
    if let Some(owner) = d.owner().filter(|v| header_safe(v, 512, false)) {
        actions.set(Scope::Txn, "owner", &TypedData::str(owner));
    }
    if let Some(location) = location {
        actions.set(Scope::Txn, "location", &TypedData::str(location));
    }
    if !outage && let Some(www) = www_authenticate(d, realm) {
        actions.set(Scope::Txn, "www_authenticate", &TypedData::str(&www));
    }
    actions
}

/// [`header_safe`] (spaces allowed) of `words` joined by one space, without joining
/// them: the ACK writes the joined value straight into the frame.
fn joined_header_safe(words: &[String], max: usize) -> bool {
    let len = words.iter().map(String::len).sum::<usize>() + words.len().saturating_sub(1);
    len > 0
        && len <= max
        && words
            .iter()
            .all(|w| w.bytes().all(|b| matches!(b, 0x21..=0x7e) || b == b' '))
}

/// Reasons that say the agent could not decide, not that the caller may not pass.
pub fn is_outage(r: Reason) -> bool {
    matches!(
        r,
        Reason::KeysUnavailable | Reason::PolicyUnavailable | Reason::InternalError
    )
}

/// Visible ASCII only (and spaces when `spaces`), at most `max` bytes: safe in an
/// HTTP header value and a log line.
pub fn header_safe(v: &str, max: usize, spaces: bool) -> bool {
    !v.is_empty()
        && v.len() <= max
        && v.bytes()
            .all(|b| matches!(b, 0x21..=0x7e) || (spaces && b == b' '))
}

/// RFC 6750 §3: no error code when no token was sent; `invalid_token` for a token
/// that failed; `insufficient_scope` with the required scopes on 403.
pub fn www_authenticate(d: &Decision, realm: &str) -> Option<String> {
    match (d.status(), d.reason) {
        (401, Reason::MissingToken) => Some(format!("Bearer realm=\"{realm}\"")),
        (401, r) => Some(format!(
            "Bearer realm=\"{realm}\", error=\"invalid_token\", error_description=\"{r}\""
        )),
        (403, Reason::InsufficientScope) => Some(match d.required_scopes() {
            Some(s) => {
                format!("Bearer realm=\"{realm}\", error=\"insufficient_scope\", scope=\"{s}\"")
            }
            None => format!("Bearer realm=\"{realm}\", error=\"insufficient_scope\""),
        }),
        _ => None,
    }
}

mod memo;

/// How many remembered decisions the calling thread holds ([`memo`]); for tests,
/// which run the handler on their own thread.
#[doc(hidden)]
pub fn remembered_on_this_thread() -> usize {
    memo::entries_here()
}
#[cfg(test)]
mod tests;
