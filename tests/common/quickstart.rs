//! The quickstart's identity provider and catalog in process, for tests that drive the
//! agent's handler directly (no HAProxy): its ES256 signing key and JWKS, its catalog,
//! a browser sign-in configuration, and tokens and sessions for its callers.

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use stagedoor::agent::{Agent, AgentSettings, Observer};
use stagedoor::policy::{Mode, Policy, Unmatched};
use stagedoor::sso::{Session, Sso, SsoConfig};
use stagedoor::token::{Alg, IssuerConfig, KeySet, KeySource, TokenConfig, Verifier};

pub const ISSUER: &str = "https://idp.quickstart.example";

pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn now() -> i64 {
    stagedoor::clock::unix_now()
}

/// The quickstart catalog's policy (unmatched routes denied).
pub fn policy() -> Policy {
    let entities = stagedoor::catalog::file::load(
        &["catalog/*.yaml".into()],
        &root().join("examples/quickstart"),
    )
    .unwrap();
    Policy::build(&entities, Unmatched::Deny)
}

/// A verifier of the quickstart issuer's ES256 tokens; `leeway` in seconds, else the
/// default.
pub fn verifier(leeway: Option<u64>) -> Verifier {
    verifier_with(leeway, TokenConfig::default())
}

/// [`verifier`] with these token settings (the cache's size, say).
pub fn verifier_with(leeway: Option<u64>, settings: TokenConfig) -> Verifier {
    let jwks = std::fs::read(root().join("examples/quickstart/demo-jwks.json")).unwrap();
    let (keys, _) = KeySet::from_jwks(&jwks, &[Alg::ES256]).unwrap();
    let mut cfg = IssuerConfig::new(
        ISSUER,
        &["quickstart-api"],
        KeySource::JwksFile("demo-jwks.json".into()),
    );
    if let Some(leeway) = leeway {
        cfg.leeway_seconds = leeway;
    }
    Verifier::with_key_sets(vec![(cfg, keys)], settings)
}

/// An agent answering `authorize` with realm `stagedoor`.
pub fn agent(
    verifier: Verifier,
    policy: Arc<ArcSwapOption<Policy>>,
    mode: Mode,
    sso: Option<Arc<Sso>>,
    observer: Observer,
) -> Agent {
    Agent {
        verifier,
        policy,
        settings: AgentSettings {
            message: "authorize".into(),
            realm: "stagedoor".into(),
            mode,
            sso,
        },
        observer,
    }
}

/// The default sign-in configuration: no `cookie_domain`, `cookie_secure = true`, so
/// a host-only `__Host-` session cookie.
pub fn sso_config() -> SsoConfig {
    toml::from_str(&format!(
        r#"
        listen = "127.0.0.1:0"
        issuer = "{ISSUER}"
        client_id = "stagedoor"
        client_secret_env = "UNUSED"
        keys_env = "UNUSED"
        "#
    ))
    .unwrap()
}

pub fn sso(keys: &[[u8; 32]]) -> Arc<Sso> {
    Arc::new(Sso::from_parts(sso_config(), keys, stagedoor::sso::Secret::new("s".into())).unwrap())
}

/// A token of the quickstart issuer, issued 5 s ago, expiring in `exp_in` seconds.
pub fn token(sub: &str, scope: &str, groups: &[&str], exp_in: i64) -> String {
    let pem = std::fs::read(root().join("examples/quickstart/demo-signing-key.pem")).unwrap();
    let now = now();
    let claims = serde_json::json!({"iss": ISSUER, "sub": sub, "aud": "quickstart-api",
        "iat": now - 5, "exp": now + exp_in, "scope": scope, "groups": groups});
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    h.kid = Some("demo-2026".into());
    jsonwebtoken::encode(
        &h,
        &claims,
        &jsonwebtoken::EncodingKey::from_ec_pem(&pem).unwrap(),
    )
    .unwrap()
}

/// A sealed session for the same caller, expiring in `exp_in` seconds.
pub fn session(sso: &Sso, sub: &str, scope: &str, groups: &[&str], exp_in: i64) -> String {
    let now = now();
    let mut s = Session {
        iss: ISSUER.into(),
        sub: sub.into(),
        email: None,
        groups: groups.iter().map(|g| g.to_string()).collect(),
        scopes: scope.split(' ').map(str::to_string).collect(),
        sid: "c2lkc2lkc2lkc2lkc2lkcw".into(),
        auth_time: Some(now - 5),
        iat: now - 10,
        exp: now + exp_in,
    };
    sso.seal_session(&mut s, None).unwrap()
}
