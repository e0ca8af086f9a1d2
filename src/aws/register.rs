//! RegisterImage from the recipe's `[ami]`, then wait for `available`.
//!
//! Reference: <https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_RegisterImage.html>.
//! Always HVM; the architecture comes from the image's arch; the root mapping points at the
//! snapshot; image and snapshot are tagged with the kiln tags and `[ami.tags]`.

use super::retry::{CallError, Retrier};
use super::Clients;
use crate::recipe::{Ami, Arch};
use aws_sdk_ec2::operation::register_image::builders::RegisterImageFluentBuilder;
use aws_sdk_ec2::types::{
    ArchitectureValues, BlockDeviceMapping, BootModeValues, EbsBlockDevice, ImdsSupportValues,
    TpmSupportValues, VolumeType,
};
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error(transparent)]
    Call(#[from] CallError),
    #[error("RegisterImage answered without an image id")]
    NoImageId,
    #[error("image {id} went into state {state:?}: {reason}")]
    Failed {
        id: String,
        state: String,
        reason: String,
    },
    #[error(
        "image {id} is not available after {secs}s (last state {state:?}); raise --wait-timeout"
    )]
    WaitTimeout {
        id: String,
        secs: u64,
        state: String,
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

/// RegisterImage; returns the image id.
pub async fn register(
    clients: &Clients,
    retrier: &Retrier,
    ami: &Ami,
    arch: Arch,
    snapshot_id: &str,
    tags: &[(String, String)],
) -> Result<String, RegisterError> {
    let out = retrier
        .call("RegisterImage", || {
            request(clients.ec2.register_image(), ami, arch, snapshot_id, tags).send()
        })
        .await?;
    let id = out.image_id.ok_or(RegisterError::NoImageId)?;
    tracing::info!("registered {id} ({}) in {}", ami.name, clients.region);
    Ok(id)
}

/// Waits (with tokio timers) until DescribeImages says `available`.
pub async fn wait_available(
    clients: &Clients,
    retrier: &Retrier,
    image_id: &str,
    timeout: Duration,
) -> Result<(), RegisterError> {
    let t0 = Instant::now();
    let mut delay = Duration::from_secs(1);
    let mut state = String::from("unknown");
    loop {
        let out = retrier
            .call("DescribeImages", || {
                clients.ec2.describe_images().image_ids(image_id).send()
            })
            .await?;
        if let Some(img) = out.images().first() {
            state = img
                .state()
                .map(|s| s.as_str().to_string())
                .unwrap_or_default();
            match state.as_str() {
                "available" => return Ok(()),
                "failed" | "error" | "invalid" | "deregistered" => {
                    return Err(RegisterError::Failed {
                        id: image_id.to_string(),
                        reason: img
                            .state_reason()
                            .and_then(|r| r.message())
                            .unwrap_or("")
                            .to_string(),
                        state,
                    })
                }
                _ => {}
            }
        }
        if t0.elapsed() + delay > timeout {
            return Err(RegisterError::WaitTimeout {
                id: image_id.to_string(),
                secs: timeout.as_secs(),
                state,
            });
        }
        tracing::info!("image {image_id} is {state}; waiting");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(15));
    }
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
