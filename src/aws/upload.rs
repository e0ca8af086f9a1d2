//! One upload from start to `completed`, with the snapshot deleted on failure or interruption.
//!
//! ```text
//! guard → StartSnapshot (a new pending snapshot, or nothing is this run's) → write blocks
//!       → CompleteSnapshot → wait for completed       (any failure: the guard undoes, and says so)
//! ```
//!
//! The caller owns the [`Guard`]: `kiln upload` finishes it once the snapshot is completed;
//! `kiln publish` carries it on into the registration, so that Ctrl-C has a cleanup at every
//! moment from StartSnapshot to an available image.

use super::guard::Guard;
use super::retry::Retrier;
use super::snapshot::{self, SnapshotError, SnapshotSpec, BLOCK_SIZE};
use super::Clients;
use crate::sink::ebs::{EbsSink, UploadReport, UploadStats};
use crate::sink::BlockSink;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::Handle;

/// How an upload runs.
#[derive(Debug, Clone)]
pub struct UploadOptions {
    pub workers: usize,
    /// How long to wait for the snapshot to become `completed`.
    pub wait_timeout: Duration,
}

impl Default for UploadOptions {
    fn default() -> Self {
        UploadOptions {
            workers: crate::sink::ebs::DEFAULT_WORKERS,
            wait_timeout: Duration::from_secs(3600),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// StartSnapshot failed, or answered with a snapshot this run did not make.
    #[error("{cause}{undone}")]
    Start {
        cause: SnapshotError,
        undone: String,
    },
    #[error("{cause}; {undone}")]
    Undone { cause: String, undone: String },
    #[error("{cause}; {left}")]
    NotUndone { cause: String, left: String },
}

/// Starts a snapshot for `spec`, lets `write` stream the disk into an [`EbsSink`], then
/// completes it, recording every step in `guard`. `on_start` sees the sink's counters (to draw
/// progress) once the snapshot exists. On any failure what this run made is removed, and the
/// error says so. Call outside the runtime.
#[allow(clippy::too_many_arguments)]
pub fn upload_with<W>(
    handle: &Handle,
    clients: &Clients,
    retrier: &Retrier,
    spec: &SnapshotSpec,
    opts: &UploadOptions,
    guard: &Guard,
    on_start: &dyn Fn(&str, Arc<UploadStats>),
    write: W,
) -> Result<UploadReport, UploadError>
where
    W: FnOnce(&mut EbsSink) -> Result<(), String>,
{
    let gib = snapshot::volume_size_gib(spec.size).map_err(|cause| UploadError::Start {
        cause,
        undone: String::new(),
    })?;
    let (snap, _) = match handle.block_on(snapshot::start(clients, retrier, spec, guard)) {
        Ok(s) => s,
        Err(cause) => {
            // A start whose answer was lost may still have made a snapshot.
            let undone = match handle.block_on(guard.undo()) {
                Ok(None) => String::new(),
                Ok(Some(d)) => format!("; {d}"),
                Err(left) => format!("; {left}"),
            };
            return Err(UploadError::Start { cause, undone });
        }
    };
    let id = snap.id.clone();
    let mut sink = EbsSink::new(
        handle.clone(),
        snap,
        spec.size,
        gib,
        spec.encrypted,
        opts.workers,
    );
    on_start(&id, sink.stats());
    let r = match write(&mut sink) {
        Ok(()) => sink.finish(opts.wait_timeout).map_err(|e| e.to_string()),
        Err(e) => {
            // No PutSnapshotBlock may race the deletion below.
            sink.abort();
            Err(e)
        }
    };
    r.map_err(|cause| {
        tracing::warn!("upload failed: {cause}; deleting snapshot {id}");
        match handle.block_on(guard.undo()) {
            Ok(undone) => UploadError::Undone {
                cause,
                undone: undone.unwrap_or_else(|| "nothing was left to remove".into()),
            },
            Err(left) => UploadError::NotUndone { cause, left },
        }
    })
}

/// Streams an image file into the sink. Only the file's data regions are read (SEEK_DATA /
/// SEEK_HOLE): holes are zeros, which the sink skips anyway.
pub fn write_file(path: &Path, sink: &mut dyn BlockSink) -> Result<(), String> {
    use std::os::unix::fs::FileExt;
    let err = |e: std::io::Error| format!("{}: {e}", path.display());
    let f = std::fs::File::open(path).map_err(err)?;
    let size = f.metadata().map_err(err)?.len();
    let mut buf = vec![0u8; BLOCK_SIZE as usize];
    for r in crate::tree::seek_data_ranges(&f, size).map_err(err)? {
        let mut at = r.start;
        while at < r.end {
            let n = (r.end - at).min(buf.len() as u64) as usize;
            f.read_exact_at(&mut buf[..n], at).map_err(err)?;
            sink.write_at(at, &buf[..n]).map_err(err)?;
            at += n as u64;
        }
    }
    Ok(())
}
