//! Browser sign-in, ID token checks (issue 13): an ID token with the wrong `nonce`,
//! `aud`, `azp` or `iss`, or otherwise bad, is refused; signed locally with the test keys.

mod token_support;

use serde_json::{Value, json};
use stagedoor::reason::Reason;
use stagedoor::token::{IdTokenError, IssuerConfig, KeySet, KeySource, verify_id_token};
use token_support::*;

const CLIENT: &str = "stagedoor";
const NONCE: &str = "n-0S6_WzA2Mj";

struct Fx {
    key: TestKey,
    keys: KeySet,
    cfg: IssuerConfig,
}

fn fx() -> Fx {
    let key = TestKey::ec();
    let cfg = IssuerConfig {
        // The issuer's access-token rules must not apply to ID tokens.
        types: Some(vec!["at+jwt".into()]),
        ..IssuerConfig::new(ISS, &[AUD], KeySource::JwksUrl(format!("{ISS}/jwks")))
    };
    let (keys, _) = KeySet::from_jwks(
        jwks(&[key.jwk("ec-1", Some("ES256"))]).as_bytes(),
        cfg.allowed_algorithms(),
    )
    .unwrap();
    Fx { key, keys, cfg }
}

fn id_claims(now: i64) -> Value {
    json!({"iss": ISS, "aud": CLIENT, "sub": "alice", "iat": now, "exp": now + 300,
           "nonce": NONCE, "auth_time": now - 2, "email": "alice@example.com",
           "email_verified": true, "groups": ["team-a"]})
}

fn check(fx: &Fx, claims: &Value) -> Result<stagedoor::token::IdToken, IdTokenError> {
    let token = mint(&fx.key, "ES256", "ec-1", claims);
    verify_id_token(&token, now(), &fx.keys, &fx.cfg, CLIENT, NONCE, 8192)
}

#[test]
fn a_good_id_token_verifies() {
    let fx = fx();
    let t = check(&fx, &id_claims(now())).unwrap();
    assert_eq!(t.claims.sub.as_deref(), Some("alice"));
    assert_eq!(t.claims.email.as_deref(), Some("alice@example.com"));
    assert_eq!(t.claims.groups, ["team-a"]);
    assert_eq!(t.auth_time, Some(now() - 2));
    let mut c = id_claims(now());
    c["aud"] = json!(["other", CLIENT]);
    c["azp"] = json!(CLIENT);
    assert!(check(&fx, &c).is_ok());
}

#[test]
fn wrong_nonce_aud_azp_iss_are_refused() {
    let fx = fx();
    let n = now();
    let cases: Vec<(&str, Value, IdTokenError)> = vec![
        ("nonce", json!("other"), IdTokenError::Nonce),
        ("nonce", json!(null), IdTokenError::Nonce),
        ("nonce", json!([NONCE]), IdTokenError::Nonce),
        ("nonce", json!(format!("{NONCE}x")), IdTokenError::Nonce),
        ("aud", json!(AUD), IdTokenError::Token(Reason::BadAudience)),
        (
            "aud",
            json!(["other"]),
            IdTokenError::Token(Reason::BadAudience),
        ),
        ("azp", json!("other"), IdTokenError::Azp),
        (
            "iss",
            json!("https://evil.example"),
            IdTokenError::Token(Reason::BadIssuer),
        ),
        ("exp", json!(n - 100), IdTokenError::Token(Reason::Expired)),
    ];
    for (claim, value, want) in cases {
        let mut c = id_claims(n);
        c[claim] = value.clone();
        assert_eq!(check(&fx, &c).err(), Some(want), "{claim} = {value}");
    }
    let mut c = id_claims(n);
    c.as_object_mut().unwrap().remove("nonce");
    assert_eq!(check(&fx, &c).err(), Some(IdTokenError::Nonce));
    // Several audiences and no azp: issued to whom? (review of issue 13)
    let mut c = id_claims(n);
    c["aud"] = json!(["other", CLIENT]);
    c.as_object_mut().unwrap().remove("azp");
    assert_eq!(check(&fx, &c).err(), Some(IdTokenError::Azp));
    // Signed by someone else.
    let other = TestKey::ec();
    let token = mint(&other, "ES256", "ec-1", &id_claims(n));
    assert_eq!(
        verify_id_token(&token, n, &fx.keys, &fx.cfg, CLIENT, NONCE, 8192).err(),
        Some(IdTokenError::Token(Reason::BadSignature))
    );
}
