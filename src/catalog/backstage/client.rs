//! The Backstage catalog REST client (beside the request flow, feeding the policy):
//! the paged etag listing (`by-query`) and the entity fetch (`by-refs`), over the
//! shared [`crate::http`] client. What a sync does with them is in
//! [`super`](crate::catalog::backstage); the envelope scan that isolates each entity
//! is in [`super::items`].

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use serde::Deserialize;

use super::items::split_items;
use crate::catalog::config::parse_base_url;
use crate::catalog::entity::Entity;
use crate::catalog::error::CatalogError;
use crate::http;

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
        let http = http::client(limits.connect_timeout, limits.timeout).map_err(|e| {
            CatalogError::Http {
                url: catalog.to_string(),
                reason: e.to_string(),
            }
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
            let page_endpoint = endpoint.clone();
            let (page_rows, next_cursor) =
                off_worker(&endpoint, move || parse_page(&body, &page_endpoint)).await?;
            rows.extend(page_rows);
            match next_cursor {
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
        let (chunk, owned_endpoint) = (chunk.to_vec(), endpoint.clone());
        off_worker(endpoint, move || {
            parse_chunk(&bytes, &chunk, &owned_endpoint)
        })
        .await
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
        let response = http::send(request).await.map_err(|e| http_error(&url, e))?;
        let status = response.status();
        if status.is_redirection() {
            return Err(CatalogError::Redirect {
                url,
                status: status.as_u16(),
            });
        }
        if !status.is_success() {
            // An error body is read only in part: its message is all that is kept.
            let message = error_message(&http::read_prefix(response, ERROR_BODY_READ_BYTES).await);
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
        http::read_body(response, self.limits.max_body_bytes)
            .await
            .map_err(|e| http_error(&url, e))
    }
}

/// A by-refs answer for `chunk`, split and each item parsed on its own (on a blocking
/// thread: see [`off_worker`]).
fn parse_chunk(
    bytes: &[u8],
    chunk: &[String],
    endpoint: &reqwest::Url,
) -> Result<Vec<Fetched>, CatalogError> {
    #[cfg(test)]
    tests::note_parse_thread(endpoint);
    let items = split_items(bytes).map_err(|reason| protocol(endpoint, &reason))?;
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

/// One by-query page: its rows and the next cursor (on a blocking thread: see
/// [`off_worker`]).
fn parse_page(
    body: &[u8],
    endpoint: &reqwest::Url,
) -> Result<(Vec<EtagRow>, Option<String>), CatalogError> {
    #[cfg(test)]
    tests::note_parse_thread(endpoint);
    let page: QueryPage = parse_json(body, endpoint)?;
    let mut rows = Vec::with_capacity(page.items.len());
    for item in page.items {
        let namespace = item.metadata.namespace.as_deref().unwrap_or("default");
        if item.kind.is_empty() || item.metadata.name.is_empty() || namespace.is_empty() {
            return Err(protocol(
                endpoint,
                "an item without kind, namespace or name",
            ));
        }
        rows.push(EtagRow {
            entity_ref: crate::catalog::EntityRef::from_parts(
                &item.kind,
                namespace,
                &item.metadata.name,
            )
            .into_string(),
            etag: item.metadata.etag,
        });
    }
    Ok((rows, page.page_info.next_cursor))
}

/// Runs a parse off the async workers. A page or a by-refs answer may be up to
/// `max_body_bytes` (32 MiB): parsing one takes a core for hundreds of milliseconds
/// (an entity with thousands of annotations), and SPOP decisions on that worker would
/// wait; with `[agent] worker_threads = 1`, all of them.
async fn off_worker<T: Send + 'static>(
    endpoint: &reqwest::Url,
    parse: impl FnOnce() -> Result<T, CatalogError> + Send + 'static,
) -> Result<T, CatalogError> {
    crate::offload::run_off_worker(parse)
        .await
        .unwrap_or_else(|| {
            Err(protocol(
                endpoint,
                "the parse was cancelled (runtime shutting down)",
            ))
        })
}

/// A failed request or body read as the catalog reports it; the cap keeps its own
/// variant, which [`Client::fetch_by_refs`] acts on.
fn http_error(url: &str, e: http::Error) -> CatalogError {
    match e {
        http::Error::TooLarge { limit } => CatalogError::TooLarge {
            url: url.to_owned(),
            limit,
        },
        other => CatalogError::Http {
            url: url.to_owned(),
            reason: other.to_string(),
        },
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::sync::Mutex;
    use std::thread::ThreadId;

    /// The thread each page or by-refs answer was parsed on, by the server's port.
    static PARSED_ON: Mutex<Vec<(Option<u16>, ThreadId)>> = Mutex::new(Vec::new());

    pub(super) fn note_parse_thread(endpoint: &reqwest::Url) {
        let entry = (endpoint.port(), std::thread::current().id());
        PARSED_ON.lock().unwrap().push(entry);
    }

    /// Answers `count` requests on `listener` with a one-entity listing, which is also
    /// a by-refs answer for that entity.
    fn answer(listener: std::net::TcpListener, count: usize) {
        for _ in 0..count {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream);
            let (mut line, mut length) = (String::new(), 0);
            while reader.read_line(&mut line).unwrap() > 2 {
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
                line.clear();
            }
            reader.read_exact(&mut vec![0; length]).unwrap();
            let metadata = r#"{"name":"a","namespace":"default","etag":"e1"}"#;
            // The listing and by-refs both answer this one entity.
            let body = format!(r#"{{"items":[{{"kind":"Component","metadata":{metadata}}}]}}"#);
            let mut stream = reader.into_inner();
            write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
        }
    }

    /// Pages and by-refs answers (up to 32 MiB each) are parsed on blocking threads,
    /// never on the runtime's own: with one worker a parse there held every SPOP
    /// decision for up to 600 ms (found by review). So is the sync's comparison of the
    /// next copy with the applied one, which grows with the catalog.
    #[test]
    fn answers_are_parsed_and_settled_off_the_runtime_thread() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || answer(listener, 4));
        let client =
            Client::new(&format!("http://127.0.0.1:{port}"), None, Limits::default()).unwrap();
        let mut syncer = super::super::Syncer::new(client.clone(), Vec::new());
        // A current-thread runtime: its one thread is the test's, as an agent's one
        // worker would be.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (rows, fetched, synced) = rt.block_on(async {
            let rows = client.list_etags(&[]).await.unwrap();
            let refs = vec![rows[0].entity_ref.clone()];
            let fetched = client.fetch_by_refs(&refs).await.unwrap();
            (rows, fetched, syncer.sync_once().await.unwrap())
        });
        server.join().unwrap();
        assert_eq!(rows[0].entity_ref, "component:default/a");
        assert!(matches!(&fetched[..], [Fetched::Entity(e)] if e.metadata.name == "a"));
        assert!(matches!(
            synced,
            super::super::SyncOutcome::Applied { fetched: 1, .. }
        ));
        let here = std::thread::current().id();
        let parsed: Vec<ThreadId> = PARSED_ON
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| *p == Some(port))
            .map(|(_, t)| *t)
            .collect();
        assert_eq!(parsed.len(), 4, "two pages and two by-refs answers");
        assert!(
            parsed.iter().all(|t| *t != here),
            "parsed on the runtime thread"
        );
        let settled = super::super::SETTLED_ON.lock().unwrap().clone();
        assert!(!settled.is_empty());
        assert!(
            !settled.contains(&here),
            "listing walked or settled on the runtime thread"
        );
    }

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
    fn excerpts_cut_on_char_boundaries() {
        assert_eq!(excerpt("héllo", 3), "hé…[cut]");
        assert_eq!(excerpt("héllo", 2), "h…[cut]");
        assert_eq!(excerpt("ok", 2), "ok");
        assert_eq!(excerpt("a\u{202e}b", 100), "a\\u{202e}b");
    }
}
