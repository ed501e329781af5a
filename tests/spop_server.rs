//! The connection engine against a raw TCP client on port 0: handshake, health
//! checks, pipelining, abuse, abrupt closes, limits and shutdown.

mod common;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use stagedoor::connection::EngineConfig;
use stagedoor::spop::{Arg, Body, Frame, TypedData};

fn arg(name: &'static str, v: TypedData<'static>) -> Arg<'static> {
    Arg::new(name, v)
}

/// After any abuse the server must still serve a fresh connection.
async fn still_works(addr: std::net::SocketAddr) {
    let mut c = Client::handshake(addr).await;
    c.send(&notify(7, 1, vec![arg("id", TypedData::Int64(42))]))
        .await;
    let ack = c.recv().await.expect("ACK");
    assert_eq!((ack.stream_id, ack.frame_id), (7, 1));
    assert_eq!(ack_var(&ack, "id"), Some(&TypedData::Int64(42)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_answers_agent_hello_bytes_exactly() {
    let s = start(EngineConfig::default(), 100).await;
    let mut c = Client::connect(s.addr).await;
    c.send(&hello_26()).await;
    // Raw bytes, to check the single-frame AGENT-HELLO exactly (docs/spop.md#test-vectors).
    let want: Vec<u8> = {
        let mut out = bytes::BytesMut::new();
        Frame::agent_hello(16380).encode(&mut out, 65535).unwrap();
        out.to_vec()
    };
    let f = c.recv().await.unwrap();
    assert_eq!(frame_bytes(&f), want);
    // The negotiated size is HAProxy's value capped by our ceiling.
    let s2 = start(
        EngineConfig {
            max_frame_size: 1024,
            ..Default::default()
        },
        10,
    )
    .await;
    let mut c = Client::connect(s2.addr).await;
    c.send(&hello_26()).await;
    assert_eq!(c.recv().await.unwrap(), Frame::agent_hello(1024));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_gets_hello_then_close() {
    let s = start(EngineConfig::default(), 100).await;
    let check = hex_bytes(
        "00 00 00 4E 01 00 00 00 01 00 00 12 73 75 70 70 6F 72 74 65 64 2D 76 65 72 73 69 6F 6E 73 08 03 32 2E 30 0E 6D 61 78 2D 66 72 61 6D 65 2D 73 69 7A 65 03 FC F0 06 0C 63 61 70 61 62 69 6C 69 74 69 65 73 08 00 0B 68 65 61 6C 74 68 63 68 65 63 6B 11",
    );
    let mut c = Client::connect(s.addr).await;
    c.send(&check).await;
    assert_eq!(c.recv().await, Some(Frame::agent_hello(16380)));
    assert_eq!(c.recv().await, None, "closed after the health check");
    assert_eq!(s.stats.healthchecks.load(Ordering::SeqCst), 1);
    still_works(s.addr).await;
}

fn hex_bytes(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_pipelined_notifies_answered_out_of_order() {
    let s = start(EngineConfig::default(), 100).await;
    let mut c = Client::handshake(s.addr).await;
    // sid 0 is valid (2.6); odd sids with fid 1 are 3.1+'s shape. Mix both.
    let mut expected = HashMap::new();
    let mut batch = Vec::new();
    for i in 0..200u64 {
        let (sid, fid) = if i % 2 == 0 {
            (i, 1 + i % 3)
        } else {
            (2 * i + 1, 1)
        };
        expected.insert((sid, fid), i as i64);
        // Later frames finish first: descending delays make completion order differ.
        let delay = (200 - i as i64) % 40;
        batch.extend(notify(
            sid,
            fid,
            vec![
                arg("id", TypedData::Int64(i as i64)),
                arg("delay_ms", TypedData::Int64(delay)),
            ],
        ));
    }
    c.send(&batch).await;
    let mut order = Vec::new();
    for _ in 0..200 {
        let ack = c.recv().await.expect("ACK");
        let id = expected
            .remove(&(ack.stream_id, ack.frame_id))
            .expect("ACK matches a NOTIFY, once");
        assert_eq!(ack_var(&ack, "id"), Some(&TypedData::Int64(id)));
        order.push(id);
    }
    assert!(expected.is_empty());
    let sorted = {
        let mut o = order.clone();
        o.sort();
        o
    };
    assert_ne!(order, sorted, "completion order, not arrival order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_connections() {
    let s = start(EngineConfig::default(), 2000).await;
    let mut set = tokio::task::JoinSet::new();
    for i in 0..1000i64 {
        let addr = s.addr;
        set.spawn(async move {
            let mut c = Client::handshake(addr).await;
            c.send(&notify(1, 1, vec![arg("id", TypedData::Int64(i))]))
                .await;
            let ack = c.recv().await.expect("ACK");
            assert_eq!(ack_var(&ack, "id"), Some(&TypedData::Int64(i)));
            c
        });
    }
    let mut clients = Vec::new();
    while let Some(r) = set.join_next().await {
        clients.push(r.unwrap());
    }
    assert_eq!(clients.len(), 1000);
    assert_eq!(s.stats.connections_open.load(Ordering::SeqCst), 1000);
    drop(clients);
    wait_for(|| s.stats.connections_open.load(Ordering::SeqCst) == 0).await;
}

#[track_caller]
fn wait_for(cond: impl Fn() -> bool) -> impl std::future::Future<Output = ()> {
    let at = std::panic::Location::caller();
    async move {
        for _ in 0..500 {
            if cond() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("condition at {at} not reached within 5 s");
    }
}

/// Sends `bytes` after a good handshake (or before, if `before_hello`) and expects
/// AGENT-DISCONNECT with `status`, then a close.
async fn abuse(addr: std::net::SocketAddr, before_hello: bool, bytes: &[u8], status: i64) {
    let mut c = if before_hello {
        Client::connect(addr).await
    } else {
        Client::handshake(addr).await
    };
    c.send(bytes).await;
    let f = c.recv().await.expect("AGENT-DISCONNECT");
    assert_eq!(disconnect_status(&f), Some(status), "{f:?}");
    assert_eq!((f.stream_id, f.frame_id, f.flags), (0, 0, 1));
    assert_eq!(c.recv().await, None, "closed after AGENT-DISCONNECT");
    still_works(addr).await;
}

/// Every session rule has its row in the table of src/spop/session/tests.rs; these
/// cases go through a socket once per path of the connection that closes with a
/// status: the handshake (its read limit, its frame check, the HELLO check), the
/// reader after HELLO (read limit, frame header, frame type) and a NOTIFY task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abuse_gets_the_right_disconnect_status() {
    let s = start(EngineConfig::default(), 100).await;
    // Oversize frame (after HELLO the limit is the negotiated 16380): status 3.
    abuse(s.addr, false, &16_381u32.to_be_bytes(), 3).await;
    // Before HELLO the limit is 4096 (a HELLO is a few hundred bytes).
    abuse(s.addr, true, &4_097u32.to_be_bytes(), 3).await;
    // NOTIFY before HELLO: status 4.
    abuse(s.addr, true, &notify(1, 1, vec![]), 4).await;
    // A second HELLO: status 4.
    abuse(s.addr, false, &hello_26(), 4).await;
    // A fragment (no FIN): status 10.
    abuse(s.addr, false, &[0, 0, 0, 7, 3, 0, 0, 0, 0, 1, 1], 10).await;
    // A truncated NOTIFY payload under a consistent length: status 4, found by the
    // NOTIFY's task.
    abuse(
        s.addr,
        false,
        &[0, 0, 0, 9, 3, 0, 0, 0, 1, 1, 1, 4, b'e'],
        4,
    )
    .await;
    // HELLO without supported-versions: 5.
    let hello = frame_bytes(&Frame {
        flags: 1,
        stream_id: 0,
        frame_id: 0,
        body: Body::HaproxyHello(vec![arg("max-frame-size", TypedData::Uint32(16380))]),
    });
    abuse(s.addr, true, &hello, 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_disconnect_gets_agent_disconnect_zero() {
    let s = start(EngineConfig::default(), 100).await;
    let mut c = Client::handshake(s.addr).await;
    let hd = frame_bytes(&Frame {
        flags: 1,
        stream_id: 0,
        frame_id: 0,
        body: Body::HaproxyDisconnect(vec![
            arg("status-code", TypedData::Uint32(2)),
            arg("message", TypedData::str("a timeout occurred")),
        ]),
    });
    c.send(&hd).await;
    assert_eq!(disconnect_status(&c.recv().await.unwrap()), Some(0));
    assert_eq!(c.recv().await, None);
    still_works(s.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_failures_and_panics_still_get_an_ack() {
    let s = start(EngineConfig::default(), 100).await;
    let mut c = Client::handshake(s.addr).await;
    c.send(&notify(1, 1, vec![arg("panic", TypedData::Bool(true))]))
        .await;
    let ack = c.recv().await.unwrap();
    assert_eq!((ack.stream_id, ack.frame_id), (1, 1));
    assert_eq!(
        ack,
        own(stagedoor::spop::Frame::ack(
            1,
            1,
            vec![stagedoor::spop::Action::set(
                stagedoor::spop::Scope::Txn,
                "error",
                TypedData::str("handler_panic")
            )]
        ))
    );
    c.send(&notify(3, 1, vec![arg("fail", TypedData::Bool(true))]))
        .await;
    let ack = c.recv().await.unwrap();
    assert_eq!(
        ack_var(&ack, "error").and_then(TypedData::as_str),
        Some("test_failure")
    );
    assert_eq!(ack_var(&ack, "allow"), None, "only the error variable");
    // An answer that would not fit the negotiated frame: error ACK, never oversize.
    c.send(&notify(5, 1, vec![arg("big", TypedData::Int64(20_000))]))
        .await;
    let ack = c.recv().await.unwrap();
    assert!(frame_bytes(&ack).len() <= 16_384);
    assert_eq!(
        ack_var(&ack, "error").and_then(TypedData::as_str),
        Some("ack_too_large")
    );
    // The connection is still usable.
    c.send(&notify(7, 1, vec![arg("id", TypedData::Int64(1))]))
        .await;
    assert_eq!(
        ack_var(&c.recv().await.unwrap(), "id"),
        Some(&TypedData::Int64(1))
    );
    assert_eq!(s.stats.handler_failures.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abrupt_rst_cancels_in_flight_work() {
    let s = start(EngineConfig::default(), 100).await;
    let c = Client::handshake(s.addr).await;
    let mut c = c;
    let mut batch = Vec::new();
    for i in 0..30 {
        batch.extend(notify(
            2 * i + 1,
            1,
            vec![arg("delay_ms", TypedData::Int64(60_000))],
        ));
    }
    c.send(&batch).await;
    wait_for(|| s.handler.started.load(Ordering::SeqCst) == 30).await;
    assert_eq!(s.stats.notify_in_flight.load(Ordering::SeqCst), 30);
    // SO_LINGER 0 turns the close into a TCP RST, as HAProxy 3.1+ does.
    socket2_linger_zero(&c.stream);
    drop(c);
    wait_for(|| s.handler.cancelled.load(Ordering::SeqCst) == 30).await;
    wait_for(|| s.stats.notify_in_flight.load(Ordering::SeqCst) == 0).await;
    wait_for(|| s.stats.connections_open.load(Ordering::SeqCst) == 0).await;
    still_works(s.addr).await;
}

#[allow(deprecated)]
fn socket2_linger_zero(stream: &tokio::net::TcpStream) {
    stream.set_linger(Some(Duration::ZERO)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_per_connection_is_bounded() {
    let s = start(
        EngineConfig {
            max_in_flight: 20,
            ..Default::default()
        },
        100,
    )
    .await;
    let mut c = Client::handshake(s.addr).await;
    let mut batch = Vec::new();
    for i in 0..50 {
        batch.extend(notify(
            2 * i + 1,
            1,
            vec![
                arg("delay_ms", TypedData::Int64(300)),
                arg("id", TypedData::Int64(i as i64)),
            ],
        ));
    }
    c.send(&batch).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        s.stats.notify_in_flight.load(Ordering::SeqCst),
        20,
        "bounded at 20"
    );
    for _ in 0..50 {
        assert!(c.recv().await.is_some());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_are_closed_at_once() {
    let s = start(EngineConfig::default(), 2).await;
    let a = Client::handshake(s.addr).await;
    let b = Client::handshake(s.addr).await;
    let mut c = Client::connect(s.addr).await;
    let f = c.recv().await.expect("AGENT-DISCONNECT");
    assert_eq!(disconnect_status(&f), Some(13));
    assert_eq!(c.recv().await, None);
    assert_eq!(s.stats.connections_rejected.load(Ordering::SeqCst), 1);
    drop((a, b));
    wait_for(|| s.stats.connections_open.load(Ordering::SeqCst) == 0).await;
    still_works(s.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_with_timeout_status() {
    let s = start(
        EngineConfig {
            idle_timeout: Duration::from_millis(200),
            ..Default::default()
        },
        10,
    )
    .await;
    let mut c = Client::handshake(s.addr).await;
    assert_eq!(disconnect_status(&c.recv().await.unwrap()), Some(2));
    assert_eq!(c.recv().await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_in_flight_then_disconnects_normally() {
    let s = start(
        EngineConfig {
            shutdown_grace: Duration::from_secs(5),
            ..Default::default()
        },
        10,
    )
    .await;
    let mut c = Client::handshake(s.addr).await;
    c.send(&notify(
        1,
        1,
        vec![
            arg("delay_ms", TypedData::Int64(300)),
            arg("id", TypedData::Int64(9)),
        ],
    ))
    .await;
    wait_for(|| s.handler.started.load(Ordering::SeqCst) == 1).await;
    s.shutdown.cancel();
    let ack = c.recv().await.expect("the in-flight ACK");
    assert_eq!(ack_var(&ack, "id"), Some(&TypedData::Int64(9)));
    assert_eq!(disconnect_status(&c.recv().await.unwrap()), Some(0));
    assert_eq!(c.recv().await, None);
    tokio::time::timeout(Duration::from_secs(5), s.task)
        .await
        .expect("server stops")
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(s.addr).await.is_err(),
        "no longer accepting"
    );
}

/// The HELLOs the tests send (the RST churn alternates them) are the bytes HAProxy
/// 2.6.12 and 3.2.0 send (reference/spop-protocol.md §1.13, example engine-id).
#[test]
fn the_test_hellos_are_haproxys_bytes() {
    let hex = |s: &str| -> Vec<u8> {
        s.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect()
    };
    let head = "01 00 00 00 01 00 00 12 73 75 70 70 6F 72 74 65 64 2D 76 65 72 73 69 6F 6E 73 08 03 32 2E 30 0E 6D 61 78 2D 66 72 61 6D 65 2D 73 69 7A 65 03 FC F0 06 0C 63 61 70 61 62 69 6C 69 74 69 65 73 08";
    let engine = "09 65 6E 67 69 6E 65 2D 69 64 08 24 64 38 61 33 62 63 34 63 2D 36 65 31 62 2D 34 62 30 36 2D 39 61 30 35 2D 34 65 62 61 62 32 64 30 61 37 66 32";
    let pipelining = "70 69 70 65 6C 69 6E 69 6E 67";
    let v26 = format!("00 00 00 81 {head} 10 {pipelining} 2C 61 73 79 6E 63 {engine}");
    let v32 = format!("00 00 00 7B {head} 0A {pipelining} {engine}");
    assert_eq!(hello_26(), hex(&v26));
    assert_eq!(hello_32(), hex(&v32));
}
