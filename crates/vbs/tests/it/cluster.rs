//! Many nodes on one `PostgreSQL` catalog and one repository (issue 4): an API node and
//! two worker nodes, real processes sharing the volume pool, the catalog and the
//! object store. Work is spread over the workers, each job run by exactly one of them
//! (the catalog's job history says which); a worker killed with SIGKILL in the middle
//! of backups loses its leases and the other takes its work over; GC on any node
//! while others write backups that share packs never damages a backup.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::image::{self, MIB, assert_same};
use crate::support::{Backend, PA, Server, futures_join, spawn_node, token, vbs, wait_status};

const GIB: u64 = 1 << 30;
const MV: &str = "3.71";
/// Short, so that a dead worker's jobs are taken over quickly.
const LEASE_SECS: u64 = 3;

/// Where the nodes keep backups: a container of its own on the test Swift that
/// `scripts/swift-aio.sh start` runs at `VBS_TEST_SWIFT` (default `127.0.0.1:8080`),
/// created by the first node that opens it. No Swift fails the test (never skipped).
fn repository() -> String {
    let swift = std::env::var("VBS_TEST_SWIFT").unwrap_or_else(|_| "127.0.0.1:8080".into());
    format!(
        "swift+tempauth://{swift}/vbs-cluster-{}",
        uuid::Uuid::new_v4().simple()
    )
}

/// An API node (with the scheduler) started by [`Server`], plus worker nodes on the
/// same data directory (the shared volume pool), catalog and repository.
pub(crate) struct Cluster {
    pub api: Server,
    config_dir: PathBuf,
    repository: String,
    pub workers: BTreeMap<String, Child>,
    /// Environment of the worker nodes (`VBS_STORE_FAULTS`…).
    worker_envs: Vec<(String, String)>,
}

impl Cluster {
    fn start(workers: &[&str]) -> Cluster {
        Self::start_on(
            &crate::support::pg_root(),
            repository(),
            Vec::new(),
            workers,
        )
    }

    /// A cluster on the `PostgreSQL` server at `pg_root` and the repository
    /// `repository` (whose container is removed at the end), its workers started with
    /// `worker_envs`.
    pub(crate) fn start_on(
        pg_root: &str,
        repository: String,
        worker_envs: Vec<(String, String)>,
        workers: &[&str],
    ) -> Cluster {
        let config_dir =
            std::env::temp_dir().join(format!("vbs-cluster-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&config_dir).unwrap();
        let api_config = Self::config(&config_dir, &repository, "api", 0);
        let api = Server::start_at(
            Backend::Postgres,
            pg_root,
            &[],
            &[
                "--role",
                "api,scheduler",
                "--config",
                api_config.to_str().unwrap(),
            ],
            "warn",
        );
        let mut c = Cluster {
            api,
            config_dir,
            repository,
            workers: BTreeMap::new(),
            worker_envs,
        };
        for w in workers {
            c.start_worker(w);
        }
        c
    }

    fn config(dir: &Path, repository: &str, name: &str, workers: usize) -> PathBuf {
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(
            &path,
            format!(
                "node_name = \"{name}\"\nrepository = \"{repository}\"\n\
                 job_lease_secs = {LEASE_SECS}\nbackup_workers = {workers}\n\
                 scheduler_tick_secs = 1\n\
                 [repository_credentials]\nuser = \"test:tester\"\nkey = \"testing\"\n"
            ),
        )
        .unwrap();
        path
    }

    /// Starts (or starts again) a worker node and waits until it is ready. Its
    /// repository comes from `--repository` (the credentials from its file); the
    /// file names another, which the flag overrides.
    pub(crate) fn start_worker(&mut self, name: &str) {
        let (cmd, log, ready) = self.worker_command(name);
        let child = spawn_node(cmd, &log, &ready);
        self.workers.insert(name.to_owned(), child);
    }

    /// What starts worker `name`: its command, log file and ready line.
    fn worker_command(&self, name: &str) -> (std::process::Command, PathBuf, String) {
        let config = Self::config(&self.config_dir, "/nonexistent/not-this-one", name, 2);
        let mut cmd = vbs();
        cmd.args(["serve", "--role", "worker", "--data-dir"])
            .arg(self.api.dir())
            .args([
                "--catalog",
                &self.api.catalog,
                "--repository",
                &self.repository,
            ])
            .arg("--config")
            .arg(&config)
            .envs(self.worker_envs.iter().map(|(k, v)| (k, v)));
        (
            cmd,
            self.config_dir.join(format!("{name}.log")),
            format!("node {name} ready (worker)"),
        )
    }

    pub(crate) fn kill(&mut self, name: &str) {
        let mut child = self.workers.remove(name).unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// One SQL query on the cluster's catalog: rows of `|`-separated columns.
    fn sql(&self, query: &str) -> Vec<Vec<String>> {
        let out = std::process::Command::new("psql")
            .args([&self.api.catalog, "-v", "ON_ERROR_STOP=1", "-Atc", query])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| l.split('|').map(str::to_owned).collect())
            .collect()
    }

    /// `vbs admin gc` as a separate process (a third node sweeping).
    fn admin_gc(&self) -> Value {
        let config = Self::config(&self.config_dir, &self.repository, "gc", 0);
        admin_gc(self.api.dir(), &self.api.catalog, &config)
    }

    /// `vbs admin verify` of these backups, from another process.
    pub(crate) fn admin_verify(&self, ids: &[String]) -> std::process::Output {
        let config = Self::config(&self.config_dir, &self.repository, "verify", 0);
        vbs()
            .args(["admin", "verify", "--data-dir"])
            .arg(self.api.dir())
            .arg("--config")
            .arg(&config)
            .args(ids)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    }

    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let (st, b) = self
            .api
            .call(
                method,
                &format!("/v3/{PA}/{path}"),
                Some(&token("usera", PA)),
                Some(MV),
                body.as_ref(),
            )
            .await;
        (st.as_u16(), b)
    }

    pub(crate) async fn volume(&self, name: &str) -> String {
        let (st, b) = self
            .call(
                Method::POST,
                "volumes",
                Some(json!({"volume": {"size": 1, "name": name}})),
            )
            .await;
        assert_eq!(st, 202, "{b}");
        b["volume"]["id"].as_str().unwrap().to_owned()
    }

    async fn snapshot(&self, volume: &str) -> String {
        let (st, b) = self
            .call(
                Method::POST,
                "snapshots",
                Some(json!({"snapshot": {"volume_id": volume}})),
            )
            .await;
        assert_eq!(st, 202, "{b}");
        let id = b["snapshot"]["id"].as_str().unwrap().to_owned();
        self.wait("snapshots", "snapshot", &id, "available").await;
        id
    }

    async fn backup(&self, inner: Value) -> String {
        let (st, b) = self
            .call(Method::POST, "backups", Some(json!({"backup": inner})))
            .await;
        assert_eq!(st, 202, "{b}");
        b["backup"]["id"].as_str().unwrap().to_owned()
    }

    pub(crate) async fn wait(&self, what: &str, key: &str, id: &str, want: &str) -> Value {
        let path = format!("/v3/{PA}/{what}/{id}");
        wait_status(&self.api, &path, &token("usera", PA), key, want).await
    }

    /// Restores to a new volume; returns its file once it is `available`.
    async fn restore(&self, backup: &str) -> PathBuf {
        let (st, b) = self
            .call(
                Method::POST,
                &format!("backups/{backup}/restore"),
                Some(json!({"restore": {}})),
            )
            .await;
        assert_eq!(st, 202, "{b}");
        let vol = b["restore"]["volume_id"].as_str().unwrap().to_owned();
        self.wait("volumes", "volume", &vol, "available").await;
        self.wait("backups", "backup", backup, "available").await;
        self.volume_file(&vol)
    }

    pub(crate) fn volume_file(&self, id: &str) -> PathBuf {
        self.api.dir().join("volumes").join(format!("{id}.img"))
    }

    /// The backup's status once it leaves `creating`, waiting at most `limit`.
    async fn settled(&self, id: &str, limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let (st, b) = self.call(Method::GET, &format!("backups/{id}"), None).await;
            assert_eq!(st, 200, "{b}");
            if b["backup"]["status"] != "creating" {
                return b["backup"].clone();
            }
            assert!(Instant::now() < deadline, "{id} still creating: {b}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.workers.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if crate::support::kept_on_failure(format_args!(
            "{} and repository {}",
            self.config_dir.display(),
            self.repository
        )) {
            return;
        }
        let _ = std::fs::remove_dir_all(&self.config_dir);
        remove_container(&self.repository);
    }
}

/// Empties and removes the test's Swift container, so that runs do not pile
/// containers up in the test Swift.
fn remove_container(repository: &str) {
    let Some(rest) = repository.strip_prefix("swift+tempauth://") else {
        return;
    };
    let Some((host, container)) = rest.split_once('/') else {
        return;
    };
    let curl = |args: &[&str]| {
        std::process::Command::new("curl")
            .args(["-sS", "--max-time", "60"])
            .args(args)
            .output()
    };
    let Ok(auth) = curl(&[
        "-D",
        "-",
        "-o",
        "/dev/null",
        "-H",
        "X-Auth-User: test:tester",
        "-H",
        "X-Auth-Key: testing",
        &format!("http://{host}/auth/v1.0"),
    ]) else {
        return;
    };
    let headers = String::from_utf8_lossy(&auth.stdout).into_owned();
    let header = |name: &str| {
        headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    };
    let (Some(url), Some(token)) = (header("x-storage-url"), header("x-auth-token")) else {
        return;
    };
    let token = format!("X-Auth-Token: {token}");
    for _ in 0..20 {
        let Ok(list) = curl(&["-H", &token, &format!("{url}/{container}")]) else {
            return;
        };
        let urls: Vec<String> = String::from_utf8_lossy(&list.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| format!("{url}/{container}/{l}"))
            .collect();
        if urls.is_empty() {
            break;
        }
        // One curl for all of them (object names are hex and UUIDs: nothing to quote).
        let mut args = vec!["-o", "/dev/null", "-X", "DELETE", "-H", &token];
        args.extend(urls.iter().map(String::as_str));
        let _ = curl(&args);
    }
    let _ = curl(&["-X", "DELETE", "-H", &token, &format!("{url}/{container}")]);
}

/// 20 backups of 10 volumes (each volume and a snapshot of it) requested at once: all
/// turn `available` and restore byte for byte, each job run once by one node. Then a
/// worker killed in the middle of 5 backups: every one ends `available` (taken over)
/// or `error` with a reason, and a restore afterwards succeeds.
/// Two workers started at the same moment on a new, empty shared repository: one
/// makes its keys (under the catalog's repository lock), the other finds them, so both
/// seal with the same keys and read each other's backups.
#[tokio::test]
async fn workers_starting_together_on_a_new_repository_agree_on_its_keys() {
    let mut c = Cluster::start(&[]);
    let starting: Vec<_> = ["k1", "k2"]
        .into_iter()
        .map(|name| {
            let (cmd, log, ready) = c.worker_command(name);
            (
                name,
                std::thread::spawn(move || spawn_node(cmd, &log, &ready)),
            )
        })
        .collect();
    for (name, t) in starting {
        c.workers.insert(name.to_owned(), t.join().unwrap());
    }
    let store = vbs_repository::Store::open(
        &c.repository,
        &vbs_repository::Credentials {
            user: Some("test:tester".into()),
            key: Some("testing".into()),
            ..vbs_repository::Credentials::default()
        },
    )
    .await
    .unwrap();
    assert!(
        store.exists("keys.json").await.unwrap(),
        "the repository is encrypted"
    );
    let mut volumes = Vec::new();
    for i in 0..6 {
        let v = c.volume(&format!("key-{i}")).await;
        image::random(&c.volume_file(&v), 0, 8 * MIB, 700 + i);
        volumes.push(v);
    }
    let ids: Vec<String> =
        futures_join(volumes.iter().map(|v| c.backup(json!({"volume_id": v})))).await;
    for id in &ids {
        c.wait("backups", "backup", id, "available").await;
    }
    // Written by both workers, each backup restores on whichever worker claims it.
    let writers: BTreeSet<String> = c
        .sql("SELECT DISTINCT split_part(worker, '/', 1) FROM jobs WHERE kind = 'backup'")
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    for (i, id) in ids.iter().enumerate() {
        let restored = c.restore(id).await;
        assert_same(&restored, &c.volume_file(&volumes[i]), GIB);
    }
    eprintln!("backups written by {writers:?}");
}

#[tokio::test]
async fn two_workers_share_the_work_and_take_over_a_dead_one() {
    let mut c = Cluster::start(&["w1", "w2"]);
    let mut volumes = Vec::new();
    for i in 0..10 {
        let v = c.volume(&format!("vol-{i}")).await;
        image::fill(&c.volume_file(&v), 0, 6, 100 + i);
        image::fill(&c.volume_file(&v), 500 * MIB, 2, 200 + i);
        let s = c.snapshot(&v).await;
        volumes.push((v, s));
    }
    let requests = volumes.iter().flat_map(|(v, s)| {
        [
            json!({"volume_id": v, "name": format!("of-{v}")}),
            json!({"volume_id": v, "snapshot_id": s}),
        ]
    });
    let ids: Vec<String> = futures_join(requests.map(|r| c.backup(r))).await;
    assert_eq!(ids.len(), 20);
    for id in &ids {
        c.wait("backups", "backup", id, "available").await;
    }
    for (i, id) in ids.iter().enumerate() {
        let restored = c.restore(id).await;
        assert_same(&restored, &c.volume_file(&volumes[i / 2].0), GIB);
    }

    // The catalog's history: one finished job per backup, one claim each, spread over
    // both workers.
    let rows = c.sql(
        "SELECT backup_id, state, attempts, split_part(worker, '/', 1) FROM jobs \
         WHERE kind = 'backup' ORDER BY backup_id",
    );
    let ran: BTreeMap<String, (String, String, String)> = rows
        .into_iter()
        .map(|r| (r[0].clone(), (r[1].clone(), r[2].clone(), r[3].clone())))
        .collect();
    assert_eq!(
        ran.keys().cloned().collect::<BTreeSet<_>>(),
        ids.iter().cloned().collect()
    );
    for (id, (state, attempts, node)) in &ran {
        assert_eq!((state.as_str(), attempts.as_str()), ("done", "1"), "{id}");
        assert!(node == "w1" || node == "w2", "{id} ran on {node}");
    }
    let nodes: BTreeSet<&str> = ran.values().map(|(_, _, n)| n.as_str()).collect();
    assert_eq!(nodes, BTreeSet::from(["w1", "w2"]), "both workers worked");

    // Five larger backups; w1 dies while it runs some of them.
    let mut big = Vec::new();
    for i in 0..5 {
        let v = c.volume(&format!("big-{i}")).await;
        image::random(&c.volume_file(&v), 0, 96 * MIB, 300 + i);
        big.push(v);
    }
    let ids: Vec<String> =
        futures_join(big.iter().map(|v| c.backup(json!({"volume_id": v})))).await;
    let deadline = Instant::now() + Duration::from_mins(1);
    let w1_running = || {
        c.sql(
            "SELECT backup_id FROM jobs WHERE kind = 'backup' AND state = 'running' \
             AND worker LIKE 'w1/%'",
        )
        .into_iter()
        .map(|r| r[0].clone())
        .collect::<Vec<_>>()
    };
    while w1_running().is_empty() {
        assert!(Instant::now() < deadline, "w1 never took a backup");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let it get into the middle of the work.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let held = w1_running();
    assert!(!held.is_empty(), "w1 finished before it could be killed");
    let killed = Instant::now();
    c.kill("w1");
    // Taken over once the lease runs out: within the lease and a few polls of w2.
    let list = held
        .iter()
        .map(|id| format!("'{id}'"))
        .collect::<Vec<_>>()
        .join(", ");
    loop {
        let rows = c.sql(&format!(
            "SELECT count(*) FROM jobs WHERE backup_id IN ({list}) AND worker LIKE 'w2/%'"
        ));
        if rows[0][0] == held.len().to_string() {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(LEASE_SECS + 5),
            "w1's jobs not taken over {:?} after the kill",
            killed.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let taken_over = killed.elapsed();
    for id in &ids {
        let b = c.settled(id, Duration::from_mins(3)).await;
        match b["status"].as_str().unwrap() {
            "available" => {}
            "error" => assert!(
                b["fail_reason"].as_str().is_some_and(|r| !r.is_empty()),
                "{b}"
            ),
            other => panic!("{id} ended {other}: {b}"),
        }
    }
    // w1's jobs were claimed again by w2 once their lease ran out.
    for id in &held {
        let rows = c.sql(&format!(
            "SELECT state, split_part(worker, '/', 1), attempts FROM jobs WHERE backup_id = '{id}'"
        ));
        assert_eq!(
            rows,
            vec![vec!["done".to_owned(), "w2".into(), "2".into()]],
            "{id}"
        );
    }
    eprintln!(
        "w1 held {} backups; taken over {:.1} s and all settled {:.1} s after the kill (lease {LEASE_SECS} s)",
        held.len(),
        taken_over.as_secs_f64(),
        killed.elapsed().as_secs_f64()
    );
    // Nothing holds the repository lock any more (w1's expired).
    assert!(
        c.sql(
            "SELECT holder FROM repository_locks \
             WHERE lease_until > extract(epoch FROM now()) * 1000000"
        )
        .is_empty()
    );
    // A restore after the takeover.
    let restored = c.restore(&held[0]).await;
    let source = big[ids.iter().position(|i| i == &held[0]).unwrap()].clone();
    assert_same(&restored, &c.volume_file(&source), GIB);
}

/// Deletes and sweeps on some nodes while others write backups whose packs are the
/// very same objects (volumes with identical contents give identical packs). Each
/// round backs the volumes up again while the previous generation, the only backups
/// naming those packs, is deleted and swept from a third process again and again: for
/// a moment nothing names the packs the writers are storing again. Every new
/// generation verifies intact and the last one restores byte for byte.
#[tokio::test]
async fn gc_on_one_node_while_another_writes_shared_packs() {
    let c = Cluster::start(&["w1", "w2"]);
    let mut vols = Vec::new();
    for i in 0..4 {
        let v = c.volume(&format!("same-{i}")).await;
        image::fill(&c.volume_file(&v), 0, 24, 42);
        vols.push(v);
    }
    let reference = c.volume_file(&vols[0]);
    let mut generation = Vec::new();
    for v in &vols {
        generation.push(c.backup(json!({"volume_id": v})).await);
    }
    for id in &generation {
        c.wait("backups", "backup", id, "available").await;
    }
    for v in &vols {
        c.wait("volumes", "volume", v, "available").await;
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sweeper = {
        let stop = stop.clone();
        let (dir, catalog, config) = (
            c.api.dir().to_path_buf(),
            c.api.catalog.clone(),
            Cluster::config(&c.config_dir, &c.repository, "gc", 0),
        );
        std::thread::spawn(move || {
            let mut sweeps = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) || sweeps == 0 {
                admin_gc(&dir, &catalog, &config);
                sweeps += 1;
            }
            sweeps
        })
    };
    for round in 0..5 {
        let next: Vec<String> =
            futures_join(vols.iter().map(|v| c.backup(json!({"volume_id": v})))).await;
        for id in &generation {
            let (st, b) = c.call(Method::DELETE, &format!("backups/{id}"), None).await;
            assert_eq!(st, 202, "{b}");
        }
        for id in &next {
            c.wait("backups", "backup", id, "available").await;
        }
        // The backup turns `available` and its volume is given back in one
        // transaction: no moment shows the one without the other.
        for v in &vols {
            let (st, b) = c.call(Method::GET, &format!("volumes/{v}"), None).await;
            assert_eq!(st, 200, "{b}");
            assert_eq!(b["volume"]["status"], "available", "round {round}: {b}");
        }
        let verified = c.admin_verify(&next);
        assert!(
            verified.status.success(),
            "round {round}: {}{}",
            String::from_utf8_lossy(&verified.stdout),
            String::from_utf8_lossy(&verified.stderr)
        );
        generation = next;
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let sweeps = sweeper.join().unwrap();
    let last = c.admin_gc();
    eprintln!("{sweeps} sweeps under load; last: {last}");
    assert_eq!(last["manifests"], generation.len(), "{last}");
    for id in &generation {
        let restored = c.restore(id).await;
        assert_same(&restored, &reference, GIB);
    }
}

/// One `vbs admin gc` run; its statistics.
fn admin_gc(dir: &Path, catalog: &str, config: &Path) -> Value {
    let out = vbs()
        .args(["admin", "gc", "--data-dir"])
        .arg(dir)
        .args(["--catalog", catalog, "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Volume work runs in the API process that took the request (copies, deletes,
/// extends, snapshot copies) and keeps its row fresh while it runs. Rows left in such a
/// status by a node that died (simulated: unchanged for an hour) are failed by the
/// scheduler's sweep; a row whose work still beats (the test refreshes it, as a live
/// node does) is left alone for several leases.
#[tokio::test]
async fn volume_work_of_a_dead_node_is_failed_and_live_work_is_not() {
    let c = Cluster::start(&[]);
    let mut vols = Vec::new();
    for name in ["copying", "deleting", "extending", "snapshotted", "live"] {
        vols.push(c.volume(name).await);
    }
    let (st, b) = c
        .call(
            Method::POST,
            "snapshots",
            Some(json!({"snapshot": {"volume_id": vols[3]}})),
        )
        .await;
    assert_eq!(st, 202, "{b}");
    let snap = b["snapshot"]["id"].as_str().unwrap().to_owned();
    c.wait("snapshots", "snapshot", &snap, "available").await;

    let an_hour_ago = "(extract(epoch from now()) * 1000000)::bigint - 3600000000";
    for (table, id, status) in [
        ("volumes", &vols[0], "creating"),
        ("volumes", &vols[1], "deleting"),
        ("volumes", &vols[2], "extending"),
        ("snapshots", &snap, "creating"),
    ] {
        c.sql(&format!(
            "UPDATE {table} SET status = '{status}', updated_at = {an_hour_ago} WHERE id = '{id}'"
        ));
    }
    let live = &vols[4];
    let beat = |c: &Cluster| {
        c.sql(&format!(
            "UPDATE volumes SET status = 'creating', \
             updated_at = (extract(epoch from now()) * 1000000)::bigint WHERE id = '{live}'"
        ));
    };
    beat(&c);

    let started = Instant::now();
    let want = [
        ("volumes", &vols[0], "error"),
        ("volumes", &vols[1], "error_deleting"),
        ("volumes", &vols[2], "error_extending"),
        ("snapshots", &snap, "error"),
    ];
    loop {
        let settled = want.iter().all(|(table, id, status)| {
            c.sql(&format!("SELECT status FROM {table} WHERE id = '{id}'"))[0][0] == *status
        });
        if settled {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(LEASE_SECS + 10),
            "dead work not failed: {:?}",
            c.sql("SELECT id, status FROM volumes UNION ALL SELECT id, status FROM snapshots")
        );
        beat(&c);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Several leases and sweeps later, the beating row is still at work.
    while started.elapsed() < Duration::from_secs(3 * LEASE_SECS) {
        beat(&c);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (st, b) = c.call(Method::GET, &format!("volumes/{live}"), None).await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["volume"]["status"], "creating", "{b}");
    // Once it stops beating, it is failed too.
    let stopped = Instant::now();
    c.wait("volumes", "volume", live, "error").await;
    assert!(
        stopped.elapsed() >= Duration::from_secs(LEASE_SECS - 1),
        "failed {:?} after its last beat, before its grace ran out",
        stopped.elapsed()
    );
}
