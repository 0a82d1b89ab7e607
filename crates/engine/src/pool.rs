//! The volume pool: sparse raw image files under the data directory.
//!
//! A volume created through the API is `<data_dir>/volumes/<volume_id>.img`, a snapshot
//! `<data_dir>/snapshots/<snapshot_id>.img`. New images are sparse: `set_len` to the
//! size, no byte written. Copies (snapshots, volumes created from a snapshot) are a
//! reflink clone (`FICLONE`) where the filesystem shares extents, otherwise a sparse
//! copy that reads only the source's data extents (`SEEK_DATA`/`SEEK_HOLE`) and skips
//! all-zero 4 KiB blocks, so holes stay holes.
//!
//! Every function here is synchronous and may block on disk I/O for a long time (a copy
//! reads the whole volume): async callers run them inside `spawn_blocking`.
//!
//! Durability: a function that creates a file writes it under a temporary name in the
//! same directory, `fsync`s it, renames it into place and `fsync`s the directory, so
//! when it returns `Ok` both the bytes and the name survive a crash, and a crash before
//! that leaves at most a `.tmp` file, never a partial image under the final name.
//! [`extend`] `fsync`s the file before it returns; [`remove`] `fsync`s the directory.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::{Path, PathBuf};

use rustix::fs::SeekFrom;
use rustix::io::Errno;

/// One GiB: volume sizes are whole GiB.
pub const GIB: u64 = 1 << 30;

/// The unit in which a copy looks for zeros: an all-zero block becomes a hole.
const BLOCK: usize = 4096;

/// How much a copy reads at a time.
const CHUNK: usize = 1 << 20;

/// What can go wrong in the pool, in terms callers branch on.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// The path does not exist.
    #[error("{0}: no such file or device")]
    NotFound(PathBuf),
    /// The path is relative; the pool only takes absolute paths from outside.
    #[error("{0}: not an absolute path")]
    NotAbsolute(PathBuf),
    /// The path is neither a regular file nor a block device.
    #[error("{0}: not a regular file or block device")]
    Unsupported(PathBuf),
    /// The target name is taken; the pool never overwrites an image.
    #[error("{0}: already exists")]
    AlreadyExists(PathBuf),
    /// The request makes no sense for this image (shrinking, resizing a device, ...).
    #[error("{0}")]
    Invalid(String),
    /// The operating system refused; a retry may help if the cause was transient.
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl PoolError {
    fn io(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> Self {
        let path = path.to_owned();
        move |source| match source.kind() {
            io::ErrorKind::NotFound => PoolError::NotFound(path),
            _ => PoolError::Io { what, path, source },
        }
    }
}

/// How a copy was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyMethod {
    /// The filesystem shares the source's extents (instant, no space used).
    Reflink,
    /// Data extents were read and non-zero blocks written; the rest are holes.
    Sparse {
        /// Bytes written to the copy.
        written: u64,
    },
}

/// The two directories of image files. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Pool {
    volumes: PathBuf,
    snapshots: PathBuf,
}

impl Pool {
    /// The pool inside a data directory; creates `volumes/` and `snapshots/` if needed.
    pub fn open(data_dir: &Path) -> Result<Self, PoolError> {
        let pool = Self {
            volumes: data_dir.join("volumes"),
            snapshots: data_dir.join("snapshots"),
        };
        for dir in [&pool.volumes, &pool.snapshots] {
            std::fs::create_dir_all(dir).map_err(PoolError::io("creating", dir))?;
        }
        Ok(pool)
    }

    /// Where the pool keeps a volume's image (whether or not it exists).
    pub fn volume_path(&self, volume_id: &str) -> PathBuf {
        self.volumes.join(format!("{}.img", file_stem(volume_id)))
    }

    /// Where the pool keeps a snapshot's image (whether or not it exists).
    pub fn snapshot_path(&self, snapshot_id: &str) -> PathBuf {
        self.snapshots
            .join(format!("{}.img", file_stem(snapshot_id)))
    }

    /// Whether `path` is one of the pool's own images (as opposed to a managed file).
    pub fn owns(&self, path: &Path) -> bool {
        path.parent()
            .is_some_and(|d| d == self.volumes || d == self.snapshots)
    }

    /// Creates a volume's sparse image of `size` bytes. Durable when it returns.
    pub fn create_volume(&self, volume_id: &str, size: u64) -> Result<PathBuf, PoolError> {
        let path = self.volume_path(volume_id);
        create_sparse(&path, size)?;
        Ok(path)
    }

    /// Copies `src` (a volume's image, a managed file or a block device) to a
    /// snapshot's image. Durable when it returns. The copy is point-in-time only if
    /// nobody writes `src` meanwhile (a reflink is atomic; a sparse copy is not).
    pub fn create_snapshot(
        &self,
        snapshot_id: &str,
        src: &Path,
    ) -> Result<(PathBuf, CopyMethod), PoolError> {
        let path = self.snapshot_path(snapshot_id);
        let method = copy_image(src, &path, 0)?;
        Ok((path, method))
    }

    /// Creates a volume's image from `src` (a snapshot's or another volume's image),
    /// grown to `size` bytes if the source is smaller. Durable when it returns.
    pub fn create_volume_from(
        &self,
        volume_id: &str,
        src: &Path,
        size: u64,
    ) -> Result<(PathBuf, CopyMethod), PoolError> {
        let path = self.volume_path(volume_id);
        let method = copy_image(src, &path, size)?;
        Ok((path, method))
    }
}

/// Ids become file names: anything but `[A-Za-z0-9_-]` is replaced, so an id can never
/// name a path outside the pool.
fn file_stem(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// `size` bytes rounded up to whole GiB (a volume's size in the API).
pub fn round_up_gib(size: u64) -> u64 {
    size.div_ceil(GIB)
}

/// The size in bytes of a regular file (its length) or a block device (by seeking to
/// its end). Anything else is [`PoolError::Unsupported`]; a relative path is
/// [`PoolError::NotAbsolute`].
pub fn probe_size(path: &Path) -> Result<u64, PoolError> {
    if !path.is_absolute() {
        return Err(PoolError::NotAbsolute(path.to_owned()));
    }
    let meta = std::fs::metadata(path).map_err(PoolError::io("reading", path))?;
    let kind = meta.file_type();
    if kind.is_file() {
        Ok(meta.len())
    } else if kind.is_block_device() {
        let f = File::open(path).map_err(PoolError::io("opening", path))?;
        device_size(&f, path)
    } else {
        Err(PoolError::Unsupported(path.to_owned()))
    }
}

fn device_size(f: &File, path: &Path) -> Result<u64, PoolError> {
    rustix::fs::seek(f, SeekFrom::End(0))
        .map_err(|e| PoolError::io("seeking to the end of", path)(e.into()))
}

/// Whether `path` is a block device (false if it cannot be read).
pub fn is_block_device(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_block_device())
}

/// Grows a regular image file to `size` bytes (the new space is a hole) and `fsync`s
/// it. Shrinking is refused, and so is a block device (its size is the device's).
pub fn extend(path: &Path, size: u64) -> Result<(), PoolError> {
    let meta = std::fs::metadata(path).map_err(PoolError::io("reading", path))?;
    if !meta.file_type().is_file() {
        return Err(PoolError::Invalid(format!(
            "{} is not a regular file; only image files can be extended",
            path.display()
        )));
    }
    if meta.len() > size {
        return Err(PoolError::Invalid(format!(
            "{} is {} bytes, larger than the requested {size}",
            path.display(),
            meta.len()
        )));
    }
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(PoolError::io("opening", path))?;
    f.set_len(size).map_err(PoolError::io("resizing", path))?;
    f.sync_all().map_err(PoolError::io("syncing", path))
}

/// Removes an image (and any temporary file a crash left beside it) and `fsync`s its
/// directory. Removing what is not there is not an error (a retried delete succeeds).
pub fn remove(path: &Path) -> Result<(), PoolError> {
    let _ = std::fs::remove_file(temp_path(path));
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(PoolError::io("removing", path)(e)),
    }
    sync_parent(path)
}

/// Creates a sparse file of `size` bytes at `path`, durably, never overwriting.
fn create_sparse(path: &Path, size: u64) -> Result<(), PoolError> {
    let tmp = temp_path(path);
    let f = create_temp(&tmp)?;
    let result = f
        .set_len(size)
        .map_err(PoolError::io("resizing", &tmp))
        .and_then(|()| f.sync_all().map_err(PoolError::io("syncing", &tmp)));
    drop(f);
    finish(result, &tmp, path)
}

/// Copies `src` to `dst` (reflink or sparse copy), at least `min_size` bytes long,
/// durably, never overwriting.
fn copy_image(src: &Path, dst: &Path, min_size: u64) -> Result<CopyMethod, PoolError> {
    let input = File::open(src).map_err(PoolError::io("opening", src))?;
    let meta = input.metadata().map_err(PoolError::io("reading", src))?;
    let (len, regular) = if meta.file_type().is_file() {
        (meta.len(), true)
    } else if meta.file_type().is_block_device() {
        (device_size(&input, src)?, false)
    } else {
        return Err(PoolError::Unsupported(src.to_owned()));
    };
    let tmp = temp_path(dst);
    let out = create_temp(&tmp)?;
    let result = (|| {
        let method = if regular && rustix::fs::ioctl_ficlone(&out, &input).is_ok() {
            CopyMethod::Reflink
        } else {
            // A failed clone leaves the target empty; start over from a clean file.
            out.set_len(0).map_err(PoolError::io("truncating", &tmp))?;
            out.set_len(len).map_err(PoolError::io("resizing", &tmp))?;
            let written = sparse_copy(&input, src, &out, &tmp, len)?;
            CopyMethod::Sparse { written }
        };
        if min_size > len {
            out.set_len(min_size)
                .map_err(PoolError::io("resizing", &tmp))?;
        }
        out.sync_all().map_err(PoolError::io("syncing", &tmp))?;
        Ok(method)
    })();
    drop(out);
    let method = result.inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })?;
    finish(Ok(()), &tmp, dst)?;
    Ok(method)
}

/// Copies the data extents of `input` into `out` (already `len` bytes of hole),
/// skipping all-zero blocks. Returns the bytes written.
fn sparse_copy(
    input: &File,
    src: &Path,
    out: &File,
    dst: &Path,
    len: u64,
) -> Result<u64, PoolError> {
    let mut buf = vec![0u8; CHUNK];
    let mut written = 0;
    let mut pos = 0;
    while pos < len {
        let data = match rustix::fs::seek(input, SeekFrom::Data(pos)) {
            Ok(d) => d,
            // No data at or after `pos`: the rest is a hole.
            Err(Errno::NXIO) => break,
            // No SEEK_DATA here: everything counts as data.
            Err(Errno::INVAL | Errno::OPNOTSUPP) => pos,
            Err(e) => return Err(PoolError::io("seeking data in", src)(e.into())),
        };
        if data >= len {
            break;
        }
        let hole = match rustix::fs::seek(input, SeekFrom::Hole(data)) {
            Ok(h) => h.min(len),
            Err(Errno::NXIO | Errno::INVAL | Errno::OPNOTSUPP) => len,
            Err(e) => return Err(PoolError::io("seeking a hole in", src)(e.into())),
        };
        written += copy_range(input, src, out, dst, data, hole, &mut buf)?;
        pos = hole.max(data + 1);
    }
    Ok(written)
}

/// Copies `[start, end)` block by block, writing runs of non-zero blocks.
fn copy_range(
    input: &File,
    src: &Path,
    out: &File,
    dst: &Path,
    start: u64,
    end: u64,
    buf: &mut [u8],
) -> Result<u64, PoolError> {
    let mut written = 0;
    let mut at = start;
    while at < end {
        let want = usize::try_from(end - at).map_or(buf.len(), |n| n.min(buf.len()));
        let chunk = &mut buf[..want];
        let got = read_full_at(input, chunk, at).map_err(PoolError::io("reading", src))?;
        if got == 0 {
            break; // the source shrank under us; the rest stays a hole
        }
        let chunk = &chunk[..got];
        // Blocks are aligned to the file, not to the chunk, so holes line up.
        let mut i = 0;
        while i < chunk.len() {
            let block_end = |j: usize| {
                let abs = at + j as u64;
                let next = (abs / BLOCK as u64 + 1) * BLOCK as u64;
                ((next - at) as usize).min(chunk.len())
            };
            let e = block_end(i);
            if is_zero(&chunk[i..e]) {
                i = e;
                continue;
            }
            // A run of non-zero blocks, written in one call.
            let run_start = i;
            let mut run_end = e;
            while run_end < chunk.len() {
                let next = block_end(run_end);
                if is_zero(&chunk[run_end..next]) {
                    break;
                }
                run_end = next;
            }
            out.write_all_at(&chunk[run_start..run_end], at + run_start as u64)
                .map_err(PoolError::io("writing", dst))?;
            written += (run_end - run_start) as u64;
            i = run_end;
        }
        at += got as u64;
    }
    Ok(written)
}

fn read_full_at(f: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read_at(&mut buf[n..], offset + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Written as a fold (no early exit) so that it vectorizes.
fn is_zero(block: &[u8]) -> bool {
    block.iter().fold(0u8, |acc, &b| acc | b) == 0
}

/// `.<name>.tmp` beside the target.
fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

fn create_temp(tmp: &Path) -> Result<File, PoolError> {
    // A stale temp file is debris of a crash: start over.
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(tmp)
        .map_err(PoolError::io("creating", tmp))
}

/// Renames `tmp` to `path` if `result` is `Ok` and the name is free, then `fsync`s the
/// directory; otherwise removes `tmp` and returns the error.
fn finish(result: Result<(), PoolError>, tmp: &Path, path: &Path) -> Result<(), PoolError> {
    let result = result.and_then(|()| {
        if path.exists() {
            return Err(PoolError::AlreadyExists(path.to_owned()));
        }
        std::fs::rename(tmp, path).map_err(PoolError::io("renaming", tmp))?;
        sync_parent(path)
    });
    if result.is_err() {
        let _ = std::fs::remove_file(tmp);
    }
    result
}

fn sync_parent(path: &Path) -> Result<(), PoolError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(PoolError::io("syncing directory", dir))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn allocated(path: &Path) -> u64 {
        std::fs::metadata(path).unwrap().blocks() * 512
    }

    #[test]
    fn new_volumes_are_sparse_and_sized() {
        let dir = tempfile::tempdir().unwrap();
        let pool = Pool::open(dir.path()).unwrap();
        let path = pool.create_volume("v1", 3 * GIB).unwrap();
        assert_eq!(path, dir.path().join("volumes/v1.img"));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 3 * GIB);
        assert_eq!(allocated(&path), 0);
        assert!(matches!(
            pool.create_volume("v1", GIB),
            Err(PoolError::AlreadyExists(_))
        ));
        assert!(!dir.path().join("volumes/.v1.img.tmp").exists());
        extend(&path, 4 * GIB).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 4 * GIB);
        assert!(matches!(extend(&path, GIB), Err(PoolError::Invalid(_))));
        remove(&path).unwrap();
        remove(&path).unwrap();
        assert!(!path.exists());
    }

    #[test]
    fn copies_keep_data_and_holes() {
        let dir = tempfile::tempdir().unwrap();
        let pool = Pool::open(dir.path()).unwrap();
        let src = pool.create_volume("v", 64 << 20).unwrap();
        let f = OpenOptions::new().write(true).open(&src).unwrap();
        f.write_all_at(b"hello", 4096 * 3 + 10).unwrap();
        f.write_all_at(&[7u8; 8192], 10 << 20).unwrap();
        // Data that is all zeros: written, but must come back as a hole.
        f.write_all_at(&vec![0u8; 65536], 20 << 20).unwrap();
        f.write_all_at(b"end", (64 << 20) - 3).unwrap();
        drop(f);
        let (snap, method) = pool.create_snapshot("s", &src).unwrap();
        assert_eq!(std::fs::read(&snap).unwrap(), std::fs::read(&src).unwrap());
        if let CopyMethod::Sparse { written } = method {
            // "hello", two blocks of 7s and "end"; the zero block became a hole.
            assert_eq!(written, 4 * 4096);
            assert!(allocated(&snap) <= 16 * 4096, "{}", allocated(&snap));
        }
        let (clone, _) = pool.create_volume_from("w", &snap, 128 << 20).unwrap();
        let data = std::fs::read(&clone).unwrap();
        assert_eq!(data.len(), 128 << 20);
        assert_eq!(&data[4096 * 3 + 10..4096 * 3 + 15], b"hello");
        assert_eq!(&data[(64 << 20) - 3..64 << 20], b"end");
        assert!(data[64 << 20..].iter().all(|&b| b == 0));
    }

    #[test]
    fn probe_sizes_and_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("raw");
        std::fs::write(&f, vec![1u8; 5000]).unwrap();
        assert_eq!(probe_size(&f).unwrap(), 5000);
        assert_eq!(round_up_gib(5000), 1);
        assert_eq!(round_up_gib(GIB), 1);
        assert_eq!(round_up_gib(GIB + 1), 2);
        assert!(matches!(
            probe_size(Path::new("relative/x")),
            Err(PoolError::NotAbsolute(_))
        ));
        assert!(matches!(
            probe_size(&dir.path().join("missing")),
            Err(PoolError::NotFound(_))
        ));
        assert!(matches!(
            probe_size(dir.path()),
            Err(PoolError::Unsupported(_))
        ));
        assert_eq!(file_stem("../x/y"), "___x_y");
    }
}
