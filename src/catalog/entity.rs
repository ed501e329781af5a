//! One catalog entity, in the shape the Backstage catalog API returns
//! (`kind`, `metadata`, `spec`, `relations`). File sources derive the relations
//! themselves so both sources feed the policy builder the same model.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A Backstage entity, reduced to what the policy needs. Unknown fields are ignored:
/// Backstage adds fields over time and the catalog is not ours to validate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entity {
    #[serde(rename = "apiVersion", default)]
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    #[serde(default)]
    pub spec: serde_json::Value,
    #[serde(default)]
    pub relations: Vec<Relation>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    pub name: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// Backstage's per-entity change marker (absent in descriptor files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
}

/// A relation as the catalog API reports it, e.g. `ownedBy` → `group:default/payments`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Relation {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(rename = "targetRef")]
    pub target_ref: String,
}

fn default_namespace() -> String {
    "default".to_owned()
}

impl Entity {
    /// Whether `a` and `b` are the same entity: the same `Arc` (carried over by the
    /// Backstage sync), or equal with the etags compared first. A changed entity
    /// differs in its etag, and comparing thousands of annotations before it held a
    /// worker as long as a copy did.
    pub fn same(a: &Arc<Entity>, b: &Arc<Entity>) -> bool {
        Arc::ptr_eq(a, b) || (a.metadata.etag == b.metadata.etag && a == b)
    }

    /// The canonical entity ref, `kind:namespace/name`, lowercased as Backstage
    /// compares refs case-insensitively.
    pub fn entity_ref(&self) -> String {
        super::EntityRef::from_parts(&self.kind, &self.metadata.namespace, &self.metadata.name)
            .into_string()
    }

    /// The value of annotation `key`, if set.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.metadata.annotations.get(key).map(String::as_str)
    }

    /// Target refs of every relation of type `kind` (e.g. `ownedBy`, `memberOf`, `childOf`).
    pub fn related<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.relations
            .iter()
            .filter(move |r| r.kind == kind)
            .map(|r| r.target_ref.as_str())
    }
}

/// A Component `name` at `etag`, for tests of entity comparisons.
#[cfg(test)]
pub(crate) fn component(name: &str, etag: &str) -> Arc<Entity> {
    let json = serde_json::json!({"kind": "Component",
        "metadata": {"name": name, "namespace": "default", "etag": etag}});
    Arc::new(serde_json::from_value(json).unwrap())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_api_shape_and_builds_ref() {
        let json = r#"{"apiVersion":"backstage.io/v1alpha1","kind":"Component",
            "metadata":{"name":"Payments-API","annotations":{"a":"b"},"etag":"e1","uid":"x"},
            "spec":{"owner":"payments-team"},
            "relations":[{"type":"ownedBy","targetRef":"group:default/payments-team"}]}"#;
        let e: Entity = serde_json::from_str(json).unwrap();
        assert_eq!(e.entity_ref(), "component:default/payments-api");
        assert_eq!(e.annotation("a"), Some("b"));
        assert_eq!(e.metadata.etag.as_deref(), Some("e1"));
        assert_eq!(
            e.related("ownedBy").collect::<Vec<_>>(),
            ["group:default/payments-team"]
        );
    }
}
