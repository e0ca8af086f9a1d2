//! resolve_packages → fetch_packages → install_packages → configure_packages: the recipe's
//! Debian packages as the base tree, configured as a normal install leaves them.

use super::{step, BuildError};
use crate::configure;
use crate::manifest::PackageInfo;
use crate::packages;
use crate::recipe::Recipe;
use crate::tree::{ContentStore, Tree};

/// The installed base tree, the packages in it (sorted by name), and the maintainer-script
/// commands kiln did not apply.
pub(super) fn install(
    recipe: &Recipe,
    locked: bool,
    popts: &packages::Options,
    store: &ContentStore,
) -> Result<(Tree, Vec<PackageInfo>, configure::Report), BuildError> {
    let fetcher = packages::Fetcher::new(popts.cache.clone());
    let chosen = step("resolve_packages", || match locked {
        true => packages::resolve_locked(recipe),
        false => packages::resolve_fresh(recipe, &fetcher, popts),
    })?;
    let debs = step("fetch_packages", || {
        packages::fetch_packages(recipe, &chosen, &fetcher, popts)
    })?;
    let mut base = step("install_packages", || {
        let keep = fetcher.cache_dir().join("data-tar");
        packages::install_packages(recipe, &chosen, &debs, Some(&keep), store)
    })?;
    let scripts = step("configure_packages", || {
        configure::configure_packages(&mut base, recipe)
    })?;
    if let Some(w) = scripts.summary() {
        tracing::warn!("{w}");
    }
    Ok((base, packages::package_infos(&chosen), scripts))
}
