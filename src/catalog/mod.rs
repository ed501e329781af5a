//! The catalog: Backstage entities as stagedoor sees them, whichever source they
//! came from (descriptor files or a live Backstage). Sources produce `Vec<Entity>`;
//! `policy::Policy::build` turns them into the route table the decision reads.
//!
//! - [`config`]: the `[catalog]` section.
//! - [`entity_ref`]: entity refs (`kind:namespace/name`), parsed and formatted by one rule.
//! - [`file`](mod@file): descriptor YAML files, relations derived locally.
//! - [`yaml_scan`]: the nesting pre-scan the file source runs before parsing.
//! - [`backstage`]: the catalog REST client and the etag-diffing sync.
//! - [`snapshot`]: the last good Backstage sync on disk.
//! - [`source`]: the runner that refreshes and publishes [`CatalogSnapshot`]s.

pub mod backstage;
pub mod config;
pub mod entity;
pub mod entity_ref;
pub mod error;
pub mod file;
pub mod snapshot;
pub mod source;
pub mod yaml_scan;

pub use config::{CatalogConfig, SourceKind};
pub use entity::{Entity, Relation};
pub use entity_ref::{EntityRef, RefError};
pub use error::{CatalogConfigError, CatalogError};
pub use source::{CatalogHandle, CatalogSnapshot, CatalogSource, CatalogStatus, Origin};

/// The annotation that makes an entity routable; the Backstage sync's wipe-out guard
/// counts entities carrying it.
pub const ROUTES_ANNOTATION: &str = "stagedoor.io/routes";
