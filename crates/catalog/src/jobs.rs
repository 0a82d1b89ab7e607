//! The work queue: backup, restore, delete and GC work waits here until a worker claims
//! it. A claim is a lease: the worker renews it while it works; work whose lease ran
//! out (the worker died) is claimed again by anyone. On `PostgreSQL` the claim skips
//! rows other transactions hold (`FOR UPDATE SKIP LOCKED`), so no job goes to two
//! workers; `SQLite` has one writer at a time, which gives the same guarantee. Finished
//! jobs stay as history (`done`, with the worker that ran them) until pruned.

use sqlx::Row as _;

use crate::read::{Sql, Value};
use crate::write::write_error;
use crate::{Catalog, CatalogError, Dialect, ts};

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    Backup,
    Restore,
    Delete,
    /// Check an imported record's data before it turns `available`.
    Verify,
    /// Sweep packs no manifest names (no backup: `backup_id` is empty).
    Gc,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Backup => "backup",
            Self::Restore => "restore",
            Self::Delete => "delete",
            Self::Verify => "verify",
            Self::Gc => "gc",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        match s {
            "backup" => Some(Self::Backup),
            "restore" => Some(Self::Restore),
            "delete" => Some(Self::Delete),
            "verify" => Some(Self::Verify),
            "gc" => Some(Self::Gc),
            _ => None,
        }
    }
}

/// A job to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub kind: JobKind,
    pub backup_id: String,
    /// The source (backup) or target (restore) volume.
    pub volume_id: Option<String>,
    /// Free-form JSON the worker reads back.
    pub options: Option<String>,
}

/// A claimed job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub pk: i64,
    pub kind: JobKind,
    pub backup_id: String,
    pub volume_id: Option<String>,
    pub options: Option<String>,
    /// How many times it has been claimed, this time included.
    pub attempts: i64,
}

pub(crate) fn job_insert(job: &NewJob) -> Sql {
    let mut sql = Sql::default();
    sql.push("INSERT INTO jobs (kind, backup_id, volume_id, state, options, created_at) VALUES (")
        .bind(Value::Text(job.kind.as_str().into()))
        .push(", ")
        .bind(Value::Text(job.backup_id.clone()))
        .push(", ");
    match &job.volume_id {
        Some(v) => sql.bind(Value::Text(v.clone())),
        None => sql.push("NULL"),
    };
    sql.push(", 'queued', ");
    match &job.options {
        Some(v) => sql.bind(Value::Text(v.clone())),
        None => sql.push("NULL"),
    };
    sql.push(", ").bind(Value::Int(ts::now_micros())).push(")");
    sql
}

impl Catalog {
    /// Adds a job to the queue.
    pub async fn enqueue_job(&self, job: &NewJob) -> Result<(), CatalogError> {
        self.execute(job_insert(job)).await?;
        Ok(())
    }

    /// Claims the oldest job that is queued or whose lease has run out, for `worker`
    /// until `lease_micros` from now.
    pub async fn claim_job(
        &self,
        worker: &str,
        lease_micros: i64,
    ) -> Result<Option<Job>, CatalogError> {
        let now = ts::now_micros();
        let mut sql = Sql::default();
        sql.push("UPDATE jobs SET state = 'running', worker = ")
            .bind(Value::Text(worker.into()))
            .push(", lease_until = ")
            .bind(Value::Int(now + lease_micros))
            .push(
                ", attempts = attempts + 1 WHERE pk = (SELECT pk FROM jobs \
                 WHERE state = 'queued' OR (state = 'running' AND lease_until < ",
            )
            .bind(Value::Int(now))
            .push(") ORDER BY pk LIMIT 1");
        if self.dialect() == Dialect::Postgres {
            sql.push(" FOR UPDATE SKIP LOCKED");
        }
        sql.push(") RETURNING pk, kind, backup_id, volume_id, options, attempts");
        let row = sql
            .into_query()
            .fetch_optional(self.pool())
            .await
            .map_err(write_error)?;
        let Some(row) = row else { return Ok(None) };
        let kind: String = row.try_get(1)?;
        Ok(Some(Job {
            pk: row.try_get(0)?,
            kind: JobKind::parse(&kind)
                .ok_or_else(|| CatalogError::Engine(format!("unknown job kind {kind}")))?,
            backup_id: row.try_get(2)?,
            volume_id: row.try_get(3)?,
            options: row.try_get(4)?,
            attempts: row.try_get(5)?,
        }))
    }

    /// Extends a lease; `false` when the job is no longer this worker's (it was taken
    /// over, or removed), and the worker must stop.
    pub async fn renew_job(
        &self,
        pk: i64,
        worker: &str,
        lease_micros: i64,
    ) -> Result<bool, CatalogError> {
        let mut sql = Sql::default();
        sql.push("UPDATE jobs SET lease_until = ")
            .bind(Value::Int(ts::now_micros() + lease_micros))
            .push(" WHERE pk = ")
            .bind(Value::Int(pk))
            .push(" AND worker = ")
            .bind(Value::Text(worker.into()));
        Ok(self.execute(sql).await? == 1)
    }

    /// Marks a job done (kept as history); `false` if it was not this worker's any more.
    pub async fn finish_job(&self, pk: i64, worker: &str) -> Result<bool, CatalogError> {
        let mut sql = Sql::default();
        sql.push("UPDATE jobs SET state = 'done', lease_until = NULL, finished_at = ")
            .bind(Value::Int(ts::now_micros()))
            .push(" WHERE state = 'running' AND pk = ")
            .bind(Value::Int(pk))
            .push(" AND worker = ")
            .bind(Value::Text(worker.into()));
        Ok(self.execute(sql).await? == 1)
    }

    /// Gives a claimed job back to the queue (its worker lost what made the work safe
    /// and stopped); `false` if it was not this worker's any more.
    pub async fn release_job(&self, pk: i64, worker: &str) -> Result<bool, CatalogError> {
        let mut sql = Sql::default();
        sql.push(
            "UPDATE jobs SET state = 'queued', worker = NULL, lease_until = NULL \
             WHERE state = 'running' AND pk = ",
        )
        .bind(Value::Int(pk))
        .push(" AND worker = ")
        .bind(Value::Text(worker.into()));
        Ok(self.execute(sql).await? == 1)
    }

    /// Queues a GC unless one is queued already (one sweep after a burst of deletes).
    pub async fn enqueue_gc(&self) -> Result<bool, CatalogError> {
        let mut sql = Sql::default();
        sql.push(
            "INSERT INTO jobs (kind, backup_id, state, created_at) SELECT 'gc', '', 'queued', ",
        )
        .bind(Value::Int(ts::now_micros()))
        .push(" WHERE NOT EXISTS (SELECT 1 FROM jobs WHERE kind = 'gc' AND state = 'queued')");
        Ok(self.execute(sql).await? == 1)
    }

    /// Forgets finished jobs older than `before` (microseconds since the epoch).
    pub async fn prune_jobs(&self, before: i64) -> Result<u64, CatalogError> {
        let mut sql = Sql::default();
        sql.push("DELETE FROM jobs WHERE state = 'done' AND finished_at < ")
            .bind(Value::Int(before));
        self.execute(sql).await
    }

    /// Puts every running job back in the queue: at start-up of the embedded mode,
    /// where no other process can be working on them.
    pub async fn requeue_running_jobs(&self) -> Result<u64, CatalogError> {
        let mut sql = Sql::default();
        sql.push("UPDATE jobs SET state = 'queued', worker = NULL, lease_until = NULL WHERE state = 'running'");
        self.execute(sql).await
    }

    /// Whether unfinished work concerns this backup.
    pub async fn has_job(&self, backup_id: &str) -> Result<bool, CatalogError> {
        let mut sql = Sql::default();
        sql.push("SELECT COUNT(*) FROM jobs WHERE state <> 'done' AND backup_id = ")
            .bind(Value::Text(backup_id.into()));
        let row = sql.into_query().fetch_one(self.pool()).await?;
        Ok(row.try_get::<i64, _>(0)? > 0)
    }
}
