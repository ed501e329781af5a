//! Token stage, first step: the strict JOSE parser. Splits a compact JWS, decodes strict
//! base64url and reads the header and claims as duplicate-free JSON objects, all before
//! any crypto (message → token → policy).

use std::borrow::Cow;
use std::fmt;

use base64::Engine;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::alg::Alg;
use crate::reason::Reason;

/// base64url without padding, rejecting non-canonical trailing bits (RFC 7515 §2).
pub const B64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(false),
);

/// Largest signature of any supported algorithm (RSA-8192).
pub const MAX_SIG_BYTES: usize = 1024;
/// Largest `kid` accepted in a token header (and kept from a JWK).
pub const MAX_KID_BYTES: usize = 256;

/// The protected header, after every pre-crypto check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub alg: Alg,
    pub kid: Option<String>,
    pub typ: Option<String>,
}

/// A compact JWS split and checked, signature not verified yet.
pub struct Jws<'t> {
    pub header: Header,
    /// `BASE64URL(header) . BASE64URL(payload)`: the bytes that were signed.
    pub signing_input: &'t [u8],
    /// The decoded payload (claims JSON for a JWT).
    pub payload: Vec<u8>,
    sig: [u8; MAX_SIG_BYTES],
    sig_len: usize,
    /// The signature segment as sent, for jsonwebtoken (which decodes it itself).
    sig_b64: &'t str,
}

impl<'t> Jws<'t> {
    pub fn signature(&self) -> &[u8] {
        &self.sig[..self.sig_len]
    }

    /// The signature as the token carries it: strict base64url, at most
    /// [`MAX_SIG_BYTES`] once decoded.
    pub fn signature_b64(&self) -> &'t str {
        self.sig_b64
    }
}

/// Splits and checks a compact JWS: size cap, three segments, strict base64url, header
/// rules (`crit`, `kid` length, known `alg`). No key is involved yet.
///
/// # Errors
/// `missing_token`, `token_too_large`, `malformed_token`, `unsupported_alg` or
/// `bad_signature` (an over-long signature).
pub fn parse_jws(token: &str, max_bytes: usize) -> Result<Jws<'_>, Reason> {
    if token.is_empty() {
        return Err(Reason::MissingToken);
    }
    if token.len() > max_bytes {
        return Err(Reason::TokenTooLarge);
    }
    let bytes = token.as_bytes();
    // Exactly two dots, found with memchr (an iterator over every byte was 1% of a
    // fresh verification's CPU).
    let dot = |from: usize| token[from..].find('.').map(|i| from + i);
    let Some(d1) = dot(0) else {
        return Err(Reason::MalformedToken);
    };
    let Some(d2) = dot(d1 + 1) else {
        return Err(Reason::MalformedToken);
    };
    if dot(d2 + 1).is_some() {
        return Err(Reason::MalformedToken);
    }
    let (h64, p64, s64) = (&token[..d1], &token[d1 + 1..d2], &token[d2 + 1..]);
    // An empty payload is a valid JWS (a JWT then fails as a claims set).
    if h64.is_empty() {
        return Err(Reason::MalformedToken);
    }
    let header_json = B64.decode(h64).map_err(|_| Reason::MalformedToken)?;
    let header = parse_header(&header_json)?;
    if s64.is_empty() {
        return Err(Reason::MalformedToken);
    }
    let payload = B64.decode(p64).map_err(|_| Reason::MalformedToken)?;
    if s64.len() > (MAX_SIG_BYTES * 4).div_ceil(3) {
        return Err(Reason::BadSignature);
    }
    let mut sig = [0u8; MAX_SIG_BYTES];
    let sig_len = B64
        .decode_slice(s64, &mut sig)
        .map_err(|_| Reason::MalformedToken)?;
    Ok(Jws {
        header,
        signing_input: &bytes[..d2],
        payload,
        sig,
        sig_len,
        sig_b64: s64,
    })
}

/// Reads the protected header.
pub fn parse_header(json: &[u8]) -> Result<Header, Reason> {
    let raw = parse_object(json, HeaderSeed).map_err(|_| Reason::MalformedToken)?;
    if raw.crit {
        // We understand no extension, so any `crit` makes the JWS invalid (RFC 7515 §4.1.11).
        return Err(Reason::MalformedToken);
    }
    let alg = match raw.alg {
        Some(Val::Str(s)) => Alg::from_name(&s).ok_or(Reason::UnsupportedAlg)?,
        Some(_) => return Err(Reason::MalformedToken),
        None => return Err(Reason::MalformedToken),
    };
    let kid = match raw.kid {
        None => None,
        Some(Val::Str(s)) if s.len() <= MAX_KID_BYTES => Some(s.into_owned()),
        Some(_) => return Err(Reason::MalformedToken),
    };
    let typ = match raw.typ {
        None => None,
        Some(Val::Str(s)) => Some(s.into_owned()),
        Some(_) => return Err(Reason::MalformedToken),
    };
    Ok(Header { alg, kid, typ })
}

/// A JSON value as far as claim checks care: wrong types are kept as `Other` so the
/// caller can reject them ("wrong type is invalid, never absent").
#[derive(Debug, Clone, PartialEq)]
pub enum Val<'a> {
    Str(Cow<'a, str>),
    Int(i64),
    Float(f64),
    StrList(Vec<Cow<'a, str>>),
    Bool(bool),
    Other,
}

/// The claims stagedoor reads, still unverified.
#[derive(Debug, Default)]
pub struct RawClaims<'a> {
    pub iss: Option<Val<'a>>,
    pub sub: Option<Val<'a>>,
    pub aud: Option<Val<'a>>,
    pub exp: Option<Val<'a>>,
    pub nbf: Option<Val<'a>>,
    pub iat: Option<Val<'a>>,
    pub scope: Option<Val<'a>>,
    pub scp: Option<Val<'a>>,
    pub client_id: Option<Val<'a>>,
    pub azp: Option<Val<'a>>,
    pub cid: Option<Val<'a>>,
    pub email: Option<Val<'a>>,
    pub email_verified: Option<Val<'a>>,
    /// Values of the extra claims asked for (the configured groups claims).
    pub extra: Vec<(String, Val<'a>)>,
}

impl<'a> RawClaims<'a> {
    /// Parses a claims set; `wanted` names extra claims to keep (groups claims).
    ///
    /// # Errors
    /// `malformed_token` when the payload is not one duplicate-free JSON object.
    pub fn parse(json: &'a [u8], wanted: &[String]) -> Result<RawClaims<'a>, Reason> {
        parse_object(json, ClaimsSeed { wanted }).map_err(|_| Reason::MalformedToken)
    }

    pub fn extra(&self, name: &str) -> Option<&Val<'a>> {
        self.extra.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }
}

fn parse_object<'de, S: DeserializeSeed<'de>>(
    json: &'de [u8],
    seed: S,
) -> Result<S::Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(json);
    let v = seed.deserialize(&mut de)?;
    de.end()?;
    Ok(v)
}

/// Records every key of an object and fails on a repeated one.
#[derive(Default)]
struct KeyLog<'a>(Vec<Cow<'a, str>>);

impl<'a> KeyLog<'a> {
    fn finish<E: de::Error>(mut self) -> Result<(), E> {
        self.0.sort_unstable();
        if self.0.windows(2).any(|w| w[0] == w[1]) {
            return Err(E::custom("duplicate key"));
        }
        Ok(())
    }
}

struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> Deserialize<'de> for Val<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValVisitor)
    }
}

struct ValVisitor;

impl<'de> Visitor<'de> for ValVisitor {
    type Value = Val<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Val<'de>, E> {
        Ok(Val::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Val<'de>, E> {
        Ok(Val::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Val<'de>, E> {
        Ok(Val::Str(Cow::Owned(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Val<'de>, E> {
        Ok(Val::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Val<'de>, E> {
        Ok(i64::try_from(v).map_or(Val::Other, Val::Int))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Val<'de>, E> {
        Ok(Val::Float(v))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Val<'de>, E> {
        Ok(Val::Bool(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Val<'de>, E> {
        Ok(Val::Other)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Val<'de>, A::Error> {
        let mut out = Vec::new();
        let mut all_strings = true;
        while let Some(v) = seq.next_element::<Val<'de>>()? {
            match v {
                Val::Str(s) if all_strings => out.push(s),
                _ => all_strings = false,
            }
        }
        Ok(if all_strings {
            Val::StrList(out)
        } else {
            Val::Other
        })
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Val<'de>, A::Error> {
        let mut keys = KeyLog::default();
        while let Some(k) = map.next_key::<Key<'de>>()? {
            keys.0.push(k.0);
            map.next_value::<Skip>()?;
        }
        keys.finish()?;
        Ok(Val::Other)
    }
}

/// Skips a value like `IgnoredAny`, but under serde_json's nesting limit and with
/// duplicate keys rejected at every depth.
struct Skip;

impl<'de> Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SkipVisitor)
    }
}

struct SkipVisitor;

impl<'de> Visitor<'de> for SkipVisitor {
    type Value = Skip;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Skip, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Skip)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Skip, A::Error> {
        let mut keys = KeyLog::default();
        while let Some(k) = map.next_key::<Key<'de>>()? {
            keys.0.push(k.0);
            map.next_value::<Skip>()?;
        }
        keys.finish()?;
        Ok(Skip)
    }
}

#[derive(Default)]
struct RawHeader<'a> {
    alg: Option<Val<'a>>,
    kid: Option<Val<'a>>,
    typ: Option<Val<'a>>,
    crit: bool,
}

struct HeaderSeed;

impl<'de> DeserializeSeed<'de> for HeaderSeed {
    type Value = RawHeader<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for HeaderSeed {
    type Value = RawHeader<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JOSE header object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut h = RawHeader::default();
        let mut keys = KeyLog::default();
        while let Some(k) = map.next_key::<Key<'de>>()? {
            // `jku`, `x5u`, `jwk`, `x5c` are read past: keys only ever come from the
            // issuer's trusted key set.
            match k.0.as_ref() {
                "alg" => h.alg = Some(map.next_value()?),
                "kid" => h.kid = Some(map.next_value()?),
                "typ" => h.typ = Some(map.next_value()?),
                "crit" => {
                    map.next_value::<Skip>()?;
                    h.crit = true;
                }
                _ => {
                    map.next_value::<Skip>()?;
                }
            }
            keys.0.push(k.0);
        }
        keys.finish()?;
        Ok(h)
    }
}

struct ClaimsSeed<'w> {
    wanted: &'w [String],
}

impl<'de> DeserializeSeed<'de> for ClaimsSeed<'_> {
    type Value = RawClaims<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ClaimsSeed<'_> {
    type Value = RawClaims<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JWT claims object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut c = RawClaims::default();
        let mut keys = KeyLog::default();
        while let Some(k) = map.next_key::<Key<'de>>()? {
            let slot = match k.0.as_ref() {
                "iss" => Some(&mut c.iss),
                "sub" => Some(&mut c.sub),
                "aud" => Some(&mut c.aud),
                "exp" => Some(&mut c.exp),
                "nbf" => Some(&mut c.nbf),
                "iat" => Some(&mut c.iat),
                "scope" => Some(&mut c.scope),
                "scp" => Some(&mut c.scp),
                "client_id" => Some(&mut c.client_id),
                "azp" => Some(&mut c.azp),
                "cid" => Some(&mut c.cid),
                "email" => Some(&mut c.email),
                "email_verified" => Some(&mut c.email_verified),
                _ => None,
            };
            match slot {
                Some(slot) => *slot = Some(map.next_value()?),
                None if self.wanted.iter().any(|w| *w == k.0) => {
                    let v: Val<'de> = map.next_value()?;
                    c.extra.push((k.0.to_string(), v));
                }
                None => {
                    map.next_value::<Skip>()?;
                }
            }
            keys.0.push(k.0);
        }
        keys.finish()?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests;
