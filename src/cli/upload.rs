//! `kiln upload IMAGE`: an image file to an EBS snapshot.

use super::aws_common::{self, AwsArgs, UploadArgs, Watcher};
use kiln::aws::retry::Retrier;
use kiln::aws::snapshot::{client_token, SnapshotSpec, DEFAULT_TIMEOUT_MINUTES};
use kiln::aws::upload::{self, UploadOptions};
use kiln::aws::{kiln_tags, ImageIdentity};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The raw disk image.
    pub image: PathBuf,
    /// Print {"snapshot_id","region","blocks_sent","volume_size_gib"} on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub aws: AwsArgs,
    #[command(flatten)]
    pub upload: UploadArgs,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let size = std::fs::metadata(&a.image)
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.image.display()))?
        .len();
    // The ClientToken and the tags need the image's hash before the first block.
    let sha256 = kiln::util::sha256_file(&a.image)
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.image.display()))?;
    let identity = identity(&a.image, sha256.clone());
    let rt = aws_common::runtime()?;
    let clients = a.aws.connect(&rt)?;
    let retrier = Retrier::default();
    let spec = spec(&identity, size, &a.upload);
    let report = run_upload(&rt, &clients, &retrier, &spec, &a.upload, |sink| {
        upload::write_file(&a.image, sink)
    })?;
    aws_common::summary(&report);
    if a.json {
        println!("{}", aws_common::upload_json(&report));
    } else {
        println!("{}", report.snapshot_id);
    }
    Ok(ExitCode::SUCCESS)
}

/// Name and version from the manifest beside the image, else the file's stem.
fn identity(image: &std::path::Path, sha256: String) -> ImageIdentity {
    match kiln::manifest::read(&kiln::manifest::manifest_path(image)) {
        Ok(m) if m.image.sha256 == sha256 => ImageIdentity {
            name: m.name,
            version: m.version,
            sha256,
        },
        _ => ImageIdentity {
            name: image
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
            version: "unknown".into(),
            sha256,
        },
    }
}

pub fn spec(id: &ImageIdentity, size: u64, u: &UploadArgs) -> SnapshotSpec {
    let encrypted = u.encrypted || u.kms_key_arn.is_some();
    SnapshotSpec {
        size,
        description: format!("kiln: {} {} (sha256 {})", id.name, id.version, id.sha256),
        tags: kiln_tags(id),
        client_token: client_token(&id.sha256, encrypted, u.kms_key_arn.as_deref()),
        encrypted,
        kms_key_arn: u.kms_key_arn.clone(),
        timeout_minutes: DEFAULT_TIMEOUT_MINUTES,
    }
}

/// Runs one upload with progress.
pub fn run_upload<W>(
    rt: &tokio::runtime::Runtime,
    clients: &kiln::aws::Clients,
    retrier: &Retrier,
    spec: &SnapshotSpec,
    u: &UploadArgs,
    write: W,
) -> anyhow::Result<kiln::sink::ebs::UploadReport>
where
    W: FnOnce(&mut kiln::sink::ebs::EbsSink) -> Result<(), String>,
{
    let watcher: Mutex<Option<Watcher>> = Mutex::new(None);
    let opts = UploadOptions {
        workers: u.workers,
        wait_timeout: Duration::from_secs(u.wait_timeout),
    };
    let r = upload::upload_with(
        rt.handle(),
        clients,
        retrier,
        spec,
        &opts,
        &|id, stats| {
            eprintln!("uploading to snapshot {id} in {}", clients.region);
            *watcher.lock().unwrap_or_else(|e| e.into_inner()) = Some(Watcher::start(id, stats));
        },
        write,
    );
    drop(watcher);
    Ok(r?)
}
