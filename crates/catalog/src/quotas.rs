//! Quotas: per-project limits on backups, backup gigabytes, volumes, gigabytes and
//! snapshots.
//!
//! Usage is kept by triggers on the three tables (migration 0007), so it is exact
//! whichever path wrote a row. A create is reserved and committed at once: its insert
//! moves the usage rows inside its own transaction, then [`check_quota`] reads them back
//! in that transaction and rolls everything back when a limit is exceeded. On
//! `PostgreSQL` the trigger's update holds the project's usage row until commit, so
//! concurrent creates of one project, on any number of nodes, pass the check one
//! after the other, each seeing the ones before; `SQLite` has one writer at a time.
//! Nothing is ever "reserved" apart from being used (`reserved` is always 0).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use sqlx::Row as _;

use crate::read::{Sql, Value, text};
use crate::write::{Tx, exec};
use crate::{Catalog, CatalogError};

/// The resources, in the order Cinder lists them.
pub const QUOTA_RESOURCES: [&str; 5] = [
    "volumes",
    "snapshots",
    "gigabytes",
    "backups",
    "backup_gigabytes",
];

/// The configured default limits (-1: unlimited), shared by every clone of a catalog.
#[derive(Debug, Clone, Default)]
pub(crate) struct QuotaDefaults(Arc<RwLock<BTreeMap<&'static str, i64>>>);

impl QuotaDefaults {
    pub(crate) fn get(&self, resource: &str) -> i64 {
        self.0
            .read()
            .ok()
            .and_then(|m| m.get(resource).copied())
            .unwrap_or(-1)
    }
}

/// One resource of a project: its limit (the project's own, else the default) and
/// what it uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaUsage {
    pub resource: &'static str,
    pub limit: i64,
    pub in_use: i64,
}

/// Checks, inside the transaction that just inserted rows of `project`, that none of
/// `requested` (resource, amount added) took its usage past its limit.
pub(crate) async fn check_quota(
    tx: &mut Tx,
    defaults: &QuotaDefaults,
    project: &str,
    requested: &[(&'static str, i64)],
) -> Result<(), CatalogError> {
    for &(resource, amount) in requested {
        if amount <= 0 {
            continue;
        }
        let mut sql = Sql::default();
        sql.push("SELECT hard_limit FROM quota_limits WHERE project_id = ")
            .bind(text(project))
            .push(" AND resource = ")
            .bind(text(resource));
        let own = sql.into_query().fetch_optional(&mut **tx).await?;
        let limit = match own {
            Some(row) => row.try_get::<i64, _>(0)?,
            None => defaults.get(resource),
        };
        if limit < 0 {
            continue;
        }
        let mut sql = Sql::default();
        sql.push("SELECT in_use FROM quota_usages WHERE project_id = ")
            .bind(text(project))
            .push(" AND resource = ")
            .bind(text(resource));
        let in_use = match sql.into_query().fetch_optional(&mut **tx).await? {
            Some(row) => row.try_get::<i64, _>(0)?,
            None => 0,
        };
        if in_use > limit {
            return Err(CatalogError::OverQuota {
                resource,
                limit,
                in_use: in_use - amount,
                requested: amount,
            });
        }
    }
    Ok(())
}

/// Recounts the backups' usage from the table (after a bulk load bypassed the trigger).
pub(crate) const RECOUNT_BACKUP_USAGE: &str = "DELETE FROM quota_usages \
    WHERE resource IN ('backups', 'backup_gigabytes'); \
    INSERT INTO quota_usages (project_id, resource, in_use) \
    SELECT project_id, 'backups', COUNT(*) FROM backups WHERE deleted = 0 GROUP BY project_id; \
    INSERT INTO quota_usages (project_id, resource, in_use) \
    SELECT project_id, 'backup_gigabytes', SUM(size) FROM backups WHERE deleted = 0 \
    GROUP BY project_id";

impl Catalog {
    /// Sets the default limits (the configuration's), for every clone of this catalog.
    pub fn set_quota_defaults(&self, defaults: &BTreeMap<&'static str, i64>) {
        if let Ok(mut m) = self.quota_defaults.0.write() {
            m.clone_from(defaults);
        }
    }

    /// The default limit of a resource.
    pub fn quota_default(&self, resource: &str) -> i64 {
        self.quota_defaults.get(resource)
    }

    /// Every resource of `project`: limit and usage.
    pub async fn quota_usages(&self, project: &str) -> Result<Vec<QuotaUsage>, CatalogError> {
        let limits = self
            .per_resource("SELECT resource, hard_limit FROM quota_limits", project)
            .await?;
        let used = self
            .per_resource("SELECT resource, in_use FROM quota_usages", project)
            .await?;
        Ok(QUOTA_RESOURCES
            .iter()
            .map(|&resource| QuotaUsage {
                resource,
                limit: limits
                    .get(resource)
                    .copied()
                    .unwrap_or_else(|| self.quota_default(resource)),
                in_use: used.get(resource).copied().unwrap_or(0).max(0),
            })
            .collect())
    }

    /// `(resource, number)` rows of `select` for `project`.
    async fn per_resource(
        &self,
        select: &str,
        project: &str,
    ) -> Result<BTreeMap<String, i64>, CatalogError> {
        let mut sql = Sql::default();
        sql.push(select)
            .push(" WHERE project_id = ")
            .bind(text(project));
        sql.into_query()
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    /// Sets limits of `project` (one transaction).
    pub async fn set_quota_limits(
        &self,
        project: &str,
        limits: &[(&'static str, i64)],
    ) -> Result<(), CatalogError> {
        let mut tx = self.begin().await?;
        for &(resource, limit) in limits {
            let mut sql = Sql::default();
            sql.push("INSERT INTO quota_limits (project_id, resource, hard_limit) VALUES (")
                .bind(text(project))
                .push(", ")
                .bind(text(resource))
                .push(", ")
                .bind(Value::Int(limit))
                .push(
                    ") ON CONFLICT (project_id, resource) DO UPDATE SET \
                     hard_limit = excluded.hard_limit",
                );
            exec(&mut tx, sql).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Forgets the limits of `project`: the defaults apply again.
    pub async fn clear_quota_limits(&self, project: &str) -> Result<(), CatalogError> {
        let mut sql = Sql::default();
        sql.push("DELETE FROM quota_limits WHERE project_id = ")
            .bind(text(project));
        self.execute(sql).await?;
        Ok(())
    }

    /// [`check_quota`] with this catalog's defaults.
    pub(crate) async fn check_quota(
        &self,
        tx: &mut Tx,
        project: &str,
        requested: &[(&'static str, i64)],
    ) -> Result<(), CatalogError> {
        check_quota(tx, &self.quota_defaults, project, requested).await
    }
}
