//! What the AWS subcommands share: connection flags, the runtime, progress and the summary.

use indicatif::{ProgressBar, ProgressStyle};
use kiln::aws::{self, AwsOptions, Clients};
use kiln::sink::ebs::{UploadReport, UploadStats};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, clap::Args)]
pub struct AwsArgs {
    /// AWS region (default: the standard chain: AWS_REGION, the profile's region).
    #[arg(long)]
    pub region: Option<String>,
    /// AWS profile from ~/.aws/config.
    #[arg(long)]
    pub profile: Option<String>,
}

impl AwsArgs {
    pub fn connect(&self, rt: &tokio::runtime::Runtime) -> anyhow::Result<Clients> {
        Ok(rt.block_on(aws::connect(&AwsOptions {
            region: self.region.clone(),
            profile: self.profile.clone(),
        }))?)
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct UploadArgs {
    /// Blocks uploaded at once.
    #[arg(long, default_value_t = kiln::sink::ebs::DEFAULT_WORKERS)]
    pub workers: usize,
    /// Make an encrypted snapshot (every block is written, zeros included).
    #[arg(long)]
    pub encrypted: bool,
    /// KMS key for an encrypted snapshot (implies --encrypted).
    #[arg(long)]
    pub kms_key_arn: Option<String>,
    /// Seconds to wait for the snapshot to become `completed`.
    #[arg(long, default_value_t = 3600)]
    pub wait_timeout: u64,
    #[command(flatten)]
    pub retry: RetryArgs,
}

/// `--parent` and `--parent-blocks` of `kiln upload` and `kiln build --upload` (`kiln publish`
/// has its own: its default is `auto`).
#[derive(Debug, Clone, clap::Args)]
pub struct ParentArgs {
    /// Upload incrementally, as a child of this snapshot (`snap-...`), of the newest completed
    /// kiln snapshot of the same image name and architecture (`auto`: a full upload when there
    /// is none), or in full (`none`). Only the blocks that differ from the parent's are sent.
    /// (`kiln build`: with --upload.)
    #[arg(long, default_value = "none")]
    pub parent: kiln::aws::parent::ParentChoice,
    /// The parent's block map (`<stem>.blocks` of its build); without it the parent snapshot's
    /// blocks are read back to learn it.
    #[arg(long, value_name = "FILE")]
    pub parent_blocks: Option<PathBuf>,
}

impl ParentArgs {
    /// The request, refused now if the flags alone contradict each other.
    pub fn request(&self) -> anyhow::Result<kiln::aws::parent::Request> {
        let r = kiln::aws::parent::Request {
            choice: self.parent.clone(),
            blocks_file: self.parent_blocks.clone(),
        };
        r.check()?;
        Ok(r)
    }
}

/// The parent of the snapshot `spec` describes (see [`kiln::aws::parent::choose`]), said on
/// stderr; `spec` then starts a child of it.
pub fn choose_parent(
    rt: &tokio::runtime::Runtime,
    clients: &Clients,
    retrier: &kiln::aws::retry::Retrier,
    request: &kiln::aws::parent::Request,
    (name, arch): (&str, Option<&str>),
    spec: &mut kiln::aws::snapshot::SnapshotSpec,
    workers: usize,
) -> anyhow::Result<Option<kiln::aws::parent::Parent>> {
    let note = |m: &str| eprintln!("{m}");
    Ok(rt.block_on(kiln::aws::parent::choose(
        clients, retrier, request, name, arch, spec, workers, &note,
    ))?)
}

#[derive(Debug, Clone, clap::Args)]
pub struct RetryArgs {
    /// Seconds one request may take before it is abandoned and retried. For blocks this is the
    /// floor: kiln raises it as it measures the uplink (64 blocks in flight on a slow link
    /// each take a 64th of it), and doubles it for a block whose last attempt timed out.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub attempt_timeout: u64,
}

impl RetryArgs {
    /// The retrier for this run's AWS calls.
    pub fn retrier(&self) -> kiln::aws::retry::Retrier {
        kiln::aws::retry::Retrier::new(kiln::aws::retry::RetryPolicy {
            attempt_timeout: Duration::from_secs(self.attempt_timeout),
            ..Default::default()
        })
    }
}

/// The runtime for the AWS calls. It lives as long as the process: on Ctrl-C the signal thread
/// undoes this run's work through it (the guards in `kiln::aws::guard`) while the main thread,
/// its calls failing as interrupted, returns from the subcommand; were the runtime dropped
/// then, the cleanup's calls would have nothing to run on.
pub fn runtime() -> anyhow::Result<&'static tokio::runtime::Runtime> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    Ok(Box::leak(Box::new(rt)))
}

/// Draws upload progress until dropped: a bar on a terminal, else a log line every few seconds.
pub struct Watcher {
    stop: Arc<Mutex<bool>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watcher {
    pub fn start(id: &str, stats: Arc<UploadStats>) -> Watcher {
        let stop = Arc::new(Mutex::new(false));
        let s2 = stop.clone();
        let id = id.to_string();
        let tty = std::io::stderr().is_terminal();
        let thread = std::thread::spawn(move || {
            let t0 = Instant::now();
            let total = stats.total_blocks.load(Ordering::Relaxed);
            let bar = tty.then(|| {
                let b = ProgressBar::new(total);
                b.set_style(
                    ProgressStyle::with_template(
                        "{msg} [{bar:40}] {pos}/{len} blocks {binary_bytes_per_sec} eta {eta}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                b.set_message(format!("uploading {id}"));
                b
            });
            let mut last_log = Instant::now();
            loop {
                let done = stats.blocks_done.load(Ordering::Relaxed);
                let sent = stats.bytes_sent.load(Ordering::Relaxed);
                if let Some(b) = &bar {
                    b.set_position(done);
                } else if last_log.elapsed() >= Duration::from_secs(5) {
                    last_log = Instant::now();
                    let secs = t0.elapsed().as_secs_f64().max(0.001);
                    eprintln!(
                        "uploading {id}: {done}/{total} blocks, {} sent, {:.1} MiB/s",
                        stats.blocks_sent.load(Ordering::Relaxed),
                        sent as f64 / secs / 1048576.0
                    );
                }
                if *s2.lock().unwrap_or_else(|e| e.into_inner()) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            if let Some(b) = bar {
                b.finish_and_clear();
            }
        });
        Watcher {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        *self.stop.lock().unwrap_or_else(|e| e.into_inner()) = true;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The end-of-upload summary, on stderr.
pub fn summary(r: &UploadReport) {
    let secs = r.elapsed.as_secs_f64().max(0.001);
    if let Some(p) = &r.parent {
        eprintln!(
            "snapshot {} is a child of {p}: {} blocks unchanged, not sent",
            r.snapshot_id, r.unchanged_blocks_skipped
        );
    }
    eprintln!(
        "snapshot {} in {}: {} blocks sent ({:.1} MiB), {} zero blocks skipped, {} retries, {:.1}s, {:.1} MiB/s",
        r.snapshot_id,
        r.region,
        r.blocks_sent,
        r.bytes_sent as f64 / 1048576.0,
        r.zero_blocks_skipped,
        r.retries,
        secs,
        r.bytes_sent as f64 / secs / 1048576.0
    );
}

pub fn upload_json(r: &UploadReport) -> serde_json::Value {
    serde_json::json!({
        "snapshot_id": r.snapshot_id,
        "region": r.region,
        "blocks_sent": r.blocks_sent,
        "volume_size_gib": r.volume_size_gib,
        "blocks_sha256": r.blocks.sha256,
        "parent": r.parent,
        "blocks_unchanged": r.unchanged_blocks_skipped,
        "bytes_sent": r.bytes_sent,
    })
}
