//! Crash tests ("kill -9 the server at random moments of backup, restore, delete and
//! GC"). A 1 GiB volume holding seeded data is backed up (full, and incremental after
//! mutated pages), restored to new volumes, and its backups are deleted (a delete runs
//! GC), while the real `vbs serve` is killed with SIGKILL and started again on the same
//! data directory. Each operation is first run once to measure it; the kills then land
//! at seeded delays spread over that duration (before the request is answered, while
//! the worker runs, after it finished), and shortly after seeded moments seen on disk
//! (the n-th pack stored, the manifest stored, part of a restore written, a deleted
//! backup's manifest gone while GC has yet to sweep), which a timer alone rarely hits.
//! On `SQLite` a restart runs interrupted jobs again at once; on `PostgreSQL` the new
//! process takes them over when their lease (1 s here) runs out. After each restart,
//! once the interrupted work has been run again or failed:
//!
//! 1. every `available` backup restores to a new volume byte for byte as the volume was
//!    when that backup was requested;
//! 2. `vbs admin engine verify` finds every `available` backup's manifest and every
//!    block it needs intact (no pack an available backup needs was collected);
//! 3. no backup and no volume is left in a transitional status, and a failed backup
//!    says why;
//! 4. a backup whose delete was accepted is gone or failed with a reason, one whose
//!    delete was never answered may also still be available (and then restores); a
//!    restore's new volume is byte-identical or failed, and its backup is available
//!    (one known gap, tolerated and marked where it is checked: a restore request cut
//!    between creating its volume and starting the restore leaves the volume empty
//!    and `available`).
//!
//! At the end every backup is deleted without kills: GC must leave no pack behind, so
//! the packs of interrupted backups were garbage that a sweep removes.
#![allow(
    clippy::unwrap_used,
    clippy::too_many_lines,
    clippy::many_single_char_names
)]

mod disk;
mod harness;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use self::disk::{Disk, Trigger};
use self::harness::{Crash, measure, pick};
use crate::support::image::{self, MIB, Rng, assert_same};
use crate::support::{Backend, Server, token};

const PROJECT: &str = "c0ffee00c0ffee00c0ffee00c0ffee00";
const GIB: u64 = 1 << 30;
/// The part of the 1 GiB volume that holds data.
const DATA: u64 = 64 * MIB;
/// How long interrupted work may take to be finished or failed after a restart.
const SETTLE: Duration = Duration::from_mins(1);
const MV: &str = "3.71";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    Full,
    Incremental,
    Restore,
    Delete,
}

const OPS: [Op; 4] = [Op::Full, Op::Incremental, Op::Restore, Op::Delete];

fn busy(status: &str) -> bool {
    matches!(
        status,
        "creating"
            | "restoring"
            | "deleting"
            | "backing-up"
            | "restoring-backup"
            | "extending"
            | "attaching"
            | "detaching"
    )
}

fn status(v: &Value) -> &str {
    v["status"].as_str().unwrap_or_default()
}

fn reason(v: &Value) -> &str {
    v["fail_reason"].as_str().unwrap_or_default()
}

/// On `SQLite` (one process) a restart runs interrupted jobs again at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_backup_restore_delete_and_gc_sqlite() {
    run(Backend::Sqlite, 6, None).await;
}

/// On `PostgreSQL` a restarted node takes a dead worker's jobs over when their lease
/// runs out: fewer points, as each restart waits for a lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_backup_restore_delete_and_gc_postgres() {
    run(Backend::Postgres, 2, None).await;
}

/// Store faults for the kill rounds of [`run`] (the measuring runs and the final
/// sweep go without): `VBS_STORE_FAULTS`, and the file each fault is logged to.
pub(crate) struct StoreFaults {
    pub spec: String,
    pub log: std::path::PathBuf,
}

/// What a campaign did.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    /// Operations started.
    pub runs: u64,
    /// SIGKILLs sent.
    pub kills: u64,
    /// Restores of available backups that failed (loudly) on an injected fault.
    pub restores_failed: u64,
    /// Starts that exited on a store fault before they listened.
    pub failed_starts: u64,
    pub restores_checked: u64,
}

/// Runs the crash campaign: `per_op` kill points for each of full, incremental,
/// restore and delete (+ GC), with `faults` injected in the store during the kill
/// rounds.
pub(crate) async fn run(backend: Backend, per_op: u64, faults: Option<StoreFaults>) -> Counts {
    let mut counts = Counts::default();
    let started = Instant::now();
    // A short lease, so that nothing waits long for a dead worker's claim.
    let config = std::env::temp_dir().join(format!("vbs-crash-{}.toml", uuid::Uuid::new_v4()));
    std::fs::write(&config, "job_lease_secs = 1\n").unwrap();
    let s = Server::start_with(backend, &[], &["--config", config.to_str().unwrap()]);
    let refs = s.dir().join("expected");
    std::fs::create_dir_all(&refs).unwrap();
    let mut h = Crash {
        s,
        token: token("u", PROJECT),
        volume: String::new(),
        refs,
        expected: BTreeMap::new(),
        restores_checked: 0,
        faulty: false,
        restores_failed: 0,
    };
    let (st, v) = h
        .call(
            Method::POST,
            "volumes",
            Some(json!({"volume": {"size": 1, "name": "crash-source"}})),
        )
        .await;
    assert_eq!(st, 202, "{v}");
    h.volume = v["volume"]["id"].as_str().unwrap().to_owned();
    h.settle().await;
    image::fill(&h.volume_file(&h.volume), 0, DATA / MIB, 7);

    // Each operation once without a kill: how long it took bounds the kill delays. A
    // full and its incremental stay for the loop; a second full is deleted, so that the
    // measured delete collects the packs of a whole backup.
    let mut rng = Rng::new(20_261_129);
    let mut took = BTreeMap::new();
    let mut packs = BTreeMap::new();
    let (d, _, p) = measure(&mut h, Op::Full, None, 0).await;
    took.insert(Op::Full, d);
    packs.insert(Op::Full, p);
    let (d, incremental, p) = measure(&mut h, Op::Incremental, None, 1).await;
    took.insert(Op::Incremental, d);
    packs.insert(Op::Incremental, p);
    let (d, vid, _) = measure(&mut h, Op::Restore, Some(&incremental), 2).await;
    took.insert(Op::Restore, d);
    let restored = image::allocated(&h.volume_file(&vid));
    assert_same(&h.expected[&incremental], &h.volume_file(&vid), GIB);
    let (st, b) = h
        .call(Method::DELETE, &format!("volumes/{vid}"), None)
        .await;
    assert_eq!(st, 202, "{b}");
    let (d, second, _) = measure(&mut h, Op::Full, None, 3).await;
    took.insert(Op::Full, d.max(took[&Op::Full]));
    let (d, _, _) = measure(&mut h, Op::Delete, Some(&second), 4).await;
    took.insert(Op::Delete, d);
    h.expected.remove(&second);
    let mut n = 4;
    counts.runs = 5;
    eprintln!(
        "crash: {backend:?} measured {took:?}, new packs {packs:?}, restore writes {restored} bytes"
    );
    // From here on the store misbehaves (the measuring runs went without).
    if let Some(f) = &faults {
        h.s.envs = vec![
            ("VBS_STORE_FAULTS".into(), f.spec.clone()),
            (
                "VBS_STORE_FAULTS_LOG".into(),
                f.log.to_string_lossy().into_owned(),
            ),
        ];
        h.faulty = true;
        h.s.kill();
        h.s.restart();
    }

    let mut outcomes: BTreeMap<(Op, String), u64> = BTreeMap::new();
    let mut phases: BTreeMap<(Op, String), u64> = BTreeMap::new();
    for round in 0..per_op {
        for op in OPS {
            n += 1;
            let (backups, vols) = h.settle().await;
            // Decided before the kill moment: a moment of the operation that runs.
            let any = backups.values().any(|b| status(b) == "available");
            let op = if op == Op::Incremental && !any
                || matches!(op, Op::Restore | Op::Delete)
                    && !backups.values().any(|b| {
                        status(b) == "available"
                            && (op != Op::Delete || b["has_dependent_backups"] == false)
                    }) {
                // Faults failed every backup there was: make one.
                Op::Full
            } else {
                op
            };
            let dur = took[&op].as_micros() as u64;
            // Even rounds: the k-th timed kill of an operation lands in the k-th slice
            // of its measured duration (the last a little past its end). Odd rounds:
            // shortly after a moment seen on disk, spread over the operation.
            let timed = per_op.div_ceil(2);
            let trigger = if round % 2 == 0 {
                let span = dur * 11 / 10;
                let k = round / 2;
                Trigger::After(Duration::from_micros(
                    span * k / timed + rng.below((span / timed).max(1)),
                ))
            } else {
                let k = round / 2;
                let of = (per_op / 2).max(1);
                let small = Duration::from_micros(rng.below(3000));
                match op {
                    Op::Full | Op::Incremental if k + 1 == of => Trigger::Manifest(small),
                    Op::Full | Op::Incremental => {
                        let p = packs[&op].max(1) as u64;
                        Trigger::Pack(
                            (1 + p * k / of + rng.below(p / of + 1)).min(p) as usize,
                            small,
                        )
                    }
                    Op::Restore => Trigger::Written(restored * (2 * k + 1) / (2 * of), small),
                    Op::Delete => Trigger::ManifestGone(small),
                }
            };
            let target = match op {
                Op::Restore | Op::Delete => Some(
                    pick(op, &mut rng, &backups)
                        .unwrap_or_else(|| panic!("nothing to {op:?}: {backups:?}")),
                ),
                _ => None,
            };
            let disk = Disk::read(h.s.dir());
            let req = h.start(op, target.as_deref(), n);
            h.wait_for(trigger, &disk, target.as_deref(), took[&op] * 3)
                .await;
            h.s.kill();
            counts.kills += 1;
            counts.runs += 1;
            let phase = Disk::read(h.s.dir()).phase(&disk, op, target.as_deref(), restored);
            h.s.restart();
            let answer = req.await.unwrap();
            eprintln!(
                "crash: {backend:?} round {round} {op:?} {target:?} killed at {trigger:?} \
                 ({}answered, {phase})",
                if answer.is_some() { "" } else { "not " }
            );
            let (after, vols_after) = h.settle().await;

            let outcome = match op {
                Op::Full | Op::Incremental => {
                    let new: Vec<&String> = after
                        .keys()
                        .filter(|id| !backups.contains_key(*id))
                        .collect();
                    assert!(new.len() <= 1, "one request, one backup: {new:?}");
                    if let Some((st, b)) = &answer {
                        assert_eq!(*st, 202, "{b}");
                        assert_eq!(
                            new.first().map(|s| s.as_str()),
                            b["backup"]["id"].as_str(),
                            "an accepted backup exists after the restart"
                        );
                    }
                    match new.first() {
                        Some(id) => {
                            let path = h.refs.join(id);
                            std::fs::rename(h.refs.join("pending"), &path).unwrap();
                            h.expected.insert((*id).clone(), path);
                            status(&after[*id]).to_owned()
                        }
                        None => "never created".to_owned(),
                    }
                }
                Op::Restore => {
                    let backup = target.unwrap();
                    let new: Vec<&String> = vols_after
                        .keys()
                        .filter(|id| !vols.contains_key(*id))
                        .collect();
                    assert!(new.len() <= 1, "one restore, one volume: {new:?}");
                    if let Some((st, b)) = &answer {
                        assert_eq!(*st, 202, "{b}");
                        assert_eq!(
                            new.first().map(|s| s.as_str()),
                            b["restore"]["volume_id"].as_str()
                        );
                    }
                    assert_eq!(
                        status(&after[&backup]),
                        "available",
                        "a restore, finished or not, leaves its backup available"
                    );
                    match new.first() {
                        Some(vid) => {
                            // The volume, the backup's move and the job are one
                            // transaction: a volume that exists was restored (the
                            // job survives the kill) or says it failed.
                            let st = status(&vols_after[*vid]).to_owned();
                            let file = h.volume_file(vid);
                            match st.as_str() {
                                "available" => assert_same(&h.expected[&backup], &file, GIB),
                                "error" | "error_restoring" => {}
                                other => panic!("restored volume {vid} ends {other}"),
                            }
                            let (code, b) = h
                                .call(Method::DELETE, &format!("volumes/{vid}"), None)
                                .await;
                            assert_eq!(code, 202, "{b}");
                            format!("volume {st}")
                        }
                        None => "never started".to_owned(),
                    }
                }
                Op::Delete => {
                    let backup = target.unwrap();
                    if let Some((st, b)) = &answer {
                        assert_eq!(*st, 202, "{b}");
                    }
                    match after.get(&backup) {
                        None => {
                            let (st, _) = h
                                .call(Method::GET, &format!("backups/{backup}"), None)
                                .await;
                            assert_eq!(st, 404);
                            "gone".to_owned()
                        }
                        Some(b) => {
                            let st = status(b);
                            match st {
                                "error" | "error_deleting" => {
                                    assert!(!reason(b).is_empty(), "a failed delete says why: {b}");
                                }
                                "available" => assert!(
                                    answer.is_none(),
                                    "an accepted delete came back available: {b}"
                                ),
                                other => panic!("a deleted backup is {other}: {b}"),
                            }
                            st.to_owned()
                        }
                    }
                }
            };
            eprintln!("crash: {backend:?} round {round} {op:?}: {outcome}");
            *outcomes.entry((op, outcome)).or_default() += 1;
            *phases.entry((op, phase)).or_default() += 1;
            h.check_all(&after, &vols_after).await;
        }
    }
    eprintln!("crash: {backend:?} outcomes {outcomes:?}");
    eprintln!("crash: {backend:?} phases at the kill {phases:?}");

    // The kills interrupted real work, not only idle servers (on SQLite a restart
    // says so when it queues interrupted jobs again; PostgreSQL leaves them to leases).
    if matches!(backend, Backend::Sqlite) && faults.is_none() {
        let log = std::fs::read_to_string(h.s.dir().join("server.log")).unwrap();
        let recovered = log
            .matches("backup work interrupted by the last shutdown recovered")
            .count();
        assert!(
            recovered >= 8,
            "only {recovered} restarts found work to recover"
        );
    }

    // Without kills (and faults) now: delete every backup, leaves first. GC must then
    // leave an empty repository: whatever interrupted (or faulted) backups wrote was
    // garbage it collects.
    if faults.is_some() {
        h.s.envs.clear();
        h.s.kill();
        h.s.restart();
    }
    loop {
        let (backups, _) = h.settle().await;
        let Some((id, b)) = backups
            .iter()
            .find(|(_, b)| b["has_dependent_backups"] == false)
        else {
            assert!(backups.is_empty(), "undeletable: {backups:?}");
            break;
        };
        if status(b) == "error_deleting" {
            // A delete that failed on a store fault: as in Cinder, an admin resets it
            // to `error` before deleting it again.
            let (st, r) =
                h.s.call(
                    Method::POST,
                    &format!("/v3/{PROJECT}/backups/{id}/action"),
                    Some(&token("admin", PROJECT)),
                    Some(MV),
                    Some(&json!({"os-reset_status": {"status": "error"}})),
                )
                .await;
            assert_eq!(st, 202, "reset {id}: {r}");
        }
        // `available` and `error` backups are deletable, and nothing else is left.
        let (st, b) = h.call(Method::DELETE, &format!("backups/{id}"), None).await;
        assert_eq!(st, 202, "cannot delete {id}: {b}");
    }
    // The sweep is a job of its own that the last delete queued.
    let deadline = std::time::Instant::now() + std::time::Duration::from_mins(1);
    loop {
        let disk = Disk::read(h.s.dir());
        if disk.manifests.is_empty() && disk.packs.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "left in the repository: {disk:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    eprintln!(
        "crash: {backend:?}: {} kill points, {} restores compared, {:?}",
        per_op * 4,
        h.restores_checked,
        started.elapsed()
    );
    let _ = std::fs::remove_file(&config);
    counts.restores_failed = h.restores_failed;
    counts.restores_checked = h.restores_checked;
    counts.failed_starts = h.s.failed_starts;
    counts
}
