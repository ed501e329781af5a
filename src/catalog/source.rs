//! The catalog runner: owns the refresh of the configured source and publishes each
//! new entity set as an immutable [`CatalogSnapshot`] on a `watch` channel. The policy
//! side rebuilds when the channel changes and swaps its policy atomically, so
//! requests never wait on a sync.
//!
//! - `file`: loads at start, then every `reload_seconds` compares the matched files'
//!   mtimes and sizes (and the set of matched files) and reloads on a difference;
//!   [`CatalogHandle::reload`] (SIGHUP, through the process's one signal owner,
//!   [`crate::lifecycle::Signals`]) forces a reload. A load runs in a blocking
//!   task with a deadline ([`FILE_LOAD_DEADLINE`]): past it the load is abandoned and
//!   counted as failed, so neither `serve` nor `policy show` waits on a parse. An
//!   abandoned load may still be running; no other starts until it ends, and files
//!   unchanged since an abandoned load are not tried again until they change or a
//!   reload is forced.
//! - `backstage`: syncs at start, then every `poll_seconds`; after a failure the next
//!   attempt waits `poll_seconds × 2^failures` (capped at max(poll, 5 min)), with up
//!   to 10% jitter so a fleet of agents does not poll in lockstep.
//!   [`CatalogHandle::reload`] (SIGHUP) polls at once. If the first sync fails, the snapshot
//!   file is loaded and served (origin [`Origin::Snapshot`]) and seeds the etag diff.
//!   Every applied sync rewrites the snapshot file. A whole sync (all pages and
//!   fetches) is abandoned after 5 minutes, on top of the per-request timeouts. What a
//!   sync skipped (entities that do not parse or are too large) and etag mismatches
//!   are logged, and counted in [`CatalogStatus`] for the metrics.
//!
//! A failed load or sync never replaces what is published; it is counted in
//! [`CatalogStatus`] and logged. A result equal to the published one is not
//! republished.
//!
//! This file holds what both sources share (the handle, the status, publishing and
//! the wait between refreshes); each source's loop is in its own child module,
//! `file_loop` and `backstage_loop`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use super::backstage::{Client, Limits, SkipReason, SyncReport, Syncer, excerpt};
use super::config::{CatalogConfig, SourceKind};
use super::entity::Entity;
use super::error::CatalogError;
use crate::clock::unix_now;

mod backstage_loop;
mod file_loop;

/// A whole Backstage sync (every page and fetch) must finish within this; each
/// request has its own, shorter, timeout too.
const SYNC_DEADLINE: Duration = Duration::from_secs(300);

/// A file load (read, pre-scan, parse, relations) must finish within this.
pub const FILE_LOAD_DEADLINE: Duration = Duration::from_secs(20);

/// The runner's limits; [`CatalogSource::start`] uses the defaults.
#[derive(Debug, Clone)]
pub struct RunnerLimits {
    /// The Backstage client's timeouts and sizes.
    pub backstage: Limits,
    /// See [`FILE_LOAD_DEADLINE`].
    pub file_load_deadline: Duration,
}

impl Default for RunnerLimits {
    fn default() -> Self {
        Self {
            backstage: Limits::default(),
            file_load_deadline: FILE_LOAD_DEADLINE,
        }
    }
}

/// Where a published entity set came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Descriptor files.
    File,
    /// A successful sync with Backstage.
    Live,
    /// The snapshot file, because Backstage could not be reached.
    Snapshot,
}

/// One published, immutable entity set.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogSnapshot {
    /// Sorted by entity ref. Shared with the Backstage syncer's applied copy: a
    /// published catalog costs no copy of its entities.
    pub entities: Vec<Arc<Entity>>,
    pub origin: Origin,
    pub loaded_at_unix: i64,
}

/// Sync counts by result, for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncCounts {
    /// A new entity set was published.
    pub applied: u64,
    /// The source was read and nothing had changed.
    pub unchanged: u64,
    /// Held back by the wipe-out guard.
    pub held: u64,
    pub failed: u64,
}

/// Entities by-refs returned that were skipped, by reason, since start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SkipCounts {
    pub unparseable: u64,
    pub too_large: u64,
}

impl SkipCounts {
    pub fn get(&self, reason: SkipReason) -> u64 {
        match reason {
            SkipReason::Unparseable => self.unparseable,
            SkipReason::TooLarge => self.too_large,
        }
    }

    fn add(&mut self, reason: SkipReason) {
        match reason {
            SkipReason::Unparseable => self.unparseable += 1,
            SkipReason::TooLarge => self.too_large += 1,
        }
    }
}

/// The runner's state for metrics and readiness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogStatus {
    pub source: SourceKind,
    /// Origin of the published snapshot; `None` until the first one.
    pub origin: Option<Origin>,
    /// Entities in the published snapshot.
    pub entities: usize,
    /// When the published data was last confirmed by its source (for a snapshot
    /// file: when it was saved).
    pub last_good_sync_unix: Option<i64>,
    pub consecutive_errors: u32,
    pub last_error: Option<String>,
    /// Documents skipped by the last file load.
    pub skipped_documents: usize,
    /// What the last file load or Backstage sync left out, one line each: a document
    /// (file, 0-based document index, reason) or an entity (ref, reason, whether its
    /// last good version is kept).
    pub skipped: Vec<String>,
    /// Entities skipped by Backstage syncs since start.
    pub entities_skipped: SkipCounts,
    /// Entities whose listing etag differed from their by-refs etag, since start.
    pub etag_mismatches: u64,
    pub syncs: SyncCounts,
}

impl CatalogStatus {
    /// Before the first load or sync.
    fn new(source: SourceKind) -> Self {
        CatalogStatus {
            source,
            origin: None,
            entities: 0,
            last_good_sync_unix: None,
            consecutive_errors: 0,
            last_error: None,
            skipped_documents: 0,
            skipped: Vec::new(),
            entities_skipped: SkipCounts::default(),
            etag_mismatches: 0,
            syncs: SyncCounts::default(),
        }
    }
}

/// What [`CatalogSource::start`] returns: the published snapshots and the status.
#[derive(Debug)]
pub struct CatalogHandle {
    snapshots: watch::Receiver<Option<Arc<CatalogSnapshot>>>,
    status: watch::Receiver<CatalogStatus>,
    reload: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl CatalogHandle {
    /// `None` until the first load; then the current snapshot.
    pub fn snapshots(&self) -> watch::Receiver<Option<Arc<CatalogSnapshot>>> {
        self.snapshots.clone()
    }

    pub fn status(&self) -> watch::Receiver<CatalogStatus> {
        self.status.clone()
    }

    /// Reload the files / poll Backstage now, as SIGHUP does.
    pub fn reload(&self) {
        self.reload.notify_one();
    }

    /// A reload trigger that outlives `&self`, for the signal owner's task.
    pub fn reloader(&self) -> Reloader {
        Reloader(self.reload.clone())
    }

    /// Waits for the runner to finish (after the shutdown token is cancelled).
    pub async fn stopped(self) {
        let _ = self.task.await;
    }
}

/// Forces a reload as [`CatalogHandle::reload`] does. Reloads asked for while one
/// runs coalesce into one more.
#[derive(Debug, Clone)]
pub struct Reloader(Arc<Notify>);

impl Reloader {
    pub fn reload(&self) {
        self.0.notify_one();
    }
}

pub struct CatalogSource;

impl CatalogSource {
    /// Starts the runner on the current tokio runtime. `base_dir` resolves relative
    /// paths (the config file's directory). Fails only on what cannot work at all
    /// (token variable, URL); an unreachable Backstage or broken files are retried.
    pub fn start(
        config: &CatalogConfig,
        base_dir: &Path,
        shutdown: CancellationToken,
    ) -> Result<CatalogHandle, CatalogError> {
        Self::start_with(config, base_dir, shutdown, RunnerLimits::default())
    }

    /// [`CatalogSource::start`] with other limits (tests).
    pub fn start_with(
        config: &CatalogConfig,
        base_dir: &Path,
        shutdown: CancellationToken,
        limits: RunnerLimits,
    ) -> Result<CatalogHandle, CatalogError> {
        let (snapshot_tx, snapshots) = watch::channel(None);
        let (status_tx, status) = watch::channel(CatalogStatus::new(config.source));
        let publisher = Publisher {
            snapshots: snapshot_tx,
            status: status_tx,
        };
        let reload = Arc::new(Notify::new());
        let triggers = Triggers {
            reload: reload.clone(),
            shutdown,
        };
        let task = match config.source {
            SourceKind::File => tokio::spawn(file_loop::run_file(
                config.files.clone(),
                base_dir.to_owned(),
                Duration::from_secs(config.reload_seconds.max(1)),
                limits.file_load_deadline,
                publisher,
                triggers,
            )),
            SourceKind::Backstage => {
                let url = config
                    .url
                    .as_deref()
                    .ok_or(super::error::CatalogConfigError::MissingUrl)?;
                let client = Client::new(url, config.token()?, limits.backstage)?;
                tokio::spawn(backstage_loop::run_backstage(
                    Syncer::new(client, config.kinds.clone()),
                    config.snapshot_path(base_dir),
                    Duration::from_secs(config.poll_seconds.max(1)),
                    publisher,
                    triggers,
                ))
            }
        };
        Ok(CatalogHandle {
            snapshots,
            status,
            reload,
            task,
        })
    }
}

/// What ends a wait between two refreshes.
struct Triggers {
    reload: Arc<Notify>,
    shutdown: CancellationToken,
}

enum Wake {
    Timer,
    Forced,
    Shutdown,
}

impl Triggers {
    async fn wait(&self, delay: Duration) -> Wake {
        tokio::select! {
            _ = self.shutdown.cancelled() => Wake::Shutdown,
            _ = tokio::time::sleep(delay) => Wake::Timer,
            _ = self.reload.notified() => Wake::Forced,
        }
    }
}

struct Publisher {
    snapshots: watch::Sender<Option<Arc<CatalogSnapshot>>>,
    status: watch::Sender<CatalogStatus>,
}

impl Publisher {
    /// Publishes `entities` unless the same set from the same origin is published;
    /// true if it was published. The comparison runs on the blocking pool, and a set
    /// judged the same is freed there: a file catalog reloaded unchanged is compared
    /// entity by entity, by value (200 entities of 8,000 annotations held the only
    /// worker ~260 ms, benches/catalog-stall/file.sh).
    async fn publish(
        &self,
        entities: Vec<Arc<Entity>>,
        origin: Origin,
        confirmed_unix: i64,
    ) -> bool {
        let count = entities.len();
        // Status first: whoever sees the new snapshot also sees its status.
        self.status.send_modify(|s| {
            s.origin = Some(origin);
            s.entities = count;
            s.last_good_sync_unix = Some(confirmed_unix);
            s.consecutive_errors = 0;
            s.last_error = None;
        });
        // The runner is the only publisher: what is published cannot change meanwhile.
        let current = self.snapshots.borrow().clone();
        let compared = crate::offload::run_off_worker(move || {
            let same = current
                .is_some_and(|c| c.origin == origin && same_entities(&c.entities, &entities));
            (!same).then_some(entities)
        })
        .await;
        // The same set, or the runtime shutting down: nothing is published.
        let Some(Some(entities)) = compared else {
            return false;
        };
        let replaced = self.snapshots.send_replace(Some(Arc::new(CatalogSnapshot {
            entities,
            origin,
            loaded_at_unix: unix_now(),
        })));
        // The replaced catalog usually holds the last reference to every entity that
        // changed: freeing a large one takes a worker as long as copying it did.
        crate::offload::drop_off_worker(replaced);
        true
    }

    fn count(&self, update: impl FnOnce(&mut SyncCounts)) {
        self.status.send_modify(|s| update(&mut s.syncs));
    }

    fn failed(&self, error: &CatalogError) -> u32 {
        tracing::warn!(%error, "catalog refresh failed; keeping the current catalog");
        let mut errors = 0;
        self.status.send_modify(|s| {
            s.syncs.failed += 1;
            s.consecutive_errors += 1;
            s.last_error = Some(error.to_string());
            errors = s.consecutive_errors;
        });
        errors
    }

    fn has_snapshot(&self) -> bool {
        self.snapshots.borrow().is_some()
    }

    fn origin(&self) -> Option<Origin> {
        self.snapshots.borrow().as_ref().map(|s| s.origin)
    }
}

/// The threads [`same_entities`] ran on, for the test that it never runs on a worker.
#[cfg(test)]
static COMPARED_ON: std::sync::Mutex<Vec<std::thread::ThreadId>> =
    std::sync::Mutex::new(Vec::new());

/// Whether two entity lists are equal: by pointer first, as entities the syncer carried
/// over are the same `Arc`s, and only changed ones are compared by value.
fn same_entities(a: &[Arc<Entity>], b: &[Arc<Entity>]) -> bool {
    #[cfg(test)]
    COMPARED_ON
        .lock()
        .unwrap()
        .push(std::thread::current().id());
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| Entity::same(x, y))
}

/// Logs and counts what a successful sync skipped or found inconsistent.
fn note_report(publisher: &Publisher, report: &SyncReport) {
    for skipped in &report.skipped {
        tracing::warn!(
            event = "entity_skipped",
            entity = %skipped.entity_ref,
            reason = skipped.reason.as_str(),
            kept = skipped.kept,
            detail = %skipped.detail,
            "a Backstage entity was skipped; every other change is applied"
        );
    }
    if !report.etag_mismatches.is_empty() {
        let examples: Vec<String> = report
            .etag_mismatches
            .iter()
            .take(5)
            .map(|m| {
                let etag = |e: &Option<String>| excerpt(e.as_deref().unwrap_or("none"), 80);
                format!(
                    "{} (listed {}, fetched {})",
                    m.entity_ref,
                    etag(&m.listed),
                    etag(&m.fetched)
                )
            })
            .collect();
        tracing::warn!(
            event = "etag_mismatch",
            count = report.etag_mismatches.len(),
            examples = %examples.join(", "),
            "the listing and by-refs disagree on etags; while they do, these entities are fetched again on every poll"
        );
    }
    let lines: Vec<String> = report.skipped.iter().map(|s| s.to_string()).collect();
    publisher.status.send_modify(|s| {
        for skipped in &report.skipped {
            s.entities_skipped.add(skipped.reason);
        }
        s.etag_mismatches += report.etag_mismatches.len() as u64;
        s.skipped = lines;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::catalog::entity::component as entity;

    /// A catalog reloaded unchanged (a file catalog on SIGHUP) is compared by value,
    /// entity by entity: that runs on the blocking pool, never on the only worker.
    #[test]
    fn the_published_catalog_is_compared_off_the_workers() {
        let rt = crate::server::runtime(1).unwrap();
        let (snapshots, _rx) = watch::channel(None);
        let (status, _status_rx) = watch::channel(CatalogStatus::new(SourceKind::File));
        let publisher = Publisher { snapshots, status };
        let copy = || vec![entity("a", "1"), entity("b", "1")];
        // On a worker, as the runner is (block_on would run it on this thread).
        let (publisher, worker) = rt
            .block_on(rt.spawn(async move {
                assert!(publisher.publish(copy(), Origin::File, 1).await);
                assert!(!publisher.publish(copy(), Origin::File, 2).await);
                let changed = vec![entity("a", "2")];
                assert!(publisher.publish(changed, Origin::File, 3).await);
                (publisher, std::thread::current().id())
            }))
            .unwrap();
        let on = COMPARED_ON.lock().unwrap().clone();
        assert!(on.len() >= 2, "{on:?}");
        assert!(!on.contains(&worker), "compared on the worker");
        let published = publisher.snapshots.borrow().clone().unwrap();
        assert_eq!(published.entities, [entity("a", "2")]);
    }

    /// The published list is replaced only when an entity, its place or the count
    /// differs; a shared `Arc` and an equal copy are the same entity.
    #[test]
    fn entity_lists_are_the_same_by_pointer_or_by_value() {
        let (a, b) = (entity("a", "1"), entity("b", "1"));
        let published = vec![a.clone(), b.clone()];
        assert!(same_entities(&published, &[a.clone(), b.clone()]));
        assert!(same_entities(&published, &[entity("a", "1"), b.clone()]));
        assert!(!same_entities(&published, &[entity("a", "2"), b.clone()]));
        assert!(!same_entities(&published, &[b.clone(), a.clone()]));
        assert!(!same_entities(&published, std::slice::from_ref(&a)));
        assert!(!same_entities(&published, &[a, b, entity("c", "1")]));
        assert!(same_entities(&[], &[]));
    }
}
