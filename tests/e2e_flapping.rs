//! Provider and catalog flapping under load (issue 14): the real oidc-provider and
//! the real Backstage backend go down and come back every few seconds for a minute
//! while clients call through HAProxy 2.6 (Debian) and 3.x, both in front of one
//! agent. Keys and policy are cached, so no request may fail; the agent's metrics
//! show that it did see the peers go away (failed key refreshes and catalog syncs).

mod common;

use std::time::{Duration, Instant};

use common::haproxy::{Haproxy, free_port, repo, require_bin, require_haproxy3};
use common::http::request;
use common::load::Load;
use common::metric_sum;
use common::peers::{Agent, Backstage, Op, require_peer};

const TOKEN: &str = "test-read-only-token";
/// The provider's keys (`tests/peers/oidc/op.mjs`: "kid:alg", the first of each alg signs).
const OP_KEYS: &str = "flap-rs:RS256,flap-es:ES256";

/// Under CI=true the test below is not left out.
#[test]
fn peer_tests_run_under_ci() {
    common::haproxy::assert_peer_tests_run_under_ci();
}

async fn metrics(admin: u16) -> String {
    request(&format!("127.0.0.1:{admin}"), "GET", "/metrics", &[])
        .await
        .body
}

fn write_config(
    dir: &std::path::Path,
    agent: u16,
    admin: u16,
    op: u16,
    bs: u16,
) -> std::path::PathBuf {
    let cfg = dir.join("stagedoor.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[agent]
listen = "127.0.0.1:{agent}"
[admin]
listen = "127.0.0.1:{admin}"
[log]
decisions = "off"
[[issuers]]
issuer = "http://127.0.0.1:{op}"
audiences = ["urn:test:api"]
discovery = true
min_refresh_seconds = 1
max_refresh_seconds = 1
[catalog]
source = "backstage"
url = "http://127.0.0.1:{bs}"
token_env = "STAGEDOOR_TEST_BACKSTAGE_TOKEN"
poll_seconds = 1
"#
        ),
    )
    .unwrap();
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs HAProxy 2.6 and 3.x, oidc-provider and Backstage: run tests/run.sh"]
async fn provider_and_catalog_flapping_under_load_fail_no_request() {
    require_peer("oidc");
    require_peer("backstage");
    let (hap26, hap3) = (require_bin("haproxy"), require_haproxy3());
    let dir = tempfile::tempdir().unwrap();
    let (agent_port, admin, op_port, bs_port) =
        (free_port(), free_port(), free_port(), free_port());
    let catalog = repo().join("tests/fixtures/e2e/catalog.yaml");
    let cfg = write_config(dir.path(), agent_port, admin, op_port, bs_port);
    let agent = Agent::start_with_env(&cfg, &[("STAGEDOOR_TEST_BACKSTAGE_TOKEN", TOKEN)]);
    // The provider's keys live in one directory for the whole test: a restart serves
    // the same key set (a provider that came back with new keys would be a key
    // rotation, and the old tokens' 401s would be right).
    let keydir = dir.path().join("op-keys");
    std::fs::create_dir_all(&keydir).unwrap();
    let (op, backstage) = tokio::join!(
        Op::start_with_keys(op_port, &keydir, OP_KEYS),
        Backstage::start(bs_port, TOKEN, std::slice::from_ref(&catalog))
    );
    let (mut op, mut backstage) = (Some(op), Some(backstage));
    // Ready, with the whole catalog (Backstage answers before it has ingested it).
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let m = metrics(admin).await;
        if metric_sum(&m, "stagedoor_catalog_entities", "") == 3.0
            && request(&format!("127.0.0.1:{admin}"), "GET", "/readyz", &[])
                .await
                .status
                == 200
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never ready:\n{}",
            agent.log_text()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let env = |backend: u16| {
        vec![
            ("STAGEDOOR_AGENT", format!("127.0.0.1:{agent_port}")),
            ("STAGEDOOR_BACKEND", format!("127.0.0.1:{backend}")),
        ]
    };
    let cfgs = [
        repo().join("haproxy/haproxy.cfg"),
        repo().join("examples/quickstart/echo-backend.cfg"),
    ];
    let (fe26, fe3) = (free_port(), free_port());
    let h26 = Haproxy::start_many(&hap26, &cfgs, fe26, &env(free_port())).await;
    let h3 = Haproxy::start_many(&hap3, &cfgs, fe3, &env(free_port())).await;

    // Tokens minted before the flapping: the provider's keys are cached from here on.
    let svc = op
        .as_ref()
        .unwrap()
        .token("svc", "svc-secret", "read write", "urn:test:api")
        .await;
    // On each HAProxy: a scoped route and a group-restricted one (the group's
    // membership comes from the catalog too), and a request the policy must keep
    // refusing (no token: 401).
    let get = |fe: &str, path: &str, token: Option<&str>| {
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        format!("GET {path} HTTP/1.1\r\nHost: {fe}\r\n{auth}\r\n")
    };
    let pause = Duration::from_millis(5);
    let before = metrics(admin).await;
    let mut allowed = Vec::new();
    let mut refused = Vec::new();
    for fe in [&h26.frontend, &h3.frontend] {
        for path in ["/api/orders", "/api/admin"] {
            allowed.push(Load::paced(fe, 1, &get(fe, path, Some(&svc)), pause));
        }
        refused.push(Load::paced(fe, 1, &get(fe, "/api/orders", None), pause));
    }

    // A minute of flapping: both peers down for 3 s, then back (Backstage takes
    // several seconds to start and to ingest its locations), up for 3 s.
    let start = Instant::now();
    let mut cycles = 0;
    while start.elapsed() < Duration::from_secs(60) {
        op.take().unwrap().stop();
        backstage.take().unwrap().stop();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (o, b) = tokio::join!(
            Op::start_with_keys(op_port, &keydir, OP_KEYS),
            Backstage::start(bs_port, TOKEN, std::slice::from_ref(&catalog))
        );
        (op, backstage) = (Some(o), Some(b));
        tokio::time::sleep(Duration::from_secs(3)).await;
        cycles += 1;
    }
    let (mut sent, mut failed, mut summaries) = (0, 0, Vec::new());
    for load in allowed {
        let t = load.stop().await;
        sent += t.answered() + t.transport_errors;
        failed += t.failed();
        summaries.push(t.summary());
    }
    for load in refused {
        let t = load.stop().await;
        let n = t.answered() + t.transport_errors;
        sent += n;
        failed += n - t.statuses.get(&401).copied().unwrap_or(0);
        summaries.push(t.summary());
    }
    let after = metrics(admin).await;
    println!("flapping: {cycles} cycles, {sent} requests, {failed} failed: {summaries:#?}");

    // The agent saw the peers go away, so the test did test something.
    let key_errors = metric_sum(&after, "stagedoor_jwks_refreshes_total", "result=\"error\"")
        - metric_sum(
            &before,
            "stagedoor_jwks_refreshes_total",
            "result=\"error\"",
        );
    let sync_failures = metric_sum(&after, "stagedoor_catalog_syncs_total", "result=\"failed\"")
        - metric_sum(
            &before,
            "stagedoor_catalog_syncs_total",
            "result=\"failed\"",
        );
    assert!(cycles >= 3, "{cycles} cycles");
    assert!(key_errors >= 1.0, "no failed key refresh:\n{after}");
    assert!(sync_failures >= 1.0, "no failed catalog sync:\n{after}");
    assert!(sent >= 1_000, "too little load to tell: {summaries:#?}");
    assert_eq!(
        failed,
        0,
        "failed requests while the peers flapped: {summaries:#?}\nagent:\n{}",
        agent.log_text()
    );
    assert_eq!(
        metric_sum(&after, "stagedoor_catalog_entities", ""),
        3.0,
        "{after}"
    );
    drop((h26, h3));
}
