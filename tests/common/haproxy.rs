//! Starting real peers for end-to-end tests: HAProxy from Debian, on free ports,
//! stopped by its own PID. A test that needs a peer is `#[ignore = "needs <peer>: run
//! tests/run.sh"]`, so a plain `cargo test` reports it as ignored instead of passing it;
//! run with `--include-ignored` (tests/run.sh does), a missing peer fails it with the
//! install hint. Under CI=true, [`assert_peer_tests_run_under_ci`] fails a run that
//! leaves them out.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::process::{Child, Command};

/// The repository root (where Cargo.toml is).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Whether this is a CI run (CI=true), where no test may be left out.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Under CI=true, fails unless this test binary was asked to run its ignored tests (the
/// ones needing peers): `CI=true cargo test` alone would leave every end-to-end test
/// out. Each binary with such tests calls it from a test of its own.
pub fn assert_peer_tests_run_under_ci() {
    let included = std::env::args().any(|a| a == "--include-ignored" || a == "--ignored");
    assert!(
        !in_ci() || included,
        "CI=true: the tests needing peers carry #[ignore = \"needs …\"]; run them with \
         `cargo test -- --include-ignored` (tests/run.sh does)"
    );
}

/// Finds an executable on PATH; a missing one fails the test with the install hint.
pub fn require_bin(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join(name))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| {
            panic!("`{name}` is not installed: run tests/run.sh, which installs every test peer")
        })
}

/// HAProxy 3.x, newest, whose SPOE was rewritten in 3.1: Debian unstable's.
pub fn require_haproxy3() -> PathBuf {
    require_fetched_haproxy("haproxy3", (3, 1)..=(u32::MAX, u32::MAX))
}

/// HAProxy 3.0 LTS, the last version with the original SPOE engine: Debian 13's.
pub fn require_haproxy30() -> PathBuf {
    require_fetched_haproxy("haproxy30", (3, 0)..=(3, 0))
}

/// A newer HAProxy than Debian 12's, unpacked (not installed) by
/// `tests/peers/<peer>/fetch.sh`, which tests/run.sh runs. A missing one fails the
/// test with the install hint; so does one whose major.minor is outside `versions`.
fn require_fetched_haproxy(peer: &str, versions: std::ops::RangeInclusive<(u32, u32)>) -> PathBuf {
    let dir = repo().join("tests/peers").join(peer);
    assert!(
        dir.join("root/usr/sbin/haproxy").is_file(),
        "{peer} is not fetched: run tests/run.sh (or tests/peers/{peer}/fetch.sh)"
    );
    let bin = dir.join("haproxy");
    let out = std::process::Command::new(&bin)
        .arg("-v")
        .output()
        .unwrap_or_else(|e| panic!("run {bin:?} -v: {e}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let version = text
        .split_whitespace()
        .nth(2)
        .unwrap_or_else(|| panic!("no version in {text:?}"));
    let mut parts = version
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    assert!(
        versions.contains(&(major, minor)),
        "{bin:?} is HAProxy {version}, outside {versions:?}"
    );
    bin
}

/// A free TCP port on 127.0.0.1 for a peer to listen on, picked at random below the
/// kernel's ephemeral range (32768-60999 on Linux) and not handed out before by this
/// process. Port 0 and outgoing connections take their ports from that range: a port
/// found with bind(0) and released could be taken by any socket of the tests running
/// beside this one before the peer, started seconds later, binds it (an oidc-provider
/// start failed on EADDRINUSE so).
pub fn free_port() -> u16 {
    use std::hash::BuildHasher;
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap();
    for _ in 0..1000 {
        let random = std::hash::RandomState::new().hash_one(std::process::id());
        let port = 10_000 + (random % 22_000) as u16;
        if !given.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return port;
        }
    }
    panic!("no free port found below 32000");
}

/// A running HAProxy, killed on drop.
pub struct Haproxy {
    child: Child,
    pub frontend: String,
    /// Every line HAProxy printed (its log goes to stdout).
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Haproxy {
    /// Starts `haproxy -db -f cfg` with the given environment; waits until the
    /// frontend accepts connections.
    pub async fn start(
        bin: &Path,
        cfg: &Path,
        frontend_port: u16,
        env: &[(&str, String)],
    ) -> Haproxy {
        Haproxy::start_many(bin, &[cfg.to_path_buf()], frontend_port, env).await
    }

    /// Like `start`, with several `-f` configuration files.
    pub async fn start_many(
        bin: &Path,
        cfgs: &[PathBuf],
        frontend_port: u16,
        env: &[(&str, String)],
    ) -> Haproxy {
        let frontend = format!("127.0.0.1:{frontend_port}");
        let mut cmd = Command::new(bin);
        cmd.arg("-db");
        for cfg in cfgs {
            cmd.arg("-f").arg(cfg);
        }
        cmd.env("STAGEDOOR_FRONTEND", &frontend)
            .env(
                "STAGEDOOR_SPOE_CONF",
                repo().join("haproxy/stagedoor.spoe.conf"),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn haproxy");
        let log = super::peers::capture(&mut child);
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(&frontend).await.is_ok() {
                return Haproxy {
                    child,
                    frontend,
                    log,
                };
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("haproxy exited with {status}: {:#?}", log.lock().unwrap());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "haproxy did not listen on {frontend}: {:#?}",
            log.lock().unwrap()
        );
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.frontend, path)
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        // Our own child, by its own PID.
        let _ = self.child.start_kill();
    }
}

/// `haproxy -c` on a config, with the environment the shipped files expect.
pub fn check_config(bin: &Path, cfg: &Path, env: &[(&str, String)]) -> (bool, String) {
    let mut cmd = std::process::Command::new(bin);
    cmd.arg("-c").arg("-f").arg(cfg);
    cmd.env(
        "STAGEDOOR_SPOE_CONF",
        repo().join("haproxy/stagedoor.spoe.conf"),
    );
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run haproxy -c");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// HAProxy that can be reloaded the seamless way: each process has its own stats
/// socket (`STAGEDOOR_TEST_SOCKET`, for a `stats socket ... expose-fd listeners` line
/// in the config), and [`Reloadable::reload`] starts the next one with `-x <that
/// socket> -sf <this pid>`: it takes the listeners over, and this one finishes its
/// connections and exits. Killed on drop, by its own PID.
pub struct Reloadable {
    child: Child,
    bin: PathBuf,
    cfgs: Vec<PathBuf>,
    frontend: String,
    env: Vec<(String, String)>,
    dir: PathBuf,
    generation: usize,
    log: Arc<Mutex<Vec<String>>>,
}

impl Reloadable {
    /// Starts `haproxy -db -f <cfgs>...` with `env`, its socket in `dir`; waits until
    /// it answers on its socket and `frontend`.
    pub async fn start(
        bin: &Path,
        cfgs: &[PathBuf],
        frontend: &str,
        env: &[(&str, String)],
        dir: &Path,
    ) -> Reloadable {
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        Reloadable::spawn(bin, cfgs, frontend, env, dir, 0, None).await
    }

    /// The next process, which takes over from this one.
    pub async fn reload(&self) -> Reloadable {
        let old = (self.socket(), self.child.id().expect("running"));
        let (bin, cfgs, frontend) = (&self.bin, &self.cfgs, &self.frontend);
        Reloadable::spawn(
            bin,
            cfgs,
            frontend,
            self.env.clone(),
            &self.dir,
            self.generation + 1,
            Some(old),
        )
        .await
    }

    async fn spawn(
        bin: &Path,
        cfgs: &[PathBuf],
        frontend: &str,
        env: Vec<(String, String)>,
        dir: &Path,
        generation: usize,
        replaces: Option<(PathBuf, u32)>,
    ) -> Reloadable {
        let mut cmd = Command::new(bin);
        cmd.arg("-db");
        for cfg in cfgs {
            cmd.arg("-f").arg(cfg);
        }
        if let Some((socket, pid)) = &replaces {
            cmd.arg("-x").arg(socket).arg("-sf").arg(pid.to_string());
        }
        let socket = dir.join(format!("haproxy-{generation}.sock"));
        cmd.envs(env.iter().map(|(k, v)| (k, v)))
            .env("STAGEDOOR_TEST_SOCKET", &socket)
            .env("STAGEDOOR_FRONTEND", frontend)
            .env(
                "STAGEDOOR_SPOE_CONF",
                repo().join("haproxy/stagedoor.spoe.conf"),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut p = Reloadable {
            bin: bin.to_owned(),
            cfgs: cfgs.to_vec(),
            frontend: frontend.to_owned(),
            env,
            dir: dir.to_owned(),
            generation,
            log: Arc::default(),
            child: cmd.spawn().expect("spawn haproxy"),
        };
        p.log = super::peers::capture(&mut p.child);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if tokio::net::UnixStream::connect(&socket).await.is_ok()
                && tokio::net::TcpStream::connect(frontend).await.is_ok()
            {
                return p;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("haproxy did not start: {}", p.log_tail());
    }

    fn socket(&self) -> PathBuf {
        self.dir.join(format!("haproxy-{}.sock", self.generation))
    }

    /// The last 40 lines it printed.
    pub fn log_tail(&self) -> String {
        let log = self.log.lock().unwrap();
        log[log.len().saturating_sub(40)..].join("\n")
    }

    /// Waits (30 s at most) for it to exit, as a replaced process does once drained.
    pub async fn exited(&mut self) -> bool {
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .is_ok()
    }
}
