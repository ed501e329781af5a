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
}

impl Jws<'_> {
    pub fn signature(&self) -> &[u8] {
        &self.sig[..self.sig_len]
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
    let mut dots = bytes
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'.')
        .map(|(i, _)| i);
    let (Some(d1), Some(d2), None) = (dots.next(), dots.next(), dots.next()) else {
        return Err(Reason::MalformedToken);
    };
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
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        B64.encode(s)
    }

    fn tok(h: &str, p: &str) -> String {
        format!("{}.{}.{}", b64(h), b64(p), b64("sig"))
    }

    #[test]
    fn strict_base64() {
        assert!(B64.decode("YQ").is_ok());
        assert!(B64.decode("YQ==").is_err(), "padding");
        assert!(B64.decode("YR").is_err(), "non-canonical trailing bits");
        assert!(B64.decode("Y+").is_err(), "standard alphabet");
        assert!(B64.decode("Y Q").is_err(), "whitespace");
    }

    #[test]
    fn header_rules() {
        let ok = tok(
            r#"{"alg":"RS256","kid":"k1","typ":"at+jwt","x5t":{"a":1}}"#,
            "{}",
        );
        let j = parse_jws(&ok, 8192).unwrap();
        assert_eq!(j.header.alg, Alg::RS256);
        assert_eq!(j.header.kid.as_deref(), Some("k1"));
        assert_eq!(j.header.typ.as_deref(), Some("at+jwt"));
        assert_eq!(j.signature(), b"sig");
        let cases = [
            (r#"{"alg":"none"}"#, Reason::UnsupportedAlg),
            (r#"{"alg":"rs256"}"#, Reason::UnsupportedAlg),
            (r#"{"alg":1}"#, Reason::MalformedToken),
            (r#"{"kid":"a"}"#, Reason::MalformedToken),
            (r#"{"alg":"RS256","alg":"RS256"}"#, Reason::MalformedToken),
            (r#"{"alg":"RS256","x":1,"x":2}"#, Reason::MalformedToken),
            (r#"{"alg":"RS256","crit":["exp"]}"#, Reason::MalformedToken),
            (r#"{"alg":"RS256","kid":7}"#, Reason::MalformedToken),
            (r#"{"alg":"RS256","typ":["JWT"]}"#, Reason::MalformedToken),
            (r#"["alg","RS256"]"#, Reason::MalformedToken),
            (r#"{"alg":"RS256"} x"#, Reason::MalformedToken),
        ];
        for (h, want) in cases {
            assert_eq!(parse_jws(&tok(h, "{}"), 8192).err(), Some(want), "{h}");
        }
        let long_kid = format!(r#"{{"alg":"RS256","kid":"{}"}}"#, "k".repeat(257));
        assert_eq!(
            parse_jws(&tok(&long_kid, "{}"), 8192).err(),
            Some(Reason::MalformedToken)
        );
        let max_kid = format!(r#"{{"alg":"RS256","kid":"{}"}}"#, "k".repeat(256));
        assert!(parse_jws(&tok(&max_kid, "{}"), 8192).is_ok());
    }

    #[test]
    fn segments_and_size() {
        let h = b64(r#"{"alg":"RS256"}"#);
        assert_eq!(parse_jws("", 8192).err(), Some(Reason::MissingToken));
        for t in [
            "..",
            ".",
            "a.b",
            &format!("{h}.e30.c2ln.c2ln"),
            &format!("{h}.e30."),
        ] {
            assert_eq!(
                parse_jws(t, 8192).err(),
                Some(Reason::MalformedToken),
                "{t}"
            );
        }
        assert_eq!(parse_jws(&format!("{h}..c2ln"), 8192).unwrap().payload, b"");
        let big = format!("{h}.{}.c2ln", "A".repeat(9000));
        assert_eq!(parse_jws(&big, 8192).err(), Some(Reason::TokenTooLarge));
        let long_sig = format!("{h}.e30.{}", "A".repeat(1400));
        assert_eq!(parse_jws(&long_sig, 8192).err(), Some(Reason::BadSignature));
    }

    #[test]
    fn claims_types_and_duplicates() {
        let json = br#"{"iss":"i","aud":["a","b"],"exp":1.5,"nbf":3,"groups":["g"],"x":{"y":[1,{"z":null}]}}"#;
        let c = RawClaims::parse(json, &["groups".to_owned()]).unwrap();
        assert_eq!(c.iss, Some(Val::Str("i".into())));
        assert_eq!(c.aud, Some(Val::StrList(vec!["a".into(), "b".into()])));
        assert_eq!(c.exp, Some(Val::Float(1.5)));
        assert_eq!(c.nbf, Some(Val::Int(3)));
        assert_eq!(c.extra("groups"), Some(&Val::StrList(vec!["g".into()])));
        let c = RawClaims::parse(br#"{"aud":["a",1],"iss":["i"],"exp":"1"}"#, &[]).unwrap();
        assert_eq!(c.aud, Some(Val::Other));
        assert_eq!(c.iss, Some(Val::StrList(vec!["i".into()])));
        assert_eq!(c.exp, Some(Val::Str("1".into())));
        for bad in [
            &br#"{"exp":1,"exp":2}"#[..],
            br#"{"a":1,"a":1}"#,
            br#"{"a":{"b":1,"b":2}}"#,
            br#"{"\u0069ss":"x","iss":"y"}"#,
            br#"[]"#,
            br#"{"exp":1e400}"#,
            br#"{"exp":1}{}"#,
        ] {
            assert!(
                RawClaims::parse(bad, &[]).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(RawClaims::parse(deep.as_bytes(), &[]).is_err());
    }
}
