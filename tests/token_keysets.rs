//! Key-set behaviour against a hand-made HTTP server on 127.0.0.1:0 that injects faults a
//! real provider cannot: rotation, outages, garbage, redirects, skewed clocks, files.

mod token_support;

use std::time::Duration;

use serde_json::{Value, json};
use stagedoor::reason::Reason;
use stagedoor::token::fetch::format_http_date;
use stagedoor::token::{IssuerConfig, KeySource, TokenConfig, Verifier};
use token_support::*;

fn cfg_url(url: String) -> IssuerConfig {
    IssuerConfig::new(ISS, &[AUD], KeySource::JwksUrl(url))
}

/// Refresh every second, keys stale after `stale` seconds.
fn fast(mut c: IssuerConfig, stale: u64) -> IssuerConfig {
    c.min_refresh_seconds = 1;
    c.max_refresh_seconds = 1;
    c.max_stale_seconds = stale;
    c
}

fn start(c: IssuerConfig) -> Verifier {
    Verifier::start(vec![c], TokenConfig::default()).unwrap()
}

async fn verify(v: &Verifier, t: &str) -> Reason {
    v.verify(t, now()).await.err().unwrap_or(Reason::Ok)
}

fn jwk1(k: &TestKey) -> Value {
    k.jwk("k1", Some("RS256"))
}

#[tokio::test]
async fn rotation_is_picked_up_through_an_unknown_kid_refetch() {
    let (k1, k2) = (TestKey::rsa(), TestKey::ec());
    let srv = FaultServer::start().await;
    srv.set("/jwks", Reply::json(jwks(&[jwk1(&k1)])));
    let v = start(cfg_url(srv.url("/jwks")));
    assert!(
        eventually(5, || v.ready()).await,
        "ready once the first set is in"
    );
    let c = claims(now());
    assert_eq!(verify(&v, &mint(&k1, "RS256", "k1", &c)).await, Reason::Ok);
    // The provider rotates: k2 signs now. No restart, no waiting for the 600 s TTL.
    let akp = json!({"kty":"AKP","kid":"pq","alg":"ML-DSA-44","pub":"AAAA"});
    srv.set(
        "/jwks",
        Reply::json(jwks(&[jwk1(&k1), k2.jwk("k2", Some("ES256")), akp])),
    );
    assert_eq!(verify(&v, &mint(&k2, "ES256", "k2", &c)).await, Reason::Ok);
    assert_eq!(srv.hits("/jwks"), 2);
    let st = &v.status().issuers[0];
    assert_eq!(
        (
            st.keys_loaded,
            st.keys_skipped,
            st.unknown_kid_refetches,
            st.refresh_ok
        ),
        (2, 1, 1, 2)
    );
}

#[tokio::test]
async fn provider_down_serves_the_last_good_set_then_fails_closed() {
    let k1 = TestKey::rsa();
    let srv = FaultServer::start().await;
    srv.set("/jwks", Reply::json(jwks(&[jwk1(&k1)])));
    let v = start(fast(cfg_url(srv.url("/jwks")), 3));
    assert!(eventually(5, || v.ready()).await);
    let t = mint(&k1, "RS256", "k1", &claims(now()));
    assert_eq!(verify(&v, &t).await, Reason::Ok);
    srv.set("/jwks", Reply::Hangup);
    assert!(eventually(5, || v.status().issuers[0].refresh_errors >= 1).await);
    assert_eq!(verify(&v, &t).await, Reason::Ok, "last good set still used");
    // Past max_stale_seconds (3 s) the issuer fails closed, cached tokens included.
    assert!(eventually(8, || !v.ready()).await);
    assert_eq!(verify(&v, &t).await, Reason::KeysUnavailable);
    let fresh = mint(&k1, "RS256", "k1", &claims(now()));
    assert_eq!(verify(&v, &fresh).await, Reason::KeysUnavailable);
    // The provider comes back: the issuer recovers by itself.
    srv.set("/jwks", Reply::json(jwks(&[jwk1(&k1)])));
    assert!(eventually(10, || v.ready()).await);
    assert_eq!(verify(&v, &t).await, Reason::Ok);
}

#[tokio::test]
async fn garbage_or_oversize_jwks_keeps_the_last_good_set() {
    let k1 = TestKey::rsa();
    let srv = FaultServer::start().await;
    srv.set("/jwks", Reply::json(jwks(&[jwk1(&k1)])));
    let v = start(fast(cfg_url(srv.url("/jwks")), 600));
    assert!(eventually(5, || v.ready()).await);
    let t = mint(&k1, "RS256", "k1", &claims(now()));
    let bad_bodies = [
        "garbage".to_owned(),
        "{\"keys\":[]}".to_owned(),
        jwks(&[json!({"kty":"RSA","kid":"weak","n":"AQAB","e":"AQAB"})]),
        format!("{{\"keys\":[],\"pad\":\"{}\"}}", "x".repeat(300 * 1024)),
    ];
    for (i, body) in bad_bodies.into_iter().enumerate() {
        srv.set("/jwks", Reply::json(body));
        let before = v.status().issuers[0].refresh_errors;
        assert!(
            eventually(6, || v.status().issuers[0].refresh_errors > before).await,
            "case {i}"
        );
        assert!(v.ready(), "case {i}");
        assert_eq!(v.status().issuers[0].keys_loaded, 1, "case {i}");
        assert_eq!(verify(&v, &t).await, Reason::Ok, "case {i}");
    }
    srv.set(
        "/jwks",
        Reply::Status {
            code: 500,
            headers: vec![],
            body: "oops".into(),
        },
    );
    let before = v.status().issuers[0].refresh_errors;
    assert!(eventually(6, || v.status().issuers[0].refresh_errors > before).await);
    assert_eq!(verify(&v, &t).await, Reason::Ok);
}

#[tokio::test]
async fn a_redirect_is_not_followed() {
    let k1 = TestKey::rsa();
    let srv = FaultServer::start().await;
    srv.set("/real", Reply::json(jwks(&[jwk1(&k1)])));
    srv.set(
        "/jwks",
        Reply::Status {
            code: 302,
            headers: vec![("location".into(), srv.url("/real"))],
            body: String::new(),
        },
    );
    let v = start(fast(cfg_url(srv.url("/jwks")), 600));
    assert!(eventually(5, || v.status().issuers[0].refresh_errors >= 2).await);
    assert!(!v.ready());
    assert_eq!(srv.hits("/real"), 0);
    let t = mint(&k1, "RS256", "k1", &claims(now()));
    assert_eq!(verify(&v, &t).await, Reason::KeysUnavailable);
}

#[tokio::test]
async fn a_skewed_date_header_is_reported() {
    let k1 = TestKey::rsa();
    let srv = FaultServer::start().await;
    let date = format_http_date(now() + 3600);
    srv.set(
        "/jwks",
        Reply::Ok {
            body: jwks(&[jwk1(&k1)]),
            headers: vec![("date".into(), date)],
        },
    );
    let v = start(cfg_url(srv.url("/jwks")));
    assert!(eventually(5, || v.ready()).await);
    let skew = v.status().issuers[0]
        .clock_skew_seconds
        .expect("skew measured");
    assert!((3590..=3610).contains(&skew), "{skew}");
    // A provider in step with us reads about zero.
    srv.set(
        "/jwks",
        Reply::Ok {
            body: jwks(&[jwk1(&k1)]),
            headers: vec![("date".into(), format_http_date(now()))],
        },
    );
    let t = mint(&k1, "RS256", "unknown", &claims(now()));
    assert_eq!(verify(&v, &t).await, Reason::UnknownKey);
    let skew = v.status().issuers[0].clock_skew_seconds.unwrap();
    assert!(skew.abs() <= 5, "{skew}");
}

#[tokio::test]
async fn cache_control_max_age_is_honoured_within_bounds() {
    let k1 = TestKey::rsa();
    let srv = FaultServer::start().await;
    let body = jwks(&[jwk1(&k1)]);
    srv.set(
        "/long",
        Reply::Ok {
            body: body.clone(),
            headers: vec![("cache-control".into(), "max-age=3600".into())],
        },
    );
    srv.set(
        "/none",
        Reply::Ok {
            body,
            headers: vec![("cache-control".into(), "no-store".into())],
        },
    );
    let mut long = IssuerConfig::new(
        "https://long.example",
        &[AUD],
        KeySource::JwksUrl(srv.url("/long")),
    );
    long.min_refresh_seconds = 1;
    long.max_refresh_seconds = 2;
    let mut none = IssuerConfig::new(
        "https://none.example",
        &[AUD],
        KeySource::JwksUrl(srv.url("/none")),
    );
    none.min_refresh_seconds = 1;
    none.max_refresh_seconds = 600;
    let v = Verifier::start(vec![long, none], TokenConfig::default()).unwrap();
    tokio::time::sleep(Duration::from_millis(4_500)).await;
    // max-age=3600 is clamped down to 2 s (else 1 fetch); no-store is clamped up to 1 s
    // (else a hot loop). Bounds are loose: the shared CPU may delay timers.
    let (l, n) = (srv.hits("/long"), srv.hits("/none"));
    assert!((2..=4).contains(&l), "long: {l}");
    assert!((3..=8).contains(&n), "none: {n}");
    drop(v);
}

#[tokio::test]
async fn discovery_finds_the_jwks_and_checks_the_issuer() {
    let k1 = TestKey::rsa();
    let srv = FaultServer::start().await;
    let issuer = srv.base.clone();
    srv.set(
        "/.well-known/openid-configuration",
        Reply::json(json!({"issuer": issuer, "jwks_uri": srv.url("/keys")}).to_string()),
    );
    srv.set("/keys", Reply::json(jwks(&[jwk1(&k1)])));
    let v = Verifier::start(
        vec![IssuerConfig::new(&issuer, &[AUD], KeySource::Discovery)],
        TokenConfig::default(),
    )
    .unwrap();
    assert!(eventually(5, || v.ready()).await);
    let mut c = claims(now());
    c["iss"] = json!(issuer);
    assert_eq!(verify(&v, &mint(&k1, "RS256", "k1", &c)).await, Reason::Ok);

    // A discovery document naming another issuer is refused.
    let srv2 = FaultServer::start().await;
    srv2.set(
        "/.well-known/openid-configuration",
        Reply::json(
            json!({"issuer": "https://evil.example", "jwks_uri": srv2.url("/keys")}).to_string(),
        ),
    );
    srv2.set("/keys", Reply::json(jwks(&[jwk1(&k1)])));
    let mut cfg = fast(
        IssuerConfig::new(&srv2.base, &[AUD], KeySource::Discovery),
        600,
    );
    cfg.min_refresh_seconds = 1;
    let v2 = Verifier::start(vec![cfg], TokenConfig::default()).unwrap();
    assert!(eventually(5, || v2.status().issuers[0].refresh_errors >= 1).await);
    assert!(!v2.ready());
    assert_eq!(srv2.hits("/keys"), 0);
}

#[tokio::test]
async fn jwks_file_is_reloaded_when_it_changes() {
    let (k1, k2) = (TestKey::rsa(), TestKey::ed());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, jwks(&[jwk1(&k1)])).unwrap();
    let cfg = IssuerConfig::new(
        ISS,
        &[AUD],
        KeySource::JwksFile(path.to_string_lossy().into_owned()),
    );
    let v = start(cfg);
    assert!(eventually(5, || v.ready()).await);
    let c = claims(now());
    let t2 = mint(&k2, "EdDSA", "k2", &c);
    assert_eq!(verify(&v, &t2).await, Reason::UnknownKey);
    std::fs::write(&path, "not json").unwrap();
    assert!(eventually(6, || v.status().issuers[0].refresh_errors >= 1).await);
    assert_eq!(
        verify(&v, &mint(&k1, "RS256", "k1", &c)).await,
        Reason::Ok,
        "last good set kept"
    );
    std::fs::write(&path, jwks(&[jwk1(&k1), k2.jwk("k2", None)])).unwrap();
    assert!(eventually(6, || v.status().issuers[0].keys_loaded == 2).await);
    assert_eq!(verify(&v, &t2).await, Reason::Ok);
}

/// Publishes `set` and waits for the verifier to have fetched it.
async fn republish(srv: &FaultServer, v: &Verifier, set: String) -> bool {
    srv.set("/jwks", Reply::json(set));
    let before = v.status().issuers[0].refresh_ok;
    eventually(5, || v.status().issuers[0].refresh_ok > before).await
}

/// A cache hit gives the answer a fresh verification would: a cached token stops
/// passing when its key is revoked, and also when the same key material is
/// republished narrowed to another algorithm or under another `kid` (found by review:
/// those two still passed from the cache).
#[tokio::test]
async fn a_cached_token_dies_with_its_key() {
    let (k1, k2) = (TestKey::rsa(), TestKey::rsa());
    let srv = FaultServer::start().await;
    srv.set("/jwks", Reply::json(jwks(&[jwk1(&k1)])));
    let v = start(fast(cfg_url(srv.url("/jwks")), 600));
    assert!(eventually(5, || v.ready()).await);
    let t = mint(&k1, "RS256", "k1", &claims(now()));
    let cached = async || {
        assert_eq!(verify(&v, &t).await, Reason::Ok);
        let hits = v.status().issuers[0].cache_hits;
        assert_eq!(verify(&v, &t).await, Reason::Ok);
        assert_eq!(v.status().issuers[0].cache_hits, hits + 1);
    };
    cached().await;
    // The same key, the same kid, bound to PS256 only.
    assert!(republish(&srv, &v, jwks(&[k1.jwk("k1", Some("PS256"))])).await);
    assert_eq!(verify(&v, &t).await, Reason::UnsupportedAlg);
    assert!(republish(&srv, &v, jwks(&[jwk1(&k1)])).await);
    cached().await;
    // The same key under another kid, beside another key: `k1` is unknown now.
    let renamed = jwks(&[k1.jwk("k9", Some("RS256")), k2.jwk("k2", Some("RS256"))]);
    assert!(republish(&srv, &v, renamed).await);
    assert_eq!(verify(&v, &t).await, Reason::UnknownKey);
    assert!(republish(&srv, &v, jwks(&[jwk1(&k1)])).await);
    cached().await;
    // k1 is rotated out (revoked).
    assert!(republish(&srv, &v, jwks(&[k2.jwk("k2", Some("RS256"))])).await);
    assert_eq!(verify(&v, &t).await, Reason::UnknownKey);
}

/// A key set whose every key is skipped verifies nothing: it is a failed refresh, and
/// the issuer is not ready (so `/readyz` says so) until a usable key arrives. (An empty
/// set from a shared secret too short for its HS* is refused at start by `validate`;
/// `ready()` also requires a key, should an empty set ever be installed.)
#[tokio::test]
async fn a_set_with_no_usable_key_is_not_ready() {
    let k1 = TestKey::rsa();
    let srv = FaultServer::start().await;
    // An HMAC key in a JWKS is never used; neither is an RSA key bound to HS256.
    srv.set(
        "/jwks",
        Reply::json(jwks(&[
            serde_json::json!({"kty": "oct", "kid": "s", "k": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"}),
            k1.jwk("k1", Some("HS256")),
        ])),
    );
    let v = start(fast(cfg_url(srv.url("/jwks")), 600));
    // "no usable key" is a failed refresh: nothing is installed.
    assert!(eventually(5, || v.status().issuers[0].refresh_errors >= 1).await);
    let st = &v.status().issuers[0];
    assert_eq!((st.keys_loaded, st.ready, st.refresh_ok), (0, false, 0));
    assert!(!v.ready());
    srv.set("/jwks", Reply::json(jwks(&[jwk1(&k1)])));
    assert!(eventually(6, || v.ready()).await);
    let t = mint(&k1, "RS256", "k1", &claims(now()));
    assert_eq!(verify(&v, &t).await, Reason::Ok);
}

#[tokio::test]
async fn not_ready_until_a_set_arrives() {
    let k1 = TestKey::rsa();
    let srv = FaultServer::start().await;
    srv.set("/jwks", Reply::Hangup);
    let v = start(fast(cfg_url(srv.url("/jwks")), 600));
    assert!(eventually(3, || v.status().issuers[0].refresh_errors >= 1).await);
    assert!(!v.ready());
    let t = mint(&k1, "RS256", "k1", &claims(now()));
    assert_eq!(verify(&v, &t).await, Reason::KeysUnavailable);
    srv.set("/jwks", Reply::json(jwks(&[jwk1(&k1)])));
    assert!(eventually(6, || v.ready()).await);
    assert_eq!(verify(&v, &t).await, Reason::Ok);
    let st = &v.status().issuers[0];
    assert!(
        st.last_good_refresh_unix
            .is_some_and(|t| (t - now()).abs() < 10)
    );
}
