//! Review of 522a54f and fff918e (issue 14, third pass): what a decision names and how
//! it serializes, and the `/metrics` text, byte for byte as they were before those
//! commits. The golden files under `tests/data/review2/` were written by this same
//! test run at e6d7590 (before both commits) with `REVIEW2_BLESS=1`.

mod policy_support;

use std::sync::Arc;
use std::time::Duration;

use policy_support::{component, group, ident, routed, user};
use stagedoor::catalog::Entity;
use stagedoor::identity::Identity;
use stagedoor::metrics::{Metrics, Sources};
use stagedoor::policy::{Policy, Request, Unmatched};
use stagedoor::reason::Reason;
use stagedoor::token::{TokenConfig, Verifier};

const ROUTES: &str = "stagedoor.io/routes";
const HOSTS: &str = "stagedoor.io/hosts";

/// Compares `got` with the golden file `name`, or writes it under `REVIEW2_BLESS`.
fn golden(name: &str, got: &str) {
    let path = format!("{}/tests/data/review2/{name}", env!("CARGO_MANIFEST_DIR"));
    if std::env::var_os("REVIEW2_BLESS").is_some() {
        std::fs::create_dir_all(std::path::Path::new(&path).parent().unwrap()).unwrap();
        std::fs::write(&path, got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).expect("golden file");
    for (n, (w, g)) in want.lines().zip(got.lines()).enumerate() {
        assert_eq!(g, w, "{name}, line {}", n + 1);
    }
    assert_eq!(
        got.lines().count(),
        want.lines().count(),
        "{name}: line count"
    );
}

fn delegating(name: &str, annotations: &[(&str, &str)]) -> Entity {
    let mut ann = annotations.to_vec();
    ann.push(("stagedoor.io/delegate", "/ *"));
    routed("Component", name, Some("group:default/platform"), &ann)
}

/// Every kind of slot a decision can come from: routes with and without an owner,
/// scopes, groups, public and authenticated; conflicts; a broken entity.
fn policies() -> Vec<(&'static str, Policy)> {
    let directory = || {
        vec![
            group("engineering", &[], Some("eng-all")),
            group("payments", &["engineering"], Some("payments-engineers")),
            group("platform", &["engineering"], None),
            group("sre", &["platform"], None),
            user(
                "alice",
                &["payments"],
                "alice@example.com",
                Some("svc-client"),
            ),
        ]
    };
    let mut routed_catalog = vec![
        routed(
            "Component",
            "orders",
            Some("group:default/payments"),
            &[
                (HOSTS, "api.example.com"),
                (
                    ROUTES,
                    "GET,HEAD /api/orders orders:read audit|admin\n\
                     POST /api/orders orders:write\n\
                     * /api/orders/admin orders:admin @sre\n\
                     GET /api/orders/health public\n\
                     GET /api/orders/me authenticated\n",
                ),
                ("stagedoor.io/allow-owner", "true"),
            ],
        ),
        component(
            "loose",
            &[(ROUTES, "GET /loose authenticated\nPUT /loose w")],
        ),
    ];
    routed_catalog.extend(directory());
    let conflicts = vec![
        delegating("a", &[(ROUTES, "GET,HEAD /shared s\nGET /a-only s")]),
        delegating("b", &[(ROUTES, "GET /shared/ s")]),
        delegating("c", &[(ROUTES, "GET /shared public")]),
        delegating(
            "d",
            &[
                (HOSTS, "api.example.com"),
                (ROUTES, "GET /shared s\n* /both s"),
            ],
        ),
        delegating("e", &[(HOSTS, "API.example.com."), (ROUTES, "* /both t")]),
    ];
    let broken = vec![
        component(
            "site",
            &[(ROUTES, "* / public"), ("stagedoor.io/delegate", "/ *")],
        ),
        routed(
            "Component",
            "billing",
            Some("group:default/payments"),
            &[(
                ROUTES,
                "GET /api/billing billing:read\nPOST /api/refunds billing:write @@bad",
            )],
        ),
        component("reports", &[(ROUTES, "GET /api/billing/reports public")]),
    ];
    vec![
        ("routes", Policy::build(&routed_catalog, Unmatched::Deny)),
        (
            "routes-open",
            Policy::build(&routed_catalog, Unmatched::Allow),
        ),
        ("conflicts", Policy::build(&conflicts, Unmatched::Deny)),
        ("broken", Policy::build(&broken, Unmatched::Deny)),
    ]
}

#[test]
fn decisions_name_and_serialize_as_before() {
    let tokens: Vec<(&str, Result<Identity, Reason>)> = vec![
        ("none", Err(Reason::MissingToken)),
        ("expired", Err(Reason::Expired)),
        ("bare", Ok(ident(&[], &[]))),
        (
            "reader",
            Ok(ident(&["orders:read", "audit"], &["payments-engineers"])),
        ),
        (
            "reader-outsider",
            Ok(ident(&["orders:read", "admin"], &["eng-all"])),
        ),
        (
            "admin",
            Ok(ident(
                &["orders:admin", "s", "t", "w"],
                &["payments-engineers"],
            )),
        ),
    ];
    let requests = [
        ("GET", "api.example.com", "/api/orders"),
        ("HEAD", "api.example.com", "/api/orders/1"),
        ("POST", "api.example.com", "/api/orders"),
        ("DELETE", "api.example.com", "/api/orders/admin/7"),
        ("GET", "api.example.com", "/api/orders/health"),
        ("GET", "api.example.com", "/api/orders/me"),
        ("GET", "other.example.com", "/api/orders"),
        ("GET", "h", "/loose"),
        ("PUT", "h", "/loose"),
        ("GET", "h", "/nope"),
        ("GET", "h", "/shared/1"),
        ("HEAD", "h", "/shared"),
        ("GET", "h", "/a-only"),
        ("PATCH", "api.example.com", "/both"),
        ("GET", "h", "/api/billing/7"),
        ("POST", "h", "/api/refunds"),
        ("GET", "h", "/api/billing/reports"),
        ("GET", "h", "/elsewhere"),
        ("GET", "h", "/a/../b"),
        ("get", "h", "/x"),
        ("GET", "h", "*"),
        ("GET", "a b", "/x"),
    ];
    let mut out = String::new();
    for (name, p) in policies() {
        for (method, host, path) in requests {
            for (label, token) in &tokens {
                let d = p.decide(
                    &Request { method, host, path },
                    token.as_ref().map_err(|r| *r),
                );
                let again = p.decide(
                    &Request { method, host, path },
                    token.as_ref().map_err(|r| *r),
                );
                assert_eq!(d, again, "decide is pure");
                let json = serde_json::to_string(&d).unwrap();
                out.push_str(&format!("{name} {method} {host} {path} {label} {json}\n"));
            }
        }
    }
    golden("decisions.txt", &out);
}

/// The text a scrape returns, with the samples of each family sorted (the registry's
/// `Family` wrote them in hash-map order before fff918e).
fn normalized(text: &str) -> String {
    let mut out = Vec::new();
    let mut run: Vec<&str> = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') {
            run.sort_unstable();
            out.append(&mut run);
            out.push(line);
        } else {
            run.push(line);
        }
    }
    run.sort_unstable();
    out.append(&mut run);
    out.join("\n") + "\n"
}

#[test]
fn metrics_render_as_before() {
    let m = Arc::new(Metrics::new());
    let sources = Sources {
        engine: Default::default(),
        verifier: Verifier::with_key_sets(vec![], TokenConfig::default()),
        catalog: None,
        policy: Default::default(),
        log_dropped: Default::default(),
    };
    let fresh = normalized(&m.render(&sources, 0));
    // Twelve threads (more than the eight counter lines), enforced and shadow.
    let threads: Vec<_> = (0..12usize)
        .map(|k| {
            let m = m.clone();
            std::thread::spawn(move || {
                for n in 0..=k {
                    let reason = Reason::ALL[(k * 3 + n) % Reason::ALL.len()];
                    m.record_decision(reason, true, Duration::from_micros(7 + 90 * n as u64));
                }
                let shadow = Reason::ALL[(k * 5) % Reason::ALL.len()];
                m.record_decision(shadow, false, Duration::from_millis(k as u64));
                if k % 4 == 0 {
                    m.record_decision(Reason::InternalError, false, Duration::from_secs(2));
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    let t = normalized(&m.render(&sources, 0));
    golden("metrics.txt", &format!("{fresh}---\n{t}"));
}
