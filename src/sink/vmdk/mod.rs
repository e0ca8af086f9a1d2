//! streamOptimized VMDK, the format of vSphere's OVF exports and of EC2 ImportImage's VMDKs:
//! a header whose grain directory is "at the end", then each non-zero 64 KiB grain deflated
//! behind a grain marker, each grain table behind its marker as soon as the stream leaves the
//! 32 MiB it maps, then the grain directory, a footer (the header again, now naming the
//! directory) and the end-of-stream marker. The file is written front to back, once.
//!
//! Deflating is most of the work, and grains are independent: a pool of threads compresses them
//! while one thread writes them in order (and hashes what it writes). Memory is bounded by the
//! grains in flight, one grain table (2 KiB) and the directory (4 bytes per 32 MiB).

pub mod header;

use super::blocks::{is_zero, Block, Chunker};
use super::formats::{FileHash, Finished, FormatIdentity, FormatWriter};
use super::output::TempOutput;
use super::{check_order, BlockSink};
use header::{MarkerType, GRAIN, GRAIN_SECTORS, GTES_PER_GT, SECTOR};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Level 2, chosen by measurement (`examples/deflate_levels.rs`, README "Benchmarks"): on a
/// Debian server image's 458 MB of grains, level 6 (zlib's default, what qemu-img writes) gave
/// 162.9 MB in 6.2 s of CPU, level 2 171.4 MB (+5%) in 3.4 s, level 1 204.9 MB (+26%: zlib-rs's
/// level 1 is the static-Huffman "quick" strategy) in 1.7 s. Level 2 is zlib-rs's classic fast
/// deflate, what other zlibs call level 1.
const LEVEL: u32 = 2;

/// A grain to compress, and where to send the result.
type Job = (Vec<u8>, SyncSender<io::Result<Vec<u8>>>);

enum Msg {
    /// Grain `index`'s compressed bytes will arrive on the receiver.
    Grain(u64, Receiver<io::Result<Vec<u8>>>),
    End,
}

pub struct VmdkWriter {
    chunker: Chunker,
    jobs: Option<SyncSender<Job>>,
    order: Option<SyncSender<Msg>>,
    workers: Vec<JoinHandle<()>>,
    writer: Option<JoinHandle<io::Result<(TempOutput, u64, String)>>>,
    len: u64,
    pos: u64,
}

impl VmdkWriter {
    pub fn create(target: &Path, len: u64, id: &FormatIdentity) -> io::Result<Self> {
        if len % SECTOR != 0 || len / SECTOR > u64::from(u32::MAX) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a VMDK holds whole sectors up to 2 TiB; the disk is {len} bytes"),
            ));
        }
        let out = TempOutput::create(target)?;
        let file = out.file()?.try_clone()?;
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let cid = {
            let u = crate::util::derive_uuid(&id.seed, "vmdk-cid");
            u32::from_le_bytes([u[0], u[1], u[2], u[3]])
        };
        let capacity = len / SECTOR;
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let (jobs_tx, jobs_rx) = sync_channel::<Job>(2 * threads);
        let jobs_rx = Arc::new(Mutex::new(jobs_rx));
        let workers = (0..threads)
            .map(|_| {
                let rx = jobs_rx.clone();
                std::thread::spawn(move || compress_jobs(&rx))
            })
            .collect();
        let (order_tx, order_rx) = sync_channel::<Msg>(4 * threads);
        let mut stream = Stream {
            w: BufWriter::with_capacity(1 << 20, file),
            sha: Sha256::new(),
            sector: 0,
            capacity,
            gt: vec![0; GTES_PER_GT as usize],
            gt_index: 0,
            gt_used: false,
            gd: vec![0; header::gd_entries(capacity) as usize],
        };
        let writer = std::thread::spawn(move || {
            stream.start(cid, &name)?;
            for msg in order_rx {
                match msg {
                    Msg::Grain(index, rx) => {
                        let data = rx
                            .recv()
                            .map_err(|_| io::Error::other("a VMDK compressor stopped"))??;
                        stream.grain(index, &data)?;
                    }
                    Msg::End => {
                        let (size, sha) = stream.end()?;
                        return Ok((out, size, sha));
                    }
                }
            }
            Err(io::Error::other("the VMDK stream ended early"))
        });
        Ok(VmdkWriter {
            chunker: Chunker::with_block_size(GRAIN),
            jobs: Some(jobs_tx),
            order: Some(order_tx),
            workers,
            writer: Some(writer),
            len,
            pos: 0,
        })
    }

    /// The writer thread's error, when a send finds it gone.
    fn stopped(&mut self) -> io::Error {
        match self.writer.take().map(JoinHandle::join) {
            Some(Ok(Err(e))) => e,
            _ => io::Error::other("the VMDK writer stopped"),
        }
    }
}

fn compress_jobs(rx: &Mutex<Receiver<Job>>) {
    // One deflate state per thread, reset for each grain: a fresh one per grain would allocate
    // and clear its window and hash tables (hundreds of KiB) for every 64 KiB.
    let mut z = flate2::Compress::new(flate2::Compression::new(LEVEL), true);
    loop {
        let job = match rx.lock() {
            Ok(r) => r.recv(),
            Err(_) => return,
        };
        let Ok((data, tx)) = job else { return };
        z.reset();
        let _ = tx.send(deflate(&mut z, &data));
    }
}

/// One grain in zlib format (RFC 1950), as a VMDK grain holds it.
fn deflate(z: &mut flate2::Compress, data: &[u8]) -> io::Result<Vec<u8>> {
    // zlib's compressBound for a grain is under GRAIN + 64: one call is enough.
    let mut out = Vec::with_capacity(data.len() + 1024);
    loop {
        let done = z.total_in() as usize;
        let status = z
            .compress_vec(&data[done..], &mut out, flate2::FlushCompress::Finish)
            .map_err(io::Error::other)?;
        if status == flate2::Status::StreamEnd {
            return Ok(out);
        }
        out.reserve(64 << 10);
    }
}

/// Submits each non-zero grain for compression, in order.
fn submit(
    jobs: &SyncSender<Job>,
    order: &SyncSender<Msg>,
    index: u64,
    block: Block,
) -> Result<(), ()> {
    let Block::Data(d) = block else { return Ok(()) };
    if is_zero(d) {
        return Ok(());
    }
    let (tx, rx) = sync_channel(1);
    order.send(Msg::Grain(index, rx)).map_err(drop)?;
    jobs.send((d.to_vec(), tx)).map_err(drop)
}

impl BlockSink for VmdkWriter {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.pos = check_order(self.pos, offset, data.len())?;
        let (Some(jobs), Some(order)) = (&self.jobs, &self.order) else {
            return Err(io::Error::other("the VMDK writer is finished"));
        };
        let r = self.chunker.write(offset, data, &mut |i, b| {
            submit(jobs, order, i, b).map_err(|()| io::Error::other("stopped"))
        });
        match r {
            Ok(()) => Ok(()),
            Err(_) => Err(self.stopped()),
        }
    }
}

impl FormatWriter for VmdkWriter {
    fn finish(mut self: Box<Self>, len: u64) -> io::Result<Finished> {
        if self.pos > len || len != self.len {
            return Err(io::Error::other("the disk's size changed under the VMDK"));
        }
        let (Some(jobs), Some(order)) = (self.jobs.take(), self.order.take()) else {
            return Err(io::Error::other("the VMDK writer is finished"));
        };
        let r = self.chunker.finish(len, &mut |i, b| {
            submit(&jobs, &order, i, b).map_err(|()| io::Error::other("the VMDK writer stopped"))
        });
        if r.is_ok() {
            let _ = order.send(Msg::End);
        }
        drop(jobs);
        drop(order);
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        let (output, size, sha) = match self.writer.take().map(JoinHandle::join) {
            Some(Ok(r)) => r?,
            _ => return Err(io::Error::other("the VMDK writer panicked")),
        };
        r?;
        Ok(Finished {
            output,
            size,
            hash: FileHash::Known(sha),
        })
    }
}

/// The writer thread's state: the file, its hash, and the tables being built.
struct Stream {
    w: BufWriter<File>,
    sha: Sha256,
    /// Sectors written so far.
    sector: u64,
    capacity: u64,
    /// The grain table being filled, for grains `gt_index * 512 ..`.
    gt: Vec<u32>,
    gt_index: u64,
    gt_used: bool,
    gd: Vec<u32>,
}

impl Stream {
    fn put(&mut self, b: &[u8]) -> io::Result<u64> {
        debug_assert_eq!(b.len() as u64 % SECTOR, 0);
        let at = self.sector;
        self.w.write_all(b)?;
        self.sha.update(b);
        self.sector += b.len() as u64 / SECTOR;
        if self.sector > u64::from(u32::MAX) {
            return Err(io::Error::other(
                "the VMDK outgrew 2 TiB: grain table entries are 32-bit sector numbers",
            ));
        }
        Ok(at)
    }

    /// The header, the descriptor, zeros up to the first grain.
    fn start(&mut self, cid: u32, name: &str) -> io::Result<()> {
        let h = header::Header {
            capacity: self.capacity,
            gd_offset: header::GD_AT_END,
        };
        self.put(&h.encode())?;
        let mut d = header::descriptor(cid, self.capacity, name).into_bytes();
        d.resize(((header::OVERHEAD_SECTORS - 1) * SECTOR) as usize, 0);
        self.put(&d)?;
        Ok(())
    }

    fn grain(&mut self, index: u64, compressed: &[u8]) -> io::Result<()> {
        let gt_index = index / GTES_PER_GT;
        if gt_index != self.gt_index {
            self.flush_gt()?;
            self.gt_index = gt_index;
        }
        let at = self.put(&header::grain(index * GRAIN_SECTORS, compressed))?;
        self.gt[(index % GTES_PER_GT) as usize] = at as u32;
        self.gt_used = true;
        Ok(())
    }

    /// Writes the current grain table, if it maps any grain; an absent one reads as zeros.
    fn flush_gt(&mut self) -> io::Result<()> {
        if !self.gt_used {
            return Ok(());
        }
        self.put(&header::marker(MarkerType::GrainTable, header::GT_SECTORS))?;
        let table = header::table(&self.gt);
        let at = self.put(&table)?;
        self.gd[self.gt_index as usize] = at as u32;
        self.gt.fill(0);
        self.gt_used = false;
        Ok(())
    }

    /// The last grain table, the directory, the footer and the end-of-stream marker; returns the
    /// file's size and SHA-256.
    fn end(mut self) -> io::Result<(u64, String)> {
        self.flush_gt()?;
        let gd = header::table(&self.gd);
        self.put(&header::marker(
            MarkerType::GrainDirectory,
            gd.len() as u64 / SECTOR,
        ))?;
        let gd_offset = self.put(&gd)?;
        self.put(&header::marker(MarkerType::Footer, 1))?;
        let footer = header::Header {
            capacity: self.capacity,
            gd_offset,
        };
        self.put(&footer.encode())?;
        self.put(&header::marker(MarkerType::EndOfStream, 0))?;
        self.w.flush()?;
        Ok((self.sector * SECTOR, crate::util::hex(&self.sha.finalize())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use header::{le64, GT_SECTORS};
    use std::io::Read;

    /// Reads the virtual disk back through the footer, the directory and the tables.
    fn read_back(file: &[u8]) -> Vec<u8> {
        let n = file.len();
        let footer = header::Header::decode(&file[n - 1024..n - 512]).unwrap();
        let mut disk = vec![0u8; (footer.capacity * SECTOR) as usize];
        let gd_at = (footer.gd_offset * SECTOR) as usize;
        for g in 0..header::gd_entries(footer.capacity) as usize {
            let gt = u32::from_le_bytes(file[gd_at + 4 * g..gd_at + 4 * g + 4].try_into().unwrap());
            if gt == 0 {
                continue;
            }
            assert_eq!(le64(&file[(gt as usize - 1) * 512..], 0), GT_SECTORS);
            for e in 0..GTES_PER_GT as usize {
                let at = gt as usize * 512 + 4 * e;
                let sec = u32::from_le_bytes(file[at..at + 4].try_into().unwrap()) as usize;
                if sec == 0 {
                    continue;
                }
                let m = &file[sec * 512..];
                let lba = le64(m, 0) as usize;
                let size = u32::from_le_bytes(m[8..12].try_into().unwrap()) as usize;
                assert_eq!(lba, (g * GTES_PER_GT as usize + e) * GRAIN_SECTORS as usize);
                let mut plain = Vec::new();
                flate2::read::ZlibDecoder::new(&m[12..12 + size])
                    .read_to_end(&mut plain)
                    .unwrap();
                let v = lba * 512;
                let k = plain.len().min(disk.len() - v);
                disk[v..v + k].copy_from_slice(&plain[..k]);
            }
        }
        disk
    }

    #[test]
    fn round_trips_through_its_tables() {
        let dir = tempfile::tempdir().unwrap();
        let id = FormatIdentity {
            seed: "s".into(),
            source_date_epoch: 0,
        };
        let len = (70 << 20) + 1024; // three grain tables, a partial last grain
        let mut w = Box::new(VmdkWriter::create(&dir.path().join("a.vmdk"), len, &id).unwrap());
        let mut disk = vec![0u8; len as usize];
        let writes: Vec<(u64, Vec<u8>)> = vec![
            (0, (0..200_000u32).map(|i| (i % 251) as u8).collect()),
            (GRAIN * 20, vec![0; GRAIN as usize]),
            ((33 << 20) + 7, vec![5; 10]),
            (len - 3, vec![6; 3]),
        ];
        for (off, d) in &writes {
            w.write_at(*off, d).unwrap();
            disk[*off as usize..*off as usize + d.len()].copy_from_slice(d);
        }
        let fin = w.finish(len).unwrap();
        let file = std::fs::read(fin.output.temp_path()).unwrap();
        assert_eq!(file.len() as u64, fin.size);
        let FileHash::Known(sha) = fin.hash else {
            panic!("hashed as written")
        };
        assert_eq!(sha, crate::util::hex(&Sha256::digest(&file)));
        assert!(read_back(&file) == disk, "the tables map the disk back");
        let first = header::Header::decode(&file).unwrap();
        assert_eq!(first.gd_offset, header::GD_AT_END);
        assert_eq!(&file[file.len() - 512..], &[0u8; 512][..], "end of stream");
    }
}
