//! Extent trees: a 12-byte header, then 12-byte leaf extents or index entries, in `i_block`
//! (4 entries) or in tree blocks (340 entries and a checksum tail).
//! <https://docs.kernel.org/filesystems/ext4/dynamic.html#extent-tree>

use super::bytes::*;
use super::csum::crc32c_raw;
use super::layout::BLOCK_SIZE;

pub const EXT4_EXT_MAGIC: u16 = 0xF30A;
/// Longest initialised extent.
pub const MAX_EXTENT_LEN: u64 = 32768;
const ENTRY: usize = 12;
const IN_INODE_MAX: usize = 4;
const BLOCK_MAX: usize = (BLOCK_SIZE as usize - ENTRY) / ENTRY; // 340

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtentHeader {
    pub eh_entries: u16,
    pub eh_max: u16,
    pub eh_depth: u16,
}

/// A leaf entry: `ee_len` blocks from logical `ee_block` at physical `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub ee_block: u32,
    pub ee_len: u16,
    pub start: u64,
}

/// An index entry: the subtree covering logical blocks from `ei_block` lives at `leaf`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtentIdx {
    pub ei_block: u32,
    pub leaf: u64,
}

impl ExtentHeader {
    pub fn encode(&self, b: &mut [u8]) {
        put_u16(b, 0, EXT4_EXT_MAGIC);
        put_u16(b, 2, self.eh_entries);
        put_u16(b, 4, self.eh_max);
        put_u16(b, 6, self.eh_depth);
        put_u32(b, 8, 0); // eh_generation
    }
    pub fn decode(b: &[u8]) -> Option<ExtentHeader> {
        (get_u16(b, 0) == EXT4_EXT_MAGIC).then(|| ExtentHeader {
            eh_entries: get_u16(b, 2),
            eh_max: get_u16(b, 4),
            eh_depth: get_u16(b, 6),
        })
    }
}

impl Extent {
    pub fn encode(&self, b: &mut [u8]) {
        put_u32(b, 0, self.ee_block);
        put_u16(b, 4, self.ee_len);
        put_u16(b, 6, (self.start >> 32) as u16);
        put_u32(b, 8, self.start as u32);
    }
    pub fn decode(b: &[u8]) -> Extent {
        Extent {
            ee_block: get_u32(b, 0),
            ee_len: get_u16(b, 4),
            start: get_u32(b, 8) as u64 | (get_u16(b, 6) as u64) << 32,
        }
    }
}

impl ExtentIdx {
    pub fn encode(&self, b: &mut [u8]) {
        put_u32(b, 0, self.ei_block);
        put_u32(b, 4, self.leaf as u32);
        put_u16(b, 8, (self.leaf >> 32) as u16);
        put_u16(b, 10, 0);
    }
    pub fn decode(b: &[u8]) -> ExtentIdx {
        ExtentIdx {
            ei_block: get_u32(b, 0),
            leaf: get_u32(b, 4) as u64 | (get_u16(b, 8) as u64) << 32,
        }
    }
}

/// Turns (logical start, physical runs) mappings into extents of at most [`MAX_EXTENT_LEN`].
pub fn extents_from_runs(runs: &[(u64, std::ops::Range<u64>)]) -> Vec<Extent> {
    let mut out = Vec::new();
    for (logical, phys) in runs {
        let mut l = *logical;
        let mut p = phys.start;
        while p < phys.end {
            let n = (phys.end - p).min(MAX_EXTENT_LEN);
            // Logical blocks are 32-bit: the writer refuses files past MAX_FILE_SIZE first.
            debug_assert!(l + n <= 1 << 32, "logical block {l} does not fit ee_block");
            out.push(Extent {
                ee_block: l as u32,
                ee_len: n as u16,
                start: p,
            });
            l += n;
            p += n;
        }
    }
    out
}

/// How many tree blocks an extent list needs outside the inode.
pub fn tree_blocks(n_extents: usize) -> u64 {
    let mut total = 0;
    let mut n = n_extents;
    while n > IN_INODE_MAX {
        n = n.div_ceil(BLOCK_MAX);
        total += n as u64;
    }
    total
}

/// A built tree: the 60-byte root for `i_block` and the tree blocks (block number, contents).
pub struct ExtentTree {
    pub root: [u8; 60],
    pub blocks: Vec<(u64, Vec<u8>)>,
}

/// Builds the tree for `extents` using `tree_blocks(extents.len())` blocks from `free`; the tree
/// blocks get checksums seeded by the owning inode `ino`.
pub fn build(extents: &[Extent], free: &[u64], fs_seed: u32, ino: u32) -> ExtentTree {
    assert_eq!(free.len() as u64, tree_blocks(extents.len()));
    let inode_seed = super::csum::inode_seed(fs_seed, ino, 0);
    let mut blocks = Vec::new();
    let mut free = free.iter().copied();
    // Level 0: leaves. Each level is (first logical block, encoder of one entry).
    let mut depth = 0u16;
    let mut level: Vec<(u32, [u8; ENTRY])> = extents
        .iter()
        .map(|e| {
            let mut b = [0u8; ENTRY];
            e.encode(&mut b);
            (e.ee_block, b)
        })
        .collect();
    while level.len() > IN_INODE_MAX {
        let mut next = Vec::new();
        for chunk in level.chunks(BLOCK_MAX) {
            let blk = free.next().expect("tree_blocks counted enough blocks");
            let mut b = vec![0u8; BLOCK_SIZE as usize];
            ExtentHeader {
                eh_entries: chunk.len() as u16,
                eh_max: BLOCK_MAX as u16,
                eh_depth: depth,
            }
            .encode(&mut b);
            for (i, (_, e)) in chunk.iter().enumerate() {
                b[ENTRY * (i + 1)..ENTRY * (i + 2)].copy_from_slice(e);
            }
            // ext4_extent_block_csum: the tail right after eh_max entries.
            let tail = ENTRY * (BLOCK_MAX + 1);
            let c = crc32c_raw(inode_seed, &b[..tail]);
            put_u32(&mut b, tail, c);
            let mut idx = [0u8; ENTRY];
            ExtentIdx {
                ei_block: chunk[0].0,
                leaf: blk,
            }
            .encode(&mut idx);
            next.push((chunk[0].0, idx));
            blocks.push((blk, b));
        }
        level = next;
        depth += 1;
    }
    let mut root = [0u8; 60];
    ExtentHeader {
        eh_entries: level.len() as u16,
        eh_max: IN_INODE_MAX as u16,
        eh_depth: depth,
    }
    .encode(&mut root);
    for (i, (_, e)) in level.iter().enumerate() {
        root[ENTRY * (i + 1)..ENTRY * (i + 2)].copy_from_slice(e);
    }
    blocks.sort_by_key(|(b, _)| *b);
    ExtentTree { root, blocks }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip() {
        let e = Extent {
            ee_block: 7,
            ee_len: 32768,
            start: 1 << 40,
        };
        let mut b = [0u8; 12];
        e.encode(&mut b);
        assert_eq!(Extent::decode(&b), e);
        let i = ExtentIdx {
            ei_block: 9,
            leaf: (1 << 33) + 5,
        };
        i.encode(&mut b);
        assert_eq!(ExtentIdx::decode(&b), i);
        let h = ExtentHeader {
            eh_entries: 3,
            eh_max: 4,
            eh_depth: 1,
        };
        h.encode(&mut b);
        assert_eq!(ExtentHeader::decode(&b), Some(h));
    }

    #[test]
    fn runs_split_at_max_len() {
        let ex = extents_from_runs(&[(0, 100..100 + 70000), (80000, 5..6)]);
        assert_eq!(ex.len(), 4);
        assert_eq!(
            ex[2],
            Extent {
                ee_block: 65536,
                ee_len: 4464,
                start: 65636
            }
        );
        assert_eq!(
            ex[3],
            Extent {
                ee_block: 80000,
                ee_len: 1,
                start: 5
            }
        );
    }

    #[test]
    fn deep_trees() {
        assert_eq!(tree_blocks(4), 0);
        assert_eq!(tree_blocks(5), 1);
        assert_eq!(tree_blocks(340 * 4), 4);
        assert_eq!(tree_blocks(340 * 4 + 1), 5 + 1);
        let ex: Vec<Extent> = (0..2000)
            .map(|i| Extent {
                ee_block: i * 2,
                ee_len: 1,
                start: 1000 + i as u64,
            })
            .collect();
        let free: Vec<u64> = (0..tree_blocks(ex.len())).collect();
        let t = build(&ex, &free, 1, 12);
        let h = ExtentHeader::decode(&t.root).unwrap();
        assert_eq!(h.eh_depth, 2);
        assert_eq!(h.eh_entries, 1);
        assert_eq!(t.blocks.len(), free.len());
    }
}
