//! `kiln upload IMAGE`: an image file to an EBS snapshot.

use super::aws_common::{self, AwsArgs, UploadArgs, Watcher};
use kiln::aws::guard::Guard;
use kiln::aws::retry::Retrier;
use kiln::aws::snapshot::SnapshotSpec;
use kiln::aws::upload::{self, UploadOptions};
use kiln::aws::ImageIdentity;
use kiln::sink::blocks::BlockMapInfo;
use kiln::sink::{HashSink, Want};
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
    // The kiln:image-sha256 tag needs the image's whole-disk sha256 before
    // the first block. A manifest beside the image may name it (`build --sha256`, or an older
    // kiln); otherwise it is computed first, from the data regions alone (the zeros are hashed,
    // never read). Whatever the manifest claims is checked as the image streams, so the upload
    // fails (deleting the snapshot) unless the bytes sent are the manifest's: with its block map,
    // the blocks sent (hashed anyway for their checksums) must be the ones it records; a manifest
    // of an older kiln without a block map of this format has the whole disk hashed as it
    // streams, against its sha256.
    let claim = manifest_claim(&a.image, size);
    let hash_file = || {
        kiln::util::sha256_file(&a.image).map_err(|e| anyhow::anyhow!("{}: {e}", a.image.display()))
    };
    let (identity, check) = match claim {
        Some(Claim {
            name,
            version,
            sha256,
            blocks: Some(blocks),
        }) => {
            let sha256 = match sha256 {
                Some(s) => s,
                None => hash_file()?,
            };
            let id = ImageIdentity {
                name,
                version,
                sha256,
            };
            (id, Check::Blocks(blocks))
        }
        Some(Claim {
            name,
            version,
            sha256: Some(sha256),
            blocks: None,
        }) => {
            let id = ImageIdentity {
                name,
                version,
                sha256,
            };
            (id, Check::Sha256)
        }
        _ => (stem_identity(&a.image, hash_file()?), Check::None),
    };
    let rt = aws_common::runtime()?;
    let clients = a.aws.connect(rt)?;
    let retrier = a.upload.retry.retrier();
    let spec = spec(&identity, size, &a.upload);
    let report = run_upload(
        rt,
        &clients,
        &retrier,
        &spec,
        &a.upload,
        |sink| match check {
            Check::None => upload::write_file(&a.image, sink),
            Check::Blocks(blocks) => {
                sink.expect_blocks(blocks);
                upload::write_file(&a.image, sink)
            }
            Check::Sha256 => {
                let want = Want {
                    sha256: true,
                    blocks: false,
                };
                let mut hashed = HashSink::new(sink, size, want);
                upload::write_file(&a.image, &mut hashed)?;
                let (_, sent) = hashed.finish().map_err(|e| e.to_string())?;
                let sent = sent.sha256.unwrap_or_default();
                if sent != identity.sha256 {
                    return Err(format!(
                        "{}: its sha256 is {sent}, but its manifest says {}; rebuild the image or \
                         remove the stale manifest",
                        a.image.display(),
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

/// What the manifest beside an image says about it.
struct Claim {
    name: String,
    version: String,
    sha256: Option<String>,
    /// Its block map, if this kiln computes the same.
    blocks: Option<BlockMapInfo>,
}

/// How the bytes an upload sends are held to the manifest.
enum Check {
    None,
    Blocks(BlockMapInfo),
    Sha256,
}

/// The manifest beside the image, if it describes a disk of this size.
fn manifest_claim(image: &std::path::Path, size: u64) -> Option<Claim> {
    let m = kiln::manifest::read(&kiln::manifest::manifest_path(image)).ok()?;
    (m.image.size == size).then(|| Claim {
        name: m.name,
        version: m.version,
        sha256: m.image.sha256.filter(|s| s.len() == 64),
        blocks: m.image.blocks.filter(|b| b.is_current()),
    })
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

/// Runs one upload with progress; the snapshot is this run's until it is `completed`: a failure
/// or Ctrl-C before then deletes it.
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
    let guard = Guard::new(rt.handle(), clients, retrier);
    let r = upload::upload_with(
        rt.handle(),
        clients,
        retrier,
        spec,
        &opts,
        &guard,
        &|id, stats| {
            eprintln!("uploading to snapshot {id} in {}", clients.region);
            *watcher.lock().unwrap_or_else(|e| e.into_inner()) = Some(Watcher::start(id, stats));
        },
        write,
    );
    drop(watcher);
    let report = r?;
    guard.finish();
    Ok(report)
}
