//! Policy, between token verification and the actions sent back to HAProxy: the route
//! table built from Backstage catalog entities, and the pure decision over it
//! (bytes in → frame → message → token → **policy → decision** → actions → frame → bytes out).
//!
//! [`Policy::build`] turns `&[Entity]` into an immutable snapshot (the agent holds it as
//! `Arc<Policy>` and swaps it whole). [`Policy::decide`] is a pure sync function of the
//! snapshot, the [`Request`] and the token outcome; it allocates nothing on the common path.
//!
//! The user manual follows (from `docs/policy.md`): the annotation language, how
//! routes match, how requests are normalised, and the decision's order of checks.
//! The code: `table.rs` holds the snapshot and its lookup, `decide.rs` the decision,
//! `build.rs` (with `directory.rs`, `ownership.rs` and `place.rs`) turns entities into the
//! snapshot, `guards.rs` refuses paths loose backends read deeper, `lang` parses the
//! annotations and `path.rs` normalises request paths.
#![doc = include_str!("../../docs/policy.md")]

mod build;
mod decide;
mod directory;
mod guards;
pub mod lang;
mod ownership;
pub mod path;
mod place;
mod render;
mod table;

use serde::Deserialize;

pub use decide::{Decision, Request};
pub use lang::{HostPattern, LangError, Requirement};
pub use path::PathError;
pub use table::Policy;
use table::{Clash, HostTable, Map, PrefixSlot, Principals, Route, Slot, lower};

/// What to do with a request no route matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unmatched {
    #[default]
    Deny,
    Allow,
}

impl Unmatched {
    pub fn as_str(self) -> &'static str {
        match self {
            Unmatched::Deny => "deny",
            Unmatched::Allow => "allow",
        }
    }
}

/// Whether decisions are enforced or only logged (applied by the agent, carried here).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Enforce,
    Shadow,
}

/// The `[policy]` section of the configuration file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Requests that match no route: `deny` (default, reason `no_route`) or `allow`
    /// (reason `unmatched_allowed`).
    #[serde(default)]
    pub unmatched: Unmatched,
    /// `enforce` (default) or `shadow` (decide and log, but let every request through).
    #[serde(default)]
    pub mode: Mode,
}

/// An annotation that could not be used. Display is one line:
/// `ENTITY: ANNOTATION:LINE:COLUMN: MESSAGE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnotationError {
    pub entity: String,
    pub annotation: String,
    pub line: u32,
    pub column: u32,
    pub error: LangError,
}

impl std::fmt::Display for AnnotationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {}:{}:{}: {}",
            lang::shown(&self.entity),
            lang::shown(&self.annotation),
            self.line,
            self.column,
            self.error
        )
    }
}

/// A principal that an entity's routes name (an `@` word, `allowed-groups`, or the
/// owner under `allow-owner`) but that no caller can ever hold: it is not a Group or
/// User in the catalog, nor a parent or `memberOf` group of one. Usually a typo; the
/// routes stay as written (fail closed: the name grants nobody anything).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownPrincipal {
    pub entity: String,
    pub principal: String,
}

impl std::fmt::Display for UnknownPrincipal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "unknown principal: {} names {}, which is no Group or User in the catalog (nobody can hold it)",
            lang::escaped(&self.entity),
            lang::escaped(&self.principal)
        )
    }
}

/// A slot that denies with `policy_conflict`: two or more entities claiming the same
/// host pattern, method and path prefix, or a route under (or on) the path of another
/// owner's route that does not delegate it (see [`ownership`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The host pattern, `None` for any host.
    pub host: Option<String>,
    /// The method, `*` for any.
    pub method: String,
    pub path: String,
    /// Entity refs, sorted.
    pub entities: Vec<String>,
    /// The enclosing routes of other owners that do not delegate this path, e.g.
    /// `` `* /api/orders/admin orders:admin @sre` of component:default/orders (owner
    /// group:default/payments)``; empty for a plain double claim. Sorted.
    pub under: Vec<String>,
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "conflict: {} {} {} claimed by {}",
            lang::escaped(&self.method),
            lang::escaped(self.host.as_deref().unwrap_or("*")),
            lang::escaped(&self.path),
            lang::escaped(&self.entities.join(", "))
        )?;
        if !self.under.is_empty() {
            write!(
                f,
                " under {}, of another entity, which does not delegate it (stagedoor.io/delegate)",
                lang::escaped(&self.under.join("; "))
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_unknown_fields() {
        let c: PolicyConfig = toml::from_str("").unwrap();
        assert_eq!(c, PolicyConfig::default());
        let c: PolicyConfig = toml::from_str("unmatched = \"allow\"\nmode = \"shadow\"").unwrap();
        assert_eq!((c.unmatched, c.mode), (Unmatched::Allow, Mode::Shadow));
        assert!(toml::from_str::<PolicyConfig>("unmatch = \"allow\"").is_err());
        assert!(toml::from_str::<PolicyConfig>("unmatched = \"maybe\"").is_err());
    }
}
