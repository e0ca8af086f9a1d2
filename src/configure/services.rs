//! The recipe's `[services]`, applied after the packages' own choices and the recipe's files,
//! as `systemctl --root=/ enable|disable|mask|set-default` would.

use super::error::ConfigureError;
use super::fsops;
use super::units::{self, Scope};
use crate::recipe::{Recipe, ServiceUnit};
use crate::tree::{Time, Tree};

fn fail(u: &ServiceUnit, problem: String, expected: &str) -> ConfigureError {
    ConfigureError::Recipe {
        pos: u.pos.clone(),
        problem,
        expected: expected.to_owned(),
    }
}

pub fn apply(tree: &mut Tree, recipe: &Recipe) -> Result<(), ConfigureError> {
    let Some(s) = &recipe.services else {
        return Ok(());
    };
    let sde = Time::from_secs(recipe.image.source_date_epoch);
    let exists =
        |tree: &Tree, u: &ServiceUnit| units::find_unit(tree, Scope::System, &u.name).is_some();
    const INSTALL: &str = "a unit that a package or the recipe's own files install";
    for u in &s.mask {
        units::mask(tree, Scope::System, &u.name, sde).map_err(|e| {
            fail(
                u,
                e,
                "a unit without a file of its own in /etc/systemd/system",
            )
        })?;
    }
    for u in &s.disable {
        if !exists(tree, u) {
            return Err(fail(
                u,
                format!("unit {} is not in the image", u.name),
                INSTALL,
            ));
        }
        units::disable(tree, Scope::System, &[&u.name]).map_err(|e| fail(u, e, INSTALL))?;
    }
    for u in &s.enable {
        if !exists(tree, u) {
            return Err(fail(
                u,
                format!("unit {} is not in the image", u.name),
                INSTALL,
            ));
        }
        units::unmask(tree, Scope::System, &u.name);
        units::enable(tree, Scope::System, &[&u.name], sde).map_err(|e| fail(u, e, INSTALL))?;
    }
    if let Some(t) = &s.default_target {
        let path = units::find_unit(tree, Scope::System, &t.name)
            .ok_or_else(|| fail(t, format!("target {} is not in the image", t.name), INSTALL))?;
        fsops::symlink(tree, "/etc/systemd/system/default.target", &path, sde)?;
    }
    Ok(())
}
