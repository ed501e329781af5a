//! Browser requests through the agent (message → session or token → policy →
//! variables), on the quickstart catalog: a session decides exactly like a verified
//! token with the same identity; navigations without credentials are sent to sign
//! in, nothing else is; stagedoor's cookies never go on to the backend.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use stagedoor::agent::Agent;
use stagedoor::connection::Handler;
use stagedoor::policy::Mode;
use stagedoor::spop::{Action, Arg, Message, TypedData};
use stagedoor::sso::Sso;

mod common;
use common::quickstart::{policy, session, sso, verifier};

fn agent(sso: Option<Arc<Sso>>) -> Agent {
    common::quickstart::agent(
        verifier(None),
        Arc::new(ArcSwapOption::new(Some(Arc::new(policy())))),
        Mode::Enforce,
        sso,
        Box::new(|_, _, _, _| {}),
    )
}

/// A token for the same caller as a session (an hour left).
fn token(sub: &str, scope: &str, groups: &[&str]) -> String {
    common::quickstart::token(sub, scope, groups, 3600)
}

struct Req {
    method: &'static str,
    path: &'static str,
    authorization: Option<String>,
    cookie: Option<String>,
    cookie_count: Option<i64>,
    accept: Option<&'static str>,
    fetch_mode: Option<&'static str>,
}

impl Req {
    fn get(path: &'static str) -> Req {
        Req {
            method: "GET",
            path,
            authorization: None,
            cookie: None,
            cookie_count: None,
            accept: None,
            fetch_mode: None,
        }
    }
    fn navigation(path: &'static str) -> Req {
        Req {
            accept: Some("text/html,application/xhtml+xml,*/*;q=0.8"),
            fetch_mode: Some("navigate"),
            ..Req::get(path)
        }
    }
    fn cookie(mut self, c: String) -> Req {
        self.cookie_count = Some(1);
        self.cookie = Some(c);
        self
    }
}

/// The variables the agent sets for `req`, by name.
async fn vars(agent: &Agent, req: &Req) -> Vec<(String, String)> {
    let null_or = |v: Option<&str>| v.map_or(TypedData::Null, |s| TypedData::string(s.to_owned()));
    let mut args = vec![
        Arg::new("method", TypedData::str(req.method)),
        Arg::new("path", TypedData::str(req.path)),
        Arg::new("host", TypedData::str("orders.example.com")),
        Arg::new("authorization", null_or(req.authorization.as_deref())),
        Arg::new("cookie", null_or(req.cookie.as_deref())),
        Arg::new("accept", null_or(req.accept)),
        Arg::new("fetch_mode", null_or(req.fetch_mode)),
        Arg::new("query", TypedData::str("tab=2")),
    ];
    if let Some(n) = req.cookie_count {
        args.push(Arg::new("cookie_count", TypedData::Int64(n)));
    }
    let msg = Message {
        name: b"authorize".as_slice().into(),
        args,
    };
    let actions = agent.handle(&[msg]).await.unwrap();
    actions
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

fn var<'a>(vars: &'a [(String, String)], name: &str) -> Option<&'a str> {
    vars.iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// (reason, status, sub, entity): what a decision comes to.
fn verdict(v: &[(String, String)]) -> (String, String, Option<String>, Option<String>) {
    (
        var(v, "reason").unwrap().to_string(),
        var(v, "status").unwrap().to_string(),
        var(v, "sub").map(str::to_string),
        var(v, "entity").map(str::to_string),
    )
}

#[tokio::test]
async fn a_session_decides_exactly_like_a_token_with_the_same_identity() {
    let sso = sso(&[[7; 32]]);
    let a = agent(Some(sso.clone()));
    let callers: [(&str, &str, &[&str]); 4] = [
        ("alice", "orders:read orders:write", &["payments-engineers"]),
        ("bob", "orders:read", &["sre-oncall"]),
        ("carol", "orders:read orders:admin", &[]),
        (
            "dave",
            "billing:read",
            &["payments-engineers", "sre-oncall"],
        ),
    ];
    let mut allowed = 0;
    for (sub, scope, groups) in callers {
        for (method, path) in [
            ("GET", "/api/orders"),
            ("POST", "/api/orders"),
            ("DELETE", "/api/orders/admin"),
            ("GET", "/api/orders/me"),
            ("GET", "/api/orders/health"),
            ("GET", "/nowhere"),
        ] {
            let by_token = Req {
                method,
                path,
                authorization: Some(format!("Bearer {}", token(sub, scope, groups))),
                ..Req::get(path)
            };
            let by_session = Req {
                method,
                path,
                ..Req::get(path).cookie(format!(
                    "__Host-stagedoor_session={}",
                    session(&sso, sub, scope, groups, 3600)
                ))
            };
            let t = verdict(&vars(&a, &by_token).await);
            let s = verdict(&vars(&a, &by_session).await);
            assert_eq!(t, s, "{sub} {method} {path}");
            allowed += usize::from(t.1 == "200");
        }
    }
    // The table is not all one answer.
    assert!((4..24).contains(&allowed), "{allowed}");
}

#[tokio::test]
async fn navigations_without_credentials_go_to_sign_in_and_nothing_else_does() {
    let sso = sso(&[[7; 32]]);
    let a = agent(Some(sso.clone()));
    let v = vars(&a, &Req::navigation("/api/orders")).await;
    assert_eq!(var(&v, "status"), Some("302"));
    assert_eq!(var(&v, "allow"), Some("false"));
    assert_eq!(var(&v, "reason"), Some("missing_token"));
    assert_eq!(
        var(&v, "location"),
        Some("/.stagedoor/login?rd=https%3A%2F%2Forders.example.com%2Fapi%2Forders%3Ftab%3D2")
    );
    // Expired and foreign sessions: to sign in again, with their own reason.
    let expired = session(&sso, "alice", "orders:read", &["payments-engineers"], -1);
    let foreign = session(
        &self::sso(&[[8; 32]]),
        "alice",
        "orders:read",
        &["payments-engineers"],
        3600,
    );
    for (cookie, reason) in [(expired, "session_expired"), (foreign, "session_invalid")] {
        let v = vars(
            &a,
            &Req::navigation("/api/orders").cookie(format!("__Host-stagedoor_session={cookie}")),
        )
        .await;
        assert_eq!(
            (var(&v, "reason"), var(&v, "status")),
            (Some(reason), Some("302"))
        );
        let v = vars(
            &a,
            &Req::get("/api/orders").cookie(format!("__Host-stagedoor_session={cookie}")),
        )
        .await;
        assert_eq!(
            (var(&v, "reason"), var(&v, "status"), var(&v, "location")),
            (Some(reason), Some("401"), None)
        );
    }
    // Not navigations: 401 with WWW-Authenticate, never a redirect.
    let api = Req {
        accept: Some("application/json"),
        ..Req::get("/api/orders")
    };
    let fetch = Req {
        fetch_mode: Some("cors"),
        ..Req::navigation("/api/orders")
    };
    let post = Req {
        method: "POST",
        ..Req::navigation("/api/orders")
    };
    let bad_token = Req {
        authorization: Some("Bearer not.a.token".into()),
        ..Req::navigation("/api/orders")
    };
    for req in [api, fetch, post, bad_token] {
        let v = vars(&a, &req).await;
        assert_eq!(var(&v, "status"), Some("401"), "{}", req.method);
        assert_eq!(var(&v, "location"), None);
        assert!(var(&v, "www_authenticate").is_some());
    }
    // A signed-in browser that may not pass gets 403, not a sign-in loop.
    let v = vars(
        &a,
        &Req::navigation("/api/orders/admin").cookie(format!(
            "__Host-stagedoor_session={}",
            session(&sso, "alice", "orders:read", &["payments-engineers"], 3600)
        )),
    )
    .await;
    assert_eq!(var(&v, "status"), Some("403"));
    assert_eq!(var(&v, "location"), None);
    // Without [sso], a navigation gets 401 as before and the cookie is not read.
    let plain = agent(None);
    let v = vars(
        &plain,
        &Req::navigation("/api/orders").cookie(format!(
            "__Host-stagedoor_session={}",
            session(&sso, "alice", "orders:read", &["payments-engineers"], 3600)
        )),
    )
    .await;
    assert_eq!(
        (
            var(&v, "status"),
            var(&v, "location"),
            var(&v, "cookie_strip")
        ),
        (Some("401"), None, None)
    );
}

#[tokio::test]
async fn stagedoor_cookies_never_go_on_to_the_backend() {
    let sso = sso(&[[7; 32]]);
    let a = agent(Some(sso.clone()));
    let s = session(&sso, "alice", "orders:read", &["payments-engineers"], 3600);
    // Allowed by session: the backend gets the other cookies, byte for byte.
    let v = vars(
        &a,
        &Req::get("/api/orders")
            .cookie(format!("theme=dark; __Host-stagedoor_session={s};lang=en")),
    )
    .await;
    assert_eq!(var(&v, "allow"), Some("true"));
    assert_eq!(var(&v, "sub"), Some("alice"));
    assert_eq!(var(&v, "cookie_strip"), Some("true"));
    let rest = var(&v, "cookie").unwrap();
    assert!(!rest.contains("stagedoor"), "{rest}");
    assert!(
        rest.contains("theme=dark") && rest.contains("lang=en"),
        "{rest}"
    );
    // Only stagedoor's cookies: the header goes altogether.
    let v = vars(
        &a,
        &Req::get("/api/orders").cookie(format!("__Host-stagedoor_session={s}")),
    )
    .await;
    assert_eq!(var(&v, "cookie_strip"), Some("true"));
    assert_eq!(var(&v, "cookie"), None);
    // Also when a bearer token decides, and on a public route.
    let mut with_token =
        Req::get("/api/orders/health").cookie(format!("__Host-stagedoor_session={s}; a=1"));
    with_token.authorization = Some(format!(
        "Bearer {}",
        token("bob", "orders:read", &["sre-oncall"])
    ));
    let v = vars(&a, &with_token).await;
    assert_eq!(var(&v, "reason"), Some("public"));
    assert_eq!(var(&v, "cookie"), Some("a=1"));
    // Two Cookie lines: which would the backend read? Refused.
    let mut two = Req::get("/api/orders").cookie(format!("__Host-stagedoor_session={s}"));
    two.cookie_count = Some(2);
    let v = vars(&a, &two).await;
    assert_eq!(var(&v, "reason"), Some("bad_request"));
    assert_eq!(var(&v, "allow"), Some("false"));
}

#[test]
fn the_groups_kept_in_a_crowded_session_are_those_the_policy_uses() {
    let p = policy();
    assert!(p.uses_group("payments-engineers"));
    assert!(p.uses_group("sre-oncall"));
    // A Group that lists its IdP groups is reached only through them.
    assert!(!p.uses_group("payments"));
    assert!(!p.uses_group("group:default/payments"));
    assert!(!p.uses_group("marketing"));
    assert!(!p.uses_group(""));
}
