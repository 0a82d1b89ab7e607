//! `POST /volumes/{id}/action`: `os-extend`, `os-attach`, `os-detach` and the admin's
//! `os-reset_status`, each with Cinder's schema, status rules and messages.

use serde_json::{Map, Value};
use vbs_catalog::{NewAttachment, Previous, WorkOn};
use vbs_engine::pool;

use crate::schema::{self, fail, py_repr};
use crate::volumes::{VOLUME_STATUSES, blocking, invalid_volume, size_bytes};
use crate::{Context, Error, Microversion, VolumeService};

/// Cinder's `VolumeMigrationStatus.ALL`.
const MIGRATION: &[&str] = &[
    "migrating",
    "error",
    "success",
    "completing",
    "none",
    "starting",
];

/// The single `{"<action>": …}` member of an action body.
fn action(body: &Value) -> Result<(&str, &Value), Error> {
    match body.as_object() {
        Some(o) if o.len() == 1 => o
            .iter()
            .next()
            .map(|(k, v)| (k.as_str(), v))
            .ok_or_else(|| Error::Invalid("Malformed request body".into())),
        _ => Err(Error::Invalid("Malformed request body".into())),
    }
}

/// The action's own arguments object.
fn action_args<'a>(name: &str, value: &'a Value) -> Result<&'a Map<String, Value>, Error> {
    match value {
        Value::Object(o) => Ok(o),
        other => Err(fail(
            Some(name),
            other,
            &schema::type_message(other, &["object"]),
        )),
    }
}

impl VolumeService {
    /// Runs one volume action. Unknown actions are refused as Cinder refuses them.
    pub async fn act(
        &self,
        ctx: &Context,
        id: &str,
        version: Microversion,
        body: &Value,
    ) -> Result<(), Error> {
        let (name, value) = action(body)?;
        match name {
            "os-extend" => self.extend(ctx, id, version, value).await,
            "os-attach" => self.attach(ctx, id, value).await,
            "os-detach" => self.detach(ctx, id, value).await,
            "os-reset_status" => self.reset_status(ctx, id, value).await,
            other => Err(Error::Invalid(format!(
                "There is no such action: {other}. Verify the request body and Content-Type \
                 header and try again."
            ))),
        }
    }

    /// `os-extend`: `available` (or `in-use` from 3.42) volumes grow to `new_size`
    /// GiB; the image grows in place (a hole) before the new size is recorded.
    async fn extend(
        &self,
        ctx: &Context,
        id: &str,
        version: Microversion,
        value: &Value,
    ) -> Result<(), Error> {
        let args = action_args("os-extend", value)?;
        schema::no_extra(args, Some("os-extend"), &["new_size"])?;
        let new_size = schema::volume_size(args, "new_size", false)?.ok_or_else(|| {
            fail(
                Some("os-extend"),
                value,
                "'new_size' is a required property",
            )
        })?;
        let v = self.lookup(ctx, id).await?;
        if !ctx.can_write() {
            return Err(Error::Forbidden("volume:extend"));
        }
        if new_size <= v.size {
            return Err(Error::Invalid(format!(
                "Invalid input received: New size for extend must be greater than current \
                 size. (current: {}, extended: {new_size}).",
                v.size
            )));
        }
        let expected =
            if version.at_least(Microversion::VOLUME_EXTEND_INUSE) && v.status == "in-use" {
                "in-use"
            } else {
                "available"
            };
        let path = self.volume_file(&v);
        if v.managed && pool::is_block_device(&path) {
            return Err(invalid_volume(&format!(
                "Volume {id} is a block device; only image files can be extended."
            )));
        }
        if !self
            .catalog
            .set_volume_status(id, &[expected], "extending", Previous::Save)
            .await?
        {
            return Err(invalid_volume(&format!(
                "Volume {id} status must be '{{'status': '{expected}'}}' to extend, currently \
                 {}.",
                v.status
            )));
        }
        let bytes = size_bytes(new_size);
        let extend = blocking(move || pool::extend(&path, bytes));
        match self
            .while_fresh(WorkOn::Volume, id, "extending", extend)
            .await
        {
            Ok(()) => {
                self.catalog
                    .finish_volume_resize(id, "extending", new_size)
                    .await?;
            }
            Err(e) => {
                // As in Cinder, the request was accepted; the failure shows as a status.
                tracing::error!(volume = %id, error = %e, "extending a volume's image");
                self.catalog
                    .set_volume_status(id, &["extending"], "error_extending", Previous::Keep)
                    .await?;
            }
        }
        Ok(())
    }

    /// `os-attach`: records where the volume is attached; `in-use`/`attached`.
    async fn attach(&self, ctx: &Context, id: &str, value: &Value) -> Result<(), Error> {
        let args = action_args("os-attach", value)?;
        schema::no_extra(
            args,
            Some("os-attach"),
            &["instance_uuid", "mountpoint", "host_name", "mode"],
        )?;
        let instance = schema::uuid(args, "instance_uuid")?;
        let mountpoint = schema::string(args, "mountpoint", false, 1, 255)?.ok_or_else(|| {
            fail(
                Some("os-attach"),
                value,
                "'mountpoint' is a required property",
            )
        })?;
        let host = schema::string(args, "host_name", false, 0, 255)?;
        let mode = match args.get("mode") {
            None => "rw",
            Some(Value::String(m)) if m == "rw" || m == "ro" => m.as_str(),
            Some(other) => {
                return Err(fail(
                    Some("mode"),
                    other,
                    &format!("{} is not one of ['rw', 'ro']", py_repr(other)),
                ));
            }
        };
        if instance.is_none() && host.is_none() {
            return Err(fail(
                Some("os-attach"),
                value,
                &format!(
                    "{} is not valid under any of the given schemas",
                    py_repr(value)
                ),
            ));
        }
        let v = self.lookup(ctx, id).await?;
        if !ctx.can_write() {
            return Err(Error::Forbidden("volume_extension:volume_actions:attach"));
        }
        let attachment = NewAttachment {
            id: uuid::Uuid::new_v4().to_string(),
            instance_uuid: instance.map(str::to_owned),
            attached_host: host.map(str::to_owned),
            mountpoint: mountpoint.to_owned(),
            attach_mode: mode.to_owned(),
        };
        let expected = ["available", "attaching", "reserved"];
        if self
            .catalog
            .attach_volume(id, &expected, &attachment)
            .await?
        {
            return Ok(());
        }
        let status = self
            .lookup(ctx, id)
            .await
            .map_or(v.status, |now| now.status);
        Err(if status == "in-use" {
            invalid_volume("volume is already attached and multiple attachments are not enabled")
        } else {
            invalid_volume(&format!(
                "Volume status must be available to attach, but the status is {status}."
            ))
        })
    }

    /// `os-detach`: ends the attachment (the one named, or every one); the volume
    /// becomes `available`/`detached`.
    async fn detach(&self, ctx: &Context, id: &str, value: &Value) -> Result<(), Error> {
        let attachment_id = match value {
            Value::Null => None,
            Value::Object(args) => {
                schema::no_extra(args, Some("os-detach"), &["attachment_id"])?;
                match args.get("attachment_id") {
                    None | Some(Value::Null) => None,
                    Some(_) => schema::uuid(args, "attachment_id").map_err(|_| {
                        let v = &args["attachment_id"];
                        fail(
                            Some("attachment_id"),
                            v,
                            &format!("{} is not valid under any of the given schemas", py_repr(v)),
                        )
                    })?,
                }
            }
            other => {
                return Err(fail(
                    Some("os-detach"),
                    other,
                    &schema::type_message(other, &["object", "null"]),
                ));
            }
        };
        self.lookup(ctx, id).await?;
        if !ctx.can_write() {
            return Err(Error::Forbidden("volume_extension:volume_actions:detach"));
        }
        match self
            .catalog
            .detach_volume(id, &["in-use", "detaching"], attachment_id)
            .await?
        {
            None => Err(invalid_volume(
                "Unable to detach volume. Volume status must be 'in-use' and attach_status \
                 must be 'attached' to detach.",
            )),
            Some(0) if attachment_id.is_some() => Err(Error::NotFound(format!(
                "Volume attachment could not be found with filter: attachment_id = {}.",
                attachment_id.unwrap_or_default()
            ))),
            Some(_) => Ok(()),
        }
    }

    /// `os-reset_status` (admins): sets status, attach status and migration status
    /// without the usual rules, except Cinder's two refusals.
    async fn reset_status(&self, ctx: &Context, id: &str, value: &Value) -> Result<(), Error> {
        let args = action_args("os-reset_status", value)?;
        schema::no_extra(
            args,
            Some("os-reset_status"),
            &["status", "attach_status", "migration_status"],
        )?;
        let status = schema::string(args, "status", true, 0, usize::MAX)?
            .filter(|s| !s.is_empty())
            .map(str::to_lowercase);
        let attach = schema::string(args, "attach_status", true, 0, usize::MAX)?
            .filter(|s| !s.is_empty())
            .map(str::to_lowercase);
        let migration = schema::string(args, "migration_status", true, 0, usize::MAX)?
            .filter(|s| !s.is_empty())
            .map(str::to_lowercase);
        if let Some(s) = &status
            && !VOLUME_STATUSES.contains(&s.as_str())
        {
            return Err(Error::Invalid(format!(
                "Volume status: {s} is invalid, valid statuses are: ({}).",
                VOLUME_STATUSES
                    .iter()
                    .map(|s| format!("'{s}'"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        if let Some(a) = &attach
            && a != "attached"
            && a != "detached"
        {
            return Err(Error::Invalid(format!(
                "Volume attach status: {a} is invalid, valid statuses are: ['attached', \
                 'detached']."
            )));
        }
        if let Some(m) = &migration
            && !MIGRATION.contains(&m.as_str())
        {
            return Err(Error::Invalid(format!(
                "Volume migration status: {m} is invalid, valid statuses are: ('migrating', \
                 'error', 'success', 'completing', 'none', 'starting')."
            )));
        }
        if status.is_none() && attach.is_none() && migration.is_none() {
            return Err(Error::Invalid(
                "Must specify 'status', 'attach_status' or 'migration_status' for update.".into(),
            ));
        }
        let v = self.lookup(ctx, id).await?;
        if !ctx.is_admin() {
            return Err(Error::Forbidden(
                "volume_extension:volume_admin_actions:reset_status",
            ));
        }
        // Cinder's tuple ('deleting', 'error_deleting' 'detaching') concatenates the
        // last two, so in practice only `deleting` is refused; so here too.
        if status.as_deref() == Some("deleting") {
            return Err(Error::Invalid("Cannot reset-state to deleting".into()));
        }
        if status.as_deref() == Some("in-use") && v.attachments.is_empty() {
            return Err(Error::Invalid(
                "Cannot reset-state to in-use because volume does not have any attachments.".into(),
            ));
        }
        let migration = migration.as_deref().map(|m| (m != "none").then_some(m));
        if !self
            .catalog
            .reset_volume(id, status.as_deref(), attach.as_deref(), migration)
            .await?
        {
            return Err(crate::volumes::volume_not_found(id));
        }
        Ok(())
    }
}
