//! Policy building, between the catalog sources and the decision: entities → caller
//! directory (users, groups, ancestors, IdP mappings) and route table. Never fails:
//! bad annotations become [`AnnotationError`]s, overlapping claims [`Conflict`]s.
//! This file reads each entity's annotations into route lines; `directory.rs` builds
//! the caller directory and `place.rs` puts the lines in the route table.

use std::borrow::Borrow;
use std::sync::Arc;

use serde_json::Value;

use super::directory;
use super::lang::{self, Delegation, HostPattern, LangError, Located, Requirement, RouteSpec};
use super::ownership::owner_note;
use super::place::{Held, Pending, all_conflicts, hold, host_table, place};
use super::{AnnotationError, Map, Policy, Route, UnknownPrincipal, Unmatched};
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

/// The principals routes name: interned as ids (the directory stores only those),
/// and noted with the entity naming them, for unknown-principal warnings.
#[derive(Default)]
struct Named {
    interner: Interner,
    by: Vec<(Arc<str>, String)>,
}

impl Named {
    /// Notes that `entity` names `refs`; their sorted ids.
    fn note(&mut self, entity: &Arc<str>, refs: &[String]) -> Box<[u32]> {
        self.by
            .extend(refs.iter().map(|g| (entity.clone(), g.clone())));
        sorted(refs.iter().map(|g| self.interner.id(g)).collect())
    }
}

/// The route lines of a routed entity whose annotations are valid, for `place`.
fn pending_routes(
    entity: String,
    owner: Option<String>,
    d: Declared,
    named: &mut Named,
    out: &mut Vec<Pending>,
) {
    let entity: Arc<str> = entity.into();
    let owner: Option<Arc<str>> = owner.map(Into::into);
    // Shared by every line of the entity.
    let hosts: Arc<[HostPattern]> = d.hosts.unwrap_or_default().into();
    let scoped = (!hosts.is_empty()).then(|| hosts.clone());
    let delegations: Arc<[Delegation]> = d.delegations.into();
    let entity_refs: Arc<[String]> = d.allowed.into();
    let entity_ids = named.note(&entity, &entity_refs);
    for spec in d.routes {
        let (allowed_refs, allowed) = if spec.requirement == Requirement::Public {
            (Arc::from([]), None)
        } else if spec.principals.is_empty() {
            let ids = (!entity_ids.is_empty()).then(|| entity_ids.clone());
            (entity_refs.clone(), ids)
        } else {
            let ids = named.note(&entity, &spec.principals);
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
        out.push(Pending {
            route,
            hosts: scoped.clone(),
            delegations: delegations.clone(),
        });
    }
}

/// The named principals no caller can hold, sorted by entity and principal.
fn unknown_principals(
    named_by: Vec<(Arc<str>, String)>,
    existing: &std::collections::HashSet<String>,
) -> Vec<UnknownPrincipal> {
    let mut unknown: Vec<UnknownPrincipal> = named_by
        .into_iter()
        .filter(|(_, g)| !existing.contains(g))
        .map(|(entity, principal)| UnknownPrincipal {
            entity: entity.to_string(),
            principal,
        })
        .collect();
    unknown.sort_by(|a, b| (&a.entity, &a.principal).cmp(&(&b.entity, &b.principal)));
    unknown.dedup();
    unknown
}

impl Policy {
    /// Builds a snapshot from catalog entities (owned, or the `Arc`s of a
    /// [`crate::catalog::CatalogSnapshot`]). Never fails: see [`Policy::errors`] and
    /// [`Policy::conflicts`].
    pub fn build<E: Borrow<Entity>>(entities: &[E], unmatched: Unmatched) -> Policy {
        let entities: Vec<&Entity> = entities.iter().map(Borrow::borrow).collect();
        let mut errors = Vec::new();
        let mut named = Named::default();
        let mut policy = Policy {
            unmatched,
            entity_count: entities.len(),
            ..Policy::default()
        };
        let mut pending: Vec<Pending> = Vec::new();
        let mut held: Vec<Held> = Vec::new();
        for &e in &entities {
            if !ROUTE_KINDS.iter().any(|k| kind_is(e, k)) {
                check_other_kind(e, &mut errors);
                continue;
            }
            let r = e.entity_ref();
            let owner = owner_of(e);
            match declared(e, &r, owner.as_deref(), &mut errors) {
                Some(d) => pending_routes(r, owner, d, &mut named, &mut pending),
                None => held.extend(hold_closed(&mut policy, e, &r)),
            }
        }
        place(&mut policy, &pending, &held);
        // The directory's errors come first, as Groups and Users are read first.
        let route_errors = std::mem::take(&mut errors);
        let dir = directory::build(&entities, &named.interner.ids, &mut errors);
        errors.extend(route_errors);
        policy.principals = dir.principals;
        policy.conflicts = all_conflicts(&policy);
        policy.errors = errors;
        policy.unknown_principals = unknown_principals(named.by, &dir.existing);
        policy
    }
}
