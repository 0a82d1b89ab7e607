//! Backup sharing records (VBS `os-vendor-backup-sharing`): which backup one project
//! shares with which other project.
//!
//! Race-free against deletes: sharing moves `backups.share_count` with a conditional
//! update of the backup's row (only an `available` backup), and a delete or a prune
//! starts only where `share_count = 0`, on the same row. On `PostgreSQL` one waits for
//! the other and then re-checks the row it locked; `SQLite` has one writer.

use crate::backups::{RECORD_COLUMNS, record_from_row};
use crate::listing::List;
use crate::read::{DbRow, Sql, Value, text};
use crate::write::exec;
use crate::{BackupRecord, Catalog, CatalogError, ts};

/// A sharing record, with the backup it shares when listed or shown.
#[derive(Debug, Clone, PartialEq)]
pub struct ShareRecord {
    pub id: String,
    pub backup_id: String,
    pub from_project_id: String,
    pub to_project_id: String,
    pub created_at: i64,
    pub updated_at: Option<i64>,
    pub backup: Option<BackupRecord>,
}

/// Why a share did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShareRefused {
    /// The backup is not an `available` backup of the sharing project (any more).
    NotAvailable,
    /// It is shared with this project already.
    AlreadyShared(String),
}

/// What a sharing list sorts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ShareSort {
    #[default]
    CreatedAt,
    UpdatedAt,
    Id,
    Name,
    Status,
    Size,
}

/// A sharing list: the records of `project` (shared by it, or with it when
/// `shared_with_me`), filtered, sorted and paged.
#[derive(Debug, Clone, Default)]
pub struct ShareQuery {
    pub project: String,
    pub shared_with_me: bool,
    pub backup_id: Option<String>,
    pub volume_id: Option<String>,
    /// Substring of the backup's name, any case.
    pub name: Option<String>,
    pub status: Option<String>,
    pub from_project_id: Option<String>,
    pub to_project_id: Option<String>,
    pub availability_zone: Option<String>,
    pub sort: ShareSort,
    pub ascending: bool,
    pub offset: u64,
    pub limit: Option<u64>,
}

const SHARE_COLUMNS: &str = "s.id, s.backup_id, s.from_project_id, s.to_project_id, \
     s.created_at, s.updated_at";
/// Where the share columns start after the backup's.
const SHARE_AT: usize = 27;

fn share_from_row(r: &dyn DbRow, at: usize) -> Result<ShareRecord, CatalogError> {
    Ok(ShareRecord {
        id: r.text(at)?,
        backup_id: r.text(at + 1)?,
        from_project_id: r.text(at + 2)?,
        to_project_id: r.text(at + 3)?,
        created_at: r.int(at + 4)?,
        updated_at: r.opt_int(at + 5)?,
        backup: None,
    })
}

fn with_backup(r: &dyn DbRow) -> Result<ShareRecord, CatalogError> {
    let mut share = share_from_row(r, SHARE_AT)?;
    share.backup = Some(record_from_row(r)?);
    Ok(share)
}

fn listed(q: &ShareQuery) -> List {
    let mut list = List::new(
        format!("{RECORD_COLUMNS}, {SHARE_COLUMNS}"),
        "backup_shares s JOIN backups b ON b.id = s.backup_id AND b.deleted = 0",
        "s.id",
    );
    let side = if q.shared_with_me {
        "s.to_project_id"
    } else {
        "s.from_project_id"
    };
    list.eq(side, text(&q.project))
        .eq_opt("s.backup_id", q.backup_id.as_deref())
        .eq_opt("b.volume_id", q.volume_id.as_deref())
        .eq_opt("b.status", q.status.as_deref())
        .eq_opt("s.from_project_id", q.from_project_id.as_deref())
        .eq_opt("s.to_project_id", q.to_project_id.as_deref())
        .eq_opt("b.availability_zone", q.availability_zone.as_deref())
        .page(q.offset, q.limit);
    if let Some(n) = &q.name {
        list.contains("b.display_name", n);
    }
    let column = match q.sort {
        ShareSort::CreatedAt => "s.created_at",
        ShareSort::UpdatedAt => "COALESCE(s.updated_at, s.created_at)",
        ShareSort::Id => "s.id",
        ShareSort::Name => "COALESCE(b.display_name, '')",
        ShareSort::Status => "b.status",
        ShareSort::Size => "b.size",
    };
    list.sort(column, !q.ascending);
    list
}

impl Catalog {
    /// Shares an `available` backup of `from` with each of `to`, all or nothing.
    pub async fn share_backup(
        &self,
        backup_id: &str,
        from: &str,
        to: &[String],
    ) -> Result<Result<Vec<ShareRecord>, ShareRefused>, CatalogError> {
        let now = ts::now_micros();
        let mut tx = self.begin().await?;
        let mut sql = Sql::default();
        sql.push("UPDATE backups SET share_count = share_count + ")
            .bind(Value::Int(i64::try_from(to.len()).unwrap_or(i64::MAX)))
            .push(" WHERE deleted = 0 AND status = 'available' AND id = ")
            .bind(text(backup_id))
            .push(" AND project_id = ")
            .bind(text(from));
        if exec(&mut tx, sql).await? != 1 {
            return Ok(Err(ShareRefused::NotAvailable));
        }
        let mut out = Vec::with_capacity(to.len());
        for project in to {
            let record = ShareRecord {
                id: uuid::Uuid::new_v4().to_string(),
                backup_id: backup_id.to_owned(),
                from_project_id: from.to_owned(),
                to_project_id: project.clone(),
                created_at: now,
                updated_at: None,
                backup: None,
            };
            let mut sql = Sql::default();
            sql.push(
                "INSERT INTO backup_shares (id, backup_id, from_project_id, to_project_id, \
                 created_at) VALUES (",
            )
            .bind(text(&record.id))
            .push(", ")
            .bind(text(backup_id))
            .push(", ")
            .bind(text(from))
            .push(", ")
            .bind(text(project))
            .push(", ")
            .bind(Value::Int(now))
            .push(")");
            match exec(&mut tx, sql).await {
                Ok(_) => out.push(record),
                Err(CatalogError::AlreadyExists) => {
                    return Ok(Err(ShareRefused::AlreadyShared(project.clone())));
                }
                Err(e) => return Err(e),
            }
        }
        tx.commit().await?;
        Ok(Ok(out))
    }

    /// Cancels sharing records of `owner`: record `id`, or with `by_backup` every
    /// record of backup `id`. Returns how many went.
    pub async fn cancel_shares(
        &self,
        id: &str,
        owner: &str,
        by_backup: bool,
    ) -> Result<u64, CatalogError> {
        let mut tx = self.begin().await?;
        let mut sql = Sql::default();
        sql.push("SELECT backup_id, COUNT(*) FROM backup_shares WHERE from_project_id = ")
            .bind(text(owner))
            .push(if by_backup {
                " AND backup_id = "
            } else {
                " AND id = "
            })
            .bind(text(id))
            .push(" GROUP BY backup_id");
        let found: Vec<(String, i64)> = sql
            .into_query()
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| Ok((sqlx::Row::try_get(r, 0)?, sqlx::Row::try_get(r, 1)?)))
            .collect::<Result<_, CatalogError>>()?;
        let mut n = 0;
        for (backup, count) in found {
            let mut sql = Sql::default();
            sql.push("DELETE FROM backup_shares WHERE from_project_id = ")
                .bind(text(owner))
                .push(" AND backup_id = ")
                .bind(text(&backup));
            if !by_backup {
                sql.push(" AND id = ").bind(text(id));
            }
            exec(&mut tx, sql).await?;
            let mut sql = Sql::default();
            sql.push("UPDATE backups SET share_count = share_count - ")
                .bind(Value::Int(count))
                .push(" WHERE id = ")
                .bind(text(&backup));
            exec(&mut tx, sql).await?;
            n += u64::try_from(count).unwrap_or(0);
        }
        tx.commit().await?;
        Ok(n)
    }

    /// A sharing record with its backup, if `project` shared it or was shared with.
    pub async fn get_share(&self, id: &str, project: &str) -> Result<ShareRecord, CatalogError> {
        let mut sql = Sql::default();
        sql.push("SELECT ")
            .push(RECORD_COLUMNS)
            .push(", ")
            .push(SHARE_COLUMNS)
            .push(
                " FROM backup_shares s JOIN backups b ON b.id = s.backup_id AND b.deleted = 0 \
                 WHERE s.id = ",
            )
            .bind(text(id))
            .push(" AND (s.from_project_id = ")
            .bind(text(project))
            .push(" OR s.to_project_id = ")
            .bind(text(project))
            .push(")");
        self.fetch_first(sql, with_backup)
            .await?
            .ok_or(CatalogError::NotFound)
    }

    /// A page of sharing records with their backups.
    pub async fn list_shares(&self, q: &ShareQuery) -> Result<Vec<ShareRecord>, CatalogError> {
        self.page_of(&listed(q), with_backup).await
    }

    /// How many sharing records match (paging aside).
    pub async fn count_shares(&self, q: &ShareQuery) -> Result<u64, CatalogError> {
        self.count_of(&listed(q)).await
    }
}
