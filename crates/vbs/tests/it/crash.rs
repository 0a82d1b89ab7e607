//! Crash tests: the server is killed with SIGKILL at seeded moments of backups (full
//! and incremental), restores and deletes (which run GC), and restarted on the same
//! data directory. After each restart, once the interrupted work is finished or
//! failed: nothing stays in a transitional status, a failure says why, `vbs admin
//! verify` finds every stored backup intact, and every `available` backup restores
//! byte-identical to the volume as it was when the backup was requested.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::image::{self, MIB, assert_same};
use crate::support::*;

const PROJECT: &str = "c0ffee00c0ffee00c0ffee00c0ffee00";
/// The part of the 1 GiB volume that holds data.
const DATA: u64 = 128 * MIB;
const KILL_POINTS: u64 = 24;

struct Harness {
    s: Server,
    token: String,
    /// The expected bytes (first `DATA` bytes) of every backup ever requested.
    expected: BTreeMap<String, PathBuf>,
    refs: PathBuf,
}

impl Harness {
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let (st, b) = self
            .s
            .call(
                method,
                &format!("/v3/{PROJECT}/{path}"),
                Some(&self.token),
                Some("3.71"),
                body.as_ref(),
            )
            .await;
        (st.as_u16(), b)
    }

    fn volume_file(&self, id: &str) -> PathBuf {
        self.s.dir().join("volumes").join(format!("{id}.img"))
    }

    /// Waits until no backup and no volume is in a transitional status; returns the
    /// backups.
    async fn settle(&self) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let (_, b) = self.call(Method::GET, "backups/detail", None).await;
            let (_, v) = self.call(Method::GET, "volumes/detail", None).await;
            let backups = b["backups"].as_array().cloned().unwrap_or_default();
            let volumes = v["volumes"].as_array().cloned().unwrap_or_default();
            let busy = backups
                .iter()
                .map(|x| x["status"].as_str().unwrap_or_default())
                .chain(
                    volumes
                        .iter()
                        .map(|x| x["status"].as_str().unwrap_or_default()),
                )
                .any(|st| {
                    matches!(
                        st,
                        "creating" | "restoring" | "deleting" | "backing-up" | "restoring-backup"
                    )
                });
            if !busy {
                return backups;
            }
            assert!(
                Instant::now() < deadline,
                "work left in a transitional status after a restart: {b} {v}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Restores `backup` to a new volume and compares it with what was backed up.
    async fn check_restore(&self, backup: &str) {
        let (st, r) = self
            .call(
                Method::POST,
                &format!("backups/{backup}/restore"),
                Some(json!({"restore": {}})),
            )
            .await;
        assert_eq!(st, 202, "restore {backup}: {r}");
        let vid = r["restore"]["volume_id"].as_str().unwrap().to_owned();
        wait_status(
            &self.s,
            &format!("/v3/{PROJECT}/volumes/{vid}"),
            &self.token,
            "volume",
            "available",
        )
        .await;
        assert_same(&self.expected[backup], &self.volume_file(&vid), DATA);
        let (st, _) = self
            .call(Method::DELETE, &format!("volumes/{vid}"), None)
            .await;
        assert_eq!(st, 202);
    }

    fn verify(&self) {
        let out = vbs()
            .args(["admin", "verify", "--data-dir"])
            .arg(self.s.dir())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "verify after a crash: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn keep(path: &Path, dst: &Path) {
    let mut buf = vec![0u8; DATA as usize];
    std::os::unix::fs::FileExt::read_exact_at(&std::fs::File::open(path).unwrap(), &mut buf, 0)
        .unwrap();
    std::fs::write(dst, buf).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_backup_restore_delete_and_gc() {
    let s = Server::start_with(Backend::Sqlite, &[], &[]);
    let refs = s.dir().join("expected");
    std::fs::create_dir_all(&refs).unwrap();
    let mut h = Harness {
        s,
        token: token("u", PROJECT),
        expected: BTreeMap::new(),
        refs,
    };
    let (st, v) = h
        .call(
            Method::POST,
            "volumes",
            Some(json!({"volume": {"size": 1, "name": "src"}})),
        )
        .await;
    assert_eq!(st, 202, "{v}");
    let vol = v["volume"]["id"].as_str().unwrap().to_owned();
    let src = h.volume_file(&vol);
    image::fill(&src, 0, DATA / MIB, 7);

    let mut rng = image::Rng::new(2024);
    let mut interrupted = BTreeMap::<&str, u64>::new();
    for point in 0..KILL_POINTS {
        // Backups, incrementals, restores and deletes in turn; the kill lands anywhere
        // from before the worker starts to after it has finished.
        let op = ["full", "incremental", "restore", "delete"][(point % 4) as usize];
        let delay = Duration::from_millis(rng.below(120));
        let backups = h.settle().await;
        let available: Vec<&Value> = backups
            .iter()
            .filter(|b| b["status"] == "available")
            .collect();
        let started = match op {
            "full" | "incremental" => {
                image::mutate(&src, DATA, 64, 100 + point);
                // What the backup must hold, kept before it is requested.
                let pending = h.refs.join("pending");
                keep(&src, &pending);
                let incremental = op == "incremental" && !available.is_empty();
                let (st, b) = h
                    .call(
                        Method::POST,
                        "backups",
                        Some(json!({"backup": {"volume_id": vol, "incremental": incremental}})),
                    )
                    .await;
                assert_eq!(st, 202, "create: {b}");
                let id = b["backup"]["id"].as_str().unwrap().to_owned();
                let path = h.refs.join(&id);
                std::fs::rename(&pending, &path).unwrap();
                h.expected.insert(id, path);
                true
            }
            "restore" => match available.last() {
                Some(b) => {
                    let id = b["id"].as_str().unwrap();
                    let (st, r) = h
                        .call(
                            Method::POST,
                            &format!("backups/{id}/restore"),
                            Some(json!({"restore": {}})),
                        )
                        .await;
                    assert_eq!(st, 202, "restore: {r}");
                    true
                }
                None => false,
            },
            _ => match available
                .iter()
                .find(|b| b["has_dependent_backups"] == false)
            {
                Some(b) => {
                    let id = b["id"].as_str().unwrap();
                    let (st, r) = h.call(Method::DELETE, &format!("backups/{id}"), None).await;
                    assert_eq!(st, 202, "delete: {r}");
                    true
                }
                None => false,
            },
        };
        if started {
            *interrupted.entry(op).or_default() += 1;
        }
        tokio::time::sleep(delay).await;
        h.s.kill_and_restart();

        let backups = h.settle().await;
        for b in &backups {
            let st = b["status"].as_str().unwrap();
            if st.starts_with("error") {
                assert!(
                    b["fail_reason"].as_str().is_some_and(|r| !r.is_empty()),
                    "a failed backup says why: {b}"
                );
            }
        }
        // Restored volumes never stay half-written without saying so.
        let (_, vols) = h.call(Method::GET, "volumes/detail", None).await;
        for v in vols["volumes"].as_array().unwrap() {
            let st = v["status"].as_str().unwrap();
            assert!(
                matches!(st, "available" | "error" | "error_restoring"),
                "volume left {st}: {v}"
            );
        }
        h.verify();
    }

    // Every backup that claims to be available restores byte for byte.
    let backups = h.settle().await;
    let mut checked = 0;
    for b in &backups {
        if b["status"] == "available" {
            h.check_restore(b["id"].as_str().unwrap()).await;
            checked += 1;
        }
    }
    assert!(
        checked >= 3,
        "enough backups survived to check: {backups:?}"
    );
    assert!(
        interrupted.values().all(|n| *n >= 4) && interrupted.len() == 4,
        "every operation was interrupted several times: {interrupted:?}"
    );
    h.verify();
    // The kills must have interrupted real work, not only idle servers.
    let log = std::fs::read_to_string(h.s.dir().join("server.log")).unwrap();
    let recovered = log.matches("interrupted by the last shutdown").count();
    assert!(
        recovered >= 8,
        "only {recovered} restarts found work to recover"
    );
}
