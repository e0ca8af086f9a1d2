//! crc32c as ext4 uses it: the kernel's `ext4_chksum` is the raw CRC register, with no final
//! inversion, seeded by the caller (see <https://docs.kernel.org/filesystems/ext4/overview.html#checksums>).

/// The raw crc32c register after feeding `data` into a register holding `seed`.
pub fn crc32c_raw(seed: u32, data: &[u8]) -> u32 {
    // The crate's append works on the inverted register; undo both inversions.
    !crc32c::crc32c_append(!seed, data)
}

/// The filesystem-wide checksum seed: crc32c(~0, s_uuid), as without the `csum_seed` feature.
pub fn fs_seed(uuid: &[u8; 16]) -> u32 {
    crc32c_raw(!0, uuid)
}

/// Per-inode seed used by inode, extent, directory and htree checksums: the fs seed extended by
/// the inode number and generation.
pub fn inode_seed(fs_seed: u32, ino: u32, generation: u32) -> u32 {
    let s = crc32c_raw(fs_seed, &ino.to_le_bytes());
    crc32c_raw(s, &generation.to_le_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_register_matches_standard_crc32c() {
        // Standard CRC-32C("123456789") = 0xE3069283 = !raw(~0, ...).
        assert_eq!(!crc32c_raw(!0, b"123456789"), 0xE306_9283);
    }

    #[test]
    fn chaining_equals_one_pass() {
        let a = crc32c_raw(7, b"hello ");
        assert_eq!(crc32c_raw(a, b"world"), crc32c_raw(7, b"hello world"));
    }
}
