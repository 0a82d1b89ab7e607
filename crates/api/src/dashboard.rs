//! `GET /dashboard`: a static page (and its script and style, compiled into the binary)
//! that signs in with the caller's token and shows the project through the service's
//! own APIs. The assets need no token; everything they show comes from authenticated
//! API calls. `GET /` stays the version document clients need.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

const INDEX: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/app.js");
const STYLE: &str = include_str!("dashboard/app.css");

/// Only the page's own files run or load; no frames, no inline script.
const POLICY: &str = "default-src 'self'; frame-ancestors 'none'; form-action 'self'";

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

pub fn routes(r: crate::openapi::Routes) -> crate::openapi::Routes {
    r.route(
        "/dashboard",
        get(|| async { asset(INDEX, "text/html; charset=utf-8") }),
    )
    .route(
        "/dashboard/",
        get(|| async { asset(INDEX, "text/html; charset=utf-8") }),
    )
    .route(
        "/dashboard/app.js",
        get(|| async { asset(SCRIPT, "text/javascript; charset=utf-8") }),
    )
    .route(
        "/dashboard/app.css",
        get(|| async { asset(STYLE, "text/css; charset=utf-8") }),
    )
}
