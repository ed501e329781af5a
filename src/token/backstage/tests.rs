//! The Backstage claim rules on tokens whose signature is not checked here
//! (`check_issuer_claims` runs after the signature; tests/token_backstage.rs signs).

use serde_json::{Value, json};

use super::super::config::{IssuerConfig, IssuerError, IssuerKind, KeySource};
use super::super::jose::{B64, RawClaims, parse_jws};
use super::super::verify::{Claims, check_issuer_claims};
use super::*;
use base64::Engine;

const ISS: &str = "http://127.0.0.1:7007/api/auth";
const NOW: i64 = 1_700_000_000;

fn cfg() -> IssuerConfig {
    let mut c = IssuerConfig::new(
        ISS,
        &[],
        KeySource::JwksUrl(format!("{ISS}/.well-known/jwks.json")),
    );
    c.kind = IssuerKind::Backstage;
    c
}

fn claims() -> Value {
    json!({
        "iss": ISS, "sub": "user:default/alice", "aud": "backstage",
        "ent": ["user:default/alice", "group:default/payments-team"],
        "iat": NOW - 10, "exp": NOW + 3590, "uip": "c2ln",
    })
}

fn header(typ: &str) -> Value {
    json!({"typ": typ, "alg": "ES256", "kid": "k1"})
}

fn check_with(cfg: &IssuerConfig, header: &Value, claims: &Value) -> Result<Claims, Reason> {
    let token = format!(
        "{}.{}.{}",
        B64.encode(header.to_string()),
        B64.encode(claims.to_string()),
        B64.encode([7u8; 64])
    );
    let jws = parse_jws(&token, 8192)?;
    let raw = RawClaims::parse(&jws.payload, &[cfg.extra_claim().to_owned()])?;
    check_issuer_claims(&jws, &raw, cfg, NOW, 1)
}

fn check(claims: &Value) -> Result<Claims, Reason> {
    check_with(&cfg(), &header(USER_TYPE), claims)
}

fn with(key: &str, v: Value) -> Value {
    let mut c = claims();
    c[key] = v;
    c
}

fn without(key: &str) -> Value {
    let mut c = claims();
    c.as_object_mut().unwrap().remove(key);
    c
}

#[test]
fn a_backstage_user_token_names_its_user() {
    let c = check(&claims()).unwrap();
    assert_eq!(c.user_ref.as_deref(), Some("user:default/alice"));
    assert_eq!(c.sub.as_deref(), Some("user:default/alice"));
    assert_eq!(
        c.ownership,
        ["user:default/alice", "group:default/payments-team"]
    );
    let id = c.to_identity();
    assert_eq!(id.backstage_user.as_deref(), Some("user:default/alice"));
    assert!(id.groups.is_empty() && id.scopes.is_empty() && id.email.is_none());
}

#[test]
fn refs_are_made_canonical_and_ent_may_be_absent() {
    // Backstage's default since auth.omitIdentityTokenOwnershipClaim: no `ent`.
    let c = check(&with("sub", json!("User:Default/Alice"))).unwrap();
    assert_eq!(c.user_ref.as_deref(), Some("user:default/alice"));
    let c = check(&without("ent")).unwrap();
    assert!(c.ownership.is_empty());
    let c = check(&with("ent", json!(["Group:default/A", "group:default/a"]))).unwrap();
    assert_eq!(c.ownership, ["group:default/a"]);
}

#[test]
fn a_sub_that_is_not_a_user_ref_is_bad_subject() {
    for sub in [
        json!("alice"),
        json!("default/alice"),
        json!("user:alice"),
        json!("group:default/payments-team"),
        json!("component:default/alice"),
        json!("user:/alice"),
        json!("user:default/"),
        json!("user:Default_NS/alice"),
        json!("user:default/al ice"),
        json!("user:default/a/b"),
        json!("user:default/alice:x"),
        json!(""),
    ] {
        assert_eq!(
            check(&with("sub", sub.clone())).err(),
            Some(Reason::BadSubject),
            "{sub}"
        );
    }
    assert_eq!(check(&without("sub")).err(), Some(Reason::BadSubject));
    // A sub of the wrong JSON type is malformed, as for every issuer.
    assert_eq!(
        check(&with("sub", json!(["user:default/alice"]))).err(),
        Some(Reason::MalformedToken)
    );
}

#[test]
fn a_bad_ent_refuses_the_whole_token() {
    for ent in [
        json!("group:default/payments-team"),
        json!(["group:default/payments-team", 7]),
        json!([{"ref": "group:default/a"}]),
        json!(["payments-team"]),
        json!(["group:payments-team"]),
        json!(["component:default/payments-api"]),
        json!(["group:default/bad name"]),
        json!(null),
        json!({}),
    ] {
        assert_eq!(
            check(&with("ent", ent.clone())).err(),
            Some(Reason::MalformedToken),
            "{ent}"
        );
    }
}

#[test]
fn aud_must_be_backstage_unless_configured() {
    assert_eq!(
        check(&with("aud", json!("api"))).err(),
        Some(Reason::BadAudience)
    );
    assert_eq!(check(&without("aud")).err(), Some(Reason::BadAudience));
    assert!(check(&with("aud", json!(["x", "backstage"]))).is_ok());
    let mut c = cfg();
    c.audiences = vec!["portal".into()];
    assert!(check_with(&c, &header(USER_TYPE), &with("aud", json!("portal"))).is_ok());
    assert_eq!(
        check_with(&c, &header(USER_TYPE), &claims()).err(),
        Some(Reason::BadAudience)
    );
}

#[test]
fn only_full_user_tokens_pass_the_typ_check() {
    for typ in [
        "vnd.backstage.limited-user",
        "vnd.backstage.plugin",
        "JWT",
        "at+jwt",
    ] {
        assert_eq!(
            check_with(&cfg(), &header(typ), &claims()).err(),
            Some(Reason::BadType),
            "{typ}"
        );
    }
    let no_typ = json!({"alg": "ES256", "kid": "k1"});
    assert_eq!(
        check_with(&cfg(), &no_typ, &claims()).err(),
        Some(Reason::BadType)
    );
    assert!(check_with(&cfg(), &header("application/vnd.backstage.user"), &claims()).is_ok());
}

#[test]
fn the_oidc_kind_keeps_its_rules() {
    // The same token from an OIDC issuer: no Backstage rules, no user ref, and no
    // `backstage` audience by default.
    let mut c = IssuerConfig::new(ISS, &["backstage"], KeySource::Discovery);
    c.groups_claim = "ent".into();
    let got = check_with(&c, &header(USER_TYPE), &with("sub", json!("bob"))).unwrap();
    assert_eq!(got.user_ref, None);
    assert_eq!(got.to_identity().backstage_user, None);
    c.audiences.clear();
    assert_eq!(c.validate(), Err(IssuerError::NoAudience(ISS.into())));
}

#[test]
fn config_rules() {
    let t: IssuerConfig = toml::from_str(&format!(
        "kind = \"backstage\"\nissuer = \"{ISS}\"\njwks_url = \"{ISS}/.well-known/jwks.json\""
    ))
    .unwrap();
    assert_eq!(t.kind, IssuerKind::Backstage);
    assert_eq!(t.validate(), Ok(()));
    assert!(t.accepts_audience("backstage") && !t.accepts_audience("api"));
    let oidc: IssuerConfig = toml::from_str(&format!(
        "issuer = \"{ISS}\"\naudiences = [\"a\"]\ndiscovery = true"
    ))
    .unwrap();
    assert_eq!(oidc.kind, IssuerKind::Oidc);
    assert!(toml::from_str::<IssuerConfig>("kind = \"saml\"\nissuer = \"x\"").is_err());
    let mut c = cfg();
    c.trust_unverified_email = true;
    assert!(matches!(
        c.validate(),
        Err(IssuerError::NotForBackstage {
            key: "trust_unverified_email",
            ..
        })
    ));
    let mut c = cfg();
    c.jwks_url = None;
    c.shared_secret_env = Some("CARGO_PKG_NAME".into());
    c.algorithms = Some(vec![crate::token::Alg::HS256]);
    assert!(matches!(
        c.validate(),
        Err(IssuerError::NotForBackstage {
            key: "shared_secret_env",
            ..
        })
    ));
}
