//! SPOP codec cost per request: decode a NOTIFY with the 6 arguments stagedoor
//! receives, then encode an ACK with 8 set-var actions (the decision variables).
//! Run: cargo bench --bench spop

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{Criterion, criterion_group, criterion_main};
use stagedoor::spop::frame::{FLAG_FIN, read_frame};
use stagedoor::spop::{Action, Arg, Body, Frame, Message, Scope, TypedData};

fn notify_bytes() -> Vec<u8> {
    // A realistic ~800-byte bearer token.
    let auth = format!("Bearer {}", "eyJhbGciOiJSUzI1NiJ9.".repeat(38));
    let f = Frame {
        flags: FLAG_FIN,
        stream_id: 12_345,
        frame_id: 1,
        body: Body::Notify(vec![Message {
            name: b"authorize".as_slice().into(),
            args: vec![
                Arg::new("method", TypedData::str("POST")),
                Arg::new("path", TypedData::str("/api/orders/12345/items")),
                Arg::new("host", TypedData::str("orders.internal.example.com")),
                Arg::new("authorization", TypedData::str(&auth)),
                Arg::new("src", TypedData::Ipv4([10, 1, 2, 3].into())),
                Arg::new(
                    "request_id",
                    TypedData::str("0A010203:C35A_0A000001:1F90_6761A1B2_0001:1F2E"),
                ),
            ],
        }]),
    };
    let mut out = BytesMut::new();
    f.encode(&mut out, 16_380).unwrap();
    out.to_vec()
}

fn decode_notify_encode_ack(buf: &[u8], out: &mut BytesMut) -> usize {
    let n = read_frame(buf, 16_380).unwrap().unwrap();
    let frame = Frame::decode(&buf[4..n]).unwrap();
    let Body::Notify(msgs) = &frame.body else {
        unreachable!()
    };
    let m = &msgs[0];
    let path = m.arg("path").and_then(TypedData::as_str).unwrap_or("");
    let actions = vec![
        Action::set(Scope::Txn, "allow", TypedData::Bool(true)),
        Action::set(Scope::Txn, "status", TypedData::Int64(200)),
        Action::set(Scope::Txn, "reason", TypedData::str("ok")),
        Action::set(Scope::Txn, "sub", TypedData::str("00u1a2b3c4d5e6f7g8h9")),
        Action::set(Scope::Txn, "client_id", TypedData::str("orders-frontend")),
        Action::set(
            Scope::Txn,
            "entity",
            TypedData::str("component:default/orders-api"),
        ),
        Action::set(
            Scope::Txn,
            "owner",
            TypedData::str("group:default/payments"),
        ),
        Action::set(Scope::Txn, "scopes", TypedData::str(path)),
    ];
    out.clear();
    Frame::ack(frame.stream_id, frame.frame_id, actions)
        .encode(out, 16_380)
        .unwrap();
    out.len()
}

fn bench(c: &mut Criterion) {
    let buf = notify_bytes();
    let mut out = BytesMut::with_capacity(1024);
    c.bench_function("spop/decode_notify6+encode_ack8", |b| {
        b.iter(|| decode_notify_encode_ack(black_box(&buf), &mut out))
    });
    c.bench_function("spop/decode_notify6", |b| {
        b.iter(|| Frame::decode(black_box(&buf[4..])).unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
