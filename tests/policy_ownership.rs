//! Route ownership: an entity may not weaken another's protection. A route under (or
//! on) the path of another entity's route takes effect only when that entity delegates
//! the prefix to it by ref (`stagedoor.io/delegate`); otherwise it is held closed as
//! `policy_conflict` and reported. Owners do not count: `spec.owner` is self-declared.

mod policy_support;

use policy_support::{component, ident, owned, reason};
use proptest::prelude::*;
use stagedoor::catalog::Entity;
use stagedoor::policy::{Policy, Request, Unmatched};
use stagedoor::reason::Reason;

const ROUTES: &str = "stagedoor.io/routes";
const HOSTS: &str = "stagedoor.io/hosts";
const DELEGATE: &str = "stagedoor.io/delegate";

fn orders(delegate: Option<&str>) -> Entity {
    let mut ann = vec![(
        ROUTES,
        "GET,HEAD /api/orders orders:read\n* /api/orders/admin orders:admin",
    )];
    if let Some(d) = delegate {
        ann.push((DELEGATE, d));
    }
    owned("orders-api", "payments", &ann)
}

fn mallory() -> Entity {
    owned(
        "mallory-tool",
        "mallory",
        &[(ROUTES, "* /api/orders/admin/users public")],
    )
}

#[test]
fn another_owners_nested_route_is_held_closed_and_reported() {
    let anon = Err(Reason::MissingToken);
    let before = Policy::build(&[orders(None)], Unmatched::Deny);
    assert_eq!(
        reason(&before, "DELETE", "h", "/api/orders/admin/users/42", anon),
        Reason::MissingToken
    );
    let p = Policy::build(&[orders(None), mallory()], Unmatched::Deny);
    for m in ["DELETE", "GET", "HEAD", "POST"] {
        assert_eq!(
            reason(&p, m, "h", "/api/orders/admin/users/42", anon),
            Reason::PolicyConflict,
            "{m}"
        );
    }
    let admin = ident(&["orders:admin"], &[]);
    // the rest of orders is untouched
    assert_eq!(
        reason(&p, "GET", "h", "/api/orders/admin/x", Ok(&admin)),
        Reason::Ok
    );
    assert_eq!(
        reason(&p, "GET", "h", "/api/orders/admin/x", anon),
        Reason::MissingToken
    );
    let c = p.conflicts();
    assert_eq!(c.len(), 1, "{c:?}");
    assert_eq!(c[0].entities, ["component:default/mallory-tool"]);
    // every enclosing route of another owner is named
    assert_eq!(
        c[0].under,
        [
            "`* /api/orders/admin orders:admin` of component:default/orders-api (owner group:default/payments)",
            "`GET,HEAD /api/orders orders:read` of component:default/orders-api (owner group:default/payments)",
        ]
    );
    let line = c[0].to_string();
    assert!(line.starts_with("conflict: * * /api/orders/admin/users claimed by component:default/mallory-tool under `* /api/orders/admin"), "{line}");
    assert!(
        line.contains("does not delegate it (stagedoor.io/delegate)"),
        "{line}"
    );
    assert!(p.render_table().contains(&line));
    let json = p.to_json();
    assert_eq!(json["conflicts"][0]["under"].as_array().unwrap().len(), 2);
    // mallory's route is not in effect anywhere, so it is not listed as a route
    assert_eq!(p.route_count(), 2);
}

#[test]
fn delegation_lets_the_named_entity_in_and_nobody_else() {
    let users_api = owned(
        "users-api",
        "identity",
        &[(ROUTES, "GET /api/orders/admin/users users:read")],
    );
    let anon = Err(Reason::MissingToken);
    let reader = ident(&["users:read"], &[]);
    for delegate in [
        "/api/orders/admin/users users-api",
        "/api/orders/admin/users component:default/users-api",
        "/api/orders/admin component:default/users-api",
        "/api/orders/admin/users  other-api, users-api # a comment",
        "/ *",
    ] {
        let p = Policy::build(
            &[orders(Some(delegate)), users_api.clone()],
            Unmatched::Deny,
        );
        assert!(p.conflicts().is_empty(), "{delegate}: {:?}", p.conflicts());
        assert!(p.errors().is_empty(), "{delegate}: {:?}", p.errors());
        assert_eq!(
            reason(&p, "GET", "h", "/api/orders/admin/users/1", Ok(&reader)),
            Reason::Ok,
            "{delegate}"
        );
        assert_eq!(
            reason(&p, "GET", "h", "/api/orders/admin/users/1", anon),
            Reason::MissingToken
        );
        // methods users-api does not route stay with orders' admin line
        assert_eq!(
            reason(&p, "DELETE", "h", "/api/orders/admin/users/1", Ok(&reader)),
            Reason::InsufficientScope
        );
    }
    // a delegation to someone else, or of another prefix, lets mallory in nowhere
    for delegate in [
        "/api/orders/admin/users users-api",
        "/api/orders/admin/usersx mallory-tool",
        "/api/orders/admin/users/42 mallory-tool",
        "/api/orders/admin/users component:default/other",
        "/api/orders/admin/users api:default/mallory-tool",
        "/api/orders/admin/users component:other/mallory-tool",
    ] {
        let p = Policy::build(&[orders(Some(delegate)), mallory()], Unmatched::Deny);
        assert_eq!(
            reason(&p, "DELETE", "h", "/api/orders/admin/users/42", anon),
            Reason::PolicyConflict,
            "{delegate}"
        );
    }
    // a Group or User delegate is refused (an error holds orders closed): an owner is
    // whatever an entity's writer says, so "delegate to team X" would admit anyone
    // who writes `owner: X`
    for delegate in ["/api/orders/admin/users group:default/mallory", "/a user:x"] {
        let p = Policy::build(&[orders(Some(delegate)), mallory()], Unmatched::Deny);
        assert_eq!(p.errors().len(), 1, "{delegate}");
        assert_eq!(
            reason(&p, "GET", "h", "/api/orders", Ok(&reader)),
            Reason::PolicyError
        );
    }
    // mallory's entity delegated to: in
    let p = Policy::build(
        &[
            orders(Some("/api/orders/admin/users mallory-tool")),
            mallory(),
        ],
        Unmatched::Deny,
    );
    assert_eq!(
        reason(&p, "DELETE", "h", "/api/orders/admin/users/42", anon),
        Reason::Public
    );
}

/// The same owner does not count: `spec.owner` is written by whoever writes the
/// entity, so mallory could write `owner: payments` (found by review). Only the same
/// entity nests freely; a team's second entity needs its delegation like anyone.
#[test]
fn the_same_owner_is_not_trusted_only_the_same_entity() {
    let anon = Err(Reason::MissingToken);
    let spoof = owned(
        "orders-tool",
        "payments",
        &[(ROUTES, "GET /api/orders/admin/stats public")],
    );
    let p = Policy::build(&[orders(None), spoof.clone()], Unmatched::Deny);
    assert_eq!(
        reason(&p, "GET", "h", "/api/orders/admin/stats", anon),
        Reason::PolicyConflict
    );
    let p = Policy::build(
        &[orders(Some("/api/orders/admin/stats orders-tool")), spoof],
        Unmatched::Deny,
    );
    assert!(p.conflicts().is_empty(), "{:?}", p.conflicts());
    assert_eq!(
        reason(&p, "GET", "h", "/api/orders/admin/stats", anon),
        Reason::Public
    );
    // one entity's own lines nest freely
    let one = owned("one", "x", &[(ROUTES, "GET /x s\nGET /x/y public")]);
    let p = Policy::build(&[one], Unmatched::Deny);
    assert!(p.conflicts().is_empty());
    assert_eq!(reason(&p, "GET", "h", "/x/y", anon), Reason::Public);
    // and entities without an owner are no exception
    let a = component("a", &[(ROUTES, "GET /x s")]);
    let b = component("b", &[(ROUTES, "GET /x/y public")]);
    let p = Policy::build(&[a, b], Unmatched::Deny);
    assert_eq!(reason(&p, "GET", "h", "/x/y", anon), Reason::PolicyConflict);
}

#[test]
fn same_path_other_method_holds_both_closed() {
    let a = owned("a", "team-a", &[(ROUTES, "GET /x s")]);
    let b = owned("b", "team-b", &[(ROUTES, "POST /x public")]);
    let p = Policy::build(&[a, b], Unmatched::Deny);
    let s = ident(&["s"], &[]);
    assert_eq!(
        reason(&p, "POST", "h", "/x", Err(Reason::MissingToken)),
        Reason::PolicyConflict
    );
    assert_eq!(reason(&p, "GET", "h", "/x", Ok(&s)), Reason::PolicyConflict);
    assert_eq!(p.conflicts().len(), 2);
}

/// A longer any-host prefix never overrides a host-scoped route of another owner; on
/// other hosts it stands, and where billing's table decides a method it is not needed.
#[test]
fn any_host_routes_under_host_scoped_ones_are_held_on_those_hosts() {
    let billing = owned(
        "billing",
        "billing",
        &[
            (HOSTS, "billing.example, *.billing.internal"),
            (
                ROUTES,
                "GET /api/invoices billing:read\nPOST /api/invoices/2026 billing:write",
            ),
        ],
    );
    let m = owned("m", "mallory", &[(ROUTES, "* /api/invoices/2026 public")]);
    let p = Policy::build(&[billing, m], Unmatched::Deny);
    let anon = Err(Reason::MissingToken);
    let writer = ident(&["billing:write"], &[]);
    for host in [
        "billing.example",
        "eu.billing.internal",
        "BILLING.example:443",
    ] {
        assert_eq!(
            reason(&p, "GET", host, "/api/invoices/2026", anon),
            Reason::PolicyConflict,
            "{host}"
        );
        assert_eq!(
            reason(&p, "DELETE", host, "/api/invoices/2026/1", anon),
            Reason::PolicyConflict,
            "{host}"
        );
        // billing's own POST on the very path mallory claims: on the same path, each
        // needs the other's delegation, so both are held (fail closed)
        assert_eq!(
            reason(&p, "POST", host, "/api/invoices/2026", Ok(&writer)),
            Reason::PolicyConflict,
            "{host}"
        );
        assert_eq!(
            reason(&p, "GET", host, "/api/invoices/2025", Ok(&writer)),
            Reason::InsufficientScope,
            "{host}"
        );
    }
    for host in ["other.example", "a.b.billing.internal", "billing.internal"] {
        assert_eq!(
            reason(&p, "GET", host, "/api/invoices/2026", anon),
            Reason::Public,
            "{host}"
        );
    }
    // per host pattern: mallory's `*` filled in billing's table, and billing's POST
    let rows: Vec<String> = p
        .conflicts()
        .iter()
        .map(|c| {
            format!(
                "{} {} {} {:?}",
                c.host.as_deref().unwrap_or("*"),
                c.method,
                c.path,
                c.entities
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            "*.billing.internal * /api/invoices/2026 [\"component:default/m\"]",
            "*.billing.internal POST /api/invoices/2026 [\"component:default/billing\"]",
            "billing.example * /api/invoices/2026 [\"component:default/m\"]",
            "billing.example POST /api/invoices/2026 [\"component:default/billing\"]",
        ]
    );
}

#[test]
fn host_scoped_routes_under_other_hosts_patterns() {
    let anon = Err(Reason::MissingToken);
    // an exact host under another owner's `*.w` route: held on that host
    let a = owned("a", "team-a", &[(HOSTS, "*.w"), (ROUTES, "GET /x s")]);
    let b = owned(
        "b",
        "team-b",
        &[(HOSTS, "a.w, other"), (ROUTES, "GET /x/y public")],
    );
    let p = Policy::build(&[a.clone(), b], Unmatched::Deny);
    assert_eq!(
        reason(&p, "GET", "a.w", "/x/y", anon),
        Reason::PolicyConflict
    );
    assert_eq!(reason(&p, "GET", "other", "/x/y", anon), Reason::Public);
    assert_eq!(reason(&p, "GET", "b.w", "/x/y", anon), Reason::MissingToken);
    // a `*.w` route under another owner's exact-host route: held on that host only
    let c = owned("c", "team-c", &[(HOSTS, "a.w"), (ROUTES, "GET /x s")]);
    let d = owned(
        "d",
        "team-d",
        &[(HOSTS, "*.w"), (ROUTES, "GET /x/y public")],
    );
    let p = Policy::build(&[c, d], Unmatched::Deny);
    assert_eq!(
        reason(&p, "GET", "a.w", "/x/y", anon),
        Reason::PolicyConflict
    );
    assert_eq!(reason(&p, "GET", "b.w", "/x/y", anon), Reason::Public);
    // a host-scoped route under another owner's any-host route
    let e = owned("e", "team-e", &[(ROUTES, "* /x s")]);
    let f = owned(
        "f",
        "team-f",
        &[(HOSTS, "f.example"), (ROUTES, "GET /x public")],
    );
    let p = Policy::build(&[e, f], Unmatched::Deny);
    assert_eq!(
        reason(&p, "GET", "f.example", "/x", anon),
        Reason::PolicyConflict
    );
    assert_eq!(
        reason(&p, "GET", "g.example", "/x", anon),
        Reason::MissingToken
    );
}

#[test]
fn delegation_does_not_chain() {
    let a = owned("a", "team-a", &[(ROUTES, "* /r s"), (DELEGATE, "/r/b b")]);
    let b = owned(
        "b",
        "team-b",
        &[(ROUTES, "* /r/b t"), (DELEGATE, "/r/b/c c")],
    );
    let c = owned("c", "team-c", &[(ROUTES, "* /r/b/c public")]);
    let p = Policy::build(&[a.clone(), b.clone(), c.clone()], Unmatched::Deny);
    let anon = Err(Reason::MissingToken);
    assert_eq!(reason(&p, "GET", "h", "/r/b/x", anon), Reason::MissingToken);
    assert_eq!(
        reason(&p, "GET", "h", "/r/b/c", anon),
        Reason::PolicyConflict
    );
    let under = &p.conflicts()[0].under;
    assert_eq!(under.len(), 1);
    assert!(under[0].contains("component:default/a "), "{under:?}");
    // a delegates to c as well: in
    let a2 = owned(
        "a",
        "team-a",
        &[(ROUTES, "* /r s"), (DELEGATE, "/r/b b\n/r/b/c c")],
    );
    let p = Policy::build(&[a2, b, c], Unmatched::Deny);
    assert_eq!(reason(&p, "GET", "h", "/r/b/c", anon), Reason::Public);
}

#[test]
fn a_bad_delegate_annotation_is_an_error_and_holds_the_entity_closed() {
    let site = owned(
        "site",
        "web",
        &[(ROUTES, "GET / public"), (DELEGATE, "/ location:default/x")],
    );
    let p = Policy::build(&[site], Unmatched::Deny);
    assert_eq!(p.errors().len(), 1);
    let e = p.errors()[0].to_string();
    assert!(e.starts_with("component:default/site: stagedoor.io/delegate:1:3: invalid delegate `location:default/x`"), "{e}");
    assert_eq!(
        reason(&p, "GET", "h", "/", Err(Reason::MissingToken)),
        Reason::PolicyError
    );
    // on a Group it is not read
    let g = stagedoor::catalog::Entity {
        kind: "Group".into(),
        ..owned("g", "x", &[(DELEGATE, "/ *")])
    };
    let p = Policy::build(&[g], Unmatched::Deny);
    assert!(
        p.errors()[0]
            .to_string()
            .contains("not read on a Group entity")
    );
}

/// Requests, as (method, host, path).
fn request() -> impl Strategy<Value = (&'static str, &'static str, String)> {
    (
        prop::sample::select(vec!["GET", "HEAD", "POST", "DELETE"]),
        prop::sample::select(vec!["h1", "a.w", "b.w", "other"]),
        "(/[ab]{1,2}){0,4}/?",
    )
        .prop_map(|(m, h, p)| (m, h, if p.is_empty() { "/".to_owned() } else { p }))
}

/// Route lines over a small path alphabet, so that they nest often.
fn lines() -> impl Strategy<Value = String> {
    let line = (
        prop::sample::select(vec!["*", "GET", "HEAD", "POST", "GET,HEAD", "DELETE"]),
        "(/[ab]{1,2}){0,3}",
        prop::sample::select(vec!["public", "authenticated", "s", "t", "s|t", "s @grp"]),
    )
        .prop_map(|(m, p, r)| format!("{m} {} {r}", if p.is_empty() { "/" } else { &p }));
    prop::collection::vec(line, 1..6).prop_map(|v| v.join("\n"))
}

fn hosts() -> impl Strategy<Value = Option<&'static str>> {
    prop::sample::select(vec![
        None,
        Some("h1"),
        Some("*.w"),
        Some("a.w"),
        Some("h1, *.w"),
    ])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() })]

    /// For two entities with different owners and no delegation, adding B's routes
    /// never turns a denial that A's routes made into an allow.
    #[test]
    fn another_owners_routes_never_open_what_a_denied(
        a_routes in lines(), a_hosts in hosts(),
        b_routes in lines(), b_hosts in hosts(),
        reqs in prop::collection::vec(request(), 1..24),
        scopes in prop::sample::subsequence(vec!["s", "t"], 0..=2),
        unmatched in prop::sample::select(vec![Unmatched::Deny, Unmatched::Allow]),
    ) {
        let ent = |name: &str, owner: &str, routes: &str, hosts: Option<&str>| {
            let mut ann = vec![(ROUTES, routes)];
            if let Some(h) = hosts { ann.push((HOSTS, h)); }
            owned(name, owner, &ann)
        };
        let a = ent("a", "team-a", &a_routes, a_hosts);
        let b = ent("b", "team-b", &b_routes, b_hosts);
        let alone = Policy::build(std::slice::from_ref(&a), unmatched);
        prop_assume!(alone.errors().is_empty());
        let both = Policy::build(&[a, b], unmatched);
        let id = ident(&scopes, &[]);
        for (m, h, path) in &reqs {
            for token in [Ok(&id), Err(Reason::MissingToken)] {
                let req = Request { method: m, host: h, path };
                let before = alone.decide(&req, token);
                if before.entity() == Some("component:default/a") && !before.allow() {
                    let after = both.decide(&req, token);
                    prop_assert!(!after.allow(), "{m} {h} {path}: {:?} then {:?}", before, after);
                }
            }
        }
    }
}
