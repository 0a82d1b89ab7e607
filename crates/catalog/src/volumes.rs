//! Volume records: create, read, list, and every status change the volume API makes,
//! each a conditional update so that concurrent requests cannot both win. Attachments
//! live in `volume_attachment` (live rows only: a detach soft-deletes its row).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::listing::List;
use crate::read::{Cost, DbRow, Sql, Value, text};
use crate::write::{Tx, exec, query_int};
use crate::{Catalog, CatalogError, ts};

/// Every stored field of a live volume, with its metadata and live attachments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeRecord {
    pub id: String,
    pub project_id: String,
    pub user_id: Option<String>,
    pub display_name: Option<String>,
    pub display_description: Option<String>,
    /// GiB.
    pub size: i64,
    pub status: String,
    /// The status to return to after a temporary one (`backing-up`, `extending`).
    pub previous_status: Option<String>,
    pub attach_status: String,
    pub availability_zone: Option<String>,
    pub volume_type: Option<String>,
    pub bootable: bool,
    /// The image file or block device holding the volume's bytes.
    pub provider_location: Option<String>,
    /// Brought under management in place: the file is the admin's, never deleted.
    pub managed: bool,
    pub host: Option<String>,
    pub snapshot_id: Option<String>,
    pub source_volid: Option<String>,
    pub migration_status: Option<String>,
    pub created_at: i64,
    pub updated_at: Option<i64>,
    pub metadata: BTreeMap<String, String>,
    pub attachments: Vec<AttachmentRecord>,
}

/// A live attachment of a volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachmentRecord {
    pub id: String,
    pub volume_id: String,
    pub instance_uuid: Option<String>,
    pub attached_host: Option<String>,
    pub mountpoint: Option<String>,
    pub attach_mode: Option<String>,
    pub attach_status: String,
    pub attach_time: Option<i64>,
}

/// A volume to insert.
#[derive(Debug, Clone, Default)]
pub struct NewVolume {
    pub id: String,
    pub project_id: String,
    pub user_id: Option<String>,
    pub display_name: Option<String>,
    pub display_description: Option<String>,
    pub size: i64,
    pub status: String,
    pub availability_zone: Option<String>,
    pub volume_type: Option<String>,
    pub bootable: bool,
    pub provider_location: Option<String>,
    pub managed: bool,
    pub host: Option<String>,
    pub snapshot_id: Option<String>,
    pub source_volid: Option<String>,
    pub metadata: BTreeMap<String, String>,
}

/// An attachment to record.
#[derive(Debug, Clone)]
pub struct NewAttachment {
    pub id: String,
    pub instance_uuid: Option<String>,
    pub attached_host: Option<String>,
    pub mountpoint: String,
    pub attach_mode: String,
}

/// A list of volumes in the default order (newest first).
#[derive(Debug, Clone, Default)]
pub struct VolumeQuery {
    /// `None` lists every project (admin `all_tenants`).
    pub project_id: Option<String>,
    pub name: Option<String>,
    pub status: Option<String>,
    /// Id of the last volume already seen; must be visible in the same scope.
    pub marker: Option<String>,
    pub offset: u64,
    pub limit: u64,
}

/// What a status change does with `previous_status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Previous {
    Keep,
    /// Remember the status being left (to return to it later).
    Save,
    Clear,
}

/// Why a delete could not start, for the caller's message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteCheck {
    /// The volume is now `deleting` (and with cascade, its snapshots too).
    Started,
    /// Status, attachment or snapshots forbid it.
    Refused,
}

const COLUMNS: &str = "v.id, v.project_id, v.user_id, v.display_name, v.display_description, \
    v.size, v.status, v.previous_status, v.attach_status, v.availability_zone, v.volume_type, \
    v.bootable, v.provider_location, v.managed, v.host, v.snapshot_id, v.source_volid, \
    v.migration_status, v.created_at, v.updated_at";

fn volume_from_row(r: &dyn DbRow) -> Result<VolumeRecord, CatalogError> {
    Ok(VolumeRecord {
        id: r.text(0)?,
        project_id: r.text(1)?,
        user_id: r.opt_text(2)?,
        display_name: r.opt_text(3)?,
        display_description: r.opt_text(4)?,
        size: r.int(5)?,
        status: r.text(6)?,
        previous_status: r.opt_text(7)?,
        attach_status: r.text(8)?,
        availability_zone: r.opt_text(9)?,
        volume_type: r.opt_text(10)?,
        bootable: r.int(11)? != 0,
        provider_location: r.opt_text(12)?,
        managed: r.int(13)? != 0,
        host: r.opt_text(14)?,
        snapshot_id: r.opt_text(15)?,
        source_volid: r.opt_text(16)?,
        migration_status: r.opt_text(17)?,
        created_at: r.int(18)?,
        updated_at: r.opt_int(19)?,
        metadata: BTreeMap::new(),
        attachments: Vec::new(),
    })
}

fn attachment_from_row(r: &dyn DbRow) -> Result<AttachmentRecord, CatalogError> {
    Ok(AttachmentRecord {
        id: r.text(0)?,
        volume_id: r.text(1)?,
        instance_uuid: r.opt_text(2)?,
        attached_host: r.opt_text(3)?,
        mountpoint: r.opt_text(4)?,
        attach_mode: r.opt_text(5)?,
        attach_status: r.text(6)?,
        attach_time: r.opt_int(7)?,
    })
}

/// Appends `, $n` for a value or `, NULL`.
fn push_opt(sql: &mut Sql, v: Option<&str>) {
    sql.push(", ").bind_opt(v);
}

/// Appends ` IN ($a, $b, …)`.
pub(crate) fn push_in(sql: &mut Sql, values: &[&str]) {
    sql.push(" IN (");
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        sql.bind(text(v));
    }
    sql.push(")");
}

/// Inserts a volume row and its metadata.
pub(crate) async fn insert_volume(tx: &mut Tx, v: &NewVolume) -> Result<(), CatalogError> {
    let now = ts::now_micros();
    let mut sql = Sql::default();
    sql.push(
        "INSERT INTO volumes (id, project_id, user_id, display_name, display_description, \
         size, status, attach_status, availability_zone, volume_type, bootable, \
         provider_location, managed, host, snapshot_id, source_volid, created_at, \
         updated_at, deleted) VALUES (",
    );
    sql.bind(text(&v.id));
    sql.push(", ").bind(text(&v.project_id));
    push_opt(&mut sql, v.user_id.as_deref());
    push_opt(&mut sql, v.display_name.as_deref());
    push_opt(&mut sql, v.display_description.as_deref());
    sql.push(", ").bind(Value::Int(v.size));
    sql.push(", ").bind(text(&v.status));
    sql.push(", 'detached'");
    push_opt(&mut sql, v.availability_zone.as_deref());
    push_opt(&mut sql, v.volume_type.as_deref());
    sql.push(", ").bind(Value::Int(i64::from(v.bootable)));
    push_opt(&mut sql, v.provider_location.as_deref());
    sql.push(", ").bind(Value::Int(i64::from(v.managed)));
    push_opt(&mut sql, v.host.as_deref());
    push_opt(&mut sql, v.snapshot_id.as_deref());
    push_opt(&mut sql, v.source_volid.as_deref());
    sql.push(", ").bind(Value::Int(now));
    sql.push(", ").bind(Value::Int(now));
    sql.push(", 0)");
    exec(tx, sql).await?;
    insert_metadata(tx, "volume_metadata", "volume_id", &v.id, &v.metadata).await
}

/// Inserts `(owner, key, value)` rows into a metadata table.
pub(crate) async fn insert_metadata(
    tx: &mut Tx,
    table: &str,
    owner_column: &str,
    owner: &str,
    metadata: &BTreeMap<String, String>,
) -> Result<(), CatalogError> {
    for (k, v) in metadata {
        let mut sql = Sql::default();
        let _ = write!(
            sql.text,
            "INSERT INTO {table} ({owner_column}, key, value) VALUES ("
        );
        sql.bind(text(owner))
            .push(", ")
            .bind(text(k))
            .push(", ")
            .bind(text(v))
            .push(")");
        exec(tx, sql).await?;
    }
    Ok(())
}

impl Catalog {
    /// Inserts a volume and its metadata. A taken id, or a managed location already
    /// managed by a live volume, is [`CatalogError::AlreadyExists`].
    pub async fn create_volume(&self, v: &NewVolume) -> Result<(), CatalogError> {
        let mut tx = self.begin().await?;
        self.insert_volume_within_quota(&mut tx, v).await?;
        tx.commit().await?;
        Ok(())
    }

    /// [`insert_volume`], then the project's volume quotas checked in the same
    /// transaction.
    pub(crate) async fn insert_volume_within_quota(
        &self,
        tx: &mut Tx,
        v: &NewVolume,
    ) -> Result<(), CatalogError> {
        insert_volume(tx, v).await?;
        self.check_quota(tx, &v.project_id, &[("volumes", 1), ("gigabytes", v.size)])
            .await
    }

    /// One live volume with its metadata and attachments; `project_id` restricts the
    /// lookup to that project.
    pub async fn get_volume(
        &self,
        id: &str,
        project_id: Option<&str>,
    ) -> Result<VolumeRecord, CatalogError> {
        let mut sql = Sql::default();
        sql.push("SELECT ")
            .push(COLUMNS)
            .push(" FROM volumes v WHERE v.deleted = 0 AND v.id = ")
            .bind(text(id));
        if let Some(p) = project_id {
            sql.push(" AND v.project_id = ").bind(text(p));
        }
        let record = self
            .fetch_first(sql, volume_from_row)
            .await?
            .ok_or(CatalogError::NotFound)?;
        let mut records = vec![record];
        self.fill_volumes(&mut records).await?;
        records.pop().ok_or(CatalogError::NotFound)
    }

    /// Live volumes in the default order (`created_at` desc, `id` desc), with metadata and
    /// attachments. An unknown marker is [`CatalogError::NotFound`].
    pub async fn list_volumes(&self, q: &VolumeQuery) -> Result<Vec<VolumeRecord>, CatalogError> {
        let mut list = List::new(COLUMNS, "volumes v", "v.id");
        list.when("v.deleted = 0")
            .eq_opt("v.project_id", q.project_id.as_deref())
            .eq_opt("v.display_name", q.name.as_deref())
            .eq_opt("v.status", q.status.as_deref())
            .page(q.offset, Some(q.limit));
        self.after_live_marker(
            &mut list,
            "volumes",
            q.marker.as_deref(),
            q.project_id.as_deref(),
        )
        .await?;
        let mut records = self.page_of(&list, volume_from_row).await?;
        self.fill_volumes(&mut records).await?;
        Ok(records)
    }

    /// Loads metadata and live attachments of the given volumes.
    async fn fill_volumes(&self, records: &mut [VolumeRecord]) -> Result<(), CatalogError> {
        if records.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
        let mut metadata: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        let mut attachments: BTreeMap<String, Vec<AttachmentRecord>> = BTreeMap::new();
        for chunk in ids.chunks(500) {
            let mut sql = Sql::default();
            sql.push("SELECT volume_id, key, value FROM volume_metadata WHERE volume_id");
            push_in(&mut sql, chunk);
            for (id, k, v) in self
                .fetch(sql, Cost::Small, |r| {
                    Ok((r.text(0)?, r.text(1)?, r.text(2)?))
                })
                .await?
            {
                metadata.entry(id).or_default().insert(k, v);
            }
            let mut sql = Sql::default();
            sql.push(
                "SELECT id, volume_id, instance_uuid, attached_host, mountpoint, attach_mode, \
                 attach_status, attach_time FROM volume_attachment WHERE deleted = 0 \
                 AND volume_id",
            );
            push_in(&mut sql, chunk);
            sql.push(" ORDER BY created_at, id");
            for a in self.fetch(sql, Cost::Small, attachment_from_row).await? {
                attachments.entry(a.volume_id.clone()).or_default().push(a);
            }
        }
        for r in records {
            r.metadata = metadata.remove(&r.id).unwrap_or_default();
            r.attachments = attachments.remove(&r.id).unwrap_or_default();
        }
        Ok(())
    }

    /// Moves a live volume to `status` if its status is one of `expected` (any status
    /// when `expected` is empty). Returns whether it moved.
    pub async fn set_volume_status(
        &self,
        id: &str,
        expected: &[&str],
        status: &str,
        previous: Previous,
    ) -> Result<bool, CatalogError> {
        let mut sql = Sql::default();
        sql.push("UPDATE volumes SET ");
        match previous {
            // Assignments read the row as it was, on both engines.
            Previous::Save => {
                sql.push("previous_status = status, ");
            }
            Previous::Clear => {
                sql.push("previous_status = NULL, ");
            }
            Previous::Keep => {}
        }
        sql.push("status = ")
            .bind(text(status))
            .push(", updated_at = ")
            .bind(Value::Int(ts::now_micros()))
            .push(" WHERE deleted = 0 AND id = ")
            .bind(text(id));
        if !expected.is_empty() {
            sql.push(" AND status");
            push_in(&mut sql, expected);
        }
        Ok(self.execute(sql).await? == 1)
    }

    /// Sets the size of a volume in `from` and returns it to its `previous_status`
    /// (`available` if none), clearing that. Returns whether it changed.
    pub async fn finish_volume_resize(
        &self,
        id: &str,
        from: &str,
        size: i64,
    ) -> Result<bool, CatalogError> {
        let mut sql = Sql::default();
        sql.push("UPDATE volumes SET size = ")
            .bind(Value::Int(size))
            .push(
                ", status = COALESCE(previous_status, 'available'), previous_status = NULL, \
                 updated_at = ",
            )
            .bind(Value::Int(ts::now_micros()))
            .push(" WHERE deleted = 0 AND id = ")
            .bind(text(id))
            .push(" AND status = ")
            .bind(text(from));
        Ok(self.execute(sql).await? == 1)
    }

    /// Sets where a volume's bytes are (after its file was made).
    pub async fn set_volume_location(&self, id: &str, location: &str) -> Result<(), CatalogError> {
        let mut sql = Sql::default();
        sql.push("UPDATE volumes SET provider_location = ")
            .bind(text(location))
            .push(", updated_at = ")
            .bind(Value::Int(ts::now_micros()))
            .push(" WHERE deleted = 0 AND id = ")
            .bind(text(id));
        self.execute(sql).await?;
        Ok(())
    }

    /// Cinder's delete check, atomically: a volume whose status is one of `expected`,
    /// not attached and without live snapshots moves to `deleting`. With `cascade`,
    /// snapshots that are `available`, `error` or already `deleting` do not count and
    /// move to `deleting` with it.
    pub async fn begin_volume_delete(
        &self,
        id: &str,
        expected: &[&str],
        cascade: bool,
    ) -> Result<DeleteCheck, CatalogError> {
        let now = ts::now_micros();
        let mut tx = self.begin().await?;
        let mut sql = Sql::default();
        sql.push("UPDATE volumes SET status = 'deleting', updated_at = ")
            .bind(Value::Int(now))
            .push(" WHERE deleted = 0 AND id = ")
            .bind(text(id))
            .push(" AND attach_status <> 'attached' AND status");
        push_in(&mut sql, expected);
        sql.push(
            " AND NOT EXISTS (SELECT 1 FROM snapshots s WHERE s.volume_id = volumes.id \
             AND s.deleted = 0",
        );
        if cascade {
            sql.push(" AND s.status NOT IN ('available', 'error', 'deleting')");
        }
        sql.push(")");
        if exec(&mut tx, sql).await? != 1 {
            return Ok(DeleteCheck::Refused);
        }
        if cascade {
            let mut sql = Sql::default();
            sql.push("UPDATE snapshots SET status = 'deleting', updated_at = ")
                .bind(Value::Int(now))
                .push(" WHERE deleted = 0 AND volume_id = ")
                .bind(text(id))
                .push(" AND status IN ('available', 'error')");
            exec(&mut tx, sql).await?;
        }
        // A snapshot committed while this statement waited for the row (PostgreSQL
        // evaluates the subquery on its start snapshot): look again, now.
        let mut sql = Sql::default();
        sql.push("SELECT COUNT(*) FROM snapshots WHERE deleted = 0 AND volume_id = ")
            .bind(text(id));
        if cascade {
            sql.push(" AND status <> 'deleting'");
        }
        if query_int(&mut tx, sql).await? > 0 {
            return Ok(DeleteCheck::Refused);
        }
        tx.commit().await?;
        Ok(DeleteCheck::Started)
    }

    /// Soft-deletes a volume (and drops its metadata). Idempotent.
    pub async fn destroy_volume(&self, id: &str) -> Result<(), CatalogError> {
        let now = ts::now_micros();
        let mut tx = self.begin().await?;
        let mut sql = Sql::default();
        sql.push("UPDATE volumes SET deleted = 1, status = 'deleted', deleted_at = ")
            .bind(Value::Int(now))
            .push(", updated_at = ")
            .bind(Value::Int(now))
            .push(" WHERE deleted = 0 AND id = ")
            .bind(text(id));
        exec(&mut tx, sql).await?;
        let mut sql = Sql::default();
        sql.push("DELETE FROM volume_metadata WHERE volume_id = ")
            .bind(text(id));
        exec(&mut tx, sql).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records an attachment and moves the volume to `in-use`/`attached`, if its status
    /// is one of `expected`. Returns whether it did.
    pub async fn attach_volume(
        &self,
        id: &str,
        expected: &[&str],
        a: &NewAttachment,
    ) -> Result<bool, CatalogError> {
        let now = ts::now_micros();
        let mut tx = self.begin().await?;
        let mut sql = Sql::default();
        sql.push("UPDATE volumes SET status = 'in-use', attach_status = 'attached', updated_at = ")
            .bind(Value::Int(now))
            .push(" WHERE deleted = 0 AND id = ")
            .bind(text(id))
            .push(" AND status");
        push_in(&mut sql, expected);
        if exec(&mut tx, sql).await? != 1 {
            return Ok(false);
        }
        let mut sql = Sql::default();
        sql.push(
            "INSERT INTO volume_attachment (id, volume_id, instance_uuid, attached_host, \
             mountpoint, attach_mode, attach_status, attach_time, created_at, updated_at, \
             deleted) VALUES (",
        );
        sql.bind(text(&a.id)).push(", ").bind(text(id));
        push_opt(&mut sql, a.instance_uuid.as_deref());
        push_opt(&mut sql, a.attached_host.as_deref());
        sql.push(", ").bind(text(&a.mountpoint));
        sql.push(", ").bind(text(&a.attach_mode));
        sql.push(", 'attached', ")
            .bind(Value::Int(now))
            .push(", ")
            .bind(Value::Int(now))
            .push(", ")
            .bind(Value::Int(now))
            .push(", 0)");
        exec(&mut tx, sql).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Ends live attachments of a volume (one, or all when `attachment_id` is `None`);
    /// when none is left the volume becomes `available`/`detached`, if it was one of
    /// `expected`. Returns the number of attachments ended, or `None` if the volume
    /// was not in an expected status (nothing changed then).
    pub async fn detach_volume(
        &self,
        id: &str,
        expected: &[&str],
        attachment_id: Option<&str>,
    ) -> Result<Option<u64>, CatalogError> {
        let now = ts::now_micros();
        let mut tx = self.begin().await?;
        // Lock the volume row first, checking its status.
        let mut sql = Sql::default();
        sql.push("UPDATE volumes SET updated_at = ")
            .bind(Value::Int(now))
            .push(" WHERE deleted = 0 AND id = ")
            .bind(text(id))
            .push(" AND status");
        push_in(&mut sql, expected);
        if exec(&mut tx, sql).await? != 1 {
            return Ok(None);
        }
        let ended = end_attachments(&mut tx, id, attachment_id, now).await?;
        if ended > 0 {
            let mut sql = Sql::default();
            sql.push(
                "UPDATE volumes SET status = 'available', attach_status = 'detached' \
                 WHERE id = ",
            )
            .bind(text(id))
            .push(
                " AND NOT EXISTS (SELECT 1 FROM volume_attachment a WHERE a.volume_id = \
                 volumes.id AND a.deleted = 0)",
            );
            exec(&mut tx, sql).await?;
        }
        tx.commit().await?;
        Ok(Some(ended))
    }

    /// An admin's reset: sets status, attach and migration status unconditionally; a reset to
    /// `detached` also ends every attachment. Returns whether the volume exists.
    pub async fn reset_volume(
        &self,
        id: &str,
        status: Option<&str>,
        attach_status: Option<&str>,
        migration_status: Option<Option<&str>>,
    ) -> Result<bool, CatalogError> {
        let now = ts::now_micros();
        let mut tx = self.begin().await?;
        let mut sql = Sql::default();
        sql.push("UPDATE volumes SET updated_at = ")
            .bind(Value::Int(now));
        if let Some(s) = status {
            sql.push(", status = ").bind(text(s));
        }
        if let Some(a) = attach_status {
            sql.push(", attach_status = ").bind(text(a));
        }
        match migration_status {
            Some(Some(m)) => {
                sql.push(", migration_status = ").bind(text(m));
            }
            Some(None) => {
                sql.push(", migration_status = NULL");
            }
            None => {}
        }
        sql.push(" WHERE deleted = 0 AND id = ").bind(text(id));
        if exec(&mut tx, sql).await? != 1 {
            return Ok(false);
        }
        if attach_status == Some("detached") {
            end_attachments(&mut tx, id, None, now).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Work on volumes and snapshots that runs inside the process that took the request
    /// (copies, deletes, extends) and whose process is gone is failed: volumes left
    /// `creating` become `error`, `extending` → `error_extending`, `deleting` →
    /// `error_deleting`; snapshots `creating` → `error`, `deleting` → `error_deleting`.
    /// Running work keeps its row's `updated_at` fresh ([`Self::touch_work`]), so with
    /// `stale_before` only rows unchanged since then are touched (many nodes); without,
    /// every such row (a restart of the only process). Returns the number changed.
    pub async fn fail_interrupted_volume_work(
        &self,
        stale_before: Option<i64>,
    ) -> Result<u64, CatalogError> {
        let now = ts::now_micros();
        let mut n = 0;
        for (table, from, to) in [
            ("volumes", "creating", "error"),
            ("volumes", "extending", "error_extending"),
            ("volumes", "deleting", "error_deleting"),
            ("snapshots", "creating", "error"),
            ("snapshots", "deleting", "error_deleting"),
        ] {
            let mut sql = Sql::default();
            let _ = write!(sql.text, "UPDATE {table} SET status = ");
            sql.bind(text(to))
                .push(", updated_at = ")
                .bind(Value::Int(now))
                .push(" WHERE deleted = 0 AND status = ")
                .bind(text(from));
            if let Some(t) = stale_before {
                sql.push(" AND (updated_at IS NULL OR updated_at < ")
                    .bind(Value::Int(t))
                    .push(")");
            }
            n += self.execute(sql).await?;
        }
        Ok(n)
    }

    /// Marks in-process work on a volume or snapshot as alive: its row's `updated_at`
    /// becomes now if it is still in `status`.
    pub async fn touch_work(
        &self,
        what: WorkOn,
        id: &str,
        status: &str,
    ) -> Result<(), CatalogError> {
        let mut sql = Sql::default();
        let table = match what {
            WorkOn::Volume => "volumes",
            WorkOn::Snapshot => "snapshots",
        };
        let _ = write!(sql.text, "UPDATE {table} SET updated_at = ");
        sql.bind(Value::Int(ts::now_micros()))
            .push(" WHERE deleted = 0 AND id = ")
            .bind(text(id))
            .push(" AND status = ")
            .bind(text(status));
        self.execute(sql).await?;
        Ok(())
    }
}

/// Which kind of row in-process work holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkOn {
    Volume,
    Snapshot,
}

/// Soft-deletes live attachments of a volume (one or all); returns how many.
async fn end_attachments(
    tx: &mut Tx,
    volume_id: &str,
    attachment_id: Option<&str>,
    now: i64,
) -> Result<u64, CatalogError> {
    let mut sql = Sql::default();
    sql.push(
        "UPDATE volume_attachment SET attach_status = 'detached', deleted = 1, detach_time = ",
    )
    .bind(Value::Int(now))
    .push(", deleted_at = ")
    .bind(Value::Int(now))
    .push(", updated_at = ")
    .bind(Value::Int(now))
    .push(" WHERE deleted = 0 AND volume_id = ")
    .bind(text(volume_id));
    if let Some(a) = attachment_id {
        sql.push(" AND id = ").bind(text(a));
    }
    exec(tx, sql).await
}
