//! Volumes, snapshots and manage-existing end to end: the files in the pool, Cinder's
//! status rules and messages, and project scoping.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::both;
use crate::support::*;

const GIB: u64 = 1 << 30;

struct Api<'a> {
    s: &'a Server,
    project: &'a str,
    token: String,
}

impl<'a> Api<'a> {
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
    ) -> (reqwest::StatusCode, Value) {
        self.s
            .call(
                method,
                &format!("/v3/{}/{path}", self.project),
                Some(&self.token),
                mv,
                body.as_ref(),
            )
            .await
    }

    async fn get(&self, path: &str) -> (reqwest::StatusCode, Value) {
        self.call(Method::GET, path, None, None).await
    }

    async fn post(&self, path: &str, body: Value) -> (reqwest::StatusCode, Value) {
        self.call(Method::POST, path, None, Some(body)).await
    }

    async fn delete(&self, path: &str) -> (reqwest::StatusCode, Value) {
        self.call(Method::DELETE, path, None, None).await
    }

    async fn action(&self, id: &str, body: Value) -> (reqwest::StatusCode, Value) {
        self.post(&format!("volumes/{id}/action"), body).await
    }

    /// Creates a volume and returns its id (asserting a 202 and `available`).
    async fn create(&self, size: u64, name: &str) -> String {
        let (st, b) = self
            .post("volumes", json!({"volume": {"size": size, "name": name}}))
            .await;
        assert_eq!(st, 202, "{b}");
        assert_eq!(b["volume"]["status"], "available", "{b}");
        b["volume"]["id"].as_str().unwrap().to_owned()
    }

    /// Polls `GET <kind>s/<id>` until its status is `want`.
    async fn wait(&self, kind: &str, id: &str, want: &str) -> Value {
        for _ in 0..300 {
            let (st, b) = self.get(&format!("{kind}s/{id}")).await;
            assert_eq!(st, 200, "{b}");
            if b[kind]["status"] == want {
                return b[kind].clone();
            }
            assert_ne!(b[kind]["status"], "error", "{b}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{kind} {id} never became {want}");
    }
}

fn volume_file(s: &Server, id: &str) -> PathBuf {
    s.dir().join("volumes").join(format!("{id}.img"))
}

fn allocated(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().blocks() * 512
}

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    k.sort_unstable();
    k
}

async fn create_show_list_delete(b: Backend) {
    let s = Server::start_with(b, &[], &[]);
    let a = Api::new(&s, "usera", PA);
    let (st, body) = a
        .post(
            "volumes",
            json!({"volume": {"size": 1, "name": " vol-a ", "description": "d",
                   "metadata": {"k": "v"}, "snapshot_id": null, "imageRef": null,
                   "availability_zone": null, "volume_type": null}}),
        )
        .await;
    assert_eq!(st, 202, "{body}");
    let v = &body["volume"];
    let id = v["id"].as_str().unwrap().to_owned();
    assert_eq!(
        (&v["status"], &v["name"], &v["size"], &v["bootable"]),
        (
            &json!("available"),
            &json!("vol-a"),
            &json!(1),
            &json!("false")
        )
    );
    assert_eq!(v["metadata"], json!({"k": "v"}));
    // The image: sparse, 1 GiB, nothing allocated.
    let file = volume_file(&s, &id);
    assert_eq!(std::fs::metadata(&file).unwrap().len(), GIB);
    assert_eq!(allocated(&file), 0);

    let (st, shown) = a.get(&format!("volumes/{id}")).await;
    assert_eq!(st, 200);
    let v = &shown["volume"];
    assert_eq!(
        keys(v),
        [
            "attachments",
            "availability_zone",
            "bootable",
            "consistencygroup_id",
            "created_at",
            "description",
            "encrypted",
            "id",
            "links",
            "metadata",
            "multiattach",
            "name",
            "os-vol-tenant-attr:tenant_id",
            "replication_status",
            "size",
            "snapshot_id",
            "source_volid",
            "status",
            "updated_at",
            "user_id",
            "volume_type",
        ]
    );
    assert_eq!(v["os-vol-tenant-attr:tenant_id"], PA);
    assert_eq!(v["user_id"], "usera");
    assert_eq!(v["availability_zone"], "nova");
    // Newer versions add fields; admins see the host and migration attributes.
    let admin = Api::new(&s, "admin", PA);
    let (_, shown) = admin
        .call(Method::GET, &format!("volumes/{id}"), Some("3.71"), None)
        .await;
    let v = &shown["volume"];
    for k in [
        "group_id",
        "provider_id",
        "shared_targets",
        "service_uuid",
        "cluster_name",
        "volume_type_id",
        "consumes_quota",
        "migration_status",
        "os-vol-host-attr:host",
        "os-vol-mig-status-attr:migstat",
        "os-vol-mig-status-attr:name_id",
    ] {
        assert!(v.get(k).is_some(), "{k} missing: {v}");
    }
    assert_eq!(v["os-vol-host-attr:host"], "vbs@pool#pool");

    // Lists: summary and detail, exact name filter, paging.
    let second = a.create(2, "vol-b").await;
    let (_, list) = a.get("volumes").await;
    let ids: Vec<&str> = list["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [second.as_str(), id.as_str()]);
    assert_eq!(keys(&list["volumes"][0]), ["id", "links", "name"]);
    let (_, detail) = a.get("volumes/detail?name=vol-a").await;
    assert_eq!(detail["volumes"].as_array().unwrap().len(), 1);
    assert_eq!(detail["volumes"][0], shown_member(&a, &id).await);
    let (_, page) = a.get("volumes?limit=1").await;
    assert_eq!(page["volumes"][0]["id"], second);
    let next = page["volumes_links"][0]["href"].as_str().unwrap();
    assert!(
        next.ends_with(&format!("limit=1&marker={second}")),
        "{next}"
    );
    let (_, page) = a.get(&format!("volumes?limit=1&marker={second}")).await;
    assert_eq!(page["volumes"][0]["id"], id);

    // Delete: 202, then gone, file too.
    let (st, body) = a.delete(&format!("volumes/{id}")).await;
    assert_eq!((st.as_u16(), body), (202, Value::Null));
    assert_fault(
        a.get(&format!("volumes/{id}")).await,
        404,
        "itemNotFound",
        &format!("Volume {id} could not be found."),
    );
    assert!(!file.exists());
}
both!(create_show_list_delete);

async fn shown_member(a: &Api<'_>, id: &str) -> Value {
    a.get(&format!("volumes/{id}")).await.1["volume"].clone()
}

async fn create_validation(b: Backend) {
    let s = Server::start_with(b, &[], &[]);
    let a = Api::new(&s, "usera", PA);
    let post = |body: Value, mv: Option<&'static str>| {
        let a = &a;
        async move { a.call(Method::POST, "volumes", mv, Some(body)).await }
    };
    assert_fault(
        post(json!({"volume": {"size": 0}}), None).await,
        400,
        "badRequest",
        "Invalid input for field/attribute size. Value: 0. 0 is less than the minimum of 1",
    );
    assert_fault(
        post(json!({"volume": {"size": "abc"}}), None).await,
        400,
        "badRequest",
        "Invalid input for field/attribute size. Value: abc. 'abc' does not match '^[0-9]+$'",
    );
    assert_fault(
        post(json!({"volume": {"size": 1.5}}), None).await,
        400,
        "badRequest",
        "Invalid input for field/attribute size. Value: 1.5. 1.5 is not of type 'integer', 'string', 'null'",
    );
    assert_fault(
        post(json!({"volume": {"name": "x"}}), None).await,
        400,
        "badRequest",
        "Invalid input received: Volume size 'None' must be an integer and greater than 0",
    );
    assert_fault(
        post(
            json!({"volume": {"size": 1, "name": "n".repeat(256)}}),
            None,
        )
        .await,
        400,
        "badRequest",
        "Invalid input received: name has 256 characters, more than 255.",
    );
    assert_fault(
        post(
            json!({"volume": {"size": 1, "availability_zone": "az9"}}),
            None,
        )
        .await,
        400,
        "badRequest",
        "Availability zone 'az9' is invalid.",
    );
    assert_fault(
        post(json!({"size": 1}), None).await,
        400,
        "badRequest",
        "Additional properties are not allowed ('size' was unexpected)",
    );
    assert_fault(
        post(json!({"volume": {"size": 1, "snapshot_id": "nope"}}), None).await,
        400,
        "badRequest",
        "Invalid input for field/attribute snapshot_id. Value: nope. 'nope' is not valid under any of the given schemas",
    );
    let missing = "7a7a7a7a-0000-4000-8000-000000000000";
    assert_fault(
        post(json!({"volume": {"snapshot_id": missing}}), None).await,
        404,
        "itemNotFound",
        &format!("Snapshot {missing} could not be found."),
    );
    // Unknown keys: ignored before 3.53, refused from it.
    let (st, _) = post(json!({"volume": {"size": "1", "colour": "red"}}), None).await;
    assert_eq!(st, 202);
    assert_fault(
        post(
            json!({"volume": {"size": 1, "colour": "red"}}),
            Some("3.53"),
        )
        .await,
        400,
        "badRequest",
        "Invalid input for field/attribute volume. Value: {'colour': 'red', 'size': 1}. Additional properties are not allowed ('colour' was unexpected)",
    );
    let (st, body) = s
        .call(
            Method::POST,
            &format!("/v3/{PA}/volumes"),
            Some(&token("usera", PA)),
            None,
            None,
        )
        .await;
    assert_eq!(
        (st.as_u16(), &body["badRequest"]["message"]),
        (400, &json!("Malformed request body"))
    );
    // A reader may look but not create.
    let reader = Api::new(&s, "r", PA);
    let reader = Api {
        token: format!("{}:reader", reader.token),
        ..reader
    };
    assert_fault(
        reader.post("volumes", json!({"volume": {"size": 1}})).await,
        403,
        "forbidden",
        "Policy doesn't allow volume:create to be performed.",
    );
}
both!(create_validation);

async fn extend_attach_detach(b: Backend) {
    let s = Server::start_with(b, &[], &[]);
    let a = Api::new(&s, "usera", PA);
    let id = a.create(1, "v").await;
    let file = volume_file(&s, &id);

    let (st, _) = a.action(&id, json!({"os-extend": {"new_size": 3}})).await;
    assert_eq!(st, 202);
    assert_eq!(shown_member(&a, &id).await["size"], 3);
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 3 * GIB);
    assert_eq!(shown_member(&a, &id).await["status"], "available");
    assert_fault(
        a.action(&id, json!({"os-extend": {"new_size": 2}})).await,
        400,
        "badRequest",
        "Invalid input received: New size for extend must be greater than current size. (current: 3, extended: 2).",
    );
    assert_fault(
        a.action(&id, json!({"os-extend": {}})).await,
        400,
        "badRequest",
        "Invalid input for field/attribute os-extend. Value: {}. 'new_size' is a required property",
    );

    let server = "5b5b5b5b-0000-4000-8000-000000000001";
    let (st, _) = a
        .action(
            &id,
            json!({"os-attach": {"instance_uuid": server, "mountpoint": "/dev/vdb"}}),
        )
        .await;
    assert_eq!(st, 202);
    let v = shown_member(&a, &id).await;
    assert_eq!(v["status"], "in-use");
    let att = &v["attachments"][0];
    assert_eq!(
        (
            &att["server_id"],
            &att["device"],
            &att["volume_id"],
            &att["host_name"]
        ),
        (&json!(server), &json!("/dev/vdb"), &json!(id), &Value::Null)
    );
    assert_fault(
        a.action(
            &id,
            json!({"os-attach": {"instance_uuid": server, "mountpoint": "/dev/vdc"}}),
        )
        .await,
        400,
        "badRequest",
        "Invalid volume: volume is already attached and multiple attachments are not enabled",
    );
    // Attached: no extend below 3.42, no delete.
    assert_fault(
        a.action(&id, json!({"os-extend": {"new_size": 4}})).await,
        400,
        "badRequest",
        &format!(
            "Invalid volume: Volume {id} status must be '{{'status': 'available'}}' to extend, currently in-use."
        ),
    );
    let (st, _) = a
        .call(
            Method::POST,
            &format!("volumes/{id}/action"),
            Some("3.42"),
            Some(json!({"os-extend": {"new_size": 4}})),
        )
        .await;
    assert_eq!(st, 202);
    let v = shown_member(&a, &id).await;
    assert_eq!((&v["size"], &v["status"]), (&json!(4), &json!("in-use")));
    assert_fault(
        a.delete(&format!("volumes/{id}")).await,
        400,
        "badRequest",
        "Invalid volume: Volume status must be available or error or error_restoring or error_extending or error_managing and must not be migrating, attached, belong to a group, have snapshots, awaiting a transfer, or be disassociated from snapshots after volume transfer.",
    );

    let (st, _) = a.action(&id, json!({"os-detach": {}})).await;
    assert_eq!(st, 202);
    let v = shown_member(&a, &id).await;
    assert_eq!(
        (&v["status"], &v["attachments"]),
        (&json!("available"), &json!([]))
    );
    assert_fault(
        a.action(&id, json!({"os-detach": null})).await,
        400,
        "badRequest",
        "Invalid volume: Unable to detach volume. Volume status must be 'in-use' and attach_status must be 'attached' to detach.",
    );
    assert_fault(
        a.action(&id, json!({"os-frobnicate": {}})).await,
        400,
        "badRequest",
        "There is no such action: os-frobnicate. Verify the request body and Content-Type header and try again.",
    );

    // Reset status: admins only, then the usual rules apply to the new status.
    assert_fault(
        a.action(&id, json!({"os-reset_status": {"status": "error"}}))
            .await,
        403,
        "forbidden",
        "Policy doesn't allow volume_extension:volume_admin_actions:reset_status to be performed.",
    );
    let admin = Api::new(&s, "admin", PA);
    assert_fault(
        admin
            .action(&id, json!({"os-reset_status": {"status": "in-use"}}))
            .await,
        400,
        "badRequest",
        "Cannot reset-state to in-use because volume does not have any attachments.",
    );
    let (st, _) = admin
        .action(&id, json!({"os-reset_status": {"status": "extending"}}))
        .await;
    assert_eq!(st, 202);
    assert_fault(
        a.delete(&format!("volumes/{id}")).await,
        400,
        "badRequest",
        "Invalid volume: Volume status must be available or error or error_restoring or error_extending or error_managing and must not be migrating, attached, belong to a group, have snapshots, awaiting a transfer, or be disassociated from snapshots after volume transfer.",
    );
    let (st, _) = admin
        .action(&id, json!({"os-reset_status": {"status": "error"}}))
        .await;
    assert_eq!(st, 202);
    let (st, _) = a.delete(&format!("volumes/{id}")).await;
    assert_eq!(st, 202);
    assert!(!file.exists());
}
both!(extend_attach_detach);

async fn snapshots_copy_data(b: Backend) {
    let s = Server::start_with(b, &[], &[]);
    let a = Api::new(&s, "usera", PA);
    let id = a.create(1, "data").await;
    let file = volume_file(&s, &id);
    let handle = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
    handle.write_all_at(b"first bytes", 4096).unwrap();
    handle.write_all_at(&[0x5a; 8192], 512 << 20).unwrap();
    // Written zeros are not data: the snapshot leaves a hole there.
    handle.write_all_at(&vec![0; 1 << 20], 100 << 20).unwrap();
    handle.sync_all().unwrap();
    let before = std::fs::read(&file).unwrap();

    let (st, body) = a
        .post(
            "snapshots",
            json!({"snapshot": {"volume_id": id, "name": "snap", "description": "d",
                   "force": false, "metadata": {"m": "1"}}}),
        )
        .await;
    assert_eq!(st, 202, "{body}");
    let snap = body["snapshot"]["id"].as_str().unwrap().to_owned();
    assert_eq!(body["snapshot"]["volume_id"], id);
    let shown = a.wait("snapshot", &snap, "available").await;
    assert_eq!(shown["os-extended-snapshot-attributes:progress"], "100%");
    assert_eq!(shown["os-extended-snapshot-attributes:project_id"], PA);
    assert_eq!(
        (&shown["size"], &shown["metadata"]),
        (&json!(1), &json!({"m": "1"}))
    );
    let snap_file = s.dir().join("snapshots").join(format!("{snap}.img"));

    // Change the volume: the snapshot keeps the old bytes, and its holes.
    handle.write_all_at(b"second", 4096).unwrap();
    handle.write_all_at(&[1; 4096], 300 << 20).unwrap();
    drop(handle);
    let copy = std::fs::read(&snap_file).unwrap();
    assert_eq!(copy.len(), before.len());
    assert!(
        copy == before,
        "the snapshot differs from the volume it copied"
    );
    assert_eq!(&copy[4096..4107], b"first bytes");
    assert!(
        allocated(&snap_file) <= 64 * 1024,
        "snapshot allocates {} bytes",
        allocated(&snap_file)
    );

    // Lists.
    let (_, list) = a.get("snapshots").await;
    assert_eq!(list["snapshots"][0]["id"], snap);
    assert!(
        list["snapshots"][0]
            .get("os-extended-snapshot-attributes:progress")
            .is_none()
    );
    let (_, detail) = a
        .call(Method::GET, "snapshots/detail", Some("3.41"), None)
        .await;
    assert_eq!(detail["snapshots"][0]["user_id"], "usera");

    // A volume from the snapshot has its bytes.
    let (st, body) = a
        .post(
            "volumes",
            json!({"volume": {"snapshot_id": snap, "name": "from-snap"}}),
        )
        .await;
    assert_eq!(st, 202, "{body}");
    let clone = body["volume"]["id"].as_str().unwrap().to_owned();
    let v = a.wait("volume", &clone, "available").await;
    assert_eq!((&v["snapshot_id"], &v["size"]), (&json!(snap), &json!(1)));
    assert!(std::fs::read(volume_file(&s, &clone)).unwrap() == before);
    // A volume with snapshots cannot go; with cascade it goes with them.
    let (st, _) = a.delete(&format!("volumes/{id}")).await;
    assert_eq!(st, 400);
    let (st, _) = a.delete(&format!("volumes/{id}?cascade=true")).await;
    assert_eq!(st, 202);
    assert_fault(
        a.get(&format!("snapshots/{snap}")).await,
        404,
        "itemNotFound",
        &format!("Snapshot {snap} could not be found."),
    );
    assert!(!snap_file.exists() && !file.exists());
}
both!(snapshots_copy_data);

async fn snapshot_rules(b: Backend) {
    let s = Server::start_with(b, &[], &[]);
    let a = Api::new(&s, "usera", PA);
    let id = a.create(1, "busy").await;
    let (st, _) = a
        .action(
            &id,
            json!({"os-attach": {"host_name": "h1", "mountpoint": "/mnt"}}),
        )
        .await;
    assert_eq!(st, 202);
    assert_fault(
        a.post("snapshots", json!({"snapshot": {"volume_id": id}}))
            .await,
        400,
        "badRequest",
        &format!(
            "Invalid volume: Volume {id} status must be available, but current status is: in-use."
        ),
    );
    assert_fault(
        a.call(
            Method::POST,
            "snapshots",
            Some("3.66"),
            Some(json!({"snapshot": {"volume_id": id, "force": false}})),
        )
        .await,
        400,
        "badRequest",
        "Since microversion 3.66 the 'force' flag is invalid for this request.  For backward compatability, however, when the 'force' flag is passed with a value evaluating to True, it is silently ignored.",
    );
    assert_fault(
        a.post("snapshots", json!({"snapshot": {"name": "x"}}))
            .await,
        400,
        "badRequest",
        "Invalid input for field/attribute snapshot. Value: {'name': 'x'}. 'volume_id' is a required property",
    );
    let (st, body) = a
        .post(
            "snapshots",
            json!({"snapshot": {"volume_id": id, "force": "true"}}),
        )
        .await;
    assert_eq!(st, 202, "{body}");
    let snap = body["snapshot"]["id"].as_str().unwrap().to_owned();
    a.wait("snapshot", &snap, "available").await;
    let (st, _) = a.action(&id, json!({"os-detach": null})).await;
    assert_eq!(st, 202);

    // Snapshot delete: only available or error.
    let admin = Api::new(&s, "admin", PA);
    let (st, _) = admin
        .call(
            Method::POST,
            &format!("volumes/{id}/action"),
            None,
            Some(json!({"os-reset_status": {"status": "available"}})),
        )
        .await;
    assert_eq!(st, 202);
    let (st, _) = a.delete(&format!("snapshots/{snap}")).await;
    assert_eq!(st, 202);
    let (st, _) = a.delete(&format!("snapshots/{snap}")).await;
    assert_eq!(st, 404);
    let (st, _) = a.delete(&format!("volumes/{id}")).await;
    assert_eq!(st, 202);
}
both!(snapshot_rules);

/// `PUT /snapshots/{id}` as Cinder's update schema has it: `name`/`description` (or
/// their v1 spellings, which they override), at least one, nothing else; members only,
/// in their project; 200 with the detail view.
async fn snapshot_update(b: Backend) {
    let s = Server::start_with(b, &[], &[]);
    let a = Api::new(&s, "usera", PA);
    let vol = a.create(1, "v").await;
    let (st, body) = a
        .post(
            "snapshots",
            json!({"snapshot": {"volume_id": vol, "name": "old"}}),
        )
        .await;
    assert_eq!(st, 202, "{body}");
    let id = body["snapshot"]["id"].as_str().unwrap().to_owned();
    a.wait("snapshot", &id, "available").await;
    let path = format!("snapshots/{id}");
    let put = |body: Value| a.call(Method::PUT, &path, None, Some(body));

    let (st, body) = put(json!({"snapshot": {"name": "  new  ", "description": "about it"}})).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(
        (&body["snapshot"]["name"], &body["snapshot"]["description"]),
        (&json!("new"), &json!("about it"))
    );
    assert!(
        body["snapshot"]
            .get("os-extended-snapshot-attributes:progress")
            .is_none()
    );
    let (st, body) = put(json!({"snapshot": {"display_name": "v1", "name": "wins"}})).await;
    assert_eq!(st, 200, "{body}");
    let shown = a.wait("snapshot", &id, "available").await;
    assert_eq!(
        (&shown["name"], &shown["description"]),
        (&json!("wins"), &json!("about it"))
    );
    let (st, _) = put(json!({"snapshot": {"description": null}})).await;
    assert_eq!(st, 200);
    assert_eq!(
        a.wait("snapshot", &id, "available").await["description"],
        Value::Null
    );

    assert_fault(
        put(json!({"snapshot": {}})).await,
        400,
        "badRequest",
        "Invalid input for field/attribute snapshot. Value: {}. {} is not valid under any of the given schemas",
    );
    assert_fault(
        put(json!({"snapshot": {"name": "x", "size": 2}})).await,
        400,
        "badRequest",
        "Invalid input for field/attribute snapshot. Value: {'name': 'x', 'size': 2}. Additional properties are not allowed ('size' was unexpected)",
    );
    assert_fault(
        put(json!({"snapshot": {"name": 5}})).await,
        400,
        "badRequest",
        "Invalid input for field/attribute name. Value: 5. 5 is not of type 'string', 'null'",
    );
    let reader = Api {
        token: format!("userr:{PA}:reader"),
        ..Api::new(&s, "userr", PA)
    };
    let (st, _) = reader
        .call(
            Method::PUT,
            &format!("snapshots/{id}"),
            None,
            Some(json!({"snapshot": {"name": "r"}})),
        )
        .await;
    assert_eq!(st, 403);
    let other = Api::new(&s, "userb", PB);
    let (st, _) = other
        .call(
            Method::PUT,
            &format!("snapshots/{id}"),
            None,
            Some(json!({"snapshot": {"name": "b"}})),
        )
        .await;
    assert_eq!(st, 404);
    assert_eq!(a.wait("snapshot", &id, "available").await["name"], "wins");
}
both!(snapshot_update);

async fn manage_existing(b: Backend) {
    let s = Server::start_with(b, &[], &[]);
    // Files may be adopted from the data directory's `manageable/` only (issue 16).
    let outside = s.dir().join("manageable").join("sub");
    std::fs::create_dir_all(&outside).unwrap();
    let img = outside.join("disk.raw");
    let f = std::fs::File::create(&img).unwrap();
    f.set_len(GIB + GIB / 2).unwrap();
    f.write_all_at(b"admin data", 0).unwrap();
    drop(f);
    let body = json!({"volume": {"ref": {"source-name": img.to_str().unwrap()},
                                 "name": "adopted", "description": "from outside"}});

    let member = Api::new(&s, "usera", PA);
    assert_fault(
        member.post("manageable_volumes", body.clone()).await,
        403,
        "forbidden",
        "Policy doesn't allow volume_extension:volume_manage to be performed.",
    );
    let admin = Api::new(&s, "admin", PA);
    let (st, got) = admin.post("manageable_volumes", body.clone()).await;
    assert_eq!(st, 202, "{got}");
    let v = &got["volume"];
    let id = v["id"].as_str().unwrap().to_owned();
    assert_eq!(
        (&v["size"], &v["status"], &v["name"]),
        (&json!(2), &json!("available"), &json!("adopted"))
    );
    // The legacy view: no microversion fields, even at 3.71.
    assert!(v.get("consumes_quota").is_none());
    // The member of the project sees it as an ordinary volume.
    let shown = shown_member(&member, &id).await;
    assert_eq!(shown["size"], 2);
    assert!(
        !volume_file(&s, &id).exists(),
        "managed in place, not copied"
    );

    assert_fault(
        admin.post("manageable_volumes", body.clone()).await,
        400,
        "badRequest",
        &format!(
            "Manage existing volume failed due to invalid backend reference {{'source-name': '{}'}}: Volume already managed.",
            img.display()
        ),
    );
    let missing = outside.join("missing.raw");
    assert_fault(
        admin
            .post(
                "manageable_volumes",
                json!({"volume": {"ref": {"source-name": missing.to_str().unwrap()}}}),
            )
            .await,
        400,
        "badRequest",
        &format!(
            "Manage existing volume failed due to invalid backend reference {{'source-name': '{}'}}: Volume not found.",
            missing.display()
        ),
    );
    // Anything outside the roots, however it is named, is an invalid reference.
    let elsewhere = s.dir().join("elsewhere.raw");
    std::fs::File::create(&elsewhere)
        .unwrap()
        .set_len(GIB)
        .unwrap();
    std::os::unix::fs::symlink(&elsewhere, outside.join("link.raw")).unwrap();
    for path in [
        "/etc/passwd".to_owned(),
        elsewhere.display().to_string(),
        format!("{}/../../elsewhere.raw", outside.display()),
        outside.join("link.raw").display().to_string(),
    ] {
        assert_fault(
            admin
                .post(
                    "manageable_volumes",
                    json!({"volume": {"ref": {"source-name": path}}}),
                )
                .await,
            400,
            "badRequest",
            &format!(
                "Manage existing volume failed due to invalid backend reference {{'source-name': '{path}'}}: The source-name is not under a directory this service may manage (manageable_roots).",
            ),
        );
    }
    assert_fault(
        admin
            .post(
                "manageable_volumes",
                json!({"volume": {"ref": {"source-id": "x"}}}),
            )
            .await,
        400,
        "badRequest",
        "Manage existing volume failed due to invalid backend reference {'source-id': 'x'}: The existing volume reference must contain \"source-name\".",
    );
    assert_fault(
        admin
            .post(
                "manageable_volumes",
                json!({"volume": {"ref": {"source-name": outside.to_str().unwrap()}}}),
            )
            .await,
        400,
        "badRequest",
        &format!(
            "Manage existing volume failed due to invalid backend reference {{'source-name': '{}'}}: Not a regular file or block device.",
            outside.display()
        ),
    );
    assert_fault(
        admin
            .post("manageable_volumes", json!({"volume": {"name": "x"}}))
            .await,
        400,
        "badRequest",
        "Invalid input for field/attribute volume. Value: {'name': 'x'}. 'ref' is a required property",
    );

    // A snapshot of a managed volume copies the admin's file.
    let (st, snap) = member
        .post("snapshots", json!({"snapshot": {"volume_id": id}}))
        .await;
    assert_eq!(st, 202, "{snap}");
    let snap = snap["snapshot"]["id"].as_str().unwrap().to_owned();
    member.wait("snapshot", &snap, "available").await;
    let copy = std::fs::read(s.dir().join("snapshots").join(format!("{snap}.img"))).unwrap();
    assert_eq!(&copy[..10], b"admin data");
    assert_eq!(copy.len() as u64, GIB + GIB / 2);
    let (st, _) = member.delete(&format!("snapshots/{snap}")).await;
    assert_eq!(st, 202);

    // Deleting the volume never deletes the admin's file.
    let (st, _) = member.delete(&format!("volumes/{id}")).await;
    assert_eq!(st, 202);
    assert_eq!(std::fs::metadata(&img).unwrap().len(), GIB + GIB / 2);
    // And it can be managed again.
    let (st, _) = admin.post("manageable_volumes", body).await;
    assert_eq!(st, 202);
    let _ = std::fs::remove_dir_all(&outside);
}
both!(manage_existing);

async fn other_projects_get_404(b: Backend) {
    let s = Server::start_with(b, &[], &[]);
    let a = Api::new(&s, "usera", PA);
    let id = a.create(1, "mine").await;
    let (_, snap) = a
        .post("snapshots", json!({"snapshot": {"volume_id": id}}))
        .await;
    let snap = snap["snapshot"]["id"].as_str().unwrap().to_owned();
    a.wait("snapshot", &snap, "available").await;

    let other = Api::new(&s, "userb", PB);
    let gone = format!("Volume {id} could not be found.");
    assert_fault(
        other.get(&format!("volumes/{id}")).await,
        404,
        "itemNotFound",
        &gone,
    );
    assert_fault(
        other.delete(&format!("volumes/{id}")).await,
        404,
        "itemNotFound",
        &gone,
    );
    assert_fault(
        other
            .action(&id, json!({"os-extend": {"new_size": 2}}))
            .await,
        404,
        "itemNotFound",
        &gone,
    );
    assert_fault(
        other
            .post("snapshots", json!({"snapshot": {"volume_id": id}}))
            .await,
        404,
        "itemNotFound",
        &gone,
    );
    assert_fault(
        other.get(&format!("snapshots/{snap}")).await,
        404,
        "itemNotFound",
        &format!("Snapshot {snap} could not be found."),
    );
    let (_, list) = other.get("volumes/detail").await;
    assert_eq!(list["volumes"], json!([]));
    let (_, list) = other.get("snapshots").await;
    assert_eq!(list["snapshots"], json!([]));
    // The URL's project must be the token's.
    let (st, _) = s
        .call(
            Method::GET,
            &format!("/v3/{PA}/volumes/{id}"),
            Some(&token("userb", PB)),
            None,
            None,
        )
        .await;
    assert_eq!(st, 400);
    // Admins see every project with all_tenants, and each volume by id.
    let admin = Api::new(&s, "admin", PB);
    let (st, _) = admin.get(&format!("volumes/{id}")).await;
    assert_eq!(st, 200);
    let (_, list) = admin.get("volumes?all_tenants=1").await;
    assert_eq!(list["volumes"][0]["id"], id);
    // Project-less routes work the same.
    let (st, body) = s
        .call(
            Method::GET,
            &format!("/v3/volumes/{id}"),
            Some(&token("usera", PA)),
            None,
            None,
        )
        .await;
    assert_eq!(st, 200, "{body}");
}
both!(other_projects_get_404);
