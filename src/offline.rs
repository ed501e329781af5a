//! The CLI's one-shot paths (`policy show`, `decide`, `test`, `replay`): load the catalog and keys
//! once, outside the agent, and run the same policy and decision code. A load that
//! fails, or outlives the file source's deadline, ends the command with an error;
//! `main` then drops the runtime without waiting for an abandoned parse.

pub mod cases;
pub mod replay;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use tokio_util::sync::CancellationToken;

use crate::agent::{Agent, AgentSettings, AuthRequest, actions_for};
use crate::config::Config;
use crate::lifecycle::{self, StartError};
use crate::policy::Policy;

/// Why a one-shot command has no answer (exit code 1).
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    #[error(transparent)]
    Start(#[from] StartError),
    /// The catalog source failed before publishing anything (its last error).
    #[error("catalog not loaded: {0}")]
    NotLoaded(String),
    #[error("no catalog loaded within {}s", .0.as_secs())]
    Timeout(Duration),
    #[error("cannot render the decision: {0}")]
    Render(#[from] serde_json::Error),
    /// The ACK's own variables did not read back (a bug, never the input's fault).
    #[error("the variables did not decode: {0}")]
    Variables(#[from] crate::spop::DecodeError),
}

/// A policy loaded once, and what its catalog left out.
pub struct LoadedPolicy {
    pub policy: Arc<Policy>,
    /// One line per skipped document (file, document index, reason) or entity.
    pub skipped: Vec<String>,
}

/// Loads the catalog (files, or one Backstage sync) and builds the policy. Returns
/// at the first failure when no catalog could be published (a file refused, a load
/// past its deadline, Backstage unreachable without a snapshot), else within `wait`.
pub async fn load_policy(cfg: &Config, wait: Duration) -> Result<LoadedPolicy, OfflineError> {
    let shutdown = CancellationToken::new();
    // Every return stops the catalog source and the policy builder.
    let _stop = shutdown.clone().drop_guard();
    let (catalog, policy) = lifecycle::start_catalog(cfg, shutdown)?;
    let mut status = catalog.status();
    let snapshots = catalog.snapshots();
    // A failure with nothing published; with a snapshot file served, the policy
    // built from it is the answer.
    let failed = async {
        match status
            .wait_for(|st| st.consecutive_errors > 0 && snapshots.borrow().is_none())
            .await
        {
            Ok(st) => st.last_error.clone().unwrap_or_default(),
            Err(_) => "the catalog source stopped".to_owned(),
        }
    };
    tokio::select! {
        biased;
        ready = policy.ready() => match ready {
            Some(policy) => Ok(LoadedPolicy {
                policy,
                skipped: catalog.status().borrow().skipped.clone(),
            }),
            None => Err(OfflineError::NotLoaded("the policy builder stopped".to_owned())),
        },
        error = failed => Err(OfflineError::NotLoaded(error)),
        () = tokio::time::sleep(wait) => Err(OfflineError::Timeout(wait)),
    }
}

/// A configuration that only reads catalog files (`--catalog`): no issuers, the
/// file source on `globs`, relative to the working directory.
pub fn catalog_config(globs: Vec<String>) -> Config {
    let mut cfg: Config =
        toml::from_str("").unwrap_or_else(|_| unreachable!("every key has a default"));
    cfg.catalog.files = globs;
    cfg.base_dir = std::path::PathBuf::from(".");
    cfg
}

pub struct DecideRequest {
    pub method: String,
    pub path: String,
    pub host: String,
    pub token: Option<String>,
}

/// Decides one request as the agent would and returns the decision, with the
/// variables HAProxy would receive.
pub async fn decide(
    cfg: &Config,
    req: &DecideRequest,
    wait: Duration,
) -> Result<serde_json::Value, OfflineError> {
    let policy = load_policy(cfg, wait).await?.policy;
    let verifier = lifecycle::start_verifier(cfg)?;
    if req.token.is_some() {
        // The verifier offers no readiness to await: poll it, within `wait`.
        let deadline = tokio::time::Instant::now() + wait;
        while !verifier.ready() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let agent = Agent {
        verifier,
        policy: Arc::new(ArcSwapOption::new(Some(policy))),
        settings: AgentSettings {
            message: cfg.agent.message.clone(),
            realm: cfg.agent.realm.clone(),
            mode: cfg.policy.mode,
            sso: None,
        },
        observer: Box::new(|_, _, _, _| {}),
    };
    let auth = AuthRequest {
        method: &req.method,
        path: &req.path,
        host: &req.host,
        token: req.token.as_deref(),
        src: None,
        request_id: None,
        browser: Default::default(),
    };
    let outcome = agent.decide(&auth, crate::clock::unix_now()).await;
    let mut json = serde_json::to_value(&outcome.decision)?;
    let actions = actions_for(&outcome, &cfg.agent.realm);
    let vars: serde_json::Map<String, serde_json::Value> = actions
        .decode()?
        .iter()
        .filter_map(|a| match a {
            crate::spop::Action::SetVar { name, value, .. } => {
                let v = match value {
                    crate::spop::TypedData::Bool(b) => serde_json::Value::from(*b),
                    crate::spop::TypedData::Int64(i) => serde_json::Value::from(*i),
                    other => serde_json::Value::from(other.as_str().unwrap_or_default()),
                };
                Some((String::from_utf8_lossy(name).into_owned(), v))
            }
            crate::spop::Action::UnsetVar { .. } => None,
        })
        .collect();
    json["variables"] = serde_json::Value::Object(vars);
    if let Some(id) = &outcome.identity {
        json["sub"] = id.sub.clone().into();
        json["scopes"] = id.scopes.clone().into();
        json["groups"] = id.groups.clone().into();
    }
    Ok(json)
}
