//! Deleting backups and collecting garbage.
//!
//! Deleting a backup removes only its manifest. Packs are shared (an incremental reads
//! its parent's packs), so they go in a separate sweep: every pack that no stored
//! manifest names is garbage. A backup being written has packs but no manifest yet, so
//! the sweep must not run while one is being written: the caller holds the catalog's
//! repository lock in exclusive mode around [`Engine::gc`], writers hold it shared
//! (docs/repository.md, "GC and backups being written, across nodes").

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::format::{manifest_key, pack_key};
use crate::{Engine, EngineError};

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct GcStats {
    pub manifests: u64,
    pub packs_kept: u64,
    pub packs_deleted: u64,
    pub bytes_deleted: u64,
}

impl Engine {
    /// Removes a backup's manifest: from now on the backup does not exist. Idempotent.
    pub async fn delete_backup(&self, backup_id: &str) -> Result<(), EngineError> {
        self.store.delete(&manifest_key(backup_id)).await?;
        Ok(())
    }

    /// Ids of all stored backups.
    pub async fn backups(&self) -> Result<Vec<String>, EngineError> {
        Ok(self
            .store
            .list("manifests/")
            .await?
            .into_iter()
            .filter_map(|o| o.key.strip_prefix("manifests/").map(str::to_owned))
            .collect())
    }

    /// Deletes every pack that no stored manifest names. A manifest that cannot be read
    /// stops the sweep (deleting on a partial view could destroy live data).
    pub async fn gc(&self) -> Result<GcStats, EngineError> {
        self.gc_until(&AtomicBool::new(false), &[]).await
    }

    /// [`Engine::gc`], stopping with [`EngineError::Cancelled`] before the next delete
    /// once `stop` is set (the caller lost the lock that made the sweep safe). `known`
    /// names backups whose manifests may exist (the catalog's): they are read even if
    /// the listing does not show them yet, as an object store's listing may lag behind
    /// a write that already succeeded.
    pub async fn gc_until(
        &self,
        stop: &AtomicBool,
        known: &[String],
    ) -> Result<GcStats, EngineError> {
        let mut live: HashSet<String> = HashSet::new();
        let mut stats = GcStats::default();
        let mut ids: Vec<String> = self.backups().await?;
        let listed: HashSet<String> = ids.iter().cloned().collect();
        ids.extend(known.iter().filter(|id| !listed.contains(*id)).cloned());
        for id in ids {
            // A manifest deleted since the listing names nothing any more.
            let stored = match self.store.get(&manifest_key(&id)).await {
                Ok(s) => s,
                Err(vbs_repository::StoreError::NotFound(_)) => continue,
                Err(e) => return Err(e.into()),
            };
            let keys = self.keys().cloned();
            let packs = tokio::task::spawn_blocking(move || {
                Engine::decode_manifest(keys.as_deref(), &id, &stored).map(|m| m.header.packs)
            })
            .await
            .map_err(|e| EngineError::Invalid(format!("gc: {e}")))??;
            live.extend(packs);
            stats.manifests += 1;
        }
        for obj in self.store.list("packs/").await? {
            let Some(id) = obj.key.rsplit('/').next() else {
                continue;
            };
            if live.contains(id) {
                stats.packs_kept += 1;
                continue;
            }
            if stop.load(Ordering::Relaxed) {
                return Err(EngineError::Cancelled);
            }
            self.store.delete(&pack_key(id)).await?;
            stats.packs_deleted += 1;
            stats.bytes_deleted += obj.size;
        }
        tracing::info!(?stats, "garbage collected");
        Ok(stats)
    }
}
