//! Token verification throughput: the full verifier next to raw aws-lc-rs signature
//! verification with the same key, per algorithm, and the verified-token cache hit path;
//! and the cost of importing one key (`jwks_import/*`, with the RSA modulus checks).
//! `<ALG>/jsonwebtoken` is jsonwebtoken's signature check alone (`crypto::verify`), the
//! figure that decides which library checks each algorithm (see `jwk::Check`).
//! Run: cargo bench --bench token -- --warm-up-time 1 --measurement-time 3

#[path = "../tests/token_support/mod.rs"]
mod token_support;

use std::future::Future;
use std::hint::black_box;

use aws_lc_rs::signature::{self, ParsedPublicKey, RsaPublicKeyComponents};
use base64::Engine;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use jsonwebtoken::{Algorithm, DecodingKey};
use stagedoor::token::jose::B64;
use stagedoor::token::{IssuerConfig, KeySet, KeySource, TokenConfig, Verifier, verify_with_keys};
use token_support::*;

/// The key as jsonwebtoken takes it, from the JWK members.
fn jwt_key(jwk: &serde_json::Value, alg: &str) -> (DecodingKey, Algorithm) {
    let s = |k: &str| jwk[k].as_str().unwrap();
    match alg {
        "RS256" => (
            DecodingKey::from_rsa_components(s("n"), s("e")).unwrap(),
            Algorithm::RS256,
        ),
        "ES256" => (
            DecodingKey::from_ec_components(s("x"), s("y")).unwrap(),
            Algorithm::ES256,
        ),
        _ => (
            DecodingKey::from_ed_components(s("x")).unwrap(),
            Algorithm::EdDSA,
        ),
    }
}

fn raw_key(jwk: &serde_json::Value, alg: &str) -> ParsedPublicKey {
    let d = |k: &str| B64.decode(jwk[k].as_str().unwrap()).unwrap();
    match alg {
        "RS256" => RsaPublicKeyComponents {
            n: d("n"),
            e: d("e"),
        }
        .to_parsed_public_key(&signature::RSA_PKCS1_2048_8192_SHA256)
        .unwrap(),
        "ES256" => {
            let point = [vec![4], d("x"), d("y")].concat();
            ParsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point).unwrap()
        }
        _ => ParsedPublicKey::new(&signature::ED25519, d("x")).unwrap(),
    }
}

fn bench(c: &mut Criterion) {
    let cfg = IssuerConfig::new(ISS, &[AUD], KeySource::JwksUrl(format!("{ISS}/jwks")));
    let n = now();
    let mut g = c.benchmark_group("token");
    g.throughput(Throughput::Elements(1));
    for (alg, key) in [
        ("RS256", TestKey::rsa()),
        ("ES256", TestKey::ec()),
        ("EdDSA", TestKey::ed()),
    ] {
        let jwk = key.jwk("k1", Some(alg));
        let (keys, _) = KeySet::from_jwks(
            jwks(std::slice::from_ref(&jwk)).as_bytes(),
            cfg.allowed_algorithms(),
        )
        .unwrap();
        let token = mint(&key, alg, "k1", &claims(n));
        assert!(verify_with_keys(&token, n, &keys, &cfg, 8192).is_ok());
        let (input, sig64) = token.rsplit_once('.').unwrap();
        let sig = B64.decode(sig64).unwrap();
        let raw = raw_key(&jwk, alg);
        assert!(raw.verify_sig(input.as_bytes(), &sig).is_ok());
        g.bench_function(format!("{alg}/raw_aws_lc_rs"), |b| {
            b.iter(|| {
                raw.verify_sig(black_box(input.as_bytes()), black_box(&sig))
                    .is_ok()
            })
        });
        let (jwt, jwt_alg) = jwt_key(&jwk, alg);
        assert!(jsonwebtoken::crypto::verify(sig64, input.as_bytes(), &jwt, jwt_alg).unwrap());
        g.bench_function(format!("{alg}/jsonwebtoken"), |b| {
            b.iter(|| {
                jsonwebtoken::crypto::verify(
                    black_box(sig64),
                    black_box(input.as_bytes()),
                    &jwt,
                    jwt_alg,
                )
                .unwrap()
            })
        });
        g.bench_function(format!("{alg}/no_crypto"), |b| {
            b.iter(|| {
                let jws = stagedoor::token::jose::parse_jws(black_box(&token), 8192).unwrap();
                let raw = stagedoor::token::jose::RawClaims::parse(
                    &jws.payload,
                    std::slice::from_ref(&cfg.groups_claim),
                )
                .unwrap();
                stagedoor::token::verify::check_claims(&jws, &raw, &cfg, n, 0).is_ok()
            })
        });
        g.bench_function(format!("{alg}/verifier"), |b| {
            b.iter(|| verify_with_keys(black_box(&token), n, &keys, &cfg, 8192).is_ok())
        });
    }
    g.finish();
}

/// The verified-token cache: a hit skips the signature and claim work.
fn cache_hit(c: &mut Criterion) {
    let cfg = IssuerConfig::new(ISS, &[AUD], KeySource::JwksUrl(format!("{ISS}/jwks")));
    let n = now();
    let mut g = c.benchmark_group("token");
    g.throughput(Throughput::Elements(1));
    let key = TestKey::rsa();
    let (keys, _) = KeySet::from_jwks(
        jwks(&[key.jwk("k1", Some("RS256"))]).as_bytes(),
        cfg.allowed_algorithms(),
    )
    .unwrap();
    let v = Verifier::with_key_sets(vec![(cfg, keys)], TokenConfig::default());
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let token = mint(&key, "RS256", "k1", &claims(n));
    rt.block_on(v.verify(&token, n)).unwrap();
    // The future of a cache hit completes on its first poll: poll it directly so the
    // figure is the verifier's own cost, then once more through a runtime's block_on.
    let waker = std::task::Waker::noop();
    g.bench_function("RS256/cache_hit", |b| {
        b.iter(|| {
            let mut fut = std::pin::pin!(v.verify(black_box(&token), n));
            matches!(
                fut.as_mut()
                    .poll(&mut std::task::Context::from_waker(waker)),
                std::task::Poll::Ready(Ok(_))
            )
        })
    });
    g.bench_function("RS256/cache_hit_block_on", |b| {
        b.iter(|| rt.block_on(v.verify(black_box(&token), n)).is_ok())
    });
    assert!(v.status().issuers[0].cache_hits > 0);
    g.finish();
}

/// One key parsed from a one-key JWKS: what a key-set refresh pays per new key (RSA:
/// the modulus checks, then aws-lc's key parsing, once per allowed algorithm).
fn import(c: &mut Criterion) {
    use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
    use stagedoor::token::modulus::check_modulus;
    let cfg = IssuerConfig::new(ISS, &[AUD], KeySource::JwksUrl(format!("{ISS}/jwks")));
    let mut g = c.benchmark_group("jwks_import");
    g.throughput(Throughput::Elements(1));
    let rsa = |size| TestKey::Rsa(RsaKeyPair::generate(size).unwrap());
    let cases: Vec<(&str, serde_json::Value)> = vec![
        ("RSA2048", rsa(KeySize::Rsa2048).jwk("k", Some("RS256"))),
        ("RSA2048_no_alg", rsa(KeySize::Rsa2048).jwk("k", None)),
        ("RSA3072", rsa(KeySize::Rsa3072).jwk("k", Some("RS256"))),
        ("RSA4096", rsa(KeySize::Rsa4096).jwk("k", Some("RS256"))),
        ("ES256", TestKey::ec().jwk("k", Some("ES256"))),
    ];
    for (name, jwk) in &cases {
        let doc = jwks(std::slice::from_ref(jwk));
        assert!(KeySet::from_jwks(doc.as_bytes(), cfg.allowed_algorithms()).is_ok());
        g.bench_function(format!("{name}/jwk"), |b| {
            b.iter(|| KeySet::from_jwks(black_box(doc.as_bytes()), cfg.allowed_algorithms()))
        });
        if let Some(n) = jwk["n"].as_str() {
            let n = B64.decode(n).unwrap();
            assert_eq!(check_modulus(&n), Ok(()));
            g.bench_function(format!("{name}/modulus_checks"), |b| {
                b.iter(|| check_modulus(black_box(&n)))
            });
        }
    }
    // The worst case: a prime modulus pays every Miller-Rabin base before it is refused.
    let fixture: serde_json::Value =
        serde_json::from_str(include_str!("../tests/data/broken_rsa/cases.json")).unwrap();
    let prime = fixture["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "prime")
        .unwrap();
    let n = B64.decode(prime["jwk"]["n"].as_str().unwrap()).unwrap();
    assert!(check_modulus(&n).is_err());
    g.bench_function("RSA2048_prime/modulus_checks", |b| {
        b.iter(|| check_modulus(black_box(&n)))
    });
    g.finish();
}

criterion_group!(benches, bench, cache_hit, import);
criterion_main!(benches);
