//! The backup worker: claims jobs from the catalog's queue (with a lease it renews
//! while it works), runs them on the engine, and moves backup, volume and snapshot
//! statuses as Cinder's backup manager does. A job whose worker died is claimed again
//! when its lease runs out and re-run from the start: every step is idempotent
//! (content-addressed packs, a manifest written last, conditional status moves).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{RwLock, watch};
use tokio::task::JoinSet;
use vbs_catalog::{BackupRecord, CatalogError, Job, JobKind, Previous};
use vbs_engine::{BackupOptions, Engine, EngineError, Progress, RestoreOptions};

use crate::BackupLifecycle;

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// This worker's name in the catalog (unique per process).
    pub node: String,
    /// Jobs run at once.
    pub concurrency: usize,
    /// A claim lasts this long unless renewed (renewed every third of it).
    pub lease: Duration,
    /// A job interrupted this many times is failed instead of run again.
    pub max_attempts: i64,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self {
            node: format!("worker-{}", uuid::Uuid::new_v4()),
            concurrency: 2,
            lease: Duration::from_secs(30),
            max_attempts: 3,
        }
    }
}

/// Runs backup work until shutdown.
#[derive(Clone)]
pub struct BackupWorker {
    life: BackupLifecycle,
    engine: Engine,
    options: WorkerOptions,
    /// Writers share it, GC takes it alone: a sweep never runs while a backup has
    /// packs that no manifest names yet (docs/repository.md).
    repo_lock: Arc<RwLock<()>>,
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

impl BackupWorker {
    pub fn new(life: BackupLifecycle, engine: Engine, options: WorkerOptions) -> Self {
        life.worker_started();
        Self {
            life,
            engine,
            options,
            repo_lock: Arc::default(),
        }
    }

    /// Claims and runs jobs until `shutdown` turns true; running jobs then finish
    /// (or are left to be claimed again after their lease).
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut running: JoinSet<()> = JoinSet::new();
        loop {
            if *shutdown.borrow() {
                break;
            }
            while running.try_join_next().is_some() {}
            let mut claimed = false;
            if running.len() < self.options.concurrency {
                match self
                    .life
                    .catalog()
                    .claim_job(&self.options.node, micros(self.options.lease))
                    .await
                {
                    Ok(Some(job)) => {
                        claimed = true;
                        let me = self.clone();
                        running.spawn(async move { me.handle(job).await });
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "claiming work failed"),
                }
            }
            if claimed {
                continue;
            }
            let wake = self.life.wake.clone();
            tokio::select! {
                () = wake.notified() => {}
                Some(_) = running.join_next(), if !running.is_empty() => {}
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = shutdown.changed() => {}
            }
        }
        while running.join_next().await.is_some() {}
        self.life.worker_stopped();
    }

    async fn handle(&self, job: Job) {
        let catalog = self.life.catalog().clone();
        let cancel: Arc<AtomicBool> = Arc::default();
        // Renew the lease while the job runs; losing it means another node took over.
        let renew = {
            let (catalog, cancel, node) =
                (catalog.clone(), cancel.clone(), self.options.node.clone());
            let lease = self.options.lease;
            let pk = job.pk;
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(lease / 3).await;
                    match catalog.renew_job(pk, &node, micros(lease)).await {
                        Ok(true) => {}
                        Ok(false) => {
                            cancel.store(true, Ordering::Relaxed);
                            return;
                        }
                        Err(e) => tracing::warn!(error = %e, "renewing a lease failed"),
                    }
                }
            })
        };
        let id = job.backup_id.clone();
        tracing::info!(job = job.pk, kind = job.kind.as_str(), backup = %id, attempt = job.attempts, "job started");
        let outcome = if job.attempts > self.options.max_attempts {
            self.give_up(&job).await
        } else {
            match job.kind {
                JobKind::Backup => self.backup(&job, &cancel).await,
                JobKind::Restore => self.restore(&job, &cancel).await,
                JobKind::Delete => self.delete(&job).await,
                JobKind::Verify => self.verify(&job).await,
            }
        };
        renew.abort();
        if let Err(e) = &outcome {
            tracing::error!(job = job.pk, backup = %id, error = %e, "job failed");
        }
        if !cancel.load(Ordering::Relaxed) || outcome.is_ok() {
            if let Err(e) = catalog.finish_job(job.pk, &self.options.node).await {
                tracing::warn!(job = job.pk, error = %e, "could not remove a finished job");
            }
        }
        tracing::info!(job = job.pk, backup = %id, "job done");
    }

    /// A job that keeps getting interrupted: fail it with a reason.
    async fn give_up(&self, job: &Job) -> Result<(), CatalogError> {
        let reason = format!("Interrupted {} times; giving up.", job.attempts - 1);
        let c = self.life.catalog();
        match job.kind {
            JobKind::Backup | JobKind::Verify => {
                c.set_backup_status(&job.backup_id, &["creating"], "error", Some(Some(&reason)))
                    .await?;
                if let Ok(b) = c.get_backup(&job.backup_id, None).await {
                    self.release(&b).await;
                }
            }
            JobKind::Restore => {
                c.set_backup_status(
                    &job.backup_id,
                    &["restoring"],
                    "available",
                    Some(Some(&reason)),
                )
                .await?;
                if let Some(v) = &job.volume_id {
                    let _ = self.life.volumes().end_restore(v, false).await;
                }
            }
            JobKind::Delete => {
                c.set_backup_status(
                    &job.backup_id,
                    &["deleting"],
                    "error_deleting",
                    Some(Some(&reason)),
                )
                .await?;
            }
        }
        Ok(())
    }

    async fn release(&self, b: &BackupRecord) {
        let new = vbs_catalog::NewBackup {
            id: b.id.clone(),
            volume_id: b.volume_id.clone(),
            snapshot_id: b.snapshot_id.clone(),
            ..vbs_catalog::NewBackup::default()
        };
        self.life.release_source(&new).await;
    }

    /// Reports progress into the catalog every second, and cancels the work when the
    /// backup's row leaves `expect` (a force delete).
    fn watch(
        &self,
        id: &str,
        expect: &'static str,
        progress: &Arc<Progress>,
        cancel: &Arc<AtomicBool>,
    ) -> tokio::task::JoinHandle<()> {
        let (catalog, progress, cancel, id) = (
            self.life.catalog().clone(),
            progress.clone(),
            cancel.clone(),
            id.to_owned(),
        );
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let v = progress.view();
                tracing::info!(backup = %id, done = v.bytes_done, total = v.bytes_total, rate = v.bytes_per_second, "{expect}");
                let _ = catalog
                    .set_backup_progress(&id, Some(&json!(v).to_string()))
                    .await;
                match catalog.get_backup(&id, None).await {
                    Ok(b) if b.status == expect => {}
                    Ok(_) | Err(CatalogError::NotFound) => cancel.store(true, Ordering::Relaxed),
                    Err(_) => {}
                }
            }
        })
    }

    async fn backup(&self, job: &Job, cancel: &Arc<AtomicBool>) -> Result<(), CatalogError> {
        let c = self.life.catalog();
        let options: Value = job
            .options
            .as_deref()
            .and_then(|o| serde_json::from_str(o).ok())
            .unwrap_or(Value::Null);
        let b = match c.get_backup(&job.backup_id, None).await {
            Ok(b) if b.status == "creating" => b,
            // Force-deleted or reset before it started: nothing to back up, but the
            // volume or snapshot the request marked busy must be given back.
            Ok(b) => {
                self.release(&b).await;
                return Ok(());
            }
            Err(CatalogError::NotFound) => {
                let source = vbs_catalog::NewBackup {
                    id: job.backup_id.clone(),
                    volume_id: job.volume_id.clone().unwrap_or_default(),
                    snapshot_id: options
                        .get("snapshot_id")
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                    ..vbs_catalog::NewBackup::default()
                };
                self.life.release_source(&source).await;
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let result = self.run_backup(&b, &options, cancel).await;
        let _ = c.set_backup_progress(&b.id, None).await;
        match result {
            Ok(stats) => {
                let meta = json!({
                    "engine": 1,
                    "blocks": stats.blocks,
                    "blocks_new": stats.blocks_new,
                    "bytes_stored": stats.bytes_stored,
                    "manifest_bytes": stats.manifest_bytes,
                    "seconds": stats.seconds,
                });
                let done = c
                    .complete_backup(&b.id, stats.object_count as i64, &meta.to_string())
                    .await?;
                if !done {
                    // Force-deleted while we wrote: the delete job removes it.
                    tracing::info!(backup = %b.id, "backup finished after it was deleted");
                }
            }
            Err(EngineError::Cancelled) => {
                tracing::info!(backup = %b.id, "backup cancelled");
            }
            Err(e) => {
                let reason = e.to_string();
                c.set_backup_status(&b.id, &["creating"], "error", Some(Some(&reason)))
                    .await?;
            }
        }
        self.release(&b).await;
        Ok(())
    }

    async fn run_backup(
        &self,
        b: &BackupRecord,
        options: &Value,
        cancel: &Arc<AtomicBool>,
    ) -> Result<vbs_engine::BackupStats, EngineError> {
        let c = self.life.catalog();
        let volumes = self.life.volumes();
        let missing = |what: String| EngineError::Invalid(what);
        // The bytes to read: a snapshot, a temporary snapshot of an in-use volume, or
        // the volume itself (nobody writes to it while it is `backing-up`).
        let mut temp: Option<PathBuf> = None;
        let source = if let Some(sid) = &b.snapshot_id {
            let s = c
                .get_snapshot(sid, None)
                .await
                .map_err(|e| missing(format!("snapshot {sid}: {e}")))?;
            s.provider_location
                .map_or_else(|| volumes.pool().snapshot_path(sid), PathBuf::from)
        } else {
            let v = c
                .get_volume(&b.volume_id, None)
                .await
                .map_err(|e| missing(format!("volume {}: {e}", b.volume_id)))?;
            let path = volumes.volume_file(&v);
            if options.get("from_in_use").and_then(Value::as_bool) == Some(true) {
                let pool = volumes.pool().clone();
                let temp_id = format!("backup-{}", b.id);
                let (p, _) =
                    tokio::task::spawn_blocking(move || pool.create_snapshot(&temp_id, &path))
                        .await
                        .map_err(|e| EngineError::Invalid(e.to_string()))?
                        .map_err(|e| EngineError::Invalid(format!("temporary snapshot: {e}")))?;
                temp = Some(p.clone());
                p
            } else {
                path
            }
        };
        let progress = Arc::new(Progress::default());
        let watcher = self.watch(&b.id, "creating", &progress, cancel);
        let result = {
            let _shared = self.repo_lock.read().await;
            self.engine
                .backup(BackupOptions {
                    backup_id: b.id.clone(),
                    source,
                    parent: b.parent_id.clone(),
                    progress,
                    cancel: cancel.clone(),
                })
                .await
        };
        watcher.abort();
        if let Some(t) = temp {
            let _ = tokio::task::spawn_blocking(move || vbs_engine::pool::remove(&t)).await;
        }
        if result.is_err() {
            // A partial backup leaves packs no manifest names; the next GC sweeps them.
            let _ = self.engine.delete_backup(&b.id).await;
        }
        result
    }

    async fn restore(&self, job: &Job, cancel: &Arc<AtomicBool>) -> Result<(), CatalogError> {
        let c = self.life.catalog();
        let volumes = self.life.volumes();
        let b = match c.get_backup(&job.backup_id, None).await {
            Ok(b) if b.status == "restoring" => b,
            // Reset or deleted before it started: give the target volume back.
            Ok(_) | Err(CatalogError::NotFound) => {
                if let Some(v) = &job.volume_id {
                    let _ = volumes.end_restore(v, true).await;
                }
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let Some(vid) = job.volume_id.clone() else {
            return Ok(());
        };
        let v = c.get_volume(&vid, None).await?;
        let progress = Arc::new(Progress::default());
        let watcher = self.watch(&b.id, "restoring", &progress, cancel);
        let result = self
            .engine
            .restore(RestoreOptions {
                backup_id: b.id.clone(),
                target: volumes.volume_file(&v),
                progress,
                cancel: cancel.clone(),
            })
            .await;
        watcher.abort();
        let _ = c.set_backup_progress(&b.id, None).await;
        match result {
            Ok(_) => {
                if b.volume_id != vid {
                    c.set_volume_metadata_key(&vid, "src_backup_id", &b.id)
                        .await?;
                }
                c.set_backup_status(&b.id, &["restoring"], "available", Some(None))
                    .await?;
                let _ = volumes.end_restore(&vid, true).await;
            }
            Err(e) => {
                let reason = format!("Restore to volume {vid} failed: {e}");
                c.set_backup_status(&b.id, &["restoring"], "available", Some(Some(&reason)))
                    .await?;
                // Cinder: `error` for a volume created for the restore, else
                // `error_restoring`.
                let new_volume = job
                    .options
                    .as_deref()
                    .and_then(|o| serde_json::from_str::<Value>(o).ok())
                    .and_then(|o| o.get("new_volume").and_then(Value::as_bool))
                    == Some(true);
                if new_volume {
                    let _ = c
                        .set_volume_status(&vid, &["restoring-backup"], "error", Previous::Clear)
                        .await;
                } else {
                    let _ = volumes.end_restore(&vid, false).await;
                }
            }
        }
        Ok(())
    }

    async fn delete(&self, job: &Job) -> Result<(), CatalogError> {
        let c = self.life.catalog();
        match c.get_backup(&job.backup_id, None).await {
            Ok(b) if b.status == "deleting" => {}
            Ok(_) | Err(CatalogError::NotFound) => return Ok(()),
            Err(e) => return Err(e),
        }
        let result = async {
            // Alone from the manifest's removal on: a GC lists manifests and then reads
            // them, so another delete removing one in between would fail it.
            let _alone = self.repo_lock.write().await;
            self.engine.delete_backup(&job.backup_id).await?;
            self.engine.gc().await
        }
        .await;
        match result {
            Ok(_) => c.destroy_backup(&job.backup_id).await,
            Err(EngineError::Store(e)) => {
                let reason = format!("The repository is unavailable: {e}");
                c.set_backup_status(
                    &job.backup_id,
                    &["deleting"],
                    "error_deleting",
                    Some(Some(&reason)),
                )
                .await
                .map(|_| ())
            }
            Err(e) => {
                let reason = e.to_string();
                c.set_backup_status(&job.backup_id, &["deleting"], "error", Some(Some(&reason)))
                    .await
                    .map(|_| ())
            }
        }
    }

    /// An imported record turns `available` once its data is in the repository and
    /// reads back intact.
    async fn verify(&self, job: &Job) -> Result<(), CatalogError> {
        let c = self.life.catalog();
        let outcome = match self.engine.verify(&job.backup_id).await {
            Ok(r) if r.is_intact() => Ok(()),
            Ok(r) => Err(format!(
                "The backup's data is damaged: {}",
                r.damage.join("; ")
            )),
            Err(EngineError::NotFound(_)) => {
                Err("The backup's data is not in the repository.".to_owned())
            }
            Err(e) => Err(e.to_string()),
        };
        match outcome {
            Ok(()) => c
                .set_backup_status(&job.backup_id, &["creating"], "available", Some(None))
                .await
                .map(|_| ()),
            Err(reason) => c
                .set_backup_status(&job.backup_id, &["creating"], "error", Some(Some(&reason)))
                .await
                .map(|_| ()),
        }
    }
}
