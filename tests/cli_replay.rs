//! `stagedoor replay` (issue 16): the sample decision log of examples/catalog-ci/
//! (written by the agent's own line writer for a mix of callers under the quickstart
//! catalog; tests/catalog_ci.rs keeps it current), replayed against candidate
//! catalogs. The same catalog changes nothing; a loosened scope lists
//! exactly the requests it lets in as newly allowed; a User leaving a group lists
//! exactly theirs as newly denied. (tests/e2e_agent.rs replays a log recorded
//! through HAProxy.)

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A copy of the quickstart catalog with `edit` applied to one of its files.
fn candidate(dir: &Path, name: &str, file: &str, from: &str, to: &str) -> String {
    let out = dir.join(name);
    std::fs::create_dir_all(&out).unwrap();
    for f in ["services.yaml", "teams.yaml"] {
        let mut text =
            std::fs::read_to_string(root().join("examples/quickstart/catalog").join(f)).unwrap();
        if f == file {
            assert!(text.contains(from), "{from} not in {f}");
            text = text.replacen(from, to, 1);
        }
        std::fs::write(out.join(f), text).unwrap();
    }
    out.join("*.yaml").to_string_lossy().into_owned()
}

fn replay(log: &Path, catalog: &str, format: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_stagedoor"))
        .args(["replay", "--format", format, "--catalog", catalog, "--log"])
        .arg(log)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// Every example of `kind` across routes, as "METHOD path sub".
fn examples(report: &Value, kind: &str) -> Vec<String> {
    let mut all: Vec<String> = report["routes"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["examples"][kind].as_array().cloned().unwrap_or_default())
        .map(|e| {
            format!(
                "{} {} {}",
                e["method"].as_str().unwrap(),
                e["path"].as_str().unwrap(),
                e["sub"].as_str().unwrap_or("-")
            )
        })
        .collect();
    all.sort();
    all
}

#[test]
fn replay_lists_exactly_what_a_catalog_change_does() {
    let dir = tempfile::tempdir().unwrap();
    let log = root().join("examples/catalog-ci/sample-decisions.jsonl");
    let lines = 42;

    // The same catalog: nothing changes, every line replays.
    let same = root().join("examples/quickstart/catalog/*.yaml");
    let r: Value = serde_json::from_str(&replay(&log, &same.to_string_lossy(), "json")).unwrap();
    assert_eq!(r["decisions"], lines, "{r}");
    assert_eq!(r["replayed"], lines, "{r}");
    assert_eq!(r["unchanged"], lines, "{r}");

    // POST /api/orders takes orders:read as well as orders:write: bob and carol (in
    // the allowed groups, holding orders:read) are let in (alice and erin, holding
    // orders:write, were already); dave's POST now fails
    // on membership instead of scope (another reason, still denied); nobody else moves.
    let loose = candidate(
        dir.path(),
        "loose",
        "services.yaml",
        "POST      /api/orders          orders:write",
        "POST      /api/orders          orders:write|orders:read",
    );
    let r: Value = serde_json::from_str(&replay(&log, &loose, "json")).unwrap();
    assert_eq!(r["newly_allowed"], 2, "{r}");
    assert_eq!(r["newly_denied"], 0, "{r}");
    assert_eq!(r["reason_changed"], 1, "{r}");
    assert_eq!(
        examples(&r, "newly_allowed"),
        ["POST /api/orders bob", "POST /api/orders carol"]
    );
    assert_eq!(examples(&r, "reason_changed"), ["POST /api/orders dave"]);

    // alice leaves payments: her allowed requests (by her User entity) are denied,
    // nobody else's.
    let left = candidate(
        dir.path(),
        "left",
        "teams.yaml",
        "memberOf: [payments]",
        "memberOf: []",
    );
    let r: Value = serde_json::from_str(&replay(&log, &left, "json")).unwrap();
    assert_eq!(r["newly_allowed"], 0, "{r}");
    assert_eq!(r["newly_denied"], 3, "{r}");
    assert_eq!(
        examples(&r, "newly_denied"),
        [
            "GET /api/orders alice",
            "GET /api/orders/me alice",
            "POST /api/orders alice"
        ]
    );

    // The text and markdown forms lead with what is newly allowed.
    let text = replay(&log, &loose, "text");
    assert!(text.starts_with("42 of 42 decisions replayed: 2 newly allowed, 0 newly denied, 1 with another reason, 39 unchanged."), "{text}");
    assert!(
        text.find("NEWLY ALLOWED:").unwrap() < text.find("REASON CHANGED:").unwrap(),
        "{text}"
    );
    let md = replay(&log, &loose, "markdown");
    assert!(md.contains("#### Newly allowed"), "{md}");
}

#[test]
fn lines_that_cannot_be_replayed_are_counted_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("mixed.jsonl");
    let base = r#""event":"decision","method":"GET","host":"h","path":"/api/orders","decision":"deny","status":401"#;
    std::fs::write(
        &log,
        [
            format!(r#"{{{base},"reason":"missing_token","caller":"missing_token"}}"#),
            // Before replay existed: no caller field.
            format!(r#"{{{base},"reason":"missing_token"}}"#),
            // [log] identity = "minimal": a verified caller without its groups and scopes.
            format!(r#"{{{base},"reason":"ok","caller":"verified","sub":"bob"}}"#),
            format!(r#"{{{base},"reason":"policy_unavailable","caller":"missing_token"}}"#),
            "not json".to_owned(),
            r#"{"event":"start","message":"not a decision"}"#.to_owned(),
        ]
        .join("\n"),
    )
    .unwrap();
    let catalog = root().join("examples/quickstart/catalog/*.yaml");
    let r: Value = serde_json::from_str(&replay(&log, &catalog.to_string_lossy(), "json")).unwrap();
    assert_eq!(r["decisions"], 5, "{r}");
    assert_eq!(r["replayed"], 1, "{r}");
    let why = &r["not_replayed"];
    assert_eq!(why["written before replay (no caller field)"], 1, "{r}");
    assert_eq!(
        why["identity not logged ([log] identity = \"minimal\")"], 1,
        "{r}"
    );
    assert_eq!(
        why["no policy was loaded then (policy_unavailable or internal_error)"], 1,
        "{r}"
    );
    assert_eq!(why["not a JSON line"], 1, "{r}");
}

/// Paths come from whoever sent the request: in markdown they cannot end the code
/// span or the table cell, and in text they carry no terminal escapes.
#[test]
fn request_paths_cannot_break_out_of_the_output() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("hostile.jsonl");
    let path = "/api/orders/x` | <img src=x> \u{1b}[31m\n";
    let line = serde_json::json!({
        "event": "decision", "method": "GET", "host": "h", "path": path,
        "decision": "deny", "status": 401, "reason": "missing_token", "caller": "missing_token",
        "sub": null,
    });
    std::fs::write(&log, format!("{line}\n")).unwrap();
    // Under the same catalog the line decides otherwise (bad_path: the path holds
    // control characters), so it is listed with its path.
    let same = root().join("examples/quickstart/catalog/*.yaml");
    let same = same.to_string_lossy();
    let md = replay(&log, &same, "markdown");
    let row = md.lines().find(|l| l.contains("/api/orders/x")).unwrap();
    assert_eq!(
        row.matches('|').count(),
        5,
        "the row keeps its four cells: {row}"
    );
    assert_eq!(row.matches('`').count() % 2, 0, "{row}");
    assert!(!row.contains('<') && !row.contains('\u{1b}'), "{row}");
    let text = replay(&log, &same, "text");
    assert!(!text.contains('\u{1b}'), "{text:?}");
    assert_eq!(
        text.lines().filter(|l| l.contains("/api/orders/x")).count(),
        1,
        "{text}"
    );
}
