//! The `ar` container of a `.deb` (deb(5)), read as a stream: the `!<arch>\n` magic, then each
//! member's 60-byte header and its data, padded to an even offset.
//!
//! kiln's own reader, not the `ar` crate's: that crate resolves GNU (`//`, `/N`) and BSD
//! (`#1/N`) long names, and did so by indexing a name table that may be missing (a panic) and
//! by allocating what a header claims (a name table of up to 10 GB). A `.deb` needs none of it:
//! its members are `debian-binary`, `control.tar.*`, `data.tar.*` and `_`-prefixed extras, all
//! short names, and dpkg-deb refuses archives with symbol or long-name tables in those places. So
//! a member whose name needs a table is refused, and a header's size is only ever a bound on
//! what is read, never an allocation.

use std::io::{self, Read};

const MAGIC: &[u8; 8] = b"!<arch>\n";
const HEADER: usize = 60;

/// An `ar` archive read from `R`, one member at a time.
pub struct Archive<R> {
    inner: R,
    started: bool,
    /// Bytes of the current member not yet read, and its padding byte (odd sizes).
    left: u64,
    pad: bool,
    /// An error or the end was seen: no more members.
    done: bool,
}

/// One member: its name and a reader of exactly its data.
pub struct Entry<'a, R> {
    name: String,
    size: u64,
    ar: &'a mut Archive<R>,
}

impl<R> Entry<'_, R> {
    /// The member's name, without the GNU `/` terminator or the padding spaces.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The data size the header states (what this reader yields, or an error if the archive
    /// ends before it).
    pub fn size(&self) -> u64 {
        self.size
    }
}

impl<R: Read> Read for Entry<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.ar.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.ar.left).unwrap_or(usize::MAX));
        let n = self.ar.inner.read(&mut buf[..want])?;
        if n == 0 {
            self.ar.done = true;
            return Err(truncated(&self.name));
        }
        self.ar.left -= n as u64;
        Ok(n)
    }
}

fn invalid(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

fn truncated(name: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("the archive ends inside member {name:?}"),
    )
}

impl<R: Read> Archive<R> {
    pub fn new(inner: R) -> Self {
        Archive {
            inner,
            started: false,
            left: 0,
            pad: false,
            done: false,
        }
    }

    /// The next member, after skipping what is left of the current one; `None` at the end.
    pub fn next_entry(&mut self) -> Option<io::Result<Entry<'_, R>>> {
        if self.done {
            return None;
        }
        match self.advance() {
            Ok(Some((name, size))) => Some(Ok(Entry {
                name,
                size,
                ar: self,
            })),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }

    fn advance(&mut self) -> io::Result<Option<(String, u64)>> {
        if !self.started {
            let mut m = [0u8; 8];
            self.inner.read_exact(&mut m).map_err(|_| {
                invalid("it does not start with the ar magic \"!<arch>\\n\"".into())
            })?;
            if &m != MAGIC {
                return Err(invalid(
                    "it does not start with the ar magic \"!<arch>\\n\"".into(),
                ));
            }
            self.started = true;
        }
        // The rest of the previous member and its padding byte: streamed past, never buffered.
        let skip = self.left + u64::from(self.pad);
        if skip > 0 {
            let got = io::copy(&mut (&mut self.inner).take(skip), &mut io::sink())?;
            // The last member's padding byte may be missing (dpkg-deb accepts that too).
            if got < self.left {
                return Err(invalid("the archive ends inside a member".into()));
            }
            (self.left, self.pad) = (0, false);
        }
        let mut h = [0u8; HEADER];
        let got = crate::util::read_full(&mut self.inner, &mut h)?;
        if got == 0 {
            return Ok(None);
        }
        if got < HEADER {
            return Err(invalid(format!(
                "the archive ends inside a member header ({got} of {HEADER} bytes)"
            )));
        }
        if &h[58..60] != b"`\n" {
            return Err(invalid(
                "a member header lacks its \"`\\n\" terminator".into(),
            ));
        }
        let name = parse_name(&h[..16])?;
        let size = parse_size(&h[48..58], &name)?;
        (self.left, self.pad) = (size, size % 2 == 1);
        Ok(Some((name, size)))
    }
}

fn parse_name(field: &[u8]) -> io::Result<String> {
    let shown = String::from_utf8_lossy(field).trim_end().to_owned();
    if field.starts_with(b"/") || field.starts_with(b"#1/") || field.starts_with(b"__.SYMDEF") {
        return Err(invalid(format!(
            "member {shown:?} is a symbol table or a long name; a .deb holds only \
             debian-binary, control.tar.*, data.tar.* and _-named members, all with short names"
        )));
    }
    let end = field.iter().rposition(|&b| b != b' ').map_or(0, |i| i + 1);
    let mut name = &field[..end];
    // GNU ar ends a short name with '/', so that names may contain spaces.
    if let Some(n) = name.strip_suffix(b"/") {
        name = n;
    }
    if name.is_empty() || !name.iter().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(format!(
            "member name {shown:?} is empty or not printable ASCII"
        )));
    }
    Ok(String::from_utf8_lossy(name).into_owned())
}

fn parse_size(field: &[u8], name: &str) -> io::Result<u64> {
    let end = field.iter().rposition(|&b| b != b' ').map_or(0, |i| i + 1);
    let digits = &field[..end];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(invalid(format!(
            "member {name:?} has the size {:?}, not a decimal number",
            String::from_utf8_lossy(field)
        )));
    }
    // At most 10 digits: always fits.
    Ok(digits
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

#[cfg(test)]
mod tests {
    use super::Archive;
    use std::io::Read;

    fn header(name: &str, size: usize) -> Vec<u8> {
        let h = format!(
            "{name:<16}{:<12}{:<6}{:<6}{:<8}{size:<10}`\n",
            0, 0, 0, "100644"
        );
        assert_eq!(h.len(), 60);
        h.into_bytes()
    }

    fn archive(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut a = b"!<arch>\n".to_vec();
        for (name, data) in members {
            a.extend(header(name, data.len()));
            a.extend_from_slice(data);
            if data.len() % 2 == 1 {
                a.push(b'\n');
            }
        }
        a
    }

    fn read_all(data: &[u8]) -> Result<Vec<(String, Vec<u8>)>, String> {
        let mut ar = Archive::new(data);
        let mut out = Vec::new();
        while let Some(e) = ar.next_entry() {
            let mut e = e.map_err(|e| e.to_string())?;
            let mut v = Vec::new();
            e.read_to_end(&mut v).map_err(|e| e.to_string())?;
            out.push((e.name().to_owned(), v));
        }
        Ok(out)
    }

    #[test]
    fn reads_members_with_padding_and_gnu_terminators() {
        let a = archive(&[
            ("debian-binary", b"2.0\n"),
            ("control.tar.gz/", b"odd"),
            ("data.tar.xz", b"even"),
        ]);
        let got = read_all(&a).unwrap();
        let names: Vec<_> = got.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["debian-binary", "control.tar.gz", "data.tar.xz"]);
        assert_eq!(got[1].1, b"odd");
        assert_eq!(got[2].1, b"even");
    }

    #[test]
    fn a_member_left_unread_is_skipped() {
        let a = archive(&[("a", b"12345"), ("b", b"x")]);
        let mut ar = Archive::new(&a[..]);
        let mut first = ar.next_entry().unwrap().unwrap();
        let mut two = [0u8; 2];
        first.read_exact(&mut two).unwrap();
        let mut second = ar.next_entry().unwrap().unwrap();
        assert_eq!(second.name(), "b");
        let mut v = Vec::new();
        second.read_to_end(&mut v).unwrap();
        assert_eq!(v, b"x");
        assert!(ar.next_entry().is_none());
    }

    #[test]
    fn table_and_long_names_are_refused() {
        for name in ["/", "//", "/0", "/123", "#1/20", "__.SYMDEF"] {
            let a = archive(&[(name, b"x")]);
            let e = read_all(&a).unwrap_err();
            assert!(e.contains("symbol table or a long name"), "{name}: {e}");
        }
    }

    #[test]
    fn a_size_is_a_bound_not_an_allocation() {
        // A header claiming 9,999,999,999 bytes over a 4-byte body: an error, at once.
        let mut a = b"!<arch>\n".to_vec();
        a.extend(header("data.tar", 9_999_999_999));
        a.extend_from_slice(b"abcd");
        let e = read_all(&a).unwrap_err();
        assert!(e.contains("ends inside member \"data.tar\""), "{e}");
    }

    #[test]
    fn bad_headers_are_errors() {
        assert!(read_all(b"!<arch>\n").unwrap().is_empty());
        assert!(read_all(b"!<arch\n").unwrap_err().contains("magic"));
        assert!(read_all(b"").unwrap_err().contains("magic"));
        let mut a = archive(&[("a", b"")]);
        a.truncate(30);
        assert!(read_all(&a).unwrap_err().contains("header (22 of 60"));
        let mut a = archive(&[("a", b"")]);
        a[8 + 48] = b'x';
        assert!(read_all(&a).unwrap_err().contains("not a decimal"));
        let mut a = archive(&[("a", b"")]);
        a[8 + 59] = b'x';
        assert!(read_all(&a).unwrap_err().contains("terminator"));
        let a = archive(&[("a b", b"")]);
        assert!(read_all(&a).unwrap_err().contains("printable"));
    }
}
