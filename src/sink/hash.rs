//! A pass-through sink that computes the SHA-256 of the whole disk as it streams by.

use super::{check_order, BlockSink};
use sha2::{Digest, Sha256};
use std::io;

/// Hashes every byte written, and the zeros of every gap, then forwards the write.
pub struct HashSink<S> {
    inner: S,
    hasher: Sha256,
    pos: u64,
}

static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

impl<S: BlockSink> HashSink<S> {
    pub fn new(inner: S) -> Self {
        HashSink {
            inner,
            hasher: Sha256::new(),
            pos: 0,
        }
    }

    fn hash_zeros(&mut self, mut n: u64) {
        while n > 0 {
            let k = n.min(ZEROS.len() as u64) as usize;
            self.hasher.update(&ZEROS[..k]);
            n -= k as u64;
        }
    }

    /// Hashes the zeros up to `total_len` and returns the inner sink with the hex digest.
    pub fn finish(mut self, total_len: u64) -> io::Result<(S, String)> {
        if total_len < self.pos {
            return Err(io::Error::other(format!(
                "disk overran its size: {} > {total_len}",
                self.pos
            )));
        }
        self.hash_zeros(total_len - self.pos);
        let digest = self.hasher.finalize();
        Ok((self.inner, crate::util::hex(&digest)))
    }
}

impl<S: BlockSink> BlockSink for HashSink<S> {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let end = check_order(self.pos, offset, data.len())?;
        self.hash_zeros(offset - self.pos);
        self.hasher.update(data);
        self.pos = end;
        self.inner.write_at(offset, data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::VecSink;

    #[test]
    fn hash_covers_gaps_and_tail() {
        let mut h = HashSink::new(VecSink::default());
        h.write_at(3, b"abc").unwrap();
        let (inner, digest) = h.finish(10).unwrap();
        let mut want = vec![0u8; 10];
        want[3..6].copy_from_slice(b"abc");
        assert_eq!(digest, crate::util::hex(&Sha256::digest(&want)));
        assert_eq!(inner.data, want[..6]);
    }
}
