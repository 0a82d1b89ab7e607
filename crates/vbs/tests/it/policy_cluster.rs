//! Backup policies on several scheduler nodes (issue 13): an API node and two or three
//! nodes that schedule and work, real processes on one `PostgreSQL` catalog, going by
//! the test-only simulated clock (`[scheduler_clock]`, one hour every two seconds).
//! A policy fires every hour; one node is killed with SIGKILL in the middle. Every
//! hour from the first slot to the last is claimed exactly once (fired or skipped),
//! each fired slot has exactly one task per disk, each task with a backup made exactly
//! one backup, and the policy's backups restore byte for byte.
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

use std::collections::{BTreeMap, BTreeSet};
use std::process::Child;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use vbs_catalog::{Catalog, CatalogOptions, TaskQuery};

use crate::support::image::{self, assert_same};
use crate::support::{Backend, PA, Server, spawn_node, token, vbs, wait_status};

const HOUR: i64 = 3_600_000_000;
/// Simulated seconds per real second: an hour every two seconds.
const SPEED: u32 = 1800;

fn config(dir: &std::path::Path, name: &str, since: i64) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "node_name = \"{name}\"\njob_lease_secs = 2\nscheduler_tick_secs = 1\n\
             [scheduler_clock]\nstart = \"2026-03-01T00:30:00Z\"\nsince = {since}\nspeed = {SPEED}.0\n"
        ),
    )
    .unwrap();
    path
}

fn start_node(s: &Server, dir: &std::path::Path, name: &str, since: i64) -> Child {
    let mut cmd = vbs();
    cmd.args(["serve", "--role", "scheduler,worker", "--data-dir"])
        .arg(s.dir())
        .args(["--catalog", &s.catalog, "--config"])
        .arg(config(dir, name, since));
    spawn_node(
        cmd,
        &dir.join(format!("{name}.log")),
        &format!("node {name} ready (worker,scheduler)"),
    )
}

async fn slots_fire_once(nodes: usize) {
    let dir = std::env::temp_dir().join(format!("vbs-pcluster-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let since = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap();
    // The API node: no scheduler, no worker; the same clock (a policy's schedule
    // starts at its creation, by that clock).
    let api_config = config(&dir, "api", since);
    let s = Server::start_with(
        Backend::Postgres,
        &[],
        &["--role", "api", "--config", api_config.to_str().unwrap()],
    );
    let mut children: BTreeMap<String, Child> = (0..nodes)
        .map(|i| {
            let name = format!("sched{i}");
            let child = start_node(&s, &dir, &name, since);
            (name, child)
        })
        .collect();
    let t = token("usera", PA);
    let call = |method: Method, path: String, body: Option<Value>| {
        let (s, t) = (&s, &t);
        async move {
            let (st, b) = s.call(method, &path, Some(t), None, body.as_ref()).await;
            (st.as_u16(), b)
        }
    };
    let mut disks = Vec::new();
    for i in 0..2 {
        let (st, v) = call(
            Method::POST,
            format!("/v3/{PA}/volumes"),
            Some(json!({"volume": {"size": 1}})),
        )
        .await;
        assert_eq!(st, 202, "{v}");
        let id = v["volume"]["id"].as_str().unwrap().to_owned();
        image::fill(
            &s.dir().join("volumes").join(format!("{id}.img")),
            0,
            4,
            40 + i,
        );
        disks.push(id);
    }
    let hours: Vec<String> = (0..24).map(|h| format!("{h:02}:00")).collect();
    let (st, p) = call(
        Method::POST,
        format!("/v2/{PA}/backuppolicy"),
        Some(json!({"backup_policy_name": "hourly",
                    "scheduled_policy": {"start_time": hours.join(","), "frequency": 1,
                                         "rentention_num": 99, "status": "ON"}})),
    )
    .await;
    assert_eq!(st, 200, "{p}");
    let pid = p["backup_policy_id"].as_str().unwrap().to_owned();
    let resources: Vec<Value> = disks
        .iter()
        .map(|d| json!({"resource_id": d, "resource_type": "volume"}))
        .collect();
    let (st, out) = call(
        Method::POST,
        format!("/v2/{PA}/backuppolicyresources"),
        Some(json!({"backup_policy_id": pid, "resources": resources})),
    )
    .await;
    assert_eq!((st, &out["fail_resources"]), (200, &json!([])), "{out}");

    let catalog = Catalog::open(&CatalogOptions {
        url: s.catalog.clone(),
        max_connections: 2,
    })
    .await
    .unwrap();
    // Let a few slots fire, kill a node while runs go on, let more fire.
    let wait_slots = |n: usize| {
        let (catalog, pid) = (&catalog, &pid);
        async move {
            let deadline = Instant::now() + Duration::from_mins(2);
            loop {
                let slots = catalog.policy_slots(pid).await.unwrap();
                if slots.len() >= n {
                    return slots.len();
                }
                assert!(Instant::now() < deadline, "only {} slots", slots.len());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    wait_slots(3).await;
    let victim = "sched0".to_owned();
    let mut child = children.remove(&victim).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let at_kill = catalog.policy_slots(&pid).await.unwrap().len();
    wait_slots(at_kill + 4).await;
    // Turn it off and let every run and backup finish.
    let (st, _) = call(
        Method::PUT,
        format!("/v2/{PA}/backuppolicy/{pid}"),
        Some(json!({"scheduled_policy": {"status": "OFF"}})),
    )
    .await;
    assert_eq!(st, 200);
    let deadline = Instant::now() + Duration::from_mins(2);
    while catalog.policy_running(&pid).await.unwrap() {
        assert!(Instant::now() < deadline, "runs never ended");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Every hour from the first slot to the last, exactly once.
    let slots = catalog.policy_slots(&pid).await.unwrap();
    let fired: Vec<i64> = slots
        .iter()
        .filter(|(_, s)| s == "fired")
        .map(|(t, _)| *t)
        .collect();
    let skipped = slots.len() - fired.len();
    let first = slots.first().unwrap().0;
    let last = slots.last().unwrap().0;
    let expected: Vec<i64> = (0..=(last - first) / HOUR)
        .map(|i| first + i * HOUR)
        .collect();
    assert_eq!(
        slots.iter().map(|(t, _)| *t).collect::<Vec<_>>(),
        expected,
        "every hour once"
    );
    // One task per disk and fired slot; one backup per task that has one.
    let (tasks, count) = catalog
        .list_policy_tasks(&TaskQuery {
            policy_id: pid.clone(),
            ascending: true,
            ..TaskQuery::default()
        })
        .await
        .unwrap();
    let mut per_slot: BTreeMap<i64, BTreeSet<String>> = BTreeMap::new();
    for t in &tasks {
        assert!(
            per_slot
                .entry(t.slot)
                .or_default()
                .insert(t.volume_id.clone()),
            "two tasks for one disk and slot: {t:?}"
        );
    }
    for slot in &fired {
        assert_eq!(
            per_slot.get(slot).map(BTreeSet::len),
            Some(2),
            "slot {slot}: {per_slot:?}"
        );
    }
    let with_backup: Vec<&str> = tasks
        .iter()
        .filter_map(|t| t.backup_id.as_deref())
        .collect();
    let distinct: BTreeSet<&str> = with_backup.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        with_backup.len(),
        "a backup named by two tasks"
    );
    let statuses: BTreeMap<&str, usize> = tasks.iter().fold(BTreeMap::new(), |mut m, t| {
        *m.entry(t.status.as_str()).or_default() += 1;
        m
    });
    let (st, backups) = call(Method::GET, format!("/v3/{PA}/backups/detail"), None).await;
    assert_eq!(st, 200);
    let listed = backups["backups"].as_array().unwrap();
    assert_eq!(
        listed.len(),
        with_backup.len(),
        "backups in the catalog vs tasks with one"
    );
    println!(
        "{nodes} scheduler nodes, one killed: {} slots ({} fired, {skipped} skipped), \
         {count} tasks {statuses:?}, {} backups",
        slots.len(),
        fired.len(),
        listed.len()
    );

    // The policy's newest backup of each disk restores byte for byte.
    for d in &disks {
        let newest = listed
            .iter()
            .filter(|b| b["volume_id"] == d.as_str() && b["status"] == "available")
            .max_by_key(|b| b["created_at"].as_str().unwrap().to_owned())
            .unwrap();
        let id = newest["id"].as_str().unwrap();
        // No worker is left on the API node: a survivor restores it.
        let (st, r) = call(
            Method::POST,
            format!("/v3/{PA}/backups/{id}/restore"),
            Some(json!({"restore": {}})),
        )
        .await;
        assert_eq!(st, 202, "{r}");
        let vol = r["restore"]["volume_id"].as_str().unwrap();
        wait_status(
            &s,
            &format!("/v3/{PA}/volumes/{vol}"),
            &t,
            "volume",
            "available",
        )
        .await;
        let path = |v: &str| s.dir().join("volumes").join(format!("{v}.img"));
        assert_same(&path(vol), &path(d), 1 << 30);
    }
    for (_, mut c) in children {
        let _ = c.kill();
        let _ = c.wait();
    }
    catalog.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn two_schedulers_fire_each_slot_once() {
    slots_fire_once(2).await;
}

#[tokio::test]
async fn three_schedulers_fire_each_slot_once() {
    slots_fire_once(3).await;
}
