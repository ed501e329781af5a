//! Policy benchmarks: building from 10,000 generated entities (target ≤ 500 ms) and one
//! decision over a 5,000-route table (target ≤ 1 µs). See BENCHMARKS.md, "## Policy".

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use stagedoor::catalog::entity::Metadata;
use stagedoor::catalog::{Entity, Relation};
use stagedoor::identity::Identity;
use stagedoor::policy::{Policy, Request, Unmatched};
use stagedoor::reason::Reason;

fn entity(
    kind: &str,
    name: String,
    annotations: Vec<(&str, String)>,
    spec: serde_json::Value,
    relations: Vec<(&str, String)>,
) -> Entity {
    Entity {
        api_version: "backstage.io/v1alpha1".into(),
        kind: kind.into(),
        metadata: Metadata {
            name,
            namespace: "default".into(),
            annotations: annotations
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect::<BTreeMap<_, _>>(),
            etag: None,
        },
        spec,
        relations: relations
            .into_iter()
            .map(|(k, t)| Relation {
                kind: k.into(),
                target_ref: t,
            })
            .collect(),
    }
}

/// A catalog with `services` routed components (5 route lines each, every other one on its
/// own host, a third restricted to groups), `groups` nested 4 deep and `users`.
fn catalog(services: usize, groups: usize, users: usize) -> Vec<Entity> {
    let mut v = Vec::with_capacity(services + groups + users);
    for g in 0..groups {
        let mut rel = Vec::new();
        if g % 4 != 0 {
            rel.push(("childOf", format!("group:default/team-{}", g - 1)));
        }
        v.push(entity(
            "Group",
            format!("team-{g}"),
            vec![(
                "stagedoor.io/idp-groups",
                format!("idp-team-{g}, 00g{g:05}"),
            )],
            serde_json::json!({"type": "team", "children": []}),
            rel,
        ));
    }
    for u in 0..users {
        v.push(entity(
            "User",
            format!("user-{u}"),
            vec![("stagedoor.io/subject", format!("sub-{u}"))],
            serde_json::json!({"profile": {"email": format!("user-{u}@example.com")}}),
            vec![(
                "memberOf",
                format!("group:default/team-{}", u % groups.max(1)),
            )],
        ));
    }
    for s in 0..services {
        let mut ann = vec![(
            "stagedoor.io/routes",
            format!(
                "GET,HEAD /api/svc-{s}            svc-{s}:read\n\
                 POST     /api/svc-{s}            svc-{s}:write\n\
                 *        /api/svc-{s}/admin      svc-{s}:admin @team-{}\n\
                 GET      /api/svc-{s}/health     public\n\
                 GET      /api/svc-{s}/v1/items   authenticated",
                s % groups.max(1)
            ),
        )];
        if s % 2 == 0 {
            ann.push((
                "stagedoor.io/hosts",
                format!("svc-{s}.example.com, *.svc-{s}.internal"),
            ));
        }
        if s % 3 == 0 {
            ann.push((
                "stagedoor.io/allowed-groups",
                format!("team-{}", s % groups.max(1)),
            ));
            ann.push(("stagedoor.io/allow-owner", "true".into()));
        }
        v.push(entity(
            "Component",
            format!("svc-{s}"),
            ann,
            serde_json::json!({"type": "service", "owner": format!("team-{}", s % groups.max(1))}),
            vec![(
                "ownedBy",
                format!("group:default/team-{}", s % groups.max(1)),
            )],
        ));
    }
    v
}

fn build(c: &mut Criterion) {
    // 8,000 services (40,000 route lines), 1,500 groups, 500 users = 10,000 entities.
    let entities = catalog(8_000, 1_500, 500);
    assert_eq!(entities.len(), 10_000);
    let p = Policy::build(&entities, Unmatched::Deny);
    assert!(p.errors().is_empty() && p.conflicts().is_empty());
    c.bench_function("policy_build_10k_entities", |b| {
        b.iter(|| Policy::build(black_box(&entities), Unmatched::Deny))
    });
}

fn decide(c: &mut Criterion) {
    // 1,000 services × 5 lines = 5,000 routes.
    let entities = catalog(1_000, 200, 200);
    let p = Policy::build(&entities, Unmatched::Deny);
    assert_eq!(p.route_count(), 5_000);
    // svc-600: host-specific, group-restricted (600 % 3 == 0), owner team-0 (600 % 200).
    let caller = Identity {
        issuer: "https://idp.example.com/".into(),
        sub: Some("sub-7".into()),
        email: Some("nobody@example.com".into()),
        scopes: vec!["openid".into(), "profile".into(), "svc-600:read".into()],
        groups: vec!["everyone".into(), "idp-team-3".into(), "idp-team-0".into()],
        exp: 4_000_000_000,
        ..Identity::default()
    };
    let ok = Request {
        method: "GET",
        host: "svc-600.example.com",
        path: "/api/svc-600/orders/12345?x=1",
    };
    assert_eq!(p.decide(&ok, Ok(&caller)).reason, Reason::Ok);
    c.bench_function("policy_decide_5k_routes_ok_member", |b| {
        b.iter(|| p.decide(black_box(&ok), black_box(Ok(&caller))))
    });
    let any_host = Request {
        method: "GET",
        host: "gw.example.com:8443",
        path: "/api/svc-601/v1/items/9",
    };
    assert_eq!(p.decide(&any_host, Ok(&caller)).reason, Reason::Ok);
    c.bench_function("policy_decide_5k_routes_any_host", |b| {
        b.iter(|| p.decide(black_box(&any_host), black_box(Ok(&caller))))
    });
    let miss = Request {
        method: "GET",
        host: "svc-600.example.com",
        path: "/nothing/here/at/all/deep/path",
    };
    assert_eq!(p.decide(&miss, Ok(&caller)).reason, Reason::NoRoute);
    c.bench_function("policy_decide_5k_routes_no_route", |b| {
        b.iter(|| p.decide(black_box(&miss), black_box(Ok(&caller))))
    });
    let dirty = Request {
        method: "GET",
        host: "SVC-600.example.com",
        path: "//api/%73vc-600//orders/1",
    };
    assert_eq!(p.decide(&dirty, Ok(&caller)).reason, Reason::Ok);
    c.bench_function("policy_decide_5k_routes_normalised", |b| {
        b.iter(|| p.decide(black_box(&dirty), black_box(Ok(&caller))))
    });
}

fn decide_suffix(c: &mut Criterion) {
    let entities = catalog(1_000, 200, 200);
    let p = Policy::build(&entities, Unmatched::Deny);
    let caller = Identity {
        issuer: "https://idp.example.com/".into(),
        sub: Some("sub-7".into()),
        scopes: vec!["svc-600:read".into()],
        groups: vec!["idp-team-0".into()],
        exp: 4_000_000_000,
        ..Identity::default()
    };
    // A dotted last segment: the suffix guard looks the cut path up (and finds the
    // same route), the most it costs an allowed request.
    let dotted = Request {
        method: "GET",
        host: "svc-600.example.com",
        path: "/api/svc-600/orders/report.2026.json",
    };
    assert_eq!(p.decide(&dotted, Ok(&caller)).reason, Reason::Ok);
    c.bench_function("policy_decide_5k_routes_dotted", |b| {
        b.iter(|| p.decide(black_box(&dotted), black_box(Ok(&caller))))
    });
}

criterion_group!(benches, build, decide, decide_suffix);
criterion_main!(benches);
