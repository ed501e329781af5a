//! Review of the ACK encoding (issue 14, third pass): outside the request flow, a
//! differential check of `actions_for` against the `Vec<Action>` version it replaced
//! (copied from 7f7686b^), the ACK framing at the size limit, and `parse_jws`'s dot
//! search.

use std::sync::Arc;

use bytes::BytesMut;
use proptest::prelude::*;
use stagedoor::agent::{Outcome, actions_for, header_safe, is_outage, www_authenticate};
use stagedoor::browser::BrowserOutcome;
use stagedoor::identity::Identity;
use stagedoor::policy::Decision;
use stagedoor::reason::Reason;
use stagedoor::spop::{Action, Actions, Frame, Scope, TypedData, encode_ack};
use stagedoor::token::jose::parse_jws;

/// `actions_for` as it was before 7f7686b, verbatim but for paths.
fn old_actions_for(outcome: &Outcome, realm: &str) -> Vec<Action<'static>> {
    let d = &outcome.decision;
    let real_allow = d.allow();
    let outage = is_outage(d.reason);
    let mut actions = Vec::with_capacity(14);
    let str_var = |name: &'static str, v: &str| {
        Action::set(Scope::Txn, name, TypedData::string(v.to_owned()))
    };
    if let Some(cookie) = &outcome.browser.cookie {
        actions.push(Action::set(
            Scope::Txn,
            "cookie_strip",
            TypedData::Bool(true),
        ));
        let empty = cookie.trim_matches([' ', '\t', ';']).is_empty();
        if !empty
            && cookie.len() <= 65_536
            && cookie
                .bytes()
                .all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
        {
            actions.push(str_var("cookie", cookie));
        }
    }
    actions.push(Action::set(
        Scope::Txn,
        "allow",
        TypedData::Bool(real_allow || outcome.shadow),
    ));
    let location = (!real_allow)
        .then_some(outcome.browser.location.as_deref())
        .flatten()
        .filter(|v| header_safe(v, 8192, false));
    let status = if location.is_some() { 302 } else { d.status() };
    actions.push(Action::set(
        Scope::Txn,
        "status",
        TypedData::Int64(status.into()),
    ));
    actions.push(Action::set(
        Scope::Txn,
        "reason",
        TypedData::str(d.reason.as_str()),
    ));
    if outcome.shadow {
        actions.push(Action::set(
            Scope::Txn,
            "shadow_deny",
            TypedData::Bool(!real_allow),
        ));
    } else if outage {
        actions.push(Action::set(
            Scope::Txn,
            stagedoor::connection::ERROR_VAR,
            TypedData::str(d.reason.as_str()),
        ));
    }
    if let Some(id) = &outcome.identity {
        if let Some(sub) = id.sub.as_deref().filter(|v| header_safe(v, 256, false)) {
            actions.push(str_var("sub", sub));
        }
        if let Some(client) = id
            .client_id
            .as_deref()
            .filter(|v| header_safe(v, 256, false))
        {
            actions.push(str_var("client_id", client));
        }
        let scopes = id.scopes.join(" ");
        if !scopes.is_empty() && header_safe(&scopes, 2048, true) {
            actions.push(Action::set(Scope::Txn, "scopes", TypedData::string(scopes)));
        }
    }
    if let Some(entity) = d.entity().filter(|v| header_safe(v, 512, false)) {
        actions.push(str_var("entity", entity));
    }
    if let Some(owner) = d.owner().filter(|v| header_safe(v, 512, false)) {
        actions.push(str_var("owner", owner));
    }
    if let Some(location) = location {
        actions.push(str_var("location", location));
    }
    if !outage && let Some(www) = www_authenticate(d, realm) {
        actions.push(Action::set(
            Scope::Txn,
            "www_authenticate",
            TypedData::string(www),
        ));
    }
    actions
}

/// Text an attacker or a provider could put in a claim, a ref or a header: visible
/// ASCII, spaces, controls, DEL, non-ASCII, and now and then over a cap.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[!-~]{0,40}",
        2 => "[ -~\t\r\n\u{7f}\u{e9}\u{2028}]{0,40}",
        1 => (250usize..260, any::<bool>()).prop_map(|(n, sp)| {
            let mut s = "a".repeat(n);
            if sp { s.insert(n / 2, ' '); }
            s
        }),
        1 => (505usize..515).prop_map(|n| "e".repeat(n)),
        1 => (8185usize..8200).prop_map(|n| "l".repeat(n)),
        1 => (65_530usize..65_540).prop_map(|n| "c".repeat(n)),
        1 => Just(String::new()),
        1 => Just(" ; \t;".to_string()),
    ]
}

fn scopes() -> impl Strategy<Value = Vec<String>> {
    prop_oneof![
        3 => proptest::collection::vec("[ -~\n\u{e9}]{0,12}", 0..6),
        1 => proptest::collection::vec(Just(String::new()), 0..4),
        // Joined length at and around 2048.
        1 => (1020usize..1030, 1020usize..1030).prop_map(|(a, b)| vec!["a".repeat(a), "b".repeat(b)]),
        1 => (2045usize..2050).prop_map(|n| vec!["s".repeat(n)]),
    ]
}

fn outcome() -> impl Strategy<Value = Outcome> {
    let identity = (
        proptest::option::of(text()),
        proptest::option::of(text()),
        scopes(),
    )
        .prop_map(|(sub, client_id, scopes)| Identity {
            sub,
            client_id,
            scopes,
            ..Identity::default()
        });
    (
        proptest::sample::select(Reason::ALL.to_vec()),
        proptest::option::of(text()),
        proptest::option::of(text()),
        proptest::option::of("[ -~\u{e9}]{0,30}"),
        proptest::option::of(identity),
        any::<bool>(),
        proptest::option::of(text()),
        proptest::option::of(text()),
    )
        .prop_map(
            |(reason, entity, owner, required, identity, shadow, location, cookie)| Outcome {
                decision: Decision::with_names(
                    reason,
                    entity.as_deref(),
                    owner.as_deref(),
                    None,
                    required.as_deref(),
                ),
                identity: identity.map(Arc::new),
                credential_error: None,
                shadow,
                token_fp: None,
                browser: BrowserOutcome { location, cookie },
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Same variables, same order, same types, same bytes as before; the same ACK
    /// frame, and the same refusal at any max-frame-size around its length.
    #[test]
    fn actions_for_is_byte_for_byte_the_old_one(
        o in outcome(),
        realm in "[ -~]{0,20}",
        sid: u64,
        fid: u64,
        slack in -3i64..3,
    ) {
        let new = actions_for(&o, &realm);
        let old = old_actions_for(&o, &realm);
        prop_assert_eq!(new.decode().unwrap(), old.clone());
        let old_bytes: Actions = old.clone().into();
        prop_assert_eq!(new.as_bytes(), old_bytes.as_bytes());

        let frame = Frame::ack(sid, fid, old);
        let exact = frame.encoded_len() as i64;
        let max = u32::try_from((exact + slack).max(0)).unwrap();
        let (mut a, mut b) = (BytesMut::new(), BytesMut::new());
        let ra = encode_ack(sid, fid, &new, &mut a, max);
        let rb = frame.encode(&mut b, max);
        prop_assert_eq!(ra.is_ok(), rb.is_ok());
        prop_assert_eq!(ra.is_ok(), slack >= 0);
        prop_assert_eq!(&a[..], &b[..]);
    }

    /// What HAProxy gets: `cookie_strip` before `allow` whenever there is a cookie,
    /// `allow` exactly once, every value text a header can carry and within its cap.
    #[test]
    fn ack_variables_stay_safe(o in outcome(), realm in "[!-~]{0,20}") {
        let built = actions_for(&o, &realm);
        let acts = built.decode().unwrap();
        let names: Vec<String> = acts.iter().map(|a| match a {
            Action::SetVar { name, .. } | Action::UnsetVar { name, .. } =>
                String::from_utf8(name.to_vec()).unwrap(),
        }).collect();
        let allow_at = names.iter().position(|n| n == "allow").unwrap();
        prop_assert_eq!(names.iter().filter(|n| *n == "allow").count(), 1);
        if o.browser.cookie.is_some() {
            prop_assert_eq!(names[0].as_str(), "cookie_strip");
            prop_assert!(allow_at > 0);
            if names.iter().any(|n| n == "cookie") {
                prop_assert_eq!(names[1].as_str(), "cookie");
                prop_assert_eq!(allow_at, 2);
            } else {
                prop_assert_eq!(allow_at, 1);
            }
        } else {
            prop_assert_eq!(allow_at, 0);
        }
        for a in &acts {
            let Action::SetVar { scope, name, value } = a else {
                return Err(TestCaseError::fail("unset-var in an ACK"));
            };
            prop_assert_eq!(*scope, Scope::Txn);
            let name = std::str::from_utf8(name).unwrap();
            let TypedData::Str(v) = value else { continue };
            let (cap, spaces) = match name {
                "cookie" => {
                    prop_assert!(v.len() <= 65_536);
                    prop_assert!(v.iter().all(|b| *b == b'\t' || (*b >= 0x20 && *b != 0x7f)));
                    continue;
                }
                "sub" | "client_id" => (256, false),
                "scopes" => (2048, true),
                "entity" | "owner" => (512, false),
                "location" => (8192, false),
                "reason" | "error" => (64, false),
                "www_authenticate" => continue,
                other => return Err(TestCaseError::fail(format!("unexpected variable {other}"))),
            };
            prop_assert!(!v.is_empty() && v.len() <= cap, "{name}: {} bytes", v.len());
            prop_assert!(
                v.iter().all(|b| matches!(b, 0x21..=0x7e) || (spaces && *b == b' ')),
                "{name}: {v:?}"
            );
        }
    }

    /// `parse_jws` refuses anything but exactly two dots before it looks further.
    #[test]
    fn jws_needs_exactly_two_dots(s in "[a-zA-Z0-9_\\-.\u{e9}\u{2e}]{1,40}") {
        let dots = s.bytes().filter(|b| *b == b'.').count();
        let r = parse_jws(&s, 8192);
        if dots != 2 || s.starts_with('.') {
            prop_assert_eq!(r.err(), Some(Reason::MalformedToken), "{}", s);
        }
    }
}

/// Tokens with their dots in odd places, multi-byte text around them, and sizes at
/// the cap: typed refusals, never a panic.
#[test]
fn odd_dots_are_malformed() {
    let huge = "a.".repeat(5000);
    for t in [
        ".",
        "..",
        "...",
        "....",
        "a",
        "a.",
        ".a",
        "a.b",
        "a..",
        ".a.",
        "..a",
        "a.b.c.d",
        "\u{e9}.\u{e9}.\u{e9}",
        "\u{e9}..",
        "a.\u{e9}\u{e9}.",
        "a.b.",
        "a.b.c.",
        &huge,
    ] {
        let r = parse_jws(t, 65_536);
        assert_eq!(r.err(), Some(Reason::MalformedToken), "{t:?}");
    }
    assert_eq!(
        parse_jws(&"a".repeat(8193), 8192).err(),
        Some(Reason::TokenTooLarge)
    );
    assert_eq!(parse_jws("", 8192).err(), Some(Reason::MissingToken));
    // A good header and an over-long signature holding a third dot: the dot count
    // must refuse it as malformed (the signature's length alone says bad_signature).
    let h = "eyJhbGciOiJFUzI1NiJ9"; // {"alg":"ES256"}
    let sig = "A".repeat(2000);
    let three = format!("{h}.e30.{sig}.A");
    assert_eq!(
        parse_jws(&three, 65_536).err(),
        Some(Reason::MalformedToken)
    );
    let two = format!("{h}.e30.{sig}");
    assert_eq!(parse_jws(&two, 65_536).err(), Some(Reason::BadSignature));
    let dot_in_payload = format!("{h}.e.30.{}", "A".repeat(86));
    assert_eq!(
        parse_jws(&dot_in_payload, 65_536).err(),
        Some(Reason::MalformedToken)
    );
}

/// An ACK of exactly max-frame-size goes; one byte more is refused and writes nothing.
#[test]
fn ack_at_the_frame_size_limit() {
    let mut acts = Actions::default();
    acts.set(Scope::Txn, "cookie_strip", &TypedData::Bool(true));
    acts.set(
        Scope::Txn,
        "www_authenticate",
        &TypedData::str(&"w".repeat(16_000)),
    );
    acts.set(Scope::Txn, "allow", &TypedData::Bool(true));
    let frame = Frame::ack(u64::MAX, u64::MAX, acts.decode().unwrap());
    let len = frame.encoded_len();
    let mut out = BytesMut::from(&b"keep"[..]);
    assert!(encode_ack(u64::MAX, u64::MAX, &acts, &mut out, len as u32 - 1).is_err());
    assert_eq!(&out[..], b"keep");
    let mut out = BytesMut::new();
    encode_ack(u64::MAX, u64::MAX, &acts, &mut out, len as u32).unwrap();
    assert_eq!(out.len(), 4 + len);
    assert_eq!(
        u32::from_be_bytes(out[..4].try_into().unwrap()) as usize,
        len
    );
    let mut old = BytesMut::new();
    frame.encode(&mut old, len as u32).unwrap();
    assert_eq!(out, old);
}
