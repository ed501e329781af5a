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
//!   lowercased, matching [`Entity::entity_ref`]. Other relations (`partOf`,
//!   `dependsOn`, `providesApi`...) are not derived: the policy does not read them.
//! - Relations written in a descriptor file are ignored and replaced by derived ones.
//! - `kind: Location` entities are loaded like any other but not followed: list
//!   every descriptor file in `catalog.files` (globs make that short).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Deserialize;
use serde_json::Value;

use super::entity::{Entity, Relation};
use super::error::{CatalogConfigError, CatalogError};
use super::yaml_scan;
pub use super::yaml_scan::MAX_NESTING;

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

/// Backstage's `FieldFormatEntityPolicy` (`@backstage/catalog-model` 1.10.3), with its
/// messages: every field it checks, in its order.
fn check_format(json: &Value) -> Result<(), String> {
    fn require(field: &str, value: Option<&Value>, check: Check) -> Result<(), String> {
        let value = match value {
            None | Some(Value::Null) => return Err(format!("{field} must have a value")),
            Some(v) => v,
        };
        if value.as_str().is_some_and(check.test) {
            return Ok(());
        }
        let shown = match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        Err(format!(
            "\"{field}\" is not valid; expected {} but found \"{}\"",
            check.expectation,
            super::backstage::excerpt(&shown, 100)
        ))
    }
    let metadata = json.get("metadata");
    let meta = |key: &str| metadata.and_then(|m| m.get(key));
    require("apiVersion", json.get("apiVersion"), API_VERSION)?;
    require("kind", json.get("kind"), KIND)?;
    require("metadata.name", meta("name"), OBJECT_NAME)?;
    if let Some(namespace) = meta("namespace") {
        require("metadata.namespace", Some(namespace), DNS_LABEL)?;
    }
    for (what, check_key, check_value) in [
        ("labels", PREFIXED_NAME, Some(LABEL_VALUE)),
        ("annotations", PREFIXED_NAME, None),
    ] {
        match meta(what) {
            None | Some(Value::Null) => {}
            Some(Value::Object(map)) => {
                for (k, v) in map {
                    let field = format!("{what}.{k}");
                    require(&field, Some(&Value::String(k.clone())), check_key)?;
                    match check_value {
                        Some(check) => require(&field, Some(v), check)?,
                        None if !v.is_string() => {
                            return Err(format!("\"{field}\" is not valid; expected a string"));
                        }
                        None => {}
                    }
                }
            }
            Some(_) => return Err(format!("metadata.{what} must be an object")),
        }
    }
    match meta("tags") {
        None | Some(Value::Null) => {}
        Some(Value::Array(tags)) => {
            for (i, tag) in tags.iter().enumerate() {
                require(&format!("tags.{i}"), Some(tag), TAG)?;
            }
        }
        Some(_) => return Err("metadata.tags must be a list".to_owned()),
    }
    match meta("links") {
        None | Some(Value::Null) => {}
        Some(Value::Array(links)) => {
            for (i, link) in links.iter().enumerate() {
                require(&format!("links.{i}.url"), link.get("url"), URL)?;
                for key in ["title", "icon"] {
                    if let Some(v) = link.get(key) {
                        require(&format!("links.{i}.{key}"), Some(v), NON_EMPTY)?;
                    }
                }
            }
        }
        Some(_) => return Err("metadata.links must be a list".to_owned()),
    }
    Ok(())
}

/// One of Backstage's validators and the expectation its message names.
#[derive(Clone, Copy)]
struct Check {
    test: fn(&str) -> bool,
    expectation: &'static str,
}

const SEPARATED: &str = "a string that is sequences of [a-zA-Z0-9] separated by any of [-_.], at most 63 characters in total";
const API_VERSION: Check = Check {
    test: |v| {
        prefix_and_or_suffix(v, is_dns_subdomain, |n| {
            (1..=63).contains(&n.len()) && n.bytes().all(|b| b.is_ascii_alphanumeric())
        })
    },
    expectation: "a valid prefix and/or suffix",
};
const KIND: Check = Check {
    test: |v| {
        (1..=63).contains(&v.len())
            && v.as_bytes()[0].is_ascii_alphabetic()
            && v.bytes().all(|b| b.is_ascii_alphanumeric())
    },
    expectation: "a string that is a sequence of [a-zA-Z][a-z0-9A-Z], at most 63 characters in total",
};
const OBJECT_NAME: Check = Check {
    test: is_object_name,
    expectation: SEPARATED,
};
const DNS_LABEL: Check = Check {
    test: is_dns_label,
    expectation: "a string that is sequences of [a-z0-9] separated by [-], at most 63 characters in total",
};
const PREFIXED_NAME: Check = Check {
    test: |v| prefix_and_or_suffix(v, is_dns_subdomain, is_object_name),
    expectation: "a valid prefix and/or suffix",
};
const LABEL_VALUE: Check = Check {
    test: |v| v.is_empty() || is_object_name(v),
    expectation: SEPARATED,
};
const TAG: Check = Check {
    test: |v| {
        (1..=63).contains(&v.len())
            && v.split('-').all(|part| {
                !part.is_empty()
                    && part.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b":+#".contains(&b)
                    })
            })
    },
    expectation: "a string that is sequences of [a-z0-9+#] separated by [-], at most 63 characters in total",
};
const URL: Check = Check {
    test: |v| reqwest::Url::parse(v).is_ok(),
    expectation: "a string that is a valid url",
};
const NON_EMPTY: Check = Check {
    test: |v| !v.trim().is_empty(),
    expectation: "a non empty string",
};

/// `^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$`, 1 to 63 characters.
fn is_object_name(v: &str) -> bool {
    let b = v.as_bytes();
    (1..=63).contains(&b.len())
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(c))
}

/// `^[a-z0-9]+(?:\-+[a-z0-9]+)*$`, 1 to 63 characters.
fn is_dns_label(v: &str) -> bool {
    let b = v.as_bytes();
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    (1..=63).contains(&b.len())
        && alnum(&b[0])
        && alnum(&b[b.len() - 1])
        && b.iter().all(|c| alnum(c) || *c == b'-')
}

/// Dot-separated DNS labels, 1 to 253 characters.
fn is_dns_subdomain(v: &str) -> bool {
    (1..=253).contains(&v.len()) && v.split('.').all(is_dns_label)
}

/// Backstage's `isValidPrefixAndOrSuffix` with separator `/`.
fn prefix_and_or_suffix(v: &str, prefix: fn(&str) -> bool, suffix: fn(&str) -> bool) -> bool {
    let parts: Vec<&str> = v.split('/').collect();
    match parts[..] {
        [name] => suffix(name),
        [p, name] => prefix(p) && suffix(name),
        _ => false,
    }
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
    fn names_follow_backstages_rules() {
        for ok in [
            "a",
            "A",
            "payments-api",
            "Payments_API.v2",
            "a--b",
            "a..b",
            "x9",
        ] {
            assert!(is_object_name(ok), "{ok}");
        }
        let long = "a".repeat(64);
        for bad in ["", "-a", "a-", "_a", "a.", "a b", "a/b", "a:b", "é", &long] {
            assert!(!is_object_name(bad), "{bad}");
        }
        for ok in ["default", "team-a", "a--b", "x1"] {
            assert!(is_dns_label(ok), "{ok}");
        }
        for bad in ["Default", "team_a", "-a", "a-", "a.b", ""] {
            assert!(!is_dns_label(bad), "{bad}");
        }
        for ok in ["v1", "backstage.io/v1alpha1", "my-company.net/v1"] {
            assert!((API_VERSION.test)(ok), "{ok}");
        }
        for bad in [
            "",
            "a/b/c",
            "Backstage.io/v1",
            "backstage.io/v1-alpha",
            "/v1",
        ] {
            assert!(!(API_VERSION.test)(bad), "{bad}");
        }
        assert!((KIND.test)("Component") && !(KIND.test)("1Kind") && !(KIND.test)("Com-ponent"));
        for ok in ["java", "c++", "c#", "a-b", "x:y"] {
            assert!((TAG.test)(ok), "{ok}");
        }
        for bad in ["Java", "a--b", "-a", "a_b", ""] {
            assert!(!(TAG.test)(bad), "{bad}");
        }
        assert!((PREFIXED_NAME.test)("stagedoor.io/routes"));
        assert!(!(PREFIXED_NAME.test)("stagedoor.io/"));
        assert!(!(PREFIXED_NAME.test)("Stagedoor.io/routes"));
    }

    #[test]
    fn refused_names_say_which_field_and_why() {
        let docs = parse_documents(
            "apiVersion: v1\nkind: Component\nmetadata: {name: 'bad name'}\n\
             ---\napiVersion: v1\nkind: Component\nmetadata: {name: ok, namespace: Team}\n\
             ---\napiVersion: v1\nkind: Component\nmetadata: {name: ok, annotations: {'a b': x}}\n\
             ---\napiVersion: v1\nkind: Component\nmetadata: {name: ok, tags: [Java]}\n\
             ---\napiVersion: v1\nkind: Component\nmetadata: {name: ok, labels: {a: 'x y'}}\n\
             ---\napiVersion: v1\nkind: Component\nmetadata: {name: ok, links: [{url: nope}]}\n\
             ---\napiVersion: v1\nkind: Comp-onent\nmetadata: {name: ok}\n",
        );
        let errors: Vec<&str> = docs
            .iter()
            .map(|d| d.as_ref().unwrap_err().as_str())
            .collect();
        assert_eq!(errors.len(), 7);
        for (error, field) in errors.iter().zip([
            "\"metadata.name\" is not valid",
            "\"metadata.namespace\" is not valid",
            "\"annotations.a b\" is not valid",
            "\"tags.0\" is not valid",
            "\"labels.a\" is not valid",
            "\"links.0.url\" is not valid",
            "\"kind\" is not valid",
        ]) {
            assert!(
                error.starts_with("refused as Backstage would refuse it: "),
                "{error}"
            );
            assert!(error.contains(field), "{error}");
        }
        assert!(
            errors[0].ends_with("but found \"bad name\""),
            "{}",
            errors[0]
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
