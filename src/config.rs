//! Configuration, read before anything binds: the TOML file, its sections, and a
//! `validate` that checks every key (including that key sources and catalog files
//! exist). Every error names the key at fault; the CLI exits 64 on any of them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::catalog::{CatalogConfig, CatalogConfigError};
use crate::connection::EngineConfig;
use crate::policy::PolicyConfig;
use crate::sso::SsoConfig;
use crate::token::config::issuer_errors;
use crate::token::{IssuerConfig, IssuerError, TokenCapError, TokenConfig};

/// The whole configuration file. Unknown keys anywhere are rejected.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub agent: AgentConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub token: TokenConfig,
    #[serde(default)]
    pub issuers: Vec<IssuerConfig>,
    #[serde(default)]
    pub catalog: CatalogConfig,
    #[serde(default)]
    pub policy: PolicyConfig,
    /// Browser sign-in; off when absent.
    #[serde(default)]
    pub sso: Option<SsoConfig>,
    /// The directory of the configuration file: relative paths resolve against it.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// `[agent]`: the SPOP listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    pub listen: SocketAddr,
    pub max_connections: usize,
    /// Ceiling for the negotiated max-frame-size (HAProxy's own value when lower).
    pub max_frame_size: u32,
    /// The SPOE message name to answer.
    pub message: String,
    /// NOTIFYs handled at once per connection (at least 20, HAProxy's pipelining depth).
    pub max_in_flight: usize,
    pub idle_timeout_seconds: u64,
    /// On SIGTERM the listener closes, and open connections are still read and
    /// answered for up to this long while HAProxy moves on (docs/spop.md#stopping):
    /// keep it above HAProxy's health-check `inter` x `fall`.
    pub shutdown_grace_seconds: u64,
    /// While stopping, a connection with nothing in flight closes once HAProxy sent
    /// nothing on it for this long.
    pub drain_quiet_ms: u64,
    /// Bind the SPOP (and admin) listener with SO_REUSEPORT, so a new process can
    /// take over the port while this one drains (README, "Restarts and reloads").
    pub reuse_port: bool,
    /// `realm` in WWW-Authenticate.
    pub realm: String,
    /// Runtime worker threads; 0 = half the CPUs, at least one
    /// ([`crate::server::runtime`] says why: HAProxy runs on the same cores).
    pub worker_threads: usize,
    /// Bytes all SPOP read buffers and NOTIFYs in flight may hold together
    /// ([`crate::budget`]); connections beyond it are closed with status 13.
    pub buffer_budget_bytes: u64,
    /// Time allowed between accept and a complete HAPROXY-HELLO.
    pub hello_timeout_seconds: u64,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 12345)),
            max_connections: 10_000,
            max_frame_size: 16_380,
            message: "authorize".to_owned(),
            max_in_flight: 64,
            idle_timeout_seconds: 300,
            shutdown_grace_seconds: 10,
            drain_quiet_ms: 2_000,
            reuse_port: false,
            realm: "stagedoor".to_owned(),
            worker_threads: 0,
            buffer_budget_bytes: 64 << 20,
            hello_timeout_seconds: 5,
        }
    }
}

impl AgentConfig {
    /// Every out-of-range `[agent]` key.
    fn validate(&self) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        if !(1..=1_000_000).contains(&self.max_connections) {
            errors.push(invalid(
                "agent.max_connections",
                "must be between 1 and 1000000",
            ));
        }
        if !(1..=86_400).contains(&self.idle_timeout_seconds) {
            errors.push(invalid(
                "agent.idle_timeout_seconds",
                "must be between 1 and 86400 (keep it above HAProxy's SPOE `timeout idle`)",
            ));
        }
        if self.shutdown_grace_seconds > 300 {
            errors.push(invalid(
                "agent.shutdown_grace_seconds",
                "must be at most 300",
            ));
        }
        if !(10..=60_000).contains(&self.drain_quiet_ms) {
            errors.push(invalid(
                "agent.drain_quiet_ms",
                "must be between 10 and 60000",
            ));
        }
        if self.reuse_port && !cfg!(unix) {
            errors.push(invalid(
                "agent.reuse_port",
                "SO_REUSEPORT needs a Unix system",
            ));
        }
        if !(256..=1 << 24).contains(&self.max_frame_size) {
            errors.push(invalid(
                "agent.max_frame_size",
                "must be between 256 and 16777216",
            ));
        }
        if !(20..=1024).contains(&self.max_in_flight) {
            errors.push(invalid(
                "agent.max_in_flight",
                "must be between 20 (HAProxy pipelines up to 20 per connection) and 1024",
            ));
        }
        // 1 MiB: 256 connections' 4 KiB buffers. Four frames of the largest size, so
        // that one frame never needs more than a quarter of the budget.
        let floor = (1u64 << 20).max(4 * (u64::from(self.max_frame_size) + 4));
        if !(floor..=1 << 40).contains(&self.buffer_budget_bytes) {
            errors.push(invalid(
                "agent.buffer_budget_bytes",
                format!(
                    "must be between {floor} (1 MiB, and 4 frames of max_frame_size) and 1099511627776 (1 TiB)"
                ),
            ));
        }
        if !(1..=60).contains(&self.hello_timeout_seconds) {
            errors.push(invalid(
                "agent.hello_timeout_seconds",
                "must be between 1 and 60 (keep it above HAProxy's SPOE `timeout hello`)",
            ));
        }
        if self.worker_threads > 256 {
            errors.push(invalid(
                "agent.worker_threads",
                "must be at most 256 (0: half the CPUs, at least one)",
            ));
        }
        if self.realm.contains(['"', '\\']) || self.realm.chars().any(char::is_control) {
            errors.push(invalid(
                "agent.realm",
                "must not contain quotes, backslashes or control characters",
            ));
        }
        errors
    }

    pub fn engine(&self) -> EngineConfig {
        EngineConfig {
            max_frame_size: self.max_frame_size,
            max_in_flight: self.max_in_flight,
            idle_timeout: Duration::from_secs(self.idle_timeout_seconds),
            hello_timeout: Duration::from_secs(self.hello_timeout_seconds),
            shutdown_grace: Duration::from_secs(self.shutdown_grace_seconds),
            drain_quiet: Duration::from_millis(self.drain_quiet_ms),
            buffer_budget: usize::try_from(self.buffer_budget_bytes).unwrap_or(usize::MAX),
        }
    }
}

/// `[admin]`: /metrics, /healthz, /readyz. No listener when `listen` is absent.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    pub listen: Option<SocketAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Json,
    Pretty,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DecisionLogs {
    #[default]
    All,
    Deny,
    Off,
}

/// How much of the caller a decision line records (`[log] identity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogIdentity {
    /// Also the verified email, the identity-provider groups, the scopes and the
    /// Backstage user: every input of the decision, so `stagedoor replay` can decide
    /// the line again under another policy.
    #[default]
    Full,
    /// Issuer, subject and client id only (as before `replay`); such lines with a
    /// verified caller cannot be replayed.
    Minimal,
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// Which decisions get a log line.
    pub decisions: DecisionLogs,
    /// How much of the caller a decision line records.
    pub identity: LogIdentity,
    /// With `decisions = "all"`, the fraction of allows logged (0.0–1.0); denies always are.
    pub allow_sample_rate: f64,
    /// tracing filter for lifecycle events, e.g. "info" or "stagedoor=debug".
    pub level: String,
}

impl LogConfig {
    /// Every unusable `[log]` key.
    fn validate(&self) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        if !(0.0..=1.0).contains(&self.allow_sample_rate) {
            errors.push(invalid(
                "log.allow_sample_rate",
                "must be between 0.0 and 1.0",
            ));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.level) {
            errors.push(invalid("log.level", e));
        }
        errors
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Json,
            decisions: DecisionLogs::All,
            identity: LogIdentity::Full,
            allow_sample_rate: 1.0,
            level: "info".to_owned(),
        }
    }
}

/// A configuration that cannot be used: the crate's one configuration error. The text
/// names the key, once (the token and catalog sections' errors carry their own prefix).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{key}: {reason}")]
    Invalid { key: String, reason: String },
    #[error(transparent)]
    Issuer(#[from] IssuerError),
    #[error(transparent)]
    TokenCap(#[from] TokenCapError),
    #[error(transparent)]
    Catalog(#[from] CatalogConfigError),
}

/// What one SPOE message needs beside the token: the `Bearer ` prefix, method, host,
/// path, query, request id and the argument names (the Cookie header is extra).
const MESSAGE_HEADROOM: usize = 1024;

fn invalid(key: &str, reason: impl ToString) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        reason: reason.to_string(),
    }
}

impl Config {
    /// Reads and parses `path` (no validation).
    pub fn parse_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut cfg: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        cfg.base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        if cfg.base_dir.as_os_str().is_empty() {
            cfg.base_dir = PathBuf::from(".");
        }
        Ok(cfg)
    }

    /// Reads, parses and validates `path`; all validation errors are returned.
    pub fn load(path: &Path) -> Result<Config, Vec<ConfigError>> {
        let cfg = Config::parse_file(path).map_err(|e| vec![e])?;
        let errors = cfg.validate();
        if errors.is_empty() {
            Ok(cfg)
        } else {
            Err(errors)
        }
    }

    /// Every problem with the configuration (empty when it is usable), each once.
    pub fn validate(&self) -> Vec<ConfigError> {
        let mut errors = self.agent.validate();
        errors.extend(self.log.validate());
        if let Err(e) = self.token.validate() {
            errors.push(e.into());
        }
        errors.extend(self.token_fits_frame());
        errors.extend(self.validate_issuers());
        if let Err(e) = self.catalog.validate(&self.base_dir) {
            errors.push(e.into());
        }
        if let Some(sso) = &self.sso {
            errors.extend(sso.validate(&self.base_dir, &self.issuers));
        }
        errors
    }

    /// A token at `max_token_bytes` must fit one SPOE message beside the request's
    /// other arguments: otherwise HAProxy fails the message (a 503 with a frame
    /// error) where the agent would have said `token_too_large`.
    fn token_fits_frame(&self) -> Option<ConfigError> {
        let room = self.agent.max_frame_size as usize;
        (self.token.max_token_bytes + MESSAGE_HEADROOM > room).then(|| {
            invalid(
                "token.max_token_bytes",
                format!(
                    "must leave {MESSAGE_HEADROOM} bytes of agent.max_frame_size ({room}) for the \
                     rest of the SPOE message; raise agent.max_frame_size and HAProxy's \
                     tune.bufsize together (README, \"Large tokens\")"
                ),
            )
        })
    }

    /// The `[[issuers]]` tables, each validated once (`issuer_errors`), and their
    /// `jwks_file`s, which must exist.
    fn validate_issuers(&self) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        if self.issuers.is_empty() {
            errors.push(invalid(
                "issuers",
                "at least one [[issuers]] table is required",
            ));
        }
        errors.extend(
            issuer_errors(&self.issuers)
                .into_iter()
                .map(ConfigError::from),
        );
        for (i, iss) in self.issuers.iter().enumerate() {
            if let Some(file) = &iss.jwks_file {
                let p = self.resolve(file);
                if !p.is_file() {
                    errors.push(invalid(
                        &format!("issuers[{i}].jwks_file"),
                        format!("{} does not exist", p.display()),
                    ));
                }
            }
        }
        errors
    }

    /// A path from the file, resolved against the file's directory.
    pub fn resolve(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_owned()
        } else {
            self.base_dir.join(p)
        }
    }
}
