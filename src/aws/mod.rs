//! Talking to AWS: clients from the standard configuration chain, retries, EBS snapshots, AMI
//! registration, and distribution (copies, shares, deprecation, retention) by `kiln publish` and
//! `kiln images`.
//!
//! Credentials and region come from aws-config's default chain (environment, profiles, SSO,
//! IMDS), overridden by `--region` / `--profile`. `AWS_ENDPOINT_URL` (and the per-service
//! `AWS_ENDPOINT_URL_EBS` / `AWS_ENDPOINT_URL_EC2`) is honoured by aws-config itself, for both
//! clients.
//!
//! Tags kiln puts on every snapshot and image it makes (see [`kiln_tags`]):
//!
//! | key | value |
//! |---|---|
//! | `kiln:name` | the recipe's `image.name` |
//! | `kiln:version` | the recipe's `image.version` |
//! | `kiln:image-sha256` | SHA-256 (hex) of the whole raw disk |
//! | `kiln:kiln-version` | the version of kiln that made it |

pub mod classify;
pub mod copy;
pub mod created;
pub mod distribute;
pub mod guard;
pub mod images;
pub mod pace;
pub mod publish;
pub mod register;
pub mod retry;
pub mod snapshot;
pub mod upload;
pub mod verify;

use std::time::Duration;

/// Where and as whom to connect.
#[derive(Debug, Clone, Default)]
pub struct AwsOptions {
    pub region: Option<String>,
    pub profile: Option<String>,
}

/// The two clients kiln needs, for one region.
#[derive(Debug, Clone)]
pub struct Clients {
    pub ebs: aws_sdk_ebs::Client,
    pub ec2: aws_sdk_ec2::Client,
    pub region: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("no AWS region configured; pass --region, or set AWS_REGION or a profile's region")]
    NoRegion,
}

/// Builds clients from the standard chain. The SDK's own retries are off: [`retry`] does them,
/// logs them and counts them.
pub async fn connect(opts: &AwsOptions) -> Result<Clients, ConnectError> {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        // The service clients and the credential providers (STS, SSO, IMDS) all use it.
        .http_client(https_client())
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(10))
                .build(),
        );
    if let Some(r) = &opts.region {
        loader = loader.region(aws_config::Region::new(r.clone()));
    }
    if let Some(p) = &opts.profile {
        loader = loader.profile_name(p);
    }
    let conf = loader.load().await;
    let region = conf
        .region()
        .map(|r| r.to_string())
        .ok_or(ConnectError::NoRegion)?;
    Ok(Clients {
        ebs: aws_sdk_ebs::Client::new(&conf),
        ec2: aws_sdk_ec2::Client::new(&conf),
        region,
    })
}

/// hyper 1 + rustls 0.23 over ring, with the platform's root certificates: the SDK's default
/// client without aws-lc-rs (see Cargo.toml). Every SDK client kiln makes needs it, since the
/// SDK crates are built without a default client.
pub fn https_client() -> aws_sdk_ec2::config::SharedHttpClient {
    use aws_smithy_http_client::tls;
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https()
}

/// What the kiln tags say about an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageIdentity {
    pub name: String,
    pub version: String,
    pub sha256: String,
}

/// The tags kiln puts on snapshots and images, as (key, value) pairs.
pub fn kiln_tags(id: &ImageIdentity) -> Vec<(String, String)> {
    vec![
        ("kiln:name".into(), id.name.clone()),
        ("kiln:version".into(), id.version.clone()),
        ("kiln:image-sha256".into(), id.sha256.clone()),
        (
            "kiln:kiln-version".into(),
            env!("CARGO_PKG_VERSION").to_string(),
        ),
    ]
}

/// EC2 tags from key/value pairs.
pub fn ec2_tags(tags: &[(String, String)]) -> Vec<aws_sdk_ec2::types::Tag> {
    tags.iter()
        .map(|(k, v)| aws_sdk_ec2::types::Tag::builder().key(k).value(v).build())
        .collect()
}

/// TagSpecifications that put `tags` on an image and on its snapshots as they are created
/// (RegisterImage, CopyImage).
pub fn image_and_snapshot_tags(
    tags: &[(String, String)],
) -> Vec<aws_sdk_ec2::types::TagSpecification> {
    let tags = ec2_tags(tags);
    [
        aws_sdk_ec2::types::ResourceType::Image,
        aws_sdk_ec2::types::ResourceType::Snapshot,
    ]
    .into_iter()
    .map(|rt| {
        aws_sdk_ec2::types::TagSpecification::builder()
            .resource_type(rt)
            .set_tags(Some(tags.clone()))
            .build()
    })
    .collect()
}

/// EC2 CreateTags on any resource (image or snapshot), retried.
pub async fn create_tags(
    clients: &Clients,
    retrier: &retry::Retrier,
    id: &str,
    tags: &[(String, String)],
) -> Result<(), retry::CallError> {
    let tags = ec2_tags(tags);
    retrier
        .call("CreateTags", || {
            clients
                .ec2
                .create_tags()
                .resources(id)
                .set_tags(Some(tags.clone()))
                .send()
        })
        .await?;
    Ok(())
}
