//! A disk as EBS sees it: 512 KiB blocks, of which only the non-zero ones carry data.
//!
//! [`Chunker`] cuts the sparse stream writers produce (data runs and skipped gaps, see
//! [`super::BlockSink`]) into whole blocks; the EBS sink sends them, and [`BlockMapper`] maps
//! them for the manifest.
//!
//! # The block map and the blocks digest (the image's identity)
//!
//! The *block map* of a disk is a byte stream, version 1:
//!
//! ```text
//! header, 24 bytes:  "KILNBMAP"  version u32 BE (1)  block size u32 BE (524288)  disk size u64 BE
//! then, for each block that is not all zeros, in ascending index order, 40 bytes:
//!                    index u64 BE  SHA-256 of the block's 524288 bytes
//! ```
//!
//! Block `i` is bytes `i × 512 KiB ..` of the disk; the last one, when the disk's size is not a
//! whole number of blocks, is padded with zeros to 512 KiB before it is hashed. A block that is all
//! zeros has no entry, whether it was written or left a hole: the map describes the bytes, not
//! how they were stored. The disk's size and its non-zero blocks determine every byte of it, so
//! the map's SHA-256, the *blocks digest*, names the disk exactly as a SHA-256 of all its bytes
//! would, while it costs nothing for the zeros: a 16 TiB disk holding 1 GiB hashes 1 GiB.
//!
//! The blocks are the EBS direct APIs' blocks, and their SHA-256 is the checksum PutSnapshotBlock
//! wants: an upload computes the same digest from the blocks it sends, with no extra hashing, so
//! `kiln upload` proves that an image is its manifest's without reading its zeros.
//! `scripts/blocks-digest` recomputes it from an image file in a few lines of Python.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io;

/// The EBS direct API block size.
pub const BLOCK_SIZE: u64 = 512 * 1024;
const B: u64 = BLOCK_SIZE;

/// One whole block, as the [`Chunker`] hands it out.
pub enum Block<'a> {
    /// Written bytes (zeros filled in where nothing was written); may still be all zero.
    Data(&'a [u8]),
    /// Nothing was written into this block: it is zeros.
    Gap,
}

/// Cuts a sequential sparse stream into whole blocks ([`BLOCK_SIZE`] unless made
/// [`Chunker::with_block_size`]: the disk formats cut it into their clusters and grains).
pub struct Chunker {
    block: u64,
    /// The stream position.
    pos: u64,
    /// The bytes of the current block, from its start to `pos`; empty while nothing has been
    /// written into the current block.
    buf: Vec<u8>,
    /// Whether blocks nothing was written into are handed out (as [`Block::Gap`]).
    gaps: bool,
}

impl Default for Chunker {
    fn default() -> Self {
        Chunker {
            block: B,
            pos: 0,
            buf: Vec::new(),
            gaps: true,
        }
    }
}

type Emit<'e> = dyn FnMut(u64, Block) -> io::Result<()> + 'e;

impl Chunker {
    /// A chunker that hands out only the blocks something was written into: skipping a gap costs
    /// nothing, however long it is (the EBS sink and the block map take a gap as the distance
    /// between two blocks handed out).
    pub fn without_gaps() -> Self {
        Chunker {
            gaps: false,
            ..Chunker::default()
        }
    }

    /// A chunker handing out blocks of `block` bytes (a power of two), without gaps: the disk
    /// formats store only the clusters and grains something was written into, so a gap costs
    /// them nothing however long it is (issue 16: no step may scale with the disk's size).
    pub fn with_block_size(block: u64) -> Self {
        Chunker {
            block,
            ..Chunker::without_gaps()
        }
    }

    pub fn pos(&self) -> u64 {
        self.pos
    }

    /// Writes `data` at `offset` (at or after the position; the gap is zeros).
    pub fn write(&mut self, offset: u64, mut data: &[u8], emit: &mut Emit) -> io::Result<()> {
        self.zeros_to(offset, emit)?;
        while !data.is_empty() {
            let index = self.pos / self.block;
            let at = (self.pos % self.block) as usize;
            let n = (self.block as usize - at).min(data.len());
            if at == 0 && n == self.block as usize {
                // A whole aligned block: handed out without a copy.
                emit(index, Block::Data(&data[..n]))?;
            } else {
                if self.buf.is_empty() {
                    self.buf.resize(at, 0);
                }
                self.buf.extend_from_slice(&data[..n]);
                if at + n == self.block as usize {
                    self.flush(index, emit)?;
                }
            }
            self.pos += n as u64;
            data = &data[n..];
        }
        Ok(())
    }

    /// Moves the position forward to `to` over zeros, handing out the blocks it completes.
    pub fn zeros_to(&mut self, to: u64, emit: &mut Emit) -> io::Result<()> {
        while self.pos < to {
            if !self.gaps && self.buf.is_empty() {
                self.pos = to;
                break;
            }
            let index = self.pos / self.block;
            let block_end = (index + 1) * self.block;
            let step = to.min(block_end) - self.pos;
            if !self.buf.is_empty() {
                self.buf.resize(self.buf.len() + step as usize, 0);
            }
            self.pos += step;
            if self.pos == block_end {
                if self.buf.is_empty() {
                    emit(index, Block::Gap)?;
                } else {
                    self.flush(index, emit)?;
                }
            }
        }
        Ok(())
    }

    /// Zeros up to `end`, then the block `end` falls in, padded with zeros, if it is partial.
    pub fn finish(&mut self, end: u64, emit: &mut Emit) -> io::Result<()> {
        self.zeros_to(end, emit)?;
        if self.pos % self.block != 0 {
            let index = self.pos / self.block;
            if self.buf.is_empty() {
                if self.gaps {
                    emit(index, Block::Gap)?;
                }
            } else {
                self.flush(index, emit)?;
            }
        }
        Ok(())
    }

    fn flush(&mut self, index: u64, emit: &mut Emit) -> io::Result<()> {
        self.buf.resize(self.block as usize, 0);
        let r = emit(index, Block::Data(&self.buf));
        self.buf.clear();
        r
    }
}

/// Whether `b` is all zeros.
pub fn is_zero(b: &[u8]) -> bool {
    // Compare in u64 words; the compiler vectorises this.
    // SAFETY: any bytes are valid u64s; align_to only splits off the unaligned ends.
    let (pre, mid, post) = unsafe { b.align_to::<u64>() };
    pre.iter().all(|&x| x == 0) && mid.iter().all(|&x| x == 0) && post.iter().all(|&x| x == 0)
}

/// The block map's first bytes.
pub const MAGIC: [u8; 8] = *b"KILNBMAP";
/// The block map format this kiln writes (see the module documentation).
pub const VERSION: u32 = 1;
pub const HEADER_LEN: usize = 24;
pub const ENTRY_LEN: usize = 40;

/// The block map's header for a disk of `disk_size` bytes.
pub fn header(disk_size: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_be_bytes());
    h[12..16].copy_from_slice(&(B as u32).to_be_bytes());
    h[16..].copy_from_slice(&disk_size.to_be_bytes());
    h
}

/// The block map's entry for the non-zero block `index` whose SHA-256 is `digest`.
pub fn entry(index: u64, digest: &[u8; 32]) -> [u8; ENTRY_LEN] {
    let mut e = [0u8; ENTRY_LEN];
    e[..8].copy_from_slice(&index.to_be_bytes());
    e[8..].copy_from_slice(digest);
    e
}

/// A disk's block map, as the manifest records it (`image.blocks`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BlockMapInfo {
    /// The block map's format. Manifests written before it had one (kiln 0.1's first releases
    /// digested the entries alone, without the header) have none: 0 here.
    #[serde(default)]
    pub version: u32,
    pub block_size: u64,
    /// Non-zero blocks: the map's entries.
    pub blocks: u64,
    /// The blocks digest: SHA-256 of the block map (hex).
    pub sha256: String,
}

impl BlockMapInfo {
    /// Whether this kiln computes the same digest (an older manifest's cannot be compared).
    pub fn is_current(&self) -> bool {
        self.version == VERSION && self.block_size == B
    }
}

/// Folds a disk's non-zero blocks, in ascending order, into its block map's digest, keeping the
/// map itself (`<stem>.blocks`, and the parent of the next version's upload).
///
/// The map is kept in memory: 40 bytes per non-zero 512 KiB block, 80 KiB per GiB of data
/// (1/13,107th of the data), whatever the disk's size.
pub struct BlockMap {
    h: Sha256,
    blocks: u64,
    next: u64,
    bytes: Vec<u8>,
}

impl BlockMap {
    /// The map of a disk of `disk_size` bytes.
    pub fn new(disk_size: u64) -> Self {
        let mut h = Sha256::new();
        let head = header(disk_size);
        h.update(head);
        BlockMap {
            h,
            blocks: 0,
            next: 0,
            bytes: head.to_vec(),
        }
    }

    /// Adds the non-zero block `index` whose SHA-256 is `digest`. Indices must ascend.
    pub fn add(&mut self, index: u64, digest: &[u8; 32]) {
        debug_assert!(index >= self.next, "block {index} after {}", self.next);
        self.next = index + 1;
        let e = entry(index, digest);
        self.h.update(e);
        self.bytes.extend_from_slice(&e);
        self.blocks += 1;
    }

    pub fn finish(self) -> BlockMapInfo {
        self.finish_map().info
    }

    /// The digest and the map's bytes: its SHA-256 was folded in as it grew, so nothing is hashed
    /// twice.
    pub fn finish_map(self) -> super::mapfile::MapData {
        let info = BlockMapInfo {
            version: VERSION,
            block_size: B,
            blocks: self.blocks,
            sha256: crate::util::hex(&self.h.finalize()),
        };
        super::mapfile::MapData::from_parts(info, self.bytes)
    }
}

/// The block map of a sparse stream: only what was written is looked at, and of that only the
/// non-zero blocks are hashed.
pub struct BlockMapper {
    chunker: Chunker,
    map: BlockMap,
    len: u64,
}

impl BlockMapper {
    /// The mapper of a disk of `len` bytes.
    pub fn new(len: u64) -> Self {
        BlockMapper {
            chunker: Chunker::without_gaps(),
            map: BlockMap::new(len),
            len,
        }
    }

    pub fn write(&mut self, offset: u64, data: &[u8]) {
        let map = &mut self.map;
        // The closure never fails.
        let _ = self.chunker.write(offset, data, &mut |i, b| {
            add_block(map, i, b);
            Ok(())
        });
    }

    /// The map of the whole disk.
    pub fn finish(self) -> BlockMapInfo {
        self.finish_map().info
    }

    /// The map of the whole disk, with its bytes.
    pub fn finish_map(mut self) -> super::mapfile::MapData {
        let map = &mut self.map;
        let _ = self.chunker.finish(self.len, &mut |i, b| {
            add_block(map, i, b);
            Ok(())
        });
        self.map.finish_map()
    }

    /// The map of an image file, reading only its data regions (SEEK_DATA / SEEK_HOLE): holes
    /// are zeros, which have no entries.
    pub fn of_file(path: &std::path::Path) -> io::Result<BlockMapInfo> {
        Ok(Self::map_of_file(path)?.info)
    }

    /// [`BlockMapper::of_file`] with the map's bytes.
    pub fn map_of_file(path: &std::path::Path) -> io::Result<super::mapfile::MapData> {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::open(path)?;
        let len = f.metadata()?.len();
        let mut m = BlockMapper::new(len);
        let mut buf = vec![0u8; B as usize];
        for r in crate::tree::seek_data_ranges(&f, len)? {
            let mut at = r.start;
            while at < r.end {
                let n = (r.end - at).min(B - at % B) as usize;
                f.read_exact_at(&mut buf[..n], at)?;
                m.write(at, &buf[..n]);
                at += n as u64;
            }
        }
        Ok(m.finish_map())
    }
}

fn add_block(map: &mut BlockMap, index: u64, block: Block) {
    if let Block::Data(d) = block {
        if !is_zero(d) {
            map.add(index, &Sha256::digest(d).into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The map computed the slow, obvious way: the whole stream of the zero-filled disk, laid
    /// out byte by byte as the module documentation says, then hashed.
    fn by_hand(disk: &[u8]) -> BlockMapInfo {
        let mut stream = b"KILNBMAP".to_vec();
        stream.extend_from_slice(&[0, 0, 0, 1, 0, 8, 0, 0]);
        stream.extend_from_slice(&(disk.len() as u64).to_be_bytes());
        let mut blocks = 0;
        for (i, block) in disk.chunks(B as usize).enumerate() {
            let mut full = block.to_vec();
            full.resize(B as usize, 0);
            if full.iter().any(|&x| x != 0) {
                stream.extend_from_slice(&(i as u64).to_be_bytes());
                stream.extend_from_slice(&Sha256::digest(&full));
                blocks += 1;
            }
        }
        assert_eq!(stream.len(), HEADER_LEN + blocks as usize * ENTRY_LEN);
        BlockMapInfo {
            version: 1,
            block_size: B,
            blocks,
            sha256: crate::util::hex(&Sha256::digest(&stream)),
        }
    }

    #[test]
    fn mapper_agrees_with_the_whole_disk_however_it_is_written() {
        let len = 5 * B + 1000;
        let mut disk = vec![0u8; len as usize];
        // Writes: unaligned, spanning blocks, a whole aligned block, an explicit run of zeros
        // (written, but zero), and one in the partial last block.
        let writes: Vec<(u64, Vec<u8>)> = vec![
            (10, vec![1; 100]),
            (B - 5, vec![2; 10]),
            (2 * B, vec![3; B as usize]),
            (3 * B + 7, vec![0; 4096]),
            (5 * B + 10, vec![4; 5]),
        ];
        let mut m = BlockMapper::new(len);
        for (off, data) in &writes {
            disk[*off as usize..*off as usize + data.len()].copy_from_slice(data);
            m.write(*off, data);
        }
        let got = m.finish();
        assert_eq!(got, by_hand(&disk));
        assert_eq!(
            got.blocks, 4,
            "blocks 0, 1, 2 and 5; 3 is written zeros, 4 a gap"
        );
    }

    #[test]
    fn position_index_and_disk_size_change_the_map() {
        let map = |at: u64, len: u64| {
            let mut m = BlockMapper::new(len);
            m.write(at, &[1; 10]);
            m.finish()
        };
        assert_ne!(map(0, 4 * B).sha256, map(B, 4 * B).sha256);
        // The same non-zero blocks on a larger disk: another disk, another digest.
        assert_ne!(map(0, 4 * B).sha256, map(0, 5 * B).sha256);
        assert_ne!(map(0, 4 * B).sha256, map(0, 4 * B + 512).sha256);
        // An empty disk still has a map: its header.
        assert_eq!(
            BlockMapper::new(4 * B).finish(),
            by_hand(&vec![0; 4 * B as usize])
        );
    }

    #[test]
    fn a_mapper_skips_any_gap_at_once_and_still_sees_partial_blocks() {
        // 1 PiB: a gap of 2^31 blocks, which a block-by-block walk would take seconds over.
        let len = 1u64 << 50;
        let mut m = BlockMapper::new(len);
        m.write(B / 2, &[7; 10]);
        m.write(len - 3, &[9; 3]);
        let t = std::time::Instant::now();
        let got = m.finish();
        assert!(t.elapsed() < std::time::Duration::from_secs(1));
        let mut want = BlockMap::new(len);
        let mut first = vec![0u8; B as usize];
        first[B as usize / 2..B as usize / 2 + 10].fill(7);
        want.add(0, &Sha256::digest(&first).into());
        let mut last = vec![0u8; B as usize];
        last[B as usize - 3..].fill(9);
        want.add(len / B - 1, &Sha256::digest(&last).into());
        assert_eq!(got, want.finish());
    }

    #[test]
    fn of_file_reads_the_data_regions_and_agrees_with_the_stream() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.raw");
        let f = std::fs::File::create(&p).unwrap();
        // Not a whole number of blocks; data at the very end; a written block of zeros.
        let len = 6 * B + 4096 + 17;
        f.set_len(len).unwrap();
        f.write_all_at(&[5; 3000], B - 1000).unwrap();
        f.write_all_at(&vec![0; B as usize], 3 * B).unwrap();
        f.write_all_at(b"end", len - 3).unwrap();
        drop(f);
        let disk = std::fs::read(&p).unwrap();
        let got = BlockMapper::of_file(&p).unwrap();
        assert_eq!(got, by_hand(&disk));
        assert_eq!(got.blocks, 3, "blocks 0, 1 and 6");
    }

    #[test]
    fn chunker_hands_out_every_block_once_in_order() {
        let mut c = Chunker::default();
        let mut seen = Vec::new();
        let mut emit = |i: u64, b: Block| {
            seen.push((i, matches!(b, Block::Gap)));
            Ok(())
        };
        c.write(3 * B + 1, &[9; 2], &mut emit).unwrap();
        c.finish(5 * B + 1, &mut emit).unwrap();
        let want: Vec<(u64, bool)> = vec![
            (0, true),
            (1, true),
            (2, true),
            (3, false),
            (4, true),
            (5, true),
        ];
        assert_eq!(seen, want);
    }
}
