//! Token stage, the service: per-issuer key-set snapshots kept fresh by background
//! tasks (rotation, unknown-kid refetch with cooldown, stale-if-error, clock-skew
//! reading) and the verified-token cache in front of the pure core
//! (message → token → `Identity` → policy).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use aws_lc_rs::digest;
use moka::sync::Cache;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{info, warn};

use super::config::{ConfigError, IssuerConfig, KeySource, TokenConfig, validate_all};
use super::fetch::{self, FetchError};
use super::jose::{RawClaims, parse_jws};
use super::jwk::KeySet;
use super::verify::{check_claims, check_signature, unverified_issuer};
use crate::identity::Identity;
use crate::reason::Reason;

/// Longest a request waits for an unknown-kid refetch before answering `unknown_key`.
pub const UNKNOWN_KID_MAX_WAIT: Duration = Duration::from_secs(1);
/// How often a `jwks_file` is re-read to notice changes.
pub const FILE_POLL: Duration = Duration::from_secs(2);

const NEVER: u64 = u64::MAX;

/// Verifies bearer tokens for every configured issuer. Cheap to clone.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

struct Inner {
    issuers: Vec<Arc<IssuerState>>,
    cache: Option<Cache<[u8; 32], Arc<Cached>>>,
    settings: TokenConfig,
    groups_claims: Vec<String>,
    _stop: Option<DropGuard>,
}

/// A verified token remembered by the hash of its bytes.
struct Cached {
    identity: Arc<Identity>,
    issuer: usize,
    key_fingerprint: u64,
    exp: i64,
    /// `exp - now` at insert: the entry's lifetime in the cache.
    ttl: Duration,
}

struct CacheExpiry;

impl moka::Expiry<[u8; 32], Arc<Cached>> for CacheExpiry {
    fn expire_after_create(
        &self,
        _: &[u8; 32],
        v: &Arc<Cached>,
        _: std::time::Instant,
    ) -> Option<Duration> {
        // Never past the token's `exp` (also checked against `now` on every hit).
        Some(v.ttl)
    }
}

/// What one issuer's key set has been doing, for metrics and readiness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerStatus {
    pub issuer: String,
    /// A usable (not too stale) key set with at least one key is loaded.
    pub ready: bool,
    pub keys_loaded: usize,
    /// JWKs left out of the last loaded set (unknown kty, weak, wrong use, ...).
    pub keys_skipped: u64,
    pub refresh_ok: u64,
    pub refresh_errors: u64,
    pub last_good_refresh_unix: Option<i64>,
    /// Provider `Date` minus local clock at the last fetch.
    pub clock_skew_seconds: Option<i64>,
    pub unknown_kid_refetches: u64,
    pub refetches_suppressed: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
}

/// SHA-256 of a token: the verified-token cache key (and, truncated, the decision
/// log's fingerprint).
pub fn token_digest(token: &str) -> [u8; 32] {
    let mut k = [0u8; 32];
    k.copy_from_slice(digest::digest(&digest::SHA256, token.as_bytes()).as_ref());
    k
}

/// A snapshot of every issuer plus the shared cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierStatus {
    pub issuers: Vec<IssuerStatus>,
    pub cache_entries: u64,
}

struct IssuerState {
    cfg: IssuerConfig,
    source: Option<KeySource>,
    keys: ArcSwapOption<KeySet>,
    base: Instant,
    last_good_ms: AtomicU64,
    last_refetch_ms: AtomicU64,
    in_flight: AtomicBool,
    wake: Notify,
    fetched: watch::Sender<u64>,
    skipped: AtomicU64,
    refresh_ok: AtomicU64,
    refresh_errors: AtomicU64,
    last_good_unix: AtomicI64,
    skew: AtomicI64,
    has_skew: AtomicBool,
    refetches: AtomicU64,
    suppressed: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl IssuerState {
    fn new(cfg: IssuerConfig, source: Option<KeySource>) -> IssuerState {
        IssuerState {
            cfg,
            source,
            keys: ArcSwapOption::empty(),
            base: Instant::now(),
            last_good_ms: AtomicU64::new(NEVER),
            last_refetch_ms: AtomicU64::new(NEVER),
            in_flight: AtomicBool::new(false),
            wake: Notify::new(),
            fetched: watch::Sender::new(0),
            skipped: AtomicU64::new(0),
            refresh_ok: AtomicU64::new(0),
            refresh_errors: AtomicU64::new(0),
            last_good_unix: AtomicI64::new(i64::MIN),
            skew: AtomicI64::new(0),
            has_skew: AtomicBool::new(false),
            refetches: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        self.base.elapsed().as_millis() as u64
    }

    /// A usable key set with at least one key.
    fn ready(&self) -> bool {
        self.usable().is_some_and(|k| !k.is_empty())
    }

    /// The current key set, unless it is older than `max_stale_seconds` (fail closed).
    fn usable(&self) -> Option<Arc<KeySet>> {
        let keys = self.keys.load_full()?;
        if self.refreshed() {
            let last = self.last_good_ms.load(Ordering::Acquire);
            if last == NEVER
                || self.now_ms().saturating_sub(last) > self.cfg.max_stale_seconds * 1000
            {
                return None;
            }
        }
        Some(keys)
    }

    /// Keys that come from a URL or a file go stale; static sets and secrets do not.
    fn refreshed(&self) -> bool {
        matches!(
            self.source,
            Some(KeySource::JwksUrl(_) | KeySource::Discovery | KeySource::JwksFile(_))
        )
    }

    fn install(&self, keys: KeySet) {
        self.keys.store(Some(Arc::new(keys)));
        self.mark_good();
    }

    fn mark_good(&self) {
        self.last_good_ms.store(self.now_ms(), Ordering::Release);
        self.last_good_unix
            .store(fetch::unix_now(), Ordering::Relaxed);
        self.refresh_ok.fetch_add(1, Ordering::Relaxed);
    }

    fn record_skew(&self, skew: Option<i64>) {
        let Some(skew) = skew else { return };
        self.skew.store(skew, Ordering::Relaxed);
        self.has_skew.store(true, Ordering::Relaxed);
        if skew.unsigned_abs() * 2 > self.cfg.leeway_seconds {
            warn!(issuer = %self.cfg.issuer, skew_seconds = skew, leeway_seconds = self.cfg.leeway_seconds,
                "identity provider clock differs from ours by more than half the leeway");
        }
    }

    /// Asks the refresher for one fetch (at most one per cooldown) and waits a bounded
    /// time for a fetch to finish. A flood of unknown kids costs one fetch per cooldown.
    async fn refetch_for_unknown_kid(&self) {
        if !self.refreshed() {
            return;
        }
        let mut done = self.fetched.subscribe();
        let now = self.now_ms();
        let last = self.last_refetch_ms.load(Ordering::Acquire);
        let cooled =
            last == NEVER || now.saturating_sub(last) >= self.cfg.cooldown().as_millis() as u64;
        if cooled
            && self
                .last_refetch_ms
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.refetches.fetch_add(1, Ordering::Relaxed);
            self.in_flight.store(true, Ordering::Release);
            self.wake.notify_one();
        } else if !self.in_flight.load(Ordering::Acquire) {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let _ = tokio::time::timeout(UNKNOWN_KID_MAX_WAIT, done.changed()).await;
    }

    fn status(&self) -> IssuerStatus {
        let last = self.last_good_unix.load(Ordering::Relaxed);
        IssuerStatus {
            issuer: self.cfg.issuer.clone(),
            ready: self.ready(),
            keys_loaded: self.keys.load().as_ref().map_or(0, |k| k.len()),
            keys_skipped: self.skipped.load(Ordering::Relaxed),
            refresh_ok: self.refresh_ok.load(Ordering::Relaxed),
            refresh_errors: self.refresh_errors.load(Ordering::Relaxed),
            last_good_refresh_unix: (last != i64::MIN).then_some(last),
            clock_skew_seconds: self
                .has_skew
                .load(Ordering::Relaxed)
                .then(|| self.skew.load(Ordering::Relaxed)),
            unknown_kid_refetches: self.refetches.load(Ordering::Relaxed),
            refetches_suppressed: self.suppressed.load(Ordering::Relaxed),
            cache_hits: self.hits.load(Ordering::Relaxed),
            cache_misses: self.misses.load(Ordering::Relaxed),
        }
    }
}

/// Mutable state of one refresher task.
#[derive(Default)]
struct Refresher {
    jwks_uri: Option<String>,
    file_bytes: Option<Vec<u8>>,
    failures: u32,
}

impl Refresher {
    /// One refresh; returns the delay before the next one.
    async fn refresh(&mut self, st: &IssuerState, client: &reqwest::Client) -> Duration {
        let cfg = &st.cfg;
        let result = match &st.source {
            Some(KeySource::JwksFile(path)) => self.refresh_file(st, path).await,
            Some(KeySource::JwksUrl(url)) => self.refresh_url(st, client, url).await,
            Some(KeySource::Discovery) => {
                let uri = match self.jwks_uri.clone() {
                    Some(u) => Ok(u),
                    None => fetch::discover(client, &cfg.issuer, cfg.allow_insecure_http)
                        .await
                        .map(|(u, skew)| {
                            st.record_skew(skew);
                            u
                        }),
                };
                match uri {
                    Ok(uri) => {
                        let r = self.refresh_url(st, client, &uri).await;
                        // Rediscover next time if the advertised JWKS failed.
                        self.jwks_uri = r.is_ok().then_some(uri);
                        r
                    }
                    Err(e) => Err(e),
                }
            }
            _ => return Duration::from_secs(cfg.max_refresh_seconds),
        };
        match result {
            Ok(max_age) => {
                self.failures = 0;
                let ttl = max_age
                    .unwrap_or(cfg.max_refresh_seconds)
                    .clamp(cfg.min_refresh_seconds, cfg.max_refresh_seconds);
                let ttl = Duration::from_secs(ttl);
                if matches!(st.source, Some(KeySource::JwksFile(_))) {
                    ttl.min(FILE_POLL)
                } else {
                    ttl
                }
            }
            Err(e) => {
                st.refresh_errors.fetch_add(1, Ordering::Relaxed);
                self.failures = self.failures.saturating_add(1);
                warn!(issuer = %cfg.issuer, error = %e, failures = self.failures,
                    "key set refresh failed; keeping the last good key set");
                let backoff = 1u64 << self.failures.min(6).saturating_sub(1);
                Duration::from_secs(backoff.min(cfg.min_refresh_seconds))
            }
        }
    }

    async fn refresh_url(
        &mut self,
        st: &IssuerState,
        client: &reqwest::Client,
        url: &str,
    ) -> Result<Option<u64>, FetchError> {
        let doc = fetch::get(client, url, st.cfg.allow_insecure_http).await?;
        st.record_skew(doc.skew);
        install(st, &doc.body)?;
        Ok(doc.max_age)
    }

    async fn refresh_file(
        &mut self,
        st: &IssuerState,
        path: &str,
    ) -> Result<Option<u64>, FetchError> {
        let meta = tokio::fs::metadata(path)
            .await
            .map_err(|e| FetchError::File(e.to_string()))?;
        if meta.len() > fetch::MAX_DOCUMENT_BYTES as u64 {
            return Err(FetchError::TooLarge);
        }
        let bytes = tokio::fs::read(path)
            .await
            .map_err(|e| FetchError::File(e.to_string()))?;
        if self.file_bytes.as_deref() == Some(&bytes[..]) {
            st.mark_good();
            return Ok(None);
        }
        install(st, &bytes)?;
        self.file_bytes = Some(bytes);
        Ok(None)
    }
}

fn install(st: &IssuerState, body: &[u8]) -> Result<(), FetchError> {
    let (keys, skipped) = KeySet::from_jwks(body, st.cfg.allowed_algorithms())?;
    for s in &skipped {
        warn!(issuer = %st.cfg.issuer, index = s.index, kid = ?s.kid, reason = %s.reason, "JWK skipped");
    }
    info!(issuer = %st.cfg.issuer, keys = keys.len(), skipped = skipped.len(), "key set loaded");
    st.skipped.store(skipped.len() as u64, Ordering::Relaxed);
    st.install(keys);
    Ok(())
}

async fn run(st: Arc<IssuerState>, client: reqwest::Client, stop: CancellationToken) {
    let mut r = Refresher::default();
    loop {
        st.in_flight.store(true, Ordering::Release);
        let delay = tokio::select! {
            _ = stop.cancelled() => return,
            d = r.refresh(&st, &client) => d,
        };
        st.in_flight.store(false, Ordering::Release);
        st.fetched.send_modify(|g| *g = g.wrapping_add(1));
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
            _ = st.wake.notified() => {}
        }
    }
}

impl Verifier {
    /// Validates the configs, then starts one key-set task per issuer (first fetch right
    /// away). Must be called inside a tokio runtime. Tasks stop when the last clone drops.
    ///
    /// # Errors
    /// The first [`ConfigError`].
    pub fn start(
        configs: Vec<IssuerConfig>,
        settings: TokenConfig,
    ) -> Result<Verifier, ConfigError> {
        settings.validate()?;
        validate_all(&configs)?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| ConfigError::NoRuntime)?;
        let stop = CancellationToken::new();
        let client = fetch::http_client().map_err(|e| ConfigError::HttpClient(e.to_string()))?;
        let mut issuers = Vec::with_capacity(configs.len());
        for cfg in configs {
            let source = cfg.source()?;
            let st = Arc::new(IssuerState::new(cfg, Some(source.clone())));
            if let KeySource::SharedSecret(var) = &source {
                // validate() checked it is set and long enough.
                let secret = std::env::var_os(var).unwrap_or_default();
                st.install(KeySet::from_secret(
                    None,
                    secret.as_encoded_bytes(),
                    st.cfg.allowed_algorithms(),
                ));
            } else {
                runtime.spawn(run(st.clone(), client.clone(), stop.child_token()));
            }
            issuers.push(st);
        }
        Ok(Verifier::from_parts(
            issuers,
            settings,
            Some(stop.drop_guard()),
        ))
    }

    /// A verifier over fixed key sets, with no background task (tests, benches, tools).
    /// The configs' key-source fields are ignored.
    pub fn with_key_sets(sets: Vec<(IssuerConfig, KeySet)>, settings: TokenConfig) -> Verifier {
        let issuers = sets
            .into_iter()
            .map(|(cfg, keys)| {
                let st = IssuerState::new(cfg, None);
                st.install(keys);
                Arc::new(st)
            })
            .collect();
        Verifier::from_parts(issuers, settings, None)
    }

    fn from_parts(
        issuers: Vec<Arc<IssuerState>>,
        settings: TokenConfig,
        stop: Option<DropGuard>,
    ) -> Verifier {
        let mut groups_claims: Vec<String> = Vec::new();
        for st in &issuers {
            if !groups_claims.contains(&st.cfg.groups_claim) {
                groups_claims.push(st.cfg.groups_claim.clone());
            }
        }
        let cache = (settings.cache_entries > 0).then(|| {
            Cache::builder()
                .max_capacity(settings.cache_entries)
                .expire_after(CacheExpiry)
                .build()
        });
        Verifier {
            inner: Arc::new(Inner {
                issuers,
                cache,
                settings,
                groups_claims,
                _stop: stop,
            }),
        }
    }

    /// Every issuer has a usable key set with at least one key (a set whose every key
    /// was skipped, or a secret too short for every configured HS*, verifies nothing).
    pub fn ready(&self) -> bool {
        self.inner.issuers.iter().all(|st| st.ready())
    }

    pub fn status(&self) -> VerifierStatus {
        VerifierStatus {
            issuers: self.inner.issuers.iter().map(|st| st.status()).collect(),
            cache_entries: self.inner.cache.as_ref().map_or(0, |c| c.entry_count()),
        }
    }

    /// Verifies `token` at `now_unix`. Awaits only for a bounded unknown-kid refetch.
    ///
    /// # Errors
    /// The [`Reason`] the token was rejected with.
    pub async fn verify(&self, token: &str, now_unix: i64) -> Result<Arc<Identity>, Reason> {
        self.verify_digested(token, &token_digest(token), now_unix)
            .await
    }

    /// [`Verifier::verify`] for a caller that already holds `token_digest(token)`
    /// (the agent reuses it for the decision log's token fingerprint).
    ///
    /// # Errors
    /// The [`Reason`] the token was rejected with.
    pub async fn verify_digested(
        &self,
        token: &str,
        token_digest: &[u8; 32],
        now_unix: i64,
    ) -> Result<Arc<Identity>, Reason> {
        let inner = &*self.inner;
        if token.is_empty() {
            return Err(Reason::MissingToken);
        }
        if token.len() > inner.settings.max_token_bytes {
            return Err(Reason::TokenTooLarge);
        }
        let cache_key = inner.cache.as_ref().map(|_| *token_digest);
        if let (Some(cache), Some(key)) = (&inner.cache, &cache_key)
            && let Some(hit) = cache.get(key)
        {
            let st = &inner.issuers[hit.issuer];
            // Never past `exp`, never past the key it was verified with.
            let key_still_trusted = st.usable().is_some_and(|k| k.contains(hit.key_fingerprint));
            if now_unix < hit.exp && key_still_trusted {
                st.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(hit.identity.clone());
            }
            cache.invalidate(key);
        }

        let jws = parse_jws(token, inner.settings.max_token_bytes)?;
        let raw = RawClaims::parse(&jws.payload, &inner.groups_claims)?;
        let iss = unverified_issuer(&raw)?;
        let (idx, st) = inner
            .issuers
            .iter()
            .enumerate()
            .find(|(_, st)| st.cfg.issuer == iss)
            .ok_or(Reason::BadIssuer)?;
        let allowed = st.cfg.allowed_algorithms();
        st.misses.fetch_add(1, Ordering::Relaxed);
        let keys = st.usable().ok_or(Reason::KeysUnavailable)?;
        let fp = match check_signature(&jws, &keys, allowed) {
            Err(Reason::UnknownKey) => {
                st.refetch_for_unknown_kid().await;
                let keys = st.usable().ok_or(Reason::KeysUnavailable)?;
                check_signature(&jws, &keys, allowed)?
            }
            other => other?,
        };
        let claims = check_claims(&jws, &raw, &st.cfg, now_unix, fp)?;
        let identity = Arc::new(claims.to_identity());
        if let (Some(cache), Some(key)) = (&inner.cache, cache_key)
            && claims.exp > now_unix
        {
            cache.insert(
                key,
                Arc::new(Cached {
                    identity: identity.clone(),
                    issuer: idx,
                    key_fingerprint: fp,
                    exp: claims.exp,
                    ttl: Duration::from_secs((claims.exp - now_unix).clamp(0, 86_400) as u64),
                }),
            );
        }
        Ok(identity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>(_: &T) {}
    fn assert_send<T: Send>(_: T) {}

    #[test]
    fn verifier_and_its_future_can_cross_threads() {
        let v = Verifier::with_key_sets(Vec::new(), TokenConfig::default());
        assert_send_sync(&v);
        assert_send(v.verify("a.b.c", 0));
    }

    #[test]
    fn start_outside_a_runtime_is_a_typed_error() {
        let cfg = IssuerConfig::new("https://id.example", &["api"], KeySource::Discovery);
        assert_eq!(
            Verifier::start(vec![cfg], TokenConfig::default()).err(),
            Some(ConfigError::NoRuntime)
        );
    }
}
