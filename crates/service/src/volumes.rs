//! Volumes: create (a sparse image, or a copy of a snapshot or another volume), show,
//! list and delete, with Cinder's validation, status rules and messages; and the
//! status transitions the backup worker needs (`backing-up`, `restoring-backup`).
//!
//! Quick file work (a new sparse image, an extend, a delete) runs inside the request on
//! the blocking pool, so the answer shows the final status; copies run in the
//! background and the volume or snapshot shows `creating` until they finish. The
//! catalog row flips to `available` only after the file is durable. Work cut short by a
//! restart is marked failed by [`VolumeService::recover`].

use std::path::PathBuf;

use serde_json::Value;
use vbs_catalog::{
    Catalog, CatalogError, DeleteCheck, NewVolume, Previous, SnapshotQuery, VolumeQuery,
    VolumeRecord, WorkOn,
};
use vbs_engine::pool::{self, GIB, Pool, PoolError};

use crate::backups::{last, paging};
use crate::schema;
use crate::{Context, Error, Microversion, parse_bool};

/// The one availability zone volumes live in.
pub const DEFAULT_AZ: &str = "nova";
/// The volume type of volumes created without one (Cinder's default type's name).
pub const DEFAULT_TYPE: &str = "__DEFAULT__";
/// What `os-vol-host-attr:host` shows for volumes in the pool.
pub const POOL_HOST: &str = "vbs@pool#pool";

/// Every volume status Cinder knows, in its order (`VolumeStatus.ALL`).
pub const VOLUME_STATUSES: &[&str] = &[
    "creating",
    "available",
    "deleting",
    "error",
    "error_deleting",
    "error_managing",
    "managing",
    "attaching",
    "in-use",
    "detaching",
    "maintenance",
    "restoring-backup",
    "error_restoring",
    "reserved",
    "awaiting-transfer",
    "backing-up",
    "error_backing-up",
    "error_extending",
    "downloading",
    "uploading",
    "retyping",
    "extending",
];

/// Statuses a volume may be deleted from (without force).
const DELETABLE: &[&str] = &[
    "available",
    "error",
    "error_restoring",
    "error_extending",
    "error_managing",
];

/// The volume part of the domain. Cheap to clone.
#[derive(Debug, Clone)]
pub struct VolumeService {
    pub(crate) catalog: Catalog,
    pub(crate) pool: Pool,
    /// How often running in-process work refreshes its row (see [`Self::while_fresh`]).
    heartbeat: std::time::Duration,
    /// Directories (resolved) under which files and devices may be managed.
    pub(crate) manageable_roots: std::sync::Arc<Vec<PathBuf>>,
}

/// Aborts a task when dropped: a heartbeat stops with the work it belongs to, even when
/// that work is dropped half-way (a client that hung up).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A listed page and the limit of Cinder's `next`-link rule.
#[derive(Debug, Clone)]
pub struct Listed<T> {
    pub items: Vec<T>,
    pub link_limit: u64,
}

/// A volume create request, validated (`POST /volumes`).
#[derive(Debug, Clone, Default)]
pub struct CreateVolumeOptions {
    pub name: Option<String>,
    pub description: Option<String>,
    pub size: Option<i64>,
    pub volume_type: Option<String>,
    pub availability_zone: Option<String>,
    pub metadata: std::collections::BTreeMap<String, String>,
    pub snapshot_id: Option<String>,
    pub source_volid: Option<String>,
}

impl CreateVolumeOptions {
    /// Checks a create body as Cinder's schema for `version` does (unknown keys inside
    /// `volume` are refused from 3.53, ignored before).
    pub fn from_body(body: &Value, version: Microversion) -> Result<Self, Error> {
        let top = schema::root(body)?;
        schema::no_extra(top, None, &["volume", "OS-SCH-HNT:scheduler_hints"])?;
        schema::object(top, None, "OS-SCH-HNT:scheduler_hints", false, true)?;
        let v = schema::object(top, None, "volume", true, false)?
            .ok_or_else(|| Error::Invalid("'volume' is a required property".into()))?;
        let mut known = vec![
            "name",
            "description",
            "display_name",
            "display_description",
            "volume_type",
            "metadata",
            "snapshot_id",
            "source_volid",
            "consistencygroup_id",
            "size",
            "availability_zone",
            "multiattach",
            "image_id",
            "imageRef",
        ];
        if version.at_least(Microversion::GROUP_VOLUME) {
            known.push("group_id");
        }
        if version.at_least(Microversion::VOLUME_CREATE_FROM_BACKUP) {
            known.push("backup_id");
        }
        if version.at_least(Microversion::VOLUME_SCHEMA_CHANGES) {
            schema::no_extra(v, Some("volume"), &known)?;
        }
        let name = schema::stripped_text(v, "name", "name")?;
        let display_name = schema::stripped_text(v, "display_name", "name")?;
        let description = schema::stripped_text(v, "description", "description")?;
        let display_description = schema::stripped_text(v, "display_description", "description")?;
        let volume_type = schema::string(v, "volume_type", true, 0, 255)?;
        let metadata = schema::metadata(v, "metadata", true)?;
        let snapshot_id = schema::optional_uuid(v, "snapshot_id")?;
        let source_volid = schema::optional_uuid(v, "source_volid")?;
        let group = schema::optional_uuid(v, "consistencygroup_id")?;
        let size = schema::volume_size(v, "size", true)?;
        let availability_zone = schema::string(v, "availability_zone", true, 1, 255)?;
        let multiattach = schema::boolean(v, "multiattach", true)?;
        let image = schema::string(v, "image_id", true, 0, 255)?
            .or(schema::string(v, "imageRef", true, 0, 255)?);
        let group = match (group, schema::string(v, "group_id", true, 0, 255)?) {
            (g, Some(id)) if version.at_least(Microversion::GROUP_VOLUME) => Some(id).or(g),
            (g, _) => g,
        };
        let backup = if version.at_least(Microversion::VOLUME_CREATE_FROM_BACKUP) {
            schema::optional_uuid(v, "backup_id")?
        } else {
            None
        };
        if let Some(g) = group {
            return Err(Error::NotFound(format!("Group {g} could not be found.")));
        }
        if multiattach == Some(true) {
            return Err(Error::Invalid(
                "multiattach parameter has been removed. The default behavior is to use \
                 multiattach enabled volume types. Contact your administrator to create a \
                 multiattach enabled volume type and use it to create multiattach volumes."
                    .into(),
            ));
        }
        if image.is_some_and(|i| !i.is_empty()) {
            return Err(Error::Invalid(
                "Invalid input received: creating a volume from an image is not supported \
                 by this service."
                    .into(),
            ));
        }
        if backup.is_some() {
            return Err(Error::Invalid(
                "Invalid input received: creating a volume from a backup is not supported \
                 by this service; restore the backup instead."
                    .into(),
            ));
        }
        Ok(Self {
            // The REST names win over the legacy `display_*` ones, as in Cinder.
            name: name.or(display_name),
            description: description.or(display_description),
            size,
            volume_type: volume_type.filter(|t| !t.is_empty()).map(str::to_owned),
            availability_zone: availability_zone.map(str::to_owned),
            metadata,
            snapshot_id: snapshot_id.map(str::to_owned),
            source_volid: source_volid.map(str::to_owned),
        })
    }
}

pub(crate) fn volume_not_found(id: &str) -> Error {
    Error::NotFound(format!("Volume {id} could not be found."))
}

pub(crate) fn snapshot_not_found(id: &str) -> Error {
    Error::NotFound(format!("Snapshot {id} could not be found."))
}

pub(crate) fn invalid_volume(reason: &str) -> Error {
    Error::Invalid(format!("Invalid volume: {reason}"))
}

/// Cinder's refusal of a restore into a volume that is not `available`.
pub(crate) fn restore_target_busy() -> Error {
    invalid_volume("Volume to be restored to must be available")
}

/// The admin scope of a lookup: admins see every project.
pub(crate) fn scope(ctx: &Context) -> Option<&str> {
    (!ctx.is_admin()).then_some(ctx.project_id.as_str())
}

/// Runs pool work on the blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, PoolError> + Send + 'static,
) -> Result<T, PoolError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(PoolError::Invalid(format!("pool task failed: {e}"))))
}

/// Cinder's `build_or_str` with its `'status must be %s and'` format.
fn status_clause(expected: Option<&[&str]>) -> String {
    match expected {
        Some(list) if !list.is_empty() => format!("status must be {} and", list.join(" or ")),
        _ => String::new(),
    }
}

impl VolumeService {
    pub fn new(catalog: Catalog, pool: Pool) -> Self {
        Self {
            catalog,
            pool,
            heartbeat: std::time::Duration::from_secs(10),
            manageable_roots: std::sync::Arc::default(),
        }
    }

    /// Sets the directories under which manage-existing may adopt files and block
    /// devices (each resolved: symlinks and `..` gone). None: nothing may be adopted.
    #[must_use]
    pub fn with_manageable_roots(mut self, roots: Vec<PathBuf>) -> Self {
        self.manageable_roots = std::sync::Arc::new(roots);
        self
    }

    /// Sets how often running copies, deletes and extends refresh their row; a third
    /// of the grace after which the scheduler's sweep fails work whose node died.
    #[must_use]
    pub fn with_heartbeat(mut self, every: std::time::Duration) -> Self {
        self.heartbeat = every.max(std::time::Duration::from_millis(100));
        self
    }

    /// Runs `work` on a volume or snapshot in `status` while keeping its row fresh, so
    /// that a sweep (on any node) tells work in progress from work whose process died
    /// ([`Catalog::fail_interrupted_volume_work`]).
    pub(crate) async fn while_fresh<T>(
        &self,
        what: WorkOn,
        id: &str,
        status: &'static str,
        work: impl std::future::Future<Output = T>,
    ) -> T {
        let (catalog, id, every) = (self.catalog.clone(), id.to_owned(), self.heartbeat);
        let _beat = AbortOnDrop(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                if let Err(e) = catalog.touch_work(what, &id, status).await {
                    tracing::warn!(%id, error = %e, "refreshing work in progress");
                }
            }
        }));
        work.await
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Where a volume's bytes are: its managed file or device, or its pool image.
    pub fn volume_file(&self, v: &VolumeRecord) -> PathBuf {
        v.provider_location
            .as_deref()
            .map_or_else(|| self.pool.volume_path(&v.id), PathBuf::from)
    }

    /// One volume (`GET /volumes/{id}`): looked up in the caller's scope (404), then
    /// the policy (403).
    pub async fn get(&self, ctx: &Context, id: &str) -> Result<VolumeRecord, Error> {
        let v = self.lookup(ctx, id).await?;
        if !ctx.can_read() {
            return Err(Error::Forbidden("volume:get"));
        }
        Ok(v)
    }

    pub(crate) async fn lookup(&self, ctx: &Context, id: &str) -> Result<VolumeRecord, Error> {
        self.catalog
            .get_volume(id, scope(ctx))
            .await
            .map_err(|e| match e {
                CatalogError::NotFound => volume_not_found(id),
                other => other.into(),
            })
    }

    /// Lists volumes (`GET /volumes[/detail]`): `name` and `status` filters, `limit`,
    /// `offset` and `marker` paging, `all_tenants` for admins. Other filters are
    /// ignored.
    pub async fn list(
        &self,
        ctx: &Context,
        params: &[(String, String)],
    ) -> Result<Listed<VolumeRecord>, Error> {
        if !ctx.can_read() {
            return Err(Error::Forbidden("volume:get_all"));
        }
        let paging = paging(params)?;
        let all = all_tenants(ctx, params)?;
        let q = VolumeQuery {
            project_id: (!all).then(|| ctx.project_id.clone()),
            name: last(params, "name").map(str::to_owned),
            status: last(params, "status").map(str::to_owned),
            marker: paging.marker.clone(),
            offset: paging.offset,
            limit: paging.limit,
        };
        let items = self.catalog.list_volumes(&q).await.map_err(|e| match e {
            CatalogError::NotFound => Error::NotFound(format!(
                "Marker {} could not be found.",
                paging.marker.as_deref().unwrap_or_default()
            )),
            other => other.into(),
        })?;
        Ok(Listed {
            items,
            link_limit: paging.link_limit,
        })
    }

    /// Creates a volume (`POST /volumes`). A plain volume is a sparse image, made
    /// before this returns (status `available`, or `error` if the file could not be
    /// made); a volume from a snapshot or another volume is `creating` until its copy
    /// finishes in the background.
    pub async fn create(
        &self,
        ctx: &Context,
        opts: CreateVolumeOptions,
    ) -> Result<VolumeRecord, Error> {
        if !ctx.can_write() {
            return Err(Error::Forbidden("volume:create"));
        }
        let source = self.creation_source(ctx, &opts).await?;
        let size = match (opts.size, &source) {
            (Some(s), _) => s,
            (None, Some(src)) => src.size,
            (None, None) => {
                return Err(Error::Invalid(
                    "Invalid input received: Volume size 'None' must be an integer and \
                     greater than 0"
                        .into(),
                ));
            }
        };
        if let Some(src) = &source
            && size < src.size
        {
            return Err(Error::Invalid(format!(
                "Invalid input received: {}",
                src.too_small(size)
            )));
        }
        let az = match (&opts.availability_zone, &source) {
            (Some(az), _) => az.clone(),
            (None, Some(src)) => src.zone.clone(),
            (None, None) => DEFAULT_AZ.into(),
        };
        if az != DEFAULT_AZ {
            return Err(Error::Invalid(format!(
                "Availability zone '{az}' is invalid."
            )));
        }
        let id = uuid::Uuid::new_v4().to_string();
        let path = self.pool.volume_path(&id);
        let row = NewVolume {
            id: id.clone(),
            project_id: ctx.project_id.clone(),
            user_id: Some(ctx.user_id.clone()),
            display_name: opts.name,
            display_description: opts.description,
            size,
            status: "creating".into(),
            availability_zone: Some(az),
            volume_type: Some(opts.volume_type.unwrap_or_else(|| DEFAULT_TYPE.into())),
            bootable: false,
            provider_location: Some(path.to_string_lossy().into_owned()),
            managed: false,
            host: Some(POOL_HOST.into()),
            snapshot_id: opts.snapshot_id,
            source_volid: opts.source_volid,
            metadata: opts.metadata,
        };
        let bytes = size_bytes(size);
        match source {
            None => {
                // The image first, then its row, already `available` (or `error` if the
                // image could not be made): a crash in between leaves an unused sparse
                // file, never a volume stuck in `creating`.
                let pool = self.pool.clone();
                let vid = id.clone();
                let made = blocking(move || pool.create_volume(&vid, bytes)).await;
                let row = NewVolume {
                    status: match &made {
                        Ok(_) => "available".into(),
                        Err(e) => {
                            tracing::error!(volume = %id, error = %e, "creating a volume's image");
                            "error".into()
                        }
                    },
                    ..row
                };
                if let Err(e) = self.catalog.create_volume(&row).await {
                    if made.is_ok() {
                        self.discard_image(&id).await;
                    }
                    return Err(e.into());
                }
            }
            Some(src) => {
                self.catalog.create_volume(&row).await?;
                let this = self.clone();
                let vid = id.clone();
                tokio::spawn(async move {
                    let pool = this.pool.clone();
                    let copy_id = vid.clone();
                    let copy =
                        blocking(move || pool.create_volume_from(&copy_id, &src.path, bytes));
                    let made = this
                        .while_fresh(WorkOn::Volume, &vid, "creating", copy)
                        .await;
                    if let Err(e) = this.settle_creation(&vid, made.map(|_| ())).await {
                        tracing::error!(volume = %vid, error = %e, "recording a volume copy");
                    }
                });
            }
        }
        self.catalog
            .get_volume(&id, None)
            .await
            .map_err(Error::from)
    }

    /// `creating` → `available` if the file was made, else `error`.
    async fn settle_creation(&self, id: &str, made: Result<(), PoolError>) -> Result<(), Error> {
        let status = match &made {
            Ok(()) => "available",
            Err(e) => {
                tracing::error!(volume = %id, error = %e, "creating a volume's image");
                "error"
            }
        };
        let moved = self
            .catalog
            .set_volume_status(id, &["creating"], status, Previous::Keep)
            .await?;
        if !moved && made.is_ok() {
            // Force-deleted while its file was being made: the file is an orphan now.
            let path = self.pool.volume_path(id);
            if let Err(e) = blocking(move || pool::remove(&path)).await {
                tracing::warn!(volume = %id, error = %e, "removing an orphaned image");
            }
        }
        Ok(())
    }

    /// The snapshot or volume a new volume copies, checked as Cinder checks it.
    async fn creation_source(
        &self,
        ctx: &Context,
        opts: &CreateVolumeOptions,
    ) -> Result<Option<Source>, Error> {
        if let Some(sid) = &opts.snapshot_id {
            let s = self
                .catalog
                .get_snapshot(sid, scope(ctx))
                .await
                .map_err(|e| match e {
                    CatalogError::NotFound => snapshot_not_found(sid),
                    other => other.into(),
                })?;
            if s.status != "available" {
                return Err(Error::Invalid(
                    "Invalid snapshot: Originating snapshot status must be one of \
                     'available' values"
                        .into(),
                ));
            }
            let zone = self
                .catalog
                .get_volume(&s.volume_id, None)
                .await
                .ok()
                .and_then(|v| v.availability_zone)
                .unwrap_or_else(|| DEFAULT_AZ.into());
            let path = s
                .provider_location
                .clone()
                .map_or_else(|| self.pool.snapshot_path(&s.id), PathBuf::from);
            return Ok(Some(Source {
                path,
                size: s.size,
                zone,
                kind: SourceKind::Snapshot,
            }));
        }
        if let Some(vid) = &opts.source_volid {
            let v = self.lookup(ctx, vid).await?;
            if !matches!(v.status.as_str(), "available" | "in-use") {
                return Err(invalid_volume(
                    "Originating source volume status must be one of 'available, in-use' \
                     values",
                ));
            }
            return Ok(Some(Source {
                path: self.volume_file(&v),
                size: v.size,
                zone: v.availability_zone.unwrap_or_else(|| DEFAULT_AZ.into()),
                kind: SourceKind::Volume,
            }));
        }
        Ok(None)
    }

    /// Deletes a volume (`DELETE /volumes/{id}`), Cinder's rules: status one of
    /// `available`, `error`, `error_restoring`, `error_extending`, `error_managing` (any with
    /// `force`, admins only, from 3.23), not attached, no snapshots unless `cascade`
    /// (then `available`/`error` snapshots go with it). The image is removed, unless
    /// the volume was managed: an admin's file is never deleted.
    pub async fn delete(
        &self,
        ctx: &Context,
        id: &str,
        cascade: bool,
        force: bool,
    ) -> Result<(), Error> {
        let v = self.lookup(ctx, id).await?;
        if !ctx.can_write() {
            return Err(Error::Forbidden("volume:delete"));
        }
        if force && !ctx.is_admin() {
            return Err(Error::Forbidden("volume:force_delete"));
        }
        let any: Vec<&str> = VOLUME_STATUSES
            .iter()
            .copied()
            .filter(|s| *s != "deleting")
            .collect();
        let expected: &[&str] = if force { &any } else { DELETABLE };
        if self
            .catalog
            .begin_volume_delete(id, expected, cascade)
            .await?
            == DeleteCheck::Refused
        {
            return Err(invalid_volume(&format!(
                "Volume {} must not be migrating, attached, belong to a group, have \
                 snapshots, awaiting a transfer, or be disassociated from snapshots after \
                 volume transfer.",
                status_clause((!force).then_some(DELETABLE))
            )));
        }
        self.while_fresh(
            WorkOn::Volume,
            id,
            "deleting",
            self.remove_volume(&v, cascade),
        )
        .await
    }

    /// The files and rows of a volume in `deleting` (and of its snapshots, `cascade`).
    async fn remove_volume(&self, v: &VolumeRecord, cascade: bool) -> Result<(), Error> {
        let id = v.id.as_str();
        if cascade {
            let snaps = self
                .catalog
                .list_snapshots(&SnapshotQuery {
                    volume_id: Some(id.to_owned()),
                    limit: u64::MAX >> 1,
                    ..SnapshotQuery::default()
                })
                .await?;
            for s in snaps {
                self.remove_snapshot_files(&s).await?;
                self.catalog.destroy_snapshot(&s.id).await?;
            }
        }
        if !v.managed {
            let path = self.volume_file(v);
            if let Err(e) = blocking(move || pool::remove(&path)).await {
                self.catalog
                    .set_volume_status(id, &["deleting"], "error_deleting", Previous::Keep)
                    .await?;
                return Err(Error::Internal(format!("removing volume {id}: {e}")));
            }
        }
        self.catalog.destroy_volume(id).await?;
        Ok(())
    }

    // ---- for the backup worker -------------------------------------------------

    /// Starts a backup of a volume: it must be `available`, or `in-use` with `force`
    /// (Cinder's messages); it becomes `backing-up`, remembering its status. Returns
    /// the volume as it was (its file: [`Self::volume_file`]).
    pub async fn begin_backup(
        &self,
        ctx: &Context,
        volume_id: &str,
        force: bool,
    ) -> Result<VolumeRecord, Error> {
        let v = self.get(ctx, volume_id).await?;
        let refused = || {
            invalid_volume(&format!(
                "Volume to be backed up must be available or in-use, but the current \
                 status is \"{}\".",
                v.status
            ))
        };
        match v.status.as_str() {
            "available" => {}
            "in-use" if force => {}
            "in-use" => {
                return Err(invalid_volume(
                    "Backing up an in-use volume must use the force flag.",
                ));
            }
            _ => return Err(refused()),
        }
        let moved = self
            .catalog
            .set_volume_status(
                volume_id,
                &[v.status.as_str()],
                "backing-up",
                Previous::Save,
            )
            .await?;
        if !moved {
            let now = self.get(ctx, volume_id).await?;
            return Err(invalid_volume(&format!(
                "Volume to be backed up must be available or in-use, but the current \
                 status is \"{}\".",
                now.status
            )));
        }
        Ok(v)
    }

    /// Checks a restore's target volume as Cinder does: it must be `available` and at
    /// least `backup_size` GiB. The move to `restoring-backup` happens with the rest
    /// of the restore's start ([`Catalog::start_restore`]).
    pub async fn check_restore_target(
        &self,
        ctx: &Context,
        volume_id: &str,
        backup_size: i64,
    ) -> Result<VolumeRecord, Error> {
        let v = self.get(ctx, volume_id).await?;
        if v.status != "available" {
            return Err(restore_target_busy());
        }
        if backup_size > v.size {
            return Err(invalid_volume(&format!(
                "volume size {} is too small to restore backup of size {backup_size}.",
                v.size
            )));
        }
        Ok(v)
    }

    /// Makes the image of a new volume (`size` GiB, in the caller's project) for a
    /// restore and returns its row, to be inserted `restoring-backup` with the rest of
    /// the restore's start. Cinder's name when none is given:
    /// `restore_backup_<backup id>`. If the start does not happen, the caller removes
    /// the image ([`Self::discard_image`]).
    pub async fn new_restore_volume(
        &self,
        ctx: &Context,
        size: i64,
        name: Option<String>,
        backup_id: &str,
    ) -> Result<NewVolume, Error> {
        let id = uuid::Uuid::new_v4().to_string();
        let pool = self.pool.clone();
        let vid = id.clone();
        let path = blocking(move || pool.create_volume(&vid, size_bytes(size)))
            .await
            .map_err(|e| {
                tracing::error!(volume = %id, error = %e, "creating a volume's image");
                invalid_volume(&format!(
                    "Error while creating volume {id} for restoring backup {backup_id}."
                ))
            })?;
        Ok(NewVolume {
            id,
            project_id: ctx.project_id.clone(),
            user_id: Some(ctx.user_id.clone()),
            display_name: Some(name.unwrap_or_else(|| format!("restore_backup_{backup_id}"))),
            display_description: Some("auto-created_from_restore_from_backup".into()),
            size,
            status: "restoring-backup".into(),
            availability_zone: Some(DEFAULT_AZ.into()),
            volume_type: Some(DEFAULT_TYPE.into()),
            provider_location: Some(path.to_string_lossy().into_owned()),
            host: Some(POOL_HOST.into()),
            ..NewVolume::default()
        })
    }

    /// Removes the pool image of a volume that was never recorded.
    pub async fn discard_image(&self, volume_id: &str) {
        let path = self.pool.volume_path(volume_id);
        if let Err(e) = blocking(move || pool::remove(&path)).await {
            tracing::warn!(volume = %volume_id, error = %e, "removing an unused image");
        }
    }

    /// Ends a restore: `restoring-backup` → `available` if it succeeded, else
    /// `error_restoring`. Idempotent.
    pub async fn end_restore(&self, volume_id: &str, ok: bool) -> Result<(), Error> {
        let status = if ok { "available" } else { "error_restoring" };
        self.catalog
            .set_volume_status(volume_id, &["restoring-backup"], status, Previous::Clear)
            .await?;
        Ok(())
    }
}

/// The size in bytes of a volume of `gib` GiB.
pub(crate) fn size_bytes(gib: i64) -> u64 {
    u64::try_from(gib).unwrap_or(0).saturating_mul(GIB)
}

/// Whether the caller asked for, and may have, every project.
pub(crate) fn all_tenants(ctx: &Context, params: &[(String, String)]) -> Result<bool, Error> {
    if !ctx.is_admin() {
        return Ok(false);
    }
    match last(params, "all_tenants") {
        None => Ok(false),
        Some(v) => parse_bool(v)
            .ok_or_else(|| Error::Invalid(format!("all_tenants must be a boolean, got '{v}'."))),
    }
}

/// Where a new volume's bytes come from.
struct Source {
    path: PathBuf,
    size: i64,
    zone: String,
    kind: SourceKind,
}

enum SourceKind {
    Snapshot,
    Volume,
}

impl Source {
    fn too_small(&self, size: i64) -> String {
        match self.kind {
            SourceKind::Snapshot => format!(
                "Volume size '{size}'GB cannot be smaller than the snapshot size {}GB. They \
                 must be >= original snapshot size.",
                self.size
            ),
            SourceKind::Volume => format!(
                "Volume size '{size}'GB cannot be smaller than original volume size  {}GB. \
                 They must be >= original volume size.",
                self.size
            ),
        }
    }
}
