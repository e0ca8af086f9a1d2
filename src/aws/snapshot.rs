//! EBS snapshots through the EBS direct APIs: start, put blocks, complete, wait, delete, read back.
//!
//! API reference: <https://docs.aws.amazon.com/ebs/latest/APIReference/Welcome.html>.
//! Blocks are always 512 KiB here: StartSnapshot's `BlockSize` answer is not trusted (moto
//! answers 512).

use super::created::NewSnapshot;
use super::guard::Guard;
use super::pace::Pace;
use super::retry::{CallError, Retrier, RetryPolicy, NOT_FOUND_WINDOW};
use super::Clients;
use aws_sdk_ebs::primitives::ByteStream;
use aws_sdk_ebs::types::{ChecksumAggregationMethod, ChecksumAlgorithm, Tag};
use base64::Engine;
use sha2::{Digest, Sha256};
use std::time::Duration;
use tokio::time::Instant;

pub use crate::sink::blocks::BLOCK_SIZE;
const GIB: u64 = 1 << 30;

/// StartSnapshot's Timeout (minutes) unless told otherwise: the API's default.
pub const DEFAULT_TIMEOUT_MINUTES: i32 = 60;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Call(#[from] CallError),
    /// The upload stopped on this side (a block failed earlier, or the disk was not as declared).
    #[error("upload: {0}")]
    Upload(std::io::Error),
    /// What the uploader had to do between CompleteSnapshot and `completed` failed.
    #[error("{0}")]
    BeforeCompleted(String),
    #[error("StartSnapshot answered without a snapshot id")]
    NoSnapshotId,
    #[error(
        "StartSnapshot answered with snapshot {id}, but {why}: it is not this run's, so kiln \
         left it as it is"
    )]
    NotNew { id: String, why: String },
    #[error("snapshot {id} went into state {state:?}: {message}")]
    Failed {
        id: String,
        state: String,
        message: String,
    },
    #[error(
        "snapshot {id} is not completed after {secs}s (last state {state:?}); raise --wait-timeout"
    )]
    WaitTimeout {
        id: String,
        secs: u64,
        state: String,
    },
    #[error("block {index} of snapshot {id} read back with checksum {got}, but its bytes hash to {want}")]
    BadBlockChecksum {
        id: String,
        index: u64,
        got: String,
        want: String,
    },
    #[error(
        "the image's non-zero blocks ({got} of them, block map sha256 {got_sha256}) are not the \
         ones its manifest records ({want}, {want_sha256}): it changed after it was built; \
         rebuild it or remove the stale manifest"
    )]
    NotTheManifests {
        got: u64,
        got_sha256: String,
        want: u64,
        want_sha256: String,
    },
    #[error("the disk is {size} bytes; EBS snapshots hold 1 to 65536 GiB")]
    BadSize { size: u64 },
}

/// What to start a snapshot with.
#[derive(Debug, Clone)]
pub struct SnapshotSpec {
    /// The disk's size in bytes (rounded up to whole GiB for VolumeSize).
    pub size: u64,
    pub description: String,
    pub tags: Vec<(String, String)>,
    /// Makes a retried StartSnapshot idempotent: random, this run's own (see
    /// [`super::created::client_token`]).
    pub client_token: String,
    pub encrypted: bool,
    pub kms_key_arn: Option<String>,
    /// Minutes until AWS abandons an uncompleted snapshot (10–4320).
    pub timeout_minutes: i32,
    /// The snapshot this one is a child of (an incremental upload; see [`super::parent`]).
    pub parent: Option<String>,
}

impl SnapshotSpec {
    /// The snapshot of the image `id` (a `size`-byte disk): kiln's tags, a description naming
    /// it, and a ClientToken of its own.
    pub fn for_image(
        id: &super::ImageIdentity,
        size: u64,
        encrypted: bool,
        kms_key_arn: Option<String>,
    ) -> Self {
        SnapshotSpec {
            size,
            description: match id.blocks.is_some() || id.sha256.is_some() {
                true => format!("kiln: {} {} ({})", id.name, id.version, id.digests()),
                // Named once the blocks are sent (the tag; a description cannot change).
                false => format!("kiln: {} {}", id.name, id.version),
            },
            tags: super::kiln_tags(id),
            client_token: super::created::client_token(),
            encrypted: encrypted || kms_key_arn.is_some(),
            kms_key_arn,
            timeout_minutes: DEFAULT_TIMEOUT_MINUTES,
            parent: None,
        }
    }
}

/// EBS snapshots must be whole GiB.
pub fn volume_size_gib(size: u64) -> Result<i64, SnapshotError> {
    let gib = size.div_ceil(GIB).max(1);
    if size == 0 || gib > 65536 {
        return Err(SnapshotError::BadSize { size });
    }
    Ok(gib as i64)
}

/// Base64 of a SHA-256 digest, as the `Checksum` fields want it.
pub fn b64(digest: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(digest)
}

/// The LINEAR aggregate, folded as blocks are sent: SHA-256 over the block digests in ascending
/// block order, and how many there were (CompleteSnapshot's ChangedBlocksCount).
#[derive(Default)]
pub struct LinearChecksum {
    h: Sha256,
    count: u64,
}

impl LinearChecksum {
    pub fn add(&mut self, digest: &[u8; 32]) {
        self.h.update(digest);
        self.count += 1;
    }

    /// (ChangedBlocksCount, Checksum in base64).
    pub fn finish(self) -> (u64, String) {
        (self.count, b64(&self.h.finalize()))
    }
}

/// One snapshot being written, in one region.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub id: String,
    pub clients: Clients,
    pub retrier: Retrier,
    /// Until then "does not exist" is the post-StartSnapshot race, so it is retried.
    pub not_found_until: Instant,
}

/// How far before this call a snapshot StartSnapshot answers with may have started and still
/// count as new: SigV4 refuses requests whose clock is more than 5 minutes off AWS's, so a
/// snapshot started earlier than that was not started by this call.
pub(super) const CLOCK_SKEW: Duration = Duration::from_secs(300);

/// StartSnapshot, recorded in `guard` from before the call: the answer must be a new, pending
/// snapshot (one this call made), which is then this run's to write, complete or delete.
pub async fn start(
    clients: &Clients,
    retrier: &Retrier,
    spec: &SnapshotSpec,
    guard: &Guard,
) -> Result<(Snapshot, NewSnapshot), SnapshotError> {
    let before = std::time::SystemTime::now();
    guard.starting(spec);
    let out = match send_start(clients, retrier, spec).await {
        Ok(out) => out,
        Err(e) => {
            guard.start_failed(spec, &e);
            return Err(e.into());
        }
    };
    let Some(id) = out.snapshot_id.clone() else {
        guard.start_failed(
            spec,
            &CallError {
                op: "StartSnapshot".into(),
                message: "no snapshot id".into(),
                cause: super::retry::Cause::Fatal,
                attempts: 1,
                earlier_may_have_happened: true,
            },
        );
        return Err(SnapshotError::NoSnapshotId);
    };
    let status = out.status().map(|s| s.as_str().to_string());
    let started = out
        .start_time()
        .and_then(|t| std::time::SystemTime::try_from(*t).ok());
    if let Err(why) = check_new(status.as_deref(), started, before) {
        // Not this call's: never written to, never deleted.
        guard.start_failed(
            spec,
            &CallError {
                op: "StartSnapshot".into(),
                message: why.clone(),
                cause: super::retry::Cause::Fatal,
                attempts: 1,
                earlier_may_have_happened: false,
            },
        );
        return Err(SnapshotError::NotNew { id, why });
    }
    let made = NewSnapshot::new(&id, &clients.region);
    guard.started(&made);
    tracing::info!("started snapshot {id} in {}", clients.region);
    let snap = Snapshot {
        id,
        clients: clients.clone(),
        retrier: retrier.clone(),
        not_found_until: Instant::now() + NOT_FOUND_WINDOW,
    };
    Ok((snap, made))
}

/// Whether StartSnapshot's answer describes a snapshot this call made: `pending`, and started
/// no earlier than the call (less the clock skew SigV4 allows). A reused ClientToken is answered
/// with the original snapshot, whatever became of it.
pub fn check_new(
    status: Option<&str>,
    started: Option<std::time::SystemTime>,
    before: std::time::SystemTime,
) -> Result<(), String> {
    if status != Some("pending") {
        return Err(format!(
            "it is {}, not a new pending snapshot",
            status.unwrap_or("in no state")
        ));
    }
    if let Some(t) = started {
        if t + CLOCK_SKEW < before {
            let secs = before.duration_since(t).map(|d| d.as_secs()).unwrap_or(0);
            return Err(format!(
                "it was started {secs}s before this run asked for a new one"
            ));
        }
    }
    Ok(())
}

/// StartSnapshot as `spec` says, retried.
async fn send_start(
    clients: &Clients,
    retrier: &Retrier,
    spec: &SnapshotSpec,
) -> Result<aws_sdk_ebs::operation::start_snapshot::StartSnapshotOutput, CallError> {
    let gib = volume_size_gib(spec.size).unwrap_or(1);
    let tags: Vec<Tag> = spec
        .tags
        .iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect();
    retrier
        .call("StartSnapshot", || {
            let mut req = clients
                .ebs
                .start_snapshot()
                .volume_size(gib)
                .description(&spec.description)
                .set_tags(Some(tags.clone()))
                .client_token(&spec.client_token)
                .set_parent_snapshot_id(spec.parent.clone())
                .timeout(spec.timeout_minutes);
            if spec.encrypted {
                req = req.encrypted(true);
            }
            if let Some(k) = &spec.kms_key_arn {
                req = req.kms_key_arn(k);
            }
            req.send()
        })
        .await
}

/// StartSnapshot sent again with `spec`'s ClientToken and parameters: AWS answers with the
/// snapshot the first call made (or makes it now, if the first never arrived). Only for undoing
/// a start whose answer was lost.
pub async fn replay_start(
    clients: &Clients,
    retrier: &Retrier,
    spec: &SnapshotSpec,
) -> Result<String, SnapshotError> {
    send_start(clients, retrier, spec)
        .await?
        .snapshot_id
        .ok_or(SnapshotError::NoSnapshotId)
}

impl Snapshot {
    fn policy(&self) -> RetryPolicy {
        RetryPolicy {
            not_found_until: Some(self.not_found_until),
            ..self.retrier.policy.clone()
        }
    }

    /// PutSnapshotBlock for block `index`, whose SHA-256 is `digest`. The SDK sends the streaming
    /// body as `UNSIGNED-PAYLOAD`, so SigV4 does not hash the 512 KiB a second time. Each
    /// attempt may take as long as `pace` allows for the uplink measured so far.
    pub async fn put_block(
        &self,
        index: u64,
        data: bytes::Bytes,
        digest: &[u8; 32],
        pace: &Pace,
    ) -> Result<(), SnapshotError> {
        let checksum = b64(digest);
        let len = data.len() as i32;
        let op = format!("PutSnapshotBlock (block {index})");
        let r = self
            .retrier
            .with_policy(self.policy())
            .call_timed(
                &op,
                |attempt| pace.attempt_timeout(attempt),
                || {
                    self.clients
                        .ebs
                        .put_snapshot_block()
                        .snapshot_id(&self.id)
                        .block_index(index as i32)
                        .data_length(len)
                        .block_data(ByteStream::from(data.clone()))
                        .checksum(&checksum)
                        .checksum_algorithm(ChecksumAlgorithm::ChecksumAlgorithmSha256)
                        .send()
                },
            )
            .await;
        match r {
            Ok(_) => Ok(()),
            // An attempt that timed out or lost its connection landed and is still being
            // applied: the same bytes are going in. CompleteSnapshot's count and LINEAR
            // checksum have AWS check every block, so a write that did not land after all
            // fails the snapshot (and kiln deletes it) rather than passing unnoticed.
            Err(e) if e.cause == super::retry::Cause::Conflict && e.earlier_may_have_happened => {
                tracing::warn!("{op}: an earlier attempt is being applied; counting it as written");
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// CompleteSnapshot with the count of blocks written and the LINEAR checksum.
    pub async fn complete(&self, changed_blocks: u64, checksum: &str) -> Result<(), SnapshotError> {
        self.retrier
            .with_policy(self.policy())
            .call("CompleteSnapshot", || {
                self.clients
                    .ebs
                    .complete_snapshot()
                    .snapshot_id(&self.id)
                    .changed_blocks_count(changed_blocks as i32)
                    .checksum(checksum)
                    .checksum_algorithm(ChecksumAlgorithm::ChecksumAlgorithmSha256)
                    .checksum_aggregation_method(
                        ChecksumAggregationMethod::ChecksumAggregationLinear,
                    )
                    .send()
            })
            .await?;
        Ok(())
    }

    /// Waits (with tokio timers) until EC2 reports the snapshot `completed`.
    pub async fn wait_completed(&self, timeout: Duration) -> Result<(), SnapshotError> {
        let t0 = Instant::now();
        let mut state = String::from("unknown");
        let mut delay = Duration::from_millis(500);
        loop {
            let out = self
                .retrier
                .with_policy(self.policy())
                .call("DescribeSnapshots", || {
                    self.clients
                        .ec2
                        .describe_snapshots()
                        .snapshot_ids(&self.id)
                        .send()
                })
                .await?;
            if let Some(s) = out.snapshots().first() {
                state = s
                    .state()
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_default();
                match state.as_str() {
                    "completed" => return Ok(()),
                    "error" | "recoverable" => {
                        return Err(SnapshotError::Failed {
                            id: self.id.clone(),
                            state,
                            message: s.state_message().unwrap_or("").to_string(),
                        })
                    }
                    _ => {}
                }
            }
            if t0.elapsed() + delay > timeout {
                return Err(SnapshotError::WaitTimeout {
                    id: self.id.clone(),
                    secs: timeout.as_secs(),
                    state,
                });
            }
            tracing::info!("snapshot {} is {state}; waiting", self.id);
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(15));
        }
    }
}

/// The written blocks of a snapshot as (index, block token), ascending; every other block reads
/// as zeros. Paginates with NextToken.
pub async fn list_blocks(
    clients: &Clients,
    retrier: &Retrier,
    id: &str,
) -> Result<Vec<(u64, String)>, SnapshotError> {
    let mut blocks = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let out = retrier
            .call("ListSnapshotBlocks", || {
                clients
                    .ebs
                    .list_snapshot_blocks()
                    .snapshot_id(id)
                    .set_next_token(next.clone())
                    .send()
            })
            .await?;
        for b in out.blocks() {
            if let (Some(i), Some(t)) = (b.block_index(), b.block_token()) {
                blocks.push((i as u64, t.to_string()));
            }
        }
        match out.next_token() {
            Some(t) if !t.is_empty() => next = Some(t.to_string()),
            _ => break,
        }
    }
    blocks.sort_by_key(|b| b.0);
    blocks.dedup_by_key(|b| b.0);
    Ok(blocks)
}

/// The volume size (GiB) of a snapshot, from EC2.
pub async fn volume_size(
    clients: &Clients,
    retrier: &Retrier,
    id: &str,
) -> Result<Option<i32>, SnapshotError> {
    let out = retrier
        .call("DescribeSnapshots", || {
            clients.ec2.describe_snapshots().snapshot_ids(id).send()
        })
        .await?;
    Ok(out.snapshots().first().and_then(|s| s.volume_size()))
}

/// GetSnapshotBlock, checked against the checksum it comes with.
pub async fn get_block(
    clients: &Clients,
    retrier: &Retrier,
    id: &str,
    index: u64,
    token: &str,
) -> Result<Vec<u8>, SnapshotError> {
    let out = retrier
        .call("GetSnapshotBlock", || {
            clients
                .ebs
                .get_snapshot_block()
                .snapshot_id(id)
                .block_index(index as i32)
                .block_token(token)
                .send()
        })
        .await?;
    let checksum = out.checksum.clone();
    let data = out.block_data.collect().await.map_err(|e| CallError {
        op: format!("GetSnapshotBlock (block {index})"),
        message: e.to_string(),
        cause: super::retry::Cause::Connection(e.to_string()),
        attempts: 1,
        earlier_may_have_happened: false,
    })?;
    let data = data.into_bytes().to_vec();
    if let Some(got) = checksum.filter(|c| !c.is_empty()) {
        let want = b64(&Sha256::digest(&data));
        if got != want {
            return Err(SnapshotError::BadBlockChecksum {
                id: id.to_string(),
                index,
                got,
                want,
            });
        }
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_size_rounds_up_to_whole_gib() {
        assert_eq!(volume_size_gib(1).unwrap(), 1);
        assert_eq!(volume_size_gib(GIB).unwrap(), 1);
        assert_eq!(volume_size_gib(GIB + 1).unwrap(), 2);
        assert_eq!(volume_size_gib(64 << 20).unwrap(), 1);
        assert!(volume_size_gib(0).is_err());
        assert!(volume_size_gib(65537 * GIB).is_err());
    }

    #[test]
    fn linear_checksum_hashes_digests_in_order() {
        let a = [1u8; 32];
        let b = [2u8; 32];
        let mut cat = a.to_vec();
        cat.extend_from_slice(&b);
        let mut l = LinearChecksum::default();
        l.add(&a);
        l.add(&b);
        assert_eq!(l.finish(), (2, b64(&Sha256::digest(&cat))));
    }

    #[test]
    fn only_a_new_pending_snapshot_is_this_calls() {
        let now = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert!(check_new(Some("pending"), Some(now), now).is_ok());
        assert!(check_new(Some("pending"), None, now).is_ok());
        // Within the clock skew SigV4 allows.
        assert!(check_new(Some("pending"), Some(now - Duration::from_secs(200)), now).is_ok());
        let old = check_new(Some("pending"), Some(now - Duration::from_secs(3600)), now);
        assert!(old.unwrap_err().contains("started 3600s before"));
        let done = check_new(Some("completed"), Some(now), now);
        assert!(done
            .unwrap_err()
            .contains("it is completed, not a new pending snapshot"));
        assert!(check_new(None, Some(now), now).is_err());
    }
}
