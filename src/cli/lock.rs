//! `kiln lock RECIPE`: resolve the recipe's packages and write `<recipe stem>.lock`.

use kiln::packages::{self, Options};
use kiln::recipe::Recipe;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The recipe (TOML).
    pub recipe: PathBuf,
    #[command(flatten)]
    pub trust: super::trust::TrustArgs,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let recipe = Recipe::load_with(&args.recipe, &args.trust.trust())?;
    if recipe.packages.is_none() {
        anyhow::bail!(
            "{}: the recipe has no [packages] table; expected one to lock",
            args.recipe.display()
        );
    }
    let (path, lock) = packages::lock_recipe(&recipe, &Options::default())?;
    println!(
        "{} packages locked in {}",
        lock.packages.len(),
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}
