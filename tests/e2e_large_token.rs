//! Large tokens end to end (issue 14): through the shipped haproxy.cfg and
//! stagedoor.spoe.conf on HAProxy 2.6 (Debian) and 3.x, a token just under
//! `[token] max_token_bytes` is decided like any other, one over it is a clear
//! `token_too_large` 401, and a request too big for HAProxy's own buffer is
//! HAProxy's own refusal: never a 503 from a frame that did not fit.

mod common;

use std::path::Path;
use std::time::Duration;

use common::haproxy::{Haproxy, free_port, repo, require_bin, require_haproxy3};
use common::http::{Response, request};
use common::peers::Agent;

const CATALOG: &str = r#"
apiVersion: backstage.io/v1alpha1
kind: Component
metadata:
  name: orders-api
  annotations:
    stagedoor.io/routes: |
      GET /api/orders read
spec:
  type: service
  lifecycle: production
  owner: sre
"#;

/// The quickstart's demo issuer (a file JWKS) signs the tokens, so no provider is
/// needed; the agent's limit is the default one (8 KiB).
fn write_config(dir: &Path, agent: u16, admin: u16, frame: u32) -> std::path::PathBuf {
    let catalog = dir.join("catalog.yaml");
    std::fs::write(&catalog, CATALOG).unwrap();
    let text = format!(
        r#"
[agent]
listen = "127.0.0.1:{agent}"
max_frame_size = {frame}
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
"#,
        repo = repo().display(),
        catalog = catalog.display(),
    );
    let path = dir.join(format!("stagedoor-{frame}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// A valid demo token of exactly `len` bytes: a `pad` claim fills the rest.
fn token_of_len(len: usize) -> String {
    let pem = std::fs::read(repo().join("examples/quickstart/demo-signing-key.pem")).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mint = |pad: usize| {
        let claims = serde_json::json!({
            "iss": "https://idp.quickstart.example", "sub": "big", "aud": "quickstart-api",
            "iat": now - 60, "exp": now + 600, "scope": "read", "pad": "x".repeat(pad),
        });
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some("demo-2026".into());
        jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_ec_pem(&pem).unwrap(),
        )
        .unwrap()
    };
    // Base64url grows 4 bytes per 3, so one more pad byte adds one or two bytes:
    // walk up to the length (or one past it).
    let base = mint(0).len();
    assert!(len > base, "{len} is below the smallest token ({base})");
    let mut pad = (len - base) * 3 / 4;
    loop {
        let t = mint(pad);
        match t.len().cmp(&len) {
            std::cmp::Ordering::Equal => return t,
            std::cmp::Ordering::Less => pad += 1,
            std::cmp::Ordering::Greater => {
                // A two-byte step jumped over `len`: one byte longer is close
                // enough (the tests' margins are far wider).
                assert!(t.len() <= len + 2, "token of {} for {len}", t.len());
                return t;
            }
        }
    }
}

async fn wait_ready(admin: u16, agent: &Agent) {
    for _ in 0..300 {
        if tokio::net::TcpStream::connect(("127.0.0.1", admin))
            .await
            .is_ok()
            && request(&format!("127.0.0.1:{admin}"), "GET", "/readyz", &[])
                .await
                .status
                == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("agent not ready:\n{}", agent.log_text());
}

async fn send(frontend: &str, token: &str, cookie: Option<&str>) -> Response {
    let auth = format!("Bearer {token}");
    let mut headers = vec![("Authorization", auth.as_str())];
    if let Some(c) = cookie {
        headers.push(("Cookie", c));
    }
    request(frontend, "GET", "/api/orders", &headers).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs HAProxy 2.6: run tests/run.sh"]
async fn large_tokens_through_haproxy_2_6() {
    large_tokens(&require_bin("haproxy")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs HAProxy 3.x (tests/peers/haproxy3/fetch.sh): run tests/run.sh"]
async fn large_tokens_through_haproxy_3() {
    large_tokens(&require_haproxy3()).await;
}

#[test]
fn peer_tests_run_under_ci() {
    common::haproxy::assert_peer_tests_run_under_ci();
}

/// The agent (with `max_frame_size` = `frame`) and HAProxy with the shipped files.
async fn stack(hap_bin: &Path, dir: &Path, frame: u32) -> (Agent, Haproxy) {
    let (agent_port, admin, frontend_port, backend) =
        (free_port(), free_port(), free_port(), free_port());
    let agent = Agent::start(&write_config(dir, agent_port, admin, frame));
    wait_ready(admin, &agent).await;
    let hap = Haproxy::start_many(
        hap_bin,
        &[
            repo().join("haproxy/haproxy.cfg"),
            repo().join("examples/quickstart/echo-backend.cfg"),
        ],
        frontend_port,
        &[
            ("STAGEDOOR_AGENT", format!("127.0.0.1:{agent_port}")),
            ("STAGEDOOR_BACKEND", format!("127.0.0.1:{backend}")),
        ],
    )
    .await;
    (agent, hap)
}

async fn large_tokens(hap_bin: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let (agent, hap) = stack(hap_bin, dir.path(), 16_380).await;
    let fe = hap.frontend.clone();
    let ctx = |what: &str, r: &Response| ctx2(&agent, &hap, what, r);

    // Just under the agent's limit (8,192 bytes): allowed, identity at the backend.
    let near = token_of_len(8_150);
    assert!(near.len() <= 8_192);
    let r = send(&fe, &near, None).await;
    assert_eq!(r.status, 200, "{}", ctx("token near the limit", &r));
    assert_eq!(r.json()["x_auth_subject"], "big");

    // The same token with a session-sized Cookie header beside it (a browser that
    // also carries other cookies): the SPOE message still fits HAProxy's frame.
    let cookie = format!("other={}", "c".repeat(5_000));
    let r = send(&fe, &near, Some(&cookie)).await;
    assert_eq!(
        r.status,
        200,
        "{}",
        ctx("near-limit token and 5 KB cookie", &r)
    );

    // Over the limit, and far over it while still inside HAProxy's request
    // buffer: the agent's clear token_too_large, in the challenge and the log.
    for len in [8_300, 14_000] {
        let big = token_of_len(len);
        let r = send(&fe, &big, None).await;
        let what = format!("token of {} bytes", big.len());
        assert_eq!(r.status, 401, "{}", ctx(&what, &r));
        let challenge = r.header("www-authenticate").unwrap_or_default();
        assert!(challenge.contains("invalid_token"), "{}", ctx(&what, &r));
    }
    // The decision log is written off the request path: wait for its lines.
    let too_large = || {
        agent
            .decisions()
            .iter()
            .filter(|d| d["reason"] == "token_too_large")
            .count()
    };
    let hap_too_large = || hap.log_text().matches("reason=token_too_large").count();
    eventually(|| too_large() >= 2 && hap_too_large() >= 2).await;
    assert_eq!(too_large(), 2, "{}", agent.log_text());
    assert_eq!(hap_too_large(), 2, "{}", hap.log_text());

    // Bigger than HAProxy's buffer (tune.bufsize 16 KiB): HAProxy refuses it
    // itself (400 on 2.6, 431 on 3.x), before any agent is asked. Not a 503.
    let huge = token_of_len(20_000);
    let r = send(&fe, &huge, None).await;
    assert!(
        r.status == 400 || r.status == 431,
        "{}",
        ctx("token over HAProxy's buffer", &r)
    );
    // Nothing above was a frame error (HAProxy's fail-closed 503).
    let hap_log = hap.log_text();
    let errors = hap_log
        .lines()
        .filter(|l| l.contains(" 503 "))
        .collect::<Vec<_>>();
    assert!(errors.is_empty(), "503s in the HAProxy log: {errors:#?}");

    // An agent whose frame is smaller than HAProxy's (a valid config: 8 KiB tokens
    // still fit), and a request whose Cookie headers make the message too big for
    // it: HAProxy's "too big" (spoe_error 3) becomes a 431 that says why.
    drop((agent, hap));
    let (agent, hap) = stack(hap_bin, dir.path(), 12_000).await;
    let r = send(&hap.frontend, &near, None).await;
    assert_eq!(
        r.status,
        200,
        "{}",
        ctx2(&agent, &hap, "near-limit token, 12,000-byte frame", &r)
    );
    let r = send(&hap.frontend, &near, Some(&cookie)).await;
    assert_eq!(
        r.status,
        431,
        "{}",
        ctx2(&agent, &hap, "message over the frame", &r)
    );
    assert!(r.body.contains("too large to authorize"), "{r:?}");
    // 2.6 and 3.x both say 259 (256 + SPOP status 3, "frame is too big"); 2.6's
    // SPOE.txt also names a bare 3 for it.
    let too_big = || {
        let log = hap.log_text();
        log.contains("spoe_error=3 ") || log.contains("spoe_error=259 ")
    };
    eventually(too_big).await;
    assert!(too_big(), "{}", hap.log_text());
    // The agent connection survived it: the next request is decided as usual.
    let r = send(&hap.frontend, &near, None).await;
    assert_eq!(r.status, 200, "{}", ctx2(&agent, &hap, "after the 431", &r));
}

/// Logs are written off the request path: wait up to 5 s for `ok`.
async fn eventually(ok: impl Fn() -> bool) {
    for _ in 0..100 {
        if ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ctx2(agent: &Agent, hap: &Haproxy, what: &str, r: &Response) -> String {
    format!(
        "{what}: {r:?}\nagent:\n{}\nhaproxy:\n{}",
        agent.log_text(),
        hap.log_text()
    )
}
