//! Backends for tests/e2e_desync.rs: one HTTP/1.1 server that records every request
//! it gets, raw bytes and trailers included, and reads each one the way a family of
//! real backends would (nginx and Go take the vhost from an absolute-form target,
//! Express routes the pathname Node's `url.parse` finds, method-override
//! middlewares, IIS/Symfony rewrite headers, Rails' forwarding headers, a
//! hop-by-hop-aware proxy in front of the app). It answers `Upgrade: h2c` with 101
//! and then serves HTTP/2 on the tunnel, and `Upgrade: websocket` with 101 and an
//! echo. Also a tiny HTTP/2 client (literal HPACK only) for requests with trailers.
//! Imported with `#[path]` by the test that uses it, not through `common`.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One request as the backend received it.
#[derive(Clone, Debug, Default)]
pub struct Seen {
    /// The bytes of this request on the wire (for HTTP/1.1: head, body, trailers).
    pub raw: Vec<u8>,
    pub method: String,
    pub target: String,
    pub version: String,
    pub headers: Vec<(String, String)>,
    pub trailers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Came as HTTP/2 over a connection HAProxy had turned into a tunnel (h2c).
    pub tunnelled: bool,
}

impl Seen {
    /// Every value of a header (case-insensitive name), in order.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.all(name).into_iter().next()
    }

    /// The authority of an absolute-form target (`scheme://authority...`), if any.
    fn target_authority(&self) -> Option<&str> {
        let (scheme, rest) = self.target.split_once("://")?;
        if scheme.is_empty() || !scheme.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return None;
        }
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let authority = &rest[..end];
        Some(authority.rsplit_once('@').map_or(authority, |(_, h)| h))
    }

    /// nginx and Go's net/http: the host of an absolute-form target wins over the
    /// Host header (RFC 9112 §3.2.2). Lower-cased, without the port.
    pub fn vhost(&self) -> Option<String> {
        self.target_authority()
            .or(self.header("host"))
            .map(host_only)
    }

    /// Express (Node's legacy `url.parse`): the pathname of the target, "/" when an
    /// absolute-form target has none (`http://x?/a` routes to "/").
    pub fn express_path(&self) -> String {
        let rest = match self.target.split_once("://") {
            Some((_, rest)) if self.target_authority().is_some() => {
                let start = rest.find(['/', '?', '#']).unwrap_or(rest.len());
                &rest[start..]
            }
            _ => self.target.as_str(),
        };
        let path = &rest[..rest.find(['?', '#']).unwrap_or(rest.len())];
        if path.is_empty() {
            "/".to_owned()
        } else {
            path.to_owned()
        }
    }

    /// Express's method-override and ASP.NET: the method the handler runs.
    pub fn effective_method(&self) -> String {
        [
            "x-http-method-override",
            "x-http-method",
            "x-method-override",
        ]
        .iter()
        .find_map(|h| self.header(h))
        .map_or_else(|| self.method.clone(), |m| m.trim().to_ascii_uppercase())
    }

    /// IIS URL Rewrite and Symfony: X-Original-URL or X-Rewrite-URL replace the path.
    pub fn routed_path(&self) -> String {
        self.header("x-original-url")
            .or(self.header("x-rewrite-url"))
            .map_or_else(|| self.express_path(), |u| u.to_owned())
    }

    /// Rails (Rack): `Forwarded: host=` first, then X-Forwarded-Host, then Host.
    pub fn rails_host(&self) -> Option<String> {
        let forwarded = self.header("forwarded").and_then(|f| {
            f.split([';', ','])
                .filter_map(|p| p.trim().split_once('='))
                .find(|(k, _)| k.eq_ignore_ascii_case("host"))
                .map(|(_, v)| v.trim_matches('"').to_owned())
        });
        forwarded
            .or_else(|| {
                self.header("x-forwarded-host")
                    .map(|v| v.split(',').next().unwrap_or("").trim().to_owned())
            })
            .or_else(|| self.header("host").map(str::to_owned))
            .map(|h| host_only(&h))
    }

    /// What the app gets as X-Auth-Subject behind a proxy that drops the headers
    /// named in Connection (Go's httputil.ReverseProxy, RFC 9110 §7.6.1).
    pub fn subject_behind_proxy(&self) -> Option<String> {
        let dropped = self
            .all("connection")
            .iter()
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("x-auth-subject"));
        if dropped {
            None
        } else {
            self.header("x-auth-subject").map(str::to_owned)
        }
    }
}

/// Lower-cased host without the port (`[::1]:80` → `[::1]`).
pub fn host_only(h: &str) -> String {
    let h = h.trim();
    let host = if h.starts_with('[') {
        h.find(']').map_or(h, |i| &h[..=i])
    } else {
        h.rsplit_once(':').map_or(h, |(host, _)| host)
    };
    host.to_ascii_lowercase()
}

/// The recording backend, on a free port; its accept loop ends on drop.
pub struct Backend {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Backend {
    pub async fn start() -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, record.clone()));
            }
        });
        Backend { addr, seen, task }
    }

    /// Every request received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut s: TcpStream, seen: Arc<Mutex<Vec<Seen>>>) {
    let mut buf = Vec::new();
    loop {
        let req = match read_request(&mut s, &mut buf).await {
            Some(r) => r,
            None => return,
        };
        seen.lock().unwrap().push(req.clone());
        let upgrade = req.header("upgrade").unwrap_or("").to_ascii_lowercase();
        if upgrade.contains("h2c") {
            // An h2c-capable server (Go's h2c, Tomcat, Jetty, Netty): switch and speak
            // HTTP/2 on the same connection from now on.
            let _ = s
                .write_all(
                    b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
                )
                .await;
            h2c_tunnel(s, buf, seen).await;
            return;
        }
        if upgrade == "websocket" {
            let key = req.header("sec-websocket-key").unwrap_or("").to_owned();
            let answer = format!(
                "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                websocket_accept(&key)
            );
            if s.write_all(answer.as_bytes()).await.is_err() || s.write_all(&buf).await.is_err() {
                return;
            }
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = s.read(&mut chunk).await {
                if s.write_all(&chunk[..n]).await.is_err() {
                    return;
                }
            }
            return;
        }
        let body = serde_json::json!({
            "method": req.effective_method(),
            "path": req.express_path(),
            "vhost": req.vhost(),
            "x_auth_subject": req.header("x-auth-subject"),
        })
        .to_string();
        let close = req
            .all("connection")
            .iter()
            .any(|v| v.to_ascii_lowercase().contains("close"))
            || req.version == "HTTP/1.0";
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{}\r\n{body}",
            body.len(),
            if close { "Connection: close\r\n" } else { "" }
        );
        if s.write_all(answer.as_bytes()).await.is_err() || close {
            return;
        }
    }
}

/// Reads one HTTP/1.1 request (head, then a Content-Length or chunked body and its
/// trailers) from `s`, `buf` holding bytes already read. None on EOF or garbage.
async fn read_request(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Seen> {
    let head_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        fill(s, buf).await?;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut start = lines.next()?.splitn(3, ' ');
    let (method, target, version) = (start.next()?, start.next()?, start.next()?);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut req = Seen {
        method: method.to_owned(),
        target: target.to_owned(),
        version: version.to_owned(),
        headers,
        ..Seen::default()
    };
    let mut pos = head_end;
    let chunked = req
        .all("transfer-encoding")
        .iter()
        .any(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        loop {
            let line_end = loop {
                if let Some(i) = find(&buf[pos..], b"\r\n") {
                    break pos + i;
                }
                fill(s, buf).await?;
            };
            let size_text = String::from_utf8_lossy(&buf[pos..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
            pos = line_end + 2;
            if size == 0 {
                // Trailer fields up to an empty line.
                loop {
                    let end = loop {
                        if let Some(i) = find(&buf[pos..], b"\r\n") {
                            break pos + i;
                        }
                        fill(s, buf).await?;
                    };
                    let line = String::from_utf8_lossy(&buf[pos..end]).into_owned();
                    pos = end + 2;
                    match line.split_once(':') {
                        Some((k, v)) => req
                            .trailers
                            .push((k.trim().to_owned(), v.trim().to_owned())),
                        None => break,
                    }
                }
                break;
            }
            while buf.len() < pos + size + 2 {
                fill(s, buf).await?;
            }
            req.body.extend_from_slice(&buf[pos..pos + size]);
            pos += size + 2;
        }
    } else if let Some(len) = req
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        while buf.len() < pos + len {
            fill(s, buf).await?;
        }
        req.body = buf[pos..pos + len].to_vec();
        pos += len;
    }
    req.raw = buf.drain(..pos).collect();
    Some(req)
}

async fn fill(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 8192];
    match s.read(&mut chunk).await {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Some(())
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn websocket_accept(key: &str) -> String {
    let digest = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
        format!("{key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11").as_bytes(),
    );
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

/// After a 101 to h2c: the server preface, the answer to the upgraded request
/// (stream 1), then every HEADERS frame the client sends is a request, recorded
/// as `tunnelled` and answered 200.
async fn h2c_tunnel(mut s: TcpStream, mut buf: Vec<u8>, seen: Arc<Mutex<Vec<Seen>>>) {
    let mut out = frame(4, 0, 0, &[]);
    out.extend(frame(1, END_STREAM | END_HEADERS, 1, &[0x88]));
    if s.write_all(&out).await.is_err() {
        return;
    }
    while buf.len() < PREFACE.len() {
        if fill(&mut s, &mut buf).await.is_none() {
            return;
        }
    }
    if &buf[..PREFACE.len()] != PREFACE {
        return;
    }
    buf.drain(..PREFACE.len());
    loop {
        while let Some((kind, flags, stream, payload, used)) = parse_frame(&buf) {
            let raw: Vec<u8> = buf.drain(..used).collect();
            match kind {
                4 if flags & 1 == 0 => {
                    let _ = s.write_all(&frame(4, 1, 0, &[])).await;
                }
                1 => {
                    let fields = decode_literals(&payload);
                    let get = |n: &str| {
                        fields
                            .iter()
                            .find(|(k, _)| k == n)
                            .map(|(_, v)| v.clone())
                            .unwrap_or_default()
                    };
                    seen.lock().unwrap().push(Seen {
                        raw,
                        method: get(":method"),
                        target: get(":path"),
                        version: "HTTP/2.0".into(),
                        headers: fields
                            .iter()
                            .filter(|(k, _)| !k.starts_with(':'))
                            .cloned()
                            .chain(std::iter::once(("host".into(), get(":authority"))))
                            .collect(),
                        tunnelled: true,
                        ..Seen::default()
                    });
                    let _ = s
                        .write_all(&frame(1, END_STREAM | END_HEADERS, stream, &[0x88]))
                        .await;
                }
                _ => {}
            }
        }
        if fill(&mut s, &mut buf).await.is_none() {
            return;
        }
    }
}

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
pub const END_STREAM: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

/// One HTTP/2 frame.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = len.to_be_bytes()[1..].to_vec();
    f.extend([kind, flags]);
    f.extend(stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// (type, flags, stream id, payload, bytes used) of the first whole frame in `buf`.
pub fn parse_frame(buf: &[u8]) -> Option<(u8, u8, u32, Vec<u8>, usize)> {
    if buf.len() < 9 {
        return None;
    }
    let len = u32::from_be_bytes([0, buf[0], buf[1], buf[2]]) as usize;
    if buf.len() < 9 + len {
        return None;
    }
    let stream = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff;
    Some((buf[3], buf[4], stream, buf[9..9 + len].to_vec(), 9 + len))
}

fn hpack_int(out: &mut Vec<u8>, first: u8, prefix_bits: u32, mut n: usize) {
    let max = (1usize << prefix_bits) - 1;
    if n < max {
        out.push(first | n as u8);
        return;
    }
    out.push(first | max as u8);
    n -= max;
    while n >= 128 {
        out.push((n % 128) as u8 | 0x80);
        n /= 128;
    }
    out.push(n as u8);
}

/// A header block of literal fields without indexing, new names, no Huffman.
pub fn encode_literals(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in fields {
        out.push(0);
        hpack_int(&mut out, 0, 7, k.len());
        out.extend_from_slice(k.as_bytes());
        hpack_int(&mut out, 0, 7, v.len());
        out.extend_from_slice(v.as_bytes());
    }
    out
}

fn read_int(b: &[u8], i: &mut usize, prefix_bits: u32) -> Option<usize> {
    let max = (1usize << prefix_bits) - 1;
    let mut n = (*b.get(*i)? as usize) & max;
    *i += 1;
    if n < max {
        return Some(n);
    }
    let mut shift = 0;
    loop {
        let byte = *b.get(*i)? as usize;
        *i += 1;
        n += (byte & 0x7f) << shift;
        shift += 7;
        if byte & 0x80 == 0 {
            return Some(n);
        }
    }
}

/// Decodes the literal-new-name fields `encode_literals` writes (what the test
/// client sends through the tunnel); stops at anything else.
pub fn decode_literals(block: &[u8]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut i = 0;
    let string = |i: &mut usize| -> Option<String> {
        let len = read_int(block, i, 7)?;
        let s = String::from_utf8_lossy(block.get(*i..*i + len)?).into_owned();
        *i += len;
        Some(s)
    };
    while block.get(i) == Some(&0) {
        i += 1;
        match (string(&mut i), string(&mut i)) {
            (Some(k), Some(v)) => out.push((k, v)),
            _ => break,
        }
    }
    out
}

/// The `:status` of a response header block: HAProxy sends it first, indexed
/// (static entries 8 to 14) or as a literal with the static name 8.
pub fn decode_status(block: &[u8]) -> Option<u16> {
    let first = *block.first()?;
    if first & 0x80 != 0 {
        return [200, 204, 206, 304, 400, 404, 500]
            .get(usize::from(first & 0x7f).checked_sub(8)?)
            .copied();
    }
    let mut i = 0;
    let name = if first & 0xc0 == 0x40 {
        read_int(block, &mut i, 6)?
    } else {
        read_int(block, &mut i, 4)?
    };
    if name != 8 || block.get(i)? & 0x80 != 0 {
        return None;
    }
    let len = read_int(block, &mut i, 7)?;
    std::str::from_utf8(block.get(i..i + len)?)
        .ok()?
        .parse()
        .ok()
}

/// Sends one HTTP/2 request with prior knowledge: `fields` (pseudo-headers first),
/// an optional body in one DATA frame, optional trailers. Returns the response
/// status, or None if the stream or connection was reset before one came.
pub async fn h2_request(
    addr: &str,
    fields: &[(&str, &str)],
    body: Option<&[u8]>,
    trailers: Option<&[(&str, &str)]>,
) -> Option<u16> {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut out = PREFACE.to_vec();
    out.extend(frame(4, 0, 0, &[]));
    let ends_here = body.is_none() && trailers.is_none();
    out.extend(frame(
        1,
        END_HEADERS | if ends_here { END_STREAM } else { 0 },
        1,
        &encode_literals(fields),
    ));
    if let Some(b) = body {
        out.extend(frame(
            0,
            if trailers.is_none() { END_STREAM } else { 0 },
            1,
            b,
        ));
    }
    if let Some(t) = trailers {
        out.extend(frame(1, END_HEADERS | END_STREAM, 1, &encode_literals(t)));
    }
    s.write_all(&out).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            while let Some((kind, flags, stream, payload, used)) = parse_frame(&buf) {
                buf.drain(..used);
                match kind {
                    4 if flags & 1 == 0 => s.write_all(&frame(4, 1, 0, &[])).await.ok()?,
                    1 if stream == 1 => return decode_status(&payload),
                    3 if stream == 1 => return None,
                    7 => return None,
                    _ => {}
                }
            }
            fill(&mut s, &mut buf).await?;
        }
    })
    .await
    .expect("HTTP/2 answer within 15 s")
}
