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
//! A gap costs nothing per block: the chunker hands out only the blocks something was written
//! into, and the uploader takes the gap between two of them at once, visiting only the parent's
//! blocks inside it (issue 16: an 8 TiB disk's 16 million gap blocks cost 0.1 s of CPU one by
//! one).
//!
//! A child snapshot (an incremental upload, [`EbsSink::set_parent`]) reads unwritten blocks as its
//! parent's: a block whose digest is the parent's is not sent, and a block that is zero now but
//! held data in the parent is written as zeros. CompleteSnapshot's ChangedBlocksCount and LINEAR
//! checksum then cover the blocks written to the child alone, ascending ("the checksums for each
//! written data block", CompleteSnapshot, EBS API reference).

use super::blocks::{is_zero, Block, BlockMap, BlockMapInfo, Chunker};
use super::mapfile::MapData;
use super::{check_order, BlockSink};
use crate::aws::pace::Pace;
use crate::aws::snapshot::{LinearChecksum, Snapshot, SnapshotError, BLOCK_SIZE};
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
    /// Blocks not sent because the parent snapshot holds the same bytes.
    pub unchanged_blocks_skipped: AtomicU64,
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
    /// Blocks the parent snapshot already held (an incremental upload).
    pub unchanged_blocks_skipped: u64,
    /// The parent snapshot, for an incremental upload.
    pub parent: Option<String>,
    pub bytes_sent: u64,
    pub retries: u64,
    pub elapsed: Duration,
    /// The block map of the disk sent (its non-zero blocks), as the manifest records it.
    pub blocks: BlockMapInfo,
    /// The block map itself (`<stem>.blocks` of `build --upload`).
    pub map: MapData,
}

/// A [`BlockSink`] that uploads into a started snapshot; [`EbsSink::finish`] completes it.
pub struct EbsSink {
    chunker: Chunker,
    up: Uploader,
    size: u64,
    volume_bytes: u64,
    expect: Option<BlockMapInfo>,
    before_completed: Option<BeforeCompleted>,
    started: Instant,
}

/// Work to do between CompleteSnapshot and the wait for `completed`, given the snapshot and the
/// block map of the disk sent; see [`EbsSink::before_completed`].
pub type BeforeCompleted = Box<dyn FnOnce(&Snapshot, &BlockMapInfo) -> Result<(), String>>;

/// Everything but the chunking: what happens to each whole block.
struct Uploader {
    handle: Handle,
    snapshot: Arc<Snapshot>,
    encrypted: bool,
    sem: Arc<Semaphore>,
    /// How long each block's attempts may take, from the uplink measured so far.
    pace: Arc<Pace>,
    /// Over every block sent (CompleteSnapshot's aggregate).
    linear: LinearChecksum,
    /// Over the non-zero blocks (the manifest's block map).
    map: BlockMap,
    failure: Arc<Mutex<Option<SnapshotError>>>,
    tasks: JoinSet<()>,
    stats: Arc<UploadStats>,
    /// The parent's non-zero blocks (index, SHA-256), ascending, and how far the upload has
    /// passed through them.
    parent: Vec<(u64, [u8; 32])>,
    parent_at: usize,
    parent_id: Option<String>,
    /// The first block not handed to [`Uploader::block`] or [`Uploader::gap`] yet.
    next: u64,
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
        let workers = workers.clamp(1, 1024);
        let volume_bytes = volume_gib as u64 * (1 << 30);
        let stats = UploadStats::default();
        let considered = if encrypted { volume_bytes } else { size };
        stats
            .total_blocks
            .store(considered.div_ceil(B), Ordering::Relaxed);
        let floor = snapshot.retrier.policy.attempt_timeout;
        EbsSink {
            chunker: Chunker::without_gaps(),
            up: Uploader {
                handle,
                snapshot: Arc::new(snapshot),
                encrypted,
                sem: Arc::new(Semaphore::new(workers)),
                pace: Arc::new(Pace::new(floor, workers, B)),
                linear: LinearChecksum::default(),
                map: BlockMap::new(size),
                failure: Arc::default(),
                tasks: JoinSet::new(),
                stats: Arc::new(stats),
                parent: Vec::new(),
                parent_at: 0,
                parent_id: None,
                next: 0,
            },
            size,
            volume_bytes,
            expect: None,
            before_completed: None,
            started: Instant::now(),
        }
    }

    pub fn stats(&self) -> Arc<UploadStats> {
        self.up.stats.clone()
    }

    pub fn snapshot(&self) -> &Snapshot {
        &self.up.snapshot
    }

    /// Fails the upload before CompleteSnapshot (so the snapshot is deleted) unless the disk's
    /// non-zero blocks are exactly those `map` describes: how `kiln upload` holds an image to
    /// its manifest without hashing the whole disk again.
    pub fn expect_blocks(&mut self, map: BlockMapInfo) {
        self.expect = Some(map);
    }

    /// Makes this an incremental upload into a child of `snapshot_id`, whose disk's block map is
    /// `parent` (its disk is this one's size: see [`crate::aws::parent`]). Call before the first
    /// write; the snapshot must have been started with that parent, unencrypted.
    pub fn set_parent(&mut self, snapshot_id: &str, parent: &MapData) {
        self.up.parent = parent.entries().collect();
        self.up.parent_at = 0;
        self.up.parent_id = Some(snapshot_id.to_string());
    }

    /// Runs `f` once CompleteSnapshot is sent, before waiting for `completed`: AWS processes the
    /// snapshot meanwhile. `build --upload` tags the snapshot there with the blocks digest (and
    /// finishes the disk's sha256 when asked for); if `f` fails, the upload fails and the
    /// snapshot is deleted.
    pub fn before_completed(&mut self, f: BeforeCompleted) {
        self.before_completed = Some(f);
    }

    /// Stops: cancels the blocks in flight and waits until no task is left (before the snapshot
    /// is deleted, so that no PutSnapshotBlock races the deletion).
    pub fn abort(self) {
        self.up.abort();
    }

    /// Waits for every block, then CompleteSnapshot and waits for `completed`.
    pub fn finish(mut self, wait_timeout: Duration) -> Result<UploadReport, SnapshotError> {
        // An encrypted snapshot reads unwritten blocks as garbage: write the volume's every
        // block. A disk that ends mid-block: the rest of the block is zeros.
        let end = if self.up.encrypted {
            self.volume_bytes
        } else {
            self.size
        };
        let up = &mut self.up;
        let r = self.chunker.finish(end, &mut |i, b| up.block(i, b));
        if let Err(e) = r.and_then(|()| up.gap(end.div_ceil(B))) {
            self.up.abort();
            return Err(SnapshotError::Upload(e));
        }
        let mut up = self.up;
        let full = std::mem::replace(&mut up.map, BlockMap::new(0)).finish_map();
        let map = full.info.clone();
        if let Some(want) = self.expect.filter(|w| *w != map) {
            up.abort();
            return Err(SnapshotError::NotTheManifests {
                got: map.blocks,
                got_sha256: map.sha256,
                want: want.blocks,
                want_sha256: want.sha256,
            });
        }
        // Wait for every block; the first failure cancels the rest.
        let mut tasks = std::mem::take(&mut up.tasks);
        let failure = up.failure.clone();
        let failed = move || failure.lock().map(|f| f.is_some()).unwrap_or(true);
        up.handle.block_on(async {
            while tasks.join_next().await.is_some() {
                if failed() {
                    tasks.abort_all();
                }
            }
        });
        if let Some(e) = up.failure.lock().ok().and_then(|mut f| f.take()) {
            return Err(e);
        }
        let (count, checksum) = up.linear.finish();
        let snap = up.snapshot.clone();
        up.handle.block_on(snap.complete(count, &checksum))?;
        if let Some(f) = self.before_completed {
            f(&snap, &map).map_err(SnapshotError::BeforeCompleted)?;
        }
        up.handle.block_on(snap.wait_completed(wait_timeout))?;
        let s = &up.stats;
        Ok(UploadReport {
            snapshot_id: snap.id.clone(),
            region: snap.clients.region.clone(),
            volume_size_gib: (self.volume_bytes >> 30) as i64,
            blocks_sent: s.blocks_sent.load(Ordering::Relaxed),
            zero_blocks_skipped: s.zero_blocks_skipped.load(Ordering::Relaxed),
            unchanged_blocks_skipped: s.unchanged_blocks_skipped.load(Ordering::Relaxed),
            parent: up.parent_id.clone(),
            bytes_sent: s.bytes_sent.load(Ordering::Relaxed),
            retries: snap.retrier.retries(),
            elapsed: self.started.elapsed(),
            blocks: map,
            map: full,
        })
    }
}

/// The SHA-256 of a zero block, hashed once.
fn zero_digest() -> [u8; 32] {
    static ZERO_DIGEST: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
    *ZERO_DIGEST.get_or_init(|| Sha256::digest(ZERO_BLOCK).into())
}

impl Uploader {
    fn check_failed(&self) -> io::Result<()> {
        match self.failure.lock() {
            Ok(f) => match f.as_ref() {
                Some(e) => Err(io::Error::other(e.to_string())),
                None => Ok(()),
            },
            Err(_) => Err(io::Error::other("an upload task panicked")),
        }
    }

    /// The parent's digest of block `index`, if it held data there. Indices ascend.
    fn parent_digest(&mut self, index: u64) -> Option<[u8; 32]> {
        while self.parent.get(self.parent_at).is_some_and(|p| p.0 < index) {
            self.parent_at += 1;
        }
        self.parent
            .get(self.parent_at)
            .filter(|p| p.0 == index)
            .map(|p| p.1)
    }

    fn skipped(&self, counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
        self.stats.blocks_done.fetch_add(1, Ordering::Relaxed);
    }

    /// Blocks `next..end`, which nothing was written into: zeros. Only an encrypted snapshot's
    /// (every block written) and the parent's data blocks among them (zeros sent over them) are
    /// visited one by one; the rest are counted at once.
    fn gap(&mut self, end: u64) -> io::Result<()> {
        let start = self.next;
        if end <= start {
            return Ok(());
        }
        self.next = end;
        if self.encrypted {
            for index in start..end {
                self.send(index, Bytes::from_static(&ZERO_BLOCK), zero_digest())?;
            }
            return Ok(());
        }
        let mut sent = 0;
        while let Some(&(index, _)) = self.parent.get(self.parent_at).filter(|p| p.0 < end) {
            self.parent_at += 1;
            if index >= start {
                self.send(index, Bytes::from_static(&ZERO_BLOCK), zero_digest())?;
                sent += 1;
            }
        }
        let skipped = end - start - sent;
        self.stats
            .zero_blocks_skipped
            .fetch_add(skipped, Ordering::Relaxed);
        self.stats.blocks_done.fetch_add(skipped, Ordering::Relaxed);
        Ok(())
    }

    /// One whole block: sent, or skipped when it is zeros and the snapshot is not encrypted, or
    /// when the parent holds the same bytes; zeros where the parent held data are sent.
    fn block(&mut self, index: u64, block: Block) -> io::Result<()> {
        self.gap(index)?;
        self.next = index + 1;
        let parent = self.parent_digest(index);
        match block {
            Block::Data(d) if !is_zero(d) => {
                let digest: [u8; 32] = Sha256::digest(d).into();
                self.map.add(index, &digest);
                if parent == Some(digest) {
                    self.skipped(&self.stats.unchanged_blocks_skipped);
                    return Ok(());
                }
                self.send(index, Bytes::copy_from_slice(d), digest)
            }
            _ if parent.is_some() => {
                self.send(index, Bytes::from_static(&ZERO_BLOCK), zero_digest())
            }
            _ if self.encrypted => self.send(index, Bytes::from_static(&ZERO_BLOCK), zero_digest()),
            _ => {
                self.skipped(&self.stats.zero_blocks_skipped);
                Ok(())
            }
        }
    }

    fn send(&mut self, index: u64, data: Bytes, digest: [u8; 32]) -> io::Result<()> {
        self.check_failed()?;
        if index > i32::MAX as u64 {
            return Err(io::Error::other(format!(
                "block index {index} is too large"
            )));
        }
        self.linear.add(&digest);
        let permit = self
            .handle
            .block_on(self.sem.clone().acquire_owned())
            .map_err(|_| io::Error::other("upload stopped"))?;
        let (snap, failure, stats, pace) = (
            self.snapshot.clone(),
            self.failure.clone(),
            self.stats.clone(),
            self.pace.clone(),
        );
        let len = data.len() as u64;
        pace.sending();
        self.stats.blocks_done.fetch_add(1, Ordering::Relaxed);
        // Reap finished tasks so the set stays as small as the blocks in flight.
        while self.tasks.try_join_next().is_some() {}
        self.tasks.spawn_on(
            async move {
                let r = snap.put_block(index, data, &digest, &pace).await;
                match r {
                    Ok(()) => {
                        pace.sent(len);
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

    fn abort(mut self) {
        self.tasks.abort_all();
        let mut tasks = std::mem::take(&mut self.tasks);
        self.handle
            .block_on(async move { while tasks.join_next().await.is_some() {} });
    }
}

impl BlockSink for EbsSink {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let end = check_order(self.chunker.pos(), offset, data.len())?;
        if end > self.size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "write ending at {end} runs past the disk's {} bytes",
                    self.size
                ),
            ));
        }
        let up = &mut self.up;
        self.chunker.write(offset, data, &mut |i, b| up.block(i, b))
    }
}
