//! `/v2/{project_id}/cloudbackups` (spec 03 §2): create, restore and the deprecated
//! POST delete, each answered at once with `{"job_id"}` (200); the work is followed
//! through `/v1/{project_id}/jobs/{job_id}`.

use crate::openapi::Routes;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::Response;
use axum::routing::post;
use serde_json::{Value, json};

use super::VbsCall;
use crate::error::ApiError;
use crate::{AppState, json_response};

pub fn routes(r: Routes) -> Routes {
    r.route("/v2/{project_id}/cloudbackups", post(create_cloudbackup))
        .route(
            "/v2/{project_id}/cloudbackups/{backup_id}",
            post(delete_cloudbackup),
        )
        .route(
            "/v2/{project_id}/cloudbackups/{backup_id}/restore",
            post(restore_cloudbackup),
        )
}

/// The body as JSON; anything else is the operation's "malformed request" code.
fn body(bytes: &Bytes, code: &'static str) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|_| ApiError::Vbs(code, "The request body is not valid JSON.".into()))
}

fn job_id(id: &str) -> Response {
    json_response(&json!({ "job_id": id }))
}

/// `POST /v2/{project_id}/cloudbackups` → 200 `{"job_id"}`.
async fn create_cloudbackup(
    State(state): State<AppState>,
    call: VbsCall,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let body = body(&bytes, "VolumeBackup.0002")?;
    let id = state.lifecycle.cloud_create(&call.ctx, &body).await?;
    Ok(job_id(&id))
}

/// `POST /v2/{project_id}/cloudbackups/{backup_id}/restore` → 200 `{"job_id"}`.
async fn restore_cloudbackup(
    State(state): State<AppState>,
    call: VbsCall,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let body = body(&bytes, "VolumeBackup.0210")?;
    let id = state
        .lifecycle
        .cloud_restore(&call.ctx, call.path_param("backup_id"), &body)
        .await?;
    Ok(job_id(&id))
}

/// `POST /v2/{project_id}/cloudbackups/{backup_id}` (deprecated delete) → 200
/// `{"job_id"}`.
async fn delete_cloudbackup(
    State(state): State<AppState>,
    call: VbsCall,
) -> Result<Response, ApiError> {
    let id = state
        .lifecycle
        .cloud_delete(&call.ctx, call.path_param("backup_id"))
        .await?;
    Ok(job_id(&id))
}
