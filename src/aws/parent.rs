//! The parent of an incremental upload: the previous version's snapshot, which the new one is
//! started as a child of (StartSnapshot's `ParentSnapshotId`), so that only the blocks that
//! changed are sent and stored.
//!
//! ```text
//! --parent SNAPSHOT | auto (newest completed kiln snapshot of the same kiln:name and kiln:arch)
//!   → check it: exists, completed, not encrypted, this disk's volume size, kiln's and this image's
//!   → its block map: --parent-blocks FILE (checked against the blocks the snapshot lists),
//!     else rebuilt by reading it (ListSnapshotBlocks, GetSnapshotBlock, bounded concurrency)
//! ```
//!
//! Encryption: EBS refuses `ParentSnapshotId` together with `Encrypted` (StartSnapshot,
//! ValidationException), and a child of an encrypted parent is encrypted with the parent's key,
//! whose unwritten blocks are not zeros. kiln keeps it simple: an encrypted upload has no parent
//! (an explicit `--parent` is refused, `auto` uploads in full), and an encrypted snapshot is never
//! a parent.
//!
//! The parent is only read: nothing here creates or deletes anything, so the upload's
//! [`super::guard::Guard`] covers the child alone and a failed child never touches its parent.

use super::images::TAG_NAME;
use super::retry::{CallError, Cause, Retrier};
use super::snapshot::{self, SnapshotError, SnapshotSpec, BLOCK_SIZE};
use super::Clients;
use crate::sink::blocks::is_zero;
use crate::sink::mapfile::{MapData, MapError};
use aws_sdk_ec2::types::Filter;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use std::path::PathBuf;

/// The tag naming the architecture of the image a snapshot holds (`x86_64`, `aarch64`): `auto`
/// only takes a parent of the same architecture.
pub const TAG_ARCH: &str = "kiln:arch";

/// What the user asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParentChoice {
    /// A full upload.
    None,
    /// This snapshot, or an error saying why it cannot be the parent.
    Snapshot(String),
    /// The newest usable kiln snapshot of this image, or a full upload if there is none.
    Auto,
}

impl std::str::FromStr for ParentChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(ParentChoice::Auto),
            "none" => Ok(ParentChoice::None),
            s if s.starts_with("snap-") => Ok(ParentChoice::Snapshot(s.to_string())),
            s => Err(format!(
                "{s:?} is not a snapshot id (snap-...), \"auto\" or \"none\""
            )),
        }
    }
}

/// What the child must match.
#[derive(Debug, Clone)]
pub struct Want {
    /// `kiln:name`.
    pub name: String,
    /// `kiln:arch`; `None` when unknown (an image without a manifest): `auto` then finds no
    /// parent, and an explicit one is not checked for it.
    pub arch: Option<String>,
    /// The disk's size in bytes.
    pub size: u64,
    pub encrypted: bool,
    /// The parent's block map, if kept (`<stem>.blocks` of the parent's build).
    pub blocks_file: Option<PathBuf>,
    /// GetSnapshotBlock calls at once when the map is rebuilt.
    pub concurrency: usize,
}

/// A usable parent: its id and its block map.
#[derive(Debug, Clone)]
pub struct Parent {
    pub snapshot_id: String,
    pub map: MapData,
    /// Where the map came from, for the log.
    pub map_source: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ParentError {
    #[error(transparent)]
    Call(#[from] CallError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Map(#[from] MapError),
    #[error("parent snapshot {id} cannot be used: {why}")]
    Unusable { id: String, why: String },
    #[error("--parent-blocks describes a parent: give --parent SNAPSHOT or --parent auto")]
    BlocksWithoutParent,
    #[error(
        "an encrypted upload cannot have a parent: EBS refuses ParentSnapshotId with Encrypted; \
         drop --parent, or upload unencrypted"
    )]
    Encrypted,
}

/// What an uploading command was asked for: `--parent` and `--parent-blocks` (`kiln upload`,
/// `kiln build --upload`, `kiln publish`).
#[derive(Debug, Clone)]
pub struct Request {
    pub choice: ParentChoice,
    /// The parent's block map, if kept (`<stem>.blocks` of the parent's build).
    pub blocks_file: Option<PathBuf>,
}

impl Request {
    /// A full upload.
    pub fn none() -> Self {
        Request {
            choice: ParentChoice::None,
            blocks_file: None,
        }
    }

    /// Refuses what the flags alone contradict: a block map without a parent. Cheap, so that
    /// commands call it before building or connecting anything.
    pub fn check(&self) -> Result<(), ParentError> {
        match (&self.choice, &self.blocks_file) {
            (ParentChoice::None, Some(_)) => Err(ParentError::BlocksWithoutParent),
            _ => Ok(()),
        }
    }
}

/// The parent of the snapshot `spec` describes, as `request` asks, for the image `name` of
/// architecture `arch`: checked (see [`resolve`]), said in `note`, and named in
/// `spec.parent` so that StartSnapshot starts a child of it. Give the returned parent's map to
/// [`crate::sink::ebs::EbsSink::set_parent`] before the first block. Nothing is created here:
/// a refusal leaves nothing behind. `workers` bounds the reads when the map is rebuilt (16 at
/// most).
#[allow(clippy::too_many_arguments)]
pub async fn choose(
    clients: &Clients,
    retrier: &Retrier,
    request: &Request,
    name: &str,
    arch: Option<&str>,
    spec: &mut SnapshotSpec,
    workers: usize,
    note: &(dyn Fn(&str) + Sync),
) -> Result<Option<Parent>, ParentError> {
    request.check()?;
    let want = Want {
        name: name.to_string(),
        arch: arch.map(str::to_string),
        size: spec.size,
        encrypted: spec.encrypted,
        blocks_file: request.blocks_file.clone(),
        concurrency: workers.clamp(1, 16),
    };
    let p = resolve(clients, retrier, &request.choice, &want, note).await?;
    if let Some(p) = &p {
        note(&format!(
            "uploading as a child of {} (its block map: {}, {} non-zero blocks)",
            p.snapshot_id, p.map_source, p.map.info.blocks
        ));
        spec.parent = Some(p.snapshot_id.clone());
    }
    Ok(p)
}

/// The parent `choice` names, checked against `want`: `Ok(None)` for a full upload. Under
/// [`ParentChoice::Auto`] every reason a parent cannot be used gives a full upload (said in
/// `note`); an explicit snapshot is refused with the reason.
pub async fn resolve(
    clients: &Clients,
    retrier: &Retrier,
    choice: &ParentChoice,
    want: &Want,
    note: &(dyn Fn(&str) + Sync),
) -> Result<Option<Parent>, ParentError> {
    match choice {
        ParentChoice::None => Ok(None),
        ParentChoice::Snapshot(_) if want.encrypted => Err(ParentError::Encrypted),
        ParentChoice::Snapshot(id) => {
            let snap = describe(clients, retrier, id).await?;
            check(&snap, want).map_err(|why| ParentError::Unusable {
                id: id.clone(),
                why,
            })?;
            Ok(Some(with_map(clients, retrier, id, want).await?))
        }
        ParentChoice::Auto if want.encrypted => {
            note("encrypted upload: no parent (EBS refuses ParentSnapshotId with Encrypted); uploading in full");
            Ok(None)
        }
        ParentChoice::Auto => {
            let Some(arch) = &want.arch else {
                note("the image's architecture is unknown (no manifest beside it): no parent; uploading in full");
                return Ok(None);
            };
            let Some(id) = newest(clients, retrier, want, arch).await? else {
                note(&format!(
                    "no completed kiln snapshot of {} ({arch}) of this size to be the parent; uploading in full",
                    want.name
                ));
                return Ok(None);
            };
            match with_map(clients, retrier, &id, want).await {
                Ok(p) => Ok(Some(p)),
                Err(e) => {
                    note(&format!("{e}; uploading in full"));
                    Ok(None)
                }
            }
        }
    }
}

/// DescribeSnapshots of one snapshot this account owns; a missing one is an [`ParentError::Unusable`].
async fn describe(
    clients: &Clients,
    retrier: &Retrier,
    id: &str,
) -> Result<aws_sdk_ec2::types::Snapshot, ParentError> {
    let r = retrier
        .call("DescribeSnapshots", || {
            clients
                .ec2
                .describe_snapshots()
                .owner_ids("self")
                .snapshot_ids(id)
                .send()
        })
        .await;
    let gone = || ParentError::Unusable {
        id: id.to_string(),
        why: format!(
            "it does not exist in {} (deleted, or not this account's)",
            clients.region
        ),
    };
    match r {
        Ok(out) => out.snapshots().first().cloned().ok_or_else(gone),
        Err(e) if matches!(e.cause, Cause::NotFound(_)) => Err(gone()),
        Err(e) => Err(e.into()),
    }
}

fn tag<'a>(s: &'a aws_sdk_ec2::types::Snapshot, key: &str) -> Option<&'a str> {
    s.tags()
        .iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
}

/// Why `s` cannot be the parent of `want`'s upload, if it cannot.
pub fn check(s: &aws_sdk_ec2::types::Snapshot, want: &Want) -> Result<(), String> {
    let state = s.state().map(|s| s.as_str()).unwrap_or("unknown");
    if state != "completed" {
        return Err(format!(
            "it is {state}, not completed (a parent must be completed)"
        ));
    }
    match tag(s, TAG_NAME) {
        None => {
            return Err(format!(
            "it has no {TAG_NAME} tag: it is not kiln's, and kiln only builds on its own snapshots"
        ))
        }
        Some(n) if n != want.name => {
            return Err(format!(
                "it holds the image {n:?}, not {:?} ({TAG_NAME})",
                want.name
            ))
        }
        Some(_) => {}
    }
    if let (Some(a), Some(w)) = (tag(s, TAG_ARCH), &want.arch) {
        if a != w {
            return Err(format!("it holds an {a} image, not {w}"));
        }
    }
    if s.encrypted() == Some(true) {
        return Err(
            "it is encrypted, and a child of it would be too (kiln's incremental uploads are \
             unencrypted)"
                .into(),
        );
    }
    let gib = snapshot::volume_size_gib(want.size).map_err(|e| e.to_string())?;
    match s.volume_size() {
        Some(v) if i64::from(v) == gib => Ok(()),
        v => Err(format!(
            "it holds a {} GiB volume, this disk needs {gib} GiB (a parent must be the same size)",
            v.map(|v| v.to_string()).unwrap_or_else(|| "?".into())
        )),
    }
}

/// The newest usable snapshot of `want`'s image, by its tags (`Owners=self`).
async fn newest(
    clients: &Clients,
    retrier: &Retrier,
    want: &Want,
    arch: &str,
) -> Result<Option<String>, ParentError> {
    let filter = |k: &str, v: &str| Filter::builder().name(k).values(v).build();
    let out = retrier
        .call("DescribeSnapshots", || {
            clients
                .ec2
                .describe_snapshots()
                .owner_ids("self")
                .filters(filter(&format!("tag:{TAG_NAME}"), &want.name))
                .filters(filter(&format!("tag:{TAG_ARCH}"), arch))
                .filters(filter("status", "completed"))
                .send()
        })
        .await?;
    let mut usable: Vec<_> = out
        .snapshots()
        .iter()
        .filter(|s| check(s, want).is_ok())
        .filter_map(|s| {
            let t = s.start_time().map(|t| (t.secs(), t.subsec_nanos()));
            Some((t, s.snapshot_id()?.to_string()))
        })
        .collect();
    // Newest first; the id breaks a tie, so the choice does not depend on the answer's order.
    usable.sort();
    Ok(usable.pop().map(|(_, id)| id))
}

/// The parent with its block map: from the file when given and it agrees with the snapshot's
/// blocks, else read from the snapshot.
async fn with_map(
    clients: &Clients,
    retrier: &Retrier,
    id: &str,
    want: &Want,
) -> Result<Parent, ParentError> {
    let listed = snapshot::list_blocks(clients, retrier, id).await?;
    let unusable = |why: String| ParentError::Unusable {
        id: id.to_string(),
        why,
    };
    if let Some(path) = &want.blocks_file {
        let map = MapData::read(path)?;
        if map.disk_size() != want.size {
            return Err(unusable(format!(
                "its block map {} describes a {}-byte disk, this one is {} bytes",
                path.display(),
                map.disk_size(),
                want.size
            )));
        }
        // A kiln snapshot lists every non-zero block of its disk (a child lists its parent's
        // too): a map naming a block the snapshot lacks is another disk's. Blocks the snapshot
        // lists beyond the map must be zeros (a child writes zeros where its parent had data):
        // those few are read to make sure.
        let mut entries = map.entries().peekable();
        let mut extra = Vec::new();
        for (i, token) in &listed {
            if let Some(e) = entries.next_if(|e| e.0 < *i).map(|e| e.0) {
                return Err(unusable(format!(
                    "{} names block {e}, which the snapshot does not hold: the map is another disk's",
                    path.display()
                )));
            }
            match entries.peek() {
                Some(e) if e.0 == *i => {
                    entries.next();
                }
                _ => extra.push((*i, token.clone())),
            }
        }
        if let Some((e, _)) = entries.next() {
            return Err(unusable(format!(
                "{} names block {e}, which the snapshot does not hold: the map is another disk's",
                path.display()
            )));
        }
        drop(entries);
        let read = read_blocks(clients, retrier, id, extra, want.concurrency).await?;
        if let Some((i, _)) = read.first() {
            return Err(unusable(format!(
                "block {i} of the snapshot holds data that {} does not record: the map is another disk's",
                path.display()
            )));
        }
        return Ok(Parent {
            snapshot_id: id.to_string(),
            map,
            map_source: path.display().to_string(),
        });
    }
    let blocks = listed.len();
    let entries = read_blocks(clients, retrier, id, listed, want.concurrency).await?;
    if let Some((i, _)) = entries
        .last()
        .filter(|(i, _)| *i >= want.size.div_ceil(BLOCK_SIZE))
    {
        return Err(unusable(format!(
            "it holds data at block {i}, past this {}-byte disk's end",
            want.size
        )));
    }
    Ok(Parent {
        snapshot_id: id.to_string(),
        map: MapData::from_entries(want.size, entries),
        map_source: format!("read from the snapshot ({blocks} blocks)"),
    })
}

/// Reads `blocks` of snapshot `id` (`concurrency` at a time) and returns the non-zero ones as
/// (index, SHA-256), ascending: only their digests are kept.
async fn read_blocks(
    clients: &Clients,
    retrier: &Retrier,
    id: &str,
    blocks: Vec<(u64, String)>,
    concurrency: usize,
) -> Result<Vec<(u64, [u8; 32])>, SnapshotError> {
    let mut reads = futures::stream::iter(blocks.into_iter().map(|(i, token)| async move {
        let data = snapshot::get_block(clients, retrier, id, i, &token).await?;
        let digest: Option<[u8; 32]> = (!is_zero(&data)).then(|| Sha256::digest(&data).into());
        Ok::<_, SnapshotError>((i, digest))
    }))
    .buffered(concurrency.max(1));
    let mut out = Vec::new();
    while let Some(r) = reads.next().await {
        if let (i, Some(d)) = r? {
            out.push((i, d));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ec2::types::{Snapshot, SnapshotState, Tag};

    fn want() -> Want {
        Want {
            name: "web".into(),
            arch: Some("x86_64".into()),
            size: 2 << 30,
            encrypted: false,
            blocks_file: None,
            concurrency: 4,
        }
    }

    fn snap(state: SnapshotState, tags: &[(&str, &str)], gib: i32, encrypted: bool) -> Snapshot {
        let mut b = Snapshot::builder()
            .snapshot_id("snap-1")
            .state(state)
            .volume_size(gib)
            .encrypted(encrypted);
        for (k, v) in tags {
            b = b.tags(Tag::builder().key(*k).value(*v).build());
        }
        b.build()
    }

    #[test]
    fn only_a_completed_unencrypted_kiln_snapshot_of_this_image_and_size_is_a_parent() {
        let ok = [("kiln:name", "web"), ("kiln:arch", "x86_64")];
        let w = want();
        assert_eq!(
            check(&snap(SnapshotState::Completed, &ok, 2, false), &w),
            Ok(())
        );
        // Older snapshots carry no kiln:arch: an explicit --parent may still name them.
        assert_eq!(
            check(&snap(SnapshotState::Completed, &ok[..1], 2, false), &w),
            Ok(())
        );
        let why = |s: Snapshot| check(&s, &w).unwrap_err();
        assert!(why(snap(SnapshotState::Pending, &ok, 2, false)).contains("pending, not completed"));
        assert!(why(snap(SnapshotState::Error, &ok, 2, false)).contains("error, not completed"));
        assert!(why(snap(SnapshotState::Completed, &[], 2, false)).contains("not kiln's"));
        assert!(why(snap(
            SnapshotState::Completed,
            &[("kiln:name", "db")],
            2,
            false
        ))
        .contains("\"db\", not \"web\""));
        assert!(why(snap(
            SnapshotState::Completed,
            &[("kiln:name", "web"), ("kiln:arch", "aarch64")],
            2,
            false
        ))
        .contains("aarch64 image, not x86_64"));
        assert!(why(snap(SnapshotState::Completed, &ok, 2, true)).contains("encrypted"));
        assert!(why(snap(SnapshotState::Completed, &ok, 3, false))
            .contains("3 GiB volume, this disk needs 2 GiB"));
    }

    #[test]
    fn a_block_map_needs_a_parent() {
        let check = |choice, file: Option<&str>| {
            Request {
                choice,
                blocks_file: file.map(PathBuf::from),
            }
            .check()
        };
        assert!(matches!(
            check(ParentChoice::None, Some("x.blocks")),
            Err(ParentError::BlocksWithoutParent)
        ));
        assert!(check(ParentChoice::Auto, Some("x.blocks")).is_ok());
        assert!(check(ParentChoice::Snapshot("snap-1".into()), Some("x.blocks")).is_ok());
        assert!(check(ParentChoice::None, None).is_ok());
        assert!(Request::none().check().is_ok());
    }

    #[test]
    fn a_parent_is_a_snapshot_id_auto_or_none() {
        assert_eq!("auto".parse(), Ok(ParentChoice::Auto));
        assert_eq!("none".parse(), Ok(ParentChoice::None));
        assert_eq!(
            "snap-0abc".parse(),
            Ok(ParentChoice::Snapshot("snap-0abc".into()))
        );
        assert!("ami-1"
            .parse::<ParentChoice>()
            .unwrap_err()
            .contains("not a snapshot id"));
    }
}
