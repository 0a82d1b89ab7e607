//! Bulk loading on SQLite, on one rusqlite connection in one transaction: a prepared
//! single-row INSERT (no per-value copies through an async driver), secondary indexes,
//! triggers and the trigram index rebuilt once from the loaded table, and a rollback
//! journal instead of the WAL when no one else has the database open, so that the data
//! is written once rather than appended to the WAL and copied again at checkpoint.

use std::time::{Duration, Instant};

use rusqlite::{ErrorCode, ToSql, TransactionBehavior};

use crate::CatalogError;
use crate::import::{
    BULK_MIN, Batches, INSERT_COLUMNS, ImportError, ImportStats, NCOLS, RECOUNT, Row27, bad,
};

/// The row's values in `INSERT_COLUMNS` order, borrowed (nothing is copied to bind).
fn row_params(row: &Row27) -> Vec<&dyn ToSql> {
    let mut params: Vec<&dyn ToSql> = Vec::with_capacity(NCOLS);
    params.extend(row.key.iter().map(|v| v as &dyn ToSql));
    params.push(&row.created_at);
    params.extend(row.text.iter().map(|v| v as &dyn ToSql));
    params.extend(row.counts.iter().map(|v| v as &dyn ToSql));
    params.extend(row.times.iter().map(|v| v as &dyn ToSql));
    params.push(&row.deleted);
    params
}

/// Loads the batches into the database at `path`, all or nothing.
pub(crate) fn load(
    path: &str,
    mut batches: Batches,
    total_hint: u64,
) -> Result<ImportStats, ImportError> {
    let started = Instant::now();
    let mut conn = rusqlite::Connection::open(path).map_err(CatalogError::from)?;
    conn.busy_timeout(Duration::from_secs(10))
        .map_err(CatalogError::from)?;
    // The whole working set in SQLite's cache: a spilled page is written and read back.
    conn.execute_batch(
        "PRAGMA cache_size = -1048576; PRAGMA synchronous = FULL; PRAGMA temp_store = MEMORY;",
    )
    .map_err(CatalogError::from)?;
    let bulk_hint = total_hint >= BULK_MIN;
    // Switching away from WAL succeeds only when no other connection has the file open
    // (a running server does); then stay in WAL, which is just as safe, only slower.
    let rollback_journal = bulk_hint
        && conn
            .query_row("PRAGMA journal_mode = DELETE", [], |r| {
                r.get::<_, String>(0)
            })
            .is_ok_and(|m| m.eq_ignore_ascii_case("delete"));
    let result = load_in_transaction(&mut conn, &mut batches, total_hint, started);
    if rollback_journal
        && let Err(e) = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0))
    {
        // The load is committed either way; the next connection that finds the file out
        // of WAL mode switches it back.
        tracing::warn!(error = %e, "could not switch the catalog back to WAL mode");
    }
    result
}

fn load_in_transaction(
    conn: &mut rusqlite::Connection,
    batches: &mut Batches,
    total_hint: u64,
    started: Instant,
) -> Result<ImportStats, ImportError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(CatalogError::from)?;
    let existing: i64 = tx
        .query_row("SELECT COUNT(*) FROM backups", [], |r| r.get(0))
        .map_err(CatalogError::from)?;
    let bulk = total_hint >= BULK_MIN && total_hint >= existing.max(0) as u64;
    let mut recreate = Vec::new();
    if bulk {
        // Secondary indexes and triggers, as SQLite itself stores them.
        let derived: Vec<(String, String, String)> = tx
            .prepare(
                "SELECT type, name, sql FROM sqlite_master WHERE tbl_name = 'backups' \
                 AND type IN ('index', 'trigger') AND sql IS NOT NULL ORDER BY type, name",
            )
            .and_then(|mut st| {
                st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect()
            })
            .map_err(CatalogError::from)?;
        for (kind, name, sql) in derived {
            tx.execute_batch(&format!("DROP {} \"{name}\"", kind.to_uppercase()))
                .map_err(CatalogError::from)?;
            recreate.push(sql);
        }
    }

    // Whether rowids will still follow (created_at, id) among live rows after the load:
    // they did before (the flag), and every new live row sorts after the previous one.
    let mut in_order: bool = tx
        .query_row(
            "SELECT value FROM catalog_flags WHERE key = 'backups_in_creation_order'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map_err(CatalogError::from)?
        == 1;
    let mut last: Option<(i64, String)> = tx
        .query_row(
            "SELECT created_at, id FROM backups WHERE deleted = 0 \
             ORDER BY created_at DESC, id DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .ok();

    let placeholders = vec!["?"; NCOLS].join(", ");
    let mut records = 0u64;
    {
        let mut insert = tx
            .prepare(&format!(
                "INSERT INTO backups ({INSERT_COLUMNS}) VALUES ({placeholders})"
            ))
            .map_err(CatalogError::from)?;
        while let Some(batch) = batches.blocking_recv() {
            for row in &batch? {
                if let Err(e) = insert.execute(row_params(row).as_slice()) {
                    if e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation) {
                        let id = &row.key[0];
                        return Err(bad(
                            row.line,
                            format!("backup {id} already exists in the catalog"),
                        ));
                    }
                    return Err(CatalogError::from(e).into());
                }
                records += 1;
                if row.deleted == 0 {
                    let key = (row.created_at, row.key[0].clone());
                    if last.as_ref().is_some_and(|l| key < *l) {
                        in_order = false;
                    }
                    last = Some(key);
                }
            }
        }
    }
    tracing::info!(records, elapsed = ?started.elapsed(), "rows inserted");
    if bulk {
        for sql in &recreate {
            let t = Instant::now();
            tx.execute_batch(sql).map_err(CatalogError::from)?;
            tracing::debug!(elapsed = ?t.elapsed(), %sql, "rebuilt");
        }
        tx.execute_batch("INSERT INTO backups_name_fts (backups_name_fts) VALUES ('rebuild');")
            .map_err(CatalogError::from)?;
        tx.execute_batch(RECOUNT).map_err(CatalogError::from)?;
        // The ordering trigger was dropped for the load; record what was loaded.
        tx.execute(
            "UPDATE catalog_flags SET value = ?1 WHERE key = 'backups_in_creation_order'",
            [i64::from(in_order)],
        )
        .map_err(CatalogError::from)?;
        tracing::info!(elapsed = ?started.elapsed(), "indexes rebuilt");
    }
    tx.commit().map_err(CatalogError::from)?;
    tracing::info!(elapsed = ?started.elapsed(), "committed");
    Ok(ImportStats { records, bulk })
}
