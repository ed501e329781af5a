//! The handler's remembered decisions (`agent::memo`) answer exactly as deciding
//! again would: the same variables and the same logged decision for every request,
//! whatever was asked before it on the thread; and never for a policy snapshot that
//! has been replaced, even one allocated where the old one was.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use stagedoor::agent::{Agent, AuthRequest, Outcome, actions_for};
use stagedoor::connection::Handler;
use stagedoor::policy::{Decision, Mode, Policy, Unmatched};
use stagedoor::spop::{Actions, Arg, Message, TypedData};
use stagedoor::sso::Sso;

mod common;
use common::quickstart::{policy, sso, token, verifier};

type Seen = Arc<Mutex<Vec<(Decision, Option<String>)>>>;

fn agent(mode: Mode, sso: Option<Arc<Sso>>, policy: Arc<ArcSwapOption<Policy>>) -> (Agent, Seen) {
    agent_with_leeway(mode, sso, policy, None)
}

/// An agent whose observer keeps each logged decision and caller.
fn agent_with_leeway(
    mode: Mode,
    sso: Option<Arc<Sso>>,
    policy: Arc<ArcSwapOption<Policy>>,
    leeway: Option<u64>,
) -> (Agent, Seen) {
    let seen: Seen = Arc::default();
    let log = seen.clone();
    let observer = Box::new(move |_: &AuthRequest<'_>, outcome: &Outcome, _, _| {
        let sub = outcome.identity.as_ref().and_then(|i| i.sub.clone());
        log.lock().unwrap().push((outcome.decision.clone(), sub));
    });
    let agent = common::quickstart::agent(verifier(leeway), policy, mode, sso, observer);
    (agent, seen)
}

fn message(
    method: &str,
    host: &str,
    path: &str,
    auth: &str,
    cookie: Option<&str>,
) -> Message<'static> {
    let mut args = vec![
        Arg::new("method", TypedData::string(method.to_owned())),
        Arg::new("path", TypedData::string(path.to_owned())),
        Arg::new("host", TypedData::string(host.to_owned())),
        Arg::new("authorization", TypedData::string(auth.to_owned())),
    ];
    if let Some(c) = cookie {
        args.push(Arg::new("cookie", TypedData::string(c.to_owned())));
        args.push(Arg::new("cookie_count", TypedData::Int64(1)));
    }
    Message {
        name: b"authorize".as_slice().into(),
        args,
    }
}

/// The handler's variables for `msg`, and what deciding it afresh gives.
async fn both(agent: &Agent, msg: Message<'static>) -> (Actions, Actions, Outcome) {
    let now = stagedoor::clock::unix_now();
    let handled = agent.handle(std::slice::from_ref(&msg)).await.unwrap();
    let req = AuthRequest::from_message(&msg).unwrap();
    let outcome = agent.decide(&req, now).await;
    (handled, actions_for(&outcome, "stagedoor"), outcome)
}

#[tokio::test]
async fn remembered_decisions_are_the_decisions() {
    let shared = Arc::new(ArcSwapOption::new(Some(Arc::new(policy()))));
    let agents = [
        agent(Mode::Enforce, None, shared.clone()),
        agent(Mode::Shadow, None, shared.clone()),
        agent(Mode::Enforce, Some(sso(&[[7; 32]])), shared.clone()),
    ];
    let tokens = [
        token(
            "alice",
            "orders:read orders:write",
            &["payments-engineers"],
            3600,
        ),
        token("bob", "orders:read", &[], 3600),
        token("carol", "orders:read orders:admin", &["sre-oncall"], 3600),
        token("alice", "billing:read", &["payments-engineers"], 3600),
        token("dave", "orders:read", &["payments-engineers"], -60),
    ];
    let mut auths: Vec<String> = tokens.iter().map(|t| format!("Bearer {t}")).collect();
    auths.push(format!("Bearer {}x", tokens[0]));
    auths.push("Basic YTpi".into());
    let methods = ["GET", "HEAD", "POST", "DELETE", "get"];
    let hosts = [
        "orders.example.com",
        "billing.localhost",
        "BILLING.localhost:8080",
        "",
        "a b",
    ];
    let paths = [
        "/api/orders",
        "/api/orders/",
        "/api/orders/admin",
        "/api/orders/health",
        "/api/orders/me",
        "/api/invoices",
        "/api/orders?x=1",
        "/api//orders",
        "/api/%2e%2e/orders",
        "/API/orders",
        "/nope",
        "*",
    ];
    let cookies = [
        None,
        Some("theme=dark"),
        Some("__Host-stagedoor_session=abc; theme=dark"),
    ];
    let mut cases = Vec::new();
    for auth in &auths {
        for m in methods {
            for h in hosts {
                for p in paths {
                    for c in cookies {
                        cases.push((auth.as_str(), m, h, p, c));
                    }
                }
            }
        }
    }
    // Runs, reversed runs and a stride: repeats, interleavings and slot collisions.
    let n = cases.len();
    let order: Vec<usize> = (0..n)
        .chain((0..n).rev())
        .chain((0..n).map(|i| (i * 37) % n))
        .collect();
    let mut remembered_allows = 0;
    for (k, &i) in order.iter().enumerate() {
        let (auth, m, h, p, c) = cases[i];
        let (agent, seen) = &agents[k % agents.len()];
        let (handled, fresh, outcome) = both(agent, message(m, h, p, auth, c)).await;
        assert_eq!(handled, fresh, "{m} {h} {p} {c:?} {}", &auth[..12]);
        let by_handler = seen.lock().unwrap().pop().unwrap();
        let sub = outcome.identity.as_ref().and_then(|i| i.sub.clone());
        assert_eq!(by_handler, (outcome.decision, sub), "{m} {h} {p}");
        if k >= n && by_handler.0.allow() {
            remembered_allows += 1;
        }
    }
    // Not vacuous: the allowed requests were asked again after the first pass.
    assert!(remembered_allows > 100, "{remembered_allows}");
}

/// A replaced snapshot's remembered decisions are gone, even when the new snapshot
/// is allocated where the old one was (the allocator hands a freed block of the same
/// size straight back): the memo keeps the old one's block until it lets it go.
#[tokio::test]
async fn a_replaced_policy_is_never_answered_for() {
    let shared = Arc::new(ArcSwapOption::new(None));
    let (a, _) = agent(Mode::Enforce, None, shared.clone());
    let auth = format!(
        "Bearer {}",
        token("alice", "orders:read", &["payments-engineers"], 3600)
    );
    for round in 0..50 {
        shared.store(None);
        shared.store(Some(Arc::new(policy())));
        let (got, _, _) = both(&a, message("GET", "h", "/api/orders", &auth, None)).await;
        assert_eq!(reason(&got), "ok", "round {round}");
        let (got, _, _) = both(&a, message("GET", "h", "/api/orders", &auth, None)).await;
        assert_eq!(reason(&got), "ok", "round {round}, remembered");
        shared.store(None);
        shared.store(Some(Arc::new(Policy::build::<stagedoor::catalog::Entity>(
            &[],
            Unmatched::Deny,
        ))));
        let (got, _, _) = both(&a, message("GET", "h", "/api/orders", &auth, None)).await;
        assert_eq!(reason(&got), "no_route", "round {round}");
    }
}

fn reason(actions: &Actions) -> String {
    actions
        .decode()
        .unwrap()
        .into_iter()
        .find_map(|a| match a {
            stagedoor::spop::Action::SetVar { name, value, .. } if &*name == b"reason" => {
                value.as_str().map(str::to_owned)
            }
            _ => None,
        })
        .unwrap()
}

/// From the attack review of 5d291e9:
/// a remembered allow never outlives its token: after `exp` the same request is denied.
#[tokio::test]
async fn an_expired_token_is_not_answered_from_the_memo() {
    let shared = Arc::new(ArcSwapOption::new(Some(Arc::new(policy()))));
    let (a, _) = agent_with_leeway(Mode::Enforce, None, shared, Some(0));
    let auth = format!(
        "Bearer {}",
        token("alice", "orders:read", &["payments-engineers"], 2)
    );
    for _ in 0..3 {
        let (got, _, _) = both(&a, message("GET", "h", "/api/orders", &auth, None)).await;
        assert_eq!(reason(&got), "ok");
    }
    std::thread::sleep(std::time::Duration::from_millis(3100));
    let (got, fresh, _) = both(&a, message("GET", "h", "/api/orders", &auth, None)).await;
    assert_eq!(got, fresh);
    assert_ne!(reason(&got), "ok");
}

/// A bearer request with stagedoor's session cookie under [sso] is never memoized:
/// the cookie strip must be in every answer, even after the same request without it.
#[tokio::test]
async fn cookie_strip_follows_a_remembered_bearer_request() {
    let shared = Arc::new(ArcSwapOption::new(Some(Arc::new(policy()))));
    let (a, _) = agent(Mode::Enforce, Some(sso(&[[7; 32]])), shared);
    let auth = format!(
        "Bearer {}",
        token("alice", "orders:read", &["payments-engineers"], 3600)
    );
    for c in [
        None,
        None,
        Some("__Host-stagedoor_session=abc; theme=dark"),
        None,
        Some("__Host-stagedoor_session=abc"),
    ] {
        let (got, fresh, _) = both(&a, message("GET", "h", "/api/orders", &auth, c)).await;
        assert_eq!(got, fresh, "{c:?}");
        let strips = got.decode().unwrap().into_iter().any(|a| {
            matches!(a,
            stagedoor::spop::Action::SetVar { name, .. } if &*name == b"cookie_strip")
        });
        assert_eq!(strips, c.is_some(), "{c:?}");
    }
}

/// Method, host and path split differently but concatenating the same never share.
#[tokio::test]
async fn split_points_of_the_key_do_not_collide() {
    let shared = Arc::new(ArcSwapOption::new(Some(Arc::new(policy()))));
    let (a, _) = agent(Mode::Enforce, None, shared);
    let auth = format!(
        "Bearer {}",
        token("alice", "orders:read", &["payments-engineers"], 3600)
    );
    let cases = [
        ("GET", "orders.example.com", "/api/orders"),
        ("GETo", "rders.example.com", "/api/orders"),
        ("GET", "orders.example.com/api", "/orders"),
        ("GET", "orders.example.co", "m/api/orders"),
        ("HEAD", "orders.example.com", "/api/orders"),
        ("GET", "orders.example.com", "/api/orders?"),
        ("GET", "orders.example.com", "/api/orders#"),
        ("GET", "orders.example.com", "/api/orders\0"),
    ];
    for round in 0..3 {
        for (m, h, p) in cases {
            let (got, fresh, _) = both(&a, message(m, h, p, &auth, None)).await;
            assert_eq!(got, fresh, "round {round}: {m:?} {h:?} {p:?}");
        }
    }
}

/// Without the token cache (`cache_entries = 0`) every verification makes a new
/// identity, so a decision remembered under one could never be found again: nothing is
/// remembered, and nothing keeps the request's identity alive once it is answered.
#[tokio::test]
async fn without_the_token_cache_nothing_is_remembered() {
    let settings = stagedoor::token::TokenConfig {
        cache_entries: 0,
        ..Default::default()
    };
    let (a, last) = agent_watching(settings, None);
    never_remembered(&a, &last, 3600).await;
}

/// Three allows of a token expiring in `exp_in` seconds: each as decided afresh, none
/// remembered, and no identity alive after its request.
async fn never_remembered(a: &Agent, last: &Identities, exp_in: i64) {
    let auth = format!(
        "Bearer {}",
        token("alice", "orders:read", &["payments-engineers"], exp_in)
    );
    for round in 0..3 {
        let (got, fresh, _) = both(a, message("GET", "h", "/api/orders", &auth, None)).await;
        assert_eq!(got, fresh, "round {round}");
        assert_eq!(reason(&got), "ok");
        let identities = last.lock().unwrap();
        assert_eq!(identities.len(), round + 1);
        assert!(
            identities.iter().all(|w| w.upgrade().is_none()),
            "an identity outlived its request (round {round})"
        );
        assert_eq!(stagedoor::agent::remembered_on_this_thread(), 0);
    }
}

/// An agent whose observer keeps a weak reference to each request's identity.
type Identities = Arc<Mutex<Vec<std::sync::Weak<stagedoor::identity::Identity>>>>;
fn agent_watching(
    settings: stagedoor::token::TokenConfig,
    leeway: Option<u64>,
) -> (Agent, Identities) {
    let shared = Arc::new(ArcSwapOption::new(Some(Arc::new(policy()))));
    let last: Identities = Arc::default();
    let seen = last.clone();
    let observer = Box::new(move |_: &AuthRequest<'_>, outcome: &Outcome, _, _| {
        if let Some(identity) = &outcome.identity {
            seen.lock().unwrap().push(Arc::downgrade(identity));
        }
    });
    let a = common::quickstart::agent(
        common::quickstart::verifier_with(leeway, settings),
        shared,
        Mode::Enforce,
        None,
        observer,
    );
    (a, last)
}

/// From the attack review of f090a6a: a token past `exp` but within the leeway is
/// allowed yet never cached, so each verification makes a new identity, as without the
/// cache: nothing is remembered for it either.
#[tokio::test]
async fn a_token_within_its_leeway_is_not_remembered() {
    let (a, last) = agent_watching(Default::default(), Some(60));
    never_remembered(&a, &last, -2).await;
}

/// With the token cache (the default) a repeated request is remembered: the tests above
/// exercise the memo, not only the fresh path.
#[tokio::test]
async fn with_the_token_cache_a_request_is_remembered() {
    let (a, last) = agent_watching(Default::default(), None);
    let auth = format!(
        "Bearer {}",
        token("alice", "orders:read", &["payments-engineers"], 3600)
    );
    assert_eq!(stagedoor::agent::remembered_on_this_thread(), 0);
    for round in 0..3 {
        let (got, fresh, _) = both(&a, message("GET", "h", "/api/orders", &auth, None)).await;
        assert_eq!(got, fresh, "round {round}");
        assert_eq!(reason(&got), "ok");
        assert_eq!(stagedoor::agent::remembered_on_this_thread(), 1);
    }
    // One identity for the token, the cache's.
    let identities = last.lock().unwrap();
    assert!(identities.windows(2).all(|w| w[0].ptr_eq(&w[1])));
    assert!(identities[0].upgrade().is_some());
}
