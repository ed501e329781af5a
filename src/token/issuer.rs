//! Token stage, one issuer's keys: the key-set snapshot that a background task keeps
//! fresh (rotation, unknown-kid refetch with cooldown, stale-if-error, clock-skew
//! reading), and the counters behind [`IssuerStatus`]. The verifier (`verifier.rs`)
//! reads the snapshot on the request path.
//!
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
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::config::{IssuerConfig, KeySource};
use super::fetch::{self, FetchError};
use super::jwk::{JwksError, KeySet, SkipReason, Skipped};

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

pub(super) struct IssuerState {
    pub(super) cfg: IssuerConfig,
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
    pub(super) hits: crate::counter::Counter,
    pub(super) misses: AtomicU64,
}

impl IssuerState {
    pub(super) fn new(cfg: IssuerConfig, source: Option<KeySource>) -> IssuerState {
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
            hits: crate::counter::Counter::default(),
            misses: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        self.ms_at(Instant::now())
    }

    /// Milliseconds from this state's start to `at`.
    fn ms_at(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.base).as_millis() as u64
    }

    /// A usable key set with at least one key.
    pub(super) fn ready(&self) -> bool {
        self.usable().is_some_and(|k| !k.is_empty())
    }

    /// The current key set, unless it is older than `max_stale_seconds` (fail closed).
    pub(super) fn usable(&self) -> Option<Arc<KeySet>> {
        let keys = self.keys.load_full()?;
        self.fresh_at(Instant::now()).then_some(keys)
    }

    /// Whether the key with `fingerprint` is in the current key set and that set is
    /// usable at `at` (the request's start): the check of every remembered
    /// verification, on the request path. It reads the set in place (no `Arc` clone:
    /// two atomic writes on a count that every worker shares, per request), and the
    /// clock the handler read already (a clock read was ~30 ns here).
    pub(super) fn trusts(&self, fingerprint: u64, at: Instant) -> bool {
        self.keys
            .load()
            .as_ref()
            .is_some_and(|k| k.contains(fingerprint))
            && self.fresh_at(at)
    }

    /// Keys that go stale (from a URL or a file) were refreshed within
    /// `max_stale_seconds` of `at`; static sets and secrets are always fresh. A refresh
    /// after `at` counts as fresh (the difference saturates at zero).
    fn fresh_at(&self, at: Instant) -> bool {
        if !self.refreshed() {
            return true;
        }
        let last = self.last_good_ms.load(Ordering::Acquire);
        last != NEVER && self.ms_at(at).saturating_sub(last) <= self.cfg.max_stale_seconds * 1000
    }

    /// Keys that come from a URL or a file go stale; static sets and secrets do not.
    fn refreshed(&self) -> bool {
        matches!(
            self.source,
            Some(KeySource::JwksUrl(_) | KeySource::Discovery | KeySource::JwksFile(_))
        )
    }

    pub(super) fn install(&self, keys: KeySet) {
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
    pub(super) async fn refetch_for_unknown_kid(&self) {
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

    pub(super) fn status(&self) -> IssuerStatus {
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
            cache_hits: self.hits.get(),
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

pub(super) fn sha256(b: &[u8]) -> [u8; 32] {
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
pub(super) async fn run(st: Arc<IssuerState>, client: reqwest::Client, stop: CancellationToken) {
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
