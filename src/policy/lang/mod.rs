//! The annotation language, between the catalog and the route table: parses the
//! `stagedoor.io/*` annotation values of one entity into typed route lines, host
//! patterns and principal refs, or a located [`LangError`]. The grammar is the user
//! manual's (`docs/policy.md`, on the [`policy`](super) module).
//!
//! The parsers, one file each: `routes.rs` reads `stagedoor.io/routes`, one
//! `METHODS PATH REQUIREMENT...` per line; `lists.rs` the comma lists (`hosts`,
//! `allowed-groups`, `idp-groups`) and the one-word values (`allow-owner`,
//! `subject`); `delegate.rs` reads `stagedoor.io/delegate`; `error.rs` holds
//! [`LangError`] and the escaping every message applies to catalog text.
//!
//! Entity refs (`@group` words, `allowed-groups`, delegates) are parsed by
//! [`EntityRef`](crate::catalog::EntityRef), the one rule the catalog sources also
//! load refs with.
//!
//! Hand-written, without a parser-combinator crate: every value is a list of lines,
//! each a list of blank- or comma-separated words, and what the grammar asks of a word
//! (a method token, a path, a scope, a ref) is a character check. Most of the work is
//! choosing the error and its column (`*,GET` mixes `*` with methods, `GET/a` is a bad
//! method list, `GET` alone lacks a path); in nom that takes a custom error type and
//! `cut` at each step of a grammar of words and commas. nom was used only for
//! `space0`, `space1` and two small lists around hand-written loops, so it was dropped.

mod delegate;
mod error;
mod lists;
mod routes;

pub use delegate::{Delegate, Delegation, is_under, parse_delegations};
pub use error::{LangError, escaped, shown};
pub use lists::{
    HostPattern, parse_bool, parse_hosts, parse_idp_groups, parse_principals, parse_word,
    principal_ref,
};
pub use routes::{Requirement, RouteSpec, claimed_paths, parse_routes};

/// Longest annotation value read; longer ones are an error (protects build time).
pub const MAX_ANNOTATION_LEN: usize = 64 * 1024;

/// Most requirement words on one route line (keeps a line's checks cheap).
pub const MAX_WORDS: usize = 64;

/// A [`LangError`] at a 1-based line and column (in characters) of the annotation value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub line: u32,
    pub column: u32,
    pub error: LangError,
}

/// The byte offset of `part`, a subslice of `whole`.
fn offset(whole: &str, part: &str) -> usize {
    part.as_ptr() as usize - whole.as_ptr() as usize
}

/// `error` at byte offset `off` of `line_text`, line `line`.
fn at(line_text: &str, line: u32, off: usize, error: LangError) -> Located {
    let column = line_text.get(..off).map_or(off, |s| s.chars().count()) + 1;
    Located {
        line,
        column: u32::try_from(column).unwrap_or(u32::MAX),
        error,
    }
}

/// An error about the whole value, located at its start.
fn whole(error: LangError) -> Located {
    Located {
        line: 1,
        column: 1,
        error,
    }
}

/// The blanks of the language: space and tab (not other white space, which is text).
fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// `s` without its leading blanks.
fn skip_blanks(s: &str) -> &str {
    s.trim_start_matches(is_blank)
}

/// The word `s` starts with (up to the first blank, possibly empty) and the rest.
fn split_word(s: &str) -> (&str, &str) {
    s.split_at(s.find(is_blank).unwrap_or(s.len()))
}

/// Lines of a value with their 1-based numbers, `\r\n` tolerated.
fn lines(text: &str) -> impl Iterator<Item = (u32, &str)> {
    text.split('\n').enumerate().map(|(i, l)| {
        let n = u32::try_from(i + 1).unwrap_or(u32::MAX);
        (n, l.strip_suffix('\r').unwrap_or(l))
    })
}

fn check_len(text: &str) -> Result<(), Located> {
    if text.len() > MAX_ANNOTATION_LEN {
        return Err(whole(LangError::TooLarge));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_and_blanks() {
        assert_eq!(split_word("GET /a"), ("GET", " /a"));
        assert_eq!(split_word("x"), ("x", ""));
        assert_eq!(split_word("\tx"), ("", "\tx"));
        assert_eq!(skip_blanks(" \t x "), "x ");
        let e = at("héllo wörld", 2, "héllo ".len(), LangError::EmptyItem);
        assert_eq!((e.line, e.column), (2, 7));
    }
}
