//! Policy building, between the catalog sources and the decision: entities → caller
//! directory (users, groups, ancestors, IdP mappings) and route table. Never fails:
//! bad annotations become [`AnnotationError`]s, overlapping claims [`Conflict`]s.

use std::sync::Arc;

use serde_json::Value;

use super::directory;
use super::lang::{self, Delegation, HostPattern, LangError, Located, Requirement, RouteSpec};
use super::ownership::{self, Block, Describe, PathClaim, owner_note};
use super::{
    AnnotationError, Clash, Conflict, HostTable, Map, Policy, PrefixSlot, Route, Slot,
    UnknownPrincipal, Unmatched, lower,
};
use crate::catalog::{Entity, EntityRef};

const PREFIX: &str = "stagedoor.io/";
const HOSTS: &str = "stagedoor.io/hosts";
const ROUTES: &str = "stagedoor.io/routes";
const ALLOWED_GROUPS: &str = "stagedoor.io/allowed-groups";
const ALLOW_OWNER: &str = "stagedoor.io/allow-owner";
const DELEGATE: &str = "stagedoor.io/delegate";
pub(super) const IDP_GROUPS: &str = "stagedoor.io/idp-groups";
pub(super) const SUBJECT: &str = "stagedoor.io/subject";

const ROUTE_KINDS: [&str; 4] = ["component", "api", "resource", "system"];

/// Interns principal refs (users and groups) as small ids.
#[derive(Default)]
struct Interner {
    ids: Map<String, u32>,
}

impl Interner {
    fn id(&mut self, r: &str) -> u32 {
        if let Some(&i) = self.ids.get(r) {
            return i;
        }
        let i = u32::try_from(self.ids.len()).unwrap_or(u32::MAX);
        self.ids.insert(r.to_owned(), i);
        i
    }
}

pub(super) fn kind_is(e: &Entity, kind: &str) -> bool {
    e.kind.eq_ignore_ascii_case(kind)
}

/// Refs from relations of `relation`, else from the spec field (string or list of strings).
pub(super) fn refs(
    e: &Entity,
    relation: &str,
    spec_field: &str,
    default_kind: &str,
) -> Vec<String> {
    let ns = &e.metadata.namespace;
    // A ref outside the rule names no entity: ignored (less membership, never more).
    let parse = |r: &str| {
        EntityRef::parse(r, default_kind, ns)
            .ok()
            .map(EntityRef::into_string)
    };
    let from_rel: Vec<String> = e.related(relation).filter_map(parse).collect();
    if !from_rel.is_empty() {
        return from_rel;
    }
    match e.spec.get(spec_field) {
        Some(Value::String(s)) => parse(s).into_iter().collect(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .filter_map(parse)
            .collect(),
        _ => Vec::new(),
    }
}

fn owner_of(e: &Entity) -> Option<String> {
    refs(e, "ownedBy", "owner", "group").into_iter().next()
}

pub(super) fn annotation_error(entity: &str, annotation: &str, l: Located) -> AnnotationError {
    AnnotationError {
        entity: entity.to_owned(),
        annotation: annotation.to_owned(),
        line: l.line,
        column: l.column,
        error: l.error,
    }
}

pub(super) fn whole(entity: &str, annotation: &str, error: LangError) -> AnnotationError {
    annotation_error(
        entity,
        annotation,
        Located {
            line: 1,
            column: 1,
            error,
        },
    )
}

/// Sorted, deduplicated.
fn sorted(mut v: Vec<u32>) -> Box<[u32]> {
    v.sort_unstable();
    v.dedup();
    v.into_boxed_slice()
}

/// The parsed `stagedoor.io/*` annotations of a routed entity.
struct Declared {
    hosts: Option<Vec<HostPattern>>,
    routes: Vec<RouteSpec>,
    /// Entity-level allowed principals (allowed-groups, plus the owner when opted in).
    allowed: Vec<String>,
    /// Prefixes other owners may route under this entity's routes.
    delegations: Vec<Delegation>,
}

/// Reads a routed entity's annotations; `None` when any of them is in error.
fn declared(
    e: &Entity,
    r: &str,
    owner: Option<&str>,
    errors: &mut Vec<AnnotationError>,
) -> Option<Declared> {
    let before = errors.len();
    let ns = &e.metadata.namespace;
    let mut d = Declared {
        hosts: None,
        routes: Vec::new(),
        allowed: Vec::new(),
        delegations: Vec::new(),
    };
    for (key, value) in &e.metadata.annotations {
        if !key.starts_with(PREFIX) {
            continue;
        }
        let result = match key.as_str() {
            HOSTS => lang::parse_hosts(value).map(|h| d.hosts = Some(h)),
            ROUTES => lang::parse_routes(value, ns).map(|v| d.routes = v),
            ALLOWED_GROUPS => lang::parse_principals(value, ns).map(|g| d.allowed.extend(g)),
            DELEGATE => lang::parse_delegations(value, ns).map(|v| d.delegations = v),
            ALLOW_OWNER => match lang::parse_bool(value) {
                Ok(true) => match owner {
                    Some(o) => {
                        d.allowed.push(o.to_owned());
                        Ok(())
                    }
                    None => {
                        errors.push(whole(r, key, LangError::NoOwner));
                        Ok(())
                    }
                },
                Ok(false) => Ok(()),
                Err(l) => Err(l),
            },
            IDP_GROUPS | SUBJECT => {
                errors.push(whole(r, key, LangError::WrongKind(e.kind.clone())));
                Ok(())
            }
            _ => {
                errors.push(whole(r, key, LangError::UnknownAnnotation));
                Ok(())
            }
        };
        if let Err(l) = result {
            errors.push(annotation_error(r, key, l));
        }
    }
    (errors.len() == before).then_some(d)
}

/// Reports `stagedoor.io/*` annotations that a non-routed entity does not read.
fn check_other_kind(e: &Entity, errors: &mut Vec<AnnotationError>) {
    let reads: &[&str] = if kind_is(e, "group") {
        &[IDP_GROUPS]
    } else if kind_is(e, "user") {
        &[SUBJECT]
    } else {
        &[]
    };
    for key in e.metadata.annotations.keys() {
        if !key.starts_with(PREFIX) || reads.contains(&key.as_str()) {
            continue;
        }
        let err = if [
            HOSTS,
            ROUTES,
            ALLOWED_GROUPS,
            ALLOW_OWNER,
            DELEGATE,
            IDP_GROUPS,
            SUBJECT,
        ]
        .contains(&key.as_str())
        {
            LangError::WrongKind(e.kind.clone())
        } else {
            LangError::UnknownAnnotation
        };
        errors.push(whole(&e.entity_ref(), key, err));
    }
}

/// Scope words as written, e.g. `orders:read audit|admin`.
fn scopes_text(req: &Requirement) -> Option<Arc<str>> {
    match req {
        Requirement::Scopes(all) => Some(
            all.iter()
                .map(|any| any.iter().map(|s| &**s).collect::<Vec<_>>().join("|"))
                .collect::<Vec<_>>()
                .join(" ")
                .into(),
        ),
        _ => None,
    }
}

/// Adds `route` to an occupied slot: a claim by a second entity makes it a conflict.
fn claim(slot: &mut Slot, route: &Arc<Route>, conflict_text: impl FnOnce() -> String) {
    match slot {
        Slot::Broken(_) => *slot = Slot::Route(route.clone()),
        Slot::Route(prev) => {
            *slot = Slot::Conflict(Box::new(Clash {
                text: conflict_text().into(),
                entities: vec![prev.entity.clone(), route.entity.clone()],
                under: Vec::new(),
            }));
        }
        Slot::Conflict(c) => c.entities.push(route.entity.clone()),
    }
}

/// Holds a slot closed for `entity`, under enclosing routes that do not delegate:
/// turns it into a conflict, or adds to the one it is (in place, deduplicated, so
/// many claimants on one path cost linear time, not a copy each).
fn clash(
    slot: &mut Option<Slot>,
    text: impl FnOnce() -> String,
    entity: &Arc<str>,
    under: &[Arc<str>],
) {
    let c = match slot {
        Some(Slot::Conflict(c)) => c,
        _ => {
            let entities = match slot.take() {
                Some(Slot::Route(prev)) => vec![prev.entity.clone()],
                _ => Vec::new(),
            };
            let fresh = Slot::Conflict(Box::new(Clash {
                text: text().into(),
                entities,
                under: Vec::new(),
            }));
            match slot.insert(fresh) {
                Slot::Conflict(c) => c,
                _ => return,
            }
        }
    };
    if c.entities.last() != Some(entity) {
        c.entities.push(entity.clone());
    }
    for u in under {
        if c.under.len() < MAX_UNDER && !c.under.contains(u) {
            c.under.push(u.clone());
        }
    }
}

/// The slots of `path` in `table`, created (and the table's indexes updated) if new.
/// (Always `Some`; an `Option` rather than a panic path.)
fn prefix_slot<'t>(table: &'t mut HostTable, path: &str) -> Option<&'t mut PrefixSlot> {
    table.max_len = table.max_len.max(path.len());
    let folded = lower(path);
    if !table.folded.contains_key(&*folded) {
        table.folded.insert(folded.into(), ());
    }
    if !table.by_prefix.contains_key(path) {
        table.by_prefix.insert(path.into(), PrefixSlot::default());
    }
    table.by_prefix.get_mut(path)
}

/// `METHOD HOST PREFIX`, how a conflict slot is named.
fn slot_text(method: &str, host: Option<&HostPattern>, path: &str) -> String {
    match host {
        Some(h) => format!("{method} {h} {path}"),
        None => format!("{method} * {path}"),
    }
}

fn insert(table: &mut HostTable, host: Option<&HostPattern>, route: &Arc<Route>) {
    let path = &*route.path;
    let Some(ps) = prefix_slot(table, path) else {
        return;
    };
    let text = |m: &str| slot_text(m, host, path);
    match &route.methods {
        None => match &mut ps.any {
            Some(s) => claim(s, route, || text("*")),
            None => ps.any = Some(Slot::Route(route.clone())),
        },
        Some(ms) => {
            for m in ms {
                match ps.methods.iter_mut().find(|(x, _)| x == m) {
                    Some((_, s)) => claim(s, route, || text(m)),
                    None => ps.methods.push((m.clone(), Slot::Route(route.clone()))),
                }
            }
        }
    }
}

/// Holds `route`'s slots in `table` closed as conflicts under `under` (routes of other
/// owners that do not delegate its path). With `only_open`, only the methods the
/// table leaves undecided at that path are held (the route's own table is another,
/// less specific one: where this table decides, the route never would).
fn insert_held(
    table: &mut HostTable,
    host: Option<&HostPattern>,
    route: &Route,
    under: &[Arc<str>],
    only_open: bool,
) {
    let path = &*route.path;
    let methods: Vec<Option<&str>> = match &route.methods {
        None => vec![None],
        Some(ms) => ms.iter().map(|m| Some(&**m)).collect(),
    };
    let open = |ps: Option<&PrefixSlot>, m: Option<&str>| match (ps, m) {
        (None, _) => true,
        (Some(ps), None) => ps.any.is_none() || matches!(ps.any, Some(Slot::Conflict(_))),
        (Some(ps), Some(m)) => matches!(ps.find(m), None | Some(Slot::Conflict(_))),
    };
    let methods: Vec<Option<&str>> = methods
        .into_iter()
        .filter(|m| !only_open || open(table.by_prefix.get(path), *m))
        .collect();
    if methods.is_empty() {
        return;
    }
    let Some(ps) = prefix_slot(table, path) else {
        return;
    };
    for m in methods {
        let text = || slot_text(m.unwrap_or("*"), host, path);
        match m {
            None => clash(&mut ps.any, text, &route.entity, under),
            Some(m) => {
                let i = match ps.methods.iter().position(|(x, _)| &**x == m) {
                    Some(i) => i,
                    None => {
                        ps.methods
                            .push((m.into(), Slot::Broken(route.entity.clone())));
                        ps.methods.len() - 1
                    }
                };
                let mut slot = Some(std::mem::replace(
                    &mut ps.methods[i].1,
                    Slot::Broken(route.entity.clone()),
                ));
                clash(&mut slot, text, &route.entity, under);
                if let Some(s) = slot {
                    ps.methods[i].1 = s;
                }
            }
        }
    }
}

/// The route table of one host pattern, created if new.
fn host_table<'p>(policy: &'p mut Policy, h: &HostPattern) -> &'p mut HostTable {
    match h {
        HostPattern::Exact(x) => policy.exact.entry(x.as_str().into()),
        HostPattern::Wildcard(x) => policy.wildcard.entry(x.as_str().into()),
    }
    .or_default()
}

/// Holds `path` closed for a broken `entity`: fills the `*` slot if nothing does.
fn hold(table: &mut HostTable, path: &str, entity: &Arc<str>) {
    if let Some(ps) = prefix_slot(table, path) {
        ps.any.get_or_insert_with(|| Slot::Broken(entity.clone()));
    }
}

/// The paths an entity in error holds closed (they enclose other owners' routes as a
/// route that delegates nothing would).
struct Held {
    entity: Arc<str>,
    hosts: Option<Vec<HostPattern>>,
    paths: Vec<String>,
    describe: Arc<str>,
}

/// An entity whose annotations are in error routes nothing, but the paths its routes
/// annotation names are held closed with `policy_error` on its hosts (on any host when
/// its hosts annotation is unreadable too), so that its requests do not fall through
/// to a shorter route of another entity, such as a public `/`. Valid routes of other
/// entities at or under those paths are held closed as conflicts unless it delegated to them
/// ([`ownership`]): a broken service does not open its paths to others.
fn hold_closed(policy: &mut Policy, e: &Entity, entity: &str) -> Option<Held> {
    let text = e.annotation(ROUTES)?;
    let paths = lang::claimed_paths(text);
    if paths.is_empty() {
        return None;
    }
    let entity: Arc<str> = entity.into();
    let hosts = e.annotation(HOSTS).and_then(|h| lang::parse_hosts(h).ok());
    for path in &paths {
        policy.upper_case_prefixes |= path.bytes().any(|b| b.is_ascii_uppercase());
        match &hosts {
            None => hold(&mut policy.any, path, &entity),
            Some(hosts) => {
                for h in hosts {
                    hold(host_table(policy, h), path, &entity);
                }
            }
        }
    }
    let owner = owner_of(e);
    let describe = format!(
        "the paths held for {entity} (annotations in error){}",
        owner_note(owner.as_deref())
    );
    Some(Held {
        entity,
        hosts,
        paths,
        describe: describe.into(),
    })
}

/// Most host tables a route is held in besides its own (see `place`).
const MAX_SPILL: usize = 64;
/// Most enclosing routes a conflict names (enough to act on; the rest are alike).
const MAX_UNDER: usize = 8;

/// A route read from the catalog, before ownership decides where it takes effect.
struct Pending {
    route: Arc<Route>,
    /// The entity's hosts, `None` for any host.
    hosts: Option<Arc<[HostPattern]>>,
    delegations: Arc<[Delegation]>,
}

/// Puts every route in the table where ownership lets it take effect, and holds it
/// closed as a conflict where it does not (see [`ownership`]).
fn place(policy: &mut Policy, pending: &[Pending], held: &[Held]) {
    let mut claims: Vec<PathClaim<'_>> = Vec::new();
    let mut claim_of: Vec<(usize, Option<&HostPattern>)> = Vec::new();
    // Each host pattern of a route, `None` once for an any-host one.
    fn each_host(hosts: Option<&[HostPattern]>) -> impl Iterator<Item = Option<&HostPattern>> {
        let list = hosts.unwrap_or_default();
        let any = list.is_empty().then_some(None);
        any.into_iter().chain(list.iter().map(Some))
    }
    claims.reserve(pending.len());
    claim_of.reserve(pending.len());
    for (j, p) in pending.iter().enumerate() {
        for h in each_host(p.hosts.as_deref()) {
            claims.push(PathClaim {
                path: &p.route.path,
                host: h,
                entity: &p.route.entity,
                delegations: &p.delegations,
                describe: Describe::Route(&p.route),
            });
            claim_of.push((j, h));
        }
    }
    let routes = claims.len();
    for h in held {
        for path in &h.paths {
            for host in each_host(h.hosts.as_deref()) {
                claims.push(PathClaim {
                    path,
                    host,
                    entity: &h.entity,
                    delegations: &[],
                    describe: Describe::Text(&h.describe),
                });
            }
        }
    }
    let blocks = ownership::undelegated(&claims, routes);
    let mut effective = vec![false; pending.len()];
    // (route, table, enclosing routes) for holds in another, more specific table.
    type Spill<'h> = (usize, Option<&'h HostPattern>, Vec<Arc<str>>);
    let mut spill: Vec<Spill<'_>> = Vec::new();
    for (c, &(j, h)) in claim_of.iter().enumerate() {
        let route = &pending[j].route;
        // Enclosing claims by the table their hold goes in; texts made only for the
        // first MAX_UNDER of each (a path claimed by hundreds stays linear).
        let mut own: Option<Vec<Arc<str>>> = None;
        let mut others: std::collections::BTreeMap<Option<&HostPattern>, Vec<Arc<str>>> =
            Default::default();
        for &Block { enclosing, table } in &blocks[c] {
            let texts = if table == h {
                own.get_or_insert_with(Vec::new)
            } else {
                others.entry(table).or_default()
            };
            if texts.len() < MAX_UNDER {
                let text = claims[enclosing].describe.text();
                if !texts.contains(&text) {
                    texts.push(text);
                }
            }
        }
        // An any-host route under host-scoped routes of more than MAX_SPILL host
        // patterns is held in its own table instead, everywhere: less access, and the
        // holds stay linear in routes rather than hosts times routes.
        if others.len() > MAX_SPILL {
            let texts = own.get_or_insert_with(Vec::new);
            for t in std::mem::take(&mut others).into_values().flatten() {
                if texts.len() < MAX_UNDER && !texts.contains(&t) {
                    texts.push(t);
                }
            }
        }
        let table = match h {
            None => &mut policy.any,
            Some(h) => host_table(policy, h),
        };
        match own {
            None => {
                insert(table, h, route);
                effective[j] = true;
            }
            Some(mut own) => {
                own.sort();
                insert_held(table, h, route, &own, false);
            }
        }
        spill.extend(others.into_iter().map(|(t, texts)| (j, t, texts)));
    }
    // Holds in the more specific tables of enclosing routes, once every route is in.
    for (j, t, under) in spill {
        let route = &pending[j].route;
        let table = match t {
            None => &mut policy.any,
            Some(h) => host_table(policy, h),
        };
        insert_held(table, t, route, &under, true);
    }
    for (p, e) in pending.iter().zip(effective) {
        policy.upper_case_prefixes |= p.route.path.bytes().any(|b| b.is_ascii_uppercase());
        if e {
            policy.routes.push(p.route.clone());
        }
    }
}

fn conflicts_of(table: &HostTable, host: Option<&str>, out: &mut Vec<Conflict>) {
    for (path, ps) in &table.by_prefix {
        let slots = ps
            .methods
            .iter()
            .map(|(m, s)| (&**m, s))
            .chain(ps.any.iter().map(|s| ("*", s)));
        for (method, slot) in slots {
            if let Slot::Conflict(c) = slot {
                let sorted_strings = |v: &[Arc<str>]| {
                    let mut v: Vec<String> = v.iter().map(|e| e.to_string()).collect();
                    v.sort();
                    v.dedup();
                    v
                };
                out.push(Conflict {
                    host: host.map(str::to_owned),
                    method: method.to_owned(),
                    path: path.to_string(),
                    entities: sorted_strings(&c.entities),
                    under: sorted_strings(&c.under),
                });
            }
        }
    }
}

impl Policy {
    /// Builds a snapshot from catalog entities. Never fails: see [`Policy::errors`] and
    /// [`Policy::conflicts`].
    pub fn build(entities: &[Entity], unmatched: Unmatched) -> Policy {
        let mut errors = Vec::new();
        // Principals routes name, as ids (the directory stores only those).
        let mut interner = Interner::default();
        // (entity, principal) for every name a route uses, for unknown-principal warnings.
        let mut named_by: Vec<(Arc<str>, String)> = Vec::new();
        let mut policy = Policy {
            unmatched,
            entity_count: entities.len(),
            ..Policy::default()
        };
        let mut pending: Vec<Pending> = Vec::new();
        let mut held: Vec<Held> = Vec::new();
        for e in entities {
            if !ROUTE_KINDS.iter().any(|k| kind_is(e, k)) {
                check_other_kind(e, &mut errors);
                continue;
            }
            let r = e.entity_ref();
            let owner = owner_of(e);
            let Some(d) = declared(e, &r, owner.as_deref(), &mut errors) else {
                held.extend(hold_closed(&mut policy, e, &r));
                continue;
            };
            let entity: Arc<str> = r.into();
            let owner: Option<Arc<str>> = owner.map(Into::into);
            // Shared by every line of the entity.
            let hosts: Arc<[HostPattern]> = d.hosts.unwrap_or_default().into();
            let scoped = (!hosts.is_empty()).then(|| hosts.clone());
            let delegations: Arc<[Delegation]> = d.delegations.into();
            let entity_refs: Arc<[String]> = d.allowed.into();
            let entity_ids = sorted(entity_refs.iter().map(|g| interner.id(g)).collect());
            let mut note_named = |refs: &[String]| {
                named_by.extend(refs.iter().map(|g| (entity.clone(), g.clone())));
            };
            note_named(&entity_refs);
            for spec in d.routes {
                let (allowed_refs, allowed) = if spec.requirement == Requirement::Public {
                    (Arc::from([]), None)
                } else if spec.principals.is_empty() {
                    let ids = (!entity_ids.is_empty()).then(|| entity_ids.clone());
                    (entity_refs.clone(), ids)
                } else {
                    note_named(&spec.principals);
                    let ids = sorted(spec.principals.iter().map(|g| interner.id(g)).collect());
                    (spec.principals.into(), Some(ids))
                };
                let route = Arc::new(Route {
                    entity: entity.clone(),
                    owner: owner.clone(),
                    display: spec.display.into(),
                    hosts: hosts.clone(),
                    methods: spec.methods,
                    path: spec.path.into(),
                    required_scopes: scopes_text(&spec.requirement),
                    requirement: spec.requirement,
                    allowed,
                    allowed_refs,
                });
                pending.push(Pending {
                    route,
                    hosts: scoped.clone(),
                    delegations: delegations.clone(),
                });
            }
        }
        place(&mut policy, &pending, &held);
        // The directory's errors come first, as Groups and Users are read first.
        let route_errors = std::mem::take(&mut errors);
        let dir = directory::build(entities, &interner.ids, &mut errors);
        errors.extend(route_errors);
        policy.principals = dir.principals;
        let mut unknown: Vec<UnknownPrincipal> = named_by
            .into_iter()
            .filter(|(_, g)| !dir.existing.contains(g))
            .map(|(entity, principal)| UnknownPrincipal {
                entity: entity.to_string(),
                principal,
            })
            .collect();
        let mut conflicts = Vec::new();
        conflicts_of(&policy.any, None, &mut conflicts);
        for (h, t) in &policy.exact {
            conflicts_of(t, Some(h), &mut conflicts);
        }
        for (h, t) in &policy.wildcard {
            conflicts_of(t, Some(&format!("*.{h}")), &mut conflicts);
        }
        conflicts.sort_by(|a, b| (&a.host, &a.path, &a.method).cmp(&(&b.host, &b.path, &b.method)));
        policy.conflicts = conflicts;
        policy.errors = errors;
        unknown.sort_by(|a, b| (&a.entity, &a.principal).cmp(&(&b.entity, &b.principal)));
        unknown.dedup();
        policy.unknown_principals = unknown;
        policy
    }
}
