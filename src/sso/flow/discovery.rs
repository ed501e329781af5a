//! Beside the request flow, under [`super`]: the provider's discovery document for
//! sign-in, cached, fetched by one sign-in at a time, and fetched again only within
//! cooldowns (a stream of bogus callbacks must not become a stream of fetches).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Endpoints, Flow, FlowError, parse_endpoints};
use crate::token::fetch;

/// A cached discovery document is fetched again after this long.
pub const DISCOVERY_TTL: Duration = Duration::from_secs(3600);
/// A refused code exchange may mean the provider moved its endpoints, so the document
/// is fetched again then, but not more often than this: a stream of bogus callbacks
/// must not become a stream of discovery fetches at the provider.
pub const DISCOVERY_REFETCH_COOLDOWN: Duration = Duration::from_secs(60);
/// After a failed discovery fetch (with no document to fall back on), sign-ins fail
/// at once for this long instead of each fetching again.
pub const DISCOVERY_FAILURE_COOLDOWN: Duration = Duration::from_secs(5);
/// The discovery cache: the last good document, whether a refused exchange asked for
/// it to be fetched again, and the last failed fetch.
#[derive(Default)]
pub(super) struct Discovery {
    doc: Option<(Arc<Endpoints>, Instant)>,
    stale: bool,
    failed: Option<(String, Instant)>,
}

impl Discovery {
    /// The document, unless it is due to be fetched again.
    fn fresh(&self) -> Option<Arc<Endpoints>> {
        let (doc, at) = self.doc.as_ref()?;
        let age = at.elapsed();
        let due = age >= DISCOVERY_TTL || (self.stale && age >= DISCOVERY_REFETCH_COOLDOWN);
        (!due).then(|| doc.clone())
    }
}

impl Flow {
    /// The provider's endpoints: cached for [`DISCOVERY_TTL`], fetched again after
    /// (or after a refused exchange, [`DISCOVERY_REFETCH_COOLDOWN`]), by one caller at
    /// a time. When a fetch fails, the document it was to replace is used still; with
    /// none, sign-ins fail without fetching for [`DISCOVERY_FAILURE_COOLDOWN`].
    ///
    /// # Errors
    /// [`FlowError::Discovery`].
    pub async fn endpoints(&self) -> Result<Arc<Endpoints>, FlowError> {
        if let Some(e) = self.cache().fresh() {
            return Ok(e);
        }
        let _fetching = self.fetching.lock().await;
        // Whoever held the lock before may have fetched it, or failed just now.
        {
            let cache = self.cache();
            if let Some(e) = cache.fresh() {
                return Ok(e);
            }
            if let Some((why, at)) = &cache.failed
                && at.elapsed() < DISCOVERY_FAILURE_COOLDOWN
            {
                return match &cache.doc {
                    Some((doc, _)) => Ok(doc.clone()),
                    None => Err(FlowError::Discovery(why.clone())),
                };
            }
        }
        match self.fetch_endpoints().await {
            Ok(e) => {
                *self.cache() = Discovery {
                    doc: Some((e.clone(), Instant::now())),
                    stale: false,
                    failed: None,
                };
                Ok(e)
            }
            Err(err) => {
                let mut cache = self.cache();
                cache.failed = Some((err.to_string(), Instant::now()));
                match &cache.doc {
                    Some((doc, _)) => {
                        tracing::warn!(event = "sign_in_discovery_failed", error = %err, "keeping the last discovery document");
                        Ok(doc.clone())
                    }
                    None => Err(err),
                }
            }
        }
    }

    async fn fetch_endpoints(&self) -> Result<Arc<Endpoints>, FlowError> {
        let issuer = &self.sso.cfg.issuer;
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let doc = fetch::get(&self.client, &url, self.allow_insecure_http)
            .await
            .map_err(|e| FlowError::Discovery(e.to_string()))?;
        Ok(Arc::new(parse_endpoints(
            &doc.body,
            issuer,
            self.allow_insecure_http,
        )?))
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Discovery> {
        self.discovery.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks for the document to be fetched again (after a failure that may come from
    /// a changed provider), once it is [`DISCOVERY_REFETCH_COOLDOWN`] old.
    pub fn forget_endpoints(&self) {
        self.cache().stale = true;
    }
}
