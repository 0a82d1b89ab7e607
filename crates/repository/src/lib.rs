//! Where backup bytes live: a flat namespace of immutable objects behind one small
//! contract, [`Store`], implemented on Apache `OpenDAL`. The local filesystem is the
//! embedded default; Swift and S3 plug in behind the same type.
//!
//! The contract the engine relies on:
//! - `put` is atomic (no reader ever sees a partial object) and durable when it returns
//!   `Ok` (on the local filesystem: file fsynced, renamed into place, directory fsynced);
//! - objects are never overwritten with different bytes (keys are content hashes or
//!   unique ids), so a retried `put` is harmless;
//! - `delete` is idempotent: deleting a missing object is `Ok`;
//! - reads return exactly the stored bytes or an error; checking them against a hash is
//!   the caller's job (the engine re-hashes every block it reads).

use std::ops::Range;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use opendal::{ErrorKind, Operator, services};

/// What went wrong, in terms a caller can branch on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("object {0} not found")]
    NotFound(String),
    /// The backend failed; `retryable` says whether trying again may help.
    #[error("object store: {source}")]
    Backend {
        #[source]
        source: opendal::Error,
        retryable: bool,
    },
    #[error("object store: {0}")]
    Io(#[from] std::io::Error),
}

impl StoreError {
    fn from_opendal(key: &str, e: opendal::Error) -> Self {
        if e.kind() == ErrorKind::NotFound {
            return Self::NotFound(key.to_owned());
        }
        let retryable = e.is_temporary();
        Self::Backend {
            source: e,
            retryable,
        }
    }
}

/// One stored object as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
}

/// An object store. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    op: Operator,
    /// Set for the local filesystem: the directory to fsync after a rename.
    local_root: Option<PathBuf>,
}

/// Name of the directory inside a local repository where writes are staged before the
/// rename that publishes them.
const STAGING_DIR: &str = ".staging";

impl Store {
    /// A store in a local directory (created if missing).
    pub fn local(root: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(root.join(STAGING_DIR))?;
        let root = std::fs::canonicalize(root)?;
        let staging = root.join(STAGING_DIR);
        let builder = services::Fs::default()
            .root(&root.to_string_lossy())
            .atomic_write_dir(&staging.to_string_lossy());
        let op = Operator::new(builder).map_err(|e| StoreError::from_opendal("", e))?;
        Ok(Self {
            op,
            local_root: Some(root),
        })
    }

    /// Where a local store keeps its files (for operators and tests).
    pub fn local_root(&self) -> Option<&Path> {
        self.local_root.as_deref()
    }

    /// Stores `data` under `key`: atomic, and durable when this returns `Ok`.
    pub async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        self.op
            .write(key, data)
            .await
            .map_err(|e| StoreError::from_opendal(key, e))?;
        if let Some(root) = &self.local_root {
            // OpenDAL fsyncs the file and renames it into place; the new directory
            // entry is durable only once its directory is fsynced too.
            let dir = parent_dir(root, key);
            tokio::task::spawn_blocking(move || std::fs::File::open(&dir)?.sync_all())
                .await
                .map_err(std::io::Error::other)??;
        }
        Ok(())
    }

    /// The whole object.
    pub async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        let buf = self
            .op
            .read(key)
            .await
            .map_err(|e| StoreError::from_opendal(key, e))?;
        Ok(buf.to_bytes())
    }

    /// A byte range of the object.
    pub async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StoreError> {
        let buf = self
            .op
            .read_with(key)
            .range(range)
            .await
            .map_err(|e| StoreError::from_opendal(key, e))?;
        Ok(buf.to_bytes())
    }

    /// Whether an object exists.
    pub async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        self.op
            .exists(key)
            .await
            .map_err(|e| StoreError::from_opendal(key, e))
    }

    /// Every object whose key starts with `prefix` (a "directory" ending in `/`),
    /// recursively, directories themselves left out.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let entries = match self.op.list_with(prefix).recursive(true).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(StoreError::from_opendal(prefix, e)),
        };
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            let meta = entry.metadata();
            if meta.is_dir() || entry.path().ends_with('/') {
                continue;
            }
            let key = entry.path().trim_start_matches('/').to_owned();
            if key.starts_with(STAGING_DIR) {
                continue;
            }
            out.push(ObjectMeta {
                key,
                size: meta.content_length(),
            });
        }
        Ok(out)
    }

    /// Removes an object; a missing one is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match self.op.delete(key).await {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::from_opendal(key, e)),
        }
        if let Some(root) = &self.local_root {
            let dir = parent_dir(root, key);
            tokio::task::spawn_blocking(move || match std::fs::File::open(&dir) {
                Ok(f) => f.sync_all(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e),
            })
            .await
            .map_err(std::io::Error::other)??;
        }
        Ok(())
    }
}

fn parent_dir(root: &Path, key: &str) -> PathBuf {
    let path = root.join(key);
    path.parent()
        .map_or_else(|| root.to_path_buf(), Path::to_path_buf)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The conformance suite every backend must pass; the local one runs here.
    async fn conformance(store: &Store) {
        assert!(matches!(
            store.get("missing/x").await,
            Err(StoreError::NotFound(_))
        ));
        assert!(!store.exists("a/b/c").await.unwrap());
        let data = Bytes::from((0..100_000u32).map(|i| i as u8).collect::<Vec<u8>>());
        store.put("a/b/c", data.clone()).await.unwrap();
        assert!(store.exists("a/b/c").await.unwrap());
        assert_eq!(store.get("a/b/c").await.unwrap(), data);
        assert_eq!(
            store.get_range("a/b/c", 10..20).await.unwrap(),
            data.slice(10..20)
        );
        // A retried put of the same bytes is harmless.
        store.put("a/b/c", data.clone()).await.unwrap();
        store.put("a/d", Bytes::from_static(b"x")).await.unwrap();
        let mut listed = store.list("a/").await.unwrap();
        listed.sort_by(|x, y| x.key.cmp(&y.key));
        assert_eq!(
            listed,
            vec![
                ObjectMeta {
                    key: "a/b/c".into(),
                    size: 100_000
                },
                ObjectMeta {
                    key: "a/d".into(),
                    size: 1
                },
            ]
        );
        assert!(store.list("nothing/").await.unwrap().is_empty());
        store.delete("a/b/c").await.unwrap();
        store.delete("a/b/c").await.unwrap();
        assert!(matches!(
            store.get("a/b/c").await,
            Err(StoreError::NotFound(_))
        ));
        assert_eq!(store.list("a/").await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn local_store_conforms() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::local(dir.path()).unwrap();
        conformance(&store).await;
        // Nothing is left staged.
        let staged = std::fs::read_dir(dir.path().join(STAGING_DIR))
            .unwrap()
            .count();
        assert_eq!(staged, 0);
    }
}
