//! Issuer-table rules: TOML defaults, each rule's error, shared secrets, the list check.

use super::*;

fn base() -> IssuerConfig {
    IssuerConfig::new(
        "https://id.example.com",
        &["api"],
        KeySource::JwksUrl("https://id.example.com/jwks".into()),
    )
}

#[test]
fn toml_defaults_and_unknown_keys() {
    let c: IssuerConfig = toml::from_str(
        "issuer = \"https://id.example.com\"\naudiences = [\"api\"]\ndiscovery = true\n",
    )
    .unwrap();
    c.validate().unwrap();
    assert_eq!(c.leeway_seconds, 30);
    assert_eq!(c.groups_claim, "groups");
    assert_eq!(c.unknown_kid_cooldown_seconds, 30);
    assert_eq!(c.allowed_algorithms(), &DEFAULT_ALGORITHMS[..]);
    let bad = toml::from_str::<IssuerConfig>(
        "issuer = \"x\"\naudiences = [\"api\"]\ndiscovery = true\nleway_seconds = 3\n",
    );
    assert!(bad.is_err());
    let bad_alg = toml::from_str::<IssuerConfig>(
        "issuer = \"x\"\naudiences = [\"a\"]\ndiscovery = true\nalgorithms = [\"none\"]\n",
    );
    assert!(bad_alg.is_err());
}

#[test]
fn validate_names_the_problem() {
    assert_eq!(base().validate(), Ok(()));
    let mut c = base();
    c.audiences.clear();
    assert_eq!(c.validate(), Err(IssuerError::NoAudience(c.issuer.clone())));
    let mut c = base();
    c.discovery = true;
    assert_eq!(c.validate(), Err(IssuerError::KeySource(c.issuer.clone())));
    let mut c = base();
    c.jwks_url = None;
    assert_eq!(c.validate(), Err(IssuerError::KeySource(c.issuer.clone())));
    let mut c = base();
    c.algorithms = Some(vec![Alg::RS256, Alg::HS256]);
    assert_eq!(
        c.validate(),
        Err(IssuerError::HmacWithoutSecret(c.issuer.clone()))
    );
    let mut c = base();
    c.jwks_url = Some("http://id.example.com/jwks".into());
    assert!(matches!(
        c.validate(),
        Err(IssuerError::BadUrl {
            key: "jwks_url",
            ..
        })
    ));
    c.allow_insecure_http = true;
    assert_eq!(c.validate(), Ok(()));
    let mut c = base();
    c.jwks_url = Some("http://127.0.0.1:9/jwks".into());
    assert_eq!(c.validate(), Ok(()));
    c.jwks_url = Some("file:///etc/passwd".into());
    assert!(matches!(c.validate(), Err(IssuerError::BadUrl { .. })));
    let mut c = base();
    c.min_refresh_seconds = 700;
    assert_eq!(
        c.validate(),
        Err(IssuerError::RefreshBounds(c.issuer.clone()))
    );
    let mut c = base();
    c.max_stale_seconds = 10;
    assert_eq!(
        c.validate(),
        Err(IssuerError::StaleBelowRefresh(c.issuer.clone()))
    );
    let mut c = base();
    c.unknown_kid_cooldown_seconds = 0;
    assert_eq!(
        c.validate(),
        Err(IssuerError::ZeroCooldown(c.issuer.clone()))
    );
    let mut c = base();
    c.max_lifetime_seconds = 0;
    assert_eq!(
        c.validate(),
        Err(IssuerError::ZeroLifetime(c.issuer.clone()))
    );
    c.max_lifetime_seconds = u64::MAX; // `as i64` would make it negative
    assert_eq!(
        c.validate(),
        Err(IssuerError::ZeroLifetime(c.issuer.clone()))
    );
    c.max_lifetime_seconds = MAX_LIFETIME_LIMIT;
    assert_eq!(c.validate(), Ok(()));
    assert_eq!(
        validate_all(&[base(), base()]),
        Err(IssuerError::DuplicateIssuer(base().issuer))
    );
}

#[test]
fn shared_secret_rules() {
    let c = IssuerConfig::new(
        "https://id.example.com",
        &["api"],
        KeySource::SharedSecret("STAGEDOOR_TEST_UNSET_SECRET_VAR".into()),
    );
    assert!(matches!(c.validate(), Err(IssuerError::WeakSecret { .. })));
    let mut c2 = c.clone();
    c2.algorithms = Some(vec![Alg::RS256]);
    assert_eq!(
        c2.validate(),
        Err(IssuerError::SecretWithAsymmetric(c2.issuer.clone()))
    );
    assert_eq!(c.allowed_algorithms(), &[Alg::HS256][..]);
    // A secret must suit every configured HS*: the minimum is the largest one.
    let mut c3 = c.clone();
    c3.algorithms = Some(vec![Alg::HS256, Alg::HS512]);
    assert!(matches!(
        c3.validate(),
        Err(IssuerError::WeakSecret { min: 64, .. })
    ));
    c3.algorithms = Some(vec![Alg::HS384]);
    assert!(matches!(
        c3.validate(),
        Err(IssuerError::WeakSecret { min: 48, .. })
    ));
    // An 87-byte secret (a variable cargo sets) suits HS512.
    c3.shared_secret_env = Some("CARGO_PKG_DESCRIPTION".into());
    c3.algorithms = Some(vec![Alg::HS256, Alg::HS512]);
    assert!(std::env::var("CARGO_PKG_DESCRIPTION").unwrap().len() >= 64);
    assert_eq!(c3.validate(), Ok(()));
}

#[test]
fn every_issuer_error_is_reported_once() {
    let mut no_aud = base();
    no_aud.audiences.clear();
    let mut other = base();
    other.issuer = "https://other.example.com".into();
    other.leeway_seconds = 301;
    // Two tables with the same broken issuer, one valid repeat of it, another broken
    // issuer: its mistake, the repeat and the other mistake, each once, in table order.
    let errors = issuer_errors(&[no_aud.clone(), no_aud.clone(), base(), other.clone()]);
    assert_eq!(
        errors,
        vec![
            IssuerError::NoAudience(base().issuer),
            IssuerError::DuplicateIssuer(base().issuer),
            IssuerError::LeewayTooLarge(other.issuer.clone()),
        ]
    );
    assert_eq!(
        validate_all(&[no_aud.clone(), other]),
        Err(IssuerError::NoAudience(base().issuer))
    );
    assert_eq!(issuer_errors(&[base(), other_valid()]), vec![]);
    // One prefix: the issuer's own.
    let text = errors[0].to_string();
    assert_eq!(text.matches("issuers[").count(), 1, "{text}");
}

fn other_valid() -> IssuerConfig {
    let mut c = base();
    c.issuer = "https://third.example.com".into();
    c
}
