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

use aws_lc_rs::digest;
use aws_lc_rs::hmac;
use aws_lc_rs::signature::{self, ParsedPublicKey, RsaPublicKeyComponents};
use base64::Engine;
use serde_json::Value;

use super::alg::Alg;
use super::jose::{B64, MAX_KID_BYTES};
use super::modulus::{CheckBudget, ModulusFlaw, Refused, check_modulus_cached};
use crate::reason::Reason;

/// Entries of a JWKS document that are read; later ones are skipped together. Real
/// providers publish a handful (Azure AD about ten).
pub const MAX_KEYS: usize = 64;

/// How one algorithm checks a signature with one key.
enum Check {
    Public(ParsedPublicKey),
    Hmac(Box<hmac::Key>),
}

/// One trusted key and the algorithms it verifies.
pub struct Key {
    kid: Option<String>,
    fingerprint: u64,
    checks: Vec<(Alg, Check)>,
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
    /// `material`: the fingerprint of the key material alone.
    fn new(kid: Option<String>, material: u64, checks: Vec<(Alg, Check)>) -> Key {
        let material = material.to_be_bytes();
        let kid_part = match &kid {
            Some(k) => [b"1", k.as_bytes()].concat(),
            None => b"0".to_vec(),
        };
        let mut parts: Vec<&[u8]> = vec![&material, &kid_part];
        parts.extend(checks.iter().map(|(a, _)| a.as_str().as_bytes()));
        Key {
            fingerprint: fingerprint(&parts),
            kid,
            checks,
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
        self.checks.iter().map(|(a, _)| *a)
    }

    /// Verifies `sig` over `msg` with `alg`.
    ///
    /// # Errors
    /// `unsupported_alg` when this key is not bound to `alg`; `bad_signature` otherwise.
    pub fn verify(&self, alg: Alg, msg: &[u8], sig: &[u8]) -> Result<(), Reason> {
        let check = self
            .checks
            .iter()
            .find(|(a, _)| *a == alg)
            .map(|(_, c)| c)
            .ok_or(Reason::UnsupportedAlg)?;
        let ok = match check {
            Check::Public(k) => k.verify_sig(msg, sig).is_ok(),
            Check::Hmac(k) => hmac::verify(k, msg, sig).is_ok(),
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
        let mut checks = Vec::new();
        for (alg, hmac_alg) in [
            (Alg::HS256, hmac::HMAC_SHA256),
            (Alg::HS384, hmac::HMAC_SHA384),
            (Alg::HS512, hmac::HMAC_SHA512),
        ] {
            if allowed.contains(&alg) && secret.len() >= alg.min_secret_bytes() {
                checks.push((alg, Check::Hmac(Box::new(hmac::Key::new(hmac_alg, secret)))));
            }
        }
        if checks.is_empty() {
            return KeySet::default();
        }
        KeySet {
            keys: vec![Key::new(kid, fingerprint(&[b"oct", secret]), checks)],
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

fn str_param<'a>(jwk: &'a Value, name: &str) -> Result<Option<&'a str>, SkipReason> {
    match jwk.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(SkipReason::BadParams),
    }
}

fn b64_param(jwk: &Value, name: &str) -> Result<Vec<u8>, SkipReason> {
    let s = str_param(jwk, name)?.ok_or(SkipReason::BadParams)?;
    B64.decode(s).map_err(|_| SkipReason::BadParams)
}

fn parse_jwk(jwk: &Value, allowed: &[Alg], budget: &mut CheckBudget) -> Result<Key, SkipReason> {
    if !jwk.is_object() {
        return Err(SkipReason::NotObject);
    }
    let kty = str_param(jwk, "kty")?.ok_or(SkipReason::UnknownKty)?;
    if kty == "oct" {
        return Err(SkipReason::Symmetric);
    }
    let kid = match jwk.get("kid") {
        None => None,
        Some(Value::String(s)) if s.len() <= MAX_KID_BYTES => Some(s.clone()),
        Some(_) => return Err(SkipReason::BadKid),
    };
    match jwk.get("use") {
        None => {}
        Some(Value::String(u)) if u == "sig" => {}
        Some(_) => return Err(SkipReason::NotForSignatures),
    }
    match jwk.get("key_ops") {
        None => {}
        Some(Value::Array(ops)) if ops.iter().any(|o| o.as_str() == Some("verify")) => {}
        Some(_) => return Err(SkipReason::NoVerifyOp),
    }
    if ["d", "p", "q", "dp", "dq", "qi"]
        .iter()
        .any(|p| jwk.get(p).is_some())
    {
        return Err(SkipReason::PrivateMaterial);
    }
    // The key decides its algorithms: its JWK alg, else what its kty/crv allows.
    let family: Vec<Alg> = match kty {
        "RSA" => vec![
            Alg::RS256,
            Alg::RS384,
            Alg::RS512,
            Alg::PS256,
            Alg::PS384,
            Alg::PS512,
        ],
        "EC" => match str_param(jwk, "crv")? {
            Some("P-256") => vec![Alg::ES256],
            Some("P-384") => vec![Alg::ES384],
            _ => return Err(SkipReason::BadCurve),
        },
        "OKP" => match str_param(jwk, "crv")? {
            Some("Ed25519") => vec![Alg::EdDSA],
            _ => return Err(SkipReason::BadCurve),
        },
        _ => return Err(SkipReason::UnknownKty),
    };
    let declared = match str_param(jwk, "alg")? {
        None => None,
        Some(name) => Some(Alg::from_name(name).ok_or(SkipReason::BadAlg)?),
    };
    let algs: Vec<Alg> = match declared {
        Some(a) if family.contains(&a) => vec![a],
        Some(_) => return Err(SkipReason::BadAlg),
        None => family,
    };
    let algs: Vec<Alg> = algs.into_iter().filter(|a| allowed.contains(a)).collect();
    if algs.is_empty() {
        return Err(SkipReason::AlgNotAllowed);
    }
    let (checks, fp) = match kty {
        "RSA" => rsa_checks(jwk, &algs, budget)?,
        "EC" => ec_checks(jwk, algs[0])?,
        _ => ed_checks(jwk)?,
    };
    Ok(Key::new(kid, fp, checks))
}

fn rsa_checks(
    jwk: &Value,
    algs: &[Alg],
    budget: &mut CheckBudget,
) -> Result<(Vec<(Alg, Check)>, u64), SkipReason> {
    let n = b64_param(jwk, "n")?;
    let e = b64_param(jwk, "e")?;
    let n = strip_zeros(&n);
    let e = strip_zeros(&e);
    let bits = n
        .first()
        .map_or(0, |b| (n.len() - 1) * 8 + (8 - b.leading_zeros() as usize));
    if !(2048..=8192).contains(&bits) {
        return Err(SkipReason::WeakRsa);
    }
    // e must be odd, at least 3 and fit in 33 bits (what aws-lc accepts).
    if e.is_empty() || e.len() > 5 || e[e.len() - 1] & 1 == 0 || (e.len() == 1 && e[0] < 3) {
        return Err(SkipReason::BadExponent);
    }
    // Only the size was checked so far: a prime or easily factored modulus would let
    // anyone forge signatures (see `modulus`). Once per modulus, at import, within the
    // document's budget.
    check_modulus_cached(n, budget)?;
    let comps = RsaPublicKeyComponents { n, e };
    let mut checks = Vec::with_capacity(algs.len());
    for &alg in algs {
        let params: &'static signature::RsaParameters = match alg {
            Alg::RS256 => &signature::RSA_PKCS1_2048_8192_SHA256,
            Alg::RS384 => &signature::RSA_PKCS1_2048_8192_SHA384,
            Alg::RS512 => &signature::RSA_PKCS1_2048_8192_SHA512,
            Alg::PS256 => &signature::RSA_PSS_2048_8192_SHA256,
            Alg::PS384 => &signature::RSA_PSS_2048_8192_SHA384,
            Alg::PS512 => &signature::RSA_PSS_2048_8192_SHA512,
            _ => return Err(SkipReason::BadAlg),
        };
        let key = comps
            .to_parsed_public_key(params)
            .map_err(|_| SkipReason::BadParams)?;
        checks.push((alg, Check::Public(key)));
    }
    Ok((checks, fingerprint(&[b"RSA", n, e])))
}

fn ec_checks(jwk: &Value, alg: Alg) -> Result<(Vec<(Alg, Check)>, u64), SkipReason> {
    let (len, verify_alg): (usize, &'static signature::EcdsaVerificationAlgorithm) = match alg {
        Alg::ES256 => (32, &signature::ECDSA_P256_SHA256_FIXED),
        Alg::ES384 => (48, &signature::ECDSA_P384_SHA384_FIXED),
        _ => return Err(SkipReason::BadAlg),
    };
    let x = b64_param(jwk, "x")?;
    let y = b64_param(jwk, "y")?;
    if x.len() != len || y.len() != len {
        return Err(SkipReason::BadParams);
    }
    let mut point = Vec::with_capacity(1 + 2 * len);
    point.push(4);
    point.extend_from_slice(&x);
    point.extend_from_slice(&y);
    // Rejects points that are not on the curve.
    let key = ParsedPublicKey::new(verify_alg, &point).map_err(|_| SkipReason::BadParams)?;
    Ok((
        vec![(alg, Check::Public(key))],
        fingerprint(&[b"EC", &point]),
    ))
}

fn ed_checks(jwk: &Value) -> Result<(Vec<(Alg, Check)>, u64), SkipReason> {
    let x = b64_param(jwk, "x")?;
    if x.len() != 32 {
        return Err(SkipReason::BadParams);
    }
    let key = ParsedPublicKey::new(&signature::ED25519, &x).map_err(|_| SkipReason::BadParams)?;
    Ok((
        vec![(Alg::EdDSA, Check::Public(key))],
        fingerprint(&[b"OKP", &x]),
    ))
}

fn strip_zeros(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|x| *x != 0).unwrap_or(b.len());
    &b[start..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ALL: &[Alg] = &Alg::ALL;

    fn ec_jwk() -> Value {
        // Wycheproof es256 group key.
        json!({"kty":"EC","crv":"P-256","kid":"ec",
               "x":"04N0xi21hshyvBp7I167sbE_bXqyqkAPfefdklMO7wY",
               "y":"UI8exy-C06a7DUnjIdENkxeFtHM4-l_41LqEw9nVgmw"})
    }

    fn skip_of(jwk: Value) -> SkipReason {
        parse_jwk(&jwk, ALL, &mut CheckBudget::per_document()).expect_err("skipped")
    }

    #[test]
    fn ec_key_and_rules() {
        let k = parse_jwk(&ec_jwk(), ALL, &mut CheckBudget::per_document()).unwrap();
        assert_eq!(k.algs().collect::<Vec<_>>(), vec![Alg::ES256]);
        let mut j = ec_jwk();
        j["use"] = json!("enc");
        assert_eq!(skip_of(j), SkipReason::NotForSignatures);
        let mut j = ec_jwk();
        j["key_ops"] = json!(["encrypt"]);
        assert_eq!(skip_of(j), SkipReason::NoVerifyOp);
        let mut j = ec_jwk();
        j["key_ops"] = json!(["sign", "verify"]);
        assert!(parse_jwk(&j, ALL, &mut CheckBudget::per_document()).is_ok());
        let mut j = ec_jwk();
        j["crv"] = json!("P-384");
        assert_eq!(skip_of(j), SkipReason::BadParams);
        let mut j = ec_jwk();
        j["crv"] = json!("secp256k1");
        assert_eq!(skip_of(j), SkipReason::BadCurve);
        let mut j = ec_jwk();
        j["alg"] = json!("RS256");
        assert_eq!(skip_of(j), SkipReason::BadAlg);
        let mut j = ec_jwk();
        j["alg"] = json!("ES521");
        assert_eq!(skip_of(j), SkipReason::BadAlg);
        let mut j = ec_jwk();
        j["y"] = json!("UI8exy-C06a7DUnjIdENkxeFtHM4-l_41LqEw9nVgm0");
        assert_eq!(skip_of(j), SkipReason::BadParams, "point off the curve");
        let mut j = ec_jwk();
        j["d"] = json!("AAAA");
        assert_eq!(skip_of(j), SkipReason::PrivateMaterial);
        assert_eq!(
            parse_jwk(&ec_jwk(), &[Alg::RS256], &mut CheckBudget::per_document()).err(),
            Some(SkipReason::AlgNotAllowed)
        );
        assert_eq!(
            skip_of(json!({"kty":"oct","k":"AAAA"})),
            SkipReason::Symmetric
        );
        assert_eq!(
            skip_of(json!({"kty":"AKP","alg":"ML-DSA-44"})),
            SkipReason::UnknownKty
        );
        assert_eq!(skip_of(json!("x")), SkipReason::NotObject);
    }

    #[test]
    fn one_bad_key_never_fails_the_set() {
        let doc = json!({"keys":[{"kty":"AKP"}, 7, ec_jwk(), {"kty":"RSA","n":"AQAB","e":"AQAB"}]});
        let (set, skipped) = KeySet::from_jwks(doc.to_string().as_bytes(), ALL).unwrap();
        assert_eq!(set.len(), 1);
        assert_eq!(skipped.len(), 3);
        assert_eq!(skipped[2].reason, SkipReason::WeakRsa);
        assert_eq!(
            KeySet::from_jwks(b"{\"keys\":[]}", ALL).err(),
            Some(JwksError::Empty)
        );
        assert_eq!(
            KeySet::from_jwks(b"[1]", ALL).err(),
            Some(JwksError::NotJwks)
        );
        assert_eq!(
            KeySet::from_jwks(b"garbage", ALL).err(),
            Some(JwksError::NotJwks)
        );
    }

    #[test]
    fn reasons_are_listed_in_order_with_distinct_labels() {
        for (i, r) in SkipReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{r:?}");
        }
        let mut labels: Vec<&str> = SkipReason::ALL.iter().map(|r| r.as_str()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), SkipReason::ALL.len());
    }

    #[test]
    fn thumbprints_follow_rfc_7638() {
        // RFC 7638 §3.1.
        let jwk = json!({"kty":"RSA","alg":"RS256","kid":"2011-04-29","e":"AQAB",
            "n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"});
        assert_eq!(
            thumbprint(&jwk).as_deref(),
            Some("NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs")
        );
        assert!(thumbprint(&ec_jwk()).is_some());
        assert_eq!(thumbprint(&json!({"kty":"RSA","n":"AQAB"})), None);
        assert_eq!(thumbprint(&json!({"kty":"oct","k":"AAAA"})), None);
        assert_eq!(thumbprint(&json!(7)), None);
    }

    /// A JWK for a 2048-bit odd modulus built from the RFC 3526 group-14 prime `p`.
    fn rsa_jwk(n: &num_bigint::BigUint) -> Value {
        json!({"kty":"RSA","kid":"k","n": B64.encode(n.to_bytes_be()),"e":"AQAB"})
    }

    #[test]
    fn broken_rsa_moduli_are_skipped() {
        let hex = "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74\
                   020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437\
                   4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED\
                   EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05\
                   98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB\
                   9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B\
                   E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF695581718\
                   3995497CEA956AE515D2261898FA051015728E5A8AACAA68FFFFFFFFFFFFFFFF";
        let p = num_bigint::BigUint::parse_bytes(hex.as_bytes(), 16).unwrap();
        let half = num_bigint::BigUint::parse_bytes(&hex.as_bytes()[..256], 16).unwrap();
        assert_eq!(skip_of(rsa_jwk(&p)), SkipReason::PrimeModulus);
        assert_eq!(skip_of(rsa_jwk(&(&p - 1u32))), SkipReason::EvenModulus);
        assert_eq!(
            skip_of(rsa_jwk(&(&half * 997u32 * &half))),
            SkipReason::SmallFactor
        );
        assert_eq!(skip_of(rsa_jwk(&(&p * 3u32))), SkipReason::SmallFactor);
        let (_, skipped) = KeySet::from_jwks(
            json!({"keys":[rsa_jwk(&p), ec_jwk()]})
                .to_string()
                .as_bytes(),
            ALL,
        )
        .unwrap();
        assert_eq!(skipped[0].reason, SkipReason::PrimeModulus);
        assert_eq!(skipped[0].kid.as_deref(), Some("k"));
        assert_eq!(skipped[0].thumbprint, thumbprint(&rsa_jwk(&p)));
    }

    #[test]
    fn lookup_rules() {
        let mut other = ec_jwk();
        other["kid"] = json!("ec2");
        let doc = json!({"keys":[ec_jwk(), other]});
        let (set, _) = KeySet::from_jwks(doc.to_string().as_bytes(), ALL).unwrap();
        assert!(
            matches!(set.lookup(Some("ec2"), Alg::ES256), Lookup::Found(k) if k.kid() == Some("ec2"))
        );
        assert!(matches!(
            set.lookup(Some("nope"), Alg::ES256),
            Lookup::UnknownKid
        ));
        assert!(matches!(set.lookup(None, Alg::ES256), Lookup::UnknownKid));
        let (one, _) =
            KeySet::from_jwks(json!({"keys":[ec_jwk()]}).to_string().as_bytes(), ALL).unwrap();
        assert!(matches!(one.lookup(None, Alg::ES256), Lookup::Found(_)));
        assert!(matches!(
            one.lookup(Some("x"), Alg::ES256),
            Lookup::UnknownKid
        ));
        let secret = KeySet::from_secret(None, &[7u8; 40], ALL);
        assert_eq!(
            secret.keys()[0].algs().collect::<Vec<_>>(),
            vec![Alg::HS256]
        );
        assert!(KeySet::from_secret(None, &[7u8; 16], ALL).is_empty());
    }
}
