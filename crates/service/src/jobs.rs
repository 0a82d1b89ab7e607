//! Jobs as VBS shows them (spec 03 §3): the catalog's work queue seen by the project
//! that asked for the work. `INIT` while queued, `RUNNING` while a worker holds it,
//! then `SUCCESS` or `FAIL` with a VBS code; a job whose worker died is taken over or,
//! after its last attempt, failed (`crate::worker`), so none stays `RUNNING`.

use serde_json::{Map, Value};
use vbs_catalog::{CatalogError, JobKind, JobRecord};

use crate::worker::fail_code;
use crate::{BackupLifecycle, Context, Error};

/// A job and the jobs it fanned out into.
#[derive(Debug, Clone)]
pub struct JobView {
    pub job: JobRecord,
    pub sub_jobs: Vec<JobRecord>,
}

/// VBS's name of a job's type.
pub fn job_type(kind: JobKind) -> &'static str {
    match kind {
        JobKind::Backup => "bksCreateBackup",
        JobKind::Restore => "bksRestoreBackup",
        JobKind::Delete => "bksDeleteBackup",
        JobKind::Verify => "bksImportBackup",
        JobKind::Gc => "bksCollectGarbage",
        JobKind::PolicyRun => "bksPolicyBackup",
    }
}

/// VBS's status of a job, with its error code and reason when it failed.
pub fn job_status(job: &JobRecord) -> (&'static str, Option<String>, Option<String>) {
    match (job.outcome.as_deref(), job.state.as_str()) {
        (Some("success"), _) => ("SUCCESS", None, None),
        (Some(_), _) => ("FAIL", job.error_code.clone(), job.fail_reason.clone()),
        (None, "queued") => ("INIT", None, None),
        (None, "running") => ("RUNNING", None, None),
        // Finished before outcomes were recorded (a catalog from an older version).
        (None, _) => (
            "FAIL",
            Some(fail_code(job.kind).to_owned()),
            Some("The job ended without a recorded result.".to_owned()),
        ),
    }
}

/// A job's `entities`: what it was created with, with the backup id filled in.
pub fn job_entities(job: &JobRecord) -> Map<String, Value> {
    let mut entities = job
        .entities
        .as_deref()
        .and_then(|e| serde_json::from_str::<Map<String, Value>>(e).ok())
        .unwrap_or_default();
    if !job.backup_id.is_empty() {
        entities
            .entry("backup_id")
            .or_insert_with(|| Value::String(job.backup_id.clone()));
    }
    entities
}

impl BackupLifecycle {
    /// `GET /v1/{project_id}/jobs/{job_id}`: a job of the caller's project
    /// (`common.0011` otherwise).
    pub async fn job(&self, ctx: &Context, id: &str) -> Result<JobView, Error> {
        if !ctx.can_read() {
            return Err(Error::vbs(
                "VolumeBackup.0042",
                "You are not allowed to read jobs of this project.",
            ));
        }
        let job = match self.catalog().get_job(id, &ctx.project_id).await {
            Ok(j) => j,
            Err(CatalogError::NotFound) => {
                return Err(Error::vbs(
                    "common.0011",
                    format!("The job {id} does not exist."),
                ));
            }
            Err(e) => return Err(e.into()),
        };
        let sub_jobs = self.catalog().sub_jobs(id).await?;
        Ok(JobView { job, sub_jobs })
    }
}
