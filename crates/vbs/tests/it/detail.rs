//! Detail list and show (spec 01 §1.2, §3, §4), and the deprecated v2 read routes.

use serde_json::{Value, json};

use crate::both;
use crate::support::*;

fn keys(v: &Value) -> Vec<String> {
    v.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

async fn detail_fields_by_version(b: Backend) {
    let s = Server::start(b);
    let tok = token("usera", PA);
    let id0 = backup_id(1, 0);
    let (st, _, body) = s
        .get(&format!("/v3/{PA}/backups/{id0}"), Some(&tok), None)
        .await;
    assert_eq!(st, 200);
    let bk = &body["backup"];
    let mut base_keys = vec![
        "availability_zone",
        "container",
        "created_at",
        "data_timestamp",
        "description",
        "fail_reason",
        "has_dependent_backups",
        "id",
        "is_incremental",
        "links",
        "name",
        "object_count",
        "size",
        "snapshot_id",
        "status",
        "updated_at",
        "volume_id",
    ];
    base_keys.sort_unstable();
    let mut got = keys(bk);
    got.sort();
    assert_eq!(got, base_keys, "3.0 detail keys");
    assert_eq!(bk["status"], "available");
    assert_eq!(bk["created_at"], "2025-03-01T00:00:00.000000");
    assert_eq!(bk["updated_at"], "2025-03-01T00:05:00.000035");
    assert_eq!(bk["data_timestamp"], bk["created_at"]);
    assert_eq!(bk["has_dependent_backups"], true);
    assert_eq!(bk["is_incremental"], false);
    assert_eq!(bk["description"], "description 0");
    assert_eq!(bk["fail_reason"], Value::Null);
    assert_eq!(
        (bk["size"].as_i64(), bk["object_count"].as_i64()),
        (Some(1), Some(0))
    );

    let (_, _, body) = s
        .get(
            &format!("/v3/{PA}/backups/{}", backup_id(1, 3)),
            Some(&tok),
            None,
        )
        .await;
    assert_eq!(body["backup"]["is_incremental"], true);
    let (_, _, body) = s
        .get(
            &format!("/v3/{PA}/backups/{}", backup_id(1, 7)),
            Some(&tok),
            None,
        )
        .await;
    assert_eq!(
        body["backup"]["snapshot_id"],
        "77777777-0000-4000-8000-000000000007"
    );

    // 3.18: project attribute (owner or admin); 3.43 metadata; 3.56 user_id (admin only);
    // 3.64 encryption key (only a real one).
    let (_, _, body) = s
        .get(&format!("/v3/{PA}/backups/{id0}"), Some(&tok), Some("3.18"))
        .await;
    assert_eq!(body["backup"]["os-backup-project-attr:project_id"], PA);
    assert!(body["backup"].get("metadata").is_none());
    let (_, _, body) = s
        .get(&format!("/v3/{PA}/backups/{id0}"), Some(&tok), Some("3.43"))
        .await;
    assert_eq!(body["backup"]["metadata"], json!({}));
    let (_, _, body) = s
        .get(&format!("/v3/{PA}/backups/{id0}"), Some(&tok), Some("3.71"))
        .await;
    assert!(
        body["backup"].get("user_id").is_none(),
        "user_id is admin-only"
    );
    let admin = token("admin", PA);
    let (_, _, body) = s
        .get(
            &format!("/v3/{PA}/backups/{id0}"),
            Some(&admin),
            Some("3.56"),
        )
        .await;
    assert_eq!(body["backup"]["user_id"], "user1");
    let (_, _, body) = s
        .get(
            &format!("/v3/{PA}/backups/{}", backup_id(1, 4)),
            Some(&tok),
            Some("3.64"),
        )
        .await;
    assert_eq!(body["backup"]["encryption_key_id"], KEY);
    let (_, _, body) = s
        .get(
            &format!("/v3/{PA}/backups/{}", backup_id(1, 4)),
            Some(&tok),
            Some("3.63"),
        )
        .await;
    assert!(body["backup"].get("encryption_key_id").is_none());
    let (_, _, body) = s
        .get(
            &format!("/v3/{PA}/backups/{}", backup_id(1, 6)),
            Some(&tok),
            Some("3.64"),
        )
        .await;
    assert!(
        body["backup"].get("encryption_key_id").is_none(),
        "the all-zero key is never shown"
    );

    // Detail list: same rules, detail items, next link path ends in /detail.
    let (_, _, body) = s
        .get(
            &format!("/v3/{PA}/backups/detail?limit=2&status=available"),
            Some(&tok),
            Some("3.45"),
        )
        .await;
    assert_eq!(body["backups"].as_array().unwrap().len(), 2);
    assert!(
        body["backups"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["status"] == "available")
    );
    let last = body["backups"][1]["id"].as_str().unwrap();
    assert_eq!(
        body["backups_links"][0]["href"],
        format!(
            "{}/v3/{PA}/backups/detail?limit=2&status=available&marker={last}",
            s.base
        )
    );
    let (_, _, body) = s
        .get(
            &format!("/v3/{PA}/backups/detail?with_count=1&limit=0&name~=beta"),
            Some(&tok),
            Some("3.45"),
        )
        .await;
    assert_eq!(body["count"], 15);
}
both!(detail_fields_by_version);

async fn show_scoping(b: Backend) {
    let s = Server::start(b);
    let tok = token("usera", PA);
    let foreign = backup_id(2, 1);
    for id in [foreign.as_str(), "not-a-uuid", &backup_id(1, 99)] {
        let (st, _, body) = s
            .get(&format!("/v3/{PA}/backups/{id}"), Some(&tok), None)
            .await;
        assert_eq!(st, 404);
        assert_eq!(
            body,
            json!({"itemNotFound": {"code": 404, "message": format!("Backup {id} could not be found.")}})
        );
    }
    // An admin sees any project's backup through its own project URL.
    let (st, _, body) = s
        .get(
            &format!("/v3/{PA}/backups/{foreign}"),
            Some(&token("admin", PA)),
            None,
        )
        .await;
    assert_eq!(
        (st.as_u16(), body["backup"]["id"].as_str()),
        (200, Some(foreign.as_str()))
    );
    // Project-less show.
    let (st, _, body) = s
        .get(
            &format!("/v3/backups/{}", backup_id(1, 1)),
            Some(&tok),
            None,
        )
        .await;
    assert_eq!(st, 200);
    assert_eq!(
        body["backup"]["links"][1]["href"],
        format!("{}/backups/{}", s.base, backup_id(1, 1))
    );
}
both!(show_scoping);

async fn legacy_v2(b: Backend) {
    let s = Server::start(b);
    let tok = token("usera", PA);
    // v2 ignores microversion headers and sends none back.
    let (st, headers, body) = s
        .get(
            &format!("/v2/{PA}/backups?limit=1"),
            Some(&tok),
            Some("3.99"),
        )
        .await;
    assert_eq!(st, 200);
    assert!(headers.get("openstack-api-version").is_none());
    let id = body["backups"][0]["id"].as_str().unwrap();
    assert_eq!(
        body["backups"][0]["links"][0]["href"],
        format!("{}/v2/{PA}/backups/{id}", s.base)
    );
    assert_eq!(
        body["backups_links"][0]["href"],
        format!("{}/v2/{PA}/backups?limit=1&marker={id}", s.base)
    );
    let (_, _, body) = s
        .get(
            &format!("/v2/{PA}/backups/{}", backup_id(1, 0)),
            Some(&tok),
            None,
        )
        .await;
    let bk = &body["backup"];
    assert_eq!(bk["os-bak-tenant-attr:tenant_id"], PA);
    assert_eq!(bk["service_metadata"], "{\"Type\": 0}");
    assert!(bk.get("metadata").is_none() && bk.get("os-backup-project-attr:project_id").is_none());
    // v2 detail: sort_key=name is accepted as display_name; image-only keys are not.
    let (st, _, body) = s
        .get(
            &format!("/v2/{PA}/backups/detail?sort_key=name&sort_dir=asc&limit=1"),
            Some(&tok),
            None,
        )
        .await;
    assert_eq!(st, 200);
    assert_eq!(
        body["backups"][0]["name"],
        Value::Null,
        "NULL names sort first"
    );
    let (st, _, body) = s
        .get(
            &format!("/v2/{PA}/backups/detail?sort_key=disk_format"),
            Some(&tok),
            None,
        )
        .await;
    assert_eq!(
        (st.as_u16(), body["badRequest"]["message"].as_str()),
        (400, Some("Invalid input received: Invalid sort key"))
    );
}
both!(legacy_v2);
