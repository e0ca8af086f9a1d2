//! `kiln push OCI REF`: an OCI image layout (directory or `.oci.tar`) to a registry, through the
//! distribution API. Blobs the repository already has are not sent again (a `HEAD` first), and
//! a manifest the registry already holds under the same digest is not put again, so pushing the
//! same image twice uploads nothing the second time. Manifests go up only after every blob they
//! name, and the tag last: a push that fails leaves the tag as it was.

pub mod auth;
mod client;
pub mod reference;
mod source;

use crate::oci::spec::{self, Descriptor, Index, Manifest};
use auth::Credentials;
use client::Client;
pub use reference::Reference;
use source::Source;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("{0}")]
    Layout(String),
    #[error("{0}")]
    Reference(String),
    #[error("credentials: {0}")]
    Credentials(String),
    #[error("{registry}: {detail}")]
    Unauthorized { registry: String, detail: String },
    #[error("{what}: {detail}")]
    Http { what: String, detail: String },
    #[error("{what}: {registry} failed {attempts} time(s); the last answer was: {last}")]
    Failed {
        what: String,
        registry: String,
        attempts: u32,
        last: String,
    },
}

#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    /// `--username`/`--password-stdin`; else the Docker config file's entry for the registry.
    pub credentials: Option<Credentials>,
    /// Where the Docker config is; `None`: `$DOCKER_CONFIG/config.json` or
    /// `~/.docker/config.json`.
    pub docker_config: Option<std::path::PathBuf>,
    /// HTTP even for a registry that is not on loopback.
    pub plain_http: bool,
    /// Blobs larger than this go up in chunks of this size; 0: always in one request.
    pub chunk_size: u64,
    /// Attempts per request (default 4) and the first retry's delay (doubling).
    pub attempts: Option<u32>,
    pub retry_delay: Option<std::time::Duration>,
}

/// What a push did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushReport {
    pub reference: String,
    /// The digest now under the tag.
    pub digest: String,
    pub blobs_uploaded: u32,
    pub bytes_uploaded: u64,
    pub blobs_present: u32,
    pub manifests_put: u32,
    pub retries: u32,
}

/// Pushes the image in the layout at `layout` to `reference`. The reference's tag, else the
/// layout's `org.opencontainers.image.ref.name`, names it.
pub fn push(layout: &Path, reference: &str, opts: &PushOptions) -> Result<PushReport, PushError> {
    let layout_err = |e: std::io::Error| PushError::Layout(format!("{}: {e}", layout.display()));
    let src = Source::open(layout).map_err(layout_err)?;
    let r = Reference::parse(reference).map_err(PushError::Reference)?;
    let index = src.index().map_err(layout_err)?;
    let top = choose(&index, r.tag.as_deref()).map_err(PushError::Layout)?;
    let tag = match (&r.tag, top.annotations.get(spec::ANNOTATION_REF_NAME)) {
        (Some(t), _) => t.clone(),
        (None, Some(t)) => t.clone(),
        (None, None) => {
            return Err(PushError::Reference(format!(
                "{reference} has no tag and the layout's image has no ref name: add :TAG"
            )))
        }
    };
    if let Some(d) = &r.digest {
        if *d != top.digest {
            return Err(PushError::Reference(format!(
                "{reference} names {d}, but the layout's image is {}",
                top.digest
            )));
        }
    }
    let creds = match &opts.credentials {
        Some(c) => Some(c.clone()),
        None => match opts.docker_config.clone().or_else(auth::docker_config_path) {
            Some(p) => {
                auth::from_docker_config(&p, r.config_key()).map_err(PushError::Credentials)?
            }
            None => None,
        },
    };
    let mut c = Client::new(
        &r.registry,
        &r.repository,
        opts.plain_http || r.is_loopback(),
        creds,
    );
    if let Some(a) = opts.attempts {
        c.attempts = a.max(1);
    }
    if let Some(d) = opts.retry_delay {
        c.delay = d;
    }
    c.ping()?;
    let mut report = PushReport {
        reference: format!("{}/{}:{tag}", r.registry, r.repository),
        digest: top.digest.clone(),
        ..Default::default()
    };
    let mut p = Pusher {
        src: &src,
        c: &mut c,
        report: &mut report,
        chunk: opts.chunk_size,
    };
    p.node(top, &tag).map_err(|e| match e {
        PushError::Layout(m) => PushError::Layout(format!("{}: {m}", layout.display())),
        e => e,
    })?;
    report.retries = c.retries;
    Ok(report)
}

/// The image `index.json` names: its only entry, or the one whose ref name is `tag`.
fn choose<'a>(index: &'a Index, tag: Option<&str>) -> Result<&'a Descriptor, String> {
    let named = |d: &&Descriptor| {
        tag.is_some_and(|t| {
            d.annotations
                .get(spec::ANNOTATION_REF_NAME)
                .map(String::as_str)
                == Some(t)
        })
    };
    match (
        index.manifests.as_slice(),
        index.manifests.iter().find(named),
    ) {
        (_, Some(d)) => Ok(d),
        ([one], None) => Ok(one),
        ([], None) => Err("index.json names no image".into()),
        (_, None) => {
            Err("the layout holds several images; name one by its tag in the reference".into())
        }
    }
}

struct Pusher<'a> {
    src: &'a Source,
    c: &'a mut Client,
    report: &'a mut PushReport,
    chunk: u64,
}

impl Pusher<'_> {
    /// Pushes what `d` names (its blobs, its manifests), then `d` itself as `reference`.
    fn node(&mut self, d: &Descriptor, reference: &str) -> Result<(), PushError> {
        let body = self
            .src
            .read_blob(&d.digest)
            .map_err(|e| PushError::Layout(e.to_string()))?;
        let bad = |e: serde_json::Error| PushError::Layout(format!("{}: {e}", d.digest));
        match d.media_type.as_str() {
            spec::MEDIA_INDEX => {
                let index: Index = serde_json::from_slice(&body).map_err(bad)?;
                for m in &index.manifests {
                    self.node(m, &m.digest)?;
                }
            }
            spec::MEDIA_MANIFEST => {
                let m: Manifest = serde_json::from_slice(&body).map_err(bad)?;
                for l in &m.layers {
                    self.blob(l)?;
                }
                self.blob(&m.config)?;
            }
            other => {
                return Err(PushError::Layout(format!(
                    "{}: unsupported media type {other}",
                    d.digest
                )))
            }
        }
        if self.c.manifest_digest(reference, &d.media_type)?.as_deref() == Some(&d.digest) {
            return Ok(());
        }
        self.c.put_manifest(reference, &d.media_type, &body)?;
        self.report.manifests_put += 1;
        Ok(())
    }

    fn blob(&mut self, d: &Descriptor) -> Result<(), PushError> {
        if self.c.blob_exists(&d.digest)? {
            self.report.blobs_present += 1;
            return Ok(());
        }
        let (_, len) = self
            .src
            .open_blob(&d.digest)
            .map_err(|e| PushError::Layout(e.to_string()))?;
        if len != d.size {
            return Err(PushError::Layout(format!(
                "blob {} is {len} bytes, but its descriptor says {}",
                d.digest, d.size
            )));
        }
        let src = self.src;
        let digest = d.digest.clone();
        self.c.upload_blob(
            &d.digest,
            len,
            &|| src.open_blob(&digest).map(|(r, _)| r),
            self.chunk,
        )?;
        self.report.blobs_uploaded += 1;
        self.report.bytes_uploaded += len;
        Ok(())
    }
}
