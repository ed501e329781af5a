//! Token stage, key import: one JWK read, checked and turned into a [`Key`] bound to the
//! algorithms it may verify (JWKS document → **key** → key set). Runs at key-set refresh,
//! never per request.

use aws_lc_rs::signature::{self, ParsedPublicKey, RsaPublicKeyComponents};
use base64::Engine;
use jsonwebtoken::DecodingKey;
use serde_json::Value;

use super::{Check, Key, SkipReason, fingerprint};
use crate::token::alg::Alg;
use crate::token::jose::{B64, MAX_KID_BYTES};
use crate::token::modulus::{CheckBudget, check_modulus_cached};

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

/// Reads one JWK into a key, or says why it is skipped. The rules run in a fixed order
/// (shape, then members, then type and algorithms, then the key material), so a key
/// broken in several ways is always skipped for the same reason.
pub(super) fn parse_jwk(
    jwk: &Value,
    allowed: &[Alg],
    budget: &mut CheckBudget,
) -> Result<Key, SkipReason> {
    let (kty, kid) = read_members(jwk)?;
    let algs = key_algs(jwk, kty, allowed)?;
    let (check, fp) = match kty {
        "RSA" => rsa_key(jwk, &algs, budget)?,
        "EC" => ec_key(jwk, algs[0])?,
        _ => ed_key(jwk)?,
    };
    Ok(Key::new(kid, fp, algs, check))
}

/// The members judged before the key type: an object with a `kty` that is not `oct`, a
/// short string `kid`, `use` and `key_ops` that allow verifying, and no private members.
/// Returns the `kty` and the `kid`.
fn read_members(jwk: &Value) -> Result<(&str, Option<String>), SkipReason> {
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
    Ok((kty, kid))
}

/// The key decides its algorithms: its JWK `alg`, else what its kty/crv allows; then
/// only those the issuer allows.
fn key_algs(jwk: &Value, kty: &str, allowed: &[Alg]) -> Result<Vec<Alg>, SkipReason> {
    let family: Vec<Alg> = match kty {
        "RSA" => Alg::ALL.into_iter().filter(|a| a.is_rsa()).collect(),
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
    Ok(algs)
}

/// An RSA key: size, exponent and modulus rules, then parsed by aws-lc-rs once per
/// algorithm (see `Check::Rsa` for why not jsonwebtoken).
fn rsa_key(
    jwk: &Value,
    algs: &[Alg],
    budget: &mut CheckBudget,
) -> Result<(Check, u64), SkipReason> {
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
    let mut keys = Vec::with_capacity(algs.len());
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
        keys.push(key);
    }
    Ok((Check::Rsa(keys), fingerprint(&[b"RSA", n, e])))
}

/// An EC key on the curve of `alg` (aws-lc-rs checks the point is on it), kept for
/// jsonwebtoken.
fn ec_key(jwk: &Value, alg: Alg) -> Result<(Check, u64), SkipReason> {
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
    let point = [&[4u8][..], &x, &y].concat();
    // Rejects points that are not on the curve.
    ParsedPublicKey::new(verify_alg, &point).map_err(|_| SkipReason::BadParams)?;
    // The members passed the strict decode above; jsonwebtoken decodes them again.
    let material = DecodingKey::from_ec_components(
        str_param(jwk, "x")?.unwrap_or_default(),
        str_param(jwk, "y")?.unwrap_or_default(),
    )
    .map_err(|_| SkipReason::BadParams)?;
    Ok((Check::Jwt(material), fingerprint(&[b"EC", &point])))
}

/// An Ed25519 key (aws-lc-rs checks it parses), kept for jsonwebtoken.
fn ed_key(jwk: &Value) -> Result<(Check, u64), SkipReason> {
    let x = b64_param(jwk, "x")?;
    if x.len() != 32 {
        return Err(SkipReason::BadParams);
    }
    ParsedPublicKey::new(&signature::ED25519, &x).map_err(|_| SkipReason::BadParams)?;
    let material = DecodingKey::from_ed_components(str_param(jwk, "x")?.unwrap_or_default())
        .map_err(|_| SkipReason::BadParams)?;
    Ok((Check::Jwt(material), fingerprint(&[b"OKP", &x])))
}

fn strip_zeros(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|x| *x != 0).unwrap_or(b.len());
    &b[start..]
}
