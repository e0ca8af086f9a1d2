//! The streaming writer: plans every inode and block from the tree (sizes and hole maps only),
//! then emits the filesystem in ascending block order.

use super::csum::{fs_seed, inode_seed};
use super::dirent::{self, DirEntry, USABLE};
use super::errors::{content_err, does_not_fit, too_small};
use super::extent::{self, Extent};
use super::htree;
use super::inode::{self, Inode, EXT4_EXTENTS_FL, EXT4_INDEX_FL, FIRST_INO, JOURNAL_INO, ROOT_INO};
use super::journal::JournalSuperblock;
use super::layout::{self, Geometry, LayoutError, BLOCKS_PER_GROUP, BLOCK_SIZE};
use super::place::{self, BlockSpace, InodeSlots, Placement};
use super::superblock::{self as sb, Superblock};
use super::xattr::{self, Xattr};
use super::{Ext4Error, Ext4Options, Ext4Report};
use crate::sink::BlockSink;
use crate::tree::{ContentReader, Kind, NodeId, Time, Tree};
use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;

const LPF_NAME: &[u8] = b"lost+found";
/// mke2fs makes lost+found 16 KiB so e2fsck can reconnect files without allocating.
const LPF_BLOCKS: u64 = 4;
/// EXT4_LINK_MAX (fs/ext4/ext4.h): the most names a file may have (link(2) answers EMLINK at
/// it), and the most links a directory's count may show. A directory's count is 2 + its
/// subdirectories; past the limit, with dir_nlink, the kernel (ext4_inc_count: `i_nlink >
/// EXT4_LINK_MAX`) and e2fsck (pass 4: `link_counted > EXT2_LINK_MAX`) both use 1, "too many
/// to count". At exactly 65,000 the count is kept: e2fsck -fy would rewrite a 1 there.
pub const EXT4_LINK_MAX: u64 = 65000;

/// The largest file an extent-mapped inode can hold: logical blocks are 32-bit, so the last
/// one is 2^32 - 1 (the kernel's ext4_max_size for extents and 4 KiB blocks).
pub const MAX_FILE_SIZE: u64 = ((1 << 32) - 1) * BLOCK_SIZE;
const IO_CHUNK: usize = 1 << 20;

/// What goes into one range of blocks.
enum Payload {
    Bytes(Vec<u8>),
    /// Superblock (and descriptor table) copy of group `g`.
    Super(u64),
    BlockBitmap(u64),
    InodeBitmap(u64),
    /// `count` inode-table blocks of group `g` from its block `first`.
    InodeTable {
        g: u64,
        first: u64,
        count: u64,
    },
    /// `count` blocks of file `walk_idx`'s data from logical block `logical`.
    File {
        walk_idx: usize,
        logical: u64,
        count: u64,
    },
}

struct Item {
    block: u64,
    payload: Payload,
}

/// The complete plan of a filesystem. It holds no borrow of the tree it was made from, so a
/// build keeps the plan its fit check made until the disk is written; [`Plan::emit`] takes that
/// same tree again.
pub struct Plan {
    /// The planned tree's node count: a cheap check that [`Plan::emit`] gets the same tree.
    pub(super) arena_len: usize,
    pub(super) walk: Vec<(Vec<u8>, NodeId)>,
    pub(super) opts: Ext4Options,
    pub(super) geo: Geometry,
    pub(super) seed: u32,
    /// Encoded inodes 1..=inodes.len() (all zeros where unused).
    pub(super) inodes: Vec<[u8; inode::INODE_SIZE]>,
    pub(super) is_dir: Vec<bool>,
    /// Whether inode `i + 1` is in use.
    pub(super) in_use: Vec<bool>,
    pub(super) inodes_used: u64,
    items: Vec<Item>,
    /// Every used block, sorted and merged.
    pub(super) used: Vec<Range<u64>>,
    pub(super) used_blocks: u64,
    pub(super) jnl_blocks: [u32; 17],
}

pub(super) fn path_str(p: &[u8]) -> String {
    String::from_utf8_lossy(p).into_owned()
}

fn file_type(kind: &Kind) -> u8 {
    match kind {
        Kind::Dir(_) => dirent::FT_DIR,
        Kind::File(_) => dirent::FT_REG_FILE,
        Kind::Symlink(_) => dirent::FT_SYMLINK,
        Kind::CharDev { .. } => dirent::FT_CHRDEV,
        Kind::BlockDev { .. } => dirent::FT_BLKDEV,
        Kind::Fifo => dirent::FT_FIFO,
        Kind::Socket => dirent::FT_SOCK,
    }
}

/// File blocks holding data: every 4 KiB block that any data range touches, as runs.
fn data_blocks(ranges: &[Range<u64>], len: u64) -> Vec<Range<u64>> {
    let mut out: Vec<Range<u64>> = Vec::new();
    for r in ranges {
        let end = r.end.min(len);
        if r.start >= end {
            continue;
        }
        let b = r.start / BLOCK_SIZE..end.div_ceil(BLOCK_SIZE);
        match out.last_mut() {
            Some(l) if l.end >= b.start => l.end = l.end.max(b.end),
            _ => out.push(b),
        }
    }
    out
}

/// Allocation that records what it hands out.
struct Alloc {
    a: BlockSpace,
    runs: Vec<Range<u64>>,
}

impl Alloc {
    fn alloc(&mut self, n: u64) -> Vec<Range<u64>> {
        let r = self.a.alloc(n);
        self.runs.extend(r.iter().cloned());
        r
    }
    fn one(&mut self) -> u64 {
        self.alloc(1)[0].start
    }
}

impl Plan {
    /// Plans with `opts.placement`; a stable placement that does not fit (its fragments cost
    /// extent blocks) falls back to the packed one, which fits whatever fits at all.
    pub fn new(tree: &Tree, opts: &Ext4Options) -> Result<Plan, Ext4Error> {
        match Self::with(tree, opts, opts.placement) {
            Err(Ext4Error::DoesNotFit { .. }) if opts.placement != Placement::Packed => {
                Self::with(tree, opts, Placement::Packed)
            }
            r => r,
        }
    }

    fn with(tree: &Tree, opts: &Ext4Options, placement: Placement) -> Result<Plan, Ext4Error> {
        if opts.label.len() > 16 {
            return Err(Ext4Error::LabelTooLong {
                label: opts.label.clone(),
                len: opts.label.len(),
            });
        }
        let walk = tree.walk();
        let synth_lpf = tree.child(Tree::ROOT, LPF_NAME).is_none();
        let inodes_needed = (FIRST_INO as u64 - 1) + synth_lpf as u64 + (walk.len() as u64 - 1);
        let blocks = opts.size / BLOCK_SIZE;
        let geo = match layout::geometry(blocks, inodes_needed) {
            Ok(g) => g,
            Err(LayoutError::TooManyInodes { .. }) => {
                layout::geometry(blocks, 0).map_err(|_| too_small(opts.size))?
            }
            Err(LayoutError::TooSmall { .. }) => return Err(too_small(opts.size)),
        };
        let inodes_total = geo.inodes_per_group * geo.groups;
        // Inode numbers: lost+found takes 11 when kiln makes it; the others in walk order
        // (packed) or from their paths' hashes (stable: FIRST_INO + 1 onwards, whether kiln
        // makes lost+found or not, so that numbers do not depend on it).
        let mut ino_of = vec![0u32; tree.arena_len()];
        let mut max_ino = FIRST_INO;
        if placement.stable() && inodes_needed <= inodes_total {
            let first = FIRST_INO + 1;
            let span = InodeSlots::span_for(inodes_needed, inodes_total - u64::from(first) + 1);
            let mut slots = InodeSlots::new(first, span, placement == Placement::Stable);
            for (i, (path, id)) in walk.iter().enumerate() {
                let ino = if i == 0 {
                    ROOT_INO
                } else {
                    // inodes_needed <= inodes_total and the span holds twice the need, or
                    // every number there is.
                    slots.take(path).expect("the span holds every inode")
                };
                ino_of[id.0 as usize] = ino;
                max_ino = max_ino.max(ino);
            }
        } else {
            let mut next = FIRST_INO + synth_lpf as u32;
            for (i, (_, id)) in walk.iter().enumerate() {
                ino_of[id.0 as usize] = if i == 0 {
                    ROOT_INO
                } else {
                    next += 1;
                    next - 1
                };
            }
            max_ino = max_ino.max(next - 1);
        }
        let seed = fs_seed(&opts.uuid);
        let mut plan = Plan {
            arena_len: tree.arena_len(),
            walk: Vec::new(),
            opts: opts.clone(),
            geo,
            seed,
            inodes: vec![[0u8; inode::INODE_SIZE]; max_ino as usize],
            is_dir: vec![false; max_ino as usize],
            in_use: vec![false; max_ino as usize],
            inodes_used: inodes_needed,
            items: Vec::new(),
            used: Vec::new(),
            used_blocks: 0,
            jnl_blocks: [0; 17],
        };
        // Inodes 1..FIRST_INO are reserved: in use whether written or not.
        plan.in_use[..FIRST_INO as usize - 1].fill(true);
        let reserved = plan.geo.reserved.clone();
        let mut al = Alloc {
            a: BlockSpace::new(plan.geo.blocks_count, &reserved),
            runs: Vec::new(),
        };
        plan.plan_journal(&mut al);
        if synth_lpf {
            plan.plan_lost_found(&mut al);
        }
        let links = tree.link_counts();
        // More names than link(2) allows: the count would be capped, and deleting the extra
        // names on a mounted image would free the inode while names still point at it.
        if let Some((path, id)) = walk.iter().find(|(_, id)| {
            !tree.node(*id).is_dir() && u64::from(links[id.0 as usize]) > EXT4_LINK_MAX
        }) {
            return Err(Ext4Error::TooManyLinks {
                path: path_str(path),
                links: u64::from(links[id.0 as usize]),
            });
        }
        let mut parent_of = vec![0u32; tree.arena_len()];
        parent_of[0] = ROOT_INO;
        let (mut chunk_start, mut prev_big) = (al.a.allocated(), false);
        for (walk_idx, (path, id)) in walk.iter().enumerate() {
            let ino = ino_of[id.0 as usize];
            if placement.stable() {
                let need = match &tree.node(*id).kind {
                    Kind::File(c) => c.len().div_ceil(BLOCK_SIZE),
                    Kind::Dir(_) => 1,
                    _ => 0,
                };
                let chunk = al.a.allocated() - chunk_start;
                if walk_idx == 0 || place::cuts_before(path, chunk, need, prev_big) {
                    al.a.seek(place::chunk_home(path, plan.geo.blocks_count));
                    chunk_start = al.a.allocated();
                }
                prev_big = need >= place::CHUNK_MAX;
            }
            plan.plan_node(
                tree,
                &mut al,
                walk_idx,
                path,
                *id,
                ino,
                &ino_of,
                &mut parent_of,
                &links,
                synth_lpf,
            )?;
        }
        plan.walk = walk;

        let reserved_total: u64 = reserved.iter().map(|r| r.end - r.start).sum();
        plan.used_blocks = reserved_total + al.a.allocated();
        if plan.used_blocks > plan.geo.blocks_count || inodes_needed > inodes_total {
            return Err(does_not_fit(
                plan.used_blocks,
                plan.geo.blocks_count,
                inodes_needed,
                inodes_total,
            ));
        }
        let mut used = reserved.clone();
        used.extend(al.runs);
        plan.used = layout::merge(used);
        Ok(plan)
    }

    pub fn report(&self) -> Ext4Report {
        Ext4Report {
            blocks_total: self.geo.blocks_count,
            blocks_used: self.used_blocks,
            inodes_total: self.geo.inodes_per_group * self.geo.groups,
            inodes_used: self.inodes_used,
        }
    }

    fn clamp(&self, t: Time) -> Time {
        t.clamp_to(self.opts.time)
    }

    fn set_inode(&mut self, ino: u32, inode: &Inode) {
        self.inodes[ino as usize - 1] = inode.encode(self.seed, ino);
        self.in_use[ino as usize - 1] = true;
    }

    /// Maps logical runs to freshly allocated blocks; returns the extents.
    fn alloc_extents(
        al: &mut Alloc,
        logical: impl IntoIterator<Item = Range<u64>>,
    ) -> (Vec<Extent>, Vec<(u64, Range<u64>)>) {
        let mut map = Vec::new();
        for l in logical {
            let mut at = l.start;
            for p in al.alloc(l.end - l.start) {
                let n = p.end - p.start;
                map.push((at, p));
                at += n;
            }
        }
        (extent::extents_from_runs(&map), map)
    }

    /// Builds the extent tree of inode `ino`, allocating its tree blocks; returns the i_block
    /// root and the number of tree blocks.
    fn extent_root(&mut self, al: &mut Alloc, ino: u32, extents: &[Extent]) -> ([u8; 60], u64) {
        let n = extent::tree_blocks(extents.len());
        let free: Vec<u64> = (0..n).map(|_| al.one()).collect();
        let t = extent::build(extents, &free, self.seed, ino);
        for (b, bytes) in t.blocks {
            self.items.push(Item {
                block: b,
                payload: Payload::Bytes(bytes),
            });
        }
        (t.root, n)
    }

    fn plan_journal(&mut self, al: &mut Alloc) {
        let jb = self.geo.journal_blocks;
        let (extents, map) = Self::alloc_extents(al, std::iter::once(0..jb));
        let jsb = JournalSuperblock::empty(jb as u32, self.opts.uuid);
        self.items.push(Item {
            block: map[0].1.start,
            payload: Payload::Bytes(jsb.encode()),
        });
        let (root, tree) = self.extent_root(al, JOURNAL_INO, &extents);
        let t = self.opts.time;
        let size = jb * BLOCK_SIZE;
        let ino = Inode {
            i_mode: 0o100600,
            size,
            atime: t,
            ctime: t,
            mtime: t,
            crtime: t,
            i_links_count: 1,
            blocks_512: (jb + tree) * 8,
            i_flags: EXT4_EXTENTS_FL,
            i_block: root,
            ..Default::default()
        };
        self.set_inode(JOURNAL_INO, &ino);
        // s_jnl_blocks: a copy of i_block, then i_size_high and i_size.
        for i in 0..15 {
            self.jnl_blocks[i] = u32::from_le_bytes(root[4 * i..4 * i + 4].try_into().unwrap());
        }
        self.jnl_blocks[15] = (size >> 32) as u32;
        self.jnl_blocks[16] = size as u32;
    }

    fn plan_lost_found(&mut self, al: &mut Alloc) {
        let ino = FIRST_INO;
        let seed = inode_seed(self.seed, ino, 0);
        let (extents, map) = Self::alloc_extents(al, std::iter::once(0..LPF_BLOCKS));
        let dots = dot_entries(ino, ROOT_INO);
        let mut blocks = vec![dirent::encode_block(&dots, seed)];
        for _ in 1..LPF_BLOCKS {
            blocks.push(dirent::encode_block(&[], seed));
        }
        self.push_dir_blocks(&map, blocks);
        let (root, tree) = self.extent_root(al, ino, &extents);
        let t = self.opts.time;
        let inode = Inode {
            i_mode: 0o40700,
            size: LPF_BLOCKS * BLOCK_SIZE,
            atime: t,
            ctime: t,
            mtime: t,
            crtime: t,
            i_links_count: 2,
            blocks_512: (LPF_BLOCKS + tree) * 8,
            i_flags: EXT4_EXTENTS_FL,
            i_block: root,
            ..Default::default()
        };
        self.is_dir[ino as usize - 1] = true;
        self.set_inode(ino, &inode);
    }

    fn push_dir_blocks(&mut self, map: &[(u64, Range<u64>)], blocks: Vec<Vec<u8>>) {
        let mut blocks = blocks.into_iter();
        for (_, phys) in map {
            for b in phys.clone() {
                self.items.push(Item {
                    block: b,
                    payload: Payload::Bytes(blocks.next().unwrap()),
                });
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn plan_node(
        &mut self,
        tree: &Tree,
        al: &mut Alloc,
        walk_idx: usize,
        path: &[u8],
        id: NodeId,
        ino: u32,
        ino_of: &[u32],
        parent_of: &mut [u32],
        links: &[u32],
        synth_lpf: bool,
    ) -> Result<(), Ext4Error> {
        let node = tree.node(id);
        let meta = &node.meta;
        let t = self.clamp(meta.mtime);
        let mut inode = Inode {
            i_mode: (node.type_bits() | (meta.mode & 0o7777)) as u16,
            uid: meta.uid,
            gid: meta.gid,
            atime: t,
            ctime: t,
            mtime: t,
            crtime: t,
            // Directories get theirs below; a file over the limit was refused in Plan::new.
            i_links_count: links[id.0 as usize].min(EXT4_LINK_MAX as u32) as u16,
            ..Default::default()
        };
        // Extended attributes: in the inode while they fit, the rest in one block.
        let xattrs: Vec<Xattr> = meta
            .xattrs
            .iter()
            .map(|(k, v)| Xattr::from_full(k, v))
            .collect::<Result<_, _>>()
            .map_err(|source| Ext4Error::Xattr {
                path: path_str(path),
                source,
            })?;
        let (ibody, block) = xattr::split(&xattrs).map_err(|source| Ext4Error::Xattr {
            path: path_str(path),
            source,
        })?;
        inode.ibody_xattr = xattr::encode_ibody(&ibody);
        if !block.is_empty() {
            let b = al.one();
            self.items.push(Item {
                block: b,
                payload: Payload::Bytes(xattr::encode_block(&block, self.seed, b)),
            });
            inode.file_acl = b;
            inode.blocks_512 += 8;
        }
        match &node.kind {
            Kind::Dir(children) => {
                let parent = parent_of[id.0 as usize];
                let mut entries = Vec::with_capacity(children.len() + 1);
                let mut subdirs = 0u64;
                for (name, &child) in children {
                    if name.len() > dirent::NAME_MAX {
                        let mut p = path.to_vec();
                        p.push(b'/');
                        p.extend_from_slice(name);
                        return Err(Ext4Error::NameTooLong {
                            path: path_str(&p),
                            len: name.len(),
                        });
                    }
                    let ck = &tree.node(child).kind;
                    if matches!(ck, Kind::Dir(_)) {
                        subdirs += 1;
                        if parent_of[child.0 as usize] == 0 {
                            parent_of[child.0 as usize] = ino;
                        }
                    }
                    entries.push(DirEntry {
                        inode: ino_of[child.0 as usize],
                        file_type: file_type(ck),
                        name: name.clone(),
                    });
                }
                if ino == ROOT_INO && synth_lpf {
                    subdirs += 1;
                    entries.push(DirEntry {
                        inode: FIRST_INO,
                        file_type: dirent::FT_DIR,
                        name: LPF_NAME.to_vec(),
                    });
                    entries.sort_by(|a, b| a.name.cmp(&b.name));
                }
                let seed = inode_seed(self.seed, ino, 0);
                let linear: usize = 24 + entries.iter().map(|e| e.min_rec_len()).sum::<usize>();
                let blocks = if linear <= USABLE {
                    let mut all = dot_entries(ino, parent);
                    all.extend(entries);
                    vec![dirent::encode_block(&all, seed)]
                } else {
                    inode.i_flags |= EXT4_INDEX_FL;
                    htree::build(ino, parent, &entries, &self.opts.hash_seed, seed).ok_or_else(
                        || Ext4Error::DirectoryTooBig {
                            path: path_str(path),
                        },
                    )?
                };
                let n = blocks.len() as u64;
                let (extents, map) = Self::alloc_extents(al, std::iter::once(0..n));
                self.push_dir_blocks(&map, blocks);
                let (root, tree) = self.extent_root(al, ino, &extents);
                inode.i_block = root;
                inode.i_flags |= EXT4_EXTENTS_FL;
                inode.size = n * BLOCK_SIZE;
                inode.blocks_512 += (n + tree) * 8;
                let nlink = 2 + subdirs;
                inode.i_links_count = if nlink > EXT4_LINK_MAX {
                    1
                } else {
                    nlink as u16
                };
                self.is_dir[ino as usize - 1] = true;
            }
            Kind::File(content) => {
                let len = content.len();
                if len > MAX_FILE_SIZE {
                    return Err(Ext4Error::FileTooBig {
                        path: path_str(path),
                        len,
                    });
                }
                let ranges = content
                    .data_ranges()
                    .map_err(|e| content_err(path, content, e))?;
                let logical = data_blocks(&ranges, len);
                let (extents, map) = Self::alloc_extents(al, logical.iter().cloned());
                for (l, phys) in map {
                    self.items.push(Item {
                        block: phys.start,
                        payload: Payload::File {
                            walk_idx,
                            logical: l,
                            count: phys.end - phys.start,
                        },
                    });
                }
                let data: u64 = logical.iter().map(|r| r.end - r.start).sum();
                let (root, tree) = self.extent_root(al, ino, &extents);
                inode.i_block = root;
                inode.i_flags |= EXT4_EXTENTS_FL;
                inode.size = len;
                inode.blocks_512 += (data + tree) * 8;
            }
            Kind::Symlink(target) => {
                inode.size = target.len() as u64;
                if target.len() < 60 {
                    inode.i_block[..target.len()].copy_from_slice(target);
                } else if target.len() < BLOCK_SIZE as usize {
                    let (extents, map) = Self::alloc_extents(al, std::iter::once(0..1));
                    let mut b = vec![0u8; BLOCK_SIZE as usize];
                    b[..target.len()].copy_from_slice(target);
                    self.push_dir_blocks(&map, vec![b]);
                    let (root, _) = self.extent_root(al, ino, &extents);
                    inode.i_block = root;
                    inode.i_flags |= EXT4_EXTENTS_FL;
                    inode.blocks_512 += 8;
                } else {
                    return Err(Ext4Error::SymlinkTooLong {
                        path: path_str(path),
                        len: target.len(),
                    });
                }
            }
            Kind::CharDev { major, minor } | Kind::BlockDev { major, minor } => {
                inode.i_block = inode::encode_dev(*major, *minor);
            }
            Kind::Fifo | Kind::Socket => {}
        }
        self.set_inode(ino, &inode);
        Ok(())
    }

    /// Writes everything, in ascending block order, reading file data from `tree`: the tree
    /// this plan was made from.
    pub fn emit(&self, tree: &Tree, sink: &mut dyn BlockSink) -> Result<(), Ext4Error> {
        debug_assert_eq!(
            tree.arena_len(),
            self.arena_len,
            "a plan emitted for another tree"
        );
        let geo = &self.geo;
        let (gdt, free_blocks, free_inodes) = self.descriptors();
        let sblock = self.superblock(free_blocks, free_inodes);
        let mut items: Vec<Item> = Vec::new();
        for g in (0..geo.groups).filter(|&g| layout::has_super(g)) {
            items.push(Item {
                block: g * BLOCKS_PER_GROUP,
                payload: Payload::Super(g),
            });
        }
        for g in 0..geo.groups {
            let p = geo.places[g as usize];
            let unfilled = self.group_len(g) < BLOCKS_PER_GROUP;
            if unfilled || self.group_used(g).next().is_some() {
                items.push(Item {
                    block: p.block_bitmap,
                    payload: Payload::BlockBitmap(g),
                });
            }
            if self.group_inodes(g) > 0 {
                items.push(Item {
                    block: p.inode_bitmap,
                    payload: Payload::InodeBitmap(g),
                });
                // The table blocks holding an inode in use; the others stay zeros.
                for r in self.group_itable_runs(g) {
                    items.push(Item {
                        block: p.inode_table + r.start,
                        payload: Payload::InodeTable {
                            g,
                            first: r.start,
                            count: r.end - r.start,
                        },
                    });
                }
            }
        }
        // The planned items are borrowed, not moved: emit merges both sorted lists.
        let mut planned: Vec<&Item> = self.items.iter().collect();
        planned.sort_by_key(|i| i.block);
        items.sort_by_key(|i| i.block);
        let mut a = items.iter().peekable();
        let mut b = planned.into_iter().peekable();
        let mut w = Emitter {
            sink,
            pos: 0,
            open: None,
        };
        loop {
            let next = match (a.peek(), b.peek()) {
                (Some(x), Some(y)) if x.block <= y.block => a.next().unwrap(),
                (Some(_), None) => a.next().unwrap(),
                (_, Some(_)) => b.next().unwrap(),
                (None, None) => break,
            };
            self.emit_item(tree, &mut w, next, &sblock, &gdt)?;
        }
        Ok(())
    }

    fn emit_item(
        &self,
        tree: &Tree,
        w: &mut Emitter,
        item: &Item,
        sblock: &Superblock,
        gdt: &[u8],
    ) -> Result<(), Ext4Error> {
        let at = item.block * BLOCK_SIZE;
        match &item.payload {
            Payload::Bytes(b) => w.put(at, b),
            Payload::Super(g) => {
                let mut s = sblock.clone();
                s.s_block_group_nr = *g as u16;
                let mut b = vec![0u8; BLOCK_SIZE as usize];
                // The primary superblock sits 1024 bytes in; backups start their block.
                let off = if *g == 0 { 1024 } else { 0 };
                b[off..off + sb::SUPERBLOCK_SIZE].copy_from_slice(&s.encode());
                b.extend_from_slice(gdt);
                w.put(at, &b)
            }
            Payload::BlockBitmap(g) => w.put(at, &self.block_bitmap(*g)),
            Payload::InodeBitmap(g) => w.put(at, &self.inode_bitmap(*g)),
            Payload::InodeTable { g, first, count } => {
                let ipb = layout::INODES_PER_BLOCK;
                let start = (g * self.geo.inodes_per_group + first * ipb) as usize;
                let end = (start + (count * ipb) as usize).min(self.inodes.len());
                let mut b = Vec::with_capacity((count * BLOCK_SIZE) as usize);
                for i in &self.inodes[start..end] {
                    b.extend_from_slice(i);
                }
                w.put(at, &b)
            }
            Payload::File {
                walk_idx,
                logical,
                count,
            } => self.emit_file(tree, w, at, *walk_idx, *logical, *count),
        }
    }

    fn emit_file(
        &self,
        tree: &Tree,
        w: &mut Emitter,
        at: u64,
        walk_idx: usize,
        logical: u64,
        count: u64,
    ) -> Result<(), Ext4Error> {
        let (path, id) = &self.walk[walk_idx];
        let Kind::File(content) = &tree.node(*id).kind else {
            unreachable!("file payload on a non-file")
        };
        if !matches!(&w.open, Some((i, _)) if *i == walk_idx) {
            let r = content.open().map_err(|e| content_err(path, content, e))?;
            w.open = Some((walk_idx, r));
        }
        let start = logical * BLOCK_SIZE;
        let want = (count * BLOCK_SIZE).min(content.len() - start);
        w.open
            .as_mut()
            .unwrap()
            .1
            .seek(SeekFrom::Start(start))
            .map_err(|e| content_err(path, content, e))?;
        let mut buf = vec![0u8; IO_CHUNK.min((count * BLOCK_SIZE) as usize)];
        let mut done = 0u64;
        while done < count * BLOCK_SIZE {
            let n = buf.len().min((count * BLOCK_SIZE - done) as usize);
            let real = (want.saturating_sub(done) as usize).min(n);
            buf[..n].fill(0);
            let reader = &mut w.open.as_mut().unwrap().1;
            reader.read_exact(&mut buf[..real]).map_err(|e| {
                let e = if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    std::io::Error::new(
                        e.kind(),
                        format!("it ended before its recorded {} bytes", content.len()),
                    )
                } else {
                    e
                };
                content_err(path, content, e)
            })?;
            w.put(at + done, &buf[..n])?;
            done += n as u64;
        }
        Ok(())
    }
}

struct Emitter<'s> {
    sink: &'s mut dyn BlockSink,
    pos: u64,
    open: Option<(usize, ContentReader)>,
}

impl Emitter<'_> {
    fn put(&mut self, at: u64, b: &[u8]) -> Result<(), Ext4Error> {
        debug_assert!(
            at >= self.pos,
            "write at {at} overlaps the previous one ending at {}",
            self.pos
        );
        self.sink
            .write_at(at, b)
            .map_err(|source| Ext4Error::Sink { offset: at, source })?;
        self.pos = at + b.len() as u64;
        Ok(())
    }
}

fn dot_entries(ino: u32, parent: u32) -> Vec<DirEntry> {
    vec![
        DirEntry {
            inode: ino,
            file_type: dirent::FT_DIR,
            name: b".".to_vec(),
        },
        DirEntry {
            inode: parent,
            file_type: dirent::FT_DIR,
            name: b"..".to_vec(),
        },
    ]
}
