//! What an operator watches, against real peers: /readyz before and after keys and
//! catalog load, and key-set and catalog gauges that move when the provider or
//! Backstage goes away and comes back (the stagedoor binary, oidc-provider and a
//! Backstage backend, all on free ports).

mod common;

use std::time::{Duration, Instant};

use common::haproxy::{free_port, repo};
use common::http::{Response, request};
use common::peers::{Agent, Backstage, Op, require_peer};

async fn admin(port: u16, path: &str) -> Response {
    request(&format!("127.0.0.1:{port}"), "GET", path, &[]).await
}

/// The value of the first sample of `name` whose labels contain `filter`.
fn metric(text: &str, name: &str, filter: &str) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| l.contains(filter))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Scrapes until `cond` holds on the metrics text (90 s at most: the catalog
/// source backs off after failures).
async fn until(port: u16, what: &str, cond: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let m = admin(port, "/metrics").await.body;
        if cond(&m) {
            return m;
        }
        assert!(Instant::now() < deadline, "{what} did not happen:\n{m}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Under CI=true the test below is not left out.
#[test]
fn peer_tests_run_under_ci() {
    common::haproxy::assert_peer_tests_run_under_ci();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs oidc-provider and Backstage: run tests/run.sh"]
async fn readiness_and_freshness_gauges_follow_the_peers() {
    require_peer("oidc");
    require_peer("backstage");
    let dir = tempfile::tempdir().unwrap();
    let (agent_port, admin_port, op_port, bs_port) =
        (free_port(), free_port(), free_port(), free_port());
    let catalog = dir.path().join("catalog.yaml");
    std::fs::copy(repo().join("tests/fixtures/e2e/catalog.yaml"), &catalog).unwrap();
    let cfg = dir.path().join("stagedoor.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[agent]
listen = "127.0.0.1:{agent_port}"
[admin]
listen = "127.0.0.1:{admin_port}"
[log]
decisions = "off"
[[issuers]]
issuer = "http://127.0.0.1:{op_port}"
audiences = ["urn:test:api"]
discovery = true
min_refresh_seconds = 1
max_refresh_seconds = 1
[catalog]
source = "backstage"
url = "http://127.0.0.1:{bs_port}"
token_env = "STAGEDOOR_TEST_BACKSTAGE_TOKEN"
poll_seconds = 1
snapshot = "{snapshot}"
"#,
            snapshot = dir.path().join("snapshot.json").display()
        ),
    )
    .unwrap();
    let token = "test-read-only-token";
    let agent = Agent::start_with_env(&cfg, &[("STAGEDOOR_TEST_BACKSTAGE_TOKEN", token)]);

    // Nothing loaded yet: not ready, and the body says what is missing.
    let mut first = None;
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", admin_port))
            .await
            .is_ok()
        {
            first = Some(admin(admin_port, "/readyz").await);
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let first = first.unwrap_or_else(|| panic!("no admin listener:\n{}", agent.log_text()));
    assert_eq!(first.status, 503);
    assert!(
        first.body.contains("keys for issuer") && first.body.contains("catalog"),
        "{}",
        first.body
    );

    // Both peers start at once: Backstage alone takes ~10 s to load its modules.
    let (mut op, mut backstage) = tokio::join!(
        Op::start(op_port),
        Backstage::start(bs_port, token, std::slice::from_ref(&catalog))
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    while admin(admin_port, "/readyz").await.status != 200 {
        assert!(
            Instant::now() < deadline,
            "never ready:\n{}",
            agent.log_text()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Backstage answers before it has ingested its locations, so the first sync may
    // see an empty catalog (served: nothing routable, every request denied); the
    // gauges must follow once the entities arrive.
    let m = until(admin_port, "the catalog's three entities", |m| {
        metric(m, "stagedoor_catalog_entities", "") == Some(3.0)
    })
    .await;
    assert_eq!(
        metric(&m, "stagedoor_catalog_source", "source=\"live\""),
        Some(1.0),
        "{m}"
    );
    assert_eq!(metric(&m, "stagedoor_catalog_routes", ""), Some(5.0), "{m}");
    assert_eq!(
        metric(&m, "stagedoor_catalog_unknown_principals", ""),
        Some(0.0),
        "{m}"
    );
    assert!(metric(&m, "stagedoor_jwks_keys", "127.0.0.1").unwrap() >= 2.0);

    // The provider goes away: refresh errors count up and the key age grows; the
    // last good set keeps the agent ready (within max_stale_seconds).
    let errors_before =
        metric(&m, "stagedoor_jwks_refreshes_total", "result=\"error\"").unwrap_or(0.0);
    op.stop();
    until(
        admin_port,
        "key refresh errors while the provider is down",
        |m| {
            metric(m, "stagedoor_jwks_refreshes_total", "result=\"error\"").unwrap_or(0.0)
                > errors_before
                && metric(m, "stagedoor_jwks_last_good_refresh_age_seconds", "").unwrap_or(0.0)
                    >= 2.0
        },
    )
    .await;
    assert_eq!(admin(admin_port, "/readyz").await.status, 200);
    // ... and comes back: the age drops again.
    let op2 = Op::start(op_port).await;
    until(
        admin_port,
        "a good key refresh after the provider is back",
        |m| metric(m, "stagedoor_jwks_last_good_refresh_age_seconds", "").unwrap_or(99.0) <= 1.0,
    )
    .await;

    // Backstage goes away: failed syncs count up, the catalog stays and ages.
    let m = admin(admin_port, "/metrics").await.body;
    let failed_before =
        metric(&m, "stagedoor_catalog_syncs_total", "result=\"failed\"").unwrap_or(0.0);
    backstage.stop();
    until(
        admin_port,
        "catalog sync failures while Backstage is down",
        |m| {
            metric(m, "stagedoor_catalog_syncs_total", "result=\"failed\"").unwrap_or(0.0)
                > failed_before
                && metric(m, "stagedoor_catalog_last_good_sync_age_seconds", "").unwrap_or(0.0)
                    >= 2.0
        },
    )
    .await;
    let m = admin(admin_port, "/metrics").await.body;
    assert_eq!(
        metric(&m, "stagedoor_catalog_entities", ""),
        Some(3.0),
        "the last good catalog is kept"
    );
    // ... and comes back.
    let _backstage = Backstage::start(bs_port, token, &[catalog]).await;
    until(
        admin_port,
        "a good catalog sync after Backstage is back",
        |m| {
            metric(m, "stagedoor_catalog_last_good_sync_age_seconds", "").unwrap_or(99.0) <= 2.0
                && metric(m, "stagedoor_catalog_entities", "") == Some(3.0)
        },
    )
    .await;
    drop(op2);
}
