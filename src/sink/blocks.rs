//! A disk as EBS sees it: 512 KiB blocks, of which only the non-zero ones carry data.
//!
//! [`Chunker`] cuts the sparse stream writers produce (data runs and skipped gaps, see
//! [`super::BlockSink`]) into whole blocks; the EBS sink sends them, and [`BlockMapper`] digests
//! them for the manifest.
//!
//! The block map digest identifies a disk by its non-zero blocks alone: the SHA-256 over, for
//! each non-zero block in ascending order, its index (u64, big-endian) and its own SHA-256. An
//! upload computes the same digest from the blocks it sends (it hashes each block anyway for
//! PutSnapshotBlock's checksum), so `kiln upload` can prove that the image matches its manifest
//! without hashing the zeros of the whole disk again.

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
}

type Emit<'e> = dyn FnMut(u64, Block) -> io::Result<()> + 'e;

impl Default for Chunker {
    fn default() -> Self {
        Chunker::with_block_size(BLOCK_SIZE)
    }
}

impl Chunker {
    /// A chunker handing out blocks of `block` bytes (a power of two).
    pub fn with_block_size(block: u64) -> Self {
        Chunker {
            block,
            pos: 0,
            buf: Vec::new(),
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
                emit(index, Block::Gap)?;
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

/// The block map of a disk, as the manifest records it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BlockMapInfo {
    pub block_size: u64,
    /// Non-zero blocks.
    pub blocks: u64,
    /// See the module documentation.
    pub sha256: String,
}

/// Folds (index, block digest) pairs, ascending, into a [`BlockMapInfo`].
pub struct BlockMap {
    h: Sha256,
    blocks: u64,
}

impl Default for BlockMap {
    fn default() -> Self {
        BlockMap {
            h: Sha256::new(),
            blocks: 0,
        }
    }
}

impl BlockMap {
    /// Adds the non-zero block `index` whose SHA-256 is `digest`.
    pub fn add(&mut self, index: u64, digest: &[u8; 32]) {
        self.h.update(index.to_be_bytes());
        self.h.update(digest);
        self.blocks += 1;
    }

    pub fn finish(self) -> BlockMapInfo {
        BlockMapInfo {
            block_size: B,
            blocks: self.blocks,
            sha256: crate::util::hex(&self.h.finalize()),
        }
    }
}

/// The block map of a sparse stream.
#[derive(Default)]
pub struct BlockMapper {
    chunker: Chunker,
    map: BlockMap,
}

impl BlockMapper {
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        let map = &mut self.map;
        // The closure never fails.
        let _ = self.chunker.write(offset, data, &mut |i, b| {
            add_block(map, i, b);
            Ok(())
        });
    }

    /// The map of the whole `len`-byte disk.
    pub fn finish(mut self, len: u64) -> BlockMapInfo {
        let map = &mut self.map;
        let _ = self.chunker.finish(len, &mut |i, b| {
            add_block(map, i, b);
            Ok(())
        });
        self.map.finish()
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

    /// The map computed the slow, obvious way: every block of the zero-filled disk.
    fn by_hand(disk: &[u8]) -> BlockMapInfo {
        let mut map = BlockMap::default();
        for (i, block) in disk.chunks(B as usize).enumerate() {
            let mut full = block.to_vec();
            full.resize(B as usize, 0);
            if full.iter().any(|&x| x != 0) {
                map.add(i as u64, &Sha256::digest(&full).into());
            }
        }
        map.finish()
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
        let mut m = BlockMapper::default();
        for (off, data) in &writes {
            disk[*off as usize..*off as usize + data.len()].copy_from_slice(data);
            m.write(*off, data);
        }
        let got = m.finish(len);
        assert_eq!(got, by_hand(&disk));
        assert_eq!(
            got.blocks, 4,
            "blocks 0, 1, 2 and 5; 3 is written zeros, 4 a gap"
        );
    }

    #[test]
    fn position_and_index_change_the_map() {
        let mut a = BlockMapper::default();
        a.write(0, &[1; 10]);
        let mut b = BlockMapper::default();
        b.write(B, &[1; 10]);
        assert_ne!(a.finish(4 * B).sha256, b.finish(4 * B).sha256);
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
