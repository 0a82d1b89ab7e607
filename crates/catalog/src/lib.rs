//! The catalog: backup, volume and snapshot records on SQLite (embedded default) or
//! PostgreSQL (shared by many nodes), behind one concrete type.
//!
//! Both engines run the same SQL through sqlx's `Any` driver; the few places where they
//! differ (substring search, dialect functions, bulk-load tricks) branch on [`Dialect`].
//! Timestamps are stored as microseconds since the Unix epoch (UTC) so that both engines
//! compare, sort and index them identically.

mod backup_write;
mod backups;
mod cluster;
mod import;
mod import_sqlite;
mod jobs;
mod listing;
mod migrate;
mod policies;
mod quotas;
mod read;
mod sharing;
mod snapshots;
pub mod ts;
mod volumes;
mod write;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, ConnectOptions, Executor, Row};

pub use backup_write::{DeleteStart, NewBackup, RestoreEnd, RestoreRefused, RestoreTarget};
pub use backups::{
    BackupQuery, BackupRecord, BackupSummary, Column, ColumnKind, Filter, ListPage, SortDir,
    SortKey,
};
pub use cluster::{LockMode, NodeRecord};
pub use import::{ImportError, ImportStats};
pub use jobs::{Job, JobKind, JobOutcome, JobRecord, NewJob, QueueStats};
pub use policies::{
    AssociateRefused, PolicyBackup, PolicyRecord, PolicyResource, PolicyTask, PolicyTaskRef,
    TaskQuery,
};
pub use quotas::{QUOTA_RESOURCES, QuotaUsage};
pub use sharing::{ShareQuery, ShareRecord, ShareRefused, ShareSort};
pub use snapshots::{NewSnapshot, SnapshotQuery, SnapshotRecord};
pub use volumes::{
    AttachmentRecord, DeleteCheck, NewAttachment, NewVolume, Previous, VolumeQuery, VolumeRecord,
    WorkOn,
};

/// Errors of the catalog. Callers branch on the variant; the source is kept for logs.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The record asked for does not exist (or is soft-deleted).
    #[error("not found")]
    NotFound,
    /// A record with the same unique key exists already.
    #[error("already exists")]
    AlreadyExists,
    /// The catalog URL or its options are unusable.
    #[error("invalid catalog configuration: {0}")]
    Config(String),
    /// The database failed or could not be reached; a retry may help.
    #[error("catalog unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// A create would take a project past a quota: `in_use` before it, `requested` by it.
    #[error("quota exceeded for {resource}: {in_use} used of {limit}, {requested} requested")]
    OverQuota {
        resource: &'static str,
        limit: i64,
        in_use: i64,
        requested: i64,
    },
    /// A job's run tried to settle its job, but the job is another worker's now (its
    /// lease lapsed and another node claimed it): nothing was changed.
    #[error("job {0} is held by another worker")]
    JobTaken(i64),
    /// The database engine refused a read (the message says why).
    #[error("catalog engine error: {0}")]
    Engine(String),
    /// The schema could not be brought up to date.
    #[error("catalog migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl From<sqlx::Error> for CatalogError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::RowNotFound => CatalogError::NotFound,
            other => CatalogError::Unavailable(other),
        }
    }
}

impl From<rusqlite::Error> for CatalogError {
    fn from(e: rusqlite::Error) -> Self {
        CatalogError::Engine(e.to_string())
    }
}

/// Which SQL engine sits behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// Handle to the catalog. Cheap to clone (a pool inside).
#[derive(Clone)]
pub struct Catalog {
    pool: AnyPool,
    dialect: Dialect,
    /// SQLite only: the connections API reads run on (see [`read`]).
    readers: Option<std::sync::Arc<read::SqliteReaders>>,
    /// SQLite only: the database file.
    sqlite_path: Option<String>,
    /// The configured default quota limits.
    quota_defaults: quotas::QuotaDefaults,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog")
            .field("dialect", &self.dialect)
            .finish_non_exhaustive()
    }
}

/// How to open a catalog.
#[derive(Debug, Clone)]
pub struct CatalogOptions {
    /// `sqlite://PATH` or `postgres://…`.
    pub url: String,
    /// Connections in the pool.
    pub max_connections: u32,
}

impl CatalogOptions {
    /// The embedded default: a SQLite file inside the data directory.
    pub fn sqlite_in(data_dir: &Path) -> Self {
        Self {
            url: format!("sqlite://{}", data_dir.join("catalog.db").display()),
            max_connections: 8,
        }
    }
}

impl Catalog {
    /// Opens (creating if needed) the catalog and brings its schema up to date.
    pub async fn open(options: &CatalogOptions) -> Result<Self, CatalogError> {
        Self::open_with(options, true).await
    }

    /// `readers`: open the SQLite read connections (a bulk load does without them).
    pub(crate) async fn open_with(
        options: &CatalogOptions,
        readers: bool,
    ) -> Result<Self, CatalogError> {
        sqlx::any::install_default_drivers();
        let dialect = if options.url.starts_with("sqlite:") {
            Dialect::Sqlite
        } else if options.url.starts_with("postgres://") || options.url.starts_with("postgresql://")
        {
            Dialect::Postgres
        } else {
            return Err(CatalogError::Config(
                "catalog URL must start with sqlite:// or postgres://".into(),
            ));
        };
        let url = match dialect {
            // rwc: create the file on first use.
            Dialect::Sqlite if !options.url.contains('?') => format!("{}?mode=rwc", options.url),
            _ => options.url.clone(),
        };
        // Statements are traced at TRACE; slow ones are not dumped (a bulk INSERT's text
        // runs to megabytes).
        let connect = AnyConnectOptions::from_str(&url)
            .map_err(|e| CatalogError::Config(e.to_string()))?
            .log_statements(tracing::log::LevelFilter::Trace)
            .log_slow_statements(tracing::log::LevelFilter::Off, Duration::from_secs(1));
        let pool = AnyPoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if dialect == Dialect::Sqlite {
                        // WAL lets readers run beside the one writer. Switching modes takes
                        // a lock that busy_timeout cannot wait for, so a connection only
                        // asks when the file is not in WAL yet (a new database, or one a
                        // bulk load left in rollback mode); otherwise opening beside a busy
                        // process could fail at once.
                        let mode: String = sqlx::query("PRAGMA journal_mode")
                            .fetch_one(&mut *conn)
                            .await?
                            .try_get(0)?;
                        if !mode.eq_ignore_ascii_case("wal") {
                            conn.execute("PRAGMA journal_mode = WAL").await?;
                        }
                        // FULL keeps every commit durable (a backup's `available` must
                        // survive power loss).
                        conn.execute(
                            "PRAGMA synchronous = FULL; \
                             PRAGMA busy_timeout = 10000; PRAGMA cache_size = -32768; \
                             PRAGMA mmap_size = 1073741824; PRAGMA temp_store = MEMORY;",
                        )
                        .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(connect)
            .await?;
        let mut catalog = Self {
            pool,
            dialect,
            readers: None,
            sqlite_path: None,
            quota_defaults: quotas::QuotaDefaults::default(),
        };
        migrate::run(&catalog).await?;
        if dialect == Dialect::Sqlite {
            let path = url
                .trim_start_matches("sqlite://")
                .trim_start_matches("sqlite:")
                .split('?')
                .next()
                .unwrap_or_default()
                .to_owned();
            if readers {
                let readers = read::SqliteReaders::open(&path, options.max_connections as usize)?;
                catalog.readers = Some(std::sync::Arc::new(readers));
            }
            catalog.sqlite_path = Some(path);
        }
        Ok(catalog)
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The pool's connections: `(open, idle)`.
    pub fn pool_stats(&self) -> (u32, u32) {
        (
            self.pool.size(),
            u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX),
        )
    }

    /// Cheap liveness probe of the database.
    pub async fn ping(&self) -> Result<(), CatalogError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Closes the pool, waiting for connections in use to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}
