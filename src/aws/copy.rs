//! Copies of an image into other regions (CopyImage), found by what they are or made anew.
//!
//! A copy is found by its tags (the image's digests and the AMI name, `Owners=self`), never
//! through a ClientToken: CopyImage's token is random and this run's own, kept for the retries
//! of that one call, because AWS answers a repeated token with the original result, and a copy
//! an earlier run made and then cleaned up would come back as this run's.
//!
//! And CopyImage's answer is checked, as StartSnapshot's is, before this run counts the image as
//! its own (to tag, to wait for, to remove on failure): the image must have been created no
//! earlier than the request (less SigV4's clock window) and, right after the call, be
//! `pending`. A replayed token, or any answer naming an image that existed before, gets an
//! error and the image is left alone.

use super::created::{self, NewImage, Origin};
use super::distribute::{self, DistributeError};
use super::earlier::{self, WholeDiskSha256};
use super::guard::Guard;
use super::images::{self, AmiInfo};
use super::retry::{CallError, Retrier};
use super::snapshot::CLOCK_SKEW;
use super::{image_and_snapshot_tags, register, Clients, ImageIdentity};
use std::time::{Duration, SystemTime};

/// One CopyImage request, as sent (and, to learn what it made after its answer was lost, sent
/// again: the same ClientToken and parameters are answered with the same copy).
#[derive(Debug, Clone)]
pub struct CopyRequest {
    pub source_image_id: String,
    pub source_region: String,
    pub name: String,
    pub description: Option<String>,
    pub tags: Vec<(String, String)>,
    pub client_token: String,
    /// When this request was made (before its first sending): what it copies is created later.
    pub made_at: SystemTime,
}

impl CopyRequest {
    /// A copy of `source` named as it is, tagged on creation with `tags`, with a new token.
    pub fn of(source: &AmiInfo, description: Option<&str>, tags: &[(String, String)]) -> Self {
        CopyRequest {
            source_image_id: source.image_id.clone(),
            source_region: source.region.clone(),
            name: source.ami_name.clone(),
            description: description.map(str::to_string),
            tags: tags.to_vec(),
            client_token: created::client_token(),
            made_at: SystemTime::now(),
        }
    }
}

/// CopyImage into the client's region, tagged on creation (image and snapshots), then the
/// answer checked ([`check_new`]: created by this request, and `pending` when `fresh`, i.e.
/// right after the call). Returns the copy, which this run made.
pub async fn send(
    clients: &Clients,
    retrier: &Retrier,
    req: &CopyRequest,
    fresh: bool,
) -> Result<NewImage, CallError> {
    let id = send_request(clients, retrier, req).await?;
    let not_ours = |why: String, may: bool| CallError {
        op: "CopyImage".into(),
        message: format!(
            "the answer names {id}, which {why}: not a copy this run made (a reused \
             ClientToken's answer?), so kiln leaves it alone"
        ),
        cause: super::retry::Cause::Fatal,
        attempts: 1,
        earlier_may_have_happened: may,
    };
    // Not found: the copy may still be ours (eventual consistency), so its recovery stays open.
    let info = images::describe_fresh(clients, retrier, &id)
        .await
        .map_err(|e| not_ours(format!("cannot be described ({e})"), true))?;
    check_new(
        &info.state,
        info.creation_date.as_deref(),
        req.made_at,
        fresh,
    )
    .map_err(|why| not_ours(why, false))?;
    Ok(NewImage::new(&id, &clients.region, Origin::Copied))
}

/// Whether the image CopyImage answered with is the one this request made: created no earlier
/// than the request (less the clock skew SigV4 allows), not gone, and `pending` if `fresh`
/// (a copy is `pending` until its snapshots are copied; one answered at once `available` was
/// made before). Like StartSnapshot's check, an answer without a creation time is judged by its
/// state alone.
pub fn check_new(
    state: &str,
    created: Option<&str>,
    made_at: SystemTime,
    fresh: bool,
) -> Result<(), String> {
    if fresh && state != "pending" {
        return Err(format!("is {state}, not a new pending copy"));
    }
    if matches!(state, "deregistered" | "failed" | "error" | "invalid") {
        return Err(format!("is {state}"));
    }
    let Some(c) = created else {
        return Ok(());
    };
    let t = aws_sdk_ec2::primitives::DateTime::from_str(
        c,
        aws_sdk_ec2::primitives::DateTimeFormat::DateTime,
    )
    .ok()
    .and_then(|t| SystemTime::try_from(t).ok())
    .ok_or_else(|| format!("has the creation date {c:?}, not an RFC 3339 time"))?;
    if t + CLOCK_SKEW < made_at {
        let secs = made_at.duration_since(t).map(|d| d.as_secs()).unwrap_or(0);
        return Err(format!(
            "was created {secs}s before this run asked for a copy"
        ));
    }
    Ok(())
}

/// CopyImage as `req` says, retried; the image id of the answer.
async fn send_request(
    clients: &Clients,
    retrier: &Retrier,
    req: &CopyRequest,
) -> Result<String, CallError> {
    let tags = image_and_snapshot_tags(&req.tags);
    let out = retrier
        .call("CopyImage", || {
            let mut b = clients
                .ec2
                .copy_image()
                .source_image_id(&req.source_image_id)
                .source_region(&req.source_region)
                .name(&req.name)
                .client_token(&req.client_token);
            if let Some(d) = &req.description {
                b = b.description(d);
            }
            b.set_tag_specifications(Some(tags.clone())).send()
        })
        .await?;
    match out.image_id {
        Some(id) => Ok(id),
        None => Err(CallError {
            op: "CopyImage".into(),
            message: format!("no image id in the answer from {}", clients.region),
            cause: super::retry::Cause::Fatal,
            attempts: 1,
            earlier_may_have_happened: true,
        }),
    }
}

/// The copy of `source` (the disk `want`) in the client's region, `available`: found by its
/// tags (`want`'s digests and the AMI name), or made with CopyImage and tagged with `tags`. An
/// earlier kiln's copy, tagged by the sha256 alone, is found through `sha` (see
/// [`earlier`]). Returns it, and the copy if this run made it. From before CopyImage until the
/// copy is available a [`Guard`] watches: a copy that fails (or Ctrl-C) is deregistered with
/// the snapshots it made, and the error says so. Another image holding the AMI name is
/// reported, not touched.
#[allow(clippy::too_many_arguments)]
pub async fn ensure_copy(
    clients: &Clients,
    retrier: &Retrier,
    source: &AmiInfo,
    want: &ImageIdentity,
    sha: &WholeDiskSha256,
    description: Option<&str>,
    tags: &[(String, String)],
    timeout: Duration,
    progress: &(dyn Fn(&str) + Send + Sync),
) -> Result<(AmiInfo, Option<NewImage>), DistributeError> {
    let query = images::Query::disk(want, &source.ami_name);
    let mut found = images::find_usable(clients, retrier, &query).await?;
    let holder = match found {
        Some(_) => None,
        None => register::name_holder(clients, retrier, &source.ami_name).await?,
    };
    if let Some(h) = &holder {
        let earlier = earlier::is_earlier_publish(h, want, sha, progress)
            .await
            .map_err(DistributeError::Other)?;
        if earlier {
            found = Some(h.clone());
        }
    }
    if let Some(found) = found {
        progress(&format!("found {} ({})", found.image_id, found.state));
        let info = distribute::wait_available(clients, retrier, &found.image_id, timeout, progress)
            .await?;
        return Ok((info, None));
    }
    if let Some(h) = holder {
        return Err(DistributeError::NameTaken {
            name: source.ami_name.clone(),
            region: clients.region.clone(),
            holder: register::describe_holder(Some(&h)),
        });
    }
    let guard = Guard::new(&tokio::runtime::Handle::current(), clients, retrier);
    let req = CopyRequest::of(source, description, tags);
    guard.copying(&req);
    let made = match send(clients, retrier, &req, true).await {
        Ok(m) => m,
        Err(e) => {
            guard.image_failed(&e);
            return Err(undone(&guard, e.to_string()).await);
        }
    };
    guard.image_made(&made);
    let image_id = made.id().to_string();
    tracing::info!(
        "copying {} from {} to {image_id} in {}",
        source.image_id,
        source.region,
        clients.region
    );
    progress(&format!(
        "copying {} from {} to {image_id}",
        source.image_id, source.region
    ));
    let ready = async {
        // Findable by its tags from the start, so that a re-run finds a copy still in flight
        // (AWS applies CopyImage's TagSpecifications, and then this sends nothing).
        let info = images::describe_fresh(clients, retrier, &image_id).await?;
        distribute::ensure_tags(clients, retrier, &info, tags).await?;
        distribute::wait_available(clients, retrier, &image_id, timeout, progress).await
    };
    match ready.await {
        Ok(info) => {
            guard.finish();
            Ok((info, Some(made)))
        }
        Err(e) => Err(undone(&guard, e.to_string()).await),
    }
}

/// The error for a failed copy, after its guard removed what this run made.
async fn undone(guard: &Guard, cause: String) -> DistributeError {
    let cleanup = match guard.undo().await {
        Ok(Some(done)) => done,
        Ok(None) => "nothing was made".into(),
        Err(left) => left,
    };
    DistributeError::CleanedUp { cause, cleanup }
}
