//! `/v3/{project_id}/backups…`, the project-less `/v3/backups…`, and the deprecated
//! `/v2/{project_id}/backups…` read routes.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use vbs_catalog::{BackupRecord, BackupSummary, ts};
use vbs_service::{BackupList, ListRequest, Microversion};

use crate::body::JsonBody;
use crate::call::Call;
use crate::error::ApiError;
use crate::links::{Base, Link};
use crate::volumes::accepted;
use crate::{AppState, json_response};
use axum::extract::State;

/// `GET …/backups`: the founding endpoint.
pub async fn list_backups(State(state): State<AppState>, call: Call) -> Result<Response, ApiError> {
    let req = list_request(&call);
    // Everything the body is made of besides the catalog's answer: the link base and
    // the parameters the next link repeats.
    let view_key = format!(
        "{}\u{0}{}\u{0}{:?}\u{0}{:?}",
        call.base.origin, call.base.version_segment, call.base.url_project, call.params
    );
    let body = state
        .backups
        .summaries_page(&call.ctx, req.as_request(&call), &view_key, |list| {
            let items = &list.page.items;
            let links = next_links(
                &call,
                "backups",
                items.last().map(|b| b.id.as_str()),
                items.len(),
                list.link_limit,
                list.page.count,
            );
            summary_list_json(&call.base, items, links.as_deref(), list.page.count)
        })
        .await?;
    let mut resp = body.into_response();
    resp.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

/// A string's JSON escape without the quotes, as `serde_json` writes it (control
/// characters, `"` and `\\` escaped, everything else as it is); borrowed when nothing needs
/// escaping, which a plain scan tells much faster than `serde_json`'s per-byte table.
#[allow(clippy::needless_bitwise_bool)]
fn escaped(s: &str) -> std::borrow::Cow<'_, [u8]> {
    // Bitwise, no short-circuit: the fold compiles to a vector loop.
    let clean = !s.bytes().fold(false, |dirty, b| {
        dirty | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if clean {
        return std::borrow::Cow::Borrowed(s.as_bytes());
    }
    let quoted = serde_json::to_vec(s).unwrap_or_default();
    std::borrow::Cow::Owned(quoted[1..quoted.len().saturating_sub(1)].to_vec())
}

/// The founding endpoint's body, byte for byte what `serde_json` makes of
/// `ListView<SummaryView>`, written straight into one buffer sized for the page: a page
/// of 1,000 summaries is 330 KB, two thirds of it links, and building it as views
/// (two `String`s per link, per-byte escaping, a growing buffer) was most of the
/// endpoint's CPU under load.
fn summary_list_json(
    base: &Base,
    items: &[BackupSummary],
    links: Option<&[Link]>,
    count: Option<u64>,
) -> Vec<u8> {
    let origin = escaped(&base.origin);
    let project = base
        .url_project
        .as_deref()
        .filter(|p| !p.is_empty())
        .map(escaped);
    let project_len = project.as_ref().map_or(0, |p| p.len() + 1);
    let per_item = 2 * (origin.len() + project_len) + base.version_segment.len() + 140;
    let mut out = Vec::with_capacity(64 + items.len() * (per_item + 3 * 36 + 32));
    out.extend_from_slice(b"{\"backups\":[");
    for (i, b) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let id = escaped(&b.id);
        out.extend_from_slice(b"{\"id\":\"");
        out.extend_from_slice(&id);
        out.extend_from_slice(b"\",\"name\":");
        match &b.name {
            Some(name) => {
                out.push(b'"');
                out.extend_from_slice(&escaped(name));
                out.push(b'"');
            }
            None => out.extend_from_slice(b"null"),
        }
        for (rel, versioned) in [("self", true), ("bookmark", false)] {
            out.extend_from_slice(if versioned {
                b",\"links\":[{\"rel\":\"".as_slice()
            } else {
                b",{\"rel\":\"".as_slice()
            });
            out.extend_from_slice(rel.as_bytes());
            out.extend_from_slice(b"\",\"href\":\"");
            out.extend_from_slice(&origin);
            if versioned {
                out.push(b'/');
                out.extend_from_slice(base.version_segment.as_bytes());
            }
            if let Some(p) = &project {
                out.push(b'/');
                out.extend_from_slice(p);
            }
            out.extend_from_slice(b"/backups/");
            out.extend_from_slice(&id);
            out.extend_from_slice(b"\"}");
        }
        out.extend_from_slice(b"]}");
    }
    out.push(b']');
    if let Some(links) = links {
        out.extend_from_slice(b",\"backups_links\":");
        out.extend_from_slice(&serde_json::to_vec(links).unwrap_or_default());
    }
    if let Some(count) = count {
        out.extend_from_slice(b",\"count\":");
        out.extend_from_slice(count.to_string().as_bytes());
    }
    out.push(b'}');
    out
}

/// `GET …/backups/detail`.
pub async fn list_backups_detail(
    State(state): State<AppState>,
    call: Call,
) -> Result<Response, ApiError> {
    let req = list_request(&call);
    let list = state
        .backups
        .list_records(&call.ctx, req.as_request(&call))
        .await?;
    let mut tags = if call.version.legacy_v2 {
        v2_tags(
            &state,
            list.page.items.iter().map(|b| b.id.clone()).collect(),
        )
        .await?
    } else {
        std::collections::BTreeMap::new()
    };
    let items = list
        .page
        .items
        .iter()
        .map(|b| {
            let mut view = DetailView::new(&call, b);
            view.tags = tags.remove(&b.id);
            view
        })
        .collect();
    let last = list.page.items.last().map(|b| b.id.as_str());
    Ok(render_list(&call, "backups/detail", items, last, &list))
}

/// The list body: the items, the `next` link when Cinder's rule gives one, the count.
fn render_list<V: Serialize, T>(
    call: &Call,
    path: &str,
    items: Vec<V>,
    last_id: Option<&str>,
    list: &BackupList<T>,
) -> Response {
    let links = next_links(
        call,
        path,
        last_id,
        items.len(),
        list.link_limit,
        list.page.count,
    );
    json_response(&ListView {
        backups: items,
        backups_links: links,
        count: list.page.count,
    })
}

/// `GET …/backups/{backup_id}`.
pub async fn show_backup(State(state): State<AppState>, call: Call) -> Result<Response, ApiError> {
    let record = state
        .backups
        .get(&call.ctx, call.path_param("backup_id"))
        .await?;
    let mut backup = DetailView::new(&call, &record);
    if call.version.legacy_v2 {
        backup.tags = v2_tags(&state, vec![record.id.clone()])
            .await?
            .remove(&record.id);
    }
    if matches!(record.status.as_str(), "creating" | "restoring") {
        backup.progress = state
            .lifecycle
            .catalog()
            .backup_progress(&record.id)
            .await
            .ok()
            .flatten()
            .and_then(|p| serde_json::from_str(&p).ok());
    }
    Ok(json_response(&ShowView { backup }))
}

/// `POST …/backups` → 202 with the summary view.
pub async fn create_backup(
    State(state): State<AppState>,
    call: Call,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let b = state
        .lifecycle
        .create(&call.ctx, call.version.version, &body)
        .await?;
    Ok(accepted(&OneSummary {
        backup: summary_of(&call, &b),
    }))
}

/// `PUT …/backups/{backup_id}` (≥ 3.9) → 200 with the summary view.
pub async fn update_backup(
    State(state): State<AppState>,
    call: Call,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    if !call.version.version.at_least(Microversion::UPDATE) {
        return Err(ApiError::not_found(crate::error::GENERIC_404));
    }
    let b = state
        .lifecycle
        .update(
            &call.ctx,
            call.version.version,
            call.path_param("backup_id"),
            &body,
        )
        .await?;
    Ok(json_response(&OneSummary {
        backup: summary_of(&call, &b),
    }))
}

/// `DELETE …/backups/{backup_id}` → 202.
pub async fn delete_backup(
    State(state): State<AppState>,
    call: Call,
) -> Result<Response, ApiError> {
    state
        .lifecycle
        .delete(&call.ctx, call.path_param("backup_id"))
        .await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

/// `POST …/backups/{backup_id}/restore` → 202.
pub async fn restore_backup(
    State(state): State<AppState>,
    call: Call,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let r = state
        .lifecycle
        .restore(&call.ctx, call.path_param("backup_id"), &body)
        .await?;
    Ok(accepted(&serde_json::json!({"restore": {
        "backup_id": r.backup_id,
        "volume_id": r.volume_id,
        "volume_name": r.volume_name,
    }})))
}

/// `POST …/backups/{backup_id}/action` (`os-reset_status`, `os-force_delete`) → 202.
pub async fn backup_action(
    State(state): State<AppState>,
    call: Call,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    state
        .lifecycle
        .action(&call.ctx, call.path_param("backup_id"), &body)
        .await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

/// `GET …/backups/{backup_id}/export_record` → 200.
pub async fn export_record(
    State(state): State<AppState>,
    call: Call,
) -> Result<Response, ApiError> {
    let (service, url) = state
        .lifecycle
        .export_record(&call.ctx, call.path_param("backup_id"))
        .await?;
    Ok(json_response(&serde_json::json!({"backup-record": {
        "backup_service": service,
        "backup_url": url,
    }})))
}

/// `POST …/backups/import_record` → 201 with the summary view.
pub async fn import_record(
    State(state): State<AppState>,
    call: Call,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let b = state.lifecycle.import_record(&call.ctx, &body).await?;
    let mut resp = json_response(&OneSummary {
        backup: summary_of(&call, &b),
    });
    *resp.status_mut() = StatusCode::CREATED;
    Ok(resp)
}

#[derive(Serialize)]
struct OneSummary<'a> {
    backup: SummaryView<'a>,
}

fn summary_of<'a>(call: &Call, b: &'a BackupRecord) -> SummaryView<'a> {
    SummaryView {
        id: &b.id,
        name: b.display_name.as_deref(),
        links: call.base.resource_links("backups", &b.id),
    }
}

/// The query pairs handed to the service. On `/v2`, `name` is accepted as a sort key (an
/// alias of `display_name`), as the VBS document promises.
struct ListParams(Option<Vec<(String, String)>>);

impl ListParams {
    fn as_request<'a>(&'a self, call: &'a Call) -> ListRequest<'a> {
        ListRequest {
            params: self.0.as_deref().unwrap_or(&call.params),
            version: call.version.version,
        }
    }
}

fn list_request(call: &Call) -> ListParams {
    if !call.version.legacy_v2 {
        return ListParams(None);
    }
    let rewrite_keys = |v: &str| {
        v.split(',')
            .map(|item| {
                let (key, rest) = item
                    .split_once(':')
                    .map_or((item, None), |(k, d)| (k, Some(d)));
                let key = if key.trim() == "name" {
                    "display_name"
                } else {
                    key
                };
                rest.map_or_else(|| key.to_owned(), |d| format!("{key}:{d}"))
            })
            .collect::<Vec<_>>()
            .join(",")
    };
    ListParams(Some(
        call.params
            .iter()
            .map(|(k, v)| match k.as_str() {
                "sort" | "sort_key" => (k.clone(), rewrite_keys(v)),
                _ => (k.clone(), v.clone()),
            })
            .collect(),
    ))
}

/// Cinder's rule: a `next` link when the page is not empty and the effective limit is at
/// most the reference size (the total count with `with_count`, else the page length).
fn next_links(
    call: &Call,
    path: &str,
    last_id: Option<&str>,
    page_len: usize,
    link_limit: u64,
    count: Option<u64>,
) -> Option<Vec<Link>> {
    let last_id = last_id?;
    let reference = match count {
        Some(c) if c > 0 => c,
        _ => page_len as u64,
    };
    (link_limit <= reference).then(|| vec![call.base.next_link(path, &call.params, last_id)])
}

#[derive(Serialize)]
struct ListView<T> {
    backups: Vec<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    backups_links: Option<Vec<Link>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    count: Option<u64>,
}

#[derive(Serialize)]
struct ShowView<'a> {
    backup: DetailView<'a>,
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = BackupSummary)]
pub(crate) struct SummaryView<'a> {
    id: &'a str,
    name: Option<&'a str>,
    links: [Link; 2],
}

impl<'a> SummaryView<'a> {
    /// The view `summary_list_json` writes by hand: its schema, and the reference its
    /// test compares bytes with.
    #[cfg_attr(not(test), allow(dead_code))]
    fn new(base: &Base, b: &'a BackupSummary) -> Self {
        Self {
            id: &b.id,
            name: b.name.as_deref(),
            links: base.resource_links("backups", &b.id),
        }
    }
}

/// The all-zero key id Cinder uses for "no real key"; never shown.
const FIXED_KEY: &str = "00000000-0000-0000-0000-000000000000";

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = BackupDetail)]
pub(crate) struct DetailView<'a> {
    id: &'a str,
    status: &'a str,
    size: i64,
    object_count: i64,
    availability_zone: Option<&'a str>,
    container: Option<&'a str>,
    created_at: String,
    updated_at: Option<String>,
    name: Option<&'a str>,
    description: Option<&'a str>,
    fail_reason: Option<&'a str>,
    volume_id: &'a str,
    links: [Link; 2],
    is_incremental: bool,
    has_dependent_backups: bool,
    snapshot_id: Option<&'a str>,
    data_timestamp: String,
    #[serde(
        rename = "os-backup-project-attr:project_id",
        skip_serializing_if = "Option::is_none"
    )]
    project_attr: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<&'a std::collections::BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    user_id: Option<Option<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    encryption_key_id: Option<&'a str>,
    #[serde(
        rename = "os-bak-tenant-attr:tenant_id",
        skip_serializing_if = "Option::is_none"
    )]
    tenant_attr: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    service_metadata: Option<Option<&'a str>>,
    /// How far a running backup or restore is (docs/api.md): `bytes_done`,
    /// `bytes_total`, `bytes_per_second`. Clients ignore keys they do not know.
    #[serde(rename = "os-vbs:progress", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    progress: Option<serde_json::Value>,
    /// VBS tags (`/cloudbackups` create), on the VBS-documented v2 views only.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    tags: Option<Vec<serde_json::Value>>,
}

/// The v2 views' `tags` of each backup in `ids` (empty lists included).
async fn v2_tags(
    state: &AppState,
    ids: Vec<String>,
) -> Result<std::collections::BTreeMap<String, Vec<serde_json::Value>>, ApiError> {
    let mut tags = state
        .lifecycle
        .catalog()
        .backup_tags_for(&ids)
        .await
        .map_err(vbs_service::Error::from)?;
    Ok(ids
        .into_iter()
        .map(|id| {
            let list = tags
                .remove(&id)
                .unwrap_or_default()
                .into_iter()
                .map(|(key, value)| serde_json::json!({"key": key, "value": value}))
                .collect();
            (id, list)
        })
        .collect())
}

impl<'a> DetailView<'a> {
    fn new(call: &Call, b: &'a BackupRecord) -> Self {
        let v = call.version.version;
        let legacy = call.version.legacy_v2;
        let admin = call.ctx.is_admin();
        // The project attribute: admin or owner (VBS shows it to tenants).
        let project_visible = admin || b.project_id == call.ctx.project_id;
        Self {
            id: &b.id,
            status: &b.status,
            size: b.size,
            object_count: b.object_count,
            availability_zone: b.availability_zone.as_deref(),
            container: b.container.as_deref(),
            created_at: ts::format_api(b.created_at),
            updated_at: b.updated_at.map(ts::format_api),
            name: b.display_name.as_deref(),
            description: b.display_description.as_deref(),
            fail_reason: b.fail_reason.as_deref(),
            volume_id: &b.volume_id,
            links: call.base.resource_links("backups", &b.id),
            is_incremental: b.parent_id.is_some(),
            has_dependent_backups: b.num_dependent_backups > 0,
            snapshot_id: b.snapshot_id.as_deref(),
            data_timestamp: ts::format_api(b.data_timestamp.unwrap_or(b.created_at)),
            project_attr: (!legacy && v.at_least(Microversion::PROJECT_ATTR) && project_visible)
                .then_some(b.project_id.as_str()),
            metadata: (!legacy && v.at_least(Microversion::METADATA)).then_some(&b.metadata),
            user_id: (!legacy && v.at_least(Microversion::USER_ID) && admin)
                .then_some(b.user_id.as_deref()),
            encryption_key_id: if !legacy && v.at_least(Microversion::ENCRYPTION_KEY) {
                b.encryption_key_id.as_deref().filter(|k| *k != FIXED_KEY)
            } else {
                None
            },
            tenant_attr: (legacy && project_visible).then_some(b.project_id.as_str()),
            service_metadata: legacy.then_some(b.service_metadata.as_deref()),
            progress: None,
            tags: None,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// The hand-written founding list is byte for byte what `serde_json` makes of
        /// the views, whatever the names, ids, host and project hold.
        #[test]
        fn summary_list_is_what_serde_writes(
            rows in proptest::collection::vec(("[0-9a-f-]{36}|.{0,8}", proptest::option::of(".{0,20}|[a-z \"\\\\\u{0}-\u{1f}]{0,8}")), 0..6),
            origin in "http://[a-z0-9.:]{1,20}|http://[ -~]{0,12}",
            project in proptest::option::of("[0-9a-f]{32}|[ -~]{0,6}"),
            legacy in any::<bool>(),
            count in proptest::option::of(0u64..5000),
            next in any::<bool>(),
        ) {
            let base = Base { origin, version_segment: if legacy { "v2" } else { "v3" }, url_project: project };
            let items: Vec<BackupSummary> = rows
                .into_iter()
                .map(|(id, name)| BackupSummary { id, name })
                .collect();
            let links = next.then(|| vec![Link { rel: "next", href: format!("{}/v3/backups?marker=x\"", base.origin) }]);
            let reference = serde_json::to_vec(&ListView {
                backups: items.iter().map(|b| SummaryView::new(&base, b)).collect::<Vec<_>>(),
                backups_links: links.as_ref().map(|l| l.iter().map(|k| Link { rel: k.rel, href: k.href.clone() }).collect()),
                count,
            }).unwrap();
            let ours = summary_list_json(&base, &items, links.as_deref(), count);
            prop_assert_eq!(String::from_utf8(ours).unwrap(), String::from_utf8(reference).unwrap());
        }
    }
}
