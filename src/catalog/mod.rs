//! The catalog: Backstage entities as stagedoor sees them, whichever source they
//! came from (descriptor files or a live Backstage). Sources produce `Vec<Entity>`;
//! `policy::Policy::build` turns them into the route table the decision reads.

pub mod entity;

pub use entity::{Entity, Relation};
