//! Beside the key-set and catalog fetches: one fake HTTP/1.1 server on 127.0.0.1:0 that
//! answers what a test tells it to, faults included (a hang-up, a silence, raw bytes,
//! a slow answer), and records what it was asked. The JWKS, discovery and Backstage
//! clients under test talk to it over real sockets.
//!
//! # Paused time
//!
//! A `start_paused` test that fetches from this server needs [`small_clock_steps`].
//! Tokio moves a paused clock to the next timer whenever the runtime has no task to
//! run, and a task waiting for a socket does not count: the one park between a
//! client's `connect` and the server's `accept` (or between the answer and the
//! client's read) may jump the clock to a client's 3 s or 10 s timeout and fail the
//! fetch. Holding a 1 ms timer caps every such jump at 1 ms; each fetch then costs a
//! few virtual milliseconds. (Both ends run in the test's own runtime, and a loopback
//! write is readable by the time the syscall returns, so each park finds the I/O it
//! waits for.)
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Largest request head read; a longer one drops the connection.
const MAX_HEAD: usize = 64 * 1024;

/// One request as the server read it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The target's path, without the query.
    pub path: String,
    pub query: Vec<(String, String)>,
    /// Names in lower case.
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Request {
    /// The first value of query parameter `key`.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of query parameter `key`, in order.
    pub fn params(&self, key: &str) -> Vec<&str> {
        self.query
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// One canned answer. Every answer closes the connection after it.
#[derive(Clone, Debug)]
pub enum Reply {
    /// 200 with this body; `content-type: application/json` unless `headers` has one.
    Ok {
        body: String,
        headers: Vec<(String, String)>,
    },
    /// Any status, same header rule.
    Status {
        code: u16,
        headers: Vec<(String, String)>,
        body: String,
    },
    /// Bytes written as they are.
    Raw(Vec<u8>),
    /// Close the connection without answering.
    Hangup,
    /// Never answer (the connection stays open until the server stops).
    Hang,
    /// Answer with the inner reply after a delay (tokio time: paused-clock tests
    /// advance through it).
    Delayed(Duration, Box<Reply>),
}

impl Reply {
    /// 200 with a JSON body.
    pub fn json(body: impl Into<String>) -> Reply {
        Reply::Ok {
            body: body.into(),
            headers: Vec::new(),
        }
    }

    /// `code` with a JSON body.
    pub fn status(code: u16, body: impl Into<String>) -> Reply {
        Reply::Status {
            code,
            headers: Vec::new(),
            body: body.into(),
        }
    }
}

/// Computes the answer to a request that no [`FaultServer::set`] route matches.
pub type Handler = Arc<dyn Fn(&Request) -> Reply + Send + Sync>;

/// What every connection shares with the server handle.
struct Shared {
    routes: Mutex<HashMap<String, Reply>>,
    handler: Option<Handler>,
    requests: Mutex<Vec<Request>>,
    hits: Mutex<HashMap<String, usize>>,
    total: AtomicUsize,
}

/// The server. Dropping (or [`FaultServer::stop`]) closes the listener and every
/// connection.
pub struct FaultServer {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultServer {
    /// A server answering by path from the routes [`FaultServer::set`] adds, 404 for others.
    pub async fn start() -> FaultServer {
        FaultServer::start_on(bind().await, None)
    }

    /// A server answering every request with `handler` (routes added with `set` first).
    pub async fn with_handler(handler: Handler) -> FaultServer {
        FaultServer::start_on(bind().await, Some(handler))
    }

    /// Serves on a listener the test bound itself (to restart on the same port).
    pub fn start_on(listener: TcpListener, handler: Option<Handler>) -> FaultServer {
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared {
            routes: Mutex::default(),
            handler,
            requests: Mutex::default(),
            hits: Mutex::default(),
            total: AtomicUsize::new(0),
        });
        let conns = shared.clone();
        let task = tokio::spawn(async move {
            // Owned here: aborting this task drops the set, which aborts every connection.
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                connections.spawn(serve(stream, conns.clone()));
                while connections.try_join_next().is_some() {}
            }
        });
        FaultServer {
            base: format!("http://{addr}"),
            addr,
            shared,
            task,
        }
    }

    /// Stops accepting and drops every connection; the port refuses once this returns.
    pub async fn stop(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Answers requests for `path` with `reply` from now on.
    pub fn set(&self, path: &str, reply: Reply) {
        self.shared
            .routes
            .lock()
            .unwrap()
            .insert(path.to_owned(), reply);
    }

    /// Requests for `path` so far.
    pub fn hits(&self, path: &str) -> usize {
        self.shared
            .hits
            .lock()
            .unwrap()
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    pub fn total_hits(&self) -> usize {
        self.shared.total.load(Ordering::SeqCst)
    }

    /// The requests recorded since the last call.
    pub fn take_requests(&self) -> Vec<Request> {
        std::mem::take(&mut self.shared.requests.lock().unwrap())
    }
}

async fn bind() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.expect("bind")
}

/// One connection: one request, one answer, then close.
async fn serve(mut stream: TcpStream, shared: Arc<Shared>) {
    let Some(req) = read_request(&mut stream).await else {
        return;
    };
    shared.total.fetch_add(1, Ordering::SeqCst);
    *shared
        .hits
        .lock()
        .unwrap()
        .entry(req.path.clone())
        .or_default() += 1;
    shared.requests.lock().unwrap().push(req.clone());
    let route = shared.routes.lock().unwrap().get(&req.path).cloned();
    let mut reply = match (route, &shared.handler) {
        (Some(r), _) => r,
        (None, Some(handler)) => handler(&req),
        (None, None) => Reply::status(404, "not found"),
    };
    while let Reply::Delayed(d, inner) = reply {
        tokio::time::sleep(d).await;
        reply = *inner;
    }
    let (code, headers, body) = match reply {
        Reply::Ok { body, headers } => (200, headers, body),
        Reply::Status {
            code,
            headers,
            body,
        } => (code, headers, body),
        Reply::Raw(bytes) => {
            let _ = stream.write_all(&bytes).await;
            let _ = stream.shutdown().await;
            return;
        }
        Reply::Hangup => return,
        Reply::Hang => std::future::pending().await,
        Reply::Delayed(..) => unreachable!("unwrapped above"),
    };
    let mut head = format!(
        "HTTP/1.1 {code} X\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
    {
        head.push_str("content-type: application/json\r\n");
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// The request head and its `content-length` body; None when the client goes away
/// first or the head is too long.
async fn read_request(stream: &mut TcpStream) -> Option<Request> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        if buf.len() > MAX_HEAD {
            return None;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_owned();
    let target = first.next()?.to_owned();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .get("content-length")
        .map_or(0, |v| v.parse().expect("content-length"));
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    let url = reqwest::Url::parse(&format!("http://fake{target}")).ok()?;
    Some(Request {
        method,
        path: url.path().to_owned(),
        query: url.query_pairs().into_owned().collect(),
        headers,
        body,
    })
}

/// Keeps a 1 ms timer pending for as long as it lives, so that a paused clock never
/// jumps further than that while a socket is in flight (module docs). For
/// `start_paused` tests only: under real time it would only wake the runtime 1000
/// times a second.
pub fn small_clock_steps() -> ClockSteps {
    ClockSteps(tokio::spawn(async {
        loop {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }))
}

/// Stops the 1 ms timer of [`small_clock_steps`] on drop.
pub struct ClockSteps(tokio::task::JoinHandle<()>);

impl Drop for ClockSteps {
    fn drop(&mut self) {
        self.0.abort();
    }
}
