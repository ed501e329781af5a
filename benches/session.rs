//! Per request with `[sso]` on: open a typical session cookie (10 groups) to an
//! `Identity`, and strip our cookies from a Cookie header. Target: ≤ 2 µs a hit.
//! Then the whole decision (`Agent::decide`, quickstart catalog) for a browser with
//! that session, beside the same caller with a bearer token on a warm token cache.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use criterion::{Criterion, criterion_group, criterion_main};
use stagedoor::agent::{Agent, AuthRequest};
use stagedoor::browser::BrowserArgs;
use stagedoor::policy::Mode;
use stagedoor::sso::{Secret, Session, SessionLookup, Sso, SsoConfig};
use std::hint::black_box;

/// The quickstart issuer, catalog and tokens (shared with the integration tests).
#[path = "../tests/common/quickstart.rs"]
#[allow(dead_code)]
mod quickstart;
use quickstart::ISSUER;

fn agent(sso: Arc<Sso>) -> Agent {
    quickstart::agent(
        quickstart::verifier(None),
        Arc::new(ArcSwapOption::new(Some(Arc::new(quickstart::policy())))),
        Mode::Enforce,
        Some(sso),
        Box::new(|_, _, _, _| {}),
    )
}

fn token(groups: &[String]) -> String {
    let groups: Vec<&str> = groups.iter().map(String::as_str).collect();
    quickstart::token("alice", "orders:read orders:write", &groups, 3600)
}

/// `Agent::decide` for the same caller (alice, 10 groups of which one the catalog
/// maps) by session cookie and by bearer token (cache warm), on a scoped route.
fn decide(c: &mut Criterion) {
    let cfg: SsoConfig = toml::from_str(&format!(
        "listen = \"127.0.0.1:0\"\nissuer = \"{ISSUER}\"\nclient_id = \"c\""
    ))
    .unwrap();
    let sso = Arc::new(Sso::from_parts(cfg, &[[7; 32]], Secret::new("s".into())).unwrap());
    let now = stagedoor::clock::unix_now();
    let mut groups: Vec<String> = (0..9).map(|i| format!("engineering-team-{i}")).collect();
    groups.push("payments-engineers".into());
    let mut s = Session {
        iss: ISSUER.into(),
        sub: "alice".into(),
        email: None,
        groups: groups.clone(),
        scopes: ["openid", "orders:read", "orders:write"]
            .map(String::from)
            .to_vec(),
        sid: "c2lkc2lkc2lkc2lkc2lkcw".into(),
        auth_time: Some(now),
        iat: now,
        exp: now + 28_800,
    };
    let cookie = format!(
        "_ga=GA1.2.3.4; {}={}; theme=dark",
        sso.session_cookie_name(),
        sso.seal_session(&mut s, None).unwrap()
    );
    let bearer = token(&groups);
    let agent = agent(sso);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let browser = AuthRequest {
        method: "GET",
        path: "/api/orders",
        host: "orders.example.com",
        token: None,
        src: None,
        request_id: None,
        browser: BrowserArgs {
            cookie: Some(&cookie),
            cookie_count: Some(1),
            accept: Some("text/html,application/xhtml+xml,*/*;q=0.8"),
            fetch_mode: Some("navigate"),
            query: None,
        },
    };
    let api = AuthRequest {
        token: Some(&bearer),
        browser: BrowserArgs::default(),
        ..browser.clone()
    };
    for req in [&browser, &api] {
        let out = rt.block_on(agent.decide(req, now));
        assert!(out.decision.allow(), "{:?}", out.decision);
    }
    c.bench_function("decide/session_cookie", |b| {
        b.iter(|| rt.block_on(agent.decide(black_box(&browser), now)))
    });
    c.bench_function("decide/bearer_cache_hit", |b| {
        b.iter(|| rt.block_on(agent.decide(black_box(&api), now)))
    });
}

fn bench(c: &mut Criterion) {
    let cfg: SsoConfig = toml::from_str(
        "listen = \"127.0.0.1:0\"\nissuer = \"https://id.example\"\nclient_id = \"c\"",
    )
    .unwrap();
    let sso = Sso::from_parts(cfg, &[[7; 32], [8; 32]], Secret::new("s".into())).unwrap();
    let now = 1_700_000_000;
    let mut s = Session {
        iss: "https://id.example".into(),
        sub: "0b8f6b2a-51c4-4f0e-9a4d-2f3c9e1d7a10".into(),
        email: Some("alice.example@example.com".into()),
        groups: (0..10).map(|i| format!("engineering-team-{i}")).collect(),
        scopes: ["openid", "email", "profile"].map(String::from).to_vec(),
        sid: "c2lkc2lkc2lkc2lkc2lkcw".into(),
        auth_time: Some(now),
        iat: now,
        exp: now + 28_800,
    };
    let value = sso.seal_session(&mut s, None).unwrap();
    let header = format!(
        "_ga=GA1.2.3.4; {}={value}; theme=dark",
        sso.session_cookie_name()
    );
    // A hit: the value was opened before (the cache of opened sessions).
    c.bench_function("session/open_10_groups", |b| {
        b.iter(|| {
            let r = sso.session_from_cookie_header(black_box(&header), now + 60);
            assert!(matches!(r, SessionLookup::Valid(_)));
            r
        })
    });
    // The first request with a cookie: base64, AES-256-GCM, JSON, the identity.
    c.bench_function("session/open_10_groups_uncached", |b| {
        b.iter(|| sso.open_session(black_box(&value), now + 60).unwrap())
    });
    c.bench_function("session/no_cookie", |b| {
        b.iter(|| sso.session_from_cookie_header(black_box("_ga=GA1.2.3.4; theme=dark"), now))
    });
    c.bench_function("session/strip", |b| {
        b.iter(|| Sso::strip_cookies(black_box(&header)).len())
    });
}

criterion_group!(benches, bench, decide);
criterion_main!(benches);
