//! Snapshots: a point-in-time copy of a volume's image (a reflink clone where the
//! filesystem allows it, else a sparse copy), made in the background while the
//! snapshot shows `creating`; then `available` with progress `100%`, or `error`.

use serde_json::Value;
use vbs_catalog::{CatalogError, NewSnapshot, SnapshotQuery, SnapshotRecord, WorkOn};
use vbs_engine::pool;

use crate::backups::{last, paging};
use crate::schema;
use crate::volumes::{Listed, all_tenants, blocking, invalid_volume, scope, snapshot_not_found};
use crate::{Context, Error, Microversion, VolumeService};

/// Cinder's refusal of `force: false` from 3.66.
const SNAPSHOT_IN_USE_FLAG_MSG: &str = "Since microversion 3.66 the 'force' flag is invalid \
     for this request.  For backward compatability, however, when the 'force' flag is \
     passed with a value evaluating to True, it is silently ignored.";

/// A snapshot create request, validated (`POST /snapshots`).
#[derive(Debug, Clone)]
pub struct CreateSnapshotOptions {
    /// `None` when the body said `null` (Cinder then looks up volume `None`).
    pub volume_id: Option<String>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub force: Option<bool>,
    pub metadata: std::collections::BTreeMap<String, String>,
}

impl CreateSnapshotOptions {
    /// Checks the body against Cinder's snapshot `create` schema.
    pub fn from_body(body: &Value) -> Result<Self, Error> {
        let top = schema::root(body)?;
        schema::no_extra(top, None, &["snapshot"])?;
        let s = schema::object(top, None, "snapshot", true, false)?
            .ok_or_else(|| Error::Invalid("'snapshot' is a required property".into()))?;
        schema::no_extra(
            s,
            Some("snapshot"),
            &[
                "name",
                "display_name",
                "description",
                "volume_id",
                "force",
                "metadata",
            ],
        )?;
        let name = schema::string(s, "name", true, 0, 255)?;
        let display_name = schema::string(s, "display_name", true, 0, 255)?;
        let description = schema::description(s, "description")?;
        if !s.contains_key("volume_id") {
            return Err(schema::fail(
                Some("snapshot"),
                &Value::Object(s.clone()),
                "'volume_id' is a required property",
            ));
        }
        let volume_id = schema::optional_uuid(s, "volume_id")?;
        let force = schema::boolean(s, "force", false)?;
        let metadata = schema::metadata(s, "metadata", true)?;
        Ok(Self {
            volume_id: volume_id.map(str::to_owned),
            name: name.or(display_name).map(|n| n.trim().to_owned()),
            description: description.map(|d| d.trim().to_owned()),
            force,
            metadata,
        })
    }
}

impl VolumeService {
    /// One snapshot (`GET /snapshots/{id}`).
    pub async fn get_snapshot(&self, ctx: &Context, id: &str) -> Result<SnapshotRecord, Error> {
        let s = self.lookup_snapshot(ctx, id).await?;
        if !ctx.can_read() {
            return Err(Error::Forbidden("volume:get_snapshot"));
        }
        Ok(s)
    }

    async fn lookup_snapshot(&self, ctx: &Context, id: &str) -> Result<SnapshotRecord, Error> {
        self.catalog
            .get_snapshot(id, scope(ctx))
            .await
            .map_err(|e| match e {
                CatalogError::NotFound => snapshot_not_found(id),
                other => other.into(),
            })
    }

    /// `PUT /snapshots/{id}`: a new name and/or description (`name`, `description`, or
    /// their v1 spellings `display_name`, `display_description`; at least one), as
    /// Cinder's snapshot update schema has it. Returns the updated snapshot.
    pub async fn update_snapshot(
        &self,
        ctx: &Context,
        id: &str,
        body: &Value,
    ) -> Result<SnapshotRecord, Error> {
        const KEYS: [&str; 4] = ["name", "description", "display_name", "display_description"];
        let top = schema::root(body)?;
        schema::no_extra(top, None, &["snapshot"])?;
        let Some(u) = schema::object(top, None, "snapshot", true, false)? else {
            return Err(schema::fail(
                None,
                body,
                "'snapshot' is a required property",
            ));
        };
        schema::no_extra(u, Some("snapshot"), &KEYS)?;
        if !KEYS.iter().any(|k| u.contains_key(*k)) {
            let v = Value::Object(u.clone());
            return Err(schema::fail(
                Some("snapshot"),
                &v,
                &format!(
                    "{} is not valid under any of the given schemas",
                    schema::py_repr(&v)
                ),
            ));
        }
        // `name` and `description` are stripped and win over their v1 spellings.
        let mut name = None;
        for key in ["display_name", "name"] {
            if u.contains_key(key) {
                let v = schema::string(u, key, true, 0, 255)?;
                name = Some(v.map(|v| if key == "name" { v.trim() } else { v }.to_owned()));
            }
        }
        let mut description = None;
        for key in ["display_description", "description"] {
            if u.contains_key(key) {
                let v = schema::description(u, key)?;
                description = Some(v.map(|v| {
                    if key == "description" {
                        v.trim().to_owned()
                    } else {
                        v
                    }
                }));
            }
        }
        self.lookup_snapshot(ctx, id).await?;
        if !ctx.can_write() {
            return Err(Error::Forbidden("volume:update_snapshot"));
        }
        self.catalog
            .update_snapshot(
                id,
                name.as_ref().map(Option::as_deref),
                description.as_ref().map(Option::as_deref),
            )
            .await
            .map_err(|e| match e {
                CatalogError::NotFound => snapshot_not_found(id),
                other => other.into(),
            })?;
        self.lookup_snapshot(ctx, id).await
    }

    /// Lists snapshots (`GET /snapshots[/detail]`): `name`, `status` and `volume_id`
    /// filters, `limit`/`offset`/`marker`, `all_tenants` for admins.
    pub async fn list_snapshots(
        &self,
        ctx: &Context,
        params: &[(String, String)],
    ) -> Result<Listed<SnapshotRecord>, Error> {
        if !ctx.can_read() {
            return Err(Error::Forbidden("volume:get_all_snapshots"));
        }
        let paging = paging(params)?;
        let all = all_tenants(ctx, params)?;
        let q = SnapshotQuery {
            project_id: (!all).then(|| ctx.project_id.clone()),
            volume_id: last(params, "volume_id").map(str::to_owned),
            name: last(params, "name").map(str::to_owned),
            status: last(params, "status").map(str::to_owned),
            marker: paging.marker.clone(),
            offset: paging.offset,
            limit: paging.limit,
        };
        let items = self.catalog.list_snapshots(&q).await.map_err(|e| match e {
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

    /// Creates a snapshot (`POST /snapshots`): the volume must be `available`, or
    /// `in-use` with `force` (or from 3.66 without it). Returns the `creating` record;
    /// the copy runs in the background.
    pub async fn create_snapshot(
        &self,
        ctx: &Context,
        version: Microversion,
        opts: CreateSnapshotOptions,
    ) -> Result<SnapshotRecord, Error> {
        let volume_id = opts.volume_id.clone().unwrap_or_else(|| "None".into());
        let in_use_ok = version.at_least(Microversion::SNAPSHOT_IN_USE);
        if in_use_ok && opts.force == Some(false) {
            return Err(Error::Invalid(SNAPSHOT_IN_USE_FLAG_MSG.into()));
        }
        let v = self.lookup(ctx, &volume_id).await?;
        if !ctx.can_write() {
            return Err(Error::Forbidden("volume:create_snapshot"));
        }
        match v.status.as_str() {
            "maintenance" => {
                return Err(invalid_volume(
                    "The snapshot cannot be created when the volume is in maintenance mode.",
                ));
            }
            "error" => {
                return Err(invalid_volume(
                    "The snapshot cannot be created when the volume is in error status.",
                ));
            }
            _ => {}
        }
        let valid: &[&str] = if opts.force == Some(true) || in_use_ok {
            &["available", "in-use"]
        } else {
            &["available"]
        };
        let refused = |status: &str| {
            invalid_volume(&format!(
                "Volume {volume_id} status must be {}, but current status is: {status}.",
                valid.join(", ")
            ))
        };
        if !valid.contains(&v.status.as_str()) {
            return Err(refused(&v.status));
        }
        let id = uuid::Uuid::new_v4().to_string();
        let row = NewSnapshot {
            id: id.clone(),
            project_id: ctx.project_id.clone(),
            user_id: Some(ctx.user_id.clone()),
            volume_id: volume_id.clone(),
            display_name: opts.name,
            display_description: opts.description,
            size: v.size,
            status: "creating".into(),
            progress: "0%".into(),
            metadata: opts.metadata,
        };
        if !self.catalog.create_snapshot(&row, valid).await? {
            let now = self.lookup(ctx, &volume_id).await?;
            return Err(refused(&now.status));
        }
        let src = self.volume_file(&v);
        let this = self.clone();
        let sid = id.clone();
        tokio::spawn(async move {
            let pool = this.pool.clone();
            let copy_id = sid.clone();
            let copy = blocking(move || pool.create_snapshot(&copy_id, &src));
            let made = this
                .while_fresh(WorkOn::Snapshot, &sid, "creating", copy)
                .await;
            let result = match made {
                Ok((path, method)) => {
                    tracing::debug!(snapshot = %sid, ?method, "snapshot copied");
                    let location = path.to_string_lossy().into_owned();
                    this.catalog
                        .set_snapshot_status(
                            &sid,
                            &["creating"],
                            "available",
                            Some("100%"),
                            Some(&location),
                        )
                        .await
                }
                Err(e) => {
                    tracing::error!(snapshot = %sid, error = %e, "copying a snapshot");
                    this.catalog
                        .set_snapshot_status(&sid, &["creating"], "error", None, None)
                        .await
                }
            };
            if let Err(e) = result {
                tracing::error!(snapshot = %sid, error = %e, "recording a snapshot");
            }
        });
        Ok(self.catalog.get_snapshot(&id, None).await?)
    }

    /// Deletes a snapshot (`DELETE /snapshots/{id}`): only `available` or `error` ones
    /// (Cinder's message); its image is removed, then its record.
    pub async fn delete_snapshot(&self, ctx: &Context, id: &str) -> Result<(), Error> {
        let s = self.lookup_snapshot(ctx, id).await?;
        if !ctx.can_write() {
            return Err(Error::Forbidden("volume:delete_snapshot"));
        }
        if !self
            .catalog
            .set_snapshot_status(id, &["available", "error"], "deleting", None, None)
            .await?
        {
            return Err(Error::Invalid(
                "Invalid snapshot: Snapshot status must be available or error and must not be \
                 part of a group."
                    .into(),
            ));
        }
        let removed = self.remove_snapshot_files(&s);
        if let Err(e) = self
            .while_fresh(WorkOn::Snapshot, id, "deleting", removed)
            .await
        {
            self.catalog
                .set_snapshot_status(id, &["deleting"], "error_deleting", None, None)
                .await?;
            return Err(e);
        }
        self.catalog.destroy_snapshot(id).await?;
        Ok(())
    }

    /// Removes a snapshot's image (its pool path if it never got one recorded).
    pub(crate) async fn remove_snapshot_files(&self, s: &SnapshotRecord) -> Result<(), Error> {
        let path = s
            .provider_location
            .clone()
            .map_or_else(|| self.pool.snapshot_path(&s.id), std::path::PathBuf::from);
        blocking(move || pool::remove(&path))
            .await
            .map_err(|e| Error::Internal(format!("removing snapshot {}: {e}", s.id)))
    }
}
