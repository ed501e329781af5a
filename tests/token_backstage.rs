//! Backstage-issued identities in the decision, without Backstage: a caller whose
//! token came from a `kind = "backstage"` issuer is its User entity, found by ref in
//! the catalog, with that User's catalog groups; nothing else the identity carries
//! (groups, subject, email) counts for it, and no other issuer's identity can reach a
//! User by its ref. The real Backstage is in tests/token_backstage_e2e.rs.

use stagedoor::catalog::file;
use stagedoor::identity::Identity;
use stagedoor::policy::{Policy, Request, Unmatched};
use stagedoor::reason::Reason;

const ORG: &str = r#"
apiVersion: backstage.io/v1alpha1
kind: Group
metadata: { name: engineering }
spec: { type: department, children: [] }
---
apiVersion: backstage.io/v1alpha1
kind: Group
metadata: { name: payments-team, annotations: { stagedoor.io/idp-groups: payments-devs } }
spec: { type: team, parent: engineering, children: [] }
---
apiVersion: backstage.io/v1alpha1
kind: Group
metadata: { name: search-team }
spec: { type: team, children: [] }
---
apiVersion: backstage.io/v1alpha1
kind: User
metadata: { name: alice, annotations: { stagedoor.io/subject: "00u1alice" } }
spec: { profile: { email: alice@example.com }, memberOf: [payments-team] }
---
apiVersion: backstage.io/v1alpha1
kind: User
metadata: { name: bob, namespace: ops }
spec: { memberOf: [group:default/search-team] }
---
apiVersion: backstage.io/v1alpha1
kind: Component
metadata:
  name: payments-api
  annotations:
    stagedoor.io/routes: |
      GET /payments authenticated @payments-team
      GET /eng      authenticated @engineering
      GET /scoped   payments:read
      GET /alice    authenticated @user:default/alice
spec: { type: service, lifecycle: production, owner: payments-team }
---
apiVersion: backstage.io/v1alpha1
kind: Component
metadata:
  name: search-api
  annotations:
    stagedoor.io/routes: |
      GET /search authenticated @search-team
      GET /status authenticated
spec: { type: service, lifecycle: production, owner: search-team }
"#;

fn policy() -> Policy {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("org.yaml"), ORG).unwrap();
    let entities = file::load(&["*.yaml".to_owned()], dir.path()).unwrap();
    let p = Policy::build(&entities, Unmatched::Deny);
    assert!(p.errors().is_empty(), "{:?}", p.errors());
    p
}

fn backstage(user: &str) -> Identity {
    Identity {
        issuer: "https://backstage.example.com/api/auth".into(),
        sub: Some(user.into()),
        backstage_user: Some(user.into()),
        ..Identity::default()
    }
}

fn decide(p: &Policy, path: &str, who: &Identity) -> Reason {
    let req = Request {
        method: "GET",
        host: "svc.example.com",
        path,
    };
    p.decide(&req, Ok(who)).reason
}

#[test]
fn the_user_named_by_the_token_holds_its_catalog_groups() {
    let p = policy();
    let alice = backstage("user:default/alice");
    assert_eq!(decide(&p, "/payments", &alice), Reason::Ok);
    assert_eq!(decide(&p, "/eng", &alice), Reason::Ok, "parent group");
    assert_eq!(decide(&p, "/alice", &alice), Reason::Ok, "the User itself");
    assert_eq!(decide(&p, "/search", &alice), Reason::NotMember);
    assert_eq!(decide(&p, "/status", &alice), Reason::Ok);
    assert_eq!(
        decide(&p, "/scoped", &alice),
        Reason::InsufficientScope,
        "a Backstage token grants no scope"
    );
    let bob = backstage("user:ops/bob");
    assert_eq!(decide(&p, "/search", &bob), Reason::Ok);
    assert_eq!(decide(&p, "/payments", &bob), Reason::NotMember);
}

#[test]
fn only_the_ref_counts_for_a_backstage_identity() {
    let p = policy();
    // A User not in the catalog holds nothing, whatever else the identity says.
    let ghost = Identity {
        groups: vec!["payments-devs".into(), "group:default/payments-team".into()],
        email: Some("alice@example.com".into()),
        ..backstage("user:default/ghost")
    };
    assert_eq!(decide(&p, "/payments", &ghost), Reason::NotMember);
    assert_eq!(decide(&p, "/status", &ghost), Reason::Ok);
    // Nor does alice's subject annotation, spelt as a Backstage sub.
    let by_subject = backstage("00u1alice");
    assert_eq!(decide(&p, "/payments", &by_subject), Reason::NotMember);
    // Same name in another namespace is another User.
    assert_eq!(
        decide(&p, "/payments", &backstage("user:ops/alice")),
        Reason::NotMember
    );
}

#[test]
fn no_other_issuer_reaches_a_user_by_its_ref() {
    let p = policy();
    let oidc = Identity {
        issuer: "https://idp.example.com".into(),
        sub: Some("user:default/alice".into()),
        ..Identity::default()
    };
    assert_eq!(decide(&p, "/payments", &oidc), Reason::NotMember);
    // The OIDC paths still work as before for the same User.
    let by_sub = Identity {
        sub: Some("00u1alice".into()),
        ..oidc.clone()
    };
    assert_eq!(decide(&p, "/payments", &by_sub), Reason::Ok);
}
