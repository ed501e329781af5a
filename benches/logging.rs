//! Cost of decision logging: the whole handler path (arguments → cached token →
//! policy → variables) with decision logs off, deny-only and all, side by side in
//! one run. Lines go to a sink through the real writer thread.
//! Run: cargo bench --bench logging

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use criterion::{Criterion, criterion_group, criterion_main};
use stagedoor::agent::{Agent, AgentSettings};
use stagedoor::config::DecisionLogs;
use stagedoor::connection::Handler;
use stagedoor::decision_log::DecisionLog;
use stagedoor::policy::{Mode, Policy, Unmatched};
use stagedoor::spop::{Arg, Message, TypedData};
use stagedoor::token::{Alg, IssuerConfig, KeySet, KeySource, TokenConfig, Verifier};

fn token() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let pem = std::fs::read(root.join("examples/quickstart/demo-signing-key.pem")).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let claims = serde_json::json!({"iss": "https://idp.quickstart.example", "sub": "alice", "aud": "quickstart-api",
        "iat": now, "exp": now + 3600, "scope": "orders:read orders:write", "groups": ["payments-engineers"]});
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    h.kid = Some("demo-2026".into());
    jsonwebtoken::encode(
        &h,
        &claims,
        &jsonwebtoken::EncodingKey::from_ec_pem(&pem).unwrap(),
    )
    .unwrap()
}

fn agent(mode: DecisionLogs) -> Agent {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let jwks = std::fs::read(root.join("examples/quickstart/demo-jwks.json")).unwrap();
    let (keys, _) = KeySet::from_jwks(&jwks, &[Alg::ES256]).unwrap();
    let cfg = IssuerConfig::new(
        "https://idp.quickstart.example",
        &["quickstart-api"],
        KeySource::JwksFile("demo-jwks.json".into()),
    );
    let verifier = Verifier::with_key_sets(vec![(cfg, keys)], TokenConfig::default());
    let entities = stagedoor::catalog::file::load(
        &["catalog/*.yaml".into()],
        &root.join("examples/quickstart"),
    )
    .unwrap();
    let policy = Policy::build(&entities, Unmatched::Deny);
    let log = DecisionLog::new(mode, 1.0, Box::new(std::io::sink()));
    Agent {
        verifier,
        policy: Arc::new(ArcSwapOption::new(Some(Arc::new(policy)))),
        settings: AgentSettings {
            message: "authorize".into(),
            realm: "stagedoor".into(),
            mode: Mode::Enforce,
        },
        observer: Box::new(move |req, outcome, latency| log.record(req, outcome, latency)),
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let auth = format!("Bearer {}", token());
    let msg = Message {
        name: b"authorize".as_slice().into(),
        args: vec![
            Arg::new("method", TypedData::str("GET")),
            Arg::new("path", TypedData::str("/api/orders/42")),
            Arg::new("host", TypedData::str("orders.example.com")),
            Arg::new("authorization", TypedData::str(&auth)),
            Arg::new("src", TypedData::Ipv4([10, 1, 2, 3].into())),
            Arg::new(
                "request_id",
                TypedData::str("0A010203:C35A_0A000001:1F90_6761A1B2_0001:1F2E"),
            ),
        ],
    };
    let msgs = [msg];
    let mut g = c.benchmark_group("decision_logging");
    for (name, mode) in [
        ("off", DecisionLogs::Off),
        ("deny_only", DecisionLogs::Deny),
        ("all", DecisionLogs::All),
    ] {
        let a = agent(mode);
        // Warm the verified-token cache: this measures the steady state.
        rt.block_on(a.handle(&msgs)).unwrap();
        g.bench_function(name, |b| {
            b.iter(|| rt.block_on(a.handle(black_box(&msgs))).unwrap())
        });
    }
    g.finish();
    // The line itself, for reference.
    let a = agent(DecisionLogs::Off);
    let outcome = rt.block_on(a.decide(
        &stagedoor::agent::AuthRequest::from_message(&msgs[0]).unwrap(),
        stagedoor::token::fetch::unix_now(),
    ));
    let req = stagedoor::agent::AuthRequest::from_message(&msgs[0]).unwrap();
    c.bench_function("decision_logging/format_line", |b| {
        b.iter(|| {
            stagedoor::decision_log::format_line(
                black_box(&req),
                &outcome,
                std::time::Duration::from_micros(3),
                std::time::SystemTime::now(),
            )
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
