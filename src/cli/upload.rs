//! `kiln upload IMAGE`: an image file to an EBS snapshot.

use super::aws_common::{self, AwsArgs, ParentArgs, UploadArgs, Watcher};
use kiln::aws::guard::Guard;
use kiln::aws::identity::TAG_BLOCKS;
use kiln::aws::parent;
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
    /// Print {"snapshot_id","region","blocks_sent","volume_size_gib","blocks_sha256"} on stdout.
    #[arg(long)]
    pub json: bool,
    /// Also tag the snapshot with the SHA-256 of the whole disk (kiln:image-sha256), hashing
    /// the image first unless its manifest records it. It hashes every zero byte: seconds per
    /// 4 GiB of disk.
    #[arg(long)]
    pub sha256: bool,
    #[command(flatten)]
    pub aws: AwsArgs,
    #[command(flatten)]
    pub upload: UploadArgs,
    #[command(flatten)]
    pub parent: ParentArgs,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let parent_request = a.parent.request()?;
    let size = std::fs::metadata(&a.image)
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.image.display()))?
        .len();
    if let Some(format) = container_format(&a.image, size)
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.image.display()))?
    {
        anyhow::bail!(
            "{} is a {format} image: an EBS snapshot is the raw disk, byte for byte; upload the \
             build's raw image (kiln build --format raw)",
            a.image.display()
        );
    }
    // The snapshot is named by the image's blocks digest (kiln:image-blocks-sha256). A manifest
    // beside the image records it, and then the blocks sent (hashed anyway for their checksums)
    // must be the ones it records, or the upload fails and the snapshot is deleted. Without a
    // manifest of this kiln (none, or an older kiln's without a block map of this format), the
    // digest is known once the last block is sent, and the tag goes on before kiln waits for
    // `completed`. An older manifest's sha256 is checked as the image streams (it is the only
    // claim it makes). The whole disk is hashed only with --sha256, before the first block.
    let claim = manifest_claim(&a.image, size);
    let arch = claim.as_ref().map(|c| c.arch.clone());
    let hash_file = || {
        kiln::util::sha256_file(&a.image).map_err(|e| anyhow::anyhow!("{}: {e}", a.image.display()))
    };
    let (mut identity, check) = match claim {
        Some(Claim {
            name,
            version,
            sha256,
            blocks: Some(blocks),
            ..
        }) => {
            let id = ImageIdentity {
                name,
                version,
                blocks: Some(blocks.sha256.clone()),
                sha256,
            };
            (id, Check::Blocks(blocks))
        }
        Some(Claim {
            name,
            version,
            sha256: Some(sha256),
            blocks: None,
            ..
        }) => {
            let id = ImageIdentity {
                name,
                version,
                blocks: None,
                sha256: Some(sha256),
            };
            (id, Check::Sha256)
        }
        _ => (stem_identity(&a.image), Check::None),
    };
    if a.sha256 && identity.sha256.is_none() {
        identity.sha256 = Some(hash_file()?);
    }
    let rt = aws_common::runtime()?;
    let clients = a.aws.connect(rt)?;
    let retrier = a.upload.retry.retrier();
    let mut spec = spec(&identity, size, &a.upload);
    if let Some(arch) = &arch {
        spec.tags.push((parent::TAG_ARCH.into(), arch.clone()));
    }
    let parent = aws_common::choose_parent(
        rt,
        &clients,
        &retrier,
        &parent_request,
        (&identity.name, arch.as_deref()),
        &mut spec,
        a.upload.workers,
    )?;
    let report = run_upload(rt, &clients, &retrier, &spec, &a.upload, |sink| {
        if identity.blocks.is_none() {
            tag_blocks_before_completed(rt.handle(), &clients, &retrier, sink);
        }
        if let Some(p) = &parent {
            sink.set_parent(&p.snapshot_id, &p.map);
        }
        match check {
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
                let claimed = identity.sha256.as_deref().unwrap_or_default();
                if sent != claimed {
                    return Err(format!(
                        "{}: its sha256 is {sent}, but its manifest says {claimed}; rebuild \
                             the image or remove the stale manifest",
                        a.image.display(),
                    ));
                }
                Ok(())
            }
        }
    })?;
    aws_common::summary(&report);
    if a.json {
        println!("{}", aws_common::upload_json(&report));
    } else {
        println!("{}", report.snapshot_id);
    }
    Ok(ExitCode::SUCCESS)
}

/// Tags the snapshot with the blocks digest of the disk sent, after CompleteSnapshot and before
/// the wait for `completed` (for an upload that did not know it at StartSnapshot): a failed tag
/// fails the upload, which deletes the snapshot, so no snapshot of kiln's is left unnamed.
pub fn tag_blocks_before_completed(
    handle: &tokio::runtime::Handle,
    clients: &kiln::aws::Clients,
    retrier: &Retrier,
    sink: &mut kiln::sink::ebs::EbsSink,
) {
    let (handle, clients, retrier) = (handle.clone(), clients.clone(), retrier.clone());
    sink.before_completed(Box::new(move |snapshot, map| {
        let tag = [(TAG_BLOCKS.to_string(), map.sha256.clone())];
        handle
            .block_on(kiln::aws::create_tags(
                &clients,
                &retrier,
                &snapshot.id,
                &tag,
            ))
            .map_err(|e| format!("tagging the snapshot: {e}"))
    }));
}

/// What the manifest beside an image says about it.
struct Claim {
    name: String,
    version: String,
    arch: String,
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
    let disk = m.image?;
    (disk.size == size).then(|| Claim {
        name: m.name,
        version: m.version,
        arch: m.arch,
        sha256: disk.sha256.filter(|s| s.len() == 64),
        blocks: disk.blocks.filter(|b| b.is_current()),
    })
}

/// The disk format a file is wrapped in, if it is one `kiln build` writes besides raw: qcow2 and
/// VMDK by their magic at the start, a fixed VHD by its footer's cookie in the last sector (where
/// a raw GPT disk has its backup header, `EFI PART`).
fn container_format(image: &std::path::Path, size: u64) -> std::io::Result<Option<&'static str>> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(image)?;
    let mut head = [0u8; 4];
    if size >= 4 {
        f.read_exact_at(&mut head, 0)?;
    }
    let mut cookie = [0u8; 8];
    if size >= 512 {
        f.read_exact_at(&mut cookie, size - 512)?;
    }
    Ok(match (&head, &cookie) {
        (b"QFI\xfb", _) => Some("qcow2"),
        (b"KDMV", _) => Some("VMDK"),
        (_, b"conectix") => Some("VHD"),
        _ => None,
    })
}

/// Without a manifest: the file's stem names the image.
fn stem_identity(image: &std::path::Path) -> ImageIdentity {
    ImageIdentity {
        name: image
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
        version: "unknown".into(),
        ..Default::default()
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
