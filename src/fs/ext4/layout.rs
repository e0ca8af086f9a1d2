//! Pure sizing and placement maths: how many groups and inodes, where every group's bitmaps and
//! inode table go, where the journal goes, and a gapless block allocator. No I/O.
//!
//! Placement follows mke2fs's flex_bg scheme in spirit: the bitmaps and inode tables of each run
//! of [`flex_groups`] groups are packed at the start of the run's first group, skipping the
//! superblock backups. No `resize_inode`: the fs is built at its final size, so no reserved GDT
//! blocks are set aside for online growth.
//!
//! The flex group size is mke2fs's 16 up to 256 groups (32 GiB), then grows with the filesystem
//! so that there are never more than [`MAX_FLEXES`] flex groups. Each flex group's first group
//! holds metadata, so its block bitmap must be written: with a fixed 16, a 1 TiB filesystem has 512
//! of them, each in its own 512 KiB EBS block (256 MiB to hash and upload for an empty disk), and
//! a 16 TiB one 8,192 (4 GiB). Bounding the count bounds that cost whatever the disk's size.

use std::ops::Range;

pub const BLOCK_SIZE: u64 = 4096;
pub const BLOCKS_PER_GROUP: u64 = 32768;
pub const INODE_SIZE: u64 = 256;
pub const INODES_PER_BLOCK: u64 = BLOCK_SIZE / INODE_SIZE;
pub const DESC_SIZE: u64 = 64;
/// mke2fs's default flex group size (`-G 16`); see [`flex_groups`].
pub const FLEX_GROUPS: u64 = 16;
/// At most this many flex groups; see [`flex_groups`].
pub const MAX_FLEXES: u64 = 16;
/// The largest flex group size: the kernel's online resize (what grows a root filesystem on an
/// instance's first boot) adds at most `MAX_RESIZE_BG` (16,384) groups at a time; kernels before
/// that limit (CVE-2023-52622) allocated one array for a whole flex group, which fails above
/// about 21,845 groups.
pub const MAX_FLEX_GROUPS: u64 = 16384;
/// mke2fs's default `inode_ratio`: one inode per 16 KiB (mke2fs.conf's `[defaults]`).
pub const INODE_RATIO: u64 = 16384;

/// Bytes per inode as mke2fs chooses them for a filesystem of `blocks` 4 KiB blocks: its size
/// type (misc/mke2fs.c: "floppy" below 3 MiB, "small" below 512 MiB, "default" below 4 TiB,
/// "big" below 16 TiB, else "huge", judged on the size asked for) and mke2fs.conf's default
/// `inode_ratio` for each (8192, 4096, 16384, 32768, 65536). A 94 MiB root thus gets 24,064
/// inodes, as mke2fs gives it, not 6,016.
pub fn inode_ratio(blocks: u64) -> u64 {
    const MIB: u64 = (1 << 20) / BLOCK_SIZE;
    match blocks {
        b if b < 3 * MIB => 8192,
        b if b < 512 * MIB => 4096,
        b if b < (4 * MIB) << 20 => INODE_RATIO,
        b if b < (16 * MIB) << 20 => 32768,
        _ => 65536,
    }
}
/// One inode bitmap block holds this many inodes.
pub const MAX_INODES_PER_GROUP: u64 = BLOCK_SIZE * 8;
/// Smallest fs mke2fs will put a journal in.
pub const MIN_BLOCKS: u64 = 2048;

/// Why a geometry cannot be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayoutError {
    /// Fewer blocks than even an empty filesystem with a journal needs.
    TooSmall { blocks: u64, min_blocks: u64 },
    /// More inodes are needed than the groups can hold.
    TooManyInodes { needed: u64, max: u64 },
}

/// Where one group's own metadata lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupPlace {
    pub block_bitmap: u64,
    pub inode_bitmap: u64,
    pub inode_table: u64,
}

/// The complete static layout of an empty filesystem.
#[derive(Debug, Clone)]
pub struct Geometry {
    pub blocks_count: u64,
    pub groups: u64,
    pub inodes_per_group: u64,
    pub itable_blocks: u64,
    pub gdt_blocks: u64,
    pub journal_blocks: u64,
    /// Groups per flex group (a power of two).
    pub flex_groups: u64,
    pub places: Vec<GroupPlace>,
    /// Blocks that are metadata (superblocks, descriptors, bitmaps, inode tables), sorted and
    /// disjoint. The journal is not in here: it is allocated from [`Allocator`].
    pub reserved: Vec<Range<u64>>,
}

/// mke2fs 1.47's `ext2fs_default_journal_size`, in blocks (checked against mke2fs output).
pub fn journal_blocks(blocks: u64) -> u64 {
    match blocks {
        b if b < 32768 => 1024,
        b if b < 256 * 1024 => 4096,
        b if b < 512 * 1024 => 8192,
        b if b < 4096 * 1024 => 16384,
        b if b < 8192 * 1024 => 32768,
        b if b < 16384 * 1024 => 65536,
        b if b < 32768 * 1024 => 131072,
        _ => 262144,
    }
}

/// Groups per flex group for a filesystem of `groups` groups: a power of two (the superblock
/// stores its log), at least mke2fs's 16, and large enough for at most [`MAX_FLEXES`] flex groups
/// up to [`MAX_FLEX_GROUPS`] (filesystems up to 32 TiB). The kernel and e2fsck accept any size up
/// to 2^31 (mke2fs `-G`).
pub fn flex_groups(groups: u64) -> u64 {
    FLEX_GROUPS
        .max(groups.div_ceil(MAX_FLEXES).next_power_of_two())
        .min(MAX_FLEX_GROUPS)
}

/// Whether group `g` holds a superblock backup under `sparse_super`: 0, 1 and powers of 3, 5, 7.
pub fn has_super(g: u64) -> bool {
    if g <= 1 {
        return true;
    }
    [3u64, 5, 7].iter().any(|&p| {
        let mut x = g;
        while x % p == 0 {
            x /= p;
        }
        x == 1
    })
}

fn round_up(x: u64, m: u64) -> u64 {
    x.div_ceil(m) * m
}

/// The inodes per group: mke2fs's ratio, raised to hold `min_inodes`, in whole inode-table blocks.
/// `blocks` is the size asked for: mke2fs counts inodes before it drops a short last group.
fn inodes_per_group(blocks: u64, groups: u64, min_inodes: u64) -> Result<u64, LayoutError> {
    // Whole inode-table blocks, and never more than 2^32-1 inodes in total.
    let max = (MAX_INODES_PER_GROUP)
        .min((u32::MAX as u64 / groups) / INODES_PER_BLOCK * INODES_PER_BLOCK);
    let by_ratio = (blocks * BLOCK_SIZE / inode_ratio(blocks)).div_ceil(groups);
    let by_need = min_inodes.div_ceil(groups);
    let ipg = round_up(
        by_ratio.max(by_need).max(INODES_PER_BLOCK),
        INODES_PER_BLOCK,
    );
    if by_need > max {
        return Err(LayoutError::TooManyInodes {
            needed: min_inodes,
            max: max * groups,
        });
    }
    Ok(ipg.min(max))
}

/// Lays out a filesystem of `blocks` blocks with at least `min_inodes` inodes.
pub fn geometry(blocks: u64, min_inodes: u64) -> Result<Geometry, LayoutError> {
    let too_small = LayoutError::TooSmall {
        blocks,
        min_blocks: MIN_BLOCKS,
    };
    if blocks < MIN_BLOCKS {
        return Err(too_small);
    }
    let asked = blocks.min(1 << 48);
    let mut blocks_count = asked;
    loop {
        let groups = blocks_count.div_ceil(BLOCKS_PER_GROUP);
        let gdt_blocks = (groups * DESC_SIZE).div_ceil(BLOCK_SIZE);
        let ipg = inodes_per_group(asked, groups, min_inodes)?;
        let itable_blocks = ipg / INODES_PER_BLOCK;
        // mke2fs (ext2fs_initialize) drops a last group too small for its metadata plus 50 blocks.
        let rem = blocks_count % BLOCKS_PER_GROUP;
        let mut overhead = 2 + itable_blocks;
        if has_super(groups - 1) {
            overhead += 1 + gdt_blocks;
        }
        if rem != 0 && rem < overhead + 50 {
            if groups == 1 {
                return Err(too_small);
            }
            blocks_count -= rem;
            continue;
        }
        if groups == 1 && 3 + gdt_blocks + itable_blocks + 64 > blocks_count {
            return Err(too_small);
        }
        let g = place(blocks_count, groups, gdt_blocks, ipg, itable_blocks);
        if g.reserved.last().is_some_and(|r| r.end > blocks_count) {
            return Err(too_small);
        }
        return Ok(g);
    }
}

fn place(blocks_count: u64, groups: u64, gdt_blocks: u64, ipg: u64, itb: u64) -> Geometry {
    let mut supers: Vec<Range<u64>> = (0..groups)
        .filter(|&g| has_super(g))
        .map(|g| g * BLOCKS_PER_GROUP..g * BLOCKS_PER_GROUP + 1 + gdt_blocks)
        .collect();
    let mut places = Vec::with_capacity(groups as usize);
    let mut meta: Vec<Range<u64>> = Vec::new();
    let flex = flex_groups(groups);
    for leader in (0..groups).step_by(flex as usize) {
        let n = flex.min(groups - leader);
        let mut a = Allocator::new(&supers, leader * BLOCKS_PER_GROUP);
        let bb: Vec<u64> = (0..n).map(|_| a.alloc_contig(1)).collect();
        let ib: Vec<u64> = (0..n).map(|_| a.alloc_contig(1)).collect();
        let it: Vec<u64> = (0..n).map(|_| a.alloc_contig(itb)).collect();
        for i in 0..n as usize {
            places.push(GroupPlace {
                block_bitmap: bb[i],
                inode_bitmap: ib[i],
                inode_table: it[i],
            });
            meta.push(bb[i]..bb[i] + 1);
            meta.push(ib[i]..ib[i] + 1);
            meta.push(it[i]..it[i] + itb);
        }
    }
    supers.extend(meta);
    let reserved = merge(supers);
    Geometry {
        blocks_count,
        groups,
        inodes_per_group: ipg,
        itable_blocks: itb,
        gdt_blocks,
        journal_blocks: journal_blocks(blocks_count),
        flex_groups: flex,
        places,
        reserved,
    }
}

/// Sorts and coalesces ranges.
pub fn merge(mut v: Vec<Range<u64>>) -> Vec<Range<u64>> {
    v.sort_by_key(|r| r.start);
    let mut out: Vec<Range<u64>> = Vec::with_capacity(v.len());
    for r in v {
        match out.last_mut() {
            Some(l) if l.end >= r.start => l.end = l.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

/// A gapless bump allocator that steps over reserved ranges. It may run past the end of the
/// filesystem; the caller compares [`Allocator::cursor`] with the block count to tell whether
/// everything fits, so the shortfall can be reported exactly.
pub struct Allocator<'a> {
    reserved: &'a [Range<u64>],
    idx: usize,
    cursor: u64,
    allocated: u64,
}

impl<'a> Allocator<'a> {
    pub fn new(reserved: &'a [Range<u64>], start: u64) -> Self {
        let mut a = Allocator {
            reserved,
            idx: 0,
            cursor: start,
            allocated: 0,
        };
        a.skip();
        a
    }

    fn skip(&mut self) {
        while let Some(r) = self.reserved.get(self.idx) {
            if r.end <= self.cursor {
                self.idx += 1;
            } else if r.start <= self.cursor {
                self.cursor = r.end;
                self.idx += 1;
            } else {
                break;
            }
        }
    }

    /// Room before the next reserved range.
    fn room(&self) -> u64 {
        self.reserved
            .get(self.idx)
            .map_or(u64::MAX, |r| r.start - self.cursor)
    }

    /// `n` blocks as physical runs, in order.
    pub fn alloc(&mut self, mut n: u64) -> Vec<Range<u64>> {
        let mut out = Vec::new();
        while n > 0 {
            let take = self.room().min(n);
            out.push(self.cursor..self.cursor + take);
            self.cursor += take;
            self.allocated += take;
            n -= take;
            self.skip();
        }
        out
    }

    /// `n` contiguous blocks (the start block), jumping over reserved ranges too small for them.
    pub fn alloc_contig(&mut self, n: u64) -> u64 {
        while self.room() < n {
            self.cursor = self.reserved[self.idx].end;
            self.idx += 1;
            self.skip();
        }
        self.alloc(n)[0].start
    }

    /// One block.
    pub fn alloc_one(&mut self) -> u64 {
        self.alloc(1)[0].start
    }

    /// The next block that would be handed out.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// Blocks handed out so far.
    pub fn allocated(&self) -> u64 {
        self.allocated
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(g: &Geometry, blocks: u64) {
        assert!(g.blocks_count <= blocks);
        assert!(
            blocks - g.blocks_count < BLOCKS_PER_GROUP,
            "dropped at most a partial group"
        );
        assert_eq!(g.groups, g.blocks_count.div_ceil(BLOCKS_PER_GROUP));
        assert_eq!(g.places.len() as u64, g.groups);
        assert_eq!(g.inodes_per_group % INODES_PER_BLOCK, 0);
        assert!(g.inodes_per_group <= MAX_INODES_PER_GROUP);
        assert!(g.inodes_per_group * g.groups <= u32::MAX as u64);
        // Reserved ranges are sorted, disjoint and inside the fs.
        for w in g.reserved.windows(2) {
            assert!(w[0].end < w[1].start);
        }
        assert!(g.reserved.last().unwrap().end <= g.blocks_count);
        // Every group's metadata is inside the fs and reserved; superblock copies are where
        // sparse_super puts them.
        let inside = |b: u64| {
            let i = g.reserved.partition_point(|r| r.end <= b);
            g.reserved.get(i).is_some_and(|r| r.start <= b)
        };
        for (i, p) in g.places.iter().enumerate() {
            assert!(inside(p.block_bitmap) && inside(p.inode_bitmap));
            assert!(inside(p.inode_table) && inside(p.inode_table + g.itable_blocks - 1));
            if has_super(i as u64) {
                assert!(inside(i as u64 * BLOCKS_PER_GROUP));
            }
        }
        // The last group can hold its share.
        let total: u64 = g.reserved.iter().map(|r| r.end - r.start).sum();
        assert!(total + g.journal_blocks + 2 <= g.blocks_count);
    }

    #[test]
    fn sweep_sizes_from_8_mib_to_16_tib() {
        let mut size: u64 = 8 << 20;
        while size <= 16 << 40 {
            for delta in [0u64, 4096, 150 * 4096, 5 << 20] {
                let blocks = (size + delta) / BLOCK_SIZE;
                let g = geometry(blocks, 0).unwrap_or_else(|e| panic!("{blocks}: {e:?}"));
                check(&g, blocks);
            }
            size = size * 3 / 2;
        }
    }

    #[test]
    fn flex_groups_are_mke2fs_s_16_up_to_32_gib_then_at_most_16_of_them() {
        assert_eq!(flex_groups(1), 16);
        assert_eq!(flex_groups(256), 16);
        assert_eq!(flex_groups(257), 32);
        assert_eq!(flex_groups(8192), 512); // 1 TiB
        for groups in [1u64, 255, 256, 257, 1000, 8192, 8193, 131_071, 262_144] {
            let f = flex_groups(groups);
            assert!(f.is_power_of_two() && f >= 16);
            assert!(groups.div_ceil(f) <= MAX_FLEXES);
        }
        assert_eq!(flex_groups(1 << 20), MAX_FLEX_GROUPS); // 128 TiB: 64 flex groups
                                                           // 1 TiB: the metadata of its 16 flex groups, and how many 512 KiB blocks hold any of it.
        let g = geometry(1 << 28, 0).unwrap();
        assert_eq!(g.flex_groups, 512);
        let leaders: Vec<u64> = (0..g.groups).step_by(512).collect();
        assert_eq!(leaders.len(), 16);
        for l in leaders {
            let p = g.places[l as usize];
            let last = g.places[(l + 511) as usize];
            // Bitmaps and tables packed from the leader's start, in order.
            assert!(p.block_bitmap >= l * BLOCKS_PER_GROUP);
            assert_eq!(last.block_bitmap, p.block_bitmap + 511);
            assert!(last.inode_table + g.itable_blocks <= (l + 512) * BLOCKS_PER_GROUP);
        }
    }

    #[test]
    fn inodes_follow_the_ratio_and_rise_on_demand() {
        let g = geometry(1 << 20, 0).unwrap(); // 4 GiB, as mke2fs: 8192 per group
        assert_eq!(g.inodes_per_group, 8192);
        let g = geometry(1 << 20, 1_000_000).unwrap();
        assert!(g.inodes_per_group * g.groups >= 1_000_000);
        assert!(matches!(
            geometry(4096, 1 << 20),
            Err(LayoutError::TooManyInodes { .. })
        ));
    }

    #[test]
    fn tiny_and_ragged_sizes() {
        assert!(matches!(
            geometry(100, 0),
            Err(LayoutError::TooSmall { .. })
        ));
        // A second group of 10 blocks is dropped, as mke2fs does.
        let g = geometry(BLOCKS_PER_GROUP + 10, 0).unwrap();
        assert_eq!(g.blocks_count, BLOCKS_PER_GROUP);
        let g = geometry(BLOCKS_PER_GROUP + 5000, 0).unwrap();
        assert_eq!(g.groups, 2);
    }

    #[test]
    fn journal_table_matches_mke2fs() {
        assert_eq!(journal_blocks(2048), 1024);
        assert_eq!(journal_blocks(32768), 4096);
        assert_eq!(journal_blocks(1 << 20), 16384);
        assert_eq!(journal_blocks(32 << 20), 262144);
    }

    #[test]
    fn allocator_steps_over_reserved() {
        let r = vec![2..4, 10..12];
        let mut a = Allocator::new(&r, 0);
        assert_eq!(a.alloc(5), vec![0..2, 4..7]);
        assert_eq!(a.alloc_contig(4), 12);
        assert_eq!(a.allocated(), 9);
    }
}
