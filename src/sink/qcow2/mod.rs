//! qcow2 version 3 (QEMU's "compat 1.1"), sparse: only the disk's non-zero 64 KiB clusters are
//! stored.
//!
//! The disk arrives once, in order, so the file is laid out in that order and never rewritten:
//!
//! ```text
//! cluster 0        the header (written last: it names the tables at the end)
//! clusters 1..     the non-zero data clusters of the first 512 MiB of the disk, then its L2
//!                  table; the next 512 MiB's clusters and L2 table; ...
//! the tail         the L1 table, the refcount blocks, the refcount table
//! ```
//!
//! Each L2 table is written as soon as the stream leaves the 512 MiB it maps, so memory holds one
//! L2 table (64 KiB) and the L1 table (8 bytes per 512 MiB): metadata, never data. Every cluster
//! of the file is used exactly once, so the refcounts are all 1 and the entries carry
//! OFLAG_COPIED.

pub mod header;

use super::blocks::{is_zero, Block, Chunker};
use super::formats::{FileHash, Finished, FormatWriter};
use super::output::TempOutput;
use super::{check_order, BlockSink};
use header::{Header, CLUSTER, L2_ENTRIES};
use std::fs::File;
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

pub struct Qcow2Writer {
    chunker: Chunker,
    tables: Tables,
    len: u64,
    pos: u64,
}

/// Everything but the chunker, so that the chunker's callback can borrow it.
struct Tables {
    out: TempOutput,
    w: BufWriter<File>,
    /// The next free cluster of the file.
    next: u64,
    l1: Vec<u64>,
    /// The L2 table being filled, for the 512 MiB region `region`.
    l2: Vec<u64>,
    region: u64,
    l2_used: bool,
}

impl Qcow2Writer {
    pub fn create(target: &Path, len: u64) -> io::Result<Self> {
        let out = TempOutput::create(target)?;
        let mut f = out.file()?.try_clone()?;
        // Cluster 0 stays a hole until the header is written at the end.
        f.seek(SeekFrom::Start(CLUSTER))?;
        Ok(Qcow2Writer {
            chunker: Chunker::with_block_size(CLUSTER),
            tables: Tables {
                out,
                w: BufWriter::with_capacity(1 << 20, f),
                next: 1,
                l1: vec![0; header::l1_size(len) as usize],
                l2: vec![0; L2_ENTRIES as usize],
                region: 0,
                l2_used: false,
            },
            len,
            pos: 0,
        })
    }
}

impl Tables {
    fn append(&mut self, data: &[u8]) -> io::Result<u64> {
        let at = self.next * CLUSTER;
        self.w.write_all(data)?;
        self.next += (data.len() as u64).div_ceil(CLUSTER);
        Ok(at)
    }

    fn cluster(&mut self, index: u64, block: Block) -> io::Result<()> {
        let region = index / L2_ENTRIES;
        if region != self.region {
            self.flush_l2()?;
            self.region = region;
        }
        if let Block::Data(d) = block {
            if !is_zero(d) {
                let at = self.append(d)?;
                self.l2[(index % L2_ENTRIES) as usize] = header::table_entry(at);
                self.l2_used = true;
            }
        }
        Ok(())
    }

    /// Writes the current region's L2 table, if any of its clusters is allocated.
    fn flush_l2(&mut self) -> io::Result<()> {
        if !self.l2_used {
            return Ok(());
        }
        let table = header::encode_table(&self.l2, 1);
        let at = self.append(&table)?;
        self.l1[self.region as usize] = header::table_entry(at);
        self.l2.fill(0);
        self.l2_used = false;
        Ok(())
    }
}

impl BlockSink for Qcow2Writer {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.pos = check_order(self.pos, offset, data.len())?;
        let t = &mut self.tables;
        self.chunker
            .write(offset, data, &mut |i, b| t.cluster(i, b))
    }
}

impl FormatWriter for Qcow2Writer {
    fn finish(mut self: Box<Self>, len: u64) -> io::Result<Finished> {
        if self.pos > len || len != self.len {
            return Err(io::Error::other(format!(
                "the disk ({len} bytes, {} written) does not match the qcow2 image's size {}",
                self.pos, self.len
            )));
        }
        let t = &mut self.tables;
        self.chunker.finish(len, &mut |i, b| t.cluster(i, b))?;
        let mut t = self.tables;
        t.flush_l2()?;
        let tail = header::plan_tail(t.next, t.l1.len() as u64);
        t.append(&header::encode_table(&t.l1.clone(), tail.l1_clusters))?;
        for i in 0..tail.refblocks {
            t.append(&header::refcount_block(i, tail.total_clusters))?;
        }
        let reftable: Vec<u64> = (0..tail.refblocks)
            .map(|i| tail.refblocks_offset + i * CLUSTER)
            .collect();
        t.append(&header::encode_table(&reftable, tail.reftable_clusters))?;
        debug_assert_eq!(t.next, tail.total_clusters);
        let f = t.w.into_inner().map_err(|e| e.into_error())?;
        let h = Header {
            size: len,
            l1_size: t.l1.len() as u32,
            l1_table_offset: tail.l1_offset,
            refcount_table_offset: tail.reftable_offset,
            refcount_table_clusters: tail.reftable_clusters as u32,
        };
        f.write_all_at(&h.encode(), 0)?;
        Ok(Finished {
            output: t.out,
            size: tail.total_clusters * CLUSTER,
            hash: FileHash::ReadBack,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use header::{entry_offset, get64};

    /// Reads the virtual disk back through the file's own tables.
    fn read_back(file: &[u8]) -> Vec<u8> {
        let h = Header::decode(file).unwrap();
        let mut disk = vec![0u8; h.size as usize];
        for i in 0..h.l1_size as usize {
            let l1e = get64(file, h.l1_table_offset as usize + 8 * i);
            let Some(l2) = entry_offset(l1e) else {
                continue;
            };
            for j in 0..L2_ENTRIES as usize {
                let Some(c) = entry_offset(get64(file, l2 as usize + 8 * j)) else {
                    continue;
                };
                let v = (i * L2_ENTRIES as usize + j) * CLUSTER as usize;
                let n = (CLUSTER as usize).min(disk.len() - v);
                disk[v..v + n].copy_from_slice(&file[c as usize..c as usize + n]);
            }
        }
        disk
    }

    #[test]
    fn round_trips_a_sparse_disk_spanning_two_l2_regions() {
        let dir = tempfile::tempdir().unwrap();
        let len = (600 << 20) + 512; // two L1 entries, a partial last cluster
        let mut w = Box::new(Qcow2Writer::create(&dir.path().join("a.qcow2"), len).unwrap());
        let writes: Vec<(u64, Vec<u8>)> = vec![
            (0, vec![1; 700]),
            (CLUSTER * 3 + 5, vec![0; 9000]), // written zeros: not allocated
            (CLUSTER * 7 - 2, vec![2; 4]),    // spans two clusters
            ((520 << 20) + 3, vec![3; 70_000]),
            (len - 100, vec![4; 100]),
        ];
        let mut disk = vec![0u8; len as usize];
        for (off, d) in &writes {
            w.write_at(*off, d).unwrap();
            disk[*off as usize..*off as usize + d.len()].copy_from_slice(d);
        }
        let fin = w.finish(len).unwrap();
        let file = std::fs::read(fin.output.temp_path()).unwrap();
        assert_eq!(file.len() as u64, fin.size);
        assert!(read_back(&file) == disk, "the tables map the disk back");
        // The header; clusters 0, 6 and 7 and region 0's L2 table; the two clusters at 520 MiB,
        // the last cluster and region 1's L2 table; the L1 table, one refcount block and the
        // refcount table.
        let h = Header::decode(&file).unwrap();
        assert_eq!(h.l1_size, 2);
        assert_eq!(file.len() as u64 / CLUSTER, 1 + 3 + 1 + 3 + 1 + 1 + 1 + 1);
    }

    /// Unallocated space costs nothing: a 16 TiB disk with a byte at each end is a handful of
    /// clusters, and the chunker never hands the writer the 2^28 clusters between them. Only the
    /// L1 table grows with the size (8 bytes per 512 MiB).
    #[test]
    fn a_huge_sparse_disk_stores_only_its_data() {
        let dir = tempfile::tempdir().unwrap();
        let len = 16u64 << 40;
        let mut w = Box::new(Qcow2Writer::create(&dir.path().join("b.qcow2"), len).unwrap());
        w.write_at(0, &[1]).unwrap();
        w.write_at(len - 1, &[2]).unwrap();
        let fin = w.finish(len).unwrap();
        // The header; a data cluster and its L2 table at each end; the L1 table (32,768
        // entries: 4 clusters); one refcount block; the refcount table.
        assert_eq!(fin.size / CLUSTER, 1 + 2 + 2 + 4 + 1 + 1);
    }
}
