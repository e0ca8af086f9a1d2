//! `kiln publish`, as a library: build, boot-test, then make the AMI exist everywhere the recipe
//! says, shared, tagged and scheduled for deprecation.
//!
//! ```text
//! build → test (the caller's closure)
//!   → first region: find the AMI by its digest tags + name, or upload → register → available
//!   → every other region, in parallel: find the copy, or CopyImage → available → finalize
//!   → first region: finalize                     (finalize = tags, shares, deprecation)
//! ```
//!
//! Idempotent: what exists is found by its tags and reused, and every finalize step sends only
//! what is missing, so publishing the same image again uploads nothing and fills in only gaps.
//! A region that fails is reported with its cause while the others carry on. An image kiln made
//! in this run that then fails (a copy that cannot be shared, say) is deregistered and its
//! snapshots deleted, so no half-shared image is left behind; a failed registration deletes the
//! snapshot this run uploaded. Nothing an earlier run (or the user) made is ever removed: only
//! what [`super::created`] records as this run's.
//!
//! The image is named by its blocks digest (`kiln:image-blocks-sha256`); the whole disk's sha256
//! is tagged too when the build made it (`--sha256`). What an earlier kiln published under the
//! sha256 alone is found through [`super::earlier`], which hashes the disk only when such an
//! image holds the AMI name.

use super::created::{self, Made};
use super::distribute::{self, DistributeError, Grant};
use super::earlier::{self, WholeDiskSha256};
use super::guard::Guard;
use super::images::{self, AmiInfo, Query};
use super::parent;
use super::retry::{Retrier, RetryPolicy};
use super::snapshot::SnapshotSpec;
use super::upload::{self, UploadOptions};
use super::{connect, copy, kiln_tags, register, AwsOptions, Clients, ConnectError, ImageIdentity};
use crate::pipeline::{self, BuildError, BuildOptions, BuildOutput};
use crate::recipe::{Ami, Arch, Deprecation, Pos, Recipe, RecipeError};
use crate::sink::ebs::{UploadReport, UploadStats};
use futures::StreamExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::Handle;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Recipe(#[from] RecipeError),
    #[error("{0}: the recipe has no [ami] table; add one to publish an AMI")]
    NoAmi(PathBuf),
    #[error("{pos}: public = true makes the AMI launchable by every AWS account; expected --allow-public to confirm it")]
    PublicNotAllowed { pos: Pos },
    #[error(
        "{pos}: the region {region:?} is listed twice in [ami] regions; expected each region once"
    )]
    DuplicateRegion { pos: Pos, region: String },
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error("the tests failed, so nothing was published: {0}")]
    Test(String),
    #[error(transparent)]
    Connect(#[from] ConnectError),
}

/// What to publish: an image file built from a recipe.
#[derive(Debug, Clone)]
pub struct Target {
    pub ami: Ami,
    pub arch: Arch,
    pub identity: ImageIdentity,
    pub image: PathBuf,
    pub size: u64,
}

/// How to publish.
#[derive(Debug, Clone)]
pub struct PublishOptions {
    /// The profile; the region is used only when `[ami] regions` is empty.
    pub aws: AwsOptions,
    pub upload: UploadOptions,
    /// Regions copied into at once.
    pub copy_concurrency: usize,
    /// How long to wait for a registration or a copy to become `available`.
    pub wait_timeout: Duration,
    /// How every AWS call is retried.
    pub retry: RetryPolicy,
    /// The parent of the snapshot an upload makes (see [`super::parent`]).
    pub parent: parent::Request,
}

impl Default for PublishOptions {
    fn default() -> Self {
        PublishOptions {
            aws: AwsOptions::default(),
            upload: UploadOptions::default(),
            copy_concurrency: 8,
            wait_timeout: Duration::from_secs(7200),
            retry: RetryPolicy::default(),
            parent: parent::Request::none(),
        }
    }
}

/// Callbacks to the caller, which draws progress.
pub struct Hooks<'a> {
    /// A line of progress about one region.
    pub event: &'a (dyn Fn(&str, &str) + Send + Sync),
    /// The upload's counters, once the snapshot exists.
    pub on_upload_start: &'a dyn Fn(&str, Arc<UploadStats>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// kiln made the image in this run.
    Created,
    /// It was there already (found by its tags).
    Reused,
    Failed,
}

/// What exists in one region after publishing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionResult {
    pub region: String,
    pub outcome: Outcome,
    pub image_id: Option<String>,
    pub snapshot_id: Option<String>,
    /// The image's state (`available`), or `failed`.
    pub state: String,
    /// Why it failed, and what was cleaned up.
    pub error: Option<String>,
}

#[derive(Debug, Clone)]
pub struct PublishReport {
    /// The image published: its blocks digest, and its sha256 if the build made it or an
    /// earlier kiln's image had to be compared by it.
    pub identity: ImageIdentity,
    /// In the order of `[ami] regions`.
    pub regions: Vec<RegionResult>,
    /// When this run uploaded the disk.
    pub upload: Option<UploadReport>,
}

impl PublishReport {
    pub fn ok(&self) -> bool {
        self.regions.iter().all(|r| r.outcome != Outcome::Failed)
    }
}

/// The recipe's `[ami]`, refused when it cannot be published as it stands: missing, `public`
/// without `allow_public`, or a region listed twice. Runs before anything is built or uploaded.
pub fn check_recipe(recipe: &Recipe, allow_public: bool) -> Result<&Ami, PublishError> {
    let ami = recipe
        .ami
        .as_ref()
        .ok_or_else(|| PublishError::NoAmi(recipe.path.clone()))?;
    if let (Some(pos), false) = (&ami.public_pos, allow_public) {
        return Err(PublishError::PublicNotAllowed { pos: pos.clone() });
    }
    for (i, r) in ami.regions.iter().enumerate() {
        if ami.regions[..i].contains(r) {
            return Err(PublishError::DuplicateRegion {
                pos: ami.pos.clone(),
                region: r.clone(),
            });
        }
    }
    Ok(ami)
}

/// The whole of `kiln publish`: checks the recipe, builds the image file, runs `test` on it
/// (the boot test; the caller supplies it), then [`publish`]es. Call outside the runtime.
pub fn build_test_publish(
    handle: &Handle,
    recipe_path: &Path,
    build: BuildOptions,
    allow_public: bool,
    test: &dyn Fn(&BuildOutput) -> Result<(), String>,
    opts: &PublishOptions,
    hooks: &Hooks,
) -> Result<PublishReport, PublishError> {
    let recipe = Recipe::load_with(recipe_path, &build.trust)?;
    let ami = check_recipe(&recipe, allow_public)?.clone();
    // The image is named by its blocks digest, which every build computes; the whole disk's
    // sha256 only if `build.sha256` asks for it.
    let out = pipeline::build(recipe_path, build)?;
    test(&out).map_err(PublishError::Test)?;
    let m = &out.manifest;
    let disk = m.image.as_ref().ok_or_else(|| BuildError::Output {
        path: out.image.clone(),
        source: std::io::Error::other("the build wrote no raw image to publish"),
    })?;
    let target = Target {
        ami,
        arch: recipe.image.arch,
        identity: ImageIdentity {
            name: m.name.clone(),
            version: m.version.clone(),
            blocks: disk.blocks_sha256().map(str::to_string),
            sha256: disk.sha256.clone(),
        },
        image: out.image.clone(),
        size: disk.size,
    };
    publish(handle, &target, opts, hooks)
}

/// The tags every published image and snapshot carries: kiln's, then `[ami.tags]`.
pub fn wanted_tags(target: &Target) -> Vec<(String, String)> {
    let mut tags = kiln_tags(&target.identity);
    for (k, v) in &target.ami.tags {
        tags.retain(|(t, _)| t != k);
        tags.push((k.clone(), v.clone()));
    }
    tags
}

/// Publishes `target` into every region of `[ami] regions` (or the configured region). Region
/// failures are in the report; only a failure to connect at all is an error. Call outside the
/// runtime (the upload blocks on `handle`).
pub fn publish(
    handle: &Handle,
    target: &Target,
    opts: &PublishOptions,
    hooks: &Hooks,
) -> Result<PublishReport, PublishError> {
    let regions = match target.ami.regions.is_empty() {
        false => target.ami.regions.clone(),
        true => vec![handle.block_on(connect(&opts.aws))?.region],
    };
    let retrier = Retrier::new(opts.retry.clone());
    let first = handle.block_on(connect_to(&opts.aws, &regions[0]))?;
    let tags = wanted_tags(target);
    let sha = WholeDiskSha256::of_file(target.identity.sha256.clone(), target.image.clone());
    let mut report = PublishReport {
        identity: target.identity.clone(),
        regions: Vec::new(),
        upload: None,
    };
    let found = source(handle, &first, &retrier, target, &sha, opts, hooks, &tags);
    report.identity.sha256 = sha.value();
    let (source, made) = match found {
        Ok((info, made, upload)) => {
            report.upload = upload;
            (info, made)
        }
        Err(e) => {
            (hooks.event)(&regions[0], &format!("failed: {e}"));
            report.regions.push(failed(&regions[0], e));
            for r in &regions[1..] {
                let why = format!("not attempted: there is no image in {}", regions[0]);
                report.regions.push(failed(r, why));
            }
            return Ok(report);
        }
    };
    let deprecate_at = target.ami.deprecation.map(|d| match d {
        // Counted from the image's creation as EC2 records it, not from this run: every region
        // and every re-publish of the same image then agree on one time. It is an AWS-side
        // schedule, not image content, so the build's reproducibility is untouched.
        Deprecation::After(secs) => {
            let created = source
                .creation_date
                .as_deref()
                .and_then(|c| crate::recipe::parse_utc(c).ok());
            created.unwrap_or_else(unix_now) + secs
        }
        Deprecation::At(t) => t,
    });
    let fin = Finalize {
        tags: &tags,
        grants: distribute::grants(&target.ami.shares),
        deprecate_at,
    };
    let n = opts.copy_concurrency.max(1);
    let copies: Vec<RegionResult> = handle.block_on(async {
        futures::stream::iter(&regions[1..])
            .map(|r| copy_region(r, &source, target, &sha, opts, hooks, &retrier, &fin))
            .buffer_unordered(n)
            .collect()
            .await
    });
    report.identity.sha256 = sha.value();
    // The source is finalized last: if that fails and it is removed, no copy is still reading it.
    let first_result = handle.block_on(finalize_or_remove(
        &first, &retrier, source, made, &fin, hooks,
    ));
    report.regions.push(first_result);
    for r in &regions[1..] {
        if let Some(c) = copies.iter().find(|c| c.region == *r) {
            report.regions.push(c.clone());
        }
    }
    Ok(report)
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn failed(region: &str, error: String) -> RegionResult {
    RegionResult {
        region: region.to_string(),
        outcome: Outcome::Failed,
        image_id: None,
        snapshot_id: None,
        state: "failed".into(),
        error: Some(error),
    }
}

async fn connect_to(aws: &AwsOptions, region: &str) -> Result<Clients, ConnectError> {
    connect(&AwsOptions {
        region: Some(region.to_string()),
        profile: aws.profile.clone(),
    })
    .await
}

/// What the snapshot of `target` is started with (the same as `kiln upload`'s).
pub fn snapshot_spec(target: &Target) -> SnapshotSpec {
    let mut spec = SnapshotSpec::for_image(
        &target.identity,
        target.size,
        target.ami.encrypted,
        target.ami.kms_key_arn.clone(),
    );
    spec.tags
        .push((parent::TAG_ARCH.into(), target.arch.as_str().into()));
    spec
}

/// The image in the first region: found by its tags (or, published by an earlier kiln, through
/// `sha`), or uploaded and registered. Returns it `available`, what this run made of it, and the
/// upload's report. The AMI name is checked before anything is uploaded: if another image holds
/// it, registration could only fail.
#[allow(clippy::too_many_arguments)]
fn source(
    handle: &Handle,
    clients: &Clients,
    retrier: &Retrier,
    target: &Target,
    sha: &WholeDiskSha256,
    opts: &PublishOptions,
    hooks: &Hooks,
    tags: &[(String, String)],
) -> Result<(AmiInfo, Option<Made>, Option<UploadReport>), String> {
    let region = clients.region.as_str();
    let say = |m: &str| (hooks.event)(region, m);
    let progress = |m: &str| say(m);
    let query = Query::disk(&target.identity, &target.ami.name);
    let mut existing = handle
        .block_on(images::find_usable(clients, retrier, &query))
        .map_err(|e| e.to_string())?;
    let holder = match existing {
        Some(_) => None,
        None => handle
            .block_on(register::name_holder(clients, retrier, &target.ami.name))
            .map_err(|e| e.to_string())?,
    };
    if let Some(h) = &holder {
        if handle.block_on(earlier::is_earlier_publish(
            h,
            &target.identity,
            sha,
            &progress,
        ))? {
            existing = Some(h.clone());
        }
    }
    if let Some(found) = existing {
        say(&format!("found {} ({})", found.image_id, found.state));
        let info = handle
            .block_on(distribute::wait_available(
                clients,
                retrier,
                &found.image_id,
                opts.wait_timeout,
                &progress,
            ))
            .map_err(|e| e.to_string())?;
        return Ok((info, None, None));
    }
    if let Some(h) = holder {
        return Err(register::RegisterError::NameTaken {
            name: target.ami.name.clone(),
            region: clients.region.clone(),
            holder: register::describe_holder(Some(&h)),
        }
        .to_string());
    }
    let mut spec = snapshot_spec(target);
    let parent = handle
        .block_on(parent::choose(
            clients,
            retrier,
            &opts.parent,
            &target.identity.name,
            Some(target.arch.as_str()),
            &mut spec,
            opts.upload.workers,
            &|m| say(m),
        ))
        .map_err(|e| e.to_string())?;
    let guard = Guard::new(handle, clients, retrier);
    let report = upload::upload_with(
        handle,
        clients,
        retrier,
        &spec,
        &opts.upload,
        &guard,
        hooks.on_upload_start,
        |sink| {
            if let Some(p) = &parent {
                sink.set_parent(&p.snapshot_id, &p.map);
            }
            upload::write_file(&target.image, sink)
        },
    )
    .map_err(|e| e.to_string())?;
    let registered = register_snapshot(
        handle,
        clients,
        retrier,
        &target.ami,
        target.arch,
        &report.snapshot_id,
        tags,
        opts.wait_timeout,
        &progress,
        &guard,
    )?;
    let made = guard.image().map(|image| Made {
        image,
        snapshot: guard.snapshot(),
    });
    guard.finish();
    Ok((registered, made, Some(report)))
}

/// Registers an AMI from the completed snapshot `snap`, tags it and waits until it is
/// `available`, recording the image in `guard` (which also holds the snapshot, if this run made
/// it). Nothing is left half made: if registration fails, or the image never becomes
/// available, `guard` removes what this run made (the image; the snapshot only if this run
/// uploaded it: a snapshot the user named is never touched); Ctrl-C at any point does the
/// same. The error says what was removed (or what to remove by hand).
///
/// If the AMI name is already taken by an image of this very snapshot (an earlier `kiln
/// register` of it), that image is the answer; any other holder is an error.
#[allow(clippy::too_many_arguments)]
pub fn register_snapshot(
    handle: &Handle,
    clients: &Clients,
    retrier: &Retrier,
    ami: &crate::recipe::Ami,
    arch: crate::recipe::Arch,
    snap: &str,
    tags: &[(String, String)],
    wait_timeout: std::time::Duration,
    progress: &(dyn Fn(&str) + Send + Sync),
    guard: &Guard,
) -> Result<AmiInfo, String> {
    let undone = |e: String| -> String {
        match handle.block_on(guard.undo()) {
            Ok(Some(done)) => format!("{e}; {done}"),
            Ok(None) => e,
            Err(left) => format!("{e}; {left}"),
        }
    };
    let holder = handle
        .block_on(register::name_holder(clients, retrier, &ami.name))
        .map_err(|e| undone(e.to_string()))?;
    if let Some(h) = holder {
        if h.root_snapshot_id.as_deref() != Some(snap) {
            let e = register::RegisterError::NameTaken {
                name: ami.name.clone(),
                region: clients.region.clone(),
                holder: register::describe_holder(Some(&h)),
            };
            return Err(undone(e.to_string()));
        }
        progress(&format!(
            "{} ({}) is registered from {snap} already",
            h.image_id, h.state
        ));
        return handle
            .block_on(distribute::wait_available(
                clients,
                retrier,
                &h.image_id,
                wait_timeout,
                progress,
            ))
            .map_err(|e| e.to_string());
    }
    let made = handle
        .block_on(register::register(
            clients, retrier, ami, arch, snap, tags, guard,
        ))
        .map_err(|e| undone(e.to_string()))?;
    let image_id = made.id().to_string();
    progress(&format!("registered {image_id} from {snap}"));
    let ready = handle.block_on(async {
        // Tagged at once, so that a re-run finds it even if this run stops here (not every
        // endpoint applies RegisterImage's TagSpecifications; AWS does, and then this sends
        // nothing).
        let info = images::describe_fresh(clients, retrier, &image_id).await?;
        distribute::ensure_tags(clients, retrier, &info, tags).await?;
        distribute::wait_available(clients, retrier, &image_id, wait_timeout, progress).await
    });
    ready.map_err(|e| undone(e.to_string()))
}

/// What every region's image gets.
struct Finalize<'a> {
    tags: &'a [(String, String)],
    grants: Vec<Grant>,
    deprecate_at: Option<i64>,
}

async fn finalize(
    clients: &Clients,
    retrier: &Retrier,
    info: &AmiInfo,
    fin: &Finalize<'_>,
) -> Result<(), DistributeError> {
    distribute::ensure_tags(clients, retrier, info, fin.tags).await?;
    distribute::set_grants(clients, retrier, info, &fin.grants, true).await?;
    if let Some(at) = fin.deprecate_at {
        let current = info
            .deprecation_time
            .as_deref()
            .and_then(|t| crate::recipe::parse_utc(t).ok());
        if let Some(t) = distribute::effective_deprecation(at, unix_now(), current) {
            distribute::set_deprecation(clients, retrier, info, Some(t)).await?;
        }
    }
    Ok(())
}

/// Finalizes `info`; on failure removes what this run made of it (`made`), and leaves an image
/// an earlier run made as it is.
async fn finalize_or_remove(
    clients: &Clients,
    retrier: &Retrier,
    info: AmiInfo,
    made: Option<Made>,
    fin: &Finalize<'_>,
    hooks: &Hooks<'_>,
) -> RegionResult {
    match finalize(clients, retrier, &info, fin).await {
        Ok(()) => {
            (hooks.event)(&info.region, &format!("{} is ready", info.image_id));
            RegionResult {
                region: info.region.clone(),
                outcome: if made.is_some() {
                    Outcome::Created
                } else {
                    Outcome::Reused
                },
                snapshot_id: info
                    .root_snapshot_id
                    .clone()
                    .or_else(|| info.snapshot_ids.first().cloned()),
                image_id: Some(info.image_id),
                state: info.state,
                error: None,
            }
        }
        Err(e) => {
            let Some(made) = made else {
                let why = format!(
                    "{e}; {} (made by an earlier run) was left as it is",
                    info.image_id
                );
                (hooks.event)(&info.region, &format!("failed: {why}"));
                return RegionResult {
                    image_id: Some(info.image_id.clone()),
                    snapshot_id: info.root_snapshot_id.clone(),
                    state: info.state.clone(),
                    ..failed(&info.region, why)
                };
            };
            let why = format!(
                "{e}; {}",
                created::remove_made(clients, retrier, &made).await
            );
            (hooks.event)(&info.region, &format!("failed: {why}"));
            failed(&info.region, why)
        }
    }
}

/// One other region: find or copy, wait, finalize; a copy made here that then fails is removed.
#[allow(clippy::too_many_arguments)]
async fn copy_region(
    region: &str,
    source: &AmiInfo,
    target: &Target,
    sha: &WholeDiskSha256,
    opts: &PublishOptions,
    hooks: &Hooks<'_>,
    retrier: &Retrier,
    fin: &Finalize<'_>,
) -> RegionResult {
    let clients = match connect_to(&opts.aws, region).await {
        Ok(c) => c,
        Err(e) => return failed(region, e.to_string()),
    };
    let progress = |m: &str| (hooks.event)(region, m);
    let copy = copy::ensure_copy(
        &clients,
        retrier,
        source,
        &target.identity,
        sha,
        target.ami.description.as_deref(),
        fin.tags,
        opts.wait_timeout,
        &progress,
    )
    .await;
    match copy {
        Ok((info, made)) => {
            let made = made.map(|image| Made {
                image,
                snapshot: None,
            });
            finalize_or_remove(&clients, retrier, info, made, fin, hooks).await
        }
        Err(e) => {
            let why = e.to_string();
            (hooks.event)(region, &format!("failed: {why}"));
            failed(region, why)
        }
    }
}
