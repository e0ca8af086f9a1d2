//! Copies of an image into other regions (CopyImage), found by what they are or made anew.
//!
//! A copy is found by its tags (`kiln:image-sha256` and the AMI name, `Owners=self`), never
//! through a ClientToken: CopyImage's token is random and this run's own, kept for the retries
//! of that one call, because AWS answers a repeated token with the original result, and a copy
//! an earlier run made and then cleaned up would come back as this run's.

use super::created::{self, NewImage, Origin};
use super::distribute::{self, DistributeError};
use super::guard::Guard;
use super::images::{self, AmiInfo};
use super::retry::{CallError, Retrier};
use super::{image_and_snapshot_tags, register, Clients};
use std::time::Duration;

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
        }
    }
}

/// CopyImage into the client's region, tagged on creation (image and snapshots). Returns the
/// copy, which this run made.
pub async fn send(
    clients: &Clients,
    retrier: &Retrier,
    req: &CopyRequest,
) -> Result<NewImage, CallError> {
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
        Some(id) => Ok(NewImage::new(&id, &clients.region, Origin::Copied)),
        None => Err(CallError {
            op: "CopyImage".into(),
            message: format!("no image id in the answer from {}", clients.region),
            cause: super::retry::Cause::Fatal,
            attempts: 1,
            earlier_may_have_happened: true,
        }),
    }
}

/// The copy of `source` in the client's region, `available`: found by its tags
/// (`kiln:image-sha256` = `sha256` and the AMI name), or made with CopyImage and tagged with
/// `tags`. Returns it, and the copy if this run made it. From before CopyImage until the copy
/// is available a [`Guard`] watches: a copy that fails (or Ctrl-C) is deregistered with the
/// snapshots it made, and the error says so. An image of another sha256 holding the AMI name
/// is reported, not touched.
#[allow(clippy::too_many_arguments)]
pub async fn ensure_copy(
    clients: &Clients,
    retrier: &Retrier,
    source: &AmiInfo,
    sha256: &str,
    description: Option<&str>,
    tags: &[(String, String)],
    timeout: Duration,
    progress: &(dyn Fn(&str) + Send + Sync),
) -> Result<(AmiInfo, Option<NewImage>), DistributeError> {
    let query = images::Query {
        sha256: Some(sha256.to_string()),
        ami_name: Some(source.ami_name.clone()),
        name: None,
    };
    if let Some(found) = images::find_usable(clients, retrier, &query).await? {
        progress(&format!("found {} ({})", found.image_id, found.state));
        let info = distribute::wait_available(clients, retrier, &found.image_id, timeout, progress)
            .await?;
        return Ok((info, None));
    }
    if let Some(h) = register::name_holder(clients, retrier, &source.ami_name).await? {
        return Err(DistributeError::NameTaken {
            name: source.ami_name.clone(),
            region: clients.region.clone(),
            holder: register::describe_holder(Some(&h)),
        });
    }
    let guard = Guard::new(&tokio::runtime::Handle::current(), clients, retrier);
    let req = CopyRequest::of(source, description, tags);
    guard.copying(&req);
    let made = match send(clients, retrier, &req).await {
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
