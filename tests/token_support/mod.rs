//! Shared helpers for the token tests and benches: signing keys, token minting, JWKS
//! documents and a small fault-injecting HTTP server (key-set tests).
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use base64::Engine;
use serde_json::{Value, json};
use stagedoor::token::jose::B64;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

pub const ISS: &str = "https://id.example.test";
pub const AUD: &str = "urn:test:api";

pub fn now() -> i64 {
    stagedoor::clock::unix_now()
}

pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    B64.encode(bytes)
}

pub fn unb64(s: &str) -> Vec<u8> {
    B64.decode(s).expect("base64url")
}

pub fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// A private key for minting test tokens.
pub enum TestKey {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
}

impl TestKey {
    pub fn rsa() -> TestKey {
        TestKey::Rsa(RsaKeyPair::generate(KeySize::Rsa2048).expect("rsa keygen"))
    }
    pub fn ec() -> TestKey {
        TestKey::Ec(
            EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).expect("ec keygen"),
        )
    }
    pub fn ed() -> TestKey {
        TestKey::Ed(Ed25519KeyPair::generate().expect("ed keygen"))
    }

    /// Public JWK; `alg` `None` leaves the JWK `alg` out.
    pub fn jwk(&self, kid: &str, alg: Option<&str>) -> Value {
        let mut v = match self {
            TestKey::Rsa(k) => {
                let p = k.public_key();
                json!({"kty":"RSA","n": b64(p.modulus().big_endian_without_leading_zero()),
                       "e": b64(p.exponent().big_endian_without_leading_zero())})
            }
            TestKey::Ec(k) => {
                let p = k.public_key().as_ref();
                json!({"kty":"EC","crv":"P-256","x": b64(&p[1..33]),"y": b64(&p[33..65])})
            }
            TestKey::Ed(k) => {
                json!({"kty":"OKP","crv":"Ed25519","x": b64(k.public_key().as_ref())})
            }
        };
        v["kid"] = json!(kid);
        v["use"] = json!("sig");
        if let Some(a) = alg {
            v["alg"] = json!(a);
        }
        v
    }

    /// Signs `msg` with `alg` (must fit the key).
    pub fn sign(&self, alg: &str, msg: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match self {
            TestKey::Rsa(k) => {
                let enc: &'static dyn signature::RsaEncoding = match alg {
                    "RS256" => &signature::RSA_PKCS1_SHA256,
                    "RS384" => &signature::RSA_PKCS1_SHA384,
                    "RS512" => &signature::RSA_PKCS1_SHA512,
                    "PS256" => &signature::RSA_PSS_SHA256,
                    "PS384" => &signature::RSA_PSS_SHA384,
                    "PS512" => &signature::RSA_PSS_SHA512,
                    other => panic!("{other} is not an RSA alg"),
                };
                let mut sig = vec![0; k.public_modulus_len()];
                k.sign(enc, &rng, msg, &mut sig).expect("rsa sign");
                sig
            }
            TestKey::Ec(k) => k.sign(&rng, msg).expect("ec sign").as_ref().to_vec(),
            TestKey::Ed(k) => k.sign(msg).as_ref().to_vec(),
        }
    }
}

/// HMAC-signs `msg` (for HS* tests and key-confusion attacks).
pub fn hmac_sign(alg: &str, secret: &[u8], msg: &[u8]) -> Vec<u8> {
    use aws_lc_rs::hmac;
    let a = match alg {
        "HS256" => hmac::HMAC_SHA256,
        "HS384" => hmac::HMAC_SHA384,
        _ => hmac::HMAC_SHA512,
    };
    hmac::sign(&hmac::Key::new(a, secret), msg)
        .as_ref()
        .to_vec()
}

/// Default valid claims at `now`.
pub fn claims(now: i64) -> Value {
    json!({"iss": ISS, "aud": AUD, "sub": "client-1", "scope": "read write", "client_id": "svc",
           "iat": now, "nbf": now - 5, "exp": now + 3600, "groups": ["team-a", "team-b"]})
}

/// Mints a token from raw header/claims JSON text, signed with `key` using the header alg.
pub fn mint_raw(header_json: &str, claims_json: &str, alg: &str, key: &TestKey) -> String {
    let input = format!("{}.{}", b64(header_json), b64(claims_json));
    let sig = key.sign(alg, input.as_bytes());
    format!("{input}.{}", b64(sig))
}

/// Mints a token with header `{"alg":alg,"kid":kid}`.
pub fn mint(key: &TestKey, alg: &str, kid: &str, claims: &Value) -> String {
    mint_raw(
        &json!({"alg": alg, "kid": kid}).to_string(),
        &claims.to_string(),
        alg,
        key,
    )
}

pub fn jwks(keys: &[Value]) -> String {
    json!({ "keys": keys }).to_string()
}

/// One canned HTTP answer.
#[derive(Clone, Debug)]
pub enum Reply {
    Ok {
        body: String,
        headers: Vec<(String, String)>,
    },
    Status {
        code: u16,
        headers: Vec<(String, String)>,
        body: String,
    },
    /// Close the connection without answering.
    Hangup,
    /// Answer with the inner reply after a delay (tokio time: paused-clock tests
    /// advance through it).
    Delayed(std::time::Duration, Box<Reply>),
}

impl Reply {
    pub fn json(body: impl Into<String>) -> Reply {
        Reply::Ok {
            body: body.into(),
            headers: Vec::new(),
        }
    }
}

/// A minimal HTTP/1.1 server for fault injection, on 127.0.0.1:0.
pub struct FaultServer {
    pub base: String,
    routes: Arc<Mutex<HashMap<String, Reply>>>,
    hits: Arc<Mutex<HashMap<String, usize>>>,
    total: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultServer {
    pub async fn start() -> FaultServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let routes: Arc<Mutex<HashMap<String, Reply>>> = Arc::default();
        let hits: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let total = Arc::new(AtomicUsize::new(0));
        let (r, h, t) = (routes.clone(), hits.clone(), total.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let (r, h, t) = (r.clone(), h.clone(), t.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 2048];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        if buf.len() > 65_536 {
                            return;
                        }
                    }
                    let text = String::from_utf8_lossy(&buf);
                    let path = text.split_whitespace().nth(1).unwrap_or("/").to_owned();
                    t.fetch_add(1, Ordering::SeqCst);
                    *h.lock().unwrap().entry(path.clone()).or_default() += 1;
                    let mut reply = r.lock().unwrap().get(&path).cloned();
                    while let Some(Reply::Delayed(d, inner)) = reply {
                        tokio::time::sleep(d).await;
                        reply = Some(*inner);
                    }
                    let (code, headers, body) = match reply {
                        None => (404, Vec::new(), "not found".to_owned()),
                        Some(Reply::Hangup) => return,
                        Some(Reply::Delayed(..)) => unreachable!("unwrapped above"),
                        Some(Reply::Ok { body, headers }) => (200, headers, body),
                        Some(Reply::Status {
                            code,
                            headers,
                            body,
                        }) => (code, headers, body),
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
                    let _ = sock.write_all(head.as_bytes()).await;
                    let _ = sock.write_all(body.as_bytes()).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        FaultServer {
            base,
            routes,
            hits,
            total,
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn set(&self, path: &str, reply: Reply) {
        self.routes.lock().unwrap().insert(path.to_owned(), reply);
    }

    pub fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    pub fn total_hits(&self) -> usize {
        self.total.load(Ordering::SeqCst)
    }
}

/// Polls `cond` every 20 ms for up to `secs` seconds.
pub async fn eventually(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    cond()
}
