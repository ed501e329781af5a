//! The sign-in flow under load and abuse (issue 14, from issue 13's review): the
//! discovery document is fetched by one caller at a time and not again for every
//! bogus callback, a failed fetch is not retried by every sign-in, and callbacks
//! at the provider are bounded. A hand-made provider counts what reaches it (these
//! are faults and counts a real provider cannot report).

#[path = "common/fake_http.rs"]
mod fake_http;

use std::sync::Arc;
use std::time::Duration;

use fake_http::{FaultServer, Reply};
use stagedoor::sso::Sso;
use stagedoor::sso::flow::{Flow, FlowError, MAX_PROVIDER_CALLS, PendingSignIn};
use stagedoor::token::{TokenConfig, Verifier};

const DISCOVERY: &str = "/.well-known/openid-configuration";

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A flow whose provider is `server`, and the directory its files live in.
fn flow(server: &FaultServer) -> (Flow, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("jwks.json"), r#"{"keys":[]}"#).unwrap();
    std::fs::write(dir.path().join("secret"), "s\n").unwrap();
    std::fs::write(dir.path().join("keys"), format!("{}\n", "ab".repeat(32))).unwrap();
    let issuer = &server.base;
    let text = format!(
        r#"
[[issuers]]
issuer = "{issuer}"
audiences = ["api"]
jwks_file = "jwks.json"
allow_insecure_http = true

[sso]
listen = "127.0.0.1:0"
issuer = "{issuer}"
client_id = "stagedoor"
client_secret_file = "secret"
keys_file = "keys"
"#
    );
    let path = dir.path().join("stagedoor.toml");
    std::fs::write(&path, text).unwrap();
    let cfg = stagedoor::config::Config::parse_file(&path).unwrap();
    let sso = Sso::new(cfg.sso.as_ref().unwrap(), &cfg.base_dir).unwrap();
    let verifier = Verifier::with_key_sets(Vec::new(), TokenConfig::default());
    let client = stagedoor::token::fetch::http_client().unwrap();
    (Flow::new(Arc::new(sso), verifier, client, &cfg), dir)
}

fn discovery_doc(base: &str) -> Reply {
    Reply::json(
        serde_json::json!({
            "issuer": base,
            "authorization_endpoint": format!("{base}/auth"),
            "token_endpoint": format!("{base}/token"),
        })
        .to_string(),
    )
}

fn pending() -> PendingSignIn {
    PendingSignIn {
        state: "s".into(),
        nonce: "n".into(),
        verifier: "v".repeat(43),
        rd: "https://orders.example.com/".into(),
        redirect_uri: "https://orders.example.com/.stagedoor/callback".into(),
        created: now(),
    }
}

#[tokio::test]
async fn concurrent_sign_ins_fetch_discovery_once() {
    let server = FaultServer::start().await;
    server.set(
        DISCOVERY,
        Reply::Delayed(
            Duration::from_millis(300),
            Box::new(discovery_doc(&server.base)),
        ),
    );
    let (flow, _dir) = flow(&server);
    let all = futures_util::future::join_all((0..20).map(|_| flow.endpoints())).await;
    assert!(
        all.iter().all(Result::is_ok),
        "{:?}",
        all.iter().find(|r| r.is_err())
    );
    assert_eq!(server.hits(DISCOVERY), 1, "one fetch for twenty sign-ins");
}

#[tokio::test]
async fn bogus_callbacks_do_not_refetch_discovery() {
    let server = FaultServer::start().await;
    server.set(DISCOVERY, discovery_doc(&server.base));
    server.set("/token", Reply::status(400, r#"{"error":"invalid_grant"}"#));
    let (flow, _dir) = flow(&server);
    let p = pending();
    for _ in 0..30 {
        let r = flow.complete(&p, "bogus-code", now()).await;
        assert!(matches!(r, Err(FlowError::Exchange(_))), "{:?}", r.err());
    }
    assert_eq!(server.hits("/token"), 30);
    // Before the cooldown change, each refused exchange dropped the document and the
    // next callback fetched it again: 30 fetches.
    assert_eq!(
        server.hits(DISCOVERY),
        1,
        "a refused exchange may ask for a new document, but not once per callback"
    );
}

#[tokio::test]
async fn a_failed_discovery_is_not_retried_by_every_sign_in() {
    let server = FaultServer::start().await;
    server.set(DISCOVERY, Reply::status(500, "{}"));
    let (flow, _dir) = flow(&server);
    for _ in 0..10 {
        let r = flow.endpoints().await;
        assert!(matches!(r, Err(FlowError::Discovery(_))), "{r:?}");
    }
    assert_eq!(server.hits(DISCOVERY), 1);
}

#[tokio::test]
async fn callbacks_at_the_provider_are_bounded() {
    let server = FaultServer::start().await;
    server.set(DISCOVERY, discovery_doc(&server.base));
    // A slow token endpoint: every callback holds its slot for a while.
    server.set(
        "/token",
        Reply::Delayed(
            Duration::from_millis(1_500),
            Box::new(Reply::status(400, r#"{"error":"invalid_grant"}"#)),
        ),
    );
    let (flow, _dir) = flow(&server);
    flow.endpoints().await.unwrap();
    let p = pending();
    let n = MAX_PROVIDER_CALLS * 3;
    let all = futures_util::future::join_all((0..n).map(|_| flow.complete(&p, "c", now()))).await;
    let busy = all
        .iter()
        .filter(|r| matches!(r, Err(FlowError::Busy)))
        .count();
    let exchanged = all
        .iter()
        .filter(|r| matches!(r, Err(FlowError::Exchange(_))))
        .count();
    assert_eq!(
        exchanged,
        MAX_PROVIDER_CALLS,
        "{:?}",
        all.iter()
            .map(|r| r.as_ref().err().map(FlowError::code))
            .collect::<Vec<_>>()
    );
    assert_eq!(busy, n - MAX_PROVIDER_CALLS);
    assert_eq!(server.hits("/token"), MAX_PROVIDER_CALLS);
    assert_eq!(FlowError::Busy.status(), 503);
    // The slots come back: the next callback reaches the provider again.
    let r = flow.complete(&p, "c", now()).await;
    assert!(matches!(r, Err(FlowError::Exchange(_))), "{:?}", r.err());
}
