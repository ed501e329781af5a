//! The shipped haproxy.cfg asks the agent once more when a NOTIFY was lost to a
//! closing connection (issue 14: an agent restarting closes its connections with
//! AGENT-DISCONNECT, and a NOTIFY crossing it gets no answer; SPOP has no "go
//! away"). A hand-made agent injects that fault, which the real agent only hits by
//! chance: it answers the first NOTIFY it sees with AGENT-DISCONNECT. Through real
//! HAProxy 2.6 and 3.x the request is still decided (200, `spoe_retry` in the log),
//! while an agent that never answers is asked twice, not more (503), and on 2.6 a
//! timeout is not asked again. Also the shipped per-source limit on sign-in requests.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use common::haproxy::{Haproxy, free_port, repo, require_bin, require_haproxy3};
use common::http::request;
use stagedoor::spop::session::{Session, Step, disconnect_frame};
use stagedoor::spop::{Action, Frame, Scope, Status, TypedData};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the fault agent does.
#[derive(Clone, Copy, PartialEq)]
enum Fault {
    /// The first NOTIFY gets AGENT-DISCONNECT (status 0, as a stopping agent sends),
    /// then the connection closes; the others are allowed.
    Disconnect,
    /// No NOTIFY is ever answered (HAProxy's `timeout processing` ends each).
    Silence,
}

/// An SPOP agent that allows NOTIFYs but for `fault`.
/// Returns its port and the NOTIFY count.
async fn fault_agent(fault: Fault) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let notifies = Arc::new(AtomicUsize::new(0));
    let seen = notifies.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(serve(s, fault, seen.clone()));
        }
    });
    (port, notifies)
}

async fn serve(mut s: TcpStream, fault: Fault, seen: Arc<AtomicUsize>) {
    let mut session = Session::new(16_380);
    loop {
        while let Some(step) = session.next_step() {
            match step {
                Step::Send(frame) => {
                    if s.write_all(&frame).await.is_err() {
                        return;
                    }
                }
                Step::Notify(n) => {
                    let first = seen.fetch_add(1, Ordering::SeqCst) == 0;
                    if fault == Fault::Silence {
                        continue;
                    }
                    if first {
                        let _ = s.write_all(&disconnect_frame(Status::Normal)).await;
                        let _ = s.shutdown().await;
                        return;
                    }
                    let actions = vec![
                        Action::set(Scope::Txn, "allow", TypedData::Bool(true)),
                        Action::set(Scope::Txn, "status", TypedData::Int64(200)),
                    ];
                    let mut out = BytesMut::new();
                    Frame::ack(n.stream_id(), n.frame_id(), actions)
                        .encode(&mut out, session.max_frame_size())
                        .unwrap();
                    if s.write_all(&out).await.is_err() {
                        return;
                    }
                }
                Step::Close(_) => return,
            }
        }
        match s.read_buf(session.read_buf()).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

async fn through(bin: &Path, fault: Fault) -> (u16, usize, String) {
    let (agent, notifies) = fault_agent(fault).await;
    let (frontend, backend) = (free_port(), free_port());
    let hap = Haproxy::start_many(
        bin,
        &[
            repo().join("haproxy/haproxy.cfg"),
            repo().join("examples/quickstart/echo-backend.cfg"),
        ],
        frontend,
        &[
            ("STAGEDOOR_AGENT", format!("127.0.0.1:{agent}")),
            ("STAGEDOOR_BACKEND", format!("127.0.0.1:{backend}")),
        ],
    )
    .await;
    let r = request(&hap.frontend, "GET", "/anything", &[]).await;
    // HAProxy logs after the response: give it a moment.
    let mut log = hap.log_text();
    for _ in 0..40 {
        if log
            .lines()
            .any(|l| l.contains("fe_main ") && l.contains("GET /anything"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        log = hap.log_text();
    }
    (r.status, notifies.load(Ordering::SeqCst), log)
}

async fn retry_after_a_lost_notify(bin: &Path) {
    let (status, notifies, log) = through(bin, Fault::Disconnect).await;
    assert_eq!(status, 200, "{log}");
    assert_eq!(notifies, 2, "asked once more: {log}");
    let line = log
        .lines()
        .find(|l| l.contains("fe_main ") && l.contains("GET /anything"))
        .unwrap_or_else(|| panic!("no frontend log line: {log}"));
    // With its cause: seen 256 (the disconnect's status 0) on 2.6; 256, 257 (I/O
    // error) or 1 (a timeout) on 3.x, depending on the race.
    let why = line
        .split("spoe_retry=")
        .nth(1)
        .and_then(|r| r.split(' ').next());
    assert!(
        why.is_some_and(|w| w.parse::<u32>().is_ok()),
        "the retry is logged with its cause: {line}"
    );
    assert!(
        line.contains("spoe_error=-"),
        "and no error remains: {line}"
    );

    // An agent that never answers is asked twice on 3.x (which may report a lost
    // NOTIFY as a timeout), once on 2.6, and the request fails closed.
    let (status, notifies, log) = through(bin, Fault::Silence).await;
    assert_eq!(status, 503, "{log}");
    let v3 = log.contains("HAProxy version 3") || bin.to_string_lossy().contains("haproxy3");
    assert_eq!(notifies, if v3 { 2 } else { 1 }, "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs HAProxy 2.6: run tests/run.sh"]
async fn haproxy_2_6_asks_again_after_a_lost_notify() {
    retry_after_a_lost_notify(&require_bin("haproxy")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs HAProxy 3.x: run tests/run.sh"]
async fn haproxy_3_asks_again_after_a_lost_notify() {
    retry_after_a_lost_notify(&require_haproxy3()).await;
}

/// A stand-in for the sign-in listener: 204 to every request, at once.
async fn answer_204() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    port
}

/// More than 30 sign-in requests from one source in 10 s get 429; other requests
/// are not counted. No agent runs: sign-in requests never reach one.
async fn sign_in_rate(bin: &Path) {
    let (frontend, backend, agent) = (free_port(), free_port(), free_port());
    let sign_in = answer_204().await;
    let hap = Haproxy::start_many(
        bin,
        &[
            repo().join("haproxy/haproxy.cfg"),
            repo().join("examples/quickstart/echo-backend.cfg"),
        ],
        frontend,
        &[
            ("STAGEDOOR_AGENT", format!("127.0.0.1:{agent}")),
            ("STAGEDOOR_BACKEND", format!("127.0.0.1:{backend}")),
            ("STAGEDOOR_SIGN_IN", format!("127.0.0.1:{sign_in}")),
        ],
    )
    .await;
    let mut statuses = Vec::new();
    for _ in 0..40 {
        statuses.push(
            request(&hap.frontend, "GET", "/.stagedoor/login", &[])
                .await
                .status,
        );
    }
    assert!(statuses[..30].iter().all(|s| *s == 204), "{statuses:?}");
    assert!(statuses[31..].iter().all(|s| *s == 429), "{statuses:?}");
    // Other requests are not limited (no agent here: 503, not 429).
    let r = request(&hap.frontend, "GET", "/api/orders", &[]).await;
    assert_eq!(r.status, 503, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs HAProxy 2.6: run tests/run.sh"]
async fn haproxy_2_6_limits_sign_in_requests_per_source() {
    sign_in_rate(&require_bin("haproxy")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs HAProxy 3.x: run tests/run.sh"]
async fn haproxy_3_limits_sign_in_requests_per_source() {
    sign_in_rate(&require_haproxy3()).await;
}

#[test]
fn peer_tests_run_under_ci() {
    common::haproxy::assert_peer_tests_run_under_ci();
}
