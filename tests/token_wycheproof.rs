//! Wycheproof JSON Web Signature vectors (tests/data/wycheproof, Apache-2.0) through the
//! signature-only path: every label holds, apart from the listed questionable ids.

use std::collections::BTreeMap;

use base64::Engine;
use serde_json::{Value, json};
use stagedoor::token::config::DEFAULT_ALGORITHMS;
use stagedoor::token::jose::B64;
use stagedoor::token::modulus::check_modulus;
use stagedoor::token::{Alg, KeySet, verify_jws};

/// tcId → (stagedoor accepts?, why it differs from the file's label).
fn questionable() -> BTreeMap<u64, (bool, &'static str)> {
    BTreeMap::from([
        (
            367,
            (
                true,
                "labelled invalid, but byte-identical to the valid tcId 357 (C2SP/wycheproof#236)",
            ),
        ),
        (
            370,
            (
                true,
                "labelled invalid, but byte-identical to the valid tcId 357 (C2SP/wycheproof#236)",
            ),
        ),
        (
            372,
            (
                false,
                "labelled valid, but the header contains '?', outside the base64url alphabet",
            ),
        ),
        (
            373,
            (
                false,
                "labelled valid, but the payload contains '?', outside the base64url alphabet",
            ),
        ),
        (
            346,
            (
                false,
                "PS384 token while the JWK says alg PS256: the key's alg must equal the token's",
            ),
        ),
        (
            350,
            (
                false,
                "PS384 token while the JWK says alg PS256: the key's alg must equal the token's",
            ),
        ),
        (
            347,
            (
                false,
                "ES512 token while the JWK says alg \"ES521\" (unknown): the JWK is skipped",
            ),
        ),
        (
            351,
            (
                false,
                "ES512 token while the JWK says alg \"ES521\" (unknown): the JWK is skipped",
            ),
        ),
    ])
}

struct Case {
    id: u64,
    group: String,
    jws: String,
    valid: bool,
    alg: Option<Alg>,
}

fn load() -> Vec<(KeySet, KeySet, Vec<Case>)> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/wycheproof/json_web_signature_test.json"
    ))
    .expect("vectors");
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["numberOfTests"], json!(401));
    let mut out = Vec::new();
    for g in doc["testGroups"].as_array().unwrap() {
        let group = g["comment"].as_str().unwrap().to_owned();
        let private = &g["private"];
        // Two key sets: one with every algorithm allowed, one with the production default.
        let keys = |allowed: &[Alg]| -> KeySet {
            if private["kty"] == "oct" {
                // HS*: the explicit shared-secret path (never a JWKS key).
                let k = B64.decode(private["k"].as_str().unwrap()).unwrap();
                let kid = private["kid"].as_str().map(str::to_owned);
                KeySet::from_secret(kid, &k, allowed)
            } else {
                let doc = json!({"keys": [g["public"].clone()]}).to_string();
                KeySet::from_jwks(doc.as_bytes(), allowed)
                    .map(|(k, _)| k)
                    .unwrap_or_default()
            }
        };
        let cases = g["tests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                let jws = t["jws"].as_str().unwrap().to_owned();
                let alg = jws
                    .split('.')
                    .next()
                    .and_then(|h| B64.decode(h).ok())
                    .and_then(|h| serde_json::from_slice::<Value>(&h).ok())
                    .and_then(|h| h["alg"].as_str().and_then(Alg::from_name));
                Case {
                    id: t["tcId"].as_u64().unwrap(),
                    group: group.clone(),
                    jws,
                    valid: t["result"] == "valid",
                    alg,
                }
            })
            .collect();
        out.push((keys(&Alg::ALL), keys(&DEFAULT_ALGORITHMS), cases));
    }
    out
}

#[test]
fn every_vector_matches_its_label_except_the_listed_ids() {
    let q = questionable();
    let mut mismatches = Vec::new();
    let (mut total, mut accepted) = (0, 0);
    for (keys, _, cases) in load() {
        for c in cases {
            total += 1;
            let ok = verify_jws(&c.jws, &keys, &Alg::ALL, 8192).is_ok();
            accepted += usize::from(ok);
            let want = q.get(&c.id).map_or(c.valid, |(ours, _)| *ours);
            if ok != want {
                mismatches.push(format!(
                    "tcId {} ({}): accepted={ok}, expected {want}",
                    c.id, c.group
                ));
            }
        }
    }
    assert_eq!(total, 401);
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    // 46 labelled valid; 2 mislabelled invalid ones accepted; 6 questionable valid ones refused.
    assert_eq!(accepted, 46 + 2 - 6);
}

#[test]
fn the_questionable_ids_are_exactly_the_disagreements() {
    let q = questionable();
    for (keys, _, cases) in load() {
        for c in cases.iter().filter(|c| q.contains_key(&c.id)) {
            let ok = verify_jws(&c.jws, &keys, &Alg::ALL, 8192).is_ok();
            assert_ne!(
                ok, c.valid,
                "tcId {} now agrees with its label: drop it from the list",
                c.id
            );
        }
    }
}

#[test]
fn the_production_allow_list_rejects_every_hmac_vector() {
    let mut hmac_seen = 0;
    for (all_keys, default_keys, cases) in load() {
        for c in cases {
            let ok = verify_jws(&c.jws, &default_keys, &DEFAULT_ALGORITHMS, 8192).is_ok();
            if c.alg.is_some_and(|a| a.is_hmac()) {
                hmac_seen += 1;
                assert!(
                    !ok,
                    "tcId {}: HS* accepted without a configured secret",
                    c.id
                );
            }
            if ok {
                assert!(
                    DEFAULT_ALGORITHMS.contains(&c.alg.unwrap()),
                    "tcId {}",
                    c.id
                );
                assert!(
                    verify_jws(&c.jws, &all_keys, &Alg::ALL, 8192).is_ok(),
                    "tcId {}",
                    c.id
                );
            }
        }
    }
    assert!(hmac_seen >= 30, "{hmac_seen}");
}

/// Issue 11, item 7: the RSA modulus checks (even, small factor, prime, prime power)
/// refuse none of the Wycheproof RSA keys (some groups are skipped for `use: enc`,
/// never for their modulus).
#[test]
fn every_wycheproof_rsa_modulus_passes_the_modulus_checks() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/wycheproof/json_web_signature_test.json"
    ))
    .expect("vectors");
    let doc: Value = serde_json::from_str(&text).unwrap();
    let mut rsa = 0;
    for g in doc["testGroups"].as_array().unwrap() {
        if g["public"]["kty"] != "RSA" {
            continue;
        }
        let n = B64.decode(g["public"]["n"].as_str().unwrap()).unwrap();
        assert_eq!(check_modulus(&n), Ok(()), "{}", g["comment"]);
        rsa += 1;
    }
    assert_eq!(rsa, 13, "RSA groups");
}
