//! The `backstage` catalog source: a client for the Backstage catalog REST API and the
//! [`Syncer`] that keeps an in-memory copy of the catalog current by etag diffing.
//! The runner in [`crate::catalog::source`] calls [`Syncer::sync_once`] every poll.
//!
//! One sync:
//! 1. `GET /api/catalog/entities/by-query?filter=kind=..&fields=kind,metadata.namespace,
//!    metadata.name,metadata.etag&limit=N`, following `pageInfo.nextCursor` and
//!    resending `fields` and `limit` (the cursor carries only filter and order).
//! 2. Refs whose `metadata.etag` differs from the applied copy, that are new, or that
//!    came from the snapshot file and were never confirmed by Backstage (see
//!    [`Syncer::seed`]), are fetched with `POST /api/catalog/entities/by-refs` (in
//!    chunks); refs no longer listed are dropped. Backstage has no HTTP ETag/304,
//!    hence this.
//! 3. The wipe-out guard: a result with no routable entity (one carrying
//!    [`ROUTES_ANNOTATION`]) while the applied copy has some is held back until it
//!    repeats on [`WIPE_CONFIRMATIONS`] consecutive polls; a failed poll neither
//!    confirms nor resets the count, a poll with routes resets it.
//!
//! Decisions:
//! - **Only what the policy reads is fetched**: by-refs sends `fields` ([`ENTITY_FIELDS`]:
//!   kind, apiVersion, name, namespace, etag, annotations, relations and the four spec
//!   fields the policy falls back to). Backstage's by-refs takes `fields` in the body
//!   and applies dotted paths as by-query does (`parseEntityTransformParams`, plugin-
//!   catalog-backend 4.0.5). An API entity's embedded OpenAPI `spec.definition`, or
//!   any deep or bulky field another plugin adds, therefore never reaches stagedoor.
//! - **One bad entity does not stop the sync.** The by-refs envelope is split into its
//!   items without parsing them (an iterative scan: no depth limit applies to the
//!   envelope), and each item is parsed on its own. An item that does not parse
//!   (serde_json's recursion limit of 128, a wrong type) is skipped: reported in
//!   [`SyncReport`] (the runner logs it and counts it in
//!   `stagedoor_catalog_entities_skipped_total{reason}`) and kept at its last good
//!   version, while every other change applies. A new entity that does not parse is
//!   left out, as if Backstage did not have it yet.
//! - **A chunk whose answer reaches the body cap is split in halves** and retried; an
//!   entity over the cap on its own is skipped (`too_large`) and kept like one that
//!   does not parse.
//! - **Etags that disagree** between the listing and by-refs (the entity changed in
//!   between, or a proxy or cache rewrites one of them) are reported (logged and
//!   counted in `stagedoor_catalog_etag_mismatches_total`): if they always disagree,
//!   every poll fetches every entity again. The applied copy keeps the etag by-refs
//!   returned, the one that describes the content held, so a stale by-refs answer is
//!   fetched again on the next poll rather than taken as current.
//! - **Error bodies are cut**: at most [`ERROR_BODY_READ_BYTES`] of a non-2xx body are
//!   read, and at most [`ERROR_MESSAGE_BYTES`] of Backstage's message (or of the body)
//!   go into the error, control characters escaped, since the error is logged on every
//!   failed poll.
//!
//! Any other failure (transport, status, oversized listing, a malformed envelope,
//! by-refs answering for other refs or with another count) fails the whole sync with a
//! typed [`CatalogError`]; the applied copy is untouched. HTTP hygiene: connect and
//! total timeouts, a body size cap, redirects refused, no proxy from the environment.
//! The token goes only into a sensitive `Authorization` header and never into errors,
//! logs or `Debug` output.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
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
/// The fields fetched for a changed entity: what [`Entity`] holds and the policy reads
/// (`spec.owner`, `spec.parent` and `spec.memberOf` are its fallbacks when relations
/// are missing; `spec.profile.email` matches Users). Nothing else: not `status`, not
/// `spec.definition`, not any field a plugin adds.
pub const ENTITY_FIELDS: [&str; 11] = [
    "apiVersion",
    "kind",
    "metadata.name",
    "metadata.namespace",
    "metadata.etag",
    "metadata.annotations",
    "spec.owner",
    "spec.parent",
    "spec.memberOf",
    "spec.profile.email",
    "relations",
];
/// At most this much of a non-2xx body is read.
pub const ERROR_BODY_READ_BYTES: usize = 64 * 1024;
/// At most this much of Backstage's error message goes into an error (and the logs).
pub const ERROR_MESSAGE_BYTES: usize = 512;
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

/// Why an entity by-refs returned was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SkipReason {
    /// Its JSON does not parse or is not an entity (e.g. nested deeper than
    /// serde_json's recursion limit).
    Unparseable,
    /// Alone, its answer reaches the body cap.
    TooLarge,
}

impl SkipReason {
    pub const ALL: [SkipReason; 2] = [SkipReason::Unparseable, SkipReason::TooLarge];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::Unparseable => "unparseable",
            SkipReason::TooLarge => "too_large",
        }
    }
}

/// One item of a by-refs answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Fetched {
    Entity(Entity),
    /// Backstage no longer has it (`null`).
    Missing,
    /// Not usable; the text says why (bounded, escaped).
    Skipped(SkipReason, String),
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
                    entity_ref: super::EntityRef::from_parts(
                        &item.kind,
                        namespace,
                        &item.metadata.name,
                    )
                    .into_string(),
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

    /// The entities `refs` name, in order. A chunk whose answer reaches the body cap is
    /// split in halves and retried; an entity that does not parse, or reaches the cap
    /// alone, is [`Fetched::Skipped`], the others are unaffected.
    pub async fn fetch_by_refs(&self, refs: &[String]) -> Result<Vec<Fetched>, CatalogError> {
        let endpoint = self.endpoint("/entities/by-refs");
        let mut out = Vec::with_capacity(refs.len());
        let mut queue: VecDeque<&[String]> =
            refs.chunks(self.limits.refs_per_request.max(1)).collect();
        while let Some(chunk) = queue.pop_front() {
            match self.fetch_chunk(chunk, &endpoint).await {
                Ok(items) => out.extend(items),
                Err(CatalogError::TooLarge { limit, .. }) if chunk.len() > 1 => {
                    tracing::info!(
                        refs = chunk.len(),
                        limit,
                        "a by-refs answer reached the body cap; asking for each half"
                    );
                    let (first, second) = chunk.split_at(chunk.len() / 2);
                    queue.push_front(second);
                    queue.push_front(first);
                }
                Err(CatalogError::TooLarge { limit, .. }) => out.push(Fetched::Skipped(
                    SkipReason::TooLarge,
                    format!("the entity alone reaches the {limit}-byte body cap"),
                )),
                Err(other) => return Err(other),
            }
        }
        Ok(out)
    }

    /// One by-refs request; each item parsed on its own.
    async fn fetch_chunk(
        &self,
        chunk: &[String],
        endpoint: &reqwest::Url,
    ) -> Result<Vec<Fetched>, CatalogError> {
        let body = serde_json::json!({ "entityRefs": chunk, "fields": ENTITY_FIELDS });
        let request = self
            .http
            .post(endpoint.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_string());
        let bytes = self.send(request, endpoint).await?;
        let items = split_items(&bytes).map_err(|reason| protocol(endpoint, &reason))?;
        if items.len() != chunk.len() {
            return Err(protocol(
                endpoint,
                &format!("{} items for {} refs", items.len(), chunk.len()),
            ));
        }
        let mut out = Vec::with_capacity(chunk.len());
        for (wanted, raw) in chunk.iter().zip(items) {
            let entity = match serde_json::from_slice::<Option<Entity>>(raw) {
                Ok(Some(entity)) => entity,
                Ok(None) => {
                    out.push(Fetched::Missing);
                    continue;
                }
                Err(e) => {
                    out.push(Fetched::Skipped(
                        SkipReason::Unparseable,
                        excerpt(&e.to_string(), ERROR_MESSAGE_BYTES),
                    ));
                    continue;
                }
            };
            if entity.entity_ref() != wanted.to_ascii_lowercase() {
                return Err(protocol(
                    endpoint,
                    &format!(
                        "asked for {wanted}, got {}",
                        excerpt(&entity.entity_ref(), 300)
                    ),
                ));
            }
            out.push(Fetched::Entity(entity));
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
        if !status.is_success() {
            // An error body is read only in part: its message is all that is kept.
            let mut body = Vec::new();
            while body.len() < ERROR_BODY_READ_BYTES {
                match response.chunk().await {
                    Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                    Ok(None) | Err(_) => break,
                }
            }
            body.truncate(ERROR_BODY_READ_BYTES);
            let message = error_message(&body);
            let status = status.as_u16();
            return Err(if status == 401 || status == 403 {
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
        Ok(body)
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

/// Backstage's `{"error":{"name","message"}}`, else the start of the body; at most
/// [`ERROR_MESSAGE_BYTES`], escaped.
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
        let text = [error.name, error.message]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(": ");
        return excerpt(&text, ERROR_MESSAGE_BYTES);
    }
    excerpt(&String::from_utf8_lossy(body), ERROR_MESSAGE_BYTES)
}

/// `text` for a log line: control characters (and Unicode line separators and bidi
/// controls) escaped, at most `max` bytes, then `…[cut]` when there was more.
pub fn excerpt(text: &str, max: usize) -> String {
    const CUT: &str = "…[cut]";
    let mut out = String::with_capacity(text.len().min(max + CUT.len()));
    for c in text.chars() {
        let escape = c.is_control()
            || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        let start = out.len();
        if escape {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
        if out.len() > max {
            out.truncate(start);
            out.push_str(CUT);
            return out;
        }
    }
    out
}

/// The raw text of each element of the envelope's `items` array, without parsing
/// the elements: one iterative scan, so an element nested deeper than any parser's
/// recursion limit fails its own parse and no other. The elements are checked only
/// for balanced brackets and closed strings; each is parsed (and fully validated)
/// on its own afterwards.
fn split_items(body: &[u8]) -> Result<Vec<&[u8]>, String> {
    let mut scan = Scan { body, pos: 0 };
    scan.ws();
    scan.expect(b'{')?;
    let mut items = None;
    scan.ws();
    if scan.peek() == Some(b'}') {
        scan.pos += 1;
    } else {
        loop {
            scan.ws();
            let key = scan.string()?;
            scan.ws();
            scan.expect(b':')?;
            scan.ws();
            if key_is(key, "items") {
                if items.is_some() {
                    return Err("\"items\" appears twice".to_owned());
                }
                items = Some(scan.array_elements()?);
            } else {
                scan.value()?;
            }
            scan.ws();
            match scan.next() {
                Some(b',') => continue,
                Some(b'}') => break,
                _ => return Err(scan.unexpected("',' or '}'")),
            }
        }
    }
    scan.ws();
    if scan.pos != body.len() {
        return Err(scan.unexpected("the end of the body"));
    }
    items.ok_or_else(|| "no \"items\" array".to_owned())
}

/// Whether a raw JSON string (with its quotes) is `want`.
fn key_is(raw: &[u8], want: &str) -> bool {
    let inner = &raw[1..raw.len() - 1];
    if !inner.contains(&b'\\') {
        return inner == want.as_bytes();
    }
    serde_json::from_slice::<String>(raw).is_ok_and(|k| k == want)
}

/// A cursor over a JSON text for [`split_items`].
struct Scan<'a> {
    body: &'a [u8],
    pos: usize,
}

impl<'a> Scan<'a> {
    fn peek(&self) -> Option<u8> {
        self.body.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.pos += 1;
        Some(b)
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn unexpected(&self, want: &str) -> String {
        match self.peek() {
            Some(b) => format!(
                "expected {want} at byte {}, found {:?}",
                self.pos, b as char
            ),
            None => format!("expected {want}, found the end of the body"),
        }
    }

    fn expect(&mut self, want: u8) -> Result<(), String> {
        if self.peek() == Some(want) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.unexpected(&format!("{:?}", want as char)))
        }
    }

    /// A string, quotes included.
    fn string(&mut self) -> Result<&'a [u8], String> {
        let start = self.pos;
        self.expect(b'"')?;
        loop {
            match self.next() {
                Some(b'"') => return Ok(&self.body[start..self.pos]),
                Some(b'\\') => {
                    self.next();
                }
                Some(_) => {}
                None => return Err("a string is not closed".to_owned()),
            }
        }
    }

    /// Any value: a string, a bracketed value (by counting), or a scalar.
    fn value(&mut self) -> Result<&'a [u8], String> {
        let start = self.pos;
        match self.peek() {
            Some(b'"') => {
                self.string()?;
            }
            Some(b'[' | b'{') => {
                let mut depth = 0usize;
                loop {
                    match self.peek() {
                        Some(b'"') => {
                            self.string()?;
                            continue;
                        }
                        Some(b'[' | b'{') => depth += 1,
                        Some(b']' | b'}') => {
                            depth -= 1;
                            if depth == 0 {
                                self.pos += 1;
                                break;
                            }
                        }
                        Some(_) => {}
                        None => return Err("an array or object is not closed".to_owned()),
                    }
                    self.pos += 1;
                }
            }
            Some(_) => {
                while let Some(b) = self.peek() {
                    if matches!(b, b',' | b']' | b'}' | b' ' | b'\t' | b'\n' | b'\r') {
                        break;
                    }
                    self.pos += 1;
                }
                if self.pos == start {
                    return Err(self.unexpected("a value"));
                }
            }
            None => return Err(self.unexpected("a value")),
        }
        Ok(&self.body[start..self.pos])
    }

    /// The elements of an array, as raw text.
    fn array_elements(&mut self) -> Result<Vec<&'a [u8]>, String> {
        self.expect(b'[')?;
        let mut out = Vec::new();
        self.ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(out);
        }
        loop {
            self.ws();
            out.push(self.value()?);
            self.ws();
            match self.next() {
                Some(b',') => continue,
                Some(b']') => return Ok(out),
                _ => return Err(self.unexpected("',' or ']'")),
            }
        }
    }
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

/// An entity by-refs returned but that was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedEntity {
    pub entity_ref: String,
    pub reason: SkipReason,
    /// Why, bounded and escaped.
    pub detail: String,
    /// Whether an earlier version is kept in its place (else it is left out).
    pub kept: bool,
}

impl std::fmt::Display for SkippedEntity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} ({}); {}",
            self.entity_ref,
            self.detail,
            self.reason.as_str(),
            if self.kept {
                "its last good version is kept"
            } else {
                "left out"
            }
        )
    }
}

/// An entity whose etag in the listing differs from the one by-refs returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtagMismatch {
    pub entity_ref: String,
    pub listed: Option<String>,
    pub fetched: Option<String>,
}

/// What the last successful [`Syncer::sync_once`] met besides its outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub skipped: Vec<SkippedEntity>,
    pub etag_mismatches: Vec<EtagMismatch>,
}

/// The etag-diffing sync over a [`Client`]; holds the applied copy of the catalog.
#[derive(Debug)]
pub struct Syncer {
    client: Client,
    kinds: Vec<String>,
    applied: HashMap<String, Entity>,
    /// Refs of the applied copy that came from the snapshot file and that Backstage
    /// has not confirmed yet: fetched whatever their etag says (see [`Syncer::seed`]).
    unverified: HashSet<String>,
    wipes_seen: u32,
    report: SyncReport,
}

impl Syncer {
    pub fn new(client: Client, kinds: Vec<String>) -> Self {
        Self {
            client,
            kinds,
            applied: HashMap::new(),
            unverified: HashSet::new(),
            wipes_seen: 0,
            report: SyncReport::default(),
        }
    }

    /// Starts from `entities` (the snapshot file). The snapshot is a cache, never an
    /// authority: every seeded entity still listed is fetched again on the first sync
    /// that reaches Backstage, whatever its etag, so an edited file cannot outlive a
    /// healthy Backstage. Until then the seed is what the wipe-out guard protects,
    /// and what the runner serves while Backstage is unreachable.
    pub fn seed(&mut self, entities: Vec<Entity>) {
        self.applied = entities.into_iter().map(|e| (e.entity_ref(), e)).collect();
        self.unverified = self.applied.keys().cloned().collect();
        self.wipes_seen = 0;
    }

    /// The applied copy, sorted by entity ref.
    pub fn entities(&self) -> Vec<Entity> {
        let sorted: BTreeMap<_, _> = self.applied.iter().collect();
        sorted.into_values().cloned().collect()
    }

    /// Skipped entities and etag mismatches of the last successful sync.
    pub fn report(&self) -> &SyncReport {
        &self.report
    }

    /// One poll of Backstage; see the module docs.
    pub async fn sync_once(&mut self) -> Result<SyncOutcome, CatalogError> {
        let rows = self.client.list_etags(&self.kinds).await?;
        let mut next = HashMap::with_capacity(rows.len());
        let mut listed: HashMap<String, Option<String>> = HashMap::with_capacity(rows.len());
        let mut to_fetch = Vec::new();
        for row in rows {
            match self.applied.get(&row.entity_ref) {
                Some(current)
                    if row.etag.is_some()
                        && current.metadata.etag == row.etag
                        && !self.unverified.contains(&row.entity_ref) =>
                {
                    next.insert(row.entity_ref.clone(), current.clone());
                }
                _ => to_fetch.push(row.entity_ref.clone()),
            }
            listed.insert(row.entity_ref, row.etag);
        }
        to_fetch.sort();
        to_fetch.dedup();
        let fetched = self.client.fetch_by_refs(&to_fetch).await?;
        // Nothing below awaits: a cancelled sync changes nothing.
        let mut report = SyncReport::default();
        // After a sync that reached Backstage every entity is confirmed or left out.
        let unverified: HashSet<String> = HashSet::new();
        for (entity_ref, item) in to_fetch.iter().zip(fetched) {
            match item {
                Fetched::Entity(entity) => {
                    let listed_etag = listed.get(entity_ref).cloned().flatten();
                    if entity.metadata.etag != listed_etag {
                        report.etag_mismatches.push(EtagMismatch {
                            entity_ref: entity_ref.clone(),
                            listed: listed_etag,
                            fetched: entity.metadata.etag.clone(),
                        });
                    }
                    next.insert(entity_ref.clone(), entity);
                }
                // Deleted between listing and fetching; it is gone.
                Fetched::Missing => {}
                Fetched::Skipped(reason, detail) => {
                    // Only a version Backstage itself delivered is kept: a copy seeded
                    // from the snapshot file and never confirmed is left out, like a
                    // new entity, or an edited file would be served as live (found by
                    // review).
                    let kept = self
                        .applied
                        .get(entity_ref)
                        .filter(|_| !self.unverified.contains(entity_ref));
                    if let Some(kept) = kept {
                        next.insert(entity_ref.clone(), kept.clone());
                    }
                    report.skipped.push(SkippedEntity {
                        entity_ref: entity_ref.clone(),
                        reason,
                        detail,
                        kept: kept.is_some(),
                    });
                }
            }
        }
        self.report = report;
        if next == self.applied {
            self.wipes_seen = 0;
            self.unverified = unverified;
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
        self.unverified = unverified;
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
        let long = "x".repeat(5000);
        let short = error_message(long.as_bytes());
        assert_eq!(short, format!("{}…[cut]", "x".repeat(ERROR_MESSAGE_BYTES)));
        assert_eq!(error_message(&[0xff, 0xfe]), "\u{fffd}\u{fffd}");
        // A long Backstage message is cut too, and escaped.
        let body = serde_json::json!({"error": {"name": "InputError",
            "message": format!("bad\n\u{1b}[31m{}", "y".repeat(100_000))}});
        let message = error_message(body.to_string().as_bytes());
        assert!(
            message.starts_with("InputError: bad\\n\\u{1b}[31myyy"),
            "{message}"
        );
        assert!(message.ends_with("…[cut]"));
        assert!(message.len() <= ERROR_MESSAGE_BYTES + "…[cut]".len());
    }

    #[test]
    fn a_deep_item_fails_alone_and_a_deep_unread_field_is_skipped() {
        let deep = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
        // A field the model does not hold is skipped over, at any depth, without
        // recursion (a million levels would otherwise overflow the stack).
        let unread = format!(
            r#"{{"kind":"Component","metadata":{{"name":"a","deep":{}}}}}"#,
            deep(1_000_000)
        );
        let parsed: Option<Entity> = serde_json::from_str(&unread).unwrap();
        assert_eq!(parsed.unwrap().metadata.name, "a");
        // A field it holds (spec) hits serde_json's recursion limit: an error, no crash.
        let held = format!(
            r#"{{"kind":"Component","metadata":{{"name":"a"}},"spec":{}}}"#,
            deep(1_000_000)
        );
        let err = serde_json::from_str::<Option<Entity>>(&held).unwrap_err();
        assert!(err.to_string().contains("recursion limit"), "{err}");
        let body = format!(r#"{{"items":[{held},null,{unread}]}}"#);
        assert_eq!(split_items(body.as_bytes()).unwrap().len(), 3);
    }

    #[test]
    fn excerpts_cut_on_char_boundaries() {
        assert_eq!(excerpt("héllo", 3), "hé…[cut]");
        assert_eq!(excerpt("héllo", 2), "h…[cut]");
        assert_eq!(excerpt("ok", 2), "ok");
        assert_eq!(excerpt("a\u{202e}b", 100), "a\\u{202e}b");
    }

    #[test]
    fn items_are_split_without_a_depth_limit() {
        let deep = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
        let body = format!(
            r#" {{"meta": {{"x": [1, "]"]}}, "items" : [ {{"a":"}}\"[" }} , null,{deep},
               "s", 12.5e3 ], "z": true }} "#
        );
        let items = split_items(body.as_bytes()).unwrap();
        let items: Vec<&str> = items
            .iter()
            .map(|i| std::str::from_utf8(i).unwrap())
            .collect();
        assert_eq!(
            items,
            [r#"{"a":"}\"[" }"#, "null", &deep, "\"s\"", "12.5e3"]
        );
        assert!(serde_json::from_str::<serde_json::Value>(items[2]).is_err());
        assert_eq!(split_items(br#"{"items":[]}"#).unwrap().len(), 0);
        assert_eq!(split_items(br#"{"\u0069tems":[1]}"#).unwrap().len(), 1);
        for bad in [
            &b""[..],
            b"[]",
            b"{}",
            b"{\"items\":[1,]}",
            b"{\"items\":[{]}",
            b"{\"items\":[\"x]}",
            b"{\"items\":[1],\"items\":[2]}",
            b"{\"items\":[1]} x",
            b"{\"items\":[1] \"a\":1}",
        ] {
            assert!(
                split_items(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
