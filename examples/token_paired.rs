//! Beside the token benches: verifier vs raw aws-lc-rs throughput measured in *paired*
//! rounds, for a shared, loaded machine where criterion's back-to-back 3 s runs drift
//! too much for a ratio (BENCHMARKS.md, "Issue 12"). Each round runs one batch of every
//! variant, in rotating order; the figure is the median over rounds of raw/variant, in
//! this thread's CPU time (`/proc/thread-self/schedstat`, Linux only, so time spent
//! preempted by other processes does not count) and in wall time.
//!
//! Run: `cargo run --release --example token_paired -- [rounds, default 30]`
//!
//! `verifier_all_jwt` is the verifier's own work (`parse_jws`, `RawClaims::parse`,
//! `check_claims`) with jsonwebtoken's signature check for every algorithm: what the
//! verifier would cost for RS256 had RSA not stayed on aws-lc-rs (`jwk::Check`).

#[path = "../tests/token_support/mod.rs"]
mod token_support;

use std::hint::black_box;
use std::time::Instant;

use aws_lc_rs::signature::{self, ParsedPublicKey, RsaPublicKeyComponents};
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey};
use stagedoor::token::jose::{B64, RawClaims, parse_jws};
use stagedoor::token::verify::check_claims;
use stagedoor::token::{IssuerConfig, KeySet, KeySource, verify_with_keys};
use token_support::*;

/// Nanoseconds this thread has run on a CPU.
fn cpu_ns() -> u64 {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").expect("schedstat");
    s.split_whitespace().next().unwrap().parse().unwrap()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The same public key for aws-lc-rs (parsed once) and for jsonwebtoken.
fn keys(jwk: &serde_json::Value, alg: &str) -> (ParsedPublicKey, DecodingKey, Algorithm) {
    let s = |k: &str| jwk[k].as_str().unwrap();
    let d = |k: &str| B64.decode(s(k)).unwrap();
    match alg {
        "RS256" => (
            RsaPublicKeyComponents {
                n: d("n"),
                e: d("e"),
            }
            .to_parsed_public_key(&signature::RSA_PKCS1_2048_8192_SHA256)
            .unwrap(),
            DecodingKey::from_rsa_components(s("n"), s("e")).unwrap(),
            Algorithm::RS256,
        ),
        "ES256" => (
            ParsedPublicKey::new(
                &signature::ECDSA_P256_SHA256_FIXED,
                [vec![4], d("x"), d("y")].concat(),
            )
            .unwrap(),
            DecodingKey::from_ec_components(s("x"), s("y")).unwrap(),
            Algorithm::ES256,
        ),
        _ => (
            ParsedPublicKey::new(&signature::ED25519, d("x")).unwrap(),
            DecodingKey::from_ed_components(s("x")).unwrap(),
            Algorithm::EdDSA,
        ),
    }
}

type Variant<'a> = (&'static str, Box<dyn Fn() -> bool + 'a>);

fn main() {
    let rounds: usize = std::env::args().nth(1).map_or(30, |s| s.parse().unwrap());
    let cfg = IssuerConfig::new(ISS, &[AUD], KeySource::JwksUrl(format!("{ISS}/jwks")));
    let n = now();
    // Batches of about 60 ms: long against the scheduler tick that updates schedstat.
    for (alg, key, batch) in [
        ("RS256", TestKey::rsa(), 3000u32),
        ("ES256", TestKey::ec(), 1100),
        ("EdDSA", TestKey::ed(), 1500),
    ] {
        let jwk = key.jwk("k1", Some(alg));
        let doc = jwks(std::slice::from_ref(&jwk));
        let (set, _) = KeySet::from_jwks(doc.as_bytes(), cfg.allowed_algorithms()).unwrap();
        let token = mint(&key, alg, "k1", &claims(n));
        let (input, sig64) = token.rsplit_once('.').unwrap();
        let sig = B64.decode(sig64).unwrap();
        let (raw, jwt, jwt_alg) = keys(&jwk, alg);
        let variants: [Variant<'_>; 4] = [
            (
                "raw_aws_lc_rs",
                Box::new(|| raw.verify_sig(black_box(input.as_bytes()), &sig).is_ok()),
            ),
            (
                "verifier",
                Box::new(|| verify_with_keys(black_box(&token), n, &set, &cfg, 8192).is_ok()),
            ),
            (
                "jwt_crypto_only",
                Box::new(|| {
                    jsonwebtoken::crypto::verify(black_box(sig64), input.as_bytes(), &jwt, jwt_alg)
                        .unwrap()
                }),
            ),
            (
                "verifier_all_jwt",
                Box::new(|| {
                    let jws = parse_jws(black_box(&token), 8192).unwrap();
                    let claims =
                        RawClaims::parse(&jws.payload, std::slice::from_ref(&cfg.groups_claim))
                            .unwrap();
                    let sig_ok = jsonwebtoken::crypto::verify(
                        jws.signature_b64(),
                        jws.signing_input,
                        &jwt,
                        jwt_alg,
                    );
                    sig_ok.unwrap() && check_claims(&jws, &claims, &cfg, n, 0).is_ok()
                }),
            ),
        ];
        assert!(variants.iter().all(|(_, f)| f()));
        let (mut cpu, mut wall) = (vec![Vec::new(); 4], vec![Vec::new(); 4]);
        for r in 0..rounds {
            for k in (0..4).map(|k| (k + r) % 4) {
                let (c0, w0) = (cpu_ns(), Instant::now());
                for _ in 0..batch {
                    black_box(variants[k].1());
                }
                cpu[k].push((cpu_ns() - c0) as f64 / f64::from(batch));
                wall[k].push(w0.elapsed().as_nanos() as f64 / f64::from(batch));
            }
        }
        let ratio =
            |m: &[Vec<f64>], k: usize| median(m[0].iter().zip(&m[k]).map(|(r, v)| r / v).collect());
        for (k, (name, _)) in variants.iter().enumerate() {
            println!(
                "{alg}/{name:<16} cpu {:>7.2} µs  wall {:>7.2} µs  throughput/raw: cpu {:.3} wall {:.3}",
                median(cpu[k].clone()) / 1e3,
                median(wall[k].clone()) / 1e3,
                ratio(&cpu, k),
                ratio(&wall, k),
            );
        }
    }
}
