//! The domain of vbs: who may do what, and the rules of each backup, volume and snapshot
//! operation. The API crate turns HTTP into calls here; this crate turns them into
//! catalog queries and volume-pool file work.

mod backups;
mod clock;
mod cloudbackups;
mod context;
mod error;
mod generations;
mod jobs;
mod lease;
mod lifecycle;
mod manage;
mod metrics;
mod microversion;
mod pages;
mod policies;
pub mod policy_time;
mod quotas;
mod scheduler;
pub mod schema;
mod sharing;
mod snapshots;
mod volume_actions;
mod volumes;
mod worker;

pub use backups::{BackupList, BackupService, ListRequest, first_of_each, parse_bool};
pub use clock::Clock;
pub use cloudbackups::quota_code;
pub use context::{Context, Role};
pub use error::Error;
pub use jobs::{JobView, job_entities, job_status, job_type};
pub use lease::keep_lease;
pub use lifecycle::{BACKUP_SERVICE, BackupLifecycle, RestoreStarted};
pub use manage::ManageVolumeOptions;
pub use metrics::Metrics;
pub use microversion::Microversion;
pub use policies::{
    MAX_POLICIES, MAX_POLICY_TAGS, MAX_POLICY_VOLUMES, ResourceOutcome, TaskPage, schedule_of,
    task_status,
};
pub use quotas::{QuotaSet, over_quota_message, quota_set_body};
pub use scheduler::{SchedulerOptions, run_scheduler};
pub use sharing::share_query;
pub use snapshots::CreateSnapshotOptions;
pub use volumes::{
    CreateVolumeOptions, DEFAULT_AZ, DEFAULT_TYPE, Listed, POOL_HOST, VOLUME_STATUSES,
    VolumeService,
};
pub use worker::{BackupWorker, WorkerOptions};

/// The filters non-admins may use on backup lists (Cinder's `resource_filters.json`
/// entry for `backup`, as the VBS founding document extends it).
pub const DEFAULT_BACKUP_FILTERS: &[&str] = &[
    "name",
    "status",
    "volume_id",
    "name~",
    "status~",
    "volume_id~",
];

/// Cinder's `osapi_max_limit`: the largest page, and the page size without `limit`.
pub const MAX_LIMIT: u64 = 1000;
