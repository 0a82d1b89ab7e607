//! `GET /v2/{project_id}/cloudbackups/quota` (spec 03 §2.4): the caller's backup
//! quotas, `-1` for unlimited. `quota` is a fixed segment, matched before the
//! `/cloudbackups/{backup_id}` routes.

use crate::openapi::Routes;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use serde_json::{Value, json};

use super::VbsCall;
use crate::error::ApiError;
use crate::{AppState, json_response};

pub fn routes(r: Routes) -> Routes {
    r.route("/v2/{project_id}/cloudbackups/quota", get(show_quota))
}

async fn show_quota(State(state): State<AppState>, call: VbsCall) -> Result<Response, ApiError> {
    let usages = state.lifecycle.cloud_quota(&call.ctx).await?;
    let resources: Vec<Value> = usages
        .iter()
        .map(|u| json!({"type": u.resource, "used": u.in_use, "reserved": 0, "quota": u.limit}))
        .collect();
    Ok(json_response(&json!({"quotas": {"resources": resources}})))
}
