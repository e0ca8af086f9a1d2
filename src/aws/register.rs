//! RegisterImage from the recipe's `[ami]`, then wait for `available`.
//!
//! Reference: <https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_RegisterImage.html>.
//! Always HVM; the architecture comes from the image's arch; the root mapping points at the
//! snapshot; image and snapshot are tagged with the kiln tags and `[ami.tags]`.

use super::created::{NewImage, Origin};
use super::guard::Guard;
use super::images::AmiInfo;
use super::retry::{CallError, Retrier};
use super::Clients;
use crate::recipe::{Ami, Arch};
use aws_sdk_ec2::operation::register_image::builders::RegisterImageFluentBuilder;
use aws_sdk_ec2::types::{
    ArchitectureValues, BlockDeviceMapping, BootModeValues, EbsBlockDevice, Filter,
    ImdsSupportValues, TpmSupportValues, VolumeType,
};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error(transparent)]
    Call(#[from] CallError),
    #[error("RegisterImage answered without an image id")]
    NoImageId,
    #[error(
        "the AMI name {name:?} is taken in {region} by {holder}; AMI names are unique per \
         account and region: bump the recipe's version, change [ami] name, or deregister that \
         image"
    )]
    NameTaken {
        name: String,
        region: String,
        holder: String,
    },
}

/// The request RegisterImage gets for `ami`, with the root volume from `snapshot_id`.
pub fn request(
    b: RegisterImageFluentBuilder,
    ami: &Ami,
    arch: Arch,
    snapshot_id: &str,
    tags: &[(String, String)],
) -> RegisterImageFluentBuilder {
    let mut root = EbsBlockDevice::builder()
        .snapshot_id(snapshot_id)
        .volume_size(ami.volume_size_gib)
        .volume_type(VolumeType::from(ami.volume_type.as_str()))
        .delete_on_termination(ami.delete_on_termination);
    if let Some(i) = ami.iops {
        root = root.iops(i);
    }
    if let Some(t) = ami.throughput {
        root = root.throughput(t);
    }
    let mut b = b
        .name(&ami.name)
        .architecture(match arch {
            Arch::X86_64 => ArchitectureValues::X8664,
            Arch::Aarch64 => ArchitectureValues::Arm64,
        })
        .virtualization_type("hvm")
        .boot_mode(BootModeValues::from(ami.boot_mode.as_str()))
        .ena_support(ami.ena_support)
        .sriov_net_support(&ami.sriov_net_support)
        .root_device_name(&ami.root_device_name)
        .block_device_mappings(
            BlockDeviceMapping::builder()
                .device_name(&ami.root_device_name)
                .ebs(root.build())
                .build(),
        );
    for v in &ami.volumes {
        b = b.block_device_mappings(
            BlockDeviceMapping::builder()
                .device_name(&v.device_name)
                .ebs(
                    EbsBlockDevice::builder()
                        .volume_size(v.size_gib)
                        .volume_type(VolumeType::from(v.volume_type.as_str()))
                        .delete_on_termination(v.delete_on_termination)
                        .build(),
                )
                .build(),
        );
    }
    if let Some(d) = &ami.description {
        b = b.description(d);
    }
    if let Some(i) = &ami.imds_support {
        b = b.imds_support(ImdsSupportValues::from(i.as_str()));
    }
    if let Some(t) = &ami.tpm_support {
        b = b.tpm_support(TpmSupportValues::from(t.as_str()));
    }
    if let Some(u) = &ami.uefi_data {
        b = b.uefi_data(u);
    }
    b.set_tag_specifications(Some(super::image_and_snapshot_tags(tags)))
}

/// RegisterImage, recorded in `guard` from before the call; returns the image this run made.
///
/// RegisterImage takes no ClientToken, so a retry after an attempt that timed out but
/// succeeded is answered `InvalidAMIName.Duplicate`. The name was free when this run checked
/// ([`name_holder`]); the image now holding it is this run's if its root device is this
/// snapshot, and it is adopted. Any other holder is reported, and left alone.
#[allow(clippy::too_many_arguments)]
pub async fn register(
    clients: &Clients,
    retrier: &Retrier,
    ami: &Ami,
    arch: Arch,
    snapshot_id: &str,
    tags: &[(String, String)],
    guard: &Guard,
) -> Result<NewImage, RegisterError> {
    guard.registering(&ami.name, snapshot_id);
    let r = retrier
        .call("RegisterImage", || {
            request(clients.ec2.register_image(), ami, arch, snapshot_id, tags).send()
        })
        .await;
    let made = match r {
        Ok(out) => match out.image_id {
            Some(id) => NewImage::new(&id, &clients.region, Origin::Registered),
            None => {
                // It was made; its id is found by its name and snapshot.
                match find_made(clients, retrier, &ami.name, snapshot_id).await? {
                    Some(i) => i,
                    None => return Err(RegisterError::NoImageId),
                }
            }
        },
        Err(e) => {
            let duplicate = e.message.contains("InvalidAMIName.Duplicate");
            let adopted = match e.may_have_happened() {
                true => find_made(clients, retrier, &ami.name, snapshot_id).await?,
                false => None,
            };
            match adopted {
                Some(i) => {
                    tracing::warn!(
                        "RegisterImage: {}; {} (named {}, on snapshot {snapshot_id}) is the \
                         image an earlier attempt made",
                        e.message,
                        i.id(),
                        ami.name
                    );
                    i
                }
                None => {
                    guard.image_failed(&e);
                    if duplicate {
                        let holder = name_holder(clients, retrier, &ami.name).await?;
                        return Err(RegisterError::NameTaken {
                            name: ami.name.clone(),
                            region: clients.region.clone(),
                            holder: describe_holder(holder.as_ref()),
                        });
                    }
                    return Err(e.into());
                }
            }
        }
    };
    guard.image_made(&made);
    tracing::info!(
        "registered {} ({}) in {}",
        made.id(),
        ami.name,
        clients.region
    );
    Ok(made)
}

/// The image (owned by this account, in the client's region) that holds the AMI name `name`,
/// if any: AMI names are unique per account and region, so RegisterImage and CopyImage with it
/// would fail.
pub async fn name_holder(
    clients: &Clients,
    retrier: &Retrier,
    name: &str,
) -> Result<Option<AmiInfo>, CallError> {
    let filter = Filter::builder().name("name").values(name).build();
    let out = retrier
        .call("DescribeImages", || {
            clients
                .ec2
                .describe_images()
                .owners("self")
                .filters(filter.clone())
                .send()
        })
        .await?;
    Ok(out
        .images()
        .iter()
        .map(|i| AmiInfo::from_ec2(&clients.region, i))
        .find(|i| i.ami_name == name && i.state != "deregistered"))
}

/// "ami-… (kiln's web 1.2.0, available)" or "ami-… (not made by kiln, available)".
pub fn describe_holder(holder: Option<&AmiInfo>) -> String {
    match holder {
        None => "an image this account cannot see".into(),
        Some(h) => match h.identity() {
            Some(id) => format!(
                "{} (kiln's {} {}, image sha256 {}, {})",
                h.image_id, id.name, id.version, id.sha256, h.state
            ),
            None => format!("{} (not made by kiln, {})", h.image_id, h.state),
        },
    }
}

/// The image this run's RegisterImage made, found without its answer: the one under `name`
/// whose root device is `snapshot` (the name was free before, and the snapshot is this
/// registration's). Looked for a few times: a new image may take seconds to be listed.
pub async fn find_made(
    clients: &Clients,
    retrier: &Retrier,
    name: &str,
    snapshot: &str,
) -> Result<Option<NewImage>, CallError> {
    for i in 0..5 {
        if let Some(h) = name_holder(clients, retrier, name).await? {
            if h.root_snapshot_id.as_deref() == Some(snapshot) {
                return Ok(Some(NewImage::new(
                    &h.image_id,
                    &clients.region,
                    Origin::Registered,
                )));
            }
            return Ok(None);
        }
        if i < 4 {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
    Ok(None)
}

/// The tags of a snapshot (EC2 DescribeSnapshots).
pub async fn snapshot_tags(
    clients: &Clients,
    retrier: &Retrier,
    id: &str,
) -> Result<Vec<(String, String)>, CallError> {
    let out = retrier
        .call("DescribeSnapshots", || {
            clients.ec2.describe_snapshots().snapshot_ids(id).send()
        })
        .await?;
    Ok(out
        .snapshots()
        .first()
        .map(|s| {
            s.tags()
                .iter()
                .filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())))
                .collect()
        })
        .unwrap_or_default())
}
