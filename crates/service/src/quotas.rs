//! Quotas as the APIs show and change them: Cinder's `os-quota-sets` (show, with
//! usage, defaults, admin update and delete) and VBS's `cloudbackups/quota`. Limits
//! are enforced where rows are inserted (`vbs_catalog`'s quota checks); this module
//! speaks for them: Cinder's 413 messages, VBS's codes.

use serde_json::{Map, Value};
use vbs_catalog::{QUOTA_RESOURCES, QuotaUsage};

use crate::{BackupLifecycle, Context, Error};

/// Cinder's message of an exceeded quota (`<ExceptionClass>: <text>`, spec 01 §5.2).
pub fn over_quota_message(resource: &str, limit: i64, in_use: i64, requested: i64) -> String {
    match resource {
        "backups" => {
            format!("BackupLimitExceeded: Maximum number of backups allowed ({limit}) exceeded")
        }
        "backup_gigabytes" => format!(
            "VolumeBackupSizeExceedsAvailableQuota: Requested backup exceeds allowed Backup \
             gigabytes quota. Requested {requested}G, quota is {limit}G and {in_use}G has been \
             consumed."
        ),
        "volumes" => format!(
            "VolumeLimitExceeded: Maximum number of volumes allowed ({limit}) exceeded for \
             quota 'volumes'."
        ),
        "snapshots" => {
            format!("SnapshotLimitExceeded: Maximum number of snapshots allowed ({limit}) exceeded")
        }
        _ => format!(
            "VolumeSizeExceedsAvailableQuota: Requested volume or snapshot exceeds allowed \
             gigabytes quota. Requested {requested}G, quota is {limit}G and {in_use}G has been \
             consumed."
        ),
    }
}

/// What a quota-set answer holds: limits, or limits with usage.
#[derive(Debug, Clone)]
pub struct QuotaSet {
    pub project_id: String,
    pub usages: Vec<QuotaUsage>,
}

fn bad(message: impl Into<String>) -> Error {
    Error::Invalid(message.into())
}

impl BackupLifecycle {
    /// Cinder's policy: admins see any project's quotas, others only their own.
    fn may_see_quotas(ctx: &Context, project: &str) -> Result<(), Error> {
        if ctx.is_admin() || (ctx.project_id == project && ctx.can_read()) {
            Ok(())
        } else {
            Err(Error::Forbidden("volume_extension:quotas:show"))
        }
    }

    /// `GET …/os-quota-sets/{project}`: limits and usage of a project.
    pub async fn quota_set(&self, ctx: &Context, project: &str) -> Result<QuotaSet, Error> {
        Self::may_see_quotas(ctx, project)?;
        Ok(QuotaSet {
            project_id: project.to_owned(),
            usages: self.catalog().quota_usages(project).await?,
        })
    }

    /// `GET …/os-quota-sets/{project}/defaults`: the configured defaults.
    pub fn quota_defaults(&self, ctx: &Context, project: &str) -> Result<QuotaSet, Error> {
        Self::may_see_quotas(ctx, project)?;
        Ok(QuotaSet {
            project_id: project.to_owned(),
            usages: QUOTA_RESOURCES
                .iter()
                .map(|&resource| QuotaUsage {
                    resource,
                    limit: self.catalog().quota_default(resource),
                    in_use: 0,
                })
                .collect(),
        })
    }

    /// `PUT …/os-quota-sets/{project}` (admins): Cinder's checks in Cinder's order
    /// (unknown keys, then each limit an integer of -1 or more, then, unless
    /// `skip_validation`, no limit below what is used), then every limit at once.
    pub async fn update_quota_set(
        &self,
        ctx: &Context,
        project: &str,
        body: &Value,
        skip_validation: bool,
    ) -> Result<QuotaSet, Error> {
        if !ctx.is_admin() {
            return Err(Error::Forbidden("volume_extension:quotas:update"));
        }
        let Some(set) = body.get("quota_set").and_then(Value::as_object) else {
            return Err(bad("Missing required element quota_set in request body."));
        };
        let known = |k: &str| QUOTA_RESOURCES.contains(&k) || k == "tenant_id" || k == "id";
        let bad_keys: Vec<&str> = set
            .keys()
            .map(String::as_str)
            .filter(|k| !known(k))
            .collect();
        if !bad_keys.is_empty() {
            return Err(bad(format!(
                "Bad key(s) in quota set: {}",
                bad_keys.join(",")
            )));
        }
        let mut limits = Vec::new();
        for resource in QUOTA_RESOURCES {
            let Some(v) = set.get(resource) else { continue };
            limits.push((resource, quota_limit(resource, v)?));
        }
        let current = self.catalog().quota_usages(project).await?;
        if !skip_validation {
            for (resource, limit) in &limits {
                let used = current
                    .iter()
                    .find(|u| u.resource == *resource)
                    .map_or(0, |u| u.in_use);
                if *limit != -1 && *limit < used {
                    return Err(bad(format!(
                        "Quota {resource} limit must be equal or greater than existing \
                         resources. Current usage is {used} and the requested limit is {limit}."
                    )));
                }
            }
        }
        self.catalog().set_quota_limits(project, &limits).await?;
        Ok(QuotaSet {
            project_id: project.to_owned(),
            usages: self.catalog().quota_usages(project).await?,
        })
    }

    /// `DELETE …/os-quota-sets/{project}` (admins): back to the defaults.
    pub async fn delete_quota_set(&self, ctx: &Context, project: &str) -> Result<(), Error> {
        if !ctx.is_admin() {
            return Err(Error::Forbidden("volume_extension:quotas:delete"));
        }
        Ok(self.catalog().clear_quota_limits(project).await?)
    }

    /// `GET /v2/{project_id}/cloudbackups/quota` (spec 03 §2.4): the caller's backup
    /// quotas.
    pub async fn cloud_quota(&self, ctx: &Context) -> Result<Vec<QuotaUsage>, Error> {
        if !ctx.can_read() {
            return Err(Error::vbs(
                "VolumeBackup.0042",
                "You are not allowed to read this project's quotas.",
            ));
        }
        Ok(self
            .catalog()
            .quota_usages(&ctx.project_id)
            .await
            .map_err(|_| Error::vbs("VolumeBackup.0070", "The quotas could not be read."))?
            .into_iter()
            .filter(|u| u.resource.starts_with("backup"))
            .collect())
    }
}

/// A limit as Cinder takes it: an integer (or a string holding one), -1 or more.
fn quota_limit(resource: &str, v: &Value) -> Result<i64, Error> {
    let n = match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    match n {
        Some(n) if n >= -1 => Ok(n),
        Some(_) => Err(bad(format!(
            "Quota limit for {resource} must be -1 or greater."
        ))),
        None => Err(bad(format!(
            "Quota limit for {resource} must be specified as an integer value."
        ))),
    }
}

/// The body of a quota set: `{"id", resource: limit…}`, or with `usage` each resource as
/// `{"limit", "in_use", "reserved"}`.
pub fn quota_set_body(set: &QuotaSet, usage: bool, with_id: bool) -> Map<String, Value> {
    let mut m = Map::new();
    if with_id {
        m.insert("id".into(), Value::String(set.project_id.clone()));
    }
    for u in &set.usages {
        let v = if usage {
            serde_json::json!({"limit": u.limit, "in_use": u.in_use, "reserved": 0})
        } else {
            Value::from(u.limit)
        };
        m.insert(u.resource.into(), v);
    }
    m
}
