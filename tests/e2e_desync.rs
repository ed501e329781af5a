//! Issue 10, the HAProxy half: the shipped files (haproxy/haproxy.cfg and
//! haproxy/stagedoor.spoe.conf) decide on the request the backend will act on.
//!
//! Every test runs the real stagedoor binary (file catalog, the quickstart demo
//! issuer) behind real HAProxy 2.6, 3.0 and 3.2 with the shipped files, in front of
//! a backend written here (tests/common/backends.rs) that records each request's
//! raw bytes and reads it as nginx/Go, Express, method-override middlewares,
//! IIS/Symfony, Rails and a hop-by-hop-aware proxy would. Besides each finding's
//! own checks, every test ends with the same oracle: each request the backend got
//! carries HAProxy's request id, and the agent's decision for that id allowed the
//! very method, host, path and subject the backend acts on. A request that reaches
//! the backend without a decision (through an h2c tunnel) fails it too.
//!
//! `STAGEDOOR_DESYNC_HAPROXY_DIR=<dir>` runs the tests against another copy of the
//! two files (to check that they fail on older ones).

#[path = "common/backends.rs"]
mod backends;
mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use backends::{Backend, Seen, h2_request, host_only};
use common::haproxy::{Haproxy, free_port, repo, require_bin, require_haproxy3, require_haproxy30};
use common::peers::Agent;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The catalog: an any-host site with a public `/`, a vhost-scoped billing API and
/// an orders API on its own host whose root is not public.
const CATALOG: &str = r#"
apiVersion: backstage.io/v1alpha1
kind: Component
metadata:
  name: www
  annotations:
    stagedoor.io/routes: |
      GET,HEAD,POST  /              public
      GET            /ws            authenticated
      GET            /api/reports   reports:read
      DELETE         /api/reports   reports:admin
      *              /admin         admin
    # billing and orders route under this public / on their own hosts
    stagedoor.io/delegate: "/ billing, orders"
spec: {type: service, lifecycle: production, owner: web}
---
apiVersion: backstage.io/v1alpha1
kind: Component
metadata:
  name: billing
  annotations:
    stagedoor.io/hosts: "billing.example"
    stagedoor.io/routes: |
      GET  /api/invoices  billing:read
spec: {type: service, lifecycle: production, owner: web}
---
apiVersion: backstage.io/v1alpha1
kind: Component
metadata:
  name: orders
  annotations:
    stagedoor.io/hosts: "orders.example"
    stagedoor.io/routes: |
      GET  /api/orders/health  public
      *    /                   orders:admin
spec: {type: service, lifecycle: production, owner: web}
"#;

#[derive(Clone, Copy)]
enum Version {
    V26,
    V30,
    V32,
}

/// One setup: agent, HAProxy with the shipped files, the recording backend.
struct Rig {
    agent: Agent,
    hap: Haproxy,
    backend: Backend,
    /// HAProxy's major.minor.
    version: (u32, u32),
    _dir: tempfile::TempDir,
}

/// Where the HAProxy files under test are.
fn haproxy_dir() -> PathBuf {
    std::env::var_os("STAGEDOOR_DESYNC_HAPROXY_DIR")
        .map_or_else(|| repo().join("haproxy"), PathBuf::from)
}

fn version_of(bin: &Path) -> (u32, u32) {
    let out = std::process::Command::new(bin).arg("-v").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let v = text
        .split_whitespace()
        .nth(2)
        .unwrap_or_default()
        .to_owned();
    let mut parts = v.split(['.', '-']).map(|p| p.parse().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

impl Rig {
    async fn start(version: Version) -> Rig {
        let bin = match version {
            Version::V26 => require_bin("haproxy"),
            Version::V30 => require_haproxy30(),
            Version::V32 => require_haproxy3(),
        };
        let dir = tempfile::tempdir().unwrap();
        let catalog = dir.path().join("catalog.yaml");
        std::fs::write(&catalog, CATALOG).unwrap();
        let (agent_port, admin_port) = (free_port(), free_port());
        let config = dir.path().join("stagedoor.toml");
        std::fs::write(
            &config,
            format!(
                r#"
[agent]
listen = "127.0.0.1:{agent_port}"
[admin]
listen = "127.0.0.1:{admin_port}"
[log]
format = "json"
decisions = "all"
[[issuers]]
issuer = "https://idp.quickstart.example"
audiences = ["quickstart-api"]
jwks_file = "{jwks}"
algorithms = ["ES256"]
[catalog]
source = "file"
files = ["{catalog}"]
"#,
                jwks = repo().join("examples/quickstart/demo-jwks.json").display(),
                catalog = catalog.display(),
            ),
        )
        .unwrap();
        let agent = Agent::start(&config);
        let admin = format!("127.0.0.1:{admin_port}");
        let mut ready = false;
        for _ in 0..300 {
            if TcpStream::connect(&admin).await.is_ok()
                && common::http::request(&admin, "GET", "/readyz", &[])
                    .await
                    .status
                    == 200
            {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(ready, "agent not ready:\n{}", agent.log_text());
        let backend = Backend::start().await;
        let files = haproxy_dir();
        let hap = Haproxy::start(
            &bin,
            &files.join("haproxy.cfg"),
            free_port(),
            &[
                ("STAGEDOOR_AGENT", format!("127.0.0.1:{agent_port}")),
                ("STAGEDOOR_BACKEND", backend.addr.to_string()),
                (
                    "STAGEDOOR_SPOE_CONF",
                    files.join("stagedoor.spoe.conf").display().to_string(),
                ),
            ],
        )
        .await;
        let rig = Rig {
            agent,
            hap,
            backend,
            version: version_of(&bin),
            _dir: dir,
        };
        // HAProxy answers 503 until its health check has seen the agent.
        for _ in 0..100 {
            if rig.send(&get("/", "www.example")).await.0 == 200 {
                return rig;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no 200 through HAProxy:\n{}", rig.hap.log_text());
    }

    fn addr(&self) -> &str {
        &self.hap.frontend
    }

    /// Sends `raw` on a new connection, reads until HAProxy closes it; returns the
    /// status (0 if none) and the whole answer.
    async fn send(&self, raw: &str) -> (u16, String) {
        let mut s = TcpStream::connect(self.addr()).await.expect("connect");
        s.write_all(raw.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        let mut chunk = [0u8; 8192];
        let read = tokio::time::timeout(Duration::from_secs(15), async {
            // A reset after the answer (HAProxy refusing before reading a body) is fine.
            while let Ok(n @ 1..) = s.read(&mut chunk).await {
                out.extend_from_slice(&chunk[..n]);
            }
        })
        .await;
        assert!(read.is_ok(), "no end of answer within 15 s to {raw:?}");
        let text = String::from_utf8_lossy(&out).into_owned();
        (status_of(&text), text)
    }

    /// The last request the backend got.
    fn last_seen(&self) -> Seen {
        self.backend
            .seen()
            .pop()
            .expect("the backend got a request")
    }

    /// The oracle: every request the backend got was allowed by a decision on the
    /// method, host, path and subject the backend acts on.
    async fn assert_agreement(&self) {
        let seen = self.backend.seen();
        assert!(!seen.is_empty());
        for s in &seen {
            let what = format!("backend got {:?}", String::from_utf8_lossy(&s.raw));
            assert!(
                !s.tunnelled,
                "no decision: it came through an h2c tunnel; {what}"
            );
            let ids = s.all("x-request-id");
            assert_eq!(ids.len(), 1, "one request id, HAProxy's; {what}");
            let d = self.decision(ids[0]).await;
            assert_eq!(d["decision"], "allow", "{d}; {what}");
            assert_eq!(d["method"], s.effective_method(), "{d}; {what}");
            assert_eq!(d["path"], s.express_path(), "{d}; {what}");
            assert_eq!(s.routed_path(), s.express_path(), "{what}");
            let host = d["host"].as_str().map(host_only);
            assert_eq!(host, s.vhost(), "{d}; {what}");
            assert_eq!(s.rails_host(), s.vhost(), "{what}");
            let sub = d["sub"].as_str().map(str::to_owned);
            assert_eq!(s.subject_behind_proxy(), sub, "{d}; {what}");
            assert_eq!(
                s.all("x-auth-subject"),
                sub.iter().map(String::as_str).collect::<Vec<_>>(),
                "{d}; {what}"
            );
            assert!(
                !s.trailers
                    .iter()
                    .any(|(k, _)| k.to_ascii_lowercase().starts_with("x-auth")),
                "identity trailers reached the backend; {what}"
            );
        }
    }

    /// The agent's decision line for a request id (the log writer is asynchronous).
    async fn decision(&self, id: &str) -> serde_json::Value {
        for _ in 0..100 {
            if let Some(d) = self
                .agent
                .decisions()
                .into_iter()
                .find(|d| d["request_id"] == id)
            {
                return d;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the backend got request {id}, which the agent never decided on");
    }
}

fn status_of(text: &str) -> u16 {
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn get(path: &str, host: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
}

/// A token signed with the quickstart demo key, for subject alice.
fn token(scope: &str) -> String {
    let pem = std::fs::read(repo().join("examples/quickstart/demo-signing-key.pem")).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({"iss": "https://idp.quickstart.example", "sub": "alice",
        "aud": "quickstart-api", "iat": now - 60, "exp": now + 600, "scope": scope});
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some("demo-2026".into());
    jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_ec_pem(&pem).unwrap(),
    )
    .unwrap()
}

/// Three tests per scenario, one per HAProxy version: `<scenario>::haproxy_2_6`...
macro_rules! on_every_version {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[ignore = "needs HAProxy 2.6: run tests/run.sh"]
            async fn haproxy_2_6() {
                super::$scenario(&super::Rig::start(super::Version::V26).await).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[ignore = "needs HAProxy 3.0: run tests/run.sh"]
            async fn haproxy_3_0() {
                super::$scenario(&super::Rig::start(super::Version::V30).await).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[ignore = "needs HAProxy 3.x: run tests/run.sh"]
            async fn haproxy_3_2() {
                super::$scenario(&super::Rig::start(super::Version::V32).await).await;
            }
        }
    )*};
}

on_every_version!(
    finding1_no_host,
    finding2_request_target,
    finding3_h2c_upgrade,
    finding4_override_headers,
    finding4_forwarding_headers,
    finding4_connection_names_identity,
    finding4_trailers,
    controls,
);

/// Under CI=true the tests above are not left out.
#[test]
fn peer_tests_run_under_ci() {
    common::haproxy::assert_peer_tests_run_under_ci();
}

/// Finding 1: without Host the agent saw no host (any-host routes only, so the
/// public `/` allowed it) while nginx/Go took the vhost from the absolute target
/// and served billing. Now: no Host, 400; an absolute target goes on origin-form
/// with the Host the agent decided on.
async fn finding1_no_host(rig: &Rig) {
    for req in [
        "GET http://billing.example/api/invoices HTTP/1.0\r\n\r\n",
        "GET http://billing.example/api/invoices HTTP/1.1\r\nConnection: close\r\n\r\n",
        "GET /api/invoices HTTP/1.1\r\nConnection: close\r\n\r\n",
        "GET /api/invoices HTTP/1.0\r\n\r\n",
        "GET /api/invoices HTTP/1.1\r\nHost:\r\nConnection: close\r\n\r\n",
        "GET /api/invoices HTTP/1.1\r\nHost: billing.example, www.example\r\nConnection: close\r\n\r\n",
        "GET /api/invoices HTTP/1.1\r\nHost: billing.example/x\r\nConnection: close\r\n\r\n",
        // nginx serves billing.example for "billing.example.": a host the agent would
        // not match to billing's routes.
        "GET /api/invoices HTTP/1.1\r\nHost: billing.example.\r\nConnection: close\r\n\r\n",
        "GET http://billing.example.:80/api/invoices HTTP/1.1\r\nHost: billing.example.:80\r\nConnection: close\r\n\r\n",
        // HAProxy's own check: an authority other than Host.
        "GET http://billing.example/api/invoices HTTP/1.1\r\nHost: www.example\r\nConnection: close\r\n\r\n",
    ] {
        assert_eq!(rig.send(req).await.0, 400, "{req:?}");
    }
    assert!(
        !rig.backend
            .seen()
            .iter()
            .any(|s| s.vhost().as_deref() == Some("billing.example")),
        "billing was served"
    );

    // A well-formed absolute target with its Host: decided on billing.example, and
    // the backend gets origin-form with that Host.
    let billing = token("billing:read");
    let req = format!(
        "GET http://billing.example/api/invoices?page=2 HTTP/1.1\r\nHost: billing.example\r\nAuthorization: Bearer {billing}\r\nConnection: close\r\n\r\n"
    );
    assert_eq!(rig.send(&req).await.0, 200);
    let s = rig.last_seen();
    assert_eq!(
        s.target, "/api/invoices?page=2",
        "origin-form to the backend"
    );
    assert_eq!(s.all("host"), ["billing.example"]);
    let req = "GET http://billing.example/api/invoices HTTP/1.1\r\nHost: billing.example\r\nConnection: close\r\n\r\n";
    assert_eq!(rig.send(req).await.0, 401, "no token for billing");
    rig.assert_agreement().await;
}

/// Finding 2: 2.6 reads `http://x?/a` as the path `/a` (the agent allowed a public
/// path) while the backend gets an empty path and the query: Express runs its root
/// handler. Now: only origin-form or `http(s)://host[:port]/...` targets.
async fn finding2_request_target(rig: &Rig) {
    for req in [
        "GET http://orders.example?/api/orders/health/&op=export HTTP/1.0\r\n\r\n",
        "GET http://orders.example?/api/orders/health/&op=export HTTP/1.1\r\nHost: orders.example?\r\nConnection: close\r\n\r\n",
        "GET http://orders.example?/api/orders/health/&op=export HTTP/1.1\r\nHost: orders.example\r\nConnection: close\r\n\r\n",
        "GET http://u@orders.example/api/orders/health HTTP/1.1\r\nHost: orders.example\r\nConnection: close\r\n\r\n",
        "GET ftp://orders.example/api/orders/health HTTP/1.1\r\nHost: orders.example\r\nConnection: close\r\n\r\n",
        "OPTIONS * HTTP/1.1\r\nHost: orders.example\r\nConnection: close\r\n\r\n",
        "CONNECT orders.example:443 HTTP/1.1\r\nHost: orders.example:443\r\nConnection: close\r\n\r\n",
    ] {
        assert_eq!(rig.send(req).await.0, 400, "{req:?}");
    }
    // A well-formed absolute target is decided on its own path and reaches the
    // backend as origin-form: the public health check, not the root handler.
    let req = "GET http://orders.example/api/orders/health?op=export HTTP/1.1\r\nHost: orders.example\r\nConnection: close\r\n\r\n";
    assert_eq!(rig.send(req).await.0, 200);
    let s = rig.last_seen();
    assert_eq!(s.target, "/api/orders/health?op=export");
    assert_eq!(s.express_path(), "/api/orders/health");
    // No path at all: 2.6 refuses it, 3.x reads it as "/"; either way the root is
    // decided on as "/" (not public here).
    let req =
        "GET http://orders.example HTTP/1.1\r\nHost: orders.example\r\nConnection: close\r\n\r\n";
    let status = rig.send(req).await.0;
    assert!(matches!(status, 400 | 401), "{status}");
    rig.assert_agreement().await;
}

/// Finding 3: on 2.6 an allowed request with `Upgrade: h2c` reached an h2c-capable
/// backend, whose 101 turned the connection into a tunnel: later requests on it
/// (with client-made X-Auth-*) got no decision. Now: h2c refused, 400.
async fn finding3_h2c_upgrade(rig: &Rig) {
    for upgrade in [
        "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n",
        "Connection: Upgrade\r\nUpgrade: h2c\r\n",
        "Connection: Upgrade\r\nUpgrade: H2C\r\n",
        "Connection: Upgrade\r\nUpgrade: websocket, h2c\r\n",
        "Connection: Upgrade\r\nUpgrade: websocket\r\nUpgrade: h2c\r\n",
        "Connection: HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n",
    ] {
        let mut s = TcpStream::connect(rig.addr()).await.unwrap();
        let req = format!("GET / HTTP/1.1\r\nHost: www.example\r\n{upgrade}\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match tokio::time::timeout(Duration::from_secs(10), s.read(&mut byte)).await {
                Ok(Ok(1)) => head.push(byte[0]),
                _ => break,
            }
        }
        let status = status_of(&String::from_utf8_lossy(&head));
        if status == 101 {
            // Speak HTTP/2 through the tunnel: a request nobody decides on.
            let mut out = backends::PREFACE.to_vec();
            out.extend(backends::frame(4, 0, 0, &[]));
            out.extend(backends::frame(
                1,
                backends::END_HEADERS | backends::END_STREAM,
                3,
                &backends::encode_literals(&[
                    (":method", "GET"),
                    (":scheme", "http"),
                    (":authority", "www.example"),
                    (":path", "/admin"),
                    ("x-auth-subject", "admin"),
                ]),
            ));
            let _ = s.write_all(&out).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        if status != 400 {
            // 3.x removes `Upgrade: h2c` itself while parsing, before any rule sees
            // it, and passes the rest on as plain HTTP/1.1. Fine as long as nothing
            // of the upgrade reaches the backend. (A compliant h2c upgrade carries
            // HTTP2-Settings, which the rules still see: 400.)
            // (With `Upgrade: websocket` beside it, what is left is a WebSocket upgrade.)
            let s = rig.last_seen();
            let h2c = s
                .all("upgrade")
                .iter()
                .any(|u| u.to_ascii_lowercase().contains("h2c"))
                || !s.all("http2-settings").is_empty();
            assert!(
                rig.version >= (3, 0) && !h2c && matches!(status, 101 | 200),
                "{upgrade:?}: {status}, backend got {s:?}"
            );
        }
    }
    rig.assert_agreement().await;
}

/// Finding 4, method and URL overrides: Express's method-override and ASP.NET run
/// the handler X-HTTP-Method-Override (X-HTTP-Method, X-Method-Override) names;
/// IIS URL Rewrite and Symfony route X-Original-URL / X-Rewrite-URL. Now removed.
async fn finding4_override_headers(rig: &Rig) {
    let reader = token("reports:read");
    for name in [
        "X-HTTP-Method-Override",
        "X-HTTP-Method",
        "X-Method-Override",
        "x-http-method-override",
        "X_HTTP_Method_Override",
    ] {
        let req = format!(
            "GET /api/reports HTTP/1.1\r\nHost: www.example\r\nAuthorization: Bearer {reader}\r\n{name}: DELETE\r\nConnection: close\r\n\r\n"
        );
        assert_eq!(rig.send(&req).await.0, 200, "{name}");
        let s = rig.last_seen();
        assert_eq!(s.effective_method(), "GET", "{name}");
        assert!(s.all(name).is_empty(), "{name} reached the backend");
    }
    for name in ["X-Original-URL", "X-Rewrite-URL", "X_Original_URL"] {
        let req = format!(
            "GET / HTTP/1.1\r\nHost: www.example\r\n{name}: /admin\r\nConnection: close\r\n\r\n"
        );
        assert_eq!(rig.send(&req).await.0, 200, "{name}");
        let s = rig.last_seen();
        assert_eq!(s.routed_path(), "/", "{name}");
        assert!(s.all(name).is_empty(), "{name} reached the backend");
    }
    rig.assert_agreement().await;
}

/// Finding 4, forwarding headers: Rails (Rack) takes the host from `Forwarded:
/// host=`, then X-Forwarded-Host; Spring applies X-Forwarded-Prefix. Now the
/// client's are dropped and X-Forwarded-Host and Forwarded are set from the Host
/// the agent decided on.
async fn finding4_forwarding_headers(rig: &Rig) {
    for extra in [
        "X-Forwarded-Host: billing.example\r\n",
        "Forwarded: for=192.0.2.1;host=billing.example;proto=https\r\n",
        "FORWARDED: Host=\"billing.example\"\r\nX-Forwarded-Host: orders.example\r\n",
        "X-Forwarded-Host: billing.example\r\nX-Forwarded-Host: orders.example\r\nX-Forwarded-Prefix: /admin\r\n",
        "X_Forwarded_Host: billing.example\r\n",
    ] {
        let req =
            format!("GET / HTTP/1.1\r\nHost: www.example\r\n{extra}Connection: close\r\n\r\n");
        assert_eq!(rig.send(&req).await.0, 200, "{extra:?}");
        let s = rig.last_seen();
        assert_eq!(s.rails_host().as_deref(), Some("www.example"), "{extra:?}");
        assert_eq!(s.all("x-forwarded-host"), ["www.example"], "{extra:?}");
        assert_eq!(
            s.all("forwarded"),
            ["host=\"www.example\";proto=http"],
            "{extra:?}"
        );
        assert!(s.all("x-forwarded-prefix").is_empty(), "{extra:?}");
        assert!(s.all("x_forwarded_host").is_empty(), "{extra:?}");
    }
    rig.assert_agreement().await;
}

/// Finding 4, Connection: naming X-Auth-Subject in Connection makes the next
/// hop-by-hop-aware proxy (Go's httputil.ReverseProxy) drop the identity headers
/// HAProxy set: the app sees an anonymous caller. Now refused, 400.
async fn finding4_connection_names_identity(rig: &Rig) {
    let reader = token("reports:read");
    for connection in [
        "X-Auth-Subject",
        "keep-alive, X-Auth-Subject",
        "x-auth-scopes",
        "Upgrade, X-Auth-Entity",
        "X_Auth_Subject",
    ] {
        let req = format!(
            "GET /api/reports HTTP/1.1\r\nHost: www.example\r\nAuthorization: Bearer {reader}\r\nConnection: {connection}\r\nConnection: close\r\n\r\n"
        );
        assert_eq!(rig.send(&req).await.0, 400, "{connection}");
    }
    // Other Connection tokens still pass, and the identity arrives.
    let req = format!(
        "GET /api/reports HTTP/1.1\r\nHost: www.example\r\nAuthorization: Bearer {reader}\r\nConnection: close, X-Trace\r\n\r\n"
    );
    assert_eq!(rig.send(&req).await.0, 200);
    assert_eq!(
        rig.last_seen().subject_behind_proxy().as_deref(),
        Some("alice")
    );
    rig.assert_agreement().await;
}

/// Finding 4, trailers: del-header never sees trailer fields, and a backend (or a
/// hop) that merges them into the headers reads the client's X-Auth-*. 3.1+ drops
/// request trailers (chunked bodies pass, without them); 2.6 and 3.0 cannot, so
/// there chunked request bodies are refused (411), over HTTP/1.1 and (bodies
/// without Content-Length) over HTTP/2.
async fn finding4_trailers(rig: &Rig) {
    let drops = rig.version >= (3, 1);
    for extra in ["", "Trailer: X-Auth-Subject\r\nTE: trailers\r\n"] {
        let req = format!(
            "POST / HTTP/1.1\r\nHost: www.example\r\n{extra}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\nX-Auth-Subject: admin\r\nX-Auth-Scopes: admin\r\n\r\n"
        );
        let status = rig.send(&req).await.0;
        if drops {
            assert_eq!(status, 200, "{extra:?}");
            let s = rig.last_seen();
            assert_eq!(s.body, b"hello", "{s:?}");
            assert!(s.trailers.is_empty(), "{s:?}");
        } else {
            assert_eq!(status, 411, "{extra:?}");
        }
    }
    let post = [
        (":method", "POST"),
        (":scheme", "http"),
        (":authority", "www.example"),
        (":path", "/"),
    ];
    let trailers = [("x-auth-subject", "admin")];
    let want = Some(if drops { 200 } else { 411 });
    assert_eq!(
        h2_request(rig.addr(), &post, Some(b"hello"), Some(&trailers)).await,
        want,
        "HTTP/2 body without Content-Length, with trailers"
    );
    if drops {
        let s = rig.last_seen();
        assert_eq!(s.body, b"hello", "{s:?}");
        assert!(s.trailers.is_empty(), "{s:?}");
    }
    assert_eq!(
        h2_request(rig.addr(), &post, Some(b"hello"), None).await,
        want,
        "HTTP/2 body without Content-Length"
    );
    // With Content-Length, HAProxy sends the body with Content-Length: no trailers.
    let mut with_length = post.to_vec();
    with_length.push(("content-length", "5"));
    assert_eq!(
        h2_request(rig.addr(), &with_length, Some(b"hello"), Some(&trailers)).await,
        Some(200)
    );
    let s = rig.last_seen();
    assert_eq!(s.body, b"hello");
    assert!(s.trailers.is_empty(), "{s:?}");
    // No body bytes and no Content-Length, then trailers: 2.6 and 3.0 send them on
    // (chunked, "0" then the trailers) and offer no way to tell or drop them; 3.1+
    // drops them (option http-drop-request-trailers). README says so.
    if rig.version >= (3, 1) {
        assert_eq!(
            h2_request(rig.addr(), &post, None, Some(&trailers)).await,
            Some(200)
        );
        assert!(rig.last_seen().trailers.is_empty());
    }
    for s in rig.backend.seen() {
        let raw = String::from_utf8_lossy(&s.raw).to_ascii_lowercase();
        assert!(!raw.contains("x-auth-subject: admin"), "{raw}");
    }
    rig.assert_agreement().await;
}

/// What keeps working: HTTP/1.1 with identity headers, a body with Content-Length,
/// HTTP/2 with :authority (reqwest and a raw client), WebSocket (decided once, on
/// the upgrade request).
async fn controls(rig: &Rig) {
    let reader = token("reports:read");
    let req = format!(
        "GET /api/reports HTTP/1.1\r\nHost: www.example\r\nAuthorization: Bearer {reader}\r\nX-Auth-Subject: mallory\r\nX_Auth_Subject: mallory\r\nConnection: close\r\n\r\n"
    );
    assert_eq!(rig.send(&req).await.0, 200);
    let s = rig.last_seen();
    assert_eq!(s.all("x-auth-subject"), ["alice"]);
    assert!(s.all("x_auth_subject").is_empty());
    assert_eq!(s.all("x-auth-scopes"), ["reports:read"]);
    assert_eq!(s.target, "/api/reports");

    let req = "POST / HTTP/1.1\r\nHost: www.example\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";
    assert_eq!(rig.send(req).await.0, 200);
    assert_eq!(rig.last_seen().body, b"hello");

    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let r = h2
        .get(rig.hap.url("/api/reports?x=1"))
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    let s = rig.last_seen();
    assert_eq!(s.all("host"), [rig.addr()], ":authority is the Host");
    assert_eq!(s.target, "/api/reports?x=1");
    assert_eq!(s.all("x-auth-subject"), ["alice"]);
    let get_root = [
        (":method", "GET"),
        (":scheme", "https"),
        (":authority", "www.example"),
        (":path", "/"),
    ];
    assert_eq!(
        h2_request(rig.addr(), &get_root, None, None).await,
        Some(200)
    );
    assert_eq!(rig.last_seen().all("host"), ["www.example"]);
    let no_authority = [(":method", "GET"), (":scheme", "http"), (":path", "/")];
    assert_eq!(
        h2_request(rig.addr(), &no_authority, None, None).await,
        Some(400),
        "HTTP/2 without :authority or Host"
    );

    // WebSocket: the upgrade request is decided; the tunnel after 101 is not.
    let ws = |auth: &str| {
        format!(
            "GET /ws HTTP/1.1\r\nHost: www.example\r\n{auth}Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
    };
    let mut s = TcpStream::connect(rig.addr()).await.unwrap();
    s.write_all(ws(&format!("Authorization: Bearer {reader}\r\n")).as_bytes())
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    while !got.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .expect("101 within 10 s")
            .unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&got).into_owned();
    assert_eq!(status_of(&head), 101, "{head}");
    assert!(
        head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "Sec-WebSocket-Accept: {head}"
    );
    assert_eq!(rig.last_seen().all("x-auth-subject"), ["alice"]);
    s.write_all(b"\x81\x04ping").await.unwrap();
    let mut echo = [0u8; 6];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut echo))
        .await
        .expect("echo within 10 s")
        .unwrap();
    assert_eq!(&echo, b"\x81\x04ping");
    drop(s);
    let no_token = ws("").replace("Connection: Upgrade", "Connection: Upgrade, close");
    assert_eq!(
        rig.send(&no_token).await.0,
        401,
        "WebSocket without a token"
    );
    rig.assert_agreement().await;
}
