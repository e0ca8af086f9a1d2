//! qcow2 v3 on-disk structures (QEMU's docs/interop/qcow2.txt): the header, L1/L2 entries and
//! refcount blocks, and the layout of the tables kiln appends after the data.

use std::io;

/// `QFI\xfb`.
pub const MAGIC: u32 = 0x5146_49fb;
/// 64 KiB clusters, QEMU's default.
pub const CLUSTER_BITS: u32 = 16;
pub const CLUSTER: u64 = 1 << CLUSTER_BITS;
/// Entries in one L2 table (8-byte entries in one cluster): each L1 entry maps 512 MiB.
pub const L2_ENTRIES: u64 = CLUSTER / 8;
/// 16-bit refcounts (refcount_order 4), QEMU's default.
pub const REFCOUNT_ORDER: u32 = 4;
/// Refcounts in one refcount block.
pub const REFS_PER_BLOCK: u64 = CLUSTER * 8 / (1 << REFCOUNT_ORDER);
/// L1/L2 entry bit 63, "OFLAG_COPIED": the cluster's refcount is exactly one. `qemu-img check`
/// reports an error when it is missing on a cluster used once.
pub const COPIED: u64 = 1 << 63;
/// Bits 9-55 of an L1/L2 entry hold the host offset.
const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// The version 3 header with the compression type byte (what QEMU 5.1 and later write), padded
/// to a multiple of 8 as the spec requires.
pub const HEADER_LENGTH: u32 = 112;

/// The fields of the header kiln sets; everything else is zero (no backing file, no encryption,
/// no snapshots, no feature bits, zlib compression type).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Virtual disk size in bytes.
    pub size: u64,
    pub l1_size: u32,
    pub l1_table_offset: u64,
    pub refcount_table_offset: u64,
    pub refcount_table_clusters: u32,
}

impl Header {
    /// The header followed by the end-of-extensions marker (type 0, length 0).
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; HEADER_LENGTH as usize + 8];
        put32(&mut b, 0, MAGIC);
        put32(&mut b, 4, 3);
        put32(&mut b, 20, CLUSTER_BITS);
        put64(&mut b, 24, self.size);
        put32(&mut b, 36, self.l1_size);
        put64(&mut b, 40, self.l1_table_offset);
        put64(&mut b, 48, self.refcount_table_offset);
        put32(&mut b, 56, self.refcount_table_clusters);
        put32(&mut b, 96, REFCOUNT_ORDER);
        put32(&mut b, 100, HEADER_LENGTH);
        b
    }

    pub fn decode(b: &[u8]) -> io::Result<Header> {
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
        if b.len() < HEADER_LENGTH as usize {
            return Err(bad("short qcow2 header"));
        }
        if get32(b, 0) != MAGIC || get32(b, 4) != 3 {
            return Err(bad("not a qcow2 v3 header"));
        }
        if get32(b, 20) != CLUSTER_BITS || get32(b, 96) != REFCOUNT_ORDER {
            return Err(bad("unexpected cluster size or refcount width"));
        }
        Ok(Header {
            size: get64(b, 24),
            l1_size: get32(b, 36),
            l1_table_offset: get64(b, 40),
            refcount_table_offset: get64(b, 48),
            refcount_table_clusters: get32(b, 56),
        })
    }
}

/// An L1 entry (pointing at an L2 table) or a standard L2 entry (pointing at a data cluster):
/// the host offset with OFLAG_COPIED, as every cluster kiln allocates is used once.
pub fn table_entry(host_offset: u64) -> u64 {
    (host_offset & OFFSET_MASK) | COPIED
}

/// The host offset in an L1/L2 entry; `None` for an unallocated (zero) one.
pub fn entry_offset(entry: u64) -> Option<u64> {
    let off = entry & OFFSET_MASK;
    (off != 0).then_some(off)
}

/// The L1 size for a disk of `size` bytes: one entry per 512 MiB (QEMU refuses a smaller one).
pub fn l1_size(size: u64) -> u64 {
    size.div_ceil(CLUSTER * L2_ENTRIES)
}

/// Where the tables go once `used` clusters (the header's cluster 0, the data and the L2 tables)
/// are written: the L1 table, then the refcount blocks, then the refcount table. The refcount
/// blocks count themselves and the refcount table, so their number is found by iteration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tail {
    pub l1_offset: u64,
    pub l1_clusters: u64,
    pub refblocks_offset: u64,
    pub refblocks: u64,
    pub reftable_offset: u64,
    pub reftable_clusters: u64,
    /// Clusters in the whole file; each has refcount 1.
    pub total_clusters: u64,
}

pub fn plan_tail(used: u64, l1_entries: u64) -> Tail {
    let l1_clusters = (l1_entries * 8).div_ceil(CLUSTER).max(1);
    let mut refblocks: u64 = 1;
    loop {
        let reftable_clusters = (refblocks * 8).div_ceil(CLUSTER);
        let total = used + l1_clusters + refblocks + reftable_clusters;
        let need = total.div_ceil(REFS_PER_BLOCK);
        if need <= refblocks {
            let l1_offset = used * CLUSTER;
            let refblocks_offset = l1_offset + l1_clusters * CLUSTER;
            return Tail {
                l1_offset,
                l1_clusters,
                refblocks_offset,
                refblocks,
                reftable_offset: refblocks_offset + refblocks * CLUSTER,
                reftable_clusters,
                total_clusters: total,
            };
        }
        refblocks = need;
    }
}

/// Refcount block `index`: refcount 1 for every cluster of the file it covers, 0 past the end.
pub fn refcount_block(index: u64, total_clusters: u64) -> Vec<u8> {
    let mut b = vec![0u8; CLUSTER as usize];
    let first = index * REFS_PER_BLOCK;
    let n = total_clusters.saturating_sub(first).min(REFS_PER_BLOCK) as usize;
    for i in 0..n {
        b[2 * i..2 * i + 2].copy_from_slice(&1u16.to_be_bytes());
    }
    b
}

/// Big-endian 64-bit entries, zero-padded to whole clusters (an L1 table or the refcount table).
pub fn encode_table(entries: &[u64], clusters: u64) -> Vec<u8> {
    let mut b = vec![0u8; (clusters * CLUSTER) as usize];
    for (i, e) in entries.iter().enumerate() {
        put64(&mut b, i * 8, *e);
    }
    b
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_be_bytes());
}

fn get32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

pub fn get64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let h = Header {
            size: 4 << 30,
            l1_size: 8,
            l1_table_offset: 7 * CLUSTER,
            refcount_table_offset: 9 * CLUSTER,
            refcount_table_clusters: 1,
        };
        let b = h.encode();
        assert_eq!(&b[..4], b"QFI\xfb");
        assert_eq!(b.len(), 120, "header and end-of-extensions marker");
        assert_eq!(Header::decode(&b).unwrap(), h);
    }

    #[test]
    fn entries_carry_offset_and_copied_flag() {
        let e = table_entry(3 * CLUSTER);
        assert_eq!(e >> 63, 1);
        assert_eq!(entry_offset(e), Some(3 * CLUSTER));
        assert_eq!(entry_offset(0), None);
    }

    #[test]
    fn tail_counts_every_cluster_including_itself() {
        for used in [
            1,
            2,
            100,
            REFS_PER_BLOCK - 3,
            REFS_PER_BLOCK,
            5 * REFS_PER_BLOCK + 7,
        ] {
            for l1 in [1, 8, 9000] {
                let t = plan_tail(used, l1);
                assert_eq!(
                    t.total_clusters,
                    used + t.l1_clusters + t.refblocks + t.reftable_clusters
                );
                assert!(t.refblocks * REFS_PER_BLOCK >= t.total_clusters);
                assert!((t.refblocks - 1) * REFS_PER_BLOCK < t.total_clusters);
                assert!(t.reftable_clusters * CLUSTER >= t.refblocks * 8);
                assert_eq!(
                    t.reftable_offset / CLUSTER + t.reftable_clusters,
                    t.total_clusters
                );
            }
        }
    }

    #[test]
    fn refcount_blocks_stop_at_the_end_of_the_file() {
        let b = refcount_block(1, REFS_PER_BLOCK + 3);
        assert_eq!(&b[..6], &[0, 1, 0, 1, 0, 1]);
        assert!(b[6..].iter().all(|&x| x == 0));
        assert_eq!(l1_size(1), 1);
        assert_eq!(l1_size(512 << 20), 1);
        assert_eq!(l1_size((512 << 20) + 1), 2);
    }
}
