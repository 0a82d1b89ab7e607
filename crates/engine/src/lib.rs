//! The backup engine: volume bytes in, deduplicated, compressed and checksummed objects
//! out, and back again, byte for byte. It never sees HTTP or SQL: the service hands it
//! a volume path and a backup id, and flips catalog rows on what it returns.
//!
//! CPU work (hashing, compression, verification) runs on plain threads inside
//! `spawn_blocking`; the object store is driven from async code, so reading, hashing,
//! compressing and uploading overlap.

mod backup;
pub mod crypt;
pub mod format;
mod gc;
pub mod pool;
mod restore;
mod source;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

pub use backup::{BackupOptions, BackupStats};
pub use crypt::{DataKeys, MasterKey};
pub use gc::GcStats;
pub use restore::{RestoreOptions, RestoreStats, VerifyReport};
pub use source::volume_size;
use vbs_repository::{Store, StoreError};

use crate::format::{Manifest, manifest_key};

/// What can go wrong, in terms the service branches on.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Stored data does not match its checksum, or cannot be parsed.
    #[error("corrupt backup data: {0}")]
    Corrupt(String),
    /// The backup has no manifest in the repository.
    #[error("backup {0} is not in the repository")]
    NotFound(String),
    /// The work was cancelled by its caller.
    #[error("cancelled")]
    Cancelled,
    /// The caller asked for something impossible (target too small, ...).
    #[error("{0}")]
    Invalid(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// The repository's keys cannot be opened: no master key, or another one.
    #[error("{0}")]
    Key(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl EngineError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }
}

/// How far a running backup or restore is; shared with whoever reports it.
#[derive(Debug)]
pub struct Progress {
    total: AtomicU64,
    done: AtomicU64,
    started: Instant,
}

impl Default for Progress {
    fn default() -> Self {
        Self {
            total: AtomicU64::new(0),
            done: AtomicU64::new(0),
            started: Instant::now(),
        }
    }
}

/// A point-in-time reading of [`Progress`].
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct ProgressView {
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub bytes_per_second: u64,
}

impl Progress {
    pub(crate) fn set_total(&self, n: u64) {
        self.total.store(n, Ordering::Relaxed);
    }
    pub(crate) fn set_done(&self, n: u64) {
        self.done.fetch_max(n, Ordering::Relaxed);
    }
    pub(crate) fn add_done(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
    }

    #[allow(clippy::cast_precision_loss)] // a rate needs no 53-bit precision
    pub fn view(&self) -> ProgressView {
        let done = self.done.load(Ordering::Relaxed);
        let secs = self.started.elapsed().as_secs_f64();
        ProgressView {
            bytes_done: done,
            bytes_total: self.total.load(Ordering::Relaxed),
            bytes_per_second: if secs > 0.0 {
                (done as f64 / secs) as u64
            } else {
                0
            },
        }
    }
}

/// A cancellation flag shared between the worker that runs a job and whoever may abort
/// it (a force delete of a backup being written).
pub type Cancel = Arc<AtomicBool>;

pub(crate) fn check_cancel(c: &AtomicBool) -> Result<(), EngineError> {
    if c.load(Ordering::Relaxed) {
        Err(EngineError::Cancelled)
    } else {
        Ok(())
    }
}

/// Runs `work` until it ends, or until `c` is set (looked at every 50 ms), when it is
/// dropped in flight and the call fails with [`EngineError::Cancelled`]. For the
/// manifest's put: a run whose lease lapses must not store its manifest after its
/// repository lock expires, when a sweep may have removed the packs it names (the
/// worker stops a run half a lease before its lock expires; see docs/repository.md).
pub(crate) async fn unless_cancelled<T>(
    c: &AtomicBool,
    work: impl Future<Output = Result<T, EngineError>>,
) -> Result<T, EngineError> {
    tokio::pin!(work);
    loop {
        check_cancel(c)?;
        tokio::select! {
            r = &mut work => return r,
            () = tokio::time::sleep(std::time::Duration::from_millis(50)) => {}
        }
    }
}

/// Why a repository's keys object did not open.
enum KeysRead {
    /// Every read gave the same bytes: this is what is stored.
    Stored(EngineError),
    /// Reads differed or failed: what is stored is not known.
    Unsteady(EngineError),
}

/// Tuning knobs; the defaults are the measured ones.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// zstd level for new frames.
    pub zstd_level: i32,
    /// zstd's match table size (log2 entries); `None` keeps the level's own (17).
    /// Measured on the 2 GiB benchmark image, 2 cores: 17 stores 720.4 MB, 18 stores
    /// 719.7 MB for about 10 % more CPU, 19 stores 719.4 MB for about 20 % more (its
    /// 2 MiB table no longer fits the cache two threads share).
    pub zstd_hash_log: Option<u32>,
    /// Threads for hashing and for compression (each).
    pub threads: usize,
    /// Object uploads or downloads in flight.
    pub io_depth: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            zstd_level: 3,
            zstd_hash_log: Some(18),
            threads: std::thread::available_parallelism().map_or(2, usize::from),
            io_depth: 4,
        }
    }
}

impl EngineOptions {
    /// The defaults for this store: a network object store (Swift, S3) gets more
    /// requests in flight, as each waits on a round trip and a server that fsyncs
    /// every object; a local directory is disk-bound at 4.
    pub fn for_store(store: &Store) -> Self {
        let io_depth = if store.local_root().is_some() {
            4
        } else {
            REMOTE_IO_DEPTH
        };
        Self {
            io_depth,
            ..Self::default()
        }
    }
}

/// Requests in flight to a network object store. Measured restoring the 2 GiB benchmark
/// image from the test Swift (`bench/engine --tools vbs,vbs-swift`): 4 in flight took
/// 6.4 s, 12 took 4.9–5.4 s, 24 took 4.6 s (with 4 MiB packs). Fewer are in flight when
/// the ranges are large: restores keep at most 64 MiB fetched, backups 32 MiB uploading.
pub const REMOTE_IO_DEPTH: usize = 16;

/// The engine over one repository. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Engine {
    store: Store,
    options: EngineOptions,
    /// The repository's data keys when it is encrypted.
    keys: Option<Arc<DataKeys>>,
}

/// How [`Engine::open`] treats a repository's encryption.
#[derive(Debug, Clone)]
pub enum Encryption {
    /// Encrypted repositories open with this key; a new (empty) repository is
    /// encrypted with it. An existing plaintext repository stays plaintext.
    Key(MasterKey),
    /// No key: plaintext repositories only (a new one stays plaintext: the operator
    /// opted out by name). An encrypted repository refuses to open.
    Off,
}

/// The manifest format of an encrypted repository: sealed frames, keyed block ids.
pub const SEALED_FORMAT: u32 = 2;

impl Engine {
    /// A plaintext engine (tests and tools; the service opens with [`Engine::open`]).
    pub fn new(store: Store, options: EngineOptions) -> Self {
        Self {
            store,
            options,
            keys: None,
        }
    }

    /// The engine over a repository, its keys opened: a repository with a keys object
    /// needs its master key; an empty one without gets keys under `Key`; one with
    /// plaintext data keeps working as it is.
    pub async fn open(
        store: Store,
        options: EngineOptions,
        encryption: &Encryption,
    ) -> Result<Self, EngineError> {
        let location = store.location();
        let named = |e: EngineError| match e {
            EngineError::Key(m) => EngineError::Key(format!("repository {location}: {m}")),
            EngineError::Corrupt(m) => EngineError::Corrupt(format!("repository {location}: {m}")),
            other => other,
        };
        let keys = match (store.get(crypt::KEYS_KEY).await, encryption) {
            (Ok(stored), Encryption::Key(master)) => {
                match Self::unwrap_keys(&store, stored, master).await {
                    Ok(keys) => Some(keys),
                    // A keys object stored damaged (not another master key's, and not a
                    // read that went wrong: every read gave the same bytes) in a repository
                    // that holds no data: the write that made it was torn before anything
                    // was sealed with them, so nothing is lost by making them again. (The
                    // service opens an empty repository under the catalog's exclusive
                    // repository lock, so two nodes never both replace them.) With data,
                    // damaged keys stay an error: the data would be unreadable.
                    Err(KeysRead::Stored(EngineError::Corrupt(m)))
                        if Self::is_empty(&store).await? =>
                    {
                        tracing::warn!(repository = %location, error = %m, "the repository's keys object is damaged and it holds no data yet: making its keys again");
                        let keys = DataKeys::generate();
                        store
                            .put(crypt::KEYS_KEY, bytes::Bytes::from(keys.wrap(master)))
                            .await?;
                        Some(keys)
                    }
                    Err(KeysRead::Stored(e) | KeysRead::Unsteady(e)) => return Err(named(e)),
                }
            }
            (Ok(_), Encryption::Off) => {
                return Err(named(EngineError::Key(
                    "it is encrypted and no master key was given (key_file or \
                     VBS_REPOSITORY_KEY)"
                        .into(),
                )));
            }
            (Err(StoreError::NotFound(_)), Encryption::Key(master)) => {
                if Self::is_empty(&store).await? {
                    let keys = DataKeys::generate();
                    store
                        .put(crypt::KEYS_KEY, bytes::Bytes::from(keys.wrap(master)))
                        .await?;
                    tracing::info!(repository = %location, key = %master.fingerprint(), "new repository encrypted");
                    Some(keys)
                } else {
                    tracing::warn!(repository = %location, "the repository holds plaintext backups: it stays unencrypted");
                    None
                }
            }
            (Err(StoreError::NotFound(_)), Encryption::Off) => None,
            (Err(e), _) => return Err(e.into()),
        };
        Ok(Self {
            store,
            options,
            keys: keys.map(Arc::new),
        })
    }

    /// The data keys in `stored` (the keys object as read), reading it again when they
    /// do not open: a read can go wrong where the object is whole, and keys made anew
    /// over whole ones would leave every node that opened them sealing what no other
    /// node can read (the cluster fault campaign caught a worker that replaced them
    /// after a truncated read, while the other worker went on with the old ones).
    async fn unwrap_keys(
        store: &Store,
        stored: bytes::Bytes,
        master: &MasterKey,
    ) -> Result<DataKeys, KeysRead> {
        const READS: usize = 4;
        let mut error = match DataKeys::unwrap(&stored, master) {
            Ok(keys) => return Ok(keys),
            Err(e @ EngineError::Key(_)) => return Err(KeysRead::Stored(e)),
            Err(e) => e,
        };
        let mut steady = true;
        for _ in 1..READS {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            let again = match store.get(crypt::KEYS_KEY).await {
                Ok(again) => again,
                Err(e) => return Err(KeysRead::Unsteady(e.into())),
            };
            steady &= again == stored;
            match DataKeys::unwrap(&again, master) {
                Ok(keys) => return Ok(keys),
                Err(e) => error = e,
            }
        }
        Err(if steady {
            KeysRead::Stored(error)
        } else {
            KeysRead::Unsteady(error)
        })
    }

    /// Whether the repository holds no backup data (no manifest, no pack): the only
    /// state in which keys are ever made.
    pub async fn is_empty(store: &Store) -> Result<bool, EngineError> {
        Ok(!store.any("manifests/").await? && !store.any("packs/").await?)
    }

    /// Whether new data is sealed.
    pub fn is_encrypted(&self) -> bool {
        self.keys.is_some()
    }

    /// Wraps the repository's data keys under `new` (the data stays as it is): after
    /// this the repository opens with `new` only.
    pub async fn rotate_master_key(&self, new: &MasterKey) -> Result<(), EngineError> {
        let keys = self
            .keys
            .as_ref()
            .ok_or_else(|| EngineError::Invalid("the repository is not encrypted".into()))?;
        self.store
            .put(crypt::KEYS_KEY, bytes::Bytes::from(keys.wrap(new)))
            .await?;
        Ok(())
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub(crate) fn keys(&self) -> Option<&Arc<DataKeys>> {
        self.keys.as_ref()
    }

    /// A stored manifest's contents, opened and checked (on the calling thread).
    pub(crate) fn decode_manifest(
        keys: Option<&DataKeys>,
        backup_id: &str,
        stored: &[u8],
    ) -> Result<Manifest, EngineError> {
        if stored.starts_with(crypt::SEALED_MANIFEST_MAGIC) {
            let keys = keys.ok_or_else(|| {
                EngineError::Key(format!(
                    "backup {backup_id} is encrypted and the repository's keys are not open"
                ))
            })?;
            let inner = keys.open_manifest(backup_id, stored)?;
            let m = Manifest::decode(backup_id, &inner)?;
            if m.header.format < SEALED_FORMAT {
                return Err(EngineError::Corrupt(format!(
                    "manifest {backup_id}: a sealed manifest of a plaintext format"
                )));
            }
            Ok(m)
        } else {
            let m = Manifest::decode(backup_id, stored)?;
            if m.header.format >= SEALED_FORMAT {
                return Err(EngineError::Corrupt(format!(
                    "manifest {backup_id}: an encrypted backup's manifest stored unsealed"
                )));
            }
            Ok(m)
        }
    }

    /// A manifest's bytes to store, sealed in an encrypted repository.
    pub(crate) async fn encode_manifest(&self, manifest: Manifest) -> Result<Vec<u8>, EngineError> {
        let keys = self.keys.clone();
        tokio::task::spawn_blocking(move || {
            let id = manifest.header.backup_id.clone();
            let encoded = manifest.encode()?;
            Ok(match keys {
                Some(k) => k.seal_manifest(&id, encoded),
                None => encoded,
            })
        })
        .await
        .map_err(|e| EngineError::Invalid(format!("manifest encoder: {e}")))?
    }

    /// Reads and checks one backup's manifest.
    pub async fn manifest(&self, backup_id: &str) -> Result<Manifest, EngineError> {
        let stored = match self.store.get(&manifest_key(backup_id)).await {
            Ok(b) => b,
            Err(StoreError::NotFound(_)) => return Err(EngineError::NotFound(backup_id.into())),
            Err(e) => return Err(e.into()),
        };
        let id = backup_id.to_owned();
        let keys = self.keys.clone();
        tokio::task::spawn_blocking(move || Self::decode_manifest(keys.as_deref(), &id, &stored))
            .await
            .map_err(|e| EngineError::Invalid(format!("manifest decoder: {e}")))?
    }

    /// What the repository holds now: its packs and manifests, counted and summed
    /// from a listing (no object is read).
    pub async fn usage(&self) -> Result<RepositoryUsage, EngineError> {
        let mut usage = RepositoryUsage::default();
        for (prefix, slot) in [
            ("packs/", &mut usage.packs),
            ("manifests/", &mut usage.manifests),
        ] {
            for obj in self.store.list(prefix).await? {
                slot.objects += 1;
                slot.bytes += obj.size;
            }
        }
        Ok(usage)
    }

    /// Gives backup `to` its own manifest naming the data of backup `from` (an imported
    /// record whose id was changed): the packs are shared, as between any two backups,
    /// so deleting either leaves the other whole. The source manifest is checked as
    /// it is read; nothing is written when `to` has a manifest already.
    pub async fn copy_backup(&self, from: &str, to: &str) -> Result<(), EngineError> {
        if self.has_backup(to).await? {
            return Ok(());
        }
        let mut manifest = self.manifest(from).await?;
        to.clone_into(&mut manifest.header.backup_id);
        let encoded = self.encode_manifest(manifest).await?;
        self.store
            .put(&manifest_key(to), bytes::Bytes::from(encoded))
            .await?;
        Ok(())
    }

    /// Whether a backup's manifest is stored (it is written last, so this means the
    /// backup's data is complete and durable).
    pub async fn has_backup(&self, backup_id: &str) -> Result<bool, EngineError> {
        Ok(self.store.exists(&manifest_key(backup_id)).await?)
    }
}

/// Objects and bytes of one kind in the repository.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ObjectTotals {
    pub objects: u64,
    pub bytes: u64,
}

/// [`Engine::usage`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RepositoryUsage {
    pub packs: ObjectTotals,
    pub manifests: ObjectTotals,
}
