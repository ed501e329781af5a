//! Route placement, inside the policy build (entities → build → **place** → route
//! table): puts each route line in the host tables where ownership
//! ([`ownership`](super::ownership)) lets it take effect, holds it closed as a
//! `policy_conflict` where it does not, fills the `policy_error` holds of entities in
//! error, and lists the conflict slots that result.

use std::sync::Arc;

use super::lang::{Delegation, HostPattern};
use super::ownership::{self, Block, Describe, PathClaim};
use super::{Clash, Conflict, HostTable, Policy, PrefixSlot, Route, Slot, lower};

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
pub(super) fn host_table<'p>(policy: &'p mut Policy, h: &HostPattern) -> &'p mut HostTable {
    match h {
        HostPattern::Exact(x) => policy.exact.entry(x.as_str().into()),
        HostPattern::Wildcard(x) => policy.wildcard.entry(x.as_str().into()),
    }
    .or_default()
}

/// Holds `path` closed for a broken `entity`: fills the `*` slot if nothing does.
pub(super) fn hold(table: &mut HostTable, path: &str, entity: &Arc<str>) {
    if let Some(ps) = prefix_slot(table, path) {
        ps.any.get_or_insert_with(|| Slot::Broken(entity.clone()));
    }
}

/// The paths an entity in error holds closed (they enclose other owners' routes as a
/// route that delegates nothing would).
pub(super) struct Held {
    pub(super) entity: Arc<str>,
    pub(super) hosts: Option<Vec<HostPattern>>,
    pub(super) paths: Vec<String>,
    pub(super) describe: Arc<str>,
}

/// Most host tables a route is held in besides its own (see `place`).
const MAX_SPILL: usize = 64;
/// Most enclosing routes a conflict names (enough to act on; the rest are alike).
const MAX_UNDER: usize = 8;

/// A route read from the catalog, before ownership decides where it takes effect.
pub(super) struct Pending {
    pub(super) route: Arc<Route>,
    /// The entity's hosts, `None` for any host.
    pub(super) hosts: Option<Arc<[HostPattern]>>,
    pub(super) delegations: Arc<[Delegation]>,
}

/// Each host pattern of a route, `None` once for an any-host one.
fn each_host(hosts: Option<&[HostPattern]>) -> impl Iterator<Item = Option<&HostPattern>> {
    let list = hosts.unwrap_or_default();
    let any = list.is_empty().then_some(None);
    any.into_iter().chain(list.iter().map(Some))
}

/// The path claims ownership compares: first one per route and host pattern (with
/// the pending route and host each is for), then the held paths of entities in error.
type Claims<'p> = (Vec<PathClaim<'p>>, Vec<(usize, Option<&'p HostPattern>)>);

fn claims_of<'p>(pending: &'p [Pending], held: &'p [Held]) -> Claims<'p> {
    let mut claims: Vec<PathClaim<'_>> = Vec::with_capacity(pending.len());
    let mut claim_of: Vec<(usize, Option<&HostPattern>)> = Vec::with_capacity(pending.len());
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
    (claims, claim_of)
}

/// Texts of the enclosing claims that hold a route closed, by the table the hold goes
/// in (other than the route's own).
type Elsewhere<'c> = std::collections::BTreeMap<Option<&'c HostPattern>, Vec<Arc<str>>>;

/// The enclosing claims of one route claim on host `h` (its `blocks`), as texts: those
/// whose hold goes in `h`'s own table (`None`: none, the route takes effect there),
/// and those whose hold goes in another, more specific one. Texts are made only for
/// the first MAX_UNDER of each table (a path claimed by hundreds stays linear).
fn enclosing<'c>(
    blocks: &[Block<'c>],
    claims: &[PathClaim<'_>],
    h: Option<&'c HostPattern>,
) -> (Option<Vec<Arc<str>>>, Elsewhere<'c>) {
    let mut own: Option<Vec<Arc<str>>> = None;
    let mut others = Elsewhere::default();
    for &Block { enclosing, table } in blocks {
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
    (own, others)
}

/// The table of host pattern `h` (`None`: the any-host table), created if new.
fn table_of<'p>(policy: &'p mut Policy, h: Option<&HostPattern>) -> &'p mut HostTable {
    match h {
        None => &mut policy.any,
        Some(h) => host_table(policy, h),
    }
}

/// Puts every route in the table where ownership lets it take effect, and holds it
/// closed as a conflict where it does not (see [`ownership`]).
pub(super) fn place(policy: &mut Policy, pending: &[Pending], held: &[Held]) {
    let (claims, claim_of) = claims_of(pending, held);
    let blocks = ownership::undelegated(&claims, claim_of.len());
    let mut effective = vec![false; pending.len()];
    // (route, table, enclosing routes) for holds in another, more specific table.
    type Spill<'h> = (usize, Option<&'h HostPattern>, Vec<Arc<str>>);
    let mut spill: Vec<Spill<'_>> = Vec::new();
    for (c, &(j, h)) in claim_of.iter().enumerate() {
        let route = &pending[j].route;
        let (own, others) = enclosing(&blocks[c], &claims, h);
        let table = table_of(policy, h);
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
        insert_held(table_of(policy, t), t, &pending[j].route, &under, true);
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

/// Every conflict slot of the snapshot, sorted by host, path and method.
pub(super) fn all_conflicts(policy: &Policy) -> Vec<Conflict> {
    let mut conflicts = Vec::new();
    conflicts_of(&policy.any, None, &mut conflicts);
    for (h, t) in &policy.exact {
        conflicts_of(t, Some(h), &mut conflicts);
    }
    for (h, t) in &policy.wildcard {
        conflicts_of(t, Some(&format!("*.{h}")), &mut conflicts);
    }
    conflicts.sort_by(|a, b| (&a.host, &a.path, &a.method).cmp(&(&b.host, &b.path, &b.method)));
    conflicts
}
