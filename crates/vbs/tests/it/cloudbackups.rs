//! VBS's asynchronous backup APIs and jobs (spec 03 §2.1–§2.3, §3), and the deprecated
//! v2 write routes (§1): real backups and restores followed from `INIT` to `SUCCESS`
//! through their jobs and compared byte for byte, every `VolumeBackup.*` code these
//! endpoints give, and a job ending `FAIL` when its worker is killed mid-run.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::many_single_char_names
)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::both;
use crate::support::image::{self, MIB, assert_same};
use crate::support::*;

const MV: &str = "3.71";

struct Vbs<'a> {
    s: &'a Server,
    project: &'a str,
    token: String,
}

impl<'a> Vbs<'a> {
    fn new(s: &'a Server, token: String, project: &'a str) -> Self {
        Self { s, project, token }
    }

    /// A call to `/{version}/{project}/{path}`.
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.s
            .call(method, path, Some(&self.token), Some(MV), body.as_ref())
            .await
    }

    async fn native(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.call(method, &format!("/v3/{}/{path}", self.project), body)
            .await
    }

    async fn cloud(&self, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.call(
            Method::POST,
            &format!("/v2/{}/cloudbackups{path}", self.project),
            body,
        )
        .await
    }

    /// A `/cloudbackups` call that must answer a job id.
    async fn job_of(&self, path: &str, body: Option<Value>) -> String {
        let (st, b) = self.cloud(path, body).await;
        assert_eq!(st, 200, "{b}");
        assert_eq!(b.as_object().unwrap().len(), 1, "{b}");
        b["job_id"].as_str().unwrap().to_owned()
    }

    async fn job(&self, id: &str) -> (StatusCode, Value) {
        self.call(
            Method::GET,
            &format!("/v1/{}/jobs/{id}", self.project),
            None,
        )
        .await
    }

    /// Polls a job until it is `SUCCESS` or `FAIL`; returns it and the statuses seen.
    async fn wait_job(&self, id: &str) -> (Value, Vec<String>) {
        let deadline = Instant::now() + Duration::from_mins(1);
        let mut seen: Vec<String> = Vec::new();
        loop {
            let (st, b) = self.job(id).await;
            assert_eq!(st, 200, "{b}");
            let status = b["status"].as_str().unwrap().to_owned();
            if seen.last() != Some(&status) {
                seen.push(status.clone());
            }
            if status == "SUCCESS" || status == "FAIL" {
                return (b, seen);
            }
            assert!(Instant::now() < deadline, "job {id} never ended: {b}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn volume(&self, size: u64, name: &str) -> String {
        let (st, b) = self
            .native(
                Method::POST,
                "volumes",
                Some(json!({"volume": {"size": size, "name": name}})),
            )
            .await;
        assert_eq!(st, 202, "{b}");
        b["volume"]["id"].as_str().unwrap().to_owned()
    }

    async fn backup(&self, id: &str) -> Value {
        let (st, b) = self
            .native(Method::GET, &format!("backups/{id}"), None)
            .await;
        assert_eq!(st, 200, "{b}");
        b["backup"].clone()
    }

    /// An admin's `os-reset_status` of a volume or backup.
    async fn reset(&self, admin: &Vbs<'_>, kind: &str, id: &str, status: &str) {
        let (st, b) = admin
            .call(
                Method::POST,
                &format!("/v3/{}/{kind}/{id}/action", self.project),
                Some(json!({"os-reset_status": {"status": status}})),
            )
            .await;
        assert_eq!(st, 202, "{b}");
    }
}

fn volume_file(s: &Server, id: &str) -> PathBuf {
    s.dir().join("volumes").join(format!("{id}.img"))
}

#[track_caller]
fn assert_code(got: &(StatusCode, Value), status: u16, code: &str) {
    let (st, b) = got;
    assert_eq!(st.as_u16(), status, "{b}");
    assert_eq!(b["error"]["code"], code, "{b}");
    assert!(
        b["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{b}"
    );
    assert_eq!(b.as_object().unwrap().len(), 1, "{b}");
}

/// `2016-01-28T16:14:09.466Z`.
fn is_job_time(v: &Value) -> bool {
    v.as_str().is_some_and(|t| {
        t.len() == 24
            && t.ends_with('Z')
            && t.as_bytes()[10] == b'T'
            && t.as_bytes()[19] == b'.'
            && t[20..23].bytes().all(|c| c.is_ascii_digit())
    })
}

// ---- §2.1–§2.3 and §3: the whole path, byte for byte ---------------------------

async fn backup_restore_delete_through_jobs(b: Backend) {
    let s = Server::start_with(b, &[], &[]);
    let a = Vbs::new(&s, token("usera", PA), PA);
    let src = a.volume(1, "src").await;
    let src_file = volume_file(&s, &src);
    image::fill(&src_file, 0, 6, 11);
    image::fill(&src_file, 700 * MIB, 2, 12);
    let expected = s.dir().join("first.ref");
    std::fs::copy(&src_file, &expected).unwrap();

    // The first backup of a disk is full, whatever was asked.
    let body = json!({"backup": {"volume_id": src, "name": "daily-1", "description": "first",
        "tags": [{"key": "env", "value": "prod"}, {"key": "team", "value": ""}]}});
    let job = a.job_of("", Some(body)).await;
    let (j, seen) = a.wait_job(&job).await;
    assert_eq!(j["status"], "SUCCESS", "{j}");
    assert!(
        seen.iter()
            .all(|st| ["INIT", "RUNNING", "SUCCESS"].contains(&st.as_str())),
        "{seen:?}"
    );
    assert_eq!(j["job_id"], job);
    assert_eq!(j["job_type"], "bksCreateBackup");
    assert_eq!(j["error_code"], Value::Null);
    assert_eq!(j["fail_reason"], Value::Null);
    assert!(is_job_time(&j["begin_time"]), "{j}");
    assert!(is_job_time(&j["end_time"]), "{j}");
    assert!(j["begin_time"].as_str() <= j["end_time"].as_str(), "{j}");
    assert_eq!(j["sub_jobs"], json!([]));
    let first = j["entities"]["backup_id"].as_str().unwrap().to_owned();
    assert_eq!(
        j["entities"],
        json!({"backup_id": first, "volume_id": src, "snapshot_id": null,
               "bks_create_volume_name": "daily-1"})
    );
    // The native API sees the same backup; the v2 view shows its tags.
    let bk = a.backup(&first).await;
    assert_eq!(
        (
            &bk["status"],
            &bk["name"],
            &bk["description"],
            &bk["is_incremental"]
        ),
        (
            &json!("available"),
            &json!("daily-1"),
            &json!("first"),
            &json!(false)
        ),
        "{bk}"
    );
    let (st, v2) = a
        .call(Method::GET, &format!("/v2/{PA}/backups/{first}"), None)
        .await;
    assert_eq!(st, 200, "{v2}");
    assert_eq!(
        v2["backup"]["tags"],
        json!([{"key": "env", "value": "prod"}, {"key": "team", "value": ""}])
    );

    // Later backups are incremental by default; FullBackup forces a full one.
    image::mutate(&src_file, 6 * MIB, 16, 13);
    let job = a
        .job_of(
            "",
            Some(json!({"backup": {"volume_id": src, "name": "daily-2"}})),
        )
        .await;
    let (j, _) = a.wait_job(&job).await;
    assert_eq!(j["status"], "SUCCESS", "{j}");
    let second = j["entities"]["backup_id"].as_str().unwrap().to_owned();
    assert_eq!(a.backup(&second).await["is_incremental"], true);
    let job = a
        .job_of(
            "",
            Some(json!({"backup": {"volume_id": src, "name": "full-3",
                "extend_param": {"FullBackup": "true"}}})),
        )
        .await;
    let (j, _) = a.wait_job(&job).await;
    let third = j["entities"]["backup_id"].as_str().unwrap().to_owned();
    assert_eq!(a.backup(&third).await["is_incremental"], false);

    // Restore the first backup onto another disk: the bytes of the first state.
    let target = a.volume(1, "target").await;
    let job = a
        .job_of(
            &format!("/{first}/restore"),
            Some(json!({"restore": {"volume_id": target}})),
        )
        .await;
    let (j, _) = a.wait_job(&job).await;
    assert_eq!(j["status"], "SUCCESS", "{j}");
    assert_eq!(j["job_type"], "bksRestoreBackup");
    assert_eq!(
        j["entities"],
        json!({"backup_id": first, "volume_id": target})
    );
    assert_same(&volume_file(&s, &target), &expected, 1 << 30);
    assert_eq!(a.backup(&first).await["status"], "available");

    // The deprecated POST delete: the newest full backup has no dependents.
    let job = a.job_of(&format!("/{third}"), None).await;
    let (j, _) = a.wait_job(&job).await;
    assert_eq!(j["status"], "SUCCESS", "{j}");
    assert_eq!(j["job_type"], "bksDeleteBackup");
    assert_eq!(j["entities"], json!({"backup_id": third}));
    let (st, _) = a
        .native(Method::GET, &format!("backups/{third}"), None)
        .await;
    assert_eq!(st, 404);

    // The deprecated v2 write routes behave as 3.0.
    let (st, created) = a
        .call(
            Method::POST,
            &format!("/v2/{PA}/backups"),
            Some(json!({"backup": {"volume_id": src, "name": "v2"}})),
        )
        .await;
    assert_eq!(st, 202, "{created}");
    let v2_id = created["backup"]["id"].as_str().unwrap().to_owned();
    assert!(
        created["backup"]["links"][0]["href"]
            .as_str()
            .unwrap()
            .contains(&format!("/v2/{PA}/backups/{v2_id}")),
        "{created}"
    );
    wait_status(
        &s,
        &format!("/v3/{PA}/backups/{v2_id}"),
        &a.token,
        "backup",
        "available",
    )
    .await;
    let (st, r) = a
        .call(
            Method::POST,
            &format!("/v2/{PA}/backups/{v2_id}/restore"),
            Some(json!({"restore": {"volume_id": target}})),
        )
        .await;
    assert_eq!(st, 202, "{r}");
    assert_eq!(r["restore"]["volume_id"], target);
    wait_status(
        &s,
        &format!("/v3/{PA}/volumes/{target}"),
        &a.token,
        "volume",
        "available",
    )
    .await;
    wait_status(
        &s,
        &format!("/v3/{PA}/backups/{v2_id}"),
        &a.token,
        "backup",
        "available",
    )
    .await;
    let (st, _) = a
        .call(Method::DELETE, &format!("/v2/{PA}/backups/{v2_id}"), None)
        .await;
    assert_eq!(st, 202);
}
both!(backup_restore_delete_through_jobs);

// ---- every code of §2.1–§2.3 and §3 -----------------------------------------------

async fn error_codes(b: Backend) {
    let s = Server::start_with(b, &[], &[]);
    let a = Vbs::new(&s, token("usera", PA), PA);
    let admin = Vbs::new(&s, token("admin", PA), PA);
    let other = Vbs::new(&s, token("userb", PB), PB);
    let vol = a.volume(2, "src").await;
    image::fill(&volume_file(&s, &vol), 0, 2, 21);
    let create = |inner: Value| json!({"backup": inner});
    let ok = |name: &str| create(json!({"volume_id": vol, "name": name}));

    // Body and field rules.
    let raw = s
        .call(
            Method::POST,
            &format!("/v2/{PA}/cloudbackups"),
            Some(&a.token),
            None,
            Some(&json!("x")),
        )
        .await;
    assert_code(&raw, 400, "VolumeBackup.0002");
    assert_code(
        &a.cloud("", Some(json!({"nobackup": {}}))).await,
        400,
        "VolumeBackup.0002",
    );
    assert_code(
        &a.cloud("", Some(create(json!({"volume_id": vol})))).await,
        400,
        "VolumeBackup.0007",
    );
    assert_code(
        &a.cloud("", Some(create(json!({"volume_id": vol, "name": ""}))))
            .await,
        400,
        "VolumeBackup.0026",
    );
    assert_code(
        &a.cloud(
            "",
            Some(create(json!({"volume_id": vol, "name": "n".repeat(65)}))),
        )
        .await,
        400,
        "VolumeBackup.0003",
    );
    assert_code(
        &a.cloud("", Some(create(json!({"volume_id": vol, "name": "a.b"}))))
            .await,
        400,
        "VolumeBackup.0004",
    );
    assert_code(
        &a.cloud(
            "",
            Some(create(json!({"volume_id": vol, "name": "Autobk1"}))),
        )
        .await,
        400,
        "VolumeBackup.0005",
    );
    assert_code(
        &a.cloud(
            "",
            Some(create(
                json!({"volume_id": vol, "name": "b", "description": "a<b"}),
            )),
        )
        .await,
        400,
        "VolumeBackup.0006",
    );
    assert_code(
        &a.cloud(
            "",
            Some(create(
                json!({"volume_id": vol, "name": "b", "description": "d".repeat(65)}),
            )),
        )
        .await,
        400,
        "VolumeBackup.0006",
    );
    assert_code(
        &a.cloud("", Some(create(json!({"name": "b"})))).await,
        400,
        "VolumeBackup.0010",
    );
    assert_code(
        &a.cloud("", Some(create(json!({"volume_id": "", "name": "b"}))))
            .await,
        400,
        "VolumeBackup.0010",
    );
    assert_code(
        &a.cloud(
            "",
            Some(create(json!({"volume_id": "disk-1", "name": "b"}))),
        )
        .await,
        400,
        "VolumeBackup.0011",
    );
    assert_code(
        &a.cloud(
            "",
            Some(create(
                json!({"volume_id": vol, "name": "b", "tags": [{"key": "k/1", "value": "v"}]}),
            )),
        )
        .await,
        400,
        "VolumeBackup.0049",
    );
    assert_code(&a.cloud("", Some(create(json!({"volume_id": vol, "name": "b", "tags": [{"key": "k", "value": "v".repeat(44)}]})))).await, 400, "VolumeBackup.0049");
    let many: Vec<Value> = (0..11)
        .map(|i| json!({"key": format!("k{i}"), "value": "v"}))
        .collect();
    assert_code(
        &a.cloud(
            "",
            Some(create(json!({"volume_id": vol, "name": "b", "tags": many}))),
        )
        .await,
        400,
        "VolumeBackup.0050",
    );
    assert_code(
        &a.cloud(
            "",
            Some(create(
                json!({"volume_id": vol, "name": "b", "extend_param": {"FullBackup": "maybe"}}),
            )),
        )
        .await,
        400,
        "VolumeBackup.0002",
    );

    // The disk: missing, another project's, in a bad state, busy.
    let unknown = "0000dead-0000-4000-8000-000000000000";
    assert_code(
        &a.cloud("", Some(create(json!({"volume_id": unknown, "name": "b"}))))
            .await,
        404,
        "VolumeBackup.0021",
    );
    assert_code(
        &other.cloud("", Some(ok("b"))).await,
        404,
        "VolumeBackup.0021",
    );
    let reader = Vbs::new(&s, format!("userr:{PA}:reader"), PA);
    assert_code(
        &reader.cloud("", Some(ok("b"))).await,
        403,
        "VolumeBackup.0042",
    );
    a.reset(&admin, "volumes", &vol, "error").await;
    assert_code(&a.cloud("", Some(ok("b"))).await, 400, "VolumeBackup.0012");
    a.reset(&admin, "volumes", &vol, "backing-up").await;
    assert_code(&a.cloud("", Some(ok("b"))).await, 400, "VolumeBackup.0013");
    a.reset(&admin, "volumes", &vol, "available").await;

    // Twenty backups a disk at most.
    let mut ids = Vec::new();
    for i in 0..20 {
        let job = a.job_of("", Some(ok(&format!("b{i}")))).await;
        let (j, _) = a.wait_job(&job).await;
        assert_eq!(j["status"], "SUCCESS", "{j}");
        ids.push(j["entities"]["backup_id"].as_str().unwrap().to_owned());
    }
    assert_code(
        &a.cloud("", Some(ok("b21"))).await,
        400,
        "VolumeBackup.0040",
    );

    // Restore: body, ids, the backup, the disk.
    let newest = ids.last().unwrap().clone();
    let small = a.volume(1, "small").await;
    let target = a.volume(2, "target").await;
    let restore = |v: &str| Some(json!({"restore": {"volume_id": v}}));
    assert_code(
        &a.cloud(&format!("/{newest}/restore"), Some(json!({"x": 1})))
            .await,
        400,
        "VolumeBackup.0210",
    );
    assert_code(
        &a.cloud(&format!("/{newest}/restore"), Some(json!({"restore": {}})))
            .await,
        400,
        "VolumeBackup.0208",
    );
    assert_code(
        &a.cloud(&format!("/{newest}/restore"), restore("disk-2"))
            .await,
        400,
        "VolumeBackup.0208",
    );
    assert_code(
        &a.cloud("/not-a-uuid/restore", restore(&target)).await,
        400,
        "VolumeBackup.0204",
    );
    assert_code(
        &a.cloud(&format!("/{unknown}/restore"), restore(&target))
            .await,
        404,
        "VolumeBackup.0111",
    );
    assert_code(
        &other
            .cloud(&format!("/{newest}/restore"), restore(&target))
            .await,
        404,
        "VolumeBackup.0111",
    );
    assert_code(
        &a.cloud(&format!("/{newest}/restore"), restore(unknown))
            .await,
        404,
        "VolumeBackup.0207",
    );
    assert_code(
        &a.cloud(&format!("/{newest}/restore"), restore(&small))
            .await,
        400,
        "VolumeBackup.0209",
    );
    for (status, code) in [
        ("error", "VolumeBackup.0202"),
        ("backing-up", "VolumeBackup.0206"),
        ("maintenance", "VolumeBackup.0205"),
    ] {
        a.reset(&admin, "volumes", &target, status).await;
        assert_code(
            &a.cloud(&format!("/{newest}/restore"), restore(&target))
                .await,
            400,
            code,
        );
    }
    a.reset(&admin, "volumes", &target, "available").await;
    a.reset(&admin, "backups", &newest, "error").await;
    assert_code(
        &a.cloud(&format!("/{newest}/restore"), restore(&target))
            .await,
        400,
        "VolumeBackup.0089",
    );

    // Delete: the native rules in VBS's envelope.
    assert_code(
        &a.cloud(&format!("/{unknown}"), None).await,
        404,
        "VolumeBackup.0111",
    );
    assert_code(
        &a.cloud("/not-a-uuid", None).await,
        400,
        "VolumeBackup.0105",
    );
    let (st, chained) = a
        .native(Method::GET, &format!("backups/{}", ids[0]), None)
        .await;
    assert_eq!(st, 200);
    assert_eq!(
        chained["backup"]["has_dependent_backups"], true,
        "{chained}"
    );
    assert_code(
        &a.cloud(&format!("/{}", ids[0]), None).await,
        400,
        "VolumeBackup.0089",
    );

    // Jobs are the asking project's.
    let job = a.job_of(&format!("/{newest}"), None).await;
    assert_eq!(a.wait_job(&job).await.0["status"], "SUCCESS");
    assert_code(&other.job(&job).await, 404, "common.0011");
    assert_code(&a.job("no-such-job").await, 404, "common.0011");
    // A URL project other than the token's.
    let (st, bad) = s
        .call(
            Method::GET,
            &format!("/v1/{PB}/jobs/{job}"),
            Some(&a.token),
            None,
            None,
        )
        .await;
    assert_code(&(st, bad), 403, "VolumeBackup.0042");
}
both!(error_codes);

/// No worker anywhere: `VolumeBackup.0900` (503).
#[tokio::test]
async fn no_worker_is_unavailable() {
    let s = Server::start_with(Backend::Sqlite, &[], &["--role", "api"]);
    let a = Vbs::new(&s, token("usera", PA), PA);
    let vol = a.volume(1, "src").await;
    let got = a
        .cloud("", Some(json!({"backup": {"volume_id": vol, "name": "b"}})))
        .await;
    assert_code(&got, 503, "VolumeBackup.0900");
}

// ---- a worker killed mid-run: the job ends FAIL ------------------------------------

/// With `job_max_attempts = 1`, a backup whose process is killed while it runs is not
/// started again: its job ends `FAIL` with `VolumeBackup.0064` and a reason, the backup
/// `error`, and the disk is given back. (With the default of 3 attempts the backup is
/// run again instead: `crate::crash`.)
async fn killed_worker_fails_the_job(b: Backend) {
    let config =
        std::env::temp_dir().join(format!("vbs-it-{}.toml", uuid::Uuid::new_v4().simple()));
    std::fs::write(&config, "job_max_attempts = 1\njob_lease_secs = 1\n").unwrap();
    let mut s = Server::start_with(b, &[], &["--config", config.to_str().unwrap()]);
    let a = Vbs::new(&s, token("usera", PA), PA);
    let vol = a.volume(1, "big").await;
    image::random(&volume_file(&s, &vol), 0, 64 * MIB, 31);

    let mut killed = None;
    for attempt in 0..5 {
        let job = a
            .job_of(
                "",
                Some(json!({"backup": {"volume_id": vol, "name": format!("k{attempt}")}})),
            )
            .await;
        // Kill as soon as the worker holds it.
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            let (_, j) = a.job(&job).await;
            let st = j["status"].as_str().unwrap_or_default().to_owned();
            if st != "INIT" || Instant::now() > deadline {
                break st;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        if status == "RUNNING" {
            s.kill();
            killed = Some(job);
            break;
        }
        // It finished before we saw it run: try again with another backup.
        assert_eq!(status, "SUCCESS", "job {job}");
    }
    let job = killed.expect("a backup job was seen RUNNING");
    s.restart();
    let a = Vbs::new(&s, token("usera", PA), PA);
    let (j, _) = a.wait_job(&job).await;
    println!("killed worker's job: {j}");
    assert_eq!(j["status"], "FAIL", "{j}");
    assert_eq!(j["error_code"], "VolumeBackup.0064", "{j}");
    assert_eq!(j["fail_reason"], "Interrupted 1 times; giving up.", "{j}");
    assert!(is_job_time(&j["end_time"]), "{j}");
    let id = j["entities"]["backup_id"].as_str().unwrap();
    let bk = a.backup(id).await;
    assert_eq!(bk["status"], "error", "{bk}");
    wait_status(
        &s,
        &format!("/v3/{PA}/volumes/{vol}"),
        &a.token,
        "volume",
        "available",
    )
    .await;
    let _ = std::fs::remove_file(config);
}
both!(killed_worker_fails_the_job);
