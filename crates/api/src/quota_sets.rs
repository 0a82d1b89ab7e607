//! Cinder's `os-quota-sets` (`/v3/{project_id}/os-quota-sets/{target}` and the
//! project-less form): show (`?usage=True` adds usage), defaults, admin update and
//! delete, as `openstack quota show/set` and `cinder quota-*` call them.

use crate::openapi::Routes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use vbs_service::quota_set_body;

use crate::body::JsonBody;
use crate::call::Call;
use crate::error::ApiError;
use crate::{AppState, json_response};

pub fn routes(mut r: Routes) -> Routes {
    for prefix in ["/v3/{project_id}", "/v3"] {
        r = r
            .route(
                &format!("{prefix}/os-quota-sets/{{target}}"),
                get(show_quota_set)
                    .put(update_quota_set)
                    .delete(delete_quota_set),
            )
            .route(
                &format!("{prefix}/os-quota-sets/{{target}}/defaults"),
                get(quota_defaults),
            );
    }
    r
}

/// oslo's `bool_from_string`: true for `1`, `t`, `true`, `on`, `y`, `yes`.
fn flag(call: &Call, key: &str, default: bool) -> bool {
    call.params
        .iter()
        .find(|(k, _)| k == key)
        .map_or(default, |(_, v)| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "t" | "true" | "on" | "y" | "yes"
            )
        })
}

async fn show_quota_set(State(state): State<AppState>, call: Call) -> Result<Response, ApiError> {
    let set = state
        .lifecycle
        .quota_set(&call.ctx, call.path_param("target"))
        .await?;
    let usage = flag(&call, "usage", false);
    Ok(json_response(
        &json!({"quota_set": quota_set_body(&set, usage, true)}),
    ))
}

async fn quota_defaults(State(state): State<AppState>, call: Call) -> Result<Response, ApiError> {
    let set = state
        .lifecycle
        .quota_defaults(&call.ctx, call.path_param("target"))?;
    Ok(json_response(
        &json!({"quota_set": quota_set_body(&set, false, true)}),
    ))
}

async fn update_quota_set(
    State(state): State<AppState>,
    call: Call,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let set = state
        .lifecycle
        .update_quota_set(
            &call.ctx,
            call.path_param("target"),
            &body,
            flag(&call, "skip_validation", true),
        )
        .await?;
    Ok(json_response(
        &json!({"quota_set": quota_set_body(&set, false, false)}),
    ))
}

async fn delete_quota_set(State(state): State<AppState>, call: Call) -> Result<Response, ApiError> {
    state
        .lifecycle
        .delete_quota_set(&call.ctx, call.path_param("target"))
        .await?;
    Ok(StatusCode::OK.into_response())
}
