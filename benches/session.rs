//! Per request with `[sso]` on: open a typical session cookie (10 groups) to an
//! `Identity`, and strip our cookies from a Cookie header. Target: ≤ 2 µs a hit.

use criterion::{Criterion, criterion_group, criterion_main};
use stagedoor::sso::{Secret, Session, SessionLookup, Sso, SsoConfig};
use std::hint::black_box;

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
    c.bench_function("session/open_10_groups", |b| {
        b.iter(|| {
            let r = sso.session_from_cookie_header(black_box(&header), now + 60);
            assert!(matches!(r, SessionLookup::Valid(_)));
            r
        })
    });
    c.bench_function("session/no_cookie", |b| {
        b.iter(|| sso.session_from_cookie_header(black_box("_ga=GA1.2.3.4; theme=dark"), now))
    });
    c.bench_function("session/strip", |b| {
        b.iter(|| Sso::strip_cookies(black_box(&header)).len())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
