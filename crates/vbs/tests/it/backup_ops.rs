//! The backup lifecycle end to end (spec 01 §5–§10): seeded volume images backed up,
//! restored and compared byte for byte, incremental chains, every status rule and
//! message of create, update, delete, restore, the admin actions and export/import,
//! progress, and a corrupted repository.
#![allow(clippy::unwrap_used, clippy::many_single_char_names)]

use std::collections::BTreeSet;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::both;
use crate::support::image::{self, MIB, allocated, assert_same};
use crate::support::*;

const GIB: u64 = 1 << 30;
/// Views are read at the newest version, so metadata and the like are shown.
const MV: &str = "3.71";

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

    /// A caller with exactly these roles (`reader`, `member`, …).
    fn with_roles(s: &'a Server, user: &str, project: &'a str, roles: &str) -> Self {
        Self {
            s,
            project,
            token: format!("{user}:{project}:{roles}"),
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
            .call(
                method,
                &format!("/v3/{}/{path}", self.project),
                Some(&self.token),
                mv,
                body.as_ref(),
            )
            .await
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, Some(MV), None).await
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, None, Some(body)).await
    }

    async fn post_at(&self, mv: &str, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(mv), Some(body)).await
    }

    async fn put_at(&self, mv: &str, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PUT, path, Some(mv), Some(body)).await
    }

    async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::DELETE, path, None, None).await
    }

    async fn action(&self, id: &str, body: Value) -> (StatusCode, Value) {
        self.post(&format!("backups/{id}/action"), body).await
    }

    /// Creates a volume of `size` GiB; returns its id.
    async fn volume(&self, size: u64, name: &str) -> String {
        let (st, b) = self
            .post("volumes", json!({"volume": {"size": size, "name": name}}))
            .await;
        assert_eq!(st, 202, "{b}");
        assert_eq!(b["volume"]["status"], "available", "{b}");
        b["volume"]["id"].as_str().unwrap().to_owned()
    }

    /// Starts a backup (`{"backup": inner}`); returns its id.
    async fn start_backup(&self, inner: Value) -> String {
        let (st, b) = self.post("backups", json!({"backup": inner})).await;
        assert_eq!(st, 202, "{b}");
        b["backup"]["id"].as_str().unwrap().to_owned()
    }

    /// A backup taken to the end: its id and its detail view once `available`.
    async fn backup(&self, inner: Value) -> (String, Value) {
        let id = self.start_backup(inner).await;
        let detail = self.wait_backup(&id, "available").await;
        (id, detail)
    }

    async fn wait_backup(&self, id: &str, want: &str) -> Value {
        let path = format!("/v3/{}/backups/{id}", self.project);
        wait_status(self.s, &path, &self.token, "backup", want).await
    }

    async fn wait_volume(&self, id: &str, want: &str) -> Value {
        let path = format!("/v3/{}/volumes/{id}", self.project);
        wait_status(self.s, &path, &self.token, "volume", want).await
    }

    async fn show(&self, id: &str) -> Value {
        let (st, b) = self.get(&format!("backups/{id}")).await;
        assert_eq!(st, 200, "{b}");
        b["backup"].clone()
    }

    /// Waits until the backup is gone (404), seeing nothing but `deleting` meanwhile.
    async fn wait_gone(&self, id: &str) {
        for _ in 0..2400 {
            let (st, b) = self.get(&format!("backups/{id}")).await;
            if st == 404 {
                return;
            }
            assert_eq!(st, 200, "{b}");
            assert_eq!(b["backup"]["status"], "deleting", "{b}");
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("backup {id} was never deleted");
    }

    /// Restores to a new volume and waits for it; returns the volume id. Both ends of a
    /// restore finish in one transaction: once the volume is `available`, the backup is
    /// too, and the volume names its source backup.
    async fn restore_new(&self, id: &str) -> String {
        let (st, b) = self
            .post(&format!("backups/{id}/restore"), json!({"restore": {}}))
            .await;
        assert_eq!(st, 202, "{b}");
        let vol = b["restore"]["volume_id"].as_str().unwrap().to_owned();
        let v = self.wait_volume(&vol, "available").await;
        assert_eq!(v["metadata"]["src_backup_id"], id, "{v}");
        let b = self.show(id).await;
        assert_eq!(b["status"], "available", "{b}");
        vol
    }
}

fn volume_file(s: &Server, id: &str) -> PathBuf {
    s.dir().join("volumes").join(format!("{id}.img"))
}

/// The test data of a volume: 6 MiB of mixed data at the start and 2 MiB at 700 MiB;
/// the rest of the 1 GiB stays a hole.
fn seed(path: &Path, seed: u64) {
    image::fill(path, 0, 6, seed);
    image::fill(path, 700 * MIB, 2, seed + 1);
}

/// A guest's changes: random pages in the data, and a few anywhere.
fn change(path: &Path, seed: u64) {
    image::mutate(path, 8 * MIB, 48, seed);
    image::mutate(path, GIB, 4, seed + 1);
}

/// A sparse reference file of `size` bytes built by `build`.
fn reference(s: &Server, name: &str, size: u64, build: impl FnOnce(&Path)) -> PathBuf {
    let p = s.dir().join(format!("{name}.ref"));
    image::sparse(&p, size);
    build(&p);
    p
}

fn packs(s: &Server) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let Ok(dirs) = std::fs::read_dir(s.dir().join("repository").join("packs")) else {
        return out;
    };
    for d in dirs {
        for f in std::fs::read_dir(d.unwrap().path()).unwrap() {
            out.insert(f.unwrap().path());
        }
    }
    out
}

/// Standard base64 (the record format of export/import), to craft records.
fn base64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

mod rules;

// ---- §5, §8: back up and restore, byte for byte ---------------------------------

async fn restore_round_trip(b: Backend) {
    let s = Server::start_with(b, &[], &[]);
    let a = Api::new(&s, "usera", PA);
    let src = a.volume(1, "src").await;
    let src_file = volume_file(&s, &src);
    seed(&src_file, 1);

    let (st, body) = a
        .post(
            "backups",
            json!({"backup": {"volume_id": src, "name": "full", "description": "first",
                   "container": "cont"}}),
        )
        .await;
    assert_eq!(st, 202, "{body}");
    let id = body["backup"]["id"].as_str().unwrap().to_owned();
    let mut keys: Vec<&String> = body["backup"].as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["id", "links", "name"], "summary view: {body}");
    assert_eq!(body["backup"]["name"], "full");
    let bk = a.wait_backup(&id, "available").await;
    assert_eq!(
        (
            &bk["size"],
            &bk["volume_id"],
            &bk["is_incremental"],
            &bk["has_dependent_backups"],
            &bk["container"],
            &bk["description"],
            &bk["fail_reason"],
            &bk["snapshot_id"],
        ),
        (
            &json!(1),
            &json!(src),
            &json!(false),
            &json!(false),
            &json!("cont"),
            &json!("first"),
            &Value::Null,
            &Value::Null,
        )
    );
    assert_eq!(bk["data_timestamp"], bk["created_at"]);
    assert!(bk.get("os-vbs:progress").is_none(), "{bk}");
    // The volume is given back once the backup is done.
    a.wait_volume(&src, "available").await;

    // To a new volume: Cinder's name and description, same bytes, holes kept.
    let (st, body) = a
        .post(&format!("backups/{id}/restore"), json!({"restore": {}}))
        .await;
    assert_eq!(st, 202, "{body}");
    let new = body["restore"]["volume_id"].as_str().unwrap().to_owned();
    assert_eq!(
        body,
        json!({"restore": {"backup_id": id, "volume_id": new,
                           "volume_name": format!("restore_backup_{id}")}})
    );
    let v = a.wait_volume(&new, "available").await;
    assert_eq!(
        (&v["size"], &v["description"], &v["metadata"]),
        (
            &json!(1),
            &json!("auto-created_from_restore_from_backup"),
            &json!({"src_backup_id": id})
        )
    );
    a.wait_backup(&id, "available").await;
    let new_file = volume_file(&s, &new);
    assert_same(&src_file, &new_file, GIB);
    assert!(
        allocated(&new_file) <= allocated(&src_file),
        "restored {} bytes allocated, source {}",
        allocated(&new_file),
        allocated(&src_file)
    );

    // To an existing, larger volume holding other data: the backup's size is replaced.
    let other = a.volume(2, "other").await;
    let other_file = volume_file(&s, &other);
    image::fill(&other_file, 0, 12, 99);
    image::random(&other_file, 300 * MIB, 3 * MIB, 98);
    // The comparison does see a difference.
    assert!(std::panic::catch_unwind(|| assert_same(&src_file, &other_file, GIB)).is_err());
    let (st, body) = a
        .post(
            &format!("backups/{id}/restore"),
            json!({"restore": {"volume_id": other, "name": "not used"}}),
        )
        .await;
    assert_eq!(st, 202, "{body}");
    assert_eq!(
        body,
        json!({"restore": {"backup_id": id, "volume_id": other, "volume_name": "other"}})
    );
    let v = a.wait_volume(&other, "available").await;
    assert_eq!(
        (&v["size"], &v["name"], &v["metadata"]),
        (&json!(2), &json!("other"), &json!({"src_backup_id": id}))
    );
    a.wait_backup(&id, "available").await;
    assert_same(&src_file, &other_file, GIB);

    // A named new volume; `{"restore": null}` is taken as `{}`.
    let (st, body) = a
        .post(
            &format!("backups/{id}/restore"),
            json!({"restore": {"name": "mine"}}),
        )
        .await;
    assert_eq!(st, 202, "{body}");
    assert_eq!(body["restore"]["volume_name"], "mine");
    let named = body["restore"]["volume_id"].as_str().unwrap().to_owned();
    a.wait_volume(&named, "available").await;
    a.wait_backup(&id, "available").await;
    let (st, body) = a
        .post(&format!("backups/{id}/restore"), json!({"restore": null}))
        .await;
    assert_eq!(st, 202, "{body}");
    assert_eq!(
        body["restore"]["volume_name"],
        format!("restore_backup_{id}")
    );
    let vol = body["restore"]["volume_id"].as_str().unwrap().to_owned();
    a.wait_volume(&vol, "available").await;
    a.wait_backup(&id, "available").await;
}
both!(restore_round_trip);

// ---- incremental chains ----------------------------------------------------------

async fn incremental_chain(b: Backend) {
    let s = Server::start_with(b, &[], &[]);
    let a = Api::new(&s, "usera", PA);
    let admin = Api::new(&s, "admin", PA);
    let v = a.volume(1, "v").await;
    let file = volume_file(&s, &v);
    seed(&file, 10);
    let ref0 = reference(&s, "r0", GIB, |p| seed(p, 10));
    let (full1, _) = a.backup(json!({"volume_id": v})).await;

    change(&file, 20);
    let ref1 = reference(&s, "r1", GIB, |p| {
        seed(p, 10);
        change(p, 20);
    });
    let (incr1, bk) = a.backup(json!({"volume_id": v, "incremental": true})).await;
    assert_eq!(
        (&bk["is_incremental"], &bk["has_dependent_backups"]),
        (&json!(true), &json!(false))
    );
    let parent = a.show(&full1).await;
    assert_eq!(
        (&parent["is_incremental"], &parent["has_dependent_backups"]),
        (&json!(false), &json!(true))
    );
    let msg = "Invalid backup: Incremental backups exist for this backup.";
    assert_fault(
        a.delete(&format!("backups/{full1}")).await,
        400,
        "badRequest",
        msg,
    );
    assert_fault(
        admin.action(&full1, json!({"os-force_delete": {}})).await,
        400,
        "badRequest",
        msg,
    );
    assert_eq!(a.show(&full1).await["status"], "available");

    let r = a.restore_new(&incr1).await;
    assert_same(&volume_file(&s, &r), &ref1, GIB);
    let r = a.restore_new(&full1).await;
    assert_same(&volume_file(&s, &r), &ref0, GIB);

    // An independent newer full, and an incremental (Cinder's string form of true)
    // whose parent is that newest available backup.
    change(&file, 30);
    let ref2 = reference(&s, "r2", GIB, |p| {
        seed(p, 10);
        change(p, 20);
        change(p, 30);
    });
    let (full2, bk) = a.backup(json!({"volume_id": v, "incremental": "no"})).await;
    assert_eq!(bk["is_incremental"], false);
    change(&file, 40);
    let ref3 = reference(&s, "r3", GIB, |p| {
        seed(p, 10);
        change(p, 20);
        change(p, 30);
        change(p, 40);
    });
    let (incr2, bk) = a
        .backup(json!({"volume_id": v, "incremental": "True"}))
        .await;
    assert_eq!(bk["is_incremental"], true);
    assert_eq!(a.show(&full2).await["has_dependent_backups"], true);
    assert_eq!(a.show(&incr1).await["has_dependent_backups"], false);

    // Delete the old chain, child first; the parent then has no dependents.
    let (st, body) = a.delete(&format!("backups/{incr1}")).await;
    assert_eq!((st.as_u16(), body), (202, Value::Null));
    a.wait_gone(&incr1).await;
    assert_fault(
        a.get(&format!("backups/{incr1}")).await,
        404,
        "itemNotFound",
        &format!("Backup {incr1} could not be found."),
    );
    assert_eq!(a.show(&full1).await["has_dependent_backups"], false);
    let (st, _) = a.delete(&format!("backups/{full1}")).await;
    assert_eq!(st, 202);
    a.wait_gone(&full1).await;

    // What remains restores on its own, after GC swept the old chain's packs.
    let r = a.restore_new(&full2).await;
    assert_same(&volume_file(&s, &r), &ref2, GIB);
    let r = a.restore_new(&incr2).await;
    assert_same(&volume_file(&s, &r), &ref3, GIB);

    // Deleting everything leaves no pack behind.
    a.delete(&format!("backups/{incr2}")).await;
    a.wait_gone(&incr2).await;
    a.delete(&format!("backups/{full2}")).await;
    a.wait_gone(&full2).await;
    // The sweep is a job of its own, queued by the deletes.
    for _ in 0..1200 {
        if packs(&s).is_empty() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(packs(&s), BTreeSet::new());
}
both!(incremental_chain);

/// A restore gives the target the source volume's metadata as the backup saw it, as
/// Cinder restores a backup's volume metadata (replacing the target's), plus
/// `src_backup_id`; tempest checks it on a new volume.
async fn restore_carries_volume_metadata(b: Backend) {
    let s = Server::start_with(b, &[], &[]);
    let a = Api::new(&s, "usera", PA);
    let meta = json!({"vol-meta1": "value1", "vol-meta2": "value2"});
    let (st, body) = a
        .post(
            "volumes",
            json!({"volume": {"size": 1, "name": "src", "metadata": meta}}),
        )
        .await;
    assert_eq!(st, 202, "{body}");
    let src = body["volume"]["id"].as_str().unwrap().to_owned();
    seed(&volume_file(&s, &src), 5);
    let (id, _) = a.backup(json!({"volume_id": src})).await;

    let new = a.restore_new(&id).await;
    let v = a.wait_volume(&new, "available").await;
    assert_eq!(
        v["metadata"],
        json!({"vol-meta1": "value1", "vol-meta2": "value2", "src_backup_id": id})
    );

    let (st, body) = a
        .post(
            "volumes",
            json!({"volume": {"size": 1, "metadata": {"keep": "x"}}}),
        )
        .await;
    assert_eq!(st, 202, "{body}");
    let target = body["volume"]["id"].as_str().unwrap().to_owned();
    let (st, body) = a
        .post(
            &format!("backups/{id}/restore"),
            json!({"restore": {"volume_id": target}}),
        )
        .await;
    assert_eq!(st, 202, "{body}");
    let v = a.wait_volume(&target, "available").await;
    assert_eq!(
        v["metadata"],
        json!({"vol-meta1": "value1", "vol-meta2": "value2", "src_backup_id": id})
    );
}
both!(restore_carries_volume_metadata);

// ---- §10: export and import --------------------------------------------------------

async fn export_import(b: Backend) {
    let s = Server::start_with(b, &[], &[]);
    let a = Api::new(&s, "usera", PA);
    let admin = Api::new(&s, "admin", PA);
    let v = a.volume(1, "v").await;
    let file = volume_file(&s, &v);
    seed(&file, 60);
    let (id, _) = a
        .backup(json!({"volume_id": v, "name": "exported", "description": "d"}))
        .await;

    assert_fault(
        a.get(&format!("backups/{id}/export_record")).await,
        403,
        "forbidden",
        "Policy doesn't allow backup:export-import to be performed.",
    );
    let missing = "7a7a7a7a-0000-4000-8000-000000000000";
    assert_fault(
        admin.get(&format!("backups/{missing}/export_record")).await,
        404,
        "itemNotFound",
        &format!("Backup {missing} could not be found."),
    );
    let (st, body) = admin.get(&format!("backups/{id}/export_record")).await;
    assert_eq!(st, 200, "{body}");
    let record = body["backup-record"].clone();
    assert_eq!(record.as_object().unwrap().len(), 2, "{body}");
    assert_eq!(
        record["backup_service"],
        "cinder.backup.drivers.vbs.VbsBackupDriver"
    );
    let url = record["backup_url"].as_str().unwrap();
    assert!(
        !url.is_empty()
            && url.len() % 4 == 0
            && url
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"+/=".contains(&c)),
        "not base64: {url}"
    );

    // Import: admin only, schema, record contents, no duplicates.
    assert_fault(
        a.post("backups/import_record", json!({"backup-record": record}))
            .await,
        403,
        "forbidden",
        "Policy doesn't allow backup:backup-import to be performed.",
    );
    assert_fault(
        admin
            .post("backups/import_record", json!({"backup-record": record}))
            .await,
        400,
        "badRequest",
        "Invalid backup: Backup already exists in database.",
    );
    let import = |service: &str, url: &str| json!({"backup-record": {"backup_service": service, "backup_url": url}});
    assert_fault(
        admin
            .post("backups/import_record", import("x", "!!!"))
            .await,
        400,
        "badRequest",
        "Invalid input for field/attribute backup_url. Value: !!!. '!!!' is not a 'base64'",
    );
    assert_fault(
        admin
            .post(
                "backups/import_record",
                json!({"backup-record": {"backup_service": "x"}}),
            )
            .await,
        400,
        "badRequest",
        "Invalid input for field/attribute backup-record. Value: {'backup_service': 'x'}. 'backup_url' is a required property",
    );
    assert_fault(
        admin
            .post(
                "backups/import_record",
                import("x", &base64(br#"{"size": 1}"#)),
            )
            .await,
        400,
        "badRequest",
        "Invalid input received: Provided backup record is missing an id",
    );
    let unknown = "1e1e1e1e-0000-4000-8000-000000000001";
    assert_fault(
        admin
            .post(
                "backups/import_record",
                import("x", &base64(format!(r#"{{"id": "{unknown}"}}"#).as_bytes())),
            )
            .await,
        400,
        "badRequest",
        "Invalid input received: Provided backup record is missing size attribute",
    );
    // A record whose data is not in the repository ends in error.
    let (st, body) = admin
        .post(
            "backups/import_record",
            import(
                "x",
                &base64(format!(r#"{{"id": "{unknown}", "size": 1}}"#).as_bytes()),
            ),
        )
        .await;
    assert_eq!(st, 201, "{body}");
    assert_eq!(body["backup"]["id"], unknown);
    let bk = admin.wait_backup(unknown, "error").await;
    assert!(bk["fail_reason"].is_string(), "{bk}");

    // The catalog lost, the repository and its key kept: a new service over the same
    // repository imports the record, checks the data, and restores the same bytes.
    let config = s.dir().join("other.toml");
    std::fs::write(
        &config,
        format!(
            "repository = \"{}\"\nrepository_key_file = \"{}\"\n",
            s.dir().join("repository").display(),
            s.dir().join("repository.key").display()
        ),
    )
    .unwrap();
    let t = Server::start_with(b, &[], &["--config", config.to_str().unwrap()]);
    let t_admin = Api::new(&t, "admin", PA);
    let (st, body) = t_admin
        .post("backups/import_record", json!({"backup-record": record}))
        .await;
    assert_eq!(st, 201, "{body}");
    assert_eq!(body["backup"]["id"], id);
    let bk = t_admin.wait_backup(&id, "available").await;
    assert_eq!(
        (&bk["size"], &bk["volume_id"]),
        (&json!(1), &json!("00000000-0000-0000-0000-000000000000"))
    );
    let r = t_admin.restore_new(&id).await;
    assert_same(&volume_file(&t, &r), &file, GIB);
    drop(t);

    // Imported under another id (tempest's way to import next to the original): the
    // copy gets a manifest of its own over the same packs, so the original's delete
    // below leaves it whole.
    let copy = "2e2e2e2e-0000-4000-8000-000000000002";
    let mut decoded: Value = {
        use base64::Engine as _;
        let url = record["backup_url"].as_str().unwrap();
        serde_json::from_slice(
            &base64::engine::general_purpose::STANDARD
                .decode(url)
                .unwrap(),
        )
        .unwrap()
    };
    decoded["id"] = json!(copy);
    let (st, body) = admin
        .post(
            "backups/import_record",
            import(
                record["backup_service"].as_str().unwrap(),
                &base64(decoded.to_string().as_bytes()),
            ),
        )
        .await;
    assert_eq!(st, 201, "{body}");
    admin.wait_backup(copy, "available").await;
    let shared_packs = packs(&s);
    assert!(!shared_packs.is_empty());
    // A copy's source must be a plain backup id, never a path into the repository.
    decoded["id"] = json!("3e3e3e3e-0000-4000-8000-000000000003");
    decoded["manifest_id"] = json!("../packs/x");
    assert_fault(
        admin
            .post(
                "backups/import_record",
                import("x", &base64(decoded.to_string().as_bytes())),
            )
            .await,
        400,
        "badRequest",
        "Invalid input received: Can't parse backup record.",
    );

    // Force-deleted here, the record comes back on import (spec §10.2: a soft-deleted
    // backup is revived); its data went with the delete, so it ends in error.
    let (st, _) = admin.action(&id, json!({"os-force_delete": {}})).await;
    assert_eq!(st, 202);
    a.wait_gone(&id).await;
    let (st, body) = admin
        .post("backups/import_record", json!({"backup-record": record}))
        .await;
    assert_eq!(st, 201, "{body}");
    admin.wait_backup(&id, "error").await;
    // The copy still restores the same bytes, from the packs it shares.
    assert_eq!(packs(&s), shared_packs);
    let r = admin.restore_new(copy).await;
    assert_same(&volume_file(&s, &r), &file, GIB);
}
both!(export_import);

// ---- work at once, progress, corruption -------------------------------------------

async fn concurrent_backups(b: Backend) {
    let s = Server::start_with(b, &[], &[]);
    let a = Api::new(&s, "usera", PA);
    let (v1, v2) = (a.volume(1, "one").await, a.volume(1, "two").await);
    seed(&volume_file(&s, &v1), 70);
    seed(&volume_file(&s, &v2), 80);
    let (b1, b2) = tokio::join!(
        a.start_backup(json!({"volume_id": v1})),
        a.start_backup(json!({"volume_id": v2}))
    );
    let (d1, d2) = tokio::join!(
        a.wait_backup(&b1, "available"),
        a.wait_backup(&b2, "available")
    );
    assert_eq!(
        (&d1["volume_id"], &d2["volume_id"]),
        (&json!(v1), &json!(v2))
    );
    let (r1, r2) = tokio::join!(a.restore_new(&b1), a.restore_new(&b2));
    assert_same(&volume_file(&s, &r1), &volume_file(&s, &v1), GIB);
    assert_same(&volume_file(&s, &r2), &volume_file(&s, &v2), GIB);
}
both!(concurrent_backups);

/// An incremental requested at the same moment as the delete of its only possible
/// parent: exactly one of them is accepted, never both (a live backup whose parent is
/// gone), never neither for a lack of a winner; the loser gets Cinder's message.
async fn incremental_races_parent_delete(b: Backend) {
    let s = Server::start_with(b, &[], &[]);
    let a = Api::new(&s, "usera", PA);
    let v = a.volume(1, "raced").await;
    seed(&volume_file(&s, &v), 90);
    let mut wins = (0, 0);
    for _ in 0..8 {
        let (parent, _) = a.backup(json!({"volume_id": v})).await;
        let path = format!("backups/{parent}");
        let ((ist, ib), (dst, db)) = tokio::join!(
            a.post(
                "backups",
                json!({"backup": {"volume_id": v, "incremental": true}})
            ),
            a.delete(&path)
        );
        match (ist.as_u16(), dst.as_u16()) {
            (202, 400) => {
                wins.0 += 1;
                assert_eq!(
                    db["badRequest"]["message"],
                    "Invalid backup: Incremental backups exist for this backup.",
                    "{db}"
                );
                let child = ib["backup"]["id"].as_str().unwrap().to_owned();
                let done = a.wait_backup(&child, "available").await;
                assert_eq!(done["is_incremental"], true, "{done}");
                let (st, body) = a.delete(&format!("backups/{child}")).await;
                assert_eq!(st, 202, "{body}");
                a.wait_gone(&child).await;
                let (st, body) = a.delete(&format!("backups/{parent}")).await;
                assert_eq!(st, 202, "{body}");
            }
            (400, 202) => {
                wins.1 += 1;
                assert_eq!(
                    ib["badRequest"]["message"],
                    "Invalid backup: No backups available to do an incremental backup.",
                    "{ib}"
                );
            }
            other => panic!("incremental {ist} {ib}, delete {dst} {db}: {other:?}"),
        }
        a.wait_gone(&parent).await;
        a.wait_volume(&v, "available").await;
    }
    eprintln!("incremental won {} times, delete {}", wins.0, wins.1);
}
both!(incremental_races_parent_delete);

/// Polls a backup every few milliseconds until it leaves `running`; returns the last
/// `os-vbs:progress` seen, checking each one on the way.
async fn watch_progress(a: &Api<'_>, id: &str, running: &str) -> Option<Value> {
    let mut seen = None;
    loop {
        let bk = a.show(id).await;
        if bk["status"] != running {
            assert!(bk.get("os-vbs:progress").is_none(), "{bk}");
            return seen;
        }
        if let Some(p) = bk.get("os-vbs:progress") {
            let mut keys: Vec<&String> = p.as_object().unwrap().keys().collect();
            keys.sort();
            assert_eq!(
                keys,
                ["bytes_done", "bytes_per_second", "bytes_total"],
                "{p}"
            );
            let (done, total) = (p["bytes_done"].as_u64(), p["bytes_total"].as_u64());
            assert!(p["bytes_per_second"].is_u64(), "{p}");
            assert!(done <= total && total > Some(0), "{p}");
            seen = Some(p.clone());
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

async fn progress(b: Backend) {
    let s = Server::start_with(b, &[], &[]);
    let a = Api::new(&s, "usera", PA);
    let v = a.volume(1, "big").await;
    let file = volume_file(&s, &v);
    image::random(&file, 0, 256 * MIB, 90);
    let id = a.start_backup(json!({"volume_id": v})).await;
    let backup = watch_progress(&a, &id, "creating").await;
    let bk = a.wait_backup(&id, "available").await;
    assert!(bk.get("os-vbs:progress").is_none(), "{bk}");
    let (st, body) = a
        .post(&format!("backups/{id}/restore"), json!({"restore": {}}))
        .await;
    assert_eq!(st, 202, "{body}");
    let restore = watch_progress(&a, &id, "restoring").await;
    let r = body["restore"]["volume_id"].as_str().unwrap();
    a.wait_volume(r, "available").await;
    assert_same(&volume_file(&s, r), &file, GIB);
    eprintln!("progress seen: backup {backup:?}, restore {restore:?}");
}
both!(progress);

async fn corruption(b: Backend) {
    let s = Server::start_with(b, &[], &[]);
    let a = Api::new(&s, "usera", PA);
    let good_vol = a.volume(1, "good").await;
    seed(&volume_file(&s, &good_vol), 100);
    let (good, _) = a.backup(json!({"volume_id": good_vol})).await;
    let before = packs(&s);
    // Random data is stored raw: a flipped byte is a flipped block.
    let bad_vol = a.volume(1, "bad").await;
    image::random(&volume_file(&s, &bad_vol), 0, 3 * MIB, 101);
    let (bad, _) = a.backup(json!({"volume_id": bad_vol})).await;
    let theirs: Vec<PathBuf> = packs(&s).difference(&before).cloned().collect();
    assert!(!theirs.is_empty());
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&theirs[0])
        .unwrap();
    let mut byte = [0u8];
    f.read_exact_at(&mut byte, 1000).unwrap();
    f.write_all_at(&[byte[0] ^ 0x40], 1000).unwrap();
    f.sync_all().unwrap();

    // Into an existing volume: it ends error_restoring, the backup available again
    // with a reason.
    let target = a.volume(1, "target").await;
    let (st, _) = a
        .post(
            &format!("backups/{bad}/restore"),
            json!({"restore": {"volume_id": target}}),
        )
        .await;
    assert_eq!(st, 202);
    a.wait_volume(&target, "error_restoring").await;
    let bk = a.wait_backup(&bad, "available").await;
    let reason = bk["fail_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("corrupt"), "{bk}");
    // Into a new volume: that volume ends in error (spec §8.2 step 7).
    let (st, body) = a
        .post(&format!("backups/{bad}/restore"), json!({"restore": {}}))
        .await;
    assert_eq!(st, 202);
    let new = body["restore"]["volume_id"].as_str().unwrap();
    a.wait_volume(new, "error").await;
    a.wait_backup(&bad, "available").await;
    // The other backup is untouched.
    let r = a.restore_new(&good).await;
    assert_same(&volume_file(&s, &r), &volume_file(&s, &good_vol), GIB);

    // `vbs admin verify` names the damaged backup and exits non-zero.
    let verify = |ids: &[&str]| {
        let out = vbs()
            .args(["admin", "verify", "--data-dir"])
            .arg(s.dir())
            .args(ids)
            .env("RUST_LOG", "error")
            .output()
            .unwrap();
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
            panic!(
                "verify printed no JSON: {} / {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out.status.success(), report["damaged"].clone())
    };
    assert_eq!(verify(&[]), (false, json!([bad])));
    assert_eq!(verify(&[&bad]), (false, json!([bad])));
    assert_eq!(verify(&[&good]), (true, json!([])));
}
both!(corruption);
