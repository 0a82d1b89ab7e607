//! Backup sharing (VBS spec 03 §4): a project shares an `available` backup of its own
//! with other projects, which then see it (the sharing list, and the native show) and
//! may restore it into volumes of their own, and build nothing on it. The owner cancels
//! sharing by record or by backup; until then the owner's delete is refused.
//!
//! Codes (spec 03 gives none of sharing's own, so the catalogue's nearest): a malformed
//! request `VolumeBackup.0002`, a backup or record the caller cannot see `.0111` (404),
//! a backup not `available` `.0089`, a caller without the right `.0042` (403).

use serde_json::Value;
use vbs_catalog::{CatalogError, ShareQuery, ShareRecord, ShareRefused, ShareSort};

use crate::schema::{is_project_id, is_uuid_like};
use crate::{BackupLifecycle, Context, Error};

fn malformed(message: impl Into<String>) -> Error {
    Error::vbs("VolumeBackup.0002", message)
}

fn unknown(what: &str, id: &str) -> Error {
    Error::vbs(
        "VolumeBackup.0111",
        format!("The {what} {id} does not exist."),
    )
}

/// A list request's parameters, checked.
pub fn share_query(ctx: &Context, params: &[(String, String)]) -> Result<ShareQuery, Error> {
    let mut q = ShareQuery {
        project: ctx.project_id.clone(),
        ..ShareQuery::default()
    };
    for (k, v) in crate::backups::first_of_each(params) {
        let v = v.clone();
        match k.as_str() {
            "share_to_me" => {
                q.shared_with_me = match v.to_ascii_lowercase().as_str() {
                    "true" | "1" | "yes" | "on" | "t" | "y" => true,
                    "false" | "0" | "no" | "off" | "f" | "n" => false,
                    _ => return Err(malformed("share_to_me must be true or false.")),
                };
            }
            "backup_id" => q.backup_id = Some(v),
            "volume_id" => q.volume_id = Some(v),
            "name" => q.name = Some(v),
            "status" => q.status = Some(v),
            "from_project_id" => q.from_project_id = Some(v),
            "to_project_id" => q.to_project_id = Some(v),
            // VBS spells it `avalilability_zone`; both are taken.
            "avalilability_zone" | "availability_zone" => q.availability_zone = Some(v),
            "sort_key" => {
                q.sort = match v.as_str() {
                    "created_at" => ShareSort::CreatedAt,
                    "updated_at" => ShareSort::UpdatedAt,
                    "id" => ShareSort::Id,
                    "name" => ShareSort::Name,
                    "status" => ShareSort::Status,
                    "size" => ShareSort::Size,
                    other => return Err(malformed(format!("Invalid sort key {other}."))),
                };
            }
            "sort_dir" => {
                q.ascending = match v.to_ascii_lowercase().as_str() {
                    "asc" => true,
                    "desc" => false,
                    _ => return Err(malformed("sort_dir must be asc or desc.")),
                };
            }
            "limit" => {
                q.limit = Some(
                    v.parse()
                        .map_err(|_| malformed("limit must be a whole number."))?,
                );
            }
            "offset" => {
                q.offset = v
                    .parse()
                    .map_err(|_| malformed("offset must be a whole number."))?;
            }
            _ => {}
        }
    }
    Ok(q)
}

impl BackupLifecycle {
    /// `POST /v2/{project_id}/os-vendor-backup-sharing` (§4.1): one record per project.
    pub async fn share(&self, ctx: &Context, body: &Value) -> Result<Vec<ShareRecord>, Error> {
        let Some(shared) = body.get("shared").and_then(Value::as_object) else {
            return Err(malformed("The body must carry a 'shared' object."));
        };
        let Some(backup_id) = shared.get("backup_id").and_then(Value::as_str) else {
            return Err(malformed("shared.backup_id is required."));
        };
        let Some(targets) = shared
            .get("to_project_ids")
            .and_then(Value::as_array)
            .filter(|t| !t.is_empty())
        else {
            return Err(malformed(
                "shared.to_project_ids must list at least one project.",
            ));
        };
        let mut to: Vec<String> = Vec::with_capacity(targets.len());
        for t in targets {
            let Some(p) = t.as_str().filter(|p| is_project_id(p)) else {
                return Err(malformed(format!("{t} is not a project id.")));
            };
            if p == ctx.project_id {
                return Err(malformed("A backup cannot be shared with its own project."));
            }
            if to.iter().any(|x| x == p) {
                return Err(malformed(format!("The project {p} is listed twice.")));
            }
            to.push(p.to_owned());
        }
        if !is_uuid_like(backup_id) {
            return Err(malformed("shared.backup_id must be a backup's UUID."));
        }
        let b = match self
            .catalog()
            .get_backup(backup_id, Some(&ctx.project_id))
            .await
        {
            Ok(b) => b,
            Err(CatalogError::NotFound) => return Err(unknown("backup", backup_id)),
            Err(e) => return Err(e.into()),
        };
        if !ctx.can_write() {
            return Err(Error::vbs(
                "VolumeBackup.0042",
                "You are not allowed to share backups of this project.",
            ));
        }
        let not_available = |status: &str| {
            Error::vbs(
                "VolumeBackup.0089",
                format!(
                    "The backup {backup_id} is {status}; only available backups can be shared."
                ),
            )
        };
        if b.status != "available" {
            return Err(not_available(&b.status));
        }
        match self
            .catalog()
            .share_backup(backup_id, &ctx.project_id, &to)
            .await?
        {
            Ok(records) => Ok(records),
            Err(ShareRefused::NotAvailable) => Err(not_available("no longer available")),
            Err(ShareRefused::AlreadyShared(p)) => Err(malformed(format!(
                "The backup {backup_id} is shared with the project {p} already."
            ))),
        }
    }

    /// `DELETE /v2/{project_id}/os-vendor-backup-sharing/{id}` (§4.2): a record, or with
    /// `by_backup` every record of backup `id`. Only the owner cancels.
    pub async fn cancel_share(
        &self,
        ctx: &Context,
        id: &str,
        by_backup: bool,
    ) -> Result<(), Error> {
        if !ctx.can_write() {
            return Err(Error::vbs(
                "VolumeBackup.0042",
                "You are not allowed to cancel sharing of this project.",
            ));
        }
        if self
            .catalog()
            .cancel_shares(id, &ctx.project_id, by_backup)
            .await?
            > 0
        {
            return Ok(());
        }
        if by_backup {
            return match self.catalog().get_backup(id, Some(&ctx.project_id)).await {
                // The owner's backup, shared with nobody: nothing to cancel.
                Ok(_) => Err(unknown("sharing of backup", id)),
                Err(CatalogError::NotFound) => Err(unknown("backup", id)),
                Err(e) => Err(e.into()),
            };
        }
        // A record shared with the caller is seen by it, but is not its to cancel.
        match self.catalog().get_share(id, &ctx.project_id).await {
            Ok(_) => Err(Error::vbs(
                "VolumeBackup.0042",
                "Only the project that shared the backup may cancel the sharing.",
            )),
            Err(CatalogError::NotFound) => Err(unknown("sharing", id)),
            Err(e) => Err(e.into()),
        }
    }

    /// `GET …/os-vendor-backup-sharing/{id}` (§4.5).
    pub async fn show_share(&self, ctx: &Context, id: &str) -> Result<ShareRecord, Error> {
        if !ctx.can_read() {
            return Err(Error::vbs(
                "VolumeBackup.0042",
                "You may not read sharing records.",
            ));
        }
        match self.catalog().get_share(id, &ctx.project_id).await {
            Ok(s) => Ok(s),
            Err(CatalogError::NotFound) => Err(unknown("sharing", id)),
            Err(e) => Err(e.into()),
        }
    }

    /// `GET …/os-vendor-backup-sharing/detail` (§4.3).
    pub async fn list_shares(
        &self,
        ctx: &Context,
        q: &ShareQuery,
    ) -> Result<Vec<ShareRecord>, Error> {
        if !ctx.can_read() {
            return Err(Error::vbs(
                "VolumeBackup.0042",
                "You may not read sharing records.",
            ));
        }
        Ok(self.catalog().list_shares(q).await?)
    }

    /// `GET …/os-vendor-backup-sharing/count` (§4.4).
    pub async fn count_shares(&self, ctx: &Context, q: &ShareQuery) -> Result<u64, Error> {
        if !ctx.can_read() {
            return Err(Error::vbs(
                "VolumeBackup.0042",
                "You may not read sharing records.",
            ));
        }
        Ok(self.catalog().count_shares(q).await?)
    }
}
