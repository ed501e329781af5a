//! The caller directory, inside the policy build (catalog → **directory** → route
//! table): Group and User entities → for each token fact (IdP group, group name or
//! ref, subject, email, or the User ref of a Backstage-issued token), the principals
//! named by routes that such a caller holds.
//!
//! Only principals that some route names (an `@` word, `allowed-groups`, an owner
//! under `allow-owner`) can ever decide anything, so only those are stored: a group's
//! set is the named groups among itself and its ancestors (up to
//! [`MAX_GROUP_DEPTH`] levels), computed by walking down from each named group once.
//! Memory is thus bounded by named principals × groups and users rather than by the
//! square of the hierarchy (13,000 groups joined by hub groups once took 786 MB), and
//! every set is shared by all the keys that reach it. [`MAX_MEMBERSHIPS`] caps the
//! total: past it, further memberships are dropped and reported (less access, never
//! more).

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::Value;

use super::build::{IDP_GROUPS, SUBJECT, annotation_error, kind_is, refs, whole};
use super::lang::{self, LangError};
use super::{AnnotationError, Map, Principals};
use crate::catalog::Entity;

const EMAIL: &str = "spec.profile.email";

/// How many `childOf` levels up a caller's groups are followed. Deeper ancestors are
/// ignored (fail closed: less membership, never more); real hierarchies are far shallower.
pub const MAX_GROUP_DEPTH: usize = 32;

/// Most (group or user, named principal) memberships stored in one snapshot: 4 million
/// ids, 16 MB. Beyond it memberships are dropped (fail closed) and an error reported.
pub const MAX_MEMBERSHIPS: usize = 4_000_000;

/// The directory, and every principal ref a caller can hold (for unknown-principal
/// warnings: a ref a route names that is not here is held by nobody).
pub(super) struct Directory {
    pub principals: Principals,
    pub existing: HashSet<String>,
}

/// Sorted, deduplicated, shared.
fn shared(mut v: Vec<u32>) -> Arc<[u32]> {
    v.sort_unstable();
    v.dedup();
    v.into()
}

/// A user-identifying key (subject or email) being claimed by users; two claims void it.
struct Claim<'a> {
    map: &'a mut Map<Box<str>, (String, Vec<u32>)>,
    dups: &'a mut HashSet<Box<str>>,
    annotation: &'static str,
}

impl Claim<'_> {
    fn add(self, key: String, user: &str, ids: &[u32], errors: &mut Vec<AnnotationError>) {
        if let Some((other, prev)) = self.map.get_mut(key.as_str())
            && other == user
        {
            // The same user delivered twice (e.g. by two descriptor files): one user.
            prev.extend_from_slice(ids);
        } else if let Some((other, _)) = self.map.get(key.as_str()) {
            let a = self.annotation;
            errors.push(whole(
                other,
                a,
                LangError::DuplicateIdentity(user.to_owned()),
            ));
            errors.push(whole(user, a, LangError::DuplicateIdentity(other.clone())));
            self.dups.insert(key.into());
        } else {
            self.map.insert(key.into(), (user.to_owned(), ids.to_vec()));
        }
    }
}

/// The group graph: every group ref seen (as an entity, a parent or a `memberOf`
/// target) as a node, with its children.
#[derive(Default)]
struct Graph {
    node: Map<String, usize>,
    children: Vec<Vec<usize>>,
}

impl Graph {
    fn id(&mut self, r: &str) -> usize {
        if let Some(&i) = self.node.get(r) {
            return i;
        }
        let i = self.children.len();
        self.node.insert(r.to_owned(), i);
        self.children.push(Vec::new());
        i
    }
}

/// For each node, the named principal ids among itself and its ancestors within
/// [`MAX_GROUP_DEPTH`] levels: one walk down from each named group.
fn named_above(
    graph: &Graph,
    named: &Map<String, u32>,
    errors: &mut Vec<AnnotationError>,
) -> Vec<Arc<[u32]>> {
    let mut above: Vec<Vec<u32>> = vec![Vec::new(); graph.children.len()];
    let mut total = 0usize;
    let mut seen = vec![u32::MAX; graph.children.len()];
    let mut starts: Vec<(&String, u32, usize)> = named
        .iter()
        .filter_map(|(r, &id)| graph.node.get(r).map(|&n| (r, id, n)))
        .collect();
    starts.sort_unstable_by_key(|&(_, id, _)| id);
    for (r, id, start) in starts {
        // `seen[n] == id`: visited in this walk (cycles tolerated).
        seen[start] = id;
        let mut level = vec![start];
        for depth in 0..=MAX_GROUP_DEPTH {
            if total + level.len() > MAX_MEMBERSHIPS {
                errors.push(whole(
                    r,
                    "spec.parent",
                    LangError::HierarchyTooLarge(MAX_MEMBERSHIPS),
                ));
                return above.into_iter().map(shared).collect();
            }
            total += level.len();
            let mut next = Vec::new();
            for &n in &level {
                above[n].push(id);
                if depth < MAX_GROUP_DEPTH {
                    for &c in &graph.children[n] {
                        if seen[c] != id {
                            seen[c] = id;
                            next.push(c);
                        }
                    }
                }
            }
            if next.is_empty() {
                break;
            }
            level = next;
        }
    }
    above.into_iter().map(shared).collect()
}

/// A token fact (IdP group, group name, subject, email) → the named principals its
/// holder holds.
type Keys = Map<Box<str>, Arc<[u32]>>;

/// A User entity: its ref and its group nodes.
type UserNode<'e> = (&'e Entity, String, Vec<usize>);

/// The group graph of Group and User entities, every principal ref a caller can
/// hold, and the users (in entity order).
fn read_graph<'e>(entities: &[&'e Entity]) -> (Graph, HashSet<String>, Vec<UserNode<'e>>) {
    let mut graph = Graph::default();
    let mut existing: HashSet<String> = HashSet::new();
    let mut users: Vec<UserNode<'e>> = Vec::new();
    for &e in entities {
        if kind_is(e, "group") {
            let me_ref = e.entity_ref();
            let me = graph.id(&me_ref);
            for p in refs(e, "childOf", "parent", "group") {
                let parent = graph.id(&p);
                graph.children[parent].push(me);
                existing.insert(p);
            }
            existing.insert(me_ref);
        } else if kind_is(e, "user") {
            let r = e.entity_ref();
            let groups: Vec<usize> = refs(e, "memberOf", "memberOf", "group")
                .into_iter()
                .map(|g| {
                    let n = graph.id(&g);
                    existing.insert(g);
                    n
                })
                .collect();
            existing.insert(r.clone());
            users.push((e, r, groups));
        }
    }
    (graph, existing, users)
}

/// Token groups → principal sets: by IdP group name (`idp-groups`), and by group ref
/// or default-namespace name for Groups that declare none.
fn group_keys(
    entities: &[&Entity],
    set_of: impl Fn(&str) -> Arc<[u32]>,
    errors: &mut Vec<AnnotationError>,
) -> (Keys, Keys) {
    let mut by_idp: Map<Box<str>, Vec<Arc<[u32]>>> = Map::default();
    let mut by_name: Keys = Map::default();
    for e in entities.iter().filter(|e| kind_is(e, "group")) {
        let r = e.entity_ref();
        let up = set_of(&r);
        match e.annotation(IDP_GROUPS) {
            // A Group that names its IdP groups is reached only through them: a
            // token group spelt like its name or ref (`SRE`, `group:default/sre`)
            // maps to nothing, else any IdP group an admin can create with that
            // name would join it. A broken list maps nothing at all (fail closed).
            Some(v) => match lang::parse_idp_groups(v) {
                Ok(names) => {
                    for n in names.iter().filter(|_| !up.is_empty()) {
                        by_idp
                            .entry(n.as_str().into())
                            .or_default()
                            .push(up.clone());
                    }
                }
                Err(l) => errors.push(annotation_error(&r, IDP_GROUPS, l)),
            },
            None if up.is_empty() => {}
            None => {
                // The same group delivered twice maps once, to the same set.
                by_name.insert(r.as_str().into(), up.clone());
                if e.metadata.namespace.eq_ignore_ascii_case("default") {
                    by_name.insert(e.metadata.name.to_ascii_lowercase().into(), up);
                }
            }
        }
    }
    let by_idp = by_idp
        .into_iter()
        .map(|(k, mut sets)| {
            let set = if sets.len() == 1 {
                sets.pop().unwrap_or_default()
            } else {
                shared(sets.iter().flat_map(|s| s.iter().copied()).collect())
            };
            (k, set)
        })
        .collect();
    (by_idp, by_name)
}

/// Token `sub` and email → principal sets of the users claiming them; a key two
/// users claim is reported and maps nobody. Also each User's own ref → its set (for
/// Backstage-issued tokens, whose `sub` is that ref: the same User delivered twice
/// is one User, its memberships joined).
fn user_keys(
    users: &[UserNode<'_>],
    named: &Map<String, u32>,
    above: &[Arc<[u32]>],
    errors: &mut Vec<AnnotationError>,
) -> (Keys, Keys, Keys) {
    let mut by_ref: Map<Box<str>, Vec<u32>> = Map::default();
    let mut by_subject: Map<Box<str>, (String, Vec<u32>)> = Map::default();
    let mut by_email: Map<Box<str>, (String, Vec<u32>)> = Map::default();
    let mut dup_subjects: HashSet<Box<str>> = HashSet::new();
    let mut dup_emails: HashSet<Box<str>> = HashSet::new();
    for (e, r, groups) in users {
        let mut ids: Vec<u32> = named.get(r.as_str()).copied().into_iter().collect();
        for &g in groups {
            ids.extend_from_slice(&above[g]);
        }
        by_ref
            .entry(r.as_str().into())
            .or_default()
            .extend_from_slice(&ids);
        if let Some(v) = e.annotation(SUBJECT) {
            match lang::parse_word(v) {
                Ok(s) => {
                    let c = Claim {
                        map: &mut by_subject,
                        dups: &mut dup_subjects,
                        annotation: SUBJECT,
                    };
                    c.add(s, r, &ids, errors);
                }
                Err(l) => errors.push(annotation_error(r, SUBJECT, l)),
            }
        }
        let email = e
            .spec
            .pointer("/profile/email")
            .and_then(Value::as_str)
            .map(|s| s.trim().to_ascii_lowercase())
            .filter(|s| !s.is_empty());
        if let Some(m) = email {
            let c = Claim {
                map: &mut by_email,
                dups: &mut dup_emails,
                annotation: EMAIL,
            };
            c.add(m, r, &ids, errors);
        }
    }
    let unique = |map: Map<Box<str>, (String, Vec<u32>)>, dups: &HashSet<Box<str>>| {
        map.into_iter()
            .filter(|(k, (_, v))| !dups.contains(k) && !v.is_empty())
            .map(|(k, (_, v))| (k, shared(v)))
            .collect()
    };
    let by_ref = by_ref
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k, shared(v)))
        .collect();
    (
        unique(by_subject, &dup_subjects),
        unique(by_email, &dup_emails),
        by_ref,
    )
}

/// Builds the directory from Group and User entities. `named` holds every principal
/// ref a route names, with its id.
pub(super) fn build(
    entities: &[&Entity],
    named: &Map<String, u32>,
    errors: &mut Vec<AnnotationError>,
) -> Directory {
    let (graph, existing, users) = read_graph(entities);
    let above = named_above(&graph, named, errors);
    let empty: Arc<[u32]> = Arc::from([]);
    let set_of = |r: &str| {
        graph
            .node
            .get(r)
            .map_or_else(|| empty.clone(), |&n| above[n].clone())
    };
    let (by_idp_group, by_group_name) = group_keys(entities, set_of, errors);
    let (by_subject, by_email, by_user_ref) = user_keys(&users, named, &above, errors);
    Directory {
        principals: Principals {
            by_idp_group,
            by_group_name,
            by_subject,
            by_email,
            by_user_ref,
        },
        existing,
    }
}
