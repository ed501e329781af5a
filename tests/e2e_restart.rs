//! Restarts and reloads under load, through real HAProxy 2.6 (Debian) and 3.x: the
//! stagedoor binary on the quickstart key and catalog, HAProxy with the shipped
//! haproxy.cfg (its agent backend given the test's servers) and the echo backend, and
//! a few keep-alive clients sending one valid token (tests/common/load.rs). Every
//! test counts failed requests and prints them; none measures speed.
//! README, "Restarts and reloads", is the recipe these follow.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::haproxy::{Reloadable, free_port, repo, require_bin, require_haproxy3};
use common::http::request;
use common::load::{Load, Tally};
use common::peers::Agent;
use common::{Client, ack_var, frame_bytes, hello_26};
use stagedoor::spop::frame::FLAG_FIN;
use stagedoor::spop::{Arg, Body, Frame, Message, TypedData};

/// The agents' drain window (`shutdown_grace_seconds`): above the test backend's
/// health-check detection time (`inter 300ms fall 2`).
const GRACE_SECONDS: u64 = 4;
const CLIENTS: usize = 4;

/// Under CI=true the tests below are not left out.
#[test]
fn peer_tests_run_under_ci() {
    common::haproxy::assert_peer_tests_run_under_ci();
}

/// One agent's files and ports.
#[derive(Clone)]
struct AgentSpec {
    config: PathBuf,
    port: u16,
    admin: u16,
}

/// What a test sets up: agents' configs, HAProxy's config, the token.
struct Stack {
    dir: tempfile::TempDir,
    frontend: u16,
    backend: u16,
    token: String,
}

impl Stack {
    fn new() -> Stack {
        Stack {
            dir: tempfile::tempdir().unwrap(),
            frontend: free_port(),
            backend: free_port(),
            token: token(),
        }
    }

    /// An agent config on fresh ports.
    fn agent(&self, name: &str, reuse_port: bool) -> AgentSpec {
        let (port, admin) = (free_port(), free_port());
        let quickstart = repo().join("examples/quickstart");
        let config = self.dir.path().join(format!("{name}.toml"));
        let text = format!(
            r#"
[agent]
listen = "127.0.0.1:{port}"
shutdown_grace_seconds = {GRACE_SECONDS}
drain_quiet_ms = 1000
reuse_port = {reuse_port}
worker_threads = 1
[admin]
listen = "127.0.0.1:{admin}"
[log]
decisions = "off"
[[issuers]]
issuer = "https://idp.quickstart.example"
audiences = ["quickstart-api"]
jwks_file = "{q}/demo-jwks.json"
algorithms = ["ES256"]
groups_claim = "groups"
[catalog]
source = "file"
files = ["{q}/catalog/*.yaml"]
"#,
            q = quickstart.display()
        );
        std::fs::write(&config, text).unwrap();
        AgentSpec {
            config,
            port,
            admin,
        }
    }

    /// The shipped haproxy.cfg with `agents` as the agent backend's servers (checked
    /// every 300 ms, down after 2 failures), plus a stats socket (its path from the
    /// environment, one per process) that hands the listeners to the next process on
    /// reload (`-x`).
    fn haproxy_config(&self, agents: &[u16]) -> PathBuf {
        let shipped = std::fs::read_to_string(repo().join("haproxy/haproxy.cfg")).unwrap();
        let line = r#"    server stagedoor1 "${STAGEDOOR_AGENT}" check inter 2s maxconn 1000"#;
        assert!(
            shipped.contains(line),
            "the shipped agent server line moved"
        );
        let servers: Vec<String> = agents
            .iter()
            .enumerate()
            .map(|(i, p)| {
                format!(
                    "    server stagedoor{} 127.0.0.1:{p} check inter 300ms fall 2 rise 1 maxconn 1000",
                    i + 1
                )
            })
            .collect();
        let text = shipped.replace(line, &servers.join("\n"))
            + "\nglobal\n    stats socket \"${STAGEDOOR_TEST_SOCKET}\" mode 600 level admin expose-fd listeners\n";
        let path = self.dir.path().join("haproxy.cfg");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn request(&self) -> String {
        format!(
            "GET /api/orders HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Bearer {}\r\n\r\n",
            self.frontend, self.token
        )
    }

    fn frontend(&self) -> String {
        format!("127.0.0.1:{}", self.frontend)
    }
}

/// An ES256 token from the quickstart demo key that the quickstart catalog allows on
/// GET /api/orders (scope orders:read, group payments), valid for an hour.
fn token() -> String {
    let pem = std::fs::read(repo().join("examples/quickstart/demo-signing-key.pem")).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let claims = serde_json::json!({"iss": "https://idp.quickstart.example", "sub": "load",
        "aud": "quickstart-api", "iat": now - 60, "exp": now + 3600, "scope": "orders:read",
        "groups": ["payments-engineers"]});
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some("demo-2026".into());
    jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_ec_pem(&pem).unwrap(),
    )
    .unwrap()
}

/// Starts an agent and waits until its own process answers /readyz 200 (with
/// `reuse_port`, two processes share the admin port: the pid header tells them apart).
async fn start_agent(spec: &AgentSpec) -> Agent {
    let agent = Agent::start(&spec.config);
    let pid = agent.pid().expect("agent runs").to_string();
    let addr = format!("127.0.0.1:{}", spec.admin);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // A probe may land on a stopping process's listener as it closes (reset).
        let probe = || {
            let addr = addr.clone();
            tokio::spawn(async move { request(&addr, "GET", "/readyz", &[]).await })
        };
        if tokio::net::TcpStream::connect(&addr).await.is_ok()
            && let Ok(r) = probe().await
            && r.status == 200
            && r.header("x-stagedoor-pid") == Some(pid.as_str())
        {
            return agent;
        }
        assert!(
            Instant::now() < deadline,
            "agent not ready:\n{}",
            agent.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// SIGTERM, without waiting: the handle says whether it exited 0 (within 15 s).
fn sigterm(mut agent: Agent) -> tokio::task::JoinHandle<(bool, String)> {
    tokio::spawn(async move {
        let ok = agent.terminate().await;
        (ok, agent.log_text())
    })
}

/// Waits until nothing listens on `port` any more (the stopping agent closed it).
async fn until_closed(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok()
    {
        assert!(Instant::now() < deadline, "port {port} still accepts");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// HAProxy on the stack's config, with the echo backend (reloadable).
async fn haproxy(bin: &Path, stack: &Stack, cfg: &Path) -> Reloadable {
    let cfgs = [
        cfg.to_owned(),
        repo().join("examples/quickstart/echo-backend.cfg"),
    ];
    let env = [("STAGEDOOR_BACKEND", format!("127.0.0.1:{}", stack.backend))];
    Reloadable::start(bin, &cfgs, &stack.frontend(), &env, stack.dir.path()).await
}

/// Waits until a request through HAProxy is allowed (health checks passed).
async fn until_allowed(stack: &Stack) {
    let deadline = Instant::now() + Duration::from_secs(15);
    let auth = format!("Bearer {}", stack.token);
    loop {
        let r = request(
            &stack.frontend(),
            "GET",
            "/api/orders",
            &[("Authorization", &auth)],
        )
        .await;
        if r.status == 200 {
            return;
        }
        assert!(Instant::now() < deadline, "never allowed: {r:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn report(what: &str, t: &Tally) {
    println!(
        "{what}: {} answered, {} failed; {}",
        t.answered(),
        t.failed(),
        t.summary()
    );
}

// ---- two agents in the backend: restart one, then the other ---------------------

async fn rolling_restart_of_two_agents(bin: &Path) {
    let stack = Stack::new();
    let specs = [stack.agent("a", false), stack.agent("b", false)];
    let cfg = stack.haproxy_config(&[specs[0].port, specs[1].port]);
    let mut agents = vec![start_agent(&specs[0]).await, start_agent(&specs[1]).await];
    let _hap = haproxy(bin, &stack, &cfg).await;
    until_allowed(&stack).await;
    let load = Load::start(&stack.frontend(), CLIENTS, &stack.request());
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (i, spec) in specs.iter().enumerate() {
        // One at a time: stop it (HAProxy's checks mark it down and it drains), wait
        // for it to exit, start the new one, let HAProxy see it up.
        let old = sigterm(agents.remove(0));
        let (ok, log) = old.await.unwrap();
        assert!(ok, "agent {i} did not exit 0:\n{log}");
        agents.push(start_agent(spec).await);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let t = load.stop().await;
    report("two agents, rolling restart", &t);
    assert!(t.answered() > 100, "the load ran: {}", t.summary());
    assert_eq!(t.failed(), 0, "{}", t.summary());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs HAProxy 2.6: run tests/run.sh"]
async fn haproxy_2_6_two_agents_rolling_restart_fails_nothing() {
    rolling_restart_of_two_agents(&require_bin("haproxy")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs HAProxy 3.x: run tests/run.sh"]
async fn haproxy_3_two_agents_rolling_restart_fails_nothing() {
    rolling_restart_of_two_agents(&require_haproxy3()).await;
}

// ---- one agent, SO_REUSEPORT handover --------------------------------------------

async fn reuse_port_handover(bin: &Path) {
    let stack = Stack::new();
    let spec = stack.agent("a", true);
    let cfg = stack.haproxy_config(&[spec.port]);
    let old = start_agent(&spec).await;
    let _hap = haproxy(bin, &stack, &cfg).await;
    until_allowed(&stack).await;
    let load = Load::start(&stack.frontend(), CLIENTS, &stack.request());
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Start the new process on the same ports, wait until it is ready, stop the old.
    let new = start_agent(&spec).await;
    let sigterm_at = load.now();
    let (ok, log) = sigterm(old).await.unwrap();
    assert!(ok, "the old agent did not exit 0:\n{log}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let t = load.stop().await;
    report("one agent, SO_REUSEPORT handover", &t);
    assert!(t.answered() > 100, "the load ran: {}", t.summary());
    // The old process keeps answering on its connections until the grace end; the
    // NOTIFYs that cross its AGENT-DISCONNECT then are asked again by the shipped
    // haproxy.cfg (send-spoe-group), on the new process's connections.
    println!("SIGTERM at {:.3}s", sigterm_at.as_secs_f64());
    assert_eq!(t.failed(), 0, "{}", t.summary());
    drop(new);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs HAProxy 2.6: run tests/run.sh"]
async fn haproxy_2_6_reuse_port_handover_fails_nothing() {
    reuse_port_handover(&require_bin("haproxy")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs HAProxy 3.x: run tests/run.sh"]
async fn haproxy_3_reuse_port_handover_fails_nothing() {
    reuse_port_handover(&require_haproxy3()).await;
}

// ---- one agent, no handover: SIGTERM and start again ------------------------------

async fn plain_restart(bin: &Path) {
    let stack = Stack::new();
    let spec = stack.agent("a", false);
    let cfg = stack.haproxy_config(&[spec.port]);
    let old = start_agent(&spec).await;
    let _hap = haproxy(bin, &stack, &cfg).await;
    until_allowed(&stack).await;
    let load = Load::start(&stack.frontend(), CLIENTS, &stack.request());
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The window with no agent listening: from SIGTERM to the new process ready.
    let (gap_start, sent_before) = (load.now(), load.sent());
    let old = sigterm(old);
    until_closed(spec.port).await;
    until_closed(spec.admin).await;
    let _new = start_agent(&spec).await;
    let (gap_end, sent_after) = (load.now(), load.sent());
    let (ok, log) = old.await.unwrap();
    assert!(ok, "the old agent did not exit 0:\n{log}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let t = load.stop().await;
    report("one agent, SIGTERM and restart", &t);
    let window = sent_after - sent_before;
    println!(
        "no agent listening for {:.3}s ({window} requests sent in that window, {} of them failed)",
        (gap_end - gap_start).as_secs_f64(),
        t.failed_within(gap_start, gap_end)
    );
    assert!(t.answered() > 100, "the load ran: {}", t.summary());
    // Only requests that started while no agent listened may fail: the old process
    // keeps answering on its open connections, and what crosses their close is asked
    // again (the shipped haproxy.cfg's send-spoe-group).
    let in_gap = t.failed_within(gap_start, gap_end);
    assert!(in_gap <= window, "{}", t.summary());
    assert_eq!(
        t.failed(),
        in_gap,
        "failures outside the gap: {}",
        t.summary()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs HAProxy 2.6: run tests/run.sh"]
async fn haproxy_2_6_plain_restart_fails_only_in_the_gap() {
    plain_restart(&require_bin("haproxy")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs HAProxy 3.x: run tests/run.sh"]
async fn haproxy_3_plain_restart_fails_only_in_the_gap() {
    plain_restart(&require_haproxy3()).await;
}

// ---- HAProxy reloads ---------------------------------------------------------------

/// The agent's open SPOP connections, from /metrics.
async fn open_gauge(spec: &AgentSpec) -> u64 {
    let m = request(&format!("127.0.0.1:{}", spec.admin), "GET", "/metrics", &[])
        .await
        .body;
    m.lines()
        .find(|l| l.starts_with("stagedoor_spop_connections_open "))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no stagedoor_spop_connections_open in:\n{m}")) as u64
}

/// Sockets on the agent's side of `port` (local port = the agent's), by TCP state:
/// (established, close-wait). From /proc/net/tcp.
fn agent_sockets(port: u16) -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let (mut est, mut close_wait) = (0, 0);
    for l in text.lines().skip(1) {
        let f: Vec<&str> = l.split_whitespace().collect();
        let local_port = f[1].rsplit(':').next().unwrap();
        if u16::from_str_radix(local_port, 16).ok() != Some(port) {
            continue;
        }
        match f[3] {
            "01" => est += 1,
            "08" => close_wait += 1,
            _ => {}
        }
    }
    (est, close_wait)
}

async fn reloads(bin: &Path) {
    let stack = Stack::new();
    let spec = stack.agent("a", false);
    let cfg = stack.haproxy_config(&[spec.port]);
    let _agent = start_agent(&spec).await;
    let mut hap = haproxy(bin, &stack, &cfg).await;
    until_allowed(&stack).await;
    let load = Load::start(&stack.frontend(), CLIENTS, &stack.request());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut steady = Vec::new();
    for _ in 0..5 {
        steady.push(open_gauge(&spec).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut old = Vec::new();
    for _ in 0..5 {
        let next = hap.reload().await;
        old.push(std::mem::replace(&mut hap, next));
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    let t = load.stop().await;
    report("five HAProxy reloads", &t);
    for (i, p) in old.iter_mut().enumerate() {
        assert!(
            p.exited().await,
            "old HAProxy {i} still runs:\n{}",
            p.log_tail()
        );
    }
    // No leak: once the old processes are gone, every connection the agent counts
    // is a live socket of the current HAProxy, and none waits half-closed.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (gauge, est, close_wait) = loop {
        let gauge = open_gauge(&spec).await;
        let (est, close_wait) = agent_sockets(spec.port);
        if (gauge == est && close_wait == 0) || Instant::now() > deadline {
            break (gauge, est, close_wait);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!(
        "open SPOP connections: {steady:?} before the reloads, {gauge} after \
         ({est} established, {close_wait} half-closed agent-side sockets)"
    );
    assert!(t.answered() > 100, "the load ran: {}", t.summary());
    assert_eq!(t.non_2xx(), 0, "{}", t.summary());
    assert_eq!(t.transport_errors, 0, "{}", t.summary());
    assert_eq!(
        (gauge, close_wait),
        (est, 0),
        "the gauge follows the sockets"
    );
    let most = *steady.iter().max().unwrap();
    assert!(
        gauge <= most.max(1) * 2,
        "back to the steady value ({steady:?}): {gauge}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs HAProxy 2.6: run tests/run.sh"]
async fn haproxy_2_6_five_reloads_fail_nothing_and_leak_nothing() {
    reloads(&require_bin("haproxy")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs HAProxy 3.x: run tests/run.sh"]
async fn haproxy_3_five_reloads_fail_nothing_and_leak_nothing() {
    reloads(&require_haproxy3()).await;
}

// ---- reload storm: hundreds of SPOP connections opening at once -------------------

/// An `authorize` NOTIFY as the shipped SPOE file sends it, for GET /api/orders.
fn authorize(sid: u64, token: &str) -> Vec<u8> {
    let auth = format!("Bearer {token}");
    frame_bytes(&Frame {
        flags: FLAG_FIN,
        stream_id: sid,
        frame_id: 1,
        body: Body::Notify(vec![Message {
            name: b"authorize".as_slice().into(),
            args: vec![
                Arg::new("method", TypedData::str("GET")),
                Arg::new("path", TypedData::str("/api/orders")),
                Arg::new("host", TypedData::str("orders.example")),
                Arg::new("authorization", TypedData::string(auth)),
            ],
        }]),
    })
}

/// Whether `c` gets an ACK allowing `sid` within HAProxy's `timeout processing`
/// (500 ms in the shipped SPOE file): a later one would have failed the request.
async fn decided(c: &mut Client, sid: u64, token: &str) -> bool {
    c.send(&authorize(sid, token)).await;
    let ack = tokio::time::timeout(Duration::from_millis(500), c.recv()).await;
    matches!(ack, Ok(Some(f)) if f.stream_id == sid
        && ack_var(&f, "allow") == Some(&TypedData::Bool(true)))
}

/// Opens `n` connections at once, each HELLO then one decision; counts the ones that
/// did not get both. The connections stay open until dropped.
async fn burst(addr: std::net::SocketAddr, n: usize, token: &str) -> (Vec<Client>, usize) {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let token = token.to_owned();
            tokio::spawn(async move {
                let mut c = Client::connect(addr).await;
                c.send(&hello_26()).await;
                let hello = c.recv().await;
                let ok = matches!(
                    hello,
                    Some(Frame {
                        body: Body::AgentHello(_),
                        ..
                    })
                ) && tokio::time::timeout(
                    Duration::from_secs(5),
                    decided_slow(&mut c, i as u64 + 1, &token),
                )
                .await
                .unwrap_or(false);
                (c, ok)
            })
        })
        .collect();
    let mut clients = Vec::new();
    let mut failed = 0;
    for t in tasks {
        let (c, ok) = t.await.unwrap();
        failed += usize::from(!ok);
        clients.push(c);
    }
    (clients, failed)
}

/// A burst connection's decision: it only has to come (no processing timeout).
async fn decided_slow(c: &mut Client, sid: u64, token: &str) -> bool {
    c.send(&authorize(sid, token)).await;
    matches!(c.recv().await, Some(f) if ack_var(&f, "allow") == Some(&TypedData::Bool(true)))
}

async fn storm(bin: &Path) {
    let stack = Stack::new();
    let spec = stack.agent("a", false);
    let cfg = stack.haproxy_config(&[spec.port]);
    let _agent = start_agent(&spec).await;
    let _hap = haproxy(bin, &stack, &cfg).await;
    until_allowed(&stack).await;
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", spec.port).parse().unwrap();
    // An existing connection deciding all along, beside HAProxy's own traffic.
    let mut steady = Client::connect(addr).await;
    steady.send(&hello_26()).await;
    assert!(steady.recv().await.is_some(), "AGENT-HELLO");
    let load = Load::start(&stack.frontend(), CLIENTS, &stack.request());
    let token = stack.token.clone();
    let stop = tokio_util::sync::CancellationToken::new();
    let decider = tokio::spawn({
        let stop = stop.clone();
        async move {
            let (mut sid, mut failed) = (1u64, 0u64);
            while !stop.is_cancelled() {
                failed += u64::from(!decided(&mut steady, sid, &token).await);
                sid += 2;
            }
            (sid / 2, failed)
        }
    });
    // Three storms of 300 connections, each while the previous one closes.
    let mut burst_failed = 0;
    let mut held = Vec::new();
    for _ in 0..3 {
        let (clients, failed) = burst(addr, 300, &stack.token).await;
        burst_failed += failed;
        held = clients; // the previous storm's connections close here
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    drop(held);
    stop.cancel();
    let (decisions, decisions_failed) = decider.await.unwrap();
    let t = load.stop().await;
    report("connection storms", &t);
    println!(
        "existing connection: {decisions} decisions, {decisions_failed} failed; \
         storm connections without HELLO and a decision: {burst_failed} of 900"
    );
    assert!(decisions > 50, "the existing connection decided");
    assert_eq!(decisions_failed, 0, "decisions on the existing connection");
    assert_eq!(burst_failed, 0, "storm connections");
    assert!(t.answered() > 100, "the load ran: {}", t.summary());
    assert_eq!(t.failed(), 0, "{}", t.summary());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs HAProxy 2.6: run tests/run.sh"]
async fn haproxy_2_6_connection_storms_stall_no_decision() {
    storm(&require_bin("haproxy")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs HAProxy 3.x: run tests/run.sh"]
async fn haproxy_3_connection_storms_stall_no_decision() {
    storm(&require_haproxy3()).await;
}
