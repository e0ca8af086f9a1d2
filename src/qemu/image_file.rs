//! What kind of disk image a file is, and how large the disk inside it is. `kiln test` attaches
//! the image as the backing file of its overlay, named by its format: QEMU refuses to probe a
//! backing file's format, since a raw guest disk may start with any bytes. The formats are the
//! ones `kiln build --format` writes: raw, qcow2, fixed VHD (QEMU's `vpc`) and streamOptimized
//! VMDK, each recognised by its own marker (never by the file name).

use super::disk_view;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// The image's format, which the overlay names as its backing format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ImageFormat {
    #[default]
    Raw,
    Qcow2,
    /// A fixed VHD: the disk, then a 512-byte footer whose cookie is `conectix`.
    Vpc,
    /// A VMDK sparse extent (streamOptimized is one): magic `KDMV` at offset 0.
    Vmdk,
}

impl ImageFormat {
    /// qcow2 when the file starts with qcow2's magic (`QFI\xfb`), VMDK when it starts with a
    /// sparse extent's (`KDMV`), else raw (see [`probe`] for the VHD, told by its footer).
    pub fn from_magic(first: &[u8]) -> ImageFormat {
        if first.starts_with(b"QFI\xfb") {
            ImageFormat::Qcow2
        } else if first.starts_with(b"KDMV") {
            ImageFormat::Vmdk
        } else {
            ImageFormat::Raw
        }
    }

    /// QEMU's name for the format (`-drive format=`, a qcow2's backing format).
    pub fn as_str(self) -> &'static str {
        match self {
            ImageFormat::Raw => "raw",
            ImageFormat::Qcow2 => "qcow2",
            ImageFormat::Vpc => "vpc",
            ImageFormat::Vmdk => "vmdk",
        }
    }
}

/// What the machine needs to know of an image file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageInfo {
    pub format: ImageFormat,
    /// The disk's size: the file's for a raw image, the header's virtual size for a qcow2 or a
    /// VMDK, the file's less the footer for a fixed VHD.
    pub disk_size: u64,
}

/// The VHD footer's length, and where its fields are (Microsoft's VHD specification, "Hard
/// Disk Footer Format"; big-endian).
const VHD_FOOTER: u64 = 512;
const VHD_DISK_TYPE: usize = 60;
const VHD_FIXED: u32 = 2;

fn bad(why: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.into())
}

/// The format of `f` (of `len` bytes) and its disk's size.
pub fn probe(f: &File, len: u64) -> io::Result<ImageInfo> {
    let mut first = [0u8; 32];
    let n = disk_view::read_full_at(f, &mut first, 0)?;
    let format = ImageFormat::from_magic(&first[..n]);
    let disk_size = match format {
        // docs/interop/qcow2.txt: the virtual size in bytes, big-endian, at 24..32.
        ImageFormat::Qcow2 if n == 32 => disk_view::be64(&first, 24),
        ImageFormat::Qcow2 => return Err(bad("a truncated qcow2 header")),
        // VMware's "Virtual Disk Format 1.1", the sparse extent header: the capacity in
        // 512-byte sectors, little-endian, at 12..20.
        ImageFormat::Vmdk if n >= 20 => {
            let sectors = u64::from_le_bytes(first[12..20].try_into().unwrap_or_default());
            sectors
                .checked_mul(512)
                .ok_or_else(|| bad("a VMDK capacity past 2^64 bytes"))?
        }
        ImageFormat::Vmdk => return Err(bad("a truncated VMDK header")),
        _ => match vhd_footer(f, len)? {
            Some(kind) if kind == VHD_FIXED => {
                return Ok(ImageInfo {
                    format: ImageFormat::Vpc,
                    disk_size: len - VHD_FOOTER,
                })
            }
            Some(kind) => {
                return Err(bad(format!(
                    "a VHD of disk type {kind} (only a fixed VHD, type 2, is attached: \
                     `qemu-img convert -O raw` makes one kiln can test)"
                )))
            }
            None => len,
        },
    };
    Ok(ImageInfo { format, disk_size })
}

/// The disk type of the VHD footer that ends `f`, if it has one. A raw GPT disk ends with its
/// backup GPT header (`EFI PART`), never with `conectix`.
fn vhd_footer(f: &File, len: u64) -> io::Result<Option<u32>> {
    if len < VHD_FOOTER {
        return Ok(None);
    }
    let mut footer = [0u8; VHD_FOOTER as usize];
    f.read_exact_at(&mut footer, len - VHD_FOOTER)?;
    if &footer[..8] != b"conectix" {
        return Ok(None);
    }
    Ok(Some(disk_view::be32(&footer, VHD_DISK_TYPE)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_told_by_their_markers() {
        assert_eq!(
            ImageFormat::from_magic(b"QFI\xfb\0\0\0\x03"),
            ImageFormat::Qcow2
        );
        assert_eq!(
            ImageFormat::from_magic(b"KDMV\x03\0\0\0"),
            ImageFormat::Vmdk
        );
        assert_eq!(ImageFormat::from_magic(b"\0\0\0\0"), ImageFormat::Raw);
        assert_eq!(ImageFormat::from_magic(b""), ImageFormat::Raw);
    }

    /// Files made with kiln's own encoders (qemu-img is the oracle in tests/formats.rs and
    /// tests/qemu_test.rs): each file's format and disk size.
    #[test]
    fn kiln_s_formats_probe_as_their_disks() {
        let d = tempfile::tempdir().unwrap();
        let len: u64 = 3 << 20;
        let probe_bytes = |name: &str, bytes: &[u8]| {
            let p = d.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            let f = File::open(&p).unwrap();
            probe(&f, bytes.len() as u64)
        };
        let raw = vec![7u8; len as usize];
        assert_eq!(
            probe_bytes("a.raw", &raw).unwrap(),
            ImageInfo {
                format: ImageFormat::Raw,
                disk_size: len
            }
        );
        let id = crate::sink::formats::FormatIdentity {
            seed: "s".into(),
            source_date_epoch: 0,
        };
        let mut vhd = raw.clone();
        vhd.extend_from_slice(&crate::sink::vhd::Footer::new(len, &id).encode());
        assert_eq!(
            probe_bytes("a.vhd", &vhd).unwrap(),
            ImageInfo {
                format: ImageFormat::Vpc,
                disk_size: len
            }
        );
        let header = crate::sink::vmdk::header::Header {
            capacity: len / 512,
            gd_offset: 0,
        };
        assert_eq!(
            probe_bytes("a.vmdk", &header.encode()).unwrap(),
            ImageInfo {
                format: ImageFormat::Vmdk,
                disk_size: len
            }
        );
        assert!(probe_bytes("t.vmdk", b"KDMV\x03\0\0\0").is_err());
        assert!(probe_bytes("t.qcow2", b"QFI\xfb\0\0\0\x03").is_err());
        // A dynamic VHD's footer (disk type 3) is refused with a way out.
        let dynamic = d.path().join("dyn.vhd");
        let mut bytes = vec![0u8; 4096];
        bytes[4096 - 512..4096 - 504].copy_from_slice(b"conectix");
        bytes[4096 - 512 + VHD_DISK_TYPE + 3] = 3;
        std::fs::write(&dynamic, bytes).unwrap();
        let f = File::open(&dynamic).unwrap();
        let err = probe(&f, 4096).unwrap_err().to_string();
        assert!(
            err.contains("disk type 3") && err.contains("convert"),
            "{err}"
        );
    }
}
