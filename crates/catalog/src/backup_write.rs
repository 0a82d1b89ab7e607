//! Backup rows as the backup lifecycle writes them: created with their job in one
//! transaction, moved between statuses by conditional updates (the row count says
//! whether the move happened, so two racing requests cannot both win), finished,
//! soft-deleted.

use std::collections::BTreeMap;

use crate::backups::{RECORD_COLUMNS, record_from_row};
use crate::jobs::{JobOutcome, NewJob, hold, job_insert, outcome_sql};
use crate::read::{Sql, Value, text};
use crate::volumes::{NewVolume, insert_metadata, push_in};
use crate::write::{exec, rename_sql};
use crate::{BackupRecord, Catalog, CatalogError, ts};

/// A backup to create, in status `creating` (or as imported).
#[derive(Debug, Clone, Default)]
pub struct NewBackup {
    pub id: String,
    pub project_id: String,
    pub user_id: Option<String>,
    pub volume_id: String,
    pub snapshot_id: Option<String>,
    pub parent_id: Option<String>,
    pub display_name: Option<String>,
    pub display_description: Option<String>,
    pub status: String,
    pub container: Option<String>,
    pub availability_zone: Option<String>,
    pub host: Option<String>,
    pub service: Option<String>,
    pub service_metadata: Option<String>,
    pub size: i64,
    pub object_count: i64,
    /// `None`: the backup's own creation time.
    pub data_timestamp: Option<i64>,
    pub metadata: BTreeMap<String, String>,
    /// VBS tags, kept apart from Cinder's metadata.
    pub tags: BTreeMap<String, String>,
    /// The policy run task this backup is for, recorded with it (its key refuses a
    /// second backup of the disk for the same slot: [`CatalogError::AlreadyExists`]).
    pub policy_task: Option<crate::PolicyTaskRef>,
}

/// The volume a restore writes.
#[derive(Debug, Clone, Copy)]
pub enum RestoreTarget<'a> {
    /// A live volume, which must be `available`.
    Existing(&'a str),
    /// A volume made for this restore (inserted `restoring-backup`).
    New(&'a NewVolume),
}

/// What [`Catalog::begin_backup_delete`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteStart {
    Started,
    /// It is shared with other projects.
    Shared,
    /// Incremental backups depend on it.
    HasDependents,
    /// Its status is not one the delete starts from.
    WrongStatus,
}

/// Why a restore did not start: the row named moved on meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreRefused {
    /// The target volume is no longer `available`.
    Volume,
    /// The backup is no longer `available`.
    Backup,
}

impl Catalog {
    /// Starts a restore, all or nothing: the target volume becomes (or is inserted as)
    /// `restoring-backup`, the backup `restoring`, and the job is queued. A crash at
    /// any moment leaves either all three or none of them.
    pub async fn start_restore(
        &self,
        backup_id: &str,
        target: RestoreTarget<'_>,
        job: &NewJob,
    ) -> Result<Result<(), RestoreRefused>, CatalogError> {
        let now = ts::now_micros();
        let mut tx = self.begin().await?;
        match target {
            RestoreTarget::New(v) => self.insert_volume_within_quota(&mut tx, v).await?,
            RestoreTarget::Existing(id) => {
                let mut sql = Sql::default();
                sql.push(
                    "UPDATE volumes SET previous_status = status, status = 'restoring-backup', \
                     updated_at = ",
                )
                .bind(Value::Int(now))
                .push(" WHERE deleted = 0 AND status = 'available' AND id = ")
                .bind(text(id));
                if exec(&mut tx, sql).await? != 1 {
                    return Ok(Err(RestoreRefused::Volume));
                }
            }
        }
        let mut sql = Sql::default();
        sql.push("UPDATE backups SET status = 'restoring', updated_at = ")
            .bind(Value::Int(now))
            .push(" WHERE deleted = 0 AND status = 'available' AND id = ")
            .bind(text(backup_id));
        if exec(&mut tx, sql).await? != 1 {
            return Ok(Err(RestoreRefused::Backup));
        }
        exec(&mut tx, job_insert(job)).await?;
        tx.commit().await?;
        Ok(Ok(()))
    }

    /// Inserts a backup, its metadata and its job, and counts it as a dependent of its
    /// parent, all or nothing. A parent no longer `available` is
    /// [`CatalogError::NotFound`]. A soft-deleted row with the same id is replaced
    /// (an imported record revives a deleted backup).
    pub async fn create_backup(&self, b: &NewBackup, job: &NewJob) -> Result<(), CatalogError> {
        let now = ts::now_micros();
        let mut tx = self.begin().await?;
        let mut sql = Sql::default();
        sql.push("DELETE FROM backups WHERE deleted = 1 AND id = ")
            .bind(text(&b.id));
        exec(&mut tx, sql).await?;
        let mut sql = Sql::default();
        sql.push(
            "INSERT INTO backups (id, project_id, user_id, volume_id, snapshot_id, parent_id, \
             display_name, display_description, status, container, availability_zone, host, \
             service, service_metadata, size, object_count, num_dependent_backups, \
             created_at, updated_at, data_timestamp, deleted) VALUES (",
        );
        sql.bind(text(&b.id))
            .push(", ")
            .bind(text(&b.project_id))
            .push(", ");
        sql.bind_opt(b.user_id.as_deref());
        sql.push(", ").bind(text(&b.volume_id)).push(", ");
        for v in [
            b.snapshot_id.as_deref(),
            b.parent_id.as_deref(),
            b.display_name.as_deref(),
            b.display_description.as_deref(),
        ] {
            sql.bind_opt(v);
            sql.push(", ");
        }
        sql.bind(text(&b.status)).push(", ");
        for v in [
            b.container.as_deref(),
            b.availability_zone.as_deref(),
            b.host.as_deref(),
            b.service.as_deref(),
            b.service_metadata.as_deref(),
        ] {
            sql.bind_opt(v);
            sql.push(", ");
        }
        sql.bind(Value::Int(b.size))
            .push(", ")
            .bind(Value::Int(b.object_count))
            .push(", 0, ")
            .bind(Value::Int(now))
            .push(", ")
            .bind(Value::Int(now))
            .push(", ")
            .bind(Value::Int(b.data_timestamp.unwrap_or(now)))
            .push(", 0)");
        exec(&mut tx, sql).await?;
        insert_metadata(&mut tx, "backup_metadata", "backup_id", &b.id, &b.metadata).await?;
        let mut sql = Sql::default();
        sql.push("DELETE FROM backup_tags WHERE backup_id = ")
            .bind(text(&b.id));
        exec(&mut tx, sql).await?;
        insert_metadata(&mut tx, "backup_tags", "backup_id", &b.id, &b.tags).await?;
        if let Some(t) = &b.policy_task {
            let task = crate::PolicyTask {
                id: t.id.clone(),
                policy_id: t.policy_id.clone(),
                slot: t.slot,
                volume_id: b.volume_id.clone(),
                run_job_id: t.run_job_id.clone(),
                status: "RUNNING".into(),
                message: None,
                backup_id: Some(b.id.clone()),
                backup_name: b.display_name.clone(),
                vbs_job_id: Some(job.id.clone()),
                created_at: now,
                finished_at: None,
                job_state: None,
                job_outcome: None,
                job_finished_at: None,
            };
            exec(&mut tx, crate::policies::task_insert(&task)).await?;
        }
        if let Some(parent) = &b.parent_id {
            // Only onto a parent still `available`: a delete that won the race leaves
            // it `deleting`, and this backup must not name it. The row-local condition
            // also holds when the delete waited for this row on PostgreSQL (it then sees
            // the new count and refuses).
            let mut sql = Sql::default();
            sql.push(
                "UPDATE backups SET num_dependent_backups = num_dependent_backups + 1 \
                 WHERE deleted = 0 AND status = 'available' AND id = ",
            )
            .bind(text(parent));
            if exec(&mut tx, sql).await? != 1 {
                return Err(CatalogError::NotFound);
            }
        }
        exec(&mut tx, job_insert(job)).await?;
        self.check_quota(
            &mut tx,
            &b.project_id,
            &[("backups", 1), ("backup_gigabytes", b.size)],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// How many live backups of `volume_id` `project_id` has, whatever their status.
    pub async fn count_volume_backups(
        &self,
        project_id: &str,
        volume_id: &str,
    ) -> Result<i64, CatalogError> {
        let mut sql = Sql::default();
        sql.push("SELECT COUNT(*) FROM backups WHERE deleted = 0 AND project_id = ")
            .bind(text(project_id))
            .push(" AND volume_id = ")
            .bind(text(volume_id));
        let row = sql.into_query().fetch_one(self.pool()).await?;
        Ok(sqlx::Row::try_get::<i64, _>(&row, 0)?)
    }

    /// The live backup of `volume_id` in `project_id` with the greatest
    /// `data_timestamp` among the `available` ones, optionally only those taken before
    /// `before` (Cinder's choice of an incremental's parent).
    pub async fn latest_available_backup(
        &self,
        project_id: &str,
        volume_id: &str,
        before: Option<i64>,
    ) -> Result<Option<BackupRecord>, CatalogError> {
        let mut sql = Sql::default();
        sql.push("SELECT ")
            .push(RECORD_COLUMNS)
            .push(" FROM backups b WHERE b.deleted = 0 AND b.status = 'available' AND b.project_id = ")
            .bind(text(project_id))
            .push(" AND b.volume_id = ")
            .bind(text(volume_id));
        if let Some(t) = before {
            sql.push(" AND b.data_timestamp < ").bind(Value::Int(t));
        }
        sql.push(" ORDER BY b.data_timestamp DESC, b.created_at DESC LIMIT 1");
        self.fetch_first(sql, record_from_row).await
    }

    /// Live backups (any project) whose parent is `id`.
    pub async fn backup_children(&self, id: &str) -> Result<u64, CatalogError> {
        let mut sql = Sql::default();
        sql.push("SELECT b.id FROM backups b WHERE b.deleted = 0 AND b.parent_id = ")
            .bind(text(id));
        Ok(self
            .fetch(sql, crate::read::Cost::Small, |r| r.text(0))
            .await?
            .len() as u64)
    }

    /// Moves a live backup from one of `from` to `to` (any status when `from` is
    /// empty), setting `fail_reason` when given (`Some(None)` clears it). Returns
    /// whether the row moved.
    pub async fn set_backup_status(
        &self,
        id: &str,
        from: &[&str],
        to: &str,
        fail_reason: Option<Option<&str>>,
    ) -> Result<bool, CatalogError> {
        let mut sql = Sql::default();
        sql.push("UPDATE backups SET status = ")
            .bind(text(to))
            .push(", updated_at = ")
            .bind(Value::Int(ts::now_micros()));
        if let Some(reason) = fail_reason {
            sql.push(", fail_reason = ");
            sql.bind_opt(reason);
        }
        sql.push(" WHERE deleted = 0 AND id = ").bind(text(id));
        if !from.is_empty() {
            sql.push(" AND status");
            push_in(&mut sql, from);
        }
        Ok(self.execute(sql).await? == 1)
    }

    /// `creating` → `available` with what was stored, and its source given back (see
    /// [`Self::release_backup_source`]), in one transaction: nobody sees the backup
    /// `available` while its volume still says `backing-up`. Returns whether the backup
    /// moved (a backup force-deleted meanwhile does not). Job `job` (the backup's) is
    /// recorded a success in the same transaction, when the backup moved. Nothing
    /// changes unless `worker` still holds the job ([`CatalogError::JobTaken`]): a run
    /// whose lease lapsed must leave the backup and its source to the node that took the
    /// job over.
    pub async fn complete_backup(
        &self,
        b: &BackupRecord,
        object_count: i64,
        service_metadata: &str,
        (job, worker): (i64, &str),
    ) -> Result<bool, CatalogError> {
        let mut sql = Sql::default();
        // A backup with no container gets the repository's default one, as Cinder's
        // drivers fill in theirs.
        sql.push(
            "UPDATE backups SET status = 'available', fail_reason = NULL, progress = NULL, \
             container = COALESCE(container, 'vbs-backups'), object_count = ",
        )
        .bind(Value::Int(object_count))
        .push(", service_metadata = ")
        .bind(text(service_metadata))
        .push(", updated_at = ")
        .bind(Value::Int(ts::now_micros()))
        .push(" WHERE deleted = 0 AND status = 'creating' AND id = ")
        .bind(text(&b.id));
        self.finish_backup(b, sql, (job, worker), JobOutcome::Success)
            .await
    }

    /// `creating` → `error` with `reason`, and its source given back, in one
    /// transaction. Returns whether the backup moved; if it did, job `job` is recorded
    /// failed with `code` in the same transaction. Fenced on `worker` holding the job,
    /// as [`Self::complete_backup`].
    pub async fn fail_backup(
        &self,
        b: &BackupRecord,
        reason: &str,
        (job, worker): (i64, &str),
        code: &str,
    ) -> Result<bool, CatalogError> {
        let mut sql = Sql::default();
        sql.push("UPDATE backups SET status = 'error', progress = NULL, fail_reason = ")
            .bind(text(reason))
            .push(", updated_at = ")
            .bind(Value::Int(ts::now_micros()))
            .push(" WHERE deleted = 0 AND status = 'creating' AND id = ")
            .bind(text(&b.id));
        self.finish_backup(b, sql, (job, worker), JobOutcome::Fail { code, reason })
            .await
    }

    /// Runs `moving` (the backup's status change) and gives its source back, in one
    /// transaction, recording `outcome` for job `job` if the backup moved; returns
    /// whether it moved.
    async fn finish_backup(
        &self,
        b: &BackupRecord,
        moving: Sql,
        (job, worker): (i64, &str),
        outcome: JobOutcome<'_>,
    ) -> Result<bool, CatalogError> {
        let mut tx = self.begin().await?;
        hold(&mut tx, job, worker).await?;
        let moved = exec(&mut tx, moving).await? == 1;
        if moved {
            exec(&mut tx, outcome_sql(job, outcome)).await?;
            exec(&mut tx, crate::policies::task_outcome_sql(job)).await?;
        }
        let release = release_source(&b.id, &b.volume_id, b.snapshot_id.as_deref());
        exec(&mut tx, release).await?;
        tx.commit().await?;
        Ok(moved)
    }

    /// Starts a delete, all or nothing: a backup in one of `from` (any status when
    /// empty) with no dependent backups (Cinder's `num_dependent_backups`, and no live
    /// child either) becomes `deleting` and its job is queued.
    pub async fn begin_backup_delete(
        &self,
        id: &str,
        from: &[&str],
        job: &NewJob,
    ) -> Result<DeleteStart, CatalogError> {
        let mut sql = Sql::default();
        sql.push("UPDATE backups SET status = 'deleting', updated_at = ")
            .bind(Value::Int(ts::now_micros()))
            .push(" WHERE deleted = 0 AND id = ")
            .bind(text(id));
        if !from.is_empty() {
            sql.push(" AND status");
            push_in(&mut sql, from);
        }
        sql.push(
            " AND num_dependent_backups = 0 AND share_count = 0 AND NOT EXISTS \
             (SELECT 1 FROM backups c WHERE c.deleted = 0 AND c.parent_id = ",
        )
        .bind(text(id))
        .push(")");
        let mut tx = self.begin().await?;
        if exec(&mut tx, sql).await? == 1 {
            exec(&mut tx, job_insert(job)).await?;
            tx.commit().await?;
            return Ok(DeleteStart::Started);
        }
        drop(tx);
        let b = self.get_backup(id, None).await?;
        let mut sql = Sql::default();
        sql.push("SELECT share_count FROM backups WHERE deleted = 0 AND id = ")
            .bind(text(id));
        if self.fetch_first(sql, |r| r.int(0)).await?.unwrap_or(0) > 0 {
            return Ok(DeleteStart::Shared);
        }
        if b.num_dependent_backups > 0 || self.backup_children(id).await? > 0 {
            Ok(DeleteStart::HasDependents)
        } else {
            Ok(DeleteStart::WrongStatus)
        }
    }

    /// Gives a backup's source back (a snapshot `backing-up` → `available`, a volume
    /// `backing-up` → its previous status), unless another live `creating` backup
    /// holds it: a job run again after its worker died must not free a volume that a
    /// newer backup is reading. One statement, so the check and the change cannot be
    /// split by another request. Returns whether it changed.
    pub async fn release_backup_source(
        &self,
        backup_id: &str,
        volume_id: &str,
        snapshot_id: Option<&str>,
    ) -> Result<bool, CatalogError> {
        Ok(self
            .execute(release_source(backup_id, volume_id, snapshot_id))
            .await?
            == 1)
    }

    /// Records (or clears) a running backup's or restore's progress (JSON).
    pub async fn set_backup_progress(
        &self,
        id: &str,
        progress: Option<&str>,
    ) -> Result<(), CatalogError> {
        let mut sql = Sql::default();
        sql.push("UPDATE backups SET progress = ");
        sql.bind_opt(progress);
        sql.push(" WHERE id = ").bind(text(id));
        self.execute(sql).await?;
        Ok(())
    }

    /// The progress JSON of a backup, if work on it is running.
    pub async fn backup_progress(&self, id: &str) -> Result<Option<String>, CatalogError> {
        let mut sql = Sql::default();
        sql.push("SELECT b.progress FROM backups b WHERE b.deleted = 0 AND b.id = ")
            .bind(text(id));
        Ok(self.fetch_first(sql, |r| r.opt_text(0)).await?.flatten())
    }

    /// Renames, redescribes and (when given) replaces the metadata of a backup.
    pub async fn update_backup(
        &self,
        id: &str,
        name: Option<Option<&str>>,
        description: Option<Option<&str>>,
        metadata: Option<&BTreeMap<String, String>>,
    ) -> Result<(), CatalogError> {
        let mut tx = self.begin().await?;
        if exec(&mut tx, rename_sql("backups", id, name, description)).await? != 1 {
            return Err(CatalogError::NotFound);
        }
        if let Some(m) = metadata {
            let mut sql = Sql::default();
            sql.push("DELETE FROM backup_metadata WHERE backup_id = ")
                .bind(text(id));
            exec(&mut tx, sql).await?;
            insert_metadata(&mut tx, "backup_metadata", "backup_id", id, m).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Soft-deletes a backup (status `deleted`) and uncounts it from its parent.
    pub async fn destroy_backup(&self, id: &str) -> Result<(), CatalogError> {
        let now = ts::now_micros();
        let mut tx = self.begin().await?;
        let mut sql = Sql::default();
        sql.push(
            "UPDATE backups SET num_dependent_backups = num_dependent_backups - 1 \
             WHERE deleted = 0 AND num_dependent_backups > 0 AND id = \
             (SELECT parent_id FROM backups WHERE deleted = 0 AND id = ",
        )
        .bind(text(id))
        .push(")");
        exec(&mut tx, sql).await?;
        let mut sql = Sql::default();
        sql.push(
            "UPDATE backups SET status = 'deleted', deleted = 1, progress = NULL, deleted_at = ",
        )
        .bind(Value::Int(now))
        .push(", updated_at = ")
        .bind(Value::Int(now))
        .push(" WHERE deleted = 0 AND id = ")
        .bind(text(id));
        exec(&mut tx, sql).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Live backups in any of `statuses`, in every project (start-up recovery).
    pub async fn backups_in_status(
        &self,
        statuses: &[&str],
    ) -> Result<Vec<BackupRecord>, CatalogError> {
        let mut sql = Sql::default();
        sql.push("SELECT ")
            .push(RECORD_COLUMNS)
            .push(" FROM backups b WHERE b.deleted = 0 AND b.status");
        push_in(&mut sql, statuses);
        self.fetch(sql, crate::read::Cost::Large, record_from_row)
            .await
    }

    /// After a restart: volumes and snapshots left busy by backup work that no longer
    /// exists go back to what they were (`restoring-backup` becomes
    /// `error_restoring`: its bytes are half written). Only rows last changed before
    /// `stale_before` move (a request between its status move and its job is not an
    /// orphan). Returns how many moved.
    pub async fn release_orphaned_sources(&self, stale_before: i64) -> Result<u64, CatalogError> {
        let now = ts::now_micros();
        let stale = |sql: &mut Sql| {
            sql.push(" AND (updated_at IS NULL OR updated_at < ")
                .bind(Value::Int(stale_before))
                .push(")");
        };
        let mut n = 0;
        let mut sql = Sql::default();
        sql.push(
            "UPDATE volumes SET status = COALESCE(previous_status, 'available'), \
             previous_status = NULL, updated_at = ",
        )
        .bind(Value::Int(now))
        .push(
            " WHERE deleted = 0 AND status = 'backing-up' AND id NOT IN \
             (SELECT volume_id FROM backups WHERE deleted = 0 AND status = 'creating')",
        );
        stale(&mut sql);
        n += self.execute(sql).await?;
        let mut sql = Sql::default();
        sql.push(
            "UPDATE volumes SET status = 'error_restoring', previous_status = NULL, updated_at = ",
        )
        .bind(Value::Int(now))
        .push(
            " WHERE deleted = 0 AND status = 'restoring-backup' AND id NOT IN \
                 (SELECT volume_id FROM jobs WHERE kind = 'restore' AND state <> 'done' \
                 AND volume_id IS NOT NULL)",
        );
        stale(&mut sql);
        n += self.execute(sql).await?;
        let mut sql = Sql::default();
        sql.push("UPDATE snapshots SET status = 'available', updated_at = ")
            .bind(Value::Int(now))
            .push(
                " WHERE deleted = 0 AND status = 'backing-up' AND id NOT IN \
                 (SELECT snapshot_id FROM backups WHERE deleted = 0 AND status = 'creating' \
                 AND snapshot_id IS NOT NULL)",
            );
        stale(&mut sql);
        n += self.execute(sql).await?;
        Ok(n)
    }

    /// Ends a restore, all in one transaction: the backup `restoring` → `available`
    /// (with the failure's reason, or none), the volume `restoring-backup` → its end
    /// status, and a restored volume other than the backup's own source remembers the
    /// backup (`src_backup_id`, as Cinder does). Nobody sees one end without the other.
    /// Nothing changes unless `worker` still holds job `job` ([`CatalogError::JobTaken`]).
    pub async fn finish_restore(
        &self,
        backup_id: &str,
        volume_id: &str,
        end: RestoreEnd<'_>,
        (job, worker): (i64, &str),
    ) -> Result<(), CatalogError> {
        let now = ts::now_micros();
        let (reason, volume_status, outcome) = match end {
            RestoreEnd::Done { .. } => (None, "available", JobOutcome::Success),
            RestoreEnd::Failed {
                reason,
                volume_status,
            } => (
                Some(reason),
                volume_status,
                JobOutcome::Fail {
                    code: "VolumeBackup.0200",
                    reason,
                },
            ),
        };
        let mut tx = self.begin().await?;
        hold(&mut tx, job, worker).await?;
        if let RestoreEnd::Done {
            record_source,
            volume_metadata,
        } = end
        {
            // The source volume's metadata as the backup saw it replaces the target's,
            // as Cinder's restore of a backup's volume metadata does.
            if let Some(saved) = volume_metadata {
                let mut sql = Sql::default();
                sql.push("DELETE FROM volume_metadata WHERE volume_id = ")
                    .bind(text(volume_id));
                exec(&mut tx, sql).await?;
                let saved: BTreeMap<String, String> = saved
                    .iter()
                    .filter(|(k, _)| *k != "src_backup_id")
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                insert_metadata(&mut tx, "volume_metadata", "volume_id", volume_id, &saved).await?;
            }
            if record_source {
                let mut sql = Sql::default();
                sql.push("DELETE FROM volume_metadata WHERE volume_id = ")
                    .bind(text(volume_id))
                    .push(" AND key = 'src_backup_id'");
                exec(&mut tx, sql).await?;
                let one = BTreeMap::from([("src_backup_id".to_owned(), backup_id.to_owned())]);
                insert_metadata(&mut tx, "volume_metadata", "volume_id", volume_id, &one).await?;
            }
        }
        let mut sql = Sql::default();
        sql.push("UPDATE backups SET status = 'available', progress = NULL, fail_reason = ");
        sql.bind_opt(reason);
        sql.push(", updated_at = ")
            .bind(Value::Int(now))
            .push(" WHERE deleted = 0 AND status = 'restoring' AND id = ")
            .bind(text(backup_id));
        if exec(&mut tx, sql).await? == 1 {
            exec(&mut tx, outcome_sql(job, outcome)).await?;
        }
        let mut sql = Sql::default();
        sql.push("UPDATE volumes SET previous_status = NULL, status = ")
            .bind(text(volume_status))
            .push(", updated_at = ")
            .bind(Value::Int(now))
            .push(" WHERE deleted = 0 AND status = 'restoring-backup' AND id = ")
            .bind(text(volume_id));
        exec(&mut tx, sql).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// How a restore ended ([`Catalog::finish_restore`]).
#[derive(Debug, Clone, Copy)]
pub enum RestoreEnd<'a> {
    /// Every block written and verified; the volume takes `volume_metadata` (the
    /// source volume's when the backup recorded it) and, when `record_source`, the
    /// backup's id as `src_backup_id`.
    Done {
        record_source: bool,
        volume_metadata: Option<&'a BTreeMap<String, String>>,
    },
    /// Failed; the volume ends `volume_status` (`error` for a volume made for the
    /// restore, else `error_restoring`).
    Failed {
        reason: &'a str,
        volume_status: &'a str,
    },
}

/// The statement of [`Catalog::release_backup_source`].
fn release_source(backup_id: &str, volume_id: &str, snapshot_id: Option<&str>) -> Sql {
    let mut sql = Sql::default();
    match snapshot_id {
        Some(s) => {
            sql.push("UPDATE snapshots SET status = 'available', updated_at = ")
                .bind(Value::Int(ts::now_micros()))
                .push(" WHERE deleted = 0 AND status = 'backing-up' AND id = ")
                .bind(text(s))
                .push(
                    " AND NOT EXISTS (SELECT 1 FROM backups o WHERE o.deleted = 0 \
                     AND o.status = 'creating' AND o.snapshot_id = ",
                )
                .bind(text(s));
        }
        None => {
            sql.push(
                "UPDATE volumes SET status = COALESCE(previous_status, 'available'), \
                 previous_status = NULL, updated_at = ",
            )
            .bind(Value::Int(ts::now_micros()))
            .push(" WHERE deleted = 0 AND status = 'backing-up' AND id = ")
            .bind(text(volume_id))
            .push(
                " AND NOT EXISTS (SELECT 1 FROM backups o WHERE o.deleted = 0 \
                 AND o.status = 'creating' AND o.snapshot_id IS NULL AND o.volume_id = ",
            )
            .bind(text(volume_id));
        }
    }
    sql.push(" AND o.id <> ").bind(text(backup_id)).push(")");
    sql
}
