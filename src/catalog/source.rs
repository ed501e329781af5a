//! The catalog runner: owns the refresh of the configured source and publishes each
//! new entity set as an immutable [`CatalogSnapshot`] on a `watch` channel. The policy
//! side rebuilds when the channel changes and swaps its policy atomically, so
//! requests never wait on a sync.
//!
//! - `file`: loads at start, then every `reload_seconds` compares the matched files'
//!   mtimes and sizes (and the set of matched files) and reloads on a difference;
//!   SIGHUP or [`CatalogHandle::reload`] force a reload. A load runs in a blocking
//!   task with a deadline ([`FILE_LOAD_DEADLINE`]): past it the load is abandoned and
//!   counted as failed, so neither `serve` nor `policy show` waits on a parse. An
//!   abandoned load may still be running; no other starts until it ends, and files
//!   unchanged since an abandoned load are not tried again until they change or a
//!   reload is forced.
//! - `backstage`: syncs at start, then every `poll_seconds`; after a failure the next
//!   attempt waits `poll_seconds × 2^failures` (capped at max(poll, 5 min)), with up
//!   to 10% jitter so a fleet of agents does not poll in lockstep. SIGHUP or
//!   [`CatalogHandle::reload`] poll at once. If the first sync fails, the snapshot
//!   file is loaded and served (origin [`Origin::Snapshot`]) and seeds the etag diff.
//!   Every applied sync rewrites the snapshot file. A whole sync (all pages and
//!   fetches) is abandoned after 5 minutes, on top of the per-request timeouts. What a
//!   sync skipped (entities that do not parse or are too large) and etag mismatches
//!   are logged, and counted in [`CatalogStatus`] for the metrics.
//!
//! A failed load or sync never replaces what is published; it is counted in
//! [`CatalogStatus`] and logged. A result equal to the published one is not
//! republished.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use super::backstage::{Client, Limits, SkipReason, SyncOutcome, SyncReport, Syncer, excerpt};
use super::config::{CatalogConfig, SourceKind};
use super::entity::Entity;
use super::error::CatalogError;
use super::{file, snapshot};

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
    /// Sorted by entity ref.
    pub entities: Vec<Entity>,
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

    /// Waits for the runner to finish (after the shutdown token is cancelled).
    pub async fn stopped(self) {
        let _ = self.task.await;
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
        let (status_tx, status) = watch::channel(CatalogStatus {
            source: config.source,
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
        });
        let publisher = Publisher {
            snapshots: snapshot_tx,
            status: status_tx,
        };
        let reload = Arc::new(Notify::new());
        let triggers = Triggers {
            reload: reload.clone(),
            hangup: hangup_signal(),
            shutdown,
        };
        let task = match config.source {
            SourceKind::File => tokio::spawn(run_file(
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
                tokio::spawn(run_backstage(
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

fn hangup_signal() -> Option<Signal> {
    match signal(SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; catalog reload on SIGHUP disabled");
            None
        }
    }
}

/// What ends a wait between two refreshes.
struct Triggers {
    reload: Arc<Notify>,
    hangup: Option<Signal>,
    shutdown: CancellationToken,
}

enum Wake {
    Timer,
    Forced,
    Shutdown,
}

impl Triggers {
    async fn wait(&mut self, delay: Duration) -> Wake {
        let hangup = async {
            match &mut self.hangup {
                Some(signal) => signal.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = self.shutdown.cancelled() => Wake::Shutdown,
            _ = tokio::time::sleep(delay) => Wake::Timer,
            _ = self.reload.notified() => Wake::Forced,
            _ = hangup => Wake::Forced,
        }
    }
}

struct Publisher {
    snapshots: watch::Sender<Option<Arc<CatalogSnapshot>>>,
    status: watch::Sender<CatalogStatus>,
}

impl Publisher {
    /// Publishes `entities` unless the same set from the same origin is published;
    /// true if it was published.
    fn publish(&self, entities: Vec<Entity>, origin: Origin, confirmed_unix: i64) -> bool {
        let count = entities.len();
        // Status first: whoever sees the new snapshot also sees its status.
        self.status.send_modify(|s| {
            s.origin = Some(origin);
            s.entities = count;
            s.last_good_sync_unix = Some(confirmed_unix);
            s.consecutive_errors = 0;
            s.last_error = None;
        });
        self.snapshots.send_if_modified(|current| {
            if current
                .as_ref()
                .is_some_and(|c| c.origin == origin && c.entities == entities)
            {
                return false;
            }
            *current = Some(Arc::new(CatalogSnapshot {
                entities,
                origin,
                loaded_at_unix: now_unix(),
            }));
            true
        })
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

/// What one file-source attempt found.
enum FileAttempt {
    /// The files are what was loaded last.
    Unchanged,
    /// The files are what an abandoned load was given; not tried again unforced.
    StillRefused,
    Loaded(file::Fingerprint, file::Loaded),
}

async fn run_file(
    patterns: Vec<String>,
    base_dir: PathBuf,
    interval: Duration,
    deadline: Duration,
    publisher: Publisher,
    mut triggers: Triggers,
) {
    let mut loaded_fingerprint: Option<file::Fingerprint> = None;
    // The fingerprint an abandoned load was given, and that load if still running.
    let mut timed_out: Option<file::Fingerprint> = None;
    let mut abandoned: Option<tokio::task::JoinHandle<()>> = None;
    let mut forced = true;
    loop {
        let attempt = if abandoned.as_ref().is_some_and(|t| !t.is_finished()) {
            if forced {
                tracing::warn!(
                    "the previous catalog load, abandoned after its deadline, is still running; not starting another"
                );
            }
            Ok(FileAttempt::StillRefused)
        } else {
            abandoned = None;
            load_files(
                &patterns,
                &base_dir,
                deadline,
                forced,
                &loaded_fingerprint,
                &mut timed_out,
                &mut abandoned,
            )
            .await
        };
        match attempt {
            Ok(FileAttempt::Unchanged) => {
                // The files are back to what was loaded: an earlier failure is over.
                publisher.status.send_if_modified(|s| {
                    let recovered = s.consecutive_errors > 0;
                    s.consecutive_errors = 0;
                    s.last_error = None;
                    recovered
                });
            }
            Ok(FileAttempt::StillRefused) => {}
            Ok(FileAttempt::Loaded(fingerprint, loaded)) => {
                for problem in &loaded.skipped {
                    tracing::warn!(error = %problem, "catalog document skipped");
                }
                let skipped: Vec<String> = loaded.skipped.iter().map(|e| e.to_string()).collect();
                let count = skipped.len();
                // Status first: whoever sees the new catalog sees what it left out.
                publisher.status.send_modify(|s| {
                    s.skipped_documents = count;
                    s.skipped = skipped;
                });
                let entities = loaded.entities.len();
                let republished = publisher.publish(loaded.entities, Origin::File, now_unix());
                publisher.count(|c| {
                    if republished {
                        c.applied += 1
                    } else {
                        c.unchanged += 1
                    }
                });
                loaded_fingerprint = Some(fingerprint);
                tracing::info!(
                    entities,
                    skipped = count,
                    republished,
                    "catalog files loaded"
                );
            }
            Err(error) => {
                publisher.failed(&error);
            }
        }
        forced = match triggers.wait(interval).await {
            Wake::Shutdown => return,
            Wake::Timer => false,
            Wake::Forced => true,
        };
    }
}

/// One attempt of the file source: the cheap fingerprint first, then (when the files
/// changed or `forced`) the load, in blocking tasks; the load is abandoned after
/// `deadline` and left in `abandoned`.
async fn load_files(
    patterns: &[String],
    base_dir: &Path,
    deadline: Duration,
    forced: bool,
    loaded: &Option<file::Fingerprint>,
    timed_out: &mut Option<file::Fingerprint>,
    abandoned: &mut Option<tokio::task::JoinHandle<()>>,
) -> Result<FileAttempt, CatalogError> {
    let join_error = |e: tokio::task::JoinError| CatalogError::Io {
        path: base_dir.to_owned(),
        source: std::io::Error::other(e.to_string()),
    };
    let (p, b) = (patterns.to_vec(), base_dir.to_owned());
    let fingerprint = tokio::task::spawn_blocking(move || file::fingerprint(&p, &b))
        .await
        .map_err(join_error)??;
    if !forced && loaded.as_ref() == Some(&fingerprint) {
        return Ok(FileAttempt::Unchanged);
    }
    if !forced && timed_out.as_ref() == Some(&fingerprint) {
        return Ok(FileAttempt::StillRefused);
    }
    let (p, b) = (patterns.to_vec(), base_dir.to_owned());
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::task::spawn_blocking(move || {
        let _ = tx.send(file::load_report(&p, &b));
    });
    match tokio::time::timeout(deadline, rx).await {
        Ok(Ok(result)) => {
            *timed_out = None;
            Ok(FileAttempt::Loaded(fingerprint, result?))
        }
        // The sender was dropped unsent: the load panicked.
        Ok(Err(_)) => Err(match task.await {
            Err(e) => join_error(e),
            Ok(()) => CatalogError::Io {
                path: base_dir.to_owned(),
                source: std::io::Error::other("the load ended without a result"),
            },
        }),
        Err(_) => {
            *timed_out = Some(fingerprint);
            *abandoned = Some(task);
            Err(CatalogError::LoadTimeout {
                seconds: deadline.as_secs().max(1),
            })
        }
    }
}

async fn run_backstage(
    mut syncer: Syncer,
    snapshot_path: Option<PathBuf>,
    poll: Duration,
    publisher: Publisher,
    mut triggers: Triggers,
) {
    // The snapshot file seeds the syncer before the first poll, published or not: the
    // first sync then fetches only entities whose etag changed since, and the wipe-out
    // guard covers a Backstage that answers empty at first contact (one still
    // ingesting its locations after a restart) as it covers one that empties later.
    // The snapshot is served when that first contact fails or is held back.
    let mut fallback = match &snapshot_path {
        Some(path) => load_snapshot(path).await,
        None => None,
    };
    if let Some(saved) = &fallback {
        syncer.seed(saved.entities.clone());
    }
    loop {
        // A sync changes the syncer only after its last await: cancelling is safe.
        let result = tokio::select! {
            _ = triggers.shutdown.cancelled() => return,
            result = tokio::time::timeout(SYNC_DEADLINE, syncer.sync_once()) => {
                result.unwrap_or_else(|_| Err(CatalogError::Http {
                    url: "(whole sync)".to_owned(),
                    reason: format!("not done within {SYNC_DEADLINE:?}"),
                }))
            }
        };
        if result.is_ok() {
            note_report(&publisher, syncer.report());
        }
        let mut errors = 0;
        match result {
            Ok(SyncOutcome::Applied {
                entities,
                fetched,
                removed,
            }) => {
                tracing::info!(
                    entities = entities.len(),
                    fetched,
                    removed,
                    "catalog synced from Backstage"
                );
                publisher.count(|c| c.applied += 1);
                publish_live(&publisher, entities, snapshot_path.as_deref()).await;
            }
            Ok(SyncOutcome::Unchanged) => {
                publisher.count(|c| c.unchanged += 1);
                if publisher.origin() == Some(Origin::Live) {
                    publisher.status.send_modify(|s| {
                        s.last_good_sync_unix = Some(now_unix());
                        s.consecutive_errors = 0;
                        s.last_error = None;
                    });
                } else {
                    // First contact, and Backstage has what the snapshot had (or is empty).
                    publish_live(&publisher, syncer.entities(), snapshot_path.as_deref()).await;
                }
            }
            Ok(SyncOutcome::Held { consecutive }) => {
                tracing::warn!(
                    consecutive,
                    needed = super::backstage::WIPE_CONFIRMATIONS,
                    "Backstage returned no routable entity; not applied until it repeats"
                );
                publisher.count(|c| c.held += 1);
                if let Some(saved) = fallback.take() {
                    serve_snapshot(&publisher, saved, "Backstage has no routable entity yet");
                }
                publisher.status.send_modify(|s| {
                    s.consecutive_errors = 0;
                    s.last_error = None;
                });
            }
            Err(error) => {
                // The snapshot first: whoever sees the failure sees what is served.
                if let Some(saved) = fallback.take() {
                    serve_snapshot(&publisher, saved, "Backstage unreachable");
                }
                errors = publisher.failed(&error);
            }
        }
        if publisher.has_snapshot() {
            fallback = None;
        }
        let delay = if errors == 0 {
            poll
        } else {
            backoff(poll, errors)
        };
        if let Wake::Shutdown = triggers.wait(delay).await {
            return;
        }
    }
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

async fn publish_live(publisher: &Publisher, entities: Vec<Entity>, snapshot_path: Option<&Path>) {
    let now = now_unix();
    if let Some(path) = snapshot_path {
        let (path, copy) = (path.to_owned(), entities.clone());
        let saved = tokio::task::spawn_blocking(move || snapshot::save(&path, &copy, now)).await;
        match saved {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "cannot write the catalog snapshot"),
            Err(error) => tracing::warn!(%error, "cannot write the catalog snapshot"),
        }
    }
    publisher.publish(entities, Origin::Live, now);
}

/// The snapshot file, if there is a usable one (a missing file is normal on a first
/// start; anything else is logged).
async fn load_snapshot(path: &Path) -> Option<snapshot::SavedSnapshot> {
    let owned = path.to_owned();
    match tokio::task::spawn_blocking(move || snapshot::load(&owned)).await {
        Ok(Ok(saved)) => Some(saved),
        Ok(Err(error)) => {
            if path.exists() {
                tracing::warn!(%error, "no usable catalog snapshot");
            }
            None
        }
        Err(error) => {
            tracing::warn!(%error, "no usable catalog snapshot");
            None
        }
    }
}

/// Serves the snapshot file's catalog (nothing live has been published yet).
fn serve_snapshot(publisher: &Publisher, saved: snapshot::SavedSnapshot, why: &str) {
    tracing::warn!(
        reason = why,
        entities = saved.entities.len(),
        saved_at_unix = saved.saved_at_unix,
        "serving the last good catalog snapshot"
    );
    let errors = publisher.status.borrow().consecutive_errors;
    let last_error = publisher.status.borrow().last_error.clone();
    publisher.publish(saved.entities, Origin::Snapshot, saved.saved_at_unix);
    // Serving a snapshot does not make Backstage reachable.
    publisher.status.send_modify(|s| {
        s.consecutive_errors = errors;
        s.last_error = last_error;
    });
}

/// `poll × 2^errors`, capped at max(poll, 5 min), minus up to 10% jitter.
fn backoff(poll: Duration, errors: u32) -> Duration {
    let cap = poll.max(Duration::from_secs(300));
    let delay = poll.saturating_mul(1 << errors.min(16)).min(cap);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    delay - delay / 10 * (nanos % 1000) / 1000
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let poll = Duration::from_secs(30);
        for (errors, nominal) in [(1, 60), (2, 120), (3, 240), (4, 300), (40, 300)] {
            let d = backoff(poll, errors);
            let nominal = Duration::from_secs(nominal);
            assert!(
                d <= nominal && d >= nominal - nominal / 10,
                "{errors}: {d:?}"
            );
        }
        let long = Duration::from_secs(600);
        assert!(backoff(long, 3) <= long && backoff(long, 3) >= long - long / 10);
    }
}
