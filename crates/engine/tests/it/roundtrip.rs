//! Backup, restore, incremental, delete, gc, verify.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use vbs_engine::{BackupOptions, BackupStats, Engine, EngineError, EngineOptions, RestoreOptions};
use vbs_repository::Store;

use crate::image::{self, MIB};

struct Repo {
    dir: tempfile::TempDir,
    engine: Engine,
}

impl Repo {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::local(&dir.path().join("repo")).unwrap();
        Self {
            engine: Engine::new(store, EngineOptions::default()),
            dir,
        }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    async fn backup(&self, id: &str, src: &Path, parent: Option<&str>) -> BackupStats {
        self.engine
            .backup(BackupOptions {
                backup_id: id.into(),
                source: src.into(),
                parent: parent.map(Into::into),
                progress: Arc::default(),
                cancel: Arc::default(),
            })
            .await
            .unwrap()
    }
    async fn restore(&self, id: &str, target: &Path) -> Result<(), EngineError> {
        self.engine
            .restore(RestoreOptions {
                backup_id: id.into(),
                target: target.into(),
                progress: Arc::default(),
                cancel: Arc::default(),
            })
            .await
            .map(|_| ())
    }
    fn packs(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let root = self.path("repo/packs");
        for d in std::fs::read_dir(root).unwrap() {
            for f in std::fs::read_dir(d.unwrap().path()).unwrap() {
                out.push(f.unwrap().path());
            }
        }
        out.sort();
        out
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_content_restores_byte_identical_with_holes_kept() {
    let repo = Repo::new();
    let src = repo.path("vol.img");
    image::create(&src, 48, 7);
    let stats = repo.backup("b1", &src, None).await;
    assert_eq!(stats.volume_size, 48 * MIB);
    assert!(
        stats.blocks_repeated > 0,
        "shifted copies must dedup: {stats:?}"
    );
    assert!(
        stats.bytes_read < 48 * MIB,
        "holes must not be read: {stats:?}"
    );

    let out = repo.path("restored.img");
    repo.restore("b1", &out).await.unwrap();
    assert!(image::same(&src, &out));
    assert!(
        image::allocated(&out) <= image::allocated(&src),
        "holes and zeros restore as holes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_odd_sized_volume_and_an_empty_one_round_trip() {
    let repo = Repo::new();
    let src = repo.path("odd.img");
    std::fs::write(&src, b"not a multiple of four kibibytes").unwrap();
    repo.backup("odd", &src, None).await;
    let out = repo.path("odd.out");
    repo.restore("odd", &out).await.unwrap();
    assert!(image::same(&src, &out));

    let empty = repo.path("empty.img");
    std::fs::File::create(&empty)
        .unwrap()
        .set_len(8 * MIB)
        .unwrap();
    let stats = repo.backup("empty", &empty, None).await;
    assert_eq!(stats.blocks, 0);
    let out = repo.path("empty.out");
    repo.restore("empty", &out).await.unwrap();
    assert!(image::same(&empty, &out));
    assert_eq!(image::allocated(&out), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incremental_stores_only_the_changed_blocks() {
    let repo = Repo::new();
    let src = repo.path("vol.img");
    image::create(&src, 32, 11);
    let full = repo.backup("full", &src, None).await;
    let before = std::fs::read(&src).unwrap();
    image::mutate(&src, 40, 12);
    let incr = repo.backup("incr", &src, Some("full")).await;
    assert!(incr.blocks_new <= 40, "{incr:?}");
    assert!(incr.bytes_stored <= 40 * 4096 + 4096, "{incr:?}");
    assert!(incr.blocks_from_parent > 0);
    assert!(full.bytes_stored > 10 * incr.bytes_stored);

    let out = repo.path("incr.out");
    repo.restore("incr", &out).await.unwrap();
    assert!(image::same(&src, &out));
    let out = repo.path("full.out");
    repo.restore("full", &out).await.unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restoring_onto_an_existing_volume_overwrites_it_entirely() {
    let repo = Repo::new();
    let src = repo.path("vol.img");
    image::create(&src, 16, 21);
    repo.backup("b", &src, None).await;
    // A target full of other data, larger than the backup: the backup's range must
    // match exactly, zeros included.
    let target = repo.path("existing.img");
    let f = std::fs::File::create(&target).unwrap();
    f.set_len(20 * MIB).unwrap();
    f.write_all_at(&vec![0xAB; 20 * MIB as usize], 0).unwrap();
    repo.restore("b", &target).await.unwrap();
    let got = std::fs::read(&target).unwrap();
    assert_eq!(&got[..16 * MIB as usize], &std::fs::read(&src).unwrap()[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_old_backup_and_collecting_leaves_newer_ones_restorable() {
    let repo = Repo::new();
    let src = repo.path("vol.img");
    image::create(&src, 24, 31);
    repo.backup("b1", &src, None).await;
    image::mutate(&src, 30, 32);
    repo.backup("b2", &src, Some("b1")).await;
    image::mutate(&src, 30, 33);
    repo.backup("b3", &src, Some("b2")).await;
    let expected = std::fs::read(&src).unwrap();

    // b3 reads from b2's and b1's packs; deleting both must keep all of them.
    repo.engine.delete_backup("b2").await.unwrap();
    let gc = repo.engine.gc().await.unwrap();
    assert_eq!(gc.manifests, 2);
    let out = repo.path("b3.out");
    repo.restore("b3", &out).await.unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), expected);

    repo.engine.delete_backup("b1").await.unwrap();
    repo.engine.gc().await.unwrap();
    repo.restore("b3", &out).await.unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), expected);
    assert!(matches!(
        repo.restore("b1", &repo.path("gone")).await,
        Err(EngineError::NotFound(_))
    ));

    // An unrelated full backup's packs go as soon as it does.
    let other = repo.path("other.img");
    image::create(&other, 8, 34);
    repo.backup("x", &other, None).await;
    let before = repo.packs().len();
    repo.engine.delete_backup("x").await.unwrap();
    let gc = repo.engine.gc().await.unwrap();
    assert!(
        gc.packs_deleted >= 1 && repo.packs().len() < before,
        "{gc:?}"
    );
    repo.restore("b3", &out).await.unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), expected);

    repo.engine.delete_backup("b3").await.unwrap();
    repo.engine.gc().await.unwrap();
    assert!(repo.packs().is_empty(), "nothing referenced, nothing kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_fails_the_restore_and_verify_names_the_backup() {
    let repo = Repo::new();
    let src = repo.path("vol.img");
    image::create(&src, 16, 41);
    repo.backup("good", &src, None).await;
    let other = repo.path("other.img");
    image::create(&other, 8, 42);
    repo.backup("other", &other, None).await;
    assert!(repo.engine.verify("good").await.unwrap().is_intact());

    // Flip one byte in the middle of every pack of "good" (the first packs written).
    let packs = repo.packs();
    let manifest = repo.engine.manifest("good").await.unwrap();
    for p in &packs {
        let name = p.file_name().unwrap().to_str().unwrap();
        if manifest.header.packs.iter().any(|x| x == name) {
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(p)
                .unwrap();
            let mut b = [0u8; 1];
            let at = f.metadata().unwrap().len() / 3;
            f.read_exact_at(&mut b, at).unwrap();
            f.write_all_at(&[b[0] ^ 0x10], at).unwrap();
        }
    }
    let err = repo.restore("good", &repo.path("out")).await.unwrap_err();
    assert!(matches!(err, EngineError::Corrupt(_)), "{err}");
    let report = repo.engine.verify("good").await.unwrap();
    assert!(!report.is_intact());
    assert!(report.blocks_damaged > 0);
    assert!(report.damage[0].contains("pack"), "{report:?}");
    assert!(repo.engine.verify("other").await.unwrap().is_intact());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_backup_leaves_no_manifest() {
    let repo = Repo::new();
    let src = repo.path("vol.img");
    image::create(&src, 16, 51);
    let cancel: vbs_engine::Cancel = Arc::default();
    cancel.store(true, Ordering::Relaxed);
    let err = repo
        .engine
        .backup(BackupOptions {
            backup_id: "c".into(),
            source: src.clone(),
            parent: None,
            progress: Arc::default(),
            cancel,
        })
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Cancelled), "{err}");
    assert!(!repo.engine.has_backup("c").await.unwrap());
}
