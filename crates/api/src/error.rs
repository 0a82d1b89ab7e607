//! The one place that knows HTTP statuses: every error becomes Cinder's fault envelope
//! `{"<fault>": {"code": <status>, "message": "…"}}`. 5xx bodies say nothing internal;
//! the detail is logged with the request id.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An error on its way to the client.
#[derive(Debug)]
pub enum ApiError {
    /// A Cinder fault: status and message.
    Fault(StatusCode, String),
    /// Missing or invalid token: the auth layer's own body, not a fault.
    Unauthorized { www_authenticate: Option<String> },
    /// A VBS extension API's error: `{"error": {"code": "<VBS code>", "message": …}}`,
    /// its status chosen from the code (spec 03 §6, [`crate::vbs::status_of`]).
    Vbs(&'static str, String),
    /// Logged in full, answered with the generic 500 text.
    Internal(String),
}

pub const GENERIC_400: &str = "The server could not comply with the request since it is either malformed or otherwise incorrect.";
pub const GENERIC_404: &str = "The resource could not be found.";
const GENERIC_500: &str =
    "The server has either erred or is incapable of performing the requested operation.";

impl ApiError {
    pub fn bad_request(msg: impl Into<String>) -> Self {
        ApiError::Fault(StatusCode::BAD_REQUEST, msg.into())
    }

    pub fn not_found(msg: impl Into<String>) -> Self {
        ApiError::Fault(StatusCode::NOT_FOUND, msg.into())
    }

    /// Cinder's fault name for a status.
    fn fault_name(status: StatusCode) -> &'static str {
        match status.as_u16() {
            400 => "badRequest",
            401 => "unauthorized",
            403 => "forbidden",
            404 => "itemNotFound",
            405 => "badMethod",
            409 => "conflictingRequest",
            413 => "overLimit",
            415 => "badMediaType",
            501 => "notImplemented",
            503 => "serviceUnavailable",
            _ => "computeFault",
        }
    }
}

impl From<vbs_service::Error> for ApiError {
    fn from(e: vbs_service::Error) -> Self {
        use vbs_service::Error as E;
        match e {
            E::NotFound(m) => ApiError::Fault(StatusCode::NOT_FOUND, m),
            E::Invalid(m) => ApiError::Fault(StatusCode::BAD_REQUEST, m),
            e @ E::Forbidden(_) => ApiError::Fault(StatusCode::FORBIDDEN, e.to_string()),
            E::OverQuota { message, .. } => ApiError::Fault(StatusCode::PAYLOAD_TOO_LARGE, message),
            E::Vbs { code, message } => ApiError::Vbs(code, message),
            E::Unavailable(detail) => {
                tracing::error!(%detail, "dependency unavailable");
                ApiError::Fault(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The service is temporarily unavailable; retry later.".into(),
                )
            }
            E::Internal(detail) => ApiError::Internal(detail),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Fault(status, message) => {
                let mut fault = json!({ "code": status.as_u16(), "message": message });
                if status == StatusCode::PAYLOAD_TOO_LARGE {
                    fault["retryAfter"] = json!("0");
                }
                let body = json!({ Self::fault_name(status): fault });
                let mut resp = (status, axum::Json(body)).into_response();
                if status == StatusCode::PAYLOAD_TOO_LARGE {
                    // Cinder's OverLimit fault: retry after 0 seconds (header and body).
                    resp.headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from_static("0"));
                }
                resp
            }
            ApiError::Vbs(code, message) => {
                let status = crate::vbs::status_of(code);
                if status.is_server_error() {
                    tracing::error!(code, %message, "VBS request failed");
                }
                let body = json!({"error": {"code": code, "message": message}});
                (status, axum::Json(body)).into_response()
            }
            ApiError::Unauthorized { www_authenticate } => {
                let body = json!({"error": {
                    "code": 401,
                    "title": "Unauthorized",
                    "message": "The request you have made requires authentication."
                }});
                let mut resp = (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
                if let Some(v) = www_authenticate.and_then(|v| HeaderValue::from_str(&v).ok()) {
                    resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
                }
                resp
            }
            ApiError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                ApiError::Fault(StatusCode::INTERNAL_SERVER_ERROR, GENERIC_500.into())
                    .into_response()
            }
        }
    }
}
