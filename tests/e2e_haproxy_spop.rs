//! End to end with the real HAProxy 2.6 from Debian: HAProxy → SPOP → the engine
//! with a test handler → variables back in HAProxy, echoed into response headers.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::haproxy::{
    Haproxy, check_config, free_port, repo, require_bin, require_haproxy3, require_haproxy30,
};
use stagedoor::connection::{EngineConfig, EngineStats, Handler, HandlerError};
use stagedoor::spop::{Action, Message, Scope, TypedData};
use std::path::Path;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Echoes the `authorize` message's arguments back as variables.
struct Echo;

impl Handler for Echo {
    async fn handle(
        &self,
        messages: &[Message<'_>],
    ) -> Result<stagedoor::spop::Actions, HandlerError> {
        let m = messages
            .iter()
            .find(|m| m.name.as_ref() == b"authorize")
            .ok_or(HandlerError("no authorize message"))?;
        let text = |n: &str| {
            m.arg(n)
                .and_then(TypedData::as_str)
                .unwrap_or("-")
                .to_owned()
        };
        let echo = format!("{} {} {}", text("method"), text("host"), text("path"));
        let auth = text("authorization");
        Ok(vec![
            Action::set(Scope::Txn, "allow", TypedData::Bool(true)),
            Action::set(Scope::Txn, "status", TypedData::Int64(200)),
            Action::set(Scope::Txn, "reason", TypedData::str("ok")),
            Action::set(Scope::Txn, "sub", TypedData::string(auth)),
            Action::set(Scope::Txn, "echo", TypedData::string(echo)),
            Action::set(Scope::Txn, "neg", TypedData::Int64(-5)),
        ]
        .into())
    }
}

async fn start_agent(port: u16) -> CancellationToken {
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let shutdown = CancellationToken::new();
    // A stopping agent keeps answering on its open connections until HAProxy has
    // left them quiet for `drain_quiet` (issue 14): short here, so that the test's
    // "agent down" comes soon after the stop.
    let cfg = EngineConfig {
        drain_quiet: Duration::from_millis(200),
        ..EngineConfig::default()
    };
    tokio::spawn(stagedoor::server::run(
        listener,
        Arc::new(Echo),
        cfg,
        1000,
        Arc::new(EngineStats::default()),
        shutdown.clone(),
    ));
    shutdown
}

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[test]
#[ignore = "needs HAProxy 2.6: run tests/run.sh"]
fn shipped_configs_pass_haproxy_2_6_check() {
    check_shipped(&require_bin("haproxy"));
}

#[test]
#[ignore = "needs HAProxy 3.0: run tests/run.sh"]
fn shipped_configs_pass_haproxy_3_0_check() {
    check_shipped(&require_haproxy30());
}

#[test]
#[ignore = "needs HAProxy 3.x: run tests/run.sh"]
fn shipped_configs_pass_haproxy_3_check() {
    check_shipped(&require_haproxy3());
}

/// Under CI=true the tests needing HAProxy are not left out.
#[test]
fn peer_tests_run_under_ci() {
    common::haproxy::assert_peer_tests_run_under_ci();
}

/// `haproxy -c` on the shipped files: no error, and no warning either (a warning on
/// one version is a keyword that version ignores or will drop).
fn check_shipped(bin: &Path) {
    let (ok, out) = check_config(bin, &repo().join("haproxy/haproxy.cfg"), &[]);
    assert!(ok, "haproxy -c haproxy/haproxy.cfg:\n{out}");
    assert!(
        !out.contains("[WARNING]"),
        "haproxy -c haproxy/haproxy.cfg:\n{out}"
    );
    let env = [
        ("STAGEDOOR_FRONTEND", "127.0.0.1:1".to_owned()),
        ("STAGEDOOR_AGENT", "127.0.0.1:2".to_owned()),
    ];
    let (ok, out) = check_config(bin, &repo().join("haproxy/test/echo-vars.cfg"), &env);
    assert!(ok, "haproxy -c haproxy/test/echo-vars.cfg:\n{out}");
    assert!(
        !out.contains("[WARNING]"),
        "haproxy -c echo-vars.cfg:\n{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs HAProxy 2.6: run tests/run.sh"]
async fn variables_reach_haproxy_2_6_and_failures_fail_closed() {
    variables_reach_haproxy(&require_bin("haproxy")).await;
}

/// The same against 3.0 LTS, the last release of the original SPOE engine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs HAProxy 3.0: run tests/run.sh"]
async fn variables_reach_haproxy_3_0_and_failures_fail_closed() {
    variables_reach_haproxy(&require_haproxy30()).await;
}

/// The same against the rewritten 3.1+ SPOE (odd per-connection stream ids, fid 1,
/// pooled connections closed with RST).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs HAProxy 3.x: run tests/run.sh"]
async fn variables_reach_haproxy_3_and_failures_fail_closed() {
    variables_reach_haproxy(&require_haproxy3()).await;
}

async fn variables_reach_haproxy(bin: &Path) {
    let agent_port = free_port();
    let mut agent = start_agent(agent_port).await;
    let hap = Haproxy::start(
        bin,
        &repo().join("haproxy/test/echo-vars.cfg"),
        free_port(),
        &[("STAGEDOOR_AGENT", format!("127.0.0.1:{agent_port}"))],
    )
    .await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();

    let r = http
        .get(hap.url("/api/orders/7?x=1"))
        .header("Host", "orders.example.com")
        .header("Authorization", "Bearer abc")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", hap.log_text());
    assert_eq!(header(&r, "x-allow"), "1");
    assert_eq!(header(&r, "x-status"), "200");
    assert_eq!(header(&r, "x-reason"), "ok");
    assert_eq!(header(&r, "x-sub"), "Bearer abc");
    assert_eq!(header(&r, "x-echo"), "GET orders.example.com /api/orders/7");
    assert_eq!(
        header(&r, "x-neg"),
        "-5",
        "INT64 two's complement arrives signed"
    );

    // Concurrent traffic: every response carries the variables of its own request.
    let mut set = tokio::task::JoinSet::new();
    for i in 0..200 {
        let (http, url) = (http.clone(), hap.url(&format!("/r/{i}")));
        set.spawn(async move {
            let r = http.post(url).send().await.unwrap();
            assert_eq!(r.status(), 200);
            assert!(
                header(&r, "x-echo").ends_with(&format!(" /r/{i}")),
                "{}",
                header(&r, "x-echo")
            );
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }

    // Agent stopped: once its connections have gone quiet and closed, HAProxy gets no
    // decision, and the request fails closed (503).
    agent.cancel();
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let r = http.get(hap.url("/after-stop")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(
        !header(&r, "x-spoe-error").is_empty(),
        "HAProxy reports the SPOE error"
    );

    // Agent restarted on the same address: traffic recovers without restarting HAProxy.
    agent = start_agent(agent_port).await;
    let mut recovered = false;
    for _ in 0..50 {
        let r = http.get(hap.url("/after-restart")).send().await.unwrap();
        if r.status() == 200 {
            assert_eq!(
                header(&r, "x-echo"),
                format!("GET {} /after-restart", hap.frontend)
            );
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(recovered, "traffic did not recover:\n{}", hap.log_text());
    agent.cancel();
}
