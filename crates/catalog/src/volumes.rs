//! Volume records. This API only lists them (clients resolve volume names
//! before listing backups); creating and managing volumes builds on these rows.

use sqlx::{AssertSqlSafe, Row};

use crate::{Catalog, CatalogError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeRecord {
    pub id: String,
    pub project_id: String,
    pub user_id: Option<String>,
    pub display_name: Option<String>,
    pub display_description: Option<String>,
    pub size: i64,
    pub status: String,
    pub attach_status: String,
    pub availability_zone: Option<String>,
    pub volume_type: Option<String>,
    pub bootable: bool,
    pub created_at: i64,
    pub updated_at: Option<i64>,
}

impl Catalog {
    /// Live volumes, newest first, at most `limit`; optionally in one project and with
    /// one exact name.
    pub async fn list_volumes(
        &self,
        project_id: Option<&str>,
        name: Option<&str>,
        limit: u64,
    ) -> Result<Vec<VolumeRecord>, CatalogError> {
        let mut sql = String::from(
            "SELECT id, project_id, user_id, display_name, display_description, size, status, \
             attach_status, availability_zone, volume_type, bootable, created_at, updated_at \
             FROM volumes WHERE deleted = 0",
        );
        let mut n = 0;
        let mut next = || {
            n += 1;
            format!("${n}")
        };
        if project_id.is_some() {
            sql.push_str(&format!(" AND project_id = {}", next()));
        }
        if name.is_some() {
            sql.push_str(&format!(" AND display_name = {}", next()));
        }
        sql.push_str(&format!(
            " ORDER BY created_at DESC, id DESC LIMIT {}",
            next()
        ));
        let mut q = sqlx::query(AssertSqlSafe(sql));
        if let Some(p) = project_id {
            q = q.bind(p.to_owned());
        }
        if let Some(v) = name {
            q = q.bind(v.to_owned());
        }
        q = q.bind(i64::try_from(limit).unwrap_or(i64::MAX));
        let rows = q.fetch_all(self.pool()).await?;
        rows.iter()
            .map(|r| {
                Ok(VolumeRecord {
                    id: r.try_get(0)?,
                    project_id: r.try_get(1)?,
                    user_id: r.try_get(2)?,
                    display_name: r.try_get(3)?,
                    display_description: r.try_get(4)?,
                    size: r.try_get(5)?,
                    status: r.try_get(6)?,
                    attach_status: r.try_get(7)?,
                    availability_zone: r.try_get(8)?,
                    volume_type: r.try_get(9)?,
                    bootable: r.try_get::<i64, _>(10)? != 0,
                    created_at: r.try_get(11)?,
                    updated_at: r.try_get(12)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(CatalogError::from)
    }
}
