//! `kiln register SNAPSHOT_ID --recipe RECIPE [--json]`: an AMI from a snapshot, as `[ami]` says.
//! The snapshot is the user's: whatever fails, it is never deleted. An image this run registered
//! that never becomes available is deregistered (the error says so). The AMI name is checked
//! first: if an image of this snapshot already has it, that image is the answer; any other
//! holder is an error, before anything is registered.

use super::aws_common::{self, AwsArgs};
use kiln::aws::guard::Guard;
use kiln::aws::register;
use kiln::recipe::Recipe;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct Args {
    pub snapshot_id: String,
    /// The recipe whose [ami] table describes the image.
    #[arg(long)]
    pub recipe: PathBuf,
    /// Print {"image_id","snapshot_id","region"} on stdout.
    #[arg(long)]
    pub json: bool,
    /// Seconds to wait for the image to become `available`.
    #[arg(long, default_value_t = 3600)]
    pub wait_timeout: u64,
    #[command(flatten)]
    pub aws: AwsArgs,
    #[command(flatten)]
    pub trust: super::trust::TrustArgs,
    #[command(flatten)]
    pub retry: aws_common::RetryArgs,
}

pub fn run(mut a: Args) -> anyhow::Result<ExitCode> {
    let recipe = Recipe::load_with(&a.recipe, &a.trust.trust())?;
    let Some(ami) = recipe.ami.clone() else {
        anyhow::bail!(
            "{}: the recipe has no [ami] table; add one to register an image",
            a.recipe.display()
        );
    };
    if a.aws.region.is_none() {
        a.aws.region = ami.regions.first().cloned();
    }
    let rt = aws_common::runtime()?;
    let clients = a.aws.connect(rt)?;
    let retrier = a.retry.retrier();
    let id = a.snapshot_id.clone();
    // The kiln tags the snapshot carries (its digests above all), then [ami.tags].
    let mut tags: Vec<(String, String)> = rt
        .block_on(register::snapshot_tags(&clients, &retrier, &id))?
        .into_iter()
        .filter(|(k, _)| k.starts_with("kiln:"))
        .collect();
    for (k, v) in kiln::aws::kiln_tags(&kiln::aws::ImageIdentity {
        name: recipe.image.name.clone(),
        version: recipe.image.version.clone(),
        ..Default::default()
    }) {
        if !tags.iter().any(|(t, _)| *t == k) && !v.is_empty() {
            tags.push((k, v));
        }
    }
    tags.extend(ami.tags.iter().cloned());
    // The guard records only what this run makes (the image): the user's snapshot is never in
    // it, so neither a failure nor Ctrl-C can delete it.
    let guard = Guard::new(rt.handle(), &clients, &retrier);
    let info = kiln::aws::publish::register_snapshot(
        rt.handle(),
        &clients,
        &retrier,
        &ami,
        recipe.image.arch,
        &id,
        &tags,
        Duration::from_secs(a.wait_timeout),
        &|m| tracing::info!("{m}"),
        &guard,
    )
    .map_err(|e| anyhow::anyhow!(e))?;
    guard.finish();
    let image = info.image_id;
    if a.json {
        let v = serde_json::json!({"image_id": image, "snapshot_id": id, "region": clients.region});
        println!("{v}");
    } else {
        println!("{image}");
    }
    Ok(ExitCode::SUCCESS)
}
