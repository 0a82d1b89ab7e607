//! Volume records. This API only lists them (clients resolve volume names
//! before listing backups); creating and managing volumes builds on these rows.

use crate::read::{Cost, DbRow, Sql, Value};
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

fn volume_from_row(r: &dyn DbRow) -> Result<VolumeRecord, CatalogError> {
    Ok(VolumeRecord {
        id: r.text(0)?,
        project_id: r.text(1)?,
        user_id: r.opt_text(2)?,
        display_name: r.opt_text(3)?,
        display_description: r.opt_text(4)?,
        size: r.int(5)?,
        status: r.text(6)?,
        attach_status: r.text(7)?,
        availability_zone: r.opt_text(8)?,
        volume_type: r.opt_text(9)?,
        bootable: r.int(10)? != 0,
        created_at: r.int(11)?,
        updated_at: r.opt_int(12)?,
    })
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
        let mut sql = Sql::default();
        sql.push(
            "SELECT id, project_id, user_id, display_name, display_description, size, status, \
             attach_status, availability_zone, volume_type, bootable, created_at, updated_at \
             FROM volumes WHERE deleted = 0",
        );
        if let Some(p) = project_id {
            sql.push(" AND project_id = ")
                .bind(Value::Text(p.to_owned()));
        }
        if let Some(v) = name {
            sql.push(" AND display_name = ")
                .bind(Value::Text(v.to_owned()));
        }
        // A literal LIMIT, as in the backup lists (a bound one makes SQLite re-prepare).
        sql.push(&format!(
            " ORDER BY created_at DESC, id DESC LIMIT {}",
            i64::try_from(limit).unwrap_or(i64::MAX)
        ));
        self.fetch(sql, Cost::Small, volume_from_row).await
    }
}
