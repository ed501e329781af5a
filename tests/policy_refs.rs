//! A ref that loads can always be named: every entity ref the file source accepts (a
//! `spec.memberOf` relation it keeps, or an entity's own ref) can be written in an
//! `@group` word of a route, parses, and resolves to that entity. One rule parses refs
//! everywhere (`stagedoor::catalog::entity_ref`); before it, the file source accepted
//! `memberOf: [team+a]` while `@team+a` was an annotation error. Now such an entry is
//! dropped (the User stays, with its other relations).

use proptest::prelude::*;
use serde_json::{Value, json};
use stagedoor::catalog::file::load_report;
use stagedoor::identity::Identity;
use stagedoor::policy::{Policy, Request, Unmatched};
use stagedoor::reason::Reason;

/// A one-file catalog: User alice (subject `alice-sub`) in `ns`, a member of `group_ref`
/// as written; a Group `group_ns/group_name` (IdP group `probe-group`); a Component in
/// `ns` whose route requires `@{group_ref}`. Loads it with the file source and builds
/// the policy.
fn load(
    ns: &str,
    group_ref: &str,
    group_ns: &str,
    group_name: &str,
) -> (Vec<String>, bool, Policy) {
    let docs: [Value; 3] = [
        json!({
            "apiVersion": "backstage.io/v1alpha1", "kind": "User",
            "metadata": {"name": "alice", "namespace": ns,
                         "annotations": {"stagedoor.io/subject": "alice-sub"}},
            "spec": {"memberOf": [group_ref]},
        }),
        json!({
            "apiVersion": "backstage.io/v1alpha1", "kind": "Group",
            "metadata": {"name": group_name, "namespace": group_ns,
                         "annotations": {"stagedoor.io/idp-groups": "probe-group"}},
            "spec": {"type": "team", "children": []},
        }),
        json!({
            "apiVersion": "backstage.io/v1alpha1", "kind": "Component",
            "metadata": {"name": "svc", "namespace": ns, "annotations": {
                "stagedoor.io/routes": format!("GET /x authenticated @{group_ref}")}},
            "spec": {"type": "service", "owner": "nobody"},
        }),
    ];
    let text: Vec<String> = docs.iter().map(Value::to_string).collect();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("catalog.yaml"), text.join("\n---\n")).unwrap();
    let loaded = load_report(&["catalog.yaml".to_owned()], dir.path()).unwrap();
    let refs = loaded.entities.iter().map(|e| e.entity_ref()).collect();
    // alice's membership as written was kept as a relation (not dropped as an odd ref).
    let member_of = loaded.entities.iter().any(|e| {
        e.entity_ref() == format!("user:{ns}/alice")
            && e.relations.iter().any(|r| r.kind == "memberOf")
    });
    (
        refs,
        member_of,
        Policy::build(&loaded.entities, Unmatched::Deny),
    )
}

fn reason(p: &Policy, sub: &str, groups: &[&str]) -> Reason {
    let id = Identity {
        sub: Some(sub.to_owned()),
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        exp: 4_000_000_000,
        ..Identity::default()
    };
    let req = Request {
        method: "GET",
        host: "h",
        path: "/x",
    };
    p.decide(&req, Ok(&id)).reason
}

/// The property: whatever the file source loads can be named, and resolves.
fn check(ns: &str, group_ref: &str, group_ns: &str, group_name: &str) -> Result<(), String> {
    let (refs, member_of, p) = load(ns, group_ref, group_ns, group_name);
    let group = format!("group:{group_ns}/{group_name}").to_ascii_lowercase();
    let errors: Vec<String> = p.errors().iter().map(ToString::to_string).collect();
    let fail = |what: &str| Err(format!("memberOf {group_ref:?}: {what}; errors {errors:?}"));
    if member_of {
        // alice's membership loaded: the route names it, and it lets her in.
        if !errors.is_empty() {
            return fail("loaded, but the route naming it is in error");
        }
        if reason(&p, "alice-sub", &[]) != Reason::Ok {
            return fail("loaded and named, but the member is not let in");
        }
        if reason(&p, "mallory", &[]) != Reason::NotMember {
            return fail("a non-member is let in");
        }
    }
    let same_group = group_ref.to_ascii_lowercase() == group
        || format!("group:{ns}/{}", group_ref.to_ascii_lowercase()) == group;
    if refs.contains(&group) && same_group {
        // The Group entity loaded and the route names it: its IdP group lets a caller in.
        if reason(&p, "bob", &["probe-group"]) != Reason::Ok {
            return fail("the named Group entity loaded, but its members are not let in");
        }
    }
    Ok(())
}

/// The refs where the two old rules disagreed, and a few they agreed on.
#[test]
fn refs_that_load_can_be_named() {
    #[rustfmt::skip]
    let cases: &[(&str, &str, &str, &str)] = &[
        // (entity namespace, memberOf as written, group namespace, group name)
        ("default", "sre",                   "default", "sre"),
        ("default", "group:default/sre",     "default", "sre"),
        ("ops",     "sre",                   "ops",     "sre"),
        ("default", "Group:Ops/On-Call",     "ops",     "On-Call"),
        ("default", "team+a",                "default", "team-a"),
        ("default", "équipe",                "default", "equipe"),
        ("default", "a,b",                   "default", "a"),
        ("default", "a|b",                   "default", "a"),
        ("default", "sre@corp",              "default", "sre"),
        ("default", "-sre",                  "default", "sre"),
        ("default", "sre.",                  "default", "sre"),
        ("default", "my_ns/sre",             "default", "sre"),
        ("default", "Group:default/a#b",     "default", "a"),
        ("default", &"g".repeat(64),         "default", "g"),
        ("default", "group:default/a\u{200b}b", "default", "ab"),
    ];
    for (ns, group_ref, group_ns, group_name) in cases {
        if let Err(e) = check(ns, group_ref, group_ns, group_name) {
            panic!("{e}");
        }
    }
}

fn name_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9]([a-zA-Z0-9._-]{0,6}[a-zA-Z0-9])?",
        "[a-zA-Z0-9._+@#,|é -]{1,10}",
        (62usize..66).prop_map(|n| "n".repeat(n)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_ref_that_loads_can_be_named(
        ns in prop::sample::select(vec!["default", "ops"]),
        kind in prop::sample::select(vec!["", "group:", "Group:", "GROUP:"]),
        group_ns in prop::sample::select(vec!["default", "ops", "my_ns", "Ops", "n-1", "a.b"]),
        write_ns in any::<bool>(),
        name in name_text(),
    ) {
        let group_ref = if write_ns {
            format!("{kind}{group_ns}/{name}")
        } else {
            format!("{kind}{name}")
        };
        let entity_ns = if write_ns { group_ns.to_ascii_lowercase() } else { ns.to_owned() };
        let r = check(ns, &group_ref, &entity_ns, &name);
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
    }
}
