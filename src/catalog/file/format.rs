//! Backstage's field-format checks, inside the file source (descriptor YAML →
//! **format** → entity): a document whose `apiVersion`, `kind`, names, labels,
//! annotation keys, tags or link URLs Backstage would refuse is refused here too, with
//! Backstage's message, so the file source never serves an entity the Backstage source
//! could not. The name rules themselves are [`entity_ref`](crate::catalog::entity_ref)'s,
//! shared with every entity ref.

use serde_json::Value;

use crate::catalog::entity_ref::{is_dns_label, is_kind, is_object_name};

/// Backstage's `FieldFormatEntityPolicy` (`@backstage/catalog-model` 1.10.3), with its
/// messages: every field it checks, in its order.
pub(super) fn check_format(json: &Value) -> Result<(), String> {
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
            crate::catalog::backstage::excerpt(&shown, 100)
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
    test: is_kind,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::file::parse_documents;

    #[test]
    fn fields_follow_backstages_rules() {
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
}
