//! streamOptimized VMDK on-disk structures (VMware's "Virtual Disk Format 5.0", "Stream-Optimized
//! Compressed Sparse Extents"): the sparse extent header, the stream markers, the grain tables and
//! directory, and the embedded text descriptor. Little-endian throughout.

use std::io;

pub const SECTOR: u64 = 512;
/// 64 KiB grains (128 sectors), what VMware and QEMU write.
pub const GRAIN_SECTORS: u64 = 128;
pub const GRAIN: u64 = GRAIN_SECTORS * SECTOR;
/// Grain table entries per grain table: each table maps 32 MiB.
pub const GTES_PER_GT: u64 = 512;
/// A grain table's size in sectors (512 four-byte entries).
pub const GT_SECTORS: u64 = GTES_PER_GT * 4 / SECTOR;
/// `gdOffset` in the header of a stream: the grain directory is at the end, found through the
/// footer.
pub const GD_AT_END: u64 = u64::MAX;
/// The descriptor sits in sectors 1..=20 (the room QEMU reserves), the first grain at sector 128.
pub const DESCRIPTOR_OFFSET: u64 = 1;
pub const DESCRIPTOR_SECTORS: u64 = 20;
pub const OVERHEAD_SECTORS: u64 = 128;

/// `VMDK4_FLAG_NL_DETECT | VMDK4_FLAG_COMPRESS | VMDK4_FLAG_MARKER`: valid newline detection
/// characters, compressed grains, markers.
const FLAGS: u32 = 1 | (1 << 16) | (1 << 17);
/// `COMPRESSION_DEFLATE` (zlib streams, RFC 1950).
const COMPRESS_DEFLATE: u16 = 1;

/// The fields of `SparseExtentHeader` that vary; the rest are the stream's constants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Virtual size in sectors.
    pub capacity: u64,
    /// The grain directory's sector, or [`GD_AT_END`] in the leading header.
    pub gd_offset: u64,
}

impl Header {
    pub fn encode(&self) -> [u8; SECTOR as usize] {
        let mut b = [0u8; SECTOR as usize];
        b[0..4].copy_from_slice(b"KDMV");
        b[4..8].copy_from_slice(&3u32.to_le_bytes()); // version 3, as streamOptimized writers use
        b[8..12].copy_from_slice(&FLAGS.to_le_bytes());
        b[12..20].copy_from_slice(&self.capacity.to_le_bytes());
        b[20..28].copy_from_slice(&GRAIN_SECTORS.to_le_bytes());
        b[28..36].copy_from_slice(&DESCRIPTOR_OFFSET.to_le_bytes());
        b[36..44].copy_from_slice(&DESCRIPTOR_SECTORS.to_le_bytes());
        b[44..48].copy_from_slice(&(GTES_PER_GT as u32).to_le_bytes());
        // rgdOffset (48..56) 0: a stream has no redundant grain directory.
        b[56..64].copy_from_slice(&self.gd_offset.to_le_bytes());
        b[64..72].copy_from_slice(&OVERHEAD_SECTORS.to_le_bytes());
        // uncleanShutdown 0, then the newline detection characters.
        b[73..77].copy_from_slice(b"\n \r\n");
        b[77..79].copy_from_slice(&COMPRESS_DEFLATE.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> io::Result<Header> {
        let bad = |w: &str| io::Error::new(io::ErrorKind::InvalidData, w.to_string());
        if b.len() < SECTOR as usize || &b[0..4] != b"KDMV" {
            return Err(bad("not a VMDK sparse extent header"));
        }
        if le32(b, 8) != FLAGS || le64(b, 20) != GRAIN_SECTORS || &b[73..77] != b"\n \r\n" {
            return Err(bad("not a streamOptimized header"));
        }
        Ok(Header {
            capacity: le64(b, 12),
            gd_offset: le64(b, 56),
        })
    }
}

/// A metadata marker's `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkerType {
    EndOfStream = 0,
    GrainTable = 1,
    GrainDirectory = 2,
    Footer = 3,
}

/// A metadata marker: one sector holding the size in sectors of what follows, `size` 0 (which
/// tells it from a grain marker) and the type.
pub fn marker(kind: MarkerType, sectors: u64) -> [u8; SECTOR as usize] {
    let mut b = [0u8; SECTOR as usize];
    b[0..8].copy_from_slice(&sectors.to_le_bytes());
    b[12..16].copy_from_slice(&(kind as u32).to_le_bytes());
    b
}

/// A grain: its first sector `lba`, the compressed length, the zlib stream, zeros to the next
/// sector.
pub fn grain(lba: u64, compressed: &[u8]) -> Vec<u8> {
    let len = (12 + compressed.len() as u64).div_ceil(SECTOR) * SECTOR;
    let mut b = Vec::with_capacity(len as usize);
    b.extend_from_slice(&lba.to_le_bytes());
    b.extend_from_slice(&(compressed.len() as u32).to_le_bytes());
    b.extend_from_slice(compressed);
    b.resize(len as usize, 0);
    b
}

/// A table of 32-bit sector numbers (a grain table or the grain directory), padded to sectors.
pub fn table(entries: &[u32]) -> Vec<u8> {
    let len = (entries.len() as u64 * 4).div_ceil(SECTOR) * SECTOR;
    let mut b = vec![0u8; len as usize];
    for (i, e) in entries.iter().enumerate() {
        b[4 * i..4 * i + 4].copy_from_slice(&e.to_le_bytes());
    }
    b
}

/// Grain directory entries for a disk of `capacity` sectors.
pub fn gd_entries(capacity: u64) -> u64 {
    capacity.div_ceil(GTES_PER_GT * GRAIN_SECTORS)
}

/// The embedded descriptor: a single sparse extent in this very file. `name` is the file's name;
/// the geometry is what VMware gives an LSI Logic SCSI disk (255 heads, 63 sectors per track).
pub fn descriptor(cid: u32, capacity: u64, name: &str) -> String {
    let cylinders = (capacity / (255 * 63)).clamp(1, 65535);
    let name = name.replace(['"', '\n', '\r'], "_");
    format!(
        "# Disk DescriptorFile\n\
         version=1\n\
         CID={cid:08x}\n\
         parentCID=ffffffff\n\
         createType=\"streamOptimized\"\n\
         \n\
         # Extent description\n\
         RW {capacity} SPARSE \"{name}\"\n\
         \n\
         # The Disk Data Base\n\
         #DDB\n\
         \n\
         ddb.virtualHWVersion = \"4\"\n\
         ddb.geometry.cylinders = \"{cylinders}\"\n\
         ddb.geometry.heads = \"255\"\n\
         ddb.geometry.sectors = \"63\"\n\
         ddb.adapterType = \"lsilogic\"\n"
    )
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

pub fn le64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let h = Header {
            capacity: 8 << 21,
            gd_offset: GD_AT_END,
        };
        let b = h.encode();
        assert_eq!(Header::decode(&b).unwrap(), h);
        assert_eq!(le32(&b, 4), 3);
        assert_eq!(&b[77..79], &[1, 0], "deflate");
    }

    #[test]
    fn markers_and_grains_are_whole_sectors() {
        let m = marker(MarkerType::GrainTable, GT_SECTORS);
        assert_eq!(le64(&m, 0), 4);
        assert_eq!(le32(&m, 8), 0);
        assert_eq!(le32(&m, 12), 1);
        let g = grain(256, &[9; 501]);
        assert_eq!(g.len(), 1024);
        assert_eq!(le64(&g, 0), 256);
        assert_eq!(le32(&g, 8), 501);
        assert_eq!(grain(0, &[1; 500]).len(), 512);
        assert_eq!(table(&[1, 2]).len(), 512);
        assert_eq!(gd_entries(1), 1);
        assert_eq!(gd_entries(GTES_PER_GT * GRAIN_SECTORS + 1), 2);
    }

    #[test]
    fn descriptor_names_the_stream() {
        let d = descriptor(0xabc, 1 << 21, "x.vmdk");
        assert!(d.contains("createType=\"streamOptimized\""));
        assert!(d.contains("CID=00000abc\n"));
        assert!(d.contains("RW 2097152 SPARSE \"x.vmdk\""));
        assert!(d.len() as u64 <= DESCRIPTOR_SECTORS * SECTOR);
    }
}
