//! `stagedoor check-config` and every configuration shipped under examples/.

use std::path::{Path, PathBuf};
use std::process::Command;

fn stagedoor(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_stagedoor"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn example_configs(dir: &Path, found: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            example_configs(&p, found);
        } else if p.extension().is_some_and(|x| x == "toml") {
            found.push(p);
        }
    }
}

#[test]
fn every_example_config_is_valid() {
    let mut configs = Vec::new();
    example_configs(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples"),
        &mut configs,
    );
    assert!(!configs.is_empty());
    let state = tempfile::tempdir().unwrap();
    for c in configs {
        // Deployment examples point the catalog snapshot at a container path and read
        // the Backstage token from the environment: check them with a local snapshot
        // directory (a sibling copy, so relative paths still resolve) and a token set.
        let text = std::fs::read_to_string(&c).unwrap();
        let local = text.replace(
            "\"/var/lib/stagedoor/",
            &format!("\"{}/", state.path().display()),
        );
        let checked = c.with_file_name(format!(
            ".check-{}-{}",
            std::process::id(),
            c.file_name().unwrap().to_str().unwrap()
        ));
        std::fs::write(&checked, local).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_stagedoor"))
            .args(["check-config", "--config", checked.to_str().unwrap()])
            .env("BACKSTAGE_TOKEN", "example-token")
            .env("STAGEDOOR_SSO_KEYS", "00".repeat(32))
            .env("STAGEDOOR_SSO_CLIENT_SECRET", "example-secret")
            .output()
            .unwrap();
        let _ = std::fs::remove_file(&checked);
        assert!(
            out.status.success(),
            "{}: {}",
            c.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn check_config_names_every_error_and_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        r#"
[[issuers]]
issuer = "https://idp.example.com"
audiences = ["api"]
jwks_file = "missing-jwks.json"
[catalog]
source = "file"
files = ["catalog/[.yaml", "nothing/*.yaml"]
"#,
    )
    .unwrap();
    let (code, _, err) = stagedoor(&["check-config", "--config", bad.to_str().unwrap()]);
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains("issuers[0].jwks_file") && err.contains("missing-jwks.json"),
        "{err}"
    );
    assert!(
        err.contains("catalog.files") && err.contains("catalog/[.yaml"),
        "{err}"
    );

    let unknown = dir.path().join("unknown.toml");
    std::fs::write(&unknown, "[agent]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n").unwrap();
    let (code, _, err) = stagedoor(&["check-config", "--config", unknown.to_str().unwrap()]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("lisen"), "names the unknown key: {err}");

    let threads = dir.path().join("threads.toml");
    std::fs::write(&threads, "[agent]\nworker_threads = 1000\n").unwrap();
    let (code, _, err) = stagedoor(&["check-config", "--config", threads.to_str().unwrap()]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("agent.worker_threads"), "{err}");

    // Issue 14: the drain keys are checked too; reuse_port must be a boolean.
    let drain = dir.path().join("drain.toml");
    std::fs::write(
        &drain,
        "[agent]\ndrain_quiet_ms = 0\nreuse_port = \"yes\"\n",
    )
    .unwrap();
    let (code, _, err) = stagedoor(&["check-config", "--config", drain.to_str().unwrap()]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("reuse_port"), "{err}");
    std::fs::write(&drain, "[agent]\ndrain_quiet_ms = 0\nreuse_port = true\n").unwrap();
    let (code, _, err) = stagedoor(&["check-config", "--config", drain.to_str().unwrap()]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("agent.drain_quiet_ms"), "{err}");

    // Issue 14: the buffer budget is at least 1 MiB and four frames of the largest
    // size; the HELLO timeout 1..60 s.
    let budget = dir.path().join("budget.toml");
    for (body, key) in [
        ("buffer_budget_bytes = 1048575", "agent.buffer_budget_bytes"),
        (
            "max_frame_size = 1000000\nbuffer_budget_bytes = 2000000",
            "agent.buffer_budget_bytes",
        ),
        ("hello_timeout_seconds = 0", "agent.hello_timeout_seconds"),
    ] {
        std::fs::write(&budget, format!("[agent]\n{body}\n")).unwrap();
        let (code, _, err) = stagedoor(&["check-config", "--config", budget.to_str().unwrap()]);
        assert_eq!(code, 64, "{body}: {err}");
        assert!(err.contains(key), "{body}: {err}");
    }

    let (code, _, err) = stagedoor(&[
        "check-config",
        "--config",
        dir.path().join("absent.toml").to_str().unwrap(),
    ]);
    assert_eq!(code, 64, "{err}");
    // `serve` refuses a bad config the same way, before binding anything.
    let (code, _, err) = stagedoor(&["serve", "--config", bad.to_str().unwrap()]);
    assert_eq!(code, 64, "{err}");
}

/// Issue 12: each issuer table is validated once, so `check-config` prints each mistake
/// on one line, once, with one prefix (it used to print the first one twice, as
/// `issuers[0]: issuers[https://…]: …` and `issuers: issuers[https://…]: …`).
#[test]
fn check_config_says_each_issuer_error_once_with_one_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("issuers.toml");
    std::fs::write(
        &bad,
        r#"
[[issuers]]
issuer = "https://idp.example.com"
audiences = []
discovery = true

[[issuers]]
issuer = "https://other.example.com"
audiences = ["api"]
jwks_url = "http://other.example.com/jwks"

[[issuers]]
issuer = "https://other.example.com"
audiences = ["api"]
discovery = true
"#,
    )
    .unwrap();
    let (code, _, err) = stagedoor(&["check-config", "--config", bad.to_str().unwrap()]);
    assert_eq!(code, 64, "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    for expected in [
        "config error: issuers[https://idp.example.com]: `audiences` must list at least one non-empty audience",
        "config error: issuers[https://other.example.com]: `jwks_url` is not a usable URL: http is allowed only",
        "config error: issuers[https://other.example.com]: `issuer` appears more than once",
    ] {
        let n = lines.iter().filter(|l| l.starts_with(expected)).count();
        assert_eq!(n, 1, "{expected}\n{err}");
    }
    for line in &lines {
        assert_eq!(
            lines.iter().filter(|l| *l == line).count(),
            1,
            "repeated: {err}"
        );
        assert!(
            line.matches("issuers[").count() <= 1,
            "two prefixes: {line}"
        );
        assert!(!line.contains("issuers: issuers"), "two prefixes: {line}");
    }
}

#[test]
fn decide_and_policy_show_on_the_quickstart() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cfg = root.join("examples/quickstart/stagedoor.toml");
    let cfg = cfg.to_str().unwrap();
    let (code, out, err) = stagedoor(&["policy", "show", "--config", cfg]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("/api/orders") && out.contains("component:default/orders-api"),
        "{out}"
    );
    let (code, out, _) = stagedoor(&["policy", "show", "--config", cfg, "--format", "json"]);
    assert_eq!(code, 0);
    let _: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let (code, out, _) = stagedoor(&[
        "decide",
        "--config",
        cfg,
        "--method",
        "GET",
        "--path",
        "/api/orders/health",
    ]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["reason"],
        "public"
    );
    let (code, out, _) = stagedoor(&[
        "decide",
        "--config",
        cfg,
        "--method",
        "GET",
        "--path",
        "/api/orders",
    ]);
    assert_eq!(code, 1, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["reason"], "missing_token");
    // A token from standard input (kept out of `ps`): a valid one is allowed, so the
    // token really came from stdin and not from the literal "-".
    let pem = std::fs::read(root.join("examples/quickstart/demo-signing-key.pem")).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let claims = serde_json::json!({"iss": "https://idp.quickstart.example", "sub": "alice", "aud": "quickstart-api",
        "iat": now, "exp": now + 300, "scope": "orders:read"});
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some("demo-2026".into());
    let jwt = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_ec_pem(&pem).unwrap(),
    )
    .unwrap();
    for (input, code, reason) in [
        (format!("{jwt}\n"), 0, "ok"),
        ("not-a-jwt\n".to_owned(), 1, "malformed_token"),
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_stagedoor"))
            .args([
                "decide",
                "--config",
                cfg,
                "--method",
                "GET",
                "--path",
                "/api/orders",
                "--token",
                "-",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), input.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        let w: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(w["reason"], reason, "{w}");
        assert_eq!(out.status.code(), Some(code));
    }
    assert_eq!(
        v["variables"]["www_authenticate"],
        "Bearer realm=\"stagedoor\""
    );
}

/// A token limit the SPOE frame cannot carry is a configuration error (issue 14):
/// HAProxy would fail such a message with a 503 where the agent means
/// `token_too_large`. Raising the frame size with it makes the file valid again.
#[test]
fn check_config_refuses_a_token_limit_the_frame_cannot_carry() {
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, r#"{"keys":[]}"#).unwrap();
    let catalog = dir.path().join("catalog.yaml");
    std::fs::write(&catalog, "").unwrap();
    let write = |name: &str, frame: u32| {
        let path = dir.path().join(name);
        let text = format!(
            "[agent]\nmax_frame_size = {frame}\n[token]\nmax_token_bytes = 32768\n\
             [[issuers]]\nissuer = \"https://idp.example.com\"\naudiences = [\"api\"]\n\
             jwks_file = \"{}\"\n[catalog]\nfiles = [\"{}\"]\n",
            jwks.display(),
            catalog.display()
        );
        std::fs::write(&path, text).unwrap();
        path
    };
    let small = write("small.toml", 16_380);
    let (code, _, err) = stagedoor(&["check-config", "--config", small.to_str().unwrap()]);
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains("config error: token.max_token_bytes: must leave 1024 bytes of agent.max_frame_size (16380)"),
        "{err}"
    );
    let large = write("large.toml", 65_536);
    let (code, out, err) = stagedoor(&["check-config", "--config", large.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
}

/// A bad `TOKIO_WORKER_THREADS` (tokio's override of the worker count, which
/// `[agent] worker_threads = 0` follows) stops `serve` with its name and exit code 64;
/// tokio alone would panic, and an ignored value would run another count silently.
#[test]
fn serve_refuses_a_bad_worker_thread_override_by_name() {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/quickstart/stagedoor.toml");
    // Also when the config sets its own count, which the variable would not change:
    // a bad value stops `serve` as it stops the one-shot commands.
    let dir = tempfile::tempdir().unwrap();
    let counted = dir.path().join("stagedoor.toml");
    let here = config.parent().unwrap().display().to_string();
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("[agent]\n", "[agent]\nworker_threads = 2\n")
        .replace("\"demo-jwks.json\"", &format!("\"{here}/demo-jwks.json\""))
        .replace("\"catalog/", &format!("\"{here}/catalog/"))
        // Were it to start, it would take ports of the OS's choosing.
        .replace("127.0.0.1:12345", "127.0.0.1:0")
        .replace("127.0.0.1:9901", "127.0.0.1:0");
    assert!(text.contains("worker_threads = 2") && text.contains(&here));
    std::fs::write(&counted, text).unwrap();
    let (code, _, err) = stagedoor(&["check-config", "--config", counted.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    for (bad, config) in [
        ("two", &config),
        ("0", &config),
        ("257", &config),
        ("x", &counted),
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_stagedoor"))
            .args(["serve", "--config", config.to_str().unwrap()])
            .env("TOKIO_WORKER_THREADS", bad)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // An agent that started anyway is stopped, and the test fails, not hangs.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
        }
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{bad}: {err}");
        assert!(err.contains("TOKIO_WORKER_THREADS"), "{bad}: {err}");
    }
}
