//! `kiln images list|copy|share|unshare|deprecate|deregister|prune`: kiln's own AMIs, found by
//! the kiln tags. Images without them are never touched.

use super::aws_common;
use anyhow::Context;
use kiln::aws::distribute::{self, Grant};
use kiln::aws::images::{self, AmiInfo, Query};
use kiln::aws::retry::Retrier;
use kiln::aws::{connect, AwsOptions, Clients};
use std::process::ExitCode;
use std::time::Duration;
use tokio::runtime::Runtime;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// kiln's AMIs: name, version, architecture, creation date, state, deprecation, sharing.
    List(ListArgs),
    /// Copy an AMI into other regions, with its tags (launch permissions are not copied).
    Copy(CopyArgs),
    /// Grant launch permission on an AMI (accounts also get create-volume permission on its
    /// snapshots).
    Share(ShareArgs),
    /// Revoke what `share` grants, on the AMI and its snapshots.
    Unshare(ShareArgs),
    /// Schedule (or cancel) an AMI's deprecation.
    Deprecate(DeprecateArgs),
    /// Deregister an AMI and delete its snapshots, in each region given.
    Deregister(DeregisterArgs),
    /// Keep the newest N versions of a recipe's AMIs in each region; deregister the rest.
    Prune(PruneArgs),
}

/// Where to look.
#[derive(Debug, Clone, clap::Args)]
pub struct Where {
    /// AWS region; repeat for several (default: the standard chain's region).
    #[arg(long = "region")]
    pub regions: Vec<String>,
    /// AWS profile from ~/.aws/config.
    #[arg(long)]
    pub profile: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Only the images of this recipe name (`kiln:name`).
    #[arg(long)]
    pub name: Option<String>,
    /// Print a JSON array.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub at: Where,
}

#[derive(Debug, clap::Args)]
pub struct CopyArgs {
    pub image_id: String,
    /// Destination region; repeat for several.
    #[arg(long = "to", required = true)]
    pub to: Vec<String>,
    /// Seconds to wait for each copy to become available.
    #[arg(long, default_value_t = 7200)]
    pub wait_timeout: u64,
    /// The source region is the first --region.
    #[command(flatten)]
    pub at: Where,
}

#[derive(Debug, clap::Args)]
pub struct ShareArgs {
    pub image_id: String,
    /// A 12-digit AWS account id; repeatable.
    #[arg(long = "account")]
    pub accounts: Vec<String>,
    /// An organization ARN; repeatable.
    #[arg(long = "organization")]
    pub organizations: Vec<String>,
    /// An organizational unit ARN; repeatable.
    #[arg(long = "ou")]
    pub ous: Vec<String>,
    /// Every AWS account (the `all` group).
    #[arg(long)]
    pub public: bool,
    #[command(flatten)]
    pub at: Where,
}

#[derive(Debug, clap::Args)]
#[group(id = "when", required = true, multiple = false, args = ["at_time", "after", "cancel"])]
pub struct DeprecateArgs {
    pub image_id: String,
    /// A UTC time, like 2027-12-31T00:00:00Z.
    #[arg(long = "at")]
    pub at_time: Option<String>,
    /// A duration from now, like 90d (units m, h, d, w).
    #[arg(long = "in")]
    pub after: Option<String>,
    /// Cancel the scheduled deprecation.
    #[arg(long)]
    pub cancel: bool,
    #[command(flatten)]
    pub at: Where,
}

#[derive(Debug, clap::Args)]
pub struct DeregisterArgs {
    /// The image in the first --region; in the other regions, the copies of it (same
    /// kiln:image-sha256 and AMI name) are deregistered too.
    pub image_id: String,
    /// Keep the snapshots.
    #[arg(long)]
    pub keep_snapshots: bool,
    /// Say what would be done; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub at: Where,
}

#[derive(Debug, clap::Args)]
pub struct PruneArgs {
    /// The recipe name (`kiln:name`).
    #[arg(long)]
    pub name: String,
    /// How many of the newest versions to keep (per region and architecture).
    #[arg(long)]
    pub keep: usize,
    /// Say what would be done; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub at: Where,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let rt = aws_common::runtime()?;
    let retrier = Retrier::default();
    match a.command {
        Cmd::List(a) => list(&rt, &retrier, a),
        Cmd::Copy(a) => copy(&rt, &retrier, a),
        Cmd::Share(a) => share(&rt, &retrier, a, true),
        Cmd::Unshare(a) => share(&rt, &retrier, a, false),
        Cmd::Deprecate(a) => deprecate(&rt, &retrier, a),
        Cmd::Deregister(a) => deregister(&rt, &retrier, a),
        Cmd::Prune(a) => prune(&rt, &retrier, a),
    }
}

impl Where {
    /// Clients for each region given (or the default one).
    fn clients(&self, rt: &Runtime) -> anyhow::Result<Vec<Clients>> {
        let regions: Vec<Option<String>> = match self.regions.is_empty() {
            true => vec![None],
            false => self.regions.iter().cloned().map(Some).collect(),
        };
        regions
            .into_iter()
            .map(|region| {
                Ok(rt.block_on(connect(&AwsOptions {
                    region,
                    profile: self.profile.clone(),
                }))?)
            })
            .collect()
    }
}

/// Left-aligned columns, two spaces apart.
pub fn columns<const N: usize>(head: &[&str; N], rows: &[[String; N]]) -> String {
    let mut width: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = width[i]));
            }
        }
        s.push('\n');
        s
    };
    let mut out = line(head.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

fn list(rt: &Runtime, retrier: &Retrier, a: ListArgs) -> anyhow::Result<ExitCode> {
    let q = Query {
        name: a.name.clone(),
        ..Default::default()
    };
    let mut found: Vec<(AmiInfo, Vec<Grant>)> = Vec::new();
    for c in a.at.clients(rt)? {
        rt.block_on(async {
            for i in images::find(&c, retrier, &q).await? {
                let g = distribute::image_grants(&c, retrier, &i.image_id).await?;
                found.push((i, g));
            }
            Ok::<_, anyhow::Error>(())
        })?;
    }
    if a.json {
        let v: Vec<serde_json::Value> = found.iter().map(|(i, g)| list_json(i, g)).collect();
        println!("{}", serde_json::Value::Array(v));
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<[String; 9]> = found
        .iter()
        .map(|(i, g)| {
            let id = i.identity().unwrap_or_else(|| unreachable_identity(i));
            [
                i.region.clone(),
                i.image_id.clone(),
                id.name,
                id.version,
                i.architecture.clone().unwrap_or_else(|| "-".into()),
                i.creation_date.clone().unwrap_or_else(|| "-".into()),
                i.state.clone(),
                i.deprecation_time.clone().unwrap_or_else(|| "-".into()),
                sharing(g),
            ]
        })
        .collect();
    let head = [
        "REGION",
        "IMAGE",
        "NAME",
        "VERSION",
        "ARCH",
        "CREATED",
        "STATE",
        "DEPRECATES",
        "SHARED",
    ];
    print!("{}", columns(&head, &rows));
    Ok(ExitCode::SUCCESS)
}

/// `find` only returns images with the kiln tags; this is never reached.
fn unreachable_identity(i: &AmiInfo) -> kiln::aws::ImageIdentity {
    kiln::aws::ImageIdentity {
        name: i.ami_name.clone(),
        version: "?".into(),
        sha256: String::new(),
    }
}

fn sharing(g: &[Grant]) -> String {
    if g.is_empty() {
        return "private".into();
    }
    let count = |f: fn(&Grant) -> bool| g.iter().filter(|x| f(x)).count();
    let mut parts = Vec::new();
    if g.contains(&Grant::Public) {
        parts.push("public".to_string());
    }
    for (n, what) in [
        (count(|x| matches!(x, Grant::Account(_))), "account(s)"),
        (
            count(|x| matches!(x, Grant::Organization(_))),
            "organization(s)",
        ),
        (
            count(|x| matches!(x, Grant::OrganizationalUnit(_))),
            "OU(s)",
        ),
    ] {
        if n > 0 {
            parts.push(format!("{n} {what}"));
        }
    }
    parts.join(", ")
}

fn list_json(i: &AmiInfo, g: &[Grant]) -> serde_json::Value {
    let id = i.identity().unwrap_or_else(|| unreachable_identity(i));
    let pick = |f: fn(&Grant) -> Option<&String>| g.iter().filter_map(f).collect::<Vec<_>>();
    serde_json::json!({
        "region": i.region,
        "image_id": i.image_id,
        "ami_name": i.ami_name,
        "name": id.name,
        "version": id.version,
        "image_sha256": id.sha256,
        "architecture": i.architecture,
        "creation_date": i.creation_date,
        "state": i.state,
        "deprecation_time": i.deprecation_time,
        "snapshot_ids": i.snapshot_ids,
        "shared_with": {
            "public": g.contains(&Grant::Public),
            "accounts": pick(|x| if let Grant::Account(a) = x { Some(a) } else { None }),
            "organizations": pick(|x| if let Grant::Organization(a) = x { Some(a) } else { None }),
            "organizational_units":
                pick(|x| if let Grant::OrganizationalUnit(a) = x { Some(a) } else { None }),
        },
    })
}

/// The image `id` in the first region given; refuses images kiln did not make.
fn source(
    rt: &Runtime,
    retrier: &Retrier,
    at: &Where,
    id: &str,
) -> anyhow::Result<(Clients, AmiInfo)> {
    let c = at.clients(rt)?.remove(0);
    let info = rt.block_on(images::get(&c, retrier, id))?;
    Ok((c, info))
}

fn copy(rt: &Runtime, retrier: &Retrier, a: CopyArgs) -> anyhow::Result<ExitCode> {
    let (_, src) = source(rt, retrier, &a.at, &a.image_id)?;
    let sha = src.identity().map(|i| i.sha256).unwrap_or_default();
    // Tags travel; AWS's own (aws:…) cannot be set by anyone.
    let tags: Vec<(String, String)> = src
        .tags
        .iter()
        .filter(|(k, _)| !k.starts_with("aws:"))
        .cloned()
        .collect();
    let mut failed = false;
    for region in &a.to {
        let c = rt.block_on(connect(&AwsOptions {
            region: Some(region.clone()),
            profile: a.at.profile.clone(),
        }))?;
        let progress = |m: &str| eprintln!("{region}: {m}");
        let r = rt.block_on(distribute::ensure_copy(
            &c,
            retrier,
            &src,
            &sha,
            None,
            &tags,
            Duration::from_secs(a.wait_timeout),
            &progress,
        ));
        match r.map_err(anyhow::Error::from).and_then(|(info, made)| {
            rt.block_on(distribute::ensure_tags(&c, retrier, &info, &tags))?;
            Ok((info, made))
        }) {
            Ok((info, made)) => println!(
                "{region}  {}  {}",
                info.image_id,
                if made { "copied" } else { "already there" }
            ),
            Err(e) => {
                eprintln!("{region}: {e:#}");
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn share(rt: &Runtime, retrier: &Retrier, a: ShareArgs, add: bool) -> anyhow::Result<ExitCode> {
    let shares = kiln::recipe::Shares {
        accounts: checked(
            &a.accounts,
            kiln::recipe::valid_account,
            "--account",
            "a 12-digit account id",
        )?,
        organizations: checked(
            &a.organizations,
            kiln::recipe::valid_organization_arn,
            "--organization",
            "arn:aws:organizations::ACCOUNT:organization/o-…",
        )?,
        organizational_units: checked(
            &a.ous,
            kiln::recipe::valid_ou_arn,
            "--ou",
            "arn:aws:organizations::ACCOUNT:ou/o-…/ou-…-…",
        )?,
        public: a.public,
    };
    if shares.is_empty() {
        anyhow::bail!(
            "nothing to {}: give --account, --organization, --ou or --public",
            if add { "share" } else { "unshare" }
        );
    }
    let (c, info) = source(rt, retrier, &a.at, &a.image_id)?;
    let grants = distribute::grants(&shares);
    let changes = rt.block_on(distribute::set_grants(&c, retrier, &info, &grants, add))?;
    let verb = if add { "granted" } else { "revoked" };
    for g in &changes.image {
        println!("{verb} launch permission on {} to {g}", info.image_id);
    }
    for (snap, accounts) in &changes.snapshots {
        for acc in accounts {
            println!("{verb} create-volume permission on {snap} to account {acc}");
        }
    }
    if changes.is_empty() {
        println!("nothing to change on {}", info.image_id);
    }
    Ok(ExitCode::SUCCESS)
}

fn checked(
    v: &[String],
    ok: fn(&str) -> bool,
    flag: &str,
    want: &str,
) -> anyhow::Result<Vec<String>> {
    for s in v {
        if !ok(s) {
            anyhow::bail!("{flag} {s:?} is malformed; expected {want}");
        }
    }
    Ok(v.to_vec())
}

fn deprecate(rt: &Runtime, retrier: &Retrier, a: DeprecateArgs) -> anyhow::Result<ExitCode> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("the system clock is before 1970")?
        .as_secs() as i64;
    let at = match (&a.at_time, &a.after) {
        (Some(t), _) => Some(kiln::recipe::parse_utc(t).map_err(|e| anyhow::anyhow!("--at: {e}"))?),
        (_, Some(d)) => {
            Some(now + kiln::recipe::parse_duration(d).map_err(|e| anyhow::anyhow!("--in: {e}"))?)
        }
        _ => None,
    };
    if let Some(t) = at {
        // EC2 refuses times in the past.
        if t <= now {
            anyhow::bail!(
                "--at {} is in the past; EC2 only takes future deprecation times",
                kiln::recipe::format_utc(t)
            );
        }
    }
    let (c, info) = source(rt, retrier, &a.at, &a.image_id)?;
    let at = at.map(distribute::whole_minute);
    let changed = rt.block_on(distribute::set_deprecation(&c, retrier, &info, at))?;
    match (at, changed) {
        (Some(t), _) => println!(
            "{} deprecates at {}",
            info.image_id,
            kiln::recipe::format_utc(t)
        ),
        (None, true) => println!("{}: deprecation cancelled", info.image_id),
        (None, false) => println!("{}: no deprecation was scheduled", info.image_id),
    }
    Ok(ExitCode::SUCCESS)
}

fn deregister(rt: &Runtime, retrier: &Retrier, a: DeregisterArgs) -> anyhow::Result<ExitCode> {
    let clients = a.at.clients(rt)?;
    let src = rt.block_on(images::get(&clients[0], retrier, &a.image_id))?;
    let sha = src.identity().map(|i| i.sha256);
    let mut targets = vec![(clients[0].clone(), src.clone())];
    for c in &clients[1..] {
        let q = Query {
            sha256: sha.clone(),
            ami_name: Some(src.ami_name.clone()),
            name: None,
        };
        let found = rt.block_on(images::find(c, retrier, &q))?;
        if found.is_empty() {
            eprintln!(
                "{}: no copy of {} ({})",
                c.region, src.image_id, src.ami_name
            );
        }
        targets.extend(found.into_iter().map(|i| (c.clone(), i)));
    }
    for (c, img) in &targets {
        let steps = rt.block_on(images::deregister(
            c,
            retrier,
            img,
            a.keep_snapshots,
            a.dry_run,
        ))?;
        for s in steps {
            println!("{}{s}", if a.dry_run { "would " } else { "" });
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn prune(rt: &Runtime, retrier: &Retrier, a: PruneArgs) -> anyhow::Result<ExitCode> {
    let q = Query {
        name: Some(a.name.clone()),
        ..Default::default()
    };
    let would = if a.dry_run { "would " } else { "" };
    for c in a.at.clients(rt)? {
        let found = rt.block_on(images::find(&c, retrier, &q))?;
        let plan = images::prune_plan(&found, a.keep);
        for i in &plan.keep {
            let v = i.identity().map(|i| i.version).unwrap_or_default();
            println!("{}: keep {} ({} {v})", c.region, i.image_id, a.name);
        }
        for i in &plan.skipped {
            println!("{}: skip {} (still {})", c.region, i.image_id, i.state);
        }
        for i in &plan.remove {
            let steps = rt.block_on(images::deregister(&c, retrier, i, false, a.dry_run))?;
            for s in steps {
                println!("{}: {would}{s}", c.region);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
