//! Token stage, key material: a trusted key set parsed one JWK at a time (bad keys are
//! skipped, never failing the set), each key bound to the algorithms it may verify
//! (token → key selection → signature check).
//!
//! A key is skipped ([`SkipReason`]) for its shape (kty, curve, `use`, `key_ops`, `alg`,
//! private members), its strength (RSA under 2048 bits, a bad exponent) or a broken RSA
//! modulus: even, with a small prime factor, prime, or a prime power
//! ([`super::modulus`]); such a key would let anyone forge tokens. The modulus checks
//! run once per modulus (results are kept across fetches) within a per-document budget
//! (see [`super::modulus`]), never per request; the verifier parses a fetched JWKS only
//! when its bytes changed. At most [`MAX_KEYS`] entries of a document are read; the
//! rest are skipped as one `too_many_keys` entry. Skipped keys are logged by the verifier
//! with the issuer, kid, reason and RFC 7638 thumbprint (never key material) and
//! counted in `stagedoor_jwks_keys_skipped_total{issuer,reason}`.
//!
//! This file holds the set, its keys and the skip reasons; `import` reads one JWK.

use aws_lc_rs::digest;
use aws_lc_rs::signature::ParsedPublicKey;
use base64::Engine;
use jsonwebtoken::DecodingKey;
use serde_json::Value;

use super::alg::Alg;
use super::jose::{B64, Jws, MAX_KID_BYTES};
use super::modulus::{CheckBudget, ModulusFlaw, Refused};
use crate::reason::Reason;
use import::parse_jwk;

mod import;

/// Entries of a JWKS document that are read; later ones are skipped together. Real
/// providers publish a handful (Azure AD about ten).
pub const MAX_KEYS: usize = 64;

/// What checks a signature with one key, imported once. Every rule of `jose` and
/// `import` has passed before either runs.
enum Check {
    /// ES*, EdDSA and HS*: jsonwebtoken (`crypto::verify`) over the key material.
    Jwt(DecodingKey),
    /// RS* and PS*: aws-lc-rs over a key parsed once, one per algorithm of the key (in
    /// the order of `Key::algs`). jsonwebtoken 12 imports an RSA key from its (n, e)
    /// again on every signature, which left the RS256 verifier at about 75% of a parsed
    /// key's throughput, under the 85% it must keep (BENCHMARKS.md, "Issue 12").
    Rsa(Vec<ParsedPublicKey>),
}

/// One trusted key and the algorithms it verifies.
pub struct Key {
    kid: Option<String>,
    fingerprint: u64,
    algs: Vec<Alg>,
    check: Check,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("algs", &self.algs().collect::<Vec<_>>())
            .finish()
    }
}

impl Key {
    /// `material_fp`: the fingerprint of the key material alone.
    fn new(kid: Option<String>, material_fp: u64, algs: Vec<Alg>, check: Check) -> Key {
        let material_fp = material_fp.to_be_bytes();
        let kid_part = match &kid {
            Some(k) => [b"1", k.as_bytes()].concat(),
            None => b"0".to_vec(),
        };
        let mut parts: Vec<&[u8]> = vec![&material_fp, &kid_part];
        parts.extend(algs.iter().map(|a| a.as_str().as_bytes()));
        Key {
            fingerprint: fingerprint(&parts),
            kid,
            algs,
            check,
        }
    }

    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// Identifies the key as the set publishes it: its material, `kid` and algorithms
    /// (not secret: a truncated SHA-256). A verified-token cache entry lives only while
    /// a key with this fingerprint is in the set, so a key renamed or narrowed to other
    /// algorithms at the provider ends the entries verified with it, as removing it does.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    pub fn algs(&self) -> impl Iterator<Item = Alg> + '_ {
        self.algs.iter().copied()
    }

    /// Verifies the signature of `jws` (header, base64url and size rules already
    /// checked by `jose`) with the header's `alg`.
    ///
    /// # Errors
    /// `unsupported_alg` when this key is not bound to that `alg`; `bad_signature`
    /// otherwise.
    pub fn verify(&self, jws: &Jws<'_>) -> Result<(), Reason> {
        let alg = jws.header.alg;
        let i = self
            .algs
            .iter()
            .position(|a| *a == alg)
            .ok_or(Reason::UnsupportedAlg)?;
        let ok = match &self.check {
            // An Err would be a key of another family or bad base64, both ruled out
            // before; it fails the signature all the same.
            Check::Jwt(material) => matches!(
                jsonwebtoken::crypto::verify(
                    jws.signature_b64(),
                    jws.signing_input,
                    material,
                    alg.to_jwt()
                ),
                Ok(true)
            ),
            Check::Rsa(keys) => keys[i]
                .verify_sig(jws.signing_input, jws.signature())
                .is_ok(),
        };
        if ok {
            Ok(())
        } else {
            Err(Reason::BadSignature)
        }
    }
}

/// Why a JWK was left out of a key set (logged and counted, never fatal for the set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum SkipReason {
    #[error("not a JSON object")]
    NotObject,
    #[error("unknown or unusable kty")]
    UnknownKty,
    #[error("symmetric (oct) keys are never taken from a JWKS")]
    Symmetric,
    #[error("use is not \"sig\"")]
    NotForSignatures,
    #[error("key_ops does not include \"verify\"")]
    NoVerifyOp,
    #[error("alg is unknown or does not fit the key type")]
    BadAlg,
    #[error("none of the key's algorithms is allowed for this issuer")]
    AlgNotAllowed,
    #[error("unsupported curve")]
    BadCurve,
    #[error("RSA modulus under 2048 or over 8192 bits")]
    WeakRsa,
    #[error("bad RSA exponent")]
    BadExponent,
    #[error("RSA modulus is even")]
    EvenModulus,
    #[error("RSA modulus has a small prime factor")]
    SmallFactor,
    #[error("RSA modulus is prime (anyone can compute its private exponent)")]
    PrimeModulus,
    #[error("RSA modulus was factored at import (a prime power)")]
    FactoredModulus,
    #[error("malformed key parameters")]
    BadParams,
    #[error("kid is not a string of at most 256 bytes")]
    BadKid,
    #[error("contains private key material")]
    PrivateMaterial,
    #[error(
        "RSA modulus not checked: the document's budget for new modulus checks is spent (retried on the next fetch)"
    )]
    CheckBudget,
    #[error("more than 64 keys in the document: this one and every later one are ignored")]
    TooManyKeys,
}

impl SkipReason {
    /// Every reason, in declaration order (`ALL[r as usize] == r`).
    pub const ALL: [SkipReason; 19] = [
        SkipReason::NotObject,
        SkipReason::UnknownKty,
        SkipReason::Symmetric,
        SkipReason::NotForSignatures,
        SkipReason::NoVerifyOp,
        SkipReason::BadAlg,
        SkipReason::AlgNotAllowed,
        SkipReason::BadCurve,
        SkipReason::WeakRsa,
        SkipReason::BadExponent,
        SkipReason::EvenModulus,
        SkipReason::SmallFactor,
        SkipReason::PrimeModulus,
        SkipReason::FactoredModulus,
        SkipReason::BadParams,
        SkipReason::BadKid,
        SkipReason::PrivateMaterial,
        SkipReason::CheckBudget,
        SkipReason::TooManyKeys,
    ];

    /// The metric label (`stagedoor_jwks_keys_skipped_total{reason}`) and log value.
    pub const fn as_str(self) -> &'static str {
        match self {
            SkipReason::NotObject => "not_object",
            SkipReason::UnknownKty => "unknown_kty",
            SkipReason::Symmetric => "symmetric",
            SkipReason::NotForSignatures => "not_for_signatures",
            SkipReason::NoVerifyOp => "no_verify_op",
            SkipReason::BadAlg => "bad_alg",
            SkipReason::AlgNotAllowed => "alg_not_allowed",
            SkipReason::BadCurve => "bad_curve",
            SkipReason::WeakRsa => "weak_rsa",
            SkipReason::BadExponent => "bad_exponent",
            SkipReason::EvenModulus => "even_modulus",
            SkipReason::SmallFactor => "small_factor",
            SkipReason::PrimeModulus => "prime_modulus",
            SkipReason::FactoredModulus => "factored_modulus",
            SkipReason::BadParams => "bad_params",
            SkipReason::BadKid => "bad_kid",
            SkipReason::PrivateMaterial => "private_material",
            SkipReason::CheckBudget => "check_budget",
            SkipReason::TooManyKeys => "too_many_keys",
        }
    }
}

impl From<Refused> for SkipReason {
    fn from(r: Refused) -> SkipReason {
        match r {
            Refused::Flaw(f) => f.into(),
            Refused::OverBudget => SkipReason::CheckBudget,
        }
    }
}

impl From<ModulusFlaw> for SkipReason {
    fn from(f: ModulusFlaw) -> SkipReason {
        match f {
            ModulusFlaw::Even => SkipReason::EvenModulus,
            ModulusFlaw::SmallFactor => SkipReason::SmallFactor,
            ModulusFlaw::Prime => SkipReason::PrimeModulus,
            ModulusFlaw::Factored => SkipReason::FactoredModulus,
        }
    }
}

/// A JWK that was skipped, with its kid when it had one and its RFC 7638 thumbprint
/// when its public members allow one (a hash: the only key-derived value ever logged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub index: usize,
    pub kid: Option<String>,
    pub thumbprint: Option<String>,
    pub reason: SkipReason,
}

/// A JWKS document that could not be used at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    #[error("not a JSON object with a \"keys\" array")]
    NotJwks,
    #[error("no usable key")]
    Empty,
}

/// An issuer's trusted keys: immutable, swapped as a whole on refresh.
#[derive(Debug, Default)]
pub struct KeySet {
    keys: Vec<Key>,
}

/// Result of looking a token's `kid` up in a key set.
pub enum Lookup<'k> {
    Found(&'k Key),
    UnknownKid,
}

impl KeySet {
    /// Parses a JWKS, keeping only keys that are sound and allowed by `allowed`.
    ///
    /// # Errors
    /// [`JwksError`] when the document is not a JWKS or no key is usable.
    pub fn from_jwks(json: &[u8], allowed: &[Alg]) -> Result<(KeySet, Vec<Skipped>), JwksError> {
        let (keys, skipped) = KeySet::parse_jwks(json, allowed)?;
        if keys.is_empty() {
            return Err(JwksError::Empty);
        }
        Ok((keys, skipped))
    }

    /// [`KeySet::from_jwks`] that also returns a set with no usable key (so that its
    /// skipped keys can be reported).
    ///
    /// # Errors
    /// [`JwksError::NotJwks`] when the document is not a JWKS.
    pub fn parse_jwks(json: &[u8], allowed: &[Alg]) -> Result<(KeySet, Vec<Skipped>), JwksError> {
        let doc: Value = serde_json::from_slice(json).map_err(|_| JwksError::NotJwks)?;
        let Some(Value::Array(entries)) = doc.get("keys") else {
            return Err(JwksError::NotJwks);
        };
        let mut keys = Vec::with_capacity(entries.len().min(MAX_KEYS));
        let mut skipped = Vec::new();
        let mut budget = CheckBudget::per_document();
        for (index, jwk) in entries.iter().enumerate() {
            if index == MAX_KEYS {
                // One entry stands for all the rest: a document of thousands of tiny
                // entries must not turn into thousands of log lines.
                skipped.push(Skipped {
                    index,
                    kid: None,
                    thumbprint: None,
                    reason: SkipReason::TooManyKeys,
                });
                break;
            }
            match parse_jwk(jwk, allowed, &mut budget) {
                Ok(k) => keys.push(k),
                Err(reason) => {
                    let kid = jwk
                        .get("kid")
                        .and_then(Value::as_str)
                        .map(|k| k.chars().take(MAX_KID_BYTES).collect::<String>());
                    skipped.push(Skipped {
                        index,
                        kid,
                        thumbprint: thumbprint(jwk),
                        reason,
                    });
                }
            }
        }
        Ok((KeySet { keys }, skipped))
    }

    /// A key set holding one shared secret for the HS* algorithms in `allowed` whose
    /// hash size the secret meets (RFC 7518 §3.2).
    pub fn from_secret(kid: Option<String>, secret: &[u8], allowed: &[Alg]) -> KeySet {
        let algs: Vec<Alg> = [Alg::HS256, Alg::HS384, Alg::HS512]
            .into_iter()
            .filter(|a| allowed.contains(a) && secret.len() >= a.min_secret_bytes())
            .collect();
        // from_secret refuses only an empty secret, which no HS* minimum lets through.
        let Some(material) = DecodingKey::from_secret(secret)
            .ok()
            .filter(|_| !algs.is_empty())
        else {
            return KeySet::default();
        };
        KeySet {
            keys: vec![Key::new(
                kid,
                fingerprint(&[b"oct", secret]),
                algs,
                Check::Jwt(material),
            )],
        }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn keys(&self) -> &[Key] {
        &self.keys
    }

    /// Whether both sets hold the same keys (by fingerprint, in any order).
    pub fn same_keys(&self, other: &KeySet) -> bool {
        let sorted = |s: &KeySet| {
            let mut v: Vec<u64> = s.keys.iter().map(|k| k.fingerprint).collect();
            v.sort_unstable();
            v
        };
        sorted(self) == sorted(other)
    }

    /// Whether the key with this fingerprint is still in the set.
    pub fn contains(&self, fingerprint: u64) -> bool {
        self.keys.iter().any(|k| k.fingerprint == fingerprint)
    }

    /// Finds the key for a token: by exact `kid`; a token without `kid`, or a set of one
    /// key without `kid`, needs no match.
    pub fn lookup(&self, kid: Option<&str>, alg: Alg) -> Lookup<'_> {
        if let Some(kid) = kid {
            // Several keys may share a kid across key types: prefer one bound to `alg`.
            let mut fallback = None;
            for k in self.keys.iter().filter(|k| k.kid.as_deref() == Some(kid)) {
                if k.algs().any(|a| a == alg) {
                    return Lookup::Found(k);
                }
                fallback.get_or_insert(k);
            }
            if let Some(k) = fallback {
                return Lookup::Found(k);
            }
        }
        match self.keys.as_slice() {
            [only] if kid.is_none() || only.kid.is_none() => Lookup::Found(only),
            _ => Lookup::UnknownKid,
        }
    }
}

fn fingerprint(parts: &[&[u8]]) -> u64 {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for p in parts {
        ctx.update(&(p.len() as u64).to_be_bytes());
        ctx.update(p);
    }
    let d = ctx.finish();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d.as_ref()[..8]);
    u64::from_be_bytes(b)
}

/// The RFC 7638 JWK thumbprint (base64url SHA-256 of the required public members), when
/// the JWK has them as strings.
pub fn thumbprint(jwk: &Value) -> Option<String> {
    let s = |name: &str| jwk.get(name).and_then(Value::as_str);
    let members: Vec<(&str, &str)> = match s("kty")? {
        "RSA" => vec![("e", s("e")?), ("kty", "RSA"), ("n", s("n")?)],
        "EC" => vec![
            ("crv", s("crv")?),
            ("kty", "EC"),
            ("x", s("x")?),
            ("y", s("y")?),
        ],
        "OKP" => vec![("crv", s("crv")?), ("kty", "OKP"), ("x", s("x")?)],
        _ => return None,
    };
    let body: Vec<String> = members
        .iter()
        .map(|(k, v)| format!("\"{k}\":{}", Value::from(*v)))
        .collect();
    let canonical = format!("{{{}}}", body.join(","));
    Some(B64.encode(digest::digest(&digest::SHA256, canonical.as_bytes())))
}

#[cfg(test)]
mod tests;
