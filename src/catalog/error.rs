//! Typed failures of the catalog sources (config → file/Backstage load → snapshot).
//! Every bad input ends here, never in a panic; none of them carries the Backstage token.

use std::path::PathBuf;

/// A `[catalog]` section that cannot work. Each variant names the key at fault.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CatalogConfigError {
    #[error("catalog.files: at least one glob is required when catalog.source = \"file\"")]
    NoFiles,
    #[error("catalog.files: {pattern:?} is not a valid glob: {reason}")]
    InvalidGlob { pattern: String, reason: String },
    /// A directory could not be read while expanding a glob: not a bad glob. Out of
    /// file descriptors (EMFILE) says so, rather than "not a valid glob".
    #[error("catalog.files: {pattern:?}: cannot read {}: {reason}", path.display())]
    GlobRead {
        pattern: String,
        path: PathBuf,
        reason: String,
    },
    #[error("catalog.files: {pattern:?} matches no file")]
    NoMatch { pattern: String },
    #[error("catalog.url: required when catalog.source = \"backstage\"")]
    MissingUrl,
    #[error("catalog.url: {url:?} is not a usable http(s) base URL: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("catalog.token_env: {reason}")]
    Token { reason: String },
    #[error("catalog.{key}: must be at least 1")]
    ZeroInterval { key: &'static str },
    #[error("catalog.snapshot: directory {dir} does not exist")]
    SnapshotDir { dir: PathBuf },
    #[error("catalog.kinds: {kind:?} is not a valid entity kind")]
    BadKind { kind: String },
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error(transparent)]
    Config(#[from] CatalogConfigError),

    // ---- file source ----
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file not parsed at all (over the byte cap, or nested deeper than the
    /// pre-scan allows); the whole load fails and the last good catalog stays.
    #[error("{path}: refused: {reason}")]
    FileRefused { path: PathBuf, reason: String },
    /// Loading the files did not finish within the deadline; the load was abandoned.
    #[error(
        "catalog files not loaded within {seconds} s; the load was abandoned (a file too large or too deeply nested for the pre-scan to catch?)"
    )]
    LoadTimeout { seconds: u64 },
    /// One YAML document that is not a usable entity; the rest of the load goes on.
    #[error("{file}, document {index}: {reason}")]
    Document {
        file: PathBuf,
        /// 0-based position of the document in its file.
        index: usize,
        reason: String,
    },

    // ---- Backstage source ----
    #[error("Backstage request {url} failed: {reason}")]
    Http { url: String, reason: String },
    #[error(
        "Backstage refused {url} with HTTP {status} ({message}); check the static token and its accessRestrictions"
    )]
    Auth {
        url: String,
        status: u16,
        message: String,
    },
    #[error("Backstage answered {url} with HTTP {status}: {message}")]
    Status {
        url: String,
        status: u16,
        message: String,
    },
    #[error(
        "Backstage answered {url} with a redirect (HTTP {status}); redirects are not followed, fix catalog.url"
    )]
    Redirect { url: String, status: u16 },
    #[error("Backstage response from {url} exceeds {limit} bytes")]
    TooLarge { url: String, limit: usize },
    #[error("Backstage response from {url} is not what the catalog API returns: {reason}")]
    Protocol { url: String, reason: String },

    // ---- last-good snapshot file ----
    #[error("snapshot {path}: {reason}")]
    Snapshot { path: PathBuf, reason: String },
}
