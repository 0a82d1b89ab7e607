//! Backup policies (spec 03 §5): `/v2/{project_id}/backuppolicy…` and
//! `/v2/{project_id}/backuppolicyresources…`. Fixed segments (`backuppolicy/tags`,
//! `backuppolicy/resource_instances/action`) are matched by the router before ids.

use crate::openapi::Routes;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::{Map, Value, json};
use vbs_catalog::{PolicyRecord, PolicyTask, TaskQuery};
use vbs_service::{ResourceOutcome, task_status};

use super::VbsCall;
use crate::error::ApiError;
use crate::{AppState, json_response};

pub fn routes(r: Routes) -> Routes {
    const P: &str = "/v2/{project_id}/backuppolicy";
    r.route(P, post(create_policy).get(list_policies))
        .route(&format!("{P}/tags"), get(project_tags))
        .route(
            &format!("{P}/resource_instances/action"),
            post(query_by_tags),
        )
        .route(
            &format!("{P}/{{policy_id}}"),
            put(update_policy).delete(delete_policy),
        )
        .route(&format!("{P}/{{policy_id}}/action"), post(execute_policy))
        .route(&format!("{P}/{{policy_id}}/backuptasks"), get(list_tasks))
        .route(
            &format!("{P}/{{policy_id}}/tags"),
            post(add_tag).get(policy_tags),
        )
        .route(&format!("{P}/{{policy_id}}/tags/action"), post(batch_tags))
        .route(
            &format!("{P}/{{policy_id}}/tags/{{key}}"),
            axum::routing::delete(delete_tag),
        )
        .route("/v2/{project_id}/backuppolicyresources", post(associate))
        .route(
            "/v2/{project_id}/backuppolicyresources/{policy_id}/deleted_resources",
            post(disassociate),
        )
}

/// The body as JSON: none is an empty request (`AutoBackup.0000`), anything else
/// that is not JSON `AutoBackup.0008`.
fn body(bytes: &Bytes) -> Result<Value, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::Vbs(
            "AutoBackup.0000",
            "The request has no body.".into(),
        ));
    }
    serde_json::from_slice(bytes).map_err(|_| {
        ApiError::Vbs(
            "AutoBackup.0008",
            "The request body is not valid JSON.".into(),
        )
    })
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

async fn create_policy(
    State(state): State<AppState>,
    call: VbsCall,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let id = state
        .lifecycle
        .create_policy(&call.ctx, &body(&bytes)?)
        .await?;
    Ok(json_response(&json!({ "backup_policy_id": id })))
}

async fn list_policies(State(state): State<AppState>, call: VbsCall) -> Result<Response, ApiError> {
    let list = state.lifecycle.list_policies(&call.ctx).await?;
    let items: Vec<Value> = list
        .iter()
        .map(|p| {
            let mut v = policy_view(p);
            // A vendor key, as Cinder's extensions add theirs: when the scheduler fires
            // this policy next (the dashboard shows it).
            if let Some(t) = state.lifecycle.next_run(p) {
                v["os-vbs:next_run"] = json!(vbs_catalog::ts::format_api(t));
            }
            v
        })
        .collect();
    Ok(json_response(&json!({ "backup_policies": items })))
}

/// A policy as listed: keys never set are left out, `time_zone` only when set.
fn policy_view(p: &PolicyRecord) -> Value {
    let mut sp = Map::new();
    sp.insert("start_time".into(), json!(p.start_time));
    if let Some(f) = p.frequency {
        sp.insert("frequency".into(), json!(f));
    }
    if let Some(w) = &p.week_frequency {
        sp.insert(
            "week_frequency".into(),
            json!(w.split(',').collect::<Vec<_>>()),
        );
    }
    if let Some(n) = p.retention_num {
        sp.insert("rentention_num".into(), json!(n));
    }
    if let Some(d) = p.retention_day {
        sp.insert("rentention_day".into(), json!(d));
    }
    if let Some(y) = &p.keep_first_of_month {
        sp.insert("remain_first_backup_of_curMonth".into(), json!(y));
    }
    sp.insert("status".into(), json!(p.status));
    let mut v = json!({
        "backup_policy_id": p.id,
        "backup_policy_name": p.name,
        "scheduled_policy": sp,
        "policy_resource_count": p.resource_count,
    });
    if let Some(z) = &p.time_zone {
        v["time_zone"] = json!(z);
    }
    v
}

async fn update_policy(
    State(state): State<AppState>,
    call: VbsCall,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let id = state
        .lifecycle
        .update_policy(&call.ctx, call.path_param("policy_id"), &body(&bytes)?)
        .await?;
    Ok(json_response(&json!({ "backup_policy_id": id })))
}

async fn delete_policy(State(state): State<AppState>, call: VbsCall) -> Result<Response, ApiError> {
    state
        .lifecycle
        .delete_policy(&call.ctx, call.path_param("policy_id"))
        .await?;
    Ok(no_content())
}

fn outcome_view(o: &ResourceOutcome, detailed: bool) -> Value {
    let mut v = json!({"resource_id": o.resource_id});
    if detailed {
        v["resource_type"] = json!(o.resource_type);
        v["availability_zone"] = json!(o.availability_zone);
        v["os_vol_host_attr"] = json!(o.host);
    }
    if let Some((code, message)) = &o.failure {
        v["code"] = json!(code);
        v["message"] = json!(message);
    }
    v
}

fn outcomes(list: &[ResourceOutcome], detailed: bool) -> Response {
    let (ok, failed): (Vec<&ResourceOutcome>, Vec<&ResourceOutcome>) =
        list.iter().partition(|o| o.failure.is_none());
    json_response(&json!({
        "success_resources": ok.iter().map(|o| outcome_view(o, detailed)).collect::<Vec<_>>(),
        "fail_resources": failed.iter().map(|o| outcome_view(o, detailed)).collect::<Vec<_>>(),
    }))
}

async fn associate(
    State(state): State<AppState>,
    call: VbsCall,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let list = state
        .lifecycle
        .associate_volumes(&call.ctx, &body(&bytes)?)
        .await?;
    Ok(outcomes(&list, true))
}

async fn disassociate(
    State(state): State<AppState>,
    call: VbsCall,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let list = state
        .lifecycle
        .disassociate_volumes(&call.ctx, call.path_param("policy_id"), &body(&bytes)?)
        .await?;
    Ok(outcomes(&list, false))
}

/// Execute now: no body (or `null`).
async fn execute_policy(
    State(state): State<AppState>,
    call: VbsCall,
) -> Result<Response, ApiError> {
    state
        .lifecycle
        .execute_policy(&call.ctx, call.path_param("policy_id"))
        .await?;
    Ok(no_content())
}

fn bad_query(message: &str) -> ApiError {
    ApiError::Vbs("AutoBackup.0000", message.into())
}

/// `backuptasks`: `sort_dir`, `sort_key` (`created_at`), `limit` (20), `offset`,
/// `marker`, `job_id`, `status`.
async fn list_tasks(State(state): State<AppState>, call: VbsCall) -> Result<Response, ApiError> {
    let mut q = TaskQuery {
        limit: Some(20),
        ..TaskQuery::default()
    };
    for (k, v) in vbs_service::first_of_each(&call.params) {
        match k.as_str() {
            "sort_dir" => {
                q.ascending = match v.to_ascii_lowercase().as_str() {
                    "asc" => true,
                    "desc" => false,
                    _ => return Err(bad_query("sort_dir must be asc or desc.")),
                };
            }
            "sort_key" if v == "created_at" => {}
            "sort_key" => return Err(bad_query("sort_key must be created_at.")),
            "limit" => {
                q.limit = Some(
                    v.parse()
                        .map_err(|_| bad_query("limit must be a whole number."))?,
                );
            }
            "offset" => {
                q.offset = v
                    .parse()
                    .map_err(|_| bad_query("offset must be a whole number."))?;
            }
            "marker" => q.marker = Some(v.clone()),
            "job_id" => q.job_id = Some(v.clone()),
            "status" => {
                if ![
                    "RUNNING",
                    "EXECUTE_TIMEOUT",
                    "WAITING",
                    "EXECUTE_FAIL",
                    "EXECUTE_SUCCESS",
                    "SKIP",
                ]
                .contains(&v.as_str())
                {
                    return Err(bad_query("status is not a task status."));
                }
                q.status = Some(v.clone());
            }
            _ => {}
        }
    }
    let page = state
        .lifecycle
        .policy_tasks(&call.ctx, call.path_param("policy_id"), q)
        .await?;
    let tasks: Vec<Value> = page.tasks.iter().map(task_view).collect();
    Ok(json_response(&json!({"tasks": tasks, "count": page.count})))
}

/// Task times: UTC, milliseconds, no `Z` (spec 03 §5.10).
fn millis(micros: i64) -> String {
    let full = vbs_catalog::ts::format_api(micros);
    full[..full.len().saturating_sub(3)].to_owned()
}

fn task_view(t: &PolicyTask) -> Value {
    let status = task_status(t);
    let mut v = json!({
        "job_id": t.id,
        "status": status,
        "created_at": millis(t.created_at),
        "backup_name": t.backup_name,
        "resource_id": t.volume_id,
        "resource_type": "volume",
        "vbs_job_id": t.vbs_job_id,
    });
    let finished = t.finished_at.or(t.job_finished_at);
    if !matches!(status, "RUNNING" | "WAITING")
        && let Some(f) = finished
    {
        v["finished_at"] = json!(millis(f));
    }
    if let Some(m) = &t.message {
        v["message"] = json!(m);
    }
    v
}

fn tag_list(tags: &[(String, String)]) -> Vec<Value> {
    tags.iter()
        .map(|(k, v)| json!({"key": k, "value": v}))
        .collect()
}

async fn add_tag(
    State(state): State<AppState>,
    call: VbsCall,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    state
        .lifecycle
        .add_policy_tag(&call.ctx, call.path_param("policy_id"), &body(&bytes)?)
        .await?;
    Ok(no_content())
}

async fn delete_tag(State(state): State<AppState>, call: VbsCall) -> Result<Response, ApiError> {
    // The router has percent-decoded the key already (`%23` is `#`).
    let key = call.path_param("key").to_owned();
    state
        .lifecycle
        .delete_policy_tag(&call.ctx, call.path_param("policy_id"), &key)
        .await?;
    Ok(no_content())
}

async fn policy_tags(State(state): State<AppState>, call: VbsCall) -> Result<Response, ApiError> {
    let tags = state
        .lifecycle
        .policy_tags(&call.ctx, call.path_param("policy_id"))
        .await?;
    Ok(json_response(&json!({"tags": tag_list(&tags)})))
}

async fn project_tags(State(state): State<AppState>, call: VbsCall) -> Result<Response, ApiError> {
    let tags = state.lifecycle.project_policy_tags(&call.ctx).await?;
    let items: Vec<Value> = tags
        .iter()
        .map(|(k, values)| json!({"key": k, "values": values}))
        .collect();
    Ok(json_response(&json!({"tags": items})))
}

async fn batch_tags(
    State(state): State<AppState>,
    call: VbsCall,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    state
        .lifecycle
        .batch_policy_tags(&call.ctx, call.path_param("policy_id"), &body(&bytes)?)
        .await?;
    Ok(no_content())
}

async fn query_by_tags(
    State(state): State<AppState>,
    call: VbsCall,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let (total, page) = state
        .lifecycle
        .query_policies_by_tags(&call.ctx, &body(&bytes)?)
        .await?;
    let Some(page) = page else {
        return Ok(json_response(&json!({"total_count": total})));
    };
    let resources: Vec<Value> = page
        .iter()
        .map(|(p, tags)| {
            json!({
                "resource_id": p.id,
                "resource_name": p.name,
                "resource_detail": null,
                "tags": tag_list(tags),
            })
        })
        .collect();
    Ok(json_response(
        &json!({"total_count": total, "resources": resources}),
    ))
}
