//! The route table, inside the policy (token → **policy** → decision): the immutable
//! snapshot [`Policy`] that [`build`](super::build) fills from the catalog and the
//! decision reads: per host pattern, route prefixes → method slots, and the caller
//! directory. Lookup only; nothing here allocates on the request path.

use std::collections::HashMap;
use std::sync::Arc;

use super::{
    AnnotationError, Conflict, HostPattern, Requirement, UnknownPrincipal, Unmatched, path,
};

/// One route line of one entity, with everything the decision needs precomputed.
#[derive(Debug)]
pub(super) struct Route {
    pub(super) entity: Arc<str>,
    pub(super) owner: Option<Arc<str>>,
    pub(super) display: Arc<str>,
    pub(super) hosts: Arc<[HostPattern]>,
    pub(super) methods: Option<Vec<Box<str>>>,
    pub(super) path: Box<str>,
    pub(super) requirement: Requirement,
    pub(super) required_scopes: Option<Arc<str>>,
    /// Sorted principal ids, one of which the caller must hold; `None`: no group rule.
    pub(super) allowed: Option<Box<[u32]>>,
    /// The refs behind `allowed`, for display.
    pub(super) allowed_refs: Arc<[String]>,
}

#[derive(Debug, Clone)]
pub(super) enum Slot {
    Route(Arc<Route>),
    /// Denies with `policy_conflict`: two entities on one slot, or a route under
    /// another owner's that does not delegate it.
    Conflict(Box<Clash>),
    /// Denies with `policy_error`: a path claimed by this entity, whose annotations
    /// are in error. Only ever the `*` slot, and only where no route holds it.
    Broken(Arc<str>),
}

/// What a `policy_conflict` slot holds.
#[derive(Debug, Clone)]
pub(super) struct Clash {
    /// `METHOD HOST PREFIX`, the decision's `route`.
    pub(super) text: Arc<str>,
    /// The entities claiming the slot.
    pub(super) entities: Vec<Arc<str>>,
    /// The enclosing routes of other owners that do not delegate the slot's path.
    pub(super) under: Vec<Arc<str>>,
}

/// The routes declared for one prefix in one host table.
#[derive(Debug, Default)]
pub(super) struct PrefixSlot {
    pub(super) methods: Vec<(Box<str>, Slot)>,
    pub(super) any: Option<Slot>,
}

impl PrefixSlot {
    /// The slot for `method`: its own line, else (for HEAD) the GET line, else `*`.
    pub(super) fn find(&self, method: &str) -> Option<&Slot> {
        let named = |m: &str| self.methods.iter().find(|(x, _)| &**x == m).map(|(_, s)| s);
        named(method)
            .or_else(|| (method == "HEAD").then(|| named("GET")).flatten())
            .or(self.any.as_ref())
    }
}

#[derive(Debug, Default)]
pub(super) struct HostTable {
    pub(super) by_prefix: Map<Box<str>, PrefixSlot>,
    /// The longest prefix held: longer request prefixes need no lookup.
    pub(super) max_len: usize,
    /// Every prefix held, lower-cased (see `case_folds_deeper`).
    pub(super) folded: Map<Box<str>, ()>,
}

/// The hash map of the snapshot (lookups on the hot path). Keys come from the catalog
/// (route paths, hosts, group names) and are looked up with request data, so the
/// hasher is seeded at random per process (foldhash): nobody can precompute paths
/// that share a bucket, as they could with an unkeyed hash such as FxHash.
pub(super) type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Who a caller may be: token facts → expanded, sorted principal ids
/// (the user and every group it belongs to, ancestors included).
#[derive(Debug, Default)]
pub(super) struct Principals {
    pub(super) by_idp_group: Map<Box<str>, Arc<[u32]>>,
    /// Lower-case `group:ns/name`, and `name` for the default namespace.
    pub(super) by_group_name: Map<Box<str>, Arc<[u32]>>,
    pub(super) by_subject: Map<Box<str>, Arc<[u32]>>,
    /// Lower-case email.
    pub(super) by_email: Map<Box<str>, Arc<[u32]>>,
    /// A User's canonical entity ref (`user:ns/name`), for Backstage-issued tokens.
    pub(super) by_user_ref: Map<Box<str>, Arc<[u32]>>,
}

/// An immutable policy snapshot: the route table and the caller directory.
#[derive(Debug, Default)]
pub struct Policy {
    pub(super) unmatched: Unmatched,
    pub(super) exact: Map<Box<str>, HostTable>,
    pub(super) wildcard: Map<Box<str>, HostTable>,
    pub(super) any: HostTable,
    pub(super) principals: Principals,
    /// Whether some route prefix holds an upper-case letter (see `case_folds_deeper`).
    pub(super) upper_case_prefixes: bool,
    pub(super) routes: Vec<Arc<Route>>,
    pub(super) errors: Vec<AnnotationError>,
    pub(super) conflicts: Vec<Conflict>,
    pub(super) unknown_principals: Vec<UnknownPrincipal>,
    pub(super) entity_count: usize,
}

/// Lower-cases `s` only when needed (most hosts and emails already are).
pub(super) fn lower(s: &str) -> std::borrow::Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(s.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

/// Looks `key` up ASCII-case-insensitively in a map whose keys are lower case,
/// lower-casing on the stack when the key is short (no allocation on the hot path).
pub(super) fn get_folded<'m, V>(map: &'m Map<Box<str>, V>, key: &str) -> Option<&'m V> {
    if !key.bytes().any(|b| b.is_ascii_uppercase()) {
        return map.get(key);
    }
    let mut buf = [0u8; 128];
    match buf.get_mut(..key.len()) {
        Some(b) => {
            b.copy_from_slice(key.as_bytes());
            b.make_ascii_lowercase();
            std::str::from_utf8(b).ok().and_then(|k| map.get(k))
        }
        None => map.get(key.to_ascii_lowercase().as_str()),
    }
}

impl Policy {
    /// A policy with no routes: every request is `no_route`.
    pub fn empty() -> Policy {
        Policy::default()
    }

    /// Whether a token or session group `g` can reach any Group of this policy (by an
    /// `idp-groups` name, or the Group's ref or name): browser sign-in keeps only these
    /// when a user's groups do not fit the session cookie.
    pub fn uses_group(&self, g: &str) -> bool {
        let p = &self.principals;
        p.by_idp_group.contains_key(g) || get_folded(&p.by_group_name, g).is_some()
    }

    /// Annotation errors found while building, in entity order.
    pub fn errors(&self) -> &[AnnotationError] {
        &self.errors
    }

    /// Conflicting claims, sorted by host, path and method.
    pub fn conflicts(&self) -> &[Conflict] {
        &self.conflicts
    }

    /// Principals named by routes that no caller can hold, sorted by entity and principal.
    pub fn unknown_principals(&self) -> &[UnknownPrincipal] {
        &self.unknown_principals
    }

    /// Number of entities the policy was built from.
    pub fn entity_count(&self) -> usize {
        self.entity_count
    }

    /// Number of route lines in effect (a line counts once whatever its hosts and methods).
    pub fn route_count(&self) -> usize {
        self.routes.len()
    }

    /// Whether some route (or held path) applies to named hosts only.
    pub fn has_host_routes(&self) -> bool {
        !self.exact.is_empty() || !self.wildcard.is_empty()
    }

    /// What to do with unmatched requests.
    pub fn unmatched(&self) -> Unmatched {
        self.unmatched
    }

    /// The host tables that apply to `host`, most specific first.
    pub(super) fn tables(&self, host: &str) -> [Option<&HostTable>; 3] {
        let exact = self.exact.get(host);
        let wild = match host.split_once('.') {
            Some((first, rest)) if !first.is_empty() => self.wildcard.get(rest),
            _ => None,
        };
        [exact, wild, Some(&self.any)]
    }

    /// The winning slot and the length of its prefix.
    pub(super) fn lookup(&self, method: &str, host: &str, path: &str) -> Option<(usize, &Slot)> {
        let tables = self.tables(host);
        for prefix in path::prefixes(path) {
            for table in tables.into_iter().flatten() {
                if prefix.len() > table.max_len {
                    continue;
                }
                if let Some(slot) = table.by_prefix.get(prefix).and_then(|p| p.find(method)) {
                    return Some((prefix.len(), slot));
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folded_lookup() {
        let mut m: Map<Box<str>, u8> = Map::default();
        m.insert("payments eu".into(), 1);
        let long = "x".repeat(200);
        m.insert(long.as_str().into(), 2);
        assert_eq!(get_folded(&m, "Payments EU"), Some(&1));
        assert_eq!(get_folded(&m, "payments eu"), Some(&1));
        assert_eq!(get_folded(&m, &long.to_ascii_uppercase()), Some(&2));
        assert_eq!(get_folded(&m, "Élan"), None);
    }

    #[test]
    fn snapshot_is_send_and_sync() {
        fn check<T: Send + Sync + 'static>() {}
        check::<Policy>();
        check::<super::super::Decision>();
    }
}
