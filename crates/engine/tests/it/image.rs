//! Seeded test volumes: holes, zeros written as data, random and text-like bytes, and
//! copies at 4 KiB-aligned shifts (the shapes of ../shared/bench/mkvolume.py, small).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

pub const MIB: u64 = 1 << 20;

/// xorshift64*: deterministic bytes without a dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    pub fn text(&mut self, n: usize) -> Vec<u8> {
        const WORDS: &[&str] = &[
            "the", "volume", "backup", "of", "a", "block", "device", "is", "kept", "safe\n",
        ];
        let mut out = Vec::with_capacity(n + 16);
        while out.len() < n {
            out.extend_from_slice(WORDS[self.below(WORDS.len() as u64) as usize].as_bytes());
            out.push(b' ');
        }
        out.truncate(n);
        out
    }
}

/// A sparse image of `mib` MiB: per MiB, a hole, written zeros, random, text, or a copy
/// of an earlier data MiB shifted by a 4 KiB multiple. Returns the file.
pub fn create(path: &Path, mib: u64, seed: u64) -> File {
    let mut rng = Rng::new(seed);
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .unwrap();
    f.set_len(mib * MIB).unwrap();
    let mut sources: Vec<u64> = Vec::new();
    for i in 0..mib {
        let off = i * MIB;
        match rng.below(5) {
            0 => {} // hole
            1 => f.write_all_at(&vec![0u8; MIB as usize], off).unwrap(),
            2 => {
                f.write_all_at(&rng.bytes(MIB as usize), off).unwrap();
                sources.push(off);
            }
            3 => {
                f.write_all_at(&rng.text(MIB as usize), off).unwrap();
                sources.push(off);
            }
            _ => {
                if let Some(&src) = sources.get(rng.below(sources.len().max(1) as u64) as usize) {
                    let shift = (1 + rng.below(255)) * 4096;
                    let mut buf = vec![0u8; (MIB - shift) as usize];
                    f.read_exact_at(&mut buf, src).unwrap();
                    f.write_all_at(&buf, off + shift).unwrap();
                }
            }
        }
    }
    // An odd tail, so the last block is partial when the size is not block-aligned.
    f.sync_all().unwrap();
    f
}

/// Overwrites `pages` random 4 KiB pages with random bytes, as a running guest would.
pub fn mutate(path: &Path, pages: u64, seed: u64) {
    let mut rng = Rng::new(seed);
    let f = OpenOptions::new().write(true).open(path).unwrap();
    let n = f.metadata().unwrap().len() / 4096;
    for _ in 0..pages {
        let p = rng.below(n);
        f.write_all_at(&rng.bytes(4096), p * 4096).unwrap();
    }
    f.sync_all().unwrap();
}

/// Bytes allocated on disk.
pub fn allocated(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().blocks() * 512
}

pub fn same(a: &Path, b: &Path) -> bool {
    std::fs::read(a).unwrap() == std::fs::read(b).unwrap()
}
