//! A sparse, in-memory `Read + Write + Seek` device for the small structures that crates write
//! through random access (the GPT, the FAT ESP). Unwritten space reads as zeros and costs nothing;
//! [`SparseImage::emit`] streams what was written into a [`BlockSink`] in order.

use crate::sink::BlockSink;
use std::collections::BTreeMap;
use std::io::{self, Read, Seek, SeekFrom, Write};

const CHUNK: u64 = 4096;

/// A device of fixed `len` bytes whose written 4 KiB chunks live in a map.
#[derive(Debug, Default)]
pub struct SparseImage {
    len: u64,
    pos: u64,
    chunks: BTreeMap<u64, Box<[u8; CHUNK as usize]>>,
}

impl SparseImage {
    pub fn new(len: u64) -> Self {
        SparseImage {
            len,
            pos: 0,
            chunks: BTreeMap::new(),
        }
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The chunk holding the current position, the offset in it, and how many of `want` bytes
    /// fit before the chunk or the device ends. The caller checks `pos < len` first.
    fn span(&self, want: usize) -> (u64, usize, usize) {
        let off = (self.pos % CHUNK) as usize;
        let n = want
            .min(CHUNK as usize - off)
            .min((self.len - self.pos) as usize);
        (self.pos / CHUNK, off, n)
    }

    /// Bytes of memory held by written chunks.
    pub fn resident(&self) -> u64 {
        self.chunks.len() as u64 * CHUNK
    }

    /// Writes the non-zero chunks that fall in `range` to `sink`, at `base + offset`, merging
    /// neighbours into single writes. The range need not be chunk-aligned.
    pub fn emit(
        &self,
        range: std::ops::Range<u64>,
        sink: &mut dyn BlockSink,
        base: u64,
    ) -> io::Result<()> {
        let mut run: Vec<u8> = Vec::new();
        let mut run_start = 0u64;
        let first = range.start / CHUNK;
        for (&idx, data) in self.chunks.range(first..) {
            let c_start = idx * CHUNK;
            if c_start >= range.end {
                break;
            }
            if data.iter().all(|&b| b == 0) {
                continue;
            }
            let lo = range.start.max(c_start);
            let hi = range.end.min(c_start + CHUNK).min(self.len);
            let piece = &data[(lo - c_start) as usize..(hi - c_start) as usize];
            if !run.is_empty() && run_start + run.len() as u64 != lo {
                sink.write_at(base + run_start, &run)?;
                run.clear();
            }
            if run.is_empty() {
                run_start = lo;
            }
            run.extend_from_slice(piece);
            if run.len() >= 1 << 20 {
                sink.write_at(base + run_start, &run)?;
                run_start += run.len() as u64;
                run.clear();
            }
        }
        if !run.is_empty() {
            sink.write_at(base + run_start, &run)?;
        }
        Ok(())
    }
}

impl Read for SparseImage {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.len {
            return Ok(0);
        }
        let (idx, off, n) = self.span(buf.len());
        match self.chunks.get(&idx) {
            Some(c) => buf[..n].copy_from_slice(&c[off..off + n]),
            None => buf[..n].fill(0),
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl Write for SparseImage {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.pos >= self.len {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "write past the end of the device",
            ));
        }
        let (idx, off, n) = self.span(buf.len());
        let src = &buf[..n];
        match self.chunks.get_mut(&idx) {
            Some(c) => c[off..off + n].copy_from_slice(src),
            None if src.iter().all(|&b| b == 0) => {}
            None => {
                let mut c = Box::new([0u8; CHUNK as usize]);
                c[off..off + n].copy_from_slice(src);
                self.chunks.insert(idx, c);
            }
        }
        self.pos += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for SparseImage {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let new = match pos {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match new {
            Some(p) => {
                self.pos = p;
                Ok(p)
            }
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::VecSink;

    #[test]
    fn reads_back_writes_and_emits_in_order() {
        let mut d = SparseImage::new(64 * 1024);
        d.seek(SeekFrom::Start(4000)).unwrap();
        d.write_all(&[7u8; 200]).unwrap();
        d.seek(SeekFrom::End(-10)).unwrap();
        d.write_all(b"0123456789").unwrap();
        d.seek(SeekFrom::Start(3990)).unwrap();
        let mut b = [1u8; 20];
        d.read_exact(&mut b).unwrap();
        assert_eq!(&b[..10], &[0; 10]);
        assert_eq!(&b[10..], &[7; 10]);
        assert_eq!(d.resident(), 3 * 4096);

        let mut s = VecSink::default();
        d.emit(0..d.len(), &mut s, 0).unwrap();
        assert_eq!(&s.data[4000..4200], &[7u8; 200][..]);
        assert_eq!(&s.data[64 * 1024 - 10..], b"0123456789");
    }
}
