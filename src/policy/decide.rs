//! The decision, after the route table (policy → **decision** → actions): one request
//! and the token outcome against a [`Policy`] snapshot, in the order the manual gives
//! (`docs/policy.md`, "The decision, in order"). Pure and synchronous; it allocates
//! nothing on the common path.

use std::sync::Arc;

use serde::ser::{Serialize, SerializeStruct, Serializer};

use super::table::{Route, Slot, get_folded, lower};
use super::{Policy, Requirement, Unmatched, path};
use crate::identity::Identity;
use crate::reason::Reason;

/// The parts of an HTTP request the policy reads, as HAProxy saw them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    pub method: &'a str,
    /// The Host header (or `:authority`), port allowed.
    pub host: &'a str,
    /// The path, with or without the query string.
    pub path: &'a str,
}

/// The outcome for one request: allow or deny, why, and which route decided.
///
/// What it names (entity, owner, route line, required scopes) is read through
/// [`Decision::entity`] and the like, from the policy snapshot's route itself: one
/// reference count per decision rather than one per string (four atomic writes on
/// counters every worker thread shares, on every request to a popular route).
#[derive(Debug, Clone)]
pub struct Decision {
    pub reason: Reason,
    names: Names,
}

/// Where a decision's names come from.
#[derive(Debug, Clone)]
enum Names {
    None,
    /// The matched route.
    Route(Arc<Route>),
    /// A `policy_conflict`: its `METHOD HOST PREFIX`.
    Conflict(Arc<str>),
    /// A `policy_error`: the entity whose broken annotations hold the path closed.
    Broken(Arc<str>),
    /// Given one by one ([`Decision::with_names`]: replays, tests).
    Given(Arc<Given>),
}

#[derive(Debug, Clone)]
struct Given {
    entity: Option<Arc<str>>,
    owner: Option<Arc<str>>,
    route: Option<Arc<str>>,
    required_scopes: Option<Arc<str>>,
}

impl PartialEq for Decision {
    fn eq(&self, other: &Self) -> bool {
        self.reason == other.reason
            && self.entity() == other.entity()
            && self.owner() == other.owner()
            && self.route() == other.route()
            && self.required_scopes() == other.required_scopes()
    }
}

impl Eq for Decision {}

impl Decision {
    /// A decision made before any route was looked at.
    pub fn bare(reason: Reason) -> Self {
        Decision {
            reason,
            names: Names::None,
        }
    }

    /// A decision with its names given: entity, owner, route line, required scopes.
    pub fn with_names(
        reason: Reason,
        entity: Option<&str>,
        owner: Option<&str>,
        route: Option<&str>,
        required_scopes: Option<&str>,
    ) -> Self {
        Decision {
            reason,
            names: Names::Given(Arc::new(Given {
                entity: entity.map(Into::into),
                owner: owner.map(Into::into),
                route: route.map(Into::into),
                required_scopes: required_scopes.map(Into::into),
            })),
        }
    }

    fn from_route(reason: Reason, r: &Arc<Route>) -> Self {
        Decision {
            reason,
            names: Names::Route(r.clone()),
        }
    }

    /// What the decision names, by identity: equal for two decisions that share their
    /// names (the same route, conflict, entity or given names), while both live. The
    /// decision log's writer formats a route's names once for a run of lines with it.
    pub fn names_id(&self) -> (u8, usize) {
        match &self.names {
            Names::None => (0, 0),
            Names::Route(r) => (1, Arc::as_ptr(r) as usize),
            Names::Conflict(t) => (2, Arc::as_ptr(t) as *const u8 as usize),
            Names::Broken(e) => (3, Arc::as_ptr(e) as *const u8 as usize),
            Names::Given(g) => (4, Arc::as_ptr(g) as usize),
        }
    }

    /// Ref of the entity whose route matched, or whose broken annotations hold the path
    /// closed (`policy_error`); `None` on no route or a conflict.
    pub fn entity(&self) -> Option<&str> {
        match &self.names {
            Names::Route(r) => Some(&r.entity),
            Names::Broken(e) => Some(e),
            Names::Given(g) => g.entity.as_deref(),
            Names::None | Names::Conflict(_) => None,
        }
    }

    /// Ref of that entity's owner.
    pub fn owner(&self) -> Option<&str> {
        match &self.names {
            Names::Route(r) => r.owner.as_deref(),
            Names::Given(g) => g.owner.as_deref(),
            _ => None,
        }
    }

    /// The matched route line in canonical form, e.g. `GET,HEAD /api/orders orders:read`;
    /// for a conflict, `METHOD HOST PREFIX`.
    pub fn route(&self) -> Option<&str> {
        match &self.names {
            Names::Route(r) => Some(&r.display),
            Names::Conflict(text) => Some(text),
            Names::Given(g) => g.route.as_deref(),
            Names::None | Names::Broken(_) => None,
        }
    }

    /// The scope words the route required, space-separated as written
    /// (`orders:read audit|admin`); `None` for public/authenticated routes.
    pub fn required_scopes(&self) -> Option<&str> {
        match &self.names {
            Names::Route(r) => r.required_scopes.as_deref(),
            Names::Given(g) => g.required_scopes.as_deref(),
            _ => None,
        }
    }

    /// Whether the request may pass.
    pub fn allow(&self) -> bool {
        self.reason.is_allow()
    }

    /// The HTTP status: 200, 401 or 403.
    pub fn status(&self) -> u16 {
        self.reason.status()
    }
}

impl Serialize for Decision {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Decision", 7)?;
        st.serialize_field("allow", &self.allow())?;
        st.serialize_field("status", &self.status())?;
        st.serialize_field("reason", self.reason.as_str())?;
        st.serialize_field("entity", &self.entity())?;
        st.serialize_field("owner", &self.owner())?;
        st.serialize_field("route", &self.route())?;
        st.serialize_field("required_scopes", &self.required_scopes())?;
        st.end()
    }
}

/// An RFC 9110 token with no lower-case letter.
fn method_ok(m: &str) -> bool {
    !m.is_empty()
        && m.bytes().all(|b| {
            (b.is_ascii_graphic() && !b"\"(),/:;<=>?@[\\]{}".contains(&b))
                && !b.is_ascii_lowercase()
        })
}

/// The host without port or trailing dot, lower case; `None` when malformed.
fn host_key(host: &str) -> Option<std::borrow::Cow<'_, str>> {
    let name = if let Some(rest) = host.strip_prefix('[') {
        let (inner, after) = rest.split_once(']')?;
        let port_ok = after.is_empty()
            || after
                .strip_prefix(':')
                .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()));
        if !port_ok
            || inner.is_empty()
            || !inner
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return None;
        }
        &host[..inner.len() + 2]
    } else {
        let name = match host.rsplit_once(':') {
            Some((n, p)) if p.bytes().all(|b| b.is_ascii_digit()) => n,
            Some(_) => return None,
            None => host,
        };
        let name = name.strip_suffix('.').unwrap_or(name);
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        {
            return None;
        }
        name
    };
    Some(lower(name))
}

impl Policy {
    /// Decides one request. Pure: same snapshot, request and token outcome give the same
    /// decision. `token` is the verified caller, or the reason verification failed.
    /// See the module doc for the order of checks.
    pub fn decide(&self, req: &Request<'_>, token: Result<&Identity, Reason>) -> Decision {
        // Not origin-form (`*`, an absolute URI, empty): the backend may read another
        // target than the one decided on.
        if !req.path.starts_with('/') {
            return Decision::bare(Reason::BadRequest);
        }
        let Ok(path) = path::normalize(req.path) else {
            return Decision::bare(Reason::BadPath);
        };
        if !method_ok(req.method) {
            return Decision::bare(Reason::BadRequest);
        }
        let Some(host) = host_key(req.host) else {
            return Decision::bare(Reason::BadRequest);
        };
        // No Host (NULL or empty): a backend may take its virtual host from elsewhere
        // (an absolute target), so host-scoped routes could be bypassed through an
        // any-host one. Only a policy with no host-scoped route decides such requests.
        if host.is_empty() && self.has_host_routes() {
            return Decision::bare(Reason::BadRequest);
        }
        let found = self.lookup(req.method, &host, &path);
        if self.case_folds_deeper(req.method, &host, &path, found)
            || self.suffix_reaches_deeper(req.method, &host, &path, found)
        {
            return Decision::bare(Reason::BadPath);
        }
        let route = match found.map(|(_, slot)| slot) {
            None if self.unmatched == Unmatched::Allow => {
                return Decision::bare(Reason::UnmatchedAllowed);
            }
            None => return Decision::bare(Reason::NoRoute),
            Some(Slot::Conflict(clash)) => {
                return Decision {
                    reason: Reason::PolicyConflict,
                    names: Names::Conflict(clash.text.clone()),
                };
            }
            Some(Slot::Broken(entity)) => {
                return Decision {
                    reason: Reason::PolicyError,
                    names: Names::Broken(entity.clone()),
                };
            }
            Some(Slot::Route(r)) => r,
        };
        if route.requirement == Requirement::Public {
            return Decision::from_route(Reason::Public, route);
        }
        let id = match token {
            Ok(id) => id,
            Err(reason) => return Decision::from_route(reason, route),
        };
        if let Requirement::Scopes(all) = &route.requirement {
            let met = all.iter().all(|any| any.iter().any(|s| id.has_scope(s)));
            if !met {
                return Decision::from_route(Reason::InsufficientScope, route);
            }
        }
        if let Some(allowed) = &route.allowed
            && !self.is_member(id, allowed)
        {
            return Decision::from_route(Reason::NotMember, route);
        }
        Decision::from_route(Reason::Ok, route)
    }

    /// Whether the caller holds one of `allowed` (sorted principal ids).
    fn is_member(&self, id: &Identity, allowed: &[u32]) -> bool {
        let hit = |ids: Option<&Arc<[u32]>>| {
            ids.is_some_and(|ids| ids.iter().any(|i| allowed.binary_search(i).is_ok()))
        };
        let p = &self.principals;
        // A Backstage-issued token names its User: found by that ref alone, so no
        // other issuer's subject, email or group can stand in for it, and it for them.
        if let Some(user) = &id.backstage_user {
            return hit(p.by_user_ref.get(user.as_str()));
        }
        id.groups
            .iter()
            .any(|g| hit(p.by_idp_group.get(g.as_str())) || hit(get_folded(&p.by_group_name, g)))
            || id.sub.as_deref().is_some_and(|s| hit(p.by_subject.get(s)))
            || id
                .email
                .as_deref()
                .is_some_and(|e| hit(get_folded(&p.by_email, e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_keys() {
        assert_eq!(
            host_key("API.Example.com:8443").as_deref(),
            Some("api.example.com")
        );
        assert_eq!(
            host_key("api.example.com.").as_deref(),
            Some("api.example.com")
        );
        assert_eq!(host_key("[::1]:80").as_deref(), Some("[::1]"));
        assert_eq!(host_key("").as_deref(), Some(""));
        assert_eq!(host_key("a b"), None);
        assert_eq!(host_key("a:b"), None);
        assert_eq!(host_key("[zz]"), None);
    }

    #[test]
    fn methods() {
        assert!(method_ok("GET"));
        assert!(method_ok("M-SEARCH"));
        assert!(!method_ok("get"));
        assert!(!method_ok(""));
        assert!(!method_ok("GE T"));
    }
}
