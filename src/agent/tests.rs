//! Unit tests of the agent: arguments, decisions, actions (the ACK's variables).
use super::*;
use crate::spop::Arg;

fn msg(args: Vec<Arg<'static>>) -> Message<'static> {
    Message {
        name: b"authorize".as_slice().into(),
        args,
    }
}

fn base() -> Vec<Arg<'static>> {
    vec![
        Arg::new("method", TypedData::str("GET")),
        Arg::new("path", TypedData::str("/a")),
        Arg::new("host", TypedData::str("h")),
        Arg::new("authorization", TypedData::str("Bearer abc.def.ghi")),
    ]
}

#[test]
fn bearer_scheme_is_case_insensitive_and_strict() {
    assert_eq!(bearer("Bearer abc"), Some("abc"));
    assert_eq!(bearer("bEaReR   abc  "), Some("abc"));
    assert_eq!(bearer("Basic abc"), None);
    assert_eq!(bearer("Bearer"), None);
    assert_eq!(bearer("Bearer "), None);
    assert_eq!(bearer("Bearer a b"), None);
    assert_eq!(bearer("Bearerabc"), None);
    assert_eq!(bearer("Bearer a\tb"), None);
    // A blank anywhere in a long token (the scan's vector loop and its tail), and
    // multi-byte characters, which hold no ASCII byte.
    let long = "x".repeat(1000);
    assert_eq!(bearer(&format!("Bearer {long}")), Some(long.as_str()));
    for at in [0, 1, 15, 16, 31, 32, 63, 64, 500, 998, 999] {
        for blank in [' ', '\t'] {
            let mut t = long.clone().into_bytes();
            t[at] = blank as u8;
            let t = String::from_utf8(t).unwrap();
            let header = format!("Bearer {t}");
            let got = bearer(&header);
            // At either end the blank is trimmed away with the header's own.
            let trimmed = t.trim();
            let want = (!trimmed.contains([' ', '\t'])).then_some(trimmed);
            assert_eq!(got, want, "blank at {at}");
        }
    }
    let wide = format!("{}é€y", "y".repeat(100));
    assert_eq!(bearer(&format!("Bearer {wide}")), Some(wide.as_str()));
}

#[test]
fn arguments_are_typed_and_required() {
    let m = msg(base());
    let r = AuthRequest::from_message(&m).unwrap();
    assert_eq!(
        (r.method, r.path, r.host, r.token),
        ("GET", "/a", "h", Some("abc.def.ghi"))
    );

    let mut a = base();
    a.remove(0);
    assert_eq!(
        AuthRequest::from_message(&msg(a)),
        Err(ArgError::Missing("method"))
    );
    let mut a = base();
    a[1] = Arg::new("path", TypedData::Int64(1));
    assert_eq!(
        AuthRequest::from_message(&msg(a)),
        Err(ArgError::WrongType("path"))
    );
    let mut a = base();
    a[1] = Arg::new("path", TypedData::Null);
    assert_eq!(
        AuthRequest::from_message(&msg(a)),
        Err(ArgError::WrongType("path"))
    );
    let mut a = base();
    a.remove(3);
    assert_eq!(
        AuthRequest::from_message(&msg(a)),
        Err(ArgError::Missing("authorization"))
    );
    // NULL host and authorization are absent headers, not errors.
    let mut a = base();
    a[2] = Arg::new("host", TypedData::Null);
    a[3] = Arg::new("authorization", TypedData::Null);
    a.push(Arg::new("token", TypedData::str("from.cookie.x")));
    let m = msg(a);
    let r = AuthRequest::from_message(&m).unwrap();
    assert_eq!((r.host, r.token), ("", Some("from.cookie.x")));
    // The header wins over the `token` argument; another scheme is no token.
    let mut a = base();
    a[3] = Arg::new("authorization", TypedData::str("Basic dXNlcg=="));
    a.push(Arg::new("token", TypedData::str("from.cookie.x")));
    let m = msg(a);
    assert_eq!(AuthRequest::from_message(&m).unwrap().token, None);
    let mut a = base();
    a.push(Arg::new("authorization_count", TypedData::Int64(2)));
    assert_eq!(
        AuthRequest::from_message(&msg(a)),
        Err(ArgError::MultipleAuthorization(2))
    );
}

#[test]
fn unsafe_identity_values_never_become_variables() {
    let id = Identity {
        issuer: "i".into(),
        sub: Some("alice\r\nX-Auth-Entity: admin".into()),
        client_id: Some("c".repeat(300)),
        scopes: vec!["read".into(), "wr\tite".into()],
        ..Identity::default()
    };
    let out = Outcome {
        decision: Decision::bare(Reason::Ok),
        identity: Some(Arc::new(id)),
        credential_error: None,
        shadow: false,
        token_fp: None,
        browser: Default::default(),
    };
    let acts = actions_of(&out, "r");
    for name in ["sub", "client_id", "scopes"] {
        assert!(
            !acts.iter().any(
                |a| matches!(a, Action::SetVar { name: n, .. } if n.as_ref() == name.as_bytes())
            ),
            "{name} must be left out"
        );
    }
    assert!(header_safe("00u1abc", 256, false));
    assert!(header_safe("read write", 256, true));
    assert!(!header_safe("read write", 256, false));
    assert!(!header_safe("", 256, false));
}

#[test]
fn outages_are_errors_not_verdicts() {
    for r in [
        Reason::KeysUnavailable,
        Reason::PolicyUnavailable,
        Reason::InternalError,
    ] {
        let acts = actions_of(
            &Outcome {
                decision: Decision::bare(r),
                identity: None,
                credential_error: None,
                shadow: false,
                token_fp: None,
                browser: Default::default(),
            },
            "r",
        );
        assert!(
            acts.contains(&Action::set(
                Scope::Txn,
                "error",
                TypedData::str(r.as_str())
            )),
            "{r}"
        );
        assert!(
            !acts.iter().any(
                |a| matches!(a, Action::SetVar { name, .. } if name.as_ref() == b"www_authenticate")
            ),
            "{r}"
        );
        // Shadow mode lets traffic through even then.
        let acts = actions_of(
            &Outcome {
                decision: Decision::bare(r),
                identity: None,
                credential_error: None,
                shadow: true,
                token_fp: None,
                browser: Default::default(),
            },
            "r",
        );
        assert!(
            !acts
                .iter()
                .any(|a| matches!(a, Action::SetVar { name, .. } if name.as_ref() == b"error")),
            "{r}"
        );
    }
}

#[test]
fn actions_carry_identity_only_when_verified() {
    let d = Decision::bare(Reason::Expired);
    let out = Outcome {
        decision: d,
        identity: None,
        credential_error: None,
        shadow: false,
        token_fp: None,
        browser: Default::default(),
    };
    let acts = actions_of(&out, "r");
    let names: Vec<_> = acts
        .iter()
        .map(|a| match a {
            Action::SetVar { name, .. } => String::from_utf8_lossy(name).into_owned(),
            Action::UnsetVar { .. } => unreachable!(),
        })
        .collect();
    assert_eq!(names, ["allow", "status", "reason", "www_authenticate"]);
    assert!(acts.contains(&Action::set(Scope::Txn, "allow", TypedData::Bool(false))));
    assert!(acts.contains(&Action::set(
        Scope::Txn,
        "www_authenticate",
        TypedData::string(
            "Bearer realm=\"r\", error=\"invalid_token\", error_description=\"expired\"".into()
        )
    )));
    // Every variable name fits HAProxy's limits with the default prefix.
    for n in &names {
        assert!(
            n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
        );
        assert!(format!("txn.stagedoor.{n}").len() <= 63);
    }
    // Shadow: allow is true, the real outcome stays visible.
    let d = Decision::bare(Reason::NoRoute);
    let acts = actions_of(
        &Outcome {
            decision: d,
            identity: None,
            credential_error: None,
            shadow: true,
            token_fp: None,
            browser: Default::default(),
        },
        "r",
    );
    assert!(acts.contains(&Action::set(Scope::Txn, "allow", TypedData::Bool(true))));
    assert!(acts.contains(&Action::set(
        Scope::Txn,
        "shadow_deny",
        TypedData::Bool(true)
    )));
    assert!(acts.contains(&Action::set(Scope::Txn, "status", TypedData::Int64(403))));
    assert!(acts.contains(&Action::set(
        Scope::Txn,
        "reason",
        TypedData::str("no_route")
    )));
}

/// [`actions_for`]'s variables, read back as values.
fn actions_of(outcome: &Outcome, realm: &str) -> Vec<Action<'static>> {
    let actions = actions_for(outcome, realm);
    let decoded = actions.decode().unwrap();
    decoded.into_iter().map(Action::into_owned).collect()
}

#[test]
fn joined_scopes_are_checked_as_the_joined_string_would_be() {
    let long = "s".repeat(2048);
    let cases: Vec<Vec<String>> = vec![
        vec![],
        vec![String::new()],
        vec![String::new(), String::new()],
        vec!["read".into(), "write".into()],
        vec!["re\nad".into()],
        vec!["caf\u{e9}".into()],
        vec![long.clone()],
        vec![long, "x".into()],
        vec!["a".repeat(1023), "b".repeat(1024)],
        vec!["a".repeat(1024), "b".repeat(1024)],
    ];
    for words in cases {
        assert_eq!(
            joined_header_safe(&words, 2048),
            header_safe(&words.join(" "), 2048, true),
            "{words:?}"
        );
    }
}

/// memchr2's blank check against the fold it replaced, on random headers of blanks,
/// letters, multi-byte chars and controls, at every length up to 200.
#[test]
fn bearer_answers_as_the_fold_it_replaced() {
    fn old(header: &str) -> Option<&str> {
        let header = header.trim();
        let (scheme, rest) = header.split_once([' ', '\t'])?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let token = rest.trim();
        let blank = token
            .bytes()
            .fold(false, |seen, b| seen | (b == b' ') | (b == b'\t'));
        (!token.is_empty() && !blank).then_some(token)
    }
    let alphabet = [
        " ", "\t", "x", "é", "€", "😀", "\u{a0}", "\u{2028}", "\r", "\n", "\u{b}", "\u{c}",
        "\u{3000}",
    ];
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..50_000 {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        let n = (s % 200) as usize;
        let mut h = String::from(if s & 1 == 0 {
            "Bearer "
        } else {
            "\u{2028}bEaReR\t "
        });
        let mut t = s;
        for _ in 0..n {
            t ^= t << 13;
            t ^= t >> 7;
            t ^= t << 17;
            h.push_str(alphabet[(t % alphabet.len() as u64) as usize]);
        }
        assert_eq!(bearer(&h), old(&h), "{h:?}");
    }
}
