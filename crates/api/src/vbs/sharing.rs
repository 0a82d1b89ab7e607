//! Backup sharing (spec 03 §4) under `/v2/{project_id}/os-vendor-backup-sharing`:
//! share, cancel (by record or, with `is_backup_id=true`, by backup), list with every
//! filter, count, show. `detail` and `count` are fixed segments, matched before `{id}`.

use crate::openapi::Routes;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Value, json};
use vbs_catalog::{BackupRecord, ShareRecord, ts};
use vbs_service::share_query;

use super::VbsCall;
use crate::error::ApiError;
use crate::{AppState, json_response};

pub fn routes(r: Routes) -> Routes {
    const P: &str = "/v2/{project_id}/os-vendor-backup-sharing";
    r.route(P, post(share_backup))
        .route(&format!("{P}/detail"), get(list_shares))
        .route(&format!("{P}/count"), get(count_shares))
        .route(&format!("{P}/{{id}}"), get(show_share).delete(cancel_share))
}

/// The embedded backup: the v2 detail fields, booleans and integers as Cinder has them.
fn backup_view(b: &BackupRecord) -> Value {
    json!({
        "id": b.id,
        "name": b.display_name,
        "status": b.status,
        "size": b.size,
        "object_count": b.object_count,
        "availability_zone": b.availability_zone,
        "container": b.container,
        "description": b.display_description,
        "fail_reason": b.fail_reason,
        "volume_id": b.volume_id,
        "snapshot_id": b.snapshot_id,
        "created_at": ts::format_api(b.created_at),
        "updated_at": b.updated_at.map(ts::format_api),
        "data_timestamp": ts::format_api(b.data_timestamp.unwrap_or(b.created_at)),
        "has_dependent_backups": b.num_dependent_backups > 0,
        "is_incremental": b.parent_id.is_some(),
        "service_metadata": b.service_metadata,
    })
}

fn share_view(s: &ShareRecord) -> Value {
    let mut v = json!({
        "id": s.id,
        "backup_id": s.backup_id,
        "from_project_id": s.from_project_id,
        "to_project_id": s.to_project_id,
        "created_at": ts::format_api(s.created_at),
        "updated_at": s.updated_at.map(ts::format_api),
        "deleted": false,
        "deleted_at": null,
    });
    if let Some(b) = &s.backup {
        v["backup"] = backup_view(b);
    }
    v
}

async fn share_backup(
    State(state): State<AppState>,
    call: VbsCall,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let body: Value = serde_json::from_slice(&bytes).map_err(|_| {
        ApiError::Vbs(
            "VolumeBackup.0002",
            "The request body is not valid JSON.".into(),
        )
    })?;
    let records = state.lifecycle.share(&call.ctx, &body).await?;
    let items: Vec<Value> = records.iter().map(share_view).collect();
    Ok(json_response(&json!({ "shared": items })))
}

async fn cancel_share(State(state): State<AppState>, call: VbsCall) -> Result<Response, ApiError> {
    let by_backup = call
        .params
        .iter()
        .find(|(k, _)| k == "is_backup_id")
        .is_some_and(|(_, v)| matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes"));
    state
        .lifecycle
        .cancel_share(&call.ctx, call.path_param("id"), by_backup)
        .await?;
    Ok(axum::response::IntoResponse::into_response(
        axum::http::StatusCode::OK,
    ))
}

async fn show_share(State(state): State<AppState>, call: VbsCall) -> Result<Response, ApiError> {
    let s = state
        .lifecycle
        .show_share(&call.ctx, call.path_param("id"))
        .await?;
    Ok(json_response(&json!({ "shared": share_view(&s) })))
}

async fn list_shares(State(state): State<AppState>, call: VbsCall) -> Result<Response, ApiError> {
    let q = share_query(&call.ctx, &call.params)?;
    let records = state.lifecycle.list_shares(&call.ctx, &q).await?;
    let items: Vec<Value> = records.iter().map(share_view).collect();
    Ok(json_response(&json!({ "shared": items })))
}

async fn count_shares(State(state): State<AppState>, call: VbsCall) -> Result<Response, ApiError> {
    let mut q = share_query(&call.ctx, &call.params)?;
    q.offset = 0;
    q.limit = None;
    let n = state.lifecycle.count_shares(&call.ctx, &q).await?;
    Ok(json_response(&json!({ "count": n })))
}
