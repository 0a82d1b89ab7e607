//! Bulk import of Cinder backup records (JSON lines, one `backups` row a line), for
//! operators moving a catalog over and for benchmarks.
//!
//! All or nothing: everything goes in one transaction, and the first bad line aborts it
//! with an error naming the line. A large import into a small table drops the table's
//! secondary indexes and triggers first and rebuilds them afterwards, inside the same
//! transaction: building an index once from sorted data is many times cheaper than
//! updating it a million times.

use std::borrow::Cow;
use std::collections::HashSet;
use std::io::BufRead;

use serde::Deserialize;
use sqlx::{AssertSqlSafe, Executor, Row};

use crate::{Catalog, CatalogError};

/// Recounts `backup_counts` from the table (after its trigger was bypassed).
pub(crate) const RECOUNT: &str = "DELETE FROM backup_counts; \
    INSERT INTO backup_counts (project_id, volume_id, status, n) \
    SELECT project_id, volume_id, status, COUNT(*) FROM backups WHERE deleted = 0 \
    GROUP BY project_id, volume_id, status";

/// A fresh generation for every project that has backups (after the generation trigger
/// was bypassed): cached pages of the founding list must not outlive a bulk load.
pub(crate) const NEW_GENERATIONS_POSTGRES: &str = "INSERT INTO backup_generations \
    (project_id, generation) SELECT project_id, floor(random() * 9007199254740991)::bigint \
    FROM (SELECT DISTINCT project_id FROM backups) p \
    ON CONFLICT (project_id) DO UPDATE SET generation = EXCLUDED.generation";
pub(crate) const NEW_GENERATIONS_SQLITE: &str = "INSERT INTO backup_generations \
    (project_id, generation) SELECT project_id, random() \
    FROM (SELECT DISTINCT project_id FROM backups) WHERE true \
    ON CONFLICT (project_id) DO UPDATE SET generation = excluded.generation";

/// Batches sent from the parser thread to the loader.
pub(crate) type Batches = tokio::sync::mpsc::Receiver<Result<Vec<Row27>, ImportError>>;

/// Rows per INSERT statement: 500 × 27 placeholders stays under both engines' limits.
const BATCH: usize = 500;
/// Below this many records the indexes are kept and updated row by row.
pub(crate) const BULK_MIN: u64 = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("line {line}: {reason}")]
    BadRecord { line: u64, reason: String },
    #[error("reading the input: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

impl From<sqlx::Error> for ImportError {
    fn from(e: sqlx::Error) -> Self {
        ImportError::Catalog(e.into())
    }
}

#[derive(Debug, Clone, Copy)]
pub struct ImportStats {
    pub records: u64,
    /// Whether indexes were dropped and rebuilt.
    pub bulk: bool,
}

/// One line of the input: every column of Cinder's `backups` table. Text borrows from
/// the line where it can (no escapes): a million lines would otherwise make twenty
/// million small strings, allocated here and freed on the loader's thread.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    volume_id: Cow<'a, str>,
    #[serde(borrow)]
    project_id: Cow<'a, str>,
    #[serde(borrow)]
    status: Cow<'a, str>,
    #[serde(borrow)]
    created_at: Cow<'a, str>,
    #[serde(default, borrow)]
    user_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    snapshot_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    parent_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    restore_volume_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    temp_volume_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    temp_snapshot_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    encryption_key_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    display_name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    display_description: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    fail_reason: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    host: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    availability_zone: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    container: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    service: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    service_metadata: Option<Cow<'a, str>>,
    #[serde(default)]
    size: Option<i64>,
    #[serde(default)]
    object_count: Option<i64>,
    #[serde(default)]
    num_dependent_backups: Option<i64>,
    #[serde(default, borrow)]
    updated_at: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    deleted_at: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    data_timestamp: Option<Cow<'a, str>>,
    #[serde(default)]
    deleted: Option<serde_json::Value>,
}

const STATUSES: &[&str] = &[
    "available",
    "error",
    "creating",
    "restoring",
    "deleting",
    "error_deleting",
    "deleted",
];

pub(crate) const INSERT_COLUMNS: &str = "id, volume_id, project_id, status, created_at, user_id, \
    snapshot_id, parent_id, restore_volume_id, temp_volume_id, temp_snapshot_id, \
    encryption_key_id, display_name, display_description, fail_reason, host, \
    availability_zone, container, service, service_metadata, size, object_count, \
    num_dependent_backups, updated_at, deleted_at, data_timestamp, deleted";
pub(crate) const NCOLS: usize = 27;

/// A validated row, ready to bind in the order of `INSERT_COLUMNS`: its text in one
/// buffer (one allocation a row).
pub(crate) struct Row27 {
    pub(crate) line: u64,
    buf: String,
    /// Byte ranges in `buf`: id, volume_id, project_id, status, then user_id …
    /// service_metadata; `None` for an absent value.
    spans: [Option<(usize, usize)>; 19],
    pub(crate) created_at: i64,
    /// size, object_count, num_dependent_backups.
    pub(crate) counts: [i64; 3],
    /// updated_at, deleted_at, data_timestamp.
    pub(crate) times: [Option<i64>; 3],
    pub(crate) deleted: i64,
}

impl Row27 {
    fn new(line: u64, key: [&str; 4], text: [Option<&str>; 15]) -> Self {
        let len = key.iter().map(|k| k.len()).sum::<usize>()
            + text.iter().flatten().map(|t| t.len()).sum::<usize>();
        let mut buf = String::with_capacity(len);
        let mut spans = [None; 19];
        let values = key.into_iter().map(Some).chain(text);
        for (span, v) in spans.iter_mut().zip(values) {
            *span = v.map(|v| {
                let start = buf.len();
                buf.push_str(v);
                (start, buf.len())
            });
        }
        Self {
            line,
            buf,
            spans,
            created_at: 0,
            counts: [0; 3],
            times: [None; 3],
            deleted: 0,
        }
    }

    fn span(&self, i: usize) -> Option<&str> {
        self.spans[i].map(|(a, b)| &self.buf[a..b])
    }

    /// id (0), volume_id (1), project_id (2) or status (3).
    pub(crate) fn key(&self, i: usize) -> &str {
        self.span(i).unwrap_or_default()
    }

    /// The 15 optional text columns, user_id … service_metadata, in order.
    pub(crate) fn texts(&self) -> impl Iterator<Item = Option<&str>> {
        (4..19).map(|i| self.span(i))
    }
}

pub(crate) fn bad(line: u64, reason: impl Into<String>) -> ImportError {
    ImportError::BadRecord {
        line,
        reason: reason.into(),
    }
}

fn uuid_field<'a>(
    line: u64,
    field: &str,
    v: &'a Option<Cow<'a, str>>,
) -> Result<Option<&'a str>, ImportError> {
    match v.as_deref() {
        Some(s) if uuid::Uuid::parse_str(s).is_err() => {
            Err(bad(line, format!("{field} {s:?} is not a UUID")))
        }
        other => Ok(other),
    }
}

fn ts_field(line: u64, field: &str, v: Option<&str>) -> Result<Option<i64>, ImportError> {
    match v {
        None => Ok(None),
        Some(s) => crate::ts::parse(s)
            .map(Some)
            .ok_or_else(|| bad(line, format!("{field} {s:?} is not a timestamp"))),
    }
}

fn count_field(line: u64, field: &str, v: Option<i64>) -> Result<i64, ImportError> {
    match v.unwrap_or(0) {
        n if n < 0 => Err(bad(line, format!("{field} must not be negative"))),
        n => Ok(n),
    }
}

fn validate(line: u64, raw: &str) -> Result<Row27, ImportError> {
    let r: Line = serde_json::from_str(raw).map_err(|e| bad(line, e.to_string()))?;
    if uuid::Uuid::parse_str(&r.id).is_err() {
        return Err(bad(line, format!("id {:?} is not a UUID", r.id)));
    }
    if uuid::Uuid::parse_str(&r.volume_id).is_err() {
        return Err(bad(
            line,
            format!("volume_id {:?} is not a UUID", r.volume_id),
        ));
    }
    if r.project_id.trim().is_empty() {
        return Err(bad(line, "project_id is empty"));
    }
    if !STATUSES.contains(&&*r.status) {
        return Err(bad(
            line,
            format!("status {:?} is not a backup status", r.status),
        ));
    }
    let created_at = ts_field(line, "created_at", Some(&r.created_at))?.unwrap_or_default();
    let deleted = match &r.deleted {
        None | Some(serde_json::Value::Null) => 0,
        Some(serde_json::Value::Bool(b)) => i64::from(*b),
        Some(serde_json::Value::Number(n)) if n.as_i64() == Some(0) || n.as_i64() == Some(1) => {
            n.as_i64().unwrap_or(0)
        }
        Some(other) => return Err(bad(line, format!("deleted must be 0 or 1, not {other}"))),
    };
    let mut row = Row27::new(
        line,
        [&r.id, &r.volume_id, &r.project_id, &r.status],
        [
            r.user_id.as_deref(),
            uuid_field(line, "snapshot_id", &r.snapshot_id)?,
            uuid_field(line, "parent_id", &r.parent_id)?,
            uuid_field(line, "restore_volume_id", &r.restore_volume_id)?,
            uuid_field(line, "temp_volume_id", &r.temp_volume_id)?,
            uuid_field(line, "temp_snapshot_id", &r.temp_snapshot_id)?,
            r.encryption_key_id.as_deref(),
            r.display_name.as_deref(),
            r.display_description.as_deref(),
            r.fail_reason.as_deref(),
            r.host.as_deref(),
            r.availability_zone.as_deref(),
            r.container.as_deref(),
            r.service.as_deref(),
            r.service_metadata.as_deref(),
        ],
    );
    row.created_at = created_at;
    row.counts = [
        count_field(line, "size", r.size)?,
        count_field(line, "object_count", r.object_count)?,
        count_field(line, "num_dependent_backups", r.num_dependent_backups)?,
    ];
    row.times = [
        ts_field(line, "updated_at", r.updated_at.as_deref())?,
        ts_field(line, "deleted_at", r.deleted_at.as_deref())?,
        // Cinder: the data's point in time defaults to the backup's creation.
        Some(ts_field(line, "data_timestamp", r.data_timestamp.as_deref())?.unwrap_or(created_at)),
    ];
    row.deleted = deleted;
    Ok(row)
}

/// A multi-row INSERT with numbered placeholders (PostgreSQL).
fn insert_sql(rows: usize) -> String {
    let mut sql = format!("INSERT INTO backups ({INSERT_COLUMNS}) VALUES ");
    let mut n = 0;
    for r in 0..rows {
        if r > 0 {
            sql.push(',');
        }
        sql.push('(');
        for c in 0..NCOLS {
            if c > 0 {
                sql.push(',');
            }
            n += 1;
            sql.push_str(&format!("${n}"));
        }
        sql.push(')');
    }
    sql
}

async fn import_sqlite_file(
    path: String,
    input: impl BufRead + Send + 'static,
    total_hint: u64,
) -> Result<ImportStats, ImportError> {
    let (sender, batches) = tokio::sync::mpsc::channel::<Result<Vec<Row27>, ImportError>>(4);
    let parser = std::thread::spawn(move || parse_batches(input, &sender));
    let loaded =
        tokio::task::spawn_blocking(move || crate::import_sqlite::load(&path, batches, total_hint))
            .await
            .map_err(|e| CatalogError::Engine(format!("import task failed: {e}")))?;
    let _ = parser.join();
    loaded
}

/// Reads, validates and batches the input; stops at the first bad line (which is sent)
/// or when the importer hangs up.
fn parse_batches(
    input: impl BufRead,
    sender: &tokio::sync::mpsc::Sender<Result<Vec<Row27>, ImportError>>,
) {
    let mut seen: HashSet<String> = HashSet::new();
    let mut batch: Vec<Row27> = Vec::with_capacity(BATCH);
    for (i, line) in input.lines().enumerate() {
        let line_no = i as u64 + 1;
        let row = match line {
            Err(e) => Err(ImportError::Io(e)),
            Ok(line) if line.trim().is_empty() => continue,
            Ok(line) => validate(line_no, &line).and_then(|row| {
                if seen.insert(row.key(0).to_owned()) {
                    Ok(row)
                } else {
                    let id = row.key(0);
                    Err(bad(
                        line_no,
                        format!("backup {id} appears twice in the input"),
                    ))
                }
            }),
        };
        match row {
            Ok(row) => batch.push(row),
            Err(e) => {
                let _ = sender.blocking_send(Err(e));
                return;
            }
        }
        if batch.len() == BATCH {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
            if sender.blocking_send(Ok(full)).is_err() {
                return;
            }
        }
    }
    if !batch.is_empty() {
        let _ = sender.blocking_send(Ok(batch));
    }
}

impl Catalog {
    /// Imports JSON lines from `input` into the catalog `options` names (migrating it
    /// first); `total_hint` (the number of lines, if known) decides whether indexes are
    /// rebuilt rather than maintained. On SQLite the load runs on a connection of its
    /// own, with every other connection of this process closed first.
    pub async fn import_backups(
        options: &crate::CatalogOptions,
        input: impl BufRead + Send + 'static,
        total_hint: u64,
    ) -> Result<ImportStats, ImportError> {
        // The load needs no read connections; on SQLite it closes even the pool first.
        let catalog = Catalog::open_with(options, false).await?;
        let sqlite_path = catalog.sqlite_path.clone();
        if sqlite_path.is_some() {
            catalog.close().await;
            drop(catalog);
            return import_sqlite_file(sqlite_path.unwrap_or_default(), input, total_hint).await;
        }
        let result = catalog.import_postgres(input, total_hint).await;
        catalog.close().await;
        result
    }

    async fn import_postgres(
        &self,
        input: impl BufRead + Send + 'static,
        total_hint: u64,
    ) -> Result<ImportStats, ImportError> {
        let started = std::time::Instant::now();
        // Parsing and validation run on their own thread, a few batches ahead of the
        // database, so that both cores work.
        let (sender, mut batches) =
            tokio::sync::mpsc::channel::<Result<Vec<Row27>, ImportError>>(4);
        let parser = std::thread::spawn(move || parse_batches(input, &sender));

        // Batched multi-row INSERTs in one transaction.
        let mut tx = self.pool().begin().await?;
        let existing: i64 = sqlx::query("SELECT COUNT(*) FROM backups")
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        let bulk = total_hint >= BULK_MIN && total_hint >= existing.max(0) as u64;
        let saved = if bulk {
            self.drop_derived(&mut tx).await?
        } else {
            Vec::new()
        };

        let full_sql = insert_sql(BATCH);
        let mut records = 0u64;
        while let Some(batch) = batches.recv().await {
            let mut batch = batch?;
            records += batch.len() as u64;
            if batch.len() == BATCH {
                self.insert_batch(&mut tx, &full_sql, &mut batch).await?;
            } else {
                let sql = insert_sql(batch.len());
                self.insert_batch(&mut tx, &sql, &mut batch).await?;
            }
        }
        let _ = parser.join();
        tracing::info!(records, elapsed = ?started.elapsed(), "rows inserted");
        if bulk {
            self.rebuild_derived(&mut tx, saved).await?;
            tracing::info!(elapsed = ?started.elapsed(), "indexes rebuilt");
        }
        tx.commit().await?;
        tracing::info!(elapsed = ?started.elapsed(), "committed");
        Ok(ImportStats { records, bulk })
    }

    async fn insert_batch(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        sql: &str,
        batch: &mut Vec<Row27>,
    ) -> Result<(), ImportError> {
        let mut q = sqlx::query(AssertSqlSafe(sql.to_owned()));
        for row in batch.iter() {
            for i in 0..4 {
                q = q.bind(row.key(i).to_owned());
            }
            q = q.bind(row.created_at);
            for t in row.texts() {
                q = q.bind(t.map(str::to_owned));
            }
            for v in row.counts {
                q = q.bind(v);
            }
            for v in row.times {
                q = q.bind(v);
            }
            q = q.bind(row.deleted);
        }
        if let Err(e) = tx.execute(q).await {
            // Name the first record that already exists in the catalog, if that was it.
            if let sqlx::Error::Database(db) = &e
                && db.is_unique_violation()
            {
                if let Some(row) = self.first_existing(batch).await {
                    let id = row.key(0);
                    return Err(bad(
                        row.line,
                        format!("backup {id} already exists in the catalog"),
                    ));
                }
            }
            return Err(e.into());
        }
        batch.clear();
        Ok(())
    }

    async fn first_existing<'b>(&self, batch: &'b [Row27]) -> Option<&'b Row27> {
        let placeholders: Vec<String> = (1..=batch.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT id FROM backups WHERE id IN ({})",
            placeholders.join(",")
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for row in batch {
            q = q.bind(row.key(0).to_owned());
        }
        let rows = q.fetch_all(self.pool()).await.ok()?;
        let existing: HashSet<String> = rows
            .iter()
            .filter_map(|r| r.try_get::<String, _>(0).ok())
            .collect();
        batch.iter().find(|r| existing.contains(r.key(0)))
    }

    /// Drops the backups table's secondary indexes and disables its counting trigger,
    /// returning the SQL that restores them (read from PostgreSQL's own catalog, so
    /// nothing is written twice).
    async fn drop_derived(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    ) -> Result<Vec<String>, ImportError> {
        let mut recreate = Vec::new();
        let rows = sqlx::query(
            "SELECT CAST(indexname AS TEXT), indexdef FROM pg_indexes \
             WHERE tablename = 'backups' AND schemaname = current_schema() \
             AND indexname NOT IN ('backups_pkey', 'backups_id_key')",
        )
        .fetch_all(&mut **tx)
        .await?;
        for row in rows {
            let name: String = row.try_get(0)?;
            recreate.push(row.try_get::<String, _>(1)?);
            tx.execute(AssertSqlSafe(format!("DROP INDEX \"{name}\"")))
                .await?;
        }
        tx.execute("ALTER TABLE backups DISABLE TRIGGER backup_counts_maintain")
            .await?;
        tx.execute("ALTER TABLE backups DISABLE TRIGGER quota_backups")
            .await?;
        tx.execute("ALTER TABLE backups DISABLE TRIGGER backup_generations_bump")
            .await?;
        recreate.push("ALTER TABLE backups ENABLE TRIGGER backup_counts_maintain".into());
        recreate.push("ALTER TABLE backups ENABLE TRIGGER quota_backups".into());
        recreate.push("ALTER TABLE backups ENABLE TRIGGER backup_generations_bump".into());
        Ok(recreate)
    }

    async fn rebuild_derived(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        saved: Vec<String>,
    ) -> Result<(), ImportError> {
        for sql in saved {
            let t = std::time::Instant::now();
            tx.execute(AssertSqlSafe(sql.clone())).await?;
            tracing::debug!(elapsed = ?t.elapsed(), %sql, "rebuilt");
        }
        tx.execute(RECOUNT).await?;
        tx.execute(crate::quotas::RECOUNT_BACKUP_USAGE).await?;
        tx.execute(NEW_GENERATIONS_POSTGRES).await?;
        // Fresh statistics for the planner after a load this size.
        tx.execute("ANALYZE backups").await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_problem() {
        let ok = r#"{"id":"5b7c1f0e-3a4d-4c52-9a1e-0d2f8c6b7a10","volume_id":"9d4b2a57-1c0e-4f8b-8e0e-5d6f7a8b9c01","project_id":"p","status":"available","created_at":"2025-01-01 00:00:00.000000"}"#;
        assert!(validate(1, ok).is_ok());
        let e = validate(7, &ok.replace("available", "happy"))
            .err()
            .unwrap()
            .to_string();
        assert!(e.starts_with("line 7: status"), "{e}");
        let e = validate(3, &ok.replace("\"p\"", "\"p\",\"colour\":1"))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("unknown field `colour`"), "{e}");
        let e = validate(2, &ok.replace("2025-01-01", "2025-13-01"))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("created_at"), "{e}");
    }
}
