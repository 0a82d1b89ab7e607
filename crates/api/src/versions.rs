//! Version discovery (spec 02 §2): `GET /` (300) and `GET /v3`, `/v3/` (200), served
//! without a token. Clients need the `self` link to negotiate microversions.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use vbs_service::Microversion;

use crate::AppState;
use crate::links::Base;
use crate::version::ApiVersion;

/// The date of the newest microversion (Cinder's for 3.71).
const UPDATED: &str = "2023-08-31T00:00:00Z";

fn document(state: &AppState, headers: &HeaderMap) -> Value {
    let base = Base::new(
        headers,
        state.public_endpoint.as_deref(),
        ApiVersion {
            version: Microversion::MIN,
            legacy_v2: false,
        },
        None,
    );
    let entry = |id: &str,
                 status: &str,
                 version: String,
                 min: String,
                 updated: &str,
                 seg: &str,
                 media: &str| {
        json!({
            "id": id,
            "status": status,
            "version": version,
            "min_version": min,
            "updated": updated,
            "links": [
                {"rel": "describedby", "type": "text/html", "href": "https://docs.openstack.org/"},
                {"rel": "self", "href": base.version_root(seg)},
            ],
            "media-types": [
                {"base": "application/json", "type": format!("application/vnd.openstack.volume+json;version={media}")}
            ],
        })
    };
    json!({"versions": [
        entry("v2.0", "DEPRECATED", String::new(), String::new(), "2017-02-25T12:00:00Z", "v2", "2"),
        entry("v3.0", "CURRENT", Microversion::MAX.to_string(), Microversion::MIN.to_string(), UPDATED, "v3", "3"),
    ]})
}

/// `GET /`.
pub async fn root(State(state): State<AppState>, headers: HeaderMap) -> Response {
    (
        StatusCode::MULTIPLE_CHOICES,
        axum::Json(document(&state, &headers)),
    )
        .into_response()
}

/// `GET /v3`, `GET /v3/`: the v3.0 entry alone, as Cinder answers (tempest checks it).
pub async fn v3(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let mut doc = document(&state, &headers);
    if let Some(list) = doc["versions"].as_array_mut() {
        list.retain(|v| v["id"] == "v3.0");
    }
    (StatusCode::OK, axum::Json(doc)).into_response()
}

/// `GET /healthcheck`: the catalog answers.
pub async fn healthcheck(State(state): State<AppState>) -> Response {
    match state.backups.catalog().ping().await {
        Ok(()) => (StatusCode::OK, "OK").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "health check failed");
            (StatusCode::SERVICE_UNAVAILABLE, "catalog unavailable").into_response()
        }
    }
}
