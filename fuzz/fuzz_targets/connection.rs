//! Fuzz the whole connection state machine over a real loopback socket: any byte
//! stream from "HAProxy" never panics or hangs the agent, every frame the agent
//! sends is well formed with FIN, and every ACK answers a NOTIFY that was sent.
//! The input is a HELLO flag byte, then the stream; half the inputs start with a
//! valid HELLO so the fuzzer reaches the processing state quickly.
#![no_main]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use stagedoor::connection::{EngineConfig, EngineStats, Handler, HandlerError};
use stagedoor::spop::frame::{FLAG_FIN, Header, read_frame};
use stagedoor::spop::{Action, Arg, Body, Frame, FrameType, Message, Scope, TypedData};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;

struct Echo;

impl Handler for Echo {
    async fn handle(&self, messages: &[Message<'_>]) -> Result<stagedoor::spop::Actions, HandlerError> {
        Ok(messages
            .iter()
            .flat_map(|m| m.args.iter())
            .take(8)
            .map(|a| Action::SetVar {
                scope: Scope::Txn,
                name: a.name.clone().into_owned().into(),
                value: a.value.clone(),
            })
            .collect())
    }
}

fn server() -> &'static (Runtime, SocketAddr) {
    static S: OnceLock<(Runtime, SocketAddr)> = OnceLock::new();
    S.get_or_init(|| {
        // A panic anywhere, spawned tasks included, must crash the fuzzer.
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            hook(info);
            std::process::abort();
        }));
        let rt = Runtime::new().unwrap();
        let addr = rt.block_on(async {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            let cfg = EngineConfig { idle_timeout: Duration::from_secs(2), ..Default::default() };
            tokio::spawn(stagedoor::server::run(
                l,
                Arc::new(Echo),
                cfg,
                64,
                Arc::new(EngineStats::default()),
                tokio_util::sync::CancellationToken::new(),
            ));
            addr
        });
        (rt, addr)
    })
}

fn hello() -> Vec<u8> {
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
    let mut out = BytesMut::new();
    f.encode(&mut out, 65535).unwrap();
    out.to_vec()
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let (rt, addr) = server();
    let mut input = if mode & 1 == 1 { hello() } else { Vec::new() };
    input.extend_from_slice(rest);

    // NOTIFY ids we sent, as far as a plain parse of our own input can tell.
    let mut sent = HashSet::new();
    let mut at = 0;
    while let Ok(Some(n)) = read_frame(&input[at..], u32::MAX) {
        if let Ok(h) = Header::decode(&input[at + 4..at + n]) {
            if h.frame_type == FrameType::Notify {
                sent.insert((h.stream_id, h.frame_id));
            }
        }
        at += n;
    }

    let output = rt.block_on(async {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let _ = s.write_all(&input).await;
        let _ = s.shutdown().await;
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
            .await
            .expect("agent hung: no close within 5 s")
            .ok();
        out
    });

    let mut at = 0;
    while at < output.len() {
        let n = read_frame(&output[at..], 65535)
            .expect("agent frame has a sane length")
            .expect("agent frame is complete");
        let f = Frame::decode(&output[at + 4..at + n]).expect("agent frame decodes");
        assert_eq!(f.flags, FLAG_FIN);
        match f.body {
            Body::AgentHello(_) | Body::AgentDisconnect(_) => assert_eq!((f.stream_id, f.frame_id), (0, 0)),
            Body::Ack(_) => assert!(sent.contains(&(f.stream_id, f.frame_id)), "ACK for an unknown NOTIFY"),
            other => panic!("agent sent {:?}", other.frame_type()),
        }
        at += n;
    }
});
