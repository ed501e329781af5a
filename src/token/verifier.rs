//! Token stage, the service: per-issuer key-set snapshots kept fresh by background
//! tasks (rotation, unknown-kid refetch with cooldown, stale-if-error, clock-skew
//! reading) and the verified-token cache in front of the pure core
//! (message → token → `Identity` → policy).
//!
//! # Refreshes and unknown-kid refetches
//!
//! One task per issuer does every fetch, so fetches of one issuer never overlap.
//!
//! - **Scheduled refreshes** keep their own clock: the next one is due the refresh
//!   interval (`Cache-Control: max-age` clamped into `[min, max]_refresh_seconds`, or
//!   the error backoff) after the previous *scheduled* one. An unknown-kid refetch
//!   neither postpones nor replaces it, and the cooldown never applies to it. (Before,
//!   each refetch restarted the interval, so a flood timed just before a scheduled
//!   refresh pushed a real rotation back by a whole interval.)
//! - **Unknown-kid refetches**: a token whose `kid` is not in the set asks for one
//!   fetch; at most one is started per `unknown_kid_cooldown_seconds`, counted from the
//!   start of the previous one. A request that finds a fetch already running or
//!   requested (scheduled or refetch) waits for that one instead of starting its own.
//!   Inside the cooldown, with no fetch running, the request fails at once as
//!   `unknown_key` and the refetch is counted as suppressed.
//! - **Bounded wait**: a request waits at most [`UNKNOWN_KID_MAX_WAIT`] (250 ms, half
//!   the shipped SPOE `timeout processing 500ms`) for the fetch, then fails as
//!   `unknown_key`. The fetch is not cancelled: it runs on in the issuer's task (up to
//!   the HTTP timeout), and every later request uses the set it installs.
//! - **Any fetch installs the whole set**: whatever triggered it, a fetched set is
//!   used, so a refetch caused by a flood of bogus kids also brings in a real new key
//!   published meanwhile.
//!
//! What a flood can and cannot do. No request can tell a real new kid from a bogus one
//! before fetching, so a bounded fetch rate means a flood can use up the cooldown; a
//! key the provider starts signing with before the agent fetched it is then picked up
//! by the next scheduled refresh or the next refetch the cooldown allows, whichever
//! comes first: at most `min(unknown_kid_cooldown_seconds, refresh interval)` after
//! the rotation (without a flood, the first request with the new kid fetches it at
//! once). A flood cannot delay or suppress a scheduled refresh, and costs the provider
//! at most one extra fetch per cooldown. A provider that publishes a new key at least
//! one refresh interval before signing with it is not affected at all.
//!
//! Counters (`stagedoor_jwks_*`, see `metrics.rs`): refreshes by result (every fetch),
//! unknown-kid refetches by result (`changed`, `unchanged`, `error`), suppressed
//! refetches, and skipped keys by reason.
//!
//! A fetched JWKS is parsed only when its bytes differ from the last one installed, and
//! then off the async workers (`spawn_blocking`), within [`IMPORT_DEADLINE`]: the RSA
//! modulus checks cost a modular exponentiation per new modulus, within a per-document
//! budget (`modulus`); a document with keys left over the budget is parsed again on
//! the next fetch even if unchanged.

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

use super::config::{IssuerConfig, KeySource, TokenConfig, VerifierError, validate_all};
use super::fetch::{self, FetchError};
use super::jose::{RawClaims, parse_jws};
use super::jwk::{JwksError, KeySet, SkipReason, Skipped};
use super::verify::{check_claims, check_signature, unverified_issuer};
use crate::identity::Identity;
use crate::reason::Reason;

/// Longest a request waits for an unknown-kid refetch before answering `unknown_key`:
/// half the shipped SPOE `timeout processing 500ms`, which must also cover the SPOP
/// round trip and the policy. The fetch itself goes on in the background.
pub const UNKNOWN_KID_MAX_WAIT: Duration = Duration::from_millis(250);
/// Longest the issuer's task waits for a JWKS to be parsed. The per-document budget
/// for modulus checks (`modulus`) keeps a parse to about 2.5 s of one core at worst
/// (10 s was seen on a 2-core host loaded six times over); this is the backstop, after which the fetch fails (the parse runs on to its end on
/// its blocking thread, bounded by that budget).
pub const IMPORT_DEADLINE: Duration = Duration::from_secs(30);
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
    /// JWKs left out since start, by reason (each parsed document counts its skipped
    /// keys once; a document fetched again unchanged is not parsed again). Only
    /// reasons seen so far.
    pub keys_skipped_total: Vec<(SkipReason, u64)>,
    pub refresh_ok: u64,
    pub refresh_errors: u64,
    pub last_good_refresh_unix: Option<i64>,
    /// Provider `Date` minus local clock at the last fetch.
    pub clock_skew_seconds: Option<i64>,
    /// Unknown-kid refetches started.
    pub unknown_kid_refetches: u64,
    /// Finished unknown-kid refetches whose set differed from the one before.
    pub refetches_changed: u64,
    /// Finished unknown-kid refetches that brought the same keys.
    pub refetches_unchanged: u64,
    /// Failed unknown-kid refetches.
    pub refetch_errors: u64,
    /// Unknown kids that got no refetch (inside the cooldown, none running).
    pub refetches_suppressed: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
}

/// SHA-256 of a token: the verified-token cache key (and, truncated, the decision
/// log's fingerprint).
pub fn token_digest(token: &str) -> [u8; 32] {
    sha256(token.as_bytes())
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
    /// A fetch is running.
    in_flight: AtomicBool,
    /// An unknown-kid refetch was asked for and has not started yet.
    refetch_pending: AtomicBool,
    wake: Notify,
    fetched: watch::Sender<u64>,
    skipped: AtomicU64,
    refresh_ok: AtomicU64,
    refresh_errors: AtomicU64,
    last_good_unix: AtomicI64,
    skew: AtomicI64,
    has_skew: AtomicBool,
    refetches: AtomicU64,
    refetch_results: [AtomicU64; 3],
    suppressed: AtomicU64,
    skipped_total: [AtomicU64; SkipReason::ALL.len()],
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
            refetch_pending: AtomicBool::new(false),
            wake: Notify::new(),
            fetched: watch::Sender::new(0),
            skipped: AtomicU64::new(0),
            refresh_ok: AtomicU64::new(0),
            refresh_errors: AtomicU64::new(0),
            last_good_unix: AtomicI64::new(i64::MIN),
            skew: AtomicI64::new(0),
            has_skew: AtomicBool::new(false),
            refetches: AtomicU64::new(0),
            refetch_results: Default::default(),
            suppressed: AtomicU64::new(0),
            skipped_total: Default::default(),
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
            .store(crate::clock::unix_now(), Ordering::Relaxed);
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

    /// Gets a fetch for a token whose kid is not in the set and waits for it, at most
    /// [`UNKNOWN_KID_MAX_WAIT`]: the running or requested fetch if there is one, else a
    /// new refetch if the cooldown allows one, else nothing (counted as suppressed).
    async fn refetch_for_unknown_kid(&self) {
        if !self.refreshed() {
            return;
        }
        // Subscribed first: a fetch that ends from here on wakes us.
        let mut done = self.fetched.subscribe();
        let busy =
            self.in_flight.load(Ordering::Acquire) || self.refetch_pending.load(Ordering::Acquire);
        if !busy {
            let now = self.now_ms();
            let last = self.last_refetch_ms.load(Ordering::Acquire);
            let cooled =
                last == NEVER || now.saturating_sub(last) >= self.cfg.cooldown().as_millis() as u64;
            if !cooled {
                self.suppressed.fetch_add(1, Ordering::Relaxed);
                return;
            }
            // Losing the race means another request just asked: wait for that one.
            if self
                .last_refetch_ms
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                self.refetches.fetch_add(1, Ordering::Relaxed);
                self.refetch_pending.store(true, Ordering::Release);
                self.wake.notify_one();
            }
        }
        let _ = tokio::time::timeout(UNKNOWN_KID_MAX_WAIT, done.changed()).await;
    }

    fn record_refetch(&self, fetch: FetchResult) {
        self.refetch_results[fetch as usize].fetch_add(1, Ordering::Relaxed);
    }

    fn status(&self) -> IssuerStatus {
        let last = self.last_good_unix.load(Ordering::Relaxed);
        IssuerStatus {
            issuer: self.cfg.issuer.clone(),
            ready: self.ready(),
            keys_loaded: self.keys.load().as_ref().map_or(0, |k| k.len()),
            keys_skipped: self.skipped.load(Ordering::Relaxed),
            keys_skipped_total: SkipReason::ALL
                .iter()
                .zip(&self.skipped_total)
                .map(|(r, n)| (*r, n.load(Ordering::Relaxed)))
                .filter(|(_, n)| *n > 0)
                .collect(),
            refresh_ok: self.refresh_ok.load(Ordering::Relaxed),
            refresh_errors: self.refresh_errors.load(Ordering::Relaxed),
            last_good_refresh_unix: (last != i64::MIN).then_some(last),
            clock_skew_seconds: self
                .has_skew
                .load(Ordering::Relaxed)
                .then(|| self.skew.load(Ordering::Relaxed)),
            unknown_kid_refetches: self.refetches.load(Ordering::Relaxed),
            refetches_changed: self.refetch_results[FetchResult::Changed as usize]
                .load(Ordering::Relaxed),
            refetches_unchanged: self.refetch_results[FetchResult::Unchanged as usize]
                .load(Ordering::Relaxed),
            refetch_errors: self.refetch_results[FetchResult::Failed as usize]
                .load(Ordering::Relaxed),
            refetches_suppressed: self.suppressed.load(Ordering::Relaxed),
            cache_hits: self.hits.load(Ordering::Relaxed),
            cache_misses: self.misses.load(Ordering::Relaxed),
        }
    }
}

/// What one fetch did to the key set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FetchResult {
    /// A set with other keys than before was installed.
    Changed = 0,
    /// The same keys (or the same bytes) again.
    Unchanged = 1,
    /// The fetch failed; the last good set is kept.
    Failed = 2,
}

/// One fetch's result and the delay before the next scheduled refresh.
struct Outcome {
    result: FetchResult,
    delay: Duration,
}

/// Mutable state of one refresher task.
#[derive(Default)]
struct Refresher {
    jwks_uri: Option<String>,
    /// SHA-256 of the last document installed: the same bytes again are not re-parsed.
    installed: Option<[u8; 32]>,
    /// The last document refused as a whole, and why: the same bytes again fail the
    /// same way without being parsed, logged and counted again.
    refused: Option<([u8; 32], JwksError)>,
    /// The last document whose skipped keys were logged and counted: a document parsed
    /// again (keys left over its check budget) does not count them twice.
    counted: Option<[u8; 32]>,
    failures: u32,
}

impl Refresher {
    /// One fetch; returns what it did and the delay before the next scheduled one.
    async fn refresh(&mut self, st: &IssuerState, client: &reqwest::Client) -> Outcome {
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
            _ => {
                return Outcome {
                    result: FetchResult::Unchanged,
                    delay: Duration::from_secs(cfg.max_refresh_seconds),
                };
            }
        };
        match result {
            Ok((changed, max_age)) => {
                self.failures = 0;
                let ttl = max_age
                    .unwrap_or(cfg.max_refresh_seconds)
                    .clamp(cfg.min_refresh_seconds, cfg.max_refresh_seconds);
                let ttl = Duration::from_secs(ttl);
                let delay = if matches!(st.source, Some(KeySource::JwksFile(_))) {
                    ttl.min(FILE_POLL)
                } else {
                    ttl
                };
                let result = if changed {
                    FetchResult::Changed
                } else {
                    FetchResult::Unchanged
                };
                Outcome { result, delay }
            }
            Err(e) => {
                st.refresh_errors.fetch_add(1, Ordering::Relaxed);
                self.failures = self.failures.saturating_add(1);
                warn!(issuer = %cfg.issuer, error = %e, failures = self.failures,
                    "key set refresh failed; keeping the last good key set");
                let backoff = 1u64 << self.failures.min(6).saturating_sub(1);
                Outcome {
                    result: FetchResult::Failed,
                    delay: Duration::from_secs(backoff.min(cfg.min_refresh_seconds)),
                }
            }
        }
    }

    /// Fetches and installs; returns whether the keys changed, and the max-age.
    async fn refresh_url(
        &mut self,
        st: &IssuerState,
        client: &reqwest::Client,
        url: &str,
    ) -> Result<(bool, Option<u64>), FetchError> {
        let doc = fetch::get(client, url, st.cfg.allow_insecure_http).await?;
        st.record_skew(doc.skew);
        let changed = self.install(st, doc.body).await?;
        Ok((changed, doc.max_age))
    }

    async fn refresh_file(
        &mut self,
        st: &IssuerState,
        path: &str,
    ) -> Result<(bool, Option<u64>), FetchError> {
        let meta = tokio::fs::metadata(path)
            .await
            .map_err(|e| FetchError::File(e.to_string()))?;
        if meta.len() > fetch::MAX_DOCUMENT_BYTES as u64 {
            return Err(FetchError::TooLarge);
        }
        let bytes = tokio::fs::read(path)
            .await
            .map_err(|e| FetchError::File(e.to_string()))?;
        Ok((self.install(st, bytes).await?, None))
    }

    /// Parses `body` (unless it is the document installed last) off the async workers,
    /// installs the set, logs and counts skipped keys. Returns whether the keys changed.
    async fn install(&mut self, st: &IssuerState, body: Vec<u8>) -> Result<bool, FetchError> {
        let digest = sha256(&body);
        if self.installed == Some(digest) && st.keys.load().is_some() {
            st.mark_good();
            return Ok(false);
        }
        if let Some((d, e)) = &self.refused
            && *d == digest
        {
            return Err(e.clone().into());
        }
        let allowed = st.cfg.allowed_algorithms().to_vec();
        let import = tokio::task::spawn_blocking(move || KeySet::parse_jwks(&body, &allowed));
        let parsed = tokio::time::timeout(IMPORT_DEADLINE, import)
            .await
            .map_err(|_| FetchError::Import("key import took too long".to_owned()))?
            .map_err(|e| FetchError::Import(e.to_string()))?;
        // Keys left unchecked for the budget are checked when the next fetch parses the
        // document again: its bytes are then neither taken as installed nor as refused.
        let mut unchecked = false;
        let parsed = parsed.and_then(|(keys, skipped)| {
            // Logged and counted once per document, also when no key is usable.
            if self.counted != Some(digest) {
                record_skipped(st, &skipped);
                self.counted = Some(digest);
            }
            unchecked = skipped.iter().any(|s| s.reason == SkipReason::CheckBudget);
            if keys.is_empty() {
                Err(JwksError::Empty)
            } else {
                Ok((keys, skipped))
            }
        });
        let (keys, skipped) = match parsed {
            Ok(p) => p,
            Err(e) => {
                self.refused = (!unchecked).then(|| (digest, e.clone()));
                return Err(e.into());
            }
        };
        let changed = st
            .keys
            .load()
            .as_ref()
            .is_none_or(|old| !old.same_keys(&keys));
        info!(issuer = %st.cfg.issuer, keys = keys.len(), skipped = skipped.len(), changed,
            "key set loaded");
        st.skipped.store(skipped.len() as u64, Ordering::Relaxed);
        st.install(keys);
        self.installed = (!unchecked).then_some(digest);
        Ok(changed)
    }
}

fn sha256(b: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 32];
    k.copy_from_slice(digest::digest(&digest::SHA256, b).as_ref());
    k
}

fn record_skipped(st: &IssuerState, skipped: &[Skipped]) {
    for s in skipped {
        st.skipped_total[s.reason as usize].fetch_add(1, Ordering::Relaxed);
        warn!(issuer = %st.cfg.issuer, index = s.index, kid = ?s.kid, reason = s.reason.as_str(),
            thumbprint = ?s.thumbprint, "JWK skipped: {}", s.reason);
    }
}

/// The issuer's fetch task: scheduled refreshes on their own clock, plus the
/// unknown-kid refetches requests ask for (module docs).
async fn run(st: Arc<IssuerState>, client: reqwest::Client, stop: CancellationToken) {
    let mut r = Refresher::default();
    // The first fetch is due at once.
    let mut next_scheduled = Instant::now();
    loop {
        if !st.refetch_pending.load(Ordering::Acquire) && Instant::now() < next_scheduled {
            tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep_until(next_scheduled) => {}
                _ = st.wake.notified() => {}
            }
            // Re-check: a permit left by an earlier notify wakes us for nothing.
            continue;
        }
        let refetch = st.refetch_pending.swap(false, Ordering::AcqRel);
        let scheduled = Instant::now() >= next_scheduled;
        st.in_flight.store(true, Ordering::Release);
        let outcome = tokio::select! {
            _ = stop.cancelled() => return,
            o = r.refresh(&st, &client) => o,
        };
        st.in_flight.store(false, Ordering::Release);
        st.fetched.send_modify(|g| *g = g.wrapping_add(1));
        if scheduled {
            next_scheduled = Instant::now() + outcome.delay;
        }
        if refetch {
            st.record_refetch(outcome.result);
        }
    }
}

impl Verifier {
    /// Validates the configs, then starts one key-set task per issuer (first fetch right
    /// away). Must be called inside a tokio runtime. Tasks stop when the last clone drops.
    ///
    /// # Errors
    /// The first [`VerifierError`].
    pub fn start(
        configs: Vec<IssuerConfig>,
        settings: TokenConfig,
    ) -> Result<Verifier, VerifierError> {
        settings.validate()?;
        validate_all(&configs)?;
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| VerifierError::NoRuntime)?;
        let stop = CancellationToken::new();
        let client = fetch::http_client().map_err(|e| VerifierError::HttpClient(e.to_string()))?;
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
            Some(VerifierError::NoRuntime)
        );
    }
}
