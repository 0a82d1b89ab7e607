//! Authentication: every request but version discovery carries `X-Auth-Token`, which
//! becomes a [`Context`] (user, project, roles) in the request's extensions.
//!
//! * `noauth` (development and tests): the token is `USER:PROJECT` (a token without a
//!   colon names a user whose project has the same id, as Cinder's noauth does). The
//!   user is a member and reader of the project; the user `admin` is also admin. Unlike
//!   Cinder's noauth, which makes everyone admin, this exercises the real member paths.
//!   `USER:PROJECT:ROLES` names the roles instead (comma-separated `admin`, `member`,
//!   `reader`; empty for none), to exercise the policy table.
//! * `keystone`: the token is validated against Keystone v3 (see [`crate::keystone`]).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use vbs_service::{Context, Role};

use crate::AppState;
use crate::error::ApiError;
use crate::keystone::Keystone;

/// How tokens are checked.
#[derive(Debug)]
pub enum Authenticator {
    NoAuth,
    Keystone(Arc<Keystone>),
}

impl Authenticator {
    async fn authenticate(&self, token: &str) -> Result<Context, ApiError> {
        match self {
            Authenticator::NoAuth => noauth_context(token).ok_or(ApiError::Unauthorized {
                www_authenticate: None,
            }),
            Authenticator::Keystone(k) => k.validate(token).await,
        }
    }
}

fn noauth_context(token: &str) -> Option<Context> {
    let mut parts = token.splitn(3, ':');
    let user = parts.next().unwrap_or_default();
    let project = parts.next().unwrap_or(user);
    if user.is_empty() || project.is_empty() {
        return None;
    }
    let roles = match parts.next() {
        Some(list) => list
            .split(',')
            .filter_map(|r| match r.trim() {
                "admin" => Some(Role::Admin),
                "member" => Some(Role::Member),
                "reader" => Some(Role::Reader),
                _ => None,
            })
            .collect(),
        None if user == "admin" => vec![Role::Admin, Role::Member, Role::Reader],
        None => vec![Role::Member, Role::Reader],
    };
    Some(Context {
        user_id: user.to_owned(),
        project_id: project.to_owned(),
        roles,
    })
}

/// Paths served without a token (clients discover versions before authenticating).
fn is_public(path: &str) -> bool {
    matches!(
        path,
        "/" | "/v3" | "/v3/" | "/v2" | "/v2/" | "/healthcheck" | "/openapi.json"
    )
        // The dashboard's own files; what it shows comes from authenticated calls.
        || matches!(
            path,
            "/dashboard" | "/dashboard/" | "/dashboard/app.js" | "/dashboard/app.css"
        )
}

/// Middleware: authenticates the request or answers 401.
pub async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let token = req
        .headers()
        .get("x-auth-token")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned);
    if is_public(req.uri().path()) {
        return next.run(req).await;
    }
    // The policy APIs say why in their own codes (spec 03 §6.5).
    let policy_path = req.uri().path().contains("/backuppolicy");
    let Some(token) = token else {
        let e = state.auth.unauthorized();
        return if policy_path {
            vbs_unauthorized(e, "AutoBackup.0002", "The request carries no token.")
        } else {
            e.into_response()
        };
    };
    match state.auth.authenticate(&token).await {
        Ok(ctx) => {
            let span = tracing::Span::current();
            span.record("project", ctx.project_id.as_str());
            span.record("user", ctx.user_id.as_str());
            req.extensions_mut().insert(ctx);
            next.run(req).await
        }
        Err(e @ ApiError::Unauthorized { .. }) if policy_path => {
            vbs_unauthorized(e, "AutoBackup.0003", "The token is invalid or has expired.")
        }
        Err(e) => e.into_response(),
    }
}

/// A 401 of the policy APIs: VBS's envelope, with the auth layer's
/// `WWW-Authenticate` kept.
fn vbs_unauthorized(e: ApiError, code: &'static str, message: &str) -> Response {
    let challenge = e
        .into_response()
        .headers()
        .get(axum::http::header::WWW_AUTHENTICATE)
        .cloned();
    let mut resp = ApiError::Vbs(code, message.into()).into_response();
    if let Some(v) = challenge {
        resp.headers_mut()
            .insert(axum::http::header::WWW_AUTHENTICATE, v);
    }
    resp
}

impl Authenticator {
    fn unauthorized(&self) -> ApiError {
        match self {
            Authenticator::NoAuth => ApiError::Unauthorized {
                www_authenticate: None,
            },
            Authenticator::Keystone(k) => k.unauthorized(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noauth_tokens() {
        let c = noauth_context("alice:abc123").unwrap();
        assert_eq!(
            (c.user_id.as_str(), c.project_id.as_str()),
            ("alice", "abc123")
        );
        assert!(!c.is_admin() && c.can_write());
        assert!(noauth_context("admin:abc").unwrap().is_admin());
        assert_eq!(noauth_context("bob").unwrap().project_id, "bob");
        assert!(noauth_context(":abc").is_none());
        assert!(noauth_context("bob:").is_none());
        let r = noauth_context("carol:abc:reader").unwrap();
        assert!(r.can_read() && !r.can_write() && !r.is_admin());
        assert!(!noauth_context("dave:abc:").unwrap().can_read());
    }
}
