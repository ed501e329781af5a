//! The annotation language: every accepted form, and a golden table of error lines.

mod policy_support;

use policy_support::{component, entity, group, routed};
use serde_json::json;
use stagedoor::policy::lang::{self, HostPattern, LangError, Requirement};
use stagedoor::policy::{Policy, Unmatched};

/// Accepted route lines: (line, methods (`None` = `*`), path, requirement as written
/// (`public`, `authenticated`, or scope words with `|` alternatives), principals,
/// canonical display).
type RouteForm = (
    &'static str,
    Option<&'static [&'static str]>,
    &'static str,
    &'static str,
    &'static [&'static str],
    &'static str,
);

#[rustfmt::skip]
const ROUTE_FORMS: &[RouteForm] = &[
    ("GET /a s",                                                 Some(&["GET"]),         "/a",          "s",                            &[],                                                              "GET /a s"),
    ("GET,HEAD  /api/orders   orders:read",                      Some(&["GET", "HEAD"]), "/api/orders", "orders:read",                  &[],                                                              "GET,HEAD /api/orders orders:read"),
    ("GET, HEAD /a s",                                           Some(&["GET", "HEAD"]), "/a",          "s",                            &[],                                                              "GET,HEAD /a s"),
    ("GET,GET /a s",                                             Some(&["GET"]),         "/a",          "s",                            &[],                                                              "GET /a s"),
    ("* /a s",                                                   None,                   "/a",          "s",                            &[],                                                              "* /a s"),
    ("\t POST\t/a/\tx  y ",                                      Some(&["POST"]),        "/a",          "x y",                          &[],                                                              "POST /a x y"),
    ("GET / public",                                             Some(&["GET"]),         "/",           "public",                       &[],                                                              "GET / public"),
    ("GET /me authenticated",                                    Some(&["GET"]),         "/me",         "authenticated",                &[],                                                              "GET /me authenticated"),
    ("GET /me authenticated @sre",                               Some(&["GET"]),         "/me",         "authenticated",                &["group:default/sre"],                                           "GET /me authenticated @sre"),
    ("* /admin orders:admin @sre @group:ops/oncall @user:alice", None,                   "/admin",      "orders:admin",                 &["group:default/sre", "group:ops/oncall", "user:default/alice"], "* /admin orders:admin @sre @group:ops/oncall @user:alice"),
    ("GET /a read|admin audit",                                  Some(&["GET"]),         "/a",          "read|admin audit",             &[],                                                              "GET /a read|admin audit"),
    ("M-SEARCH /a s",                                            Some(&["M-SEARCH"]),    "/a",          "s",                            &[],                                                              "M-SEARCH /a s"),
    ("GET //a//b/ s # trailing comment",                         Some(&["GET"]),         "/a/b",        "s",                            &[],                                                              "GET /a/b s"),
    ("GET /%61pi s",                                             Some(&["GET"]),         "/api",        "s",                            &[],                                                              "GET /api s"),
    ("GET /a https://api.example.com/read",                      Some(&["GET"]),         "/a",          "https://api.example.com/read", &[],                                                              "GET /a https://api.example.com/read"),
];

/// The requirement a table row writes as text.
fn requirement(text: &str) -> Requirement {
    match text {
        "public" => Requirement::Public,
        "authenticated" => Requirement::Authenticated,
        _ => Requirement::Scopes(
            text.split(' ')
                .map(|any| any.split('|').map(Box::<str>::from).collect())
                .collect(),
        ),
    }
}

#[test]
fn route_forms() {
    for &(text, methods, path, req, principals, display) in ROUTE_FORMS {
        let r = lang::parse_routes(text, "default").unwrap_or_else(|e| panic!("{text:?}: {e:?}"));
        assert_eq!(r.len(), 1, "{text:?}");
        let r = &r[0];
        let want_methods = methods.map(|m| m.iter().map(|s| Box::<str>::from(*s)).collect());
        assert_eq!(r.methods, want_methods, "{text:?}");
        assert_eq!(r.path, path, "{text:?}");
        assert_eq!(r.requirement, requirement(req), "{text:?}");
        assert_eq!(r.principals, principals, "{text:?}");
        assert_eq!(r.display, display, "{text:?}");
        assert_eq!(r.line, 1);
    }
}

#[test]
fn blank_lines_comments_and_crlf() {
    let text = "\n# orders service\r\nGET /a s\r\n\n   \n  # indented comment\nPOST /a t\n";
    let r = lang::parse_routes(text, "default").unwrap();
    assert_eq!(r.iter().map(|r| r.line).collect::<Vec<_>>(), [3, 7]);
    assert!(lang::parse_routes("", "default").unwrap().is_empty());
}

#[test]
fn group_refs_default_to_the_entity_namespace() {
    let r = lang::parse_routes("GET /a s @sre", "ops").unwrap();
    assert_eq!(r[0].principals, ["group:ops/sre"]);
    assert_eq!(
        lang::parse_principals("group:default/payments, sre ,User:Bob", "ops").unwrap(),
        ["group:default/payments", "group:ops/sre", "user:ops/bob"]
    );
}

#[test]
fn host_forms() {
    assert_eq!(
        lang::parse_hosts("API.example.com, *.orders.internal,api.example.com., 10.0.0.1").unwrap(),
        [
            HostPattern::Exact("api.example.com".into()),
            HostPattern::Wildcard("orders.internal".into()),
            HostPattern::Exact("10.0.0.1".into()),
        ]
    );
    assert_eq!(
        lang::parse_hosts("a.example.com,\n b.example.com")
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn other_values() {
    assert_eq!(lang::parse_bool(" true "), Ok(true));
    assert_eq!(lang::parse_bool("False"), Ok(false));
    assert_eq!(
        lang::parse_idp_groups("payments-engineers, 00g1abcd , Payments Engineers").unwrap(),
        ["payments-engineers", "00g1abcd", "Payments Engineers"]
    );
    assert_eq!(lang::parse_word(" auth0|alice ").unwrap(), "auth0|alice");
}

/// Builds a policy from one component with `annotations` and returns the error lines.
fn errors(annotations: &[(&str, &str)]) -> Vec<String> {
    let p = Policy::build(&[component("svc", annotations)], Unmatched::Deny);
    assert_eq!(p.route_count(), 0, "an entity in error keeps no routes");
    p.errors().iter().map(ToString::to_string).collect()
}

const R: &str = "stagedoor.io/routes";
const H: &str = "stagedoor.io/hosts";
const G: &str = "stagedoor.io/allowed-groups";
const O: &str = "stagedoor.io/allow-owner";

/// (annotation, value, the one error line the entity gets)
#[rustfmt::skip]
const GOLDEN_ERRORS: &[(&str, &str, &str)] = &[
    (R,                            "get /a s",                         "component:default/svc: stagedoor.io/routes:1:1: method `get` must be upper case letters, digits, `-` or `_` (methods are case-sensitive)"),
    (R,                            "GET /a",                           "component:default/svc: stagedoor.io/routes:1:7: expected a requirement: `public`, `authenticated` or scopes"),
    (R,                            "GET",                              "component:default/svc: stagedoor.io/routes:1:4: expected a path starting with `/`"),
    (R,                            "GET a s",                          "component:default/svc: stagedoor.io/routes:1:5: expected a path starting with `/`"),
    (R,                            "/a s",                             "component:default/svc: stagedoor.io/routes:1:1: expected methods: `*` or a comma list such as GET,HEAD"),
    (R,                            "GET /a/* s",                       "component:default/svc: stagedoor.io/routes:1:5: path `/a/*`: `*` is not a wildcard here, routes are path prefixes; drop it"),
    (R,                            "GET /a?x=1 s",                     "component:default/svc: stagedoor.io/routes:1:5: path `/a?x=1`: query strings are not matched; drop `?...`"),
    (R,                            "GET /a/../b s",                    "component:default/svc: stagedoor.io/routes:1:5: path `/a/../b`: path holds a `.` or `..` segment"),
    (R,                            "GET /a;v=1 s",                     "component:default/svc: stagedoor.io/routes:1:5: path `/a;v=1`: path holds a `;` parameter"),
    (R,                            "GET /a public s",                  "component:default/svc: stagedoor.io/routes:1:8: `public` must stand alone on its line"),
    (R,                            "GET /a public @sre",               "component:default/svc: stagedoor.io/routes:1:8: `public` must stand alone on its line"),
    (R,                            "GET /a authenticated s",           "component:default/svc: stagedoor.io/routes:1:8: `authenticated` cannot be combined with scopes"),
    (R,                            "GET /a @sre",                      "component:default/svc: stagedoor.io/routes:1:8: expected a requirement: `public`, `authenticated` or scopes"),
    (R,                            "GET /a s s",                       "component:default/svc: stagedoor.io/routes:1:10: `s` appears twice on the line"),
    (R,                            "GET /a a||b",                      "component:default/svc: stagedoor.io/routes:1:8: empty alternative in `a||b`"),
    (R,                            "GET /a a\"b",                      "component:default/svc: stagedoor.io/routes:1:8: invalid scope `a\"b`: a scope is printable ASCII without `\"`, `\\` or `|`"),
    (R,                            "GET /a a|public",                  "component:default/svc: stagedoor.io/routes:1:8: invalid scope `public`: a scope is printable ASCII without `\"`, `\\` or `|`"),
    (R,                            "GET /a s\u{a0}t",                  "component:default/svc: stagedoor.io/routes:1:8: invalid scope `s\\u{a0}t`: a scope is printable ASCII without `\"`, `\\` or `|`"),
    (R,                            "GET /a s @",                       "component:default/svc: stagedoor.io/routes:1:10: invalid principal `@`: expected [group:|user:][namespace/]name"),
    (R,                            "GET /a s @component:x",            "component:default/svc: stagedoor.io/routes:1:10: invalid principal `@component:x`: expected [group:|user:][namespace/]name"),
    (R,                            "*,GET /a s",                       "component:default/svc: stagedoor.io/routes:1:2: `*` cannot be combined with other methods"),
    (R,                            "GET,* /a s",                       "component:default/svc: stagedoor.io/routes:1:4: `*` cannot be combined with other methods"),
    (R,                            "GET /a s\n\n  POST,GET /a/ t",     "component:default/svc: stagedoor.io/routes:3:3: route GET /a is already declared on line 1"),
    (R,                            "* /a s\n* /a t",                   "component:default/svc: stagedoor.io/routes:2:1: route * /a is already declared on line 1"),
    (R,                            "GET /a s\nPOST /b \u{1}",          "component:default/svc: stagedoor.io/routes:2:9: invalid scope `\\u{1}`: a scope is printable ASCII without `\"`, `\\` or `|`"),
    (R,                            "GET /é s",                         "component:default/svc: stagedoor.io/routes:1:5: path `/é`: path holds a character not allowed in a URL path"),
    (H,                            "api.example.com, , b.example.com", "component:default/svc: stagedoor.io/hosts:1:17: empty list item"),
    (H,                            "",                                 "component:default/svc: stagedoor.io/hosts:1:1: empty list item"),
    (H,                            "api.example.com:8443",             "component:default/svc: stagedoor.io/hosts:1:1: host `api.example.com:8443`: ports are ignored when matching; drop the port"),
    (H,                            "ok.example.com, a..b",             "component:default/svc: stagedoor.io/hosts:1:17: invalid host `a..b`: expected a DNS name or `*.` followed by one"),
    (H,                            "*",                                "component:default/svc: stagedoor.io/hosts:1:1: invalid host `*`: expected a DNS name or `*.` followed by one"),
    (H,                            "*.*.example.com",                  "component:default/svc: stagedoor.io/hosts:1:1: invalid host `*.*.example.com`: expected a DNS name or `*.` followed by one"),
    (G,                            "payments,,sre",                    "component:default/svc: stagedoor.io/allowed-groups:1:10: empty list item"),
    (G,                            "payments, api:x",                  "component:default/svc: stagedoor.io/allowed-groups:1:11: invalid principal `api:x`: expected [group:|user:][namespace/]name"),
    (O,                            "yes",                              "component:default/svc: stagedoor.io/allow-owner:1:1: expected `true` or `false`, found `yes`"),
    (O,                            "true",                             "component:default/svc: stagedoor.io/allow-owner:1:1: allow-owner is true but the entity has no owner"),
    ("stagedoor.io/allowed-group", "sre",                              "component:default/svc: stagedoor.io/allowed-group:1:1: unknown stagedoor annotation"),
    ("stagedoor.io/idp-groups",    "sre",                              "component:default/svc: stagedoor.io/idp-groups:1:1: this annotation is not read on a Component entity"),
];

#[test]
fn golden_error_lines() {
    for &(key, value, want) in GOLDEN_ERRORS {
        // Every case also carries a valid routes annotation (unless it is the one under test),
        // so the error is what removes the routes.
        let mut ann = vec![(key, value)];
        if key != R {
            ann.push((R, "GET /ok s"));
        }
        assert_eq!(errors(&ann), [want], "{key} = {value:?}");
    }
}

#[test]
fn too_many_words_on_a_line() {
    let line = format!(
        "GET /a {}",
        (0..=lang::MAX_WORDS)
            .map(|i| format!("s{i}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let e = lang::parse_routes(&line, "default").unwrap_err();
    assert_eq!(e.error, LangError::TooManyWords);
    assert_eq!(
        e.error.to_string(),
        "more than 64 requirement words on one line"
    );
    let ok = format!(
        "GET /a {}",
        (0..lang::MAX_WORDS)
            .map(|i| format!("s{i}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    assert!(lang::parse_routes(&ok, "default").is_ok());
}

#[test]
fn a_full_size_annotation_parses() {
    // close to the size limit; duplicate detection is indexed by path, not pairwise
    let text: String = (0..5000).map(|i| format!("GET /p{i} s\n")).collect();
    assert!(text.len() < lang::MAX_ANNOTATION_LEN);
    assert_eq!(lang::parse_routes(&text, "default").unwrap().len(), 5000);
}

#[test]
fn every_bad_annotation_is_reported_not_just_the_first() {
    let e = errors(&[
        ("stagedoor.io/routes", "GET /a"),
        ("stagedoor.io/hosts", "a b"),
    ]);
    assert_eq!(e.len(), 2, "{e:?}");
}

#[test]
fn oversized_annotation_is_an_error() {
    let big = "GET /a s\n".repeat(lang::MAX_ANNOTATION_LEN / 8);
    let e = lang::parse_routes(&big, "default").unwrap_err();
    assert_eq!((e.line, e.column, e.error), (1, 1, LangError::TooLarge));
}

#[test]
fn errors_on_groups_users_and_other_kinds() {
    let bad_group = group("payments", &[], Some("a,,b"));
    let routes_on_group = entity(json!({
        "kind": "Group", "metadata": {"name": "g", "annotations": {"stagedoor.io/routes": "GET / public"}},
    }));
    let bad_subject = entity(json!({
        "kind": "User", "metadata": {"name": "u", "annotations": {"stagedoor.io/subject": "two words"}},
    }));
    let domain = entity(json!({
        "kind": "Domain", "metadata": {"name": "d", "annotations": {"stagedoor.io/hosts": "a.example.com"}},
    }));
    let p = Policy::build(
        &[bad_group, routes_on_group, bad_subject, domain],
        Unmatched::Deny,
    );
    let got: Vec<String> = p.errors().iter().map(ToString::to_string).collect();
    assert_eq!(
        got,
        [
            "group:default/payments: stagedoor.io/idp-groups:1:3: empty list item",
            "user:default/u: stagedoor.io/subject:1:1: invalid value `two words`: expected one word without spaces or control characters",
            "group:default/g: stagedoor.io/routes:1:1: this annotation is not read on a Group entity",
            "domain:default/d: stagedoor.io/hosts:1:1: this annotation is not read on a Domain entity",
        ]
    );
    assert_eq!(p.route_count(), 0);
    assert_eq!(p.entity_count(), 4);
}

#[test]
fn an_error_removes_only_that_entitys_routes() {
    let team = Some("group:default/team");
    let good = routed(
        "Component",
        "good",
        team,
        &[("stagedoor.io/routes", "GET /good s\nGET /shared t")],
    );
    let bad = routed(
        "Component",
        "bad",
        team,
        &[("stagedoor.io/routes", "GET /bad s\nGET /shared t\nget /x y")],
    );
    let api = routed(
        "API",
        "good-api",
        team,
        &[("stagedoor.io/routes", "POST /api s")],
    );
    let p = Policy::build(&[good, bad, api], Unmatched::Deny);
    assert_eq!(p.errors().len(), 1);
    assert_eq!(p.errors()[0].entity, "component:default/bad");
    assert_eq!((p.errors()[0].line, p.errors()[0].column), (3, 1));
    // good's /good and good-api's /api route; good's /shared lies on a path the broken
    // entity holds closed, which encloses like a route that delegates nothing
    // (tests/policy_ownership.rs): held as a conflict naming the broken entity.
    assert_eq!(p.route_count(), 2);
    let c = p.conflicts();
    assert_eq!(c.len(), 1, "{c:?}");
    assert_eq!(
        (c[0].path.as_str(), &c[0].entities[..]),
        ("/shared", &["component:default/good".to_owned()][..])
    );
    assert!(
        c[0].under[0].contains("component:default/bad (annotations in error)"),
        "{:?}",
        c[0].under
    );
}

/// Catalog-supplied names reach a terminal in `policy show` and pretty logs: control
/// characters (ESC: `\e[8m` hides the rest), other blanks and bidi or zero-width
/// characters (U+202E reverses the line) are escaped everywhere they are printed.
#[test]
fn policy_show_prints_no_raw_control_or_bidi_characters() {
    let nasty = "evil\u{1b}[8m\u{202e}txt\u{200b}\u{85}\r";
    let owner = format!("group:default/{nasty}");
    let e = routed(
        "Component",
        nasty,
        Some(&owner),
        &[
            ("stagedoor.io/routes", "GET /x s\nGET /x public"),
            (&format!("stagedoor.io/{nasty}") as &str, "1"),
        ],
    );
    let ok = routed(
        "Component",
        &format!("{nasty}2"),
        Some(&owner),
        &[("stagedoor.io/routes", "GET /y s @ghost")],
    );
    let twin = routed(
        "Component",
        &format!("{nasty}3"),
        None,
        &[("stagedoor.io/routes", "GET /y/z s")],
    );
    let p = Policy::build(&[e, ok, twin], Unmatched::Deny);
    assert!(!p.errors().is_empty() && !p.conflicts().is_empty());
    assert!(!p.unknown_principals().is_empty());
    let mut printed = p.render_table();
    for e in p.errors() {
        printed.push_str(&e.to_string());
    }
    for c in p.conflicts() {
        printed.push_str(&c.to_string());
    }
    for u in p.unknown_principals() {
        printed.push_str(&u.to_string());
    }
    let bad: Vec<char> = printed
        .chars()
        .filter(|&c| {
            (c.is_control() && c != '\n')
                || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
        })
        .collect();
    assert!(
        bad.is_empty(),
        "raw {bad:?} in:\n{}",
        printed.escape_debug()
    );
    assert!(printed.contains("evil\\u{1b}[8m\\u{202e}txt"), "{printed}");
}
