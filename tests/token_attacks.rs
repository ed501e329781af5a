//! The attack / bad-input catalogue of /work/shared/reference/jwt-verification.md §2.1:
//! one named test per row (`attack_NN_...`), each asserting the expected `Reason`.

mod token_support;

use std::sync::{Arc, OnceLock};

use serde_json::{Value, json};
use stagedoor::reason::Reason;
use stagedoor::token::config::IssuerError;
use stagedoor::token::{
    Alg, IssuerConfig, KeySet, KeySource, TokenConfig, Verifier, verify_jws, verify_with_keys,
};
use token_support::*;

struct Fx {
    rsa: TestKey,
    ec: TestKey,
    ed: TestKey,
    attacker: TestKey,
    jwks: String,
    keys: KeySet,
    cfg: IssuerConfig,
}

fn fx() -> &'static Fx {
    static FX: OnceLock<Fx> = OnceLock::new();
    FX.get_or_init(|| {
        let (rsa, ec, ed, attacker) =
            (TestKey::rsa(), TestKey::ec(), TestKey::ed(), TestKey::rsa());
        let jwks = jwks(&[
            rsa.jwk("rs-1", Some("RS256")),
            ec.jwk("ec-1", Some("ES256")),
            ed.jwk("ed-1", None),
        ]);
        let cfg = IssuerConfig::new(ISS, &[AUD], KeySource::JwksUrl(format!("{ISS}/jwks")));
        let (keys, skipped) = KeySet::from_jwks(jwks.as_bytes(), cfg.allowed_algorithms()).unwrap();
        assert!(skipped.is_empty());
        Fx {
            rsa,
            ec,
            ed,
            attacker,
            jwks,
            keys,
            cfg,
        }
    })
}

fn check(token: &str) -> Result<stagedoor::token::Claims, Reason> {
    check_cfg(token, &fx().cfg)
}

fn check_cfg(token: &str, cfg: &IssuerConfig) -> Result<stagedoor::token::Claims, Reason> {
    verify_with_keys(token, now(), &fx().keys, cfg, 8192)
}

fn reason(token: &str) -> Reason {
    check(token).err().unwrap_or(Reason::Ok)
}

fn rs(claims: &Value) -> String {
    mint(&fx().rsa, "RS256", "rs-1", claims)
}

/// A token with header `h` and claims `c` (raw JSON text), RS256-signed with rs-1.
fn rs_raw(h: &str, c: &str) -> String {
    mint_raw(h, c, "RS256", &fx().rsa)
}

const H: &str = r#"{"alg":"RS256","kid":"rs-1"}"#;

fn with_claim(name: &str, v: Value) -> Value {
    let mut c = claims(now());
    c[name] = v;
    c
}

fn without_claim(name: &str) -> Value {
    let mut c = claims(now());
    c.as_object_mut().unwrap().remove(name);
    c
}

#[test]
fn valid_tokens_of_every_default_alg_pass() {
    let c = claims(now());
    for t in [
        rs(&c),
        mint(&fx().ec, "ES256", "ec-1", &c),
        mint(&fx().ed, "EdDSA", "ed-1", &c),
    ] {
        let got = check(&t).unwrap();
        assert_eq!(got.sub.as_deref(), Some("client-1"));
        assert_eq!(got.iss, ISS);
        assert_eq!(got.scopes, ["read", "write"]);
        assert_eq!(got.groups, ["team-a", "team-b"]);
        assert_eq!(got.client_id.as_deref(), Some("svc"));
    }
}

#[test]
fn attack_01_alg_none_in_any_case_is_unsupported() {
    let c = claims(now()).to_string();
    for alg in ["none", "None", "NONE", "nOnE"] {
        let h = json!({"alg": alg, "kid": "rs-1"}).to_string();
        let unsigned = format!("{}.{}.", b64(&h), b64(&c));
        assert_eq!(reason(&unsigned), Reason::UnsupportedAlg, "{alg} empty sig");
        let signed = format!("{}.{}.{}", b64(&h), b64(&c), b64(b"sig"));
        assert_eq!(reason(&signed), Reason::UnsupportedAlg, "{alg} with sig");
    }
}

#[test]
fn attack_02_hs256_signed_with_the_rsa_public_key_is_unsupported() {
    let c = claims(now()).to_string();
    let h = r#"{"alg":"HS256","kid":"rs-1"}"#;
    let input = format!("{}.{}", b64(h), b64(&c));
    let jwk = fx().rsa.jwk("rs-1", Some("RS256"));
    for secret in [
        jwk.to_string().into_bytes(),
        jwk["n"].as_str().unwrap().as_bytes().to_vec(),
    ] {
        let t = format!(
            "{input}.{}",
            b64(hmac_sign("HS256", &secret, input.as_bytes()))
        );
        assert_eq!(reason(&t), Reason::UnsupportedAlg);
        // Even when HS256 is on the allow-list, a JWKS key never verifies HMAC.
        assert_eq!(
            verify_jws(&t, &fx().keys, &Alg::ALL, 8192).err(),
            Some(Reason::UnsupportedAlg)
        );
    }
    let mut cfg = fx().cfg.clone();
    cfg.algorithms = Some(vec![Alg::RS256, Alg::HS256]);
    assert_eq!(
        cfg.validate(),
        Err(IssuerError::HmacWithoutSecret(ISS.into()))
    );
}

#[test]
fn attack_03_kid_injection_is_only_a_map_key() {
    let c = claims(now());
    for kid in [
        "x' UNION SELECT '1';--",
        "../../dev/null",
        "/dev/null",
        "|sleep 10",
        "",
    ] {
        let t = mint(&fx().attacker, "RS256", kid, &c);
        assert_eq!(reason(&t), Reason::UnknownKey, "{kid:?}");
    }
}

#[tokio::test]
async fn attack_04_jku_and_x5u_are_never_fetched() {
    let srv = FaultServer::start().await;
    srv.set("/jwks", Reply::json(fx().jwks.clone()));
    srv.set(
        "/evil",
        Reply::json(jwks(&[fx().attacker.jwk("attacker", Some("RS256"))])),
    );
    let mut cfg = IssuerConfig::new(ISS, &[AUD], KeySource::JwksUrl(srv.url("/jwks")));
    cfg.unknown_kid_cooldown_seconds = 1;
    let v = Verifier::start(vec![cfg], TokenConfig::default()).unwrap();
    assert!(eventually(5, || v.ready()).await);
    let c = claims(now()).to_string();
    for (kid, want) in [
        ("attacker", Reason::UnknownKey),
        ("rs-1", Reason::BadSignature),
    ] {
        let h = json!({"alg":"RS256","kid":kid,"jku":srv.url("/evil"),"x5u":srv.url("/evil")})
            .to_string();
        let t = mint_raw(&h, &c, "RS256", &fx().attacker);
        assert_eq!(v.verify(&t, now()).await.err(), Some(want), "{kid}");
    }
    assert_eq!(srv.hits("/evil"), 0, "a URL from a token was fetched");
    assert!(srv.hits("/jwks") >= 1);
}

#[test]
fn attack_05_embedded_jwk_header_is_ignored() {
    let c = claims(now()).to_string();
    let evil = fx().attacker.jwk("attacker", Some("RS256"));
    for (kid, want) in [
        ("attacker", Reason::UnknownKey),
        ("rs-1", Reason::BadSignature),
    ] {
        let h = json!({"alg":"RS256","kid":kid,"jwk":evil}).to_string();
        assert_eq!(
            reason(&mint_raw(&h, &c, "RS256", &fx().attacker)),
            want,
            "{kid}"
        );
    }
    let x5c = json!({"alg":"RS256","kid":"attacker","x5c":["MIIB"]}).to_string();
    assert_eq!(
        reason(&mint_raw(&x5c, &c, "RS256", &fx().attacker)),
        Reason::UnknownKey
    );
}

#[test]
fn attack_06_crit_makes_the_token_invalid() {
    let c = claims(now()).to_string();
    for h in [
        r#"{"alg":"RS256","kid":"rs-1","crit":["exp-ext"],"exp-ext":1}"#,
        r#"{"alg":"RS256","kid":"rs-1","crit":[]}"#,
        r#"{"alg":"RS256","kid":"rs-1","crit":"x"}"#,
    ] {
        assert_eq!(reason(&rs_raw(h, &c)), Reason::MalformedToken, "{h}");
    }
}

#[test]
fn attack_07_unencoded_payload_b64_false_is_invalid() {
    let c = claims(now()).to_string();
    let h = r#"{"alg":"RS256","kid":"rs-1","b64":false,"crit":["b64"]}"#;
    assert_eq!(reason(&rs_raw(h, &c)), Reason::MalformedToken);
    // Without crit, b64 is not honoured: an unencoded-payload signature does not verify.
    let h2 = r#"{"alg":"RS256","kid":"rs-1","b64":false}"#;
    let input = format!("{}.{}", b64(h2), c);
    let sig = fx().rsa.sign("RS256", input.as_bytes());
    let t = format!("{}.{}.{}", b64(h2), b64(&c), b64(sig));
    assert_eq!(reason(&t), Reason::BadSignature);
}

fn der(sig: &[u8]) -> Vec<u8> {
    let int = |x: &[u8]| {
        let x = &x[x.iter().position(|b| *b != 0).unwrap_or(x.len() - 1)..];
        let mut v = vec![2u8];
        if x[0] & 0x80 != 0 {
            v.push(x.len() as u8 + 1);
            v.push(0);
        } else {
            v.push(x.len() as u8);
        }
        v.extend_from_slice(x);
        v
    };
    let body = [int(&sig[..32]), int(&sig[32..])].concat();
    [vec![0x30, body.len() as u8], body].concat()
}

#[test]
fn attack_08_ecdsa_special_signatures_are_rejected() {
    let good = mint(&fx().ec, "ES256", "ec-1", &claims(now()));
    assert_eq!(reason(&good), Reason::Ok);
    let (input, sig64) = good.rsplit_once('.').unwrap();
    let sig = unb64(sig64);
    let n = hex("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("r=s=0", vec![0; 64]),
        ("r=0", [vec![0; 32], sig[32..].to_vec()].concat()),
        ("s=0", [sig[..32].to_vec(), vec![0; 32]].concat()),
        ("r=n", [n.clone(), sig[32..].to_vec()].concat()),
        ("s=n", [sig[..32].to_vec(), n.clone()].concat()),
        ("all ones", vec![0xff; 64]),
        ("too short", sig[..63].to_vec()),
        ("too long", [sig.clone(), vec![0]].concat()),
        ("DER instead of r||s", der(&sig)),
    ];
    for (what, s) in cases {
        let t = format!("{input}.{}", b64(s));
        assert_eq!(reason(&t), Reason::BadSignature, "{what}");
    }
}

#[test]
fn attack_09_missing_or_extra_segments() {
    let good = rs(&claims(now()));
    let parts: Vec<&str> = good.split('.').collect();
    assert_eq!(reason(""), Reason::MissingToken);
    for t in [
        ".".to_owned(),
        "..".to_owned(),
        "...".to_owned(),
        format!("{}.{}", parts[0], parts[1]),
        format!("{good}.{}", parts[2]),
        format!("{}..{}", parts[0], parts[2]),
        format!(".{}.{}", parts[1], parts[2]),
        format!("{}.{}.", parts[0], parts[1]),
    ] {
        assert_eq!(reason(&t), Reason::MalformedToken, "{t}");
    }
}

#[tokio::test]
async fn attack_10_huge_token_header_or_kid() {
    let c = claims(now());
    let big = with_claim("pad", json!("x".repeat(9000)));
    assert_eq!(reason(&rs(&big)), Reason::TokenTooLarge);
    let mega = format!("{}.{}.{}", b64(H), "A".repeat(1 << 20), "AA");
    assert_eq!(reason(&mega), Reason::TokenTooLarge);
    let v = Verifier::with_key_sets(
        vec![(
            fx().cfg.clone(),
            KeySet::from_jwks(fx().jwks.as_bytes(), fx().cfg.allowed_algorithms())
                .unwrap()
                .0,
        )],
        TokenConfig::default(),
    );
    assert_eq!(
        v.verify(&mega, now()).await.err(),
        Some(Reason::TokenTooLarge)
    );
    let long_kid = mint(&fx().rsa, "RS256", &"k".repeat(257), &c);
    assert_eq!(reason(&long_kid), Reason::MalformedToken);
    let huge_header = json!({"alg":"RS256","kid":"rs-1","x":"y".repeat(7000)}).to_string();
    assert_eq!(
        reason(&rs_raw(&huge_header, &c.to_string())),
        Reason::TokenTooLarge
    );
}

#[test]
fn attack_11_non_canonical_base64url() {
    let good = rs(&claims(now()));
    assert_eq!(reason(&good), Reason::Ok);
    let (h, rest) = good.split_once('.').unwrap();
    let (p, s) = rest.split_once('.').unwrap();
    // RS256 signatures are 256 bytes: 342 chars whose last one carries 4 unused bits.
    let last = s.chars().last().unwrap();
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let idx = alphabet.find(last).unwrap();
    let bumped = alphabet.chars().nth(idx | 1).unwrap();
    let cases = [
        ("padding on header", format!("{h}=.{p}.{s}")),
        ("padding on signature", format!("{h}.{p}.{s}==")),
        (
            "standard alphabet",
            format!("{h}.{p}.{}", s.replace('-', "+").replace('_', "/") + "+"),
        ),
        ("whitespace", format!("{h}.{p} .{s}")),
        ("newline", format!("{h}.{p}.{s}\n")),
        ("non-ascii", format!("{h}.{p}é.{s}")),
        (
            "trailing bits",
            format!("{h}.{p}.{}{bumped}", &s[..s.len() - 1]),
        ),
    ];
    for (what, t) in cases {
        assert_eq!(reason(&t), Reason::MalformedToken, "{what}");
    }
}

#[test]
fn attack_12_duplicate_json_keys() {
    let c = claims(now()).to_string();
    assert_eq!(
        reason(&rs_raw(r#"{"alg":"RS256","alg":"RS256","kid":"rs-1"}"#, &c)),
        Reason::MalformedToken
    );
    assert_eq!(
        reason(&rs_raw(r#"{"alg":"RS256","kid":"rs-1","kid":"rs-1"}"#, &c)),
        Reason::MalformedToken
    );
    let n = now();
    for dup in [
        format!(
            r#"{{"iss":"{ISS}","aud":"{AUD}","exp":{},"exp":{}}}"#,
            n + 60,
            n + 99_999
        ),
        format!(
            r#"{{"iss":"{ISS}","iss":"{ISS}","aud":"{AUD}","exp":{}}}"#,
            n + 60
        ),
        format!(
            r#"{{"iss":"{ISS}","aud":"{AUD}","exp":{},"x":1,"\u0078":2}}"#,
            n + 60
        ),
    ] {
        assert_eq!(reason(&rs_raw(H, &dup)), Reason::MalformedToken, "{dup}");
    }
}

#[test]
fn attack_13_deep_nesting_and_big_numbers() {
    let n = now();
    let deep = format!(
        r#"{{"iss":"{ISS}","aud":"{AUD}","exp":{},"x":{}{}}}"#,
        n + 60,
        "[".repeat(1000),
        "]".repeat(1000)
    );
    assert_eq!(reason(&rs_raw(H, &deep)), Reason::MalformedToken);
    for exp in ["1e400", "99999999999999999999", "-99999999999999999999"] {
        let c = format!(r#"{{"iss":"{ISS}","aud":"{AUD}","exp":{exp}}}"#);
        assert_eq!(reason(&rs_raw(H, &c)), Reason::MalformedToken, "{exp}");
    }
}

#[test]
fn attack_14_exp_must_be_a_numeric_date() {
    let n = now();
    assert_eq!(
        reason(&rs(&with_claim("exp", json!((n + 60).to_string())))),
        Reason::MalformedToken
    );
    assert_eq!(reason(&rs(&with_claim("exp", json!(-1)))), Reason::Expired);
    assert_eq!(
        reason(&rs(&with_claim("exp", json!(1e300)))),
        Reason::MalformedToken
    );
    assert_eq!(
        reason(&rs(&with_claim("exp", json!(null)))),
        Reason::MalformedToken
    );
    assert_eq!(
        reason(&rs(&with_claim("exp", json!(true)))),
        Reason::MalformedToken
    );
    assert_eq!(reason(&rs(&without_claim("exp"))), Reason::MalformedToken);
    assert_eq!(
        reason(&rs(&with_claim("exp", json!(n as f64 + 60.5)))),
        Reason::Ok
    );
    // Leeway (30 s): just expired passes, beyond the leeway fails.
    assert_eq!(reason(&rs(&with_claim("exp", json!(n - 10)))), Reason::Ok);
    assert_eq!(
        reason(&rs(&with_claim("exp", json!(n - 31)))),
        Reason::Expired
    );
}

#[test]
fn attack_15_nbf_checked_when_present() {
    let n = now();
    assert_eq!(
        reason(&rs(&with_claim("nbf", json!(n + 3600)))),
        Reason::NotYetValid
    );
    assert_eq!(reason(&rs(&with_claim("nbf", json!(n + 20)))), Reason::Ok);
    assert_eq!(
        reason(&rs(&with_claim("nbf", json!("soon")))),
        Reason::MalformedToken
    );
    assert_eq!(reason(&rs(&without_claim("nbf"))), Reason::Ok);
}

#[test]
fn attack_16_iat_in_the_future_and_lifetime() {
    let n = now();
    assert_eq!(
        reason(&rs(&with_claim("iat", json!(n + 3600)))),
        Reason::NotYetValid
    );
    assert_eq!(
        reason(&rs(&with_claim("iat", json!([n])))),
        Reason::MalformedToken
    );
    let mut cfg = fx().cfg.clone();
    cfg.max_lifetime_seconds = 600;
    assert_eq!(
        check_cfg(&rs(&claims(n)), &cfg).err(),
        Some(Reason::LifetimeTooLong)
    );
    let mut short = claims(n);
    short["exp"] = json!(n + 300);
    assert!(check_cfg(&rs(&short), &cfg).is_ok());
    let mut no_start = without_claim("iat");
    no_start.as_object_mut().unwrap().remove("nbf");
    assert_eq!(
        check_cfg(&rs(&no_start), &cfg).err(),
        Some(Reason::LifetimeTooLong)
    );
}

#[test]
fn attack_16b_default_lifetime_is_one_day() {
    // No max_lifetime_seconds configured: one day is the default, so an `exp` far in
    // the future (2^53 - 1, the largest exact JSON integer) is lifetime_too_long.
    let n = now();
    let cfg = fx().cfg.clone();
    assert_eq!(cfg.max_lifetime_seconds, 86_400);
    for exp in [json!(9_007_199_254_740_991_i64), json!(n + 86_400 + 3600)] {
        let mut far = claims(n);
        far["exp"] = exp;
        assert_eq!(
            check_cfg(&rs(&far), &cfg).err(),
            Some(Reason::LifetimeTooLong)
        );
        // Without iat or nbf the lifetime counts from now.
        far.as_object_mut().unwrap().remove("iat");
        far.as_object_mut().unwrap().remove("nbf");
        assert_eq!(
            check_cfg(&rs(&far), &cfg).err(),
            Some(Reason::LifetimeTooLong)
        );
    }
    let mut day = claims(n);
    day["iat"] = json!(n);
    day["exp"] = json!(n + 86_400);
    assert!(check_cfg(&rs(&day), &cfg).is_ok());
    // An issuer may raise it, up to a year.
    let mut long = cfg.clone();
    long.max_lifetime_seconds = 365 * 86_400;
    let mut month = claims(n);
    month["exp"] = json!(n + 30 * 86_400);
    assert!(check_cfg(&rs(&month), &long).is_ok());
}

#[test]
fn attack_17_aud_string_or_array_of_strings() {
    assert_eq!(reason(&rs(&with_claim("aud", json!(AUD)))), Reason::Ok);
    assert_eq!(
        reason(&rs(&with_claim("aud", json!(["urn:other", AUD])))),
        Reason::Ok
    );
    for bad in [
        json!([]),
        json!([AUD, 1]),
        json!(42),
        json!({"aud": AUD}),
        json!("urn:other"),
        json!(null),
    ] {
        assert_eq!(
            reason(&rs(&with_claim("aud", bad.clone()))),
            Reason::BadAudience,
            "{bad}"
        );
    }
    assert_eq!(reason(&rs(&without_claim("aud"))), Reason::BadAudience);
}

#[test]
fn attack_18_iss_one_exact_string() {
    for bad in [
        json!(["evil", ISS]),
        json!([ISS]),
        json!(123),
        json!(format!("{ISS}/")),
        json!(ISS.to_uppercase()),
    ] {
        assert_eq!(
            reason(&rs(&with_claim("iss", bad.clone()))),
            Reason::BadIssuer,
            "{bad}"
        );
    }
    assert_eq!(reason(&rs(&without_claim("iss"))), Reason::BadIssuer);
}

#[test]
fn attack_19_scopes_are_whole_words() {
    let mut c = with_claim("scope", json!("read:x2 write"));
    c["scp"] = json!(["admin", "write"]);
    let id = check(&rs(&c)).unwrap().to_identity();
    assert!(!id.has_scope("read:x"));
    assert!(!id.has_scope("read"));
    assert!(id.has_scope("read:x2"));
    assert_eq!(id.scopes, ["read:x2", "write", "admin"]);
    let scp_str = check(&rs(&with_claim("scp", json!("a b")))).unwrap();
    assert_eq!(scp_str.scopes, ["read", "write", "a", "b"]);
    assert_eq!(
        reason(&rs(&with_claim("scope", json!(["read"])))),
        Reason::MalformedToken
    );
    assert_eq!(
        reason(&rs(&with_claim("scp", json!(5)))),
        Reason::MalformedToken
    );
    assert_eq!(
        reason(&rs(&with_claim("groups", json!({"a":1})))),
        Reason::MalformedToken
    );
}

#[tokio::test]
async fn attack_20_unknown_kid_flood_costs_one_fetch_per_cooldown() {
    let srv = FaultServer::start().await;
    srv.set("/jwks", Reply::json(fx().jwks.clone()));
    let cfg = IssuerConfig::new(ISS, &[AUD], KeySource::JwksUrl(srv.url("/jwks")));
    let v = Verifier::start(vec![cfg], TokenConfig::default()).unwrap();
    assert!(eventually(5, || v.ready()).await);
    assert_eq!(srv.hits("/jwks"), 1);
    let c = b64(claims(now()).to_string());
    let mut set = tokio::task::JoinSet::new();
    for i in 0..10_000u32 {
        let v = v.clone();
        let t = format!(
            "{}.{c}.{}",
            b64(format!(r#"{{"alg":"RS256","kid":"random-{i:x}"}}"#)),
            b64([7u8; 256])
        );
        set.spawn(async move { v.verify(&t, now()).await });
    }
    let mut n = 0;
    while let Some(r) = set.join_next().await {
        assert_eq!(r.unwrap().err(), Some(Reason::UnknownKey));
        n += 1;
    }
    assert_eq!(n, 10_000);
    // A second wave after that fetch finished falls inside the cooldown: no fetch, no wait.
    for i in 0..1_000u32 {
        let t = format!(
            "{}.{c}.{}",
            b64(format!(r#"{{"alg":"RS256","kid":"late-{i}"}}"#)),
            b64([7u8; 256])
        );
        assert_eq!(v.verify(&t, now()).await.err(), Some(Reason::UnknownKey));
    }
    assert!(srv.hits("/jwks") <= 2, "fetches: {}", srv.hits("/jwks"));
    let st = &v.status().issuers[0];
    assert_eq!(st.unknown_kid_refetches, 1);
    assert!(st.refetches_suppressed >= 1_000, "{st:?}");
    // Still valid tokens pass throughout.
    assert!(v.verify(&rs(&claims(now())), now()).await.is_ok());
}

#[test]
fn attack_21_weak_or_wrong_keys_are_dropped_at_load() {
    let mut weak_n = vec![0xc5u8; 128];
    weak_n[127] |= 1;
    let mut even_e = fx().rsa.jwk("even-e", None);
    even_e["e"] = json!(b64([1, 0, 0]));
    let mut wrong_crv = fx().ec.jwk("wrong-crv", None);
    wrong_crv["crv"] = json!("P-384");
    let mut mismatch = fx().ec.jwk("ec-as-es384", Some("ES384"));
    mismatch["crv"] = json!("P-256");
    let doc = jwks(&[
        json!({"kty":"RSA","kid":"weak-rsa","n": b64(&weak_n),"e":"AQAB"}),
        even_e,
        wrong_crv,
        mismatch,
        fx().rsa.jwk("rs-1", Some("RS256")),
    ]);
    let (keys, skipped) = KeySet::from_jwks(doc.as_bytes(), fx().cfg.allowed_algorithms()).unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(skipped.len(), 4);
    let c = claims(now());
    for (kid, alg, key) in [
        ("weak-rsa", "RS256", &fx().rsa),
        ("even-e", "RS256", &fx().rsa),
        ("wrong-crv", "ES256", &fx().ec),
        ("ec-as-es384", "ES256", &fx().ec),
    ] {
        let t = mint(key, alg, kid, &c);
        assert_eq!(
            verify_with_keys(&t, now(), &keys, &fx().cfg, 8192).err(),
            Some(Reason::UnknownKey),
            "{kid}"
        );
    }
}

#[test]
fn attack_22_use_key_ops_and_alg_mismatch() {
    let mut enc = fx().rsa.jwk("enc", None);
    enc["use"] = json!("enc");
    let mut ops = fx().rsa.jwk("ops", None);
    ops.as_object_mut().unwrap().remove("use");
    ops["key_ops"] = json!(["encrypt"]);
    let doc = jwks(&[enc, ops, fx().rsa.jwk("rs-1", Some("RS256"))]);
    let (keys, _) = KeySet::from_jwks(doc.as_bytes(), fx().cfg.allowed_algorithms()).unwrap();
    let c = claims(now());
    for kid in ["enc", "ops"] {
        let t = mint(&fx().rsa, "RS256", kid, &c);
        assert_eq!(
            verify_with_keys(&t, now(), &keys, &fx().cfg, 8192).err(),
            Some(Reason::UnknownKey),
            "{kid}"
        );
    }
    // The JWK says RS256; a PS256 token from the very same key is refused.
    let ps = mint(&fx().rsa, "PS256", "rs-1", &c);
    assert_eq!(reason(&ps), Reason::UnsupportedAlg);
    // An issuer allow-list without the token's alg refuses before any key lookup.
    let mut cfg = fx().cfg.clone();
    cfg.algorithms = Some(vec![Alg::ES256]);
    assert_eq!(check_cfg(&rs(&c), &cfg).err(), Some(Reason::UnsupportedAlg));
}

#[test]
fn attack_23_unknown_kty_does_not_fail_the_set() {
    let doc = jwks(&[
        json!({"kty":"AKP","kid":"pq","alg":"ML-DSA-44","pub":"AAAA"}),
        json!({"kty":"oct","kid":"sym","k":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}),
        json!({"kty":"EC","kid":"broken"}),
        fx().rsa.jwk("rs-1", Some("RS256")),
    ]);
    let (keys, skipped) = KeySet::from_jwks(doc.as_bytes(), fx().cfg.allowed_algorithms()).unwrap();
    assert_eq!((keys.len(), skipped.len()), (1, 3));
    let c = claims(now());
    assert!(verify_with_keys(&rs(&c), now(), &keys, &fx().cfg, 8192).is_ok());
    let pq = mint(&fx().rsa, "RS256", "pq", &c);
    assert_eq!(
        verify_with_keys(&pq, now(), &keys, &fx().cfg, 8192).err(),
        Some(Reason::UnknownKey)
    );
    let sym = format!(
        "{}.{}.{}",
        b64(r#"{"alg":"HS256","kid":"sym"}"#),
        b64(c.to_string()),
        b64([0u8; 32])
    );
    assert_eq!(
        verify_with_keys(&sym, now(), &keys, &fx().cfg, 8192).err(),
        Some(Reason::UnsupportedAlg)
    );
}

#[test]
fn attack_24_two_tokens_in_one_value_are_malformed() {
    let a = rs(&claims(now()));
    let b = mint(&fx().ec, "ES256", "ec-1", &claims(now()));
    for t in [
        format!("{a},{b}"),
        format!("{a} {b}"),
        format!("{a}.{b}"),
        format!("Bearer {a}"),
    ] {
        assert_eq!(reason(&t), Reason::MalformedToken);
    }
}

#[test]
fn attack_25_typ_allow_list() {
    let mut cfg = fx().cfg.clone();
    cfg.types = Some(vec!["at+jwt".into()]);
    let c = claims(now()).to_string();
    let with_typ = |typ: Value| {
        rs_raw(
            &json!({"alg":"RS256","kid":"rs-1","typ":typ}).to_string(),
            &c,
        )
    };
    assert!(check_cfg(&with_typ(json!("at+jwt")), &cfg).is_ok());
    assert!(check_cfg(&with_typ(json!("application/at+jwt")), &cfg).is_ok());
    assert_eq!(
        check_cfg(&with_typ(json!("JWT")), &cfg).err(),
        Some(Reason::BadType)
    );
    assert_eq!(check_cfg(&rs_raw(H, &c), &cfg).err(), Some(Reason::BadType));
    for odd in ["applicationé/at+jwt", "ééééééé", "application/"] {
        assert_eq!(
            check_cfg(&with_typ(json!(odd)), &cfg).err(),
            Some(Reason::BadType),
            "{odd}"
        );
    }
    assert_eq!(
        check_cfg(&with_typ(json!(5)), &cfg).err(),
        Some(Reason::MalformedToken)
    );
}

#[test]
fn attack_26_hmac_only_with_an_explicit_strong_secret() {
    let c = claims(now()).to_string();
    let h = r#"{"alg":"HS256"}"#;
    let input = format!("{}.{}", b64(h), b64(&c));
    let secret = b"0123456789abcdef0123456789abcdef-strong";
    let t = format!(
        "{input}.{}",
        b64(hmac_sign("HS256", secret, input.as_bytes()))
    );
    assert_eq!(
        reason(&t),
        Reason::UnsupportedAlg,
        "HS* is off for a JWKS issuer"
    );
    // An issuer explicitly configured with a secret verifies it.
    let cfg = IssuerConfig::new(
        ISS,
        &[AUD],
        KeySource::SharedSecret("UNUSED_IN_THIS_TEST".into()),
    );
    let keys = KeySet::from_secret(None, secret, cfg.allowed_algorithms());
    assert!(verify_with_keys(&t, now(), &keys, &cfg, 8192).is_ok());
    let forged = format!(
        "{input}.{}",
        b64(hmac_sign("HS256", b"password", input.as_bytes()))
    );
    assert_eq!(
        verify_with_keys(&forged, now(), &keys, &cfg, 8192).err(),
        Some(Reason::BadSignature)
    );
    // Weak or missing secrets are refused at config time and never become a key.
    assert!(matches!(
        cfg.validate(),
        Err(IssuerError::WeakSecret { .. })
    ));
    assert!(KeySet::from_secret(None, b"password", cfg.allowed_algorithms()).is_empty());
}

#[tokio::test]
async fn attack_26b_a_configured_shared_secret_issuer_end_to_end() {
    // Tests may not set environment variables (unsafe_code is forbidden), so this uses a
    // variable cargo sets for test processes: the package description (> 32 bytes).
    let var = "CARGO_PKG_DESCRIPTION";
    let secret = std::env::var(var).expect("cargo sets CARGO_PKG_DESCRIPTION for tests");
    let iss = "https://hmac.example.test";
    let mut cfg = IssuerConfig::new(iss, &[AUD], KeySource::SharedSecret(var.into()));
    // A secret never goes stale, even with the tightest staleness bound.
    (
        cfg.min_refresh_seconds,
        cfg.max_refresh_seconds,
        cfg.max_stale_seconds,
    ) = (1, 1, 1);
    cfg.validate().unwrap();
    let mut c = claims(now());
    c["iss"] = json!(iss);
    let input = format!(
        "{}.{}",
        b64(r#"{"alg":"HS256","typ":"JWT"}"#),
        b64(c.to_string())
    );
    let good = format!(
        "{input}.{}",
        b64(hmac_sign("HS256", secret.as_bytes(), input.as_bytes()))
    );
    let forged = format!(
        "{input}.{}",
        b64(hmac_sign("HS256", b"guess", input.as_bytes()))
    );
    let hs512 = {
        let i = format!("{}.{}", b64(r#"{"alg":"HS512"}"#), b64(c.to_string()));
        format!(
            "{i}.{}",
            b64(hmac_sign("HS512", secret.as_bytes(), i.as_bytes()))
        )
    };
    let v = Verifier::start(vec![cfg], TokenConfig::default()).unwrap();
    assert!(v.ready());
    assert!(v.verify(&good, now()).await.is_ok());
    assert_eq!(
        v.verify(&forged, now()).await.err(),
        Some(Reason::BadSignature)
    );
    assert_eq!(
        v.verify(&hs512, now()).await.err(),
        Some(Reason::UnsupportedAlg)
    );
    tokio::time::sleep(std::time::Duration::from_millis(1_300)).await;
    assert!(v.ready());
    assert!(v.verify(&good, now()).await.is_ok());
    // An RS256 token claiming that issuer has no key to verify against.
    assert_eq!(
        v.verify(&rs(&c), now()).await.err(),
        Some(Reason::UnsupportedAlg)
    );
}

#[tokio::test]
async fn verifier_matches_the_pure_core_and_caches() {
    let keys = KeySet::from_jwks(fx().jwks.as_bytes(), fx().cfg.allowed_algorithms())
        .unwrap()
        .0;
    let v = Verifier::with_key_sets(vec![(fx().cfg.clone(), keys)], TokenConfig::default());
    assert!(v.ready());
    let n = now();
    let t = rs(&claims(n));
    let a: Arc<_> = v.verify(&t, n).await.unwrap();
    let b = v.verify(&t, n).await.unwrap();
    assert_eq!(a, b);
    assert_eq!(*a, check(&t).unwrap().to_identity());
    let st = &v.status().issuers[0];
    assert_eq!((st.cache_hits, st.cache_misses), (1, 1));
    // A cache entry never outlives exp.
    assert_eq!(
        v.verify(&t, n + 3600 + 31).await.err(),
        Some(Reason::Expired)
    );
    // Failures are not cached and each gets its reason.
    let bad = rs(&with_claim("aud", json!("x")));
    assert_eq!(v.verify(&bad, n).await.err(), Some(Reason::BadAudience));
    assert_eq!(v.verify(&bad, n).await.err(), Some(Reason::BadAudience));
    assert_eq!(v.verify("", n).await.err(), Some(Reason::MissingToken));
}

#[tokio::test]
async fn issuers_never_share_keys() {
    // Issuer B publishes its own key under the same kid as issuer A's.
    let b_key = TestKey::rsa();
    let b_iss = "https://other-idp.example.test";
    let a_keys = KeySet::from_jwks(fx().jwks.as_bytes(), fx().cfg.allowed_algorithms())
        .unwrap()
        .0;
    let b_jwks = jwks(&[b_key.jwk("rs-1", Some("RS256"))]);
    let b_cfg = IssuerConfig::new(b_iss, &[AUD], KeySource::JwksUrl(format!("{b_iss}/jwks")));
    let b_keys = KeySet::from_jwks(b_jwks.as_bytes(), b_cfg.allowed_algorithms())
        .unwrap()
        .0;
    let v = Verifier::with_key_sets(
        vec![(fx().cfg.clone(), a_keys), (b_cfg, b_keys)],
        TokenConfig::default(),
    );
    let mut c = claims(now());
    c["iss"] = json!(b_iss);
    let from_b = mint(&b_key, "RS256", "rs-1", &c);
    assert_eq!(v.verify(&from_b, now()).await.unwrap().issuer, b_iss);
    // A's key signing a token that claims B: B's key set decides, so it fails.
    let a_claims_b = mint(&fx().rsa, "RS256", "rs-1", &c);
    assert_eq!(
        v.verify(&a_claims_b, now()).await.err(),
        Some(Reason::BadSignature)
    );
    // B's key signing a token that claims A.
    let b_claims_a = mint(&b_key, "RS256", "rs-1", &claims(now()));
    assert_eq!(
        v.verify(&b_claims_a, now()).await.err(),
        Some(Reason::BadSignature)
    );
    // An issuer nobody configured.
    let mut c = claims(now());
    c["iss"] = json!("https://unknown.example.test");
    assert_eq!(
        v.verify(&mint(&b_key, "RS256", "rs-1", &c), now())
            .await
            .err(),
        Some(Reason::BadIssuer)
    );
}

/// An `email` a user could set without proof must not name another user: it is kept
/// only with `email_verified: true` (or when the issuer is trusted for it).
#[test]
fn attack_27_unverified_email_does_not_identify_the_caller() {
    let email = |extra: &[(&str, Value)]| {
        let mut c = with_claim("email", json!("alice@example.com"));
        for (k, v) in extra {
            c[*k] = v.clone();
        }
        c
    };
    let kept = check(&rs(&email(&[("email_verified", json!(true))]))).unwrap();
    assert_eq!(kept.email.as_deref(), Some("alice@example.com"));
    assert_eq!(
        kept.to_identity().email.as_deref(),
        Some("alice@example.com")
    );
    for unverified in [
        email(&[]),
        email(&[("email_verified", json!(false))]),
        email(&[("email_verified", json!("true"))]),
        email(&[("email_verified", json!(1))]),
        email(&[("email_verified", json!(null))]),
    ] {
        let got = check(&rs(&unverified)).unwrap();
        assert_eq!(got.email, None, "{unverified}");
        assert_eq!(got.to_identity().email, None);
        // The rest of the identity is untouched.
        assert_eq!(got.sub.as_deref(), Some("client-1"));
    }
    // An issuer configured to trust its emails keeps them without email_verified ...
    let mut trusting = fx().cfg.clone();
    trusting.trust_unverified_email = true;
    let got = check_cfg(&rs(&email(&[])), &trusting).unwrap();
    assert_eq!(got.email.as_deref(), Some("alice@example.com"));
    // ... and a non-string email is still a malformed token, verified or not.
    for verified in [json!(true), json!(false)] {
        let mut c = with_claim("email", json!(["alice@example.com"]));
        c["email_verified"] = verified;
        assert_eq!(reason(&rs(&c)), Reason::MalformedToken);
    }
}

/// Issue 11, item 7: only the modulus size and exponent were checked, so a JWKS key
/// whose modulus is prime (or even, or has a small factor, or is a prime square) was
/// loaded, and a token forged from public information alone was accepted (sub mallory,
/// scope orders:admin). `tests/data/broken_rsa/generate.py` forged the tokens; the
/// control key is a proper one whose token, forged by the same code, verifies.
#[test]
fn attack_28_broken_rsa_moduli_are_refused() {
    let doc: Value =
        serde_json::from_str(include_str!("data/broken_rsa/cases.json")).expect("fixture");
    let then = doc["now"].as_i64().unwrap();
    let cases = doc["cases"].as_array().unwrap();
    let cfg = &fx().cfg;
    let all: Vec<Value> = cases.iter().map(|c| c["jwk"].clone()).collect();
    let (keys, skipped) = KeySet::from_jwks(jwks(&all).as_bytes(), cfg.allowed_algorithms())
        .expect("the control key loads");
    let loaded: Vec<Option<&str>> = keys.keys().iter().map(|k| k.kid()).collect();
    assert_eq!(loaded, [Some("control")]);
    let skipped_kids: Vec<&str> = skipped.iter().filter_map(|s| s.kid.as_deref()).collect();
    assert_eq!(
        skipped_kids,
        ["prime", "even", "small-factor", "prime-square"]
    );
    for c in cases {
        let (name, token) = (c["name"].as_str().unwrap(), c["token"].as_str().unwrap());
        let got = verify_with_keys(token, then, &keys, cfg, 8192);
        if name == "control" {
            let claims = got.expect("the control token verifies");
            assert_eq!(claims.sub.as_deref(), Some("mallory"));
            continue;
        }
        assert_eq!(got.err(), Some(Reason::UnknownKey), "{name}");
        // Alone in its set, a broken key leaves no usable key at all.
        let alone = jwks(std::slice::from_ref(&c["jwk"]));
        assert!(
            KeySet::from_jwks(alone.as_bytes(), cfg.allowed_algorithms()).is_err(),
            "{name}"
        );
    }
    use stagedoor::token::jwk::SkipReason;
    let reasons: Vec<SkipReason> = skipped.iter().map(|s| s.reason).collect();
    assert_eq!(
        reasons,
        [
            SkipReason::PrimeModulus,
            SkipReason::EvenModulus,
            SkipReason::SmallFactor,
            SkipReason::FactoredModulus
        ]
    );
    assert!(skipped.iter().all(|s| s.thumbprint.is_some()));
}

/// The modulus checks refuse no real key: fresh aws-lc keys of every size load and
/// verify (the Wycheproof RSA keys are checked in `token_wycheproof.rs`).
#[test]
fn attack_28b_real_rsa_keys_pass_the_modulus_checks() {
    use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
    let sizes = [KeySize::Rsa2048; 8].into_iter().chain([
        KeySize::Rsa3072,
        KeySize::Rsa3072,
        KeySize::Rsa4096,
    ]);
    let c = claims(now());
    for (i, size) in sizes.enumerate() {
        let key = TestKey::Rsa(RsaKeyPair::generate(size).expect("keygen"));
        let kid = format!("fresh-{i}");
        let doc = jwks(&[key.jwk(&kid, Some("RS256"))]);
        let (keys, skipped) = KeySet::from_jwks(doc.as_bytes(), fx().cfg.allowed_algorithms())
            .unwrap_or_else(|e| panic!("{kid}: {e}"));
        assert!(skipped.is_empty(), "{kid}: {skipped:?}");
        let t = mint(&key, "RS256", &kid, &c);
        assert!(verify_with_keys(&t, now(), &keys, &fx().cfg, 8192).is_ok());
    }
}
