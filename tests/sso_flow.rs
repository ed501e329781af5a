//! Browser sign-in end to end (issue 13), without HAProxy: the real `oidc-provider`
//! (tests/peers/oidc, with its authorization-code client and dev login form) and the
//! agent's `/.stagedoor/` listener started in-process. reqwest plays the browser:
//! cookies kept by hand, redirects followed by hand.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use stagedoor::config::Config;
use stagedoor::sso::flow::{Flow, PendingSignIn, form, query_param};
use stagedoor::sso::{Secret, Session, Sso};
use tokio_util::sync::CancellationToken;

use common::haproxy::free_port;
use common::peers::{Op, require_peer};

const KEY_HEX: &str = "5b8c0f3e1a2d4c6b8e9f0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f";

fn now() -> i64 {
    stagedoor::clock::unix_now()
}

/// Under CI=true the test below is not left out.
#[test]
fn peer_tests_run_under_ci() {
    common::haproxy::assert_peer_tests_run_under_ci();
}

struct Env {
    op: Op,
    /// The main listener: groups the policy names are `team-*` and one of many's.
    base: String,
    /// A second listener over the same provider whose group filter keeps everything.
    strict: String,
    flow: Arc<Flow>,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
    stop: CancellationToken,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn listener(
    cfg: &Config,
    verifier: &stagedoor::token::Verifier,
    port: u16,
    keep: Arc<dyn Fn(&str) -> bool + Send + Sync>,
    stop: &CancellationToken,
) -> Arc<Flow> {
    let sso = Sso::new(cfg.sso.as_ref().unwrap(), &cfg.base_dir).unwrap();
    let client = stagedoor::token::fetch::http_client().unwrap();
    let mut flow = Flow::new(Arc::new(sso), verifier.clone(), client, cfg);
    flow.group_filter = Some(keep);
    let flow = Arc::new(flow);
    let l = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(stagedoor::sso::listener::serve(
        l,
        flow.clone(),
        stop.clone(),
    ));
    flow
}

async fn setup() -> Env {
    require_peer("oidc");
    let (op_port, port, strict_port) = (free_port(), free_port(), free_port());
    let base = format!("http://127.0.0.1:{port}");
    let strict = format!("http://127.0.0.1:{strict_port}");
    let op = Op::start_with_env(
        op_port,
        &[
            (
                "SSO_REDIRECT_URIS",
                format!("{base}/.stagedoor/callback,{strict}/.stagedoor/callback"),
            ),
            ("SSO_POST_LOGOUT_URIS", format!("{base}/bye")),
        ],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), "stagedoor-secret\n").unwrap();
    std::fs::write(dir.path().join("keys"), format!("{KEY_HEX}\n")).unwrap();
    let text = format!(
        r#"
[[issuers]]
issuer = "{iss}"
audiences = ["urn:test:api"]
discovery = true

[sso]
listen = "127.0.0.1:{port}"
issuer = "{iss}"
client_id = "stagedoor"
client_secret_file = "secret"
keys_file = "keys"
scopes = ["openid", "email", "groups"]
external_scheme = "http"
cookie_secure = false
post_logout_redirect_uri = "{base}/bye"
"#,
        iss = op.issuer
    );
    let path = dir.path().join("stagedoor.toml");
    std::fs::write(&path, text).unwrap();
    // No catalog here: only the [sso] and [[issuers]] sections are checked.
    let cfg = Config::parse_file(&path).unwrap();
    let errors = cfg
        .sso
        .as_ref()
        .unwrap()
        .validate(&cfg.base_dir, &cfg.issuers);
    assert!(errors.is_empty(), "{errors:?}");
    let verifier = stagedoor::lifecycle::start_verifier(&cfg).unwrap();
    for _ in 0..200 {
        if verifier.ready() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(verifier.ready(), "verifier never got the provider's keys");
    let stop = CancellationToken::new();
    let keep = Arc::new(|g: &str| g.starts_with("team-") || g.ends_with("-0007"));
    let flow = listener(&cfg, &verifier, port, keep, &stop).await;
    listener(
        &cfg,
        &verifier,
        strict_port,
        Arc::new(|_: &str| true),
        &stop,
    )
    .await;
    Env {
        op,
        base,
        strict,
        flow,
        http: stagedoor::http::client(Duration::from_secs(3), Duration::from_secs(10)).unwrap(),
        _dir: dir,
        stop,
    }
}

/// `name=value` of each Set-Cookie.
fn set_cookies(r: &reqwest::Response) -> Vec<(String, String, String)> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|line| {
            let (nv, _) = line.split_once(';').unwrap_or((line, ""));
            let (n, v) = nv.split_once('=')?;
            Some((n.to_owned(), v.to_owned(), line.to_owned()))
        })
        .collect()
}

fn location(r: &reqwest::Response) -> String {
    r.headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// One browser: a cookie jar for the provider (its cookies, all sent) and one for stagedoor.
#[derive(Default)]
struct Browser {
    op: HashMap<String, String>,
    sd: HashMap<String, String>,
}

fn header(jar: &HashMap<String, String>) -> String {
    jar.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("; ")
}

impl Browser {
    async fn get(&mut self, env: &Env, url: &str) -> reqwest::Response {
        let ours = url.starts_with(&env.base) || url.starts_with(&env.strict);
        let jar = if ours { &self.sd } else { &self.op };
        let mut req = env.http.get(url);
        if !jar.is_empty() {
            req = req.header("cookie", header(jar));
        }
        let r = req.send().await.unwrap();
        self.keep(ours, &r);
        r
    }

    fn keep(&mut self, ours: bool, r: &reqwest::Response) {
        let jar = if ours { &mut self.sd } else { &mut self.op };
        for (n, v, line) in set_cookies(r) {
            if v.is_empty()
                || line.contains("Max-Age=0")
                || line.contains("expires=Thu, 01 Jan 1970")
            {
                jar.remove(&n);
            } else {
                jar.insert(n, v);
            }
        }
    }

    /// /.stagedoor/login?rd=… on `site`, then the provider up to the redirect back to
    /// our callback (not followed): the callback URL.
    async fn sign_in_until_callback(
        &mut self,
        env: &Env,
        site: &str,
        rd: &str,
        user: &str,
    ) -> String {
        let r = self
            .get(
                env,
                &format!("{site}/.stagedoor/login?{}", form(&[("rd", rd)])),
            )
            .await;
        assert_eq!(r.status(), 302, "login");
        let mut url = location(&r);
        assert!(url.starts_with(&env.op.issuer), "{url}");
        assert!(
            url.contains("code_challenge_method=S256") && url.contains("nonce="),
            "{url}"
        );
        for _ in 0..10 {
            if url.starts_with(site) {
                return url;
            }
            let r = self.get(env, &url).await;
            if r.status() == 200 {
                // The provider's login form: post it.
                let page = r.text().await.unwrap();
                let action = page
                    .split("action=\"")
                    .nth(1)
                    .unwrap()
                    .split('"')
                    .next()
                    .unwrap()
                    .to_owned();
                let action = if action.starts_with('/') {
                    format!("{}{action}", env.op.issuer)
                } else {
                    action
                };
                let r = env
                    .http
                    .post(&action)
                    .header("cookie", header(&self.op))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(form(&[
                        ("prompt", "login"),
                        ("login", user),
                        ("password", "x"),
                    ]))
                    .send()
                    .await
                    .unwrap();
                self.keep(false, &r);
                assert!(r.status().is_redirection(), "login post: {}", r.status());
                url = location(&r);
            } else {
                assert!(r.status().is_redirection(), "{url}: {}", r.status());
                url = location(&r);
            }
            if url.starts_with('/') {
                url = format!("{}{url}", env.op.issuer);
            }
        }
        panic!("never came back to {site}: {url}");
    }

    async fn whoami(&mut self, env: &Env, site: &str) -> (u16, Value) {
        let r = self.get(env, &format!("{site}/.stagedoor/whoami")).await;
        let status = r.status().as_u16();
        (
            status,
            serde_json::from_slice(&r.bytes().await.unwrap()).unwrap(),
        )
    }
}

#[tokio::test]
#[ignore = "needs oidc-provider: run tests/run.sh"]
async fn sign_in_lands_on_the_original_url_and_opens_to_the_identity() {
    let env = setup().await;
    let mut b = Browser::default();
    let rd = format!("{}/app/page?x=1&y=a%20b#frag", env.base);
    let cb = b
        .sign_in_until_callback(&env, &env.base, &rd, "alice")
        .await;
    assert!(b.sd.contains_key("stagedoor_state"));
    let r = b.get(&env, &cb).await;
    assert_eq!(r.status(), 302, "{}", r.text().await.unwrap());
    assert_eq!(location(&r), rd, "lands on the original URL, query intact");
    assert!(
        !b.sd.contains_key("stagedoor_state"),
        "state cookie cleared"
    );
    let line = set_cookies(&r)
        .into_iter()
        .find(|(n, _, _)| n == "stagedoor_session")
        .unwrap()
        .2;
    assert!(
        line.contains("HttpOnly") && line.contains("SameSite=Lax") && line.contains("Path=/"),
        "{line}"
    );
    assert!(line.contains("Max-Age=28800"), "{line}");
    let (status, me) = b.whoami(&env, &env.base).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["sub"], "alice");
    assert_eq!(me["email"], "alice@example.com");
    assert_eq!(me["groups"], serde_json::json!(["team-a"]));
    assert_eq!(me["iss"], env.op.issuer.as_str());
    assert!(me["auth_time"].as_i64().is_some());
    // The session the agent will see per request.
    let cookie = format!("other=1; stagedoor_session={}", b.sd["stagedoor_session"]);
    match env.flow.sso.session_from_cookie_header(&cookie, now()) {
        stagedoor::sso::SessionLookup::Valid(id) => assert_eq!(id.sub.as_deref(), Some("alice")),
        other => panic!("{other:?}"),
    }
    let text = format!("{me}");
    assert!(
        !text.contains(&b.sd["stagedoor_session"]) && !text.contains("v1."),
        "no cookie value in whoami"
    );

    // Replay of the same callback: the state cookie is gone.
    let r = b.get(&env, &cb).await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("state_missing"));

    // groups from userinfo when the ID token has none (carol).
    let mut c = Browser::default();
    let cb = c
        .sign_in_until_callback(&env, &env.base, "/", "carol")
        .await;
    let r = c.get(&env, &cb).await;
    assert_eq!(r.status(), 302, "{}", r.text().await.unwrap());
    assert_eq!(location(&r), format!("{}/", env.base));
    let (_, me) = c.whoami(&env, &env.base).await;
    assert_eq!(me["sub"], "carol");
    assert_eq!(me["groups"], serde_json::json!(["team-a"]));

    // Logout: cleared, and off to the provider's end_session.
    let r = b
        .get(&env, &format!("{}/.stagedoor/logout", env.base))
        .await;
    assert_eq!(r.status(), 302);
    let to = location(&r);
    assert!(
        to.starts_with(&format!("{}/session/end?", env.op.issuer)),
        "{to}"
    );
    assert_eq!(
        query_param(to.split_once('?').unwrap().1, "client_id").as_deref(),
        Some("stagedoor")
    );
    assert_eq!(
        query_param(to.split_once('?').unwrap().1, "post_logout_redirect_uri"),
        Some(format!("{}/bye", env.base))
    );
    assert!(!b.sd.contains_key("stagedoor_session"));
    let (status, me) = b.whoami(&env, &env.base).await;
    assert_eq!((status, me["error"].as_str()), (401, Some("no_session")));
    // The provider accepts the logout request (shows its confirmation page).
    let r = b.get(&env, &to).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
#[ignore = "needs oidc-provider: run tests/run.sh"]
async fn state_pkce_and_cookie_attacks_fail() {
    let env = setup().await;
    // State mismatch: the provider's answer with another state.
    let mut b = Browser::default();
    let cb = b
        .sign_in_until_callback(&env, &env.base, "/", "alice")
        .await;
    let (path, query) = cb.split_once('?').unwrap();
    let state = query_param(query, "state").unwrap();
    let forged = format!("{path}?{}", query.replace(&state, "AAAA"));
    let r = b.get(&env, &forged).await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("state_mismatch"));

    // A tampered state cookie (e.g. to swap the PKCE verifier) does not open.
    let mut b = Browser::default();
    let cb = b
        .sign_in_until_callback(&env, &env.base, "/", "alice")
        .await;
    let v = b.sd.get_mut("stagedoor_state").unwrap();
    let last = v.pop().unwrap();
    v.push(if last == 'A' { 'B' } else { 'A' });
    let r = b.get(&env, &cb).await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("state_invalid"));

    // A missing state cookie.
    let mut b = Browser::default();
    let cb = b
        .sign_in_until_callback(&env, &env.base, "/", "alice")
        .await;
    b.sd.clear();
    let r = b.get(&env, &cb).await;
    assert!(r.text().await.unwrap().contains("state_missing"));

    // A well-sealed state cookie with the wrong PKCE verifier: the provider refuses the
    // code (PKCE required), the sign-in fails.
    let mut b = Browser::default();
    let cb = b
        .sign_in_until_callback(&env, &env.base, "/", "alice")
        .await;
    let state = query_param(cb.split_once('?').unwrap().1, "state").unwrap();
    let real: PendingSignIn = env
        .flow
        .pending(&header(&b.sd), Some(&state), now())
        .unwrap();
    let wrong = PendingSignIn {
        verifier: "x".repeat(43),
        ..real.clone()
    };
    b.sd.insert(
        "stagedoor_state".into(),
        env.flow.seal_pending(&wrong).unwrap(),
    );
    let r = b.get(&env, &cb).await;
    assert_eq!(r.status(), 502);
    assert!(r.text().await.unwrap().contains("code_exchange_failed"));
    // A failed PKCE check does not spend the code at the provider: the right verifier
    // still signs in, once; the same code again (replay, state cookie kept) fails.
    for want in [302, 502] {
        b.sd.insert(
            "stagedoor_state".into(),
            env.flow.seal_pending(&real).unwrap(),
        );
        let r = b.get(&env, &cb).await;
        assert_eq!(r.status(), want);
    }

    // A session cookie from another deployment's key, and one over the size limit.
    let other = Sso::from_parts(
        env.flow.sso.cfg.clone(),
        &[[9; 32]],
        Secret::new("s".into()),
    )
    .unwrap();
    let t = now();
    let mut s = Session {
        iss: env.op.issuer.clone(),
        sub: "alice".into(),
        email: None,
        groups: vec!["team-a".into()],
        scopes: vec![],
        sid: "x".into(),
        auth_time: None,
        iat: t,
        exp: t + 600,
    };
    let foreign = other.seal_session(&mut s, None).unwrap();
    let ours = env.flow.sso.seal_session(&mut s, None).unwrap();
    for (value, want) in [
        (foreign, 401),
        (format!("v1.{}", "A".repeat(4000)), 401),
        (ours, 200),
    ] {
        let mut b = Browser::default();
        b.sd.insert("stagedoor_session".into(), value);
        assert_eq!(b.whoami(&env, &env.base).await.0, want);
    }
}

#[tokio::test]
#[ignore = "needs oidc-provider: run tests/run.sh"]
async fn open_redirects_through_login_are_refused() {
    let env = setup().await;
    let host = env.base.trim_start_matches("http://").to_owned();
    let attacks = [
        "https://evil.example".to_owned(),
        "http://evil.example/".to_owned(),
        "//evil.example".to_owned(),
        "/\\evil.example".to_owned(),
        "/%5Cevil.example".to_owned(),
        "http:evil.example".to_owned(),
        format!("http://{host}@evil.example/"),
        format!("http://evil.example\\@{host}/"),
        "\t//evil.example".to_owned(),
        format!("http://{}.evil.example/", host.split(':').next().unwrap()),
        "HTTP://EVIL.EXAMPLE/".to_owned(),
    ];
    let mut fine = vec![format!("{}/x?a=1", env.base), "/y?b=2".to_owned()];
    fine.push(format!("{}/", env.base));
    for rd in attacks.iter().chain(&fine) {
        let r = env
            .http
            .get(format!(
                "{}/.stagedoor/login?{}",
                env.base,
                form(&[("rd", rd)])
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 302, "{rd}");
        let state = query_param(location(&r).split_once('?').unwrap().1, "state").unwrap();
        let cookie = set_cookies(&r)
            .into_iter()
            .map(|(n, v, _)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        let p = env.flow.pending(&cookie, Some(&state), now()).unwrap();
        let want = if fine.contains(rd) {
            if rd.starts_with('/') {
                format!("{}{rd}", env.base)
            } else {
                rd.clone()
            }
        } else {
            format!("{}/", env.base)
        };
        assert_eq!(p.rd, want, "{rd:?}");
    }
}

#[tokio::test]
#[ignore = "needs oidc-provider: run tests/run.sh"]
async fn too_many_groups_keeps_the_policys_groups_or_fails() {
    let env = setup().await;
    // Only the groups the policy names are kept.
    let mut b = Browser::default();
    let cb = b.sign_in_until_callback(&env, &env.base, "/", "many").await;
    let r = b.get(&env, &cb).await;
    assert_eq!(r.status(), 302, "{}", r.text().await.unwrap());
    let (_, me) = b.whoami(&env, &env.base).await;
    assert_eq!(
        me["groups"],
        serde_json::json!(["group-with-a-longish-name-0007"])
    );
    // When even those do not fit: a page saying so, and a warning naming the subject.
    let mut b = Browser::default();
    let cb = b
        .sign_in_until_callback(&env, &env.strict, "/", "many")
        .await;
    let r = b.get(&env, &cb).await;
    assert_eq!(r.status(), 403);
    let page = r.text().await.unwrap();
    assert!(
        page.contains("too_many_groups") && page.contains("400"),
        "{page}"
    );
    assert!(!b.sd.contains_key("stagedoor_session"));
}
