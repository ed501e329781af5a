//! What the outside review of issue 12 found and checked, as regression tests: the
//! first three failed before the fix (an odd spec ref skipped the whole entity in the
//! file source; NEL reached the decision log raw); the rest pin what was found sound.

use serde_json::{Value, json};
use stagedoor::catalog::Entity;
use stagedoor::catalog::file::load_report;
use stagedoor::identity::Identity;
use stagedoor::policy::{Policy, Request, Unmatched};
use stagedoor::reason::Reason;

/// Writes `docs` as one descriptor file and loads it with the file source.
fn file_source(docs: &[Value]) -> (Vec<Entity>, Vec<String>) {
    let text: Vec<String> = docs.iter().map(Value::to_string).collect();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("catalog.yaml"), text.join("\n---\n")).unwrap();
    let loaded = load_report(&["catalog.yaml".to_owned()], dir.path()).unwrap();
    let skipped = loaded.skipped.iter().map(ToString::to_string).collect();
    (loaded.entities, skipped)
}

fn decide(p: &Policy, path: &str, id: Result<&Identity, Reason>) -> Reason {
    let req = Request {
        method: "GET",
        host: "h",
        path,
    };
    p.decide(&req, id).reason
}

/// A public site (`portal`) that delegates `/admin` to `admin-console`, whose routes
/// require the `admins` group. The console's `spec.owner` is `owner` as written.
fn site(owner: &str) -> Vec<Value> {
    vec![
        json!({
            "apiVersion": "backstage.io/v1alpha1", "kind": "Component",
            "metadata": {"name": "portal", "annotations": {
                "stagedoor.io/hosts": "h",
                "stagedoor.io/routes": "GET / public",
                "stagedoor.io/delegate": "/admin admin-console"}},
            "spec": {"type": "website", "owner": "web"},
        }),
        json!({
            "apiVersion": "backstage.io/v1alpha1", "kind": "Component",
            "metadata": {"name": "admin-console", "annotations": {
                "stagedoor.io/hosts": "h",
                "stagedoor.io/routes": "* /admin authenticated @admins"}},
            "spec": {"type": "website", "owner": owner},
        }),
        json!({
            "apiVersion": "backstage.io/v1alpha1", "kind": "Group",
            "metadata": {"name": "admins"},
            "spec": {"type": "team", "children": []},
        }),
    ]
}

/// Was a finding: a spec ref that Backstage accepts (`parseEntityRef` checks
/// only that no part is empty; the Component schema asks `owner` only to be a non-empty
/// string) but that breaks EntityRef's name rule makes the file source skip the WHOLE
/// document. A skipped entity's paths are not held closed (only annotation errors are),
/// so its protected sub-route falls through to the delegating entity's public route.
/// Before issue 12 (`parse_ref`) `team+a` loaded and `/admin` stayed protected.
#[test]
fn an_owner_ref_outside_the_name_rule_keeps_the_entity_and_its_routes_closed() {
    let anon: Result<&Identity, Reason> = Err(Reason::MissingToken);

    // Control: a valid owner. /admin needs a token.
    let (entities, skipped) = file_source(&site("web"));
    assert!(skipped.is_empty(), "{skipped:?}");
    let p = Policy::build(&entities, Unmatched::Deny);
    assert_eq!(decide(&p, "/admin/users", anon), Reason::MissingToken);

    // The same catalog with `owner: team+a` (or `my_team_`, `ops.eu/team`, ...).
    for owner in ["team+a", "platform_", "ops.eu/team", "group:Team A"] {
        let (entities, skipped) = file_source(&site(owner));
        let p = Policy::build(&entities, Unmatched::Deny);
        assert_eq!(
            decide(&p, "/admin/users", anon),
            Reason::MissingToken,
            "owner {owner:?}: /admin/users was opened to anonymous callers; skipped: {skipped:?}"
        );
    }
}

/// Was a finding: the same entities, read the way the Backstage source
/// delivers them (Backstage accepted `owner: team+a` and emitted the relation), keep
/// `/admin` protected: the two sources decide differently on one catalog.
#[test]
fn file_and_backstage_sources_agree_on_a_catalog_with_an_odd_owner() {
    let anon: Result<&Identity, Reason> = Err(Reason::MissingToken);
    let docs = site("team+a");
    let as_backstage: Vec<Entity> = docs
        .iter()
        .map(|d| {
            let mut d = d.clone();
            if d["metadata"]["name"] == "admin-console" {
                d["relations"] = json!([{"type": "ownedBy", "targetRef": "group:default/team+a"}]);
            }
            d["metadata"]["namespace"] = json!("default");
            serde_json::from_value(d).unwrap()
        })
        .collect();
    let from_backstage = Policy::build(&as_backstage, Unmatched::Deny);
    let (entities, _) = file_source(&docs);
    let from_file = Policy::build(&entities, Unmatched::Deny);
    assert_eq!(
        decide(&from_backstage, "/admin/x", anon),
        Reason::MissingToken
    );
    assert_eq!(
        decide(&from_file, "/admin/x", anon),
        decide(&from_backstage, "/admin/x", anon),
        "file source and Backstage source disagree"
    );
}

/// Was a finding (fail-closed side): one `memberOf` entry outside the name rule
/// (Backstage loads the user, with a dangling relation) drops the whole User, and with
/// it every other membership and its `stagedoor.io/subject` mapping.
#[test]
fn one_odd_member_of_entry_keeps_the_users_other_memberships() {
    let docs = [
        json!({
            "apiVersion": "backstage.io/v1alpha1", "kind": "User",
            "metadata": {"name": "alice", "annotations": {"stagedoor.io/subject": "alice-sub"}},
            "spec": {"memberOf": ["sre", "legacy_team_"]},
        }),
        json!({
            "apiVersion": "backstage.io/v1alpha1", "kind": "Group",
            "metadata": {"name": "sre"}, "spec": {"type": "team", "children": []},
        }),
        json!({
            "apiVersion": "backstage.io/v1alpha1", "kind": "Component",
            "metadata": {"name": "svc", "annotations": {
                "stagedoor.io/routes": "GET /x authenticated @sre"}},
            "spec": {"type": "service", "owner": "sre"},
        }),
    ];
    let (entities, skipped) = file_source(&docs);
    let p = Policy::build(&entities, Unmatched::Deny);
    let alice = Identity {
        sub: Some("alice-sub".to_owned()),
        exp: 4_000_000_000,
        ..Identity::default()
    };
    assert_eq!(
        decide(&p, "/x", Ok(&alice)),
        Reason::Ok,
        "alice (member of sre) refused; skipped: {skipped:?}"
    );
}

/// Found sound: case, default kind/namespace and a `Group:` prefix all name the same entity
/// in both directions; whitespace and unicode are refused rather than read two ways.
#[test]
fn refs_read_one_way() {
    use stagedoor::catalog::EntityRef;
    let same = [
        "SRE",
        "group:sre",
        "Group:Default/SRE",
        "GROUP:default/sre",
        "default/Sre",
    ];
    for t in same {
        assert_eq!(
            EntityRef::parse(t, "group", "default").unwrap().as_str(),
            "group:default/sre",
            "{t}"
        );
    }
    for t in [
        " sre",
        "sre ",
        "s\u{0130}re",
        "\u{212a}ube",
        "group:default/sre/",
        "default/group:sre",
        "group::sre",
        "sre\0",
    ] {
        assert!(EntityRef::parse(t, "group", "default").is_err(), "{t:?}");
    }
}

/// Was a finding (low, older than issue 12): U+0085 (NEL) reaches the decision log raw.
/// The log escapes U+2028/2029 because some readers split lines there; NEL is the
/// third Unicode line terminator such readers use (Python's `str.splitlines`, Unicode
/// UAX #14 mandatory break), and HAProxy passes it in a path's raw bytes
/// (`%C2%85` decoded by nothing, or a raw 0xC2 0x85 in `path`).
#[test]
fn nel_is_escaped_in_the_decision_log() {
    use stagedoor::agent::{AuthRequest, Outcome};
    use stagedoor::policy::Decision;
    let req = AuthRequest {
        method: "GET",
        path: "/a\u{85}{\"forged\":1}\u{2028}\r\n",
        host: "h",
        token: None,
        src: None,
        request_id: Some("r\u{2029}"),
        browser: Default::default(),
    };
    let outcome = Outcome {
        decision: Decision::bare(Reason::NoRoute),
        identity: None,
        credential_error: None,
        shadow: false,
        token_fp: None,
        browser: Default::default(),
    };
    let line = stagedoor::decision_log::format_line(
        &req,
        &outcome,
        std::time::Duration::ZERO,
        std::time::SystemTime::UNIX_EPOCH,
    );
    // Sound: one line, valid JSON, the value round-trips.
    assert_eq!(line.matches('\n').count(), 1);
    assert!(!line.contains(['\r', '\u{2028}', '\u{2029}']));
    let v: Value = serde_json::from_str(line.trim_end()).unwrap();
    assert_eq!(v["path"], req.path);
    // The finding.
    assert!(
        !line.contains('\u{85}'),
        "NEL left raw: a splitlines() reader sees two records: {line:?}"
    );
}

/// Found sound: the shared client neither follows a redirect nor uses a proxy from the
/// environment (HTTP_PROXY/HTTPS_PROXY/ALL_PROXY set to a listener that records any
/// connection), and refuses a body over the cap whether or not it is announced.
#[tokio::test]
async fn http_client_no_redirect_no_env_proxy_body_cap() {
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    fn serve(answer: Vec<u8>, hits: Arc<AtomicUsize>) -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { return };
                hits.fetch_add(1, Ordering::SeqCst);
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                let _ = s.write_all(&answer);
            }
        });
        port
    }
    let proxy_hits = Arc::new(AtomicUsize::new(0));
    let proxy = serve(
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}".to_vec(),
        proxy_hits.clone(),
    );
    let target_hits = Arc::new(AtomicUsize::new(0));
    let target = serve(
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}".to_vec(),
        target_hits.clone(),
    );
    let redirect_hits = Arc::new(AtomicUsize::new(0));
    let redirect = serve(
        format!("HTTP/1.1 302 Found\r\nlocation: http://127.0.0.1:{target}/x\r\ncontent-length: 0\r\n\r\n")
            .into_bytes(),
        redirect_hits.clone(),
    );
    let big = serve(
        [
            &b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n"[..],
            &[b'a'; 5000][..],
        ]
        .concat(),
        Arc::new(AtomicUsize::new(0)),
    );
    // The environment cannot be changed in-process (unsafe is forbidden): a proxy
    // set in the environment is checked by re-running this binary with it set.
    if std::env::var_os("I12_PROXY_PROBE").is_none() {
        let proxy_url = format!("http://127.0.0.1:{proxy}");
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "sound_http_client_no_redirect_no_env_proxy_body_cap",
            ])
            .env("I12_PROXY_PROBE", "1")
            .env("HTTP_PROXY", &proxy_url)
            .env("HTTPS_PROXY", &proxy_url)
            .env("ALL_PROXY", &proxy_url)
            .env("http_proxy", &proxy_url)
            .env_remove("NO_PROXY")
            .env_remove("no_proxy")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert_eq!(proxy_hits.load(Ordering::SeqCst), 0);
    }
    let c = stagedoor::http::client(Duration::from_secs(2), Duration::from_secs(5)).unwrap();
    let r = stagedoor::http::send(c.get(format!("http://127.0.0.1:{redirect}/")))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 302);
    assert_eq!(redirect_hits.load(Ordering::SeqCst), 1);
    assert_eq!(target_hits.load(Ordering::SeqCst), 0, "redirect followed");
    assert_eq!(proxy_hits.load(Ordering::SeqCst), 0, "proxy from env used");
    let r = stagedoor::http::send(c.get(format!("http://127.0.0.1:{big}/")))
        .await
        .unwrap();
    let e = stagedoor::http::read_body(r, 4096).await.unwrap_err();
    assert!(
        matches!(e, stagedoor::http::Error::TooLarge { limit: 4096 }),
        "{e}"
    );
}
