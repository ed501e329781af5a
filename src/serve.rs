//! The agent process: configuration in, every part started, SPOP served until a
//! signal. Keys and catalog load in the background; the policy snapshot is rebuilt
//! off the request path whenever the catalog changes and swapped atomically.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::admin::{self, AdminState};
use crate::agent::{Agent, AgentSettings};
use crate::catalog::source::{CatalogHandle, CatalogSnapshot, CatalogSource};
use crate::config::Config;
use crate::connection::EngineStats;
use crate::decision_log::DecisionLog;
use crate::metrics::{Metrics, Sources};
use crate::policy::{Mode, Policy};
use crate::token::Verifier;

/// Why the agent could not start (exit code 1; config errors are caught before).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("token verifier: {0}")]
    Verifier(String),
    #[error("catalog: {0}")]
    Catalog(String),
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// Issuer configs with `jwks_file` resolved against the config file's directory.
pub fn resolved_issuers(cfg: &Config) -> Vec<crate::token::IssuerConfig> {
    let mut issuers = cfg.issuers.clone();
    for iss in &mut issuers {
        if let Some(f) = &iss.jwks_file {
            iss.jwks_file = Some(cfg.resolve(f).to_string_lossy().into_owned());
        }
    }
    issuers
}

/// Rebuilds the policy on every catalog change and publishes it; logs what the
/// build found (annotation errors, conflicts).
pub fn spawn_policy_builder(
    mut snapshots: watch::Receiver<Option<Arc<CatalogSnapshot>>>,
    policy: Arc<ArcSwapOption<Policy>>,
    unmatched: crate::policy::Unmatched,
    shutdown: CancellationToken,
) {
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
                        policy.store(Some(Arc::new(p)));
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "policy build failed; keeping the previous policy")
                    }
                }
            }
            tokio::select! {
                r = snapshots.changed() => if r.is_err() { return },
                () = shutdown.cancelled() => return,
            }
        }
    });
}

/// Starts the catalog source and the policy builder.
pub fn start_catalog(
    cfg: &Config,
    policy: Arc<ArcSwapOption<Policy>>,
    shutdown: CancellationToken,
) -> Result<CatalogHandle, StartError> {
    let handle = CatalogSource::start(&cfg.catalog, &cfg.base_dir, shutdown.clone())
        .map_err(|e| StartError::Catalog(e.to_string()))?;
    spawn_policy_builder(handle.snapshots(), policy, cfg.policy.unmatched, shutdown);
    Ok(handle)
}

/// Runs the agent until SIGINT/SIGTERM; returns after a graceful drain.
pub async fn run(cfg: Config) -> Result<(), StartError> {
    let shutdown = CancellationToken::new();
    tracing::info!(
        event = "start",
        version = env!("CARGO_PKG_VERSION"),
        listen = %cfg.agent.listen,
        admin = ?cfg.admin.listen,
        issuers = cfg.issuers.len(),
        catalog = ?cfg.catalog.source,
        mode = ?cfg.policy.mode,
        "stagedoor starting"
    );
    admin::raise_fd_limit();

    // Signal handlers first: without them SIGTERM would kill the agent undrained.
    let signals = Signals::install().map_err(StartError::Signals)?;
    let verifier = Verifier::start(resolved_issuers(&cfg), cfg.token)
        .map_err(|e| StartError::Verifier(e.to_string()))?;
    let policy: Arc<ArcSwapOption<Policy>> = Arc::new(ArcSwapOption::empty());
    let catalog = start_catalog(&cfg, policy.clone(), shutdown.clone())?;

    let listener = TcpListener::bind(cfg.agent.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: cfg.agent.listen,
            source,
        })?;
    let admin_listener = match cfg.admin.listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind { addr, source })?,
        ),
        None => None,
    };

    let metrics = Arc::new(Metrics::new());
    let engine = Arc::new(EngineStats::default());
    let decision_log = Arc::new(DecisionLog::new(
        cfg.log.decisions,
        cfg.log.allow_sample_rate,
        Box::new(std::io::stdout()),
    ));
    let final_flush = decision_log.clone();
    let log_dropped = decision_log.dropped.clone();
    let observer_metrics = metrics.clone();
    let agent = Arc::new(Agent {
        verifier: verifier.clone(),
        policy: policy.clone(),
        settings: AgentSettings {
            message: cfg.agent.message.clone(),
            realm: cfg.agent.realm.clone(),
            mode: cfg.policy.mode,
        },
        observer: Box::new(move |req, outcome, latency| {
            observer_metrics.record_decision(
                outcome.decision.reason,
                !outcome.shadow,
                latency.as_secs_f64(),
            );
            decision_log.record(req, outcome, latency);
        }),
    });
    if cfg.policy.mode == Mode::Shadow {
        tracing::warn!(
            event = "shadow_mode",
            "policy mode is shadow: every request is let through"
        );
    }

    if let Some(l) = admin_listener {
        let state = Arc::new(AdminState {
            metrics: metrics.clone(),
            sources: Sources {
                engine: engine.clone(),
                verifier: verifier.clone(),
                catalog: Some(catalog.status()),
                policy: policy.clone(),
                log_dropped: log_dropped.clone(),
            },
        });
        tokio::spawn(admin::serve(l, state, shutdown.clone()));
    }

    tokio::spawn(signals.run(shutdown.clone(), catalog));

    crate::server::run(
        listener,
        agent,
        cfg.agent.engine(),
        cfg.agent.max_connections,
        engine,
        shutdown.clone(),
    )
    .await;
    tracing::info!(event = "shutdown", "stagedoor stopped");
    final_flush.flush();
    Ok(())
}

/// SIGINT/SIGTERM cancel `shutdown`; SIGHUP reloads the catalog.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    async fn run(mut self, shutdown: CancellationToken, catalog: CatalogHandle) {
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
