//! The outside review of issue 13, as regression tests: each asserts the safe
//! behaviour, and each failed before its fix (at 6a603ba).
//!
//! - R1: a host-only deployment (`__Host-stagedoor_session`) also accepts the
//!   unprefixed `stagedoor_session`, which any sibling subdomain can set for the
//!   parent domain (cookie tossing), and the first cookie that opens wins, so a tossed
//!   cookie with a longer `Path` beats the victim's own `__Host-` cookie.
//! - R2: an outcome decided before the arguments are read (`bad_request`: several
//!   Cookie lines, a non-UTF-8 argument) carries no cookie strip; in shadow mode such a
//!   request is let through with the session cookie still in its Cookie header.
//! - R3: the callback compares `state` only with the FIRST state cookie that opens, so
//!   a tossed (or stale, other-Domain) state cookie makes the right one invisible.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use stagedoor::agent::Agent;
use stagedoor::connection::Handler;
use stagedoor::policy::Mode;
use stagedoor::spop::{Action, Arg, Message, TypedData};
use stagedoor::sso::Sso;
use stagedoor::token::{TokenConfig, Verifier};

mod common;
use common::quickstart::{ISSUER, now, policy, root, sso, verifier};

fn agent(sso: Option<Arc<Sso>>, mode: Mode) -> Agent {
    common::quickstart::agent(
        verifier(None),
        Arc::new(ArcSwapOption::new(Some(Arc::new(policy())))),
        mode,
        sso,
        Box::new(|_, _, _, _| {}),
    )
}

fn session(sso: &Sso, sub: &str, scope: &str, groups: &[&str]) -> String {
    common::quickstart::session(sso, sub, scope, groups, 3600)
}

/// The variables the agent sets for a GET of `path` with this raw Cookie header.
async fn vars(agent: &Agent, path: &str, cookie: &[u8], count: i64) -> Vec<(String, String)> {
    let msg = Message {
        name: b"authorize".as_slice().into(),
        args: vec![
            Arg::new("method", TypedData::str("GET")),
            Arg::new("path", TypedData::string(path.to_owned())),
            Arg::new("host", TypedData::str("orders.example.com")),
            Arg::new("authorization", TypedData::Null),
            Arg::new("cookie", TypedData::Str(cookie.to_vec().into())),
            Arg::new("cookie_count", TypedData::Int64(count)),
            Arg::new("accept", TypedData::str("application/json")),
        ],
    };
    agent
        .handle(&[msg])
        .await
        .unwrap()
        .decode()
        .unwrap()
        .into_iter()
        .filter_map(|a| match a {
            Action::SetVar { name, value, .. } => Some((
                String::from_utf8(name.to_vec()).unwrap(),
                match value {
                    TypedData::Bool(b) => b.to_string(),
                    TypedData::Int64(i) => i.to_string(),
                    other => other.as_str().unwrap_or("?").to_string(),
                },
            )),
            _ => None,
        })
        .collect()
}

fn var<'a>(v: &'a [(String, String)], name: &str) -> Option<&'a str> {
    v.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

/// R1. With the default host-only configuration the session cookie is
/// `__Host-stagedoor_session`, which a sibling subdomain cannot set. But the agent also
/// takes `stagedoor_session`, which `evil.example.com` CAN set with
/// `Domain=example.com` (and a longer `Path`, so browsers send it first). A mallory
/// with any account at the provider tosses her own session: the victim then acts as
/// mallory (login CSRF / session swapping) on the protected host.
#[tokio::test]
async fn review_r1_host_only_deployment_refuses_the_tossable_unprefixed_cookie() {
    let sso = sso(&[[7; 32]]);
    assert_eq!(sso.session_cookie_name(), "__Host-stagedoor_session");
    let a = agent(Some(sso.clone()), Mode::Enforce);
    let mallory = session(&sso, "mallory", "orders:read", &["payments-engineers"]);
    let victim = session(&sso, "alice", "orders:read", &["payments-engineers"]);
    // What the browser sends for /api/orders after the toss: the tossed cookie with
    // Path=/api first (longer path), then the victim's own host-only cookie.
    let header = format!("stagedoor_session={mallory}; __Host-stagedoor_session={victim}");
    let v = vars(&a, "/api/orders", header.as_bytes(), 1).await;
    assert_ne!(
        var(&v, "sub"),
        Some("mallory"),
        "a host-only deployment took a cookie any sibling subdomain can set: {v:?}"
    );
    // Alone (the victim signed out, or never signed in on this host): still mallory.
    let header = format!("stagedoor_session={mallory}");
    let v = vars(&a, "/api/orders", header.as_bytes(), 1).await;
    assert_eq!(
        var(&v, "sub"),
        None,
        "a host-only deployment took `stagedoor_session`: {v:?}"
    );
}

/// R2a. Shadow mode lets every request through. A request with two Cookie lines is
/// decided `bad_request` before the cookies are read, and that outcome sets no
/// `cookie_strip`, so haproxy.cfg's `del-header Cookie` does not fire and the backend
/// gets both lines, session cookie included.
#[tokio::test]
async fn review_r2a_shadow_bad_request_still_strips_the_session_cookie() {
    let sso = sso(&[[7; 32]]);
    let a = agent(Some(sso.clone()), Mode::Shadow);
    let s = session(&sso, "alice", "orders:read", &["payments-engineers"]);
    let header = format!("__Host-stagedoor_session={s}");
    let v = vars(&a, "/api/orders", header.as_bytes(), 2).await;
    assert_eq!(var(&v, "reason"), Some("bad_request"));
    assert_eq!(var(&v, "allow"), Some("true"), "shadow lets it through");
    assert_eq!(
        var(&v, "cookie_strip"),
        Some("true"),
        "let through with the Cookie header untouched (session cookie reaches the backend): {v:?}"
    );
}

/// R2b. The same with one Cookie line holding a byte that is not UTF-8 (HAProxy passes
/// obs-text through): the message is `bad_request` before any cookie is read.
#[tokio::test]
async fn review_r2b_shadow_non_utf8_cookie_still_strips_the_session_cookie() {
    let sso = sso(&[[7; 32]]);
    let a = agent(Some(sso.clone()), Mode::Shadow);
    let s = session(&sso, "alice", "orders:read", &["payments-engineers"]);
    let mut header = b"pref=\xff; __Host-stagedoor_session=".to_vec();
    header.extend_from_slice(s.as_bytes());
    let v = vars(&a, "/api/orders", &header, 1).await;
    assert_eq!(var(&v, "reason"), Some("bad_request"));
    assert_eq!(var(&v, "allow"), Some("true"), "shadow lets it through");
    assert_eq!(
        var(&v, "cookie_strip"),
        Some("true"),
        "let through with the Cookie header untouched (session cookie reaches the backend): {v:?}"
    );
}

/// R3. Two state cookies (a tossed one with `Path=/.stagedoor/callback`, or one left
/// under another `Domain` after a configuration change): the callback opens the
/// first, compares `state` with it only, and fails with `state_mismatch` although
/// the browser holds the right one. A sibling subdomain can so block every sign-in
/// of a victim, or (with its own state cookie and code) sign the victim in as itself.
#[tokio::test]
async fn review_r3_callback_finds_the_state_cookie_that_matches() {
    use stagedoor::sso::flow::{Flow, PendingSignIn};
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        root().join("examples/quickstart/demo-jwks.json"),
        dir.path().join("jwks.json"),
    )
    .unwrap();
    std::fs::write(dir.path().join("secret"), "s\n").unwrap();
    std::fs::write(dir.path().join("keys"), format!("{}\n", "ab".repeat(32))).unwrap();
    let text = format!(
        r#"
[[issuers]]
issuer = "{ISSUER}"
audiences = ["quickstart-api"]
jwks_file = "jwks.json"

[sso]
listen = "127.0.0.1:0"
issuer = "{ISSUER}"
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
    let flow = Flow::new(Arc::new(sso), verifier, client, &cfg);
    let now = now();
    let pending = |state: &str| PendingSignIn {
        state: state.into(),
        nonce: "n".into(),
        verifier: "v".repeat(43),
        rd: "https://orders.example.com/".into(),
        redirect_uri: "https://orders.example.com/.stagedoor/callback".into(),
        created: now,
    };
    let other = flow.seal_pending(&pending("someone-elses-state")).unwrap();
    let mine = flow.seal_pending(&pending("my-state")).unwrap();
    let header = format!("stagedoor_state={other}; stagedoor_state={mine}");
    let got = flow.pending(&header, Some("my-state"), now);
    assert!(
        got.is_ok(),
        "the right state cookie was there but never looked at: {:?}",
        got.err().map(|e| e.code())
    );
}
