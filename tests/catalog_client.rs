//! The Backstage catalog client, sync and runner against the fake HTTP server of
//! tests/common answering like the catalog API (cursor paging that carries only the filter,
//! `fields`, by-refs with nulls, Backstage error bodies) and injects the faults a
//! real Backstage cannot produce on demand.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stagedoor::catalog::backstage::{
    Client, Limits, SkipReason, SyncOutcome, Syncer, WIPE_CONFIRMATIONS,
};
use stagedoor::catalog::{
    CatalogConfig, CatalogError, CatalogHandle, CatalogSnapshot, CatalogSource, Entity, Origin,
    SourceKind, snapshot,
};
use stagedoor::policy::{Policy, Request, Unmatched};
use stagedoor::reason::Reason;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "test-token-abc123";
const ETAG_FIELDS: &str = "kind,metadata.namespace,metadata.name,metadata.etag";

// ---------------------------------------------------------------- fake server

#[path = "common/fake_http.rs"]
mod fake_http;

use fake_http::{FaultServer, Handler, Reply, Request as Req};

/// The entity refs a by-refs request asks for.
trait ByRefs {
    fn refs(&self) -> Vec<String>;
}

impl ByRefs for Req {
    fn refs(&self) -> Vec<String> {
        let body: Value = serde_json::from_slice(&self.body).unwrap();
        serde_json::from_value(body["entityRefs"].clone()).unwrap()
    }
}

// ------------------------------------------------------------- fake Backstage

/// The catalog the fake serves: full entities in Backstage's JSON shape.
type Catalog = Arc<Mutex<Vec<Value>>>;

fn entity(kind: &str, name: &str, etag: &str, routes: Option<&str>) -> Value {
    let mut annotations = json!({"backstage.io/managed-by-location": "url:x"});
    if let Some(routes) = routes {
        annotations["stagedoor.io/routes"] = json!(routes);
    }
    json!({
        "apiVersion": "backstage.io/v1alpha1",
        "kind": kind,
        "metadata": {"namespace": "default", "name": name, "uid": format!("uid-{name}"),
                     "etag": etag, "annotations": annotations},
        "spec": {"owner": "team-a"},
        "relations": [{"type": "ownedBy", "targetRef": "group:default/team-a"}],
        "status": {"items": []}
    })
}

fn entity_ref(e: &Value) -> String {
    format!(
        "{}:{}/{}",
        e["kind"].as_str().unwrap(),
        e["metadata"]["namespace"].as_str().unwrap(),
        e["metadata"]["name"].as_str().unwrap()
    )
    .to_ascii_lowercase()
}

fn backstage_error(status: u16, name: &str, message: &str) -> Reply {
    Reply::status(
        status,
        json!({"error": {"name": name, "message": message}, "response": {"statusCode": status}})
            .to_string(),
    )
}

/// Answers like the catalog API: the cursor carries the filter and offset but not
/// `fields` or `limit` (a cursor request without them gets full entities, 200 a page).
fn backstage(catalog: &Catalog, req: &Req) -> Reply {
    backstage_with_token(catalog, TOKEN, req)
}

fn backstage_with_token(catalog: &Catalog, token: &str, req: &Req) -> Reply {
    if req.headers.get("authorization").map(String::as_str) != Some(&format!("Bearer {token}")) {
        return backstage_error(401, "AuthenticationError", "Illegal token");
    }
    let entities = catalog.lock().unwrap().clone();
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/api/catalog/entities/by-query") => {
            let (offset, kinds): (usize, Vec<String>) = match req.param("cursor") {
                Some(cursor) => {
                    let (offset, kinds) = cursor.split_once(';').unwrap();
                    (
                        offset.parse().unwrap(),
                        kinds
                            .split('|')
                            .filter(|k| !k.is_empty())
                            .map(str::to_owned)
                            .collect(),
                    )
                }
                None => (
                    0,
                    req.params("filter")
                        .iter()
                        .map(|f| f.strip_prefix("kind=").unwrap().to_owned())
                        .collect(),
                ),
            };
            let limit: usize = req.param("limit").map_or(200, |l| l.parse().unwrap());
            let matching: Vec<&Value> = entities
                .iter()
                .filter(|e| {
                    kinds.is_empty()
                        || kinds
                            .iter()
                            .any(|k| k.eq_ignore_ascii_case(e["kind"].as_str().unwrap()))
                })
                .collect();
            let items: Vec<Value> = matching
                .iter()
                .skip(offset)
                .take(limit)
                .map(|e| match req.param("fields") {
                    Some(ETAG_FIELDS) => json!({"kind": e["kind"], "metadata": {
                        "namespace": e["metadata"]["namespace"], "name": e["metadata"]["name"],
                        "etag": e["metadata"]["etag"]}}),
                    _ => (*e).clone(),
                })
                .collect();
            let page_info = if offset + limit < matching.len() {
                json!({"nextCursor": format!("{};{}", offset + limit, kinds.join("|"))})
            } else {
                json!({})
            };
            Reply::status(
                200,
                json!({"items": items, "totalItems": matching.len(), "pageInfo": page_info})
                    .to_string(),
            )
        }
        ("POST", "/api/catalog/entities/by-refs") => {
            let items: Vec<Value> = req
                .refs()
                .iter()
                .map(|r| {
                    entities
                        .iter()
                        .find(|e| entity_ref(e) == *r)
                        .cloned()
                        .unwrap_or(Value::Null)
                })
                .collect();
            Reply::status(200, json!({"items": items}).to_string())
        }
        _ => backstage_error(404, "NotFoundError", "no such route"),
    }
}

async fn fake_backstage(catalog: Catalog) -> FaultServer {
    FaultServer::with_handler(Arc::new(move |req| backstage(&catalog, req))).await
}

fn limits(page_size: usize, refs_per_request: usize) -> Limits {
    Limits {
        page_size,
        refs_per_request,
        ..Limits::default()
    }
}

fn client(server: &FaultServer, limits: Limits) -> Client {
    Client::new(&server.base.clone(), Some(TOKEN.to_owned()), limits).unwrap()
}

fn kinds() -> Vec<String> {
    CatalogConfig::default().kinds
}

/// A published catalog's entities, as the snapshot file holds them.
fn owned(entities: &[Arc<Entity>]) -> Vec<Entity> {
    entities.iter().map(|e| Entity::clone(e)).collect()
}

fn refs<E: std::borrow::Borrow<Entity>>(entities: &[E]) -> Vec<String> {
    entities.iter().map(|e| e.borrow().entity_ref()).collect()
}

fn sample_catalog() -> Catalog {
    Arc::new(Mutex::new(vec![
        entity("Component", "svc-a", "a1", Some("GET /a")),
        entity("Component", "svc-b", "b1", Some("GET /b")),
        entity("Group", "team-a", "t1", None),
        entity("User", "alice", "u1", None),
        entity("Location", "generated-x", "l1", None),
        entity("API", "api-a", "p1", None),
    ]))
}

// ---------------------------------------------------------------------- tests

#[tokio::test]
async fn cursor_paging_resends_fields_and_limit_then_fetches_by_refs() {
    let catalog = sample_catalog();
    let server = fake_backstage(catalog.clone()).await;
    let mut syncer = Syncer::new(client(&server, limits(2, 2)), kinds());
    let outcome = syncer.sync_once().await.unwrap();
    let SyncOutcome::Applied {
        entities,
        fetched,
        removed,
    } = outcome
    else {
        panic!("{outcome:?}")
    };
    assert_eq!((fetched, removed), (5, 0));
    assert_eq!(
        refs(&entities),
        [
            "api:default/api-a",
            "component:default/svc-a",
            "component:default/svc-b",
            "group:default/team-a",
            "user:default/alice",
        ]
    );
    let svc = &entities[1];
    assert_eq!(svc.annotation("stagedoor.io/routes"), Some("GET /a"));
    assert_eq!(svc.metadata.etag.as_deref(), Some("a1"));
    assert_eq!(
        svc.related("ownedBy").collect::<Vec<_>>(),
        ["group:default/team-a"]
    );
    assert_eq!(svc.spec["owner"], "team-a");

    let requests = server.take_requests();
    let pages: Vec<&Req> = requests.iter().filter(|r| r.method == "GET").collect();
    assert_eq!(pages.len(), 3, "5 entities, 2 a page");
    for (i, page) in pages.iter().enumerate() {
        assert_eq!(page.path, "/api/catalog/entities/by-query");
        assert_eq!(page.param("fields"), Some(ETAG_FIELDS), "page {i}");
        assert_eq!(page.param("limit"), Some("2"), "page {i}");
        assert_eq!(page.headers["authorization"], format!("Bearer {TOKEN}"));
        if i == 0 {
            assert!(page.param("cursor").is_none());
            let filters = page.params("filter");
            assert!(filters.contains(&"kind=component") && filters.contains(&"kind=user"));
            assert!(!filters.contains(&"kind=location"));
        } else {
            assert!(page.param("cursor").is_some());
            assert!(
                page.params("filter").is_empty(),
                "the cursor carries the filter"
            );
        }
    }
    let posts: Vec<&Req> = requests.iter().filter(|r| r.method == "POST").collect();
    assert_eq!(posts.len(), 3, "5 refs, 2 a request");
    let mut asked: Vec<String> = posts.iter().flat_map(|r| r.refs()).collect();
    asked.sort();
    assert_eq!(asked, refs(&entities));
    let body: Value = serde_json::from_slice(&posts[0].body).unwrap();
    // Only what the policy reads: not `status`, not `spec.definition`, not any field
    // another plugin adds (a deep or bulky one would otherwise reach the parser).
    assert_eq!(
        body["fields"],
        json!([
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
            "relations"
        ])
    );
    assert_eq!(posts[0].headers["content-type"], "application/json");
}

#[tokio::test]
async fn an_etag_change_fetches_only_that_entity() {
    let catalog = sample_catalog();
    let server = fake_backstage(catalog.clone()).await;
    let mut syncer = Syncer::new(client(&server, Limits::default()), kinds());
    assert!(matches!(
        syncer.sync_once().await.unwrap(),
        SyncOutcome::Applied { fetched: 5, .. }
    ));
    server.take_requests();

    // Nothing changed: one listing, no fetch.
    assert_eq!(syncer.sync_once().await.unwrap(), SyncOutcome::Unchanged);
    let requests = server.take_requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].method, "GET");

    // svc-b changes: only svc-b is fetched.
    catalog.lock().unwrap()[1] = entity("Component", "svc-b", "b2", Some("GET /b2"));
    let outcome = syncer.sync_once().await.unwrap();
    let SyncOutcome::Applied {
        entities,
        fetched: 1,
        removed: 0,
    } = outcome
    else {
        panic!("{outcome:?}")
    };
    let posts: Vec<Req> = server
        .take_requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect();
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].refs(), ["component:default/svc-b"]);
    let svc_b = entities
        .iter()
        .find(|e| e.metadata.name == "svc-b")
        .unwrap();
    assert_eq!(svc_b.annotation("stagedoor.io/routes"), Some("GET /b2"));
    assert_eq!(syncer.entities(), entities);

    // A new entity and a deleted one: the new one is fetched, the deleted one dropped.
    {
        let mut c = catalog.lock().unwrap();
        c.retain(|e| e["metadata"]["name"] != "alice");
        c.push(entity("User", "bob", "u2", None));
    }
    let outcome = syncer.sync_once().await.unwrap();
    let SyncOutcome::Applied {
        entities,
        fetched: 1,
        removed: 1,
    } = outcome
    else {
        panic!("{outcome:?}")
    };
    assert!(refs(&entities).contains(&"user:default/bob".to_owned()));
    assert!(!refs(&entities).contains(&"user:default/alice".to_owned()));
    let posts: Vec<Req> = server
        .take_requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect();
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].refs(), ["user:default/bob"]);
}

#[tokio::test]
async fn an_entity_deleted_between_listing_and_fetching_is_dropped() {
    let catalog = sample_catalog();
    let listed = catalog.clone();
    // by-refs answers null for svc-a, as Backstage does for a ref it no longer has.
    let server = FaultServer::with_handler(Arc::new(move |req| {
        if req.method == "POST" {
            let items: Vec<Value> = req
                .refs()
                .iter()
                .map(|r| {
                    if r == "component:default/svc-a" {
                        Value::Null
                    } else {
                        listed
                            .lock()
                            .unwrap()
                            .iter()
                            .find(|e| entity_ref(e) == *r)
                            .cloned()
                            .unwrap()
                    }
                })
                .collect();
            return Reply::status(200, json!({"items": items}).to_string());
        }
        backstage(&listed, req)
    }))
    .await;
    let mut syncer = Syncer::new(client(&server, Limits::default()), kinds());
    let SyncOutcome::Applied { entities, .. } = syncer.sync_once().await.unwrap() else {
        panic!()
    };
    assert_eq!(entities.len(), 4);
    assert!(!refs(&entities).contains(&"component:default/svc-a".to_owned()));
}

/// A ref listed twice, once with the applied etag and once with a new one (an entity
/// edited while the listing was paged), is decided by its fetch alone, in either
/// order: when by-refs says it is gone, the applied version is not carried over. (It
/// was: the sync reported `Unchanged` and kept serving the deleted entity.)
#[tokio::test]
async fn a_ref_listed_twice_is_decided_by_its_fetch() {
    for edited_first in [false, true] {
        let listed = sample_catalog();
        let live = sample_catalog();
        let (l, f) = (listed.clone(), live.clone());
        let server = FaultServer::with_handler(Arc::new(move |req| {
            if req.method == "POST" {
                backstage(&f, req)
            } else {
                backstage(&l, req)
            }
        }))
        .await;
        let mut syncer = Syncer::new(client(&server, Limits::default()), kinds());
        assert!(matches!(
            syncer.sync_once().await.unwrap(),
            SyncOutcome::Applied { .. }
        ));
        let edited = entity("Component", "svc-a", "a2", Some("GET /a2"));
        if edited_first {
            listed.lock().unwrap().insert(0, edited);
        } else {
            listed.lock().unwrap().push(edited);
        }
        live.lock()
            .unwrap()
            .retain(|e| e["metadata"]["name"] != "svc-a");
        let outcome = syncer.sync_once().await.unwrap();
        let SyncOutcome::Applied { removed: 1, .. } = outcome else {
            panic!("edited first: {edited_first}: {outcome:?}")
        };
        assert!(!refs(&syncer.entities()).contains(&"component:default/svc-a".to_owned()));
    }
}

#[tokio::test]
async fn the_wipe_out_guard_needs_three_polls_in_a_row() {
    let catalog = sample_catalog();
    let server = fake_backstage(catalog.clone()).await;
    let mut syncer = Syncer::new(client(&server, Limits::default()), kinds());
    syncer.sync_once().await.unwrap();
    let full = syncer.entities();
    assert_eq!(WIPE_CONFIRMATIONS, 3);

    // Routes vanish (a glitch): held twice, then the blip ends: nothing applied.
    let saved = catalog.lock().unwrap().clone();
    catalog
        .lock()
        .unwrap()
        .retain(|e| e["metadata"]["annotations"]["stagedoor.io/routes"].is_null());
    for n in 1..=2 {
        assert_eq!(
            syncer.sync_once().await.unwrap(),
            SyncOutcome::Held { consecutive: n }
        );
        assert_eq!(syncer.entities(), full);
    }
    *catalog.lock().unwrap() = saved.clone();
    assert_eq!(syncer.sync_once().await.unwrap(), SyncOutcome::Unchanged);

    // The count restarted: an empty catalog is held twice more, the third applies.
    catalog.lock().unwrap().clear();
    assert_eq!(
        syncer.sync_once().await.unwrap(),
        SyncOutcome::Held { consecutive: 1 }
    );
    assert_eq!(
        syncer.sync_once().await.unwrap(),
        SyncOutcome::Held { consecutive: 2 }
    );
    assert_eq!(
        syncer.sync_once().await.unwrap(),
        SyncOutcome::Applied {
            entities: vec![],
            fetched: 0,
            removed: 5
        }
    );
    // From no routes, fewer entities apply at once.
    *catalog.lock().unwrap() = vec![entity("Group", "g", "g1", None)];
    assert!(matches!(
        syncer.sync_once().await.unwrap(),
        SyncOutcome::Applied { .. }
    ));
    catalog.lock().unwrap().clear();
    assert!(matches!(
        syncer.sync_once().await.unwrap(),
        SyncOutcome::Applied { removed: 1, .. }
    ));
}

#[tokio::test]
async fn a_failed_poll_between_two_wipe_outs_does_not_reset_the_guard() {
    let catalog = sample_catalog();
    let fail = Arc::new(Mutex::new(false));
    let (c, f) = (catalog.clone(), fail.clone());
    let server = FaultServer::with_handler(Arc::new(move |req| {
        if *f.lock().unwrap() {
            return backstage_error(503, "ServiceUnavailable", "busy");
        }
        backstage(&c, req)
    }))
    .await;
    let mut syncer = Syncer::new(client(&server, Limits::default()), kinds());
    syncer.sync_once().await.unwrap();
    catalog.lock().unwrap().clear();
    assert_eq!(
        syncer.sync_once().await.unwrap(),
        SyncOutcome::Held { consecutive: 1 }
    );
    *fail.lock().unwrap() = true;
    let err = syncer.sync_once().await.unwrap_err();
    assert!(
        matches!(err, CatalogError::Status { status: 503, .. }),
        "{err}"
    );
    *fail.lock().unwrap() = false;
    assert_eq!(
        syncer.sync_once().await.unwrap(),
        SyncOutcome::Held { consecutive: 2 }
    );
    assert!(matches!(
        syncer.sync_once().await.unwrap(),
        SyncOutcome::Applied { removed: 5, .. }
    ));
}

/// Syncs once against a server built from `fault`, expecting a typed error; the
/// applied copy must be what a first good sync left.
async fn assert_fault(
    fault: impl Fn(&Catalog, &Req) -> Option<Reply> + Send + Sync + 'static,
    limits: Limits,
) -> CatalogError {
    let catalog = sample_catalog();
    let armed = Arc::new(Mutex::new(false));
    let (c, a) = (catalog.clone(), armed.clone());
    let server = FaultServer::with_handler(Arc::new(move |req| {
        if *a.lock().unwrap()
            && let Some(reply) = fault(&c, req)
        {
            return reply;
        }
        backstage(&c, req)
    }))
    .await;
    let mut syncer = Syncer::new(client(&server, limits), kinds());
    syncer.sync_once().await.unwrap();
    let before = syncer.entities();
    // Something changed, so the failed sync would have had something to apply.
    catalog.lock().unwrap()[0] = entity("Component", "svc-a", "a2", Some("GET /a2"));
    *armed.lock().unwrap() = true;
    let err = syncer
        .sync_once()
        .await
        .expect_err("the fault must fail the sync");
    assert_eq!(
        syncer.entities(),
        before,
        "a failed sync changed the catalog"
    );
    assert!(!err.to_string().contains(TOKEN), "token leaked: {err}");
    assert!(!format!("{err:?}").contains(TOKEN), "token leaked: {err:?}");
    *armed.lock().unwrap() = false;
    assert!(matches!(
        syncer.sync_once().await.unwrap(),
        SyncOutcome::Applied { fetched: 1, .. }
    ));
    err
}

fn is_cursor_page(req: &Req) -> bool {
    req.method == "GET" && req.param("cursor").is_some()
}

#[tokio::test]
async fn page_two_of_three_dies() {
    let err = assert_fault(
        |_, req| is_cursor_page(req).then_some(Reply::Hangup),
        limits(2, 200),
    )
    .await;
    assert!(matches!(err, CatalogError::Http { .. }), "{err}");
}

#[tokio::test]
async fn page_two_is_truncated_mid_body() {
    let err = assert_fault(
        |_, req| {
            is_cursor_page(req).then(|| {
                Reply::Raw(b"HTTP/1.1 200 OK\r\ncontent-length: 500\r\n\r\n{\"items\":[".to_vec())
            })
        },
        limits(2, 200),
    )
    .await;
    assert!(matches!(err, CatalogError::Http { .. }), "{err}");
}

#[tokio::test]
async fn auth_errors_carry_backstages_message() {
    let err = assert_fault(
        |_, _| Some(backstage_error(401, "AuthenticationError", "Illegal token")),
        Limits::default(),
    )
    .await;
    let CatalogError::Auth {
        status, message, ..
    } = &err
    else {
        panic!("{err}")
    };
    assert_eq!(
        (*status, message.as_str()),
        (401, "AuthenticationError: Illegal token")
    );
    let err = assert_fault(
        |_, _| Some(backstage_error(403, "NotAllowedError", "no")),
        Limits::default(),
    )
    .await;
    assert!(
        matches!(err, CatalogError::Auth { status: 403, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn server_errors_are_status_errors() {
    let err = assert_fault(
        |_, req| (req.method == "POST").then(|| Reply::status(500, "<html>oops</html>")),
        Limits::default(),
    )
    .await;
    let CatalogError::Status {
        status, message, ..
    } = &err
    else {
        panic!("{err}")
    };
    assert_eq!((*status, message.as_str()), (500, "<html>oops</html>"));
}

#[tokio::test]
async fn redirects_are_refused_not_followed() {
    let followed = Arc::new(Mutex::new(false));
    let target = {
        let f = followed.clone();
        FaultServer::with_handler(Arc::new(move |_| {
            *f.lock().unwrap() = true;
            Reply::status(200, "{\"items\":[]}")
        }))
        .await
    };
    let location = target.base.clone();
    let err = assert_fault(
        move |_, _| {
            Some(Reply::Raw(
                format!(
                    "HTTP/1.1 302 Found\r\nlocation: {location}/x\r\ncontent-length: 0\r\n\r\n"
                )
                .into_bytes(),
            ))
        },
        Limits::default(),
    )
    .await;
    assert!(
        matches!(err, CatalogError::Redirect { status: 302, .. }),
        "{err}"
    );
    assert!(!*followed.lock().unwrap());
}

#[tokio::test]
async fn oversized_bodies_are_cut_off() {
    let small = Limits {
        max_body_bytes: 4096,
        ..Limits::default()
    };
    // Announced by content-length.
    let err = assert_fault(
        |_, _| {
            Some(Reply::Raw(
                b"HTTP/1.1 200 OK\r\ncontent-length: 100000000\r\n\r\n{".to_vec(),
            ))
        },
        small.clone(),
    )
    .await;
    assert!(
        matches!(err, CatalogError::TooLarge { limit: 4096, .. }),
        "{err}"
    );
    // Chunked, no length: counted while reading.
    let err = assert_fault(
        |_, _| {
            let mut raw = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
            for _ in 0..10 {
                raw.extend_from_slice(format!("400\r\n{}\r\n", " ".repeat(1024)).as_bytes());
            }
            raw.extend_from_slice(b"0\r\n\r\n");
            Some(Reply::Raw(raw))
        },
        small,
    )
    .await;
    assert!(matches!(err, CatalogError::TooLarge { .. }), "{err}");
}

#[tokio::test]
async fn a_hanging_backstage_times_out() {
    let quick = Limits {
        timeout: Duration::from_millis(500),
        ..Limits::default()
    };
    let started = Instant::now();
    let err = assert_fault(
        |_, req| (req.method == "POST").then_some(Reply::Hang),
        quick,
    )
    .await;
    assert!(matches!(err, CatalogError::Http { .. }), "{err}");
    assert!(err.to_string().contains("timed out"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn malformed_answers_are_protocol_errors() {
    type Fault = Box<dyn Fn(&Catalog, &Req) -> Option<Reply> + Send + Sync>;
    let cases: Vec<(&str, Fault)> = vec![
        (
            "not json",
            Box::new(|_, _| Some(Reply::status(200, "<html>"))),
        ),
        ("no items", Box::new(|_, _| Some(Reply::status(200, "{}")))),
        (
            "item without name",
            Box::new(|_, req| {
                (req.method == "GET").then(|| {
                    Reply::status(
                        200,
                        json!({"items": [{"kind": "User", "metadata": {}}]}).to_string(),
                    )
                })
            }),
        ),
        (
            "cursor repeats",
            Box::new(|_, req| {
                (req.method == "GET").then(|| {
                    Reply::status(
                        200,
                        json!({"items": [], "pageInfo": {"nextCursor": "same"}}).to_string(),
                    )
                })
            }),
        ),
        (
            "by-refs too short",
            Box::new(|_, req| {
                (req.method == "POST").then(|| Reply::status(200, json!({"items": []}).to_string()))
            }),
        ),
        (
            "by-refs answers for another entity",
            Box::new(|_, req| {
                (req.method == "POST").then(|| {
                    let items: Vec<Value> = req
                        .refs()
                        .iter()
                        .map(|_| entity("User", "mallory", "m", None))
                        .collect();
                    Reply::status(200, json!({"items": items}).to_string())
                })
            }),
        ),
        (
            "by-refs envelope not closed",
            Box::new(|_, req| {
                (req.method == "POST").then(|| Reply::status(200, "{\"items\": [{\"kind\": \"x\"}"))
            }),
        ),
    ];
    for (name, fault) in cases {
        let err = assert_fault(fault, Limits::default()).await;
        assert!(
            matches!(err, CatalogError::Protocol { .. }),
            "{name}: {err}"
        );
    }
}

// ------------------------------------------------------------------- runner

async fn wait_for_snapshot(
    rx: &mut watch::Receiver<Option<Arc<CatalogSnapshot>>>,
    what: &str,
    pred: impl Fn(&CatalogSnapshot) -> bool,
) -> Arc<CatalogSnapshot> {
    let seen = tokio::time::timeout(
        Duration::from_secs(15),
        rx.wait_for(|s| s.as_deref().is_some_and(&pred)),
    )
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
    .unwrap();
    seen.clone().unwrap()
}

/// Starts the catalog runner on `config`; [`stop_runner`] ends it.
fn start_runner(
    config: &CatalogConfig,
    dir: &std::path::Path,
) -> (CatalogHandle, CancellationToken) {
    let shutdown = CancellationToken::new();
    let handle = CatalogSource::start(config, dir, shutdown.clone()).unwrap();
    (handle, shutdown)
}

async fn stop_runner(handle: CatalogHandle, shutdown: CancellationToken) {
    shutdown.cancel();
    handle.stopped().await;
}

fn backstage_config(url: String, snapshot: &std::path::Path) -> CatalogConfig {
    CatalogConfig {
        source: SourceKind::Backstage,
        url: Some(url),
        token_env: Some(RUNNER_TOKEN_ENV.to_owned()),
        poll_seconds: 1,
        snapshot: Some(snapshot.to_owned()),
        ..CatalogConfig::default()
    }
}

/// The runner reads its token from the environment variable `token_env` names. Tests
/// cannot set variables (no unsafe code), so they name one cargo sets for every test
/// process: the token is then "stagedoor".
const RUNNER_TOKEN_ENV: &str = "CARGO_PKG_NAME";

fn runner_backstage(catalog: Catalog) -> Handler {
    let token = std::env::var(RUNNER_TOKEN_ENV).expect("run the tests with cargo");
    Arc::new(move |req| backstage_with_token(&catalog, &token, req))
}

/// A change publishes a catalog that shares every unchanged entity with the one
/// before: the sync copies nothing on the runtime's threads, where a copy of a large
/// catalog held every decision (BENCHMARKS.md, "Issue 14: the catalog sync").
#[tokio::test]
async fn a_change_publishes_without_copying_the_unchanged_entities() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = sample_catalog();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = backstage_config(
        format!("http://{addr}"),
        std::path::Path::new("catalog-snapshot.json"),
    );
    let _server = FaultServer::start_on(listener, Some(runner_backstage(catalog.clone())));
    let (handle, shutdown) = start_runner(&config, dir.path());
    let mut rx = handle.snapshots();
    let first = wait_for_snapshot(&mut rx, "live sync", |s| s.origin == Origin::Live).await;
    {
        let mut c = catalog.lock().unwrap();
        let svc_a = c
            .iter_mut()
            .find(|e| e["metadata"]["name"] == "svc-a")
            .unwrap();
        *svc_a = entity("Component", "svc-a", "a2", Some("GET /a2 public"));
    }
    let second = wait_for_snapshot(&mut rx, "the edit", |s| {
        find(&s.entities, "svc-a").is_some_and(|e| e.metadata.etag.as_deref() == Some("a2"))
    })
    .await;
    assert_eq!(first.entities.len(), second.entities.len());
    for (before, after) in first.entities.iter().zip(&second.entities) {
        assert_eq!(before.entity_ref(), after.entity_ref());
        let shared = Arc::ptr_eq(before, after);
        assert_eq!(
            shared,
            before.metadata.name != "svc-a",
            "{}",
            before.entity_ref()
        );
    }
    stop_runner(handle, shutdown).await;
}

#[tokio::test]
async fn runner_serves_the_snapshot_while_backstage_is_down_then_goes_live() {
    let dir = tempfile::tempdir().unwrap();
    let snapshot_path = dir.path().join("state/catalog-snapshot.json");
    std::fs::create_dir(dir.path().join("state")).unwrap();
    let catalog = sample_catalog();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = backstage_config(
        format!("http://{addr}"),
        std::path::Path::new("state/catalog-snapshot.json"),
    );

    // 1. Live: the runner syncs and writes the snapshot file.
    let server = FaultServer::start_on(listener, Some(runner_backstage(catalog.clone())));
    let (handle, shutdown) = start_runner(&config, dir.path());
    let mut rx = handle.snapshots();
    let live = wait_for_snapshot(&mut rx, "live sync", |s| s.origin == Origin::Live).await;
    assert_eq!(live.entities.len(), 5);
    let saved = snapshot::load(&snapshot_path).unwrap();
    assert_eq!(saved.entities, owned(&live.entities));
    let status = handle.status().borrow().clone();
    assert_eq!(status.origin, Some(Origin::Live));
    assert_eq!(status.entities, 5);
    assert!(status.last_good_sync_unix.is_some());
    assert!(status.syncs.applied >= 1);
    stop_runner(handle, shutdown).await;
    server.stop().await;

    // 2. Backstage down at startup: the snapshot is served.
    let (handle, shutdown) = start_runner(&config, dir.path());
    let mut rx = handle.snapshots();
    let served = wait_for_snapshot(&mut rx, "snapshot", |_| true).await;
    assert_eq!(served.origin, Origin::Snapshot);
    assert_eq!(served.entities, live.entities);
    let status = handle.status().borrow().clone();
    assert_eq!(status.origin, Some(Origin::Snapshot));
    assert!(status.consecutive_errors >= 1, "{status:?}");
    assert!(status.syncs.failed >= 1);
    assert_eq!(status.last_good_sync_unix, Some(saved.saved_at_unix));
    assert!(
        status
            .last_error
            .as_deref()
            .unwrap()
            .contains("Backstage request")
    );

    // 3. Backstage is back with one change: the runner goes live. The snapshot is a
    //    cache, not an authority: every entity it seeded is fetched again on first
    //    contact, whatever its etag.
    catalog.lock().unwrap()[0] = entity("Component", "svc-a", "a9", Some("GET /a9"));
    let server = FaultServer::start_on(
        TcpListener::bind(addr).await.unwrap(),
        Some(runner_backstage(catalog.clone())),
    );
    handle.reload();
    let back = wait_for_snapshot(&mut rx, "live again", |s| s.origin == Origin::Live).await;
    let svc_a = back
        .entities
        .iter()
        .find(|e| e.metadata.name == "svc-a")
        .unwrap();
    assert_eq!(svc_a.annotation("stagedoor.io/routes"), Some("GET /a9"));
    let fetched: Vec<String> = server
        .take_requests()
        .iter()
        .filter(|r| r.method == "POST")
        .flat_map(Req::refs)
        .collect();
    assert_eq!(fetched, refs(&live.entities));
    assert_eq!(
        snapshot::load(&snapshot_path).unwrap().entities,
        owned(&back.entities)
    );
    let status = handle.status().borrow().clone();
    assert_eq!(
        (status.origin, status.consecutive_errors),
        (Some(Origin::Live), 0)
    );
    stop_runner(handle, shutdown).await;
}

#[tokio::test]
async fn runner_publishes_nothing_when_backstage_is_down_and_there_is_no_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = backstage_config(
        format!("http://127.0.0.1:{port}"),
        &dir.path().join("none.json"),
    );
    let (handle, shutdown) = start_runner(&config, dir.path());
    let mut status = handle.status();
    tokio::time::timeout(
        Duration::from_secs(10),
        status.wait_for(|s| s.syncs.failed >= 1),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(handle.snapshots().borrow().is_none());
    assert_eq!(handle.status().borrow().origin, None);
    stop_runner(handle, shutdown).await;
}

/// A Backstage that is up but still empty when stagedoor starts (it answers before it
/// has ingested its locations, as after a restart of both) must not replace the last
/// good catalog with nothing: the snapshot is served, the file is kept, and only an
/// empty answer on three polls in a row is applied. Routes coming back end it early.
#[tokio::test]
async fn runner_serves_the_snapshot_when_backstage_first_answers_empty() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = sample_catalog();
    let server = FaultServer::with_handler(runner_backstage(catalog.clone())).await;
    let mut config = backstage_config(server.base.clone(), std::path::Path::new("snap.json"));
    config.poll_seconds = 3600;
    let (handle, shutdown) = start_runner(&config, dir.path());
    let mut rx = handle.snapshots();
    let live = wait_for_snapshot(&mut rx, "live sync", |s| s.origin == Origin::Live).await;
    stop_runner(handle, shutdown).await;

    // Restart against an empty Backstage, twice held back, then routes return.
    let saved = catalog.lock().unwrap().clone();
    catalog.lock().unwrap().clear();
    let (handle, shutdown) = start_runner(&config, dir.path());
    let mut rx = handle.snapshots();
    let served = wait_for_snapshot(&mut rx, "the snapshot", |_| true).await;
    assert_eq!(served.origin, Origin::Snapshot);
    assert_eq!(served.entities, live.entities);
    let mut status = handle.status();
    tokio::time::timeout(
        Duration::from_secs(10),
        status.wait_for(|s| s.syncs.held == 1),
    )
    .await
    .expect("first contact not held")
    .unwrap();
    let st = status.borrow().clone();
    assert_eq!(
        (st.consecutive_errors, st.origin),
        (0, Some(Origin::Snapshot))
    );
    let on_disk = snapshot::load(&dir.path().join("snap.json")).unwrap();
    assert_eq!(
        on_disk.entities,
        owned(&live.entities),
        "an empty answer rewrote the file"
    );

    handle.reload();
    tokio::time::timeout(
        Duration::from_secs(10),
        status.wait_for(|s| s.syncs.held == 2),
    )
    .await
    .expect("second poll not held")
    .unwrap();
    assert!(Arc::ptr_eq(rx.borrow().as_ref().unwrap(), &served));

    // Backstage has ingested: live again. The seeded entities were never confirmed by
    // Backstage, so each is fetched once, etags notwithstanding; then only changes are.
    *catalog.lock().unwrap() = saved;
    server.take_requests();
    handle.reload();
    let back = wait_for_snapshot(&mut rx, "live again", |s| s.origin == Origin::Live).await;
    assert_eq!(back.entities, live.entities);
    let fetched: Vec<String> = server
        .take_requests()
        .iter()
        .filter(|r| r.method == "POST")
        .flat_map(Req::refs)
        .collect();
    assert_eq!(fetched, refs(&live.entities));
    handle.reload();
    tokio::time::timeout(
        Duration::from_secs(10),
        status.wait_for(|s| s.syncs.unchanged >= 1),
    )
    .await
    .expect("no unchanged poll")
    .unwrap();
    assert!(
        !server.take_requests().iter().any(|r| r.method == "POST"),
        "confirmed entities were fetched again"
    );
    stop_runner(handle, shutdown).await;

    // Without a snapshot file, an empty first answer is applied at once (deny all).
    std::fs::remove_file(dir.path().join("snap.json")).unwrap();
    catalog.lock().unwrap().clear();
    let (handle, shutdown) = start_runner(&config, dir.path());
    let mut rx = handle.snapshots();
    let empty = wait_for_snapshot(&mut rx, "the empty catalog", |_| true).await;
    assert_eq!((empty.origin, empty.entities.len()), (Origin::Live, 0));
    stop_runner(handle, shutdown).await;
}

#[tokio::test]
async fn runner_holds_a_wipe_out_until_the_third_poll() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = sample_catalog();
    let server = FaultServer::with_handler(runner_backstage(catalog.clone())).await;
    let mut config = backstage_config(server.base.clone(), std::path::Path::new("snap.json"));
    // Only reload() polls, so the test counts every poll.
    config.poll_seconds = 3600;
    let (handle, shutdown) = start_runner(&config, dir.path());
    let mut rx = handle.snapshots();
    let live = wait_for_snapshot(&mut rx, "live sync", |s| s.origin == Origin::Live).await;
    assert_eq!(live.entities.len(), 5);

    catalog.lock().unwrap().clear();
    let mut status = handle.status();
    for held in 1..=2 {
        handle.reload();
        tokio::time::timeout(
            Duration::from_secs(10),
            status.wait_for(|s| s.syncs.held == held),
        )
        .await
        .expect("poll not held")
        .unwrap();
        assert!(Arc::ptr_eq(rx.borrow().as_ref().unwrap(), &live));
        let on_disk = snapshot::load(&dir.path().join("snap.json")).unwrap();
        assert_eq!(
            on_disk.entities,
            owned(&live.entities),
            "a held sync rewrote the snapshot"
        );
    }
    handle.reload();
    let wiped =
        wait_for_snapshot(&mut rx, "the confirmed wipe-out", |s| s.entities.is_empty()).await;
    assert_eq!(wiped.origin, Origin::Live);
    assert!(
        snapshot::load(&dir.path().join("snap.json"))
            .unwrap()
            .entities
            .is_empty()
    );
    let status = handle.status().borrow().clone();
    assert_eq!((status.syncs.held, status.entities), (2, 0));
    stop_runner(handle, shutdown).await;
}

// ------------------------------------------- issue 11: entities that break syncs

/// A JSON object nested `depth` levels deep.
fn deep_value(depth: usize) -> Value {
    let mut v = json!(1);
    for _ in 0..depth {
        v = json!({ "a": v });
    }
    v
}

/// An entity with a field the policy reads (`spec.owner`) nested 130 deep, past
/// serde_json's recursion limit (128): it cannot be parsed.
fn poisoned(kind: &str, name: &str, etag: &str, routes: Option<&str>) -> Value {
    let mut e = entity(kind, name, etag, routes);
    e["spec"]["owner"] = deep_value(130);
    e
}

/// An entity with a metadata field nested 130 deep that the policy does not read (the
/// issue's case): a real Backstage does not even send it (by-refs `fields`), and a
/// server that does gets it skipped over, not parsed.
fn deep_metadata(kind: &str, name: &str, etag: &str, routes: Option<&str>) -> Value {
    let mut e = entity(kind, name, etag, routes);
    e["metadata"]["deep"] = deep_value(130);
    e
}

/// How an anonymous `GET path` is decided by the policy built from `entities`.
fn anonymous<E: std::borrow::Borrow<Entity>>(entities: &[E], path: &str) -> Reason {
    Policy::build(entities, Unmatched::Deny)
        .decide(
            &Request {
                method: "GET",
                host: "api.example.com",
                path,
            },
            Err(Reason::MissingToken),
        )
        .reason
}

fn find<'a>(entities: &'a [Arc<Entity>], name: &str) -> Option<&'a Entity> {
    entities
        .iter()
        .map(|e| &**e)
        .find(|e| e.metadata.name == name)
}

/// One entity nested deeper than the parser allows must not hold back the rest: a
/// route revoked in the same poll is applied, the bad entity keeps its last good
/// version (or is left out when new), and each is reported.
#[tokio::test]
async fn a_revocation_applies_while_a_poisoned_entity_sits_in_the_catalog() {
    let catalog = Arc::new(Mutex::new(vec![
        entity("Component", "svc-a", "a1", Some("GET /a public")),
        entity("Component", "svc-b", "b1", Some("GET /b public")),
        entity("Group", "team-a", "t1", None),
        entity("Component", "svc-c", "c1", Some("GET /c public")),
    ]));
    let server = fake_backstage(catalog.clone()).await;
    let mut syncer = Syncer::new(client(&server, Limits::default()), kinds());
    syncer.sync_once().await.unwrap();
    assert_eq!(anonymous(&syncer.entities(), "/a"), Reason::Public);

    // In one poll: svc-a's public route is revoked, svc-b changes into an entity that
    // cannot be parsed, a new unparseable entity appears, and svc-c revokes its route
    // while carrying a metadata field nested 130 deep.
    {
        let mut c = catalog.lock().unwrap();
        c[0] = entity("Component", "svc-a", "a2", Some("GET /a a:read"));
        c[1] = poisoned("Component", "svc-b", "b2", Some("GET /b b:read"));
        c[3] = deep_metadata("Component", "svc-c", "c2", Some("GET /c c:read"));
        c.push(poisoned("Component", "svc-p", "p1", Some("GET /p public")));
    }
    let outcome = syncer.sync_once().await.unwrap();
    let SyncOutcome::Applied {
        entities, fetched, ..
    } = outcome
    else {
        panic!("{outcome:?}")
    };
    assert_eq!(fetched, 4);
    assert_eq!(
        anonymous(&entities, "/a"),
        Reason::MissingToken,
        "the revocation was not applied"
    );
    assert_eq!(anonymous(&entities, "/c"), Reason::MissingToken);
    assert_eq!(
        find(&entities, "svc-b").unwrap().metadata.etag.as_deref(),
        Some("b1"),
        "svc-b is not at its last good version"
    );
    assert_eq!(anonymous(&entities, "/b"), Reason::Public);
    assert!(
        find(&entities, "svc-p").is_none(),
        "a new bad entity is left out"
    );
    let report = syncer.report();
    let skipped: Vec<(&str, SkipReason, bool)> = report
        .skipped
        .iter()
        .map(|s| (s.entity_ref.as_str(), s.reason, s.kept))
        .collect();
    assert_eq!(
        skipped,
        [
            ("component:default/svc-b", SkipReason::Unparseable, true),
            ("component:default/svc-p", SkipReason::Unparseable, false),
        ]
    );
    assert!(
        report.skipped[0].detail.contains("recursion limit"),
        "{}",
        report.skipped[0].detail
    );

    // While they stay broken, every poll tries them again and reports them again.
    server.take_requests();
    assert_eq!(syncer.sync_once().await.unwrap(), SyncOutcome::Unchanged);
    assert_eq!(syncer.report().skipped.len(), 2);
    let asked: Vec<String> = server
        .take_requests()
        .iter()
        .filter(|r| r.method == "POST")
        .flat_map(Req::refs)
        .collect();
    assert_eq!(
        asked,
        ["component:default/svc-b", "component:default/svc-p"]
    );

    // Fixed: both apply.
    {
        let mut c = catalog.lock().unwrap();
        c[1] = entity("Component", "svc-b", "b3", Some("GET /b b:read"));
        c[4] = entity("Component", "svc-p", "p2", Some("GET /p public"));
    }
    let SyncOutcome::Applied { entities, .. } = syncer.sync_once().await.unwrap() else {
        panic!()
    };
    assert!(syncer.report().skipped.is_empty());
    assert_eq!(anonymous(&entities, "/b"), Reason::MissingToken);
    assert_eq!(anonymous(&entities, "/p"), Reason::Public);
}

/// A by-refs answer that reaches the body cap is asked for again in halves; an entity
/// over the cap on its own is skipped (kept at its last good version), not the sync.
#[tokio::test]
async fn an_answer_over_the_body_cap_is_split_and_an_entity_too_large_alone_is_skipped() {
    let api = |name: &str, etag: &str, definition_bytes: usize| {
        let mut e = entity("API", name, etag, None);
        e["spec"]["definition"] = json!("x".repeat(definition_bytes));
        e
    };
    let mut entities: Vec<Value> = (0..40)
        .map(|i| api(&format!("api-{i:02}"), "e1", 5_000))
        .collect();
    entities.push(api("api-huge", "h1", 1_000));
    entities.push(entity("Component", "svc-a", "a1", Some("GET /a public")));
    let catalog = Arc::new(Mutex::new(entities));
    let server = fake_backstage(catalog.clone()).await;
    let cap = 64 * 1024;
    let small = Limits {
        max_body_bytes: cap,
        ..Limits::default()
    };
    let mut syncer = Syncer::new(client(&server, small), kinds());
    let SyncOutcome::Applied {
        entities, fetched, ..
    } = syncer.sync_once().await.unwrap()
    else {
        panic!()
    };
    assert_eq!((fetched, entities.len()), (42, 42));
    let posts: Vec<Req> = server
        .take_requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect();
    assert_eq!(posts[0].refs().len(), 42, "first asked for all at once");
    assert!(posts.len() >= 5, "not split: {} requests", posts.len());

    // api-huge grows past the cap on its own, and svc-a's route is revoked.
    {
        let mut c = catalog.lock().unwrap();
        c[40] = api("api-huge", "h2", 100_000);
        c[41] = entity("Component", "svc-a", "a2", Some("GET /a a:read"));
    }
    let SyncOutcome::Applied { entities, .. } = syncer.sync_once().await.unwrap() else {
        panic!()
    };
    assert_eq!(anonymous(&entities, "/a"), Reason::MissingToken);
    assert_eq!(
        find(&entities, "api-huge")
            .unwrap()
            .metadata
            .etag
            .as_deref(),
        Some("h1")
    );
    let report = syncer.report();
    assert_eq!(report.skipped.len(), 1, "{report:?}");
    assert_eq!(
        (
            report.skipped[0].entity_ref.as_str(),
            report.skipped[0].reason,
            report.skipped[0].kept
        ),
        ("api:default/api-huge", SkipReason::TooLarge, true)
    );
    assert!(report.skipped[0].detail.contains(&cap.to_string()));
}

// ---------------------------------------------------------- logs, for the runner

/// Collects what the tests' tracing subscriber writes.
#[derive(Clone, Default)]
struct LogBuf(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuf {
    type Writer = LogBuf;
    fn make_writer(&'a self) -> LogBuf {
        self.clone()
    }
}

impl LogBuf {
    /// The JSON lines logged so far.
    fn lines(&self) -> Vec<Value> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
    fn raw(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// JSON logs, as `serve` writes them, for this thread (the runner's tasks run on it
/// under the current-thread test runtime).
fn capture_logs() -> (LogBuf, tracing::subscriber::DefaultGuard) {
    let buf = LogBuf::default();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_max_level(tracing::Level::INFO)
        .with_writer(buf.clone())
        .finish();
    (buf, tracing::subscriber::set_default(subscriber))
}

#[tokio::test]
async fn the_runner_logs_and_counts_skipped_entities() {
    let (logs, _guard) = capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let catalog = sample_catalog();
    let server = FaultServer::with_handler(runner_backstage(catalog.clone())).await;
    let mut config = backstage_config(server.base.clone(), std::path::Path::new("snap.json"));
    config.poll_seconds = 3600;
    let (handle, shutdown) = start_runner(&config, dir.path());
    let mut rx = handle.snapshots();
    wait_for_snapshot(&mut rx, "live sync", |s| s.origin == Origin::Live).await;
    {
        let mut c = catalog.lock().unwrap();
        c[0] = entity("Component", "svc-a", "a2", Some("GET /a2"));
        c[1] = poisoned("Component", "svc-b", "b2", Some("GET /b2"));
    }
    handle.reload();
    let applied = wait_for_snapshot(&mut rx, "the revocation", |s| {
        find(&s.entities, "svc-a").unwrap().metadata.etag.as_deref() == Some("a2")
    })
    .await;
    assert_eq!(
        find(&applied.entities, "svc-b")
            .unwrap()
            .metadata
            .etag
            .as_deref(),
        Some("b1")
    );
    let status = handle.status().borrow().clone();
    assert_eq!(
        (
            status.entities_skipped.unparseable,
            status.entities_skipped.too_large
        ),
        (1, 0)
    );
    assert_eq!(status.skipped.len(), 1);
    assert!(
        status.skipped[0].starts_with("component:default/svc-b: recursion limit exceeded")
            && status.skipped[0].ends_with("its last good version is kept"),
        "{}",
        status.skipped[0]
    );
    let logged: Vec<Value> = logs
        .lines()
        .into_iter()
        .filter(|l| l["event"] == "entity_skipped")
        .collect();
    assert_eq!(logged.len(), 1, "{}", logs.raw());
    assert_eq!(logged[0]["entity"], "component:default/svc-b");
    assert_eq!(logged[0]["reason"], "unparseable");
    assert_eq!(logged[0]["kept"], true);
    // The file keeps the last good svc-b too.
    let saved = snapshot::load(&dir.path().join("snap.json")).unwrap();
    assert_eq!(saved.entities, owned(&applied.entities));
    stop_runner(handle, shutdown).await;
}

/// A proxy (or a Backstage) whose by-refs etags differ from the listing's makes every
/// poll fetch everything again: that is logged and counted, not silent.
#[tokio::test]
async fn etag_mismatches_are_logged_and_counted() {
    let (logs, _guard) = capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let catalog = sample_catalog();
    let token = std::env::var(RUNNER_TOKEN_ENV).unwrap();
    let c = catalog.clone();
    let server = FaultServer::with_handler(Arc::new(move |req: &Req| {
        let reply = backstage_with_token(&c, &token, req);
        match reply {
            Reply::Status {
                code: 200, body, ..
            } if req.method == "POST" => {
                let mut v: Value = serde_json::from_str(&body).unwrap();
                for item in v["items"].as_array_mut().unwrap() {
                    let etag = item["metadata"]["etag"].as_str().unwrap().to_owned();
                    item["metadata"]["etag"] = json!(format!("rewritten-{etag}"));
                }
                Reply::status(200, v.to_string())
            }
            other => other,
        }
    }))
    .await;
    let mut config = backstage_config(server.base.clone(), std::path::Path::new("snap.json"));
    config.poll_seconds = 3600;
    let (handle, shutdown) = start_runner(&config, dir.path());
    let mut rx = handle.snapshots();
    wait_for_snapshot(&mut rx, "live sync", |s| s.origin == Origin::Live).await;
    let mut status = handle.status();
    tokio::time::timeout(
        Duration::from_secs(10),
        status.wait_for(|s| s.etag_mismatches == 5),
    )
    .await
    .expect("first sync's mismatches not counted")
    .unwrap();
    server.take_requests();
    handle.reload();
    tokio::time::timeout(
        Duration::from_secs(10),
        status.wait_for(|s| s.etag_mismatches == 10),
    )
    .await
    .expect("second sync's mismatches not counted")
    .unwrap();
    let refetched = server
        .take_requests()
        .iter()
        .filter(|r| r.method == "POST")
        .flat_map(Req::refs)
        .count();
    assert_eq!(refetched, 5, "every entity is fetched again on every poll");
    let logged: Vec<Value> = logs
        .lines()
        .into_iter()
        .filter(|l| l["event"] == "etag_mismatch")
        .collect();
    assert_eq!(logged.len(), 2, "{}", logs.raw());
    assert_eq!(logged[0]["count"], 5);
    let examples = logged[0]["examples"].as_str().unwrap();
    assert!(
        examples.contains("api:default/api-a (listed p1, fetched rewritten-p1)"),
        "{examples}"
    );
    stop_runner(handle, shutdown).await;
}

/// A multi-megabyte error body (a message, or raw text) is read in part, and what
/// reaches the error, the status and the log line is cut and escaped.
#[tokio::test]
async fn a_multi_mb_error_body_is_logged_truncated() {
    // Backstage writes `name` before `message`.
    let backstage_body = |message: &str| {
        format!(
            r#"{{"error":{{"name":"InputError","message":{}}},"response":{{"statusCode":500}}}}"#,
            json!(message)
        )
    };
    let json_body = backstage_body(&format!("first line\n{}", "m".repeat(5 * 1024 * 1024)));
    let raw_body = format!("\u{1b}[31m{}", "r".repeat(5 * 1024 * 1024));
    for (status, body) in [(500, json_body.clone()), (401, json_body), (502, raw_body)] {
        let server =
            FaultServer::with_handler(Arc::new(move |_| Reply::status(status, body.clone()))).await;
        let err = Syncer::new(client(&server, Limits::default()), kinds())
            .sync_once()
            .await
            .unwrap_err();
        let (CatalogError::Status { message, .. } | CatalogError::Auth { message, .. }) = &err
        else {
            panic!("{err}")
        };
        assert!(message.len() <= 512 + "…[cut]".len(), "{}", message.len());
        assert!(message.ends_with("…[cut]"), "{message}");
        assert!(!message.contains(['\n', '\u{1b}']), "{message}");
        assert!(err.to_string().len() < 1024, "{}", err.to_string().len());
    }

    // Through the runner: the status and the logged line are short too.
    let (logs, _guard) = capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let big = backstage_body(&"n".repeat(5 * 1024 * 1024));
    let server =
        FaultServer::with_handler(Arc::new(move |_| Reply::status(500, big.clone()))).await;
    let config = backstage_config(server.base.clone(), &dir.path().join("none.json"));
    let (handle, shutdown) = start_runner(&config, dir.path());
    let mut status = handle.status();
    tokio::time::timeout(
        Duration::from_secs(10),
        status.wait_for(|s| s.syncs.failed >= 1),
    )
    .await
    .unwrap()
    .unwrap();
    let last_error = status.borrow().last_error.clone().unwrap();
    assert!(last_error.len() < 1024, "{}", last_error.len());
    let line = logs
        .raw()
        .lines()
        .find(|l| l.contains("catalog refresh failed"))
        .map(str::to_owned)
        .expect("the failure is logged");
    assert!(line.len() < 1500, "a {}-byte log line", line.len());
    assert!(
        line.contains("InputError") && line.contains("nnnn…[cut]"),
        "{line}"
    );
    stop_runner(handle, shutdown).await;
}

/// The snapshot file is a cache: an edit to it (a scoped route made public) does not
/// survive first contact with a healthy, unchanged Backstage, is never served as live
/// nor written back, and the file is readable by its owner only.
#[tokio::test]
async fn a_tampered_snapshot_is_corrected_on_first_contact() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let catalog = Arc::new(Mutex::new(vec![
        entity("Component", "svc-a", "a1", Some("GET /a a:read")),
        entity("Group", "team-a", "t1", None),
    ]));
    let server = FaultServer::with_handler(runner_backstage(catalog.clone())).await;
    let mut config = backstage_config(server.base.clone(), std::path::Path::new("snap.json"));
    config.poll_seconds = 3600;
    let path = dir.path().join("snap.json");
    let (handle, shutdown) = start_runner(&config, dir.path());
    let mut rx = handle.snapshots();
    let live = wait_for_snapshot(&mut rx, "live sync", |s| s.origin == Origin::Live).await;
    stop_runner(handle, shutdown).await;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600, "snapshot mode {:o}", mode(&path));
    assert_eq!(anonymous(&live.entities, "/a"), Reason::MissingToken);

    // Someone edits the file: svc-a's route made public, the etag left as it was.
    let mut saved: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    for e in saved["entities"].as_array_mut().unwrap() {
        if e["metadata"]["name"] == "svc-a" {
            e["metadata"]["annotations"]["stagedoor.io/routes"] = json!("GET /a public");
        }
    }
    std::fs::write(&path, saved.to_string()).unwrap();
    let tampered = snapshot::load(&path).unwrap();
    assert_eq!(anonymous(&tampered.entities, "/a"), Reason::Public);

    // Restart against the same healthy Backstage: the first catalog published is
    // Backstage's, and the file is rewritten from it.
    server.take_requests();
    let (handle, shutdown) = start_runner(&config, dir.path());
    let mut rx = handle.snapshots();
    let first = wait_for_snapshot(&mut rx, "first catalog", |_| true).await;
    assert_eq!(first.origin, Origin::Live);
    assert_eq!(
        anonymous(&first.entities, "/a"),
        Reason::MissingToken,
        "the edited snapshot was served as live"
    );
    assert_eq!(first.entities, live.entities);
    let fetched: Vec<String> = server
        .take_requests()
        .iter()
        .filter(|r| r.method == "POST")
        .flat_map(Req::refs)
        .collect();
    assert_eq!(
        fetched,
        refs(&live.entities),
        "seeded entities not refetched"
    );
    let mut status = handle.status();
    tokio::time::timeout(Duration::from_secs(10), async {
        while snapshot::load(&path).unwrap().entities != owned(&live.entities) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the edited file was not rewritten");
    assert_eq!(mode(&path), 0o600);
    let st = status.borrow_and_update().clone();
    assert_eq!(st.origin, Some(Origin::Live));
    stop_runner(handle, shutdown).await;
}

/// Backstage's catalog, and a copy of it as an edited snapshot file would seed it:
/// svc-a's route made public, its etag left as Backstage has it.
async fn live_and_tampered(server: &FaultServer) -> (Vec<Arc<Entity>>, Vec<Entity>) {
    let mut first = Syncer::new(client(server, Limits::default()), kinds());
    first.sync_once().await.unwrap();
    let live = first.entities();
    let mut tampered = owned(&live);
    for e in &mut tampered {
        if e.metadata.name == "svc-a" {
            e.metadata
                .annotations
                .insert("stagedoor.io/routes".to_owned(), "GET /a public".to_owned());
        }
    }
    assert_eq!(anonymous(&tampered, "/a"), Reason::Public);
    (live, tampered)
}

/// A sync cancelled while it waits for by-refs (the runner's shutdown or deadline)
/// changes nothing: the seeded entities are still unconfirmed, so the next sync
/// fetches them whatever their etag, and the edited seed does not survive.
#[tokio::test]
async fn a_cancelled_first_contact_leaves_the_seed_unconfirmed() {
    let catalog = sample_catalog();
    let hang = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (c, h) = (catalog.clone(), hang.clone());
    let server = FaultServer::with_handler(Arc::new(move |req| {
        if req.method == "POST" && h.load(std::sync::atomic::Ordering::SeqCst) {
            Reply::Hang
        } else {
            backstage(&c, req)
        }
    }))
    .await;
    let (live, tampered) = live_and_tampered(&server).await;
    let mut syncer = Syncer::new(client(&server, Limits::default()), kinds());
    syncer.seed(tampered.clone());
    hang.store(true, std::sync::atomic::Ordering::SeqCst);
    let cancelled = tokio::time::timeout(Duration::from_millis(300), syncer.sync_once()).await;
    assert!(cancelled.is_err(), "by-refs should hang: {cancelled:?}");
    assert_eq!(owned(&syncer.entities()), tampered);
    hang.store(false, std::sync::atomic::Ordering::SeqCst);
    let outcome = syncer.sync_once().await.unwrap();
    assert!(
        matches!(outcome, SyncOutcome::Applied { .. }),
        "{outcome:?}"
    );
    assert_eq!(owned(&syncer.entities()), owned(&live));
    assert_ne!(anonymous(&syncer.entities(), "/a"), Reason::Public);
}

/// A first contact held back by the wipe-out guard confirms nothing either: when the
/// routes come back with the seed's etags, the seeded entities are still fetched.
#[tokio::test]
async fn a_held_first_contact_leaves_the_seed_unconfirmed() {
    let catalog = sample_catalog();
    let server = fake_backstage(catalog.clone()).await;
    let (live, tampered) = live_and_tampered(&server).await;
    let mut syncer = Syncer::new(client(&server, Limits::default()), kinds());
    syncer.seed(tampered.clone());
    let saved = catalog.lock().unwrap().clone();
    catalog
        .lock()
        .unwrap()
        .retain(|e| e["metadata"]["annotations"]["stagedoor.io/routes"].is_null());
    assert_eq!(
        syncer.sync_once().await.unwrap(),
        SyncOutcome::Held { consecutive: 1 }
    );
    assert_eq!(owned(&syncer.entities()), tampered);
    *catalog.lock().unwrap() = saved;
    let outcome = syncer.sync_once().await.unwrap();
    assert!(
        matches!(outcome, SyncOutcome::Applied { .. }),
        "{outcome:?}"
    );
    assert_eq!(owned(&syncer.entities()), owned(&live));
}
