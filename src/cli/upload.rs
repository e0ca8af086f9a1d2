//! `kiln upload IMAGE`: an image file to an EBS snapshot.

use super::aws_common::{self, AwsArgs, UploadArgs, Watcher};
use kiln::aws::retry::Retrier;
use kiln::aws::snapshot::SnapshotSpec;
use kiln::aws::upload::{self, UploadOptions};
use kiln::aws::ImageIdentity;
use kiln::sink::blocks::BlockMapInfo;
use kiln::sink::HashSink;
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
    // The ClientToken and the tags need the image's hash before the first block. A manifest
    // beside the image names it, so the image is read once: the upload fails (deleting the
    // snapshot) unless the bytes sent are the manifest's. With the manifest's block map, the
    // blocks sent (hashed anyway for their checksums) are checked against it; an older manifest
    // without one has the whole disk hashed as it streams. Without a manifest the image is
    // hashed first, then read again to upload.
    let claimed = manifest_claim(&a.image, size);
    let identity = match &claimed {
        Some((id, _)) => id.clone(),
        None => {
            let sha256 = kiln::util::sha256_file(&a.image)
                .map_err(|e| anyhow::anyhow!("{}: {e}", a.image.display()))?;
            stem_identity(&a.image, sha256)
        }
    };
    let rt = aws_common::runtime()?;
    let clients = a.aws.connect(&rt)?;
    let retrier = Retrier::default();
    let spec = spec(&identity, size, &a.upload);
    let report = run_upload(
        &rt,
        &clients,
        &retrier,
        &spec,
        &a.upload,
        |sink| match claimed {
            None => upload::write_file(&a.image, sink),
            Some((_, Some(blocks))) => {
                sink.expect_blocks(blocks);
                upload::write_file(&a.image, sink)
            }
            Some((_, None)) => {
                let mut hashed = HashSink::new(sink, false);
                upload::write_file(&a.image, &mut hashed)?;
                let (_, sent) = hashed.finish(size).map_err(|e| e.to_string())?;
                if sent.sha256 != identity.sha256 {
                    return Err(format!(
                        "{}: its sha256 is {}, but its manifest says {}; rebuild the image or \
                         remove the stale manifest",
                        a.image.display(),
                        sent.sha256,
                        identity.sha256
                    ));
                }
                Ok(())
            }
        },
    )?;
    aws_common::summary(&report);
    if a.json {
        println!("{}", aws_common::upload_json(&report));
    } else {
        println!("{}", report.snapshot_id);
    }
    Ok(ExitCode::SUCCESS)
}

/// Name, version and sha256 from the manifest beside the image, if it describes a disk of
/// this size, and its block map if it records one (the claim is checked as the image streams).
fn manifest_claim(
    image: &std::path::Path,
    size: u64,
) -> Option<(ImageIdentity, Option<BlockMapInfo>)> {
    let m = kiln::manifest::read(&kiln::manifest::manifest_path(image)).ok()?;
    let disk = m.image?;
    let id = ImageIdentity {
        name: m.name,
        version: m.version,
        sha256: disk.sha256,
    };
    (disk.size == size && id.sha256.len() == 64).then_some((id, disk.blocks))
}

/// Without a manifest: the file's stem names the image.
fn stem_identity(image: &std::path::Path, sha256: String) -> ImageIdentity {
    ImageIdentity {
        name: image
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
        version: "unknown".into(),
        sha256,
    }
}

pub fn spec(id: &ImageIdentity, size: u64, u: &UploadArgs) -> SnapshotSpec {
    SnapshotSpec::for_image(id, size, u.encrypted, u.kms_key_arn.clone())
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
