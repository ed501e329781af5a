//! Beside the request flow: the process around it. What `serve`, `decide` and
//! `policy show` share to start (the token verifier, and the catalog with the policy
//! built from it, which callers can await until ready), and the one owner of the
//! process's signals: SIGINT/SIGTERM start the graceful drain, SIGHUP reloads the
//! catalog, once.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::catalog::CatalogError;
use crate::catalog::source::{CatalogHandle, CatalogSnapshot, CatalogSource, Reloader};
use crate::config::Config;
use crate::policy::{Policy, Unmatched};
use crate::token::{IssuerConfig, Verifier};

/// Why the agent, or a one-shot command, could not start (exit code 1; config errors
/// are caught before).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("token verifier: {0}")]
    Verifier(#[from] crate::token::VerifierError),
    #[error("catalog: {0}")]
    Catalog(#[from] CatalogError),
    #[error("browser sign-in: {0}")]
    Sso(#[source] crate::config::ConfigError),
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    #[error("browser sign-in: {0}")]
    SsoClient(#[source] crate::token::fetch::FetchError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// Starts the verifier: one key-set task per issuer, first fetch right away.
pub fn start_verifier(cfg: &Config) -> Result<Verifier, StartError> {
    Ok(Verifier::start(resolved_issuers(cfg), cfg.token)?)
}

/// Browser sign-in when `[sso]` is configured: the keys and secret read, and the flow
/// over the verifier (whose key set for the `[sso]` issuer verifies ID tokens). The
/// agent opens session cookies with the [`crate::sso::Sso`]; the listener serves the flow.
pub fn start_sso(
    cfg: &Config,
    verifier: &Verifier,
    policy: &PolicyHandle,
) -> Result<Option<Arc<crate::sso::flow::Flow>>, StartError> {
    let Some(sso_cfg) = &cfg.sso else {
        return Ok(None);
    };
    let sso = crate::sso::Sso::new(sso_cfg, &cfg.base_dir).map_err(StartError::Sso)?;
    let client = crate::token::fetch::http_client().map_err(StartError::SsoClient)?;
    let mut flow = crate::sso::flow::Flow::new(Arc::new(sso), verifier.clone(), client, cfg);
    // Too many groups for a session cookie: keep those the policy of the moment uses
    // (a group it starts to use later counts after the next sign-in).
    let current = policy.current();
    flow.group_filter = Some(Arc::new(move |g: &str| {
        current.load().as_deref().is_some_and(|p| p.uses_group(g))
    }));
    Ok(Some(Arc::new(flow)))
}

/// Issuer configs with `jwks_file` resolved against the config file's directory.
fn resolved_issuers(cfg: &Config) -> Vec<IssuerConfig> {
    let mut issuers = cfg.issuers.clone();
    for iss in &mut issuers {
        if let Some(f) = &iss.jwks_file {
            iss.jwks_file = Some(cfg.resolve(f).to_string_lossy().into_owned());
        }
    }
    issuers
}

/// The policy built from the catalog. The request path loads [`PolicyHandle::current`]
/// (lock-free, once per request); start-up awaits [`PolicyHandle::ready`].
#[derive(Debug, Clone)]
pub struct PolicyHandle {
    current: Arc<ArcSwapOption<Policy>>,
    published: watch::Receiver<Option<Arc<Policy>>>,
}

impl PolicyHandle {
    /// The slot the agent and the metrics read: `None` until the first build.
    pub fn current(&self) -> Arc<ArcSwapOption<Policy>> {
        self.current.clone()
    }

    /// The current policy once there is one; `None` if the builder stopped before
    /// building any (shutdown).
    pub async fn ready(&self) -> Option<Arc<Policy>> {
        let mut published = self.published.clone();
        published.wait_for(Option::is_some).await.ok()?.clone()
    }
}

/// Starts the catalog source and the policy builder on the current runtime; both
/// stop when `shutdown` is cancelled.
pub fn start_catalog(
    cfg: &Config,
    shutdown: CancellationToken,
) -> Result<(CatalogHandle, PolicyHandle), StartError> {
    let catalog = CatalogSource::start(&cfg.catalog, &cfg.base_dir, shutdown.clone())?;
    let policy = spawn_policy_builder(catalog.snapshots(), cfg.policy.unmatched, shutdown);
    Ok((catalog, policy))
}

/// Rebuilds the policy on every catalog change, off the request path, and publishes
/// it: the swap slot first, so whoever [`PolicyHandle::ready`] wakes reads it there.
fn spawn_policy_builder(
    mut snapshots: watch::Receiver<Option<Arc<CatalogSnapshot>>>,
    unmatched: Unmatched,
    shutdown: CancellationToken,
) -> PolicyHandle {
    let current = Arc::new(ArcSwapOption::empty());
    let (publish, published) = watch::channel(None);
    let slot = current.clone();
    tokio::spawn(async move {
        loop {
            let snap = snapshots.borrow_and_update().clone();
            if let Some(snap) = snap {
                let entities = snap.clone();
                let built = tokio::task::spawn_blocking(move || {
                    Policy::build(&entities.entities, unmatched)
                })
                .await;
                match built {
                    Ok(p) => {
                        log_build(&p, &snap);
                        let p = Arc::new(p);
                        let replaced = slot.swap(Some(p.clone()));
                        drop(publish.send_replace(Some(p)));
                        // Freeing a policy of 250,000 routes held the worker ~200 ms.
                        if let Some(replaced) = replaced {
                            crate::offload::release_off_worker(replaced);
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "policy build failed; keeping the previous policy")
                    }
                }
                // The catalog may have been replaced during the build: this can be the
                // last reference to it.
                crate::offload::drop_off_worker(snap);
            }
            tokio::select! {
                r = snapshots.changed() => if r.is_err() { return },
                () = shutdown.cancelled() => return,
            }
        }
    });
    PolicyHandle { current, published }
}

/// Logs what a build found (annotation errors, conflicts, unknown principals).
fn log_build(p: &Policy, snap: &CatalogSnapshot) {
    for e in p.errors() {
        tracing::warn!(event = "annotation_error", error = %e, "catalog annotation error");
    }
    for c in p.conflicts() {
        tracing::warn!(event = "policy_conflict", conflict = %c, "route conflict");
    }
    for u in p.unknown_principals() {
        tracing::warn!(event = "unknown_principal", entity = %u.entity, principal = %u.principal, "{u}");
    }
    tracing::info!(
        event = "catalog_applied",
        origin = ?snap.origin,
        entities = p.entity_count(),
        routes = p.route_count(),
        annotation_errors = p.errors().len(),
        conflicts = p.conflicts().len(),
        unknown_principals = p.unknown_principals().len(),
        "policy rebuilt"
    );
}

/// The process's only signal handlers: SIGINT/SIGTERM cancel `shutdown` (the server
/// then drains), SIGHUP reloads the catalog. Nothing else listens, so one SIGHUP is
/// one reload.
pub struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    /// Installs the handlers; from here on these signals no longer kill the process.
    pub fn install() -> Result<Signals, StartError> {
        let install = |kind| signal(kind).map_err(StartError::Signals);
        Ok(Signals {
            term: install(SignalKind::terminate())?,
            int: install(SignalKind::interrupt())?,
            hup: install(SignalKind::hangup())?,
        })
    }

    /// Serves signals until SIGINT or SIGTERM, then cancels `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken, catalog: Reloader) {
        loop {
            tokio::select! {
                _ = self.term.recv() => break,
                _ = self.int.recv() => break,
                _ = self.hup.recv() => {
                    tracing::info!(event = "reload", "SIGHUP: reloading the catalog");
                    catalog.reload();
                }
            }
        }
        tracing::info!(event = "shutdown", "signal received: draining");
        shutdown.cancel();
    }
}
