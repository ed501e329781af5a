//! Cost of decision logging, measured as the decision rate with decision logs off,
//! deny-only and all. Machines here are shared and noisy, so the variants run
//! interleaved, round after round, in one process, and the report gives each
//! variant's median and the ratios to "off".
//!
//! Two levels:
//! - handler: `Agent::handle` on one `authorize` message (arguments → cached token
//!   → policy → variables → decision log), in a loop on one thread;
//! - spop: the whole agent path over a real loopback connection: 64 NOTIFYs in
//!   flight, each decoded, decided, logged and ACKed by the engine.
//!
//! Lines go through the real writer thread into a sink.
//! Run: cargo bench --bench logging

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use bytes::BytesMut;
use stagedoor::agent::Agent;
use stagedoor::config::DecisionLogs;
use stagedoor::connection::{EngineConfig, EngineStats, Handler};
use stagedoor::decision_log::DecisionLog;
use stagedoor::policy::Mode;
use stagedoor::spop::frame::{FLAG_FIN, read_frame};
use stagedoor::spop::{Arg, Body, Frame, Message, TypedData};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The quickstart issuer, catalog and tokens (shared with the integration tests).
#[path = "../tests/common/quickstart.rs"]
#[allow(dead_code)]
mod quickstart;

fn token() -> String {
    quickstart::token(
        "alice",
        "orders:read orders:write",
        &["payments-engineers"],
        3600,
    )
}

fn agent(mode: DecisionLogs) -> Agent {
    let log = DecisionLog::new(mode, 1.0, Box::new(std::io::sink()));
    quickstart::agent(
        quickstart::verifier(None),
        Arc::new(ArcSwapOption::new(Some(Arc::new(quickstart::policy())))),
        Mode::Enforce,
        None,
        Box::new(move |req, outcome, latency, at| log.record(req, outcome, latency, at)),
    )
}

fn message(auth: &str) -> Message<'_> {
    Message {
        name: b"authorize".as_slice().into(),
        args: vec![
            Arg::new("method", TypedData::str("GET")),
            Arg::new("path", TypedData::str("/api/orders/42")),
            Arg::new("host", TypedData::str("orders.example.com")),
            Arg::new("authorization", TypedData::str(auth)),
            Arg::new("src", TypedData::Ipv4([10, 1, 2, 3].into())),
            Arg::new(
                "request_id",
                TypedData::str("0A010203:C35A_0A000001:1F90_6761A1B2_0001:1F2E"),
            ),
        ],
    }
}

const MODES: [(&str, DecisionLogs); 3] = [
    ("off", DecisionLogs::Off),
    ("deny_only", DecisionLogs::Deny),
    ("all", DecisionLogs::All),
];

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// CPU time of every thread of this process so far, in ns (`/proc/self/task/*/schedstat`):
/// the decision-log writer's thread included, which a decision rate does not see.
fn process_cpu_ns() -> u64 {
    std::fs::read_dir("/proc/self/task")
        .map(|dir| {
            dir.flatten()
                .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
                .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0)
}

fn report(level: &str, unit: &str, samples: &mut [Vec<f64>; 3]) {
    let med: Vec<f64> = samples.iter_mut().map(|s| median(s)).collect();
    for (i, (name, _)) in MODES.iter().enumerate() {
        println!(
            "{level:7} {name:10} median {:>10.0} decisions/s ({:.2} {unit})  ratio to off {:.3}",
            med[i],
            1e6 / med[i],
            med[i] / med[0]
        );
    }
}

fn handler_level(rt: &tokio::runtime::Runtime, auth: &str) {
    let agents: Vec<Agent> = MODES.iter().map(|(_, m)| agent(*m)).collect();
    let msgs = [message(auth)];
    for a in &agents {
        rt.block_on(a.handle(&msgs)).unwrap(); // warm the verified-token cache
    }
    let mut samples: [Vec<f64>; 3] = Default::default();
    const N: u32 = 20_000;
    for _round in 0..30 {
        for (i, a) in agents.iter().enumerate() {
            let t = Instant::now();
            for _ in 0..N {
                std::hint::black_box(rt.block_on(a.handle(std::hint::black_box(&msgs))).unwrap());
            }
            samples[i].push(f64::from(N) / t.elapsed().as_secs_f64());
        }
    }
    report("handler", "µs/decision", &mut samples);
}

fn notify_batch(auth: &str, n: u64) -> Vec<u8> {
    let mut out = BytesMut::new();
    for i in 0..n {
        let f = Frame {
            flags: FLAG_FIN,
            stream_id: 2 * i + 1,
            frame_id: 1,
            body: Body::Notify(vec![message(auth)]),
        };
        f.encode(&mut out, 16_380).unwrap();
    }
    out.to_vec()
}

fn spop_level(rt: &tokio::runtime::Runtime, auth: &str) {
    let batch = notify_batch(auth, 64);
    let addrs: Vec<std::net::SocketAddr> = MODES
        .iter()
        .map(|(_, m)| {
            let a = Arc::new(agent(*m));
            rt.block_on(async {
                let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let addr = l.local_addr().unwrap();
                tokio::spawn(stagedoor::server::run(
                    l,
                    a,
                    EngineConfig {
                        max_in_flight: 64,
                        ..Default::default()
                    },
                    16,
                    Arc::new(EngineStats::default()),
                    tokio_util::sync::CancellationToken::new(),
                ));
                addr
            })
        })
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
        b.to_vec()
    };
    let mut conns: Vec<tokio::net::TcpStream> = addrs
        .iter()
        .map(|addr| {
            rt.block_on(async {
                let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
                s.set_nodelay(true).unwrap();
                s.write_all(&hello).await.unwrap();
                let mut buf = vec![0u8; 4096];
                let _ = s.read(&mut buf).await.unwrap(); // AGENT-HELLO
                s
            })
        })
        .collect();
    // Sends `rounds` batches of 64 pipelined NOTIFYs and reads the 64 ACKs of each.
    async fn run(s: &mut tokio::net::TcpStream, batch: &[u8], rounds: u32) {
        let mut buf = BytesMut::with_capacity(64 * 1024);
        for _ in 0..rounds {
            s.write_all(batch).await.unwrap();
            let mut acks = 0;
            while acks < 64 {
                while let Some(n) = read_frame(&buf, 65535).unwrap() {
                    let _ = buf.split_to(n);
                    acks += 1;
                }
                if acks < 64 {
                    s.read_buf(&mut buf).await.unwrap();
                }
            }
        }
    }
    for s in conns.iter_mut() {
        rt.block_on(run(s, &batch, 20));
    }
    let mut samples: [Vec<f64>; 3] = Default::default();
    let mut cpu: [Vec<f64>; 3] = Default::default();
    const ROUNDS: u32 = 100;
    for _round in 0..20 {
        for (i, s) in conns.iter_mut().enumerate() {
            let (t, c) = (Instant::now(), process_cpu_ns());
            rt.block_on(run(s, &batch, ROUNDS));
            samples[i].push(f64::from(ROUNDS * 64) / t.elapsed().as_secs_f64());
            // The writer drains every 25 ms: let it finish this variant's lines
            // inside the variant's window.
            std::thread::sleep(Duration::from_millis(60));
            cpu[i].push((process_cpu_ns() - c) as f64 / 1e3 / f64::from(ROUNDS * 64));
        }
    }
    report("spop", "µs/decision", &mut samples);
    // CPU of the whole process (client, engine, handler, log writer) per decision.
    for (i, (name, _)) in MODES.iter().enumerate() {
        let (m, off) = (median(&mut cpu[i]), median(&mut cpu[0].clone()));
        println!(
            "spop    {name:10} process CPU {m:.2} µs/decision, {:+.2} against off",
            m - off
        );
    }
    std::thread::sleep(Duration::from_millis(50));
}

fn main() {
    // `cargo test --benches` runs bench binaries with --bench absent: stay quick there.
    if !std::env::args().any(|a| a == "--bench") {
        println!("logging bench: run with `cargo bench --bench logging`");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let auth = format!("Bearer {}", token());
    handler_level(&rt, &auth);
    spop_level(&rt, &auth);
}
