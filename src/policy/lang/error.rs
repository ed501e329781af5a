//! The annotation language's errors, beside the parsers: what is wrong with a value
//! ([`LangError`]), and the escaping that keeps catalog text in messages, `policy
//! show` and logs to one harmless line ([`escaped`], [`shown`]).

use thiserror::Error;

use super::{MAX_ANNOTATION_LEN, MAX_WORDS};
use crate::policy::path::PathError;

/// What is wrong with an annotation value. Located by [`Located`](super::Located).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LangError {
    #[error("value is longer than {MAX_ANNOTATION_LEN} bytes")]
    TooLarge,
    #[error("expected methods: `*` or a comma list such as GET,HEAD")]
    ExpectedMethods,
    #[error(
        "method `{0}` must be upper case letters, digits, `-` or `_` (methods are case-sensitive)"
    )]
    BadMethod(String),
    #[error("`*` cannot be combined with other methods")]
    StarWithMethods,
    #[error("expected a path starting with `/`")]
    ExpectedPath,
    #[error("path `{}`: `*` is not a wildcard here, routes are path prefixes; drop it", shown(.0))]
    WildcardInPath(String),
    #[error("path `{}`: query strings are not matched; drop `?...`", shown(.0))]
    QueryInPath(String),
    #[error("path `{}`: {why}", shown(.path))]
    BadPath { path: String, why: PathError },
    #[error("expected a requirement: `public`, `authenticated` or scopes")]
    MissingRequirement,
    #[error("more than {MAX_WORDS} requirement words on one line")]
    TooManyWords,
    #[error("`public` must stand alone on its line")]
    PublicNotAlone,
    #[error("`authenticated` cannot be combined with scopes")]
    AuthenticatedWithScopes,
    #[error("`{}` appears twice on the line", shown(.0))]
    RepeatedWord(String),
    #[error("invalid scope `{}`: a scope is printable ASCII without `\"`, `\\` or `|`", shown(.0))]
    BadScope(String),
    #[error("empty alternative in `{}`", shown(.0))]
    EmptyAlternative(String),
    #[error("invalid principal `{}`: expected [group:|user:][namespace/]name", shown(.0))]
    BadPrincipal(String),
    #[error("route {} is already declared on line {}", shown(.0), .1)]
    DuplicateRoute(String, u32),
    #[error("empty list item")]
    EmptyItem,
    #[error("invalid host `{}`: expected a DNS name or `*.` followed by one", shown(.0))]
    BadHost(String),
    #[error("host `{}`: ports are ignored when matching; drop the port", shown(.0))]
    HostWithPort(String),
    #[error("expected `true` or `false`, found `{}`", shown(.0))]
    BadBool(String),
    #[error("invalid value `{}`: expected one word without spaces or control characters", shown(.0))]
    BadWord(String),
    #[error("`{}` holds a control character", shown(.0))]
    ControlChar(String),
    #[error("unknown stagedoor annotation")]
    UnknownAnnotation,
    #[error("this annotation is not read on a {} entity", shown(.0))]
    WrongKind(String),
    #[error("allow-owner is true but the entity has no owner")]
    NoOwner,
    #[error("also claimed by {}; ignored on both", shown(.0))]
    DuplicateIdentity(String),
    #[error(
        "expected whom the prefix is delegated to: `*`, or refs of Groups, Users or routed entities"
    )]
    MissingDelegate,
    #[error(
        "invalid delegate `{}`: expected `*` or [kind:][namespace/]name of a Component, API, Resource or System (not a Group or User: an entity's owner is whatever its writer says)",
        shown(.0)
    )]
    BadDelegate(String),
    #[error(
        "group hierarchy too large: more than {0} memberships of groups that routes name; the rest are ignored (less access, never more)"
    )]
    HierarchyTooLarge(usize),
}

/// Whether `c` must not reach a terminal raw: control characters (ESC starts terminal
/// sequences: `\e[8m` hides what follows), blanks other than the space, and the
/// invisible formatting characters (bidi overrides such as U+202E reorder the rest of
/// the line, zero-width characters hide differences).
fn unsafe_char(c: char) -> bool {
    c.is_control()
        || (c.is_whitespace() && c != ' ')
        || matches!(c, '\u{061c}' | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{206f}' | '\u{feff}')
}

/// Catalog-supplied text printed for a person (`policy show`, pretty logs, error
/// messages): every [`unsafe_char`] escaped as `\u{..}`. Borrows when nothing is.
pub fn escaped(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if unsafe_char(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Input echoed in a message: escaped as [`escaped`], cut at 80 characters, so every
/// message stays one readable line.
pub fn shown(s: &str) -> String {
    let cut: String = s.chars().take(80).collect();
    let mut out = escaped(&cut).into_owned();
    if s.chars().nth(80).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_cuts() {
        assert!(matches!(
            escaped("plain"),
            std::borrow::Cow::Borrowed("plain")
        ));
        assert_eq!(escaped("a\u{1b}[8m\u{202e}b"), "a\\u{1b}[8m\\u{202e}b");
        assert_eq!(shown(&"x".repeat(81)), format!("{}…", "x".repeat(80)));
        assert_eq!(shown(&"x".repeat(80)), "x".repeat(80));
    }
}
