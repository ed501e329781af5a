//! Issue 13, the sign-in story in a real browser, end to end: Debian's headless
//! Chromium (WebDriver, tests/common/browser.rs) → HAProxy 2.6 or 3.x with the shipped
//! files → the stagedoor binary with `[sso]` (keys and client secret from the
//! environment) → the real oidc-provider, whose login form the browser fills in, and a
//! backend page showing what reached it (tests/common/pages.rs).
//!
//! Hosts `a.stagedoor.test` and `b.stagedoor.test` share `cookie_domain =
//! "stagedoor.test"`, over plain http (`cookie_secure = false`, `external_scheme =
//! "http"`; browser.rs says why). One story per HAProxy version, in this order:
//! first visit (with a query) → single sign-on on host B → API call gets 401 →
//! logout (ours and the provider's) → denial (bob, no access: the 403 page) →
//! tampered, foreign-key and expired cookies refused → key rotation (restart with
//! "new,old": the old cookie opens, a new sign-in seals with the new key).

#[path = "common/browser.rs"]
mod browser;
mod common;
#[path = "common/pages.rs"]
mod pages;

use std::path::{Path, PathBuf};
use std::time::Duration;

use browser::{Browser, BrowserCookie};
use common::haproxy::{Haproxy, free_port, repo, require_bin, require_haproxy3};
use common::http::request;
use common::peers::{Agent, Op, require_peer};
use pages::Pages;
use stagedoor::sso::{Secret, Session, SessionLookup, Sso, SsoConfig};

/// The agent's first sealing key; [`NEW_KEY`] comes first after the rotation.
const OLD_KEY: &str = "1f1e1d1c1b1a191817161514131211100f0e0d0c0b0a09080706050403020100";
const NEW_KEY: &str = "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf";
/// Another deployment's key.
const FOREIGN_KEY: &str = "5555555555555555555555555555555555555555555555555555555555555555";
const SESSION_COOKIE: &str = "stagedoor_session";
const SECRET: &str = "stagedoor-secret";

/// Under CI=true the tests below are not left out.
#[test]
fn peer_tests_run_under_ci() {
    common::haproxy::assert_peer_tests_run_under_ci();
}

/// Two teams; the web app's pages are for team-a, `/public` for anyone.
const CATALOG: &str = r#"
apiVersion: backstage.io/v1alpha1
kind: Group
metadata:
  name: team-a
  annotations:
    stagedoor.io/idp-groups: "team-a"
spec:
  type: team
  children: []
---
apiVersion: backstage.io/v1alpha1
kind: Group
metadata:
  name: team-b
  annotations:
    stagedoor.io/idp-groups: "team-b"
spec:
  type: team
  children: []
---
apiVersion: backstage.io/v1alpha1
kind: Component
metadata:
  name: web-app
  annotations:
    stagedoor.io/routes: |
      GET,HEAD  /app     authenticated @team-a
      GET       /public  public
spec:
  type: website
  lifecycle: production
  owner: team-a
"#;

struct Ports {
    agent: u16,
    admin: u16,
    sign_in: u16,
    frontend: u16,
}

/// Everything of one story: the peers, the browser and the backend.
struct Story {
    ports: Ports,
    op: Op,
    agent: Agent,
    /// The decision logs of agents stopped before `agent`.
    old_logs: Vec<String>,
    config: PathBuf,
    hap: Haproxy,
    pages: Pages,
    browser: Browser,
    _dir: tempfile::TempDir,
}

fn sso_section(ports: &Ports, issuer: &str) -> String {
    format!(
        r#"
listen = "127.0.0.1:{sign_in}"
issuer = "{issuer}"
client_id = "stagedoor"
client_secret_env = "BT_SSO_SECRET"
keys_env = "BT_SSO_KEYS"
scopes = ["openid", "email", "groups"]
external_scheme = "http"
cookie_secure = false
cookie_domain = "stagedoor.test"
post_logout_redirect_uri = "http://a.stagedoor.test:{fe}/public/bye"
"#,
        sign_in = ports.sign_in,
        fe = ports.frontend,
    )
}

fn write_config(dir: &Path, ports: &Ports, issuer: &str) -> PathBuf {
    let catalog = dir.join("catalog.yaml");
    std::fs::write(&catalog, CATALOG).unwrap();
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
issuer = "{issuer}"
audiences = ["urn:test:api"]
discovery = true
[catalog]
source = "file"
files = ["{catalog}"]
[sso]
{sso}
"#,
        agent = ports.agent,
        admin = ports.admin,
        catalog = catalog.display(),
        sso = sso_section(ports, issuer),
    );
    let path = dir.join("stagedoor.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn key(hex: &str) -> [u8; 32] {
    let bytes: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    bytes.try_into().unwrap()
}

/// The agent binary with sealing keys `keys` (first seals), ready to decide.
async fn start_agent(config: &Path, ports: &Ports, keys: &str) -> Agent {
    let agent = Agent::start_with_env(config, &[("BT_SSO_KEYS", keys), ("BT_SSO_SECRET", SECRET)]);
    let admin = format!("127.0.0.1:{}", ports.admin);
    for _ in 0..300 {
        if tokio::net::TcpStream::connect(&admin).await.is_ok()
            && request(&admin, "GET", "/readyz", &[]).await.status == 200
        {
            return agent;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("agent not ready:\n{}", agent.log_text());
}

impl Story {
    async fn start(hap_bin: &Path) -> Story {
        require_peer("oidc");
        let ports = Ports {
            agent: free_port(),
            admin: free_port(),
            sign_in: free_port(),
            frontend: free_port(),
        };
        let callbacks = ["a", "b"].map(|h| {
            format!(
                "http://{h}.stagedoor.test:{}/.stagedoor/callback",
                ports.frontend
            )
        });
        let op = Op::start_with_env(
            free_port(),
            &[
                ("SSO_REDIRECT_URIS", callbacks.join(",")),
                ("SSO_CLIENT_SECRET", SECRET.to_owned()),
                (
                    "SSO_POST_LOGOUT_URIS",
                    format!("http://a.stagedoor.test:{}/public/bye", ports.frontend),
                ),
            ],
        )
        .await;
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(dir.path(), &ports, &op.issuer);
        let agent = start_agent(&config, &ports, OLD_KEY).await;
        let pages = Pages::start().await;
        let hap = Haproxy::start(
            hap_bin,
            &repo().join("haproxy/haproxy.cfg"),
            ports.frontend,
            &[
                ("STAGEDOOR_AGENT", format!("127.0.0.1:{}", ports.agent)),
                ("STAGEDOOR_BACKEND", pages.addr.to_string()),
                ("STAGEDOOR_SIGN_IN", format!("127.0.0.1:{}", ports.sign_in)),
            ],
        )
        .await;
        let browser = Browser::start().await;
        Story {
            ports,
            op,
            agent,
            old_logs: Vec::new(),
            config,
            hap,
            pages,
            browser,
            _dir: dir,
        }
    }

    fn url(&self, host: &str, path: &str) -> String {
        format!("http://{host}.stagedoor.test:{}{path}", self.ports.frontend)
    }

    /// The agent's sealing as configured, with only `keys`.
    fn sso(&self, keys: &[&str]) -> Sso {
        let cfg: SsoConfig = toml::from_str(&sso_section(&self.ports, &self.op.issuer)).unwrap();
        let keys: Vec<[u8; 32]> = keys.iter().map(|k| key(k)).collect();
        Sso::from_parts(cfg, &keys, Secret::new("unused".into())).unwrap()
    }

    async fn session_cookie(&self) -> Option<BrowserCookie> {
        let jar = self.browser.all_cookies().await;
        jar.into_iter().find(|c| c.name == SESSION_COOKIE)
    }

    /// Puts a session cookie in the browser as the agent's Set-Cookie would.
    async fn set_session(&self, value: &str) {
        let a = self.url("a", "/");
        let b = &self.browser;
        b.set_cookie(&a, SESSION_COOKIE, value, Some("stagedoor.test"))
            .await;
    }

    /// Asserts the browser shows the provider's login form (sent to sign in).
    async fn assert_at_login_form(&self, what: &str) {
        let interaction = format!("{}/interaction/", self.op.issuer);
        let url = self
            .browser
            .wait_for_url(&format!("the provider's login page ({what})"), |u| {
                u.starts_with(&interaction)
            })
            .await;
        assert!(
            self.browser.source().await.contains("name=\"login\""),
            "{what}: no login form at {url}"
        );
    }

    /// On the provider's login form: types `user` (any password), submits, and waits
    /// to land on `back`.
    async fn sign_in_as(&self, user: &str, back: &str) {
        self.assert_at_login_form(user).await;
        self.browser.fill("input[name=login]", user).await;
        self.browser
            .fill("input[name=password]", "any password")
            .await;
        self.browser.click("button.login-submit").await;
        self.browser
            .wait_for_url(&format!("{back} after signing in"), |u| u == back)
            .await;
    }

    /// The backend's echo page shows `sub` as the caller and no stagedoor cookie.
    async fn assert_backend_saw(&self, sub: &str, cookie: &str) {
        assert_eq!(self.browser.text("#x-auth-subject").await, sub);
        let seen = self.browser.text("#cookie").await;
        // A failure shows the cookie names only: no session value in test output.
        let names: Vec<&str> = seen
            .split("; ")
            .map(|c| c.split('=').next().unwrap())
            .collect();
        assert!(seen == cookie, "the backend got the cookies {names:?}");
    }

    /// Every decision reason logged so far, by every agent of this story.
    fn reasons(&self) -> Vec<String> {
        let mut text = self.old_logs.clone();
        text.push(self.agent.log_text());
        text.iter()
            .flat_map(|t| t.lines())
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["event"] == "decision")
            .filter_map(|v| v["reason"].as_str().map(str::to_owned))
            .collect()
    }
}

async fn story(hap_bin: &Path) {
    let s = Story::start(hap_bin).await;
    let first = first_visit_and_single_sign_on(&s).await;
    api_calls_get_401(&s).await;
    logout_then_denial(&s).await;
    refused_cookies(&s, &first).await;
    let s = rotation(s).await;

    // Through it all: no stagedoor cookie reached the backend, every page under /app
    // it served had a caller, and no cookie value was logged.
    let seen = s.pages.seen();
    assert!(seen.len() >= 5, "{seen:?}");
    for r in &seen {
        let cookie = r.all("cookie").join("; ");
        assert!(!cookie.contains("stagedoor"), "{r:?}");
        if r.target.starts_with("/app") {
            assert_eq!(r.header("x-auth-subject"), Some("alice"), "{r:?}");
        }
    }
    let logs = s.old_logs.join("\n") + &s.agent.log_text() + &s.hap.log_text();
    assert!(!logs.contains(&first), "a session cookie value was logged");
    s.browser.close().await;
}

/// First visit on host A with a query: to the provider, signed in, back on the
/// original URL; then host B without typing anything. Returns the session cookie.
async fn first_visit_and_single_sign_on(s: &Story) -> String {
    let page = s.url("a", "/app/page?x=1&y=a%20b");
    // A cookie of the app's own: it must still reach the backend.
    s.browser
        .set_cookie(&s.url("a", "/"), "theme", "dark", None)
        .await;
    s.browser.goto(&page).await;
    s.sign_in_as("alice", &page).await;
    assert_eq!(s.browser.text("#target").await, "/app/page?x=1&y=a%20b");
    s.assert_backend_saw("alice", "theme=dark").await;
    let cookie = s.session_cookie().await.expect("a session cookie");
    assert_eq!(cookie.domain, ".stagedoor.test", "{cookie:?}");
    assert!(cookie.http_only && !cookie.secure, "{cookie:?}");
    assert_eq!(cookie.same_site.as_deref(), Some("Lax"), "{cookie:?}");
    assert!(
        !s.browser
            .all_cookies()
            .await
            .iter()
            .any(|c| c.name == "stagedoor_state"),
        "the state cookie is cleared after the callback"
    );

    // Host B, same cookie domain: straight in, on the same session (no new sign-in
    // would leave this cookie as it was).
    let on_b = s.url("b", "/app/other?z=9");
    s.browser.goto(&on_b).await;
    assert_eq!(s.browser.url().await, on_b);
    s.assert_backend_saw("alice", "-").await;
    assert_eq!(s.session_cookie().await.unwrap().value, cookie.value);
    cookie.value
}

/// Not a navigation: an API call gets 401 with WWW-Authenticate, never a redirect.
async fn api_calls_get_401(s: &Story) {
    let host = format!("a.stagedoor.test:{}", s.ports.frontend);
    let r = request(
        &s.hap.frontend,
        "GET",
        "/app/page?x=1",
        &[("Host", &host), ("Accept", "application/json")],
    )
    .await;
    assert_eq!(r.status, 401, "{r:?}");
    assert!(r.header("www-authenticate").is_some(), "{r:?}");
    assert!(r.header("location").is_none(), "{r:?}");
    // The same URL as a navigation is sent to sign in: the difference is the request.
    let r = request(
        &s.hap.frontend,
        "GET",
        "/app/page?x=1",
        &[("Host", &host), ("Accept", "text/html")],
    )
    .await;
    assert_eq!(r.status, 302, "{r:?}");
    assert!(
        r.header("location")
            .is_some_and(|l| l.starts_with("/.stagedoor/login?rd="))
    );
}

/// Logout clears our cookie and ends the provider's session (RP-initiated, confirmed
/// on its page); the next visit is sent to sign in, where bob, who may not use the
/// app, signs in and gets the 403 page.
async fn logout_then_denial(s: &Story) {
    s.browser.goto(&s.url("a", "/.stagedoor/logout")).await;
    let end = format!("{}/session/end", s.op.issuer);
    let url = s.browser.url().await;
    assert!(url.starts_with(&end), "logout goes to the provider: {url}");
    assert!(s.session_cookie().await.is_none(), "session cookie cleared");
    s.browser.click("button[name=logout][value=yes]").await;
    let bye = s.url("a", "/public/bye");
    s.browser
        .wait_for_url("the post-logout page", |u| u == bye)
        .await;
    s.assert_backend_saw("-", "theme=dark").await;

    let page = s.url("a", "/app/page?after=logout");
    s.browser.goto(&page).await;
    let before = s.pages.seen().len();
    s.sign_in_as("bob", &page).await;
    let text = s.browser.body_text().await;
    assert!(text.contains("Access denied"), "{text}");
    assert!(text.contains("Reason: not_member"), "{text}");
    assert!(
        text.contains("Service: component:default/web-app"),
        "{text}"
    );
    assert_eq!(
        s.pages.seen().len(),
        before,
        "bob's request reached the backend"
    );
    assert!(s.session_cookie().await.is_some(), "bob is signed in");
    // Forget everything, the provider's session too: from here a refused cookie
    // leaves the browser on the provider's login form.
    s.browser.clear_cookies().await;
}

/// A tampered cookie, one sealed with another deployment's key and an expired one
/// are each refused (to sign in again); the untampered cookie still opens.
async fn refused_cookies(s: &Story, first: &str) {
    let mut bytes = first.as_bytes().to_vec();
    let i = bytes.len() / 2;
    bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(bytes).unwrap();
    let now = stagedoor::clock::unix_now();
    let alice = |iat: i64, exp: i64| Session {
        iss: s.op.issuer.clone(),
        sub: "alice".into(),
        email: None,
        groups: vec!["team-a".into()],
        scopes: vec!["openid".into()],
        sid: "YnJvd3Nlci1zc28tdGVzdA".into(),
        auth_time: Some(iat),
        iat,
        exp,
    };
    let foreign = s
        .sso(&[FOREIGN_KEY])
        .seal_session(&mut alice(now, now + 3600), None)
        .unwrap();
    let expired = s
        .sso(&[OLD_KEY])
        .seal_session(&mut alice(now - 7200, now - 60), None)
        .unwrap();
    let page = s.url("a", "/app/page?q=refused");
    let seen = s.pages.seen().len();
    for (what, value) in [
        ("tampered", &tampered),
        ("foreign key", &foreign),
        ("expired", &expired),
    ] {
        s.set_session(value).await;
        s.browser.goto(&page).await;
        s.assert_at_login_form(what).await;
    }
    assert_eq!(
        s.pages.seen().len(),
        seen,
        "a refused cookie reached the backend"
    );
    // The decision log is written off the request path: wait for the lines.
    let wanted = ["session_invalid", "session_expired"];
    let mut reasons = s.reasons();
    for _ in 0..500 {
        if wanted.iter().all(|w| reasons.iter().any(|r| r == w)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        reasons = s.reasons();
    }
    for want in wanted {
        assert!(
            reasons.iter().any(|r| r == want),
            "{want} not in {reasons:?}"
        );
    }
    // The same browser with the untampered cookie: in.
    s.set_session(first).await;
    s.browser.goto(&page).await;
    assert_eq!(s.browser.url().await, page);
    s.assert_backend_saw("alice", "-").await;
}

/// Restart the agent with keys "new,old": the cookie sealed with the old key still
/// opens; a new sign-in's cookie is sealed with the new key.
async fn rotation(mut s: Story) -> Story {
    // A cookie from a real sign-in, under the old key.
    s.browser.delete_cookie(SESSION_COOKIE).await;
    let page = s.url("a", "/app/rotation");
    s.browser.goto(&page).await;
    s.sign_in_as("alice", &page).await;
    let old = s.session_cookie().await.unwrap().value;
    assert!(matches!(
        s.sso(&[OLD_KEY]).session_from_cookie_header(
            &format!("{SESSION_COOKIE}={old}"),
            stagedoor::clock::unix_now()
        ),
        SessionLookup::Valid(_)
    ));

    assert!(s.agent.terminate().await, "the agent stops cleanly");
    s.old_logs.push(s.agent.log_text());
    s.agent = start_agent(&s.config, &s.ports, &format!("{NEW_KEY},{OLD_KEY}")).await;
    s.browser.goto(&page).await;
    assert_eq!(s.browser.url().await, page, "the old cookie opens");
    s.assert_backend_saw("alice", "-").await;
    assert_eq!(s.session_cookie().await.unwrap().value, old);

    // A new sign-in (the provider still knows alice: no typing) seals with the new key.
    s.browser.delete_cookie(SESSION_COOKIE).await;
    s.browser.goto(&page).await;
    s.browser
        .wait_for_url("back after a sign-in without typing", |u| u == page)
        .await;
    s.assert_backend_saw("alice", "-").await;
    let new = s
        .session_cookie()
        .await
        .expect("a new session cookie")
        .value;
    assert_ne!(new, old);
    let header = format!("{SESSION_COOKIE}={new}");
    let now = stagedoor::clock::unix_now();
    match s.sso(&[NEW_KEY]).session_from_cookie_header(&header, now) {
        SessionLookup::Valid(id) => assert_eq!(id.sub.as_deref(), Some("alice")),
        other => panic!("the new cookie does not open with the new key: {other:?}"),
    }
    assert!(
        matches!(
            s.sso(&[OLD_KEY]).session_from_cookie_header(&header, now),
            SessionLookup::Invalid(_)
        ),
        "the new cookie opens with the old key"
    );
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium, HAProxy and oidc-provider: run tests/run.sh"]
async fn haproxy_2_6_sign_in_story() {
    story(&require_bin("haproxy")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium, HAProxy 3.x and oidc-provider: run tests/run.sh"]
async fn haproxy_3_sign_in_story() {
    story(&require_haproxy3()).await;
}
