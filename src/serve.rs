//! The agent process: configuration in, every part started, SPOP served until a
//! signal. Keys and catalog load in the background; the policy snapshot is rebuilt
//! off the request path whenever the catalog changes and swapped atomically
//! ([`crate::lifecycle`] starts both and owns the signals).

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;

use crate::admin::{self, AdminState};
use crate::agent::{Agent, AgentSettings};
use crate::config::Config;
use crate::connection::EngineStats;
use crate::decision_log::DecisionLog;
use crate::lifecycle::{self, PolicyHandle, Signals};
use crate::metrics::{Metrics, Sources};
use crate::policy::Mode;
use crate::sso::Sso;
use crate::token::Verifier;

pub use crate::lifecycle::StartError;

/// Runs the agent until SIGINT/SIGTERM; returns after a graceful drain.
pub async fn run(cfg: Config) -> Result<(), StartError> {
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
    let signals = Signals::install()?;
    let shutdown = CancellationToken::new();
    let verifier = lifecycle::start_verifier(&cfg)?;
    let (catalog, policy) = lifecycle::start_catalog(&cfg, shutdown.clone())?;
    let (listener, admin_listener) = bind(&cfg).await?;
    // Browser sign-in (`[sso]`): its own listener; the agent opens session cookies
    // with the same keys.
    let flow = lifecycle::start_sso(&cfg, &verifier, &policy)?;
    let sso = flow.as_ref().map(|f| f.sso.clone());
    if let Some(flow) = flow {
        let addr = flow.sso.cfg.listen;
        let l = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        tracing::info!(event = "sso_listening", listen = %addr, "browser sign-in listener");
        tokio::spawn(crate::sso::listener::serve(l, flow, shutdown.clone()));
    }

    let metrics = Arc::new(Metrics::new());
    let engine = Arc::new(EngineStats::default());
    let decision_log = Arc::new(
        DecisionLog::new(
            cfg.log.decisions,
            cfg.log.allow_sample_rate,
            Box::new(std::io::stdout()),
        )
        .with_identity(cfg.log.identity),
    );
    let agent = agent(
        &cfg,
        sso.clone(),
        verifier.clone(),
        &policy,
        metrics.clone(),
        decision_log.clone(),
    );
    if let Some(l) = admin_listener {
        let state = Arc::new(AdminState {
            metrics,
            sources: Sources {
                engine: engine.clone(),
                verifier,
                catalog: Some(catalog.status()),
                policy: policy.current(),
                log_dropped: decision_log.dropped.clone(),
            },
        });
        tokio::spawn(admin::serve(l, state, shutdown.clone()));
    }
    tokio::spawn(signals.run(shutdown.clone(), catalog.reloader()));

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
    decision_log.flush();
    Ok(())
}

/// The SPOP listener and, when configured, the admin one. With `[agent] reuse_port`
/// both are bound with SO_REUSEPORT: a new process binds the same ports while this
/// one drains (the admin port too, or the new process could not start).
async fn bind(cfg: &Config) -> Result<(TcpListener, Option<TcpListener>), StartError> {
    let reuse_port = cfg.agent.reuse_port;
    let bind = |addr| async move {
        listen(addr, reuse_port).map_err(|source| StartError::Bind { addr, source })
    };
    let listener = bind(cfg.agent.listen).await?;
    let admin = match cfg.admin.listen {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    Ok((listener, admin))
}

/// A listener on `addr`, as `TcpListener::bind` makes it (SO_REUSEADDR on Unix), with
/// SO_REUSEPORT when asked.
fn listen(addr: SocketAddr, reuse_port: bool) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    if reuse_port {
        socket.set_reuseport(true)?;
    }
    socket.bind(addr)?;
    socket.listen(1024)
}

/// The handler, with every decision counted in the metrics and written to the log.
fn agent(
    cfg: &Config,
    sso: Option<Arc<Sso>>,
    verifier: Verifier,
    policy: &PolicyHandle,
    metrics: Arc<Metrics>,
    decision_log: Arc<DecisionLog>,
) -> Arc<Agent> {
    if cfg.policy.mode == Mode::Shadow {
        tracing::warn!(
            event = "shadow_mode",
            "policy mode is shadow: every request is let through"
        );
    }
    Arc::new(Agent {
        verifier,
        policy: policy.current(),
        settings: AgentSettings {
            message: cfg.agent.message.clone(),
            realm: cfg.agent.realm.clone(),
            mode: cfg.policy.mode,
            sso,
        },
        observer: Box::new(move |req, outcome, latency, at| {
            metrics.record_decision(outcome.decision.reason, !outcome.shadow, latency);
            decision_log.record(req, outcome, latency, at);
        }),
    })
}
