//! Group and filesystem summaries computed from a finished [`Plan`]: bitmaps, free counts,
//! group descriptors and the superblock.

use super::bitmap;
use super::group_desc::{GroupDesc, BG_INODE_UNINIT, BG_INODE_ZEROED, DESC_SIZE};
use super::inode::{self, FIRST_INO, JOURNAL_INO};
use super::layout::{self, BLOCKS_PER_GROUP, BLOCK_SIZE};
use super::superblock::{self as sb, Superblock};
use super::writer::Plan;
use std::ops::Range;

impl Plan {
    pub(super) fn group_len(&self, g: u64) -> u64 {
        (self.geo.blocks_count - g * BLOCKS_PER_GROUP).min(BLOCKS_PER_GROUP)
    }

    /// Used blocks of group `g`, group-relative.
    pub(super) fn group_used(&self, g: u64) -> impl Iterator<Item = Range<u64>> + '_ {
        let start = g * BLOCKS_PER_GROUP;
        let end = start + self.group_len(g);
        let i = self.used.partition_point(|r| r.end <= start);
        self.used[i..]
            .iter()
            .take_while(move |r| r.start < end)
            .map(move |r| r.start.max(start) - start..r.end.min(end) - start)
    }

    pub(super) fn block_bitmap(&self, g: u64) -> Vec<u8> {
        bitmap::encode(self.group_len(g), self.group_used(g))
    }

    /// Group `g`'s slice of the in-use flags (shorter or empty past the last inode planned).
    fn group_in_use(&self, g: u64) -> &[bool] {
        let ipg = self.geo.inodes_per_group as usize;
        let n = self.in_use.len();
        let first = (g as usize * ipg).min(n);
        &self.in_use[first..(first + ipg).min(n)]
    }

    /// Inodes in use in group `g`.
    pub(super) fn group_inodes(&self, g: u64) -> u64 {
        self.group_in_use(g).iter().filter(|&&u| u).count() as u64
    }

    /// One past group `g`'s last inode in use: the kernel and e2fsck read the table up to
    /// here (`bg_itable_unused` counts the rest).
    fn group_inode_high(&self, g: u64) -> u64 {
        self.group_in_use(g)
            .iter()
            .rposition(|&u| u)
            .map_or(0, |i| i as u64 + 1)
    }

    /// Runs of group `g`'s inode-table blocks that hold an inode in use, table-relative.
    pub(super) fn group_itable_runs(&self, g: u64) -> Vec<Range<u64>> {
        let ipb = layout::INODES_PER_BLOCK as usize;
        let mut out: Vec<Range<u64>> = Vec::new();
        for (b, inodes) in self.group_in_use(g).chunks(ipb).enumerate() {
            if inodes.iter().any(|&u| u) {
                let b = b as u64;
                match out.last_mut() {
                    Some(l) if l.end == b => l.end = b + 1,
                    _ => out.push(b..b + 1),
                }
            }
        }
        out
    }

    pub(super) fn inode_bitmap(&self, g: u64) -> Vec<u8> {
        let mut runs: Vec<Range<u64>> = Vec::new();
        for (i, &u) in self.group_in_use(g).iter().enumerate() {
            let i = i as u64;
            if u {
                match runs.last_mut() {
                    Some(l) if l.end == i => l.end = i + 1,
                    _ => runs.push(i..i + 1),
                }
            }
        }
        bitmap::encode(self.geo.inodes_per_group, runs)
    }

    pub(super) fn descriptors(&self) -> (Vec<u8>, u64, u64) {
        let geo = &self.geo;
        let mut out = Vec::with_capacity((geo.gdt_blocks * BLOCK_SIZE) as usize);
        let zero_block_csum =
            bitmap::checksum(self.seed, &[0u8; bitmap::BITMAP_BYTES], BLOCKS_PER_GROUP);
        let (mut free_blocks, mut free_inodes) = (0, 0);
        for g in 0..geo.groups {
            let used: u64 = self.group_used(g).map(|r| r.end - r.start).sum();
            let len = self.group_len(g);
            let bb_csum = if used == 0 && len == BLOCKS_PER_GROUP {
                zero_block_csum
            } else {
                bitmap::checksum(self.seed, &self.block_bitmap(g), BLOCKS_PER_GROUP)
            };
            let in_use = self.group_inodes(g);
            let high = self.group_inode_high(g);
            let ipg = geo.inodes_per_group;
            let first = (g * ipg) as usize;
            let dirs = self.is_dir
                [first.min(self.is_dir.len())..(first + high as usize).min(self.is_dir.len())]
                .iter()
                .filter(|&&d| d)
                .count();
            let p = geo.places[g as usize];
            let d = GroupDesc {
                bg_block_bitmap: p.block_bitmap,
                bg_inode_bitmap: p.inode_bitmap,
                bg_inode_table: p.inode_table,
                bg_free_blocks_count: (len - used) as u32,
                bg_free_inodes_count: (ipg - in_use) as u32,
                bg_used_dirs_count: dirs as u32,
                bg_flags: BG_INODE_ZEROED | if in_use == 0 { BG_INODE_UNINIT } else { 0 },
                bg_block_bitmap_csum: bb_csum,
                bg_inode_bitmap_csum: if in_use == 0 {
                    0
                } else {
                    bitmap::checksum(self.seed, &self.inode_bitmap(g), ipg)
                },
                bg_itable_unused: (ipg - high) as u32,
            };
            free_blocks += len - used;
            free_inodes += ipg - in_use;
            out.extend_from_slice(&d.encode(self.seed, g as u32));
        }
        debug_assert_eq!(out.len() as u64, geo.groups * DESC_SIZE as u64);
        out.resize((geo.gdt_blocks * BLOCK_SIZE) as usize, 0);
        (out, free_blocks, free_inodes)
    }

    pub(super) fn superblock(&self, free_blocks: u64, free_inodes: u64) -> Superblock {
        let geo = &self.geo;
        let t = self.opts.time;
        let (secs, _) = inode::encode_time(t);
        let mut label = [0u8; 16];
        label[..self.opts.label.len()].copy_from_slice(self.opts.label.as_bytes());
        let reserved_total: u64 = geo.reserved.iter().map(|r| r.end - r.start).sum();
        Superblock {
            s_inodes_count: (geo.inodes_per_group * geo.groups) as u32,
            s_blocks_count: geo.blocks_count,
            s_r_blocks_count: geo.blocks_count * 5 / 100,
            s_free_blocks_count: free_blocks,
            s_free_inodes_count: free_inodes as u32,
            s_log_block_size: 2,
            s_blocks_per_group: BLOCKS_PER_GROUP as u32,
            s_inodes_per_group: geo.inodes_per_group as u32,
            s_wtime: secs,
            s_max_mnt_count: u16::MAX,
            s_state: 1,  // clean
            s_errors: 1, // continue
            s_lastcheck: secs,
            s_rev_level: 1,
            s_first_ino: FIRST_INO,
            s_inode_size: inode::INODE_SIZE as u16,
            s_block_group_nr: 0,
            s_feature_compat: sb::COMPAT_HAS_JOURNAL | sb::COMPAT_EXT_ATTR | sb::COMPAT_DIR_INDEX,
            s_feature_incompat: sb::INCOMPAT_FILETYPE
                | sb::INCOMPAT_EXTENTS
                | sb::INCOMPAT_64BIT
                | sb::INCOMPAT_FLEX_BG,
            s_feature_ro_compat: sb::RO_COMPAT_SPARSE_SUPER
                | sb::RO_COMPAT_LARGE_FILE
                | sb::RO_COMPAT_HUGE_FILE
                | sb::RO_COMPAT_DIR_NLINK
                | sb::RO_COMPAT_EXTRA_ISIZE
                | sb::RO_COMPAT_METADATA_CSUM,
            s_uuid: self.opts.uuid,
            s_volume_name: label,
            s_journal_inum: JOURNAL_INO,
            s_hash_seed: self.opts.hash_seed,
            s_def_hash_version: sb::DX_HASH_HALF_MD4,
            s_jnl_backup_type: sb::JNL_BACKUP_BLOCKS,
            s_desc_size: DESC_SIZE as u16,
            s_default_mount_opts: sb::DEFM_XATTR_USER | sb::DEFM_ACL,
            s_mkfs_time: secs,
            s_jnl_blocks: self.jnl_blocks,
            s_min_extra_isize: inode::EXTRA_ISIZE,
            s_want_extra_isize: inode::EXTRA_ISIZE,
            s_flags: sb::FLAGS_SIGNED_HASH,
            s_log_groups_per_flex: geo.flex_groups.trailing_zeros() as u8,
            s_checksum_type: sb::CHECKSUM_TYPE_CRC32C,
            s_overhead_clusters: (reserved_total + geo.journal_blocks) as u32,
            s_time_hi: ((t.secs >> 32) & 0xff) as u8,
        }
    }
}
