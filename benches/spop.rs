//! SPOP cost per request, at two levels:
//! - codec: decode a NOTIFY with the 6 arguments stagedoor receives, then encode an
//!   ACK with 8 set-var actions (the decision variables);
//! - engine: the connection engine over a real loopback socket, 64 NOTIFYs in
//!   flight and 64 ACKs back per iteration, with a handler that answers at once (so
//!   the figure is framing, session and scheduling, not the agent's decision).
//!
//! Run: cargo bench --bench spop

use std::hint::black_box;
use std::sync::Arc;

use bytes::BytesMut;
use criterion::{Criterion, criterion_group, criterion_main};
use stagedoor::connection::{EngineConfig, EngineStats, Handler, HandlerError};
use stagedoor::spop::frame::{FLAG_FIN, read_frame};
use stagedoor::spop::{Action, Arg, Body, Frame, Message, Scope, TypedData};

fn notify_bytes() -> Vec<u8> {
    notify_frame(12_345, 1)
}

fn notify_frame(stream_id: u64, frame_id: u64) -> Vec<u8> {
    // A realistic ~800-byte bearer token.
    let auth = format!("Bearer {}", "eyJhbGciOiJSUzI1NiJ9.".repeat(38));
    let f = Frame {
        flags: FLAG_FIN,
        stream_id,
        frame_id,
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
    let actions = decision_actions(&msgs[0]);
    out.clear();
    Frame::ack(frame.stream_id, frame.frame_id, actions)
        .encode(out, 16_380)
        .unwrap();
    out.len()
}

/// The 8 decision variables of an allowed request.
fn decision_actions<'m>(m: &'m Message<'_>) -> Vec<Action<'m>> {
    let path = m.arg("path").and_then(TypedData::as_str).unwrap_or("");
    vec![
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
    ]
}

/// Answers every NOTIFY at once with the decision variables, encoded as set (as the
/// agent's are).
struct AtOnce;

impl Handler for AtOnce {
    async fn handle(
        &self,
        messages: &[Message<'_>],
    ) -> Result<stagedoor::spop::Actions, HandlerError> {
        Ok(decision_actions(&messages[0]).into_iter().collect())
    }
}

/// A served loopback connection past its HELLO, and 64 pipelined NOTIFYs to send.
fn engine(rt: &tokio::runtime::Runtime) -> (tokio::net::TcpStream, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let batch: Vec<u8> = (0..64u64)
        .flat_map(|i| notify_frame(2 * i + 1, 1))
        .collect();
    let hello = {
        let f = Frame {
            flags: FLAG_FIN,
            stream_id: 0,
            frame_id: 0,
            body: Body::HaproxyHello(vec![
                Arg::new("supported-versions", TypedData::str("2.0")),
                Arg::new("max-frame-size", TypedData::Uint32(16380)),
                Arg::new("capabilities", TypedData::str("pipelining")),
            ]),
        };
        let mut b = BytesMut::new();
        f.encode(&mut b, 65535).unwrap();
        b
    };
    let stream = rt.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(stagedoor::server::run(
            l,
            Arc::new(AtOnce),
            EngineConfig::default(),
            4,
            Arc::new(EngineStats::default()),
            tokio_util::sync::CancellationToken::new(),
        ));
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.set_nodelay(true).unwrap();
        s.write_all(&hello).await.unwrap();
        let mut buf = BytesMut::new();
        while read_frame(&buf, 65535).unwrap().is_none() {
            s.read_buf(&mut buf).await.unwrap(); // AGENT-HELLO
        }
        s
    });
    (stream, batch)
}

/// Sends the batch and reads its 64 ACKs.
async fn round_trip(s: &mut tokio::net::TcpStream, batch: &[u8], buf: &mut BytesMut) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(batch).await.unwrap();
    let mut acks = 0;
    while acks < 64 {
        while let Some(n) = read_frame(buf, 65535).unwrap() {
            let _ = buf.split_to(n);
            acks += 1;
        }
        if acks < 64 {
            s.read_buf(buf).await.unwrap();
        }
    }
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
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (mut stream, batch) = engine(&rt);
    let mut acks = BytesMut::with_capacity(64 * 1024);
    c.bench_function("spop/engine_64_notifies_loopback", |b| {
        b.iter(|| rt.block_on(round_trip(&mut stream, &batch, &mut acks)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
