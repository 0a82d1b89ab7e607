//! Reads that answer API requests, through one door for both engines.
//!
//! On PostgreSQL they go through the sqlx pool. On SQLite they run on our own read-only
//! connections, on the calling thread for small reads and on the blocking pool for large
//! ones: sqlx's SQLite driver hands every statement to a worker thread and back, and for
//! a ten-row page those two thread switches cost more than the query itself. The SQL is
//! the same text either way; only the executor differs.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use rusqlite::OpenFlags;
use sqlx::Row as _;
use sqlx::any::AnyRow;

use crate::{Catalog, CatalogError};

/// A value bound to a placeholder.
#[derive(Debug, Clone)]
pub(crate) enum Value {
    Text(String),
    Int(i64),
}

/// A text value to bind.
pub(crate) fn text(v: &str) -> Value {
    Value::Text(v.to_owned())
}

/// SQL text with `$n` placeholders numbered in order of appearance, each used once,
/// so that binding by position (SQLite) and by number (PostgreSQL) agree.
#[derive(Default, Debug, Clone)]
pub(crate) struct Sql {
    pub text: String,
    pub binds: Vec<Value>,
}

impl Sql {
    pub fn push(&mut self, s: &str) -> &mut Self {
        self.text.push_str(s);
        self
    }

    pub fn bind(&mut self, v: Value) -> &mut Self {
        use std::fmt::Write as _;
        self.binds.push(v);
        let _ = write!(self.text, "${}", self.binds.len());
        self
    }

    /// Appends `tail`: its text, its placeholders renumbered after this one's.
    pub fn append(&mut self, tail: &Sql) -> &mut Self {
        let mut rest = tail.text.as_str();
        let mut n = 0;
        while let Some(i) = rest.find('$') {
            self.push(&rest[..i]);
            let digits = rest[i + 1..].bytes().take_while(u8::is_ascii_digit).count();
            rest = &rest[i + 1 + digits..];
            self.bind(tail.binds[n].clone());
            n += 1;
        }
        self.push(rest)
    }

    /// Binds a text value, or writes `NULL` for none.
    pub fn bind_opt(&mut self, v: Option<&str>) -> &mut Self {
        match v {
            Some(v) => self.bind(text(v)),
            None => self.push("NULL"),
        }
    }

    pub(crate) fn into_query(
        self,
    ) -> sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments> {
        let mut q = sqlx::query(sqlx::AssertSqlSafe(self.text));
        for b in self.binds {
            q = match b {
                Value::Text(s) => q.bind(s),
                Value::Int(i) => q.bind(i),
            };
        }
        q
    }
}

/// A result row of either engine, read by column position.
pub(crate) trait DbRow {
    fn len(&self) -> usize;
    fn opt_text(&self, i: usize) -> Result<Option<String>, CatalogError>;
    fn opt_int(&self, i: usize) -> Result<Option<i64>, CatalogError>;
    /// A non-NULL value of whatever type the column holds.
    fn value(&self, i: usize) -> Result<Value, CatalogError>;

    fn text(&self, i: usize) -> Result<String, CatalogError> {
        self.opt_text(i)?
            .ok_or_else(|| CatalogError::Engine(format!("column {i} is NULL")))
    }

    fn int(&self, i: usize) -> Result<i64, CatalogError> {
        self.opt_int(i)?
            .ok_or_else(|| CatalogError::Engine(format!("column {i} is NULL")))
    }
}

impl DbRow for AnyRow {
    fn len(&self) -> usize {
        sqlx::Row::len(self)
    }

    fn value(&self, i: usize) -> Result<Value, CatalogError> {
        match self.try_get::<i64, _>(i) {
            Ok(v) => Ok(Value::Int(v)),
            Err(_) => Ok(Value::Text(self.try_get(i)?)),
        }
    }
    fn opt_text(&self, i: usize) -> Result<Option<String>, CatalogError> {
        Ok(self.try_get(i)?)
    }

    fn opt_int(&self, i: usize) -> Result<Option<i64>, CatalogError> {
        Ok(self.try_get(i)?)
    }
}

impl DbRow for rusqlite::Row<'_> {
    fn len(&self) -> usize {
        self.as_ref().column_count()
    }

    fn value(&self, i: usize) -> Result<Value, CatalogError> {
        match self.get_ref(i)? {
            rusqlite::types::ValueRef::Integer(v) => Ok(Value::Int(v)),
            rusqlite::types::ValueRef::Text(t) => {
                Ok(Value::Text(String::from_utf8_lossy(t).into_owned()))
            }
            other => Err(CatalogError::Engine(format!(
                "unexpected {:?} in column {i}",
                other.data_type()
            ))),
        }
    }
    fn opt_text(&self, i: usize) -> Result<Option<String>, CatalogError> {
        Ok(self.get(i)?)
    }

    fn opt_int(&self, i: usize) -> Result<Option<i64>, CatalogError> {
        Ok(self.get(i)?)
    }
}

/// Turns a row into a value; plain function pointers, so they cross threads freely.
pub(crate) type RowMap<T> = fn(&dyn DbRow) -> Result<T, CatalogError>;

/// Whether a read may take long enough to deserve the blocking pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cost {
    Small,
    Large,
}

/// Read-only SQLite connections, each used by one caller at a time.
pub(crate) struct SqliteReaders {
    conns: Vec<Mutex<rusqlite::Connection>>,
    next: AtomicUsize,
}

impl std::fmt::Debug for SqliteReaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteReaders")
            .field("conns", &self.conns.len())
            .finish()
    }
}

impl SqliteReaders {
    /// Opens `n` read-only connections to an existing (migrated) database file.
    pub fn open(path: &str, n: usize) -> Result<Self, CatalogError> {
        let mut conns = Vec::with_capacity(n);
        for _ in 0..n.max(1) {
            let conn = rusqlite::Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY
                    | OpenFlags::SQLITE_OPEN_NO_MUTEX
                    | OpenFlags::SQLITE_OPEN_URI,
            )?;
            // Reads come through the memory map; the page cache only needs to be small.
            conn.execute_batch(
                "PRAGMA busy_timeout = 10000; PRAGMA cache_size = -8192; \
                 PRAGMA mmap_size = 1073741824; PRAGMA temp_store = MEMORY;",
            )?;
            conn.set_prepared_statement_cache_capacity(256);
            conns.push(Mutex::new(conn));
        }
        Ok(Self {
            conns,
            next: AtomicUsize::new(0),
        })
    }

    fn run<T>(&self, sql: &Sql, map: RowMap<T>) -> Result<Vec<T>, CatalogError> {
        // A free connection if there is one, else wait on the next in turn.
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = self.conns.len();
        let guard = (0..n)
            .find_map(|k| self.conns[(start + k) % n].try_lock().ok())
            .map_or_else(|| self.conns[start % n].lock(), Ok)
            .map_err(|_| CatalogError::Engine("a reader connection was poisoned".into()))?;
        let mut stmt = guard.prepare_cached(&sql.text)?;
        for (i, b) in sql.binds.iter().enumerate() {
            match b {
                Value::Text(s) => stmt.raw_bind_parameter(i + 1, s)?,
                Value::Int(v) => stmt.raw_bind_parameter(i + 1, v)?,
            }
        }
        let mut rows = stmt.raw_query();
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            out.push(map(row)?);
        }
        Ok(out)
    }
}

impl Catalog {
    /// Runs a read and maps its rows.
    pub(crate) async fn fetch<T: Send + 'static>(
        &self,
        sql: Sql,
        cost: Cost,
        map: RowMap<T>,
    ) -> Result<Vec<T>, CatalogError> {
        match &self.readers {
            Some(readers) if cost == Cost::Small => readers.run(&sql, map),
            Some(readers) => {
                let readers = readers.clone();
                tokio::task::spawn_blocking(move || readers.run(&sql, map))
                    .await
                    .map_err(|e| CatalogError::Engine(format!("read task failed: {e}")))?
            }
            None => {
                let rows = sql.into_query().fetch_all(self.pool()).await?;
                rows.iter().map(|r| map(r)).collect()
            }
        }
    }

    /// The first row, if any.
    pub(crate) async fn fetch_first<T: Send + 'static>(
        &self,
        sql: Sql,
        map: RowMap<T>,
    ) -> Result<Option<T>, CatalogError> {
        Ok(self.fetch(sql, Cost::Small, map).await?.into_iter().next())
    }
}
