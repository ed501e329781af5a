//! Against a real OpenID Provider: `oidc-provider` 9.13.3 on Node (tests/peers/oidc, set up
//! with `npm ci --prefix tests/peers/oidc`), started on a free port. Tokens come from the
//! client_credentials grant and verify through OIDC discovery; a key rotation at the
//! provider is picked up without restarting the verifier. With CI=true a missing peer
//! fails the test; otherwise it is skipped loudly.

mod common;

use std::time::Duration;

use base64::Engine;
use serde_json::Value;
use stagedoor::reason::Reason;
use stagedoor::token::jose::B64;
use stagedoor::token::{IssuerConfig, KeySource, TokenConfig, Verifier};

use common::haproxy::free_port;
use common::peers::{Op, require_peer};

fn header(token: &str) -> Value {
    serde_json::from_slice(&B64.decode(token.split('.').next().unwrap()).unwrap()).unwrap()
}

fn now() -> i64 {
    stagedoor::clock::unix_now()
}

/// Under CI=true the test below is not left out.
#[test]
fn peer_tests_run_under_ci() {
    common::haproxy::assert_peer_tests_run_under_ci();
}

#[tokio::test]
#[ignore = "needs oidc-provider: run tests/run.sh"]
async fn tokens_from_a_real_provider_verify_through_discovery_and_follow_rotation() {
    require_peer("oidc");
    let keydir = tempfile::tempdir().unwrap();
    let port = free_port();
    let op = Op::start_with_keys(port, keydir.path(), "rs-1:RS256,ec-1:ES256").await;
    let issuer = format!("http://127.0.0.1:{port}");
    let mut cfg = IssuerConfig::new(&issuer, &["urn:test:api"], KeySource::Discovery);
    cfg.types = Some(vec!["at+jwt".into()]);
    let v = Verifier::start(vec![cfg], TokenConfig::default()).unwrap();
    let mut ready = false;
    for _ in 0..100 {
        if v.ready() {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "{:?}", v.status());
    assert_eq!(v.status().issuers[0].keys_loaded, 2);

    let rs = op
        .token("svc", "svc-secret", "read write", "urn:test:api")
        .await;
    let es = op
        .token("svc", "svc-secret", "read write", "urn:test:api-es")
        .await;
    assert_eq!(header(&rs)["alg"], "RS256");
    assert_eq!(header(&es)["alg"], "ES256");
    for t in [&rs, &es] {
        let id = v
            .verify(t, now())
            .await
            .unwrap_or_else(|r| panic!("{r}: {:?}", header(t)));
        assert_eq!(id.issuer, issuer);
        assert_eq!(id.client_id.as_deref(), Some("svc"));
        assert!(id.has_scope("read") && id.has_scope("write"));
    }
    let reader = op
        .token("reader", "reader-secret", "read", "urn:test:api")
        .await;
    let id = v.verify(&reader, now()).await.unwrap();
    assert!(id.has_scope("read") && !id.has_scope("write"));
    // Tampering with a real token is caught.
    let (head, sig) = rs.rsplit_once('.').unwrap();
    let forged = format!(
        "{head}.{}",
        if sig.starts_with('A') {
            sig.replacen('A', "B", 1)
        } else {
            format!("A{}", &sig[1..])
        }
    );
    assert_eq!(
        v.verify(&forged, now()).await.err(),
        Some(Reason::BadSignature)
    );

    // Rotation: the provider restarts with new signing keys (old ones still published).
    drop(op);
    let op = Op::start_with_keys(
        port,
        keydir.path(),
        "rs-2:RS256,ec-2:ES256,rs-1:RS256,ec-1:ES256",
    )
    .await;
    let rs2 = op
        .token("svc", "svc-secret", "read write", "urn:test:api")
        .await;
    let es2 = op
        .token("svc", "svc-secret", "read write", "urn:test:api-es")
        .await;
    assert_eq!(header(&rs2)["kid"], "rs-2");
    assert_eq!(header(&es2)["kid"], "ec-2");
    for t in [&rs2, &es2, &rs] {
        v.verify(t, now())
            .await
            .unwrap_or_else(|r| panic!("{r}: {:?}", header(t)));
    }
    let st = &v.status().issuers[0];
    assert_eq!(st.keys_loaded, 4);
    assert_eq!(st.unknown_kid_refetches, 1);
}
