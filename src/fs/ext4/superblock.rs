//! The ext4 superblock: 1024 bytes at byte 1024 of the fs, and backups at the start of the
//! groups `sparse_super` picks.
//! <https://docs.kernel.org/filesystems/ext4/globals.html#super-block>

use super::bytes::*;
use super::csum::crc32c_raw;

pub const EXT4_SUPER_MAGIC: u16 = 0xEF53;
pub const SUPERBLOCK_SIZE: usize = 1024;

pub const COMPAT_HAS_JOURNAL: u32 = 0x4;
pub const COMPAT_EXT_ATTR: u32 = 0x8;
pub const COMPAT_DIR_INDEX: u32 = 0x20;
pub const INCOMPAT_FILETYPE: u32 = 0x2;
pub const INCOMPAT_EXTENTS: u32 = 0x40;
pub const INCOMPAT_64BIT: u32 = 0x80;
pub const INCOMPAT_FLEX_BG: u32 = 0x200;
pub const RO_COMPAT_SPARSE_SUPER: u32 = 0x1;
pub const RO_COMPAT_LARGE_FILE: u32 = 0x2;
pub const RO_COMPAT_HUGE_FILE: u32 = 0x8;
pub const RO_COMPAT_DIR_NLINK: u32 = 0x20;
pub const RO_COMPAT_EXTRA_ISIZE: u32 = 0x40;
pub const RO_COMPAT_METADATA_CSUM: u32 = 0x400;
/// `s_flags`: directory hashes treat name bytes as signed chars, as mke2fs records on x86.
pub const FLAGS_SIGNED_HASH: u32 = 0x1;
/// `s_default_mount_opts`: user_xattr and acl, as mke2fs.conf's default_mntopts.
pub const DEFM_XATTR_USER: u32 = 0x4;
pub const DEFM_ACL: u32 = 0x8;
pub const DX_HASH_HALF_MD4: u8 = 1;
/// `s_jnl_backup_type`: `s_jnl_blocks` holds a copy of the journal inode's i_block and size.
pub const JNL_BACKUP_BLOCKS: u8 = 1;
pub const CHECKSUM_TYPE_CRC32C: u8 = 1;

/// The superblock fields kiln sets; everything else is zero.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Superblock {
    pub s_inodes_count: u32,
    pub s_blocks_count: u64,
    pub s_r_blocks_count: u64,
    pub s_free_blocks_count: u64,
    pub s_free_inodes_count: u32,
    pub s_log_block_size: u32,
    pub s_blocks_per_group: u32,
    pub s_inodes_per_group: u32,
    pub s_wtime: u32,
    pub s_max_mnt_count: u16,
    pub s_state: u16,
    pub s_errors: u16,
    pub s_lastcheck: u32,
    pub s_rev_level: u32,
    pub s_first_ino: u32,
    pub s_inode_size: u16,
    pub s_block_group_nr: u16,
    pub s_feature_compat: u32,
    pub s_feature_incompat: u32,
    pub s_feature_ro_compat: u32,
    pub s_uuid: [u8; 16],
    pub s_volume_name: [u8; 16],
    pub s_journal_inum: u32,
    pub s_hash_seed: [u8; 16],
    pub s_def_hash_version: u8,
    pub s_jnl_backup_type: u8,
    pub s_desc_size: u16,
    pub s_default_mount_opts: u32,
    pub s_mkfs_time: u32,
    pub s_jnl_blocks: [u32; 17],
    pub s_min_extra_isize: u16,
    pub s_want_extra_isize: u16,
    pub s_flags: u32,
    pub s_log_groups_per_flex: u8,
    pub s_checksum_type: u8,
    pub s_overhead_clusters: u32,
    /// Upper 8 bits of the 40-bit times (`s_wtime_hi`, `s_mkfs_time_hi`, `s_lastcheck_hi`).
    pub s_time_hi: u8,
}

impl Superblock {
    pub fn encode(&self) -> [u8; SUPERBLOCK_SIZE] {
        let mut b = [0u8; SUPERBLOCK_SIZE];
        put_u32(&mut b, 0x00, self.s_inodes_count);
        put_lo_hi32(&mut b, 0x04, 0x150, self.s_blocks_count);
        put_lo_hi32(&mut b, 0x08, 0x154, self.s_r_blocks_count);
        put_lo_hi32(&mut b, 0x0C, 0x158, self.s_free_blocks_count);
        put_u32(&mut b, 0x10, self.s_free_inodes_count);
        put_u32(&mut b, 0x14, 0); // s_first_data_block: 0 for 4 KiB blocks
        put_u32(&mut b, 0x18, self.s_log_block_size);
        put_u32(&mut b, 0x1C, self.s_log_block_size); // s_log_cluster_size (no bigalloc)
        put_u32(&mut b, 0x20, self.s_blocks_per_group);
        put_u32(&mut b, 0x24, self.s_blocks_per_group); // s_clusters_per_group
        put_u32(&mut b, 0x28, self.s_inodes_per_group);
        put_u32(&mut b, 0x30, self.s_wtime);
        put_u16(&mut b, 0x36, self.s_max_mnt_count);
        put_u16(&mut b, 0x38, EXT4_SUPER_MAGIC);
        put_u16(&mut b, 0x3A, self.s_state);
        put_u16(&mut b, 0x3C, self.s_errors);
        put_u32(&mut b, 0x40, self.s_lastcheck);
        put_u32(&mut b, 0x4C, self.s_rev_level);
        put_u32(&mut b, 0x54, self.s_first_ino);
        put_u16(&mut b, 0x58, self.s_inode_size);
        put_u16(&mut b, 0x5A, self.s_block_group_nr);
        put_u32(&mut b, 0x5C, self.s_feature_compat);
        put_u32(&mut b, 0x60, self.s_feature_incompat);
        put_u32(&mut b, 0x64, self.s_feature_ro_compat);
        b[0x68..0x78].copy_from_slice(&self.s_uuid);
        b[0x78..0x88].copy_from_slice(&self.s_volume_name);
        put_u32(&mut b, 0xE0, self.s_journal_inum);
        b[0xEC..0xFC].copy_from_slice(&self.s_hash_seed);
        b[0xFC] = self.s_def_hash_version;
        b[0xFD] = self.s_jnl_backup_type;
        put_u16(&mut b, 0xFE, self.s_desc_size);
        put_u32(&mut b, 0x100, self.s_default_mount_opts);
        put_u32(&mut b, 0x108, self.s_mkfs_time);
        for (i, w) in self.s_jnl_blocks.iter().enumerate() {
            put_u32(&mut b, 0x10C + 4 * i, *w);
        }
        put_u16(&mut b, 0x15C, self.s_min_extra_isize);
        put_u16(&mut b, 0x15E, self.s_want_extra_isize);
        put_u32(&mut b, 0x160, self.s_flags);
        b[0x174] = self.s_log_groups_per_flex;
        b[0x175] = self.s_checksum_type;
        put_u32(&mut b, 0x248, self.s_overhead_clusters);
        b[0x274] = self.s_time_hi; // s_wtime_hi
        b[0x275] = 0; // s_mtime_hi
        b[0x276] = self.s_time_hi; // s_mkfs_time_hi
        b[0x277] = self.s_time_hi; // s_lastcheck_hi
        let c = checksum(&b);
        put_u32(&mut b, 0x3FC, c);
        b
    }

    pub fn decode(b: &[u8]) -> Option<Superblock> {
        if b.len() < SUPERBLOCK_SIZE || get_u16(b, 0x38) != EXT4_SUPER_MAGIC {
            return None;
        }
        let mut s_jnl_blocks = [0u32; 17];
        for (i, w) in s_jnl_blocks.iter_mut().enumerate() {
            *w = get_u32(b, 0x10C + 4 * i);
        }
        Some(Superblock {
            s_inodes_count: get_u32(b, 0),
            s_blocks_count: get_lo_hi32(b, 0x04, 0x150),
            s_r_blocks_count: get_lo_hi32(b, 0x08, 0x154),
            s_free_blocks_count: get_lo_hi32(b, 0x0C, 0x158),
            s_free_inodes_count: get_u32(b, 0x10),
            s_log_block_size: get_u32(b, 0x18),
            s_blocks_per_group: get_u32(b, 0x20),
            s_inodes_per_group: get_u32(b, 0x28),
            s_wtime: get_u32(b, 0x30),
            s_max_mnt_count: get_u16(b, 0x36),
            s_state: get_u16(b, 0x3A),
            s_errors: get_u16(b, 0x3C),
            s_lastcheck: get_u32(b, 0x40),
            s_rev_level: get_u32(b, 0x4C),
            s_first_ino: get_u32(b, 0x54),
            s_inode_size: get_u16(b, 0x58),
            s_block_group_nr: get_u16(b, 0x5A),
            s_feature_compat: get_u32(b, 0x5C),
            s_feature_incompat: get_u32(b, 0x60),
            s_feature_ro_compat: get_u32(b, 0x64),
            s_uuid: b[0x68..0x78].try_into().unwrap(),
            s_volume_name: b[0x78..0x88].try_into().unwrap(),
            s_journal_inum: get_u32(b, 0xE0),
            s_hash_seed: b[0xEC..0xFC].try_into().unwrap(),
            s_def_hash_version: b[0xFC],
            s_jnl_backup_type: b[0xFD],
            s_desc_size: get_u16(b, 0xFE),
            s_default_mount_opts: get_u32(b, 0x100),
            s_mkfs_time: get_u32(b, 0x108),
            s_jnl_blocks,
            s_min_extra_isize: get_u16(b, 0x15C),
            s_want_extra_isize: get_u16(b, 0x15E),
            s_flags: get_u32(b, 0x160),
            s_log_groups_per_flex: b[0x174],
            s_checksum_type: b[0x175],
            s_overhead_clusters: get_u32(b, 0x248),
            s_time_hi: b[0x274],
        })
    }
}

/// `ext4_superblock_csum`: the raw crc32c register over the first 1020 bytes, seeded with ~0.
pub fn checksum(b: &[u8]) -> u32 {
    crc32c_raw(!0, &b[..0x3FC])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let s = Superblock {
            s_inodes_count: 4096,
            s_blocks_count: 1 << 33,
            s_free_blocks_count: 77,
            s_uuid: [7; 16],
            s_volume_name: *b"root\0\0\0\0\0\0\0\0\0\0\0\0",
            s_jnl_blocks: [3; 17],
            s_log_groups_per_flex: 4,
            s_time_hi: 1,
            ..Default::default()
        };
        let b = s.encode();
        assert_eq!(Superblock::decode(&b).unwrap(), s);
        assert_eq!(get_u32(&b, 0x3FC), checksum(&b));
    }

    /// The kernel seeds with ~0 and stores the register uninverted: the complement of the
    /// standard CRC-32C. (The integration tests check real images with e2fsck.)
    #[test]
    fn checksum_is_raw_register() {
        let z = [0u8; 1024];
        assert_eq!(checksum(&z), !crc32c::crc32c(&z[..1020]));
    }
}
