//! The backup worker: claims jobs from the catalog's queue (with a lease it renews
//! while it works), runs them on the engine, and moves backup, volume and snapshot
//! statuses as Cinder's backup manager does. A job whose worker died is claimed again
//! when its lease runs out and re-run from the start: every step is idempotent
//! (content-addressed packs, a manifest written last, conditional status moves).
//!
//! Any number of workers, on any number of nodes, share one catalog. Backups hold the
//! catalog's repository lock shared while they write; GC holds it exclusive. A worker
//! that cannot renew its job's lease or its lock for half a lease stops the job, so it
//! never acts on a lease another node may already have taken over.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinSet;
use vbs_catalog::{BackupRecord, CatalogError, Job, JobKind, JobOutcome, LockMode, RestoreEnd};
use vbs_engine::{BackupOptions, Engine, EngineError, Progress, RestoreOptions};

use crate::BackupLifecycle;

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// This worker's name in the catalog's jobs (unique per process: node name and
    /// instance).
    pub node: String,
    /// Jobs run at once.
    pub concurrency: usize,
    /// A claim lasts this long unless renewed (renewed every third of it).
    pub lease: Duration,
    /// A job interrupted this many times is failed instead of run again.
    pub max_attempts: i64,
    /// How often a job waiting for the repository lock asks again.
    pub lock_poll: Duration,
    /// How often the repository is listed for its size metrics (also soon after a
    /// backup, a delete or a sweep of this node changed it).
    pub repository_scan: Duration,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self {
            node: format!("worker-{}", uuid::Uuid::new_v4()),
            concurrency: 2,
            lease: Duration::from_secs(30),
            max_attempts: 3,
            lock_poll: Duration::from_millis(250),
            repository_scan: Duration::from_mins(5),
        }
    }
}

/// Runs backup work until shutdown.
#[derive(Clone)]
pub struct BackupWorker {
    life: BackupLifecycle,
    engine: Engine,
    options: WorkerOptions,
    /// Asks the repository scan for a new listing: this node changed the repository.
    changed: Arc<tokio::sync::Notify>,
}

/// What a running job holds, shared with the task that renews it.
struct JobGuard {
    /// Its name in the repository lock.
    holder: String,
    /// Set to stop the work (a force delete, or a lost lease or lock).
    cancel: AtomicBool,
    /// Set when the job lost its lease or lock: it must not finish, only stop.
    lost: AtomicBool,
    /// Whether it holds the repository lock now.
    locked: AtomicBool,
}

impl JobGuard {
    fn lose(&self) {
        self.lost.store(true, Ordering::SeqCst);
        self.cancel.store(true, Ordering::SeqCst);
    }
}

/// Runs engine work, passing the job's stop flag (a lost lease) on to the engine's.
async fn relay<T>(guard: &JobGuard, cancel: &AtomicBool, work: impl Future<Output = T>) -> T {
    tokio::pin!(work);
    loop {
        tokio::select! {
            r = &mut work => return r,
            () = tokio::time::sleep(Duration::from_millis(100)) => {
                if guard.cancel.load(Ordering::SeqCst) {
                    cancel.store(true, Ordering::SeqCst);
                }
            }
        }
    }
}

/// How a job ended, as its handler saw it. `Recorded…`: the transaction that moved
/// the backup recorded it already (or, in a run after a crash, an earlier run did).
#[derive(Debug)]
enum Ended {
    Success,
    Fail(String),
    Recorded,
    RecordedFail,
}

/// The VBS code of a failed job of `kind` (spec 03 §6: the job `FAIL` codes).
pub fn fail_code(kind: JobKind) -> &'static str {
    match kind {
        JobKind::Backup | JobKind::Verify | JobKind::Gc => "VolumeBackup.0064",
        JobKind::Restore => "VolumeBackup.0200",
        JobKind::Delete => "VolumeBackup.0102",
        JobKind::PolicyRun => "AutoBackup.1700",
    }
}

/// A backup job run again finds its backup past `creating`: how it ended then.
fn ended_by_status(b: &BackupRecord) -> Ended {
    match b.status.as_str() {
        "available" => Ended::Recorded,
        _ => Ended::Fail(
            b.fail_reason
                .clone()
                .unwrap_or_else(|| format!("The backup is {}.", b.status)),
        ),
    }
}

/// A run whose settling write found its job taken over by another node (its lease
/// lapsed after the run last checked): it stops as a run that lost its lease does,
/// having changed nothing.
fn taken_over(guard: &JobGuard, backup: &str) -> Ended {
    guard.lose();
    tracing::warn!(backup, "job stopped: another worker holds it now");
    Ended::Recorded
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
            changed: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// Lists the repository for its size metrics every `repository_scan`, and a few
    /// seconds after this node's work changed it, until `shutdown` turns true.
    pub async fn scan_repository(self, mut shutdown: watch::Receiver<bool>) {
        loop {
            match self.engine.usage().await {
                Ok(u) => self.life.metrics().repository(&[
                    ("packs", u.packs.objects, u.packs.bytes),
                    ("manifests", u.manifests.objects, u.manifests.bytes),
                ]),
                Err(e) => tracing::warn!(error = %e, "listing the repository for its metrics"),
            }
            tokio::select! {
                () = tokio::time::sleep(self.options.repository_scan) => {}
                () = self.changed.notified() => {
                    // Changes come in bursts (a chain of deletes, a sweep): one listing.
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                changed = shutdown.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
            if *shutdown.borrow() {
                return;
            }
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
            if running.len() < self.options.concurrency
                && let Some(job) = self.claim().await
            {
                claimed = true;
                let me = self.clone();
                running.spawn(async move { me.handle(job).await });
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

    /// Claims and runs jobs one at a time until none is left; how many ran. Tests
    /// step the policy scheduler's clock with it, without a running worker loop.
    pub async fn drain(&self) -> usize {
        let mut n = 0;
        while let Some(job) = self.claim().await {
            self.handle(job).await;
            n += 1;
        }
        n
    }

    /// The next job for this worker, if any (a failed claim is logged and is none).
    async fn claim(&self) -> Option<Job> {
        self.life
            .catalog()
            .claim_job(&self.options.node, micros(self.options.lease))
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "claiming work failed");
                None
            })
    }

    async fn handle(&self, job: Job) {
        let catalog = self.life.catalog().clone();
        let guard = Arc::new(JobGuard {
            holder: format!("{}/job-{}", self.options.node, job.pk),
            cancel: AtomicBool::new(false),
            lost: AtomicBool::new(false),
            locked: AtomicBool::new(false),
        });
        let renew = self.renew(job.pk, &guard);
        let id = job.backup_id.clone();
        tracing::info!(job = job.pk, kind = job.kind.as_str(), backup = %id, attempt = job.attempts, "job started");
        self.life.metrics().job_started(job.kind.as_str());
        let outcome = if job.attempts > self.options.max_attempts {
            self.give_up(&job).await
        } else {
            match job.kind {
                JobKind::Backup => self.backup(&job, &guard).await,
                JobKind::Restore => self.restore(&job, &guard).await,
                JobKind::Delete => self.delete(&job).await,
                JobKind::Verify => self.verify(&job, &guard).await,
                JobKind::Gc => self.gc(&guard).await.map(|()| Ended::Success),
                JobKind::PolicyRun => self.policy_run(&job).await,
            }
        };
        renew.abort();
        if guard.locked.load(Ordering::SeqCst) {
            self.unlock(&guard).await;
        }
        if let Err(e) = &outcome {
            tracing::error!(job = job.pk, backup = %id, error = %e, "job failed");
        }
        let node = &self.options.node;
        if guard.lost.load(Ordering::SeqCst) {
            // Another node may run it now; if not, it is queued again for anyone.
            if let Ok(true) = catalog.release_job(job.pk, node).await {
                tracing::warn!(job = job.pk, backup = %id, "job stopped and queued again");
            } else {
                tracing::warn!(job = job.pk, backup = %id, "job stopped: another worker took it over");
            }
            return;
        }
        let failed;
        let ended = match &outcome {
            // A recorded outcome stays whatever is given here.
            Ok(Ended::Success | Ended::Recorded | Ended::RecordedFail) => JobOutcome::Success,
            Ok(Ended::Fail(reason)) => {
                failed = reason.clone();
                JobOutcome::Fail {
                    code: fail_code(job.kind),
                    reason: &failed,
                }
            }
            Err(_) => JobOutcome::Fail {
                code: fail_code(job.kind),
                reason: "The job failed on an internal error; the service log has the detail.",
            },
        };
        self.life.metrics().job_finished(
            job.kind.as_str(),
            matches!(outcome, Ok(Ended::Success | Ended::Recorded)),
        );
        if matches!(
            job.kind,
            JobKind::Backup | JobKind::Delete | JobKind::Gc | JobKind::Verify
        ) {
            self.changed.notify_one();
        }
        if (!guard.cancel.load(Ordering::Relaxed) || outcome.is_ok())
            && let Err(e) = catalog.finish_job(job.pk, node, ended).await
        {
            tracing::warn!(job = job.pk, error = %e, "could not mark a job finished");
        }
        tracing::info!(job = job.pk, backup = %id, "job done");
    }

    /// Whether this run may still settle its job's statuses: its lease never lapsed, or
    /// it lapsed but nobody took the job, and this run has taken it back. (A failed
    /// renewal counts as taken: the next worker to claim it runs it again.)
    async fn still_holds(&self, job: &Job, guard: &JobGuard) -> bool {
        !guard.lost.load(Ordering::SeqCst)
            || self
                .life
                .catalog()
                .renew_job(job.pk, &self.options.node, micros(self.options.lease))
                .await
                .unwrap_or(false)
    }

    /// Renews the job's lease (and the repository lock while it is held) every third of
    /// a lease. Told it lost either, or unable to renew for half a lease, the job stops:
    /// past that point another node may take it over.
    fn renew(&self, pk: i64, guard: &Arc<JobGuard>) -> tokio::task::JoinHandle<()> {
        let (catalog, node) = (self.life.catalog().clone(), self.options.node.clone());
        let lease = self.options.lease;
        let (holder, lost) = (guard.clone(), guard.clone());
        crate::keep_lease(
            lease,
            format!("job {pk}"),
            move || {
                let (catalog, node, holder) = (catalog.clone(), node.clone(), holder.clone());
                async move {
                    let job = catalog.renew_job(pk, &node, micros(lease)).await?;
                    if job && holder.locked.load(Ordering::SeqCst) {
                        return catalog
                            .renew_repository_lock(&holder.holder, micros(lease))
                            .await;
                    }
                    Ok(job)
                }
            },
            move || lost.lose(),
        )
    }

    /// Waits for the repository lock in `mode`; `false` if the job was stopped first.
    async fn lock(&self, guard: &JobGuard, mode: LockMode) -> bool {
        let catalog = self.life.catalog();
        let mut waited = false;
        loop {
            if guard.cancel.load(Ordering::SeqCst) {
                // Drops the intent a waiting GC may have left.
                self.unlock(guard).await;
                return false;
            }
            // Each attempt renews a waiting GC's intent; only a granted lock is renewed
            // by the job's renewal task.
            match catalog
                .lock_repository(&guard.holder, mode, micros(self.options.lease))
                .await
            {
                Ok(true) => {
                    guard.locked.store(true, Ordering::SeqCst);
                    return true;
                }
                Ok(false) if !waited => {
                    waited = true;
                    tracing::info!(holder = %guard.holder, ?mode, "waiting for the repository lock");
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "taking the repository lock failed"),
            }
            tokio::time::sleep(self.options.lock_poll).await;
        }
    }

    async fn unlock(&self, guard: &JobGuard) {
        if let Err(e) = self.life.catalog().unlock_repository(&guard.holder).await {
            tracing::warn!(error = %e, "releasing the repository lock failed; it expires with its lease");
        }
        guard.locked.store(false, Ordering::SeqCst);
    }

    /// A job that keeps getting interrupted: fail it with a reason.
    async fn give_up(&self, job: &Job) -> Result<Ended, CatalogError> {
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
            JobKind::Gc | JobKind::PolicyRun => tracing::error!("{reason}"),
        }
        Ok(Ended::Fail(reason))
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

    async fn backup(&self, job: &Job, guard: &JobGuard) -> Result<Ended, CatalogError> {
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
                return Ok(ended_by_status(&b));
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
                return Ok(Ended::Fail("The backup was deleted before it ran.".into()));
            }
            Err(e) => return Err(e),
        };
        let result = self.run_backup(&b, &options, guard).await;
        if !self.still_holds(job, guard).await {
            // The lease went while the engine ran, and another node may be running the
            // job now: it marks the backup and owns the source. This run must neither
            // mark the backup (`available` here while the other run still writes its
            // manifest) nor give the source back (the other run still reads it).
            tracing::warn!(backup = %b.id, stored = result.is_ok(), "backup stopped: its lease was lost");
            return Ok(Ended::Recorded);
        }
        let _ = c.set_backup_progress(&b.id, None).await;
        // Each status change is fenced on the job still being this node's: the lease may
        // lapse again between the check above and the write.
        let held = (job.pk, self.options.node.as_str());
        let ended = match result {
            Ok(stats) => {
                let block = 4096;
                self.life.metrics().backup_bytes(
                    stats.bytes_read,
                    stats.blocks_new * block,
                    (stats.blocks_from_parent + stats.blocks_repeated) * block,
                    stats.bytes_stored,
                );
                // What the record held (the source volume's metadata) plus the run's
                // figures.
                let mut meta = b
                    .service_metadata
                    .as_deref()
                    .and_then(|m| serde_json::from_str::<serde_json::Map<String, Value>>(m).ok())
                    .unwrap_or_default();
                for (k, v) in [
                    ("engine", json!(1)),
                    ("blocks", json!(stats.blocks)),
                    ("blocks_new", json!(stats.blocks_new)),
                    ("bytes_read", json!(stats.bytes_read)),
                    ("bytes_stored", json!(stats.bytes_stored)),
                    ("manifest_bytes", json!(stats.manifest_bytes)),
                    ("seconds", json!(stats.seconds)),
                ] {
                    meta.insert(k.to_owned(), v);
                }
                let meta = Value::Object(meta);
                let done = match c
                    .complete_backup(&b, stats.object_count as i64, &meta.to_string(), held)
                    .await
                {
                    Err(CatalogError::JobTaken(_)) => return Ok(taken_over(guard, &b.id)),
                    done => done?,
                };
                if done {
                    // A policy's backup: its retention for this disk, now that the
                    // newest backup is in.
                    if let Err(e) = self.life.retain_after(&b.id).await {
                        tracing::warn!(backup = %b.id, error = %e, "retention after a policy backup failed");
                    }
                    Ended::Recorded
                } else {
                    // Force-deleted while we wrote: the delete job removes it.
                    tracing::info!(backup = %b.id, "backup finished after it was deleted");
                    Ended::Fail("The backup was deleted while it ran.".into())
                }
            }
            // (Cancelled because its lease lapsed, and taken back above: it failed.)
            Err(EngineError::Cancelled) if !guard.lost.load(Ordering::SeqCst) => {
                tracing::info!(backup = %b.id, "backup cancelled");
                Ended::Fail("The backup was deleted while it ran.".into())
            }
            Err(e) => {
                let moved = match c
                    .fail_backup(&b, &e.to_string(), held, fail_code(JobKind::Backup))
                    .await
                {
                    Err(CatalogError::JobTaken(_)) => return Ok(taken_over(guard, &b.id)),
                    moved => moved?,
                };
                if moved {
                    Ended::RecordedFail
                } else {
                    Ended::Fail(e.to_string())
                }
            }
        };
        self.release(&b).await;
        Ok(ended)
    }

    async fn run_backup(
        &self,
        b: &BackupRecord,
        options: &Value,
        guard: &JobGuard,
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
        let cancel = Arc::new(AtomicBool::new(false));
        let watcher = self.watch(&b.id, "creating", &progress, &cancel);
        let result = if self.lock(guard, LockMode::Shared).await {
            // From before the first pack until the manifest is stored, so that no sweep
            // sees this backup's packs unnamed (docs/repository.md).
            let run = self.engine.backup(BackupOptions {
                backup_id: b.id.clone(),
                source,
                parent: b.parent_id.clone(),
                progress,
                cancel: cancel.clone(),
            });
            // Held on until the catalog says `available` (the job unlocks at its end):
            // a sweep in between that misses the new manifest in a lagging listing
            // finds the backup in the catalog.
            relay(guard, &cancel, run).await
        } else {
            Err(EngineError::Cancelled)
        };
        watcher.abort();
        if let Some(t) = temp {
            let _ = tokio::task::spawn_blocking(move || vbs_engine::pool::remove(&t)).await;
        }
        if result.is_err() && !guard.lost.load(Ordering::SeqCst) {
            // A partial backup leaves packs no manifest names; the next GC sweeps them.
            // (Not after a lost lease: the node that took over may have written it.)
            let _ = self.engine.delete_backup(&b.id).await;
        }
        result
    }

    async fn restore(&self, job: &Job, guard: &JobGuard) -> Result<Ended, CatalogError> {
        let c = self.life.catalog();
        let volumes = self.life.volumes();
        let b = match c.get_backup(&job.backup_id, None).await {
            Ok(b) if b.status == "restoring" => b,
            // Reset or deleted before it started (or finished by an earlier run, which
            // recorded how it ended): give the target volume back.
            Ok(_) | Err(CatalogError::NotFound) => {
                if let Some(v) = &job.volume_id {
                    let _ = volumes.end_restore(v, true).await;
                }
                return Ok(Ended::Fail(
                    "The backup left 'restoring' before the restore ran.".into(),
                ));
            }
            Err(e) => return Err(e),
        };
        let Some(vid) = job.volume_id.clone() else {
            return Ok(Ended::Fail("The restore has no target volume.".into()));
        };
        let v = c.get_volume(&vid, None).await?;
        let progress = Arc::new(Progress::default());
        let cancel = Arc::new(AtomicBool::new(false));
        let watcher = self.watch(&b.id, "restoring", &progress, &cancel);
        let run = self.engine.restore(RestoreOptions {
            backup_id: b.id.clone(),
            target: volumes.volume_file(&v),
            progress,
            cancel: cancel.clone(),
        });
        let result = relay(guard, &cancel, run).await;
        watcher.abort();
        if !self.still_holds(job, guard).await {
            // Another node restores it now (or will): leave the statuses to it.
            return Ok(Ended::Recorded);
        }
        let reason;
        let saved = crate::lifecycle::saved_volume_metadata(b.service_metadata.as_deref());
        let end = match result {
            Ok(_) => RestoreEnd::Done {
                record_source: b.volume_id != vid,
                volume_metadata: saved.as_ref(),
            },
            Err(e) => {
                reason = format!("Restore to volume {vid} failed: {e}");
                // Cinder: `error` for a volume created for the restore, else
                // `error_restoring`.
                let new_volume = job
                    .options
                    .as_deref()
                    .and_then(|o| serde_json::from_str::<Value>(o).ok())
                    .and_then(|o| o.get("new_volume").and_then(Value::as_bool))
                    == Some(true);
                RestoreEnd::Failed {
                    reason: &reason,
                    volume_status: if new_volume {
                        "error"
                    } else {
                        "error_restoring"
                    },
                }
            }
        };
        let failed = matches!(end, RestoreEnd::Failed { .. });
        match c
            .finish_restore(&b.id, &vid, end, (job.pk, &self.options.node))
            .await
        {
            Err(CatalogError::JobTaken(_)) => return Ok(taken_over(guard, &b.id)),
            finished => finished?,
        }
        Ok(if failed {
            Ended::RecordedFail
        } else {
            Ended::Recorded
        })
    }

    async fn delete(&self, job: &Job) -> Result<Ended, CatalogError> {
        let c = self.life.catalog();
        match c.get_backup(&job.backup_id, None).await {
            Ok(b) if b.status == "deleting" => {}
            // Gone: this job (or an earlier run of it) deleted it.
            Err(CatalogError::NotFound) => return Ok(Ended::Success),
            Ok(b) => return Ok(ended_by_status(&b)),
            Err(e) => return Err(e),
        }
        // The manifest goes first: from then on the backup does not exist, and its
        // packs are garbage that the GC queued here sweeps under the repository lock.
        let result = self.engine.delete_backup(&job.backup_id).await;
        match result {
            Ok(()) => {
                c.destroy_backup(&job.backup_id).await?;
                if c.enqueue_gc().await? {
                    self.life.wake.notify_waiters();
                }
                Ok(Ended::Success)
            }
            Err(EngineError::Store(e)) => {
                let reason = format!("The repository is unavailable: {e}");
                c.set_backup_status(
                    &job.backup_id,
                    &["deleting"],
                    "error_deleting",
                    Some(Some(&reason)),
                )
                .await?;
                Ok(Ended::Fail(reason))
            }
            Err(e) => {
                let reason = e.to_string();
                c.set_backup_status(&job.backup_id, &["deleting"], "error", Some(Some(&reason)))
                    .await?;
                Ok(Ended::Fail(reason))
            }
        }
    }

    /// Sweeps packs that no manifest names, alone: while the lock is exclusive no
    /// backup writes packs (a waiting GC keeps new backups out).
    async fn gc(&self, guard: &JobGuard) -> Result<(), CatalogError> {
        if !self.lock(guard, LockMode::Exclusive).await {
            return Ok(());
        }
        // Read under the lock: every backup written since is in the catalog already.
        let known = self
            .life
            .catalog()
            .backup_ids_of_service(crate::BACKUP_SERVICE)
            .await?;
        let result = self.engine.gc_until(&guard.cancel, &known).await;
        self.unlock(guard).await;
        match result {
            Ok(stats) => tracing::info!(?stats, "repository swept"),
            Err(EngineError::Cancelled) => tracing::warn!("sweep stopped: the lock was lost"),
            // The next delete or the scheduler queues another sweep.
            Err(e) => tracing::error!(error = %e, "sweeping the repository failed"),
        }
        Ok(())
    }

    /// A policy run: each of its disks backed up once for its slot.
    async fn policy_run(&self, job: &Job) -> Result<Ended, CatalogError> {
        match self.life.run_policy(job).await {
            Ok(()) => Ok(Ended::Success),
            Err(crate::Error::Unavailable(e)) => {
                Err(CatalogError::Engine(format!("catalog unavailable: {e}")))
            }
            Err(e) => Ok(Ended::Fail(e.to_string())),
        }
    }

    /// An imported record turns `available` once its data is in the repository and
    /// reads back intact.
    async fn verify(&self, job: &Job, guard: &JobGuard) -> Result<Ended, CatalogError> {
        let c = self.life.catalog();
        // A record imported under another id than its data's: first its own manifest,
        // written under the shared lock like a backup's (no sweep sees it half-done).
        let copy_from = job
            .options
            .as_deref()
            .and_then(|o| serde_json::from_str::<Value>(o).ok())
            .and_then(|o| {
                o.get("copy_from")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            });
        let mut copied = Ok(());
        if let Some(from) = copy_from.filter(|f| *f != job.backup_id) {
            if !self.lock(guard, LockMode::Shared).await {
                return Ok(Ended::Recorded);
            }
            copied = self.engine.copy_backup(&from, &job.backup_id).await;
            self.unlock(guard).await;
        }
        let verified = match copied {
            Ok(()) => self.engine.verify(&job.backup_id).await,
            Err(e) => Err(e),
        };
        let outcome = match verified {
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
            Ok(()) => {
                c.set_backup_status(&job.backup_id, &["creating"], "available", Some(None))
                    .await?;
                Ok(Ended::Success)
            }
            Err(reason) => {
                c.set_backup_status(&job.backup_id, &["creating"], "error", Some(Some(&reason)))
                    .await?;
                Ok(Ended::Fail(reason))
            }
        }
    }
}

/// A run whose lease lapsed while its engine worked, and whose job another node then
/// claimed, against a real catalog, repository and volume file: the two runs of one job
/// that the cluster fault campaign caught (PostgreSQL restarted under a worker).
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use vbs_catalog::{Catalog, CatalogOptions};
    use vbs_engine::EngineOptions;
    use vbs_engine::pool::Pool;

    use super::*;
    use crate::context::{Context, Role};
    use crate::microversion::Microversion;
    use crate::volumes::{CreateVolumeOptions, VolumeService};

    const LEASE: Duration = Duration::from_mins(1);

    /// A fresh database on the `PostgreSQL` server at `VBS_TEST_POSTGRES` (default
    /// `postgres://postgres@127.0.0.1:5432`), dropped with the node.
    struct Database {
        root: String,
        name: String,
    }

    impl Database {
        fn psql(root: &str, sql: &str) {
            let out = std::process::Command::new("psql")
                .args([
                    &format!("{root}/postgres"),
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-qc",
                    sql,
                ])
                .output()
                .expect("psql runs (PostgreSQL tests need it; they are never skipped)");
            assert!(
                out.status.success(),
                "psql {sql}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }

        fn create() -> Self {
            let root = std::env::var("VBS_TEST_POSTGRES")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
            let name = format!("vbs_worker_{}", uuid::Uuid::new_v4().simple());
            Self::psql(&root, &format!("CREATE DATABASE {name}"));
            Self { root, name }
        }
    }

    impl Drop for Database {
        fn drop(&mut self) {
            Self::psql(
                &self.root,
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            );
        }
    }

    struct Node {
        dir: tempfile::TempDir,
        /// The catalog's database on `PostgreSQL` (none: `SQLite` in `dir`).
        _database: Option<Database>,
        life: BackupLifecycle,
        engine: Engine,
        ctx: Context,
        /// The volume backed up, and the bytes it holds.
        volume: String,
        bytes: Vec<u8>,
    }

    impl Node {
        async fn new(postgres: bool) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let database = postgres.then(Database::create);
            let options = match &database {
                Some(db) => CatalogOptions {
                    url: format!("{}/{}", db.root, db.name),
                    max_connections: 4,
                },
                None => CatalogOptions::sqlite_in(dir.path()),
            };
            let catalog = Catalog::open(&options).await.unwrap();
            let pool = Pool::open(dir.path()).unwrap();
            let volumes = VolumeService::new(catalog.clone(), pool);
            let life = BackupLifecycle::new(catalog, volumes.clone(), "vbs@test".into());
            let store = vbs_repository::Store::local(&dir.path().join("repository")).unwrap();
            let engine = Engine::new(store, EngineOptions::default());
            let ctx = Context {
                user_id: "u".into(),
                project_id: "p".into(),
                roles: vec![Role::Member, Role::Reader],
            };
            let body = json!({"volume": {"size": 1}});
            let opts = CreateVolumeOptions::from_body(&body, Microversion::MIN).unwrap();
            let v = volumes.create(&ctx, opts).await.unwrap();
            // 3 MiB that do not repeat, at the start of the 1 GiB image.
            let mut bytes = Vec::with_capacity(3 << 20);
            let mut x = 0x9e37_79b9_7f4a_7c15_u64;
            while bytes.len() < 3 << 20 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                bytes.extend_from_slice(&x.to_le_bytes());
            }
            let mut image = std::fs::OpenOptions::new()
                .write(true)
                .open(volumes.volume_file(&v))
                .unwrap();
            std::io::Write::write_all(&mut image, &bytes).unwrap();
            image.sync_all().unwrap();
            Self {
                dir,
                _database: database,
                life,
                engine,
                ctx,
                volume: v.id,
                bytes,
            }
        }

        fn worker(&self, node: &str) -> BackupWorker {
            BackupWorker::new(
                self.life.clone(),
                self.engine.clone(),
                WorkerOptions {
                    node: node.into(),
                    lease: LEASE,
                    ..WorkerOptions::default()
                },
            )
        }

        fn catalog(&self) -> &Catalog {
            self.life.catalog()
        }

        /// A backup of the volume, as `POST /backups` makes it (`creating`, its job
        /// queued).
        async fn create_backup(&self) -> BackupRecord {
            let body = json!({"backup": {"volume_id": self.volume}});
            self.life
                .create(&self.ctx, Microversion::MIN, &body)
                .await
                .unwrap()
        }

        /// Node `first` claims the only queued job, its lease lapses, and node `second`
        /// claims the job: both runs of it, as each worker sees its claim.
        async fn taken_over(&self, first: &str, second: &str) -> (Job, Job) {
            let stale = self.catalog().claim_job(first, 0).await.unwrap().unwrap();
            tokio::time::sleep(Duration::from_millis(2)).await;
            let new = self
                .catalog()
                .claim_job(second, micros(LEASE))
                .await
                .unwrap()
                .unwrap();
            assert_eq!((new.pk, new.attempts), (stale.pk, 2));
            (stale, new)
        }

        async fn statuses(&self, backup: &str) -> (String, String) {
            let b = self.catalog().get_backup(backup, None).await.unwrap();
            let v = self.catalog().get_volume(&self.volume, None).await.unwrap();
            (b.status, v.status)
        }

        /// Who holds job `job` now, and how it ended (its outcome, if recorded).
        async fn job(&self, job: &Job) -> (Option<String>, Option<String>) {
            let id = job.id.clone().unwrap();
            let holder = self.catalog().running_jobs().await.unwrap();
            let holder = holder.into_iter().find(|(j, _)| j.id == id).map(|(_, w)| w);
            let record = self.catalog().get_job(&id, "p").await.unwrap();
            (holder, record.outcome)
        }

        /// Restores `backup` to a new file: its bytes must be the volume's.
        async fn check_restores(&self, backup: &str) {
            let target = self.dir.path().join(format!("restored-{backup}"));
            self.engine
                .restore(RestoreOptions {
                    backup_id: backup.into(),
                    target: target.clone(),
                    progress: Arc::new(Progress::default()),
                    cancel: Arc::new(AtomicBool::new(false)),
                })
                .await
                .unwrap();
            let mut restored = std::fs::File::open(&target).unwrap();
            assert_eq!(restored.metadata().unwrap().len(), 1 << 30);
            let mut head = vec![0; self.bytes.len() + (1 << 20)];
            std::io::Read::read_exact(&mut restored, &mut head).unwrap();
            assert!(head[..self.bytes.len()] == self.bytes[..]);
            assert!(head[self.bytes.len()..].iter().all(|&b| b == 0));
        }
    }

    /// A run's view of its claim: `noticed` when its lease renewal found the lease gone
    /// after the engine's last check of the stop flag (the engine stored the manifest
    /// anyway).
    fn guard(node: &str, job: &Job, noticed: bool) -> JobGuard {
        JobGuard {
            holder: format!("{node}/job-{}", job.pk),
            cancel: AtomicBool::new(false),
            lost: AtomicBool::new(noticed),
            locked: AtomicBool::new(false),
        }
    }

    async fn backup_taken_over(postgres: bool, noticed: bool) {
        let node = Node::new(postgres).await;
        let (w1, w2) = (node.worker("w1"), node.worker("w2"));
        let b = node.create_backup().await;
        let (stale, new) = node.taken_over("w1", "w2").await;

        // The stale run stores its whole backup, and then must change nothing: the
        // backup stays `creating` and the volume stays `backing-up` for the new run.
        let g1 = guard("w1", &stale, noticed);
        let ended = w1.backup(&stale, &g1).await.unwrap();
        assert!(matches!(ended, Ended::Recorded), "{ended:?}");
        assert!(g1.lost.load(Ordering::SeqCst));
        assert!(node.engine.has_backup(&b.id).await.unwrap());
        assert_eq!(
            node.statuses(&b.id).await,
            ("creating".into(), "backing-up".into())
        );
        assert_eq!(node.job(&stale).await, (Some("w2".into()), None));

        // The run that holds the job ends it.
        let g2 = guard("w2", &new, false);
        let ended = w2.backup(&new, &g2).await.unwrap();
        assert!(matches!(ended, Ended::Recorded), "{ended:?}");
        assert_eq!(
            node.statuses(&b.id).await,
            ("available".into(), "available".into())
        );
        assert_eq!(
            node.job(&new).await,
            (Some("w2".into()), Some("success".into()))
        );
        node.check_restores(&b.id).await;
    }

    async fn restore_taken_over(postgres: bool) {
        let node = Node::new(postgres).await;
        let (w0, w1, w2) = (node.worker("w0"), node.worker("w1"), node.worker("w2"));
        let b = node.create_backup().await;
        let job = node
            .catalog()
            .claim_job("w0", micros(LEASE))
            .await
            .unwrap()
            .unwrap();
        w0.backup(&job, &guard("w0", &job, false)).await.unwrap();
        assert_eq!(node.statuses(&b.id).await.0, "available");
        let body = json!({"restore": {"volume_id": node.volume}});
        node.life.restore(&node.ctx, &b.id, &body).await.unwrap();
        let (stale, new) = node.taken_over("w1", "w2").await;
        for noticed in [true, false] {
            let g1 = guard("w1", &stale, noticed);
            let ended = w1.restore(&stale, &g1).await.unwrap();
            assert!(matches!(ended, Ended::Recorded), "{ended:?}");
            assert_eq!(
                node.statuses(&b.id).await,
                ("restoring".into(), "restoring-backup".into())
            );
            assert_eq!(node.job(&stale).await, (Some("w2".into()), None));
        }
        let ended = w2.restore(&new, &guard("w2", &new, false)).await.unwrap();
        assert!(matches!(ended, Ended::Recorded), "{ended:?}");
        assert_eq!(
            node.statuses(&b.id).await,
            ("available".into(), "available".into())
        );
    }

    /// Each test on `SQLite` and on `PostgreSQL`.
    macro_rules! on_both_catalogs {
        ($($(#[$doc:meta])* $name:ident => $body:expr;)*) => {
            $(
                $(#[$doc])*
                mod $name {
                    use super::*;

                    #[tokio::test]
                    async fn sqlite() {
                        let run: fn(bool) -> _ = $body;
                        run(false).await;
                    }

                    #[tokio::test]
                    async fn postgres() {
                        let run: fn(bool) -> _ = $body;
                        run(true).await;
                    }
                }
            )*
        };
    }

    on_both_catalogs! {
        /// The campaign's failure: the run's renewal found the lease gone just as its
        /// engine stored the manifest; it still marked the backup `available` and gave
        /// the volume back while the run that had taken the job over was reading it.
        lapsed_lease_run_marked_available_while_the_new_run_read_the_source =>
            |pg| backup_taken_over(pg, true);
        /// The same takeover after the run's last look at its lease (it lapsed and was
        /// claimed between that check and the status change): the catalog refuses the
        /// change, since the job is no longer the run's.
        run_whose_job_was_taken_after_its_last_lease_check_marked_available =>
            |pg| backup_taken_over(pg, false);
        /// A restore run whose job was taken over must not end the restore: the
        /// statuses stay until the run that holds the job ends it.
        restore_run_whose_job_was_taken_over_ended_the_restore => restore_taken_over;
    }
}
