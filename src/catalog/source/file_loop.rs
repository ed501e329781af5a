//! Beside the request flow, under [`super`]: the file source's loop. It checks the
//! matched files' fingerprint on every tick and loads them (in a blocking task, with
//! a deadline) when they changed or a reload is forced, then publishes the entities.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::super::error::CatalogError;
use super::super::file;
use super::{Origin, Publisher, Triggers, Wake};
use crate::clock::unix_now;

/// What one file-source attempt found.
enum FileAttempt {
    /// The files are what was loaded last.
    Unchanged,
    /// The files are what an abandoned load was given; not tried again unforced.
    StillRefused,
    Loaded(file::Fingerprint, file::Loaded),
}

pub(super) async fn run_file(
    patterns: Vec<String>,
    base_dir: PathBuf,
    interval: Duration,
    deadline: Duration,
    publisher: Publisher,
    triggers: Triggers,
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
                publish_loaded(&publisher, loaded).await;
                loaded_fingerprint = Some(fingerprint);
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

/// Publishes a load (unless it is what is published), with what it left out.
async fn publish_loaded(publisher: &Publisher, loaded: file::Loaded) {
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
    let shared = loaded.entities.into_iter().map(Arc::new).collect();
    let republished = publisher.publish(shared, Origin::File, unix_now()).await;
    publisher.count(|c| {
        if republished {
            c.applied += 1
        } else {
            c.unchanged += 1
        }
    });
    tracing::info!(
        entities,
        skipped = count,
        republished,
        "catalog files loaded"
    );
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
