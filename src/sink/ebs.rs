//! Streams a disk into an EBS snapshot: 512 KiB blocks, each hashed once, uploaded with bounded
//! concurrency.
//!
//! The sink is synchronous (writers call [`BlockSink::write_at`]); uploads run as tasks on a
//! tokio runtime. A semaphore with `workers` permits bounds the blocks in flight, so memory stays
//! at about `workers × 512 KiB` whatever the disk's size.
//!
//! Zero blocks: an unencrypted snapshot reads unwritten blocks as zeros, so all-zero blocks (and
//! the gaps writers skip, which are zeros by the [`BlockSink`] contract) are not sent. An encrypted
//! snapshot reads unwritten blocks as garbage, so there every block of the volume is written.

use super::{check_order, BlockSink};
use crate::aws::snapshot::{linear_checksum, Snapshot, SnapshotError, BLOCK_SIZE};
use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::runtime::Handle;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

const B: u64 = BLOCK_SIZE;
static ZERO_BLOCK: [u8; BLOCK_SIZE as usize] = [0; BLOCK_SIZE as usize];

/// The concurrency unless told otherwise.
pub const DEFAULT_WORKERS: usize = 64;

/// Counters shared with whoever draws progress.
#[derive(Debug, Default)]
pub struct UploadStats {
    /// Blocks of the volume the sink will consider (for a bar's length).
    pub total_blocks: AtomicU64,
    /// Blocks the sink has passed: sent, skipped or queued.
    pub blocks_done: AtomicU64,
    pub blocks_sent: AtomicU64,
    pub zero_blocks_skipped: AtomicU64,
    pub bytes_sent: AtomicU64,
}

/// What an upload did, for the summary and `--json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadReport {
    pub snapshot_id: String,
    pub region: String,
    pub volume_size_gib: i64,
    pub blocks_sent: u64,
    pub zero_blocks_skipped: u64,
    pub bytes_sent: u64,
    pub retries: u64,
    pub elapsed: Duration,
}

/// A [`BlockSink`] that uploads into a started snapshot; [`EbsSink::finish`] completes it.
pub struct EbsSink {
    handle: Handle,
    snapshot: Arc<Snapshot>,
    size: u64,
    volume_bytes: u64,
    encrypted: bool,
    sem: Arc<Semaphore>,
    /// Bytes of the current block written so far (from the block's start to `pos`).
    buf: Vec<u8>,
    pos: u64,
    /// (block index, SHA-256) of every block sent, ascending.
    digests: Vec<(u64, [u8; 32])>,
    failure: Arc<Mutex<Option<SnapshotError>>>,
    tasks: JoinSet<()>,
    stats: Arc<UploadStats>,
    started: Instant,
}

impl EbsSink {
    /// A sink for a disk of `size` bytes into `snapshot`, whose volume is `volume_gib` GiB.
    /// Must be used outside the runtime's threads (it blocks on `handle`).
    pub fn new(
        handle: Handle,
        snapshot: Snapshot,
        size: u64,
        volume_gib: i64,
        encrypted: bool,
        workers: usize,
    ) -> Self {
        let workers = workers.clamp(1, 1024) as u32;
        let volume_bytes = volume_gib as u64 * (1 << 30);
        let stats = UploadStats::default();
        let considered = if encrypted { volume_bytes } else { size };
        stats
            .total_blocks
            .store(considered.div_ceil(B), Ordering::Relaxed);
        EbsSink {
            handle,
            snapshot: Arc::new(snapshot),
            size,
            volume_bytes,
            encrypted,
            sem: Arc::new(Semaphore::new(workers as usize)),
            buf: Vec::with_capacity(B as usize),
            pos: 0,
            digests: Vec::new(),
            failure: Arc::default(),
            tasks: JoinSet::new(),
            stats: Arc::new(stats),
            started: Instant::now(),
        }
    }

    pub fn stats(&self) -> Arc<UploadStats> {
        self.stats.clone()
    }

    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    fn check_failed(&self) -> io::Result<()> {
        match self.failure.lock() {
            Ok(f) => match f.as_ref() {
                Some(e) => Err(io::Error::other(e.to_string())),
                None => Ok(()),
            },
            Err(_) => Err(io::Error::other("an upload task panicked")),
        }
    }

    /// Moves `pos` forward to `to` over zeros.
    fn zeros_to(&mut self, to: u64) -> io::Result<()> {
        while self.pos < to {
            let index = self.pos / B;
            let block_end = (index + 1) * B;
            if self.pos % B == 0 && to >= block_end {
                self.zero_block(index)?;
                self.pos = block_end;
                continue;
            }
            let n = (to.min(block_end) - self.pos) as usize;
            self.buf.resize(self.buf.len() + n, 0);
            self.pos += n as u64;
            if self.pos == block_end {
                self.flush(index)?;
            }
        }
        Ok(())
    }

    fn zero_block(&mut self, index: u64) -> io::Result<()> {
        if self.encrypted {
            // Hash once: every zero block has the same digest.
            static ZERO_DIGEST: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
            let digest = *ZERO_DIGEST.get_or_init(|| Sha256::digest(ZERO_BLOCK).into());
            self.send(index, Bytes::from_static(&ZERO_BLOCK), digest)
        } else {
            self.stats
                .zero_blocks_skipped
                .fetch_add(1, Ordering::Relaxed);
            self.stats.blocks_done.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
    }

    /// Sends (or skips) the full block in `buf`.
    fn flush(&mut self, index: u64) -> io::Result<()> {
        self.buf.resize(B as usize, 0);
        let r = if is_zero(&self.buf) {
            self.zero_block(index)
        } else {
            let digest: [u8; 32] = Sha256::digest(&self.buf).into();
            let data = Bytes::copy_from_slice(&self.buf);
            self.send(index, data, digest)
        };
        self.buf.clear();
        r
    }

    fn send(&mut self, index: u64, data: Bytes, digest: [u8; 32]) -> io::Result<()> {
        self.check_failed()?;
        if index > i32::MAX as u64 {
            return Err(io::Error::other(format!(
                "block index {index} is too large"
            )));
        }
        self.digests.push((index, digest));
        let permit = self
            .handle
            .block_on(self.sem.clone().acquire_owned())
            .map_err(|_| io::Error::other("upload stopped"))?;
        let (snap, failure, stats) = (
            self.snapshot.clone(),
            self.failure.clone(),
            self.stats.clone(),
        );
        let len = data.len() as u64;
        self.stats.blocks_done.fetch_add(1, Ordering::Relaxed);
        // Reap finished tasks so the set stays as small as the blocks in flight.
        while self.tasks.try_join_next().is_some() {}
        self.tasks.spawn_on(
            async move {
                let r = snap.put_block(index, data, &digest).await;
                match r {
                    Ok(()) => {
                        stats.blocks_sent.fetch_add(1, Ordering::Relaxed);
                        stats.bytes_sent.fetch_add(len, Ordering::Relaxed);
                    }
                    Err(e) => {
                        tracing::error!("{e}");
                        if let Ok(mut f) = failure.lock() {
                            f.get_or_insert(e);
                        }
                    }
                }
                drop(permit);
            },
            &self.handle,
        );
        Ok(())
    }

    /// Stops: cancels the blocks in flight and waits until no task is left (before the snapshot
    /// is deleted, so that no PutSnapshotBlock races the deletion).
    pub fn abort(mut self) {
        self.tasks.abort_all();
        let mut tasks = std::mem::take(&mut self.tasks);
        self.handle
            .block_on(async move { while tasks.join_next().await.is_some() {} });
    }

    /// Waits for every block, then CompleteSnapshot and waits for `completed`.
    pub fn finish(mut self, wait_timeout: Duration) -> Result<UploadReport, SnapshotError> {
        let io_err = |e: io::Error| SnapshotError::Call(call_error(e));
        if self.pos > self.size {
            return Err(io_err(io::Error::other(format!(
                "the disk overran its {} bytes",
                self.size
            ))));
        }
        let end = if self.encrypted {
            self.volume_bytes
        } else {
            self.size
        };
        let r = self.zeros_to(end).and_then(|()| {
            // A disk that ends mid-block: the rest of the block is zeros.
            if !self.buf.is_empty() {
                self.flush(self.pos / B)?;
            }
            Ok(())
        });
        if let Err(e) = r {
            self.abort();
            return Err(io_err(e));
        }
        // Wait for every block; the first failure cancels the rest.
        let mut tasks = std::mem::take(&mut self.tasks);
        let failure = self.failure.clone();
        let failed = move || failure.lock().map(|f| f.is_some()).unwrap_or(true);
        self.handle.block_on(async {
            while tasks.join_next().await.is_some() {
                if failed() {
                    tasks.abort_all();
                }
            }
        });
        if let Some(e) = self.failure.lock().ok().and_then(|mut f| f.take()) {
            return Err(e);
        }
        let count = self.digests.len() as u64;
        let checksum = linear_checksum(self.digests.iter().map(|(_, d)| d));
        let snap = self.snapshot.clone();
        self.handle.block_on(async {
            snap.complete(count, &checksum).await?;
            snap.wait_completed(wait_timeout).await
        })?;
        let s = &self.stats;
        Ok(UploadReport {
            snapshot_id: snap.id.clone(),
            region: snap.clients.region.clone(),
            volume_size_gib: (self.volume_bytes >> 30) as i64,
            blocks_sent: s.blocks_sent.load(Ordering::Relaxed),
            zero_blocks_skipped: s.zero_blocks_skipped.load(Ordering::Relaxed),
            bytes_sent: s.bytes_sent.load(Ordering::Relaxed),
            retries: snap.retrier.retries(),
            elapsed: self.started.elapsed(),
        })
    }
}

fn call_error(e: io::Error) -> crate::aws::retry::CallError {
    crate::aws::retry::CallError {
        op: "upload".into(),
        message: e.to_string(),
        cause: crate::aws::retry::Cause::Fatal,
        attempts: 1,
    }
}

impl BlockSink for EbsSink {
    fn write_at(&mut self, offset: u64, mut data: &[u8]) -> io::Result<()> {
        let end = check_order(self.pos, offset, data.len())?;
        if end > self.size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "write ending at {end} runs past the disk's {} bytes",
                    self.size
                ),
            ));
        }
        self.zeros_to(offset)?;
        while !data.is_empty() {
            let index = self.pos / B;
            let room = ((index + 1) * B - self.pos) as usize;
            let n = room.min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            self.pos += n as u64;
            data = &data[n..];
            if n == room {
                self.flush(index)?;
            }
        }
        Ok(())
    }
}

fn is_zero(b: &[u8]) -> bool {
    // Compare in u64 words; the compiler vectorises this.
    let (pre, mid, post) = unsafe { b.align_to::<u64>() };
    pre.iter().all(|&x| x == 0) && mid.iter().all(|&x| x == 0) && post.iter().all(|&x| x == 0)
}
