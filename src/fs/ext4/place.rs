//! Where files and inodes go, chosen so that the next version of an image keeps every unchanged
//! file where it was (issue 18: a child EBS snapshot uploads only the 512 KiB blocks that
//! changed). No I/O.
//!
//! [`Placement::Packed`] is mke2fs's way: inode numbers and data blocks handed out in walk order,
//! gapless. One file growing by a block moves every file after it, and one file added renumbers
//! every inode after it (and so rewrites every directory naming one): an update of five
//! packages of recipes/web.toml changes 93% of the disk's non-zero 512 KiB blocks.
//!
//! [`Placement::Stable`] decides each place from the path alone, as far as it can:
//! - inode numbers: the directory's hash picks 2048 inodes (512 KiB of inode table), the path's
//!   hash a slot among them, in a range of twice as many inodes as the tree needs (rounded up to
//!   a power of two); taken slots are probed past ([`InodeSlots`]);
//! - data: the walk is cut into chunks at paths whose hash is marked (content-defined
//!   chunking, the cut depending on the path and not on what came before), once a chunk holds
//!   [`CHUNK_MIN`] blocks, and at [`CHUNK_MAX`]; each chunk starts at a 512 KiB-aligned block
//!   chosen by its first path's hash and fills the free blocks from there ([`BlockSpace`]). A
//!   file that changes size moves only the rest of its chunk; where a chunk's spot is taken it
//!   starts at the next free aligned block, so a neighbour's small change does not move it.
//!
//! A tree that does not fit this way (fragments cost extent blocks) is planned packed instead.

use std::collections::BTreeMap;
use std::ops::Range;

/// How the writer places inodes and blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Placement {
    /// Walk order, gapless (mke2fs -d's layout).
    Packed,
    /// Inode numbers from the directory's hash (which 512 KiB of inode table) and the path's
    /// (where in it), and hashed data chunks.
    #[default]
    Stable,
}

impl Placement {
    pub fn stable(self) -> bool {
        self != Placement::Packed
    }
}

/// EBS's block: 512 KiB, 128 filesystem blocks. Chunks start on one.
pub const EBS_BLOCKS: u64 = 128;
/// A chunk is cut at a marked path only once it holds this many blocks (512 KiB). Measured on
/// recipes/web.toml (scripts/bench-incremental, five packages updated): chunks of 512 KiB-2 MiB
/// changed 100 blocks of 1232 (8.1%), 1-4 MiB 120 of 1077, 2-8 MiB 133 of 1000, 4-16 MiB 110
/// of 978; smaller chunks leave more partly filled 512 KiB blocks (the full image grows).
pub const CHUNK_MIN: u64 = 128;
/// ... and always before it would pass this many (2 MiB); a bigger file is a chunk of its own.
pub const CHUNK_MAX: u64 = 512;
/// One path in this many is marked as a cut point.
pub const CHUNK_MARK: u64 = 4;

/// FNV-1a over the path, then splitmix64's finalizer (FNV's low bits alone are poorly mixed);
/// `salt` separates the uses. Fixed forever: a change moves every file of every next version.
pub fn path_hash(path: &[u8], salt: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ salt;
    for &b in path {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

const SALT_INODE: u64 = 1;
const SALT_CHUNK: u64 = 2;
const SALT_MARK: u64 = 3;

/// Inodes in 512 KiB of inode table.
pub const INODES_PER_EBS_BLOCK: u32 = 2048;

/// Inode numbers from path hashes: slot `first + home`, or the next free one after it
/// (wrapping). With `by_dir`, home is the directory's 512 KiB of inode table (its hash) and a
/// place in it (the path's hash), so that a package's files, which share few directories,
/// dirty few table blocks; else the path's hash over the whole span. "Next free" is a
/// union-find over slots, so a nearly full range costs no more than an empty one.
pub struct InodeSlots {
    first: u32,
    by_dir: bool,
    next: Vec<u32>,
}

impl InodeSlots {
    /// Slots `first..first + span`.
    pub fn new(first: u32, span: u32, by_dir: bool) -> InodeSlots {
        InodeSlots {
            first,
            by_dir,
            next: (0..=span).collect(),
        }
    }

    fn home(&self, path: &[u8]) -> u32 {
        let span = self.next.len() as u64 - 1;
        let own = path_hash(path, SALT_INODE);
        if !self.by_dir || span <= u64::from(INODES_PER_EBS_BLOCK) {
            return (own % span) as u32;
        }
        let b = u64::from(INODES_PER_EBS_BLOCK);
        let dir = &path[..path.iter().rposition(|&c| c == b'/').unwrap_or(0)];
        let bucket = path_hash(dir, SALT_INODE) % (span / b);
        (bucket * b + own % b) as u32
    }

    /// The span for `needed` inodes out of `available` numbers: twice the need, rounded up to a
    /// power of two (so that small changes in the count leave it alone), at most what exists.
    /// Every 2048 inodes of span are 512 KiB of inode table an update may touch; a fuller span
    /// (1.25 times) halved those but renumbered more files (longer probe runs), whose directory
    /// blocks then changed: no better in scripts/bench-incremental.
    pub fn span_for(needed: u64, available: u64) -> u32 {
        (needed.max(1) * 2).next_power_of_two().min(available) as u32
    }

    fn find(&mut self, mut i: u32) -> u32 {
        let mut root = i;
        while self.next[root as usize] != root {
            root = self.next[root as usize];
        }
        while self.next[i as usize] != root {
            let n = self.next[i as usize];
            self.next[i as usize] = root;
            i = n;
        }
        root
    }

    /// The inode number of `path`; `None` when every slot is taken.
    pub fn take(&mut self, path: &[u8]) -> Option<u32> {
        let span = self.next.len() as u32 - 1;
        let start = self.home(path);
        let mut s = self.find(start);
        if s == span {
            s = self.find(0);
            if s == span {
                return None;
            }
        }
        self.next[s as usize] = s + 1;
        Some(self.first + s)
    }
}

/// Whether the walk starts a new data chunk at `path`, given the blocks the current chunk holds
/// and the blocks the next node needs (`need`, its data at most).
pub fn cuts_before(path: &[u8], chunk: u64, need: u64, prev_big: bool) -> bool {
    chunk > 0
        && (prev_big
            || need >= CHUNK_MAX
            || chunk + need > CHUNK_MAX
            || (chunk >= CHUNK_MIN && path_hash(path, SALT_MARK) % CHUNK_MARK == 0))
}

/// The block a chunk starting with `path` would like to start at, 512 KiB-aligned.
pub fn chunk_home(path: &[u8], blocks: u64) -> u64 {
    let slots = (blocks / EBS_BLOCKS).max(1);
    (path_hash(path, SALT_CHUNK) % slots) * EBS_BLOCKS
}

/// Free-space allocation over `0..end`: hands out the next free blocks from a cursor, wrapping
/// at the end, and past the end (blocks that do not exist) once nothing is free, so that the
/// shortfall is counted exactly.
pub struct BlockSpace {
    end: u64,
    /// Used runs, start → end, merged (no two touch).
    used: BTreeMap<u64, u64>,
    free: u64,
    cursor: u64,
    over: u64,
    allocated: u64,
}

impl BlockSpace {
    pub fn new(end: u64, reserved: &[Range<u64>]) -> BlockSpace {
        let mut s = BlockSpace {
            end,
            used: BTreeMap::new(),
            free: end,
            cursor: 0,
            over: end,
            allocated: 0,
        };
        for r in reserved {
            let r = r.start.min(end)..r.end.min(end);
            s.free -= r.end - r.start;
            s.mark(r);
        }
        s
    }

    fn mark(&mut self, r: Range<u64>) {
        if r.is_empty() {
            return;
        }
        let (mut start, mut end) = (r.start, r.end);
        if let Some((&s, &e)) = self.used.range(..=start).next_back() {
            if e >= start {
                start = s;
                end = end.max(e);
            }
        }
        while let Some((&s, &e)) = self.used.range(start..).next() {
            if s > end {
                break;
            }
            end = end.max(e);
            self.used.remove(&s);
        }
        self.used.insert(start, end);
    }

    /// The used run holding `b`, if any: its end.
    fn used_end(&self, b: u64) -> Option<u64> {
        self.used
            .range(..=b)
            .next_back()
            .and_then(|(_, &e)| (e > b).then_some(e))
    }

    /// Moves the cursor to the first free block at or after `home` that starts a 512 KiB block
    /// (wrapping); with no free aligned block, to the first free block at or after `home`.
    pub fn seek(&mut self, home: u64) {
        self.cursor = home.min(self.end);
        if self.free == 0 {
            return;
        }
        let mut at = home - home % EBS_BLOCKS;
        let mut wrapped = false;
        loop {
            if at >= self.end {
                if wrapped {
                    self.cursor = home.min(self.end);
                    return;
                }
                wrapped = true;
                at = 0;
            }
            match self.used_end(at) {
                None => {
                    self.cursor = at;
                    return;
                }
                Some(e) => at = e.div_ceil(EBS_BLOCKS) * EBS_BLOCKS,
            }
            if wrapped && at >= home {
                self.cursor = home.min(self.end);
                return;
            }
        }
    }

    /// `n` blocks as runs, in order: the next free ones from the cursor.
    pub fn alloc(&mut self, mut n: u64) -> Vec<Range<u64>> {
        let mut out: Vec<Range<u64>> = Vec::new();
        while n > 0 {
            if self.free == 0 {
                out.push(self.over..self.over + n);
                self.over += n;
                self.allocated += n;
                break;
            }
            if self.cursor >= self.end {
                self.cursor = 0;
            }
            if let Some(e) = self.used_end(self.cursor) {
                self.cursor = e;
                continue;
            }
            let next = self
                .used
                .range(self.cursor..)
                .next()
                .map_or(self.end, |(&s, _)| s);
            let take = (next - self.cursor).min(n);
            let r = self.cursor..self.cursor + take;
            self.mark(r.clone());
            match out.last_mut() {
                Some(l) if l.end == r.start => l.end = r.end,
                _ => out.push(r),
            }
            self.cursor += take;
            self.free -= take;
            self.allocated += take;
            n -= take;
        }
        out
    }

    /// Blocks handed out so far (past the end included).
    pub fn allocated(&self) -> u64 {
        self.allocated
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inode_slots_are_the_path_s_own_and_probe_past_taken_ones() {
        let mut a = InodeSlots::new(12, 64, false);
        let x = a.take(b"/usr/bin/x").unwrap();
        let mut b = InodeSlots::new(12, 64, false);
        b.take(b"/etc/other").unwrap();
        let x2 = b.take(b"/usr/bin/x").unwrap();
        // The same slot unless the other path took it first.
        let other = InodeSlots::new(12, 64, false).take(b"/etc/other").unwrap();
        if other != x {
            assert_eq!(x, x2);
        }
        // By directory: a directory's files share 512 KiB of inode table.
        let mut d = InodeSlots::new(12, 1 << 16, true);
        let blocks: std::collections::BTreeSet<u32> = (0..100)
            .map(|i| (d.take(format!("/usr/share/doc/x/f{i}").as_bytes()).unwrap() - 12) / 2048)
            .collect();
        assert_eq!(blocks.len(), 1);
        // Every slot can be handed out, then none.
        let mut c = InodeSlots::new(12, 8, true);
        let mut got: Vec<u32> = (0..8)
            .map(|i| c.take(format!("/f{i}").as_bytes()).unwrap())
            .collect();
        got.sort();
        assert_eq!(got, (12..20).collect::<Vec<_>>());
        assert_eq!(c.take(b"/one-more"), None);
        assert_eq!(InodeSlots::span_for(20_000, 131_072), 65_536);
        assert_eq!(InodeSlots::span_for(30_000, 131_072), 65_536);
        assert_eq!(InodeSlots::span_for(70_000, 131_072), 131_072);
    }

    #[test]
    fn block_space_skips_used_runs_wraps_and_counts_past_the_end() {
        let mut s = BlockSpace::new(1024, &[0..10, 200..300]);
        s.seek(130);
        assert_eq!(s.cursor, 128);
        assert_eq!(s.alloc(80), vec![128..200, 300..308]);
        // 128..308 is taken now: the next free aligned block is 384.
        s.seek(130);
        assert_eq!(s.cursor, 384);
        s.seek(1000);
        assert_eq!(s.alloc(30), vec![896..926]);
        let free = 1024 - 10 - 100 - 80 - 30;
        let runs = s.alloc(free + 5);
        let total: u64 = runs.iter().map(|r| r.end - r.start).sum();
        assert_eq!(total, free + 5);
        assert_eq!(runs.last().unwrap().clone(), 1024..1029);
        assert_eq!(s.allocated(), 80 + 30 + free + 5);
    }
}
