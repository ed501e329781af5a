//! The `file` catalog source: multi-document YAML, globs, derived relations, bad
//! documents, and the runner's reload on change and on SIGHUP.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use stagedoor::catalog::file::{load, load_report};
use stagedoor::catalog::{
    CatalogConfig, CatalogConfigError, CatalogError, CatalogSnapshot, CatalogSource, Entity, Origin,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/catalog")
}

/// A temp dir holding a copy of the fixture catalog under `catalog/`.
fn fixture_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("catalog")).unwrap();
    for name in ["org.yaml", "services.yaml"] {
        std::fs::copy(fixtures().join(name), dir.path().join("catalog").join(name)).unwrap();
    }
    dir
}

fn find<'a, E: std::borrow::Borrow<Entity>>(entities: &'a [E], entity_ref: &str) -> &'a Entity {
    entities
        .iter()
        .map(E::borrow)
        .find(|e| e.entity_ref() == entity_ref)
        .unwrap_or_else(|| panic!("{entity_ref} not loaded"))
}

fn relations(e: &Entity) -> Vec<(String, String)> {
    e.relations
        .iter()
        .map(|r| (r.kind.clone(), r.target_ref.clone()))
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn fixture_catalog_loads_with_relations_like_backstage() {
    let entities = load(&["*.yaml".to_owned()], &fixtures()).unwrap();
    let refs: Vec<_> = entities.iter().map(Entity::entity_ref).collect();
    assert_eq!(
        refs,
        [
            "component:default/ledger",
            "component:default/payments-api",
            "group:default/engineering",
            "group:default/payments-team",
            "user:default/alice",
        ]
    );
    let api = find(&entities, "component:default/payments-api");
    assert_eq!(api.api_version, "backstage.io/v1alpha1");
    assert_eq!(
        api.annotation("stagedoor.io/routes"),
        Some(
            "GET   /v1/payments   payments:read\n\
             POST  /v1/payments   payments:write\n"
        )
    );
    assert_eq!(api.spec["owner"], "payments-team");
    assert_eq!(
        relations(api),
        pairs(&[("ownedBy", "group:default/payments-team")])
    );
    assert_eq!(
        relations(find(&entities, "component:default/ledger")),
        pairs(&[("ownedBy", "group:default/engineering")])
    );
    assert_eq!(
        relations(find(&entities, "group:default/payments-team")),
        pairs(&[
            ("childOf", "group:default/engineering"),
            ("hasMember", "user:default/alice"),
            ("ownerOf", "component:default/payments-api"),
        ])
    );
    // parentOf is declared twice (engineering's children, payments-team's parent): once.
    assert_eq!(
        relations(find(&entities, "group:default/engineering")),
        pairs(&[
            ("ownerOf", "component:default/ledger"),
            ("parentOf", "group:default/payments-team"),
        ])
    );
    let alice = find(&entities, "user:default/alice");
    assert_eq!(alice.annotation("stagedoor.io/subject"), Some("00u1alice"));
    assert_eq!(
        relations(alice),
        pairs(&[("memberOf", "group:default/payments-team")])
    );
    assert!(entities.iter().all(|e| e.metadata.etag.is_none()));
}

#[test]
fn globs_combine_and_resolve_against_the_base_dir() {
    // A base dir with glob metacharacters in its name is taken literally.
    let root = tempfile::tempdir().unwrap();
    let base = root.path().join("conf [x]*");
    std::fs::create_dir_all(base.join("teams/a")).unwrap();
    std::fs::create_dir_all(base.join("teams/b")).unwrap();
    std::fs::write(
        base.join("teams/a/one.yaml"),
        "apiVersion: v1\nkind: Group\nmetadata: {name: a}\n",
    )
    .unwrap();
    std::fs::write(
        base.join("teams/b/two.yaml"),
        "apiVersion: v1\nkind: Group\nmetadata: {name: b}\n---\n\
         apiVersion: v1\nkind: User\nmetadata: {name: u, namespace: people}\nspec: {memberOf: [a, default/b]}\n",
    )
    .unwrap();
    std::fs::write(base.join("teams/b/notes.txt"), "not yaml: [").unwrap();
    let absolute = fixtures().join("org.yaml").to_string_lossy().into_owned();
    let entities = load(&["teams/*/*.yaml".to_owned(), absolute], &base).unwrap();
    let refs: Vec<_> = entities.iter().map(Entity::entity_ref).collect();
    assert_eq!(
        refs,
        [
            "group:default/a",
            "group:default/b",
            "group:default/engineering",
            "group:default/payments-team",
            "user:default/alice",
            "user:people/u",
        ]
    );
    // A short ref resolves in the entity's own namespace, as Backstage does.
    assert_eq!(
        relations(find(&entities, "user:people/u")),
        pairs(&[
            ("memberOf", "group:default/b"),
            ("memberOf", "group:people/a"),
        ])
    );
    // group:people/a does not exist (dangling, as in Backstage): no inverse on group a.
    assert!(find(&entities, "group:default/a").relations.is_empty());
    assert_eq!(
        relations(find(&entities, "group:default/b")),
        pairs(&[("hasMember", "user:people/u")])
    );
}

#[test]
fn bad_documents_are_skipped_and_reported_the_rest_loads() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.yaml"),
        "apiVersion: v1\nkind: Group\nmetadata: {name: good}\n\
         ---\nhello: world\n\
         ---\napiVersion: v1\nkind: Component\nmetadata: {name: svc}\nspec: {owner: [not, a, string]}\n\
         ---\napiVersion: v1\nkind: Group\nmetadata: {name: second}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("b.yaml"),
        "apiVersion: v1\nkind: Group\nmetadata: {name: GOOD}\n\
         ---\napiVersion: v1\nkind: User\nmetadata: {name: u}\n\
         ---\n  bad: [indent\n---\napiVersion: v1\nkind: User\nmetadata: {name: never-read}\n",
    )
    .unwrap();
    let loaded = load_report(&["*.yaml".to_owned()], dir.path()).unwrap();
    let refs: Vec<_> = loaded.entities.iter().map(Entity::entity_ref).collect();
    assert_eq!(
        refs,
        [
            "group:default/good",
            "group:default/second",
            "user:default/u"
        ]
    );
    let reported: Vec<(String, usize, String)> = loaded
        .skipped
        .iter()
        .map(|e| match e {
            CatalogError::Document {
                file,
                index,
                reason,
            } => (
                file.file_name().unwrap().to_string_lossy().into_owned(),
                *index,
                reason.clone(),
            ),
            other => panic!("not a document error: {other}"),
        })
        .collect();
    assert_eq!(reported.len(), 4, "{reported:#?}");
    assert_eq!((reported[0].0.as_str(), reported[0].1), ("a.yaml", 1));
    assert!(reported[0].2.contains("not an entity"), "{}", reported[0].2);
    assert_eq!((reported[1].0.as_str(), reported[1].1), ("b.yaml", 0));
    assert!(
        reported[1].2.contains("already defined"),
        "{}",
        reported[1].2
    );
    assert_eq!((reported[2].0.as_str(), reported[2].1), ("b.yaml", 2));
    assert!(reported[2].2.contains("invalid YAML"), "{}", reported[2].2);
    assert_eq!((reported[3].0.as_str(), reported[3].1), ("a.yaml", 2));
    assert!(reported[3].2.contains("spec.owner"), "{}", reported[3].2);
    // The message names the file and the document.
    let message = loaded.skipped[0].to_string();
    assert!(
        message.contains("a.yaml") && message.contains("document 1"),
        "{message}"
    );
}

#[test]
fn unusable_globs_and_files_fail_the_load() {
    let dir = tempfile::tempdir().unwrap();
    let err = load(&["*.yaml".to_owned()], dir.path()).unwrap_err();
    assert!(
        matches!(
            err,
            CatalogError::Config(CatalogConfigError::NoMatch { .. })
        ),
        "{err}"
    );
    let err = load(&["[".to_owned()], dir.path()).unwrap_err();
    assert!(
        matches!(
            err,
            CatalogError::Config(CatalogConfigError::InvalidGlob { .. })
        ),
        "{err}"
    );
    std::fs::write(dir.path().join("bin.yaml"), [0xff, 0xfe, 0x00, 0x41]).unwrap();
    let err = load(&["*.yaml".to_owned()], dir.path()).unwrap_err();
    assert!(matches!(err, CatalogError::Io { .. }), "{err}");
}

async fn next_snapshot(
    rx: &mut watch::Receiver<Option<Arc<CatalogSnapshot>>>,
    within: Duration,
) -> Arc<CatalogSnapshot> {
    tokio::time::timeout(within, async {
        loop {
            rx.changed().await.expect("runner stopped");
            if let Some(s) = rx.borrow_and_update().clone() {
                return s;
            }
        }
    })
    .await
    .expect("no new catalog snapshot in time")
}

fn file_config(reload_seconds: u64) -> CatalogConfig {
    CatalogConfig {
        reload_seconds,
        ..CatalogConfig::default()
    }
}

#[tokio::test]
async fn runner_reloads_on_change_and_keeps_the_last_good_catalog() {
    let dir = fixture_copy();
    let config = file_config(1);
    config.validate(dir.path()).unwrap();
    let shutdown = CancellationToken::new();
    let handle = CatalogSource::start(&config, dir.path(), shutdown.clone()).unwrap();
    let mut rx = handle.snapshots();
    let first = next_snapshot(&mut rx, Duration::from_secs(10)).await;
    assert_eq!(first.origin, Origin::File);
    assert_eq!(first.entities.len(), 5);

    // An edit: a new route on ledger, and a new file matching the glob.
    let services = dir.path().join("catalog/services.yaml");
    let text = std::fs::read_to_string(&services)
        .unwrap()
        .replace("GET   /v1/entries", "GET   /v2/entries");
    std::fs::write(&services, text).unwrap();
    std::fs::write(
        dir.path().join("catalog/extra.yaml"),
        "apiVersion: backstage.io/v1alpha1\nkind: User\nmetadata: {name: bob}\nspec: {memberOf: [engineering]}\n",
    )
    .unwrap();
    let mut second = next_snapshot(&mut rx, Duration::from_secs(10)).await;
    if second.entities.len() == 5 {
        // The poll fell between the two writes.
        second = next_snapshot(&mut rx, Duration::from_secs(10)).await;
    }
    assert_eq!(second.entities.len(), 6);
    let ledger = find(&second.entities, "component:default/ledger");
    assert!(
        ledger
            .annotation("stagedoor.io/routes")
            .unwrap()
            .contains("/v2/entries")
    );
    assert!(
        relations(find(&second.entities, "group:default/engineering"))
            .contains(&("hasMember".to_owned(), "user:default/bob".to_owned()))
    );

    // All files gone: the load fails, the last good catalog stays published.
    let away = dir.path().join("catalog.away");
    std::fs::rename(dir.path().join("catalog"), &away).unwrap();
    let mut status = handle.status();
    tokio::time::timeout(
        Duration::from_secs(10),
        status.wait_for(|s| s.consecutive_errors >= 1),
    )
    .await
    .expect("the failed load was not reported")
    .unwrap();
    let now = rx.borrow().clone().unwrap();
    assert!(Arc::ptr_eq(&now, &second));
    let s = handle.status().borrow().clone();
    assert_eq!(s.entities, 6);
    assert!(s.last_error.unwrap().contains("matches no file"));
    assert!(s.syncs.applied >= 2 && s.syncs.failed >= 1, "{:?}", s.syncs);

    // The same files back: the failure is over, nothing to reload.
    std::fs::rename(&away, dir.path().join("catalog")).unwrap();
    tokio::time::timeout(
        Duration::from_secs(10),
        status.wait_for(|s| s.consecutive_errors == 0),
    )
    .await
    .expect("the recovery was not reported")
    .unwrap();
    assert!(handle.status().borrow().last_error.is_none());
    assert!(Arc::ptr_eq(rx.borrow().as_ref().unwrap(), &second));

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), handle.stopped())
        .await
        .expect("runner did not stop");
}

#[tokio::test]
async fn sighup_and_reload_force_a_load() {
    let dir = fixture_copy();
    // The timer never fires during the test: only a forced reload can see the edit.
    let config = file_config(3600);
    let shutdown = CancellationToken::new();
    let handle = CatalogSource::start(&config, dir.path(), shutdown.clone()).unwrap();
    // SIGHUP reaches the runner through the process's one signal owner, as in `serve`.
    let signals = stagedoor::lifecycle::Signals::install().unwrap();
    tokio::spawn(signals.run(shutdown.clone(), handle.reloader()));
    let mut rx = handle.snapshots();
    assert_eq!(
        next_snapshot(&mut rx, Duration::from_secs(10))
            .await
            .entities
            .len(),
        5
    );

    std::fs::write(
        dir.path().join("catalog/extra.yaml"),
        "apiVersion: v1\nkind: Group\nmetadata: {name: hup}\n",
    )
    .unwrap();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let after_hup = next_snapshot(&mut rx, Duration::from_secs(10)).await;
    assert!(
        after_hup
            .entities
            .iter()
            .any(|e| e.entity_ref() == "group:default/hup")
    );

    std::fs::remove_file(dir.path().join("catalog/extra.yaml")).unwrap();
    handle.reload();
    let after_reload = next_snapshot(&mut rx, Duration::from_secs(10)).await;
    assert_eq!(after_reload.entities.len(), 5);
    shutdown.cancel();
}

// --------------------------------------- issue 11: files that must not be parsed

/// `depth` flow levels under a key, unclosed: what took libyaml seconds to minutes.
fn deep_yaml(depth: usize) -> String {
    format!(
        "apiVersion: v1\nkind: Group\nmetadata:\n  name: g\n  x: {}\n",
        "[".repeat(depth)
    )
}

#[test]
fn a_deeply_nested_file_is_refused_quickly_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("good.yaml"),
        "apiVersion: v1\nkind: Group\nmetadata: {name: fine}\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("deep.yaml"), deep_yaml(64 * 1024)).unwrap();
    let started = std::time::Instant::now();
    let err = load_report(&["*.yaml".to_owned()], dir.path()).unwrap_err();
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
    let CatalogError::FileRefused { path, reason } = &err else {
        panic!("{err}")
    };
    assert_eq!(path, &dir.path().join("deep.yaml"));
    assert!(reason.contains("line 5"), "{reason}");
    let message = err.to_string();
    assert!(
        message.contains("deep.yaml") && message.contains("nested"),
        "{message}"
    );

    // Over the byte cap: refused without being read whole.
    std::fs::remove_file(dir.path().join("deep.yaml")).unwrap();
    let big = std::fs::File::create(dir.path().join("big.yaml")).unwrap();
    big.set_len(stagedoor::catalog::file::MAX_FILE_BYTES + 1)
        .unwrap();
    let err = load_report(&["*.yaml".to_owned()], dir.path()).unwrap_err();
    assert!(
        matches!(&err, CatalogError::FileRefused { path, .. } if path.ends_with("big.yaml")),
        "{err}"
    );
    assert!(err.to_string().contains("larger than"), "{err}");
}

#[tokio::test]
async fn the_runner_keeps_the_last_good_catalog_when_a_file_is_refused() {
    let dir = fixture_copy();
    let shutdown = CancellationToken::new();
    let handle = CatalogSource::start(&file_config(1), dir.path(), shutdown.clone()).unwrap();
    let mut rx = handle.snapshots();
    let first = next_snapshot(&mut rx, Duration::from_secs(10)).await;
    std::fs::write(dir.path().join("catalog/deep.yaml"), deep_yaml(200_000)).unwrap();
    let mut status = handle.status();
    let st = tokio::time::timeout(
        Duration::from_secs(10),
        status.wait_for(|s| s.consecutive_errors >= 1),
    )
    .await
    .expect("the refusal was not reported")
    .unwrap()
    .clone();
    assert!(
        st.last_error.as_deref().unwrap().contains("deep.yaml"),
        "{st:?}"
    );
    assert!(Arc::ptr_eq(rx.borrow().as_ref().unwrap(), &first));
    shutdown.cancel();
}

/// A load that outlives its deadline is abandoned and reported; the same files are not
/// tried again (the abandoned parse may still be running), changed ones are.
#[tokio::test]
async fn a_load_past_its_deadline_is_abandoned() {
    use stagedoor::catalog::source::RunnerLimits;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("catalog")).unwrap();
    // Within both caps (2 MiB, 60 levels), but slow: seconds in a debug build.
    let unit = format!("{}1{},", "[".repeat(58), "]".repeat(58));
    let slow = format!("a: [{}1]\n", unit.repeat(2 * 1024 * 1024 / unit.len()));
    std::fs::write(dir.path().join("catalog/slow.yaml"), slow).unwrap();
    let limits = RunnerLimits {
        file_load_deadline: Duration::from_millis(200),
        ..RunnerLimits::default()
    };
    let shutdown = CancellationToken::new();
    let started = std::time::Instant::now();
    let handle =
        CatalogSource::start_with(&file_config(1), dir.path(), shutdown.clone(), limits).unwrap();
    let mut status = handle.status();
    let st = tokio::time::timeout(
        Duration::from_secs(10),
        status.wait_for(|s| s.consecutive_errors >= 1),
    )
    .await
    .expect("the deadline was not kept")
    .unwrap()
    .clone();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(
        st.last_error
            .as_deref()
            .unwrap()
            .contains("not loaded within"),
        "{st:?}"
    );
    // Two more polls: the same files are not loaded again.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(handle.status().borrow().syncs.failed, 1);
    assert!(handle.snapshots().borrow().is_none());

    // Fixed files load once the abandoned parse has ended.
    std::fs::write(
        dir.path().join("catalog/slow.yaml"),
        "apiVersion: v1\nkind: Group\nmetadata: {name: fixed}\n",
    )
    .unwrap();
    let mut rx = handle.snapshots();
    let loaded = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            if let Some(s) = rx.borrow_and_update().clone() {
                return s;
            }
            rx.changed().await.unwrap();
        }
    })
    .await
    .expect("the fixed files never loaded");
    assert_eq!(loaded.entities[0].entity_ref(), "group:default/fixed");
    shutdown.cancel();
}

/// Entities Backstage would refuse (its name, namespace, kind rules) are refused by the
/// file source too, each with a message naming the field; the others load.
#[test]
fn names_backstage_would_refuse_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.yaml"),
        "apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata: {name: 'orders api'}\n\
         ---\napiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata: {name: orders, namespace: Payments}\n\
         ---\napiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata: {name: -orders}\n\
         ---\napiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n  name: a-name-that-is-longer-than-sixty-three-characters-which-backstage-refuses\n\
         ---\napiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata: {name: Orders_API.v2}\n",
    )
    .unwrap();
    let loaded = load_report(&["*.yaml".to_owned()], dir.path()).unwrap();
    let refs: Vec<_> = loaded.entities.iter().map(Entity::entity_ref).collect();
    assert_eq!(refs, ["component:default/orders_api.v2"]);
    let reasons: Vec<(usize, String)> = loaded
        .skipped
        .iter()
        .map(|e| match e {
            CatalogError::Document { index, reason, .. } => (*index, reason.clone()),
            other => panic!("{other}"),
        })
        .collect();
    assert_eq!(reasons.len(), 4, "{reasons:#?}");
    for ((index, reason), (want_index, field)) in reasons.iter().zip([
        (0, "\"metadata.name\" is not valid"),
        (1, "\"metadata.namespace\" is not valid"),
        (2, "\"metadata.name\" is not valid"),
        (3, "\"metadata.name\" is not valid"),
    ]) {
        assert_eq!(*index, want_index);
        assert!(
            reason.starts_with("refused as Backstage would refuse it: ") && reason.contains(field),
            "{reason}"
        );
    }
    assert!(
        reasons[0].1.ends_with("but found \"orders api\""),
        "{}",
        reasons[0].1
    );
    assert!(
        reasons[1]
            .1
            .contains("sequences of [a-z0-9] separated by [-]"),
        "{}",
        reasons[1].1
    );
}

// ------------------------------------------------------------- `policy show`

/// A configuration in `dir` reading `dir/catalog/*.yaml`, with the quickstart's keys.
fn cli_config(dir: &Path) -> PathBuf {
    let jwks = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/quickstart/demo-jwks.json");
    let config = dir.join("stagedoor.toml");
    std::fs::write(
        &config,
        format!(
            "[[issuers]]\nissuer = \"https://idp.example\"\naudiences = [\"a\"]\n\
             jwks_file = \"{}\"\nalgorithms = [\"ES256\"]\n\n\
             [catalog]\nsource = \"file\"\nfiles = [\"catalog/*.yaml\"]\n",
            jwks.display()
        ),
    )
    .unwrap();
    config
}

/// Runs `stagedoor policy show` (killed after 60 s): exit code, stdout, stderr, time.
fn policy_show(config: &Path, json: bool) -> (Option<i32>, String, String, Duration) {
    use std::io::Read;
    let mut args = vec!["policy", "show", "--config", config.to_str().unwrap()];
    if json {
        args.extend(["--format", "json"]);
    }
    let started = std::time::Instant::now();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_stagedoor"))
        .args(&args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let elapsed = started.elapsed();
    let (mut out, mut err) = (String::new(), String::new());
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (code, out, err, elapsed)
}

#[test]
fn policy_show_exits_with_an_error_on_a_deeply_nested_file() {
    let dir = fixture_copy();
    std::fs::write(dir.path().join("catalog/deep.yaml"), deep_yaml(200_000)).unwrap();
    let config = cli_config(dir.path());
    let (code, out, err, elapsed) = policy_show(&config, false);
    assert_eq!(
        code,
        Some(1),
        "exit {code:?} after {elapsed:?}\n{out}\n{err}"
    );
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
    assert!(err.contains("deep.yaml") && err.contains("nested"), "{err}");
    assert!(out.is_empty(), "{out}");
}

#[test]
fn policy_show_says_why_each_document_was_skipped() {
    let dir = fixture_copy();
    std::fs::write(
        dir.path().join("catalog/extra.yaml"),
        "apiVersion: v1\nkind: Group\nmetadata: {name: fine}\n\
         ---\nhello: world\n\
         ---\napiVersion: v1\nkind: Group\nmetadata: {name: 'bad name'}\n",
    )
    .unwrap();
    let config = cli_config(dir.path());
    let (code, out, err, _) = policy_show(&config, false);
    assert_eq!(code, Some(0), "{err}");
    let skipped: Vec<&str> = out.lines().filter(|l| l.starts_with("skipped: ")).collect();
    assert_eq!(skipped.len(), 2, "{out}");
    assert!(
        skipped[0].contains("extra.yaml, document 1: not an entity"),
        "{}",
        skipped[0]
    );
    assert!(
        skipped[1].contains(
            "extra.yaml, document 2: refused as Backstage would refuse it: \"metadata.name\""
        ),
        "{}",
        skipped[1]
    );
    let (code, out, _, _) = policy_show(&config, true);
    assert_eq!(code, Some(0));
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["skipped"].as_array().unwrap().len(), 2, "{json}");
}
