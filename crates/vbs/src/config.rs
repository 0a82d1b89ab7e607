//! Typed, layered configuration: `Config::default()` is the embedded mode; a TOML file,
//! then `VBS_*` environment variables (`__` separates sections, e.g.
//! `VBS_KEYSTONE__PASSWORD`), then command-line flags override it. Checked at start-up.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use vbs_api::KeystoneOptions;

/// How requests are authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// `X-Auth-Token: USER:PROJECT`, for development and tests; loopback only.
    Noauth,
    /// Tokens validated against Keystone v3 (the `[keystone]` section).
    Keystone,
}

/// A repository URL as it may be shown: a user or password someone put into it (the
/// store refuses those) becomes `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

/// What a node does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Roles {
    /// Serves the HTTP API; never does backup work itself.
    pub api: bool,
    /// Claims and runs backup, restore, delete and GC jobs.
    pub worker: bool,
    /// Periodic housekeeping (scheduler.rs in the service crate).
    pub scheduler: bool,
}

/// The host's name (`vbs` when it cannot be read).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "vbs".into())
}

impl std::fmt::Display for Roles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = [
            (self.api, "api"),
            (self.worker, "worker"),
            (self.scheduler, "scheduler"),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, n)| *n)
        .collect();
        f.write_str(&names.join(","))
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the API listens on (Cinder's port by default).
    pub listen: SocketAddr,
    /// Where the embedded catalog, repository and volume pool live.
    pub data_dir: PathBuf,
    /// `sqlite://PATH` or `postgres://…`; default: `catalog.db` in the data directory.
    pub catalog: Option<String>,
    pub catalog_max_connections: u32,
    pub auth: AuthMode,
    /// Let `noauth` listen on a non-loopback address (never do this in production).
    pub allow_insecure_noauth: bool,
    /// Scheme, host and path prefix for links, e.g. `https://vbs.example.net`.
    pub public_endpoint: Option<String>,
    /// Filters non-admins may use on backup lists (Cinder's `resource_filters.json`).
    pub backup_filters: Vec<String>,
    /// Log filter in `RUST_LOG` syntax (`RUST_LOG` itself wins when set).
    pub log: String,
    /// `text` (for people) or `json` (one object a line, with an access line per
    /// request: request id, project, user, route, status, duration).
    pub log_format: LogFormat,
    /// Where Prometheus scrapes `/metrics` without a token (none: only admins, on the
    /// API listener).
    pub metrics_listen: Option<SocketAddr>,
    /// The backup repository: a directory or URL (`file://`, `swift+tempauth://`,
    /// `swift+keystone://`, `s3://`; docs/repository.md); default: `repository` in the
    /// data directory.
    pub repository: Option<String>,
    /// Credentials of a network repository (else the environment: `ST_*`, `OS_*`,
    /// `AWS_*`). Never serialized, never logged.
    #[serde(skip_serializing)]
    pub repository_credentials: Option<vbs_repository::Credentials>,
    /// Whether a new repository is encrypted (the default). `false` is the named
    /// opt-out: a new repository stays plaintext. An encrypted one always needs its key.
    pub encryption: bool,
    /// The repository's master key file: 64 hex digits (default: `repository.key` in
    /// the data directory, created with mode 0600 for a new repository).
    pub repository_key_file: Option<PathBuf>,
    /// The master key itself, for a cluster (`VBS_REPOSITORY_KEY`); wins over the file.
    /// Never serialized, never logged.
    #[serde(skip_serializing)]
    pub repository_key: Option<vbs_api::keystone::Secret>,
    /// What this node does: `api`, `worker`, `scheduler`, comma-separated (default all
    /// three). Any number of nodes share one `PostgreSQL` catalog and one repository.
    pub role: String,
    /// This node's name in the catalog (default: the host name and the process id). A
    /// live node keeps its name: a second one started with it refuses to start.
    pub node_name: Option<String>,
    /// Backup, restore and delete jobs this node runs at once (0: no worker here).
    pub backup_workers: usize,
    /// The CPU priority (`nice`, 0-19) of the threads that run backups, restores, GC
    /// and repository scans: above 0, the API's requests are served first when the CPU
    /// is short, and the jobs take what is left (default 10).
    pub worker_nice: i32,
    /// Memory (MiB) for rendered pages of the founding list, reused while the project's
    /// backups are unchanged (0: every request reads the catalog).
    pub list_cache_mib: u64,
    /// Seconds a worker's claim on a job lasts unless renewed; a dead worker's jobs
    /// are taken over after this.
    pub job_lease_secs: u64,
    /// How many times a job is started before work a dying worker keeps interrupting
    /// is failed (its VBS job then ends `FAIL`).
    pub job_max_attempts: u32,
    /// Seconds between GCs the scheduler queues (deletes queue one too).
    pub gc_interval_secs: u64,
    /// Seconds between the scheduler's sweeps for work of dead nodes.
    pub scheduler_tick_secs: u64,
    /// Default quota limits of every project (admins set per-project ones).
    pub quota: QuotaConfig,
    /// Directories whose files and block devices manage-existing may adopt (default:
    /// `manageable/` in `data_dir`).
    pub manageable_roots: Vec<PathBuf>,
    /// Test-only: the backup policies' scheduler goes by a simulated clock.
    pub scheduler_clock: Option<SchedulerClock>,
    /// Never serialized: the default has none, and it holds a secret.
    #[serde(skip_serializing)]
    pub keystone: Option<KeystoneOptions>,
}

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Default quota limits (`-1`: unlimited, the default of each).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuotaConfig {
    pub volumes: i64,
    pub snapshots: i64,
    pub gigabytes: i64,
    pub backups: i64,
    pub backup_gigabytes: i64,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        Self {
            volumes: -1,
            snapshots: -1,
            gigabytes: -1,
            backups: -1,
            backup_gigabytes: -1,
        }
    }
}

impl QuotaConfig {
    /// The limits by resource, each checked (-1 or more).
    pub fn limits(&self) -> anyhow::Result<std::collections::BTreeMap<&'static str, i64>> {
        let all = [
            ("volumes", self.volumes),
            ("snapshots", self.snapshots),
            ("gigabytes", self.gigabytes),
            ("backups", self.backups),
            ("backup_gigabytes", self.backup_gigabytes),
        ];
        for (name, v) in all {
            anyhow::ensure!(
                v >= -1,
                "quota.{name} must be -1 (unlimited) or more, not {v}"
            );
        }
        Ok(all.into_iter().collect())
    }
}

/// A simulated clock for the policy scheduler (tests and the CI's end-to-end run
/// only): at wall-clock second `since` it is `start`, then it runs `speed` times as
/// fast. Nodes given the same values agree on the time.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerClock {
    /// The simulated time at `since`: `YYYY-MM-DDTHH:MM:SSZ` (UTC).
    pub start: String,
    /// Unix seconds (wall clock) at which the simulated time is `start`; default: when
    /// the process starts.
    pub since: Option<i64>,
    /// Simulated seconds per real second (default 1).
    pub speed: Option<f64>,
}

impl SchedulerClock {
    /// The service's clock, or why the settings are unusable.
    pub fn clock(&self) -> anyhow::Result<vbs_service::Clock> {
        let origin = vbs_catalog::ts::parse(&self.start).ok_or_else(|| {
            anyhow::anyhow!(
                "scheduler_clock.start: {:?} is not YYYY-MM-DDTHH:MM:SSZ",
                self.start
            )
        })?;
        let speed = self.speed.unwrap_or(1.0);
        anyhow::ensure!(
            speed.is_finite() && speed > 0.0,
            "scheduler_clock.speed must be a positive number"
        );
        let wall_at = self
            .since
            .map_or_else(vbs_catalog::ts::now_micros, |s| s * 1_000_000);
        Ok(vbs_service::Clock::Simulated {
            origin,
            wall_at,
            speed,
        })
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8776)),
            data_dir: PathBuf::from("./vbs-data"),
            catalog: None,
            catalog_max_connections: 8,
            auth: AuthMode::Noauth,
            allow_insecure_noauth: false,
            public_endpoint: None,
            backup_filters: vbs_service::DEFAULT_BACKUP_FILTERS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            log: "info,sqlx=warn".into(),
            log_format: LogFormat::Text,
            metrics_listen: None,
            repository: None,
            repository_credentials: None,
            encryption: true,
            repository_key_file: None,
            repository_key: None,
            role: "api,worker,scheduler".into(),
            node_name: None,
            backup_workers: 2,
            worker_nice: 10,
            list_cache_mib: 64,
            job_lease_secs: 30,
            job_max_attempts: 3,
            gc_interval_secs: 3600,
            scheduler_tick_secs: 10,
            quota: QuotaConfig::default(),
            manageable_roots: Vec::new(),
            scheduler_clock: None,
            keystone: None,
        }
    }
}

/// Values given as flags; only those present override the layers below.
#[derive(Debug, Default, Serialize)]
pub struct Flags {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub catalog: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthMode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
}

/// Top-level keys the environment may set (other `VBS_*` variables are not ours).
const ENV_KEYS: &[&str] = &[
    "listen",
    "data_dir",
    "catalog",
    "catalog_max_connections",
    "auth",
    "allow_insecure_noauth",
    "public_endpoint",
    "backup_filters",
    "log",
    "log_format",
    "metrics_listen",
    "repository",
    "repository_credentials",
    "encryption",
    "repository_key_file",
    "repository_key",
    "role",
    "node_name",
    "backup_workers",
    "worker_nice",
    "list_cache_mib",
    "job_lease_secs",
    "job_max_attempts",
    "gc_interval_secs",
    "scheduler_tick_secs",
    "quota",
    "manageable_roots",
    "scheduler_clock",
    "keystone",
];

impl Config {
    pub fn load(file: Option<&Path>, flags: &Flags) -> anyhow::Result<Config> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                bail!("configuration file {} does not exist", path.display());
            }
            fig = fig.merge(Toml::file(path));
        }
        let env = Env::prefixed("VBS_").split("__").filter(|k| {
            let top = k
                .as_str()
                .split('.')
                .next()
                .unwrap_or("")
                .to_ascii_lowercase();
            ENV_KEYS.contains(&top.as_str())
        });
        let config: Config = fig
            .merge(env)
            .merge(Serialized::defaults(flags))
            .extract()
            .context("invalid configuration")?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> anyhow::Result<()> {
        match self.auth {
            AuthMode::Noauth if !self.listen.ip().is_loopback() && !self.allow_insecure_noauth => {
                bail!(
                    "auth = \"noauth\" trusts any caller; it only listens on a loopback address \
                     (set allow_insecure_noauth = true to override)"
                )
            }
            AuthMode::Keystone if self.keystone.is_none() => {
                bail!("auth = \"keystone\" needs a [keystone] section in the configuration")
            }
            _ => {}
        }
        self.roles()?;
        if self.catalog_max_connections == 0 {
            bail!("catalog_max_connections must be at least 1");
        }
        if !(0..=19).contains(&self.worker_nice) {
            bail!(
                "worker_nice must be between 0 and 19, not {}",
                self.worker_nice
            );
        }
        Ok(())
    }

    /// The roles this node runs.
    pub fn roles(&self) -> anyhow::Result<Roles> {
        let mut roles = Roles::default();
        for r in self
            .role
            .split(',')
            .map(str::trim)
            .filter(|r| !r.is_empty())
        {
            match r {
                "api" => roles.api = true,
                "worker" => roles.worker = true,
                "scheduler" => roles.scheduler = true,
                other => bail!("unknown role {other:?} (roles: api, worker, scheduler)"),
            }
        }
        if !(roles.api || roles.worker || roles.scheduler) {
            bail!("role must name at least one of api, worker, scheduler");
        }
        Ok(roles)
    }

    /// This node's name in the catalog.
    /// This node's name: `node_name`, or by default the host name and the process id,
    /// so that two processes on one host never share one.
    pub fn node_name(&self) -> String {
        self.node_name
            .clone()
            .unwrap_or_else(|| format!("{}-{}", host_name(), std::process::id()))
    }

    /// The repository's URL (or directory).
    pub fn repository_url(&self) -> String {
        self.repository.clone().unwrap_or_else(|| {
            self.data_dir
                .join("repository")
                .to_string_lossy()
                .into_owned()
        })
    }

    /// The backup repository this node reads and writes.
    pub async fn open_repository(&self) -> anyhow::Result<vbs_repository::Store> {
        let url = self.repository_url();
        let creds = self
            .repository_credentials
            .clone()
            .unwrap_or_default()
            .with_env();
        let store = vbs_repository::Store::open(&url, &creds)
            .await
            .with_context(|| format!("opening repository {}", redact_url(&url)))?;
        tracing::info!(repository = %store.location(), "repository ready");
        Ok(store)
    }

    /// The master key file this node reads (and creates for a new repository).
    pub fn key_file(&self) -> PathBuf {
        self.repository_key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("repository.key"))
    }

    /// How the repository in `store` opens: with the configured master key (from
    /// `VBS_REPOSITORY_KEY` or the key file), or plaintext. `create`: the caller found
    /// the repository empty, without keys, and encryption on, so a missing key file is
    /// made (the service; tools that only read never make one). [`vbs_engine::Engine::open`]
    /// checks again that the repository is empty before it makes keys.
    pub async fn encryption(
        &self,
        store: &vbs_repository::Store,
        create: bool,
    ) -> anyhow::Result<vbs_engine::Encryption> {
        use vbs_engine::{Encryption, MasterKey};
        if let Some(hex) = &self.repository_key {
            let key = MasterKey::from_hex(&hex.0)
                .map_err(|e| anyhow::anyhow!("repository_key (VBS_REPOSITORY_KEY): {e}"))?;
            return Ok(Encryption::Key(key));
        }
        let path = self.key_file();
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                use std::os::unix::fs::PermissionsExt as _;
                if let Ok(meta) = std::fs::metadata(&path)
                    && meta.permissions().mode() & 0o077 != 0
                {
                    tracing::warn!(file = %path.display(), "the repository key file is readable by others than its owner (chmod 600)");
                }
                let key = MasterKey::from_hex(&text)
                    .map_err(|e| anyhow::anyhow!("key file {}: {e}", path.display()))?;
                Ok(Encryption::Key(key))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let location = store.location();
                let encrypted = store
                    .exists(vbs_engine::crypt::KEYS_KEY)
                    .await
                    .with_context(|| format!("reading repository {location}"))?;
                if encrypted {
                    bail!(
                        "repository {location} is encrypted and its master key is missing: \
                         no key file {} and no VBS_REPOSITORY_KEY",
                        path.display()
                    );
                }
                if !create {
                    return Ok(Encryption::Off);
                }
                let key = MasterKey::generate();
                write_key_file(&path, &key)?;
                tracing::warn!(
                    file = %path.display(),
                    fingerprint = %key.fingerprint(),
                    repository = %location,
                    "created the repository's master key: back this file up, apart from the \
                     repository; without it no backup can be read"
                );
                Ok(Encryption::Key(key))
            }
            Err(e) => Err(e).with_context(|| format!("reading key file {}", path.display())),
        }
    }

    /// The engine over the configured repository, its keys opened (see
    /// [`Self::encryption`]). With `creator`, a new repository may get its keys here:
    /// under the catalog's exclusive repository lock, so that nodes starting together
    /// on a new shared repository agree on one set of keys (the first writes them, the
    /// others find them).
    pub async fn open_engine(
        &self,
        options: Option<vbs_engine::EngineOptions>,
        creator: Option<&vbs_catalog::Catalog>,
    ) -> anyhow::Result<vbs_engine::Engine> {
        let store = self.open_repository().await?;
        let options = options.unwrap_or_else(|| vbs_engine::EngineOptions::for_store(&store));
        // Keys are only ever made for a repository with no data (a plaintext one stays
        // as it is), so only then is the lock worth waiting for: when it has none, or
        // has keys that a torn write may have damaged (`Engine::open` makes them again
        // then, and must not race another node doing the same).
        let may_create = self.encryption && vbs_engine::Engine::is_empty(&store).await?;
        let lock = match creator {
            Some(catalog) if may_create => {
                let holder = format!("keys/{}", uuid::Uuid::new_v4().simple());
                let lease =
                    i64::try_from(self.job_lease_secs.max(1) * 1_000_000).unwrap_or(i64::MAX);
                while !catalog
                    .lock_repository(&holder, vbs_catalog::LockMode::Exclusive, lease)
                    .await?
                {
                    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                }
                Some((catalog, holder))
            }
            _ => None,
        };
        let opened = async {
            let encryption = self.encryption(&store, lock.is_some()).await?;
            let engine = vbs_engine::Engine::open(store, options, &encryption).await?;
            anyhow::Ok((encryption, engine))
        }
        .await;
        if let Some((catalog, holder)) = &lock
            && let Err(e) = catalog.unlock_repository(holder).await
        {
            tracing::warn!(error = %e, "releasing the repository lock failed; it expires with its lease");
        }
        let (encryption, engine) = opened?;
        if let vbs_engine::Encryption::Key(k) = &encryption
            && engine.is_encrypted()
        {
            tracing::info!(key = %k.fingerprint(), "repository encrypted; keep a copy of its master key apart from it");
        }
        Ok(engine)
    }

    pub fn catalog_options(&self) -> vbs_catalog::CatalogOptions {
        let mut o = match &self.catalog {
            Some(url) => vbs_catalog::CatalogOptions {
                url: url.clone(),
                max_connections: 8,
            },
            None => vbs_catalog::CatalogOptions::sqlite_in(&self.data_dir),
        };
        o.max_connections = self.catalog_max_connections;
        o
    }
}

/// Writes a new key file: created, never overwritten, mode 0600, synced.
pub fn write_key_file(path: &Path, key: &vbs_engine::MasterKey) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating key file {}", path.display()))?;
    writeln!(f, "{}", key.to_hex())?;
    f.sync_all()?;
    Ok(())
}
