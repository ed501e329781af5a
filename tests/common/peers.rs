//! The real peers of end-to-end tests: the stagedoor binary, `oidc-provider` and Backstage
//! (npm, from tests/peers/oidc and tests/peers/backstage), on free ports, stopped by their own PIDs.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::haproxy::{free_port, repo};

/// Collects a child's stdout and stderr lines.
pub fn capture(child: &mut Child) -> Arc<Mutex<Vec<String>>> {
    let log = Arc::new(Mutex::new(Vec::new()));
    for out in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let log = log.clone();
        tokio::spawn(async move {
            // Raw lines, decoded lossily: a byte that is not UTF-8 (a request line
            // HAProxy logs as it came) must not end the capture, as `lines()` would.
            let mut out = BufReader::new(out);
            let mut line = Vec::new();
            loop {
                line.clear();
                match out.read_until(b'\n', &mut line).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let text = String::from_utf8_lossy(&line);
                        let text = text.trim_end_matches(['\n', '\r']).to_owned();
                        log.lock().unwrap().push(text);
                    }
                }
            }
        });
    }
    log
}

/// The oidc-provider peer (tests/peers/oidc/op.mjs).
pub struct Op {
    child: Child,
    pub port: u16,
    pub issuer: String,
    pub log: Arc<Mutex<Vec<String>>>,
    _keys: Option<tempfile::TempDir>,
}

/// Fails the test with the install hint unless the npm peer in `tests/peers/<name>`
/// is installed (and node with it).
pub fn require_peer(name: &str) {
    super::haproxy::require_bin("node");
    assert!(
        repo()
            .join("tests/peers")
            .join(name)
            .join("node_modules")
            .is_dir(),
        "npm peer tests/peers/{name} is not installed: run tests/run.sh \
         (or npm ci --prefix tests/peers/{name})"
    );
}

impl Op {
    /// Starts the provider on `port` with its default keys (RS256 and ES256, in a
    /// fresh key directory) and waits for its discovery document.
    pub async fn start(port: u16) -> Op {
        let keys = tempfile::tempdir().unwrap();
        let path = keys.path().to_path_buf();
        Op::spawn(port, &path, None, Some(keys), &[]).await
    }

    /// Starts it with extra environment (the browser sign-in client: SSO_REDIRECT_URIS,
    /// SSO_POST_LOGOUT_URIS, ...), default keys in a fresh key directory.
    pub async fn start_with_env(port: u16, env: &[(&str, String)]) -> Op {
        let keys = tempfile::tempdir().unwrap();
        let path = keys.path().to_path_buf();
        Op::spawn(port, &path, None, Some(keys), env).await
    }

    /// Starts it with `keys` ("kid:alg,...", the first of each alg signs) from
    /// `keydir`, where each key is generated on first use and kept: restarting with
    /// new kids first rotates the signing keys while the old ones stay published.
    pub async fn start_with_keys(port: u16, keydir: &Path, keys: &str) -> Op {
        Op::spawn(port, keydir, Some(keys), None, &[]).await
    }

    async fn spawn(
        port: u16,
        keydir: &Path,
        keys: Option<&str>,
        own: Option<tempfile::TempDir>,
        env: &[(&str, String)],
    ) -> Op {
        let mut cmd = Command::new("node");
        cmd.arg(repo().join("tests/peers/oidc/op.mjs"))
            .current_dir(repo().join("tests/peers/oidc"))
            .env("PORT", port.to_string())
            .env("KEYDIR", keydir);
        if let Some(keys) = keys {
            cmd.env("KEYS", keys);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn node");
        let log = capture(&mut child);
        let issuer = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        for _ in 0..300 {
            let url = format!("{issuer}/.well-known/openid-configuration");
            if let Ok(r) = http.get(url).send().await
                && r.status().is_success()
            {
                return Op {
                    child,
                    port,
                    issuer,
                    log,
                    _keys: own,
                };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("oidc-provider did not start: {:?}", log.lock().unwrap());
    }

    /// A client_credentials access token (a JWT: RS256 for urn:test:api, ES256 for urn:test:api-es).
    pub async fn token(&self, client: &str, secret: &str, scope: &str, resource: &str) -> String {
        let r = reqwest::Client::new()
            .post(format!("{}/token", self.issuer))
            .basic_auth(client, Some(secret))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!(
                "grant_type=client_credentials&scope={}&resource={resource}",
                scope.replace(' ', "%20")
            ))
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        assert!(status.is_success(), "token request failed: {body}");
        body["access_token"].as_str().unwrap().to_owned()
    }

    /// Kills it by its own PID and waits (5 s at most) until it is gone, so its port
    /// is free for a restart.
    pub fn stop(&mut self) {
        let _ = self.child.start_kill();
        for _ in 0..100 {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Op {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The stagedoor binary, running `serve --config <file>`.
pub struct Agent {
    child: Child,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Agent {
    pub fn start(config: &Path) -> Agent {
        let mut child = Command::new(env!("CARGO_BIN_EXE_stagedoor"))
            .arg("serve")
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn stagedoor");
        let log = capture(&mut child);
        Agent { child, log }
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// The process id, while it runs (for /proc/PID/status and /proc/PID/fd).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Parsed JSON decision lines so far.
    pub fn decisions(&self) -> Vec<serde_json::Value> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["event"] == "decision")
            .collect()
    }

    /// The decision lines once `done` holds for them, or after 10 s whatever there is
    /// (the caller's assertions then say what is missing). The log writer is off the
    /// request path: a line lands up to a drain period after the response.
    pub async fn decisions_when(
        &self,
        done: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let decisions = self.decisions();
            if done(&decisions) || tokio::time::Instant::now() >= deadline {
                return decisions;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, then wait for exit; returns whether it exited 0.
    pub async fn terminate(&mut self) -> bool {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
        match tokio::time::timeout(Duration::from_secs(15), self.child.wait()).await {
            Ok(Ok(status)) => status.success(),
            _ => false,
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Ports for one end-to-end setup.
pub struct Ports {
    pub agent: u16,
    pub admin: u16,
    pub frontend: u16,
    pub backend: u16,
    pub op: u16,
}

impl Ports {
    pub fn new() -> Ports {
        Ports {
            agent: free_port(),
            admin: free_port(),
            frontend: free_port(),
            backend: free_port(),
            op: free_port(),
        }
    }
}

pub fn fixture(path: &str) -> PathBuf {
    repo().join("tests/fixtures").join(path)
}

/// The Backstage peer (tests/peers/backstage) on a given port, serving the given
/// catalog files, its output in a log file; stopped with its whole process group
/// (node and anything it spawned) on drop.
pub struct Backstage {
    child: Option<std::process::Child>,
    pub url: String,
    log: PathBuf,
    _logdir: tempfile::TempDir,
}

impl Backstage {
    /// Starts it and waits (90 s at most) until its readiness probe passes. Backstage
    /// is ready before it has ingested its locations: wait for the entities too.
    pub async fn start(port: u16, token: &str, catalog_files: &[PathBuf]) -> Backstage {
        Backstage::start_with(port, token, catalog_files, &[]).await
    }

    /// [`Backstage::start`] with more `APP_CONFIG_*` (or other) environment variables.
    pub async fn start_with(
        port: u16,
        token: &str,
        catalog_files: &[PathBuf],
        env: &[(&str, &str)],
    ) -> Backstage {
        use std::os::unix::process::CommandExt;
        let dir = repo().join("tests/peers/backstage");
        let url = format!("http://127.0.0.1:{port}");
        let locations: Vec<_> = catalog_files
            .iter()
            .map(|f| serde_json::json!({"type": "file", "target": f}))
            .collect();
        let logdir = tempfile::tempdir().unwrap();
        let log = logdir.path().join("backstage.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let child = std::process::Command::new("node")
            .envs(env.iter().copied())
            .args(["index.js", "--config", "app-config.yaml"])
            .current_dir(&dir)
            .env("BACKSTAGE_TOKEN", token)
            .env("APP_CONFIG_backend_listen_port", port.to_string())
            .env("APP_CONFIG_backend_baseUrl", &url)
            .env(
                "APP_CONFIG_catalog_locations",
                serde_json::to_string(&locations).unwrap(),
            )
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .process_group(0)
            .spawn()
            .expect("start node");
        let mut b = Backstage {
            child: Some(child),
            url,
            log,
            _logdir: logdir,
        };
        let health = format!("{}/.backstage/health/v1/readiness", b.url);
        let http = reqwest::Client::new();
        for _ in 0..360 {
            if let Some(Ok(Some(status))) = b.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "Backstage exited ({status}) before it was ready:\n{}",
                    b.log_tail()
                );
            }
            if let Ok(r) = http.get(&health).send().await
                && r.status().is_success()
            {
                return b;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!(
            "Backstage did not become ready on {}:\n{}",
            b.url,
            b.log_tail()
        );
    }

    /// The last 30 lines of its output.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if child.try_wait().ok().flatten().is_some() {
                return;
            }
            let group = format!("-{}", child.id());
            let _ = std::process::Command::new("kill")
                .args(["-TERM", "--", &group])
                .status();
            for _ in 0..100 {
                if child.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &group])
                .status();
            let _ = child.wait();
        }
    }
}

impl Drop for Backstage {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts the agent with extra environment variables.
impl Agent {
    pub fn start_with_env(config: &Path, env: &[(&str, &str)]) -> Agent {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_stagedoor"));
        cmd.arg("serve")
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn stagedoor");
        let log = capture(&mut child);
        Agent { child, log }
    }
}
