//! The backend behind HAProxy in the browser tests: [`Pages`] answers every request
//! with an HTML page showing what reached it (so a test reads through the browser
//! what the backend saw: host, target, Cookie, X-Auth-*), or a page set for its path
//! (a form, Set-Cookie headers). Imported with `#[path]` by the browser tests, beside
//! `common/browser.rs`.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One request as [`Pages`] received it.
#[derive(Clone, Debug, Default)]
pub struct PageRequest {
    pub method: String,
    /// The request target as sent (path and query).
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl PageRequest {
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
}

/// What [`Pages`] answers on one path (instead of its echo page).
#[derive(Clone, Debug)]
pub struct Page {
    pub status: u16,
    /// Extra response headers (`Set-Cookie`, `Location`, ...).
    pub headers: Vec<(String, String)>,
    /// HTML; empty means the echo page.
    pub html: String,
}

/// A backend behind HAProxy for browser tests. Every request gets an HTML page whose
/// elements show what reached it: `#method`, `#host`, `#target` (path and query as
/// received), `#cookie` (the Cookie header, or `-`), `#x-auth-subject`,
/// `#x-auth-email`, `#x-auth-groups` and `#body`; or the [`Page`] set for its path.
/// Answers one request per connection (`Connection: close`). Stops on drop.
pub struct Pages {
    pub addr: std::net::SocketAddr,
    seen: Arc<Mutex<Vec<PageRequest>>>,
    pages: Arc<Mutex<Vec<(String, Page)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Pages {
    pub async fn start() -> Pages {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let pages = Arc::new(Mutex::new(Vec::new()));
        let (s, p) = (seen.clone(), pages.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve_page(stream, s.clone(), p.clone()));
            }
        });
        Pages {
            addr,
            seen,
            pages,
            task,
        }
    }

    /// Answers `page` on `path` (the target without its query) from now on.
    pub fn set(&self, path: &str, page: Page) {
        let mut pages = self.pages.lock().unwrap();
        pages.retain(|(p, _)| p != path);
        pages.push((path.to_owned(), page));
    }

    /// Every request received so far.
    pub fn seen(&self) -> Vec<PageRequest> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Pages {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `&`, `<`, `>`, `"` and `'` as entities.
pub fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn echo_page(req: &PageRequest) -> String {
    let show = |id: &str, v: Option<&str>| {
        format!("<p id=\"{id}\">{}</p>\n", html_escape(v.unwrap_or("-")))
    };
    let mut html = String::from("<!doctype html><html><head><title>backend</title></head><body>\n");
    html += &show("method", Some(&req.method));
    html += &show("host", req.header("host"));
    html += &show("target", Some(&req.target));
    html += &show("cookie", req.header("cookie"));
    for h in ["x-auth-subject", "x-auth-email", "x-auth-groups"] {
        html += &show(h, req.header(h));
    }
    html += &format!(
        "<pre id=\"body\">{}</pre>\n</body></html>\n",
        html_escape(&req.body)
    );
    html
}

async fn serve_page(
    mut s: TcpStream,
    seen: Arc<Mutex<Vec<PageRequest>>>,
    pages: Arc<Mutex<Vec<(String, Page)>>>,
) {
    let Some(req) = read_page_request(&mut s).await else {
        return;
    };
    seen.lock().unwrap().push(req.clone());
    let path = req.target.split('?').next().unwrap_or_default();
    let page = pages
        .lock()
        .unwrap()
        .iter()
        .find(|(p, _)| p == path)
        .map(|(_, page)| page.clone());
    let (status, headers, html) = match page {
        Some(p) if p.html.is_empty() => (p.status, p.headers, echo_page(&req)),
        Some(p) => (p.status, p.headers, p.html),
        None => (200, Vec::new(), echo_page(&req)),
    };
    let mut answer = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n",
        html.len()
    );
    for (k, v) in headers {
        answer += &format!("{k}: {v}\r\n");
    }
    answer += "\r\n";
    answer += &html;
    let _ = s.write_all(answer.as_bytes()).await;
    let _ = s.shutdown().await;
}

/// One HTTP/1.1 request with a Content-Length body (or none); None on EOF, garbage,
/// more than 64 KiB, or nothing for 10 s.
async fn read_page_request(s: &mut TcpStream) -> Option<PageRequest> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let read = async {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut headers);
            if let httparse::Status::Complete(head_len) = req.parse(&buf).ok()? {
                let headers: Vec<(String, String)> = req
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_owned(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect();
                let mut out = PageRequest {
                    method: req.method?.to_owned(),
                    target: req.path?.to_owned(),
                    headers,
                    body: String::new(),
                };
                let len: usize = out.header("content-length").unwrap_or("0").parse().ok()?;
                if len > 65_536 {
                    return None;
                }
                while buf.len() < head_len + len {
                    let n = s.read(&mut chunk).await.ok().filter(|n| *n > 0)?;
                    buf.extend_from_slice(&chunk[..n]);
                }
                out.body = String::from_utf8_lossy(&buf[head_len..head_len + len]).into_owned();
                return Some(out);
            }
            if buf.len() > 65_536 {
                return None;
            }
            let n = s.read(&mut chunk).await.ok().filter(|n| *n > 0)?;
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .ok()?
}
