//! One golden table of SPOP byte vectors (docs/spop.md#test-vectors, including
//! frames captured from HAProxy 2.6.12 and 3.2.0) drives both decode and encode,
//! plus the truncation and fuzz-like checks.

use std::borrow::Cow;
use std::net::Ipv4Addr;

use bytes::BytesMut;
use stagedoor::spop::frame::{FLAG_FIN, HaproxyHello, read_frame};
use stagedoor::spop::{
    Action, Actions, Arg, Body, DecodeError, Frame, Message, Scope, Status, TypedData, encode_ack,
};

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn kv<'a>(name: &'a str, value: TypedData<'a>) -> Arg<'a> {
    Arg::new(name, value)
}

fn s(v: &str) -> TypedData<'_> {
    TypedData::str(v)
}

fn frame(sid: u64, fid: u64, body: Body<'static>) -> Frame<'static> {
    Frame {
        flags: FLAG_FIN,
        stream_id: sid,
        frame_id: fid,
        body,
    }
}

const ENGINE_ID: &str = "d8a3bc4c-6e1b-4b06-9a05-4ebab2d0a7f2";

/// (label, wire bytes, the frame they are).
fn golden() -> Vec<(&'static str, Vec<u8>, Frame<'static>)> {
    vec![
        (
            "HAPROXY-HELLO 2.6",
            hex(
                "00 00 00 81 01 00 00 00 01 00 00 12 73 75 70 70 6F 72 74 65 64 2D 76 65 72 73 69 6F 6E 73 08 03 32 2E 30 0E 6D 61 78 2D 66 72 61 6D 65 2D 73 69 7A 65 03 FC F0 06 0C 63 61 70 61 62 69 6C 69 74 69 65 73 08 10 70 69 70 65 6C 69 6E 69 6E 67 2C 61 73 79 6E 63 09 65 6E 67 69 6E 65 2D 69 64 08 24 64 38 61 33 62 63 34 63 2D 36 65 31 62 2D 34 62 30 36 2D 39 61 30 35 2D 34 65 62 61 62 32 64 30 61 37 66 32",
            ),
            frame(
                0,
                0,
                Body::HaproxyHello(vec![
                    kv("supported-versions", s("2.0")),
                    kv("max-frame-size", TypedData::Uint32(16380)),
                    kv("capabilities", s("pipelining,async")),
                    kv("engine-id", s(ENGINE_ID)),
                ]),
            ),
        ),
        (
            "HAPROXY-HELLO 3.1+",
            hex(
                "00 00 00 7B 01 00 00 00 01 00 00 12 73 75 70 70 6F 72 74 65 64 2D 76 65 72 73 69 6F 6E 73 08 03 32 2E 30 0E 6D 61 78 2D 66 72 61 6D 65 2D 73 69 7A 65 03 FC F0 06 0C 63 61 70 61 62 69 6C 69 74 69 65 73 08 0A 70 69 70 65 6C 69 6E 69 6E 67 09 65 6E 67 69 6E 65 2D 69 64 08 24 64 38 61 33 62 63 34 63 2D 36 65 31 62 2D 34 62 30 36 2D 39 61 30 35 2D 34 65 62 61 62 32 64 30 61 37 66 32",
            ),
            frame(
                0,
                0,
                Body::HaproxyHello(vec![
                    kv("supported-versions", s("2.0")),
                    kv("max-frame-size", TypedData::Uint32(16380)),
                    kv("capabilities", s("pipelining")),
                    kv("engine-id", s(ENGINE_ID)),
                ]),
            ),
        ),
        (
            "HAPROXY-HELLO healthcheck (2.6 and 3.x)",
            hex(
                "00 00 00 4E 01 00 00 00 01 00 00 12 73 75 70 70 6F 72 74 65 64 2D 76 65 72 73 69 6F 6E 73 08 03 32 2E 30 0E 6D 61 78 2D 66 72 61 6D 65 2D 73 69 7A 65 03 FC F0 06 0C 63 61 70 61 62 69 6C 69 74 69 65 73 08 00 0B 68 65 61 6C 74 68 63 68 65 63 6B 11",
            ),
            frame(
                0,
                0,
                Body::HaproxyHello(vec![
                    kv("supported-versions", s("2.0")),
                    kv("max-frame-size", TypedData::Uint32(16380)),
                    kv("capabilities", s("")),
                    kv("healthcheck", TypedData::Bool(true)),
                ]),
            ),
        ),
        (
            "AGENT-HELLO",
            hex(
                "00 00 00 40 65 00 00 00 01 00 00 07 76 65 72 73 69 6F 6E 08 03 32 2E 30 0E 6D 61 78 2D 66 72 61 6D 65 2D 73 69 7A 65 03 FC F0 06 0C 63 61 70 61 62 69 6C 69 74 69 65 73 08 0A 70 69 70 65 6C 69 6E 69 6E 67",
            ),
            Frame::agent_hello(16380),
        ),
        (
            "NOTIFY sid 5 fid 1 check-client-ip",
            hex(
                "00 00 00 20 03 00 00 00 01 05 01 0F 63 68 65 63 6B 2D 63 6C 69 65 6E 74 2D 69 70 01 02 69 70 06 C0 A8 00 01",
            ),
            frame(
                5,
                1,
                Body::Notify(vec![Message {
                    name: Cow::Borrowed(b"check-client-ip"),
                    args: vec![kv("ip", TypedData::Ipv4(Ipv4Addr::new(192, 168, 0, 1)))],
                }]),
            ),
        ),
        (
            "NOTIFY captured from 2.6.12 (sid 0 fid 1)",
            hex(
                "0000005b030000000100010f636865636b2d636c69656e742d697007026970067f00000104706f727404f2c31a046d6574680803474554047061746808062f68656c6c6f02756108066c61622d7561076e6f7468696e670004626f64790900",
            ),
            frame(
                0,
                1,
                Body::Notify(vec![Message {
                    name: Cow::Borrowed(b"check-client-ip"),
                    args: vec![
                        kv("ip", TypedData::Ipv4(Ipv4Addr::LOCALHOST)),
                        kv("port", TypedData::Int64(56610)),
                        kv("meth", s("GET")),
                        kv("path", s("/hello")),
                        kv("ua", s("lab-ua")),
                        kv("nothing", TypedData::Null),
                        kv("body", TypedData::Bin(Cow::Borrowed(b""))),
                    ],
                }]),
            ),
        ),
        (
            "NOTIFY group, unnamed arg, captured from 2.6.12 (sid 2 fid 2)",
            hex("0000001b030000000102020965787472612d6d7367010008062f6772702f78"),
            frame(
                2,
                2,
                Body::Notify(vec![Message {
                    name: Cow::Borrowed(b"extra-msg"),
                    args: vec![kv("", s("/grp/x"))],
                }]),
            ),
        ),
        (
            "ACK set-var(sess, ip_score, UINT32 75)",
            hex("00 00 00 15 67 00 00 00 01 05 01 01 03 01 08 69 70 5F 73 63 6F 72 65 03 4B"),
            frame(
                5,
                1,
                Body::Ack(vec![Action::set(
                    Scope::Sess,
                    "ip_score",
                    TypedData::Uint32(75),
                )]),
            ),
        ),
        (
            "ACK sid 300 fid 2300 set-var(txn, score, INT32 1000)",
            hex("00 00 00 16 67 00 00 00 01 FC 03 FC 80 00 01 03 02 05 73 63 6F 72 65 02 F8 2F"),
            frame(
                300,
                2300,
                Body::Ack(vec![Action::set(
                    Scope::Txn,
                    "score",
                    TypedData::Int32(1000),
                )]),
            ),
        ),
        (
            "ACK unset-var(txn, score)",
            hex("00 00 00 10 67 00 00 00 01 03 01 02 02 02 05 73 63 6F 72 65"),
            frame(
                3,
                1,
                Body::Ack(vec![Action::UnsetVar {
                    scope: Scope::Txn,
                    name: Cow::Borrowed(b"score"),
                }]),
            ),
        ),
        (
            "empty ACK",
            hex("00 00 00 07 67 00 00 00 01 01 01"),
            frame(1, 1, Body::Ack(vec![])),
        ),
        (
            "AGENT-DISCONNECT 0 normal",
            hex(
                "00 00 00 25 66 00 00 00 01 00 00 0B 73 74 61 74 75 73 2D 63 6F 64 65 03 00 07 6D 65 73 73 61 67 65 08 06 6E 6F 72 6D 61 6C",
            ),
            Frame::agent_disconnect(Status::Normal),
        ),
        (
            "HAPROXY-DISCONNECT 2 timeout (captured idle close, 2.6.12)",
            hex(
                "00000031020000000100000b7374617475732d636f64650302076d6573736167650812612074696d656f7574206f63637572726564",
            ),
            frame(
                0,
                0,
                Body::HaproxyDisconnect(vec![
                    kv("status-code", TypedData::Uint32(2)),
                    kv("message", s("a timeout occurred")),
                ]),
            ),
        ),
        (
            "HAPROXY-DISCONNECT 10 fragmentation (captured, 2.6.12)",
            hex(
                "0000003a020000000100000b7374617475732d636f6465030a076d657373616765081b667261676d656e746174696f6e206e6f7420737570706f72746564",
            ),
            frame(
                0,
                0,
                Body::HaproxyDisconnect(vec![
                    kv("status-code", TypedData::Uint32(10)),
                    kv("message", s("fragmentation not supported")),
                ]),
            ),
        ),
    ]
}

#[test]
fn golden_frames_decode() {
    for (label, bytes, want) in golden() {
        let total = read_frame(&bytes, 65_535).unwrap().expect(label);
        assert_eq!(total, bytes.len(), "{label}: length prefix");
        let got = Frame::decode(&bytes[4..]).unwrap_or_else(|e| panic!("{label}: {e}"));
        assert_eq!(got, want, "{label}");
    }
}

#[test]
fn golden_frames_encode() {
    for (label, bytes, frame) in golden() {
        let mut out = BytesMut::new();
        frame.encode(&mut out, 65_535).unwrap();
        assert_eq!(&out[..], &bytes[..], "{label}");
        assert_eq!(frame.encoded_len() + 4, bytes.len(), "{label}: encoded_len");
    }
}

#[test]
fn every_truncated_prefix_needs_more_bytes() {
    for (label, bytes, _) in golden() {
        for cut in 0..bytes.len() {
            assert_eq!(
                read_frame(&bytes[..cut], 65_535),
                Ok(None),
                "{label} cut at {cut}"
            );
        }
    }
}

#[test]
fn every_truncated_body_is_a_clean_error() {
    // The body cut short under a length prefix that agrees with it: decode must
    // fail cleanly (or, where the cut falls between items, yield fewer items).
    for (label, bytes, want) in golden() {
        let body = &bytes[4..];
        for cut in 0..body.len() {
            match Frame::decode(&body[..cut]) {
                Err(_) => {}
                Ok(f) => assert_ne!(f, want, "{label}: cut at {cut} decoded to the whole frame"),
            }
        }
    }
}

#[test]
fn golden_prefix_limits() {
    let (_, hello, _) = &golden()[0];
    assert_eq!(
        read_frame(hello, 100),
        Err(DecodeError::FrameTooBig { len: 129, max: 100 })
    );
    assert_eq!(
        read_frame(&[0, 0, 0, 0], 65_535),
        Err(DecodeError::FrameTooShort(0))
    );
    assert_eq!(
        read_frame(&[0, 0, 0, 6, 3], 65_535),
        Err(DecodeError::FrameTooShort(6))
    );
    // The production panic value from haproxy-go's tests: rejected before allocating.
    assert_eq!(
        read_frame(&369_295_622u32.to_be_bytes(), 16_380),
        Err(DecodeError::FrameTooBig {
            len: 369_295_622,
            max: 16_380
        })
    );
}

#[test]
fn malformed_frames_map_to_status_codes() {
    let cases: Vec<(&str, Vec<u8>, DecodeError, Status)> = vec![
        (
            "unknown type",
            hex("09 00 00 00 01 00 00"),
            DecodeError::UnknownFrameType(9),
            Status::Invalid,
        ),
        (
            "no FIN",
            hex("03 00 00 00 00 01 01"),
            DecodeError::Fragmented,
            Status::FragmentationNotSupported,
        ),
        (
            "UNSET continuation",
            hex("00 00 00 00 01 01 01"),
            DecodeError::Fragmented,
            Status::FragmentationNotSupported,
        ),
        (
            "11-byte stream-id",
            hex("03 00 00 00 01 FF FE FE FE FE FE FE FE FE FE FE 01"),
            DecodeError::VarintTooLong,
            Status::Invalid,
        ),
        (
            "unknown action",
            hex("67 00 00 00 01 01 01 07 00"),
            DecodeError::UnknownActionType(7),
            Status::Invalid,
        ),
        (
            "bad scope",
            hex("67 00 00 00 01 01 01 02 02 09 01 61"),
            DecodeError::UnknownScope(9),
            Status::Invalid,
        ),
        (
            "set-var with 2 args",
            hex("67 00 00 00 01 01 01 01 02 02 01 61"),
            DecodeError::BadActionArgs {
                kind: 1,
                nb_args: 2,
            },
            Status::Invalid,
        ),
        (
            "message claims 2 args, has 1",
            hex("03 00 00 00 01 01 01 01 6D 02 01 61 00"),
            DecodeError::Truncated("varint"),
            Status::Invalid,
        ),
    ];
    for (label, body, err, status) in cases {
        assert_eq!(Frame::decode(&body), Err(err.clone()), "{label}");
        assert_eq!(err.status(), status, "{label}");
    }
}

#[test]
fn hello_handshake_rules() {
    let hello = |items: Vec<Arg<'static>>| HaproxyHello::parse(&items);
    let ok = hello(vec![
        kv("supported-versions", s("1.0, 2.0")),
        kv("max-frame-size", TypedData::Uint32(16380)),
        kv("capabilities", s("pipelining,async")),
    ])
    .unwrap();
    assert_eq!(ok.max_frame_size, 16380);
    assert!(!ok.healthcheck);
    assert_eq!(ok.negotiate(65_532), 16380);
    assert_eq!(ok.negotiate(1024), 1024);
    assert_eq!(ok.negotiate(10), 256, "never below 256");

    assert_eq!(
        hello(vec![kv("max-frame-size", TypedData::Uint32(16380))]),
        Err(Status::NoVersion)
    );
    assert_eq!(
        hello(vec![
            kv("supported-versions", s("1.0")),
            kv("max-frame-size", TypedData::Uint32(16380))
        ]),
        Err(Status::UnsupportedVersion)
    );
    assert_eq!(
        hello(vec![kv("supported-versions", s("2.0"))]),
        Err(Status::NoFrameSize)
    );
    assert_eq!(
        hello(vec![
            kv("supported-versions", s("2.0")),
            kv("max-frame-size", TypedData::Uint32(255))
        ]),
        Err(Status::BadFrameSize)
    );
    // Any integer type is accepted for max-frame-size, as HAProxy does.
    let hc = hello(vec![
        kv("supported-versions", s("2.0")),
        kv("max-frame-size", TypedData::Int64(16380)),
        kv("healthcheck", TypedData::Bool(true)),
    ])
    .unwrap();
    assert!(hc.healthcheck);
}

#[test]
fn encode_refuses_frames_over_the_limit() {
    let big = Frame::ack(
        1,
        1,
        vec![Action::set(
            Scope::Txn,
            "x",
            TypedData::string("a".repeat(300)),
        )],
    );
    let mut out = BytesMut::new();
    assert!(big.encode(&mut out, 256).is_err());
    assert!(out.is_empty(), "nothing written");
    big.encode(&mut out, 16380).unwrap();
    assert_eq!(out.len(), big.encoded_len() + 4);
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    fn arb_data() -> impl Strategy<Value = TypedData<'static>> {
        prop_oneof![
            Just(TypedData::Null),
            any::<bool>().prop_map(TypedData::Bool),
            any::<i32>().prop_map(TypedData::Int32),
            any::<u32>().prop_map(TypedData::Uint32),
            any::<i64>().prop_map(TypedData::Int64),
            any::<u64>().prop_map(TypedData::Uint64),
            any::<[u8; 4]>().prop_map(|b| TypedData::Ipv4(b.into())),
            any::<[u8; 16]>().prop_map(|b| TypedData::Ipv6(b.into())),
            proptest::collection::vec(any::<u8>(), 0..40)
                .prop_map(|b| TypedData::Str(Cow::Owned(b))),
            proptest::collection::vec(any::<u8>(), 0..40)
                .prop_map(|b| TypedData::Bin(Cow::Owned(b))),
        ]
    }

    fn arb_name() -> impl Strategy<Value = Cow<'static, [u8]>> {
        proptest::collection::vec(any::<u8>(), 0..20).prop_map(Cow::Owned)
    }

    fn arb_args() -> impl Strategy<Value = Vec<Arg<'static>>> {
        proptest::collection::vec(
            (arb_name(), arb_data()).prop_map(|(name, value)| Arg { name, value }),
            0..8,
        )
    }

    fn arb_scope() -> impl Strategy<Value = Scope> {
        prop_oneof![
            Just(Scope::Proc),
            Just(Scope::Sess),
            Just(Scope::Txn),
            Just(Scope::Req),
            Just(Scope::Res)
        ]
    }

    fn arb_action() -> impl Strategy<Value = Action<'static>> {
        prop_oneof![
            (arb_scope(), arb_name(), arb_data()).prop_map(|(scope, name, value)| Action::SetVar {
                scope,
                name,
                value
            }),
            (arb_scope(), arb_name()).prop_map(|(scope, name)| Action::UnsetVar { scope, name }),
        ]
    }

    fn arb_body() -> impl Strategy<Value = Body<'static>> {
        prop_oneof![
            arb_args().prop_map(Body::HaproxyHello),
            arb_args().prop_map(Body::HaproxyDisconnect),
            arb_args().prop_map(Body::AgentHello),
            arb_args().prop_map(Body::AgentDisconnect),
            proptest::collection::vec(
                (arb_name(), arb_args()).prop_map(|(name, args)| Message { name, args }),
                0..4
            )
            .prop_map(Body::Notify),
            proptest::collection::vec(arb_action(), 0..8).prop_map(Body::Ack),
        ]
    }

    proptest! {
        #[test]
        fn whole_frames_round_trip(sid: u64, fid: u64, body in arb_body()) {
            let f = Frame { flags: FLAG_FIN, stream_id: sid, frame_id: fid, body };
            let mut out = BytesMut::new();
            f.encode(&mut out, u32::MAX).unwrap();
            let total = read_frame(&out, u32::MAX).unwrap().unwrap();
            prop_assert_eq!(total, out.len());
            prop_assert_eq!(Frame::decode(&out[4..]).unwrap(), f);
        }

        /// An ACK built as it is encoded ([`Actions`], the agent's way) is the same
        /// bytes as the `Frame` of those actions, within the same size limit.
        #[test]
        fn actions_encode_as_the_ack_frame_does(
            sid: u64,
            fid: u64,
            actions in proptest::collection::vec(arb_action(), 0..8),
            max in 0u32..400,
        ) {
            let built: Actions = actions.clone().into();
            prop_assert_eq!(built.decode().unwrap(), actions.clone());
            let frame = Frame::ack(sid, fid, actions);
            let (mut a, mut b) = (BytesMut::new(), BytesMut::new());
            let ra = encode_ack(sid, fid, &built, &mut a, max).is_ok();
            let rb = frame.encode(&mut b, max).is_ok();
            prop_assert_eq!(ra, rb);
            prop_assert_eq!(&a[..], &b[..]);
        }

        /// `set_joined` writes the STRING of the words joined by one space.
        #[test]
        fn joined_words_are_one_string(words in proptest::collection::vec("[ -~]{0,12}", 0..6)) {
            let mut joined = Actions::default();
            joined.set_joined(Scope::Txn, "scopes", &words);
            let mut whole = Actions::default();
            whole.set(Scope::Txn, "scopes", &TypedData::string(words.join(" ")));
            prop_assert_eq!(joined, whole);
        }

        #[test]
        fn arbitrary_bytes_never_panic(b: Vec<u8>) {
            let _ = read_frame(&b, 65_535);
            let _ = Frame::decode(&b);
        }
    }
}
