//! The admin listener cannot take the agent down: 2,000 idle connections to the admin
//! port of an agent held to 1,024 descriptors (a hard limit it cannot raise) once used
//! every descriptor, and new SPOP connections then timed out (HAProxy answered 503).
//! Now at most 32 admin connections are served and the rest closed at accept, idle
//! ones time out, and SPOP decisions keep flowing.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::haproxy::{free_port, repo};
use common::{Client, ack_var, frame_bytes};
use stagedoor::spop::frame::FLAG_FIN;
use stagedoor::spop::{Arg, Body, Frame, Message, TypedData};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn authorize(path: &'static str) -> Vec<u8> {
    frame_bytes(&Frame {
        flags: FLAG_FIN,
        stream_id: 1,
        frame_id: 1,
        body: Body::Notify(vec![Message {
            name: b"authorize".as_slice().into(),
            args: vec![
                Arg::new("method", TypedData::str("GET")),
                Arg::new("path", TypedData::str(path)),
                Arg::new("host", TypedData::str("h")),
                Arg::new("authorization", TypedData::Null),
            ],
        }]),
    })
}

async fn http_get(addr: &str, path: &str) -> Option<String> {
    let connect = TcpStream::connect(addr);
    let mut s = tokio::time::timeout(Duration::from_secs(2), connect)
        .await
        .ok()?
        .ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
        .await
        .ok()?
        .ok()?;
    Some(out)
}

struct Agent {
    child: tokio::process::Child,
    agent_port: u16,
    admin: String,
    _dir: tempfile::TempDir,
}

/// The agent on the quickstart catalog and keys, held to 1,024 descriptors (soft and
/// hard: it cannot raise them), once ready.
async fn start_agent() -> Agent {
    let dir = tempfile::tempdir().unwrap();
    let (agent_port, admin_port) = (free_port(), free_port());
    let quick = repo().join("examples/quickstart");
    std::fs::write(
        dir.path().join("stagedoor.toml"),
        format!(
            "[agent]\nlisten = \"127.0.0.1:{agent_port}\"\n\n[admin]\nlisten = \"127.0.0.1:{admin_port}\"\n\n\
             [[issuers]]\nissuer = \"https://idp.quickstart.example\"\naudiences = [\"quickstart-api\"]\n\
             jwks_file = \"{}\"\nalgorithms = [\"ES256\"]\n\n[catalog]\nsource = \"file\"\nfiles = [\"{}/catalog/*.yaml\"]\n",
            quick.join("demo-jwks.json").display(),
            quick.display()
        ),
    )
    .unwrap();
    // Soft and hard limit 1,024: the agent cannot raise it.
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -Sn 1024 && ulimit -Hn 1024 && exec '{}' serve --config '{}'",
            env!("CARGO_BIN_EXE_stagedoor"),
            dir.path().join("stagedoor.toml").display()
        ))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let admin = format!("127.0.0.1:{admin_port}");
    let mut ready = false;
    for _ in 0..100 {
        if http_get(&admin, "/readyz")
            .await
            .is_some_and(|r| r.starts_with("HTTP/1.1 200"))
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "agent not ready");
    Agent {
        child,
        agent_port,
        admin,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_admin_connections_leave_spop_decisions_flowing() {
    // This test holds 2,000 sockets itself.
    rlimit::increase_nofile_limit(8192).unwrap();
    let Agent {
        mut child,
        agent_port,
        admin,
        _dir,
    } = start_agent().await;

    let mut idle = Vec::new();
    for _ in 0..2_000 {
        let connect = TcpStream::connect(&admin);
        if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_millis(200), connect).await {
            idle.push(s);
        }
    }
    assert!(idle.len() >= 1_900, "only {} admin connections", idle.len());
    tokio::time::sleep(Duration::from_millis(500)).await;

    // SPOP still answers, on several fresh connections.
    let spop: std::net::SocketAddr = format!("127.0.0.1:{agent_port}").parse().unwrap();
    for path in ["/api/orders/health", "/api/orders"] {
        let mut c = tokio::time::timeout(Duration::from_secs(5), Client::handshake(spop))
            .await
            .expect("SPOP handshake while admin is saturated");
        c.send(&authorize(path)).await;
        let ack = c.recv().await.expect("ACK");
        let allow = ack_var(&ack, "allow").cloned();
        let want = path == "/api/orders/health";
        assert_eq!(allow, Some(TypedData::Bool(want)), "{path}");
    }
    // The admin port itself recovers once idle connections time out (5 s headers).
    drop(idle);
    let mut healthy = false;
    for _ in 0..80 {
        if http_get(&admin, "/healthz")
            .await
            .is_some_and(|r| r.starts_with("HTTP/1.1 200"))
        {
            healthy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(healthy, "admin did not recover");
    let _ = child.start_kill();
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = tokio::time::timeout(Duration::from_secs(2), e.read_to_string(&mut err)).await;
    }
    assert!(err.contains("\"fd_limit\""), "the limits are logged: {err}");
}

/// Issue 11 review: a client holding every admin slot, and re-opening each connection
/// the agent closes, once failed every `/healthz`. Probes now get through, whether the
/// flood comes from another address or from the probe's own, and whether its
/// connections stay silent or send blank lines and half a request (which once passed
/// for a whole request and made them untouchable).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_get_through_while_one_client_holds_every_slot() {
    rlimit::increase_nofile_limit(8192).unwrap();
    let agent = start_agent().await;
    let admin: std::net::SocketAddr = agent.admin.parse().unwrap();
    let silent: &'static [u8] = b"";
    let half: &'static [u8] = b"\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n";
    for (flood_from, sends) in [
        ("127.0.0.2", silent),
        ("127.0.0.1", silent),
        ("127.0.0.2", half),
        ("127.0.0.1", half),
    ] {
        let stop = Arc::new(AtomicBool::new(false));
        let opened = Arc::new(AtomicUsize::new(0));
        let mut flood = Vec::new();
        for _ in 0..40 {
            let (stop, opened) = (stop.clone(), opened.clone());
            let from: std::net::SocketAddr = format!("{flood_from}:0").parse().unwrap();
            flood.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let socket = tokio::net::TcpSocket::new_v4().unwrap();
                    socket.bind(from).unwrap();
                    if let Ok(mut s) = socket.connect(admin).await {
                        opened.fetch_add(1, Ordering::Relaxed);
                        let _ = s.write_all(sends).await;
                        // Then nothing until the agent closes it, then at once again.
                        let mut sink = [0u8; 64];
                        let read = s.read(&mut sink);
                        let _ = tokio::time::timeout(Duration::from_secs(10), read).await;
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        assert!(
            opened.load(Ordering::Relaxed) >= 32,
            "the flood holds every slot"
        );
        let mut failed = Vec::new();
        for i in 0..10 {
            let r = http_get(&agent.admin, "/healthz").await;
            if !r.as_deref().is_some_and(|r| r.starts_with("HTTP/1.1 200")) {
                failed.push((i, r));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        stop.store(true, Ordering::Relaxed);
        for f in flood {
            f.abort();
        }
        assert!(
            failed.is_empty(),
            "flood from {flood_from} sending {:?}: {} of 10 probes failed: {failed:?}",
            String::from_utf8_lossy(sends),
            failed.len()
        );
    }
    drop(agent.child);
}
