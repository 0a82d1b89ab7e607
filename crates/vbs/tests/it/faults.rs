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
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

mod services;

use self::services::{PrivatePostgres, Proxy};
use crate::cluster::Cluster;
use crate::crash::{self, StoreFaults};
use crate::support::Backend;
use crate::support::image::{self, MIB, Rng, assert_same};

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
    // Tears only hit new objects, of which a short campaign stores about a dozen: a
    // high rate, so that most runs tear some (the seed is mixed with each process's
    // id, so runs differ).
    let spec = "seed=16,fail=0.05,delay=0.1,delay_ms=100,truncate=0.05,torn=0.2";
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
    // Every kind is proven by the store's own tests; here, damage must have reached
    // the engine (a run without any would prove nothing), whichever kinds it was.
    assert!(
        faults["fail"] + faults["truncate"] + faults["torn"] > 0,
        "no damaging fault was injected: {faults:?}"
    );
}

const GIB: u64 = 1 << 30;
/// How long interrupted work may take to end after a disturbance (a lease is 3 s).
const SETTLE: Duration = Duration::from_mins(3);

fn status(v: &Value) -> &str {
    v["status"].as_str().unwrap_or_default()
}

fn busy(v: &Value) -> bool {
    matches!(
        status(v),
        "creating"
            | "restoring"
            | "deleting"
            | "backing-up"
            | "restoring-backup"
            | "downloading"
            | "extending"
    )
}

/// Lists `what` (`backups`, `volumes`) once the API answers (it may not, for a
/// moment, while `PostgreSQL` restarts).
async fn listed(c: &Cluster, what: &str) -> BTreeMap<String, Value> {
    let deadline = Instant::now() + SETTLE;
    loop {
        let (st, b) = c.call(Method::GET, &format!("{what}/detail"), None).await;
        if st == 200 {
            return b[what]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| (x["id"].as_str().unwrap().to_owned(), x.clone()))
                .collect();
        }
        assert!(Instant::now() < deadline, "GET {what}: {st} {b}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A request, sent again while the API answers 503 (it does, for a moment, while its
/// catalog connections find `PostgreSQL` restarted): "retry later" is what it says.
async fn call(c: &Cluster, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (st, b) = c.call(method.clone(), path, body.clone()).await;
        if st != 503 || Instant::now() > deadline {
            return (st, b);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until no backup and no volume is in a transitional status.
async fn settle(c: &Cluster) -> (BTreeMap<String, Value>, BTreeMap<String, Value>) {
    let deadline = Instant::now() + SETTLE;
    loop {
        let (b, v) = (listed(c, "backups").await, listed(c, "volumes").await);
        if !b.values().chain(v.values()).any(busy) {
            return (b, v);
        }
        assert!(
            Instant::now() < deadline,
            "left in a transitional status for {SETTLE:?}: backups {b:?} volumes {v:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Restores `backup` to a new volume until one restore succeeds (a restore may fail
/// on an injected fault, saying so); the volume must equal `expected`. Returns the
/// failed attempts.
/// What a backup of the source must restore: its data region (the first 16 MiB, where
/// it is filled and mutated) in a sparse 1 GiB file. A whole copy per backup (`fs::copy`
/// writes the holes out) filled the disk in the long campaign: Swift's object server
/// then answered 507 and the test itself failed with ENOSPC.
fn keep_data(volume: &Path, to: &Path) {
    use std::os::unix::fs::FileExt as _;
    let mut buf = vec![0u8; (16 * MIB) as usize];
    std::fs::File::open(volume)
        .unwrap()
        .read_exact_at(&mut buf, 0)
        .unwrap();
    let f = std::fs::File::create(to).unwrap();
    f.write_all_at(&buf, 0).unwrap();
    f.set_len(GIB).unwrap();
}

async fn restore_until_ok(c: &Cluster, backup: &str, expected: &Path) -> u64 {
    for failed in 0..10 {
        let (st, r) = call(
            c,
            Method::POST,
            &format!("backups/{backup}/restore"),
            Some(json!({"restore": {}})),
        )
        .await;
        assert_eq!(st, 202, "restore {backup}: {r}");
        let vid = r["restore"]["volume_id"].as_str().unwrap().to_owned();
        let (_, vols) = settle(c).await;
        let v = &vols[&vid];
        let ok = status(v) == "available";
        if ok {
            assert_same(expected, &c.volume_file(&vid), GIB);
        } else {
            assert_eq!(status(v), "error", "restored volume: {v}");
        }
        let (st, b) = call(c, Method::DELETE, &format!("volumes/{vid}"), None).await;
        assert_eq!(st, 202, "{b}");
        if ok {
            return failed;
        }
    }
    panic!("available backup {backup} failed 10 restores in a row");
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Disturbance {
    KillWorker,
    KillProxy,
    RestartPostgres,
}

/// An API node and two workers on a `PostgreSQL` of the test's own and Swift through a
/// proxy of its own, the workers injecting store faults. Each operation (full,
/// incremental, restore, delete + GC) is disturbed once, in turn: a worker killed with
/// SIGKILL (and started again), the Swift proxy killed mid-upload (and started again
/// after up to 3 s), or `PostgreSQL` crashed and restarted. After each: every status
/// settles, `vbs admin verify` (no faults) finds every `available` backup whole, the
/// new ones (and one older one) restore byte for byte; at the end all of them do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_faults_swift_proxy_kills_and_postgres_restarts_cluster() {
    let started = Instant::now();
    let pg = PrivatePostgres::start();
    let mut proxy = Proxy::start();
    let log = std::env::temp_dir().join(format!("vbs-faults-{}.log", uuid::Uuid::new_v4()));
    let spec = "seed=17,fail=0.03,delay=0.05,delay_ms=200,truncate=0.02,torn=0.05";
    let repository = format!(
        "swift+tempauth://127.0.0.1:{}/vbs-faults-{}",
        proxy.port,
        uuid::Uuid::new_v4().simple()
    );
    let mut c = Cluster::start_on(
        &pg.root(),
        repository,
        vec![
            ("VBS_STORE_FAULTS".into(), spec.into()),
            (
                "VBS_STORE_FAULTS_LOG".into(),
                log.to_string_lossy().into_owned(),
            ),
        ],
        &[],
    );
    // Workers may fail to start on a fault while they open the repository (they exit,
    // as they should): started again, as a supervisor would.
    let mut failed_starts = 0;
    let mut start_worker = |c: &mut Cluster, name: &str| {
        for _ in 0..20 {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| c.start_worker(name)));
            if r.is_ok() {
                return;
            }
            failed_starts += 1;
            // The dead start's node name is free once its lease (3 s) runs out.
            std::thread::sleep(Duration::from_millis(500));
        }
        panic!("worker {name} never started");
    };
    start_worker(&mut c, "w1");
    start_worker(&mut c, "w2");
    let source = c.volume("faults-source").await;
    c.wait("volumes", "volume", &source, "available").await;
    let refs = c.api.dir().join("expected");
    std::fs::create_dir_all(&refs).unwrap();
    image::fill(&c.volume_file(&source), 0, 16, 7);

    let mut rng = Rng::new(16_2026);
    let mut expected: BTreeMap<String, PathBuf> = BTreeMap::new();
    let (mut runs, mut kills, mut restarts, mut restores_failed) = (0u64, 0u64, 0u64, 0u64);
    let mut checked = std::collections::BTreeSet::<String>::new();
    let rounds = points(3);
    let ops = ["full", "incremental", "restore", "delete"];
    let mut n = 0u64;
    for round in 0..rounds {
        for (i, op) in ops.iter().enumerate() {
            let (backups, _) = settle(&c).await;
            let available: Vec<&String> = backups
                .iter()
                .filter(|(_, b)| status(b) == "available")
                .map(|(id, _)| id)
                .collect();
            let leaves: Vec<&String> = backups
                .iter()
                .filter(|(_, b)| status(b) == "available" && b["has_dependent_backups"] == false)
                .map(|(id, _)| id)
                .collect();
            let op = match *op {
                "incremental" | "restore" if available.is_empty() => "full",
                "delete" if leaves.is_empty() => "full",
                other => other,
            };
            n += 1;
            runs += 1;
            let (method, path, body, target) = match op {
                "full" | "incremental" => {
                    image::mutate(&c.volume_file(&source), 16 * MIB, 64, 1000 + n);
                    keep_data(&c.volume_file(&source), &refs.join("pending"));
                    (
                        Method::POST,
                        "backups".to_owned(),
                        Some(
                            json!({"backup": {"volume_id": source, "incremental": op == "incremental"}}),
                        ),
                        None,
                    )
                }
                "restore" => {
                    let t = available[rng.below(available.len() as u64) as usize].clone();
                    (
                        Method::POST,
                        format!("backups/{t}/restore"),
                        Some(json!({"restore": {}})),
                        Some(t),
                    )
                }
                _ => {
                    let t = leaves[rng.below(leaves.len() as u64) as usize].clone();
                    (Method::DELETE, format!("backups/{t}"), None, Some(t))
                }
            };
            let (st, answer) = call(&c, method, &path, body).await;
            assert_eq!(st, 202, "{op}: {answer}");
            let disturbance = [
                Disturbance::KillWorker,
                Disturbance::KillProxy,
                Disturbance::RestartPostgres,
            ][(round as usize * ops.len() + i) % 3];
            tokio::time::sleep(Duration::from_millis(rng.below(1500))).await;
            match disturbance {
                Disturbance::KillWorker => {
                    let name = if rng.below(2) == 0 { "w1" } else { "w2" };
                    c.kill(name);
                    kills += 1;
                    start_worker(&mut c, name);
                }
                Disturbance::KillProxy => {
                    proxy.kill();
                    kills += 1;
                    tokio::time::sleep(Duration::from_millis(rng.below(3000))).await;
                    proxy.up();
                }
                Disturbance::RestartPostgres => {
                    pg.restart();
                    restarts += 1;
                }
            }
            let (after, vols) = settle(&c).await;
            let outcome = match op {
                "full" | "incremental" => {
                    let id = answer["backup"]["id"].as_str().unwrap().to_owned();
                    let path = refs.join(&id);
                    std::fs::rename(refs.join("pending"), &path).unwrap();
                    expected.insert(id.clone(), path);
                    format!("{} {}", status(&after[&id]), after[&id]["fail_reason"])
                }
                "restore" => {
                    let t = target.clone().unwrap();
                    assert_eq!(
                        status(&after[&t]),
                        "available",
                        "a restore leaves its backup available"
                    );
                    let vid = answer["restore"]["volume_id"].as_str().unwrap().to_owned();
                    let st = status(&vols[&vid]).to_owned();
                    match st.as_str() {
                        "available" => assert_same(&expected[&t], &c.volume_file(&vid), GIB),
                        "error" => {}
                        other => panic!("restored volume {vid} ends {other}"),
                    }
                    let (code, b) = call(&c, Method::DELETE, &format!("volumes/{vid}"), None).await;
                    assert_eq!(code, 202, "{b}");
                    format!("volume {st}")
                }
                _ => {
                    let t = target.clone().unwrap();
                    match after.get(&t) {
                        None => "gone".to_owned(),
                        Some(b) => {
                            assert!(
                                matches!(status(b), "error" | "error_deleting"),
                                "an accepted delete ends {b}"
                            );
                            status(b).to_owned()
                        }
                    }
                }
            };
            eprintln!("faults cluster: round {round} {op} {disturbance:?}: {outcome}");
            // The invariants.
            for b in after.values() {
                if status(b).starts_with("error") {
                    assert!(
                        !b["fail_reason"].as_str().unwrap_or_default().is_empty(),
                        "a failed backup says why: {b}"
                    );
                }
            }
            assert_eq!(
                status(&vols[&source]),
                "available",
                "the source volume is given back"
            );
            let available: Vec<String> = after
                .iter()
                .filter(|(_, b)| status(b) == "available")
                .map(|(id, _)| id.clone())
                .collect();
            if !available.is_empty() {
                let out = c.admin_verify(&available);
                assert!(
                    out.status.success(),
                    "verify after {disturbance:?}: {}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                let new: Vec<&String> = available
                    .iter()
                    .filter(|id| !checked.contains(*id))
                    .collect();
                let old = available[rng.below(available.len() as u64) as usize].clone();
                let mut to_check: Vec<String> = new.into_iter().cloned().collect();
                to_check.push(old);
                to_check.dedup();
                for id in to_check {
                    restores_failed += restore_until_ok(&c, &id, &expected[&id]).await;
                    checked.insert(id);
                }
            }
        }
    }
    // At the end every available backup restores.
    let (after, _) = settle(&c).await;
    let mut restores = 0;
    for (id, b) in &after {
        if status(b) == "available" {
            restores_failed += restore_until_ok(&c, id, &expected[id]).await;
            restores += 1;
        }
    }
    let faults = injected(&log);
    let _ = std::fs::remove_file(&log);
    eprintln!(
        "faults cluster: {restores} backups restored at the end, {restores_failed} restores failed \
         on a fault and were retried, {failed_starts} worker starts failed on a fault, \
         PostgreSQL restarted {restarts} times, {:?}",
        started.elapsed()
    );
    println!(
        "{}",
        summary(
            "PostgreSQL + Swift, API + 2 workers",
            runs,
            kills + restarts,
            &faults
        )
    );
    assert!(faults.values().sum::<u64>() > 0, "no fault was injected");
    drop(c);
    drop(proxy);
    drop(pg);
}
