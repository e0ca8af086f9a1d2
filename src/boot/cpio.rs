//! A deterministic `newc` cpio archive, the format the kernel unpacks as an initramfs.
//!
//! Format: Documentation/driver-api/early-userspace/buffer-format.rst in the kernel tree. Each
//! entry is a 110-byte ASCII header (`070701` and thirteen 8-digit hex fields), the name with its
//! NUL, padding to 4 bytes, the data, padding to 4 bytes; `TRAILER!!!` ends the archive.
//! Entries are sorted by path (a parent sorts before its children), owned by 0:0, stamped with
//! one fixed mtime and numbered from 1, so the same input gives the same bytes.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Body {
    Dir,
    File(Vec<u8>),
    Symlink(String),
    CharDev(u32, u32),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    mode: u32,
    body: Body,
}

/// An archive being assembled; paths are relative (`bin/busybox`).
#[derive(Debug, Default, Clone)]
pub struct Cpio {
    entries: BTreeMap<String, Entry>,
}

impl Cpio {
    pub fn new() -> Self {
        Cpio::default()
    }

    fn insert(&mut self, path: &str, e: Entry) {
        let path = path.trim_matches('/');
        let mut at = String::new();
        for c in path
            .split('/')
            .collect::<Vec<_>>()
            .split_last()
            .map_or(&[][..], |x| x.1)
        {
            if !at.is_empty() {
                at.push('/');
            }
            at.push_str(c);
            self.entries.entry(at.clone()).or_insert(Entry {
                mode: 0o755,
                body: Body::Dir,
            });
        }
        self.entries.insert(path.to_string(), e);
    }

    pub fn dir(&mut self, path: &str, mode: u32) {
        self.insert(
            path,
            Entry {
                mode,
                body: Body::Dir,
            },
        );
    }

    pub fn file(&mut self, path: &str, mode: u32, data: Vec<u8>) {
        self.insert(
            path,
            Entry {
                mode,
                body: Body::File(data),
            },
        );
    }

    pub fn symlink(&mut self, path: &str, target: &str) {
        self.insert(
            path,
            Entry {
                mode: 0o777,
                body: Body::Symlink(target.to_string()),
            },
        );
    }

    pub fn char_dev(&mut self, path: &str, mode: u32, major: u32, minor: u32) {
        self.insert(
            path,
            Entry {
                mode,
                body: Body::CharDev(major, minor),
            },
        );
    }

    /// The archive's bytes, every entry stamped with `mtime`.
    pub fn encode(&self, mtime: u32) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, (path, e)) in self.entries.iter().enumerate() {
            let (kind, nlink, data, rdev): (u32, u32, &[u8], (u32, u32)) = match &e.body {
                Body::Dir => (0o040000, 2, &[], (0, 0)),
                Body::File(d) => (0o100000, 1, d, (0, 0)),
                Body::Symlink(t) => (0o120000, 1, t.as_bytes(), (0, 0)),
                Body::CharDev(ma, mi) => (0o020000, 1, &[], (*ma, *mi)),
            };
            let h = Header {
                ino: i as u32 + 1,
                mode: kind | (e.mode & 0o7777),
                nlink,
                mtime,
                filesize: data.len() as u32,
                rdevmajor: rdev.0,
                rdevminor: rdev.1,
            };
            h.write(path, data, &mut out);
        }
        Header {
            ino: 0,
            mode: 0,
            nlink: 1,
            mtime: 0,
            filesize: 0,
            rdevmajor: 0,
            rdevminor: 0,
        }
        .write("TRAILER!!!", &[], &mut out);
        out
    }
}

/// The header fields kiln varies; uid, gid, devmajor, devminor and check are always 0.
struct Header {
    ino: u32,
    mode: u32,
    nlink: u32,
    mtime: u32,
    filesize: u32,
    rdevmajor: u32,
    rdevminor: u32,
}

impl Header {
    fn write(&self, name: &str, data: &[u8], out: &mut Vec<u8>) {
        let fields = [
            self.ino,
            self.mode,
            0, // uid
            0, // gid
            self.nlink,
            self.mtime,
            self.filesize,
            0, // devmajor
            0, // devminor
            self.rdevmajor,
            self.rdevminor,
            name.len() as u32 + 1,
            0, // check (only for the 070702 "crc" format)
        ];
        out.extend_from_slice(b"070701");
        for f in fields {
            out.extend_from_slice(format!("{f:08X}").as_bytes());
        }
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        pad4(out);
        out.extend_from_slice(data);
        pad4(out);
    }
}

fn pad4(out: &mut Vec<u8>) {
    while out.len() % 4 != 0 {
        out.push(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_layout() {
        let mut c = Cpio::new();
        c.file("bin/x", 0o755, b"hello".to_vec());
        let b = c.encode(0x1234);
        // "bin" is made before "bin/x".
        assert_eq!(&b[..6], b"070701");
        let field = |entry: &[u8], i: usize| {
            u32::from_str_radix(
                std::str::from_utf8(&entry[6 + 8 * i..14 + 8 * i]).unwrap(),
                16,
            )
            .unwrap()
        };
        assert_eq!(field(&b, 0), 1); // ino
        assert_eq!(field(&b, 1), 0o040755);
        assert_eq!(field(&b, 5), 0x1234);
        assert_eq!(field(&b, 11), 4); // "bin\0"
        assert_eq!(&b[110..114], b"bin\0");
        let second = &b[116..]; // 110 header + "bin\0" = 114, padded to 116
        assert_eq!(&second[..6], b"070701");
        assert_eq!(field(second, 1), 0o100755);
        assert_eq!(field(second, 6), 5);
        assert_eq!(b.len() % 4, 0);
        assert!(b.windows(10).any(|w| w == b"TRAILER!!!"));
        assert_eq!(c.encode(0x1234), b, "deterministic");
    }
}
