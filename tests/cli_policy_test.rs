//! `stagedoor test` (issue 16): case files checked with the agent's own decision
//! code against the quickstart catalog. Passing and failing cases, every field of a
//! case shown to matter, and malformed files named by file and line.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_stagedoor"))
        .args(args)
        .current_dir(root())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const CONFIG: &str = "examples/quickstart/stagedoor.toml";

fn test_file(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_owned()
}

#[test]
fn the_examples_pass_with_a_config_and_with_catalog_files() {
    let (code, out, err) = run(&[
        "test",
        "--config",
        CONFIG,
        "examples/policy-tests/quickstart.yaml",
        "examples/policy-tests/claims.yaml",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.trim(), "10 cases, 0 failed", "{out}");
    let (code, out, err) = run(&[
        "test",
        "--catalog",
        "examples/quickstart/catalog/*.yaml",
        "examples/policy-tests/quickstart.yaml",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.trim(), "8 cases, 0 failed", "{out}");
}

/// Each field of a case changes the decision: pairs of cases that differ in one
/// field only, with different expected outcomes, all pass.
#[test]
fn every_field_of_a_case_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let id = "sub: bob, groups: [payments-engineers], scopes: [orders:read]";
    let cases = format!(
        r#"cases:
  - name: baseline
    request: {{method: GET, host: orders.example.com, path: /api/orders}}
    identity: {{{id}}}
    expect: {{allow: true, status: 200, reason: ok, route: "GET,HEAD /api/orders orders:read", entity: component:default/orders-api}}
  - name: method
    request: {{method: PUT, host: orders.example.com, path: /api/orders}}
    identity: {{{id}}}
    expect: {{reason: no_route}}
  - name: host
    request: {{method: GET, host: billing.localhost, path: /api/invoices}}
    identity: {{sub: carol, groups: [sre-oncall], scopes: [billing:read]}}
    expect: {{reason: ok}}
  - name: "path (and host: the same request on the default host)"
    request: {{method: GET, path: /api/invoices}}
    identity: {{sub: carol, groups: [sre-oncall], scopes: [billing:read]}}
    expect: {{reason: no_route}}
  - name: default host is localhost
    request: {{method: GET, path: /api/orders}}
    identity: {{{id}}}
    expect: {{reason: ok}}
  - name: scopes
    request: {{method: GET, path: /api/orders}}
    identity: {{sub: bob, groups: [payments-engineers], scopes: [orders:write]}}
    expect: {{reason: insufficient_scope}}
  - name: groups
    request: {{method: GET, path: /api/orders}}
    identity: {{sub: bob, groups: [marketing], scopes: [orders:read]}}
    expect: {{reason: not_member}}
  - name: sub
    request: {{method: GET, path: /api/orders}}
    identity: {{sub: alice, scopes: [orders:read]}}
    expect: {{reason: ok}}
  - name: email
    request: {{method: GET, path: /api/orders}}
    identity: {{sub: nobody, email: alice@example.com, scopes: [orders:read]}}
    expect: {{reason: ok}}
  - name: user
    request: {{method: GET, path: /api/orders}}
    identity: {{user: "user:default/alice", scopes: [orders:read]}}
    expect: {{reason: ok}}
  - name: credential
    request: {{method: GET, path: /api/orders}}
    credential: bad_signature
    expect: {{status: 401, reason: bad_signature}}
  - name: claims
    request: {{method: GET, path: /api/orders}}
    claims: {{sub: bob, groups: [payments-engineers], scope: "orders:read"}}
    expect: {{reason: ok}}
  - name: claims the issuer refuses
    request: {{method: GET, path: /api/orders}}
    claims: {{sub: bob, groups: [payments-engineers], scope: "orders:read", exp: 1}}
    expect: {{reason: expired}}
"#
    );
    let file = test_file(dir.path(), "fields.yaml", &cases);
    let (code, out, err) = run(&["test", "--config", CONFIG, &file]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.trim(), "13 cases, 0 failed");
}

/// A wrong expectation in any field is a failing case: one line naming the file,
/// the line of the case, its name, what was expected and what was decided.
#[test]
fn a_failing_case_says_where_what_was_expected_and_what_was_decided() {
    let dir = tempfile::tempdir().unwrap();
    let wrong = [
        ("allow", "allow: false"),
        ("status", "status: 403"),
        ("reason", "reason: not_member"),
        ("route", "route: \"GET /elsewhere\""),
        ("entity", "entity: component:default/billing-api"),
    ];
    let mut text = String::from("cases:\n");
    for (name, expect) in wrong {
        text.push_str(&format!(
            "  - name: wrong {name}\n    request: {{method: GET, path: /api/orders}}\n    identity: {{sub: bob, groups: [payments-engineers], scopes: [orders:read]}}\n    expect: {{{expect}}}\n"
        ));
    }
    let file = test_file(dir.path(), "wrong.yaml", &text);
    let (code, out, _) = run(&[
        "test",
        "--catalog",
        "examples/quickstart/catalog/*.yaml",
        &file,
    ]);
    assert_eq!(code, 1, "{out}");
    let fails: Vec<&str> = out.lines().filter(|l| l.starts_with("FAIL ")).collect();
    assert_eq!(fails.len(), 5, "{out}");
    for (i, (name, expect)) in wrong.iter().enumerate() {
        let line = 2 + i * 4;
        let want = format!(
            "FAIL {file}:{line}: wrong {name}: expected {}",
            expect.replace(": ", "=")
        );
        assert!(fails[i].starts_with(&want), "{}\nwanted {want}", fails[i]);
        assert!(
            fails[i].ends_with(
                "got allow=true status=200 reason=ok route=\"GET,HEAD /api/orders orders:read\" entity=component:default/orders-api"
            ),
            "{}",
            fails[i]
        );
    }
    assert!(out.ends_with("5 cases, 5 failed\n"), "{out}");
}

#[test]
fn malformed_case_files_are_named_by_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let ok_case = "  - name: fine\n    request: {method: GET, path: /api/orders}\n    expect: {reason: missing_token}\n";
    for (text, line, says) in [
        (
            "cases:\n  - name: x\n    request: {method: GET path: /}\n",
            3,
            "did not find expected",
        ),
        (
            &*format!(
                "cases:\n{ok_case}  - name: typo\n    request: {{method: GET, path: /}}\n    expct: {{allow: true}}\n"
            ),
            7,
            "unknown field `expct`",
        ),
        (
            &*format!(
                "cases:\n{ok_case}  - name: empty\n    request: {{method: GET, path: /}}\n    expect: {{}}\n"
            ),
            5,
            "empty: `expect` names nothing to check",
        ),
        (
            &*format!(
                "cases:\n{ok_case}\n  - name: bad reason\n    request: {{method: GET, path: /}}\n    expect: {{reason: forbidden}}\n"
            ),
            6,
            "is not a reason stagedoor gives",
        ),
        (
            &*format!(
                "cases:\n{ok_case}  - name: both\n    request: {{method: GET, path: /}}\n    identity: {{sub: a}}\n    credential: expired\n    expect: {{allow: false}}\n"
            ),
            5,
            "give one of `identity`, `claims` and `credential`",
        ),
        (
            &*format!(
                "cases:\n{ok_case}  - name: not a credential failure\n    request: {{method: GET, path: /}}\n    credential: not_member\n    expect: {{allow: false}}\n"
            ),
            5,
            "is not a reason a credential fails with",
        ),
        ("cases: []\n", 1, "`cases` lists no case"),
        ("tests:\n  - name: x\n", 1, "unknown field `tests`"),
    ] {
        let file = test_file(dir.path(), "bad.yaml", text);
        let (code, out, err) = run(&["test", "--config", CONFIG, &file]);
        assert_eq!(code, 1, "{text}\n{out}{err}");
        assert!(
            err.starts_with(&format!("stagedoor: {file}:{line}")) && err.contains(says),
            "{text}\nwanted line {line} and {says:?}, got: {err}"
        );
    }
    // Claims need an issuer's rules.
    let file = test_file(
        dir.path(),
        "claims.yaml",
        "cases:\n  - name: c\n    request: {method: GET, path: /}\n    claims: {sub: a}\n    expect: {allow: false}\n",
    );
    let (code, _, err) = run(&[
        "test",
        "--catalog",
        "examples/quickstart/catalog/*.yaml",
        &file,
    ]);
    assert_eq!(code, 1);
    assert!(
        err.contains(":2: c: `claims` are read by an issuer's rules: run with --config"),
        "{err}"
    );
    let (code, _, err) = run(&["test", "--config", CONFIG, "no/such/cases.yaml"]);
    assert_eq!(code, 1);
    assert!(err.contains("no/such/cases.yaml"), "{err}");
}
