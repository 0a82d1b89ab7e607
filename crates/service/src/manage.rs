//! `POST /manageable_volumes` (admins): bring an existing raw image file or block device
//! under management in place, without copying. Its size is read from the file (its
//! length) or the device (by seeking to its end) and rounded up to whole GiB; the path
//! is kept in `provider_location`. Deleting such a volume never deletes the file. Only
//! files and devices under the configured `manageable_roots` may be adopted, after
//! their path is resolved.

use std::path::{Path, PathBuf};

use serde_json::Value;
use vbs_catalog::{CatalogError, NewVolume, VolumeRecord};
use vbs_engine::pool::{self, PoolError};

use crate::schema::{self, py_repr};
use crate::volumes::{DEFAULT_AZ, DEFAULT_TYPE, POOL_HOST, blocking};
use crate::{Context, Error, Microversion, VolumeService};

/// A manage request, validated.
#[derive(Debug, Clone)]
pub struct ManageVolumeOptions {
    /// The `ref` as given, for messages.
    pub reference: Value,
    /// Its `source-name`, if it had one.
    pub source_name: Option<String>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub host: Option<String>,
    pub availability_zone: Option<String>,
    pub volume_type: Option<String>,
    pub bootable: bool,
    pub metadata: std::collections::BTreeMap<String, String>,
}

impl ManageVolumeOptions {
    /// Checks the body against Cinder's `volume_manage_create` schema (`cluster` from
    /// 3.16).
    pub fn from_body(body: &Value, version: Microversion) -> Result<Self, Error> {
        let top = schema::root(body)?;
        schema::no_extra(top, None, &["volume"])?;
        let v = schema::object(top, None, "volume", true, false)?
            .ok_or_else(|| Error::Invalid("'volume' is a required property".into()))?;
        let mut allowed = vec![
            "description",
            "availability_zone",
            "bootable",
            "volume_type",
            "name",
            "host",
            "ref",
            "metadata",
        ];
        if version.at_least(Microversion::new(3, 16)) {
            allowed.push("cluster");
        }
        schema::no_extra(v, Some("volume"), &allowed)?;
        let description = schema::description(v, "description")?;
        let availability_zone = schema::string(v, "availability_zone", true, 0, 255)?;
        let bootable = schema::boolean(v, "bootable", false)?.unwrap_or(false);
        let volume_type = schema::string(v, "volume_type", true, 0, 255)?;
        let name = schema::string(v, "name", true, 0, 255)?;
        let host = schema::string(v, "host", true, 1, 255)?;
        if let Some(h) = host
            && !h
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-._#@:/+".contains(c))
        {
            let hv = Value::String(h.to_owned());
            return Err(schema::fail(
                Some("host"),
                &hv,
                &format!("{} does not match '^[a-zA-Z0-9-._#@:/+]*$'", py_repr(&hv)),
            ));
        }
        schema::string(v, "cluster", true, 0, 255)?;
        let metadata = schema::metadata(v, "metadata", true)?;
        let reference = match v.get("ref") {
            None => {
                return Err(schema::fail(
                    Some("volume"),
                    &Value::Object(v.clone()),
                    "'ref' is a required property",
                ));
            }
            Some(r @ (Value::Object(_) | Value::String(_))) => r.clone(),
            Some(other) => {
                return Err(schema::fail(
                    Some("ref"),
                    other,
                    &schema::type_message(other, &["object", "string"]),
                ));
            }
        };
        let source_name = reference
            .get("source-name")
            .and_then(Value::as_str)
            .map(str::to_owned);
        Ok(Self {
            reference,
            source_name,
            name: name.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty()),
            description: description
                .map(|d| d.trim().to_owned())
                .filter(|d| !d.is_empty()),
            host: host.map(str::to_owned),
            availability_zone: availability_zone
                .filter(|a| !a.is_empty())
                .map(str::to_owned),
            volume_type: volume_type.filter(|t| !t.is_empty()).map(str::to_owned),
            bootable,
            metadata,
        })
    }
}

impl VolumeService {
    /// Manages an existing file or block device as a new `available` volume of the
    /// caller's project. A bad reference is Cinder's `ManageExistingInvalidReference`.
    pub async fn manage(
        &self,
        ctx: &Context,
        opts: ManageVolumeOptions,
    ) -> Result<VolumeRecord, Error> {
        if !ctx.is_admin() {
            return Err(Error::Forbidden("volume_extension:volume_manage"));
        }
        let bad_ref = |reason: &str| {
            Error::Invalid(format!(
                "Manage existing volume failed due to invalid backend reference {}: {reason}",
                py_repr(&opts.reference)
            ))
        };
        let Some(name) = opts.source_name.clone() else {
            return Err(bad_ref(
                "The existing volume reference must contain \"source-name\".",
            ));
        };
        let az = opts
            .availability_zone
            .clone()
            .unwrap_or_else(|| DEFAULT_AZ.into());
        if az != DEFAULT_AZ {
            return Err(Error::Invalid(format!(
                "Availability zone '{az}' is invalid."
            )));
        }
        let probed = blocking(move || {
            let path = PathBuf::from(&name);
            let bytes = pool::probe_size(&path)?;
            let canonical = std::fs::canonicalize(&path).map_err(|source| PoolError::Io {
                what: "resolving",
                path: path.clone(),
                source,
            })?;
            Ok((canonical, bytes))
        })
        .await;
        let (path, bytes) = match probed {
            Ok(p) => p,
            Err(PoolError::NotFound(_)) => return Err(bad_ref("Volume not found.")),
            Err(PoolError::NotAbsolute(_)) => {
                return Err(bad_ref("The source-name must be an absolute path."));
            }
            Err(PoolError::Unsupported(_)) => {
                return Err(bad_ref("Not a regular file or block device."));
            }
            Err(e) => {
                tracing::warn!(error = %e, "probing a volume to manage");
                return Err(bad_ref("Failed to open the volume."));
            }
        };
        // Only under the configured roots, the path resolved (symlinks, `..`): an admin
        // token must not adopt /etc/passwd and let a restore overwrite it.
        if !self
            .manageable_roots
            .iter()
            .any(|root| path.starts_with(root))
        {
            return Err(bad_ref(
                "The source-name is not under a directory this service may manage \
                 (manageable_roots).",
            ));
        }
        if self.pool.owns(&path) {
            return Err(bad_ref("Volume already managed."));
        }
        if bytes == 0 {
            return Err(bad_ref("The volume is empty (0 bytes)."));
        }
        let size = i64::try_from(pool::round_up_gib(bytes)).unwrap_or(i64::MAX);
        let id = uuid::Uuid::new_v4().to_string();
        let row = NewVolume {
            id: id.clone(),
            project_id: ctx.project_id.clone(),
            user_id: Some(ctx.user_id.clone()),
            display_name: opts.name,
            display_description: opts.description,
            size,
            // Nothing to make: the bytes are there, so the row is final at once.
            status: "available".into(),
            availability_zone: Some(az),
            volume_type: Some(opts.volume_type.unwrap_or_else(|| DEFAULT_TYPE.into())),
            bootable: opts.bootable,
            provider_location: Some(path_text(&path)),
            managed: true,
            host: Some(opts.host.unwrap_or_else(|| POOL_HOST.into())),
            snapshot_id: None,
            source_volid: None,
            metadata: opts.metadata,
        };
        match self.catalog.create_volume(&row).await {
            Ok(()) => {}
            Err(CatalogError::AlreadyExists) => return Err(bad_ref("Volume already managed.")),
            Err(e) => return Err(e.into()),
        }
        Ok(self.catalog.get_volume(&id, None).await?)
    }
}

fn path_text(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}
