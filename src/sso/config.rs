//! Beside the request flow, under [`crate::sso`]: the `[sso]` section and its checks.
//! Off unless the section is present. Every error names its key, as
//! [`crate::config::ConfigError::Invalid`].

use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;

use super::seal::{KEY_LEN, parse_keys};
use crate::config::ConfigError;
use crate::token::{IssuerConfig, KeySource};

/// Default longest session: 8 hours, then sign in again.
pub const DEFAULT_MAX_SESSION: u64 = 28_800;

/// `[sso]`: browser sign-in.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SsoConfig {
    /// The sign-in HTTP listener HAProxy routes `/.stagedoor/` to.
    pub listen: SocketAddr,
    /// The provider: exactly one `[[issuers]]` `issuer`, whose key set verifies ID tokens.
    pub issuer: String,
    pub client_id: String,
    /// Environment variable holding the client secret.
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// File holding the client secret (trailing newline ignored).
    #[serde(default)]
    pub client_secret_file: Option<String>,
    /// Scopes asked for; must include `openid`.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// One fixed callback URL; absent: `<external_scheme>://<request host>/.stagedoor/callback`.
    #[serde(default)]
    pub redirect_uri: Option<String>,
    /// The scheme browsers use to reach the protected hosts (never taken from a header).
    #[serde(default = "default_scheme")]
    pub external_scheme: String,
    /// Parent domain the session cookie is shared with (e.g. `example.com`); absent:
    /// host-only `__Host-` cookie.
    #[serde(default)]
    pub cookie_domain: Option<String>,
    /// `Secure` on cookies; false only for a local http demo.
    #[serde(default = "yes")]
    pub cookie_secure: bool,
    /// Environment variable with the sealing keys (first seals, all open).
    #[serde(default)]
    pub keys_env: Option<String>,
    /// File with the sealing keys, one per line.
    #[serde(default)]
    pub keys_file: Option<String>,
    #[serde(default = "default_max_session")]
    pub max_session_seconds: u64,
    /// Hosts besides the request's own that may be return targets: names or `*.suffix`.
    #[serde(default)]
    pub return_hosts: Vec<String>,
    /// Where the provider sends the browser after logout (registered at the provider).
    #[serde(default)]
    pub post_logout_redirect_uri: Option<String>,
}

fn default_scopes() -> Vec<String> {
    ["openid", "email", "profile"].map(String::from).to_vec()
}
fn default_scheme() -> String {
    "https".to_owned()
}
fn yes() -> bool {
    true
}
fn default_max_session() -> u64 {
    DEFAULT_MAX_SESSION
}

fn invalid(key: &str, reason: impl ToString) -> ConfigError {
    ConfigError::Invalid {
        key: format!("sso.{key}"),
        reason: reason.to_string(),
    }
}

/// A host name as configured: lowercase letters, digits, `-` and `.`, no empty label.
pub fn is_host_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

impl SsoConfig {
    /// Every problem with the section (empty when usable); `base` resolves files.
    pub fn validate(&self, base: &Path, issuers: &[IssuerConfig]) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        match issuers.iter().find(|i| i.issuer == self.issuer) {
            None => errors.push(invalid(
                "issuer",
                "must be the `issuer` of one [[issuers]] table (its keys verify ID tokens)",
            )),
            Some(i) if matches!(i.source(), Ok(KeySource::SharedSecret(_))) => {
                errors.push(invalid(
                    "issuer",
                    "must be an issuer with a JWKS, not a shared secret",
                ))
            }
            Some(_) => {}
        }
        if self.client_id.is_empty() || self.client_id.chars().any(char::is_control) {
            errors.push(invalid("client_id", "must be a non-empty string"));
        }
        if let Err(e) = self.client_secret(base) {
            errors.push(e);
        }
        if let Err(e) = self.keys(base) {
            errors.push(e);
        }
        if !self.scopes.iter().any(|s| s == "openid")
            || self
                .scopes
                .iter()
                .any(|s| s.is_empty() || s.bytes().any(|b| b <= b' ' || b == b'"' || b >= 0x7f))
        {
            errors.push(invalid(
                "scopes",
                "must include \"openid\"; each scope one word of printable ASCII",
            ));
        }
        match self.external_scheme.as_str() {
            "https" => {}
            "http" if !self.cookie_secure => {}
            "http" => errors.push(invalid(
                "external_scheme",
                "\"http\" needs cookie_secure = false (a local demo only)",
            )),
            _ => errors.push(invalid("external_scheme", "must be \"https\" or \"http\"")),
        }
        if let Some(u) = &self.redirect_uri
            && !self.absolute_url(u, true)
        {
            errors.push(invalid(
                "redirect_uri",
                format!(
                    "must be an absolute {}:// URL ending in /.stagedoor/callback",
                    self.external_scheme
                ),
            ));
        }
        if let Some(u) = &self.post_logout_redirect_uri
            && !self.absolute_url(u, false)
        {
            errors.push(invalid(
                "post_logout_redirect_uri",
                "must be an absolute http(s) URL",
            ));
        }
        if let Some(d) = &self.cookie_domain
            && (!is_host_name(d) || !d.contains('.'))
        {
            errors.push(invalid(
                "cookie_domain",
                "must be a lowercase domain with at least two labels, without a leading dot",
            ));
        }
        if !(60..=604_800).contains(&self.max_session_seconds) {
            errors.push(invalid(
                "max_session_seconds",
                "must be between 60 and 604800 (7 days)",
            ));
        }
        for (i, h) in self.return_hosts.iter().enumerate() {
            let name = h.strip_prefix("*.").unwrap_or(h);
            if !is_host_name(name) {
                errors.push(invalid(
                    &format!("return_hosts[{i}]"),
                    "must be a lowercase host name or *.suffix",
                ));
            }
        }
        errors
    }

    fn absolute_url(&self, u: &str, callback: bool) -> bool {
        let Ok(url) = reqwest::Url::parse(u) else {
            return false;
        };
        let scheme_ok = if callback {
            url.scheme() == self.external_scheme
        } else {
            matches!(url.scheme(), "https" | "http")
        };
        scheme_ok
            && url.host_str().is_some()
            && url.username().is_empty()
            && url.password().is_none()
            && url.fragment().is_none()
            && (!callback || (url.path() == "/.stagedoor/callback" && url.query().is_none()))
    }

    /// The client secret from `client_secret_env` or `client_secret_file`.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the key when neither or both are set, or it is empty.
    pub fn client_secret(&self, base: &Path) -> Result<String, ConfigError> {
        let secret = match (&self.client_secret_env, &self.client_secret_file) {
            (Some(var), None) => std::env::var(var).map_err(|_| {
                invalid(
                    "client_secret_env",
                    format!("environment variable {var} is not set"),
                )
            })?,
            (None, Some(file)) => {
                let p = resolve(base, file);
                std::fs::read_to_string(&p)
                    .map_err(|e| invalid("client_secret_file", format!("{}: {e}", p.display())))?
            }
            _ => {
                return Err(invalid(
                    "client_secret_env",
                    "exactly one of client_secret_env and client_secret_file is required",
                ));
            }
        };
        let secret = secret.trim_end_matches(['\r', '\n']).to_owned();
        if secret.is_empty() {
            return Err(invalid("client_secret_env", "the client secret is empty"));
        }
        Ok(secret)
    }

    /// The sealing keys from `keys_env` or `keys_file`.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the key: neither or both set, unreadable, or a key
    /// list [`parse_keys`] refuses (none, not 32 bytes, duplicate).
    pub fn keys(&self, base: &Path) -> Result<Vec<[u8; KEY_LEN]>, ConfigError> {
        let (key, text) = match (&self.keys_env, &self.keys_file) {
            (Some(var), None) => (
                "keys_env",
                std::env::var(var).map_err(|_| {
                    invalid("keys_env", format!("environment variable {var} is not set"))
                })?,
            ),
            (None, Some(file)) => {
                let p = resolve(base, file);
                (
                    "keys_file",
                    std::fs::read_to_string(&p)
                        .map_err(|e| invalid("keys_file", format!("{}: {e}", p.display())))?,
                )
            }
            _ => {
                return Err(invalid(
                    "keys_env",
                    "exactly one of keys_env and keys_file is required",
                ));
            }
        };
        parse_keys(&text).map_err(|e| invalid(key, e))
    }
}

fn resolve(base: &Path, p: &str) -> std::path::PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_owned()
    } else {
        base.join(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuers() -> Vec<IssuerConfig> {
        vec![IssuerConfig::new(
            "https://id.example",
            &["api"],
            KeySource::Discovery,
        )]
    }

    fn errors_for(extra: &str) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secret"), "s3cret\n").unwrap();
        std::fs::write(dir.path().join("keys"), format!("{}\n", "ab".repeat(32))).unwrap();
        let text = format!(
            "listen = \"127.0.0.1:0\"\nissuer = \"https://id.example\"\nclient_id = \"sd\"\n\
             client_secret_file = \"secret\"\nkeys_file = \"keys\"\n{extra}"
        );
        let cfg: SsoConfig = toml::from_str(&text).unwrap();
        cfg.validate(dir.path(), &issuers())
            .into_iter()
            .map(|e| e.to_string())
            .collect()
    }

    #[test]
    fn a_minimal_section_is_valid_and_defaults_are_safe() {
        assert_eq!(errors_for(""), Vec::<String>::new());
        let cfg: SsoConfig =
            toml::from_str("listen = \"127.0.0.1:0\"\nissuer = \"i\"\nclient_id = \"c\"").unwrap();
        assert!(cfg.cookie_secure);
        assert_eq!(cfg.external_scheme, "https");
        assert_eq!(cfg.max_session_seconds, 28_800);
    }

    #[test]
    fn every_bad_key_is_named() {
        let cases: &[(&str, &str)] = &[
            (
                "redirect_uri = \"https://a.example/cb\"",
                "sso.redirect_uri",
            ),
            (
                "redirect_uri = \"http://a.example/.stagedoor/callback\"",
                "sso.redirect_uri",
            ),
            ("external_scheme = \"http\"", "sso.external_scheme"),
            ("external_scheme = \"ftp\"", "sso.external_scheme"),
            ("cookie_domain = \".example.com\"", "sso.cookie_domain"),
            ("cookie_domain = \"com\"", "sso.cookie_domain"),
            ("cookie_domain = \"Example.com\"", "sso.cookie_domain"),
            ("max_session_seconds = 10", "sso.max_session_seconds"),
            (
                "return_hosts = [\"ok.example\", \"*.Bad\"]",
                "sso.return_hosts[1]",
            ),
            ("scopes = [\"email\"]", "sso.scopes"),
            (
                "post_logout_redirect_uri = \"/x\"",
                "sso.post_logout_redirect_uri",
            ),
            ("keys_env = \"SSO_TEST_NOT_SET_EVER\"", "sso.keys_env"),
            (
                "client_secret_env = \"SSO_TEST_NOT_SET_EVER\"",
                "sso.client_secret_env",
            ),
        ];
        for (extra, key) in cases {
            let errors = errors_for(extra);
            assert!(
                errors.len() == 1 && errors[0].starts_with(&format!("{key}: ")),
                "{extra}: {errors:?}"
            );
        }
        // Redirect URI with the right scheme and path passes; http with cookie_secure off too.
        assert!(
            errors_for("redirect_uri = \"https://sso.example/.stagedoor/callback\"").is_empty()
        );
        assert!(
            errors_for("external_scheme = \"http\"\ncookie_secure = false\nredirect_uri = \"http://a.example/.stagedoor/callback\"")
                .is_empty()
        );
    }

    #[test]
    fn keys_and_issuer_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let k = "ab".repeat(32);
        std::fs::write(dir.path().join("s"), "x").unwrap();
        for (keys, want) in [
            (String::new(), "sso.keys_file: no key"),
            ("abc".to_owned(), "sso.keys_file: key 1"),
            (format!("{k}\n{k}"), "sso.keys_file: key 2: duplicate"),
        ] {
            std::fs::write(dir.path().join("k"), keys).unwrap();
            let cfg: SsoConfig = toml::from_str(
                "listen = \"127.0.0.1:0\"\nissuer = \"https://other.example\"\nclient_id = \"c\"\n\
                 client_secret_file = \"s\"\nkeys_file = \"k\"",
            )
            .unwrap();
            let errors: Vec<String> = cfg
                .validate(dir.path(), &issuers())
                .iter()
                .map(ToString::to_string)
                .collect();
            assert_eq!(errors.len(), 2, "{errors:?}");
            assert!(errors[0].starts_with("sso.issuer: "), "{errors:?}");
            assert!(errors[1].starts_with(want), "{errors:?}");
        }
    }
}
