//! Key-set unit tests: JWK rules, skip reasons, thumbprints, modulus refusals, lookup.

use super::import::parse_jwk;
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
    let hex = crate::token::modulus::MODP2048_HEX;
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

#[test]
fn the_build_selects_one_jsonwebtoken_backend() {
    // With both of jsonwebtoken's crypto features, or neither, its signature check
    // would panic on the first token instead of failing here.
    assert!(jsonwebtoken::crypto::CryptoProvider::try_get_default().is_some());
}
