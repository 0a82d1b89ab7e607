//! The Swift backend: `OpenDAL`'s `services-swift` for the objects, with the parts it
//! lacks done here: authentication (tempauth v1 and Keystone v3 password), token
//! refresh, and creating the container.
//!
//! `OpenDAL`'s Swift service takes a fixed token, so a new token means a new `Operator`.
//! The current one lives in a [`Session`] behind a lock; a request that fails with
//! 401/403 (`PermissionDenied`) re-authenticates once and is retried once, and a
//! Keystone (or tempauth) token is replaced shortly before it expires. Concurrent
//! requests that all see the old token re-authenticate only once (the generation
//! check in [`Swift::refresh`]).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use opendal::{ErrorKind, Operator, services};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::StatusCode;
use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::location::{SwiftAuthKind, SwiftTarget};
use crate::{Credentials, StoreError, net};

/// Path characters left as they are in a container name we put in a URL.
const PATH: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// How long before a token's expiry it is replaced (at most half its lifetime).
const REFRESH_MARGIN: Duration = Duration::from_mins(5);
/// After a failed planned refresh, how long requests go on with the old token before
/// the next attempt.
const RENEW_RETRY: Duration = Duration::from_secs(30);

/// What we authenticate with.
enum Auth {
    Tempauth { user: String, key: String },
    Keystone(Keystone),
}

struct Keystone {
    username: String,
    password: String,
    project_name: String,
    user_domain_name: String,
    project_domain_name: String,
    region_name: Option<String>,
    interface: String,
}

/// A token and where to use it.
struct Token {
    value: String,
    storage_url: String,
    /// How long the token is valid from now, when the auth service said.
    lifetime: Option<Duration>,
}

/// The operator of the current token.
struct Session {
    op: Operator,
    storage_url: String,
    /// Counts re-authentications; a request that failed with generation `g` refreshes
    /// only if the session is still at `g`.
    generation: u64,
    /// Replace the token at this moment, before it expires.
    refresh_at: Option<Instant>,
}

pub(crate) struct Swift {
    target: SwiftTarget,
    auth: Auth,
    client: reqwest::Client,
    session: RwLock<Arc<Session>>,
    refresh_lock: tokio::sync::Mutex<()>,
    authentications: AtomicU64,
}

impl Swift {
    /// Authenticates, creates the container if it is missing, and builds the operator.
    pub(crate) async fn open(
        target: SwiftTarget,
        creds: &Credentials,
        client: reqwest::Client,
    ) -> Result<Self, StoreError> {
        let auth = match target.auth {
            SwiftAuthKind::Tempauth => Auth::Tempauth {
                user: need(creds.user.as_ref(), "swift+tempauth", "user", "ST_USER")?,
                key: need(creds.key.as_ref(), "swift+tempauth", "key", "ST_KEY")?,
            },
            SwiftAuthKind::Keystone => Auth::Keystone(Keystone {
                username: need(
                    creds.username.as_ref(),
                    "swift+keystone",
                    "username",
                    "OS_USERNAME",
                )?,
                password: need(
                    creds.password.as_ref(),
                    "swift+keystone",
                    "password",
                    "OS_PASSWORD",
                )?,
                project_name: need(
                    creds.project_name.as_ref(),
                    "swift+keystone",
                    "project_name",
                    "OS_PROJECT_NAME",
                )?,
                user_domain_name: creds
                    .user_domain_name
                    .clone()
                    .unwrap_or_else(|| "Default".to_owned()),
                project_domain_name: creds
                    .project_domain_name
                    .clone()
                    .unwrap_or_else(|| "Default".to_owned()),
                region_name: creds.region_name.clone(),
                interface: creds
                    .interface
                    .clone()
                    .unwrap_or_else(|| "public".to_owned()),
            }),
        };
        let token = authenticate(&client, &target, &auth).await?;
        ensure_container(&client, &target, &token).await?;
        let session = session_for(&client, &target, &token, 1)?;
        Ok(Self {
            target,
            auth,
            client,
            session: RwLock::new(Arc::new(session)),
            refresh_lock: tokio::sync::Mutex::new(()),
            authentications: AtomicU64::new(1),
        })
    }

    pub(crate) fn location(&self) -> String {
        self.target.location()
    }

    /// Runs `f` with the current operator; on `PermissionDenied` re-authenticates and
    /// runs it once more.
    pub(crate) async fn run<T, F, Fut>(&self, key: &str, f: F) -> Result<T, StoreError>
    where
        F: Fn(Operator) -> Fut,
        Fut: Future<Output = opendal::Result<T>>,
    {
        let mut session = self.current();
        if session.refresh_at.is_some_and(|at| Instant::now() >= at) {
            tracing::debug!(location = %self.location(), "token about to expire; re-authenticating");
            match self.refresh(session.generation).await {
                Ok(fresh) => session = fresh,
                // The old token still has minutes to live: use it, and try again later
                // rather than making every request wait for a failing auth service.
                Err(e) => {
                    tracing::warn!(
                        location = %self.location(),
                        error = %e,
                        "could not renew the token before it expires; retrying in {}s",
                        RENEW_RETRY.as_secs()
                    );
                    self.postpone_refresh(session.generation);
                }
            }
        }
        match f(session.op.clone()).await {
            Err(e) if e.kind() == ErrorKind::PermissionDenied => {
                tracing::info!(
                    location = %self.location(),
                    "object store refused the token; re-authenticating and retrying once"
                );
                let session = self.refresh(session.generation).await?;
                f(session.op.clone())
                    .await
                    .map_err(|e| StoreError::from_opendal(key, e))
            }
            result => result.map_err(|e| StoreError::from_opendal(key, e)),
        }
    }

    fn current(&self) -> Arc<Session> {
        self.session
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// A fresh session, unless another request already replaced `seen`.
    async fn refresh(&self, seen: u64) -> Result<Arc<Session>, StoreError> {
        let _guard = self.refresh_lock.lock().await;
        let current = self.current();
        if current.generation != seen {
            return Ok(current);
        }
        let token = authenticate(&self.client, &self.target, &self.auth).await?;
        self.authentications.fetch_add(1, Ordering::Relaxed);
        let session = Arc::new(session_for(&self.client, &self.target, &token, seen + 1)?);
        *self.session.write().unwrap_or_else(PoisonError::into_inner) = session.clone();
        Ok(session)
    }

    /// Moves the planned refresh of session `seen` [`RENEW_RETRY`] ahead.
    fn postpone_refresh(&self, seen: u64) {
        let mut slot = self.session.write().unwrap_or_else(PoisonError::into_inner);
        if slot.generation == seen {
            *slot = Arc::new(Session {
                op: slot.op.clone(),
                storage_url: slot.storage_url.clone(),
                generation: seen,
                refresh_at: Some(Instant::now() + RENEW_RETRY),
            });
        }
    }

    /// How many times this store has authenticated (for tests).
    pub(crate) fn authentications(&self) -> u64 {
        self.authentications.load(Ordering::Relaxed)
    }

    /// Makes the current token due for replacement now (for tests of the planned
    /// refresh).
    pub(crate) fn expire_token(&self) {
        let current = self.current();
        let due = Arc::new(Session {
            op: current.op.clone(),
            storage_url: current.storage_url.clone(),
            generation: current.generation,
            refresh_at: Some(Instant::now()),
        });
        *self.session.write().unwrap_or_else(PoisonError::into_inner) = due;
    }

    /// Replaces the token with one Swift does not know, as if it had expired or
    /// memcached had lost it (for tests of the refresh).
    pub(crate) fn break_token(&self) -> Result<(), StoreError> {
        let current = self.current();
        let bogus = Token {
            value: "AUTH_tk00000000000000000000000000000000".to_owned(),
            storage_url: current.storage_url.clone(),
            lifetime: None,
        };
        let session = Arc::new(session_for(
            &self.client,
            &self.target,
            &bogus,
            current.generation + 1,
        )?);
        *self.session.write().unwrap_or_else(PoisonError::into_inner) = session;
        Ok(())
    }
}

fn session_for(
    client: &reqwest::Client,
    target: &SwiftTarget,
    token: &Token,
    generation: u64,
) -> Result<Session, StoreError> {
    let root = if target.prefix.is_empty() {
        "/".to_owned()
    } else {
        format!("/{}/", target.prefix)
    };
    let builder = services::Swift::default()
        .endpoint(&token.storage_url)
        .container(&target.container)
        .root(&root)
        .token(&token.value);
    let op = Operator::new(builder).map_err(|e| StoreError::from_opendal("", e))?;
    Ok(Session {
        op: net::layered(op, client),
        storage_url: token.storage_url.clone(),
        generation,
        refresh_at: token
            .lifetime
            .map(|life| Instant::now() + refresh_after(life)),
    })
}

/// When, within a token's `lifetime`, to replace it: [`REFRESH_MARGIN`] before it
/// expires, or halfway through a short-lived one.
fn refresh_after(lifetime: Duration) -> Duration {
    lifetime.saturating_sub(REFRESH_MARGIN.min(lifetime / 2))
}

async fn authenticate(
    client: &reqwest::Client,
    target: &SwiftTarget,
    auth: &Auth,
) -> Result<Token, StoreError> {
    let url = target.auth_url();
    let token = match auth {
        Auth::Tempauth { user, key } => tempauth(client, &url, user, key).await?,
        Auth::Keystone(ks) => keystone(client, &url, ks).await?,
    };
    tracing::debug!(auth_url = %url, storage_url = %token.storage_url, "authenticated");
    Ok(token)
}

/// `HEAD` the container; when it is missing, `PUT` it (201 created, 202 existed).
async fn ensure_container(
    client: &reqwest::Client,
    target: &SwiftTarget,
    token: &Token,
) -> Result<(), StoreError> {
    let name = &target.container;
    let url = format!(
        "{}/{}",
        token.storage_url.trim_end_matches('/'),
        utf8_percent_encode(name, PATH)
    );
    let head = net::send(&format!("HEAD container {name}"), || {
        client.head(&url).header("X-Auth-Token", &token.value)
    })
    .await?;
    match head.status() {
        s if s.is_success() => return Ok(()),
        StatusCode::NOT_FOUND => {}
        s => return Err(container_error(name, "look up", s)),
    }
    let put = net::send(&format!("PUT container {name}"), || {
        client
            .put(&url)
            .header("X-Auth-Token", &token.value)
            .header("Content-Length", "0")
    })
    .await?;
    match put.status() {
        StatusCode::CREATED | StatusCode::ACCEPTED | StatusCode::NO_CONTENT => {
            tracing::info!(location = %target.location(), "created the Swift container");
            Ok(())
        }
        s => Err(container_error(name, "create", s)),
    }
}

fn container_error(name: &str, doing: &str, status: StatusCode) -> StoreError {
    let message = format!("cannot {doing} the Swift container {name:?}: HTTP {status}");
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => StoreError::Auth(message),
        s => StoreError::Remote {
            message,
            retryable: s.is_server_error(),
        },
    }
}

fn need(
    value: Option<&String>,
    scheme: &str,
    field: &str,
    env: &str,
) -> Result<String, StoreError> {
    value.filter(|v| !v.is_empty()).cloned().ok_or_else(|| {
        StoreError::Config(format!(
            "a {scheme} repository needs the credential {field:?} (credentials file, or {env} in the environment)"
        ))
    })
}

/// tempauth v1: `GET {auth_url}` with `X-Auth-User`/`X-Auth-Key` gives `X-Storage-Url`
/// and `X-Auth-Token` (and `X-Auth-Token-Expires`, seconds).
async fn tempauth(
    client: &reqwest::Client,
    auth_url: &str,
    user: &str,
    key: &str,
) -> Result<Token, StoreError> {
    let resp = net::send(&format!("tempauth at {auth_url}"), || {
        client
            .get(auth_url)
            .header("X-Auth-User", user)
            .header("X-Auth-Key", key)
    })
    .await?;
    let status = resp.status();
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        return Err(StoreError::Auth(format!(
            "tempauth at {auth_url} refused the user and key (HTTP {status})"
        )));
    }
    if !status.is_success() {
        return Err(StoreError::Remote {
            message: format!("tempauth at {auth_url} answered HTTP {status}"),
            retryable: status.is_server_error(),
        });
    }
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (Some(token), Some(storage_url)) = (header("X-Auth-Token"), header("X-Storage-Url")) else {
        return Err(StoreError::Remote {
            message: format!(
                "tempauth at {auth_url} answered {status} without X-Auth-Token and X-Storage-Url"
            ),
            retryable: false,
        });
    };
    let lifetime = header("X-Auth-Token-Expires")
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(Duration::from_secs_f64);
    Ok(Token {
        value: token,
        storage_url,
        lifetime,
    })
}

/// Keystone v3 password auth, scoped to a project: `POST {auth_url}/auth/tokens`; the
/// token is the `X-Subject-Token` header, the storage URL the catalog's object-store
/// endpoint for our region and interface.
async fn keystone(
    client: &reqwest::Client,
    auth_url: &str,
    ks: &Keystone,
) -> Result<Token, StoreError> {
    let url = format!("{}/auth/tokens", auth_url.trim_end_matches('/'));
    let body = serde_json::json!({
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {
                        "name": ks.username,
                        "domain": {"name": ks.user_domain_name},
                        "password": ks.password,
                    }
                }
            },
            "scope": {
                "project": {
                    "name": ks.project_name,
                    "domain": {"name": ks.project_domain_name},
                }
            }
        }
    });
    let resp = net::send(&format!("Keystone at {auth_url}"), || {
        client.post(&url).json(&body)
    })
    .await?;
    let status = resp.status();
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        return Err(StoreError::Auth(format!(
            "Keystone at {auth_url} refused the user, password or project (HTTP {status})"
        )));
    }
    if !status.is_success() {
        return Err(StoreError::Remote {
            message: format!("Keystone at {auth_url} answered HTTP {status}"),
            retryable: status.is_server_error(),
        });
    }
    let token = resp
        .headers()
        .get("X-Subject-Token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .ok_or_else(|| StoreError::Remote {
            message: format!("Keystone at {auth_url} answered {status} without X-Subject-Token"),
            retryable: false,
        })?;
    let body = resp.bytes().await.map_err(|e| StoreError::Remote {
        message: format!(
            "Keystone at {auth_url}: reading the token: {}",
            net::chain(&e)
        ),
        retryable: true,
    })?;
    let (storage_url, expires_at) = parse_token(&body, ks.region_name.as_deref(), &ks.interface)
        .map_err(|m| StoreError::Config(format!("Keystone at {auth_url}: {m}")))?;
    let lifetime = expires_at.map(|at| {
        let left = at - OffsetDateTime::now_utc();
        Duration::try_from(left).unwrap_or(Duration::ZERO)
    });
    Ok(Token {
        value: token,
        storage_url,
        lifetime,
    })
}

#[derive(Deserialize)]
struct TokenBody {
    token: TokenInfo,
}

#[derive(Deserialize)]
struct TokenInfo {
    expires_at: Option<String>,
    #[serde(default)]
    catalog: Vec<CatalogService>,
}

#[derive(Deserialize)]
struct CatalogService {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    endpoints: Vec<CatalogEndpoint>,
}

#[derive(Deserialize)]
struct CatalogEndpoint {
    interface: String,
    region: Option<String>,
    region_id: Option<String>,
    url: String,
}

/// From a Keystone v3 token body: the object-store endpoint for `interface` (`public`,
/// `internal`, `admin`; `publicURL` style accepted) in `region` (any region when `None`,
/// provided the catalog offers only one), and the token's expiry.
fn parse_token(
    body: &[u8],
    region: Option<&str>,
    interface: &str,
) -> Result<(String, Option<OffsetDateTime>), String> {
    let body: TokenBody = serde_json::from_slice(body)
        .map_err(|e| format!("the token body is not what Keystone v3 sends: {e}"))?;
    let interface = interface.trim_end_matches("URL");
    let expires_at = match body.token.expires_at.as_deref() {
        None => None,
        Some(s) => Some(
            OffsetDateTime::parse(s, &Rfc3339)
                .map_err(|e| format!("the token's expires_at {s:?} is not a timestamp: {e}"))?,
        ),
    };
    let mut found: Vec<&CatalogEndpoint> = body
        .token
        .catalog
        .iter()
        .filter(|s| s.kind == "object-store")
        .flat_map(|s| &s.endpoints)
        .filter(|e| e.interface == interface)
        .filter(|e| {
            region
                .is_none_or(|r| e.region_id.as_deref() == Some(r) || e.region.as_deref() == Some(r))
        })
        .collect();
    let wanted = || {
        format!(
            "interface {interface}{}",
            region.map(|r| format!(", region {r}")).unwrap_or_default()
        )
    };
    match found.len() {
        0 => Err(format!(
            "the catalog has no object-store endpoint for {} (check region_name and interface)",
            wanted()
        )),
        1 => Ok((
            found.remove(0).url.trim_end_matches('/').to_owned(),
            expires_at,
        )),
        _ => {
            let mut regions: Vec<&str> = found
                .iter()
                .filter_map(|e| e.region_id.as_deref().or(e.region.as_deref()))
                .collect();
            regions.sort_unstable();
            regions.dedup();
            if regions.len() > 1 {
                Err(format!(
                    "the catalog has object-store endpoints in several regions ({}); set region_name",
                    regions.join(", ")
                ))
            } else {
                // Several endpoints in one region: Keystone's order, as python-swiftclient.
                Ok((
                    found.remove(0).url.trim_end_matches('/').to_owned(),
                    expires_at,
                ))
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The shape of a real Keystone v3 `POST /v3/auth/tokens` answer (trimmed: fewer
    /// services, no roles or methods details), with two regions and three interfaces.
    const TOKEN_BODY: &str = r#"{
      "token": {
        "methods": ["password"],
        "user": {"domain": {"id": "default", "name": "Default"}, "id": "3ec3164f750146be97f21559ee4d9c51", "name": "vbs", "password_expires_at": null},
        "audit_ids": ["Xb6oLk5TQJ6wnHe4hJtQqg"],
        "expires_at": "2031-05-01T12:00:00.000000Z",
        "issued_at": "2031-05-01T11:00:00.000000Z",
        "project": {"domain": {"id": "default", "name": "Default"}, "id": "a6944d763bf64ee6a275f1263fae0352", "name": "service"},
        "is_domain": false,
        "roles": [{"id": "51cc68287d524c759f47c811e6463340", "name": "member"}],
        "catalog": [
          {"endpoints": [
             {"id": "1", "interface": "public", "region_id": "RegionOne", "url": "http://keystone.example:5000/v3/", "region": "RegionOne"}],
           "id": "k", "type": "identity", "name": "keystone"},
          {"endpoints": [
             {"id": "2", "interface": "public", "region_id": "RegionOne", "url": "https://swift-one.example/v1/AUTH_a6944d763bf64ee6a275f1263fae0352", "region": "RegionOne"},
             {"id": "3", "interface": "internal", "region_id": "RegionOne", "url": "http://10.0.0.5:8080/v1/AUTH_a6944d763bf64ee6a275f1263fae0352", "region": "RegionOne"},
             {"id": "4", "interface": "admin", "region_id": "RegionOne", "url": "http://10.0.0.5:8080", "region": "RegionOne"},
             {"id": "5", "interface": "public", "region_id": "RegionTwo", "url": "https://swift-two.example/v1/AUTH_a6944d763bf64ee6a275f1263fae0352/", "region": "RegionTwo"}],
           "id": "s", "type": "object-store", "name": "swift"},
          {"endpoints": [
             {"id": "6", "interface": "public", "region_id": "RegionOne", "url": "https://cinder.example/v3/a6944d763bf64ee6a275f1263fae0352", "region": "RegionOne"}],
           "id": "c", "type": "block-storage", "name": "cinderv3"}
        ]
      }
    }"#;

    #[test]
    fn tokens_are_replaced_before_they_expire() {
        let hour = Duration::from_hours(1);
        assert_eq!(refresh_after(hour), Duration::from_mins(55));
        assert_eq!(
            refresh_after(Duration::from_mins(1)),
            Duration::from_secs(30)
        );
        assert_eq!(refresh_after(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn keystone_catalog_picks_region_and_interface() {
        let (url, expires) =
            parse_token(TOKEN_BODY.as_bytes(), Some("RegionOne"), "public").unwrap();
        assert_eq!(
            url,
            "https://swift-one.example/v1/AUTH_a6944d763bf64ee6a275f1263fae0352"
        );
        assert_eq!(
            expires.unwrap(),
            OffsetDateTime::parse("2031-05-01T12:00:00Z", &Rfc3339).unwrap()
        );
        let (url, _) = parse_token(TOKEN_BODY.as_bytes(), Some("RegionOne"), "internal").unwrap();
        assert_eq!(
            url,
            "http://10.0.0.5:8080/v1/AUTH_a6944d763bf64ee6a275f1263fae0352"
        );
        let (url, _) = parse_token(TOKEN_BODY.as_bytes(), Some("RegionTwo"), "publicURL").unwrap();
        assert_eq!(
            url,
            "https://swift-two.example/v1/AUTH_a6944d763bf64ee6a275f1263fae0352"
        );
    }

    #[test]
    fn keystone_catalog_errors_name_the_problem() {
        let err = parse_token(TOKEN_BODY.as_bytes(), None, "public").unwrap_err();
        assert!(
            err.contains("several regions (RegionOne, RegionTwo)"),
            "{err}"
        );
        let err = parse_token(TOKEN_BODY.as_bytes(), Some("RegionThree"), "public").unwrap_err();
        assert!(
            err.contains("no object-store endpoint for interface public, region RegionThree"),
            "{err}"
        );
        let err = parse_token(TOKEN_BODY.as_bytes(), Some("RegionTwo"), "internal").unwrap_err();
        assert!(err.contains("no object-store endpoint"), "{err}");
        let err = parse_token(b"{\"error\": {}}", None, "public").unwrap_err();
        assert!(err.contains("not what Keystone v3 sends"), "{err}");
    }

    #[test]
    fn keystone_single_region_needs_no_region_name() {
        let body = TOKEN_BODY.replace("RegionTwo", "RegionOne");
        let (url, _) = parse_token(body.as_bytes(), None, "public").unwrap();
        assert_eq!(
            url,
            "https://swift-one.example/v1/AUTH_a6944d763bf64ee6a275f1263fae0352"
        );
        // No expiry given: no planned refresh, only on 401.
        let body = TOKEN_BODY.replace(r#""expires_at": "2031-05-01T12:00:00.000000Z","#, "");
        let (_, expires) = parse_token(body.as_bytes(), Some("RegionOne"), "public").unwrap();
        assert!(expires.is_none());
    }
}
