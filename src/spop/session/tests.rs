//! The session rules as one table: inputs (bytes read, socket and timer events) →
//! outputs (AGENT-HELLO, NOTIFYs to run, the close). No sockets: the socket tests in
//! tests/spop_server.rs keep only the cases that need I/O or concurrency.

use std::io::ErrorKind;

use super::*;
use crate::spop::data::kv_get;
use crate::spop::{Body, TypedData};

/// One input to the session.
#[derive(Debug, Clone, Copy)]
enum In {
    /// One read from the socket: these frames (hex), back to back.
    Read(&'static [&'static str]),
    /// The same bytes, one byte per read.
    Trickle(&'static str),
    PeerClosed,
    ReadFailed(ErrorKind),
    TimedOut,
    Shutdown,
    NotifyInvalid,
}

/// One output of the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Out {
    /// AGENT-HELLO announcing this max-frame-size.
    Hello(u32),
    /// A NOTIFY to run: stream-id, frame-id, whether its messages decode.
    Notify(u64, u64, bool),
    Close(Close),
}

use In::*;
use Out::{Close as Closes, Hello, Notify as Runs};

const C: u32 = 16_380;
const INVALID: Out = Closes(Close::Error(Status::Invalid));
const TOO_BIG: Out = Closes(Close::Error(Status::TooBig));
const FRAGMENTED: Out = Closes(Close::Error(Status::FragmentationNotSupported));
const TIMEOUT: Out = Closes(Close::Error(Status::Timeout));

// Frames as HAProxy sends them (docs/spop.md#test-vectors): captured from 2.6.12
// and 3.2.0, or built by HAProxy's encoding rules.
const HELLO_26: &str = "00 00 00 81 01 00 00 00 01 00 00 12 73 75 70 70 6F 72 74 65 64 2D 76 65 72 73 69 6F 6E 73 08 03 32 2E 30 0E 6D 61 78 2D 66 72 61 6D 65 2D 73 69 7A 65 03 FC F0 06 0C 63 61 70 61 62 69 6C 69 74 69 65 73 08 10 70 69 70 65 6C 69 6E 69 6E 67 2C 61 73 79 6E 63 09 65 6E 67 69 6E 65 2D 69 64 08 24 64 38 61 33 62 63 34 63 2D 36 65 31 62 2D 34 62 30 36 2D 39 61 30 35 2D 34 65 62 61 62 32 64 30 61 37 66 32";
const HELLO_31: &str = "00 00 00 7B 01 00 00 00 01 00 00 12 73 75 70 70 6F 72 74 65 64 2D 76 65 72 73 69 6F 6E 73 08 03 32 2E 30 0E 6D 61 78 2D 66 72 61 6D 65 2D 73 69 7A 65 03 FC F0 06 0C 63 61 70 61 62 69 6C 69 74 69 65 73 08 0A 70 69 70 65 6C 69 6E 69 6E 67 09 65 6E 67 69 6E 65 2D 69 64 08 24 64 38 61 33 62 63 34 63 2D 36 65 31 62 2D 34 62 30 36 2D 39 61 30 35 2D 34 65 62 61 62 32 64 30 61 37 66 32";
const HEALTHCHECK: &str = "00 00 00 4E 01 00 00 00 01 00 00 12 73 75 70 70 6F 72 74 65 64 2D 76 65 72 73 69 6F 6E 73 08 03 32 2E 30 0E 6D 61 78 2D 66 72 61 6D 65 2D 73 69 7A 65 03 FC F0 06 0C 63 61 70 61 62 69 6C 69 74 69 65 73 08 00 0B 68 65 61 6C 74 68 63 68 65 63 6B 11";
/// sid 5, fid 1, "check-client-ip" with ip=192.168.0.1.
const NOTIFY_5_1: &str = "00 00 00 20 03 00 00 00 01 05 01 0F 63 68 65 63 6B 2D 63 6C 69 65 6E 74 2D 69 70 01 02 69 70 06 C0 A8 00 01";
/// Captured from 2.6.12: sid 0 (a 2.6 stream uniq_id), fid 1, seven args.
const NOTIFY_0_1: &str = "0000005b030000000100010f636865636b2d636c69656e742d697007026970067f00000104706f727404f2c31a046d6574680803474554047061746808062f68656c6c6f02756108066c61622d7561076e6f7468696e670004626f64790900";
/// Captured from 2.6.12: sid 2, fid 2 (a group on the same stream), one unnamed arg.
const NOTIFY_2_2: &str = "0000001b030000000102020965787472612d6d7367010008062f6772702f78";
/// A NOTIFY with no messages at all.
const NOTIFY_EMPTY: &str = "00 00 00 07 03 00 00 00 01 01 01";
/// sid 1 fid 1, a message named "e" cut short under a consistent length.
const NOTIFY_TRUNCATED: &str = "00 00 00 09 03 00 00 00 01 01 01 04 65";
/// HAPROXY-DISCONNECT, status 2 "a timeout occurred" (the 2.6 idle close).
const HAPROXY_DISCONNECT: &str = "00 00 00 31 02 00 00 00 01 00 00 0B 73 74 61 74 75 73 2D 63 6F 64 65 03 02 07 6D 65 73 73 61 67 65 08 12 61 20 74 69 6D 65 6F 75 74 20 6F 63 63 75 72 72 65 64";
const AGENT_HELLO: &str = "00 00 00 40 65 00 00 00 01 00 00 07 76 65 72 73 69 6F 6E 08 03 32 2E 30 0E 6D 61 78 2D 66 72 61 6D 65 2D 73 69 7A 65 03 FC F0 06 0C 63 61 70 61 62 69 6C 69 74 69 65 73 08 0A 70 69 70 65 6C 69 6E 69 6E 67";
const ACK_EMPTY: &str = "00 00 00 07 67 00 00 00 01 01 01";
const UNKNOWN_TYPE_9: &str = "00 00 00 07 09 00 00 00 01 01 01";
/// A NOTIFY without FIN: the first fragment of a 2.6 fragmented frame.
const NOTIFY_NO_FIN: &str = "00 00 00 07 03 00 00 00 00 01 01";
/// Type 0 (UNSET): a 2.6 continuation fragment, with FIN and with FIN|ABORT.
const CONTINUATION: &str = "00 00 00 07 00 00 00 00 01 01 01";
const CONTINUATION_ABORT: &str = "00 00 00 07 00 00 00 00 03 01 01";
/// A NOTIFY whose stream-id is an 11-byte varint.
const VARINT_11: &str = "00 00 00 11 03 00 00 00 01 FF FE FE FE FE FE FE FE FE FE FE 01";
const LEN_0: &str = "00 00 00 00";
const LEN_6: &str = "00 00 00 06";
/// Length prefixes only: one over the negotiated 16 380, one over the 4 096 before
/// HELLO, 4 096 itself (waits for the rest), and 1 025 (over a 1 024 ceiling).
const LEN_16381: &str = "00 00 3F FD";
const LEN_4097: &str = "00 00 10 01";
const LEN_4096: &str = "00 00 10 00";
const LEN_1025: &str = "00 00 04 01";
// HELLO variants (supported-versions, max-frame-size), built by HAProxy's encoding.
const HELLO_NO_VERSION: &str =
    "00 00 00 1A 01 00 00 00 01 00 00 0E 6D 61 78 2D 66 72 61 6D 65 2D 73 69 7A 65 03 FC F0 06";
const HELLO_V1: &str = "00 00 00 32 01 00 00 00 01 00 00 12 73 75 70 70 6F 72 74 65 64 2D 76 65 72 73 69 6F 6E 73 08 03 31 2E 30 0E 6D 61 78 2D 66 72 61 6D 65 2D 73 69 7A 65 03 FC F0 06";
/// supported-versions "1.0, 2.0".
const HELLO_V1_V2: &str = "00 00 00 37 01 00 00 00 01 00 00 12 73 75 70 70 6F 72 74 65 64 2D 76 65 72 73 69 6F 6E 73 08 08 31 2E 30 2C 20 32 2E 30 0E 6D 61 78 2D 66 72 61 6D 65 2D 73 69 7A 65 03 FC F0 06";
const HELLO_NO_SIZE: &str = "00 00 00 1F 01 00 00 00 01 00 00 12 73 75 70 70 6F 72 74 65 64 2D 76 65 72 73 69 6F 6E 73 08 03 32 2E 30";
const HELLO_SIZE_255: &str = "00 00 00 31 01 00 00 00 01 00 00 12 73 75 70 70 6F 72 74 65 64 2D 76 65 72 73 69 6F 6E 73 08 03 32 2E 30 0E 6D 61 78 2D 66 72 61 6D 65 2D 73 69 7A 65 03 FF 00";
const HELLO_SIZE_1024: &str = "00 00 00 31 01 00 00 00 01 00 00 12 73 75 70 70 6F 72 74 65 64 2D 76 65 72 73 69 6F 6E 73 08 03 32 2E 30 0E 6D 61 78 2D 66 72 61 6D 65 2D 73 69 7A 65 03 F0 31";
/// max-frame-size 65 532 as INT64 (any integer type is accepted, as HAProxy does).
const HELLO_SIZE_I64: &str = "00 00 00 32 01 00 00 00 01 00 00 12 73 75 70 70 6F 72 74 65 64 2D 76 65 72 73 69 6F 6E 73 08 03 32 2E 30 0E 6D 61 78 2D 66 72 61 6D 65 2D 73 69 7A 65 04 FC F0 1E";
/// max-frame-size -1 as INT64.
const HELLO_SIZE_NEG: &str = "00 00 00 39 01 00 00 00 01 00 00 12 73 75 70 70 6F 72 74 65 64 2D 76 65 72 73 69 6F 6E 73 08 03 32 2E 30 0E 6D 61 78 2D 66 72 61 6D 65 2D 73 69 7A 65 04 FF F0 FE FE FE FE FE FE FE 0E";
/// max-frame-size as the string "16380".
const HELLO_SIZE_STR: &str = "00 00 00 35 01 00 00 00 01 00 00 12 73 75 70 70 6F 72 74 65 64 2D 76 65 72 73 69 6F 6E 73 08 03 32 2E 30 0E 6D 61 78 2D 66 72 61 6D 65 2D 73 69 7A 65 08 05 31 36 33 38 30";
const HELLO_NO_FIN: &str = "00 00 00 32 01 00 00 00 00 00 00 12 73 75 70 70 6F 72 74 65 64 2D 76 65 72 73 69 6F 6E 73 08 03 32 2E 30 0E 6D 61 78 2D 66 72 61 6D 65 2D 73 69 7A 65 03 FC F0 06";
/// A HELLO whose KV-list ends inside a typed value.
const HELLO_TRUNCATED_KV: &str = "00 00 00 0A 01 00 00 00 01 00 00 01 61 08";

/// (label, max-frame-size ceiling, inputs, expected outputs).
#[rustfmt::skip]
const CASES: &[(&str, u32, &[In], &[Out])] = &[
    // The handshake.
    ("2.6 HELLO",                       C,     &[Read(&[HELLO_26])],               &[Hello(C)]),
    ("3.1+ HELLO",                      C,     &[Read(&[HELLO_31])],               &[Hello(C)]),
    ("HELLO one byte per read",         C,     &[Trickle(HELLO_26)],               &[Hello(C)]),
    ("ceiling below HAProxy's value",   1024,  &[Read(&[HELLO_26])],               &[Hello(1024)]),
    ("HAProxy's value below ceiling",   C,     &[Read(&[HELLO_SIZE_1024])],        &[Hello(1024)]),
    ("ceiling never below 256",         10,    &[Read(&[HELLO_26])],               &[Hello(256)]),
    ("max-frame-size as INT64",         65_532,&[Read(&[HELLO_SIZE_I64])],         &[Hello(65_532)]),
    ("versions \"1.0, 2.0\"",           C,     &[Read(&[HELLO_V1_V2])],            &[Hello(C)]),
    ("health check",                    C,     &[Read(&[HEALTHCHECK])],            &[Hello(C), Closes(Close::Healthcheck)]),
    ("health check, then a NOTIFY",     C,     &[Read(&[HEALTHCHECK, NOTIFY_5_1])],&[Hello(C), Closes(Close::Healthcheck)]),
    // HELLO checks: the DISCONNECT status says which.
    ("no supported-versions",           C,     &[Read(&[HELLO_NO_VERSION])],       &[Closes(Close::Error(Status::NoVersion))]),
    ("version 1.0 only",                C,     &[Read(&[HELLO_V1])],               &[Closes(Close::Error(Status::UnsupportedVersion))]),
    ("no max-frame-size",               C,     &[Read(&[HELLO_NO_SIZE])],          &[Closes(Close::Error(Status::NoFrameSize))]),
    ("max-frame-size as a string",      C,     &[Read(&[HELLO_SIZE_STR])],         &[Closes(Close::Error(Status::NoFrameSize))]),
    ("max-frame-size 255",              C,     &[Read(&[HELLO_SIZE_255])],         &[Closes(Close::Error(Status::BadFrameSize))]),
    ("max-frame-size -1",               C,     &[Read(&[HELLO_SIZE_NEG])],         &[Closes(Close::Error(Status::BadFrameSize))]),
    ("HELLO without FIN",               C,     &[Read(&[HELLO_NO_FIN])],           &[FRAGMENTED]),
    ("HELLO with a cut KV-list",        C,     &[Read(&[HELLO_TRUNCATED_KV])],     &[INVALID]),
    // Anything but HELLO first.
    ("NOTIFY before HELLO",             C,     &[Read(&[NOTIFY_5_1])],             &[INVALID]),
    ("DISCONNECT before HELLO",         C,     &[Read(&[HAPROXY_DISCONNECT])],     &[INVALID]),
    ("agent frame before HELLO",        C,     &[Read(&[AGENT_HELLO])],            &[INVALID]),
    ("fragment before HELLO",           C,     &[Read(&[NOTIFY_NO_FIN])],          &[FRAGMENTED]),
    ("unknown type before HELLO",       C,     &[Read(&[UNKNOWN_TYPE_9])],         &[INVALID]),
    // Frame sizes: 4 096 before HELLO (issue 14: a HELLO is a few hundred bytes),
    // the negotiated size after.
    ("4 096 before HELLO waits",        C,     &[Read(&[LEN_4096]), PeerClosed],   &[Closes(Close::PeerClosed)]),
    ("4 097 before HELLO",              C,     &[Read(&[LEN_4097])],               &[TOO_BIG]),
    ("16 381 after HELLO",              C,     &[Read(&[HELLO_26, LEN_16381])],    &[Hello(C), TOO_BIG]),
    ("over a negotiated 1 024",         1024,  &[Read(&[HELLO_26]), Read(&[LEN_1025])], &[Hello(1024), TOO_BIG]),
    ("length 0 before HELLO",           C,     &[Read(&[LEN_0])],                  &[INVALID]),
    ("length 0 after HELLO",            C,     &[Read(&[HELLO_26]), Read(&[LEN_0])],&[Hello(C), INVALID]),
    ("length 6 after HELLO",            C,     &[Read(&[HELLO_26, LEN_6])],        &[Hello(C), INVALID]),
    // NOTIFYs: handed out in order, payloads left to their task.
    ("one NOTIFY",                      C,     &[Read(&[HELLO_31]), Read(&[NOTIFY_5_1])], &[Hello(C), Runs(5, 1, true)]),
    ("pipelined, 2.6 ids",              C,     &[Read(&[HELLO_26, NOTIFY_0_1, NOTIFY_2_2, NOTIFY_5_1])],
                                                                                   &[Hello(C), Runs(0, 1, true), Runs(2, 2, true), Runs(5, 1, true)]),
    ("NOTIFY one byte per read",        C,     &[Read(&[HELLO_26]), Trickle(NOTIFY_0_1)], &[Hello(C), Runs(0, 1, true)]),
    ("NOTIFY with no messages",         C,     &[Read(&[HELLO_26, NOTIFY_EMPTY])], &[Hello(C), Runs(1, 1, true)]),
    ("cut NOTIFY payload",              C,     &[Read(&[HELLO_26, NOTIFY_TRUNCATED]), NotifyInvalid],
                                                                                   &[Hello(C), Runs(1, 1, false), INVALID]),
    // Frames that do not belong after HELLO.
    ("second HELLO",                    C,     &[Read(&[HELLO_26]), Read(&[HELLO_26])], &[Hello(C), INVALID]),
    ("AGENT-HELLO from HAProxy",        C,     &[Read(&[HELLO_26, AGENT_HELLO])],  &[Hello(C), INVALID]),
    ("ACK from HAProxy",                C,     &[Read(&[HELLO_26, ACK_EMPTY])],    &[Hello(C), INVALID]),
    ("unknown frame type",              C,     &[Read(&[HELLO_26, UNKNOWN_TYPE_9])],&[Hello(C), INVALID]),
    ("11-byte varint",                  C,     &[Read(&[HELLO_26, VARINT_11])],    &[Hello(C), INVALID]),
    ("NOTIFY without FIN",              C,     &[Read(&[HELLO_26, NOTIFY_NO_FIN])],&[Hello(C), FRAGMENTED]),
    ("continuation fragment",           C,     &[Read(&[HELLO_26, CONTINUATION])], &[Hello(C), FRAGMENTED]),
    ("aborted fragment",                C,     &[Read(&[HELLO_26, CONTINUATION_ABORT])], &[Hello(C), FRAGMENTED]),
    ("nothing read after an error",     C,     &[Read(&[HELLO_26, UNKNOWN_TYPE_9, NOTIFY_5_1])], &[Hello(C), INVALID]),
    // Closes.
    ("HAPROXY-DISCONNECT",              C,     &[Read(&[HELLO_26, NOTIFY_5_1, HAPROXY_DISCONNECT, NOTIFY_0_1])],
                                                                                   &[Hello(C), Runs(5, 1, true), Closes(Close::PeerDisconnect)]),
    ("EOF before HELLO",                C,     &[PeerClosed],                      &[Closes(Close::PeerClosed)]),
    ("EOF inside HELLO",                C,     &[Read(&["00 00 00 81 01"]), PeerClosed], &[Closes(Close::PeerClosed)]),
    ("EOF after HELLO",                 C,     &[Read(&[HELLO_26]), PeerClosed],   &[Hello(C), Closes(Close::PeerClosed)]),
    ("RST before HELLO",                C,     &[ReadFailed(ErrorKind::ConnectionReset)], &[Closes(Close::PeerClosed)]),
    ("EPIPE before HELLO",              C,     &[ReadFailed(ErrorKind::BrokenPipe)], &[Closes(Close::PeerClosed)]),
    ("aborted before HELLO",            C,     &[ReadFailed(ErrorKind::ConnectionAborted)], &[Closes(Close::PeerClosed)]),
    ("short read before HELLO",         C,     &[ReadFailed(ErrorKind::UnexpectedEof)], &[Closes(Close::PeerClosed)]),
    ("other error before HELLO",        C,     &[ReadFailed(ErrorKind::PermissionDenied)], &[Closes(Close::ReadFailed(ErrorKind::PermissionDenied))]),
    ("any error after HELLO",           C,     &[Read(&[HELLO_26]), ReadFailed(ErrorKind::PermissionDenied)], &[Hello(C), Closes(Close::PeerClosed)]),
    ("HELLO timeout",                   C,     &[Read(&["00 00 00 81"]), TimedOut], &[TIMEOUT]),
    ("idle timeout",                    C,     &[Read(&[HELLO_31]), TimedOut],     &[Hello(C), TIMEOUT]),
    ("stopping before HELLO",           C,     &[Shutdown],                        &[Closes(Close::Stopped)]),
    ("stopping after HELLO",            C,     &[Read(&[HELLO_31, NOTIFY_5_1]), Shutdown], &[Hello(C), Runs(5, 1, true), Closes(Close::Shutdown)]),
];

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Feeds `inputs` to a new session and records what it answers.
fn run(ceiling: u32, inputs: &[In]) -> Vec<Out> {
    fn drain(s: &mut Session, out: &mut Vec<Out>) {
        while let Some(step) = s.next_step() {
            out.push(observe(step));
        }
    }
    let mut s = Session::new(ceiling);
    let mut out = Vec::new();
    for input in inputs {
        let close = match *input {
            Read(frames) => {
                frames.iter().for_each(|f| s.read_buf().extend(hex(f)));
                drain(&mut s, &mut out);
                continue;
            }
            Trickle(frame) => {
                for byte in hex(frame) {
                    s.read_buf().extend([byte]);
                    drain(&mut s, &mut out);
                }
                continue;
            }
            PeerClosed => s.peer_closed(),
            ReadFailed(kind) => s.read_failed(kind),
            TimedOut => s.timed_out(),
            Shutdown => s.shutdown(),
            NotifyInvalid => s.notify_invalid(),
        };
        out.push(Closes(close));
    }
    out
}

fn observe(step: Step) -> Out {
    match step {
        Step::Send(bytes) => {
            let frame = Frame::decode(&bytes[4..]).expect("AGENT-HELLO decodes");
            let Body::AgentHello(items) = &frame.body else {
                panic!("only AGENT-HELLO is sent: {frame:?}");
            };
            let max = kv_get(items, "max-frame-size").and_then(TypedData::as_i64);
            let max = u32::try_from(max.unwrap()).unwrap();
            assert_eq!(
                bytes,
                encode(&Frame::agent_hello(max), u32::MAX),
                "exact bytes"
            );
            Hello(max)
        }
        Step::Notify(n) => Runs(n.stream_id(), n.frame_id(), n.messages().is_ok()),
        Step::Close(close) => Closes(close),
    }
}

#[test]
fn session_rules() {
    for (label, ceiling, inputs, want) in CASES {
        assert_eq!(run(*ceiling, inputs), *want, "{label}");
    }
}

#[test]
fn closed_sessions_stay_silent() {
    for (label, ceiling, inputs, _) in CASES {
        let mut s = Session::new(*ceiling);
        let _ = s.shutdown();
        for input in *inputs {
            if let Read(frames) = input {
                frames.iter().for_each(|f| s.read_buf().extend(hex(f)));
            }
        }
        assert_eq!(s.next_step(), None, "{label}");
    }
}

/// What each close sends, whether it drains first, and how it is logged.
#[rustfmt::skip]
const CLOSES: &[(Close, Option<Status>, bool, Closed)] = &[
    (Close::PeerClosed,                        None,                  false, Closed::Peer),
    (Close::ReadFailed(ErrorKind::Other),      None,                  false, Closed::Io(ErrorKind::Other)),
    (Close::PeerDisconnect,                    Some(Status::Normal),  false, Closed::Peer),
    (Close::Healthcheck,                       None,                  false, Closed::Healthcheck),
    (Close::Error(Status::TooBig),             Some(Status::TooBig),  false, Closed::Disconnected(Status::TooBig)),
    (Close::Error(Status::Timeout),            Some(Status::Timeout), false, Closed::Disconnected(Status::Timeout)),
    (Close::Stopped,                           None,                  false, Closed::Shutdown),
    (Close::Shutdown,                          Some(Status::Normal),  true,  Closed::Shutdown),
];

#[test]
fn close_mapping() {
    for &(close, reply, drain, ref closed) in CLOSES {
        assert_eq!(close.reply(), reply, "{close:?}");
        assert_eq!(close.drain(), drain, "{close:?}");
        assert_eq!(&close.closed(), closed, "{close:?}");
    }
}

#[test]
fn replies_match_the_reference_bytes() {
    // docs/spop.md#test-vectors: AGENT-HELLO echoing 16380, AGENT-DISCONNECT 0.
    let mut s = Session::new(C);
    s.read_buf().extend(hex(HELLO_26));
    assert_eq!(s.next_step(), Some(Step::Send(hex(AGENT_HELLO).into())));
    let normal = "00 00 00 25 66 00 00 00 01 00 00 0B 73 74 61 74 75 73 2D 63 6F 64 65 03 00 07 6D 65 73 73 61 67 65 08 06 6E 6F 72 6D 61 6C";
    assert_eq!(disconnect_frame(Status::Normal), hex(normal));
    for status in [Status::Timeout, Status::Invalid, Status::Unknown] {
        let want = encode(&Frame::agent_disconnect(status), u32::MAX);
        assert_eq!(disconnect_frame(status), want, "{status:?}");
    }
}

#[test]
fn the_read_limit_follows_the_handshake() {
    let mut s = Session::new(1024);
    assert_eq!(s.max_frame_size(), 4096);
    s.read_buf().extend(hex(HELLO_26));
    assert!(matches!(s.next_step(), Some(Step::Send(_))));
    assert_eq!(s.max_frame_size(), 1024);
    // Bytes after the HELLO in the same read wait under the new limit.
    s.read_buf().extend(hex(NOTIFY_5_1));
    let Some(Step::Notify(n)) = s.next_step() else {
        panic!("NOTIFY")
    };
    let messages = n.messages().unwrap();
    assert_eq!(messages[0].name.as_ref(), b"check-client-ip");
    assert_eq!(
        messages[0].arg("ip"),
        Some(&TypedData::Ipv4([192, 168, 0, 1].into()))
    );
}

#[test]
fn wanted_follows_the_length_prefix_within_the_limit() {
    let mut s = Session::new(C);
    assert_eq!(s.wanted(), 4, "the prefix first");
    s.read_buf().extend(hex("00 00 01 00 01"));
    assert_eq!(s.wanted(), 4 + 256);
    // A prefix over the limit asks for no more than the limit; the next step closes.
    let mut s = Session::new(C);
    s.read_buf().extend(hex(LEN_4097));
    assert_eq!(s.wanted(), 4 + 4096);
    assert_eq!(
        s.next_step(),
        Some(Step::Close(Close::Error(Status::TooBig)))
    );
    // After HELLO the limit is the negotiated size.
    let mut s = Session::new(C);
    s.read_buf().extend(hex(HELLO_26));
    assert!(matches!(s.next_step(), Some(Step::Send(_))));
    s.read_buf().extend(hex(LEN_16381));
    assert_eq!(s.wanted(), 4 + 16_380);
}

/// Frames are copied out: the read buffer keeps one allocation of its own (the size
/// the connection charged), and a NOTIFY in flight holds only its own bytes.
#[test]
fn frames_are_copied_out_of_the_read_buffer() {
    let mut s = Session::new(C);
    let cap = s.read_buf().capacity();
    assert_eq!(cap, HELLO_BUFFER);
    s.read_buf().extend(hex(HELLO_26));
    s.read_buf().extend(hex(NOTIFY_5_1));
    assert!(matches!(s.next_step(), Some(Step::Send(_))));
    let Some(Step::Notify(n)) = s.next_step() else {
        panic!("NOTIFY")
    };
    assert_eq!(n.len(), hex(NOTIFY_5_1).len());
    let buf = s.read_buf();
    assert!(buf.is_empty());
    let at = n.frame.as_ptr() as usize;
    let start = buf.as_ptr() as usize - hex(HELLO_26).len() - n.len();
    assert!(
        !(start..start + cap).contains(&at),
        "the NOTIFY does not point into the read buffer"
    );
}
