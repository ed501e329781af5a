//! The `backstage` catalog source: a client for the Backstage catalog REST API and the
//! [`Syncer`] that keeps an in-memory copy of the catalog current by etag diffing.
//! The runner in [`crate::catalog::source`] calls [`Syncer::sync_once`] every poll.
//!
//! One sync:
//! 1. `GET /api/catalog/entities/by-query?filter=kind=..&fields=kind,metadata.namespace,
//!    metadata.name,metadata.etag&limit=N`, following `pageInfo.nextCursor` and
//!    resending `fields` and `limit` (the cursor carries only filter and order).
//! 2. Refs whose `metadata.etag` differs from the applied copy, that are new, or that
//!    came from the snapshot file and were never confirmed by Backstage (see
//!    [`Syncer::seed`]), are fetched with `POST /api/catalog/entities/by-refs` (in
//!    chunks); refs no longer listed are dropped. Backstage has no HTTP ETag/304,
//!    hence this.
//! 3. The wipe-out guard: a result with no routable entity (one carrying
//!    [`ROUTES_ANNOTATION`]) while the applied copy has some is held back until it
//!    repeats on [`WIPE_CONFIRMATIONS`] consecutive polls; a failed poll neither
//!    confirms nor resets the count, a poll with routes resets it.
//!
//! Decisions:
//! - **Only what the policy reads is fetched**: by-refs sends `fields` ([`ENTITY_FIELDS`]:
//!   kind, apiVersion, name, namespace, etag, annotations, relations and the four spec
//!   fields the policy falls back to). Backstage's by-refs takes `fields` in the body
//!   and applies dotted paths as by-query does (`parseEntityTransformParams`, plugin-
//!   catalog-backend 4.0.5). An API entity's embedded OpenAPI `spec.definition`, or
//!   any deep or bulky field another plugin adds, therefore never reaches stagedoor.
//! - **One bad entity does not stop the sync.** The by-refs envelope is split into its
//!   items without parsing them (an iterative scan: no depth limit applies to the
//!   envelope), and each item is parsed on its own. An item that does not parse
//!   (serde_json's recursion limit of 128, a wrong type) is skipped: reported in
//!   [`SyncReport`] (the runner logs it and counts it in
//!   `stagedoor_catalog_entities_skipped_total{reason}`) and kept at its last good
//!   version, while every other change applies. A new entity that does not parse is
//!   left out, as if Backstage did not have it yet.
//! - **A chunk whose answer reaches the body cap is split in halves** and retried; an
//!   entity over the cap on its own is skipped (`too_large`) and kept like one that
//!   does not parse.
//! - **Etags that disagree** between the listing and by-refs (the entity changed in
//!   between, or a proxy or cache rewrites one of them) are reported (logged and
//!   counted in `stagedoor_catalog_etag_mismatches_total`): if they always disagree,
//!   every poll fetches every entity again. The applied copy keeps the etag by-refs
//!   returned, the one that describes the content held, so a stale by-refs answer is
//!   fetched again on the next poll rather than taken as current.
//! - **Error bodies are cut**: at most [`ERROR_BODY_READ_BYTES`] of a non-2xx body are
//!   read, and at most [`ERROR_MESSAGE_BYTES`] of Backstage's message (or of the body)
//!   go into the error, control characters escaped, since the error is logged on every
//!   failed poll.
//!
//! Any other failure (transport, status, oversized listing, a malformed envelope,
//! by-refs answering for other refs or with another count) fails the whole sync with a
//! typed [`CatalogError`]; the applied copy is untouched. HTTP hygiene: connect and
//! total timeouts, a body size cap, redirects refused, no proxy from the environment.
//! The token goes only into a sensitive `Authorization` header and never into errors,
//! logs or `Debug` output.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::ROUTES_ANNOTATION;
use super::entity::Entity;
use super::error::CatalogError;

mod client;
mod items;

pub use client::{
    Client, ENTITY_FIELDS, ERROR_BODY_READ_BYTES, ERROR_MESSAGE_BYTES, EtagRow, Fetched, Limits,
    SkipReason, excerpt,
};

/// Polls in a row that must see the routable entities gone before that is applied.
pub const WIPE_CONFIRMATIONS: u32 = 3;

/// What one sync did.
#[derive(Debug, Clone, PartialEq)]
pub enum SyncOutcome {
    /// The catalog changed; `entities` is the new full set, sorted by entity ref.
    Applied {
        entities: Vec<Arc<Entity>>,
        /// Entities fetched whole because they were new or their etag changed.
        fetched: usize,
        /// Entities no longer in Backstage.
        removed: usize,
    },
    /// Nothing changed since the applied copy.
    Unchanged,
    /// The result had no routable entity while the applied copy has some; not applied.
    Held { consecutive: u32 },
}

/// An entity by-refs returned but that was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedEntity {
    pub entity_ref: String,
    pub reason: SkipReason,
    /// Why, bounded and escaped.
    pub detail: String,
    /// Whether an earlier version is kept in its place (else it is left out).
    pub kept: bool,
}

impl std::fmt::Display for SkippedEntity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} ({}); {}",
            self.entity_ref,
            self.detail,
            self.reason.as_str(),
            if self.kept {
                "its last good version is kept"
            } else {
                "left out"
            }
        )
    }
}

/// An entity whose etag in the listing differs from the one by-refs returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtagMismatch {
    pub entity_ref: String,
    pub listed: Option<String>,
    pub fetched: Option<String>,
}

/// What the last successful [`Syncer::sync_once`] met besides its outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub skipped: Vec<SkippedEntity>,
    pub etag_mismatches: Vec<EtagMismatch>,
}

/// The applied copy: entity ref → entity. Each entity is behind an `Arc`, so a poll
/// carries unchanged entities into the next copy, and the published catalog shares
/// them, without copying; the map is behind one so a sync can read it on the blocking
/// pool.
type Copy = HashMap<String, Arc<Entity>>;

/// The etag-diffing sync over a [`Client`]; holds the applied copy of the catalog.
#[derive(Debug)]
pub struct Syncer {
    client: Client,
    kinds: Vec<String>,
    applied: Arc<Copy>,
    /// Refs of the applied copy that came from the snapshot file and that Backstage
    /// has not confirmed yet: fetched whatever their etag says (see [`Syncer::seed`]).
    unverified: Arc<HashSet<String>>,
    wipes_seen: u32,
    report: SyncReport,
}

impl Syncer {
    pub fn new(client: Client, kinds: Vec<String>) -> Self {
        Self {
            client,
            kinds,
            applied: Arc::default(),
            unverified: Arc::default(),
            wipes_seen: 0,
            report: SyncReport::default(),
        }
    }

    /// Starts from `entities` (the snapshot file). The snapshot is a cache, never an
    /// authority: every seeded entity still listed is fetched again on the first sync
    /// that reaches Backstage, whatever its etag, so an edited file cannot outlive a
    /// healthy Backstage. Until then the seed is what the wipe-out guard protects,
    /// and what the runner serves while Backstage is unreachable.
    pub fn seed<E: Into<Arc<Entity>>>(&mut self, entities: impl IntoIterator<Item = E>) {
        let applied: Copy = entities
            .into_iter()
            .map(|e| {
                let e = e.into();
                (e.entity_ref(), e)
            })
            .collect();
        self.unverified = Arc::new(applied.keys().cloned().collect());
        self.applied = Arc::new(applied);
        self.wipes_seen = 0;
    }

    /// The applied copy, sorted by entity ref; the entities are shared, not copied.
    pub fn entities(&self) -> Vec<Arc<Entity>> {
        sorted(&self.applied)
    }

    /// Skipped entities and etag mismatches of the last successful sync.
    pub fn report(&self) -> &SyncReport {
        &self.report
    }

    /// One poll of Backstage; see the module docs. Steps 1 and 2 list and fetch here;
    /// [`plan`] walks the listing and [`settle`] builds the next copy and compares it
    /// on the blocking pool, as their work grows with the catalog (a worker held by
    /// it holds SPOP decisions); step 3 follows.
    pub async fn sync_once(&mut self) -> Result<SyncOutcome, CatalogError> {
        let rows = self.client.list_etags(&self.kinds).await?;
        // Walking the listing grows with the catalog (a few ms for 10,000 entities):
        // off the workers too.
        let (applied, unverified) = (Arc::clone(&self.applied), Arc::clone(&self.unverified));
        let Plan {
            carried,
            listed,
            to_fetch,
        } = crate::offload::run_off_worker(move || plan(&applied, &unverified, rows))
            .await
            .ok_or_else(shutting_down)?;
        let fetched = self.client.fetch_by_refs(&to_fetch).await?;
        let fetched_count = to_fetch.len();
        let (applied, unverified) = (Arc::clone(&self.applied), Arc::clone(&self.unverified));
        let settled = crate::offload::run_off_worker(move || {
            settle(&applied, &unverified, carried, &listed, to_fetch, fetched)
        })
        .await
        .ok_or_else(shutting_down)?;
        // Nothing below awaits: a cancelled sync changes nothing.
        self.report = settled.report;
        // After a sync that reached Backstage every entity is confirmed or left out.
        let Some(next) = settled.next else {
            self.wipes_seen = 0;
            self.unverified = Arc::default();
            return Ok(SyncOutcome::Unchanged);
        };
        if settled.routable_before && !settled.routable_after {
            self.wipes_seen += 1;
            if self.wipes_seen < WIPE_CONFIRMATIONS {
                // The copy held back owns every entity fetched: free it off the workers.
                crate::offload::drop_off_worker(next);
                return Ok(SyncOutcome::Held {
                    consecutive: self.wipes_seen,
                });
            }
        }
        self.wipes_seen = 0;
        let replaced = std::mem::replace(&mut self.applied, Arc::new(next.copy));
        crate::offload::drop_off_worker(replaced);
        self.unverified = Arc::default();
        Ok(SyncOutcome::Applied {
            entities: next.sorted,
            fetched: fetched_count,
            removed: settled.removed,
        })
    }
}

/// A sync cut short because the runtime is shutting down.
fn shutting_down() -> CatalogError {
    CatalogError::Http {
        url: "(whole sync)".to_owned(),
        reason: "cancelled: the runtime is shutting down".to_owned(),
    }
}

/// Step 1's end: which listed entities are carried over as they are, and which are
/// fetched.
struct Plan {
    /// Entities whose listed etag is the applied one's (and not unverified).
    carried: Copy,
    /// Every listed ref and its etag.
    listed: HashMap<String, Option<String>>,
    /// The rest, sorted, each once.
    to_fetch: Vec<String>,
}

/// Sorts the listing into entities carried over and entities to fetch. Pure; it runs
/// on the blocking pool.
fn plan(applied: &Copy, unverified: &HashSet<String>, rows: Vec<EtagRow>) -> Plan {
    #[cfg(test)]
    SETTLED_ON.lock().unwrap().push(std::thread::current().id());
    let mut carried = HashMap::with_capacity(rows.len());
    let mut listed: HashMap<String, Option<String>> = HashMap::with_capacity(rows.len());
    let mut to_fetch = Vec::new();
    for row in rows {
        match applied.get(&row.entity_ref) {
            Some(current)
                if row.etag.is_some()
                    && current.metadata.etag == row.etag
                    && !unverified.contains(&row.entity_ref) =>
            {
                carried.insert(row.entity_ref.clone(), Arc::clone(current));
            }
            _ => to_fetch.push(row.entity_ref.clone()),
        }
        listed.insert(row.entity_ref, row.etag);
    }
    to_fetch.sort();
    to_fetch.dedup();
    Plan {
        carried,
        listed,
        to_fetch,
    }
}

/// The threads [`plan`] and [`settle`] ran on, for the test that they never run on the
/// runtime's.
#[cfg(test)]
static SETTLED_ON: std::sync::Mutex<Vec<std::thread::ThreadId>> = std::sync::Mutex::new(Vec::new());

/// What [`settle`] found.
struct Settled {
    /// The next copy, and its entities sorted by ref; `None` when it holds the same
    /// entities as the applied one.
    next: Option<Next>,
    report: SyncReport,
    removed: usize,
    routable_before: bool,
    routable_after: bool,
}

struct Next {
    copy: Copy,
    sorted: Vec<Arc<Entity>>,
}

/// Step 2's end: the next copy from the entities carried over (`carried`) and those
/// fetched, compared with the applied one. Pure; it runs on the blocking pool, and a
/// copy judged the same is freed there too.
fn settle(
    applied: &Copy,
    unverified: &HashSet<String>,
    mut next: Copy,
    listed: &HashMap<String, Option<String>>,
    to_fetch: Vec<String>,
    fetched: Vec<Fetched>,
) -> Settled {
    #[cfg(test)]
    SETTLED_ON.lock().unwrap().push(std::thread::current().id());
    // A ref listed twice (edited while the listing was paged) may have been carried
    // over by one row and sent to fetch by another: the fetch decides, or a deleted
    // entity would be kept and the sync reported `Unchanged`.
    for entity_ref in &to_fetch {
        next.remove(entity_ref);
    }
    let mut report = SyncReport::default();
    for (entity_ref, item) in to_fetch.into_iter().zip(fetched) {
        match item {
            Fetched::Entity(entity) => {
                let listed_etag = listed.get(&entity_ref).cloned().flatten();
                if entity.metadata.etag != listed_etag {
                    report.etag_mismatches.push(EtagMismatch {
                        entity_ref: entity_ref.clone(),
                        listed: listed_etag,
                        fetched: entity.metadata.etag.clone(),
                    });
                }
                next.insert(entity_ref, Arc::new(entity));
            }
            // Deleted between listing and fetching; it is gone.
            Fetched::Missing => {}
            Fetched::Skipped(reason, detail) => {
                // Only a version Backstage itself delivered is kept: a copy seeded from
                // the snapshot file and never confirmed is left out, like a new entity,
                // or an edited file would be served as live (found by review).
                let kept = applied
                    .get(&entity_ref)
                    .filter(|_| !unverified.contains(&entity_ref));
                if let Some(kept) = kept {
                    next.insert(entity_ref.clone(), Arc::clone(kept));
                }
                report.skipped.push(SkippedEntity {
                    entity_ref,
                    reason,
                    detail,
                    kept: kept.is_some(),
                });
            }
        }
    }
    let routable_before = routable(applied);
    if same(&next, applied) {
        return Settled {
            next: None,
            report,
            removed: 0,
            routable_before,
            routable_after: routable_before,
        };
    }
    let removed = applied.keys().filter(|k| !next.contains_key(*k)).count();
    Settled {
        report,
        removed,
        routable_before,
        routable_after: routable(&next),
        next: Some(Next {
            sorted: sorted(&next),
            copy: next,
        }),
    }
}

/// The entities of `copy` sorted by ref, shared.
fn sorted(copy: &Copy) -> Vec<Arc<Entity>> {
    let mut sorted: Vec<(&String, &Arc<Entity>)> = copy.iter().collect();
    sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
    sorted.into_iter().map(|(_, e)| Arc::clone(e)).collect()
}

fn routable(entities: &HashMap<String, Arc<Entity>>) -> bool {
    entities
        .values()
        .any(|e| e.annotation(ROUTES_ANNOTATION).is_some())
}

/// Whether two copies hold the same entities: an entity carried over unchanged is the
/// same `Arc`, so only fetched ones are compared by value.
fn same(a: &HashMap<String, Arc<Entity>>, b: &HashMap<String, Arc<Entity>>) -> bool {
    a.len() == b.len()
        && a.iter()
            .all(|(k, v)| b.get(k).is_some_and(|w| Entity::same(v, w)))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::catalog::entity::component as entity;

    /// Carried-over entities compare by pointer; fetched ones by value, so a fetch
    /// that brings back the same entity is still "unchanged", and any difference in
    /// an entity, a ref or the count is a change.
    #[test]
    fn copies_are_the_same_by_pointer_or_by_value() {
        let a = entity("a", "1");
        let applied = HashMap::from([("a".to_owned(), a.clone())]);
        let carried = HashMap::from([("a".to_owned(), a)]);
        assert!(same(&carried, &applied));
        let refetched = HashMap::from([("a".to_owned(), entity("a", "1"))]);
        assert!(same(&refetched, &applied));
        let edited = HashMap::from([("a".to_owned(), entity("a", "2"))]);
        assert!(!same(&edited, &applied));
        let renamed = HashMap::from([("b".to_owned(), entity("a", "1"))]);
        assert!(!same(&renamed, &applied));
        let mut more = applied.clone();
        more.insert("b".to_owned(), entity("b", "1"));
        assert!(!same(&more, &applied) && !same(&applied, &more));
        assert!(same(&HashMap::new(), &HashMap::new()));
    }
}
