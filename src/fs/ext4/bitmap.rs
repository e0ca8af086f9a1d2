//! Block and inode bitmaps: one block each per group, bit i = block/inode i of the group.
//! Bits past the end of a short group are set, as e2fsck expects.
//! <https://docs.kernel.org/filesystems/ext4/globals.html#block-and-inode-bitmaps>

use super::csum::crc32c_raw;
use std::ops::Range;

pub const BITMAP_BYTES: usize = 4096;

/// A bitmap of `valid` entries with `used` (group-relative, sorted ranges) set, and padding
/// bits from `valid` to the end of the block set too.
pub fn encode(valid: u64, used: impl IntoIterator<Item = Range<u64>>) -> Vec<u8> {
    let mut b = vec![0u8; BITMAP_BYTES];
    for r in used {
        set_range(&mut b, r);
    }
    set_range(&mut b, valid..(BITMAP_BYTES as u64 * 8));
    b
}

fn set_range(b: &mut [u8], r: Range<u64>) {
    let mut i = r.start;
    while i < r.end {
        if i % 8 == 0 && i + 8 <= r.end {
            b[(i / 8) as usize] = 0xFF;
            i += 8;
        } else {
            b[(i / 8) as usize] |= 1 << (i % 8);
            i += 1;
        }
    }
}

/// Whether bit `i` is set.
pub fn decode_bit(b: &[u8], i: u64) -> bool {
    b[(i / 8) as usize] & (1 << (i % 8)) != 0
}

/// `ext4_block_bitmap_csum_set`/`ext4_inode_bitmap_csum_set`: crc32c(seed, first `bits`/8
/// bytes). Blocks use the whole 32768-bit block; inodes only `s_inodes_per_group` bits.
pub fn checksum(fs_seed: u32, b: &[u8], bits: u64) -> u32 {
    crc32c_raw(fs_seed, &b[..(bits / 8) as usize])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_padding() {
        let b = encode(100, [3..5, 7..20]);
        let set: Vec<u64> = (0..120).filter(|&i| decode_bit(&b, i)).collect();
        let want: Vec<u64> = (3..5).chain(7..20).chain(100..120).collect();
        assert_eq!(set, want);
        assert!(decode_bit(&b, 32767));
        assert_ne!(checksum(1, &b, 32768), checksum(1, &b, 96));
    }
}
