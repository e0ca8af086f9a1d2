//! A pass-through sink that computes the SHA-256 of the whole disk as it streams by, and, when
//! asked, its block map (see [`super::blocks`]).
//!
//! Hashing a disk means hashing every byte, zeros included: about 1 GB/s on one core with the
//! SHA extensions, which for a mostly empty 4 GiB disk is more work than writing it. So the
//! hashing runs on its own thread, fed through a bounded channel, and overlaps with the writers;
//! the block map (which hashes only the non-zero blocks) runs on another.

use super::blocks::{BlockMapInfo, BlockMapper};
use super::{check_order, BlockSink};
use sha2::{Digest, Sha256};
use std::io;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

enum Msg {
    /// Data written at an offset; shared by the workers without a copy.
    Write(u64, Arc<Vec<u8>>),
    /// The disk's length: zeros up to it, then the result.
    End(u64),
}

/// At most this many writes wait for a worker (bounded memory: writes are at most a few MiB).
const QUEUE: usize = 32;

/// What a [`HashSink`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskDigest {
    /// Hex SHA-256 of every byte of the disk.
    pub sha256: String,
    /// The block map, if it was asked for.
    pub blocks: Option<BlockMapInfo>,
}

/// A thread fed with the writes in order, giving a `T` for the whole disk at [`Msg::End`].
struct Worker<T> {
    tx: SyncSender<Msg>,
    thread: JoinHandle<Option<T>>,
}

impl<T: Send + 'static> Worker<T> {
    /// `write` sees each write; `end` the disk's length. A sink dropped without `finish` stops
    /// the thread with no result.
    fn spawn<S: Send + 'static>(
        mut state: S,
        mut write: impl FnMut(&mut S, u64, &[u8]) + Send + 'static,
        end: impl FnOnce(S, u64) -> T + Send + 'static,
    ) -> Self {
        let (tx, rx) = sync_channel::<Msg>(QUEUE);
        let thread = std::thread::spawn(move || {
            for msg in rx {
                match msg {
                    Msg::Write(offset, data) => write(&mut state, offset, &data),
                    Msg::End(len) => return Some(end(state, len)),
                }
            }
            None
        });
        Worker { tx, thread }
    }

    fn send(&self, msg: Msg) -> io::Result<()> {
        self.tx
            .send(msg)
            .map_err(|_| io::Error::other("a disk hasher stopped"))
    }

    /// Tells the thread the disk's length; its result comes from [`join`].
    fn end(self, len: u64) -> io::Result<JoinHandle<Option<T>>> {
        self.send(Msg::End(len))?;
        Ok(self.thread)
    }
}

fn join<T>(thread: JoinHandle<Option<T>>) -> io::Result<T> {
    thread
        .join()
        .ok()
        .flatten()
        .ok_or_else(|| io::Error::other("a disk hasher panicked"))
}

/// A digest still being computed on its threads, after the last byte was written.
pub struct PendingDigest {
    hasher: JoinHandle<Option<Sha256>>,
    mapper: Option<JoinHandle<Option<BlockMapInfo>>>,
}

impl PendingDigest {
    pub fn wait(self) -> io::Result<DiskDigest> {
        Ok(self.wait_extended(&[])?.0)
    }

    /// The digest, and the SHA-256 of the disk followed by `suffix`: a fixed VHD is the disk and
    /// its 512-byte footer, so its hash costs 512 bytes more, not a second pass over the disk.
    pub fn wait_extended(self, suffix: &[u8]) -> io::Result<(DiskDigest, String)> {
        let state = join(self.hasher)?;
        let sha256 = crate::util::hex(&state.clone().finalize());
        let mut extended = state;
        extended.update(suffix);
        let blocks = match self.mapper {
            Some(m) => Some(join(m)?),
            None => None,
        };
        let extended = crate::util::hex(&extended.finalize());
        Ok((DiskDigest { sha256, blocks }, extended))
    }
}

/// Hashes every byte written, and the zeros of every gap, then forwards the write.
pub struct HashSink<S> {
    inner: S,
    hasher: Worker<Sha256>,
    mapper: Option<Worker<BlockMapInfo>>,
    pos: u64,
}

impl<S: BlockSink> HashSink<S> {
    /// Hashes the disk; with `block_map`, maps its non-zero blocks too.
    pub fn new(inner: S, block_map: bool) -> Self {
        // The hasher's state: the hash so far and the position it has reached.
        let hasher = Worker::spawn(
            (Sha256::new(), 0u64),
            |(h, pos), offset, data| {
                crate::util::sha256_zeros(h, offset - *pos);
                h.update(data);
                *pos = offset + data.len() as u64;
            },
            |(mut h, pos), len| {
                crate::util::sha256_zeros(&mut h, len - pos);
                h
            },
        );
        let mapper = block_map.then(|| {
            Worker::spawn(
                BlockMapper::default(),
                |m, offset, data| m.write(offset, data),
                |m, len| m.finish(len),
            )
        });
        HashSink {
            inner,
            hasher,
            mapper,
            pos: 0,
        }
    }

    /// Returns the inner sink with the digest of the `total_len`-byte disk (zeros after the
    /// last write).
    pub fn finish(self, total_len: u64) -> io::Result<(S, DiskDigest)> {
        let (inner, pending) = self.finish_later(total_len)?;
        Ok((inner, pending.wait()?))
    }

    /// [`HashSink::finish`] without waiting: the hash of the zeros after the last write (most
    /// of a sparse disk) goes on on its own thread while the caller does something else.
    pub fn finish_later(self, total_len: u64) -> io::Result<(S, PendingDigest)> {
        if total_len < self.pos {
            return Err(io::Error::other(format!(
                "disk overran its size: {} > {total_len}",
                self.pos
            )));
        }
        let hasher = self.hasher.end(total_len)?;
        let mapper = match self.mapper {
            Some(m) => Some(m.end(total_len)?),
            None => None,
        };
        Ok((self.inner, PendingDigest { hasher, mapper }))
    }
}

impl<S: BlockSink> BlockSink for HashSink<S> {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let end = check_order(self.pos, offset, data.len())?;
        let shared = Arc::new(data.to_vec());
        if let Some(m) = &self.mapper {
            m.send(Msg::Write(offset, shared.clone()))?;
        }
        self.hasher.send(Msg::Write(offset, shared))?;
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
        let mut h = HashSink::new(VecSink::default(), true);
        h.write_at(3, b"abc").unwrap();
        h.write_at(600_000, b"z").unwrap();
        assert!(h.write_at(5, b"back").is_err());
        let (inner, digest) = h.finish(2_000_000).unwrap();
        let mut want = vec![0u8; 2_000_000];
        want[3..6].copy_from_slice(b"abc");
        want[600_000] = b'z';
        assert_eq!(digest.sha256, crate::util::hex(&Sha256::digest(&want)));
        assert_eq!(inner.data, want[..600_001]);
        let mut m = BlockMapper::default();
        m.write(0, &want);
        assert_eq!(digest.blocks, Some(m.finish(2_000_000)));
        assert_eq!(digest.blocks.unwrap().blocks, 2);
    }
}
