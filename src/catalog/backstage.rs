//! The `backstage` catalog source: a client for the Backstage catalog REST API and the
//! [`Syncer`] that keeps an in-memory copy of the catalog current by etag diffing.
//! The runner in [`crate::catalog::source`] calls [`Syncer::sync_once`] every poll.
//!
//! One sync:
//! 1. `GET /api/catalog/entities/by-query?filter=kind=..&fields=kind,metadata.namespace,
//!    metadata.name,metadata.etag&limit=N`, following `pageInfo.nextCursor` and
//!    resending `fields` and `limit` (the cursor carries only filter and order).
//! 2. Refs whose `metadata.etag` differs from the applied copy, or that are new, are
//!    fetched whole with `POST /api/catalog/entities/by-refs` (in chunks); refs no
//!    longer listed are dropped. Backstage has no HTTP ETag/304, hence this.
//! 3. The wipe-out guard: a result with no routable entity (one carrying
//!    [`ROUTES_ANNOTATION`]) while the applied copy has some is held back until it
//!    repeats on [`WIPE_CONFIRMATIONS`] consecutive polls; a failed poll neither
//!    confirms nor resets the count, a poll with routes resets it.
//!
//! Any failure (transport, status, oversized or malformed body, an entity that does
//! not parse, by-refs answering for other refs) fails the whole sync with a typed
//! [`CatalogError`]; the applied copy is untouched. HTTP hygiene: connect and total
//! timeouts, a body size cap, redirects refused, no proxy from the environment. The
//! token goes only into a sensitive `Authorization` header and never into errors,
//! logs or `Debug` output.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use serde::Deserialize;

use super::ROUTES_ANNOTATION;
use super::config::parse_base_url;
use super::entity::Entity;
use super::error::CatalogError;

/// Polls in a row that must see the routable entities gone before that is applied.
pub const WIPE_CONFIRMATIONS: u32 = 3;

/// The fields listed per entity to detect changes.
const ETAG_FIELDS: &str = "kind,metadata.namespace,metadata.name,metadata.etag";
/// The fields fetched for a changed entity (everything the model has; not `status`).
const ENTITY_FIELDS: [&str; 5] = ["apiVersion", "kind", "metadata", "spec", "relations"];
/// A cursor chain longer than this is a broken server, not a big catalog.
const MAX_PAGES: usize = 10_000;

/// Timeouts and sizes of the client; the defaults suit a catalog of thousands.
#[derive(Debug, Clone)]
pub struct Limits {
    pub connect_timeout: Duration,
    /// Whole request, body included.
    pub timeout: Duration,
    /// Largest response body accepted.
    pub max_body_bytes: usize,
    /// `limit` of each by-query page.
    pub page_size: usize,
    /// Refs per by-refs request.
    pub refs_per_request: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(30),
            max_body_bytes: 32 * 1024 * 1024,
            page_size: 500,
            refs_per_request: 200,
        }
    }
}

/// The static token; never printed.
#[derive(Clone)]
struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// A catalog API client for one Backstage backend.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    /// `<catalog.url>/api/catalog`
    catalog: reqwest::Url,
    token: Option<Token>,
    limits: Limits,
}

/// One entry of the change-detection listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtagRow {
    /// Lowercased `kind:namespace/name`.
    pub entity_ref: String,
    pub etag: Option<String>,
}

#[derive(Deserialize)]
struct QueryPage {
    items: Vec<EtagItem>,
    #[serde(rename = "pageInfo", default)]
    page_info: PageInfo,
}

#[derive(Deserialize, Default)]
struct PageInfo {
    #[serde(rename = "nextCursor")]
    next_cursor: Option<String>,
}

#[derive(Deserialize)]
struct EtagItem {
    kind: String,
    metadata: EtagMetadata,
}

#[derive(Deserialize)]
struct EtagMetadata {
    name: String,
    namespace: Option<String>,
    etag: Option<String>,
}

#[derive(Deserialize)]
struct RefsResponse {
    items: Vec<Option<serde_json::Value>>,
}

impl Client {
    /// `base_url` is the backend base URL (`catalog.url`); `token` the static token.
    pub fn new(
        base_url: &str,
        token: Option<String>,
        limits: Limits,
    ) -> Result<Self, CatalogError> {
        let mut catalog = parse_base_url(base_url)?;
        let path = format!("{}/api/catalog", catalog.path().trim_end_matches('/'));
        catalog.set_path(&path);
        let http = reqwest::Client::builder()
            .connect_timeout(limits.connect_timeout)
            .timeout(limits.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("stagedoor/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CatalogError::Http {
                url: catalog.to_string(),
                reason: format!("cannot build the HTTP client: {}", chain(&e)),
            })?;
        Ok(Self {
            http,
            catalog,
            token: token.map(Token),
            limits,
        })
    }

    fn endpoint(&self, path: &str) -> reqwest::Url {
        let mut url = self.catalog.clone();
        url.set_path(&format!("{}{path}", self.catalog.path()));
        url
    }

    /// Every entity of `kinds` (all kinds when empty) with its etag, all pages.
    pub async fn list_etags(&self, kinds: &[String]) -> Result<Vec<EtagRow>, CatalogError> {
        let endpoint = self.endpoint("/entities/by-query");
        let mut rows = Vec::new();
        let mut cursor: Option<String> = None;
        let mut seen_cursors = HashSet::new();
        for _ in 0..MAX_PAGES {
            let mut url = endpoint.clone();
            {
                let mut query = url.query_pairs_mut();
                match &cursor {
                    None => {
                        for kind in kinds {
                            query.append_pair(
                                "filter",
                                &format!("kind={}", kind.to_ascii_lowercase()),
                            );
                        }
                    }
                    Some(cursor) => {
                        query.append_pair("cursor", cursor);
                    }
                }
                query.append_pair("fields", ETAG_FIELDS);
                query.append_pair("limit", &self.limits.page_size.to_string());
            }
            let body = self.send(self.http.get(url), &endpoint).await?;
            let page: QueryPage = parse_json(&body, &endpoint)?;
            for item in page.items {
                let namespace = item.metadata.namespace.as_deref().unwrap_or("default");
                if item.kind.is_empty() || item.metadata.name.is_empty() || namespace.is_empty() {
                    return Err(protocol(
                        &endpoint,
                        "an item without kind, namespace or name",
                    ));
                }
                rows.push(EtagRow {
                    entity_ref: format!("{}:{namespace}/{}", item.kind, item.metadata.name)
                        .to_ascii_lowercase(),
                    etag: item.metadata.etag,
                });
            }
            match page.page_info.next_cursor {
                None => return Ok(rows),
                Some(next) => {
                    if !seen_cursors.insert(next.clone()) {
                        return Err(protocol(&endpoint, "pageInfo.nextCursor repeats"));
                    }
                    cursor = Some(next);
                }
            }
        }
        Err(protocol(&endpoint, &format!("more than {MAX_PAGES} pages")))
    }

    /// The entities `refs` name, in order; `None` for one Backstage no longer has.
    pub async fn fetch_by_refs(
        &self,
        refs: &[String],
    ) -> Result<Vec<Option<Entity>>, CatalogError> {
        let endpoint = self.endpoint("/entities/by-refs");
        let mut out = Vec::with_capacity(refs.len());
        for chunk in refs.chunks(self.limits.refs_per_request.max(1)) {
            let body = serde_json::json!({ "entityRefs": chunk, "fields": ENTITY_FIELDS });
            let request = self
                .http
                .post(endpoint.clone())
                .header(CONTENT_TYPE, "application/json")
                .body(body.to_string());
            let bytes = self.send(request, &endpoint).await?;
            let response: RefsResponse = parse_json(&bytes, &endpoint)?;
            if response.items.len() != chunk.len() {
                return Err(protocol(
                    &endpoint,
                    &format!("{} items for {} refs", response.items.len(), chunk.len()),
                ));
            }
            for (wanted, item) in chunk.iter().zip(response.items) {
                let Some(value) = item else {
                    out.push(None);
                    continue;
                };
                let entity: Entity = serde_json::from_value(value).map_err(|e| {
                    protocol(&endpoint, &format!("entity {wanted} does not parse: {e}"))
                })?;
                if entity.entity_ref() != wanted.to_ascii_lowercase() {
                    return Err(protocol(
                        &endpoint,
                        &format!("asked for {wanted}, got {}", entity.entity_ref()),
                    ));
                }
                out.push(Some(entity));
            }
        }
        Ok(out)
    }

    /// Sends `request` with auth, checks the status, reads at most the body cap.
    async fn send(
        &self,
        mut request: reqwest::RequestBuilder,
        endpoint: &reqwest::Url,
    ) -> Result<Vec<u8>, CatalogError> {
        let url = endpoint.to_string();
        request = request.header(ACCEPT, "application/json");
        if let Some(Token(token)) = &self.token {
            let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                CatalogError::Http {
                    url: url.clone(),
                    reason: "the token is not a valid header value".to_owned(),
                }
            })?;
            value.set_sensitive(true);
            request = request.header(AUTHORIZATION, value);
        }
        let http_error = |e: reqwest::Error| CatalogError::Http {
            url: url.clone(),
            reason: chain(&e),
        };
        let mut response = request.send().await.map_err(http_error)?;
        let status = response.status();
        if status.is_redirection() {
            return Err(CatalogError::Redirect {
                url,
                status: status.as_u16(),
            });
        }
        let limit = self.limits.max_body_bytes;
        if response
            .content_length()
            .is_some_and(|len| len > limit as u64)
        {
            return Err(CatalogError::TooLarge { url, limit });
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(http_error)? {
            if body.len() + chunk.len() > limit {
                return Err(CatalogError::TooLarge { url, limit });
            }
            body.extend_from_slice(&chunk);
        }
        if status.is_success() {
            return Ok(body);
        }
        let message = error_message(&body);
        let status = status.as_u16();
        Err(if status == 401 || status == 403 {
            CatalogError::Auth {
                url,
                status,
                message,
            }
        } else {
            CatalogError::Status {
                url,
                status,
                message,
            }
        })
    }
}

fn parse_json<T: for<'de> Deserialize<'de>>(
    body: &[u8],
    endpoint: &reqwest::Url,
) -> Result<T, CatalogError> {
    serde_json::from_slice(body).map_err(|e| protocol(endpoint, &e.to_string()))
}

fn protocol(endpoint: &reqwest::Url, reason: &str) -> CatalogError {
    CatalogError::Protocol {
        url: endpoint.to_string(),
        reason: reason.to_owned(),
    }
}

/// Backstage's `{"error":{"name","message"}}`, else the start of the body.
fn error_message(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Body {
        error: Detail,
    }
    #[derive(Deserialize)]
    struct Detail {
        name: Option<String>,
        message: Option<String>,
    }
    if let Ok(Body { error }) = serde_json::from_slice::<Body>(body) {
        return [error.name, error.message]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(": ");
    }
    let text = String::from_utf8_lossy(body);
    let mut short: String = text.chars().take(200).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    short
}

/// An error with its sources, e.g. "error sending request: connection refused".
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// What one sync did.
#[derive(Debug, Clone, PartialEq)]
pub enum SyncOutcome {
    /// The catalog changed; `entities` is the new full set, sorted by entity ref.
    Applied {
        entities: Vec<Entity>,
        /// Entities fetched whole because they were new or their etag changed.
        fetched: usize,
        /// Entities no longer in Backstage.
        removed: usize,
    },
    /// Nothing changed since the applied copy.
    Unchanged,
    /// The result had no routable entity while the applied copy has some; not applied.
    Held { consecutive: u32 },
}

/// The etag-diffing sync over a [`Client`]; holds the applied copy of the catalog.
#[derive(Debug)]
pub struct Syncer {
    client: Client,
    kinds: Vec<String>,
    applied: HashMap<String, Entity>,
    wipes_seen: u32,
}

impl Syncer {
    pub fn new(client: Client, kinds: Vec<String>) -> Self {
        Self {
            client,
            kinds,
            applied: HashMap::new(),
            wipes_seen: 0,
        }
    }

    /// Starts from `entities` (the snapshot file): only entities whose etag differs
    /// from these are fetched on the next sync, and the wipe-out guard protects them.
    pub fn seed(&mut self, entities: Vec<Entity>) {
        self.applied = entities.into_iter().map(|e| (e.entity_ref(), e)).collect();
        self.wipes_seen = 0;
    }

    /// The applied copy, sorted by entity ref.
    pub fn entities(&self) -> Vec<Entity> {
        let sorted: BTreeMap<_, _> = self.applied.iter().collect();
        sorted.into_values().cloned().collect()
    }

    /// One poll of Backstage; see the module docs.
    pub async fn sync_once(&mut self) -> Result<SyncOutcome, CatalogError> {
        let rows = self.client.list_etags(&self.kinds).await?;
        let mut next = HashMap::with_capacity(rows.len());
        let mut to_fetch = Vec::new();
        for row in rows {
            match self.applied.get(&row.entity_ref) {
                Some(current) if row.etag.is_some() && current.metadata.etag == row.etag => {
                    next.insert(row.entity_ref, current.clone());
                }
                _ => to_fetch.push(row.entity_ref),
            }
        }
        to_fetch.sort();
        to_fetch.dedup();
        let fetched = self.client.fetch_by_refs(&to_fetch).await?;
        for (entity_ref, entity) in to_fetch.iter().zip(fetched) {
            // None: deleted between listing and fetching; it is gone.
            if let Some(entity) = entity {
                next.insert(entity_ref.clone(), entity);
            }
        }
        if next == self.applied {
            self.wipes_seen = 0;
            return Ok(SyncOutcome::Unchanged);
        }
        if routable(&self.applied) && !routable(&next) {
            self.wipes_seen += 1;
            if self.wipes_seen < WIPE_CONFIRMATIONS {
                return Ok(SyncOutcome::Held {
                    consecutive: self.wipes_seen,
                });
            }
        }
        self.wipes_seen = 0;
        let removed = self
            .applied
            .keys()
            .filter(|k| !next.contains_key(*k))
            .count();
        self.applied = next;
        Ok(SyncOutcome::Applied {
            entities: self.entities(),
            fetched: to_fetch.len(),
            removed,
        })
    }
}

fn routable(entities: &HashMap<String, Entity>) -> bool {
    entities
        .values()
        .any(|e| e.annotation(ROUTES_ANNOTATION).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_the_token() {
        let client = Client::new(
            "http://127.0.0.1:1/prefix/",
            Some("s3cret-token-value".to_owned()),
            Limits::default(),
        )
        .unwrap();
        let debug = format!("{client:?}");
        assert!(!debug.contains("s3cret-token-value"), "{debug}");
        assert!(debug.contains("<redacted>"));
        assert_eq!(
            client.endpoint("/entities/by-refs").as_str(),
            "http://127.0.0.1:1/prefix/api/catalog/entities/by-refs"
        );
    }

    #[test]
    fn error_messages_come_from_backstage_bodies() {
        assert_eq!(
            error_message(br#"{"error":{"name":"AuthenticationError","message":"Illegal token"}}"#),
            "AuthenticationError: Illegal token"
        );
        let long = "x".repeat(500);
        let short = error_message(long.as_bytes());
        assert_eq!(short.chars().count(), 201);
        assert_eq!(error_message(&[0xff, 0xfe]), "\u{fffd}\u{fffd}");
    }
}
