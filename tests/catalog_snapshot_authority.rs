//! The snapshot is a cache, never an authority (issue 11, found by its outside
//! review): an entity seeded from the snapshot file whose live copy Backstage serves
//! but the agent skips (too large, or nested past serde_json's limit) was kept, and the
//! first contact ended `Unchanged`, which the runner publishes as live: an edited
//! route in the file stayed open for as long as Backstage's copy kept being skipped.
//! Now such an unconfirmed copy is left out, like a new entity that does not parse.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A fake Backstage: one entity, svc-a; by-refs answers with `by_refs_body`.
async fn fake_backstage_one(by_refs_body: String) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let by_refs = by_refs_body.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let head_end = loop {
                    if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break p + 4;
                    }
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap());
                while buf.len() < head_end + len {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let body = if head.starts_with("get ") {
                    r#"{"items":[{"kind":"Component","metadata":{"namespace":"default","name":"svc-a","etag":"a2"}}],"totalItems":1,"pageInfo":{}}"#.to_owned()
                } else {
                    by_refs
                };
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn a_seeded_entity_whose_live_copy_is_skipped_is_not_kept() {
    use stagedoor::catalog::Entity;
    use stagedoor::catalog::backstage::{Client, Limits, SyncOutcome, Syncer};
    let big = "x".repeat(8192);
    let live = serde_json::json!({"items": [{
        "apiVersion": "backstage.io/v1alpha1", "kind": "Component",
        "metadata": {"namespace": "default", "name": "svc-a", "etag": "a2",
                     "annotations": {"stagedoor.io/routes": "GET /a s", "big": big}},
        "spec": {"owner": "team-a"}}]});
    let url = fake_backstage_one(live.to_string()).await;
    let limits = Limits {
        max_body_bytes: 4096, // stands for the 32 MiB cap
        ..Limits::default()
    };
    let client = Client::new(&url, None, limits).unwrap();
    let mut syncer = Syncer::new(client, stagedoor::catalog::CatalogConfig::default().kinds);
    // The edited snapshot file's copy of svc-a.
    let edited: Entity = serde_json::from_value(serde_json::json!({
        "apiVersion": "backstage.io/v1alpha1", "kind": "Component",
        "metadata": {"namespace": "default", "name": "svc-a", "etag": "a1",
                     "annotations": {"stagedoor.io/routes": "GET /admin public"}},
        "spec": {"owner": "team-a"}}))
    .unwrap();
    syncer.seed(vec![edited]);
    let outcome = syncer.sync_once().await.unwrap();
    let report = syncer.report();
    assert_eq!(report.skipped.len(), 1, "{report:?}");
    assert!(
        !report.skipped[0].kept,
        "the unconfirmed copy is not kept: {report:?}"
    );
    // With svc-a left out no routed entity remains, so the wipe-out guard holds the
    // previous catalog as a snapshot (served as such, never as live) until the empty
    // answer repeats; before the fix the sync ended Unchanged, published as live.
    assert!(matches!(outcome, SyncOutcome::Held { .. }), "{outcome:?}");
}
