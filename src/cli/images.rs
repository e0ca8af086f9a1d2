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
    /// Confirm `share --public`: the AMI becomes launchable by every AWS account.
    #[arg(long)]
    pub allow_public: bool,
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
    #[command(flatten)]
    pub recipe: RecipeRegions,
}

#[derive(Debug, clap::Args)]
pub struct DeregisterArgs {
    /// The image in the first --region; in the other regions, the copies of it (same digest
    /// tags and AMI name) are deregistered too.
    pub image_id: String,
    /// Keep the snapshots.
    #[arg(long)]
    pub keep_snapshots: bool,
    /// Say what would be done; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub at: Where,
    #[command(flatten)]
    pub recipe: RecipeRegions,
}

#[derive(Debug, clap::Args)]
pub struct PruneArgs {
    /// The recipe name (`kiln:name`); with --recipe, the recipe's.
    #[arg(long, required_unless_present = "recipe")]
    pub name: Option<String>,
    /// How many of the newest usable versions to keep (per region and architecture); failed
    /// images never count, and always go.
    #[arg(long)]
    pub keep: usize,
    /// Confirm --keep 0: every image of the name goes.
    #[arg(long)]
    pub all: bool,
    /// Say what would be done; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub at: Where,
    #[command(flatten)]
    pub recipe: RecipeRegions,
}

/// `--recipe FILE`: act in every region of the recipe's `[ami] regions`, as `kiln publish`
/// made the image there.
#[derive(Debug, Clone, clap::Args)]
pub struct RecipeRegions {
    /// Act in every region of this recipe's [ami] regions (where publish put its copies).
    #[arg(long, conflicts_with = "regions")]
    pub recipe: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub trust: super::trust::TrustArgs,
}

impl RecipeRegions {
    /// The recipe, if given, with its `[ami] regions` (an error if it has none).
    fn load(&self) -> anyhow::Result<Option<(kiln::recipe::Recipe, Vec<String>)>> {
        let Some(path) = &self.recipe else {
            return Ok(None);
        };
        let recipe = kiln::recipe::Recipe::load_with(path, &self.trust.trust())?;
        let regions = recipe
            .ami
            .as_ref()
            .map(|a| a.regions.clone())
            .unwrap_or_default();
        if regions.is_empty() {
            anyhow::bail!(
                "{}: the recipe names no [ami] regions; give --region instead",
                path.display()
            );
        }
        Ok(Some((recipe, regions)))
    }

    /// `at`, with the recipe's regions when --recipe is given.
    fn apply(&self, at: &Where) -> anyhow::Result<Where> {
        Ok(match self.load()? {
            Some((_, regions)) => Where {
                regions,
                profile: at.profile.clone(),
            },
            None => at.clone(),
        })
    }
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let rt = aws_common::runtime()?;
    let retrier = Retrier::default();
    match a.command {
        Cmd::List(a) => list(rt, &retrier, a),
        Cmd::Copy(a) => copy(rt, &retrier, a),
        Cmd::Share(a) => share(rt, &retrier, a, true),
        Cmd::Unshare(a) => share(rt, &retrier, a, false),
        Cmd::Deprecate(a) => deprecate(rt, &retrier, a),
        Cmd::Deregister(a) => deregister(rt, &retrier, a),
        Cmd::Prune(a) => prune(rt, &retrier, a),
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
        ..Default::default()
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
        "blocks_sha256": id.blocks,
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
    // `source` refuses images without the kiln tags.
    let want = src.identity().unwrap_or_default();
    let sha = kiln::aws::earlier::WholeDiskSha256::known(want.sha256.clone());
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
        let r = rt.block_on(kiln::aws::copy::ensure_copy(
            &c,
            retrier,
            &src,
            &want,
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
                if made.is_some() {
                    "copied"
                } else {
                    "already there"
                }
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
    // As `public = true` in a recipe needs `kiln publish --allow-public`.
    if add && a.public && !a.allow_public {
        anyhow::bail!(
            "--public makes {} launchable by every AWS account; add --allow-public to confirm it",
            a.image_id
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
    let at = at.map(distribute::whole_minute);
    let targets = image_and_copies(rt, retrier, &a.recipe.apply(&a.at)?, &a.image_id)?;
    for (c, info) in &targets {
        let changed = rt.block_on(distribute::set_deprecation(c, retrier, info, at))?;
        let id = &info.image_id;
        let region = &c.region;
        match (at, changed) {
            (Some(t), _) => println!(
                "{id} in {region} deprecates at {}",
                kiln::recipe::format_utc(t)
            ),
            (None, true) => println!("{id} in {region}: deprecation cancelled"),
            (None, false) => println!("{id} in {region}: no deprecation was scheduled"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The image `id` in the first region of `at` (refused unless it is kiln's), and its copies
/// (the same digest tags and AMI name) in the others; a region without a copy is named
/// on stderr.
fn image_and_copies(
    rt: &Runtime,
    retrier: &Retrier,
    at: &Where,
    id: &str,
) -> anyhow::Result<Vec<(Clients, AmiInfo)>> {
    let clients = at.clients(rt)?;
    let src = rt.block_on(images::get(&clients[0], retrier, id))?;
    let want = src.identity().unwrap_or_default();
    let mut targets = vec![(clients[0].clone(), src.clone())];
    for c in &clients[1..] {
        let q = Query::disk(&want, &src.ami_name);
        let found = rt.block_on(images::find(c, retrier, &q))?;
        if found.is_empty() {
            eprintln!(
                "{}: no copy of {} ({})",
                c.region, src.image_id, src.ami_name
            );
        }
        targets.extend(found.into_iter().map(|i| (c.clone(), i)));
    }
    Ok(targets)
}

fn deregister(rt: &Runtime, retrier: &Retrier, a: DeregisterArgs) -> anyhow::Result<ExitCode> {
    let targets = image_and_copies(rt, retrier, &a.recipe.apply(&a.at)?, &a.image_id)?;
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
    if a.keep == 0 && !a.all {
        anyhow::bail!(
            "--keep 0 deregisters every image of the name in these regions; add --all to \
             confirm it"
        );
    }
    let recipe = a.recipe.load()?;
    let name = match (&a.name, &recipe) {
        (Some(n), Some((r, _))) if *n != r.image.name => anyhow::bail!(
            "--name {n} is not the recipe's name ({}); give one of them",
            r.image.name
        ),
        (Some(n), _) => n.clone(),
        (None, Some((r, _))) => r.image.name.clone(),
        (None, None) => anyhow::bail!("give --name or --recipe"),
    };
    let q = Query {
        name: Some(name.clone()),
        ..Default::default()
    };
    let would = if a.dry_run { "would " } else { "" };
    let clients = a.recipe.apply(&a.at)?.clients(rt)?;
    for c in &clients {
        let found = rt.block_on(images::find(c, retrier, &q))?;
        let plan = images::prune_plan(&found, a.keep);
        for i in &plan.keep {
            let v = i.identity().map(|i| i.version).unwrap_or_default();
            println!("{}: keep {} ({name} {v})", c.region, i.image_id);
        }
        for i in &plan.skipped {
            println!("{}: skip {} (still {})", c.region, i.image_id, i.state);
        }
        for i in &plan.remove {
            let steps = rt.block_on(images::deregister(c, retrier, i, false, a.dry_run))?;
            for s in steps {
                println!("{}: {would}{s}", c.region);
            }
        }
    }
    if a.at.regions.is_empty() && recipe.is_none() {
        eprintln!("{}", elsewhere(rt, retrier, &clients[0], &a.at, &q));
    }
    Ok(ExitCode::SUCCESS)
}

/// After pruning only the default region: which other regions of the account hold images of
/// the name (`kiln publish` copies into every region of `[ami] regions`, and those copies were
/// not pruned). Read-only.
fn elsewhere(rt: &Runtime, retrier: &Retrier, c: &Clients, at: &Where, q: &Query) -> String {
    let name = q.name.clone().unwrap_or_default();
    let head = format!(
        "note: pruned {} only (no --region or --recipe given)",
        c.region
    );
    let hint = "pass --recipe FILE (its [ami] regions) or --region for each";
    let listed = rt.block_on(retrier.call("DescribeRegions", || c.ec2.describe_regions().send()));
    let regions: Vec<String> = match listed {
        Ok(out) => out
            .regions()
            .iter()
            .filter_map(|r| r.region_name().map(str::to_string))
            .filter(|r| *r != c.region)
            .collect(),
        Err(e) => {
            return format!(
                "{head}; the account's other regions could not be listed ({e}), so {name} \
                 images there were not looked at: {hint}"
            )
        }
    };
    let looked = rt.block_on(futures::future::join_all(regions.iter().map(|r| async {
        let c = connect(&AwsOptions {
            region: Some(r.clone()),
            profile: at.profile.clone(),
        })
        .await
        .map_err(|e| e.to_string())?;
        images::find(&c, retrier, q)
            .await
            .map(|v| v.len())
            .map_err(|e| e.to_string())
    })));
    let mut found = Vec::new();
    let mut unknown = Vec::new();
    for (r, n) in regions.iter().zip(looked) {
        match n {
            Ok(0) => {}
            Ok(n) => found.push(format!("{r} ({n})")),
            Err(e) => unknown.push(format!("{r} ({e})")),
        }
    }
    let mut out = head;
    if !found.is_empty() {
        out.push_str(&format!(
            "; {name} images in {} were left as they are: {hint}",
            found.join(", ")
        ));
    } else if unknown.is_empty() {
        out.push_str(&format!("; no other region holds {name} images"));
    }
    if !unknown.is_empty() {
        out.push_str(&format!(
            "; could not look in {}: {hint}",
            unknown.join(", ")
        ));
    }
    out
}
