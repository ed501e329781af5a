//! Deciding on the request the backend will act on: paths that backends read with a
//! suffix cut off or trailing dots and spaces dropped, requests with no Host, and
//! targets that are not origin-form.

mod policy_support;

use policy_support::{component, ident, reason as decide};
use stagedoor::policy::{Policy, Unmatched};
use stagedoor::reason::Reason;

const ROUTES: &str = "stagedoor.io/routes";
const HOSTS: &str = "stagedoor.io/hosts";

/// A public catch-all that lets other owners route under it (see policy_ownership.rs).
fn site() -> stagedoor::catalog::Entity {
    component(
        "pub",
        &[(ROUTES, "GET / public"), ("stagedoor.io/delegate", "/ *")],
    )
}

/// Rails (`(.:format)` on every route), Spring MVC suffix matching and IIS (trailing
/// dots and spaces dropped) would route each `BadPath` row to the admin handler.
#[test]
#[rustfmt::skip]
fn suffix_table() {
    let p = Policy::build(
        &[component("orders", &[(
            ROUTES,
            "GET,HEAD /api/orders orders:read\n\
             * /api/orders/admin orders:admin\n\
             GET /static public\n\
             GET /report.pdf public\n\
             * /report orders:admin\n\
             GET /api/orders/v1 orders:read",
        )])],
        Unmatched::Deny,
    );
    let reader = ident(&["orders:read"], &[]);
    // (path, reason for a caller holding only orders:read)
    let cases: &[(&str, Reason)] = &[
        ("/api/orders/admin.json",          Reason::BadPath), // Rails format, Spring suffix
        ("/api/orders/admin.",              Reason::BadPath), // IIS trailing dot
        ("/api/orders/admin..",             Reason::BadPath),
        ("/api/orders/admin%20",            Reason::BadPath), // IIS trailing space
        ("/api/orders/admin%20.%20",        Reason::BadPath),
        ("/api/orders/admin%2E",            Reason::BadPath), // %2E is decoded to `.`
        ("/api/orders/admin.json/",         Reason::BadPath),
        ("/api/orders/admin.x/users",       Reason::BadPath), // cut in a middle segment
        ("/api/orders/admin%20/users",      Reason::BadPath),
        ("/api/orders/admin.tar.gz",        Reason::BadPath), // first dot
        ("/api/orders/Admin.",              Reason::BadPath), // IIS: trim, then fold case
        ("/api/orders/ADMIN.json",          Reason::BadPath),
        ("/api.json",                       Reason::NoRoute), // nothing deeper to reach
        ("/api/orders.json",                Reason::BadPath), // no route of its own (`/api/orders` is no prefix of it), Rails reads /api/orders
        ("/api/orders/7.json",              Reason::Ok),      // same route, same rule
        ("/api/orders/v1.json",             Reason::Ok),      // deeper, but the same requirements
        ("/api/orders/admin2.json",         Reason::Ok),      // `admin2` is no route
        ("/api/orders/administrator.",      Reason::Ok),
        ("/api/orders/a.dmin",              Reason::Ok),
        ("/static/app.min.js",              Reason::Public),
        ("/static/admin.css",               Reason::Public),
        // an explicit dotted route whose cut form has other requirements: Rails serves
        // /report.pdf from /report's handler, so the public line cannot hold
        ("/report.pdf",                     Reason::BadPath),
        ("/api/v1.2.json",                  Reason::NoRoute), // cut at every dot: /api/v1, /api/v1.2
        ("/api/orders/admin.v2.json",       Reason::BadPath),
        ("/report.pdf.",                    Reason::BadPath), // no route of its own; IIS reads /report.pdf
        ("/report.",                        Reason::BadPath), // no route of its own; IIS reads /report
    ];
    for (path, want) in cases {
        assert_eq!(decide(&p, "GET", "h", path, Ok(&reader)), *want, "{path:?}");
        if *want == Reason::BadPath {
            assert_eq!(decide(&p, "GET", "h", path, Err(Reason::MissingToken)), *want, "{path:?}");
        }
    }
}

/// A suffix under a public catch-all would otherwise reach a scoped route (no route
/// is as long as the matched `/`), and with `unmatched = "allow"` the same holds for
/// no route at all.
#[test]
fn suffix_guard_under_a_catch_all_and_unmatched_allow() {
    let cat = [component(
        "svc",
        &[(ROUTES, "GET / public\n* /admin svc:admin")],
    )];
    let p = Policy::build(&cat, Unmatched::Deny);
    for path in ["/admin.json", "/admin.", "/admin%20", "/Admin.json"] {
        assert_eq!(
            decide(&p, "GET", "h", path, Err(Reason::MissingToken)),
            Reason::BadPath,
            "{path}"
        );
    }
    assert_eq!(
        decide(&p, "GET", "h", "/index.html", Err(Reason::MissingToken)),
        Reason::Public
    );
    let only_admin = [component("svc", &[(ROUTES, "* /admin svc:admin")])];
    let p = Policy::build(&only_admin, Unmatched::Allow);
    assert_eq!(
        decide(&p, "GET", "h", "/admin.json", Err(Reason::MissingToken)),
        Reason::BadPath
    );
    assert_eq!(
        decide(&p, "GET", "h", "/other.json", Err(Reason::MissingToken)),
        Reason::UnmatchedAllowed
    );
}

/// The guard compares with the routes of the request's host and method.
#[test]
fn suffix_guard_follows_host_and_method() {
    let cat = [
        site(),
        component(
            "billing",
            &[
                (HOSTS, "billing.example"),
                (ROUTES, "POST /api/invoices billing:write"),
            ],
        ),
    ];
    let p = Policy::build(&cat, Unmatched::Deny);
    let anon = Err(Reason::MissingToken);
    assert_eq!(
        decide(&p, "POST", "billing.example", "/api/invoices.json", anon),
        Reason::BadPath
    );
    // GET has no deeper route on billing; another host has none at all
    assert_eq!(
        decide(&p, "GET", "billing.example", "/api/invoices.json", anon),
        Reason::Public
    );
    assert_eq!(
        decide(&p, "POST", "other.example", "/api/invoices.json", anon),
        Reason::NoRoute
    );
}

/// No Host: only a policy without host-scoped routes decides it, since a backend may
/// take its virtual host from the absolute target HAProxy forwarded.
#[test]
fn no_host_is_bad_request_when_routes_are_host_scoped() {
    let any_only = [site()];
    let p = Policy::build(&any_only, Unmatched::Deny);
    assert_eq!(
        decide(&p, "GET", "", "/api/invoices", Err(Reason::MissingToken)),
        Reason::Public
    );
    let mut cat = any_only.to_vec();
    cat.push(component(
        "billing",
        &[
            (HOSTS, "billing.example"),
            (ROUTES, "GET /api/invoices billing:read"),
        ],
    ));
    for unmatched in [Unmatched::Deny, Unmatched::Allow] {
        let p = Policy::build(&cat, unmatched);
        assert!(p.has_host_routes());
        for host in ["", ":80"] {
            let r = decide(&p, "GET", host, "/api/invoices", Err(Reason::MissingToken));
            assert_eq!(r, Reason::BadRequest, "{host:?} {unmatched:?}");
        }
        assert_eq!(
            decide(
                &p,
                "GET",
                "billing.example",
                "/api/invoices",
                Err(Reason::MissingToken)
            ),
            Reason::MissingToken
        );
        assert_eq!(
            decide(&p, "GET", "other.example", "/", Err(Reason::MissingToken)),
            Reason::Public
        );
    }
    // A broken host-scoped entity holds its paths on its hosts: that counts too.
    let broken = [
        site(),
        component(
            "b",
            &[
                (HOSTS, "billing.example"),
                (ROUTES, "GET /api/invoices nope nope public"),
            ],
        ),
    ];
    let p = Policy::build(&broken, Unmatched::Deny);
    assert_eq!(
        decide(&p, "GET", "", "/api/invoices", Err(Reason::MissingToken)),
        Reason::BadRequest
    );
}

/// Targets that are not origin-form are bad_request, whatever the route table.
#[test]
fn non_origin_form_targets_are_bad_request() {
    let p = Policy::build(
        &[component("pub", &[(ROUTES, "* / public")])],
        Unmatched::Allow,
    );
    for path in ["", "*", "api", "http://billing.example/api", "?/api", "%2F"] {
        assert_eq!(
            decide(&p, "OPTIONS", "h", path, Err(Reason::MissingToken)),
            Reason::BadRequest,
            "{path:?}"
        );
    }
}
