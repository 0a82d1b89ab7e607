//! The backup lifecycle as the API drives it (spec 01 §5–§10): create, update,
//! delete, restore, the admin actions, export and import. Each call checks the body
//! Cinder's way, then the rules in the spec's order, moves statuses with conditional
//! updates, and leaves the byte work to the workers through the catalog's job queue.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine as _;
use serde_json::{Map, Value, json};
use tokio::sync::Notify;
use vbs_catalog::{
    BackupRecord, Catalog, CatalogError, DeleteStart, Dialect, JobKind, NewBackup, NewJob,
    RestoreRefused, RestoreTarget, SnapshotRecord, VolumeRecord, ts,
};

use crate::schema::{self, fail};
use crate::volumes::{invalid_volume, restore_target_busy};
use crate::{Clock, Context, Error, Microversion, VolumeService};

/// What `backup_service` says in exported records.
pub const BACKUP_SERVICE: &str = "vbs.backup.repository";
/// What `export_record` names as the backup service: a Cinder backup driver's dotted
/// path, which clients (and tempest) expect under `cinder.backup.drivers`.
pub const EXPORTED_BACKUP_SERVICE: &str = "cinder.backup.drivers.vbs.VbsBackupDriver";
/// The source volume's metadata a backup of ours recorded in its `service_metadata`;
/// `None` for rows another driver wrote (its own text there) or older ones.
pub(crate) fn saved_volume_metadata(
    service_metadata: Option<&str>,
) -> Option<BTreeMap<String, String>> {
    let v: Value = serde_json::from_str(service_metadata?).ok()?;
    serde_json::from_value(v.get("volume_metadata")?.clone()).ok()
}

/// The volume id of an imported backup (Cinder's placeholder).
pub const IMPORTED_VOLUME_ID: &str = "00000000-0000-0000-0000-000000000000";

/// The backup lifecycle; cheap to clone.
#[derive(Clone)]
pub struct BackupLifecycle {
    catalog: Catalog,
    volumes: VolumeService,
    /// Workers running in this process (0: refuse work with 503).
    workers: Arc<AtomicUsize>,
    /// Wakes the workers when a job is queued.
    pub(crate) wake: Arc<Notify>,
    host: String,
    /// The time backup policies go by.
    clock: Clock,
    /// What this process counts for `/metrics`.
    metrics: crate::Metrics,
}

/// The answer to a restore request.
#[derive(Debug, Clone)]
pub struct RestoreStarted {
    pub backup_id: String,
    pub volume_id: String,
    pub volume_name: Option<String>,
}

fn backup_not_found(id: &str) -> Error {
    Error::NotFound(format!("Backup {id} could not be found."))
}

fn invalid_backup(reason: &str) -> Error {
    Error::Invalid(format!("Invalid backup: {reason}"))
}

/// The owner's delete of a backup other projects were given.
pub(crate) fn shared_backup() -> Error {
    invalid_backup("The backup is shared with other projects; cancel its sharing first.")
}

/// A job of `project` on backup `backup_id`; `entities` is what users see of it.
fn job(
    kind: JobKind,
    project: &str,
    backup_id: &str,
    volume_id: Option<&str>,
    options: Option<Value>,
    entities: &Value,
) -> NewJob {
    NewJob {
        volume_id: volume_id.map(str::to_owned),
        options: options.map(|o| o.to_string()),
        entities: Some(entities.to_string()),
        ..NewJob::new(kind, project, backup_id)
    }
}

/// A backup to start, its rules checked (by the native or the VBS API).
pub(crate) struct StartBackup {
    pub volume: VolumeRecord,
    pub snapshot: Option<SnapshotRecord>,
    pub parent: Option<String>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub container: Option<String>,
    pub availability_zone: Option<String>,
    pub metadata: BTreeMap<String, String>,
    /// The volume may be `in-use` (a temporary snapshot is read).
    pub force: bool,
    /// VBS tags (`/cloudbackups`), stored with the record.
    pub tags: BTreeMap<String, String>,
    /// The policy run task it is for, recorded with it.
    pub policy_task: Option<vbs_catalog::PolicyTaskRef>,
    /// The job it is a part of (a policy run).
    pub parent_job: Option<String>,
}

/// A backup that started: its record (`creating`) and its job's public id.
pub(crate) struct BackupStarted {
    pub record: BackupRecord,
    pub job_id: String,
}

impl BackupLifecycle {
    pub fn new(catalog: Catalog, volumes: VolumeService, host: String) -> Self {
        Self {
            catalog,
            volumes,
            workers: Arc::default(),
            wake: Arc::new(Notify::new()),
            host,
            clock: Clock::System,
            metrics: crate::Metrics::new(),
        }
    }

    /// The same lifecycle going by `clock` for backup policies.
    #[must_use]
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// This process's metrics.
    pub fn metrics(&self) -> &crate::Metrics {
        &self.metrics
    }

    /// Now, by the policies' clock (µs since the epoch).
    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn volumes(&self) -> &VolumeService {
        &self.volumes
    }

    pub(crate) fn worker_started(&self) {
        self.workers.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn worker_stopped(&self) {
        self.workers.fetch_sub(1, Ordering::SeqCst);
    }

    /// No backup worker runs here or on any live node: Cinder's "no backup service"
    /// (we answer 503).
    pub(crate) async fn need_worker(&self) -> Result<(), Error> {
        if self.workers.load(Ordering::SeqCst) > 0
            || !self.catalog.live_nodes("worker").await?.is_empty()
        {
            return Ok(());
        }
        Err(Error::Unavailable(
            "Service cinder-backup could not be found.".into(),
        ))
    }

    pub(crate) async fn enqueued(&self) {
        self.wake.notify_waiters();
    }

    /// At start-up: work a crash interrupted is finished or failed, never left in a
    /// transitional status. On `SQLite` (one process) every running job and every
    /// repository lock was ours: the jobs are run again and the locks dropped. On
    /// `PostgreSQL` other nodes' leases decide, and requests in flight on other nodes
    /// get `grace`. Then [`BackupLifecycle::sweep`].
    pub async fn recover(&self, grace: std::time::Duration) -> Result<u64, Error> {
        let c = &self.catalog;
        let mut n = 0;
        if c.dialect() == Dialect::Sqlite {
            n += c.requeue_running_jobs().await?;
            c.clear_repository_locks().await?;
            n += self.sweep(None).await?;
        } else {
            n += self.sweep(Some(grace)).await?;
        }
        Ok(n)
    }

    /// Backups in a transitional status whose job is gone (only backups this service
    /// runs: `service` is ours) are failed (`creating`), given back (`restoring`) or
    /// deleted again (`deleting`); busy volumes and snapshots without work are
    /// released; volume copies, deletes and extends whose process died are failed.
    /// With `grace`, only rows unchanged for that long are touched (the scheduler's
    /// periodic sweep, while requests are in flight).
    pub async fn sweep(&self, grace: Option<std::time::Duration>) -> Result<u64, Error> {
        let c = &self.catalog;
        let now = ts::now_micros();
        let stale_before = grace.map_or(now, |g| {
            now - i64::try_from(g.as_micros()).unwrap_or(i64::MAX)
        });
        let mut n = 0;
        for b in c
            .backups_in_status(&["creating", "restoring", "deleting"])
            .await?
        {
            // Rows another service wrote (a Cinder catalog imported with
            // `vbs admin import-backups`) are history, not work of ours.
            if b.service.as_deref() != Some(BACKUP_SERVICE)
                || b.updated_at.unwrap_or(b.created_at) >= stale_before
                || c.has_job(&b.id).await?
            {
                continue;
            }
            let reason = "Interrupted by a restart of the backup service.";
            match b.status.as_str() {
                "creating" => {
                    c.set_backup_status(&b.id, &["creating"], "error", Some(Some(reason)))
                        .await?;
                }
                "restoring" => {
                    c.set_backup_status(&b.id, &["restoring"], "available", Some(Some(reason)))
                        .await?;
                }
                _ => {
                    c.enqueue_job(&job(
                        JobKind::Delete,
                        &b.project_id,
                        &b.id,
                        None,
                        None,
                        &json!({"backup_id": b.id}),
                    ))
                    .await?;
                }
            }
            n += 1;
        }
        n += c.release_orphaned_sources(stale_before).await?;
        n += c
            .fail_interrupted_volume_work(grace.map(|_| stale_before))
            .await?;
        Ok(n)
    }

    /// A backup the caller may read and restore from: its project's, any (admins), or
    /// one shared with its project (spec 03 §4).
    pub(crate) async fn readable(&self, ctx: &Context, id: &str) -> Result<BackupRecord, Error> {
        let scope = (!ctx.is_admin()).then_some(ctx.project_id.as_str());
        match self.catalog.get_readable_backup(id, scope).await {
            Ok(b) => Ok(b),
            Err(CatalogError::NotFound) => Err(backup_not_found(id)),
            Err(e) => Err(e.into()),
        }
    }

    /// A backup in the caller's scope (admins: any project).
    pub(crate) async fn lookup(&self, ctx: &Context, id: &str) -> Result<BackupRecord, Error> {
        let scope = (!ctx.is_admin()).then_some(ctx.project_id.as_str());
        match self.catalog.get_backup(id, scope).await {
            Ok(b) => Ok(b),
            Err(CatalogError::NotFound) => Err(backup_not_found(id)),
            Err(e) => Err(e.into()),
        }
    }

    /// `POST /backups` (§5): returns the new record, status `creating`.
    pub async fn create(
        &self,
        ctx: &Context,
        version: Microversion,
        body: &Value,
    ) -> Result<BackupRecord, Error> {
        let b = parse_create(body, version)?;
        let volume = self.volumes.lookup(ctx, &b.volume_id).await?;
        if !ctx.can_write() {
            return Err(Error::Forbidden("backup:create"));
        }
        let mut data_timestamp = None;
        let mut snapshot = None;
        if let Some(sid) = &b.snapshot_id {
            let s = match self
                .catalog
                .get_snapshot(sid, (!ctx.is_admin()).then_some(ctx.project_id.as_str()))
                .await
            {
                Ok(s) => s,
                Err(CatalogError::NotFound) => {
                    return Err(Error::NotFound(format!(
                        "Snapshot {sid} could not be found."
                    )));
                }
                Err(e) => return Err(e.into()),
            };
            if s.volume_id != volume.id {
                return Err(invalid_volume(&format!(
                    "Volume {} does not match with snapshot.volume_id {}.",
                    volume.id, s.volume_id
                )));
            }
            if s.status != "available" {
                return Err(Error::Invalid(format!(
                    "Invalid snapshot: Snapshot to be backed up must be available, but the \
                     current status is \"{}\".",
                    s.status
                )));
            }
            data_timestamp = Some(s.created_at);
            snapshot = Some(s);
        } else {
            match volume.status.as_str() {
                "available" => {}
                "in-use" if b.force => {}
                "in-use" => {
                    return Err(invalid_volume(
                        "Backing up an in-use volume must use the force flag.",
                    ));
                }
                other => {
                    return Err(invalid_volume(&format!(
                        "Volume to be backed up must be available or in-use, but the \
                         current status is \"{other}\"."
                    )));
                }
            }
        }
        self.need_worker().await?;
        let parent = if b.incremental {
            let p = self
                .catalog
                .latest_available_backup(&ctx.project_id, &volume.id, data_timestamp)
                .await?;
            match p {
                Some(p) => Some(p.id),
                None => {
                    return Err(invalid_backup(
                        "No backups available to do an incremental backup.",
                    ));
                }
            }
        } else {
            None
        };

        self.start_backup(
            ctx,
            StartBackup {
                volume,
                snapshot,
                parent,
                name: b.name,
                description: b.description,
                container: b.container,
                availability_zone: b.availability_zone,
                metadata: b.metadata,
                force: b.force,
                tags: BTreeMap::new(),
                policy_task: None,
                parent_job: None,
            },
        )
        .await
        .map(|started| started.record)
    }

    /// Starts a backup whose rules were checked: marks its source busy, then writes
    /// the record and its job in one transaction; undoes the mark on failure.
    pub(crate) async fn start_backup(
        &self,
        ctx: &Context,
        start: StartBackup,
    ) -> Result<BackupStarted, Error> {
        let StartBackup {
            volume,
            snapshot,
            parent,
            ..
        } = &start;
        let in_use = volume.status == "in-use";
        if let Some(s) = snapshot {
            if !self
                .catalog
                .set_snapshot_status(&s.id, &["available"], "backing-up", None, None)
                .await?
            {
                return Err(Error::Invalid(
                    "Invalid snapshot: Snapshot to be backed up must be available.".into(),
                ));
            }
        } else {
            self.volumes
                .begin_backup(ctx, &volume.id, start.force)
                .await?;
        }
        let id = uuid::Uuid::new_v4().to_string();
        let record = NewBackup {
            id: id.clone(),
            project_id: ctx.project_id.clone(),
            user_id: Some(ctx.user_id.clone()),
            volume_id: volume.id.clone(),
            snapshot_id: snapshot.as_ref().map(|s| s.id.clone()),
            parent_id: parent.clone(),
            display_name: start.name.clone(),
            display_description: start.description.clone(),
            status: "creating".into(),
            container: start.container.clone(),
            availability_zone: start
                .availability_zone
                .clone()
                .or_else(|| volume.availability_zone.clone()),
            host: Some(self.host.clone()),
            service: Some(BACKUP_SERVICE.into()),
            // The driver's own record, as Cinder's drivers keep theirs: here the source
            // volume's metadata, which a restore gives back.
            service_metadata: Some(json!({"volume_metadata": volume.metadata}).to_string()),
            size: volume.size,
            data_timestamp: snapshot.as_ref().map(|s| s.created_at),
            metadata: start.metadata.clone(),
            tags: start.tags.clone(),
            policy_task: start.policy_task.clone(),
            ..NewBackup::default()
        };
        let options = json!({
            "from_in_use": in_use && snapshot.is_none(),
            "snapshot_id": record.snapshot_id,
        });
        let entities = json!({
            "backup_id": id,
            "volume_id": volume.id,
            "snapshot_id": record.snapshot_id,
            "bks_create_volume_name": record.display_name,
        });
        let new_job = NewJob {
            parent_id: start.parent_job.clone(),
            ..job(
                JobKind::Backup,
                &ctx.project_id,
                &id,
                Some(&volume.id),
                Some(options),
                &entities,
            )
        };
        let created = self.catalog.create_backup(&record, &new_job).await;
        if let Err(e) = created {
            self.release_source(&record).await;
            return Err(match e {
                // The parent was deleted since it was chosen.
                CatalogError::NotFound => {
                    invalid_backup("No backups available to do an incremental backup.")
                }
                other => other.into(),
            });
        }
        self.enqueued().await;
        Ok(BackupStarted {
            record: self.lookup(ctx, &id).await?,
            job_id: new_job.id,
        })
    }

    /// Puts a backup's source back to what it was before the backup, unless another
    /// backup holds it ([`Catalog::release_backup_source`]).
    pub(crate) async fn release_source(&self, b: &NewBackup) {
        if let Err(e) = self
            .catalog
            .release_backup_source(&b.id, &b.volume_id, b.snapshot_id.as_deref())
            .await
        {
            tracing::warn!(backup = %b.id, error = %e, "could not release the backup's source");
        }
    }

    /// `PUT /backups/{id}` (§6, ≥ 3.9).
    pub async fn update(
        &self,
        ctx: &Context,
        version: Microversion,
        id: &str,
        body: &Value,
    ) -> Result<BackupRecord, Error> {
        let top = schema::root(body)?;
        schema::no_extra(top, None, &["backup"])?;
        let empty = Map::new();
        let b = match top.get("backup") {
            None => {
                return Err(fail(None, body, "'backup' is a required property"));
            }
            Some(Value::Null) => &empty,
            Some(Value::Object(o)) => o,
            Some(v) => {
                return Err(fail(
                    Some("backup"),
                    v,
                    &schema::type_message(v, &["object"]),
                ));
            }
        };
        let mut allowed = vec!["name", "description"];
        if version.at_least(Microversion::METADATA) {
            allowed.push("metadata");
        }
        schema::no_extra(b, Some("backup"), &allowed)?;
        let name = match b.get("name") {
            None => None,
            Some(_) => Some(schema::string(b, "name", true, 0, 255)?.map(str::to_owned)),
        };
        let description = match b.get("description") {
            None => None,
            Some(_) => Some(schema::description(b, "description")?),
        };
        let metadata = match b.get("metadata") {
            None => None,
            Some(_) => Some(schema::metadata(b, "metadata", false)?),
        };
        self.lookup(ctx, id).await?;
        if !ctx.can_write() {
            return Err(Error::Forbidden("backup:update"));
        }
        self.catalog
            .update_backup(
                id,
                name.as_ref().map(Option::as_deref),
                description.as_ref().map(Option::as_deref),
                metadata.as_ref(),
            )
            .await?;
        self.lookup(ctx, id).await
    }

    /// `DELETE /backups/{id}` (§7).
    pub async fn delete(&self, ctx: &Context, id: &str) -> Result<(), Error> {
        let b = self.lookup(ctx, id).await?;
        if !ctx.can_write() {
            return Err(Error::Forbidden("backup:delete"));
        }
        if b.status != "available" && b.status != "error" {
            return Err(invalid_backup("Backup status must be available or error"));
        }
        self.start_delete(ctx, &b, &["available", "error"])
            .await
            .map(|_| ())
    }

    /// The dependents check, the move to `deleting` and the job are one conditional
    /// transaction: an incremental created at the same moment either counts as a
    /// dependent (the delete is refused) or finds its parent gone (it is refused).
    /// Returns the delete job's public id.
    pub(crate) async fn start_delete(
        &self,
        ctx: &Context,
        b: &BackupRecord,
        from: &[&str],
    ) -> Result<String, Error> {
        let dependents = || invalid_backup("Incremental backups exist for this backup.");
        // Cinder's check, before the worker check; the transaction checks it again.
        if b.num_dependent_backups > 0 {
            return Err(dependents());
        }
        self.need_worker().await?;
        let delete = job(
            JobKind::Delete,
            &ctx.project_id,
            &b.id,
            None,
            None,
            &json!({"backup_id": b.id}),
        );
        match self.catalog.begin_backup_delete(&b.id, from, &delete).await {
            Ok(DeleteStart::Started) => {}
            Ok(DeleteStart::HasDependents) => return Err(dependents()),
            Ok(DeleteStart::Shared) => return Err(shared_backup()),
            Ok(DeleteStart::WrongStatus) | Err(CatalogError::NotFound) => {
                return Err(invalid_backup("Backup status must be available or error"));
            }
            Err(e) => return Err(e.into()),
        }
        self.enqueued().await;
        Ok(delete.id)
    }

    /// `POST /backups/{id}/restore` (§8).
    pub async fn restore(
        &self,
        ctx: &Context,
        id: &str,
        body: &Value,
    ) -> Result<RestoreStarted, Error> {
        let top = schema::root(body)?;
        schema::no_extra(top, None, &["restore"])?;
        let empty = Map::new();
        let r = match top.get("restore") {
            None => return Err(fail(None, body, "'restore' is a required property")),
            Some(Value::Null) => &empty,
            Some(Value::Object(o)) => o,
            Some(v) => {
                return Err(fail(
                    Some("restore"),
                    v,
                    &schema::type_message(v, &["object", "null"]),
                ));
            }
        };
        schema::no_extra(r, Some("restore"), &["volume_id", "name"])?;
        let volume_id = schema::optional_uuid(r, "volume_id")?.map(str::to_owned);
        let name = schema::string(r, "name", true, 0, 255)?.map(str::to_owned);

        let b = self.readable(ctx, id).await?;
        if !ctx.can_write() {
            return Err(Error::Forbidden("backup:restore"));
        }
        if b.status != "available" {
            return Err(invalid_backup("Backup status must be available"));
        }
        if b.size <= 0 {
            return Err(invalid_backup("Backup to be restored has invalid size"));
        }
        self.need_worker().await?;
        self.start_restore(ctx, &b, volume_id.as_deref(), name)
            .await
            .map(|(started, _)| started)
    }

    /// Starts a restore of `b` (checked: `available`, a worker exists) into volume
    /// `volume_id` of the caller, or a new one named `name`; returns what started and
    /// the job's public id.
    pub(crate) async fn start_restore(
        &self,
        ctx: &Context,
        b: &BackupRecord,
        volume_id: Option<&str>,
        name: Option<String>,
    ) -> Result<(RestoreStarted, String), Error> {
        // A volume made for this restore ends `error` if it fails (§8.2).
        let options = json!({"new_volume": volume_id.is_none()});
        let restore_job = |v: &str| {
            job(
                JobKind::Restore,
                &ctx.project_id,
                &b.id,
                Some(v),
                Some(options.clone()),
                &json!({"backup_id": b.id, "volume_id": v}),
            )
        };
        let (volume_id, volume_name, refused, job_id) = match volume_id {
            None => {
                let v = self
                    .volumes
                    .new_restore_volume(ctx, b.size, name, &b.id)
                    .await?;
                let new_job = restore_job(&v.id);
                let refused = self
                    .catalog
                    .start_restore(&b.id, RestoreTarget::New(&v), &new_job)
                    .await;
                if !matches!(refused, Ok(Ok(()))) {
                    self.volumes.discard_image(&v.id).await;
                }
                (v.id, v.display_name, refused?, new_job.id)
            }
            Some(vid) => {
                let v = self.volumes.check_restore_target(ctx, vid, b.size).await?;
                let new_job = restore_job(&v.id);
                let refused = self
                    .catalog
                    .start_restore(&b.id, RestoreTarget::Existing(&v.id), &new_job)
                    .await?;
                (v.id, v.display_name, refused, new_job.id)
            }
        };
        match refused {
            Ok(()) => {}
            Err(RestoreRefused::Volume) => return Err(restore_target_busy()),
            Err(RestoreRefused::Backup) => {
                return Err(invalid_backup("Backup status must be available"));
            }
        }
        self.enqueued().await;
        Ok((
            RestoreStarted {
                backup_id: b.id.clone(),
                volume_id,
                volume_name,
            },
            job_id,
        ))
    }

    /// `POST /backups/{id}/action` (§9).
    pub async fn action(&self, ctx: &Context, id: &str, body: &Value) -> Result<(), Error> {
        let Some(obj) = body.as_object().filter(|o| o.len() == 1) else {
            return Err(Error::Invalid("Malformed request body".into()));
        };
        let Some((name, arg)) = obj.iter().next() else {
            return Err(Error::Invalid("Malformed request body".into()));
        };
        match name.as_str() {
            "os-reset_status" => self.reset_status(ctx, id, arg).await,
            "os-force_delete" => self.force_delete(ctx, id).await,
            other => Err(Error::Invalid(format!(
                "There is no such action: {other}. Verify the request body and \
                 Content-Type header and try again."
            ))),
        }
    }

    async fn reset_status(&self, ctx: &Context, id: &str, arg: &Value) -> Result<(), Error> {
        let Some(a) = arg.as_object() else {
            return Err(fail(
                Some("os-reset_status"),
                arg,
                &schema::type_message(arg, &["object"]),
            ));
        };
        schema::no_extra(a, Some("os-reset_status"), &["status"])?;
        let status = match a.get("status") {
            None => {
                return Err(fail(
                    Some("os-reset_status"),
                    arg,
                    "'status' is a required property",
                ));
            }
            Some(Value::String(s))
                if ["available", "error"].contains(&s.to_lowercase().as_str()) =>
            {
                s.to_lowercase()
            }
            Some(v) => {
                return Err(fail(
                    Some("status"),
                    v,
                    &format!(
                        "{} is not one of ['available', 'error']",
                        schema::py_repr(v)
                    ),
                ));
            }
        };
        self.lookup(ctx, id).await?;
        if !ctx.is_admin() {
            return Err(Error::Forbidden(
                "volume_extension:backup_admin_actions:reset_status",
            ));
        }
        self.catalog
            .set_backup_status(id, &[], &status, None)
            .await?;
        self.catalog.set_backup_progress(id, None).await?;
        Ok(())
    }

    async fn force_delete(&self, ctx: &Context, id: &str) -> Result<(), Error> {
        let b = self.lookup(ctx, id).await?;
        if !ctx.is_admin() {
            return Err(Error::Forbidden(
                "volume_extension:backup_admin_actions:force_delete",
            ));
        }
        if b.status == "deleting" {
            return Ok(());
        }
        // A running backup sees its row leave `creating` and aborts.
        self.start_delete(ctx, &b, &[]).await.map(|_| ())
    }

    /// `GET /backups/{id}/export_record` (§10.1): `(backup_service, backup_url)`.
    pub async fn export_record(&self, ctx: &Context, id: &str) -> Result<(String, String), Error> {
        let b = self.lookup(ctx, id).await?;
        if !ctx.is_admin() {
            return Err(Error::Forbidden("backup:export-import"));
        }
        if b.status != "available" {
            return Err(invalid_backup(&format!(
                "Backup status must be available and not {}.",
                b.status
            )));
        }
        let record = json!({
            "id": b.id,
            "size": b.size,
            "volume_id": b.volume_id,
            "project_id": b.project_id,
            "user_id": b.user_id,
            "display_name": b.display_name,
            "display_description": b.display_description,
            "container": b.container,
            "availability_zone": b.availability_zone,
            "parent_id": b.parent_id,
            "snapshot_id": b.snapshot_id,
            "object_count": b.object_count,
            "service_metadata": b.service_metadata,
            "data_timestamp": b.data_timestamp.map(ts::format_api),
            "metadata": b.metadata,
            // Whose manifest holds the data: an import under another id copies it.
            "manifest_id": b.id,
        });
        let url = base64::engine::general_purpose::STANDARD.encode(record.to_string());
        Ok((EXPORTED_BACKUP_SERVICE.into(), url))
    }

    /// `POST /backups/import_record` (§10.2): the new record, `creating` until a
    /// worker has checked the data is in the repository.
    pub async fn import_record(&self, ctx: &Context, body: &Value) -> Result<BackupRecord, Error> {
        let top = schema::root(body)?;
        schema::no_extra(top, None, &["backup-record"])?;
        let Some(r) = schema::object(top, None, "backup-record", true, false)? else {
            return Err(fail(None, body, "'backup-record' is a required property"));
        };
        schema::no_extra(r, Some("backup-record"), &["backup_service", "backup_url"])?;
        for key in ["backup_service", "backup_url"] {
            if !r.contains_key(key) {
                return Err(fail(
                    Some("backup-record"),
                    &Value::Object(r.clone()),
                    &format!("'{key}' is a required property"),
                ));
            }
        }
        schema::string(r, "backup_service", false, 0, 255)?;
        let url = schema::string(r, "backup_url", false, 1, usize::MAX)?.unwrap_or_default();
        if !ctx.is_admin() {
            return Err(Error::Forbidden("backup:backup-import"));
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(url.trim())
            .map_err(|_| {
                fail(
                    Some("backup_url"),
                    &Value::String(url.to_owned()),
                    &format!("'{url}' is not a 'base64'"),
                )
            })?;
        let record: Map<String, Value> = serde_json::from_slice(&decoded).map_err(|_| {
            Error::Invalid("Invalid input received: Can't parse backup record.".into())
        })?;
        let Some(id) = record.get("id").and_then(Value::as_str).map(str::to_owned) else {
            return Err(Error::Invalid(
                "Invalid input received: Provided backup record is missing an id".into(),
            ));
        };
        let Some(size) = record.get("size").and_then(Value::as_i64) else {
            return Err(Error::Invalid(
                "Invalid input received: Provided backup record is missing size attribute".into(),
            ));
        };
        match self.catalog.get_backup(&id, None).await {
            Ok(_) => return Err(invalid_backup("Backup already exists in database.")),
            Err(CatalogError::NotFound) => {}
            Err(e) => return Err(e.into()),
        }
        self.need_worker().await?;
        let text = |k: &str| record.get(k).and_then(Value::as_str).map(str::to_owned);
        let metadata: BTreeMap<String, String> = record
            .get("metadata")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                    .collect()
            })
            .unwrap_or_default();
        let new = NewBackup {
            id: id.clone(),
            project_id: ctx.project_id.clone(),
            user_id: Some(ctx.user_id.clone()),
            volume_id: IMPORTED_VOLUME_ID.into(),
            display_description: text("display_description"),
            status: "creating".into(),
            container: text("container"),
            availability_zone: text("availability_zone"),
            host: Some(self.host.clone()),
            service: Some(BACKUP_SERVICE.into()),
            service_metadata: text("service_metadata"),
            size,
            object_count: record
                .get("object_count")
                .and_then(Value::as_i64)
                .unwrap_or(0),
            data_timestamp: text("data_timestamp").as_deref().and_then(ts::parse),
            metadata,
            ..NewBackup::default()
        };
        let copy_from = text("manifest_id").filter(|m| *m != id);
        if copy_from.as_deref().is_some_and(|m| {
            m.is_empty()
                || m.len() > 64
                || !m.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
        }) {
            return Err(Error::Invalid(
                "Invalid input received: Can't parse backup record.".into(),
            ));
        }
        self.catalog
            .create_backup(
                &new,
                &job(
                    JobKind::Verify,
                    &ctx.project_id,
                    &id,
                    None,
                    copy_from.map(|m| json!({"copy_from": m})),
                    &json!({"backup_id": id}),
                ),
            )
            .await
            .map_err(|e| match e {
                CatalogError::AlreadyExists => invalid_backup("Backup already exists in database."),
                other => other.into(),
            })?;
        self.enqueued().await;
        self.lookup(ctx, &id).await
    }
}

/// A create body, checked.
struct CreateBody {
    volume_id: String,
    name: Option<String>,
    description: Option<String>,
    container: Option<String>,
    incremental: bool,
    force: bool,
    snapshot_id: Option<String>,
    metadata: BTreeMap<String, String>,
    availability_zone: Option<String>,
}

fn parse_create(body: &Value, version: Microversion) -> Result<CreateBody, Error> {
    let top = schema::root(body)?;
    schema::no_extra(top, None, &["backup"])?;
    let Some(b) = schema::object(top, None, "backup", true, false)? else {
        return Err(fail(None, body, "'backup' is a required property"));
    };
    let mut allowed = vec![
        "volume_id",
        "container",
        "description",
        "incremental",
        "force",
        "name",
        "snapshot_id",
    ];
    if version.at_least(Microversion::METADATA) {
        allowed.push("metadata");
    }
    if version.at_least(Microversion::AZ) {
        allowed.push("availability_zone");
    }
    schema::no_extra(b, Some("backup"), &allowed)?;
    let Some(volume_id) = schema::uuid(b, "volume_id")? else {
        return Err(fail(
            Some("backup"),
            &Value::Object(b.clone()),
            "'volume_id' is a required property",
        ));
    };
    Ok(CreateBody {
        volume_id: volume_id.to_owned(),
        name: schema::string(b, "name", true, 0, 255)?.map(str::to_owned),
        description: schema::description(b, "description")?,
        container: schema::string(b, "container", true, 0, 255)?.map(str::to_owned),
        incremental: schema::boolean(b, "incremental", false)?.unwrap_or(false),
        force: schema::boolean(b, "force", false)?.unwrap_or(false),
        snapshot_id: schema::optional_uuid(b, "snapshot_id")?.map(str::to_owned),
        metadata: schema::metadata(b, "metadata", true)?,
        availability_zone: schema::string(b, "availability_zone", true, 0, 255)?.map(str::to_owned),
    })
}
