//! `stagedoor.io/delegate`, inside the annotation language: which other entities'
//! routes may take effect under a prefix of this entity's (the rule is in
//! `policy/ownership.rs`).

use crate::catalog::EntityRef;

use super::routes::route_path;
use super::{LangError, Located, at, check_len, is_blank, lines, offset, whole};

/// Whom a prefix is delegated to (`stagedoor.io/delegate`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delegate {
    /// `*`: any entity of any owner.
    Anyone,
    /// A full lower-case ref of a routed entity (Component, API, Resource, System).
    Ref(String),
}

/// One line of `stagedoor.io/delegate`: `PATH DELEGATE...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delegation {
    /// Normalised prefix, as route paths are.
    pub path: String,
    pub to: Vec<Delegate>,
}

/// Delegates are entities, never owners: `spec.owner` is written by whoever writes the
/// entity, so a delegation to a team could be claimed by anyone.
const DELEGATE_KINDS: [&str; 4] = ["component", "api", "resource", "system"];

/// Parses `stagedoor.io/delegate`: one `PATH DELEGATE...` line per prefix; delegates
/// are `*` or refs of routed entities (kind defaulting to `component`, namespace to
/// the entity's), separated by blanks or commas. `#` starts a comment, as in routes.
pub fn parse_delegations(text: &str, ns: &str) -> Result<Vec<Delegation>, Located> {
    check_len(text)?;
    let mut out = Vec::new();
    for (n, line) in lines(text) {
        let words: Vec<&str> = line
            .split(|c: char| is_blank(c) || c == ',')
            .filter(|w| !w.is_empty())
            .take_while(|w| !w.starts_with('#'))
            .collect();
        let Some((raw_path, targets)) = words.split_first() else {
            continue;
        };
        let err = |w: &str, e| at(line, n, offset(line, w), e);
        let path = route_path(raw_path).map_err(|e| err(raw_path, e))?;
        if targets.is_empty() {
            return Err(err(raw_path, LangError::MissingDelegate));
        }
        let mut to = Vec::with_capacity(targets.len());
        for t in targets {
            let d = if *t == "*" {
                Delegate::Anyone
            } else {
                let r = EntityRef::parse(t, "component", ns)
                    .ok()
                    .filter(|r| DELEGATE_KINDS.contains(&r.kind()))
                    .ok_or_else(|| err(t, LangError::BadDelegate((*t).to_owned())))?;
                Delegate::Ref(r.into_string())
            };
            if !to.contains(&d) {
                to.push(d);
            }
        }
        out.push(Delegation { path, to });
    }
    if out.is_empty() {
        return Err(whole(LangError::MissingDelegate));
    }
    Ok(out)
}

/// Whether `path` is `prefix` or lies under it on a segment boundary (both normalised
/// route paths without a trailing `/`).
pub fn is_under(path: &str, prefix: &str) -> bool {
    prefix == "/"
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delegations() {
        let d = parse_delegations(
            "/api/orders/reports  reporting, api:default/reports-api # why\n\
             # a comment\n\n/static *\n/x system:ops/tools",
            "default",
        )
        .unwrap();
        assert_eq!(d.len(), 3);
        assert_eq!(d[0].path, "/api/orders/reports");
        assert_eq!(
            d[0].to,
            [
                Delegate::Ref("component:default/reporting".into()),
                Delegate::Ref("api:default/reports-api".into())
            ]
        );
        assert_eq!(d[1].to, [Delegate::Anyone]);
        assert_eq!(d[2].to, [Delegate::Ref("system:ops/tools".into())]);
        for owner_kind in ["/a group:default/x", "/a user:default/x"] {
            let e = parse_delegations(owner_kind, "default").unwrap_err();
            assert!(matches!(e.error, LangError::BadDelegate(_)), "{owner_kind}");
        }
        let e = parse_delegations("/a\n", "default").unwrap_err();
        assert_eq!((e.line, e.error), (1, LangError::MissingDelegate));
        let e = parse_delegations("/a x\n/b location:default/y", "default").unwrap_err();
        assert_eq!((e.line, e.column), (2, 4));
        assert!(matches!(e.error, LangError::BadDelegate(_)));
        assert!(parse_delegations("/a/* x", "default").is_err());
        assert!(parse_delegations("a x", "default").is_err());
        assert!(parse_delegations("# only a comment", "default").is_err());
    }

    #[test]
    fn under() {
        assert!(is_under("/a/b", "/a"));
        assert!(is_under("/a", "/a"));
        assert!(is_under("/a", "/"));
        assert!(!is_under("/ab", "/a"));
        assert!(!is_under("/a", "/a/b"));
    }
}
