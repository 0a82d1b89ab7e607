//! Encryption at rest through the service (issue 15): a backup of random data made
//! through the API leaves no 64-byte slice of the volume in any stored object, on the
//! local directory, Swift and S3; the named opt-out stores it readable; the embedded
//! default creates its key file (0600) and says to back it up; a wrong or a missing key
//! stops the service with an error naming the repository; `vbs admin verify` reports an
//! altered pack; `vbs admin rotate-key` keeps old backups readable and new ones coming.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};

use reqwest::Method;
use serde_json::{Value, json};
use vbs_repository::{Credentials, Store};

use crate::support::image::{self, MIB};
use crate::support::*;

const SWIFT_USER: &str = "test:tester";
const SWIFT_KEY: &str = "testing";

fn swift_addr() -> String {
    std::env::var("VBS_TEST_SWIFT").unwrap_or_else(|_| "127.0.0.1:8080".into())
}

/// Where a test's backups go, and how to read every object back.
struct Repo {
    url: Option<String>,
    creds: Credentials,
    config: String,
}

impl Repo {
    fn local() -> Self {
        Self {
            url: None,
            creds: Credentials::default(),
            config: String::new(),
        }
    }

    /// A Swift container of its own (made by opening it the Swift way); `s3`: read
    /// through the S3 API of the same account.
    async fn remote(s3: bool) -> Self {
        let container = format!("vbs-enc-{}", uuid::Uuid::new_v4().simple());
        let _ = rustls::crypto::ring::default_provider().install_default();
        let tempauth = Credentials {
            user: Some(SWIFT_USER.into()),
            key: Some(SWIFT_KEY.into()),
            ..Credentials::default()
        };
        let swift_url = format!("swift+tempauth://{}/{container}", swift_addr());
        Store::open(&swift_url, &tempauth)
            .await
            .expect("the test Swift (scripts/swift-aio.sh start)");
        if s3 {
            let url = format!(
                "s3://{container}/repo?endpoint=http://{}&region=us-east-1",
                swift_addr()
            );
            Self {
                config: format!(
                    "repository = \"{url}\"\n[repository_credentials]\n\
                     access_key_id = \"{SWIFT_USER}\"\nsecret_access_key = \"{SWIFT_KEY}\"\n"
                ),
                url: Some(url),
                creds: Credentials {
                    access_key_id: Some(SWIFT_USER.into()),
                    secret_access_key: Some(SWIFT_KEY.into()),
                    ..Credentials::default()
                },
            }
        } else {
            Self {
                config: format!(
                    "repository = \"{swift_url}\"\n[repository_credentials]\n\
                     user = \"{SWIFT_USER}\"\nkey = \"{SWIFT_KEY}\"\n"
                ),
                url: Some(swift_url),
                creds: tempauth,
            }
        }
    }

    /// Every stored object's bytes.
    async fn objects(&self, s: &Server) -> Vec<Vec<u8>> {
        let url = self
            .url
            .clone()
            .unwrap_or_else(|| s.dir().join("repository").to_string_lossy().into_owned());
        let store = Store::open(&url, &self.creds).await.unwrap();
        let mut out = Vec::new();
        for prefix in ["packs/", "manifests/", "keys.json"] {
            for o in store.list(prefix).await.unwrap() {
                out.push(store.get(&o.key).await.unwrap().to_vec());
            }
        }
        out
    }
}

/// A server with `config` (TOML) as its configuration file.
fn serve(config: &str) -> Server {
    let path = std::env::temp_dir().join(format!("vbs-enc-{}.toml", uuid::Uuid::new_v4().simple()));
    std::fs::write(&path, config).unwrap();
    Server::start_logging(
        Backend::Sqlite,
        &[],
        &["--config", path.to_str().unwrap()],
        "info",
    )
}

/// A volume whose first 8 MiB are random, backed up through the API: the data, the
/// volume and the backup id.
async fn random_backup(s: &Server, seed: u64) -> (Vec<u8>, String, String) {
    let t = token("usera", PA);
    let (st, v) = s
        .call(
            Method::POST,
            &format!("/v3/{PA}/volumes"),
            Some(&t),
            None,
            Some(&json!({"volume": {"size": 1}})),
        )
        .await;
    assert_eq!(st, 202, "{v}");
    let vid = v["volume"]["id"].as_str().unwrap().to_owned();
    let file = s.dir().join("volumes").join(format!("{vid}.img"));
    image::random(&file, 0, 8 * MIB, seed);
    let data = head(&file, 8 * MIB as usize);
    let bid = backup(s, &vid, None).await;
    (data, vid, bid)
}

async fn backup(s: &Server, vid: &str, incremental: Option<bool>) -> String {
    let t = token("usera", PA);
    let body = json!({"backup": {"volume_id": vid, "incremental": incremental.unwrap_or(false)}});
    let (st, b) = s
        .call(
            Method::POST,
            &format!("/v3/{PA}/backups"),
            Some(&t),
            None,
            Some(&body),
        )
        .await;
    assert_eq!(st, 202, "{b}");
    let bid = b["backup"]["id"].as_str().unwrap().to_owned();
    wait_status(
        s,
        &format!("/v3/{PA}/backups/{bid}"),
        &t,
        "backup",
        "available",
    )
    .await;
    wait_status(
        s,
        &format!("/v3/{PA}/volumes/{vid}"),
        &t,
        "volume",
        "available",
    )
    .await;
    bid
}

/// Restores to a new volume; its file.
async fn restore(s: &Server, bid: &str) -> PathBuf {
    let t = token("usera", PA);
    let (st, r) = s
        .call(
            Method::POST,
            &format!("/v3/{PA}/backups/{bid}/restore"),
            Some(&t),
            None,
            Some(&json!({"restore": {}})),
        )
        .await;
    assert_eq!(st, 202, "{r}");
    let rv = r["restore"]["volume_id"].as_str().unwrap().to_owned();
    let v = wait_status(
        s,
        &format!("/v3/{PA}/volumes/{rv}"),
        &t,
        "volume",
        "available",
    )
    .await;
    assert_eq!(v["status"], "available");
    s.dir().join("volumes").join(format!("{rv}.img"))
}

/// The first `len` bytes of a file.
fn head(path: &Path, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    std::fs::File::open(path)
        .unwrap()
        .read_exact_at(&mut out, 0)
        .unwrap();
    out
}

/// How many of the volume's 64-byte slices (one per 4 KiB) appear in `objects`.
fn slices_found(objects: &[Vec<u8>], data: &[u8]) -> usize {
    let mut by_prefix: HashMap<u64, Vec<&[u8]>> = HashMap::new();
    for c in data.chunks(4096) {
        by_prefix
            .entry(u64::from_le_bytes(c[..8].try_into().unwrap()))
            .or_default()
            .push(&c[..64]);
    }
    let mut found: HashSet<&[u8]> = HashSet::new();
    for bytes in objects {
        for i in 0..bytes.len().saturating_sub(63) {
            let prefix = u64::from_le_bytes(bytes[i..i + 8].try_into().unwrap());
            if let Some(slices) = by_prefix.get(&prefix) {
                for s in slices {
                    if bytes[i..i + 64] == **s {
                        found.insert(s);
                    }
                }
            }
        }
    }
    found.len()
}

async fn nothing_readable(repo: Repo) {
    let s = serve(&repo.config);
    let (data, _, bid) = random_backup(&s, 21).await;
    let objects = repo.objects(&s).await;
    assert!(objects.len() >= 3, "keys, packs and a manifest");
    assert_eq!(
        slices_found(&objects, &data),
        0,
        "a slice of the volume is stored readable"
    );
    let restored = restore(&s, &bid).await;
    assert!(
        head(&restored, data.len()) == data,
        "the restore is byte-identical"
    );
}

#[tokio::test]
async fn encrypted_by_default_on_the_local_directory() {
    nothing_readable(Repo::local()).await;
}

#[tokio::test]
async fn encrypted_by_default_on_swift() {
    nothing_readable(Repo::remote(false).await).await;
}

#[tokio::test]
async fn encrypted_by_default_on_s3() {
    nothing_readable(Repo::remote(true).await).await;
}

#[tokio::test]
async fn the_named_opt_out_stores_plaintext_and_stays_so_after_the_upgrade() {
    let mut s = serve("encryption = false\n");
    let (data, _, bid) = random_backup(&s, 22).await;
    let objects = Repo::local().objects(&s).await;
    assert_eq!(slices_found(&objects, &data), data.len() / 4096);
    assert!(!s.dir().join("repository.key").exists());
    assert!(!s.dir().join("repository/keys.json").exists());
    // Started again with encryption on (the default, as after an upgrade from a version
    // without it): the plaintext repository keeps working as it is.
    s.kill();
    std::fs::write(s.config_file().unwrap(), "encryption = true\n").unwrap();
    s.restart();
    let restored = restore(&s, &bid).await;
    assert!(head(&restored, data.len()) == data);
    assert!(!s.dir().join("repository.key").exists());
    assert!(!s.dir().join("repository/keys.json").exists());
}

/// The engine's keys on Swift and on S3: a wrong key and no key are refused naming the
/// repository, an altered pack fails authentication, and a rotated key reads the old
/// backup and writes a new one.
async fn keys_on(repo: Repo) {
    use vbs_engine::{BackupOptions, Encryption, Engine, EngineOptions, MasterKey, RestoreOptions};
    let url = repo.url.clone().unwrap();
    let store = || async { Store::open(&url, &repo.creds).await.unwrap() };
    let (k1, k2) = (MasterKey::generate(), MasterKey::generate());
    let e = Engine::open(
        store().await,
        EngineOptions::default(),
        &Encryption::Key(k1.clone()),
    )
    .await
    .unwrap();
    assert!(e.is_encrypted());
    let dir = tempfile_dir();
    let src = dir.join("vol.img");
    std::fs::File::create(&src)
        .unwrap()
        .set_len(16 * MIB)
        .unwrap();
    image::fill(&src, 0, 16, 31);
    let run = |e: Engine, id: &'static str, parent: Option<&'static str>| {
        let src = src.clone();
        async move {
            e.backup(BackupOptions {
                backup_id: id.into(),
                source: src,
                parent: parent.map(Into::into),
                progress: std::sync::Arc::default(),
                cancel: std::sync::Arc::default(),
            })
            .await
            .unwrap();
        }
    };
    run(e.clone(), "old", None).await;
    let location = e.store().location();
    for wrong in [Encryption::Key(k2.clone()), Encryption::Off] {
        let err = Engine::open(store().await, EngineOptions::default(), &wrong)
            .await
            .unwrap_err();
        assert!(
            matches!(err, vbs_engine::EngineError::Key(_)) && err.to_string().contains(&location),
            "{err}"
        );
    }
    e.rotate_master_key(&k2).await.unwrap();
    assert!(
        Engine::open(
            store().await,
            EngineOptions::default(),
            &Encryption::Key(k1)
        )
        .await
        .is_err()
    );
    let e2 = Engine::open(
        store().await,
        EngineOptions::default(),
        &Encryption::Key(k2),
    )
    .await
    .unwrap();
    image::mutate(&src, 16 * MIB, 40, 32);
    run(e2.clone(), "new", Some("old")).await;
    for id in ["old", "new"] {
        let target = dir.join(format!("{id}.out"));
        e2.restore(RestoreOptions {
            backup_id: id.into(),
            target: target.clone(),
            progress: std::sync::Arc::default(),
            cancel: std::sync::Arc::default(),
        })
        .await
        .unwrap();
        assert!(e2.verify(id).await.unwrap().is_intact());
    }
    image::assert_same(&dir.join("new.out"), &src, 16 * MIB);
    // One bit of every pack, written back through the store: authentication fails.
    let s = store().await;
    for o in s.list("packs/").await.unwrap() {
        let mut bytes = s.get(&o.key).await.unwrap().to_vec();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x01;
        s.put(&o.key, bytes.into()).await.unwrap();
    }
    let report = e2.verify("old").await.unwrap();
    assert!(
        !report.is_intact() && report.damage.iter().any(|d| d.contains("authentication")),
        "{report:?}"
    );
}

fn tempfile_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("vbs-keys-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[tokio::test]
async fn keys_on_swift() {
    keys_on(Repo::remote(false).await).await;
}

#[tokio::test]
async fn keys_on_s3() {
    keys_on(Repo::remote(true).await).await;
}

fn start_fails(dir: &Path, config: &str) -> String {
    let path = dir.join("fails.toml");
    std::fs::write(&path, config).unwrap();
    let out = vbs()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success(), "the service started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn the_key_file_and_a_wrong_or_missing_key() {
    let mut s = serve("");
    let (_, _, bid) = random_backup(&s, 23).await;
    let key_file = s.dir().join("repository.key");
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let log = std::fs::read_to_string(s.dir().join("server.log")).unwrap();
    assert!(log.contains("back this file up"), "{log}");
    assert!(
        !log.contains(std::fs::read_to_string(&key_file).unwrap().trim()),
        "the key is logged"
    );
    s.kill();
    let dir = s.dir().to_path_buf();
    let repo = dir.join("repository").to_string_lossy().into_owned();

    // Another key: refused, naming the repository.
    let other = dir.join("other.key");
    std::fs::write(&other, format!("{}\n", "ab".repeat(32))).unwrap();
    let err = start_fails(
        &dir,
        &format!("repository_key_file = \"{}\"\n", other.display()),
    );
    assert!(
        err.contains(&repo) && err.contains("does not open"),
        "{err}"
    );
    // No key: refused, naming the repository and where the key was looked for.
    let good = std::fs::read(&key_file).unwrap();
    std::fs::remove_file(&key_file).unwrap();
    let err = start_fails(&dir, "");
    assert!(
        err.contains(&repo) && err.contains("master key is missing"),
        "{err}"
    );
    // A malformed key names its file, never its content.
    std::fs::write(&key_file, "not hex at all\n").unwrap();
    let err = start_fails(&dir, "");
    assert!(
        err.contains("repository.key") && err.contains("64 hex digits"),
        "{err}"
    );
    std::fs::write(&key_file, good).unwrap();
    s.restart();
    let restored = restore(&s, &bid).await;
    assert!(restored.exists());
}

#[tokio::test]
async fn verify_reports_an_altered_pack_and_rotation_keeps_every_backup() {
    let mut s = serve("");
    let (data, vid, old) = random_backup(&s, 24).await;
    let verify = |dir: &Path, extra: &[&str]| {
        vbs()
            .args(["admin", "verify", "--data-dir"])
            .arg(dir)
            .args(extra)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    };
    let out = verify(s.dir(), &[&old]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Rotate: a new key file, the data untouched; the service restarts on the new key.
    s.kill();
    let dir = s.dir().to_path_buf();
    let new_key = dir.join("new.key");
    let packs_before = std::fs::read_dir(dir.join("repository/packs"))
        .unwrap()
        .count();
    let out = vbs()
        .args(["admin", "rotate-key", "--generate", "--new-key-file"])
        .arg(&new_key)
        .args(["--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("rewrapped"));
    assert_eq!(
        std::fs::read_dir(dir.join("repository/packs"))
            .unwrap()
            .count(),
        packs_before
    );
    // The old key no longer opens it.
    let err = start_fails(&dir, "");
    assert!(err.contains("does not open"), "{err}");
    std::fs::rename(&new_key, dir.join("repository.key")).unwrap();
    s.restart();
    let r = restore(&s, &old).await;
    assert!(head(&r, data.len()) == data);
    image::mutate(
        &dir.join("volumes").join(format!("{vid}.img")),
        8 * MIB,
        50,
        25,
    );
    let new = backup(&s, &vid, Some(true)).await;
    let r = restore(&s, &new).await;
    image::assert_same(&r, &dir.join("volumes").join(format!("{vid}.img")), 1 << 30);

    // One bit of every pack: verify names the backup and says why.
    let packs: Vec<PathBuf> = std::fs::read_dir(dir.join("repository/packs"))
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .map(|f| f.unwrap().path())
        .collect();
    for pack in packs {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&pack)
            .unwrap();
        let at = f.metadata().unwrap().len() / 2;
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, at).unwrap();
        f.write_all_at(&[b[0] ^ 0x04], at).unwrap();
    }
    let out = verify(&dir, &[&old]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    let report: Value =
        serde_json::from_str(text.lines().last().unwrap_or("null")).unwrap_or(Value::Null);
    assert_eq!(report["damaged"], json!([old]), "{text}");
    assert!(text.contains("authentication"), "{text}");
}
