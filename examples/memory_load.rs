//! The client side of benches/memory.sh (issue 14, "Bounded memory"): holds SPOP
//! connections open on a running agent and fills its verified-token cache, so the
//! script can read the agent's RSS.
//!
//!     cargo run --release --example memory_load -- --agent 127.0.0.1:12345 \
//!         --connections 10000 --tokens 100000 --entities 10000 --hold-seconds 30
//!
//! Opens `connections` SPOP connections (HELLO answered on each, 32 waiting at most:
//! the agent's listen queue is 128), mints `tokens` distinct ES256 tokens with the
//! quickstart's demo key (public; sub user<i>, scope `read`) and sends each once in
//! an `authorize` NOTIFY for `GET /svc<i mod entities>/items`, spread over the
//! connections, then prints `ready` with the counts of ACKs and holds every
//! connection for `hold-seconds`. A load generator, not a test: it allows nothing.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use clap::Parser;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use stagedoor::spop::frame::{FLAG_FIN, read_frame};
use stagedoor::spop::{Action, Arg, Body, Frame, Message, TypedData};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    agent: SocketAddr,
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    #[arg(long, default_value_t = 100_000)]
    tokens: usize,
    /// Entities in the catalog: the NOTIFY paths cycle through /svc0 .. /svc<n-1>.
    #[arg(long, default_value_t = 10_000)]
    entities: usize,
    #[arg(long, default_value_t = 30)]
    hold_seconds: u64,
    /// Seconds between `connected` and the first NOTIFY (for a measurement).
    #[arg(long, default_value_t = 0)]
    pause_seconds: u64,
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/quickstart/demo-signing-key.pem"))]
    key: String,
}

fn bytes(f: &Frame<'_>) -> Vec<u8> {
    let mut out = BytesMut::new();
    f.encode(&mut out, u32::MAX).expect("encodes");
    out.to_vec()
}

fn hello() -> Vec<u8> {
    bytes(&Frame {
        flags: FLAG_FIN,
        stream_id: 0,
        frame_id: 0,
        body: Body::HaproxyHello(vec![
            Arg::new("supported-versions", TypedData::str("2.0")),
            Arg::new("max-frame-size", TypedData::Uint32(16380)),
            Arg::new("capabilities", TypedData::str("pipelining")),
        ]),
    })
}

fn notify(sid: u64, path: &str, token: &str) -> Vec<u8> {
    let auth = format!("Bearer {token}");
    bytes(&Frame {
        flags: FLAG_FIN,
        stream_id: sid,
        frame_id: 1,
        body: Body::Notify(vec![Message {
            name: b"authorize".as_slice().into(),
            args: vec![
                Arg::new("method", TypedData::str("GET")),
                Arg::new("path", TypedData::str(path)),
                Arg::new("host", TypedData::str("svc.example")),
                Arg::new("authorization", TypedData::str(&auth)),
                Arg::new("authorization_count", TypedData::Int32(1)),
            ],
        }]),
    })
}

/// Reads one whole frame; `None` on EOF.
async fn recv(s: &mut TcpStream, buf: &mut BytesMut) -> Option<Vec<u8>> {
    loop {
        if let Some(n) = read_frame(buf, u32::MAX).ok()? {
            return Some(buf.split_to(n).to_vec());
        }
        if s.read_buf(buf).await.ok()? == 0 {
            return None;
        }
    }
}

/// Whether an ACK says allow=true.
fn allowed(frame: &[u8]) -> bool {
    let Ok(f) = Frame::decode(&frame[4..]) else {
        return false;
    };
    let Body::Ack(actions) = f.body else {
        return false;
    };
    actions.iter().any(|a| {
        matches!(a, Action::SetVar { name, value: TypedData::Bool(true), .. }
            if name.as_ref() == b"allow")
    })
}

async fn connect(agent: SocketAddr, n: usize) -> Vec<TcpStream> {
    let hello = hello();
    let mut all = Vec::with_capacity(n);
    while all.len() < n {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..(n - all.len()).min(32) {
            let hello = hello.clone();
            set.spawn(async move {
                let mut s = TcpStream::connect(agent).await.expect("connect");
                s.write_all(&hello).await.expect("HELLO");
                recv(&mut s, &mut BytesMut::new())
                    .await
                    .expect("AGENT-HELLO");
                s
            });
        }
        while let Some(s) = set.join_next().await {
            all.push(s.expect("connection task"));
        }
    }
    all
}

fn tokens(a: &Args) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    let key = EncodingKey::from_ec_pem(&std::fs::read(&a.key)?)?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("demo-2026".into());
    (0..a.tokens)
        .map(|i| {
            let claims = serde_json::json!({"iss": "https://idp.quickstart.example",
                "sub": format!("user{i}"), "aud": "quickstart-api", "iat": now,
                "exp": now + 7200, "scope": "read"});
            Ok(encode(&header, &claims, &key)?)
        })
        .collect()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a = Args::parse();
    stagedoor::admin::raise_fd_limit();
    let tokens = tokens(&a)?;
    let mut conns = connect(a.agent, a.connections).await;
    println!("connected {}", conns.len());
    tokio::time::sleep(Duration::from_secs(a.pause_seconds)).await;
    // Each connection sends its share one after the other; all connections at once.
    let per = tokens.len().div_ceil(conns.len().max(1));
    let mut set = tokio::task::JoinSet::new();
    let entities = a.entities.max(1);
    for (c, mut s) in conns.drain(..).enumerate() {
        let mine: Vec<(usize, String)> = (c * per..((c + 1) * per).min(tokens.len()))
            .map(|i| (i, tokens[i].clone()))
            .collect();
        set.spawn(async move {
            let (mut buf, mut allow, mut other) = (BytesMut::new(), 0usize, 0usize);
            for (i, token) in mine {
                let path = format!("/svc{}/items", i % entities);
                s.write_all(&notify(i as u64 + 1, &path, &token))
                    .await
                    .expect("NOTIFY");
                match recv(&mut s, &mut buf).await {
                    Some(ack) if allowed(&ack) => allow += 1,
                    Some(_) => other += 1,
                    None => panic!("the agent closed a connection"),
                }
            }
            (s, allow, other)
        });
    }
    let (mut allow, mut other) = (0, 0);
    while let Some(r) = set.join_next().await {
        let (s, a, o) = r?;
        conns.push(s);
        allow += a;
        other += o;
    }
    println!(
        "ready connections={} allow={allow} other={other}",
        conns.len()
    );
    tokio::time::sleep(Duration::from_secs(a.hold_seconds)).await;
    drop(conns);
    Ok(())
}
