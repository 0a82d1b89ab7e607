//! Injected faults (issue 16): the crash campaign of [`crate::crash`] run again with a
//! store that fails, stalls, truncates reads and tears writes at random
//! (`VBS_STORE_FAULTS`, crates/repository/src/faults.rs) while the server is killed
//! with SIGKILL. The invariants are the crash campaign's, checked after every kill:
//! no backup is `available` whose data is not complete (`vbs admin engine verify`,
//! run without faults, re-reads and re-hashes all it needs), every restore of an
//! `available` backup is byte-identical or fails saying why (and a retry succeeds),
//! every status settles, and GC never removed what an `available` backup needs.
//!
//! CI runs a short campaign (4 kill points per operation);
//! `VBS_FAULT_CAMPAIGN_POINTS=20` makes it the long one (`bench/faults`).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;

use crate::crash::{self, StoreFaults};
use crate::support::Backend;

/// Kill points per operation: 2 in CI, `VBS_FAULT_CAMPAIGN_POINTS` for the long run.
fn points(ci: u64) -> u64 {
    std::env::var("VBS_FAULT_CAMPAIGN_POINTS")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(ci)
}

/// Faults injected, by kind, as the processes logged them (`VBS_STORE_FAULTS_LOG`).
pub(crate) fn injected(log: &Path) -> BTreeMap<String, u64> {
    let mut out: BTreeMap<String, u64> = ["fail", "delay", "truncate", "torn"]
        .into_iter()
        .map(|k| (k.to_owned(), 0))
        .collect();
    for line in std::fs::read_to_string(log).unwrap_or_default().lines() {
        let kind = line.split(' ').next().unwrap_or_default();
        *out.entry(kind.to_owned()).or_default() += 1;
    }
    out
}

/// The campaign's one summary line.
pub(crate) fn summary(what: &str, runs: u64, kills: u64, faults: &BTreeMap<String, u64>) -> String {
    format!(
        "fault campaign ({what}): runs {runs}, kills {kills}, faults injected {} (fail {}, \
         delay {}, truncate {}, torn {}), failures 0",
        faults.values().sum::<u64>(),
        faults["fail"],
        faults["delay"],
        faults["truncate"],
        faults["torn"],
    )
}

/// A single node on `SQLite` with a local repository: faults and kills in every
/// operation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_faults_and_kill_9_single_node_sqlite() {
    let log = std::env::temp_dir().join(format!("vbs-faults-{}.log", uuid::Uuid::new_v4()));
    let spec = "seed=16,fail=0.05,delay=0.1,delay_ms=100,truncate=0.05,torn=0.08";
    let counts = crash::run(
        Backend::Sqlite,
        points(4),
        Some(StoreFaults {
            spec: spec.into(),
            log: log.clone(),
        }),
    )
    .await;
    let faults = injected(&log);
    let _ = std::fs::remove_file(&log);
    eprintln!("{counts:?}");
    println!(
        "{}",
        summary("sqlite, one node", counts.runs, counts.kills, &faults)
    );
    for kind in ["fail", "delay", "truncate", "torn"] {
        assert!(faults[kind] > 0, "no {kind} fault was injected: {faults:?}");
    }
}
