//! A bounded load loop for fault tests: a few keep-alive clients send requests to
//! HAProxy until stopped and count every answer by status. Fault tests count
//! failures, never speed: nothing here is timed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::task::JoinSet;

/// One kind of request the clients send in turn.
#[derive(Debug, Clone)]
pub struct Target {
    /// `http://host:port/path`.
    pub url: String,
    /// A bearer token, if any.
    pub token: Option<String>,
    /// The status every answer must have.
    pub expect: u16,
}

/// What the clients saw: answers by status, and requests that got no answer.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub sent: u64,
    /// Answers with the expected status.
    pub ok: u64,
    /// Unexpected answers by (url, status); status 0 is no answer at all.
    pub failed: BTreeMap<(String, u16), u64>,
}

impl Tally {
    pub fn failures(&self) -> u64 {
        self.failed.values().sum()
    }
}

/// Running clients; [`Load::stop`] ends them and returns the tally.
pub struct Load {
    stop: Arc<AtomicBool>,
    clients: JoinSet<Tally>,
}

impl Load {
    /// `clients` keep-alive clients, each cycling through `targets` with `pause`
    /// between requests (bounded load on a shared machine).
    pub fn start(targets: Vec<Target>, clients: usize, pause: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let mut set = JoinSet::new();
        for c in 0..clients {
            let (targets, stop) = (targets.clone(), stop.clone());
            set.spawn(client(c, targets, stop, pause));
        }
        Load { stop, clients: set }
    }

    pub async fn stop(mut self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = Tally::default();
        while let Some(t) = self.clients.join_next().await {
            let t = t.expect("load client panicked");
            total.sent += t.sent;
            total.ok += t.ok;
            for (k, v) in t.failed {
                *total.failed.entry(k).or_default() += v;
            }
        }
        total
    }
}

async fn client(n: usize, targets: Vec<Target>, stop: Arc<AtomicBool>, pause: Duration) -> Tally {
    // One connection pool per client; no retries, so a failure is counted as seen.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .timeout(Duration::from_secs(10))
        .retry(reqwest::retry::never())
        .build()
        .unwrap();
    let mut tally = Tally::default();
    let mut i = n;
    while !stop.load(Ordering::Relaxed) {
        let t = &targets[i % targets.len()];
        i += 1;
        let mut req = http.get(&t.url);
        if let Some(token) = &t.token {
            req = req.bearer_auth(token);
        }
        tally.sent += 1;
        let status = match req.send().await {
            Ok(r) => {
                let s = r.status().as_u16();
                let _ = r.bytes().await;
                s
            }
            Err(_) => 0,
        };
        if status == t.expect {
            tally.ok += 1;
        } else {
            *tally.failed.entry((t.url.clone(), status)).or_default() += 1;
        }
        tokio::time::sleep(pause).await;
    }
    tally
}
