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
//! - Before parsing, each file is checked against a byte cap ([`MAX_FILE_BYTES`]) and
//!   a nesting pre-scan ([`yaml_scan`], at most [`MAX_NESTING`] levels): the YAML
//!   parser takes quadratic time in flow nesting (`[[[[…`), so a file past either
//!   limit is not parsed at all, and the whole load fails with
//!   [`CatalogError::FileRefused`] naming the file and the line. Like an unreadable
//!   file, it stops every update until it is fixed (a denial of service, reported at
//!   once) rather than silently dropping its entities, whose paths could then fall
//!   through to a shorter route. The runner also abandons a load that outlives its
//!   deadline (`catalog::source`).
//! - Names Backstage would refuse are refused here too, with Backstage's own rules
//!   (`FieldFormatEntityPolicy` and `KubernetesValidatorFunctions` of
//!   `@backstage/catalog-model` 1.10.3): `apiVersion`, `kind`, `metadata.name`,
//!   `metadata.namespace` (lowercase DNS label), label keys and values, annotation
//!   keys, tags and link URLs. The document is skipped with Backstage's message, so
//!   the file source never serves an entity the Backstage source could not.
//! - An entity ref seen twice: the first (in sorted path order) wins, the later one is
//!   reported, as Backstage reports a conflict and keeps the first.
//! - Relations: `ownedBy`/`ownerOf` from `spec.owner` (Component, API, Resource,
//!   System, Domain, Template); `memberOf`/`hasMember` from User `spec.memberOf` and
//!   Group `spec.members`; `childOf`/`parentOf` from Group `spec.parent` and
//!   `spec.children`. Short refs take the field's default kind (group for owner,
//!   memberOf, parent, children; user for members) and the entity's own namespace
//!   (Backstage's rule; "default" for the usual entity). Inverse relations are added
//!   to targets present in the load; relations may dangle, as in Backstage. Refs are
//!   read by [`EntityRef`](super::EntityRef)'s one rule (Backstage's name rules for each
//!   part, lowercased, matching [`Entity::entity_ref`]): a ref no entity could carry,
//!   such as `team+a`, skips its document, as a malformed one does, since no
//!   annotation could name it either. Other relations (`partOf`, `dependsOn`,
//!   `providesApi`...) are not derived: the policy does not read them.
//! - Relations written in a descriptor file are ignored and replaced by derived ones.
//! - `kind: Location` entities are loaded like any other but not followed: list
//!   every descriptor file in `catalog.files` (globs make that short).
//!
//! Backstage's field-format checks are in `file/format.rs`, the relation derivation in
//! `file/relations.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Deserialize;

use super::entity::{Entity, Relation};
use super::error::{CatalogConfigError, CatalogError};
use super::yaml_scan;
pub use super::yaml_scan::MAX_NESTING;
use format::check_format;
use relations::{attach_relations, derive_relations};

mod format;
mod relations;

/// Guards against a pathological file with an endless stream of documents.
const MAX_DOCUMENTS_PER_FILE: usize = 100_000;

/// Largest catalog file read. An 8 MiB file of ~50,000 small entities parses in about
/// a second (release build); bracket-dense YAML at the allowed depth in a few.
pub const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;

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
        let text = read_checked(file)?;
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
            Ok(d) => {
                for dropped in &d.dropped {
                    tracing::warn!(event = "relation_dropped", entity = %entity_ref,
                        file = %file.display(), index, "relation dropped: {dropped}");
                }
                derived.extend(d.relations.into_iter().map(|r| (entity_ref.clone(), r)));
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

/// A file's text, if it is within [`MAX_FILE_BYTES`], UTF-8, and nests no deeper than
/// [`MAX_NESTING`].
fn read_checked(path: &Path) -> Result<String, CatalogError> {
    use std::io::Read;
    let io = |source| CatalogError::Io {
        path: path.to_owned(),
        source,
    };
    let refused = |reason: String| CatalogError::FileRefused {
        path: path.to_owned(),
        reason,
    };
    let too_large = || refused(format!("larger than {MAX_FILE_BYTES} bytes"));
    let file = std::fs::File::open(path).map_err(io)?;
    if file.metadata().map_err(io)?.len() > MAX_FILE_BYTES {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(too_large());
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            e.utf8_error(),
        ))
    })?;
    yaml_scan::check(&text, MAX_NESTING).map_err(|deep| refused(deep.to_string()))?;
    Ok(text)
}

/// The files matched by one glob, sorted; an invalid glob is a [`CatalogConfigError`].
pub fn expand(pattern: &str, base_dir: &Path) -> Result<Vec<PathBuf>, CatalogConfigError> {
    let full = if Path::new(pattern).is_absolute() {
        pattern.to_owned()
    } else {
        // The base directory is a literal path, not a pattern.
        let base = glob::Pattern::escape(&base_dir.to_string_lossy());
        format!("{}/{pattern}", base.trim_end_matches('/'))
    };
    let invalid = |reason: String| CatalogConfigError::InvalidGlob {
        pattern: pattern.to_owned(),
        reason,
    };
    let paths = glob::glob(&full).map_err(|e| invalid(e.to_string()))?;
    let mut files = Vec::new();
    for path in paths {
        let path = path.map_err(|e| CatalogConfigError::GlobRead {
            pattern: pattern.to_owned(),
            path: e.path().to_owned(),
            reason: match e.error().raw_os_error() {
                Some(23 | 24) => format!("out of file descriptors ({})", e.error()),
                _ => e.error().to_string(),
            },
        })?;
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
        return Err(CatalogConfigError::NoFiles.into());
    }
    let mut all = BTreeSet::new();
    for pattern in patterns {
        let files = expand(pattern, base_dir)?;
        if files.is_empty() {
            return Err(CatalogConfigError::NoMatch {
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
    let entity: Entity =
        serde_json::from_value(json.clone()).map_err(|e| format!("not an entity: {e}"))?;
    check_format(&json).map_err(|e| format!("refused as Backstage would refuse it: {e}"))?;
    Ok(Some(Entity {
        relations: Vec::new(),
        ..entity
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
