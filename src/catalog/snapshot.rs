//! The last good Backstage sync on disk (`catalog.snapshot`): written after every
//! applied sync, read at startup when Backstage is unreachable, so a restart during a
//! Backstage outage still serves the policy it last had.
//!
//! Format: JSON `{"format": 1, "saved_at_unix": <i64>, "entities": [Entity...]}`.
//! Written atomically: a temp file in the same directory, created with mode 0600
//! (the catalog names who may call what: not for every local user), fsynced, renamed
//! over the target, so a reader never sees half a file. It holds no token.
//!
//! **The snapshot is a cache, never an authority.** Its entities seed the sync
//! ([`crate::catalog::backstage::Syncer::seed`]) but every one of them is fetched
//! again on the first sync that reaches Backstage, whatever its etag says, and the
//! file is then rewritten from what Backstage answered. So an edit of the file (say, a
//! scoped route made public) lasts at most until Backstage is reached: it is never
//! served as `live` nor written back. It is served, as origin `snapshot`, only while
//! Backstage is unreachable (or answers empty) after a restart; protecting the file
//! there is the file system's job (0600, a directory only the agent writes).
//! Refetching everything once per start was chosen over signing the file (an HMAC
//! keyed from the environment): it needs no key to provision or rotate, and costs one
//! full fetch, which a start without a snapshot pays anyway.

use std::borrow::Borrow;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::entity::Entity;
use super::error::CatalogError;

const FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedSnapshot {
    pub format: u32,
    pub saved_at_unix: i64,
    pub entities: Vec<Entity>,
}

/// What [`save`] writes: [`SavedSnapshot`]'s format, borrowing the entities.
#[derive(Serialize)]
struct Saving<'a> {
    format: u32,
    saved_at_unix: i64,
    entities: Vec<&'a Entity>,
}

/// Writes `entities` (owned, or the `Arc`s of a published catalog) to `path`
/// atomically.
pub fn save<E: Borrow<Entity>>(
    path: &Path,
    entities: &[E],
    saved_at_unix: i64,
) -> Result<(), CatalogError> {
    let fail = |reason: String| CatalogError::Snapshot {
        path: path.to_owned(),
        reason,
    };
    let body = serde_json::to_vec(&Saving {
        format: FORMAT,
        saved_at_unix,
        entities: entities.iter().map(Borrow::borrow).collect(),
    })
    .map_err(|e| fail(format!("cannot encode: {e}")))?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| fail("not a file path".to_owned()))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let write = || -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        // A temp file left by a crash may have other permissions: start afresh.
        let _ = std::fs::remove_file(&tmp);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(&body)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // Make the rename itself durable; not every platform can open a directory.
        if let Ok(dir) = std::fs::File::open(dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        fail(format!("cannot write: {e}"))
    })
}

/// Reads a snapshot written by [`save`].
pub fn load(path: &Path) -> Result<SavedSnapshot, CatalogError> {
    let fail = |reason: String| CatalogError::Snapshot {
        path: path.to_owned(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| fail(format!("cannot read: {e}")))?;
    let saved: SavedSnapshot =
        serde_json::from_slice(&bytes).map_err(|e| fail(format!("not a snapshot: {e}")))?;
    if saved.format != FORMAT {
        return Err(fail(format!("unknown format {}", saved.format)));
    }
    Ok(saved)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entity(name: &str) -> Entity {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "backstage.io/v1alpha1", "kind": "Component",
            "metadata": {"name": name, "etag": "e1", "annotations": {"stagedoor.io/routes": "x"}},
            "relations": [{"type": "ownedBy", "targetRef": "group:default/a"}]
        }))
        .unwrap()
    }

    #[test]
    fn round_trips_and_replaces_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snap.json");
        save(&path, &[entity("a")], 100).unwrap();
        save(&path, &[entity("b"), entity("c")], 200).unwrap();
        let saved = load(&path).unwrap();
        assert_eq!(saved.saved_at_unix, 200);
        assert_eq!(saved.entities, [entity("b"), entity("c")]);
        // No temp file left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["snap.json"]);
    }

    #[test]
    fn the_file_is_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snap.json");
        // An older file (or a hand-made one) readable by everyone is replaced by a 0600 one.
        std::fs::write(&path, "{}").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        save(&path, &[entity("a")], 1).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{mode:o}");
    }

    #[test]
    fn bad_files_are_typed_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snap.json");
        assert!(matches!(load(&path), Err(CatalogError::Snapshot { .. })));
        for body in [
            "",
            "{",
            "[]",
            r#"{"format":2,"saved_at_unix":1,"entities":[]}"#,
            r#"{"format":1,"saved_at_unix":1,"entities":[{"kind":"x"}]}"#,
        ] {
            std::fs::write(&path, body).unwrap();
            let err = load(&path).unwrap_err();
            assert!(
                matches!(err, CatalogError::Snapshot { .. }),
                "{body}: {err}"
            );
        }
        let unwritable = dir.path().join("missing-dir/snap.json");
        assert!(matches!(
            save::<Entity>(&unwritable, &[], 1),
            Err(CatalogError::Snapshot { .. })
        ));
    }
}
