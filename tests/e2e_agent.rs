//! The product end to end: HAProxy 2.6 (Debian) → the stagedoor binary → the real
//! `oidc-provider` (discovery, client_credentials tokens) and a file catalog →
//! an echo backend served by HAProxy. Also reads the agent's decision log, the
//! HAProxy log and /metrics of the same run.

mod common;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use common::haproxy::{Haproxy, repo, require_bin, require_haproxy3, require_haproxy30};
use common::http::{Response, get, request};
use common::metric_sum;
use common::peers::{Agent, Op, Ports, fixture, require_peer};

fn write_config(dir: &std::path::Path, p: &Ports, mode: &str) -> std::path::PathBuf {
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
issuer = "http://127.0.0.1:{op}"
audiences = ["urn:test:api"]
discovery = true
algorithms = ["RS256", "ES256"]
[[issuers]]
issuer = "https://idp.quickstart.example"
audiences = ["quickstart-api"]
jwks_file = "{repo}/examples/quickstart/demo-jwks.json"
algorithms = ["ES256"]
[catalog]
source = "file"
files = ["{catalog}"]
[policy]
mode = "{mode}"
"#,
        agent = p.agent,
        admin = p.admin,
        op = p.op,
        repo = repo.display(),
        catalog = fixture("e2e/catalog.yaml").display(),
    );
    let path = dir.join(format!("stagedoor-{mode}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// A token signed with the quickstart demo key (a second configured issuer), for
/// the claim failures a live provider will not produce on demand.
fn demo_token(iss: &str, aud: &str, exp_offset: i64) -> String {
    let pem = std::fs::read(repo().join("examples/quickstart/demo-signing-key.pem")).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let claims = serde_json::json!({"iss": iss, "sub": "demo", "aud": aud, "iat": now - 600, "exp": now + exp_offset, "scope": "read"});
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some("demo-2026".into());
    jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_ec_pem(&pem).unwrap(),
    )
    .unwrap()
}

fn tamper(token: &str) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims: serde_json::Value =
        serde_json::from_slice(&B64.decode(parts[1]).unwrap()).unwrap();
    claims["sub"] = "admin".into();
    format!(
        "{}.{}.{}",
        parts[0],
        B64.encode(claims.to_string()),
        parts[2]
    )
}

fn alg_none(token: &str) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    format!(
        "{}.{}.",
        B64.encode(r#"{"alg":"none","typ":"JWT"}"#),
        parts[1]
    )
}

async fn admin(p: &Ports, path: &str) -> Response {
    request(&format!("127.0.0.1:{}", p.admin), "GET", path, &[]).await
}

async fn wait_ready(p: &Ports, agent: &Agent) {
    for _ in 0..300 {
        let up = tokio::net::TcpStream::connect(("127.0.0.1", p.admin))
            .await
            .is_ok();
        if up && admin(p, "/readyz").await.status == 200 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("agent not ready:\n{}", agent.log_text());
}

/// The decision log of this run, replayed against the same configuration (issue
/// 16): every line replays, and nothing changes.
fn replay_finds_no_change(
    dir: &std::path::Path,
    cfg: &std::path::Path,
    decisions: &[serde_json::Value],
) {
    let log = dir.join("decisions.jsonl");
    let text: String = decisions.iter().map(|d| format!("{d}\n")).collect();
    std::fs::write(&log, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stagedoor"))
        .args(["replay", "--format", "json", "--log"])
        .arg(&log)
        .arg("--against")
        .arg(cfg)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["decisions"], decisions.len(), "{report}");
    assert_eq!(report["replayed"], decisions.len(), "{report}");
    assert_eq!(report["unchanged"], decisions.len(), "{report}");
    for n in ["newly_allowed", "newly_denied", "reason_changed"] {
        assert_eq!(report[n], 0, "{n}: {report}");
    }
}

fn assert_status(r: &Response, status: u16, what: &str) {
    assert_eq!(r.status, status, "{what}: {r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs HAProxy 2.6 and oidc-provider: run tests/run.sh"]
async fn haproxy_2_6_agent_provider_catalog_end_to_end() {
    let bin = require_bin("haproxy");
    require_peer("oidc");
    end_to_end(&bin).await;
}

/// The same through HAProxy 3.0 LTS (Debian 13), the last original SPOE engine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs HAProxy 3.0 and oidc-provider: run tests/run.sh"]
async fn haproxy_3_0_agent_provider_catalog_end_to_end() {
    let bin = require_haproxy30();
    require_peer("oidc");
    end_to_end(&bin).await;
}

/// The same through HAProxy 3.x's rewritten SPOE, with the same shipped files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs HAProxy 3.x and oidc-provider: run tests/run.sh"]
async fn haproxy_3_agent_provider_catalog_end_to_end() {
    let bin = require_haproxy3();
    require_peer("oidc");
    end_to_end(&bin).await;
}

/// Under CI=true the tests above are not left out.
#[test]
fn peer_tests_run_under_ci() {
    common::haproxy::assert_peer_tests_run_under_ci();
}

async fn end_to_end(hap_bin: &std::path::Path) {
    let dir = tempfile::tempdir().unwrap();
    let p = Ports::new();
    let cfg = write_config(dir.path(), &p, "enforce");

    // The agent starts before the provider: /readyz must say it is waiting for keys.
    let mut agent = Agent::start(&cfg);
    let mut readyz = None;
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", p.admin))
            .await
            .is_ok()
        {
            readyz = Some(admin(&p, "/readyz").await);
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let readyz = readyz.expect("admin listener up");
    assert_eq!(readyz.status, 503, "{readyz:?}");
    assert!(
        readyz.body.contains("keys for issuer http://127.0.0.1"),
        "{}",
        readyz.body
    );
    assert_eq!(admin(&p, "/healthz").await.status, 200);

    let op = Op::start(p.op).await;
    wait_ready(&p, &agent).await;

    let frontend = format!("127.0.0.1:{}", p.frontend);
    // The echo backend is a second config file in the same HAProxy process.
    let hap = Haproxy::start_many(
        hap_bin,
        &[
            repo().join("haproxy/haproxy.cfg"),
            repo().join("examples/quickstart/echo-backend.cfg"),
        ],
        p.frontend,
        &[
            ("STAGEDOOR_AGENT", format!("127.0.0.1:{}", p.agent)),
            ("STAGEDOOR_BACKEND", format!("127.0.0.1:{}", p.backend)),
        ],
    )
    .await;

    let svc = op
        .token("svc", "svc-secret", "read write", "urn:test:api")
        .await;
    let svc_es = op
        .token("svc", "svc-secret", "read", "urn:test:api-es")
        .await;
    let reader = op
        .token("reader", "reader-secret", "read", "urn:test:api")
        .await;
    let mut sent = 0u32;

    // Valid token on a scoped route: 200, identity headers reach the backend, and
    // a spoofed incoming X-Auth-Subject is gone.
    let r = request(
        &frontend,
        "GET",
        "/api/orders",
        &[
            ("Authorization", &format!("Bearer {svc}")),
            ("X-Auth-Subject", "evil"),
            ("X_Auth_Subject", "evil"),
            ("X-Request-ID", "forged"),
        ],
    )
    .await;
    sent += 1;
    assert_status(&r, 200, "valid RS256 token");
    let body = r.json();
    assert_eq!(body["x_auth_subject"], "svc");
    assert_eq!(body["subject_headers"], 1, "the spoofed header was removed");
    assert_eq!(body["underscore_headers"], 0, "the underscore spelling too");
    assert_eq!(body["request_ids"], 1, "only HAProxy's own request id");
    assert_eq!(body["x_auth_entity"], "component:default/orders-api");
    assert!(body["x_auth_scopes"].as_str().unwrap().contains("read"));
    let r = get(&frontend, "/api/orders/42", Some(&svc_es)).await;
    sent += 1;
    assert_status(&r, 200, "valid ES256 token");
    // The scheme is case-insensitive.
    let r = request(
        &frontend,
        "GET",
        "/api/orders",
        &[("Authorization", &format!("bEaReR {svc}"))],
    )
    .await;
    sent += 1;
    assert_status(&r, 200, "lower/upper-case scheme");

    // Missing token: 401 with a WWW-Authenticate challenge.
    let r = get(&frontend, "/api/orders", None).await;
    sent += 1;
    assert_status(&r, 401, "missing token");
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"stagedoor\"")
    );
    let r = request(
        &frontend,
        "GET",
        "/api/orders",
        &[("Authorization", "Basic c3ZjOnN2Yy1zZWNyZXQ=")],
    )
    .await;
    sent += 1;
    assert_status(&r, 401, "Basic scheme is no token");

    // Bad tokens: 401 invalid_token.
    for (what, token, reason) in [
        (
            "expired",
            demo_token("https://idp.quickstart.example", "quickstart-api", -300),
            "expired",
        ),
        (
            "wrong audience",
            demo_token("https://idp.quickstart.example", "other-api", 300),
            "bad_audience",
        ),
        (
            "wrong issuer",
            demo_token("https://evil.example", "quickstart-api", 300),
            "bad_issuer",
        ),
        ("tampered", tamper(&svc), "bad_signature"),
        ("alg none", alg_none(&svc), "unsupported_alg"),
    ] {
        let r = get(&frontend, "/api/orders", Some(&token)).await;
        sent += 1;
        assert_status(&r, 401, what);
        let www = r.header("www-authenticate").unwrap_or_default();
        assert!(www.contains("error=\"invalid_token\""), "{what}: {www}");
        // The decision log says why (the writer is asynchronous: give it a moment).
        let mut logged = serde_json::Value::Null;
        for _ in 0..50 {
            logged = agent.decisions().last().cloned().unwrap_or_default();
            if logged["token_fp"]
                .as_str()
                .is_some_and(|fp| fp == stagedoor::decision_log::fingerprint(&token))
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(logged["reason"], reason, "{what}: {logged}");
        assert_eq!(logged["status"], 401, "{what}: {logged}");
    }

    // Two Authorization headers (one valid): which would the backend read? Denied.
    let r = request(
        &frontend,
        "GET",
        "/api/orders",
        &[
            ("Authorization", "Bearer garbage"),
            ("Authorization", &format!("Bearer {svc}")),
        ],
    )
    .await;
    sent += 1;
    assert_status(&r, 403, "two Authorization headers");

    // Missing scope: 403 insufficient_scope with the scope needed.
    let r = request(
        &frontend,
        "POST",
        "/api/orders",
        &[("Authorization", &format!("Bearer {reader}"))],
    )
    .await;
    sent += 1;
    assert_status(&r, 403, "missing scope");
    let www = r.header("www-authenticate").unwrap_or_default();
    assert!(
        www.contains("error=\"insufficient_scope\"") && www.contains("scope=\"write\""),
        "{www}"
    );

    // Group-restricted route: a member passes, a non-member does not.
    assert_status(
        &get(&frontend, "/api/admin/users", Some(&svc)).await,
        200,
        "member of sre",
    );
    assert_status(
        &get(&frontend, "/api/admin/users", Some(&reader)).await,
        403,
        "not a member",
    );
    sent += 2;
    // Public route without a token; authenticated route with any valid token.
    assert_status(
        &get(&frontend, "/api/public", None).await,
        200,
        "public route",
    );
    assert_status(
        &get(&frontend, "/api/me", Some(&reader)).await,
        200,
        "authenticated route",
    );
    // Unknown path: 403 no_route.
    assert_status(
        &get(&frontend, "/nowhere", Some(&svc)).await,
        403,
        "no route",
    );
    sent += 3;
    // Path probes.
    for probe in [
        "/api/orders/../admin",
        "/api/orders/%2e%2e/admin",
        "/api/orders%2Fx",
        "/api/orders/%5cx",
        "/api/orders/a%zz",
    ] {
        let r = get(&frontend, probe, Some(&svc)).await;
        // HAProxy may refuse a malformed request line itself (400); what reaches the
        // agent is denied as bad_path.
        assert!(matches!(r.status, 400 | 403), "{probe}: {}", r.status);
        if r.status == 403 {
            sent += 1;
        }
    }

    // Let the decision log catch up, then check it against what was sent.
    let decisions = agent.decisions_when(|d| d.len() >= sent as usize).await;
    let reasons: Vec<String> = decisions
        .iter()
        .map(|d| d["reason"].as_str().unwrap_or("").to_owned())
        .collect();
    for want in [
        "bad_request",
        "ok",
        "missing_token",
        "expired",
        "bad_audience",
        "bad_issuer",
        "bad_signature",
        "insufficient_scope",
        "not_member",
        "public",
        "no_route",
        "bad_path",
    ] {
        assert!(
            reasons.iter().any(|r| r == want),
            "no decision with reason {want}: {reasons:?}"
        );
    }
    let first = decisions.iter().find(|d| d["reason"] == "ok").unwrap();
    for field in [
        "time",
        "request_id",
        "src",
        "method",
        "host",
        "path",
        "decision",
        "enforced",
        "status",
        "reason",
        "sub",
        "client_id",
        "entity",
        "owner",
        "route",
        "issuer",
        "latency_us",
        "token_fp",
    ] {
        assert!(
            first.get(field).is_some(),
            "decision log lacks {field}: {first}"
        );
    }
    assert_eq!(first["sub"], "svc");
    assert_eq!(first["enforced"], true);
    assert_eq!(first["entity"], "component:default/orders-api");
    replay_finds_no_change(dir.path(), &cfg, &decisions);
    assert_eq!(first["src"], "127.0.0.1");

    // /metrics: decisions add up to the requests that reached the agent.
    let m = admin(&p, "/metrics").await.body;
    let total = metric_sum(&m, "stagedoor_decisions_total", "");
    // HAProxy may itself reject some path probes (400) before asking the agent.
    assert_eq!(
        decisions.len(),
        sent as usize,
        "one decision line per request"
    );
    assert_eq!(
        total,
        f64::from(sent),
        "decisions_total adds up to the requests sent\n{m}"
    );
    let denied = decisions.iter().filter(|d| d["decision"] == "deny").count() as f64;
    assert_eq!(
        metric_sum(&m, "stagedoor_decisions_total", "decision=\"deny\""),
        denied
    );
    assert_eq!(
        metric_sum(&m, "stagedoor_decision_latency_seconds_count", ""),
        f64::from(sent)
    );
    assert!(
        metric_sum(&m, "stagedoor_jwks_keys", "127.0.0.1") >= 2.0,
        "{m}"
    );
    assert_eq!(metric_sum(&m, "stagedoor_catalog_entities", ""), 3.0);
    assert!(metric_sum(&m, "stagedoor_spop_connections_open", "") >= 1.0);

    // HAProxy's own log names the subject and the reason (written once each response
    // is sent: give it a moment).
    for _ in 0..250 {
        let hlog = hap.log_text();
        if hlog.contains("reason=ok") && hlog.contains("reason=missing_token") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let hlog = hap.log_text();
    assert!(
        hlog.contains("sub=\"svc\"") && hlog.contains("reason=ok"),
        "{hlog}"
    );
    assert!(hlog.contains("reason=missing_token"), "{hlog}");

    // Never a token or a signature in any log.
    let all_logs = format!("{}\n{}", agent.log_text(), hlog);
    for t in [&svc, &svc_es, &reader] {
        let sig = t.rsplit('.').next().unwrap();
        assert!(
            !all_logs.contains(t.as_str()),
            "a token leaked into the logs"
        );
        assert!(!all_logs.contains(sig), "a signature leaked into the logs");
    }

    // Key-set gauges move when the provider goes away... (age grows, errors count)
    drop(op);

    // Agent stopped: 503, never 200.
    assert!(agent.terminate().await, "agent exits 0 on SIGTERM");
    let r = get(&frontend, "/api/orders", Some(&svc)).await;
    assert_status(&r, 503, "agent down");
    let r = get(&frontend, "/api/public", None).await;
    assert_status(&r, 503, "agent down, public route too");

    // Shadow mode: a would-deny goes through, marked.
    let frontend_lines = |log: &str| {
        log.lines()
            .filter(|l| l.contains(" fe_main ") && l.contains("reason=missing_token"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let denied_before = frontend_lines(&hap.log_text()).len();
    let shadow_cfg = write_config(dir.path(), &p, "shadow");
    let op = Op::start(p.op).await;
    let agent = Agent::start(&shadow_cfg);
    wait_ready(&p, &agent).await;
    let mut recovered = None;
    for _ in 0..100 {
        let r = get(&frontend, "/api/orders", None).await;
        if r.status != 503 {
            recovered = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = recovered.expect("traffic recovers after the agent restarts, HAProxy untouched");
    assert_status(&r, 200, "shadow mode lets a would-deny through");
    let d = agent
        .decisions_when(|d| !d.is_empty())
        .await
        .last()
        .cloned()
        .unwrap();
    assert_eq!(d["enforced"], false, "{d}");
    assert_eq!(d["reason"], "missing_token");
    assert_eq!(d["decision"], "deny");
    // HAProxy logs a request once its response is sent: give it a moment. Every
    // frontend line of a would-deny since the restart must carry shadow_deny=1. Once in
    // CI (5cfb907) HAProxy 3 logged the backend's line for the first request after the
    // agent's restart but no frontend line within 5 s, though the client had its 200
    // and the agent its decision; cause not found. Only then is a second would-deny
    // sent, and its line must come.
    let mut logged = false;
    for attempt in 0..2 {
        if attempt > 0 {
            let r = get(&frontend, "/api/orders", None).await;
            assert_status(&r, 200, "shadow mode lets a would-deny through, again");
        }
        for _ in 0..250 {
            let lines = frontend_lines(&hap.log_text());
            if let Some(new) = lines.get(denied_before..).filter(|new| !new.is_empty()) {
                for line in new {
                    assert!(line.contains("shadow_deny=1"), "{line}");
                }
                logged = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if logged {
            break;
        }
        eprintln!(
            "no frontend line for the would-deny in HAProxy's log after 5 s (attempt {attempt})"
        );
    }
    assert!(logged, "{}", hap.log_text());
    let _ = op;
}
