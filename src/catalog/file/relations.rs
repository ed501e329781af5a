//! Relations, inside the file source (descriptor YAML → entity → **relations**): the
//! ones Backstage's `BuiltinKindsEntityProcessor` derives from the spec fields the
//! policy reads (`ownedBy`/`ownerOf`, `memberOf`/`hasMember`, `childOf`/`parentOf`),
//! with refs resolved by [`EntityRef`]'s rule.
//!
//! A target that breaks that rule (`owner: team+a`, `memberOf: [legacy_team_]`) is
//! dropped, with a warning, and the entity is kept: Backstage itself loads such an
//! entity with a dangling relation, and skipping the whole entity for one odd entry
//! took its routes out of the policy (a path it claimed under another entity's
//! public route fell open) and a User's other memberships with it. No relation to a
//! group the policy could not name loses nothing: no Group of that name loads either.
//! A spec field of the wrong type still skips the document.

use std::collections::{BTreeMap, BTreeSet};

use crate::catalog::{Entity, EntityRef, Relation};

/// What one entity's spec declares: its relations, resolved to full refs, and the
/// targets dropped because they are not valid entity refs (for the warning).
#[derive(Debug, Default)]
pub(super) struct Derived {
    pub relations: Vec<Relation>,
    pub dropped: Vec<String>,
}

/// The relations `entity` itself declares through its spec (module docs).
pub(super) fn derive_relations(entity: &Entity) -> Result<Derived, String> {
    let ns = entity.metadata.namespace.as_str();
    let spec = &entity.spec;
    let mut out = Derived::default();
    let mut add = |relation: &str, target: &str, default_kind: &str| -> Result<(), String> {
        match EntityRef::parse(target, default_kind, ns) {
            Ok(target_ref) => out.relations.push(Relation {
                kind: relation.to_owned(),
                target_ref: target_ref.into_string(),
            }),
            Err(e) => out.dropped.push(format!(
                "{relation} {target:?}: not a valid entity reference: {e}"
            )),
        }
        Ok(())
    };
    match entity.kind.to_ascii_lowercase().as_str() {
        "component" | "api" | "resource" | "system" | "domain" | "template" => {
            if let Some(owner) = string_field(spec, "owner")? {
                add("ownedBy", owner, "group")?;
            }
        }
        "user" => {
            for group in string_list(spec, "memberOf")? {
                add("memberOf", group, "group")?;
            }
        }
        "group" => {
            if let Some(parent) = string_field(spec, "parent")? {
                add("childOf", parent, "group")?;
            }
            for child in string_list(spec, "children")? {
                add("parentOf", child, "group")?;
            }
            for member in string_list(spec, "members")? {
                add("hasMember", member, "user")?;
            }
        }
        _ => {}
    }
    Ok(out)
}

fn string_field<'a>(spec: &'a serde_json::Value, key: &str) -> Result<Option<&'a str>, String> {
    match spec.get(key) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("spec.{key} must be a string")),
    }
}

fn string_list<'a>(spec: &'a serde_json::Value, key: &str) -> Result<Vec<&'a str>, String> {
    match spec.get(key) {
        None | Some(serde_json::Value::Null) => Ok(Vec::new()),
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .ok_or_else(|| format!("spec.{key} must be a list of strings"))
            })
            .collect(),
        Some(_) => Err(format!("spec.{key} must be a list of strings")),
    }
}

/// Puts each derived relation on its source and, when the target was loaded, the
/// inverse on the target; sorted and deduplicated like Backstage's output.
pub(super) fn attach_relations(
    entities: &mut BTreeMap<String, Entity>,
    derived: Vec<(String, Relation)>,
) {
    let mut per_entity: BTreeMap<String, BTreeSet<(String, String)>> = BTreeMap::new();
    for (source, relation) in derived {
        let inverse = match relation.kind.as_str() {
            "ownedBy" => "ownerOf",
            "memberOf" => "hasMember",
            "hasMember" => "memberOf",
            "childOf" => "parentOf",
            "parentOf" => "childOf",
            _ => unreachable!("derive_relations emits only the relations above"),
        };
        if entities.contains_key(&relation.target_ref) {
            per_entity
                .entry(relation.target_ref.clone())
                .or_default()
                .insert((inverse.to_owned(), source.clone()));
        }
        per_entity
            .entry(source)
            .or_default()
            .insert((relation.kind, relation.target_ref));
    }
    for (entity_ref, relations) in per_entity {
        if let Some(entity) = entities.get_mut(&entity_ref) {
            entity.relations = relations
                .into_iter()
                .map(|(kind, target_ref)| Relation { kind, target_ref })
                .collect();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_resolve_like_backstage() {
        let derived = |kind: &str, ns: &str, spec: &str| -> Derived {
            let e: Entity = serde_json::from_str(&format!(
                r#"{{"kind":"{kind}","metadata":{{"name":"x","namespace":"{ns}"}},"spec":{spec}}}"#
            ))
            .unwrap();
            derive_relations(&e).unwrap()
        };
        let targets = |kind: &str, ns: &str, spec: &str| -> Result<Vec<String>, String> {
            let d = derived(kind, ns, spec);
            match d.dropped.first() {
                Some(e) => Err(e.clone()),
                None => Ok(d.relations.into_iter().map(|r| r.target_ref).collect()),
            }
        };
        let owner = |o: &str| targets("Component", "default", &format!(r#"{{"owner":"{o}"}}"#));
        assert_eq!(
            owner("payments-team").unwrap(),
            ["group:default/payments-team"]
        );
        assert_eq!(owner("user:other/alice").unwrap(), ["user:other/alice"]);
        assert_eq!(owner("infra/sre").unwrap(), ["group:infra/sre"]);
        assert_eq!(
            targets("Group", "ops", r#"{"members":["Group:Payments-Team"]}"#).unwrap(),
            ["group:ops/payments-team"]
        );
        for bad in [
            "",
            "group:",
            ":x",
            "a/",
            "a b",
            "group:ns/a/b",
            "a:b:c",
            "team+a",
        ] {
            // Dropped with the reason; the entity itself is kept (module docs).
            let e = owner(bad).unwrap_err();
            assert!(e.contains("not a valid entity reference"), "{bad:?}: {e}");
        }
        let mixed = derived("User", "default", r#"{"memberOf":["sre","legacy_team_"]}"#);
        assert_eq!(mixed.relations.len(), 1);
        assert_eq!(mixed.relations[0].target_ref, "group:default/sre");
        assert_eq!(mixed.dropped.len(), 1);
    }

    #[test]
    fn bad_relation_fields_are_errors() {
        let group = |spec: &str| -> Entity {
            serde_json::from_str(&format!(
                r#"{{"apiVersion":"v1","kind":"Group","metadata":{{"name":"g"}},"spec":{spec}}}"#
            ))
            .unwrap()
        };
        assert!(derive_relations(&group(r#"{"parent": 3}"#)).is_err());
        assert!(derive_relations(&group(r#"{"children": "x"}"#)).is_err());
        assert!(derive_relations(&group(r#"{"members": [1]}"#)).is_err());
        assert_eq!(
            derive_relations(&group(r#"{"parent": "a b"}"#))
                .unwrap()
                .dropped
                .len(),
            1
        );
        let ok = derive_relations(&group(
            r#"{"parent": "eng", "children": [], "members": ["bob"]}"#,
        ))
        .unwrap();
        assert_eq!(
            ok.relations,
            [
                Relation {
                    kind: "childOf".into(),
                    target_ref: "group:default/eng".into()
                },
                Relation {
                    kind: "hasMember".into(),
                    target_ref: "user:default/bob".into()
                },
            ]
        );
    }
}
