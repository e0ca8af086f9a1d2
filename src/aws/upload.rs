//! One upload from start to `completed`, with the snapshot deleted on failure or interruption.
//!
//! ```text
//! StartSnapshot → register "delete snapshot" for Ctrl-C → write blocks → CompleteSnapshot
//!               → wait for completed → unregister   (any failure: DeleteSnapshot, say so)
//! ```

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
    #[error(transparent)]
    Start(SnapshotError),
    #[error("{cause}; deleted snapshot {id} in {region}")]
    Deleted {
        id: String,
        region: String,
        cause: String,
    },
    #[error("{cause}; snapshot {id} in {region} could not be deleted ({delete_error}); delete it by hand")]
    NotDeleted {
        id: String,
        region: String,
        cause: String,
        delete_error: String,
    },
}

/// Starts a snapshot for `spec`, lets `write` stream the disk into an [`EbsSink`], then
/// completes it. `on_start` sees the sink's counters (to draw progress) once the snapshot exists.
/// On any failure the snapshot is deleted, and the error says so. Call outside the runtime.
pub fn upload_with<W>(
    handle: &Handle,
    clients: &Clients,
    retrier: &Retrier,
    spec: &SnapshotSpec,
    opts: &UploadOptions,
    on_start: &dyn Fn(&str, Arc<UploadStats>),
    write: W,
) -> Result<UploadReport, UploadError>
where
    W: FnOnce(&mut EbsSink) -> Result<(), String>,
{
    let gib = snapshot::volume_size_gib(spec.size).map_err(UploadError::Start)?;
    let snap = handle
        .block_on(snapshot::start(clients, retrier, spec))
        .map_err(UploadError::Start)?;
    let id = snap.id.clone();
    let action = register_delete(handle, clients, retrier, &id);
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
    match r {
        Ok(report) => {
            crate::cleanup::unregister_action(action);
            Ok(report)
        }
        Err(cause) => {
            crate::cleanup::unregister_action(action);
            tracing::warn!("upload failed: {cause}; deleting snapshot {id}");
            match handle.block_on(snapshot::delete(clients, retrier, &id)) {
                Ok(()) => Err(UploadError::Deleted {
                    id,
                    region: clients.region.clone(),
                    cause,
                }),
                Err(e) => Err(UploadError::NotDeleted {
                    id,
                    region: clients.region.clone(),
                    cause,
                    delete_error: e.to_string(),
                }),
            }
        }
    }
}

/// Registers "delete snapshot `id`" to run if the process is interrupted.
pub fn register_delete(
    handle: &Handle,
    clients: &Clients,
    retrier: &Retrier,
    id: &str,
) -> crate::cleanup::ActionId {
    let (handle, clients, retrier, id) = (
        handle.clone(),
        clients.clone(),
        retrier.clone(),
        id.to_string(),
    );
    let what = format!("delete snapshot {id} in {}", clients.region);
    crate::cleanup::register_action(what, move || {
        // The timer must be made inside the runtime: this runs on the signal thread.
        let r = handle.block_on(async {
            let del = snapshot::delete(&clients, &retrier, &id);
            tokio::time::timeout(Duration::from_secs(20), del).await
        });
        match r {
            Ok(Ok(())) => Ok(format!("deleted snapshot {id} in {}", clients.region)),
            Ok(Err(e)) => Err(format!("could not delete snapshot {id}: {e}")),
            Err(_) => Err(format!("could not delete snapshot {id}: timed out")),
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
