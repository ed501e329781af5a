//! The process lifecycle: one owner for the signals, and a policy callers await.
//! SIGHUP was once heard by two handlers (the agent's and the catalog runner's own),
//! so one signal reloaded the catalog twice; it must reload it exactly once, and
//! SIGTERM must still drain and exit cleanly.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use stagedoor::config::Config;
use tokio_util::sync::CancellationToken;

fn quickstart() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/quickstart")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A config on the quickstart keys and catalog files; the file timer never fires
/// within a test, so only a forced reload loads the files again.
fn write_config(dir: &Path, agent_port: u16, admin_port: u16) -> PathBuf {
    let quick = quickstart();
    let path = dir.join("stagedoor.toml");
    std::fs::write(
        &path,
        format!(
            "[agent]\nlisten = \"127.0.0.1:{agent_port}\"\n\n[admin]\nlisten = \"127.0.0.1:{admin_port}\"\n\n\
             [[issuers]]\nissuer = \"https://idp.quickstart.example\"\naudiences = [\"quickstart-api\"]\n\
             jwks_file = \"{}\"\nalgorithms = [\"ES256\"]\n\n[catalog]\nsource = \"file\"\n\
             files = [\"{}/catalog/*.yaml\"]\nreload_seconds = 3600\n",
            quick.join("demo-jwks.json").display(),
            quick.display()
        ),
    )
    .unwrap();
    path
}

/// The body of a GET on the admin port, if it answered 200.
fn get(admin: &str, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(admin).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    if !out.starts_with("HTTP/1.1 200") {
        return None;
    }
    out.split_once("\r\n\r\n").map(|(_, body)| body.to_owned())
}

/// `stagedoor_catalog_syncs_total`, every result summed: one per file load.
fn catalog_syncs(admin: &str) -> u64 {
    let body = get(admin, "/metrics").expect("no metrics");
    body.lines()
        .filter(|l| l.starts_with("stagedoor_catalog_syncs_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits for `child` to exit, at most `within`.
fn wait_exit(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let started = Instant::now();
    while started.elapsed() < within {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// Kills the agent if the test fails before it exits.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn one_sighup_reloads_the_catalog_once_and_sigterm_still_drains() {
    let dir = tempfile::tempdir().unwrap();
    let (agent_port, admin_port) = (free_port(), free_port());
    let config = write_config(dir.path(), agent_port, admin_port);
    let log = dir.path().join("stderr.log");
    let mut agent = Agent(
        Command::new(env!("CARGO_BIN_EXE_stagedoor"))
            .args(["serve", "--config", config.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let stderr = || std::fs::read_to_string(&log).unwrap_or_default();
    let loads = || stderr().matches("catalog files loaded").count();
    let admin = format!("127.0.0.1:{admin_port}");
    let started = Instant::now();
    while get(&admin, "/readyz").is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "agent not ready\n{}",
            stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let before = catalog_syncs(&admin);
    assert_eq!(before, 1, "{}", stderr());
    assert_eq!(loads(), 1, "{}", stderr());

    signal(&agent.0, "HUP");
    let started = Instant::now();
    while catalog_syncs(&admin) == before {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "SIGHUP did not reload the catalog\n{}",
            stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // A second reload from the same signal came within milliseconds of the first;
    // three seconds leave room for a loaded machine.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(catalog_syncs(&admin), before + 1, "{}", stderr());
    assert_eq!(loads(), 2, "{}", stderr());
    assert_eq!(stderr().matches("SIGHUP: reloading the catalog").count(), 1);
    assert!(
        agent.0.try_wait().unwrap().is_none(),
        "SIGHUP ended the agent"
    );

    signal(&agent.0, "TERM");
    let status = wait_exit(&mut agent.0, Duration::from_secs(15)).expect("no exit after SIGTERM");
    assert!(status.success(), "{status:?}\n{}", stderr());
    assert!(stderr().contains("stagedoor stopped"), "{}", stderr());
}

#[tokio::test]
async fn the_policy_handle_is_awaited_until_the_catalog_is_built() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), free_port(), free_port());
    let cfg = Config::load(&config).unwrap();
    let shutdown = CancellationToken::new();
    let (catalog, policy) = stagedoor::lifecycle::start_catalog(&cfg, shutdown.clone()).unwrap();
    let ready = tokio::time::timeout(Duration::from_secs(20), policy.ready())
        .await
        .expect("no policy within 20 s")
        .expect("the builder stopped");
    assert!(ready.route_count() > 0);
    // What the agent reads is what `ready` returned.
    let current = policy.current().load_full().expect("ready but not current");
    assert!(std::sync::Arc::ptr_eq(&current, &ready));
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), catalog.stopped())
        .await
        .expect("catalog runner did not stop");
}
