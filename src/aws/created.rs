//! What this run made in AWS: the only snapshots and images kiln ever removes on its own.
//!
//! [`NewSnapshot`] and [`NewImage`] can only be made inside `kiln::aws`, by the calls that
//! create them (StartSnapshot answering a new, pending snapshot; RegisterImage; CopyImage), and
//! the cleanup after a failure or a Ctrl-C takes nothing else. A snapshot the user names
//! (`kiln register SNAPSHOT`), an image an earlier run made, an image found by its tags: none
//! of them is ever one of these, so no failure of this run can remove them. (`kiln images
//! deregister` and `prune` remove kiln's images because the user asks for it, by id or name.)

use super::retry::{CallError, Cause, Retrier};
use super::Clients;
use std::time::Duration;
use tokio::time::Instant;

/// A snapshot this run started (or that a copy this run made created).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSnapshot {
    id: String,
    region: String,
}

impl NewSnapshot {
    pub(super) fn new(id: &str, region: &str) -> NewSnapshot {
        NewSnapshot {
            id: id.to_string(),
            region: region.to_string(),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn region(&self) -> &str {
        &self.region
    }
}

/// How a [`NewImage`] came to be, which decides what removing it removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// RegisterImage: the image only; its snapshot is removed (or kept) on its own account.
    Registered,
    /// CopyImage: the image and the snapshots the copy made.
    Copied,
}

/// An image this run registered or copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewImage {
    id: String,
    region: String,
    origin: Origin,
}

impl NewImage {
    pub(super) fn new(id: &str, region: &str, origin: Origin) -> NewImage {
        NewImage {
            id: id.to_string(),
            region: region.to_string(),
            origin,
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    pub fn origin(&self) -> Origin {
        self.origin
    }
}

/// An image this run made, with the snapshot this run uploaded for it (`None` for a copy, whose
/// snapshots go with it, and for an image of a snapshot the user gave).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Made {
    pub image: NewImage,
    pub snapshot: Option<NewSnapshot>,
}

/// Removes what this run made after a later step failed; returns a sentence saying what was
/// done, or what is left to do by hand.
pub async fn remove_made(clients: &Clients, retrier: &Retrier, m: &Made) -> String {
    let id = m.image.id();
    let mut snaps = match remove_image(clients, retrier, &m.image).await {
        Ok(s) => s,
        Err(e) => {
            return format!(
                "could not remove {id} ({e}); deregister it and delete its snapshots by hand"
            )
        }
    };
    if let Some(s) = &m.snapshot {
        if let Err(e) = delete_snapshot(clients, retrier, s).await {
            return format!(
                "deregistered {id}, but snapshot {} could not be deleted ({e}); delete it by hand",
                s.id()
            );
        }
        snaps.push(s.id().to_string());
    }
    match snaps.is_empty() {
        true => format!("deregistered {id}"),
        false => format!(
            "deregistered {id} and deleted snapshot(s) {}",
            snaps.join(", ")
        ),
    }
}

/// A ClientToken for one call of this run: random, and kept for that call's retries only. A
/// token derived from what is being made (the image's hash, the recipe's) would make AWS answer
/// a later run with an earlier run's result: a snapshot already completed, or deleted, or a copy
/// already cleaned up ("Ensure idempotency in StartSnapshot API requests").
pub fn client_token() -> String {
    let mut b = [0u8; 16];
    // The OS's random source; if it fails, the clock and the process id still make the token
    // unique to this run (it only needs to be unique, not secret).
    if getrandom::fill(&mut b).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        b.copy_from_slice(&(t ^ ((std::process::id() as u128) << 64)).to_le_bytes());
    }
    format!("kiln-{}", crate::util::hex(&b))
}

/// Deletes a snapshot this run made. "Does not exist" means done: it was this run's, and it is
/// gone (an earlier attempt whose answer was lost deleted it, or the Ctrl-C cleanup did).
pub async fn delete_snapshot(
    clients: &Clients,
    retrier: &Retrier,
    s: &NewSnapshot,
) -> Result<(), CallError> {
    delete_snapshot_id(clients, retrier, &s.id, true).await
}

/// Deregisters an image this run made; for a copy, also deletes the snapshots the copy made.
/// Returns the snapshots deleted.
pub async fn remove_image(
    clients: &Clients,
    retrier: &Retrier,
    img: &NewImage,
) -> Result<Vec<String>, CallError> {
    let snaps: Vec<NewSnapshot> = match img.origin {
        Origin::Registered => Vec::new(),
        Origin::Copied => super::images::describe(clients, retrier, &img.id)
            .await?
            .map(|i| i.snapshot_ids)
            .unwrap_or_default()
            .iter()
            .map(|s| NewSnapshot::new(s, &img.region))
            .collect(),
    };
    deregister_id(clients, retrier, &img.id, true).await?;
    for s in &snaps {
        delete_snapshot(clients, retrier, s).await?;
    }
    Ok(snaps.into_iter().map(|s| s.id).collect())
}

/// DeregisterImage. A deregistration answered "does not exist" on a retry (the first attempt's
/// answer was lost) is done; so is any "does not exist" when `ours` (it was this run's).
pub(super) async fn deregister_id(
    clients: &Clients,
    retrier: &Retrier,
    id: &str,
    ours: bool,
) -> Result<(), CallError> {
    let r = retrier
        .call("DeregisterImage", || {
            clients.ec2.deregister_image().image_id(id).send()
        })
        .await;
    match r {
        Ok(_) => {}
        Err(e) if gone(&e, ours) => tracing::info!("{id} was already deregistered"),
        Err(e) => return Err(e),
    }
    tracing::info!("deregistered {id} in {}", clients.region);
    Ok(())
}

/// DeleteSnapshot, waiting out "in use by ami-…": right after DeregisterImage, EC2 may still
/// count the snapshot as the image's for a little while. "Does not exist" is handled as in
/// [`deregister_id`].
pub(super) async fn delete_snapshot_id(
    clients: &Clients,
    retrier: &Retrier,
    id: &str,
    ours: bool,
) -> Result<(), CallError> {
    let t0 = Instant::now();
    loop {
        let r = retrier
            .call("DeleteSnapshot", || {
                clients.ec2.delete_snapshot().snapshot_id(id).send()
            })
            .await;
        match r {
            Ok(_) => break,
            Err(e) if gone(&e, ours) => {
                tracing::info!("snapshot {id} was already deleted");
                break;
            }
            Err(e)
                if e.message.contains("InUse")
                    && e.cause != Cause::Interrupted
                    && t0.elapsed() < Duration::from_secs(120) =>
            {
                tracing::warn!("snapshot {id} is still in use; retrying: {}", e.message);
                tokio::time::sleep(Duration::from_secs(if retrier.is_cleanup() {
                    1
                } else {
                    5
                }))
                .await;
            }
            Err(e) => return Err(e),
        }
    }
    tracing::info!("deleted snapshot {id} in {}", clients.region);
    Ok(())
}

fn gone(e: &CallError, ours: bool) -> bool {
    e.gone_after_retry() || (ours && matches!(e.cause, Cause::NotFound(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_new_every_time_and_fit_the_apis() {
        let a = client_token();
        let b = client_token();
        assert_ne!(a, b);
        // StartSnapshot and CopyImage take up to 64 ASCII characters.
        assert!(a.len() <= 64 && a.is_ascii(), "{a}");
    }
}
