//! Decision guards, inside the decision (policy → **guards** → decision): after a
//! request's route is found, refuse it as `bad_path` when a backend that reads paths
//! more loosely than the policy would route it to a more protected route.
//!
//! - **Case folding** (IIS, ASP.NET, Spring with case-insensitive matching, Windows
//!   file servers): a path that would reach a longer route prefix if letter case were
//!   ignored (`/api/orders/ADMIN` with a route `/api/orders/admin`).
//! - **Suffixes** (Rails' optional `(.:format)` on every route, Spring MVC's suffix
//!   pattern matching, IIS and Windows dropping trailing dots and spaces from path
//!   segments): a path that would reach a longer route prefix with different
//!   requirements if a segment were cut at its first `.`, or trailing `.` and `%20`
//!   trimmed from its segments. With `GET /api/orders orders:read` and
//!   `* /api/orders/admin orders:admin`, `/api/orders/admin.json`, `/api/orders/admin.`
//!   and `/api/orders/admin%20` are refused rather than decided as `/api/orders`. A
//!   variant that reaches the same requirements (`/api/orders/7.json`, static files
//!   under a `public` prefix) or a shorter prefix (an explicit `/report.pdf` route
//!   over `/report`) passes: the operator wrote that rule. Variants are also checked
//!   for case folding (`/api/orders/Admin.` on IIS).
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

impl Policy {
    /// Whether ignoring letter case, `path` would reach a route prefix (of any method)
    /// longer than `matched`: a case-insensitive backend could then serve a more
    /// protected route than the one the policy applied. Allocates only when the path or
    /// some route prefix holds an upper-case letter.
    pub(super) fn case_folds_deeper(&self, host: &str, path: &str, matched: usize) -> bool {
        if !self.upper_case_prefixes && !path.bytes().any(|b| b.is_ascii_uppercase()) {
            return false;
        }
        let folded = path.to_ascii_lowercase();
        let tables = self.tables(host);
        path::prefixes(&folded)
            .take_while(|p| p.len() > matched)
            .any(|p| {
                tables
                    .into_iter()
                    .flatten()
                    .any(|t| p.len() <= t.max_len && t.folded.contains_key(p))
            })
    }

    /// Whether a suffix variant of `path` (see the module doc) would reach a route
    /// prefix longer than the one found, with different requirements, or would do so
    /// with letter case folded. `found` is the request's own lookup.
    pub(super) fn suffix_reaches_deeper(
        &self,
        method: &str,
        host: &str,
        path: &str,
        found: Option<(usize, &Slot)>,
    ) -> bool {
        // One pass over the bytes; `%20` is searched for only after a `%`.
        match path.bytes().position(|b| b == b'.' || b == b'%') {
            None => return false,
            Some(i) if !path[i..].contains('.') && !path[i..].contains("%20") => return false,
            Some(_) => {}
        }
        let matched = found.map_or(0, |(len, _)| len);
        let reaches = |variant: &str| {
            if variant == path {
                return false;
            }
            let deeper = self
                .lookup(method, host, variant)
                .is_some_and(|(len, slot)| len > matched && !same_rule(found.map(|f| f.1), slot));
            deeper || self.case_folds_deeper(host, variant, matched)
        };
        if reaches(&trim_segments(path)) {
            return true;
        }
        // Each segment cut at its first `.`, the rest of the path dropped.
        let ends = path.match_indices('/').map(|(i, _)| i).skip(1);
        let mut start = 0;
        for end in ends.chain(std::iter::once(path.len())) {
            if let Some(dot) = path[start..end].find('.')
                && reaches(&trim_segments(&path[..start + dot]))
            {
                return true;
            }
            start = end;
        }
        false
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
