//! `GET …/volumes[/detail]`: enough for clients that resolve volume names and ids while
//! they work with backups (OSC lists volumes before listing backups).

use axum::extract::State;
use axum::response::Response;
use serde::Serialize;
use vbs_catalog::{VolumeRecord, ts};

use crate::call::Call;
use crate::error::ApiError;
use crate::links::Link;
use crate::{AppState, json_response};

#[derive(Serialize)]
struct VolumeSummary<'a> {
    id: &'a str,
    name: Option<&'a str>,
    links: [Link; 2],
}

#[derive(Serialize)]
struct VolumeDetail<'a> {
    id: &'a str,
    name: Option<&'a str>,
    status: &'a str,
    size: i64,
    availability_zone: Option<&'a str>,
    created_at: String,
    updated_at: Option<String>,
    description: Option<&'a str>,
    volume_type: Option<&'a str>,
    bootable: &'static str,
    attachments: [(); 0],
    metadata: serde_json::Map<String, serde_json::Value>,
    user_id: Option<&'a str>,
    encrypted: bool,
    multiattach: bool,
    snapshot_id: Option<&'a str>,
    source_volid: Option<&'a str>,
    links: [Link; 2],
}

#[derive(Serialize)]
struct Volumes<T> {
    volumes: Vec<T>,
}

async fn fetch(state: &AppState, call: &Call) -> Result<Vec<VolumeRecord>, ApiError> {
    if !call.ctx.can_read() {
        return Err(vbs_service::Error::Forbidden("volume:get_all").into());
    }
    let all = call.ctx.is_admin()
        && call
            .params
            .iter()
            .rev()
            .find(|(k, _)| k == "all_tenants")
            .and_then(|(_, v)| vbs_service::parse_bool(v))
            .unwrap_or(false);
    let name = call
        .params
        .iter()
        .rev()
        .find(|(k, _)| k == "name")
        .map(|(_, v)| v.as_str());
    let project = (!all).then_some(call.ctx.project_id.as_str());
    Ok(state
        .backups
        .catalog()
        .list_volumes(project, name, vbs_service::MAX_LIMIT)
        .await
        .map_err(vbs_service::Error::from)?)
}

pub async fn list_volumes(State(state): State<AppState>, call: Call) -> Result<Response, ApiError> {
    let records = fetch(&state, &call).await?;
    let volumes = records
        .iter()
        .map(|v| VolumeSummary {
            id: &v.id,
            name: v.display_name.as_deref(),
            links: call.base.resource_links("volumes", &v.id),
        })
        .collect();
    Ok(json_response(&Volumes { volumes }))
}

pub async fn list_volumes_detail(
    State(state): State<AppState>,
    call: Call,
) -> Result<Response, ApiError> {
    let records = fetch(&state, &call).await?;
    let volumes = records
        .iter()
        .map(|v| VolumeDetail {
            id: &v.id,
            name: v.display_name.as_deref(),
            status: &v.status,
            size: v.size,
            availability_zone: v.availability_zone.as_deref(),
            created_at: ts::format_api(v.created_at),
            updated_at: v.updated_at.map(ts::format_api),
            description: v.display_description.as_deref(),
            volume_type: v.volume_type.as_deref(),
            bootable: if v.bootable { "true" } else { "false" },
            attachments: [],
            metadata: serde_json::Map::new(),
            user_id: v.user_id.as_deref(),
            encrypted: false,
            multiattach: false,
            snapshot_id: None,
            source_volid: None,
            links: call.base.resource_links("volumes", &v.id),
        })
        .collect();
    Ok(json_response(&Volumes { volumes }))
}
