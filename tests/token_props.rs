//! Property tests: arbitrary input never panics, hangs or verifies; any change to a valid
//! token is rejected with a typed reason.

mod token_support;

use std::sync::OnceLock;

use proptest::prelude::*;
use stagedoor::reason::Reason;
use stagedoor::token::{IssuerConfig, KeySet, KeySource, verify_with_keys};
use token_support::*;

struct Fx {
    keys: KeySet,
    cfg: IssuerConfig,
    token: String,
    now: i64,
}

fn fx() -> &'static Fx {
    static FX: OnceLock<Fx> = OnceLock::new();
    FX.get_or_init(|| {
        let k = TestKey::ec();
        let cfg = IssuerConfig::new(ISS, &[AUD], KeySource::JwksUrl(format!("{ISS}/jwks")));
        let (keys, _) = KeySet::from_jwks(
            jwks(&[k.jwk("ec-1", Some("ES256"))]).as_bytes(),
            cfg.allowed_algorithms(),
        )
        .unwrap();
        let now = now();
        let token = mint(&k, "ES256", "ec-1", &claims(now));
        Fx {
            keys,
            cfg,
            token,
            now,
        }
    })
}

fn check(t: &str) -> Result<(), Reason> {
    let f = fx();
    verify_with_keys(t, f.now, &f.keys, &f.cfg, 8192).map(|_| ())
}

#[test]
fn the_fixture_token_is_valid_and_every_prefix_is_not() {
    let t = &fx().token;
    assert_eq!(check(t), Ok(()));
    for i in 0..t.len() {
        assert!(check(&t[..i]).is_err(), "prefix {i}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn header_parsers_never_panic(s in "\\PC{0,40}", t in "[A-Za-z0-9 ,:éß-]{29}") {
        use stagedoor::token::fetch::{max_age, parse_http_date};
        for x in [&s, &t] {
            if parse_http_date(x).is_some() {
                prop_assert!(x.len() == 29 && x.is_ascii() && x.ends_with(" GMT"), "{}", x);
            }
        }
        if let Some(n) = max_age(&s) {
            let l = s.to_ascii_lowercase();
            prop_assert!(l.contains("max-age") || (n == 0 && (l.contains("no-cache") || l.contains("no-store"))));
        }
    }

    #[test]
    fn http_dates_round_trip(secs in 0i64..8_000_000_000) {
        use stagedoor::token::fetch::{format_http_date, parse_http_date};
        prop_assert_eq!(parse_http_date(&format_http_date(secs)), Some(secs));
    }

    #[test]
    fn arbitrary_strings_never_verify(s in "[A-Za-z0-9_.=+/ -]{0,600}") {
        prop_assert!(check(&s).is_err());
    }

    #[test]
    fn arbitrary_bytes_as_segments_never_verify(h in proptest::collection::vec(any::<u8>(), 0..300),
                                                p in proptest::collection::vec(any::<u8>(), 0..300),
                                                s in proptest::collection::vec(any::<u8>(), 0..128)) {
        let t = format!("{}.{}.{}", b64(&h), b64(&p), b64(&s));
        prop_assert!(check(&t).is_err());
    }

    #[test]
    fn any_one_character_change_is_rejected(pos in 0usize..10_000, c in "[A-Za-z0-9_.=+/-]") {
        let t = &fx().token;
        let pos = pos % t.len();
        let mut m = t.clone();
        m.replace_range(pos..=pos, &c);
        prop_assume!(m != *t);
        prop_assert!(check(&m).is_err(), "accepted a modified token at {}", pos);
    }

    #[test]
    fn arbitrary_claims_json_never_panics(json in "\\{(\"[a-z]{1,4}\":(-?[0-9]{1,20}(\\.[0-9]+)?|\"[a-z ]{0,8}\"|\\[\\]|\\{\\}|null|true),?){0,8}\\}") {
        // Signed correctly, so every outcome is decided by the claim rules alone.
        let k = TestKey::ed();
        let cfg = IssuerConfig::new(ISS, &[AUD], KeySource::JwksUrl(format!("{ISS}/jwks")));
        let (keys, _) = KeySet::from_jwks(jwks(&[k.jwk("ed", None)]).as_bytes(), cfg.allowed_algorithms()).unwrap();
        let t = mint_raw(r#"{"alg":"EdDSA","kid":"ed"}"#, &json, "EdDSA", &k);
        // No iss means the issuer never matches: a typed reason, no panic.
        prop_assert!(verify_with_keys(&t, now(), &keys, &cfg, 8192).is_err());
    }
}
