//! Beside the request flow, under [`crate::sso`]: the `Cookie` request header as
//! browsers send it (`a=1; b=2`, RFC 6265 §5.4), read without allocating, and the
//! `Set-Cookie` lines of the session and state cookies.
//!
//! Pieces are split on `;` (as browsers and servers do; a cookie value cannot hold
//! one), a piece's name is what comes before its first `=` after optional whitespace,
//! and names compare exactly: `xstagedoor_session` or `stagedoor_session_x` are other
//! cookies and pass through untouched.

use std::borrow::Cow;

/// The session cookie's name when it is shared with a `cookie_domain`, or without
/// `Secure` (a `__Host-` cookie needs `Secure`, `Path=/` and no `Domain`).
pub const SESSION: &str = "stagedoor_session";
/// The session cookie's name when host-only and secure.
pub const SESSION_HOST: &str = "__Host-stagedoor_session";
/// The pre-sign-in state cookie (`Path=/.stagedoor/`, so never `__Host-`).
pub const STATE: &str = "stagedoor_state";
/// Every name stripped before the request reaches a backend, whatever the
/// configuration (a cookie set under another setting must not leak either).
pub const OURS: [&str; 3] = [SESSION, SESSION_HOST, STATE];

/// The `name=value` pieces of a Cookie header: (name, value, the raw piece).
pub fn pieces(header: &str) -> impl Iterator<Item = (&str, &str, &str)> {
    header.split(';').filter_map(|raw| {
        let piece = raw.trim_matches([' ', '\t']);
        let (name, value) = piece.split_once('=')?;
        Some((
            name.trim_end_matches([' ', '\t']),
            unquote(value.trim_start_matches([' ', '\t'])),
            raw,
        ))
    })
}

/// A value in double quotes loses them (RFC 6265 allows `"..."`).
fn unquote(v: &str) -> &str {
    if v.len() >= 2 && v.starts_with('"') && v.ends_with('"') {
        &v[1..v.len() - 1]
    } else {
        v
    }
}

/// The values of cookie `name`, in header order.
pub fn values<'h>(header: &'h str, name: &'h str) -> impl Iterator<Item = &'h str> {
    pieces(header)
        .filter(move |(n, _, _)| *n == name)
        .map(|(_, v, _)| v)
}

/// `header` without the session and state cookies ([`OURS`]); every other piece is
/// kept byte for byte, in order, joined by the `;` that separated it. Borrowed when
/// there is nothing to remove.
pub fn strip(header: &str) -> Cow<'_, str> {
    if !pieces(header).any(|(n, _, _)| OURS.contains(&n)) {
        return Cow::Borrowed(header);
    }
    let mut out = String::with_capacity(header.len());
    for raw in header.split(';') {
        let ours = raw
            .trim_matches([' ', '\t'])
            .split_once('=')
            .is_some_and(|(n, _)| OURS.contains(&n.trim_end_matches([' ', '\t'])));
        if ours {
            continue;
        }
        if out.is_empty() {
            out.push_str(raw.trim_start_matches([' ', '\t']));
        } else {
            out.push(';');
            out.push_str(raw);
        }
    }
    let kept = out.trim_end_matches([' ', '\t', ';']).len();
    out.truncate(kept);
    Cow::Owned(out)
}

/// Attributes of a `Set-Cookie` line.
#[derive(Debug, Clone, Copy)]
pub struct Attrs<'a> {
    pub path: &'a str,
    pub domain: Option<&'a str>,
    pub secure: bool,
    pub max_age: i64,
}

/// One `Set-Cookie` value: HttpOnly and SameSite=Lax always.
pub fn set_cookie(name: &str, value: &str, a: Attrs<'_>) -> String {
    let mut s = format!(
        "{name}={value}; Path={}; Max-Age={}; HttpOnly; SameSite=Lax",
        a.path,
        a.max_age.max(0)
    );
    if a.secure {
        s.push_str("; Secure");
    }
    if let Some(d) = a.domain {
        s.push_str("; Domain=");
        s.push_str(d);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_keeps_everything_else_byte_for_byte() {
        let cases: &[(&str, &str)] = &[
            ("a=1; stagedoor_session=v1.x; b=2", "a=1; b=2"),
            ("stagedoor_session=v1.x; b=2", "b=2"),
            ("a=1;b=2;stagedoor_session=v1.x", "a=1;b=2"),
            ("a=1;stagedoor_state=s;b=\"q;\"", "a=1;b=\"q;\""),
            ("__Host-stagedoor_session=\"v1.x\"; a=1", "a=1"),
            ("stagedoor_session=1; stagedoor_session=2", ""),
            ("stagedoor_session = v1.x ;a=1", "a=1"),
            ("\tstagedoor_state=x;  a=1 ;", "a=1"),
            ("a=1;  b = 2", "a=1;  b = 2"),
            // Named like ours, but other cookies.
            (
                "xstagedoor_session=1; stagedoor_session_x=2",
                "xstagedoor_session=1; stagedoor_session_x=2",
            ),
            (
                "__Secure-stagedoor_session=1; Stagedoor_session=2",
                "__Secure-stagedoor_session=1; Stagedoor_session=2",
            ),
            ("a=stagedoor_session=1", "a=stagedoor_session=1"),
            ("stagedoor_session", "stagedoor_session"),
            ("", ""),
        ];
        for (input, want) in cases {
            assert_eq!(strip(input), *want, "{input:?}");
        }
        assert!(matches!(strip("a=1; b=2"), Cow::Borrowed(_)));
    }

    #[test]
    fn values_by_exact_name() {
        let h = "x=1; stagedoor_session=\"v1.a\";stagedoor_session=v1.b; stagedoor_sessionx=c";
        assert_eq!(values(h, SESSION).collect::<Vec<_>>(), ["v1.a", "v1.b"]);
        assert_eq!(values("stagedoor_session", SESSION).count(), 0);
        assert_eq!(values("\"", SESSION).count(), 0);
    }

    #[test]
    fn set_cookie_lines() {
        let a = Attrs {
            path: "/",
            domain: Some("example.com"),
            secure: true,
            max_age: 10,
        };
        assert_eq!(
            set_cookie(SESSION, "v", a),
            "stagedoor_session=v; Path=/; Max-Age=10; HttpOnly; SameSite=Lax; Secure; Domain=example.com"
        );
        let clear = Attrs {
            max_age: -5,
            domain: None,
            secure: false,
            ..a
        };
        assert_eq!(
            set_cookie(STATE, "", clear),
            "stagedoor_state=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax"
        );
    }
}
