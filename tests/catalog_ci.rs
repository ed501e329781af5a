//! The catalog repository's CI recipe (issue 16): `examples/catalog-ci/check.sh` on
//! the example's changed catalog, the policy-test cases and a sample decision log.
//! Its markdown is the checked-in golden comment; it fails on a broken catalog or a
//! failing case. The sample log is what the agent's own line writer makes for a mix
//! of callers under the quickstart catalog (regenerated and compared here; run with
//! UPDATE_GOLDEN=1 to rewrite it and the golden comment).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use stagedoor::agent::{AuthRequest, Outcome};
use stagedoor::decision_log::format_line;
use stagedoor::identity::Identity;
use stagedoor::offline::{catalog_config, load_policy};
use stagedoor::policy::Request;
use stagedoor::reason::Reason;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn update() -> bool {
    std::env::var_os("UPDATE_GOLDEN").is_some()
}

/// Compares `got` with the checked-in `path` (or rewrites it under UPDATE_GOLDEN).
fn golden(path: &Path, got: &str) {
    if update() {
        std::fs::write(path, got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(path).unwrap();
    assert_eq!(
        got,
        want,
        "{} is out of date (UPDATE_GOLDEN=1 rewrites it)",
        path.display()
    );
}

/// Each caller (subject, identity-provider groups, scopes) on each request, plus a
/// request without a token and one with an expired token.
async fn sample_log() -> String {
    let glob = root().join("examples/quickstart/catalog/*.yaml");
    let cfg = catalog_config(vec![glob.to_string_lossy().into_owned()]);
    let policy = load_policy(&cfg, Duration::from_secs(30))
        .await
        .unwrap()
        .policy;
    let people: [(&str, &[&str], &[&str]); 5] = [
        ("alice", &[], &["orders:read", "orders:write"]),
        ("bob", &["payments-engineers"], &["orders:read"]),
        ("erin", &["payments-engineers"], &["orders:write"]),
        (
            "carol",
            &["sre-oncall"],
            &["orders:read", "orders:admin", "billing:read"],
        ),
        ("dave", &["marketing"], &["orders:read"]),
    ];
    let ids: Vec<Identity> = people
        .iter()
        .map(|(sub, groups, scopes)| Identity {
            issuer: "https://idp.quickstart.example".into(),
            sub: Some((*sub).into()),
            groups: groups.iter().map(|s| s.to_string()).collect(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            exp: i64::MAX,
            ..Default::default()
        })
        .collect();
    let mut callers: Vec<Result<&Identity, Reason>> = ids.iter().map(Ok).collect();
    callers.extend([Err(Reason::MissingToken), Err(Reason::Expired)]);
    let time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_000_000);
    let mut text = String::new();
    for (method, host, path) in [
        ("GET", "orders.example.com", "/api/orders"),
        ("POST", "orders.example.com", "/api/orders"),
        ("GET", "orders.example.com", "/api/orders/me"),
        ("GET", "orders.example.com", "/api/orders/health"),
        ("DELETE", "orders.example.com", "/api/orders/admin/cache"),
        ("GET", "billing.localhost", "/api/invoices"),
    ] {
        for caller in &callers {
            let decision = policy.decide(&Request { method, host, path }, *caller);
            let req = AuthRequest {
                method,
                path,
                host,
                token: None,
                src: None,
                request_id: None,
                browser: Default::default(),
            };
            let outcome = Outcome {
                decision,
                identity: caller.ok().map(|i| Arc::new(i.clone())),
                credential_error: caller.err(),
                shadow: false,
                token_fp: None,
                browser: Default::default(),
            };
            text.push_str(&format_line(
                &req,
                &outcome,
                Duration::from_micros(40),
                time,
            ));
        }
    }
    text
}

fn check(config: &Path, cases: &Path, log: &Path) -> std::process::Output {
    Command::new(root().join("examples/catalog-ci/check.sh"))
        .arg(config)
        .arg(cases)
        .arg(log)
        .env("STAGEDOOR", env!("CARGO_BIN_EXE_stagedoor"))
        .current_dir(root())
        .output()
        .unwrap()
}

#[tokio::test]
async fn the_recipe_prints_the_golden_comment() {
    let ci = root().join("examples/catalog-ci");
    golden(&ci.join("sample-decisions.jsonl"), &sample_log().await);
    let out = check(
        &ci.join("stagedoor.toml"),
        &root().join("examples/policy-tests"),
        &ci.join("sample-decisions.jsonl"),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let md = String::from_utf8(out.stdout).unwrap();
    golden(&ci.join("expected-comment.md"), &md);
    // What the change does: erin (payments, without orders:read) is let in to GET
    // /api/orders; nobody is newly denied.
    assert!(md.contains("#### Newly allowed"), "{md}");
    assert!(md.contains("sub=`erin`"), "{md}");
    assert!(!md.contains("#### Newly denied"), "{md}");
    assert!(stderr.contains("10 cases, 0 failed"), "{stderr}");
}

#[test]
fn the_recipe_fails_on_a_broken_catalog_or_a_failing_case() {
    let dir = tempfile::tempdir().unwrap();
    let ci = root().join("examples/catalog-ci");
    let catalog = dir.path().join("catalog");
    std::fs::create_dir(&catalog).unwrap();
    for f in ["services.yaml", "teams.yaml"] {
        std::fs::copy(ci.join("catalog").join(f), catalog.join(f)).unwrap();
    }
    let config = dir.path().join("stagedoor.toml");
    std::fs::write(
        &config,
        std::fs::read_to_string(ci.join("stagedoor.toml"))
            .unwrap()
            .replace(
                "../quickstart/",
                &format!("{}/", root().join("examples/quickstart").display()),
            ),
    )
    .unwrap();
    let log = ci.join("sample-decisions.jsonl");
    let cases = root().join("examples/policy-tests");
    assert!(check(&config, &cases, &log).status.success());

    // A case that no longer holds: POST needs orders:read only.
    let services = catalog.join("services.yaml");
    let text = std::fs::read_to_string(&services).unwrap();
    std::fs::write(
        &services,
        text.replace(
            "POST      /api/orders          orders:write",
            "POST      /api/orders          orders:read",
        ),
    )
    .unwrap();
    let out = check(&config, &cases, &log);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("FAIL ") && stderr.contains("the right team without the scope is refused"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "no comment when a case fails");

    // An annotation error.
    std::fs::write(
        &services,
        text.replace("orders:write\n", "orders:write @\n"),
    )
    .unwrap();
    let out = check(&config, &cases, &log);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("policy show --strict: 1 annotation errors"),
        "{stderr}"
    );
}
