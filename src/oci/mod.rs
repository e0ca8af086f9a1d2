//! OCI images: the recipe's root tree as a one-layer image in an OCI image layout (a directory,
//! or a tar with `--oci-archive`), and `kiln push` (see [`registry`]) to send it to a registry.
//!
//! One recipe makes an image whose manifest `index.json` names, tagged with `[container] tag`
//! (default: the image version). Several recipes (one per architecture) make a multi-arch image:
//! `index.json` names an image index that lists each architecture's manifest with its platform.
//! Everything is derived from the recipe and its inputs (times from `source_date_epoch`), so two
//! builds give the same digests.

pub mod layer;
pub mod layout;
pub mod pgzip;
pub mod registry;
pub mod spec;
mod tar;

use crate::recipe::{Container, LayerCompression, Recipe};
use layer::RootTrees;
use layout::{Blob, LayoutWriter, Staged};
use spec::{Descriptor, ImageConfig, Index, Manifest, Platform, RunConfig};
use std::collections::BTreeMap;
use std::io;
use std::path::Path;

/// Builds a layout image by image, then names them in `index.json`.
pub struct OciWriter {
    layout: LayoutWriter,
    manifests: Vec<Descriptor>,
    /// `index.json`'s ref name and the index's annotations come from the first recipe.
    first: Option<(String, BTreeMap<String, String>)>,
}

/// One architecture's image, as written.
#[derive(Debug, Clone)]
pub struct ImageWritten {
    pub manifest: Descriptor,
    pub config: Blob,
    pub layer: Blob,
    pub diff_id: String,
}

/// The finished layout, not yet renamed into place.
pub struct StagedImage {
    pub staged: Staged,
    /// The digest `index.json` names: the image manifest, or the image index of a multi-arch
    /// image.
    pub digest: String,
    pub tag: String,
}

/// `source_date_epoch` as RFC 3339, UTC.
pub fn rfc3339(secs: i64) -> String {
    let c = crate::util::civil(secs);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        c.year, c.month, c.day, c.hour, c.min, c.sec
    )
}

/// The tag for a recipe: `[container] tag`, else the version with every character a tag cannot
/// hold replaced by `_` (`1.0+b` → `1.0_b`).
pub fn tag_for(recipe: &Recipe) -> String {
    if let Some(t) = recipe.container.as_ref().and_then(|c| c.tag.clone()) {
        return t;
    }
    let mut t: String = recipe
        .image
        .version
        .chars()
        .map(
            |c| match c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                true => c,
                false => '_',
            },
        )
        .take(128)
        .collect();
    if t.starts_with(['.', '-']) {
        t.replace_range(0..1, "_");
    }
    t
}

impl OciWriter {
    pub fn create(target: &Path, archive: bool, sde: i64) -> io::Result<Self> {
        Ok(OciWriter {
            layout: LayoutWriter::create(target, archive, sde.max(0) as u64)?,
            manifests: Vec::new(),
            first: None,
        })
    }

    /// Writes one recipe's image: its layer (from `trees`), config and manifest.
    pub fn add_image(&mut self, recipe: &Recipe, trees: &RootTrees) -> io::Result<ImageWritten> {
        let none = Container::default();
        let c = recipe.container.as_ref().unwrap_or(&none);
        let sde = recipe.image.source_date_epoch;
        let arch = spec::oci_arch(recipe.image.arch);
        if self
            .manifests
            .iter()
            .any(|d| d.platform.as_ref().is_some_and(|p| p.architecture == arch))
        {
            return Err(io::Error::other(format!(
                "two recipes build for {arch}: a multi-arch image takes one recipe per architecture"
            )));
        }
        let compression = c.compression.unwrap_or(LayerCompression::Gzip);
        let (layer, info) = self
            .layout
            .stream_blob(|w| layer::write_layer(trees, sde, compression, w))?;
        let created = rfc3339(sde);
        let platform = Platform {
            architecture: arch.into(),
            os: "linux".into(),
        };
        let config = ImageConfig {
            created: created.clone(),
            architecture: platform.architecture.clone(),
            os: platform.os.clone(),
            config: RunConfig {
                user: c.user.clone(),
                exposed_ports: c
                    .exposed_ports
                    .iter()
                    .map(|p| (p.clone(), spec::Empty {}))
                    .collect(),
                env: c.env.clone(),
                entrypoint: c.entrypoint.clone(),
                cmd: c.cmd.clone(),
                working_dir: c.working_dir.clone(),
                labels: c.labels.clone(),
            },
            rootfs: spec::RootFs {
                kind: "layers".into(),
                diff_ids: vec![info.diff_id.clone()],
            },
            history: vec![spec::History {
                created: created.clone(),
                created_by: format!(
                    "kiln build {}",
                    recipe
                        .path
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default()
                ),
            }],
        };
        let config_blob = self.layout.put_blob(&spec::to_bytes(&config))?;
        let mut annotations = BTreeMap::new();
        annotations.insert("org.opencontainers.image.created".into(), created);
        annotations.insert(
            "org.opencontainers.image.title".into(),
            recipe.image.name.clone(),
        );
        annotations.insert(
            "org.opencontainers.image.version".into(),
            recipe.image.version.clone(),
        );
        for (k, v) in &c.annotations {
            annotations.insert(k.clone(), v.clone());
        }
        let manifest = Manifest {
            schema_version: 2,
            media_type: spec::MEDIA_MANIFEST.into(),
            config: Descriptor {
                media_type: spec::MEDIA_CONFIG.into(),
                digest: config_blob.digest.clone(),
                size: config_blob.size,
                platform: None,
                annotations: BTreeMap::new(),
            },
            layers: vec![Descriptor {
                media_type: match compression {
                    LayerCompression::Gzip => spec::MEDIA_LAYER_GZIP,
                    LayerCompression::Zstd => spec::MEDIA_LAYER_ZSTD,
                }
                .into(),
                digest: layer.digest.clone(),
                size: layer.size,
                platform: None,
                annotations: BTreeMap::new(),
            }],
            annotations: annotations.clone(),
        };
        let m = self.layout.put_blob(&spec::to_bytes(&manifest))?;
        let desc = Descriptor {
            media_type: spec::MEDIA_MANIFEST.into(),
            digest: m.digest,
            size: m.size,
            platform: Some(platform),
            annotations: BTreeMap::new(),
        };
        if self.first.is_none() {
            annotations.retain(|k, _| k != "org.opencontainers.image.ref.name");
            self.first = Some((tag_for(recipe), annotations));
        }
        self.manifests.push(desc.clone());
        Ok(ImageWritten {
            manifest: desc,
            config: config_blob,
            layer,
            diff_id: info.diff_id,
        })
    }

    /// Writes `index.json` (and, for several images, the image index it names).
    pub fn finish(mut self) -> io::Result<StagedImage> {
        let (tag, annotations) = self
            .first
            .take()
            .ok_or_else(|| io::Error::other("an OCI layout without an image"))?;
        let mut top = match self.manifests.len() {
            1 => self.manifests[0].clone(),
            _ => {
                let index = Index {
                    schema_version: 2,
                    media_type: Some(spec::MEDIA_INDEX.into()),
                    manifests: self.manifests.clone(),
                    annotations,
                };
                let b = self.layout.put_blob(&spec::to_bytes(&index))?;
                Descriptor {
                    media_type: spec::MEDIA_INDEX.into(),
                    digest: b.digest,
                    size: b.size,
                    platform: None,
                    annotations: BTreeMap::new(),
                }
            }
        };
        top.annotations
            .insert(spec::ANNOTATION_REF_NAME.into(), tag.clone());
        let digest = top.digest.clone();
        let index = Index {
            schema_version: 2,
            media_type: Some(spec::MEDIA_INDEX.into()),
            manifests: vec![top],
            annotations: BTreeMap::new(),
        };
        let staged = self.layout.finish(&spec::to_bytes(&index))?;
        Ok(StagedImage {
            staged,
            digest,
            tag,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_tags() {
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    }
}
