//! Backup: a pipeline of threads over bounded channels.
//!
//! ```text
//! reader (SEEK_DATA, 1 MiB reads) -> hashers (zero test, BLAKE3 per 4 KiB)
//!   -> dedup (in volume order: known block? reference it : append to a frame)
//!   -> compressors (zstd per frame) -> packer + uploads (async, io_depth in flight)
//! ```
//! Packs are durable before the manifest is written, and the manifest is written last:
//! a backup without a manifest does not exist, whatever packs it left behind.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, bounded};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::format::{
    BLOCK, FRAME_BLOCKS, FRAME_ZSTD, FrameRef, Hash, Manifest, ManifestHeader, PACK_TARGET,
    PackBuilder, Run, is_zero, manifest_key, pack_key,
};
use crate::{Engine, EngineError, Progress, check_cancel, source, unless_cancelled};

/// What to back up.
#[derive(Debug, Clone)]
pub struct BackupOptions {
    pub backup_id: String,
    /// A raw image file or a block device; nobody may write to it meanwhile (the service
    /// backs up in-use volumes from a snapshot).
    pub source: PathBuf,
    /// A stored backup whose blocks this one references instead of storing them again
    /// (the parent of an incremental).
    pub parent: Option<String>,
    pub progress: Arc<Progress>,
    pub cancel: Arc<AtomicBool>,
}

/// What a backup read and stored.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct BackupStats {
    pub id: String,
    pub volume_size: u64,
    /// Bytes read from the volume (holes are not read).
    pub bytes_read: u64,
    /// Non-zero blocks in the volume.
    pub blocks: u64,
    /// Blocks stored by this backup.
    pub blocks_new: u64,
    /// Blocks found in the parent.
    pub blocks_from_parent: u64,
    /// Blocks repeated within this backup.
    pub blocks_repeated: u64,
    /// Compressed bytes of the new frames.
    pub bytes_stored: u64,
    pub packs: u64,
    pub manifest_bytes: u64,
    /// Objects this backup wrote (packs and its manifest).
    pub object_count: u64,
    pub seconds: f64,
}

const SEGMENT: usize = 1 << 20;
/// Bytes of sealed packs being uploaded at once, at most: `io_depth` uploads, fewer when
/// packs are large (memory stays bounded whatever the store's depth).
const UPLOAD_BUDGET: usize = 32 << 20;
/// Every buffer in the pipeline (segments, raw and compressed frames) has room for a
/// frame and zstd's worst-case growth.
const BUF_CAP: usize = FRAME_BLOCKS * BLOCK + (64 << 10);
/// A pack's buffer: it closes past [`PACK_TARGET`], so it holds at most one more frame
/// and its footer (a buffer that had to grow would double).
const PACK_CAP: usize = PACK_TARGET + BUF_CAP + (64 << 10);

/// Recycled buffers: page-faulting in fresh 1 MiB buffers cost more system time than
/// the reads themselves.
#[derive(Clone)]
struct Pool {
    tx: Sender<Vec<u8>>,
    rx: Receiver<Vec<u8>>,
}

impl Pool {
    fn new(n: usize) -> Self {
        let (tx, rx) = bounded(n);
        Self { tx, rx }
    }
    fn get(&self) -> Vec<u8> {
        match self.rx.try_recv() {
            Ok(mut v) => {
                v.clear();
                v
            }
            Err(_) => Vec::with_capacity(BUF_CAP),
        }
    }
    /// A buffer of exactly `len` bytes whose content is unspecified (old data).
    fn get_sized(&self, len: usize) -> Vec<u8> {
        let mut v = self
            .rx
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(BUF_CAP));
        v.resize(len.max(v.len()), 0);
        v.truncate(len);
        v
    }
    fn put(&self, v: Vec<u8>) {
        if v.capacity() >= BUF_CAP {
            let _ = self.tx.try_send(v);
        }
    }
}

struct Segment {
    seq: u64,
    offset: u64,
    data: Vec<u8>,
}

struct Hashed {
    seq: u64,
    offset: u64,
    data: Vec<u8>,
    hashes: Vec<Option<Hash>>,
}

struct RawFrame {
    id: u32,
    data: Vec<u8>,
}

struct StoredFrame {
    id: u32,
    data: Vec<u8>,
    raw_len: u32,
    flags: u32,
}

#[derive(Clone, Copy)]
enum Loc {
    Parent { frame: u32, slot: u32 },
    New { frame: u32, slot: u32 },
}

/// The dedup thread's result: the block map of the new manifest, with frames still to
/// be placed.
struct DedupOutcome {
    /// (volume block, frame in the new table, slot), in volume order.
    blocks: Vec<(u64, u32, u32)>,
    /// New table index -> parent frame index, for frames taken from the parent.
    from_parent: Vec<(u32, u32)>,
    /// New table index -> the hashes of the new frame's slots.
    new_hashes: HashMap<u32, Vec<Hash>>,
    frames_total: u32,
    stats: BackupStats,
}

impl Engine {
    /// Backs up a volume. On `Ok`, the backup's packs and manifest are durable.
    pub async fn backup(&self, opts: BackupOptions) -> Result<BackupStats, EngineError> {
        let started = Instant::now();
        let parent = match &opts.parent {
            Some(p) => Some(Arc::new(self.manifest(p).await?)),
            None => None,
        };
        let format = if self.keys().is_some() {
            crate::SEALED_FORMAT
        } else {
            1
        };
        // Block ids of one format only compare with their own kind.
        if let Some(p) = &parent
            && (p.header.format >= crate::SEALED_FORMAT) != (format >= crate::SEALED_FORMAT)
        {
            return Err(EngineError::Invalid(format!(
                "parent backup {} is of another encryption than its repository",
                p.header.backup_id
            )));
        }
        let size = source::volume_size(&opts.source).map_err(EngineError::io(format!(
            "reading {}",
            opts.source.display()
        )))?;
        opts.progress.set_total(size);

        let (frame_tx, mut frame_rx) = mpsc::channel::<StoredFrame>(8);
        let pool = Pool::new(32);
        let cpu = {
            let opts = opts.clone();
            let parent = parent.clone();
            let engine = self.options.clone();
            let pool = pool.clone();
            let keys = self.keys().cloned();
            tokio::task::spawn_blocking(move || {
                run_pipeline(
                    &opts,
                    size,
                    parent.as_deref(),
                    &engine,
                    keys.as_deref(),
                    &pool,
                    &frame_tx,
                )
            })
        };

        // Packer and uploads, here on the async side.
        let mut new_packs: Vec<String> = Vec::new();
        // New frame id -> (new pack index, offset, len, raw_len, flags)
        let mut placed: HashMap<u32, FrameRef> = HashMap::new();
        let mut pack = self.new_pack();
        let mut pack_frames: Vec<(u32, u64, u32, u32, u32)> = Vec::new();
        let mut uploads: JoinSet<Result<(), EngineError>> = JoinSet::new();
        let upload_depth = self
            .options
            .io_depth
            .clamp(1, (UPLOAD_BUDGET / PACK_TARGET).max(1));
        let mut bytes_stored = 0u64;
        let mut upload_error = None;
        while let Some(f) = frame_rx.recv().await {
            let (off, len) = pack.push(&f.data, f.raw_len, f.flags);
            bytes_stored += u64::from(len);
            pack_frames.push((f.id, off, len, f.raw_len, f.flags));
            pool.put(f.data);
            if pack.len() >= PACK_TARGET {
                let full = std::mem::replace(&mut pack, self.new_pack());
                self.seal_pack(
                    full,
                    &mut pack_frames,
                    &mut new_packs,
                    &mut placed,
                    &mut uploads,
                );
                while uploads.len() >= upload_depth {
                    if let Err(e) = join_one(&mut uploads).await {
                        upload_error = Some(e);
                        break;
                    }
                }
                if upload_error.is_some() {
                    break;
                }
            }
        }
        // Dropping the receiver stops the pipeline if an upload failed.
        drop(frame_rx);
        let outcome = cpu
            .await
            .map_err(|e| EngineError::Invalid(format!("backup pipeline: {e}")))?;
        if let Some(e) = upload_error {
            uploads.shutdown().await;
            return Err(e);
        }
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => {
                uploads.shutdown().await;
                return Err(e);
            }
        };
        if !pack.is_empty() {
            self.seal_pack(
                pack,
                &mut pack_frames,
                &mut new_packs,
                &mut placed,
                &mut uploads,
            );
        }
        while !uploads.is_empty() {
            join_one(&mut uploads).await?;
        }
        check_cancel(&opts.cancel)?;

        let mut stats = outcome.stats.clone();
        let manifest = assemble(
            &opts,
            size,
            format,
            parent.as_deref(),
            outcome,
            new_packs,
            &placed,
        )?;
        stats.packs = placed
            .values()
            .map(|f| f.pack)
            .collect::<std::collections::HashSet<_>>()
            .len() as u64;
        let encoded = self.encode_manifest(manifest).await?;
        stats.manifest_bytes = encoded.len() as u64;
        let key = manifest_key(&opts.backup_id);
        unless_cancelled(&opts.cancel, async {
            Ok(self.store.put(&key, Bytes::from(encoded)).await?)
        })
        .await?;
        stats.id.clone_from(&opts.backup_id);
        stats.volume_size = size;
        stats.bytes_stored = bytes_stored;
        stats.object_count = stats.packs + 1;
        stats.seconds = started.elapsed().as_secs_f64();
        opts.progress.set_done(size);
        tracing::info!(backup = %opts.backup_id, ?stats, "backup stored");
        Ok(stats)
    }

    /// An empty pack, sealed in an encrypted repository.
    fn new_pack(&self) -> PackBuilder {
        match self.keys() {
            Some(k) => PackBuilder::sealed(PACK_CAP, k),
            None => PackBuilder::with_capacity(PACK_CAP),
        }
    }

    fn seal_pack(
        &self,
        pack: PackBuilder,
        frames: &mut Vec<(u32, u64, u32, u32, u32)>,
        new_packs: &mut Vec<String>,
        placed: &mut HashMap<u32, FrameRef>,
        uploads: &mut JoinSet<Result<(), EngineError>>,
    ) {
        let store = self.store.clone();
        let index = new_packs.len() as u32;
        // Hashing 16 MiB takes a few milliseconds; not worth a thread hop.
        let (id, bytes) = pack.finish();
        for (frame, offset, len, raw_len, flags) in frames.drain(..) {
            placed.insert(
                frame,
                FrameRef {
                    pack: index,
                    offset,
                    len,
                    raw_len,
                    flags,
                },
            );
        }
        let key = pack_key(&id);
        new_packs.push(id);
        uploads.spawn(async move {
            store.put(&key, Bytes::from(bytes)).await?;
            Ok(())
        });
    }
}

async fn join_one(set: &mut JoinSet<Result<(), EngineError>>) -> Result<(), EngineError> {
    match set.join_next().await {
        Some(Ok(r)) => r,
        Some(Err(e)) => Err(EngineError::Invalid(format!("upload task: {e}"))),
        None => Ok(()),
    }
}

/// Builds the manifest once every new frame has a place in a pack.
fn assemble(
    opts: &BackupOptions,
    size: u64,
    format: u32,
    parent: Option<&Manifest>,
    outcome: DedupOutcome,
    new_packs: Vec<String>,
    placed: &HashMap<u32, FrameRef>,
) -> Result<Manifest, EngineError> {
    let DedupOutcome {
        blocks,
        from_parent,
        mut new_hashes,
        frames_total,
        ..
    } = outcome;
    let mut packs = new_packs;
    let mut pack_index: HashMap<String, u32> = packs
        .iter()
        .enumerate()
        .map(|(i, p)| (p.clone(), i as u32))
        .collect();
    let mut frames: Vec<Option<FrameRef>> = vec![None; frames_total as usize];
    let mut slot_hashes: Vec<Option<Vec<Hash>>> = vec![None; frames_total as usize];
    for (id, f) in placed {
        frames[*id as usize] = Some(*f);
        slot_hashes[*id as usize] = new_hashes.remove(id);
    }
    if let Some(parent) = parent {
        let bases = parent.slot_bases();
        for (new, old) in from_parent {
            let mut f = parent.frames[old as usize];
            let base = bases[old as usize];
            slot_hashes[new as usize] =
                Some(parent.hashes[base..base + f.raw_len as usize / BLOCK].to_vec());
            let name = &parent.header.packs[f.pack as usize];
            let idx = *pack_index.entry(name.clone()).or_insert_with(|| {
                packs.push(name.clone());
                (packs.len() - 1) as u32
            });
            f.pack = idx;
            frames[new as usize] = Some(f);
        }
    }
    let frames = frames
        .into_iter()
        .enumerate()
        .map(|(i, f)| f.ok_or_else(|| EngineError::Invalid(format!("frame {i} was never stored"))))
        .collect::<Result<Vec<_>, _>>()?;
    let mut hashes = Vec::new();
    for (i, h) in slot_hashes.into_iter().enumerate() {
        let h = h.ok_or_else(|| EngineError::Invalid(format!("frame {i} has no hashes")))?;
        hashes.extend(h);
    }

    let mut runs: Vec<Run> = Vec::new();
    for (block, frame, slot) in blocks {
        if let Some(r) = runs.last_mut()
            && r.block + u64::from(r.count) == block
            && r.frame == frame
            && r.slot + r.count == slot
        {
            r.count += 1;
            continue;
        }
        runs.push(Run {
            block,
            count: 1,
            frame,
            slot,
        });
    }
    Ok(Manifest {
        header: ManifestHeader {
            format,
            backup_id: opts.backup_id.clone(),
            parent_id: opts.parent.clone(),
            volume_size: size,
            block_size: BLOCK as u32,
            packs,
        },
        frames,
        runs,
        hashes,
    })
}

/// Runs reader, hashers, dedup and compressors; returns when all frames are handed to
/// `out` or on the first error.
fn run_pipeline(
    opts: &BackupOptions,
    size: u64,
    parent: Option<&Manifest>,
    engine: &crate::EngineOptions,
    keys: Option<&crate::DataKeys>,
    pool: &Pool,
    out: &mpsc::Sender<StoredFrame>,
) -> Result<DedupOutcome, EngineError> {
    let file = File::open(&opts.source).map_err(EngineError::io(format!(
        "opening {}",
        opts.source.display()
    )))?;
    let extents = source::data_extents(&file, size).map_err(EngineError::io(format!(
        "mapping {}",
        opts.source.display()
    )))?;
    let first_error: Mutex<Option<EngineError>> = Mutex::new(None);
    let fail = |e: EngineError| {
        if let Ok(mut slot) = first_error.lock()
            && slot.is_none()
        {
            *slot = Some(e);
        }
    };
    let threads = engine.threads.max(1);
    let outcome = std::thread::scope(|s| {
        let (seg_tx, seg_rx) = bounded::<Segment>(2 * threads + 2);
        let (hashed_tx, hashed_rx) = bounded::<Hashed>(2 * threads + 2);
        let (raw_tx, raw_rx) = bounded::<RawFrame>(2 * threads + 2);

        s.spawn(|| {
            if let Err(e) = read_segments(&file, size, &extents, &opts.cancel, pool, &seg_tx) {
                fail(e);
            }
            drop(seg_tx);
        });
        for _ in 0..threads {
            let (rx, tx) = (seg_rx.clone(), hashed_tx.clone());
            s.spawn(move || hash_segments(&rx, &tx, keys));
        }
        drop((seg_rx, hashed_tx));
        for _ in 0..threads {
            let (rx, out) = (raw_rx.clone(), out.clone());
            let (level, hash_log) = (engine.zstd_level, engine.zstd_hash_log);
            let fail = &fail;
            s.spawn(move || {
                if let Err(e) = compress_frames(&rx, &out, level, hash_log, pool) {
                    fail(e);
                }
            });
        }
        drop(raw_rx);
        let outcome = dedup(&hashed_rx, &raw_tx, parent, &opts.progress, pool);
        drop(raw_tx);
        drop(hashed_rx);
        outcome
    });
    if let Some(e) = first_error.into_inner().ok().flatten() {
        return Err(e);
    }
    outcome
}

fn read_segments(
    file: &File,
    size: u64,
    extents: &[std::ops::Range<u64>],
    cancel: &AtomicBool,
    pool: &Pool,
    tx: &Sender<Segment>,
) -> Result<(), EngineError> {
    let mut seq = 0;
    for ext in extents {
        let mut off = ext.start;
        while off < ext.end {
            check_cancel(cancel)?;
            let len = (ext.end - off).min(SEGMENT as u64) as usize;
            // A recycled segment keeps its length: no need to zero what the read
            // overwrites.
            let mut data = pool.get_sized(len);
            // The last block of an odd-sized volume is read short and stays zero-padded.
            let avail = (size.saturating_sub(off) as usize).min(len);
            file.read_exact_at(&mut data[..avail], off)
                .map_err(EngineError::io(format!("reading the volume at {off}")))?;
            data[avail..].fill(0);
            if tx
                .send(Segment {
                    seq,
                    offset: off,
                    data,
                })
                .is_err()
            {
                return Ok(()); // downstream stopped; it reports why
            }
            seq += 1;
            off += len as u64;
        }
    }
    Ok(())
}

fn hash_segments(rx: &Receiver<Segment>, tx: &Sender<Hashed>, keys: Option<&crate::DataKeys>) {
    for seg in rx {
        let hashes = seg
            .data
            .chunks(BLOCK)
            .map(|b| {
                (!is_zero(b)).then(|| match keys {
                    Some(k) => k.block_id(b),
                    None => *blake3::hash(b).as_bytes(),
                })
            })
            .collect();
        let h = Hashed {
            seq: seg.seq,
            offset: seg.offset,
            data: seg.data,
            hashes,
        };
        if tx.send(h).is_err() {
            return;
        }
    }
}

fn compress_frames(
    rx: &Receiver<RawFrame>,
    out: &mpsc::Sender<StoredFrame>,
    level: i32,
    hash_log: Option<u32>,
    pool: &Pool,
) -> Result<(), EngineError> {
    let zstd_err = |e: std::io::Error| EngineError::Invalid(format!("zstd: {e}"));
    let mut z = zstd::bulk::Compressor::new(level).map_err(zstd_err)?;
    if let Some(h) = hash_log {
        z.set_parameter(zstd::stream::raw::CParameter::HashLog(h))
            .map_err(zstd_err)?;
    }

    for frame in rx {
        let raw_len = frame.data.len() as u32;
        // Random data is stored as it is without asking zstd (a quarter of the benchmark
        // image: about 6 % of a full backup's CPU). Incompressible frames stay raw:
        // restoring them costs a copy, not a decode.
        let (data, flags) = if looks_incompressible(&frame.data) {
            (frame.data, 0)
        } else {
            let mut packed = pool.get();
            z.compress_to_buffer(&frame.data[..], &mut packed)
                .map_err(zstd_err)?;
            if packed.len() < frame.data.len() - frame.data.len() / 32 {
                pool.put(frame.data);
                (packed, FRAME_ZSTD)
            } else {
                pool.put(packed);
                (frame.data, 0)
            }
        };
        let stored = StoredFrame {
            id: frame.id,
            data,
            raw_len,
            flags,
        };
        if out.blocking_send(stored).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// In volume order: decides for each block whether it is known (parent or earlier in
/// this backup) or new, and packs new blocks into frames.
fn dedup(
    rx: &Receiver<Hashed>,
    raw_tx: &Sender<RawFrame>,
    parent: Option<&Manifest>,
    progress: &Progress,
    pool: &Pool,
) -> Result<DedupOutcome, EngineError> {
    let mut known: HashMap<Hash, Loc> = HashMap::new();
    if let Some(p) = parent {
        known.reserve(p.hashes.len());
        let bases = p.slot_bases();
        for (f, frame) in p.frames.iter().enumerate() {
            for slot in 0..frame.raw_len as usize / BLOCK {
                known
                    .entry(p.hashes[bases[f] + slot])
                    .or_insert(Loc::Parent {
                        frame: f as u32,
                        slot: slot as u32,
                    });
            }
        }
    }
    let mut new_hashes: HashMap<u32, Vec<Hash>> = HashMap::new();
    let mut parent_to_new: HashMap<u32, u32> = HashMap::new();
    let mut from_parent = Vec::new();
    let mut frames_total = 0u32;
    let mut frame = RawFrame {
        id: 0,
        data: pool.get(),
    };
    let mut frame_open = false;
    let mut blocks = Vec::new();
    let mut stats = BackupStats::default();
    let mut pending: BTreeMap<u64, Hashed> = BTreeMap::new();
    let mut next = 0u64;
    let mut stopped = false;
    'recv: for h in rx {
        pending.insert(h.seq, h);
        while let Some(seg) = pending.remove(&next) {
            next += 1;
            stats.bytes_read += seg.data.len() as u64;
            let first_block = seg.offset / BLOCK as u64;
            for (i, hash) in seg.hashes.iter().enumerate() {
                let Some(hash) = hash else { continue };
                stats.blocks += 1;
                let vol_block = first_block + i as u64;
                let (fr, slot) = match known.get(hash) {
                    Some(Loc::New { frame, slot }) => {
                        stats.blocks_repeated += 1;
                        (*frame, *slot)
                    }
                    Some(Loc::Parent { frame, slot }) => {
                        stats.blocks_from_parent += 1;
                        let f = *parent_to_new.entry(*frame).or_insert_with(|| {
                            from_parent.push((frames_total, *frame));
                            frames_total += 1;
                            frames_total - 1
                        });
                        (f, *slot)
                    }
                    None => {
                        stats.blocks_new += 1;
                        if !frame_open {
                            frame.id = frames_total;
                            frames_total += 1;
                            frame_open = true;
                        }
                        let slot = (frame.data.len() / BLOCK) as u32;
                        frame
                            .data
                            .extend_from_slice(&seg.data[i * BLOCK..(i + 1) * BLOCK]);
                        known.insert(
                            *hash,
                            Loc::New {
                                frame: frame.id,
                                slot,
                            },
                        );
                        new_hashes
                            .entry(frame.id)
                            .or_insert_with(|| Vec::with_capacity(FRAME_BLOCKS))
                            .push(*hash);
                        let loc = (frame.id, slot);
                        if frame.data.len() == FRAME_BLOCKS * BLOCK {
                            let full = std::mem::replace(
                                &mut frame,
                                RawFrame {
                                    id: 0,
                                    data: pool.get(),
                                },
                            );
                            frame_open = false;
                            if raw_tx.send(full).is_err() {
                                stopped = true;
                                break 'recv;
                            }
                        }
                        loc
                    }
                };
                blocks.push((vol_block, fr, slot));
            }
            progress.set_done(seg.offset + seg.data.len() as u64);
            pool.put(seg.data);
        }
    }
    if stopped {
        return Err(EngineError::Invalid("backup pipeline stopped".into()));
    }
    if !pending.is_empty() {
        return Err(EngineError::Invalid("backup reader stopped early".into()));
    }
    if frame_open && raw_tx.send(frame).is_err() {
        return Err(EngineError::Invalid("backup pipeline stopped".into()));
    }
    Ok(DedupOutcome {
        blocks,
        from_parent,
        new_hashes,
        frames_total,
        stats,
    })
}

/// Whether a frame's bytes look like random data: every one of 32 evenly spaced 1 KiB
/// windows has an order-0 entropy over 7.2 bits a byte (random bytes measure about 7.8
/// on 1 KiB, text about 4.5). Data between two windows (under 64 KiB, a thirty-second
/// of the frame) could not make the frame shrink by the 1/32 a stored frame must.
fn looks_incompressible(data: &[u8]) -> bool {
    const WINDOWS: usize = 32;
    const WINDOW: u16 = 1024;
    let window = usize::from(WINDOW);
    if data.len() < WINDOWS * window * 2 {
        return false;
    }
    let step = data.len() / WINDOWS;
    (0..WINDOWS).all(|w| {
        let mut hist = [0u16; 256];
        for &b in &data[w * step..w * step + window] {
            hist[b as usize] += 1;
        }
        let n = f64::from(WINDOW);
        let entropy: f64 = hist
            .iter()
            .filter(|&&c| c > 0)
            .map(|&c| {
                let p = f64::from(c) / n;
                -p * p.log2()
            })
            .sum();
        entropy > 7.2
    })
}

#[cfg(test)]
mod tests {
    use super::looks_incompressible;

    fn random(n: usize, mut x: u64) -> Vec<u8> {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    fn text(n: usize) -> Vec<u8> {
        let words = [
            "the ",
            "backup ",
            "volume ",
            "of ",
            "a ",
            "snapshot ",
            "restore ",
        ];
        words
            .iter()
            .cycle()
            .flat_map(|w| w.bytes())
            .take(n)
            .collect()
    }

    #[test]
    fn only_frames_random_throughout_skip_compression() {
        const FRAME: usize = 2 << 20;
        assert!(looks_incompressible(&random(FRAME, 7)));
        assert!(!looks_incompressible(&text(FRAME)));
        assert!(!looks_incompressible(&vec![0; FRAME]));
        // A text region of 128 KiB in random data is seen, wherever it is.
        for at in [0, 300 << 10, FRAME - (128 << 10)] {
            let mut mixed = random(FRAME, 9);
            mixed[at..at + (128 << 10)].copy_from_slice(&text(128 << 10));
            assert!(!looks_incompressible(&mixed), "text at {at}");
        }
        // Too short to sample: compressed as usual.
        assert!(!looks_incompressible(&random(32 << 10, 3)));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod cancel_tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    use crate::{EngineError, unless_cancelled};

    /// A run that lost its lease while its manifest's put hung (the Swift proxy killed
    /// under it) went on waiting, and its manifest could land after its lock expired
    /// and a sweep had removed the packs it names: the put is now dropped in flight.
    #[tokio::test]
    async fn manifest_put_outlived_the_lease_that_was_cancelled() {
        let cancel = Arc::new(AtomicBool::new(false));
        let flag = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            flag.store(true, Ordering::Relaxed);
        });
        let started = Instant::now();
        let hung = std::future::pending::<Result<(), EngineError>>();
        let r = unless_cancelled(&cancel, hung).await;
        assert!(matches!(r, Err(EngineError::Cancelled)), "{r:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
        // Work that ends first gives its result, however long it takes.
        let keep = AtomicBool::new(false);
        let slow = async {
            tokio::time::sleep(Duration::from_millis(120)).await;
            Ok::<_, EngineError>(7)
        };
        assert_eq!(unless_cancelled(&keep, slow).await.unwrap(), 7);
    }
}
