//! Beside the request flow, under [`super`]: the Backstage source's loop. It syncs,
//! publishes what changed (and rewrites the snapshot file), serves the snapshot file
//! while Backstage cannot be reached or has nothing routable yet, and backs off
//! after failures.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use super::super::backstage::{SyncOutcome, Syncer};
use super::super::entity::Entity;
use super::super::error::CatalogError;
use super::super::snapshot;
use super::{Origin, Publisher, SYNC_DEADLINE, Triggers, Wake, note_report};
use crate::clock::unix_now;

pub(super) async fn run_backstage(
    mut syncer: Syncer,
    snapshot_path: Option<PathBuf>,
    poll: Duration,
    publisher: Publisher,
    triggers: Triggers,
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
        syncer.seed(saved.entities.iter().cloned());
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
        let errors = apply_sync(
            &publisher,
            &syncer,
            result,
            &mut fallback,
            snapshot_path.as_deref(),
        )
        .await;
        if publisher.has_snapshot() {
            // It may hold the last reference to every seeded entity Backstage changed.
            crate::offload::drop_off_worker(fallback.take());
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

/// Publishes and counts what one sync found, serving the snapshot file (`fallback`)
/// when nothing live can be; returns the consecutive failures, for the backoff.
async fn apply_sync(
    publisher: &Publisher,
    syncer: &Syncer,
    result: Result<SyncOutcome, CatalogError>,
    fallback: &mut Option<Fallback>,
    snapshot_path: Option<&Path>,
) -> u32 {
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
            publish_live(publisher, entities, snapshot_path).await;
            0
        }
        Ok(SyncOutcome::Unchanged) => {
            publisher.count(|c| c.unchanged += 1);
            if publisher.origin() == Some(Origin::Live) {
                publisher.status.send_modify(|s| {
                    s.last_good_sync_unix = Some(unix_now());
                    s.consecutive_errors = 0;
                    s.last_error = None;
                });
            } else {
                // First contact, and Backstage has what the snapshot had (or is empty).
                publish_live(publisher, syncer.entities(), snapshot_path).await;
            }
            0
        }
        Ok(SyncOutcome::Held { consecutive }) => {
            tracing::warn!(
                consecutive,
                needed = super::super::backstage::WIPE_CONFIRMATIONS,
                "Backstage returned no routable entity; not applied until it repeats"
            );
            publisher.count(|c| c.held += 1);
            if let Some(saved) = fallback.take() {
                serve_snapshot(publisher, saved, "Backstage has no routable entity yet").await;
            }
            publisher.status.send_modify(|s| {
                s.consecutive_errors = 0;
                s.last_error = None;
            });
            0
        }
        Err(error) => {
            // The snapshot first: whoever sees the failure sees what is served.
            if let Some(saved) = fallback.take() {
                serve_snapshot(publisher, saved, "Backstage unreachable").await;
            }
            publisher.failed(&error)
        }
    }
}
async fn publish_live(
    publisher: &Publisher,
    entities: Vec<Arc<Entity>>,
    snapshot_path: Option<&Path>,
) {
    let now = unix_now();
    if let Some(path) = snapshot_path {
        let (path, copy) = (path.to_owned(), entities.clone());
        let saved = tokio::task::spawn_blocking(move || snapshot::save(&path, &copy, now)).await;
        match saved {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "cannot write the catalog snapshot"),
            Err(error) => tracing::warn!(%error, "cannot write the catalog snapshot"),
        }
    }
    publisher.publish(entities, Origin::Live, now).await;
}

/// The snapshot file, if there is a usable one (a missing file is normal on a first
/// start; anything else is logged).
async fn load_snapshot(path: &Path) -> Option<Fallback> {
    let owned = path.to_owned();
    match tokio::task::spawn_blocking(move || snapshot::load(&owned)).await {
        Ok(Ok(saved)) => Some(Fallback {
            entities: saved.entities.into_iter().map(Arc::new).collect(),
            saved_at_unix: saved.saved_at_unix,
        }),
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

/// The snapshot file's catalog; its entities are shared with the syncer's seed.
struct Fallback {
    entities: Vec<Arc<Entity>>,
    saved_at_unix: i64,
}

/// Serves the snapshot file's catalog (nothing live has been published yet).
async fn serve_snapshot(publisher: &Publisher, saved: Fallback, why: &str) {
    tracing::warn!(
        reason = why,
        entities = saved.entities.len(),
        saved_at_unix = saved.saved_at_unix,
        "serving the last good catalog snapshot"
    );
    let errors = publisher.status.borrow().consecutive_errors;
    let last_error = publisher.status.borrow().last_error.clone();
    publisher
        .publish(saved.entities, Origin::Snapshot, saved.saved_at_unix)
        .await;
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
    let nanos = crate::clock::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    delay - delay / 10 * (nanos % 1000) / 1000
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
