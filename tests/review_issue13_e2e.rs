//! The outside review of issue 13, R2, end to end (a regression test): in shadow mode
//! a request with two Cookie lines is let through, and neither line may carry
//! stagedoor's session cookie to the backend. Real HAProxy 2.6, the stagedoor binary
//! with `[sso]` and `[policy] mode = "shadow"`, a recording backend. Failed before the
//! fix (6a603ba): the backend got both lines, session cookie included.

#![allow(dead_code)]

#[path = "common/backends.rs"]
mod backends;
mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use backends::Backend;
use common::haproxy::{Haproxy, free_port, repo, require_bin};
use common::http::{Response, request};
use common::peers::{Agent, fixture};
use stagedoor::sso::{Secret, Session, Sso, SsoConfig};

const KEY_HEX: &str = "0707070707070707070707070707070707070707070707070707070707070707";

struct Setup {
    agent_port: u16,
    admin_port: u16,
    sign_in_port: u16,
    frontend_port: u16,
}

fn sso_section(p: &Setup) -> String {
    format!(
        r#"
listen = "127.0.0.1:{sign_in}"
issuer = "https://idp.quickstart.example"
client_id = "stagedoor"
client_secret_env = "E2E_SSO_SECRET"
keys_env = "E2E_SSO_KEYS"
external_scheme = "http"
cookie_secure = false
scopes = ["openid", "read"]
"#,
        sign_in = p.sign_in_port
    )
}

fn write_config(dir: &Path, p: &Setup) -> PathBuf {
    let repo = repo();
    let text = format!(
        r#"
[agent]
listen = "127.0.0.1:{agent}"
[admin]
listen = "127.0.0.1:{admin}"
[log]
format = "json"
decisions = "all"
[[issuers]]
issuer = "https://idp.quickstart.example"
audiences = ["quickstart-api"]
jwks_file = "{repo}/examples/quickstart/demo-jwks.json"
algorithms = ["ES256"]
[catalog]
source = "file"
files = ["{catalog}"]
[policy]
mode = "shadow"
[sso]
{sso}
"#,
        agent = p.agent_port,
        admin = p.admin_port,
        repo = repo.display(),
        catalog = fixture("e2e/catalog.yaml").display(),
        sso = sso_section(p),
    );
    let path = dir.join("stagedoor.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The agent's own sealing, with its keys: what its sign-in would set.
fn sso(p: &Setup, key_hex: &str) -> Sso {
    let cfg: SsoConfig = toml::from_str(&sso_section(p)).unwrap();
    let key: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&key_hex[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    Sso::from_parts(cfg, &[key.try_into().unwrap()], Secret::new("x".into())).unwrap()
}

fn session(sso: &Sso, sub: &str, groups: &[&str]) -> String {
    let now = stagedoor::clock::unix_now();
    let mut s = Session {
        iss: "https://idp.quickstart.example".into(),
        sub: sub.into(),
        email: None,
        groups: groups.iter().map(|g| g.to_string()).collect(),
        scopes: vec!["openid".into(), "read".into()],
        sid: "c2Vzc2lvbi1lMmUtdGVzdA".into(),
        auth_time: Some(now),
        iat: now,
        exp: now + 3600,
    };
    format!(
        "{}={}",
        sso.session_cookie_name(),
        sso.seal_session(&mut s, None).unwrap()
    )
}

async fn wait_ready(p: &Setup, agent: &Agent) {
    let admin = format!("127.0.0.1:{}", p.admin_port);
    for _ in 0..300 {
        if tokio::net::TcpStream::connect(&admin).await.is_ok()
            && request(&admin, "GET", "/readyz", &[]).await.status == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("agent not ready:\n{}", agent.log_text());
}

const NAVIGATE: [(&str, &str); 2] = [
    ("Accept", "text/html,application/xhtml+xml,*/*;q=0.8"),
    ("Sec-Fetch-Mode", "navigate"),
];

fn with<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut h = NAVIGATE.to_vec();
    h.extend_from_slice(extra);
    h
}

fn assert_status(r: &Response, status: u16, what: &str) {
    assert_eq!(r.status, status, "{what}: {r:?}");
}

async fn shadow_two_cookie_lines(hap_bin: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let p = Setup {
        agent_port: free_port(),
        admin_port: free_port(),
        sign_in_port: free_port(),
        frontend_port: free_port(),
    };
    let cfg = write_config(dir.path(), &p);
    let agent = Agent::start_with_env(
        &cfg,
        &[
            ("E2E_SSO_KEYS", KEY_HEX),
            ("E2E_SSO_SECRET", "not-used-here"),
        ],
    );
    wait_ready(&p, &agent).await;
    let backend = Backend::start().await;
    let hap = Haproxy::start(
        hap_bin,
        &repo().join("haproxy/haproxy.cfg"),
        p.frontend_port,
        &[
            ("STAGEDOOR_AGENT", format!("127.0.0.1:{}", p.agent_port)),
            ("STAGEDOOR_BACKEND", backend.addr.to_string()),
            ("STAGEDOOR_SIGN_IN", format!("127.0.0.1:{}", p.sign_in_port)),
        ],
    )
    .await;
    let fe = hap.frontend.clone();
    let sso = sso(&p, KEY_HEX);
    let member = session(&sso, "svc", &["sre-oncall"]);
    // One line: stripped (control).
    let r = request(&fe, "GET", "/api/admin", &[("Cookie", &member)]).await;
    assert_status(&r, 200, "shadow, one Cookie line");
    let one = backend.seen().last().unwrap().all("cookie").join("; ");
    assert!(!one.contains("stagedoor"), "control: {one}");
    // Two lines: bad_request before the cookies are read, let through by shadow.
    let r = request(
        &fe,
        "GET",
        "/api/admin",
        &[("Cookie", "a=1"), ("Cookie", &member)],
    )
    .await;
    assert_status(&r, 200, "shadow, two Cookie lines");
    let two = backend.seen().last().unwrap().all("cookie").join("; ");
    drop(hap);
    assert!(
        !two.contains("stagedoor_session"),
        "the session cookie reached the backend (shadow mode, two Cookie lines)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs HAProxy 2.6: run tests/run.sh"]
async fn review_r2_haproxy_2_6_shadow_two_cookie_lines_strip_the_session() {
    shadow_two_cookie_lines(&require_bin("haproxy")).await;
}
