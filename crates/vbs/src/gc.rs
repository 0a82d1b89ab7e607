//! `vbs admin gc`: one repository sweep from the command line, under the catalog's
//! repository lock like a worker's GC job, so it is safe while backups run on any node.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use vbs_catalog::{Catalog, LockMode};

use crate::config::Config;

pub async fn run(config: &Config) -> anyhow::Result<()> {
    let catalog = Catalog::open(&config.catalog_options())
        .await
        .context("opening the catalog")?;
    let engine = config
        .open_engine(Some(vbs_engine::EngineOptions::default()), None)
        .await?;
    let lease = Duration::from_secs(config.job_lease_secs.max(1));
    let lease_micros = i64::try_from(lease.as_micros()).unwrap_or(i64::MAX);
    let holder = format!("admin-gc/{}", uuid::Uuid::new_v4().simple());
    let waiting = Instant::now();
    while !catalog
        .lock_repository(&holder, LockMode::Exclusive, lease_micros)
        .await?
    {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tracing::info!(waited = ?waiting.elapsed(), "repository lock taken");
    let stop = Arc::new(AtomicBool::new(false));
    let renew = {
        let (catalog, holder, stop) = (catalog.clone(), holder.clone(), stop.clone());
        vbs_service::keep_lease(
            lease,
            holder.clone(),
            move || {
                let (catalog, holder) = (catalog.clone(), holder.clone());
                async move { catalog.renew_repository_lock(&holder, lease_micros).await }
            },
            move || stop.store(true, Ordering::SeqCst),
        )
    };
    let known = catalog
        .backup_ids_of_service(vbs_service::BACKUP_SERVICE)
        .await?;
    let shown = crate::progress::spinner("gc");
    let result = engine.gc_until(&stop, &known).await;
    shown.finish(if result.is_ok() { "swept" } else { "failed" });
    renew.abort();
    catalog.unlock_repository(&holder).await?;
    catalog.close().await;
    let stats = result.context("sweeping the repository")?;
    println!("{}", serde_json::to_string(&stats)?);
    Ok(())
}
