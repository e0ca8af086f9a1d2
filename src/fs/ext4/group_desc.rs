//! The 64-byte block group descriptor (`64bit` feature).
//! <https://docs.kernel.org/filesystems/ext4/globals.html#block-group-descriptors>

use super::bytes::*;
use super::csum::crc32c_raw;

pub const DESC_SIZE: usize = 64;
/// `bg_flags`: inode table and bitmap not initialised (no inode in use in the group).
pub const BG_INODE_UNINIT: u16 = 0x1;
/// `bg_flags`: the inode table is zeroed on disk.
pub const BG_INODE_ZEROED: u16 = 0x4;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupDesc {
    pub bg_block_bitmap: u64,
    pub bg_inode_bitmap: u64,
    pub bg_inode_table: u64,
    pub bg_free_blocks_count: u32,
    pub bg_free_inodes_count: u32,
    pub bg_used_dirs_count: u32,
    pub bg_flags: u16,
    pub bg_block_bitmap_csum: u32,
    pub bg_inode_bitmap_csum: u32,
    pub bg_itable_unused: u32,
}

impl GroupDesc {
    /// Encodes the descriptor of group `group`, with its checksum.
    pub fn encode(&self, fs_seed: u32, group: u32) -> [u8; DESC_SIZE] {
        let mut b = [0u8; DESC_SIZE];
        put_lo_hi32(&mut b, 0x00, 0x20, self.bg_block_bitmap);
        put_lo_hi32(&mut b, 0x04, 0x24, self.bg_inode_bitmap);
        put_lo_hi32(&mut b, 0x08, 0x28, self.bg_inode_table);
        put_u16(&mut b, 0x0C, self.bg_free_blocks_count as u16);
        put_u16(&mut b, 0x2C, (self.bg_free_blocks_count >> 16) as u16);
        put_u16(&mut b, 0x0E, self.bg_free_inodes_count as u16);
        put_u16(&mut b, 0x2E, (self.bg_free_inodes_count >> 16) as u16);
        put_u16(&mut b, 0x10, self.bg_used_dirs_count as u16);
        put_u16(&mut b, 0x30, (self.bg_used_dirs_count >> 16) as u16);
        put_u16(&mut b, 0x12, self.bg_flags);
        put_u16(&mut b, 0x18, self.bg_block_bitmap_csum as u16);
        put_u16(&mut b, 0x38, (self.bg_block_bitmap_csum >> 16) as u16);
        put_u16(&mut b, 0x1A, self.bg_inode_bitmap_csum as u16);
        put_u16(&mut b, 0x3A, (self.bg_inode_bitmap_csum >> 16) as u16);
        put_u16(&mut b, 0x1C, self.bg_itable_unused as u16);
        put_u16(&mut b, 0x32, (self.bg_itable_unused >> 16) as u16);
        let c = checksum(&b, fs_seed, group);
        put_u16(&mut b, 0x1E, c);
        b
    }

    pub fn decode(b: &[u8]) -> GroupDesc {
        let lohi16 = |lo: usize, hi: usize| get_u16(b, lo) as u32 | (get_u16(b, hi) as u32) << 16;
        GroupDesc {
            bg_block_bitmap: get_lo_hi32(b, 0x00, 0x20),
            bg_inode_bitmap: get_lo_hi32(b, 0x04, 0x24),
            bg_inode_table: get_lo_hi32(b, 0x08, 0x28),
            bg_free_blocks_count: lohi16(0x0C, 0x2C),
            bg_free_inodes_count: lohi16(0x0E, 0x2E),
            bg_used_dirs_count: lohi16(0x10, 0x30),
            bg_flags: get_u16(b, 0x12),
            bg_block_bitmap_csum: lohi16(0x18, 0x38),
            bg_inode_bitmap_csum: lohi16(0x1A, 0x3A),
            bg_itable_unused: lohi16(0x1C, 0x32),
        }
    }
}

/// `ext4_group_desc_csum` with metadata_csum: the low 16 bits of crc32c(seed, group number,
/// descriptor with `bg_checksum` zeroed).
pub fn checksum(b: &[u8], fs_seed: u32, group: u32) -> u16 {
    let c = crc32c_raw(fs_seed, &group.to_le_bytes());
    let c = crc32c_raw(c, &b[..0x1E]);
    let c = crc32c_raw(c, &[0, 0]);
    let c = crc32c_raw(c, &b[0x20..DESC_SIZE]);
    c as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_checksum() {
        let d = GroupDesc {
            bg_block_bitmap: 1 << 33,
            bg_inode_bitmap: 18,
            bg_inode_table: 34,
            bg_free_blocks_count: 70000,
            bg_free_inodes_count: 8181,
            bg_used_dirs_count: 2,
            bg_flags: BG_INODE_ZEROED,
            bg_block_bitmap_csum: 0xdead_beef,
            bg_inode_bitmap_csum: 0x1234_5678,
            bg_itable_unused: 8181,
        };
        let b = d.encode(5, 3);
        assert_eq!(GroupDesc::decode(&b), d);
        assert_eq!(get_u16(&b, 0x1E), checksum(&b, 5, 3));
        assert_ne!(
            checksum(&b, 5, 3),
            checksum(&b, 5, 4),
            "the group number is covered"
        );
    }
}
