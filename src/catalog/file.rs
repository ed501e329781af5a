//! The `file` catalog source: Backstage descriptor YAML (multi-document, globs) read
//! into the same [`Entity`] model the Backstage API returns, relations derived here
//! the way Backstage's `BuiltinKindsEntityProcessor` derives them. The runner in
//! [`crate::catalog::source`] calls [`load`] at startup, on change and on SIGHUP.
//!
//! Decisions:
//! - A document that is not a usable entity is skipped and reported (file + 0-based
//!   document index); the rest loads. A YAML syntax error ends its file (the parser
//!   cannot resynchronise), documents before it still load. Empty documents (a bare
//!   `---`) are ignored, as Backstage does.
//! - Unreadable files, invalid globs and globs matching nothing fail the whole load:
//!   the caller keeps serving what it had.
//! - An entity ref seen twice: the first (in sorted path order) wins, the later one is
//!   reported, as Backstage reports a conflict and keeps the first.
//! - Relations: `ownedBy`/`ownerOf` from `spec.owner` (Component, API, Resource,
//!   System, Domain, Template); `memberOf`/`hasMember` from User `spec.memberOf` and
//!   Group `spec.members`; `childOf`/`parentOf` from Group `spec.parent` and
//!   `spec.children`. Short refs take the field's default kind (group for owner,
//!   memberOf, parent, children; user for members) and the entity's own namespace
//!   (Backstage's rule; "default" for the usual entity). Inverse relations are added
//!   to targets present in the load; relations may dangle, as in Backstage. Refs are
//!   lowercased, matching [`Entity::entity_ref`]. Other relations (`partOf`,
//!   `dependsOn`, `providesApi`...) are not derived: the policy does not read them.
//! - Relations written in a descriptor file are ignored and replaced by derived ones.
//! - `kind: Location` entities are loaded like any other but not followed: list
//!   every descriptor file in `catalog.files` (globs make that short).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Deserialize;

use super::entity::{Entity, Relation};
use super::error::{CatalogError, ConfigError};

/// Guards against a pathological file with an endless stream of documents.
const MAX_DOCUMENTS_PER_FILE: usize = 100_000;

/// The outcome of a load: the entities, and the documents skipped with the reason.
#[derive(Debug)]
pub struct Loaded {
    pub entities: Vec<Entity>,
    /// [`CatalogError::Document`] for every document that was not loaded.
    pub skipped: Vec<CatalogError>,
}

/// Loads every file matched by `patterns` (relative ones resolved against `base_dir`);
/// skipped documents are logged. Entities come sorted by entity ref.
pub fn load(patterns: &[String], base_dir: &Path) -> Result<Vec<Entity>, CatalogError> {
    let loaded = load_report(patterns, base_dir)?;
    for problem in &loaded.skipped {
        tracing::warn!(error = %problem, "catalog document skipped");
    }
    Ok(loaded.entities)
}

/// [`load`], returning the skipped documents instead of logging them.
pub fn load_report(patterns: &[String], base_dir: &Path) -> Result<Loaded, CatalogError> {
    let files = matched_files(patterns, base_dir)?;
    let mut skipped = Vec::new();
    let mut by_ref: BTreeMap<String, (Entity, PathBuf, usize)> = BTreeMap::new();
    for file in &files {
        let text = std::fs::read_to_string(file).map_err(|source| CatalogError::Io {
            path: file.clone(),
            source,
        })?;
        for (index, parsed) in parse_documents(&text).into_iter().enumerate() {
            let doc_error = |reason: String| CatalogError::Document {
                file: file.clone(),
                index,
                reason,
            };
            let entity = match parsed {
                Ok(None) => continue,
                Ok(Some(entity)) => entity,
                Err(reason) => {
                    skipped.push(doc_error(reason));
                    continue;
                }
            };
            let entity_ref = entity.entity_ref();
            if let Some((_, first_file, first_index)) = by_ref.get(&entity_ref) {
                skipped.push(doc_error(format!(
                    "{entity_ref} is already defined in {}, document {first_index}",
                    first_file.display()
                )));
                continue;
            }
            by_ref.insert(entity_ref, (entity, file.clone(), index));
        }
    }
    let mut entities: BTreeMap<String, Entity> = BTreeMap::new();
    let mut derived: Vec<(String, Relation)> = Vec::new();
    for (entity_ref, (entity, file, index)) in by_ref {
        match derive_relations(&entity) {
            Ok(relations) => {
                derived.extend(relations.into_iter().map(|r| (entity_ref.clone(), r)));
                entities.insert(entity_ref, entity);
            }
            Err(reason) => skipped.push(CatalogError::Document {
                file,
                index,
                reason,
            }),
        }
    }
    attach_relations(&mut entities, derived);
    Ok(Loaded {
        entities: entities.into_values().collect(),
        skipped,
    })
}

/// The files matched by one glob, sorted; an invalid glob is a [`ConfigError`].
pub fn expand(pattern: &str, base_dir: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let full = if Path::new(pattern).is_absolute() {
        pattern.to_owned()
    } else {
        // The base directory is a literal path, not a pattern.
        let base = glob::Pattern::escape(&base_dir.to_string_lossy());
        format!("{}/{pattern}", base.trim_end_matches('/'))
    };
    let invalid = |reason: String| ConfigError::InvalidGlob {
        pattern: pattern.to_owned(),
        reason,
    };
    let paths = glob::glob(&full).map_err(|e| invalid(e.to_string()))?;
    let mut files = Vec::new();
    for path in paths {
        let path = path.map_err(|e| invalid(e.to_string()))?;
        if path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// What the change poller compares: every matched file with its mtime and size.
pub type Fingerprint = Vec<(PathBuf, Option<SystemTime>, u64)>;

/// The current [`Fingerprint`] of the files `patterns` match.
pub fn fingerprint(patterns: &[String], base_dir: &Path) -> Result<Fingerprint, CatalogError> {
    matched_files(patterns, base_dir)?
        .into_iter()
        .map(|path| {
            let meta = std::fs::metadata(&path).map_err(|source| CatalogError::Io {
                path: path.clone(),
                source,
            })?;
            Ok((path, meta.modified().ok(), meta.len()))
        })
        .collect()
}

fn matched_files(patterns: &[String], base_dir: &Path) -> Result<Vec<PathBuf>, CatalogError> {
    if patterns.is_empty() {
        return Err(ConfigError::NoFiles.into());
    }
    let mut all = BTreeSet::new();
    for pattern in patterns {
        let files = expand(pattern, base_dir)?;
        if files.is_empty() {
            return Err(ConfigError::NoMatch {
                pattern: pattern.clone(),
            }
            .into());
        }
        all.extend(files);
    }
    Ok(all.into_iter().collect())
}

/// One result per YAML document: `Ok(None)` for an empty one, `Err` with the reason
/// for one that is not an entity. Stops after a syntax error.
fn parse_documents(text: &str) -> Vec<Result<Option<Entity>, String>> {
    let mut out = Vec::new();
    for document in serde_norway::Deserializer::from_str(text) {
        if out.len() == MAX_DOCUMENTS_PER_FILE {
            out.push(Err(format!(
                "more than {MAX_DOCUMENTS_PER_FILE} documents in one file; rest not read"
            )));
            break;
        }
        // Syntax first: a generic YAML value only fails on malformed YAML, after
        // which the parser would keep returning the same error.
        let value = match serde_norway::Value::deserialize(document) {
            Ok(value) => value,
            Err(e) => {
                out.push(Err(format!(
                    "invalid YAML (rest of the file not read): {e}"
                )));
                break;
            }
        };
        out.push(to_entity(value));
    }
    out
}

fn to_entity(value: serde_norway::Value) -> Result<Option<Entity>, String> {
    if value.is_null() {
        return Ok(None);
    }
    if !value.is_mapping() {
        return Err("not an entity: the document is not a mapping".to_owned());
    }
    let json = serde_json::to_value(&value).map_err(|e| format!("not an entity: {e}"))?;
    let entity: Entity = serde_json::from_value(json).map_err(|e| format!("not an entity: {e}"))?;
    if entity.api_version.is_empty() {
        return Err("not an entity: apiVersion is missing or empty".to_owned());
    }
    for (what, part) in [
        ("kind", &entity.kind),
        ("metadata.name", &entity.metadata.name),
        ("metadata.namespace", &entity.metadata.namespace),
    ] {
        if part.is_empty() || part.contains([':', '/']) || part.contains(char::is_whitespace) {
            return Err(format!(
                "{what} {part:?} is not valid (empty, or contains ':', '/' or whitespace)"
            ));
        }
    }
    Ok(Some(Entity {
        relations: Vec::new(),
        ..entity
    }))
}

/// The relations `entity` itself declares through its spec, resolved to full refs.
fn derive_relations(entity: &Entity) -> Result<Vec<Relation>, String> {
    let ns = entity.metadata.namespace.as_str();
    let spec = &entity.spec;
    let mut out = Vec::new();
    let mut add = |relation: &str, target: &str, default_kind: &str| -> Result<(), String> {
        out.push(Relation {
            kind: relation.to_owned(),
            target_ref: parse_ref(target, default_kind, ns)?,
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

/// Backstage's `parseEntityRef`: `[kind:][namespace/]name`, lowercased.
pub fn parse_ref(
    reference: &str,
    default_kind: &str,
    default_namespace: &str,
) -> Result<String, String> {
    let (kind, rest) = reference
        .split_once(':')
        .unwrap_or((default_kind, reference));
    let (namespace, name) = rest.split_once('/').unwrap_or((default_namespace, rest));
    let valid = |part: &str| {
        !part.is_empty() && !part.contains([':', '/']) && !part.contains(char::is_whitespace)
    };
    if !(valid(kind) && valid(namespace) && valid(name)) {
        return Err(format!("{reference:?} is not a valid entity reference"));
    }
    Ok(format!("{kind}:{namespace}/{name}").to_ascii_lowercase())
}

/// Puts each derived relation on its source and, when the target was loaded, the
/// inverse on the target; sorted and deduplicated like Backstage's output.
fn attach_relations(entities: &mut BTreeMap<String, Entity>, derived: Vec<(String, Relation)>) {
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
        assert_eq!(
            parse_ref("payments-team", "group", "default").unwrap(),
            "group:default/payments-team"
        );
        assert_eq!(
            parse_ref("group:Payments-Team", "user", "ops").unwrap(),
            "group:ops/payments-team"
        );
        assert_eq!(
            parse_ref("user:other/alice", "group", "default").unwrap(),
            "user:other/alice"
        );
        assert_eq!(
            parse_ref("infra/sre", "group", "default").unwrap(),
            "group:infra/sre"
        );
        for bad in ["", "group:", ":x", "a/", "a b", "group:ns/a/b", "a:b:c"] {
            assert!(parse_ref(bad, "group", "default").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn non_entities_are_named_and_skipped() {
        let docs = parse_documents(
            "just a string\n---\n[1, 2]\n---\nkind: Component\nmetadata: {name: x}\n\
             ---\napiVersion: v1\nkind: Component\nmetadata: {name: 'a/b'}\n\
             ---\napiVersion: v1\nkind: Component\nmetadata: {name: ok, annotations: {a: [1]}}\n\
             ---\n{1: one}\n---\n---\napiVersion: v1\nkind: User\nmetadata: {name: fine}\n",
        );
        assert_eq!(docs.len(), 8, "{docs:?}");
        for (i, doc) in docs.iter().enumerate().take(6) {
            assert!(doc.is_err(), "document {i}: {doc:?}");
        }
        assert!(docs[2].as_ref().unwrap_err().contains("apiVersion"));
        assert!(docs[3].as_ref().unwrap_err().contains("metadata.name"));
        assert!(matches!(docs[6], Ok(None)));
        assert_eq!(
            docs[7].as_ref().unwrap().as_ref().unwrap().metadata.name,
            "fine"
        );
    }

    #[test]
    fn syntax_error_ends_the_file_without_looping() {
        let docs = parse_documents(
            "apiVersion: v1\nkind: User\nmetadata: {name: a}\n---\nkey: [unclosed\n---\n\
             apiVersion: v1\nkind: User\nmetadata: {name: b}\n",
        );
        assert_eq!(docs.len(), 2, "{docs:?}");
        assert!(docs[0].is_ok());
        assert!(docs[1].as_ref().unwrap_err().contains("invalid YAML"));
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 0..12 {
            let prev = if i == 0 {
                "a".to_owned()
            } else {
                format!("l{}", i - 1)
            };
            bomb += &format!(
                "l{i}: &l{i} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"
            );
        }
        let docs = parse_documents(&bomb);
        assert_eq!(docs.len(), 1);
        assert!(docs[0].is_err());
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
