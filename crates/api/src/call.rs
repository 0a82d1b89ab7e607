//! What every resource handler needs from a request, checked once: the caller, the
//! served version, the URL's project (which must be the token's), the query pairs and
//! the base for links.

use axum::extract::{FromRequestParts, RawPathParams};
use axum::http::request::Parts;
use vbs_service::Context;

use crate::AppState;
use crate::error::{ApiError, GENERIC_404};
use crate::links::Base;
use crate::version::ApiVersion;

pub struct Call {
    pub ctx: Context,
    pub version: ApiVersion,
    pub base: Base,
    /// Query pairs in request order, decoded as a form (`+` is a space).
    pub params: Vec<(String, String)>,
    /// Raw path parameters other than the project (e.g. `backup_id`).
    pub path: Vec<(String, String)>,
}

impl Call {
    pub fn path_param(&self, name: &str) -> &str {
        self.path
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }
}

impl FromRequestParts<AppState> for Call {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let ctx = parts
            .extensions
            .get::<Context>()
            .cloned()
            .ok_or(ApiError::Unauthorized {
                www_authenticate: None,
            })?;
        let version = parts
            .extensions
            .get::<ApiVersion>()
            .copied()
            .ok_or_else(|| ApiError::Internal("no API version on the request".into()))?;
        let raw = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::not_found(GENERIC_404))?;
        let mut url_project = None;
        let mut path = Vec::new();
        for (k, v) in &raw {
            if k == "project_id" {
                url_project = Some(v.to_owned());
            } else {
                path.push((k.to_owned(), v.to_owned()));
            }
        }
        if let Some(p) = &url_project {
            if !vbs_service::schema::is_project_id(p) {
                return Err(ApiError::not_found(GENERIC_404));
            }
            if *p != ctx.project_id {
                return Err(ApiError::bad_request("Malformed request url"));
            }
        }
        let params = parts
            .uri
            .query()
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        let base = Base::new(
            &parts.headers,
            state.public_endpoint.as_deref(),
            version,
            url_project,
        );
        Ok(Call {
            ctx,
            version,
            base,
            params,
            path,
        })
    }
}
