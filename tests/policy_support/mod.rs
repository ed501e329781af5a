//! Helpers shared by the policy test files: catalog entities from compact descriptions.
#![allow(dead_code)]

use serde_json::{Value, json};
use stagedoor::catalog::Entity;
use stagedoor::identity::Identity;
use stagedoor::policy::{Policy, Request};
use stagedoor::reason::Reason;

/// A routed entity (`kind` Component, API, ...) with annotations and an optional owner relation.
pub fn routed(kind: &str, name: &str, owner: Option<&str>, annotations: &[(&str, &str)]) -> Entity {
    let ann: serde_json::Map<String, Value> = annotations
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Value::from(*v)))
        .collect();
    let relations: Vec<Value> = owner
        .map(|o| json!({"type": "ownedBy", "targetRef": o}))
        .into_iter()
        .collect();
    entity(json!({
        "apiVersion": "backstage.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, "annotations": ann},
        "spec": {"type": "service"},
        "relations": relations,
    }))
}

pub fn component(name: &str, annotations: &[(&str, &str)]) -> Entity {
    routed("Component", name, None, annotations)
}

pub fn entity(v: Value) -> Entity {
    serde_json::from_value(v).expect("test entity")
}

/// A Group with `childOf` relations to `parents` and optional idp-groups.
pub fn group(name: &str, parents: &[&str], idp: Option<&str>) -> Entity {
    let relations: Vec<Value> = parents
        .iter()
        .map(|p| json!({"type": "childOf", "targetRef": format!("group:default/{p}")}))
        .collect();
    let mut ann = serde_json::Map::new();
    if let Some(i) = idp {
        ann.insert("stagedoor.io/idp-groups".into(), i.into());
    }
    entity(json!({
        "kind": "Group",
        "metadata": {"name": name, "annotations": ann},
        "spec": {"type": "team", "children": []},
        "relations": relations,
    }))
}

/// A User with `memberOf` relations, an email and an optional subject annotation.
pub fn user(name: &str, groups: &[&str], email: &str, subject: Option<&str>) -> Entity {
    let relations: Vec<Value> = groups
        .iter()
        .map(|g| json!({"type": "memberOf", "targetRef": format!("group:default/{g}")}))
        .collect();
    let mut ann = serde_json::Map::new();
    if let Some(s) = subject {
        ann.insert("stagedoor.io/subject".into(), s.into());
    }
    entity(json!({
        "kind": "User",
        "metadata": {"name": name, "annotations": ann},
        "spec": {"profile": {"email": email}, "memberOf": groups},
        "relations": relations,
    }))
}

pub fn ident(scopes: &[&str], groups: &[&str]) -> Identity {
    Identity {
        issuer: "https://idp.example.com/".into(),
        sub: Some("svc-client".into()),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        groups: groups.iter().map(|s| (*s).to_owned()).collect(),
        exp: 4_000_000_000,
        ..Identity::default()
    }
}

/// A Component owned by `group:default/{owner}`.
pub fn owned(name: &str, owner: &str, annotations: &[(&str, &str)]) -> Entity {
    routed(
        "Component",
        name,
        Some(&format!("group:default/{owner}")),
        annotations,
    )
}

/// The reason `p` gives a request.
pub fn reason(
    p: &Policy,
    method: &str,
    host: &str,
    path: &str,
    id: Result<&Identity, Reason>,
) -> Reason {
    p.decide(&Request { method, host, path }, id).reason
}
