//! The `[catalog]` TOML section: which source feeds the policy (descriptor files or a
//! live Backstage) and how it is refreshed. Read once at startup, checked by
//! [`CatalogConfig::validate`], then handed to [`crate::catalog::CatalogSource::start`].
//!
//! Decisions:
//! - `url` is the Backstage *backend* base URL (`backend.baseUrl`, optionally with a
//!   path prefix when behind a proxy); `/api/catalog/...` is appended. URLs with
//!   credentials, a query or a fragment are refused (they would end up in logs).
//! - `token_env` is optional (a Backstage with auth disabled needs none), but when it
//!   is set the variable must hold a non-empty token without whitespace (as Backstage
//!   itself requires).
//! - `kinds` limits what is synced (default: the kinds a policy can refer to); it
//!   keeps `Location` and `Template` entities, and their traffic, out. Empty = all.
//! - Relative paths (`files` globs, `snapshot`) are resolved against the directory of
//!   the configuration file, which the caller passes as `base_dir`.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::error::CatalogConfigError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// Backstage descriptor YAML files (the embedded default).
    #[default]
    File,
    /// A live Backstage backend, polled.
    Backstage,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogConfig {
    #[serde(default)]
    pub source: SourceKind,
    /// Globs of descriptor files (source = "file").
    #[serde(default = "default_files")]
    pub files: Vec<String>,
    /// How often (s) the file source checks the files' modification times.
    #[serde(default = "default_reload_seconds")]
    pub reload_seconds: u64,
    /// Backstage backend base URL (source = "backstage").
    #[serde(default)]
    pub url: Option<String>,
    /// Name of the environment variable holding the Backstage static token.
    #[serde(default)]
    pub token_env: Option<String>,
    /// Backstage poll interval (s); errors back off from here.
    #[serde(default = "default_poll_seconds")]
    pub poll_seconds: u64,
    /// Where the last good Backstage sync is kept, and loaded from when Backstage is
    /// unreachable at startup.
    #[serde(default)]
    pub snapshot: Option<PathBuf>,
    /// Entity kinds fetched from Backstage.
    #[serde(default = "default_kinds")]
    pub kinds: Vec<String>,
}

fn default_files() -> Vec<String> {
    vec!["catalog/*.yaml".to_owned()]
}
fn default_reload_seconds() -> u64 {
    5
}
fn default_poll_seconds() -> u64 {
    30
}
fn default_kinds() -> Vec<String> {
    [
        "Component",
        "API",
        "Resource",
        "System",
        "Domain",
        "Group",
        "User",
    ]
    .map(str::to_owned)
    .to_vec()
}

impl Default for CatalogConfig {
    fn default() -> Self {
        Self {
            source: SourceKind::default(),
            files: default_files(),
            reload_seconds: default_reload_seconds(),
            url: None,
            token_env: None,
            poll_seconds: default_poll_seconds(),
            snapshot: None,
            kinds: default_kinds(),
        }
    }
}

impl CatalogConfig {
    /// Checks what can be checked before starting: globs parse and match, the URL is
    /// usable, the token variable is set, intervals are non-zero.
    pub fn validate(&self, base_dir: &Path) -> Result<(), CatalogConfigError> {
        match self.source {
            SourceKind::File => {
                if self.reload_seconds == 0 {
                    return Err(CatalogConfigError::ZeroInterval {
                        key: "reload_seconds",
                    });
                }
                if self.files.is_empty() {
                    return Err(CatalogConfigError::NoFiles);
                }
                for pattern in &self.files {
                    if super::file::expand(pattern, base_dir)?.is_empty() {
                        return Err(CatalogConfigError::NoMatch {
                            pattern: pattern.clone(),
                        });
                    }
                }
            }
            SourceKind::Backstage => {
                if self.poll_seconds == 0 {
                    return Err(CatalogConfigError::ZeroInterval {
                        key: "poll_seconds",
                    });
                }
                let url = self.url.as_deref().ok_or(CatalogConfigError::MissingUrl)?;
                parse_base_url(url)?;
                self.token()?;
                if let Some(kind) = self.kinds.iter().find(|k| !valid_kind(k)) {
                    return Err(CatalogConfigError::BadKind { kind: kind.clone() });
                }
                if let Some(path) = self.snapshot_path(base_dir) {
                    let dir = path.parent().unwrap_or(Path::new("."));
                    if !dir.as_os_str().is_empty() && !dir.is_dir() {
                        return Err(CatalogConfigError::SnapshotDir {
                            dir: dir.to_owned(),
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// The static token from the environment variable named by `token_env`.
    pub fn token(&self) -> Result<Option<String>, CatalogConfigError> {
        let Some(var) = self.token_env.as_deref() else {
            return Ok(None);
        };
        match std::env::var(var) {
            Ok(token) if token.is_empty() => Err(CatalogConfigError::Token {
                reason: format!("environment variable {var} is empty"),
            }),
            Ok(token) if token.chars().any(char::is_whitespace) => Err(CatalogConfigError::Token {
                reason: format!("environment variable {var} contains whitespace"),
            }),
            Ok(token) => Ok(Some(token)),
            Err(_) => Err(CatalogConfigError::Token {
                reason: format!("environment variable {var} is not set"),
            }),
        }
    }

    /// `snapshot` resolved against `base_dir`.
    pub fn snapshot_path(&self, base_dir: &Path) -> Option<PathBuf> {
        self.snapshot.as_ref().map(|p| base_dir.join(p))
    }
}

fn valid_kind(kind: &str) -> bool {
    !kind.is_empty() && kind.chars().all(|c| c.is_ascii_alphanumeric())
}

/// Parses and checks `catalog.url`.
pub(crate) fn parse_base_url(url: &str) -> Result<reqwest::Url, CatalogConfigError> {
    let bad = |reason: &str| CatalogConfigError::BadUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let parsed = reqwest::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(bad("scheme must be http or https"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(bad("no host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(bad("credentials in the URL; use catalog.token_env"));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(bad("query or fragment not allowed"));
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> Result<CatalogConfig, toml::de::Error> {
        toml::from_str(toml_text)
    }

    #[test]
    fn defaults_match_the_documented_ones() {
        let c = parse("").unwrap();
        assert_eq!(c, CatalogConfig::default());
        assert_eq!(c.source, SourceKind::File);
        assert_eq!(c.files, ["catalog/*.yaml"]);
        assert_eq!(c.poll_seconds, 30);
    }

    #[test]
    fn unknown_keys_and_sources_are_refused() {
        assert!(parse("sorce = \"file\"").is_err());
        assert!(parse("source = \"ldap\"").is_err());
    }

    #[test]
    fn backstage_needs_a_usable_url() {
        let dir = Path::new(".");
        let mut c = parse("source = \"backstage\"").unwrap();
        assert_eq!(c.validate(dir), Err(CatalogConfigError::MissingUrl));
        for url in [
            "not a url",
            "ftp://backstage",
            "https://user:pw@backstage",
            "https://backstage/?x=1",
        ] {
            c.url = Some(url.to_owned());
            let err = c.validate(dir).unwrap_err();
            assert!(
                matches!(err, CatalogConfigError::BadUrl { .. }),
                "{url}: {err}"
            );
            assert!(err.to_string().starts_with("catalog.url:"));
        }
        c.url = Some("https://backstage.example.com/prefix/".to_owned());
        assert_eq!(c.validate(dir), Ok(()));
        c.poll_seconds = 0;
        assert_eq!(
            c.validate(dir),
            Err(CatalogConfigError::ZeroInterval {
                key: "poll_seconds"
            })
        );
        c.poll_seconds = 1;
        c.snapshot = Some("no-such-dir/snapshot.json".into());
        let err = c.validate(dir).unwrap_err();
        assert!(
            matches!(err, CatalogConfigError::SnapshotDir { .. }),
            "{err}"
        );
        assert!(err.to_string().starts_with("catalog.snapshot:"));
        c.snapshot = Some("snapshot.json".into());
        assert_eq!(c.validate(dir), Ok(()));
        c.kinds = vec!["Component,User".to_owned()];
        assert!(matches!(
            c.validate(dir),
            Err(CatalogConfigError::BadKind { .. })
        ));
    }

    #[test]
    fn token_env_must_name_a_set_variable() {
        let dir = Path::new(".");
        let mut c = parse(
            "source = \"backstage\"\nurl = \"http://127.0.0.1:7007\"\n\
             token_env = \"STAGEDOOR_TEST_SURELY_UNSET_TOKEN\"",
        )
        .unwrap();
        let err = c.validate(dir).unwrap_err();
        assert!(
            err.to_string()
                .contains("STAGEDOOR_TEST_SURELY_UNSET_TOKEN")
        );
        assert!(err.to_string().starts_with("catalog.token_env:"));
        // PATH is set in any environment the tests run in, and has no whitespace in CI.
        c.token_env = Some("PATH".to_owned());
        let path = std::env::var("PATH").unwrap();
        if !path.contains(char::is_whitespace) {
            assert_eq!(c.token().unwrap().as_deref(), Some(path.as_str()));
        }
    }

    #[test]
    fn file_globs_must_parse_and_match() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("catalog")).unwrap();
        let c = CatalogConfig::default();
        assert_eq!(
            c.validate(dir.path()),
            Err(CatalogConfigError::NoMatch {
                pattern: "catalog/*.yaml".to_owned()
            })
        );
        std::fs::write(dir.path().join("catalog/a.yaml"), "").unwrap();
        assert_eq!(c.validate(dir.path()), Ok(()));

        let bad = CatalogConfig {
            files: vec!["catalog/[.yaml".to_owned()],
            ..CatalogConfig::default()
        };
        let err = bad.validate(dir.path()).unwrap_err();
        assert!(
            matches!(err, CatalogConfigError::InvalidGlob { .. }),
            "{err}"
        );
        assert!(err.to_string().starts_with("catalog.files:"));

        let none = CatalogConfig {
            files: vec![],
            ..CatalogConfig::default()
        };
        assert_eq!(none.validate(dir.path()), Err(CatalogConfigError::NoFiles));
    }
}
