//! Entity refs, beside the flow (catalog → policy): the one place a `kind:namespace/name`
//! is parsed or formatted. The file source resolves `spec.owner`, `spec.memberOf`, ...
//! with it, the Backstage source names listed entities with it, and the annotation
//! language resolves `@group` words, `allowed-groups` and delegates with it, so a ref
//! that loads can always be named in an annotation, and names the same entity.
//!
//! The rule, written once:
//! - **Shape**: `[kind:][namespace/]name`. The kind ends at the first `:`, the
//!   namespace at the next `/`; a missing kind or namespace takes the caller's default
//!   (the field's default kind, the entity's own namespace), as Backstage's
//!   `parseEntityRef` does. No part may be empty.
//! - **Parts**: Backstage's own rules for the fields they name (`FieldFormatEntityPolicy`
//!   and `KubernetesValidatorFunctions` of `@backstage/catalog-model` 1.10.3), the rules
//!   the file source also applies to `kind`, `metadata.namespace` and `metadata.name`:
//!   - kind: `[a-zA-Z][a-zA-Z0-9]*`, at most 63 characters ([`is_kind`]);
//!   - namespace: a DNS label, `[a-z0-9]+(-+[a-z0-9]+)*`, at most 63 characters
//!     ([`is_dns_label`]), read case-insensitively;
//!   - name: `[a-zA-Z0-9]([-_.a-zA-Z0-9]*[a-zA-Z0-9])?`, at most 63 characters
//!     ([`is_object_name`]).
//!
//!   A ref outside these rules can name no entity Backstage (or the file source) would
//!   accept, so it is refused where it is written rather than left to dangle: a
//!   descriptor document is skipped (for its own kind, namespace or name), an
//!   annotation is in error, a relation target is dropped with a warning and the
//!   entity kept (less membership, never more; skipping the entity took its routes
//!   out of the policy).
//! - **Case**: refs compare case-insensitively (Backstage's rule), so a ref is kept in
//!   ASCII lower case: `Group:Default/SRE` is `group:default/sre`.
//!
//! Before this module the file source accepted any characters but `:`, `/` and
//! blanks (`team+a` loaded as a `memberOf` target), while annotations allowed only
//! `[A-Za-z0-9-_.]` (`@team+a` was an error), so a membership could load that no route
//! could name (`tests/policy_refs.rs`).

use thiserror::Error;

/// Why a text is not an entity ref. The message names the part and the rule.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RefError {
    #[error("expected [kind:][namespace/]name with no empty part")]
    Shape,
    #[error("kind `{0}` is not a sequence of [a-zA-Z][a-zA-Z0-9], at most 63 characters")]
    Kind(String),
    #[error("namespace `{0}` is not sequences of [a-z0-9] separated by [-], at most 63 characters")]
    Namespace(String),
    #[error(
        "name `{0}` is not sequences of [a-zA-Z0-9] separated by any of [-_.], at most 63 characters"
    )]
    Name(String),
}

/// A full entity ref in canonical form, `kind:namespace/name` in ASCII lower case.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntityRef(String);

impl EntityRef {
    /// Parses `[kind:][namespace/]name` by the rule of the module doc; `default_kind`
    /// and `default_namespace` fill the parts the text leaves out.
    ///
    /// # Errors
    /// [`RefError`] naming the first part that breaks the rule.
    pub fn parse(
        text: &str,
        default_kind: &str,
        default_namespace: &str,
    ) -> Result<EntityRef, RefError> {
        let (kind, rest) = text.split_once(':').unwrap_or((default_kind, text));
        let (namespace, name) = rest.split_once('/').unwrap_or((default_namespace, rest));
        if kind.is_empty() || namespace.is_empty() || name.is_empty() {
            return Err(RefError::Shape);
        }
        if !is_kind(kind) {
            return Err(RefError::Kind(kind.to_owned()));
        }
        if !is_dns_label(&lower(namespace)) {
            return Err(RefError::Namespace(namespace.to_owned()));
        }
        if !is_object_name(name) {
            return Err(RefError::Name(name.to_owned()));
        }
        Ok(EntityRef::from_parts(kind, namespace, name))
    }

    /// The ref of an entity whose `kind`, `metadata.namespace` and `metadata.name` its
    /// source has already checked (the file source by Backstage's rules, a Backstage
    /// backend by its own, which an installation may have loosened): formatted, not
    /// checked again, so no served entity goes without a ref. An entity of a loosened
    /// Backstage whose name holds `:` or `/`, or non-ASCII letters (lower-cased here
    /// ASCII only, by Backstage with full Unicode), gets a ref that no annotation can
    /// name: it can only be given less access, never another entity's.
    pub fn from_parts(kind: &str, namespace: &str, name: &str) -> EntityRef {
        let mut s = String::with_capacity(kind.len() + namespace.len() + name.len() + 2);
        for (part, sep) in [(kind, ":"), (namespace, "/"), (name, "")] {
            s.push_str(part);
            s.push_str(sep);
        }
        s.make_ascii_lowercase();
        EntityRef(s)
    }

    /// `kind:namespace/name`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The kind, lower case.
    pub fn kind(&self) -> &str {
        self.0.split_once(':').map_or("", |(k, _)| k)
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl std::fmt::Display for EntityRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<EntityRef> for String {
    fn from(r: EntityRef) -> String {
        r.0
    }
}

fn lower(s: &str) -> std::borrow::Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(s.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

/// Backstage's kind rule: `^[a-zA-Z][a-z0-9A-Z]*$`, 1 to 63 characters.
pub fn is_kind(v: &str) -> bool {
    (1..=63).contains(&v.len())
        && v.as_bytes()[0].is_ascii_alphabetic()
        && v.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Backstage's object name rule: `^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$`, 1 to 63
/// characters (`metadata.name`, label values, the name part of annotation keys).
pub fn is_object_name(v: &str) -> bool {
    let b = v.as_bytes();
    (1..=63).contains(&b.len())
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(c))
}

/// Backstage's DNS label rule: `^[a-z0-9]+(?:\-+[a-z0-9]+)*$`, 1 to 63 characters
/// (`metadata.namespace`).
pub fn is_dns_label(v: &str) -> bool {
    let b = v.as_bytes();
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    (1..=63).contains(&b.len())
        && alnum(&b[0])
        && alnum(&b[b.len() - 1])
        && b.iter().all(|c| alnum(c) || *c == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<String, RefError> {
        EntityRef::parse(text, "group", "default").map(String::from)
    }

    #[test]
    fn defaults_case_and_parts() {
        #[rustfmt::skip]
        let ok: &[(&str, &str)] = &[
            ("payments-team",        "group:default/payments-team"),
            ("group:Payments-Team",  "group:default/payments-team"),
            ("user:other/alice",     "user:other/alice"),
            ("infra/sre",            "group:infra/sre"),
            ("Group:Default/SRE",    "group:default/sre"),
            ("a--b",                 "group:default/a--b"),
            ("Payments_API.v2",      "group:default/payments_api.v2"),
            ("x/9",                  "group:x/9"),
        ];
        for (text, want) in ok {
            assert_eq!(parse(text).as_deref(), Ok(*want), "{text}");
        }
        #[rustfmt::skip]
        let bad: &[(&str, RefError)] = &[
            ("",             RefError::Shape),
            ("group:",       RefError::Shape),
            (":x",           RefError::Shape),
            ("a/",           RefError::Shape),
            ("a b",          RefError::Name("a b".into())),
            ("group:ns/a/b", RefError::Name("a/b".into())),
            ("a:b:c",        RefError::Name("b:c".into())),
            ("team+a",       RefError::Name("team+a".into())),
            ("-a",           RefError::Name("-a".into())),
            ("a.",           RefError::Name("a.".into())),
            ("équipe",       RefError::Name("équipe".into())),
            ("my-kind:x",    RefError::Kind("my-kind".into())),
            ("1kind:x",      RefError::Kind("1kind".into())),
            ("my_ns/x",      RefError::Namespace("my_ns".into())),
            ("a.b/x",        RefError::Namespace("a.b".into())),
            ("-ns/x",        RefError::Namespace("-ns".into())),
        ];
        for (text, want) in bad {
            assert_eq!(parse(text).as_ref(), Err(want), "{text}");
        }
        assert!(parse(&"a".repeat(63)).is_ok());
        assert!(parse(&"a".repeat(64)).is_err());
    }

    #[test]
    fn an_entitys_own_ref_is_formatted_not_checked() {
        let r = EntityRef::from_parts("Component", "Default", "Payments-API");
        assert_eq!(r.as_str(), "component:default/payments-api");
        assert_eq!(r.kind(), "component");
        assert_eq!(
            EntityRef::from_parts("User", "default", "a@b").to_string(),
            "user:default/a@b"
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
        assert!(is_kind("Component") && !is_kind("1Kind") && !is_kind("Com-ponent"));
    }
}
