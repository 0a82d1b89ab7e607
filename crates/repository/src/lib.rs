//! Where backup bytes live: a flat namespace of immutable objects behind one small
//! contract, [`Store`], implemented on Apache `OpenDAL` for the local filesystem (the
//! embedded default), `OpenStack` Swift and S3.
//!
//! The contract the engine relies on:
//! - `put` is atomic (no reader ever sees a partial object) and durable when it returns
//!   `Ok`. Local filesystem: file fsynced, renamed into place, directory fsynced. Swift
//!   and S3: one single PUT, never a segmented or multipart upload, whatever the size;
//!   the store makes it durable before it answers, and the body is checked (S3:
//!   `Content-MD5`, verified by the server; Swift: the returned `ETag` must be the MD5
//!   of what we sent);
//! - objects are never overwritten with different bytes (keys are content hashes or
//!   unique ids), so a retried `put` is harmless;
//! - `delete` is idempotent: deleting a missing object is `Ok`;
//! - reads return exactly the stored bytes or an error; checking them against a hash is
//!   the caller's job (the engine re-hashes every block it reads). `get_range` is a
//!   ranged request, not a whole read cut down.
//!
//! # Opening a store by URL
//!
//! [`Store::open`] takes a URL and [`Credentials`] (which never go into the URL):
//!
//! | URL | backend |
//! |---|---|
//! | `/abs/path`, `rel/path`, `file:///abs/path` | local directory (created if missing) |
//! | `swift+tempauth://HOST:PORT/CONTAINER[/PREFIX]` | Swift, tempauth v1 at `http://HOST:PORT/auth/v1.0`; credentials `user`, `key` |
//! | `swift+tempauth+https://…` | the same over TLS |
//! | `swift+keystone://HOST:PORT/CONTAINER[/PREFIX]` | Swift, Keystone v3 password auth at `http://HOST:PORT/v3`, the `object-store` endpoint of the catalog; credentials `username`, `password`, `project_name`, `user_domain_name`, `project_domain_name` (both default `Default`), `region_name`, `interface` (default `public`) |
//! | `swift+keystone+https://…` | the same over TLS |
//! | `s3://BUCKET[/PREFIX]?endpoint=URL&region=R&style=path\|virtual` | S3; credentials `access_key_id`, `secret_access_key`, `session_token` |
//!
//! A Swift container is created at open if it is missing; an S3 bucket must exist.
//! For S3 the endpoint is `?endpoint=`, else `AWS_ENDPOINT_URL_S3` or
//! `AWS_ENDPOINT_URL`, else AWS (`https://s3.REGION.amazonaws.com`); the region is
//! `?region=`, else the credentials' `region_name`, else `AWS_REGION` or
//! `AWS_DEFAULT_REGION`, else `us-east-1`; the style is path unless `style=virtual`.
//! Nothing is read from `~/.aws` or an instance metadata service.
//!
//! # Network robustness
//!
//! Every Swift and S3 request has a timeout (120 s in all, 30 s without progress) and
//! is retried with jittered exponential backoff (5 more times, 0.2 s doubling) when it
//! failed with a 5xx, a timeout or a connection error. A Swift token is replaced before
//! it expires, and a request refused with 401/403 re-authenticates and is retried once.
//!
//! # Injected faults
//!
//! With `VBS_STORE_FAULTS` set (fault campaigns only, never a real service) every store
//! fails, delays, truncates reads and tears writes at random; see [`faults`].

mod credentials;
pub mod faults;
mod location;
mod net;
mod s3;
mod swift;

use std::fmt;
use std::future::Future;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use md5::{Digest as _, Md5};
use opendal::{ErrorKind, Operator, services};

pub use credentials::Credentials;

use location::Target;
use swift::Swift;

/// What went wrong, in terms a caller can branch on. [`StoreError::is_retryable`] says
/// whether trying again later may help.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("object {0} not found")]
    NotFound(String),
    /// The backend failed; `retryable` says whether trying again may help (the
    /// request was already retried with backoff when it was).
    #[error("object store: {source}")]
    Backend {
        #[source]
        source: opendal::Error,
        retryable: bool,
    },
    #[error("object store: {0}")]
    Io(#[from] std::io::Error),
    /// The URL or the credentials are unusable as given: a configuration problem.
    #[error("object store configuration: {0}")]
    Config(String),
    /// The object store (or its auth service) refused our credentials.
    #[error("object store authentication: {0}")]
    Auth(String),
    /// A request outside the object operations (authentication, container setup)
    /// failed: unreachable, timed out, or an unexpected status.
    #[error("object store: {message}")]
    Remote { message: String, retryable: bool },
    /// The store acknowledged an upload whose checksum is not that of the bytes sent.
    #[error("object store: {key} was stored with ETag {got}, but the bytes sent have MD5 {sent}")]
    Integrity {
        key: String,
        sent: String,
        got: String,
    },
}

impl StoreError {
    fn from_opendal(key: &str, e: opendal::Error) -> Self {
        if e.kind() == ErrorKind::NotFound && !key.is_empty() {
            return Self::NotFound(key.to_owned());
        }
        // Persistent: temporary, but still failing after the retry layer's attempts;
        // a later call (the next job run) may still succeed.
        let retryable = e.is_temporary() || e.is_persistent();
        Self::Backend {
            source: e,
            retryable,
        }
    }

    /// Whether the same call may succeed later (a 5xx, a timeout, a lost connection,
    /// a damaged upload), as opposed to a missing object or a configuration problem.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Backend { retryable, .. } | Self::Remote { retryable, .. } => *retryable,
            Self::Integrity { .. } => true,
            Self::NotFound(_) | Self::Io(_) | Self::Config(_) | Self::Auth(_) => false,
        }
    }
}

/// One stored object as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
}

/// An object store. Cheap to clone (one `Arc`), `Send + Sync`.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Backend,
    /// Log-safe description: the URL without credentials.
    location: String,
    /// Injected faults, for fault campaigns only (`VBS_STORE_FAULTS`, see [`faults`]).
    faults: Option<faults::Faults>,
}

enum Backend {
    Local {
        op: Operator,
        /// The directory to fsync after a rename.
        root: PathBuf,
    },
    S3(Operator),
    Swift(Swift),
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("location", &self.inner.location)
            .finish_non_exhaustive()
    }
}

/// Name of the directory inside a local repository where writes are staged before the
/// rename that publishes them.
const STAGING_DIR: &str = ".staging";

impl Store {
    /// A store in a local directory injecting the faults of `spec` (the form of
    /// `VBS_STORE_FAULTS`, see [`faults`]), for tests of what callers make of them.
    pub fn local_with_faults(root: &Path, spec: &str) -> Result<Self, StoreError> {
        let faults = faults::Faults::new(faults::FaultSpec::parse(spec)?, 0, None);
        let (backend, location) = Self::local_backend(root)?;
        Ok(Self::with_faults(backend, location, Some(faults)))
    }

    /// A store in a local directory (created if missing).
    pub fn local(root: &Path) -> Result<Self, StoreError> {
        let (backend, location) = Self::local_backend(root)?;
        Self::from_backend(backend, location)
    }

    fn local_backend(root: &Path) -> Result<(Backend, String), StoreError> {
        std::fs::create_dir_all(root.join(STAGING_DIR))?;
        let root = std::fs::canonicalize(root)?;
        let staging = root.join(STAGING_DIR);
        let builder = services::Fs::default()
            .root(&root.to_string_lossy())
            .atomic_write_dir(&staging.to_string_lossy());
        let op = Operator::new(builder).map_err(|e| StoreError::from_opendal("", e))?;
        let location = url::Url::from_directory_path(&root)
            .map_or_else(|()| root.display().to_string(), |u| u.to_string());
        Ok((
            Backend::Local { op, root },
            location.trim_end_matches('/').to_owned(),
        ))
    }

    /// Opens the store `url` names (see the crate docs for the forms), with `creds`
    /// for the network backends. Swift: authenticates and creates the container when
    /// it is missing. S3: checks that the bucket exists and the credentials work.
    /// A malformed URL or missing credential is [`StoreError::Config`]; refused
    /// credentials are [`StoreError::Auth`].
    pub async fn open(url: &str, creds: &Credentials) -> Result<Self, StoreError> {
        match location::parse(url)? {
            Target::Local(path) => tokio::task::spawn_blocking(move || Self::local(&path))
                .await
                .map_err(std::io::Error::other)?,
            Target::Swift(target) => {
                let swift = Swift::open(target, creds, net::client()?).await?;
                let location = swift.location();
                Self::from_backend(Backend::Swift(swift), location)
            }
            Target::S3(target) => {
                let client = net::client()?;
                let (op, location) =
                    s3::open(&target, creds, &client, |name| std::env::var(name).ok()).await?;
                Self::from_backend(Backend::S3(op), location)
            }
        }
    }

    /// The store over `backend`, injecting faults when `VBS_STORE_FAULTS` asks for
    /// them (a malformed value is a configuration error).
    fn from_backend(backend: Backend, location: String) -> Result<Self, StoreError> {
        let faults = faults::Faults::from_env(&location)?;
        Ok(Self::with_faults(backend, location, faults))
    }

    fn with_faults(backend: Backend, location: String, faults: Option<faults::Faults>) -> Self {
        Self {
            inner: Arc::new(Inner {
                backend,
                location,
                faults,
            }),
        }
    }

    /// Where this store is, safe to log: `file:///srv/vbs`,
    /// `swift+tempauth://127.0.0.1:8080/vbs/prefix`,
    /// `s3://bucket/prefix?endpoint=…&region=…&style=path`.
    pub fn location(&self) -> String {
        self.inner.location.clone()
    }

    /// Where a local store keeps its files (for operators and tests); `None` for the
    /// network backends.
    pub fn local_root(&self) -> Option<&Path> {
        match &self.inner.backend {
            Backend::Local { root, .. } => Some(root),
            Backend::S3(_) | Backend::Swift(_) => None,
        }
    }

    /// Runs `f` on the backend's operator; on Swift with a token refresh and one retry
    /// when the token was refused.
    async fn run<T, F, Fut>(&self, key: &str, f: F) -> Result<T, StoreError>
    where
        F: Fn(Operator) -> Fut,
        Fut: Future<Output = opendal::Result<T>>,
    {
        match &self.inner.backend {
            Backend::Local { op, .. } | Backend::S3(op) => f(op.clone())
                .await
                .map_err(|e| StoreError::from_opendal(key, e)),
            Backend::Swift(swift) => swift.run(key, f).await,
        }
    }

    /// Stores `data` under `key`: atomic, and durable when this returns `Ok`.
    pub async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        if let Some(f) = &self.inner.faults {
            f.before(faults::Op::Put, key).await?;
            if let Some(kept) = f.tear(data.len())
                && self.put_new(key, data.slice(..kept)).await?
            {
                return Err(f.torn(key, kept, data.len()));
            }
        }
        self.put_raw(key, data).await
    }

    /// Stores `data` under `key` if, in one step, no object is there; `false` when one
    /// was, or on the network stores, which never tear (a PUT is atomic on both) and
    /// cannot decide in one step: Swift's `If-None-Match: *` lets a PUT that began
    /// before another one's end replace it, and the S3 servers we test against refuse
    /// conditional writes. The fault injector's torn writes go through this: two writers
    /// of one key (two runs of one backup job) must not let a tear land on the other's
    /// complete object, as a check and then a write did.
    async fn put_new(&self, key: &str, data: Bytes) -> Result<bool, StoreError> {
        match &self.inner.backend {
            Backend::Local { root, .. } => {
                let path = root.join(key);
                tokio::task::spawn_blocking(move || {
                    if let Some(dir) = path.parent() {
                        std::fs::create_dir_all(dir)?;
                    }
                    let mut file = match std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(&path)
                    {
                        Ok(file) => file,
                        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                            return Ok(false);
                        }
                        Err(e) => return Err(e),
                    };
                    std::io::Write::write_all(&mut file, &data)?;
                    file.sync_all()?;
                    Ok(true)
                })
                .await
                .map_err(std::io::Error::other)?
                .map_err(StoreError::from)
            }
            Backend::S3(_) | Backend::Swift(_) => Ok(false),
        }
    }

    async fn put_raw(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        match &self.inner.backend {
            Backend::Local { op, root } => {
                op.write(key, data)
                    .await
                    .map_err(|e| StoreError::from_opendal(key, e))?;
                // `OpenDAL` fsyncs the file and renames it into place; the new directory
                // entry is durable only once its directory is fsynced too.
                let dir = parent_dir(root, key);
                tokio::task::spawn_blocking(move || std::fs::File::open(&dir)?.sync_all())
                    .await
                    .map_err(std::io::Error::other)??;
                Ok(())
            }
            // Content-MD5 is sent and checked by the server (see s3::open).
            Backend::S3(op) => op
                .write(key, data)
                .await
                .map(drop)
                .map_err(|e| StoreError::from_opendal(key, e)),
            Backend::Swift(_) => self.put_swift(key, data).await,
        }
    }

    /// One PUT (`OpenDAL` writes a single buffer with one request, never as SLO
    /// segments), then the returned `ETag` compared with the MD5 of the body, which is
    /// hashed on the blocking pool while the upload runs. Swift's `ETag` of a plain
    /// object is that MD5, so a mismatch means the object stored is not what we sent:
    /// the put is retried once (same key, so the bad copy is replaced), then reported.
    async fn put_swift(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        let body = data.clone();
        let md5 = tokio::task::spawn_blocking(move || hex(&Md5::digest(&body)));
        let mut attempts = 0;
        let mut md5 = Some(md5);
        let mut sent = String::new();
        loop {
            attempts += 1;
            let written = self
                .run(key, |op| {
                    let data = data.clone();
                    async move { op.write(key, data).await }
                })
                .await;
            if let Some(task) = md5.take() {
                sent = task.await.map_err(std::io::Error::other)?;
            }
            let meta = match written {
                Ok(meta) => meta,
                // Two writers storing the same content-addressed object at once: Swift
                // answers the one whose timestamp lost with 202, not 201, and OpenDAL
                // reports that as an error. What counts is what is stored: if the object
                // is there with exactly our bytes (its ETag is our MD5), the put did its
                // job.
                Err(e) => match self.run(key, |op| async move { op.stat(key).await }).await {
                    Ok(stored)
                        if stored.content_length() == data.len() as u64
                            && stored.etag().is_some_and(|t| {
                                t.trim_matches('"').eq_ignore_ascii_case(&sent)
                            }) =>
                    {
                        tracing::debug!(key, error = %e, "put answered with an error, but the object holds our bytes");
                        return Ok(());
                    }
                    _ => return Err(e),
                },
            };
            let Some(etag) = meta.etag() else {
                tracing::debug!(key, "Swift returned no ETag; upload not checked");
                return Ok(());
            };
            let got = etag.trim_matches('"').to_ascii_lowercase();
            if got == sent {
                return Ok(());
            }
            tracing::warn!(key, %got, %sent, attempts, "uploaded object's ETag is not the MD5 sent");
            if attempts == 2 {
                return Err(StoreError::Integrity {
                    key: key.to_owned(),
                    sent,
                    got,
                });
            }
        }
    }

    /// The whole object.
    pub async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        if let Some(f) = &self.inner.faults {
            f.before(faults::Op::Get, key).await?;
        }
        let buf = self
            .run(key, |op| async move { op.read(key).await })
            .await?;
        Ok(self.read_back(faults::Op::Get, key, buf.to_bytes()))
    }

    fn read_back(&self, op: faults::Op, key: &str, data: Bytes) -> Bytes {
        match &self.inner.faults {
            Some(f) => f.after_read(op, key, data),
            None => data,
        }
    }

    /// A byte range of the object, fetched with a ranged request (never the whole
    /// object cut down). A range reaching past the object's end is an error on every
    /// backend (`OpenDAL` checks the length it got against the length asked for).
    pub async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StoreError> {
        if let Some(f) = &self.inner.faults {
            f.before(faults::Op::GetRange, key).await?;
        }
        let buf = self
            .run(key, |op| {
                let range = range.clone();
                async move { op.read_with(key).range(range).await }
            })
            .await?;
        Ok(self.read_back(faults::Op::GetRange, key, buf.to_bytes()))
    }

    /// Whether an object exists.
    pub async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        if let Some(f) = &self.inner.faults {
            f.before(faults::Op::Exists, key).await?;
        }
        self.exists_raw(key).await
    }

    async fn exists_raw(&self, key: &str) -> Result<bool, StoreError> {
        self.run(key, |op| async move { op.exists(key).await })
            .await
    }

    /// Every object whose key starts with `prefix` (a "directory" ending in `/`),
    /// recursively, directories themselves left out.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        if let Some(f) = &self.inner.faults {
            f.before(faults::Op::List, prefix).await?;
        }
        let entries = self
            .run("", |op| async move {
                match op.list_with(prefix).recursive(true).await {
                    Err(e) if e.kind() == ErrorKind::NotFound => Ok(Vec::new()),
                    other => other,
                }
            })
            .await?;
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            let meta = entry.metadata();
            if meta.is_dir() || entry.path().ends_with('/') {
                continue;
            }
            let key = entry.path().trim_start_matches('/').to_owned();
            if key.starts_with(STAGING_DIR) {
                continue;
            }
            out.push(ObjectMeta {
                key,
                size: meta.content_length(),
            });
        }
        Ok(out)
    }

    /// Whether any object's key starts with `prefix`: the listing stops at the first one
    /// (a repository with millions of packs answers in one request, not all of them).
    pub async fn any(&self, prefix: &str) -> Result<bool, StoreError> {
        use futures::TryStreamExt as _;
        if let Some(f) = &self.inner.faults {
            f.before(faults::Op::List, prefix).await?;
        }
        self.run("", |op| async move {
            let mut lister = match op.lister_with(prefix).recursive(true).await {
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
                other => other?,
            };
            while let Some(entry) = lister.try_next().await? {
                let path = entry.path();
                if !(entry.metadata().is_dir()
                    || path.ends_with('/')
                    || path.trim_start_matches('/').starts_with(STAGING_DIR))
                {
                    return Ok(true);
                }
            }
            Ok(false)
        })
        .await
    }

    /// Removes an object; a missing one is not an error (on Swift and S3 a plain
    /// DELETE, 404 counting as done).
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        if let Some(f) = &self.inner.faults {
            f.before(faults::Op::Delete, key).await?;
        }
        self.run(key, |op| async move {
            match op.delete(key).await {
                Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
                other => other,
            }
        })
        .await?;
        if let Backend::Local { root, .. } = &self.inner.backend {
            let dir = parent_dir(root, key);
            tokio::task::spawn_blocking(move || match std::fs::File::open(&dir) {
                Ok(f) => f.sync_all(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e),
            })
            .await
            .map_err(std::io::Error::other)??;
        }
        Ok(())
    }

    /// Test hook: replaces a Swift store's token with one Swift does not know, as if
    /// it had expired or the proxy's memcached had lost it; the next request must
    /// re-authenticate. Returns `false` (and does nothing) on other backends.
    #[doc(hidden)]
    pub fn break_token_for_tests(&self) -> Result<bool, StoreError> {
        match &self.inner.backend {
            Backend::Swift(swift) => swift.break_token().map(|()| true),
            Backend::Local { .. } | Backend::S3(_) => Ok(false),
        }
    }

    /// Test hook: makes a Swift store's token due for replacement, as if its expiry
    /// were minutes away; the next request must re-authenticate before it is sent.
    /// Returns `false` (and does nothing) on other backends.
    #[doc(hidden)]
    pub fn expire_token_for_tests(&self) -> bool {
        match &self.inner.backend {
            Backend::Swift(swift) => {
                swift.expire_token();
                true
            }
            Backend::Local { .. } | Backend::S3(_) => false,
        }
    }

    /// Test hook: how many times a Swift store has authenticated (0 elsewhere).
    #[doc(hidden)]
    pub fn authentications_for_tests(&self) -> u64 {
        match &self.inner.backend {
            Backend::Swift(swift) => swift.authentications(),
            Backend::Local { .. } | Backend::S3(_) => 0,
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn parent_dir(root: &Path, key: &str) -> PathBuf {
    let path = root.join(key);
    path.parent()
        .map_or_else(|| root.to_path_buf(), Path::to_path_buf)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn store_is_cheap_to_share() {
        fn send_sync_clone<T: Send + Sync + Clone + 'static>() {}
        send_sync_clone::<Store>();
        assert_eq!(std::mem::size_of::<Store>(), std::mem::size_of::<usize>());
    }

    #[test]
    fn md5_hex_is_swifts_etag_form() {
        assert_eq!(hex(&Md5::digest(b"")), "d41d8cd98f00b204e9800998ecf8427e");
    }

    #[tokio::test]
    async fn open_by_path_or_file_url_is_local() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("a");
        let store = Store::open(plain.to_str().unwrap(), &Credentials::default())
            .await
            .unwrap();
        let root = std::fs::canonicalize(&plain).unwrap();
        assert_eq!(store.local_root(), Some(root.as_path()));
        assert_eq!(store.location(), format!("file://{}", root.display()));
        let url = format!("file://{}", dir.path().join("b").display());
        let store = Store::open(&url, &Credentials::default()).await.unwrap();
        assert!(store.local_root().unwrap().ends_with("b"));
    }

    #[tokio::test]
    async fn missing_credentials_are_a_config_error() {
        let err = Store::open("swift+tempauth://127.0.0.1:1/vbs", &Credentials::default())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::Config(m) if m.contains("\"user\"") && m.contains("ST_USER")),
            "{err}"
        );
        let err = Store::open(
            "s3://vbs?endpoint=http://127.0.0.1:1",
            &Credentials::default(),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(&err, StoreError::Config(m) if m.contains("access_key_id")),
            "{err}"
        );
    }
}
