//! The `file` catalog source: multi-document YAML, globs, derived relations, bad
//! documents, and the runner's reload on change and on SIGHUP.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use stagedoor::catalog::file::{load, load_report};
use stagedoor::catalog::{
    CatalogConfig, CatalogError, CatalogSnapshot, CatalogSource, ConfigError, Entity, Origin,
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

fn find<'a>(entities: &'a [Entity], entity_ref: &str) -> &'a Entity {
    entities
        .iter()
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
        matches!(err, CatalogError::Config(ConfigError::NoMatch { .. })),
        "{err}"
    );
    let err = load(&["[".to_owned()], dir.path()).unwrap_err();
    assert!(
        matches!(err, CatalogError::Config(ConfigError::InvalidGlob { .. })),
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
