//! Path normalisation, between the request (method, host, path) and route matching:
//! turns the raw request path into the one form both the policy and the backend read,
//! or refuses it as `bad_path`.
//!
//! The rules, applied in one pass:
//! - everything from the first `?` on (the query string) is ignored;
//! - the path must start with `/` and be at most [`MAX_PATH_LEN`] bytes;
//! - `%XX` escapes of every character a path may also hold raw (unreserved
//!   `A-Z a-z 0-9 - . _ ~`, sub-delims but `;`, `:` and `@`) are decoded, so that
//!   `/odata/%24batch` and `/odata/$batch` are one path, as backends that decode before
//!   routing see them; every other escape (`%20`, `%25`, `%3F`, non-ASCII, ...) is kept
//!   with upper-case hex;
//! - runs of `/` collapse to one;
//! - refused: `.` or `..` segments (raw or encoded), encoded `/` or `\`, a raw `\`,
//!   control characters (raw or encoded), broken escapes, escapes that decode to invalid
//!   UTF-8 (e.g. the overlong `%C0%AE`), double encoding (`%25` followed by two hex
//!   digits in the result, however the digits were written: `%25%32%65` too), `;` path
//!   parameters (raw or encoded), `#`, raw non-ASCII bytes and any other character
//!   RFC 3986 does not allow in a path, and encoded characters whose Unicode case
//!   mapping is ASCII (the Kelvin sign `K` lower-cases to `k`, the dotless `ı`
//!   upper-cases to `I`, `ﬅ` to `ST`: a case-insensitive Java matcher would read them
//!   as letters of a route's name).
//!
//! Letter case is kept: paths compare case-sensitively, as RFC 3986 says and as most
//! backends route (the decision adds a guard for case-folding backends).

use std::borrow::Cow;

use thiserror::Error;

/// The longest request path (without the query) the policy reads; longer ones are `bad_path`.
pub const MAX_PATH_LEN: usize = 8192;

/// Why a path was refused. Every variant maps to reason `bad_path`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum PathError {
    #[error("path does not start with `/`")]
    NotAbsolute,
    #[error("path is longer than {MAX_PATH_LEN} bytes")]
    TooLong,
    #[error("path holds a `.` or `..` segment")]
    DotSegment,
    #[error("path holds an encoded `/` or `\\`")]
    EncodedSeparator,
    #[error("path holds a backslash")]
    Backslash,
    #[error("path holds a control character")]
    Control,
    #[error("path holds a broken `%` escape")]
    BrokenEscape,
    #[error("path escapes do not decode to valid UTF-8")]
    InvalidUtf8,
    #[error("path holds a double-encoded escape (`%25` followed by hex)")]
    DoubleEncoded,
    #[error("path holds a `;` parameter")]
    Semicolon,
    #[error("path holds `#`")]
    Fragment,
    #[error("path holds a character whose case mapping is ASCII (e.g. the Kelvin sign)")]
    CaseFoldsToAscii,
    #[error("path holds a character not allowed in a URL path")]
    InvalidChar,
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Raw bytes allowed in a path besides `%`: unreserved, sub-delims except `;`, `:`, `@`, `/`.
fn is_path_char(b: u8) -> bool {
    is_unreserved(b)
        || matches!(
            b,
            b'!' | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b'='
                | b':'
                | b'@'
                | b'/'
        )
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Every non-ASCII character whose Unicode upper- or lower-case mapping holds an ASCII
/// character (computed over all of Unicode with `char::to_uppercase/to_lowercase`).
const FOLDS_TO_ASCII: [char; 19] = [
    '\u{00DF}', '\u{0130}', '\u{0131}', '\u{0149}', '\u{017F}', '\u{01F0}', '\u{1E96}', '\u{1E97}',
    '\u{1E98}', '\u{1E99}', '\u{1E9A}', '\u{212A}', '\u{FB00}', '\u{FB01}', '\u{FB02}', '\u{FB03}',
    '\u{FB04}', '\u{FB05}', '\u{FB06}',
];

/// Tracks the UTF-8 sequence formed by consecutive escapes of bytes >= 0x80.
#[derive(Default)]
struct Utf8Run {
    buf: [u8; 4],
    len: usize,
    need: usize,
}

impl Utf8Run {
    fn push(&mut self, b: u8) -> Result<(), PathError> {
        if self.need == 0 {
            self.need = match b {
                0xC2..=0xDF => 2,
                0xE0..=0xEF => 3,
                0xF0..=0xF4 => 4,
                _ => return Err(PathError::InvalidUtf8),
            };
            self.len = 0;
        }
        self.buf[self.len] = b;
        self.len += 1;
        if self.len == self.need {
            self.need = 0;
            // std rejects overlong forms and surrogates.
            let text =
                std::str::from_utf8(&self.buf[..self.len]).map_err(|_| PathError::InvalidUtf8)?;
            if text.chars().any(|c| FOLDS_TO_ASCII.contains(&c)) {
                return Err(PathError::CaseFoldsToAscii);
            }
        }
        Ok(())
    }

    fn end(&self) -> Result<(), PathError> {
        if self.need == 0 {
            Ok(())
        } else {
            Err(PathError::InvalidUtf8)
        }
    }
}

/// Normalises a request path (see the module doc). Borrows when nothing changes, which
/// is the common case.
pub fn normalize(raw: &str) -> Result<Cow<'_, str>, PathError> {
    let path = raw.split_once('?').map_or(raw, |(p, _)| p);
    if path.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong);
    }
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    // Lazily allocated: only once the output differs from the input.
    let mut out: Option<String> = None;
    let mut utf8 = Utf8Run::default();
    // Whether a `%25` escape was seen: only then can the result hold double encoding.
    let mut escaped_percent = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let (Some(h), Some(l)) = (
                    bytes.get(i + 1).copied().and_then(hex),
                    bytes.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(PathError::BrokenEscape);
                };
                let v = (h << 4) | l;
                if v >= 0x80 {
                    utf8.push(v)?;
                } else {
                    utf8.end()?;
                }
                match v {
                    b'/' | b'\\' => return Err(PathError::EncodedSeparator),
                    0..=0x1F | 0x7F => return Err(PathError::Control),
                    b';' => return Err(PathError::Semicolon),
                    b'%' => escaped_percent = true,
                    _ => {}
                }
                let escape = &path[i..i + 3];
                if is_path_char(v) {
                    out.get_or_insert_with(|| path[..i].to_owned())
                        .push(char::from(v));
                } else if escape.bytes().any(|c| c.is_ascii_lowercase()) {
                    let o = out.get_or_insert_with(|| path[..i].to_owned());
                    o.push_str(&escape.to_ascii_uppercase());
                } else if let Some(o) = out.as_mut() {
                    o.push_str(escape);
                }
                i += 3;
                continue;
            }
            b'\\' => return Err(PathError::Backslash),
            0..=0x1F | 0x7F => return Err(PathError::Control),
            b';' => return Err(PathError::Semicolon),
            b'#' => return Err(PathError::Fragment),
            b'/' if i > 0 && bytes[i - 1] == b'/' => {
                // Collapse repeated slashes; the previous one was already written.
                out.get_or_insert_with(|| path[..i].to_owned());
            }
            _ if is_path_char(b) => {
                if let Some(o) = out.as_mut() {
                    o.push(char::from(b));
                }
            }
            _ => return Err(PathError::InvalidChar),
        }
        utf8.end()?;
        i += 1;
    }
    utf8.end()?;
    let norm = match out {
        Some(s) => Cow::Owned(s),
        None => Cow::Borrowed(path),
    };
    check_result(&norm, escaped_percent)?;
    Ok(norm)
}

/// What can only be seen once escapes are decoded: double encoding (`%25%32%65`
/// becomes `%252e` only here; checked only when a `%25` was seen) and dot segments.
#[inline]
fn check_result(norm: &str, escaped_percent: bool) -> Result<(), PathError> {
    // Escapes in the result are upper case.
    let double = escaped_percent
        && norm
            .as_bytes()
            .windows(5)
            .any(|w| w.starts_with(b"%25") && hex(w[3]).is_some() && hex(w[4]).is_some());
    if double {
        return Err(PathError::DoubleEncoded);
    }
    // A `.` or `..` segment is the first one or follows a `/`: most paths have no
    // `/.` at all, and a SIMD search for it skips the split (the split was ~35 ns of
    // a warm decision; BENCHMARKS.md, "Issue 14: the warm path, fourth pass").
    let maybe_dot = norm.starts_with('.') || memchr::memmem::find(norm.as_bytes(), b"/.").is_some();
    if maybe_dot && norm.split('/').any(|seg| seg == "." || seg == "..") {
        return Err(PathError::DotSegment);
    }
    Ok(())
}

/// The route-prefix candidates of a normalised path, longest first, each ending on a
/// segment boundary: `/a/b` → `/a/b`, `/a`, `/`; `/a/b/` → `/a/b`, `/a`, `/`.
pub fn prefixes(path: &str) -> impl Iterator<Item = &str> {
    let mut end = Some(path.len());
    std::iter::from_fn(move || {
        let e = end?;
        let cand = &path[..e];
        let cand = if cand.len() > 1 {
            cand.strip_suffix('/').unwrap_or(cand)
        } else {
            cand
        };
        if cand.len() <= 1 {
            end = None;
            return Some("/");
        }
        end = cand.rfind('/');
        Some(cand)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_clean_paths_borrowed() {
        assert!(matches!(
            normalize("/api/orders"),
            Ok(Cow::Borrowed("/api/orders"))
        ));
        assert!(matches!(normalize("/a?x=1"), Ok(Cow::Borrowed("/a"))));
    }

    #[test]
    fn collapses_and_decodes() {
        assert_eq!(normalize("//api///orders/").unwrap(), "/api/orders/");
        assert_eq!(normalize("/api/%6Frders%7e").unwrap(), "/api/orders~");
        assert_eq!(normalize("/a%20b%c3%a9").unwrap(), "/a%20b%C3%A9");
        assert_eq!(normalize("/100%25").unwrap(), "/100%25");
        // Characters a path may hold raw are one path whether escaped or not.
        assert_eq!(normalize("/odata/%24batch").unwrap(), "/odata/$batch");
        assert_eq!(
            normalize("/v1/orders%3acancel").unwrap(),
            "/v1/orders:cancel"
        );
        assert_eq!(normalize("/users/%40me/a%2Bb").unwrap(), "/users/@me/a+b");
        assert_eq!(
            normalize("/%21%24%26%27%28%29%2A%2B%2C%3D%3A%40").unwrap(),
            "/!$&'()*+,=:@"
        );
        // Those with no raw form stay escaped.
        assert_eq!(normalize("/a%3Fb%23c%22").unwrap(), "/a%3Fb%23c%22");
    }

    /// The `/.` pre-check finds every dot segment the split finds: every string of up
    /// to 7 characters over `/`, `.`, `a` and `%`.
    #[test]
    fn dot_segments_are_found_with_the_pre_check() {
        let reference = |s: &str| s.split('/').any(|seg| seg == "." || seg == "..");
        let mut words = vec![String::new()];
        for _ in 0..7 {
            let next: Vec<String> = words
                .iter()
                .flat_map(|w| ['/', '.', 'a', '%'].map(|c| format!("{w}{c}")))
                .collect();
            for w in &next {
                assert_eq!(
                    check_result(w, false) == Err(PathError::DotSegment),
                    reference(w),
                    "{w:?}"
                );
            }
            words = next;
        }
    }

    #[test]
    fn refuses_attacks() {
        let cases = [
            ("/a/../b", PathError::DotSegment),
            ("/a/./b", PathError::DotSegment),
            ("/a/%2e%2E/b", PathError::DotSegment),
            ("/a/.%2e", PathError::DotSegment),
            ("/a/..", PathError::DotSegment),
            ("/a%2fb", PathError::EncodedSeparator),
            ("/a%5cb", PathError::EncodedSeparator),
            ("/a\\b", PathError::Backslash),
            ("/a\tb", PathError::Control),
            ("/a%00", PathError::Control),
            ("/a%0A", PathError::Control),
            ("/a%", PathError::BrokenEscape),
            ("/a%4", PathError::BrokenEscape),
            ("/a%zz", PathError::BrokenEscape),
            ("/a%c0%ae", PathError::InvalidUtf8),
            ("/a%e0%80%ae", PathError::InvalidUtf8),
            ("/a%c3", PathError::InvalidUtf8),
            ("/a%c3x", PathError::InvalidUtf8),
            ("/a%80", PathError::InvalidUtf8),
            ("/a%252e%252e", PathError::DoubleEncoded),
            ("/x/%25%32%65%25%32%65/api", PathError::DoubleEncoded),
            ("/x/%252%65", PathError::DoubleEncoded),
            ("/x/%25%32e", PathError::DoubleEncoded),
            ("/x/%25%32%46", PathError::DoubleEncoded),
            ("/x/%25%35%43", PathError::DoubleEncoded),
            ("/a%3Bjsessionid=1", PathError::Semicolon),
            ("/api/%E2%84%AAeys", PathError::CaseFoldsToAscii),
            ("/api/adm%C4%B1n", PathError::CaseFoldsToAscii),
            ("/api/%C5%BFecret", PathError::CaseFoldsToAscii),
            ("/api/%C4%B0d", PathError::CaseFoldsToAscii),
            ("/api/%EF%AC%85ore", PathError::CaseFoldsToAscii),
            ("/a;jsessionid=1", PathError::Semicolon),
            ("/a#f", PathError::Fragment),
            ("/a b", PathError::InvalidChar),
            ("/é", PathError::InvalidChar),
            ("/a|b", PathError::InvalidChar),
            ("a/b", PathError::NotAbsolute),
            ("", PathError::NotAbsolute),
            ("*", PathError::NotAbsolute),
        ];
        for (p, want) in cases {
            assert_eq!(normalize(p), Err(want), "{p:?}");
        }
        let long = format!("/{}", "a".repeat(MAX_PATH_LEN));
        assert_eq!(normalize(&long), Err(PathError::TooLong));
    }

    #[test]
    fn folds_to_ascii_is_every_such_character() {
        let computed: Vec<char> = (0x80..=0x10FFFF)
            .filter_map(char::from_u32)
            .filter(|c| {
                c.to_uppercase()
                    .chain(c.to_lowercase())
                    .any(|m| m.is_ascii())
            })
            .collect();
        assert_eq!(computed, FOLDS_TO_ASCII);
    }

    #[test]
    fn prefixes_walk_segment_boundaries() {
        let p: Vec<_> = prefixes("/a/bc/d").collect();
        assert_eq!(p, ["/a/bc/d", "/a/bc", "/a", "/"]);
        let p: Vec<_> = prefixes("/a/bc/").collect();
        assert_eq!(p, ["/a/bc", "/a", "/"]);
        assert_eq!(prefixes("/").collect::<Vec<_>>(), ["/"]);
    }
}

#[cfg(test)]
mod review_dot_segment_tests {
    use super::*;

    /// Whatever `normalize` accepts has no `.` or `..` segment: every raw path of up to
    /// 6 tokens over `/`, `.`, `a`, `%2e`, `%2E`, `%2f`, `%25`, `?` after a leading `/`.
    #[test]
    fn normalized_paths_never_hold_dot_segments() {
        let toks = ["/", ".", "a", "%2e", "%2E", "%2f", "%25", "?"];
        let mut words = vec![String::from("/")];
        for _ in 0..6 {
            let next: Vec<String> = words
                .iter()
                .flat_map(|w| toks.iter().map(move |t| format!("{w}{t}")))
                .collect();
            for w in &next {
                if let Ok(n) = normalize(w) {
                    assert!(
                        !n.split('/').any(|s| s == "." || s == ".."),
                        "{w:?} -> {n:?}"
                    );
                }
            }
            words = next;
        }
    }
}
