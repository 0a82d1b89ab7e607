//! The disk as the crash tests see it: the repository's manifests and packs, and the
//! volume images; how far an operation had got when the server was killed; and the
//! moments on disk a kill can wait for.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Op;

/// What is on disk: manifests, packs, and the volume images with their allocated bytes.
#[derive(Debug, Default)]
pub(super) struct Disk {
    pub manifests: BTreeSet<String>,
    pub packs: BTreeSet<String>,
    pub images: BTreeMap<String, u64>,
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().unwrap().is_dir() {
            files(&e.path(), out);
        } else {
            out.push(e.path());
        }
    }
}

fn names(dir: &Path) -> BTreeSet<String> {
    let mut out = Vec::new();
    files(dir, &mut out);
    out.iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

impl Disk {
    pub fn read(data_dir: &Path) -> Self {
        let repo = data_dir.join("repository");
        let mut images = Vec::new();
        files(&data_dir.join("volumes"), &mut images);
        Self {
            manifests: names(&repo.join("manifests")),
            packs: names(&repo.join("packs")),
            images: images
                .iter()
                .filter_map(|p| {
                    // A volume being deleted may be gone between the listing and here.
                    let m = std::fs::metadata(p).ok()?;
                    let id = p.file_stem()?.to_string_lossy().into_owned();
                    Some((id, m.blocks() * 512))
                })
                .collect(),
        }
    }

    /// How far `op` had got when the server was killed (for the report): compares the
    /// disk at the kill with the disk before the request.
    pub fn phase(&self, before: &Disk, op: Op, target: Option<&str>, restored: u64) -> String {
        match op {
            Op::Full | Op::Incremental => {
                let packs = self.packs.difference(&before.packs).count();
                if self.manifests.len() > before.manifests.len() {
                    "manifest written".into()
                } else if packs > 0 {
                    "packs written, no manifest".into()
                } else {
                    "nothing stored yet".into()
                }
            }
            Op::Restore => {
                let new = self
                    .images
                    .iter()
                    .find(|(id, _)| !before.images.contains_key(*id));
                match new {
                    None => "no volume yet".into(),
                    Some((_, 0)) => "volume made, nothing written".into(),
                    Some((_, n)) if *n * 20 >= restored * 19 => "volume written".into(),
                    Some(_) => "volume partly written".into(),
                }
            }
            Op::Delete => {
                if self.manifests.contains(target.unwrap()) {
                    "manifest kept".into()
                } else if self.packs.len() < before.packs.len() {
                    "manifest removed, GC swept".into()
                } else {
                    "manifest removed, GC not swept yet".into()
                }
            }
        }
    }
}

/// When a kill lands: a seeded delay after the request, or a seeded delay after a
/// moment seen on disk (so that short windows, like a GC sweep, are hit for sure).
#[derive(Debug, Clone, Copy)]
pub(super) enum Trigger {
    After(Duration),
    /// The n-th new pack of a backup is stored.
    Pack(usize, Duration),
    /// A backup's manifest is stored (its row is not yet `available`, or just so).
    Manifest(Duration),
    /// A restore has written this many bytes to its new volume.
    Written(u64, Duration),
    /// The deleted backup's manifest is gone: GC is about to sweep, or sweeping.
    ManifestGone(Duration),
}

impl Trigger {
    /// Whether the moment has come, the disk being `now` (and `before` the request).
    pub fn happened(self, now: &Disk, before: &Disk, target: Option<&str>) -> bool {
        match self {
            Self::After(_) => true,
            Self::Pack(k, _) => now.packs.difference(&before.packs).count() >= k,
            Self::Manifest(_) => now.manifests.len() > before.manifests.len(),
            Self::Written(n, _) => now
                .images
                .iter()
                .any(|(id, a)| !before.images.contains_key(id) && *a >= n),
            Self::ManifestGone(_) => !now.manifests.contains(target.unwrap()),
        }
    }

    pub fn delay(self) -> Duration {
        match self {
            Self::After(d)
            | Self::Pack(_, d)
            | Self::Manifest(d)
            | Self::Written(_, d)
            | Self::ManifestGone(d) => d,
        }
    }
}
