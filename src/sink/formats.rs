//! The disk image formats a build writes in its one pass over the disk: raw, qcow2, fixed VHD and
//! streamOptimized VMDK. [`DiskOutputs`] is a [`BlockSink`] that hands every write to each
//! format's writer; each writes its own temporary file, and nothing is renamed into place until
//! every output of the build is whole.

use super::output::TempOutput;
use super::{qcow2, vhd, vmdk, BlockSink, FileSink, PendingDigest};
use crate::sink::DiskDigest;
use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DiskFormat {
    Raw,
    Qcow2,
    Vhd,
    Vmdk,
}

impl DiskFormat {
    pub fn name(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
            DiskFormat::Vhd => "vhd",
            DiskFormat::Vmdk => "vmdk",
        }
    }

    /// The file extension, which is also the name.
    pub fn extension(self) -> &'static str {
        self.name()
    }
}

/// What the formats take from the recipe: every field that is not the disk's bytes is derived
/// from it, so two builds write identical files.
#[derive(Debug, Clone)]
pub struct FormatIdentity {
    /// The recipe's seed (VHD unique id, VMDK content id).
    pub seed: String,
    /// `source_date_epoch` (the VHD footer's time stamp).
    pub source_date_epoch: i64,
}

/// How a finished output's SHA-256 is found once the disk's own hash is done.
pub enum FileHash {
    /// The file is the disk, byte for byte: its hash is the whole-disk SHA-256, computed only
    /// when asked for (it costs the disk's size).
    Disk,
    /// The file is the disk followed by these bytes (a fixed VHD's footer): the whole-disk
    /// SHA-256 continued over them, when it is computed.
    DiskThen(Vec<u8>),
    /// Hashed as it was written.
    Known(String),
    /// Read the file back: its first cluster is written last (qcow2's header names tables that
    /// follow the data), so no in-order hash of it exists while it is written.
    ReadBack,
}

/// A format's file, complete under its temporary name.
pub struct Finished {
    pub output: TempOutput,
    pub size: u64,
    pub hash: FileHash,
}

/// One format's writer: a sink for the disk's bytes that completes its file at the end.
pub trait FormatWriter: BlockSink + Send {
    /// Completes the file for a `len`-byte disk (zeros after the last write).
    fn finish(self: Box<Self>, len: u64) -> io::Result<Finished>;
}

/// A written output: format, file (still temporary), size and SHA-256 (see [`FileHash`]: absent
/// for the raw image and the VHD unless the whole-disk SHA-256 was asked for).
pub struct Written {
    pub format: DiskFormat,
    pub output: TempOutput,
    pub size: u64,
    pub sha256: Option<String>,
}

impl Written {
    pub fn target(&self) -> &Path {
        self.output.target()
    }
}

/// Every requested format's writer, fed the same writes.
pub struct DiskOutputs {
    writers: Vec<(DiskFormat, Box<dyn FormatWriter>)>,
}

impl DiskOutputs {
    /// Opens a writer per `(format, target)` for a disk of `len` bytes.
    pub fn create(
        targets: &[(DiskFormat, PathBuf)],
        len: u64,
        id: &FormatIdentity,
    ) -> io::Result<Self> {
        let mut writers: Vec<(DiskFormat, Box<dyn FormatWriter>)> = Vec::new();
        for (format, target) in targets {
            let w: Box<dyn FormatWriter> = match format {
                DiskFormat::Raw => Box::new(RawWriter(FileSink::create(target, len)?)),
                DiskFormat::Qcow2 => Box::new(qcow2::Qcow2Writer::create(target, len)?),
                DiskFormat::Vhd => Box::new(vhd::VhdWriter::create(target, len, id)?),
                DiskFormat::Vmdk => Box::new(vmdk::VmdkWriter::create(target, len, id)?),
            };
            writers.push((*format, w));
        }
        Ok(DiskOutputs { writers })
    }

    pub fn is_empty(&self) -> bool {
        self.writers.is_empty()
    }

    /// Completes every file (tables, footers) once the last byte is written.
    pub fn finish(self, len: u64) -> io::Result<Vec<(DiskFormat, Finished)>> {
        self.writers
            .into_iter()
            .map(|(f, w)| Ok((f, w.finish(len)?)))
            .collect()
    }
}

impl BlockSink for DiskOutputs {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        for (format, w) in &mut self.writers {
            w.write_at(offset, data).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("writing the {} image: {e}", format.name()),
                )
            })?;
        }
        Ok(())
    }
}

/// Waits for the disk's digest and gives each finished output its SHA-256 (the read-backs run
/// side by side).
pub fn hash_outputs(
    finished: Vec<(DiskFormat, Finished)>,
    disk: PendingDigest,
) -> io::Result<(DiskDigest, Vec<Written>)> {
    enum Pending {
        Disk,
        DiskThen,
        Known(String),
        Reading(std::thread::JoinHandle<io::Result<String>>),
    }
    let mut suffix = Vec::new();
    let mut pending = Vec::new();
    for (format, f) in finished {
        let p = match f.hash {
            FileHash::Disk => Pending::Disk,
            FileHash::DiskThen(s) => {
                suffix = s;
                Pending::DiskThen
            }
            FileHash::Known(s) => Pending::Known(s),
            FileHash::ReadBack => {
                let path = f.output.temp_path().to_path_buf();
                Pending::Reading(std::thread::spawn(move || crate::util::sha256_file(&path)))
            }
        };
        pending.push((format, f.output, f.size, p));
    }
    let (digest, extended) = disk.wait_extended(&suffix)?;
    let mut out = Vec::new();
    for (format, output, size, p) in pending {
        let sha256 = match p {
            Pending::Disk => digest.sha256.clone(),
            Pending::DiskThen => extended.clone(),
            Pending::Known(s) => Some(s),
            Pending::Reading(t) => Some(
                t.join()
                    .map_err(|_| io::Error::other("hashing an output panicked"))??,
            ),
        };
        out.push(Written {
            format,
            output,
            size,
            sha256,
        });
    }
    Ok((digest, out))
}

/// The raw image: the disk itself, as a sparse file.
struct RawWriter(FileSink);

impl BlockSink for RawWriter {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.0.write_at(offset, data)
    }
}

impl FormatWriter for RawWriter {
    fn finish(self: Box<Self>, len: u64) -> io::Result<Finished> {
        Ok(Finished {
            output: self.0.into_output()?,
            size: len,
            hash: FileHash::Disk,
        })
    }
}
