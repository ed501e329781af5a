//! Token stage, configuration: one `[[issuers]]` table per trusted identity provider,
//! validated before the agent binds anything (config → token verification).
//!
//! ```toml
//! [[issuers]]
//! issuer = "https://login.example.com/realms/main"   # exact `iss`
//! audiences = ["urn:example:api"]                    # any-of against `aud`
//! discovery = true              # or jwks_url = "https://...", or jwks_file = "/etc/..."
//! # algorithms = ["RS256", "PS256", "ES256", "EdDSA"]  (default; RS384/512, PS384/512, ES384 allowed)
//! # leeway_seconds = 30
//! # groups_claim = "groups"
//! # types = ["at+jwt"]          # header typ allow-list
//! # max_lifetime_seconds = 86400  # default one day: exp - (iat or nbf or now) above it is refused
//! # min_refresh_seconds = 60    # Cache-Control max-age is clamped into [min, max]
//! # max_refresh_seconds = 600   # also the refresh interval without Cache-Control
//! # max_stale_seconds = 86400   # then keys_unavailable
//! # unknown_kid_cooldown_seconds = 30
//! # allow_insecure_http = false # http is otherwise only allowed for loopback hosts
//!
//! [[issuers]]                   # a Backstage auth backend's user tokens (off unless listed)
//! kind = "backstage"            # default kind = "oidc"; see `backstage.rs`
//! issuer = "https://backstage.example.com/api/auth"
//! jwks_url = "https://backstage.example.com/api/auth/.well-known/jwks.json"
//! # audiences = ["backstage"]   (the default for this kind)
//! # types = ["vnd.backstage.user"]  (the default for this kind)
//!
//! [[issuers]]                   # HS* only with an explicit secret, never with JWKS keys
//! issuer = "https://legacy.example.com"
//! audiences = ["urn:example:api"]
//! shared_secret_env = "LEGACY_JWT_SECRET"   # at least 32 bytes; algorithms default to HS256
//! ```

use std::time::Duration;

use serde::Deserialize;

use super::alg::Alg;

/// Tokens longer than this are rejected before any decoding (`token_too_large`).
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Entries in the verified-token cache.
pub const DEFAULT_CACHE_ENTRIES: u64 = 65_536;
/// Bytes the verified-token cache may hold (its entries' identities, estimated).
pub const DEFAULT_CACHE_BYTES: u64 = 64 * 1024 * 1024;
/// The largest `max_lifetime_seconds` (a year): a limit above it limits nothing.
pub const MAX_LIFETIME_LIMIT: u64 = 365 * 86_400;
/// The default `max_lifetime_seconds`: one day. Access tokens live minutes to hours
/// (Okta 1 h, Entra ID 60-90 min, Keycloak 5 min, Google 1 h); a token valid for longer
/// than a day is a leaked-forever credential or a forged `exp`, so it is refused as
/// `lifetime_too_long` unless the issuer raises the limit (up to a year).
pub const DEFAULT_MAX_LIFETIME: u64 = 86_400;
/// Smallest shared secret accepted for HS256 (RFC 7518 §3.2: at least the hash size).
pub const MIN_SECRET_BYTES: usize = 32;

/// Process-wide token settings (not per issuer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenConfig {
    /// Size cap on the raw token, checked first.
    pub max_token_bytes: usize,
    /// Bound on the verified-token cache; 0 disables the cache.
    pub cache_entries: u64,
    /// Bound on the verified-token cache in bytes: a verified token can carry
    /// hundreds of groups, so a count alone does not bound memory.
    pub cache_bytes: u64,
}

impl Default for TokenConfig {
    fn default() -> Self {
        TokenConfig {
            max_token_bytes: DEFAULT_MAX_TOKEN_BYTES,
            cache_entries: DEFAULT_CACHE_ENTRIES,
            cache_bytes: DEFAULT_CACHE_BYTES,
        }
    }
}

/// What an issuer's tokens are, and so which claim rules apply to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IssuerKind {
    /// An OAuth 2.0 / OpenID Connect provider's access tokens (the default).
    #[default]
    Oidc,
    /// A Backstage auth backend's user tokens: `sub` is a User entity ref, looked up
    /// in the catalog; no groups, scopes or email are read (see `backstage.rs`).
    Backstage,
}

/// One trusted issuer: where its keys come from and what its tokens must say.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// `oidc` (default) or `backstage`.
    #[serde(default)]
    pub kind: IssuerKind,
    /// Exact `iss` value (byte equality, no normalisation).
    pub issuer: String,
    /// The token's `aud` must contain at least one of these. Required for `oidc`; for
    /// `backstage` empty or absent means `["backstage"]`.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// JWKS endpoint.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// Find the JWKS through `<issuer>/.well-known/openid-configuration`.
    #[serde(default)]
    pub discovery: bool,
    /// Local JWKS file, reloaded when it changes.
    #[serde(default)]
    pub jwks_file: Option<String>,
    /// Allowed algorithms; default RS256, PS256, ES256, EdDSA (HS256 for a shared secret).
    #[serde(default)]
    pub algorithms: Option<Vec<Alg>>,
    #[serde(default = "default_leeway")]
    pub leeway_seconds: u64,
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// Allowed header `typ` values (e.g. `at+jwt`); empty or absent means not checked.
    #[serde(default)]
    pub types: Option<Vec<String>>,
    /// Longest accepted `exp - iat` (or `exp - nbf`, or `exp - now`); default one day.
    #[serde(default = "default_max_lifetime")]
    pub max_lifetime_seconds: u64,
    /// Name of an environment variable holding an HMAC secret: enables HS* for this
    /// issuer and excludes every JWKS source.
    #[serde(default)]
    pub shared_secret_env: Option<String>,
    /// Use the `email` claim to find the caller's Backstage User even without
    /// `email_verified: true` (for providers whose access tokens carry a verified email
    /// but no `email_verified`). Off by default: see `verified_email` in `verify.rs`.
    #[serde(default)]
    pub trust_unverified_email: bool,
    /// Allow `http://` URLs for non-loopback hosts.
    #[serde(default)]
    pub allow_insecure_http: bool,
    /// Lower bound for the key-set refresh interval (Cache-Control max-age is clamped to it).
    #[serde(default = "default_min_refresh")]
    pub min_refresh_seconds: u64,
    /// Upper bound for the refresh interval, and the interval used without Cache-Control.
    #[serde(default = "default_max_refresh")]
    pub max_refresh_seconds: u64,
    /// How long the last good key set is used while refreshes fail; then `keys_unavailable`.
    #[serde(default = "default_max_stale")]
    pub max_stale_seconds: u64,
    /// At most one unknown-`kid` refetch per this many seconds (scheduled refreshes are
    /// never held back by it; see `verifier.rs`).
    #[serde(default = "default_cooldown")]
    pub unknown_kid_cooldown_seconds: u64,
}

fn default_leeway() -> u64 {
    30
}
fn default_max_lifetime() -> u64 {
    DEFAULT_MAX_LIFETIME
}
fn default_groups_claim() -> String {
    "groups".to_owned()
}
fn default_min_refresh() -> u64 {
    60
}
fn default_max_refresh() -> u64 {
    600
}
fn default_max_stale() -> u64 {
    86_400
}
fn default_cooldown() -> u64 {
    30
}

/// The default allow-list for JWKS issuers.
pub const DEFAULT_ALGORITHMS: [Alg; 4] = [Alg::RS256, Alg::PS256, Alg::ES256, Alg::EdDSA];

/// Where an issuer's keys come from, after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    JwksUrl(String),
    Discovery,
    JwksFile(String),
    SharedSecret(String),
}

/// A mistake in the `[[issuers]]` tables, naming the issuer and the key (the one prefix
/// the message gets, also inside the top-level `config::ConfigError`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IssuerError {
    #[error("issuers: `issuer` must not be empty")]
    EmptyIssuer,
    #[error("issuers[{0}]: `issuer` appears more than once")]
    DuplicateIssuer(String),
    #[error("issuers[{0}]: `audiences` must list at least one non-empty audience")]
    NoAudience(String),
    #[error(
        "issuers[{issuer}]: `{key}` does not apply to kind = \"backstage\" (Backstage user tokens are ES256 JWTs identified by their User ref)"
    )]
    NotForBackstage { issuer: String, key: &'static str },
    #[error(
        "issuers[{0}]: set exactly one of `jwks_url`, `discovery = true`, `jwks_file`, `shared_secret_env`"
    )]
    KeySource(String),
    #[error("issuers[{issuer}]: `{key}` is not a usable URL: {why}")]
    BadUrl {
        issuer: String,
        key: &'static str,
        why: String,
    },
    #[error("issuers[{0}]: `algorithms` must not be empty")]
    NoAlgorithms(String),
    #[error(
        "issuers[{0}]: `algorithms` lists HS* but no `shared_secret_env` is set (HS* never applies to JWKS keys)"
    )]
    HmacWithoutSecret(String),
    #[error("issuers[{0}]: `shared_secret_env` allows only HS256, HS384, HS512 in `algorithms`")]
    SecretWithAsymmetric(String),
    #[error(
        "issuers[{issuer}]: `shared_secret_env`: environment variable {var} is unset or shorter than {min} bytes"
    )]
    WeakSecret {
        issuer: String,
        var: String,
        min: usize,
    },
    #[error("issuers[{0}]: `groups_claim` must not be empty")]
    EmptyGroupsClaim(String),
    #[error("issuers[{0}]: `types` must not contain empty strings")]
    EmptyType(String),
    #[error("issuers[{0}]: `max_lifetime_seconds` must be between 1 and 31536000 (a year)")]
    ZeroLifetime(String),
    #[error("issuers[{0}]: `leeway_seconds` must be at most 300")]
    LeewayTooLarge(String),
    #[error("issuers[{0}]: need 1 <= `min_refresh_seconds` <= `max_refresh_seconds`")]
    RefreshBounds(String),
    #[error("issuers[{0}]: `max_stale_seconds` must be at least `max_refresh_seconds`")]
    StaleBelowRefresh(String),
    #[error("issuers[{0}]: `unknown_kid_cooldown_seconds` must be at least 1")]
    ZeroCooldown(String),
}

/// A `[token]` bound out of range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenCapError {
    #[error("token.max_token_bytes: must be between 256 and 65536")]
    MaxTokenBytes,
    #[error("token.cache_bytes: must be between 1048576 (1 MiB) and 17179869184 (16 GiB)")]
    CacheBytes,
}

/// Why [`Verifier::start`](super::Verifier::start) did not start: a config it was given
/// unvalidated, or the runtime around it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifierError {
    #[error(transparent)]
    Issuer(#[from] IssuerError),
    #[error(transparent)]
    TokenCap(#[from] TokenCapError),
    #[error("token: cannot build the HTTPS client: {0}")]
    HttpClient(String),
    #[error("token: Verifier::start must run inside a tokio runtime")]
    NoRuntime,
}

impl IssuerConfig {
    /// A config with every default, for `issuer` and `audiences`, keys from `jwks_url`.
    pub fn new(issuer: &str, audiences: &[&str], source: KeySource) -> IssuerConfig {
        let mut c = IssuerConfig {
            kind: IssuerKind::Oidc,
            issuer: issuer.to_owned(),
            audiences: audiences.iter().map(|a| (*a).to_owned()).collect(),
            jwks_url: None,
            discovery: false,
            jwks_file: None,
            algorithms: None,
            leeway_seconds: default_leeway(),
            groups_claim: default_groups_claim(),
            types: None,
            max_lifetime_seconds: DEFAULT_MAX_LIFETIME,
            shared_secret_env: None,
            trust_unverified_email: false,
            allow_insecure_http: false,
            min_refresh_seconds: default_min_refresh(),
            max_refresh_seconds: default_max_refresh(),
            max_stale_seconds: default_max_stale(),
            unknown_kid_cooldown_seconds: default_cooldown(),
        };
        match source {
            KeySource::JwksUrl(u) => c.jwks_url = Some(u),
            KeySource::Discovery => c.discovery = true,
            KeySource::JwksFile(f) => c.jwks_file = Some(f),
            KeySource::SharedSecret(v) => c.shared_secret_env = Some(v),
        }
        c
    }

    /// The configured key source (call after [`IssuerConfig::validate`]).
    pub fn source(&self) -> Result<KeySource, IssuerError> {
        let mut found = Vec::with_capacity(1);
        if let Some(u) = &self.jwks_url {
            found.push(KeySource::JwksUrl(u.clone()));
        }
        if self.discovery {
            found.push(KeySource::Discovery);
        }
        if let Some(f) = &self.jwks_file {
            found.push(KeySource::JwksFile(f.clone()));
        }
        if let Some(v) = &self.shared_secret_env {
            found.push(KeySource::SharedSecret(v.clone()));
        }
        match found.len() {
            1 => Ok(found.remove(0)),
            _ => Err(IssuerError::KeySource(self.issuer.clone())),
        }
    }

    /// The effective algorithm allow-list.
    pub fn allowed_algorithms(&self) -> &[Alg] {
        match (&self.algorithms, &self.shared_secret_env) {
            (Some(a), _) => a,
            (None, Some(_)) => &[Alg::HS256],
            (None, None) => &DEFAULT_ALGORITHMS,
        }
    }

    /// Whether `aud` is one this issuer's tokens may carry (`backstage` by default for
    /// a Backstage issuer).
    pub fn accepts_audience(&self, aud: &str) -> bool {
        match (self.kind, self.audiences.is_empty()) {
            (IssuerKind::Backstage, true) => aud == super::backstage::AUDIENCE,
            _ => self.audiences.iter().any(|a| a == aud),
        }
    }

    /// The header `typ` allow-list, if any (`vnd.backstage.user` by default for a
    /// Backstage issuer).
    pub fn allowed_types(&self) -> Option<&[String]> {
        match (&self.types, self.kind) {
            (Some(t), _) if !t.is_empty() => Some(t),
            (_, IssuerKind::Backstage) => Some(super::backstage::user_types()),
            _ => None,
        }
    }

    /// The one extra claim this issuer's tokens are read for: the groups claim, or
    /// `ent` for a Backstage issuer.
    pub fn extra_claim(&self) -> &str {
        match self.kind {
            IssuerKind::Oidc => &self.groups_claim,
            IssuerKind::Backstage => super::backstage::OWNERSHIP_CLAIM,
        }
    }

    pub(crate) fn leeway(&self) -> i64 {
        self.leeway_seconds as i64
    }

    pub(crate) fn cooldown(&self) -> Duration {
        Duration::from_secs(self.unknown_kid_cooldown_seconds)
    }

    /// Checks every rule that serde cannot express.
    ///
    /// # Errors
    /// The first broken rule, naming the issuer and the offending key.
    pub fn validate(&self) -> Result<(), IssuerError> {
        let iss = || self.issuer.clone();
        if self.issuer.is_empty() {
            return Err(IssuerError::EmptyIssuer);
        }
        let no_audience = self.audiences.is_empty() && self.kind == IssuerKind::Oidc;
        if no_audience || self.audiences.iter().any(String::is_empty) {
            return Err(IssuerError::NoAudience(iss()));
        }
        if self.kind == IssuerKind::Backstage {
            super::backstage::validate(self)?;
        }
        self.validate_source()?;
        if self.groups_claim.is_empty() {
            return Err(IssuerError::EmptyGroupsClaim(iss()));
        }
        if self
            .types
            .as_ref()
            .is_some_and(|t| t.iter().any(String::is_empty))
        {
            return Err(IssuerError::EmptyType(iss()));
        }
        if !(1..=MAX_LIFETIME_LIMIT).contains(&self.max_lifetime_seconds) {
            return Err(IssuerError::ZeroLifetime(iss()));
        }
        if self.leeway_seconds > 300 {
            return Err(IssuerError::LeewayTooLarge(iss()));
        }
        if self.min_refresh_seconds == 0 || self.min_refresh_seconds > self.max_refresh_seconds {
            return Err(IssuerError::RefreshBounds(iss()));
        }
        if self.max_stale_seconds < self.max_refresh_seconds {
            return Err(IssuerError::StaleBelowRefresh(iss()));
        }
        if self.unknown_kid_cooldown_seconds == 0 {
            return Err(IssuerError::ZeroCooldown(iss()));
        }
        Ok(())
    }

    /// One key source, algorithms that suit it, a long enough secret, usable URLs.
    fn validate_source(&self) -> Result<(), IssuerError> {
        let iss = || self.issuer.clone();
        let source = self.source()?;
        let algs = self.allowed_algorithms();
        if algs.is_empty() {
            return Err(IssuerError::NoAlgorithms(iss()));
        }
        if let KeySource::SharedSecret(var) = &source {
            if algs.iter().any(|a| !a.is_hmac()) {
                return Err(IssuerError::SecretWithAsymmetric(iss()));
            }
            // Long enough for every configured HS*: one it is too short for would
            // be dropped from the key set without a word.
            let min = algs.iter().map(|a| a.min_secret_bytes()).max();
            let min = min.unwrap_or(MIN_SECRET_BYTES).max(MIN_SECRET_BYTES);
            let ok = std::env::var_os(var).is_some_and(|v| v.len() >= min);
            if !ok {
                return Err(IssuerError::WeakSecret {
                    issuer: iss(),
                    var: var.clone(),
                    min,
                });
            }
            return Ok(());
        }
        if algs.iter().any(|a| a.is_hmac()) {
            return Err(IssuerError::HmacWithoutSecret(iss()));
        }
        let (key, url) = match &source {
            KeySource::JwksUrl(u) => ("jwks_url", u.as_str()),
            KeySource::Discovery => ("issuer", self.issuer.as_str()),
            _ => return Ok(()),
        };
        check_url(url, self.allow_insecure_http).map_err(|why| IssuerError::BadUrl {
            issuer: iss(),
            key,
            why,
        })
    }
}

impl TokenConfig {
    /// # Errors
    /// [`TokenCapError`] when a bound is out of range.
    pub fn validate(&self) -> Result<(), TokenCapError> {
        if !(256..=65_536).contains(&self.max_token_bytes) {
            return Err(TokenCapError::MaxTokenBytes);
        }
        if !((1 << 20)..=(1 << 34)).contains(&self.cache_bytes) {
            return Err(TokenCapError::CacheBytes);
        }
        Ok(())
    }
}

/// Every mistake in a list of issuers, each said once, in table order: each table's
/// first broken rule, and an `issuer` value repeated (at its first repeat). The config
/// check reports them all; [`validate_all`] stops at the first.
pub fn issuer_errors(configs: &[IssuerConfig]) -> Vec<IssuerError> {
    let mut errors = Vec::new();
    for (i, c) in configs.iter().enumerate() {
        let repeats = configs[..i].iter().filter(|o| o.issuer == c.issuer).count();
        let duplicate = (repeats == 1 && !c.issuer.is_empty())
            .then(|| IssuerError::DuplicateIssuer(c.issuer.clone()));
        for e in c.validate().err().into_iter().chain(duplicate) {
            // Two tables with the same mistake would print the same line twice.
            if !errors.contains(&e) {
                errors.push(e);
            }
        }
    }
    errors
}

/// Validates a list of issuers, including uniqueness of `issuer`.
///
/// # Errors
/// The first [`IssuerError`] of [`issuer_errors`].
pub fn validate_all(configs: &[IssuerConfig]) -> Result<(), IssuerError> {
    match issuer_errors(configs).into_iter().next() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// https is required, except for loopback hosts or with `allow_insecure_http`.
pub(crate) fn check_url(url: &str, allow_insecure_http: bool) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| e.to_string())?;
    if parsed.username() != "" || parsed.password().is_some() {
        return Err("credentials in URLs are not allowed".into());
    }
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if allow_insecure_http || is_loopback(&parsed) => Ok(()),
        "http" => Err("http is allowed only for loopback hosts or with allow_insecure_http".into()),
        other => Err(format!("scheme {other} is not supported")),
    }
}

fn is_loopback(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    }
}

#[cfg(test)]
mod tests;
