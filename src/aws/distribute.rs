//! Getting an image to its users: launch permissions (and the snapshots' create-volume
//! permissions), tags and deprecation, each applied only where missing so that running it again
//! changes nothing; and waiting for an image to become available. Copies into other regions are
//! [`super::copy`]'s.
//!
//! References: CopyImage, ModifyImageAttribute, ModifySnapshotAttribute, CreateTags,
//! EnableImageDeprecation and DisableImageDeprecation in the EC2 API reference
//! (<https://docs.aws.amazon.com/AWSEC2/latest/APIReference/>).

use super::images::{self, AmiInfo, ImagesError, TAG_KILN_VERSION};
use super::retry::{CallError, Retrier};
use super::{create_tags, Clients};
use crate::recipe::Shares;
use aws_sdk_ec2::types::{
    LaunchPermission, LaunchPermissionModifications, OperationType, PermissionGroup,
};
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum DistributeError {
    #[error(transparent)]
    Call(#[from] CallError),
    #[error(transparent)]
    Images(#[from] ImagesError),
    #[error(
        "the AMI name {name:?} is taken in {region} by {holder}, so the copy cannot have it; \
         deregister that image, or change [ami] name"
    )]
    NameTaken {
        name: String,
        region: String,
        holder: String,
    },
    #[error("image {id} in {region} went into state {state:?}: {reason}")]
    Failed {
        id: String,
        region: String,
        state: String,
        reason: String,
    },
    #[error("{cause}; {cleanup}")]
    CleanedUp { cause: String, cleanup: String },
    #[error("image {id} in {region} is not available after {secs}s (last state {state:?}); raise --wait-timeout")]
    WaitTimeout {
        id: String,
        region: String,
        secs: u64,
        state: String,
    },
}

/// One launch permission.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Grant {
    Account(String),
    Organization(String),
    OrganizationalUnit(String),
    /// Every AWS account (the `all` group).
    Public,
}

impl std::fmt::Display for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Grant::Account(a) => write!(f, "account {a}"),
            Grant::Organization(o) => write!(f, "organization {o}"),
            Grant::OrganizationalUnit(o) => write!(f, "OU {o}"),
            Grant::Public => f.write_str("everyone (public)"),
        }
    }
}

impl Grant {
    fn launch_permission(&self) -> LaunchPermission {
        let b = LaunchPermission::builder();
        match self {
            Grant::Account(a) => b.user_id(a),
            Grant::Organization(o) => b.organization_arn(o),
            Grant::OrganizationalUnit(o) => b.organizational_unit_arn(o),
            Grant::Public => b.group(PermissionGroup::All),
        }
        .build()
    }

    fn from_launch_permission(p: &LaunchPermission) -> Option<Grant> {
        if let Some(a) = p.user_id() {
            return Some(Grant::Account(a.to_string()));
        }
        if let Some(o) = p.organization_arn() {
            return Some(Grant::Organization(o.to_string()));
        }
        if let Some(o) = p.organizational_unit_arn() {
            return Some(Grant::OrganizationalUnit(o.to_string()));
        }
        (p.group() == Some(&PermissionGroup::All)).then_some(Grant::Public)
    }
}

/// The launch permissions that `shares` asks for.
pub fn grants(shares: &Shares) -> Vec<Grant> {
    let mut g: Vec<Grant> = shares
        .accounts
        .iter()
        .map(|a| Grant::Account(a.clone()))
        .chain(
            shares
                .organizations
                .iter()
                .cloned()
                .map(Grant::Organization),
        )
        .chain(
            shares
                .organizational_units
                .iter()
                .cloned()
                .map(Grant::OrganizationalUnit),
        )
        .collect();
    if shares.public {
        g.push(Grant::Public);
    }
    g
}

/// The create-volume permissions on the image's snapshots that match `grants`.
///
/// A snapshot's createVolumePermission takes only account ids and the `all` group:
/// ModifySnapshotAttribute has no organization or OU targets. Launching does not need it
/// (EC2 lets whoever may launch the AMI read the snapshots it references for that launch);
/// it is what lets a shared account copy the AMI or make volumes from it. So accounts get it,
/// and organizations and OUs get launch permission only. A public AMI does not make its
/// snapshots public: that would let anyone read the disk outside EC2's launch path, which the
/// recipe did not ask for (and "block public access for snapshots" commonly forbids it).
pub fn snapshot_grants(grants: &[Grant]) -> Vec<String> {
    grants
        .iter()
        .filter_map(|g| match g {
            Grant::Account(a) => Some(a.clone()),
            _ => None,
        })
        .collect()
}

/// The launch permissions an image has now (DescribeImageAttribute).
pub async fn image_grants(
    clients: &Clients,
    retrier: &Retrier,
    image_id: &str,
) -> Result<Vec<Grant>, CallError> {
    let out = retrier
        .call("DescribeImageAttribute", || {
            clients
                .ec2
                .describe_image_attribute()
                .image_id(image_id)
                .attribute(aws_sdk_ec2::types::ImageAttributeName::LaunchPermission)
                .send()
        })
        .await?;
    Ok(out
        .launch_permissions()
        .iter()
        .filter_map(Grant::from_launch_permission)
        .collect())
}

/// The account ids a snapshot's createVolumePermission names (DescribeSnapshotAttribute).
pub async fn snapshot_accounts(
    clients: &Clients,
    retrier: &Retrier,
    snapshot_id: &str,
) -> Result<Vec<String>, CallError> {
    let out = retrier
        .call("DescribeSnapshotAttribute", || {
            clients
                .ec2
                .describe_snapshot_attribute()
                .snapshot_id(snapshot_id)
                .attribute(aws_sdk_ec2::types::SnapshotAttributeName::CreateVolumePermission)
                .send()
        })
        .await?;
    Ok(out
        .create_volume_permissions()
        .iter()
        .filter_map(|p| p.user_id().map(str::to_string))
        .collect())
}

/// What a share or unshare changed, for the summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShareChanges {
    pub image: Vec<Grant>,
    /// (snapshot id, account ids).
    pub snapshots: Vec<(String, Vec<String>)>,
}

impl ShareChanges {
    pub fn is_empty(&self) -> bool {
        self.image.is_empty() && self.snapshots.iter().all(|(_, a)| a.is_empty())
    }
}

/// Adds (`add`) or removes the launch permissions `grants` on `image`, and the matching
/// create-volume permissions on its snapshots; only what is missing (or present) is sent.
pub async fn set_grants(
    clients: &Clients,
    retrier: &Retrier,
    image: &AmiInfo,
    grants: &[Grant],
    add: bool,
) -> Result<ShareChanges, CallError> {
    let mut changes = ShareChanges::default();
    let have = image_grants(clients, retrier, &image.image_id).await?;
    changes.image = grants
        .iter()
        .filter(|g| have.contains(g) != add)
        .cloned()
        .collect();
    if !changes.image.is_empty() {
        let perms: Vec<LaunchPermission> =
            changes.image.iter().map(Grant::launch_permission).collect();
        let mods = if add {
            LaunchPermissionModifications::builder().set_add(Some(perms))
        } else {
            LaunchPermissionModifications::builder().set_remove(Some(perms))
        }
        .build();
        retrier
            .call("ModifyImageAttribute", || {
                clients
                    .ec2
                    .modify_image_attribute()
                    .image_id(&image.image_id)
                    .launch_permission(mods.clone())
                    .send()
            })
            .await?;
        let verb = if add { "granted" } else { "revoked" };
        for g in &changes.image {
            tracing::info!(
                "{verb} launch on {} in {} to {g}",
                image.image_id,
                image.region
            );
        }
    }
    let accounts = snapshot_grants(grants);
    if accounts.is_empty() {
        return Ok(changes);
    }
    for snap in &image.snapshot_ids {
        let have = snapshot_accounts(clients, retrier, snap).await?;
        let todo: Vec<String> = accounts
            .iter()
            .filter(|a| have.contains(a) != add)
            .cloned()
            .collect();
        if todo.is_empty() {
            continue;
        }
        // The OperationType + UserIds form of the request (the API also takes a
        // CreateVolumePermission structure; some implementations know only this form).
        let op = if add {
            OperationType::Add
        } else {
            OperationType::Remove
        };
        retrier
            .call("ModifySnapshotAttribute", || {
                clients
                    .ec2
                    .modify_snapshot_attribute()
                    .snapshot_id(snap)
                    .attribute(aws_sdk_ec2::types::SnapshotAttributeName::CreateVolumePermission)
                    .operation_type(op.clone())
                    .set_user_ids(Some(todo.clone()))
                    .send()
            })
            .await?;
        changes.snapshots.push((snap.clone(), todo));
    }
    Ok(changes)
}

/// The tags of `wanted` that `have` lacks or holds with another value. `kiln:kiln-version` is
/// only added, never rewritten: it records which kiln made the image.
pub fn missing_tags(
    have: &[(String, String)],
    wanted: &[(String, String)],
) -> Vec<(String, String)> {
    wanted
        .iter()
        .filter(|(k, v)| match have.iter().find(|(hk, _)| hk == k) {
            None => true,
            Some((_, hv)) => hv != v && k != TAG_KILN_VERSION,
        })
        .cloned()
        .collect()
}

/// Puts `wanted` on the image and on each of its snapshots where missing. CopyImage does not
/// carry tags over, and not every endpoint honours TagSpecifications, so this runs for every
/// image kiln publishes. Returns how many resources were tagged.
pub async fn ensure_tags(
    clients: &Clients,
    retrier: &Retrier,
    image: &AmiInfo,
    wanted: &[(String, String)],
) -> Result<usize, CallError> {
    let mut tagged = 0;
    let missing = missing_tags(&image.tags, wanted);
    if !missing.is_empty() {
        create_tags(clients, retrier, &image.image_id, &missing).await?;
        tagged += 1;
    }
    if image.snapshot_ids.is_empty() {
        return Ok(tagged);
    }
    let out = retrier
        .call("DescribeSnapshots", || {
            clients
                .ec2
                .describe_snapshots()
                .set_snapshot_ids(Some(image.snapshot_ids.clone()))
                .send()
        })
        .await?;
    for s in out.snapshots() {
        let have: Vec<(String, String)> = s
            .tags()
            .iter()
            .filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())))
            .collect();
        let missing = missing_tags(&have, wanted);
        if let (Some(id), false) = (s.snapshot_id(), missing.is_empty()) {
            create_tags(clients, retrier, id, &missing).await?;
            tagged += 1;
        }
    }
    Ok(tagged)
}

/// Sets the image's deprecation time (seconds since 1970, whole minutes) or, with `None`,
/// cancels it; nothing is sent when EC2 already reports that. Returns whether it called EC2.
pub async fn set_deprecation(
    clients: &Clients,
    retrier: &Retrier,
    image: &AmiInfo,
    at: Option<i64>,
) -> Result<bool, CallError> {
    let current = image
        .deprecation_time
        .as_deref()
        .and_then(|t| crate::recipe::parse_utc(t).ok());
    match at {
        Some(t) if current == Some(t) => Ok(false),
        Some(t) => {
            let when = aws_sdk_ec2::primitives::DateTime::from_secs(t);
            retrier
                .call("EnableImageDeprecation", || {
                    clients
                        .ec2
                        .enable_image_deprecation()
                        .image_id(&image.image_id)
                        .deprecate_at(when)
                        .send()
                })
                .await?;
            tracing::info!(
                "{} in {} deprecates at {}",
                image.image_id,
                image.region,
                crate::recipe::format_utc(t)
            );
            Ok(true)
        }
        None if image.deprecation_time.is_none() => Ok(false),
        None => {
            retrier
                .call("DisableImageDeprecation", || {
                    clients
                        .ec2
                        .disable_image_deprecation()
                        .image_id(&image.image_id)
                        .send()
                })
                .await?;
            Ok(true)
        }
    }
}

/// EC2 takes deprecation times in whole minutes (it rounds seconds), so kiln sends whole minutes
/// and can compare what it sent with what EC2 reports.
pub fn whole_minute(secs: i64) -> i64 {
    secs - secs.rem_euclid(60)
}

/// A deprecation time EC2 will take: `at` itself, or, when `at` is not in the future (a past
/// `deprecate_at`, or a `deprecate_after` that has run out for an old image), the next whole
/// minute after `now`, so that the image is deprecated at once. `None` when the image is
/// already deprecated by then and nothing needs to change.
pub fn effective_deprecation(at: i64, now: i64, current: Option<i64>) -> Option<i64> {
    let at = whole_minute(at);
    if at > now + 60 {
        return Some(at);
    }
    if current.is_some_and(|c| c <= now + 120) {
        return None;
    }
    Some(whole_minute(now) + 120)
}

/// Waits (tokio timers) until the image is `available`, telling `progress` its state now and
/// then (at most every 30 s, and on every change). Copies can take well over ten minutes.
pub async fn wait_available(
    clients: &Clients,
    retrier: &Retrier,
    image_id: &str,
    timeout: Duration,
    progress: &(dyn Fn(&str) + Send + Sync),
) -> Result<AmiInfo, DistributeError> {
    let t0 = Instant::now();
    let mut delay = Duration::from_secs(2);
    let mut last: Option<(String, Instant)> = None;
    loop {
        let info = images::describe_fresh(clients, retrier, image_id).await?;
        match info.state.as_str() {
            "available" => return Ok(info),
            "failed" | "error" | "invalid" | "deregistered" | "disabled" => {
                return Err(DistributeError::Failed {
                    id: image_id.to_string(),
                    region: clients.region.clone(),
                    state: info.state,
                    reason: String::new(),
                })
            }
            _ => {}
        }
        let say = match &last {
            Some((s, at)) => *s != info.state || at.elapsed() >= Duration::from_secs(30),
            None => true,
        };
        if say {
            let secs = t0.elapsed().as_secs();
            progress(&format!(
                "{image_id} is {} ({}m{:02}s)",
                info.state,
                secs / 60,
                secs % 60
            ));
            last = Some((info.state.clone(), Instant::now()));
        }
        if t0.elapsed() + delay > timeout {
            return Err(DistributeError::WaitTimeout {
                id: image_id.to_string(),
                region: clients.region.clone(),
                secs: timeout.as_secs(),
                state: info.state,
            });
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(15));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_accounts_reach_the_snapshots() {
        let shares = Shares {
            accounts: vec!["111122223333".into()],
            organizations: vec![
                "arn:aws:organizations::111122223333:organization/o-abcdefghij".into(),
            ],
            organizational_units: vec![
                "arn:aws:organizations::111122223333:ou/o-abcdefghij/ou-abcd-12345678".into(),
            ],
            public: true,
        };
        let g = grants(&shares);
        assert_eq!(g.len(), 4);
        assert_eq!(snapshot_grants(&g), ["111122223333"]);
        for x in &g {
            assert_eq!(
                Grant::from_launch_permission(&x.launch_permission()).as_ref(),
                Some(x)
            );
        }
    }

    #[test]
    fn tags_are_filled_in_not_rewritten() {
        let t = |k: &str, v: &str| (k.to_string(), v.to_string());
        let have = vec![
            t("kiln:name", "web"),
            t(TAG_KILN_VERSION, "0.0.1"),
            t("team", "old"),
        ];
        let wanted = vec![
            t("kiln:name", "web"),
            t(TAG_KILN_VERSION, "0.1.0"),
            t("team", "platform"),
            t("kiln:version", "1"),
        ];
        assert_eq!(
            missing_tags(&have, &wanted),
            [t("team", "platform"), t("kiln:version", "1")]
        );
    }

    #[test]
    fn deprecation_times_are_whole_future_minutes() {
        let now = 1_800_000_000;
        assert_eq!(
            effective_deprecation(now + 3600 + 59, now, None),
            Some(now + 3600)
        );
        // Past: deprecate right away, once.
        let soon = effective_deprecation(now - 10, now, None).unwrap();
        assert!(soon > now && soon <= now + 180 && soon % 60 == 0);
        assert_eq!(effective_deprecation(now - 10, now, Some(now - 5000)), None);
    }
}
