//! Quotas (issue 12): defaults from the configuration, admin overrides through Cinder's
//! `os-quota-sets`, VBS's `cloudbackups/quota`, 413s with Cinder's messages on every
//! path that adds a backup, volume or snapshot (VBS codes on `/cloudbackups`), usage
//! freed by deletes, and 20 concurrent creates against a quota of 5 leaving exactly 5,
//! on SQLite and on PostgreSQL with two API nodes.
#![allow(
    clippy::unwrap_used,
    clippy::too_many_lines,
    clippy::many_single_char_names,
    clippy::doc_markdown
)]

use base64::Engine as _;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::both;
use crate::support::*;

const QUOTAS: &str =
    "[quota]\nvolumes = 4\nsnapshots = 2\ngigabytes = 10\nbackups = 3\nbackup_gigabytes = 5\n";

fn with_config(b: Backend, toml: &str) -> (Server, std::path::PathBuf) {
    let path =
        std::env::temp_dir().join(format!("vbs-quota-{}.toml", uuid::Uuid::new_v4().simple()));
    std::fs::write(&path, toml).unwrap();
    let s = Server::start_with(b, &[], &["--config", path.to_str().unwrap()]);
    (s, path)
}

struct Api<'a> {
    s: &'a Server,
    token: String,
}

impl Api<'_> {
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.s
            .call(method, path, Some(&self.token), Some("3.71"), body.as_ref())
            .await
    }

    async fn volume(&self, size: u64) -> (StatusCode, Value) {
        self.call(
            Method::POST,
            &format!("/v3/{PA}/volumes"),
            Some(json!({"volume": {"size": size}})),
        )
        .await
    }

    async fn volume_id(&self, size: u64) -> String {
        let (st, b) = self.volume(size).await;
        assert_eq!(st, 202, "{b}");
        b["volume"]["id"].as_str().unwrap().to_owned()
    }

    async fn backup(&self, volume: &str) -> (StatusCode, Value) {
        self.call(
            Method::POST,
            &format!("/v3/{PA}/backups"),
            Some(json!({"backup": {"volume_id": volume}})),
        )
        .await
    }
}

#[track_caller]
fn over(got: &(StatusCode, Value), message: &str) {
    assert_eq!(got.0, 413, "{}", got.1);
    assert_eq!(
        got.1,
        json!({"overLimit": {"code": 413, "message": message, "retryAfter": "0"}})
    );
}

async fn quota_rules(b: Backend) {
    let (s, config) = with_config(b, QUOTAS);
    let a = Api {
        s: &s,
        token: token("usera", PA),
    };
    let admin = Api {
        s: &s,
        token: token("admin", PA),
    };
    let other = Api {
        s: &s,
        token: token("userb", PB),
    };
    let limits =
        json!({"volumes": 4, "snapshots": 2, "gigabytes": 10, "backups": 3, "backup_gigabytes": 5});

    // Show, defaults, usage; only one's own project.
    let (st, q) = a
        .call(Method::GET, &format!("/v3/{PA}/os-quota-sets/{PA}"), None)
        .await;
    assert_eq!(st, 200, "{q}");
    let mut want = limits.clone();
    want["id"] = json!(PA);
    assert_eq!(q, json!({"quota_set": want}));
    let (_, d) = a
        .call(
            Method::GET,
            &format!("/v3/{PA}/os-quota-sets/{PA}/defaults"),
            None,
        )
        .await;
    assert_eq!(d, json!({"quota_set": want}));
    let (st, _) = a
        .call(Method::GET, &format!("/v3/{PA}/os-quota-sets/{PB}"), None)
        .await;
    assert_eq!(st, 403);
    let (st, _) = admin
        .call(Method::GET, &format!("/v3/{PA}/os-quota-sets/{PB}"), None)
        .await;
    assert_eq!(st, 200);

    // Volumes: four, the fifth is over; gigabytes count volumes and snapshots.
    let mut vols = Vec::new();
    for _ in 0..3 {
        vols.push(a.volume_id(1).await);
    }
    over(
        &a.volume(8).await,
        "VolumeSizeExceedsAvailableQuota: Requested volume or snapshot exceeds allowed gigabytes quota. Requested 8G, quota is 10G and 3G has been consumed.",
    );
    vols.push(a.volume_id(1).await);
    let resp = reqwest::Client::new()
        .post(format!("{}/v3/{PA}/volumes", s.base))
        .header("X-Auth-Token", &a.token)
        .json(&json!({"volume": {"size": 1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    assert_eq!(resp.headers()["retry-after"], "0");
    over(
        &a.volume(1).await,
        "VolumeLimitExceeded: Maximum number of volumes allowed (4) exceeded for quota 'volumes'.",
    );
    // Another project has its own usage.
    let (st, _) = other
        .call(
            Method::POST,
            &format!("/v3/{PB}/volumes"),
            Some(json!({"volume": {"size": 1}})),
        )
        .await;
    assert_eq!(st, 202);
    // Snapshots: two, then over.
    for v in &vols[..2] {
        let (st, b) = a
            .call(
                Method::POST,
                &format!("/v3/{PA}/snapshots"),
                Some(json!({"snapshot": {"volume_id": v}})),
            )
            .await;
        assert_eq!(st, 202, "{b}");
    }
    over(
        &a.call(
            Method::POST,
            &format!("/v3/{PA}/snapshots"),
            Some(json!({"snapshot": {"volume_id": vols[2]}})),
        )
        .await,
        "SnapshotLimitExceeded: Maximum number of snapshots allowed (2) exceeded",
    );

    // Backups: three, then over, natively and through /cloudbackups.
    let mut backups = Vec::new();
    for v in &vols[..3] {
        let (st, b) = a.backup(v).await;
        assert_eq!(st, 202, "{b}");
        let id = b["backup"]["id"].as_str().unwrap().to_owned();
        wait_status(
            &s,
            &format!("/v3/{PA}/backups/{id}"),
            &a.token,
            "backup",
            "available",
        )
        .await;
        backups.push(id);
    }
    over(
        &a.backup(&vols[3]).await,
        "BackupLimitExceeded: Maximum number of backups allowed (3) exceeded",
    );
    let (st, e) = a
        .call(
            Method::POST,
            &format!("/v2/{PA}/cloudbackups"),
            Some(json!({"backup": {"volume_id": vols[3], "name": "q"}})),
        )
        .await;
    assert_eq!(
        (st.as_u16(), &e["error"]["code"]),
        (413, &json!("VolumeBackup.0080")),
        "{e}"
    );
    // The refused creates left the disk as it was.
    let (_, v) = a
        .call(Method::GET, &format!("/v3/{PA}/volumes/{}", vols[3]), None)
        .await;
    assert_eq!(v["volume"]["status"], "available");
    // Import of a record counts too.
    let (_, exported) = admin
        .call(
            Method::GET,
            &format!("/v3/{PA}/backups/{}/export_record", backups[0]),
            None,
        )
        .await;
    let record = exported["backup-record"].clone();
    let (st, _) = admin
        .call(
            Method::DELETE,
            &format!("/v3/{PA}/backups/{}", backups[2]),
            None,
        )
        .await;
    assert_eq!(st, 202);
    // Usage is freed once the backup is gone.
    let deadline = std::time::Instant::now() + std::time::Duration::from_mins(1);
    loop {
        let (_, q) = a
            .call(Method::GET, &format!("/v2/{PA}/cloudbackups/quota"), None)
            .await;
        if q["quotas"]["resources"][0]["used"] == 2 {
            assert_eq!(
                q,
                json!({"quotas": {"resources": [
                    {"type": "backups", "used": 2, "reserved": 0, "quota": 3},
                    {"type": "backup_gigabytes", "used": 2, "reserved": 0, "quota": 5}]}})
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{q}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Record of backup 0 under a new id (ids are unique): over once two more exist.
    let (st, b) = a.backup(&vols[3]).await;
    assert_eq!(st, 202, "{b}");
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut raw: Value =
        serde_json::from_slice(&b64.decode(record["backup_url"].as_str().unwrap()).unwrap())
            .unwrap();
    raw["id"] = json!("4a4a4a4a-0000-4000-8000-000000000001");
    let url = b64.encode(raw.to_string());
    over(
        &admin.call(Method::POST, &format!("/v3/{PA}/backups/import_record"), Some(json!({"backup-record": {"backup_service": record["backup_service"], "backup_url": url}}))).await,
        "BackupLimitExceeded: Maximum number of backups allowed (3) exceeded",
    );

    // Admin overrides: the member may not; bad keys and values are refused.

    assert_eq!(
        put(&a, json!({"quota_set": {"backups": 9}}), "").await.0,
        403
    );
    assert_fault(
        put(&admin, json!({"quota_set": {"backups": 9, "cores": 1}}), "").await,
        400,
        "badRequest",
        "Bad key(s) in quota set: cores",
    );
    assert_eq!(
        put(&admin, json!({"quota_set": {"backups": "many"}}), "")
            .await
            .0,
        400
    );
    assert_eq!(
        put(&admin, json!({"quota_set": {"backups": -2}}), "")
            .await
            .0,
        400
    );
    assert_eq!(put(&admin, json!({"nothing": {}}), "").await.0, 400);
    assert_fault(
        put(
            &admin,
            json!({"quota_set": {"backups": 1}}),
            "?skip_validation=False",
        )
        .await,
        400,
        "badRequest",
        "Quota backups limit must be equal or greater than existing resources. Current usage is 3 and the requested limit is 1.",
    );
    let (st, set) = put(
        &admin,
        json!({"quota_set": {"tenant_id": PA, "backups": 10, "backup_gigabytes": 4}}),
        "",
    )
    .await;
    assert_eq!(st, 200, "{set}");
    assert_eq!(set["quota_set"]["backups"], 10);
    assert!(set["quota_set"].get("id").is_none(), "{set}");
    // Now the gigabytes bind: 3 used of 4, a 1 GiB backup fits, the next does not.
    let (st, b) = a.backup(&vols[2]).await;
    assert_eq!(st, 202);
    let id = b["backup"]["id"].as_str().unwrap().to_owned();
    wait_status(
        &s,
        &format!("/v3/{PA}/backups/{id}"),
        &a.token,
        "backup",
        "available",
    )
    .await;
    over(
        &a.backup(&vols[1]).await,
        "VolumeBackupSizeExceedsAvailableQuota: Requested backup exceeds allowed Backup gigabytes quota. Requested 1G, quota is 4G and 4G has been consumed.",
    );
    let (st, e) = a
        .call(
            Method::POST,
            &format!("/v2/{PA}/cloudbackups"),
            Some(json!({"backup": {"volume_id": vols[1], "name": "q2"}})),
        )
        .await;
    assert_eq!(
        (st.as_u16(), &e["error"]["code"]),
        (413, &json!("VolumeBackup.0081")),
        "{e}"
    );
    let (_, q) = a
        .call(
            Method::GET,
            &format!("/v3/{PA}/os-quota-sets/{PA}?usage=True"),
            None,
        )
        .await;
    assert_eq!(
        q["quota_set"]["backup_gigabytes"],
        json!({"limit": 4, "in_use": 4, "reserved": 0}),
        "{q}"
    );
    assert_eq!(
        q["quota_set"]["volumes"],
        json!({"limit": 4, "in_use": 4, "reserved": 0}),
        "{q}"
    );
    assert_eq!(
        q["quota_set"]["gigabytes"],
        json!({"limit": 10, "in_use": 6, "reserved": 0}),
        "{q}"
    );
    // Restore into a new volume: the volumes quota.
    over(
        &a.call(
            Method::POST,
            &format!("/v3/{PA}/backups/{}/restore", backups[0]),
            Some(json!({"restore": {}})),
        )
        .await,
        "VolumeLimitExceeded: Maximum number of volumes allowed (4) exceeded for quota 'volumes'.",
    );
    let (_, bk) = a
        .call(
            Method::GET,
            &format!("/v3/{PA}/backups/{}", backups[0]),
            None,
        )
        .await;
    assert_eq!(
        bk["backup"]["status"], "available",
        "a refused restore left the backup as it was"
    );
    // Delete: the defaults again.
    let (st, _) = admin
        .call(
            Method::DELETE,
            &format!("/v3/{PA}/os-quota-sets/{PA}"),
            None,
        )
        .await;
    assert_eq!(st, 200);
    let (_, q) = a
        .call(Method::GET, &format!("/v3/{PA}/os-quota-sets/{PA}"), None)
        .await;
    assert_eq!(q["quota_set"]["backups"], 3);
    let _ = std::fs::remove_file(config);
}
both!(quota_rules);

/// 20 concurrent creates against a quota of 5: exactly 5 backups.
async fn concurrent_creates(b: Backend) {
    let (s, config) = with_config(b, "[quota]\nbackups = 5\n");
    let a = Api {
        s: &s,
        token: token("usera", PA),
    };
    let mut vols = Vec::new();
    for _ in 0..20 {
        vols.push(a.volume_id(1).await);
    }
    // On PostgreSQL the creates go to two API nodes.
    let mut bases = vec![s.base.clone()];
    let second = matches!(b, Backend::Postgres).then(|| {
        let (child, base) = s.another_node(&["--config", config.to_str().unwrap()]);
        bases.push(base);
        child
    });
    let client = reqwest::Client::new();
    let creates = vols.iter().enumerate().map(|(i, v)| {
        let url = format!("{}/v3/{PA}/backups", bases[i % bases.len()]);
        let req = client
            .post(url)
            .header("X-Auth-Token", &a.token)
            .json(&json!({"backup": {"volume_id": v}}));
        async move { req.send().await.unwrap().status().as_u16() }
    });
    let statuses = futures_join_all(creates).await;
    let accepted = statuses.iter().filter(|s| **s == 202).count();
    let refused = statuses.iter().filter(|s| **s == 413).count();
    let (_, list) = a
        .call(
            Method::GET,
            &format!("/v3/{PA}/backups?with_count=true"),
            None,
        )
        .await;
    let (_, q) = a
        .call(Method::GET, &format!("/v2/{PA}/cloudbackups/quota"), None)
        .await;
    println!(
        "{b:?} on {} API node(s): accepted {accepted}, refused {refused} (413), backups in catalog {}, usage {}",
        bases.len(),
        list["count"],
        q["quotas"]["resources"][0]["used"]
    );
    assert_eq!((accepted, refused), (5, 15), "{statuses:?}");
    assert_eq!(list["count"], 5);
    assert_eq!(q["quotas"]["resources"][0]["used"], 5);
    if let Some(mut c) = second {
        let _ = c.kill();
        let _ = c.wait();
    }
    let _ = std::fs::remove_file(config);
}
both!(concurrent_creates);

/// Runs futures at once (no extra crate for a join).
async fn futures_join_all<F: std::future::Future<Output = u16> + Send + 'static>(
    futs: impl Iterator<Item = F>,
) -> Vec<u16> {
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

async fn put(who: &Api<'_>, body: Value, query: &str) -> (StatusCode, Value) {
    who.call(
        Method::PUT,
        &format!("/v3/{PA}/os-quota-sets/{PA}{query}"),
        Some(body),
    )
    .await
}
