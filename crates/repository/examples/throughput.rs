//! Put/get throughput of 4 MiB objects (pack-sized) through `Store`, with a fixed
//! number of requests in flight: a quick comparison of backends, not a benchmark suite.
//!
//! ```text
//! cargo run --release -p vbs-repository --example throughput -- URL [OBJECTS] [IN_FLIGHT]
//!
//! # local directory, Swift (tempauth), S3 (Swift's s3api) from scripts/swift-aio.sh:
//! cargo run --release -p vbs-repository --example throughput -- /tmp/vbs-tp
//! ST_USER=test:tester ST_KEY=testing cargo run ... -- swift+tempauth://127.0.0.1:8080/vbs-tp
//! AWS_ACCESS_KEY_ID=test:tester AWS_SECRET_ACCESS_KEY=testing cargo run ... -- \
//!     's3://vbs-tp?endpoint=http://127.0.0.1:8080'
//! ```
//!
//! Credentials come from the environment ([`Credentials::with_env`]). Objects are
//! written under `throughput/`, read back and compared, then deleted; the S3 bucket
//! must exist (a Swift container is created by `Store::open`). Each run does 3 rounds
//! and prints each round and the median, in MB/s (10^6 bytes).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use vbs_repository::{Credentials, Store};

const OBJECT_SIZE: usize = 4 * 1024 * 1024;
const ROUNDS: usize = 3;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .ok_or("usage: throughput URL [OBJECTS=64] [IN_FLIGHT=8]")?;
    let objects: usize = args.next().map_or(Ok(64), |v| v.parse())?;
    let in_flight: usize = args.next().map_or(Ok(8), |v| v.parse())?;

    let store = Store::open(&url, &Credentials::default().with_env()).await?;
    println!(
        "{}: {objects} objects of {} MiB, {in_flight} in flight",
        store.location(),
        OBJECT_SIZE >> 20
    );
    // Distinct, incompressible-looking bodies (xorshift), made once.
    let bodies: Vec<Bytes> = (0..objects)
        .map(|i| {
            let mut x = 0x9e37_79b9_7f4a_7c15_u64 ^ (i as u64 + 1);
            let mut v = Vec::with_capacity(OBJECT_SIZE);
            while v.len() < OBJECT_SIZE {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                v.extend_from_slice(&x.to_le_bytes());
            }
            Bytes::from(v)
        })
        .collect();
    #[allow(clippy::cast_precision_loss)] // a few GiB at most: exact in an f64
    let total = (objects * OBJECT_SIZE) as f64;

    let (mut puts, mut gets) = (Vec::new(), Vec::new());
    for round in 1..=ROUNDS {
        let t = Instant::now();
        run(&store, in_flight, &bodies, |store, key, body| async move {
            store.put(&key, body).await?;
            Ok(())
        })
        .await?;
        let put = total / t.elapsed().as_secs_f64() / 1e6;

        let t = Instant::now();
        run(&store, in_flight, &bodies, |store, key, body| async move {
            if store.get(&key).await? != body {
                return Err(format!("{key} read back different").into());
            }
            Ok(())
        })
        .await?;
        let get = total / t.elapsed().as_secs_f64() / 1e6;

        run(&store, in_flight, &bodies, |store, key, _| async move {
            store.delete(&key).await?;
            Ok(())
        })
        .await?;
        println!("round {round}: put {put:.0} MB/s, get {get:.0} MB/s");
        puts.push(put);
        gets.push(get);
    }
    puts.sort_by(f64::total_cmp);
    gets.sort_by(f64::total_cmp);
    println!(
        "median: put {:.0} MB/s, get {:.0} MB/s",
        puts[ROUNDS / 2],
        gets[ROUNDS / 2]
    );
    Ok(())
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Runs `op` on every body, at most `in_flight` at once.
async fn run<F, Fut>(
    store: &Store,
    in_flight: usize,
    bodies: &[Bytes],
    op: F,
) -> Result<(), BoxError>
where
    F: Fn(Store, String, Bytes) -> Fut,
    Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
{
    let limit = Arc::new(Semaphore::new(in_flight));
    let mut tasks = JoinSet::new();
    for (i, body) in bodies.iter().enumerate() {
        let permit = limit.clone().acquire_owned().await?;
        let fut = op(store.clone(), format!("throughput/{i:04}"), body.clone());
        tasks.spawn(async move {
            let result = fut.await;
            drop(permit);
            result
        });
    }
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    Ok(())
}
