//! Decision guards, inside the decision (policy → **guards** → decision): after a
//! request's route is found, refuse it as `bad_path` when a backend that reads paths
//! more loosely than the policy would route it to a more protected route.
//!
//! - **Case folding** (IIS, ASP.NET, Spring with case-insensitive matching, Windows
//!   file servers): a path that would reach a longer route prefix if letter case were
//!   ignored (`/api/orders/ADMIN` with a route `/api/orders/admin`).
//! - **Suffixes** (Rails' optional `(.:format)` on every route, Spring MVC's suffix
//!   pattern matching, IIS and Windows dropping trailing dots and spaces from path
//!   segments): a path that would reach a route at least as deep (in segments) as the
//!   one found, with different requirements, if it were cut at any `.`, or trailing
//!   `.` and `%20` trimmed from its segments. With `GET /api/orders orders:read` and
//!   `* /api/orders/admin orders:admin`, `/api/orders/admin.json`, `/api/orders/admin.`
//!   and `/api/orders/admin%20` are refused rather than decided as `/api/orders`; so is
//!   `/api/orders.json` when `/api/orders.json` is another entity's public route. A
//!   variant that reaches the same requirements (`/api/orders/7.json`, static files
//!   under a `public` prefix) or a shallower route passes. Variants are also checked
//!   for case folding (`/api/orders/Admin.` on IIS). Depth counts segments, not bytes:
//!   `/api......` is one segment, as deep as `/api`.
//!
//! Both guards compare what the variant reaches with what was found, for the request's
//! method, as well as (for case) any longer prefix of any method: another entity's
//! route spelt `/API/orders/admin` or `/api/orders.json` cannot decide requests that a
//! loose backend serves from `/api/orders/admin`.
//!
//! Both cost nothing unless the path holds an upper-case letter (or some route prefix
//! does), a `.` or a `%20`.

use std::borrow::Cow;
use std::sync::Arc;

use super::{Policy, Slot, path};

/// Whether two slots decide alike: the same route, or routes with equal requirements
/// and group rules. Conflicts and broken holds deny anyway and never compare equal.
fn same_rule(a: Option<&Slot>, b: &Slot) -> bool {
    match (a, b) {
        (Some(Slot::Route(x)), Slot::Route(y)) => {
            Arc::ptr_eq(x, y) || (x.requirement == y.requirement && x.allowed == y.allowed)
        }
        _ => false,
    }
}

/// `path` with trailing `.` and `%20` removed from every segment (a segment left empty
/// disappears), as IIS and Windows read it. Borrows when nothing changes.
fn trim_segments(path: &str) -> Cow<'_, str> {
    fn trim(mut s: &str) -> &str {
        loop {
            if let Some(t) = s.strip_suffix('.') {
                s = t;
            } else if let Some(t) = s.strip_suffix("%20") {
                s = t;
            } else {
                return s;
            }
        }
    }
    if !path.split('/').any(|s| trim(s).len() != s.len()) {
        return Cow::Borrowed(path);
    }
    let mut out = String::with_capacity(path.len());
    for seg in path.split('/').skip(1) {
        let t = trim(seg);
        if !t.is_empty() || seg.is_empty() {
            out.push('/');
            out.push_str(t);
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    Cow::Owned(out)
}

/// The most suffix variants one path may have (its `.` cut points, plus the trimmed
/// form). A path with more is `bad_path`: each variant costs a lookup, and real paths
/// have a handful of dots at most (`/pkg/1.2.3/app.min.js` has five).
pub const MAX_SUFFIX_VARIANTS: usize = 12;

/// Segments in a path prefix (`/` has none, `/a/b` two).
fn depth(prefix: &str) -> usize {
    prefix.split('/').filter(|s| !s.is_empty()).count()
}

impl Policy {
    /// Whether ignoring letter case, `path` would reach a route prefix (of any method)
    /// longer than `matched`, or (for this method) a route at least as deep as the one
    /// found with other requirements: a case-insensitive backend could then serve a
    /// more protected route than the one the policy applied. Allocates only when the
    /// path or some route prefix holds an upper-case letter.
    pub(super) fn case_folds_deeper(
        &self,
        method: &str,
        host: &str,
        path: &str,
        found: Option<(usize, &Slot)>,
    ) -> bool {
        if !self.upper_case_prefixes && !path.bytes().any(|b| b.is_ascii_uppercase()) {
            return false;
        }
        let matched = found.map_or(0, |(len, _)| len);
        let folded = path.to_ascii_lowercase();
        let tables = self.tables(host);
        let longer = path::prefixes(&folded)
            .take_while(|p| p.len() > matched)
            .any(|p| {
                tables
                    .into_iter()
                    .flatten()
                    .any(|t| p.len() <= t.max_len && t.folded.contains_key(p))
            });
        longer || self.reaches_other(method, host, path, &folded, found)
    }

    /// Whether `variant` (a reading of `path` some backend may route instead) reaches a
    /// slot with other requirements than the one found, at least as many segments
    /// deep: `/API/orders/admin` (another entity's route) found, `/api/orders/admin`
    /// reached; or `/api.../x` found while `/api/x` is a route.
    fn reaches_other(
        &self,
        method: &str,
        host: &str,
        path: &str,
        variant: &str,
        found: Option<(usize, &Slot)>,
    ) -> bool {
        if variant == path {
            return false;
        }
        let found_depth = found.map_or(0, |(len, _)| depth(&path[..len.min(path.len())]));
        self.lookup(method, host, variant)
            .is_some_and(|(len, slot)| {
                depth(&variant[..len.min(variant.len())]) >= found_depth
                    && !same_rule(found.map(|f| f.1), slot)
            })
    }

    /// Whether a suffix variant of `path` (see the module doc) would reach a route as
    /// deep as the one found with other requirements, or would with letter case folded.
    /// `found` is the request's own lookup. More than [`MAX_SUFFIX_VARIANTS`] variants
    /// is refused outright (bounded work per request).
    pub(super) fn suffix_reaches_deeper(
        &self,
        method: &str,
        host: &str,
        path: &str,
        found: Option<(usize, &Slot)>,
    ) -> bool {
        // One pass over the bytes; `%20` is searched for only after a `%`.
        let Some(first) = path.bytes().position(|b| b == b'.' || b == b'%') else {
            return false;
        };
        let dots = path.as_bytes()[first..]
            .iter()
            .filter(|&&b| b == b'.')
            .count();
        if dots == 0 && !path[first..].contains("%20") {
            return false;
        }
        if dots + 1 > MAX_SUFFIX_VARIANTS {
            return true;
        }
        let reaches = |variant: &str| {
            self.reaches_other(method, host, path, variant, found)
                || (variant != path && self.case_folds_deeper(method, host, variant, found))
        };
        if reaches(&trim_segments(path)) {
            return true;
        }
        // The path cut at each `.` (a format suffix after any dot: `/v2.1.json`), the
        // rest dropped, trailing dots and spaces trimmed.
        path.match_indices('.')
            .any(|(i, _)| reaches(&trim_segments(&path[..i])))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_trailing_dots_and_spaces_per_segment() {
        assert_eq!(trim_segments("/a/b"), "/a/b");
        assert!(matches!(trim_segments("/a/b.c"), Cow::Borrowed(_)));
        assert_eq!(trim_segments("/a/admin."), "/a/admin");
        assert_eq!(trim_segments("/a/admin%20"), "/a/admin");
        assert_eq!(trim_segments("/a/admin.%20.%20"), "/a/admin");
        assert_eq!(trim_segments("/a./b%20/c"), "/a/b/c");
        assert_eq!(trim_segments("/a/.../c"), "/a/c");
        assert_eq!(trim_segments("/a/b/"), "/a/b/");
        assert_eq!(trim_segments("/a/b./"), "/a/b/");
        assert_eq!(trim_segments("/..."), "/");
    }
}
