//! Per request, in place of a bearer token (cookie → **session** → `Identity` →
//! policy): the sealed session payload, opened from the `Cookie` header, checked for
//! expiry and issuer, and turned into the verified caller. Also its sealing at the end
//! of sign-in, with the too-many-groups rule.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::Sso;
use super::cookie;
use super::seal::{MAX_COOKIE_VALUE, PURPOSE_SESSION, SealError};
use crate::identity::Identity;
use aws_lc_rs::digest;
use quick_cache::sync::Cache;

/// What a sign-in proved, as sealed in the session cookie (short keys keep it small).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    #[serde(rename = "i")]
    pub iss: String,
    #[serde(rename = "s")]
    pub sub: String,
    /// Only when the provider vouched for it (same rule as tokens).
    #[serde(rename = "e", default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(rename = "g", default)]
    pub groups: Vec<String>,
    #[serde(rename = "c", default)]
    pub scopes: Vec<String>,
    /// 16 random bytes, base64url: names the session in logs.
    #[serde(rename = "d")]
    pub sid: String,
    #[serde(rename = "a", default, skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<i64>,
    #[serde(rename = "t")]
    pub iat: i64,
    #[serde(rename = "x")]
    pub exp: i64,
}

impl Session {
    /// The verified caller this session stands for, taking the session apart (no copy).
    pub fn into_identity(self) -> Identity {
        Identity {
            issuer: self.iss,
            sub: Some(self.sub),
            client_id: None,
            email: self.email,
            scopes: self.scopes,
            groups: self.groups,
            exp: self.exp,
            backstage_user: None,
        }
    }

    /// The verified caller this session stands for.
    pub fn identity(&self) -> Identity {
        Identity {
            issuer: self.iss.clone(),
            sub: Some(self.sub.clone()),
            client_id: None,
            email: self.email.clone(),
            scopes: self.scopes.clone(),
            groups: self.groups.clone(),
            exp: self.exp,
            backstage_user: None,
        }
    }
}

/// Why a session cookie that was present is not a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidSession {
    /// Past its `exp`, or older than the configured maximum age.
    #[error("session expired")]
    Expired,
    /// Not sealed by one of our keys, altered, over the size limit or malformed.
    #[error("session cookie refused: {0}")]
    Seal(SealError),
    /// Opened, but not a session payload, or for another issuer.
    #[error("session payload refused")]
    Payload,
    /// Several session cookies open to different callers (one tossed by a sibling
    /// subdomain under `cookie_domain`?): none is taken.
    #[error("several session cookies for different callers")]
    Ambiguous,
}

impl InvalidSession {
    /// The decision-log word: `session_expired` or `session_invalid`.
    pub fn as_str(self) -> &'static str {
        match self {
            InvalidSession::Expired => "session_expired",
            _ => "session_invalid",
        }
    }
}

/// What a request's `Cookie` header says about the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionLookup {
    /// No session cookie.
    None,
    Valid(Arc<Identity>),
    /// A session cookie that does not open to a live session: treat as no credentials.
    Invalid(InvalidSession),
}

/// Why a session could not be sealed at the end of sign-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SealSessionError {
    /// Even with only the groups the policy names, the cookie would be too large.
    #[error("too many groups for a session cookie ({groups} groups)")]
    TooManyGroups { groups: usize },
    #[error(transparent)]
    Seal(#[from] SealError),
}

/// Sessions opened before, by the SHA-256 of the cookie value (as the verified-token
/// cache keys tokens): a browser sends the same cookie with every request, and
/// opening it (base64, AES-GCM, JSON, the identity's strings) costs about 1.7 µs,
/// the hash and lookup a fraction. An entry answers only for exactly that value, and
/// never past the session's expiry or maximum age. Keys are read at start only, so no
/// entry outlives the key that opened it.
pub(crate) struct OpenedCache(Cache<[u8; 32], Arc<Opened>>);

pub(crate) struct Opened {
    identity: Arc<Identity>,
    /// The session's end: `exp`, or `iat` plus the maximum age, whichever is first.
    until: i64,
}

/// Sessions kept at most (each under 4 KB of identity).
const OPENED_ENTRIES: usize = 10_000;

impl OpenedCache {
    /// Every hit checks the session's end, so entries need no timer of their own: one
    /// past its end answers `expired` until it is evicted.
    pub(crate) fn new() -> OpenedCache {
        OpenedCache(Cache::new(OPENED_ENTRIES))
    }
}

impl std::fmt::Debug for OpenedCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OpenedCache({} entries)", self.0.len())
    }
}

impl Sso {
    /// The session in `header` (a request's whole `Cookie` header) at `now` (unix
    /// seconds), by the rules of [`Sso::session_from_header`], through the cache of
    /// opened sessions. No allocation when there is no session cookie.
    pub fn session_from_cookie_header(&self, header: &str, now: i64) -> SessionLookup {
        let name = self.session_cookie_name();
        let mut found: Option<Arc<Identity>> = None;
        let mut first_failure = None;
        for (n, value, _) in cookie::pieces(header) {
            if n != name {
                continue;
            }
            match self.open_cached(value, now) {
                Ok(id) => match &found {
                    Some(f) if f.issuer != id.issuer || f.sub != id.sub => {
                        return SessionLookup::Invalid(InvalidSession::Ambiguous);
                    }
                    Some(_) => {}
                    None => found = Some(id),
                },
                Err(e) => {
                    first_failure.get_or_insert(e);
                }
            }
        }
        match (found, first_failure) {
            (Some(id), _) => SessionLookup::Valid(id),
            (None, Some(e)) => SessionLookup::Invalid(e),
            (None, None) => SessionLookup::None,
        }
    }

    /// [`Sso::open_session`] to an identity, remembered for the next request with the
    /// same value.
    fn open_cached(&self, value: &str, now: i64) -> Result<Arc<Identity>, InvalidSession> {
        if value.len() > MAX_COOKIE_VALUE {
            return Err(InvalidSession::Seal(SealError::TooLarge));
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(digest::digest(&digest::SHA256, value.as_bytes()).as_ref());
        if let Some(hit) = self.opened.0.get(&key) {
            return if now < hit.until {
                Ok(hit.identity.clone())
            } else {
                Err(InvalidSession::Expired)
            };
        }
        let s = self.open_session(value, now)?;
        let until = s
            .exp
            .min(s.iat.saturating_add(self.cfg.max_session_seconds as i64));
        let identity = Arc::new(s.into_identity());
        self.opened.0.insert(
            key,
            Arc::new(Opened {
                identity: identity.clone(),
                until,
            }),
        );
        Ok(identity)
    }

    /// The one session in `header`. Only the configured cookie name counts: with
    /// host-only cookies, `__Host-stagedoor_session`, which no other host can set
    /// (the unprefixed name could be tossed in by any sibling subdomain for the parent
    /// domain, and would win by a longer `Path`). Several cookies of that name (under
    /// `cookie_domain`, a sibling can add one) must agree on the caller, else none is
    /// taken ([`InvalidSession::Ambiguous`]); with none live, the first failure is
    /// reported.
    ///
    /// # Errors
    /// [`InvalidSession`].
    pub fn session_from_header(
        &self,
        header: &str,
        now: i64,
    ) -> Result<Option<Session>, InvalidSession> {
        let name = self.session_cookie_name();
        let mut found: Option<Session> = None;
        let mut first_failure = None;
        for (n, value, _) in cookie::pieces(header) {
            if n != name {
                continue;
            }
            match self.open_session(value, now) {
                Ok(s) => match &found {
                    Some(f) if f.iss != s.iss || f.sub != s.sub => {
                        return Err(InvalidSession::Ambiguous);
                    }
                    Some(_) => {}
                    None => found = Some(s),
                },
                Err(e) => {
                    first_failure.get_or_insert(e);
                }
            }
        }
        match (found, first_failure) {
            (Some(s), _) => Ok(Some(s)),
            (None, Some(e)) => Err(e),
            (None, None) => Ok(None),
        }
    }

    /// `header` without the session and state cookies (see [`cookie::strip`]).
    pub fn strip_cookies(header: &str) -> std::borrow::Cow<'_, str> {
        cookie::strip(header)
    }

    /// Opens one session cookie value.
    ///
    /// # Errors
    /// [`InvalidSession`].
    pub fn open_session(&self, value: &str, now: i64) -> Result<Session, InvalidSession> {
        let plain = self
            .sealer
            .open(PURPOSE_SESSION, value)
            .map_err(InvalidSession::Seal)?;
        let s: Session = serde_json::from_slice(&plain).map_err(|_| InvalidSession::Payload)?;
        if s.iss != self.cfg.issuer {
            return Err(InvalidSession::Payload);
        }
        // The configured maximum age applies to sessions sealed before it was lowered.
        let max_age = self.cfg.max_session_seconds as i64;
        if now >= s.exp || now >= s.iat.saturating_add(max_age) {
            return Err(InvalidSession::Expired);
        }
        Ok(s)
    }

    /// Seals `session`. When it does not fit, only the groups `keep` names (the
    /// groups the current policy can use) stay, sorted, and it is sealed again.
    ///
    /// # Errors
    /// [`SealSessionError::TooManyGroups`] when it still does not fit.
    pub fn seal_session(
        &self,
        session: &mut Session,
        keep: Option<&(dyn Fn(&str) -> bool + Send + Sync)>,
    ) -> Result<String, SealSessionError> {
        let count = session.groups.len();
        match self.seal_json(session) {
            Err(SealSessionError::Seal(SealError::TooLarge)) => {}
            other => return other,
        }
        let Some(keep) = keep else {
            return Err(SealSessionError::TooManyGroups { groups: count });
        };
        session.groups.retain(|g| keep(g));
        session.groups.sort();
        match self.seal_json(session) {
            Err(SealSessionError::Seal(SealError::TooLarge)) => {
                Err(SealSessionError::TooManyGroups { groups: count })
            }
            other => other,
        }
    }

    fn seal_json(&self, session: &Session) -> Result<String, SealSessionError> {
        // A struct of strings and integers always serializes.
        let json = serde_json::to_vec(session).map_err(|_| SealError::Malformed)?;
        Ok(self.sealer.seal(PURPOSE_SESSION, &json)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sso::cookie::{SESSION, SESSION_HOST};
    use crate::sso::seal::Sealer;
    use crate::sso::tests::sso_with_keys;

    fn session(groups: usize, now: i64) -> Session {
        Session {
            iss: "https://id.example".into(),
            sub: "alice".into(),
            email: Some("alice@example.com".into()),
            groups: (0..groups).map(|i| format!("team-{i:04}")).collect(),
            scopes: vec!["openid".into(), "email".into()],
            sid: "c2lkc2lkc2lkc2lkc2lkcw".into(),
            auth_time: Some(now - 5),
            iat: now,
            exp: now + 3600,
        }
    }

    #[test]
    fn a_sealed_session_opens_to_its_identity() {
        let sso = sso_with_keys(&[[1; 32]]);
        let now = 1_700_000_000;
        let mut s = session(10, now);
        let v = sso.seal_session(&mut s, None).unwrap();
        let header = format!("a=1; {SESSION_HOST}={v}; b=2");
        let SessionLookup::Valid(id) = sso.session_from_cookie_header(&header, now + 1) else {
            panic!("not valid")
        };
        assert_eq!(*id, s.identity());
        assert_eq!(id.sub.as_deref(), Some("alice"));
        assert_eq!(id.client_id, None);
        // Expired at exp, and past the configured maximum age.
        assert_eq!(
            sso.session_from_cookie_header(&header, now + 3600),
            SessionLookup::Invalid(InvalidSession::Expired)
        );
        let mut long = session(1, now);
        long.exp = now + 100_000;
        let v = sso.seal_session(&mut long, None).unwrap();
        assert_eq!(
            sso.open_session(&v, now + sso.cfg.max_session_seconds as i64),
            Err(InvalidSession::Expired)
        );
        assert_eq!(
            sso.session_from_cookie_header("a=1; b=2", now),
            SessionLookup::None
        );
        assert_eq!(sso.session_from_cookie_header("", now), SessionLookup::None);
    }

    #[test]
    fn foreign_tampered_and_state_cookies_are_refused() {
        let now = 1_700_000_000;
        let ours = sso_with_keys(&[[1; 32]]);
        let theirs = sso_with_keys(&[[2; 32]]);
        let v = theirs.seal_session(&mut session(1, now), None).unwrap();
        assert_eq!(
            ours.session_from_cookie_header(&format!("{SESSION_HOST}={v}"), now),
            SessionLookup::Invalid(InvalidSession::Seal(SealError::UnknownKey))
        );
        // A state cookie sealed by us is not a session.
        let state = ours
            .sealer
            .seal(crate::sso::seal::PURPOSE_STATE, b"{}")
            .unwrap();
        assert_eq!(
            ours.session_from_cookie_header(&format!("{SESSION_HOST}={state}"), now),
            SessionLookup::Invalid(InvalidSession::Seal(SealError::Tampered))
        );
        // Sealed by us but not a session, or another issuer's.
        let junk = ours.sealer.seal(PURPOSE_SESSION, b"[1]").unwrap();
        assert_eq!(ours.open_session(&junk, now), Err(InvalidSession::Payload));
        let mut other = session(1, now);
        other.iss = "https://other.example".into();
        let v = ours.seal_session(&mut other, None).unwrap();
        assert_eq!(ours.open_session(&v, now), Err(InvalidSession::Payload));
        // Oversized: refused before any crypto.
        let big = format!("{SESSION_HOST}=v1.{}", "A".repeat(5000));
        assert_eq!(
            ours.session_from_cookie_header(&big, now),
            SessionLookup::Invalid(InvalidSession::Seal(SealError::TooLarge))
        );
        // A bad duplicate does not hide a good one.
        let good = ours.seal_session(&mut session(1, now), None).unwrap();
        let h = format!("{SESSION_HOST}=v1.AAAA; {SESSION_HOST}={good}");
        assert!(matches!(
            ours.session_from_cookie_header(&h, now),
            SessionLookup::Valid(_)
        ));
        let _ = Sealer::new(&[[9; 32]]).unwrap();
        // Host-only: the unprefixed name, which a sibling subdomain could toss in for
        // the parent domain, is not read at all (review of issue 13, R1).
        assert_eq!(
            ours.session_from_cookie_header(&format!("{SESSION}={good}"), now),
            SessionLookup::None
        );
        // Two live sessions for different callers: neither is taken.
        let mut mallory = session(1, now);
        mallory.sub = "mallory".into();
        let hers = ours.seal_session(&mut mallory, None).unwrap();
        let h = format!("{SESSION_HOST}={hers}; {SESSION_HOST}={good}");
        assert_eq!(
            ours.session_from_cookie_header(&h, now),
            SessionLookup::Invalid(InvalidSession::Ambiguous)
        );
        // The same caller twice (a re-sign-in beside an older copy) is fine.
        let again = ours.seal_session(&mut session(1, now), None).unwrap();
        let h = format!("{SESSION_HOST}={again}; {SESSION_HOST}={good}");
        assert!(matches!(
            ours.session_from_cookie_header(&h, now),
            SessionLookup::Valid(_)
        ));
    }

    #[test]
    fn too_many_groups_keeps_only_what_the_policy_names() {
        let sso = sso_with_keys(&[[1; 32]]);
        let now = 1_700_000_000;
        let mut many = session(400, now);
        assert_eq!(
            sso.seal_session(&mut many.clone(), None),
            Err(SealSessionError::TooManyGroups { groups: 400 })
        );
        let keep = |g: &str| g == "team-0399" || g == "team-0007";
        let v = sso.seal_session(&mut many, Some(&keep)).unwrap();
        let s = sso.open_session(&v, now).unwrap();
        assert_eq!(s.groups, ["team-0007", "team-0399"]);
        let all = |_: &str| true;
        assert_eq!(
            sso.seal_session(&mut session(400, now), Some(&all)),
            Err(SealSessionError::TooManyGroups { groups: 400 })
        );
        // A session with 10 groups stays well under the limit.
        let v = sso.seal_session(&mut session(10, now), None).unwrap();
        assert!(v.len() < 1_000, "{}", v.len());
    }
}
