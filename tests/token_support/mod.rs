//! Shared helpers for the token tests and benches: signing keys, token minting, JWKS
//! documents, and the fault-injecting HTTP server of tests/common (key-set tests).
#![allow(dead_code)]

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use base64::Engine;
use serde_json::{Value, json};
use stagedoor::token::jose::B64;

#[path = "../common/fake_http.rs"]
mod fake_http;
// Not every crate including this module uses the server.
#[allow(unused_imports)]
pub use fake_http::{FaultServer, Reply, small_clock_steps};

pub const ISS: &str = "https://id.example.test";
pub const AUD: &str = "urn:test:api";

pub fn now() -> i64 {
    stagedoor::clock::unix_now()
}

pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    B64.encode(bytes)
}

pub fn unb64(s: &str) -> Vec<u8> {
    B64.decode(s).expect("base64url")
}

pub fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// A private key for minting test tokens.
pub enum TestKey {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
}

impl TestKey {
    pub fn rsa() -> TestKey {
        TestKey::Rsa(RsaKeyPair::generate(KeySize::Rsa2048).expect("rsa keygen"))
    }
    pub fn ec() -> TestKey {
        TestKey::Ec(
            EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).expect("ec keygen"),
        )
    }
    pub fn ed() -> TestKey {
        TestKey::Ed(Ed25519KeyPair::generate().expect("ed keygen"))
    }

    /// Public JWK; `alg` `None` leaves the JWK `alg` out.
    pub fn jwk(&self, kid: &str, alg: Option<&str>) -> Value {
        let mut v = match self {
            TestKey::Rsa(k) => {
                let p = k.public_key();
                json!({"kty":"RSA","n": b64(p.modulus().big_endian_without_leading_zero()),
                       "e": b64(p.exponent().big_endian_without_leading_zero())})
            }
            TestKey::Ec(k) => {
                let p = k.public_key().as_ref();
                json!({"kty":"EC","crv":"P-256","x": b64(&p[1..33]),"y": b64(&p[33..65])})
            }
            TestKey::Ed(k) => {
                json!({"kty":"OKP","crv":"Ed25519","x": b64(k.public_key().as_ref())})
            }
        };
        v["kid"] = json!(kid);
        v["use"] = json!("sig");
        if let Some(a) = alg {
            v["alg"] = json!(a);
        }
        v
    }

    /// Signs `msg` with `alg` (must fit the key).
    pub fn sign(&self, alg: &str, msg: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match self {
            TestKey::Rsa(k) => {
                let enc: &'static dyn signature::RsaEncoding = match alg {
                    "RS256" => &signature::RSA_PKCS1_SHA256,
                    "RS384" => &signature::RSA_PKCS1_SHA384,
                    "RS512" => &signature::RSA_PKCS1_SHA512,
                    "PS256" => &signature::RSA_PSS_SHA256,
                    "PS384" => &signature::RSA_PSS_SHA384,
                    "PS512" => &signature::RSA_PSS_SHA512,
                    other => panic!("{other} is not an RSA alg"),
                };
                let mut sig = vec![0; k.public_modulus_len()];
                k.sign(enc, &rng, msg, &mut sig).expect("rsa sign");
                sig
            }
            TestKey::Ec(k) => k.sign(&rng, msg).expect("ec sign").as_ref().to_vec(),
            TestKey::Ed(k) => k.sign(msg).as_ref().to_vec(),
        }
    }
}

/// HMAC-signs `msg` (for HS* tests and key-confusion attacks).
pub fn hmac_sign(alg: &str, secret: &[u8], msg: &[u8]) -> Vec<u8> {
    use aws_lc_rs::hmac;
    let a = match alg {
        "HS256" => hmac::HMAC_SHA256,
        "HS384" => hmac::HMAC_SHA384,
        _ => hmac::HMAC_SHA512,
    };
    hmac::sign(&hmac::Key::new(a, secret), msg)
        .as_ref()
        .to_vec()
}

/// Default valid claims at `now`.
pub fn claims(now: i64) -> Value {
    json!({"iss": ISS, "aud": AUD, "sub": "client-1", "scope": "read write", "client_id": "svc",
           "iat": now, "nbf": now - 5, "exp": now + 3600, "groups": ["team-a", "team-b"]})
}

/// Mints a token from raw header/claims JSON text, signed with `key` using the header alg.
pub fn mint_raw(header_json: &str, claims_json: &str, alg: &str, key: &TestKey) -> String {
    let input = format!("{}.{}", b64(header_json), b64(claims_json));
    let sig = key.sign(alg, input.as_bytes());
    format!("{input}.{}", b64(sig))
}

/// Mints a token with header `{"alg":alg,"kid":kid}`.
pub fn mint(key: &TestKey, alg: &str, kid: &str, claims: &Value) -> String {
    mint_raw(
        &json!({"alg": alg, "kid": kid}).to_string(),
        &claims.to_string(),
        alg,
        key,
    )
}

pub fn jwks(keys: &[Value]) -> String {
    json!({ "keys": keys }).to_string()
}

/// Polls `cond` every 20 ms for up to `secs` seconds.
pub async fn eventually(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    cond()
}
