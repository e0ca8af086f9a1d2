//! `kiln publish RECIPE`: build, boot-test, then snapshot, register, copy, share, tag and
//! deprecate in every region of `[ami] regions` (see `kiln::aws::publish`).

use super::aws_common::{self, AwsArgs, Watcher};
use kiln::aws::publish::{self, Hooks, Outcome, PublishOptions, PublishReport};
use kiln::aws::upload::UploadOptions;
use kiln::aws::AwsOptions;
use kiln::checks::RunOptions;
use kiln::pipeline::{BuildOptions, BuildOutput};
use kiln::qemu::VmOptions;
use kiln::recipe::{Recipe, Test};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The recipe (TOML) with an [ami] table.
    pub recipe: PathBuf,
    /// Publish without running the recipe's tests (`kiln test`).
    #[arg(long)]
    pub skip_test: bool,
    /// Also check that this text appears on the serial console (without any [[test]], kiln
    /// waits for "KILN-BOOT-OK").
    #[arg(long)]
    pub expect: Option<String>,
    /// Seconds the --expect check (or the default one) waits.
    #[arg(long, default_value_t = kiln::qemu::DEFAULT_TIMEOUT.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    pub test_timeout: u64,
    /// Write the tests' report as JUnit XML to FILE.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    #[command(flatten)]
    pub instance: super::test::InstanceArgs,
    #[command(flatten)]
    pub machine: super::test::MachineArgs,
    /// Confirm `public = true`: the AMI becomes launchable by every AWS account.
    #[arg(long)]
    pub allow_public: bool,
    /// Print {"images": [{"region","image_id","snapshot_id"}], "blocks_sha256", "image_sha256"}
    /// on stdout (image_sha256 only when it is known).
    #[arg(long)]
    pub json: bool,
    /// Also compute the SHA-256 of the whole disk, and tag the image and its snapshots with it
    /// (kiln:image-sha256). It hashes every zero byte: seconds per 4 GiB of disk.
    #[arg(long)]
    pub sha256: bool,
    /// Install exactly the packages in `<recipe stem>.lock`.
    #[arg(long)]
    pub locked: bool,
    /// Fail when a maintainer-script command was not applied (as `kiln build --strict-scripts`).
    #[arg(long)]
    pub strict_scripts: bool,
    /// Where to write the image; default out/<name>.raw.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Blocks uploaded at once.
    #[arg(long, default_value_t = kiln::sink::ebs::DEFAULT_WORKERS)]
    pub workers: usize,
    /// Regions copied into at once.
    #[arg(long, default_value_t = 8)]
    pub copy_concurrency: usize,
    #[command(flatten)]
    pub retry: super::aws_common::RetryArgs,
    /// Seconds to wait for the snapshot, the registration or a copy (copies can take well
    /// over ten minutes).
    #[arg(long, default_value_t = 7200)]
    pub wait_timeout: u64,
    #[command(flatten)]
    pub aws: AwsArgs,
    /// The new snapshot's parent: the newest completed kiln snapshot of the same image name and
    /// architecture in the first region (`auto`: only the blocks that changed are uploaded; a
    /// full upload when there is none), a snapshot id, or `none` (a full upload).
    #[arg(long, default_value = "auto")]
    pub parent: kiln::aws::parent::ParentChoice,
    /// The parent's block map (`<stem>.blocks` of its build, kept by CI); without it the
    /// parent's blocks are read back.
    #[arg(long, value_name = "FILE")]
    pub parent_blocks: Option<PathBuf>,
    #[command(flatten)]
    pub trust: super::trust::TrustArgs,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    // Everything the flags or the recipe alone can refuse is refused before the build.
    let parent = kiln::aws::parent::Request {
        choice: a.parent.clone(),
        blocks_file: a.parent_blocks.clone(),
    };
    parent.check()?;
    let recipe = Recipe::load_with(&a.recipe, &a.trust.trust())?;
    publish::check_recipe(&recipe, a.allow_public)?;
    let plan = recipe.test_plan().unwrap_or_default();
    let tests = super::test::tests_for(&plan, a.expect.as_deref(), a.test_timeout);
    let run_opts = a
        .instance
        .run_options(
            &plan,
            VmOptions {
                machine: a.machine.options(),
                ..Default::default()
            },
        )
        .map_err(anyhow::Error::msg)?;
    let test = |out: &BuildOutput| -> Result<(), String> {
        if a.skip_test {
            eprintln!("tests skipped (--skip-test)");
            return Ok(());
        }
        run_tests(out, &tests, &run_opts, a.junit.as_deref())
    };
    let rt = aws_common::runtime()?;
    let opts = PublishOptions {
        aws: AwsOptions {
            region: a.aws.region.clone(),
            profile: a.aws.profile.clone(),
        },
        upload: UploadOptions {
            workers: a.workers,
            wait_timeout: Duration::from_secs(a.wait_timeout),
        },
        copy_concurrency: a.copy_concurrency,
        wait_timeout: Duration::from_secs(a.wait_timeout),
        retry: a.retry.retrier().policy,
        parent: parent.clone(),
    };
    let watcher: Mutex<Option<Watcher>> = Mutex::new(None);
    // After Ctrl-C the calls fail as interrupted while the signal thread undoes this run's
    // work and reports it: the failures they cause are not news.
    let event = |region: &str, msg: &str| {
        if !kiln::cleanup::interrupted() {
            eprintln!("{region}: {msg}")
        }
    };
    let on_upload_start = |id: &str, stats| {
        eprintln!("uploading the disk to snapshot {id}");
        *watcher.lock().unwrap_or_else(|e| e.into_inner()) = Some(Watcher::start(id, stats));
    };
    let hooks = Hooks {
        event: &event,
        on_upload_start: &on_upload_start,
    };
    let build = BuildOptions {
        output: a.output.clone(),
        progress: None,
        locked: a.locked,
        packages: Some(kiln::packages::Options {
            progress: std::io::stderr().is_terminal(),
            ..Default::default()
        }),
        sha256: a.sha256,
        // An AMI is made from the raw disk, whatever else the recipe's [output] asks for.
        formats: Some(vec![kiln::recipe::OutputFormat::Raw]),
        strict_scripts: a.strict_scripts,
        trust: a.trust.trust(),
        ..Default::default()
    };
    let report = publish::build_test_publish(
        rt.handle(),
        &a.recipe,
        build,
        a.allow_public,
        &test,
        &opts,
        &hooks,
    );
    // The upload's progress ends with the upload; the watcher stops before anything is printed.
    drop(watcher);
    let report = report?;
    if kiln::cleanup::interrupted() {
        return Ok(ExitCode::FAILURE);
    }
    if let Some(u) = &report.upload {
        aws_common::summary(u);
    }
    if a.json {
        println!("{}", json(&report));
    } else {
        print!("{}", table(&report));
    }
    for r in report
        .regions
        .iter()
        .filter(|r| r.outcome == Outcome::Failed)
    {
        eprintln!("{}: {}", r.region, r.error.as_deref().unwrap_or("failed"));
    }
    if report.ok() {
        Ok(ExitCode::SUCCESS)
    } else {
        let failed: Vec<&str> = report
            .regions
            .iter()
            .filter(|r| r.outcome == Outcome::Failed)
            .map(|r| r.region.as_str())
            .collect();
        eprintln!(
            "published to {} of {} region(s); failed: {}",
            report.regions.len() - failed.len(),
            report.regions.len(),
            failed.join(", ")
        );
        Ok(ExitCode::from(1))
    }
}

/// `kiln test` on the built image, before anything is uploaded: passes, or says which checks
/// failed and why. The table goes to stderr (stdout is publish's own report).
fn run_tests(
    out: &BuildOutput,
    tests: &[Test],
    opts: &RunOptions,
    junit: Option<&std::path::Path>,
) -> Result<(), String> {
    let mut opts = opts.clone();
    opts.vm.log = Some(super::test::default_log(&out.image));
    eprintln!(
        "testing {} under QEMU ({} check(s))",
        out.image.display(),
        tests.len()
    );
    let report = kiln::checks::run(&out.image, tests, &opts).map_err(|e| e.to_string())?;
    eprint!("{}", report.table());
    if let Some(j) = junit {
        kiln::util::write_atomic(j, report.junit().as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", j.display()))?;
    }
    if report.passed {
        return Ok(());
    }
    let failed: Vec<String> = report
        .results
        .iter()
        .filter(|r| !r.passed)
        .map(|r| {
            format!(
                "{}: {}",
                r.display_name(),
                r.reason.as_deref().unwrap_or("failed")
            )
        })
        .collect();
    Err(format!(
        "{} of {} check(s) failed: {}",
        failed.len(),
        report.results.len(),
        failed.join("; ")
    ))
}

/// `{"images": [...], "blocks_sha256", "image_sha256"}`: only the regions where the image is
/// published; `image_sha256` when the build made it, or an earlier kiln's image was compared by
/// it.
fn json(r: &PublishReport) -> serde_json::Value {
    let images: Vec<serde_json::Value> = r
        .regions
        .iter()
        .filter(|x| x.outcome != Outcome::Failed)
        .map(|x| {
            serde_json::json!({
                "region": x.region,
                "image_id": x.image_id,
                "snapshot_id": x.snapshot_id,
            })
        })
        .collect();
    let mut v = serde_json::json!({"images": images, "blocks_sha256": r.identity.blocks});
    if let Some(s) = &r.identity.sha256 {
        v["image_sha256"] = s.as_str().into();
    }
    v
}

/// One line per region: region, AMI id, snapshot id, state.
fn table(r: &PublishReport) -> String {
    let rows: Vec<[String; 4]> = r
        .regions
        .iter()
        .map(|x| {
            let state = match x.outcome {
                Outcome::Created => format!("{} (new)", x.state),
                Outcome::Reused => format!("{} (existing)", x.state),
                Outcome::Failed if x.image_id.is_some() => {
                    format!("{}, not fully published", x.state)
                }
                Outcome::Failed => "failed, nothing left".to_string(),
            };
            [
                x.region.clone(),
                x.image_id.clone().unwrap_or_else(|| "-".into()),
                x.snapshot_id.clone().unwrap_or_else(|| "-".into()),
                state,
            ]
        })
        .collect();
    super::images::columns(&["REGION", "IMAGE", "SNAPSHOT", "STATE"], &rows)
}
