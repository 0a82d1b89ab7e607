//! Ninety simulated days of three backup policies, in process and without sleeping:
//! the real catalog (SQLite), volume pool, engine and worker, with the policies' clock
//! set by hand hour by hour. After each hour the scheduler fires what is due and a
//! worker runs every job that follows (the runs, their backups, retention's deletes,
//! GC). The test computes on its own calendar which slots fire and which backups the
//! rules keep, and checks the catalog against it: every slot fired once, one
//! successful task per disk and slot, exactly the expected backups left (listed by
//! date), and the kept backups whose parents retention removed still restore to
//! their day's bytes.
#![allow(
    clippy::unwrap_used,
    clippy::too_many_lines,
    clippy::cast_possible_wrap,
    clippy::doc_markdown
)]

use std::os::unix::fs::FileExt;
use std::path::Path;

use serde_json::json;
use vbs_catalog::{Catalog, CatalogOptions, TaskQuery};
use vbs_engine::pool::Pool;
use vbs_service::{
    BackupLifecycle, BackupWorker, Clock, Context, CreateVolumeOptions, Role, VolumeService,
    WorkerOptions,
};

const HOUR: i64 = 3_600_000_000;
const DAY: i64 = 24 * HOUR;
/// 2026-01-01T00:00:00Z, a Thursday.
const T0: i64 = 1_767_225_600_000_000;
const DAYS: i64 = 90;
const PROJECT: &str = "5c5c5c5c000000000000000000000005";

/// `(month, day)` of day `d` after 2026-01-01 (the test's own calendar: Q1 2026).
fn date(d: i64) -> (u32, i64) {
    match d {
        0..=30 => (1, d + 1),
        31..=58 => (2, d - 30),
        _ => (
            3 + u32::from(d >= 90),
            if d >= 90 { d - 89 } else { d - 58 },
        ),
    }
}

fn label(t: i64) -> String {
    let d = (t - T0).div_euclid(DAY);
    let (m, day) = date(d);
    format!(
        "2026-{m:02}-{day:02} {:02}:00",
        (t - T0).rem_euclid(DAY) / HOUR
    )
}

/// The day marker written into block 0 of every disk at the start of each day.
fn mark(path: &Path, day: i64) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    let mut block = vec![0u8; 4096];
    block[..8].copy_from_slice(&(day + 1).to_le_bytes());
    block[8..16].copy_from_slice(b"vbs-day!");
    f.write_all_at(&block, 0).unwrap();
    f.sync_all().unwrap();
}

fn marker_of(path: &Path) -> i64 {
    let f = std::fs::File::open(path).unwrap();
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, 0).unwrap();
    i64::from_le_bytes(b) - 1
}

/// What the test expects of one policy, from its own reading of the rules.
struct Expect {
    name: &'static str,
    slots: Vec<i64>,
    kept: Vec<i64>,
}

fn expectations() -> Vec<Expect> {
    let end = T0 + DAYS * DAY;
    // A: daily at 02:00 and 14:00 UTC; keep the newest 3.
    let a: Vec<i64> = (0..DAYS)
        .flat_map(|d| [2, 14].map(|h| T0 + d * DAY + h * HOUR))
        .collect();
    let a_kept = a[a.len() - 3..].to_vec();
    // B: SUN and WED at 04:00 local, UTC+08:00: Saturday and Tuesday 20:00 UTC. Day 0
    // is a Thursday, so Saturday is d % 7 == 2 and Tuesday d % 7 == 5. Keep the newest
    // 4 and each local month's first.
    let b: Vec<i64> = (0..DAYS)
        .filter(|d| d % 7 == 2 || d % 7 == 5)
        .map(|d| T0 + d * DAY + 20 * HOUR)
        .collect();
    let local_month = |t: i64| date((t + 8 * HOUR - T0).div_euclid(DAY)).0;
    let mut b_kept: Vec<i64> = b[b.len() - 4..].to_vec();
    for m in 1..=3 {
        if let Some(first) = b.iter().find(|t| local_month(**t) == m) {
            b_kept.push(*first);
        }
    }
    // C: daily at 06:00; keep those younger than 10 days (at the end) and each
    // month's first.
    let c: Vec<i64> = (0..DAYS).map(|d| T0 + d * DAY + 6 * HOUR).collect();
    let mut c_kept: Vec<i64> = c.iter().copied().filter(|t| *t > end - 10 * DAY).collect();
    for m in 1..=3 {
        if let Some(first) = c.iter().find(|t| date((*t - T0).div_euclid(DAY)).0 == m) {
            c_kept.push(*first);
        }
    }
    let mut out = vec![
        Expect {
            name: "daily-two-hours",
            slots: a,
            kept: a_kept,
        },
        Expect {
            name: "weekly-sun-wed",
            slots: b,
            kept: b_kept,
        },
        Expect {
            name: "days-first-of-month",
            slots: c,
            kept: c_kept,
        },
    ];
    for e in &mut out {
        e.kept.sort_unstable();
        e.kept.dedup();
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ninety_days_of_three_policies() {
    let started = std::time::Instant::now();
    let dir = std::env::temp_dir().join(format!("vbs-sim-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let catalog = Catalog::open(&CatalogOptions::sqlite_in(&dir))
        .await
        .unwrap();
    let pool = Pool::open(&dir).unwrap();
    let volumes = VolumeService::new(catalog.clone(), pool);
    let (clock, now) = Clock::manual(T0);
    let life =
        BackupLifecycle::new(catalog.clone(), volumes.clone(), "sim".into()).with_clock(clock);
    let store = vbs_repository::Store::local(&dir.join("repository")).unwrap();
    let engine =
        vbs_engine::Engine::new(store.clone(), vbs_engine::EngineOptions::for_store(&store));
    let worker = BackupWorker::new(
        life.clone(),
        engine,
        WorkerOptions {
            node: "sim-worker".into(),
            ..WorkerOptions::default()
        },
    );
    let ctx = Context {
        user_id: "owner".into(),
        project_id: PROJECT.into(),
        roles: vec![Role::Member, Role::Reader],
    };
    let set = |t: i64| now.store(t, std::sync::atomic::Ordering::SeqCst);

    let bodies = [
        json!({"backup_policy_name": "daily-two-hours",
               "scheduled_policy": {"start_time": "02:00,14:00", "frequency": 1,
                                    "rentention_num": 3, "status": "ON"}}),
        json!({"backup_policy_name": "weekly-sun-wed", "time_zone": "UTC+08:00",
               "scheduled_policy": {"start_time": "20:00", "week_frequency": ["SUN", "WED"],
                                    "rentention_num": 4, "remain_first_backup_of_curMonth": "Y",
                                    "status": "ON"}}),
        json!({"backup_policy_name": "days-first-of-month",
               "scheduled_policy": {"start_time": "06:00", "frequency": 1,
                                    "rentention_day": 10, "remain_first_backup_of_curMonth": "Y",
                                    "status": "ON"}}),
    ];
    let mut policies = Vec::new();
    let mut disks = Vec::new();
    for (i, body) in bodies.iter().enumerate() {
        let pid = life.create_policy(&ctx, body).await.unwrap();
        let v = volumes
            .create(
                &ctx,
                CreateVolumeOptions {
                    name: Some(format!("disk-{i}")),
                    size: Some(1),
                    ..CreateVolumeOptions::default()
                },
            )
            .await
            .unwrap();
        let out = life
            .associate_volumes(
                &ctx,
                &json!({"backup_policy_id": pid,
                        "resources": [{"resource_id": v.id, "resource_type": "volume"}]}),
            )
            .await
            .unwrap();
        assert!(out[0].failure.is_none(), "{out:?}");
        let file = volumes.volume_file(&v);
        // Some data besides the day marker, for dedup and incrementals to work on.
        let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
        f.write_all_at(&vec![0x5a; 256 * 1024], 1 << 20).unwrap();
        policies.push(pid);
        disks.push((v.id.clone(), file));
    }

    for (_, file) in &disks {
        mark(file, 0);
    }
    let mut jobs = 0;
    for hour in 1..=DAYS * 24 {
        let t = T0 + hour * HOUR;
        if (t - T0) % DAY == 0 && hour < DAYS * 24 {
            for (_, file) in &disks {
                mark(file, (t - T0) / DAY);
            }
        }
        set(t);
        life.fire_due_policies("sim").await.unwrap();
        // Runs queue backups, backups queue retention's deletes, deletes queue GC.
        loop {
            let n = worker.drain().await;
            jobs += n;
            if n == 0 {
                break;
            }
        }
    }

    let expect = expectations();
    for ((pid, (vid, _)), e) in policies.iter().zip(&disks).zip(&expect) {
        // Every slot fired once; nothing was skipped.
        let slots = catalog.policy_slots(pid).await.unwrap();
        assert!(
            slots.iter().all(|(_, s)| s == "fired"),
            "{}: {slots:?}",
            e.name
        );
        let fired: Vec<i64> = slots.iter().map(|(s, _)| *s).collect();
        assert_eq!(fired, e.slots, "{}: fired slots", e.name);
        // One successful task per slot.
        let (tasks, count) = catalog
            .list_policy_tasks(&TaskQuery {
                policy_id: pid.clone(),
                ascending: true,
                ..TaskQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(count as usize, e.slots.len(), "{}", e.name);
        assert!(
            tasks.iter().all(|t| t.status == "EXECUTE_SUCCESS"),
            "{}: {:?}",
            e.name,
            tasks.iter().find(|t| t.status != "EXECUTE_SUCCESS")
        );
        let task_slots: Vec<i64> = tasks.iter().map(|t| t.slot).collect();
        assert_eq!(task_slots, e.slots, "{}: task slots", e.name);
        // A run is a job whose backups are its sub-jobs (VBS `sub_jobs`).
        let last = tasks.last().unwrap();
        let run = life
            .job(&ctx, last.run_job_id.as_deref().unwrap())
            .await
            .unwrap();
        assert_eq!(vbs_service::job_type(run.job.kind), "bksPolicyBackup");
        assert_eq!(vbs_service::job_status(&run.job).0, "SUCCESS");
        let subs: Vec<&str> = run.sub_jobs.iter().map(|j| j.id.as_str()).collect();
        assert_eq!(subs, [last.vbs_job_id.as_deref().unwrap()], "{}", e.name);
        // Exactly the expected backups are left.
        let mut kept: Vec<i64> = catalog
            .policy_backups(pid, vid)
            .await
            .unwrap()
            .iter()
            .map(|b| {
                assert_eq!(b.status, "available", "{}: {b:?}", e.name);
                b.slot
            })
            .collect();
        kept.sort_unstable();
        println!(
            "{}: {} slots fired, {} backups pruned, kept: {}",
            e.name,
            e.slots.len(),
            e.slots.len() - kept.len(),
            kept.iter()
                .map(|t| label(*t))
                .collect::<Vec<_>>()
                .join(", ")
        );
        assert_eq!(
            kept.iter().map(|t| label(*t)).collect::<Vec<_>>(),
            e.kept.iter().map(|t| label(*t)).collect::<Vec<_>>(),
            "{}: kept backups",
            e.name
        );
    }

    // The oldest kept backup of each policy lost its parent to retention: it still
    // restores, to the bytes of its day.
    for (pid, (vid, _)) in policies.iter().zip(&disks) {
        let backups = catalog.policy_backups(pid, vid).await.unwrap();
        let oldest = backups.last().unwrap();
        let target = volumes
            .create(
                &ctx,
                CreateVolumeOptions {
                    size: Some(1),
                    ..CreateVolumeOptions::default()
                },
            )
            .await
            .unwrap();
        life.restore(
            &ctx,
            &oldest.backup_id,
            &json!({"restore": {"volume_id": target.id}}),
        )
        .await
        .unwrap();
        while worker.drain().await > 0 {}
        let restored = catalog.get_volume(&target.id, None).await.unwrap();
        assert_eq!(restored.status, "available");
        assert_eq!(
            marker_of(&volumes.volume_file(&restored)),
            (oldest.slot - T0).div_euclid(DAY),
            "backup of {} restored the wrong day",
            label(oldest.slot)
        );
    }
    // With no new backups, an age-based rule still lets backups go as days pass: the
    // policies off, a tick five days later prunes the third policy to its months'
    // firsts and the backups of its last ten days; the count-based ones keep theirs.
    for pid in &policies {
        life.update_policy(&ctx, pid, &json!({"scheduled_policy": {"status": "OFF"}}))
            .await
            .unwrap();
    }
    let later = T0 + (DAYS + 5) * DAY;
    set(later);
    life.fire_due_policies("sim").await.unwrap();
    while worker.drain().await > 0 {}
    let kept_now = |i: usize| {
        let (catalog, pid, vid) = (&catalog, &policies[i], &disks[i].0);
        async move {
            let mut k: Vec<i64> = catalog
                .policy_backups(pid, vid)
                .await
                .unwrap()
                .iter()
                .map(|b| b.slot)
                .collect();
            k.sort_unstable();
            k.iter().map(|t| label(*t)).collect::<Vec<_>>()
        }
    };
    let firsts = [0, 31, 59].map(|d| T0 + d * DAY + 6 * HOUR);
    let mut want: Vec<i64> = expect[2]
        .slots
        .iter()
        .copied()
        .filter(|t| *t > later - 10 * DAY || firsts.contains(t))
        .collect();
    want.sort_unstable();
    assert_eq!(
        kept_now(2).await,
        want.iter().map(|t| label(*t)).collect::<Vec<_>>()
    );
    assert_eq!(
        kept_now(0).await,
        expect[0].kept.iter().map(|t| label(*t)).collect::<Vec<_>>()
    );

    println!(
        "90 simulated days: {jobs} jobs run in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
