//! `kiln build RECIPE [-o IMAGE] [--format F]... [--json]`, `kiln build A.toml B.toml --format oci`
//! (one multi-arch OCI image), and `kiln build RECIPE --upload`: the disk streamed straight into an
//! EBS snapshot, with no image file (`--parent`: a child of the last version's snapshot, sent only
//! the blocks that changed).

use indicatif::{ProgressBar, ProgressStyle};
use kiln::pipeline::{self, BuildOptions, BuildOutput, Progress};
use kiln::recipe::{OutputFormat, FORMATS_EXPECTED};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The recipe (TOML); several (one per architecture, with --format oci) make one multi-arch
    /// OCI image.
    #[arg(required = true, num_args = 1..)]
    pub recipes: Vec<PathBuf>,
    /// Where to write the raw image; default out/<name>.raw. The other formats go beside it with
    /// their own extension (.qcow2, .vhd, .vmdk, .oci or .oci.tar).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// An output format: raw, qcow2, vhd, vmdk or oci (repeatable; default the recipe's
    /// [output] formats, else raw). All disk formats are written in the same pass over the disk.
    #[arg(long = "format", value_name = "FORMAT", value_parser = parse_format)]
    pub formats: Vec<OutputFormat>,
    /// Write the OCI image as one .oci.tar archive instead of a layout directory.
    #[arg(long)]
    pub oci_archive: bool,
    /// Print the manifest's path, each output's path and digests, and the disk's digests as JSON
    /// on stdout.
    #[arg(long)]
    pub json: bool,
    /// Also compute the SHA-256 of the whole disk (into the manifest and the output), and so of
    /// the raw and VHD files. It hashes every zero byte: seconds per 4 GiB of disk, whatever the
    /// disk holds. `kiln hash IMAGE` computes it later.
    #[arg(long)]
    pub sha256: bool,
    /// Install exactly the packages in `<recipe stem>.lock` (made by `kiln lock`); with a warm
    /// cache this needs no network.
    #[arg(long)]
    pub locked: bool,
    /// Fail when a maintainer-script command was not applied (they are listed in the
    /// manifest's maintainer_scripts.not_applied either way).
    #[arg(long)]
    pub strict_scripts: bool,
    /// Stream the disk into an EBS snapshot instead of a file (the manifest is still written,
    /// to out/<name>.manifest.json or beside -o).
    #[arg(long)]
    pub upload: bool,
    #[command(flatten)]
    pub aws: super::aws_common::AwsArgs,
    #[command(flatten)]
    pub upload_args: super::aws_common::UploadArgs,
    // With --upload: `--parent SNAPSHOT|auto|none` and `--parent-blocks FILE`, as `kiln upload`
    // takes them.
    #[command(flatten)]
    pub parent: super::aws_common::ParentArgs,
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

fn parse_format(s: &str) -> Result<OutputFormat, String> {
    OutputFormat::parse(s)
        .ok_or_else(|| format!("unknown format {s:?}; expected {FORMATS_EXPECTED}"))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.recipes.len() > 1 && (args.upload || args.formats != [OutputFormat::Oci]) {
        anyhow::bail!(
            "several recipes make one multi-arch OCI image: give --format oci (and only that); \
             build disk images one recipe at a time"
        );
    }
    // Before anything is built (a recipe's own [output] formats are checked once it is read).
    if args.sha256
        && !args.formats.is_empty()
        && args.formats.iter().all(|f| *f == OutputFormat::Oci)
    {
        return Err(pipeline::BuildError::Sha256WithoutDisk {
            formats: "oci".into(),
        }
        .into());
    }
    if args.upload {
        if !args.formats.is_empty() || args.oci_archive {
            anyhow::bail!("--upload streams the disk into EBS and writes no image file: it takes no --format or --oci-archive");
        }
        return run_upload(args);
    }
    if args.parent.parent != kiln::aws::parent::ParentChoice::None
        || args.parent.parent_blocks.is_some()
    {
        anyhow::bail!(
            "--parent and --parent-blocks make the snapshot of --upload a child of another: \
             give --upload, or upload the image later with kiln upload --parent"
        );
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
    let opts = BuildOptions {
        output: args.output,
        progress,
        locked: args.locked,
        packages: Some(kiln::packages::Options {
            progress: std::io::stderr().is_terminal(),
            ..Default::default()
        }),
        trust: args.trust.trust(),
        sha256: args.sha256,
        strict_scripts: args.strict_scripts,
        formats: (!args.formats.is_empty()).then_some(args.formats),
        oci_archive: args.oci_archive.then_some(true),
    };
    let outs = match args.recipes.as_slice() {
        [one] => vec![pipeline::build(one, opts)?],
        many => pipeline::build_multiarch_oci(many, opts)?,
    };
    for out in &outs {
        print_output(out, args.json);
    }
    Ok(ExitCode::SUCCESS)
}

/// One line per output (`raw` is `image:`), with its sha256 or an OCI image's digest when
/// known; the disk's digests; the manifest. Or one JSON object per recipe.
fn print_output(out: &BuildOutput, json: bool) {
    let m = &out.manifest;
    let dir = out
        .manifest_path
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default();
    let blocks = m.image.as_ref().and_then(|i| i.blocks_sha256());
    let sha256 = m.image.as_ref().and_then(|i| i.sha256.as_deref());
    if json {
        let outputs: Vec<_> = m
            .outputs
            .iter()
            .map(|o| {
                serde_json::json!({
                    "format": o.format,
                    "path": dir.join(&o.file),
                    "sha256": o.sha256,
                    "digest": o.digest,
                })
            })
            .collect();
        let mut v = serde_json::json!({
            "manifest": out.manifest_path,
            "outputs": outputs,
        });
        if m.outputs.iter().any(|o| o.format == "raw") {
            v["image"] = serde_json::json!(out.image);
        }
        if let Some(b) = blocks {
            v["blocks_sha256"] = b.into();
        }
        if let Some(sha) = sha256 {
            v["sha256"] = sha.into();
        }
        println!("{v}");
        return;
    }
    for o in &m.outputs {
        let path = dir.join(&o.file);
        let label = match o.format.as_str() {
            "raw" => "image".to_string(),
            f => f.to_string(),
        };
        match (&o.digest, &o.sha256, o.format.as_str()) {
            (Some(d), _, _) => println!("{label}: {}  {d}", path.display()),
            // The raw image's sha256 is the disk's, printed below.
            (None, Some(s), f) if f != "raw" => {
                println!("{label}: {}  sha256:{s}", path.display())
            }
            _ => println!("{label}: {}", path.display()),
        }
    }
    if let Some(b) = blocks {
        println!("blocks sha256: {b}");
    }
    if let Some(sha) = sha256 {
        println!("sha256: {sha}");
    }
    println!("manifest: {}", out.manifest_path.display());
}

/// `--upload`: prepare, then stream the disk into an EbsSink.
fn run_upload(mut args: Args) -> anyhow::Result<ExitCode> {
    use super::aws_common;
    use kiln::aws::identity::{TAG_BLOCKS, TAG_SHA256};
    use kiln::aws::{kiln_tags, ImageIdentity};
    use kiln::manifest;

    // Flags that contradict each other are refused before anything is built.
    let parent_request = args.parent.request()?;
    let popts = kiln::packages::Options {
        progress: std::io::stderr().is_terminal(),
        ..Default::default()
    };
    let prepared =
        pipeline::prepare_trusted(&args.recipes[0], args.locked, &popts, &args.trust.trust())?;
    pipeline::check_scripts(&prepared, args.strict_scripts)?;
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
    // The disk's digests are known only at the end, so the digest tags go on once the disk is
    // written. (The same recipe text is not the same disk: a [[tree]] or [[file]] source may
    // have changed. Nothing is named or found by the recipe's hash.)
    let identity = ImageIdentity {
        name: recipe.image.name.clone(),
        version: recipe.image.version.clone(),
        ..Default::default()
    };
    let mut spec = super::upload::spec(&identity, prepared.plan.size, &args.upload_args);
    spec.tags.push((
        kiln::aws::parent::TAG_ARCH.into(),
        recipe.image.arch.as_str().into(),
    ));
    spec.description = format!(
        "kiln: {} {} (recipe sha256 {})",
        identity.name, identity.version, recipe.sha256
    );
    let rt = aws_common::runtime()?;
    let clients = args.aws.connect(rt)?;
    let retrier = args.upload_args.retry.retrier();
    // The parent's block map is loaded (or read back from the parent) before StartSnapshot:
    // the sink compares each block with it as the disk is written, and a parent that cannot
    // be one is refused before anything is made.
    let parent = aws_common::choose_parent(
        rt,
        &clients,
        &retrier,
        &parent_request,
        (&identity.name, Some(recipe.image.arch.as_str())),
        &mut spec,
        args.upload_args.workers,
    )?;
    let sha = std::sync::Arc::new(std::sync::Mutex::new(None));
    let want_sha256 = args.sha256;
    // The blocks digest comes from the blocks sent, and the kiln:image-blocks-sha256 tag goes on
    // after CompleteSnapshot, while AWS processes the snapshot, before kiln waits for
    // `completed`: if tagging fails, the upload fails and the snapshot is deleted, never left
    // unnamed. With --sha256 the disk's whole hash is finished there too (the zeros after the
    // last block are most of a sparse disk's hashing) and tagged as kiln:image-sha256.
    let report =
        super::upload::run_upload(rt, &clients, &retrier, &spec, &args.upload_args, |sink| {
            if let Some(p) = &parent {
                sink.set_parent(&p.snapshot_id, &p.map);
            }
            let pending =
                pipeline::write_disk(&prepared, sink, want_sha256).map_err(|e| e.to_string())?;
            let (handle, clients, retrier) =
                (rt.handle().clone(), clients.clone(), retrier.clone());
            let (mut identity, sha) = (identity.clone(), sha.clone());
            sink.before_completed(Box::new(move |snapshot, map| {
                identity.blocks = Some(map.sha256.clone());
                identity.sha256 = pending.wait().map_err(|e| e.to_string())?.sha256;
                let tags: Vec<_> = kiln_tags(&identity)
                    .into_iter()
                    .filter(|(k, _)| k == TAG_BLOCKS || k == TAG_SHA256)
                    .collect();
                handle
                    .block_on(kiln::aws::create_tags(
                        &clients,
                        &retrier,
                        &snapshot.id,
                        &tags,
                    ))
                    .map_err(|e| format!("tagging the snapshot: {e}"))?;
                *sha.lock().unwrap_or_else(|e| e.into_inner()) = identity.sha256;
                Ok(())
            }));
            Ok(())
        })?;
    let sha = sha.lock().unwrap_or_else(|e| e.into_inner()).take();
    let digest = kiln::sink::DiskDigest {
        sha256: sha,
        // The blocks the upload sent are the disk's: no second pass over them.
        blocks: Some(report.blocks.clone()),
        map: Some(report.map.clone()),
    };
    aws_common::summary(&report);
    let snapshot = manifest::SnapshotInfo {
        snapshot_id: report.snapshot_id.clone(),
        region: report.region.clone(),
    };
    let (manifest_path, _) =
        pipeline::write_records(&prepared, &image, Some(digest), Some(snapshot), Vec::new())?;
    if args.json {
        println!("{}", aws_common::upload_json(&report));
    } else {
        println!("{}", report.snapshot_id);
        println!("manifest: {}", manifest_path.display());
    }
    Ok(ExitCode::SUCCESS)
}
