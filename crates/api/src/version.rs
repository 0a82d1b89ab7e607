//! Microversion negotiation (spec 02 §1): parse `OpenStack-API-Version` on `/v3` paths,
//! refuse what is malformed (400) or out of range (406), and stamp the served version
//! on every `/v3` response, errors included.

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use vbs_service::Microversion;

use crate::error::{ApiError, GENERIC_400};

/// The version a request is served at, in the request's extensions.
#[derive(Debug, Clone, Copy)]
pub struct ApiVersion {
    pub version: Microversion,
    /// `/v2/…`: the deprecated API, served with 3.0 behaviour and no version headers.
    pub legacy_v2: bool,
}

const HEADER: &str = "openstack-api-version";

/// What the header asked for.
enum Requested {
    Absent,
    Version(Microversion),
    /// Syntax error; the message is the fault text.
    Malformed(String),
}

fn requested(headers: &HeaderMap) -> Requested {
    let values: Vec<&str> = headers
        .get_all(HEADER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if values.is_empty() {
        return Requested::Absent;
    }
    let joined = values.join(",");
    let Some(item) = joined.split(',').find(|item| item.contains("volume")) else {
        return Requested::Malformed(GENERIC_400.into());
    };
    let tokens: Vec<&str> = item.split_whitespace().collect();
    let [_service, version] = tokens.as_slice() else {
        return Requested::Malformed(GENERIC_400.into());
    };
    if *version == "latest" {
        return Requested::Version(Microversion::MAX);
    }
    match Microversion::parse(version) {
        Some(v) => Requested::Version(v),
        None => Requested::Malformed(format!(
            "API Version String {version} is of invalid format. Must be of format MajorNum.MinorNum."
        )),
    }
}

fn stamp(resp: &mut Response, version: Microversion) {
    if let Ok(v) = HeaderValue::from_str(&format!("volume {version}")) {
        resp.headers_mut().insert(HEADER, v);
        resp.headers_mut()
            .insert("vary", HeaderValue::from_static("OpenStack-API-Version"));
    }
}

/// Middleware: negotiates the version of `/v3` requests; `/v2` gets 3.0 silently.
pub async fn negotiate(mut req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let v3 = path == "/v3" || path.starts_with("/v3/");
    if !v3 {
        let legacy_v2 = path == "/v2" || path.starts_with("/v2/");
        req.extensions_mut().insert(ApiVersion {
            version: Microversion::MIN,
            legacy_v2,
        });
        return next.run(req).await;
    }
    let version = match requested(req.headers()) {
        Requested::Absent => Microversion::MIN,
        Requested::Version(v) if v < Microversion::MIN || v > Microversion::MAX => {
            let mut resp = ApiError::Fault(
                StatusCode::NOT_ACCEPTABLE,
                format!(
                    "Version {v} is not supported by the API. Minimum is {} and maximum is {}.",
                    Microversion::MIN,
                    Microversion::MAX
                ),
            )
            .into_response();
            stamp(&mut resp, v);
            return resp;
        }
        Requested::Version(v) => v,
        Requested::Malformed(msg) => return ApiError::bad_request(msg).into_response(),
    };
    req.extensions_mut().insert(ApiVersion {
        version,
        legacy_v2: false,
    });
    let mut resp = next.run(req).await;
    stamp(&mut resp, version);
    resp
}

/// Property tests (issue 16): any `OpenStack-API-Version` header is a version, absent,
/// or a 400's message; never a panic.
#[cfg(test)]
mod fuzz {
    use axum::http::{HeaderMap, HeaderValue};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_header_is_read_without_panic(values in proptest::collection::vec("[ -~]{0,32}", 0..3)) {
            let mut headers = HeaderMap::new();
            for v in &values {
                if let Ok(v) = HeaderValue::from_str(v) {
                    headers.append(super::HEADER, v);
                }
            }
            let _ = super::requested(&headers);
        }
    }
}
