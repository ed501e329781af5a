//! Token stage, the pure core: signature then claims, over one key set and one issuer
//! config, with no runtime and no I/O (token → verified claims → `Identity` → policy).

use super::alg::Alg;
use super::config::{IssuerConfig, IssuerKind};
use super::jose::{Jws, RawClaims, Val, parse_jws};
use super::jwk::{KeySet, Lookup};
use crate::identity::Identity;
use crate::reason::Reason;

/// Claims of a token whose signature and claims were verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub alg: Alg,
    pub kid: Option<String>,
    pub typ: Option<String>,
    /// The configured issuer the token matched.
    pub iss: String,
    pub sub: Option<String>,
    pub aud: Vec<String>,
    pub exp: i64,
    pub nbf: Option<i64>,
    pub iat: Option<i64>,
    pub scopes: Vec<String>,
    pub groups: Vec<String>,
    pub client_id: Option<String>,
    pub email: Option<String>,
    /// A Backstage user token's User entity ref (canonical, from `sub`); `None` for
    /// every other kind of issuer.
    pub user_ref: Option<String>,
    /// A Backstage user token's `ent` ownership refs (canonical); checked and kept
    /// here, but granting nothing (see `backstage.rs`).
    pub ownership: Vec<String>,
    /// Fingerprint of the key that verified the signature.
    pub key_fingerprint: u64,
}

impl Claims {
    /// The identity, its strings moved rather than copied (the verifier's fresh path:
    /// the claims are dropped right after).
    pub fn into_identity(self) -> Identity {
        Identity {
            issuer: self.iss,
            sub: self.sub,
            client_id: self.client_id,
            email: self.email,
            scopes: self.scopes,
            groups: self.groups,
            backstage_user: self.user_ref,
            exp: self.exp,
        }
    }

    pub fn to_identity(&self) -> Identity {
        Identity {
            issuer: self.iss.clone(),
            sub: self.sub.clone(),
            client_id: self.client_id.clone(),
            email: self.email.clone(),
            scopes: self.scopes.clone(),
            groups: self.groups.clone(),
            backstage_user: self.user_ref.clone(),
            exp: self.exp,
        }
    }
}

/// A JWS whose signature verified; the payload is not interpreted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedJws {
    pub alg: Alg,
    pub kid: Option<String>,
    pub typ: Option<String>,
    pub payload: Vec<u8>,
    pub key_fingerprint: u64,
}

/// Signature-only verification: header checks, key selection, crypto. No claim checks.
///
/// # Errors
/// The [`Reason`] the JWS failed with.
pub fn verify_jws(
    token: &str,
    keys: &KeySet,
    allowed: &[Alg],
    max_bytes: usize,
) -> Result<VerifiedJws, Reason> {
    let jws = parse_jws(token, max_bytes)?;
    let fp = check_signature(&jws, keys, allowed)?;
    Ok(VerifiedJws {
        alg: jws.header.alg,
        kid: jws.header.kid,
        typ: jws.header.typ,
        payload: jws.payload,
        key_fingerprint: fp,
    })
}

/// Full verification of a JWT against one issuer's keys, at `now` (unix seconds).
///
/// # Errors
/// The [`Reason`] the token failed with.
pub fn verify_with_keys(
    token: &str,
    now: i64,
    keys: &KeySet,
    cfg: &IssuerConfig,
    max_bytes: usize,
) -> Result<Claims, Reason> {
    let jws = parse_jws(token, max_bytes)?;
    let raw = RawClaims::parse(&jws.payload, &[cfg.extra_claim().to_owned()])?;
    if unverified_issuer(&raw)? != cfg.issuer {
        return Err(Reason::BadIssuer);
    }
    let fp = check_signature(&jws, keys, cfg.allowed_algorithms())?;
    check_issuer_claims(&jws, &raw, cfg, now, fp)
}

/// [`check_claims`], then the rules of the issuer's kind (`backstage.rs` for
/// `kind = "backstage"`).
///
/// # Errors
/// The first broken rule's [`Reason`].
pub fn check_issuer_claims(
    jws: &Jws<'_>,
    raw: &RawClaims<'_>,
    cfg: &IssuerConfig,
    now: i64,
    key_fingerprint: u64,
) -> Result<Claims, Reason> {
    let claims = check_claims(jws, raw, cfg, now, key_fingerprint)?;
    match cfg.kind {
        IssuerKind::Oidc => Ok(claims),
        IssuerKind::Backstage => super::backstage::user_claims(claims, raw),
    }
}

/// An OpenID Connect ID token verified for a sign-in (issue 13).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdToken {
    pub claims: Claims,
    /// `auth_time`, when the provider sent it.
    pub auth_time: Option<i64>,
}

/// Why an ID token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdTokenError {
    /// A rule shared with access tokens (signature, `iss`, `aud`, times, shape).
    #[error("{}", .0.as_str())]
    Token(Reason),
    /// `nonce` absent or not the one this sign-in sent.
    #[error("nonce mismatch")]
    Nonce,
    /// `azp` present and not our client, or absent with several audiences.
    #[error("azp is another client, or absent with several audiences")]
    Azp,
}

impl From<Reason> for IdTokenError {
    fn from(r: Reason) -> Self {
        IdTokenError::Token(r)
    }
}

/// Verifies an ID token (OIDC Core 3.1.3.7) with the issuer's keys and algorithms and
/// the same signature, time and shape rules as access tokens; but `aud` must contain
/// `client_id` (the issuer's access-token `audiences` and `types` do not apply), `azp`
/// when present (and it must be with several audiences) must be `client_id`, and
/// `nonce` must equal `nonce`.
///
/// # Errors
/// [`IdTokenError`].
pub fn verify_id_token(
    token: &str,
    now: i64,
    keys: &KeySet,
    cfg: &IssuerConfig,
    client_id: &str,
    nonce: &str,
    max_bytes: usize,
) -> Result<IdToken, IdTokenError> {
    let jws = parse_jws(token, max_bytes)?;
    let wanted = [
        cfg.groups_claim.clone(),
        "nonce".to_owned(),
        "auth_time".to_owned(),
    ];
    let raw = RawClaims::parse(&jws.payload, &wanted)?;
    if unverified_issuer(&raw)? != cfg.issuer {
        return Err(Reason::BadIssuer.into());
    }
    let fp = check_signature(&jws, keys, cfg.allowed_algorithms())?;
    let id_cfg = IssuerConfig {
        audiences: vec![client_id.to_owned()],
        types: None,
        ..cfg.clone()
    };
    let claims = check_claims(&jws, &raw, &id_cfg, now, fp)?;
    match raw.extra("nonce") {
        Some(Val::Str(n)) if same_bytes(n.as_bytes(), nonce.as_bytes()) => {}
        _ => return Err(IdTokenError::Nonce),
    }
    // OIDC Core 3.1.3.7 (4, 5): with several audiences, `azp` must say the token was
    // issued to us; a token for another client that lists us too is not a sign-in here.
    let several = matches!(&raw.aud, Some(Val::StrList(l)) if l.len() > 1);
    match &raw.azp {
        None if several => return Err(IdTokenError::Azp),
        None => {}
        Some(Val::Str(a)) if a == client_id => {}
        Some(_) => return Err(IdTokenError::Azp),
    }
    let auth_time = numeric_date(raw.extra("auth_time"), f64::floor)?;
    Ok(IdToken { claims, auth_time })
}

/// Equality in time independent of where the bytes differ.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The `iss` claim before verification: only ever used to pick an issuer's key set.
///
/// # Errors
/// `bad_issuer` when `iss` is absent or not one string.
pub fn unverified_issuer<'a>(raw: &'a RawClaims<'_>) -> Result<&'a str, Reason> {
    match &raw.iss {
        Some(Val::Str(s)) => Ok(s),
        _ => Err(Reason::BadIssuer),
    }
}

/// Selects the key and checks the signature; returns the key's fingerprint.
///
/// # Errors
/// `unsupported_alg`, `unknown_key` or `bad_signature`.
pub fn check_signature(jws: &Jws<'_>, keys: &KeySet, allowed: &[Alg]) -> Result<u64, Reason> {
    let alg = jws.header.alg;
    if !allowed.contains(&alg) {
        return Err(Reason::UnsupportedAlg);
    }
    match keys.lookup(jws.header.kid.as_deref(), alg) {
        Lookup::UnknownKid => Err(Reason::UnknownKey),
        Lookup::Found(key) => {
            key.verify(jws)?;
            Ok(key.fingerprint())
        }
    }
}

/// Checks every claim rule on a token whose signature already verified.
///
/// # Errors
/// The first broken rule's [`Reason`].
pub fn check_claims(
    jws: &Jws<'_>,
    raw: &RawClaims<'_>,
    cfg: &IssuerConfig,
    now: i64,
    key_fingerprint: u64,
) -> Result<Claims, Reason> {
    let header = &jws.header;
    if let Some(types) = cfg.allowed_types() {
        let typ = header.typ.as_deref().ok_or(Reason::BadType)?;
        if !types.iter().any(|t| same_type(t, typ)) {
            return Err(Reason::BadType);
        }
    }
    let (exp, nbf, iat) = check_times(raw, cfg, now)?;
    let aud = match &raw.aud {
        Some(Val::Str(s)) => vec![s.to_string()],
        Some(Val::StrList(l)) => l.iter().map(|s| s.to_string()).collect(),
        _ => return Err(Reason::BadAudience),
    };
    if !aud.iter().any(|a| cfg.accepts_audience(a)) {
        return Err(Reason::BadAudience);
    }
    let mut scopes = Vec::new();
    match &raw.scope {
        None => {}
        Some(Val::Str(s)) => push_words(&mut scopes, s),
        Some(_) => return Err(Reason::MalformedToken),
    }
    match &raw.scp {
        None => {}
        Some(Val::Str(s)) => push_words(&mut scopes, s),
        Some(Val::StrList(l)) => l.iter().for_each(|s| push_words(&mut scopes, s)),
        Some(_) => return Err(Reason::MalformedToken),
    }
    let mut groups = Vec::new();
    match raw.extra(&cfg.groups_claim) {
        None => {}
        Some(Val::Str(s)) => push_unique(&mut groups, s),
        Some(Val::StrList(l)) => l.iter().for_each(|s| push_unique(&mut groups, s)),
        Some(_) => return Err(Reason::MalformedToken),
    }
    let client_id = match opt_str(&raw.client_id)? {
        Some(c) => Some(c),
        None => match opt_str(&raw.azp)? {
            Some(c) => Some(c),
            None => opt_str(&raw.cid)?,
        },
    };
    Ok(Claims {
        alg: header.alg,
        kid: header.kid.clone(),
        typ: header.typ.clone(),
        iss: cfg.issuer.clone(),
        sub: opt_str(&raw.sub)?,
        aud,
        exp,
        nbf,
        iat,
        scopes,
        groups,
        client_id,
        email: verified_email(raw, cfg)?,
        user_ref: None,
        ownership: Vec::new(),
        key_fingerprint,
    })
}

/// `exp` (required), `nbf` and `iat` against `now` with the issuer's leeway, and the
/// token's lifetime against its limit; returns the three dates.
fn check_times(
    raw: &RawClaims<'_>,
    cfg: &IssuerConfig,
    now: i64,
) -> Result<(i64, Option<i64>, Option<i64>), Reason> {
    let leeway = cfg.leeway();
    let exp = numeric_date(raw.exp.as_ref(), f64::floor)?.ok_or(Reason::MalformedToken)?;
    let nbf = numeric_date(raw.nbf.as_ref(), f64::ceil)?;
    let iat = numeric_date(raw.iat.as_ref(), f64::ceil)?;
    if now >= exp.saturating_add(leeway) {
        return Err(Reason::Expired);
    }
    if nbf.is_some_and(|nbf| nbf > now.saturating_add(leeway)) {
        return Err(Reason::NotYetValid);
    }
    if iat.is_some_and(|iat| iat > now.saturating_add(leeway)) {
        return Err(Reason::NotYetValid);
    }
    // Always bounded (default one day, at most a year: the cast cannot wrap).
    let start = iat.or(nbf).unwrap_or(now);
    if exp.saturating_sub(start) > cfg.max_lifetime_seconds as i64 {
        return Err(Reason::LifetimeTooLong);
    }
    Ok((exp, nbf, iat))
}

/// `typ` is a media type: case-insensitive, `application/` prefix optional (RFC 7515 §4.1.9).
fn same_type(want: &str, got: &str) -> bool {
    let strip = |s: &str| -> String {
        let prefixed = s
            .as_bytes()
            .get(..12)
            .is_some_and(|p| p.eq_ignore_ascii_case(b"application/"));
        // The 12 prefix bytes are ASCII, so byte 12 is a char boundary.
        if prefixed {
            s[12..].to_owned()
        } else {
            s.to_owned()
        }
    };
    strip(want).eq_ignore_ascii_case(&strip(got))
}

/// A NumericDate (RFC 7519 §2): an integer or a finite float within ±2^53.
fn numeric_date(v: Option<&Val<'_>>, round: fn(f64) -> f64) -> Result<Option<i64>, Reason> {
    const LIMIT: f64 = 9_007_199_254_740_992.0;
    match v {
        None => Ok(None),
        Some(Val::Int(i)) => Ok(Some(*i)),
        Some(Val::Float(f)) if f.is_finite() && f.abs() < LIMIT => Ok(Some(round(*f) as i64)),
        Some(_) => Err(Reason::MalformedToken),
    }
}

/// The `email` claim, kept only when the provider vouches for it: `email_verified` is
/// JSON `true`, or the issuer is configured with `trust_unverified_email`. An email a
/// user may set without proof (Entra ID's `email`, a self-service profile) would
/// otherwise let them claim another user's Backstage identity. A non-boolean
/// `email_verified` (some providers send `"true"`) counts as not verified: dropping the
/// email only ever removes access, so the token is not rejected for it. `email` itself
/// must still be a string when present.
fn verified_email(raw: &RawClaims<'_>, cfg: &IssuerConfig) -> Result<Option<String>, Reason> {
    let email = opt_str(&raw.email)?;
    let vouched = cfg.trust_unverified_email || matches!(raw.email_verified, Some(Val::Bool(true)));
    Ok(email.filter(|_| vouched))
}

fn opt_str(v: &Option<Val<'_>>) -> Result<Option<String>, Reason> {
    match v {
        None => Ok(None),
        Some(Val::Str(s)) => Ok(Some(s.to_string())),
        Some(_) => Err(Reason::MalformedToken),
    }
}

fn push_words(out: &mut Vec<String>, s: &str) {
    for w in s.split(' ').filter(|w| !w.is_empty()) {
        push_unique(out, w);
    }
}

fn push_unique(out: &mut Vec<String>, s: &str) {
    if !out.iter().any(|x| x == s) {
        out.push(s.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_dates() {
        assert_eq!(
            numeric_date(Some(&Val::Float(10.5)), f64::floor),
            Ok(Some(10))
        );
        assert_eq!(
            numeric_date(Some(&Val::Float(10.5)), f64::ceil),
            Ok(Some(11))
        );
        assert_eq!(numeric_date(Some(&Val::Int(-5)), f64::floor), Ok(Some(-5)));
        assert_eq!(
            numeric_date(Some(&Val::Float(1e300)), f64::floor),
            Err(Reason::MalformedToken)
        );
        assert_eq!(
            numeric_date(Some(&Val::Float(f64::NAN)), f64::floor),
            Err(Reason::MalformedToken)
        );
        assert_eq!(
            numeric_date(Some(&Val::Str("1".into())), f64::floor),
            Err(Reason::MalformedToken)
        );
        assert_eq!(
            numeric_date(Some(&Val::Other), f64::floor),
            Err(Reason::MalformedToken)
        );
        assert_eq!(numeric_date(None, f64::floor), Ok(None));
    }

    #[test]
    fn types_and_words() {
        assert!(same_type("at+jwt", "at+JWT"));
        assert!(same_type("at+jwt", "application/at+jwt"));
        assert!(!same_type("at+jwt", "JWT"));
        assert!(
            !same_type("at+jwt", "ééééééé+jwt"),
            "multibyte text must not panic"
        );
        assert!(!same_type("at+jwt", "applicationé"));
        let mut v = Vec::new();
        push_words(&mut v, " read  write read:x ");
        assert_eq!(v, ["read", "write", "read:x"]);
    }
}
