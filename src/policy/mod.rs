//! Policy, between token verification and the actions sent back to HAProxy: the route
//! table built from Backstage catalog entities, and the pure decision over it
//! (bytes in → frame → message → token → **policy → decision** → actions → frame → bytes out).
//!
//! [`Policy::build`] turns `&[Entity]` into an immutable snapshot (the agent holds it as
//! `Arc<Policy>` and swaps it whole). [`Policy::decide`] is a pure sync function of the
//! snapshot, the [`Request`] and the token outcome; it allocates nothing on the common path.
//!
//! # The annotation language
//!
//! On any `Component`, `API`, `Resource` or `System` entity:
//!
//! ```yaml
//! metadata:
//!   annotations:
//!     stagedoor.io/hosts: "api.example.com, *.orders.internal"   # optional; default: any host
//!     stagedoor.io/routes: |
//!       GET,HEAD  /api/orders          orders:read
//!       POST      /api/orders          orders:write
//!       *         /api/orders/admin    orders:admin @sre
//!       GET       /api/orders/health   public
//!       GET       /api/orders/me       authenticated
//!       # a comment; blank lines are skipped too
//!     stagedoor.io/allowed-groups: "group:default/payments, sre"  # optional
//!     stagedoor.io/allow-owner: "true"                            # optional
//! ```
//!
//! ## `stagedoor.io/routes`
//!
//! One route per line: `METHODS PATH REQUIREMENT...`, fields separated by spaces or tabs.
//! `#` starts a comment (at the start of a line or after a blank).
//!
//! - **METHODS**: `*` (any method) or a comma list (`GET,HEAD`, `GET, HEAD`). Methods are
//!   case-sensitive (RFC 9110) and must be written in upper case: `get` is an error.
//!   A `HEAD` request with no line of its own at a prefix is decided by that prefix's
//!   `GET` line (before a `*` line): HEAD is GET without a body, and most backends
//!   answer it with the GET handler, so it must not fall through to a shorter or
//!   catch-all route the GET line overrides. CORS preflights carry no token (write
//!   `OPTIONS /api public` if browsers call the service).
//! - **PATH**: a prefix matched on segment boundaries: `/api/orders` matches
//!   `/api/orders`, `/api/orders/` and `/api/orders/7`, never `/api/ordersx`. `/` matches
//!   every path. A trailing `/` is ignored (`/api/orders/` = `/api/orders`). The path is
//!   normalised like a request path (see below); `*`, `?`, `;`, `#`, `.`/`..` segments and
//!   encoded `/` are errors (`/api/*` is refused: routes already are prefixes).
//! - **REQUIREMENT**, one or more words:
//!   - `public`: no token needed. Must stand alone on its line.
//!   - `authenticated`: any valid token. Cannot be combined with scopes.
//!   - scopes: every scope word is required; `a|b` means either `a` or `b`. So
//!     `orders:read audit|admin` needs `orders:read` and one of `audit`, `admin`.
//!     A scope is printable ASCII without `"`, `\` or `|` (RFC 6749), not starting with `@`.
//!     The words `public` and `authenticated` cannot be used as scope names.
//!   - `@group` words (with `authenticated` or scopes): the caller must also be a member of
//!     one of the named groups. They **replace** the entity's allowed-groups *and*
//!     allow-owner for that line. A name is `[group:|user:][namespace/]name`; the kind
//!     defaults to `group`, the namespace to the entity's own (as in Backstage), so on a
//!     `default`-namespace entity `@sre` is `group:default/sre`. A `user:` ref names one person.
//!
//! Two lines of one entity may not declare the same method (or both `*`) on the same path.
//!
//! ## `stagedoor.io/hosts`
//!
//! A comma list of host names (case-insensitive, a trailing `.` ignored) or `*.suffix`
//! patterns; `*.orders.internal` matches `a.orders.internal`, not `orders.internal` nor
//! `a.b.orders.internal`. No ports: the request's port is always ignored. Without this
//! annotation the entity's routes apply to any host.
//!
//! ## `stagedoor.io/allowed-groups` and `stagedoor.io/allow-owner`
//!
//! `allowed-groups` is a comma list of group (or user) refs, as for `@` words but without
//! the `@`. `allow-owner: "true"` adds the entity's owner (the `ownedBy` relation, else
//! `spec.owner`) to that list. When the list is not empty, every non-public route of the
//! entity also requires the caller to be a member of one of its groups (or to be the
//! owning user), unless the line names its own `@` groups. Ownership is opt-in because
//! Backstage says `ownedBy` is not meant for runtime authorisation. `allow-owner: "true"`
//! on an entity with no owner is an error.
//!
//! ## `stagedoor.io/delegate`
//!
//! One `PATH DELEGATE...` line per prefix (blank- or comma-separated, `#` comments):
//! other entities' routes under `PATH` take effect only when this entity names them
//! here. A delegate is `*` (anyone) or the ref of a Component, API, Resource or System
//! (kind defaulting to `component`, namespace to the entity's); never a Group or
//! User, since owners are self-declared. See [`ownership`] for the rule.
//!
//! ## Who the caller is: `stagedoor.io/idp-groups` and `stagedoor.io/subject`
//!
//! - On a `Group`: `stagedoor.io/idp-groups: "payments-engineers, 00g1abcd"` lists the
//!   identity-provider group names (from the token's groups claim) that map to it. They
//!   compare case-sensitively and may hold spaces.
//!   A Group that declares `idp-groups` is reached only through them.
//! - A token group also maps to a Group entity **that declares no `idp-groups`** whose ref
//!   (`group:ns/name`) or, for the `default` namespace, whose name it equals (ASCII
//!   case-insensitively). Only groups that exist in the catalog are mapped this way.
//! - On a `User`: `stagedoor.io/subject` names the token `sub` of that user. A user also
//!   matches when the token's `email` equals its `spec.profile.email` (case-insensitively;
//!   the verifier keeps `email` only with `email_verified: true` or a trusting issuer).
//!   A subject or email claimed by two users is reported and ignored for both.
//! - The caller's principals are: the matched users, their groups (`memberOf` relations,
//!   else `spec.memberOf`), the groups mapped from the token's groups, and every ancestor
//!   of those groups through `childOf` (else `spec.parent`), parent cycles tolerated,
//!   up to 32 levels (deeper ancestors are ignored: less access, never more).
//!
//! ## Errors
//!
//! Annotation values are parsed with nom. Any error names the entity ref, the annotation,
//! and the line and column in its value, e.g.
//! `component:default/orders: stagedoor.io/routes:2:6: method `get` must be upper case ...`.
//! An error in any `stagedoor.io/*` annotation of a routed entity (including an unknown
//! `stagedoor.io/` key, which may be a misspelt restriction) removes **all** that entity's
//! routes, and holds its paths closed: each path its routes annotation names (read
//! leniently, [`lang::claimed_paths`]) gets a `*` slot denying with `policy_error`, on
//! its hosts or, if those are unreadable, on every host, wherever no valid route already
//! holds that slot. Its requests thus never fall through to a shorter route (a public
//! `/` of another entity, say). An error on a Group or User drops only that mapping.
//! Nothing fails the whole catalog.
//!
//! A principal a route names that no caller can hold (not a Group or User of the
//! catalog, nor a parent or `memberOf` group of one) is a warning, listed in
//! [`Policy::unknown_principals`]: the route stays, and the name grants nobody anything.
//!
//! # Matching
//!
//! A route matches a request when its host pattern (or any host), its methods and its path
//! prefix all match. Among matching routes the longest path prefix wins; on a tie an
//! exact host beats a `*.` pattern, which beats an any-host route; then an explicit method
//! beats `*`. So with `POST /api/orders` and `GET /api public`, a `GET /api/orders` is
//! public: write a `*` line to cover a prefix for all methods.
//!
//! Two entities claiming the same host pattern, method and prefix are a conflict: that
//! slot denies with `policy_conflict` (for every entity involved, even a `public` claim)
//! and is listed in [`Policy::conflicts`]. Claims that precedence orders are not
//! conflicts: an exact host over `*.` over any host, an explicit method over `*`.
//! The same entity delivered twice conflicts with itself (reported, fail closed).
//!
//! A route under (or on) the path of another entity's route, on a host both apply to,
//! is a conflict too unless that entity delegates the prefix to it: it is held closed in the
//! more specific host table of the two, and listed with the enclosing routes in
//! [`Conflict::under`] ([`ownership`]).
//!
//! # Request normalisation
//!
//! - **Path** ([`path::normalize`]): the query string (`?...`) is ignored; escapes of
//!   characters a path may hold raw (unreserved, sub-delims, `:`, `@`) are decoded and
//!   `//` collapses to `/`. Refused as `bad_path`: `.`/`..` segments (raw
//!   or encoded), encoded `/` or `\`, `\`, control characters, broken escapes, escapes
//!   forming invalid or overlong UTF-8, double encoding (`%25XX`, also with escaped
//!   digits), `;` path parameters, raw or `%3B` (servers disagree on them), `#`, raw
//!   non-ASCII and other characters not allowed in a path, and escaped characters
//!   whose Unicode case mapping is ASCII (Kelvin sign, dotless i, ...). Paths compare
//!   case-sensitively (RFC 3986), but since some backends (IIS, ASP.NET, ...) fold
//!   case, a path that would reach a longer route prefix if letter case were ignored
//!   is also `bad_path`: with routes
//!   `/api/orders` and `/api/orders/admin`, `/api/orders/ADMIN` and `/API/orders/admin`
//!   are refused rather than read as something the backend may serve as `/admin`
//!   (likewise `/docs/private` when a route says `/Docs/Private`). Upper case that folds
//!   to no longer prefix (`/api/orders/A1B2`) is matched as usual.
//!   Paths that a suffix-reading backend would route deeper are refused too (see
//!   [`guards`]: `/api/orders/admin.json`, `/api/orders/admin.`, `/api/orders/admin%20`
//!   when `/api/orders/admin` asks more than `/api/orders`). A target that does not
//!   start with `/` (`*`, an absolute URI) is `bad_request`.
//! - **Host**: case-insensitive, port and trailing `.` ignored. A host that is not a DNS
//!   name, IPv4 or bracketed IPv6 literal is `bad_request`. An empty host (no Host
//!   header) is `bad_request` when the policy has any host-scoped route, since a
//!   backend may take its virtual host from the absolute target instead; with none, it
//!   matches the any-host routes.
//! - **Method**: compared case-sensitively. A method that is not an RFC 9110 token, or
//!   that holds a lower-case letter (which some backends fold to upper case, reading the
//!   request differently from the policy), is `bad_request`.
//!
//! # The decision, in order
//!
//! 1. A target that is not origin-form → `bad_request`; malformed path → `bad_path`;
//!    malformed method or host, or no host beside host-scoped routes → `bad_request`
//!    (403); a path that reaches a longer prefix when case is folded, or a longer one
//!    with other requirements when a suffix is cut → `bad_path`.
//! 2. No route → `no_route` (403), or `unmatched_allowed` (200) with
//!    `[policy] unmatched = "allow"`. The token is not consulted.
//! 3. A conflicting slot → `policy_conflict` (403).
//! 4. A `public` route → `public` (200), whatever the token (missing, expired, ...).
//! 5. A token failure → that token reason (401).
//! 6. A missing scope → `insufficient_scope` (403).
//! 7. Not a member of the route's groups → `not_member` (403).
//! 8. Otherwise `ok` (200).

mod build;
mod directory;
mod guards;
pub mod lang;
mod ownership;
pub mod path;
mod render;

use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;
use serde::ser::{Serialize, SerializeStruct, Serializer};

use crate::identity::Identity;
use crate::reason::Reason;

pub use lang::{HostPattern, LangError, Requirement};
pub use path::PathError;

/// What to do with a request no route matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unmatched {
    #[default]
    Deny,
    Allow,
}

impl Unmatched {
    pub fn as_str(self) -> &'static str {
        match self {
            Unmatched::Deny => "deny",
            Unmatched::Allow => "allow",
        }
    }
}

/// Whether decisions are enforced or only logged (applied by the agent, carried here).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Enforce,
    Shadow,
}

/// The `[policy]` section of the configuration file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Requests that match no route: `deny` (default, reason `no_route`) or `allow`
    /// (reason `unmatched_allowed`).
    #[serde(default)]
    pub unmatched: Unmatched,
    /// `enforce` (default) or `shadow` (decide and log, but let every request through).
    #[serde(default)]
    pub mode: Mode,
}

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
    fn bare(reason: Reason) -> Self {
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

/// An annotation that could not be used. Display is one line:
/// `ENTITY: ANNOTATION:LINE:COLUMN: MESSAGE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnotationError {
    pub entity: String,
    pub annotation: String,
    pub line: u32,
    pub column: u32,
    pub error: LangError,
}

impl std::fmt::Display for AnnotationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {}:{}:{}: {}",
            lang::shown(&self.entity),
            lang::shown(&self.annotation),
            self.line,
            self.column,
            self.error
        )
    }
}

/// A principal that an entity's routes name (an `@` word, `allowed-groups`, or the
/// owner under `allow-owner`) but that no caller can ever hold: it is not a Group or
/// User in the catalog, nor a parent or `memberOf` group of one. Usually a typo; the
/// routes stay as written (fail closed: the name grants nobody anything).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownPrincipal {
    pub entity: String,
    pub principal: String,
}

impl std::fmt::Display for UnknownPrincipal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "unknown principal: {} names {}, which is no Group or User in the catalog (nobody can hold it)",
            lang::escaped(&self.entity),
            lang::escaped(&self.principal)
        )
    }
}

/// A slot that denies with `policy_conflict`: two or more entities claiming the same
/// host pattern, method and path prefix, or a route under (or on) the path of another
/// owner's route that does not delegate it (see [`ownership`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The host pattern, `None` for any host.
    pub host: Option<String>,
    /// The method, `*` for any.
    pub method: String,
    pub path: String,
    /// Entity refs, sorted.
    pub entities: Vec<String>,
    /// The enclosing routes of other owners that do not delegate this path, e.g.
    /// `` `* /api/orders/admin orders:admin @sre` of component:default/orders (owner
    /// group:default/payments)``; empty for a plain double claim. Sorted.
    pub under: Vec<String>,
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "conflict: {} {} {} claimed by {}",
            lang::escaped(&self.method),
            lang::escaped(self.host.as_deref().unwrap_or("*")),
            lang::escaped(&self.path),
            lang::escaped(&self.entities.join(", "))
        )?;
        if !self.under.is_empty() {
            write!(
                f,
                " under {}, of another entity, which does not delegate it (stagedoor.io/delegate)",
                lang::escaped(&self.under.join("; "))
            )?;
        }
        Ok(())
    }
}

/// One route line of one entity, with everything the decision needs precomputed.
#[derive(Debug)]
struct Route {
    entity: Arc<str>,
    owner: Option<Arc<str>>,
    display: Arc<str>,
    hosts: Arc<[HostPattern]>,
    methods: Option<Vec<Box<str>>>,
    path: Box<str>,
    requirement: Requirement,
    required_scopes: Option<Arc<str>>,
    /// Sorted principal ids, one of which the caller must hold; `None`: no group rule.
    allowed: Option<Box<[u32]>>,
    /// The refs behind `allowed`, for display.
    allowed_refs: Arc<[String]>,
}

#[derive(Debug, Clone)]
enum Slot {
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
struct Clash {
    /// `METHOD HOST PREFIX`, the decision's `route`.
    text: Arc<str>,
    /// The entities claiming the slot.
    entities: Vec<Arc<str>>,
    /// The enclosing routes of other owners that do not delegate the slot's path.
    under: Vec<Arc<str>>,
}

/// The routes declared for one prefix in one host table.
#[derive(Debug, Default)]
struct PrefixSlot {
    methods: Vec<(Box<str>, Slot)>,
    any: Option<Slot>,
}

impl PrefixSlot {
    /// The slot for `method`: its own line, else (for HEAD) the GET line, else `*`.
    fn find(&self, method: &str) -> Option<&Slot> {
        let named = |m: &str| self.methods.iter().find(|(x, _)| &**x == m).map(|(_, s)| s);
        named(method)
            .or_else(|| (method == "HEAD").then(|| named("GET")).flatten())
            .or(self.any.as_ref())
    }
}

#[derive(Debug, Default)]
struct HostTable {
    by_prefix: Map<Box<str>, PrefixSlot>,
    /// The longest prefix held: longer request prefixes need no lookup.
    max_len: usize,
    /// Every prefix held, lower-cased (see `case_folds_deeper`).
    folded: Map<Box<str>, ()>,
}

/// The hash map of the snapshot (lookups on the hot path). Keys come from the catalog
/// (route paths, hosts, group names) and are looked up with request data, so the
/// hasher is seeded at random per process (foldhash): nobody can precompute paths
/// that share a bucket, as they could with an unkeyed hash such as FxHash.
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Who a caller may be: token facts → expanded, sorted principal ids
/// (the user and every group it belongs to, ancestors included).
#[derive(Debug, Default)]
struct Principals {
    by_idp_group: Map<Box<str>, Arc<[u32]>>,
    /// Lower-case `group:ns/name`, and `name` for the default namespace.
    by_group_name: Map<Box<str>, Arc<[u32]>>,
    by_subject: Map<Box<str>, Arc<[u32]>>,
    /// Lower-case email.
    by_email: Map<Box<str>, Arc<[u32]>>,
}

/// An immutable policy snapshot: the route table and the caller directory.
#[derive(Debug, Default)]
pub struct Policy {
    unmatched: Unmatched,
    exact: Map<Box<str>, HostTable>,
    wildcard: Map<Box<str>, HostTable>,
    any: HostTable,
    principals: Principals,
    /// Whether some route prefix holds an upper-case letter (see `case_folds_deeper`).
    upper_case_prefixes: bool,
    routes: Vec<Arc<Route>>,
    errors: Vec<AnnotationError>,
    conflicts: Vec<Conflict>,
    unknown_principals: Vec<UnknownPrincipal>,
    entity_count: usize,
}

/// Lower-cases `s` only when needed (most hosts and emails already are).
fn lower(s: &str) -> std::borrow::Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(s.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

/// Looks `key` up ASCII-case-insensitively in a map whose keys are lower case,
/// lower-casing on the stack when the key is short (no allocation on the hot path).
fn get_folded<'m, V>(map: &'m Map<Box<str>, V>, key: &str) -> Option<&'m V> {
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
    /// A policy with no routes: every request is `no_route`.
    pub fn empty() -> Policy {
        Policy::default()
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
    fn tables(&self, host: &str) -> [Option<&HostTable>; 3] {
        let exact = self.exact.get(host);
        let wild = match host.split_once('.') {
            Some((first, rest)) if !first.is_empty() => self.wildcard.get(rest),
            _ => None,
        };
        [exact, wild, Some(&self.any)]
    }

    /// The winning slot and the length of its prefix.
    fn lookup(&self, method: &str, host: &str, path: &str) -> Option<(usize, &Slot)> {
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
        check::<Decision>();
    }

    #[test]
    fn methods() {
        assert!(method_ok("GET"));
        assert!(method_ok("M-SEARCH"));
        assert!(!method_ok("get"));
        assert!(!method_ok(""));
        assert!(!method_ok("GE T"));
    }

    #[test]
    fn config_defaults_and_unknown_fields() {
        let c: PolicyConfig = toml::from_str("").unwrap();
        assert_eq!(c, PolicyConfig::default());
        let c: PolicyConfig = toml::from_str("unmatched = \"allow\"\nmode = \"shadow\"").unwrap();
        assert_eq!((c.unmatched, c.mode), (Unmatched::Allow, Mode::Shadow));
        assert!(toml::from_str::<PolicyConfig>("unmatch = \"allow\"").is_err());
        assert!(toml::from_str::<PolicyConfig>("unmatched = \"maybe\"").is_err());
    }
}
