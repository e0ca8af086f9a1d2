//! `kiln build RECIPE [-o IMAGE] [--json]`, and `kiln build RECIPE --upload`: the disk streamed
//! straight into an EBS snapshot, with no image file.

use indicatif::{ProgressBar, ProgressStyle};
use kiln::pipeline::{self, BuildOptions, Progress};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The recipe (TOML).
    pub recipe: PathBuf,
    /// Where to write the image; default out/<name>.raw.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Print the image's and the manifest's paths and the image's digests as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Also compute the SHA-256 of the whole disk (into the manifest and the output). It hashes
    /// every zero byte: seconds per 4 GiB of disk, whatever the disk holds. `kiln hash IMAGE`
    /// computes it later.
    #[arg(long)]
    pub sha256: bool,
    /// Install exactly the packages in `<recipe stem>.lock` (made by `kiln lock`); with a warm
    /// cache this needs no network.
    #[arg(long)]
    pub locked: bool,
    /// Stream the disk into an EBS snapshot instead of a file (the manifest is still written,
    /// to out/<name>.manifest.json or beside -o).
    #[arg(long)]
    pub upload: bool,
    #[command(flatten)]
    pub aws: super::aws_common::AwsArgs,
    #[command(flatten)]
    pub upload_args: super::aws_common::UploadArgs,
    #[command(flatten)]
    pub trust: super::trust::TrustArgs,
}

struct Bar(ProgressBar);

impl Progress for Bar {
    fn start(&self, total: u64) {
        self.0.set_length(total);
    }
    fn update(&self, pos: u64) {
        self.0.set_position(pos);
    }
    fn finish(&self) {
        self.0.finish_and_clear();
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.upload {
        return run_upload(args);
    }
    let progress: Option<Box<dyn Progress>> = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_message("writing disk");
        Some(Box::new(Bar(bar)))
    } else {
        None
    };
    let out = pipeline::build(
        &args.recipe,
        BuildOptions {
            output: args.output,
            progress,
            locked: args.locked,
            packages: Some(kiln::packages::Options {
                progress: std::io::stderr().is_terminal(),
                ..Default::default()
            }),
            trust: args.trust.trust(),
            sha256: args.sha256,
        },
    )?;
    let image = &out.manifest.image;
    let blocks = image.blocks_sha256().unwrap_or_default();
    if args.json {
        let mut v = serde_json::json!({
            "manifest": out.manifest_path,
            "image": out.image,
            "blocks_sha256": blocks,
        });
        if let Some(sha) = &image.sha256 {
            v["sha256"] = sha.as_str().into();
        }
        println!("{v}");
    } else {
        println!("image: {}", out.image.display());
        println!("blocks sha256: {blocks}");
        if let Some(sha) = &image.sha256 {
            println!("sha256: {sha}");
        }
        println!("manifest: {}", out.manifest_path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// `--upload`: prepare, then stream the disk into an EbsSink.
fn run_upload(mut args: Args) -> anyhow::Result<ExitCode> {
    use super::aws_common;
    use kiln::aws::{kiln_tags, ImageIdentity};
    use kiln::manifest;

    let popts = kiln::packages::Options {
        progress: std::io::stderr().is_terminal(),
        ..Default::default()
    };
    let prepared =
        pipeline::prepare_trusted(&args.recipe, args.locked, &popts, &args.trust.trust())?;
    let recipe = &prepared.recipe;
    let ami = recipe.ami.as_ref();
    if args.aws.region.is_none() {
        args.aws.region = ami.and_then(|a| a.regions.first().cloned());
    }
    if let Some(a) = ami {
        args.upload_args.encrypted |= a.encrypted;
        if args.upload_args.kms_key_arn.is_none() {
            args.upload_args.kms_key_arn = a.kms_key_arn.clone();
        }
    }
    let image = args
        .output
        .clone()
        .unwrap_or_else(|| PathBuf::from("out").join(format!("{}.raw", recipe.image.name)));
    // The disk's hash is known only at the end, so the kiln:image-sha256 tag is added once the
    // disk is written. (The same recipe text is not the same disk: a [[tree]] or [[file]]
    // source may have changed. Nothing is named or found by the recipe's hash.)
    let identity = ImageIdentity {
        name: recipe.image.name.clone(),
        version: recipe.image.version.clone(),
        sha256: recipe.sha256.clone(),
    };
    let mut spec = super::upload::spec(&identity, prepared.plan.size, &args.upload_args);
    spec.tags.retain(|(k, _)| k != "kiln:image-sha256");
    spec.description = format!(
        "kiln: {} {} (recipe sha256 {})",
        identity.name, identity.version, recipe.sha256
    );
    let rt = aws_common::runtime()?;
    let clients = args.aws.connect(rt)?;
    let retrier = args.upload_args.retry.retrier();
    let sha = std::sync::Arc::new(std::sync::Mutex::new(None));
    // The disk's hash is finished after CompleteSnapshot, while AWS processes the snapshot (the
    // zeros after the last block are most of a sparse disk's hashing), and the kiln:image-sha256
    // tag goes on before kiln waits for `completed`: if tagging fails, the upload fails and the
    // snapshot is deleted, never left untagged.
    let report =
        super::upload::run_upload(rt, &clients, &retrier, &spec, &args.upload_args, |sink| {
            let pending = pipeline::write_disk(&prepared, sink).map_err(|e| e.to_string())?;
            let (handle, clients, retrier) =
                (rt.handle().clone(), clients.clone(), retrier.clone());
            let (mut identity, sha) = (identity.clone(), sha.clone());
            sink.before_completed(Box::new(move |snapshot| {
                let s = pending
                    .wait()
                    .map_err(|e| e.to_string())?
                    .sha256
                    .ok_or("the disk's sha256 was not computed")?;
                identity.sha256 = s.clone();
                let tag: Vec<_> = kiln_tags(&identity)
                    .into_iter()
                    .filter(|(k, _)| k == "kiln:image-sha256")
                    .collect();
                handle
                    .block_on(kiln::aws::create_tags(
                        &clients,
                        &retrier,
                        &snapshot.id,
                        &tag,
                    ))
                    .map_err(|e| format!("tagging the snapshot: {e}"))?;
                *sha.lock().unwrap_or_else(|e| e.into_inner()) = Some(s);
                Ok(())
            }));
            Ok(())
        })?;
    let sha = sha.lock().unwrap_or_else(|e| e.into_inner()).take();
    let digest = kiln::sink::DiskDigest {
        sha256: sha,
        // The blocks the upload sent are the disk's: no second pass over them.
        blocks: Some(report.blocks.clone()),
    };
    aws_common::summary(&report);
    let snapshot = manifest::SnapshotInfo {
        snapshot_id: report.snapshot_id.clone(),
        region: report.region.clone(),
    };
    let (manifest_path, _) = pipeline::write_records(&prepared, &image, digest, Some(snapshot))?;
    if args.json {
        println!("{}", aws_common::upload_json(&report));
    } else {
        println!("{}", report.snapshot_id);
        println!("manifest: {}", manifest_path.display());
    }
    Ok(ExitCode::SUCCESS)
}
