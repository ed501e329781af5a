//! Route ownership, inside the policy build (catalog → **ownership** → route table):
//! which routes may take effect where another owner's route already covers the path.
//!
//! A route of entity B whose path lies under (or on) the path of a route of another
//! entity A, on a host both apply to, takes effect there only when A delegates a
//! prefix covering B's path to B (`stagedoor.io/delegate`, naming B's ref or `*`).
//! Otherwise B's route is held closed as a `policy_conflict` on those hosts, and
//! reported. Owners do not count: the issue first asked for "another owner", but
//! `spec.owner` (and so a Group delegate) is written by whoever writes the entity, and
//! a writer could claim payments' ownership to nest under payments' routes. Entity refs
//! are unique in the catalog, so a delegation names exactly whom it trusts.
//! Without this, the catalog's least trusted writer could open another team's paths:
//! `* /api/orders/admin/users public` under payments' `* /api/orders/admin orders:admin`,
//! or a longer any-host prefix beating billing's host-scoped route.
//!
//! - Methods do not matter: a path belongs to whoever routes it, for every method.
//! - Hosts: any-host overlaps every host, `*.s` overlaps itself and each `x.s`, an
//!   exact host itself. The hold goes in the more specific table of the two, so an
//!   any-host route under billing's host-scoped one is held on billing's hosts only,
//!   and fills only the methods billing's table leaves open at that path.
//! - Delegation does not chain: every other entity whose route encloses B's path must
//!   delegate to B.
//! - The paths an entity in error holds closed enclose like routes that delegate
//!   nothing: a broken service does not open its subtree to others.

use std::sync::Arc;

use super::lang::{Delegate, Delegation, HostPattern, is_under};
use super::{Map, Route, path};

/// One path an entity claims on one host pattern (`None`: any host).
pub(super) struct PathClaim<'a> {
    pub path: &'a str,
    pub host: Option<&'a HostPattern>,
    pub entity: &'a str,
    /// What the entity delegates; empty for the held paths of an entity in error.
    pub delegations: &'a [Delegation],
    /// How a report names this claim as the enclosing one.
    pub describe: Describe<'a>,
}

/// What a claim is, for reports that name it as the enclosing one.
#[derive(Clone, Copy)]
pub(super) enum Describe<'a> {
    Route(&'a Route),
    /// A prepared text (the held paths of an entity in error).
    Text(&'a Arc<str>),
}

impl Describe<'_> {
    /// `` `LINE` of ENTITY (owner OWNER)``, or the prepared text. Made only for the
    /// claims a report names, not for every route of every build.
    pub fn text(&self) -> Arc<str> {
        match self {
            Describe::Route(r) => format!(
                "`{}` of {}{}",
                r.display,
                r.entity,
                owner_note(r.owner.as_deref())
            )
            .into(),
            Describe::Text(t) => (*t).clone(),
        }
    }
}

/// ` (owner X)` or ` (no owner)`.
pub(super) fn owner_note(owner: Option<&str>) -> String {
    owner.map_or_else(|| " (no owner)".to_owned(), |o| format!(" (owner {o})"))
}

/// A claim that does not take effect on `table` because `enclosing` does not delegate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Block<'a> {
    pub enclosing: usize,
    pub table: Option<&'a HostPattern>,
}

fn rank(h: Option<&HostPattern>) -> u8 {
    match h {
        None => 0,
        Some(HostPattern::Wildcard(_)) => 1,
        Some(HostPattern::Exact(_)) => 2,
    }
}

/// The exact host's parent domain, which `*.parent` matches.
fn parent(host: &str) -> Option<&str> {
    host.split_once('.')
        .filter(|(first, _)| !first.is_empty())
        .map(|(_, rest)| rest)
}

/// Whether some request host matches both patterns.
fn overlap(a: Option<&HostPattern>, b: Option<&HostPattern>) -> bool {
    use HostPattern::{Exact, Wildcard};
    match (a, b) {
        (None, _) | (_, None) => true,
        (Some(Exact(x)), Some(Exact(y))) | (Some(Wildcard(x)), Some(Wildcard(y))) => x == y,
        (Some(Exact(x)), Some(Wildcard(s))) | (Some(Wildcard(s)), Some(Exact(x))) => {
            parent(x) == Some(s.as_str())
        }
    }
}

/// Whether `a`'s entity lets `b` take effect under it: the same entity, or a
/// delegation naming `b`'s entity (or anyone). Owners are not compared: `spec.owner`
/// is whatever the entity's writer says, so "the same team" cannot be verified.
fn permits(a: &PathClaim<'_>, b: &PathClaim<'_>) -> bool {
    a.entity == b.entity
        || a.delegations.iter().any(|d| {
            is_under(b.path, &d.path)
                && d.to.iter().any(|t| match t {
                    Delegate::Anyone => true,
                    Delegate::Ref(r) => r == b.entity,
                })
        })
}

/// A claim list's key: (kind, host or parent domain, path), kind 0 any host, 1
/// `*.name`, 2 exact name, 3 an exact host's parent domain (for `*.parent` claims to
/// meet it), 4 every claim at the path, whatever its host (for any-host claims).
type Key<'k> = (u8, &'k str, &'k str);

const END: usize = usize::MAX;

/// The claims by [`Key`]: each key heads a list of claim indexes chained through
/// `next` (one slot per claim and list kind: 0 by own host, 1 at the path, 2 by parent
/// domain), so indexing allocates nothing per key.
struct Index<'a> {
    heads: Map<Key<'a>, usize>,
    next: Vec<[usize; 3]>,
}

impl<'a> Index<'a> {
    fn new(claims: &[PathClaim<'a>]) -> Self {
        let mut heads: Map<Key<'a>, usize> = Map::default();
        heads.reserve(claims.len() * 3);
        let mut next = vec![[END; 3]; claims.len()];
        let mut link = |key: Key<'a>, list: usize, i: usize| {
            let head = heads.entry(key).or_insert(END);
            next[i][list] = *head;
            *head = i;
        };
        for (i, c) in claims.iter().enumerate() {
            let (kind, name) = match c.host {
                None => (0, ""),
                Some(HostPattern::Wildcard(s)) => (1, s.as_str()),
                Some(HostPattern::Exact(x)) => (2, x.as_str()),
            };
            link((kind, name, c.path), 0, i);
            link((4, "", c.path), 1, i);
            if let Some(HostPattern::Exact(x)) = c.host
                && let Some(p) = parent(x)
            {
                link((3, p, c.path), 2, i);
            }
        }
        Index { heads, next }
    }

    /// Whether some claim holds `path`.
    fn holds(&self, path: &str) -> bool {
        self.heads.contains_key(&(4, "", path))
    }

    /// The claims on list `l` of `key`.
    fn list(&self, key: Key<'a>, l: usize) -> impl Iterator<Item = usize> + '_ {
        let mut i = self.heads.get(&key).copied().unwrap_or(END);
        std::iter::from_fn(move || {
            (i != END).then(|| {
                let cur = i;
                i = self.next[cur][l];
                cur
            })
        })
    }
}

/// The lists whose claims may overlap a claim on `host` at `prefix`.
fn candidate_lists<'k>(
    host: Option<&'k HostPattern>,
    prefix: &'k str,
) -> [Option<(Key<'k>, usize)>; 3] {
    let (k1, k2) = match host {
        None => (((4, "", prefix), 1), None),
        Some(HostPattern::Exact(x)) => (
            ((2, x.as_str(), prefix), 0),
            parent(x).map(|p| ((1, p, prefix), 0)),
        ),
        Some(HostPattern::Wildcard(s)) => (
            ((1, s.as_str(), prefix), 0),
            Some(((3, s.as_str(), prefix), 2)),
        ),
    };
    let any_host = host.map(|_| ((0, "", prefix), 0));
    [Some(k1), k2, any_host]
}

/// For each of `claims[..routes]` (the route claims; the rest are held paths that block
/// but are never blocked), the enclosing claims of other owners that do not delegate,
/// with the table where each hold goes. Linear in claims times path depth, except for
/// any-host claims, which meet every claim at their prefixes.
pub(super) fn undelegated<'a>(claims: &[PathClaim<'a>], routes: usize) -> Vec<Vec<Block<'a>>> {
    let index = Index::new(claims);
    // The prefixes of the last path walked that some claim holds: the claims of one
    // route on many hosts share its path, so its prefixes are hashed once, not once
    // per host.
    let mut walked: (&str, Vec<&str>) = ("", Vec::new());
    claims[..routes]
        .iter()
        .map(|b| {
            if walked.0 != b.path {
                let held = path::prefixes(b.path).filter(|p| index.holds(p)).collect();
                walked = (b.path, held);
            }
            let mut blocks = Vec::new();
            for &prefix in &walked.1 {
                let candidates = candidate_lists(b.host, prefix)
                    .into_iter()
                    .flatten()
                    .flat_map(|(k, l)| index.list(k, l));
                for i in candidates {
                    let a = &claims[i];
                    if overlap(a.host, b.host) && !permits(a, b) {
                        let table = if rank(b.host) >= rank(a.host) {
                            b.host
                        } else {
                            a.host
                        };
                        blocks.push(Block {
                            enclosing: i,
                            table,
                        });
                    }
                }
            }
            blocks
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_overlap() {
        let e = |s: &str| HostPattern::Exact(s.into());
        let w = |s: &str| HostPattern::Wildcard(s.into());
        assert!(overlap(None, Some(&e("a.x"))));
        assert!(overlap(Some(&e("a.x")), Some(&w("x"))));
        assert!(!overlap(Some(&e("a.b.x")), Some(&w("x"))));
        assert!(!overlap(Some(&e("x")), Some(&w("x"))));
        assert!(overlap(Some(&w("x")), Some(&w("x"))));
        assert!(!overlap(Some(&w("x")), Some(&w("a.x"))));
        assert!(!overlap(Some(&e("a")), Some(&e("b"))));
    }
}
