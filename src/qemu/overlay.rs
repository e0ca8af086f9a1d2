//! The test machine's disk: an empty qcow2 overlay whose backing file is the image (raw, or a
//! qcow2, fixed VHD or streamOptimized VMDK from `kiln build --format`), with the
//! virtual size of the AMI's volume. The guest sees a disk as large as the EBS volume an
//! instance of the AMI would get (so growpart and resize2fs run as on a real launch); its
//! writes land in the overlay, in the run's private directory; the image is opened read-only,
//! as every backing file is, and never changes.
//!
//! The file is small and fixed, so kiln writes it itself (QEMU's docs/interop/qcow2.txt,
//! version 3) rather than depending on `qemu-img`: a header cluster (header, the backing-format
//! extension, the backing file name), one refcount-table cluster, one refcount block, and a
//! zeroed L1 table. Every cluster the file holds has refcount 1; no data cluster is allocated,
//! so every read falls through to the image (zeros beyond its end).

use std::io::{self, Write};
use std::path::Path;

const CLUSTER_BITS: u32 = 16;
const CLUSTER: u64 = 1 << CLUSTER_BITS;
/// Version 3's fixed header (up to and including `header_length`).
const HEADER_LEN: u32 = 104;
/// Header extension: backing file format name.
const EXT_BACKING_FORMAT: u32 = 0xE279_2ACA;
/// QEMU refuses longer backing file names.
const MAX_BACKING_NAME: usize = 1023;
/// refcount_order 4: 16-bit refcounts (what qemu-img creates by default).
const REFCOUNT_ORDER: u32 = 4;

pub use super::image_file::ImageFormat;

/// Writes an overlay of `size` bytes over the image `backing` (an absolute path, in `format`)
/// to `path`.
pub fn create(path: &Path, backing: &Path, format: ImageFormat, size: u64) -> io::Result<()> {
    let bytes = build(backing.as_os_str().as_encoded_bytes(), format, size)?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    f.write_all(&bytes)?;
    f.sync_all()
}

/// The overlay's bytes.
pub fn build(backing: &[u8], format: ImageFormat, size: u64) -> io::Result<Vec<u8>> {
    if backing.is_empty() || backing.len() > MAX_BACKING_NAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("the image path must be 1 to {MAX_BACKING_NAME} bytes for a qcow2 overlay"),
        ));
    }
    // Each L2 table (one cluster of 8-byte entries) maps CLUSTER / 8 clusters.
    let per_l1 = (CLUSTER / 8) * CLUSTER;
    let l1_size = size.div_ceil(per_l1).max(1);
    let l1_clusters = (l1_size * 8).div_ceil(CLUSTER);
    // Clusters: 0 header, 1 refcount table, 2 refcount block, 3.. L1 table. One refcount
    // block (CLUSTER / 2 entries) covers them all for any volume up to petabytes.
    let clusters = 3 + l1_clusters;
    if clusters > CLUSTER / 2 || l1_size > u32::MAX as u64 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("a {size}-byte volume is too large"),
        ));
    }
    let mut out = vec![0u8; (clusters * CLUSTER) as usize];
    let be32 = |o: &mut [u8], at: usize, v: u32| o[at..at + 4].copy_from_slice(&v.to_be_bytes());
    let be64 = |o: &mut [u8], at: usize, v: u64| o[at..at + 8].copy_from_slice(&v.to_be_bytes());

    // The header extension (type, length, data padded to 8 bytes), the end marker, then the
    // backing file name.
    let ext_at = HEADER_LEN as usize;
    let fmt = format.as_str().as_bytes();
    be32(&mut out, ext_at, EXT_BACKING_FORMAT);
    be32(&mut out, ext_at + 4, fmt.len() as u32);
    out[ext_at + 8..ext_at + 8 + fmt.len()].copy_from_slice(fmt);
    let end_at = ext_at + 8 + fmt.len().div_ceil(8) * 8;
    // (type 0, length 0) ends the extensions: already zero.
    let name_at = end_at + 8;
    out[name_at..name_at + backing.len()].copy_from_slice(backing);

    out[0..4].copy_from_slice(b"QFI\xfb");
    be32(&mut out, 4, 3); // version
    be64(&mut out, 8, name_at as u64); // backing_file_offset
    be32(&mut out, 16, backing.len() as u32); // backing_file_size
    be32(&mut out, 20, CLUSTER_BITS);
    be64(&mut out, 24, size);
    be32(&mut out, 32, 0); // crypt_method
    be32(&mut out, 36, l1_size as u32);
    be64(&mut out, 40, 3 * CLUSTER); // l1_table_offset
    be64(&mut out, 48, CLUSTER); // refcount_table_offset
    be32(&mut out, 56, 1); // refcount_table_clusters
                           // nb_snapshots, snapshots_offset, incompatible/compatible/autoclear features: 0.
    be32(&mut out, 96, REFCOUNT_ORDER);
    be32(&mut out, 100, HEADER_LEN);

    // The refcount table's one entry points at the refcount block.
    be64(&mut out, CLUSTER as usize, 2 * CLUSTER);
    for c in 0..clusters as usize {
        let at = 2 * CLUSTER as usize + 2 * c;
        out[at..at + 2].copy_from_slice(&1u16.to_be_bytes());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_names_the_backing_file_and_counts_every_cluster() {
        let b = build(b"/img/a.raw", ImageFormat::Raw, 8 << 30).unwrap();
        assert_eq!(&b[0..4], b"QFI\xfb");
        assert_eq!(b.len(), 4 * CLUSTER as usize, "8 GiB needs one L1 cluster");
        let off = u64::from_be_bytes(b[8..16].try_into().unwrap()) as usize;
        let len = u32::from_be_bytes(b[16..20].try_into().unwrap()) as usize;
        assert_eq!(&b[off..off + len], b"/img/a.raw");
        assert_eq!(u64::from_be_bytes(b[24..32].try_into().unwrap()), 8 << 30);
        assert_eq!(
            u32::from_be_bytes(b[36..40].try_into().unwrap()),
            16,
            "512 MiB per L1 entry"
        );
        let refs = &b[2 * CLUSTER as usize..2 * CLUSTER as usize + 10];
        assert_eq!(refs, &[0, 1, 0, 1, 0, 1, 0, 1, 0, 0]);
        assert!(build(b"", ImageFormat::Raw, 1).is_err());
        assert!(build(&[b'a'; 1024], ImageFormat::Raw, 1).is_err());
        assert!(build(b"/x", ImageFormat::Raw, 1 << 60).is_err());
    }

    /// The backing format extension: type, length, the name padded to 8 bytes, the end marker.
    fn backing_format(b: &[u8]) -> &[u8] {
        let at = HEADER_LEN as usize;
        assert_eq!(&b[at..at + 4], &EXT_BACKING_FORMAT.to_be_bytes());
        let len = u32::from_be_bytes(b[at + 4..at + 8].try_into().unwrap()) as usize;
        &b[at + 8..at + 8 + len]
    }

    #[test]
    fn a_qcow2_image_is_named_as_the_backing_format() {
        let raw = build(b"/img/a.raw", ImageFormat::Raw, 1 << 30).unwrap();
        assert_eq!(backing_format(&raw), b"raw");
        let q = build(b"/img/a.qcow2", ImageFormat::Qcow2, 1 << 30).unwrap();
        assert_eq!(backing_format(&q), b"qcow2");
        // The backing file name follows the (padded) extension and its end marker.
        let off = u64::from_be_bytes(q[8..16].try_into().unwrap()) as usize;
        assert_eq!(off, HEADER_LEN as usize + 8 + 8 + 8);
        assert_eq!(&q[off..off + 12], b"/img/a.qcow2");
    }
}
