//! The work queue: backup, restore, delete and GC work waits here until a worker claims
//! it. A claim is a lease: the worker renews it while it works; work whose lease ran
//! out (the worker died) is claimed again by anyone. On `PostgreSQL` the claim skips
//! rows other transactions hold (`FOR UPDATE SKIP LOCKED`), so no job goes to two
//! workers; `SQLite` has one writer at a time, which gives the same guarantee. Finished
//! jobs stay as history (`done`, with the worker that ran them) until pruned.
//!
//! The same rows are the jobs users follow (VBS `GET /v1/{project_id}/jobs/{id}`): each
//! has a public id and the project that asked for it, and how it ended (`outcome`,
//! `error_code`, `fail_reason`). Where the work ends with a backup's status change, the
//! outcome is written in that change's transaction ([`outcome_sql`]); otherwise the
//! worker gives it when it marks the job done, and a recorded outcome is never
//! overwritten by a later run of the same job.

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
    /// Back up the disks of a backup policy for one slot (no backup: `backup_id` is
    /// empty; the policy and slot are in the options).
    PolicyRun,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Backup => "backup",
            Self::Restore => "restore",
            Self::Delete => "delete",
            Self::Verify => "verify",
            Self::Gc => "gc",
            Self::PolicyRun => "policy_run",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        match s {
            "backup" => Some(Self::Backup),
            "restore" => Some(Self::Restore),
            "delete" => Some(Self::Delete),
            "verify" => Some(Self::Verify),
            "gc" => Some(Self::Gc),
            "policy_run" => Some(Self::PolicyRun),
            _ => None,
        }
    }
}

/// A job to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// Its public id (a UUID).
    pub id: String,
    /// The project that asked for it (none for GC).
    pub project_id: Option<String>,
    pub kind: JobKind,
    pub backup_id: String,
    /// The source (backup) or target (restore) volume.
    pub volume_id: Option<String>,
    /// Free-form JSON the worker reads back.
    pub options: Option<String>,
    /// What the job is about, as JSON shown to users (VBS `entities`).
    pub entities: Option<String>,
    /// The job this one is a part of (VBS `sub_jobs`).
    pub parent_id: Option<String>,
}

impl NewJob {
    /// A job of `project` with a fresh public id.
    pub fn new(kind: JobKind, project: &str, backup_id: &str) -> Self {
        Self {
            id: uuid::Uuid::new_v4().to_string(),
            project_id: Some(project.to_owned()),
            kind,
            backup_id: backup_id.to_owned(),
            volume_id: None,
            options: None,
            entities: None,
            parent_id: None,
        }
    }
}

/// The work queue at a glance ([`Catalog::queue_stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueStats {
    pub queued: i64,
    pub running: i64,
    pub oldest_queued_micros: i64,
}

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobOutcome<'a> {
    Success,
    /// With a VBS error code (`VolumeBackup.0064`, …) and a reason for people.
    Fail {
        code: &'a str,
        reason: &'a str,
    },
}

/// A job as users see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRecord {
    pub id: String,
    pub project_id: Option<String>,
    pub kind: JobKind,
    pub backup_id: String,
    pub volume_id: Option<String>,
    /// `queued`, `running` or `done`.
    pub state: String,
    /// `success` or `fail` once known.
    pub outcome: Option<String>,
    pub error_code: Option<String>,
    pub fail_reason: Option<String>,
    pub entities: Option<String>,
    pub parent_id: Option<String>,
    pub created_at: i64,
    pub finished_at: Option<i64>,
}

const JOB_COLUMNS: &str = "id, project_id, kind, backup_id, volume_id, state, outcome, \
     error_code, fail_reason, entities, parent_id, created_at, finished_at";

fn job_from_row(row: &sqlx::any::AnyRow) -> Result<JobRecord, CatalogError> {
    let kind: String = row.try_get(2)?;
    Ok(JobRecord {
        id: row.try_get(0)?,
        project_id: row.try_get(1)?,
        kind: JobKind::parse(&kind)
            .ok_or_else(|| CatalogError::Engine(format!("unknown job kind {kind}")))?,
        backup_id: row.try_get(3)?,
        volume_id: row.try_get(4)?,
        state: row.try_get(5)?,
        outcome: row.try_get(6)?,
        error_code: row.try_get(7)?,
        fail_reason: row.try_get(8)?,
        entities: row.try_get(9)?,
        parent_id: row.try_get(10)?,
        created_at: row.try_get(11)?,
        finished_at: row.try_get(12)?,
    })
}

/// The statement that records how job `pk` ended, unless an outcome is recorded
/// already: for the transaction that moves the job's backup to its end status.
pub(crate) fn outcome_sql(pk: i64, outcome: JobOutcome<'_>) -> Sql {
    let (outcome, code, reason) = match outcome {
        JobOutcome::Success => ("success", None, None),
        JobOutcome::Fail { code, reason } => ("fail", Some(code), Some(reason)),
    };
    let mut sql = Sql::default();
    sql.push("UPDATE jobs SET outcome = ")
        .bind(Value::Text(outcome.into()))
        .push(", error_code = ");
    sql.bind_opt(code);
    sql.push(", fail_reason = ");
    sql.bind_opt(reason);
    sql.push(", finished_at = ")
        .bind(Value::Int(ts::now_micros()))
        .push(" WHERE outcome IS NULL AND pk = ")
        .bind(Value::Int(pk));
    sql
}

/// Keeps job `pk` `worker`'s until the transaction ends, or fails with
/// [`CatalogError::JobTaken`] when another worker holds it now: the fence of a run that
/// settles its job's statuses. On PostgreSQL the job's row stays locked until the
/// commit, so a claim of the lapsed job waits (or skips it) rather than running it
/// beside this run's end; on SQLite the transaction holds the write lock.
pub(crate) async fn hold(
    tx: &mut crate::write::Tx,
    pk: i64,
    worker: &str,
) -> Result<(), CatalogError> {
    let mut sql = Sql::default();
    sql.push("UPDATE jobs SET worker = worker WHERE state = 'running' AND pk = ")
        .bind(Value::Int(pk))
        .push(" AND worker = ")
        .bind(Value::Text(worker.into()));
    if crate::write::exec(tx, sql).await? == 1 {
        Ok(())
    } else {
        Err(CatalogError::JobTaken(pk))
    }
}

/// A claimed job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub pk: i64,
    /// Its public id (none for GC).
    pub id: Option<String>,
    pub kind: JobKind,
    pub backup_id: String,
    pub volume_id: Option<String>,
    pub options: Option<String>,
    /// How many times it has been claimed, this time included.
    pub attempts: i64,
}

pub(crate) fn job_insert(job: &NewJob) -> Sql {
    let mut sql = Sql::default();
    sql.push(
        "INSERT INTO jobs (id, project_id, kind, backup_id, volume_id, state, options, \
         entities, parent_id, created_at) VALUES (",
    )
    .bind(Value::Text(job.id.clone()))
    .push(", ");
    sql.bind_opt(job.project_id.as_deref());
    sql.push(", ")
        .bind(Value::Text(job.kind.as_str().into()))
        .push(", ")
        .bind(Value::Text(job.backup_id.clone()))
        .push(", ");
    sql.bind_opt(job.volume_id.as_deref());
    sql.push(", 'queued', ");
    sql.bind_opt(job.options.as_deref());
    sql.push(", ");
    sql.bind_opt(job.entities.as_deref());
    sql.push(", ");
    sql.bind_opt(job.parent_id.as_deref());
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
        sql.push(") RETURNING pk, kind, backup_id, volume_id, options, attempts, id");
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
            id: row.try_get(6)?,
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

    /// Marks a job done (kept as history) with `outcome` unless one is recorded
    /// already; `false` if it was not this worker's any more.
    pub async fn finish_job(
        &self,
        pk: i64,
        worker: &str,
        outcome: JobOutcome<'_>,
    ) -> Result<bool, CatalogError> {
        let (result, code, reason) = match outcome {
            JobOutcome::Success => ("success", None, None),
            JobOutcome::Fail { code, reason } => ("fail", Some(code), Some(reason)),
        };
        // Every right-hand side reads the row as it was: a recorded outcome stays.
        let mut sql = Sql::default();
        sql.push("UPDATE jobs SET state = 'done', lease_until = NULL, finished_at = COALESCE(finished_at, ")
            .bind(Value::Int(ts::now_micros()))
            .push("), outcome = COALESCE(outcome, ")
            .bind(Value::Text(result.into()))
            .push("), error_code = CASE WHEN outcome IS NULL THEN ");
        sql.bind_opt(code);
        sql.push(" ELSE error_code END, fail_reason = CASE WHEN outcome IS NULL THEN ");
        sql.bind_opt(reason);
        sql.push(" ELSE fail_reason END WHERE state = 'running' AND pk = ")
            .bind(Value::Int(pk))
            .push(" AND worker = ")
            .bind(Value::Text(worker.into()));
        // A policy backup's task ends with its job.
        let mut tx = self.begin().await?;
        let done = crate::write::exec(&mut tx, sql).await? == 1;
        if done {
            crate::write::exec(&mut tx, crate::policies::task_outcome_sql(pk)).await?;
        }
        tx.commit().await?;
        Ok(done)
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

    /// A job of `project` by its public id.
    pub async fn get_job(&self, id: &str, project: &str) -> Result<JobRecord, CatalogError> {
        let mut sql = Sql::default();
        sql.push("SELECT ")
            .push(JOB_COLUMNS)
            .push(" FROM jobs WHERE id = ")
            .bind(Value::Text(id.into()))
            .push(" AND project_id = ")
            .bind(Value::Text(project.into()));
        let row = sql.into_query().fetch_optional(self.pool()).await?;
        row.as_ref()
            .map_or(Err(CatalogError::NotFound), job_from_row)
    }

    /// The jobs that are parts of job `id`, oldest first.
    pub async fn sub_jobs(&self, id: &str) -> Result<Vec<JobRecord>, CatalogError> {
        let mut sql = Sql::default();
        sql.push("SELECT ")
            .push(JOB_COLUMNS)
            .push(" FROM jobs WHERE parent_id = ")
            .bind(Value::Text(id.into()))
            .push(" ORDER BY pk");
        let rows = sql.into_query().fetch_all(self.pool()).await?;
        rows.iter().map(job_from_row).collect()
    }

    /// Jobs that are running now, oldest first, with the worker that holds each.
    pub async fn running_jobs(&self) -> Result<Vec<(JobRecord, String)>, CatalogError> {
        let mut sql = Sql::default();
        sql.push("SELECT ")
            .push(JOB_COLUMNS)
            .push(", COALESCE(worker, '') FROM jobs WHERE state = 'running' ORDER BY pk");
        let rows = sql.into_query().fetch_all(self.pool()).await?;
        rows.iter()
            .map(|r| Ok((job_from_row(r)?, r.try_get(13)?)))
            .collect()
    }

    /// The queue now: jobs waiting, jobs running, and how long the oldest waiting one
    /// has waited (µs).
    pub async fn queue_stats(&self) -> Result<QueueStats, CatalogError> {
        let now = ts::now_micros();
        let mut sql = Sql::default();
        sql.push(
            "SELECT COALESCE(SUM(CASE WHEN state = 'queued' THEN 1 ELSE 0 END), 0), \
             COALESCE(SUM(CASE WHEN state = 'running' THEN 1 ELSE 0 END), 0), \
             MIN(CASE WHEN state = 'queued' THEN created_at END) FROM jobs WHERE state <> 'done'",
        );
        let row = sql.into_query().fetch_one(self.pool()).await?;
        let oldest: Option<i64> = row.try_get(2)?;
        Ok(QueueStats {
            queued: row.try_get(0)?,
            running: row.try_get(1)?,
            oldest_queued_micros: oldest.map_or(0, |t| (now - t).max(0)),
        })
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
