//! Reading a volume: its size and where its data is. Holes are found with
//! `SEEK_DATA`/`SEEK_HOLE` so they cost no reads; block devices and filesystems that do not
//! report holes are read whole (all-zero blocks are still skipped, after the read).

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::ops::Range;
use std::path::Path;

use rustix::fs::SeekFrom as RawSeek;
use rustix::io::Errno;

use crate::format::BLOCK;

/// The size of a volume file or block device in bytes.
pub fn volume_size(path: &Path) -> std::io::Result<u64> {
    let mut f = File::open(path)?;
    let meta = f.metadata()?;
    if meta.is_file() {
        return Ok(meta.len());
    }
    // Block devices report 0 as their metadata length; their end is their size.
    f.seek(SeekFrom::End(0))
}

/// The byte ranges of `f` (of `size` bytes) that may hold data, widened to whole blocks,
/// in order.
pub fn data_extents(f: &File, size: u64) -> std::io::Result<Vec<Range<u64>>> {
    let mut out: Vec<Range<u64>> = Vec::new();
    let mut pos = 0u64;
    while pos < size {
        let start = match rustix::fs::seek(f, RawSeek::Data(pos)) {
            Ok(s) => s,
            // No data after `pos`.
            Err(Errno::NXIO) => break,
            // No hole support here: everything is data.
            Err(Errno::INVAL | Errno::OPNOTSUPP) => {
                out.push(align(size, pos..size));
                break;
            }
            Err(e) => return Err(e.into()),
        };
        if start >= size {
            break;
        }
        let end = match rustix::fs::seek(f, RawSeek::Hole(start)) {
            Ok(e) => e.min(size),
            Err(Errno::NXIO | Errno::INVAL | Errno::OPNOTSUPP) => size,
            Err(e) => return Err(e.into()),
        };
        let r = align(size, start..end);
        match out.last_mut() {
            Some(last) if last.end >= r.start => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
        pos = end.max(start + 1);
    }
    Ok(out)
}

fn align(size: u64, r: Range<u64>) -> Range<u64> {
    let b = BLOCK as u64;
    (r.start / b * b)..(r.end.div_ceil(b) * b).min(size.div_ceil(b) * b)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::os::unix::fs::FileExt;

    use super::*;

    #[test]
    fn holes_are_skipped_and_extents_are_block_aligned() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.img");
        let f = File::create(&path).unwrap();
        f.set_len(64 << 20).unwrap();
        f.write_all_at(b"x", 8 << 20).unwrap();
        f.write_all_at(&[7u8; 10_000], 40 << 20).unwrap();
        f.sync_all().unwrap();
        let f = File::open(&path).unwrap();
        let ext = data_extents(&f, 64 << 20).unwrap();
        assert!(!ext.is_empty());
        let covered: u64 = ext.iter().map(|r| r.end - r.start).sum();
        assert!(covered < 2 << 20, "holes must not be read: {ext:?}");
        for r in &ext {
            assert_eq!(r.start % BLOCK as u64, 0);
            assert_eq!(r.end % BLOCK as u64, 0);
        }
        assert!(ext.iter().any(|r| r.contains(&(8 << 20))));
        assert!(ext.iter().any(|r| r.contains(&((40 << 20) + 9_999))));
        assert_eq!(volume_size(&path).unwrap(), 64 << 20);
    }

    #[test]
    fn an_empty_sparse_file_has_no_extents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.img");
        File::create(&path).unwrap().set_len(1 << 30).unwrap();
        let f = File::open(&path).unwrap();
        assert!(data_extents(&f, 1 << 30).unwrap().is_empty());
    }
}
