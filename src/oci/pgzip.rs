//! gzip on every core, as pigz does it: the input is cut into blocks of [`BLOCK`] bytes, each
//! deflated on a worker thread with the 32 KiB before it as its dictionary (so matches still
//! reach back across the cut), each but the last ended by a sync flush (an empty stored block
//! that leaves the stream on a byte boundary, RFC 1951 §3.2.4), and the pieces written in order
//! between one gzip header and one trailer (RFC 1952 §2.3). The result is one gzip member and
//! one deflate stream, which any gunzip reads.
//!
//! The bytes depend only on the input, the level and [`BLOCK`], never on the number of threads
//! or their timing: two builds give the same layer digest on any machine. Memory is bounded by
//! the blocks in flight (two per thread).

use flate2::{Compress, Compression, Crc, FlushCompress, Status};
use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// The uncompressed bytes per block. Each cut costs a sync flush (5 bytes) and a dictionary
/// primed from scratch; at 1 MiB both are lost in the noise (pigz uses 128 KiB).
pub const BLOCK: usize = 1 << 20;
/// Deflate's window: what a block may refer back to.
const DICT: usize = 32 << 10;

/// A block to deflate: the dictionary, the data, whether it ends the stream, and where the
/// compressed bytes go.
struct Job {
    dict: Vec<u8>,
    data: Vec<u8>,
    last: bool,
    done: SyncSender<io::Result<Vec<u8>>>,
}

pub struct ParallelGzip<W: Write> {
    out: W,
    buf: Vec<u8>,
    dict: Vec<u8>,
    crc: Crc,
    pending: VecDeque<Receiver<io::Result<Vec<u8>>>>,
    jobs: Option<SyncSender<Job>>,
    workers: Vec<JoinHandle<()>>,
    in_flight: usize,
}

impl<W: Write> ParallelGzip<W> {
    /// A gzip stream into `out` at `level`, on a thread per core.
    pub fn new(out: W, level: Compression) -> io::Result<Self> {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self::with_threads(out, level, threads)
    }

    pub fn with_threads(mut out: W, level: Compression, threads: usize) -> io::Result<Self> {
        let threads = threads.max(1);
        // RFC 1952 §2.3: no name, no time stamp (reproducible), XFL 0, OS 255 ("unknown"): the
        // header flate2's GzEncoder writes for levels 2 to 8.
        out.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255])?;
        let (tx, rx) = sync_channel::<Job>(threads);
        let rx = Arc::new(Mutex::new(rx));
        let workers = (0..threads)
            .map(|_| {
                let rx = rx.clone();
                std::thread::spawn(move || deflate_jobs(&rx, level))
            })
            .collect();
        Ok(ParallelGzip {
            out,
            buf: Vec::with_capacity(BLOCK),
            dict: Vec::new(),
            crc: Crc::new(),
            pending: VecDeque::new(),
            jobs: Some(tx),
            workers,
            in_flight: 2 * threads,
        })
    }

    fn submit(&mut self, last: bool) -> io::Result<()> {
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(BLOCK));
        let dict = std::mem::take(&mut self.dict);
        self.dict = data[data.len().saturating_sub(DICT)..].to_vec();
        let (done, rx) = sync_channel(1);
        let job = Job {
            dict,
            data,
            last,
            done,
        };
        let sent = self.jobs.as_ref().map(|j| j.send(job));
        if !matches!(sent, Some(Ok(()))) {
            return Err(io::Error::other("the gzip workers stopped"));
        }
        self.pending.push_back(rx);
        // Write what is done, in order; wait only when too many blocks are in flight.
        while let Some(rx) = self.pending.front() {
            let piece = match self.pending.len() > self.in_flight {
                true => rx.recv().ok(),
                false => match rx.try_recv() {
                    Ok(p) => Some(p),
                    Err(std::sync::mpsc::TryRecvError::Empty) => break,
                    Err(_) => None,
                },
            };
            self.pending.pop_front();
            let piece = piece.ok_or_else(|| io::Error::other("a gzip worker stopped"))??;
            self.out.write_all(&piece)?;
        }
        Ok(())
    }

    /// Ends the stream (the last block, the CRC-32 and the length); returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.submit(true)?;
        self.jobs = None;
        while let Some(rx) = self.pending.pop_front() {
            let piece = rx
                .recv()
                .map_err(|_| io::Error::other("a gzip worker stopped"))??;
            self.out.write_all(&piece)?;
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        let mut trailer = [0u8; 8];
        trailer[..4].copy_from_slice(&self.crc.sum().to_le_bytes());
        trailer[4..].copy_from_slice(&self.crc.amount().to_le_bytes());
        self.out.write_all(&trailer)?;
        self.out.flush()?;
        let ParallelGzip { out, .. } = self;
        Ok(out)
    }
}

impl<W: Write> Write for ParallelGzip<W> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let n = b.len().min(BLOCK - self.buf.len());
        self.buf.extend_from_slice(&b[..n]);
        self.crc.update(&b[..n]);
        if self.buf.len() == BLOCK {
            self.submit(false)?;
        }
        Ok(n)
    }

    /// Blocks are cut only at [`BLOCK`] boundaries (a flush must not change the bytes).
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn deflate_jobs(rx: &Mutex<Receiver<Job>>, level: Compression) {
    loop {
        let job = match rx.lock() {
            Ok(r) => r.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        let r = deflate_block(&job.dict, &job.data, job.last, level);
        let _ = job.done.send(r);
    }
}

/// One block as raw deflate, primed with `dict`; ends on a byte boundary (sync flush), or ends
/// the stream when `last`.
fn deflate_block(dict: &[u8], data: &[u8], last: bool, level: Compression) -> io::Result<Vec<u8>> {
    let mut c = Compress::new(level, false);
    if !dict.is_empty() {
        c.set_dictionary(dict).map_err(io::Error::other)?;
    }
    let flush = match last {
        true => FlushCompress::Finish,
        false => FlushCompress::Sync,
    };
    let mut out = Vec::with_capacity(data.len() / 2 + 4096);
    loop {
        if out.capacity() - out.len() < 4096 {
            out.reserve(out.capacity().max(64 << 10));
        }
        let consumed = c.total_in() as usize;
        let status = c
            .compress_vec(&data[consumed..], &mut out, flush)
            .map_err(io::Error::other)?;
        let all_in = c.total_in() as usize == data.len();
        match (last, status) {
            (true, Status::StreamEnd) => return Ok(out),
            // zlib's rule for a flush: it is complete when output space was left over.
            (false, _) if all_in && out.len() < out.capacity() => return Ok(out),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn input(n: usize) -> Vec<u8> {
        // Compressible but not trivial: words from a small vocabulary, and a noisy stretch.
        let words = ["kiln ", "layer ", "tar ", "gzip ", "usr/lib/", "\n", "etc/"];
        let mut v = Vec::with_capacity(n);
        let mut x = 12345u32;
        while v.len() < n {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            match v.len() % 700_000 < 100_000 {
                true => v.push((x >> 16) as u8),
                false => v.extend_from_slice(words[(x >> 16) as usize % words.len()].as_bytes()),
            }
        }
        v.truncate(n);
        v
    }

    fn gz(data: &[u8], threads: usize, pieces: usize) -> Vec<u8> {
        let mut g =
            ParallelGzip::with_threads(Vec::new(), Compression::default(), threads).unwrap();
        for c in data.chunks(pieces.max(1)) {
            g.write_all(c).unwrap();
        }
        g.finish().unwrap()
    }

    #[test]
    fn one_member_any_gunzip_reads_and_the_same_bytes_on_any_thread_count() {
        for n in [0, 1, BLOCK - 1, BLOCK, 3 * BLOCK + 12_345] {
            let data = input(n);
            let a = gz(&data, 1, 4096);
            let b = gz(&data, 3, 777_777);
            assert!(a == b, "{n} bytes: the thread count changed the output");
            // flate2's single-member decoder: one member holds all of it.
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&a[..])
                .read_to_end(&mut back)
                .unwrap();
            assert!(back == data, "{n} bytes round trip");
            // The system's gzip, which checks the CRC and length too.
            let mut child = std::process::Command::new("gzip")
                .args(["-dc"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let mut stdin = child.stdin.take().unwrap();
            let a2 = a.clone();
            let feeder = std::thread::spawn(move || stdin.write_all(&a2));
            let out = child.wait_with_output().unwrap();
            feeder.join().unwrap().unwrap();
            assert!(out.status.success(), "gzip -dc: {n} bytes");
            assert!(
                out.stdout == data,
                "gzip -dc gives the input back ({n} bytes)"
            );
        }
        // Compresses about as well as one serial stream (the dictionary carries across cuts).
        let data = input(4 * BLOCK);
        let par = gz(&data, 2, 65536).len();
        let mut serial = flate2::write::GzEncoder::new(Vec::new(), Compression::default());
        serial.write_all(&data).unwrap();
        let serial = serial.finish().unwrap().len();
        assert!(par <= serial + serial / 100 + 64, "{par} vs {serial}");
    }
}
