//! The policy over real entities recorded from a Backstage 4.0.5 catalog
//! (tests/fixtures/policy, copied from the shared reference samples), with stagedoor
//! annotations added the way a team would add them to catalog-info.yaml.

mod policy_support;

use policy_support::ident;
use stagedoor::catalog::Entity;
use stagedoor::identity::Identity;
use stagedoor::policy::{Policy, Request, Unmatched};
use stagedoor::reason::Reason;

fn load(name: &str) -> Entity {
    let path = format!(
        "{}/tests/fixtures/policy/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn catalog() -> Vec<Entity> {
    let mut api = load("component_default_payments-api");
    let ann = &mut api.metadata.annotations;
    ann.insert(
        "stagedoor.io/hosts".into(),
        "payments.internal.example.com".into(),
    );
    ann.insert(
        "stagedoor.io/routes".into(),
        "GET  /v1/payments  payments:read\nPOST /v1/payments  payments:write\nGET  /healthz  public\n".into(),
    );
    ann.insert("stagedoor.io/allow-owner".into(), "true".into());
    let mut system = load("system_default_payments");
    system.metadata.annotations.insert(
        "stagedoor.io/routes".into(),
        "GET /v1/ledger authenticated @engineering".into(),
    );
    vec![
        api,
        system,
        load("api_default_payments-rest"),
        load("group_default_engineering"),
        load("group_default_payments-team"),
        load("user_default_alice"),
    ]
}

#[test]
fn recorded_entities_build_and_decide() {
    let p = Policy::build(&catalog(), Unmatched::Deny);
    assert!(p.errors().is_empty(), "{:?}", p.errors());
    assert!(p.conflicts().is_empty());
    assert_eq!((p.entity_count(), p.route_count()), (6, 4));
    // alice: User memberOf payments-team (relation), matched by spec.profile.email
    let alice = Identity {
        email: Some("alice@example.com".into()),
        ..ident(&["payments:read"], &[])
    };
    let stranger = Identity {
        email: Some("eve@example.com".into()),
        ..ident(&["payments:read"], &[])
    };
    let host = "payments.internal.example.com";
    let req = |method, path| Request { method, host, path };

    let d = p.decide(&req("GET", "/v1/payments/42"), Ok(&alice));
    assert_eq!(d.reason, Reason::Ok);
    assert_eq!(d.entity(), Some("component:default/payments-api"));
    assert_eq!(d.owner(), Some("group:default/payments-team"));
    assert_eq!(
        p.decide(&req("GET", "/v1/payments/42"), Ok(&stranger))
            .reason,
        Reason::NotMember
    );
    assert_eq!(
        p.decide(&req("POST", "/v1/payments"), Ok(&alice)).reason,
        Reason::InsufficientScope
    );
    assert_eq!(
        p.decide(&req("GET", "/healthz"), Err(Reason::MissingToken))
            .reason,
        Reason::Public
    );
    // the System route (any host): payments-team is childOf engineering
    let d = p.decide(
        &Request {
            method: "GET",
            host: "gw",
            path: "/v1/ledger",
        },
        Ok(&alice),
    );
    assert_eq!(
        (d.reason, d.entity()),
        (Reason::Ok, Some("system:default/payments"))
    );
    assert_eq!(
        p.decide(
            &Request {
                method: "GET",
                host: "gw",
                path: "/v1/ledger"
            },
            Ok(&stranger)
        )
        .reason,
        Reason::NotMember
    );
}

#[test]
fn table_lists_every_route_with_owner_and_groups() {
    let mut cat = catalog();
    cat.push(
        serde_json::from_value(serde_json::json!({
            "kind": "Component",
            "metadata": {"name": "broken", "annotations": {"stagedoor.io/routes": "GET /x\n"}},
        }))
        .unwrap(),
    );
    let table = Policy::build(&cat, Unmatched::Deny).render_table();
    let want = "\
HOST                           METHODS  PATH          REQUIREMENT     GROUPS                       ENTITY                          OWNER
*                              GET      /v1/ledger    authenticated   group:default/engineering    system:default/payments         group:default/payments-team
payments.internal.example.com  GET      /healthz      public          -                            component:default/payments-api  group:default/payments-team
payments.internal.example.com  GET      /v1/payments  payments:read   group:default/payments-team  component:default/payments-api  group:default/payments-team
payments.internal.example.com  POST     /v1/payments  payments:write  group:default/payments-team  component:default/payments-api  group:default/payments-team
4 routes from 7 entities; unmatched requests: deny
error: component:default/broken: stagedoor.io/routes:1:7: expected a requirement: `public`, `authenticated` or scopes
";
    assert_eq!(table, want);
}
