//! Relations, inside the file source (descriptor YAML → entity → **relations**): the
//! ones Backstage's `BuiltinKindsEntityProcessor` derives from the spec fields the
//! policy reads (`ownedBy`/`ownerOf`, `memberOf`/`hasMember`, `childOf`/`parentOf`),
//! with refs resolved by [`EntityRef`]'s rule.

use std::collections::{BTreeMap, BTreeSet};

use crate::catalog::{Entity, EntityRef, Relation};

/// The relations `entity` itself declares through its spec, resolved to full refs.
pub(super) fn derive_relations(entity: &Entity) -> Result<Vec<Relation>, String> {
    let ns = entity.metadata.namespace.as_str();
    let spec = &entity.spec;
    let mut out = Vec::new();
    let mut add = |relation: &str, target: &str, default_kind: &str| -> Result<(), String> {
        let target_ref = EntityRef::parse(target, default_kind, ns)
            .map_err(|e| format!("{target:?} is not a valid entity reference: {e}"))?;
        out.push(Relation {
            kind: relation.to_owned(),
            target_ref: target_ref.into_string(),
        });
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
        let targets = |kind: &str, ns: &str, spec: &str| -> Result<Vec<String>, String> {
            let e: Entity = serde_json::from_str(&format!(
                r#"{{"kind":"{kind}","metadata":{{"name":"x","namespace":"{ns}"}},"spec":{spec}}}"#
            ))
            .unwrap();
            derive_relations(&e).map(|v| v.into_iter().map(|r| r.target_ref).collect())
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
            let e = owner(bad).unwrap_err();
            assert!(
                e.contains("is not a valid entity reference"),
                "{bad:?}: {e}"
            );
        }
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
        assert!(derive_relations(&group(r#"{"parent": "a b"}"#)).is_err());
        let ok = derive_relations(&group(
            r#"{"parent": "eng", "children": [], "members": ["bob"]}"#,
        ))
        .unwrap();
        assert_eq!(
            ok,
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
