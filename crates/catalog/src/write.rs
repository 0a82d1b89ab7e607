//! Writes: every change goes through the sqlx pool (`SQLite`'s one writer, or
//! `PostgreSQL`), as one statement or one transaction. A status change is a conditional
//! `UPDATE … WHERE status IN (…)` whose row count says whether it happened, so two
//! requests racing for the same volume cannot both win (Cinder's `conditional_update`).

use sqlx::Row as _;

use crate::read::{Sql, Value, text};
use crate::{Catalog, CatalogError};

/// A transaction on the pool. On `SQLite` it takes the write lock at its first write, so
/// every transaction here starts with one.
pub(crate) type Tx = sqlx::Transaction<'static, sqlx::Any>;

/// `UPDATE table` of a live row's `display_name` and `display_description` (each
/// when given; `Some(None)` makes it null) and `updated_at`: the rename of a backup or
/// a snapshot.
pub(crate) fn rename_sql(
    table: &str,
    id: &str,
    name: Option<Option<&str>>,
    description: Option<Option<&str>>,
) -> Sql {
    let mut sql = Sql::default();
    sql.push("UPDATE ")
        .push(table)
        .push(" SET updated_at = ")
        .bind(Value::Int(crate::ts::now_micros()));
    if let Some(n) = name {
        sql.push(", display_name = ");
        sql.bind_opt(n);
    }
    if let Some(d) = description {
        sql.push(", display_description = ");
        sql.bind_opt(d);
    }
    sql.push(" WHERE deleted = 0 AND id = ").bind(text(id));
    sql
}

/// Maps a write's error: a unique-key violation is [`CatalogError::AlreadyExists`].
pub(crate) fn write_error(e: sqlx::Error) -> CatalogError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => CatalogError::AlreadyExists,
        _ => e.into(),
    }
}

impl Catalog {
    /// Runs one statement; returns the rows it changed.
    pub(crate) async fn execute(&self, sql: Sql) -> Result<u64, CatalogError> {
        Ok(sql
            .into_query()
            .execute(self.pool())
            .await
            .map_err(write_error)?
            .rows_affected())
    }

    /// On SQLite the transaction takes the write lock at once (`BEGIN IMMEDIATE`): a
    /// deferred one that reads first and then writes cannot wait for the lock when
    /// another writer holds it, and fails with "database is locked" instead.
    pub(crate) async fn begin(&self) -> Result<Tx, CatalogError> {
        Ok(match self.dialect() {
            crate::Dialect::Sqlite => self.pool().begin_with("BEGIN IMMEDIATE").await?,
            crate::Dialect::Postgres => self.pool().begin().await?,
        })
    }
}

/// Runs one statement inside a transaction; returns the rows it changed.
pub(crate) async fn exec(tx: &mut Tx, sql: Sql) -> Result<u64, CatalogError> {
    Ok(sql
        .into_query()
        .execute(&mut **tx)
        .await
        .map_err(write_error)?
        .rows_affected())
}

/// The first column of the first row, as an integer (a `COUNT(*)`).
pub(crate) async fn query_int(tx: &mut Tx, sql: Sql) -> Result<i64, CatalogError> {
    let row = sql.into_query().fetch_one(&mut **tx).await?;
    Ok(row.try_get::<i64, _>(0)?)
}
