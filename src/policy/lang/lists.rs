//! The comma lists and one-word values of the annotation language: `stagedoor.io/hosts`
//! (host patterns), `allowed-groups` (principal refs), `idp-groups` (IdP group names),
//! `allow-owner` (a boolean) and `subject` (one word). A comma list may wrap over
//! lines: a newline separates items like a comma, and a comma may end a line.

use crate::catalog::EntityRef;

use super::{LangError, Located, at, check_len, is_blank, lines, offset, whole};

/// A principal named in an access list: a group (the default kind) or a user, as a
/// full lower-case ref ([`EntityRef`]'s rule). `None` when malformed or of another kind.
pub fn principal_ref(text: &str, default_ns: &str) -> Option<String> {
    let r = EntityRef::parse(text, "group", default_ns).ok()?;
    matches!(r.kind(), "group" | "user").then(|| r.into_string())
}

/// Items of a comma list with their byte offsets, trimmed of blanks. Errors on an empty item.
fn comma_items(line: &str, n: u32) -> Result<Vec<(usize, &str)>, Located> {
    let mut out = Vec::new();
    for item in line.split(',') {
        let t = item.trim_matches(is_blank);
        if t.is_empty() {
            return Err(at(line, n, offset(line, item), LangError::EmptyItem));
        }
        out.push((offset(line, t), t));
    }
    Ok(out)
}

/// Parses a comma list, which may wrap over several lines (a newline separates items
/// like a comma; a comma may end a line).
fn comma_list<T>(
    text: &str,
    mut item: impl FnMut(&str) -> Result<T, LangError>,
) -> Result<Vec<T>, Located> {
    check_len(text)?;
    let mut out = Vec::new();
    for (n, line) in lines(text) {
        let trimmed = line.trim_end_matches(is_blank);
        // A list may wrap over lines; a comma ending a line is allowed.
        let line = trimmed.strip_suffix(',').unwrap_or(trimmed);
        if line.trim_matches(is_blank).is_empty() {
            continue;
        }
        for (off, t) in comma_items(line, n)? {
            out.push(item(t).map_err(|e| at(line, n, off, e))?);
        }
    }
    if out.is_empty() {
        return Err(whole(LangError::EmptyItem));
    }
    Ok(out)
}

/// A host pattern: an exact name or `*.` + a name (matching exactly one more label).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HostPattern {
    Exact(String),
    /// The suffix after `*.`.
    Wildcard(String),
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostPattern::Exact(h) => f.write_str(h),
            HostPattern::Wildcard(s) => write!(f, "*.{s}"),
        }
    }
}

fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn host_pattern(item: &str) -> Result<HostPattern, LangError> {
    let lower = item.to_ascii_lowercase();
    let h = lower.strip_suffix('.').unwrap_or(&lower);
    if let Some((name, port)) = h.rsplit_once(':')
        && is_dns_name(name.strip_prefix("*.").unwrap_or(name))
        && !port.is_empty()
        && port.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(LangError::HostWithPort(item.to_owned()));
    }
    match h.strip_prefix("*.") {
        Some(suffix) if is_dns_name(suffix) => Ok(HostPattern::Wildcard(suffix.to_owned())),
        None if is_dns_name(h) => Ok(HostPattern::Exact(h.to_owned())),
        _ => Err(LangError::BadHost(item.to_owned())),
    }
}

/// Parses `stagedoor.io/hosts`: a comma list of host patterns, deduplicated.
pub fn parse_hosts(text: &str) -> Result<Vec<HostPattern>, Located> {
    let mut v = comma_list(text, host_pattern)?;
    let mut seen = std::collections::HashSet::new();
    v.retain(|h| seen.insert(h.clone()));
    Ok(v)
}

/// Parses `stagedoor.io/allowed-groups`: a comma list of group (or user) refs.
pub fn parse_principals(text: &str, ns: &str) -> Result<Vec<String>, Located> {
    comma_list(text, |t| {
        principal_ref(t, ns).ok_or_else(|| LangError::BadPrincipal(t.to_owned()))
    })
}

/// Parses `stagedoor.io/idp-groups`: a comma list of identity-provider group names
/// (kept verbatim, compared case-sensitively; inner spaces allowed).
pub fn parse_idp_groups(text: &str) -> Result<Vec<String>, Located> {
    comma_list(text, |t| {
        if t.chars().any(char::is_control) {
            Err(LangError::ControlChar(t.to_owned()))
        } else {
            Ok(t.to_owned())
        }
    })
}

/// Parses `stagedoor.io/allow-owner`: `true` or `false` (ASCII case-insensitive).
pub fn parse_bool(text: &str) -> Result<bool, Located> {
    check_len(text)?;
    let t = text.trim();
    let err = |e| at(text, 1, offset(text, t), e);
    if t.eq_ignore_ascii_case("true") {
        Ok(true)
    } else if t.eq_ignore_ascii_case("false") {
        Ok(false)
    } else {
        Err(err(LangError::BadBool(t.to_owned())))
    }
}

/// Parses a single word (`stagedoor.io/subject`): no blanks, no control characters.
pub fn parse_word(text: &str) -> Result<String, Located> {
    check_len(text)?;
    let t = text.trim();
    if t.is_empty() || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(at(
            text,
            1,
            offset(text, t),
            LangError::BadWord(t.to_owned()),
        ));
    }
    Ok(t.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principals() {
        assert_eq!(
            principal_ref("Payments", "default").as_deref(),
            Some("group:default/payments")
        );
        assert_eq!(
            principal_ref("user:ops/Alice", "default").as_deref(),
            Some("user:ops/alice")
        );
        assert_eq!(principal_ref("group:", "default"), None);
        assert_eq!(principal_ref("component:x", "default"), None);
    }

    #[test]
    fn comma_items_keep_offsets() {
        assert_eq!(
            comma_items("a, b ,c", 1).unwrap(),
            [(0, "a"), (3, "b"), (6, "c")]
        );
        let e = comma_items("a,,b", 4).unwrap_err();
        assert_eq!((e.line, e.column, e.error), (4, 3, LangError::EmptyItem));
    }
}
