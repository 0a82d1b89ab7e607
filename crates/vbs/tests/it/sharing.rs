//! Backup sharing (spec 03 §4) on SQLite and PostgreSQL: every endpoint and refusal,
//! the isolation matrix over the owner, a project the backup is shared with, an
//! unrelated project and an admin, a real restore by the shared-with project compared
//! byte for byte, and the owner's delete refused until the sharing is cancelled.
#![allow(
    clippy::unwrap_used,
    clippy::too_many_lines,
    clippy::many_single_char_names,
    clippy::doc_markdown
)]

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::both;
use crate::support::image::{self, MIB, assert_same};
use crate::support::*;

const PD: &str = "dddddddd000000000000000000000004";

struct Who<'a> {
    s: &'a Server,
    project: &'a str,
    token: String,
}

impl<'a> Who<'a> {
    fn new(s: &'a Server, user: &str, project: &'a str) -> Self {
        Self {
            s,
            project,
            token: token(user, project),
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        mv: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.s
            .call(method, path, Some(&self.token), mv, body.as_ref())
            .await
    }

    async fn v3(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.call(
            method,
            &format!("/v3/{}/{path}", self.project),
            Some("3.71"),
            body,
        )
        .await
    }

    async fn sharing(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.call(
            method,
            &format!("/v2/{}/os-vendor-backup-sharing{path}", self.project),
            None,
            body,
        )
        .await
    }

    async fn share(&self, body: Value) -> (StatusCode, Value) {
        self.sharing(Method::POST, "", Some(body)).await
    }

    /// The ids of a sharing list.
    async fn list_ids(&self, q: &str) -> Vec<String> {
        let (st, b) = self
            .sharing(Method::GET, &format!("/detail{q}"), None)
            .await;
        assert_eq!(st, 200, "{q}: {b}");
        b["shared"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect()
    }

    async fn volume(&self, size: u64) -> String {
        let (st, b) = self
            .v3(
                Method::POST,
                "volumes",
                Some(json!({"volume": {"size": size}})),
            )
            .await;
        assert_eq!(st, 202, "{b}");
        b["volume"]["id"].as_str().unwrap().to_owned()
    }

    async fn backup(&self, volume: &str, name: &str) -> String {
        let (st, b) = self
            .v3(
                Method::POST,
                "backups",
                Some(json!({"backup": {"volume_id": volume, "name": name}})),
            )
            .await;
        assert_eq!(st, 202, "{b}");
        let id = b["backup"]["id"].as_str().unwrap().to_owned();
        wait_status(
            self.s,
            &format!("/v3/{}/backups/{id}", self.project),
            &self.token,
            "backup",
            "available",
        )
        .await;
        id
    }
}

#[track_caller]
fn code(got: &(StatusCode, Value), status: u16, code: &str) {
    assert_eq!(got.0.as_u16(), status, "{}", got.1);
    assert_eq!(got.1["error"]["code"], code, "{}", got.1);
}

fn volume_file(s: &Server, id: &str) -> std::path::PathBuf {
    s.dir().join("volumes").join(format!("{id}.img"))
}

async fn sharing(b: Backend) {
    let s = Server::start_with(b, &[], &[]);
    let owner = Who::new(&s, "usera", PA);
    let shared = Who::new(&s, "userb", PB);
    let unrelated = Who::new(&s, "userc", PC);
    let admin = Who::new(&s, "admin", PA);
    let vol = owner.volume(1).await;
    image::fill(&volume_file(&s, &vol), 0, 4, 61);
    image::fill(&volume_file(&s, &vol), 600 * MIB, 1, 62);
    let expected = s.dir().join("shared.ref");
    std::fs::copy(volume_file(&s, &vol), &expected).unwrap();
    let bk = owner.backup(&vol, "shared-one").await;
    let other_vol = owner.volume(2).await;
    let bk2 = owner.backup(&other_vol, "kept-private").await;

    // ---- share: refusals, then two records ------------------------------------------

    code(
        &owner.share(json!({"backup_id": bk})).await,
        400,
        "VolumeBackup.0002",
    );
    code(
        &owner.share(json!({"shared": {"backup_id": bk}})).await,
        400,
        "VolumeBackup.0002",
    );
    code(
        &owner
            .share(json!({"shared": {"backup_id": bk, "to_project_ids": []}}))
            .await,
        400,
        "VolumeBackup.0002",
    );
    code(
        &owner
            .share(json!({"shared": {"backup_id": bk, "to_project_ids": [PA]}}))
            .await,
        400,
        "VolumeBackup.0002",
    );
    code(
        &owner
            .share(json!({"shared": {"backup_id": bk, "to_project_ids": [PB, PB]}}))
            .await,
        400,
        "VolumeBackup.0002",
    );
    code(
        &owner
            .share(json!({"shared": {"backup_id": bk, "to_project_ids": ["not a project"]}}))
            .await,
        400,
        "VolumeBackup.0002",
    );
    code(&owner.share(json!({"shared": {"backup_id": "0000dead-0000-4000-8000-000000000000", "to_project_ids": [PB]}})).await, 404, "VolumeBackup.0111");
    code(
        &shared
            .share(json!({"shared": {"backup_id": bk, "to_project_ids": [PC]}}))
            .await,
        404,
        "VolumeBackup.0111",
    );
    let reader = Who {
        s: &s,
        project: PA,
        token: format!("userr:{PA}:reader"),
    };
    code(
        &reader
            .share(json!({"shared": {"backup_id": bk, "to_project_ids": [PB]}}))
            .await,
        403,
        "VolumeBackup.0042",
    );
    let (st, b) = admin
        .v3(
            Method::POST,
            &format!("backups/{bk2}/action"),
            Some(json!({"os-reset_status": {"status": "error"}})),
        )
        .await;
    assert_eq!(st, 202, "{b}");
    code(
        &owner
            .share(json!({"shared": {"backup_id": bk2, "to_project_ids": [PB]}}))
            .await,
        400,
        "VolumeBackup.0089",
    );
    let (st, b) = admin
        .v3(
            Method::POST,
            &format!("backups/{bk2}/action"),
            Some(json!({"os-reset_status": {"status": "available"}})),
        )
        .await;
    assert_eq!(st, 202, "{b}");
    let (st, made) = owner
        .share(json!({"shared": {"backup_id": bk, "to_project_ids": [PB, PD]}}))
        .await;
    assert_eq!(st, 200, "{made}");
    let records = made["shared"].as_array().unwrap();
    assert_eq!(records.len(), 2);
    for (r, to) in records.iter().zip([PB, PD]) {
        assert_eq!(
            (
                &r["backup_id"],
                &r["from_project_id"],
                &r["to_project_id"],
                &r["deleted"],
                &r["deleted_at"]
            ),
            (
                &json!(bk),
                &json!(PA),
                &json!(to),
                &json!(false),
                &Value::Null
            ),
            "{r}"
        );
        assert!(r["created_at"].as_str().is_some(), "{r}");
    }
    let to_b = records[0]["id"].as_str().unwrap().to_owned();
    let to_d = records[1]["id"].as_str().unwrap().to_owned();
    code(
        &owner
            .share(json!({"shared": {"backup_id": bk, "to_project_ids": [PB]}}))
            .await,
        400,
        "VolumeBackup.0002",
    );
    let (st, _) = owner
        .share(json!({"shared": {"backup_id": bk2, "to_project_ids": [PD]}}))
        .await;
    assert_eq!(st, 200);

    // ---- the isolation matrix ----------------------------------------------------------
    // show: owner, shared-with and admin see it; the unrelated project does not.
    for (who, want) in [
        (&owner, 200),
        (&shared, 200),
        (&unrelated, 404),
        (&admin, 200),
    ] {
        let (st, got) = who.v3(Method::GET, &format!("backups/{bk}"), None).await;
        assert_eq!(st.as_u16(), want, "{} show: {got}", who.token);
    }
    let (_, seen) = shared.v3(Method::GET, &format!("backups/{bk}"), None).await;
    assert!(
        seen["backup"]
            .get("os-backup-project-attr:project_id")
            .is_none(),
        "{seen}"
    );
    // The founding endpoint lists a project's own backups only.
    for (who, n) in [(&owner, 2), (&shared, 0), (&unrelated, 0)] {
        let (st, l) = who.v3(Method::GET, "backups", None).await;
        assert_eq!(st, 200);
        assert_eq!(
            l["backups"].as_array().unwrap().len(),
            n,
            "{} list: {l}",
            who.token
        );
    }
    // Nothing may be built on or changed by anyone but the owner.
    for who in [&shared, &unrelated] {
        assert_eq!(
            who.v3(Method::DELETE, &format!("backups/{bk}"), None)
                .await
                .0,
            404
        );
        assert_eq!(
            who.v3(
                Method::PUT,
                &format!("backups/{bk}"),
                Some(json!({"backup": {"name": "x"}}))
            )
            .await
            .0,
            404
        );
        assert_eq!(
            who.v3(Method::GET, &format!("backups/{bk}/export_record"), None)
                .await
                .0,
            404
        );
        assert_eq!(
            who.v3(
                Method::POST,
                &format!("backups/{bk}/action"),
                Some(json!({"os-reset_status": {"status": "error"}}))
            )
            .await
            .0,
            404
        );
        code(
            &who.call(
                Method::POST,
                &format!("/v2/{}/cloudbackups/{bk}", who.project),
                None,
                None,
            )
            .await,
            404,
            "VolumeBackup.0111",
        );
        // An incremental needs a volume of one's own: the owner's is not visible.
        let (st, _) = who
            .v3(
                Method::POST,
                "backups",
                Some(json!({"backup": {"volume_id": vol, "incremental": true}})),
            )
            .await;
        assert_eq!(st, 404);
    }
    assert_eq!(
        unrelated
            .v3(
                Method::POST,
                &format!("backups/{bk}/restore"),
                Some(json!({"restore": {}}))
            )
            .await
            .0,
        404
    );
    assert_eq!(
        owner
            .v3(
                Method::PUT,
                &format!("backups/{bk}"),
                Some(json!({"backup": {"description": "shared"}}))
            )
            .await
            .0,
        200
    );
    assert_eq!(
        admin
            .v3(Method::GET, &format!("backups/{bk}/export_record"), None)
            .await
            .0,
        200
    );
    // The owner's delete (and an admin's) waits for the sharing to end.
    let refused =
        "Invalid backup: The backup is shared with other projects; cancel its sharing first.";
    assert_fault(
        owner
            .v3(Method::DELETE, &format!("backups/{bk}"), None)
            .await,
        400,
        "badRequest",
        refused,
    );
    assert_fault(
        admin
            .v3(
                Method::POST,
                &format!("backups/{bk}/action"),
                Some(json!({"os-force_delete": {}})),
            )
            .await,
        400,
        "badRequest",
        refused,
    );
    code(
        &owner
            .call(
                Method::POST,
                &format!("/v2/{PA}/cloudbackups/{bk}"),
                None,
                None,
            )
            .await,
        400,
        "VolumeBackup.0089",
    );

    // ---- the shared-with project restores it into its own volume, byte for byte -------
    let (st, r) = shared
        .v3(
            Method::POST,
            &format!("backups/{bk}/restore"),
            Some(json!({"restore": {"name": "from-a"}})),
        )
        .await;
    assert_eq!(st, 202, "{r}");
    let restored = r["restore"]["volume_id"].as_str().unwrap().to_owned();
    wait_status(
        &s,
        &format!("/v3/{PB}/volumes/{restored}"),
        &shared.token,
        "volume",
        "available",
    )
    .await;
    assert_same(&volume_file(&s, &restored), &expected, 1 << 30);
    assert_eq!(
        owner
            .v3(Method::GET, &format!("volumes/{restored}"), None)
            .await
            .0,
        404,
        "the volume is the restoring project's"
    );
    wait_status(
        &s,
        &format!("/v3/{PA}/backups/{bk}"),
        &owner.token,
        "backup",
        "available",
    )
    .await;
    // …and through /cloudbackups into an existing volume of its own.
    let target = shared.volume(1).await;
    let (st, j) = shared
        .call(
            Method::POST,
            &format!("/v2/{PB}/cloudbackups/{bk}/restore"),
            None,
            Some(json!({"restore": {"volume_id": target}})),
        )
        .await;
    assert_eq!(st, 200, "{j}");
    wait_status(
        &s,
        &format!("/v3/{PB}/volumes/{target}"),
        &shared.token,
        "volume",
        "available",
    )
    .await;
    wait_status(
        &s,
        &format!("/v3/{PA}/backups/{bk}"),
        &owner.token,
        "backup",
        "available",
    )
    .await;
    assert_same(&volume_file(&s, &target), &expected, 1 << 30);

    // ---- list, count, show --------------------------------------------------------------

    let all = owner.list_ids("").await;
    assert_eq!(all.len(), 3);
    assert_eq!(
        owner.list_ids("?share_to_me=true").await,
        Vec::<String>::new()
    );
    assert_eq!(
        shared.list_ids("?share_to_me=true").await,
        vec![to_b.clone()]
    );
    assert_eq!(shared.list_ids("").await, Vec::<String>::new());
    assert_eq!(
        unrelated.list_ids("?share_to_me=true").await,
        Vec::<String>::new()
    );
    assert_eq!(owner.list_ids(&format!("?backup_id={bk}")).await.len(), 2);
    assert_eq!(
        owner
            .list_ids(&format!("?volume_id={other_vol}"))
            .await
            .len(),
        1
    );
    assert_eq!(owner.list_ids("?name=SHARED-O").await.len(), 2);
    assert_eq!(owner.list_ids("?name=private").await.len(), 1);
    assert_eq!(owner.list_ids("?status=available").await.len(), 3);
    assert_eq!(owner.list_ids("?status=error").await.len(), 0);
    assert_eq!(
        owner.list_ids(&format!("?to_project_id={PD}")).await.len(),
        2
    );
    assert_eq!(
        owner
            .list_ids(&format!("?from_project_id={PA}"))
            .await
            .len(),
        3
    );
    assert_eq!(owner.list_ids("?avalilability_zone=nova").await.len(), 3);
    assert_eq!(
        owner.list_ids("?availability_zone=elsewhere").await.len(),
        0
    );
    let by_name = owner.list_ids("?sort_key=name&sort_dir=asc").await;
    assert_eq!(
        owner.list_ids("?sort_key=name&sort_dir=desc").await,
        by_name.iter().rev().cloned().collect::<Vec<_>>()
    );
    assert_eq!(
        owner
            .list_ids("?sort_key=name&sort_dir=asc&limit=1&offset=2")
            .await,
        vec![by_name[2].clone()]
    );
    code(
        &owner
            .sharing(Method::GET, "/detail?sort_key=container_format", None)
            .await,
        400,
        "VolumeBackup.0002",
    );
    code(
        &owner.sharing(Method::GET, "/detail?limit=many", None).await,
        400,
        "VolumeBackup.0002",
    );
    let (_, detail) = shared
        .sharing(Method::GET, "/detail?share_to_me=true", None)
        .await;
    let embedded = &detail["shared"][0]["backup"];
    assert_eq!(
        (
            &embedded["id"],
            &embedded["name"],
            &embedded["status"],
            &embedded["size"],
            &embedded["is_incremental"],
            &embedded["has_dependent_backups"]
        ),
        (
            &json!(bk),
            &json!("shared-one"),
            &json!("available"),
            &json!(1),
            &json!(false),
            &json!(false)
        ),
        "{detail}"
    );
    assert!(embedded["object_count"].is_i64(), "{detail}");
    assert_eq!(
        owner.sharing(Method::GET, "/count", None).await.1,
        json!({"count": 3})
    );
    assert_eq!(
        owner
            .sharing(Method::GET, &format!("/count?backup_id={bk}&limit=1"), None)
            .await
            .1,
        json!({"count": 2})
    );
    assert_eq!(
        shared
            .sharing(Method::GET, "/count?share_to_me=true", None)
            .await
            .1,
        json!({"count": 1})
    );
    let (st, one) = shared.sharing(Method::GET, &format!("/{to_b}"), None).await;
    assert_eq!(st, 200);
    assert_eq!(
        (&one["shared"]["id"], &one["shared"]["backup"]["id"]),
        (&json!(to_b), &json!(bk))
    );
    assert_eq!(
        owner
            .sharing(Method::GET, &format!("/{to_b}"), None)
            .await
            .0,
        200
    );
    code(
        &unrelated
            .sharing(Method::GET, &format!("/{to_b}"), None)
            .await,
        404,
        "VolumeBackup.0111",
    );

    // ---- cancel: only the owner, by record or by backup; then the delete goes ------------
    code(
        &shared
            .sharing(Method::DELETE, &format!("/{to_b}"), None)
            .await,
        403,
        "VolumeBackup.0042",
    );
    code(
        &unrelated
            .sharing(Method::DELETE, &format!("/{to_b}"), None)
            .await,
        404,
        "VolumeBackup.0111",
    );
    code(
        &owner
            .sharing(
                Method::DELETE,
                "/0000dead-0000-4000-8000-000000000000",
                None,
            )
            .await,
        404,
        "VolumeBackup.0111",
    );
    let (st, body) = owner
        .sharing(Method::DELETE, &format!("/{to_d}"), None)
        .await;
    assert_eq!((st.as_u16(), body), (200, Value::Null));
    assert_eq!(
        shared
            .v3(Method::GET, &format!("backups/{bk}"), None)
            .await
            .0,
        200,
        "still shared with B"
    );
    assert_fault(
        owner
            .v3(Method::DELETE, &format!("backups/{bk}"), None)
            .await,
        400,
        "badRequest",
        refused,
    );
    assert_eq!(
        owner
            .sharing(Method::DELETE, &format!("/{bk}?is_backup_id=true"), None)
            .await
            .0,
        200
    );
    code(
        &owner
            .sharing(Method::DELETE, &format!("/{bk}?is_backup_id=true"), None)
            .await,
        404,
        "VolumeBackup.0111",
    );
    assert_eq!(
        shared
            .v3(Method::GET, &format!("backups/{bk}"), None)
            .await
            .0,
        404,
        "no longer shared"
    );
    assert_eq!(
        shared
            .sharing(Method::GET, "/count?share_to_me=true", None)
            .await
            .1,
        json!({"count": 0})
    );
    assert_eq!(
        owner
            .v3(Method::DELETE, &format!("backups/{bk}"), None)
            .await
            .0,
        202
    );
}
both!(sharing);

/// Retention never deletes a backup shared with another project (issue 13): a policy
/// that keeps 2 keeps the shared oldest as a third.
async fn shared_backups_are_not_pruned(b: Backend) {
    let s = Server::start_with(b, &[], &[]);
    let owner = Who::new(&s, "usera", PA);
    let vol = owner.volume(1).await;
    image::fill(&volume_file(&s, &vol), 0, 2, 71);
    let (st, p) = owner
        .call(
            Method::POST,
            &format!("/v2/{PA}/backuppolicy"),
            None,
            Some(json!({"backup_policy_name": "keep-two",
                        "scheduled_policy": {"start_time": "03:00", "frequency": 1,
                                             "rentention_num": 2, "status": "ON"}})),
        )
        .await;
    assert_eq!(st, 200, "{p}");
    let pid = p["backup_policy_id"].as_str().unwrap().to_owned();
    let (st, _) = owner
        .call(
            Method::POST,
            &format!("/v2/{PA}/backuppolicyresources"),
            None,
            Some(json!({"backup_policy_id": pid,
                        "resources": [{"resource_id": vol, "resource_type": "volume"}]})),
        )
        .await;
    assert_eq!(st, 200);
    let run = |n: usize| {
        let owner = &owner;
        let pid = pid.clone();
        async move {
            let deadline = std::time::Instant::now() + std::time::Duration::from_mins(1);
            loop {
                let (st, _) = owner
                    .call(
                        Method::POST,
                        &format!("/v2/{PA}/backuppolicy/{pid}/action"),
                        None,
                        None,
                    )
                    .await;
                if st == 204 {
                    break;
                }
                assert!(std::time::Instant::now() < deadline);
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            loop {
                let (_, t) = owner
                    .call(
                        Method::GET,
                        &format!("/v2/{PA}/backuppolicy/{pid}/backuptasks?status=EXECUTE_SUCCESS"),
                        None,
                        None,
                    )
                    .await;
                if t["count"] == n {
                    return t["tasks"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|t| t["vbs_job_id"].as_str().unwrap().to_owned())
                        .collect::<Vec<_>>();
                }
                assert!(std::time::Instant::now() < deadline, "{t}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    };
    run(1).await;
    let (_, list) = owner.v3(Method::GET, "backups", None).await;
    let first = list["backups"][0]["id"].as_str().unwrap().to_owned();
    let (st, _) = owner
        .share(json!({"shared": {"backup_id": first, "to_project_ids": [PB]}}))
        .await;
    assert_eq!(st, 200);
    run(2).await;
    run(3).await;
    // Retention ran after each backup; nothing runs any more: the shared one is left.
    let deadline = std::time::Instant::now() + std::time::Duration::from_mins(1);
    loop {
        let (_, list) = owner.v3(Method::GET, "backups/detail", None).await;
        let all = list["backups"].as_array().unwrap();
        if all.iter().all(|b| b["status"] == "available") && all.len() == 3 {
            assert!(all.iter().any(|b| b["id"] == first.as_str()), "{list}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{list}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Once the sharing ends, the next retention lets it go.
    assert_eq!(
        owner
            .sharing(Method::DELETE, &format!("/{first}?is_backup_id=true"), None)
            .await
            .0,
        200
    );
    run(4).await;
    loop {
        let (st, _) = owner
            .v3(Method::GET, &format!("backups/{first}"), None)
            .await;
        if st == 404 {
            break;
        }
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
both!(shared_backups_are_not_pruned);
