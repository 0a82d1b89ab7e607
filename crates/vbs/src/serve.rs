//! Start-up and shutdown of `vbs serve`, top to bottom: open the catalog and the volume
//! pool, fail work a previous run left unfinished, build the state, serve until the
//! shutdown signal, drain, close.

use std::future::Future;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;
use vbs_api::{AppState, Authenticator, Keystone};
use vbs_catalog::Catalog;
use vbs_engine::pool::Pool;
use vbs_service::{BackupLifecycle, BackupService, BackupWorker, VolumeService, WorkerOptions};

use crate::config::{AuthMode, Config};

pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    let catalog = Catalog::open(&config.catalog_options())
        .await
        .context("opening the catalog")?;
    tracing::info!(dialect = ?catalog.dialect(), "catalog ready");
    let pool = Pool::open(&config.data_dir).context("opening the volume pool")?;
    let volumes = VolumeService::new(catalog.clone(), pool);
    // Copies and deletes run inside this process: any left running are gone.
    let failed = volumes
        .recover()
        .await
        .map_err(|e| anyhow::anyhow!("marking interrupted volume work failed: {e}"))?;
    if failed > 0 {
        tracing::warn!(
            failed,
            "volume work interrupted by the last shutdown marked failed"
        );
    }

    // The repository, the backup lifecycle and its workers.
    let repo_dir = config
        .repository
        .clone()
        .unwrap_or_else(|| config.data_dir.join("repository"));
    let store = vbs_repository::Store::local(&repo_dir)
        .with_context(|| format!("opening repository {}", repo_dir.display()))?;
    let engine = vbs_engine::Engine::new(store, vbs_engine::EngineOptions::default());
    let host = format!("vbs@{}", config.listen);
    let lifecycle = BackupLifecycle::new(catalog.clone(), volumes.clone(), host);
    let recovered = lifecycle
        .recover()
        .await
        .map_err(|e| anyhow::anyhow!("recovering interrupted backup work: {e}"))?;
    if recovered > 0 {
        tracing::warn!(
            recovered,
            "backup work interrupted by the last shutdown recovered"
        );
    }
    let (stop_workers, workers_stop) = tokio::sync::watch::channel(false);
    let mut workers = tokio::task::JoinSet::new();
    if config.backup_workers > 0 {
        let worker = BackupWorker::new(
            lifecycle.clone(),
            engine,
            WorkerOptions {
                concurrency: config.backup_workers,
                lease: std::time::Duration::from_secs(config.job_lease_secs.max(1)),
                ..WorkerOptions::default()
            },
        );
        workers.spawn(worker.run(workers_stop));
    }

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
    tracing::info!("shutting down");
    let _ = stop_workers.send(true);
    while workers.join_next().await.is_some() {}
    catalog.close().await;
    Ok(())
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
