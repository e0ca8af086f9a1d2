//! Reads a snapshot back and compares it with an image file, block by block.

use super::retry::Retrier;
use super::snapshot::{self, SnapshotError, BLOCK_SIZE};
use super::Clients;
use futures::StreamExt;
use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// The first difference between a snapshot and an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// Block index (512 KiB blocks).
    pub block: u64,
    pub why: String,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("{path}: {source}")]
    Image { path: String, source: io::Error },
}

/// Compares snapshot `id` with the image at `image`: `Ok(None)` when they are equal byte for
/// byte (the snapshot's blocks past the image's end must be zeros), else the first difference.
pub async fn verify(
    clients: &Clients,
    retrier: &Retrier,
    id: &str,
    image: &Path,
    concurrency: usize,
) -> Result<Option<Difference>, VerifyError> {
    let img_err = |source| VerifyError::Image {
        path: image.display().to_string(),
        source,
    };
    let file = File::open(image).map_err(img_err)?;
    let size = file.metadata().map_err(img_err)?.len();
    let image_blocks = size.div_ceil(BLOCK_SIZE);
    if let Some(gib) = snapshot::volume_size(clients, retrier, id).await? {
        let want = snapshot::volume_size_gib(size)?;
        if i64::from(gib) < want {
            return Ok(Some(Difference {
                block: (gib as u64) << 11,
                why: format!("the snapshot holds {gib} GiB, the image needs {want} GiB"),
            }));
        }
    }
    let listed: BTreeMap<u64, String> = snapshot::list_blocks(clients, retrier, id)
        .await?
        .into_iter()
        .collect();
    // Every block of the image, plus any written block past its end, in ascending order.
    let indices: Vec<u64> = (0..image_blocks)
        .chain(listed.range(image_blocks..).map(|(i, _)| *i))
        .collect();
    let mut reads = futures::stream::iter(indices.into_iter().map(|index| {
        let token = listed.get(&index).cloned();
        async move {
            let got = match token {
                Some(t) => Some(snapshot::get_block(clients, retrier, id, index, &t).await?),
                None => None,
            };
            Ok::<_, SnapshotError>((index, got))
        }
    }))
    .buffered(concurrency.max(1));
    let mut want = vec![0u8; BLOCK_SIZE as usize];
    while let Some(r) = reads.next().await {
        let (index, got) = r?;
        want.fill(0);
        let off = index * BLOCK_SIZE;
        if off < size {
            let n = (size - off).min(BLOCK_SIZE) as usize;
            file.read_exact_at(&mut want[..n], off).map_err(img_err)?;
        }
        let differs = match &got {
            None => want.iter().position(|&b| b != 0).map(|p| {
                format!("the snapshot has no data there (zeros), the image has a non-zero byte at offset {}", off + p as u64)
            }),
            Some(g) if g.len() != want.len() => Some(format!(
                "the snapshot's block is {} bytes, not {}",
                g.len(),
                want.len()
            )),
            Some(g) => g
                .iter()
                .zip(&want)
                .position(|(a, b)| a != b)
                .map(|p| format!("first differing byte at offset {}", off + p as u64)),
        };
        if let Some(why) = differs {
            return Ok(Some(Difference { block: index, why }));
        }
    }
    Ok(None)
}
