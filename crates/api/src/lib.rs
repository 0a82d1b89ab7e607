//! The HTTP API of vbs: the Cinder v3 backups API (and the deprecated v2 routes VBS
//! documents), the VBS extension APIs (jobs, cloudbackups, quotas, sharing),
//! volumes, snapshots and manage-existing, with Cinder's microversions, faults and
//! links. Handlers extract, call the service, and render a view; nothing here touches
//! SQL or volume bytes.

mod auth;
mod backups;
mod body;
mod call;
mod dashboard;
mod error;
pub mod keystone;
mod links;
mod manage;
pub mod openapi;
mod quota_sets;
mod snapshots;
mod vbs;
mod version;
mod versions;
mod volumes;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Serialize;
use tracing::Instrument;
use vbs_service::{BackupLifecycle, BackupService, VolumeService};

pub use auth::Authenticator;
pub use error::ApiError;
pub use keystone::{Keystone, KeystoneOptions};

/// Shared state of every handler; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub backups: BackupService,
    pub volumes: VolumeService,
    pub lifecycle: BackupLifecycle,
    pub auth: Arc<Authenticator>,
    /// Scheme, host and path prefix that links use instead of the request's host.
    pub public_endpoint: Option<Arc<str>>,
    /// Log every answered request at `info` (structured logs); else at `debug`.
    pub access_log: bool,
}

/// Serializes a view as the JSON body of a 200.
pub(crate) fn json_response<T: Serialize>(body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => {
            let mut resp = bytes.into_response();
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            resp
        }
        Err(e) => ApiError::Internal(format!("serializing a response: {e}")).into_response(),
    }
}

/// Every response carries `x-openstack-request-id` (and Cinder's duplicate
/// `x-compute-request-id`); the request is logged inside a span with that id, and
/// counted with its route template, method, status and latency (`/metrics`).
async fn request_id(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let id = format!("req-{}", uuid::Uuid::new_v4());
    let span = tracing::info_span!(
        "request",
        id = %id,
        route = tracing::field::Empty,
        project = tracing::field::Empty,
        user = tracing::field::Empty
    );
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    span.record("route", route.as_str());
    let mut resp = next.run(req).instrument(span.clone()).await;
    state.lifecycle.metrics().request(
        &route,
        method.as_str(),
        resp.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    let (status, millis) = (
        resp.status().as_u16(),
        started.elapsed().as_secs_f64() * 1e3,
    );
    span.in_scope(|| {
        if state.access_log {
            tracing::info!(%method, %path, status, duration_ms = millis, "served");
        } else {
            tracing::debug!(%method, %path, status, duration_ms = millis, "served");
        }
    });
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut()
            .insert("x-openstack-request-id", v.clone());
        resp.headers_mut().insert("x-compute-request-id", v);
    }
    resp
}

/// `GET /metrics` on the API listener: admins only (Prometheus scrapes `metrics_listen`
/// instead, where no token is asked).
async fn metrics(State(state): State<AppState>, call: call::Call) -> Result<Response, ApiError> {
    if !call.ctx.is_admin() {
        return Err(ApiError::Fault(
            StatusCode::FORBIDDEN,
            "Policy doesn't allow metrics:read to be performed.".into(),
        ));
    }
    Ok(metrics_text(&state).await)
}

/// The Prometheus text of this process.
pub async fn metrics_text(state: &AppState) -> Response {
    let body = state
        .lifecycle
        .metrics()
        .render(state.lifecycle.catalog())
        .await;
    let mut resp = body.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

/// The router of `metrics_listen`: `GET /metrics`, no token.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(s): State<AppState>| async move { metrics_text(&s).await }),
        )
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::not_found(error::GENERIC_404)
}

async fn method_not_allowed() -> ApiError {
    ApiError::Fault(
        StatusCode::METHOD_NOT_ALLOWED,
        "The method is not allowed for this resource.".into(),
    )
}

/// Every route of the API, recorded (the `OpenAPI` document is checked against them).
fn routes() -> openapi::Routes {
    let mut r = openapi::Routes::new()
        .route("/", get(versions::root))
        .route("/v3", get(versions::v3))
        .route("/v3/", get(versions::v3))
        .route("/healthcheck", get(versions::healthcheck))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi::serve_document));
    r = dashboard::routes(r);
    // Every v3 path exists with and without the project segment; v2 only with it.
    for prefix in ["/v3/{project_id}", "/v3", "/v2/{project_id}"] {
        r = r
            .route(&format!("{prefix}/backups"), get(backups::list_backups))
            .route(
                &format!("{prefix}/backups/detail"),
                get(backups::list_backups_detail),
            )
            .route(
                &format!("{prefix}/backups/{{backup_id}}"),
                get(backups::show_backup),
            );
    }
    // The deprecated v2 write routes VBS documents (spec 03 §1): create, delete and
    // restore, with 3.0 behaviour.
    r = r
        .route("/v2/{project_id}/backups", post(backups::create_backup))
        .route(
            "/v2/{project_id}/backups/{backup_id}",
            axum::routing::delete(backups::delete_backup),
        )
        .route(
            "/v2/{project_id}/backups/{backup_id}/restore",
            post(backups::restore_backup),
        );
    // The rest of the backup lifecycle (v3 only).
    for prefix in ["/v3/{project_id}", "/v3"] {
        r = r
            .route(&format!("{prefix}/backups"), post(backups::create_backup))
            .route(
                &format!("{prefix}/backups/{{backup_id}}"),
                put(backups::update_backup).delete(backups::delete_backup),
            )
            .route(
                &format!("{prefix}/backups/{{backup_id}}/restore"),
                post(backups::restore_backup),
            )
            .route(
                &format!("{prefix}/backups/{{backup_id}}/action"),
                post(backups::backup_action),
            )
            .route(
                &format!("{prefix}/backups/{{backup_id}}/export_record"),
                get(backups::export_record),
            )
            .route(
                &format!("{prefix}/backups/import_record"),
                post(backups::import_record),
            );
    }
    for prefix in ["/v3/{project_id}", "/v3"] {
        r = r
            .route(
                &format!("{prefix}/volumes"),
                get(volumes::list_volumes).post(volumes::create_volume),
            )
            .route(
                &format!("{prefix}/volumes/detail"),
                get(volumes::list_volumes_detail),
            )
            .route(
                &format!("{prefix}/volumes/{{volume_id}}"),
                get(volumes::show_volume).delete(volumes::delete_volume),
            )
            .route(
                &format!("{prefix}/volumes/{{volume_id}}/action"),
                post(volumes::volume_action),
            )
            .route(
                &format!("{prefix}/manageable_volumes"),
                post(manage::manage_volume),
            )
            .route(
                &format!("{prefix}/os-volume-manage"),
                post(manage::manage_volume),
            )
            .route(
                &format!("{prefix}/snapshots"),
                get(snapshots::list_snapshots).post(snapshots::create_snapshot),
            )
            .route(
                &format!("{prefix}/snapshots/detail"),
                get(snapshots::list_snapshots_detail),
            )
            .route(
                &format!("{prefix}/snapshots/{{snapshot_id}}"),
                get(snapshots::show_snapshot)
                    .put(snapshots::update_snapshot)
                    .delete(snapshots::delete_snapshot),
            );
    }
    r = quota_sets::routes(r);
    vbs::routes(r)
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    let (r, _) = routes().into_parts();
    r.fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(version::negotiate))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), request_id))
        .with_state(state)
}
