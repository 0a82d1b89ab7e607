//! Token validation against Keystone v3, as keystonemiddleware does it: vbs holds a
//! service token (password auth, renewed before it expires or when Keystone refuses it)
//! and asks `GET /v3/auth/tokens` with the user's token in `X-Subject-Token`. Answers
//! are cached until the token expires or `token_cache_ttl` passes, whichever is first,
//! so a revoked token stops working within that time.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use vbs_service::{Context, Role};

use crate::error::ApiError;

fn default_domain() -> String {
    "Default".into()
}

fn default_ttl() -> Duration {
    Duration::from_secs(60)
}

/// A secret string: never printed.
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("****")
    }
}

/// The `[keystone]` section of the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeystoneOptions {
    /// Identity endpoint, e.g. `http://127.0.0.1:5000/v3`.
    pub auth_url: String,
    /// The service user vbs validates tokens as (needs the `service` or `admin` role).
    pub username: String,
    #[serde(default)]
    pub password: Secret,
    pub project_name: String,
    #[serde(default = "default_domain")]
    pub user_domain_name: String,
    #[serde(default = "default_domain")]
    pub project_domain_name: String,
    /// Longest time a validated token is trusted without asking Keystone again.
    #[serde(default = "default_ttl", with = "humantime_serde")]
    pub token_cache_ttl: Duration,
    /// What 401 answers name in `WWW-Authenticate` (default: `auth_url`).
    #[serde(default)]
    pub www_authenticate_uri: Option<String>,
}

/// Most tokens cached at once; past it, expired entries go, then everything.
const CACHE_MAX: usize = 50_000;
/// A service token this close to expiry is renewed first.
const RENEW_MARGIN: Duration = Duration::from_secs(60);

pub struct Keystone {
    opts: KeystoneOptions,
    base: String,
    http: reqwest::Client,
    service_token: tokio::sync::Mutex<Option<(String, Instant)>>,
    cache: Mutex<HashMap<String, (Context, Instant)>>,
}

impl fmt::Debug for Keystone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keystone")
            .field("auth_url", &self.base)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct TokenBody {
    token: TokenInfo,
}

#[derive(Deserialize)]
struct TokenInfo {
    expires_at: String,
    user: Named,
    project: Option<Named>,
    #[serde(default)]
    roles: Vec<Named>,
}

#[derive(Deserialize)]
struct Named {
    #[serde(default)]
    id: String,
    #[serde(default)]
    name: String,
}

/// Time left until an ISO 8601 instant, as a monotonic deadline.
fn deadline(expires_at: &str) -> Option<Instant> {
    let at = vbs_catalog::ts::parse(expires_at)?;
    let left = at - vbs_catalog::ts::now_micros();
    let left = Duration::from_micros(u64::try_from(left).unwrap_or(0));
    Some(Instant::now() + left)
}

fn unavailable(what: impl fmt::Display) -> ApiError {
    tracing::error!(error = %what, "identity service unavailable");
    ApiError::Fault(
        StatusCode::SERVICE_UNAVAILABLE,
        "The identity service is unavailable; retry later.".into(),
    )
}

impl Keystone {
    pub fn new(opts: KeystoneOptions) -> Result<Self, String> {
        let trimmed = opts.auth_url.trim_end_matches('/');
        let base = if trimmed.ends_with("/v3") {
            trimmed.to_owned()
        } else {
            format!("{trimmed}/v3")
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(3))
            .build()
            .map_err(|e| format!("HTTP client for Keystone: {e}"))?;
        Ok(Self {
            opts,
            base,
            http,
            service_token: tokio::sync::Mutex::new(None),
            cache: Mutex::new(HashMap::new()),
        })
    }

    pub fn unauthorized(&self) -> ApiError {
        let uri = self
            .opts
            .www_authenticate_uri
            .as_deref()
            .unwrap_or(&self.opts.auth_url);
        ApiError::Unauthorized {
            www_authenticate: Some(format!("Keystone uri=\"{uri}\"")),
        }
    }

    /// The user's context for a token, or 401.
    pub async fn validate(&self, token: &str) -> Result<Context, ApiError> {
        if let Some(ctx) = self.cached(token) {
            return Ok(ctx);
        }
        let mut renewed = false;
        loop {
            let service = self.service_token(renewed).await?;
            let resp = self
                .http
                .get(format!("{}/auth/tokens", self.base))
                .header("X-Auth-Token", service)
                .header("X-Subject-Token", token)
                .send()
                .await
                .map_err(unavailable)?;
            match resp.status() {
                StatusCode::OK => {
                    let body: TokenBody = resp.json().await.map_err(unavailable)?;
                    return self.accept(token, body.token);
                }
                // Our own token was refused: renew it once.
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN if !renewed => renewed = true,
                StatusCode::NOT_FOUND | StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                    return Err(self.unauthorized());
                }
                other => return Err(unavailable(format!("token validation answered {other}"))),
            }
        }
    }

    fn cached(&self, token: &str) -> Option<Context> {
        let cache = self.cache.lock().ok()?;
        let (ctx, until) = cache.get(token)?;
        (Instant::now() < *until).then(|| ctx.clone())
    }

    fn accept(&self, token: &str, info: TokenInfo) -> Result<Context, ApiError> {
        // Only project-scoped tokens reach project resources.
        let Some(project) = info.project.filter(|p| !p.id.is_empty()) else {
            return Err(self.unauthorized());
        };
        let expires = deadline(&info.expires_at).ok_or_else(|| self.unauthorized())?;
        if expires <= Instant::now() {
            return Err(self.unauthorized());
        }
        let mut roles = Vec::new();
        for r in &info.roles {
            let role = match r.name.to_ascii_lowercase().as_str() {
                "admin" => Role::Admin,
                "member" | "_member_" => Role::Member,
                "reader" => Role::Reader,
                _ => continue,
            };
            if !roles.contains(&role) {
                roles.push(role);
            }
        }
        let ctx = Context {
            user_id: info.user.id,
            project_id: project.id,
            roles,
        };
        let until = expires.min(Instant::now() + self.opts.token_cache_ttl);
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHE_MAX {
                let now = Instant::now();
                cache.retain(|_, (_, u)| *u > now);
                if cache.len() >= CACHE_MAX {
                    cache.clear();
                }
            }
            cache.insert(token.to_owned(), (ctx.clone(), until));
        }
        Ok(ctx)
    }

    /// vbs's own token, fetched when missing, near expiry, or after a refusal.
    async fn service_token(&self, force: bool) -> Result<String, ApiError> {
        let mut slot = self.service_token.lock().await;
        if !force
            && let Some((tok, until)) = slot.as_ref()
            && Instant::now() + RENEW_MARGIN < *until
        {
            return Ok(tok.clone());
        }
        let body = json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": self.opts.username,
                "domain": {"name": self.opts.user_domain_name},
                "password": self.opts.password.0,
            }}},
            "scope": {"project": {
                "name": self.opts.project_name,
                "domain": {"name": self.opts.project_domain_name},
            }}
        }});
        let resp = self
            .http
            .post(format!("{}/auth/tokens", self.base))
            .json(&body)
            .send()
            .await
            .map_err(unavailable)?;
        if !resp.status().is_success() {
            return Err(unavailable(format!(
                "service user authentication answered {}",
                resp.status()
            )));
        }
        let tok = resp
            .headers()
            .get("x-subject-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| unavailable("no X-Subject-Token in Keystone's answer"))?;
        let info: Value = resp.json().await.map_err(unavailable)?;
        let until = info["token"]["expires_at"]
            .as_str()
            .and_then(deadline)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(300));
        *slot = Some((tok.clone(), until));
        Ok(tok)
    }
}
