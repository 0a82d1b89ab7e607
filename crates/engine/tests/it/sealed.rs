//! Encrypted repositories: nothing of a volume is readable in the store, a wrong or
//! missing key is a clear error naming the repository, altered packs and manifests fail
//! authentication, rotating the master key keeps every backup readable, two writers
//! never share a pack key, and an old plaintext repository keeps working.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use vbs_engine::{
    BackupOptions, Encryption, Engine, EngineError, EngineOptions, MasterKey, RestoreOptions,
};
use vbs_repository::Store;

use crate::image::{self, MIB, Rng};

struct Repo {
    dir: tempfile::TempDir,
}

impl Repo {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn store(&self) -> Store {
        Store::local(&self.path("repo")).unwrap()
    }
    async fn open(&self, encryption: &Encryption) -> Result<Engine, EngineError> {
        Engine::open(self.store(), EngineOptions::default(), encryption).await
    }
    /// Every stored object's bytes.
    fn objects(&self) -> Vec<(PathBuf, Vec<u8>)> {
        fn walk(dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    walk(&p, out);
                } else {
                    let bytes = std::fs::read(&p).unwrap();
                    out.push((p, bytes));
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.path("repo"), &mut out);
        out
    }
    fn packs(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = self
            .objects()
            .into_iter()
            .map(|(p, _)| p)
            .filter(|p| p.to_string_lossy().contains("/packs/"))
            .collect();
        v.sort();
        v
    }
}

async fn backup(e: &Engine, id: &str, src: &Path, parent: Option<&str>) {
    e.backup(BackupOptions {
        backup_id: id.into(),
        source: src.into(),
        parent: parent.map(Into::into),
        progress: Arc::default(),
        cancel: Arc::default(),
    })
    .await
    .unwrap();
}

async fn restore(e: &Engine, id: &str, target: &Path) -> Result<(), EngineError> {
    e.restore(RestoreOptions {
        backup_id: id.into(),
        target: target.into(),
        progress: Arc::default(),
        cancel: Arc::default(),
    })
    .await
    .map(|_| ())
}

/// A volume of 8 MiB of random data (incompressible: stored as it is unless sealed).
fn random_volume(path: &Path, seed: u64) -> Vec<u8> {
    let data = Rng::new(seed).bytes(8 * MIB as usize);
    std::fs::write(path, &data).unwrap();
    data
}

/// How many of the volume's 64-byte slices (one per 4 KiB) some stored object holds:
/// every position of every object is looked up by its first 8 bytes, then compared.
fn slices_found(repo: &Repo, data: &[u8]) -> usize {
    let mut by_prefix: HashMap<u64, Vec<&[u8]>> = HashMap::new();
    for c in data.chunks(4096) {
        let prefix = u64::from_le_bytes(c[..8].try_into().unwrap());
        by_prefix.entry(prefix).or_default().push(&c[..64]);
    }
    let mut found: HashSet<&[u8]> = HashSet::new();
    for (_, bytes) in repo.objects() {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_repository_round_trips_and_shows_nothing_of_the_volume() {
    let repo = Repo::new();
    let key = MasterKey::generate();
    let e = repo.open(&Encryption::Key(key.clone())).await.unwrap();
    assert!(e.is_encrypted());
    assert!(repo.path("repo/keys.json").exists());
    let src = repo.path("vol.img");
    let data = random_volume(&src, 1);
    backup(&e, "b1", &src, None).await;
    // Every kind of content too, with an incremental on top.
    let mixed = repo.path("mixed.img");
    image::create(&mixed, 24, 3);
    backup(&e, "m1", &mixed, None).await;
    image::mutate(&mixed, 40, 4);
    backup(&e, "m2", &mixed, Some("m1")).await;
    for (id, src) in [("b1", &src), ("m2", &mixed)] {
        let out = repo.path(&format!("{id}.out"));
        restore(&e, id, &out).await.unwrap();
        assert!(image::same(src, &out), "{id} restores byte-identical");
        assert!(e.verify(id).await.unwrap().is_intact());
    }
    assert_eq!(
        slices_found(&repo, &data),
        0,
        "no slice of the volume is stored"
    );

    // The same volume in a plaintext repository: its slices are all there.
    let plain = Repo::new();
    let p = plain.open(&Encryption::Off).await.unwrap();
    assert!(!p.is_encrypted());
    let src = plain.path("vol.img");
    let data = random_volume(&src, 1);
    backup(&p, "b1", &src, None).await;
    assert_eq!(slices_found(&plain, &data), data.len() / 4096);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_or_missing_key_is_a_clear_error() {
    let repo = Repo::new();
    let key = MasterKey::generate();
    let e = repo.open(&Encryption::Key(key.clone())).await.unwrap();
    let src = repo.path("vol.img");
    random_volume(&src, 2);
    backup(&e, "b1", &src, None).await;
    let location = repo.store().location();

    let other = MasterKey::generate();
    let err = repo
        .open(&Encryption::Key(other.clone()))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, EngineError::Key(_)), "{err:?}");
    assert!(
        msg.contains(&location)
            && msg.contains(&other.fingerprint())
            && msg.contains(&key.fingerprint()),
        "{msg}"
    );
    let err = repo.open(&Encryption::Off).await.unwrap_err();
    assert!(matches!(err, EngineError::Key(_)), "{err:?}");
    assert!(err.to_string().contains(&location) && err.to_string().contains("no master key"));
    // A plaintext engine over it reads nothing as garbage: the manifest is refused.
    let blind = Engine::new(repo.store(), EngineOptions::default());
    let err = restore(&blind, "b1", &repo.path("out")).await.unwrap_err();
    assert!(matches!(err, EngineError::Key(_)), "{err:?}");
    assert!(err.to_string().contains("b1"), "{err}");
    assert!(!repo.path("out").exists() || std::fs::metadata(repo.path("out")).unwrap().len() == 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn altered_packs_and_manifests_fail_authentication() {
    let repo = Repo::new();
    let e = repo
        .open(&Encryption::Key(MasterKey::generate()))
        .await
        .unwrap();
    let src = repo.path("vol.img");
    image::create(&src, 16, 5);
    backup(&e, "good", &src, None).await;
    let other = repo.path("other.img");
    image::create(&other, 8, 6);
    let before = repo.packs();
    backup(&e, "other", &other, None).await;

    // One bit of one of "good"'s packs.
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&before[0])
        .unwrap();
    let at = f.metadata().unwrap().len() / 2;
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0x01], at).unwrap();
    let err = restore(&e, "good", &repo.path("out")).await.unwrap_err();
    assert!(matches!(err, EngineError::Corrupt(_)), "{err:?}");
    assert!(
        err.to_string().contains("authentication") && err.to_string().contains("backup good"),
        "{err}"
    );
    let report = e.verify("good").await.unwrap();
    assert!(
        !report.is_intact() && report.damage[0].contains("authentication"),
        "{report:?}"
    );
    assert!(e.verify("other").await.unwrap().is_intact());

    // One bit of "other"'s manifest.
    let m = repo.path("repo/manifests/other");
    let mut bytes = std::fs::read(&m).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&m, &bytes).unwrap();
    let err = e.manifest("other").await.unwrap_err();
    assert!(matches!(err, EngineError::Corrupt(_)), "{err:?}");
    assert!(err.to_string().contains("manifest other"), "{err}");
    let report = e.verify("other").await.unwrap();
    assert!(!report.is_intact(), "{report:?}");
    // A manifest moved under another backup's name does not open either.
    std::fs::copy(
        repo.path("repo/manifests/good"),
        repo.path("repo/manifests/moved"),
    )
    .unwrap();
    assert!(matches!(
        e.manifest("moved").await,
        Err(EngineError::Corrupt(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_master_key_keeps_old_and_new_backups() {
    let repo = Repo::new();
    let (k1, k2) = (MasterKey::generate(), MasterKey::generate());
    let e = repo.open(&Encryption::Key(k1.clone())).await.unwrap();
    let src = repo.path("vol.img");
    image::create(&src, 16, 7);
    backup(&e, "old", &src, None).await;
    let packs_before = repo.packs();
    e.rotate_master_key(&k2).await.unwrap();
    assert_eq!(repo.packs(), packs_before, "no data rewritten");

    assert!(matches!(
        repo.open(&Encryption::Key(k1)).await,
        Err(EngineError::Key(_))
    ));
    let e2 = repo.open(&Encryption::Key(k2)).await.unwrap();
    image::mutate(&src, 30, 8);
    backup(&e2, "new", &src, Some("old")).await;
    restore(&e2, "new", &repo.path("new.out")).await.unwrap();
    assert!(image::same(&src, &repo.path("new.out")));
    restore(&e2, "old", &repo.path("old.out")).await.unwrap();
    assert!(e2.verify("old").await.unwrap().is_intact());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_at_once_never_share_a_pack_key() {
    let repo = Repo::new();
    let key = MasterKey::generate();
    let first = repo.open(&Encryption::Key(key.clone())).await.unwrap();
    // A second node: its own engine over the same repository and key.
    let second = repo.open(&Encryption::Key(key)).await.unwrap();
    let src = repo.path("vol.img");
    let data = random_volume(&src, 9);
    let (a, b) = tokio::join!(
        backup(&first, "a", &src, None),
        backup(&second, "b", &src, None)
    );
    let ((), ()) = (a, b);
    let ma = first.manifest("a").await.unwrap();
    let mb = second.manifest("b").await.unwrap();
    let mut ids: Vec<&String> = ma.header.packs.iter().chain(&mb.header.packs).collect();
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "every pack has its own id, so its own key");
    // The same plaintext sealed twice: no stored 64 bytes in common between the two
    // backups' packs beyond the packs' magic.
    let sealed = |ids: &[String]| -> Vec<u8> {
        ids.iter()
            .flat_map(|id| {
                std::fs::read(repo.path(&format!("repo/packs/{}/{id}", &id[..2]))).unwrap()
            })
            .collect()
    };
    let (pa, pb) = (sealed(&ma.header.packs), sealed(&mb.header.packs));
    let probe: HashSet<&[u8]> = pa[64..].chunks(64 * 1024).map(|c| &c[..64]).collect();
    assert!(!pb.windows(64).any(|w| probe.contains(w)));
    for (id, out) in [("a", "a.out"), ("b", "b.out")] {
        restore(&first, id, &repo.path(out)).await.unwrap();
        assert_eq!(std::fs::read(repo.path(out)).unwrap(), data);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_plaintext_repository_keeps_working() {
    let repo = Repo::new();
    let old = Engine::new(repo.store(), EngineOptions::default());
    let src = repo.path("vol.img");
    image::create(&src, 16, 10);
    backup(&old, "b1", &src, None).await;
    // The upgraded service comes with a key: the repository stays plaintext.
    let e = repo
        .open(&Encryption::Key(MasterKey::generate()))
        .await
        .unwrap();
    assert!(!e.is_encrypted());
    assert!(!repo.path("repo/keys.json").exists());
    restore(&e, "b1", &repo.path("b1.out")).await.unwrap();
    assert!(image::same(&src, &repo.path("b1.out")));
    image::mutate(&src, 20, 11);
    backup(&e, "b2", &src, Some("b1")).await;
    restore(&e, "b2", &repo.path("b2.out")).await.unwrap();
    assert!(image::same(&src, &repo.path("b2.out")));
}

/// Regression (fault campaign, issue 16): a write of `keys.json` torn while a new
/// repository was made left a prefix of it, and every later open failed on it as
/// corrupt: the repository could never be used. With no data in the repository yet,
/// the damaged keys are made again; with data, damaged keys stay an error.
#[tokio::test]
async fn torn_keys_object_of_an_empty_repository_bricked_it() {
    let repo = Repo::new();
    let master = MasterKey::generate();
    let key = Encryption::Key(master.clone());
    repo.open(&key).await.unwrap();
    let keys = repo.path("repo").join(vbs_engine::crypt::KEYS_KEY);
    let whole = std::fs::read(&keys).unwrap();
    std::fs::write(&keys, &whole[..whole.len() / 2]).unwrap();
    let e = repo.open(&key).await.unwrap();
    assert!(e.is_encrypted());
    let src = repo.path("src.img");
    image::create(&src, 4, 1);
    backup(&e, "b1", &src, None).await;
    // Opened again, the new keys read the backup.
    let e = repo.open(&key).await.unwrap();
    restore(&e, "b1", &repo.path("out.img")).await.unwrap();
    assert!(image::same(&src, &repo.path("out.img")));
    // Another master key is still refused, and damaged keys of a repository with data
    // are an error, never replaced.
    let other = Encryption::Key(MasterKey::generate());
    assert!(matches!(repo.open(&other).await, Err(EngineError::Key(_))));
    let whole = std::fs::read(&keys).unwrap();
    std::fs::write(&keys, &whole[..whole.len() / 2]).unwrap();
    assert!(matches!(
        repo.open(&key).await,
        Err(EngineError::Corrupt(_))
    ));
}

/// Regression (cluster fault campaign, issue 16): a worker read the whole keys object of
/// a new repository truncated, took it for stored damage and made the keys again, while
/// the other worker went on sealing with the old ones; every backup of that worker was
/// then unreadable ("authentication failed") to all others. Keys are made again only
/// when every read gives the same damaged bytes.
#[tokio::test]
async fn truncated_read_of_whole_keys_made_them_again_under_another_node() {
    let repo = Repo::new();
    let master = MasterKey::generate();
    let key = Encryption::Key(master.clone());
    let first = repo.open(&key).await.unwrap();
    let keys = repo.path("repo").join(vbs_engine::crypt::KEYS_KEY);
    let whole = std::fs::read(&keys).unwrap();
    // Every read truncated: the open fails, and the keys object stays as it is.
    let truncating = Store::local_with_faults(&repo.path("repo"), "seed=3,truncate=1").unwrap();
    let opened = Engine::open(truncating, EngineOptions::default(), &key).await;
    assert!(
        matches!(opened, Err(EngineError::Corrupt(_))),
        "{:?}",
        opened.err()
    );
    assert_eq!(
        std::fs::read(&keys).unwrap(),
        whole,
        "the keys were made again"
    );
    // Some reads truncated: the open gets the keys of the first node.
    let flaky = Store::local_with_faults(&repo.path("repo"), "seed=5,truncate=0.5").unwrap();
    let second = Engine::open(flaky, EngineOptions::default(), &key)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&keys).unwrap(), whole);
    let src = repo.path("src.img");
    image::create(&src, 4, 1);
    backup(&first, "b1", &src, None).await;
    backup(&second, "b2", &src, None).await;
    let plain = repo.open(&key).await.unwrap();
    for b in ["b1", "b2"] {
        let out = repo.path(&format!("{b}.out"));
        restore(&plain, b, &out).await.unwrap();
        assert!(image::same(&src, &out));
    }
}
