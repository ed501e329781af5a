//! Backstage-issued user tokens against the real Backstage backend: the test peer in
//! tests/peers/backstage with its auth plugin and guest provider
//! (`STAGEDOOR_PEER_AUTH=1`), over a catalog of two teams written by the test.
//!
//! Backstage signs the guest in as `user:default/alice` (its sign-in resolver looks
//! the User up in the catalog), stagedoor verifies the token with the keys from the
//! auth backend's JWKS (`kind = "backstage"`), and the policy built from the same
//! catalog lets alice's team route through and denies the other team's. A changed
//! token, and the same `sub` coming from an OIDC issuer, get nothing.
//!
//! Marked `#[ignore = "needs …"]`: tests/run.sh installs the peer and runs it (`--include-ignored`).

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::Value;
use stagedoor::catalog::file;
use stagedoor::identity::Identity;
use stagedoor::policy::{Policy, Request, Unmatched};
use stagedoor::reason::Reason;
use stagedoor::token::jose::B64;
use stagedoor::token::{IssuerConfig, IssuerKind, KeySource, TokenConfig, Verifier};

use common::haproxy::free_port;
use common::peers::{Backstage, require_peer};

const ORG: &str = r#"
apiVersion: backstage.io/v1alpha1
kind: Group
metadata: { name: payments-team }
spec: { type: team, children: [] }
---
apiVersion: backstage.io/v1alpha1
kind: Group
metadata: { name: search-team }
spec: { type: team, children: [] }
---
apiVersion: backstage.io/v1alpha1
kind: User
metadata: { name: alice }
spec: { memberOf: [payments-team] }
---
apiVersion: backstage.io/v1alpha1
kind: User
metadata: { name: bob }
spec: { memberOf: [search-team] }
---
apiVersion: backstage.io/v1alpha1
kind: Component
metadata:
  name: payments-api
  annotations:
    stagedoor.io/routes: |
      GET /payments authenticated @payments-team
spec: { type: service, lifecycle: production, owner: payments-team }
---
apiVersion: backstage.io/v1alpha1
kind: Component
metadata:
  name: search-api
  annotations:
    stagedoor.io/routes: |
      GET /search authenticated @search-team
spec: { type: service, lifecycle: production, owner: search-team }
---
apiVersion: backstage.io/v1alpha1
kind: Component
metadata:
  name: status
  annotations:
    stagedoor.io/routes: |
      GET /status authenticated
spec: { type: service, lifecycle: production, owner: search-team }
"#;

fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&B64.decode(payload).unwrap()).unwrap()
}

fn header(token: &str) -> Value {
    serde_json::from_slice(&B64.decode(token.split('.').next().unwrap()).unwrap()).unwrap()
}

/// Signs in as the guest until Backstage has ingested the User (before that, the
/// resolver's catalog lookup fails) and returns the user token.
async fn guest_token(peer: &Backstage) -> String {
    let http = reqwest::Client::new();
    let url = format!("{}/api/auth/guest/refresh", peer.url);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    while Instant::now() < deadline {
        match http.post(&url).send().await {
            Ok(r) if r.status().is_success() => {
                let body: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
                let token = body["backstageIdentity"]["token"].as_str().unwrap();
                // Until the catalog has the User, the guest resolver falls back to
                // a token with `ent: [sub]`: wait for one computed from the catalog.
                let ent = claims(token)["ent"].to_string();
                if ent.contains("group:") {
                    return token.to_owned();
                }
                last = format!("a token with ent {ent}");
            }
            Ok(r) => last = format!("{} {}", r.status(), r.text().await.unwrap_or_default()),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!(
        "no guest token within 60 s; last answer: {last}\nBackstage log:\n{}",
        peer.log_tail()
    );
}

fn decide(p: &Policy, path: &str, who: Result<&Identity, Reason>) -> Reason {
    let req = Request {
        method: "GET",
        host: "svc.example.com",
        path,
    };
    p.decide(&req, who).reason
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Backstage: run tests/run.sh"]
async fn a_backstage_user_token_reaches_its_team_route_only() {
    require_peer("backstage");
    let dir = tempfile::tempdir().unwrap();
    let org = dir.path().join("org.yaml");
    std::fs::write(&org, ORG).unwrap();
    let files: Vec<PathBuf> = vec![org];

    let started = Instant::now();
    let peer = Backstage::start_with(
        free_port(),
        "static-token-for-the-catalog-test-only",
        &files,
        &[
            ("STAGEDOOR_PEER_AUTH", "1"),
            ("APP_CONFIG_app_baseUrl", "http://127.0.0.1:3000"),
            // Keep `ent` in the token (Backstage leaves it out by default), to see it.
            ("APP_CONFIG_auth_omitIdentityTokenOwnershipClaim", "false"),
            (
                "APP_CONFIG_auth_providers_guest_dangerouslyAllowOutsideDevelopment",
                "true",
            ),
            (
                "APP_CONFIG_auth_providers_guest_userEntityRef",
                "user:default/alice",
            ),
        ],
    )
    .await;
    let token = guest_token(&peer).await;
    eprintln!("Backstage token after {:?}", started.elapsed());

    // What Backstage issued (the facts backstage.rs is built on).
    let auth = format!("{}/api/auth", peer.url);
    let (h, c) = (header(&token), claims(&token));
    assert_eq!(h["typ"], "vnd.backstage.user");
    assert_eq!(h["alg"], "ES256");
    assert_eq!(c["iss"], auth.as_str());
    assert_eq!(c["aud"], "backstage");
    assert_eq!(c["sub"], "user:default/alice");
    assert_eq!(
        c["ent"],
        serde_json::json!(["user:default/alice", "group:default/payments-team"])
    );

    let mut cfg = IssuerConfig::new(
        &auth,
        &[],
        KeySource::JwksUrl(format!("{auth}/.well-known/jwks.json")),
    );
    cfg.kind = IssuerKind::Backstage;
    cfg.validate().unwrap();
    let verifier = Verifier::start(vec![cfg], TokenConfig::default()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !verifier.ready() {
        assert!(Instant::now() < deadline, "JWKS never loaded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let now = stagedoor::clock::unix_now();
    let alice = verifier.verify(&token, now).await.unwrap();
    assert_eq!(alice.backstage_user.as_deref(), Some("user:default/alice"));
    assert_eq!(alice.sub.as_deref(), Some("user:default/alice"));
    assert!(alice.groups.is_empty());

    // The catalog Backstage serves, as the file source reads the same files.
    let entities = file::load(&["*.yaml".to_owned()], dir.path()).unwrap();
    let policy = Policy::build(&entities, Unmatched::Deny);
    assert!(policy.errors().is_empty(), "{:?}", policy.errors());

    assert_eq!(decide(&policy, "/payments/1", Ok(&alice)), Reason::Ok);
    assert_eq!(decide(&policy, "/search", Ok(&alice)), Reason::NotMember);
    assert_eq!(decide(&policy, "/status", Ok(&alice)), Reason::Ok);

    // The same sub from an OIDC issuer is no Backstage User.
    let impostor = Identity {
        issuer: "https://idp.example.com".into(),
        sub: Some("user:default/alice".into()),
        groups: vec!["group:default/search-team".into()],
        ..Identity::default()
    };
    assert_eq!(
        decide(&policy, "/payments/1", Ok(&impostor)),
        Reason::NotMember
    );

    // One changed claim byte: the signature no longer holds.
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut body = claims(&token);
    body["sub"] = "user:default/bob".into();
    parts[1] = B64.encode(body.to_string());
    let forged = parts.join(".");
    assert_eq!(
        verifier.verify(&forged, now).await.err(),
        Some(Reason::BadSignature)
    );
    let outcome = verifier.verify(&forged, now).await;
    assert_eq!(
        decide(&policy, "/search", outcome.as_deref().map_err(|r| *r)),
        Reason::BadSignature
    );
}
