//! Parser unit tests: strict base64url, header rules, segments and size, claim types.

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
    assert_eq!(j.signature_b64(), b64("sig"));
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
    let json =
        br#"{"iss":"i","aud":["a","b"],"exp":1.5,"nbf":3,"groups":["g"],"x":{"y":[1,{"z":null}]}}"#;
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
