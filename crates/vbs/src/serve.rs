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

pub async fn run(
    config: Config,
    listener: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let roles = config.roles()?;
    let node = config.node_name();
    let instance = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    let catalog = Catalog::open(&config.catalog_options())
        .await
        .context("opening the catalog")?;
    tracing::info!(dialect = ?catalog.dialect(), %node, %roles, "catalog ready");
    let pool = Pool::open(&config.data_dir).context("opening the volume pool")?;
    let lease = Duration::from_secs(config.job_lease_secs.max(1));
    // Copies, deletes and extends of volumes run inside the process that took the
    // request and keep their row fresh; the sweep at start-up (all of them on SQLite,
    // where this is the only process) and the scheduler's (those unchanged for a lease:
    // their node died) fail the ones whose process is gone.
    let volumes = VolumeService::new(catalog.clone(), pool).with_heartbeat(lease / 3);
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
    let works = roles.worker && config.backup_workers > 0;
    if works {
        // The repository: only workers touch backup bytes.
        let store = config.open_repository().await?;
        let options = vbs_engine::EngineOptions::for_store(&store);
        let engine = vbs_engine::Engine::new(store, options);
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
        tasks.spawn(worker.run(tasks_stop.clone()));
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
    // The node's presence: API nodes send work only while some worker is alive.
    let announced = Roles {
        worker: works,
        ..roles
    }
    .to_string();
    let started = vbs_catalog::ts::now_micros();
    catalog
        .heartbeat_node(&node, &instance, &announced, started, micros(lease))
        .await
        .context("announcing this node in the catalog")?;
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
                if let Err(e) = catalog
                    .heartbeat_node(&node, &instance, &announced, started, micros(lease))
                    .await
                {
                    tracing::warn!(error = %e, "renewing this node's presence failed");
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
            backups: BackupService::new(catalog.clone(), config.backup_filters.clone()),
            volumes,
            lifecycle,
            auth: Arc::new(auth),
            public_endpoint: config.public_endpoint.as_deref().map(Arc::from),
        };
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
