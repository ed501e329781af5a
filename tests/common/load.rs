//! A bounded load loop for end-to-end fault tests: a few keep-alive HTTP/1.1 clients
//! send the same request until stopped and count what came back (statuses, transport
//! errors, and when each failure started), never how fast.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// What the clients saw.
#[derive(Debug, Default)]
pub struct Tally {
    pub statuses: BTreeMap<u16, u64>,
    /// No answer at all: connect refused or reset, closed mid-answer, 10 s silence.
    pub transport_errors: u64,
    /// A kept-alive connection closed by HAProxy before any byte of the answer (it
    /// closes idle keep-alive connections when it stops): sent again on a new
    /// connection, as HTTP clients do for idempotent requests.
    pub resent: u64,
    /// Each failure: when its request started (since the load started) and what.
    pub failures: Vec<(Duration, String)>,
}

impl Tally {
    pub fn answered(&self) -> u64 {
        self.statuses.values().sum()
    }

    pub fn non_2xx(&self) -> u64 {
        self.statuses
            .iter()
            .filter(|(s, _)| !(200..300).contains(*s))
            .map(|(_, n)| n)
            .sum()
    }

    /// Failed requests: non-2xx answers and no answers.
    pub fn failed(&self) -> u64 {
        self.non_2xx() + self.transport_errors
    }

    /// Failures whose request started within `from..to` (since the load started).
    pub fn failed_within(&self, from: Duration, to: Duration) -> u64 {
        self.failures
            .iter()
            .filter(|(at, _)| (from..to).contains(at))
            .count() as u64
    }

    pub fn summary(&self) -> String {
        let first: Vec<String> = self
            .failures
            .iter()
            .take(10)
            .map(|(at, what)| format!("{:.3}s {what}", at.as_secs_f64()))
            .collect();
        format!(
            "statuses {:?}, transport errors {}, resent after a keep-alive close {}, \
             first failures {first:?}",
            self.statuses, self.transport_errors, self.resent
        )
    }

    fn merge(&mut self, other: Tally) {
        for (s, n) in other.statuses {
            *self.statuses.entry(s).or_default() += n;
        }
        self.transport_errors += other.transport_errors;
        self.resent += other.resent;
        self.failures.extend(other.failures);
        self.failures.sort_by_key(|(at, _)| *at);
    }

    fn fail(&mut self, at: Duration, what: String) {
        self.failures.push((at, what));
    }
}

/// Clients sending `request` to `addr` until [`Load::stop`].
pub struct Load {
    stop: CancellationToken,
    clients: Vec<JoinHandle<Tally>>,
    pub started: Instant,
    sent: Arc<AtomicU64>,
}

impl Load {
    /// Starts `clients` keep-alive clients; `request` is a whole HTTP/1.1 request.
    pub fn start(addr: &str, clients: usize, request: &str) -> Load {
        Load::paced(addr, clients, request, Duration::ZERO)
    }

    /// Like [`Load::start`], each client waiting `pause` between requests (bounded
    /// load beside peers that need the cores too).
    pub fn paced(addr: &str, clients: usize, request: &str, pause: Duration) -> Load {
        let stop = CancellationToken::new();
        let started = Instant::now();
        let sent = Arc::new(AtomicU64::new(0));
        let request: Arc<[u8]> = request.as_bytes().into();
        let clients = (0..clients)
            .map(|_| {
                let c = Client {
                    addr: addr.to_owned(),
                    request: request.clone(),
                    started,
                    sent: sent.clone(),
                    pause,
                };
                tokio::spawn(c.run(stop.clone()))
            })
            .collect();
        Load {
            stop,
            clients,
            started,
            sent,
        }
    }

    /// Requests sent so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Time since the load started.
    pub fn now(&self) -> Duration {
        self.started.elapsed()
    }

    /// Stops the clients (each finishes its request in flight) and adds up.
    pub async fn stop(self) -> Tally {
        self.stop.cancel();
        let mut total = Tally::default();
        for c in self.clients {
            total.merge(c.await.expect("load client"));
        }
        total
    }
}

struct Client {
    addr: String,
    request: Arc<[u8]>,
    started: Instant,
    sent: Arc<AtomicU64>,
    pause: Duration,
}

/// How one exchange ended.
enum Outcome {
    Answer {
        status: u16,
        close: bool,
    },
    /// Closed before any byte of the answer.
    ClosedEarly,
    Broken(String),
}

impl Client {
    async fn run(self, stop: CancellationToken) -> Tally {
        let mut t = Tally::default();
        let mut conn: Option<(BufReader<TcpStream>, u64)> = None;
        while !stop.is_cancelled() {
            let at = self.started.elapsed();
            self.sent.fetch_add(1, Ordering::Relaxed);
            let mut tries = 0;
            loop {
                tries += 1;
                if conn.is_none() {
                    match TcpStream::connect(&self.addr).await {
                        Ok(s) => {
                            let _ = s.set_nodelay(true);
                            conn = Some((BufReader::new(s), 0));
                        }
                        Err(e) => {
                            t.transport_errors += 1;
                            t.fail(at, format!("connect: {e}"));
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            break;
                        }
                    }
                }
                let (stream, served) = conn.as_mut().expect("connected");
                let out =
                    tokio::time::timeout(Duration::from_secs(10), exchange(stream, &self.request))
                        .await
                        .unwrap_or_else(|_| Outcome::Broken("no answer within 10 s".into()));
                match out {
                    Outcome::Answer { status, close } => {
                        *served += 1;
                        *t.statuses.entry(status).or_default() += 1;
                        if !(200..300).contains(&status) {
                            t.fail(at, format!("status {status}"));
                        }
                        if close {
                            conn = None;
                        }
                    }
                    Outcome::ClosedEarly if *served > 0 && tries == 1 => {
                        t.resent += 1;
                        conn = None;
                        continue;
                    }
                    Outcome::ClosedEarly => {
                        conn = None;
                        t.transport_errors += 1;
                        t.fail(at, "closed before any answer".into());
                    }
                    Outcome::Broken(why) => {
                        conn = None;
                        t.transport_errors += 1;
                        t.fail(at, why);
                    }
                }
                break;
            }
            if !self.pause.is_zero() {
                tokio::time::sleep(self.pause).await;
            }
        }
        t
    }
}

/// One request and its whole answer (Content-Length bodies, as HAProxy's
/// `http-request return` and the echo backend send).
async fn exchange(s: &mut BufReader<TcpStream>, request: &[u8]) -> Outcome {
    if let Err(e) = s.get_mut().write_all(request).await {
        return Outcome::Broken(format!("write: {e}"));
    }
    let mut line = String::new();
    match s.read_line(&mut line).await {
        Ok(0) => return Outcome::ClosedEarly,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
            return Outcome::ClosedEarly;
        }
        Err(e) => return Outcome::Broken(format!("read: {e}")),
        Ok(_) => {}
    }
    let Some(status) = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
    else {
        return Outcome::Broken(format!("no status line: {line:?}"));
    };
    let (mut length, mut close) = (0usize, false);
    loop {
        line.clear();
        match s.read_line(&mut line).await {
            Ok(0) => return Outcome::Broken("closed inside the headers".into()),
            Err(e) => return Outcome::Broken(format!("read headers: {e}")),
            Ok(_) => {}
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            let v = v.trim();
            if k.eq_ignore_ascii_case("content-length") {
                length = v.parse().unwrap_or(0);
            } else if k.eq_ignore_ascii_case("connection") && v.eq_ignore_ascii_case("close") {
                close = true;
            }
        }
    }
    let mut body = vec![0; length];
    if let Err(e) = s.read_exact(&mut body).await {
        return Outcome::Broken(format!("read body: {e}"));
    }
    Outcome::Answer { status, close }
}
