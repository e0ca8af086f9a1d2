//! kiln's AMIs, found by the kiln tags: look up, list, deregister with their snapshots, prune.
//!
//! kiln only manages images it made. An image counts as kiln's when it carries `kiln:name`,
//! `kiln:version` and `kiln:image-sha256` (see [`super::kiln_tags`]); every function here that
//! changes anything refuses other images. Queries are always `Owners=self`.

use super::retry::{CallError, Cause, Retrier, RetryPolicy};
use super::{Clients, ImageIdentity};
use aws_sdk_ec2::types::{Filter, Image};
use std::cmp::Ordering;
use tokio::time::Instant;

pub const TAG_NAME: &str = "kiln:name";
pub const TAG_VERSION: &str = "kiln:version";
pub const TAG_SHA256: &str = "kiln:image-sha256";
pub const TAG_KILN_VERSION: &str = "kiln:kiln-version";

#[derive(Debug, thiserror::Error)]
pub enum ImagesError {
    #[error(transparent)]
    Call(#[from] CallError),
    #[error("image {id} does not exist in {region} (or is not owned by this account)")]
    NotFound { id: String, region: String },
    #[error("image {id} in {region} has no kiln tags ({TAG_NAME}, {TAG_VERSION}, {TAG_SHA256}); kiln only manages images it made")]
    NotKiln { id: String, region: String },
}

/// What EC2 says about one image, with the fields kiln uses.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AmiInfo {
    pub region: String,
    pub image_id: String,
    /// The AMI's own name (unique per account and region).
    pub ami_name: String,
    pub state: String,
    pub architecture: Option<String>,
    pub creation_date: Option<String>,
    pub deprecation_time: Option<String>,
    pub public: bool,
    /// The root device's snapshot, when EC2 lists one.
    pub root_snapshot_id: Option<String>,
    /// Every snapshot in the block device mapping, root first.
    pub snapshot_ids: Vec<String>,
    #[serde(skip)]
    pub tags: Vec<(String, String)>,
}

impl AmiInfo {
    pub fn from_ec2(region: &str, img: &Image) -> AmiInfo {
        let root = img.root_device_name().unwrap_or("");
        let mut snapshot_ids: Vec<String> = Vec::new();
        let mut root_snapshot_id = None;
        for m in img.block_device_mappings() {
            if let Some(s) = m.ebs().and_then(|e| e.snapshot_id()) {
                if m.device_name() == Some(root) {
                    root_snapshot_id = Some(s.to_string());
                    snapshot_ids.insert(0, s.to_string());
                } else {
                    snapshot_ids.push(s.to_string());
                }
            }
        }
        snapshot_ids.dedup();
        AmiInfo {
            region: region.to_string(),
            image_id: img.image_id().unwrap_or_default().to_string(),
            ami_name: img.name().unwrap_or_default().to_string(),
            state: img.state().map(|s| s.as_str()).unwrap_or("").to_string(),
            architecture: img.architecture().map(|a| a.as_str().to_string()),
            creation_date: img.creation_date().map(str::to_string),
            deprecation_time: img.deprecation_time().map(str::to_string),
            public: img.public().unwrap_or(false),
            root_snapshot_id,
            snapshot_ids,
            tags: img
                .tags()
                .iter()
                .filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())))
                .collect(),
        }
    }

    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The kiln tags, if the image has all of them: only then is it kiln's.
    pub fn identity(&self) -> Option<ImageIdentity> {
        Some(ImageIdentity {
            name: self.tag(TAG_NAME)?.to_string(),
            version: self.tag(TAG_VERSION)?.to_string(),
            sha256: self.tag(TAG_SHA256)?.to_string(),
        })
    }
}

/// Which of kiln's images to find. Every field given must match.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// `kiln:name`.
    pub name: Option<String>,
    /// `kiln:image-sha256`.
    pub sha256: Option<String>,
    /// The AMI name.
    pub ami_name: Option<String>,
}

/// A policy under which "does not exist" is retried for a while: a just-made image or copy may
/// not be visible to DescribeImages at once (EC2 is eventually consistent).
fn fresh(retrier: &Retrier) -> Retrier {
    retrier.with_policy(RetryPolicy {
        not_found_until: Some(Instant::now() + super::retry::NOT_FOUND_WINDOW),
        ..retrier.policy.clone()
    })
}

/// DescribeImages for one image; `None` if EC2 says it does not exist.
pub async fn describe(
    clients: &Clients,
    retrier: &Retrier,
    image_id: &str,
) -> Result<Option<AmiInfo>, CallError> {
    let r = retrier
        .call("DescribeImages", || {
            clients.ec2.describe_images().image_ids(image_id).send()
        })
        .await;
    match r {
        Ok(out) => Ok(out
            .images()
            .iter()
            .find(|i| i.image_id() == Some(image_id))
            .map(|i| AmiInfo::from_ec2(&clients.region, i))),
        Err(e) if matches!(e.cause, Cause::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// [`describe`], retrying "does not exist" for a while (for an image kiln just made).
pub async fn describe_fresh(
    clients: &Clients,
    retrier: &Retrier,
    image_id: &str,
) -> Result<AmiInfo, ImagesError> {
    let out = fresh(retrier)
        .call("DescribeImages", || {
            clients.ec2.describe_images().image_ids(image_id).send()
        })
        .await?;
    out.images()
        .iter()
        .find(|i| i.image_id() == Some(image_id))
        .map(|i| AmiInfo::from_ec2(&clients.region, i))
        .ok_or_else(|| ImagesError::NotFound {
            id: image_id.to_string(),
            region: clients.region.clone(),
        })
}

/// One of kiln's images by id; refuses images without the kiln tags.
pub async fn get(
    clients: &Clients,
    retrier: &Retrier,
    image_id: &str,
) -> Result<AmiInfo, ImagesError> {
    let info = describe(clients, retrier, image_id)
        .await?
        .filter(|i| i.state != "deregistered")
        .ok_or_else(|| ImagesError::NotFound {
            id: image_id.to_string(),
            region: clients.region.clone(),
        })?;
    if info.identity().is_none() {
        return Err(ImagesError::NotKiln {
            id: image_id.to_string(),
            region: clients.region.clone(),
        });
    }
    Ok(info)
}

/// kiln's images in the client's region that match `q`, sorted by name, version (newest last)
/// and creation date. Only images carrying all the kiln tags are returned.
pub async fn find(
    clients: &Clients,
    retrier: &Retrier,
    q: &Query,
) -> Result<Vec<AmiInfo>, CallError> {
    let filter = |name: &str, value: &str| Filter::builder().name(name).values(value).build();
    let mut filters = vec![filter("tag-key", TAG_SHA256)];
    if let Some(n) = &q.name {
        filters.push(filter(&format!("tag:{TAG_NAME}"), n));
    }
    if let Some(s) = &q.sha256 {
        filters.push(filter(&format!("tag:{TAG_SHA256}"), s));
    }
    if let Some(n) = &q.ami_name {
        filters.push(filter("name", n));
    }
    let mut found = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let out = retrier
            .call("DescribeImages", || {
                clients
                    .ec2
                    .describe_images()
                    .owners("self")
                    .set_filters(Some(filters.clone()))
                    .set_next_token(next.clone())
                    .send()
            })
            .await?;
        found.extend(
            out.images()
                .iter()
                .map(|i| AmiInfo::from_ec2(&clients.region, i)),
        );
        match out.next_token() {
            Some(t) if !t.is_empty() => next = Some(t.to_string()),
            _ => break,
        }
    }
    // The filters ran on the server; check again here, because kiln must never act on an image
    // that is not its own.
    found.retain(|i| {
        i.identity().is_some_and(|id| {
            q.name.as_ref().is_none_or(|n| *n == id.name)
                && q.sha256.as_ref().is_none_or(|s| *s == id.sha256)
        }) && q.ami_name.as_ref().is_none_or(|n| *n == i.ami_name)
            && i.state != "deregistered"
    });
    found.sort_by(newest_last);
    Ok(found)
}

/// Orders kiln images by name, then version, then creation date (oldest first).
pub fn newest_last(a: &AmiInfo, b: &AmiInfo) -> Ordering {
    let (ia, ib) = (a.identity(), b.identity());
    let name = |i: &Option<ImageIdentity>| i.as_ref().map(|i| i.name.clone()).unwrap_or_default();
    let ver = |i: &Option<ImageIdentity>| i.as_ref().map(|i| i.version.clone()).unwrap_or_default();
    name(&ia)
        .cmp(&name(&ib))
        .then_with(|| compare_versions(&ver(&ia), &ver(&ib)))
        .then_with(|| a.creation_date.cmp(&b.creation_date))
        .then_with(|| a.image_id.cmp(&b.image_id))
}

/// Compares versions the way people number releases: SemVer where it applies (`1.10.0` >
/// `1.9.2`, `2.0.0-rc.1` < `2.0.0`, `+build` ignored), and otherwise a natural order in which
/// runs of digits compare as numbers (`2024.10` > `2024.9`, `v10` > `v9`).
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let strip = |v: &str| -> (String, Option<String>) {
        let v = v.split('+').next().unwrap_or("");
        match v.split_once('-') {
            Some((core, pre)) => (core.to_string(), Some(pre.to_string())),
            None => (v.to_string(), None),
        }
    };
    let ((ca, pa), (cb, pb)) = (strip(a), strip(b));
    natural(&ca, &cb)
        .then_with(|| match (&pa, &pb) {
            (None, None) => Ordering::Equal,
            // A pre-release comes before its release.
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(x), Some(y)) => natural(x, y),
        })
        .then_with(|| a.cmp(b))
}

/// Natural order: digit runs compare numerically, everything else byte by byte.
fn natural(a: &str, b: &str) -> Ordering {
    fn chunks(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let b = s.as_bytes();
        let mut i = 0;
        while i < b.len() {
            let digit = b[i].is_ascii_digit();
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() == digit {
                i += 1;
            }
            out.push((digit, &s[start..i]));
        }
        out
    }
    let (ca, cb) = (chunks(a), chunks(b));
    for (x, y) in ca.iter().zip(cb.iter()) {
        let o = match (x, y) {
            ((true, x), (true, y)) => {
                let (x, y) = (x.trim_start_matches('0'), y.trim_start_matches('0'));
                x.len().cmp(&y.len()).then_with(|| x.cmp(y))
            }
            // A number sorts before words: `1.0.1` > `1.0.beta` is not guessable, but this
            // at least keeps the order total and stable.
            ((true, _), (false, _)) => Ordering::Less,
            ((false, _), (true, _)) => Ordering::Greater,
            ((false, x), (false, y)) => x.cmp(y),
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    ca.len().cmp(&cb.len())
}

/// What pruning one region decides.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrunePlan {
    pub keep: Vec<AmiInfo>,
    pub remove: Vec<AmiInfo>,
    /// Images still `pending` (a publish may be making them): neither kept nor removed.
    pub skipped: Vec<AmiInfo>,
}

/// Keeps the newest `keep` usable images (by version, then creation date) of each
/// architecture among `images` (kiln's images of one name in one region); the rest go. A
/// failed image never counts toward `keep` (keeping it would keep nothing anyone can launch):
/// it always goes.
pub fn prune_plan(images: &[AmiInfo], keep: usize) -> PrunePlan {
    let mut plan = PrunePlan::default();
    let mut by_arch: std::collections::BTreeMap<Option<String>, Vec<AmiInfo>> = Default::default();
    for i in images {
        if i.state == "pending" {
            plan.skipped.push(i.clone());
        } else if is_failed(i) {
            plan.remove.push(i.clone());
        } else {
            by_arch
                .entry(i.architecture.clone())
                .or_default()
                .push(i.clone());
        }
    }
    for (_, mut v) in by_arch {
        v.sort_by(|a, b| newest_last(b, a));
        let rest = v.split_off(keep.min(v.len()));
        plan.keep.extend(v);
        plan.remove.extend(rest);
    }
    plan
}

/// One step of a deregistration, done or (in a dry run) planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Deregister { region: String, image_id: String },
    DeleteSnapshot { region: String, snapshot_id: String },
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::Deregister { region, image_id } => write!(f, "deregister {image_id} in {region}"),
            Step::DeleteSnapshot {
                region,
                snapshot_id,
            } => write!(f, "delete snapshot {snapshot_id} in {region}"),
        }
    }
}

/// The steps that deregistering `image` takes.
pub fn deregister_steps(image: &AmiInfo, keep_snapshots: bool) -> Vec<Step> {
    let mut steps = vec![Step::Deregister {
        region: image.region.clone(),
        image_id: image.image_id.clone(),
    }];
    if !keep_snapshots {
        steps.extend(image.snapshot_ids.iter().map(|s| Step::DeleteSnapshot {
            region: image.region.clone(),
            snapshot_id: s.clone(),
        }));
    }
    steps
}

/// Deregisters `image` (which must be kiln's) and, unless `keep_snapshots`, deletes the
/// snapshots its block device mapping names. Returns the steps taken; a dry run returns them
/// without making a single mutating call.
pub async fn deregister(
    clients: &Clients,
    retrier: &Retrier,
    image: &AmiInfo,
    keep_snapshots: bool,
    dry_run: bool,
) -> Result<Vec<Step>, ImagesError> {
    if image.identity().is_none() {
        return Err(ImagesError::NotKiln {
            id: image.image_id.clone(),
            region: image.region.clone(),
        });
    }
    let steps = deregister_steps(image, keep_snapshots);
    if dry_run {
        return Ok(steps);
    }
    remove(
        clients,
        retrier,
        &image.image_id,
        &image.snapshot_ids,
        keep_snapshots,
    )
    .await?;
    Ok(steps)
}

/// DeregisterImage, then DeleteSnapshot for each of `snapshots` (unless `keep_snapshots`): what
/// [`deregister`] does once the user asked for it. (What a failed run made is removed by
/// [`super::created`], which takes nothing else.)
pub async fn remove(
    clients: &Clients,
    retrier: &Retrier,
    image_id: &str,
    snapshots: &[String],
    keep_snapshots: bool,
) -> Result<(), CallError> {
    super::created::deregister_id(clients, retrier, image_id, false).await?;
    if keep_snapshots {
        return Ok(());
    }
    for s in snapshots {
        super::created::delete_snapshot_id(clients, retrier, s, false).await?;
    }
    Ok(())
}

/// The usable image `q` finds (`available`, else `pending`), if any. Images that EC2 marks
/// failed are left as they are: an earlier run made them, and only the user removes them
/// (`kiln images deregister`, `prune`); if one holds the AMI name, the name check says so.
pub async fn find_usable(
    clients: &Clients,
    retrier: &Retrier,
    q: &Query,
) -> Result<Option<AmiInfo>, CallError> {
    let found = find(clients, retrier, q).await?;
    let newest = |state: &str| found.iter().rev().find(|i| i.state == state).cloned();
    Ok(newest("available").or_else(|| newest("pending")))
}

/// Whether EC2 says the image failed (it will never become available).
pub fn is_failed(i: &AmiInfo) -> bool {
    matches!(i.state.as_str(), "failed" | "error" | "invalid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_order_like_releases() {
        let sorted = [
            "0.9",
            "1.0.0-alpha",
            "1.0.0-alpha.2",
            "1.0.0-alpha.10",
            "1.0.0-rc.1",
            "1.0.0",
            "1.0.1",
            "1.2.0",
            "1.9.9",
            "1.10.0",
            "2",
            "2024.9",
            "2024.10.1",
        ];
        for (i, a) in sorted.iter().enumerate() {
            for (j, b) in sorted.iter().enumerate() {
                assert_eq!(compare_versions(a, b), i.cmp(&j), "{a} vs {b}");
            }
        }
        assert_eq!(compare_versions("v10", "v9"), Ordering::Greater);
        assert_eq!(compare_versions("1.0.0+b2", "1.0.0+b1"), Ordering::Greater);
        assert_eq!(compare_versions("x", "x"), Ordering::Equal);
    }

    fn img(id: &str, version: &str, created: &str, arch: &str, state: &str) -> AmiInfo {
        AmiInfo {
            region: "r".into(),
            image_id: id.into(),
            ami_name: id.into(),
            state: state.into(),
            architecture: Some(arch.into()),
            creation_date: Some(created.into()),
            deprecation_time: None,
            public: false,
            root_snapshot_id: None,
            snapshot_ids: vec![format!("snap-{id}")],
            tags: vec![
                (TAG_NAME.into(), "web".into()),
                (TAG_VERSION.into(), version.into()),
                (TAG_SHA256.into(), id.into()),
            ],
        }
    }

    #[test]
    fn prune_keeps_the_newest_per_architecture() {
        let images = vec![
            img(
                "a",
                "1.9.0",
                "2024-01-03T00:00:00.000Z",
                "x86_64",
                "available",
            ),
            img(
                "b",
                "1.10.0",
                "2024-01-01T00:00:00.000Z",
                "x86_64",
                "available",
            ),
            img(
                "c",
                "1.10.0",
                "2024-01-02T00:00:00.000Z",
                "x86_64",
                "available",
            ),
            img(
                "d",
                "1.0.0",
                "2024-01-01T00:00:00.000Z",
                "arm64",
                "available",
            ),
            img(
                "e",
                "2.0.0",
                "2024-01-05T00:00:00.000Z",
                "x86_64",
                "pending",
            ),
            img("f", "0.1.0", "2023-01-05T00:00:00.000Z", "x86_64", "failed"),
        ];
        let ids = |v: &[AmiInfo]| {
            let mut v: Vec<_> = v.iter().map(|i| i.image_id.clone()).collect();
            v.sort();
            v
        };
        let p = prune_plan(&images, 1);
        assert_eq!(ids(&p.keep), ["c", "d"]);
        assert_eq!(ids(&p.remove), ["a", "b", "f"]);
        assert_eq!(ids(&p.skipped), ["e"]);
        let p = prune_plan(&images, 2);
        assert_eq!(ids(&p.keep), ["b", "c", "d"]);
        assert_eq!(ids(&p.remove), ["a", "f"]);
        // The failed image is the newest version here, and still never kept.
        let mut newest_failed = images.clone();
        newest_failed.push(img(
            "g",
            "9.0.0",
            "2025-01-01T00:00:00.000Z",
            "x86_64",
            "failed",
        ));
        let p = prune_plan(&newest_failed, 10);
        assert_eq!(ids(&p.remove), ["f", "g"]);
        assert_eq!(ids(&p.keep), ["a", "b", "c", "d"]);
        assert_eq!(prune_plan(&images, 0).keep.len(), 0);
    }

    #[test]
    fn deregistering_is_refused_for_foreign_images() {
        let mut foreign = img("z", "1", "2024-01-01T00:00:00.000Z", "x86_64", "available");
        foreign.tags.retain(|(k, _)| k != TAG_SHA256);
        assert!(foreign.identity().is_none());
        let steps = deregister_steps(&img("y", "1", "", "x86_64", "available"), false);
        assert_eq!(steps.len(), 2);
        assert_eq!(steps[1].to_string(), "delete snapshot snap-y in r");
    }
}
