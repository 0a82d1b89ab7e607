//! Backup policies, the disks they protect, their tags, the slots they fired and the
//! tasks of their runs (VBS spec 03 §5).
//!
//! Exactly once: a slot is claimed by inserting its `policy_slots` row (its key
//! refuses a second claim, from any node) in the transaction that queues the run's
//! job, so the claim and the work stand or fall together. A run that dies is taken
//! over with its job's lease; its backups record their task in the transaction that
//! creates them ([`crate::NewBackup::policy_task`]), and the key of `policy_tasks`
//! (policy, slot, disk) refuses a second backup of one disk for one slot.

use sqlx::Row as _;

use crate::jobs::{NewJob, job_insert};
use crate::listing::List;
use crate::read::{Cost, DbRow, Sql, Value, text};
use crate::write::exec;
use crate::{Catalog, CatalogError, ts};

/// A policy as stored. Optional fields are those the user never set.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PolicyRecord {
    pub id: String,
    pub project_id: String,
    pub user_id: Option<String>,
    pub name: String,
    /// UTC hours, `HH:mm` comma-separated, as given.
    pub start_time: String,
    pub frequency: Option<i64>,
    /// Weekdays `SUN`…`SAT`, comma-separated.
    pub week_frequency: Option<String>,
    pub retention_num: Option<i64>,
    pub retention_day: Option<i64>,
    /// `Y` or `N` when set.
    pub keep_first_of_month: Option<String>,
    /// `ON` or `OFF`.
    pub status: String,
    /// `UTC+HH:mm` when set.
    pub time_zone: Option<String>,
    /// Slots at or before this instant (µs) are never fired.
    pub scheduled_from: i64,
    pub created_at: i64,
    pub updated_at: Option<i64>,
    /// Associated disks (list output).
    pub resource_count: i64,
}

const POLICY_COLUMNS: &str = "p.id, p.project_id, p.user_id, p.name, p.start_time, p.frequency, \
     p.week_frequency, p.retention_num, p.retention_day, p.keep_first_of_month, p.status, \
     p.time_zone, p.scheduled_from, p.created_at, p.updated_at, \
     (SELECT COUNT(*) FROM policy_resources r WHERE r.policy_id = p.id)";

fn policy_from_row(r: &dyn DbRow) -> Result<PolicyRecord, CatalogError> {
    Ok(PolicyRecord {
        id: r.text(0)?,
        project_id: r.text(1)?,
        user_id: r.opt_text(2)?,
        name: r.text(3)?,
        start_time: r.text(4)?,
        frequency: r.opt_int(5)?,
        week_frequency: r.opt_text(6)?,
        retention_num: r.opt_int(7)?,
        retention_day: r.opt_int(8)?,
        keep_first_of_month: r.opt_text(9)?,
        status: r.text(10)?,
        time_zone: r.opt_text(11)?,
        scheduled_from: r.int(12)?,
        created_at: r.int(13)?,
        updated_at: r.opt_int(14)?,
        resource_count: r.int(15)?,
    })
}

/// A disk associated with a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyResource {
    pub volume_id: String,
    pub policy_id: String,
    pub project_id: String,
}

/// Why an association was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssociateRefused {
    /// The disk belongs to a policy already (this one or another).
    Taken,
    /// The policy has `limit` disks already.
    Full,
}

/// The task a policy backup records with itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyTaskRef {
    pub id: String,
    pub policy_id: String,
    pub slot: i64,
    pub run_job_id: Option<String>,
}

/// A task of a policy run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyTask {
    pub id: String,
    pub policy_id: String,
    pub slot: i64,
    pub volume_id: String,
    pub run_job_id: Option<String>,
    /// `RUNNING` for a task with a backup (its job says more), else `SKIP` or
    /// `EXECUTE_FAIL`.
    pub status: String,
    pub message: Option<String>,
    pub backup_id: Option<String>,
    pub backup_name: Option<String>,
    pub vbs_job_id: Option<String>,
    pub created_at: i64,
    pub finished_at: Option<i64>,
    /// The backup job's state and outcome (`queued`/`running`/`done`,
    /// `success`/`fail`), when it has one.
    pub job_state: Option<String>,
    pub job_outcome: Option<String>,
    pub job_finished_at: Option<i64>,
}

const TASK_COLUMNS: &str = "t.id, t.policy_id, t.slot, t.volume_id, t.run_job_id, t.status, \
     t.message, t.backup_id, t.backup_name, t.vbs_job_id, t.created_at, t.finished_at, \
     j.state, j.outcome, j.finished_at";

fn task_from_row(r: &dyn DbRow) -> Result<PolicyTask, CatalogError> {
    Ok(PolicyTask {
        id: r.text(0)?,
        policy_id: r.text(1)?,
        slot: r.int(2)?,
        volume_id: r.text(3)?,
        run_job_id: r.opt_text(4)?,
        status: r.text(5)?,
        message: r.opt_text(6)?,
        backup_id: r.opt_text(7)?,
        backup_name: r.opt_text(8)?,
        vbs_job_id: r.opt_text(9)?,
        created_at: r.int(10)?,
        finished_at: r.opt_int(11)?,
        job_state: r.opt_text(12)?,
        job_outcome: r.opt_text(13)?,
        job_finished_at: r.opt_int(14)?,
    })
}

/// Filters and paging of a policy's task list.
#[derive(Debug, Clone, Default)]
pub struct TaskQuery {
    pub policy_id: String,
    pub job_id: Option<String>,
    /// VBS task status: `WAITING`, `RUNNING`, `EXECUTE_SUCCESS`, `EXECUTE_FAIL`,
    /// `EXECUTE_TIMEOUT`, `SKIP`.
    pub status: Option<String>,
    pub ascending: bool,
    pub marker: Option<String>,
    pub offset: u64,
    pub limit: Option<u64>,
}

/// A policy backup of one disk, for retention: its backup, the slot it was taken for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyBackup {
    pub backup_id: String,
    pub slot: i64,
    pub status: String,
}

/// The SQL that inserts a task row (`created_at` now).
pub(crate) fn task_insert(t: &PolicyTask) -> Sql {
    let mut sql = Sql::default();
    sql.push(
        "INSERT INTO policy_tasks (id, policy_id, slot, volume_id, run_job_id, status, message, \
         backup_id, backup_name, vbs_job_id, created_at, finished_at) VALUES (",
    )
    .bind(text(&t.id))
    .push(", ")
    .bind(text(&t.policy_id))
    .push(", ")
    .bind(Value::Int(t.slot))
    .push(", ")
    .bind(text(&t.volume_id))
    .push(", ");
    sql.bind_opt(t.run_job_id.as_deref());
    sql.push(", ").bind(text(&t.status)).push(", ");
    for v in [
        t.message.as_deref(),
        t.backup_id.as_deref(),
        t.backup_name.as_deref(),
        t.vbs_job_id.as_deref(),
    ] {
        sql.bind_opt(v);
        sql.push(", ");
    }
    sql.bind(Value::Int(t.created_at)).push(", ");
    match t.finished_at {
        Some(f) => sql.bind(Value::Int(f)),
        None => sql.push("NULL"),
    };
    sql.push(")");
    sql
}

fn bind_opt_int(sql: &mut Sql, v: Option<i64>) {
    match v {
        Some(v) => sql.bind(Value::Int(v)),
        None => sql.push("NULL"),
    };
}

impl Catalog {
    /// Creates a policy with its tags, unless `project` has `limit` policies already
    /// (`false`): the count and the insert are one transaction.
    pub async fn create_policy(
        &self,
        p: &PolicyRecord,
        tags: &[(String, String)],
        limit: i64,
    ) -> Result<bool, CatalogError> {
        let mut tx = self.begin().await?;
        let mut sql = Sql::default();
        sql.push("SELECT COUNT(*) FROM backup_policies WHERE project_id = ")
            .bind(text(&p.project_id));
        if crate::write::query_int(&mut tx, sql).await? >= limit {
            return Ok(false);
        }
        let mut sql = Sql::default();
        sql.push(
            "INSERT INTO backup_policies (id, project_id, user_id, name, start_time, frequency, \
             week_frequency, retention_num, retention_day, keep_first_of_month, status, \
             time_zone, scheduled_from, created_at, updated_at) VALUES (",
        )
        .bind(text(&p.id))
        .push(", ")
        .bind(text(&p.project_id))
        .push(", ");
        sql.bind_opt(p.user_id.as_deref());
        sql.push(", ")
            .bind(text(&p.name))
            .push(", ")
            .bind(text(&p.start_time))
            .push(", ");
        self.push_schedule_values(&mut sql, p);
        sql.push(", ")
            .bind(Value::Int(p.created_at))
            .push(", NULL)");
        exec(&mut tx, sql).await?;
        for (k, v) in tags {
            exec(&mut tx, tag_upsert(&p.id, k, v)).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// `frequency … scheduled_from` of an insert.
    #[allow(clippy::unused_self)]
    fn push_schedule_values(&self, sql: &mut Sql, p: &PolicyRecord) {
        bind_opt_int(sql, p.frequency);
        sql.push(", ");
        sql.bind_opt(p.week_frequency.as_deref());
        sql.push(", ");
        bind_opt_int(sql, p.retention_num);
        sql.push(", ");
        bind_opt_int(sql, p.retention_day);
        sql.push(", ");
        sql.bind_opt(p.keep_first_of_month.as_deref());
        sql.push(", ").bind(text(&p.status)).push(", ");
        sql.bind_opt(p.time_zone.as_deref());
        sql.push(", ").bind(Value::Int(p.scheduled_from));
    }

    /// Replaces a policy's settings (name, schedule, status, zone) with `p`'s.
    pub async fn update_policy(&self, p: &PolicyRecord) -> Result<(), CatalogError> {
        let mut sql = Sql::default();
        sql.push("UPDATE backup_policies SET name = ")
            .bind(text(&p.name))
            .push(", start_time = ")
            .bind(text(&p.start_time))
            .push(", frequency = ");
        bind_opt_int(&mut sql, p.frequency);
        sql.push(", week_frequency = ");
        sql.bind_opt(p.week_frequency.as_deref());
        sql.push(", retention_num = ");
        bind_opt_int(&mut sql, p.retention_num);
        sql.push(", retention_day = ");
        bind_opt_int(&mut sql, p.retention_day);
        sql.push(", keep_first_of_month = ");
        sql.bind_opt(p.keep_first_of_month.as_deref());
        sql.push(", status = ")
            .bind(text(&p.status))
            .push(", time_zone = ");
        sql.bind_opt(p.time_zone.as_deref());
        sql.push(", scheduled_from = ")
            .bind(Value::Int(p.scheduled_from))
            .push(", updated_at = ")
            .bind(Value::Int(ts::now_micros()))
            .push(" WHERE id = ")
            .bind(text(&p.id));
        if self.execute(sql).await? == 0 {
            return Err(CatalogError::NotFound);
        }
        Ok(())
    }

    /// A policy; with `project`, only that project's.
    pub async fn get_policy(
        &self,
        id: &str,
        project: Option<&str>,
    ) -> Result<PolicyRecord, CatalogError> {
        let mut sql = Sql::default();
        sql.push("SELECT ")
            .push(POLICY_COLUMNS)
            .push(" FROM backup_policies p WHERE p.id = ")
            .bind(text(id));
        if let Some(project) = project {
            sql.push(" AND p.project_id = ").bind(text(project));
        }
        self.fetch_first(sql, policy_from_row)
            .await?
            .ok_or(CatalogError::NotFound)
    }

    /// A project's policies, oldest first; every project's with `None`.
    pub async fn list_policies(
        &self,
        project: Option<&str>,
    ) -> Result<Vec<PolicyRecord>, CatalogError> {
        let mut sql = Sql::default();
        sql.push("SELECT ")
            .push(POLICY_COLUMNS)
            .push(" FROM backup_policies p");
        if let Some(project) = project {
            sql.push(" WHERE p.project_id = ").bind(text(project));
        }
        sql.push(" ORDER BY p.created_at, p.id");
        self.fetch(sql, Cost::Small, policy_from_row).await
    }

    /// Deletes a policy with its associations and tags (its backups, slots and tasks
    /// stay as history).
    pub async fn delete_policy(&self, id: &str) -> Result<(), CatalogError> {
        let mut tx = self.begin().await?;
        for table in ["policy_resources", "policy_tags"] {
            let mut sql = Sql::default();
            sql.push("DELETE FROM ")
                .push(table)
                .push(" WHERE policy_id = ")
                .bind(text(id));
            exec(&mut tx, sql).await?;
        }
        let mut sql = Sql::default();
        sql.push("DELETE FROM backup_policies WHERE id = ")
            .bind(text(id));
        let n = exec(&mut tx, sql).await?;
        tx.commit().await?;
        if n == 0 {
            return Err(CatalogError::NotFound);
        }
        Ok(())
    }

    /// Associates a disk, unless it belongs to a policy already or the policy has
    /// `limit` disks: one transaction, and the disk's key refuses a second policy.
    pub async fn associate_volume(
        &self,
        r: &PolicyResource,
        limit: i64,
    ) -> Result<Result<(), AssociateRefused>, CatalogError> {
        let mut tx = self.begin().await?;
        let mut sql = Sql::default();
        sql.push("SELECT COUNT(*) FROM policy_resources WHERE policy_id = ")
            .bind(text(&r.policy_id));
        if crate::write::query_int(&mut tx, sql).await? >= limit {
            return Ok(Err(AssociateRefused::Full));
        }
        let mut sql = Sql::default();
        sql.push(
            "INSERT INTO policy_resources (volume_id, policy_id, project_id, created_at) VALUES (",
        )
        .bind(text(&r.volume_id))
        .push(", ")
        .bind(text(&r.policy_id))
        .push(", ")
        .bind(text(&r.project_id))
        .push(", ")
        .bind(Value::Int(ts::now_micros()))
        .push(")");
        match exec(&mut tx, sql).await {
            Ok(_) => {}
            Err(CatalogError::AlreadyExists) => return Ok(Err(AssociateRefused::Taken)),
            Err(e) => return Err(e),
        }
        tx.commit().await?;
        Ok(Ok(()))
    }

    /// Removes a disk from a policy; `false` if it was not associated with it.
    pub async fn disassociate_volume(
        &self,
        policy_id: &str,
        volume_id: &str,
    ) -> Result<bool, CatalogError> {
        let mut sql = Sql::default();
        sql.push("DELETE FROM policy_resources WHERE policy_id = ")
            .bind(text(policy_id))
            .push(" AND volume_id = ")
            .bind(text(volume_id));
        Ok(self.execute(sql).await? == 1)
    }

    /// The disks of a policy, in association order.
    pub async fn policy_volumes(&self, policy_id: &str) -> Result<Vec<String>, CatalogError> {
        let mut sql = Sql::default();
        sql.push("SELECT volume_id FROM policy_resources WHERE policy_id = ")
            .bind(text(policy_id))
            .push(" ORDER BY created_at, volume_id");
        self.fetch(sql, Cost::Small, |r| r.text(0)).await
    }

    /// The policy a disk belongs to, if any.
    pub async fn volume_policy(&self, volume_id: &str) -> Result<Option<String>, CatalogError> {
        let mut sql = Sql::default();
        sql.push("SELECT policy_id FROM policy_resources WHERE volume_id = ")
            .bind(text(volume_id));
        self.fetch_first(sql, |r| r.text(0)).await
    }

    // ---- tags -------------------------------------------------------------------

    /// Sets tags (a key's value replaced) of a policy, unless it would then carry
    /// more than `limit` (`false`).
    pub async fn upsert_policy_tags(
        &self,
        policy_id: &str,
        tags: &[(String, String)],
        limit: i64,
    ) -> Result<bool, CatalogError> {
        let mut tx = self.begin().await?;
        for (k, v) in tags {
            exec(&mut tx, tag_upsert(policy_id, k, v)).await?;
        }
        let mut sql = Sql::default();
        sql.push("SELECT COUNT(*) FROM policy_tags WHERE policy_id = ")
            .bind(text(policy_id));
        if crate::write::query_int(&mut tx, sql).await? > limit {
            return Ok(false);
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Removes tags; a `(key, Some(value))` only if its value is that. Returns how
    /// many went.
    pub async fn delete_policy_tags(
        &self,
        policy_id: &str,
        tags: &[(String, Option<String>)],
    ) -> Result<u64, CatalogError> {
        let mut tx = self.begin().await?;
        let mut n = 0;
        for (k, v) in tags {
            let mut sql = Sql::default();
            sql.push("DELETE FROM policy_tags WHERE policy_id = ")
                .bind(text(policy_id))
                .push(" AND key = ")
                .bind(text(k));
            if let Some(v) = v {
                sql.push(" AND value = ").bind(text(v));
            }
            n += exec(&mut tx, sql).await?;
        }
        tx.commit().await?;
        Ok(n)
    }

    /// The tags of the policies `ids` (every policy of `project` with `ids` empty),
    /// as `(policy, key, value)` sorted by policy and key.
    pub async fn policy_tags(
        &self,
        project: &str,
        ids: &[&str],
    ) -> Result<Vec<(String, String, String)>, CatalogError> {
        let mut sql = Sql::default();
        sql.push(
            "SELECT t.policy_id, t.key, t.value FROM policy_tags t JOIN backup_policies p \
             ON p.id = t.policy_id WHERE p.project_id = ",
        )
        .bind(text(project));
        if !ids.is_empty() {
            sql.push(" AND t.policy_id");
            crate::volumes::push_in(&mut sql, ids);
        }
        sql.push(" ORDER BY t.policy_id, t.key");
        self.fetch(sql, Cost::Small, |r| {
            Ok((r.text(0)?, r.text(1)?, r.text(2)?))
        })
        .await
    }

    // ---- slots and runs -----------------------------------------------------------

    /// Claims `slot` of a policy and queues its run `job`, in one transaction;
    /// `false` if any node claimed it before. `manual`: a run asked for now (execute
    /// now), which does not count as the scheduler's last slot.
    pub async fn claim_policy_slot(
        &self,
        policy_id: &str,
        slot: i64,
        node: &str,
        job: &NewJob,
        manual: bool,
    ) -> Result<bool, CatalogError> {
        let state = if manual { "manual" } else { "fired" };
        let mut tx = self.begin().await?;
        if !insert_slot(&mut tx, policy_id, slot, state, Some(&job.id), node).await? {
            return Ok(false);
        }
        exec(&mut tx, job_insert(job)).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Records a slot that was passed over (the scheduler was down for longer than a
    /// period) with a `SKIP` task per disk; `false` if any node recorded it before.
    pub async fn skip_policy_slot(
        &self,
        policy_id: &str,
        slot: i64,
        node: &str,
        tasks: &[PolicyTask],
    ) -> Result<bool, CatalogError> {
        let mut tx = self.begin().await?;
        if !insert_slot(&mut tx, policy_id, slot, "skipped", None, node).await? {
            return Ok(false);
        }
        for t in tasks {
            exec(&mut tx, task_insert(t)).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// The newest scheduled slot a policy fired or skipped (runs asked for by hand
    /// aside).
    pub async fn last_policy_slot(&self, policy_id: &str) -> Result<Option<i64>, CatalogError> {
        let mut sql = Sql::default();
        sql.push("SELECT MAX(slot) FROM policy_slots WHERE state <> 'manual' AND policy_id = ")
            .bind(text(policy_id));
        let row = sql.into_query().fetch_one(self.pool()).await?;
        Ok(row.try_get::<Option<i64>, _>(0)?)
    }

    /// How many slots a policy fired and skipped (tests count them).
    pub async fn policy_slots(&self, policy_id: &str) -> Result<Vec<(i64, String)>, CatalogError> {
        let mut sql = Sql::default();
        sql.push("SELECT slot, state FROM policy_slots WHERE policy_id = ")
            .bind(text(policy_id))
            .push(" ORDER BY slot");
        let rows = sql.into_query().fetch_all(self.pool()).await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    /// Records a task without a backup (`SKIP`, `EXECUTE_FAIL`); `false` if the run
    /// recorded one for this disk and slot already.
    pub async fn record_policy_task(&self, t: &PolicyTask) -> Result<bool, CatalogError> {
        match self.execute(task_insert(t)).await {
            Ok(_) => Ok(true),
            Err(CatalogError::AlreadyExists) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The task of a disk in a run, if recorded.
    pub async fn policy_task_of(
        &self,
        policy_id: &str,
        slot: i64,
        volume_id: &str,
    ) -> Result<Option<PolicyTask>, CatalogError> {
        let mut sql = Sql::default();
        sql.push("SELECT ")
            .push(TASK_COLUMNS)
            .push(
                " FROM policy_tasks t LEFT JOIN jobs j ON j.id = t.vbs_job_id WHERE t.policy_id = ",
            )
            .bind(text(policy_id))
            .push(" AND t.slot = ")
            .bind(Value::Int(slot))
            .push(" AND t.volume_id = ")
            .bind(text(volume_id));
        let row = sql.into_query().fetch_optional(self.pool()).await?;
        row.as_ref().map(|r| task_from_row(r)).transpose()
    }

    /// Whether a backup a policy started for this disk has not finished yet.
    pub async fn policy_volume_busy(
        &self,
        policy_id: &str,
        volume_id: &str,
    ) -> Result<bool, CatalogError> {
        let mut sql = Sql::default();
        sql.push(
            "SELECT COUNT(*) FROM policy_tasks t JOIN jobs j ON j.id = t.vbs_job_id \
             WHERE j.state <> 'done' AND j.outcome IS NULL AND t.policy_id = ",
        )
        .bind(text(policy_id))
        .push(" AND t.volume_id = ")
        .bind(text(volume_id));
        let row = sql.into_query().fetch_one(self.pool()).await?;
        Ok(row.try_get::<i64, _>(0)? > 0)
    }

    /// Whether a run of the policy (its job, or a backup it started) has not finished.
    pub async fn policy_running(&self, policy_id: &str) -> Result<bool, CatalogError> {
        let mut sql = Sql::default();
        sql.push(
            "SELECT COUNT(*) FROM jobs j WHERE j.state <> 'done' AND j.outcome IS NULL AND \
             (j.id IN (SELECT s.job_id FROM policy_slots s WHERE s.policy_id = ",
        )
        .bind(text(policy_id))
        .push(") OR j.id IN (SELECT t.vbs_job_id FROM policy_tasks t WHERE t.policy_id = ")
        .bind(text(policy_id))
        .push("))");
        let row = sql.into_query().fetch_one(self.pool()).await?;
        Ok(row.try_get::<i64, _>(0)? > 0)
    }

    /// A policy's tasks, filtered and paged, with the total that matched.
    pub async fn list_policy_tasks(
        &self,
        q: &TaskQuery,
    ) -> Result<(Vec<PolicyTask>, u64), CatalogError> {
        let mut list = List::new(
            TASK_COLUMNS,
            "policy_tasks t LEFT JOIN jobs j ON j.id = t.vbs_job_id",
            "t.id",
        );
        list.eq("t.policy_id", text(&q.policy_id))
            .eq_opt("t.id", q.job_id.as_deref())
            .sort("t.created_at", !q.ascending)
            .page(q.offset, q.limit);
        match q.status.as_deref() {
            None => {}
            Some("WAITING") => {
                list.when("t.status = 'RUNNING' AND j.state = 'queued'");
            }
            Some("RUNNING") => {
                list.when("t.status = 'RUNNING' AND (j.state IS NULL OR j.state <> 'queued')");
            }
            Some(other) => {
                list.eq("t.status", text(other));
            }
        }
        let total = self.count_of(&list).await?;
        if let Some(marker) = &q.marker {
            let keyset = self
                .keyset_of(
                    "policy_tasks",
                    "created_at",
                    marker,
                    None,
                    &[("policy_id", q.policy_id.as_str())],
                )
                .await?;
            list.after(keyset);
        }
        let tasks = self
            .fetch(list.select(self.dialect()), Cost::Large, task_from_row)
            .await?;
        Ok((tasks, total))
    }

    /// The backups a policy made of a disk that still exist, newest slot first.
    pub async fn policy_backups(
        &self,
        policy_id: &str,
        volume_id: &str,
    ) -> Result<Vec<PolicyBackup>, CatalogError> {
        let mut sql = Sql::default();
        sql.push(
            "SELECT t.backup_id, t.slot, b.status FROM policy_tasks t JOIN backups b \
             ON b.id = t.backup_id AND b.deleted = 0 WHERE t.policy_id = ",
        )
        .bind(text(policy_id))
        .push(" AND t.volume_id = ")
        .bind(text(volume_id))
        .push(" ORDER BY t.slot DESC, t.created_at DESC");
        let rows = sql.into_query().fetch_all(self.pool()).await?;
        rows.iter()
            .map(|r| {
                Ok(PolicyBackup {
                    backup_id: r.try_get(0)?,
                    slot: r.try_get(1)?,
                    status: r.try_get(2)?,
                })
            })
            .collect()
    }

    /// The policy and disk a backup was made for, if a policy made it.
    pub async fn policy_of_backup(
        &self,
        backup_id: &str,
    ) -> Result<Option<(String, String)>, CatalogError> {
        let mut sql = Sql::default();
        sql.push("SELECT policy_id, volume_id FROM policy_tasks WHERE backup_id = ")
            .bind(text(backup_id));
        let row = sql.into_query().fetch_optional(self.pool()).await?;
        row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).transpose()
    }

    /// Starts the delete of a policy backup that retention let go, through the API's
    /// path (`deleting`, then its job, then GC), all or nothing. Unlike a user's
    /// delete, a backup that incrementals name as their parent may go: every backup's
    /// manifest names all of its blocks, so the children still restore on their own;
    /// they are re-pointed to the backup's own parent so that the chain stays whole
    /// and the counts of dependents stay right. `false`: it is no longer `available`, or
    /// it is shared with other projects (never pruned).
    pub async fn begin_prune(&self, backup_id: &str, job: &NewJob) -> Result<bool, CatalogError> {
        let now = ts::now_micros();
        let mut tx = self.begin().await?;
        let mut sql = Sql::default();
        sql.push("UPDATE backups SET status = 'deleting', updated_at = ")
            .bind(Value::Int(now))
            .push(" WHERE deleted = 0 AND status = 'available' AND share_count = 0 AND id = ")
            .bind(text(backup_id));
        if exec(&mut tx, sql).await? != 1 {
            return Ok(false);
        }
        let mut sql = Sql::default();
        sql.push("SELECT parent_id FROM backups WHERE id = ")
            .bind(text(backup_id));
        let row = sql.into_query().fetch_one(&mut *tx).await?;
        let parent: Option<String> = row.try_get(0)?;
        let mut sql = Sql::default();
        sql.push("SELECT COUNT(*) FROM backups WHERE deleted = 0 AND parent_id = ")
            .bind(text(backup_id));
        let children = crate::write::query_int(&mut tx, sql).await?;
        if children > 0 {
            let mut sql = Sql::default();
            sql.push("UPDATE backups SET parent_id = ");
            sql.bind_opt(parent.as_deref());
            sql.push(" WHERE deleted = 0 AND parent_id = ")
                .bind(text(backup_id));
            exec(&mut tx, sql).await?;
            if let Some(p) = &parent {
                let mut sql = Sql::default();
                sql.push("UPDATE backups SET num_dependent_backups = num_dependent_backups + ")
                    .bind(Value::Int(children))
                    .push(" WHERE id = ")
                    .bind(text(p));
                exec(&mut tx, sql).await?;
            }
        }
        let mut sql = Sql::default();
        sql.push("UPDATE backups SET num_dependent_backups = 0 WHERE id = ")
            .bind(text(backup_id));
        exec(&mut tx, sql).await?;
        exec(&mut tx, job_insert(job)).await?;
        tx.commit().await?;
        Ok(true)
    }
}

/// Ends the task of the backup job `pk` as the job ended (`EXECUTE_SUCCESS` or
/// `EXECUTE_FAIL`): for the transaction that records the job's outcome.
pub(crate) fn task_outcome_sql(pk: i64) -> Sql {
    let mut sql = Sql::default();
    sql.push(
        "UPDATE policy_tasks SET status = (SELECT CASE j.outcome WHEN 'success' THEN \
         'EXECUTE_SUCCESS' ELSE 'EXECUTE_FAIL' END FROM jobs j WHERE j.pk = ",
    )
    .bind(Value::Int(pk))
    .push("), finished_at = ")
    .bind(Value::Int(ts::now_micros()))
    .push(
        " WHERE status = 'RUNNING' AND vbs_job_id = (SELECT j.id FROM jobs j WHERE \
         j.outcome IS NOT NULL AND j.pk = ",
    )
    .bind(Value::Int(pk))
    .push(")");
    sql
}

fn tag_upsert(policy_id: &str, key: &str, value: &str) -> Sql {
    let mut sql = Sql::default();
    sql.push("INSERT INTO policy_tags (policy_id, key, value) VALUES (")
        .bind(text(policy_id))
        .push(", ")
        .bind(text(key))
        .push(", ")
        .bind(text(value))
        .push(") ON CONFLICT (policy_id, key) DO UPDATE SET value = excluded.value");
    sql
}

async fn insert_slot(
    tx: &mut crate::write::Tx,
    policy_id: &str,
    slot: i64,
    state: &str,
    job_id: Option<&str>,
    node: &str,
) -> Result<bool, CatalogError> {
    let mut sql = Sql::default();
    sql.push(
        "INSERT INTO policy_slots (policy_id, slot, state, job_id, node, created_at) VALUES (",
    )
    .bind(text(policy_id))
    .push(", ")
    .bind(Value::Int(slot))
    .push(", ")
    .bind(text(state))
    .push(", ");
    sql.bind_opt(job_id);
    sql.push(", ")
        .bind(text(node))
        .push(", ")
        .bind(Value::Int(ts::now_micros()))
        .push(") ON CONFLICT (policy_id, slot) DO NOTHING");
    Ok(exec(tx, sql).await? == 1)
}
