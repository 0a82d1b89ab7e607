//! `…/snapshots`: list, detail, show, create, update and delete, with Cinder's snapshot views
//! (`cinder/api/v3/views/snapshots.py` plus the `os-extended-snapshot-attributes`
//! extension on show and detail).

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use vbs_catalog::{SnapshotRecord, ts};
use vbs_service::{CreateSnapshotOptions, Microversion};

use crate::body::JsonBody;
use crate::call::Call;
use crate::error::ApiError;
use crate::links::Link;
use crate::volumes::{Field, accepted, next_links};
use crate::{AppState, json_response};

/// `GET …/snapshots`.
pub async fn list_snapshots(
    State(state): State<AppState>,
    call: Call,
) -> Result<Response, ApiError> {
    let list = state
        .volumes
        .list_snapshots(&call.ctx, &call.params)
        .await?;
    let snapshots: Vec<_> = list
        .items
        .iter()
        .map(|s| SnapshotView::new(&call, s, View::Summary))
        .collect();
    let links = next_links(&call, "snapshots", &list.items, list.link_limit);
    Ok(json_response(&SnapshotsView {
        snapshots,
        snapshots_links: links,
    }))
}

/// `GET …/snapshots/detail`.
pub async fn list_snapshots_detail(
    State(state): State<AppState>,
    call: Call,
) -> Result<Response, ApiError> {
    let list = state
        .volumes
        .list_snapshots(&call.ctx, &call.params)
        .await?;
    let snapshots: Vec<_> = list
        .items
        .iter()
        .map(|s| SnapshotView::new(&call, s, View::Full))
        .collect();
    let links = next_links(&call, "snapshots/detail", &list.items, list.link_limit);
    Ok(json_response(&SnapshotsView {
        snapshots,
        snapshots_links: links,
    }))
}

/// `GET …/snapshots/{snapshot_id}`.
pub async fn show_snapshot(
    State(state): State<AppState>,
    call: Call,
) -> Result<Response, ApiError> {
    let s = state
        .volumes
        .get_snapshot(&call.ctx, call.path_param("snapshot_id"))
        .await?;
    Ok(json_response(&OneSnapshot {
        snapshot: SnapshotView::new(&call, &s, View::Full),
    }))
}

/// `PUT …/snapshots/{snapshot_id}` → 200 with the snapshot's detail view.
pub async fn update_snapshot(
    State(state): State<AppState>,
    call: Call,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let s = state
        .volumes
        .update_snapshot(&call.ctx, call.path_param("snapshot_id"), &body)
        .await?;
    Ok(json_response(&OneSnapshot {
        snapshot: SnapshotView::new(&call, &s, View::Detail),
    }))
}

/// `POST …/snapshots` → 202 with the `creating` snapshot.
pub async fn create_snapshot(
    State(state): State<AppState>,
    call: Call,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let opts = CreateSnapshotOptions::from_body(&body)?;
    let s = state
        .volumes
        .create_snapshot(&call.ctx, call.version.version, opts)
        .await?;
    Ok(accepted(&OneSnapshot {
        snapshot: SnapshotView::new(&call, &s, View::Detail),
    }))
}

/// `DELETE …/snapshots/{snapshot_id}` → 202.
pub async fn delete_snapshot(
    State(state): State<AppState>,
    call: Call,
) -> Result<Response, ApiError> {
    state
        .volumes
        .delete_snapshot(&call.ctx, call.path_param("snapshot_id"))
        .await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

#[derive(Serialize)]
struct SnapshotsView<'a> {
    snapshots: Vec<SnapshotView<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    snapshots_links: Option<Vec<Link>>,
}

#[derive(Serialize)]
struct OneSnapshot<'a> {
    snapshot: SnapshotView<'a>,
}

/// Which of Cinder's snapshot views.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum View {
    /// `summary`: the plain list.
    Summary,
    /// `detail`: what create answers.
    Detail,
    /// `detail` plus the extension attributes: show and the detail list.
    Full,
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Snapshot)]
pub(crate) struct SnapshotView<'a> {
    id: &'a str,
    created_at: String,
    updated_at: Option<String>,
    name: Option<&'a str>,
    description: Option<&'a str>,
    volume_id: &'a str,
    status: &'a str,
    size: i64,
    metadata: &'a BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Field::is_hidden")]
    #[schema(value_type = Option<String>)]
    group_snapshot_id: Field<&'a str>,
    #[serde(skip_serializing_if = "Field::is_hidden")]
    #[schema(value_type = Option<String>)]
    user_id: Field<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    consumes_quota: Option<bool>,
    #[serde(
        rename = "os-extended-snapshot-attributes:project_id",
        skip_serializing_if = "Option::is_none"
    )]
    project_id: Option<&'a str>,
    #[serde(
        rename = "os-extended-snapshot-attributes:progress",
        skip_serializing_if = "Field::is_hidden"
    )]
    #[schema(value_type = Option<String>)]
    progress: Field<&'a str>,
}

impl<'a> SnapshotView<'a> {
    fn new(call: &Call, s: &'a SnapshotRecord, view: View) -> Self {
        let mv = call.version.version;
        let at = |m: Microversion| view != View::Summary && mv.at_least(m);
        // The extension's policy: a reader of the snapshot's project, or an admin.
        let ext =
            view == View::Full && (call.ctx.is_admin() || s.project_id == call.ctx.project_id);
        Self {
            id: &s.id,
            created_at: ts::format_api(s.created_at),
            updated_at: s.updated_at.map(ts::format_api),
            name: s.display_name.as_deref(),
            description: s.display_description.as_deref(),
            volume_id: &s.volume_id,
            status: &s.status,
            size: s.size,
            metadata: &s.metadata,
            group_snapshot_id: Field::when(at(Microversion::GROUP_SNAPSHOTS), None),
            user_id: Field::when(
                at(Microversion::SNAPSHOT_LIST_USER_ID),
                s.user_id.as_deref(),
            ),
            consumes_quota: at(Microversion::USE_QUOTA).then_some(true),
            project_id: ext.then_some(s.project_id.as_str()),
            progress: Field::when(ext, s.progress.as_deref()),
        }
    }
}
