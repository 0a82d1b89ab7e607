//! The status rules and messages of backup create (with snapshots), update, delete,
//! restore and the admin actions (spec 01 §5–§9), on small volumes.
#![allow(clippy::unwrap_used, clippy::many_single_char_names)]

use serde_json::{Value, json};

use super::{Api, GIB, change, seed, volume_file};
use crate::both;
use crate::support::image::{self, MIB, assert_same};
use crate::support::*;

// ---- §5: create rules -------------------------------------------------------------

async fn create_rules(b: Backend) {
    let s = Server::start_with(b, &[], &[]);
    let a = Api::new(&s, "usera", PA);
    let admin = Api::new(&s, "admin", PA);
    let v = a.volume(1, "v").await;
    image::fill(&volume_file(&s, &v), 0, 2, 5);
    let bad = |body: Value, message: &'static str| {
        let a = &a;
        async move {
            assert_fault(a.post("backups", body).await, 400, "badRequest", message);
        }
    };
    bad(json!({}), "'backup' is a required property").await;
    bad(
        json!({"backup": {"volume_id": v}, "foo": 1}),
        "Additional properties are not allowed ('foo' was unexpected)",
    )
    .await;
    bad(
        json!({"backup": {}}),
        "Invalid input for field/attribute backup. Value: {}. 'volume_id' is a required property",
    )
    .await;
    bad(
        json!({"backup": {"volume_id": "abc"}}),
        "Invalid input for field/attribute volume_id. Value: abc. 'abc' is not a 'uuid'",
    )
    .await;
    bad(
        json!({"backup": {"volume_id": 7}}),
        "Invalid input for field/attribute volume_id. Value: 7. 7 is not of type 'string'",
    )
    .await;
    assert_fault(
        a.post(
            "backups",
            json!({"backup": {"volume_id": v, "name": "n".repeat(256)}}),
        )
        .await,
        400,
        "badRequest",
        &format!(
            "Invalid input for field/attribute name. Value: {n}. '{n}' is too long",
            n = "n".repeat(256)
        ),
    );
    let (st, body) = a
        .post(
            "backups",
            json!({"backup": {"volume_id": v, "description": "a\nb"}}),
        )
        .await;
    assert_eq!(st, 400, "{body}");
    let m = body["badRequest"]["message"].as_str().unwrap();
    assert!(
        m.starts_with(
            "Invalid input for field/attribute description. Value: a\nb. 'a\\nb' does not match"
        ),
        "{m}"
    );
    bad(
        json!({"backup": {"volume_id": v, "incremental": "maybe"}}),
        "Invalid input for field/attribute incremental. Value: maybe. 'maybe' is not one of \
         [True, 'True', 'TRUE', 'true', '1', 'ON', 'On', 'on', 'YES', 'Yes', 'yes', 'y', 't', \
         False, 'False', 'FALSE', 'false', '0', 'OFF', 'Off', 'off', 'NO', 'No', 'no', 'n', 'f']",
    )
    .await;
    bad(
        json!({"backup": {"volume_id": v, "force": 1}}),
        "Invalid input for field/attribute force. Value: 1. 1 is not of type 'boolean', 'string'",
    )
    .await;
    bad(
        json!({"backup": {"volume_id": v, "snapshot_id": "nope"}}),
        "Invalid input for field/attribute snapshot_id. Value: nope. 'nope' is not valid under any of the given schemas",
    )
    .await;
    // metadata from 3.43, availability_zone from 3.51.
    let extra = |key: &str| {
        format!(
            "Invalid input for field/attribute backup. Value: {{'{key}': None, 'volume_id': '{v}'}}. \
             Additional properties are not allowed ('{key}' was unexpected)"
        )
    };
    for (mv, key) in [
        ("3.0", "metadata"),
        ("3.42", "metadata"),
        ("3.50", "availability_zone"),
    ] {
        assert_fault(
            a.post_at(
                mv,
                "backups",
                json!({"backup": {"volume_id": v, key: null}}),
            )
            .await,
            400,
            "badRequest",
            &extra(key),
        );
    }
    assert_fault(
        a.post_at(
            "3.43",
            "backups",
            json!({"backup": {"volume_id": v, "metadata": {"bad!": "x"}}}),
        )
        .await,
        400,
        "badRequest",
        "Invalid input for field/attribute metadata. Value: {'bad!': 'x'}. Additional properties are not allowed ('bad!' was unexpected)",
    );

    // Unknown (or another project's) volume; a reader may not create.
    let missing = "7a7a7a7a-0000-4000-8000-000000000000";
    assert_fault(
        a.post("backups", json!({"backup": {"volume_id": missing}}))
            .await,
        404,
        "itemNotFound",
        &format!("Volume {missing} could not be found."),
    );
    let theirs = Api::new(&s, "userb", PB).volume(1, "b").await;
    assert_fault(
        a.post("backups", json!({"backup": {"volume_id": theirs}}))
            .await,
        404,
        "itemNotFound",
        &format!("Volume {theirs} could not be found."),
    );
    let reader = Api::with_roles(&s, "r", PA, "reader");
    assert_fault(
        reader
            .post("backups", json!({"backup": {"volume_id": v}}))
            .await,
        403,
        "forbidden",
        "Policy doesn't allow backup:create to be performed.",
    );

    // No backup yet: no incremental.
    bad(
        json!({"backup": {"volume_id": v, "incremental": true}}),
        "Invalid backup: No backups available to do an incremental backup.",
    )
    .await;
    // Volume status.
    let (st, _) = admin
        .post(
            &format!("volumes/{v}/action"),
            json!({"os-reset_status": {"status": "error"}}),
        )
        .await;
    assert_eq!(st, 202);
    bad(
        json!({"backup": {"volume_id": v}}),
        "Invalid volume: Volume to be backed up must be available or in-use, but the current status is \"error\".",
    )
    .await;
    admin
        .post(
            &format!("volumes/{v}/action"),
            json!({"os-reset_status": {"status": "available"}}),
        )
        .await;

    // metadata and availability zone at their versions; force on an available volume
    // is harmless.
    let (st, body) = a
        .post_at(
            "3.51",
            "backups",
            json!({"backup": {"volume_id": v, "force": "yes", "metadata": {"k": "v"},
                   "availability_zone": "nova", "name": null}}),
        )
        .await;
    assert_eq!(st, 202, "{body}");
    assert_eq!(body["backup"]["name"], Value::Null);
    let first = body["backup"]["id"].as_str().unwrap().to_owned();
    let bk = a.wait_backup(&first, "available").await;
    assert_eq!(
        (&bk["metadata"], &bk["availability_zone"]),
        (&json!({"k": "v"}), &json!("nova"))
    );

    // In use: refused without force; with force the bytes are those of the volume and
    // it is in use again afterwards.
    let (st, _) = a
        .post(
            &format!("volumes/{v}/action"),
            json!({"os-attach": {"instance_uuid": "5b5b5b5b-0000-4000-8000-000000000001",
                                 "mountpoint": "/dev/vdb"}}),
        )
        .await;
    assert_eq!(st, 202);
    bad(
        json!({"backup": {"volume_id": v}}),
        "Invalid volume: Backing up an in-use volume must use the force flag.",
    )
    .await;
    bad(
        json!({"backup": {"volume_id": v, "force": false}}),
        "Invalid volume: Backing up an in-use volume must use the force flag.",
    )
    .await;
    let (forced, _) = a
        .backup(json!({"volume_id": v, "force": true, "incremental": true}))
        .await;
    assert_eq!(a.show(&forced).await["is_incremental"], true);
    a.wait_volume(&v, "in-use").await;
    let r = a.restore_new(&forced).await;
    assert_same(&volume_file(&s, &r), &volume_file(&s, &v), GIB);

    // A volume being backed up is busy.
    let big = a.volume(1, "big").await;
    image::random(&volume_file(&s, &big), 0, 48 * MIB, 6);
    let running = a.start_backup(json!({"volume_id": big})).await;
    bad(
        json!({"backup": {"volume_id": big}}),
        "Invalid volume: Volume to be backed up must be available or in-use, but the current status is \"backing-up\".",
    )
    .await;
    a.wait_backup(&running, "available").await;
    a.wait_volume(&big, "available").await;
}
both!(create_rules);

async fn snapshot_backups(b: Backend) {
    let s = Server::start_with(b, &[], &[]);
    let a = Api::new(&s, "usera", PA);
    let admin = Api::new(&s, "admin", PA);
    let v = a.volume(1, "v").await;
    let file = volume_file(&s, &v);
    seed(&file, 50);
    image::random(&file, 100 * MIB, 48 * MIB, 51);
    let (st, body) = a
        .post("snapshots", json!({"snapshot": {"volume_id": v}}))
        .await;
    assert_eq!(st, 202, "{body}");
    let snap = body["snapshot"]["id"].as_str().unwrap().to_owned();
    let path = format!("/v3/{PA}/snapshots/{snap}");
    let shown = wait_status(&s, &path, &token("usera", PA), "snapshot", "available").await;
    let snap_file = s.dir().join("snapshots").join(format!("{snap}.img"));
    // The volume moves on; the snapshot keeps the old bytes.
    change(&file, 52);

    let missing = "7a7a7a7a-0000-4000-8000-000000000000";
    assert_fault(
        a.post(
            "backups",
            json!({"backup": {"volume_id": v, "snapshot_id": missing}}),
        )
        .await,
        404,
        "itemNotFound",
        &format!("Snapshot {missing} could not be found."),
    );
    let w = a.volume(1, "w").await;
    assert_fault(
        a.post(
            "backups",
            json!({"backup": {"volume_id": w, "snapshot_id": snap}}),
        )
        .await,
        400,
        "badRequest",
        &format!("Invalid volume: Volume {w} does not match with snapshot.volume_id {v}."),
    );

    // The volume's own status is not checked when backing up a snapshot.
    admin
        .post(
            &format!("volumes/{v}/action"),
            json!({"os-reset_status": {"status": "error"}}),
        )
        .await;
    let id = a
        .start_backup(json!({"volume_id": v, "snapshot_id": snap}))
        .await;
    // While it runs the snapshot is busy.
    assert_fault(
        a.post(
            "backups",
            json!({"backup": {"volume_id": v, "snapshot_id": snap}}),
        )
        .await,
        400,
        "badRequest",
        "Invalid snapshot: Snapshot to be backed up must be available, but the current status is \"backing-up\".",
    );
    let bk = a.wait_backup(&id, "available").await;
    assert_eq!(
        (&bk["snapshot_id"], &bk["data_timestamp"], &bk["volume_id"]),
        (&json!(snap), &shown["created_at"], &json!(v))
    );
    wait_status(&s, &path, &token("usera", PA), "snapshot", "available").await;
    assert_eq!(a.wait_volume(&v, "error").await["status"], "error");
    let r = a.restore_new(&id).await;
    assert_same(&volume_file(&s, &r), &snap_file, GIB);
}
both!(snapshot_backups);

// ---- §6: update -------------------------------------------------------------------

async fn update_rules(b: Backend) {
    let s = Server::start_with(b, &[], &[]);
    let a = Api::new(&s, "usera", PA);
    let admin = Api::new(&s, "admin", PA);
    let v = a.volume(1, "v").await;
    let (st, body) = a
        .post_at(
            "3.43",
            "backups",
            json!({"backup": {"volume_id": v, "name": "n1", "metadata": {"a": "1", "b": "2"}}}),
        )
        .await;
    assert_eq!(st, 202, "{body}");
    let id = body["backup"]["id"].as_str().unwrap().to_owned();
    a.wait_backup(&id, "available").await;
    let path = format!("backups/{id}");

    assert_fault(
        a.put_at("3.8", &path, json!({"backup": {"name": "x"}}))
            .await,
        404,
        "itemNotFound",
        "The resource could not be found.",
    );
    let (st, body) = a
        .put_at(
            "3.9",
            &path,
            json!({"backup": {"name": "n2", "description": "d2"}}),
        )
        .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["backup"]["id"], id);
    assert_eq!(body["backup"]["name"], "n2");
    assert_eq!(body["backup"]["links"].as_array().unwrap().len(), 2);
    let bk = a.show(&id).await;
    assert_eq!(
        (&bk["name"], &bk["description"], &bk["metadata"]),
        (&json!("n2"), &json!("d2"), &json!({"a": "1", "b": "2"}))
    );
    assert_fault(
        a.put_at("3.42", &path, json!({"backup": {"metadata": {"c": "3"}}}))
            .await,
        400,
        "badRequest",
        "Invalid input for field/attribute backup. Value: {'metadata': {'c': '3'}}. Additional properties are not allowed ('metadata' was unexpected)",
    );
    assert_fault(
        a.put_at("3.43", &path, json!({"backup": {"metadata": null}}))
            .await,
        400,
        "badRequest",
        "Invalid input for field/attribute metadata. Value: None. None is not of type 'object'",
    );
    // Metadata is replaced as a whole.
    let (st, _) = a
        .put_at("3.43", &path, json!({"backup": {"metadata": {"c": "3"}}}))
        .await;
    assert_eq!(st, 200);
    assert_eq!(a.show(&id).await["metadata"], json!({"c": "3"}));
    // Empty and null bodies change nothing.
    for body in [json!({"backup": {}}), json!({"backup": null})] {
        let (st, out) = a.put_at("3.9", &path, body).await;
        assert_eq!(st, 200, "{out}");
        assert_eq!(out["backup"]["name"], "n2");
    }
    let bk = a.show(&id).await;
    assert_eq!(
        (&bk["name"], &bk["description"], &bk["metadata"]),
        (&json!("n2"), &json!("d2"), &json!({"c": "3"}))
    );
    assert_fault(
        a.put_at("3.9", &path, json!({})).await,
        400,
        "badRequest",
        "'backup' is a required property",
    );
    assert_fault(
        a.put_at("3.9", &path, json!({"backup": {"size": 2}})).await,
        400,
        "badRequest",
        "Invalid input for field/attribute backup. Value: {'size': 2}. Additional properties are not allowed ('size' was unexpected)",
    );
    let missing = "7a7a7a7a-0000-4000-8000-000000000000";
    assert_fault(
        a.put_at("3.9", &format!("backups/{missing}"), json!({"backup": {}}))
            .await,
        404,
        "itemNotFound",
        &format!("Backup {missing} could not be found."),
    );
    assert_fault(
        Api::with_roles(&s, "r", PA, "reader")
            .put_at("3.9", &path, json!({"backup": {"name": "r"}}))
            .await,
        403,
        "forbidden",
        "Policy doesn't allow backup:update to be performed.",
    );
    // Any status may be renamed.
    admin
        .action(&id, json!({"os-reset_status": {"status": "error"}}))
        .await;
    let (st, body) = a
        .put_at("3.9", &path, json!({"backup": {"name": "in error"}}))
        .await;
    assert_eq!(
        (st.as_u16(), &body["backup"]["name"]),
        (200, &json!("in error"))
    );
}
both!(update_rules);

// ---- §7, §8, §10: status rules on records in every status --------------------------

const SEEDED_ERR_DEL: &str = "5eed0000-0000-4000-8000-000000000001";
const SEEDED_CREATING: &str = "5eed0000-0000-4000-8000-000000000002";
const SEEDED_RESTORING: &str = "5eed0000-0000-4000-8000-000000000003";
const SEEDED_NO_SIZE: &str = "5eed0000-0000-4000-8000-000000000004";

fn seeded_row(id: &str, status: &str, size: u64) -> Value {
    json!({
        "id": id, "project_id": PA, "user_id": "usera",
        "volume_id": "11111111-1111-4111-8111-111111111111", "status": status,
        "display_name": status, "size": size, "object_count": 0,
        "availability_zone": "nova", "container": "c", "service": "vbs.backup.repository",
        "created_at": "2025-03-01 00:00:00.000000", "updated_at": "2025-03-01 00:00:00.000000",
        "deleted": 0,
    })
}

async fn status_rules(b: Backend) {
    let rows = [
        seeded_row(SEEDED_ERR_DEL, "error_deleting", 1),
        seeded_row(SEEDED_CREATING, "creating", 1),
        seeded_row(SEEDED_RESTORING, "restoring", 1),
        seeded_row(SEEDED_NO_SIZE, "available", 0),
    ];
    let s = Server::start_with(b, &rows, &[]);
    let a = Api::new(&s, "usera", PA);
    let admin = Api::new(&s, "admin", PA);

    // Start-up: nothing stays creating or restoring.
    let bk = a.show(SEEDED_CREATING).await;
    assert_eq!(
        (&bk["status"], &bk["fail_reason"]),
        (
            &json!("error"),
            &json!("Interrupted by a restart of the backup service.")
        )
    );
    assert_eq!(a.show(SEEDED_RESTORING).await["status"], "available");

    // §7 delete: only available or error.
    assert_fault(
        a.delete(&format!("backups/{SEEDED_ERR_DEL}")).await,
        400,
        "badRequest",
        "Invalid backup: Backup status must be available or error",
    );
    let missing = "7a7a7a7a-0000-4000-8000-000000000000";
    assert_fault(
        a.delete(&format!("backups/{missing}")).await,
        404,
        "itemNotFound",
        &format!("Backup {missing} could not be found."),
    );
    assert_fault(
        Api::new(&s, "userb", PB)
            .delete(&format!("backups/{SEEDED_CREATING}"))
            .await,
        404,
        "itemNotFound",
        &format!("Backup {SEEDED_CREATING} could not be found."),
    );
    assert_fault(
        Api::with_roles(&s, "r", PA, "reader")
            .delete(&format!("backups/{SEEDED_CREATING}"))
            .await,
        403,
        "forbidden",
        "Policy doesn't allow backup:delete to be performed.",
    );
    // §8 restore and §10.1 export need `available`, and a size.
    assert_fault(
        a.post(
            &format!("backups/{SEEDED_ERR_DEL}/restore"),
            json!({"restore": {}}),
        )
        .await,
        400,
        "badRequest",
        "Invalid backup: Backup status must be available",
    );
    assert_fault(
        a.post(
            &format!("backups/{SEEDED_NO_SIZE}/restore"),
            json!({"restore": {}}),
        )
        .await,
        400,
        "badRequest",
        "Invalid backup: Backup to be restored has invalid size",
    );
    assert_fault(
        admin
            .get(&format!("backups/{SEEDED_ERR_DEL}/export_record"))
            .await,
        400,
        "badRequest",
        "Invalid backup: Backup status must be available and not error_deleting.",
    );
    // A failed backup is deleted; a stuck one is force-deleted.
    let (st, body) = a.delete(&format!("backups/{SEEDED_CREATING}")).await;
    assert_eq!((st.as_u16(), body), (202, Value::Null));
    a.wait_gone(SEEDED_CREATING).await;
    let (st, body) = admin
        .action(SEEDED_ERR_DEL, json!({"os-force_delete": null}))
        .await;
    assert_eq!((st.as_u16(), body), (202, Value::Null));
    a.wait_gone(SEEDED_ERR_DEL).await;
}
both!(status_rules);

async fn restore_rules(b: Backend) {
    let s = Server::start_with(b, &[], &[]);
    let a = Api::new(&s, "usera", PA);
    let admin = Api::new(&s, "admin", PA);
    let v = a.volume(2, "two").await;
    image::fill(&volume_file(&s, &v), 0, 3, 7);
    let (id, bk) = a.backup(json!({"volume_id": v})).await;
    assert_eq!(bk["size"], 2);
    let path = format!("backups/{id}/restore");
    let bad = |body: Value, message: String| {
        let (a, path) = (&a, &path);
        async move {
            assert_fault(a.post(path, body).await, 400, "badRequest", &message);
        }
    };
    bad(json!({}), "'restore' is a required property".into()).await;
    bad(
        json!({"restore": {"foo": 1}}),
        "Invalid input for field/attribute restore. Value: {'foo': 1}. Additional properties are not allowed ('foo' was unexpected)".into(),
    )
    .await;
    bad(
        json!({"restore": {"volume_id": "x"}}),
        "Invalid input for field/attribute volume_id. Value: x. 'x' is not valid under any of the given schemas".into(),
    )
    .await;
    bad(
        json!({"restore": {"name": 5}}),
        "Invalid input for field/attribute name. Value: 5. 5 is not of type 'string', 'null'"
            .into(),
    )
    .await;
    let missing = "7a7a7a7a-0000-4000-8000-000000000000";
    assert_fault(
        a.post(&path, json!({"restore": {"volume_id": missing}}))
            .await,
        404,
        "itemNotFound",
        &format!("Volume {missing} could not be found."),
    );
    assert_fault(
        a.post(
            &format!("backups/{missing}/restore"),
            json!({"restore": {}}),
        )
        .await,
        404,
        "itemNotFound",
        &format!("Backup {missing} could not be found."),
    );
    assert_fault(
        Api::with_roles(&s, "r", PA, "reader")
            .post(&path, json!({"restore": {}}))
            .await,
        403,
        "forbidden",
        "Policy doesn't allow backup:restore to be performed.",
    );
    // Too small a target.
    let small = a.volume(1, "small").await;
    bad(
        json!({"restore": {"volume_id": small}}),
        "Invalid volume: volume size 1 is too small to restore backup of size 2.".into(),
    )
    .await;
    // A target in use.
    let used = a.volume(2, "used").await;
    a.post(
        &format!("volumes/{used}/action"),
        json!({"os-attach": {"host_name": "h", "mountpoint": "/mnt"}}),
    )
    .await;
    bad(
        json!({"restore": {"volume_id": used}}),
        "Invalid volume: Volume to be restored to must be available".into(),
    )
    .await;
    // A backup that is not available.
    admin
        .action(&id, json!({"os-reset_status": {"status": "error"}}))
        .await;
    bad(
        json!({"restore": {}}),
        "Invalid backup: Backup status must be available".into(),
    )
    .await;
    // Nothing above changed a volume.
    for vol in [&small, &used] {
        let want = if *vol == used { "in-use" } else { "available" };
        a.wait_volume(vol, want).await;
    }
    admin
        .action(&id, json!({"os-reset_status": {"status": "available"}}))
        .await;
    let r = a.restore_new(&id).await;
    assert_same(&volume_file(&s, &r), &volume_file(&s, &v), 2 * GIB);
}
both!(restore_rules);

// ---- §9: actions ------------------------------------------------------------------

async fn actions(b: Backend) {
    let s = Server::start_with(b, &[], &[]);
    let a = Api::new(&s, "usera", PA);
    let admin = Api::new(&s, "admin", PA);
    let v = a.volume(1, "v").await;
    image::fill(&volume_file(&s, &v), 0, 2, 8);
    let (id, _) = a.backup(json!({"volume_id": v})).await;

    for body in [
        json!({}),
        json!({"os-reset_status": {"status": "error"}, "os-force_delete": {}}),
        json!([1]),
    ] {
        assert_fault(
            admin.action(&id, body).await,
            400,
            "badRequest",
            "Malformed request body",
        );
    }
    assert_fault(
        admin.action(&id, json!({"os-frobnicate": {}})).await,
        400,
        "badRequest",
        "There is no such action: os-frobnicate. Verify the request body and Content-Type header and try again.",
    );

    // Reset status: admin only, available or error in any case.
    assert_fault(
        a.action(&id, json!({"os-reset_status": {"status": "error"}}))
            .await,
        403,
        "forbidden",
        "Policy doesn't allow volume_extension:backup_admin_actions:reset_status to be performed.",
    );
    let missing = "7a7a7a7a-0000-4000-8000-000000000000";
    assert_fault(
        admin
            .action(missing, json!({"os-reset_status": {"status": "error"}}))
            .await,
        404,
        "itemNotFound",
        &format!("Backup {missing} could not be found."),
    );
    for (arg, message) in [
        (
            json!({"status": "creating"}),
            "Invalid input for field/attribute status. Value: creating. 'creating' is not one of ['available', 'error']",
        ),
        (
            json!({}),
            "Invalid input for field/attribute os-reset_status. Value: {}. 'status' is a required property",
        ),
        (
            json!({"status": "error", "x": 1}),
            "Invalid input for field/attribute os-reset_status. Value: {'status': 'error', 'x': 1}. Additional properties are not allowed ('x' was unexpected)",
        ),
    ] {
        assert_fault(
            admin.action(&id, json!({"os-reset_status": arg})).await,
            400,
            "badRequest",
            message,
        );
    }
    let (st, body) = admin
        .action(&id, json!({"os-reset_status": {"status": "ERROR"}}))
        .await;
    assert_eq!((st.as_u16(), body), (202, Value::Null));
    assert_eq!(a.show(&id).await["status"], "error");
    let (st, _) = admin
        .action(&id, json!({"os-reset_status": {"status": "Available"}}))
        .await;
    assert_eq!(st, 202);
    assert_eq!(a.show(&id).await["status"], "available");

    // Force delete: admin only; null and {} both accepted.
    assert_fault(
        a.action(&id, json!({"os-force_delete": {}})).await,
        403,
        "forbidden",
        "Policy doesn't allow volume_extension:backup_admin_actions:force_delete to be performed.",
    );
    assert_fault(
        admin.action(missing, json!({"os-force_delete": {}})).await,
        404,
        "itemNotFound",
        &format!("Backup {missing} could not be found."),
    );
    let (st, body) = admin.action(&id, json!({"os-force_delete": null})).await;
    assert_eq!((st.as_u16(), body), (202, Value::Null));
    a.wait_gone(&id).await;
    let (other, _) = a.backup(json!({"volume_id": v})).await;
    let (st, _) = admin.action(&other, json!({"os-force_delete": {}})).await;
    assert_eq!(st, 202);
    a.wait_gone(&other).await;

    // Force-deleted while being written, or while still queued behind two running
    // backups: never available, and the volume is given back either way.
    let mut busy = Vec::new();
    for seed in [9, 10] {
        let big = a.volume(1, "big").await;
        image::random(&volume_file(&s, &big), 0, 64 * MIB, seed);
        busy.push(big);
    }
    let running = a.start_backup(json!({"volume_id": busy[0]})).await;
    let other = a.start_backup(json!({"volume_id": busy[1]})).await;
    let queued = a.start_backup(json!({"volume_id": v})).await;
    for id in [&queued, &running] {
        let (st, _) = admin.action(id, json!({"os-force_delete": {}})).await;
        assert_eq!(st, 202);
    }
    a.wait_gone(&queued).await;
    a.wait_gone(&running).await;
    a.wait_volume(&v, "available").await;
    a.wait_volume(&busy[0], "available").await;
    a.wait_backup(&other, "available").await;
    a.wait_volume(&busy[1], "available").await;
}
both!(actions);
