//! Keeping a lease: whatever holds a row with a lease (a claimed job, the repository
//! lock) renews it every third of its length, and must stop the work it guards once
//! the lease is gone, or once it could not renew it for half its length: past that
//! point another node may take the work over.

use std::future::Future;
use std::time::{Duration, Instant};

use vbs_catalog::CatalogError;

/// Spawns the renewal of a lease of length `lease`. `renew` returns whether the lease
/// is still held (`Ok(false)`: taken over, expired); `lost` runs once when the holder
/// must stop, and the task ends. Abort the task when the work is done.
pub fn keep_lease<R, F>(
    lease: Duration,
    what: String,
    mut renew: R,
    lost: impl FnOnce() + Send + 'static,
) -> tokio::task::JoinHandle<()>
where
    R: FnMut() -> F + Send + 'static,
    F: Future<Output = Result<bool, CatalogError>> + Send,
{
    tokio::spawn(async move {
        let mut renewed = Instant::now();
        loop {
            tokio::time::sleep(lease / 3).await;
            match renew().await {
                Ok(true) => renewed = Instant::now(),
                Ok(false) => {
                    tracing::warn!(%what, "lease lost; stopping");
                    break;
                }
                Err(e) => tracing::warn!(%what, error = %e, "renewing a lease failed"),
            }
            if renewed.elapsed() > lease / 2 {
                tracing::warn!(%what, "could not renew the lease for half its length; stopping");
                break;
            }
        }
        lost();
    })
}
