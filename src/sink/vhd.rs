//! Fixed VHD (Microsoft's "Virtual Hard Disk Image Format Specification"): the disk byte for byte,
//! then a 512-byte footer. Azure takes only fixed VHDs whose virtual size is a whole MiB.

use super::formats::{FileHash, Finished, FormatIdentity, FormatWriter};
use super::{BlockSink, FileSink};
use std::io;
use std::path::Path;

pub const FOOTER_LEN: u64 = 512;
const MIB: u64 = 1 << 20;
/// 2000-01-01T00:00:00Z, the VHD epoch, in Unix seconds.
const VHD_EPOCH: i64 = 946_684_800;

/// The hard disk footer. Fields not listed are constants: cookie `conectix`, features 2 (the
/// reserved bit the spec says is always set), format version 1.0, data offset all ones (a fixed
/// disk has no dynamic header), creator host OS `Wi2k`, disk type 2 (fixed), saved state 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Footer {
    /// Seconds since 2000-01-01 UTC.
    pub timestamp: u32,
    pub size: u64,
    pub geometry: Geometry,
    pub unique_id: [u8; 16],
}

/// Cylinders, heads and sectors per track, from the size (the spec's appendix algorithm).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub cylinders: u16,
    pub heads: u8,
    pub sectors: u8,
}

/// The creator application. QEMU before 10.0 sizes a VHD by its CHS geometry, which rounds the
/// size down, unless the creator is one it knows to mean "use current_size" (block/vpc.c,
/// vpc_ignore_current_size): `qem2` is QEMU's own such marker, what `qemu-img convert -o
/// force_size` writes and what Azure's documentation uses. A kiln-specific name would make those
/// QEMUs read a truncated disk.
const CREATOR_APP: &[u8; 4] = b"qem2";
/// kiln's version as major.minor in the two 16-bit halves.
const CREATOR_VERSION: u32 = 0x0000_0001;

impl Footer {
    pub fn new(size: u64, id: &FormatIdentity) -> Footer {
        let since = id.source_date_epoch.saturating_sub(VHD_EPOCH).max(0);
        Footer {
            timestamp: u32::try_from(since).unwrap_or(u32::MAX),
            size,
            geometry: Geometry::for_size(size),
            unique_id: crate::util::derive_uuid(&id.seed, "vhd-unique-id"),
        }
    }

    pub fn encode(&self) -> [u8; FOOTER_LEN as usize] {
        let mut b = [0u8; FOOTER_LEN as usize];
        b[0..8].copy_from_slice(b"conectix");
        b[8..12].copy_from_slice(&2u32.to_be_bytes());
        b[12..16].copy_from_slice(&0x0001_0000u32.to_be_bytes());
        b[16..24].copy_from_slice(&u64::MAX.to_be_bytes());
        b[24..28].copy_from_slice(&self.timestamp.to_be_bytes());
        b[28..32].copy_from_slice(CREATOR_APP);
        b[32..36].copy_from_slice(&CREATOR_VERSION.to_be_bytes());
        b[36..40].copy_from_slice(b"Wi2k");
        b[40..48].copy_from_slice(&self.size.to_be_bytes()); // original size
        b[48..56].copy_from_slice(&self.size.to_be_bytes()); // current size
        b[56..58].copy_from_slice(&self.geometry.cylinders.to_be_bytes());
        b[58] = self.geometry.heads;
        b[59] = self.geometry.sectors;
        b[60..64].copy_from_slice(&2u32.to_be_bytes());
        b[68..84].copy_from_slice(&self.unique_id);
        let sum = checksum(&b);
        b[64..68].copy_from_slice(&sum.to_be_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> io::Result<Footer> {
        let bad = |w: &str| io::Error::new(io::ErrorKind::InvalidData, w.to_string());
        if b.len() != FOOTER_LEN as usize || &b[0..8] != b"conectix" {
            return Err(bad("not a VHD footer"));
        }
        let mut z = [0u8; FOOTER_LEN as usize];
        z.copy_from_slice(b);
        z[64..68].fill(0);
        if u32::from_be_bytes([b[64], b[65], b[66], b[67]]) != checksum(&z) {
            return Err(bad("VHD footer checksum mismatch"));
        }
        let be64 = |at: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[at..at + 8]);
            u64::from_be_bytes(a)
        };
        let mut unique_id = [0u8; 16];
        unique_id.copy_from_slice(&b[68..84]);
        Ok(Footer {
            timestamp: u32::from_be_bytes([b[24], b[25], b[26], b[27]]),
            size: be64(48),
            geometry: Geometry {
                cylinders: u16::from_be_bytes([b[56], b[57]]),
                heads: b[58],
                sectors: b[59],
            },
            unique_id,
        })
    }
}

/// The one's complement of the sum of the footer's bytes (checksum field zero).
fn checksum(b: &[u8]) -> u32 {
    !b.iter().fold(0u32, |a, &x| a.wrapping_add(u32::from(x)))
}

impl Geometry {
    /// The VHD specification's CHS calculation (Appendix: CHS Calculation).
    pub fn for_size(size: u64) -> Geometry {
        let mut total = size / 512;
        if total > 65535 * 16 * 255 {
            total = 65535 * 16 * 255;
        }
        let (sectors, heads, cyl_times_heads);
        if total >= 65535 * 16 * 63 {
            sectors = 255;
            heads = 16;
            cyl_times_heads = total / sectors;
        } else {
            let mut s = 17;
            let mut cth = total / s;
            let mut h = cth.div_ceil(1024).max(4);
            if cth >= h * 1024 || h > 16 {
                s = 31;
                h = 16;
                cth = total / s;
            }
            if cth >= h * 1024 {
                s = 63;
                h = 16;
                cth = total / s;
            }
            sectors = s;
            heads = h;
            cyl_times_heads = cth;
        }
        Geometry {
            cylinders: (cyl_times_heads / heads) as u16,
            heads: heads as u8,
            sectors: sectors as u8,
        }
    }
}

/// The disk as a sparse file (as the raw image), the footer after its last byte.
pub struct VhdWriter {
    file: FileSink,
    footer: Footer,
}

impl VhdWriter {
    pub fn create(target: &Path, len: u64, id: &FormatIdentity) -> io::Result<Self> {
        if len % MIB != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a VHD for Azure needs a virtual size of whole MiB; the disk is {len} bytes"
                ),
            ));
        }
        Ok(VhdWriter {
            file: FileSink::create(target, len + FOOTER_LEN)?,
            footer: Footer::new(len, id),
        })
    }
}

impl BlockSink for VhdWriter {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        if offset + data.len() as u64 > self.footer.size {
            return Err(io::Error::other("write past the end of the VHD's disk"));
        }
        self.file.write_at(offset, data)
    }
}

impl FormatWriter for VhdWriter {
    fn finish(mut self: Box<Self>, len: u64) -> io::Result<Finished> {
        if len != self.footer.size {
            return Err(io::Error::other("the disk's size changed under the VHD"));
        }
        let footer = self.footer.encode();
        self.file.write_at(len, &footer)?;
        Ok(Finished {
            output: self.file.into_output()?,
            size: len + FOOTER_LEN,
            hash: FileHash::DiskThen(footer.to_vec()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> FormatIdentity {
        FormatIdentity {
            seed: "s".into(),
            source_date_epoch: 1_700_000_000,
        }
    }

    #[test]
    fn footer_round_trips_with_its_checksum() {
        let f = Footer::new(4 << 30, &id());
        let b = f.encode();
        assert_eq!(Footer::decode(&b).unwrap(), f);
        assert_eq!(f.timestamp, 1_700_000_000 - 946_684_800);
        let mut bad = b;
        bad[100] ^= 1;
        assert!(Footer::decode(&bad).is_err());
    }

    #[test]
    fn geometry_follows_the_spec() {
        // 127 MiB: 260096 sectors; 17 per track, 15 heads (ceil(15299 / 1024)), 1019 cylinders.
        let g = Geometry::for_size(127 << 20);
        assert_eq!((g.cylinders, g.heads, g.sectors), (1019, 15, 17));
        // Large disks use 16 heads and 255 sectors per track.
        let g = Geometry::for_size(64 << 30);
        assert_eq!((g.heads, g.sectors), (16, 255));
        assert_eq!(g.cylinders as u64, (64u64 << 30) / 512 / 255 / 16);
        // Capped at 65535 x 16 x 255.
        assert_eq!(Geometry::for_size(4 << 40).cylinders, 65535);
    }

    #[test]
    fn whole_mib_only_and_the_footer_ends_the_file() {
        let dir = tempfile::tempdir().unwrap();
        assert!(VhdWriter::create(&dir.path().join("x.vhd"), (1 << 20) + 512, &id()).is_err());
        let mut w = Box::new(VhdWriter::create(&dir.path().join("y.vhd"), 1 << 20, &id()).unwrap());
        w.write_at(10, b"abc").unwrap();
        let fin = w.finish(1 << 20).unwrap();
        let b = std::fs::read(fin.output.temp_path()).unwrap();
        assert_eq!(b.len() as u64, (1 << 20) + 512);
        assert_eq!(&b[10..13], b"abc");
        let f = Footer::decode(&b[1 << 20..]).unwrap();
        assert_eq!(f.size, 1 << 20);
    }
}
