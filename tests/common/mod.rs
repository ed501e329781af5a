//! Helpers shared by integration tests: a raw SPOP client and a test handler.
#![allow(dead_code)]

pub mod haproxy;
pub mod http;
pub mod load;
pub mod peers;
pub mod quickstart;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use stagedoor::connection::{EngineConfig, EngineStats, Handler, HandlerError};
use stagedoor::spop::frame::{FLAG_FIN, read_frame};
use stagedoor::spop::{Action, Arg, Body, Frame, Message, Scope, TypedData};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A handler for engine tests. Message "echo" args:
/// `id` (int): echoed into txn var `id`; `delay_ms` (int): sleep first;
/// `big` (int): also set a string var of that many bytes; `panic`/`fail` (bool).
#[derive(Default)]
pub struct TestHandler {
    /// Handler futures dropped before finishing (cancelled work).
    pub cancelled: Arc<AtomicUsize>,
    pub started: Arc<AtomicUsize>,
}

struct DropGuard(Arc<AtomicUsize>, bool);
impl Drop for DropGuard {
    fn drop(&mut self) {
        if !self.1 {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Handler for TestHandler {
    async fn handle(
        &self,
        messages: &[Message<'_>],
    ) -> Result<stagedoor::spop::Actions, HandlerError> {
        self.started.fetch_add(1, Ordering::SeqCst);
        let mut guard = DropGuard(self.cancelled.clone(), false);
        let mut actions = Vec::new();
        for m in messages.iter().filter(|m| m.name.as_ref() == b"echo") {
            if let Some(d) = m.arg("delay_ms").and_then(TypedData::as_i64) {
                tokio::time::sleep(Duration::from_millis(d as u64)).await;
            }
            if matches!(m.arg("panic"), Some(TypedData::Bool(true))) {
                panic!("test handler asked to panic");
            }
            if matches!(m.arg("fail"), Some(TypedData::Bool(true))) {
                guard.1 = true;
                return Err(HandlerError("test_failure"));
            }
            if let Some(id) = m.arg("id").and_then(TypedData::as_i64) {
                actions.push(Action::set(Scope::Txn, "id", TypedData::Int64(id)));
            }
            if let Some(n) = m.arg("big").and_then(TypedData::as_i64) {
                actions.push(Action::set(
                    Scope::Txn,
                    "big",
                    TypedData::string("x".repeat(n as usize)),
                ));
            }
            actions.push(Action::set(Scope::Txn, "allow", TypedData::Bool(true)));
        }
        guard.1 = true;
        Ok(actions.into())
    }
}

pub struct TestServer {
    pub addr: std::net::SocketAddr,
    pub stats: Arc<EngineStats>,
    pub shutdown: CancellationToken,
    pub handler: Arc<TestHandler>,
    pub task: tokio::task::JoinHandle<()>,
}

pub async fn start(cfg: EngineConfig, max_connections: usize) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stats = Arc::new(EngineStats::default());
    let shutdown = CancellationToken::new();
    let handler = Arc::new(TestHandler::default());
    let task = tokio::spawn(stagedoor::server::run(
        listener,
        handler.clone(),
        cfg,
        max_connections,
        stats.clone(),
        shutdown.clone(),
    ));
    TestServer {
        addr,
        stats,
        shutdown,
        handler,
        task,
    }
}

/// HAProxy 2.6's HELLO.
pub fn hello_26() -> Vec<u8> {
    haproxy_hello("pipelining,async")
}

/// HAProxy 3.2's HELLO: the same as 2.6's but for `capabilities`, which 3.x sends as
/// `pipelining` alone (reference/spop-protocol.md, the 127-byte 3.2.0 frame).
pub fn hello_32() -> Vec<u8> {
    haproxy_hello("pipelining")
}

fn haproxy_hello(capabilities: &'static str) -> Vec<u8> {
    frame_bytes(&Frame {
        flags: FLAG_FIN,
        stream_id: 0,
        frame_id: 0,
        body: Body::HaproxyHello(vec![
            Arg::new("supported-versions", TypedData::str("2.0")),
            Arg::new("max-frame-size", TypedData::Uint32(16380)),
            Arg::new("capabilities", TypedData::str(capabilities)),
            Arg::new(
                "engine-id",
                TypedData::str("d8a3bc4c-6e1b-4b06-9a05-4ebab2d0a7f2"),
            ),
        ]),
    })
}

pub fn frame_bytes(f: &Frame<'_>) -> Vec<u8> {
    let mut out = BytesMut::new();
    f.encode(&mut out, u32::MAX).unwrap();
    out.to_vec()
}

pub fn notify(sid: u64, fid: u64, args: Vec<Arg<'static>>) -> Vec<u8> {
    frame_bytes(&Frame {
        flags: FLAG_FIN,
        stream_id: sid,
        frame_id: fid,
        body: Body::Notify(vec![Message {
            name: b"echo".as_slice().into(),
            args,
        }]),
    })
}

pub struct Client {
    pub stream: TcpStream,
    buf: BytesMut,
}

impl Client {
    pub async fn connect(addr: std::net::SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.unwrap();
        Client {
            stream,
            buf: BytesMut::new(),
        }
    }

    /// Connects and completes the handshake, checking the AGENT-HELLO.
    pub async fn handshake(addr: std::net::SocketAddr) -> Client {
        let mut c = Client::connect(addr).await;
        c.send(&hello_26()).await;
        let f = c.recv().await.expect("AGENT-HELLO");
        assert_eq!(f, Frame::agent_hello(16380));
        c
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// The next whole frame, or None on EOF/RST. Times out after 10 s (a hang is a failure).
    pub async fn recv(&mut self) -> Option<Frame<'static>> {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Some(n) = read_frame(&self.buf, u32::MAX).unwrap() {
                    let bytes = self.buf.split_to(n);
                    return Some(own(Frame::decode(&bytes[4..]).unwrap()));
                }
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
        .expect("timed out waiting for a frame")
    }
}

/// Detaches a decoded frame from its buffer.
pub fn own(f: Frame<'_>) -> Frame<'static> {
    let own_args = |v: Vec<Arg<'_>>| {
        v.into_iter()
            .map(|a| Arg {
                name: a.name.into_owned().into(),
                value: a.value.into_owned(),
            })
            .collect::<Vec<_>>()
    };
    let body = match f.body {
        Body::HaproxyHello(v) => Body::HaproxyHello(own_args(v)),
        Body::HaproxyDisconnect(v) => Body::HaproxyDisconnect(own_args(v)),
        Body::AgentHello(v) => Body::AgentHello(own_args(v)),
        Body::AgentDisconnect(v) => Body::AgentDisconnect(own_args(v)),
        Body::Notify(m) => Body::Notify(
            m.into_iter()
                .map(|m| Message {
                    name: m.name.into_owned().into(),
                    args: own_args(m.args),
                })
                .collect(),
        ),
        Body::Ack(a) => Body::Ack(a.into_iter().map(Action::into_owned).collect()),
    };
    Frame {
        flags: f.flags,
        stream_id: f.stream_id,
        frame_id: f.frame_id,
        body,
    }
}

/// The status code of an AGENT-DISCONNECT frame.
pub fn disconnect_status(f: &Frame<'_>) -> Option<i64> {
    match &f.body {
        Body::AgentDisconnect(kv) => {
            stagedoor::spop::data::kv_get(kv, "status-code").and_then(TypedData::as_i64)
        }
        _ => None,
    }
}

/// Value of set-var `name` in an ACK.
pub fn ack_var<'a>(f: &'a Frame<'_>, name: &str) -> Option<&'a TypedData<'a>> {
    match &f.body {
        Body::Ack(actions) => actions.iter().find_map(|a| match a {
            Action::SetVar { name: n, value, .. } if n.as_ref() == name.as_bytes() => Some(value),
            _ => None,
        }),
        _ => None,
    }
}

/// The sum of the samples of metric `name` whose labels contain `filter`, in a
/// Prometheus text exposition (0 when there is none).
pub fn metric_sum(text: &str, name: &str, filter: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| l.contains(filter))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
