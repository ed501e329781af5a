//! Review A (issue 16): `stagedoor replay` on hostile or damaged decision logs. The
//! log a CI job reads is the agent's output plus whatever a pipeline did to it; the
//! subject and the path in it are the caller's. A reordering character must not
//! forge the pull request comment, and a damaged line must not end the run.

use std::path::PathBuf;
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The catalog-ci example's one newly allowed line (erin's), as the agent wrote it.
fn erin_line() -> String {
    let log =
        std::fs::read_to_string(root().join("examples/catalog-ci/sample-decisions.jsonl")).unwrap();
    log.lines()
        .find(|l| l.contains(r#""sub":"erin""#) && l.contains(r#""path":"/api/orders""#))
        .expect("erin's line in the sample log")
        .to_owned()
}

fn replay(log: &[u8], format: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("decisions.jsonl");
    std::fs::write(&path, log).unwrap();
    Command::new(env!("CARGO_BIN_EXE_stagedoor"))
        .args(["replay", "--format", format, "--against"])
        .arg(root().join("examples/catalog-ci/stagedoor.toml"))
        .arg("--log")
        .arg(&path)
        .output()
        .unwrap()
}

/// A subject with a right-to-left override (a verified token's `sub` is chosen by
/// whoever registered the client) reorders the rest of the example in the comment.
#[test]
fn reordering_characters_are_encoded_in_markdown_and_text() {
    let sub = "erin\u{202E}kcab-ecivres\u{2066}";
    let line = erin_line().replace(r#""sub":"erin""#, &format!(r#""sub":"{sub}""#));
    for format in ["markdown", "text"] {
        let out = replay(format!("{line}\n").as_bytes(), format);
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.contains("1 newly allowed"), "{text}");
        for c in ['\u{202E}', '\u{2066}'] {
            assert!(
                !text.contains(c),
                "{format}: U+{:04X} printed as is:\n{text}",
                c as u32
            );
        }
        assert!(text.contains("erin%E2%80%AE"), "{format}: {text}");
    }
}

/// A line cut in the middle of a character (a truncated or rotated log) is one line
/// not replayed; the others still are, and the run succeeds.
#[test]
fn a_line_that_is_not_utf8_is_counted_not_fatal() {
    let line = erin_line();
    let mut log = line.as_bytes().to_vec();
    log.extend_from_slice(b"\n{\"event\":\"decision\",\"path\":\"/\xE2\x80\"}\n");
    log.extend_from_slice(line.as_bytes());
    log.push(b'\n');
    let out = replay(&log, "json");
    assert!(out.status.success(), "{out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["decisions"], 3, "{report}");
    assert_eq!(report["newly_allowed"], 2, "{report}");
    assert_eq!(report["not_replayed"]["not a JSON line"], 1, "{report}");
}

/// A line past the bound is skipped whole (not held in memory, not split into
/// lines), and the next line is replayed.
#[test]
fn a_huge_line_is_skipped_and_the_next_one_replayed() {
    let line = erin_line();
    let mut log = Vec::new();
    log.extend_from_slice(br#"{"event":"decision","path":"/"#);
    log.resize(log.len() + (3 << 20), b'a');
    log.extend_from_slice(b"\"}\n");
    log.extend_from_slice(line.as_bytes());
    log.push(b'\n');
    let out = replay(&log, "json");
    assert!(out.status.success(), "{out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["decisions"], 2, "{report}");
    assert_eq!(report["newly_allowed"], 1, "{report}");
    assert_eq!(report["not_replayed"]["longer than 1 MiB"], 1, "{report}");
}
