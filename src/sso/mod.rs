//! Browser sign-in, beside the SPOP request flow: the agent's own HTTP listener serves
//! `/.stagedoor/{login,callback,logout,whoami}` (OIDC authorization code with PKCE),
//! and the sealed session cookie it sets is opened per request by the agent in place
//! of a bearer token (cookie → [`Sso::session_from_cookie_header`] → `Identity` →
//! policy). No server-side store: any instance with the same keys opens the cookie.
//!
//! - [`seal`]: AES-256-GCM sealed cookie values, key list and rotation.
//! - [`cookie`]: the `Cookie` header read without allocating; stripping ours; `Set-Cookie`.
//! - [`session`]: the session payload, opened per request; the too-many-groups rule.
//! - [`config`]: the `[sso]` section and its checks.
//! - [`flow`]: discovery, login, callback (code exchange, ID token, userinfo).
//! - [`listener`]: the `/.stagedoor/` HTTP endpoints.
//! - [`wire`]: form/query encoding and the discovery document.
//! - [`redirect`]: return targets after sign-in (no open redirect).

pub mod config;
pub mod cookie;
pub mod flow;
pub mod listener;
pub mod redirect;
pub mod seal;
pub mod session;
pub mod wire;

use std::path::Path;

pub use config::SsoConfig;
pub use seal::{SealError, Sealer};
pub use session::{InvalidSession, Session, SessionLookup};

use crate::config::ConfigError;

/// The client secret: never printed.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Secret {
        Secret(s)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Browser sign-in: the settings, the sealing keys and the client secret. Built once
/// at start; shared by the agent (per request) and the sign-in listener.
#[derive(Debug)]
pub struct Sso {
    pub cfg: SsoConfig,
    pub(crate) sealer: Sealer,
    pub(crate) client_secret: Secret,
    /// Sessions opened before, by the SHA-256 of the cookie value.
    pub(crate) opened: session::OpenedCache,
}

impl Sso {
    /// Reads the keys and the client secret the configuration names.
    ///
    /// # Errors
    /// The [`ConfigError`] of the key at fault (as `config check` reports it).
    pub fn new(cfg: &SsoConfig, base: &Path) -> Result<Sso, ConfigError> {
        let keys = cfg.keys(base)?;
        let secret = cfg.client_secret(base)?;
        Sso::from_parts(cfg.clone(), &keys, Secret::new(secret))
    }

    /// From keys and secret already in hand (tests, benches).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] for an empty or duplicate key list.
    pub fn from_parts(
        cfg: SsoConfig,
        keys: &[[u8; seal::KEY_LEN]],
        client_secret: Secret,
    ) -> Result<Sso, ConfigError> {
        let sealer = Sealer::new(keys).map_err(|e| ConfigError::Invalid {
            key: "sso.keys_env".into(),
            reason: e.to_string(),
        })?;
        let opened = session::OpenedCache::new();
        Ok(Sso {
            cfg,
            sealer,
            client_secret,
            opened,
        })
    }

    /// The session cookie's name: `__Host-` when host-only and secure.
    pub fn session_cookie_name(&self) -> &'static str {
        if self.cfg.cookie_domain.is_none() && self.cfg.cookie_secure {
            cookie::SESSION_HOST
        } else {
            cookie::SESSION
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A configuration for unit tests: issuer https://id.example, host-only cookies.
    pub(crate) fn test_config() -> SsoConfig {
        toml::from_str(
            r#"
            listen = "127.0.0.1:0"
            issuer = "https://id.example"
            client_id = "stagedoor"
            client_secret_env = "UNUSED"
            keys_env = "UNUSED"
            "#,
        )
        .unwrap()
    }

    pub(crate) fn sso_with_keys(keys: &[[u8; 32]]) -> Sso {
        Sso::from_parts(test_config(), keys, Secret::new("s".into())).unwrap()
    }

    #[test]
    fn secrets_are_not_printed() {
        let sso = sso_with_keys(&[[1; 32]]);
        let text = format!("{sso:?}");
        assert!(
            text.contains("Secret(..)") && !text.contains("\"s\""),
            "{text}"
        );
        assert_eq!(sso.session_cookie_name(), cookie::SESSION_HOST);
    }
}
