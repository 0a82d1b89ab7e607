//! `GET /v1/{project_id}/jobs/{job_id}` (spec 03 §3): a job's status, its entities,
//! times in UTC with milliseconds and `Z`, and the jobs it fanned out into.

use crate::openapi::Routes;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use serde::Serialize;
use serde_json::{Map, Value};
use vbs_catalog::JobRecord;
use vbs_service::{job_entities, job_status, job_type};

use super::VbsCall;
use crate::error::ApiError;
use crate::{AppState, json_response};

pub fn routes(r: Routes) -> Routes {
    r.route("/v1/{project_id}/jobs/{job_id}", get(show_job))
}

/// `GET /v1/{project_id}/jobs/{job_id}`.
async fn show_job(State(state): State<AppState>, call: VbsCall) -> Result<Response, ApiError> {
    let view = state
        .lifecycle
        .job(&call.ctx, call.path_param("job_id"))
        .await?;
    let mut job = JobView::new(&view.job);
    job.sub_jobs = view.sub_jobs.iter().map(JobView::new).collect();
    Ok(json_response(&job))
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Job)]
pub(crate) struct JobView {
    status: &'static str,
    #[schema(value_type = Object)]
    entities: Map<String, Value>,
    job_id: String,
    job_type: &'static str,
    begin_time: String,
    end_time: Option<String>,
    error_code: Option<String>,
    fail_reason: Option<String>,
    #[schema(no_recursion)]
    sub_jobs: Vec<JobView>,
}

impl JobView {
    fn new(j: &JobRecord) -> Self {
        let (status, error_code, fail_reason) = job_status(j);
        Self {
            status,
            entities: job_entities(j),
            job_id: j.id.clone(),
            job_type: job_type(j.kind),
            begin_time: millis_z(j.created_at),
            end_time: if matches!(status, "SUCCESS" | "FAIL") {
                j.finished_at.map(millis_z)
            } else {
                None
            },
            error_code,
            fail_reason,
            sub_jobs: Vec::new(),
        }
    }
}

/// `2016-01-28T16:14:09.466Z`: UTC, milliseconds, `Z` (jobs' own format).
fn millis_z(micros: i64) -> String {
    let full = vbs_catalog::ts::format_api(micros);
    // `YYYY-MM-DDTHH:MM:SS.ffffff` → keep three digits of the fraction.
    format!("{}Z", &full[..full.len().saturating_sub(3)])
}

#[cfg(test)]
mod tests {
    #[test]
    fn job_times_have_milliseconds_and_z() {
        assert_eq!(
            super::millis_z(1_454_000_049_466_123),
            "2016-01-28T16:54:09.466Z"
        );
    }
}
