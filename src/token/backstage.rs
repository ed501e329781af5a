//! Token stage, Backstage user tokens: the claim rules of a `kind = "backstage"` issuer,
//! applied after the common checks (signature, `iss`, times, `aud`, `typ`) and before
//! the `Identity` reaches the policy (token → **Backstage claims** → `Identity` → policy).
//!
//! What Backstage's auth backend issues (`@backstage/plugin-auth-backend` 0.31.0,
//! `identity/issueUserToken`, checked in the test peer's lockfile):
//! - an ES256 JWT (the default `auth.identityTokenAlgorithm`), header
//!   `typ: vnd.backstage.user`, with a `kid`; keys published at
//!   `<backend>/api/auth/.well-known/jwks.json` (also the `jwks_uri` of
//!   `<backend>/api/auth/.well-known/openid-configuration`), kept in the database by
//!   default and rotated every token lifetime;
//! - `iss` the auth backend's external base URL (`<backend>/api/auth`), `aud`
//!   `"backstage"`, `exp = iat + auth.backstageTokenExpiration` (1 h by default, 10 min
//!   to 24 h);
//! - `sub` a User entity ref, `user:namespace/name`, canonical;
//! - `ent` the ownership refs the sign-in resolver computed from the catalog (the User
//!   and its `memberOf` groups). Since `auth.omitIdentityTokenOwnershipClaim` defaults
//!   to `true`, current versions leave `ent` out of the token altogether;
//! - `uip`, a signature for "limited" user tokens (`typ: vnd.backstage.limited-user`,
//!   cookies for static assets), which are not accepted here.
//!
//! The rules, fail closed:
//! - `typ` must be `vnd.backstage.user` unless `types` is configured (a limited-user or
//!   plugin token is `bad_type`); `aud` must hold `backstage` unless `audiences` is
//!   configured (`bad_audience`);
//! - `sub` must be a full User entity ref, `user:namespace/name` by the rule of
//!   `catalog::entity_ref`; anything else (absent, another kind, a short form, a
//!   broken part) is `bad_subject`;
//! - `ent`, when present, must be an array of full User or Group refs; anything else
//!   (not an array, a non-string entry, a broken ref, another kind) refuses the whole
//!   token as `malformed_token`. Backstage writes only such refs, so a token carrying
//!   anything else comes from a broken or hostile sign-in resolver: dropping entries
//!   would hide that. `ent` grants nothing (below), so refusing costs no access that
//!   dropping would have kept.
//! - groups, scopes, `email` and `client_id` are never read: the caller is its User.
//!
//! **Who decides the groups: the catalog.** The policy finds the caller's User entity
//! by the ref in `sub` and uses the User's `memberOf` groups (with their parents) from
//! the current catalog snapshot; `ent` is checked and kept in `Claims::ownership`
//! but not used to grant access. Reasons: `ent` is absent by default in current
//! Backstage; it is the catalog as it was at sign-in, up to the token's lifetime ago
//! (up to 24 h), so a user removed from a team would keep the team's routes until the
//! token expired, while the catalog snapshot drops them at the next sync; and the
//! catalog is already what stagedoor trusts for every route. (This deviates from the
//! issue 13 design, which used `ent` as the caller's groups.) A `sub` naming no User in
//! the catalog holds no group: it passes only routes that ask for any valid token.

use super::config::{IssuerConfig, IssuerError};
use super::jose::{RawClaims, Val};
use super::verify::Claims;
use crate::catalog::entity_ref::EntityRef;
use crate::reason::Reason;

/// The `aud` Backstage puts in user tokens (`tokenTypes.user.audClaim`).
pub const AUDIENCE: &str = "backstage";
/// The header `typ` of a full user token (`tokenTypes.user.typParam`).
pub const USER_TYPE: &str = "vnd.backstage.user";
/// The ownership claim.
pub const OWNERSHIP_CLAIM: &str = "ent";

/// The default `typ` allow-list of a Backstage issuer.
pub fn user_types() -> &'static [String] {
    static TYPES: std::sync::OnceLock<[String; 1]> = std::sync::OnceLock::new();
    TYPES.get_or_init(|| [USER_TYPE.to_owned()])
}

/// The `[[issuers]]` keys that make no sense for a Backstage issuer.
///
/// # Errors
/// [`IssuerError::NotForBackstage`] naming the key.
pub fn validate(cfg: &IssuerConfig) -> Result<(), IssuerError> {
    let bad = |key| {
        Err(IssuerError::NotForBackstage {
            issuer: cfg.issuer.clone(),
            key,
        })
    };
    if cfg.shared_secret_env.is_some() {
        // Backstage signs with asymmetric keys it publishes; a shared secret would
        // let anyone holding it mint any user.
        return bad("shared_secret_env");
    }
    if cfg.trust_unverified_email {
        return bad("trust_unverified_email");
    }
    Ok(())
}

/// Applies the Backstage rules (module docs) to claims that passed the common checks.
///
/// # Errors
/// `bad_subject` for a `sub` that is not a User ref, `malformed_token` for a bad `ent`.
pub fn user_claims(mut claims: Claims, raw: &RawClaims<'_>) -> Result<Claims, Reason> {
    let sub = claims.sub.as_deref().ok_or(Reason::BadSubject)?;
    let user = full_ref(sub, &["user"]).ok_or(Reason::BadSubject)?;
    let ownership = match raw.extra(OWNERSHIP_CLAIM) {
        None => Vec::new(),
        Some(Val::StrList(list)) => {
            let mut out: Vec<String> = Vec::with_capacity(list.len());
            for r in list {
                let r = full_ref(r, &["user", "group"]).ok_or(Reason::MalformedToken)?;
                if !out.contains(&r) {
                    out.push(r);
                }
            }
            out
        }
        Some(_) => return Err(Reason::MalformedToken),
    };
    claims.sub = Some(user.clone());
    claims.user_ref = Some(user);
    claims.ownership = ownership;
    claims.groups.clear();
    claims.scopes.clear();
    claims.email = None;
    claims.client_id = None;
    Ok(claims)
}

/// `kind:namespace/name` with every part present (no defaults filled in, as Backstage
/// writes refs in tokens) and a kind among `kinds`, canonical.
fn full_ref(text: &str, kinds: &[&str]) -> Option<String> {
    let (kind, rest) = text.split_once(':')?;
    if !rest.contains('/') || !kinds.iter().any(|k| kind.eq_ignore_ascii_case(k)) {
        return None;
    }
    // Empty defaults: a missing part fails as a shape error.
    EntityRef::parse(text, "", "")
        .ok()
        .map(EntityRef::into_string)
}

#[cfg(test)]
mod tests;
