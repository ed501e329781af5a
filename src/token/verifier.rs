//! Token stage, the service: the request-path check of a bearer token against the
//! per-issuer key-set snapshots (kept fresh by `issuer.rs`), and the verified-token
//! cache in front of the pure core (message → token → `Identity` → policy).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use quick_cache::sync::Cache;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::config::{IssuerConfig, KeySource, TokenConfig, VerifierError, validate_all};
use super::fetch;
use super::issuer::{IssuerState, IssuerStatus, run, sha256};
use super::jose::{RawClaims, parse_jws};
use super::jwk::KeySet;
use super::recent::Recent;
use super::verify::{
    IdToken, IdTokenError, check_issuer_claims, check_signature, unverified_issuer, verify_id_token,
};
use crate::identity::Identity;
use crate::reason::Reason;

/// Verifies bearer tokens for every configured issuer. Cheap to clone.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

struct Inner {
    issuers: Vec<Arc<IssuerState>>,
    cache: Option<Cache<[u8; 32], Arc<Cached>, Weight>>,
    /// The last tokens verified, in front of `cache` (there only when it is).
    recent: Option<Recent<Arc<Cached>>>,
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
    /// The first bytes of the token's SHA-256, for the decision log.
    token_fp: [u8; 6],
    /// The entry's estimated bytes (identity, this struct, key, the cache's own).
    bytes: u32,
}

/// The cache's bookkeeping per entry, roughly (measured: ~86 bytes with a 32-byte
/// key and an `Arc` value; moka's was ~400).
const ENTRY_OVERHEAD: usize = 96;

/// An entry weighs its bytes, but at least `cache_bytes / cache_entries`.
#[derive(Clone)]
struct Weight {
    floor: u64,
}

impl quick_cache::Weighter<[u8; 32], Arc<Cached>> for Weight {
    fn weight(&self, _: &[u8; 32], v: &Arc<Cached>) -> u64 {
        // Never 0: a weightless entry would never be evicted.
        u64::from(v.bytes).max(self.floor).max(1)
    }
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
    /// The cache's weight: its entries' estimated bytes, each at least
    /// `cache_bytes / cache_entries` (bounded by `[token] cache_bytes`).
    pub cache_weight: u64,
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
            let extra = st.cfg.extra_claim();
            if !groups_claims.iter().any(|c| c == extra) {
                groups_claims.push(extra.to_owned());
            }
        }
        let cache = token_cache(&settings);
        Verifier {
            inner: Arc::new(Inner {
                issuers,
                recent: cache.as_ref().map(|_| Recent::new()),
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
            cache_entries: self.inner.cache.as_ref().map_or(0, |c| c.len() as u64),
            cache_weight: self.inner.cache.as_ref().map_or(0, |c| c.weight()),
        }
    }

    /// Verifies `token` at `now_unix`. Awaits only for a bounded unknown-kid refetch.
    ///
    /// # Errors
    /// The [`Reason`] the token was rejected with.
    pub async fn verify(&self, token: &str, now_unix: i64) -> Result<Arc<Identity>, Reason> {
        self.verify_fingerprinted(token, now_unix, tokio::time::Instant::now())
            .await
            .result
    }

    /// [`Verifier::verify`], with the first bytes of the token's SHA-256 (the decision
    /// log's fingerprint), which a recent token's entry already holds. `started` is
    /// the monotonic time of the request's start, read just before this call: a
    /// remembered token's key set is judged fresh as of then, so an older instant
    /// would judge it in the past (the handler reads it once per decision; review).
    pub async fn verify_fingerprinted(
        &self,
        token: &str,
        now_unix: i64,
        started: tokio::time::Instant,
    ) -> Verified {
        let inner = &*self.inner;
        if let Some(recent) = &inner.recent
            && let Some(hit) = recent.find(token, |hit| {
                inner
                    .still_good(hit, now_unix, started)
                    .map(|identity| (identity, hit.token_fp))
            })
        {
            match hit {
                Some((identity, fp)) => {
                    return Verified {
                        result: Ok(identity),
                        token_fp: fp,
                        kept: true,
                    };
                }
                None => recent.remove(token),
            }
        }
        let digest = token_digest(token);
        let token_fp = [
            digest[0], digest[1], digest[2], digest[3], digest[4], digest[5],
        ];
        // Boxed: its state (the parsed token, claims and key set, held across the
        // unknown-kid refetch) was ~2 KB of every request's future, moved and
        // initialised on each NOTIFY even when the recent slots answered.
        let (result, kept) =
            match Box::pin(self.verify_digested(token, &digest, now_unix, started)).await {
                Ok((identity, kept)) => (Ok(identity), kept),
                Err(reason) => (Err(reason), false),
            };
        Verified {
            result,
            token_fp,
            kept,
        }
    }

    /// The identity, and whether the cache holds it (found there, or put there now).
    async fn verify_digested(
        &self,
        token: &str,
        token_digest: &[u8; 32],
        now_unix: i64,
        started: tokio::time::Instant,
    ) -> Result<(Arc<Identity>, bool), Reason> {
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
            if let Some(identity) = inner.still_good(&hit, now_unix, started) {
                if let Some(recent) = &inner.recent {
                    recent.put(token, hit);
                }
                return Ok((identity, true));
            }
            cache.remove(key);
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
        let claims = check_issuer_claims(&jws, &raw, &st.cfg, now_unix, fp)?;
        let exp = claims.exp;
        let identity = Arc::new(claims.into_identity());
        // A token past `exp`, accepted within the leeway, is not cached: its next
        // verification makes a new identity.
        let mut kept = false;
        if let (Some(cache), Some(key)) = (&inner.cache, cache_key)
            && exp > now_unix
        {
            let entry = Arc::new(Cached {
                identity: identity.clone(),
                issuer: idx,
                key_fingerprint: fp,
                exp,
                token_fp: [key[0], key[1], key[2], key[3], key[4], key[5]],
                bytes: u32::try_from(
                    identity.approx_bytes() + std::mem::size_of::<Cached>() + ENTRY_OVERHEAD,
                )
                .unwrap_or(u32::MAX),
            });
            if let Some(recent) = &inner.recent {
                recent.put(token, entry.clone());
            }
            cache.insert(key, entry);
            kept = true;
        }
        Ok((identity, kept))
    }
}

/// What [`Verifier::verify_fingerprinted`] found.
pub struct Verified {
    pub result: Result<Arc<Identity>, Reason>,
    /// The first bytes of SHA-256(token): the decision log's fingerprint.
    pub token_fp: [u8; 6],
    /// Whether the verified-token cache holds this identity, so that the same token
    /// verified again (while it stays cached) gives back the very same `Arc`. False
    /// without the cache, and for a token accepted only within the leeway (past
    /// `exp`: never cached). The remembered decisions are keyed by the identity's
    /// address and are only worth keeping when it is (`agent::memo`).
    pub kept: bool,
}

/// The verified-token cache of `settings`; `None` when `cache_entries` is 0.
///
/// One capacity bounds both: an entry weighs its bytes, but at least
/// `cache_bytes / cache_entries`, so no more than `cache_entries` entries and no
/// more than `cache_bytes` bytes fit (tokens with hundreds of groups weigh more).
fn token_cache(settings: &TokenConfig) -> Option<Cache<[u8; 32], Arc<Cached>, Weight>> {
    (settings.cache_entries > 0).then(|| {
        let floor = (settings.cache_bytes / settings.cache_entries).max(1);
        // No more entries fit than `cache_bytes` over the lightest entry's weight. The
        // estimate also bounds the evicted keys quick_cache remembers (half of it): from
        // `cache_entries` alone, which is not range-checked, a huge value let them grow
        // far past `cache_bytes` (one per token ever evicted).
        let lightest = (std::mem::size_of::<Cached>() + ENTRY_OVERHEAD) as u64;
        let items = settings
            .cache_entries
            .min(settings.cache_bytes / floor.max(lightest))
            .max(1);
        // Entries are never kept past their token's `exp`: every hit checks it (an
        // expired entry is removed then, or evicted unused as any cold entry).
        let options = quick_cache::OptionsBuilder::new()
            .estimated_items_capacity(usize::try_from(items).unwrap_or(usize::MAX))
            .weight_capacity(settings.cache_bytes)
            // Each shard holds its share of the bytes, and quick_cache refuses an entry
            // heavier than one shard: one shard per 4 MiB (16 at the default 64 MiB),
            // so an identity of up to ~1 MiB is still cached at the smallest
            // `cache_bytes` (review: at 1 MiB over 16 shards, a token near
            // `max_token_bytes` with thousands of groups was never cached).
            .shards(usize::try_from((settings.cache_bytes >> 22).clamp(1, 16)).unwrap_or(16))
            .build()
            .expect("estimated_items_capacity and weight_capacity are set");
        Cache::with_options(
            options,
            Weight { floor },
            std::hash::RandomState::default(),
            Default::default(),
        )
    })
}

impl Inner {
    /// A remembered verification's identity, if it still holds at `now_unix` (and the
    /// request's monotonic start `started`): never past `exp`, never past the key it
    /// was verified with.
    fn still_good(
        &self,
        hit: &Cached,
        now_unix: i64,
        started: tokio::time::Instant,
    ) -> Option<Arc<Identity>> {
        let st = &self.issuers[hit.issuer];
        (now_unix < hit.exp && st.trusts(hit.key_fingerprint, started)).then(|| {
            st.hits.inc();
            hit.identity.clone()
        })
    }
}

/// Largest ID token [`Verifier::verify_id_token`] reads.
pub const MAX_ID_TOKEN_BYTES: usize = 64 * 1024;

impl Verifier {
    /// Verifies an OpenID Connect ID token from `issuer` (a configured issuer) for a
    /// browser sign-in: see [`verify_id_token`]. One unknown-`kid` refetch, as for
    /// access tokens. No cache: each ID token is seen once.
    ///
    /// # Errors
    /// [`IdTokenError`]; `bad_issuer` when `issuer` is not configured.
    pub async fn verify_id_token(
        &self,
        token: &str,
        issuer: &str,
        client_id: &str,
        nonce: &str,
        now_unix: i64,
    ) -> Result<IdToken, IdTokenError> {
        let inner = &*self.inner;
        let st = inner
            .issuers
            .iter()
            .find(|st| st.cfg.issuer == issuer)
            .ok_or(Reason::BadIssuer)?;
        // An ID token comes from the token endpoint, not a client header, and carries
        // every group of a user: a larger cap than `max_token_bytes` (the token
        // response body itself is capped at 64 KiB).
        let max = inner.settings.max_token_bytes.max(MAX_ID_TOKEN_BYTES);
        let keys = st.usable().ok_or(Reason::KeysUnavailable)?;
        match verify_id_token(token, now_unix, &keys, &st.cfg, client_id, nonce, max) {
            Err(IdTokenError::Token(Reason::UnknownKey)) => {
                st.refetch_for_unknown_kid().await;
                let keys = st.usable().ok_or(Reason::KeysUnavailable)?;
                verify_id_token(token, now_unix, &keys, &st.cfg, client_id, nonce, max)
            }
            other => other,
        }
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

    /// What the cache holds beside its weighed entries stays within a fraction of
    /// `cache_bytes`, whatever `cache_entries` says (it is not range-checked): quick_cache
    /// keeps a "ghost" (the key's hash, in a slab and a map) for evicted keys, up to
    /// half of `estimated_items_capacity`, which is `cache_entries`. With a huge
    /// `cache_entries` (to bound by bytes only) every evicted token left a ghost: a
    /// client minting fresh tokens grew memory far past `cache_bytes` (found by review).
    #[test]
    fn cache_bookkeeping_stays_within_the_byte_bound_whatever_cache_entries_says() {
        let budget: u64 = 1 << 20;
        let settings = TokenConfig {
            cache_entries: 1 << 40,
            cache_bytes: budget,
            ..TokenConfig::default()
        };
        let cache = token_cache(&settings).unwrap();
        let identity = Arc::new(Identity {
            issuer: "https://id.example".into(),
            sub: Some("client".into()),
            ..Identity::default()
        });
        let entry = Arc::new(Cached {
            bytes: (identity.approx_bytes() + std::mem::size_of::<Cached>() + ENTRY_OVERHEAD)
                as u32,
            identity,
            issuer: 0,
            key_fingerprint: 0,
            exp: i64::MAX,
            token_fp: [0; 6],
        });
        // Distinct tokens, each verified once (a client asking for a new token per call).
        for i in 0u64..200_000 {
            let mut key = [0u8; 32];
            key[..8].copy_from_slice(&i.to_le_bytes());
            cache.insert(key, entry.clone());
        }
        assert!(cache.weight() <= budget);
        let used = cache.memory_used().total() as u64;
        assert!(
            used <= budget,
            "{used} bytes of bookkeeping for a {budget}-byte cache of {} entries",
            cache.len()
        );
    }
}
