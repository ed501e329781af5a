//! Token verification: bearer token → verified [`Identity`](crate::identity::Identity) or a
//! [`Reason`](crate::reason::Reason) (message → **token** → policy).
//!
//! - [`jose`]: strict compact-JWS parsing, before any crypto.
//! - [`alg`]: the JWS algorithms, shared by the parser, the key sets and the config.
//! - [`jwk`]: trusted key sets, parsed one JWK at a time.
//! - [`modulus`]: RSA modulus checks at import (even, small factor, prime, prime power).
//! - [`verify`]: the pure core (signature, then claims) with no runtime.
//! - [`backstage`]: the claim rules of `kind = "backstage"` issuers (Backstage user tokens).
//! - [`fetch`]: bounded HTTP for JWKS and OIDC discovery; clock-skew reading.
//! - [`issuer`]: one issuer's key-set snapshot, kept fresh by a background task.
//! - [`verifier`]: the service: the request-path check over those snapshots, and the
//!   verified-token cache.
//! - [`config`]: `[[issuers]]` tables and their validation.
//! - [`cli`]: `stagedoor token verify`, for debugging a rejected token.

pub mod alg;
pub mod backstage;
pub mod cli;
pub mod config;
pub mod fetch;
pub mod issuer;
pub mod jose;
pub mod jwk;
pub mod modulus;
mod recent;
pub mod verifier;
pub mod verify;

pub use alg::Alg;
pub use config::{
    IssuerConfig, IssuerError, IssuerKind, KeySource, TokenCapError, TokenConfig, VerifierError,
};
pub use issuer::IssuerStatus;
pub use jwk::KeySet;
pub use verifier::{Verified, Verifier, VerifierStatus, token_digest};
pub use verify::{
    Claims, IdToken, IdTokenError, VerifiedJws, verify_id_token, verify_jws, verify_with_keys,
};
