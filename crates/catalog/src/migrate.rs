//! Schema migrations, embedded in the binary: one ordered list per dialect, applied by
//! sqlx's migrator (which records applied versions and refuses edited ones).

use std::borrow::Cow;

use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};

use crate::{Catalog, CatalogError, Dialect};

const SQLITE: &[(i64, &str, &str)] = &[
    (
        1,
        "catalog",
        include_str!("../migrations/sqlite/0001_catalog.sql"),
    ),
    (
        2,
        "volumes",
        include_str!("../migrations/sqlite/0002_volumes.sql"),
    ),
    (
        3,
        "jobs",
        include_str!("../migrations/sqlite/0003_jobs.sql"),
    ),
    (
        4,
        "cluster",
        include_str!("../migrations/sqlite/0004_cluster.sql"),
    ),
    (
        5,
        "name scope",
        include_str!("../migrations/sqlite/0005_name_scope.sql"),
    ),
    (
        6,
        "job face",
        include_str!("../migrations/sqlite/0006_job_face.sql"),
    ),
    (
        7,
        "quotas",
        include_str!("../migrations/sqlite/0007_quotas.sql"),
    ),
    (
        8,
        "sharing",
        include_str!("../migrations/sqlite/0008_sharing.sql"),
    ),
    (
        9,
        "policies",
        include_str!("../migrations/sqlite/0009_policies.sql"),
    ),
    (
        10,
        "name index merges",
        include_str!("../migrations/sqlite/0010_name_index_merges.sql"),
    ),
    (
        11,
        "backup generations",
        include_str!("../migrations/sqlite/0011_backup_generations.sql"),
    ),
];
const POSTGRES: &[(i64, &str, &str)] = &[
    (
        1,
        "catalog",
        include_str!("../migrations/postgres/0001_catalog.sql"),
    ),
    (
        2,
        "volumes",
        include_str!("../migrations/postgres/0002_volumes.sql"),
    ),
    (
        3,
        "jobs",
        include_str!("../migrations/postgres/0003_jobs.sql"),
    ),
    (
        4,
        "cluster",
        include_str!("../migrations/postgres/0004_cluster.sql"),
    ),
    (
        5,
        "name trigrams by project",
        include_str!("../migrations/postgres/0005_name_trgm_by_project.sql"),
    ),
    (
        6,
        "job face",
        include_str!("../migrations/postgres/0006_job_face.sql"),
    ),
    (
        7,
        "quotas",
        include_str!("../migrations/postgres/0007_quotas.sql"),
    ),
    (
        8,
        "sharing",
        include_str!("../migrations/postgres/0008_sharing.sql"),
    ),
    (
        9,
        "policies",
        include_str!("../migrations/postgres/0009_policies.sql"),
    ),
    (
        10,
        "backup generations",
        include_str!("../migrations/postgres/0010_backup_generations.sql"),
    ),
];

pub(crate) async fn run(catalog: &Catalog) -> Result<(), CatalogError> {
    let list = match catalog.dialect {
        Dialect::Sqlite => SQLITE,
        Dialect::Postgres => POSTGRES,
    };
    let migrations = list
        .iter()
        .map(|&(version, description, sql)| {
            Migration::new(
                version,
                Cow::Borrowed(description),
                MigrationType::Simple,
                sql.into_sql_str(),
                false,
            )
        })
        .collect();
    Migrator::with_migrations(migrations)
        .run(catalog.pool())
        .await?;
    Ok(())
}
