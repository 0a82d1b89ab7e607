//! Start-up and shutdown of `vbs serve`, top to bottom: open the catalog and the volume
//! pool, fail work a previous run left unfinished, build the state, serve until the
//! shutdown signal, drain, close.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use vbs_api::{AppState, Authenticator, Keystone};
use vbs_catalog::Catalog;
use vbs_engine::pool::Pool;
use vbs_service::{
    BackupLifecycle, BackupService, BackupWorker, SchedulerOptions, VolumeService, WorkerOptions,
    run_scheduler,
};

use crate::config::{AuthMode, Config, Roles};

/// The runtime of the jobs (backups, restores, deletes, GC, repository scans): threads
/// of its own, at `nice` CPU priority, so that the API's runtime is served first when
/// the CPU is short. Its blocking pool, where the engine hashes, compresses and
/// encrypts, inherits the priority.
pub fn jobs_runtime(nice: i32) -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .thread_name("vbs-jobs")
        .on_thread_start(move || {
            if nice > 0
                && let Err(e) = rustix::process::setpriority_process(None, nice)
            {
                tracing::warn!(error = %e, nice, "lowering a job thread's CPU priority failed");
            }
        })
        .enable_all()
        .build()
        .context("starting the jobs' runtime")
}

pub async fn run(
    config: Config,
    listener: Option<TcpListener>,
    jobs: tokio::runtime::Handle,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let roles = config.roles()?;
    let node = config.node_name();
    let host = crate::config::host_name();
    // Which process holds the node's name: this host, this pid, this start.
    let instance = format!(
        "{host}:{}:{}",
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    let catalog = Catalog::open(&config.catalog_options())
        .await
        .context("opening the catalog")?;
    tracing::info!(dialect = ?catalog.dialect(), %node, %roles, "catalog ready");
    catalog.set_quota_defaults(&config.quota.limits()?);
    let lease = Duration::from_secs(config.job_lease_secs.max(1));
    // The node's presence: API nodes send work only while some worker is alive. The
    // name is claimed before anything else is done: a live node that holds it keeps it.
    let works = roles.worker && config.backup_workers > 0;
    let announced = Roles {
        worker: works,
        ..roles
    }
    .to_string();
    let started = vbs_catalog::ts::now_micros();
    claim_name(
        &catalog,
        &node,
        &instance,
        &host,
        &announced,
        started,
        micros(lease),
    )
    .await?;
    let pool = Pool::open(&config.data_dir).context("opening the volume pool")?;
    // Copies, deletes and extends of volumes run inside the process that took the
    // request and keep their row fresh; the sweep at start-up (all of them on SQLite,
    // where this is the only process) and the scheduler's (those unchanged for a lease:
    // their node died) fail the ones whose process is gone.
    let volumes = VolumeService::new(catalog.clone(), pool)
        .with_heartbeat(lease / 3)
        .with_manageable_roots(manageable_roots(&config)?);
    let host = format!("vbs@{}", config.listen);
    let mut lifecycle = BackupLifecycle::new(catalog.clone(), volumes.clone(), host);
    if let Some(clock) = &config.scheduler_clock {
        lifecycle = lifecycle.with_clock(clock.clock()?);
        tracing::warn!(
            ?clock,
            "the policy scheduler goes by a simulated clock (test-only)"
        );
    }
    let recovered = lifecycle
        .recover(lease)
        .await
        .map_err(|e| anyhow::anyhow!("recovering interrupted backup work: {e}"))?;
    if recovered > 0 {
        tracing::warn!(
            recovered,
            "backup work interrupted by the last shutdown recovered"
        );
    }
    let (stop_tasks, tasks_stop) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    if works {
        // The repository: only workers touch backup bytes.
        let engine = config.open_engine(None, Some(&catalog)).await?;
        let worker = BackupWorker::new(
            lifecycle.clone(),
            engine,
            WorkerOptions {
                node: format!("{node}/{instance}"),
                concurrency: config.backup_workers,
                lease,
                max_attempts: i64::from(config.job_max_attempts.max(1)),
                ..WorkerOptions::default()
            },
        );
        tasks.spawn_on(worker.clone().scan_repository(tasks_stop.clone()), &jobs);
        tasks.spawn_on(worker.run(tasks_stop.clone()), &jobs);
    }
    if roles.scheduler {
        let options = SchedulerOptions {
            tick: Duration::from_secs(config.scheduler_tick_secs.max(1)),
            gc_interval: Duration::from_secs(config.gc_interval_secs.max(1)),
            grace: lease,
            node: format!("{node}/{instance}"),
            ..SchedulerOptions::default()
        };
        tasks.spawn(run_scheduler(
            lifecycle.clone(),
            options,
            tasks_stop.clone(),
        ));
    }
    {
        let (catalog, node, instance, mut stop) = (
            catalog.clone(),
            node.clone(),
            instance.clone(),
            tasks_stop.clone(),
        );
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(lease / 3) => {}
                    _ = stop.changed() => {}
                }
                if *stop.borrow() {
                    break;
                }
                match catalog
                    .heartbeat_node(&node, &instance, &announced, micros(lease))
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => tracing::error!(
                        %node,
                        "another process took this node's name over after its lease ran out; \
                         this node no longer counts as alive"
                    ),
                    Err(e) => tracing::warn!(error = %e, "renewing this node's presence failed"),
                }
            }
            let _ = catalog.remove_node(&node, &instance).await;
        });
    }

    if let Some(listener) = listener {
        let auth = match config.auth {
            AuthMode::Noauth => Authenticator::NoAuth,
            AuthMode::Keystone => {
                let opts = config.keystone.clone().context("keystone options")?;
                Authenticator::Keystone(Arc::new(Keystone::new(opts).map_err(anyhow::Error::msg)?))
            }
        };
        let state = AppState {
            backups: BackupService::new(catalog.clone(), config.backup_filters.clone())
                .with_page_cache(config.list_cache_mib.saturating_mul(1 << 20))
                .with_metrics(lifecycle.metrics().clone()),
            volumes,
            lifecycle,
            auth: Arc::new(auth),
            public_endpoint: config.public_endpoint.as_deref().map(Arc::from),
            access_log: config.log_format == crate::config::LogFormat::Json,
        };
        if let Some(addr) = config.metrics_listen {
            let metrics = TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding metrics_listen {addr}"))?;
            tracing::info!(addr = %metrics.local_addr()?, "serving /metrics");
            let app = vbs_api::metrics_router(state.clone());
            let mut stop = tasks_stop.clone();
            tasks.spawn(async move {
                let until = async move {
                    let _ = stop.changed().await;
                };
                if let Err(e) = axum::serve(metrics, app)
                    .with_graceful_shutdown(until)
                    .await
                {
                    tracing::error!(error = %e, "serving /metrics failed");
                }
            });
        }
        let app = vbs_api::router(state);
        let addr = listener.local_addr()?;
        tracing::info!(%addr, auth = ?config.auth, "serving");
        // One line on stdout tells scripts and tests that we are ready, and where: only
        // now, with the catalog migrated, so nothing they do races the migration.
        println!("listening on {addr}");
        std::io::Write::flush(&mut std::io::stdout())?;
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
            .context("serving")?;
    } else {
        tracing::info!(%node, %roles, "running without the API");
        println!("node {node} ready ({roles})");
        std::io::Write::flush(&mut std::io::stdout())?;
        shutdown.await;
    }
    tracing::info!("shutting down");
    let _ = stop_tasks.send(true);
    while tasks.join_next().await.is_some() {}
    catalog.close().await;
    Ok(())
}

/// The resolved directories manage-existing may adopt from; the default one is made.
fn manageable_roots(config: &Config) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let roots = if config.manageable_roots.is_empty() {
        let default = config.data_dir.join("manageable");
        std::fs::create_dir_all(&default)
            .with_context(|| format!("creating {}", default.display()))?;
        vec![default]
    } else {
        config.manageable_roots.clone()
    };
    let mut resolved = Vec::with_capacity(roots.len());
    for root in roots {
        match std::fs::canonicalize(&root) {
            Ok(r) => resolved.push(r),
            Err(e) => {
                tracing::warn!(root = %root.display(), error = %e, "a manageable root is unusable; skipped");
            }
        }
    }
    Ok(resolved)
}

/// Claims the node name, or fails saying who holds it. A holder that was a process of
/// this host that no longer runs (killed, crashed) is taken over at once instead of
/// after its lease.
async fn claim_name(
    catalog: &Catalog,
    node: &str,
    instance: &str,
    host: &str,
    roles: &str,
    started: i64,
    lease: i64,
) -> anyhow::Result<()> {
    let gone_here = |holder: &str| {
        let mut parts = holder.splitn(3, ':');
        let (h, pid) = (parts.next(), parts.next());
        h == Some(host)
            && pid.is_some_and(|p| {
                p.parse::<u32>().is_ok_and(|p| {
                    p != std::process::id() && !std::path::Path::new(&format!("/proc/{p}")).exists()
                })
            })
    };
    let stale = catalog
        .node(node)
        .await
        .context("reading this node's name in the catalog")?
        .map(|n| n.instance)
        .filter(|i| gone_here(i));
    match catalog
        .claim_node(node, instance, roles, started, lease, stale.as_deref())
        .await
        .context("announcing this node in the catalog")?
    {
        Ok(()) => Ok(()),
        Err(holder) => anyhow::bail!(
            "node name {node:?} is held by a live node (process {}, roles {}, started {}); \
             give each node its own node_name, or stop the other one",
            holder.instance,
            holder.roles,
            vbs_catalog::ts::format_api(holder.started_at)
        ),
    }
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
