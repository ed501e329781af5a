//! stagedoor's Backstage catalog source against a real Backstage backend: the test
//! peer in tests/peers/backstage (installed by `npm ci --prefix tests/peers/backstage`)
//! started on a free port over a temp copy of tests/fixtures/catalog.
//!
//! Checks: the sync brings every fixture entity with its annotations, and the same
//! relations the file source derives from the same YAML; an edit of the catalog files
//! reaches stagedoor without restarting it; a wrong token is a typed auth error; when
//! Backstage stops, the last good catalog stays published.
//!
//! The tests carry `#[ignore = "needs …"]`: tests/run.sh installs the peer and runs them
//! (`--include-ignored`); without the peer they fail with the install hint.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use stagedoor::catalog::backstage::{Client, Limits, Syncer};
use stagedoor::catalog::{
    CatalogConfig, CatalogError, CatalogSnapshot, CatalogSource, Entity, Origin, SourceKind, file,
    snapshot,
};
use stagedoor::identity::Identity;
use stagedoor::policy::{Policy, Request, Unmatched};
use stagedoor::reason::Reason;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use common::haproxy::free_port;
use common::peers::{Backstage, require_peer};

/// The runner reads its token from the variable `token_env` names; tests cannot set
/// variables (no unsafe code), so they name one cargo sets for every test process.
const TOKEN_ENV: &str = "CARGO_PKG_NAME";

/// What the policy reads of an entity: ref, stagedoor annotations, sorted relations.
type PolicyView = (String, Vec<(String, String)>, Vec<(String, String)>);

fn policy_view(e: &Entity) -> PolicyView {
    let annotations = e
        .metadata
        .annotations
        .iter()
        .filter(|(k, _)| k.starts_with("stagedoor.io/"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut relations: Vec<_> = e
        .relations
        .iter()
        .map(|r| (r.kind.clone(), r.target_ref.clone()))
        .collect();
    relations.sort();
    (e.entity_ref(), annotations, relations)
}

fn views<E: std::borrow::Borrow<Entity>>(entities: &[E]) -> Vec<PolicyView> {
    let mut v: Vec<_> = entities.iter().map(|e| policy_view(e.borrow())).collect();
    v.sort();
    v
}

/// Waits until the published catalog, seen as the policy sees it, equals what the
/// file source makes of `files`.
async fn wait_for_catalog(
    rx: &mut watch::Receiver<Option<Arc<CatalogSnapshot>>>,
    files: &Path,
    what: &str,
    within: Duration,
    peer: &Backstage,
) -> Arc<CatalogSnapshot> {
    let expected = views(&file::load(&["*.yaml".to_owned()], files).unwrap());
    let waited = tokio::time::timeout(
        within,
        rx.wait_for(|s| {
            s.as_deref()
                .is_some_and(|s| s.origin == Origin::Live && views(&s.entities) == expected)
        }),
    )
    .await
    .map(|seen| seen.unwrap().clone().unwrap());
    match waited {
        Ok(seen) => seen,
        Err(_) => {
            let got = rx.borrow().as_deref().map(|s| views(&s.entities));
            panic!(
                "{what}: stagedoor never saw the expected catalog in {within:?}\n\
                 expected: {expected:#?}\ngot: {got:#?}\nBackstage log:\n{}",
                peer.log_tail()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Backstage: run tests/run.sh"]
async fn syncs_a_real_backstage_and_follows_its_changes() {
    require_peer("backstage");
    let token = std::env::var(TOKEN_ENV).expect("run the tests with cargo");

    let dir = tempfile::tempdir().unwrap();
    let catalog_dir = dir.path().join("catalog");
    std::fs::create_dir(&catalog_dir).unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/catalog");
    let mut files = Vec::new();
    for name in ["org.yaml", "services.yaml"] {
        std::fs::copy(fixtures.join(name), catalog_dir.join(name)).unwrap();
        files.push(catalog_dir.join(name));
    }

    let started = Instant::now();
    let mut peer = Backstage::start(free_port(), &token, &files).await;
    eprintln!("Backstage ready in {:?}", started.elapsed());

    let config = CatalogConfig {
        source: SourceKind::Backstage,
        url: Some(peer.url.clone()),
        token_env: Some(TOKEN_ENV.to_owned()),
        poll_seconds: 1,
        snapshot: Some("snapshot.json".into()),
        ..CatalogConfig::default()
    };
    config.validate(dir.path()).unwrap();
    let shutdown = CancellationToken::new();
    let handle = CatalogSource::start(&config, dir.path(), shutdown.clone()).unwrap();
    let mut rx = handle.snapshots();

    // 1. The whole fixture arrives: entities, stagedoor annotations, and exactly the
    //    relations the file source derives from the same files.
    let first = wait_for_catalog(
        &mut rx,
        &catalog_dir,
        "initial sync",
        Duration::from_secs(60),
        &peer,
    )
    .await;
    eprintln!("catalog synced {:?} after start", started.elapsed());
    assert_eq!(first.entities.len(), 5);
    assert!(first.entities.iter().all(|e| e.kind != "Location"));
    assert!(first.entities.iter().all(|e| e.metadata.etag.is_some()));
    let api = first
        .entities
        .iter()
        .find(|e| e.entity_ref() == "component:default/payments-api")
        .unwrap();
    assert_eq!(api.api_version, "backstage.io/v1alpha1");
    assert!(
        api.annotation("stagedoor.io/routes")
            .unwrap()
            .starts_with("GET   /v1/payments   payments:read\n")
    );
    assert_eq!(
        api.related("ownedBy").collect::<Vec<_>>(),
        ["group:default/payments-team"]
    );
    // Its decisions match the fixture: the policy built from what Backstage served.
    let alice = Identity {
        issuer: "https://idp.example.com".into(),
        sub: Some("00u1alice".into()),
        scopes: vec!["payments:read".into()],
        ..Identity::default()
    };
    let bob = Identity {
        sub: Some("00u2bob".into()),
        ..alice.clone()
    };
    let policy = Policy::build(&first.entities, Unmatched::Deny);
    assert!(policy.errors().is_empty(), "{:?}", policy.errors());
    let decide = |p: &Policy, host: &str, method: &str, path: &str, who: &Identity| {
        p.decide(&Request { method, host, path }, Ok(who)).reason
    };
    let payments = "payments.internal.example.com";
    let ledger_host = "ledger.internal.example.com";
    assert_eq!(
        decide(&policy, payments, "GET", "/v1/payments/7", &alice),
        Reason::Ok
    );
    assert_eq!(
        decide(&policy, payments, "POST", "/v1/payments", &alice),
        Reason::InsufficientScope
    );
    assert_eq!(
        decide(&policy, payments, "GET", "/v1/payments/7", &bob),
        Reason::NotMember
    );
    assert_eq!(
        decide(&policy, ledger_host, "GET", "/v1/entries/1", &alice),
        Reason::Ok,
        "alice is in engineering through payments-team"
    );
    assert_eq!(
        decide(&policy, ledger_host, "GET", "/v2/entries/1", &alice),
        Reason::NoRoute
    );
    assert_eq!(
        snapshot::load(&dir.path().join("snapshot.json"))
            .unwrap()
            .entities,
        first
            .entities
            .iter()
            .map(|e| Entity::clone(e))
            .collect::<Vec<_>>()
    );

    // 2. An edit to the catalog files reaches stagedoor without a restart: a new
    //    route, and a new user in a group.
    let services = catalog_dir.join("services.yaml");
    let edited = std::fs::read_to_string(&services)
        .unwrap()
        .replace("GET   /v1/entries", "GET   /v2/entries");
    std::fs::write(&services, edited).unwrap();
    let mut org = std::fs::read_to_string(catalog_dir.join("org.yaml")).unwrap();
    org.push_str(
        "---\napiVersion: backstage.io/v1alpha1\nkind: User\nmetadata:\n  name: bob\n  \
         annotations: {stagedoor.io/subject: 00u2bob}\nspec:\n  memberOf: [engineering]\n",
    );
    std::fs::write(catalog_dir.join("org.yaml"), org).unwrap();
    let edit_at = Instant::now();
    let second = wait_for_catalog(
        &mut rx,
        &catalog_dir,
        "after the edit",
        Duration::from_secs(60),
        &peer,
    )
    .await;
    eprintln!("edit seen after {:?}", edit_at.elapsed());
    assert_eq!(second.entities.len(), 6);
    let ledger = second
        .entities
        .iter()
        .find(|e| e.metadata.name == "ledger")
        .unwrap();
    assert!(
        ledger
            .annotation("stagedoor.io/routes")
            .unwrap()
            .contains("/v2/entries")
    );
    // ... and changes decisions: the route moved, and bob (new, in engineering) may read.
    let policy = Policy::build(&second.entities, Unmatched::Deny);
    assert_eq!(
        decide(&policy, ledger_host, "GET", "/v2/entries/1", &alice),
        Reason::Ok
    );
    assert_eq!(
        decide(&policy, ledger_host, "GET", "/v1/entries/1", &alice),
        Reason::NoRoute
    );
    assert_eq!(
        decide(&policy, ledger_host, "GET", "/v2/entries/1", &bob),
        Reason::Ok
    );
    // The status is published just after the snapshot: wait for it rather than race it.
    let mut status_rx = handle.status();
    let status = tokio::time::timeout(
        Duration::from_secs(10),
        status_rx.wait_for(|s| s.entities == 6),
    )
    .await
    .expect("the status follows the snapshot")
    .unwrap()
    .clone();
    assert_eq!(status.origin, Some(Origin::Live));
    assert_eq!(status.entities, 6);
    assert!(status.syncs.applied >= 2, "{status:?}");

    // 3. A wrong token: Backstage's 401, typed.
    let wrong = Client::new(
        &peer.url,
        Some("not-the-token".to_owned()),
        Limits::default(),
    )
    .unwrap();
    let err = Syncer::new(wrong, config.kinds.clone())
        .sync_once()
        .await
        .unwrap_err();
    let CatalogError::Auth {
        status, message, ..
    } = &err
    else {
        panic!("{err}")
    };
    assert_eq!(*status, 401);
    assert!(message.contains("AuthenticationError"), "{message}");

    // 4. Backstage goes away: the failures are counted, the catalog stays.
    peer.stop();
    let mut status_rx = handle.status();
    tokio::time::timeout(
        Duration::from_secs(15),
        status_rx.wait_for(|s| s.consecutive_errors >= 1),
    )
    .await
    .expect("the outage was not noticed")
    .unwrap();
    let kept = rx.borrow().clone().unwrap();
    assert!(Arc::ptr_eq(&kept, &second));

    shutdown.cancel();
    handle.stopped().await;
    eprintln!("catalog_backstage done in {:?}", started.elapsed());
}

/// Under CI=true the tests needing Backstage are not left out.
#[test]
fn peer_tests_run_under_ci() {
    common::haproxy::assert_peer_tests_run_under_ci();
}

/// An API entity whose `spec.definition` is an OpenAPI document of at least `bytes`
/// (as Backstage holds it: without the block scalar's indentation).
fn api_entity(index: usize, bytes: usize) -> String {
    let mut definition = format!(
        "    openapi: 3.0.0\n    info: {{title: API {index:03}, version: 1.0.0}}\n    paths:\n"
    );
    let mut unindented = definition.len() - 4 * 3;
    let mut route = 0;
    while unindented < bytes {
        let path = format!(
            "      /api/{index:03}/resource-{route:05}:\n        get: {{responses: {{'200': {{description: ok}}}}}}\n"
        );
        unindented += path.len() - 4 * 2;
        definition.push_str(&path);
        route += 1;
    }
    format!(
        "---\napiVersion: backstage.io/v1alpha1\nkind: API\nmetadata:\n  name: api-{index:03}\n  \
         annotations:\n    stagedoor.io/routes: \"GET /api/{index:03} api:read\"\n\
         spec:\n  type: openapi\n  lifecycle: production\n  owner: team-a\n  definition: |\n{definition}"
    )
}

/// Issue 11: 200 API entities, each with a 170 KB OpenAPI document in
/// `spec.definition`, make a by-refs chunk of over 32 MiB when fetched whole, which
/// failed every sync. Fetching only the fields the policy reads, the real Backstage
/// answers small and the source becomes ready; a tight body cap splits the chunks
/// against the real Backstage too. Entities with names Backstage refuses are refused
/// by the file source as well: both sources end up with the same entities.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Backstage: run tests/run.sh"]
async fn large_api_entities_sync_and_the_source_becomes_ready() {
    require_peer("backstage");
    let token = std::env::var(TOKEN_ENV).expect("run the tests with cargo");
    let dir = tempfile::tempdir().unwrap();
    let catalog_dir = dir.path().join("catalog");
    std::fs::create_dir(&catalog_dir).unwrap();
    let mut files = Vec::new();
    for part in 0..10 {
        let text: String = (part * 20..part * 20 + 20)
            .map(|i| api_entity(i, 170_000))
            .collect();
        let path = catalog_dir.join(format!("apis-{part}.yaml"));
        std::fs::write(&path, text).unwrap();
        files.push(path);
    }
    let org = catalog_dir.join("org.yaml");
    std::fs::write(
        &org,
        "apiVersion: backstage.io/v1alpha1\nkind: Group\nmetadata: {name: team-a}\n\
         spec: {type: team, children: []}\n\
         ---\napiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata: {name: 'bad name'}\n\
         spec: {type: service, lifecycle: production, owner: team-a}\n\
         ---\napiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata: {name: orders, namespace: Payments}\n\
         spec: {type: service, lifecycle: production, owner: team-a}\n\
         ---\napiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata: {name: -dash}\n\
         spec: {type: service, lifecycle: production, owner: team-a}\n",
    )
    .unwrap();
    files.push(org);
    // What the file source makes of the same files (5 s of YAML in a debug build),
    // computed while Backstage starts and ingests them; compared at the end.
    let from_files = tokio::task::spawn_blocking({
        let dir = catalog_dir.clone();
        move || file::load_report(&["*.yaml".to_owned()], &dir).unwrap()
    });
    let total: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len())
        .sum();
    eprintln!("catalog files: {total} bytes");

    let started = Instant::now();
    // Entities are processed when they arrive; not again every second (34 MB of YAML).
    let peer = Backstage::start_with(
        free_port(),
        &token,
        &files,
        &[(
            "APP_CONFIG_catalog_processingInterval",
            r#"{"seconds": 3600}"#,
        )],
    )
    .await;
    eprintln!("Backstage ready in {:?}", started.elapsed());
    // The issue's case is a catalog already ingested, fetched in one go (a restart,
    // or every entity changed): wait until Backstage serves all 200 APIs.
    let http = reqwest::Client::new();
    let count_url = format!(
        "{}/api/catalog/entities/by-query?filter=kind=api&fields=metadata.name&limit=1",
        peer.url
    );
    let ingest_deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let body: serde_json::Value = http
            .get(&count_url)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        if body["totalItems"] == 200 {
            break;
        }
        assert!(
            Instant::now() < ingest_deadline,
            "Backstage did not ingest the 200 APIs: {body}\n{}",
            peer.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!("200 APIs ingested {:?} after start", started.elapsed());

    let config = CatalogConfig {
        source: SourceKind::Backstage,
        url: Some(peer.url.clone()),
        token_env: Some(TOKEN_ENV.to_owned()),
        poll_seconds: 2,
        snapshot: Some("snapshot.json".into()),
        ..CatalogConfig::default()
    };
    let shutdown = CancellationToken::new();
    let handle = CatalogSource::start(&config, dir.path(), shutdown.clone()).unwrap();
    let mut rx = handle.snapshots();
    let within = Duration::from_secs(600);
    let ready = tokio::time::timeout(
        within,
        rx.wait_for(|s| {
            s.as_deref()
                .is_some_and(|s| s.origin == Origin::Live && s.entities.len() == 201)
        }),
    )
    .await;
    let live = match ready {
        Ok(seen) => seen.unwrap().clone().unwrap(),
        Err(_) => panic!(
            "not ready within {within:?}; status: {:?}\nBackstage log:\n{}",
            handle.status().borrow(),
            peer.log_tail()
        ),
    };
    eprintln!(
        "source ready with {} entities {:?} after start",
        live.entities.len(),
        started.elapsed()
    );
    let status = handle.status().borrow().clone();
    assert_eq!(status.origin, Some(Origin::Live));
    assert!(status.skipped.is_empty(), "{status:?}");
    assert!(
        live.entities
            .iter()
            .all(|e| e.spec.get("definition").is_none()),
        "spec.definition was fetched"
    );
    let api = live
        .entities
        .iter()
        .find(|e| e.entity_ref() == "api:default/api-007")
        .unwrap();
    assert_eq!(
        api.annotation("stagedoor.io/routes"),
        Some("GET /api/007 api:read")
    );
    assert_eq!(
        api.related("ownedBy").collect::<Vec<_>>(),
        ["group:default/team-a"]
    );
    assert_eq!(api.spec["owner"], "team-a");

    // The same 200 refs fetched whole, as before: one answer over the 32 MiB cap.
    let refs: Vec<String> = (0..200)
        .map(|i| format!("api:default/api-{i:03}"))
        .collect();
    let whole = reqwest::Client::new()
        .post(format!("{}/api/catalog/entities/by-refs", peer.url))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(serde_json::json!({"entityRefs": refs}).to_string())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let cap = Limits::default().max_body_bytes;
    eprintln!(
        "by-refs of the 200 APIs, whole: {} bytes (cap {cap})",
        whole.len()
    );
    assert!(whole.len() > cap, "{} bytes", whole.len());

    // A tight cap (16 KiB): the chunks are split in halves until they fit.
    let tight = Limits {
        max_body_bytes: 16 * 1024,
        page_size: 50,
        ..Limits::default()
    };
    let client = Client::new(&peer.url, Some(token.clone()), tight).unwrap();
    let mut syncer = Syncer::new(client, config.kinds.clone());
    let split_started = Instant::now();
    let outcome = syncer.sync_once().await.unwrap();
    eprintln!("sync with a 16 KiB cap: {:?}", split_started.elapsed());
    assert!(
        matches!(
            outcome,
            stagedoor::catalog::backstage::SyncOutcome::Applied { .. }
        ),
        "{outcome:?}"
    );
    assert!(syncer.report().skipped.is_empty(), "{:?}", syncer.report());
    assert_eq!(views(&syncer.entities()), views(&live.entities));

    // The file source, on the same files, refuses what Backstage refused.
    let from_files = from_files.await.unwrap();
    assert_eq!(from_files.skipped.len(), 3, "{:?}", from_files.skipped);
    assert_eq!(views(&from_files.entities), views(&live.entities));

    shutdown.cancel();
    handle.stopped().await;
    eprintln!("large_api_entities done in {:?}", started.elapsed());
}
