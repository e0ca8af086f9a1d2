//! Images an earlier kiln published: it named them by the whole-disk sha256 alone
//! (`kiln:image-sha256`, no `kiln:image-blocks-sha256`), so a lookup by the blocks digest cannot
//! find them. Such an image still holds its AMI name; when it does, and it is kiln's image of the
//! same name and version, the image file is hashed whole (only then: it costs the disk's size)
//! and compared with its tag. If they agree, it is this very disk, and is reused (and gets the
//! blocks tag when publish finalizes it); if not, the name is taken, as by any other image.

use super::identity::ImageIdentity;
use super::images::{is_failed, AmiInfo};
use std::path::PathBuf;
use tokio::sync::OnceCell;

/// The image file's whole-disk sha256: known already (`--sha256`, a manifest, a tag), or
/// computed at most once, when first asked for.
pub struct WholeDiskSha256 {
    path: Option<PathBuf>,
    cell: OnceCell<Result<Option<String>, String>>,
}

impl WholeDiskSha256 {
    /// Known already, or (with `None`) unknowable: nothing to hash.
    pub fn known(sha256: Option<String>) -> Self {
        WholeDiskSha256 {
            path: None,
            cell: OnceCell::new_with(Some(Ok(sha256))),
        }
    }

    /// `known`'s value if any, else the sha256 of the file at `path`, when asked for.
    pub fn of_file(known: Option<String>, path: PathBuf) -> Self {
        match known {
            Some(s) => Self::known(Some(s)),
            None => WholeDiskSha256 {
                path: Some(path),
                cell: OnceCell::new(),
            },
        }
    }

    /// Whether [`get`](Self::get) would hash the file.
    pub fn must_hash(&self) -> bool {
        !self.cell.initialized()
    }

    /// The sha256, hashing the file now (data regions only; the zeros are hashed, not read) if
    /// no one has yet. `None`: there is no file to hash.
    pub async fn get(&self) -> Result<Option<String>, String> {
        self.cell
            .get_or_init(|| async {
                let Some(path) = self.path.clone() else {
                    return Ok(None);
                };
                tokio::task::spawn_blocking(move || {
                    crate::util::sha256_file(&path)
                        .map(Some)
                        .map_err(|e| format!("{}: {e}", path.display()))
                })
                .await
                .map_err(|e| e.to_string())?
            })
            .await
            .clone()
    }

    /// The sha256 if it is known or was computed.
    pub fn value(&self) -> Option<String> {
        self.cell.get().and_then(|r| r.clone().ok().flatten())
    }
}

/// Whether `holder`, the image holding the AMI name kiln wants, is the disk `want` as an earlier
/// kiln published it: kiln's, tagged by the sha256 alone, of the same `kiln:name` and
/// `kiln:version`, not failed, and with the sha256 of `sha` (computed here, and only here, when
/// such a candidate exists). `say` tells the user why kiln hashes the disk.
pub async fn is_earlier_publish(
    holder: &AmiInfo,
    want: &ImageIdentity,
    sha: &WholeDiskSha256,
    say: &(dyn Fn(&str) + Send + Sync),
) -> Result<bool, String> {
    let Some(id) = holder.identity() else {
        return Ok(false);
    };
    let Some(old) = id.sha256.as_deref() else {
        return Ok(false);
    };
    if id.blocks.is_some() || id.name != want.name || id.version != want.version {
        return Ok(false);
    }
    if is_failed(holder) || holder.state == "deregistered" {
        return Ok(false);
    }
    if sha.must_hash() {
        say(&format!(
            "{} ({}) was published by an earlier kiln, which named images by the whole disk's \
             sha256 alone: hashing the image to compare",
            holder.image_id, holder.ami_name
        ));
    }
    Ok(sha.get().await?.as_deref() == Some(old))
}
