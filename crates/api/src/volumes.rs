//! `…/volumes`: list, detail, show, create, delete and actions, with Cinder's volume
//! views (`cinder/api/v3/views/volumes.py` plus the tenant, host and migration-status
//! extension attributes on show and detail).

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use vbs_catalog::{AttachmentRecord, VolumeRecord, ts};
use vbs_service::{CreateVolumeOptions, Microversion, parse_bool};

use crate::body::JsonBody;
use crate::call::Call;
use crate::error::ApiError;
use crate::links::Link;
use crate::{AppState, json_response};

/// `GET …/volumes`.
pub async fn list_volumes(State(state): State<AppState>, call: Call) -> Result<Response, ApiError> {
    let list = state.volumes.list(&call.ctx, &call.params).await?;
    let volumes: Vec<_> = list
        .items
        .iter()
        .map(|v| VolumeSummary {
            id: &v.id,
            name: v.display_name.as_deref(),
            links: call.base.resource_links("volumes", &v.id),
        })
        .collect();
    let links = next_links(&call, "volumes", &list.items, list.link_limit);
    Ok(json_response(&VolumesView {
        volumes,
        volumes_links: links,
    }))
}

/// `GET …/volumes/detail`.
pub async fn list_volumes_detail(
    State(state): State<AppState>,
    call: Call,
) -> Result<Response, ApiError> {
    let list = state.volumes.list(&call.ctx, &call.params).await?;
    let volumes: Vec<_> = list
        .items
        .iter()
        .map(|v| VolumeView::new(&call, v, View::Full))
        .collect();
    let links = next_links(&call, "volumes/detail", &list.items, list.link_limit);
    Ok(json_response(&VolumesView {
        volumes,
        volumes_links: links,
    }))
}

/// `GET …/volumes/{volume_id}`.
pub async fn show_volume(State(state): State<AppState>, call: Call) -> Result<Response, ApiError> {
    let v = state
        .volumes
        .get(&call.ctx, call.path_param("volume_id"))
        .await?;
    Ok(json_response(&OneVolume {
        volume: VolumeView::new(&call, &v, View::Full),
    }))
}

/// `POST …/volumes` → 202 with the volume.
pub async fn create_volume(
    State(state): State<AppState>,
    call: Call,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let opts = CreateVolumeOptions::from_body(&body, call.version.version)?;
    let v = state.volumes.create(&call.ctx, opts).await?;
    Ok(accepted(&OneVolume {
        volume: VolumeView::new(&call, &v, View::Detail),
    }))
}

/// `DELETE …/volumes/{volume_id}[?cascade=…&force=…]` → 202.
pub async fn delete_volume(
    State(state): State<AppState>,
    call: Call,
) -> Result<Response, ApiError> {
    let cascade = bool_param(&call, "cascade")?;
    let force = if call
        .version
        .version
        .at_least(Microversion::VOLUME_DELETE_FORCE)
    {
        bool_param(&call, "force")?
    } else {
        false
    };
    state
        .volumes
        .delete(&call.ctx, call.path_param("volume_id"), cascade, force)
        .await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

/// `POST …/volumes/{volume_id}/action` → 202.
pub async fn volume_action(
    State(state): State<AppState>,
    call: Call,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    state
        .volumes
        .act(
            &call.ctx,
            call.path_param("volume_id"),
            call.version.version,
            &body,
        )
        .await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

/// A 202 with a JSON body.
pub(crate) fn accepted<T: Serialize>(body: &T) -> Response {
    let mut resp = json_response(body);
    if resp.status() == StatusCode::OK {
        *resp.status_mut() = StatusCode::ACCEPTED;
    }
    resp
}

/// Cinder's `get_bool_param`: absent is false, anything but a boolean string is a 400.
fn bool_param(call: &Call, key: &str) -> Result<bool, ApiError> {
    match call.params.iter().rev().find(|(k, _)| k == key) {
        None => Ok(false),
        Some((_, v)) => parse_bool(v).ok_or_else(|| {
            ApiError::bad_request(format!("Value '{v}' for '{key}' is not a boolean."))
        }),
    }
}

/// Cinder's rule: a `next` link when the page is not empty and full.
pub(crate) fn next_links<T: HasId>(
    call: &Call,
    path: &str,
    items: &[T],
    link_limit: u64,
) -> Option<Vec<Link>> {
    let last = items.last()?;
    (link_limit <= items.len() as u64)
        .then(|| vec![call.base.next_link(path, &call.params, last.id())])
}

/// A view field some callers or microversions do not get: `Hidden` is left out of the
/// body, `Shown(None)` is a `null`.
#[derive(Serialize)]
#[serde(untagged)]
pub(crate) enum Field<T> {
    Hidden,
    Shown(Option<T>),
}

impl<T> Field<T> {
    pub(crate) fn is_hidden(&self) -> bool {
        matches!(self, Field::Hidden)
    }

    /// `value` when `shown`, else hidden.
    pub(crate) fn when(shown: bool, value: Option<T>) -> Self {
        if shown {
            Field::Shown(value)
        } else {
            Field::Hidden
        }
    }
}

pub(crate) trait HasId {
    fn id(&self) -> &str;
}

impl HasId for VolumeRecord {
    fn id(&self) -> &str {
        &self.id
    }
}

impl HasId for vbs_catalog::SnapshotRecord {
    fn id(&self) -> &str {
        &self.id
    }
}

#[derive(Serialize)]
struct VolumesView<T> {
    volumes: Vec<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    volumes_links: Option<Vec<Link>>,
}

#[derive(Serialize)]
pub(crate) struct OneVolume<'a> {
    pub volume: VolumeView<'a>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct VolumeSummary<'a> {
    id: &'a str,
    name: Option<&'a str>,
    links: [Link; 2],
}

/// Which of Cinder's volume views.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum View {
    /// `legacy_detail`: what manage-existing answers (no microversion fields).
    Legacy,
    /// `detail`: what create answers.
    Detail,
    /// `detail` plus the extension attributes: show and the detail list.
    Full,
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = VolumeAttachment)]
pub(crate) struct AttachmentView<'a> {
    id: &'a str,
    attachment_id: &'a str,
    volume_id: &'a str,
    server_id: Option<&'a str>,
    host_name: Option<&'a str>,
    device: Option<&'a str>,
    attached_at: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Volume)]
pub(crate) struct VolumeView<'a> {
    id: &'a str,
    status: &'a str,
    size: i64,
    availability_zone: Option<&'a str>,
    created_at: String,
    updated_at: Option<String>,
    name: Option<&'a str>,
    description: Option<&'a str>,
    volume_type: Option<&'a str>,
    snapshot_id: Option<&'a str>,
    source_volid: Option<&'a str>,
    metadata: &'a BTreeMap<String, String>,
    links: [Link; 2],
    user_id: Option<&'a str>,
    bootable: &'static str,
    encrypted: bool,
    replication_status: Option<&'a str>,
    consistencygroup_id: Option<&'a str>,
    multiattach: bool,
    attachments: Vec<AttachmentView<'a>>,
    #[serde(skip_serializing_if = "Field::is_hidden")]
    #[schema(value_type = Option<String>)]
    migration_status: Field<&'a str>,
    #[serde(skip_serializing_if = "Field::is_hidden")]
    #[schema(value_type = Option<String>)]
    group_id: Field<&'a str>,
    #[serde(skip_serializing_if = "Field::is_hidden")]
    #[schema(value_type = Option<String>)]
    provider_id: Field<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    shared_targets: Option<bool>,
    #[serde(skip_serializing_if = "Field::is_hidden")]
    #[schema(value_type = Option<String>)]
    service_uuid: Field<&'a str>,
    #[serde(skip_serializing_if = "Field::is_hidden")]
    #[schema(value_type = Option<String>)]
    cluster_name: Field<&'a str>,
    #[serde(skip_serializing_if = "Field::is_hidden")]
    #[schema(value_type = Option<String>)]
    volume_type_id: Field<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    consumes_quota: Option<bool>,
    #[serde(
        rename = "os-vol-tenant-attr:tenant_id",
        skip_serializing_if = "Option::is_none"
    )]
    tenant_id: Option<&'a str>,
    #[serde(
        rename = "os-vol-host-attr:host",
        skip_serializing_if = "Field::is_hidden"
    )]
    #[schema(value_type = Option<String>)]
    host: Field<&'a str>,
    #[serde(
        rename = "os-vol-mig-status-attr:migstat",
        skip_serializing_if = "Field::is_hidden"
    )]
    #[schema(value_type = Option<String>)]
    migstat: Field<&'a str>,
    #[serde(
        rename = "os-vol-mig-status-attr:name_id",
        skip_serializing_if = "Field::is_hidden"
    )]
    #[schema(value_type = Option<String>)]
    name_id: Field<&'a str>,
}

/// Cinder shows its internal managing statuses as the public ones.
fn public_status(s: &str) -> &str {
    match s {
        "managing" => "creating",
        "error_managing" => "error",
        "error_managing_deleting" => "deleting",
        other => other,
    }
}

fn attachment_view(a: &AttachmentRecord, admin: bool) -> AttachmentView<'_> {
    AttachmentView {
        id: &a.volume_id,
        attachment_id: &a.id,
        volume_id: &a.volume_id,
        server_id: a.instance_uuid.as_deref(),
        host_name: if admin {
            a.attached_host.as_deref()
        } else {
            None
        },
        device: a.mountpoint.as_deref(),
        attached_at: a.attach_time.map(ts::format_api),
    }
}

impl<'a> VolumeView<'a> {
    pub(crate) fn new(call: &Call, v: &'a VolumeRecord, view: View) -> Self {
        let admin = call.ctx.is_admin();
        let mv = call.version.version;
        let detail = view != View::Legacy;
        let at = |m: Microversion| detail && mv.at_least(m);
        let full = view == View::Full;
        Self {
            id: &v.id,
            status: public_status(&v.status),
            size: v.size,
            availability_zone: v.availability_zone.as_deref(),
            created_at: ts::format_api(v.created_at),
            updated_at: v.updated_at.map(ts::format_api),
            name: v.display_name.as_deref(),
            description: v.display_description.as_deref(),
            volume_type: v.volume_type.as_deref(),
            snapshot_id: v.snapshot_id.as_deref(),
            source_volid: v.source_volid.as_deref(),
            metadata: &v.metadata,
            links: call.base.resource_links("volumes", &v.id),
            user_id: v.user_id.as_deref(),
            bootable: if v.bootable { "true" } else { "false" },
            encrypted: false,
            replication_status: None,
            consistencygroup_id: None,
            multiattach: false,
            attachments: v
                .attachments
                .iter()
                .filter(|a| a.attach_status == "attached")
                .map(|a| attachment_view(a, admin))
                .collect(),
            migration_status: Field::when(admin, v.migration_status.as_deref()),
            group_id: Field::when(at(Microversion::GROUP_VOLUME), None),
            provider_id: Field::when(admin && at(Microversion::VOLUME_DETAIL_PROVIDER_ID), None),
            shared_targets: at(Microversion::SHARED_TARGETS).then_some(false),
            service_uuid: Field::when(at(Microversion::SHARED_TARGETS), None),
            cluster_name: Field::when(admin && at(Microversion::VOLUME_CLUSTER_NAME), None),
            volume_type_id: Field::when(at(Microversion::VOLUME_TYPE_ID), None),
            consumes_quota: at(Microversion::USE_QUOTA).then_some(true),
            tenant_id: (full && (admin || v.project_id == call.ctx.project_id))
                .then_some(v.project_id.as_str()),
            host: Field::when(full && admin, v.host.as_deref()),
            migstat: Field::when(full && admin, v.migration_status.as_deref()),
            name_id: Field::when(full && admin, None),
        }
    }
}
