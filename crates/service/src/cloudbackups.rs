//! VBS's asynchronous backup APIs (spec 03 §2.1–§2.3): create, restore and the
//! deprecated delete under `/v2/{project_id}/cloudbackups`, each answering a job id at
//! once. The rules and codes are VBS's (`VolumeBackup.*`, spec 03 §6); the work goes
//! through the same lifecycle and job queue as the native API, so both APIs see the
//! same backups, statuses and jobs.

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use vbs_catalog::{BackupRecord, CatalogError};

use crate::lifecycle::StartBackup;
use crate::schema::is_uuid_like;
use crate::{BackupLifecycle, Context, Error};

/// The most backups one disk may have (spec 03 §2.1, `VolumeBackup.0040`).
pub const MAX_BACKUPS_PER_VOLUME: i64 = 20;
/// The most tags one backup may carry (`VolumeBackup.0050`; VBS gives no number, so
/// the policy tags' limit).
pub const MAX_BACKUP_TAGS: usize = 10;

/// Characters a tag key or value may not contain (besides ASCII controls).
const TAG_FORBIDDEN: &[char] = &['=', '*', '<', '>', '\\', ',', '|', '/'];

/// The VBS code of an exhausted quota resource (spec 03 §6.2).
pub fn quota_code(resource: &str) -> &'static str {
    match resource {
        "backup_gigabytes" => "VolumeBackup.0081",
        "volumes" => "VolumeBackup.0082",
        "gigabytes" => "VolumeBackup.0083",
        "snapshots" => "VolumeBackup.0084",
        _ => "VolumeBackup.0080",
    }
}

/// A `/cloudbackups` create body, checked.
#[derive(Debug, PartialEq)]
struct CreateBody {
    volume_id: String,
    snapshot_id: Option<String>,
    name: String,
    description: Option<String>,
    tags: Vec<(String, String)>,
    full: bool,
}

fn malformed(message: &str) -> Error {
    Error::vbs("VolumeBackup.0002", message)
}

/// Checks a create body in the order the codes of spec 03 §2.1 are listed: the
/// envelope, the name, the description, the disk, the tags, `extend_param`. Keys VBS
/// does not document are ignored, as its SDKs may send more.
fn parse_create(body: &Value) -> Result<CreateBody, Error> {
    let Some(b) = body.get("backup").and_then(Value::as_object) else {
        return Err(malformed(
            "The request body must be an object with a 'backup' object.",
        ));
    };
    let name = match b.get("name") {
        None | Some(Value::Null) => {
            return Err(Error::vbs(
                "VolumeBackup.0007",
                "The backup name is missing.",
            ));
        }
        Some(Value::String(n)) => n,
        Some(_) => {
            return Err(Error::vbs(
                "VolumeBackup.0004",
                "The backup name must be a string.",
            ));
        }
    };
    if name.is_empty() {
        return Err(Error::vbs(
            "VolumeBackup.0026",
            "The backup name is too short: it needs 1 to 64 characters.",
        ));
    }
    if name.chars().count() > 64 {
        return Err(Error::vbs(
            "VolumeBackup.0003",
            "The backup name is too long: it may have at most 64 characters.",
        ));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(Error::vbs(
            "VolumeBackup.0004",
            "The backup name may contain only letters, digits, '_' and '-'.",
        ));
    }
    if name.to_ascii_lowercase().starts_with("auto") {
        return Err(Error::vbs(
            "VolumeBackup.0005",
            "The backup name must not begin with 'auto' (names of automatic backups do).",
        ));
    }
    let description = match b.get("description") {
        None | Some(Value::Null) => None,
        Some(Value::String(d))
            if !d.is_empty() && d.chars().count() <= 64 && !d.contains(['<', '>']) =>
        {
            Some(d.clone())
        }
        Some(_) => {
            return Err(Error::vbs(
                "VolumeBackup.0006",
                "The description must have 1 to 64 characters, without '<' or '>'.",
            ));
        }
    };
    let volume_id = match b.get("volume_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(v)) if v.is_empty() => None,
        Some(Value::String(v)) if is_uuid_like(v) => Some(v.clone()),
        Some(_) => {
            return Err(Error::vbs(
                "VolumeBackup.0011",
                "The volume_id must be a disk's UUID.",
            ));
        }
    };
    let Some(volume_id) = volume_id else {
        return Err(Error::vbs("VolumeBackup.0010", "The volume_id is missing."));
    };
    let snapshot_id = match b.get("snapshot_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if is_uuid_like(s) => Some(s.clone()),
        Some(_) => return Err(malformed("The snapshot_id must be a snapshot's UUID.")),
    };
    let tags = parse_tags(b.get("tags"))?;
    let full = match b.get("extend_param") {
        None | Some(Value::Null) => false,
        Some(Value::Object(p)) => match p.get("FullBackup") {
            None | Some(Value::Null) => false,
            Some(Value::String(f)) if f.eq_ignore_ascii_case("true") => true,
            Some(Value::String(f)) if f.eq_ignore_ascii_case("false") => false,
            Some(Value::Bool(f)) => *f,
            Some(_) => {
                return Err(malformed(
                    "extend_param.FullBackup must be \"true\" or \"false\".",
                ));
            }
        },
        Some(_) => return Err(malformed("extend_param must be an object.")),
    };
    Ok(CreateBody {
        volume_id,
        snapshot_id,
        name: name.clone(),
        description,
        tags,
        full,
    })
}

fn bad_tag(message: &str) -> Error {
    Error::vbs("VolumeBackup.0049", message)
}

/// `tags`: a list of `{key, value}`; key 1–36 and value 0–43 characters, neither with
/// an ASCII control character nor any of `= * < > \ , | /`; keys unique.
fn parse_tags(tags: Option<&Value>) -> Result<Vec<(String, String)>, Error> {
    let items = match tags {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => {
            return Err(bad_tag(
                "tags must be a list of {\"key\", \"value\"} objects.",
            ));
        }
    };
    if items.len() > MAX_BACKUP_TAGS {
        return Err(Error::vbs(
            "VolumeBackup.0050",
            format!("A backup may carry at most {MAX_BACKUP_TAGS} tags."),
        ));
    }
    let clean = |s: &str| {
        !s.chars()
            .any(|c| c.is_ascii_control() || TAG_FORBIDDEN.contains(&c))
    };
    let mut out: Vec<(String, String)> = Vec::with_capacity(items.len());
    for item in items {
        let Some(obj) = item.as_object() else {
            return Err(bad_tag("Each tag must be a {\"key\", \"value\"} object."));
        };
        let key = match obj.get("key") {
            Some(Value::String(k)) if !k.is_empty() && k.chars().count() <= 36 && clean(k) => k,
            _ => {
                return Err(bad_tag(
                    "A tag key must have 1 to 36 characters, without control characters \
                     or any of = * < > \\ , | /.",
                ));
            }
        };
        let value = match obj.get("value") {
            None | Some(Value::Null) => "",
            Some(Value::String(v)) if v.chars().count() <= 43 && clean(v) => v,
            _ => {
                return Err(bad_tag(
                    "A tag value must have at most 43 characters, without control \
                     characters or any of = * < > \\ , | /.",
                ));
            }
        };
        if out.iter().any(|(k, _)| k == key) {
            return Err(bad_tag(&format!("The tag key '{key}' is given twice.")));
        }
        out.push((key.clone(), value.to_owned()));
    }
    Ok(out)
}

/// `/cloudbackups` refusals that the shared lifecycle reports in Cinder's words.
fn coded(e: Error, code: &'static str) -> Error {
    match e {
        Error::OverQuota { resource, message } => Error::vbs(quota_code(resource), message),
        Error::Invalid(message) | Error::NotFound(message) => Error::vbs(code, message),
        Error::Unavailable(message) => Error::vbs("VolumeBackup.0900", message),
        Error::Forbidden(_) => Error::vbs(
            "VolumeBackup.0042",
            "You are not allowed to perform this operation.",
        ),
        other => other,
    }
}

impl BackupLifecycle {
    /// `POST /v2/{project_id}/cloudbackups` (spec 03 §2.1): the job's public id.
    pub async fn cloud_create(&self, ctx: &Context, body: &Value) -> Result<String, Error> {
        let b = parse_create(body)?;
        let volume = match self.volumes().lookup(ctx, &b.volume_id).await {
            Ok(v) if v.project_id == ctx.project_id => v,
            Ok(_) | Err(Error::NotFound(_)) => {
                return Err(Error::vbs(
                    "VolumeBackup.0021",
                    format!("The disk {} does not exist.", b.volume_id),
                ));
            }
            Err(e) => return Err(e),
        };
        if !ctx.can_write() {
            return Err(coded(
                Error::Forbidden("backup:create"),
                "VolumeBackup.0042",
            ));
        }
        let busy = || {
            Error::vbs(
                "VolumeBackup.0013",
                format!(
                    "A backup task of the disk {} is still running.",
                    b.volume_id
                ),
            )
        };
        let mut snapshot = None;
        if let Some(sid) = &b.snapshot_id {
            let s = match self
                .catalog()
                .get_snapshot(sid, Some(&ctx.project_id))
                .await
            {
                Ok(s) if s.volume_id == volume.id => s,
                Ok(_) | Err(CatalogError::NotFound) => {
                    return Err(malformed(&format!(
                        "The snapshot {sid} is not a snapshot of the disk {}.",
                        volume.id
                    )));
                }
                Err(e) => return Err(e.into()),
            };
            match s.status.as_str() {
                "available" => {}
                "backing-up" => return Err(busy()),
                other => {
                    return Err(Error::vbs(
                        "VolumeBackup.0012",
                        format!("The snapshot {sid} is {other}, not available."),
                    ));
                }
            }
            snapshot = Some(s);
        } else {
            match volume.status.as_str() {
                "available" | "in-use" => {}
                "backing-up" => return Err(busy()),
                other => {
                    return Err(Error::vbs(
                        "VolumeBackup.0012",
                        format!(
                            "The disk {} is {other}; it must be available or in-use.",
                            volume.id
                        ),
                    ));
                }
            }
        }
        let existing = self
            .catalog()
            .count_volume_backups(&ctx.project_id, &volume.id)
            .await?;
        if existing >= MAX_BACKUPS_PER_VOLUME {
            return Err(Error::vbs(
                "VolumeBackup.0040",
                format!(
                    "The disk {} has {existing} backups, the most one disk may have \
                     ({MAX_BACKUPS_PER_VOLUME}).",
                    volume.id
                ),
            ));
        }
        self.need_worker()
            .await
            .map_err(|e| coded(e, "VolumeBackup.0900"))?;
        // Incremental by default: on the newest available backup of the disk (before
        // the snapshot, when backing up a snapshot); the first one is full.
        let parent = if b.full {
            None
        } else {
            self.catalog()
                .latest_available_backup(
                    &ctx.project_id,
                    &volume.id,
                    snapshot.as_ref().map(|s| s.created_at),
                )
                .await?
                .map(|p| p.id)
        };
        let started = self
            .start_backup(
                ctx,
                StartBackup {
                    volume,
                    snapshot,
                    parent,
                    name: Some(b.name),
                    description: b.description,
                    container: None,
                    availability_zone: None,
                    metadata: BTreeMap::new(),
                    force: true,
                    tags: b.tags.into_iter().collect(),
                    policy_task: None,
                    parent_job: None,
                },
            )
            .await
            .map_err(|e| coded(e, "VolumeBackup.0013"))?;
        Ok(started.job_id)
    }

    /// `POST /v2/{project_id}/cloudbackups/{backup_id}/restore` (spec 03 §2.2): the
    /// job's public id.
    pub async fn cloud_restore(
        &self,
        ctx: &Context,
        backup_id: &str,
        body: &Value,
    ) -> Result<String, Error> {
        if backup_id.is_empty() {
            return Err(Error::vbs("VolumeBackup.0203", "The backup_id is missing."));
        }
        if !is_uuid_like(backup_id) {
            return Err(Error::vbs(
                "VolumeBackup.0204",
                "The backup_id must be a backup's UUID.",
            ));
        }
        let Some(r) = body.get("restore").and_then(Value::as_object) else {
            return Err(Error::vbs(
                "VolumeBackup.0210",
                "The request body must be an object with a 'restore' object.",
            ));
        };
        let volume_id = restore_volume_id(r)?;
        let b = match self.readable(ctx, backup_id).await {
            Ok(b) => b,
            Err(Error::NotFound(_)) => {
                return Err(Error::vbs(
                    "VolumeBackup.0111",
                    format!("The backup {backup_id} does not exist."),
                ));
            }
            Err(e) => return Err(e),
        };
        if !ctx.can_write() {
            return Err(coded(
                Error::Forbidden("backup:restore"),
                "VolumeBackup.0042",
            ));
        }
        if b.status != "available" {
            return Err(Error::vbs(
                "VolumeBackup.0089",
                format!("The backup {backup_id} is {}, not available.", b.status),
            ));
        }
        let v = match self.volumes().lookup(ctx, &volume_id).await {
            Ok(v) if v.project_id == ctx.project_id => v,
            Ok(_) | Err(Error::NotFound(_)) => {
                return Err(Error::vbs(
                    "VolumeBackup.0207",
                    format!("The disk {volume_id} does not exist."),
                ));
            }
            Err(e) => return Err(e),
        };
        match v.status.as_str() {
            "available" => {}
            "error" => {
                return Err(Error::vbs(
                    "VolumeBackup.0202",
                    format!("The disk {volume_id} is in error."),
                ));
            }
            "backing-up" => {
                return Err(Error::vbs(
                    "VolumeBackup.0206",
                    format!("A backup of the disk {volume_id} is being created."),
                ));
            }
            other => {
                return Err(Error::vbs(
                    "VolumeBackup.0205",
                    format!("The disk {volume_id} is {other}; it must be available."),
                ));
            }
        }
        if b.size > v.size {
            return Err(Error::vbs(
                "VolumeBackup.0209",
                format!(
                    "The disk {volume_id} ({} GB) is smaller than the backup ({} GB).",
                    v.size, b.size
                ),
            ));
        }
        self.need_worker()
            .await
            .map_err(|e| coded(e, "VolumeBackup.0900"))?;
        let (_, job_id) = self
            .start_restore(ctx, &b, Some(&volume_id), None)
            .await
            .map_err(|e| coded(e, "VolumeBackup.0205"))?;
        Ok(job_id)
    }

    /// `POST /v2/{project_id}/cloudbackups/{backup_id}` (spec 03 §2.3, deprecated):
    /// the native delete's rules, answered with the delete job's public id.
    pub async fn cloud_delete(&self, ctx: &Context, backup_id: &str) -> Result<String, Error> {
        if !is_uuid_like(backup_id) {
            return Err(Error::vbs(
                "VolumeBackup.0105",
                "The backup_id must be a backup's UUID.",
            ));
        }
        let b = self.cloud_backup(ctx, backup_id).await?;
        if !ctx.can_write() {
            return Err(coded(
                Error::Forbidden("backup:delete"),
                "VolumeBackup.0042",
            ));
        }
        if b.status != "available" && b.status != "error" {
            return Err(Error::vbs(
                "VolumeBackup.0089",
                format!(
                    "The backup {backup_id} is {}; only available or error backups can be \
                     deleted.",
                    b.status
                ),
            ));
        }
        self.start_delete(ctx, &b, &["available", "error"])
            .await
            .map_err(|e| coded(e, "VolumeBackup.0089"))
    }

    /// A backup of the caller's project (`VolumeBackup.0111` when there is none).
    async fn cloud_backup(&self, ctx: &Context, id: &str) -> Result<BackupRecord, Error> {
        match self.catalog().get_backup(id, Some(&ctx.project_id)).await {
            Ok(b) => Ok(b),
            Err(CatalogError::NotFound) => Err(Error::vbs(
                "VolumeBackup.0111",
                format!("The backup {id} does not exist."),
            )),
            Err(e) => Err(e.into()),
        }
    }
}

/// The restore's target disk: required, a UUID (`VolumeBackup.0208` otherwise).
fn restore_volume_id(r: &Map<String, Value>) -> Result<String, Error> {
    match r.get("volume_id") {
        Some(Value::String(v)) if is_uuid_like(v) => Ok(v.clone()),
        _ => Err(Error::vbs(
            "VolumeBackup.0208",
            "The restore needs the volume_id of a disk (a UUID).",
        )),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    fn code(body: &Value) -> &'static str {
        match parse_create(body) {
            Err(Error::Vbs { code, .. }) => code,
            other => panic!("expected a VBS error, got {other:?}"),
        }
    }

    const V: &str = "11111111-1111-4111-8111-111111111111";

    #[test]
    fn create_body_codes_follow_the_catalogue() {
        assert_eq!(code(&json!([])), "VolumeBackup.0002");
        assert_eq!(
            code(&json!({"backup": {"volume_id": V}})),
            "VolumeBackup.0007"
        );
        assert_eq!(
            code(&json!({"backup": {"volume_id": V, "name": ""}})),
            "VolumeBackup.0026"
        );
        let long = "a".repeat(65);
        assert_eq!(
            code(&json!({"backup": {"volume_id": V, "name": long}})),
            "VolumeBackup.0003"
        );
        assert_eq!(
            code(&json!({"backup": {"volume_id": V, "name": "a b"}})),
            "VolumeBackup.0004"
        );
        assert_eq!(
            code(&json!({"backup": {"volume_id": V, "name": "autobk_1"}})),
            "VolumeBackup.0005"
        );
        assert_eq!(
            code(&json!({"backup": {"volume_id": V, "name": "b", "description": "<x>"}})),
            "VolumeBackup.0006"
        );
        assert_eq!(code(&json!({"backup": {"name": "b"}})), "VolumeBackup.0010");
        assert_eq!(
            code(&json!({"backup": {"volume_id": "nope", "name": "b"}})),
            "VolumeBackup.0011"
        );
        assert_eq!(
            code(
                &json!({"backup": {"volume_id": V, "name": "b", "tags": [{"key": "a=b", "value": "v"}]}})
            ),
            "VolumeBackup.0049"
        );
        let many: Vec<Value> = (0..11)
            .map(|i| json!({"key": format!("k{i}"), "value": "v"}))
            .collect();
        assert_eq!(
            code(&json!({"backup": {"volume_id": V, "name": "b", "tags": many}})),
            "VolumeBackup.0050"
        );
    }

    #[test]
    fn full_backup_is_asked_for_with_extend_param() {
        let b = parse_create(&json!({"backup": {
            "volume_id": V, "name": "daily-1", "description": "nightly",
            "tags": [{"key": "env", "value": "prod"}],
            "extend_param": {"FullBackup": "true"}
        }}))
        .unwrap();
        assert!(b.full);
        assert_eq!(b.tags, vec![("env".to_owned(), "prod".to_owned())]);
        let b = parse_create(&json!({"backup": {"volume_id": V, "name": "x"}})).unwrap();
        assert!(!b.full);
        assert!(b.tags.is_empty());
    }

    proptest::proptest! {
        /// The create body and its tags, as any client may send them: parsed or refused
        /// with a VBS code, never a panic; accepted names follow the documented rule.
        #[test]
        fn create_bodies_take_any_input(
            name in ".{0,70}|[A-Za-z0-9_-]{0,70}",
            description in proptest::option::of(".{0,70}"),
            key in ".{0,40}",
            value in ".{0,50}",
            full in "true|false|.{0,6}",
            volume in "[0-9a-f-]{0,40}",
        ) {
            let body = json!({"backup": {
                "volume_id": volume, "name": name, "description": description,
                "tags": [{"key": key, "value": value}], "extend_param": {"FullBackup": full}
            }});
            if let Ok(parsed) = parse_create(&body) {
                proptest::prop_assert!(!parsed.name.is_empty() && parsed.name.chars().count() <= 64);
                proptest::prop_assert!(!parsed.name.starts_with("auto"));
            }
            let _ = parse_tags(Some(&json!([{"key": key, "value": value}])));
            let _ = parse_tags(Some(&json!({"key": key})));
            let _ = restore_volume_id(json!({"volume_id": volume}).as_object().unwrap());
        }
    }
}
