//! The virtual disk inside an image file, read-only: a raw file as it is (a fixed VHD without its
//! footer), a qcow2 through its L1 and L2 tables (QEMU's docs/interop/qcow2.txt). `kiln test`
//! reads the GPT and the ESP through it to tell the architecture of an image no manifest
//! describes. A VMDK is not read (its grains are deflated): the caller asks for `--arch`.
//!
//! Only what a standalone image holds is read: normal and zero clusters. A backing file, an
//! external data file, encryption, extended L2 entries or compressed clusters are refused with
//! an error (the caller then asks for `--arch`). Nothing is cached and nothing is read ahead: the
//! GPT and a FAT directory walk are a few hundred small reads, each mapped with two 8-byte reads.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// A window `[base, base + len)` of an image's virtual disk.
#[derive(Debug)]
pub struct DiskView {
    file: std::sync::Arc<File>,
    map: Map,
    base: u64,
    len: u64,
    pos: u64,
}

#[derive(Debug, Clone, Copy)]
enum Map {
    Raw,
    Qcow2 {
        cluster_bits: u32,
        l1_offset: u64,
        l1_size: u64,
    },
}

/// L1 and L2 entries: bits 9..=55 hold the host offset (docs/interop/qcow2.txt).
const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
const L2_COMPRESSED: u64 = 1 << 62;
/// qcow2 v3: the cluster reads as zeros.
const L2_ZERO: u64 = 1;
/// Incompatible feature bits: external data file (2) and extended L2 entries (4).
const INCOMPAT_UNREADABLE: u64 = (1 << 2) | (1 << 4);

fn bad(why: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.into())
}

pub(super) fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

pub(super) fn be64(b: &[u8], at: usize) -> u64 {
    (u64::from(be32(b, at)) << 32) | u64::from(be32(b, at + 4))
}

impl DiskView {
    /// The whole virtual disk of `path`, in the format [`super::image_file::probe`] finds.
    pub fn open(path: &Path) -> io::Result<DiskView> {
        let file = File::open(path)?;
        let file_len = file.metadata()?.len();
        use super::image_file::{self, ImageFormat};
        let info = image_file::probe(&file, file_len)?;
        match info.format {
            // A fixed VHD is the raw disk, then its footer.
            ImageFormat::Raw | ImageFormat::Vpc => {
                return Ok(DiskView {
                    file: std::sync::Arc::new(file),
                    map: Map::Raw,
                    base: 0,
                    len: info.disk_size,
                    pos: 0,
                })
            }
            ImageFormat::Vmdk => {
                return Err(bad(
                    "a streamOptimized VMDK (its grains are deflated; not read here)",
                ))
            }
            ImageFormat::Qcow2 => {}
        }
        let mut h = [0u8; 104];
        let n = read_full_at(&file, &mut h, 0)?;
        if n < 72 {
            return Err(bad("a truncated qcow2 header"));
        }
        let version = be32(&h, 4);
        if !(2..=3).contains(&version) {
            return Err(bad(format!("qcow2 version {version}")));
        }
        if be64(&h, 8) != 0 {
            return Err(bad("a qcow2 with a backing file"));
        }
        let cluster_bits = be32(&h, 20);
        if !(9..=21).contains(&cluster_bits) {
            return Err(bad(format!("qcow2 cluster_bits {cluster_bits}")));
        }
        if be32(&h, 32) != 0 {
            return Err(bad("an encrypted qcow2"));
        }
        if version == 3 && n >= 80 && be64(&h, 72) & INCOMPAT_UNREADABLE != 0 {
            return Err(bad(
                "a qcow2 with an external data file or extended L2 entries",
            ));
        }
        let size = be64(&h, 24);
        let l1_size = u64::from(be32(&h, 36));
        let l1_offset = be64(&h, 40);
        // Each L1 entry maps cluster_size / 8 clusters; the table must cover the disk.
        let per_l1 = 1u128 << (2 * cluster_bits - 3);
        if u128::from(l1_size) * per_l1 < u128::from(size) {
            return Err(bad("the qcow2's L1 table does not cover its disk"));
        }
        Ok(DiskView {
            file: std::sync::Arc::new(file),
            map: Map::Qcow2 {
                cluster_bits,
                l1_offset,
                l1_size,
            },
            base: 0,
            len: size,
            pos: 0,
        })
    }

    /// The virtual disk's size (of this window).
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes `[start, start + len)` of this view, as a view of their own (a partition).
    pub fn window(&self, start: u64, len: u64) -> io::Result<DiskView> {
        if start.checked_add(len).is_none_or(|e| e > self.len) {
            return Err(bad(format!(
                "bytes {start}+{len} lie outside the {}-byte disk",
                self.len
            )));
        }
        Ok(DiskView {
            file: self.file.clone(),
            map: self.map,
            base: self.base + start,
            len,
            pos: 0,
        })
    }

    /// Reads into `buf` at the view's `at` (within one cluster for a qcow2); returns how many
    /// bytes it read.
    fn read_at(&self, buf: &mut [u8], at: u64) -> io::Result<usize> {
        let n = (buf.len() as u64).min(self.len.saturating_sub(at)) as usize;
        if n == 0 {
            return Ok(0);
        }
        let v = self.base + at;
        match self.map {
            Map::Raw => {
                let got = read_full_at(&self.file, &mut buf[..n], v)?;
                // Past the end of a shorter file (sparse tail): zeros.
                buf[got..n].fill(0);
                Ok(n)
            }
            Map::Qcow2 {
                cluster_bits,
                l1_offset,
                l1_size,
            } => {
                let cluster = 1u64 << cluster_bits;
                let within = v & (cluster - 1);
                let n = n.min((cluster - within) as usize);
                let index = v >> cluster_bits;
                let l2_entries = cluster / 8;
                let l1_index = index / l2_entries;
                if l1_index >= l1_size {
                    return Err(bad("a read past the qcow2's L1 table"));
                }
                let at = l1_offset.checked_add(8 * l1_index);
                let l1e = self.entry(at.ok_or_else(|| bad("a qcow2 L1 table past 2^64"))?)?;
                let l2 = l1e & OFFSET_MASK;
                let host = match l2 {
                    0 => None,
                    _ => {
                        let l2e = self.entry(l2 + 8 * (index % l2_entries))?;
                        if l2e & L2_COMPRESSED != 0 {
                            return Err(bad(
                                "a compressed qcow2 cluster (not read here; `qemu-img convert` \
                                 makes an uncompressed copy)",
                            ));
                        }
                        match (l2e & L2_ZERO != 0, l2e & OFFSET_MASK) {
                            (true, _) | (false, 0) => None,
                            (false, off) => Some(off),
                        }
                    }
                };
                match host {
                    None => buf[..n].fill(0),
                    Some(off) => {
                        if read_full_at(&self.file, &mut buf[..n], off + within)? != n {
                            return Err(bad("a qcow2 cluster lies past the end of the file"));
                        }
                    }
                }
                Ok(n)
            }
        }
    }

    fn entry(&self, at: u64) -> io::Result<u64> {
        let mut b = [0u8; 8];
        if read_full_at(&self.file, &mut b, at)? != 8 {
            return Err(bad("a qcow2 table lies past the end of the file"));
        }
        Ok(u64::from_be_bytes(b))
    }
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
pub(super) fn read_full_at(f: &File, buf: &mut [u8], at: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match f.read_at(&mut buf[done..], at + done as u64) {
            Ok(0) => break,
            Ok(k) => done += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

impl Read for DiskView {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for DiskView {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let p = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = p.ok_or_else(|| bad("a seek before the start of the disk"))?;
        Ok(self.pos)
    }
}

/// The GPT and FAT readers take a read-write device; this one refuses every write.
impl Write for DiskView {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "the image is only read",
        ))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::qcow2::Qcow2Writer;
    use crate::sink::BlockSink;

    /// kiln's own qcow2 writer (the qemu-img oracle is in tests/formats.rs): a sparse disk with
    /// data across two L2 regions reads back byte for byte, holes as zeros, through windows.
    #[test]
    fn reads_a_qcow2_back_as_its_disk() {
        let d = tempfile::tempdir().unwrap();
        let len: u64 = (600 << 20) + 512;
        let mut disk = vec![0u8; len as usize];
        let mut w = Box::new(Qcow2Writer::create(&d.path().join("a.qcow2"), len).unwrap());
        for (off, n, b) in [
            (512u64, 3000usize, 7u8),
            (70_000, 5, 9),
            (520 << 20, 100_000, 3),
        ] {
            let data = vec![b; n];
            w.write_at(off, &data).unwrap();
            disk[off as usize..off as usize + n].copy_from_slice(&data);
        }
        let fin = crate::sink::formats::FormatWriter::finish(w, len).unwrap();
        let path = fin.output.temp_path().to_path_buf();
        let mut v = DiskView::open(&path).unwrap();
        assert_eq!(v.len(), len);
        let mut got = Vec::new();
        v.read_to_end(&mut got).unwrap();
        assert!(got == disk, "the virtual disk reads back");
        let mut win = v.window(520 << 20, 4096).unwrap();
        win.seek(SeekFrom::Start(10)).unwrap();
        let mut b = [0u8; 4];
        win.read_exact(&mut b).unwrap();
        assert_eq!(b, [3; 4]);
        assert!(win.write(b"x").is_err(), "read-only");
        assert!(v.window(len - 1, 2).is_err());
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("q");
        let mut h = vec![0u8; 104];
        h[..4].copy_from_slice(b"QFI\xfb");
        h[7] = 3;
        h[23] = 16;
        std::fs::write(&p, &h[..50]).unwrap();
        assert!(DiskView::open(&p).is_err(), "truncated");
        let mut with_backing = h.clone();
        with_backing[15] = 200;
        std::fs::write(&p, &with_backing).unwrap();
        assert!(DiskView::open(&p)
            .unwrap_err()
            .to_string()
            .contains("backing"));
        // A size its (empty) L1 table does not cover.
        let mut big = h.clone();
        big[24..32].copy_from_slice(&(1u64 << 40).to_be_bytes());
        std::fs::write(&p, &big).unwrap();
        assert!(DiskView::open(&p).is_err());
        // Garbage after the magic never panics: any answer but a panic will do.
        for seed in 0..200u32 {
            let mut g = h.clone();
            for (i, b) in g.iter_mut().enumerate().skip(4) {
                *b = (seed.wrapping_mul(2654435761).wrapping_add(i as u32 * 40503) >> 13) as u8;
            }
            // Keep the header readable (v3, 64 KiB clusters, no backing file, no encryption or
            // incompatible features): the size and the L1 table's place and size are garbage.
            g[4..24].copy_from_slice(&h[4..24]);
            g[32..36].fill(0);
            g[72..80].fill(0);
            std::fs::write(&p, &g).unwrap();
            if let Ok(mut v) = DiskView::open(&p) {
                let mut b = [0u8; 512];
                let _ = v
                    .seek(SeekFrom::Start(v.len() / 2))
                    .and_then(|_| v.read(&mut b));
            }
        }
    }
}
