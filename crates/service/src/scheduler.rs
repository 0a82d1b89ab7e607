//! The scheduler role: periodic housekeeping that no single request triggers. Every
//! tick it sweeps backups whose work vanished with a dead node (failed, given back or
//! deleted again, never left transitional), queues a repository GC every
//! `gc_interval` (a crashed writer's packs are swept even without deletes), and
//! forgets old job history, and fires the backup policies' due slots (each exactly
//! once: the claim is a row in the catalog). Any number of nodes may run it: each step
//! is idempotent.

use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::BackupLifecycle;

#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    /// How often it looks.
    pub tick: Duration,
    /// How often a GC is queued regardless of deletes.
    pub gc_interval: Duration,
    /// Rows changed more recently than this are left to the request that moved them.
    pub grace: Duration,
    /// Finished jobs are kept this long (which node ran what).
    pub keep_jobs: Duration,
    /// This node's name, recorded with the policy slots it fires.
    pub node: String,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        Self {
            tick: Duration::from_secs(10),
            gc_interval: Duration::from_hours(1),
            grace: Duration::from_secs(30),
            keep_jobs: Duration::from_hours(7 * 24),
            node: "scheduler".into(),
        }
    }
}

/// Runs until `shutdown` turns true.
pub async fn run_scheduler(
    life: BackupLifecycle,
    options: SchedulerOptions,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut last_gc = Instant::now();
    loop {
        tokio::select! {
            () = tokio::time::sleep(options.tick) => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            return;
        }
        match life.sweep(Some(options.grace)).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(n, "work of a dead node failed or given back"),
            Err(e) => tracing::warn!(error = %e, "sweeping for orphaned work failed"),
        }
        match life.fire_due_policies(&options.node).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(n, "backup policy runs queued"),
            Err(e) => tracing::warn!(error = %e, "firing backup policies failed"),
        }
        let c = life.catalog();
        if last_gc.elapsed() >= options.gc_interval {
            last_gc = Instant::now();
            match c.enqueue_gc().await {
                Ok(true) => {
                    tracing::info!("repository GC queued");
                    life.wake.notify_waiters();
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "queueing a GC failed"),
            }
        }
        let keep = i64::try_from(options.keep_jobs.as_micros()).unwrap_or(i64::MAX);
        if let Err(e) = c.prune_jobs(vbs_catalog::ts::now_micros() - keep).await {
            tracing::warn!(error = %e, "pruning job history failed");
        }
    }
}
