//! The crash tests' harness: the API as one project's member, the volume that is
//! backed up and the bytes each backup must restore, the invariants checked after a
//! restart, and the operations started (and measured) against the real server.

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use super::disk::{Disk, Trigger};
use super::{DATA, GIB, MV, Op, PROJECT, SETTLE, busy, reason, status};
use crate::support::image::{self, Rng, assert_same};
use crate::support::{Server, vbs};

pub(super) struct Crash {
    pub s: Server,
    pub token: String,
    /// The volume that is backed up.
    pub volume: String,
    pub refs: PathBuf,
    /// Backup id → a 1 GiB sparse file with what the volume held when it was requested.
    pub expected: BTreeMap<String, PathBuf>,
    pub restores_checked: u64,
    /// The store injects faults: a restore may fail (loudly) and is tried again.
    pub faulty: bool,
    pub restores_failed: u64,
}

impl Crash {
    pub(super) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let (st, b) = self
            .s
            .call(
                method,
                &format!("/v3/{PROJECT}/{path}"),
                Some(&self.token),
                Some(MV),
                body.as_ref(),
            )
            .await;
        (st.as_u16(), b)
    }

    /// The same request, sent from a task of its own so that the server can be killed
    /// while it is in flight; `None` when no answer came.
    pub(super) fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> tokio::task::JoinHandle<Option<(u16, Value)>> {
        let url = format!("{}/v3/{PROJECT}/{path}", self.s.base);
        let token = self.token.clone();
        tokio::spawn(async move {
            let mut req = reqwest::Client::new()
                .request(method, url)
                .header("X-Auth-Token", token)
                .header("OpenStack-API-Version", format!("volume {MV}"));
            if let Some(b) = body {
                req = req
                    .header("Content-Type", "application/json")
                    .body(b.to_string());
            }
            let resp = req.send().await.ok()?;
            let st = resp.status().as_u16();
            let text = resp.text().await.ok()?;
            Some((st, serde_json::from_str(&text).unwrap_or(Value::Null)))
        })
    }

    pub(super) fn volume_file(&self, id: &str) -> PathBuf {
        self.s.dir().join("volumes").join(format!("{id}.img"))
    }

    pub(super) async fn backups(&self) -> BTreeMap<String, Value> {
        let (st, b) = self.call(Method::GET, "backups/detail", None).await;
        assert_eq!(st, 200, "{b}");
        b["backups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| (x["id"].as_str().unwrap().to_owned(), x.clone()))
            .collect()
    }

    pub(super) async fn volumes(&self) -> BTreeMap<String, Value> {
        let (st, v) = self.call(Method::GET, "volumes/detail", None).await;
        assert_eq!(st, 200, "{v}");
        v["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| (x["id"].as_str().unwrap().to_owned(), x.clone()))
            .collect()
    }

    /// Waits (bounded) until no backup and no volume is in a transitional status.
    pub(super) async fn settle(&self) -> (BTreeMap<String, Value>, BTreeMap<String, Value>) {
        let deadline = Instant::now() + SETTLE;
        loop {
            let (b, v) = (self.backups().await, self.volumes().await);
            if !b.values().chain(v.values()).any(|x| busy(status(x))) {
                return (b, v);
            }
            assert!(
                Instant::now() < deadline,
                "left in a transitional status for {SETTLE:?}: backups {b:?} volumes {v:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Keeps what the volume holds now as the expected content of a backup.
    pub(super) fn keep_expected(&self, name: &str) -> PathBuf {
        let mut buf = vec![0u8; DATA as usize];
        std::fs::File::open(self.volume_file(&self.volume))
            .unwrap()
            .read_exact_at(&mut buf, 0)
            .unwrap();
        let path = self.refs.join(name);
        let f = std::fs::File::create(&path).unwrap();
        f.write_all_at(&buf, 0).unwrap();
        f.set_len(GIB).unwrap();
        path
    }

    /// Restores `backup` to a new volume and compares all of it (1 GiB, holes read as
    /// zeros) with what the volume held when the backup was requested. With store
    /// faults a restore may fail on one, saying so: it is tried again (a few times).
    pub(super) async fn check_restore(&mut self, backup: &str) {
        for _ in 0..10 {
            if self.try_restore(backup).await {
                return;
            }
            self.restores_failed += 1;
        }
        panic!("available backup {backup} failed 10 restores in a row");
    }

    /// One [`Crash::check_restore`]: `false` if it failed on an injected fault.
    async fn try_restore(&mut self, backup: &str) -> bool {
        let (st, r) = self
            .call(
                Method::POST,
                &format!("backups/{backup}/restore"),
                Some(json!({"restore": {}})),
            )
            .await;
        assert_eq!(st, 202, "restore {backup}: {r}");
        let vid = r["restore"]["volume_id"].as_str().unwrap().to_owned();
        let deadline = Instant::now() + SETTLE;
        let v = loop {
            let (st, v) = self
                .call(Method::GET, &format!("volumes/{vid}"), None)
                .await;
            assert_eq!(st, 200, "{v}");
            if !busy(status(&v["volume"])) {
                break v;
            }
            assert!(Instant::now() < deadline, "restore never ended: {v}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let ok = status(&v["volume"]) == "available";
        if ok {
            assert_same(&self.expected[backup], &self.volume_file(&vid), GIB);
            self.restores_checked += 1;
        } else {
            assert!(
                self.faulty,
                "available backup {backup} does not restore: {v}"
            );
            let (_, b) = self
                .call(Method::GET, &format!("backups/{backup}"), None)
                .await;
            assert_eq!(
                status(&b["backup"]),
                "available",
                "a failed restore leaves its backup available: {b}"
            );
        }
        let (st, b) = self
            .call(Method::DELETE, &format!("volumes/{vid}"), None)
            .await;
        assert_eq!(st, 202, "{b}");
        ok
    }

    /// `vbs admin engine verify` on the repository, naming every available backup: each
    /// must have its manifest and every block it needs, re-read and re-hashed.
    pub(super) fn engine_verify(&self, available: &[String]) {
        if available.is_empty() {
            // Named none, it would verify every stored backup: not what is asked here.
            return;
        }
        // The repository is encrypted (the default): the engine tool takes its key
        // from the environment.
        let key = std::fs::read_to_string(self.s.dir().join("repository.key")).unwrap();
        let out = vbs()
            .args(["admin", "engine", "verify", "--repository"])
            .arg(self.s.dir().join("repository"))
            .args(available)
            .env("VBS_REPOSITORY_KEY", key.trim())
            .output()
            .unwrap();
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        assert!(
            out.status.success() && report["damaged"] == json!([]),
            "verify after a restart: {report} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(report["reports"].as_array().unwrap().len(), available.len());
    }

    /// Invariants 1–3 after a restart (the caller has settled).
    pub(super) async fn check_all(
        &mut self,
        backups: &BTreeMap<String, Value>,
        vols: &BTreeMap<String, Value>,
    ) {
        for b in backups.values() {
            if status(b).starts_with("error") {
                assert!(!reason(b).is_empty(), "a failed backup says why: {b}");
            }
        }
        for v in vols.values() {
            assert!(
                matches!(status(v), "available" | "error" | "error_restoring"),
                "volume left {}: {v}",
                status(v)
            );
        }
        assert_eq!(
            status(&vols[&self.volume]),
            "available",
            "the backed-up volume is given back"
        );
        let available: Vec<String> = backups
            .iter()
            .filter(|(_, b)| status(b) == "available")
            .map(|(id, _)| id.clone())
            .collect();
        self.engine_verify(&available);
        for id in &available {
            self.check_restore(id).await;
        }
    }

    /// Waits for the trigger's moment (at most `limit`: the work may finish without
    /// it), then for its delay.
    pub(super) async fn wait_for(
        &self,
        trigger: Trigger,
        before: &Disk,
        target: Option<&str>,
        limit: Duration,
    ) {
        let t = Instant::now();
        while !trigger.happened(&Disk::read(self.s.dir()), before, target) && t.elapsed() < limit {
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        tokio::time::sleep(trigger.delay()).await;
    }

    /// Sends the request that starts `op` (restore and delete: of `target`), after
    /// mutating the volume and keeping its expected bytes for a backup.
    pub(super) fn start(
        &self,
        op: Op,
        target: Option<&str>,
        n: u64,
    ) -> tokio::task::JoinHandle<Option<(u16, Value)>> {
        match op {
            Op::Full | Op::Incremental => {
                // A guest rewrites pages; the backup must hold the volume as it is now.
                image::mutate(&self.volume_file(&self.volume), DATA, 64, 1000 + n);
                self.keep_expected("pending");
                self.send(
                    Method::POST,
                    "backups",
                    Some(json!({"backup": {
                        "volume_id": self.volume,
                        "incremental": op == Op::Incremental,
                    }})),
                )
            }
            Op::Restore => self.send(
                Method::POST,
                &format!("backups/{}/restore", target.unwrap()),
                Some(json!({"restore": {}})),
            ),
            Op::Delete => self.send(
                Method::DELETE,
                &format!("backups/{}", target.unwrap()),
                None,
            ),
        }
    }
}

/// What a restore or delete of this round works on: a random available backup (a
/// delete: one without incrementals).
pub(super) fn pick(op: Op, rng: &mut Rng, backups: &BTreeMap<String, Value>) -> Option<String> {
    let ids: Vec<&String> = backups
        .iter()
        .filter(|(_, b)| status(b) == "available")
        .filter(|(_, b)| op != Op::Delete || b["has_dependent_backups"] == false)
        .map(|(id, _)| id)
        .collect();
    (!ids.is_empty()).then(|| ids[rng.below(ids.len() as u64) as usize].clone())
}

/// Runs `op` (on `target`) to its end without a kill; returns how long it took (until
/// the worker moved the status), the backup or volume it made, and the packs it added.
pub(super) async fn measure(
    h: &mut Crash,
    op: Op,
    target: Option<&str>,
    n: u64,
) -> (Duration, String, usize) {
    h.settle().await;
    let disk = Disk::read(h.s.dir());
    let t = Instant::now();
    let (st, body) = h.start(op, target, n).await.unwrap().unwrap();
    assert_eq!(st, 202, "{op:?}: {body}");
    let made = match op {
        Op::Full | Op::Incremental => body["backup"]["id"].as_str().unwrap().to_owned(),
        Op::Restore => body["restore"]["volume_id"].as_str().unwrap().to_owned(),
        Op::Delete => String::new(),
    };
    let (path, key) = match op {
        Op::Full | Op::Incremental => (format!("backups/{made}"), "backup"),
        Op::Restore => (format!("volumes/{made}"), "volume"),
        Op::Delete => (format!("backups/{}", target.unwrap()), "backup"),
    };
    loop {
        let (st, b) = h.call(Method::GET, &path, None).await;
        if st == 404 || !busy(status(&b[key])) {
            break;
        }
        assert!(t.elapsed() < SETTLE, "{op:?} never ended: {b}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let took = t.elapsed();
    let packs = Disk::read(h.s.dir()).packs.difference(&disk.packs).count();
    if matches!(op, Op::Full | Op::Incremental) {
        let path = h.refs.join(&made);
        std::fs::rename(h.refs.join("pending"), &path).unwrap();
        h.expected.insert(made.clone(), path);
    }
    (took, made, packs)
}
