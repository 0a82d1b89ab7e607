//! Many nodes on one catalog: each node announces itself and its roles with a lease it
//! renews (so an API node knows whether any worker is alive), and the repository lock
//! that keeps garbage collection away from backups being written, across nodes.
//!
//! The lock is a readers-writer lock made of rows with leases. Backup writers hold it
//! `shared`; a GC holds it `exclusive`. A GC that finds writers registers an `intent`,
//! which keeps new writers out until it has run, so a steady stream of backups cannot
//! starve it. Every acquisition is one transaction that first drops expired rows (a
//! holder that died), serialized by the table lock (`PostgreSQL`) or the write lock
//! (`SQLite`). A holder that cannot renew its row must stop the work it guards.

use crate::read::{Sql, Value, text};
use crate::write::{exec, query_int};
use crate::{Catalog, CatalogError, Dialect, ts};

/// How the repository lock is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// A backup writing packs that no manifest names yet.
    Shared,
    /// A sweep deleting packs that no manifest names.
    Exclusive,
}

/// A node as it announced itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    pub name: String,
    pub instance: String,
    pub roles: String,
    pub started_at: i64,
    pub lease_until: i64,
}

const NODE_COLUMNS: &str = "name, instance, roles, started_at, lease_until";

fn node_from_row(r: &dyn crate::read::DbRow) -> Result<NodeRecord, CatalogError> {
    Ok(NodeRecord {
        name: r.text(0)?,
        instance: r.text(1)?,
        roles: r.text(2)?,
        started_at: r.int(3)?,
        lease_until: r.int(4)?,
    })
}

impl Catalog {
    /// Claims node name `name` for this process (`instance`) for `lease_micros`: a new
    /// row, or the row of a holder whose lease ran out, or of `stale` (a holder known
    /// to be gone: a process of this host that no longer runs). A live holder keeps
    /// its name: `Err` with its row. One statement, so two processes starting at once
    /// cannot both win. Rows of nodes gone for a day are forgotten.
    pub async fn claim_node(
        &self,
        name: &str,
        instance: &str,
        roles: &str,
        started_at: i64,
        lease_micros: i64,
        stale: Option<&str>,
    ) -> Result<Result<(), NodeRecord>, CatalogError> {
        let now = ts::now_micros();
        let mut sql = Sql::default();
        sql.push("DELETE FROM nodes WHERE lease_until < ")
            .bind(Value::Int(now - 86_400_000_000));
        self.execute(sql).await?;
        let mut sql = Sql::default();
        sql.push("INSERT INTO nodes (name, instance, roles, started_at, lease_until) VALUES (")
            .bind(text(name))
            .push(", ")
            .bind(text(instance))
            .push(", ")
            .bind(text(roles))
            .push(", ")
            .bind(Value::Int(started_at))
            .push(", ")
            .bind(Value::Int(now + lease_micros))
            .push(
                ") ON CONFLICT (name) DO UPDATE SET instance = excluded.instance, \
                 roles = excluded.roles, started_at = excluded.started_at, \
                 lease_until = excluded.lease_until WHERE nodes.lease_until < ",
            )
            .bind(Value::Int(now))
            .push(" OR nodes.instance = ")
            .bind(text(instance))
            .push(" OR nodes.instance = ")
            .bind(text(stale.unwrap_or(instance)));
        if self.execute(sql).await? == 1 {
            return Ok(Ok(()));
        }
        match self.node(name).await? {
            Some(holder) => Ok(Err(holder)),
            // Gone meanwhile: try once more.
            None => {
                Box::pin(self.claim_node(name, instance, roles, started_at, lease_micros, stale))
                    .await
            }
        }
    }

    /// Renews this node's lease; `false` if its name is no longer this process's
    /// (another took it over after the lease ran out).
    pub async fn heartbeat_node(
        &self,
        name: &str,
        instance: &str,
        roles: &str,
        lease_micros: i64,
    ) -> Result<bool, CatalogError> {
        let mut sql = Sql::default();
        sql.push("UPDATE nodes SET roles = ")
            .bind(text(roles))
            .push(", lease_until = ")
            .bind(Value::Int(ts::now_micros() + lease_micros))
            .push(" WHERE name = ")
            .bind(text(name))
            .push(" AND instance = ")
            .bind(text(instance));
        Ok(self.execute(sql).await? == 1)
    }

    /// The row of node `name`, live or not.
    pub async fn node(&self, name: &str) -> Result<Option<NodeRecord>, CatalogError> {
        let mut sql = Sql::default();
        sql.push("SELECT ")
            .push(NODE_COLUMNS)
            .push(" FROM nodes WHERE name = ")
            .bind(text(name));
        self.fetch_first(sql, node_from_row).await
    }

    /// Takes this node out (a clean shutdown), if the row is still this instance's.
    pub async fn remove_node(&self, name: &str, instance: &str) -> Result<(), CatalogError> {
        let mut sql = Sql::default();
        sql.push("DELETE FROM nodes WHERE name = ")
            .bind(text(name))
            .push(" AND instance = ")
            .bind(text(instance));
        self.execute(sql).await?;
        Ok(())
    }

    /// Every node whose lease runs.
    pub async fn all_live_nodes(&self) -> Result<Vec<NodeRecord>, CatalogError> {
        let mut sql = Sql::default();
        sql.push("SELECT ")
            .push(NODE_COLUMNS)
            .push(" FROM nodes WHERE lease_until > ")
            .bind(Value::Int(ts::now_micros()))
            .push(" ORDER BY name");
        self.fetch(sql, crate::read::Cost::Small, node_from_row)
            .await
    }

    /// Nodes whose lease runs, with `role` among their roles.
    pub async fn live_nodes(&self, role: &str) -> Result<Vec<NodeRecord>, CatalogError> {
        Ok(self
            .all_live_nodes()
            .await?
            .into_iter()
            .filter(|n| n.roles.split(',').any(|r| r == role))
            .collect())
    }

    /// Tries to take the repository lock for `holder` in `mode` until `lease_micros`
    /// from now. `false`: not now, try again later (an exclusive attempt that found
    /// writers leaves an intent that keeps new writers out meanwhile). Taking a lock
    /// the holder already has renews it.
    pub async fn lock_repository(
        &self,
        holder: &str,
        mode: LockMode,
        lease_micros: i64,
    ) -> Result<bool, CatalogError> {
        let now = ts::now_micros();
        let mut tx = self.begin().await?;
        if self.dialect() == Dialect::Postgres {
            // Serializes acquisitions; readers of the table are not blocked.
            let mut sql = Sql::default();
            sql.push("LOCK TABLE repository_locks IN SHARE ROW EXCLUSIVE MODE");
            exec(&mut tx, sql).await?;
        }
        let mut sql = Sql::default();
        sql.push("DELETE FROM repository_locks WHERE lease_until < ")
            .bind(Value::Int(now));
        exec(&mut tx, sql).await?;
        let count = |modes: &str| {
            let mut sql = Sql::default();
            sql.push("SELECT COUNT(*) FROM repository_locks WHERE holder <> ")
                .bind(text(holder))
                .push(" AND mode IN (")
                .push(modes)
                .push(")");
            sql
        };
        let gcs = query_int(&mut tx, count("'exclusive', 'intent'")).await?;
        let granted = match mode {
            LockMode::Shared => gcs == 0,
            LockMode::Exclusive => gcs == 0 && query_int(&mut tx, count("'shared'")).await? == 0,
        };
        // An exclusive attempt blocked by writers only (no other GC) waits with intent.
        let row_mode = match (mode, granted) {
            (LockMode::Shared, true) => Some("shared"),
            (LockMode::Exclusive, true) => Some("exclusive"),
            (LockMode::Exclusive, false) if gcs == 0 => Some("intent"),
            _ => None,
        };
        let mut sql = Sql::default();
        sql.push("DELETE FROM repository_locks WHERE holder = ")
            .bind(text(holder));
        exec(&mut tx, sql).await?;
        if let Some(row_mode) = row_mode {
            let mut sql = Sql::default();
            sql.push("INSERT INTO repository_locks (holder, mode, lease_until) VALUES (")
                .bind(text(holder))
                .push(", ")
                .bind(text(row_mode))
                .push(", ")
                .bind(Value::Int(now + lease_micros))
                .push(")");
            exec(&mut tx, sql).await?;
        }
        tx.commit().await?;
        Ok(granted)
    }

    /// Extends a held lock (or intent); `false` if it is gone (it expired and another
    /// node acted on that): the holder must stop.
    pub async fn renew_repository_lock(
        &self,
        holder: &str,
        lease_micros: i64,
    ) -> Result<bool, CatalogError> {
        let mut sql = Sql::default();
        sql.push("UPDATE repository_locks SET lease_until = ")
            .bind(Value::Int(ts::now_micros() + lease_micros))
            .push(" WHERE holder = ")
            .bind(text(holder));
        Ok(self.execute(sql).await? == 1)
    }

    /// Gives the lock (or an intent) back.
    pub async fn unlock_repository(&self, holder: &str) -> Result<(), CatalogError> {
        let mut sql = Sql::default();
        sql.push("DELETE FROM repository_locks WHERE holder = ")
            .bind(text(holder));
        self.execute(sql).await?;
        Ok(())
    }

    /// Ids of the live backups `service` wrote: those whose data a GC must keep (it reads
    /// their manifests even when a lagging listing does not show them).
    pub async fn backup_ids_of_service(&self, service: &str) -> Result<Vec<String>, CatalogError> {
        let mut sql = Sql::default();
        sql.push("SELECT id FROM backups WHERE deleted = 0 AND service = ")
            .bind(text(service));
        self.fetch(sql, crate::read::Cost::Large, |r| r.text(0))
            .await
    }

    /// Drops every holder: at start-up of the embedded mode, where no other process
    /// can hold it.
    pub async fn clear_repository_locks(&self) -> Result<u64, CatalogError> {
        let mut sql = Sql::default();
        sql.push("DELETE FROM repository_locks");
        self.execute(sql).await
    }
}
