//! Snapshot records: create (checked against the volume's status in the same
//! transaction), read, list, status changes and soft delete.

use std::collections::BTreeMap;

use crate::listing::List;
use crate::read::{Cost, DbRow, Sql, Value, text};
use crate::volumes::{insert_metadata, push_in};
use crate::write::exec;
use crate::{Catalog, CatalogError, ts};

/// Every stored field of a live snapshot, with its metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRecord {
    pub id: String,
    pub project_id: String,
    pub user_id: Option<String>,
    pub volume_id: String,
    pub display_name: Option<String>,
    pub display_description: Option<String>,
    /// The volume's size when the snapshot was taken, GiB.
    pub size: i64,
    pub status: String,
    pub progress: Option<String>,
    /// The snapshot's image file.
    pub provider_location: Option<String>,
    pub created_at: i64,
    pub updated_at: Option<i64>,
    pub metadata: BTreeMap<String, String>,
}

/// A snapshot to insert.
#[derive(Debug, Clone, Default)]
pub struct NewSnapshot {
    pub id: String,
    pub project_id: String,
    pub user_id: Option<String>,
    pub volume_id: String,
    pub display_name: Option<String>,
    pub display_description: Option<String>,
    pub size: i64,
    pub status: String,
    pub progress: String,
    pub metadata: BTreeMap<String, String>,
}

/// A list of snapshots in the default order (newest first).
#[derive(Debug, Clone, Default)]
pub struct SnapshotQuery {
    /// `None` lists every project (admin `all_tenants`).
    pub project_id: Option<String>,
    pub volume_id: Option<String>,
    pub name: Option<String>,
    pub status: Option<String>,
    pub marker: Option<String>,
    pub offset: u64,
    pub limit: u64,
}

const COLUMNS: &str = "s.id, s.project_id, s.user_id, s.volume_id, s.display_name, \
    s.display_description, s.size, s.status, s.progress, s.provider_location, s.created_at, \
    s.updated_at";

fn snapshot_from_row(r: &dyn DbRow) -> Result<SnapshotRecord, CatalogError> {
    Ok(SnapshotRecord {
        id: r.text(0)?,
        project_id: r.text(1)?,
        user_id: r.opt_text(2)?,
        volume_id: r.text(3)?,
        display_name: r.opt_text(4)?,
        display_description: r.opt_text(5)?,
        size: r.int(6)?,
        status: r.text(7)?,
        progress: r.opt_text(8)?,
        provider_location: r.opt_text(9)?,
        created_at: r.int(10)?,
        updated_at: r.opt_int(11)?,
        metadata: BTreeMap::new(),
    })
}

impl Catalog {
    /// Inserts a snapshot if its volume is live and its status is one of
    /// `volume_statuses`; the volume's row is locked meanwhile, so a concurrent delete
    /// either sees the snapshot or wins first. Returns whether it was inserted.
    pub async fn create_snapshot(
        &self,
        s: &NewSnapshot,
        volume_statuses: &[&str],
    ) -> Result<bool, CatalogError> {
        let now = ts::now_micros();
        let mut tx = self.begin().await?;
        let mut sql = Sql::default();
        sql.push("UPDATE volumes SET updated_at = updated_at WHERE deleted = 0 AND id = ")
            .bind(text(&s.volume_id))
            .push(" AND status");
        push_in(&mut sql, volume_statuses);
        if exec(&mut tx, sql).await? != 1 {
            return Ok(false);
        }
        let mut sql = Sql::default();
        sql.push(
            "INSERT INTO snapshots (id, project_id, user_id, volume_id, display_name, \
             display_description, size, status, progress, created_at, updated_at, deleted) \
             VALUES (",
        );
        sql.bind(text(&s.id)).push(", ").bind(text(&s.project_id));
        sql.push(", ");
        sql.bind_opt(s.user_id.as_deref());
        sql.push(", ").bind(text(&s.volume_id)).push(", ");
        sql.bind_opt(s.display_name.as_deref());
        sql.push(", ");
        sql.bind_opt(s.display_description.as_deref());
        sql.push(", ")
            .bind(Value::Int(s.size))
            .push(", ")
            .bind(text(&s.status))
            .push(", ")
            .bind(text(&s.progress))
            .push(", ")
            .bind(Value::Int(now))
            .push(", ")
            .bind(Value::Int(now))
            .push(", 0)");
        exec(&mut tx, sql).await?;
        insert_metadata(
            &mut tx,
            "snapshot_metadata",
            "snapshot_id",
            &s.id,
            &s.metadata,
        )
        .await?;
        self.check_quota(
            &mut tx,
            &s.project_id,
            &[("snapshots", 1), ("gigabytes", s.size)],
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// One live snapshot; `project_id` restricts the lookup to that project.
    pub async fn get_snapshot(
        &self,
        id: &str,
        project_id: Option<&str>,
    ) -> Result<SnapshotRecord, CatalogError> {
        let mut sql = Sql::default();
        sql.push("SELECT ")
            .push(COLUMNS)
            .push(" FROM snapshots s WHERE s.deleted = 0 AND s.id = ")
            .bind(text(id));
        if let Some(p) = project_id {
            sql.push(" AND s.project_id = ").bind(text(p));
        }
        let record = self
            .fetch_first(sql, snapshot_from_row)
            .await?
            .ok_or(CatalogError::NotFound)?;
        let mut records = vec![record];
        self.fill_snapshots(&mut records).await?;
        records.pop().ok_or(CatalogError::NotFound)
    }

    /// Live snapshots, newest first. An unknown marker is [`CatalogError::NotFound`].
    pub async fn list_snapshots(
        &self,
        q: &SnapshotQuery,
    ) -> Result<Vec<SnapshotRecord>, CatalogError> {
        let mut list = List::new(COLUMNS, "snapshots s", "s.id");
        list.when("s.deleted = 0")
            .eq_opt("s.project_id", q.project_id.as_deref())
            .eq_opt("s.volume_id", q.volume_id.as_deref())
            .eq_opt("s.display_name", q.name.as_deref())
            .eq_opt("s.status", q.status.as_deref())
            .page(q.offset, Some(q.limit));
        self.after_live_marker(
            &mut list,
            "snapshots",
            q.marker.as_deref(),
            q.project_id.as_deref(),
        )
        .await?;
        let mut records = self.page_of(&list, snapshot_from_row).await?;
        self.fill_snapshots(&mut records).await?;
        Ok(records)
    }

    async fn fill_snapshots(&self, records: &mut [SnapshotRecord]) -> Result<(), CatalogError> {
        if records.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
        let mut metadata: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for chunk in ids.chunks(500) {
            let mut sql = Sql::default();
            sql.push("SELECT snapshot_id, key, value FROM snapshot_metadata WHERE snapshot_id");
            push_in(&mut sql, chunk);
            for (id, k, v) in self
                .fetch(sql, Cost::Small, |r| {
                    Ok((r.text(0)?, r.text(1)?, r.text(2)?))
                })
                .await?
            {
                metadata.entry(id).or_default().insert(k, v);
            }
        }
        for r in records {
            r.metadata = metadata.remove(&r.id).unwrap_or_default();
        }
        Ok(())
    }

    /// Moves a live snapshot to `status` (and `progress`, `provider_location` when
    /// given) if its status is one of `expected` (any when empty). Returns whether it
    /// moved.
    pub async fn set_snapshot_status(
        &self,
        id: &str,
        expected: &[&str],
        status: &str,
        progress: Option<&str>,
        provider_location: Option<&str>,
    ) -> Result<bool, CatalogError> {
        let mut sql = Sql::default();
        sql.push("UPDATE snapshots SET status = ")
            .bind(text(status))
            .push(", updated_at = ")
            .bind(Value::Int(ts::now_micros()));
        if let Some(p) = progress {
            sql.push(", progress = ").bind(text(p));
        }
        if let Some(l) = provider_location {
            sql.push(", provider_location = ").bind(text(l));
        }
        sql.push(" WHERE deleted = 0 AND id = ").bind(text(id));
        if !expected.is_empty() {
            sql.push(" AND status");
            push_in(&mut sql, expected);
        }
        Ok(self.execute(sql).await? == 1)
    }

    /// Renames or redescribes a live snapshot (`None`: unchanged; `Some(None)`: null).
    pub async fn update_snapshot(
        &self,
        id: &str,
        name: Option<Option<&str>>,
        description: Option<Option<&str>>,
    ) -> Result<(), CatalogError> {
        let sql = crate::write::rename_sql("snapshots", id, name, description);
        if self.execute(sql).await? == 1 {
            Ok(())
        } else {
            Err(CatalogError::NotFound)
        }
    }

    /// Soft-deletes a snapshot (and drops its metadata). Idempotent.
    pub async fn destroy_snapshot(&self, id: &str) -> Result<(), CatalogError> {
        let now = ts::now_micros();
        let mut tx = self.begin().await?;
        let mut sql = Sql::default();
        sql.push("UPDATE snapshots SET deleted = 1, status = 'deleted', deleted_at = ")
            .bind(Value::Int(now))
            .push(", updated_at = ")
            .bind(Value::Int(now))
            .push(" WHERE deleted = 0 AND id = ")
            .bind(text(id));
        exec(&mut tx, sql).await?;
        let mut sql = Sql::default();
        sql.push("DELETE FROM snapshot_metadata WHERE snapshot_id = ")
            .bind(text(id));
        exec(&mut tx, sql).await?;
        tx.commit().await?;
        Ok(())
    }
}
