//! The closed set of decision reasons shared by every stage of a request: token
//! verification, policy, and the agent. One word per outcome, used verbatim in the
//! `txn.<prefix>.reason` variable, in decision logs and as a metric label.

use std::fmt;

/// Why a request was allowed or denied. Adding a variant is a contract change:
/// HAProxy configs, dashboards and alerts match on these words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    // --- allow ---
    /// A valid token met every requirement of the matched route.
    Ok,
    /// The matched route is `public`: no token needed.
    Public,
    /// No route matched and `[policy] unmatched = "allow"`.
    UnmatchedAllowed,

    // --- token (401) ---
    MissingToken,
    MalformedToken,
    TokenTooLarge,
    UnsupportedAlg,
    UnknownKey,
    BadSignature,
    Expired,
    NotYetValid,
    BadIssuer,
    BadAudience,
    BadType,
    /// A Backstage user token whose `sub` is not a User entity ref.
    BadSubject,
    /// The token lives longer than the issuer's configured maximum lifetime.
    LifetimeTooLong,
    KeysUnavailable,
    /// A browser session cookie that is past its expiry or maximum age.
    SessionExpired,
    /// A browser session cookie that does not open with our keys (altered, foreign,
    /// too large, malformed).
    SessionInvalid,

    // --- policy (403) ---
    InsufficientScope,
    NotMember,
    NoRoute,
    PolicyConflict,
    /// The path is claimed by an entity whose annotations are in error: held closed
    /// rather than falling through to a shorter (perhaps public) route.
    PolicyError,
    BadPath,
    /// No catalog snapshot has been loaded yet.
    PolicyUnavailable,
    /// A required SPOE argument was missing or had the wrong type.
    BadRequest,
    /// The agent failed internally; fail closed.
    InternalError,
}

impl Reason {
    /// Every reason, in declaration order (for metrics pre-registration and docs).
    pub const ALL: [Reason; 28] = [
        Reason::Ok,
        Reason::Public,
        Reason::UnmatchedAllowed,
        Reason::MissingToken,
        Reason::MalformedToken,
        Reason::TokenTooLarge,
        Reason::UnsupportedAlg,
        Reason::UnknownKey,
        Reason::BadSignature,
        Reason::Expired,
        Reason::NotYetValid,
        Reason::BadIssuer,
        Reason::BadAudience,
        Reason::BadType,
        Reason::BadSubject,
        Reason::LifetimeTooLong,
        Reason::KeysUnavailable,
        Reason::SessionExpired,
        Reason::SessionInvalid,
        Reason::InsufficientScope,
        Reason::NotMember,
        Reason::NoRoute,
        Reason::PolicyConflict,
        Reason::PolicyError,
        Reason::BadPath,
        Reason::PolicyUnavailable,
        Reason::BadRequest,
        Reason::InternalError,
    ];

    /// The snake_case word used on the wire, in logs and in metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::Ok => "ok",
            Reason::Public => "public",
            Reason::UnmatchedAllowed => "unmatched_allowed",
            Reason::MissingToken => "missing_token",
            Reason::MalformedToken => "malformed_token",
            Reason::TokenTooLarge => "token_too_large",
            Reason::UnsupportedAlg => "unsupported_alg",
            Reason::UnknownKey => "unknown_key",
            Reason::BadSignature => "bad_signature",
            Reason::Expired => "expired",
            Reason::NotYetValid => "not_yet_valid",
            Reason::BadIssuer => "bad_issuer",
            Reason::BadAudience => "bad_audience",
            Reason::BadType => "bad_type",
            Reason::BadSubject => "bad_subject",
            Reason::LifetimeTooLong => "lifetime_too_long",
            Reason::KeysUnavailable => "keys_unavailable",
            Reason::SessionExpired => "session_expired",
            Reason::SessionInvalid => "session_invalid",
            Reason::InsufficientScope => "insufficient_scope",
            Reason::NotMember => "not_member",
            Reason::NoRoute => "no_route",
            Reason::PolicyConflict => "policy_conflict",
            Reason::PolicyError => "policy_error",
            Reason::BadPath => "bad_path",
            Reason::PolicyUnavailable => "policy_unavailable",
            Reason::BadRequest => "bad_request",
            Reason::InternalError => "internal_error",
        }
    }

    /// Whether this reason lets the request through.
    pub const fn is_allow(self) -> bool {
        matches!(self, Reason::Ok | Reason::Public | Reason::UnmatchedAllowed)
    }

    /// The HTTP status HAProxy answers with: 200 on allow, 401 when the caller
    /// could not be authenticated, 403 when it was but may not pass.
    pub const fn status(self) -> u16 {
        match self {
            Reason::Ok | Reason::Public | Reason::UnmatchedAllowed => 200,
            Reason::MissingToken
            | Reason::MalformedToken
            | Reason::TokenTooLarge
            | Reason::UnsupportedAlg
            | Reason::UnknownKey
            | Reason::BadSignature
            | Reason::Expired
            | Reason::NotYetValid
            | Reason::BadIssuer
            | Reason::BadAudience
            | Reason::BadType
            | Reason::BadSubject
            | Reason::LifetimeTooLong
            | Reason::KeysUnavailable
            | Reason::SessionExpired
            | Reason::SessionInvalid => 401,
            Reason::InsufficientScope
            | Reason::NotMember
            | Reason::NoRoute
            | Reason::PolicyConflict
            | Reason::PolicyError
            | Reason::BadPath
            | Reason::PolicyUnavailable
            | Reason::BadRequest
            | Reason::InternalError => 403,
        }
    }

    /// Parses the snake_case word back (for tests and tooling).
    pub fn from_str_exact(s: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_unique_snake_case_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for r in Reason::ALL {
            let w = r.as_str();
            assert!(
                w.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{w}"
            );
            assert!(seen.insert(w), "duplicate {w}");
            assert_eq!(Reason::from_str_exact(w), Some(r));
        }
    }

    #[test]
    fn status_follows_allow() {
        for r in Reason::ALL {
            assert_eq!(r.is_allow(), r.status() == 200, "{r}");
        }
        assert_eq!(Reason::Expired.status(), 401);
        assert_eq!(Reason::NotMember.status(), 403);
    }
}
