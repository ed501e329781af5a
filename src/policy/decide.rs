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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub reason: Reason,
    /// Ref of the entity whose route matched, or whose broken annotations hold the path
    /// closed (`policy_error`); `None` on no route or a conflict.
    pub entity: Option<Arc<str>>,
    /// Ref of that entity's owner.
    pub owner: Option<Arc<str>>,
    /// The matched route line in canonical form, e.g. `GET,HEAD /api/orders orders:read`;
    /// for a conflict, `METHOD HOST PREFIX`.
    pub route: Option<Arc<str>>,
    /// The scope words the route required, space-separated as written
    /// (`orders:read audit|admin`); `None` for public/authenticated routes.
    pub required_scopes: Option<Arc<str>>,
}

impl Decision {
    /// A decision made before any route was looked at.
    pub fn bare(reason: Reason) -> Self {
        Decision {
            reason,
            entity: None,
            owner: None,
            route: None,
            required_scopes: None,
        }
    }

    fn from_route(reason: Reason, r: &Route) -> Self {
        Decision {
            reason,
            entity: Some(r.entity.clone()),
            owner: r.owner.clone(),
            route: Some(r.display.clone()),
            required_scopes: r.required_scopes.clone(),
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
        st.serialize_field("entity", &self.entity.as_deref())?;
        st.serialize_field("owner", &self.owner.as_deref())?;
        st.serialize_field("route", &self.route.as_deref())?;
        st.serialize_field("required_scopes", &self.required_scopes.as_deref())?;
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
                let mut d = Decision::bare(Reason::PolicyConflict);
                d.route = Some(clash.text.clone());
                return d;
            }
            Some(Slot::Broken(entity)) => {
                let mut d = Decision::bare(Reason::PolicyError);
                d.entity = Some(entity.clone());
                return d;
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
