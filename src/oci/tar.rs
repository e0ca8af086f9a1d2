//! A reproducible tar stream for OCI layers: POSIX ustar headers (numeric owners only, no user
//! or group names), with a PAX extended header (POSIX.1-2001 `x` entry) before any entry that
//! ustar cannot hold: a path or link target over 100 bytes, extended attributes
//! (`SCHILY.xattr.NAME`, what GNU tar, containerd and umoci read), ids or sizes too large for
//! the octal fields.

use std::io::{self, Read, Write};

pub const BLOCK: usize = 512;

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    File {
        size: u64,
    },
    Dir,
    Symlink {
        target: Vec<u8>,
    },
    /// A second name for a file already in the archive.
    HardLink {
        target: Vec<u8>,
    },
    CharDev {
        major: u32,
        minor: u32,
    },
    BlockDev {
        major: u32,
        minor: u32,
    },
    Fifo,
}

/// One entry's header fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Relative path (`etc/passwd`); directories end in `/`.
    pub path: Vec<u8>,
    pub kind: EntryKind,
    /// Permission bits with setuid/setgid/sticky.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u64,
    /// Extended attributes, sorted by name.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

const OCTAL7: u64 = 0o7_777_777;
const OCTAL11: u64 = 0o77_777_777_777;

impl Entry {
    fn typeflag(&self) -> u8 {
        match self.kind {
            EntryKind::File { .. } => b'0',
            EntryKind::HardLink { .. } => b'1',
            EntryKind::Symlink { .. } => b'2',
            EntryKind::CharDev { .. } => b'3',
            EntryKind::BlockDev { .. } => b'4',
            EntryKind::Dir => b'5',
            EntryKind::Fifo => b'6',
        }
    }

    fn size(&self) -> u64 {
        match self.kind {
            EntryKind::File { size } => size,
            _ => 0,
        }
    }

    fn link(&self) -> &[u8] {
        match &self.kind {
            EntryKind::Symlink { target } | EntryKind::HardLink { target } => target,
            _ => &[],
        }
    }

    /// The PAX records this entry needs, in a fixed order.
    fn pax_records(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if self.path.len() > 100 {
            pax_record(&mut out, b"path", &self.path);
        }
        if self.link().len() > 100 {
            pax_record(&mut out, b"linkpath", self.link());
        }
        if u64::from(self.uid) > OCTAL7 {
            pax_record(&mut out, b"uid", self.uid.to_string().as_bytes());
        }
        if u64::from(self.gid) > OCTAL7 {
            pax_record(&mut out, b"gid", self.gid.to_string().as_bytes());
        }
        if self.size() > OCTAL11 {
            pax_record(&mut out, b"size", self.size().to_string().as_bytes());
        }
        for (k, v) in &self.xattrs {
            let mut key = b"SCHILY.xattr.".to_vec();
            key.extend_from_slice(k);
            pax_record(&mut out, &key, v);
        }
        out
    }

    /// The ustar header block (fields that do not fit are truncated or zero; the PAX records
    /// carry them).
    pub fn ustar(&self) -> [u8; BLOCK] {
        let mut b = [0u8; BLOCK];
        put(&mut b[0..100], &self.path);
        octal(&mut b[100..108], u64::from(self.mode & 0o7777));
        octal(&mut b[108..116], u64::from(self.uid).min(OCTAL7));
        octal(&mut b[116..124], u64::from(self.gid).min(OCTAL7));
        octal(&mut b[124..136], self.size().min(OCTAL11));
        octal(&mut b[136..148], self.mtime.min(OCTAL11));
        b[156] = self.typeflag();
        put(&mut b[157..257], self.link());
        b[257..263].copy_from_slice(b"ustar\0");
        b[263..265].copy_from_slice(b"00");
        if let EntryKind::CharDev { major, minor } | EntryKind::BlockDev { major, minor } =
            self.kind
        {
            octal(&mut b[329..337], u64::from(major).min(OCTAL7));
            octal(&mut b[337..345], u64::from(minor).min(OCTAL7));
        }
        checksum(&mut b);
        b
    }
}

/// `"%d %s=%s\n"`, where the length counts the whole record including its own digits.
fn pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let rest = 1 + key.len() + 1 + value.len() + 1;
    let mut len = rest + 1;
    while len.to_string().len() + rest != len {
        len = len.to_string().len() + rest;
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

fn put(field: &mut [u8], v: &[u8]) {
    let n = v.len().min(field.len());
    field[..n].copy_from_slice(&v[..n]);
}

/// Zero-padded octal with a terminating NUL, as GNU tar writes.
fn octal(field: &mut [u8], v: u64) {
    let n = field.len() - 1;
    let s = format!("{:0width$o}", v, width = n);
    field[..n].copy_from_slice(s.as_bytes());
    field[n] = 0;
}

fn checksum(b: &mut [u8; BLOCK]) {
    b[148..156].fill(b' ');
    let sum: u32 = b.iter().map(|&x| u32::from(x)).sum();
    let s = format!("{sum:06o}\0 ");
    b[148..156].copy_from_slice(s.as_bytes());
}

/// Writes entries one after another, then the two zero blocks that end an archive.
pub struct TarWriter<W: Write> {
    w: W,
}

impl<W: Write> TarWriter<W> {
    pub fn new(w: W) -> Self {
        TarWriter { w }
    }

    /// Writes `e` and, for a file, exactly `size` bytes from `data`.
    pub fn append(&mut self, e: &Entry, data: Option<&mut dyn Read>) -> io::Result<()> {
        let pax = e.pax_records();
        if !pax.is_empty() {
            // The extended header's own name is fixed ("PaxHeader" beside nothing): readers
            // ignore it, and a fixed name keeps the archive independent of anything else.
            let x = Entry {
                path: b"PaxHeader".to_vec(),
                kind: EntryKind::File {
                    size: pax.len() as u64,
                },
                mode: 0o644,
                uid: 0,
                gid: 0,
                mtime: e.mtime,
                xattrs: Vec::new(),
            };
            let mut h = x.ustar();
            h[156] = b'x';
            checksum(&mut h);
            self.w.write_all(&h)?;
            self.w.write_all(&pax)?;
            self.pad(pax.len() as u64)?;
        }
        self.w.write_all(&e.ustar())?;
        let size = e.size();
        if size > 0 {
            let data = data.ok_or_else(|| io::Error::other("a file entry without its data"))?;
            let copied = io::copy(&mut data.take(size), &mut self.w)?;
            if copied != size {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "{}: {copied} bytes where {size} were expected (changed during the build?)",
                        String::from_utf8_lossy(&e.path)
                    ),
                ));
            }
            self.pad(size)?;
        }
        Ok(())
    }

    fn pad(&mut self, len: u64) -> io::Result<()> {
        let rem = (len % BLOCK as u64) as usize;
        if rem != 0 {
            self.w.write_all(&[0u8; BLOCK][..BLOCK - rem])?;
        }
        Ok(())
    }

    /// The end-of-archive blocks; returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.w.write_all(&[0u8; 2 * BLOCK])?;
        Ok(self.w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, kind: EntryKind) -> Entry {
        Entry {
            path: path.as_bytes().to_vec(),
            kind,
            mode: 0o4755,
            uid: 1000,
            gid: 3_000_000,
            mtime: 1_700_000_000,
            // No newline in the value: the tar crate splits PAX records on newlines (GNU tar and
            // Go read them by their length, as the format says).
            xattrs: vec![(b"user.k".to_vec(), b"v\0x".to_vec())],
        }
    }

    #[test]
    fn the_tar_crate_reads_back_every_field() {
        let long = format!("d/{}", "x".repeat(150));
        let mut t = TarWriter::new(Vec::new());
        t.append(&entry("d/", EntryKind::Dir), None).unwrap();
        let mut data: &[u8] = b"hello";
        t.append(&entry(&long, EntryKind::File { size: 5 }), Some(&mut data))
            .unwrap();
        t.append(
            &entry(
                "d/l",
                EntryKind::HardLink {
                    target: long.clone().into_bytes(),
                },
            ),
            None,
        )
        .unwrap();
        t.append(
            &entry("d/c", EntryKind::CharDev { major: 1, minor: 3 }),
            None,
        )
        .unwrap();
        let bytes = t.finish().unwrap();
        assert_eq!(bytes.len() % BLOCK, 0);
        let mut a = tar::Archive::new(&bytes[..]);
        let mut seen = Vec::new();
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let path = e.path_bytes().into_owned();
            let h = e.header().clone();
            let xattrs: Vec<(String, Vec<u8>)> = e
                .pax_extensions()
                .unwrap()
                .unwrap()
                .map(|x| x.unwrap())
                .filter(|x| x.key().unwrap().starts_with("SCHILY.xattr."))
                .map(|x| (x.key().unwrap().to_string(), x.value_bytes().to_vec()))
                .collect();
            assert_eq!(xattrs, [("SCHILY.xattr.user.k".into(), b"v\0x".to_vec())]);
            assert_eq!(h.mode().unwrap(), 0o4755);
            assert_eq!(h.uid().unwrap(), 1000);
            assert_eq!(
                e.header().gid().unwrap(),
                3_000_000,
                "over the ustar field's range: from the PAX record"
            );
            let mut body = Vec::new();
            e.read_to_end(&mut body).unwrap();
            seen.push((String::from_utf8(path).unwrap(), h.entry_type(), body));
        }
        assert_eq!(seen[1].0, long);
        assert_eq!(seen[1].2, b"hello");
        assert_eq!(seen[2].1, tar::EntryType::Link);
        assert_eq!(seen[3].1, tar::EntryType::Char);
    }

    #[test]
    fn pax_record_lengths_count_themselves() {
        let mut out = Vec::new();
        pax_record(&mut out, b"path", &[b'a'; 93]);
        assert_eq!(&out[..4], b"103 ");
        assert_eq!(out.len(), 103);
        let mut out = Vec::new();
        pax_record(&mut out, b"k", b"v");
        assert_eq!(out, b"6 k=v\n");
    }
}
