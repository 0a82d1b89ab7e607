//! Bulk loading on SQLite, on one rusqlite connection in one transaction: a prepared
//! single-row INSERT (no per-value copies through an async driver), secondary indexes,
//! triggers and the trigram index rebuilt once from the loaded table, and a rollback
//! journal instead of the WAL when no one else has the database open, so that the data
//! is written once rather than appended to the WAL and copied again at checkpoint.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rusqlite::{ErrorCode, OptionalExtension, ToSql, TransactionBehavior};

use crate::CatalogError;
use crate::import::{
    BULK_MIN, Batches, INSERT_COLUMNS, ImportError, ImportStats, NCOLS, Row27, bad,
};

/// Binds the row's values in `INSERT_COLUMNS` order, borrowed.
fn bind_row(insert: &mut rusqlite::Statement<'_>, row: &Row27) -> rusqlite::Result<()> {
    let mut i = 0;
    let mut bind = |v: &dyn ToSql| {
        i += 1;
        insert.raw_bind_parameter(i, v)
    };
    for k in 0..4 {
        bind(&row.key(k))?;
    }
    bind(&row.created_at)?;
    for t in row.texts() {
        bind(&t)?;
    }
    for v in &row.counts {
        bind(v)?;
    }
    for v in &row.times {
        bind(v)?;
    }
    bind(&row.deleted)?;
    debug_assert_eq!(i, NCOLS);
    Ok(())
}

/// Loads the batches into the database at `path`, all or nothing.
pub(crate) fn load(
    path: &str,
    mut batches: Batches,
    total_hint: u64,
) -> Result<ImportStats, ImportError> {
    let started = Instant::now();
    // Opened before the connection so that it is closed after it: closing any descriptor
    // of a file drops all of the process's POSIX locks on it, SQLite's included.
    let file = std::fs::File::open(path).ok();
    let mut conn = rusqlite::Connection::open(path).map_err(CatalogError::from)?;
    conn.busy_timeout(Duration::from_secs(10))
        .map_err(CatalogError::from)?;
    // The whole working set in SQLite's cache: a spilled page is written and read back
    // (a million rows make 1.1 GB; at a 1 GiB limit the last index build spilled and
    // took twice as long). The cache grows only as far as it is used.
    conn.execute_batch(
        "PRAGMA cache_size = -2097152; PRAGMA synchronous = FULL; PRAGMA temp_store = MEMORY;",
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
    let flush = file.as_ref().filter(|_| rollback_journal);
    let result = load_in_transaction(&mut conn, &mut batches, total_hint, started, flush);
    if rollback_journal
        && let Err(e) = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0))
    {
        // The load is committed either way; the next connection that finds the file out
        // of WAL mode switches it back.
        tracing::warn!(error = %e, "could not switch the catalog back to WAL mode");
    }
    drop(conn);
    drop(file);
    result
}

/// Commits; with `flush`, the database file, the disk writes back what SQLite writes
/// during the commit meanwhile, instead of all of it in the final fsync (writeback would
/// otherwise wait for a tenth of memory to be dirty).
fn commit(tx: rusqlite::Transaction<'_>, flush: Option<&std::fs::File>) -> rusqlite::Result<()> {
    let Some(file) = flush else {
        return tx.commit();
    };
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                let t = Instant::now();
                let _ = file.sync_data();
                if t.elapsed() < Duration::from_millis(5) {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        });
        let r = tx.commit();
        done.store(true, Ordering::Relaxed);
        r
    })
}

fn load_in_transaction(
    conn: &mut rusqlite::Connection,
    batches: &mut Batches,
    total_hint: u64,
    started: Instant,
    flush: Option<&std::fs::File>,
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
    // What the dropped counting trigger would have added, counted on the way in: a
    // recount from the table afterwards reads it through an index and fetches every
    // row (1.8 s of a 21 s load of a million).
    let mut counts = LiveCounts::default();
    // The input line of each inserted row, by rowid from `first_pk` on (rowids are handed
    // out one after the other): a bulk load checks ids against the catalog's only when
    // it rebuilds the unique index, and must still name the line.
    let mut first_pk: Option<i64> = None;
    let mut lines: Vec<u64> = Vec::new();
    {
        let mut insert = tx
            .prepare(&format!(
                "INSERT INTO backups ({INSERT_COLUMNS}) VALUES ({placeholders})"
            ))
            .map_err(CatalogError::from)?;
        while let Some(batch) = batches.blocking_recv() {
            for row in &batch? {
                if let Err(e) = bind_row(&mut insert, row).and_then(|()| insert.raw_execute()) {
                    if e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation) {
                        let id = row.key(0);
                        return Err(bad(
                            row.line,
                            format!("backup {id} already exists in the catalog"),
                        ));
                    }
                    return Err(CatalogError::from(e).into());
                }
                records += 1;
                if bulk {
                    first_pk.get_or_insert_with(|| tx.last_insert_rowid());
                    lines.push(row.line);
                }
                if row.deleted == 0 {
                    if bulk {
                        counts.add(row.key(2), row.key(1), row.key(3));
                    }
                    let id = row.key(0);
                    if let Some((at, last_id)) = &mut last {
                        if (row.created_at, id) < (*at, last_id.as_str()) {
                            in_order = false;
                        }
                        *at = row.created_at;
                        last_id.clear();
                        last_id.push_str(id);
                    } else {
                        last = Some((row.created_at, id.to_owned()));
                    }
                }
            }
        }
    }
    tracing::info!(records, elapsed = ?started.elapsed(), "rows inserted");
    if bulk {
        for sql in &recreate {
            let t = Instant::now();
            if let Err(e) = tx.execute_batch(sql) {
                if e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation)
                    && let Some(pk) = first_pk
                    && let Some(dup) = first_existing(&tx, pk, &lines)?
                {
                    return Err(dup);
                }
                return Err(CatalogError::from(e).into());
            }
            tracing::debug!(elapsed = ?t.elapsed(), %sql, "rebuilt");
        }
        tx.execute_batch("INSERT INTO backups_name_fts (backups_name_fts) VALUES ('rebuild');")
            .map_err(CatalogError::from)?;
        // The usage triggers were dropped too.
        tx.execute_batch(crate::quotas::RECOUNT_BACKUP_USAGE)
            .map_err(CatalogError::from)?;
        // And so were the generation triggers.
        tx.execute_batch(crate::import::NEW_GENERATIONS_SQLITE)
            .map_err(CatalogError::from)?;
        let mut add = tx
            .prepare(
                "INSERT INTO backup_counts (project_id, volume_id, status, n) \
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT (project_id, volume_id, status) \
                 DO UPDATE SET n = n + excluded.n",
            )
            .map_err(CatalogError::from)?;
        for ((project, volume, status), n) in counts.iter() {
            add.execute(rusqlite::params![project, volume, status, n])
                .map_err(CatalogError::from)?;
        }
        drop(add);
        // The ordering trigger was dropped for the load; record what was loaded.
        tx.execute(
            "UPDATE catalog_flags SET value = ?1 WHERE key = 'backups_in_creation_order'",
            [i64::from(in_order)],
        )
        .map_err(CatalogError::from)?;
        tracing::info!(elapsed = ?started.elapsed(), "indexes rebuilt");
    }
    commit(tx, flush).map_err(CatalogError::from)?;
    tracing::info!(elapsed = ?started.elapsed(), "committed");
    Ok(ImportStats { records, bulk })
}

/// The first loaded row (rowid `first_pk` and on) whose id was already in the catalog,
/// as the error that names its line.
fn first_existing(
    tx: &rusqlite::Transaction<'_>,
    first_pk: i64,
    lines: &[u64],
) -> Result<Option<ImportError>, ImportError> {
    // A plain index on id for the search (without one, SQLite may scan the table once
    // per existing row); the failed load is rolled back with it.
    tx.execute_batch("CREATE INDEX backups_import_ids ON backups (id)")
        .map_err(CatalogError::from)?;
    let found: Option<(i64, String)> = tx
        .query_row(
            "SELECT n.pk, n.id FROM backups n JOIN backups o ON o.id = n.id AND o.pk < ?1 \
             WHERE n.pk >= ?1 ORDER BY n.pk LIMIT 1",
            [first_pk],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(CatalogError::from)?;
    Ok(found.map(|(pk, id)| {
        let line = usize::try_from(pk - first_pk)
            .ok()
            .and_then(|i| lines.get(i))
            .copied()
            .unwrap_or_default();
        bad(line, format!("backup {id} already exists in the catalog"))
    }))
}

/// Live rows per (project, volume, status), as `backup_counts` keeps them.
#[derive(Default)]
struct LiveCounts(HashMap<String, HashMap<String, HashMap<String, i64>>>);

impl LiveCounts {
    /// Allocates only for a combination not seen before (a few thousand in a million).
    fn add(&mut self, project: &str, volume: &str, status: &str) {
        fn slot<'m, V: Default>(map: &'m mut HashMap<String, V>, key: &str) -> &'m mut V {
            if !map.contains_key(key) {
                map.insert(key.to_owned(), V::default());
            }
            map.get_mut(key).expect("inserted above")
        }
        *slot(slot(slot(&mut self.0, project), volume), status) += 1;
    }

    fn iter(&self) -> impl Iterator<Item = ((&str, &str, &str), i64)> {
        self.0.iter().flat_map(|(p, volumes)| {
            volumes.iter().flat_map(move |(v, statuses)| {
                statuses
                    .iter()
                    .map(move |(s, n)| ((p.as_str(), v.as_str(), s.as_str()), *n))
            })
        })
    }
}
